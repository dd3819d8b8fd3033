/*
 * libFuzzer target for the config loader (daemon/config.c): the input is
 * the content of an ini file, written to a private temporary file and
 * loaded with config_load(), with every report collected. Lines such as
 * "%include /nonexistent" or an include of the file itself are in the seed
 * corpus. Checks: a load either fails with WEIR_EINVAL/WEIR_ENOMEM and no
 * config, or succeeds with one whose strings are never NULL and whose
 * database entries can be found by name; and every error was reported.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct reports {
    int errors, warnings;
};

static void report(void *arg, weir_log_level sev, const char *file, int line, const char *message)
{
    struct reports *r = arg;

    CHECK(message != NULL && message[0] != '\0');
    CHECK(line >= 0);
    (void)file;
    if (sev == WEIR_LOG_ERROR)
        r->errors++;
    else
        r->warnings++;
}

/* One file per process, rewritten for every input. The process moves into
 * its directory so that relative %include names stay inside it: give the
 * fuzzer absolute corpus and artifact paths (run.sh does). */
static const char *path(void)
{
    static char p[64];

    if (p[0] == '\0') {
        char dir[] = "/tmp/weir-fuzz-config.XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        CHECK(chdir(dir) == 0);
        snprintf(p, sizeof(p), "%s/weir.ini", dir);
    }
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct weir_config *cfg = NULL;
    struct reports r = {0, 0};
    FILE *f;
    int rc;

    if (size > 65536)
        return 0;
    f = fopen(path(), "w");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
    rc = config_load(path(), &cfg, report, &r);
    if (rc != 0) {
        CHECK(rc == WEIR_EINVAL || rc == WEIR_ENOMEM);
        CHECK(cfg == NULL);
        CHECK(r.errors > 0 || rc == WEIR_ENOMEM);
        return 0;
    }
    CHECK(cfg != NULL);
    CHECK(cfg->listen_addr != NULL && cfg->server_reset_query != NULL && cfg->auth_file != NULL);
    CHECK(cfg->logfile != NULL && cfg->admin_users != NULL && cfg->ignore_startup_parameters != NULL);
    for (size_t i = 0; i < cfg->n_dbs; i++)
        CHECK(config_find_db(cfg, cfg->dbs[i].name) == &cfg->dbs[i]);
    for (size_t i = 0; i < cfg->n_users; i++)
        CHECK(config_find_user(cfg, cfg->users[i].name) == &cfg->users[i]);
    for (int i = 0; i < config_setting_count(); i++) {
        char buf[512];
        CHECK(config_format_value(cfg, config_setting_at(i), buf, sizeof(buf)) >= 0);
    }
    config_free(cfg);
    return 0;
}
