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
    int autodb;            /* made from the "*" entry: freed after autodb_idle_timeout unused */
    int64_t unused_since_us; /* no client and no server since (autodb only); 0 = in use */
    int ha;                /* health.c chooses the host of each connection */
    int nclients;
    /* server login secrets beyond auth_file (wiped when freed) */
    char *auth_secret;     /* the user's secret from auth_query */
    char *keys_secret;     /* the SCRAM secret a client proved keys for ... */
    char *keys_password;   /* ... and those keys, as backend.h's password form */
    /* SHOW STATS counters: one set per worker, each written by that loop
     * alone and summed with the world stopped, so the data path shares no
     * cache line and takes no lock for them. */
    struct dp_counters *ctr; /* [d->nworkers] */
};

struct dp_counters {
    uint64_t xact_count, query_count, bytes_in, bytes_out, xact_us, query_us, wait_us;
} __attribute__((aligned(64)));

#define DP_COUNT(dp, w, field, n) ((void)((dp)->ctr[(w)->id].field += (n)))

/*
 * The pool for a client's database and user, created on first use, with the
 * client counted in it (nclients) before the lock is let go, so no sweep
 * frees it in between. On failure returns NULL with a PgBouncer-style
 * message and SQLSTATE.
 */
struct dpool *pooler_get(struct worker *self, const char *dbname, const char *user, const char **sqlstate,
                         char *err, size_t errlen);
/* autodb_idle_timeout, once a second on the main thread: pools the "*"
 * entry made that had no client and no server for that long drain and go,
 * as PgBouncer drops such databases. */
void pooler_expire_autodb(struct daemon *d, int64_t now_us);
/* Apply a reloaded config: resize pools, drain removed or changed ones. */
void pooler_apply_config(struct daemon *d);
/* Drop pools that were removed and have no clients left. */
void pooler_collect(struct daemon *d);
void pooler_free_all(struct daemon *d);
/* Remember a server's parameters for the login welcome. */
void pooler_learn_welcome(struct dpool *dp, const struct server *s);
/*
 * A client of this pool's user logged in with a secret from auth_query, or
 * proved the SCRAM keys of its secret (ClientKey from its proof, ServerKey
 * from the secret): new server logins of the pool use them (SCRAM
 * pass-through). Ignored when the pool logs in as a forced user.
 */
void pooler_set_auth_secret(struct dpool *dp, const char *user, const char *secret);
void pooler_set_scram_keys(struct dpool *dp, const char *user, const char *secret,
                           const uint8_t client_key[32], const uint8_t server_key[32]);
/* Where and as whom auth_query runs for a client of dp: auth_dbname's entry,
 * else dp's, logged in as auth_user. malloc'd; NULL with err on failure. */
char *pooler_auth_conninfo(struct daemon *d, const struct dpool *dp, const char *auth_user, char *err, size_t errlen);
/* A login for the health checks of a multi-host entry known from the config
 * alone: its forced user, else auth_user (with the password the entry or
 * auth_file gives libpq). malloc'd; NULL when the entry has neither, when
 * auth_file has only an md5 or SCRAM secret for it, or out of memory: the
 * checks then wait for the entry's first pool. */
char *pooler_check_conninfo(struct daemon *d, const struct db_config *db);
/* Checkout timeout for a pool: query_wait_timeout or query_timeout, the shorter set one (-1 = forever). */
int pooler_wait_ms(const struct dpool *dp);
/* What a client whose wait ran out is told: "query_timeout" or "query_wait_timeout". */
const char *pooler_wait_reason(const struct dpool *dp);

/* libpq's text of a login the server refused ("... failed: FATAL:  why"):
 * 1 with its severity and message, 0 when the server said nothing (refused
 * connection, timeout, TLS...). */
int pooler_server_error(const char *err, char *severity, size_t slen, char *msg, size_t mlen);

#endif
