/*
 * Per-target series routing (src/core/pg_route.c) and the subset bodies
 * made from it (pg_rw_encode() with a route's bitmap).  protobuf-c is the
 * oracle: requests are built with it, and every subset body must unpack
 * with it to exactly the series the route chose, in request order.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pg_rw.h"
#include "pg_route.h"
#include "pg_promql.h"
#include "remote.pb-c.h"
#include "write_v2.pb-c.h"
#include "rw_build.h"


#define V2(name)  Io__Prometheus__Write__V2__##name


static uint8_t  arena[8 << 20];
static size_t   arena_used;


static void *
arena_alloc(void *ctx, size_t size)
{
    void  *p;

    size = (size + 15) & ~(size_t) 15;

    if (size > sizeof(arena) - arena_used) {
        return NULL;
    }

    p = arena + arena_used;
    arena_used += size;

    return p;
}


static pg_allocator_t  alloc = { arena_alloc, NULL };


static const pg_selector_t *
selector(const char *text)
{
    pg_selector_set_t  set;

    assert_int_equal(pg_promql_selectors((const uint8_t *) text,
                                         strlen(text), &alloc, &set, NULL),
                     PG_PROMQL_OK);
    assert_int_equal(set.nselectors, 1);

    return &set.selectors[0];
}


static int
route_cb(void *ctx, const pg_rw_series_t *s)
{
    return pg_route_add(ctx, s);
}


static int
buf_grow(pg_buf_t *b, size_t need)
{
    size_t    size, used;
    uint8_t  *p;

    used = b->pos - b->start;
    size = (b->end - b->start) * 2 + need;

    p = realloc(b->start, size);
    if (p == NULL) {
        return -1;
    }

    b->start = p;
    b->pos = p + used;
    b->end = p + size;

    return 0;
}


/* the name of series i of a 1.0 request (its __name__ label) */
static const char *
name_of(Prometheus__TimeSeries *ts)
{
    size_t  k;

    for (k = 0; k < ts->n_labels; k++) {
        if (strcmp(ts->labels[k]->name, "__name__") == 0) {
            return ts->labels[k]->value;
        }
    }

    return "";
}


/*
 * Encodes route k's subset in version `to` and checks it unpacks with
 * protobuf-c to the series of q whose name is in want[] (NULL-ended), in
 * order, labels and samples as sent.
 */
static void
check_subset(req_t *q, const pg_rw_request_t *req, pg_route_state_t *st,
    size_t k, pg_rw_version_e to, const char **want)
{
    size_t                     i, j, n, l;
    pg_buf_t                   out;
    Prometheus__WriteRequest  *w1;
    V2(Request)               *w2;

    out.start = malloc(16);
    out.pos = out.start;
    out.end = out.start + 16;
    out.grow = buf_grow;
    out.data = NULL;

    assert_int_equal(pg_rw_encode(q->buf, q->len, req, st->select[k], to,
                                  &alloc, &out), 0);

    for (n = 0; want[n]; n++) {
        /* void */
    }

    assert_int_equal(st->series[k], n);

    if (to == PG_RW_V1) {
        w1 = prometheus__write_request__unpack(NULL, out.pos - out.start,
                                               out.start);
        assert_non_null(w1);
        assert_int_equal(w1->n_timeseries, n);

        for (i = 0, j = 0; i < n; i++, j++) {
            while (strcmp(name_of(q->tsp[j]), want[i]) != 0) {
                j++;
                assert_true(j < q->wr.n_timeseries);
            }

            assert_string_equal(name_of(w1->timeseries[i]), want[i]);
            assert_int_equal(w1->timeseries[i]->n_labels,
                             q->tsp[j]->n_labels);

            for (l = 0; l < q->tsp[j]->n_labels; l++) {
                assert_string_equal(w1->timeseries[i]->labels[l]->name,
                                    q->tsp[j]->labels[l]->name);
                assert_string_equal(w1->timeseries[i]->labels[l]->value,
                                    q->tsp[j]->labels[l]->value);
            }

            assert_int_equal(w1->timeseries[i]->n_samples,
                             q->tsp[j]->n_samples);
        }

        prometheus__write_request__free_unpacked(w1, NULL);

    } else {
        w2 = io__prometheus__write__v2__request__unpack(NULL,
                                                        out.pos - out.start,
                                                        out.start);
        assert_non_null(w2);
        assert_int_equal(w2->n_timeseries, n);

        for (i = 0; i < n; i++) {
            const char  *name = "";

            for (l = 0; l + 1 < w2->timeseries[i]->n_labels_refs; l += 2) {
                if (strcmp(w2->symbols[w2->timeseries[i]->labels_refs[l]],
                           "__name__") == 0)
                {
                    name = w2->symbols[w2->timeseries[i]->labels_refs[l + 1]];
                }
            }

            assert_string_equal(name, want[i]);
        }

        io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    }

    free(out.start);
}


/*
 * a request of 12 series, x_0, go_1, ... go_11, job api or test, one with
 * its labels out of order, one with an exemplar, one with a histogram
 */
static void
build(req_t *q)
{
    size_t       i;
    static char  names[12][8];

    req_init(q);

    for (i = 0; i < 12; i++) {
        snprintf(names[i], sizeof(names[i]), "%s_%zu", i % 2 ? "go" : "x",
                 i);

        if (i == 5) {
            /* labels out of order: valid, matched as sorted */
            i = req_series(q, "job", "test", "__name__", names[i], NULL);

        } else {
            i = req_series(q, "__name__", names[i], "job",
                           i % 3 == 0 ? "test" : "api", NULL);
        }

        req_sample(q, i, (double) i, 1000 + i);
    }

    req_exemplar(q, 2, "trace_id", "abc", 1.0, 1002);
    req_histogram(q, 4);
    req_pack(q);
}


static void
test_match_and_drop(void **state)
{
    req_t               q;
    pg_route_t          routes[3];
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;
    const pg_selector_t *sel;

    static const char  *matched[] = { "go_1", "go_7", "go_11", NULL };
    static const char  *dropped[] = { "x_0", "x_2", "go_3", "x_4", "go_5",
                                      "x_6", "x_8", "go_9", "x_10", NULL };
    static const char  *every[] = { "x_0", "go_1", "x_2", "go_3", "x_4",
                                    "go_5", "x_6", "go_7", "x_8", "go_9",
                                    "x_10", "go_11", NULL };

    arena_used = 0;
    build(&q);

    sel = selector("{__name__=~\"go_.*\",job!=\"test\"}");

    memset(routes, 0, sizeof(routes));
    routes[0].match = sel;
    routes[0].group = -1;
    routes[1].drop = sel;
    routes[1].group = -1;
    routes[2].group = -1;                  /* no rule: everything */

    memset(&rt, 0, sizeof(rt));
    rt.routes = routes;
    rt.nroutes = 3;

    /* room for 1 series at first: the bitmaps grow */
    assert_int_equal(pg_route_init(&st, &rt, &alloc, 1), 0);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_OK);
    assert_int_equal(st.routed, 12);

    check_subset(&q, &req, &st, 0, PG_RW_V1, matched);
    check_subset(&q, &req, &st, 1, PG_RW_V1, dropped);
    check_subset(&q, &req, &st, 2, PG_RW_V1, every);

    /* translated to 2.0 with the same choice */
    check_subset(&q, &req, &st, 0, PG_RW_V2, matched);
    check_subset(&q, &req, &st, 1, PG_RW_V2, dropped);

    assert_int_equal(st.samples[0], 3);
    assert_int_equal(st.samples[1], 10);     /* x_4's histogram too */
}


static void
test_invalid_series_are_never_chosen(void **state)
{
    req_t               q;
    pg_route_t          routes[1];
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;
    size_t              i;

    static const char  *kept[] = { "go_1", "go_3", NULL };

    arena_used = 0;
    req_init(&q);
    i = req_series(&q, "__name__", "go_1", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "__name__", "go_2", "a", "1", "a", "2", NULL);
    req_sample(&q, i, 1, 1);               /* duplicate label: invalid */
    i = req_series(&q, "__name__", "go_3", NULL);
    req_sample(&q, i, 1, 1);
    req_pack(&q);

    memset(routes, 0, sizeof(routes));
    routes[0].match = selector("{__name__=~\"go_.*\"}");
    routes[0].group = -1;

    memset(&rt, 0, sizeof(rt));
    rt.routes = routes;
    rt.nroutes = 1;

    assert_int_equal(pg_route_init(&st, &rt, &alloc, 3), 0);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_OK);
    assert_int_equal(req.invalid_series, 1);
    assert_int_equal(st.routed, 2);

    check_subset(&q, &req, &st, 0, PG_RW_V1, kept);
}


static void
labels_of(pg_label_t *l, char *name, size_t i)
{
    snprintf(name, 16, "m_%zu", i);

    l[0].name.data = (const uint8_t *) "__name__";
    l[0].name.len = 8;
    l[0].value.data = (const uint8_t *) name;
    l[0].value.len = strlen(name);
    l[1].name.data = (const uint8_t *) "instance";
    l[1].name.len = 8;
    l[1].value.data = (const uint8_t *) (i % 7 == 0 ? "a" : i % 7 == 1 ? "b"
                                                    : "c");
    l[1].value.len = 1;
}


static void
test_shard_consistent(void **state)
{
    size_t             i, m, moved, count[4];
    uint64_t           seeds[4], a, b, two;
    pg_label_t         l[2];
    pg_route_group_t   g3, g4, g2;
    char               name[16];
    static const char *members[] = { "/_rw/a", "/_rw/b", "/_rw/c",
                                     "/_rw/d" };

    for (m = 0; m < 4; m++) {
        seeds[m] = pg_route_seed((const uint8_t *) members[m],
                                 strlen(members[m]));
    }

    memset(&g3, 0, sizeof(g3));
    g3.replicas = 1;
    g3.nmembers = 3;
    g3.seeds = seeds;
    g4 = g3;
    g4.nmembers = 4;
    g2 = g3;
    g2.replicas = 2;

    memset(count, 0, sizeof(count));
    moved = 0;

    for (i = 0; i < 30000; i++) {
        labels_of(l, name, i);

        a = pg_route_shard(&g3, l, 2);
        b = pg_route_shard(&g4, l, 2);
        two = pg_route_shard(&g2, l, 2);

        /* one member each; two with replicas=2, the first among them */
        assert_true(a && (a & (a - 1)) == 0 && a < 8);
        assert_true(b && (b & (b - 1)) == 0);
        assert_true((two & a) == a && __builtin_popcountll(two) == 2);

        /* a fourth member takes series only for itself */
        if (b != a) {
            assert_int_equal(b, 8);
            moved++;
        }

        for (m = 0; m < 3; m++) {
            count[m] += a >> m & 1;
        }
    }

    for (m = 0; m < 3; m++) {
        assert_true(count[m] > 9000 && count[m] < 11000);
    }

    assert_true(moved > 7000 && moved < 8000);
}


static void
test_shard_by(void **state)
{
    size_t             i;
    uint64_t           seeds[3], where[3];
    pg_str_t           by[1] = { pg_str_lit("instance") };
    pg_label_t         l[2];
    pg_route_group_t   g;
    char               name[16];

    for (i = 0; i < 3; i++) {
        seeds[i] = pg_route_seed((const uint8_t *) &i, sizeof(i));
    }

    memset(&g, 0, sizeof(g));
    g.replicas = 1;
    g.nmembers = 3;
    g.seeds = seeds;
    g.by = by;
    g.nby = 1;

    memset(where, 0, sizeof(where));

    for (i = 0; i < 300; i++) {
        labels_of(l, name, i);
        where[i % 7 == 0 ? 0 : i % 7 == 1 ? 1 : 2] |= pg_route_shard(&g, l,
                                                                      2);
    }

    /* every series of an instance on one member */
    for (i = 0; i < 3; i++) {
        assert_true(where[i] && (where[i] & (where[i] - 1)) == 0);
    }

    /* a missing by label reads as "" */
    labels_of(l, name, 0);
    l[1].value.len = 0;
    where[0] = pg_route_shard(&g, l, 2);
    assert_int_equal(pg_route_shard(&g, l, 1), where[0]);
}


static void
test_shard_route_in_router(void **state)
{
    req_t               q;
    size_t              k, total;
    uint64_t            seeds[3];
    pg_route_t          routes[3];
    pg_route_group_t    g;
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;

    arena_used = 0;
    build(&q);

    for (k = 0; k < 3; k++) {
        seeds[k] = pg_route_seed((const uint8_t *) &k, sizeof(k));
    }

    memset(&g, 0, sizeof(g));
    g.replicas = 1;
    g.nmembers = 3;
    g.seeds = seeds;

    memset(routes, 0, sizeof(routes));

    for (k = 0; k < 3; k++) {
        routes[k].group = 0;
        routes[k].member = k;
    }

    memset(&rt, 0, sizeof(rt));
    rt.routes = routes;
    rt.nroutes = 3;
    rt.groups = &g;
    rt.ngroups = 1;

    assert_int_equal(pg_route_init(&st, &rt, &alloc, 12), 0);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_OK);

    /* the three bitmaps partition the series */
    total = 0;

    for (k = 0; k < 12; k++) {
        assert_int_equal(pg_rw_bit(st.select[0], k) + pg_rw_bit(st.select[1], k)
                         + pg_rw_bit(st.select[2], k), 1);
    }

    for (k = 0; k < 3; k++) {
        total += st.series[k];
    }

    assert_int_equal(total, 12);
}


static void
test_tenant_split(void **state)
{
    req_t               q;
    size_t              i, k, t, total, n;
    uint8_t             bits[64];
    pg_route_t          routes[2];
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;

    static const char  *tenant[] = { "a", "b", NULL, "a", "", "c", "b",
                                     NULL };

    arena_used = 0;
    req_init(&q);

    for (i = 0; i < 8; i++) {
        static char  names[8][8];

        snprintf(names[i], sizeof(names[i]), "m_%zu", i);

        if (tenant[i]) {
            n = req_series(&q, "__name__", names[i], "tenant", tenant[i],
                           NULL);
        } else {
            n = req_series(&q, "__name__", names[i], NULL);
        }

        req_sample(&q, n, 1, 1);
    }

    req_pack(&q);

    memset(routes, 0, sizeof(routes));
    routes[0].group = -1;
    routes[1].group = -1;
    routes[1].drop = selector("{__name__=~\"m_[01]\"}");

    memset(&rt, 0, sizeof(rt));
    rt.routes = routes;
    rt.nroutes = 2;
    rt.tenant_label.data = (const uint8_t *) "tenant";
    rt.tenant_label.len = 6;

    assert_int_equal(pg_route_init(&st, &rt, &alloc, 2), 0);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_OK);

    /* a, b, c in the order met; "" and no label: the request's */
    assert_int_equal(st.ntenants, 3);
    assert_memory_equal(st.tenants[0].data, "a", 1);
    assert_memory_equal(st.tenants[1].data, "b", 1);
    assert_memory_equal(st.tenants[2].data, "c", 1);

    {
        static const uint8_t  want[8] = { 1, 2, 0, 1, 0, 3, 2, 0 };

        for (i = 0; i < 8; i++) {
            assert_int_equal(st.tenant_of[i], want[i]);
        }
    }

    /* every route's series split among the tenants, none twice */
    for (k = 0; k < 2; k++) {
        total = 0;

        for (t = 0; t <= st.ntenants; t++) {
            n = pg_route_tenant_select(&st, k, (unsigned) t, bits);
            total += n;

            for (i = 0; i < 8; i++) {
                assert_int_equal(pg_rw_bit(bits, i),
                                 pg_rw_bit(st.select[k], i)
                                 && st.tenant_of[i] == t);
            }
        }

        assert_int_equal(total, st.series[k]);
    }

    /* tenant a through the route that drops m_0 and m_1: m_3 alone */
    assert_int_equal(pg_route_tenant_select(&st, 1, 1, bits), 1);
    assert_true(pg_rw_bit(bits, 3));
}


static void
test_too_many_tenants(void **state)
{
    req_t               q;
    size_t              i, n;
    pg_route_t          route;
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;
    static char         values[MAXS][8];

    arena_used = 0;
    req_init(&q);

    for (i = 0; i < MAXS; i++) {
        snprintf(values[i], sizeof(values[i]), "t%zu", i);
        n = req_series(&q, "__name__", "m", "tenant", values[i], NULL);
        req_sample(&q, n, 1, 1);
    }

    req_pack(&q);

    memset(&route, 0, sizeof(route));
    route.group = -1;
    memset(&rt, 0, sizeof(rt));
    rt.routes = &route;
    rt.nroutes = 1;
    rt.tenant_label.data = (const uint8_t *) "tenant";
    rt.tenant_label.len = 6;

    /* MAXS (16) distinct tenants pass; the limit is PG_ROUTE_MAX_TENANTS */
    assert_int_equal(pg_route_init(&st, &rt, &alloc, 0), 0);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_OK);
    assert_int_equal(st.ntenants, MAXS);

    /* over it, the callback stops the decode and says why */
    assert_int_equal(pg_route_init(&st, &rt, &alloc, 0), 0);
    st.ntenants = PG_ROUTE_MAX_TENANTS;
    for (i = 0; i < PG_ROUTE_MAX_TENANTS; i++) {
        st.tenants[i].data = (const uint8_t *) "other";
        st.tenants[i].len = 5;
    }
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, &alloc, &req,
                                  route_cb, &st), PG_RW_ABORTED);
    assert_true(st.too_many_tenants);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_and_drop),
        cmocka_unit_test(test_invalid_series_are_never_chosen),
        cmocka_unit_test(test_shard_consistent),
        cmocka_unit_test(test_shard_by),
        cmocka_unit_test(test_shard_route_in_router),
        cmocka_unit_test(test_tenant_split),
        cmocka_unit_test(test_too_many_tenants),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
