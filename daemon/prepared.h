/*
 * Prepared statements across pooled servers (transaction and statement
 * mode): the daemon-wide registry of distinct statements (query text and
 * parameter types, each with a server-side name "weir_N"), each client's
 * names for them, and each server's set of statements prepared on it with
 * least-recently-used eviction past max_prepared_statements.
 */
#ifndef WEIR_DAEMON_PREPARED_H
#define WEIR_DAEMON_PREPARED_H

#include <stddef.h>
#include <stdint.h>

struct pstmt {
    uint64_t id;
    char server_name[32];      /* "weir_<id>": what servers know it as */
    char *query;
    uint8_t *types;            /* big-endian OIDs, as in the Parse message */
    uint16_t ntypes;
    uint32_t hash;
    int refs;                  /* client names and server sets holding it */
    struct pstmt *hnext;
};

struct pstmt_registry;
struct pstmt_registry *pstmt_registry_new(void);
void pstmt_registry_free(struct pstmt_registry *r);
/* The shared statement for this text and types, with a new reference; NULL on ENOMEM. */
/* One more holder of p, who already holds one (the count is shared by
 * workers: atomic; only the registry's lock lets it reach 0). */
static inline void pstmt_ref(struct pstmt *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}
struct pstmt *pstmt_intern(struct pstmt_registry *r, const char *query, const uint8_t *types, uint16_t ntypes);
void pstmt_unref(struct pstmt_registry *r, struct pstmt *p);
size_t pstmt_registry_count(struct pstmt_registry *r);

/* A client's statement names. */
struct client_stmts;
struct client_stmts *client_stmts_new(void);
/* Drops every name (and its reference). NULL ok. */
void client_stmts_free(struct client_stmts *cs, struct pstmt_registry *r);
struct pstmt *client_stmts_get(const struct client_stmts *cs, const char *name);
/* Bind name to p (taking over one reference of p); -1 on ENOMEM. */
int client_stmts_put(struct client_stmts *cs, struct pstmt_registry *r, const char *name, struct pstmt *p);
/* Forget name; 1 if it existed. cs may be NULL (no names yet), as in clear. */
int client_stmts_del(struct client_stmts *cs, struct pstmt_registry *r, const char *name);
void client_stmts_clear(struct client_stmts *cs, struct pstmt_registry *r);
size_t client_stmts_count(const struct client_stmts *cs);

/* A server's prepared statements, most recently used first. */
struct server_stmts;
struct server_stmts *server_stmts_new(int capacity);
void server_stmts_free(struct server_stmts *ss, struct pstmt_registry *r);
/* Is p prepared on this server? Marks it used. */
int server_stmts_has(struct server_stmts *ss, const struct pstmt *p);
/* Record p as prepared (takes a reference). If that goes over capacity the
 * least recently used one is returned in *evicted (its reference now the
 * caller's: close it on the server, then unref). With evicted NULL the set
 * may go over capacity (restoring what the server still holds). -1 on ENOMEM. */
int server_stmts_add(struct server_stmts *ss, struct pstmt *p, struct pstmt **evicted);
/* Forget p (after a failed Parse); drops the reference. */
void server_stmts_del(struct server_stmts *ss, struct pstmt_registry *r, const struct pstmt *p);
/* DISCARD ALL / DEALLOCATE ALL ran on the server. */
void server_stmts_clear(struct server_stmts *ss, struct pstmt_registry *r);
size_t server_stmts_count(const struct server_stmts *ss);

#endif
