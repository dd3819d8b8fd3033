/*
 * Parsing of an Engine's URL (or libpq key=value conninfo) into the pool
 * settings weir understands and the libpq conninfo that remains. Internal to
 * the library; unit tests reach it through libweir.a.
 */
#ifndef WEIR_ENGINE_URL_H
#define WEIR_ENGINE_URL_H

#include <stddef.h>
#include <weir/dialect.h>
#include <weir/pool.h>

#include "internal.h"

typedef struct weir_engine_url {
    char *conninfo;              /* malloc'd: the input without weir's keys */
    const weir_dialect *dialect; /* from dialect=..., NULL when not given */
} weir_engine_url;

/*
 * Parse url. Only the fields of cfg named by keys present in url are written
 * (initialise cfg first). out->conninfo is checked with PQconninfoParse. On
 * error returns WEIR_EINVAL (naming the key in errbuf) or WEIR_ENOMEM, and
 * out holds nothing to free.
 */
WEIR_INTERNAL int weir__engine_url_parse(const char *url, weir_pool_config *cfg, weir_engine_url *out,
                                         char *errbuf, size_t errlen);

/* Free what a successful parse allocated. Accepts NULL. */
WEIR_INTERNAL void weir__engine_url_clear(weir_engine_url *u);

#endif
