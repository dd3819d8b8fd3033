/*
 * What the admin console's files share: the console's state (hanging off
 * struct daemon), the parsed command, the way a command answers (at once,
 * later, or never), and helpers that write result sets and errors.
 * admin.c parses and dispatches, admin_show.c answers SHOW, admin_ctl.c
 * runs the control commands.
 */
#ifndef WEIR_DAEMON_ADMIN_INTERNAL_H
#define WEIR_DAEMON_ADMIN_INTERNAL_H

#include <stdint.h>

#include "admin.h"
#include "client.h"

/* PAUSE / KILL / DISABLE of one database, by name (pools come and go). */
struct admin_db {
    struct admin_db *next;
    char *name;
    int paused, disabled;
};

/* A console client whose command completes later (PAUSE, WAIT_CLOSE), or
 * that sent extended-protocol messages we skip until Sync. By client id:
 * the client may disconnect meanwhile, and ids are never reused. */
struct admin_session {
    struct admin_session *next;
    uint64_t client_id;
    const char *wait_tag;   /* command tag to send when done, NULL = not waiting */
    char *wait_db;          /* the command's database, NULL = all */
    int skip_to_sync;
};

struct admin {
    struct admin_db *dbs;
    struct admin_session *sessions;
    struct event *tick;     /* runs while a command waits */
};

/* A command as typed: verb, then up to three more words ("SET k = v"). */
#define ADMIN_MAX_WORDS 4
struct admin_cmd {
    const char *text;       /* the whole query, for error messages */
    int nwords;
    char words[ADMIN_MAX_WORDS][256];
};

/* How a command ended. */
enum admin_result {
    ADMIN_DONE,    /* answered: send ReadyForQuery */
    ADMIN_WAIT,    /* registered a wait; the answer comes later */
    ADMIN_NOREPLY, /* the client is gone, or the daemon is stopping */
};

struct admin *admin_state(struct daemon *d);
struct admin_db *admin_db_get(struct daemon *d, const char *name);

/* ErrorResponse (ERROR, 08P01, as PgBouncer) and a log line. ADMIN_DONE. */
enum admin_result admin_error(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* PgBouncer's "invalid command '...', use SHOW HELP;". ADMIN_DONE. */
enum admin_result admin_invalid_command(struct client *c, const struct admin_cmd *cmd);
/* CommandComplete with tag. ADMIN_DONE. */
enum admin_result admin_complete(struct client *c, const char *tag);
/* Wait until the condition of tag ("PAUSE", "WAIT_CLOSE") holds for db. */
enum admin_result admin_wait(struct client *c, const char *tag, const char *db);
/* Does the wait of tag on db (NULL = all) still have to wait? */
int admin_wait_pending(struct daemon *d, const char *tag, const char *db);

/*
 * RowDescription from a type string, one letter per column: s text, i int4,
 * q int8, n numeric (PgBouncer's own letters, and the types its console
 * reports, so drivers parse values the same way).
 */
void admin_columns(struct client *c, const char *types, const char *const *names);

/* One DataRow being built; values are text or NULL. */
#define ADMIN_MAX_COLS 32
struct admin_row {
    int n;
    const char *v[ADMIN_MAX_COLS];
    char buf[ADMIN_MAX_COLS][64];
};
void row_str(struct admin_row *r, const char *s); /* s may be NULL: SQL NULL */
void row_int(struct admin_row *r, long long v);
void row_u64(struct admin_row *r, uint64_t v);
void row_send(struct client *c, struct admin_row *r); /* sends and resets */

/* Is user allowed every command (admin_users), or SHOW only? */
int admin_is_admin(const struct client *c);

/* A database the console may name: configured, or with a pool. */
int admin_db_exists(struct daemon *d, const char *name);

/* SHOW what: 0, or -1 when there is no such SHOW. */
int admin_show(struct client *c, const char *what);
enum admin_result admin_control(struct client *c, const struct admin_cmd *cmd);

#endif
