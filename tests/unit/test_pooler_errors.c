/*
 * Unit tests of pooler_server_error(): telling, from libpq's text of a
 * failed server login, whether PostgreSQL itself refused it (then its
 * severity and words go to the client and into PgBouncer's "server login
 * failed: FATAL ..." log line) or the connection never got that far
 * (refused, timed out), where weir keeps libpq's whole text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pooler.h"

static int parse(const char *err, char *sev, char *msg)
{
    return pooler_server_error(err, sev, 16, msg, 256);
}

static void test_server_refused_over_tcp(void **state)
{
    char sev[16], msg[256];

    (void)state;
    assert_int_equal(parse("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password "
                           "authentication failed for user \"alice\"\n", sev, msg), 1);
    assert_string_equal(sev, "FATAL");
    assert_string_equal(msg, "password authentication failed for user \"alice\"");
}

static void test_pool_log_line(void **state)
{
    char sev[16], msg[256];

    (void)state;
    /* the pool's own "connect failed: " must not be taken for the server's answer */
    assert_int_equal(parse("pool app/bob: connect failed: connection to server at \"db\" (10.0.0.1), port 5432 "
                           "failed: FATAL:  database \"app\" does not exist", sev, msg), 1);
    assert_string_equal(msg, "database \"app\" does not exist");
}

static void test_not_the_server(void **state)
{
    char sev[16], msg[256];

    (void)state;
    assert_int_equal(parse("connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the "
                           "server running on that host and accepting TCP/IP connections?", sev, msg), 0);
    assert_int_equal(parse("timeout expired", sev, msg), 0);
    assert_int_equal(parse("failed: ", sev, msg), 0);
    assert_int_equal(parse("", sev, msg), 0);
}

static void test_second_host_answers(void **state)
{
    char sev[16], msg[256];

    (void)state;
    assert_int_equal(parse("connection to server at \"a\" (10.0.0.1), port 5432 failed: Connection refused\n"
                           "connection to server at \"b\" (10.0.0.2), port 5432 failed: FATAL:  the database "
                           "system is starting up\n", sev, msg), 1);
    assert_string_equal(msg, "the database system is starting up");
}

static void test_unix_socket_and_truncation(void **state)
{
    char sev[16], msg[8];

    (void)state;
    assert_int_equal(pooler_server_error("connection to server on socket \"/run/.s.PGSQL.5432\" failed: ERROR:  "
                                         "something long", sev, sizeof(sev), msg, sizeof(msg)), 1);
    assert_string_equal(sev, "ERROR");
    assert_string_equal(msg, "somethi");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_refused_over_tcp), cmocka_unit_test(test_pool_log_line),
        cmocka_unit_test(test_not_the_server),          cmocka_unit_test(test_second_host_answers),
        cmocka_unit_test(test_unix_socket_and_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
