/*
 * The exemplar ring: Prometheus 2.42's CircularExemplarStorage semantics,
 * the layout in a shared region, repair after a process died in a call,
 * and its size and speed.  JSON vectors marked "Prometheus 2.42" were
 * taken from a real Prometheus 2.42.0 fed the same exemplars by remote
 * write (query_exemplars answers).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pg_exemplar.h"
#include "pg_promql.h"


#define L(n, v)  { { (const uint8_t *) (n), sizeof(n) - 1 },                \
                   { (const uint8_t *) (v), sizeof(v) - 1 } }
#define NL(a)    (sizeof(a) / sizeof((a)[0]))

static const pg_str_t  no_tenant = { (const uint8_t *) "", 0 };


/* a malloc-backed pg_allocator_t that frees everything at once */
typedef struct arena_block_s  arena_block_t;

struct arena_block_s {
    arena_block_t  *next;
    double          align[];
};

typedef struct {
    arena_block_t  *blocks;
    size_t          total;
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t        *a = ctx;
    arena_block_t  *b;

    b = malloc(sizeof(arena_block_t) + size);
    if (b == NULL) {
        return NULL;
    }

    b->next = a->blocks;
    a->blocks = b;
    a->total += size;

    return b->align;
}


static void
arena_free(arena_t *a)
{
    arena_block_t  *b;

    while (a->blocks) {
        b = a->blocks;
        a->blocks = b->next;
        free(b);
    }

    a->total = 0;
}


static pg_str_t
S(const char *s)
{
    pg_str_t  str;

    str.data = (const uint8_t *) s;
    str.len = strlen(s);

    return str;
}


static void *
region_new(size_t size)
{
    void  *p = NULL;

    assert_int_equal(posix_memalign(&p, 64, size), 0);
    memset(p, 0xa5, size);

    return p;
}


static void
ring_check(pg_exring_t *ring)
{
    char  err[256];

    if (pg_exring_check(ring, err, sizeof(err)) != 0) {
        fail_msg("ring check: %s", err);
    }
}


/* the pieces of a sliced query (pg_exring_query_collect, _hit_json) */
typedef struct {
    pg_exring_hit_t   **hits;
    size_t              nhits;
    size_t              cap;
} sliced_t;


static int
sliced_hit(void *data, pg_exring_hit_t *hit)
{
    sliced_t  *q = data;

    if (q->nhits == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->hits = realloc(q->hits, q->cap * sizeof(pg_exring_hit_t *));
        if (q->hits == NULL) {
            return 0;
        }
    }

    q->hits[q->nhits++] = hit;

    return 1;
}


static int
sliced_cmp(const void *a, const void *b)
{
    return pg_exring_hit_compare(*(pg_exring_hit_t * const *) a,
                                 *(pg_exring_hit_t * const *) b);
}


/*
 * The same query in slices of "step" series, as the glue runs it, its
 * answer written in buffers of "until" bytes: its bytes must be
 * pg_exring_query()'s.
 */
static void
ring_query_sliced(pg_exring_t *ring, pg_str_t tenant, uint64_t need,
    pg_series_match_pt match, void *ctx, int64_t start, int64_t end,
    uint32_t step, size_t until, const char *want)
{
    arena_t              a = { NULL, 0 };
    pg_allocator_t       alloc = { arena_alloc, &a };
    pg_json_buf_t        out, chunk;
    sliced_t            *q;
    uint32_t             pos;
    size_t               i;
    int                  rc, slices, pieces;
    pg_exring_hit_pos_t  hp;

    q = calloc(1, sizeof(sliced_t));
    assert_non_null(q);

    pos = 0;
    slices = 0;

    do {
        rc = pg_exring_query_collect_sig(ring, tenant, need, match, ctx,
                                         start, end, &pos, step, sliced_hit,
                                         q, &alloc, &alloc);
        assert_true(rc >= 0);
        slices++;
    } while (rc == 0);

    qsort(q->hits, q->nhits, sizeof(pg_exring_hit_t *), sliced_cmp);

    pg_json_init(&out, alloc);
    pg_json_literal(&out, "{\"status\":\"success\",\"data\":[");

    pieces = 0;

    for (i = 0; i < q->nhits; i++) {
        assert_true(q->hits[i]->nexemplars > 0);
        assert_true(i == 0 || pg_exring_hit_compare(q->hits[i - 1],
                                                    q->hits[i]) < 0);
        memset(&hp, 0, sizeof(hp));

        do {
            /* each chunk: at least one piece, then stops once full */
            pg_json_init(&chunk, alloc);
            rc = pg_exring_hit_json(q->hits[i], i == 0, &hp, until, &chunk);
            assert_true(rc >= 0);
            assert_true(chunk.len > 0);
            pg_json_raw(&out, chunk.data, chunk.len);
            pieces++;
        } while (rc == 0);

        /* a hit written is written */
        pg_json_init(&chunk, alloc);
        assert_int_equal(pg_exring_hit_json(q->hits[i], 0, &hp, until,
                                            &chunk), 1);
        assert_int_equal(chunk.len, 0);
    }

    pg_json_literal(&out, "]}");
    assert_false(out.failed);

    if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0) {
        fail_msg("sliced query (step %u, %d slices, %d pieces) differs:\n"
                 "%.*s\nwant:\n%s", step, slices, pieces, (int) out.len,
                 (const char *) out.data, want);
    }

    free(q->hits);
    free(q);
    arena_free(&a);
}


static void
assert_buf_str(const pg_json_buf_t *b, const char *want)
{
    assert_false(b->failed);

    if (b->len != strlen(want) || memcmp(b->data, want, b->len) != 0) {
        fail_msg("got:\n%.*s\nwant:\n%s", (int) b->len,
                 (const char *) b->data, want);
    }
}


/* query into a NUL-terminated malloc'ed string */
static char *
ring_query(pg_exring_t *ring, pg_str_t tenant, pg_series_match_pt match,
    void *ctx, int64_t start, int64_t end, int *nseries)
{
    arena_t         a = { NULL, 0 };
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_json_buf_t   out;
    char           *s;
    int             n;

    pg_json_init(&out, alloc);
    n = pg_exring_query(ring, tenant, match, ctx, start, end, &out);
    assert_true(n >= 0);

    if (nseries) {
        *nseries = n;
    }

    s = malloc(out.len + 1);
    assert_non_null(s);
    memcpy(s, out.data, out.len);
    s[out.len] = '\0';

    arena_free(&a);

    /* every query of these tests, again in slices of 1 and 3 series */

    ring_query_sliced(ring, tenant, 0, match, ctx, start, end, 1, 1, s);
    ring_query_sliced(ring, tenant, 0, match, ctx, start, end, 3, 200, s);
    ring_query_sliced(ring, tenant, 0, match, ctx, start, end, UINT32_MAX,
                      SIZE_MAX, s);

    return s;
}


static void
assert_query(pg_exring_t *ring, pg_str_t tenant, pg_series_match_pt match,
    void *ctx, int64_t start, int64_t end, const char *expected)
{
    char  *s;

    s = ring_query(ring, tenant, match, ctx, start, end, NULL);
    assert_string_equal(s, expected);
    free(s);
}


/* matches series whose label "name" equals one of the values given */
typedef struct {
    const char  *name;
    const char  *value;
    const char  *name2;        /* and, if set, label name2 = value2 */
    const char  *value2;
} match_t;


static int
label_is(const pg_label_t *l, size_t n, const char *name, const char *value)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (pg_str_eq(l[i].name, S(name))) {
            return pg_str_eq(l[i].value, S(value));
        }
    }

    return value[0] == '\0';
}


/* a list of matcher sets, any of which may match ("a or b") */
static int
match_any(void *ctx, const pg_label_t *l, size_t n)
{
    match_t  *m;

    for (m = ctx; m->name; m++) {
        if (label_is(l, n, m->name, m->value)
            && (m->name2 == NULL || label_is(l, n, m->name2, m->value2)))
        {
            return 1;
        }
    }

    return 0;
}


static pg_exring_t *
ring_new(uint32_t max, size_t size, void **base)
{
    pg_exring_t  *ring;

    if (size == 0) {
        size = pg_exring_min_size(max);
    }

    *base = region_new(size);
    ring = pg_exring_init(*base, size, max);
    assert_non_null(ring);

    return ring;
}


#define INS(ring, tenant, series, ex, value, ts)                             \
    pg_exring_insert(ring, tenant, series, NL(series), ex, NL(ex), value,    \
                     ts, NULL)


/* ------------------------------------------------------------------ */


static void
test_header(void **state)
{
    void          *base;
    pg_exring_t   *ring;
    size_t         size;
    uint64_t       seq;
    pg_label_t     s1[] = { L("__name__", "m") };
    pg_label_t     e1[] = { L("trace_id", "abc") };

    size = pg_exring_min_size(1000);
    assert_true(size > 1000 * 32);

    base = region_new(size);

    /* nothing there yet */
    assert_null(pg_exring_attach(base, size, 1000));

    ring = pg_exring_init(base, size, 1000);
    assert_ptr_equal(ring, base);
    assert_int_equal(pg_exring_insert(ring, no_tenant, s1, 1, e1, 1, 1, 10,
                                      &seq), PG_EXRING_ADDED);
    assert_int_equal(seq, 1);

    /* a reload with the same layout keeps the content */
    assert_ptr_equal(pg_exring_attach(base, size, 1000), base);
    assert_int_equal(pg_exring_insert(ring, no_tenant, s1, 1, e1, 1, 1, 20,
                                      &seq), PG_EXRING_ADDED);
    assert_int_equal(seq, 2);

    /* another max or size must rebuild */
    assert_null(pg_exring_attach(base, size, 999));
    assert_null(pg_exring_attach(base, size, 1001));
    assert_null(pg_exring_attach(base, size - 8, 1000));
    assert_null(pg_exring_attach(base, size + 8, 1000));

    /* wrong magic, wrong layout version */
    ((uint8_t *) base)[0] ^= 1;
    assert_null(pg_exring_attach(base, size, 1000));
    ((uint8_t *) base)[0] ^= 1;
    assert_non_null(pg_exring_attach(base, size, 1000));

    ((uint8_t *) base)[4] ^= 0x10;
    assert_null(pg_exring_attach(base, size, 1000));
    ((uint8_t *) base)[4] ^= 0x10;
    assert_non_null(pg_exring_attach(base, size, 1000));

    ((uint8_t *) base)[8] ^= 0x01;
    assert_null(pg_exring_attach(base, size, 1000));
    ((uint8_t *) base)[8] ^= 0x01;
    assert_non_null(pg_exring_attach(base, size, 1000));

    /* bad arguments */
    assert_null(pg_exring_init(base, size, 0));
    assert_null(pg_exring_init(base, 1000 * 32, 1000));
    assert_null(pg_exring_init((uint8_t *) base + 4, size - 8, 100));
    assert_int_equal(pg_exring_min_size(0), 0);

    /* init over an old store starts empty, sequence numbers restart */
    ring = pg_exring_init(base, size, 1000);
    assert_non_null(ring);
    assert_query(ring, no_tenant, NULL, NULL, INT64_MIN, INT64_MAX,
                 "{\"status\":\"success\",\"data\":[]}");
    ring_check(ring);

    free(base);
}


/*
 * Prometheus 3.5: duplicates (equal labels, value and ts to the newest)
 * are ignored; before the newest is out of order, and so is one at its
 * time with a lower value, or with its value and a lower label hash
 * (XXH64 of the stored labels: {t="a"} hashes below {t="b"}); empty label
 * values are dropped.
 */
static void
test_duplicate_out_of_order(void **state)
{
    void         *base;
    pg_exring_t  *ring;
    int64_t       now = INT64_C(1795307778000);
    pg_label_t    s[] = { L("__name__", "pg_d") };
    pg_label_t    ea[] = { L("t", "a") };
    pg_label_t    eb[] = { L("t", "b") };
    pg_label_t    ec[] = { L("t", "c") };
    pg_label_t    ed[] = { L("t", "d") };
    pg_label_t    ee[] = { L("t", "e"), L("e", "") };
    pg_label_t    ee2[] = { L("e", ""), L("t", "e") };
    match_t       m[] = { { "__name__", "pg_d", NULL, NULL },
                          { NULL, NULL, NULL, NULL } };

    ring = ring_new(100, 0, &base);

    assert_int_equal(INS(ring, no_tenant, s, ea, 1, now + 10),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, ea, 1, now + 10),
                     PG_EXRING_DUPLICATE);

    /* the same time and value: the label hash decides */
    assert_int_equal(INS(ring, no_tenant, s, eb, 1, now + 10),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, ea, 1, now + 10),
                     PG_EXRING_OUT_OF_ORDER);

    /* the same time: a lower value is out of order, a higher one not */
    assert_int_equal(INS(ring, no_tenant, s, ea, 0.5, now + 10),
                     PG_EXRING_OUT_OF_ORDER);
    assert_int_equal(INS(ring, no_tenant, s, ea, 2, now + 10),
                     PG_EXRING_ADDED);

    assert_int_equal(INS(ring, no_tenant, s, ec, 2, now + 5),
                     PG_EXRING_OUT_OF_ORDER);
    assert_int_equal(INS(ring, no_tenant, s, ed, 3, now + 20),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, ed, 3, now + 20),
                     PG_EXRING_DUPLICATE);
    assert_int_equal(INS(ring, no_tenant, s, ee, 4, now + 30),
                     PG_EXRING_ADDED);

    /* the empty label is dropped before comparing: a duplicate */
    assert_int_equal(INS(ring, no_tenant, s, ee2, 4, now + 30),
                     PG_EXRING_DUPLICATE);

    /* only the newest counts: an older equal one is out of order */
    assert_int_equal(INS(ring, no_tenant, s, ea, 1, now + 10),
                     PG_EXRING_OUT_OF_ORDER);

    /* NaN equals nothing, nor compares lower: added again and again */
    assert_int_equal(INS(ring, no_tenant, s, ea, NAN, now + 40),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, ea, NAN, now + 40),
                     PG_EXRING_ADDED);

    /* -0 == +0 */
    assert_int_equal(INS(ring, no_tenant, s, ea, 0.0, now + 50),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, ea, -0.0, now + 50),
                     PG_EXRING_DUPLICATE);

    /* Prometheus 3.5 */
    assert_query(ring, no_tenant, match_any, m, now - 10000, now + 35,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"pg_d\"},\"exemplars\":[{\"labels\":{\"t\":\"a\"},\"value\":\"1\","
        "\"timestamp\":1795307778.010},{\"labels\":{\"t\":\"b\"},\"value\":"
        "\"1\",\"timestamp\":1795307778.010},{\"labels\":{\"t\":\"a\"},"
        "\"value\":\"2\",\"timestamp\":1795307778.010},{\"labels\":{\"t\":"
        "\"d\"},\"value\":\"3\",\"timestamp\":1795307778.020},{\"labels\":"
        "{\"t\":\"e\"},\"value\":\"4\",\"timestamp\":1795307778.030}]}]}");

    /* start and end are inclusive */
    assert_query(ring, no_tenant, match_any, m, now + 10, now + 20,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"pg_d\"},\"exemplars\":[{\"labels\":{\"t\":\"a\"},\"value\":\"1\","
        "\"timestamp\":1795307778.010},{\"labels\":{\"t\":\"b\"},\"value\":"
        "\"1\",\"timestamp\":1795307778.010},{\"labels\":{\"t\":\"a\"},"
        "\"value\":\"2\",\"timestamp\":1795307778.010},{\"labels\":{\"t\":"
        "\"d\"},\"value\":\"3\",\"timestamp\":1795307778.020}]}]}");

    /* around exemplars but none inside: no series */
    assert_query(ring, no_tenant, match_any, m, now + 11, now + 19,
                 "{\"status\":\"success\",\"data\":[]}");

    assert_query(ring, no_tenant, match_any, m, now + 20, now + 10,
                 "{\"status\":\"success\",\"data\":[]}");

    ring_check(ring);
    free(base);
}


/*
 * Prometheus 3.5: labels with a value sorted by name, stably, each shown
 * (equal names too, in the sender's order); names + values at most 128
 * runes (an invalid byte is one).
 */
static void
test_labels(void **state)
{
    void         *base;
    pg_exring_t  *ring;
    int64_t       now = INT64_C(1795307778000);
    char          v[1024], n[600];
    size_t        i;
    uint64_t      seq;
    pg_label_t    s[] = { L("__name__", "pg_e") };
    pg_label_t    e1[] = { L("z", "1"), L("empty", ""), L("a", "2") };
    pg_label_t    e2[] = { L("k", "x"), L("k", "y") };
    pg_label_t    e3[] = { L("k", "y"), L("k", "x") };
    pg_label_t    l[2];

    ring = ring_new(100, 0, &base);

    assert_int_equal(INS(ring, no_tenant, s, e1, 1, now + 10),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, e2, 2, now + 20),
                     PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s, e3, 3, now + 30),
                     PG_EXRING_ADDED);

    assert_query(ring, no_tenant, NULL, NULL, now, now + 30,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"pg_e\"},\"exemplars\":[{\"labels\":{\"a\":\"2\",\"z\":\"1\"},"
        "\"value\":\"1\",\"timestamp\":1795307778.010},{\"labels\":{\"k\":"
        "\"x\",\"k\":\"y\"},\"value\":\"2\",\"timestamp\":1795307778.020},"
        "{\"labels\":{\"k\":\"y\",\"k\":\"x\"},\"value\":\"3\",\"timestamp\":"
        "1795307778.030}]}]}");

    /* 128 runes fit, 129 do not */
    l[0].name = S("n");
    memset(v, 'x', 128);
    l[0].value.data = (uint8_t *) v;

    l[0].value.len = 127;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 40, &seq), PG_EXRING_ADDED);
    assert_true(seq > 0);

    l[0].value.len = 128;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 50, &seq), PG_EXRING_TOO_LONG);
    assert_int_equal(seq, 0);

    /* runes, not bytes: 127 x U+00E9 (254 bytes) fit, 128 x U+1F600 not */
    for (i = 0; i < 127; i++) {
        memcpy(v + 2 * i, "\xc3\xa9", 2);
    }

    l[0].value.len = 254;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 60, NULL), PG_EXRING_ADDED);

    for (i = 0; i < 128; i++) {
        memcpy(v + 4 * i, "\xf0\x9f\x98\x80", 4);
    }

    l[0].value.len = 512;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 70, NULL), PG_EXRING_TOO_LONG);

    l[0].value.len = 127 * 4;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 70, NULL), PG_EXRING_ADDED);

    /* invalid bytes count one rune each, as Go's RuneCountInString */
    memset(v, 0x80, 127);
    l[0].value.len = 127;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 80, NULL), PG_EXRING_ADDED);
    l[0].value.len = 128;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 1, 1,
                                      now + 90, NULL), PG_EXRING_TOO_LONG);

    /* names count too; empty values do not, even with long names */
    memset(n, 'n', 100);
    l[0].name.data = (uint8_t *) n;
    l[0].name.len = 100;
    l[0].value.len = 28;
    l[1].name.data = (uint8_t *) n;
    l[1].name.len = 500;
    l[1].value.len = 0;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 2, 1,
                                      now + 100, NULL), PG_EXRING_ADDED);
    l[0].value.len = 29;
    assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 2, 1,
                                      now + 110, NULL), PG_EXRING_TOO_LONG);

    /* 128 one-rune labels with empty names: the most labels there are */
    {
        pg_label_t  many[128];

        for (i = 0; i < 128; i++) {
            many[i].name.data = (uint8_t *) "";
            many[i].name.len = 0;
            many[i].value.data = (uint8_t *) "\xf4\x8f\xbf\xbf";
            many[i].value.len = 4;
        }

        assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, many, 128,
                                          1, now + 120, NULL),
                         PG_EXRING_ADDED);
    }

    ring_check(ring);
    free(base);
}


/*
 * Values stored packed (lowercase hex of even length) come back as they
 * were sent, at every length and alignment of the answer's hex writer
 * (4 bytes a step, then the rest), next to values that are not packed.
 */
static void
test_packed_values(void **state)
{
    void         *base;
    pg_exring_t  *ring;
    int64_t       now = INT64_C(1795307778000);
    char          v[64], *want, *p;
    size_t        len, i;
    pg_label_t    s[] = { L("__name__", "pg_p") };
    pg_label_t    l[3];

    static const char  digits[] = "0123456789abcdef";

    ring = ring_new(100, 0, &base);

    want = malloc(16384);
    assert_non_null(want);

    p = want + sprintf(want, "{\"status\":\"success\",\"data\":[{"
                       "\"seriesLabels\":{\"__name__\":\"pg_p\"},"
                       "\"exemplars\":[");

    for (len = 1; len <= 50; len++) {
        for (i = 0; i < len; i++) {
            v[i] = digits[(len * 7 + i * 5) % 16];
        }

        if (len % 11 == 0) {
            v[len / 2] = 'A';           /* not lowercase: kept as text */
        }

        l[0].name = S("a");
        l[0].value = S("x\"y");
        l[1].name = S("span_id");
        l[1].value.data = (uint8_t *) v;
        l[1].value.len = len;
        l[2].name = S("trace_id");
        l[2].value.data = (uint8_t *) v + (len > 1);
        l[2].value.len = len - (len > 1);

        assert_int_equal(pg_exring_insert(ring, no_tenant, s, 1, l, 3,
                                          0.5, now + (int64_t) len, NULL),
                         PG_EXRING_ADDED);

        p += sprintf(p, "%s{\"labels\":{\"a\":\"x\\\"y\",\"span_id\":"
                     "\"%.*s\",\"trace_id\":\"%.*s\"},\"value\":\"0.5\","
                     "\"timestamp\":1795307778.%03d}", len > 1 ? "," : "",
                     (int) len, v, (int) (len - (len > 1)), v + (len > 1),
                     (int) len);
    }

    strcpy(p, "]}]}");

    assert_query(ring, no_tenant, NULL, NULL, now, now + 100, want);

    ring_check(ring);
    free(want);
    free(base);
}


/*
 * A series evicted and back between two slices of a scan is found twice:
 * the second time at a higher id, with its exemplars then; the hits sort
 * by labels and then id, so the newer copy ends the run of equal labels.
 * A hit is the store as its slice saw it: later inserts do not change it.
 */
static void
test_query_found_twice(void **state)
{
    void             *base;
    arena_t           a = { NULL, 0 };
    pg_allocator_t    alloc = { arena_alloc, &a };
    pg_exring_t      *ring;
    sliced_t          q;
    uint32_t          pos;
    pg_json_buf_t     out;
    pg_exring_hit_pos_t  hp;
    pg_label_t        sa[] = { L("__name__", "a") };
    pg_label_t        sb[] = { L("__name__", "b") };
    pg_label_t        sc[] = { L("__name__", "c") };
    pg_label_t        ex[] = { L("trace_id", "abcd") };

    ring = ring_new(2, 0, &base);
    memset(&q, 0, sizeof(q));

    assert_int_equal(INS(ring, no_tenant, sa, ex, 1, 10), PG_EXRING_ADDED);

    pos = 0;
    assert_int_equal(pg_exring_query_collect(ring, no_tenant, NULL, NULL, 0,
                                             100, &pos, 1, sliced_hit, &q,
                                             &alloc, &alloc), 1);
    assert_int_equal(q.nhits, 1);

    /*
     * b (id 1) comes, c evicts a and takes its id 0, a comes back,
     * evicts b and takes its id 1: past the scan's position
     */
    assert_int_equal(INS(ring, no_tenant, sb, ex, 2, 20), PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, sc, ex, 3, 30), PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, sa, ex, 4, 40), PG_EXRING_ADDED);

    assert_int_equal(pg_exring_query_collect(ring, no_tenant, NULL, NULL, 0,
                                             100, &pos, 8, sliced_hit, &q,
                                             &alloc, &alloc), 1);
    assert_int_equal(q.nhits, 2);

    /* later inserts leave the hits as they were */
    assert_int_equal(INS(ring, no_tenant, sa, ex, 5, 50), PG_EXRING_ADDED);

    q.hits[2] = q.hits[0];          /* the order found does not matter */
    q.hits[0] = q.hits[1];
    q.hits[1] = q.hits[2];
    qsort(q.hits, q.nhits, sizeof(pg_exring_hit_t *), sliced_cmp);

    assert_true(pg_str_eq(q.hits[0]->labels[0].value, S("a")));
    assert_true(pg_str_eq(q.hits[1]->labels[0].value, S("a")));
    assert_true(q.hits[0]->id < q.hits[1]->id);
    assert_int_equal(q.hits[0]->nexemplars, 1);
    assert_int_equal(q.hits[1]->nexemplars, 1);

    pg_json_init(&out, alloc);
    memset(&hp, 0, sizeof(hp));
    assert_int_equal(pg_exring_hit_json(q.hits[0], 1, &hp, SIZE_MAX, &out),
                     1);
    memset(&hp, 0, sizeof(hp));
    assert_int_equal(pg_exring_hit_json(q.hits[1], 0, &hp, SIZE_MAX, &out),
                     1);
    assert_buf_str(&out, "{\"seriesLabels\":{\"__name__\":\"a\"},"
                   "\"exemplars\":[{\"labels\":{\"trace_id\":\"abcd\"},"
                   "\"value\":\"1\",\"timestamp\":0.010}]},"
                   "{\"seriesLabels\":{\"__name__\":\"a\"},"
                   "\"exemplars\":[{\"labels\":{\"trace_id\":\"abcd\"},"
                   "\"value\":\"4\",\"timestamp\":0.040}]}");

    ring_check(ring);
    free(q.hits);
    arena_free(&a);
    free(base);
}


/* Prometheus 2.42: series sorted by labels.Compare */
static void
test_query_sort(void **state)
{
    void         *base;
    pg_exring_t  *ring;
    int64_t       now = INT64_C(1795307778000);
    pg_label_t    none[1];
    pg_label_t    s1[] = { L("__name__", "pg_o"), L("b", "1") };
    pg_label_t    s2[] = { L("__name__", "pg_o") };
    pg_label_t    s3[] = { L("__name__", "pg_o"), L("a", "1") };
    pg_label_t    s4[] = { L("__name__", "pg_o"), L("a", "1"), L("b", "0") };
    pg_label_t    s5[] = { L("A", "1"), L("__name__", "pg_o") };
    pg_label_t    s7[] = { L("__name__", "pg_o"), L("a", "10") };
    pg_label_t    s8[] = { L("__name__", "pg_o"), L("a", "1"), L("c", "0") };
    pg_label_t    sd[] = { L("__name__", "pg_d") };
    pg_label_t    et[] = { L("t", "a") };
    match_t       m[] = { { "__name__", "pg_d", NULL, NULL },
                          { "__name__", "pg_o", "a", "1" },
                          { NULL, NULL, NULL, NULL } };

    ring = ring_new(100, 0, &base);

#define INS0(s, v, t)                                                        \
    pg_exring_insert(ring, no_tenant, s, NL(s), none, 0, v, t, NULL)

    assert_int_equal(INS0(s1, 1, now + 1), PG_EXRING_ADDED);
    assert_int_equal(INS0(s2, 2, now + 2), PG_EXRING_ADDED);
    assert_int_equal(INS0(s3, 3, now + 3), PG_EXRING_ADDED);
    assert_int_equal(INS0(s4, 4, now + 4), PG_EXRING_ADDED);
    assert_int_equal(INS0(s5, 5, now + 5), PG_EXRING_ADDED);
    assert_int_equal(INS0(s7, 7, now + 7), PG_EXRING_ADDED);
    assert_int_equal(INS0(s8, 8, now + 8), PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, sd, et, 1, now + 10),
                     PG_EXRING_ADDED);

    assert_query(ring, no_tenant, match_any, m + 1, now - 100, now + 100,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"pg_o\",\"a\":\"1\"},\"exemplars\":[{\"labels\":{},\"value\":\"3\""
        ",\"timestamp\":1795307778.003}]},{\"seriesLabels\":{\"__name__\":"
        "\"pg_o\",\"a\":\"1\",\"b\":\"0\"},\"exemplars\":[{\"labels\":{},"
        "\"value\":\"4\",\"timestamp\":1795307778.004}]},{\"seriesLabels\":{"
        "\"__name__\":\"pg_o\",\"a\":\"1\",\"c\":\"0\"},\"exemplars\":[{"
        "\"labels\":{},\"value\":\"8\",\"timestamp\":1795307778.008}]}]}");

    /* "pg_d or pg_o{a="1"}" */
    assert_query(ring, no_tenant, match_any, m, now - 100, now + 100,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"pg_d\"},\"exemplars\":[{\"labels\":{\"t\":\"a\"},\"value\":\"1\","
        "\"timestamp\":1795307778.010}]},{\"seriesLabels\":{\"__name__\":"
        "\"pg_o\",\"a\":\"1\"},\"exemplars\":[{\"labels\":{},\"value\":\"3\""
        ",\"timestamp\":1795307778.003}]},{\"seriesLabels\":{\"__name__\":"
        "\"pg_o\",\"a\":\"1\",\"b\":\"0\"},\"exemplars\":[{\"labels\":{},"
        "\"value\":\"4\",\"timestamp\":1795307778.004}]},{\"seriesLabels\":{"
        "\"__name__\":\"pg_o\",\"a\":\"1\",\"c\":\"0\"},\"exemplars\":[{"
        "\"labels\":{},\"value\":\"8\",\"timestamp\":1795307778.008}]}]}");

    {
        match_t  mo[] = { { "__name__", "pg_o", NULL, NULL },
                          { NULL, NULL, NULL, NULL } };

        assert_query(ring, no_tenant, match_any, mo, now - 100, now + 100,
            "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"A\":\"1\","
            "\"__name__\":\"pg_o\"},\"exemplars\":[{\"labels\":{},\"value\":"
            "\"5\",\"timestamp\":1795307778.005}]},{\"seriesLabels\":{"
            "\"__name__\":\"pg_o\"},\"exemplars\":[{\"labels\":{},\"value\":"
            "\"2\",\"timestamp\":1795307778.002}]},{\"seriesLabels\":{"
            "\"__name__\":\"pg_o\",\"a\":\"1\"},\"exemplars\":[{\"labels\":{},"
            "\"value\":\"3\",\"timestamp\":1795307778.003}]},{\"seriesLabels\""
            ":{\"__name__\":\"pg_o\",\"a\":\"1\",\"b\":\"0\"},\"exemplars\":[{"
            "\"labels\":{},\"value\":\"4\",\"timestamp\":1795307778.004}]},{"
            "\"seriesLabels\":{\"__name__\":\"pg_o\",\"a\":\"1\",\"c\":\"0\"},"
            "\"exemplars\":[{\"labels\":{},\"value\":\"8\",\"timestamp\":"
            "1795307778.008}]},{\"seriesLabels\":{\"__name__\":\"pg_o\",\"a\":"
            "\"10\"},\"exemplars\":[{\"labels\":{},\"value\":\"7\","
            "\"timestamp\":1795307778.007}]},{\"seriesLabels\":{\"__name__\":"
            "\"pg_o\",\"b\":\"1\"},\"exemplars\":[{\"labels\":{},\"value\":"
            "\"1\",\"timestamp\":1795307778.001}]}]}");
    }

    ring_check(ring);
    free(base);

#undef INS0
}


/*
 * The series signature (pg_exring_selectors_sig, _query_collect_sig): the
 * answer with the signature filter is the answer without it, for
 * selectors with equality matchers on present, absent and empty labels,
 * regexps, negations and sets of selectors ("or"); and the filter skips
 * series (match() is called less).
 */

typedef struct {
    pg_selector_set_t  *set;
    unsigned            calls;
} sig_match_t;


static int
sig_match(void *ctx, const pg_label_t *l, size_t n)
{
    sig_match_t  *m = ctx;

    m->calls++;

    return pg_selector_set_match(m->set, l, n);
}


static void
test_signature_filter(void **state)
{
    void               *base;
    char                name[16], job[16], le[16], path[16];
    char               *want;
    size_t              i;
    uint64_t            need;
    pg_exring_t        *ring;
    pg_label_t          series[4], none[1];
    arena_t             a = { NULL, 0 };
    pg_allocator_t      alloc = { arena_alloc, &a };
    pg_selector_set_t   set;
    pg_promql_error_t   perr;
    sig_match_t         m;
    unsigned            calls_all;
    int64_t             now = INT64_C(1795307778000);
    static const struct {
        const char     *q;
        int             skips;      /* the filter must skip series */
    } queries[] = {
        { "m0{job=\"j3\"}", 1 },
        { "m1{path=\"/p/42\"}", 1 },
        { "{job=\"j1\",le=\"2\"}", 1 },
        { "m0{job=\"\"}", 1 },
        { "m0{nosuch=\"\"}", 1 },
        { "m0{nosuch=\"x\"}", 1 },
        { "{__name__=~\"m.\",le=~\"1|2\",job=\"j4\"}", 1 },
        { "m0{job=\"j3\"} or m1{le=\"4\"}", 0 },
        { "rate(m0{job=\"j2\"}[5m]) / rate(m0{le=\"3\"}[5m])", 1 },
        { "{job!=\"j1\",path=\"/p/7\"}", 1 },
        { "m0{path!~\"/p/1.*\"} or {le=\"1\"}", 0 },
        { "{job=~\"j1|j2\"}", 0 },
        { "nosuch", 1 },
        { "m0{job=\"j9\"}", 1 },
        { "{path=\"/p/\\u0034\"}", 1 },
    };

    (void) state;

    ring = ring_new(1000, 0, &base);

    for (i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "m%zu", i % 2);
        snprintf(job, sizeof(job), "j%zu", i % 7);
        snprintf(le, sizeof(le), "%zu", i % 5);
        snprintf(path, sizeof(path), "/p/%zu", i);

        series[0].name = S("__name__");
        series[0].value = S(name);
        series[1].name = S("job");
        series[1].value = S(job);
        series[2].name = S("le");
        series[2].value = S(le);
        series[3].name = S("path");
        series[3].value = S(path);

        /* every 10th series without "job" (an m0) */
        if (i % 10 == 4) {
            series[1] = series[0];
            assert_int_equal(pg_exring_insert(ring, no_tenant, series + 1, 3,
                                              none, 0, i, now + i, NULL),
                             PG_EXRING_ADDED);
        } else {
            assert_int_equal(pg_exring_insert(ring, no_tenant, series, 4,
                                              none, 0, i, now + i, NULL),
                             PG_EXRING_ADDED);
        }
    }

    ring_check(ring);

    for (i = 0; i < NL(queries); i++) {
        if (pg_promql_selectors((const uint8_t *) queries[i].q,
                                strlen(queries[i].q), &alloc, &set, &perr)
            != PG_PROMQL_OK)
        {
            fail_msg("%s: does not parse", queries[i].q);
        }

        m.set = &set;
        m.calls = 0;

        want = ring_query(ring, no_tenant, sig_match, &m, INT64_MIN,
                          INT64_MAX, NULL);
        calls_all = m.calls / 4;        /* ring_query() ran it 4 times */

        need = pg_exring_selectors_sig(ring, &set);
        m.calls = 0;
        ring_query_sliced(ring, no_tenant, need, sig_match, &m, INT64_MIN,
                          INT64_MAX, 7, 300, want);
        ring_query_sliced(ring, no_tenant, need, sig_match, &m, INT64_MIN,
                          INT64_MAX, UINT32_MAX, SIZE_MAX, want);

        if (queries[i].skips) {
            /* series are not read: at least m1 vs m0 */
            assert_true(need != 0);
            assert_true(m.calls / 2 < calls_all);
        }

        if (strstr(queries[i].q, "m0{") == queries[i].q
            && strstr(queries[i].q, "=\"\"}") != NULL)
        {
            /* an empty value matches the series without the label */
            assert_true(strstr(want, "\"m0\"") != NULL);
        }

        free(want);
    }

    assert_int_equal(pg_exring_selectors_sig(ring, NULL), 0);

    arena_free(&a);
    free(base);
}


/* the ring keeps the last max exemplars, each series in time order */
static void
test_wrap_around(void **state)
{
    void          *base;
    pg_exring_t   *ring;
    char          *s, exp[4096];
    int            i, n, len;
    pg_exring_stats_t  st;
    pg_label_t     sa[] = { L("__name__", "a") };
    pg_label_t     sb[] = { L("__name__", "b") };
    pg_label_t     sc[] = { L("__name__", "c") };
    pg_label_t     none[1];
    pg_label_t    *ser;

    ring = ring_new(10, 0, &base);

    /* a b c a b c ... : 25 exemplars, ts = i */
    for (i = 0; i < 25; i++) {
        ser = (i % 3 == 0) ? sa : (i % 3 == 1) ? sb : sc;
        assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 1, none, 0,
                                          i, 1000 * i, NULL),
                         PG_EXRING_ADDED);
        ring_check(ring);
    }

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, 10);
    assert_int_equal(st.series, 3);
    assert_int_equal(st.seq, 25);

    /* left: 15..24, grouped by series in time order */
    len = sprintf(exp, "{\"status\":\"success\",\"data\":[");

    for (n = 0; n < 3; n++) {
        len += sprintf(exp + len, "%s{\"seriesLabels\":{\"__name__\":\"%c\"},"
                       "\"exemplars\":[", n ? "," : "", 'a' + n);

        for (i = 15; i < 25; i++) {
            if (i % 3 == n) {
                len += sprintf(exp + len, "%s{\"labels\":{},\"value\":\"%d\","
                               "\"timestamp\":%d}",
                               exp[len - 1] == '[' ? "" : ",", i, i);
            }
        }

        len += sprintf(exp + len, "]}");
    }

    sprintf(exp + len, "]}");

    s = ring_query(ring, no_tenant, NULL, NULL, INT64_MIN, INT64_MAX, &n);
    assert_string_equal(s, exp);
    assert_int_equal(n, 3);
    free(s);

    /* a series whose exemplars were all overwritten is gone */
    for (i = 25; i < 35; i++) {
        assert_int_equal(pg_exring_insert(ring, no_tenant, sa, 1, none, 0,
                                          i, 1000 * i, NULL),
                         PG_EXRING_ADDED);
    }

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, 10);
    assert_int_equal(st.series, 1);
    ring_check(ring);

    /* with one slot, a series keeps replacing its only exemplar */
    free(base);
    ring = ring_new(1, 0, &base);

    for (i = 0; i < 5; i++) {
        assert_int_equal(pg_exring_insert(ring, no_tenant, sa, 1, none, 0,
                                          i, i, NULL), PG_EXRING_ADDED);
        assert_int_equal(pg_exring_insert(ring, no_tenant, sa, 1, none, 0,
                                          i, i, NULL), PG_EXRING_DUPLICATE);
        ring_check(ring);
    }

    assert_int_equal(pg_exring_insert(ring, no_tenant, sb, 1, none, 0, 9, 1,
                                      NULL), PG_EXRING_ADDED);
    assert_query(ring, no_tenant, NULL, NULL, INT64_MIN, INT64_MAX,
        "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":"
        "\"b\"},\"exemplars\":[{\"labels\":{},\"value\":\"9\",\"timestamp\":"
        "0.001}]}]}");

    /* the old series is forgotten: an older exemplar is accepted again */
    assert_int_equal(pg_exring_insert(ring, no_tenant, sa, 1, none, 0, 1, 1,
                                      NULL), PG_EXRING_ADDED);
    ring_check(ring);

    free(base);
}


/* label sets evicted with their last exemplar; the log reclaims them */
static void
test_series_eviction(void **state)
{
    void               *base;
    pg_exring_t        *ring;
    char                name[64], trace[33];
    int                 i;
    pg_exring_stats_t   st;
    pg_label_t          ser[3], ex[2];

    ring = ring_new(200, 0, &base);

    ser[0].name = S("__name__");
    ser[1].name = S("instance");
    ser[1].value = S("10.0.0.1:9100");
    ser[2].name = S("job");
    ser[2].value = S("node");
    ex[0].name = S("trace_id");
    ex[1].name = S("span_id");

    /* 20000 distinct series, one exemplar each: 100 ring turns */
    for (i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "metric_%d_total", i);
        snprintf(trace, sizeof(trace), "%032x", i * 2654435761u);
        ser[0].value = S(name);
        ex[0].value = S(trace);
        ex[1].value.data = (uint8_t *) trace;
        ex[1].value.len = 16;

        assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 3, ex, 2, i,
                                          i, NULL), PG_EXRING_ADDED);

        if (i % 997 == 0) {
            ring_check(ring);
        }
    }

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, 200);
    assert_int_equal(st.series, 200);
    assert_true(st.log_used <= st.log_size);
    ring_check(ring);

    /* all of them are the newest ones */
    {
        match_t  m[] = { { "__name__", "metric_19800_total", NULL, NULL },
                         { "__name__", "metric_19799_total", NULL, NULL },
                         { NULL, NULL, NULL, NULL } };
        char    *s;
        int      n;

        s = ring_query(ring, no_tenant, match_any, m, INT64_MIN, INT64_MAX,
                       &n);
        assert_int_equal(n, 1);
        assert_non_null(strstr(s, "metric_19800_total"));
        free(s);
    }

    free(base);
}


/* tenants: the same labels are distinct series, queries see their own */
static void
test_tenants(void **state)
{
    void               *base;
    pg_exring_t        *ring;
    char                tenant[32], *s, exp[256];
    int                 i, t, n;
    pg_exring_stats_t   st;
    pg_label_t          ser[] = { L("__name__", "m"), L("job", "j") };
    pg_label_t          ex[] = { L("trace_id", "0123456789abcdef") };

    ring = ring_new(5000, 0, &base);

    for (i = 0; i < 10; i++) {
        for (t = 0; t < 100; t++) {
            snprintf(tenant, sizeof(tenant), "tenant-%d", t);
            tenant[t ? sizeof(tenant) - 1 : 0] = '\0';

            assert_int_equal(pg_exring_insert(ring, S(tenant), ser, 2, ex, 1,
                                              t, 1000 * i + t, NULL),
                             PG_EXRING_ADDED);
        }
    }

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, 1000);
    assert_int_equal(st.series, 100);
    ring_check(ring);

    /* duplicates and order are per tenant */
    assert_int_equal(pg_exring_insert(ring, S("tenant-5"), ser, 2, ex, 1, 5,
                                      9005, NULL), PG_EXRING_DUPLICATE);
    assert_int_equal(pg_exring_insert(ring, S("tenant-5"), ser, 2, ex, 1, 5,
                                      9004, NULL), PG_EXRING_OUT_OF_ORDER);
    assert_int_equal(pg_exring_insert(ring, S("tenant-6"), ser, 2, ex, 1, 6,
                                      9007, NULL), PG_EXRING_ADDED);

    for (t = 0; t < 100; t += 33) {
        snprintf(tenant, sizeof(tenant), "tenant-%d", t);
        tenant[t ? sizeof(tenant) - 1 : 0] = '\0';
        s = ring_query(ring, S(tenant), NULL, NULL, 9000, 9999, &n);
        assert_int_equal(n, 1);

        snprintf(exp, sizeof(exp), "{\"status\":\"success\",\"data\":[{"
                 "\"seriesLabels\":{\"__name__\":\"m\",\"job\":\"j\"},"
                 "\"exemplars\":[{\"labels\":{\"trace_id\":"
                 "\"0123456789abcdef\"},\"value\":\"%d\",\"timestamp\":9.%03d"
                 "}]}]}", t, t);
        if (t == 0) {
            snprintf(exp, sizeof(exp), "{\"status\":\"success\",\"data\":[{"
                     "\"seriesLabels\":{\"__name__\":\"m\",\"job\":\"j\"},"
                     "\"exemplars\":[{\"labels\":{\"trace_id\":"
                     "\"0123456789abcdef\"},\"value\":\"0\",\"timestamp\":9}]}"
                     "]}");
        }

        assert_string_equal(s, exp);
        free(s);
    }

    /* the default tenant may come as NULL, an empty name too */
    {
        pg_str_t    nt = { NULL, 0 };
        pg_label_t  e0[] = { { { NULL, 0 }, { (const uint8_t *) "v", 1 } } };

        assert_int_equal(pg_exring_insert(ring, nt, ser, 2, e0, 1, 7, 20000,
                                          NULL), PG_EXRING_ADDED);
        assert_query(ring, nt, NULL, NULL, 20000, 20000,
                     "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{"
                     "\"__name__\":\"m\",\"job\":\"j\"},\"exemplars\":[{"
                     "\"labels\":{\"\":\"v\"},\"value\":\"7\",\"timestamp\":"
                     "20}]}]}");
    }

    /* an unknown tenant and a tenant prefix see nothing */
    assert_query(ring, S("tenant-100"), NULL, NULL, INT64_MIN, INT64_MAX,
                 "{\"status\":\"success\",\"data\":[]}");
    assert_query(ring, S("tenant-"), NULL, NULL, INT64_MIN, INT64_MAX,
                 "{\"status\":\"success\",\"data\":[]}");

    ring_check(ring);
    free(base);
}


/* what cannot be stored, and callers' memory running out */
typedef struct {
    size_t   left;
    arena_t  arena;
} failing_t;


static void *
failing_alloc(void *ctx, size_t size)
{
    failing_t  *f = ctx;

    if (f->left == 0) {
        return NULL;
    }

    f->left--;

    return arena_alloc(&f->arena, size);
}


static int
stop_at_second(void *ctx, const pg_exring_item_t *it)
{
    return ++*(int *) ctx == 2;
}


static void
test_limits(void **state)
{
    void               *base;
    pg_exring_t        *ring;
    char               *big, name[200];
    int                 i, n;
    uint64_t            seq;
    pg_exring_stats_t   st;
    pg_json_buf_t       out;
    failing_t           f;
    pg_allocator_t      alloc = { failing_alloc, &f };
    pg_label_t          ser[2], ex[1];

    ring = ring_new(100, 0, &base);

    big = malloc(70000);
    assert_non_null(big);
    memset(big, 'v', 70000);

    ser[0].name = S("__name__");
    ser[0].value = S("m");
    ser[1].name = S("big");
    ser[1].value.data = (uint8_t *) big;

    /* label values above 64k, and records above 1/8 of the log */
    ser[1].value.len = 65536;
    assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 2, NULL, 0, 1, 1,
                                      &seq), PG_EXRING_NO_SPACE);
    assert_int_equal(seq, 0);

    ser[1].value.len = 6000;
    assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 2, NULL, 0, 1, 1,
                                      NULL), PG_EXRING_NO_SPACE);

    ser[1].value.len = 1000;
    assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 2, NULL, 0, 1, 1,
                                      &seq), PG_EXRING_ADDED);
    assert_int_equal(seq, 1);

    {
        pg_str_t  t = { (uint8_t *) big, 70000 };

        assert_int_equal(pg_exring_insert(ring, t, ser, 1, NULL, 0, 1, 1,
                                          NULL), PG_EXRING_NO_SPACE);
    }

    /* a name of 128 bytes but 64 runes: lengths take two bytes */
    for (i = 0; i < 64; i++) {
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    }

    ex[0].name.data = (uint8_t *) name;
    ex[0].name.len = 128;
    ex[0].value = S("0123456789abcdef0123456789abcdef0123456789abcdef"
                    "0123456789abcdef");
    assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 1, ex, 1, 2, 2,
                                      NULL), PG_EXRING_ADDED);
    assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 1, ex, 1, 2, 2,
                                      NULL), PG_EXRING_DUPLICATE);

    {
        char  *s, *p;

        s = ring_query(ring, no_tenant, NULL, NULL, 2, 2, &n);
        assert_int_equal(n, 1);
        p = strstr(s, "0123456789abcdef0123456789abcdef0123456789abcdef"
                   "0123456789abcdef");
        assert_non_null(p);
        assert_memory_equal(p - 131, name, 128);
        free(s);
    }

    /* the query's memory runs out at each of its allocations */
    f.arena.blocks = NULL;

    for (i = 0; ; i++) {
        f.left = i;
        pg_json_init(&out, alloc);
        n = pg_exring_query(ring, no_tenant, NULL, NULL, INT64_MIN,
                            INT64_MAX, &out);

        if (n >= 0) {
            break;
        }

        assert_int_equal(n, -1);
        assert_true(out.failed);
    }

    assert_int_equal(n, 2);
    assert_true(i >= 3);

    f.left = 0;
    assert_int_equal(pg_exring_iterate(ring, &alloc, stop_at_second, &n),
                     -1);

    n = 0;
    f.left = 100;
    assert_int_equal(pg_exring_iterate(ring, &alloc, stop_at_second, &n), 1);
    assert_int_equal(n, 2);

    assert_string_equal(pg_exring_rc_name(PG_EXRING_ADDED), "added");
    assert_string_equal(pg_exring_rc_name(PG_EXRING_DUPLICATE), "duplicate");
    assert_string_equal(pg_exring_rc_name(PG_EXRING_OUT_OF_ORDER),
                        "out_of_order");
    assert_string_equal(pg_exring_rc_name(PG_EXRING_TOO_LONG), "too_long");
    assert_string_equal(pg_exring_rc_name(PG_EXRING_NO_SPACE), "no_space");
    assert_string_equal(pg_exring_rc_name(PG_EXRING_NRESULTS), "unknown");

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, 2);
    assert_int_equal(st.seq, 2);

    ring_check(ring);
    arena_free(&f.arena);
    free(big);
    free(base);
}


/* ------------------------------------------------------------------ */

/*
 * A reference model: Prometheus' semantics written plainly, a FIFO of at
 * most max exemplars and a linear search for a series' newest one.
 */

#define MODEL_LABELS  8

typedef struct {
    int         tenant;
    int         series;
    int         nlabels;
    char        names[MODEL_LABELS][48];
    char        values[MODEL_LABELS][200];
    double      value;
    int64_t     ts;
} model_ex_t;

typedef struct {
    model_ex_t  *fifo;
    size_t       max;
    size_t       head;       /* index of the oldest */
    size_t       count;
    uint64_t     seq;
} model_t;


static const char  *model_tenants[] = { "", "acme", "globex", "acme2" };

static const char  *model_series[][4] = {
    { "__name__", "http_requests_total", "job", "api" },
    { "__name__", "http_requests_total", "job", "web" },
    { "__name__", "http_request_duration_seconds_bucket", "le", "0.5" },
    { "__name__", "http_request_duration_seconds_bucket", "le", "+Inf" },
    { "__name__", "x", "a\xc3\xa9", "\"q\"\n<&>" },
    { "__name__", "y", NULL, NULL },
    { "__name__", "z", "zone", "\xe2\x80\xa8" },
    { "A", "1", "__name__", "y" },
};

static const char  *model_names[] = {
    "trace_id", "span_id", "traceID", "k", "", "\xc3\xa9t\xc3\xa9",
};


static uint64_t  rnd_state;

static uint32_t
rnd(uint32_t n)
{
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;

    return (uint32_t) ((rnd_state >> 33) % n);
}


static size_t
go_runes(const char *s)
{
    size_t    n, i, w;
    uint32_t  r;

    n = 0;

    for (i = 0; s[i]; n++) {
        w = pg_utf8_decode_rune((const uint8_t *) s + i, strlen(s + i), &r);
        i += w ? w : 1;
    }

    return n;
}


/* labels.Labels.Hash() of 3.5's stringlabels: XXH64 of the encoding */
static uint64_t
model_hash(const model_ex_t *e)
{
    int            i, j;
    size_t         len, n;
    unsigned char  buf[MODEL_LABELS * 2 * (4 + 200)];
    const char    *s;

    n = 0;

    for (i = 0; i < e->nlabels; i++) {
        for (j = 0; j < 2; j++) {
            s = j ? e->values[i] : e->names[i];
            len = strlen(s);

            if (len < 255) {
                buf[n++] = (unsigned char) len;

            } else {
                buf[n++] = 255;
                buf[n++] = (unsigned char) len;
                buf[n++] = (unsigned char) (len >> 8);
                buf[n++] = (unsigned char) (len >> 16);
            }

            memcpy(buf + n, s, len);
            n += len;
        }
    }

    return XXH64(buf, n, 0);
}


/* the model's verdict, and the exemplar normalized as Prometheus does */
static pg_exring_rc_e
model_insert(model_t *m, model_ex_t *e)
{
    model_ex_t  n, *p;
    size_t      i, j, k, runes;

    n = *e;
    n.nlabels = 0;
    runes = 0;

    for (i = 0; i < (size_t) e->nlabels; i++) {
        if (e->values[i][0] == '\0') {
            continue;
        }

        runes += go_runes(e->names[i]) + go_runes(e->values[i]);

        /* stable sort by name */
        for (j = n.nlabels; j > 0 && strcmp(n.names[j - 1], e->names[i]) > 0;
             j--)
        {
            strcpy(n.names[j], n.names[j - 1]);
            strcpy(n.values[j], n.values[j - 1]);
        }

        strcpy(n.names[j], e->names[i]);
        strcpy(n.values[j], e->values[i]);
        n.nlabels++;
    }

    if (runes > PG_EXEMPLAR_MAX_RUNES) {
        return PG_EXRING_TOO_LONG;
    }

    /* the series' newest */
    for (k = m->count; k-- > 0; /* void */) {
        p = &m->fifo[(m->head + k) % m->max];

        if (p->tenant != n.tenant || p->series != n.series) {
            continue;
        }

        if (p->ts == n.ts && p->value == n.value
            && p->nlabels == n.nlabels)
        {
            for (i = 0; i < (size_t) n.nlabels; i++) {
                if (strcmp(p->names[i], n.names[i]) != 0
                    || strcmp(p->values[i], n.values[i]) != 0)
                {
                    break;
                }
            }

            if (i == (size_t) n.nlabels) {
                return PG_EXRING_DUPLICATE;
            }
        }

        /* Prometheus 3.5: an equal time needs a higher value, or the
         * same value and a label hash that is not lower */
        if (n.ts < p->ts || (n.ts == p->ts && n.value < p->value)
            || (n.ts == p->ts && n.value == p->value
                && model_hash(&n) < model_hash(p)))
        {
            return PG_EXRING_OUT_OF_ORDER;
        }

        break;
    }

    if (m->count == m->max) {
        m->head = (m->head + 1) % m->max;
        m->count--;
    }

    m->fifo[(m->head + m->count) % m->max] = n;
    m->count++;
    m->seq++;

    return PG_EXRING_ADDED;
}


/* the ring may have dropped more of the oldest (byte pressure, crash) */
static void
model_trim(model_t *m, size_t count)
{
    assert_true(count <= m->count);

    while (m->count > count) {
        m->head = (m->head + 1) % m->max;
        m->count--;
    }
}


static void
model_random(model_ex_t *e, int64_t *clock)
{
    int                 i, j, len;
    char               *v;
    static model_ex_t   last;

    /* the same again: a duplicate when it was added */
    if (rnd(10) == 0 && last.ts != 0) {
        *e = last;
        return;
    }

    memset(e, 0, sizeof(model_ex_t));

    e->tenant = rnd(NL(model_tenants));
    e->series = rnd(NL(model_series));
    e->nlabels = rnd(4);

    for (i = 0; i < e->nlabels; i++) {
        strcpy(e->names[i], model_names[rnd(NL(model_names))]);
        v = e->values[i];

        switch (rnd(6)) {
        case 0:
            v[0] = '\0';
            break;
        case 1:
            /* a hex id, sometimes a bit long */
            len = rnd(3) ? 32 : 16 + 2 * rnd(40);
            for (j = 0; j < len; j++) {
                v[j] = "0123456789abcdef"[rnd(16)];
            }
            v[len] = '\0';
            break;
        case 2:
            snprintf(v, 200, "%u", rnd(5));
            break;
        case 3:
            strcpy(v, rnd(2) ? "ABCDEF01" : "abc");
            break;
        case 4:
            len = rnd(70);
            for (j = 0; j < len; j++) {
                v[j] = rnd(4) ? (char) ('a' + rnd(26)) : "\"\\\n<"[rnd(4)];
            }
            v[len] = '\0';
            break;
        default:
            strcpy(v, rnd(2) ? "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80"
                             : "\xff\xfe");
            break;
        }
    }

    /* mostly forward, sometimes equal or back: duplicates, out of order */
    switch (rnd(8)) {
    case 0:
        break;
    case 1:
        *clock -= rnd(50);
        break;
    default:
        *clock += 1 + rnd(20);
    }

    e->ts = *clock;
    e->value = rnd(10) ? (double) rnd(4) : (rnd(2) ? NAN : -0.0);

    last = *e;
}


static pg_exring_rc_e
ring_insert_model(pg_exring_t *ring, model_ex_t *e)
{
    pg_label_t  ser[2], ex[MODEL_LABELS];
    size_t      n, i;

    n = model_series[e->series][2] ? 2 : 1;

    for (i = 0; i < n; i++) {
        ser[i].name = S(model_series[e->series][2 * i]);
        ser[i].value = S(model_series[e->series][2 * i + 1]);
    }

    for (i = 0; i < (size_t) e->nlabels; i++) {
        ex[i].name = S(e->names[i]);
        ex[i].value = S(e->values[i]);
    }

    return pg_exring_insert(ring, S(model_tenants[e->tenant]), ser, n, ex,
                            e->nlabels, e->value, e->ts, NULL);
}


typedef struct {
    model_t     *model;
    size_t       i;
    int          bad;
} compare_t;


static int
compare_visit(void *ctx, const pg_exring_item_t *it)
{
    compare_t   *c = ctx;
    model_ex_t  *e;
    size_t       i, n;

    e = &c->model->fifo[(c->model->head + c->i) % c->model->max];
    c->i++;

    n = model_series[e->series][2] ? 2 : 1;

    if (!pg_str_eq(it->tenant, S(model_tenants[e->tenant]))
        || it->nseries != n || it->nlabels != (size_t) e->nlabels
        || it->ts != e->ts
        || memcmp(&it->value, &e->value, sizeof(double)) != 0)
    {
        c->bad = 1;
        return 1;
    }

    for (i = 0; i < n; i++) {
        if (!pg_str_eq(it->series[i].name, S(model_series[e->series][2 * i]))
            || !pg_str_eq(it->series[i].value,
                          S(model_series[e->series][2 * i + 1])))
        {
            c->bad = 2;
            return 1;
        }
    }

    for (i = 0; i < it->nlabels; i++) {
        if (!pg_str_eq(it->labels[i].name, S(e->names[i]))
            || !pg_str_eq(it->labels[i].value, S(e->values[i])))
        {
            c->bad = 3;
            return 1;
        }
    }

    return 0;
}


static void
model_compare(pg_exring_t *ring, model_t *m)
{
    arena_t             a = { NULL, 0 };
    pg_allocator_t      alloc = { arena_alloc, &a };
    compare_t           c;
    pg_exring_stats_t   st;

    pg_exring_stats(ring, &st);
    assert_int_equal(st.exemplars, m->count);
    assert_int_equal(st.seq, m->seq);

    c.model = m;
    c.i = 0;
    c.bad = 0;

    assert_int_equal(pg_exring_iterate(ring, &alloc, compare_visit, &c), 0);
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.i, m->count);

    arena_free(&a);
}


static void
model_run(uint32_t max, size_t size, int inserts, int exact)
{
    void               *base;
    pg_exring_t        *ring;
    model_t             m;
    model_ex_t          e;
    pg_exring_rc_e      expect, got;
    pg_exring_stats_t   st;
    int64_t             clock;
    int                 i, counts[PG_EXRING_NRESULTS];

    ring = ring_new(max, size, &base);

    m.fifo = calloc(max, sizeof(model_ex_t));
    assert_non_null(m.fifo);
    m.max = max;
    m.head = 0;
    m.count = 0;
    m.seq = 0;

    clock = 1000;
    memset(counts, 0, sizeof(counts));

    for (i = 0; i < inserts; i++) {
        model_random(&e, &clock);

        expect = model_insert(&m, &e);
        got = ring_insert_model(ring, &e);

        if (got != expect) {
            fail_msg("insert %d: ring %s, model %s", i,
                     pg_exring_rc_name(got), pg_exring_rc_name(expect));
        }

        counts[got]++;

        /* in a tight region byte pressure drops more than max does */
        pg_exring_stats(ring, &st);

        if (exact) {
            assert_int_equal(st.exemplars, m.count);

        } else {
            model_trim(&m, st.exemplars);
        }

        if (i % 97 == 0 || i == inserts - 1) {
            ring_check(ring);
            model_compare(ring, &m);
        }
    }

    print_message("    max %u, %d inserts: %d added, %d duplicate, "
                  "%d out of order, %d too long; %llu stored\n",
                  max, inserts, counts[0], counts[1], counts[2], counts[3],
                  (unsigned long long) m.count);

    assert_true(counts[PG_EXRING_ADDED] > inserts / 2);
    assert_true(counts[PG_EXRING_DUPLICATE] > 0);
    assert_true(counts[PG_EXRING_OUT_OF_ORDER] > 0);
    assert_true(counts[PG_EXRING_TOO_LONG] > 0);

    free(m.fifo);
    free(base);
}


static void
test_random_model(void **state)
{
    rnd_state = 42;

    model_run(1, 0, 2000, 1);
    model_run(7, 0, 5000, 1);
    model_run(100, 0, 10000, 1);
    model_run(1000, pg_exring_min_size(1000) * 2, 20000, 1);

    /* little log: label storage, not max, bounds what is kept */
    model_run(1000, pg_exring_min_size(1000) * 2 / 5, 20000, 0);
    model_run(300, 30 * 1024, 10000, 0);
}


/* ------------------------------------------------------------------ */

#define CRASH_INPUTS  3000

static void
crash_rounds(size_t size, int rounds, int exact)
{
    void               *base;
    pg_exring_t        *ring;
    model_t             m;
    model_ex_t          e, *in;
    pg_exring_stats_t   st;
    pid_t               pid;
    int64_t             clock;
    int                 round, status, i, fd[2];
    char                c;
    struct timespec     ts;

    base = mmap(NULL, size, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(base != MAP_FAILED);

    ring = pg_exring_init(base, size, 300);
    assert_non_null(ring);

    m.fifo = calloc(300, sizeof(model_ex_t));
    in = calloc(CRASH_INPUTS, sizeof(model_ex_t));
    assert_non_null(m.fifo);
    assert_non_null(in);
    m.max = 300;
    m.head = 0;
    m.count = 0;
    m.seq = 0;
    clock = 1000;

    for (round = 0; round < rounds; round++) {
        rnd_state = 1000 + round;

        for (i = 0; i < CRASH_INPUTS; i++) {
            model_random(&in[i], &clock);
        }

        assert_int_equal(pipe(fd), 0);

        pid = fork();
        assert_true(pid >= 0);

        if (pid == 0) {
            /* the child inserts until killed */
            close(fd[0]);

            if (write(fd[1], "r", 1) != 1) {
                _exit(1);
            }

            for (i = 0; i < CRASH_INPUTS; i++) {
                (void) ring_insert_model(ring, &in[i]);
            }

            for ( ;; ) {
                pause();
            }
        }

        close(fd[1]);
        assert_int_equal(read(fd[0], &c, 1), 1);
        close(fd[0]);

        ts.tv_sec = 0;
        ts.tv_nsec = 1000 * ((round * 7919) % 1500);
        nanosleep(&ts, NULL);

        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);

        pg_exring_stats(ring, &st);
        ring_check(ring);

        if (exact) {
            /* replay the child's inputs until the model reaches its seq */
            for (i = 0; i < CRASH_INPUTS && m.seq < st.seq; i++) {
                (void) model_insert(&m, &in[i]);
            }

            assert_int_equal(m.seq, st.seq);
            model_trim(&m, st.exemplars);
            model_compare(ring, &m);
        }

        /* the repaired store goes on working (like the model) */
        for (i = 0; i < 50; i++) {
            model_random(&e, &clock);

            if (ring_insert_model(ring, &e) != model_insert(&m, &e)
                && exact)
            {
                fail_msg("round %d: verdicts differ after repair", round);
            }

            pg_exring_stats(ring, &st);

            if (exact) {
                model_trim(&m, st.exemplars);
            }
        }

        ring_check(ring);

        if (exact) {
            model_compare(ring, &m);
        }
    }

    pg_exring_stats(ring, &st);
    /* timing decides how many land inside a call: test_crash_steps aims */
    print_message("    %d kills, %llu inside a call (repaired)\n", rounds,
                  (unsigned long long) st.repairs);

    free(m.fifo);
    free(in);
    munmap(base, size);
}


/*
 * Kill a process inserting into a shared region at random moments; the
 * next call must find a consistent store holding a prefix of the inserts
 * (less, at most, the oldest exemplars the dead insert was making room
 * for), and go on agreeing with the model.  With room enough that only
 * max evicts the model can replay the dead process' inserts; with little
 * room (series records copied, exemplars evicted for space) consistency
 * is checked.
 */
static void
test_crash_repair(void **state)
{
    int  rounds;

    rounds = getenv("PG_CRASH_ROUNDS") ? atoi(getenv("PG_CRASH_ROUNDS"))
                                       : 200;

    crash_rounds(2 * pg_exring_min_size(300), rounds, 1);
    crash_rounds(pg_exring_min_size(300) / 2, rounds, 0);
}


/* ------------------------------------------------------------------ */

/*
 * A second copy of the ring in which each publishing step (barrier) and
 * each marked step between derived updates can "die": longjmp out, which
 * leaves memory as a process killed at that point would.
 */
static jmp_buf  crash_env;
static int      crash_at;
static int      crash_steps;


static void
crash_point(void)
{
    if (crash_at && ++crash_steps == crash_at) {
        longjmp(crash_env, 1);
    }
}


/*
 * The series hash is keyed by a seed kept in the region: another seed
 * spreads the same label sets differently (collisions made offline for one
 * ring are not collisions in another), and a re-attach keeps the seed, so
 * the stored series are still found.
 */
static void
test_seed(void **state)
{
    void          *base1, *base2;
    char           v[16], err[256];
    size_t         size, i, same;
    uint32_t       h1, h2;
    uint64_t       seq;
    pg_str_t       tenant = { (const uint8_t *) "t", 1 };
    pg_exring_t   *r1, *r2;
    pg_label_t     s1[] = { L("__name__", "m"), L("i", "0000000000") };
    pg_label_t     e1[] = { L("trace_id", "abc") };

    size = pg_exring_min_size(1000);
    base1 = region_new(size);
    base2 = region_new(size);

    r1 = pg_exring_init_seed(base1, size, 1000, 0x0123456789abcdefULL);
    r2 = pg_exring_init_seed(base2, size, 1000, 0xfedcba9876543210ULL);
    assert_non_null(r1);
    assert_non_null(r2);
    assert_true(pg_exring_seed(r1) == 0x0123456789abcdefULL);

    /* the same keys, hashed under two seeds: (nearly) never equal */
    same = 0;

    for (i = 0; i < 1000; i++) {
        snprintf(v, sizeof(v), "%010zu", i);
        s1[1].value.data = (const uint8_t *) v;
        s1[1].value.len = 10;

        h1 = pg_exring_key_hash(r1, tenant, s1, NL(s1));
        h2 = pg_exring_key_hash(r2, tenant, s1, NL(s1));
        same += (h1 == h2);

        /* and the bucket bits differ too, not only the high ones */
        assert_true(i > 0 || (h1 & 0xffff) != (h2 & 0xffff));
    }

    assert_true(same <= 1);

    /* the seed is the ring's: a re-attach (a reload) keeps it */
    assert_int_equal(pg_exring_insert(r1, tenant, s1, NL(s1), e1, 1, 1, 10,
                                      &seq), PG_EXRING_ADDED);
    h1 = pg_exring_key_hash(r1, tenant, s1, NL(s1));

    r1 = pg_exring_attach(base1, size, 1000);
    assert_non_null(r1);
    assert_true(pg_exring_seed(r1) == 0x0123456789abcdefULL);
    assert_int_equal(pg_exring_key_hash(r1, tenant, s1, NL(s1)), h1);

    /* the stored series is found again: its newest exemplar is a dup */
    assert_int_equal(pg_exring_insert(r1, tenant, s1, NL(s1), e1, 1, 1, 10,
                                      &seq), PG_EXRING_DUPLICATE);
    assert_int_equal(pg_exring_check(r1, err, sizeof(err)), 0);

    free(base1);
    free(base2);
}


#define pg_exring_barrier()  crash_point()
#define pg_exring_step()     crash_point()
#define pg_exring_min_size   cx_exring_min_size
#define pg_exring_init       cx_exring_init
#define pg_exring_attach     cx_exring_attach
#define pg_exring_init_seed  cx_exring_init_seed
#define pg_exring_seed       cx_exring_seed
#define pg_exring_key_hash   cx_exring_key_hash
#define pg_exring_insert     cx_exring_insert
#define pg_exring_query      cx_exring_query
#define pg_exring_query_collect cx_exring_query_collect
#define pg_exring_query_collect_sig cx_exring_query_collect_sig
#define pg_exring_selectors_sig cx_exring_selectors_sig
#define pg_exring_hit_compare cx_exring_hit_compare
#define pg_exring_hit_json   cx_exring_hit_json
#define pg_exring_labels_compare cx_exring_labels_compare
#define pg_exring_iterate    cx_exring_iterate
#define pg_exring_stats      cx_exring_stats
#define pg_exring_rc_name    cx_exring_rc_name
#define pg_exring_check      cx_exring_check
#define pg_exring_peer_head  cx_exring_peer_head
#define pg_exring_peer_write cx_exring_peer_write
#define pg_exring_peer_read  cx_exring_peer_read
#define pg_exring_hit_merge  cx_exring_hit_merge
#define pg_exring_hits_join  cx_exring_hits_join

#include "pg_exemplar.c"

#undef pg_exring_barrier
#undef pg_exring_step
#undef pg_exring_min_size
#undef pg_exring_init
#undef pg_exring_attach
#undef pg_exring_init_seed
#undef pg_exring_seed
#undef pg_exring_key_hash
#undef pg_exring_insert
#undef pg_exring_query
#undef pg_exring_query_collect
#undef pg_exring_query_collect_sig
#undef pg_exring_selectors_sig
#undef pg_exring_hit_compare
#undef pg_exring_hit_json
#undef pg_exring_labels_compare
#undef pg_exring_iterate
#undef pg_exring_stats
#undef pg_exring_peer_head
#undef pg_exring_peer_write
#undef pg_exring_peer_read
#undef pg_exring_hit_merge
#undef pg_exring_hits_join
#undef pg_exring_rc_name
#undef pg_exring_check


/* the stored exemplars as strings, oldest first */
typedef struct {
    char    *items[512];
    size_t   n;
} snap_t;


static int
snap_visit(void *ctx, const pg_exring_item_t *it)
{
    snap_t  *sn = ctx;
    char     buf[4096];
    size_t   i, len;

    len = snprintf(buf, sizeof(buf), "%llu|%.*s|",
                   (unsigned long long) it->seq, (int) it->tenant.len,
                   it->tenant.data);

    for (i = 0; i < it->nseries; i++) {
        len += snprintf(buf + len, sizeof(buf) - len, "%.*s=%.*s,",
                        (int) it->series[i].name.len, it->series[i].name.data,
                        (int) it->series[i].value.len,
                        it->series[i].value.data);
    }

    for (i = 0; i < it->nlabels; i++) {
        len += snprintf(buf + len, sizeof(buf) - len, "%.*s=%.*s;",
                        (int) it->labels[i].name.len, it->labels[i].name.data,
                        (int) it->labels[i].value.len,
                        it->labels[i].value.data);
    }

    snprintf(buf + len, sizeof(buf) - len, "|%a|%lld", it->value,
             (long long) it->ts);

    assert_true(sn->n < 512);
    sn->items[sn->n] = strdup(buf);
    assert_non_null(sn->items[sn->n]);
    sn->n++;

    return 0;
}


static void
snap_take(pg_exring_t *ring, snap_t *sn)
{
    arena_t         a = { NULL, 0 };
    pg_allocator_t  alloc = { arena_alloc, &a };

    sn->n = 0;
    assert_int_equal(pg_exring_iterate(ring, &alloc, snap_visit, sn), 0);
    arena_free(&a);
}


static void
snap_free(snap_t *sn)
{
    while (sn->n) {
        free(sn->items[--sn->n]);
    }
}


/* r is what "of" holds, less some of the oldest */
static int
snap_suffix(snap_t *r, snap_t *of)
{
    size_t  i, skip;

    if (r->n > of->n) {
        return 0;
    }

    skip = of->n - r->n;

    for (i = 0; i < r->n; i++) {
        if (strcmp(r->items[i], of->items[skip + i]) != 0) {
            return 0;
        }
    }

    return 1;
}


/*
 * Runs one insert dying at its 1st, 2nd, ... step until it completes;
 * after each death the next call must repair the store to what it was
 * before or after the insert (less, at most, some of the oldest
 * exemplars), and the same insert then gives the verdict that fits.
 */
static int
crash_each_step(void *base, size_t size, uint32_t max, model_ex_t *e)
{
    pg_exring_t        *ring;
    snap_t              before, after, now;
    pg_exring_stats_t   st;
    pg_exring_rc_e      full, rc;
    void               *backup;
    pg_label_t          ser[2], ex[MODEL_LABELS];
    size_t              n, i;
    int                 step;
    uint64_t            seq_before;

    n = model_series[e->series][2] ? 2 : 1;

    for (i = 0; i < n; i++) {
        ser[i].name = S(model_series[e->series][2 * i]);
        ser[i].value = S(model_series[e->series][2 * i + 1]);
    }

    for (i = 0; i < (size_t) e->nlabels; i++) {
        ex[i].name = S(e->names[i]);
        ex[i].value = S(e->values[i]);
    }

    backup = malloc(size);
    assert_non_null(backup);
    memcpy(backup, base, size);

    ring = pg_exring_attach(base, size, max);
    assert_non_null(ring);

    snap_take(ring, &before);
    pg_exring_stats(ring, &st);
    seq_before = st.seq;

    full = pg_exring_insert(ring, S(model_tenants[e->tenant]), ser, n, ex,
                            e->nlabels, e->value, e->ts, NULL);
    snap_take(ring, &after);

    for (step = 1; ; step++) {
        memcpy(base, backup, size);

        crash_steps = 0;
        crash_at = step;

        if (setjmp(crash_env) == 0) {
            rc = cx_exring_insert(ring, S(model_tenants[e->tenant]), ser, n,
                                  ex, e->nlabels, e->value, e->ts, NULL);
            crash_at = 0;
            assert_int_equal(rc, full);
            break;
        }

        crash_at = 0;

        /* the next call repairs */
        pg_exring_stats(ring, &st);
        ring_check(ring);
        snap_take(ring, &now);

        if (st.seq == seq_before) {
            assert_true(snap_suffix(&now, &before));
            rc = full;

        } else {
            /* published: the same exemplar is now a duplicate */
            assert_int_equal(st.seq, seq_before + 1);
            assert_true(snap_suffix(&now, &after));
            rc = isnan(e->value) ? PG_EXRING_ADDED : PG_EXRING_DUPLICATE;
        }

        snap_free(&now);

        assert_int_equal(pg_exring_insert(ring, S(model_tenants[e->tenant]),
                                          ser, n, ex, e->nlabels, e->value,
                                          e->ts, NULL), rc);
        ring_check(ring);

        /* (a NaN published already was added once more) */
        snap_take(ring, &now);
        if (!(isnan(e->value) && st.seq != seq_before)) {
            assert_true(snap_suffix(&now, &after));
        }
        snap_free(&now);

        /* and a repair that dies is repaired by the next call */
        memcpy(base, backup, size);
        crash_steps = 0;
        crash_at = step;

        if (setjmp(crash_env) == 0) {
            (void) cx_exring_insert(ring, S(model_tenants[e->tenant]), ser,
                                    n, ex, e->nlabels, e->value, e->ts,
                                    NULL);
        }

        crash_steps = 0;
        crash_at = 1 + step % 3;

        if (setjmp(crash_env) == 0) {
            cx_exring_stats(ring, &st);
        }

        crash_at = 0;
        pg_exring_stats(ring, &st);
        ring_check(ring);
    }

    /* leave the store as the complete insert did */
    memcpy(base, backup, size);
    assert_int_equal(pg_exring_insert(ring, S(model_tenants[e->tenant]), ser,
                                      n, ex, e->nlabels, e->value, e->ts,
                                      NULL), full);

    snap_free(&before);
    snap_free(&after);
    free(backup);

    return step - 1;
}


static void
test_crash_steps(void **state)
{
    void          *base;
    pg_exring_t   *ring;
    model_ex_t     e;
    size_t         size;
    int64_t        clock;
    int            i, steps, inserts;
    uint32_t       max;

    /* a small store: full, series records copied, exemplars evicted */
    max = 8;

    for (size = 1024; ; size += 8) {
        base = region_new(size + 8192);

        if (pg_exring_init(base, size + 8192, max) != NULL) {
            size += 8192;
            break;
        }

        free(base);
    }

    rnd_state = 7;
    clock = 1000;
    steps = 0;
    inserts = 0;

    ring = pg_exring_attach(base, size, max);

    for (i = 0; i < 400; i++) {
        model_random(&e, &clock);

        if (i % 3 == 0) {
            steps += crash_each_step(base, size, max, &e);
            inserts++;

        } else {
            (void) ring_insert_model(ring, &e);
        }
    }

    ring_check(ring);

    print_message("    %d inserts killed at each of their steps: %d deaths "
                  "repaired\n", inserts, steps);

    free(base);
}


/* ------------------------------------------------------------------ */

/* a typical workload: 12-label series, trace_id and span_id exemplars */
static void
typical_fill(pg_exring_t *ring, uint32_t nseries, uint32_t inserts,
    int hex)
{
    static const char  *names[] = {
        "__name__", "cluster", "container", "endpoint", "instance", "job",
        "le", "method", "namespace", "pod", "service", "status"
    };

    char         vals[12][64], trace[40], span[24];
    pg_label_t   ser[12], ex[2];
    uint32_t     i, k, s;

    for (k = 0; k < 12; k++) {
        ser[k].name = S(names[k]);
    }

    ex[0].name = S("trace_id");
    ex[1].name = S("span_id");

    for (i = 0; i < inserts; i++) {
        s = (i * 7919u) % nseries;

        snprintf(vals[0], 64, "http_server_request_duration_seconds_bucket");
        snprintf(vals[1], 64, "prod-eu-west-%u", s % 3);
        snprintf(vals[2], 64, "api");
        snprintf(vals[3], 64, "http-metrics");
        snprintf(vals[4], 64, "10.0.%u.%u:8080", s / 250 % 250, s % 250);
        snprintf(vals[5], 64, "api-server");
        snprintf(vals[6], 64, "%g", 0.005 * (1 << (s % 12)));
        snprintf(vals[7], 64, (s & 1) ? "GET" : "POST");
        snprintf(vals[8], 64, "production");
        snprintf(vals[9], 64, "api-server-7d9f8b6c5-%05u", s / 24);
        snprintf(vals[10], 64, "api");
        snprintf(vals[11], 64, "%u", 200 + (s / 12) % 5);

        for (k = 0; k < 12; k++) {
            ser[k].value = S(vals[k]);
        }

        snprintf(trace, sizeof(trace), hex ? "%016llx%016llx"
                                           : "%016llX%016llX",
                 (unsigned long long) i * 0x9e3779b97f4a7c15ULL,
                 (unsigned long long) i * 0xbf58476d1ce4e5b9ULL);
        snprintf(span, sizeof(span), hex ? "%016llx" : "%016llX",
                 (unsigned long long) i * 0x94d049bb133111ebULL);

        ex[0].value = S(trace);
        ex[1].value = S(span);

        assert_int_equal(pg_exring_insert(ring, no_tenant, ser, 12, ex, 2,
                                          0.001 * i, 1000 + i, NULL),
                         PG_EXRING_ADDED);
    }
}


static int
match_pod(void *ctx, const pg_label_t *l, size_t n)
{
    return n > 9 && pg_str_eq(l[9].value, *(pg_str_t *) ctx);
}


static double
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


/* ------------------------------------------------------------ peers */


/*
 * Three nodes' rings and one ring holding everything ("all"): a stream in
 * the order "all" takes it (equal times included), each exemplar on one
 * node, some on two (a retried write).  Node 0's hits joined with nodes 1
 * and 2's, sent through the peer format, are all's answer, byte for byte.
 */
static void
peers_answer(pg_exring_t **node, pg_exring_t *all, int64_t start,
    int64_t end, pg_json_buf_t *out, arena_t *a)
{
    size_t               i, n, exemplars;
    uint32_t             pos;
    sliced_t             q, p;
    const char          *err;
    pg_json_buf_t        wire;
    pg_allocator_t       alloc = { arena_alloc, a };
    pg_exring_hit_pos_t  hp;

    memset(&q, 0, sizeof(q));

    pos = 0;
    assert_int_equal(pg_exring_query_collect(node[0], no_tenant, NULL, NULL,
                                             start, end, &pos, UINT32_MAX,
                                             sliced_hit, &q, &alloc, &alloc),
                     1);

    for (i = 1; i < 3; i++) {
        memset(&p, 0, sizeof(p));
        pos = 0;
        assert_int_equal(pg_exring_query_collect(node[i], no_tenant, NULL,
                                                 NULL, start, end, &pos,
                                                 UINT32_MAX, sliced_hit, &p,
                                                 &alloc, &alloc), 1);

        pg_json_init(&wire, alloc);
        pg_exring_peer_head(&wire);

        for (n = 0; n < p.nhits; n++) {
            pg_exring_peer_write(p.hits[n], &wire);
        }

        assert_false(wire.failed);
        err = NULL;
        assert_int_equal(pg_exring_peer_read(wire.data, wire.len, &alloc,
                                             sliced_hit, &q, &err),
                         PG_EXRING_PEER_OK);
        free(p.hits);
    }

    n = q.nhits;
    assert_int_equal(pg_exring_hits_join(q.hits, &n, &alloc, &exemplars), 0);

    pg_json_init(out, alloc);
    pg_json_literal(out, "{\"status\":\"success\",\"data\":[");

    for (i = 0; i < n; i++) {
        memset(&hp, 0, sizeof(hp));
        assert_int_equal(pg_exring_hit_json(q.hits[i], i == 0, &hp, SIZE_MAX,
                                            out), 1);
    }

    pg_json_literal(out, "]}");
    assert_false(out->failed);
    free(q.hits);
}


static void
test_peers_merge(void **state)
{
    void           *base[4];
    arena_t         a = { NULL, 0 };
    pg_allocator_t  alloc = { arena_alloc, &a };
    pg_exring_t    *node[3], *all;
    pg_json_buf_t   got, want;
    pg_exring_rc_e  rc;
    pg_label_t      series[3][2] = {
        { L("__name__", "a_total"), L("job", "api") },
        { L("__name__", "b_total"), L("job", "api") },
        { L("__name__", "b_total"), L("job", "batch") }
    };
    pg_label_t      ex[2];
    char            trace[40], span[24];
    double          value;
    int64_t         ts;
    int             i, k, s, twice;
    uint32_t        rnd;

    for (i = 0; i < 3; i++) {
        node[i] = ring_new(2000, 0, &base[i]);
    }

    all = ring_new(2000, 0, &base[3]);
    rnd = 12345;
    ts = 1000000;

    for (k = 0; k < 600; k++) {
        rnd = rnd * 1103515245 + 12345;
        s = (rnd >> 8) % 3;
        i = (rnd >> 12) % 3;
        twice = (rnd >> 16) % 7 == 0;

        /* equal times now and then: value, then label hash decide */
        if ((rnd >> 20) % 4 != 0) {
            ts += 1 + (rnd >> 24) % 50;
        }

        value = (double) ((rnd >> 4) % 5) / 4;
        snprintf(trace, sizeof(trace), "%032x", (unsigned) (rnd ^ k));
        snprintf(span, sizeof(span), "s%d", k % 3);
        ex[0].name = S("span_id");
        ex[0].value = S(span);
        ex[1].name = S("trace_id");
        ex[1].value = S(trace);

        rc = pg_exring_insert(all, no_tenant, series[s], 2, ex, 2, value, ts,
                              NULL);
        if (rc != PG_EXRING_ADDED) {
            assert_int_equal(rc, PG_EXRING_OUT_OF_ORDER);
            continue;
        }

        assert_int_equal(pg_exring_insert(node[i], no_tenant, series[s], 2,
                                          ex, 2, value, ts, NULL),
                         PG_EXRING_ADDED);

        if (twice) {
            assert_int_equal(pg_exring_insert(node[(i + 1) % 3], no_tenant,
                                              series[s], 2, ex, 2, value, ts,
                                              NULL),
                             PG_EXRING_ADDED);
        }
    }

    for (k = 0; k < 3; k++) {
        int64_t  start = k == 0 ? 0 : 1000000 + 2000 * k;
        int64_t  end = k == 0 ? INT64_MAX : start + 3000;

        pg_json_init(&want, alloc);
        assert_true(pg_exring_query(all, no_tenant, NULL, NULL, start, end,
                                    &want) > 0);
        peers_answer(node, all, start, end, &got, &a);

        if (got.len != want.len || memcmp(got.data, want.data, got.len)) {
            fail_msg("window %d: merged answer differs:\n%.*s\nwant:\n%.*s",
                     k, (int) got.len, (const char *) got.data,
                     (int) want.len, (const char *) want.data);
        }
    }

    for (i = 0; i < 4; i++) {
        free(base[i]);
    }

    arena_free(&a);
}


static int
peers_count(void *data, pg_exring_hit_t *hit)
{
    size_t  *n = data;

    (*n)++;

    return hit->nexemplars > 0;
}


/* a peer's answer is hostile input: every cut and every byte changed */
static void
test_peers_hostile(void **state)
{
    void                 *base;
    arena_t               a = { NULL, 0 };
    pg_allocator_t        alloc = { arena_alloc, &a };
    pg_exring_t          *ring;
    pg_json_buf_t         wire;
    sliced_t              q;
    uint32_t              pos;
    size_t                i, n, cuts;
    uint8_t              *copy;
    const char           *err;
    pg_exring_peer_rc_e   rc;
    unsigned              v;
    pg_label_t            s1[] = { L("__name__", "x"), L("job", "j") };
    pg_label_t            s2[] = { L("__name__", "y") };
    pg_label_t            e1[] = { L("trace_id", "0123456789abcdef") };
    pg_label_t            e2[] = { L("a", "b"), L("c", "\xe6\x97\xa5") };

    ring = ring_new(100, 0, &base);

    assert_int_equal(INS(ring, no_tenant, s1, e1, 1, 10), PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s1, e2, 2, 20), PG_EXRING_ADDED);
    assert_int_equal(INS(ring, no_tenant, s2, e1, 3, 30), PG_EXRING_ADDED);

    memset(&q, 0, sizeof(q));
    pos = 0;
    assert_int_equal(pg_exring_query_collect(ring, no_tenant, NULL, NULL, 0,
                                             100, &pos, 100, sliced_hit, &q,
                                             &alloc, &alloc), 1);
    assert_int_equal(q.nhits, 2);

    pg_json_init(&wire, alloc);
    pg_exring_peer_head(&wire);
    pg_exring_peer_write(q.hits[0], &wire);
    pg_exring_peer_write(q.hits[1], &wire);
    assert_false(wire.failed);

    /* the whole: two series; every shorter cut but the one between them */

    n = 0;
    assert_int_equal(pg_exring_peer_read(wire.data, wire.len, &alloc,
                                         peers_count, &n, &err),
                     PG_EXRING_PEER_OK);
    assert_int_equal(n, 2);

    cuts = 0;

    for (i = 0; i < wire.len; i++) {
        copy = malloc(i + 1);       /* exact size: ASan sees a read past */
        memcpy(copy, wire.data, i);
        n = 0;
        err = NULL;
        rc = pg_exring_peer_read(copy, i, &alloc, peers_count, &n, &err);

        if (rc == PG_EXRING_PEER_OK) {
            assert_true(i == 12 || n == 1);
            cuts++;

        } else {
            assert_int_equal(rc, PG_EXRING_PEER_INVALID);
            assert_non_null(err);
        }

        free(copy);
    }

    assert_int_equal(cuts, 2);      /* the head alone, the first series */

    /* every byte changed to a few values: valid or refused, never more */

    copy = malloc(wire.len);

    for (i = 0; i < wire.len; i++) {
        for (v = 0; v < 6; v++) {
            static const uint8_t  vals[] = { 0, 1, 0x7f, 0x80, 0xfe, 0xff };

            memcpy(copy, wire.data, wire.len);
            copy[i] = vals[v];
            n = 0;
            rc = pg_exring_peer_read(copy, wire.len, &alloc, peers_count, &n,
                                     &err);
            assert_true(rc == PG_EXRING_PEER_OK
                        || rc == PG_EXRING_PEER_INVALID);
        }
    }

    free(copy);

    /* what the writer checks names it */

    err = NULL;
    assert_int_equal(pg_exring_peer_read((const uint8_t *) "{\"status\":1}",
                                         12, &alloc, peers_count, &n, &err),
                     PG_EXRING_PEER_INVALID);
    assert_string_equal(err, "not a promgate peer answer");

    free(q.hits);
    free(base);
    arena_free(&a);
}


static void
test_size_and_speed(void **state)
{
    void               *base;
    pg_exring_t        *ring;
    pg_exring_stats_t   st;
    uint32_t            max, per;
    size_t              size;
    double              t0, t1, best;
    char               *s;
    int                 n, i;
    pg_str_t            pod;

    max = 100000;
    size = pg_exring_min_size(max);

    print_message("    pg_exring_min_size(%u) = %zu bytes, %.1f bytes per "
                  "exemplar\n", max, size, (double) size / max);

    assert_true(size <= (size_t) 160 * max);

    /* at min_size the typical workload keeps all max exemplars */
    for (per = 64; per >= 8; per /= 2) {
        base = region_new(size);
        ring = pg_exring_init(base, size, max);

        t0 = now_us();
        typical_fill(ring, max / per, 2 * max, 1);
        t1 = now_us();

        pg_exring_stats(ring, &st);
        print_message("    %2u exemplars/series: %llu stored, %llu series, "
                      "labels %.1f + series %.1f bytes/exemplar in the log "
                      "(%.0f%% used), insert %.2f us\n", per,
                      (unsigned long long) st.exemplars,
                      (unsigned long long) st.series,
                      (double) st.label_bytes / st.exemplars,
                      (double) st.series_bytes / st.exemplars,
                      100.0 * st.log_used / st.log_size,
                      (t1 - t0) / (2 * max));

        assert_int_equal(st.exemplars, max);
        ring_check(ring);

        if (per == 16) {
            /* a selective query: one pod's series among 6250 */
            pod = S("api-server-7d9f8b6c5-00100");
            best = 1e9;

            for (i = 0; i < 20; i++) {
                t0 = now_us();
                s = ring_query(ring, no_tenant, match_pod, &pod, INT64_MIN,
                               INT64_MAX, &n);
                t1 = now_us();
                free(s);

                if (t1 - t0 < best) {
                    best = t1 - t0;
                }
            }

            print_message("    selective query over %u exemplars in %llu "
                          "series: %d series, %.0f us\n", max,
                          (unsigned long long) st.series, n, best);
            assert_true(n > 0);

            /* everything: 100000 exemplars as JSON */
            t0 = now_us();
            s = ring_query(ring, no_tenant, NULL, NULL, INT64_MIN, INT64_MAX,
                           &n);
            t1 = now_us();
            print_message("    full query: %d series, %zu bytes of JSON, "
                          "%.1f ms\n", n, strlen(s), (t1 - t0) / 1000);
            free(s);
        }

        free(base);
    }

    /* uppercase ids are not packed: fewer fit (labels take 72 bytes) */
    base = region_new(size);
    ring = pg_exring_init(base, size, max);
    typical_fill(ring, max / 16, 2 * max, 0);
    pg_exring_stats(ring, &st);
    print_message("    uppercase hex ids, 16 exemplars/series: %llu stored\n",
                  (unsigned long long) st.exemplars);
    assert_true(st.exemplars >= max * 9 / 10);
    ring_check(ring);
    free(base);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_duplicate_out_of_order),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_packed_values),
        cmocka_unit_test(test_query_sort),
        cmocka_unit_test(test_query_found_twice),
        cmocka_unit_test(test_signature_filter),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_series_eviction),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_random_model),
        cmocka_unit_test(test_crash_repair),
        cmocka_unit_test(test_crash_steps),
        cmocka_unit_test(test_peers_merge),
        cmocka_unit_test(test_peers_hostile),
        cmocka_unit_test(test_size_and_speed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
