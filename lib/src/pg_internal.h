/*
 * Declarations shared between libweir's libpq-based modules: the built-in
 * dialect tables, the helper that flattens libpq's multi-line error texts,
 * and the wrapper that turns a PGresult into a weir_result. Internal only.
 */
#ifndef WEIR_PG_INTERNAL_H
#define WEIR_PG_INTERNAL_H

#include <stddef.h>
#include <libpq-fe.h>
#include <weir/dialect.h>
#include <weir/engine.h>

#include "internal.h"

WEIR_INTERNAL extern const weir_dialect weir__dialect_postgresql;
WEIR_INTERNAL extern const weir_dialect weir__dialect_postgresql_nodiscard;

/* Copy libpq's error text into buf as one line (newlines become spaces). */
WEIR_INTERNAL void weir__pg_one_line(char *buf, size_t len, const char *text);

/* Copy a failed connect's text, made with PQERRORS_VERBOSE, into buf as
 * one line that reads as the default verbosity's would (no SQLSTATE prefix,
 * no LOCATION line); the last SQLSTATE in it goes to sqlstate ("" if none). */
WEIR_INTERNAL void weir__pg_connect_error(char *buf, size_t len, const char *verbose, char sqlstate[6]);

/* Take ownership of res in a new weir_result; failed marks an error result. */
WEIR_INTERNAL weir_result *weir__result_wrap(PGresult *res, int failed);

#endif
