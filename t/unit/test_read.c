/*
 * Remote read (src/core/pg_read.c): request decoding, checks and
 * re-encoding; the merge of answers (dedupe, conflicts, replica labels,
 * order), its limits and malformed answers.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include <snappy-c.h>

#include "pg_read.h"
#include "remote.pb-c.h"


/* ------------------------------------------------------- test memory */

/* an arena of malloc'd blocks, freed after each test; it can fail on cue */

typedef struct arena_block_s  arena_block_t;

struct arena_block_s {
    arena_block_t  *next;
    void           *pad;            /* data 16-byte aligned, as malloc's */
    unsigned char   data[];
};

typedef struct {
    arena_block_t  *blocks;
    size_t          used;
    long            fail_after;     /* allocations left; -1: never fail */
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t        *a = ctx;
    arena_block_t  *b;

    if (a->fail_after == 0) {
        return NULL;
    }

    if (a->fail_after > 0) {
        a->fail_after--;
    }

    b = malloc(sizeof(arena_block_t) + size);
    assert_non_null(b);

    b->next = a->blocks;
    a->blocks = b;
    a->used += size;

    return b->data;
}


static void
arena_free(arena_t *a)
{
    arena_block_t  *b, *next;

    for (b = a->blocks; b; b = next) {
        next = b->next;
        free(b);
    }

    a->blocks = NULL;
    a->used = 0;
}


static arena_t         arena = { NULL, 0, -1 };
static pg_allocator_t  alloc = { arena_alloc, &arena };


static int
teardown(void **state)
{
    arena_free(&arena);
    arena.fail_after = -1;
    return 0;
}


/* ---------------------------------------------------- message builders */


static uint8_t *
compress(const uint8_t *raw, size_t n, size_t *len)
{
    uint8_t  *z;
    size_t    clen;

    clen = snappy_max_compressed_length(n);
    z = arena_alloc(&arena, clen);
    assert_int_equal(snappy_compress((const char *) raw, n, (char *) z,
                                     &clen), SNAPPY_OK);
    *len = clen;
    return z;
}


/* a query on __name__ = name */

static Prometheus__Query *
query(const char *name, int64_t start, int64_t end)
{
    Prometheus__Query         *q;
    Prometheus__LabelMatcher  *lm;

    q = arena_alloc(&arena, sizeof(*q));
    prometheus__query__init(q);
    q->start_timestamp_ms = start;
    q->end_timestamp_ms = end;

    lm = arena_alloc(&arena, sizeof(*lm));
    prometheus__label_matcher__init(lm);
    lm->type = PROMETHEUS__LABEL_MATCHER__TYPE__EQ;
    lm->name = "__name__";
    lm->value = (char *) name;

    q->matchers = arena_alloc(&arena, sizeof(void *));
    q->matchers[0] = lm;
    q->n_matchers = 1;

    return q;
}


static uint8_t *
request(Prometheus__Query **queries, size_t nq, const int *types,
    size_t ntypes, size_t *len)
{
    size_t                    n;
    uint8_t                  *raw;
    Prometheus__ReadRequest   rr = PROMETHEUS__READ_REQUEST__INIT;

    rr.queries = queries;
    rr.n_queries = nq;
    rr.accepted_response_types = (Prometheus__ReadRequest__ResponseType *)
                                 types;
    rr.n_accepted_response_types = ntypes;

    n = prometheus__read_request__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_request__pack(&rr, raw);

    return compress(raw, n, len);
}


/*
 * A series from a compact description: labels "k=v,k=v" (any order) and
 * samples as (ts, value) pairs.
 */

static Prometheus__TimeSeries *
series(const char *labels, const int64_t *ts, const double *vs, size_t n)
{
    char                    *copy, *tok, *eq, *save;
    size_t                   i;
    Prometheus__Label       *l;
    Prometheus__Sample      *s;
    Prometheus__TimeSeries  *t;

    t = arena_alloc(&arena, sizeof(*t));
    prometheus__time_series__init(t);

    t->labels = arena_alloc(&arena, 16 * sizeof(void *));
    copy = arena_alloc(&arena, strlen(labels) + 1);
    strcpy(copy, labels);

    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
    {
        eq = strchr(tok, '=');
        assert_non_null(eq);
        *eq = '\0';

        l = arena_alloc(&arena, sizeof(*l));
        prometheus__label__init(l);
        l->name = tok;
        l->value = eq + 1;
        t->labels[t->n_labels++] = l;
    }

    t->samples = arena_alloc(&arena, (n ? n : 1) * sizeof(void *));

    for (i = 0; i < n; i++) {
        s = arena_alloc(&arena, sizeof(*s));
        prometheus__sample__init(s);
        s->timestamp = ts[i];
        s->value = vs[i];
        t->samples[i] = s;
    }

    t->n_samples = n;

    return t;
}


/* a ReadResponse of nq results; series are given as (query index, ts) */

typedef struct {
    size_t                   q;
    Prometheus__TimeSeries  *ts;
} qseries_t;


static uint8_t *
response(size_t nq, const qseries_t *ss, size_t ns, size_t *len)
{
    size_t                     i, n;
    uint8_t                   *raw;
    Prometheus__QueryResult  **qr;
    Prometheus__ReadResponse   rr = PROMETHEUS__READ_RESPONSE__INIT;

    qr = arena_alloc(&arena, (nq ? nq : 1) * sizeof(void *));

    for (i = 0; i < nq; i++) {
        qr[i] = arena_alloc(&arena, sizeof(Prometheus__QueryResult));
        prometheus__query_result__init(qr[i]);
        qr[i]->timeseries = arena_alloc(&arena, (ns ? ns : 1)
                                                * sizeof(void *));
    }

    for (i = 0; i < ns; i++) {
        qr[ss[i].q]->timeseries[qr[ss[i].q]->n_timeseries++] = ss[i].ts;
    }

    rr.results = qr;
    rr.n_results = nq;

    n = prometheus__read_response__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_response__pack(&rr, raw);

    return compress(raw, n, len);
}


static Prometheus__ReadResponse *
unpack_response(const uint8_t *z, size_t len)
{
    size_t                     n;
    uint8_t                   *raw;
    Prometheus__ReadResponse  *rr;

    assert_int_equal(snappy_uncompressed_length((const char *) z, len, &n),
                     SNAPPY_OK);
    raw = arena_alloc(&arena, n ? n : 1);
    assert_int_equal(snappy_uncompress((const char *) z, len, (char *) raw,
                                       &n), SNAPPY_OK);

    rr = prometheus__read_response__unpack(NULL, n, raw);
    assert_non_null(rr);

    return rr;
}


/* "k=v,k=v" of a series, in its order */

static const char *
labels_of(Prometheus__TimeSeries *t)
{
    static char  buf[512];
    size_t       i, n;

    n = 0;
    buf[0] = '\0';

    for (i = 0; i < t->n_labels; i++) {
        n += snprintf(buf + n, sizeof(buf) - n, "%s%s=%s", i ? "," : "",
                      t->labels[i]->name, t->labels[i]->value);
    }

    return buf;
}


static void
assert_samples(Prometheus__TimeSeries *t, const int64_t *ts,
    const double *vs, size_t n)
{
    size_t  i;

    assert_int_equal(t->n_samples, n);

    for (i = 0; i < n; i++) {
        assert_int_equal(t->samples[i]->timestamp, ts[i]);
        assert_true(t->samples[i]->value == vs[i]);
    }
}


static const pg_read_limits_t  big = { 1000000, 64 * 1024 * 1024 };


/* merges the answers given; returns the decoded merged response */

static Prometheus__ReadResponse *
merge(size_t nq, const pg_str_t *drop, size_t ndrop,
    const pg_read_limits_t *limits, uint8_t **answers, size_t *lens,
    size_t n, pg_read_stats_t *st)
{
    size_t            i, len;
    uint8_t          *out;
    pg_read_merge_t  *m;
    pg_read_error_t   err;

    m = pg_read_merge_create(&alloc, nq, drop, ndrop, limits);
    assert_non_null(m);

    for (i = 0; i < n; i++) {
        assert_int_equal(pg_read_merge_add(m, answers[i], lens[i], &alloc,
                                           &err), PG_READ_OK);
    }

    assert_int_equal(pg_read_merge_finish(m, &out, &len, st, &err),
                     PG_READ_OK);

    return unpack_response(out, len);
}


/* -------------------------------------------------------------- requests */


static void
test_request_modes(void **state)
{
    size_t             len;
    uint8_t           *body;
    pg_read_error_t    err;
    pg_read_request_t  req;
    Prometheus__Query *q[2];

    static const int   samples[] = { 0 };
    static const int   streamed[] = { 1 };
    static const int   both[] = { 1, 0 };
    static const int   unknown[] = { 7 };

    q[0] = query("up", 1000, 2000);
    q[1] = query("down", 3000, 4000);

    body = request(q, 2, NULL, 0, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(req.nqueries, 2);
    assert_int_equal(req.accept, 0);
    assert_int_equal(pg_read_request_mode(&req, 2), PG_READ_MODE_SAMPLES);

    body = request(q, 2, samples, 1, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(pg_read_request_mode(&req, 2), PG_READ_MODE_SAMPLES);

    body = request(q, 2, both, 2, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(req.accept,
                     PG_READ_ACCEPT_SAMPLES | PG_READ_ACCEPT_STREAMED);
    assert_int_equal(pg_read_request_mode(&req, 1), PG_READ_MODE_REENCODE);
    assert_int_equal(pg_read_request_mode(&req, 3), PG_READ_MODE_REENCODE);

    body = request(q, 2, streamed, 1, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(pg_read_request_mode(&req, 1), PG_READ_MODE_PASSTHROUGH);
    assert_int_equal(pg_read_request_mode(&req, 2), PG_READ_MODE_UNSUPPORTED);

    body = request(q, 2, unknown, 1, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(req.accept, PG_READ_ACCEPT_UNKNOWN);
    assert_int_equal(pg_read_request_mode(&req, 1), PG_READ_MODE_UNSUPPORTED);
}


static void
test_request_reencode(void **state)
{
    size_t                    len, zlen, n;
    uint8_t                  *body, *z, *raw;
    pg_read_error_t           err;
    pg_read_request_t         req;
    Prometheus__Query        *q[1];
    Prometheus__ReadRequest  *rr;

    static const int          both[] = { 1, 0 };

    q[0] = query("up", -5, 123456789012LL);
    body = request(q, 1, both, 2, &len);

    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(pg_read_request_encode_samples(&req, &alloc, &z, &zlen),
                     PG_READ_OK);

    assert_int_equal(snappy_uncompressed_length((const char *) z, zlen, &n),
                     SNAPPY_OK);
    raw = arena_alloc(&arena, n);
    assert_int_equal(snappy_uncompress((const char *) z, zlen, (char *) raw,
                                       &n), SNAPPY_OK);

    rr = prometheus__read_request__unpack(NULL, n, raw);
    assert_non_null(rr);
    assert_int_equal(rr->n_accepted_response_types, 1);
    assert_int_equal(rr->accepted_response_types[0],
                     PROMETHEUS__READ_REQUEST__RESPONSE_TYPE__SAMPLES);
    assert_int_equal(rr->n_queries, 1);
    assert_int_equal(rr->queries[0]->start_timestamp_ms, -5);
    assert_int_equal(rr->queries[0]->end_timestamp_ms, 123456789012LL);
    assert_string_equal(rr->queries[0]->matchers[0]->value, "up");

    prometheus__read_request__free_unpacked(rr, NULL);

    /* what was decoded again is forwardable as is */
    assert_int_equal(pg_read_request_decode(z, zlen, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(pg_read_request_mode(&req, 2), PG_READ_MODE_SAMPLES);
}


static void
test_request_bad(void **state)
{
    size_t                     len, n;
    uint8_t                   *body, *raw;
    pg_read_error_t            err;
    pg_read_request_t          req;
    Prometheus__Query         *q[1];
    Prometheus__ReadRequest    rr = PROMETHEUS__READ_REQUEST__INIT;

    static const uint8_t       garbage[] = { 0x0a, 0xff, 0xff, 0x01 };
    static const uint8_t       not_snappy[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xff };
    /* declares 1 GiB: a bomb */
    static const uint8_t       bomb[] = { 0x80, 0x80, 0x80, 0x80, 0x04, 0x00 };

    assert_int_equal(pg_read_request_decode(not_snappy, sizeof(not_snappy),
                                            1 << 20, &alloc, &req, &err),
                     PG_READ_SNAPPY);
    assert_int_equal(pg_read_request_decode(not_snappy, 0, 1 << 20, &alloc,
                                            &req, &err), PG_READ_SNAPPY);

    arena.used = 0;
    assert_int_equal(pg_read_request_decode(bomb, sizeof(bomb), 1 << 20,
                                            &alloc, &req, &err),
                     PG_READ_TOO_LARGE);
    assert_true(arena.used < 4096);
    assert_non_null(strstr(err.message, "1073741824"));

    body = compress(garbage, sizeof(garbage), &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_MALFORMED);

    /* matcher checks */

    q[0] = query("up", 0, 1);
    rr.queries = q;
    rr.n_queries = 1;

    q[0]->matchers[0]->type = 9;
    n = prometheus__read_request__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_request__pack(&rr, raw);
    body = compress(raw, n, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_INVALID);
    assert_non_null(strstr(err.message, "matcher type 9"));

    q[0]->matchers[0]->type = PROMETHEUS__LABEL_MATCHER__TYPE__RE;
    q[0]->matchers[0]->name = "";
    n = prometheus__read_request__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_request__pack(&rr, raw);
    body = compress(raw, n, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_INVALID);
    assert_non_null(strstr(err.message, "empty label name"));

    q[0]->matchers[0]->name = "job";
    q[0]->matchers[0]->value = "\xc3\x28";
    n = prometheus__read_request__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_request__pack(&rr, raw);
    body = compress(raw, n, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_INVALID);
    assert_non_null(strstr(err.message, "UTF-8"));

    /* the decoded size limit counts the uncompressed body */
    q[0]->matchers[0]->value = "x";
    n = prometheus__read_request__get_packed_size(&rr);
    raw = arena_alloc(&arena, n);
    prometheus__read_request__pack(&rr, raw);
    body = compress(raw, n, &len);
    assert_int_equal(pg_read_request_decode(body, len, n, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(pg_read_request_decode(body, len, n - 1, &alloc, &req,
                                            &err), PG_READ_TOO_LARGE);

    /* zero queries is valid (Prometheus answers zero results) */
    body = request(NULL, 0, NULL, 0, &len);
    assert_int_equal(pg_read_request_decode(body, len, 1 << 20, &alloc, &req,
                                            &err), PG_READ_OK);
    assert_int_equal(req.nqueries, 0);
}


/* ----------------------------------------------------------------- merge */


static void
test_merge_union_dedupe(void **state)
{
    size_t                     lens[2];
    uint8_t                   *ans[2];
    pg_read_stats_t            st;
    qseries_t                  a[3], b[2];
    Prometheus__ReadResponse  *rr;

    /* A holds even timestamps and 50; B odd ones and 50 too */
    static const int64_t  ta[] = { 10, 20, 30, 40, 50 };
    static const double   va[] = { 1, 2, 3, 4, 5 };
    static const int64_t  tb[] = { 15, 25, 35, 45, 50 };
    static const double   vb[] = { 1.5, 2.5, 3.5, 4.5, 5 };
    static const int64_t  tm[] = { 10, 15, 20, 25, 30, 35, 40, 45, 50 };
    static const double   vm[] = { 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5 };
    static const int64_t  tz[] = { 7 };
    static const double   vz[] = { 70 };

    a[0].q = 0;
    a[0].ts = series("__name__=m,job=x", ta, va, 5);
    a[1].q = 0;
    a[1].ts = series("__name__=m,job=a_only", ta, va, 2);
    a[2].q = 1;
    a[2].ts = series("__name__=z", tz, vz, 1);
    ans[0] = response(2, a, 3, &lens[0]);

    b[0].q = 0;
    b[0].ts = series("job=x,__name__=m", tb, vb, 5);    /* unsorted labels */
    b[1].q = 0;
    b[1].ts = series("__name__=a,job=x", tb, vb, 1);
    ans[1] = response(2, b, 2, &lens[1]);

    rr = merge(2, NULL, 0, &big, ans, lens, 2, &st);

    assert_int_equal(rr->n_results, 2);
    assert_int_equal(rr->results[0]->n_timeseries, 3);

    /* sorted by label set */
    assert_string_equal(labels_of(rr->results[0]->timeseries[0]),
                        "__name__=a,job=x");
    assert_string_equal(labels_of(rr->results[0]->timeseries[1]),
                        "__name__=m,job=a_only");
    assert_string_equal(labels_of(rr->results[0]->timeseries[2]),
                        "__name__=m,job=x");

    assert_samples(rr->results[0]->timeseries[2], tm, vm, 9);
    assert_samples(rr->results[0]->timeseries[1], ta, va, 2);

    assert_int_equal(rr->results[1]->n_timeseries, 1);
    assert_samples(rr->results[1]->timeseries[0], tz, vz, 1);

    assert_int_equal(st.series, 4);
    assert_int_equal(st.samples, 9 + 2 + 1 + 1);
    assert_int_equal(st.duplicates, 1);

    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_conflict_first_wins(void **state)
{
    size_t                     lens[3];
    uint8_t                   *ans[3];
    pg_read_stats_t            st;
    qseries_t                  s;
    Prometheus__ReadResponse  *rr;

    static const int64_t  t1[] = { 100, 200 };
    static const double   v1[] = { 1, 2 };
    static const int64_t  t2[] = { 200, 300 };
    static const double   v2[] = { 20, 30 };
    static const int64_t  t3[] = { 100, 300, 400 };
    static const double   v3[] = { 10, 300, 400 };
    static const int64_t  tm[] = { 100, 200, 300, 400 };
    static const double   vm[] = { 1, 2, 30, 400 };

    s.q = 0;
    s.ts = series("__name__=c", t1, v1, 2);
    ans[0] = response(1, &s, 1, &lens[0]);
    s.ts = series("__name__=c", t2, v2, 2);
    ans[1] = response(1, &s, 1, &lens[1]);
    s.ts = series("__name__=c", t3, v3, 3);
    ans[2] = response(1, &s, 1, &lens[2]);

    rr = merge(1, NULL, 0, &big, ans, lens, 3, &st);

    assert_int_equal(rr->results[0]->n_timeseries, 1);
    assert_samples(rr->results[0]->timeseries[0], tm, vm, 4);
    assert_int_equal(st.duplicates, 3);

    prometheus__read_response__free_unpacked(rr, NULL);

    /* the other order: the other target wins */

    ans[0] = ans[2];
    lens[0] = lens[2];
    s.ts = series("__name__=c", t1, v1, 2);
    ans[1] = response(1, &s, 1, &lens[1]);

    rr = merge(1, NULL, 0, &big, ans, lens, 2, &st);
    assert_int_equal(rr->results[0]->timeseries[0]->samples[0]->value, 10);
    assert_int_equal(rr->results[0]->timeseries[0]->samples[1]->value, 2);
    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_unsorted_and_duplicate_within(void **state)
{
    size_t                     len;
    uint8_t                   *ans;
    pg_read_stats_t            st;
    qseries_t                  s;
    Prometheus__ReadResponse  *rr;

    static const int64_t  t[] = { 30, 10, 20, 10, 30 };
    static const double   v[] = { 3, 1, 2, 11, 33 };
    static const int64_t  tm[] = { 10, 20, 30 };
    static const double   vm[] = { 1, 2, 3 };

    s.q = 0;
    s.ts = series("__name__=u", t, v, 5);
    ans = response(1, &s, 1, &len);

    rr = merge(1, NULL, 0, &big, &ans, &len, 1, &st);

    /* stable: the first of each timestamp, in answer order, stays */
    assert_samples(rr->results[0]->timeseries[0], tm, vm, 3);
    assert_int_equal(st.duplicates, 2);

    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_replica_labels(void **state)
{
    size_t                     lens[2];
    uint8_t                   *ans[2];
    pg_str_t                   drop[2] = { pg_str_lit("replica"),
                                           pg_str_lit("__replica__") };
    pg_read_stats_t            st;
    qseries_t                  a[2], b[1];
    Prometheus__ReadResponse  *rr;

    static const int64_t  ta[] = { 1000, 2000, 3000 };
    static const double   va[] = { 1, 2, 3 };
    static const int64_t  tb[] = { 2000, 3000, 4000 };
    static const double   vb[] = { 2, 3.5, 4 };
    static const int64_t  tm[] = { 1000, 2000, 3000, 4000 };
    static const double   vm[] = { 1, 2, 3, 4 };

    a[0].q = 0;
    a[0].ts = series("__name__=r,instance=i,replica=a", ta, va, 3);
    a[1].q = 0;
    a[1].ts = series("__name__=r,instance=j,replica=a", ta, va, 1);
    ans[0] = response(1, a, 2, &lens[0]);

    b[0].q = 0;
    b[0].ts = series("__name__=r,instance=i,replica=b", tb, vb, 3);
    ans[1] = response(1, b, 1, &lens[1]);

    /* without the replica label: one series per replica */

    rr = merge(1, NULL, 0, &big, ans, lens, 2, &st);
    assert_int_equal(rr->results[0]->n_timeseries, 3);
    assert_string_equal(labels_of(rr->results[0]->timeseries[0]),
                        "__name__=r,instance=i,replica=a");
    assert_string_equal(labels_of(rr->results[0]->timeseries[1]),
                        "__name__=r,instance=i,replica=b");
    prometheus__read_response__free_unpacked(rr, NULL);

    /* with it: merged, first replica listed wins at 3000 */

    rr = merge(1, drop, 2, &big, ans, lens, 2, &st);
    assert_int_equal(rr->results[0]->n_timeseries, 2);
    assert_string_equal(labels_of(rr->results[0]->timeseries[0]),
                        "__name__=r,instance=i");
    assert_samples(rr->results[0]->timeseries[0], tm, vm, 4);
    assert_string_equal(labels_of(rr->results[0]->timeseries[1]),
                        "__name__=r,instance=j");
    assert_int_equal(st.duplicates, 2);
    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_special_values(void **state)
{
    size_t                     len;
    uint8_t                   *ans;
    double                     stale, nzero, got;
    uint64_t                   bits, gbits;
    pg_read_stats_t            st;
    qseries_t                  s[2];
    Prometheus__ReadResponse  *rr;

    int64_t                    t[5] = { -1000, 0, 1, 2, 3 };
    double                     v[5];

    bits = 0x7ff0000000000002ULL;               /* the staleness marker */
    memcpy(&stale, &bits, sizeof(double));
    nzero = -0.0;

    v[0] = 1;
    v[1] = 0;
    v[2] = stale;
    v[3] = nzero;
    v[4] = INFINITY;

    s[0].q = 0;
    s[0].ts = series("__name__=s", t, v, 5);
    s[1].q = 0;
    s[1].ts = series("__name__=e,empty=", NULL, NULL, 0);
    ans = response(1, s, 2, &len);

    rr = merge(1, NULL, 0, &big, &ans, &len, 1, &st);

    assert_int_equal(rr->results[0]->n_timeseries, 2);

    /* a series without samples stays; an empty label value too */
    assert_string_equal(labels_of(rr->results[0]->timeseries[0]),
                        "__name__=e,empty=");
    assert_int_equal(rr->results[0]->timeseries[0]->n_samples, 0);

    assert_int_equal(rr->results[0]->timeseries[1]->n_samples, 5);
    assert_int_equal(rr->results[0]->timeseries[1]->samples[0]->timestamp,
                     -1000);

    got = rr->results[0]->timeseries[1]->samples[2]->value;
    memcpy(&gbits, &got, sizeof(double));
    assert_true(gbits == bits);

    /* proto3 leaves zero out, -0.0 included (as Prometheus does) */
    assert_true(rr->results[0]->timeseries[1]->samples[3]->value == 0);

    assert_true(isinf(rr->results[0]->timeseries[1]->samples[4]->value));

    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_histograms(void **state)
{
    size_t                     lens[2], i, n;
    uint8_t                   *ans[2], *raw;
    pg_read_stats_t            st;
    qseries_t                  s;
    Prometheus__Histogram     *h[3];
    Prometheus__ReadResponse  *rr;
    Prometheus__ReadResponse   r = PROMETHEUS__READ_RESPONSE__INIT;
    Prometheus__QueryResult    qr = PROMETHEUS__QUERY_RESULT__INIT;
    Prometheus__QueryResult   *qrs[1];
    Prometheus__TimeSeries    *ts[1];

    static const int64_t       hts[3] = { 300, 100, 200 };

    for (i = 0; i < 3; i++) {
        h[i] = arena_alloc(&arena, sizeof(Prometheus__Histogram));
        prometheus__histogram__init(h[i]);
        h[i]->timestamp = hts[i];
        h[i]->count_case = PROMETHEUS__HISTOGRAM__COUNT_COUNT_INT;
        h[i]->count_int = 10 + i;
        h[i]->sum = 1.5 * (double) i;
    }

    /* first answer: histograms at 300 and 100; second: 100 (loses), 200 */

    for (i = 0; i < 2; i++) {
        ts[0] = series("__name__=h", NULL, NULL, 0);
        ts[0]->histograms = i == 0 ? &h[0] : &h[1];
        ts[0]->n_histograms = 2;

        if (i == 1) {
            Prometheus__Histogram  *h2[2];

            h2[0] = arena_alloc(&arena, sizeof(Prometheus__Histogram));
            prometheus__histogram__init(h2[0]);
            h2[0]->timestamp = 100;
            h2[0]->count_case = PROMETHEUS__HISTOGRAM__COUNT_COUNT_INT;
            h2[0]->count_int = 99;
            h2[1] = h[2];
            ts[0]->histograms = arena_alloc(&arena, 2 * sizeof(void *));
            memcpy(ts[0]->histograms, h2, sizeof(h2));
        }

        qr.timeseries = ts;
        qr.n_timeseries = 1;
        qrs[0] = &qr;
        r.results = qrs;
        r.n_results = 1;

        n = prometheus__read_response__get_packed_size(&r);
        raw = arena_alloc(&arena, n);
        prometheus__read_response__pack(&r, raw);
        ans[i] = compress(raw, n, &lens[i]);
    }

    (void) s;

    rr = merge(1, NULL, 0, &big, ans, lens, 2, &st);

    assert_int_equal(rr->results[0]->n_timeseries, 1);
    assert_int_equal(rr->results[0]->timeseries[0]->n_histograms, 3);
    assert_int_equal(rr->results[0]->timeseries[0]->histograms[0]->timestamp,
                     100);
    assert_int_equal(rr->results[0]->timeseries[0]->histograms[0]->count_int,
                     11);
    assert_int_equal(rr->results[0]->timeseries[0]->histograms[1]->timestamp,
                     200);
    assert_int_equal(rr->results[0]->timeseries[0]->histograms[2]->timestamp,
                     300);
    assert_int_equal(st.histograms, 3);
    assert_int_equal(st.duplicates, 1);

    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_limits(void **state)
{
    size_t             lens[2], len, i;
    uint8_t           *ans[2], *out;
    int64_t            t[100];
    double             v[100];
    qseries_t          s;
    pg_read_merge_t   *m;
    pg_read_error_t    err;
    pg_read_stats_t    st;
    pg_read_limits_t   lim;

    for (i = 0; i < 100; i++) {
        t[i] = (int64_t) i * 1000;
        v[i] = (double) i;
    }

    s.q = 0;
    s.ts = series("__name__=a", t, v, 60);
    ans[0] = response(1, &s, 1, &lens[0]);
    s.ts = series("__name__=b", t, v, 60);
    ans[1] = response(1, &s, 1, &lens[1]);

    /* one answer over the sample limit */

    lim.max_samples = 59;
    lim.max_size = 1 << 20;
    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_TOO_MANY_SAMPLES);
    assert_non_null(strstr(err.message, "60 samples"));

    /* each answer within it, the merge over it */

    lim.max_samples = 100;
    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_add(m, ans[1], lens[1], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_finish(m, &out, &len, &st, &err),
                     PG_READ_TOO_MANY_SAMPLES);

    /* duplicates do not count: the same answer twice is 60 samples */

    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_finish(m, &out, &len, &st, &err),
                     PG_READ_OK);
    assert_int_equal(st.samples, 60);

    /* an answer declaring more than max_size, refused before allocation */

    lim.max_samples = 1000;
    lim.max_size = 100;
    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    arena.used = 0;
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_TOO_LARGE);
    assert_true(arena.used < 100);

    /* answers within it, the merged response over it */

    s.ts = series("__name__=a", t, v, 4);
    ans[0] = response(1, &s, 1, &lens[0]);
    s.ts = series("__name__=b", t, v, 4);
    ans[1] = response(1, &s, 1, &lens[1]);

    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_add(m, ans[1], lens[1], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_finish(m, &out, &len, &st, &err),
                     PG_READ_TOO_LARGE);
    assert_non_null(strstr(err.message, "above the limit of 100"));
}


/* protobuf-c expands tiny messages a lot: the scratch budget stops it */

static void
test_merge_memory_budget(void **state)
{
    size_t             i, n, len, ts_len;
    uint8_t           *raw, *p, *z;
    pg_read_merge_t   *m;
    pg_read_error_t    err;
    pg_read_limits_t   lim;

    /* one TimeSeries of 200000 empty samples (2 bytes each on the wire) */

    n = 200000;
    ts_len = 2 * n;
    raw = arena_alloc(&arena, ts_len + 32);
    p = raw;

    *p++ = 0x0a;                                 /* results */
    len = 1 + 3 + ts_len;                        /* timeseries tag+varint */
    *p++ = (uint8_t) (len | 0x80);
    *p++ = (uint8_t) ((len >> 7) | 0x80);
    *p++ = (uint8_t) (len >> 14);
    *p++ = 0x0a;                                 /* timeseries */
    *p++ = (uint8_t) (ts_len | 0x80);
    *p++ = (uint8_t) ((ts_len >> 7) | 0x80);
    *p++ = (uint8_t) (ts_len >> 14);

    for (i = 0; i < n; i++) {
        *p++ = 0x12;                             /* samples, empty */
        *p++ = 0x00;
    }

    z = compress(raw, p - raw, &len);

    lim.max_samples = 10 * n;
    lim.max_size = 64 * 1024 * 1024;
    m = pg_read_merge_create(&alloc, 1, NULL, 0, &lim);
    assert_non_null(m);

    arena.used = 0;
    assert_int_equal(pg_read_merge_add(m, z, len, &alloc, &err),
                     PG_READ_TOO_LARGE);
    assert_non_null(strstr(err.message, "memory"));
    assert_true(arena.used < (size_t) (p - raw) * 12 + 65536);
}


static void
test_merge_malformed(void **state)
{
    size_t                     len, lens[3], olen;
    uint8_t                   *ans[3], *out;
    qseries_t                  s;
    pg_read_merge_t           *m;
    pg_read_error_t            err;
    pg_read_stats_t            st;
    Prometheus__ReadResponse  *rr;

    static const uint8_t  garbage[] = { 0x0a, 0x05, 0x0a, 0xff };
    static const uint8_t  not_snappy[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff };
    static const int64_t  t[] = { 1, 2 };
    static const double   v[] = { 1, 2 };

    m = pg_read_merge_create(&alloc, 2, NULL, 0, &big);

    assert_int_equal(pg_read_merge_add(m, not_snappy, sizeof(not_snappy),
                                       &alloc, &err), PG_READ_SNAPPY);

    ans[0] = compress(garbage, sizeof(garbage), &lens[0]);
    assert_int_equal(pg_read_merge_add(m, ans[0], lens[0], &alloc, &err),
                     PG_READ_MALFORMED);

    /* a truncated block (an answer cut by a buffer) */
    s.q = 0;
    s.ts = series("__name__=ok", t, v, 2);
    ans[1] = response(2, &s, 1, &lens[1]);
    assert_int_equal(pg_read_merge_add(m, ans[1], lens[1] - 3, &alloc, &err),
                     PG_READ_SNAPPY);

    /* one result for two queries */
    s.ts = series("__name__=bad", t, v, 2);
    ans[2] = response(1, &s, 1, &len);
    assert_int_equal(pg_read_merge_add(m, ans[2], len, &alloc, &err),
                     PG_READ_INVALID);
    assert_non_null(strstr(err.message, "1 results for 2 queries"));

    /* failed adds left nothing behind */
    assert_int_equal(pg_read_merge_add(m, ans[1], lens[1], &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_finish(m, &out, &olen, &st, &err),
                     PG_READ_OK);

    rr = unpack_response(out, olen);
    assert_int_equal(rr->n_results, 2);
    assert_int_equal(rr->results[0]->n_timeseries, 1);
    assert_string_equal(labels_of(rr->results[0]->timeseries[0]),
                        "__name__=ok");
    assert_int_equal(rr->results[1]->n_timeseries, 0);
    prometheus__read_response__free_unpacked(rr, NULL);
}


static void
test_merge_empty_and_nomem(void **state)
{
    size_t                     len;
    uint8_t                   *out, *ans;
    qseries_t                  s;
    pg_read_merge_t           *m;
    pg_read_error_t            err;
    pg_read_stats_t            st;
    Prometheus__ReadResponse  *rr;

    static const int64_t  t[] = { 1, 2 };
    static const double   v[] = { 1, 2 };

    /* nothing added: empty results, one per query */

    m = pg_read_merge_create(&alloc, 3, NULL, 0, &big);
    assert_int_equal(pg_read_merge_finish(m, &out, &len, &st, &err),
                     PG_READ_OK);
    rr = unpack_response(out, len);
    assert_int_equal(rr->n_results, 3);
    prometheus__read_response__free_unpacked(rr, NULL);

    /* zero queries */

    m = pg_read_merge_create(&alloc, 0, NULL, 0, &big);
    ans = response(0, NULL, 0, &len);
    assert_int_equal(pg_read_merge_add(m, ans, len, &alloc, &err),
                     PG_READ_OK);
    assert_int_equal(pg_read_merge_finish(m, &out, &len, &st, &err),
                     PG_READ_OK);

    /* the allocator failing anywhere is NOMEM, never a crash */

    s.q = 0;
    s.ts = series("__name__=n,a=b", t, v, 2);
    ans = response(1, &s, 1, &len);

    for (long k = 0; k < 40; k++) {
        pg_read_rc_e  rc;

        arena.fail_after = -1;
        m = pg_read_merge_create(&alloc, 1, NULL, 0, &big);
        arena.fail_after = k;

        rc = pg_read_merge_add(m, ans, len, &alloc, &err);
        if (rc == PG_READ_OK) {
            size_t  olen;

            rc = pg_read_merge_finish(m, &out, &olen, &st, &err);
        }

        assert_true(rc == PG_READ_OK || rc == PG_READ_NOMEM);
    }

    arena.fail_after = -1;
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_request_modes, teardown),
        cmocka_unit_test_teardown(test_request_reencode, teardown),
        cmocka_unit_test_teardown(test_request_bad, teardown),
        cmocka_unit_test_teardown(test_merge_union_dedupe, teardown),
        cmocka_unit_test_teardown(test_merge_conflict_first_wins, teardown),
        cmocka_unit_test_teardown(test_merge_unsorted_and_duplicate_within,
                                  teardown),
        cmocka_unit_test_teardown(test_merge_replica_labels, teardown),
        cmocka_unit_test_teardown(test_merge_special_values, teardown),
        cmocka_unit_test_teardown(test_merge_histograms, teardown),
        cmocka_unit_test_teardown(test_merge_limits, teardown),
        cmocka_unit_test_teardown(test_merge_memory_budget, teardown),
        cmocka_unit_test_teardown(test_merge_malformed, teardown),
        cmocka_unit_test_teardown(test_merge_empty_and_nomem, teardown),
    };

    return cmocka_run_group_tests_name("remote read", tests, NULL, NULL);
}
