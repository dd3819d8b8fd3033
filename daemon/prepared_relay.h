/*
 * The protocol side of prepared statements in transaction/statement mode
 * (see prepared_relay.c): hooks the server link calls for client messages
 * it must rewrite and for server responses it must match up.
 */
#ifndef WEIR_DAEMON_PREPARED_RELAY_H
#define WEIR_DAEMON_PREPARED_RELAY_H

#include <stddef.h>

struct server;
struct client;

/* Parse, Bind, Describe, Close or Query at the head of the client's input:
 * 1 consumed (rewritten, answered or forwarded), 0 more bytes needed,
 * -1 malformed or out of memory (the caller disconnects). */
int prep_client_message(struct server *s, struct client *c, char type, size_t total);
/* Must weir rewrite or answer this message (named statements, DEALLOCATE),
 * or may it go straight to the server? msg: the message; seen: its bytes at hand. */
int prep_needs_weir(struct server *s, struct client *c, char type, const unsigned char *msg, size_t total, size_t seen);
/* Does this Query need weir (a DEALLOCATE)? Others go straight through. */
int prep_query_is_ours(const unsigned char *body, size_t len);
/* Query, Execute, Sync, FunctionCall forwarded unchanged: note their answer is due. -1 on ENOMEM. */
int prep_expect_forwarded(struct server *s, char type);
/* Must this server message be looked at (whole) before it is forwarded? */
int prep_is_special(struct server *s, char type);
/* Match a server message with what was expected. Returns 1 when it must be
 * dropped (weir's own), 0 to forward it. */
int prep_server_message(struct server *s, char type, const unsigned char *body, size_t blen);
/* After a server message went to the client: write answers weir owes now. */
void prep_after_message(struct server *s);
/* An answer that needs nothing but forwarding (BindComplete, a client's
 * ParseComplete, CommandComplete...): pop what it answered. 1 if done so. */
int prep_inline_answer(struct server *s, char type, const unsigned char *body, size_t blen);
/* Is one plain simple Query all that is owed? Its answers up to the
 * ReadyForQuery then need no matching: only E, S and Z are looked at. */
int prep_plain_query(const struct server *s);
/* Is a ReadyForQuery now simply the end of the one query or Sync owed?
 * If so, it is taken as the answer (1); otherwise nothing changes (0). */
int prep_take_plain_ready(struct server *s);
/* A client message held back (it counted on answers not yet in) may go
 * now: 1 once, then the caller forwards from the client again. */
int prep_take_resume(struct server *s);
/* Nothing outstanding? */
int prep_idle(const struct server *s);
/* Forget what was expected (server going back to the pool or closing). */
void prep_server_reset(struct server *s);
void prep_server_free(struct server *s);

#endif
