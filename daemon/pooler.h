/*
 * The pooler maps (database, user) to a pool of backend connections: one
 * libweir Pool each, sized and timed from the config, in the database's pool
 * mode. Clients ask it for a server; it decides when a server goes back.
 */
#ifndef WEIR_DAEMON_POOLER_H
#define WEIR_DAEMON_POOLER_H

#include <stdint.h>

#include "config.h"
#include "daemon.h"

struct server;

struct dpool {
    struct daemon *d;
    struct dpool *next;
    char *dbname;          /* name clients use */
    char *user;            /* backend user: the client's, or the entry's forced user */
    char *conninfo;        /* what libpq connects with (holds the password) */
    weir_pool *pool;
    enum pool_mode mode;
    char *connect_query;
    /* server parameters sent to clients at login, learnt from the first server */
    char *welcome_names[16], *welcome_values[16];
    size_t nwelcome;
    struct param_set welcome_params; /* the tracked ones, shared with clients */
    int welcome_known;
    int removed;           /* gone from the config: drains, then freed */
    int nclients;
    /* SHOW STATS counters */
    uint64_t xact_count, query_count, bytes_in, bytes_out, xact_us, query_us, wait_us;
};

/*
 * The pool for a client's database and user, created on first use. On
 * failure returns NULL with a PgBouncer-style message and SQLSTATE.
 */
struct dpool *pooler_get(struct daemon *d, const char *dbname, const char *user, const char **sqlstate,
                         char *err, size_t errlen);
/* Apply a reloaded config: resize pools, drain removed or changed ones. */
void pooler_apply_config(struct daemon *d);
/* Drop pools that were removed and have no clients left. */
void pooler_collect(struct daemon *d);
void pooler_free_all(struct daemon *d);
/* Remember a server's parameters for the login welcome. */
void pooler_learn_welcome(struct dpool *dp, const struct server *s);
/* Checkout timeout for a pool: query_wait_timeout (0 = forever). */
int pooler_wait_ms(const struct dpool *dp);

#endif
