/*
 * Remote-write 1.0 decoding and validation (src/core/pg_rw.c, pg_snappy.c)
 * with Prometheus 3.5's rules: an invalid series is counted, marked and
 * left out, never failing the request.  Requests are built with protobuf-c
 * from proto/, so the zero-copy decoder is checked against an independent
 * encoder.  2.0 and the translations: test_rw2.c.
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

#include "pg_rw.h"
#include "remote.pb-c.h"
#include "rw_build.h"


/* a bump allocator over static memory, reset per decode; a cap for NOMEM */

static uint8_t  arena[1 << 20];
static size_t   arena_used, arena_cap = sizeof(arena);


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


static pg_allocator_t  alloc = { arena_alloc, NULL };


static pg_rw_reason_e
decode(const uint8_t *buf, size_t len, pg_rw_request_t *r,
    pg_rw_series_pt cb, void *ctx)
{
    arena_used = 0;
    return pg_rw_decode(buf, len, PG_RW_V1, &alloc, r, cb, ctx);
}


static pg_rw_reason_e
scan(req_t *q, pg_rw_request_t *r)
{
    req_pack(q);
    return decode(q->buf, q->len, r, NULL, NULL);
}


static void
assert_all_valid(const pg_rw_request_t *r)
{
    size_t  i;

    assert_int_equal(r->invalid_series, 0);
    assert_int_equal(r->invalid_metadata, 0);
    assert_null(r->dropped);
    assert_null(r->dropped_metadata);
    assert_int_equal(r->first.reason, PG_RW_OK);

    for (i = 0; i < PG_RW_NREASONS; i++) {
        assert_int_equal(r->invalid[i], 0);
    }
}


/* the request is fine, one series (index i) is left out for `reason` */
static void
assert_one_invalid(const pg_rw_request_t *r, size_t i, pg_rw_reason_e reason)
{
    assert_int_equal(r->invalid_series, 1);
    assert_int_equal(r->invalid[reason], 1);
    assert_non_null(r->dropped);
    assert_true(pg_rw_bit(r->dropped, i));
    assert_int_equal(r->first.reason, reason);
    assert_int_equal(r->first.series, i);
    assert_non_null(memchr(r->first.message, '\0', sizeof(r->first.message)));
}


static void
test_valid_counts(void **state)
{
    req_t            q;
    size_t           i;
    pg_rw_request_t  r;

    req_init(&q);
    i = req_series(&q, "__name__", "up", "instance", "a:9100", "job", "node",
                   NULL);
    req_sample(&q, i, 1, 1000);
    req_sample(&q, i, 0, 2000);
    i = req_series(&q, "__name__", "x", NULL);
    req_sample(&q, i, 2.5, 1000);
    req_exemplar(&q, i, "trace_id", "abc", 1, 1000);

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.version, PG_RW_V1);
    assert_int_equal(r.stats.series, 2);
    assert_int_equal(r.stats.samples, 3);
    assert_int_equal(r.stats.exemplars, 1);
    assert_int_equal(r.stats.histograms, 0);
    assert_int_equal(r.stats.metadata, 0);
    assert_int_equal(r.nseries_total, 2);
    assert_all_valid(&r);
}


static void
test_exemplar_only_and_repeated(void **state)
{
    req_t            q;
    size_t           i;
    pg_rw_request_t  r;

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_exemplar(&q, i, "trace_id", "1", 1, 1000);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_sample(&q, i, 1, 1000);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_sample(&q, i, 2, 2000);
    req_series(&q, "__name__", "a", NULL);

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.stats.series, 4);
    assert_int_equal(r.stats.samples, 2);
    assert_int_equal(r.stats.exemplars, 1);
    assert_int_equal(r.stats.empty_series, 1);
}


static void
test_nan_inf_staleness(void **state)
{
    req_t            q;
    size_t           i;
    double           stale;
    uint64_t         bits;
    pg_rw_request_t  r;

    bits = 0x7ff0000000000002ULL;
    memcpy(&stale, &bits, sizeof(stale));

    req_init(&q);
    i = req_series(&q, "__name__", "a", NULL);
    req_sample(&q, i, stale, 1000);
    req_sample(&q, i, NAN, 2000);
    req_sample(&q, i, INFINITY, 3000);
    req_sample(&q, i, -INFINITY, 4000);

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.stats.samples, 4);
}


static void
test_metadata(void **state)
{
    req_t            q;
    size_t           k;
    pg_rw_request_t  r;

    req_init(&q);

    for (k = 0; k < 3; k++) {
        prometheus__metric_metadata__init(&q.md[k]);
        q.md[k].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__COUNTER;
        q.md[k].metric_family_name = "http_requests_total";
        q.md[k].help = "Requests.";
        q.mdp[k] = &q.md[k];
    }

    q.wr.n_metadata = 1;

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.stats.metadata, 1);
    assert_int_equal(r.stats.series, 0);
    assert_int_equal(r.nmetadata_total, 1);
    assert_all_valid(&r);

    /* an entry with text that is not UTF-8 is left out, not the request */
    q.md[1].help = "bad \xff help";
    q.md[2].unit = "\xc0\xaf";
    q.wr.n_metadata = 3;

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.stats.metadata, 1);
    assert_int_equal(r.invalid_metadata, 2);
    assert_int_equal(r.invalid[PG_RW_BAD_UTF8], 2);
    assert_int_equal(r.invalid_series, 0);
    assert_null(r.dropped);
    assert_non_null(r.dropped_metadata);
    assert_false(pg_rw_bit(r.dropped_metadata, 0));
    assert_true(pg_rw_bit(r.dropped_metadata, 1));
    assert_true(pg_rw_bit(r.dropped_metadata, 2));
    assert_int_equal(r.nmetadata_total, 3);
    assert_int_equal(r.first.reason, PG_RW_BAD_UTF8);
    assert_int_equal(r.first.series, (size_t) -1);
    assert_non_null(strstr(r.first.message, "metadata 1"));
}


static void
test_histogram(void **state)
{
    req_t                     q;
    size_t                    i;
    int64_t                   deltas[2] = { 1, -1 };
    pg_rw_request_t           r;
    Prometheus__BucketSpan    span, *spanp;

    req_init(&q);
    i = req_series(&q, "__name__", "h", NULL);
    req_histogram(&q, i);

    prometheus__bucket_span__init(&span);
    span.offset = -2;
    span.length = 2;
    spanp = &span;
    q.h[i].positive_spans = &spanp;
    q.h[i].n_positive_spans = 1;
    q.h[i].positive_deltas = deltas;
    q.h[i].n_positive_deltas = 2;

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_int_equal(r.stats.histograms, 1);
    assert_int_equal(r.stats.samples, 0);
    assert_all_valid(&r);

    /* the insides of a histogram are checked: a span field as i64 */
    {
        uint8_t  h[] = {
            0x0a, 0x1c,
            0x0a, 0x0d, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x12, 0x01, 'h',
            0x22, 0x0b,                         /* histogram */
            0x5a, 0x09, 0x09, 0, 0, 0, 0, 0, 0, 0, 0  /* span: 1 as i64 */
        };

        assert_int_equal(decode(h, sizeof(h), &r, NULL, NULL),
                         PG_RW_MALFORMED);

        /* the same bytes as an unknown span field (3, i64): fine */
        h[21] = 0x19;
        assert_int_equal(decode(h, sizeof(h), &r, NULL, NULL), PG_RW_OK);
        assert_int_equal(r.stats.histograms, 1);
    }

    /* packed deltas that end inside a varint */
    {
        static const uint8_t  h[] = {
            0x0a, 0x16,
            0x0a, 0x0d, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x12, 0x01, 'h',
            0x22, 0x05,                         /* histogram */
            0x62, 0x03, 0x02, 0x04, 0x80        /* positive deltas */
        };
        uint8_t  ok[sizeof(h)];

        assert_int_equal(decode(h, sizeof(h), &r, NULL, NULL),
                         PG_RW_MALFORMED);

        memcpy(ok, h, sizeof(h));
        ok[sizeof(ok) - 1] = 0x06;
        assert_int_equal(decode(ok, sizeof(ok), &r, NULL, NULL), PG_RW_OK);
    }

    /* packed counts that are not a whole number of doubles */
    {
        static const uint8_t  h[] = {
            0x0a, 0x16,
            0x0a, 0x0d, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x12, 0x01, 'h',
            0x22, 0x05,                         /* histogram */
            0x6a, 0x03, 0x00, 0x00, 0x00        /* positive counts */
        };
        uint8_t  ok[sizeof(h)];

        assert_int_equal(decode(h, sizeof(h), &r, NULL, NULL),
                         PG_RW_MALFORMED);

        /* as packed sint64 deltas (12) the same bytes are fine */
        memcpy(ok, h, sizeof(h));
        ok[19] = 0x62;
        assert_int_equal(decode(ok, sizeof(ok), &r, NULL, NULL), PG_RW_OK);
    }
}


static void
test_empty_request(void **state)
{
    pg_rw_request_t  r;

    assert_int_equal(decode((const uint8_t *) "", 0, &r, NULL, NULL),
                     PG_RW_OK);
    assert_int_equal(r.stats.series, 0);
    assert_int_equal(r.nseries_total, 0);
    assert_all_valid(&r);
}


static void
test_no_name(void **state)
{
    req_t            q;
    size_t           i;
    pg_rw_request_t  r;

    req_init(&q);
    i = req_series(&q, "__name__", "ok", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    req_sample(&q, i, 2, 2);

    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 1, PG_RW_NO_NAME);
    assert_false(pg_rw_bit(r.dropped, 0));
    assert_int_equal(r.stats.series, 1);
    assert_int_equal(r.stats.samples, 1);
    assert_int_equal(r.invalid_samples, 2);
    assert_int_equal(r.nseries_total, 2);
    assert_non_null(strstr(r.first.message, "series 1 {job=\"x\"}"));
    assert_non_null(strstr(r.first.message, "no metric name"));

    /* an empty __name__ is no name either */
    req_init(&q);
    i = req_series(&q, "__name__", "", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_NO_NAME);
    assert_non_null(strstr(r.first.message, "empty metric name"));
}


typedef struct {
    size_t    n;
    size_t    index[16];
    unsigned  unsorted[16];
    char      name[16][32];
} seen_t;


static int
seen_cb(void *ctx, const pg_rw_series_t *s)
{
    seen_t  *c = ctx;

    if (c->n < 16) {
        c->index[c->n] = s->index;
        c->unsorted[c->n] = s->unsorted;
        snprintf(c->name[c->n], sizeof(c->name[0]), "%.*s",
                 (int) s->name.len, s->name.data);
    }

    c->n++;

    return 0;
}


static void
test_unsorted_and_duplicates(void **state)
{
    req_t            q;
    size_t           i, k;
    seen_t           c;
    pg_rw_request_t  r;
    char             names[80][8];

    /* unsorted names are valid (Prometheus sorts them), and flagged */
    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", "instance", "y", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "job", "x", "__name__", "b", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "Alpha", "1", "__name__", "c", NULL);
    req_series(&q, "__name__", "d", "a", "1", NULL);
    req_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(decode(q.buf, q.len, &r, seen_cb, &c), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.unsorted[0], 1);
    assert_int_equal(c.unsorted[1], 1);
    assert_int_equal(c.unsorted[2], 0);      /* 'A' < '_': byte order */
    assert_int_equal(c.unsorted[3], 0);
    assert_string_equal(c.name[1], "b");

    /* a name twice: next to each other */
    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", "job", "y", NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_DUPLICATE_LABEL);
    assert_non_null(strstr(r.first.message, "duplicate label name \"job\""));

    /* apart, in an unsorted series */
    req_init(&q);
    i = req_series(&q, "job", "x", "__name__", "a", "a", "1", "job", "y",
                   NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_DUPLICATE_LABEL);
    assert_non_null(strstr(r.first.message, "\"job\""));

    /* __name__ twice */
    req_init(&q);
    req_series(&q, "__name__", "a", "x", "1", "__name__", "b", NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_DUPLICATE_LABEL);

    /* more than 64 unsorted labels (sorted in allocator memory): 80 in */
    /* reverse order, valid, then with a duplicate */
    {
        Prometheus__Label  *lp[81], l[81];
        uint8_t            *buf;
        size_t              len;

        for (k = 0; k < 80; k++) {
            snprintf(names[k], sizeof(names[k]), "l%02zu", 79 - k);
            prometheus__label__init(&l[k]);
            l[k].name = names[k];
            l[k].value = "v";
            lp[k] = &l[k];
        }

        prometheus__label__init(&l[80]);
        l[80].name = "__name__";
        l[80].value = "many";
        lp[80] = &l[80];

        req_init(&q);
        req_series(&q, NULL);
        q.ts[0].labels = lp;
        q.ts[0].n_labels = 81;

        buf = malloc(prometheus__write_request__get_packed_size(&q.wr));
        len = prometheus__write_request__pack(&q.wr, buf);
        assert_int_equal(decode(buf, len, &r, NULL, NULL), PG_RW_OK);
        assert_all_valid(&r);
        assert_int_equal(r.stats.series, 1);

        snprintf(names[40], sizeof(names[40]), "l%02d", 3);
        len = prometheus__write_request__pack(&q.wr, buf);
        assert_int_equal(decode(buf, len, &r, NULL, NULL), PG_RW_OK);
        assert_one_invalid(&r, 0, PG_RW_DUPLICATE_LABEL);
        assert_non_null(strstr(r.first.message, "\"l03\""));

        /* no memory for the sort: the request fails, it cannot be judged */
        arena_cap = 64;
        len = prometheus__write_request__pack(&q.wr, buf);
        assert_int_equal(decode(buf, len, &r, NULL, NULL), PG_RW_NOMEM);
        assert_int_equal(r.first.reason, PG_RW_NOMEM);
        arena_cap = sizeof(arena);

        free(buf);
    }
}


static void
test_names_and_utf8(void **state)
{
    req_t            q;
    size_t           i;
    pg_rw_request_t  r;

    /* Prometheus 3 takes any UTF-8 name */
    static const char  *utf8[] = { "1abc", "a-b", "service.name", "\xc3\xa9",
                                   "a b", "_", "Z_9" };

    for (i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
        req_init(&q);
        req_series(&q, "__name__", "a", utf8[i], "v", NULL);
        req_sample(&q, 0, 1, 1);
        assert_int_equal(scan(&q, &r), PG_RW_OK);
        assert_all_valid(&r);
        assert_int_equal(r.stats.series, 1);
    }

    /* so is a dotted metric name */
    req_init(&q);
    req_series(&q, "__name__", "http.server.duration", NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    /* but not an empty one */
    req_init(&q);
    req_series(&q, "", "x", "__name__", "a", NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_LABEL_NAME);
    assert_non_null(strstr(r.first.message, "empty name"));

    /* empty values are fine */
    req_init(&q);
    req_series(&q, "__name__", "a", "b", "", NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    /* invalid UTF-8: overlong, surrogate, truncated, > U+10FFFF, 0xff */
    static const char  *badv[] = { "\xc0\xaf", "\xed\xa0\x80", "ab\xe2\x82",
                                   "\xf4\x90\x80\x80", "\xff",
                                   "a long ascii prefix then \xff" };

    for (i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        req_init(&q);
        req_series(&q, "__name__", "a", "job", badv[i], NULL);
        req_sample(&q, 0, 1, 1);
        assert_int_equal(scan(&q, &r), PG_RW_OK);
        assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);
        assert_non_null(strstr(r.first.message, "not valid UTF-8"));

        req_init(&q);
        req_series(&q, "__name__", "a", badv[i], "v", NULL);
        assert_int_equal(scan(&q, &r), PG_RW_OK);
        assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);

        req_init(&q);
        req_series(&q, "__name__", badv[i], NULL);
        assert_int_equal(scan(&q, &r), PG_RW_OK);
        assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);
    }

    /* valid multi-byte UTF-8 */
    req_init(&q);
    req_series(&q, "__name__", "a", "job", "h\xc3\xa9llo \xe2\x82\xac "
               "\xf0\x9f\x98\x80", NULL);
    req_sample(&q, 0, 1, 1);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    /* an exemplar never makes its series invalid (Prometheus drops it) */
    req_init(&q);
    req_series(&q, "__name__", "a", NULL);
    req_exemplar(&q, 0, "", "\xff", 1, 1);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(r.stats.exemplars, 1);
}


/* a label written by hand: name and value under 60 bytes each */
static size_t
put_label(uint8_t *p, const char *name, const char *value)
{
    size_t  nl, vl;

    nl = strlen(name);
    vl = strlen(value);

    p[0] = 0x0a;
    p[1] = (uint8_t) (nl + vl + 4);
    p[2] = 0x0a;
    p[3] = (uint8_t) nl;
    memcpy(p + 4, name, nl);
    p[4 + nl] = 0x12;
    p[5 + nl] = (uint8_t) vl;
    memcpy(p + 6 + nl, value, vl);

    return nl + vl + 6;
}


static int
note_unsorted(void *ctx, const pg_rw_series_t *s)
{
    *(int *) ctx = s->unsorted;
    return 0;
}


/* scan(), and whether the (one) series was marked unsorted */
static int
scan_unsorted(req_t *q, pg_rw_request_t *r)
{
    int  unsorted;

    unsorted = -1;
    req_pack(q);
    arena_used = 0;
    assert_int_equal(pg_rw_decode(q->buf, q->len, PG_RW_V1, &alloc, r,
                                  note_unsorted, &unsorted), PG_RW_OK);

    return unsorted;
}


/*
 * The shortcuts of the label checks: one ASCII pass over the labels up
 * front, labels elsewhere checked one by one; names compared a word at a
 * time.  Each must decide as the plain checks do.
 */
static void
test_label_shortcuts(void **state)
{
    int              unsorted;
    req_t            q;
    size_t           n, m;
    uint8_t          ts[256], buf[300];
    pg_rw_request_t  r;
    char             longv[201];

    static const uint8_t  sample[] = { 0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0,
                                       0xf0, 0x3f, 0x10, 0x01 };

    /* a label after a sample is outside the run: still checked */

    static const char  *job[] = { "\xff", "x" };

    for (m = 0; m < 2; m++) {
        n = put_label(ts, "__name__", "a");
        memcpy(ts + n, sample, sizeof(sample));
        n += sizeof(sample);
        n += put_label(ts + n, "job", job[m]);

        buf[0] = 0x0a;
        buf[1] = (uint8_t) n;
        memcpy(buf + 2, ts, n);

        arena_used = 0;
        assert_int_equal(pg_rw_decode(buf, n + 2, PG_RW_V1, &alloc, &r, NULL,
                                      NULL), PG_RW_OK);
        if (m == 0) {
            assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);
        } else {
            assert_all_valid(&r);
            assert_int_equal(r.stats.samples, 1);
        }
    }

    /* a label of more than 127 bytes: its length byte is not ASCII */

    memset(longv, 'v', 200);
    longv[200] = '\0';

    req_init(&q);
    req_series(&q, "__name__", "a", "job", longv, NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    memcpy(longv + 100, "\xc3\xa9", 2);
    req_init(&q);
    req_series(&q, "__name__", "a", "job", longv, NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    longv[150] = (char) 0xff;
    req_init(&q);
    req_series(&q, "__name__", "a", "job", longv, NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);

    /* names alike in their first 8 bytes and more */

    req_init(&q);
    req_series(&q, "__name__", "a", "abcdefghij_a", "1", "abcdefghij_b", "2",
               NULL);
    unsorted = scan_unsorted(&q, &r);
    assert_all_valid(&r);
    assert_int_equal(unsorted, 0);

    req_init(&q);
    req_series(&q, "__name__", "a", "abcdefghij_b", "1", "abcdefghij_a", "2",
               NULL);
    unsorted = scan_unsorted(&q, &r);
    assert_all_valid(&r);
    assert_int_equal(unsorted, 1);

    req_init(&q);
    req_series(&q, "__name__", "a", "abcdefgh", "1", "abcdefgh_", "2", NULL);
    unsorted = scan_unsorted(&q, &r);
    assert_int_equal(unsorted, 0);

    req_init(&q);
    req_series(&q, "__name__", "a", "abcdefghijk", "1", "abcdefghijk", "2",
               NULL);
    assert_int_equal(scan(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_DUPLICATE_LABEL);

    /* bytes above 0x7f sort after ASCII, as Go compares strings */

    req_init(&q);
    req_series(&q, "__name__", "a", "z", "1", "\xc3\xa9", "2", NULL);
    unsorted = scan_unsorted(&q, &r);
    assert_all_valid(&r);
    assert_int_equal(unsorted, 0);

    req_init(&q);
    req_series(&q, "__name__", "a", "\xc3\xa9", "2", "z", "1", NULL);
    unsorted = scan_unsorted(&q, &r);
    assert_all_valid(&r);
    assert_int_equal(unsorted, 1);
}


/* invalid series among valid ones: counted, marked, the rest goes on */
static void
test_invalid_series_continue(void **state)
{
    req_t            q;
    size_t           i;
    seen_t           c;
    pg_rw_request_t  r;

    req_init(&q);
    i = req_series(&q, "__name__", "ok0", NULL);              /* 0 */
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "job", "x", NULL);                     /* 1: no name */
    req_sample(&q, i, 1, 1);
    req_exemplar(&q, i, "t", "1", 1, 1);
    i = req_series(&q, "__name__", "ok2", NULL);              /* 2 */
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "__name__", "b", "a", "\xff", NULL);  /* 3: utf-8 */
    req_histogram(&q, i);
    i = req_series(&q, "__name__", "c", "a", "1", "a", "2", NULL);  /* 4 */
    req_sample(&q, i, 1, 1);
    req_sample(&q, i, 2, 2);
    i = req_series(&q, "__name__", "ok5", NULL);              /* 5 */
    req_exemplar(&q, i, "t", "2", 1, 1);
    req_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(decode(q.buf, q.len, &r, seen_cb, &c), PG_RW_OK);

    assert_int_equal(c.n, 3);
    assert_int_equal(c.index[0], 0);
    assert_int_equal(c.index[1], 2);
    assert_int_equal(c.index[2], 5);
    assert_string_equal(c.name[2], "ok5");

    assert_int_equal(r.nseries_total, 6);
    assert_int_equal(r.stats.series, 3);
    assert_int_equal(r.stats.samples, 2);
    assert_int_equal(r.stats.exemplars, 1);
    assert_int_equal(r.invalid_series, 3);
    assert_int_equal(r.invalid_samples, 1 + 1 + 2);    /* the histogram too */
    assert_int_equal(r.invalid_exemplars, 1);
    assert_int_equal(r.invalid[PG_RW_NO_NAME], 1);
    assert_int_equal(r.invalid[PG_RW_BAD_UTF8], 1);
    assert_int_equal(r.invalid[PG_RW_DUPLICATE_LABEL], 1);
    assert_int_equal(r.dropped[0], 0x02 | 0x08 | 0x10);

    /* the first one is described */
    assert_int_equal(r.first.reason, PG_RW_NO_NAME);
    assert_int_equal(r.first.series, 1);

    /* a malformed byte later fails the request all the same */
    q.buf[q.len++] = 0x0a;
    q.buf[q.len++] = 0x05;
    assert_int_equal(decode(q.buf, q.len, &r, NULL, NULL), PG_RW_MALFORMED);
    assert_int_equal(r.first.reason, PG_RW_MALFORMED);
    assert_non_null(strstr(r.first.message, "malformed"));

    /* no memory for the bitmap: the request cannot be judged */
    q.len -= 2;
    arena_cap = 0;
    assert_int_equal(decode(q.buf, q.len, &r, NULL, NULL), PG_RW_NOMEM);
    arena_cap = sizeof(arena);

    /* no allocator at all: the same; a valid request needs none */
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, NULL, &r, NULL,
                                  NULL), PG_RW_NOMEM);

    req_init(&q);
    req_series(&q, "__name__", "a", NULL);
    req_pack(&q);
    assert_int_equal(pg_rw_decode(q.buf, q.len, PG_RW_V1, NULL, &r, NULL,
                                  NULL), PG_RW_OK);
}


static void
test_malformed(void **state)
{
    req_t            q;
    size_t           i, n;
    pg_rw_request_t  r;
    uint8_t          b[64];

    /* every truncation of a valid request is malformed */
    req_init(&q);
    i = req_series(&q, "__name__", "abc", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    req_exemplar(&q, i, "trace_id", "t", 1, 1);
    req_pack(&q);

    for (n = 1; n < q.len; n++) {
        assert_int_equal(decode(q.buf, n, &r, NULL, NULL), PG_RW_MALFORMED);
        assert_true(r.first.offset <= n);
    }

    /* wrong wire type for timeseries (varint) */
    b[0] = 0x08; b[1] = 0x01;
    assert_int_equal(decode(b, 2, &r, NULL, NULL), PG_RW_MALFORMED);

    /* a varint longer than 10 bytes */
    memset(b, 0xff, 12);
    b[0] = 0x20;    /* field 4 varint */
    b[12] = 0x01;
    assert_int_equal(decode(b, 13, &r, NULL, NULL), PG_RW_MALFORMED);

    /* a length beyond the buffer */
    b[0] = 0x0a; b[1] = 0xff; b[2] = 0xff; b[3] = 0xff; b[4] = 0x0f;
    assert_int_equal(decode(b, 5, &r, NULL, NULL), PG_RW_MALFORMED);

    /* field number 0 */
    b[0] = 0x02; b[1] = 0x00;
    assert_int_equal(decode(b, 2, &r, NULL, NULL), PG_RW_MALFORMED);

    /* deprecated group wire type */
    b[0] = 0x0b;
    assert_int_equal(decode(b, 1, &r, NULL, NULL), PG_RW_MALFORMED);

    /* unknown fields of every valid wire type are skipped */
    b[0] = 0x28; b[1] = 0x05;                                   /* 5 varint */
    b[2] = 0x31; memset(b + 3, 0, 8);                           /* 6 i64 */
    b[11] = 0x3a; b[12] = 0x02; b[13] = 'x'; b[14] = 'y';       /* 7 len */
    b[15] = 0x45; memset(b + 16, 0, 4);                         /* 8 i32 */
    assert_int_equal(decode(b, 20, &r, NULL, NULL), PG_RW_OK);

    /* sample value with the wrong wire type */
    {
        static const uint8_t  s[] = {
            0x0a, 0x0f,                         /* timeseries, 15 bytes */
            0x0a, 0x09, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x12, 0x02, 0x08, 0x01              /* sample: value as varint */
        };
        assert_int_equal(decode(s, sizeof(s), &r, NULL, NULL),
                         PG_RW_MALFORMED);
    }

    /* an exemplar's label with the wrong wire type */
    {
        static const uint8_t  s[] = {
            0x0a, 0x15,
            0x0a, 0x0d, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x12, 0x01, 'a',
            0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01  /* label name as varint */
        };
        uint8_t  ok[sizeof(s)];

        assert_int_equal(decode(s, sizeof(s), &r, NULL, NULL),
                         PG_RW_MALFORMED);

        /* as an unknown label field (1, varint): fine */
        memcpy(ok, s, sizeof(s));
        ok[sizeof(ok) - 2] = 0x08 | 0x18;
        assert_int_equal(decode(ok, sizeof(ok), &r, NULL, NULL), PG_RW_OK);
        assert_int_equal(r.stats.exemplars, 1);
    }

    assert_int_equal(pg_rw_count_samples(q.buf, q.len, PG_RW_V1), 1);
    assert_int_equal(pg_rw_count_samples(q.buf, q.len - 1, PG_RW_V1), 0);
}


typedef struct {
    size_t  series;
    size_t  labels;
    size_t  exemplars;
    double  exemplar_value;
    int64_t exemplar_ts;
    char    exemplar_label[64];
    size_t  stop_at;
} cb_t;


static int
series_cb(void *ctx, const pg_rw_series_t *s)
{
    cb_t          *c = ctx;
    pg_pb_iter_t   it, lit;
    pg_label_t     l;
    pg_exemplar_t  ex;

    c->series++;

    assert_int_equal(s->version, PG_RW_V1);
    assert_null(s->symtab);

    pg_rw_series_labels(s, &it);
    while (pg_rw_next_label(&it, &l)) {
        c->labels++;
    }

    /* done for good once it said so */
    assert_false(pg_rw_next_label(&it, &l));

    pg_rw_series_exemplars(s, &it);
    while (pg_rw_next_exemplar(&it, &ex)) {
        c->exemplars++;
        c->exemplar_value = ex.value;
        c->exemplar_ts = ex.timestamp;
        lit = ex.labels;
        if (pg_rw_next_label(&lit, &l)) {
            snprintf(c->exemplar_label, sizeof(c->exemplar_label),
                     "%.*s=%.*s", (int) l.name.len, l.name.data,
                     (int) l.value.len, l.value.data);
        }
    }

    return c->stop_at && c->series == c->stop_at;
}


static void
test_iterators(void **state)
{
    req_t            q;
    size_t           i;
    cb_t             c;
    pg_rw_request_t  r;

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "__name__", "b", "job", "y", "zone", "z", NULL);
    req_exemplar(&q, i, "trace_id", "00112233445566778899aabbccddeeff",
                 0.25, 1600096945479);
    req_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(decode(q.buf, q.len, &r, series_cb, &c), PG_RW_OK);
    assert_int_equal(c.series, 2);
    assert_int_equal(c.labels, 5);
    assert_int_equal(c.exemplars, 1);
    assert_true(c.exemplar_value == 0.25);
    assert_int_equal(c.exemplar_ts, 1600096945479);
    assert_string_equal(c.exemplar_label,
                        "trace_id=00112233445566778899aabbccddeeff");

    /* the callback stops the decoding */
    memset(&c, 0, sizeof(c));
    c.stop_at = 1;
    assert_int_equal(decode(q.buf, q.len, &r, series_cb, &c), PG_RW_ABORTED);
    assert_int_equal(c.series, 1);
    assert_int_equal(r.first.reason, PG_RW_ABORTED);
    assert_int_equal(r.first.series, 0);
}


static void
test_reason_names(void **state)
{
    static const char  *names[] = {
        "ok", "malformed", "missing_name", "invalid_label_name",
        "duplicate_label", "invalid_utf8", "invalid_symbol_ref",
        "invalid_symbols", "no_memory", "aborted", "over_limit"
    };
    size_t  i;

    assert_int_equal(sizeof(names) / sizeof(names[0]), PG_RW_NREASONS);

    for (i = 0; i < PG_RW_NREASONS; i++) {
        assert_string_equal(pg_rw_reason_name((pg_rw_reason_e) i), names[i]);
    }

    assert_string_equal(pg_rw_reason_name(PG_RW_NREASONS), "unknown");
}


static void
test_snappy_guard(void **state)
{
    char            comp[256];
    size_t          clen, dlen;
    uint8_t         out[64];
    const char     *text = "hello hello hello hello";
    static uint8_t  bomb[] = { 0x80, 0x80, 0x80, 0x80, 0x04, 0x00 };

    clen = sizeof(comp);
    assert_int_equal(snappy_compress(text, strlen(text), comp, &clen),
                     SNAPPY_OK);

    assert_int_equal(pg_snappy_decoded_length((uint8_t *) comp, clen, 1024,
                                              &dlen), PG_SNAPPY_OK);
    assert_int_equal(dlen, strlen(text));
    assert_int_equal(pg_snappy_decode((uint8_t *) comp, clen, out, dlen),
                     PG_SNAPPY_OK);
    assert_memory_equal(out, text, dlen);

    /* limit below the declared length */
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) comp, clen, 10,
                                              &dlen), PG_SNAPPY_TOO_LARGE);

    /* 1 GiB declared in 6 bytes: refused before any allocation */
    assert_int_equal(pg_snappy_decoded_length(bomb, sizeof(bomb), 64 << 20,
                                              &dlen), PG_SNAPPY_TOO_LARGE);
    assert_int_equal(dlen, 1u << 30);

    /* truncated stream */
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) comp, clen - 3,
                                              1024, &dlen), PG_SNAPPY_OK);
    assert_int_equal(pg_snappy_decode((uint8_t *) comp, clen - 3, out, dlen),
                     PG_SNAPPY_INVALID);

    /* pg_snappy_encode() writes what pg_snappy_decode() reads */
    {
        uint8_t  enc[128];
        size_t   elen;

        assert_true(pg_snappy_max_encoded(strlen(text)) <= sizeof(enc));
        assert_int_equal(pg_snappy_encode((const uint8_t *) text,
                                          strlen(text), enc, &elen),
                         PG_SNAPPY_OK);
        assert_int_equal(pg_snappy_decoded_length(enc, elen, 1024, &dlen),
                         PG_SNAPPY_OK);
        assert_int_equal(dlen, strlen(text));
        assert_int_equal(pg_snappy_decode(enc, elen, out, dlen),
                         PG_SNAPPY_OK);
        assert_memory_equal(out, text, dlen);
    }

    /* empty and garbage */
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) "", 0, 1024,
                                              &dlen), PG_SNAPPY_INVALID);
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) "\xff\xff\xff\xff"
                                              "\xff\xff", 6, 1024, &dlen),
                     PG_SNAPPY_INVALID);
}


/*
 * The block decoder (ours) against libsnappy's: the same bytes out, or
 * both refuse.  Bodies long enough for the fast loop: literals of every
 * length class (in the tag, 1-4 length bytes), copies of every kind
 * (1, 2 and 4 bytes of offset), overlapping copies (offset 1-15) and
 * long ones; then every prefix, and every single byte changed.
 */

static int
snappy_agree(const uint8_t *c, size_t clen)
{
    size_t   n, m;
    int      ok_lib, ok_pg;
    char    *a;
    uint8_t *b;

    if (snappy_uncompressed_length((const char *) c, clen, &n) != SNAPPY_OK
        || n > (1 << 20))
    {
        return 1;
    }

    a = malloc(n + 1);
    b = malloc(n + 1);
    assert_non_null(a);
    assert_non_null(b);

    m = n;
    ok_lib = snappy_uncompress((const char *) c, clen, a, &m) == SNAPPY_OK
             && m == n;
    ok_pg = pg_snappy_decode(c, clen, b, n) == PG_SNAPPY_OK;

    if (ok_lib != ok_pg || (ok_lib && memcmp(a, b, n) != 0)) {
        free(a);
        free(b);
        return 0;
    }

    free(a);
    free(b);

    return ok_lib + 1;
}


static size_t
snappy_put_varint(uint8_t *p, size_t v)
{
    size_t  i = 0;

    while (v >= 0x80) {
        p[i++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }

    p[i++] = (uint8_t) v;

    return i;
}


/* promgate_tenant_label ... drop: every label of that name, in place */
static void
test_labels_drop(void **state)
{
    size_t      n;
    pg_str_t    name;
    pg_label_t  l[4];

    (void) state;

    l[0].name.data = (uint8_t *) "__name__"; l[0].name.len = 8;
    l[1].name.data = (uint8_t *) "team"; l[1].name.len = 4;
    l[2].name.data = (uint8_t *) "teams"; l[2].name.len = 5;
    l[3].name.data = (uint8_t *) "team"; l[3].name.len = 4;

    name.data = (uint8_t *) "team";
    name.len = 4;

    n = pg_rw_labels_drop(l, 4, name);
    assert_int_equal(n, 2);
    assert_int_equal(l[0].name.len, 8);
    assert_int_equal(l[1].name.len, 5);

    name.data = (uint8_t *) "job";
    name.len = 3;
    assert_int_equal(pg_rw_labels_drop(l, 2, name), 2);
    assert_int_equal(pg_rw_labels_drop(l, 0, name), 0);
}


/* the preamble's length as libsnappy reads it, at every edge */
static void
test_snappy_preamble_agrees(void **state)
{
    size_t     i, n, m;
    int        ok_lib, ok_pg;
    static const struct {
        uint8_t  b[8];
        size_t   len;
    } cases[] = {
        { { 0 }, 0 },                                   /* empty */
        { { 0x00 }, 1 },                                /* 0 */
        { { 0x7f }, 1 },
        { { 0x80 }, 1 },                                /* cut short */
        { { 0x80, 0x01 }, 2 },                          /* 128 */
        { { 0xff, 0xff, 0xff, 0xff, 0x0f }, 5 },        /* 2^32 - 1 */
        { { 0xff, 0xff, 0xff, 0xff, 0x10 }, 5 },        /* 2^32 */
        { { 0x80, 0x80, 0x80, 0x80, 0x8f, 0x00 }, 6 },  /* 6 bytes */
        { { 0x80, 0x80, 0x80, 0x80, 0x80 }, 5 },
        { { 0x81, 0x80, 0x80, 0x00 }, 4 },              /* padded 1 */
    };

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ok_lib = snappy_uncompressed_length((const char *) cases[i].b,
                                            cases[i].len, &n) == SNAPPY_OK;
        ok_pg = pg_snappy_decoded_length(cases[i].b, cases[i].len,
                                         SIZE_MAX, &m) == PG_SNAPPY_OK;
        assert_int_equal(ok_pg, ok_lib);

        if (ok_lib) {
            assert_int_equal(m, n);
        }
    }
}


static void
test_snappy_decoder_agrees(void **state)
{
    size_t    i, j, n, clen, dlen, k;
    char     *text, *comp;
    uint8_t  *mut, *h, hand[1024];
    int       valid;

    /* a body with repeats near and far, and incompressible runs */

    n = 200000;
    text = malloc(n);
    assert_non_null(text);

    for (i = 0; i < n; i++) {
        if (i % 5000 < 300) {
            text[i] = (char) ((i * 2654435761u) >> 13);

        } else {
            text[i] = "__name__job=api instance=10.0.0.1:9100"
                      [(i / 7 + i % 3) % 38];
        }
    }

    clen = snappy_max_compressed_length(n);
    comp = malloc(clen);
    assert_non_null(comp);
    assert_int_equal(snappy_compress(text, n, comp, &clen), SNAPPY_OK);

    assert_int_equal(snappy_agree((uint8_t *) comp, clen), 2);

    for (k = 0; k < clen; k += 1 + k / 64) {
        assert_int_not_equal(snappy_agree((uint8_t *) comp, k), 0);
    }

    mut = malloc(clen);
    assert_non_null(mut);

    for (k = 0; k < clen; k += 1 + k / 512) {
        for (j = 0; j < 8; j++) {
            memcpy(mut, comp, clen);
            mut[k] ^= (uint8_t) (1u << j);
            assert_int_not_equal(snappy_agree(mut, clen), 0);
        }
    }

    /*
     * by hand: literals with 1-4 length bytes, copies with offsets 1-15
     * (patterns), a 4-byte-offset copy, then the same with a bad offset
     */

    h = hand;
    dlen = 0;
    h += 5;                                   /* the varint, later */

    *h++ = (uint8_t) (60 << 2);               /* 1 length byte */
    *h++ = 70 - 1;
    for (i = 0; i < 70; i++) {
        *h++ = (uint8_t) ('a' + i % 26);
    }
    dlen += 70;

    for (j = 1; j < 16; j++) {
        *h++ = (uint8_t) (2 | (63 << 2));     /* copy 2: 64 bytes back j */
        *h++ = (uint8_t) j;
        *h++ = 0;
        dlen += 64;
        *h++ = (uint8_t) (1 | (7 << 2));      /* copy 1: 11 bytes back j */
        *h++ = (uint8_t) j;
        dlen += 11;
    }

    *h++ = (uint8_t) (3 | (40 << 2));         /* copy 4: 41 bytes, 70 back */
    *h++ = 70;
    *h++ = 0;
    *h++ = 0;
    *h++ = 0;
    dlen += 41;

    *h++ = (uint8_t) (61 << 2);               /* literal, 2 length bytes */
    *h++ = 0x2b;
    *h++ = 0x01;                              /* 300 bytes */
    for (i = 0; i < 300; i++) {
        *h++ = (uint8_t) i;
    }
    dlen += 300;

    {
        uint8_t  v[5];
        size_t   vn = snappy_put_varint(v, dlen);

        memmove(hand + vn, hand + 5, h - hand - 5);
        memcpy(hand, v, vn);
        h -= 5 - vn;
    }

    assert_int_equal(snappy_agree(hand, h - hand), 2);

    for (k = 0; k < (size_t) (h - hand); k++) {
        for (j = 0; j < 8; j++) {
            memcpy(mut, hand, h - hand);
            mut[k] ^= (uint8_t) (1u << j);
            valid = snappy_agree(mut, h - hand);
            assert_int_not_equal(valid, 0);
        }
    }

    free(mut);
    free(comp);
    free(text);
}


static void
test_utf8(void **state)
{
    assert_true(pg_utf8_valid((uint8_t *) "", 0));
    assert_true(pg_utf8_valid((uint8_t *) "plain ascii, long enough", 24));
    assert_true(pg_utf8_valid((uint8_t *) "\xef\xbf\xbd", 3));
    assert_true(pg_utf8_valid((uint8_t *) "\xf4\x8f\xbf\xbf", 4));
    assert_false(pg_utf8_valid((uint8_t *) "\xe0\x80\x80", 3));
    assert_false(pg_utf8_valid((uint8_t *) "\xf0\x80\x80\x80", 4));
    assert_false(pg_utf8_valid((uint8_t *) "\x80", 1));
    assert_false(pg_utf8_valid((uint8_t *) "abcdefgh\xc3", 9));
    assert_int_equal(pg_utf8_count((uint8_t *) "h\xc3\xa9", 3), 2);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_counts),
        cmocka_unit_test(test_exemplar_only_and_repeated),
        cmocka_unit_test(test_nan_inf_staleness),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_empty_request),
        cmocka_unit_test(test_no_name),
        cmocka_unit_test(test_unsorted_and_duplicates),
        cmocka_unit_test(test_names_and_utf8),
        cmocka_unit_test(test_label_shortcuts),
        cmocka_unit_test(test_invalid_series_continue),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_iterators),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_snappy_guard),
        cmocka_unit_test(test_labels_drop),
        cmocka_unit_test(test_snappy_preamble_agrees),
        cmocka_unit_test(test_snappy_decoder_agrees),
        cmocka_unit_test(test_utf8),
    };

    return cmocka_run_group_tests_name("remote-write 1.0 decode", tests,
                                       NULL, NULL);
}
