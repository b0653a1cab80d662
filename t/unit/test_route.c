/*
 * Per-target series routing (src/core/pg_route.c) and the subset bodies
 * made from it (pg_rw_encode() with a route's bitmap; pg_rw_encode_opts()
 * with skip_label, promgate_tenant_label ... drop).  protobuf-c is the
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


/*
 * promgate_tenant_label tenant drop: the series, each tenant's and all,
 * encoded with skip_label "tenant" on every path (1.0 and 2.0 as they
 * are, and both translations), unpack with protobuf-c to exactly the
 * chosen series, in order, with their labels less "tenant" (other labels,
 * samples, histograms, exemplars and their labels as sent).
 */

#define DROP_SERIES  7

static const char  *drop_defs[DROP_SERIES][9] = {
    { "__name__", "m_0", "tenant", "a", "job", "x", NULL },
    { "__name__", "m_1", "tenan", "d", NULL },
    { "tenant", "b", "__name__", "m_2", NULL },          /* out of order */
    { "__name__", "m_3", "tenant", "a", "zone", "z", NULL },
    { "__name__", "m_4", "tenant", "", NULL },           /* the request's */
    { "__name__", "m_5", "tenant", "b", NULL },
    { "__name__", "m_6", "tenants", "c", NULL },
};


typedef struct {
    V2(Request)      r;
    char            *sym[64];
    V2(TimeSeries)   ts[DROP_SERIES];
    V2(TimeSeries)  *tsp[DROP_SERIES];
    uint32_t         refs[DROP_SERIES][8];
    V2(Sample)       s[DROP_SERIES];
    V2(Sample)      *sp[DROP_SERIES];
    V2(Exemplar)     e;
    V2(Exemplar)    *ep;
    uint32_t         erefs[2];
    uint8_t          buf[8192];
    size_t           len;
} drop_req2_t;


static uint32_t
drop_sym(drop_req2_t *q, const char *s)
{
    uint32_t  i;

    for (i = 0; i < q->r.n_symbols; i++) {
        if (strcmp(q->sym[i], s) == 0) {
            return i;
        }
    }

    q->sym[q->r.n_symbols++] = (char *) s;

    return i;
}


static void
drop_build(req_t *q1, drop_req2_t *q2)
{
    size_t  i, k, n;

    req_init(q1);

    memset(q2, 0, sizeof(*q2));
    io__prometheus__write__v2__request__init(&q2->r);
    q2->r.symbols = q2->sym;
    q2->r.timeseries = q2->tsp;
    q2->sym[0] = "";
    q2->r.n_symbols = 1;

    for (i = 0; i < DROP_SERIES; i++) {
        n = q1->wr.n_timeseries++;
        prometheus__time_series__init(&q1->ts[n]);
        q1->tsp[n] = &q1->ts[n];
        q1->ts[n].labels = q1->lp[n];
        q1->ts[n].samples = q1->sp[n];

        io__prometheus__write__v2__time_series__init(&q2->ts[i]);
        q2->tsp[i] = &q2->ts[i];
        q2->ts[i].labels_refs = q2->refs[i];
        q2->r.n_timeseries++;

        for (k = 0; drop_defs[i][2 * k]; k++) {
            prometheus__label__init(&q1->l[n][k]);
            q1->l[n][k].name = (char *) drop_defs[i][2 * k];
            q1->l[n][k].value = (char *) drop_defs[i][2 * k + 1];
            q1->lp[n][k] = &q1->l[n][k];

            q2->refs[i][2 * k] = drop_sym(q2, drop_defs[i][2 * k]);
            q2->refs[i][2 * k + 1] = drop_sym(q2, drop_defs[i][2 * k + 1]);
        }

        q1->ts[n].n_labels = k;
        q2->ts[i].n_labels_refs = 2 * k;

        req_sample(q1, n, (double) i, 1000 + i);

        io__prometheus__write__v2__sample__init(&q2->s[i]);
        q2->s[i].value = (double) i;
        q2->s[i].timestamp = 1000 + i;
        q2->sp[i] = &q2->s[i];
        q2->ts[i].samples = &q2->sp[i];
        q2->ts[i].n_samples = 1;
    }

    /* an exemplar label of the tenant label's name stays */

    req_exemplar(q1, 0, "tenant", "ex", 0.5, 1000);
    req_histogram(q1, 5);
    req_pack(q1);

    io__prometheus__write__v2__exemplar__init(&q2->e);
    q2->e.value = 0.5;
    q2->e.timestamp = 1000;
    q2->erefs[0] = drop_sym(q2, "tenant");
    q2->erefs[1] = drop_sym(q2, "ex");
    q2->e.labels_refs = q2->erefs;
    q2->e.n_labels_refs = 2;
    q2->ep = &q2->e;
    q2->ts[0].exemplars = &q2->ep;
    q2->ts[0].n_exemplars = 1;

    q2->len = io__prometheus__write__v2__request__pack(&q2->r, q2->buf);
}


/* series i's labels as sent, less "tenant", against the unpacked ones */
static void
drop_check_labels(size_t i, const char **names, const char **values,
    size_t n)
{
    size_t  k, j;

    for (k = 0, j = 0; drop_defs[i][2 * k]; k++) {
        if (strcmp(drop_defs[i][2 * k], "tenant") == 0) {
            continue;
        }

        assert_true(j < n);
        assert_string_equal(names[j], drop_defs[i][2 * k]);
        assert_string_equal(values[j], drop_defs[i][2 * k + 1]);
        j++;
    }

    assert_int_equal(j, n);
}


/*
 * Encodes the request (decoded in req) in `to` with select and skip_label
 * "tenant"; its series must be want[] (indexes in drop_defs, -1 ended).
 */
static void
drop_check(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const uint8_t *select, pg_rw_version_e to, const int *want)
{
    size_t                     i, k, n;
    pg_buf_t                   out;
    const char                *names[8], *values[8];
    pg_rw_encode_opts_t        opts;
    Prometheus__WriteRequest  *w1;
    Prometheus__TimeSeries    *t1;
    V2(Request)               *w2;
    V2(TimeSeries)            *t2;

    out.start = malloc(16);
    out.pos = out.start;
    out.end = out.start + 16;
    out.grow = buf_grow;
    out.data = NULL;

    opts.select = select;
    opts.skip_label.data = (const uint8_t *) "tenant";
    opts.skip_label.len = 6;

    assert_int_equal(pg_rw_encode_opts(buf, len, req, &opts, to, &alloc,
                                       &out), 0);

    for (n = 0; want[n] >= 0; n++) {
        /* void */
    }

    if (to == PG_RW_V1) {
        w1 = prometheus__write_request__unpack(NULL, out.pos - out.start,
                                               out.start);
        assert_non_null(w1);
        assert_int_equal(w1->n_timeseries, n);

        for (i = 0; i < n; i++) {
            t1 = w1->timeseries[i];
            assert_true(t1->n_labels <= 8);

            for (k = 0; k < t1->n_labels; k++) {
                names[k] = t1->labels[k]->name;
                values[k] = t1->labels[k]->value;
            }

            drop_check_labels(want[i], names, values, t1->n_labels);

            assert_int_equal(t1->n_samples, 1);
            assert_true(t1->samples[0]->value == (double) want[i]);
            assert_int_equal(t1->samples[0]->timestamp, 1000 + want[i]);

            assert_int_equal(t1->n_exemplars, want[i] == 0);

            if (want[i] == 0) {
                assert_int_equal(t1->exemplars[0]->n_labels, 1);
                assert_string_equal(t1->exemplars[0]->labels[0]->name,
                                    "tenant");
                assert_string_equal(t1->exemplars[0]->labels[0]->value,
                                    "ex");
            }

            assert_int_equal(t1->n_histograms,
                             want[i] == 5 && req->version == PG_RW_V1);
        }

        prometheus__write_request__free_unpacked(w1, NULL);

    } else {
        w2 = io__prometheus__write__v2__request__unpack(NULL,
                                                        out.pos - out.start,
                                                        out.start);
        assert_non_null(w2);
        assert_int_equal(w2->n_timeseries, n);

        for (i = 0; i < n; i++) {
            t2 = w2->timeseries[i];
            assert_true(t2->n_labels_refs % 2 == 0
                        && t2->n_labels_refs <= 16);

            for (k = 0; k < t2->n_labels_refs / 2; k++) {
                assert_true(t2->labels_refs[2 * k + 1] < w2->n_symbols);
                names[k] = w2->symbols[t2->labels_refs[2 * k]];
                values[k] = w2->symbols[t2->labels_refs[2 * k + 1]];
            }

            drop_check_labels(want[i], names, values,
                              t2->n_labels_refs / 2);

            assert_int_equal(t2->n_samples, 1);
            assert_true(t2->samples[0]->value == (double) want[i]);
            assert_int_equal(t2->samples[0]->timestamp, 1000 + want[i]);

            assert_int_equal(t2->n_exemplars, want[i] == 0);

            if (want[i] == 0) {
                assert_int_equal(t2->exemplars[0]->n_labels_refs, 2);
                assert_string_equal(
                    w2->symbols[t2->exemplars[0]->labels_refs[0]], "tenant");
                assert_string_equal(
                    w2->symbols[t2->exemplars[0]->labels_refs[1]], "ex");
            }

            assert_int_equal(t2->n_histograms,
                             want[i] == 5 && req->version == PG_RW_V1);
        }

        io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    }

    free(out.start);
}


static void
test_tenant_drop(void **state)
{
    req_t               q1;
    drop_req2_t         q2;
    size_t              t;
    uint8_t             bits[64], some[64];
    pg_buf_t            a, b;
    pg_route_t          route;
    pg_router_t         rt;
    pg_rw_request_t     req;
    pg_route_state_t    st;
    pg_rw_version_e     from, to;
    const uint8_t      *buf;
    size_t              len;
    pg_rw_encode_opts_t opts;

    /* tenant 0 (none, or ""), a, b; and every series */
    static const int  want[4][8] = {
        { 1, 4, 6, -1 },
        { 0, 3, -1 },
        { 2, 5, -1 },
        { 0, 1, 2, 3, 4, 5, 6, -1 },
    };

    drop_build(&q1, &q2);

    memset(&route, 0, sizeof(route));
    route.group = -1;
    memset(&rt, 0, sizeof(rt));
    rt.routes = &route;
    rt.nroutes = 1;
    rt.tenant_label.data = (const uint8_t *) "tenant";
    rt.tenant_label.len = 6;

    for (from = PG_RW_V1; from <= PG_RW_V2; from++) {
        arena_used = 0;
        buf = from == PG_RW_V1 ? q1.buf : q2.buf;
        len = from == PG_RW_V1 ? q1.len : q2.len;

        assert_int_equal(pg_route_init(&st, &rt, &alloc, DROP_SERIES), 0);
        assert_int_equal(pg_rw_decode(buf, len, from, &alloc, &req,
                                      route_cb, &st), PG_RW_OK);
        assert_int_equal(req.stats.series, DROP_SERIES);
        assert_int_equal(st.ntenants, 2);

        for (t = 0; t < 4; t++) {
            if (t < 3) {
                assert_int_equal(pg_route_tenant_select(&st, 0, t, bits),
                                 want[t][2] < 0 ? 2 : 3);
            }

            for (to = PG_RW_V1; to <= PG_RW_V2; to++) {
                drop_check(buf, len, &req, t < 3 ? bits : NULL, to,
                           want[t]);
            }
        }

        /*
         * As it is, a subset none of whose series has the label is the
         * same bytes as without skip_label
         */

        memset(some, 0, sizeof(some));
        some[0] = 1 << 1 | 1 << 6;

        a.start = malloc(16);
        a.pos = a.start;
        a.end = a.start + 16;
        a.grow = buf_grow;
        b = a;
        b.start = malloc(16);
        b.pos = b.start;
        b.end = b.start + 16;

        opts.select = some;
        opts.skip_label = rt.tenant_label;

        assert_int_equal(pg_rw_encode(buf, len, &req, some, from, &alloc,
                                      &a), 0);
        assert_int_equal(pg_rw_encode_opts(buf, len, &req, &opts, from,
                                           &alloc, &b), 0);
        assert_int_equal(a.pos - a.start, b.pos - b.start);
        assert_memory_equal(a.start, b.start, a.pos - a.start);

        free(a.start);
        free(b.start);
    }
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
        cmocka_unit_test(test_tenant_drop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
