/*
 * Per-database statistics as PgBouncer keeps them (SHOW STATS, SHOW TOTALS,
 * the periodic "stats:" log line) and the pool snapshots the admin console
 * and the metrics endpoint both read. Counters live in each struct dpool
 * while it exists; when a pool is freed its counters and histograms move to
 * its database's record here, so totals never go backwards. Every
 * stats_period the current totals are compared with the previous ones to
 * give the averages, and with log_stats on, one line goes to the log.
 */
#ifndef WEIR_DAEMON_STATS_H
#define WEIR_DAEMON_STATS_H

#include <stdint.h>

#include "daemon.h"

struct dpool;

/* The counters of one database (or of all of them). Times in microseconds. */
struct db_totals {
    uint64_t xact_count, query_count, bytes_in, bytes_out, xact_us, query_us, wait_us;
};

/* Averages over the last stats_period: counts and bytes per second, times
 * per transaction / per query, wait per second (PgBouncer's definitions). */
struct db_averages {
    uint64_t xact_count, query_count, bytes_in, bytes_out, xact_us, query_us, wait_us;
};

/* Histograms of one database, summed over its pools (libweir's buckets). */
struct db_histograms {
    uint64_t wait[WEIR_HIST_BUCKETS], hold[WEIR_HIST_BUCKETS];
    uint64_t wait_us_total, hold_us_total;
};

/* Start the stats_period timer. 0 or -1 (out of memory, logged). */
int stats_start(struct daemon *d);
void stats_stop(struct daemon *d);

/* A pool is about to be freed: keep what it counted. Safe before stats_start. */
void stats_pool_gone(struct daemon *d, struct dpool *dp);
/* An automatic ("*") database is dropped: its numbers go with it (SHOW
 * DATABASES and STATS no longer list it, as in PgBouncer). */
void stats_db_forget(struct daemon *d, const char *name);

/* The admin console answered a command (its "pgbouncer" row in SHOW STATS). */
void stats_count_admin(struct daemon *d);
uint64_t stats_admin_count(const struct daemon *d);

/*
 * Every database name weir knows about: configured entries (but "*"),
 * databases served through "*" that have pools, and those whose pools are
 * gone but were counted. Sorted, without duplicates. *names is one malloc'd
 * array of pointers into the config, pools and stats (valid until the loop
 * runs again); free() it. Returns the count, or -1 on out of memory.
 */
int stats_db_names(struct daemon *d, const char ***names);

/* Totals of one database so far; of every database when name is NULL. */
void stats_db_totals(struct daemon *d, const char *name, struct db_totals *out);
/* Averages of one database from the last period (zeros before the first). */
void stats_db_averages(struct daemon *d, const char *name, struct db_averages *out);
void stats_all_averages(struct daemon *d, struct db_averages *out);
void stats_db_histograms(struct daemon *d, const char *name, struct db_histograms *out);

/* Per-pool counts the console and the metrics show (PgBouncer's SHOW POOLS). */
struct pool_view {
    int cl_active, cl_waiting, cl_login;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login;
    int64_t maxwait_us; /* of the oldest client waiting now */
};
void stats_pool_view(struct daemon *d, struct dpool *dp, struct pool_view *out);

#endif
