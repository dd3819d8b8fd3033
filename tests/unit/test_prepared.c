/*
 * Unit tests of the prepared-statement bookkeeping: interning shares one
 * statement per (text, types), client names hold references, server sets
 * evict the least recently used past their capacity, and nothing leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "prepared.h"

static void test_intern_shares_statements(void **state)
{
    struct pstmt_registry *r = pstmt_registry_new();
    const uint8_t int4[4] = {0, 0, 0, 23}, text[4] = {0, 0, 0, 25};
    struct pstmt *a = pstmt_intern(r, "SELECT $1", int4, 1);
    struct pstmt *b = pstmt_intern(r, "SELECT $1", int4, 1);
    struct pstmt *c = pstmt_intern(r, "SELECT $1", text, 1);
    struct pstmt *d = pstmt_intern(r, "SELECT $1", NULL, 0);

    (void)state;
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_ptr_not_equal(a, d);
    assert_string_not_equal(a->server_name, c->server_name);
    assert_int_equal(pstmt_registry_count(r), 3);
    pstmt_unref(r, a);
    pstmt_unref(r, b);
    pstmt_unref(r, c);
    pstmt_unref(r, d);
    assert_int_equal(pstmt_registry_count(r), 0);
    pstmt_registry_free(r);
}

static void test_client_names(void **state)
{
    struct pstmt_registry *r = pstmt_registry_new();
    struct client_stmts *cs = client_stmts_new();
    char name[32];

    (void)state;
    for (int i = 0; i < 500; i++) { /* grows past its first table */
        snprintf(name, sizeof(name), "P_%d", i);
        assert_int_equal(client_stmts_put(cs, r, name, pstmt_intern(r, i % 2 ? "SELECT 1" : "SELECT 2", NULL, 0)), 0);
    }
    assert_int_equal(client_stmts_count(cs), 500);
    assert_int_equal(pstmt_registry_count(r), 2);
    assert_string_equal(client_stmts_get(cs, "P_7")->query, "SELECT 1");
    assert_null(client_stmts_get(cs, "nope"));
    assert_int_equal(client_stmts_del(cs, r, "P_7"), 1);
    assert_int_equal(client_stmts_del(cs, r, "P_7"), 0);
    assert_null(client_stmts_get(cs, "P_7"));
    client_stmts_clear(cs, r);
    assert_int_equal(pstmt_registry_count(r), 0);
    client_stmts_free(cs, r);
    pstmt_registry_free(r);
}

static void test_server_lru_eviction(void **state)
{
    struct pstmt_registry *r = pstmt_registry_new();
    struct server_stmts *ss = server_stmts_new(2);
    struct pstmt *a = pstmt_intern(r, "A", NULL, 0), *b = pstmt_intern(r, "B", NULL, 0);
    struct pstmt *c = pstmt_intern(r, "C", NULL, 0), *ev;

    (void)state;
    assert_int_equal(server_stmts_add(ss, a, &ev), 0);
    assert_null(ev);
    assert_int_equal(server_stmts_add(ss, b, &ev), 0);
    assert_null(ev);
    assert_true(server_stmts_has(ss, a)); /* a is now the most recent */
    assert_int_equal(server_stmts_add(ss, c, &ev), 0);
    assert_ptr_equal(ev, b);              /* b was least recently used */
    pstmt_unref(r, ev);
    assert_false(server_stmts_has(ss, b));
    assert_int_equal(server_stmts_count(ss), 2);
    server_stmts_del(ss, r, a);
    assert_false(server_stmts_has(ss, a));
    pstmt_unref(r, a);
    pstmt_unref(r, b);
    pstmt_unref(r, c);
    assert_int_equal(pstmt_registry_count(r), 1); /* c: still on the server */
    server_stmts_free(ss, r);
    assert_int_equal(pstmt_registry_count(r), 0);
    pstmt_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intern_shares_statements),
        cmocka_unit_test(test_client_names),
        cmocka_unit_test(test_server_lru_eviction),
    };
    return cmocka_run_group_tests_name("prepared", tests, NULL, NULL);
}
