/*
 * The admin console: a virtual database "pgbouncer" (also "weir") answering
 * SHOW commands with PgBouncer's column names, for admin_users/stats_users.
 */
#ifndef WEIR_DAEMON_ADMIN_H
#define WEIR_DAEMON_ADMIN_H

struct client;

int admin_is_console_db(const char *dbname);
/* After the startup packet: check the user may use the console, authenticate. */
void admin_login(struct client *c);
/* After authentication: the console's welcome. */
void admin_welcome(struct client *c);
/* A complete message is buffered: answer it. */
void admin_handle(struct client *c);

#endif
