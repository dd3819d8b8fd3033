/*
 * Listeners (see listener.h), on libevent's evconnlistener. Running out of
 * file descriptors pauses accepting for a moment instead of spinning on a
 * socket that stays readable. Under systemd socket activation (weir.socket)
 * the sockets systemd passes (LISTEN_FDS) are used instead of opening any.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include "client.h"
#include "config.h"
#include "listener.h"

struct listener {
    struct listener *next;
    struct daemon *d;
    struct evconnlistener *evl;
    int is_unix;
    char *path; /* Unix socket file, removed on close */
    struct event *retry;
};

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;
    (void)evl;
    client_accept(l->d, fd, sa, (socklen_t)salen, l->is_unix);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    (void)fd;
    (void)what;
    if (!l->d->shutting_down)
        evconnlistener_enable(l->evl);
}

static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, 200000};

    log_at(&l->d->log, LG_WARNING, "accept() failed: %s", evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        evconnlistener_disable(evl); /* the socket stays readable: don't spin */
        event_add(l->retry, &tv);
    }
}

static int add_listener(struct daemon *d, struct evconnlistener *evl, int is_unix, const char *path)
{
    struct listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        evconnlistener_free(evl);
        return -1;
    }
    l->d = d;
    l->evl = evl;
    l->is_unix = is_unix;
    l->path = path ? strdup(path) : NULL;
    l->retry = evtimer_new(d->base, retry_cb, l);
    evconnlistener_set_error_cb(evl, accept_error_cb);
    l->next = d->listeners;
    d->listeners = l;
    return 0;
}

static unsigned listen_flags(const struct weir_config *cfg)
{
    unsigned f = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (cfg->so_reuseport)
        f |= LEV_OPT_REUSEABLE_PORT;
    return f;
}

static int open_tcp(struct daemon *d, const char *host)
{
    struct evutil_addrinfo hints, *res = NULL, *ai;
    char port[16];
    int opened = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    snprintf(port, sizeof(port), "%d", d->cfg->listen_port);
    if (evutil_getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res) != 0) {
        log_at(&d->log, LG_ERROR, "could not resolve listen_addr %s", host);
        return 0;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        struct evconnlistener *evl;
        evutil_socket_t fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int on = 1;
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (d->cfg->so_reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        /* Accept once the startup packet is in, or after a second (the
         * kernel's TCP_DEFER_ACCEPT of 1, as PgBouncer sets it on Linux). */
        if (d->cfg->tcp_defer_accept)
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &on, sizeof(on));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            log_at(&d->log, LG_ERROR, "could not bind %s:%s: %s", host, port, strerror(errno));
            close(fd);
            continue;
        }
        evl = evconnlistener_new(d->base, accept_cb, NULL, listen_flags(d->cfg), d->cfg->listen_backlog, fd);
        if (evl == NULL) {
            close(fd);
            continue;
        }
        if (add_listener(d, evl, 0, NULL) == 0) {
            evconnlistener_set_cb(evl, accept_cb, d->listeners);
            opened++;
        }
    }
    evutil_freeaddrinfo(res);
    if (opened)
        log_at(&d->log, LG_LOG, "listening on %s:%s", host, port);
    return opened;
}

/* unix_socket_group: the socket's group, so its mode can let a group in. */
static void socket_group(struct daemon *d, const char *path)
{
    const char *name = d->cfg->unix_socket_group;
    struct group *g;

    if (name == NULL || name[0] == '\0')
        return;
    g = getgrnam(name);
    if (g == NULL)
        log_at(&d->log, LG_WARNING, "unix_socket_group: no group \"%s\"", name);
    else if (chown(path, (uid_t)-1, g->gr_gid) != 0)
        log_at(&d->log, LG_WARNING, "unix_socket_group: could not give %s to group \"%s\": %s", path, name,
               strerror(errno));
}

static int open_unix(struct daemon *d)
{
    struct sockaddr_un sun;
    struct evconnlistener *evl;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", d->cfg->unix_socket_dir,
                         d->cfg->listen_port) >= sizeof(sun.sun_path)) {
        log_at(&d->log, LG_ERROR, "unix_socket_dir too long: %s", d->cfg->unix_socket_dir);
        return 0;
    }
    unlink(sun.sun_path); /* a stale socket of an earlier run */
    evl = evconnlistener_new_bind(d->base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                  d->cfg->listen_backlog, (struct sockaddr *)&sun, sizeof(sun));
    if (evl == NULL) {
        log_at(&d->log, LG_ERROR, "could not listen on %s: %s", sun.sun_path, strerror(errno));
        return 0;
    }
    chmod(sun.sun_path, (mode_t)d->cfg->unix_socket_mode);
    socket_group(d, sun.sun_path);
    if (add_listener(d, evl, 1, sun.sun_path) != 0)
        return 0;
    evconnlistener_set_cb(evl, accept_cb, d->listeners);
    log_at(&d->log, LG_LOG, "listening on unix:%s", sun.sun_path);
    return 1;
}

/* sd_listen_fds(3)'s protocol, without libsystemd: LISTEN_PID is this
 * process, LISTEN_FDS sockets start at fd 3. The variables are removed so
 * child processes do not take the sockets for theirs. */
static int inherited_count(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int n = 0;

    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid())
        n = (int)strtol(fds, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n > 0 && n < 1024 ? n : 0;
}

/* Listen on one socket systemd passed; 1 if it is a listening stream socket. */
static int adopt_socket(struct daemon *d, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss), tl = sizeof(int);
    struct evconnlistener *evl;
    int type = 0;

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
        type != SOCK_STREAM) {
        log_at(&d->log, LG_WARNING, "systemd passed fd %d, which is not a stream socket; ignored", fd);
        return 0;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    evutil_make_socket_nonblocking(fd);
    /* backlog 0: systemd already called listen() */
    evl = evconnlistener_new(d->base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (evl == NULL || add_listener(d, evl, ss.ss_family == AF_UNIX, NULL) != 0)
        return 0; /* the socket file stays systemd's: never unlinked */
    evconnlistener_set_cb(evl, accept_cb, d->listeners);
    log_at(&d->log, LG_LOG, "listening on socket fd %d from systemd (%s)", fd,
           ss.ss_family == AF_UNIX ? "unix" : "tcp");
    return 1;
}

static int open_inherited(struct daemon *d)
{
    int n = inherited_count(), opened = 0;

    for (int i = 0; i < n; i++)
        opened += adopt_socket(d, 3 + i);
    if (opened)
        log_at(&d->log, LG_LOG, "socket activation: listen_addr and unix_socket_dir are not used");
    return opened;
}

int listeners_open(struct daemon *d)
{
    const char *addrs = d->cfg->listen_addr;
    int opened = open_inherited(d);

    if (opened > 0)
        return 0;
    for (const char *p = addrs; p && *p;) {
        char host[256];
        size_t n;
        while (*p == ',' || *p == ' ')
            p++;
        n = strcspn(p, ", ");
        if (n == 0)
            break;
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
        opened += open_tcp(d, host);
        p += n;
    }
    if (d->cfg->unix_socket_dir[0])
        opened += open_unix(d);
    return opened > 0 ? 0 : -1;
}

void listeners_pause(struct daemon *d, int paused)
{
    for (struct listener *l = d->listeners; l; l = l->next) {
        if (paused)
            evconnlistener_disable(l->evl);
        else
            evconnlistener_enable(l->evl);
    }
}

void listeners_close(struct daemon *d)
{
    while (d->listeners) {
        struct listener *l = d->listeners;
        d->listeners = l->next;
        evconnlistener_free(l->evl);
        if (l->path)
            unlink(l->path);
        event_free(l->retry);
        free(l->path);
        free(l);
    }
}
