/*
 * The exemplar store, in one caller-provided region:
 *
 *   header | slots[max] | table[max] | buckets[nbuckets] | log
 *
 * slots    a ring of fixed 32-byte exemplars (value, ts, series id, next
 *          slot of the series, where its labels are); the exemplar with
 *          sequence number seq lives in slot seq % max, and the stored ones
 *          are exactly those with first_seq <= seq < next_seq.
 * table    series id -> log offset of the series' record (or a free-list
 *          link); ids keep slots valid while records move.
 * buckets  hash(tenant, series labels) -> first series id of a chain.
 * log      a circular log of variable-length entries, appended at vhead
 *          and reclaimed at vtail: exemplar label sets (in the order of
 *          their exemplars), series records (labels, oldest/newest slot,
 *          count, hash chain link) and padding.  Reclaiming the tail
 *          evicts the oldest exemplar when its labels are there, skips
 *          dead entries, and copies a live series record to the head.
 *          Space for exemplar labels and for series thus adapts to the
 *          workload, and fragmentation cannot build up.
 *
 * Crash safety.  The caller serializes calls with a lock that is released
 * if a process dies holding it; a process can only die inside a call.
 * Every insert and eviction publishes with single aligned stores done in
 * an order that keeps published data intact: label bytes and records are
 * written into free log space before vhead moves over them; a slot is
 * written before next_seq publishes it; first_seq moves before the evicted
 * exemplar's series is updated or freed; a record is copied before the
 * table points to it and vtail moves past the old copy.  So whatever a
 * dead process left, the published exemplars [first_seq, next_seq), their
 * labels, and the records the table points to are complete; what may be
 * stale is derived: series counts, oldest/newest and next links, the hash
 * chains, the free list and the counters, and a series record created for
 * an exemplar never published.  Mutating calls set "busy" first and clear
 * it last; a call that finds it set rebuilds all derived state from the
 * slots (pg_exring_repair(), linear in max).  Anything that fails a sanity
 * check there (memory scribbled on, not a crash) empties the store.
 *
 * So after a death the store holds the exemplars published up to it: the
 * dying insert's exemplar if next_seq had moved (its sequence number is
 * then used), else not (and the number is reused); in the latter case the
 * oldest exemplars it evicted to make room stay evicted.  Nothing else is
 * lost.  The unit tests kill inserts at each publishing step.
 */

#include <stdio.h>
#include <stdlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pg_exemplar.h"
#include "pg_matcher.h"
#include "pg_rw_wire.h"
#include "pg_utf8.h"


#define PG_EXRING_MAGIC     0x31525850   /* "PXR1" */
#define PG_EXRING_VERSION   3          /* 2: the hash seed, 3: sigs */

#define PG_NONE             0xffffffffu
#define PG_FREE             0x80000000u  /* table entry: free, next free */
#define PG_FREE_END         0x7fffffffu

#define PG_LOG_SKIP         1
#define PG_LOG_LABELS       2
#define PG_LOG_SERIES       3
#define pg_log_type(h)      ((h) & 7)
#define pg_log_size(h)      ((h) & ~(uint32_t) 7)

/* the most log bytes one entry may take, and the least log there is */
#define PG_LOG_ENTRY_MAX    0xfffffff8u
#define PG_LOG_MIN          4096

/* encoded exemplar labels: 128 runes of <= 4 bytes, <= 4 length bytes each */
#define PG_EX_LABELS_MAX    1024

/* the typical workload pg_exring_min_size() plans for, bytes per exemplar */
#define PG_TYPICAL_LOG      104

#define pg_align8(n)        (((n) + 7) & ~(uint64_t) 7)

/*
 * Stores must not move across a publishing store.  A unit test redefines
 * this to make a copy of this file "die" at each publishing step.
 */
#ifndef pg_exring_barrier
#if defined(__GNUC__)
#define pg_exring_barrier()  __asm__ __volatile__ ("" ::: "memory")
#else
#define pg_exring_barrier()
#endif
#endif

/* a point between derived updates where a test may make a call "die" */
#ifndef pg_exring_step
#define pg_exring_step()
#endif

#if defined(__GNUC__)
#define pg_exring_prefetch(p)  __builtin_prefetch(p)
#else
#define pg_exring_prefetch(p)
#endif

/* how many series ahead a query prefetches records */
#define PG_PREFETCH_AHEAD   8


typedef struct {
    double          value;
    int64_t         ts;
    uint32_t        series;         /* series id */
    uint32_t        next;           /* next slot of the series or PG_NONE */
    uint32_t        off;            /* log offset / 8 of the labels entry */
    uint16_t        len;            /* encoded label bytes */
    uint16_t        nlabels;
} pg_exslot_t;


/* a series record in the log; lens[2n], tenant, names and values follow */
typedef struct {
    uint32_t        hdr;            /* entry size | PG_LOG_SERIES */
    uint32_t        id;
    uint32_t        hash;
    uint32_t        hnext;          /* next series id in the bucket */
    uint32_t        oldest;         /* slot */
    uint32_t        newest;         /* slot */
    uint32_t        count;          /* stored exemplars */
    uint16_t        tenant_len;
    uint16_t        nlabels;
    int64_t         oldest_ts;
    int64_t         newest_ts;
} pg_exseries_t;


struct pg_exring_s {
    uint32_t        magic;
    uint32_t        version;
    uint32_t        layout;         /* sizes of the structures above */
    uint32_t        max;
    uint64_t        size;
    uint64_t        slots_off;
    uint64_t        table_off;
    uint64_t        sigs_off;
    uint64_t        buckets_off;
    uint64_t        log_off;
    uint64_t        log_size;
    uint32_t        nbuckets;       /* a power of two */

    /* state */
    uint32_t        busy;           /* a mutating call is in progress */
    uint32_t        free_id;        /* first free series id, PG_FREE_END */
    uint32_t        id_hwm;         /* ids at and above were never used */
    uint32_t        entry_hwm;      /* largest log entry size seen */
    uint32_t        max_labels;     /* >= labels of any stored series */
    uint64_t        first_seq;
    uint64_t        next_seq;
    uint64_t        vhead;          /* log positions: offset = v % size */
    uint64_t        vtail;
    uint64_t        nseries;
    uint64_t        label_bytes;
    uint64_t        series_bytes;
    uint64_t        repairs;

    /*
     * Keys the series hash: random, chosen once when the region is built
     * and kept by attach, so label sets that share a bucket cannot be
     * made offline.  After the state: the header comparison skips it.
     */
    uint64_t        seed;
};


typedef struct {
    uint64_t        slots_off;
    uint64_t        table_off;
    uint64_t        sigs_off;
    uint64_t        buckets_off;
    uint64_t        log_off;
    uint64_t        log_size;
    uint32_t        nbuckets;
} pg_exring_layout_t;


static int pg_exring_layout(pg_exring_layout_t *l, uint64_t size,
    uint32_t max);
static void pg_exring_reset(pg_exring_t *r);
static void pg_exring_repair(pg_exring_t *r);
static int pg_exring_record_ok(pg_exring_t *r, uint32_t id, uint32_t v);
static int pg_exring_labels_ok(pg_exring_t *r, const pg_exslot_t *slot);
static uint64_t pg_exring_in_log(pg_exring_t *r, uint64_t off, uint64_t len);
static void pg_exring_evict_oldest(pg_exring_t *r);
static void pg_exring_series_free(pg_exring_t *r, uint32_t id,
    pg_exseries_t *rec);
static void pg_exring_make_room(pg_exring_t *r, uint64_t need);
static void pg_exring_skip_to_start(pg_exring_t *r, uint64_t wrap);
static uint64_t pg_exring_wrap(pg_exring_t *r, uint64_t need);
static void pg_exring_clean_one(pg_exring_t *r);
static uint32_t pg_exring_series_hash(pg_exring_t *r, pg_str_t tenant,
    const pg_label_t *l,
    size_t n);
static uint32_t pg_exring_record_hash(pg_exring_t *r,
    const pg_exseries_t *rec);
static uint64_t pg_exring_hash(uint64_t h, const uint8_t *p, size_t len);
static uint64_t pg_exring_label_sig(pg_exring_t *r, pg_str_t name,
    pg_str_t value);
static uint64_t pg_exring_record_sig(pg_exring_t *r,
    const pg_exseries_t *rec);
static uint32_t pg_exring_lookup(pg_exring_t *r, uint32_t hash,
    pg_str_t tenant, const pg_label_t *l, size_t n);
static int pg_exring_series_eq(const pg_exseries_t *rec, pg_str_t tenant,
    const pg_label_t *l, size_t n);
static void pg_exring_series_labels(const pg_exseries_t *rec,
    pg_label_t *out, pg_str_t *tenant);
static uint64_t pg_exring_record_size(const pg_exseries_t *rec);
static size_t pg_exring_runes(const uint8_t *p, size_t len);
static size_t pg_exring_encode(const pg_label_t *l, size_t k, uint8_t *buf);
static size_t pg_exring_decode(const uint8_t *p, size_t len, pg_label_t *out,
    uint8_t *text);
static uint8_t *pg_exring_hex(uint8_t *out, const uint8_t *p, size_t n);
static int pg_exring_fail(char *err, size_t err_len, const char *what,
    uint64_t a, uint64_t b);


#define pg_exring_slots(r)                                                   \
    ((pg_exslot_t *) ((uint8_t *) (r) + (r)->slots_off))
#define pg_exring_table(r)                                                   \
    ((uint32_t *) ((uint8_t *) (r) + (r)->table_off))
#define pg_exring_sigs(r)                                                    \
    ((uint64_t *) ((uint8_t *) (r) + (r)->sigs_off))
#define pg_exring_buckets(r)                                                 \
    ((uint32_t *) ((uint8_t *) (r) + (r)->buckets_off))
#define pg_exring_log(r)                                                     \
    ((uint8_t *) (r) + (r)->log_off)
#define pg_exring_record(r, id)                                              \
    ((pg_exseries_t *) (pg_exring_log(r)                                     \
                        + (uint64_t) pg_exring_table(r)[id] * 8))
#define pg_exring_labels(r, slot)                                            \
    (pg_exring_log(r) + (uint64_t) (slot)->off * 8 + 4)

#define PG_EXRING_LAYOUT                                                     \
    ((uint32_t) (sizeof(pg_exslot_t) << 16 | sizeof(pg_exseries_t) << 8     \
                 | sizeof(struct pg_exring_s) / 8))


static int
pg_exring_layout(pg_exring_layout_t *l, uint64_t size, uint32_t max)
{
    uint64_t  off, nb;

    if (max == 0 || max > 0x7ffffffe) {
        return -1;
    }

    /* about one bucket per 4 exemplars: chains stay short for 4+/series */
    for (nb = 16; nb < max / 4; nb *= 2) { /* void */ }

    off = pg_align8(sizeof(struct pg_exring_s));
    off = (off + 63) & ~(uint64_t) 63;

    l->slots_off = off;
    off += (uint64_t) max * sizeof(pg_exslot_t);

    l->table_off = off;
    off += pg_align8((uint64_t) max * sizeof(uint32_t));

    l->sigs_off = off;
    off += (uint64_t) max * sizeof(uint64_t);

    l->buckets_off = off;
    off += pg_align8(nb * sizeof(uint32_t));

    l->log_off = off;
    l->nbuckets = (uint32_t) nb;

    if (size < off + PG_LOG_MIN) {
        return -1;
    }

    /* offsets / 8 are kept in 31 bits */
    l->log_size = (size - off) & ~(uint64_t) 7;

    if (l->log_size > (uint64_t) PG_FREE * 8) {
        l->log_size = (uint64_t) PG_FREE * 8;
    }

    return 0;
}


size_t
pg_exring_min_size(uint32_t max)
{
    pg_exring_layout_t  l;
    uint64_t            log;

    if (pg_exring_layout(&l, UINT64_MAX / 2, max) != 0) {
        return 0;
    }

    log = (uint64_t) max * PG_TYPICAL_LOG + 16 * 1024;

    if (l.log_off + log > SIZE_MAX) {
        return 0;
    }

    return (size_t) (l.log_off + log);
}


/*
 * The header up to the state: what pg_exring_init() writes and
 * pg_exring_attach() must find.  Its fields leave no padding, so it
 * compares as bytes (with padding a reload would rebuild, not misread).
 */
#define PG_EXRING_HEADER  offsetof(struct pg_exring_s, busy)


/* the fields of the header after the magic (written last) */
static void
pg_exring_header(pg_exring_t *r, size_t size, uint32_t max,
    const pg_exring_layout_t *l)
{
    r->version = PG_EXRING_VERSION;
    r->layout = PG_EXRING_LAYOUT;
    r->max = max;
    r->size = size;
    r->slots_off = l->slots_off;
    r->table_off = l->table_off;
    r->sigs_off = l->sigs_off;
    r->buckets_off = l->buckets_off;
    r->log_off = l->log_off;
    r->log_size = l->log_size;
    r->nbuckets = l->nbuckets;
}


pg_exring_t *
pg_exring_init_seed(void *base, size_t size, uint32_t max, uint64_t seed)
{
    pg_exring_t         *r;
    pg_exring_layout_t   l;

    if (((uintptr_t) base & 7) != 0 || pg_exring_layout(&l, size, max) != 0)
    {
        return NULL;
    }

    r = base;

    /* an attach racing with a half-built header must not match */
    r->magic = 0;
    pg_exring_barrier();

    pg_exring_header(r, size, max, &l);

    r->busy = 0;
    r->entry_hwm = 0;
    r->next_seq = 1;
    r->repairs = 0;
    r->seed = seed;

    pg_exring_reset(r);

    pg_exring_barrier();
    r->magic = PG_EXRING_MAGIC;

    return r;
}


pg_exring_t *
pg_exring_init(void *base, size_t size, uint32_t max)
{
    return pg_exring_init_seed(base, size, max, 0);
}


pg_exring_t *
pg_exring_attach(void *base, size_t size, uint32_t max)
{
    pg_exring_t          want;
    pg_exring_layout_t   l;

    if (((uintptr_t) base & 7) != 0 || pg_exring_layout(&l, size, max) != 0)
    {
        return NULL;
    }

    memset(&want, 0, PG_EXRING_HEADER);
    want.magic = PG_EXRING_MAGIC;
    pg_exring_header(&want, size, max, &l);

    if (memcmp(base, &want, PG_EXRING_HEADER) != 0) {
        return NULL;
    }

    return base;
}


/* empties the store; sequence numbers go on */
static void
pg_exring_reset(pg_exring_t *r)
{
    r->busy = 1;
    pg_exring_barrier();

    r->first_seq = r->next_seq;
    r->vhead = 0;
    r->vtail = 0;
    r->free_id = PG_FREE_END;
    r->id_hwm = 0;
    r->max_labels = 0;
    r->nseries = 0;
    r->label_bytes = 0;
    r->series_bytes = 0;

    memset(pg_exring_buckets(r), 0xff, r->nbuckets * sizeof(uint32_t));

    pg_exring_barrier();
    r->busy = 0;
}


/* distance of a log offset into the stored window, or UINT64_MAX */
static uint64_t
pg_exring_in_log(pg_exring_t *r, uint64_t off, uint64_t len)
{
    uint64_t  used, dist;

    used = r->vhead - r->vtail;
    dist = (off + r->log_size - r->vtail % r->log_size) % r->log_size;

    if (off >= r->log_size || off + len > r->log_size || dist + len > used) {
        return UINT64_MAX;
    }

    return dist;
}


static uint64_t
pg_exring_record_size(const pg_exseries_t *rec)
{
    const uint16_t  *lens;
    uint64_t         n;
    size_t           i;

    lens = (const uint16_t *) (rec + 1);
    n = sizeof(pg_exseries_t) + 4 * (uint64_t) rec->nlabels
        + rec->tenant_len;

    for (i = 0; i < 2 * (size_t) rec->nlabels; i++) {
        n += lens[i];
    }

    return pg_align8(n);
}


static int
pg_exring_record_ok(pg_exring_t *r, uint32_t id, uint32_t v)
{
    uint64_t        off, size;
    pg_exseries_t  *rec;

    off = (uint64_t) v * 8;

    if (pg_exring_in_log(r, off, sizeof(pg_exseries_t)) == UINT64_MAX) {
        return 0;
    }

    rec = (pg_exseries_t *) (pg_exring_log(r) + off);
    size = pg_log_size(rec->hdr);

    if (pg_log_type(rec->hdr) != PG_LOG_SERIES || rec->id != id
        || size < sizeof(pg_exseries_t) + 4 * (uint64_t) rec->nlabels
        || pg_exring_in_log(r, off, size) == UINT64_MAX
        || pg_exring_record_size(rec) != size)
    {
        return 0;
    }

    /* the hash covers every byte of the key: a torn record fails it */
    return pg_exring_record_hash(r, rec) == rec->hash;
}


static int
pg_exring_labels_ok(pg_exring_t *r, const pg_exslot_t *slot)
{
    uint64_t  off;
    uint32_t  hdr;

    off = (uint64_t) slot->off * 8;

    if (pg_exring_in_log(r, off, pg_align8(4 + (uint64_t) slot->len))
        == UINT64_MAX)
    {
        return 0;
    }

    memcpy(&hdr, pg_exring_log(r) + off, 4);

    return pg_log_type(hdr) == PG_LOG_LABELS
           && pg_log_size(hdr) == pg_align8(4 + (uint64_t) slot->len);
}


/*
 * Rebuilds everything derived from the published exemplars after a
 * process died inside a call (see the top of this file).
 */
static void
pg_exring_repair(pg_exring_t *r)
{
    pg_exslot_t    *slots, *slot;
    uint32_t       *table, *buckets, id, v, b, s;
    pg_exseries_t  *rec;
    uint64_t        seq;

    slots = pg_exring_slots(r);
    table = pg_exring_table(r);
    buckets = pg_exring_buckets(r);

    r->repairs++;

    if (r->first_seq > r->next_seq || r->next_seq - r->first_seq > r->max
        || r->vtail > r->vhead || r->vhead - r->vtail > r->log_size
        || r->id_hwm > r->max)
    {
        goto reset;
    }

    /* forget what records say; keep those the table validly points to */
    for (id = 0; id < r->id_hwm; id++) {
        v = table[id];

        if (v & PG_FREE) {
            continue;
        }

        if (!pg_exring_record_ok(r, id, v)) {
            table[id] = PG_FREE | PG_FREE_END;
            continue;
        }

        rec = pg_exring_record(r, id);
        rec->count = 0;
        rec->oldest = PG_NONE;
        rec->newest = PG_NONE;
        rec->hnext = PG_NONE;
    }

    /* link the published exemplars to their series, oldest first */
    r->label_bytes = 0;

    for (seq = r->first_seq; seq < r->next_seq; seq++) {
        s = (uint32_t) (seq % r->max);
        slot = &slots[s];
        id = slot->series;

        if (id >= r->id_hwm || (table[id] & PG_FREE)
            || !pg_exring_labels_ok(r, slot))
        {
            goto reset;
        }

        rec = pg_exring_record(r, id);

        if (rec->count == 0) {
            rec->oldest = s;
            rec->oldest_ts = slot->ts;

        } else {
            if (slot->ts < rec->newest_ts) {
                goto reset;
            }

            slots[rec->newest].next = s;
        }

        slot->next = PG_NONE;
        rec->newest = s;
        rec->newest_ts = slot->ts;
        rec->count++;

        r->label_bytes += pg_align8(4 + (uint64_t) slot->len);
    }

    pg_exring_step();

    /* series without exemplars are freed; the rest are hashed again */
    memset(buckets, 0xff, r->nbuckets * sizeof(uint32_t));
    r->free_id = PG_FREE_END;
    r->nseries = 0;
    r->series_bytes = 0;
    r->max_labels = 0;

    for (id = r->id_hwm; id-- > 0; /* void */) {
        v = table[id];

        if (!(v & PG_FREE)) {
            rec = pg_exring_record(r, id);

            if (rec->count > 0) {
                b = rec->hash & (r->nbuckets - 1);
                rec->hnext = buckets[b];
                buckets[b] = id;
                pg_exring_sigs(r)[id] = pg_exring_record_sig(r, rec);

                r->nseries++;
                r->series_bytes += pg_log_size(rec->hdr);

                if (rec->nlabels > r->max_labels) {
                    r->max_labels = rec->nlabels;
                }

                continue;
            }
        }

        table[id] = PG_FREE | r->free_id;
        r->free_id = id;
    }

    pg_exring_barrier();
    r->busy = 0;

    return;

reset:

    pg_exring_reset(r);
}


/*
 * Drops the oldest exemplar.  first_seq moves first: should the process
 * die after it, the exemplar is gone and its series is repaired.
 */
static void
pg_exring_evict_oldest(pg_exring_t *r)
{
    pg_exslot_t    *slots, *slot;
    pg_exseries_t  *rec;
    uint32_t        id;

    slots = pg_exring_slots(r);
    slot = &slots[r->first_seq % r->max];

    pg_exring_barrier();
    r->first_seq++;
    pg_exring_barrier();

    r->label_bytes -= pg_align8(4 + (uint64_t) slot->len);

    id = slot->series;
    rec = pg_exring_record(r, id);

    rec->count--;
    pg_exring_step();

    if (rec->count == 0) {
        pg_exring_series_free(r, id, rec);
        return;
    }

    rec->oldest = slot->next;
    rec->oldest_ts = slots[slot->next].ts;
}


static void
pg_exring_series_free(pg_exring_t *r, uint32_t id, pg_exseries_t *rec)
{
    uint32_t  *link, *table;

    table = pg_exring_table(r);
    link = &pg_exring_buckets(r)[rec->hash & (r->nbuckets - 1)];

    while (*link != id) {
        if (*link == PG_NONE) {
            /* not in its chain: cannot happen unless memory was hit */
            break;
        }

        link = &pg_exring_record(r, *link)->hnext;
    }

    if (*link == id) {
        *link = rec->hnext;
    }

    pg_exring_step();
    r->nseries--;
    r->series_bytes -= pg_log_size(rec->hdr);

    /* the record becomes garbage the tail will skip */
    table[id] = PG_FREE | r->free_id;
    r->free_id = id;
}


static uint64_t
pg_exring_wrap(pg_exring_t *r, uint64_t need)
{
    uint64_t  pos;

    pos = r->vhead % r->log_size;

    return pos + need > r->log_size ? r->log_size - pos : 0;
}


/* pads the rest of the log so that the next entry starts at offset 0 */
static void
pg_exring_skip_to_start(pg_exring_t *r, uint64_t wrap)
{
    uint32_t  hdr;

    hdr = (uint32_t) wrap | PG_LOG_SKIP;
    memcpy(pg_exring_log(r) + r->vhead % r->log_size, &hdr, 4);

    pg_exring_barrier();
    r->vhead += wrap;
    pg_exring_barrier();
}


/*
 * Makes need contiguous bytes free at the head, plus a reserve of twice
 * the largest entry so that live series met at the tail can always be
 * copied to the head.
 */
static void
pg_exring_make_room(pg_exring_t *r, uint64_t need)
{
    uint64_t  reserve, wrap;

    reserve = 2 * (uint64_t) r->entry_hwm;

    for ( ;; ) {
        wrap = pg_exring_wrap(r, need);

        if (r->vhead - r->vtail + wrap + need + reserve <= r->log_size
            || r->vhead == r->vtail)
        {
            break;
        }

        pg_exring_clean_one(r);
    }

    if (wrap) {
        pg_exring_skip_to_start(r, wrap);
    }
}


static void
pg_exring_clean_one(pg_exring_t *r)
{
    uint8_t        *log;
    uint64_t        pos, size, wrap, dst;
    uint32_t        hdr, id, *table;
    pg_exslot_t    *oldest;
    pg_exseries_t  *rec;

    log = pg_exring_log(r);
    table = pg_exring_table(r);
    pos = r->vtail % r->log_size;

    memcpy(&hdr, log + pos, 4);
    size = pg_log_size(hdr);

    if (size < 8 || size > r->vhead - r->vtail || pos + size > r->log_size)
    {
        /* not an entry: memory was scribbled on; start over */
        pg_exring_reset(r);
        return;
    }

    switch (pg_log_type(hdr)) {

    case PG_LOG_LABELS:
        /* labels are in exemplar order: live ones are the oldest's */
        oldest = &pg_exring_slots(r)[r->first_seq % r->max];

        if (r->first_seq != r->next_seq && oldest->off == pos / 8) {
            pg_exring_evict_oldest(r);
        }

        break;

    case PG_LOG_SERIES:
        rec = (pg_exseries_t *) (log + pos);
        id = rec->id;

        if (id >= r->max || table[id] != pos / 8) {
            break;
        }

        wrap = pg_exring_wrap(r, size);

        if (r->vhead - r->vtail + wrap + size > r->log_size) {
            /* no room to copy it (the reserve prevents this): drop it */
            while (table[id] == pos / 8 && r->first_seq != r->next_seq) {
                pg_exring_evict_oldest(r);
            }

            break;
        }

        if (wrap) {
            pg_exring_skip_to_start(r, wrap);
        }

        dst = r->vhead % r->log_size;
        memcpy(log + dst, log + pos, size);

        pg_exring_barrier();
        r->vhead += size;
        pg_exring_barrier();
        table[id] = (uint32_t) (dst / 8);
        pg_exring_barrier();

        break;

    case PG_LOG_SKIP:
        break;

    default:
        pg_exring_reset(r);
        return;
    }

    r->vtail += size;
}


static uint64_t
pg_exring_hash(uint64_t h, const uint8_t *p, size_t len)
{
    uint64_t  w;

    h = (h ^ (len + 0x9e3779b97f4a7c15ULL)) * 0xbf58476d1ce4e5b9ULL;

    while (len >= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x94d049bb133111ebULL;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }

    if (len) {
        w = 0;
        memcpy(&w, p, len);
        h = (h ^ w) * 0x94d049bb133111ebULL;
        h ^= h >> 31;
    }

    return h;
}


/*
 * The end of a keyed hash: the seed again and a full avalanche (murmur3's
 * finalizer), so that the bucket bits depend on every input bit and on
 * the seed.
 */
static uint32_t
pg_exring_hash_final(uint64_t h, uint64_t seed)
{
    h ^= seed >> 1 | seed << 63;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;

    return (uint32_t) (h ^ (h >> 32));
}


/* the hash of a series key: the seed, the tenant, each name and value */
static uint32_t
pg_exring_series_hash(pg_exring_t *r, pg_str_t tenant, const pg_label_t *l,
    size_t n)
{
    uint64_t  h;
    size_t    i;

    h = pg_exring_hash(r->seed ^ n, tenant.data, tenant.len);

    for (i = 0; i < n; i++) {
        h = pg_exring_hash(h, l[i].name.data, l[i].name.len);
        h = pg_exring_hash(h, l[i].value.data, l[i].value.len);
    }

    return pg_exring_hash_final(h, r->seed);
}


uint32_t
pg_exring_key_hash(pg_exring_t *r, pg_str_t tenant, const pg_label_t *l,
    size_t n)
{
    return pg_exring_series_hash(r, tenant, l, n);
}


uint64_t
pg_exring_seed(pg_exring_t *r)
{
    return r->seed;
}


/* the same from a record, to tell a torn one */
static uint32_t
pg_exring_record_hash(pg_exring_t *r, const pg_exseries_t *rec)
{
    const uint16_t  *lens;
    const uint8_t   *p;
    uint64_t         h;
    size_t           i;

    lens = (const uint16_t *) (rec + 1);
    p = (const uint8_t *) (lens + 2 * (size_t) rec->nlabels);

    h = pg_exring_hash(r->seed ^ rec->nlabels, p, rec->tenant_len);
    p += rec->tenant_len;

    for (i = 0; i < 2 * (size_t) rec->nlabels; i++) {
        h = pg_exring_hash(h, p, lens[i]);
        p += lens[i];
    }

    return pg_exring_hash_final(h, r->seed);
}


/*
 * A series' signature: per label, two bits of a keyed hash of its name and
 * value, ORed.  The query skips a series whose signature lacks the bits of
 * a label an equality matcher requires (a Bloom filter: a series that has
 * the label always has its bits), without reading its record.
 */
static uint64_t
pg_exring_label_sig(pg_exring_t *r, pg_str_t name, pg_str_t value)
{
    uint64_t  h;

    h = pg_exring_hash(r->seed ^ 0x5167, name.data, name.len);
    h = pg_exring_hash(h, value.data, value.len);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;

    return (uint64_t) 1 << (h & 63) | (uint64_t) 1 << ((h >> 6) & 63);
}


static uint64_t
pg_exring_record_sig(pg_exring_t *r, const pg_exseries_t *rec)
{
    const uint16_t  *lens;
    const uint8_t   *p;
    uint64_t         sig;
    pg_str_t         name, value;
    size_t           i;

    lens = (const uint16_t *) (rec + 1);
    p = (const uint8_t *) (lens + 2 * (size_t) rec->nlabels)
        + rec->tenant_len;
    sig = 0;

    for (i = 0; i < rec->nlabels; i++) {
        name.data = p;
        name.len = lens[2 * i];
        p += name.len;
        value.data = p;
        value.len = lens[2 * i + 1];
        p += value.len;

        sig |= pg_exring_label_sig(r, name, value);
    }

    return sig;
}


uint64_t
pg_exring_selectors_sig(pg_exring_t *r, const pg_selector_set_t *set)
{
    uint64_t             need, one;
    size_t               i, j;
    const pg_matcher_t  *m;

    if (set == NULL || set->nselectors == 0) {
        return 0;
    }

    need = ~(uint64_t) 0;

    for (i = 0; i < set->nselectors; i++) {
        one = 0;

        for (j = 0; j < set->selectors[i].nmatchers; j++) {
            m = &set->selectors[i].matchers[j];

            /* name="" also matches the series without the label */
            if (m->op == PG_MATCH_EQ && m->value.len) {
                one |= pg_exring_label_sig(r, m->name, m->value);
            }
        }

        /* a series may match any of the selectors */
        need &= one;
    }

    return need;
}


static void
pg_exring_series_labels(const pg_exseries_t *rec, pg_label_t *out,
    pg_str_t *tenant)
{
    const uint16_t  *lens;
    const uint8_t   *p;
    size_t           i;

    lens = (const uint16_t *) (rec + 1);
    p = (const uint8_t *) (lens + 2 * (size_t) rec->nlabels);

    tenant->data = p;
    tenant->len = rec->tenant_len;
    p += rec->tenant_len;

    for (i = 0; i < rec->nlabels; i++) {
        out[i].name.data = p;
        out[i].name.len = lens[2 * i];
        p += lens[2 * i];

        out[i].value.data = p;
        out[i].value.len = lens[2 * i + 1];
        p += lens[2 * i + 1];
    }
}


static int
pg_exring_series_eq(const pg_exseries_t *rec, pg_str_t tenant,
    const pg_label_t *l, size_t n)
{
    const uint16_t  *lens;
    const uint8_t   *p;
    size_t           i;

    if (rec->nlabels != n || rec->tenant_len != tenant.len) {
        return 0;
    }

    lens = (const uint16_t *) (rec + 1);

    for (i = 0; i < n; i++) {
        if (lens[2 * i] != l[i].name.len
            || lens[2 * i + 1] != l[i].value.len)
        {
            return 0;
        }
    }

    p = (const uint8_t *) (lens + 2 * n);

    if (tenant.len && memcmp(p, tenant.data, tenant.len) != 0) {
        return 0;
    }

    p += tenant.len;

    for (i = 0; i < n; i++) {
        if (l[i].name.len && memcmp(p, l[i].name.data, l[i].name.len) != 0)
        {
            return 0;
        }

        p += l[i].name.len;

        if (l[i].value.len
            && memcmp(p, l[i].value.data, l[i].value.len) != 0)
        {
            return 0;
        }

        p += l[i].value.len;
    }

    return 1;
}


static uint32_t
pg_exring_lookup(pg_exring_t *r, uint32_t hash, pg_str_t tenant,
    const pg_label_t *l, size_t n)
{
    uint32_t        id;
    pg_exseries_t  *rec;

    id = pg_exring_buckets(r)[hash & (r->nbuckets - 1)];

    while (id != PG_NONE) {
        rec = pg_exring_record(r, id);

        if (rec->hash == hash && pg_exring_series_eq(rec, tenant, l, n)) {
            return id;
        }

        id = rec->hnext;
    }

    return PG_NONE;
}


/* Go's utf8.RuneCountInString(): an invalid byte counts as one rune */
static size_t
pg_exring_runes(const uint8_t *p, size_t len)
{
    size_t    i, n, w;
    uint32_t  r;

    n = 0;

    for (i = 0; i < len; n++) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }

        w = pg_utf8_decode_rune(p + i, len - i, &r);
        i += w ? w : 1;
    }

    return n;
}


/*
 * A length of the label encoding, a varint (written with
 * pg_pb_put_varint()); the log holds what this file wrote: no bounds.
 */
static inline size_t
pg_exring_get_len(const uint8_t **pp)
{
    const uint8_t  *p;
    size_t          v, shift;

    p = *pp;
    v = 0;
    shift = 0;

    do {
        v |= (size_t) (*p & 0x7f) << shift;
        shift += 7;
    } while (*p++ & 0x80);

    *pp = p;

    return v;
}


/*
 * Exemplar labels, canonically encoded so that equal sets are equal bytes:
 * per label varint(name length), name, varint(value length << 1 | packed),
 * value; "packed" values are lowercase hex of even length (trace and span
 * ids) stored as binary, half the size.
 */
static size_t
pg_exring_encode(const pg_label_t *l, size_t k, uint8_t *buf)
{
    uint8_t   *p, c, hi, lo;
    size_t     i, j, hex;

    p = buf;

    for (i = 0; i < k; i++) {
        p = pg_pb_put_varint(p, l[i].name.len);

        if (l[i].name.len) {
            memcpy(p, l[i].name.data, l[i].name.len);
            p += l[i].name.len;
        }

        hex = l[i].value.len >= 2 && l[i].value.len % 2 == 0;

        for (j = 0; hex && j < l[i].value.len; j++) {
            c = l[i].value.data[j];
            hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        }

        p = pg_pb_put_varint(p, l[i].value.len << 1 | hex);

        if (!hex) {
            memcpy(p, l[i].value.data, l[i].value.len);
            p += l[i].value.len;
            continue;
        }

        for (j = 0; j < l[i].value.len; j += 2) {
            c = l[i].value.data[j];
            hi = (c <= '9') ? c - '0' : c - 'a' + 10;
            c = l[i].value.data[j + 1];
            lo = (c <= '9') ? c - '0' : c - 'a' + 10;
            *p++ = (uint8_t) (hi << 4 | lo);
        }
    }

    return p - buf;
}


/* text must hold PG_EX_LABELS_MAX bytes for unpacked hex values */
static size_t
pg_exring_decode(const uint8_t *p, size_t len, pg_label_t *out,
    uint8_t *text)
{
    const uint8_t  *end;
    size_t          n, v, j, vlen;

    static const char  hex[] = "0123456789abcdef";

    end = p + len;
    n = 0;

    while (p < end) {
        v = pg_exring_get_len(&p);

        out[n].name.data = p;
        out[n].name.len = v;
        p += v;

        v = pg_exring_get_len(&p);
        vlen = v >> 1;

        if (!(v & 1)) {
            out[n].value.data = p;
            out[n].value.len = vlen;
            p += vlen;
            n++;
            continue;
        }

        for (j = 0; j < vlen / 2; j++) {
            text[2 * j] = hex[p[j] >> 4];
            text[2 * j + 1] = hex[p[j] & 0xf];
        }

        out[n].value.data = text;
        out[n].value.len = vlen;
        text += vlen;
        p += vlen / 2;
        n++;
    }

    return n;
}


/*
 * labels.Labels.Hash() of Prometheus 3.5 (stringlabels): XXH64, seed 0,
 * of each name and value after its length (one byte below 255, else 255
 * and three bytes little-endian).
 */
static uint64_t
pg_exring_prom_hash(const pg_label_t *l, size_t k)
{
    size_t          i, j;
    uint8_t         size[4];
    pg_str_t        s;
    XXH64_state_t   st;

    (void) XXH64_reset(&st, 0);

    for (i = 0; i < k; i++) {
        for (j = 0; j < 2; j++) {
            s = j ? l[i].value : l[i].name;

            if (s.len < 255) {
                size[0] = (uint8_t) s.len;
                (void) XXH64_update(&st, size, 1);

            } else {
                size[0] = 255;
                size[1] = (uint8_t) s.len;
                size[2] = (uint8_t) (s.len >> 8);
                size[3] = (uint8_t) (s.len >> 16);
                (void) XXH64_update(&st, size, 4);
            }

            if (s.len) {
                (void) XXH64_update(&st, s.data, s.len);
            }
        }
    }

    return XXH64_digest(&st);
}


pg_exring_rc_e
pg_exring_insert(pg_exring_t *r, pg_str_t tenant, const pg_label_t *series,
    size_t n, const pg_label_t *ex, size_t m, double value, int64_t ts_ms,
    uint64_t *seq)
{
    pg_label_t      sorted[PG_EXEMPLAR_MAX_RUNES];
    pg_label_t      prev[PG_EXEMPLAR_MAX_RUNES];
    uint8_t         buf[PG_EX_LABELS_MAX], text[PG_EX_LABELS_MAX];
    uint8_t        *log, *p;
    uint16_t       *lens;
    size_t          i, j, k, runes, len;
    uint64_t        rec_size, lsize, need, pos;
    uint32_t        hash, id, s, hdr, *table;
    int             alive, was_alive;
    pg_exslot_t    *slots, *slot, *newest;
    pg_exseries_t  *rec;

    if (seq) {
        *seq = 0;
    }

    if (r->busy) {
        pg_exring_repair(r);
    }

    /* exemplar labels: empty values dropped, then the length limit */
    k = 0;
    runes = 0;

    for (i = 0; i < m; i++) {
        if (ex[i].value.len == 0) {
            continue;
        }

        runes += pg_exring_runes(ex[i].name.data, ex[i].name.len)
                 + pg_exring_runes(ex[i].value.data, ex[i].value.len);

        if (runes > PG_EXEMPLAR_MAX_RUNES) {
            return PG_EXRING_TOO_LONG;
        }

        /* a stable insertion sort by name, as Go sorts few labels */
        for (j = k; j > 0 && pg_str_cmp(sorted[j - 1].name, ex[i].name) > 0;
             j--)
        {
            sorted[j] = sorted[j - 1];
        }

        sorted[j] = ex[i];
        k++;
    }

    len = pg_exring_encode(sorted, k, buf);
    lsize = pg_align8(4 + len);

    /* the series' record; what does not fit 16-bit lengths is refused */
    rec_size = sizeof(pg_exseries_t) + 4 * (uint64_t) n + tenant.len;

    if (n > 0xffff || tenant.len > 0xffff) {
        return PG_EXRING_NO_SPACE;
    }

    for (i = 0; i < n; i++) {
        if (series[i].name.len > 0xffff || series[i].value.len > 0xffff) {
            return PG_EXRING_NO_SPACE;
        }

        rec_size += series[i].name.len + series[i].value.len;
    }

    rec_size = pg_align8(rec_size);

    if (rec_size + lsize > r->log_size / 8 || rec_size > PG_LOG_ENTRY_MAX) {
        return PG_EXRING_NO_SPACE;
    }

    slots = pg_exring_slots(r);
    table = pg_exring_table(r);
    log = pg_exring_log(r);

    hash = pg_exring_series_hash(r, tenant, series, n);
    id = pg_exring_lookup(r, hash, tenant, series, n);

    /*
     * As 3.5's CircularExemplarStorage.validateExemplar(): equal to the
     * newest is a duplicate; before it is out of order, and so is one at
     * the same time with a lower value, or the same value and a lower
     * label hash (a native histogram's exemplars share a timestamp).
     */
    if (id != PG_NONE) {
        rec = pg_exring_record(r, id);
        newest = &slots[rec->newest];

        if (newest->ts == ts_ms && newest->value == value
            && newest->len == len
            && memcmp(pg_exring_labels(r, newest), buf, len) == 0)
        {
            return PG_EXRING_DUPLICATE;
        }

        if (ts_ms < newest->ts
            || (ts_ms == newest->ts && value < newest->value))
        {
            return PG_EXRING_OUT_OF_ORDER;
        }

        if (ts_ms == newest->ts && value == newest->value) {
            j = pg_exring_decode(pg_exring_labels(r, newest), newest->len,
                                 prev, text);

            if (pg_exring_prom_hash(sorted, k) < pg_exring_prom_hash(prev, j)) {
                return PG_EXRING_OUT_OF_ORDER;
            }
        }
    }

    r->busy = 1;
    pg_exring_barrier();

    if (r->next_seq - r->first_seq == r->max) {
        pg_exring_evict_oldest(r);
    }

    if (lsize > r->entry_hwm) {
        r->entry_hwm = (uint32_t) lsize;
    }

    if (rec_size > r->entry_hwm) {
        r->entry_hwm = (uint32_t) rec_size;
    }

    /*
     * Room for the labels, and for the record if the series is new.  The
     * series may lose its last exemplar to the room made: then it needs
     * a new record too.
     */
    for ( ;; ) {
        was_alive = id != PG_NONE && !(table[id] & PG_FREE);
        need = lsize + (was_alive ? 0 : rec_size);

        pg_exring_make_room(r, need);

        alive = id != PG_NONE && !(table[id] & PG_FREE);

        if (alive || !was_alive) {
            break;
        }
    }

    if (!alive) {
        if (r->free_id != PG_FREE_END) {
            id = r->free_id;
            r->free_id = table[id] & ~PG_FREE;

        } else {
            id = r->id_hwm++;
        }

        pg_exring_step();

        pos = r->vhead % r->log_size;
        rec = (pg_exseries_t *) (log + pos);

        rec->hdr = (uint32_t) rec_size | PG_LOG_SERIES;
        rec->id = id;
        rec->hash = hash;
        rec->hnext = pg_exring_buckets(r)[hash & (r->nbuckets - 1)];
        rec->oldest = PG_NONE;
        rec->newest = PG_NONE;
        rec->count = 0;
        rec->tenant_len = (uint16_t) tenant.len;
        rec->nlabels = (uint16_t) n;
        rec->oldest_ts = 0;
        rec->newest_ts = 0;

        lens = (uint16_t *) (rec + 1);
        p = (uint8_t *) (lens + 2 * n);

        if (tenant.len) {
            memcpy(p, tenant.data, tenant.len);
            p += tenant.len;
        }

        for (i = 0; i < n; i++) {
            lens[2 * i] = (uint16_t) series[i].name.len;
            lens[2 * i + 1] = (uint16_t) series[i].value.len;

            if (series[i].name.len) {
                memcpy(p, series[i].name.data, series[i].name.len);
                p += series[i].name.len;
            }

            if (series[i].value.len) {
                memcpy(p, series[i].value.data, series[i].value.len);
                p += series[i].value.len;
            }
        }

        memset(p, 0, (uint8_t *) rec + rec_size - p);

        pg_exring_sigs(r)[id] = pg_exring_record_sig(r, rec);

        pg_exring_barrier();
        r->vhead += rec_size;
        pg_exring_barrier();

        table[id] = (uint32_t) (pos / 8);
        pg_exring_step();
        pg_exring_buckets(r)[hash & (r->nbuckets - 1)] = id;
        pg_exring_step();

        r->nseries++;
        r->series_bytes += rec_size;

        if (n > r->max_labels) {
            r->max_labels = (uint32_t) n;
        }
    }

    /* the labels, the slot, and then publish */
    pos = r->vhead % r->log_size;
    p = log + pos;

    hdr = (uint32_t) lsize | PG_LOG_LABELS;
    memcpy(p, &hdr, 4);
    memcpy(p + 4, buf, len);
    memset(p + 4 + len, 0, lsize - 4 - len);

    pg_exring_barrier();
    r->vhead += lsize;

    s = (uint32_t) (r->next_seq % r->max);
    slot = &slots[s];

    slot->value = value;
    slot->ts = ts_ms;
    slot->series = id;
    slot->next = PG_NONE;
    slot->off = (uint32_t) (pos / 8);
    slot->len = (uint16_t) len;
    slot->nlabels = (uint16_t) k;

    pg_exring_barrier();

    if (seq) {
        *seq = r->next_seq;
    }

    r->next_seq++;
    pg_exring_barrier();

    r->label_bytes += lsize;

    rec = pg_exring_record(r, id);

    if (rec->count == 0) {
        rec->oldest = s;
        rec->oldest_ts = ts_ms;

    } else {
        slots[rec->newest].next = s;
    }

    pg_exring_step();
    rec->newest = s;
    rec->newest_ts = ts_ms;
    rec->count++;

    pg_exring_barrier();
    r->busy = 0;

    return PG_EXRING_ADDED;
}


/*
 * A packed value (trace and span ids) as the lowercase hex it was sent
 * as: n bytes at p become 2n characters at out; returns the end.  Four
 * bytes a step on little-endian machines: their nibbles spread to one a
 * byte, in order, then each turned into '0'-'9' or 'a'-'f' at once.
 */
static uint8_t *
pg_exring_hex(uint8_t *out, const uint8_t *p, size_t n)
{
    size_t    i;

    static const char  hex[] = "0123456789abcdef";

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t  x, y, m;

    for ( /* void */ ; n >= 4; n -= 4) {
        x = (uint64_t) p[0] | (uint64_t) p[1] << 16 | (uint64_t) p[2] << 32
            | (uint64_t) p[3] << 48;

        /* byte 2i: the high nibble of p[i], byte 2i + 1: the low one */
        y = ((x >> 4) & 0x000f000f000f000fULL)
            | ((x & 0x000f000f000f000fULL) << 8);

        /* 0x01 in the bytes that are 10 or more */
        m = ((y + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
        y += 0x3030303030303030ULL + m * ('a' - '0' - 10);

        memcpy(out, &y, 8);
        out += 8;
        p += 4;
    }
#endif

    for (i = 0; i < n; i++) {
        *out++ = hex[p[i] >> 4];
        *out++ = hex[p[i] & 0xf];
    }

    return out;
}


/*
 * One exemplar of an answer, {"labels":{...},"value":"...","timestamp":...}
 * after a comma unless first, written straight from its encoded labels
 * (len bytes, nlabels labels) in one reservation: packed values as the
 * lowercase hex they were sent as, names and other values as
 * pg_json_labels() writes them.  Room: a name or an unpacked value takes
 * at most 6 bytes a byte, a packed value 2 bytes an encoded byte, a label
 * 6 more (quotes, ':' and ','), the rest is fixed.
 */
static void
pg_exring_exemplar_json(double value, int64_t ts, const uint8_t *e,
    size_t len, size_t nlabels, int first, pg_json_buf_t *out)
{
    size_t          v, vlen, j;
    uint8_t        *p;
    const uint8_t  *end;

    p = pg_json_reserve(out, 6 * len + 6 * nlabels
                             + 2 * PG_JSON_NUMBER_MAX + 48);
    if (p == NULL) {
        return;
    }

    if (!first) {
        *p++ = ',';
    }

    memcpy(p, "{\"labels\":{", 11);
    p += 11;

    end = e + len;

    for (j = 0; e < end; j++) {
        if (j) {
            *p++ = ',';
        }

        v = pg_exring_get_len(&e);
        p = pg_json_label_write(p, e, v);
        e += v;

        *p++ = ':';

        v = pg_exring_get_len(&e);
        vlen = v >> 1;

        if (!(v & 1)) {
            p = pg_json_label_write(p, e, vlen);
            e += vlen;
            continue;
        }

        *p++ = '"';
        p = pg_exring_hex(p, e, vlen / 2);
        *p++ = '"';
        e += vlen / 2;
    }

    memcpy(p, "},\"value\":\"", 11);
    p += 11;
    p += pg_json_format_value(p, value);
    memcpy(p, "\",\"timestamp\":", 14);
    p += 14;
    p += pg_json_format_timestamp(p, ts);
    *p++ = '}';

    out->len = p - out->data;
}


/*
 * The first exemplar of rec at or after start, if it is at or before end:
 * its slot, or PG_NONE.
 */
static uint32_t
pg_exring_in_range(pg_exring_t *r, const pg_exseries_t *rec,
    int64_t start_ms, int64_t end_ms)
{
    uint32_t      s;
    pg_exslot_t  *slots;

    if (rec->oldest_ts > end_ms || rec->newest_ts < start_ms) {
        return PG_NONE;
    }

    slots = pg_exring_slots(r);

    for (s = rec->oldest; slots[s].ts < start_ms; s = slots[s].next) {
        /* void: newest_ts >= start_ms ends it */
    }

    return slots[s].ts <= end_ms ? s : PG_NONE;
}


/*
 * Does the series of record id answer the query: a record in use, within
 * the time range, of the tenant, matching, with an exemplar in the range
 * (*first: the slot of the first).  labels (max_labels + 1 of them)
 * receive its labels.  Prefetches the
 * record PG_PREFETCH_AHEAD on (below ids): records are scattered over the
 * log, their cache misses overlap.
 */
static pg_exseries_t *
pg_exring_query_record(pg_exring_t *r, uint32_t id, uint32_t ids,
    pg_str_t tenant, uint64_t need, pg_series_match_pt match, void *mctx,
    int64_t start_ms, int64_t end_ms, pg_label_t *labels, uint32_t *first)
{
    pg_str_t        t;
    uint32_t       *table;
    uint64_t       *sigs;
    pg_exseries_t  *rec;

    table = pg_exring_table(r);
    sigs = pg_exring_sigs(r);

    if (id + PG_PREFETCH_AHEAD < ids
        && !(table[id + PG_PREFETCH_AHEAD] & PG_FREE)
        && (sigs[id + PG_PREFETCH_AHEAD] & need) == need)
    {
        pg_exring_prefetch(pg_exring_record(r, id + PG_PREFETCH_AHEAD));
    }

    if ((table[id] & PG_FREE) || (sigs[id] & need) != need) {
        return NULL;
    }

    rec = pg_exring_record(r, id);

    /* the cheap tests first: time range, tenant, then the matchers */
    if (rec->oldest_ts > end_ms || rec->newest_ts < start_ms
        || rec->tenant_len != tenant.len)
    {
        return NULL;
    }

    pg_exring_series_labels(rec, labels, &t);

    if (tenant.len && memcmp(t.data, tenant.data, tenant.len) != 0) {
        return NULL;
    }

    if (match && !match(mctx, labels, rec->nlabels)) {
        return NULL;
    }

    *first = pg_exring_in_range(r, rec, start_ms, end_ms);

    return *first == PG_NONE ? NULL : rec;
}


/*
 * A hit's copy of its exemplars: per exemplar the value, the time, the
 * encoded labels' length and count, then the encoded labels, padded to 8.
 */
#define PG_HIT_EX_HEAD      20
#define pg_hit_ex_size(len) pg_align8(PG_HIT_EX_HEAD + (uint64_t) (len))


/*
 * Copies rec's labels and its exemplars from slot "first" up to end_ms
 * into one piece of alloc's memory: the hit, its label views, the
 * exemplars, the label bytes.
 */
static pg_exring_hit_t *
pg_exring_hit_copy(pg_exring_t *r, uint32_t id, const pg_exseries_t *rec,
    const pg_label_t *labels, uint32_t first, int64_t end_ms,
    const pg_allocator_t *alloc)
{
    size_t              i, text, size, head;
    uint8_t            *p, *t;
    uint32_t            s, count;
    uint64_t            bytes;
    pg_exslot_t        *slots;
    pg_exring_hit_t    *hit;
    const pg_exslot_t  *slot;

    slots = pg_exring_slots(r);
    count = 0;
    bytes = 0;

    for (s = first; ; s = slot->next) {
        slot = &slots[s];

        if (slot->ts > end_ms) {
            break;
        }

        count++;
        bytes += pg_hit_ex_size(slot->len);

        if (s == rec->newest) {
            break;
        }
    }

    text = 0;

    for (i = 0; i < rec->nlabels; i++) {
        text += labels[i].name.len + labels[i].value.len;
    }

    head = pg_align8(sizeof(pg_exring_hit_t))
           + rec->nlabels * sizeof(pg_label_t);
    size = head + bytes + text;

    hit = alloc->alloc(alloc->ctx, size);
    if (hit == NULL) {
        return NULL;
    }

    hit->labels = (pg_label_t *) ((uint8_t *) hit
                                  + pg_align8(sizeof(pg_exring_hit_t)));
    hit->nlabels = rec->nlabels;
    hit->id = id;
    hit->nexemplars = count;
    hit->exemplars = (uint8_t *) hit + head;
    hit->size = bytes;

    p = (uint8_t *) hit->exemplars;

    for (s = first; count; s = slot->next, count--) {
        slot = &slots[s];

        memcpy(p, &slot->value, 8);
        memcpy(p + 8, &slot->ts, 8);
        memcpy(p + 16, &slot->len, 2);
        memcpy(p + 18, &slot->nlabels, 2);
        memcpy(p + PG_HIT_EX_HEAD, pg_exring_labels(r, slot), slot->len);

        /* the padding too: a peer's answer sends the copy as it is */
        memset(p + PG_HIT_EX_HEAD + slot->len, 0,
               pg_hit_ex_size(slot->len) - PG_HIT_EX_HEAD - slot->len);

        p += pg_hit_ex_size(slot->len);
    }

    t = p;

    for (i = 0; i < rec->nlabels; i++) {
        hit->labels[i].name.data = t;
        hit->labels[i].name.len = labels[i].name.len;

        if (labels[i].name.len) {
            memcpy(t, labels[i].name.data, labels[i].name.len);
            t += labels[i].name.len;
        }

        hit->labels[i].value.data = t;
        hit->labels[i].value.len = labels[i].value.len;

        if (labels[i].value.len) {
            memcpy(t, labels[i].value.data, labels[i].value.len);
            t += labels[i].value.len;
        }
    }

    return hit;
}


int
pg_exring_query_collect_sig(pg_exring_t *r, pg_str_t tenant, uint64_t need,
    pg_series_match_pt match, void *mctx, int64_t start_ms, int64_t end_ms,
    uint32_t *pos, uint32_t n, pg_exring_hit_pt hit, void *hctx,
    const pg_allocator_t *alloc, const pg_allocator_t *scratch)
{
    uint32_t          id, end, first;
    pg_label_t       *labels;
    pg_exseries_t    *rec;
    pg_exring_hit_t  *h;

    if (r->busy) {
        pg_exring_repair(r);
    }

    if (start_ms > end_ms || *pos >= r->id_hwm) {
        *pos = r->id_hwm;
        return 1;
    }

    labels = scratch->alloc(scratch->ctx,
                            sizeof(pg_label_t) * (r->max_labels + 1));
    if (labels == NULL) {
        return -1;
    }

    end = (r->id_hwm - *pos > n) ? *pos + n : r->id_hwm;

    for (id = *pos; id < end; id++) {

        rec = pg_exring_query_record(r, id, end, tenant, need, match, mctx,
                                     start_ms, end_ms, labels, &first);
        if (rec == NULL) {
            continue;
        }

        h = pg_exring_hit_copy(r, id, rec, labels, first, end_ms, alloc);

        if (h == NULL || !hit(hctx, h)) {
            *pos = id + 1;
            return -1;
        }
    }

    *pos = end;

    return end == r->id_hwm;
}


int
pg_exring_query_collect(pg_exring_t *r, pg_str_t tenant,
    pg_series_match_pt match, void *mctx, int64_t start_ms, int64_t end_ms,
    uint32_t *pos, uint32_t n, pg_exring_hit_pt hit, void *hctx,
    const pg_allocator_t *alloc, const pg_allocator_t *scratch)
{
    return pg_exring_query_collect_sig(r, tenant, 0, match, mctx, start_ms,
                                       end_ms, pos, n, hit, hctx, alloc,
                                       scratch);
}


int
pg_exring_hit_json(const pg_exring_hit_t *hit, int first,
    pg_exring_hit_pos_t *pos, size_t until, pg_json_buf_t *out)
{
    double          value;
    int64_t         ts;
    uint16_t        len, nlabels;
    const uint8_t  *p;

    if (pos->piece > hit->nexemplars + 1) {
        return 1;
    }

    while (out->len < until && !out->failed) {

        if (pos->piece == 0) {
            if (!first) {
                pg_json_literal(out, ",");
            }

            pg_json_literal(out, "{\"seriesLabels\":");
            pg_json_labels(out, hit->labels, hit->nlabels);
            pg_json_literal(out, ",\"exemplars\":[");

        } else if (pos->piece <= hit->nexemplars) {
            p = hit->exemplars + pos->off;

            memcpy(&value, p, 8);
            memcpy(&ts, p + 8, 8);
            memcpy(&len, p + 16, 2);
            memcpy(&nlabels, p + 18, 2);

            pg_exring_exemplar_json(value, ts, p + PG_HIT_EX_HEAD, len,
                                    nlabels, pos->piece == 1, out);

            pos->off += pg_hit_ex_size(len);

        } else {
            pg_json_literal(out, "]}");
            pos->piece++;
            break;
        }

        pos->piece++;
    }

    if (out->failed) {
        return -1;
    }

    return pos->piece > hit->nexemplars + 1;
}


int
pg_exring_labels_compare(const pg_label_t *a, size_t na,
    const pg_label_t *b, size_t nb)
{
    size_t  i, n;
    int     rc;

    n = na < nb ? na : nb;

    for (i = 0; i < n; i++) {
        rc = pg_str_cmp(a[i].name, b[i].name);
        if (rc != 0) {
            return rc;
        }

        rc = pg_str_cmp(a[i].value, b[i].value);
        if (rc != 0) {
            return rc;
        }
    }

    return (na > nb) - (na < nb);
}


int
pg_exring_hit_compare(const pg_exring_hit_t *a, const pg_exring_hit_t *b)
{
    int  rc;

    rc = pg_exring_labels_compare(a->labels, a->nlabels, b->labels,
                                  b->nlabels);
    if (rc != 0) {
        return rc;
    }

    return (a->id > b->id) - (a->id < b->id);
}


/* the one-pass query's hits, in an array from out's allocator */
typedef struct {
    pg_exring_hit_t   **hits;
    size_t              n;
    size_t              cap;
    pg_allocator_t     *alloc;
} pg_exring_hits_t;


static int
pg_exring_hits_add(void *ctx, pg_exring_hit_t *hit)
{
    pg_exring_hits_t   *h = ctx;
    pg_exring_hit_t   **nh;

    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        nh = h->alloc->alloc(h->alloc->ctx,
                             h->cap * sizeof(pg_exring_hit_t *));
        if (nh == NULL) {
            return 0;
        }

        if (h->n) {
            memcpy(nh, h->hits, h->n * sizeof(pg_exring_hit_t *));
        }

        h->hits = nh;
    }

    h->hits[h->n++] = hit;

    return 1;
}


static int
pg_exring_hits_cmp(const void *a, const void *b)
{
    return pg_exring_hit_compare(*(const pg_exring_hit_t * const *) a,
                                 *(const pg_exring_hit_t * const *) b);
}


int
pg_exring_query(pg_exring_t *r, pg_str_t tenant, pg_series_match_pt match,
    void *ctx, int64_t start_ms, int64_t end_ms, pg_json_buf_t *out)
{
    size_t               i;
    uint32_t             pos;
    pg_exring_hits_t     h;
    pg_exring_hit_pos_t  hp;

    h.hits = NULL;
    h.n = 0;
    h.cap = 0;
    h.alloc = &out->alloc;
    pos = 0;

    if (pg_exring_query_collect(r, tenant, match, ctx, start_ms, end_ms,
                                &pos, UINT32_MAX, pg_exring_hits_add, &h,
                                &out->alloc, &out->alloc)
        != 1)
    {
        out->failed = 1;
        return -1;
    }

    if (h.n > 1) {
        qsort(h.hits, h.n, sizeof(pg_exring_hit_t *), pg_exring_hits_cmp);
    }

    pg_json_literal(out, "{\"status\":\"success\",\"data\":[");

    for (i = 0; i < h.n; i++) {
        hp.piece = 0;
        hp.off = 0;

        (void) pg_exring_hit_json(h.hits[i], i == 0, &hp, SIZE_MAX, out);
    }

    pg_json_literal(out, "]}");

    return out->failed ? -1 : (int) h.n;
}


int
pg_exring_iterate(pg_exring_t *r, const pg_allocator_t *alloc,
    pg_exring_visit_pt visit, void *ctx)
{
    pg_label_t        *labels, exl[PG_EXEMPLAR_MAX_RUNES];
    pg_exring_item_t   item;
    pg_exslot_t       *slot;
    pg_exseries_t     *rec;
    uint8_t            text[PG_EX_LABELS_MAX];
    uint64_t           seq;

    if (r->busy) {
        pg_exring_repair(r);
    }

    labels = alloc->alloc(alloc->ctx,
                          sizeof(pg_label_t) * (r->max_labels + 1));
    if (labels == NULL) {
        return -1;
    }

    for (seq = r->first_seq; seq < r->next_seq; seq++) {
        slot = &pg_exring_slots(r)[seq % r->max];
        rec = pg_exring_record(r, slot->series);

        pg_exring_series_labels(rec, labels, &item.tenant);

        item.seq = seq;
        item.series = labels;
        item.nseries = rec->nlabels;
        item.labels = exl;
        item.nlabels = pg_exring_decode(pg_exring_labels(r, slot), slot->len,
                                        exl, text);
        item.value = slot->value;
        item.ts = slot->ts;

        if (visit(ctx, &item)) {
            return 1;
        }
    }

    return 0;
}


void
pg_exring_stats(pg_exring_t *r, pg_exring_stats_t *st)
{
    if (r->busy) {
        pg_exring_repair(r);
    }

    st->exemplars = r->next_seq - r->first_seq;
    st->max = r->max;
    st->series = r->nseries;
    st->label_bytes = r->label_bytes;
    st->series_bytes = r->series_bytes;
    st->log_used = r->vhead - r->vtail;
    st->log_size = r->log_size;
    st->seq = r->next_seq - 1;
    st->repairs = r->repairs;
}


const char *
pg_exring_rc_name(pg_exring_rc_e rc)
{
    static const char  *names[] = {
        "added", "duplicate", "out_of_order", "too_long", "no_space"
    };

    return (unsigned) rc < PG_EXRING_NRESULTS ? names[rc] : "unknown";
}


static int
pg_exring_fail(char *err, size_t err_len, const char *what, uint64_t a,
    uint64_t b)
{
    if (err && err_len) {
        snprintf(err, err_len, "%s (%llu, %llu)", what,
                 (unsigned long long) a, (unsigned long long) b);
    }

    return -1;
}


int
pg_exring_check(pg_exring_t *r, char *err, size_t err_len)
{
    pg_exslot_t    *slots, *slot;
    pg_exseries_t  *rec;
    uint32_t       *table, *buckets, id, v, s, hdr, b, nfree;
    uint64_t        v_pos, pos, size, seq, nlive_labels, label_bytes;
    uint64_t        nlive_series, series_bytes, total, nchain, count;
    int64_t         ts;

    slots = pg_exring_slots(r);
    table = pg_exring_table(r);
    buckets = pg_exring_buckets(r);

    if (r->busy) {
        return pg_exring_fail(err, err_len, "busy", r->busy, 0);
    }

    if (r->first_seq > r->next_seq || r->next_seq - r->first_seq > r->max) {
        return pg_exring_fail(err, err_len, "sequence window",
                              r->first_seq, r->next_seq);
    }

    if (r->vtail > r->vhead || r->vhead - r->vtail > r->log_size) {
        return pg_exring_fail(err, err_len, "log window", r->vtail, r->vhead);
    }

    /* the log parses from tail to head; count what is live in it */
    nlive_labels = 0;
    label_bytes = 0;
    nlive_series = 0;
    series_bytes = 0;
    seq = r->first_seq;

    for (v_pos = r->vtail; v_pos < r->vhead; v_pos += size) {
        pos = v_pos % r->log_size;
        memcpy(&hdr, pg_exring_log(r) + pos, 4);
        size = pg_log_size(hdr);

        if (size < 8 || pos + size > r->log_size || v_pos + size > r->vhead
            || (pg_log_type(hdr) != PG_LOG_SKIP && size > r->entry_hwm))
        {
            return pg_exring_fail(err, err_len, "log entry size", v_pos,
                                  size);
        }

        switch (pg_log_type(hdr)) {

        case PG_LOG_LABELS:
            /* live label entries appear in exemplar order */
            if (seq < r->next_seq
                && slots[seq % r->max].off == pos / 8)
            {
                if (!pg_exring_labels_ok(r, &slots[seq % r->max])) {
                    return pg_exring_fail(err, err_len, "labels entry",
                                          seq, pos);
                }

                nlive_labels++;
                label_bytes += size;
                seq++;
            }
            break;

        case PG_LOG_SERIES:
            rec = (pg_exseries_t *) (pg_exring_log(r) + pos);

            if (rec->id < r->max && rec->id < r->id_hwm
                && table[rec->id] == pos / 8)
            {
                if (!pg_exring_record_ok(r, rec->id, table[rec->id])) {
                    return pg_exring_fail(err, err_len, "series record",
                                          rec->id, pos);
                }

                nlive_series++;
                series_bytes += size;
            }
            break;

        case PG_LOG_SKIP:
            break;

        default:
            return pg_exring_fail(err, err_len, "log entry type", v_pos,
                                  hdr);
        }
    }

    if (seq != r->next_seq || nlive_labels != r->next_seq - r->first_seq
        || label_bytes != r->label_bytes)
    {
        return pg_exring_fail(err, err_len, "live labels", nlive_labels,
                              label_bytes);
    }

    if (nlive_series != r->nseries || series_bytes != r->series_bytes) {
        return pg_exring_fail(err, err_len, "live series", nlive_series,
                              series_bytes);
    }

    /* every live id's record is in its bucket's chain, and only those */
    nchain = 0;

    for (b = 0; b < r->nbuckets; b++) {
        for (id = buckets[b]; id != PG_NONE; id = rec->hnext) {
            if (id >= r->id_hwm || (table[id] & PG_FREE)) {
                return pg_exring_fail(err, err_len, "chain id", b, id);
            }

            rec = pg_exring_record(r, id);

            if ((rec->hash & (r->nbuckets - 1)) != b
                || ++nchain > r->nseries)
            {
                return pg_exring_fail(err, err_len, "chain", b, id);
            }

            if (pg_exring_sigs(r)[id] != pg_exring_record_sig(r, rec)) {
                return pg_exring_fail(err, err_len, "series signature", id,
                                      pg_exring_sigs(r)[id]);
            }
        }
    }

    if (nchain != r->nseries) {
        return pg_exring_fail(err, err_len, "chained series", nchain,
                              r->nseries);
    }

    /* free list plus live ids cover the ids used */
    nfree = 0;

    for (id = r->free_id; id != PG_FREE_END; id = v & ~PG_FREE) {
        v = table[id];

        if (id >= r->id_hwm || !(v & PG_FREE) || ++nfree > r->id_hwm) {
            return pg_exring_fail(err, err_len, "free list", id, nfree);
        }
    }

    if (nfree + r->nseries != r->id_hwm) {
        return pg_exring_fail(err, err_len, "ids", nfree, r->id_hwm);
    }

    /* each series' chain of slots: in time order, counted, its own */
    total = 0;

    for (id = 0; id < r->id_hwm; id++) {
        if (table[id] & PG_FREE) {
            continue;
        }

        rec = pg_exring_record(r, id);
        count = 0;
        ts = INT64_MIN;

        if (rec->count == 0 || rec->nlabels > r->max_labels) {
            return pg_exring_fail(err, err_len, "series count", id,
                                  rec->count);
        }

        for (s = rec->oldest; ; s = slot->next) {
            if (s >= r->max) {
                return pg_exring_fail(err, err_len, "slot link", id, s);
            }

            slot = &slots[s];

            if (slot->series != id || (count > 0 && slot->ts < ts)
                || ++count > rec->count)
            {
                return pg_exring_fail(err, err_len, "series slots", id, s);
            }

            if (count == 1 && slot->ts != rec->oldest_ts) {
                return pg_exring_fail(err, err_len, "oldest ts", id, s);
            }

            ts = slot->ts;

            if (s == rec->newest) {
                break;
            }
        }

        if (count != rec->count || slot->next != PG_NONE
            || ts != rec->newest_ts)
        {
            return pg_exring_fail(err, err_len, "series end", id, count);
        }

        total += count;
    }

    if (total != r->next_seq - r->first_seq) {
        return pg_exring_fail(err, err_len, "exemplars", total,
                              r->next_seq - r->first_seq);
    }

    return 0;
}


/* ------------------------------------------------- peers (see the .h) */


#define PG_PEER_MAGIC       "PGXPEER1"
#define PG_PEER_ORDER       0x01020304u
#define PG_PEER_HEAD        12


static void
pg_exring_peer_u32(pg_json_buf_t *out, uint32_t v)
{
    pg_json_raw(out, &v, 4);
}


void
pg_exring_peer_head(pg_json_buf_t *out)
{
    pg_json_literal(out, PG_PEER_MAGIC);
    pg_exring_peer_u32(out, PG_PEER_ORDER);
}


void
pg_exring_peer_write(const pg_exring_hit_t *hit, pg_json_buf_t *out)
{
    size_t  i;

    pg_exring_peer_u32(out, (uint32_t) hit->nlabels);

    for (i = 0; i < hit->nlabels; i++) {
        pg_exring_peer_u32(out, (uint32_t) hit->labels[i].name.len);
        pg_json_raw(out, hit->labels[i].name.data, hit->labels[i].name.len);
        pg_exring_peer_u32(out, (uint32_t) hit->labels[i].value.len);
        pg_json_raw(out, hit->labels[i].value.data,
                    hit->labels[i].value.len);
    }

    pg_exring_peer_u32(out, hit->nexemplars);
    pg_exring_peer_u32(out, (uint32_t) hit->size);
    pg_json_raw(out, hit->exemplars, hit->size);
}


/* a varint of an exemplar's encoded labels, within [*pp, end) */
static int
pg_exring_peer_len(const uint8_t **pp, const uint8_t *end, size_t *v)
{
    const uint8_t  *p;
    size_t          shift;

    p = *pp;
    *v = 0;

    for (shift = 0; shift < 21; shift += 7) {
        if (p == end) {
            return -1;
        }

        *v |= (size_t) (*p & 0x7f) << shift;

        if (!(*p++ & 0x80)) {
            *pp = p;
            return 0;
        }
    }

    return -1;
}


/*
 * One exemplar's encoded labels as pg_exring_encode() writes them: n labels
 * exactly (what the JSON writer reserves room by), at most
 * PG_EXEMPLAR_MAX_RUNES of them and PG_EX_LABELS_MAX bytes once unpacked
 * (what pg_exring_decode()'s callers hold).
 */
static const char *
pg_exring_peer_labels_ok(const uint8_t *p, size_t len, size_t n)
{
    size_t          k, v, text;
    const uint8_t  *end;

    end = p + len;
    text = 0;

    for (k = 0; p < end; k++) {
        if (k == PG_EXEMPLAR_MAX_RUNES) {
            return "too many exemplar labels";
        }

        if (pg_exring_peer_len(&p, end, &v) != 0
            || v > (size_t) (end - p))
        {
            return "exemplar label name out of bounds";
        }

        p += v;
        text += v;

        if (pg_exring_peer_len(&p, end, &v) != 0) {
            return "exemplar label value out of bounds";
        }

        if (v & 1) {
            if ((v >> 1) % 2 || (v >> 1) / 2 > (size_t) (end - p)) {
                return "packed exemplar label value out of bounds";
            }

            p += (v >> 1) / 2;

        } else {
            if ((v >> 1) > (size_t) (end - p)) {
                return "exemplar label value out of bounds";
            }

            p += v >> 1;
        }

        text += v >> 1;

        if (text > PG_EX_LABELS_MAX) {
            return "exemplar labels too long";
        }
    }

    return k == n ? NULL : "exemplar label count does not match";
}


static int
pg_exring_peer_get(const uint8_t **pp, const uint8_t *end, uint32_t *v)
{
    if (end - *pp < 4) {
        return -1;
    }

    memcpy(v, *pp, 4);
    *pp += 4;

    return 0;
}


pg_exring_peer_rc_e
pg_exring_peer_read(const uint8_t *data, size_t len,
    const pg_allocator_t *alloc, pg_exring_hit_pt hit, void *ctx,
    const char **err)
{
    size_t            i, off;
    uint16_t          elen, enl;
    uint32_t          n, v, count, size, order;
    const char       *e;
    const uint8_t    *p, *end, *ex;
    pg_exring_hit_t  *h;

    p = data;
    end = data + len;

    if (len < PG_PEER_HEAD || memcmp(p, PG_PEER_MAGIC, 8) != 0) {
        *err = "not a promgate peer answer";
        return PG_EXRING_PEER_INVALID;
    }

    memcpy(&order, p + 8, 4);

    if (order != PG_PEER_ORDER) {
        *err = "peer answer of another byte order";
        return PG_EXRING_PEER_INVALID;
    }

    p += PG_PEER_HEAD;

    while (p < end) {

        if (pg_exring_peer_get(&p, end, &n) != 0 || n > 0xffff) {
            *err = "series label count out of bounds";
            return PG_EXRING_PEER_INVALID;
        }

        h = alloc->alloc(alloc->ctx, pg_align8(sizeof(pg_exring_hit_t))
                                     + n * sizeof(pg_label_t));
        if (h == NULL) {
            return PG_EXRING_PEER_NOMEM;
        }

        h->labels = (pg_label_t *) ((uint8_t *) h
                                    + pg_align8(sizeof(pg_exring_hit_t)));
        h->nlabels = n;
        h->id = PG_EXRING_PEER_ID;

        for (i = 0; i < n; i++) {
            if (pg_exring_peer_get(&p, end, &v) != 0
                || v > (size_t) (end - p))
            {
                *err = "series label name out of bounds";
                return PG_EXRING_PEER_INVALID;
            }

            h->labels[i].name.data = p;
            h->labels[i].name.len = v;
            p += v;

            if (pg_exring_peer_get(&p, end, &v) != 0
                || v > (size_t) (end - p))
            {
                *err = "series label value out of bounds";
                return PG_EXRING_PEER_INVALID;
            }

            h->labels[i].value.data = p;
            h->labels[i].value.len = v;
            p += v;
        }

        if (pg_exring_peer_get(&p, end, &count) != 0 || count == 0
            || pg_exring_peer_get(&p, end, &size) != 0
            || size > (size_t) (end - p)
            || count > size / pg_hit_ex_size(0))
        {
            *err = "exemplar count or size out of bounds";
            return PG_EXRING_PEER_INVALID;
        }

        ex = p;
        off = 0;

        for (i = 0; i < count; i++) {
            if (size - off < PG_HIT_EX_HEAD) {
                *err = "exemplar out of bounds";
                return PG_EXRING_PEER_INVALID;
            }

            memcpy(&elen, ex + off + 16, 2);
            memcpy(&enl, ex + off + 18, 2);

            if (elen > PG_EX_LABELS_MAX
                || pg_hit_ex_size(elen) > size - off)
            {
                *err = "exemplar labels out of bounds";
                return PG_EXRING_PEER_INVALID;
            }

            e = pg_exring_peer_labels_ok(ex + off + PG_HIT_EX_HEAD, elen,
                                         enl);
            if (e != NULL) {
                *err = e;
                return PG_EXRING_PEER_INVALID;
            }

            off += pg_hit_ex_size(elen);
        }

        if (off != size) {
            *err = "exemplar bytes left over";
            return PG_EXRING_PEER_INVALID;
        }

        h->nexemplars = count;
        h->exemplars = ex;
        h->size = size;
        p += size;

        if (!hit(ctx, h)) {
            return PG_EXRING_PEER_REFUSED;
        }
    }

    return PG_EXRING_PEER_OK;
}


/*
 * The order of one series' exemplars in Prometheus' ring, which takes
 * them in this order only (see pg_exring_insert()): time, value, then
 * labels.Hash() of the labels; the bytes last, so that equal exemplars
 * are next to each other.
 */
static int
pg_exring_ex_cmp(const void *a, const void *b)
{
    int             rc;
    double          va, vb;
    int64_t         ta, tb;
    uint16_t        la, lb;
    uint64_t        ha, hb;
    pg_label_t      l[PG_EXEMPLAR_MAX_RUNES];
    uint8_t         text[PG_EX_LABELS_MAX];
    size_t          n;
    const uint8_t  *x, *y;

    x = *(const uint8_t * const *) a;
    y = *(const uint8_t * const *) b;

    memcpy(&ta, x + 8, 8);
    memcpy(&tb, y + 8, 8);

    if (ta != tb) {
        return ta < tb ? -1 : 1;
    }

    memcpy(&va, x, 8);
    memcpy(&vb, y, 8);

    if (va < vb) {
        return -1;
    }

    if (va > vb) {
        return 1;
    }

    memcpy(&la, x + 16, 2);
    memcpy(&lb, y + 16, 2);

    n = pg_exring_decode(x + PG_HIT_EX_HEAD, la, l, text);
    ha = pg_exring_prom_hash(l, n);
    n = pg_exring_decode(y + PG_HIT_EX_HEAD, lb, l, text);
    hb = pg_exring_prom_hash(l, n);

    if (ha != hb) {
        return ha < hb ? -1 : 1;
    }

    if (la != lb) {
        return la < lb ? -1 : 1;
    }

    rc = memcmp(x, y, PG_HIT_EX_HEAD + (size_t) la);

    return (rc > 0) - (rc < 0);
}


pg_exring_hit_t *
pg_exring_hit_merge(pg_exring_hit_t *const *hits, size_t n,
    const pg_allocator_t *alloc)
{
    size_t             i, j, k, total, bytes, sz;
    uint8_t           *p;
    uint16_t           len;
    const uint8_t    **ex, *e;
    pg_exring_hit_t   *h;

    total = 0;
    bytes = 0;

    for (i = 0; i < n; i++) {
        total += hits[i]->nexemplars;
        bytes += hits[i]->size;
    }

    ex = alloc->alloc(alloc->ctx, total * sizeof(const uint8_t *));
    h = alloc->alloc(alloc->ctx, pg_align8(sizeof(pg_exring_hit_t)) + bytes);

    if (ex == NULL || h == NULL) {
        return NULL;
    }

    k = 0;

    for (i = 0; i < n; i++) {
        e = hits[i]->exemplars;

        for (j = 0; j < hits[i]->nexemplars; j++) {
            ex[k++] = e;
            memcpy(&len, e + 16, 2);
            e += pg_hit_ex_size(len);
        }
    }

    qsort(ex, total, sizeof(const uint8_t *), pg_exring_ex_cmp);

    p = (uint8_t *) h + pg_align8(sizeof(pg_exring_hit_t));

    h->labels = hits[0]->labels;
    h->nlabels = hits[0]->nlabels;
    h->id = hits[n - 1]->id;
    h->exemplars = p;
    h->nexemplars = 0;

    for (k = 0; k < total; k++) {
        if (k > 0 && pg_exring_ex_cmp(&ex[k - 1], &ex[k]) == 0) {
            continue;           /* the same exemplar, seen twice */
        }

        memcpy(&len, ex[k] + 16, 2);
        sz = pg_hit_ex_size(len);

        memcpy(p, ex[k], PG_HIT_EX_HEAD + (size_t) len);
        memset(p + PG_HIT_EX_HEAD + len, 0, sz - PG_HIT_EX_HEAD - len);

        p += sz;
        h->nexemplars++;
    }

    h->size = p - h->exemplars;

    return h;
}


int
pg_exring_hits_join(pg_exring_hit_t **hits, size_t *n,
    const pg_allocator_t *alloc, size_t *exemplars)
{
    size_t            i, j, k, m, w;
    pg_exring_hit_t  *h;

    if (*n > 1) {
        qsort(hits, *n, sizeof(pg_exring_hit_t *), pg_exring_hits_cmp);
    }

    w = 0;
    *exemplars = 0;

    for (i = 0; i < *n; i = j) {

        for (j = i + 1; j < *n; j++) {
            if (pg_exring_labels_compare(hits[i]->labels, hits[i]->nlabels,
                                         hits[j]->labels, hits[j]->nlabels)
                != 0)
            {
                break;
            }
        }

        /* the last of the zone's hits (ids below the peers') */

        k = 0;

        for (m = i; m < j; m++) {
            if (hits[m]->id != PG_EXRING_PEER_ID && m + 1 < j
                && hits[m + 1]->id != PG_EXRING_PEER_ID)
            {
                continue;
            }

            hits[i + k++] = hits[m];
        }

        if (k == 1) {
            h = hits[i];

        } else {
            h = pg_exring_hit_merge(&hits[i], k, alloc);
            if (h == NULL) {
                return -1;
            }
        }

        hits[w++] = h;
        *exemplars += h->nexemplars;
    }

    *n = w;

    return 0;
}
