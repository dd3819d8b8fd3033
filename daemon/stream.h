/*
 * A stream is one non-blocking socket with an input and an output evbuffer:
 * a persistent read event, and a write event armed only while output waits
 * for the kernel. An idle stream can give its buffers back (stream_trim):
 * they are made again when bytes next arrive or must be sent. Reads go straight into reserved evbuffer space with one
 * read(2) (no FIONREAD), writes try at once with writev(2), so a small
 * request costs one read and one write system call. Clients and servers
 * each own one; the fd itself belongs to the owner (a server's to libpq).
 * With TLS (stream_start_tls) the same contract holds over an SSL* the owner
 * keeps: separate read/write functions and event callbacks, chosen once, so
 * the plain path does not pay for TLS.
 */
#ifndef WEIR_DAEMON_STREAM_H
#define WEIR_DAEMON_STREAM_H

#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

struct stream;
struct ssl_st; /* OpenSSL's SSL */

/* What the streams of one event loop share: the scratch buffer reads land
 * in, and the loop's clock read at most once per callback (timestamps for
 * statistics, as precise as the event that caused them). */
#define STREAM_SCRATCH (64 * 1024)
struct stream_loop {
    unsigned char scratch[STREAM_SCRATCH];
    int64_t now_us;
    int now_valid;
};

int64_t stream_loop_read(struct stream_loop *l);
/* Monotonic microseconds, read once per event callback. Inline: the hot
 * path asks many times per callback. */
static inline int64_t stream_loop_now(struct stream_loop *l)
{
    return l->now_valid ? l->now_us : stream_loop_read(l);
}
/* An event callback starts: the next stream_loop_now() reads the clock. */
static inline void stream_loop_tick(struct stream_loop *l)
{
    l->now_valid = 0;
}

/* on_read: bytes were appended to in (or eof/error set). on_drain: out fell
 * to empty after having been over the high mark or having needed EV_WRITE. */
typedef void (*stream_cb)(struct stream *s, void *arg);
/* on_flat: n fresh bytes arrived in a scratch buffer the loop reuses, while
 * in was empty. The handler acts on them in place and must append to in
 * (stream_stash) whatever it leaves, before it returns. */
typedef void (*stream_flat_cb)(struct stream *s, void *arg, const unsigned char *p, size_t n);

struct stream {
    evutil_socket_t fd;
    struct event rd;
    struct event *wr;             /* made the first time output has to wait */
    struct evbuffer *in, *out;
    stream_cb on_read, on_drain;
    stream_flat_cb on_flat;
    struct stream_loop *loop;     /* borrowed; set with on_flat */
    void *arg;
    unsigned reading : 1, writing : 1, eof : 1, failed : 1, ready : 1, bulk : 1;
    /* in may hold bytes: set by the only functions that add to it (here in
     * stream.c), cleared when found empty; most reads never touch in. */
    unsigned in_used : 1;
    /* TLS only: handshake still running; the read side waits for the socket
     * to take bytes; a write waits for bytes to arrive; a write waits for
     * room; the read event is registered. */
    unsigned tls_handshake : 1, tls_rd_wants_wr : 1, tls_wr_wants_rd : 1, tls_wr_blocked : 1, tls_rd_on : 1;
    struct ssl_st *ssl;      /* NULL: plain socket */
    unsigned long tls_err;   /* OpenSSL's code for a TLS failure (0: peer gone) */
};

/* Set up on fd (borrowed). Reading starts disabled. 0 or -1 (ENOMEM). */
int stream_init(struct stream *s, struct event_base *base, evutil_socket_t fd, stream_cb on_read,
                stream_cb on_drain, void *arg);
/* Remove events and free buffers; the fd is left open. Safe on a zeroed stream. */
void stream_release(struct stream *s);
/* Nothing buffered on the read side? Asks libevent only when something was. */
static inline int stream_in_empty(struct stream *s)
{
    if (s->in == NULL || !s->in_used)
        return 1;
    if (evbuffer_get_length(s->in) > 0)
        return 0;
    s->in_used = 0;
    return 1;
}
void stream_change_reading(struct stream *s, int on);
/* Register or remove the read event. Inline: the relay asks several times
 * per transaction, and the answer is nearly always "already so". */
static inline void stream_set_reading(struct stream *s, int on)
{
    if (s->ssl == NULL && s->ready && s->reading == (unsigned)!!on)
        return;
    stream_change_reading(s, on);
}
/* Move an idle stream (nothing waiting to be written) to another event
 * loop, keeping whether it reads. */
void stream_move(struct stream *s, struct event_base *base, struct stream_loop *loop);
/* Read into the loop's scratch and hand it to on_flat whenever in is empty:
 * the common small message is then never copied. */
void stream_set_flat(struct stream *s, stream_flat_cb on_flat, struct stream_loop *loop);
/* Idle with nothing buffered: free the buffers and the write event (an idle
 * client then costs little more than its struct). Safe to call any time. */
void stream_trim(struct stream *s);
/* Make sure in and out exist again after a trim. 0 or -1 (ENOMEM). */
int stream_wake(struct stream *s);
/* Keep bytes the on_flat handler did not act on, at the end of in. */
void stream_stash(struct stream *s, const void *p, size_t n);
/* Queue n bytes for the peer: sent at once when nothing waits before them
 * (no copy), the rest appended to out. A hard error leaves the bytes in out
 * for the next stream_flush to report. Returns 1 when out is left as it was,
 * empty (all sent, or n == 0 on an empty out): a flush would do nothing. */
int stream_write_flat(struct stream *s, const void *p, size_t n);
/* The local end of socket fd: address into addr (len bytes) and port, or
 * "unix" and 0. */
void stream_local_end(int fd, char *addr, size_t len, int *port);
/* Read once into in: >0 bytes, 0 nothing now, -1 eof or error (flags set). */
int stream_fill(struct stream *s);
/* Write what the kernel takes; arms EV_WRITE for the rest. -1 on error. */
int stream_flush(struct stream *s);
/*
 * From now on s speaks TLS over ssl (borrowed: the owner frees it after
 * stream_release). handshake: run the server side of the handshake first,
 * driven by the socket events (reads report nothing until it is done; a
 * failure sets failed and tls_err). Without it the session is already
 * established (libpq's, for a server). Output still queued is sent in TLS.
 */
void stream_start_tls(struct stream *s, struct ssl_st *ssl, int handshake);

/* tcp_socket_buffer: the kernel's send and receive buffer sizes of TCP socket fd (0 leaves them). */
void stream_socket_buffers(int fd, int bytes);

/* PgBouncer's words for a message header it will not take (a length below
 * four, or over max_packet_size): "bad packet header: '<first bytes in hex>'".
 * p holds n bytes of the header (up to 8 are shown). */
void stream_bad_header_text(char *buf, size_t len, const unsigned char *p, size_t n);

#endif
