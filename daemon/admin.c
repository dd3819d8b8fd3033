/*
 * The admin console (see admin.h): simple-query protocol only, one command
 * per Query message, each answered with a RowDescription and DataRows whose
 * columns match PgBouncer's, so psql and monitoring exporters parse them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "admin.h"
#include "client.h"
#include "config.h"
#include "pooler.h"

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

void admin_login(struct client *c)
{
    const struct weir_config *cfg = c->d->cfg;

    if (!in_list(cfg->admin_users, c->user) && !in_list(cfg->stats_users, c->user) &&
        cfg->auth_type != AUTH_TYPE_ANY) {
        client_disconnect(c, "08P01", "not allowed");
        return;
    }
    client_start_auth_public(c);
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

static void send_rows_done(struct client *c, const char *tag)
{
    (void)weir_proto_build_command_complete(c->io.out, tag);
}

static void show_version(struct client *c)
{
    const char *names[] = {"version"};
    const char *vals[] = {"PgBouncer 1.18.0 compatible (weir " WEIR_VERSION_STRING ")"};

    (void)weir_proto_build_row_description(c->io.out, 1, names, NULL);
    (void)weir_proto_build_data_row(c->io.out, 1, vals);
    send_rows_done(c, "SHOW");
}

static void show_pools(struct client *c)
{
    static const char *const names[] = {"database", "user", "cl_active", "cl_waiting", "cl_cancel_req",
                                        "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login",
                                        "maxwait", "maxwait_us", "pool_mode"};
    const uint32_t text = 25, i8 = 20;
    const uint32_t types[] = {text, text, i8, i8, i8, i8, i8, i8, i8, i8, i8, i8, text};

    (void)weir_proto_build_row_description(c->io.out, 13, names, types);
    for (struct dpool *dp = c->d->pools; dp; dp = dp->next) {
        weir_pool_stats st;
        char v[11][32];
        const char *vals[13];
        weir_pool_get_stats(dp->pool, &st);
        snprintf(v[0], 32, "%d", dp->nclients - st.waiters);
        snprintf(v[1], 32, "%d", st.waiters);
        snprintf(v[2], 32, "0");
        snprintf(v[3], 32, "%d", st.in_use);
        snprintf(v[4], 32, "%d", st.idle);
        snprintf(v[5], 32, "0");
        snprintf(v[6], 32, "%d", st.busy);
        snprintf(v[7], 32, "%d", st.connecting);
        snprintf(v[8], 32, "%llu", (unsigned long long)(st.wait_us_max / 1000000));
        snprintf(v[9], 32, "%llu", (unsigned long long)(st.wait_us_max % 1000000));
        vals[0] = dp->dbname;
        vals[1] = dp->user;
        for (int i = 0; i < 10; i++)
            vals[2 + i] = v[i];
        vals[12] = config_pool_mode_name(dp->mode);
        (void)weir_proto_build_data_row(c->io.out, 13, vals);
    }
    send_rows_done(c, "SHOW");
}

static void run_command(struct client *c, const char *sql)
{
    char cmd[256];
    size_t n = 0;

    while (*sql == ' ' || *sql == '\t' || *sql == '\n')
        sql++;
    while (sql[n] && sql[n] != ';' && n < sizeof(cmd) - 1) {
        cmd[n] = sql[n];
        n++;
    }
    while (n > 0 && (cmd[n - 1] == ' ' || cmd[n - 1] == '\n' || cmd[n - 1] == '\t'))
        n--;
    cmd[n] = '\0';
    if (strcasecmp(cmd, "show version") == 0)
        show_version(c);
    else if (strcasecmp(cmd, "show pools") == 0)
        show_pools(c);
    else if (n == 0)
        (void)weir_proto_build_empty_query(c->io.out);
    else
        client_send_error(c, "ERROR", "08P01", "invalid command");
    (void)weir_proto_build_ready(c->io.out, 'I');
}

void admin_handle(struct client *c)
{
    weir_frame f;
    int rc;

    while ((rc = weir_proto_peek(c->io.in, 1 << 20, &f)) == 1) {
        const unsigned char *body = evbuffer_pullup(c->io.in, (ssize_t)f.total) + f.body_off;
        const char *sql;

        if (f.type == 'X') {
            client_disconnect(c, NULL, "client close request");
            return;
        }
        if (f.type != 'Q' || weir_proto_parse_string(body, f.body_len, &sql) != 0) {
            client_disconnect(c, "08P01", "the admin console speaks the simple query protocol only");
            return;
        }
        run_command(c, sql);
        evbuffer_drain(c->io.in, f.total);
    }
    if (rc < 0) {
        client_disconnect(c, "08P01", "bad packet");
        return;
    }
    client_flush(c);
}
