/*
 * Listening sockets: TCP on each listen_addr (IPv4 and IPv6, "*" for all),
 * and the Unix socket <unix_socket_dir>/.s.PGSQL.<listen_port>, as PgBouncer
 * and PostgreSQL name it, so `psql -h <dir> -p <port>` finds it.
 */
#ifndef WEIR_DAEMON_LISTENER_H
#define WEIR_DAEMON_LISTENER_H

#include "daemon.h"

/* Open every configured listener; -1 (logged) if none could be opened. */
int listeners_open(struct daemon *d);
/* Stop accepting (SIGINT, or while over max_client_conn), and resume. */
void listeners_pause(struct daemon *d, int paused);
void listeners_close(struct daemon *d);

#endif
