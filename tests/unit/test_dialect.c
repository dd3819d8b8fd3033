/*
 * Unit tests of the built-in dialects' pure parts, which need no server:
 * finding a dialect by name, which SQLSTATEs mean the connection is gone,
 * identifier and literal quoting, how a failed connect's text yields the
 * server's SQLSTATE and which refusals last, and that a conninfo libpq rejects fails at
 * connect_start with libpq's reason and without leaking a half-made handle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <weir/dialect.h>
#include <weir/proto.h>

#include "pg_internal.h"

static void test_find_by_name(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");
    const weir_dialect *nd = weir_dialect_find("postgresql-nodiscard");

    assert_non_null(pg);
    assert_non_null(nd);
    assert_ptr_not_equal(pg, nd);
    assert_string_equal(pg->name, "postgresql");
    assert_string_equal(nd->name, "postgresql-nodiscard");
    assert_ptr_equal(weir_dialect_find("PostgreSQL"), pg);
    assert_ptr_equal(weir_dialect_find("POSTGRESQL-NODISCARD"), nd);
}

static void test_unknown_name(void **state)
{
    assert_null(weir_dialect_find("mysql"));
    assert_null(weir_dialect_find("postgres"));
    assert_null(weir_dialect_find("postgresql "));
    assert_null(weir_dialect_find(""));
    assert_null(weir_dialect_find(NULL));
}

/* The variants differ only in how they reset. */
static void test_variants_share_all_but_reset(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");
    const weir_dialect *nd = weir_dialect_find("postgresql-nodiscard");

    assert_ptr_not_equal(pg->reset_start, nd->reset_start);
    assert_ptr_equal(pg->connect_start, nd->connect_start);
    assert_ptr_equal(pg->command_poll, nd->command_poll);
    assert_ptr_equal(pg->classify, nd->classify);
    assert_ptr_equal(pg->close, nd->close);
}

static void test_classify_table(void **state)
{
    static const struct {
        const char *sqlstate;
        weir_error_class want;
    } cases[] = {
        {NULL, WEIR_ERRCLASS_CONNECTION},    /* libpq-side failure */
        {"08000", WEIR_ERRCLASS_CONNECTION}, /* connection_exception */
        {"08003", WEIR_ERRCLASS_CONNECTION}, /* connection_does_not_exist */
        {"08006", WEIR_ERRCLASS_CONNECTION}, /* connection_failure */
        {"08P01", WEIR_ERRCLASS_CONNECTION}, /* protocol_violation */
        {"57P01", WEIR_ERRCLASS_CONNECTION}, /* admin_shutdown */
        {"57P02", WEIR_ERRCLASS_CONNECTION}, /* crash_shutdown */
        {"57P03", WEIR_ERRCLASS_CONNECTION}, /* cannot_connect_now */
        {"57014", WEIR_ERRCLASS_STATEMENT},  /* query_canceled */
        {"22012", WEIR_ERRCLASS_STATEMENT},  /* division_by_zero */
        {"23505", WEIR_ERRCLASS_STATEMENT},  /* unique_violation */
        {"40001", WEIR_ERRCLASS_STATEMENT},  /* serialization_failure */
        {"42P01", WEIR_ERRCLASS_STATEMENT},  /* undefined_table */
        {"25P02", WEIR_ERRCLASS_STATEMENT},  /* in_failed_sql_transaction */
        {"53300", WEIR_ERRCLASS_STATEMENT},  /* too_many_connections: at connect only */
        {"XX000", WEIR_ERRCLASS_STATEMENT},  /* internal_error */
    };
    const char *names[] = {"postgresql", "postgresql-nodiscard"};

    for (size_t d = 0; d < 2; d++) {
        const weir_dialect *dl = weir_dialect_find(names[d]);

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            if (weir_dialect_classify(dl, cases[i].sqlstate) != cases[i].want)
                fail_msg("%s: %s classified wrongly", names[d],
                         cases[i].sqlstate ? cases[i].sqlstate : "NULL");
        }
    }
    /* No dialect: assume the worst so the connection is not reused. */
    assert_int_equal(weir_dialect_classify(NULL, "22012"), WEIR_ERRCLASS_CONNECTION);
}

static void expect_quoted(char *got, const char *want)
{
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_quote_identifier(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");

    expect_quoted(weir_dialect_quote_identifier(pg, "users"), "\"users\"");
    expect_quoted(weir_dialect_quote_identifier(pg, "Mixed Case"), "\"Mixed Case\"");
    expect_quoted(weir_dialect_quote_identifier(pg, "a\"b"), "\"a\"\"b\"");
    expect_quoted(weir_dialect_quote_identifier(pg, "\"\""), "\"\"\"\"\"\"");
    expect_quoted(weir_dialect_quote_identifier(pg, ""), "\"\"");
    expect_quoted(weir_dialect_quote_identifier(pg, "back\\slash"), "\"back\\slash\"");
    expect_quoted(weir_dialect_quote_identifier(pg, "caf\xc3\xa9"), "\"caf\xc3\xa9\"");
    assert_null(weir_dialect_quote_identifier(pg, NULL));
    assert_null(weir_dialect_quote_identifier(NULL, "x"));
}

static void test_quote_literal(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");

    expect_quoted(weir_dialect_quote_literal(pg, "hello"), "'hello'");
    expect_quoted(weir_dialect_quote_literal(pg, "it's"), "'it''s'");
    expect_quoted(weir_dialect_quote_literal(pg, "''"), "''''''");
    expect_quoted(weir_dialect_quote_literal(pg, ""), "''");
    /* A backslash switches to E'' with doubled backslashes, which reads the
     * same whatever standard_conforming_strings says. */
    expect_quoted(weir_dialect_quote_literal(pg, "a\\b"), "E'a\\\\b'");
    expect_quoted(weir_dialect_quote_literal(pg, "\\'"), "E'\\\\'''");
    expect_quoted(weir_dialect_quote_literal(pg, "x\"y"), "'x\"y'");
    assert_null(weir_dialect_quote_literal(pg, NULL));
    assert_null(weir_dialect_quote_literal(NULL, "x"));
}

static void test_connect_start_rejects_bad_conninfo(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");
    void *dconn = NULL;
    char err[256];

    assert_int_equal(pg->connect_start("host=x colour=blue", &dconn, err, sizeof(err)), WEIR_EINVAL);
    assert_null(dconn);
    assert_non_null(strstr(err, "colour"));
    assert_int_not_equal(err[strlen(err) - 1], '\n');

    /* Accepted by the parser, refused when libpq starts: still no handle. */
    assert_int_equal(pg->connect_start("host=/nonexistent port=notaport", &dconn, err, sizeof(err)),
                     WEIR_ECONNECT);
    assert_null(dconn);
    assert_non_null(strstr(err, "port"));
    pg->close(dconn);
    pg->close(NULL);
}

/* libpq's PQERRORS_VERBOSE text of a failed connect reads as the default one,
 * and the server's code is kept aside. */
static void test_connect_error_text(void **state)
{
    char buf[512], code[6];

    weir__pg_connect_error(buf, sizeof(buf),
                           "connection to server at \"127.0.0.1\", port 5 failed: FATAL:  3D000: database \"x\" "
                           "does not exist\nLOCATION:  InitPostgres, postinit.c:948\n",
                           code);
    assert_string_equal(buf, "connection to server at \"127.0.0.1\", port 5 failed: FATAL:  database \"x\" does not exist");
    assert_string_equal(code, "3D000");
    /* Never answered: no code; continuation lines join as before. */
    weir__pg_connect_error(buf, sizeof(buf),
                           "connection to server at \"h\", port 1 failed: Connection refused\n"
                           "\tIs the server running on that host and accepting TCP/IP connections?\n",
                           code);
    assert_string_equal(buf, "connection to server at \"h\", port 1 failed: Connection refused Is the server "
                             "running on that host and accepting TCP/IP connections?");
    assert_string_equal(code, "");
    /* Two hosts: the second answered; DETAIL stays, the code goes. */
    weir__pg_connect_error(buf, sizeof(buf),
                           "connection to server at \"a\", port 1 failed: Connection refused\n"
                           "connection to server at \"b\", port 2 failed: FATAL:  57P03: the database system is "
                           "starting up\nDETAIL:  x\nLOCATION:  f, g.c:1\n",
                           code);
    assert_string_equal(buf, "connection to server at \"a\", port 1 failed: Connection refused; connection to "
                             "server at \"b\", port 2 failed: FATAL:  the database system is starting up; "
                             "DETAIL:  x");
    assert_string_equal(code, "57P03");
    /* A message that merely looks like a code after the first is left alone. */
    weir__pg_connect_error(buf, sizeof(buf), "failed: FATAL:  28P01: no:  ABCDE: here\n", code);
    assert_string_equal(buf, "failed: FATAL:  no:  ABCDE: here");
    assert_string_equal(code, "28P01");
    weir__pg_connect_error(buf, 8, NULL, code);
    assert_string_equal(buf, "");
    /* libpq's translated label: the LOCATION line is known by its shape. */
    weir__pg_connect_error(buf, sizeof(buf), "x failed: FATAL:  28P01: Passwort falsch\nORT:  auth_failed, auth.c:326\n",
                           code);
    assert_string_equal(buf, "x failed: FATAL:  Passwort falsch");
    /* Many hosts: the text is cut to the buffer, the last host's code still found. */
    {
        char big[4096] = "";
        for (int i = 0; i < 12; i++)
            strcat(big, "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server "
                        "running on that host and accepting TCP/IP connections?\n");
        strcat(big, "connection to server at \"h\", port 2 failed: FATAL:  3D000: database \"x\" does not exist\n");
        weir__pg_connect_error(buf, sizeof(buf), big, code);
        assert_string_equal(code, "3D000");
        assert_true(strlen(buf) == sizeof(buf) - 1);
    }
}

static void test_which_login_refusals_last(void **state)
{
    static const char *const lasting[] = {"28P01", "28000", "3D000", "42501", "0A000", "08P01", "57P04", NULL};
    static const char *const passing[] = {"57P03", "53300", "53200", "08006", "08001", "57P01", "53", "", NULL};

    for (int i = 0; lasting[i]; i++)
        assert_true(weir_proto_login_refusal_lasts(lasting[i]));
    for (int i = 0; passing[i]; i++)
        assert_false(weir_proto_login_refusal_lasts(passing[i]));
    assert_false(weir_proto_login_refusal_lasts(NULL));
}

/* Without the server's code, the text decides: away or slow passes. */
static void test_connect_refused_by_text(void **state)
{
    const weir_dialect *pg = weir_dialect_find("postgresql");
    static const char *const passing[] = {
        "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is the server running on that "
        "host and accepting TCP/IP connections?",
        "connection to server on socket \"/tmp/.s.PGSQL.5\" failed: No such file or directory Is the server "
        "running locally and accepting connections on that socket?",
        "connection to server at \"h\", port 5 failed: timeout expired",
        "connect timed out",
        "server closed the connection unexpectedly",
        "could not translate host name \"db\" to address: Name or service not known",
        "connection to server at \"h\", port 5 failed: SSL SYSCALL error: EOF detected",
        "connection to server at \"h\", port 5 failed: FATAL:  could not fork new process for connection: x",
    };
    static const char *const lasting[] = {
        "connection to server at \"h\", port 5 failed: SSL error: certificate verify failed",
        "connection to server at \"h\", port 5 failed: fe_sendauth: no password supplied",
        "invalid connection option \"x\"",
        "",
    };

    for (size_t i = 0; i < sizeof(passing) / sizeof(passing[0]); i++)
        assert_false(pg->connect_refused(NULL, passing[i]));
    for (size_t i = 0; i < sizeof(lasting) / sizeof(lasting[0]); i++)
        assert_true(pg->connect_refused(NULL, lasting[i]));
    assert_true(pg->connect_refused(NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_by_name),
        cmocka_unit_test(test_unknown_name),
        cmocka_unit_test(test_variants_share_all_but_reset),
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_quote_identifier),
        cmocka_unit_test(test_quote_literal),
        cmocka_unit_test(test_connect_start_rejects_bad_conninfo),
        cmocka_unit_test(test_connect_error_text),
        cmocka_unit_test(test_which_login_refusals_last),
        cmocka_unit_test(test_connect_refused_by_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
