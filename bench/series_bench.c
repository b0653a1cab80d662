/*
 * The series index's costs, on one core, over src/core alone (no nginx):
 *
 *   1. hashing: Prometheus' labels.Hash plus the collision fingerprint,
 *      per series of the main shape (~13 labels, ~330 bytes);
 *   2. lookups per second on a zone holding 1M series (hits and misses),
 *      with a lock/unlock around each as the nginx glue takes the zone's
 *      ngx_shmtx (lock cmpxchg both ways, uncontended here);
 *   3. bytes per tracked series;
 *   4. the index's cost per sample on the main remote-write shape with 1%
 *      new series: the churn bodies of bench/gen_bodies.py (2000 series x
 *      1 sample, 20 of them new in every request), scanned as the write
 *      path scans them with and without the index's per-series work, plus
 *      the 2xx part (offer, key and JSON of each new series, the delivery
 *      report).  Producing to Kafka (librdkafka) is not in it.
 *
 * Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that other
 * work on a shared machine is not counted; it still disturbs the caches.
 *
 *   mkdir -p build/bench
 *   cc -O2 -Isrc/core -Ibuild/proto bench/series_bench.c src/core/pg_*.c \
 *       build/proto/types.pb-c.c build/proto/remote.pb-c.c \
 *       $(pkg-config --cflags --libs libprotobuf-c snappy rdkafka \
 *         libpcre2-8 libxxhash) -lm -o build/bench/series_bench
 *   /usr/bin/python3 bench/gen_bodies.py       (the churn bodies, once)
 *   build/bench/series_bench build/bench/churn-*.bin
 *
 *   -n SERIES: the zone's size in series (default 1000000)
 */

#define _GNU_SOURCE

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_series.h"


#define NOW  1700000000ull


static volatile long  bench_lock;


static inline void
lock(void)
{
    while (!__sync_bool_compare_and_swap(&bench_lock, 0, 1)) { /* spin */ }
}


static inline void
unlock(void)
{
    (void) __sync_bool_compare_and_swap(&bench_lock, 1, 0);
}


/* CPU time of this thread: a shared machine's other work is not counted */

static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static uint64_t
rnd(uint64_t *s)
{
    /* splitmix64 */
    uint64_t  z;

    z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


/* ----------------------------------------- a main-shape label set */

static const char  *names[] = {
    "__name__", "cluster", "container", "handler", "instance", "job",
    "method", "namespace", "node", "pod", "region", "service",
    "status_code"
};

static const char  *families[] = {
    "http_requests_total", "http_request_duration_seconds_bucket",
    "grpc_server_handled_total", "node_cpu_seconds_total",
    "container_cpu_usage_seconds_total", "go_goroutines"
};


typedef struct {
    pg_label_t  l[13];
    char        buf[13][40];
} lset_t;


static void
make_labels(lset_t *s, uint64_t i)
{
    int       k;
    uint64_t  r;

    r = i * 0x2545f4914f6cdd1dull + 1;

    for (k = 0; k < 13; k++) {
        s->l[k].name.data = (const uint8_t *) names[k];
        s->l[k].name.len = strlen(names[k]);
    }

    snprintf(s->buf[0], 40, "%s", families[i % 6]);
    snprintf(s->buf[1], 40, "prod-eu-west-1-eks-blue-%02u",
             (unsigned) (rnd(&r) % 12));
    snprintf(s->buf[2], 40, "checkout-api-sidecar");
    snprintf(s->buf[3], 40, "/api/v1/orders/{id}");
    snprintf(s->buf[4], 40, "10.%u.%u.%u:9100", (unsigned) (i >> 16 & 255),
             (unsigned) (i >> 8 & 255), (unsigned) (i & 255));
    snprintf(s->buf[5], 40, "kubernetes-service-endpoints");
    snprintf(s->buf[6], 40, "GET");
    snprintf(s->buf[7], 40, "payments-prod");
    snprintf(s->buf[8], 40, "ip-10-%u-%u-%u.ec2.internal",
             (unsigned) (rnd(&r) % 256), (unsigned) (rnd(&r) % 256),
             (unsigned) (i % 251));
    snprintf(s->buf[9], 40, "checkout-api-%010llx-%05u",
             (unsigned long long) (i * 2654435761u & 0xffffffffffull),
             (unsigned) (i % 99991));
    snprintf(s->buf[10], 40, "eu-west-1");
    snprintf(s->buf[11], 40, "checkout-api");
    snprintf(s->buf[12], 40, "%u", (unsigned) (200 + i % 7));

    for (k = 0; k < 13; k++) {
        s->l[k].value.data = (const uint8_t *) s->buf[k];
        s->l[k].value.len = strlen(s->buf[k]);
    }
}


/* ------------------------------------------------ the write path */

typedef struct {
    uint8_t         *mem;
    size_t           used;
    size_t           size;
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t  *a = ctx;
    void     *p;

    size = (size + 15) & ~(size_t) 15;

    if (a->used + size > a->size) {
        return NULL;
    }

    p = a->mem + a->used;
    a->used += size;

    return p;
}


typedef struct {
    pg_series_set_t  *set;
    uint64_t          tenant;
    pg_allocator_t    alloc;
    size_t            nbatch;
    pg_series_id_t    bids[PG_SERIES_BATCH];
    pg_pb_iter_t      bits[PG_SERIES_BATCH];
    size_t            nnew;
    pg_series_id_t    ids[4096];
    pg_label_t       *labels[4096];
    size_t            nlabels[4096];
} write_t;


/* what ngx_http_promgate_series_flush() does per batch */

static void
flush(write_t *w)
{
    size_t   i;
    uint8_t  st[PG_SERIES_BATCH];

    lock();
    pg_series_check_batch(w->set, w->tenant, w->bids, w->nbatch, NOW, st);
    unlock();

    for (i = 0; i < w->nbatch; i++) {
        if (st[i] != PG_SERIES_NEW || w->nnew == 4096) {
            continue;
        }

        w->ids[w->nnew] = w->bids[i];
        w->labels[w->nnew] = pg_series_copy_labels(w->bits[i], &w->alloc,
                                                   &w->nlabels[w->nnew]);
        w->nnew++;
    }

    w->nbatch = 0;
}


/* what ngx_http_promgate_series_collect() does per series */

static int
collect(void *data, const pg_rw_series_t *s)
{
    write_t       *w = data;
    pg_pb_iter_t   it;

    pg_rw_series_labels(s, &it);
    pg_series_hash_iter(it, &w->bids[w->nbatch]);
    w->bits[w->nbatch++] = it;

    if (w->nbatch == PG_SERIES_BATCH) {
        flush(w);
    }

    return 0;
}


/* what ngx_http_promgate_series_publish() and the report do on 2xx */

static size_t
publish(write_t *w)
{
    size_t          i, bytes;
    uint8_t         key[PG_SERIES_KEY_LEN];
    uint32_t        tokens[4096];
    pg_json_buf_t   b;
    pg_str_t        tenant = pg_str_lit("");

    lock();
    for (i = 0; i < w->nnew; i++) {
        tokens[i] = pg_series_offer(w->set, w->tenant, &w->ids[i], NOW);
    }
    unlock();

    bytes = 0;

    for (i = 0; i < w->nnew; i++) {
        if (tokens[i] == 0) {
            continue;
        }

        pg_series_key(w->ids[i].hash, key);
        pg_json_init(&b, w->alloc);
        pg_series_json(&b, w->labels[i], w->nlabels[i], tenant,
                       1700000000000);
        bytes += b.len + key[0] * 0;

        lock();
        (void) pg_series_confirm(w->set, w->tenant, w->ids[i].hash,
                                 tokens[i], NOW);
        unlock();
    }

    return bytes;
}


static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE     *f;
    long      n;
    uint8_t  *p;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    p = malloc(n ? n : 1);
    if (p == NULL || fread(p, 1, n, f) != (size_t) n) {
        fclose(f);
        free(p);
        return NULL;
    }

    fclose(f);
    *len = n;

    return p;
}


#define PH_LEN  16

static const char  ph_alphabet[] = "GHJKLMNPQRSTVWXZ";


static int
is_ph(uint8_t c)
{
    return c && memchr(ph_alphabet, c, 16) != NULL;
}


/* offsets of the 16-character placeholders of a churn body */
static size_t
find_placeholders(const uint8_t *p, size_t len, size_t *off, size_t max)
{
    size_t  i, run, n;

    n = 0;
    run = 0;

    for (i = 0; i < len; i++) {
        if (is_ph(p[i])) {
            run++;
            continue;
        }

        if (run == PH_LEN && n < max) {
            off[n++] = i - PH_LEN;
        }

        run = 0;
    }

    return n;
}


static void
set_placeholder(uint8_t *p, uint64_t v)
{
    int  k;

    for (k = PH_LEN - 1; k >= 0; k--) {
        p[k] = (uint8_t) ph_alphabet[v & 15];
        v >>= 4;
    }
}


int
main(int argc, char **argv)
{
    int                 a, nbodies;
    size_t              i, n, size, len, dlen, nph[64], off[64][64];
    double              t0, t1, th, tl, tlh, tm, ts, ti, tp, tb;
    uint8_t            *region, *raw, *bodies[64];
    size_t              blen[64];
    uint64_t            seed, tenant, rounds, samples, counter, jbytes;
    lset_t             *sets;
    cpu_set_t           cpus;
    pg_rw_request_t     req;
    pg_series_id_t     *ids, id;
    pg_series_set_t    *set;
    pg_series_stats_t   ss;
    write_t            *w;
    arena_t             arena;

    n = 1000000;
    nbodies = 0;

    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "-n") == 0 && a + 1 < argc) {
            n = strtoul(argv[++a], NULL, 10);
            continue;
        }

        if (nbodies == 64) {
            break;
        }

        raw = read_file(argv[a], &len);
        if (raw == NULL
            || pg_snappy_decoded_length(raw, len, 1 << 30, &dlen)
               != PG_SNAPPY_OK)
        {
            fprintf(stderr, "%s: not a snappy body\n", argv[a]);
            return 1;
        }

        bodies[nbodies] = malloc(dlen);
        if (pg_snappy_decode(raw, len, bodies[nbodies], dlen)
            != PG_SNAPPY_OK)
        {
            fprintf(stderr, "%s: bad snappy body\n", argv[a]);
            return 1;
        }

        blen[nbodies] = dlen;
        nph[nbodies] = find_placeholders(bodies[nbodies], dlen,
                                         off[nbodies], 64);
        nbodies++;
        free(raw);
    }

    /* one core: the number is per core */
    CPU_ZERO(&cpus);
    CPU_SET(sched_getcpu(), &cpus);
    (void) sched_setaffinity(0, sizeof(cpus), &cpus);

    /* a zone just large enough for n series */

    for (size = (size_t) n * 40; pg_series_capacity(size) < n;
         size += 1024 * 1024)
    {
        /* void */
    }

    region = malloc(size);
    set = pg_series_init(region, size, NOW, 0x5eed, 7 * 86400, 60);
    tenant = pg_series_tenant_hash((pg_str_t) pg_str_lit(""));

    printf("zone: %zu bytes (%.1f MiB) for %u series: %.1f bytes per "
           "tracked series (goal <= 64; the nginx slab pool adds ~%.1f)\n",
           size, size / 1048576.0, pg_series_capacity(size),
           (double) size / pg_series_capacity(size),
           (double) size / pg_series_capacity(size) / 4096 * 48);

    /* 1. hashing */

    sets = malloc(100000 * sizeof(lset_t));
    for (i = 0; i < 100000; i++) {
        make_labels(&sets[i], i);
    }

    len = 0;
    for (i = 0; i < 13; i++) {
        len += sets[0].l[i].name.len + sets[0].l[i].value.len + 2;
    }

    seed = 0;
    t0 = now_s();
    for (rounds = 0; rounds < 10; rounds++) {
        for (i = 0; i < 100000; i++) {
            pg_series_hash(sets[i].l, 13, &id);
            seed += id.hash;
        }
    }
    th = (now_s() - t0) / 1e6;

    printf("hash (labels.Hash + fingerprint), 13 labels, %zu bytes: "
           "%.1f ns per series (%.2f M/s)\n", len, th * 1e9, 1e-6 / th);

    /* fill the zone with n series */

    ids = malloc(n * sizeof(pg_series_id_t));

    t0 = now_s();
    for (i = 0; i < n; i++) {
        lset_t  s;

        make_labels(&s, i);
        pg_series_hash(s.l, 13, &ids[i]);
        (void) pg_series_confirm(set, tenant, ids[i].hash,
                                 pg_series_offer(set, tenant, &ids[i], NOW),
                                 NOW);
    }
    t1 = now_s();

    pg_series_stats(set, &ss);
    printf("filled: %llu series in %.2f s (make + hash + offer + confirm)\n",
           (unsigned long long) ss.entries, t1 - t0);

    /* 2. lookups: random hits, with the lock, without and with hashing */

    seed = 42;
    t0 = now_s();
    for (i = 0; i < 5000000; i++) {
        id = ids[rnd(&seed) % n];
        lock();
        (void) pg_series_check(set, tenant, &id, NOW);
        unlock();
    }
    tl = (now_s() - t0) / 5e6;

    seed = 42;
    t0 = now_s();
    for (i = 0; i < 2000000; i++) {
        lset_t  *s = &sets[i % 100000];

        pg_series_hash(s->l, 13, &id);
        lock();
        (void) pg_series_check(set, tenant, &id, NOW);
        unlock();
    }
    tlh = (now_s() - t0) / 2e6;

    {
        uint8_t          states[PG_SERIES_BATCH];
        pg_series_id_t   batch[PG_SERIES_BATCH];

        seed = 42;
        t0 = now_s();
        for (i = 0; i < 5000000; i += PG_SERIES_BATCH) {
            for (len = 0; len < PG_SERIES_BATCH; len++) {
                batch[len] = ids[rnd(&seed) % n];
            }
            lock();
            pg_series_check_batch(set, tenant, batch, PG_SERIES_BATCH, NOW,
                                  states);
            unlock();
        }
        tb = (now_s() - t0) / i;
    }

    seed = 7;
    t0 = now_s();
    for (i = 0; i < 5000000; i++) {
        id.hash = rnd(&seed);
        id.check = 1;
        lock();
        (void) pg_series_check(set, tenant, &id, NOW);
        unlock();
    }
    tm = (now_s() - t0) / 5e6;

    printf("lookup (lock + check + unlock), 1M-series zone, random hits: "
           "%.1f ns, %.2f M lookups/s per core\n", tl * 1e9, 1e-6 / tl);
    printf("lookup of a miss: %.1f ns, %.2f M/s per core\n",
           tm * 1e9, 1e-6 / tm);
    printf("lookups in batches of %d (one lock each, memory prefetched), "
           "random hits: %.1f ns, %.2f M lookups/s per core\n",
           PG_SERIES_BATCH, tb * 1e9, 1e-6 / tb);
    printf("hash + lookup (what a series of a write costs): %.1f ns, "
           "%.2f M series/s per core\n", tlh * 1e9, 1e-6 / tlh);

    if (nbodies == 0) {
        printf("(no churn bodies given: skipping the write-path figure; "
               "python3 bench/gen_bodies.py writes build/bench/churn-*.bin)\n");
        return 0;
    }

    /* 4. the write path on churn bodies: 1% of the series new */

    w = calloc(1, sizeof(write_t));
    w->set = set;
    w->tenant = tenant;
    arena.size = 64 * 1024 * 1024;
    arena.mem = malloc(arena.size);
    w->alloc.alloc = arena_alloc;
    w->alloc.ctx = &arena;

    counter = 1;
    rounds = 400;

    /* warm: the bodies' known series enter the zone */
    for (a = 0; a < nbodies; a++) {
        w->nnew = 0;
        arena.used = 0;
        (void) pg_rw_decode(bodies[a], blen[a], PG_RW_V1, &w->alloc, &req,
                            collect, w);
        flush(w);
        (void) publish(w);
    }

    ts = 0;
    ti = 0;
    tp = 0;
    samples = 0;
    jbytes = 0;
    len = 0;

    for (rounds = 0; rounds < 400; rounds++) {
        a = rounds % nbodies;

        for (i = 0; i < nph[a]; i++) {
            set_placeholder(bodies[a] + off[a][i], counter++);
        }

        t0 = now_s();
        (void) pg_rw_decode(bodies[a], blen[a], PG_RW_V1, &w->alloc, &req,
                            NULL, NULL);
        t1 = now_s();
        ts += t1 - t0;

        w->nnew = 0;
        arena.used = 0;

        t0 = now_s();
        (void) pg_rw_decode(bodies[a], blen[a], PG_RW_V1, &w->alloc, &req,
                            collect, w);
        flush(w);
        t1 = now_s();
        jbytes += publish(w);
        ti += t1 - t0;
        tp += now_s() - t1;

        samples += req.stats.samples;
        len += w->nnew;
    }

    printf("main shape with 1%% new (%d churn bodies, %.0f series x 1 "
           "sample, %.1f new per request), %llu requests:\n", nbodies,
           (double) samples / rounds, (double) len / rounds,
           (unsigned long long) rounds);
    printf("  validation scan alone:            %7.1f ns per sample\n",
           ts / samples * 1e9);
    printf("  scan with the index's collector:  %7.1f ns per sample "
           "(index: +%.1f ns per sample)\n", ti / samples * 1e9,
           (ti - ts) / samples * 1e9);
    printf("  2xx: offer + key + JSON + report: %7.1f ns per sample "
           "(%.2f us per new series, %.0f bytes of JSON each)\n",
           tp / samples * 1e9, tp / len * 1e6, (double) jbytes / len);
    printf("  index total:                      %7.1f ns per sample\n",
           (ti - ts + tp) / samples * 1e9);

    pg_series_stats(set, &ss);
    printf("zone after: %llu entries, %llu evictions, %llu offered\n",
           (unsigned long long) ss.entries,
           (unsigned long long) ss.evictions,
           (unsigned long long) ss.offered);

    return 0;
}
