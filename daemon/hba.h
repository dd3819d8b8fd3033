/*
 * auth_hba_file: PgBouncer's subset of PostgreSQL's pg_hba.conf, parsed into
 * an immutable list of rules that hangs off the config (so a reload swaps
 * rules with the rest of the settings, and a reload that fails keeps the old
 * ones), and the first-match lookup done once per login when
 * auth_type = hba. What is understood, as PgBouncer 1.18 does:
 *   - line types local, host, hostssl, hostnossl;
 *   - database and user fields: comma lists of names (quoted or not), `all`,
 *     `sameuser`, `@file` (names read from a file relative to the including
 *     one, separated by commas or whitespace as PostgreSQL reads them);
 *     `samerole`, `samegroup`, `replication` and `+group` are refused;
 *   - addresses: IPv4 or IPv6, as CIDR or address plus mask (host names,
 *     `all`, `samehost`, `samenet` are refused as PgBouncer 1.18 refuses them);
 *   - methods trust, reject, md5, password, scram-sha-256, cert, peer, with
 *     no options after them (`map=` is refused).
 * A line that cannot be parsed is reported (file:line and why) and skipped;
 * the others still count. No I/O beyond reading the files; nothing printed.
 */
#ifndef WEIR_DAEMON_HBA_H
#define WEIR_DAEMON_HBA_H

#include <stdbool.h>
#include <stdint.h>

enum hba_method {
    HBA_REJECT,
    HBA_TRUST,
    HBA_PASSWORD,
    HBA_MD5,
    HBA_SCRAM,
    HBA_CERT,
    HBA_PEER,
};

struct hba;

/* Called once per skipped line (line > 0) or for the whole file (line 0). */
typedef void (*hba_report_fn)(void *arg, const char *file, int line, const char *message);

/* Flags for hba_parse. */
#define HBA_NO_INCLUDES 1 /* refuse @file (the fuzzer must not open files) */

/*
 * Parses text (the content of the file called path; path names it in
 * reports and anchors relative @file includes) into *out. Returns the number
 * of lines skipped (0 for a clean file) with *out set, or -1 when out of
 * memory with *out NULL.
 */
int hba_parse(const char *text, const char *path, int flags, struct hba **out, hba_report_fn report,
              void *arg) __attribute__((warn_unused_result));

/* Reads and parses path. -1 when the file cannot be read (reported, line 0)
 * or memory runs out; otherwise as hba_parse. */
int hba_load(const char *path, struct hba **out, hba_report_fn report, void *arg)
    __attribute__((warn_unused_result));

/* Frees. NULL is fine. */
void hba_free(struct hba *hba);

/* Number of rules kept. */
int hba_rule_count(const struct hba *hba);

/* Where a connection comes from, as the rules see it. */
struct hba_peer {
    int family;       /* AF_UNIX, AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; 4 bytes used for AF_INET */
    bool tls;
};

/*
 * Fills peer from the text form of the client's address ("unix" for a Unix
 * socket). An IPv4-mapped IPv6 address counts as the IPv4 address, so a
 * dual-stack listener matches IPv4 rules. -1 if text is not an address.
 */
int hba_peer_from_text(struct hba_peer *peer, bool is_unix, const char *text, bool tls);

/*
 * The method of the first rule matching peer, database and user; HBA_REJECT
 * when none does (or hba is NULL). *line (may be NULL) gets the matching
 * rule's line number, 0 when none matched.
 */
enum hba_method hba_match(const struct hba *hba, const struct hba_peer *peer, const char *dbname,
                          const char *user, int *line);

/* "trust", "md5"..., as written in the file. */
const char *hba_method_name(enum hba_method m);

#endif
