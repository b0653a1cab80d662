/*
 * libFuzzer target: the exemplar ring (src/core/pg_exemplar.c).
 *
 * The input is a program: the ring's size and slot count, then a sequence
 * of operations (inserts from a few tenants and series, with exemplar
 * label sets, values and timestamps drawn so that duplicates, out-of-order
 * exemplars, overlong label sets, evictions and log reclaiming all happen;
 * queries; iterations; re-attaching as a reload does).
 * pg_exring_check() must find every invariant intact every eight
 * operations, after every simulated death, and at the end.
 *
 * Process death: the ring claims that a process dying at any publishing
 * point (pg_exring_barrier) or derived-update point (pg_exring_step) of a
 * call leaves a store the next call repairs.  This file compiles its own
 * copy of pg_exemplar.c with both points redefined so that an insert can
 * "die" there (a longjmp out of the call, the lock being released as the
 * glue's would be), then goes on and checks.
 *
 * Also checked: sequence numbers grow by one per stored exemplar; an
 * immediate re-insert of what was just stored is a duplicate (or out of
 * order for NaN, as in Prometheus); iteration yields the stored count,
 * oldest first, each series' exemplars in time order, labels sorted.
 *
 * FUZZ_FLAGS: -max_len=2048
 */

#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static jmp_buf  fuzz_die_jmp;
static int      fuzz_die_in;        /* points left before dying; 0: never */

static void
fuzz_die_point(void)
{
    if (fuzz_die_in > 0 && --fuzz_die_in == 0) {
        longjmp(fuzz_die_jmp, 1);
    }
}

#define pg_exring_barrier()  fuzz_die_point()
#define pg_exring_step()     fuzz_die_point()

#include "../src/core/pg_exemplar.c"

#include "pg_exemplar.h"
#include "fuzz_check.h"


#define check(cond)  fuzz_check("fuzz_exemplar", cond)


/* ------------------------------------------------------------- input */

typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} fuzz_in_t;


static unsigned
in_byte(fuzz_in_t *in)
{
    return in->p < in->end ? *in->p++ : 0;
}


/* ---------------------------------------------------------- the arena */

#define ARENA_SIZE  (4u << 20)

static uint8_t  *arena;
static size_t    arena_used, arena_cap;

static void *
arena_alloc(void *ctx, size_t size)
{
    void  *p;

    size = (size + 15) & ~(size_t) 15;

    if (size > arena_cap - arena_used) {
        return NULL;
    }

    p = arena + arena_used;
    arena_used += size;

    return p;
}


/* ------------------------------------------------------- label pools */

static const char  *series_names[] = {       /* sorted bytewise */
    "A", "__name__", "instance", "job", "le", "zone"
};

static const char  *series_values[] = {
    "x", "y", "http_requests_total", "Zürich", "0.5", "+Inf", "a:9100", ""
};

static const char  *ex_names[] = {
    "trace_id", "span_id", "a", "zz", "trace_id", "B"
};

static const char  *ex_values[] = {
    "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "", "x",
    "ABCDEF", "abc", "✓✓✓", "0123456789abcdef0123456789abcdef0123456789"
};

static const char  *tenants[] = { "", "a", "tenant-b" };

static char  bigbuf[70000];


/* a value: from a pool, or bytes of the input made valid UTF-8 */
static pg_str_t
pick_value(fuzz_in_t *in, const char **pool, size_t npool, uint8_t *scratch,
    size_t scratch_len)
{
    pg_str_t  s;
    unsigned  b, i, n;

    b = in_byte(in);

    if (b < 224) {
        s.data = (const uint8_t *) pool[b % npool];
        s.len = strlen(pool[b % npool]);
        return s;
    }

    if (b >= 250) {
        /* long runs: label-length limits and log pressure */
        n = (b - 249) * 1000 + in_byte(in) * 40;
        if (b == 255) {
            n = 65000 + in_byte(in) * 4;      /* around the 16-bit limit */
        }
        s.data = (const uint8_t *) bigbuf;
        s.len = n < sizeof(bigbuf) ? n : sizeof(bigbuf);
        return s;
    }

    n = in_byte(in) % scratch_len;
    for (i = 0; i < n; i++) {
        scratch[i] = (uint8_t) in_byte(in);
    }

    if (!pg_utf8_valid(scratch, n)) {       /* remote write checked it */
        for (i = 0; i < n; i++) {
            scratch[i] = 'a' + (scratch[i] % 26);
        }
    }

    s.data = scratch;
    s.len = n;

    return s;
}


/* ----------------------------------------------------------- checks */

static void
ring_check(pg_exring_t *r, uint32_t max)
{
    pg_exring_stats_t  st;
    char               err[256];

    pg_exring_stats(r, &st);              /* repairs a dead call's state */

    if (pg_exring_check(r, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_exemplar: pg_exring_check: %s\n", err);
        abort();
    }

    check(st.exemplars <= st.max && st.max == max);
    check(st.log_used <= st.log_size);
    check(st.label_bytes + st.series_bytes <= st.log_used);
}


#define SERIES_TABLE  2048

typedef struct {
    uint64_t    count;
    uint64_t    last_seq;
    /* newest ts per series seen so far, by a 64-bit hash of its labels */
    uint64_t    key[SERIES_TABLE];
    int64_t     newest[SERIES_TABLE];
} iter_ctx_t;


static uint64_t
fnv(uint64_t h, const uint8_t *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }

    return (h ^ 0xff) * 0x100000001b3ULL;
}


static int
visit(void *data, const pg_exring_item_t *it)
{
    iter_ctx_t  *ctx = data;
    size_t       i;
    uint64_t     h;
    unsigned     k;

    check(it->seq > ctx->last_seq);
    ctx->last_seq = it->seq;
    ctx->count++;

    for (i = 1; i < it->nseries; i++) {
        check(pg_str_cmp(it->series[i - 1].name, it->series[i].name) < 0);
    }

    for (i = 1; i < it->nlabels; i++) {
        check(pg_str_cmp(it->labels[i - 1].name, it->labels[i].name) <= 0);
    }

    for (i = 0; i < it->nlabels; i++) {
        check(it->labels[i].value.len > 0);
    }

    /* oldest first, and a series only ever gets newer exemplars */
    h = fnv(0xcbf29ce484222325ULL, it->tenant.data, it->tenant.len);
    for (i = 0; i < it->nseries; i++) {
        h = fnv(h, it->series[i].name.data, it->series[i].name.len);
        h = fnv(h, it->series[i].value.data, it->series[i].value.len);
    }
    h |= 1;

    for (k = h % SERIES_TABLE; ctx->key[k] != 0 && ctx->key[k] != h;
         k = (k + 1) % SERIES_TABLE)
    {
        /* void */
    }

    /* a series' exemplars in time order (3.5 keeps equal times) */
    if (ctx->key[k] == h) {
        check(it->ts >= ctx->newest[k]);
    }

    ctx->key[k] = h;
    ctx->newest[k] = it->ts;

    return 0;
}


static int
match_job_x(void *ctx, const pg_label_t *labels, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (labels[i].name.len == 3 && memcmp(labels[i].name.data, "job", 3) == 0)
        {
            return labels[i].value.len == 1 && labels[i].value.data[0] == 'x';
        }
    }

    return 0;
}


/* ------------------------------------------------------------- main */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t           in;
    uint8_t            *region;
    size_t              rsize, min, i, n, m;
    uint32_t            max;
    unsigned            op, b;
    pg_exring_t        *r;
    pg_label_t          series[8], ex[8];
    uint8_t             scratch[16][64];
    pg_str_t            tenant;
    pg_exring_rc_e      rc, rc2;
    pg_exring_stats_t   st;
    pg_json_buf_t       out;
    pg_allocator_t      alloc;
    static iter_ctx_t   ictx;
    double              value;
    int64_t             ts, base_ts;
    uint64_t            seq, last_seq, added;
    volatile unsigned   ops;
    static const double values[] = { 0, 1.5, -1, 1e300, 0.25, 42 };

    if (arena == NULL) {
        arena = malloc(ARENA_SIZE);
        memset(bigbuf, 'v', sizeof(bigbuf));
    }

    in.p = data;
    in.end = data + size;

    max = 1 + in_byte(&in) % 64;
    min = pg_exring_min_size(max);
    b = in_byte(&in);
    rsize = (min * (4 + (b & 7)) / 8 + 7) & ~(size_t) 7;

    region = malloc(rsize > min ? rsize : min);
    check(region != NULL);

    r = pg_exring_init(region, rsize, max);
    if (r == NULL) {
        rsize = min;
        r = pg_exring_init(region, rsize, max);
        check(r != NULL);                 /* min_size() must be enough */
    }

    /* a fresh store attaches, with another max it does not */
    check(pg_exring_attach(region, rsize, max) == r);
    check(pg_exring_attach(region, rsize, max + 1) == NULL);

    ring_check(r, max);

    alloc.alloc = arena_alloc;
    alloc.ctx = NULL;

    base_ts = 1700000000000;
    last_seq = 0;
    added = 0;

    for (ops = 0; in.p < in.end && ops < 256; ops++) {
        op = in_byte(&in) % 10;
        arena_used = 0;
        arena_cap = ARENA_SIZE;

        switch (op) {

        case 0: case 1: case 2: case 3: case 4: case 5:

            tenant.data = (const uint8_t *) tenants[in_byte(&in) % 3];
            tenant.len = strlen((const char *) tenant.data);

            /* series: __name__ plus a subset of the other names, sorted */
            b = in_byte(&in);
            n = 0;
            for (i = 0; i < 6; i++) {
                if (series_names[i][0] == '_' || (b >> i) & 1) {
                    series[n].name.data = (const uint8_t *) series_names[i];
                    series[n].name.len = strlen(series_names[i]);
                    series[n].value = pick_value(&in, series_values, 8,
                                                 scratch[n], 64);
                    if (series[n].name.data[0] == '_'
                        && series[n].value.len == 0)
                    {
                        series[n].value.data = (const uint8_t *) "m";
                        series[n].value.len = 1;
                    }
                    n++;
                }
            }

            m = in_byte(&in) % 5;
            for (i = 0; i < m; i++) {
                b = in_byte(&in);
                ex[i].name.data = (const uint8_t *) ex_names[b % 6];
                ex[i].name.len = strlen(ex_names[b % 6]);
                ex[i].value = pick_value(&in, ex_values, 8, scratch[8 + i],
                                         64);
            }

            b = in_byte(&in);
            value = b < 6 ? values[b] : b == 6 ? NAN : b == 7 ? INFINITY
                    : (double) b;
            b = in_byte(&in);
            ts = base_ts + ((int64_t) (int8_t) b) * 1000;
            base_ts += (b & 1) * 1000;

            if (op == 5) {
                /* this insert "dies" at one of its first 64 points */
                fuzz_die_in = 1 + in_byte(&in) % 64;

                if (setjmp(fuzz_die_jmp) != 0) {
                    fuzz_die_in = 0;
                    pg_exring_stats(r, &st);
                    last_seq = st.seq;    /* it may or may not have landed */
                    added++;
                    ring_check(r, max);
                    break;
                }
            }

            rc = pg_exring_insert(r, tenant, series, n, ex, m, value, ts,
                                  &seq);
            fuzz_die_in = 0;

            check((unsigned) rc < PG_EXRING_NRESULTS);
            check(pg_exring_rc_name(rc) != NULL);

            if (rc != PG_EXRING_ADDED) {
                check(seq == 0);
                break;
            }

            check(seq == last_seq + 1 || (last_seq == 0 && seq >= 1));
            last_seq = seq;
            added++;

            /* the same again: Prometheus 3.5 ignores it; a NaN equals
             * nothing and compares lower than nothing: added again */
            rc2 = pg_exring_insert(r, tenant, series, n, ex, m, value, ts,
                                   &seq);
            if (isnan(value)) {
                check(rc2 == PG_EXRING_ADDED);
                check(seq == last_seq + 1);
                last_seq = seq;
                added++;

            } else {
                check(rc2 == PG_EXRING_DUPLICATE);
                check(seq == 0);
            }

            /* older than the newest: out of order */
            rc2 = pg_exring_insert(r, tenant, series, n, ex, m, value + 1,
                                   ts - 1, &seq);
            check(rc2 == PG_EXRING_OUT_OF_ORDER);

            break;

        case 6: case 7:
            /* a query, sometimes with little memory */
            if (in_byte(&in) & 1) {
                arena_cap = in_byte(&in) * 16;
            }

            pg_json_init(&out, alloc);
            tenant.data = (const uint8_t *) tenants[in_byte(&in) % 3];
            tenant.len = strlen((const char *) tenant.data);
            b = in_byte(&in);

            i = pg_exring_query(r, tenant, (b & 1) ? match_job_x : NULL,
                                NULL,
                                (b & 2) ? base_ts - 60000 : INT64_MIN,
                                (b & 4) ? base_ts : INT64_MAX, &out);

            check((int) i >= -1);
            if ((int) i >= 0) {
                check(!out.failed);
                check(out.len <= out.cap);
            }
            break;

        case 8:
            memset(&ictx, 0, sizeof(ictx));
            if (in_byte(&in) & 1) {
                arena_cap = in_byte(&in) * 16;
            }

            i = pg_exring_iterate(r, &alloc, visit, &ictx);
            check((int) i == 0 || (int) i == -1);

            if ((int) i == 0) {
                pg_exring_stats(r, &st);
                check(ictx.count == st.exemplars);
                check(st.exemplars <= added);
            }
            break;

        default:
            /* a reload: the same store is found again */
            check(pg_exring_attach(region, rsize, max) == r);
            break;
        }

        /* the check is linear in the region: every few operations (damage
         * stays in the structure), after every "death", and at the end */
        if (ops % 8 == 7) {
            ring_check(r, max);
        }
    }

    ring_check(r, max);

    free(region);

    return 0;
}
