/*
 * libFuzzer target for the server -> client half of the relay: a client
 * sends one of a few fixed, valid requests (simple queries, a transaction,
 * named and unnamed extended-protocol statements, DEALLOCATE and DISCARD,
 * a pipeline with Close), and the fuzzer plays the backend: its arbitrary
 * bytes are read by the daemon's ReadyForQuery, ParameterStatus,
 * ErrorResponse and CommandComplete handling and the prepared-statement
 * answer matching (server.c, prepared_relay.c; see relay_harness.h). Input:
 * a flags byte (pool mode and settings, see harness_setup), a byte choosing
 * the client's request, then the server's bytes, delivered in pieces whose
 * sizes follow from the input so that split messages are covered too.
 */
#include "relay_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The client's requests, as wire bytes (type, length, body). */
struct msg {
    char type;
    const char *body;
    size_t len;
};

#define M(t, b) {t, b, sizeof(b) - 1}
static const struct msg script_simple[] = {M('Q', "SELECT 1\0")};
static const struct msg script_txn[] = {M('Q', "BEGIN\0"), M('Q', "SELECT 1\0"), M('Q', "COMMIT\0")};
static const struct msg script_named[] = {
    M('P', "s1\0SELECT $1\0\0\0"), M('B', "\0s1\0\0\0\0\0\0\0"), M('D', "P\0"), M('E', "\0\0\0\0\0"),
    M('S', ""),
};
static const struct msg script_unnamed[] = {
    M('P', "\0SELECT 1\0\0\0"), M('B', "\0\0\0\0\0\0\0\0"), M('D', "P\0"), M('E', "\0\0\0\0\0"), M('S', ""),
};
static const struct msg script_pipeline[] = {
    M('P', "a\0SELECT 1\0\0\0"), M('P', "b\0SELECT 2\0\0\0"), M('B', "\0b\0\0\0\0\0\0\0"),
    M('E', "\0\0\0\0\0"), M('C', "Sa\0"), M('D', "Sb\0"), M('S', ""), M('P', "a\0SELECT 3\0\0\0"), M('S', ""),
};
static const struct msg script_dealloc[] = {
    M('P', "d\0SELECT 1\0\0\0"), M('S', ""), M('Q', "DEALLOCATE d\0"), M('Q', "DISCARD ALL; SELECT 1\0"),
    M('P', "\0DEALLOCATE ALL\0\0\0"), M('B', "\0\0\0\0\0\0\0\0"), M('E', "\0\0\0\0\0"), M('S', ""),
};
static const struct msg script_copy[] = {M('Q', "COPY t FROM STDIN\0"), M('d', "1\n"), M('c', "")};

struct script {
    const struct msg *msgs;
    size_t n;
};
#define S(a) {a, sizeof(a) / sizeof(a[0])}
static const struct script scripts[] = {
    S(script_simple), S(script_txn), S(script_named), S(script_unnamed),
    S(script_pipeline), S(script_dealloc), S(script_copy),
};
#define NSCRIPTS (sizeof(scripts) / sizeof(scripts[0]))

static void send_script(const struct script *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        const struct msg *m = &sc->msgs[i];
        uint32_t len = (uint32_t)m->len + 4;
        uint8_t buf[256];

        CHECK(m->len + 5 <= sizeof(buf));
        buf[0] = (uint8_t)m->type;
        buf[1] = (uint8_t)(len >> 24);
        buf[2] = (uint8_t)(len >> 16);
        buf[3] = (uint8_t)(len >> 8);
        buf[4] = (uint8_t)len;
        memcpy(buf + 5, m->body, m->len);
        feed_client(buf, m->len + 5);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 2;
    unsigned seed;

    if (size < 2)
        return 0;
    harness_setup(data[0]);
    send_script(&scripts[data[1] % NSCRIPTS]);
    seed = (unsigned)size * 2654435761u;
    while (off < size) {
        size_t n = 1 + (seed = seed * 1103515245u + 12345u) % 61;

        if (n > size - off)
            n = size - off;
        feed_server(data + off, n);
        off += n;
    }
    harness_teardown();
    return 0;
}
