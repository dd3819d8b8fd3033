/*
 * A stream is one non-blocking socket with an input and an output evbuffer:
 * a persistent read event, and a write event armed only while output waits
 * for the kernel. Reads go straight into reserved evbuffer space with one
 * read(2) (no FIONREAD), writes try at once with writev(2), so a small
 * request costs one read and one write system call. Clients and servers
 * each own one; the fd itself belongs to the owner (a server's to libpq).
 * With TLS (stream_start_tls) the same contract holds over an SSL* the owner
 * keeps: separate read/write functions and event callbacks, chosen once, so
 * the plain path does not pay for TLS.
 */
#ifndef WEIR_DAEMON_STREAM_H
#define WEIR_DAEMON_STREAM_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

struct stream;
struct ssl_st; /* OpenSSL's SSL */

/* on_read: bytes were appended to in (or eof/error set). on_drain: out fell
 * to empty after having been over the high mark or having needed EV_WRITE. */
typedef void (*stream_cb)(struct stream *s, void *arg);

struct stream {
    evutil_socket_t fd;
    struct event rd, wr;
    struct evbuffer *in, *out;
    stream_cb on_read, on_drain;
    void *arg;
    unsigned reading : 1, writing : 1, eof : 1, failed : 1, ready : 1, bulk : 1;
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
void stream_set_reading(struct stream *s, int on);
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

#endif
