/*
 * The registry of built-in dialects and the thin public wrappers over a
 * dialect's table. Dialects are static const tables, so finding one is a
 * lookup in a constant list and needs no registration or global state.
 */
#include <stddef.h>
#include <strings.h>

#include <weir/dialect.h>

#include "internal.h"
#include "pg_internal.h"

/* Defined in dialect_pg.c. */

static const weir_dialect *const builtin_dialects[] = {
    &weir__dialect_postgresql,
    &weir__dialect_postgresql_nodiscard,
};

const weir_dialect *weir_dialect_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(builtin_dialects) / sizeof(builtin_dialects[0]); i++)
        if (strcasecmp(builtin_dialects[i]->name, name) == 0)
            return builtin_dialects[i];
    return NULL;
}

weir_error_class weir_dialect_classify(const weir_dialect *d, const char *sqlstate)
{
    /* Without a dialect nothing is known; assume the worst so the
     * connection is not reused. */
    if (d == NULL || d->classify == NULL)
        return WEIR_ERRCLASS_CONNECTION;
    return d->classify(sqlstate);
}

char *weir_dialect_quote_identifier(const weir_dialect *d, const char *s)
{
    if (d == NULL || d->quote_identifier == NULL || s == NULL)
        return NULL;
    return d->quote_identifier(s);
}

char *weir_dialect_quote_literal(const weir_dialect *d, const char *s)
{
    if (d == NULL || d->quote_literal == NULL || s == NULL)
        return NULL;
    return d->quote_literal(s);
}
