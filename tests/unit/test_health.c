/*
 * Unit tests of the host chooser of multi-host entries (health.c) without a
 * database: entries come from a real config file, host roles and states are
 * set the way the checks would set them, and the chooser the pools get
 * (weir_pool_target) is called directly. Covers which hosts each
 * target_session_attrs accepts, lag and failure exclusion, prefer-standby's
 * fallback, the three load_balance_hosts modes, waiting for the first checks,
 * and the conninfo handed to libpq. The checks themselves, failover and the
 * pools' reactions run against real servers in tests/integration/test_ha.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "config.h"
#include "daemon.h"
#include "health.h"
#include "pooler.h"

struct fixture {
    struct daemon d;
    struct dpool dp[4];
    weir_pool_config pc[4];
};

static const char *const names[] = {"rw", "ro", "pref", "one"};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[] = "/tmp/weir-test-health-XXXXXX";
    int fd = mkstemp(path);
    FILE *fp = fdopen(fd, "w");

    fputs("[databases]\n"
          "rw = host=h1,h2,h3 port=5432,5433,5434 dbname=app target_session_attrs=read-write\n"
          "ro = host=h1,h2,h3 port=5432,5433,5434 dbname=app target_session_attrs=standby\n"
          "pref = host=h1,h2,h3 port=5432 dbname=app target_session_attrs=prefer-standby "
          "load_balance_hosts=least-connections\n"
          "one = host=h1 dbname=app\n"
          "[weir]\nhealth_check_period = 1\nmax_standby_lag = 5\n",
          fp);
    fclose(fp);
    assert_int_equal(config_load(path, &f->d.cfg, NULL, NULL), 0);
    unlink(path);
    f->d.base = event_base_new();
    f->d.log.min_level = LG_FATAL + 1; /* quiet */
    assert_int_equal(health_start(&f->d), 0);
    for (int i = 0; i < 4; i++) {
        f->dp[i].d = &f->d;
        f->dp[i].dbname = (char *)names[i];
        f->dp[i].conninfo = (char *)"host='h1,h2,h3' dbname='app' user='u'";
        weir_pool_config_init(&f->pc[i]);
        health_pool_config(&f->d, &f->dp[i], &f->pc[i]);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    health_stop(&f->d);
    event_base_free(f->d.base);
    config_free(f->d.cfg);
    free(f);
    return 0;
}

static void set_host(struct fixture *f, const char *db, int i, enum host_role role, enum host_state st)
{
    struct ha_db *hd = health_find_db(&f->d, db);
    hd->hosts[i].role = role;
    hd->hosts[i].state = st;
}

/* Everything checked: h1 primary, h2 and h3 standbys, all up. */
static void healthy(struct fixture *f)
{
    for (int i = 0; i < 3; i++)
        for (int h = 0; h < 3; h++)
            set_host(f, names[i], h, h == 0 ? ROLE_PRIMARY : ROLE_STANDBY, HOST_UP);
}

/* Choose for entry i: returns the code; *port gets the chosen port (0 = libpq's choice). */
static int choose(struct fixture *f, int i, int *port, uintptr_t *tag)
{
    char *out = NULL, err[200] = "";
    uintptr_t t = 0;
    int rc = f->pc[i].target.choose(f->pc[i].target.arg, f->dp[i].conninfo, &out, &t, err, sizeof(err));
    const char *p;

    *port = 0;
    if (rc == 0 && out) {
        /* the entry's conninfo, then this host's host and port, which win */
        assert_true(strncmp(out, f->dp[i].conninfo, strlen(f->dp[i].conninfo)) == 0);
        p = strstr(out, " port='");
        assert_non_null(p);
        *port = atoi(p + 7);
        assert_non_null(strstr(out, " host='h"));
    }
    if (rc != 0)
        assert_true(err[0] != '\0');
    free(out);
    if (tag)
        *tag = t;
    return rc;
}

static int pick_port(struct fixture *f, int i)
{
    int port;
    assert_int_equal(choose(f, i, &port, NULL), 0);
    return port;
}

static void test_watched_entries_get_a_chooser(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < 3; i++) {
        assert_non_null(f->pc[i].target.choose);
        assert_int_equal(f->pc[i].fail_waiters_on_connect_error, 0); /* wait out a failover */
    }
    assert_null(f->pc[3].target.choose); /* one host, any role: libpq alone */
    assert_null(health_find_db(&f->d, "one"));
    assert_int_equal(health_find_db(&f->d, "pref")->nhosts, 3);
    assert_string_equal(health_find_db(&f->d, "pref")->hosts[2].port, "5432"); /* one port for all */
}

static void test_waits_for_first_checks_then_lets_libpq_try(void **state)
{
    struct fixture *f = *state;
    int port;

    assert_int_equal(choose(f, 0, &port, NULL), WEIR_EAGAIN); /* checks started, none answered */
    set_host(f, "rw", 0, ROLE_PRIMARY, HOST_UP);
    assert_int_equal(choose(f, 0, &port, NULL), WEIR_EAGAIN); /* the others may matter: wait a little */
    health_find_db(&f->d, "rw")->started_us -= 2000000;       /* not longer than that */
    assert_int_equal(choose(f, 0, &port, NULL), 0);
    assert_int_equal(port, 5432);
    for (int h = 0; h < 3; h++)
        set_host(f, "rw", h, ROLE_UNKNOWN, HOST_DOWN);
    assert_int_equal(choose(f, 0, &port, NULL), 0); /* every check fails: libpq decides */
    assert_int_equal(port, 0);
    assert_int_equal(health_db_ok(&f->d, "rw"), 0);
}

static void test_read_write_goes_to_the_primary_only(void **state)
{
    struct fixture *f = *state;
    int port;
    uintptr_t tag;

    healthy(f);
    for (int n = 0; n < 4; n++)
        assert_int_equal(pick_port(f, 0), 5432);
    assert_int_equal(health_db_ok(&f->d, "rw"), 1);
    /* failover under way: the primary is down, nothing else is one yet */
    set_host(f, "rw", 0, ROLE_PRIMARY, HOST_DOWN);
    assert_int_equal(choose(f, 0, &port, NULL), WEIR_ECONNECT);
    assert_int_equal(health_db_ok(&f->d, "rw"), 0);
    set_host(f, "rw", 2, ROLE_PRIMARY, HOST_UP); /* promoted */
    assert_int_equal(choose(f, 0, &port, &tag), 0);
    assert_int_equal(port, 5434);
    assert_true(health_find_host(&f->d, "rw", tag) == &health_find_db(&f->d, "rw")->hosts[2]);
    /* the old primary back as a standby is not written to */
    set_host(f, "rw", 0, ROLE_STANDBY, HOST_UP);
    for (int n = 0; n < 4; n++)
        assert_int_equal(pick_port(f, 0), 5434);
}

static void test_standby_round_robin_and_exclusion(void **state)
{
    struct fixture *f = *state;
    int seen[2] = {0, 0}, port;

    healthy(f);
    for (int n = 0; n < 6; n++) {
        int p = pick_port(f, 1);
        assert_true(p == 5433 || p == 5434);
        seen[p - 5433]++;
    }
    assert_int_equal(seen[0], 3);
    assert_int_equal(seen[1], 3);
    set_host(f, "ro", 2, ROLE_STANDBY, HOST_LAGGING);
    for (int n = 0; n < 4; n++)
        assert_int_equal(pick_port(f, 1), 5433);
    set_host(f, "ro", 1, ROLE_STANDBY, HOST_DOWN);
    assert_int_equal(choose(f, 1, &port, NULL), WEIR_ECONNECT); /* never the primary */
    assert_int_equal(health_db_ok(&f->d, "ro"), 0);
}

static void test_prefer_standby_least_connections_then_primary(void **state)
{
    struct fixture *f = *state;
    struct ha_db *hd = health_find_db(&f->d, "pref");
    int port;
    uintptr_t tags[4];

    healthy(f);
    for (int n = 0; n < 4; n++) {
        assert_int_equal(choose(f, 2, &port, &tags[n]), 0);
        assert_int_not_equal(port, 0);
    }
    /* least connections among the standbys: two each, none on the primary */
    assert_int_equal(hd->hosts[0].nconns, 0);
    assert_int_equal(hd->hosts[1].nconns, 2);
    assert_int_equal(hd->hosts[2].nconns, 2);
    /* connections to h2 close: the next ones go there */
    for (int n = 0; n < 4; n++)
        if (tags[n] == hd->hosts[1].id)
            f->pc[2].target.release(f->pc[2].target.arg, tags[n], 1);
    assert_int_equal(hd->hosts[1].nconns, 0);
    assert_int_equal(choose(f, 2, &port, NULL), 0);
    assert_int_equal(hd->hosts[1].nconns, 1);
    /* no standby usable: the primary */
    set_host(f, "pref", 1, ROLE_STANDBY, HOST_LAGGING);
    set_host(f, "pref", 2, ROLE_STANDBY, HOST_DOWN);
    assert_int_equal(choose(f, 2, &port, NULL), 0);
    assert_int_equal(hd->hosts[0].nconns, 1);
}

static void test_disable_takes_the_first_usable_in_order(void **state)
{
    struct fixture *f = *state;
    struct ha_db *hd = health_find_db(&f->d, "ro");

    healthy(f);
    hd->balance = LOAD_BALANCE_DISABLE;
    for (int n = 0; n < 3; n++)
        assert_int_equal(pick_port(f, 1), 5433);
    set_host(f, "ro", 1, ROLE_STANDBY, HOST_DOWN);
    assert_int_equal(pick_port(f, 1), 5434);
}

static void test_reload_keeps_unchanged_entries(void **state)
{
    struct fixture *f = *state;
    struct ha_db *before = health_find_db(&f->d, "rw");

    healthy(f);
    health_apply_config(&f->d); /* same config */
    assert_ptr_equal(health_find_db(&f->d, "rw"), before);
    assert_int_equal(before->hosts[0].role, ROLE_PRIMARY);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_watched_entries_get_a_chooser),
        T(test_waits_for_first_checks_then_lets_libpq_try),
        T(test_read_write_goes_to_the_primary_only),
        T(test_standby_round_robin_and_exclusion),
        T(test_prefer_standby_least_connections_then_primary),
        T(test_disable_takes_the_first_usable_in_order),
        T(test_reload_keeps_unchanged_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
