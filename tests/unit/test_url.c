/*
 * Unit tests of Engine URL parsing (lib/src/engine_url.c): weir's pool keys
 * are taken out of a libpq URI or key=value conninfo and converted (seconds
 * into milliseconds), every other parameter reaches libpq unchanged, bad
 * values and unknown pool_* keys are refused with the key named, and the
 * re-emitted key=value string quotes what libpq would otherwise misread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "engine_url.h"

#define UNSET (-12345)

/* Every field the parser may write starts at a value no key produces, so a
 * test sees exactly which fields a URL touched. */
static void cfg_unset(weir_pool_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->min_size = cfg->max_size = cfg->max_overflow = cfg->max_waiters = UNSET;
    cfg->timeout_ms = cfg->connect_timeout_ms = cfg->recycle_ms = cfg->recycle_jitter_ms = UNSET;
    cfg->idle_timeout_ms = cfg->pre_ping_ms = cfg->reset_on_return = cfg->lifo = UNSET;
}

struct parsed {
    int rc;
    weir_pool_config cfg;
    weir_engine_url u;
    char err[256];
};

static void parse(struct parsed *p, const char *url)
{
    cfg_unset(&p->cfg);
    p->rc = weir__engine_url_parse(url, &p->cfg, &p->u, p->err, sizeof(p->err));
}

/* What libpq reads from conninfo for keyword, as a static copy ("" if unset). */
static const char *libpq_value(const char *conninfo, const char *keyword)
{
    static char val[256];
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);

    assert_non_null(opts);
    val[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0 && o->val)
            strncpy(val, o->val, sizeof(val) - 1);
    PQconninfoFree(opts);
    return val;
}

static void test_uri_pool_keys_extracted_and_rest_kept(void **state)
{
    struct parsed p;

    parse(&p, "postgresql://alice:s3cret@db.example:6432/app?sslmode=require&pool_size=10"
              "&max_overflow=5&pool_timeout=2.5&pool_recycle=3600&pool_pre_ping=1"
              "&application_name=web&pool_min_size=2&pool_max_waiters=-1&pool_use_lifo=false"
              "&pool_reset_on_return=on&pool_idle_timeout=-1&pool_connect_timeout=3"
              "&pool_recycle_jitter=0.25");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo,
                        "postgresql://alice:s3cret@db.example:6432/app?sslmode=require&application_name=web");
    assert_int_equal(p.cfg.max_size, 10);
    assert_int_equal(p.cfg.max_overflow, 5);
    assert_int_equal(p.cfg.timeout_ms, 2500);
    assert_int_equal(p.cfg.recycle_ms, 3600000);
    assert_int_equal(p.cfg.pre_ping_ms, 0);
    assert_int_equal(p.cfg.min_size, 2);
    assert_int_equal(p.cfg.max_waiters, -1);
    assert_int_equal(p.cfg.lifo, 0);
    assert_int_equal(p.cfg.reset_on_return, 1);
    assert_int_equal(p.cfg.idle_timeout_ms, 0);
    assert_int_equal(p.cfg.connect_timeout_ms, 3000);
    assert_int_equal(p.cfg.recycle_jitter_ms, 250);
    assert_null(p.u.dialect);
    weir__engine_url_clear(&p.u);
}

static void test_uri_without_query_or_with_only_pool_keys(void **state)
{
    struct parsed p;

    parse(&p, "postgres://localhost/db");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "postgres://localhost/db");
    assert_int_equal(p.cfg.max_size, UNSET);
    weir__engine_url_clear(&p.u);

    parse(&p, "postgresql://localhost/db?pool_size=3");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "postgresql://localhost/db");
    assert_int_equal(p.cfg.max_size, 3);
    weir__engine_url_clear(&p.u);
}

static void test_uri_percent_decoding(void **state)
{
    struct parsed p;

    /* An encoded key is still recognised; an encoded value is decoded;
     * libpq's parameters keep their original encoding. */
    parse(&p, "postgresql:///db?host=%2Ftmp%2Fpg%20dir&pool%5Fsize=%34&pool_timeout=1%2E5");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "postgresql:///db?host=%2Ftmp%2Fpg%20dir");
    assert_string_equal(libpq_value(p.u.conninfo, "host"), "/tmp/pg dir");
    assert_int_equal(p.cfg.max_size, 4);
    assert_int_equal(p.cfg.timeout_ms, 1500);
    weir__engine_url_clear(&p.u);

    parse(&p, "postgresql:///db?pool_size=%zz");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "pool_size"));

    parse(&p, "postgresql:///db?pool_size=1%");
    assert_int_equal(p.rc, WEIR_EINVAL);
}

static void test_uri_dialect_key(void **state)
{
    struct parsed p;

    parse(&p, "postgresql:///db?dialect=PostgreSQL-NoDiscard&user=x");
    assert_int_equal(p.rc, 0);
    assert_non_null(p.u.dialect);
    assert_string_equal(p.u.dialect->name, "postgresql-nodiscard");
    assert_string_equal(p.u.conninfo, "postgresql:///db?user=x");
    weir__engine_url_clear(&p.u);

    parse(&p, "postgresql:///db?dialect=mysql");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "dialect"));
    assert_non_null(strstr(p.err, "mysql"));
}

static void test_bad_numbers_name_the_key(void **state)
{
    static const char *const bad[][2] = {
        {"pool_size=ten", "pool_size"},
        {"pool_size=0", "pool_size"},
        {"pool_size=-3", "pool_size"},
        {"pool_size=99999999999", "pool_size"},
        {"pool_size=", "pool_size"},
        {"max_overflow=1.5", "max_overflow"},
        {"pool_timeout=abc", "pool_timeout"},
        {"pool_timeout=-2", "pool_timeout"},
        {"pool_timeout=1e3", "pool_timeout"},
        {"pool_timeout=inf", "pool_timeout"},
        {"pool_recycle=3000000", "pool_recycle"},
        {"pool_connect_timeout=-1", "pool_connect_timeout"},
        {"pool_pre_ping=0.5", "pool_pre_ping"},
        {"pool_pre_ping=maybe", "pool_pre_ping"},
        {"pool_use_lifo=2", "pool_use_lifo"},
        {"pool_max_waiters=-2", "pool_max_waiters"},
    };
    char url[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct parsed p;

        snprintf(url, sizeof(url), "postgresql://h/db?%s", bad[i][0]);
        parse(&p, url);
        assert_int_equal(p.rc, WEIR_EINVAL);
        if (strstr(p.err, bad[i][1]) == NULL)
            fail_msg("%s: error \"%s\" does not name the key", url, p.err);
        assert_null(p.u.conninfo);

        snprintf(url, sizeof(url), "host=h %s", bad[i][0]);
        parse(&p, url);
        assert_int_equal(p.rc, WEIR_EINVAL);
        if (strstr(p.err, bad[i][1]) == NULL)
            fail_msg("%s: error \"%s\" does not name the key", url, p.err);
    }
}

static void test_unknown_pool_key_rejected(void **state)
{
    struct parsed p;

    parse(&p, "postgresql://h/db?pool_sise=3");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "pool_sise"));

    parse(&p, "host=h pool_frobnicate=1");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "pool_frobnicate"));
}

static void test_pre_ping_forms(void **state)
{
    static const struct {
        const char *v;
        int ms;
    } cases[] = {{"0", -1}, {"false", -1}, {"1", 0}, {"true", 0}, {"30", 30000}, {"1.5", 1500}};
    char url[64];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct parsed p;

        snprintf(url, sizeof(url), "dbname=x pool_pre_ping=%s", cases[i].v);
        parse(&p, url);
        assert_int_equal(p.rc, 0);
        assert_int_equal(p.cfg.pre_ping_ms, cases[i].ms);
        weir__engine_url_clear(&p.u);
    }
}

static void test_timeouts_accept_minus_one(void **state)
{
    struct parsed p;

    parse(&p, "dbname=x pool_timeout=-1 pool_recycle=-1 pool_timeout=0.001");
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.cfg.timeout_ms, 1); /* the last one wins, as in libpq */
    assert_int_equal(p.cfg.recycle_ms, 0);
    weir__engine_url_clear(&p.u);

    parse(&p, "dbname=x pool_timeout=-1");
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.cfg.timeout_ms, -1);
    weir__engine_url_clear(&p.u);
}

static void test_kv_pool_keys_stripped(void **state)
{
    struct parsed p;

    parse(&p, "host=/tmp port=5433 pool_size=7 user=bob   max_overflow = 0 dbname=app pool_timeout='0.2'");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "host=/tmp port=5433 user=bob dbname=app");
    assert_int_equal(p.cfg.max_size, 7);
    assert_int_equal(p.cfg.max_overflow, 0);
    assert_int_equal(p.cfg.timeout_ms, 200);
    weir__engine_url_clear(&p.u);
}

static void test_kv_quoting_round_trip(void **state)
{
    struct parsed p;

    /* Quoted values with spaces, an escaped quote, an escaped backslash, an
     * empty value, spaces around '=', and a backslash-escape outside quotes. */
    parse(&p, "password='it\\'s' application_name = 'my app' options='-c search_path=a\\'b' "
              "sslpassword='' dbname=we\\ ird user='c:\\\\x' pool_size=2");
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.cfg.max_size, 2);
    assert_string_equal(p.u.conninfo, "password='it\\'s' application_name='my app' "
                                      "options='-c search_path=a\\'b' sslpassword='' dbname='we ird' "
                                      "user='c:\\\\x'");
    /* And libpq reads back exactly the values that went in. */
    assert_string_equal(libpq_value(p.u.conninfo, "password"), "it's");
    assert_string_equal(libpq_value(p.u.conninfo, "application_name"), "my app");
    assert_string_equal(libpq_value(p.u.conninfo, "options"), "-c search_path=a'b");
    assert_string_equal(libpq_value(p.u.conninfo, "dbname"), "we ird");
    assert_string_equal(libpq_value(p.u.conninfo, "user"), "c:\\x");
    weir__engine_url_clear(&p.u);
}

static void test_kv_syntax_errors(void **state)
{
    struct parsed p;

    parse(&p, "host=h password='unterminated");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "unterminated"));

    parse(&p, "host=h lonely");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "lonely"));
}

static void test_libpq_rejects_unknown_option(void **state)
{
    struct parsed p;

    parse(&p, "host=h colour=blue");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "colour"));
    assert_null(strchr(p.err, '\n'));

    parse(&p, "postgresql://h/db?colour=blue&pool_size=1");
    assert_int_equal(p.rc, WEIR_EINVAL);
    assert_non_null(strstr(p.err, "colour"));
}

static void test_empty_conninfo_is_libpq_defaults(void **state)
{
    struct parsed p;

    parse(&p, "");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "");
    weir__engine_url_clear(&p.u);

    parse(&p, "  pool_size=3  ");
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.u.conninfo, "");
    assert_int_equal(p.cfg.max_size, 3);
    weir__engine_url_clear(&p.u);

    weir__engine_url_clear(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_pool_keys_extracted_and_rest_kept),
        cmocka_unit_test(test_uri_without_query_or_with_only_pool_keys),
        cmocka_unit_test(test_uri_percent_decoding),
        cmocka_unit_test(test_uri_dialect_key),
        cmocka_unit_test(test_bad_numbers_name_the_key),
        cmocka_unit_test(test_unknown_pool_key_rejected),
        cmocka_unit_test(test_pre_ping_forms),
        cmocka_unit_test(test_timeouts_accept_minus_one),
        cmocka_unit_test(test_kv_pool_keys_stripped),
        cmocka_unit_test(test_kv_quoting_round_trip),
        cmocka_unit_test(test_kv_syntax_errors),
        cmocka_unit_test(test_libpq_rejects_unknown_option),
        cmocka_unit_test(test_empty_conninfo_is_libpq_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
