/*
 * Placeholder for the weir daemon's entry point: answers -V/--version and
 * -h/--help, and otherwise says plainly that the daemon is not built yet.
 * The real main.c (arguments, signals, sd_notify, the event loop) replaces it.
 */
#include <stdio.h>
#include <string.h>

#include <weir/weir.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: weir [-d] [-c] CONFIG_FILE\n"
            "       weir --check-config CONFIG_FILE\n"
            "       weir -V | --version\n"
            "       weir -h | --help\n"
            "\n"
            "PostgreSQL connection pooler; reads a PgBouncer-style ini file.\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("weir %s\n", weir_version());
            return 0;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    }
    fprintf(stderr, "weir: the daemon is not built yet in this version\n");
    return 1;
}
