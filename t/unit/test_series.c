/*
 * The series index (src/core/pg_series.c): Prometheus' labels.Hash against
 * reference values, the TTL set (expiry, LRU eviction, pending and seen
 * states, tenants, collisions, reattaching), and the Kafka message.
 *
 * The reference hashes were computed with XXH64 written out from its
 * specification in Python (no library) over name 0xff value 0xff per
 * label, as Prometheus 2.42's Labels.Hash does, and cross-checked with
 * Debian's xxhsum (-H64) over the same bytes.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "pg_series.h"
#include "remote.pb-c.h"


#define L(n, v)  { { (const uint8_t *) (n), sizeof(n) - 1 },                 \
                   { (const uint8_t *) (v), sizeof(v) - 1 } }

#define T0      1700000000ull       /* a unix time, seconds */
#define TTL     600
#define PEND    30


static void *
test_alloc(void *ctx, size_t size)
{
    (void) ctx;
    return malloc(size);     /* leaked on purpose: a bump allocator's life */
}


static pg_allocator_t  test_allocator = { test_alloc, NULL };


static pg_str_t
str(const char *s)
{
    pg_str_t  r;

    r.data = (const uint8_t *) s;
    r.len = strlen(s);

    return r;
}


/* ------------------------------------------------------------ identity */


static const pg_label_t  set_up[] = { L("__name__", "up") };

static const pg_label_t  set_up_job[] = {
    L("__name__", "up"), L("instance", "localhost:9090"),
    L("job", "prometheus")
};

static const pg_label_t  set_upper_first[] = {
    L("A", "x"), L("__name__", "m"), L("b", "y")
};

static const pg_label_t  set_empty_value[] = {
    L("__name__", "http_requests_total"), L("code", ""), L("method", "GET")
};

static const pg_label_t  set_utf8[] = {
    L("__name__", "temp_celsius"), L("city", "Z\xc3\xbcrich"),
    L("sensor", "\xe6\xb8\xa9\xe5\xba\xa6")
};

static const pg_label_t  set_quote[] = {
    L("__name__", "weird"), L("path", "C:\\dir\n\"x\"")
};


static void
test_hash_reference(void **state)
{
    pg_series_id_t  id;

    pg_series_hash(NULL, 0, &id);
    assert_int_equal(id.hash, 0xef46db3751d8e999ull);

    pg_series_hash(set_up, 1, &id);
    assert_int_equal(id.hash, 0x23d4c2cb13387598ull);

    pg_series_hash(set_up_job, 3, &id);
    assert_int_equal(id.hash, 0xf28c8afcd224e55full);

    pg_series_hash(set_upper_first, 3, &id);
    assert_int_equal(id.hash, 0x35224efc259bb6bbull);

    pg_series_hash(set_empty_value, 3, &id);
    assert_int_equal(id.hash, 0x0e8b89853c6261aaull);

    pg_series_hash(set_utf8, 3, &id);
    assert_int_equal(id.hash, 0x65268c3e5325ce3eull);

    pg_series_hash(set_quote, 2, &id);
    assert_int_equal(id.hash, 0x865c9d0df3ab3345ull);
}


/* 1690 bytes: above the 1 KiB Prometheus (and we) hash in one piece */

static void
test_hash_large(void **state)
{
    int             i;
    char            names[60][16], values[60][32];
    pg_label_t      ls[61];
    pg_series_id_t  id, id2;

    ls[0].name = str("__name__");
    ls[0].value = str("big_series");

    for (i = 0; i < 60; i++) {
        snprintf(names[i], sizeof(names[i]), "l%03d", i);
        snprintf(values[i], sizeof(values[i]), "vvvvvvvvvvvvvvvvvvvv%d", i);
        ls[i + 1].name = str(names[i]);
        ls[i + 1].value = str(values[i]);
    }

    pg_series_hash(ls, 61, &id);
    assert_int_equal(id.hash, 0xf44807d4f91037a0ull);

    /* the fingerprint does not depend on the path taken either */
    pg_series_hash(ls, 61, &id2);
    assert_int_equal(id.check, id2.check);
}


static void
test_hash_fingerprint(void **state)
{
    pg_series_id_t  a, b, c;

    static const pg_label_t  x[] = { L("__name__", "a"), L("b", "c") };
    static const pg_label_t  y[] = { L("__name__", "a"), L("b", "d") };

    /* the separators keep "ab"+"" apart from "a"+"b" */
    static const pg_label_t  s1[] = { L("__name__", "m"), L("ab", "") };
    static const pg_label_t  s2[] = { L("__name__", "m"), L("a", "b") };

    pg_series_hash(x, 2, &a);
    pg_series_hash(x, 2, &b);
    assert_int_equal(a.hash, b.hash);
    assert_int_equal(a.check, b.check);

    pg_series_hash(y, 2, &c);
    assert_true(a.hash != c.hash);
    assert_true(a.check != c.check);

    pg_series_hash(s1, 2, &a);
    pg_series_hash(s2, 2, &b);
    assert_true(a.hash != b.hash);

    assert_true(pg_series_tenant_hash(str("")) != pg_series_tenant_hash(
                                                      str("team-a")));
}


typedef struct {
    size_t          n;
    pg_series_id_t  ids[8];
} iter_ctx_t;


static int
collect_ids(void *data, const pg_rw_series_t *s)
{
    iter_ctx_t    *c = data;
    pg_pb_iter_t   it;

    pg_rw_series_labels(s, &it);
    pg_series_hash_iter(it, &c->ids[c->n++]);

    return 0;
}


/* from the decoded body, as the write path hashes */

static void
test_hash_iter(void **state)
{
    size_t                    i, len;
    uint8_t                   buf[4096];
    iter_ctx_t                c;
    pg_rw_request_t           req;
    pg_series_id_t            id;
    Prometheus__Label         l[3], *lp[3];
    Prometheus__Sample        smp, *smpp;
    Prometheus__TimeSeries    ts, *tsp;
    Prometheus__WriteRequest  wr;

    prometheus__write_request__init(&wr);
    prometheus__time_series__init(&ts);
    prometheus__sample__init(&smp);

    for (i = 0; i < 3; i++) {
        prometheus__label__init(&l[i]);
        l[i].name = (char *) set_utf8[i].name.data;
        l[i].value = (char *) set_utf8[i].value.data;
        lp[i] = &l[i];
    }

    smp.value = 21.5;
    smp.timestamp = 1700000000000;
    smpp = &smp;

    ts.n_labels = 3;
    ts.labels = lp;
    ts.n_samples = 1;
    ts.samples = &smpp;
    tsp = &ts;

    wr.n_timeseries = 1;
    wr.timeseries = &tsp;

    len = prometheus__write_request__pack(&wr, buf);

    memset(&c, 0, sizeof(c));
    assert_int_equal(pg_rw_decode(buf, len, PG_RW_V1, &test_allocator, &req,
                                  collect_ids, &c),
                     PG_RW_OK);
    assert_int_equal(c.n, 1);

    pg_series_hash(set_utf8, 3, &id);
    assert_int_equal(c.ids[0].hash, 0x65268c3e5325ce3eull);
    assert_int_equal(c.ids[0].hash, id.hash);
    assert_int_equal(c.ids[0].check, id.check);
}


/* ----------------------------------------------------------------- set */


typedef struct {
    void             *mem;
    size_t            size;
    pg_series_set_t  *set;
} fixture_t;


static fixture_t *
fixture(size_t size, uint32_t ttl, uint32_t pending)
{
    fixture_t  *f;

    f = calloc(1, sizeof(fixture_t));
    assert_non_null(f);

    f->size = size;
    f->mem = malloc(size);       /* 16-byte aligned */
    assert_non_null(f->mem);

    f->set = pg_series_init(f->mem, size, T0, 0x1234567890abcdefull, ttl,
                            pending);
    assert_non_null(f->set);

    return f;
}


static void
fixture_free(fixture_t *f)
{
    free(f->mem);
    free(f);
}


static pg_series_id_t
sid(unsigned n)
{
    char            v[32];
    pg_label_t      ls[2];
    pg_series_id_t  id;

    snprintf(v, sizeof(v), "%u", n);

    ls[0].name = str("__name__");
    ls[0].value = str("m");
    ls[1].name = str("n");
    ls[1].value = str(v);

    pg_series_hash(ls, 2, &id);

    return id;
}


static pg_series_stats_t
stats(fixture_t *f)
{
    pg_series_stats_t  st;

    pg_series_stats(f->set, &st);

    return st;
}


/* seen by a write, offered on 2xx, confirmed by Kafka */
static void
publish(fixture_t *f, uint64_t tenant, pg_series_id_t id, uint64_t now)
{
    uint32_t  token;

    assert_int_equal(pg_series_check(f->set, tenant, &id, now),
                     PG_SERIES_NEW);
    token = pg_series_offer(f->set, tenant, &id, now);
    assert_int_not_equal(token, 0);
    assert_int_equal(pg_series_confirm(f->set, tenant, id.hash, token, now),
                     1);
}


static void
test_size(void **state)
{
    uint32_t  cap;

    assert_int_equal(pg_series_capacity(100), 0);

    /* the goal: at most 64 bytes per tracked series, buckets included */

    cap = pg_series_capacity(64 * 1024 * 1024);
    assert_true(cap >= 64 * 1024 * 1024 / 48);
    assert_true((64 * 1024 * 1024) / cap <= 48);

    cap = pg_series_capacity(32 * 1024 * 1024);
    assert_true((32 * 1024 * 1024) / cap <= 48);

    /* 1M series in 48 MB */
    assert_true(pg_series_capacity(48 * 1000 * 1000) >= 1000000);
}


static void
test_states(void **state)
{
    uint64_t           t;
    uint32_t           token, token2;
    fixture_t         *f;
    pg_series_id_t     a;
    pg_series_stats_t  st;

    f = fixture(64 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    a = sid(1);

    /* checking does not insert: a refused write leaves no trace */
    assert_int_equal(pg_series_check(f->set, t, &a, T0), PG_SERIES_NEW);
    assert_int_equal(pg_series_check(f->set, t, &a, T0), PG_SERIES_NEW);
    assert_int_equal(stats(f).entries, 0);

    token = pg_series_offer(f->set, t, &a, T0);
    assert_int_not_equal(token, 0);

    /* twice in one write, or another worker: offered once */
    assert_int_equal(pg_series_offer(f->set, t, &a, T0), 0);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 1),
                     PG_SERIES_PENDING);

    st = stats(f);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.offered, 1);

    /* a delivery report of another offer changes nothing */
    assert_int_equal(pg_series_confirm(f->set, t, a.hash, token + 1, T0), 0);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 1),
                     PG_SERIES_PENDING);

    assert_int_equal(pg_series_confirm(f->set, t, a.hash, token, T0 + 2), 1);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 3),
                     PG_SERIES_SEEN);

    st = stats(f);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.published, 2);      /* reports counted: both */

    /* seen: not offered again */
    assert_int_equal(pg_series_offer(f->set, t, &a, T0 + 4), 0);

    /* a failed delivery forgets the offer: the next write offers again */
    {
        pg_series_id_t  b = sid(2);

        token2 = pg_series_offer(f->set, t, &b, T0);
        assert_int_not_equal(token2, 0);
        assert_int_equal(pg_series_drop(f->set, t, b.hash, token2 + 7,
                                        PG_SERIES_FAILED), 0);
        assert_int_equal(pg_series_drop(f->set, t, b.hash, token2,
                                        PG_SERIES_FAILED), 1);
        assert_int_equal(pg_series_check(f->set, t, &b, T0 + 1),
                         PG_SERIES_NEW);

        token2 = pg_series_offer(f->set, t, &b, T0 + 1);
        assert_int_equal(pg_series_drop(f->set, t, b.hash, token2,
                                        PG_SERIES_OVERFLOW), 1);
        assert_int_equal(pg_series_confirm(f->set, t, b.hash, token2, T0),
                         0);
    }

    st = stats(f);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.overflow, 1);
    assert_int_equal(st.offered, 3);

    fixture_free(f);
}


/* a batch answers as one lookup after another would */

static void
test_check_batch(void **state)
{
    unsigned           i;
    uint8_t            states[300];
    uint64_t           t;
    fixture_t         *f;
    pg_series_id_t     ids[300];

    f = fixture(256 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str(""));

    for (i = 0; i < 100; i++) {
        publish(f, t, sid(i), T0);
    }

    for (i = 100; i < 150; i++) {
        ids[0] = sid(i);
        assert_int_not_equal(pg_series_offer(f->set, t, &ids[0], T0), 0);
    }

    /* seen, pending, new, and each of them twice; more than one batch */
    for (i = 0; i < 300; i++) {
        ids[i] = sid(i % 200);
    }

    pg_series_check_batch(f->set, t, ids, 300, T0 + 5, states);

    for (i = 0; i < 300; i++) {
        assert_int_equal(states[i], i % 200 < 100 ? PG_SERIES_SEEN
                                    : i % 200 < 150 ? PG_SERIES_PENDING
                                    : PG_SERIES_NEW);
    }

    /* the seen ones were refreshed by the batch */
    pg_series_check_batch(f->set, t, ids, 100, T0 + 5 + TTL, states);

    for (i = 0; i < 100; i++) {
        assert_int_equal(states[i], PG_SERIES_SEEN);
    }

    assert_int_equal(stats(f).entries, 150);

    fixture_free(f);
}


/* a batch of several tenants: each id looked up in its own tenant */
static void
test_check_batch_tenants(void **state)
{
    unsigned           i;
    uint8_t            states[200], one[200];
    uint64_t           ta, tb, tenants[200];
    fixture_t         *f;
    pg_series_id_t     ids[200];

    f = fixture(256 * 1024, TTL, PEND);
    ta = pg_series_tenant_hash(str("a"));
    tb = pg_series_tenant_hash(str("b"));

    /* series 0..49 seen in a, 25..74 in b */
    for (i = 0; i < 50; i++) {
        publish(f, ta, sid(i), T0);
        publish(f, tb, sid(i + 25), T0);
    }

    /* the same ids, tenants interleaved; more than one batch */
    for (i = 0; i < 200; i++) {
        ids[i] = sid(i % 100);
        tenants[i] = (i / 3) % 2 ? tb : ta;
    }

    pg_series_check_batch_tenants(f->set, tenants, ids, 200, T0 + 5, states);

    for (i = 0; i < 200; i++) {
        assert_int_equal(states[i],
                         pg_series_check(f->set, tenants[i], &ids[i],
                                         T0 + 5));
        one[i] = tenants[i] == ta ? (i % 100 < 50) : (i % 100 >= 25
                                                     && i % 100 < 75);
        assert_int_equal(states[i], one[i] ? PG_SERIES_SEEN
                                           : PG_SERIES_NEW);
    }

    fixture_free(f);
}


/* an offer nobody confirms (its worker died) lapses after pending */

static void
test_pending_lapses(void **state)
{
    uint64_t        t;
    uint32_t        token, token2;
    fixture_t      *f;
    pg_series_id_t  a;

    f = fixture(64 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str("team-a"));
    a = sid(1);

    token = pg_series_offer(f->set, t, &a, T0);

    assert_int_equal(pg_series_check(f->set, t, &a, T0 + PEND),
                     PG_SERIES_PENDING);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + PEND + 1),
                     PG_SERIES_NEW);

    token2 = pg_series_offer(f->set, t, &a, T0 + PEND + 1);
    assert_int_not_equal(token2, 0);
    assert_int_not_equal(token2, token);

    /* the first offer's late report no longer stands */
    assert_int_equal(pg_series_confirm(f->set, t, a.hash, token, T0 + 40), 0);
    assert_int_equal(pg_series_drop(f->set, t, a.hash, token,
                                    PG_SERIES_FAILED), 0);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 40),
                     PG_SERIES_PENDING);

    assert_int_equal(pg_series_confirm(f->set, t, a.hash, token2, T0 + 41),
                     1);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 42),
                     PG_SERIES_SEEN);
    assert_int_equal(stats(f).pending, 0);
    assert_int_equal(stats(f).entries, 1);

    fixture_free(f);
}


static void
test_ttl(void **state)
{
    uint64_t           t, now;
    fixture_t         *f;
    pg_series_id_t     a, b;
    pg_series_stats_t  st;

    f = fixture(64 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    a = sid(1);
    b = sid(2);

    publish(f, t, a, T0);
    publish(f, t, b, T0);

    /* within ttl: seen (and refreshed) */
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + TTL),
                     PG_SERIES_SEEN);

    /* b was not seen for more than ttl: new again */
    assert_int_equal(pg_series_check(f->set, t, &b, T0 + TTL + 1),
                     PG_SERIES_NEW);

    /* a was refreshed at T0 + TTL */
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 2 * TTL),
                     PG_SERIES_SEEN);
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 3 * TTL + 1),
                     PG_SERIES_NEW);

    /* an expired series is offered again in place */
    now = T0 + 3 * TTL + 1;
    publish(f, t, a, now);
    publish(f, t, b, now);

    st = stats(f);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.offered, 4);
    assert_int_equal(st.expired, 2);

    /* a changed ttl (a reload) applies at once */
    pg_series_configure(f->set, 10, PEND);
    assert_int_equal(pg_series_check(f->set, t, &a, now + 11),
                     PG_SERIES_NEW);

    fixture_free(f);
}


/* expired entries are reclaimed as new series come, before any eviction */

static void
test_expired_reclaimed(void **state)
{
    unsigned           i, cap;
    uint64_t           t;
    fixture_t         *f;
    pg_series_stats_t  st;

    f = fixture(8192, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    cap = stats(f).capacity;

    for (i = 0; i < cap; i++) {
        publish(f, t, sid(i), T0);
    }

    for (i = 0; i < cap; i++) {
        publish(f, t, sid(100000 + i), T0 + TTL + 1);
    }

    st = stats(f);
    assert_int_equal(st.entries, cap);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.expired, cap);

    fixture_free(f);
}


static void
test_lru_eviction(void **state)
{
    unsigned           i, cap;
    uint64_t           t;
    fixture_t         *f;
    pg_series_id_t     id;
    pg_series_stats_t  st;

    f = fixture(16384, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    cap = stats(f).capacity;
    assert_true(cap >= 64);

    for (i = 0; i < cap; i++) {
        publish(f, t, sid(i), T0);
    }

    /* the even ones are seen again, later */
    for (i = 0; i < cap; i += 2) {
        id = sid(i);
        assert_int_equal(pg_series_check(f->set, t, &id, T0 + 1),
                         PG_SERIES_SEEN);
    }

    /* full: room for cap/2 new series is made from the odd ones */
    for (i = 0; i < cap / 2; i++) {
        publish(f, t, sid(1000000 + i), T0 + 2);
    }

    st = stats(f);
    assert_int_equal(st.entries, cap);
    assert_int_equal(st.evictions, cap / 2);
    assert_int_equal(st.expired, 0);

    for (i = 0; i < cap; i++) {
        id = sid(i);
        assert_int_equal(pg_series_check(f->set, t, &id, T0 + 3),
                         i % 2 ? PG_SERIES_NEW : PG_SERIES_SEEN);
    }

    /* pending entries go too when they are the oldest: never refuses */
    for (i = 0; i < 3 * cap; i++) {
        id = sid(2000000 + i);
        assert_int_not_equal(pg_series_offer(f->set, t, &id, T0 + 4), 0);
    }

    st = stats(f);
    assert_int_equal(st.entries, cap);
    assert_int_equal(st.pending, cap);

    fixture_free(f);
}


static void
test_tenants(void **state)
{
    uint64_t        ta, tb;
    fixture_t      *f;
    pg_series_id_t  a;

    f = fixture(64 * 1024, TTL, PEND);
    ta = pg_series_tenant_hash(str("team-a"));
    tb = pg_series_tenant_hash(str("team-b"));
    a = sid(1);

    publish(f, ta, a, T0);
    assert_int_equal(pg_series_check(f->set, ta, &a, T0), PG_SERIES_SEEN);
    assert_int_equal(pg_series_check(f->set, tb, &a, T0), PG_SERIES_NEW);
    publish(f, tb, a, T0);
    assert_int_equal(stats(f).entries, 2);

    fixture_free(f);
}


/* the identity is (tenant, hash): other labels with that hash are counted */

static void
test_collision(void **state)
{
    uint64_t        t;
    fixture_t      *f;
    pg_series_id_t  a, forged;

    f = fixture(64 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    a = sid(1);
    forged = sid(2);
    forged.hash = a.hash;

    publish(f, t, a, T0);

    assert_int_equal(pg_series_check(f->set, t, &forged, T0 + 1),
                     PG_SERIES_SEEN);
    assert_int_equal(pg_series_offer(f->set, t, &forged, T0 + 1), 0);
    assert_int_equal(stats(f).collisions, 2);

    /* the genuine series is not one */
    assert_int_equal(pg_series_check(f->set, t, &a, T0 + 1),
                     PG_SERIES_SEEN);
    assert_int_equal(stats(f).collisions, 2);
    assert_int_equal(stats(f).entries, 1);

    fixture_free(f);
}


/* a reload: the region keeps the set; another size is another set */

static void
test_attach(void **state)
{
    uint64_t          t;
    fixture_t        *f;
    pg_series_id_t    a;
    pg_series_set_t  *set;

    f = fixture(64 * 1024, TTL, PEND);
    t = pg_series_tenant_hash(str(""));
    a = sid(1);

    publish(f, t, a, T0);

    set = pg_series_attach(f->mem, f->size);
    assert_ptr_equal(set, f->set);
    assert_int_equal(pg_series_check(set, t, &a, T0 + 1), PG_SERIES_SEEN);
    assert_int_equal(stats(f).entries, 1);

    assert_null(pg_series_attach(f->mem, f->size / 2));
    assert_null(pg_series_attach(NULL, f->size));

    memset(f->mem, 0x5a, 256);
    assert_null(pg_series_attach(f->mem, f->size));

    fixture_free(f);
}


/*
 * Random operations against a model (an array): every answer, and the
 * counters, must agree.  The set is large enough never to evict.
 */

#define MODEL_N  512

typedef struct {
    int        state;          /* 0 absent, 1 pending, 2 seen */
    uint32_t   token;
    uint64_t   stamp;          /* seen: last seen; pending: deadline */
} model_t;


static void
test_model(void **state)
{
    int                 op, expect, got;
    unsigned            i, k, n;
    uint64_t            t, now;
    uint32_t            token;
    fixture_t          *f;
    model_t            *m;
    pg_series_id_t      ids[MODEL_N];
    pg_series_stats_t   st;
    unsigned            entries, pending, live, live_pending;

    f = fixture(256 * 1024, 50, 7);
    t = pg_series_tenant_hash(str("model"));
    m = calloc(MODEL_N, sizeof(model_t));
    assert_non_null(m);

    for (i = 0; i < MODEL_N; i++) {
        ids[i] = sid(i);
    }

    srand(12345);
    now = T0;

    for (n = 0; n < 200000; n++) {
        if (rand() % 50 == 0) {
            now += rand() % 4;
        }

        i = rand() % MODEL_N;
        op = rand() % 4;

        /* what the model says about i now */
        if (m[i].state == 1 && now > m[i].stamp) {
            expect = PG_SERIES_NEW;
        } else if (m[i].state == 2 && now - m[i].stamp > 50) {
            expect = PG_SERIES_NEW;
        } else {
            expect = m[i].state == 0 ? PG_SERIES_NEW
                     : m[i].state == 1 ? PG_SERIES_PENDING : PG_SERIES_SEEN;
        }

        switch (op) {

        case 0:
            got = pg_series_check(f->set, t, &ids[i], now);
            assert_int_equal(got, expect);
            if (got == PG_SERIES_SEEN) {
                m[i].stamp = now;
            }
            break;

        case 1:
            token = pg_series_offer(f->set, t, &ids[i], now);
            if (expect == PG_SERIES_NEW) {
                assert_int_not_equal(token, 0);
                m[i].state = 1;
                m[i].token = token;
                m[i].stamp = now + 7;
            } else {
                assert_int_equal(token, 0);
                if (expect == PG_SERIES_SEEN) {
                    m[i].stamp = now;
                }
            }
            break;

        case 2:
            got = pg_series_confirm(f->set, t, ids[i].hash, m[i].token, now);
            if (m[i].state == 1 && now <= m[i].stamp) {
                assert_int_equal(got, 1);
            } else if (m[i].state != 1) {
                assert_int_equal(got, 0);
            }
            /* a lapsed offer stands unless reclaimed for a new series */
            if (got) {
                m[i].state = 2;
                m[i].stamp = now;
            } else if (m[i].state == 1) {
                m[i].state = 0;
            }
            m[i].token = 0;
            break;

        default:
            got = pg_series_drop(f->set, t, ids[i].hash, m[i].token,
                                 PG_SERIES_FAILED);
            if (m[i].state == 1 && now <= m[i].stamp) {
                assert_int_equal(got, 1);
            } else if (m[i].state != 1) {
                assert_int_equal(got, 0);
            }
            if (m[i].state == 1) {
                m[i].state = 0;
            }
            m[i].token = 0;
            break;
        }
    }

    /* lapsed entries may have been reclaimed already, or not */

    entries = 0;
    pending = 0;
    live = 0;
    live_pending = 0;

    for (k = 0; k < MODEL_N; k++) {
        entries += m[k].state != 0;
        pending += m[k].state == 1;
        live += (m[k].state == 1 && now <= m[k].stamp)
                || (m[k].state == 2 && now - m[k].stamp <= 50);
        live_pending += m[k].state == 1 && now <= m[k].stamp;
    }

    st = stats(f);
    assert_in_range(st.entries, live, entries);
    assert_in_range(st.pending, live_pending, pending);
    assert_int_equal(st.evictions, 0);

    free(m);
    fixture_free(f);
}


/* ------------------------------------------------------------- message */


static char *
json(const pg_label_t *ls, size_t n, const char *tenant, int64_t ms)
{
    char           *s;
    pg_json_buf_t   b;

    pg_json_init(&b, test_allocator);
    pg_series_json(&b, ls, n, str(tenant), ms);
    assert_false(b.failed);

    s = malloc(b.len + 1);
    memcpy(s, b.data, b.len);
    s[b.len] = '\0';

    return s;
}


static void
test_message(void **state)
{
    char      key[PG_SERIES_KEY_LEN + 1];
    char     *s;

    static const pg_label_t  bare[] = { L("__name__", "up") };
    static const pg_label_t  html[] = {
        L("__name__", "a:b"), L("q", "<&>")
    };

    pg_series_key(0x0e8b89853c6261aaull, (uint8_t *) key);
    key[PG_SERIES_KEY_LEN] = '\0';
    assert_string_equal(key, "0e8b89853c6261aa");

    s = json(set_up_job, 3, "team-a", 1700000000123);
    assert_string_equal(s,
        "{\"metric\":\"up{instance=\\\"localhost:9090\\\","
        "job=\\\"prometheus\\\"}\",\"name\":\"up\","
        "\"labels\":{\"instance\":\"localhost:9090\","
        "\"job\":\"prometheus\"},\"tenant\":\"team-a\","
        "\"first_seen\":1700000000123}");
    free(s);

    /* \\, \" and \n in the metric string, then JSON-quoted once more */
    s = json(set_quote, 2, "", 5);
    assert_string_equal(s,
        "{\"metric\":\"weird{path=\\\"C:\\\\\\\\dir\\\\n\\\\\\\"x\\\\\\\"\\\"}"
        "\",\"name\":\"weird\","
        "\"labels\":{\"path\":\"C:\\\\dir\\n\\\"x\\\"\"},\"tenant\":\"\","
        "\"first_seen\":5}");
    free(s);

    /* labels before __name__ stay in order; the name prints first */
    s = json(set_upper_first, 3, "t", 0);
    assert_string_equal(s,
        "{\"metric\":\"m{A=\\\"x\\\",b=\\\"y\\\"}\",\"name\":\"m\","
        "\"labels\":{\"A\":\"x\",\"b\":\"y\"},\"tenant\":\"t\","
        "\"first_seen\":0}");
    free(s);

    s = json(bare, 1, "t", 1);
    assert_string_equal(s,
        "{\"metric\":\"up\",\"name\":\"up\",\"labels\":{},\"tenant\":\"t\","
        "\"first_seen\":1}");
    free(s);

    /* JSON stays HTML-safe, as everywhere in promgate */
    s = json(html, 2, "t", 1);
    assert_string_equal(s,
        "{\"metric\":\"a:b{q=\\\"\\u003c\\u0026\\u003e\\\"}\","
        "\"name\":\"a:b\",\"labels\":{\"q\":\"\\u003c\\u0026\\u003e\"},"
        "\"tenant\":\"t\",\"first_seen\":1}");
    free(s);

    s = json(set_utf8, 3, "t", 1);
    assert_string_equal(s,
        "{\"metric\":\"temp_celsius{city=\\\"Z\xc3\xbcrich\\\","
        "sensor=\\\"\xe6\xb8\xa9\xe5\xba\xa6\\\"}\",\"name\":\"temp_celsius\","
        "\"labels\":{\"city\":\"Z\xc3\xbcrich\","
        "\"sensor\":\"\xe6\xb8\xa9\xe5\xba\xa6\"},\"tenant\":\"t\","
        "\"first_seen\":1}");
    free(s);
}


static void
test_copy_labels(void **state)
{
    size_t                    i, len, n;
    uint8_t                   buf[1024];
    iter_ctx_t                c;
    pg_label_t               *ls;
    pg_pb_iter_t              it;
    pg_rw_request_t           req;
    Prometheus__Label         l[3], *lp[3];
    Prometheus__TimeSeries    ts, *tsp;
    Prometheus__WriteRequest  wr;

    prometheus__write_request__init(&wr);
    prometheus__time_series__init(&ts);

    for (i = 0; i < 3; i++) {
        prometheus__label__init(&l[i]);
        l[i].name = (char *) set_up_job[i].name.data;
        l[i].value = (char *) set_up_job[i].value.data;
        lp[i] = &l[i];
    }

    ts.n_labels = 3;
    ts.labels = lp;
    tsp = &ts;
    wr.n_timeseries = 1;
    wr.timeseries = &tsp;

    len = prometheus__write_request__pack(&wr, buf);

    memset(&c, 0, sizeof(c));
    assert_int_equal(pg_rw_decode(buf, len, PG_RW_V1, &test_allocator, &req,
                                  collect_ids, &c),
                     PG_RW_OK);

    /* the series' labels sit in the TimeSeries after the field header */
    memset(&it, 0, sizeof(it));
    it.p = buf + 2;
    it.end = buf + len;

    ls = pg_rw_copy_labels(it, &test_allocator, &n, 1);
    assert_non_null(ls);
    assert_int_equal(n, 3);

    memset(buf, 0, sizeof(buf));      /* the body is gone */

    for (i = 0; i < 3; i++) {
        assert_true(pg_str_eq(ls[i].name, set_up_job[i].name));
        assert_true(pg_str_eq(ls[i].value, set_up_job[i].value));
    }

    free(ls);
}


/*
 * A worker killed at any instruction leaves the set usable: a child changes
 * a set in shared memory without pause and is killed at a random moment;
 * the next call repairs what it left half done, and the set verifies.
 */
static void
test_killed_inside(void **state)
{
    int               k, status, repaired;
    pid_t             pid;
    size_t            size;
    uint32_t          token;
    uint64_t          now, r;
    pg_series_id_t    id;
    pg_series_set_t  *set;
    pg_series_stats_t st;
    void             *region;

    size = 64 * 1024;
    region = mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS,
                  -1, 0);
    assert_true(region != MAP_FAILED);

    now = 1700000000;
    set = pg_series_init(region, size, now, 0x1234, 3600, 60);
    assert_non_null(set);

    repaired = 0;

    for (k = 0; k < 300; k++) {
        pid = fork();
        assert_true(pid >= 0);

        if (pid == 0) {
            /* offers (evicting, the set is small), confirms, drops */
            for (r = 88172645463325252ull + k; /* void */ ; /* void */) {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                id.hash = r % 5000;
                id.check = (uint32_t) id.hash;

                token = pg_series_offer(set, r % 3, &id, now);

                if (token && (r & 1)) {
                    (void) pg_series_confirm(set, r % 3, id.hash, token, now);

                } else if (token) {
                    (void) pg_series_drop(set, r % 3, id.hash, token,
                                          PG_SERIES_FAILED);
                }

                (void) pg_series_check(set, r % 3, &id, now);
            }
        }

        usleep(200 + (k * 7919) % 3000);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);

        /* the next caller, after the one killed */
        id.hash = 100000 + k;
        id.check = 1;
        (void) pg_series_offer(set, 7, &id, now);

        assert_int_equal(pg_series_verify(set), 0);

        pg_series_stats(set, &st);
        repaired = (int) st.repairs;
    }

    /* the child spends its time inside calls: some kills landed there */
    assert_true(repaired > 0);

    munmap(region, size);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_hash_reference),
        cmocka_unit_test(test_hash_large),
        cmocka_unit_test(test_hash_fingerprint),
        cmocka_unit_test(test_hash_iter),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_check_batch),
        cmocka_unit_test(test_check_batch_tenants),
        cmocka_unit_test(test_pending_lapses),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_expired_reclaimed),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_collision),
        cmocka_unit_test(test_attach),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_message),
        cmocka_unit_test(test_copy_labels),
        cmocka_unit_test(test_killed_inside),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
