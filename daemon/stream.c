/*
 * Stream I/O for the daemon's sockets (see stream.h): the read callback
 * fills the input buffer and hands over; writes are attempted immediately
 * and fall back to a write event only when the socket buffer is full.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "internal.h"
#include "stream.h"

/* Small reads ask for a chain that fits glibc's per-thread cache (1 KiB
 * with libevent's header), so the usual small message costs no real malloc;
 * once a read fills it, bulk data follows and reads go big. */
#define STREAM_READ_SMALL 900
#define STREAM_READ_BIG 16384

static int transient(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* The usual case: nothing buffered, so read into the loop's scratch and let
 * the owner act on the bytes where they lie. */
static void stream_read_flat(struct stream *s)
{
    ssize_t n = recv(s->fd, s->loop->scratch, sizeof(s->loop->scratch), 0);

    if (n > 0) {
        s->on_flat(s, s->arg, s->loop->scratch, (size_t)n);
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
    if (s->on_flat != NULL && (s->in == NULL || evbuffer_get_length(s->in) == 0)) {
        stream_read_flat(s);
        return;
    }
    if (stream_wake(s) != 0 || stream_fill(s) != 0 || s->eof || s->failed)
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
}

void stream_set_reading(struct stream *s, int on)
{
    if (!s->ready || s->reading == (unsigned)!!on)
        return;
    s->reading = !!on;
    if (on)
        event_add(&s->rd, NULL);
    else
        event_del(&s->rd);
}

void stream_set_flat(struct stream *s, stream_flat_cb on_flat, struct stream_loop *loop)
{
    s->on_flat = loop != NULL ? on_flat : NULL;
    s->loop = loop;
}

int64_t stream_loop_now(struct stream_loop *l)
{
    if (!l->now_valid) {
        l->now_us = weir__now_us();
        l->now_valid = 1;
    }
    return l->now_us;
}

void stream_trim(struct stream *s)
{
    if (!s->ready || s->writing || (s->in && evbuffer_get_length(s->in) > 0) ||
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
    if (n > 0 && (stream_wake(s) != 0 || evbuffer_add(s->in, p, n) != 0))
        s->failed = 1;
}

void stream_write_flat(struct stream *s, const void *p, size_t n)
{
    const char *b = p;

    if (n == 0 || !s->ready)
        return;
    if (s->out == NULL || evbuffer_get_length(s->out) == 0) {
        ssize_t w = send(s->fd, b, n, MSG_NOSIGNAL);
        if (w == (ssize_t)n)
            return;
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        }
    }
    if (stream_wake(s) != 0 || evbuffer_add(s->out, b, n) != 0)
        s->failed = 1;
}

int stream_fill(struct stream *s)
{
    struct evbuffer_iovec vec[2];
    size_t want = s->bulk ? STREAM_READ_BIG : STREAM_READ_SMALL;
    int nvec = evbuffer_reserve_space(s->in, (ev_ssize_t)want, vec, 2);
    struct iovec iov[2];
    ssize_t n;

    if (nvec <= 0) {
        s->failed = 1;
        return -1;
    }
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    /* recv() on the common single-extent case: cheaper in the kernel than readv(). */
    n = nvec == 1 ? recv(s->fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(s->fd, iov, nvec);
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
    n = send(s->fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
    if (n > 0)
        evbuffer_drain(s->out, (size_t)n);
    return (int)n;
}

int stream_flush(struct stream *s)
{
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
            if (s->wr == NULL &&
                (s->wr = event_new(event_get_base(&s->rd), s->fd, EV_WRITE | EV_PERSIST, stream_write_cb, s)) == NULL) {
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
