/*
 * Unit tests of the auth_hba_file parser and matcher: line types against
 * Unix, TCP and TLS peers, database and user lists (all, sameuser, quoting,
 * @file includes relative to the file, nested and missing), IPv4/IPv6 in
 * CIDR and address + mask form, IPv4-mapped clients, the methods, first
 * match wins, no match = reject, and the lines PgBouncer refuses (reported
 * with file:line and skipped while the rest of the file still counts).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "hba.h"

/* What the parser reported, one "file:line: message" per line. */
struct reports {
    char text[8192];
    int count;
};

static void collect(void *arg, const char *file, int line, const char *message)
{
    struct reports *r = arg;
    size_t used = strlen(r->text);

    snprintf(r->text + used, sizeof(r->text) - used, "%s:%d: %s\n", file, line, message);
    r->count++;
}

static struct hba *parse(const char *text, int expect_skipped, struct reports *r)
{
    struct hba *h = NULL;
    struct reports local;

    if (r == NULL)
        r = &local;
    memset(r, 0, sizeof(*r));
    assert_int_equal(hba_parse(text, "/etc/weir/hba.conf", 0, &h, collect, r), expect_skipped);
    assert_non_null(h);
    return h;
}

static enum hba_method tcp(const struct hba *h, const char *addr, bool tls, const char *db, const char *user,
                           int *line)
{
    struct hba_peer p;

    assert_int_equal(hba_peer_from_text(&p, false, addr, tls), 0);
    return hba_match(h, &p, db, user, line);
}

static enum hba_method local(const struct hba *h, const char *db, const char *user)
{
    struct hba_peer p;

    assert_int_equal(hba_peer_from_text(&p, true, "unix", false), 0);
    return hba_match(h, &p, db, user, NULL);
}

static void test_line_types(void **state)
{
    (void)state;
    struct hba *h = parse("# comment\n"
                          "\n"
                          "local all all peer\n"
                          "hostssl all all 0.0.0.0/0 cert\n"
                          "hostnossl all all 10.0.0.0/8 md5\n"
                          "host all all 0.0.0.0/0 scram-sha-256\n",
                          0, NULL);
    int line;

    assert_int_equal(hba_rule_count(h), 4);
    assert_int_equal(local(h, "db", "u"), HBA_PEER);
    assert_int_equal(tcp(h, "10.1.2.3", true, "db", "u", &line), HBA_CERT);
    assert_int_equal(line, 4);
    assert_int_equal(tcp(h, "10.1.2.3", false, "db", "u", &line), HBA_MD5);
    assert_int_equal(line, 5);
    assert_int_equal(tcp(h, "192.168.1.1", false, "db", "u", &line), HBA_SCRAM);
    assert_int_equal(line, 6);
    /* IPv6 matches no IPv4 rule: rejected, no line. */
    assert_int_equal(tcp(h, "::1", false, "db", "u", &line), HBA_REJECT);
    assert_int_equal(line, 0);
    hba_free(h);
}

static void test_first_match_wins_and_reject(void **state)
{
    (void)state;
    struct hba *h = parse("host all bad 0.0.0.0/0 reject\n"
                          "host all all 127.0.0.1/32 trust\n"
                          "host all all 127.0.0.1/32 reject\n",
                          0, NULL);
    int line;

    assert_int_equal(tcp(h, "127.0.0.1", false, "db", "bad", &line), HBA_REJECT);
    assert_int_equal(line, 1); /* a matching reject rule says which line */
    assert_int_equal(tcp(h, "127.0.0.1", false, "db", "good", &line), HBA_TRUST);
    assert_int_equal(line, 2);
    assert_int_equal(tcp(h, "127.0.0.2", false, "db", "good", &line), HBA_REJECT);
    assert_int_equal(line, 0);
    assert_int_equal(local(h, "db", "good"), HBA_REJECT); /* no local rule */
    hba_free(h);
    /* No rules at all, or no rule set, refuses everyone. */
    assert_int_equal(tcp(NULL, "127.0.0.1", false, "db", "u", NULL), HBA_REJECT);
}

static void test_methods(void **state)
{
    (void)state;
    static const struct {
        const char *word;
        enum hba_method m;
    } cases[] = {{"trust", HBA_TRUST}, {"reject", HBA_REJECT}, {"md5", HBA_MD5}, {"password", HBA_PASSWORD},
                 {"scram-sha-256", HBA_SCRAM}, {"cert", HBA_CERT}, {"peer", HBA_PEER}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[100];
        snprintf(text, sizeof(text), "local all all %s\n", cases[i].word);
        struct hba *h = parse(text, 0, NULL);
        assert_int_equal(hba_rule_count(h), 1);
        assert_int_equal(local(h, "d", "u"), cases[i].m);
        assert_string_equal(hba_method_name(cases[i].m), cases[i].word);
        hba_free(h);
    }
}

static void test_name_lists(void **state)
{
    (void)state;
    struct hba *h = parse("local shop,\"Sales DB\" alice,bob trust\n"
                          "local sameuser all md5\n"
                          "local \"all\" carol password\n"
                          "local all \"ALL\" scram-sha-256\n",
                          0, NULL);

    assert_int_equal(local(h, "shop", "alice"), HBA_TRUST);
    assert_int_equal(local(h, "Sales DB", "bob"), HBA_TRUST);
    assert_int_equal(local(h, "sales db", "bob"), HBA_REJECT); /* names are case-sensitive */
    assert_int_equal(local(h, "shop", "carol"), HBA_REJECT);
    assert_int_equal(local(h, "dave", "dave"), HBA_MD5);       /* sameuser */
    /* A quoted "all" is a database called all, not the keyword. */
    assert_int_equal(local(h, "all", "carol"), HBA_PASSWORD);
    assert_int_equal(local(h, "other", "carol"), HBA_REJECT);
    assert_int_equal(local(h, "x", "ALL"), HBA_SCRAM);
    hba_free(h);
}

static void test_addresses(void **state)
{
    (void)state;
    struct hba *h = parse("host all all 192.168.0.0 255.255.0.0 md5\n"
                          "host all all 10.0.0.7/32 trust\n"
                          "host all all 2001:db8::/32 scram-sha-256\n"
                          "host all all ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff password\n"
                          "host all all 0.0.0.0/0 reject\n"
                          "host all all ::/0 cert\n",
                          0, NULL);
    int line;

    assert_int_equal(tcp(h, "192.168.44.5", false, "d", "u", NULL), HBA_MD5);
    assert_int_equal(tcp(h, "192.169.0.1", false, "d", "u", &line), HBA_REJECT);
    assert_int_equal(line, 5);
    assert_int_equal(tcp(h, "10.0.0.7", false, "d", "u", NULL), HBA_TRUST);
    assert_int_equal(tcp(h, "10.0.0.8", false, "d", "u", &line), HBA_REJECT);
    assert_int_equal(tcp(h, "2001:db8:1::5", false, "d", "u", NULL), HBA_SCRAM);
    assert_int_equal(tcp(h, "2001:db9::5", false, "d", "u", NULL), HBA_CERT);
    assert_int_equal(tcp(h, "::1", false, "d", "u", NULL), HBA_PASSWORD);
    /* An IPv4 client seen through a dual-stack socket is an IPv4 client. */
    assert_int_equal(tcp(h, "::ffff:10.0.0.7", false, "d", "u", NULL), HBA_TRUST);
    hba_free(h);
}

static void test_host_bits_beyond_mask(void **state)
{
    (void)state;
    struct reports r;
    /* PostgreSQL ignores the host bits; PgBouncer warns. Both here: kept, warned. */
    struct hba *h = parse("host all all 10.1.2.3/8 trust\n", 0, &r);

    assert_int_equal(hba_rule_count(h), 1);
    assert_non_null(strstr(r.text, "/etc/weir/hba.conf:1: address has bits set beyond its mask"));
    assert_int_equal(tcp(h, "10.200.0.1", false, "d", "u", NULL), HBA_TRUST);
    hba_free(h);
}

static void test_refused_lines_are_skipped(void **state)
{
    (void)state;
    struct reports r;
    struct hba *h = parse("local all all trust extra\n"             /* 1: options */
                          "local all all ident\n"                   /* 2: method */
                          "host all all localhost trust\n"          /* 3: host name */
                          "host all all samehost trust\n"           /* 4 */
                          "host all all samenet trust\n"            /* 5 */
                          "host all all all trust\n"                /* 6 */
                          "local samerole all trust\n"              /* 7 */
                          "local replication all trust\n"           /* 8 */
                          "local all +admins trust\n"               /* 9: groups */
                          "host all all 10.0.0.0/33 trust\n"        /* 10: mask */
                          "host all all 10.0.0.0 255.0.0.0.0 md5\n" /* 11: mask */
                          "host all all 10.0.0.0\n"                 /* 12: no mask */
                          "hostgssenc all all 10.0.0.0/8 trust\n"   /* 13 */
                          "lcoal all all trust\n"                   /* 14: typo */
                          "local \"all all trust\n"                 /* 15: quote */
                          "local all all map=x\n"                   /* 16 */
                          "local all, trust\n"                      /* 17: empty list item */
                          "host all all ::1/129 trust\n"            /* 18 */
                          "local all all md5\n",                    /* 19: the one good line */
                          18, &r);

    assert_int_equal(hba_rule_count(h), 1);
    assert_int_equal(r.count, 18);
    for (int line = 1; line <= 18; line++) {
        char want[64];
        snprintf(want, sizeof(want), "/etc/weir/hba.conf:%d: ", line);
        assert_non_null(strstr(r.text, want));
    }
    assert_non_null(strstr(r.text, ":9: group membership (+admins) is not supported; line skipped"));
    assert_non_null(strstr(r.text, ":4: address \"samehost\" is not supported"));
    assert_non_null(strstr(r.text, ":2: unsupported authentication method \"ident\""));
    assert_int_equal(local(h, "d", "u"), HBA_MD5);
    hba_free(h);
}

/* @file includes, relative to the including file's directory. */
static void test_includes(void **state)
{
    (void)state;
    char dir[] = "/tmp/weir-hba-XXXXXX", path[256], users[128], nested[128], hbafile[128];
    struct hba *h = NULL;
    struct reports r = {{0}, 0};
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(users, sizeof(users), "%s/users.txt", dir);
    snprintf(nested, sizeof(nested), "%s/more.txt", dir);
    snprintf(hbafile, sizeof(hbafile), "%s/hba.conf", dir);
    f = fopen(users, "w");
    fputs("# team\nalice, bob\ncarol dave\n@more.txt\n", f);
    fclose(f);
    f = fopen(nested, "w");
    fputs("\"eve\"\n", f);
    fclose(f);
    f = fopen(hbafile, "w");
    fputs("local all @users.txt trust\nlocal all @missing.txt md5\nlocal all all reject\n", f);
    fclose(f);

    assert_int_equal(hba_load(hbafile, &h, collect, &r), 1);
    assert_int_equal(hba_rule_count(h), 2);
    snprintf(path, sizeof(path), "%s:2: @missing.txt: could not open", hbafile);
    assert_non_null(strstr(r.text, path));
    for (const char *const *u = (const char *const[]){"alice", "bob", "carol", "dave", "eve", NULL}; *u; u++)
        assert_int_equal(local(h, "d", *u), HBA_TRUST);
    assert_int_equal(local(h, "d", "mallory"), HBA_REJECT);
    hba_free(h);

    /* A file that includes itself stops at the depth limit. */
    f = fopen(users, "w");
    fputs("alice,@users.txt\n", f);
    fclose(f);
    memset(&r, 0, sizeof(r));
    assert_int_equal(hba_load(hbafile, &h, collect, &r), 2);
    assert_non_null(strstr(r.text, "nested more than"));
    hba_free(h);

    /* The fuzzer's mode refuses includes. */
    assert_int_equal(hba_parse("local all @users.txt trust\n", hbafile, HBA_NO_INCLUDES, &h, NULL, NULL), 1);
    assert_int_equal(hba_rule_count(h), 0);
    hba_free(h);

    unlink(users);
    unlink(nested);
    unlink(hbafile);
    rmdir(dir);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct hba *h = (struct hba *)1;
    struct reports r = {{0}, 0};

    assert_int_equal(hba_load("/nonexistent/weir/hba.conf", &h, collect, &r), -1);
    assert_null(h);
    assert_non_null(strstr(r.text, "/nonexistent/weir/hba.conf:0: could not open"));
}

static void test_peer_from_text(void **state)
{
    (void)state;
    struct hba_peer p;

    assert_int_equal(hba_peer_from_text(&p, false, "not an address", false), -1);
    assert_int_equal(hba_peer_from_text(&p, false, "::ffff:1.2.3.4", true), 0);
    assert_int_equal(p.family, AF_INET);
    assert_true(p.tls);
    assert_memory_equal(p.addr, ((uint8_t[]){1, 2, 3, 4}), 4);
    assert_int_equal(hba_peer_from_text(&p, true, "whatever", false), 0);
    assert_int_equal(p.family, AF_UNIX);
}

static void test_crlf_and_tabs(void **state)
{
    (void)state;
    struct hba *h = parse("local\tall\tall\ttrust\r\nhost all all 127.0.0.1/32 md5 # trailing comment\r\n", 0,
                          NULL);

    assert_int_equal(hba_rule_count(h), 2);
    assert_int_equal(local(h, "d", "u"), HBA_TRUST);
    assert_int_equal(tcp(h, "127.0.0.1", false, "d", "u", NULL), HBA_MD5);
    hba_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_types),
        cmocka_unit_test(test_first_match_wins_and_reject),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_name_lists),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_host_bits_beyond_mask),
        cmocka_unit_test(test_refused_lines_are_skipped),
        cmocka_unit_test(test_includes),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_peer_from_text),
        cmocka_unit_test(test_crlf_and_tabs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
