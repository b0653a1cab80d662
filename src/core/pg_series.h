/*
 * The series index: each series' identity as Prometheus computes it, a set
 * of the identities seen recently (TTL, least recently seen evicted first,
 * new series pending until Kafka confirms them) living in one region the
 * caller provides (shared memory in nginx), and the Kafka message that
 * announces a new series.
 *
 * The set uses offsets, never pointers: every process maps the region at
 * its own address.  The caller serializes every call on one region (nginx:
 * the zone's mutex); nothing here locks, allocates or logs.
 */

#ifndef PG_SERIES_H
#define PG_SERIES_H

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_json.h"


/* ------------------------------------------------------------ identity */

typedef struct {
    uint64_t            hash;       /* Prometheus' labels.Hash */
    uint32_t            check;      /* an independent fingerprint of the */
                                    /*   same bytes: detects collisions */
} pg_series_id_t;


/*
 * Prometheus 2.42's Labels.Hash (non-stringlabels build): xxhash64, seed
 * 0, over name 0xff value 0xff for every label in order (__name__ is one
 * of them).  The labels must be sorted by name, as remote write requires.
 */
void pg_series_hash(const pg_label_t *labels, size_t n, pg_series_id_t *id);

/* the same over a TimeSeries' labels, straight from the decoded body */
void pg_series_hash_iter(pg_pb_iter_t labels, pg_series_id_t *id);

/* what the set keys tenants by */
uint64_t pg_series_tenant_hash(pg_str_t tenant);


/* ----------------------------------------------------------------- set */

typedef struct pg_series_set_s  pg_series_set_t;


/* bytes per tracked series, buckets included (on average) */
#define PG_SERIES_ENTRY_SIZE  40

/* the smallest region worth having */
#define PG_SERIES_MIN_ENTRIES  16


/* how many series a region of size bytes tracks (0: too small) */
uint32_t pg_series_capacity(size_t size);

/*
 * Lays a new, empty set out in region (8-byte aligned).  now is the unix
 * time in seconds; seed, random, keys the bucket index (senders choose
 * labels, and so hashes: they must not be able to aim at one chain); ttl
 * (seconds): a series not seen for this long is new again; pending
 * (seconds): how long an offered series not yet confirmed keeps others
 * from offering it (at least the producer's message.timeout.ms).
 */
pg_series_set_t *pg_series_init(void *region, size_t size, uint64_t now,
    uint64_t seed, uint32_t ttl, uint32_t pending);

/* a set laid out earlier (a reload); NULL if region holds none of this size */
pg_series_set_t *pg_series_attach(void *region, size_t size);

/* ttl and pending may change across reloads */
void pg_series_configure(pg_series_set_t *set, uint32_t ttl,
    uint32_t pending);


typedef enum {
    PG_SERIES_SEEN = 0,             /* known: refreshed, nothing to do */
    PG_SERIES_PENDING,              /* offered, not confirmed yet: skip */
    PG_SERIES_NEW                   /* never seen, or not within ttl */
} pg_series_state_e;


/*
 * While a write is validated: is this series new?  A known series is
 * refreshed (its ttl starts again, it becomes the most recently seen);
 * nothing is inserted.
 */
pg_series_state_e pg_series_check(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now);

/*
 * The same for n series of one tenant, faster: the memory of the lookups
 * is fetched for up to PG_SERIES_BATCH of them at a time.  states[i] is a
 * pg_series_state_e.
 */
#define PG_SERIES_BATCH  64

void pg_series_check_batch(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *ids, size_t n, uint64_t now, uint8_t *states);

/* the same, each series of its own tenant (tenants[i], as ids[i]) */
void pg_series_check_batch_tenants(pg_series_set_t *set,
    const uint64_t *tenants, const pg_series_id_t *ids, size_t n,
    uint64_t now, uint8_t *states);

/*
 * The write carrying a new series was acknowledged: the series becomes
 * pending.  Returns the token of this offer (never 0), to hand back with
 * the delivery report, or 0 if the series is no longer new (another worker
 * offered it meanwhile, or it came twice in one write).  When the set is
 * full the least recently seen series makes room; an insert never fails.
 */
uint32_t pg_series_offer(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now);

/*
 * Kafka has the message: the offer becomes seen.  Returns 1, or 0 if that
 * offer no longer stands (it was taken over after its pending time).
 */
int pg_series_confirm(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, uint64_t now);


typedef enum {
    PG_SERIES_FAILED = 0,           /* delivery failed or produce refused */
    PG_SERIES_OVERFLOW              /* the producer's queue was full */
} pg_series_drop_e;

/*
 * The message will never be delivered: the offer is forgotten so that the
 * next write carrying the series offers it again.  Returns 1, or 0 if that
 * offer no longer stands.
 */
int pg_series_drop(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, pg_series_drop_e why);


typedef struct {
    uint64_t            entries;    /* series tracked, pending included */
    uint64_t            capacity;
    uint64_t            pending;    /* offered, not confirmed nor dropped */
    uint64_t            offered;    /* new series offered (counter) */
    uint64_t            published;  /* confirmed by Kafka */
    uint64_t            failed;     /* delivery failed, produce refused */
    uint64_t            overflow;   /* producer queue full */
    uint64_t            evictions;  /* made room while within ttl */
    uint64_t            expired;    /* reclaimed after ttl */
    uint64_t            collisions; /* same tenant and hash, other labels */
    uint64_t            repairs;    /* emptied after a caller died inside */
    uint64_t            ttl;        /* seconds */
    uint64_t            pending_time;
} pg_series_stats_t;

void pg_series_stats(const pg_series_set_t *set, pg_series_stats_t *st);

/*
 * 0 if the set is whole: every chain and the LRU list end, hold the same
 * entries, within the array, and agree with the counts; -1 otherwise.
 * For tests (it walks everything).
 */
int pg_series_verify(const pg_series_set_t *set);


/* ------------------------------------------------------------- message */

/* the Kafka key: 16 lowercase hex digits of the hash (no NUL) */
#define PG_SERIES_KEY_LEN  16
void pg_series_key(uint64_t hash, uint8_t *out);

/*
 * The Kafka value:
 *   {"metric":"name{a=\"b\",c=\"d\"}","name":"name",
 *    "labels":{"a":"b","c":"d"},"tenant":"t","first_seen":1700000000000}
 * metric is the series as Prometheus prints it (no spaces; \\, \" and \n
 * escaped in label values; the bare name when there are no other labels).
 * labels are sorted by name and hold __name__.
 */
void pg_series_json(pg_json_buf_t *b, const pg_label_t *labels, size_t n,
    pg_str_t tenant, int64_t first_seen_ms);

#endif /* PG_SERIES_H */
