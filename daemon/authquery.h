/*
 * auth_query: looking up the secret of a user who is not in auth_file by
 * running auth_query (with the user name as $1) in the database, logged in
 * as auth_user, through libweir's Engine, without ever blocking the event
 * loop. See authquery.c for how.
 */
#ifndef WEIR_DAEMON_AUTHQUERY_H
#define WEIR_DAEMON_AUTHQUERY_H

struct daemon;
struct event_base;
struct authq;
struct authq_job;

enum authq_status {
    AUTHQ_FOUND,     /* one row: secret is its password ("" when NULL: no password can match) */
    AUTHQ_NOT_FOUND, /* no row: no such user */
    AUTHQ_FAILED,    /* could not connect or the query failed: err says why */
};

/* Called on the loop's thread; secret and err are borrowed for the call. */
typedef void (*authq_done_fn)(void *arg, enum authq_status status, const char *secret, const char *err);

/* NULL when out of memory or threads cannot be made. */
/* One per event loop: answers come back on base (borrowed). */
struct authq *authq_new(struct daemon *d, struct event_base *base);
/* Waits for the queries running now (not the queued ones), then frees. NULL ok. */
void authq_free(struct authq *aq);

/*
 * Queue a lookup: conninfo is where and as whom to run query (a libpq
 * conninfo; one Engine per distinct conninfo, kept for later lookups).
 * done is called exactly once, later, unless the job is abandoned. NULL
 * when out of memory.
 */
struct authq_job *authq_start(struct authq *aq, const char *conninfo, const char *query, const char *user,
                              authq_done_fn done, void *arg);
/* The asker went away: the lookup runs to its end but done is not called. */
void authq_abandon(struct authq_job *job);

#endif
