/*
 * Engine results: a weir_result owns one PGresult and answers questions
 * about it, so applications read rows, command tags and errors without
 * including libpq. Every accessor tolerates NULL and positions out of range,
 * because a result is often inspected after an error path.
 */
#include <stdlib.h>

#include <libpq-fe.h>

#include <weir/engine.h>

#include "internal.h"
#include "pg_internal.h"

struct weir_result {
    PGresult *res;
    int failed; /* an error result: sqlstate and message apply */
};

weir_result *weir__result_wrap(PGresult *res, int failed)
{
    weir_result *r = malloc(sizeof(*r));

    if (r == NULL) {
        PQclear(res);
        return NULL;
    }
    r->res = res;
    r->failed = failed;
    return r;
}

static int in_range(const weir_result *r, int row, int col)
{
    return r && row >= 0 && col >= 0 && row < PQntuples(r->res) && col < PQnfields(r->res);
}

int weir_result_rows(const weir_result *r)
{
    return r ? PQntuples(r->res) : 0;
}

int weir_result_columns(const weir_result *r)
{
    return r ? PQnfields(r->res) : 0;
}

const char *weir_result_column_name(const weir_result *r, int col)
{
    return r ? PQfname(r->res, col) : NULL;
}

const char *weir_result_value(const weir_result *r, int row, int col)
{
    if (!in_range(r, row, col) || PQgetisnull(r->res, row, col))
        return NULL;
    return PQgetvalue(r->res, row, col);
}

/* Out of range counts as NULL, matching weir_result_value(). */
int weir_result_is_null(const weir_result *r, int row, int col)
{
    return !in_range(r, row, col) || PQgetisnull(r->res, row, col);
}

int64_t weir_result_affected(const weir_result *r)
{
    const char *n = r ? PQcmdTuples(r->res) : "";

    if (n == NULL || n[0] == '\0')
        return -1;
    return strtoll(n, NULL, 10);
}

const char *weir_result_command(const weir_result *r)
{
    return r ? PQcmdStatus(r->res) : NULL;
}

const char *weir_result_sqlstate(const weir_result *r)
{
    return r && r->failed ? PQresultErrorField(r->res, PG_DIAG_SQLSTATE) : NULL;
}

const char *weir_result_error(const weir_result *r)
{
    return r && r->failed ? PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
}

void weir_result_free(weir_result *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    free(r);
}
