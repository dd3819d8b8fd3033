/*
 * The admin console's control commands, each as PgBouncer 1.18 documents
 * it, with PgBouncer's error texts where it has one:
 *   PAUSE [db]      stop handing out servers, close them as they come back;
 *                   answers once none is in use
 *   RESUME [db]     undo PAUSE or KILL
 *   DISABLE/ENABLE  refuse (or again accept) new clients of a database
 *   KILL db         close the database's clients and servers now, and pause it
 *   KILL_CLIENT id  close one client (id as SHOW CLIENTS' ptr, or decimal)
 *   RECONNECT [db]  close servers as they come back, for fresh ones
 *   WAIT_CLOSE [db] answer once no server RECONNECT or RELOAD condemned is left
 *   RELOAD, SHUTDOWN, SET key = value
 * Only admin_users may run them; stats_users get "admin access needed".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "admin_internal.h"
#include "auth.h"
#include "config.h"
#include "pooler.h"
#include "server.h"
#include "tls.h"

/* ---- pools of one database (NULL: all) ---- */

static int in_scope(const struct dpool *dp, const char *db)
{
    return db == NULL || strcmp(dp->dbname, db) == 0;
}

/* No server goes out; those in the pool close now, the others on return. */
static void pools_pause(struct daemon *d, const char *db)
{
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (in_scope(dp, db)) {
            weir_pool_pause(dp->pool);
            (void)weir_pool_invalidate_all(dp->pool);
        }
}

/* Resume what no other PAUSE still holds; draining (removed) pools stay so. */
static void pools_resume(struct daemon *d, const char *db)
{
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (in_scope(dp, db) && !dp->removed && !admin_db_paused(d, dp->dbname))
            weir_pool_resume(dp->pool);
}

void admin_pause_all(struct daemon *d)
{
    world_stop(daemon_main_worker(d)); /* nested when the console asks */
    d->paused = 1;
    pools_pause(d, NULL);
    world_start(daemon_main_worker(d));
}

void admin_resume_all(struct daemon *d)
{
    world_stop(daemon_main_worker(d));
    d->paused = 0;
    pools_resume(d, NULL);
    world_start(daemon_main_worker(d));
}

/* ---- commands ---- */

static enum admin_result no_such_db(struct client *c, const char *db)
{
    return admin_error(c, "no such database: %s", db);
}

static enum admin_result cmd_pause(struct client *c, const char *db)
{
    struct daemon *d = c->d;
    struct admin_db *a;

    if (db == NULL) {
        if (d->paused)
            return admin_error(c, "already suspended/paused");
        log_at(&d->log, LG_LOG, "PAUSE command issued");
        admin_pause_all(d);
        return admin_wait(c, "PAUSE", NULL);
    }
    if (!admin_db_exists(d, db))
        return no_such_db(c, db);
    if ((a = admin_db_get(d, db)) == NULL)
        return admin_error(c, "out of memory");
    log_at(&d->log, LG_LOG, "PAUSE '%s' command issued", db);
    a->paused = 1;
    pools_pause(d, db);
    return admin_wait(c, "PAUSE", db);
}

static enum admin_result cmd_resume(struct client *c, const char *db)
{
    struct daemon *d = c->d;
    struct admin_db *a;

    if (db == NULL) {
        if (!d->paused)
            return admin_error(c, "pooler is not paused/suspended");
        log_at(&d->log, LG_LOG, "RESUME command issued");
        admin_resume_all(d);
        return admin_complete(c, "RESUME");
    }
    if (!admin_db_exists(d, db))
        return no_such_db(c, db);
    a = admin_db_get(d, db);
    if (a == NULL || !a->paused)
        return admin_error(c, "database %s is not paused", db);
    log_at(&d->log, LG_LOG, "RESUME '%s' command issued", db);
    a->paused = 0;
    pools_resume(d, db);
    return admin_complete(c, "RESUME");
}

static enum admin_result set_disabled(struct client *c, const char *db, int disabled)
{
    struct admin_db *a;

    if (!admin_db_exists(c->d, db))
        return no_such_db(c, db);
    if ((a = admin_db_get(c->d, db)) == NULL)
        return admin_error(c, "out of memory");
    log_at(&c->d->log, LG_LOG, "%s '%s' command issued", disabled ? "DISABLE" : "ENABLE", db);
    a->disabled = disabled;
    return admin_complete(c, disabled ? "DISABLE" : "ENABLE");
}

static enum admin_result cmd_disable(struct client *c, const char *db)
{
    return set_disabled(c, db, 1);
}

static enum admin_result cmd_enable(struct client *c, const char *db)
{
    return set_disabled(c, db, 0);
}

static enum admin_result cmd_kill(struct client *c, const char *db)
{
    struct daemon *d = c->d;
    struct admin_db *a;
    struct client *x, *next;

    if (!admin_db_exists(d, db))
        return no_such_db(c, db);
    if ((a = admin_db_get(d, db)) == NULL)
        return admin_error(c, "out of memory");
    log_at(&d->log, LG_LOG, "KILL '%s' command issued", db);
    a->paused = 1; /* new clients wait for RESUME */
    pools_pause(d, db);
    for (x = daemon_first_client(d); x; x = next) {
        next = daemon_next_client(d, x); /* x leaves the list */
        if (!x->admin && x->dbname && strcmp(x->dbname, db) == 0)
            client_disconnect(x, "08P01", "database removed");
    }
    return admin_complete(c, "KILL");
}

/* "0x1f" as SHOW CLIENTS prints it, or decimal. */
static int parse_client_id(const char *s, uint64_t *id)
{
    char *end;
    int base = 10;

    if (s == NULL || *s == '\0' || *s == '-')
        return -1;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        base = 16;
    }
    errno = 0;
    *id = strtoull(s, &end, base);
    return errno == 0 && *s && *end == '\0' ? 0 : -1;
}

static enum admin_result cmd_kill_client(struct client *c, const char *arg)
{
    struct client *target;
    uint64_t id;

    if (parse_client_id(arg, &id) != 0)
        return admin_error(c, "invalid client pointer supplied");
    target = daemon_find_client(c->d, id);
    if (target == NULL || target->state == CL_CLOSING)
        return admin_error(c, "client not found");
    log_at(&c->d->log, LG_LOG, "KILL_CLIENT '%s' command issued", arg);
    client_disconnect(target, "08P01", "admin forced disconnect");
    return target == c ? ADMIN_NOREPLY : admin_complete(c, "KILL_CLIENT");
}

static enum admin_result cmd_reconnect(struct client *c, const char *db)
{
    if (db && !admin_db_exists(c->d, db))
        return no_such_db(c, db);
    if (db)
        log_at(&c->d->log, LG_LOG, "RECONNECT '%s' command issued", db);
    else
        log_at(&c->d->log, LG_LOG, "RECONNECT command issued");
    for (struct dpool *dp = c->d->pools; dp; dp = dp->next)
        if (in_scope(dp, db))
            (void)weir_pool_invalidate_all(dp->pool);
    return admin_complete(c, "RECONNECT");
}

static enum admin_result cmd_wait_close(struct client *c, const char *db)
{
    if (db && !admin_db_exists(c->d, db))
        return no_such_db(c, db);
    return admin_wait(c, "WAIT_CLOSE", db);
}

static enum admin_result cmd_reload(struct client *c, const char *arg)
{
    (void)arg;
    log_at(&c->d->log, LG_LOG, "RELOAD command issued");
    if (daemon_reload(daemon_main_worker(c->d)) != 0)
        return admin_error(c, "RELOAD failed: the configuration file has errors (see the log); "
                              "the old configuration is kept");
    return admin_complete(c, "RELOAD");
}

/* PgBouncer 1.18's SHUTDOWN: exit at once, without an answer. */
static enum admin_result cmd_shutdown(struct client *c, const char *arg)
{
    (void)arg;
    log_at(&c->d->log, LG_LOG, "SHUTDOWN command issued");
    daemon_notify("STOPPING=1\nSTATUS=SHUTDOWN from the admin console");
    event_base_loopbreak(c->d->base);
    return ADMIN_NOREPLY;
}

static enum admin_result cmd_suspend(struct client *c, const char *arg)
{
    (void)arg;
    return admin_error(c, "SUSPEND is not supported: weir has no online restart (-R); use PAUSE");
}

/* ---- SET ---- */

static void set_log_level(struct daemon *d)
{
    int v = d->cfg->verbose > 2 ? 2 : d->cfg->verbose;

    d->log.min_level = LG_LOG - v;
}

/* Make a changed setting take effect where the pools or the log keep a copy. */
static int apply_setting(struct client *c, const struct config_setting *s)
{
    struct daemon *d = c->d;

    if (strcmp(s->name, "verbose") == 0)
        set_log_level(d);
    else if (strcmp(s->name, "logfile") == 0)
        (void)log_reopen(&d->log, d->cfg->logfile);
    else if (strncmp(s->name, "syslog", 6) == 0)
        (void)log_set_syslog(&d->log, d->cfg->syslog, d->cfg->syslog_ident, d->cfg->syslog_facility);
    else if (strcmp(s->name, "auth_file") == 0) {
        struct userlist *users = NULL;
        if (daemon_load_userlist(d, d->cfg, &users) != 0)
            return -1;
        userlist_free(d->users);
        d->users = users;
    } else if (strncmp(s->name, "client_tls_", 11) == 0 && tls_reload(d) != 0) {
        return -1; /* the previous TLS context stays in use */
    }
    pooler_apply_config(d);
    return 0;
}

static enum admin_result cmd_set(struct client *c, const char *key, const char *value)
{
    const struct config_setting *s = config_setting_find(key);
    char err[512], tag[600];

    if (config_set(c->d->cfg, key, value, err, sizeof(err)) != 0)
        return admin_error(c, "SET failed: %s", err);
    log_at(&c->d->log, LG_LOG, "SET %s = '%s' command issued", s->name, value);
    if (apply_setting(c, s) != 0)
        return admin_error(c, "SET %s: the new value could not be applied (see the log)", s->name);
    snprintf(tag, sizeof(tag), "SET %s=%s", s->name, value);
    return admin_complete(c, tag);
}

/* ---- dispatch ---- */

enum arg_rule { ARG_NONE, ARG_OPTIONAL, ARG_DB };

static const struct control {
    const char *verb;
    enum arg_rule arg;
    enum admin_result (*fn)(struct client *c, const char *arg);
} controls[] = {
    {"PAUSE", ARG_OPTIONAL, cmd_pause},         {"RESUME", ARG_OPTIONAL, cmd_resume},
    {"DISABLE", ARG_DB, cmd_disable},            {"ENABLE", ARG_DB, cmd_enable},
    {"KILL", ARG_DB, cmd_kill},                  {"KILL_CLIENT", ARG_OPTIONAL, cmd_kill_client},
    {"RECONNECT", ARG_OPTIONAL, cmd_reconnect},  {"WAIT_CLOSE", ARG_OPTIONAL, cmd_wait_close},
    {"RELOAD", ARG_NONE, cmd_reload},            {"SHUTDOWN", ARG_NONE, cmd_shutdown},
    {"SUSPEND", ARG_NONE, cmd_suspend},
};

static enum admin_result admin_only(struct client *c)
{
    return admin_error(c, "admin access needed");
}

enum admin_result admin_control(struct client *c, const struct admin_cmd *cmd)
{
    const char *verb = cmd->words[0], *arg = cmd->nwords > 1 ? cmd->words[1] : NULL;

    if (strcasecmp(verb, "SET") == 0) {
        if (cmd->nwords != 4 || (strcmp(cmd->words[2], "=") != 0 && strcasecmp(cmd->words[2], "TO") != 0))
            return admin_invalid_command(c, cmd);
        return admin_is_admin(c) ? cmd_set(c, cmd->words[1], cmd->words[3]) : admin_only(c);
    }
    for (size_t i = 0; i < sizeof(controls) / sizeof(controls[0]); i++) {
        const struct control *k = &controls[i];
        if (strcasecmp(verb, k->verb) != 0)
            continue;
        if (cmd->nwords > 2 || (arg && k->arg == ARG_NONE))
            return admin_invalid_command(c, cmd);
        if (!admin_is_admin(c))
            return admin_only(c);
        if (arg == NULL && k->arg == ARG_DB)
            return admin_error(c, "a database is required");
        return k->fn(c, arg);
    }
    return admin_invalid_command(c, cmd);
}
