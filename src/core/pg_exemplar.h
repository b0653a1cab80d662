/*
 * The exemplar store: a ring of the last "max" exemplars with a per-series
 * index, in one caller-provided memory region (an nginx shared zone).
 * Semantics are those of Prometheus 3.5's CircularExemplarStorage.
 *
 * The region holds offsets and indexes only, never pointers.  The caller
 * serializes every call (the glue holds the zone mutex around each); a
 * process that dies inside a call leaves a "busy" mark that makes the next
 * call (any of them, queries and stats included) repair the index from the
 * published exemplars: the store then holds every exemplar added before,
 * the dying one if it was published, and lacks at most the oldest ones it
 * was evicting (see pg_exemplar.c).
 */

#ifndef PG_EXEMPLAR_H
#define PG_EXEMPLAR_H

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_json.h"
#include "pg_matcher.h"


/* OpenMetrics/Prometheus: names + values of an exemplar's label set */
#define PG_EXEMPLAR_MAX_RUNES  128


typedef struct pg_exring_s  pg_exring_t;


typedef enum {
    PG_EXRING_ADDED = 0,
    PG_EXRING_DUPLICATE,      /* equal to the series' newest: ignored */
    PG_EXRING_OUT_OF_ORDER,   /* before the series' newest exemplar, or */
                              /*   at its time with a lower value, or */
                              /*   that value and a lower label hash */
    PG_EXRING_TOO_LONG,       /* labels above PG_EXEMPLAR_MAX_RUNES */
    PG_EXRING_NO_SPACE,       /* the series' label set cannot be stored */
    PG_EXRING_NRESULTS
} pg_exring_rc_e;


typedef struct {
    uint64_t        exemplars;      /* stored now */
    uint64_t        max;            /* slots */
    uint64_t        series;         /* series with stored exemplars */
    uint64_t        label_bytes;    /* bytes holding exemplar label sets */
    uint64_t        series_bytes;   /* bytes holding series label sets */
    uint64_t        log_used;       /* the above + garbage not reused yet */
    uint64_t        log_size;       /* variable-length storage in total */
    uint64_t        seq;            /* of the newest insert, 0 if none */
    uint64_t        repairs;        /* half-finished calls repaired */
} pg_exring_stats_t;


/* one stored exemplar, as pg_exring_iterate() shows it */
typedef struct {
    uint64_t            seq;
    pg_str_t            tenant;
    const pg_label_t   *series;         /* sorted by name */
    size_t              nseries;
    const pg_label_t   *labels;         /* sorted by name, stably */
    size_t              nlabels;
    double              value;
    int64_t             ts;             /* ms */
} pg_exring_item_t;


/* returns non-zero when the series' labels match the query */
typedef int (*pg_series_match_pt)(void *ctx, const pg_label_t *labels,
    size_t n);

/* returns non-zero to stop the iteration */
typedef int (*pg_exring_visit_pt)(void *ctx, const pg_exring_item_t *item);


/*
 * The region size below which pg_exring_init() would not hold "max"
 * exemplars of a typical workload: trace_id (32 hex) and span_id (16 hex)
 * exemplar labels, 12-label series with 8 exemplars each.  Above it the
 * extra room goes to the variable-length storage (label sets).
 */
size_t pg_exring_min_size(uint32_t max);

/*
 * Builds an empty store in base[0 .. size), which must be 8-byte aligned.
 * Returns NULL when max is 0 or above 2^31 - 2, or size is too small for
 * the slots, the index and a minimal label storage.
 */
pg_exring_t *pg_exring_init(void *base, size_t size, uint32_t max);

/*
 * The same with the seed of the series hash: random in production (a
 * sender must not be able to put every series in one bucket chain), kept
 * in the region and by pg_exring_attach().  pg_exring_init() uses 0.
 */
pg_exring_t *pg_exring_init_seed(void *base, size_t size, uint32_t max,
    uint64_t seed);

/*
 * Reuses a store an earlier pg_exring_init() built at base with the same
 * size and max (an nginx reload); NULL when the magic, layout version, max
 * or size differ, so the caller rebuilds instead of misreading.
 */
pg_exring_t *pg_exring_attach(void *base, size_t size, uint32_t max);

/*
 * Stores an exemplar of a series.  series: the series' labels sorted by
 * name (checked upstream); ex: the exemplar's labels in sender order (empty
 * values are dropped, the rest sorted by name).  On PG_EXRING_ADDED *seq
 * (if not NULL) gets the insert's sequence number, growing by one per
 * insert from 1; otherwise 0.  Overwrites the oldest exemplar when full.
 */
pg_exring_rc_e pg_exring_insert(pg_exring_t *ring, pg_str_t tenant,
    const pg_label_t *series, size_t n, const pg_label_t *ex, size_t m,
    double value, int64_t ts_ms, uint64_t *seq);

/*
 * Writes Prometheus' query_exemplars answer for a tenant into out: every
 * series for which match() (NULL: all) returns true and which has
 * exemplars with start <= ts <= end, sorted by labels.Compare, exemplars in
 * time order.  The label views given to match() live only for that call.
 * Returns the number of series, or -1 when out could not grow.
 */
int pg_exring_query(pg_exring_t *ring, pg_str_t tenant,
    pg_series_match_pt match, void *ctx, int64_t start_ms, int64_t end_ms,
    pg_json_buf_t *out);

/*
 * The same answer in pieces, so that the caller holds the lock only to
 * find the series and copy them out, in slices no longer than it allows,
 * and writes the answer without the lock.
 *
 * pg_exring_query_collect() examines at most n series from *pos on (a
 * series id; start at 0) and, for each of the tenant's that match()
 * (NULL: all) accepts and that has an exemplar with start <= ts <= end,
 * copies its labels and those exemplars into one piece of alloc's memory,
 * a pg_exring_hit_t, and gives it to hit(), which returns 0 to fail the
 * scan (a limit) and keeps the hit otherwise.  The label views given to
 * match() live only for that call; scratch gives memory needed only
 * during the call (the same block each time will do).  *pos moves past
 * the series examined.  Returns 1 when every series was examined, 0 when
 * some remain, -1 when hit() failed or alloc is out of memory.  Between
 * the calls writers go on: each series is the store as its call saw it;
 * one that was evicted and came back in between may be found twice (the
 * second time at a higher id, with the newer exemplars).
 *
 * The answer is then, in the caller's envelope {"status":"success",
 * "data":[ and ]}, each hit in pg_exring_hit_compare() order (one hit of
 * a run of equal labels: the last), written by pg_exring_hit_json(): it
 * writes the hit's object, preceded by a comma unless first, from where
 * *pos left off (zeroed to start) one piece at a time (the series' labels,
 * an exemplar, the end) while out holds less than "until" bytes, so that
 * the caller can send the answer in buffers of about that size; returns 1
 * when the hit is written, 0 when more remains, -1 when out failed.
 */
typedef struct {
    pg_label_t         *labels;         /* sorted by name */
    size_t              nlabels;
    uint32_t            id;             /* the series id it was found at */
    uint32_t            nexemplars;     /* in the range, at least 1 */
    const uint8_t      *exemplars;      /* their copy, for */
                                        /*   pg_exring_hit_json() */
    size_t              size;           /* the copy's bytes */
} pg_exring_hit_t;


typedef struct {
    uint32_t            piece;
    size_t              off;
} pg_exring_hit_pos_t;


typedef int (*pg_exring_hit_pt)(void *ctx, pg_exring_hit_t *hit);


int pg_exring_query_collect(pg_exring_t *ring, pg_str_t tenant,
    pg_series_match_pt match, void *mctx, int64_t start_ms, int64_t end_ms,
    uint32_t *pos, uint32_t n, pg_exring_hit_pt hit, void *hctx,
    const pg_allocator_t *alloc, const pg_allocator_t *scratch);

/*
 * The same, examining only the series whose signature has every bit of
 * need (0: all): pg_exring_selectors_sig() of the selectors match() is
 * given, so that most series that would not match are skipped without
 * reading them.  The answer is the same as without it.
 */
int pg_exring_query_collect_sig(pg_exring_t *ring, pg_str_t tenant,
    uint64_t need, pg_series_match_pt match, void *mctx, int64_t start_ms,
    int64_t end_ms, uint32_t *pos, uint32_t n, pg_exring_hit_pt hit,
    void *hctx, const pg_allocator_t *alloc, const pg_allocator_t *scratch);

/*
 * The signature bits every series a selector set can match has: those of
 * each label an equality matcher with a non-empty value requires, common
 * to all the selectors.  0 (no filter) for NULL or an empty set.
 */
uint64_t pg_exring_selectors_sig(pg_exring_t *ring,
    const pg_selector_set_t *set);

/* labels.Compare() of the hits' series, then the id they were found at */
int pg_exring_hit_compare(const pg_exring_hit_t *a,
    const pg_exring_hit_t *b);

int pg_exring_hit_json(const pg_exring_hit_t *hit, int first,
    pg_exring_hit_pos_t *pos, size_t until, pg_json_buf_t *out);

/* Prometheus' labels.Compare() of two label sets sorted by name */
int pg_exring_labels_compare(const pg_label_t *a, size_t na,
    const pg_label_t *b, size_t nb);

/*
 * Peers: one gateway's hits sent to another, which merges them with its
 * own and writes the one answer (promgate_exemplar_peer).  The format,
 * an internal one between promgate nodes of one build:
 *
 *   "PGXPEER1", u32 0x01020304 (the byte order: peers share it)
 *   per series: u32 label count, per label u32 length + name bytes,
 *     u32 length + value bytes; u32 exemplar count (>= 1); u32 size;
 *     size bytes: the exemplars as a hit holds them (per exemplar f64
 *     value, i64 ms, u16 encoded label bytes, u16 label count, the
 *     labels as the ring encodes them, zeros to a multiple of 8)
 *
 * pg_exring_peer_head() starts an answer, pg_exring_peer_write() adds a
 * hit.  pg_exring_peer_read() checks an answer as hostile input (every
 * length within the input, every exemplar's labels exactly as the writer
 * and the JSON writer need them) and gives each series to hit() as a hit
 * whose labels and exemplars point into data (id PG_EXRING_PEER_ID); on
 * PG_EXRING_PEER_INVALID *err says what was wrong.
 */
#define PG_EXRING_PEER_ID  0xffffffffu

typedef enum {
    PG_EXRING_PEER_OK = 0,
    PG_EXRING_PEER_INVALID,
    PG_EXRING_PEER_REFUSED,         /* hit() returned 0 */
    PG_EXRING_PEER_NOMEM
} pg_exring_peer_rc_e;

void pg_exring_peer_head(pg_json_buf_t *out);
void pg_exring_peer_write(const pg_exring_hit_t *hit, pg_json_buf_t *out);
pg_exring_peer_rc_e pg_exring_peer_read(const uint8_t *data, size_t len,
    const pg_allocator_t *alloc, pg_exring_hit_pt hit, void *ctx,
    const char **err);

/*
 * One hit of n hits of the same series (from several nodes): their
 * exemplars in the order Prometheus' ring holds them (time, value, label
 * hash), each exemplar once.  The labels are hits[0]'s.  NULL: no memory.
 */
pg_exring_hit_t *pg_exring_hit_merge(pg_exring_hit_t *const *hits, size_t n,
    const pg_allocator_t *alloc);

/*
 * The hits of a zone's scan and of its peers' answers (id
 * PG_EXRING_PEER_ID), in any order, made the hits of one answer, in
 * place: sorted by pg_exring_hit_compare(), one per series (of the zone's
 * hits of a series found twice, the last, as a zone's answer alone takes
 * it), those of a series held by several nodes merged.  *n becomes their
 * count, *exemplars their exemplars'.  Returns 0, or -1 out of memory.
 */
int pg_exring_hits_join(pg_exring_hit_t **hits, size_t *n,
    const pg_allocator_t *alloc, size_t *exemplars);

/*
 * Visits every stored exemplar, oldest first.  Label views live only for
 * the call; scratch memory (for label arrays) comes from alloc.  Returns 0,
 * 1 when visit() stopped it, -1 when out of memory.
 */
int pg_exring_iterate(pg_exring_t *ring, const pg_allocator_t *alloc,
    pg_exring_visit_pt visit, void *ctx);

void pg_exring_stats(pg_exring_t *ring, pg_exring_stats_t *st);

/* the seed the ring was built with, and its bucket hash of a series key */
uint64_t pg_exring_seed(pg_exring_t *ring);
uint32_t pg_exring_key_hash(pg_exring_t *ring, pg_str_t tenant,
    const pg_label_t *series, size_t n);

const char *pg_exring_rc_name(pg_exring_rc_e rc);

/*
 * Checks every invariant of the structure (for tests and fuzzers; linear
 * in the region size).  Returns 0, or -1 with a description in err.
 */
int pg_exring_check(pg_exring_t *ring, char *err, size_t err_len);

#endif /* PG_EXEMPLAR_H */
