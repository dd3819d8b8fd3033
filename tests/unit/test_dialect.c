/*
 * Unit tests of the built-in dialects' pure parts, which need no server:
 * finding a dialect by name, which SQLSTATEs mean the connection is gone,
 * identifier and literal quoting, and that a conninfo libpq rejects fails at
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
