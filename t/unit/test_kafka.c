/*
 * Kafka consumer logic (src/core/pg_kafka.c): format detection and
 * decoding (remote write 1.0 and 2.0, raw and snappy), the JSON of
 * prometheus-kafka-adapter, the offset watermark, batch assembly and
 * splitting, answer classification and the HTTP response parser.
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


/* the protobuf wire format by hand, for 2.0 Requests and odd messages */

static uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t) (v | 0x80);
        v >>= 7;
    }

    *p++ = (uint8_t) v;

    return p;
}


static uint8_t *
put_bytes(uint8_t *p, unsigned field, const void *data, size_t len)
{
    p = put_varint(p, field << 3 | 2);
    p = put_varint(p, len);
    memcpy(p, data, len);

    return p + len;
}


static uint8_t *
put_refs(uint8_t *p, unsigned field, const uint32_t *refs, size_t n)
{
    uint8_t   packed[256], *q;
    size_t    i;

    q = packed;

    for (i = 0; i < n; i++) {
        q = put_varint(q, refs[i]);
    }

    return put_bytes(p, field, packed, (size_t) (q - packed));
}


/* a Sample or an Exemplar's value (field vf) and timestamp (field tf) */

static uint8_t *
put_point(uint8_t *p, unsigned vf, double v, unsigned tf, int64_t t)
{
    p = put_varint(p, vf << 3 | 1);
    memcpy(p, &v, 8);
    p += 8;
    p = put_varint(p, tf << 3);

    return put_varint(p, (uint64_t) t);
}


typedef struct {
    const uint32_t   *refs;         /* label refs, name/value pairs */
    size_t            nrefs;
    double            value;
    int64_t           t;
    const uint32_t   *ex;           /* an exemplar's label refs, or NULL */
    size_t            nex;
} v2_series_t;


/* a 2.0 Request: symbols, then series of one sample (and an exemplar) */

static size_t
make_v2(uint8_t *buf, const char *const *sym, size_t nsym,
    const v2_series_t *s, size_t ns)
{
    uint8_t  *p, ts[512], *q, pt[64], *r;
    size_t    i;

    p = buf;

    for (i = 0; i < nsym; i++) {
        p = put_bytes(p, 4, sym[i], strlen(sym[i]));
    }

    for (i = 0; i < ns; i++) {
        q = put_refs(ts, 1, s[i].refs, s[i].nrefs);

        r = put_point(pt, 1, s[i].value, 2, s[i].t);
        q = put_bytes(q, 2, pt, (size_t) (r - pt));

        if (s[i].ex) {
            r = put_refs(pt, 1, s[i].ex, s[i].nex);
            r = put_point(r, 2, s[i].value, 3, s[i].t);
            q = put_bytes(q, 4, pt, (size_t) (r - pt));
        }

        p = put_bytes(p, 5, ts, (size_t) (q - ts));
    }

    return (size_t) (p - buf);
}


static const char *const  v2_sym[] = {
    "", "__name__", "up", "job", "node", "trace_id", "abc", "down"
};

static const uint32_t  v2_up[] = { 1, 2, 3, 4 };         /* up{job="node"} */
static const uint32_t  v2_down[] = { 1, 7, 3, 4 };
static const uint32_t  v2_trace[] = { 5, 6 };
static const uint32_t  v2_dup[] = { 1, 2, 3, 4, 3, 7 };  /* job twice */
static const uint32_t  v2_noname[] = { 3, 4 };


/* up (with an exemplar) and down: two valid series */

static size_t
make_v2_valid(uint8_t *buf, int64_t t)
{
    v2_series_t  s[2] = {
        { v2_up, 4, 1, t, v2_trace, 2 },
        { v2_down, 4, 0, t, NULL, 0 },
    };

    return make_v2(buf, v2_sym, 8, s, 2);
}


static size_t
compress(const uint8_t *raw, size_t len, uint8_t *z, size_t size)
{
    size_t  zlen;

    zlen = size;
    assert_int_equal(snappy_compress((const char *) raw, len, (char *) z,
                                     &zlen), SNAPPY_OK);

    return zlen;
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
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "prompb-v2",
                                           9), PG_KAFKA_FORMAT_PROMPB_V2);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "prompb-v", 8),
                     -1);
    assert_int_equal(pg_kafka_format_parse((const uint8_t *) "prompb-v2-snappy",
                                           16), -1);
    assert_string_equal(pg_kafka_format_name(PG_KAFKA_FORMAT_PROMPB_SNAPPY),
                        "prompb-snappy");
    assert_string_equal(pg_kafka_format_name(PG_KAFKA_FORMAT_PROMPB_V2),
                        "prompb-v2");
    assert_string_equal(pg_kafka_format_name((pg_kafka_format_e) 5),
                        "unknown");
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
    assert_int_equal(d.version, PG_RW_V1);
    assert_int_equal(d.snappy, 0);
    assert_int_equal(d.invalid, 0);

    /* prompb-snappy */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.len, len);
    assert_memory_equal(d.data, raw, len);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_SNAPPY);
    assert_int_equal(d.version, PG_RW_V1);
    assert_int_equal(d.snappy, 1);

    /* auto tells them apart */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, z, zlen, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_SNAPPY);
    assert_int_equal(d.version, PG_RW_V1);
    assert_int_equal(d.snappy, 1);
    assert_int_equal(d.stats.series, 1);

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, len, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB);
    assert_int_equal(d.version, PG_RW_V1);
    assert_int_equal(d.snappy, 0);
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

    /* a raw message above the limit */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     len - 1, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "too_large");

    /*
     * An empty message is an empty request for prompb, auto and
     * prompb-v2 (which version cannot be told, nor does it matter:
     * nothing is posted); a snappy block of nothing too.
     */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, 0, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(d.invalid, 0);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, 0,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO,
                                     (const uint8_t *) "\0", 1, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.snappy, 1);
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
test_rw_fields(void **state)
{
    uint8_t  raw[256], buf[512], *p;
    size_t   len;

    /* 1.0: fields 1 and 3; 2.0: 4 and 5 */
    len = make_wr(raw, "up", "node", 1, 1000);
    assert_int_equal(pg_kafka_rw_fields(raw, len), PG_KAFKA_FIELDS_V1);

    p = put_bytes(buf, 3, "\x12\x02up", 4);                /* metadata */
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)),
                     PG_KAFKA_FIELDS_V1);

    len = make_v2_valid(raw, 1000);
    assert_int_equal(pg_kafka_rw_fields(raw, len), PG_KAFKA_FIELDS_V2);

    p = put_bytes(buf, 4, "", 0);                          /* symbols only */
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)),
                     PG_KAFKA_FIELDS_V2);

    /* nothing, or only fields of neither: no series either way */
    assert_int_equal(pg_kafka_rw_fields(buf, 0), 0);
    p = put_bytes(buf, 2, "x", 1);
    p = put_varint(p, 6 << 3);
    p = put_varint(p, 300);
    p = put_varint(p, 7 << 3 | 1);
    memset(p, 0, 8);
    p += 8;
    p = put_varint(p, 8 << 3 | 5);
    memset(p, 0, 4);
    p += 4;
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)), 0);

    /* a field of each, in either order; past unknown ones */
    p = put_bytes(p, 5, "", 0);
    p = put_bytes(p, 1, "", 0);
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)),
                     PG_KAFKA_FIELDS_V1 | PG_KAFKA_FIELDS_V2);

    /* the walk stops at malformed bytes: what was seen before counts */
    p = put_bytes(buf, 4, "", 0);
    *p++ = 0x0a;                                           /* 1, no length */
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)),
                     PG_KAFKA_FIELDS_V1 | PG_KAFKA_FIELDS_V2);
    p = put_bytes(buf, 4, "", 0);
    *p++ = 0x2a;
    *p++ = 0x7f;                                           /* 127 > rest */
    p = put_bytes(p, 1, "", 0);
    assert_int_equal(pg_kafka_rw_fields(buf, (size_t) (p - buf)),
                     PG_KAFKA_FIELDS_V2);
    assert_int_equal(pg_kafka_rw_fields((const uint8_t *) "\xff\xff", 2), 0);
    assert_int_equal(pg_kafka_rw_fields((const uint8_t *) "\x0b\x0c", 2),
                     PG_KAFKA_FIELDS_V1);                  /* a group */
}


static void
test_decode_v2(void **state)
{
    arena_t             a = { .n = 0 };
    pg_allocator_t      al = { arena_alloc, &a };
    uint8_t             raw[512], z[1024];
    size_t              len, zlen;
    pg_kafka_decoded_t  d;

    len = make_v2_valid(raw, 1700000000000LL);
    zlen = compress(raw, len, z, sizeof(z));

    /* prompb-v2, raw: in place */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_V2);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.snappy, 0);
    assert_ptr_equal(d.data, raw);
    assert_int_equal(d.len, len);
    assert_int_equal(d.stats.series, 2);
    assert_int_equal(d.stats.samples, 2);
    assert_int_equal(d.stats.exemplars, 1);
    assert_int_equal(d.invalid, 0);
    assert_null(d.reason);

    /* prompb-v2, snappy */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_V2);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.snappy, 1);
    assert_int_equal(d.len, len);
    assert_memory_equal(d.data, raw, len);
    assert_int_equal(d.stats.series, 2);
    assert_int_equal(d.stats.exemplars, 1);

    /* auto: 2.0 raw and snappy */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, len, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_V2);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.snappy, 0);
    assert_ptr_equal(d.data, raw);
    assert_int_equal(d.stats.samples, 2);

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, z, zlen, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.format, PG_KAFKA_FORMAT_PROMPB_V2);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.snappy, 1);
    assert_int_equal(d.stats.samples, 2);

    /* the size limit: declared by snappy, or of the raw message */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, z, zlen,
                                     len - 1, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "too_large");
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, len, len - 1,
                                     &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "above the size limit"));

    /* out of memory for the symbol table is not poison */
    al.alloc = fail_alloc;
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_NOMEM);

    arena_free(&a);
}


static void
test_decode_v2_poison(void **state)
{
    arena_t             a = { .n = 0 };
    pg_allocator_t      al = { arena_alloc, &a };
    uint8_t             raw[512], z[1024], buf[512], *p;
    size_t              len, zlen;
    pg_kafka_decoded_t  d;

    static const char *const  bad_sym[] = { "x", "__name__", "up" };
    static const uint32_t     refs[] = { 1, 2 };
    v2_series_t               s = { refs, 2, 1, 1000, NULL, 0 };

    /* symbols[0] is not "": the request is malformed, raw or snappy */
    len = make_v2(raw, bad_sym, 3, &s, 1);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "symbols[0]"));

    zlen = compress(raw, len, z, sizeof(z));
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, z, zlen, 1 << 20,
                                     &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "snappy-compressed"));
    assert_non_null(strstr(d.error, "symbols[0]"));

    /* truncated */
    len = make_v2_valid(raw, 1000);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len - 3,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");

    /* 2.0 where 1.0 was promised: poison, not an empty WriteRequest */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "prompb-v2"));
    zlen = compress(raw, len, z, sizeof(z));
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");

    /* and 1.0 where 2.0 was, raw or snappy */
    len = make_wr(raw, "up", "node", 1, 1000);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "1.0 WriteRequest"));
    zlen = compress(raw, len, z, sizeof(z));
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "1.0 WriteRequest"));

    /* fields of both versions: auto cannot tell, neither decodes it all */
    len = make_v2_valid(buf, 1000);
    p = buf + len;
    len = make_wr(raw, "up", "node", 1, 1000);
    memcpy(p, raw, len);
    p += len;
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, buf,
                                     (size_t) (p - buf), 1 << 20, &al, &d),
                     PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "both"));

    /* garbage */
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2,
                                     (const uint8_t *) "\xff\xff\xff\xff", 4,
                                     1 << 20, &al, &d), PG_KAFKA_POISON);
    assert_string_equal(d.reason, "malformed");
    assert_non_null(strstr(d.error, "neither"));
    assert_true(strlen(d.error) < sizeof(d.error));

    arena_free(&a);
}


/*
 * Invalid series make a message neither poison nor empty: it is posted,
 * and the target location drops them (or refuses the message).
 */

static void
test_invalid_series_not_poison(void **state)
{
    arena_t             a = { .n = 0 };
    pg_allocator_t      al = { arena_alloc, &a };
    uint8_t             raw[512], z[1024], ts[128], *p, *q, pt[32], *r;
    size_t              len, zlen;
    pg_kafka_decoded_t  d;

    v2_series_t  v2[3] = {
        { v2_up, 4, 1, 1000, v2_trace, 2 },
        { v2_dup, 6, 2, 1000, NULL, 0 },          /* a duplicate label */
        { v2_noname, 2, 3, 1000, NULL, 0 },       /* no __name__ */
    };

    /* 2.0: one valid series, two invalid */
    len = make_v2(raw, v2_sym, 8, v2, 3);
    zlen = compress(raw, len, z, sizeof(z));

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, z, zlen,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.snappy, 1);
    assert_int_equal(d.stats.series, 1);
    assert_int_equal(d.stats.samples, 1);
    assert_int_equal(d.stats.exemplars, 1);
    assert_int_equal(d.invalid, 2);
    assert_null(d.reason);
    assert_true(d.error[0] != '\0');          /* the first, for the log */

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, raw, len, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.version, PG_RW_V2);
    assert_int_equal(d.invalid, 2);

    /* 2.0: only invalid series, still not empty */
    len = make_v2(raw, v2_sym, 8, v2 + 1, 2);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(d.invalid, 2);

    /* 1.0: a series without a name after a valid one */
    len = make_wr(raw, "up", "node", 1, 1000);
    q = put_bytes(ts, 1, "\x0a\x03job\x12\x01x", 8);
    r = put_point(pt, 1, 1, 2, 1000);
    q = put_bytes(q, 2, pt, (size_t) (r - pt));
    p = put_bytes(raw + len, 1, ts, (size_t) (q - ts));
    len = (size_t) (p - raw);
    zlen = compress(raw, len, z, sizeof(z));

    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 1);
    assert_int_equal(d.invalid, 1);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, z, zlen, 1 << 20,
                                     &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.version, PG_RW_V1);
    assert_int_equal(d.stats.series, 1);
    assert_int_equal(d.invalid, 1);

    /* any UTF-8 is a valid metric name value in remote write 1.0 */
    len = make_wr(raw, "bad-name", "x", 1, 1000);
    assert_int_equal(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB, raw, len,
                                     1 << 20, &al, &d), PG_KAFKA_OK);
    assert_int_equal(d.invalid, 0);

    /* truncated protobuf is poison */
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

    /* a numeric timestamp after the value leaves the value alone */
    assert_int_equal(json(&a, "{\"name\":\"a\",\"value\":\"5\","
                              "\"timestamp\":1000}", &d), PG_KAFKA_OK);
    wr = unpack(&d);
    ts = wr->timeseries[0];
    assert_true(ts->samples[0]->value == 5.0);
    assert_int_equal(ts->samples[0]->timestamp, 1000);
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

    /*
     * It decodes into a WriteRequest whose one series is invalid (no name,
     * bad UTF-8): not poison, the target location drops it (or refuses
     * it).  A label name with a '-' is valid since Prometheus 3.
     */
    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\"}", &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(d.invalid, 1);
    assert_null(d.reason);

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":"
                              "{\"a-b\":\"1\"}}", &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 1);
    assert_int_equal(d.invalid, 0);

    assert_int_equal(json(&a, "{\"timestamp\":\"2020-01-01T00:00:00Z\","
                              "\"value\":\"1\",\"name\":\"x\",\"labels\":"
                              "{\"a\":\"\xff\"}}", &d), PG_KAFKA_OK);
    assert_int_equal(d.stats.series, 0);
    assert_int_equal(d.invalid, 1);

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

    zlen = pg_snappy_max_encoded(l1 + l2);
    assert_true(zlen <= sizeof(z));
    assert_int_equal(pg_snappy_encode(cat, l1 + l2, z, &zlen), PG_SNAPPY_OK);

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


/*
 * A message that could not be kept (no memory) is awaited again: what comes
 * after it before the seek takes effect is refused, nothing after it is
 * committed before it, and it is taken when it comes back.
 */
static void
test_watermark_refetch(void **state)
{
    int64_t        off[8];
    uint8_t        done[8];
    pg_kafka_wm_t  wm;

    pg_kafka_wm_init(&wm, off, done, 8);

    assert_int_equal(pg_kafka_wm_take(&wm, 20), 0);
    assert_int_equal(pg_kafka_wm_done(&wm, 20), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 21);

    /* 21 could not be kept */
    pg_kafka_wm_refetch(&wm, 21);

    /* fetched before the seek: refused, they come again */
    assert_int_equal(pg_kafka_wm_take(&wm, 22), PG_KAFKA_WM_REFETCH);
    assert_int_equal(pg_kafka_wm_take(&wm, 23), PG_KAFKA_WM_REFETCH);
    assert_int_equal(pg_kafka_wm_low(&wm), 21);

    /* a second failure further on keeps the earliest */
    pg_kafka_wm_refetch(&wm, 25);
    assert_int_equal(pg_kafka_wm_take(&wm, 25), PG_KAFKA_WM_REFETCH);

    /* after the seek, 21 and what follows */
    assert_int_equal(pg_kafka_wm_take(&wm, 21), 0);
    assert_int_equal(pg_kafka_wm_take(&wm, 22), 0);
    assert_int_equal(pg_kafka_wm_done(&wm, 22), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 21);
    assert_int_equal(pg_kafka_wm_done(&wm, 21), 0);
    assert_int_equal(pg_kafka_wm_low(&wm), 23);

    /* and again, later on */
    pg_kafka_wm_refetch(&wm, 23);
    assert_int_equal(pg_kafka_wm_take(&wm, 24), PG_KAFKA_WM_REFETCH);
    assert_int_equal(pg_kafka_wm_take(&wm, 23), 0);
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


#define V1  PG_RW_V1
#define V2  PG_RW_V2


static void
test_batch_assembly(void **state)
{
    pg_kafka_batch_t  b;
    pg_str_t          none = { NULL, 0 };
    pg_str_t          t1 = pg_str_lit("tenant-1");
    pg_str_t          t2 = pg_str_lit("tenant-2");

    /* count */
    pg_kafka_batch_init(&b, 3, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 0);
    assert_int_equal(b.count, 3);

    /* bytes, but never an empty batch */
    pg_kafka_batch_init(&b, 100, 25);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 0);
    pg_kafka_batch_init(&b, 100, 25);
    assert_int_equal(pg_kafka_batch_add(&b, 1000, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 0);

    /* tenants do not mix */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t1, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t1, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, t2, V1), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 0);

    /* limits from a split do not mix either, and cap the batch */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none, V1), 0);
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 2, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 0);

    /* closed: when no message of any size can join */
    pg_kafka_batch_init(&b, 2, 1000);
    assert_int_equal(pg_kafka_batch_closed(&b), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_closed(&b), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_closed(&b), 1);
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 1, none, V1), 1);
    assert_int_equal(pg_kafka_batch_closed(&b), 1);       /* split to one */
}


static void
test_batch_versions(void **state)
{
    pg_kafka_batch_t  b;
    pg_str_t          none = { NULL, 0 };

    /* 1.0 messages concatenate; a 2.0 one does not join them */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V2), 0);
    assert_int_equal(b.count, 2);
    assert_int_equal(b.version, PG_RW_V1);

    /* a 2.0 message is alone: its symbol table is its own */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_closed(&b), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V2), 1);
    assert_int_equal(b.version, PG_RW_V2);
    assert_int_equal(pg_kafka_batch_closed(&b), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V2), 0);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 0);
    assert_int_equal(b.count, 1);

    /* whatever its size, and whatever batch= says */
    pg_kafka_batch_init(&b, 1, 5);
    assert_int_equal(pg_kafka_batch_add(&b, 1000, 0, none, V2), 1);
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 1, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_closed(&b), 0);

    /* a re-initialised batch forgets the version */
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V2), 1);
    pg_kafka_batch_init(&b, 100, 1000);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
    assert_int_equal(pg_kafka_batch_add(&b, 10, 0, none, V1), 1);
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
                if (!pg_kafka_batch_add(&b, 1, limit[n], none, V1)) {
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
        cmocka_unit_test(test_rw_fields),
        cmocka_unit_test(test_decode_v2),
        cmocka_unit_test(test_decode_v2_poison),
        cmocka_unit_test(test_invalid_series_not_poison),
        cmocka_unit_test(test_json_adapter),
        cmocka_unit_test(test_json_values_and_escapes),
        cmocka_unit_test(test_json_poison),
        cmocka_unit_test(test_batch_concatenates),
        cmocka_unit_test(test_watermark),
        cmocka_unit_test(test_watermark_refetch),
        cmocka_unit_test(test_watermark_random),
        cmocka_unit_test(test_batch_assembly),
        cmocka_unit_test(test_batch_versions),
        cmocka_unit_test(test_batch_split_finds_the_bad_one),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_response_parser),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
