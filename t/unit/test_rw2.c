/*
 * Remote-write 2.0 decoding and validation (src/core/pg_rw2.c), and the
 * re-encoding of decoded requests (src/core/pg_rw_encode.c): same-version
 * subsets and the 1.0 <-> 2.0 translations.  protobuf-c, from proto/, is
 * the oracle: requests are built with it, and what the encoder writes
 * must unpack with it to the series that were kept.
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

#include "pg_rw.h"
#include "remote.pb-c.h"
#include "write_v2.pb-c.h"
#include "rw_build.h"


#define V2(name)  Io__Prometheus__Write__V2__##name


/* ------------------------------------------------------------ memory */

static uint8_t  arena[4 << 20];
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


/* an output buffer on the heap that doubles; a cap to make it fail */

static size_t  grow_cap = (size_t) -1;


static int
buf_grow(pg_buf_t *b, size_t need)
{
    size_t    size, used;
    uint8_t  *p;

    used = b->pos - b->start;
    size = (b->end - b->start) * 2;

    if (size < used + need) {
        size = used + need;
    }

    if (size > grow_cap) {
        return -1;
    }

    p = realloc(b->start, size);
    if (p == NULL) {
        return -1;
    }

    b->start = p;
    b->pos = p + used;
    b->end = p + size;

    return 0;
}


static void
buf_init(pg_buf_t *b, size_t size)
{
    b->start = malloc(size ? size : 1);
    b->pos = b->start;
    b->end = b->start + size;
    b->grow = buf_grow;
    b->data = NULL;
}


/* ------------------------------------------------ 2.0 requests, built */

#define MAXS2  16

typedef struct {
    V2(Request)      r;
    char            *sym[128];
    V2(TimeSeries)   ts[MAXS2];
    V2(TimeSeries)  *tsp[MAXS2];
    uint32_t         refs[MAXS2][64];
    V2(Sample)       s[MAXS2][4];
    V2(Sample)      *sp[MAXS2][4];
    V2(Exemplar)     e[MAXS2];
    V2(Exemplar)    *ep[MAXS2];
    uint32_t         erefs[MAXS2][8];
    V2(Metadata)     md[MAXS2];
    V2(Histogram)    h[MAXS2];
    V2(Histogram)   *hp[MAXS2];
    V2(BucketSpan)   span[MAXS2];
    V2(BucketSpan)  *spanp[MAXS2];
    int64_t          deltas[MAXS2][3];
    uint8_t          buf[65536];
    size_t           len;
} req2_t;


static void
req2_init(req2_t *q)
{
    memset(q, 0, sizeof(*q));
    io__prometheus__write__v2__request__init(&q->r);
    q->r.symbols = q->sym;
    q->r.timeseries = q->tsp;
    q->sym[0] = "";
    q->r.n_symbols = 1;
}


static uint32_t
sym(req2_t *q, const char *s)
{
    uint32_t  i;

    for (i = 0; i < q->r.n_symbols; i++) {
        if (strcmp(q->sym[i], s) == 0) {
            return i;
        }
    }

    q->sym[i] = (char *) s;
    q->r.n_symbols++;

    return i;
}


/* labels as "name", "value", ..., NULL */
static size_t
series2(req2_t *q, ...)
{
    va_list          ap;
    const char      *n;
    size_t           i, k;
    V2(TimeSeries)  *ts;

    i = q->r.n_timeseries++;
    ts = &q->ts[i];
    io__prometheus__write__v2__time_series__init(ts);
    q->tsp[i] = ts;
    ts->labels_refs = q->refs[i];
    ts->samples = q->sp[i];

    va_start(ap, q);
    for (k = 0; (n = va_arg(ap, const char *)) != NULL; k += 2) {
        q->refs[i][k] = sym(q, n);
        q->refs[i][k + 1] = sym(q, va_arg(ap, const char *));
    }
    va_end(ap);

    ts->n_labels_refs = k;

    return i;
}


static void
sample2(req2_t *q, size_t i, double v, int64_t t, int64_t start)
{
    size_t  k;

    k = q->ts[i].n_samples++;
    io__prometheus__write__v2__sample__init(&q->s[i][k]);
    q->s[i][k].value = v;
    q->s[i][k].timestamp = t;
    q->s[i][k].start_timestamp = start;
    q->sp[i][k] = &q->s[i][k];
}


static void
exemplar2(req2_t *q, size_t i, const char *name, const char *value,
    double v, int64_t t)
{
    io__prometheus__write__v2__exemplar__init(&q->e[i]);
    q->e[i].value = v;
    q->e[i].timestamp = t;
    q->e[i].labels_refs = q->erefs[i];
    q->erefs[i][0] = sym(q, name);
    q->erefs[i][1] = sym(q, value);
    q->e[i].n_labels_refs = 2;
    q->ep[i] = &q->e[i];
    q->ts[i].exemplars = &q->ep[i];
    q->ts[i].n_exemplars = 1;
}


static void
metadata2(req2_t *q, size_t i, int type, const char *help, const char *unit)
{
    io__prometheus__write__v2__metadata__init(&q->md[i]);
    q->md[i].type = type;
    q->md[i].help_ref = help ? sym(q, help) : 0;
    q->md[i].unit_ref = unit ? sym(q, unit) : 0;
    q->ts[i].metadata = &q->md[i];
}


static void
histogram2(req2_t *q, size_t i, int64_t start)
{
    io__prometheus__write__v2__histogram__init(&q->h[i]);
    q->h[i].count_case = IO__PROMETHEUS__WRITE__V2__HISTOGRAM__COUNT_COUNT_INT;
    q->h[i].count_int = 5;
    q->h[i].sum = 7.25;
    q->h[i].schema = 2;
    q->h[i].timestamp = 1000;
    q->h[i].start_timestamp = start;

    io__prometheus__write__v2__bucket_span__init(&q->span[i]);
    q->span[i].offset = -1;
    q->span[i].length = 3;
    q->spanp[i] = &q->span[i];
    q->h[i].positive_spans = &q->spanp[i];
    q->h[i].n_positive_spans = 1;
    q->deltas[i][0] = 1;
    q->deltas[i][1] = 2;
    q->deltas[i][2] = -1;
    q->h[i].positive_deltas = q->deltas[i];
    q->h[i].n_positive_deltas = 3;

    q->hp[i] = &q->h[i];
    q->ts[i].histograms = &q->hp[i];
    q->ts[i].n_histograms = 1;
}


static void
req2_pack(req2_t *q)
{
    q->len = io__prometheus__write__v2__request__pack(&q->r, q->buf);
}


static pg_rw_reason_e
decode2(const uint8_t *buf, size_t len, pg_rw_request_t *r,
    pg_rw_series_pt cb, void *ctx)
{
    arena_used = 0;
    return pg_rw_decode(buf, len, PG_RW_V2, &alloc, r, cb, ctx);
}


static pg_rw_reason_e
scan2(req2_t *q, pg_rw_request_t *r)
{
    req2_pack(q);
    return decode2(q->buf, q->len, r, NULL, NULL);
}


static void
assert_all_valid(const pg_rw_request_t *r)
{
    assert_int_equal(r->invalid_series, 0);
    assert_null(r->dropped);
    assert_int_equal(r->first.reason, PG_RW_OK);
}


static void
assert_one_invalid(const pg_rw_request_t *r, size_t i, pg_rw_reason_e reason)
{
    assert_int_equal(r->invalid_series, 1);
    assert_int_equal(r->invalid[reason], 1);
    assert_true(pg_rw_bit(r->dropped, i));
    assert_int_equal(r->first.reason, reason);
    assert_int_equal(r->first.series, i);
}


/* what the callback saw of a series, as text */

typedef struct {
    size_t    n;
    size_t    index[MAXS2];
    char      labels[MAXS2][256];
    char      exemplars[MAXS2][128];
    char      name[MAXS2][64];
    char      help[MAXS2][64];
    char      unit[MAXS2][64];
    uint32_t  type[MAXS2];
    int64_t   created[MAXS2];
    unsigned  unsorted[MAXS2];
    uint32_t  nsamples[MAXS2];
    uint32_t  nhistograms[MAXS2];
} seen_t;


static void
labels_text(pg_pb_iter_t it, char *out, size_t size)
{
    pg_label_t  l;
    size_t      n;

    n = 0;
    out[0] = '\0';

    while (pg_rw_next_label(&it, &l) && n < size) {
        n += snprintf(out + n, size - n, "%s%.*s=%.*s", n ? "," : "",
                      (int) l.name.len, l.name.data, (int) l.value.len,
                      l.value.data);
    }
}


static int
seen_cb(void *ctx, const pg_rw_series_t *s)
{
    seen_t         *c = ctx;
    size_t          k, n;
    pg_pb_iter_t    it;
    pg_exemplar_t   ex;

    k = c->n++;
    assert_true(k < MAXS2);

    c->index[k] = s->index;
    c->unsorted[k] = s->unsorted;
    c->type[k] = s->metadata_type;
    c->created[k] = s->created_timestamp;
    c->nsamples[k] = s->nsamples;
    c->nhistograms[k] = s->nhistograms;

    snprintf(c->name[k], 64, "%.*s", (int) s->name.len, s->name.data);
    snprintf(c->help[k], 64, "%.*s", (int) s->help.len, s->help.data);
    snprintf(c->unit[k], 64, "%.*s", (int) s->unit.len, s->unit.data);

    pg_rw_series_labels(s, &it);
    labels_text(it, c->labels[k], sizeof(c->labels[k]));

    pg_rw_series_exemplars(s, &it);
    n = 0;

    while (pg_rw_next_exemplar(&it, &ex)) {
        n += snprintf(c->exemplars[k] + n, 128 - n, "{");
        labels_text(ex.labels, c->exemplars[k] + n, 128 - n);
        n = strlen(c->exemplars[k]);
        n += snprintf(c->exemplars[k] + n, 128 - n, "} %g %lld", ex.value,
                      (long long) ex.timestamp);
    }

    return 0;
}


/* ------------------------------------------------------- 2.0 decoding */


static void
test_v2_valid(void **state)
{
    req2_t           q;
    size_t           i;
    seen_t           c;
    pg_rw_request_t  r;

    req2_init(&q);
    i = series2(&q, "__name__", "up", "job", "node", NULL);
    sample2(&q, i, 1, 1000, 0);
    sample2(&q, i, 2, 2000, 0);
    exemplar2(&q, i, "trace_id", "abc", 0.5, 1500);
    metadata2(&q, i, 1, "Up or not.", "");
    q.ts[i].created_timestamp = 123;
    i = series2(&q, "__name__", "h", "job", "node", NULL);
    histogram2(&q, i, 0);
    metadata2(&q, i, 3, NULL, "seconds");
    series2(&q, "__name__", "empty", NULL);
    req2_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(decode2(q.buf, q.len, &r, seen_cb, &c), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(r.version, PG_RW_V2);
    assert_int_equal(r.nseries_total, 3);
    assert_int_equal(r.stats.series, 3);
    assert_int_equal(r.stats.samples, 2);
    assert_int_equal(r.stats.histograms, 1);
    assert_int_equal(r.stats.exemplars, 1);
    assert_int_equal(r.stats.metadata, 2);
    assert_int_equal(r.stats.empty_series, 1);
    assert_int_equal(r.symtab.n, q.r.n_symbols);

    assert_int_equal(c.n, 3);
    assert_string_equal(c.labels[0], "__name__=up,job=node");
    assert_string_equal(c.name[0], "up");
    assert_string_equal(c.exemplars[0], "{trace_id=abc} 0.5 1500");
    assert_int_equal(c.type[0], 1);
    assert_string_equal(c.help[0], "Up or not.");
    assert_string_equal(c.unit[0], "");
    assert_int_equal(c.created[0], 123);
    assert_int_equal(c.nsamples[0], 2);
    assert_int_equal(c.type[1], 3);
    assert_string_equal(c.unit[1], "seconds");
    assert_int_equal(c.nhistograms[1], 1);
    assert_string_equal(c.labels[2], "__name__=empty");

    /* a request without symbols nor series */
    assert_int_equal(decode2((const uint8_t *) "", 0, &r, NULL, NULL),
                     PG_RW_OK);
    assert_int_equal(r.symtab.n, 0);
    assert_int_equal(r.nseries_total, 0);
}


/* 3.5's TimeSeries.created_timestamp, rc.4's start timestamps */
static void
test_v2_created_layouts(void **state)
{
    req2_t           q;
    size_t           i;
    seen_t           c;
    pg_rw_request_t  r;

    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);                /* 3.5 */
    sample2(&q, i, 1, 1000, 0);
    q.ts[i].created_timestamp = 500;
    i = series2(&q, "__name__", "b", NULL);                /* rc.4 sample */
    sample2(&q, i, 1, 1000, 0);
    sample2(&q, i, 1, 2000, 600);
    i = series2(&q, "__name__", "c", NULL);                /* rc.4 hist. */
    histogram2(&q, i, 700);
    i = series2(&q, "__name__", "d", NULL);                /* both: 6 wins */
    sample2(&q, i, 1, 1000, 800);
    q.ts[i].created_timestamp = 900;
    series2(&q, "__name__", "e", NULL);                    /* none */
    req2_pack(&q);

    memset(&c, 0, sizeof(c));
    assert_int_equal(decode2(q.buf, q.len, &r, seen_cb, &c), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.created[0], 500);
    assert_int_equal(c.created[1], 600);
    assert_int_equal(c.created[2], 700);
    assert_int_equal(c.created[3], 900);
    assert_int_equal(c.created[4], 0);
}


/* hand-made: symbols "", "__name__", "a", "job", "x" and one series */

static size_t
raw_request(uint8_t *b, const uint8_t *series, size_t slen)
{
    static const uint8_t  syms[] = {
        0x22, 0x00,
        0x22, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
        0x22, 0x01, 'a',
        0x22, 0x03, 'j', 'o', 'b',
        0x22, 0x01, 'x'
    };

    memcpy(b, syms, sizeof(syms));
    b[sizeof(syms)] = 0x2a;
    b[sizeof(syms) + 1] = (uint8_t) slen;
    memcpy(b + sizeof(syms) + 2, series, slen);

    return sizeof(syms) + 2 + slen;
}


static void
test_v2_packed_unpacked(void **state)
{
    uint8_t          b[128];
    size_t           n;
    seen_t           c;
    pg_rw_request_t  r;

    /* unpacked: one varint field per ref */
    static const uint8_t  unpacked[] = {
        0x08, 0x01, 0x08, 0x02, 0x08, 0x03, 0x08, 0x04
    };

    /* packed, in two runs that split a pair, and unpacked mixed in */
    static const uint8_t  split[] = {
        0x0a, 0x03, 0x01, 0x02, 0x03,
        0x12, 0x00,                             /* an empty sample between */
        0x08, 0x04
    };

    /* refs written with padded varints (two bytes for 1) */
    static const uint8_t  padded[] = {
        0x0a, 0x05, 0x81, 0x00, 0x02, 0x03, 0x04
    };

    static const uint8_t  *cases[] = { unpacked, split, padded };
    static const size_t    lens[] = { sizeof(unpacked), sizeof(split),
                                      sizeof(padded) };
    size_t  k;

    for (k = 0; k < 3; k++) {
        n = raw_request(b, cases[k], lens[k]);
        memset(&c, 0, sizeof(c));
        assert_int_equal(decode2(b, n, &r, seen_cb, &c), PG_RW_OK);
        assert_all_valid(&r);
        assert_int_equal(c.n, 1);
        assert_string_equal(c.labels[0], "__name__=a,job=x");
        assert_string_equal(c.name[0], "a");
    }

    /* a ref of more than 32 bits keeps its low bits (a uint32 field) */
    {
        static const uint8_t  wide[] = {
            0x08, 0x81, 0x80, 0x80, 0x80, 0x10,         /* 2^32 + 1 */
            0x08, 0x02
        };

        n = raw_request(b, wide, sizeof(wide));
        memset(&c, 0, sizeof(c));
        assert_int_equal(decode2(b, n, &r, seen_cb, &c), PG_RW_OK);
        assert_all_valid(&r);
        assert_string_equal(c.labels[0], "__name__=a");
    }

    /* a packed run that ends inside a varint is malformed */
    {
        static const uint8_t  bad[] = { 0x0a, 0x02, 0x01, 0x82 };

        n = raw_request(b, bad, sizeof(bad));
        assert_int_equal(decode2(b, n, &r, NULL, NULL), PG_RW_MALFORMED);
    }
}


static void
test_v2_symbols(void **state)
{
    req2_t           q;
    size_t           i;
    pg_rw_request_t  r;

    /* symbols[0] must be "" */
    req2_init(&q);
    q.sym[0] = "junk";
    i = series2(&q, "__name__", "a", NULL);
    sample2(&q, i, 1, 1, 0);
    assert_int_equal(scan2(&q, &r), PG_RW_BAD_SYMBOLS);
    assert_int_equal(r.first.reason, PG_RW_BAD_SYMBOLS);
    assert_non_null(strstr(r.first.message, "symbols[0]"));

    /* ...but a malformed request is reported as malformed */
    q.buf[q.len++] = 0x2a;
    q.buf[q.len++] = 0x02;
    q.buf[q.len++] = 0x10;
    q.buf[q.len++] = 0x00;
    assert_int_equal(decode2(q.buf, q.len, &r, NULL, NULL), PG_RW_MALFORMED);

    /* series without any symbol: no name, nothing to refer to */
    req2_init(&q);
    q.r.n_symbols = 0;
    i = q.r.n_timeseries++;
    io__prometheus__write__v2__time_series__init(&q.ts[i]);
    q.tsp[i] = &q.ts[i];
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_NO_NAME);

    /* symbols and series may interleave on the wire */
    {
        static const uint8_t  b[] = {
            0x22, 0x00,
            0x2a, 0x04, 0x0a, 0x02, 0x01, 0x02,     /* refs 1, 2 */
            0x22, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',
            0x22, 0x01, 'z'
        };
        seen_t  c;

        memset(&c, 0, sizeof(c));
        assert_int_equal(decode2(b, sizeof(b), &r, seen_cb, &c), PG_RW_OK);
        assert_all_valid(&r);
        assert_string_equal(c.labels[0], "__name__=z");
    }

    /* an invalid symbol that nothing refers to is no matter */
    req2_init(&q);
    sym(&q, "\xff\xfe");
    i = series2(&q, "__name__", "a", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_all_valid(&r);
}


static void
test_v2_refs(void **state)
{
    req2_t           q;
    size_t           i;
    pg_rw_request_t  r;

    /* an odd number of refs */
    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    q.refs[i][2] = 1;
    q.ts[i].n_labels_refs = 3;
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);
    assert_non_null(strstr(r.first.message, "odd number"));

    /* a ref past the table */
    req2_init(&q);
    i = series2(&q, "__name__", "a", "job", "x", NULL);
    sample2(&q, i, 1, 1, 0);
    q.refs[i][3] = 999;
    series2(&q, "__name__", "ok", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);
    assert_false(pg_rw_bit(r.dropped, 1));
    assert_int_equal(r.stats.series, 1);
    assert_int_equal(r.invalid_samples, 1);
    assert_non_null(strstr(r.first.message, "999"));

    /* in an exemplar: the ref, and an odd count */
    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    exemplar2(&q, i, "t", "1", 1, 1);
    q.erefs[i][1] = 77;
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);
    assert_int_equal(r.invalid_exemplars, 1);

    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    exemplar2(&q, i, "t", "1", 1, 1);
    q.e[i].n_labels_refs = 1;
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);

    /* in the metadata */
    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    metadata2(&q, i, 1, "help", NULL);
    q.md[i].unit_ref = 55;
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);
    assert_non_null(strstr(r.first.message, "unit ref 55"));

    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    metadata2(&q, i, 1, NULL, NULL);
    q.md[i].help_ref = 56;
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);

    /* metadata met twice merges: the last help ref counts */
    {
        static const uint8_t  s[] = {
            0x0a, 0x02, 0x01, 0x02,
            0x2a, 0x04, 0x08, 0x01, 0x18, 0x63,     /* counter, help 99 */
            0x2a, 0x02, 0x18, 0x04                  /* help 4 ("x") */
        };
        uint8_t  b[128];
        size_t   n;
        seen_t   c;

        n = raw_request(b, s, sizeof(s));
        memset(&c, 0, sizeof(c));
        assert_int_equal(decode2(b, n, &r, seen_cb, &c), PG_RW_OK);
        assert_all_valid(&r);
        assert_int_equal(c.type[0], 1);
        assert_string_equal(c.help[0], "x");

        /* the other way round, the bad ref is the one that counts */
        b[n - 1] = 0x63;
        b[n - 5] = 0x04;
        assert_int_equal(decode2(b, n, &r, NULL, NULL), PG_RW_OK);
        assert_one_invalid(&r, 0, PG_RW_BAD_SYMBOL_REF);
    }
}


static void
test_v2_label_rules(void **state)
{
    req2_t           q;
    size_t           i;
    seen_t           c;
    pg_rw_request_t  r;

    /* no __name__, an empty one */
    req2_init(&q);
    series2(&q, "job", "x", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_NO_NAME);
    assert_non_null(strstr(r.first.message, "series 0 {job=\"x\"}"));

    req2_init(&q);
    series2(&q, "__name__", "", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_NO_NAME);

    /* an empty name (a ref to symbols[0]); an empty value is fine */
    req2_init(&q);
    series2(&q, "__name__", "a", "", "x", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_LABEL_NAME);

    req2_init(&q);
    series2(&q, "__name__", "a", "b", "", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_all_valid(&r);

    /* invalid UTF-8, in a name or a value */
    req2_init(&q);
    series2(&q, "__name__", "a", "b", "v\xff", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);

    req2_init(&q);
    series2(&q, "__name__", "a", "\xed\xa0\x80", "v", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_one_invalid(&r, 0, PG_RW_BAD_UTF8);

    /* UTF-8 names, unsorted labels: valid */
    req2_init(&q);
    series2(&q, "__name__", "http.server.duration", "service.name", "x",
            NULL);
    series2(&q, "job", "x", "__name__", "b", NULL);
    req2_pack(&q);
    memset(&c, 0, sizeof(c));
    assert_int_equal(decode2(q.buf, q.len, &r, seen_cb, &c), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(c.unsorted[0], 0);
    assert_int_equal(c.unsorted[1], 1);
    assert_string_equal(c.name[1], "b");

    /* duplicates, next to each other and apart */
    req2_init(&q);
    series2(&q, "__name__", "a", "b", "1", "b", "2", NULL);
    series2(&q, "b", "1", "__name__", "a", "b", "2", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_int_equal(r.invalid_series, 2);
    assert_int_equal(r.invalid[PG_RW_DUPLICATE_LABEL], 2);

    /* an exemplar or metadata text with invalid UTF-8: the series stays */
    req2_init(&q);
    i = series2(&q, "__name__", "a", NULL);
    exemplar2(&q, i, "t", "\xff", 1, 1);
    metadata2(&q, i, 1, "bad \xff help", NULL);
    assert_int_equal(scan2(&q, &r), PG_RW_OK);
    assert_all_valid(&r);
    assert_int_equal(r.stats.exemplars, 1);
}


static void
test_v2_malformed(void **state)
{
    req2_t           q;
    size_t           i, n;
    pg_rw_request_t  r;
    uint8_t          b[128];

    req2_init(&q);
    i = series2(&q, "__name__", "a", "job", "x", NULL);
    sample2(&q, i, 1, 1, 5);
    exemplar2(&q, i, "t", "1", 1, 1);
    histogram2(&q, i, 3);
    metadata2(&q, i, 1, "h", "u");
    q.ts[i].created_timestamp = 9;
    req2_pack(&q);

    assert_int_equal(decode2(q.buf, q.len, &r, NULL, NULL), PG_RW_OK);
    assert_int_equal(pg_rw_count_samples(q.buf, q.len, PG_RW_V2), 2);

    /* cut anywhere: malformed, or (between fields) a request of nothing */
    for (n = 1; n < q.len; n++) {
        if (decode2(q.buf, n, &r, NULL, NULL) == PG_RW_OK) {
            assert_int_equal(r.nseries_total, 0);
            continue;
        }

        assert_int_equal(r.first.reason, PG_RW_MALFORMED);
        assert_true(r.first.offset <= n);
    }

    /* wrong wire types: symbols, timeseries, then inside a series */
    b[0] = 0x20; b[1] = 0x00;
    assert_int_equal(decode2(b, 2, &r, NULL, NULL), PG_RW_MALFORMED);
    b[0] = 0x28;
    assert_int_equal(decode2(b, 2, &r, NULL, NULL), PG_RW_MALFORMED);

    {
        static const uint8_t  s[][4] = {
            { 0x10, 0x00 },                     /* samples as varint */
            { 0x12, 0x02, 0x08, 0x00 },         /* sample value as varint */
            { 0x12, 0x02, 0x1a, 0x00 },         /* start_timestamp as LEN */
            { 0x1a, 0x02, 0x8a, 0x01 },         /* histogram 17 as LEN */
            { 0x2a, 0x02, 0x0a, 0x00 },         /* metadata type as LEN */
            { 0x32, 0x00 },                     /* created as LEN */
            { 0x22, 0x02, 0x10, 0x00 },         /* exemplar value varint */
            { 0x0d, 0, 0, 0 },                  /* refs as i32 */
        };
        static const size_t  len[] = { 2, 4, 4, 4, 4, 2, 4, 4 };
        uint8_t              series[16];

        for (i = 0; i < sizeof(len) / sizeof(len[0]); i++) {
            series[0] = 0x0a;
            series[1] = 0x02;
            series[2] = 0x01;
            series[3] = 0x02;
            memcpy(series + 4, s[i], len[i]);
            n = raw_request(b, series, 4 + len[i]);
            assert_int_equal(decode2(b, n, &r, NULL, NULL), PG_RW_MALFORMED);
        }

        /* the same series without the bad field is fine */
        n = raw_request(b, series, 4);
        assert_int_equal(decode2(b, n, &r, NULL, NULL), PG_RW_OK);
        assert_all_valid(&r);
    }

    /* unknown fields are skipped, at every level */
    {
        static const uint8_t  s[] = {
            0x0a, 0x02, 0x01, 0x02,
            0x78, 0x01,                         /* 15 varint */
            0x12, 0x02, 0x38, 0x01,             /* sample: 7 varint */
            0x2a, 0x02, 0x10, 0x01              /* metadata: 2 varint */
        };

        n = raw_request(b, s, sizeof(s));
        b[n++] = 0x0a;                          /* request: 1, reserved */
        b[n++] = 0x00;
        assert_int_equal(decode2(b, n, &r, NULL, NULL), PG_RW_OK);
        assert_all_valid(&r);
    }
}


/* ------------------------------------------------- comparison helpers */


static void
v1_labels_text(Prometheus__Label **l, size_t nl, char *out, size_t size)
{
    size_t  k, n;

    out[0] = '\0';

    for (k = 0, n = 0; k < nl && n < size; k++) {
        n += snprintf(out + n, size - n, "%s%s=%s", k ? "," : "", l[k]->name,
                      l[k]->value);
    }
}


static void
v2_labels_text(char **syms, const uint32_t *refs, size_t nr, char *out,
    size_t size)
{
    size_t  k, n;

    out[0] = '\0';

    for (k = 0, n = 0; k + 1 < nr && n < size; k += 2) {
        n += snprintf(out + n, size - n, "%s%s=%s", k ? "," : "",
                      syms[refs[k]], syms[refs[k + 1]]);
    }
}


static int
same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof(double)) == 0;
}


/* a 1.0 and a 2.0 series hold the same labels, samples, exemplars and */
/* histograms (created timestamps aside) */
static void
assert_same_series(Prometheus__TimeSeries *a, char **syms, V2(TimeSeries) *b)
{
    size_t                   k, n1, n2;
    char                     t1[512], t2[512];
    uint8_t                  h1[512], h2[512];
    V2(Histogram)            h;

    v1_labels_text(a->labels, a->n_labels, t1, sizeof(t1));
    v2_labels_text(syms, b->labels_refs, b->n_labels_refs, t2, sizeof(t2));
    assert_string_equal(t1, t2);

    assert_int_equal(a->n_samples, b->n_samples);

    for (k = 0; k < a->n_samples; k++) {
        assert_true(same_double(a->samples[k]->value, b->samples[k]->value));
        assert_int_equal(a->samples[k]->timestamp, b->samples[k]->timestamp);
    }

    assert_int_equal(a->n_exemplars, b->n_exemplars);

    for (k = 0; k < a->n_exemplars; k++) {
        assert_true(same_double(a->exemplars[k]->value,
                                b->exemplars[k]->value));
        assert_int_equal(a->exemplars[k]->timestamp,
                         b->exemplars[k]->timestamp);
        v1_labels_text(a->exemplars[k]->labels, a->exemplars[k]->n_labels,
                       t1, sizeof(t1));
        v2_labels_text(syms, b->exemplars[k]->labels_refs,
                       b->exemplars[k]->n_labels_refs, t2, sizeof(t2));
        assert_string_equal(t1, t2);
    }

    /* fields 1..15 are numbered alike: packed, the bytes are the same */
    assert_int_equal(a->n_histograms, b->n_histograms);

    for (k = 0; k < a->n_histograms; k++) {
        h = *b->histograms[k];
        h.start_timestamp = 0;
        n1 = prometheus__histogram__pack(a->histograms[k], h1);
        n2 = io__prometheus__write__v2__histogram__pack(&h, h2);
        assert_int_equal(n1, n2);
        assert_memory_equal(h1, h2, n1);
    }
}


/* two 2.0 series are the same once their symbols are resolved */
static void
assert_same_series2(char **sa, V2(TimeSeries) *a, char **sb,
    V2(TimeSeries) *b, int created)
{
    size_t         k, n1, n2;
    char           t1[512], t2[512];
    uint8_t        h1[512], h2[512];
    V2(Histogram)  ha, hb;

    v2_labels_text(sa, a->labels_refs, a->n_labels_refs, t1, sizeof(t1));
    v2_labels_text(sb, b->labels_refs, b->n_labels_refs, t2, sizeof(t2));
    assert_string_equal(t1, t2);

    assert_int_equal(a->n_samples, b->n_samples);

    for (k = 0; k < a->n_samples; k++) {
        assert_true(same_double(a->samples[k]->value, b->samples[k]->value));
        assert_int_equal(a->samples[k]->timestamp, b->samples[k]->timestamp);
        if (created) {
            assert_int_equal(a->samples[k]->start_timestamp,
                             b->samples[k]->start_timestamp);
        }
    }

    if (created) {
        assert_int_equal(a->created_timestamp, b->created_timestamp);
    }

    assert_int_equal(a->n_exemplars, b->n_exemplars);

    for (k = 0; k < a->n_exemplars; k++) {
        assert_true(same_double(a->exemplars[k]->value,
                                b->exemplars[k]->value));
        assert_int_equal(a->exemplars[k]->timestamp,
                         b->exemplars[k]->timestamp);
        v2_labels_text(sa, a->exemplars[k]->labels_refs,
                       a->exemplars[k]->n_labels_refs, t1, sizeof(t1));
        v2_labels_text(sb, b->exemplars[k]->labels_refs,
                       b->exemplars[k]->n_labels_refs, t2, sizeof(t2));
        assert_string_equal(t1, t2);
    }

    assert_int_equal(a->n_histograms, b->n_histograms);

    for (k = 0; k < a->n_histograms; k++) {
        ha = *a->histograms[k];
        hb = *b->histograms[k];
        if (!created) {
            ha.start_timestamp = 0;
            hb.start_timestamp = 0;
        }
        n1 = io__prometheus__write__v2__histogram__pack(&ha, h1);
        n2 = io__prometheus__write__v2__histogram__pack(&hb, h2);
        assert_int_equal(n1, n2);
        assert_memory_equal(h1, h2, n1);
    }

    assert_true((a->metadata == NULL) == (b->metadata == NULL)
                || (a->metadata && a->metadata->type == 0
                    && a->metadata->help_ref == 0
                    && a->metadata->unit_ref == 0)
                || (b->metadata && b->metadata->type == 0
                    && b->metadata->help_ref == 0
                    && b->metadata->unit_ref == 0));

    if (a->metadata && b->metadata) {
        assert_int_equal(a->metadata->type, b->metadata->type);
        assert_string_equal(sa[a->metadata->help_ref],
                            sb[b->metadata->help_ref]);
        assert_string_equal(sa[a->metadata->unit_ref],
                            sb[b->metadata->unit_ref]);
    }
}


static int
v1_repack_equal(Prometheus__WriteRequest *a, Prometheus__WriteRequest *b)
{
    size_t    na, nb;
    uint8_t  *pa, *pb;
    int       eq;

    na = prometheus__write_request__get_packed_size(a);
    nb = prometheus__write_request__get_packed_size(b);
    pa = malloc(na + 1);
    pb = malloc(nb + 1);
    prometheus__write_request__pack(a, pa);
    prometheus__write_request__pack(b, pb);
    eq = na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);

    return eq;
}


/* decodes buf (version v), encodes it into `to` */
static uint8_t *
translate(const uint8_t *buf, size_t len, pg_rw_version_e v,
    pg_rw_version_e to, const uint8_t *select, size_t *out_len,
    pg_rw_request_t *r)
{
    pg_buf_t  out;

    arena_used = 0;
    assert_int_equal(pg_rw_decode(buf, len, v, &alloc, r, NULL, NULL),
                     PG_RW_OK);

    buf_init(&out, 16);
    assert_int_equal(pg_rw_encode(buf, len, r, select, to, &alloc, &out), 0);
    *out_len = out.pos - out.start;

    return out.start;
}


/* a 1.0 request with a bit of everything, metadata of its families */
static void
rich_v1(req_t *q)
{
    size_t  i;

    req_init(q);

    i = req_series(q, "__name__", "http_requests_total", "job", "api",
                   "method", "GET", NULL);
    req_sample(q, i, 10, 1000);
    req_sample(q, i, NAN, 2000);
    req_exemplar(q, i, "trace_id", "0af7651916cd43dd8448eb211c80319c",
                 1, 1500);
    i = req_series(q, "__name__", "http_requests_total", "job", "api",
                   "method", "POST", NULL);
    req_sample(q, i, -INFINITY, 1000);
    i = req_series(q, "__name__", "req_seconds_bucket", "le", "0.5", NULL);
    req_sample(q, i, 3, 1000);
    i = req_series(q, "__name__", "req_seconds_sum", NULL);
    req_sample(q, i, 1.5, 1000);
    i = req_series(q, "__name__", "native", "zone",
                   "Z\xc3\xbcrich \xe2\x9c\x93", NULL);
    req_histogram(q, i);
    i = req_series(q, "zeta", "z", "__name__", "unsorted", "", "", NULL);
    q->l[i][2].name = "alpha";
    req_sample(q, i, 0, 0);
    i = req_series(q, "__name__", "temp", "x", "", NULL);
    req_sample(q, i, 21.5, 3000);

    prometheus__metric_metadata__init(&q->md[0]);
    q->md[0].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__COUNTER;
    q->md[0].metric_family_name = "http_requests_total";
    q->md[0].help = "Requests.";
    q->mdp[0] = &q->md[0];
    prometheus__metric_metadata__init(&q->md[1]);
    q->md[1].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__HISTOGRAM;
    q->md[1].metric_family_name = "req_seconds";
    q->md[1].help = "Request latency.";
    q->md[1].unit = "seconds";
    q->mdp[1] = &q->md[1];
    prometheus__metric_metadata__init(&q->md[2]);
    q->md[2].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__GAUGE;
    q->md[2].metric_family_name = "temp";
    q->md[2].unit = "celsius";
    q->mdp[2] = &q->md[2];
    q->wr.n_metadata = 3;

    req_pack(q);
}


/* ------------------------------------------------------- translations */


static void
test_roundtrip_1_2_1(void **state)
{
    req_t                      q;
    size_t                     i, l2, l1;
    uint8_t                   *b2, *b1;
    pg_rw_request_t            r;
    Prometheus__WriteRequest  *w0, *w1;
    V2(Request)               *w2;

    rich_v1(&q);

    b2 = translate(q.buf, q.len, PG_RW_V1, PG_RW_V2, NULL, &l2, &r);

    w0 = prometheus__write_request__unpack(NULL, q.len, q.buf);
    w2 = io__prometheus__write__v2__request__unpack(NULL, l2, b2);
    assert_non_null(w0);
    assert_non_null(w2);

    /* symbols: "" first, each string once */
    assert_true(w2->n_symbols > 1);
    assert_string_equal(w2->symbols[0], "");

    for (i = 1; i < w2->n_symbols; i++) {
        size_t  k;

        assert_true(w2->symbols[i][0] != '\0');
        for (k = 0; k < i; k++) {
            assert_true(strcmp(w2->symbols[i], w2->symbols[k]) != 0);
        }
    }

    assert_int_equal(w2->n_timeseries, w0->n_timeseries);

    for (i = 0; i < w0->n_timeseries; i++) {
        assert_same_series(w0->timeseries[i], w2->symbols,
                           w2->timeseries[i]);
    }

    /* metadata on the series of its family, exact or less a suffix */
    assert_int_equal(w2->timeseries[0]->metadata->type, 1);
    assert_string_equal(w2->symbols[w2->timeseries[0]->metadata->help_ref],
                        "Requests.");
    assert_int_equal(w2->timeseries[1]->metadata->type, 1);
    assert_int_equal(w2->timeseries[2]->metadata->type, 3);
    assert_string_equal(w2->symbols[w2->timeseries[2]->metadata->unit_ref],
                        "seconds");
    assert_int_equal(w2->timeseries[3]->metadata->type, 3);
    assert_null(w2->timeseries[4]->metadata);
    assert_null(w2->timeseries[5]->metadata);
    assert_int_equal(w2->timeseries[6]->metadata->type, 2);
    assert_string_equal(w2->symbols[w2->timeseries[6]->metadata->unit_ref],
                        "celsius");

    /* our decoder takes it as valid, and back to 1.0 is the input */
    b1 = translate(b2, l2, PG_RW_V2, PG_RW_V1, NULL, &l1, &r);
    assert_int_equal(r.stats.series, w0->n_timeseries);
    assert_int_equal(r.stats.metadata, 5);

    w1 = prometheus__write_request__unpack(NULL, l1, b1);
    assert_non_null(w1);
    assert_true(v1_repack_equal(w0, w1));

    prometheus__write_request__free_unpacked(w0, NULL);
    prometheus__write_request__free_unpacked(w1, NULL);
    io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    free(b1);
    free(b2);
}


/* a 2.0 request whose every series of a family has the same metadata */
static void
rich_v2(req2_t *q, int rc4)
{
    size_t  i;

    req2_init(q);

    i = series2(q, "__name__", "http_requests_total", "job", "api", NULL);
    sample2(q, i, 10, 1000, rc4 ? 900 : 0);
    exemplar2(q, i, "trace_id", "abc", 2, 1100);
    metadata2(q, i, 1, "Requests.", NULL);
    if (!rc4) {
        q->ts[i].created_timestamp = 900;
    }
    i = series2(q, "__name__", "lat_seconds_bucket", "le", "+Inf", NULL);
    sample2(q, i, 4, 1000, 0);
    metadata2(q, i, 3, "Latency.", "seconds");
    i = series2(q, "__name__", "lat_seconds_count", NULL);
    sample2(q, i, 4, 1000, 0);
    metadata2(q, i, 3, "Latency.", "seconds");
    i = series2(q, "__name__", "native_seconds", "b", "", NULL);
    histogram2(q, i, rc4 ? 400 : 0);
    metadata2(q, i, 3, "Native.", "seconds");
    i = series2(q, "job", "x", "__name__", "unsorted", NULL);
    sample2(q, i, 1, 1, 0);
    i = series2(q, "__name__", "no_meta", NULL);
    sample2(q, i, 2, 2, 0);
    metadata2(q, i, 0, NULL, NULL);

    req2_pack(q);
}


static void
test_roundtrip_2_1_2(void **state)
{
    req2_t                     q;
    size_t                     i, l1, l2;
    uint8_t                   *b1, *b2;
    int                        rc4;
    pg_rw_request_t            r;
    Prometheus__WriteRequest  *w1;
    V2(Request)               *w0, *w2;

    for (rc4 = 0; rc4 < 2; rc4++) {
        rich_v2(&q, rc4);

        b1 = translate(q.buf, q.len, PG_RW_V2, PG_RW_V1, NULL, &l1, &r);
        w1 = prometheus__write_request__unpack(NULL, l1, b1);
        w0 = io__prometheus__write__v2__request__unpack(NULL, q.len, q.buf);
        assert_non_null(w1);
        assert_non_null(w0);

        assert_int_equal(w1->n_timeseries, w0->n_timeseries);

        for (i = 0; i < w0->n_timeseries; i++) {
            assert_same_series(w1->timeseries[i], w0->symbols,
                               w0->timeseries[i]);
        }

        /* once per (family, type, help, unit) */
        assert_int_equal(w1->n_metadata, 3);
        assert_string_equal(w1->metadata[0]->metric_family_name,
                            "http_requests_total");
        assert_string_equal(w1->metadata[1]->metric_family_name,
                            "lat_seconds");
        assert_string_equal(w1->metadata[1]->unit, "seconds");
        assert_string_equal(w1->metadata[2]->metric_family_name,
                            "native_seconds");

        /* the sample's start timestamp is gone in 1.0 (protobuf-c */
        /* would keep it as an unknown field): value, timestamp 1000 */
        {
            uint8_t  raw[64];
            size_t   n;

            n = prometheus__sample__pack(w1->timeseries[0]->samples[0], raw);
            assert_int_equal(n, 9 + 3);
        }

        b2 = translate(b1, l1, PG_RW_V1, PG_RW_V2, NULL, &l2, &r);
        w2 = io__prometheus__write__v2__request__unpack(NULL, l2, b2);
        assert_non_null(w2);
        assert_int_equal(w2->n_timeseries, w0->n_timeseries);

        for (i = 0; i < w0->n_timeseries; i++) {
            assert_same_series2(w0->symbols, w0->timeseries[i], w2->symbols,
                                w2->timeseries[i], 0);
        }

        prometheus__write_request__free_unpacked(w1, NULL);
        io__prometheus__write__v2__request__free_unpacked(w0, NULL);
        io__prometheus__write__v2__request__free_unpacked(w2, NULL);
        free(b1);
        free(b2);
    }
}


/* 2.0 metadata that 1.0 cannot take: text that is not UTF-8 */
static void
test_2to1_metadata_dropped(void **state)
{
    req2_t                     q;
    size_t                     i, l1;
    uint8_t                   *b1;
    pg_rw_request_t            r;
    Prometheus__WriteRequest  *w1;

    req2_init(&q);
    i = series2(&q, "__name__", "a_total", NULL);
    metadata2(&q, i, 1, "bad \xff", NULL);
    i = series2(&q, "__name__", "b_total", NULL);
    metadata2(&q, i, 1, "fine", NULL);
    req2_pack(&q);

    b1 = translate(q.buf, q.len, PG_RW_V2, PG_RW_V1, NULL, &l1, &r);
    w1 = prometheus__write_request__unpack(NULL, l1, b1);
    assert_non_null(w1);
    assert_int_equal(w1->n_timeseries, 2);
    assert_int_equal(w1->n_metadata, 1);
    assert_string_equal(w1->metadata[0]->metric_family_name, "b_total");

    prometheus__write_request__free_unpacked(w1, NULL);
    free(b1);
}


/* ------------------------------------------------------------ subsets */


/* 1.0: valid, no name, valid, bad UTF-8, valid; metadata: ok, bad, ok */
static void
mixed_v1(req_t *q)
{
    size_t  i, k;

    req_init(q);

    i = req_series(q, "__name__", "s0", NULL);
    req_sample(q, i, 0, 1);
    i = req_series(q, "job", "s1", NULL);
    req_sample(q, i, 1, 1);
    i = req_series(q, "__name__", "s2", NULL);
    req_sample(q, i, 2, 1);
    req_exemplar(q, i, "t", "2", 2, 2);
    i = req_series(q, "__name__", "s3", "x", "\xff", NULL);
    req_sample(q, i, 3, 1);
    i = req_series(q, "__name__", "s4", NULL);
    req_histogram(q, i);

    for (k = 0; k < 3; k++) {
        prometheus__metric_metadata__init(&q->md[k]);
        q->md[k].type = PROMETHEUS__METRIC_METADATA__METRIC_TYPE__GAUGE;
        q->md[k].metric_family_name = k == 0 ? "s0" : k == 1 ? "s2" : "s4";
        q->md[k].help = k == 1 ? "\xc0" : "help";
        q->mdp[k] = &q->md[k];
    }

    q->wr.n_metadata = 3;
    req_pack(q);
}


static void
mixed_v2(req2_t *q)
{
    size_t  i;

    req2_init(q);

    i = series2(q, "__name__", "s0", NULL);
    sample2(q, i, 0, 1, 0);
    i = series2(q, "job", "s1", NULL);
    sample2(q, i, 1, 1, 0);
    i = series2(q, "__name__", "s2", NULL);
    sample2(q, i, 2, 1, 0);
    exemplar2(q, i, "t", "2", 2, 2);
    metadata2(q, i, 2, "help", NULL);
    i = series2(q, "__name__", "s3", "x", "\xff", NULL);
    sample2(q, i, 3, 1, 0);
    i = series2(q, "__name__", "s4", NULL);
    histogram2(q, i, 0);
    req2_pack(q);
}


static void
test_subset_v1(void **state)
{
    req_t                      q;
    size_t                     n;
    uint8_t                   *b, select;
    pg_rw_request_t            r;
    Prometheus__WriteRequest  *w0, *w;

    mixed_v1(&q);
    w0 = prometheus__write_request__unpack(NULL, q.len, q.buf);

    b = translate(q.buf, q.len, PG_RW_V1, PG_RW_V1, NULL, &n, &r);
    assert_int_equal(r.invalid_series, 2);
    assert_int_equal(r.invalid_metadata, 1);

    w = prometheus__write_request__unpack(NULL, n, b);
    assert_non_null(w);
    assert_int_equal(w->n_timeseries, 3);
    assert_string_equal(w->timeseries[0]->labels[0]->value, "s0");
    assert_string_equal(w->timeseries[1]->labels[0]->value, "s2");
    assert_string_equal(w->timeseries[2]->labels[0]->value, "s4");
    assert_int_equal(w->timeseries[1]->n_exemplars, 1);
    assert_int_equal(w->timeseries[2]->n_histograms, 1);
    assert_int_equal(w->n_metadata, 2);
    assert_string_equal(w->metadata[0]->metric_family_name, "s0");
    assert_string_equal(w->metadata[1]->metric_family_name, "s4");

    /* byte for byte, the kept series are the input's */
    {
        uint8_t  *p1, *p2;
        size_t    n1, n2;

        n1 = prometheus__time_series__get_packed_size(w0->timeseries[2]);
        n2 = prometheus__time_series__get_packed_size(w->timeseries[1]);
        assert_int_equal(n1, n2);
        p1 = malloc(n1);
        p2 = malloc(n2);
        prometheus__time_series__pack(w0->timeseries[2], p1);
        prometheus__time_series__pack(w->timeseries[1], p2);
        assert_memory_equal(p1, p2, n1);
        free(p1);
        free(p2);
    }

    prometheus__write_request__free_unpacked(w, NULL);
    free(b);

    /* with a selection: series 2 and 3 (3 is invalid: still left out) */
    select = 0x0c;
    b = translate(q.buf, q.len, PG_RW_V1, PG_RW_V1, &select, &n, &r);
    w = prometheus__write_request__unpack(NULL, n, b);
    assert_non_null(w);
    assert_int_equal(w->n_timeseries, 1);
    assert_string_equal(w->timeseries[0]->labels[0]->value, "s2");
    prometheus__write_request__free_unpacked(w, NULL);
    free(b);

    /* nothing left out: the same bytes */
    {
        req_t  v;

        req_init(&v);
        req_series(&v, "__name__", "a", NULL);
        req_sample(&v, 0, 1, 1);
        req_pack(&v);

        b = translate(v.buf, v.len, PG_RW_V1, PG_RW_V1, NULL, &n, &r);
        assert_int_equal(n, v.len);
        assert_memory_equal(b, v.buf, n);
        free(b);
    }

    prometheus__write_request__free_unpacked(w0, NULL);
}


static void
test_subset_v2(void **state)
{
    req2_t           q;
    size_t           n;
    uint8_t         *b, select;
    pg_rw_request_t  r, r2;
    V2(Request)     *w0, *w;

    mixed_v2(&q);
    w0 = io__prometheus__write__v2__request__unpack(NULL, q.len, q.buf);

    b = translate(q.buf, q.len, PG_RW_V2, PG_RW_V2, NULL, &n, &r);
    assert_int_equal(r.invalid_series, 2);

    w = io__prometheus__write__v2__request__unpack(NULL, n, b);
    assert_non_null(w);
    assert_int_equal(w->n_symbols, w0->n_symbols);
    assert_int_equal(w->n_timeseries, 3);
    assert_same_series2(w0->symbols, w0->timeseries[0], w->symbols,
                        w->timeseries[0], 1);
    assert_same_series2(w0->symbols, w0->timeseries[2], w->symbols,
                        w->timeseries[1], 1);
    assert_same_series2(w0->symbols, w0->timeseries[4], w->symbols,
                        w->timeseries[2], 1);

    /* and it decodes clean */
    arena_used = 0;
    assert_int_equal(pg_rw_decode(b, n, PG_RW_V2, &alloc, &r2, NULL, NULL),
                     PG_RW_OK);
    assert_all_valid(&r2);
    io__prometheus__write__v2__request__free_unpacked(w, NULL);
    free(b);

    select = 0x11;
    b = translate(q.buf, q.len, PG_RW_V2, PG_RW_V2, &select, &n, &r);
    w = io__prometheus__write__v2__request__unpack(NULL, n, b);
    assert_non_null(w);
    assert_int_equal(w->n_timeseries, 2);
    assert_same_series2(w0->symbols, w0->timeseries[0], w->symbols,
                        w->timeseries[0], 1);
    assert_same_series2(w0->symbols, w0->timeseries[4], w->symbols,
                        w->timeseries[1], 1);
    io__prometheus__write__v2__request__free_unpacked(w, NULL);
    free(b);

    io__prometheus__write__v2__request__free_unpacked(w0, NULL);
}


/* translations leave out the dropped series, and the unselected */
static void
test_translations_skip_dropped(void **state)
{
    req_t                      q;
    req2_t                     q2;
    size_t                     n;
    uint8_t                   *b, select;
    pg_rw_request_t            r;
    Prometheus__WriteRequest  *w1;
    V2(Request)               *w2;

    mixed_v1(&q);
    b = translate(q.buf, q.len, PG_RW_V1, PG_RW_V2, NULL, &n, &r);
    w2 = io__prometheus__write__v2__request__unpack(NULL, n, b);
    assert_non_null(w2);
    assert_int_equal(w2->n_timeseries, 3);
    assert_string_equal(w2->symbols[w2->timeseries[0]->labels_refs[1]], "s0");
    assert_string_equal(w2->symbols[w2->timeseries[1]->labels_refs[1]], "s2");
    assert_string_equal(w2->symbols[w2->timeseries[2]->labels_refs[1]], "s4");

    /* the metadata entry with bad text was dropped: s2 gets none */
    assert_non_null(w2->timeseries[0]->metadata);
    assert_null(w2->timeseries[1]->metadata);
    assert_non_null(w2->timeseries[2]->metadata);

    for (n = 0; n < w2->n_symbols; n++) {
        assert_null(strstr(w2->symbols[n], "s1"));
        assert_null(strchr(w2->symbols[n], '\xff'));
    }

    io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    free(b);

    select = 0x10;
    b = translate(q.buf, q.len, PG_RW_V1, PG_RW_V2, &select, &n, &r);
    w2 = io__prometheus__write__v2__request__unpack(NULL, n, b);
    assert_non_null(w2);
    assert_int_equal(w2->n_timeseries, 1);
    assert_int_equal(w2->timeseries[0]->n_histograms, 1);
    io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    free(b);

    mixed_v2(&q2);
    b = translate(q2.buf, q2.len, PG_RW_V2, PG_RW_V1, NULL, &n, &r);
    w1 = prometheus__write_request__unpack(NULL, n, b);
    assert_non_null(w1);
    assert_int_equal(w1->n_timeseries, 3);
    assert_string_equal(w1->timeseries[0]->labels[0]->value, "s0");
    assert_string_equal(w1->timeseries[1]->labels[0]->value, "s2");
    assert_string_equal(w1->timeseries[2]->labels[0]->value, "s4");
    assert_int_equal(w1->timeseries[1]->n_exemplars, 1);
    assert_int_equal(w1->n_metadata, 1);
    assert_string_equal(w1->metadata[0]->metric_family_name, "s2");
    prometheus__write_request__free_unpacked(w1, NULL);
    free(b);
}


/* long strings and many labels: lengths past one byte, tables grown */
static void
test_translate_large(void **state)
{
    size_t                     i, k, n, l2, l1;
    uint8_t                   *b2, *b1, *buf;
    char                      *text;
    pg_rw_request_t            r;
    Prometheus__WriteRequest   wr, *w0, *w1;
    Prometheus__TimeSeries    *ts, **tsp;
    Prometheus__Label         *l, **lp;
    Prometheus__Sample         s, *sp;
    V2(Request)               *w2;

    /* 300 series of 40 labels, values up to 300 bytes, 2000+ symbols */
    n = 300;
    ts = calloc(n, sizeof(*ts));
    tsp = calloc(n, sizeof(*tsp));
    l = calloc(n * 40, sizeof(*l));
    lp = calloc(n * 40, sizeof(*lp));
    text = calloc(n * 40, 320);

    prometheus__sample__init(&s);
    s.value = 1;
    s.timestamp = 1;
    sp = &s;

    for (i = 0; i < n; i++) {
        prometheus__time_series__init(&ts[i]);
        tsp[i] = &ts[i];
        ts[i].labels = &lp[i * 40];
        ts[i].n_labels = 40;
        ts[i].samples = &sp;
        ts[i].n_samples = 1;

        for (k = 0; k < 40; k++) {
            char  *t = text + (i * 40 + k) * 320;

            prometheus__label__init(&l[i * 40 + k]);
            lp[i * 40 + k] = &l[i * 40 + k];

            if (k == 0) {
                l[i * 40].name = "__name__";
                snprintf(t, 320, "metric_%zu", i % 7);
            } else {
                snprintf(t, 320, "l%02zu", k);
                l[i * 40 + k].name = strdup(t);
                memset(t, 'a' + k % 26, (k * 7 + i) % 300);
                snprintf(t + (k * 7 + i) % 300, 20, "%zu", i % (k + 1));
            }

            l[i * 40 + k].value = t;
        }
    }

    prometheus__write_request__init(&wr);
    wr.timeseries = tsp;
    wr.n_timeseries = n;

    buf = malloc(prometheus__write_request__get_packed_size(&wr));
    k = prometheus__write_request__pack(&wr, buf);

    b2 = translate(buf, k, PG_RW_V1, PG_RW_V2, NULL, &l2, &r);
    assert_int_equal(r.stats.series, n);
    w2 = io__prometheus__write__v2__request__unpack(NULL, l2, b2);
    assert_non_null(w2);
    assert_true(w2->n_symbols > 2000);
    w0 = prometheus__write_request__unpack(NULL, k, buf);

    for (i = 0; i < n; i++) {
        assert_same_series(w0->timeseries[i], w2->symbols, w2->timeseries[i]);
    }

    b1 = translate(b2, l2, PG_RW_V2, PG_RW_V1, NULL, &l1, &r);
    w1 = prometheus__write_request__unpack(NULL, l1, b1);
    assert_non_null(w1);
    assert_true(v1_repack_equal(w0, w1));

    /* out of memory: the allocator, then the output buffer */
    for (i = 0; i < 2; i++) {
        pg_buf_t  out;

        arena_used = 0;
        assert_int_equal(pg_rw_decode(buf, k, PG_RW_V1, &alloc, &r, NULL,
                                      NULL), PG_RW_OK);
        buf_init(&out, 16);

        if (i == 0) {
            arena_cap = arena_used + 1024;
        } else {
            grow_cap = 4096;
        }

        assert_int_equal(pg_rw_encode(buf, k, &r, NULL, PG_RW_V2, &alloc,
                                      &out), -1);
        arena_cap = sizeof(arena);
        grow_cap = (size_t) -1;
        free(out.start);
    }

    prometheus__write_request__free_unpacked(w0, NULL);
    prometheus__write_request__free_unpacked(w1, NULL);
    io__prometheus__write__v2__request__free_unpacked(w2, NULL);
    free(b1);
    free(b2);
    free(buf);

    for (i = 0; i < n; i++) {
        for (k = 1; k < 40; k++) {
            free((char *) l[i * 40 + k].name);
        }
    }

    free(text);
    free(lp);
    free(l);
    free(tsp);
    free(ts);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_valid),
        cmocka_unit_test(test_v2_created_layouts),
        cmocka_unit_test(test_v2_packed_unpacked),
        cmocka_unit_test(test_v2_symbols),
        cmocka_unit_test(test_v2_refs),
        cmocka_unit_test(test_v2_label_rules),
        cmocka_unit_test(test_v2_malformed),
        cmocka_unit_test(test_roundtrip_1_2_1),
        cmocka_unit_test(test_roundtrip_2_1_2),
        cmocka_unit_test(test_2to1_metadata_dropped),
        cmocka_unit_test(test_subset_v1),
        cmocka_unit_test(test_subset_v2),
        cmocka_unit_test(test_translations_skip_dropped),
        cmocka_unit_test(test_translate_large),
    };

    return cmocka_run_group_tests_name("remote-write 2.0 and re-encoding",
                                       tests, NULL, NULL);
}
