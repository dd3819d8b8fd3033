/*
 * Unit tests of the auth_file loader: PgBouncer's quoting and doubled-quote
 * escapes, comments, blank lines and CRLF, what may surround the two fields,
 * the length limits, malformed lines (reported with their line number and
 * skipped), duplicates, missing files, and a file of thousands of users.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/weir-userlist-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/userlist.txt", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const struct fixture *f, const char *data, size_t len)
{
    FILE *fp = fopen(f->path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Writes text and loads it; returns what userlist_load returned. */
static int load_text(const struct fixture *f, const char *text, struct userlist **out, char *err,
                     size_t errlen)
{
    write_file(f, text, strlen(text));
    return userlist_load(f->path, out, err, errlen);
}

static void test_basic(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    assert_int_equal(load_text(f,
                               "\"alice\" \"secret\"\n"
                               "\"bob\" \"md545f2603610af569b6155c45067268c6b\"\n",
                               &ul, err, sizeof(err)),
                     0);
    assert_int_equal(userlist_count(ul), 2);
    assert_string_equal(userlist_secret(ul, "alice"), "secret");
    assert_string_equal(userlist_secret(ul, "bob"), "md545f2603610af569b6155c45067268c6b");
    assert_null(userlist_secret(ul, "carol"));
    assert_null(userlist_secret(ul, "Alice"));
    assert_null(userlist_secret(ul, ""));
    assert_null(userlist_secret(ul, NULL));
    userlist_free(ul);
}

static void test_quotes_and_escapes(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    assert_int_equal(load_text(f,
                               "\"us\"\"er\" \"pa\"\"ss\"\n"
                               "\"\"\"\" \"\"\"\"\"\"\n"
                               "\"spaced user\" \"pass with spaces; and \\\\ backslash\"\n"
                               "\"empty\" \"\"\n"
                               "\"tab\tuser\" \"x\"\n",
                               &ul, err, sizeof(err)),
                     0);
    assert_int_equal(userlist_count(ul), 5);
    assert_string_equal(userlist_secret(ul, "us\"er"), "pa\"ss");
    assert_string_equal(userlist_secret(ul, "\""), "\"\"");
    assert_string_equal(userlist_secret(ul, "spaced user"), "pass with spaces; and \\\\ backslash");
    assert_string_equal(userlist_secret(ul, "empty"), "");
    assert_string_equal(userlist_secret(ul, "tab\tuser"), "x");
    userlist_free(ul);
}

static void test_comments_blank_lines_crlf(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    assert_int_equal(load_text(f,
                               "; a comment\n"
                               "\n"
                               "   \t \n"
                               "   ; indented comment \"x\" \"y\"\n"
                               "\"a\" \"1\"\r\n"
                               "\r\n"
                               "  \"b\"\t\"2\"   trailing words \"ignored\" \"too\"\n"
                               "\"c\"junk\"3\"\n"
                               ";\"d\" \"4\"\n"
                               "\"e\" \"5\"", /* no final newline */
                               &ul, err, sizeof(err)),
                     0);
    assert_int_equal(userlist_count(ul), 4);
    assert_string_equal(userlist_secret(ul, "a"), "1");
    assert_string_equal(userlist_secret(ul, "b"), "2");
    assert_string_equal(userlist_secret(ul, "c"), "3");
    assert_null(userlist_secret(ul, "d"));
    assert_string_equal(userlist_secret(ul, "e"), "5");
    userlist_free(ul);
}

static void test_secrets_kept_verbatim(void **state)
{
    static const char scram[] =
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==$N2RGkVHC9hb9OqhByS+Oe0itfFRGaVDDBtKNnCJFNXY=:"
        "TOsA0efqmbUINiFAyHgqLhiS5h7XzWTaikpSE2HomnU=";
    struct fixture *f = *state;
    struct userlist *ul;
    char text[512], err[256] = "";

    snprintf(text, sizeof(text), "\"x\" \"%s\"\n\"z\" \"md5d246fccfddef6d33431ccc1f896cc184\"\n",
             scram);
    assert_int_equal(load_text(f, text, &ul, err, sizeof(err)), 0);
    assert_string_equal(userlist_secret(ul, "x"), scram);
    assert_int_equal(secret_kind_of(userlist_secret(ul, "x")), SECRET_SCRAM);
    assert_int_equal(secret_kind_of(userlist_secret(ul, "z")), SECRET_MD5);
    userlist_free(ul);
}

static void test_malformed_lines(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "", expect[256];

    assert_int_equal(load_text(f,
                               "\"ok1\" \"p1\"\n"
                               "; fine\n"
                               "bare words\n"         /* 3 */
                               "\"unterminated\n"     /* 4 */
                               "\"nopass\"\n"         /* 5 */
                               "\"open\" \"pass\n"    /* 6 */
                               "# hash comment\n"     /* 7: PgBouncer only knows ';' */
                               "\"\" \"empty user\"\n" /* 8 */
                               "\"ok2\" \"p2\"\n",
                               &ul, err, sizeof(err)),
                     6);
    snprintf(expect, sizeof(expect), "%s:3: expected a quoted user name", f->path);
    assert_string_equal(err, expect);
    /* Good lines on both sides of the bad ones are loaded. */
    assert_int_equal(userlist_count(ul), 2);
    assert_string_equal(userlist_secret(ul, "ok1"), "p1");
    assert_string_equal(userlist_secret(ul, "ok2"), "p2");
    assert_null(userlist_secret(ul, "nopass"));
    assert_null(userlist_secret(ul, "open"));
    userlist_free(ul);
}

static void test_malformed_reasons(void **state)
{
    static const struct {
        const char *line, *reason;
    } cases[] = {
        {"bare", "expected a quoted user name"},
        {"\"u", "unterminated quoted string"},
        {"\"u\"", "expected a quoted password"},
        {"\"u\" \"p", "unterminated quoted string"},
        {"\"u\" \"p\"\"", "unterminated quoted string"},
        {"\"\" \"p\"", "empty user name"},
    };
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256], expect[256];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(load_text(f, cases[i].line, &ul, err, sizeof(err)), 1);
        snprintf(expect, sizeof(expect), "%s:1: %s", f->path, cases[i].reason);
        assert_non_null(strstr(err, expect));
        assert_int_equal(userlist_count(ul), 0);
        userlist_free(ul);
    }
}

static void test_nul_byte(void **state)
{
    static const char data[] = "\"a\" \"1\"\n\"b\0\" \"2\"\n\"c\" \"3\"\n";
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    write_file(f, data, sizeof(data) - 1);
    assert_int_equal(userlist_load(f->path, &ul, err, sizeof(err)), 1);
    assert_non_null(strstr(err, ":2: NUL byte"));
    assert_int_equal(userlist_count(ul), 2);
    assert_string_equal(userlist_secret(ul, "c"), "3");
    userlist_free(ul);
}

static void test_length_limits(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char user[128], pass[2048], *text, err[256] = "";
    size_t tlen = 8 * 2200;

    memset(user, 'u', 127);
    user[127] = '\0';
    memset(pass, 'p', 2047);
    pass[2047] = '\0';
    text = malloc(tlen);
    assert_non_null(text);
    /* 127 and 2047 bytes fit, one more does not; "" counts as one byte. */
    snprintf(text, tlen,
             "\"%s\" \"%s\"\n"
             "\"%sv\" \"x\"\n"
             "\"y\" \"%sq\"\n"
             "\"\"\"%.126s\" \"\"\"%.2046s\"\n",
             user, pass, user, pass, user, pass);
    assert_int_equal(load_text(f, text, &ul, err, sizeof(err)), 2);
    free(text);
    assert_non_null(strstr(err, ":2: user name longer than 127 bytes"));
    assert_int_equal(userlist_count(ul), 2);
    assert_string_equal(userlist_secret(ul, user), pass);
    assert_null(userlist_secret(ul, "y"));
    user[0] = '"';
    pass[0] = '"';
    assert_string_equal(userlist_secret(ul, user), pass);
    userlist_free(ul);

    text = malloc(tlen);
    assert_non_null(text);
    memset(pass, 'p', 2047);
    snprintf(text, tlen, "\"y\" \"%sq\"", pass);
    assert_int_equal(load_text(f, text, &ul, err, sizeof(err)), 1);
    assert_non_null(strstr(err, ":1: password longer than 2047 bytes"));
    userlist_free(ul);
    free(text);

    /* Eight escaped quotes. */
    assert_int_equal(load_text(f, "\"y\" \"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"", &ul, err, sizeof(err)),
                     0);
    assert_string_equal(userlist_secret(ul, "y"), "\"\"\"\"\"\"\"\"");
    userlist_free(ul);
}

static void test_duplicates_last_wins(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    assert_int_equal(load_text(f, "\"a\" \"1\"\n\"b\" \"x\"\n\"a\" \"2\"\n\"a\" \"3\"\n\"b\" \"y\"\n",
                               &ul, err, sizeof(err)),
                     0);
    assert_int_equal(userlist_count(ul), 2);
    assert_string_equal(userlist_secret(ul, "a"), "3");
    assert_string_equal(userlist_secret(ul, "b"), "y");
    userlist_free(ul);
}

static void test_missing_and_unreadable(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul = (struct userlist *)1;
    char err[256] = "", missing[160];

    snprintf(missing, sizeof(missing), "%s/nope.txt", f->dir);
    assert_int_equal(userlist_load(missing, &ul, err, sizeof(err)), AUTH_EFILE);
    assert_null(ul);
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "No such file"));

    /* A directory opens but cannot be read. */
    ul = (struct userlist *)1;
    assert_int_equal(userlist_load(f->dir, &ul, err, sizeof(err)), AUTH_EFILE);
    assert_null(ul);
    assert_non_null(strstr(err, f->dir));

    /* err may be omitted. */
    assert_int_equal(userlist_load(missing, &ul, NULL, 0), AUTH_EFILE);
    userlist_free(NULL);
    assert_int_equal(userlist_count(NULL), 0);
}

static void test_empty_file(void **state)
{
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "";

    assert_int_equal(load_text(f, "", &ul, err, sizeof(err)), 0);
    assert_non_null(ul);
    assert_int_equal(userlist_count(ul), 0);
    assert_null(userlist_secret(ul, "a"));
    userlist_free(ul);
}

static void test_thousands_of_users(void **state)
{
    enum { N = 20000 };
    struct fixture *f = *state;
    struct userlist *ul;
    char err[256] = "", user[32], pass[32];
    FILE *fp = fopen(f->path, "w");
    int i;

    assert_non_null(fp);
    /* Not in sorted order, with comments in between. */
    for (i = 0; i < N; i++) {
        int j = (int)(((unsigned)i * 7919u) % N);
        fprintf(fp, "\"user%d\" \"pw%d\"\n", j, j * 3);
        if (i % 1000 == 0)
            fprintf(fp, "; block %d\n", i / 1000);
    }
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(userlist_load(f->path, &ul, err, sizeof(err)), 0);
    assert_int_equal(userlist_count(ul), N);
    for (i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "user%d", i);
        snprintf(pass, sizeof(pass), "pw%d", i * 3);
        assert_string_equal(userlist_secret(ul, user), pass);
    }
    assert_null(userlist_secret(ul, "user20000"));
    assert_null(userlist_secret(ul, "user"));
    assert_null(userlist_secret(ul, "a"));
    assert_null(userlist_secret(ul, "zzz"));
    userlist_free(ul);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quotes_and_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_comments_blank_lines_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_kept_verbatim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_last_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_unreadable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thousands_of_users, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
