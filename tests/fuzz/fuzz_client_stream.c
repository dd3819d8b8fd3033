/*
 * libFuzzer target for the client -> server half of the relay: arbitrary
 * client bytes, interleaved with arbitrary server answers, go through the
 * daemon's own framing, statement-mode and transaction checks and the
 * prepared-statement rewriting (server.c, prepared_relay.c) as they would on
 * a live connection (see relay_harness.h). The input is one flags byte (pool
 * mode and settings, see harness_setup) and then chunks: a header byte whose
 * top bit says who sends (0 client, 1 server) and whose low 7 bits give the
 * chunk's length, then that many bytes. Messages may span chunks, so
 * streaming a message in pieces is covered too.
 */
#include "relay_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 1;

    if (size == 0)
        return 0;
    harness_setup(data[0]);
    while (off < size) {
        uint8_t hdr = data[off++];
        size_t n = hdr & 127;

        if (n > size - off)
            n = size - off;
        if (hdr & 128)
            feed_server(data + off, n);
        else
            feed_client(data + off, n);
        off += n;
    }
    harness_teardown();
    return 0;
}
