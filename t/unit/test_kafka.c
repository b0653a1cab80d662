/*
 * Kafka consumer logic (src/core/pg_kafka.c): format detection and
 * decoding, the JSON of prometheus-kafka-adapter, the offset watermark,
 * batch assembly and splitting, answer classification and the HTTP
 * response parser.
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

#include "pg_kafka.h"
#include "remote.pb-c.h"


/* an arena: every allocation is freed at the end of the test */

typedef struct {
    void   *blocks[4096];
    size_t  n;
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t  *a = ctx;

    if (a->n == sizeof(a->blocks) / sizeof(a->blocks[0])) {
        return NULL;
    }

    a->blocks[a->n] = malloc(size);

    return a->blocks[a->n++];
}


static void
arena_free(arena_t *a)
{
    while (a->n) {
        free(a->blocks[--a->n]);
    }
}


static void *
fail_alloc(void *ctx, size_t size)
{
    return NULL;
}


/* a WriteRequest of one series {__name__=name, job=job} and one sample */

static size_t
make_wr(uint8_t *buf, const char *name, const char *job, double v, int64_t t)
{
    Prometheus__Label          l[2], *lp[2];
    Prometheus__Sample         s, *sp;
    Prometheus__TimeSeries     ts, *tsp;
    Prometheus__WriteRequest   wr;

    prometheus__label__init(&l[0]);
    prometheus__label__init(&l[1]);
    l[0].name = "__name__";
    l[0].value = (char *) name;
    l[1].name = "job";
    l[1].value = (char *) job;
    lp[0] = &l[0];
    lp[1] = &l[1];

    prometheus__sample__init(&s);
    s.value = v;
    s.timestamp = t;
    sp = &s;

    prometheus__time_series__init(&ts);
    ts.labels = lp;
    ts.n_labels = 2;
    ts.samples = &sp;
    ts.n_samples = 1;
    tsp = &ts;

    prometheus__write_request__init(&wr);
    wr.timeseries = &tsp;
    wr.n_timeseries = 1;

    return prometheus__write_request__pack(&wr, buf);
}


static Prometheus__WriteRequest *
unpack(const pg_kafka_decoded_t *d)
{
    Prometheus__WriteRequest  *wr;

    wr = prometheus__write_request__unpack(NULL, d->len, d->data);
    assert_non_null(wr);

    return wr;
}


static const char *
label(Prometheus__TimeSeries *ts, const char *name)
{
    size_t  i;

    for (i = 0; i < ts->n_labels; i++) {
        if (strcmp(ts->labels[i]->name, name) == 0) {
            return ts->labels[i]->value;
        }
    }

    return NULL;
}


static void
test_format_names(void **state)
{
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "auto", 4),
                     PG_KAFKA_FORMAT_AUTO);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "prompb", 6),
                     PG_KAFKA_FORMAT_PROMPB);
    assert_int_equal(pg_kafka_format_parse(
                         (const uint8_t *) "prompb-snappy", 13),
                     PG_KAFKA_FORMAT_PROMPB_SNAPPY);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "json", 4),
                     PG_KAFKA_FORMAT_JSON);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "jso", 3), -1);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "prompbx", 7),
                     -1);
    assert_string_equal(pg_kafka_format_name(PG_KAFKA_FORMAT_PROMPB_SNAPPY),
                        "prompb-snappy");
}


static void
test_decode_prompb_and_snappy(void **state)
{
    arena_t             a = { .n = 0 };
    pg_allocator_t      al = { arena_alloc, &a };
    uint8_t             raw[256], z[512];
    size_t              len, zlen;
    pg_kafka_decoded_t  d;

    len = make_wr(raw, "up", "node", 1, 1000);
    zlen = sizeof(z);
    assert_int_equal(snappy_compress((char *) raw, len, (char *) z, &zlen),
                     SNAPPY_OK);

    /* prompb: in place */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_ptr_equal(d.data, raw);
    assert_int_equal(d.len, len);
    assert_int_equal(d.stats.samples, 1);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB);

    /* prompb-snappy */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.len, len);
    assert_memory_equal(d.data, raw, len);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_SNAPPY);

    /* auto tells them apart */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, z, zlen, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_SNAPPY);
    assert_int_equal(d.stats.series, 1);

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, len, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB);
    assert_ptr_equal(d.data, raw);

    /* snappy where prompb was promised, and the reverse: poison */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_non_null(d.reason);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "snappy");

    /* garbage in auto */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO,
                                     (const uint8_t *) "\xff\xff\xff\xff", 4,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "neither"));

    /* a decompression bomb is refused before anything is allocated */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     len - 1, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "too_large");

    /* an empty message is an empty WriteRequest for prompb and auto */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, 0, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, raw, 0,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);

    /* out of memory is not poison */
    al.alloc = fail_alloc;
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_NOMEM);

    arena_free(&a);
}


static void
test_decode_invalid_series(void **state)
{
    arena_t             a = { .n = 0 };
    pg_allocator_t      al = { arena_alloc, &a };
    uint8_t             raw[256];
    size_t              len;
    pg_kafka_decoded_t  d;

    /* any UTF-8 is a valid metric name value in remote write 1.0 */
    len = make_wr(raw, "bad-name", "x", 1, 1000);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);

    /* truncated protobuf */
    len = make_wr(raw, "up", "node", 1, 1000);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len - 3,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");

    arena_free(&a);
}


static pg_kafka_rc_e
json(arena_t *a, const char *text, pg_kafka_decoded_t *d)
{
    pg_allocator_t  al = { arena_alloc, a };

    return pg_kafka_decode(PG_KAFKA_FORMAT_JSON, (const uint8_t *) text,
                           strlen(text), 1 << 20, &al, d);
}


static void
test_json_adapter(void **state)
{
    arena_t                    a = { .n = 0 };
    pg_kafka_decoded_t         d;
    Prometheus__WriteRequest  *wr;
    Prometheus__TimeSeries    *ts;

    /* exactly what prometheus-kafka-adapter writes */
    assert_int_equal(json(&a, "{\"timestamp\":\"1970-01-01T00:00:00Z\","
                              "\"value\":\"9876543210\",\"name\":\"up\","
                              "\"labels\":{\"__name__\":\"up\","
                              "\"label2\":\"value2\","
                              "\"label1\":\"value1\"}}", &d),
                     PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_JSON);
    assert_int_equal(d.stats.series, 1);
    assert_int_equal(d.stats.samples, 1);

    wr = unpack(&d);
    assert_int_equal(wr->n_timeseries, 1);
    ts = wr->timeseries[0];
    assert_int_equal(ts->n_labels, 3);
    /* sorted, as remote write requires */
    assert_string_equal(ts->labels[0]->name, "__name__");
    assert_string_equal(ts->labels[1]->name, "label1");
    assert_string_equal(ts->labels[2]->name, "label2");
    assert_int_equal(ts->n_samples, 1);
    assert_true(ts->samples[0]->value == 9876543210.0);
    assert_int_equal(ts->samples[0]->timestamp, 0);
    prometheus__write_request__free_unpacked(wr, NULL);

    /* name without __name__ in labels; fractional, offset timestamps */
    assert_int_equal(json(&a, " { \"labels\" : { \"job\" : \"a\" } , "
                              "\"name\" : \"rq\", \"value\": 2.5e0, "
                              "\"timestamp\": \"2023-03-01T01:02:03.456+01:00\""
                              " } ", &d), PG_KAFKA_OK);
    wr = unpack(&d);
    ts = wr->timeseries[0];
    assert_string_equal(label(ts, "__name__"), "rq");
    assert_string_equal(label(ts, "job"), "a");
    assert_true(ts->samples[0]->value == 2.5);
    /* 2023-03-01T00:02:03.456Z */
    assert_int_equal(ts->samples[0]->timestamp, 1677628923456LL);
    prometheus__write_request__free_unpacked(wr, NULL);

    /* __name__ in labels wins over name */
    assert_int_equal(json(&a, "{\"name\":\"a\",\"labels\":{\"__name__\":\"b\"},"
                              "\"value\":\"1\",\"timestamp\":1700000000123}",
                              &d), PG_KAFKA_OK);
    wr = unpack(&d);
    ts = wr->timeseries[0];
    assert_int_equal(ts->n_labels, 1);
    assert_string_equal(label(ts, "__name__"), "b");
    assert_int_equal(ts->samples[0]->timestamp, 1700000000123LL);
    prometheus__write_request__free_unpacked(wr, NULL);

    arena_free(&a);
}


static void
test_json_values_and_escapes(void **state)
{
    arena_t                    a = { .n = 0 };
    pg_kafka_decoded_t         d;
    Prometheus__WriteRequest  *wr;
    Prometheus__TimeSeries    *ts;

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-02-29T23:59:59Z\","
                              "\"value\":\"NaN\",\"name\":\"x\"}", &d),
                     PG_KAFKA_OK);
    wr = unpack(&d);
    assert_true(isnan(wr->timeseries[0]->samples[0]->value));
    assert_int_equal(wr->timeseries[0]->samples[0]->timestamp,
                     1583020799000LL);
    prometheus__write_request__free_unpacked(wr, NULL);

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"+Inf\",\"name\":\"x\"}", &d),
                     PG_KAFKA_OK);
    wr = unpack(&d);
    assert_true(isinf(wr->timeseries[0]->samples[0]->value));
    prometheus__write_request__free_unpacked(wr, NULL);

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"-Inf\",\"name\":\"x\"}", &d),
                     PG_KAFKA_OK);

    /* escapes, a surrogate pair, unknown keys of every kind skipped */
    assert_int_equal(json(&a, "{\"x\":[1,{\"y\":[true,false,null]},\"s\"],"
                              "\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":{"
                              "\"path\":\"a\\\"b\\\\c\\/d\\n\\u00e9"
                              "\\ud83d\\ude00\"},\"z\":-1.5e3}", &d),
                     PG_KAFKA_OK);
    wr = unpack(&d);
    ts = wr->timeseries[0];
    assert_string_equal(label(ts, "path"),
                        "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80");
    prometheus__write_request__free_unpacked(wr, NULL);

    /* a lone surrogate becomes U+FFFD, as Go does */
    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":{"
                              "\"a\":\"\\ud800z\"}}", &d), PG_KAFKA_OK);
    wr = unpack(&d);
    assert_string_equal(label(wr->timeseries[0], "a"), "\xef\xbf\xbdz");
    prometheus__write_request__free_unpacked(wr, NULL);

    arena_free(&a);
}


static void
test_json_poison(void **state)
{
    size_t              i;
    arena_t             a = { .n = 0 };
    pg_kafka_decoded_t  d;

    static const char  *bad[] = {
        "",
        "[]",
        "{",
        "{\"value\":\"1\",\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01\",\"value\":\"1\",\"name\":\"x\"}",
        "{\"timestamp\":\"2021-02-29T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T24:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T00:00:00\",\"value\":\"1\","
            "\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1x\","
            "\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"\","
            "\"name\":\"x\"}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\"} x",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\",\"labels\":{\"a\":1}}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\",\"labels\":{\"a\":\"\\u0000\"}}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\",\"labels\":{\"a\":\"\\x\"}}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"name\":\"x\",\"labels\":{\"a\":\"b\n\"}}",
        "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"value\":\"1\","
            "\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]"
            "]]]]]]]]]]]]]]]]]]]]]],\"name\":\"x\"}",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (json(&a, bad[i], &d) != PG_KAFKA_POISON) {
            fail_msg("accepted: %s", bad[i]);
        }

        assert_string_equal(d.reason, "json");
        assert_true(d.error[0] != '\0');
    }

    /* decodes, but the scan refuses it: no name, a bad label name */
    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\"}", &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "missing_name");

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":"
                              "{\"a-b\":\"1\"}}", &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "invalid_label_name");

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":"
                              "{\"a\":\"\xff\"}}", &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "invalid_utf8");

    arena_free(&a);
}


static void
test_batch_concatenates(void **state)
{
    arena_t                    a = { .n = 0 };
    pg_allocator_t             al = { arena_alloc, &a };
    uint8_t                    r1[256], r2[256], cat[512], z[1024],
                               back[512];
    size_t                     l1, l2, zlen, blen;
    pg_kafka_decoded_t         d;
    Prometheus__WriteRequest  *wr;

    /* two WriteRequests concatenated are one with both series */
    l1 = make_wr(r1, "a", "j", 1, 1000);
    l2 = make_wr(r2, "b", "j", 2, 2000);
    memcpy(cat, r1, l1);
    memcpy(cat + l1, r2, l2);

    zlen = pg_kafka_compress_bound(l1 + l2);
    assert_true(zlen <= sizeof(z));
    assert_int_equal(pg_kafka_compress(cat, l1 + l2, z, &zlen), 0);

    blen = sizeof(back);
    assert_int_equal(snappy_uncompress((char *) z, zlen, (char *) back,
                                       &blen), SNAPPY_OK);
    assert_int_equal(blen, l1 + l2);

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 2);

    wr = unpack(&d);
    assert_int_equal(wr->n_timeseries, 2);
    assert_string_equal(label(wr->timeseries[1], "__name__"), "b");
    prometheus__write_request__free_unpacked(wr, NULL);

    arena_free(&a);
}


static void
test_watermark(void **state)
{
    int64_t        off[4], off2[16];
    uint8_t        done[4], done2[16];
    pg_kafka_wm_t  wm;

    pg_kafka_wm_init(&wm, off, done, 4);
    assert_int_equal(pg_kafka_wm_low(&wm), -1);

    assert_int_equal(pg_kafka_wm_take(&wm, 10), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 11), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 13), 0);    /* gaps happen */
    assert_int_equal(pg_kafka_wm_low(&wm), 10);
    assert_int_equal(pg_kafka_wm_held(&wm), 3);

    /* done out of order: the watermark stays at the lowest not done */
    assert_int_equal(pg_kafka_wm_done(&wm, 11), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 10);
    assert_int_equal(pg_kafka_wm_done(&wm, 13), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 10);
    assert_int_equal(pg_kafka_wm_held(&wm), 1);

    /* twice, or never taken */
    assert_int_equal(pg_kafka_wm_done(&wm, 11), -1);
    assert_int_equal(pg_kafka_wm_done(&wm, 12), -1);
    assert_int_equal(pg_kafka_wm_done(&wm, 99), -1);

    assert_int_equal(pg_kafka_wm_done(&wm, 10), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 14);        /* after the last */
    assert_int_equal(pg_kafka_wm_held(&wm), 0);

    /* re-delivered offsets are refused */
    assert_int_equal(pg_kafka_wm_take(&wm, 13), PG_KAFKA_WM_ORDER);
    assert_int_equal(pg_kafka_wm_take(&wm, 14), 0);

    /* wrap around, fill, grow */
    assert_int_equal(pg_kafka_wm_take(&wm, 15), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 16), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 17), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 18), PG_KAFKA_WM_FULL);
    assert_int_equal(pg_kafka_wm_done(&wm, 16), 0);

    pg_kafka_wm_move(&wm, off2, done2, 16);
    assert_int_equal(pg_kafka_wm_take(&wm, 18), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 14);
    assert_int_equal(pg_kafka_wm_held(&wm), 4);
    assert_int_equal(pg_kafka_wm_done(&wm, 16), -1);   /* kept its state */
    assert_int_equal(pg_kafka_wm_done(&wm, 14), 0);
    assert_int_equal(pg_kafka_wm_done(&wm, 15), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 17);
    assert_int_equal(pg_kafka_wm_done(&wm, 17), 0);
    assert_int_equal(pg_kafka_wm_done(&wm, 18), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 19);
}


static void
test_watermark_random(void **state)
{
    int64_t        off[64], lowest;
    uint8_t        done[64], ref[1000];
    unsigned       i, k, taken, seed;
    pg_kafka_wm_t  wm;

    /* against a reference: the lowest not done of what was taken */

    pg_kafka_wm_init(&wm, off, done, 64);
    memset(ref, 0, sizeof(ref));
    taken = 0;
    seed = 12345;

    for (i = 0; i < 20000; i++) {
        seed = seed * 1103515245 + 12345;

        if ((seed >> 16) % 2 && taken < 1000) {
            if (pg_kafka_wm_take(&wm, taken) == 0) {
                taken++;
            }

        } else if (taken) {
            k = (seed >> 8) % taken;
            if (pg_kafka_wm_done(&wm, k) == 0) {
                assert_int_equal(ref[k], 0);
                ref[k] = 1;

            } else {
                assert_int_equal(ref[k], 1);
            }
        }

        for (lowest = 0; lowest < taken && ref[lowest]; lowest++) {
            /* void */
        }

        assert_int_equal(pg_kafka_wm_low(&wm), taken ? lowest : -1);
    }
}


static void
test_batch_assembly(void **state)
{
    pg_kafka_batch_t  b;
    pg_str_t          none = { NULL, 0 };
    pg_str_t          t1 = pg_str_lit("tenant-1");
    pg_str_t          t2 = pg_str_lit("tenant-2");

    /* count */
    pg_kafka_batch_init(&b, 3, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 0);
    assert_int_equal(b.count, 3);

    /* bytes, but never an empty batch */
    pg_kafka_batch_init(&b, 100, 25);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none), 0);
    pg_kafka_batch_init(&b, 100, 25);
    assert_int_equal(pg_kafka_batch_add(&b, 1000, 0, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none), 0);

    /* tenants do not mix */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t2), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none), 0);

    /* limits from a split do not mix either, and cap the batch */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none), 0);
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none), 0);
}


static void
test_batch_split_finds_the_bad_one(void **state)
{
    unsigned  limit[100], bad, round, posts, i, n, acked, poison;

    /*
     * Simulates the consumer: 100 messages, one bad, re-sent in halves
     * until only good ones are stored and the bad one is alone.
     */

    for (bad = 0; bad < 100; bad++) {
        memset(limit, 0, sizeof(limit));
        acked = 0;
        poison = 0;
        posts = 0;
        i = 0;

        for (round = 0; i < 100 && round < 1000; round++) {
            pg_kafka_batch_t  b;
            pg_str_t          none = { NULL, 0 };

            pg_kafka_batch_init(&b, 100, 1 << 20);

            for (n = i; n < 100; n++) {
                if (!pg_kafka_batch_add(&b, 1, limit[n], none)) {
                    break;
                }
            }

            posts++;

            if (bad >= i && bad < n) {
                unsigned l = pg_kafka_batch_split(n - i);

                if (l == 0) {
                    poison++;
                    i = n;
                    continue;
                }

                for (unsigned k = i; k < n; k++) {
                    limit[k] = l;
                }

                continue;
            }

            acked += n - i;
            i = n;
        }

        assert_int_equal(acked, 99);
        assert_int_equal(poison, 1);
        assert_true(posts <= 16);
    }
}


static void
test_classify(void **state)
{
    assert_int_equal(pg_kafka_classify(204), PG_KAFKA_ACK);
    assert_int_equal(pg_kafka_classify(200), PG_KAFKA_ACK);
    assert_int_equal(pg_kafka_classify(400), PG_KAFKA_REJECT);
    assert_int_equal(pg_kafka_classify(409), PG_KAFKA_REJECT);
    assert_int_equal(pg_kafka_classify(413), PG_KAFKA_REJECT);
    assert_int_equal(pg_kafka_classify(415), PG_KAFKA_REJECT);
    assert_int_equal(pg_kafka_classify(503), PG_KAFKA_RETRY);
    assert_int_equal(pg_kafka_classify(500), PG_KAFKA_RETRY);
    assert_int_equal(pg_kafka_classify(429), PG_KAFKA_RETRY);
    assert_int_equal(pg_kafka_classify(404), PG_KAFKA_RETRY);
    assert_int_equal(pg_kafka_classify(0), PG_KAFKA_RETRY);
}


static pg_kafka_resp_rc_e
resp(pg_kafka_resp_t *r, const char *text, size_t step, size_t *total)
{
    size_t              off, len, n, used;
    pg_kafka_resp_rc_e  rc;

    pg_kafka_resp_init(r);
    len = strlen(text);
    off = 0;
    rc = PG_KAFKA_RESP_AGAIN;

    while (off < len) {
        n = len - off < step ? len - off : step;
        rc = pg_kafka_resp_parse(r, (const uint8_t *) text + off, n, &used);
        off += used;

        if (rc != PG_KAFKA_RESP_AGAIN) {
            break;
        }
    }

    *total = off;

    return rc;
}


static void
test_response_parser(void **state)
{
    size_t           step, used;
    pg_kafka_resp_t  r;

    const char  *r204 = "HTTP/1.1 204 No Content\r\nServer: nginx\r\n"
                        "X-Prometheus-Remote-Write-Samples-Written: 3\r\n"
                        "\r\n";
    const char  *r503 = "HTTP/1.1 503 Service Unavailable\r\n"
                        "Content-Type: text/plain\r\nContent-Length: 5\r\n"
                        "\r\nretryHTTP/1.1 204";
    const char  *chunked = "HTTP/1.1 400 Bad Request\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n"
                           "4\r\nbad \r\n6;x=y\r\nseries\r\n0\r\n"
                           "X-Trailer: 1\r\n\r\n";
    const char  *cont = "HTTP/1.1 100 Continue\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n";

    /* every split of the input gives the same answer */

    for (step = 1; step < 200; step += step < 8 ? 1 : 37) {
        assert_int_equal(resp(&r, r204, step, &used), PG_KAFKA_RESP_DONE);
        assert_int_equal(r.status, 204);
        assert_int_equal(r.keepalive, 1);
        assert_int_equal(used, strlen(r204));

        assert_int_equal(resp(&r, r503, step, &used), PG_KAFKA_RESP_DONE);
        assert_int_equal(r.status, 503);
        assert_string_equal(r.body, "retry");
        assert_int_equal(used, strlen(r503) - strlen("HTTP/1.1 204"));

        assert_int_equal(resp(&r, chunked, step, &used), PG_KAFKA_RESP_DONE);
        assert_int_equal(r.status, 400);
        assert_string_equal(r.body, "bad series");
        assert_int_equal(used, strlen(chunked));

        assert_int_equal(resp(&r, cont, step, &used), PG_KAFKA_RESP_DONE);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.keepalive, 0);
    }

    /* HTTP/1.0 without a length: the body ends with the connection */
    assert_int_equal(resp(&r, "HTTP/1.0 502 Bad Gateway\r\n\r\noops", 5,
                          &used), PG_KAFKA_RESP_AGAIN);
    assert_int_equal(pg_kafka_resp_eof(&r), PG_KAFKA_RESP_DONE);
    assert_int_equal(r.status, 502);
    assert_string_equal(r.body, "oops");
    assert_int_equal(r.keepalive, 0);

    /* closed in the middle */
    assert_int_equal(resp(&r, "HTTP/1.1 204 No", 5, &used),
                     PG_KAFKA_RESP_AGAIN);
    assert_int_equal(pg_kafka_resp_eof(&r), PG_KAFKA_RESP_ERROR);

    /* garbage */
    assert_int_equal(resp(&r, "SSH-2.0-OpenSSH\r\n", 100, &used),
                     PG_KAFKA_RESP_ERROR);
    assert_int_equal(resp(&r, "HTTP/1.1 204 OK\r\nno colon\r\n\r\n", 100,
                          &used), PG_KAFKA_RESP_ERROR);
    assert_int_equal(resp(&r, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                          100, &used), PG_KAFKA_RESP_ERROR);
    assert_int_equal(resp(&r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                          "Content-Length: 2\r\n\r\n", 100, &used),
                     PG_KAFKA_RESP_ERROR);
    assert_int_equal(resp(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                          "chunked\r\n\r\nzz\r\n", 100, &used),
                     PG_KAFKA_RESP_ERROR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_decode_prompb_and_snappy),
        cmocka_unit_test(test_decode_invalid_series),
        cmocka_unit_test(test_json_adapter),
        cmocka_unit_test(test_json_values_and_escapes),
        cmocka_unit_test(test_json_poison),
        cmocka_unit_test(test_batch_concatenates),
        cmocka_unit_test(test_watermark),
        cmocka_unit_test(test_watermark_random),
        cmocka_unit_test(test_batch_assembly),
        cmocka_unit_test(test_batch_split_finds_the_bad_one),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_response_parser),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
