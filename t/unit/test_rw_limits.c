/*
 * The decoder's limits (pg_rw_decode_limited): exemplars per request,
 * labels per series and per exemplar, bytes of one label, and for 2.0 the
 * label bytes once symbol refs are resolved.  Requests are built byte by
 * byte: the hostile shapes (empty exemplars, one symbol referenced many
 * times) are what no encoder is asked for.
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


static uint8_t  arena[1 << 20];
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


typedef struct {
    uint8_t  *p;
    size_t    len;
    size_t    cap;
} wb_t;


static void
wb_byte(wb_t *b, uint8_t c)
{
    if (b->len == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }

    b->p[b->len++] = c;
}


static void
wb_varint(wb_t *b, uint64_t v)
{
    while (v >= 0x80) {
        wb_byte(b, (uint8_t) (v | 0x80));
        v >>= 7;
    }

    wb_byte(b, (uint8_t) v);
}


static void
wb_bytes(wb_t *b, const void *d, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        wb_byte(b, ((const uint8_t *) d)[i]);
    }
}


/* field `field`, wire type LEN, holding what `inner` holds */
static void
wb_msg(wb_t *b, unsigned field, const wb_t *inner)
{
    wb_varint(b, (uint64_t) field << 3 | 2);
    wb_varint(b, inner->len);
    wb_bytes(b, inner->p, inner->len);
}


static void
wb_str(wb_t *b, unsigned field, const char *s, size_t n)
{
    wb_varint(b, (uint64_t) field << 3 | 2);
    wb_varint(b, n);
    wb_bytes(b, s, n);
}


static void
wb_free(wb_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(wb_t));
}


/* a 1.0 Label */
static void
v1_label(wb_t *ts, const char *name, const char *value, size_t vlen)
{
    wb_t  l = { 0 };

    wb_str(&l, 1, name, strlen(name));
    wb_str(&l, 2, value, vlen);
    wb_msg(ts, 1, &l);
    wb_free(&l);
}


/*
 * A 1.0 request of one series: __name__="m" and nlabels - 1 more labels
 * l0001.., the last one's value vlen bytes long, nex empty exemplars and
 * one exemplar with exlabels labels.
 */
static void
v1_request(wb_t *req, unsigned nlabels, size_t vlen, unsigned nex,
    unsigned exlabels)
{
    char      name[16], *value;
    unsigned  i;
    wb_t      ts = { 0 }, ex = { 0 };

    value = malloc(vlen + 1);
    assert_non_null(value);
    memset(value, 'v', vlen);

    v1_label(&ts, "__name__", "m", 1);

    for (i = 1; i < nlabels; i++) {
        snprintf(name, sizeof(name), "l%04u", i);
        v1_label(&ts, name, value, i == nlabels - 1 ? vlen : 1);
    }

    for (i = 0; i < nex; i++) {
        wb_byte(&ts, 0x1a);
        wb_byte(&ts, 0x00);
    }

    if (exlabels) {
        for (i = 0; i < exlabels; i++) {
            snprintf(name, sizeof(name), "e%04u", i);
            v1_label(&ex, name, "x", 1);
        }

        wb_msg(&ts, 3, &ex);
    }

    wb_msg(req, 1, &ts);

    wb_free(&ts);
    wb_free(&ex);
    free(value);
}


static pg_rw_reason_e
decode(const wb_t *b, pg_rw_version_e v, const pg_rw_limits_t *lim,
    pg_rw_request_t *r)
{
    arena_used = 0;
    return pg_rw_decode_limited(b->p, b->len, v, lim, &alloc, r, NULL, NULL);
}


static void
assert_over(pg_rw_reason_e rc, const pg_rw_request_t *r, pg_rw_limit_e which,
    uint64_t limit)
{
    assert_int_equal(rc, PG_RW_OVER_LIMIT);
    assert_int_equal(r->first.reason, PG_RW_OVER_LIMIT);
    assert_int_equal(r->over, which);
    assert_int_equal(r->over_limit, limit);
    assert_non_null(strstr(r->first.message, "above the limit of"));
}


static void
test_v1_exemplars(void **state)
{
    wb_t             b = { 0 };
    pg_rw_request_t  r;
    pg_rw_limits_t   lim = { 100, 0, 0, 0 };

    /* at the limit: accepted; one more: refused */
    v1_request(&b, 2, 1, 100, 0);
    assert_int_equal(decode(&b, PG_RW_V1, &lim, &r), PG_RW_OK);
    assert_int_equal(r.stats.exemplars, 100);
    wb_free(&b);

    /* counted across series */
    v1_request(&b, 2, 1, 60, 0);
    v1_request(&b, 2, 1, 41, 0);
    assert_over(decode(&b, PG_RW_V1, &lim, &r), &r, PG_RW_LIMIT_EXEMPLARS,
                100);
    assert_int_equal(r.first.series, 1);
    assert_non_null(strstr(r.first.message, "exemplars in the request: 101"));

    /* no limits: the old behaviour */
    assert_int_equal(decode(&b, PG_RW_V1, NULL, &r), PG_RW_OK);
    assert_int_equal(r.stats.exemplars, 101);
    wb_free(&b);
}


static void
test_v1_labels(void **state)
{
    wb_t             b = { 0 };
    pg_rw_request_t  r;
    pg_rw_limits_t   lim = { 0, 8, 0, 0 };

    v1_request(&b, 8, 1, 0, 8);
    assert_int_equal(decode(&b, PG_RW_V1, &lim, &r), PG_RW_OK);
    assert_int_equal(r.stats.series, 1);
    wb_free(&b);

    v1_request(&b, 9, 1, 0, 0);
    assert_over(decode(&b, PG_RW_V1, &lim, &r), &r, PG_RW_LIMIT_LABELS, 8);
    assert_non_null(strstr(r.first.message, "labels of the series: 9"));
    wb_free(&b);

    /* an exemplar's labels too */
    v1_request(&b, 2, 1, 0, 9);
    assert_over(decode(&b, PG_RW_V1, &lim, &r), &r, PG_RW_LIMIT_LABELS, 8);
    assert_non_null(strstr(r.first.message, "labels of an exemplar: 9"));
    wb_free(&b);
}


static void
test_v1_label_bytes(void **state)
{
    wb_t             b = { 0 };
    pg_rw_request_t  r;
    pg_rw_limits_t   lim = { 0, 0, 1024, 0 };

    /* "l0001" and its value: 5 + 1019 = 1024 */
    v1_request(&b, 2, 1019, 0, 0);
    assert_int_equal(decode(&b, PG_RW_V1, &lim, &r), PG_RW_OK);
    wb_free(&b);

    v1_request(&b, 2, 1020, 0, 0);
    assert_over(decode(&b, PG_RW_V1, &lim, &r), &r, PG_RW_LIMIT_LABEL_BYTES,
                1024);
    assert_non_null(strstr(r.first.message, "1025"));
    wb_free(&b);

    /* short labels (one-byte lengths: the decoder's fast path) alike */
    lim.label_bytes = 20;

    v1_request(&b, 2, 15, 0, 0);
    assert_int_equal(decode(&b, PG_RW_V1, &lim, &r), PG_RW_OK);
    wb_free(&b);

    v1_request(&b, 2, 16, 0, 0);
    assert_over(decode(&b, PG_RW_V1, &lim, &r), &r, PG_RW_LIMIT_LABEL_BYTES,
                20);
    assert_non_null(strstr(r.first.message, "21"));
    wb_free(&b);
}


/*
 * A 2.0 request: symbols "", "__name__", "m", "a", a value of vlen bytes;
 * nseries series __name__="m", a=<value>, each with nex empty exemplars
 * and, when exref, one exemplar with the label a=<value>.
 */
static void
v2_request(wb_t *req, size_t vlen, unsigned nseries, unsigned nex, int exref)
{
    char      *value;
    unsigned   i, k;
    wb_t       ts = { 0 }, refs = { 0 }, ex = { 0 };

    value = malloc(vlen + 1);
    assert_non_null(value);
    memset(value, 'v', vlen);

    wb_str(req, 4, "", 0);
    wb_str(req, 4, "__name__", 8);
    wb_str(req, 4, "m", 1);
    wb_str(req, 4, "a", 1);
    wb_str(req, 4, value, vlen);

    for (k = 1; k <= 4; k++) {
        wb_varint(&refs, k);
    }

    if (exref) {
        wb_t  er = { 0 };

        wb_varint(&er, 3);
        wb_varint(&er, 4);
        wb_msg(&ex, 1, &er);
        wb_free(&er);
    }

    for (i = 0; i < nseries; i++) {
        ts.len = 0;
        wb_msg(&ts, 1, &refs);

        for (k = 0; k < nex; k++) {
            wb_byte(&ts, 0x22);
            wb_byte(&ts, 0x00);
        }

        if (exref) {
            wb_msg(&ts, 4, &ex);
        }

        wb_msg(req, 5, &ts);
    }

    wb_free(&ts);
    wb_free(&refs);
    wb_free(&ex);
    free(value);
}


static void
test_v2_limits(void **state)
{
    wb_t             b = { 0 };
    pg_rw_request_t  r;
    pg_rw_limits_t   lim;

    memset(&lim, 0, sizeof(lim));

    lim.exemplars = 10;
    v2_request(&b, 4, 2, 5, 0);
    assert_int_equal(decode(&b, PG_RW_V2, &lim, &r), PG_RW_OK);
    assert_int_equal(r.stats.exemplars, 10);
    wb_free(&b);

    v2_request(&b, 4, 2, 5, 1);
    assert_over(decode(&b, PG_RW_V2, &lim, &r), &r, PG_RW_LIMIT_EXEMPLARS,
                10);
    wb_free(&b);

    lim.exemplars = 0;
    lim.labels = 1;
    v2_request(&b, 4, 1, 0, 0);
    assert_over(decode(&b, PG_RW_V2, &lim, &r), &r, PG_RW_LIMIT_LABELS, 1);
    wb_free(&b);

    lim.labels = 2;
    v2_request(&b, 4, 1, 0, 1);
    assert_int_equal(decode(&b, PG_RW_V2, &lim, &r), PG_RW_OK);
    wb_free(&b);

    /* "a" and its value: 1 + 99 */
    lim.labels = 0;
    lim.label_bytes = 100;
    v2_request(&b, 99, 1, 0, 1);
    assert_int_equal(decode(&b, PG_RW_V2, &lim, &r), PG_RW_OK);
    wb_free(&b);

    v2_request(&b, 100, 1, 0, 0);
    assert_over(decode(&b, PG_RW_V2, &lim, &r), &r, PG_RW_LIMIT_LABEL_BYTES,
                100);
    wb_free(&b);
}


static void
test_v2_resolved(void **state)
{
    wb_t             b = { 0 };
    pg_rw_request_t  r;
    pg_rw_limits_t   lim;

    memset(&lim, 0, sizeof(lim));

    /*
     * One 1000-byte symbol referenced by every series: 10 series resolve
     * to 10 * (8 + 1 + 1 + 1000) = 10100 bytes; the exemplar's label adds
     * 1001 a series.
     */
    v2_request(&b, 1000, 10, 0, 0);

    lim.resolved = 10100;
    assert_int_equal(decode(&b, PG_RW_V2, &lim, &r), PG_RW_OK);

    lim.resolved = 10099;
    assert_over(decode(&b, PG_RW_V2, &lim, &r), &r, PG_RW_LIMIT_RESOLVED,
                10099);
    assert_int_equal(r.first.series, 9);
    wb_free(&b);

    v2_request(&b, 1000, 10, 0, 1);
    lim.resolved = 10100;
    assert_over(decode(&b, PG_RW_V2, &lim, &r), &r, PG_RW_LIMIT_RESOLVED,
                10100);

    lim.resolved = 20110;
    assert_int_equal(decode(&b, PG_RW_V2, &lim, &r), PG_RW_OK);
    wb_free(&b);

    /* 1.0 has nothing to resolve: the limit does not apply */
    v1_request(&b, 2, 1000, 0, 0);
    lim.resolved = 10;
    assert_int_equal(decode(&b, PG_RW_V1, &lim, &r), PG_RW_OK);
    wb_free(&b);
}


/* a series the limits stopped at never reaches the callback */
static int
count_cb(void *ctx, const pg_rw_series_t *s)
{
    (*(unsigned *) ctx)++;
    return 0;
}


static void
test_stops_before_callback(void **state)
{
    wb_t             b = { 0 };
    unsigned         n;
    pg_rw_request_t  r;
    pg_rw_limits_t   lim = { 5, 0, 0, 0 };

    v1_request(&b, 2, 1, 3, 0);
    v1_request(&b, 2, 1, 3, 0);
    v1_request(&b, 2, 1, 3, 0);

    n = 0;
    arena_used = 0;
    assert_int_equal(pg_rw_decode_limited(b.p, b.len, PG_RW_V1, &lim, &alloc,
                                          &r, count_cb, &n),
                     PG_RW_OVER_LIMIT);
    assert_int_equal(n, 1);
    assert_int_equal(r.first.series, 1);
    wb_free(&b);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_v1_exemplars),
        cmocka_unit_test(test_v1_labels),
        cmocka_unit_test(test_v1_label_bytes),
        cmocka_unit_test(test_v2_limits),
        cmocka_unit_test(test_v2_resolved),
        cmocka_unit_test(test_stops_before_callback),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
