/*
 * The series index: Prometheus' series hash, the TTL set with LRU eviction
 * and pending/seen states in one caller-provided region, and the message
 * that announces a new series.
 */

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pg_series.h"


#define PG_SERIES_MAGIC   0x50475358u          /* "PGSX" */
#define PG_SERIES_LAYOUT  1
#define PG_SERIES_NIL     0xffffffffu

/* Prometheus hashes label sets up to this size in one piece, as we do */
#define PG_SERIES_HASH_BUF  1024


/*
 * One tracked series, 40 bytes.  stamp is in seconds since the set's
 * epoch: when it was last seen, or, while pending, when the offer lapses.
 */
typedef struct {
    uint64_t            hash;
    uint64_t            tenant;
    uint32_t            check;
    uint32_t            stamp;
    uint32_t            next;       /* bucket chain, or the free list */
    uint32_t            newer;      /* LRU neighbours */
    uint32_t            older;
    uint32_t            token;      /* 0: seen; else pending, this offer */
} pg_series_entry_t;


struct pg_series_set_s {
    uint32_t            magic;
    uint32_t            layout;
    uint64_t            size;
    uint64_t            epoch;      /* unix seconds at init */
    uint64_t            seed;       /* keys the bucket index */
    uint32_t            capacity;
    uint32_t            mask;       /* buckets - 1 */
    uint32_t            ttl;
    uint32_t            pending;
    uint32_t            count;
    uint32_t            npending;
    uint32_t            used;       /* entries handed out from the array */
    uint32_t            free;       /* released entries */
    uint32_t            newest;
    uint32_t            oldest;
    uint32_t            token;
    uint32_t            busy;       /* a call is changing the set */
    uint64_t            buckets;    /* offsets from the set */
    uint64_t            entries;
    uint64_t            offered;
    uint64_t            published;
    uint64_t            failed;
    uint64_t            overflow;
    uint64_t            evictions;
    uint64_t            expired;
    uint64_t            collisions;
    uint64_t            repairs;
};


#define PG_SERIES_HEADER                                                      \
    ((sizeof(pg_series_set_t) + 63) & ~(size_t) 63)

#define pg_series_buckets(set)                                                \
    ((uint32_t *) ((uint8_t *) (set) + (set)->buckets))

#define pg_series_entries(set)                                                \
    ((pg_series_entry_t *) ((uint8_t *) (set) + (set)->entries))


/* ------------------------------------------------------------ identity */


typedef struct {
    size_t              len;
    int                 streaming;
    XXH64_state_t       h64;
    XXH3_state_t        h3;
    uint8_t             buf[PG_SERIES_HASH_BUF];
} pg_series_hasher_t;


static const uint8_t  pg_series_sep = 0xff;


static void
pg_series_hasher_add(pg_series_hasher_t *h, const pg_label_t *l)
{
    uint8_t  *p;

    if (!h->streaming) {
        if (h->len + l->name.len + l->value.len + 2 <= PG_SERIES_HASH_BUF) {
            p = h->buf + h->len;

            if (l->name.len) {
                memcpy(p, l->name.data, l->name.len);
                p += l->name.len;
            }

            *p++ = pg_series_sep;

            if (l->value.len) {
                memcpy(p, l->value.data, l->value.len);
                p += l->value.len;
            }

            *p++ = pg_series_sep;

            h->len = p - h->buf;
            return;
        }

        /* a large label set: hash it piece by piece */

        (void) XXH64_reset(&h->h64, 0);
        (void) XXH3_64bits_reset(&h->h3);
        (void) XXH64_update(&h->h64, h->buf, h->len);
        (void) XXH3_64bits_update(&h->h3, h->buf, h->len);
        h->streaming = 1;
    }

    (void) XXH64_update(&h->h64, l->name.data, l->name.len);
    (void) XXH64_update(&h->h64, &pg_series_sep, 1);
    (void) XXH64_update(&h->h64, l->value.data, l->value.len);
    (void) XXH64_update(&h->h64, &pg_series_sep, 1);

    (void) XXH3_64bits_update(&h->h3, l->name.data, l->name.len);
    (void) XXH3_64bits_update(&h->h3, &pg_series_sep, 1);
    (void) XXH3_64bits_update(&h->h3, l->value.data, l->value.len);
    (void) XXH3_64bits_update(&h->h3, &pg_series_sep, 1);
}


static void
pg_series_hasher_end(pg_series_hasher_t *h, pg_series_id_t *id)
{
    if (h->streaming) {
        id->hash = XXH64_digest(&h->h64);
        id->check = (uint32_t) XXH3_64bits_digest(&h->h3);
        return;
    }

    id->hash = XXH64(h->buf, h->len, 0);
    id->check = (uint32_t) XXH3_64bits(h->buf, h->len);
}


void
pg_series_hash(const pg_label_t *labels, size_t n, pg_series_id_t *id)
{
    size_t              i;
    pg_series_hasher_t  h;

    h.len = 0;
    h.streaming = 0;

    for (i = 0; i < n; i++) {
        pg_series_hasher_add(&h, &labels[i]);
    }

    pg_series_hasher_end(&h, id);
}


void
pg_series_hash_iter(pg_pb_iter_t it, pg_series_id_t *id)
{
    pg_label_t          l;
    pg_series_hasher_t  h;

    h.len = 0;
    h.streaming = 0;

    while (pg_rw_next_label(&it, &l)) {
        pg_series_hasher_add(&h, &l);
    }

    pg_series_hasher_end(&h, id);
}


uint64_t
pg_series_tenant_hash(pg_str_t tenant)
{
    return XXH64(tenant.data, tenant.len, 0);
}


/* ----------------------------------------------------------------- set */


/*
 * A power-of-two bucket array, at least one bucket per entry (chains stay
 * short): of the two sizes around avail / 44 bytes, the one that tracks
 * more series.
 */

static uint64_t
pg_series_nbuckets(uint64_t avail)
{
    uint64_t  nb, cap, cap2;

    for (nb = 1; nb < avail / (PG_SERIES_ENTRY_SIZE + 4); nb <<= 1) {
        /* void */
    }

    if (nb > 0x80000000ull) {
        nb = 0x80000000ull;
    }

    cap = avail > nb * 4 ? (avail - nb * 4) / PG_SERIES_ENTRY_SIZE : 0;
    cap = cap < nb ? cap : nb;

    cap2 = avail > nb * 2 ? (avail - nb * 2) / PG_SERIES_ENTRY_SIZE : 0;
    cap2 = cap2 < nb / 2 ? cap2 : nb / 2;

    return cap2 > cap ? nb / 2 : nb;
}


uint32_t
pg_series_capacity(size_t size)
{
    uint64_t  avail, cap, nb;

    if (size < PG_SERIES_HEADER) {
        return 0;
    }

    avail = size - PG_SERIES_HEADER;

    nb = pg_series_nbuckets(avail);
    cap = (avail - nb * 4) / PG_SERIES_ENTRY_SIZE;

    if (cap > nb) {
        cap = nb;
    }

    return cap < PG_SERIES_MIN_ENTRIES ? 0 : (uint32_t) cap;
}


pg_series_set_t *
pg_series_init(void *region, size_t size, uint64_t now, uint64_t seed,
    uint32_t ttl, uint32_t pending)
{
    uint32_t          cap, nb;
    pg_series_set_t  *set;

    cap = pg_series_capacity(size);

    if (cap == 0 || ((uintptr_t) region & 7)) {
        return NULL;
    }

    nb = (uint32_t) pg_series_nbuckets(size - PG_SERIES_HEADER);

    set = region;
    memset(set, 0, PG_SERIES_HEADER);

    set->magic = PG_SERIES_MAGIC;
    set->layout = PG_SERIES_LAYOUT;
    set->size = size;
    set->epoch = now;
    set->capacity = cap;
    set->mask = nb - 1;
    set->ttl = ttl;
    set->pending = pending;
    set->free = PG_SERIES_NIL;
    set->newest = PG_SERIES_NIL;
    set->oldest = PG_SERIES_NIL;
    set->buckets = PG_SERIES_HEADER;
    set->entries = PG_SERIES_HEADER + (uint64_t) nb * 4;

    /* the bucket index is keyed: senders cannot aim at one chain */
    set->seed = seed;

    memset(pg_series_buckets(set), 0xff, (size_t) nb * 4);

    return set;
}


pg_series_set_t *
pg_series_attach(void *region, size_t size)
{
    pg_series_set_t  *set;

    set = region;

    if (region == NULL || size < PG_SERIES_HEADER
        || set->magic != PG_SERIES_MAGIC || set->layout != PG_SERIES_LAYOUT
        || set->size != size || set->capacity != pg_series_capacity(size))
    {
        return NULL;
    }

    return set;
}


/*
 * Every call that changes the set marks it busy while it does.  A process
 * killed inside one (nginx unlocks the zone's mutex of a dead worker)
 * leaves the mark, and links half changed: the next caller empties the set
 * (its series are new again, some are announced twice) rather than walk
 * them.  Counters stay; repairs counts it.
 */

static void
pg_series_enter(pg_series_set_t *set)
{
    if (set->busy) {
        set->count = 0;
        set->npending = 0;
        set->used = 0;
        set->free = PG_SERIES_NIL;
        set->newest = PG_SERIES_NIL;
        set->oldest = PG_SERIES_NIL;
        set->repairs++;

        memset(pg_series_buckets(set), 0xff, ((size_t) set->mask + 1) * 4);
    }

    set->busy = 1;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}


static void
pg_series_leave(pg_series_set_t *set)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    set->busy = 0;
}


void
pg_series_configure(pg_series_set_t *set, uint32_t ttl, uint32_t pending)
{
    pg_series_enter(set);
    set->ttl = ttl;
    set->pending = pending;
    pg_series_leave(set);
}


static uint32_t
pg_series_clock(pg_series_set_t *set, uint64_t now)
{
    if (now <= set->epoch) {
        return 0;
    }

    now -= set->epoch;

    return now > 0xf0000000u ? 0xf0000000u : (uint32_t) now;
}


static uint32_t
pg_series_bucket(pg_series_set_t *set, uint64_t tenant, uint64_t hash)
{
    uint64_t  x;

    /* murmur3's finalizer over the keyed identity */

    x = hash ^ (tenant * 0x9e3779b97f4a7c15ull) ^ set->seed;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;

    return (uint32_t) x & set->mask;
}


static uint32_t
pg_series_find(pg_series_set_t *set, uint64_t tenant, uint64_t hash)
{
    uint32_t            i;
    pg_series_entry_t  *e;

    e = pg_series_entries(set);

    for (i = pg_series_buckets(set)[pg_series_bucket(set, tenant, hash)];
         i != PG_SERIES_NIL;
         i = e[i].next)
    {
        if (e[i].hash == hash && e[i].tenant == tenant) {
            return i;
        }
    }

    return PG_SERIES_NIL;
}


/* an offer lapses after its pending time; a seen series after ttl */

static int
pg_series_expired(pg_series_set_t *set, pg_series_entry_t *e, uint32_t now)
{
    if (e->token) {
        return now > e->stamp || e->stamp - now > set->pending;
    }

    return now > e->stamp && now - e->stamp > set->ttl;
}


static void
pg_series_lru_unlink(pg_series_set_t *set, uint32_t i)
{
    pg_series_entry_t  *e;

    e = pg_series_entries(set);

    if (e[i].newer != PG_SERIES_NIL) {
        e[e[i].newer].older = e[i].older;
    } else {
        set->newest = e[i].older;
    }

    if (e[i].older != PG_SERIES_NIL) {
        e[e[i].older].newer = e[i].newer;
    } else {
        set->oldest = e[i].newer;
    }
}


static void
pg_series_lru_push(pg_series_set_t *set, uint32_t i)
{
    pg_series_entry_t  *e;

    e = pg_series_entries(set);

    e[i].newer = PG_SERIES_NIL;
    e[i].older = set->newest;

    if (set->newest != PG_SERIES_NIL) {
        e[set->newest].newer = i;
    } else {
        set->oldest = i;
    }

    set->newest = i;
}


/*
 * A seen series was seen again: its ttl restarts and it becomes the most
 * recently seen.  Within one second it is moved only once (stamps count
 * seconds), so most lookups only read.
 */

static void
pg_series_touch(pg_series_set_t *set, uint32_t i, uint32_t now)
{
    pg_series_entry_t  *e;

    e = &pg_series_entries(set)[i];

    if (e->stamp == now || set->newest == i) {
        e->stamp = now;
        return;
    }

    e->stamp = now;

    pg_series_lru_unlink(set, i);
    pg_series_lru_push(set, i);
}


/* takes an entry out of its chain and the LRU list */

static void
pg_series_unlink(pg_series_set_t *set, uint32_t i)
{
    uint32_t           *link;
    pg_series_entry_t  *e;

    e = pg_series_entries(set);

    link = &pg_series_buckets(set)[pg_series_bucket(set, e[i].tenant,
                                                     e[i].hash)];

    while (*link != i) {
        link = &e[*link].next;
    }

    *link = e[i].next;

    pg_series_lru_unlink(set, i);

    set->count--;

    if (e[i].token) {
        set->npending--;
    }
}


static void
pg_series_release(pg_series_set_t *set, uint32_t i)
{
    pg_series_entry_t  *e;

    pg_series_unlink(set, i);

    e = pg_series_entries(set);
    e[i].next = set->free;
    e[i].token = 0;
    set->free = i;
}


/* an entry for a new series: a free one, or the least recently seen */

static uint32_t
pg_series_alloc(pg_series_set_t *set, uint32_t now)
{
    int                 n;
    uint32_t            i;
    pg_series_entry_t  *e;

    e = pg_series_entries(set);

    /* like nginx's limit_req: reclaim a couple of lapsed entries per insert */

    for (n = 0; n < 2 && set->oldest != PG_SERIES_NIL; n++) {
        i = set->oldest;

        if (!pg_series_expired(set, &e[i], now)) {
            break;
        }

        set->expired++;
        pg_series_release(set, i);
    }

    if (set->free != PG_SERIES_NIL) {
        i = set->free;
        set->free = e[i].next;
        return i;
    }

    if (set->used < set->capacity) {
        return set->used++;
    }

    /* full: the least recently seen goes, the zone never refuses */

    i = set->oldest;

    if (pg_series_expired(set, &e[i], now)) {
        set->expired++;

    } else {
        set->evictions++;
    }

    pg_series_unlink(set, i);

    return i;
}


static uint32_t
pg_series_next_token(pg_series_set_t *set)
{
    if (++set->token == 0) {
        set->token = 1;
    }

    return set->token;
}


#if defined(__GNUC__)
#define pg_series_prefetch(p)  __builtin_prefetch(p)
#else
#define pg_series_prefetch(p)
#endif


static pg_series_state_e
pg_series_check_found(pg_series_set_t *set, const pg_series_id_t *id,
    uint32_t i, uint32_t t)
{
    pg_series_entry_t  *e;

    if (i == PG_SERIES_NIL) {
        return PG_SERIES_NEW;
    }

    e = &pg_series_entries(set)[i];

    if (pg_series_expired(set, e, t)) {
        return PG_SERIES_NEW;
    }

    if (e->check != id->check) {
        /* the identity (tenant, hash) is taken by other labels */
        set->collisions++;
    }

    if (e->token) {
        return PG_SERIES_PENDING;
    }

    pg_series_touch(set, i, t);

    return PG_SERIES_SEEN;
}


static pg_series_state_e
pg_series_check_in(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now)
{
    return pg_series_check_found(set, id,
                                 pg_series_find(set, tenant, id->hash),
                                 pg_series_clock(set, now));
}


/*
 * Lookups in a large set are cache misses (a bucket, then an entry): for
 * a batch, the buckets are fetched first, then the entries they point to,
 * then every lookup runs on memory already on its way.
 */

static void
pg_series_check_batch_in(pg_series_set_t *set, uint64_t tenant,
    const uint64_t *tenants, const pg_series_id_t *ids, size_t n,
    uint64_t now, uint8_t *states)
{
    size_t              k, j;
    uint32_t            t, i, *buckets;
    uint32_t            slot[PG_SERIES_BATCH];
    uint64_t            tn[PG_SERIES_BATCH];
    pg_series_entry_t  *e;

    buckets = pg_series_buckets(set);
    e = pg_series_entries(set);
    t = pg_series_clock(set, now);

    for (k = 0; k < n; k += PG_SERIES_BATCH) {

        for (j = 0; j < PG_SERIES_BATCH && k + j < n; j++) {
            tn[j] = tenants ? tenants[k + j] : tenant;
            slot[j] = pg_series_bucket(set, tn[j], ids[k + j].hash);
            pg_series_prefetch(&buckets[slot[j]]);
        }

        for (j = 0; j < PG_SERIES_BATCH && k + j < n; j++) {
            slot[j] = buckets[slot[j]];

            if (slot[j] != PG_SERIES_NIL) {
                pg_series_prefetch(&e[slot[j]]);
            }
        }

        for (j = 0; j < PG_SERIES_BATCH && k + j < n; j++) {
            for (i = slot[j]; i != PG_SERIES_NIL; i = e[i].next) {
                if (e[i].hash == ids[k + j].hash && e[i].tenant == tn[j]) {
                    break;
                }
            }

            states[k + j] = (uint8_t) pg_series_check_found(set, &ids[k + j],
                                                            i, t);
        }
    }
}


static uint32_t
pg_series_offer_in(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now)
{
    uint32_t            i, b, t;
    pg_series_entry_t  *e;

    t = pg_series_clock(set, now);
    i = pg_series_find(set, tenant, id->hash);

    if (i != PG_SERIES_NIL) {
        e = &pg_series_entries(set)[i];

        if (!pg_series_expired(set, e, t)) {
            if (e->check != id->check) {
                set->collisions++;
            }

            if (e->token == 0) {
                pg_series_touch(set, i, t);
            }

            return 0;
        }

        /* seen too long ago, or an offer nobody confirmed: again */

        set->expired++;

        if (e->token == 0) {
            set->npending++;
        }

        pg_series_lru_unlink(set, i);

    } else {
        i = pg_series_alloc(set, t);
        e = &pg_series_entries(set)[i];

        e->hash = id->hash;
        e->tenant = tenant;

        b = pg_series_bucket(set, tenant, id->hash);
        e->next = pg_series_buckets(set)[b];
        pg_series_buckets(set)[b] = i;

        set->count++;
        set->npending++;
    }

    e->check = id->check;
    e->token = pg_series_next_token(set);
    e->stamp = t + set->pending;

    pg_series_lru_push(set, i);

    set->offered++;

    return e->token;
}


static int
pg_series_confirm_in(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, uint64_t now)
{
    uint32_t            i;
    pg_series_entry_t  *e;

    set->published++;

    i = pg_series_find(set, tenant, hash);

    if (i == PG_SERIES_NIL || token == 0) {
        return 0;
    }

    e = &pg_series_entries(set)[i];

    if (e->token != token) {
        return 0;
    }

    e->token = 0;
    e->stamp = pg_series_clock(set, now);
    set->npending--;

    pg_series_lru_unlink(set, i);
    pg_series_lru_push(set, i);

    return 1;
}


static int
pg_series_drop_in(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, pg_series_drop_e why)
{
    uint32_t  i;

    if (why == PG_SERIES_OVERFLOW) {
        set->overflow++;

    } else {
        set->failed++;
    }

    i = pg_series_find(set, tenant, hash);

    if (i == PG_SERIES_NIL || token == 0
        || pg_series_entries(set)[i].token != token)
    {
        return 0;
    }

    pg_series_release(set, i);

    return 1;
}


/* the calls that change the set, each marked busy while it does */


pg_series_state_e
pg_series_check(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now)
{
    pg_series_state_e  rc;

    pg_series_enter(set);
    rc = pg_series_check_in(set, tenant, id, now);
    pg_series_leave(set);

    return rc;
}


void
pg_series_check_batch(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *ids, size_t n, uint64_t now, uint8_t *states)
{
    pg_series_enter(set);
    pg_series_check_batch_in(set, tenant, NULL, ids, n, now, states);
    pg_series_leave(set);
}


void
pg_series_check_batch_tenants(pg_series_set_t *set, const uint64_t *tenants,
    const pg_series_id_t *ids, size_t n, uint64_t now, uint8_t *states)
{
    pg_series_enter(set);
    pg_series_check_batch_in(set, 0, tenants, ids, n, now, states);
    pg_series_leave(set);
}


uint32_t
pg_series_offer(pg_series_set_t *set, uint64_t tenant,
    const pg_series_id_t *id, uint64_t now)
{
    uint32_t  rc;

    pg_series_enter(set);
    rc = pg_series_offer_in(set, tenant, id, now);
    pg_series_leave(set);

    return rc;
}


int
pg_series_confirm(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, uint64_t now)
{
    int  rc;

    pg_series_enter(set);
    rc = pg_series_confirm_in(set, tenant, hash, token, now);
    pg_series_leave(set);

    return rc;
}


int
pg_series_drop(pg_series_set_t *set, uint64_t tenant, uint64_t hash,
    uint32_t token, pg_series_drop_e why)
{
    int  rc;

    pg_series_enter(set);
    rc = pg_series_drop_in(set, tenant, hash, token, why);
    pg_series_leave(set);

    return rc;
}


void
pg_series_stats(const pg_series_set_t *set, pg_series_stats_t *st)
{
    st->entries = set->count;
    st->capacity = set->capacity;
    st->pending = set->npending;
    st->offered = set->offered;
    st->published = set->published;
    st->failed = set->failed;
    st->overflow = set->overflow;
    st->evictions = set->evictions;
    st->expired = set->expired;
    st->collisions = set->collisions;
    st->repairs = set->repairs;
    st->ttl = set->ttl;
    st->pending_time = set->pending;
}


int
pg_series_verify(const pg_series_set_t *set)
{
    uint32_t                  b, i, n, chained, listed, pending, prev;
    const uint32_t           *buckets;
    const pg_series_entry_t  *e;

    buckets = (const uint32_t *) ((const uint8_t *) set + set->buckets);
    e = (const pg_series_entry_t *) ((const uint8_t *) set + set->entries);

    chained = 0;
    pending = 0;

    for (b = 0; b <= set->mask; b++) {
        for (i = buckets[b], n = 0; i != PG_SERIES_NIL; i = e[i].next) {
            if (i >= set->used || ++n > set->capacity) {
                return -1;
            }

            chained++;
            pending += (e[i].token != 0);
        }
    }

    listed = 0;
    prev = PG_SERIES_NIL;

    for (i = set->newest; i != PG_SERIES_NIL; i = e[i].older) {
        if (i >= set->used || ++listed > set->capacity
            || e[i].newer != prev)
        {
            return -1;
        }

        prev = i;
    }

    if (prev != set->oldest || chained != set->count
        || listed != set->count || pending != set->npending)
    {
        return -1;
    }

    return 0;
}


/* ------------------------------------------------------------- message */


static const char  pg_series_hex[] = "0123456789abcdef";


void
pg_series_key(uint64_t hash, uint8_t *out)
{
    int  i;

    for (i = PG_SERIES_KEY_LEN - 1; i >= 0; i--) {
        out[i] = pg_series_hex[hash & 0xf];
        hash >>= 4;
    }
}


static const pg_str_t  pg_series_name_label = pg_str_lit("__name__");


/* a label value as the text format quotes it: \\, \" and \n escaped */

static void
pg_series_quote(pg_json_buf_t *b, pg_str_t v)
{
    size_t          i, start;
    const uint8_t  *p;

    p = v.data;
    start = 0;

    pg_json_literal(b, "\"");

    for (i = 0; i < v.len; i++) {
        if (p[i] != '\\' && p[i] != '"' && p[i] != '\n') {
            continue;
        }

        pg_json_raw(b, p + start, i - start);
        pg_json_raw(b, p[i] == '\\' ? "\\\\" : p[i] == '"' ? "\\\"" : "\\n",
                    2);
        start = i + 1;
    }

    pg_json_raw(b, p + start, v.len - start);
    pg_json_literal(b, "\"");
}


void
pg_series_json(pg_json_buf_t *b, const pg_label_t *labels, size_t n,
    pg_str_t tenant, int64_t first_seen_ms)
{
    int             first;
    size_t          i, len;
    uint8_t         num[24], *p;
    uint64_t        v;
    pg_str_t        name;
    pg_json_buf_t   m;

    name.data = (const uint8_t *) "";
    name.len = 0;

    for (i = 0; i < n; i++) {
        if (pg_str_eq(labels[i].name, pg_series_name_label)) {
            name = labels[i].value;
            break;
        }
    }

    /* the series as Prometheus prints it, then quoted as a JSON string */

    pg_json_init(&m, b->alloc);
    pg_json_raw(&m, name.data, name.len);

    first = 1;

    for (i = 0; i < n; i++) {
        if (pg_str_eq(labels[i].name, pg_series_name_label)) {
            continue;
        }

        pg_json_raw(&m, first ? "{" : ",", 1);
        pg_json_raw(&m, labels[i].name.data, labels[i].name.len);
        pg_json_literal(&m, "=");
        pg_series_quote(&m, labels[i].value);
        first = 0;
    }

    if (!first) {
        pg_json_literal(&m, "}");

    } else if (name.len == 0) {
        pg_json_literal(&m, "{}");
    }

    if (m.failed) {
        b->failed = 1;
        return;
    }

    pg_json_literal(b, "{\"metric\":");
    pg_json_string(b, m.data, m.len);
    pg_json_literal(b, ",\"name\":");
    pg_json_string(b, name.data, name.len);
    pg_json_literal(b, ",\"labels\":{");

    first = 1;

    for (i = 0; i < n; i++) {
        if (pg_str_eq(labels[i].name, pg_series_name_label)) {
            continue;
        }

        if (!first) {
            pg_json_literal(b, ",");
        }

        pg_json_string(b, labels[i].name.data, labels[i].name.len);
        pg_json_literal(b, ":");
        pg_json_string(b, labels[i].value.data, labels[i].value.len);
        first = 0;
    }

    pg_json_literal(b, "},\"tenant\":");
    pg_json_string(b, tenant.data, tenant.len);
    pg_json_literal(b, ",\"first_seen\":");

    p = num + sizeof(num);
    v = first_seen_ms < 0 ? (uint64_t) 0 - (uint64_t) first_seen_ms
                          : (uint64_t) first_seen_ms;

    do {
        *--p = (uint8_t) ('0' + v % 10);
        v /= 10;
    } while (v);

    if (first_seen_ms < 0) {
        *--p = '-';
    }

    len = num + sizeof(num) - p;
    pg_json_raw(b, p, len);
    pg_json_literal(b, "}");
}
