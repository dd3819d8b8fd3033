/*
 * Services of the daemon context that every module may call: a cheap
 * random source, the client registry behind CancelRequest lookups, systemd
 * notification, loading auth_file, reload (SIGHUP / RELOAD), and the
 * graceful shutdown that waits for transactions to finish.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "client.h"
#include "config.h"
#include "listener.h"
#include "pooler.h"
#include "server.h"
#include "tls.h"

/* ---- small daemon services ---- */

static size_t id_slot(const struct daemon *d, uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ULL >> 40) & (d->by_id_cap - 1);
}

/* The cancel-key table is shared (a CancelRequest may arrive on any worker);
 * the client list is the worker's own. */
int daemon_register_client(struct daemon *d, struct client *c)
{
    struct worker *w = c->w;

    pthread_mutex_lock(&d->lock);
    if (d->by_id == NULL) {
        d->by_id_cap = 4096;
        d->by_id = calloc(d->by_id_cap, sizeof(*d->by_id));
        if (d->by_id == NULL) {
            pthread_mutex_unlock(&d->lock);
            return -1;
        }
    }
    size_t slot = id_slot(d, c->id);
    c->hnext = d->by_id[slot];
    d->by_id[slot] = c;
    pthread_mutex_unlock(&d->lock);
    c->next = w->clients;
    c->prev = NULL;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    COUNT_ADD(d->nclients, 1);
    return 0;
}

void daemon_unregister_client(struct daemon *d, struct client *c)
{
    struct worker *w = c->w;
    struct client **pp;

    pthread_mutex_lock(&d->lock);
    pp = &d->by_id[id_slot(d, c->id)];
    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = c->hnext;
    pthread_mutex_unlock(&d->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nclients--;
    COUNT_ADD(d->nclients, -1);
}

/* With d->lock held. */
static struct client *find_client_locked(struct daemon *d, uint64_t id)
{
    struct client *c = d->by_id ? d->by_id[id_slot(d, id)] : NULL;

    while (c && c->id != id)
        c = c->hnext;
    return c;
}

struct client *daemon_find_client(struct daemon *d, uint64_t id)
{
    struct client *c;

    pthread_mutex_lock(&d->lock);
    c = find_client_locked(d, id);
    pthread_mutex_unlock(&d->lock);
    return c;
}

struct client *daemon_first_client(const struct daemon *d)
{
    for (int i = 0; i < d->nworkers; i++)
        if (d->workers[i]->clients)
            return d->workers[i]->clients;
    return NULL;
}

struct client *daemon_next_client(const struct daemon *d, const struct client *c)
{
    if (c->next)
        return c->next;
    for (int i = c->w->id + 1; i < d->nworkers; i++)
        if (d->workers[i]->clients)
            return d->workers[i]->clients;
    return NULL;
}

struct cancel_post {
    struct daemon *d;
    uint64_t id;
    uint32_t key;
};

/* On the target's own worker: it cannot go away while we look at it. */
static void cancel_on_owner(struct daemon *d, uint64_t id, uint32_t key)
{
    struct client *c;

    pthread_mutex_lock(&d->lock);
    c = find_client_locked(d, id);
    pthread_mutex_unlock(&d->lock);
    if (c && c->cancel_key == key && c->server)
        server_cancel(c->server);
}

static void cancel_post_run(evutil_socket_t fd, short what, void *arg)
{
    struct cancel_post *cp = arg;

    (void)fd;
    (void)what;
    if (!cp->d->stopping) /* else: the last loop run at exit, the registry is gone */
        cancel_on_owner(cp->d, cp->id, cp->key);
    free(cp);
}

void daemon_cancel_client(struct worker *self, uint64_t id, uint32_t key)
{
    struct daemon *d = self->d;
    struct worker *owner = NULL;
    struct cancel_post *cp;
    struct client *c;

    pthread_mutex_lock(&d->lock);
    c = find_client_locked(d, id);
    if (c && c->cancel_key == key)
        owner = c->w;
    pthread_mutex_unlock(&d->lock);
    if (owner == NULL)
        return;
    if (owner == self) {
        cancel_on_owner(d, id, key);
        return;
    }
    cp = malloc(sizeof(*cp));
    if (cp == NULL)
        return;
    *cp = (struct cancel_post){d, id, key};
    if (worker_post(owner, cancel_post_run, cp) != 0)
        free(cp);
}

/* ---- systemd notification (sd_notify without libsystemd) ---- */

void daemon_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    char msg[256];
    va_list ap;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sun.sun_path))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    if (path[0] == '@')
        sun.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    (void)sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path)));
    close(fd);
}

/* ---- configuration ---- */

void daemon_report_to_log(void *arg, weir_log_level sev, const char *file, int line, const char *message)
{
    struct daemon *d = arg;
    int level = sev == WEIR_LOG_ERROR ? LG_ERROR : LG_WARNING;

    if (line > 0)
        log_at(&d->log, level, "%s:%d: %s", file, line, message);
    else if (file)
        log_at(&d->log, level, "%s: %s", file, message);
    else
        log_at(&d->log, level, "%s", message);
}

int daemon_load_userlist(struct daemon *d, const struct weir_config *cfg, struct userlist **out)
{
    char err[512];
    int rc;

    *out = NULL;
    if (cfg->auth_file[0] == '\0')
        return 0;
    rc = userlist_load(cfg->auth_file, out, err, sizeof(err));
    if (rc < 0) {
        log_at(&d->log, LG_ERROR, "could not load auth_file: %s", err);
        return -1;
    }
    if (rc > 0)
        log_at(&d->log, LG_WARNING, "auth_file: %d malformed line(s) skipped; first: %s", rc, err);
    return 0;
}

/* With the world stopped: every worker reads the config and the userlist. */
static void reload_swap(struct daemon *d, struct weir_config *fresh, struct userlist *users)
{
    struct weir_config *old = d->cfg;

    d->cfg = fresh;
    userlist_free(d->users);
    d->users = users;
    if (strcmp(old->logfile, fresh->logfile) != 0 || fresh->logfile[0])
        (void)log_reopen(&d->log, fresh->logfile);
    if (log_set_syslog(&d->log, fresh->syslog, fresh->syslog_ident, fresh->syslog_facility) != 0)
        log_at(&d->log, LG_WARNING, "unknown syslog_facility %s; using daemon", fresh->syslog_facility);
    (void)tls_reload(d); /* certificates may have been replaced in place; logged */
    pooler_apply_config(d);
    config_free(old);
}

/* The files are read and checked while the workers run; only the swap
 * stops them. */
int daemon_reload(struct worker *self)
{
    struct daemon *d = self->d;
    struct weir_config *fresh = NULL;
    struct userlist *users = NULL;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    daemon_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
                   (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    log_at(&d->log, LG_LOG, "reloading config file %s", d->config_path);
    if (config_load(d->config_path, &fresh, daemon_report_to_log, d) != 0 || daemon_load_userlist(d, fresh, &users) != 0) {
        log_at(&d->log, LG_ERROR, "config reload failed; keeping the old configuration");
        COUNT_ADD(d->stats.reload_failures, 1);
        config_free(fresh);
        daemon_notify("READY=1\nSTATUS=reload failed; old configuration kept");
        return -1;
    }
    COUNT_ADD(d->stats.reloads, 1);
    config_diff(d->cfg, fresh, daemon_report_to_log, d);
    world_stop(self);
    reload_swap(d, fresh, users);
    world_start(self);
    daemon_notify("READY=1\nSTATUS=serving");
    return 0;
}

/* ---- shutdown ---- */

/* With the world stopped (or one worker). */
static int servers_busy(struct daemon *d)
{
    for (int i = 0; i < d->nworkers; i++)
        for (struct client *c = d->workers[i]->clients; c; c = c->next)
            if (c->state == CL_ACTIVE || c->state == CL_WAITING)
                return 1;
    return 0;
}

static void shutdown_check(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    struct worker *m = daemon_main_worker(d);
    int busy;

    (void)fd;
    (void)what;
    if (d->stopping)
        return;
    __atomic_store_n(&d->shutdown_check_posted, 0, __ATOMIC_RELAXED);
    world_stop(m);
    busy = servers_busy(d);
    world_start(m);
    if (!busy)
        event_base_loopbreak(d->base);
}

void daemon_client_gone(struct daemon *d)
{
    if (!d->shutting_down || d->stopping)
        return;
    if (d->nworkers > 1) { /* the main thread looks, with the world stopped; one look at a time */
        if (!__atomic_exchange_n(&d->shutdown_check_posted, 1, __ATOMIC_RELAXED) &&
            worker_post(daemon_main_worker(d), shutdown_check, d) != 0)
            __atomic_store_n(&d->shutdown_check_posted, 0, __ATOMIC_RELAXED);
    }
    else if (!servers_busy(d))
        event_base_loopbreak(d->base);
}

void daemon_begin_shutdown(struct daemon *d)
{
    struct worker *m = daemon_main_worker(d);

    if (d->shutting_down)
        return;
    world_stop(m); /* workers read the flag */
    d->shutting_down = 1;
    world_start(m);
    daemon_notify("STOPPING=1\nSTATUS=shutting down, waiting for transactions");
    log_at(&d->log, LG_LOG, "got SIGINT, shutting down: waiting for transactions to finish");
    listeners_pause(d, 1);
    daemon_client_gone(d);
}

