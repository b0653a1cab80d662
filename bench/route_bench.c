/*
 * What per-target routing costs in src/core, on the benchmark bodies
 * (remote write 1.0, as bench/gen_bodies.py writes them): CPU time per
 * sample, one core, best of REPEAT passes, of what the write location
 * does between the snappy-decoded body and the bodies it sends:
 *
 *   none    the validating decode, no router: a location whose targets
 *           have no rules (every target gets the sender's bytes)
 *   drop10  the decode with the router as its series callback (one target
 *           without rules, one with drop={__name__=~"go_.*|process_.*"},
 *           10.4% of the main shape's series), then the dropping target's
 *           subset encoded and snappy-compressed
 *   shard3  the decode with a 3-member shard group (replicas=1) routing,
 *           then three subsets encoded and compressed
 *
 *   route_bench [-n ITER] [-r REPEAT] BODY.bin...
 *
 * -R: the routing alone (decode + router, no subset encoded), to tell
 * the two costs apart.  Build (from the repository, after make unit made
 * build/proto; SRC is src/core, every .c file of it):
 *
 *   cc -O2 -Isrc/core -Ibuild/proto $(pkg-config --cflags libpcre2-8 \
 *       libxxhash) -o build/bench/route_bench bench/route_bench.c \
 *       SRC build/proto/types.pb-c.c build/proto/remote.pb-c.c \
 *       build/proto/write_v2.pb-c.c $(pkg-config --libs libprotobuf-c \
 *       snappy rdkafka libpcre2-8 libxxhash) -lm
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_rw.h"
#include "pg_route.h"
#include "pg_promql.h"


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


static int
buf_grow(pg_buf_t *b, size_t need)
{
    size_t    size, used;
    uint8_t  *p;

    used = b->pos - b->start;
    size = (b->end - b->start) * 2;
    if (size < used + need) {
        size = used + need;
    }
    p = realloc(b->start, size);
    if (p == NULL) {
        return -1;
    }
    b->start = p;
    b->pos = p + used;
    b->end = p + size;
    return 0;
}


static double
cpu_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
route_cb(void *ctx, const pg_rw_series_t *s)
{
    return pg_route_add(ctx, s);
}


enum { R_NONE, R_DROP10, R_SHARD3, R_N };

static const char  *names[R_N] = { "none", "drop10", "shard3" };

static int             n, iter = 20, route_only;
static uint8_t        *dec[64], *cbuf;
static size_t          dlen[64];
static uint64_t        samples;
static arena_t         arena, sel_arena;
static pg_allocator_t  alloc = { arena_alloc, &arena };
static pg_buf_t        out;
static pg_router_t     routers[R_N];
static pg_route_t      routes_drop[2], routes_shard[3];
static pg_route_group_t  group;
static uint64_t        seeds[3];
static uint64_t        chosen[R_N];


static void
fail(const char *what, int i)
{
    fprintf(stderr, "route_bench: %s (body %d)\n", what, i);
    exit(1);
}


static double
pass(int mode)
{
    int               i, k;
    size_t            r, clen;
    double            t0;
    pg_route_state_t  st;
    pg_rw_request_t   req;

    t0 = cpu_now();
    chosen[mode] = 0;

    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            arena.used = 0;

            if (mode == R_NONE) {
                if (pg_rw_decode(dec[i], dlen[i], PG_RW_V1, &alloc, &req,
                                 NULL, NULL) != PG_RW_OK)
                {
                    fail("decode", i);
                }
                continue;
            }

            if (pg_route_init(&st, &routers[mode], &alloc, dlen[i] / 32)
                != 0
                || pg_rw_decode(dec[i], dlen[i], PG_RW_V1, &alloc, &req,
                                route_cb, &st) != PG_RW_OK)
            {
                fail("routed decode", i);
            }

            for (r = 0; !route_only && r < routers[mode].nroutes; r++) {
                if (st.series[r] == req.stats.series || st.series[r] == 0) {
                    continue;           /* the sender's bytes, or nothing */
                }

                chosen[mode] += st.series[r];
                out.pos = out.start;

                if (pg_rw_encode(dec[i], dlen[i], &req, st.select[r],
                                 PG_RW_V1, &alloc, &out) != 0)
                {
                    fail("encode", i);
                }

                clen = pg_snappy_max_encoded(out.pos - out.start);
                if (pg_snappy_encode(out.start, out.pos - out.start, cbuf,
                                     &clen) != PG_SNAPPY_OK)
                {
                    fail("snappy", i);
                }
            }
        }
    }

    return cpu_now() - t0;
}


static const pg_selector_t *
selector(const char *text)
{
    pg_allocator_t     al = { arena_alloc, &sel_arena };
    pg_selector_set_t  set;

    if (pg_promql_selectors((const uint8_t *) text, strlen(text), &al, &set,
                            NULL) != PG_PROMQL_OK || set.nselectors != 1)
    {
        fail("selector", -1);
    }

    return &set.selectors[0];
}


int
main(int argc, char **argv)
{
    int              i, m, r, repeat = 3, first = 1;
    size_t           len, dl, maxd = 0;
    uint8_t         *body;
    FILE            *f;
    double           best, t;
    pg_rw_request_t  req;

    while (first + 1 < argc && argv[first][0] == '-') {
        if (strcmp(argv[first], "-R") == 0) {
            route_only = 1;
            first++;
            continue;
        }
        if (strcmp(argv[first], "-n") == 0) {
            iter = atoi(argv[first + 1]);
        } else if (strcmp(argv[first], "-r") == 0) {
            repeat = atoi(argv[first + 1]);
        } else {
            break;
        }
        first += 2;
    }

    arena.size = 1 << 28;
    arena.base = malloc(arena.size);
    sel_arena.size = 1 << 20;
    sel_arena.base = malloc(sel_arena.size);

    for (i = first; i < argc && n < 64; i++, n++) {
        f = fopen(argv[i], "rb");
        if (f == NULL) {
            fail("cannot open", n);
        }
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        body = malloc(len);
        if (fread(body, 1, len, f) != len) {
            fail("short read", n);
        }
        fclose(f);

        if (pg_snappy_decoded_length(body, len, 1 << 30, &dl) != PG_SNAPPY_OK)
        {
            fail("not snappy", n);
        }
        dec[n] = malloc(dl);
        dlen[n] = dl;
        pg_snappy_decode(body, len, dec[n], dl);
        free(body);
        maxd = dl > maxd ? dl : maxd;

        arena.used = 0;
        if (pg_rw_decode(dec[n], dl, PG_RW_V1, &alloc, &req, NULL, NULL)
            != PG_RW_OK)
        {
            fail("invalid body", n);
        }
        samples += req.stats.samples + req.stats.histograms;
    }

    if (n == 0) {
        fprintf(stderr, "usage: route_bench [-n ITER] [-r REPEAT] "
                "BODY.bin...\n");
        return 2;
    }

    cbuf = malloc(pg_snappy_max_encoded(maxd));
    out.start = malloc(maxd + 1024);
    out.pos = out.start;
    out.end = out.start + maxd + 1024;
    out.grow = buf_grow;

    routes_drop[0].group = -1;
    routes_drop[1].group = -1;
    routes_drop[1].drop = selector("{__name__=~\"go_.*|process_.*\"}");
    routers[R_DROP10].routes = routes_drop;
    routers[R_DROP10].nroutes = 2;

    for (r = 0; r < 3; r++) {
        seeds[r] = pg_route_seed((const uint8_t *) (r == 0 ? "/_rw/a"
                                                    : r == 1 ? "/_rw/b"
                                                    : "/_rw/c"), 6);
        routes_shard[r].group = 0;
        routes_shard[r].member = r;
    }

    group.replicas = 1;
    group.nmembers = 3;
    group.seeds = seeds;
    routers[R_SHARD3].routes = routes_shard;
    routers[R_SHARD3].nroutes = 3;
    routers[R_SHARD3].groups = &group;
    routers[R_SHARD3].ngroups = 1;

    printf("{\"bodies\":%d,\"samples_per_pass\":%llu", n,
           (unsigned long long) (samples * iter));

    for (m = 0; m < R_N; m++) {
        best = 1e30;
        for (i = 0; i < repeat; i++) {
            t = pass(m);
            best = t < best ? t : best;
        }
        printf(",\"%s_us_per_sample\":%.4f", names[m],
               best * 1e6 / (double) (samples * iter));
        if (m != R_NONE) {
            printf(",\"%s_encoded_share\":%.3f", names[m],
                   (double) chosen[m] / (double) (samples * iter));
        }
    }

    printf("}\n");

    return 0;
}
