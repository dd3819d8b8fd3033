/*
 * Health of the hosts behind multi-host [databases] entries: weir's side of
 * high availability. For every entry whose conninfo lists several hosts (or
 * asks for a target_session_attrs other than any), one libpq connection per
 * host, driven without blocking on the daemon's loop, asks every
 * health_check_period whether the host is a primary or a standby
 * (pg_is_in_recovery()) and how far its replay lags
 * (pg_last_xact_replay_timestamp()). The pools of such an entry then choose
 * the host of each new server connection here (libweir's weir_pool_target):
 * the current primary for read-write entries, a healthy standby under
 * max_standby_lag for standby entries, balanced round-robin or by least
 * connections (load_balance_hosts). Host names are looked up with libevent's
 * evdns before each check connection, and the address found is passed to
 * libpq as hostaddr (checks and server connections alike), so libpq does
 * not block the loop on DNS. A host that fails its checks is left
 * out, with back-off (doubling from health_check_period up to
 * server_login_retry) before it is checked again. When a host stops being
 * usable its connections are closed (a read-write entry's whole pool
 * generation on failover); when one becomes usable the pools retry at once.
 * SHOW SERVERS / SHOW DATABASES, /metrics and /healthz read the state here.
 */
#ifndef WEIR_DAEMON_HEALTH_H
#define WEIR_DAEMON_HEALTH_H

#include <stdint.h>

#include <libpq-fe.h>
#include <weir/weir.h>

#include "daemon.h"

struct dpool;
struct server;

enum host_role { ROLE_UNKNOWN, ROLE_PRIMARY, ROLE_STANDBY };

/* Whether the host may get new server connections (SHOW's "state"). */
enum host_state {
    HOST_UNCHECKED, /* no check has finished yet */
    HOST_UP,        /* answered its last check */
    HOST_LAGGING,   /* a standby whose replay lag is over max_standby_lag */
    HOST_DOWN,      /* failed its last check (or a connect to it failed): back-off */
};

/* The check connection of one host; moved only by check_set_state(). */
enum check_state {
    CHECK_WAIT,       /* timer armed for the next check (connection kept, or none) */
    CHECK_RESOLVING,  /* looking the host name up (evdns), before connecting */
    CHECK_CONNECTING, /* PQconnectPoll in progress */
    CHECK_QUERYING,   /* role and lag query sent, answer pending */
};

/* What an entry asks of its hosts (its target_session_attrs). */
enum ha_want { WANT_ANY, WANT_PRIMARY, WANT_STANDBY, WANT_PREFER_STANDBY };

/* Error-triggered checks of one host are this far apart at least. */
#define HA_ERROR_RECHECK_US 100000

struct ha_db;
struct resolve_job;

struct ha_host {
    struct ha_db *db;
    uintptr_t id;         /* the pool target tag of its connections; unique */
    char *host, *port;
    char addr[64];        /* the host name's address from the last lookup ("" = none: libpq resolves) */
    enum host_role role;
    enum host_state state;
    double lag_s;         /* replay lag at the last check (standbys) */
    int lag_over;         /* consecutive checks over max_standby_lag */
    int nconns;           /* open server connections made to it */
    int failures;         /* consecutive failed checks */
    uint64_t checks, check_failures;
    int64_t last_ok_us;   /* monotonic time of the last good check, 0 = none */
    char last_error[160];
    /* the check connection */
    enum check_state cs;
    struct resolve_job *resolving;
    PGconn *pg;
    struct event *io_ev, *timer_ev;
    int64_t op_start_us;
    int ans_recovery;     /* the answer being read: -1 until its row came */
    double ans_lag;
    char ans_why[160];    /* an error result in it */
    int64_t due_us;       /* when the timer fires next (monotonic), 0 = not armed */
};

struct ha_db {
    struct ha_db *next;
    struct health *h;
    char *name;           /* the [databases] entry */
    char *key;            /* hosts, ports and target_session_attrs: changed on reload? */
    char *tsa;            /* target_session_attrs as written, or "any" */
    enum ha_want want;
    int balance;          /* enum load_balance_hosts */
    char *check_conninfo; /* the checks' login: from the config, else the entry's first pool; NULL until known */
    int64_t started_us;   /* when the checks began (check_conninfo set) */
    struct ha_host *hosts;
    int nhosts;
    unsigned rr;          /* round-robin cursor */
};

struct health {
    struct daemon *d;
    struct ha_db *dbs;
    uintptr_t next_id;
    struct evdns_base *dns; /* made on first need; NULL: libpq resolves (blocking) */
    int dns_tried;
};

/* Start (creates d->health from d->cfg) and stop. 0 or -1 (out of memory). */
int health_start(struct daemon *d);
void health_stop(struct daemon *d);
/* After a reload: entries whose hosts changed start afresh. */
void health_apply_config(struct daemon *d);

/* A pool is being made (or reconfigured) for dp: when its entry is watched
 * here, give pc the host chooser (whose arg is dp) and return 1; the first
 * pool's login also becomes the checks' login when the config named none.
 * 0 when not watched. */
int health_pool_config(struct daemon *d, struct dpool *dp, weir_pool_config *pc);
/* A server connection of dp's was lost: check its host now. */
void health_server_lost(struct dpool *dp, uintptr_t tag);
/* A server of dp's reported an error with this SQLSTATE (NULL: none). One
 * that signals a failover -- the host going away (57P01, 57P02), refusing
 * sessions (57P03), a lost connection (class 08), or refusing writes
 * (25006) on a read-write entry -- has its host checked now, not at the next
 * period (at most every HA_ERROR_RECHECK_US per host, so a client repeating
 * such an error cannot make a check storm). The check decides: its result
 * changes the host's state, and so the pools, only if the role changed. */
void health_server_error(struct dpool *dp, uintptr_t tag, const char *sqlstate);

/* The watched entry called name, or NULL; the host with tag in it, or NULL. */
struct ha_db *health_find_db(struct daemon *d, const char *name);
struct ha_host *health_find_host(struct daemon *d, const char *dbname, uintptr_t tag);
/* May the host get new connections of its entry now? */
int health_host_eligible(const struct ha_host *hh);
/* For /healthz: 1 if the entry has a usable host of the kind it wants (a
 * primary for read-write ones), 0 if not, -1 if not watched or not checked yet. */
int health_db_ok(struct daemon *d, const char *name);
/* Why health_db_ok() said 0, in words for /healthz. */
const char *health_db_problem(struct daemon *d, const char *name);

const char *health_role_name(enum host_role r);
const char *health_state_name(enum host_state s);

#endif
