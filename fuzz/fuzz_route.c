/*
 * libFuzzer target: per-target series routing (src/core/pg_route.c) and
 * the subset bodies made from it, against protobuf-c.
 *
 * The first byte picks the version (bit 0: 2.0), the rest is a decoded
 * body.  It is decoded the way the write location does it with a router
 * (pg_route_add() as the series callback) over a fixed set of routes:
 * match=, drop=, both, a shard group of three (replicas=1) and one of
 * three with replicas=2 and by=.  Checked:
 *
 *   - every route's bitmap says, for each valid series, what
 *     pg_route_series() says of the series' labels copied and sorted the
 *     other way (pg_rw_copy_labels()); no invalid series is chosen; the
 *     counts are the bitmaps';
 *   - a shard group's members split each series among them exactly
 *     replicas times;
 *   - the tenant label ("instance"): each series' tenant is its value
 *     (none when empty or absent), the tenants are distinct, and every
 *     route's series split among the tenants exactly;
 *   - every route's body, in both versions, unpacks with protobuf-c to
 *     exactly the chosen series, in request order (fuzz_rw_check.h's
 *     fz_check_encoding(), which also runs the labels of the input
 *     against protobuf-c's as the request is decoded);
 *   - promgate_tenant_label instance drop: the request decoded again with
 *     "instance" left out of each series' digest (its exemplars' labels
 *     kept), the whole write and the bodies of the first tenants (their
 *     series through one route each), in both versions, encoded with
 *     skip_label "instance", unpack to exactly those digests: the chosen
 *     series, in order, less that label and nothing else.
 *
 * Build: t/fuzz.sh (clang -fsanitize=fuzzer,address,undefined).
 */

#define FZ_TARGET  "fuzz_route"

#include "fuzz_rw_check.h"
#include "pg_route.h"
#include "pg_promql.h"


#define FZ_ROUTES        9
#define FZ_DROP_TENANTS  4


static pg_route_t        fz_routes[FZ_ROUTES];
static pg_route_group_t  fz_groups[2];
static pg_router_t       fz_router;
static uint64_t          fz_seeds[3];
static pg_str_t          fz_by[2] = { pg_str_lit("instance"),
                                      pg_str_lit("job") };


/* the selectors live as long as the process: a static arena */
static uint8_t  fz_sel_mem[1 << 20];
static size_t   fz_sel_used;


static void *
fz_sel_alloc(void *ctx, size_t size)
{
    void  *p;

    size = (size + 15) & ~(size_t) 15;

    if (size > sizeof(fz_sel_mem) - fz_sel_used) {
        return NULL;
    }

    p = fz_sel_mem + fz_sel_used;
    fz_sel_used += size;

    return p;
}


static const pg_selector_t *
fz_selector(const char *text)
{
    pg_allocator_t     al = { fz_sel_alloc, NULL };
    pg_selector_set_t  set;

    check(pg_promql_selectors((const uint8_t *) text, strlen(text), &al,
                              &set, NULL) == PG_PROMQL_OK);
    check(set.nselectors == 1);

    return &set.selectors[0];
}


static void
fz_router_init(void)
{
    size_t               k;
    const pg_selector_t *a, *job, *b;

    static const char  *members[] = { "/_rw/a", "/_rw/b", "/_rw/c" };

    a = fz_selector("{__name__=~\"a.*\"}");
    job = fz_selector("{__name__=~\".+\",job!=\"x\"}");
    b = fz_selector("{__name__=~\".*b\",instance=\"\"}");

    for (k = 0; k < FZ_ROUTES; k++) {
        fz_routes[k].group = -1;
    }

    fz_routes[0].match = a;
    fz_routes[1].drop = a;
    fz_routes[2].match = job;
    fz_routes[2].drop = b;

    for (k = 0; k < 3; k++) {
        fz_seeds[k] = pg_route_seed((const uint8_t *) members[k],
                                    strlen(members[k]));

        fz_routes[3 + k].group = 0;
        fz_routes[3 + k].member = k;

        fz_routes[6 + k].group = 1;
        fz_routes[6 + k].member = k;
        fz_routes[6 + k].match = job;
    }

    fz_groups[0].replicas = 1;
    fz_groups[0].nmembers = 3;
    fz_groups[0].seeds = fz_seeds;

    fz_groups[1].replicas = 2;
    fz_groups[1].nmembers = 3;
    fz_groups[1].seeds = fz_seeds;
    fz_groups[1].by = fz_by;
    fz_groups[1].nby = 2;

    fz_router.routes = fz_routes;
    fz_router.nroutes = FZ_ROUTES;
    fz_router.groups = fz_groups;
    fz_router.ngroups = 2;
    fz_router.tenant_label.data = (const uint8_t *) "instance";
    fz_router.tenant_label.len = 8;
}


/* per series index: the routes pg_route_series() gives, from a copy */
#define FZ_MAX_MASKS  (1u << 16)

static uint64_t          fz_masks[FZ_MAX_MASKS];
static uint8_t           fz_masked[FZ_MAX_MASKS];
static pg_route_state_t  fz_state;
static pg_str_t          fz_tenant[FZ_MAX_MASKS];   /* views into the body */


static int
fz_route_cb(void *ctx, const pg_rw_series_t *s)
{
    size_t          n, k;
    pg_label_t     *labels;
    pg_allocator_t  al;
    pg_pb_iter_t    it;

    if (fz_series_cb(&fz_in, s) != 0) {
        return -1;
    }

    if (pg_route_add(&fz_state, s) != 0) {
        return -1;
    }

    if (s->index < FZ_MAX_MASKS) {
        al = fuzz_arena_allocator(&fz_arena2);
        pg_rw_series_labels(s, &it);

        labels = pg_rw_copy_labels(it, &al, &n, 1);
        if (labels == NULL) {
            return -1;
        }

        fz_masks[s->index] = pg_route_series(&fz_router, labels, n);
        fz_masked[s->index] = 1;

        /* its tenant: the value of its "instance" label, if not empty */

        fz_tenant[s->index].len = 0;

        for (k = 0; k < n; k++) {
            if (labels[k].name.len == 8
                && memcmp(labels[k].name.data, "instance", 8) == 0)
            {
                fz_tenant[s->index] = labels[k].value;
            }
        }

        check(pg_str_eq(fz_state.tenant, fz_tenant[s->index]));
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                     i, k, len, count;
    uint8_t                   *buf;
    unsigned                   chosen;
    pg_rw_version_e            v;
    pg_rw_reason_e             rc;
    pg_rw_request_t            req;
    pg_allocator_t             al;
    Prometheus__WriteRequest  *pc1;
    V2(Request)               *pc2;

    if (fz_router.nroutes == 0) {
        fz_router_init();
    }

    if (size == 0) {
        return 0;
    }

    v = (data[0] & 1) ? PG_RW_V2 : PG_RW_V1;
    len = size - 1;

    /* an exactly sized copy: ASan sees any read past the body */
    buf = malloc(len ? len : 1);
    check(buf != NULL);
    memcpy(buf, data + 1, len);

    fz_unpack(v, buf, len, &pc1, &pc2);

    if (has_long_varint_run(buf, len)) {
        fz_free(pc1, pc2);
        pc1 = NULL;
        pc2 = NULL;
    }

    fuzz_arena_reset(&fz_arena, 64 << 20, 64 << 20);
    fuzz_arena_reset(&fz_arena2, 64 << 20, 64 << 20);
    al = fuzz_arena_allocator(&fz_arena);

    fz_pass_init(&fz_in, v, v == PG_RW_V2);
    fz_in.pc1 = pc1;
    fz_in.pc2 = pc2;

    memset(fz_masked, 0, sizeof(fz_masked));
    check(pg_route_init(&fz_state, &fz_router, &al, len % 5) == 0);

    rc = pg_rw_decode(buf, len, v, &al, &req, fz_route_cb, NULL);

    if (rc == PG_RW_ABORTED) {
        check(fz_state.too_many_tenants);
        check(fz_state.ntenants == PG_ROUTE_MAX_TENANTS);
        goto done;
    }

    if (rc != PG_RW_OK) {
        goto done;
    }

    /* tenants: each series' as its label says, every route split by them */

    for (i = 0; i < req.nseries_total && i < FZ_MAX_MASKS; i++) {
        if (!fz_masked[i]) {
            continue;
        }

        if (fz_tenant[i].len == 0) {
            check(fz_state.tenant_of[i] == 0);

        } else {
            check(fz_state.tenant_of[i] > 0
                  && fz_state.tenant_of[i] <= fz_state.ntenants);
            check(pg_str_eq(fz_state.tenants[fz_state.tenant_of[i] - 1],
                            fz_tenant[i]));
        }
    }

    for (k = 0; k < fz_state.ntenants; k++) {
        for (i = 0; i < k; i++) {
            check(!pg_str_eq(fz_state.tenants[i], fz_state.tenants[k]));
        }
    }

    {
        uint8_t  *bits, *seen;
        size_t    t, sum, j;

        bits = malloc(fz_state.cap / 8);
        seen = calloc(fz_state.cap / 8, 1);
        check(bits != NULL && seen != NULL);

        for (k = 0; k < FZ_ROUTES; k++) {
            memset(seen, 0, fz_state.cap / 8);
            sum = 0;

            for (t = 0; t <= fz_state.ntenants; t++) {
                sum += pg_route_tenant_select(&fz_state, k, (unsigned) t,
                                              bits);

                for (j = 0; j < fz_state.cap / 8; j++) {
                    check((bits[j] & seen[j]) == 0);
                    check((bits[j] & ~fz_state.select[k][j]) == 0);
                    seen[j] |= bits[j];
                }
            }

            check(sum == fz_state.series[k]);
            check(memcmp(seen, fz_state.select[k], fz_state.cap / 8) == 0);
        }

        free(bits);
        free(seen);
    }

    check(fz_state.routed == req.stats.series);

    for (k = 0; k < FZ_ROUTES; k++) {
        count = 0;

        for (i = 0; i < req.nseries_total && i < fz_state.cap; i++) {
            if (!pg_rw_bit(fz_state.select[k], i)) {
                continue;
            }

            count++;
            check(!pg_rw_bit(req.dropped, i));

            if (i < FZ_MAX_MASKS) {
                check(fz_masked[i] && (fz_masks[i] >> k & 1));
            }
        }

        check(count == fz_state.series[k]);
    }

    for (i = 0; i < req.nseries_total && i < FZ_MAX_MASKS; i++) {
        if (!fz_masked[i]) {
            check(pg_rw_bit(req.dropped, i));
            continue;
        }

        /* match and drop of one selector split the series */
        check(((fz_masks[i] >> 0) & 1) != ((fz_masks[i] >> 1) & 1));

        chosen = __builtin_popcountll(fz_masks[i] & (7ull << 3));
        check(chosen == 1);

        chosen = __builtin_popcountll(fz_masks[i] & (7ull << 6));
        check(chosen == 0 || chosen == 2);

        for (k = 0; k < FZ_ROUTES; k++) {
            check(pg_rw_bit(fz_state.select[k], i)
                  == (int) (fz_masks[i] >> k & 1));
        }
    }

    /* every route's body, in both versions, against protobuf-c */

    for (k = 0; k < FZ_ROUTES; k++) {
        fz_check_encoding(buf, len, &req, fz_state.select[k], v);
        fz_check_encoding(buf, len, &req, fz_state.select[k],
                          v == PG_RW_V1 ? PG_RW_V2 : PG_RW_V1);
    }

    /* promgate_tenant_label instance drop */

    {
        size_t               t, nt;
        uint8_t             *bits[FZ_DROP_TENANTS];
        pg_rw_request_t      req2;
        pg_rw_version_e      to;
        pg_rw_encode_opts_t  opts;

        nt = fz_state.ntenants + 1 < FZ_DROP_TENANTS
             ? fz_state.ntenants + 1 : FZ_DROP_TENANTS;

        for (t = 0; t < nt; t++) {
            bits[t] = malloc(fz_state.cap / 8 + 1);
            check(bits[t] != NULL);
            (void) pg_route_tenant_select(&fz_state, t % FZ_ROUTES,
                                          (unsigned) t, bits[t]);
        }

        fz_pass_init(&fz_in, v, v == PG_RW_V2);
        fz_in.pc1 = pc1;
        fz_in.pc2 = pc2;
        fz_in.skip = fz_router.tenant_label;

        if (pg_rw_decode(buf, len, v, &al, &req2, fz_series_cb, &fz_in)
            == PG_RW_OK)
        {
            check(req2.stats.series == req.stats.series);

            opts.skip_label = fz_router.tenant_label;

            for (t = 0; t <= nt; t++) {
                opts.select = t < nt ? bits[t] : NULL;

                for (to = PG_RW_V1; to <= PG_RW_V2; to++) {
                    fz_check_encoding_opts(buf, len, &req2, &opts, to);
                }
            }
        }

        for (t = 0; t < nt; t++) {
            free(bits[t]);
        }
    }

done:

    fz_free(pc1, pc2);
    free(buf);

    return 0;
}
