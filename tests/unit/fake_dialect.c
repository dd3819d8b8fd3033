/*
 * The fake Dialect (see fake_dialect.h). Every operation first asks to wait
 * for writability once, so the pool's event-driven path is exercised, then
 * completes according to the control block.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "fake_dialect.h"

void fake_conninfo(struct fake_ctl *ctl, char *buf, size_t len)
{
    snprintf(buf, len, "fake:%p", (void *)ctl);
}

void fake_pool_config(weir_pool_config *cfg, struct fake_ctl *ctl, char *conninfo, size_t len,
                      struct event_base *base, const char *name)
{
    fake_conninfo(ctl, conninfo, len);
    weir_pool_config_init(cfg);
    cfg->dialect = &fake_dialect;
    cfg->conninfo = conninfo;
    cfg->base = base;
    cfg->name = name;
    cfg->timeout_ms = 2000;
    cfg->retry_min_ms = 10;
    cfg->retry_max_ms = 80;
}

void *fake_loop_main(void *base)
{
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

void fake_kill(struct fake_conn *c)
{
    shutdown(c->fds[1], SHUT_RDWR);
}

static int fake_connect_start(const char *conninfo, void **dconn, char *errbuf, size_t errlen)
{
    struct fake_ctl *ctl = NULL;
    struct fake_conn *c;

    if (sscanf(conninfo, "fake:%p", (void **)&ctl) != 1 || ctl == NULL) {
        snprintf(errbuf, errlen, "bad fake conninfo");
        return WEIR_EINVAL;
    }
    atomic_fetch_add(&ctl->connects, 1);
    c = calloc(1, sizeof(*c));
    if (c == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c->fds) != 0) {
        free(c);
        snprintf(errbuf, errlen, "out of resources");
        return WEIR_ESYS;
    }
    c->ctl = ctl;
    c->id = atomic_fetch_add(&ctl->next_id, 1) + 1;
    atomic_fetch_add(&ctl->open, 1);
    *dconn = c;
    return 0;
}

/* Take one unit from a "fail this many" counter. */
static int take(atomic_int *counter)
{
    int n = atomic_load(counter);
    while (n > 0) {
        if (atomic_compare_exchange_weak(counter, &n, n - 1))
            return 1;
    }
    return 0;
}

static weir_poll fake_connect_poll(void *dconn)
{
    struct fake_conn *c = dconn;

    if (atomic_load(&c->ctl->hang_connects))
        return WEIR_POLL_READ; /* never readable: only the timeout ends it */
    if (c->op_polls++ == 0)
        return WEIR_POLL_WRITE;
    c->op_polls = 0;
    if (!take(&c->ctl->fail_connects))
        return WEIR_POLL_OK;
    c->refused = take(&c->ctl->refuse_connects);
    return WEIR_POLL_FAILED;
}

static int fake_connect_refused(void *dconn, const char *error)
{
    (void)error;
    return dconn == NULL || ((struct fake_conn *)dconn)->refused;
}

static int fake_socket(void *dconn)
{
    return ((struct fake_conn *)dconn)->fds[0];
}

static int fake_ping_start(void *dconn)
{
    struct fake_conn *c = dconn;
    atomic_fetch_add(&c->ctl->pings, 1);
    c->op_fail = take(&c->ctl->fail_pings);
    c->op_polls = 0;
    return 0;
}

static int fake_reset_start(void *dconn)
{
    struct fake_conn *c = dconn;
    atomic_fetch_add(&c->ctl->resets, 1);
    c->op_fail = take(&c->ctl->fail_resets);
    c->op_polls = 0;
    return 0;
}

static weir_poll fake_command_poll(void *dconn)
{
    struct fake_conn *c = dconn;
    if (c->op_polls++ == 0)
        return WEIR_POLL_WRITE;
    return c->op_fail ? WEIR_POLL_FAILED : WEIR_POLL_OK;
}

static weir_poll fake_idle_readable(void *dconn)
{
    struct fake_conn *c = dconn;
    char buf[64];
    ssize_t n = recv(c->fds[0], buf, sizeof(buf), MSG_DONTWAIT);

    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        c->broken = 1;
        return WEIR_POLL_FAILED;
    }
    return WEIR_POLL_OK;
}

static int fake_is_broken(void *dconn)
{
    return ((struct fake_conn *)dconn)->broken;
}

static weir_error_class fake_classify(const char *sqlstate)
{
    return sqlstate == NULL ? WEIR_ERRCLASS_CONNECTION : WEIR_ERRCLASS_STATEMENT;
}

static const char *fake_error_message(void *dconn)
{
    struct fake_conn *c = dconn;
    return c && c->broken ? "fake server closed the connection" : "fake failure";
}

static int fake_server_version(void *dconn)
{
    return 150000;
}

static void *fake_driver_handle(void *dconn)
{
    return dconn;
}

static char *fake_quote(const char *s)
{
    return strdup(s);
}

static void fake_close(void *dconn)
{
    struct fake_conn *c = dconn;
    if (c == NULL)
        return;
    close(c->fds[0]);
    close(c->fds[1]);
    atomic_fetch_sub(&c->ctl->open, 1);
    free(c);
}

const weir_dialect fake_dialect = {
    .name = "fake",
    .connect_start = fake_connect_start,
    .connect_poll = fake_connect_poll,
    .socket = fake_socket,
    .ping_start = fake_ping_start,
    .reset_start = fake_reset_start,
    .command_poll = fake_command_poll,
    .idle_readable = fake_idle_readable,
    .is_broken = fake_is_broken,
    .classify = fake_classify,
    .error_message = fake_error_message,
    .connect_refused = fake_connect_refused,
    .server_version = fake_server_version,
    .driver_handle = fake_driver_handle,
    .quote_identifier = fake_quote,
    .quote_literal = fake_quote,
    .close = fake_close,
};
