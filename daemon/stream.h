/*
 * A stream is one non-blocking socket with an input and an output evbuffer:
 * a persistent read event, and a write event armed only while output waits
 * for the kernel. Reads go straight into reserved evbuffer space with one
 * read(2) (no FIONREAD), writes try at once with writev(2), so a small
 * request costs one read and one write system call. Clients and servers
 * each own one; the fd itself belongs to the owner (a server's to libpq).
 */
#ifndef WEIR_DAEMON_STREAM_H
#define WEIR_DAEMON_STREAM_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

struct stream;

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

#endif
