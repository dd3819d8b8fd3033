/*
 * The PostgreSQL dialects over libpq: "postgresql", which resets a returned
 * connection with DISCARD ALL, and "postgresql-nodiscard" for servers without
 * it, which resets with RESET ALL, CLOSE ALL and DEALLOCATE ALL instead. Both
 * tables share every function except reset_start. A dialect connection wraps
 * the PGconn with the state of the command sequence (ping or reset) being
 * driven, so the pool can run it a socket event at a time without blocking.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include <weir/dialect.h>
#include <weir/proto.h>

#include "internal.h"
#include "pg_internal.h"

#define PG_MAX_COMMANDS 5

typedef struct pg_dconn {
    PGconn *conn;
    /* The command sequence in flight: cmds[cur] has been sent. */
    const char *cmds[PG_MAX_COMMANDS];
    int ncmds, cur;
    /* Set by the notice receiver when the server announced its goodbye. */
    int fatal;
    char err[512];  /* why the last operation failed */
    char sqlstate[6]; /* the server's code when it refused the connect, else "" */
    char scratch[512]; /* libpq's current message, for error_message() */
} pg_dconn;

/*
 * Copy a libpq message into buf as one line. libpq ends messages with a
 * newline and continues them on tab-indented lines; log lines and error
 * texts are single lines, so continuations join with a space and separate
 * messages (FATAL, then "server closed the connection") with "; ".
 */

void weir__pg_one_line(char *buf, size_t len, const char *text)
{
    size_t n = 0;

    if (buf == NULL || len == 0)
        return;
    for (const char *p = text ? text : ""; *p && n + 1 < len; p++) {
        const char *sep;

        if (*p != '\n' && *p != '\t') {
            buf[n++] = *p;
            continue;
        }
        sep = *p == '\n' && p[1] != '\t' && p[1] != '\0' ? "; " : " ";
        if (n > 0 && buf[n - 1] == ' ' && sep[0] == ' ')
            sep++;
        for (; *sep && n + 1 < len; sep++)
            buf[n++] = *sep;
    }
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    buf[n] = '\0';
}

/* A LOCATION line, told by its shape ("LABEL:  function, file.c:N"), not
 * its label, which libpq translates. */
static int location_line(const char *line, const char *end)
{
    const char *p = line, *comma, *colon;

    while (p < end && *p != ':' && *p != '\n')
        p++;
    if (p + 3 > end || strncmp(p, ":  ", 3) != 0)
        return 0;
    comma = memchr(p, ',', (size_t)(end - p));
    colon = comma ? memchr(comma, ':', (size_t)(end - comma)) : NULL;
    if (colon == NULL || colon - comma < 4 || strncmp(colon - 2, ".c", 2) != 0 || colon[1] < '0' || colon[1] > '9')
        return 0;
    for (p = colon + 1; p < end && *p >= '0' && *p <= '9'; p++)
        ;
    return p == end || *p == '\n';
}

/* Lines only PQERRORS_VERBOSE adds; the default text has none of them. */
static int verbose_only_line(const char *line, const char *end)
{
    static const char *const labels[] = {"SCHEMA NAME:  ", "TABLE NAME:  ", "COLUMN NAME:  ",
                                         "DATATYPE NAME:  ", "CONSTRAINT NAME:  "};

    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
        if (strncmp(line, labels[i], strlen(labels[i])) == 0)
            return 1;
    return location_line(line, end);
}

/* "SEVERITY:  <code>: " at p (p points at the ":  ")? */
static int sqlstate_at(const char *p)
{
    if (strncmp(p, ":  ", 3) != 0)
        return 0;
    for (int i = 3; i < 8; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z')))
            return 0;
    return p[8] == ':' && p[9] == ' ';
}

void weir__pg_connect_error(char *buf, size_t len, const char *verbose, char sqlstate[6])
{
    char clean[1024];
    size_t n = 0;
    const char *p = verbose ? verbose : "";

    sqlstate[0] = '\0';
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol + 1 : p + strlen(p);
        int coded = 0; /* the severity's code only, once a line */

        if (verbose_only_line(p, eol ? eol : end)) {
            p = end;
            continue;
        }
        /* Past a full buffer the text is cut, but the code is still looked for. */
        for (const char *q = p; q < end; q++) {
            if (!coded && sqlstate_at(q)) { /* keep ":  ", drop "<code>: " */
                coded = 1;
                memcpy(sqlstate, q + 3, 5);
                sqlstate[5] = '\0';
                for (int i = 0; i < 3 && n + 1 < sizeof(clean); i++)
                    clean[n++] = q[i];
                q += 9;
                continue;
            }
            if (n + 1 < sizeof(clean))
                clean[n++] = *q;
        }
        p = end;
    }
    clean[n] = '\0';
    weir__pg_one_line(buf, len, clean);
}

/*
 * libpq hands notices, and errors arriving while no query runs, to a receiver
 * that prints to stderr by default; the library must not print. Keep only a
 * FATAL one: it is the server telling why it is about to hang up.
 */
static void pg_notice_receiver(void *arg, const PGresult *res)
{
    pg_dconn *dc = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
        dc->fatal = 1;
        weir__pg_one_line(dc->err, sizeof(dc->err), PQresultErrorMessage(res));
    }
}

/* Keyword/value arrays for PQconnectStartParams, with gssencmode forced off
 * unless the user chose it: GSS negotiation would add a blocking round trip
 * and weir takes over the socket in a way GSS encryption does not allow. */
static int build_params(PQconninfoOption *opts, const char ***keys, const char ***vals)
{
    size_t n = 0, i = 0;
    int have_gss = 0;
    PQconninfoOption *o;

    for (o = opts; o->keyword; o++)
        n++;
    *keys = calloc(n + 2, sizeof(char *));
    *vals = calloc(n + 2, sizeof(char *));
    if (*keys == NULL || *vals == NULL)
        return WEIR_ENOMEM;
    for (o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "gssencmode") == 0)
            have_gss = 1;
        (*keys)[i] = o->keyword;
        (*vals)[i++] = o->val;
    }
    if (!have_gss) {
        (*keys)[i] = "gssencmode";
        (*vals)[i] = "disable";
    }
    return 0;
}

static int start_conn(pg_dconn *dc, const char *conninfo, char *errbuf, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    const char **keys = NULL, **vals = NULL;
    int rc;

    if (opts == NULL) {
        weir__pg_one_line(errbuf, errlen, perr ? perr : "out of memory");
        rc = perr ? WEIR_EINVAL : WEIR_ENOMEM;
        PQfreemem(perr);
        return rc;
    }
    rc = build_params(opts, &keys, &vals);
    if (rc == 0) {
        dc->conn = PQconnectStartParams(keys, vals, 0);
        if (dc->conn == NULL) {
            rc = WEIR_ENOMEM;
        } else if (PQstatus(dc->conn) == CONNECTION_BAD) {
            weir__pg_one_line(errbuf, errlen, PQerrorMessage(dc->conn));
            rc = WEIR_ECONNECT;
        }
    }
    if (rc == WEIR_ENOMEM)
        weir__pg_one_line(errbuf, errlen, "out of memory");
    free(keys);
    free(vals);
    PQconninfoFree(opts);
    return rc;
}

static int pg_connect_start(const char *conninfo, void **dconn, char *errbuf, size_t errlen)
{
    pg_dconn *dc = calloc(1, sizeof(*dc));
    int rc;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (dc == NULL) {
        weir__pg_one_line(errbuf, errlen, "out of memory");
        return WEIR_ENOMEM;
    }
    rc = start_conn(dc, conninfo ? conninfo : "", errbuf, errlen);
    if (rc != 0) {
        PQfinish(dc->conn);
        free(dc);
        return rc;
    }
    PQsetNoticeReceiver(dc->conn, pg_notice_receiver, dc);
    /* The only way libpq tells a login refusal's SQLSTATE: in the text. The
     * default verbosity comes back once connected; the text is cleaned. */
    PQsetErrorVerbosity(dc->conn, PQERRORS_VERBOSE);
    *dconn = dc;
    return 0;
}

static weir_poll pg_connect_poll(void *dconn)
{
    pg_dconn *dc = dconn;

    switch (PQconnectPoll(dc->conn)) {
    case PGRES_POLLING_READING: return WEIR_POLL_READ;
    case PGRES_POLLING_WRITING: return WEIR_POLL_WRITE;
    case PGRES_POLLING_OK:
        /* Only now: PQsetnonblocking() during the connect loses the host
         * part of a later connect error ("connection to server at ..."),
         * and PQconnectPoll never blocks anyway. */
        PQsetErrorVerbosity(dc->conn, PQERRORS_DEFAULT);
        if (PQsetnonblocking(dc->conn, 1) == 0)
            return WEIR_POLL_OK;
        weir__pg_one_line(dc->err, sizeof(dc->err), PQerrorMessage(dc->conn));
        return WEIR_POLL_FAILED;
    default:
        weir__pg_connect_error(dc->err, sizeof(dc->err), PQerrorMessage(dc->conn), dc->sqlstate);
        return WEIR_POLL_FAILED;
    }
}

static int pg_socket(void *dconn)
{
    return PQsocket(((pg_dconn *)dconn)->conn);
}

/* Send the current command of the sequence. */
static int send_current(pg_dconn *dc)
{
    if (!PQsendQuery(dc->conn, dc->cmds[dc->cur])) {
        weir__pg_one_line(dc->err, sizeof(dc->err), PQerrorMessage(dc->conn));
        return PQstatus(dc->conn) == CONNECTION_BAD ? WEIR_EGONE : WEIR_ESTATE;
    }
    return 0;
}

/* Begin a sequence of simple-protocol commands. Each goes on its own, so
 * one that may not run inside a transaction block (DISCARD ALL) doesn't. */
static int start_sequence(pg_dconn *dc, const char *const *cmds, int n)
{
    dc->err[0] = '\0';
    dc->ncmds = 0;
    dc->cur = 0;
    for (int i = 0; i < n && dc->ncmds < PG_MAX_COMMANDS; i++)
        dc->cmds[dc->ncmds++] = cmds[i];
    return send_current(dc);
}

static int pg_ping_start(void *dconn)
{
    static const char *const ping[] = {"SELECT 1"};

    return start_sequence(dconn, ping, 1);
}

/*
 * A reset begins with ROLLBACK when a transaction is open or failed. A
 * connection in the middle of a statement (or in a state libpq can't name)
 * is not resettable by commands at all: the caller must close it.
 */
static int reset_with(pg_dconn *dc, const char *const *cmds, int n)
{
    const char *seq[PG_MAX_COMMANDS];
    int k = 0;

    switch (PQtransactionStatus(dc->conn)) {
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        seq[k++] = "ROLLBACK";
        break;
    case PQTRANS_IDLE:
        break;
    default:
        weir__pg_one_line(dc->err, sizeof(dc->err), "connection is busy or lost; cannot reset");
        return WEIR_ESTATE;
    }
    for (int i = 0; i < n && k < PG_MAX_COMMANDS; i++)
        seq[k++] = cmds[i];
    return start_sequence(dc, seq, k);
}

static int pg_reset_discard(void *dconn)
{
    static const char *const cmds[] = {"DISCARD ALL"};

    return reset_with(dconn, cmds, 1);
}

static int pg_reset_nodiscard(void *dconn)
{
    static const char *const cmds[] = {"RESET ALL", "CLOSE ALL", "DEALLOCATE ALL"};

    return reset_with(dconn, cmds, 3);
}

/* Read every result that is complete. Returns OK when the sequence ended,
 * READ when more input is needed, FAILED on an error result or lost link. */
static weir_poll consume_results(pg_dconn *dc)
{
    while (!PQisBusy(dc->conn)) {
        PGresult *res = PQgetResult(dc->conn);

        if (res == NULL) {
            if (++dc->cur >= dc->ncmds)
                return WEIR_POLL_OK;
            if (send_current(dc) != 0)
                return WEIR_POLL_FAILED;
            return WEIR_POLL_WRITE; /* flush it, then read */
        }
        switch (PQresultStatus(res)) {
        case PGRES_FATAL_ERROR:
        case PGRES_BAD_RESPONSE:
        case PGRES_NONFATAL_ERROR:
            weir__pg_one_line(dc->err, sizeof(dc->err), PQresultErrorMessage(res));
            PQclear(res);
            return WEIR_POLL_FAILED;
        default:
            PQclear(res);
        }
    }
    return WEIR_POLL_READ;
}

static weir_poll pg_command_poll(void *dconn)
{
    pg_dconn *dc = dconn;

    for (;;) {
        weir_poll r;
        int f = PQflush(dc->conn);

        if (f < 0 || !PQconsumeInput(dc->conn)) {
            weir__pg_one_line(dc->err, sizeof(dc->err), PQerrorMessage(dc->conn));
            return WEIR_POLL_FAILED;
        }
        if (f > 0)
            return WEIR_POLL_WRITE;
        r = consume_results(dc);
        if (r != WEIR_POLL_WRITE)
            return r;
        /* The next command was queued: loop to flush it right away. */
    }
}

static weir_poll pg_idle_readable(void *dconn)
{
    pg_dconn *dc = dconn;
    PGnotify *n;

    if (!PQconsumeInput(dc->conn) || PQstatus(dc->conn) == CONNECTION_BAD) {
        if (!dc->fatal)
            weir__pg_one_line(dc->err, sizeof(dc->err), PQerrorMessage(dc->conn));
        return WEIR_POLL_FAILED;
    }
    /* Notifications for a session that is gone to nobody: drop them. */
    while ((n = PQnotifies(dc->conn)) != NULL)
        PQfreemem(n);
    return dc->fatal ? WEIR_POLL_FAILED : WEIR_POLL_OK;
}

static int pg_is_broken(void *dconn)
{
    pg_dconn *dc = dconn;
    PGTransactionStatusType ts;

    if (PQstatus(dc->conn) == CONNECTION_BAD || dc->fatal)
        return 1;
    ts = PQtransactionStatus(dc->conn);
    return ts == PQTRANS_ACTIVE || ts == PQTRANS_UNKNOWN;
}

/*
 * Connection-ending SQLSTATEs: class 08 (connection exception) and the
 * operator interventions that terminate a session: admin_shutdown (57P01),
 * crash_shutdown (57P02), cannot_connect_now (57P03). No SQLSTATE at all
 * means libpq itself failed, which is a lost or unusable connection.
 */
static weir_error_class pg_classify(const char *sqlstate)
{
    if (sqlstate == NULL || sqlstate[0] == '\0')
        return WEIR_ERRCLASS_CONNECTION;
    if (strncmp(sqlstate, "08", 2) == 0)
        return WEIR_ERRCLASS_CONNECTION;
    if (strcmp(sqlstate, "57P01") == 0 || strcmp(sqlstate, "57P02") == 0 ||
        strcmp(sqlstate, "57P03") == 0)
        return WEIR_ERRCLASS_CONNECTION;
    return WEIR_ERRCLASS_STATEMENT;
}

static const char *pg_error_message(void *dconn)
{
    pg_dconn *dc = dconn;

    if (dc->err[0])
        return dc->err;
    weir__pg_one_line(dc->scratch, sizeof(dc->scratch), PQerrorMessage(dc->conn));
    return dc->scratch;
}

/* A failure without the server's SQLSTATE passes when it says the server
 * was away or slow: libpq's and the C library's words (weir sets no locale;
 * an embedder's translated text counts as lasting, the safe side). */
static int passing_failure(const char *error)
{
    static const char *const words[] = {
        "Connection refused", "No such file or directory", "timeout expired", "connect timed out",
        "Connection timed out", "server closed the connection unexpectedly", "Connection reset by peer",
        "No route to host", "Network is unreachable", "Resource temporarily unavailable",
        /* a name that vanishes while its host restarts (containers) */
        "could not translate host name",
        /* a server out of processes or memory, or dying in the TLS handshake */
        "could not fork new process", "SSL SYSCALL error",
        /* this side out of descriptors or ports */
        "Too many open files", "Cannot assign requested address",
    };

    for (size_t i = 0; error && i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(error, words[i]))
            return 1;
    return 0;
}

static int pg_connect_refused(void *dconn, const char *error)
{
    const pg_dconn *dc = dconn;

    if (dc != NULL && dc->sqlstate[0])
        return weir_proto_login_refusal_lasts(dc->sqlstate);
    return !passing_failure(error);
}

static int pg_server_version(void *dconn)
{
    return PQserverVersion(((pg_dconn *)dconn)->conn);
}

static void *pg_driver_handle(void *dconn)
{
    return ((pg_dconn *)dconn)->conn;
}

/* Wrap s in quote characters, doubling each embedded quote (and backslash
 * when double_bs). prefix, when non-NULL, goes before the opening quote. */
static char *quote_with(const char *s, char q, int double_bs, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0, n = plen + 3;
    char *out, *p;

    for (const char *c = s; *c; c++)
        n += (*c == q || (double_bs && *c == '\\')) ? 2 : 1;
    out = malloc(n);
    if (out == NULL)
        return NULL;
    memcpy(out, prefix ? prefix : "", plen);
    p = out + plen;
    *p++ = q;
    for (const char *c = s; *c; c++) {
        if (*c == q || (double_bs && *c == '\\'))
            *p++ = *c;
        *p++ = *c;
    }
    *p++ = q;
    *p = '\0';
    return out;
}

static char *pg_quote_identifier(const char *s)
{
    return quote_with(s ? s : "", '"', 0, NULL);
}

/*
 * With standard_conforming_strings on, a backslash in '...' is literal; the
 * E'' form with doubled backslashes means the same whatever that setting,
 * so it is used whenever a backslash appears (as PQescapeLiteral does,
 * minus its leading space).
 */
static char *pg_quote_literal(const char *s)
{
    s = s ? s : "";
    if (strchr(s, '\\'))
        return quote_with(s, '\'', 1, "E");
    return quote_with(s, '\'', 0, NULL);
}

static void pg_close(void *dconn)
{
    pg_dconn *dc = dconn;

    if (dc == NULL)
        return;
    /* PQfinish sends Terminate; in blocking mode a socket the backend stopped
     * draining would hold the caller (an event loop) until it does. */
    if (dc->conn != NULL)
        (void)PQsetnonblocking(dc->conn, 1);
    PQfinish(dc->conn);
    free(dc);
}

#define PG_DIALECT_TABLE(NAME, RESET)                                                              \
    {                                                                                              \
        .name = NAME, .connect_start = pg_connect_start, .connect_poll = pg_connect_poll,         \
        .socket = pg_socket, .ping_start = pg_ping_start, .reset_start = RESET,                    \
        .command_poll = pg_command_poll, .idle_readable = pg_idle_readable,                        \
        .is_broken = pg_is_broken, .classify = pg_classify, .error_message = pg_error_message,    \
        .connect_refused = pg_connect_refused,                                                     \
        .server_version = pg_server_version, .driver_handle = pg_driver_handle,                    \
        .quote_identifier = pg_quote_identifier, .quote_literal = pg_quote_literal,                \
        .close = pg_close,                                                                         \
    }


const weir_dialect weir__dialect_postgresql = PG_DIALECT_TABLE("postgresql", pg_reset_discard);
const weir_dialect weir__dialect_postgresql_nodiscard =
    PG_DIALECT_TABLE("postgresql-nodiscard", pg_reset_nodiscard);
