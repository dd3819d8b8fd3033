/*
 * The admin console (see admin.h): login and welcome, the simple query
 * protocol (one command per Query; extended-protocol messages get an error
 * and are skipped to their Sync, as PgBouncer does), splitting a command
 * into words, the permission check, the commands that answer later (PAUSE
 * and WAIT_CLOSE wait for servers, checked on a short timer), and the
 * helpers that write result sets. SHOW lives in admin_show.c, the control
 * commands in admin_ctl.c.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "admin_internal.h"
#include "config.h"
#include "pooler.h"
#include "server.h"
#include "stats.h"

/* How often a waiting PAUSE / WAIT_CLOSE looks again. */
#define ADMIN_TICK_US 50000
#define ADMIN_MAX_QUERY (1 << 20)

int admin_is_console_db(const char *dbname)
{
    return strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "weir") == 0;
}

/* Is user in a comma-separated list? */
static int in_list(const char *list, const char *user)
{
    size_t n = strlen(user);

    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == n && strncmp(p, user, n) == 0)
            return 1;
        p += len;
    }
    return 0;
}

/* Looked up at each command, so RELOAD and SET take effect at once. */
int admin_is_admin(const struct client *c)
{
    const struct weir_config *cfg = c->d->cfg;

    return in_list(cfg->admin_users, c->user) || cfg->auth_type == AUTH_TYPE_ANY;
}

void admin_login(struct client *c)
{
    const struct weir_config *cfg = c->d->cfg;

    if (!in_list(cfg->admin_users, c->user) && !in_list(cfg->stats_users, c->user) &&
        cfg->auth_type != AUTH_TYPE_ANY) {
        client_disconnect(c, "08P01", "not allowed");
        return;
    }
    client_start_auth(c);
}

void admin_welcome(struct client *c)
{
    struct evbuffer *out = c->io.out;

    (void)weir_proto_build_auth(out, WEIR_AUTH_OK, NULL, 0);
    (void)weir_proto_build_parameter_status(out, "server_version", "1.18.0/weir " WEIR_VERSION_STRING);
    (void)weir_proto_build_parameter_status(out, "client_encoding", "UTF8");
    (void)weir_proto_build_parameter_status(out, "server_encoding", "UTF8");
    (void)weir_proto_build_parameter_status(out, "DateStyle", "ISO, MDY");
    (void)weir_proto_build_parameter_status(out, "standard_conforming_strings", "on");
    (void)weir_proto_build_parameter_status(out, "integer_datetimes", "on");
    (void)weir_proto_build_backend_key(out, (uint32_t)c->id, c->cancel_key);
    (void)weir_proto_build_ready(out, 'I');
    if (client_flush(c) == 0)
        client_admin_ready(c);
}

/* ---- state ---- */

struct admin *admin_state(struct daemon *d)
{
    if (d->admin == NULL)
        d->admin = calloc(1, sizeof(*d->admin));
    return d->admin;
}

static struct admin_db *admin_db_find(const struct daemon *d, const char *name)
{
    for (struct admin_db *a = d->admin ? d->admin->dbs : NULL; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

struct admin_db *admin_db_get(struct daemon *d, const char *name)
{
    struct admin *ad = admin_state(d);
    struct admin_db *a = admin_db_find(d, name);

    if (a != NULL || ad == NULL)
        return a;
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->name = strdup(name)) == NULL) {
        free(a);
        return NULL;
    }
    a->next = ad->dbs;
    ad->dbs = a;
    return a;
}

int admin_db_paused(const struct daemon *d, const char *dbname)
{
    const struct admin_db *a = admin_db_find(d, dbname);

    return d->paused || (a && a->paused);
}

int admin_db_disabled(const struct daemon *d, const char *dbname)
{
    const struct admin_db *a = admin_db_find(d, dbname);

    return a && a->disabled;
}

static struct admin_session *session_find(struct daemon *d, uint64_t id, int create)
{
    struct admin *ad = admin_state(d);
    struct admin_session *s;

    if (ad == NULL)
        return NULL;
    for (s = ad->sessions; s; s = s->next)
        if (s->client_id == id)
            return s;
    if (!create || (s = calloc(1, sizeof(*s))) == NULL)
        return NULL;
    s->client_id = id;
    s->next = ad->sessions;
    ad->sessions = s;
    return s;
}

/* Forget sessions of clients that left or have nothing pending. */
static void sessions_prune(struct daemon *d)
{
    struct admin_session **pp = d->admin ? &d->admin->sessions : NULL;

    while (pp && *pp) {
        struct admin_session *s = *pp;
        struct client *c = daemon_find_client(d, s->client_id);
        if (c == NULL || c->state == CL_CLOSING || (s->wait_tag == NULL && !s->skip_to_sync)) {
            *pp = s->next;
            free(s->wait_db);
            free(s);
            continue;
        }
        pp = &s->next;
    }
}

void admin_free(struct daemon *d)
{
    struct admin *ad = d->admin;

    if (ad == NULL)
        return;
    while (ad->dbs) {
        struct admin_db *a = ad->dbs;
        ad->dbs = a->next;
        free(a->name);
        free(a);
    }
    while (ad->sessions) {
        struct admin_session *s = ad->sessions;
        ad->sessions = s->next;
        free(s->wait_db);
        free(s);
    }
    if (ad->tick)
        event_free(ad->tick);
    free(ad);
    d->admin = NULL;
}

/* ---- result sets ---- */

void admin_columns(struct client *c, const char *types, const char *const *names)
{
    uint32_t oids[ADMIN_MAX_COLS];
    int n = 0;

    for (; types[n] && n < ADMIN_MAX_COLS; n++)
        oids[n] = types[n] == 'i' ? 23 : types[n] == 'q' ? 20 : types[n] == 'n' ? 1700 : 25;
    (void)weir_proto_build_row_description(c->io.out, n, names, oids);
}

void row_str(struct admin_row *r, const char *s)
{
    if (r->n < ADMIN_MAX_COLS)
        r->v[r->n++] = s;
}

void row_int(struct admin_row *r, long long v)
{
    if (r->n >= ADMIN_MAX_COLS)
        return;
    snprintf(r->buf[r->n], sizeof(r->buf[0]), "%lld", v);
    r->v[r->n] = r->buf[r->n];
    r->n++;
}

void row_u64(struct admin_row *r, uint64_t v)
{
    if (r->n >= ADMIN_MAX_COLS)
        return;
    snprintf(r->buf[r->n], sizeof(r->buf[0]), "%llu", (unsigned long long)v);
    r->v[r->n] = r->buf[r->n];
    r->n++;
}

void row_send(struct client *c, struct admin_row *r)
{
    (void)weir_proto_build_data_row(c->io.out, r->n, r->v);
    r->n = 0;
}

enum admin_result admin_error(struct client *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_at(&c->d->log, LG_ERROR, "%s", msg);
    client_send_error(c, "ERROR", "08P01", msg);
    return ADMIN_DONE;
}

enum admin_result admin_complete(struct client *c, const char *tag)
{
    (void)weir_proto_build_command_complete(c->io.out, tag);
    return ADMIN_DONE;
}

int admin_db_exists(struct daemon *d, const char *name)
{
    const struct db_config *db = config_find_db(d->cfg, name);

    if (db && strcmp(db->name, "*") != 0)
        return 1;
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (strcmp(dp->dbname, name) == 0)
            return 1;
    return 0;
}

/* ---- commands that answer later ---- */

static int pool_busy(struct dpool *dp)
{
    weir_pool_stats st;

    weir_pool_get_stats(dp->pool, &st);
    return st.in_use + st.busy > 0;
}

/* A server whose connection must not be used again (RECONNECT, RELOAD). */
int admin_wait_pending(struct daemon *d, const char *tag, const char *db)
{
    if (strcmp(tag, "PAUSE") == 0) {
        if (!(db ? admin_db_paused(d, db) : d->paused))
            return 0; /* resumed meanwhile */
        for (struct dpool *dp = d->pools; dp; dp = dp->next)
            if ((db == NULL || strcmp(dp->dbname, db) == 0) && pool_busy(dp))
                return 1;
        return 0;
    }
    for (const struct server *s = d->servers; s; s = s->next)
        if ((db == NULL || strcmp(s->dp->dbname, db) == 0) && server_close_needed(s))
            return 1;
    return 0;
}

static void admin_tick_cb(evutil_socket_t fd, short what, void *arg);

enum admin_result admin_wait(struct client *c, const char *tag, const char *db)
{
    struct admin *ad = admin_state(c->d);
    struct admin_session *s = session_find(c->d, c->id, 1);
    struct timeval tv = {0, ADMIN_TICK_US};

    if (!admin_wait_pending(c->d, tag, db))
        return admin_complete(c, tag);
    if (s == NULL || (ad->tick == NULL && (ad->tick = event_new(c->d->base, -1, EV_PERSIST, admin_tick_cb,
                                                                  c->d)) == NULL))
        return admin_error(c, "out of memory");
    free(s->wait_db);
    s->wait_db = db ? strdup(db) : NULL;
    s->wait_tag = tag;
    if (!event_pending(ad->tick, EV_TIMEOUT, NULL))
        event_add(ad->tick, &tv);
    return ADMIN_WAIT;
}

/* The first waiting command whose condition now holds, or NULL. */
static struct admin_session *next_done(struct daemon *d)
{
    for (struct admin_session *s = d->admin->sessions; s; s = s->next)
        if (s->wait_tag && daemon_find_client(d, s->client_id) &&
            !admin_wait_pending(d, s->wait_tag, s->wait_db))
            return s;
    return NULL;
}

static int any_waiting(const struct daemon *d)
{
    for (const struct admin_session *s = d->admin->sessions; s; s = s->next)
        if (s->wait_tag)
            return 1;
    return 0;
}

static void admin_tick_stopped(struct daemon *d);

/* On the main thread; the consoles it answers may live on other workers. */
static void admin_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    struct worker *m = daemon_main_worker(d);

    (void)fd;
    (void)what;
    stream_loop_tick(&m->loop);
    world_stop(m);
    admin_tick_stopped(d);
    world_start(m);
}

static void admin_tick_stopped(struct daemon *d)
{
    struct admin_session *s;

    sessions_prune(d);
    while ((s = next_done(d)) != NULL) {
        struct client *c = daemon_find_client(d, s->client_id);
        const char *tag = s->wait_tag;
        s->wait_tag = NULL;
        admin_complete(c, tag);
        (void)weir_proto_build_ready(c->io.out, 'I');
        if (client_flush(c) == 0 && evbuffer_get_length(c->io.in) > 0)
            admin_handle(c); /* what the client sent meanwhile */
        sessions_prune(d);
    }
    if (!any_waiting(d))
        event_del(d->admin->tick);
}

/* ---- parsing ---- */

/* One word: "quoted", 'quoted', =, or a run of other characters. */
static const char *read_word(const char *p, char *w, size_t cap)
{
    size_t n = 0;

    if (*p == '"' || *p == '\'') {
        char q = *p++;
        for (;; p++) {
            if (*p == '\0')
                return NULL;
            if (*p == q && p[1] != q)
                break;
            if (*p == q)
                p++; /* doubled quote */
            if (n + 1 >= cap)
                return NULL;
            w[n++] = *p;
        }
        p++;
    } else if (*p == '=') {
        w[n++] = *p++;
    } else {
        while (*p && !isspace((unsigned char)*p) && !strchr(";='\"", *p)) {
            if (n + 1 >= cap)
                return NULL;
            w[n++] = *p++;
        }
    }
    w[n] = '\0';
    return p;
}

/* Split sql into words; 0, or -1 when it is not one well-formed command. */
static int split_command(const char *sql, struct admin_cmd *cmd)
{
    const char *p = sql;

    cmd->nwords = 0;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return 0;
        if (*p == ';') {
            for (p++; isspace((unsigned char)*p); p++)
                ;
            return *p ? -1 : 0;
        }
        if (cmd->nwords == ADMIN_MAX_WORDS)
            return -1;
        p = read_word(p, cmd->words[cmd->nwords], sizeof(cmd->words[0]));
        if (p == NULL)
            return -1;
        cmd->nwords++;
    }
}

static enum admin_result invalid_command(struct client *c, const char *text)
{
    return admin_error(c, "invalid command '%s', use SHOW HELP;", text);
}

enum admin_result admin_invalid_command(struct client *c, const struct admin_cmd *cmd)
{
    return invalid_command(c, cmd->text);
}

static enum admin_result run_command(struct client *c, char *sql)
{
    struct admin_cmd cmd;
    size_t n;

    while (isspace((unsigned char)*sql))
        sql++;
    n = strlen(sql);
    while (n > 0 && isspace((unsigned char)sql[n - 1]))
        sql[--n] = '\0';
    cmd.text = sql;
    if (split_command(sql, &cmd) != 0)
        return invalid_command(c, sql);
    if (cmd.nwords == 0) {
        (void)weir_proto_build_empty_query(c->io.out);
        return ADMIN_DONE;
    }
    log_at(&c->d->log, LG_DEBUG, "got admin query: %s", sql);
    stats_count_admin(c->d);
    if (strcasecmp(cmd.words[0], "SHOW") == 0) {
        if (cmd.nwords != 2)
            return invalid_command(c, sql);
        return admin_show(c, cmd.words[1]) != 0 ? invalid_command(c, sql) : ADMIN_DONE;
    }
    return admin_control(c, &cmd);
}

/* ---- protocol ---- */

static int extended_message(char type)
{
    return strchr("PBDECHF", type) != NULL;
}

/* One Query: copied out and consumed first, since the command may close
 * this very client (KILL_CLIENT) or take a while (PAUSE). */
static enum admin_result handle_query(struct client *c, const weir_frame *f)
{
    const unsigned char *body = evbuffer_pullup(c->io.in, (ssize_t)f->total) + f->body_off;
    const char *sql;
    char *copy;
    enum admin_result r;

    if (weir_proto_parse_string(body, f->body_len, &sql) != 0 || (copy = strdup(sql)) == NULL) {
        evbuffer_drain(c->io.in, f->total);
        client_disconnect(c, "08P01", "bad query packet");
        return ADMIN_NOREPLY;
    }
    evbuffer_drain(c->io.in, f->total);
    r = run_command(c, copy);
    free(copy);
    if (r == ADMIN_DONE && c->state != CL_CLOSING)
        (void)weir_proto_build_ready(c->io.out, 'I');
    return c->state == CL_CLOSING ? ADMIN_NOREPLY : r;
}

/* Parse/Bind/...: one error per batch, then silence until Sync. */
static void handle_extended(struct client *c, char type)
{
    struct admin_session *s = session_find(c->d, c->id, 1);

    if (type == 'S') {
        if (s)
            s->skip_to_sync = 0;
        sessions_prune(c->d); /* this one included, unless it waits */
        (void)weir_proto_build_ready(c->io.out, 'I');
        return;
    }
    if (s && s->skip_to_sync)
        return;
    client_send_error(c, "ERROR", "08P01", "extended query protocol not supported by admin console");
    if (s)
        s->skip_to_sync = 1;
}

static int waiting_for_answer(struct client *c)
{
    struct admin_session *s = c->d->admin ? session_find(c->d, c->id, 0) : NULL;

    return s && s->wait_tag;
}

static void admin_handle_stopped(struct client *c);

/* Commands look at and change every worker's clients and servers: they run
 * on the main thread with the world stopped. Only the main thread stops the
 * world, and only between client callbacks: a worker waiting for the world
 * inside one of its client's callbacks could be asked to close that very
 * client, and neither would ever go on. */
struct admin_job {
    struct daemon *d;
    uint64_t client_id;
};

static void admin_job_run(evutil_socket_t fd, short what, void *arg)
{
    struct admin_job *job = arg;
    struct daemon *d = job->d;
    struct worker *m = daemon_main_worker(d);
    struct client *c;

    (void)fd;
    (void)what;
    if (!d->stopping) {
        stream_loop_tick(&m->loop);
        world_stop(m);
        c = daemon_find_client(d, job->client_id); /* gone meanwhile: nothing to answer */
        if (c != NULL && c->state != CL_CLOSING)
            admin_handle_stopped(c);
        world_start(m);
    }
    free(job);
}

void admin_handle(struct client *c)
{
    struct daemon *d = c->d;
    struct admin_job *job;

    if (d->nworkers <= 1 || world_stopped_here(d)) {
        admin_handle_stopped(c);
        return;
    }
    job = malloc(sizeof(*job));
    if (job == NULL) {
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    *job = (struct admin_job){d, c->id};
    if (worker_post(daemon_main_worker(d), admin_job_run, job) != 0) {
        free(job);
        client_disconnect(c, "08P01", "out of memory");
    }
}

static void admin_handle_stopped(struct client *c)
{
    weir_frame f;
    int rc = 0;

    while (!waiting_for_answer(c) && (rc = weir_proto_peek(c->io.in, ADMIN_MAX_QUERY, &f)) == 1) {
        if (f.type == 'X') {
            client_disconnect(c, NULL, "client close request");
            return;
        }
        if (f.type == 'Q') {
            if (handle_query(c, &f) == ADMIN_NOREPLY)
                return;
            continue;
        }
        if (!extended_message(f.type) && f.type != 'S') {
            client_disconnect(c, "08P01", "unexpected message type '%c' on the admin console", f.type);
            return;
        }
        evbuffer_drain(c->io.in, f.total);
        handle_extended(c, f.type);
    }
    if (rc < 0) {
        unsigned char head[8];
        char text[48];
        size_t n = evbuffer_copyout(c->io.in, head, sizeof(head)) > 0 ? (size_t)evbuffer_get_length(c->io.in) : 0;
        stream_bad_header_text(text, sizeof(text), head, n < sizeof(head) ? n : sizeof(head));
        client_disconnect(c, "08P01", "%s", text);
        return;
    }
    client_flush(c);
}
