/*
 * The exemplar queries of bench/exemplar_bench.py over src/core alone (no
 * nginx, no HTTP): a pg_exring in plain memory holding the same 100000
 * exemplars that script writes (5000 series of one histogram-like family,
 * 20 exemplars each, trace_id and span_id), and its three queries run the
 * way ngx_http_promgate_exemplar.c runs them: the query string parsed
 * (pg_parse_query_params), the selectors (pg_promql_selectors), the scan in
 * steps of 8 series with the series found and their exemplars copied out
 * (pg_exring_query_collect_sig, series skipped by their label signature),
 * the hits sorted by labels.Compare and written
 * (pg_exring_hit_json) inside the envelope in 64 KB buffers filled to
 * 48 KB.  What the glue adds around that (the clock between steps, the
 * lock, the pool, sending) is not in it.
 *
 *   exemplar_query_bench [-t NOW_MS] [-n ITER] [-r REPEAT] [-q QUERY]
 *                        [-Q PROMQL] [-o DIR]
 *
 * Prints the CPU time per query (best of REPEAT passes of ITER queries)
 * and the answer's size for each query (or only query number QUERY, 0-2;
 * -Q replaces that one with another expression, over the same ring).
 * -o DIR writes each answer to DIR/promgate.N.json: with -t the "now" of
 * an exemplar_bench.py run (the first timestamp of query 2's answer minus
 * 42 ms), they compare byte for byte with what Prometheus answered there.
 *
 * Instructions of one query alone:
 *
 *   valgrind --tool=callgrind --collect-atstart=no \
 *       --toggle-collect=bench_pass exemplar_query_bench -n 1 -r 1 -q 1
 *
 * Build (from the repository's root, after make has generated
 * build/proto):
 *
 *   P="libprotobuf-c snappy rdkafka libpcre2-8 libxxhash"
 *   mkdir -p build/bench
 *   cc -std=gnu99 -O2 -g -Isrc/core -Ibuild/proto $(pkg-config --cflags $P) \
 *       -o build/bench/exemplar_query_bench bench/exemplar_query_bench.c \
 *       $(ls src/core/[a-z]*.c build/proto/[a-z]*.pb-c.c) \
 *       $(pkg-config --libs $P) -lm
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

#include "pg_exemplar.h"
#include "pg_matcher.h"
#include "pg_promql.h"
#include "pg_time.h"


#define NSERIES     5000
#define PER_SERIES  20
#define MAX         (NSERIES * PER_SERIES)


static const char  *queries[] = {
    "http_request_duration_seconds_bucket{job=\"api-3\",le=\"5\"}",
    "histogram_quantile(0.99, sum by (le) (rate("
    "http_request_duration_seconds_bucket{job=~\"api-[12]\"}[5m])))",
    "http_request_duration_seconds_bucket{path=\"/p/42\"}",
};

#define NQUERIES  (sizeof(queries) / sizeof(queries[0]))


/* a bump allocator that never frees, emptied between queries */

typedef struct {
    uint8_t  *base;
    size_t    used;
    size_t    size;
} arena_t;


static void *
arena_alloc(void *data, size_t size)
{
    arena_t  *a = data;
    void     *p;

    size = (size + 15) & ~(size_t) 15;

    if (a->used + size > a->size) {
        return NULL;
    }

    p = a->base + a->used;
    a->used += size;

    return p;
}


typedef struct {
    pg_exring_hit_t  **hits;
    size_t             nhits;
    size_t             cap;
    pg_allocator_t    *alloc;
} hits_t;


static arena_t          arena;
static pg_allocator_t   alloc = { arena_alloc, &arena };
static pg_exring_t     *ring;
static char             args[NQUERIES][16384];
static size_t           out_len[NQUERIES];
static uint8_t         *out_data;           /* -o: the whole answer */
static size_t           out_cap;
static uint8_t          chunk[2][65536];    /* the glue's buffers */


static void
fail(const char *what)
{
    fprintf(stderr, "exemplar_query_bench: %s\n", what);
    exit(1);
}


/* as the glue's ngx_http_promgate_query_hit(): the copy kept */

static int
query_hit(void *data, pg_exring_hit_t *hit)
{
    hits_t            *h = data;
    pg_exring_hit_t  **nh;

    if (h->nhits == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        nh = h->alloc->alloc(h->alloc->ctx,
                             h->cap * sizeof(pg_exring_hit_t *));
        if (nh == NULL) {
            return 0;
        }

        if (h->nhits) {
            memcpy(nh, h->hits, h->nhits * sizeof(pg_exring_hit_t *));
        }

        h->hits = nh;
    }

    h->hits[h->nhits++] = hit;

    return 1;
}


static int
query_match(void *ctx, const pg_label_t *labels, size_t n)
{
    return pg_selector_set_match(ctx, labels, n);
}


static int
hit_cmp(const void *a, const void *b)
{
    return pg_exring_hit_compare(*(pg_exring_hit_t * const *) a,
                                 *(pg_exring_hit_t * const *) b);
}


/* a buffer of the answer "sent": kept for -o */

static void
query_send(int q, const uint8_t *p, size_t n)
{
    out_len[q] += n;

    if (!out_cap) {
        return;
    }

    if (out_len[q] > out_cap) {
        fail("answer larger than -o's buffer");
    }

    memcpy(out_data + out_len[q] - n, p, n);
}


/* one query, as ngx_http_promgate_query() and its slices run it */

static void
query_run(int q)
{
    int                  rc, k;
    char                 err[512];
    size_t               i, series;
    uint32_t             pos;
    uint64_t             need;
    hits_t               h;
    pg_str_t             tenant = { NULL, 0 };
    pg_json_buf_t        out;
    pg_query_params_t    qp;
    pg_selector_set_t    set;
    pg_promql_error_t    perr;
    pg_exring_hit_pos_t  hp;

    if (pg_parse_query_params((const uint8_t *) args[q], strlen(args[q]),
                              NULL, 0, &alloc, &qp, err, sizeof(err))
        != PG_TIME_OK)
    {
        fail(err);
    }

    if (pg_promql_selectors(qp.query.data, qp.query.len, &alloc, &set,
                            &perr)
        != PG_PROMQL_OK || set.nselectors == 0)
    {
        fail("selectors");
    }

    /* the scan in steps of 8 series, the series found copied out */

    memset(&h, 0, sizeof(hits_t));
    h.alloc = &alloc;
    pos = 0;

    need = pg_exring_selectors_sig(ring, &set);

    do {
        rc = pg_exring_query_collect_sig(ring, tenant, need, query_match,
                                         &set, qp.start_ms, qp.end_ms, &pos,
                                         8, query_hit, &h, &alloc, &alloc);
    } while (rc == 0);

    if (rc < 0) {
        fail("scan");
    }

    if (h.nhits > 1) {
        qsort(h.hits, h.nhits, sizeof(pg_exring_hit_t *), hit_cmp);
    }

    /* the answer in 64 KB buffers filled to 48 KB, as the glue sends it */

    out_len[q] = 0;
    k = 0;
    series = 0;
    i = 0;
    memset(&hp, 0, sizeof(hp));

    pg_json_init(&out, alloc);
    out.data = chunk[k];
    out.cap = sizeof(chunk[k]);
    pg_json_literal(&out, "{\"status\":\"success\",\"data\":[");

    for ( ;; ) {
        while (i < h.nhits) {
            if (hp.piece == 0 && i + 1 < h.nhits
                && pg_exring_labels_compare(h.hits[i]->labels,
                                            h.hits[i]->nlabels,
                                            h.hits[i + 1]->labels,
                                            h.hits[i + 1]->nlabels) == 0)
            {
                i++;
                continue;
            }

            rc = pg_exring_hit_json(h.hits[i], series == 0, &hp,
                                    out.cap - 16384, &out);
            if (rc < 0) {
                fail("out of memory");
            }

            if (rc == 0) {
                break;
            }

            series++;
            i++;
            memset(&hp, 0, sizeof(hp));
        }

        if (i == h.nhits) {
            pg_json_literal(&out, "]}");
        }

        if (out.failed) {
            fail("out of memory");
        }

        query_send(q, out.data, out.len);

        if (i == h.nhits) {
            break;
        }

        k ^= 1;
        out.data = chunk[k];
        out.cap = sizeof(chunk[k]);
        out.len = 0;
    }
}


/* not inlined: callgrind's --toggle-collect names it */
__attribute__((noinline)) void bench_pass(int q, int iter);


void
bench_pass(int q, int iter)
{
    int  k;

    for (k = 0; k < iter; k++) {
        arena.used = 0;
        query_run(q);
    }
}


static double
cpu_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* Python's repr() of ms / 1000.0, as requests puts it in the URL */

static void
py_seconds(char *buf, size_t size, int64_t ms)
{
    int   n;

    n = snprintf(buf, size, "%lld.%03d", (long long) (ms / 1000),
                 (int) (ms % 1000));

    while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.') {
        buf[--n] = '\0';
    }
}


/* application/x-www-form-urlencoded, as requests encodes params */

static size_t
url_encode(char *out, const char *s)
{
    char         *p;
    const char   *safe = "-_.~";

    static const char  hex[] = "0123456789ABCDEF";

    for (p = out; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
            || (*s >= '0' && *s <= '9') || strchr(safe, *s))
        {
            *p++ = *s;

        } else if (*s == ' ') {
            *p++ = '+';

        } else {
            *p++ = '%';
            *p++ = hex[(uint8_t) *s >> 4];
            *p++ = hex[*s & 0xf];
        }
    }

    *p = '\0';

    return p - out;
}


/* the stream of exemplar_bench.py: per round k, every series once */

static void
fill(int64_t now)
{
    int             k, s, i;
    char            v[NSERIES][5][48], trace[40], span[24];
    size_t          size;
    void           *base;
    pg_label_t      series[5], ex[2];
    pg_exring_rc_e  rc;

    static const char  *names[5] = {
        "__name__", "instance", "job", "le", "path"
    };

    /* the module gives the ring what the 64m zone has left: about this */
    size = 60 * 1024 * 1024;

    if (posix_memalign(&base, 64, size) != 0) {
        fail("no memory for the ring");
    }

    ring = pg_exring_init_seed(base, size, MAX, 0x9e3779b97f4a7c15ULL);
    if (ring == NULL) {
        fail("pg_exring_init");
    }

    for (s = 0; s < NSERIES; s++) {
        snprintf(v[s][0], 48, "http_request_duration_seconds_bucket");
        snprintf(v[s][1], 48, "host-%03d:9100", s % 100);
        snprintf(v[s][2], 48, "api-%d", s % 10);
        snprintf(v[s][3], 48, "%d", s % 17);
        snprintf(v[s][4], 48, "/p/%d", s);
    }

    for (k = 0; k < PER_SERIES; k++) {
        for (s = 0; s < NSERIES; s++) {
            for (i = 0; i < 5; i++) {
                series[i].name.data = (const uint8_t *) names[i];
                series[i].name.len = strlen(names[i]);
                series[i].value.data = (const uint8_t *) v[s][i];
                series[i].value.len = strlen(v[s][i]);
            }

            snprintf(trace, sizeof(trace), "%032llx",
                     (unsigned long long) s * 1000003 + k);
            snprintf(span, sizeof(span), "%016llx",
                     (unsigned long long) (s + k));

            /* in the order the sender puts them */
            ex[0].name.data = (const uint8_t *) "trace_id";
            ex[0].name.len = 8;
            ex[0].value.data = (const uint8_t *) trace;
            ex[0].value.len = 32;
            ex[1].name.data = (const uint8_t *) "span_id";
            ex[1].name.len = 7;
            ex[1].value.data = (const uint8_t *) span;
            ex[1].value.len = 16;

            rc = pg_exring_insert(ring, (pg_str_t) { NULL, 0 }, series, 5,
                                  ex, 2, k * 0.001,
                                  now + k * 1000 + s % 1000, NULL);
            if (rc != PG_EXRING_ADDED) {
                fail(pg_exring_rc_name(rc));
            }
        }
    }
}


int
main(int argc, char **argv)
{
    int       c, iter, repeat, only, q, r;
    char      start[40], end[40], path[4096], *dir;
    const char  *expr;
    FILE     *f;
    double    t0, t, best;
    int64_t   now;
    size_t    n;

    now = 1700000000123LL;
    iter = 50;
    repeat = 3;
    only = -1;
    dir = NULL;
    expr = NULL;

    while ((c = getopt(argc, argv, "t:n:r:q:Q:o:")) != -1) {
        switch (c) {
        case 't':
            now = strtoll(optarg, NULL, 10);
            break;
        case 'n':
            iter = atoi(optarg);
            break;
        case 'r':
            repeat = atoi(optarg);
            break;
        case 'q':
            only = atoi(optarg);
            break;
        case 'o':
            dir = optarg;
            break;
        case 'Q':
            expr = optarg;
            break;
        default:
            fprintf(stderr, "usage: exemplar_query_bench [-t NOW_MS] "
                    "[-n ITER] [-r REPEAT] [-q QUERY] [-o DIR]\n");
            return 2;
        }
    }

    if (iter < 1 || repeat < 1 || only >= (int) NQUERIES
        || (expr && only < 0) || (expr && strlen(expr) > 5000))
    {
        fail("bad arguments (-Q needs -q, and at most 5000 bytes)");
    }

    if (expr) {
        queries[only] = expr;
    }

    arena.size = 256 * 1024 * 1024;
    arena.base = malloc(arena.size);
    if (arena.base == NULL) {
        fail("no memory for the arena");
    }

    fill(now);

    /* the time range of exemplar_bench.py */
    py_seconds(start, sizeof(start), now - 60000);
    py_seconds(end, sizeof(end), now + PER_SERIES * 1000 + 60000);

    for (q = 0; q < (int) NQUERIES; q++) {
        n = (size_t) snprintf(args[q], sizeof(args[q]), "query=");
        n += url_encode(args[q] + n, queries[q]);
        snprintf(args[q] + n, sizeof(args[q]) - n, "&start=%s&end=%s",
                 start, end);
    }

    if (dir) {
        out_cap = 64 * 1024 * 1024;
        out_data = malloc(out_cap);
        if (out_data == NULL) {
            fail("no memory for -o");
        }
    }

    for (q = 0; q < (int) NQUERIES; q++) {
        if (only >= 0 && q != only) {
            continue;
        }

        best = 1e9;

        for (r = 0; r < repeat; r++) {
            t0 = cpu_now();
            bench_pass(q, iter);
            t = (cpu_now() - t0) / iter;

            if (t < best) {
                best = t;
            }
        }

        printf("query %d: %.3f ms/query, %zu bytes  %s\n", q, best * 1e3,
               out_len[q], queries[q]);

        if (dir) {
            snprintf(path, sizeof(path), "%s/promgate.%d.json", dir, q);

            f = fopen(path, "w");
            if (f == NULL || fwrite(out_data, 1, out_len[q], f)
                             != out_len[q] || fclose(f) != 0)
            {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return 1;
            }
        }
    }

    return 0;
}
