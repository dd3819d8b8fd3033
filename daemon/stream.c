/*
 * Stream I/O for the daemon's sockets (see stream.h): the read callback
 * fills the input buffer and hands over; writes are attempted immediately
 * and fall back to a write event only when the socket buffer is full. TLS
 * streams (the second half of the file) keep that contract over SSL_read and
 * SSL_write; stream_fill, stream_flush and stream_set_reading branch to them
 * once, at the top.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "stream.h"
#include "tls.h"

/* Small reads ask for a chain that fits glibc's per-thread cache (1 KiB
 * with libevent's header), so the usual small message costs no real malloc;
 * once a read fills it, bulk data follows and reads go big. */
#define STREAM_READ_SMALL 900
#define STREAM_READ_BIG 16384

static int stream_tls_fill(struct stream *s);
static int stream_tls_flush(struct stream *s);
static void stream_tls_set_reading(struct stream *s, int on);

/* recv(2) and send(2) without glibc's wrappers: once the process has a
 * second thread (workers, the cancel and auth_query threads) the wrappers
 * switch thread cancellation on and off around every call, about 70
 * instructions each time, and weir never cancels a thread. */
static ssize_t sock_recv(int fd, void *buf, size_t len)
{
    return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static ssize_t sock_send(int fd, const void *buf, size_t len)
{
    return syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}

static int transient(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* The usual case: nothing buffered, so read into the loop's scratch and let
 * the owner act on the bytes where they lie. */
static void stream_read_flat(struct stream *s)
{
    ssize_t n = sock_recv(s->fd, s->loop->scratch, sizeof(s->loop->scratch));

    if (n > 0) {
        s->on_flat(s, s->arg, s->loop->scratch, (size_t)n);
        if (s->failed && s->ready)
            s->on_read(s, s->arg); /* bytes it could not keep (out of memory) */
        return;
    }
    if (n < 0 && transient(errno))
        return;
    if (n == 0)
        s->eof = 1;
    else
        s->failed = 1;
    s->on_read(s, s->arg);
}

static void stream_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)fd;
    (void)what;
    if (s->loop)
        stream_loop_tick(s->loop);
    if (s->on_flat != NULL && stream_in_empty(s)) {
        stream_read_flat(s);
        return;
    }
    if (stream_wake(s) != 0)
        s->failed = 1;
    if (s->failed || stream_fill(s) != 0 || s->eof || s->failed)
        s->on_read(s, s->arg);
}

static void stream_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)fd;
    (void)what;
    if (s->loop)
        stream_loop_tick(s->loop);
    if (stream_flush(s) < 0) {
        s->on_read(s, s->arg); /* report the failure through the reader */
        return;
    }
    if ((s->out == NULL || evbuffer_get_length(s->out) == 0) && s->on_drain)
        s->on_drain(s, s->arg);
}

static void stream_tls_write_cb(evutil_socket_t fd, short what, void *arg);
static void stream_tls_read_cb(evutil_socket_t fd, short what, void *arg);

/* The write event, made the first time output has to wait (most streams
 * never need it), with the callback of the stream's kind. */
static struct event *stream_wr_event(struct stream *s)
{
    if (s->wr == NULL)
        s->wr = event_new(event_get_base(&s->rd), s->fd, EV_WRITE | EV_PERSIST,
                          s->ssl ? stream_tls_write_cb : stream_write_cb, s);
    return s->wr;
}

int stream_init(struct stream *s, struct event_base *base, evutil_socket_t fd, stream_cb on_read,
                stream_cb on_drain, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->in == NULL || s->out == NULL) {
        stream_release(s);
        return -1;
    }
    event_assign(&s->rd, base, fd, EV_READ | EV_PERSIST, stream_read_cb, s);
    s->on_read = on_read;
    s->on_drain = on_drain;
    s->arg = arg;
    s->ready = 1;
    return 0;
}

void stream_release(struct stream *s)
{
    if (s->ready)
        event_del(&s->rd);
    if (s->wr)
        event_free(s->wr);
    s->wr = NULL;
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    s->in = s->out = NULL;
    s->ready = s->reading = s->writing = 0;
    s->ssl = NULL;
    s->tls_handshake = s->tls_rd_wants_wr = s->tls_wr_wants_rd = s->tls_wr_blocked = s->tls_rd_on = 0;
}

void stream_change_reading(struct stream *s, int on)
{
    if (s->ssl) {
        stream_tls_set_reading(s, on);
        return;
    }
    if (!s->ready || s->reading == (unsigned)!!on)
        return;
    s->reading = !!on;
    if (on)
        event_add(&s->rd, NULL);
    else
        event_del(&s->rd);
}

void stream_move(struct stream *s, struct event_base *base, struct stream_loop *loop)
{
    int reading;

    event_del(&s->rd); /* waits for its callback, should the old loop be running it */
    reading = s->ssl ? s->tls_rd_on : s->reading; /* which that callback may have changed */
    if (s->wr) /* made again on the new loop when output has to wait */
        event_free(s->wr);
    s->wr = NULL;
    s->writing = 0;
    event_assign(&s->rd, base, s->fd, EV_READ | EV_PERSIST, s->ssl ? stream_tls_read_cb : stream_read_cb, s);
    if (s->loop) /* also a TLS stream's, for its clock */
        s->loop = loop;
    if (reading)
        event_add(&s->rd, NULL);
}

void stream_set_flat(struct stream *s, stream_flat_cb on_flat, struct stream_loop *loop)
{
    s->on_flat = loop != NULL ? on_flat : NULL;
    s->loop = loop;
}

/* The local end of a socket: its address and port, or "unix" and 0 (SHOW
 * CLIENTS/SERVERS, "new connection to server (from addr:port)"). */
void stream_local_end(int fd, char *addr, size_t len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    snprintf(addr, len, "unix");
    *port = 0;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(in6->sin6_port);
    }
}

int64_t stream_loop_read(struct stream_loop *l)
{
    l->now_us = weir__now_us();
    l->now_valid = 1;
    return l->now_us;
}

void stream_trim(struct stream *s)
{
    if (!s->ready || s->ssl || s->writing || (s->in && evbuffer_get_length(s->in) > 0) ||
        (s->out && evbuffer_get_length(s->out) > 0))
        return;
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    if (s->wr)
        event_free(s->wr);
    s->in = s->out = NULL;
    s->wr = NULL;
}

int stream_wake(struct stream *s)
{
    if (!s->ready)
        return -1;
    if (s->in == NULL && (s->in = evbuffer_new()) == NULL)
        return -1;
    if (s->out == NULL && (s->out = evbuffer_new()) == NULL)
        return -1;
    return 0;
}

void stream_stash(struct stream *s, const void *p, size_t n)
{
    if (n == 0)
        return;
    s->in_used = 1;
    if (stream_wake(s) != 0 || evbuffer_add(s->in, p, n) != 0)
        s->failed = 1;
}

int stream_write_flat(struct stream *s, const void *p, size_t n)
{
    const char *b = p;

    if (!s->ready)
        return 0;
    if (s->ssl == NULL && !s->writing && (s->out == NULL || evbuffer_get_length(s->out) == 0)) {
        ssize_t w;
        if (n == 0)
            return 1;
        w = sock_send(s->fd, b, n);
        if (w == (ssize_t)n)
            return 1;
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        }
    }
    if (n > 0 && (stream_wake(s) != 0 || evbuffer_add(s->out, b, n) != 0))
        s->failed = 1;
    return 0;
}

int stream_fill(struct stream *s)
{
    struct evbuffer_iovec vec[2];
    size_t want;
    int nvec;
    struct iovec iov[2];
    ssize_t n;

    if (s->ssl)
        return stream_tls_fill(s);
    want = s->bulk ? STREAM_READ_BIG : STREAM_READ_SMALL;
    nvec = evbuffer_reserve_space(s->in, (ev_ssize_t)want, vec, 2);
    if (nvec <= 0) {
        s->failed = 1;
        return -1;
    }
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    /* recv() on the common single-extent case: cheaper in the kernel than readv(). */
    n = nvec == 1 ? sock_recv(s->fd, iov[0].iov_base, iov[0].iov_len) : readv(s->fd, iov, nvec);
    if (n < 0) {
        evbuffer_commit_space(s->in, vec, 0);
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        s->failed = 1;
        return -1;
    }
    if (n == 0) {
        evbuffer_commit_space(s->in, vec, 0);
        s->eof = 1;
        return -1;
    }
    s->bulk = (size_t)n >= want; /* filled: more is probably waiting */
    int used = 0;
    for (int i = 0; i < nvec && n > 0; i++, used++) {
        size_t take = (size_t)n < vec[i].iov_len ? (size_t)n : vec[i].iov_len;
        vec[i].iov_len = take;
        n -= (ssize_t)take;
    }
    evbuffer_commit_space(s->in, vec, used);
    s->in_used = 1;
    return 1;
}

/* One send(2) for data in one extent (the usual small reply), writev(2)
 * through evbuffer_write otherwise. MSG_NOSIGNAL: a peer gone is an error, not SIGPIPE. */
static int stream_send(struct stream *s)
{
    struct evbuffer_iovec v[2];
    ssize_t n;

    if (evbuffer_peek(s->out, -1, NULL, v, 2) != 1)
        return evbuffer_write(s->out, s->fd);
    n = sock_send(s->fd, v[0].iov_base, v[0].iov_len);
    if (n > 0)
        evbuffer_drain(s->out, (size_t)n);
    return (int)n;
}

int stream_flush(struct stream *s)
{
    if (s->ssl)
        return stream_tls_flush(s);
    if (!s->writing && (s->out == NULL || evbuffer_get_length(s->out) == 0))
        return 0; /* the usual case after a direct send */
    while (evbuffer_get_length(s->out) > 0) {
        int n = stream_send(s);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            s->failed = 1;
            return -1;
        }
        if (n == 0)
            break;
    }
    if (evbuffer_get_length(s->out) > 0) {
        if (!s->writing) {
            if (stream_wr_event(s) == NULL) {
                s->failed = 1;
                return -1;
            }
            s->writing = 1;
            event_add(s->wr, NULL);
        }
    } else if (s->writing) {
        s->writing = 0;
        event_del(s->wr);
    }
    return 0;
}

/* ---- TLS ---- */

/* A TLS record carries at most 16 KiB: reads ask for that much, writes hand
 * over that much at a time. */
#define TLS_RECORD 16384
/* What one read callback takes before other connections get their turn. */
#define TLS_READ_BUDGET (4 * TLS_RECORD)

/*
 * Register what the TLS state needs: the read event while reading, while the
 * handshake runs and while a write waits for the peer's bytes; the write
 * event while output or the read side waits for room in the socket.
 */
static void stream_tls_sync(struct stream *s)
{
    unsigned rd, wr;

    if (!s->ready)
        return;
    rd = s->reading || s->tls_handshake || s->tls_wr_wants_rd;
    wr = s->tls_wr_blocked || s->tls_rd_wants_wr;
    if (rd != s->tls_rd_on) {
        s->tls_rd_on = rd;
        if (rd)
            event_add(&s->rd, NULL);
        else
            event_del(&s->rd);
    }
    if (wr != s->writing) {
        if (wr && stream_wr_event(s) == NULL) {
            s->failed = 1; /* out of memory: reported by the next read */
            return;
        }
        s->writing = wr;
        if (wr)
            event_add(s->wr, NULL);
        else
            event_del(s->wr);
    }
}

/* Bytes OpenSSL already holds raise no socket event: run the read callback
 * again in the next loop iteration (forced: also without such bytes). */
static void stream_tls_kick(struct stream *s, int force)
{
    if (s->tls_rd_on && (force || SSL_has_pending(s->ssl)))
        event_active(&s->rd, EV_READ, 1);
}

static void stream_tls_set_reading(struct stream *s, int on)
{
    if (!s->ready)
        return;
    s->reading = !!on;
    stream_tls_sync(s);
    if (on)
        stream_tls_kick(s, 0);
}

/* One step of the server-side handshake: 1 done, 0 not yet, -1 failed. */
static int stream_tls_handshake(struct stream *s)
{
    int want_write = 0;
    int rc = tls_handshake_step(s->ssl, &want_write, &s->tls_err);

    if (rc < 0) {
        s->failed = 1;
        return -1;
    }
    s->tls_rd_wants_wr = rc == 0 && want_write;
    if (rc == 1)
        s->tls_handshake = 0;
    stream_tls_sync(s);
    return rc;
}

static int stream_tls_fill(struct stream *s)
{
    size_t got = 0;
    int ended = 0;

    if (s->tls_handshake) {
        int rc = stream_tls_handshake(s);
        if (rc <= 0)
            return rc;
        if (evbuffer_get_length(s->out) > 0 && stream_tls_flush(s) < 0)
            return -1;
    }
    s->tls_rd_wants_wr = 0;
    ERR_clear_error();
    while (got < TLS_READ_BUDGET) {
        struct evbuffer_iovec v;
        int n;

        if (evbuffer_reserve_space(s->in, TLS_RECORD, &v, 1) != 1) {
            s->failed = 1;
            ended = 1;
            break;
        }
        n = SSL_read(s->ssl, v.iov_base, v.iov_len < TLS_RECORD ? (int)v.iov_len : TLS_RECORD);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &v, 1);
            s->in_used = 1;
            got += (size_t)n;
            continue;
        }
        evbuffer_commit_space(s->in, &v, 0);
        switch (SSL_get_error(s->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            break;
        case SSL_ERROR_WANT_WRITE:
            s->tls_rd_wants_wr = 1;
            break;
        case SSL_ERROR_ZERO_RETURN:
            s->eof = 1;
            ended = 1;
            break;
        default:
            s->tls_err = ERR_get_error();
            s->failed = 1;
            ended = 1;
            break;
        }
        ERR_clear_error();
        break;
    }
    stream_tls_sync(s);
    if (got > 0 && ended) {
        /* As on a plain socket, the bytes before the end are handed over
         * first; the next callback sees the end again (OpenSSL repeats it). */
        s->eof = s->failed = 0;
        stream_tls_kick(s, 1);
    } else if (got >= TLS_READ_BUDGET) {
        stream_tls_kick(s, 0);
    }
    if (got > 0)
        return 1;
    return ended ? -1 : 0;
}

/* SSL_write in record-sized pieces. After WANT_WRITE OpenSSL wants the same
 * bytes again: the output only grows meanwhile, and SSL_MODE_ACCEPT_MOVING_
 * WRITE_BUFFER lets them come from a new pullup. */
static int stream_tls_flush(struct stream *s)
{
    size_t len;
    int rc = 0;

    s->tls_wr_blocked = s->tls_wr_wants_rd = 0;
    if (s->tls_handshake)
        return 0; /* sent when the handshake is done */
    ERR_clear_error();
    while ((len = evbuffer_get_length(s->out)) > 0) {
        size_t n = len < TLS_RECORD ? len : TLS_RECORD;
        unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)n);
        int w;

        if (p == NULL) {
            s->failed = 1;
            rc = -1;
            break;
        }
        w = SSL_write(s->ssl, p, (int)n);
        if (w > 0) {
            evbuffer_drain(s->out, (size_t)w);
            continue;
        }
        switch (SSL_get_error(s->ssl, w)) {
        case SSL_ERROR_WANT_WRITE:
            s->tls_wr_blocked = 1;
            break;
        case SSL_ERROR_WANT_READ:
            s->tls_wr_wants_rd = 1;
            break;
        default:
            s->tls_err = ERR_get_error();
            s->failed = 1;
            rc = -1;
            break;
        }
        ERR_clear_error();
        break;
    }
    stream_tls_sync(s);
    return rc;
}

static void stream_tls_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)fd;
    (void)what;
    if (s->loop)
        stream_loop_tick(s->loop);
    if (s->tls_wr_wants_rd) { /* a write was waiting for the peer */
        if (stream_tls_flush(s) < 0) {
            s->on_read(s, s->arg);
            return;
        }
        if (evbuffer_get_length(s->out) == 0 && s->on_drain) {
            s->on_drain(s, s->arg);
            if (!s->ready)
                return;
        }
    }
    if (!s->reading && !s->tls_handshake)
        return;
    if (stream_tls_fill(s) != 0 || s->eof || s->failed)
        s->on_read(s, s->arg);
}

static void stream_tls_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;
    int read_side = s->tls_rd_wants_wr;

    (void)fd;
    (void)what;
    if (s->loop)
        stream_loop_tick(s->loop);
    if (s->tls_wr_blocked) {
        if (stream_tls_flush(s) < 0) {
            s->on_read(s, s->arg); /* report the failure through the reader */
            return;
        }
        if (evbuffer_get_length(s->out) == 0 && s->on_drain) {
            s->on_drain(s, s->arg);
            if (!s->ready)
                return;
        }
    }
    if (read_side) { /* the handshake or a read was waiting for room */
        s->tls_rd_wants_wr = 0;
        stream_tls_sync(s);
        if ((s->reading || s->tls_handshake) && (stream_tls_fill(s) != 0 || s->eof || s->failed))
            s->on_read(s, s->arg);
    }
}

void stream_start_tls(struct stream *s, struct ssl_st *ssl, int handshake)
{
    struct event_base *base = event_get_base(&s->rd);

    event_del(&s->rd);
    if (s->wr) /* made again with the TLS callback when needed */
        event_free(s->wr);
    s->wr = NULL;
    event_assign(&s->rd, base, s->fd, EV_READ | EV_PERSIST, stream_tls_read_cb, s);
    s->on_flat = NULL; /* bytes come out of OpenSSL, not the socket */
    s->writing = 0;
    s->tls_rd_on = 0;
    s->ssl = ssl;
    s->tls_handshake = !!handshake;
    /* Partial writes: one record per SSL_write. An unexpected EOF (a peer
     * killed without close_notify) is an end like on a plain socket: every
     * message carries its own length, so truncation cannot go unnoticed. */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    stream_tls_sync(s);
    stream_tls_kick(s, 0);
    if (!handshake && evbuffer_get_length(s->out) > 0)
        (void)stream_tls_flush(s);
}

void stream_socket_buffers(int fd, int bytes)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (bytes <= 0 || fd < 0)
        return;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family == AF_UNIX)
        return; /* TCP only, as PgBouncer */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

void stream_bad_header_text(char *buf, size_t len, const unsigned char *p, size_t n)
{
    size_t at = (size_t)snprintf(buf, len, "bad packet header: '");

    for (size_t i = 0; i < n && i < 8 && at + 3 < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%02x", p[i]);
    if (at + 2 <= len)
        snprintf(buf + at, len - at, "'");
}
