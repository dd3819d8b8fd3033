/*
 * libFuzzer target for the auth_hba_file parser (daemon/hba.c): any bytes as
 * the file's text (includes disabled, so nothing is opened), then the rules
 * that survive are matched against Unix, IPv4, IPv6 and TLS peers with names
 * taken from the input. Checks that the count of rules plus skipped lines
 * never exceeds the lines given, that every skipped line was reported, and
 * that matching returns a known method.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hba.h"

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count_report(void *arg, const char *file, int line, const char *message)
{
    int *n = arg;
    CHECK(file != NULL && message != NULL && line >= 0);
    if (strstr(message, "line skipped") != NULL)
        (*n)++;
}

static void check_match(const struct hba *h, int is_unix, const char *addr, int tls, const char *db,
                        const char *user)
{
    struct hba_peer p;
    int line = -1;

    if (hba_peer_from_text(&p, is_unix, addr, tls) != 0)
        return;
    enum hba_method m = hba_match(h, &p, db, user, &line);
    CHECK(m >= HBA_REJECT && m <= HBA_PEER);
    CHECK(line >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct hba *h = NULL;
    int reported = 0, skipped, lines = 1;
    const char *word;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    for (size_t i = 0; i < strlen(text); i++)
        lines += text[i] == '\n';
    skipped = hba_parse(text, "fuzz.conf", HBA_NO_INCLUDES, &h, count_report, &reported);
    if (skipped < 0) { /* out of memory only */
        free(text);
        return 0;
    }
    CHECK(h != NULL);
    CHECK(skipped == reported);
    CHECK(skipped + hba_rule_count(h) <= lines);
    /* A name from the input, so list matches get exercised. */
    word = strtok(text, " \t\r\n,\"");
    if (word == NULL)
        word = "all";
    check_match(h, 1, "unix", 0, word, word);
    check_match(h, 0, "127.0.0.1", 0, word, "u");
    check_match(h, 0, "10.1.2.3", 1, "db", word);
    check_match(h, 0, "::1", 0, word, word);
    check_match(h, 0, "::ffff:192.168.0.9", 1, word, "all");
    check_match(h, 0, "2001:db8::1", 0, "sameuser", word);
    hba_free(h);
    free(text);
    return 0;
}
