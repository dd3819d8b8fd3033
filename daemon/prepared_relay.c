/*
 * Prepared statements in transaction and statement mode: the protocol side.
 * A client's named statements are prepared on whichever server it gets,
 * under server-wide names ("weir_N"): Parse is rewritten or answered from
 * what the server already holds, Bind and Describe are rewritten, Close is
 * answered by weir, and a Parse is slipped in before a Bind when the server
 * lacks the statement. Because weir adds and removes messages, it keeps a
 * queue of the responses it expects from the server, in order; each entry
 * says whether its response goes to the client, is weir's own (dropped), or
 * is one weir must write itself when its turn comes. An error makes the
 * server skip to the next Sync, and the queue skips with it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "client.h"
#include "config.h"
#include "pooler.h"
#include "prepared.h"
#include "prepared_relay.h"
#include "server.h"

enum expect_kind { K_PARSE, K_BIND, K_DESCRIBE, K_EXECUTE, K_CLOSE, K_SYNC, K_QUERY, K_FUNC, K_SYNTH };
enum expect_action { A_FORWARD, A_SWALLOW, A_DUP_ERROR };
enum synth_kind { SYN_PARSE_COMPLETE, SYN_CLOSE_COMPLETE, SYN_DEALLOCATE, SYN_BIND_COMPLETE, SYN_NO_DATA,
                  SYN_NO_PARAMS, SYN_COMMAND };

#define F_CLIENT_PARSE 1 /* the client's own Parse: undo its name if it fails */
#define F_ON_SERVER 2    /* p was recorded on the server: forget it if this fails */

struct expect {
    unsigned char kind, action, flags, synth;
    struct pstmt *p;   /* referenced while queued */
    char *text;        /* client's statement name, or a command tag */
};

static struct pstmt_registry *registry(const struct server *s)
{
    return s->d->pstmts;
}

/* ---- the queue ---- */

static struct expect *q_at(struct server *s, unsigned i)
{
    return &s->expect[(s->expect_head + i) & (s->expect_cap - 1)];
}

static struct expect *q_head(struct server *s)
{
    return s->expect_count ? q_at(s, 0) : NULL;
}

static int q_grow(struct server *s)
{
    unsigned cap = s->expect_cap ? s->expect_cap * 2 : 16;
    struct expect *v = malloc(cap * sizeof(*v));

    if (v == NULL)
        return -1;
    for (unsigned i = 0; i < s->expect_count; i++)
        v[i] = *q_at(s, i);
    free(s->expect);
    s->expect = v;
    s->expect_cap = cap;
    s->expect_head = 0;
    return 0;
}

/* The common entry: an answer to forward, no statement, no text. */
static inline int q_push_plain(struct server *s, unsigned char kind)
{
    struct expect *e;

    if (s->expect_count == s->expect_cap && q_grow(s) != 0)
        return -1;
    e = q_at(s, s->expect_count++);
    *e = (struct expect){.kind = kind, .action = A_FORWARD};
    return 0;
}

static int q_push(struct server *s, unsigned char kind, unsigned char action, unsigned char flags,
                  struct pstmt *p, const char *text)
{
    struct expect *e;

    if (s->expect_count == s->expect_cap && q_grow(s) != 0)
        return -1;
    e = q_at(s, s->expect_count);
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->action = action;
    e->flags = flags;
    e->p = p;
    if (p)
        pstmt_ref(p);
    if (text && (e->text = strdup(text)) == NULL)
        return -1;
    s->expect_count++;
    return 0;
}

static void q_pop(struct server *s)
{
    struct expect *e = q_head(s);

    if (e->p != NULL)
        pstmt_unref(registry(s), e->p);
    if (e->text != NULL)
        free(e->text);
    s->expect_head = (s->expect_head + 1) & (s->expect_cap - 1);
    s->expect_count--;
}

void prep_server_reset(struct server *s)
{
    s->skip_to_sync = 0;
    while (s->expect_count)
        q_pop(s);
}

void prep_server_free(struct server *s)
{
    prep_server_reset(s);
    free(s->expect);
    s->expect = NULL;
    server_stmts_free(s->stmts, registry(s));
    s->stmts = NULL;
}

/* ---- messages weir writes ---- */

static int emit_parse(struct evbuffer *out, const struct pstmt *p)
{
    size_t n = strlen(p->server_name) + 1 + strlen(p->query) + 1 + 2 + (size_t)p->ntypes * 4;
    unsigned char hdr[5] = {'P', (unsigned char)((n + 4) >> 24), (unsigned char)((n + 4) >> 16),
                            (unsigned char)((n + 4) >> 8), (unsigned char)(n + 4)};
    unsigned char cnt[2] = {(unsigned char)(p->ntypes >> 8), (unsigned char)p->ntypes};

    if (evbuffer_add(out, hdr, 5) || evbuffer_add(out, p->server_name, strlen(p->server_name) + 1) ||
        evbuffer_add(out, p->query, strlen(p->query) + 1) || evbuffer_add(out, cnt, 2) ||
        (p->ntypes && evbuffer_add(out, p->types, (size_t)p->ntypes * 4)))
        return -1;
    return 0;
}

static int emit_target(struct evbuffer *out, char type, char kind, const char *name)
{
    size_t n = 1 + strlen(name) + 1;
    unsigned char hdr[6] = {(unsigned char)type, (unsigned char)((n + 4) >> 24), (unsigned char)((n + 4) >> 16),
                            (unsigned char)((n + 4) >> 8), (unsigned char)(n + 4), (unsigned char)kind};

    return evbuffer_add(out, hdr, 6) || evbuffer_add(out, name, strlen(name) + 1) ? -1 : 0;
}

/* The synthesized response at the head of the queue goes to the client now. */
static void emit_synth(struct server *s, const struct expect *e)
{
    struct evbuffer *out = s->client ? s->client->io.out : NULL;

    if (out == NULL)
        return;
    if (e->synth == SYN_PARSE_COMPLETE)
        (void)weir_proto_build_message(out, '1', NULL, 0);
    else if (e->synth == SYN_CLOSE_COMPLETE)
        (void)weir_proto_build_message(out, '3', NULL, 0);
    else if (e->synth == SYN_BIND_COMPLETE)
        (void)weir_proto_build_message(out, '2', NULL, 0);
    else if (e->synth == SYN_NO_DATA)
        (void)weir_proto_build_message(out, 'n', NULL, 0);
    else if (e->synth == SYN_NO_PARAMS) {
        static const unsigned char zero[2] = {0, 0};
        (void)weir_proto_build_message(out, 't', zero, 2);
        (void)weir_proto_build_message(out, 'n', NULL, 0);
    } else if (e->synth == SYN_COMMAND) {
        (void)weir_proto_build_command_complete(out, e->text);
    } else {
        (void)weir_proto_build_command_complete(out, e->text);
        (void)weir_proto_build_ready(out, s->txn);
    }
}

static void flush_synth(struct server *s)
{
    struct expect *e;

    if (s->skip_to_sync)
        return; /* the server answers none of them: neither does weir (see on_error) */
    while ((e = q_head(s)) != NULL && e->kind == K_SYNTH) {
        emit_synth(s, e);
        q_pop(s);
    }
}

static int push_synth(struct server *s, unsigned char synth, const char *text, unsigned char flags,
                      struct pstmt *p)
{
    if (q_push(s, K_SYNTH, A_FORWARD, flags, p, text) != 0)
        return -1;
    q_at(s, s->expect_count - 1)->synth = synth;
    flush_synth(s); /* nothing outstanding before it: answer at once */
    return 0;
}

/* ---- making sure the server has a statement ---- */

static int server_set(struct server *s)
{
    if (s->stmts == NULL)
        s->stmts = server_stmts_new(s->d->cfg->max_prepared_statements);
    return s->stmts ? 0 : -1;
}

/* Prepare p on the server under its server name, evicting the least used if
 * over max_prepared_statements. action: the Parse's answer goes to the client
 * (its own Parse) or is dropped (one weir slipped in before a Bind). */
static int prepare_on_server(struct server *s, struct pstmt *p, unsigned char action, unsigned char flags,
                             const char *cname)
{
    struct pstmt *evicted = NULL;

    if (server_set(s) != 0 || server_stmts_add(s->stmts, p, &evicted) != 0)
        return -1;
    if (evicted) {
        int rc = emit_target(s->io.out, 'C', 'S', evicted->server_name) ||
                 q_push(s, K_CLOSE, A_SWALLOW, F_ON_SERVER, evicted, NULL);
        pstmt_unref(registry(s), evicted);
        COUNT_ADD(s->d->stats.prepared_evictions, 1);
        if (rc)
            return -1;
    }
    COUNT_ADD(s->d->stats.prepared_prepares, 1);
    /* weir believes the server lacks p; close it all the same (an unknown
     * name is no error to Close). If a failed batch of a client that sent
     * several before reading left weir's record wrong, the Parse still
     * succeeds and the record is right again, where it would otherwise get
     * 42P05 on every later use. Nothing to undo if skipped: weir counted on
     * nothing from it. Once per statement and server, not per transaction. */
    if (emit_target(s->io.out, 'C', 'S', p->server_name) || q_push(s, K_CLOSE, A_SWALLOW, 0, NULL, NULL) ||
        emit_parse(s->io.out, p) != 0)
        return -1;
    return q_push(s, K_PARSE, action, flags | F_ON_SERVER, p, cname);
}

static int ensure_prepared(struct server *s, struct pstmt *p)
{
    if (s->stmts && server_stmts_has(s->stmts, p))
        return 0;
    return prepare_on_server(s, p, A_SWALLOW, 0, NULL);
}

/* ---- client messages ---- */

static struct client_stmts *client_names(struct client *c)
{
    if (c->stmts == NULL)
        c->stmts = client_stmts_new();
    return c->stmts;
}

static int is_deallocate(const char *sql, char *name, size_t namelen);
static int contains_ci(const unsigned char *body, size_t len, const char *word);

/* DEALLOCATE name|ALL as an unnamed extended-protocol statement (psycopg 3
 * sends its cache evictions so): weir answers Parse, Bind, Describe and
 * Execute itself, since the server knows the statements by other names. */
static int dealloc_unnamed(struct server *s, struct client *c, const char *query)
{
    char name[128];

    free(c->dealloc_target);
    c->dealloc_target = NULL;
    c->dealloc_bound = 0;
    if (s->txn == 'E' || s->skip_to_sync || !is_deallocate(query, name, sizeof(name)))
        return 0; /* the server refuses or skips it: let it */
    if (strcasecmp(name, "all") != 0 && (c->stmts == NULL || client_stmts_get(c->stmts, name) == NULL))
        return 0; /* unknown: the server answers 26000 as PostgreSQL would */
    c->dealloc_target = strdup(name);
    return c->dealloc_target != NULL;
}

static int on_parse(struct server *s, struct client *c, const unsigned char *msg, size_t total)
{
    weir_parse_msg pm;
    struct pstmt *p;

    if (weir_proto_parse_parse(msg + 5, total - 5, &pm) != 0)
        return -1;
    if (pm.name[0] == '\0') { /* unnamed: lives until the next Sync, pass it on */
        if (dealloc_unnamed(s, c, pm.query))
            return push_synth(s, SYN_PARSE_COMPLETE, NULL, 0, NULL);
        evbuffer_add(s->io.out, msg, total);
        return q_push(s, K_PARSE, A_FORWARD, 0, NULL, NULL);
    }
    if (client_names(c) == NULL)
        return -1;
    if (client_stmts_get(c->stmts, pm.name)) {
        /* PostgreSQL's error, in order: a Parse that fails makes the server
         * skip to Sync as it would have; its error is replaced by ours. In
         * a failed transaction PostgreSQL parses the text, then refuses the
         * statement (25P02) before it looks at the name: the server's own
         * error goes through. */
        static const char bad[] = "SELECT weir_duplicate_statement(";
        struct pstmt tmp = {.query = (char *)bad};
        strcpy(tmp.server_name, "");
        if (s->txn == 'E') { /* the client's own text, unnamed: its syntax error or 25P02 */
            tmp.query = (char *)pm.query;
            tmp.types = (uint8_t *)pm.param_types;
            tmp.ntypes = pm.nparam_types;
            return emit_parse(s->io.out, &tmp) || q_push(s, K_PARSE, A_FORWARD, 0, NULL, NULL) ? -1 : 0;
        }
        return emit_parse(s->io.out, &tmp) || q_push(s, K_PARSE, A_DUP_ERROR, 0, NULL, pm.name) ? -1 : 0;
    }
    p = pstmt_intern(registry(s), pm.query, pm.param_types, pm.nparam_types);
    if (p == NULL || client_stmts_put(c->stmts, registry(s), pm.name, p) != 0)
        return -1;
    if (s->txn == 'E') {
        /* In a failed transaction PostgreSQL refuses the Parse (25P02): let
         * the server say so, as an unnamed Parse that cannot clash. */
        struct pstmt tmp = *p;
        tmp.server_name[0] = '\0';
        return emit_parse(s->io.out, &tmp) || q_push(s, K_PARSE, A_FORWARD, F_CLIENT_PARSE, NULL, pm.name) ? -1 : 0;
    }
    if (s->stmts && server_stmts_has(s->stmts, p)) {
        /* A client's own Parse is parsed afresh, as PostgreSQL would (the
         * schema may have changed since): close and prepare again. If an
         * earlier error makes the server skip both, undoing them in reverse
         * leaves the statement recorded, as it still is on the server. */
        if (emit_target(s->io.out, 'C', 'S', p->server_name) || q_push(s, K_CLOSE, A_SWALLOW, F_ON_SERVER, p, NULL) ||
            emit_parse(s->io.out, p))
            return -1;
        COUNT_ADD(s->d->stats.prepared_prepares, 1);
        return q_push(s, K_PARSE, A_FORWARD, F_CLIENT_PARSE | F_ON_SERVER, p, pm.name);
    }
    return prepare_on_server(s, p, A_FORWARD, F_CLIENT_PARSE, pm.name);
}

static int on_describe_or_close(struct server *s, struct client *c, char type, const unsigned char *msg,
                                size_t total)
{
    char kind;
    const char *name;
    struct pstmt *p;

    if (weir_proto_parse_target(msg + 5, total - 5, &kind, &name) != 0)
        return -1;
    if (type == 'D' && name[0] == '\0' && c->dealloc_target && (kind == 'S' || c->dealloc_bound))
        return push_synth(s, kind == 'S' ? SYN_NO_PARAMS : SYN_NO_DATA, NULL, 0, NULL);
    p = kind == 'S' && name[0] && c->stmts ? client_stmts_get(c->stmts, name) : NULL;
    if (type == 'C' && kind == 'S' && name[0]) {
        /* The statement stays on servers for others; closing an unknown name
         * is no error in PostgreSQL either. */
        int rc;
        p = c->stmts ? client_stmts_get(c->stmts, name) : NULL;
        /* Keep what the name meant until the CloseComplete is really due:
         * an error earlier in the pipeline means PostgreSQL never closes it. */
        rc = push_synth(s, SYN_CLOSE_COMPLETE, name, p ? F_CLIENT_PARSE : 0, p);
        if (c->stmts)
            client_stmts_del(c->stmts, registry(s), name);
        return rc;
    }
    if (p != NULL) {
        if (ensure_prepared(s, p) != 0 || emit_target(s->io.out, type, kind, p->server_name) != 0)
            return -1;
    } else {
        evbuffer_add(s->io.out, msg, total);
    }
    return q_push(s, type == 'D' ? K_DESCRIBE : K_CLOSE, A_FORWARD, 0, type == 'D' ? p : NULL, NULL);
}

/* Bind: rewrite the statement name, stream the (maybe large) rest. */
static int on_bind(struct server *s, struct client *c, size_t total, const unsigned char *head, size_t headlen,
                   size_t names_len)
{
    const char *portal = (const char *)head + 5;
    const char *stmt = portal + strlen(portal) + 1;
    struct pstmt *p = stmt[0] && c->stmts ? client_stmts_get(c->stmts, stmt) : NULL;
    size_t rest = total - 5 - names_len;

    if (p != NULL && portal[0] == '\0' && contains_ci((const unsigned char *)p->query, strlen(p->query), "dealloc") &&
        dealloc_unnamed(s, c, p->query))
        stmt = ""; /* a prepared DEALLOCATE of the client's own names: weir runs it */
    if (stmt[0] == '\0' && portal[0] == '\0' && c->dealloc_target) {
        if (evbuffer_get_length(c->io.in) < total)
            return 2; /* wait for the whole (parameterless) Bind */
        evbuffer_drain(c->io.in, total);
        c->dealloc_bound = 1;
        return push_synth(s, SYN_BIND_COMPLETE, NULL, 0, NULL);
    }
    if (p == NULL) { /* unnamed or unknown: the server answers as PostgreSQL would */
        evbuffer_add(s->io.out, head, headlen);
        evbuffer_drain(c->io.in, headlen);
        c->fwd_remaining = (uint32_t)(total - headlen);
        return q_push(s, K_BIND, A_FORWARD, 0, NULL, NULL);
    }
    if (ensure_prepared(s, p) != 0)
        return -1;
    size_t nlen = strlen(portal) + 1 + strlen(p->server_name) + 1;
    uint32_t len = (uint32_t)(4 + nlen + rest);
    unsigned char hdr[5] = {'B', (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                            (unsigned char)len};
    if (evbuffer_add(s->io.out, hdr, 5) || evbuffer_add(s->io.out, portal, strlen(portal) + 1) ||
        evbuffer_add(s->io.out, p->server_name, strlen(p->server_name) + 1))
        return -1;
    evbuffer_drain(c->io.in, 5 + names_len);
    c->fwd_remaining = (uint32_t)rest;
    return q_push(s, K_BIND, A_FORWARD, 0, p, NULL); /* p: for a 26000 (on_error) */
}

/* "DEALLOCATE [PREPARE] name|ALL" on its own: weir's names, weir's answer. */
static int is_deallocate(const char *sql, char *name, size_t namelen)
{
    const char *p = sql;
    size_t n = 0;

    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "deallocate", 10) != 0 || !isspace((unsigned char)p[10]))
        return 0;
    p += 10;
    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "prepare", 7) == 0 && isspace((unsigned char)p[7])) {
        p += 7;
        while (isspace((unsigned char)*p))
            p++;
    }
    if (*p == '"') { /* quoted: exact, "" stands for " */
        p++;
        while (*p && n < namelen - 1) {
            if (*p == '"' && p[1] != '"')
                break;
            if (*p == '"')
                p++;
            name[n++] = *p++;
        }
        if (*p != '"' || n == 0)
            return 0;
        p++;
    } else { /* unquoted: folded to lower case, as PostgreSQL does */
        while (p[n] && (isalnum((unsigned char)p[n]) || p[n] == '_') && n < namelen - 1) {
            name[n] = (char)tolower((unsigned char)p[n]);
            n++;
        }
        if (n == 0)
            return 0;
        p += n;
    }
    name[n] = '\0';
    while (isspace((unsigned char)*p) || *p == ';')
        p++;
    return *p == '\0';
}

static int on_query(struct server *s, struct client *c, const unsigned char *msg, size_t total, int *consumed)
{
    const char *sql;
    char name[128];

    *consumed = 0;
    if (weir_proto_parse_string(msg + 5, total - 5, &sql) != 0)
        return -1;
    if (s->txn != 'E' && !s->skip_to_sync && is_deallocate(sql, name, sizeof(name))) {
        if (strcasecmp(name, "all") == 0) {
            if (c->stmts)
                client_stmts_clear(c->stmts, registry(s));
            *consumed = 1;
            return push_synth(s, SYN_DEALLOCATE, "DEALLOCATE ALL", 0, NULL);
        }
        if (c->stmts && client_stmts_del(c->stmts, registry(s), name)) {
            *consumed = 1;
            return push_synth(s, SYN_DEALLOCATE, "DEALLOCATE", 0, NULL);
        }
        return q_push(s, K_QUERY, A_FORWARD, 0, NULL, NULL); /* the server reports the unknown name */
    }
    /* Anything else: the server runs it. What it dropped, the relay learns
     * from the CommandComplete tags (server_run looks at every D... tag). */
    return q_push(s, K_QUERY, A_FORWARD, 0, NULL, NULL);
}

/*
 * Does what weir does with this message depend on the transaction state the
 * server will be in when it gets there? A DEALLOCATE weir answers itself or
 * lets the server refuse, a Parse of a name the client already holds, a
 * named Parse in a failed transaction. s->txn and skip_to_sync say that
 * state only once every answer before the message is in: a client that
 * sends a ROLLBACK or a failing statement and, before its answer, such a
 * message would otherwise get what the state before called for.
 */
static int depends_on_txn(struct client *c, struct server *s, char type, const unsigned char *msg, size_t total)
{
    weir_parse_msg pm;

    if (type == 'Q')
        return prep_query_is_ours(msg + 5, total - 5);
    if (type != 'P' || weir_proto_parse_parse(msg + 5, total - 5, &pm) != 0)
        return 0;
    if (pm.name[0] == '\0')
        return prep_query_is_ours((const unsigned char *)pm.query, strlen(pm.query));
    return s->txn == 'E' || (c->stmts && client_stmts_get(c->stmts, pm.name));
}

/* Hold such a message until the server has answered all before it (1), and
 * take no more input meanwhile (server_relayed goes on). Only after a Sync
 * or Query: answers to an unfinished batch may never come before it. */
static int hold_for_answers(struct server *s, struct client *c, char type, const unsigned char *msg, size_t total)
{
    if (c->unsynced || (prep_idle(s) && s->pending == 0) || !depends_on_txn(c, s, type, msg, total)) {
        c->prep_held = 0;
        return 0;
    }
    c->prep_held = 1;
    stream_set_reading(&c->io, 0);
    return 1;
}

int prep_client_message(struct server *s, struct client *c, char type, size_t total)
{
    size_t avail = evbuffer_get_length(c->io.in);
    const unsigned char *msg;
    int consumed = 1, rc;

    if (type == 'B') {
        /* Only the two names are needed now; the parameters may be huge. */
        size_t want = total < 5 + 2048 ? total : 5 + 2048;
        size_t have = avail < want ? avail : want;
        const unsigned char *head = evbuffer_pullup(c->io.in, (ssize_t)have);
        const void *z1 = memchr(head + 5, 0, have - 5);
        const void *z2 = z1 ? memchr((const char *)z1 + 1, 0, have - (size_t)((const unsigned char *)z1 + 1 - head)) : NULL;
        if (z2 == NULL)
            return have < want ? 0 : -1;
        size_t names_len = (size_t)((const unsigned char *)z2 + 1 - (head + 5));
        int brc = on_bind(s, c, total, head, 5 + names_len, names_len);
        return brc == 0 ? 1 : brc == 2 ? 0 : -1;
    }
    if (total > (size_t)1 << 24)
        return -1; /* a Parse or Describe this large is not a real client */
    if (avail < total)
        return 0;
    msg = evbuffer_pullup(c->io.in, (ssize_t)total);
    if (hold_for_answers(s, c, type, msg, total))
        return 0;
    switch (type) {
    case 'P':
        rc = on_parse(s, c, msg, total);
        break;
    case 'D':
    case 'C':
        rc = on_describe_or_close(s, c, type, msg, total);
        break;
    case 'E': /* only the portal of a DEALLOCATE weir answers (see dealloc_unnamed) */
        if (c->dealloc_target && strcasecmp(c->dealloc_target, "all") == 0)
            client_stmts_clear(c->stmts, registry(s));
        else if (c->dealloc_target)
            client_stmts_del(c->stmts, registry(s), c->dealloc_target);
        rc = push_synth(s, SYN_COMMAND, c->dealloc_target && strcasecmp(c->dealloc_target, "all") == 0
                                             ? "DEALLOCATE ALL" : "DEALLOCATE", 0, NULL);
        c->dealloc_bound = 0;
        break;
    case 'Q':
        rc = on_query(s, c, msg, total, &consumed);
        if (rc == 0 && !consumed) {
            evbuffer_add(s->io.out, msg, total);
            s->pending++;
        }
        break;
    default:
        return -1;
    }
    evbuffer_drain(c->io.in, total);
    return rc == 0 ? 1 : -1;
}

/* Case-insensitive search for a lower-case word within len bytes. */
static int contains_ci(const unsigned char *body, size_t len, const char *word)
{
    size_t n = strlen(word);

    for (size_t i = 0; i + n <= len; i++) {
        if ((body[i] | 0x20) != word[0])
            continue;
        if (strncasecmp((const char *)body + i, word, n) == 0)
            return 1;
    }
    return 0;
}

static int is_space(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r'); /* the C locale's isspace, without a table lookup */
}

/* Only a DEALLOCATE can be one weir answers itself (the client's names are
 * weir's). DISCARD ALL and DEALLOCATE ALL however written, alone or among
 * other statements, are caught by their CommandComplete tag instead
 * (server_run), so a query is decided by its first word. */
int prep_query_is_ours(const unsigned char *body, size_t len)
{
    size_t i = 0;

    while (i < len && is_space(body[i]))
        i++;
    return len - i >= 7 && (body[i] | 0x20) == 'd' && strncasecmp((const char *)body + i, "dealloc", 7) == 0;
}

/* Does the server skip this message? An error came back before the Sync
 * that ends its batch was sent: PostgreSQL ignores everything up to it. */
static int in_skipped_batch(struct server *s)
{
    if (!s->skip_to_sync)
        return 0;
    for (unsigned i = 0; i < s->expect_count; i++)
        if (q_at(s, i)->kind == K_SYNC)
            return 0; /* the Sync went: this belongs to the next batch */
    return 1;
}

static int needs_weir(struct server *s, struct client *c, char type, const unsigned char *msg, size_t total,
                      size_t seen);

/*
 * Must weir rewrite or answer this client message itself? Unnamed statements
 * and portals go straight through (only their answers are followed): that is
 * all of plain extended-protocol traffic. msg points at the message start,
 * seen bytes of it are in the window. So do messages the server will skip:
 * a Parse, Close or prepare there changes nothing, so weir must not record
 * one either (a later batch would rely on a statement never prepared, or
 * prepare one never closed).
 */
int prep_needs_weir(struct server *s, struct client *c, char type, const unsigned char *msg, size_t total, size_t seen)
{
    return needs_weir(s, c, type, msg, total, seen) && !in_skipped_batch(s);
}

static int needs_weir(struct server *s, struct client *c, char type, const unsigned char *msg, size_t total,
                      size_t seen)
{
    const unsigned char *body = msg + 5;
    size_t blen = (seen < total ? seen : total) - 5;
    const unsigned char *z;

    switch (type) {
    case 'P':
        if (seen < total || blen < 1 || body[0] != '\0')
            return 1;
        if (prep_query_is_ours(body + 1, blen - 1))
            return 1; /* an unnamed DEALLOCATE */
        free(c->dealloc_target); /* a new unnamed statement replaces one weir answered */
        c->dealloc_target = NULL;
        c->dealloc_bound = 0;
        return 0;
    case 'B':
        z = memchr(body, 0, blen);
        return z == NULL || (size_t)(z + 1 - body) >= blen || z[1] != '\0' || c->dealloc_target != NULL;
    case 'D':
    case 'C':
        if (blen < 2)
            return 1;
        if (body[0] == 'P')
            return type == 'D' && c->dealloc_bound;
        return body[1] != '\0' || c->dealloc_target != NULL;
    case 'Q':
        return seen < total || prep_query_is_ours(body, total - 5);
    case 'E':
        return c->dealloc_bound;
    default:
        return 0;
    }
}

int prep_expect_forwarded(struct server *s, char type)
{
    switch (type) {
    case 'Q':
        return q_push_plain(s, K_QUERY);
    case 'P': /* with max_prepared_statements = 0: kept only to follow the answers */
        return q_push_plain(s, K_PARSE);
    case 'B':
        return q_push_plain(s, K_BIND);
    case 'D':
        return q_push_plain(s, K_DESCRIBE);
    case 'C':
        return q_push_plain(s, K_CLOSE);
    case 'E':
        return q_push_plain(s, K_EXECUTE);
    case 'S':
        return q_push_plain(s, K_SYNC);
    case 'F':
        return q_push_plain(s, K_FUNC);
    default:
        return 0;
    }
}

/* ---- server responses ---- */

static int ends_with_ready(unsigned char kind)
{
    return kind == K_SYNC || kind == K_QUERY || kind == K_FUNC;
}

static int terminal_for(const struct expect *e, char type)
{
    switch (e->kind) {
    case K_PARSE:
        return type == '1';
    case K_BIND:
        return type == '2';
    case K_DESCRIBE:
        return type == 'T' || type == 'n';
    case K_EXECUTE:
        return type == 'C' || type == 'I' || type == 's';
    case K_CLOSE:
        return type == '3';
    default:
        return type == 'Z';
    }
}

int prep_is_special(struct server *s, char type)
{
    struct expect *e = q_head(s);

    if (e == NULL || s->swallow > 0)
        return 0;
    if (type == 'E' || type == 'Z')
        return 1;
    return terminal_for(e, type);
}

/* An entry ended without its response (error, or skipped to Sync): undo. */
static void entry_failed(struct server *s, struct expect *e)
{
    if (e->kind == K_CLOSE && (e->flags & F_ON_SERVER) && e->p && s->stmts) {
        /* An eviction the server skipped: the statement is still there. */
        (void)server_stmts_add(s->stmts, e->p, NULL); /* over capacity until the next eviction */
        return;
    }
    if (e->kind == K_SYNTH && (e->flags & F_CLIENT_PARSE) && s->client && e->text) {
        if (e->synth == SYN_PARSE_COMPLETE && s->client->stmts) /* the Parse never happened */
            client_stmts_del(s->client->stmts, registry(s), e->text);
        else if (e->synth == SYN_CLOSE_COMPLETE && e->p && client_names(s->client)) { /* nor the Close */
            pstmt_ref(e->p);
            if (client_stmts_put(s->client->stmts, registry(s), e->text, e->p) != 0)
                pstmt_unref(registry(s), e->p);
        }
        return;
    }
    if (e->kind == K_QUERY || e->kind == K_FUNC) {
        if (s->pending > 0)
            s->pending--; /* skipped: its ReadyForQuery never comes */
        return;
    }
    if (e->kind != K_PARSE)
        return;
    if ((e->flags & F_ON_SERVER) && s->stmts)
        server_stmts_del(s->stmts, registry(s), e->p);
    if ((e->flags & F_CLIENT_PARSE) && s->client && s->client->stmts && e->text)
        client_stmts_del(s->client->stmts, registry(s), e->text);
}

/* How many entries, from the head, come before the Sync (to_sync) or before
 * the first Sync, Query or FunctionCall (their ReadyForQuery); expect_count
 * when it has not come yet. */
static unsigned before_end(struct server *s, int to_sync)
{
    unsigned k = 0;

    while (k < s->expect_count && !(to_sync ? q_at(s, k)->kind == K_SYNC : ends_with_ready(q_at(s, k)->kind)))
        k++;
    return k;
}

/* The first k entries got no answer. weir recorded each Parse, Close and
 * eviction as it sent it: undo them newest first, so that one that reversed
 * or redid an earlier one (a statement evicted then prepared again, or
 * closed and prepared afresh, in the same batch) leaves the sets as the
 * server has them. Answers weir owed among them are dropped too. */
static void undo_first(struct server *s, unsigned k)
{
    for (unsigned i = k; i-- > 0;)
        entry_failed(s, q_at(s, i));
    while (k-- > 0)
        q_pop(s);
}

static void send_dup_error(struct server *s, const char *name)
{
    char msg[256];

    if (s->client == NULL)
        return;
    snprintf(msg, sizeof(msg), "prepared statement \"%s\" already exists", name);
    (void)weir_proto_build_error(s->client->io.out, "ERROR", "42P05", msg, NULL, NULL);
}

/*
 * A Bind or Describe of a statement weir renamed got 26000: the server lacks
 * a statement weir had recorded on it (a client that sent several batches
 * before reading the answers, an earlier one failing after weir had counted
 * on it; a client that ran DEALLOCATE weir_N itself). Forgetting it makes
 * the error a one-off: the next Bind prepares it again, instead of every
 * later Bind on this server failing.
 */
static void forget_if_missing(struct server *s, struct pstmt *p, const unsigned char *body, size_t blen)
{
    weir_error_fields ef;

    if (s->stmts != NULL && weir_proto_parse_error(body, blen, &ef) == 0 && ef.sqlstate &&
        strcmp(ef.sqlstate, "26000") == 0)
        server_stmts_del(s->stmts, registry(s), p);
}

/* The server reported an error for the head entry: it now skips to Sync. */
static int on_error(struct server *s, struct expect *e, const unsigned char *body, size_t blen)
{
    int drop = 0;

    if (e->action == A_DUP_ERROR) {
        send_dup_error(s, e->text);
        drop = 1;
    }
    /* PostgreSQL now ignores everything up to the next Sync, simple Queries
     * included, the failed entry first among them. */
    unsigned k = before_end(s, 1);
    if (k == s->expect_count)
        s->skip_to_sync = 1; /* its Sync has not come yet: what comes before it is skipped too */
    /* A Bind or Describe entry holds the statement only when weir renamed it. */
    struct pstmt *renamed = (e->kind == K_BIND || e->kind == K_DESCRIBE) ? e->p : NULL;
    if (renamed)
        pstmt_ref(renamed); /* the entry goes with the undo */
    undo_first(s, k);
    if (renamed) {
        forget_if_missing(s, renamed, body, blen);
        pstmt_unref(registry(s), renamed);
    }
    return drop;
}

int prep_server_message(struct server *s, char type, const unsigned char *body, size_t blen)
{
    struct expect *e = q_head(s);
    int drop = 0;

    if (e == NULL || s->swallow > 0)
        return 0;
    if (type == 'E') {
        if (ends_with_ready(e->kind))
            return 0; /* a simple query's error; ReadyForQuery follows */
        drop = on_error(s, e, body, blen);
    } else if (type == 'Z') {
        /* After a skip, this answers the Sync: the simple Queries and
         * FunctionCalls before it were skipped, not answered. */
        int skipped = s->skip_to_sync;
        s->skip_to_sync = 0;
        undo_first(s, before_end(s, skipped));
        if (q_head(s))
            q_pop(s);
    } else if (type == 'C' && (e->kind == K_QUERY || e->kind == K_EXECUTE)) {
        const char *tag;
        if (weir_proto_parse_string(body, blen, &tag) == 0 &&
            (strcmp(tag, "DISCARD ALL") == 0 || strcmp(tag, "DEALLOCATE ALL") == 0)) {
            /* The server dropped every statement: weir's, too. */
            if (s->stmts)
                server_stmts_clear(s->stmts, registry(s));
            if (s->client && s->client->stmts)
                client_stmts_clear(s->client->stmts, registry(s));
        }
        if (e->kind == K_EXECUTE) {
            drop = e->action != A_FORWARD;
            q_pop(s);
        }
    } else if (terminal_for(e, type)) {
        drop = e->action != A_FORWARD;
        q_pop(s);
    }
    return drop;
}

void prep_after_message(struct server *s)
{
    if (s->swallow == 0)
        flush_synth(s);
}

int prep_inline_answer(struct server *s, char type, const unsigned char *body, size_t blen)
{
    struct expect *e = q_head(s);
    const char *tag = (const char *)body;

    if (e == NULL || s->swallow > 0 || e->action != A_FORWARD || e->kind == K_SYNTH || type == 'Z' ||
        type == 'E' || !terminal_for(e, type))
        return 0;
    if (s->expect_count > 1 && q_at(s, 1)->kind == K_SYNTH)
        return 0; /* weir owes an answer right after: the careful path writes it */
    if (type == 'C' && blen > 0 && tag[0] == 'D' && memchr(body, 0, blen) &&
        (strcmp(tag, "DISCARD ALL") == 0 || strcmp(tag, "DEALLOCATE ALL") == 0))
        return 0; /* the careful path forgets what the server dropped */
    q_pop(s);
    return 1;
}

int prep_plain_query(const struct server *s)
{
    const struct expect *e = s->expect_count == 1 ? &s->expect[s->expect_head] : NULL;

    return e != NULL && s->swallow == 0 && !s->skip_to_sync && e->kind == K_QUERY && e->action == A_FORWARD &&
           e->flags == 0;
}

int prep_take_plain_ready(struct server *s)
{
    if (s->expect_count != 1 || s->skip_to_sync || !ends_with_ready(s->expect[s->expect_head].kind))
        return 0;
    q_pop(s); /* what prep_server_message does for this ReadyForQuery */
    return 1;
}

int prep_idle(const struct server *s)
{
    return s->expect_count == 0 && !s->skip_to_sync;
}
