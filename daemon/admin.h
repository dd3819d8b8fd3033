/*
 * The admin console: a virtual database "pgbouncer" (also "weir") for
 * admin_users (every command) and stats_users (SHOW only), answering
 * PgBouncer 1.18's SHOW commands with its column names, and its control
 * commands (PAUSE, RESUME, KILL, RELOAD, SET...). Also the per-database
 * PAUSE and DISABLE state that logins and the pooler consult.
 */
#ifndef WEIR_DAEMON_ADMIN_H
#define WEIR_DAEMON_ADMIN_H

struct client;
struct daemon;

int admin_is_console_db(const char *dbname);
/* After the startup packet: check the user may use the console, authenticate. */
void admin_login(struct client *c);
/* After authentication: the console's welcome. */
void admin_welcome(struct client *c);
/* A complete message is buffered: answer it. */
void admin_handle(struct client *c);

/* PAUSE or KILL is in force for dbname (or for everything). */
int admin_db_paused(const struct daemon *d, const char *dbname);
/* DISABLE is in force for dbname: new clients are refused. */
int admin_db_disabled(const struct daemon *d, const char *dbname);
/* SIGUSR1 and SIGUSR2: PAUSE and RESUME of every database. */
void admin_pause_all(struct daemon *d);
void admin_resume_all(struct daemon *d);
/* At exit. Accepts a daemon whose console never ran. */
void admin_free(struct daemon *d);

#endif
