/*
 * Remote-write decoding and validation (src/core/pg_rw.c, pg_snappy.c).
 * Requests are built with protobuf-c from proto/, so the zero-copy scan is
 * checked against an independent encoder.
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


#define MAXS 16

typedef struct {
    Prometheus__WriteRequest   wr;
    Prometheus__TimeSeries     ts[MAXS];
    Prometheus__TimeSeries    *tsp[MAXS];
    Prometheus__Label          l[MAXS][16];
    Prometheus__Label         *lp[MAXS][16];
    Prometheus__Sample         s[MAXS][4];
    Prometheus__Sample        *sp[MAXS][4];
    Prometheus__Exemplar       e[MAXS];
    Prometheus__Exemplar      *ep[MAXS];
    Prometheus__Label          el[MAXS][4];
    Prometheus__Label         *elp[MAXS][4];
    Prometheus__Histogram      h[MAXS];
    Prometheus__Histogram     *hp[MAXS];
    Prometheus__MetricMetadata md[4];
    Prometheus__MetricMetadata *mdp[4];
    uint8_t                    buf[65536];
    size_t                     len;
} req_t;


static void
req_init(req_t *q)
{
    memset(q, 0, sizeof(*q));
    prometheus__write_request__init(&q->wr);
    q->wr.timeseries = q->tsp;
    q->wr.metadata = q->mdp;
}


/* labels as "name", "value", ..., NULL */
static size_t
req_series(req_t *q, ...)
{
    va_list                  ap;
    const char              *n;
    size_t                   i, k;
    Prometheus__TimeSeries  *ts;

    i = q->wr.n_timeseries++;
    ts = &q->ts[i];
    prometheus__time_series__init(ts);
    q->tsp[i] = ts;
    ts->labels = q->lp[i];
    ts->samples = q->sp[i];

    va_start(ap, q);
    for (k = 0; (n = va_arg(ap, const char *)) != NULL; k++) {
        prometheus__label__init(&q->l[i][k]);
        q->l[i][k].name = (char *) n;
        q->l[i][k].value = va_arg(ap, char *);
        q->lp[i][k] = &q->l[i][k];
    }
    va_end(ap);

    ts->n_labels = k;

    return i;
}


static void
req_sample(req_t *q, size_t i, double v, int64_t t)
{
    size_t  k;

    k = q->ts[i].n_samples++;
    prometheus__sample__init(&q->s[i][k]);
    q->s[i][k].value = v;
    q->s[i][k].timestamp = t;
    q->sp[i][k] = &q->s[i][k];
}


static void
req_exemplar(req_t *q, size_t i, const char *name, const char *value,
    double v, int64_t t)
{
    prometheus__exemplar__init(&q->e[i]);
    q->e[i].value = v;
    q->e[i].timestamp = t;
    q->ep[i] = &q->e[i];

    prometheus__label__init(&q->el[i][0]);
    q->el[i][0].name = (char *) name;
    q->el[i][0].value = (char *) value;
    q->elp[i][0] = &q->el[i][0];
    q->e[i].labels = q->elp[i];
    q->e[i].n_labels = 1;

    q->ts[i].exemplars = &q->ep[i];
    q->ts[i].n_exemplars = 1;
}


static void
req_histogram(req_t *q, size_t i)
{
    prometheus__histogram__init(&q->h[i]);
    q->h[i].count_case = PROMETHEUS__HISTOGRAM__COUNT_COUNT_INT;
    q->h[i].count_int = 3;
    q->h[i].sum = 1.5;
    q->h[i].schema = 3;
    q->h[i].timestamp = 1000;
    q->hp[i] = &q->h[i];
    q->ts[i].histograms = &q->hp[i];
    q->ts[i].n_histograms = 1;
}


static void
req_pack(req_t *q)
{
    q->len = prometheus__write_request__pack(&q->wr, q->buf);
}


static pg_rw_reason_e
scan(req_t *q, pg_rw_stats_t *st, pg_rw_error_t *err)
{
    req_pack(q);
    return pg_rw_scan(q->buf, q->len, st, err, NULL, NULL);
}


static void
test_valid_counts(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;
    pg_rw_error_t  err;

    req_init(&q);
    i = req_series(&q, "__name__", "up", "instance", "a:9100", "job", "node",
                   NULL);
    req_sample(&q, i, 1, 1000);
    req_sample(&q, i, 0, 2000);
    i = req_series(&q, "__name__", "x", NULL);
    req_sample(&q, i, 2.5, 1000);
    req_exemplar(&q, i, "trace_id", "abc", 1, 1000);

    assert_int_equal(scan(&q, &st, &err), PG_RW_OK);
    assert_int_equal(st.series, 2);
    assert_int_equal(st.samples, 3);
    assert_int_equal(st.exemplars, 1);
    assert_int_equal(st.histograms, 0);
    assert_int_equal(st.metadata, 0);
}


static void
test_exemplar_only_and_repeated(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_exemplar(&q, i, "trace_id", "1", 1, 1000);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_sample(&q, i, 1, 1000);
    i = req_series(&q, "__name__", "a", "job", "j", NULL);
    req_sample(&q, i, 2, 2000);

    assert_int_equal(scan(&q, &st, NULL), PG_RW_OK);
    assert_int_equal(st.series, 3);
    assert_int_equal(st.samples, 2);
    assert_int_equal(st.exemplars, 1);
    assert_int_equal(st.empty_series, 0);
}


static void
test_nan_inf_staleness(void **state)
{
    req_t          q;
    size_t         i;
    double         stale;
    uint64_t       bits;
    pg_rw_stats_t  st;

    bits = 0x7ff0000000000002ULL;
    memcpy(&stale, &bits, sizeof(stale));

    req_init(&q);
    i = req_series(&q, "__name__", "a", NULL);
    req_sample(&q, i, stale, 1000);
    req_sample(&q, i, NAN, 2000);
    req_sample(&q, i, INFINITY, 3000);
    req_sample(&q, i, -INFINITY, 4000);

    assert_int_equal(scan(&q, &st, NULL), PG_RW_OK);
    assert_int_equal(st.samples, 4);
}


static void
test_metadata_only(void **state)
{
    req_t          q;
    pg_rw_stats_t  st;

    req_init(&q);
    prometheus__metric_metadata__init(&q.md[0]);
    q.md[0].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__COUNTER;
    q.md[0].metric_family_name = "http_requests_total";
    q.md[0].help = "Requests.";
    q.mdp[0] = &q.md[0];
    q.wr.n_metadata = 1;

    assert_int_equal(scan(&q, &st, NULL), PG_RW_OK);
    assert_int_equal(st.metadata, 1);
    assert_int_equal(st.series, 0);
}


static void
test_histogram(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;

    req_init(&q);
    i = req_series(&q, "__name__", "h", NULL);
    req_histogram(&q, i);

    assert_int_equal(scan(&q, &st, NULL), PG_RW_OK);
    assert_int_equal(st.histograms, 1);
}


static void
test_empty_request(void **state)
{
    pg_rw_stats_t  st;

    assert_int_equal(pg_rw_scan((const uint8_t *) "", 0, &st, NULL, NULL,
                                NULL), PG_RW_OK);
    assert_int_equal(st.series, 0);
}


static void
test_no_name(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;
    pg_rw_error_t  err;

    req_init(&q);
    i = req_series(&q, "__name__", "ok", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "job", "x", NULL);
    req_sample(&q, i, 1, 1);

    assert_int_equal(scan(&q, &st, &err), PG_RW_NO_NAME);
    assert_int_equal(err.series, 1);
    assert_non_null(strstr(err.message, "series 1 {job=\"x\"}"));
    assert_non_null(strstr(err.message, "no metric name"));

    /* an empty __name__ is no name either */
    req_init(&q);
    i = req_series(&q, "__name__", "", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_NO_NAME);
}


static void
test_unsorted_duplicate(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;
    pg_rw_error_t  err;

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", "instance", "y", NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_UNSORTED_LABELS);
    assert_non_null(strstr(err.message, "\"instance\" after \"job\""));

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", "job", "y", NULL);
    req_sample(&q, i, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_DUPLICATE_LABEL);
    assert_non_null(strstr(err.message, "duplicate label name"));
}


static void
test_bad_names_and_utf8(void **state)
{
    req_t          q;
    size_t         i;
    pg_rw_stats_t  st;
    pg_rw_error_t  err;

    static const char  *bad[] = { "1abc", "a-b", "a.b", "é", "a b" };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        req_init(&q);
        req_series(&q, "__name__", "a", bad[i], "v", NULL);
        req_sample(&q, 0, 1, 1);
        assert_int_equal(scan(&q, &st, &err), PG_RW_BAD_LABEL_NAME);
        assert_non_null(strstr(err.message, "invalid label name"));
    }

    /* valid names */
    req_init(&q);
    req_series(&q, "_", "v", "__name__", "a", "a1", "v", "Z_9", "v", NULL);
    req_sample(&q, 0, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_UNSORTED_LABELS);

    req_init(&q);
    req_series(&q, "Z_9", "v", "_", "v", "__name__", "a", "a1", "v", NULL);
    req_sample(&q, 0, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_OK);

    /* invalid UTF-8 in a value: overlong, surrogate, truncated, > U+10FFFF */
    static const char  *badv[] = { "\xc0\xaf", "\xed\xa0\x80", "ab\xe2\x82",
                                   "\xf4\x90\x80\x80", "\xff" };

    for (i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        req_init(&q);
        req_series(&q, "__name__", "a", "job", badv[i], NULL);
        req_sample(&q, 0, 1, 1);
        assert_int_equal(scan(&q, &st, &err), PG_RW_BAD_UTF8);
    }

    /* valid multi-byte UTF-8 */
    req_init(&q);
    req_series(&q, "__name__", "a", "job", "h\xc3\xa9llo \xe2\x82\xac "
               "\xf0\x9f\x98\x80", NULL);
    req_sample(&q, 0, 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_OK);

    /* an exemplar's label is checked too */
    req_init(&q);
    req_series(&q, "__name__", "a", NULL);
    req_exemplar(&q, 0, "trace_id", "\xff", 1, 1);
    assert_int_equal(scan(&q, &st, &err), PG_RW_BAD_UTF8);
    assert_non_null(strstr(err.message, "exemplar 0"));
}


static void
test_malformed(void **state)
{
    req_t          q;
    size_t         i, n;
    pg_rw_stats_t  st;
    pg_rw_error_t  err;
    uint8_t        b[64];

    /* every truncation of a valid request is either valid or malformed */
    req_init(&q);
    i = req_series(&q, "__name__", "abc", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    req_exemplar(&q, i, "trace_id", "t", 1, 1);
    req_pack(&q);

    for (n = 1; n < q.len; n++) {
        assert_int_equal(pg_rw_scan(q.buf, n, &st, &err, NULL, NULL),
                         PG_RW_MALFORMED);
    }

    /* wrong wire type for timeseries (varint) */
    b[0] = 0x08; b[1] = 0x01;
    assert_int_equal(pg_rw_scan(b, 2, &st, &err, NULL, NULL),
                     PG_RW_MALFORMED);

    /* a varint longer than 10 bytes */
    memset(b, 0xff, 12);
    b[0] = 0x20;    /* field 4 varint */
    b[12] = 0x01;
    assert_int_equal(pg_rw_scan(b, 13, &st, &err, NULL, NULL),
                     PG_RW_MALFORMED);

    /* a length beyond the buffer */
    b[0] = 0x0a; b[1] = 0xff; b[2] = 0xff; b[3] = 0xff; b[4] = 0x0f;
    assert_int_equal(pg_rw_scan(b, 5, &st, &err, NULL, NULL),
                     PG_RW_MALFORMED);

    /* field number 0 */
    b[0] = 0x02; b[1] = 0x00;
    assert_int_equal(pg_rw_scan(b, 2, &st, &err, NULL, NULL),
                     PG_RW_MALFORMED);

    /* deprecated group wire type */
    b[0] = 0x0b;
    assert_int_equal(pg_rw_scan(b, 1, &st, &err, NULL, NULL),
                     PG_RW_MALFORMED);

    /* unknown fields of every valid wire type are skipped */
    b[0] = 0x28; b[1] = 0x05;                                   /* 5 varint */
    b[2] = 0x31; memset(b + 3, 0, 8);                           /* 6 i64 */
    b[11] = 0x3a; b[12] = 0x02; b[13] = 'x'; b[14] = 'y';       /* 7 len */
    b[15] = 0x45; memset(b + 16, 0, 4);                         /* 8 i32 */
    assert_int_equal(pg_rw_scan(b, 20, &st, &err, NULL, NULL), PG_RW_OK);

    /* sample value with the wrong wire type */
    {
        static const uint8_t  s[] = {
            0x0a, 0x0f,                         /* timeseries, 15 bytes */
            0x0a, 0x09, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            /* label: name only; value missing => empty name value */
            0x12, 0x02, 0x08, 0x01              /* sample: value as varint */
        };
        assert_int_equal(pg_rw_scan(s, sizeof(s), &st, &err, NULL, NULL),
                         PG_RW_MALFORMED);
    }

    assert_int_equal(pg_rw_count_samples(q.buf, q.len), 1);
}


typedef struct {
    size_t  series;
    size_t  labels;
    size_t  exemplars;
    double  exemplar_value;
    int64_t exemplar_ts;
    char    exemplar_label[64];
} cb_t;


static int
series_cb(void *ctx, const pg_rw_series_t *s)
{
    cb_t          *c = ctx;
    pg_pb_iter_t   it, lit;
    pg_label_t     l;
    pg_exemplar_t  ex;

    c->series++;

    pg_rw_series_labels(s, &it);
    while (pg_rw_next_label(&it, &l)) {
        c->labels++;
    }

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

    return 0;
}


static void
test_iterators(void **state)
{
    req_t          q;
    size_t         i;
    cb_t           c;
    pg_rw_stats_t  st;

    req_init(&q);
    i = req_series(&q, "__name__", "a", "job", "x", NULL);
    req_sample(&q, i, 1, 1);
    i = req_series(&q, "__name__", "b", "job", "y", "zone", "z", NULL);
    req_exemplar(&q, i, "trace_id", "00112233445566778899aabbccddeeff",
                 0.25, 1600096945479);
    req_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(pg_rw_scan(q.buf, q.len, &st, NULL, series_cb, &c),
                     PG_RW_OK);
    assert_int_equal(c.series, 2);
    assert_int_equal(c.labels, 5);
    assert_int_equal(c.exemplars, 1);
    assert_true(c.exemplar_value == 0.25);
    assert_int_equal(c.exemplar_ts, 1600096945479);
    assert_string_equal(c.exemplar_label,
                        "trace_id=00112233445566778899aabbccddeeff");
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

    /* empty and garbage */
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) "", 0, 1024,
                                              &dlen), PG_SNAPPY_INVALID);
    assert_int_equal(pg_snappy_decoded_length((uint8_t *) "\xff\xff\xff\xff"
                                              "\xff\xff", 6, 1024, &dlen),
                     PG_SNAPPY_INVALID);
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
        cmocka_unit_test(test_metadata_only),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_empty_request),
        cmocka_unit_test(test_no_name),
        cmocka_unit_test(test_unsorted_duplicate),
        cmocka_unit_test(test_bad_names_and_utf8),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_iterators),
        cmocka_unit_test(test_snappy_guard),
        cmocka_unit_test(test_utf8),
    };

    return cmocka_run_group_tests_name("remote-write decode", tests, NULL,
                                       NULL);
}
