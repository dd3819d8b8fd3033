/*
 * The metrics endpoint: when metrics_port is set, an HTTP server (libevent's
 * evhttp, on the daemon's own event loop) on metrics_addr:metrics_port with
 *   /metrics  Prometheus text exposition format (version 0.0.4), weir_ prefix
 *   /healthz  200 when weir listens and every configured database answers
 *             (for multi-host entries: has a usable host of the role it
 *             wants, per health.c), 503 otherwise, one line per database
 */
#ifndef WEIR_DAEMON_METRICS_H
#define WEIR_DAEMON_METRICS_H

#include "daemon.h"

/* Start serving (nothing when metrics_port is 0). 0, or -1 when the port
 * cannot be bound (logged; the pooler runs on without metrics). */
int metrics_start(struct daemon *d);
/* Stop serving; drops health checks in flight. Accepts a daemon without metrics. */
void metrics_stop(struct daemon *d);

#endif
