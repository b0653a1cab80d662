/*
 * Internal to src/core: the protobuf wire format (read and write), which
 * pg_rw*.c and pg_read.c write by hand (and pg_exemplar.c's label encoding
 * uses for its lengths), and what the 1.0 and 2.0 decoders share.  Not
 * part of the core API.
 */

#ifndef PG_RW_WIRE_H
#define PG_RW_WIRE_H

#include "pg_rw.h"

#include <stdio.h>


#define PG_PB_VARINT   0
#define PG_PB_I64      1
#define PG_PB_LEN      2
#define PG_PB_I32      5

#define pg_pb_tag(field, wt)  (uint8_t) ((field) << 3 | (wt))


static inline int
pg_pb_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t  *p;
    uint64_t        r;
    unsigned        shift;

    p = *pp;

    if (p < end && *p < 0x80) {
        *v = *p;
        *pp = p + 1;
        return 0;
    }

    /* two bytes: 2.0 symbol refs past 127, messages of 128 bytes to 16k */

    if (end - p >= 2 && p[1] < 0x80) {
        *v = (uint64_t) (p[0] & 0x7f) | (uint64_t) p[1] << 7;
        *pp = p + 2;
        return 0;
    }

    r = 0;

    for (shift = 0; shift < 64; shift += 7) {
        if (p == end) {
            return -1;
        }

        r |= (uint64_t) (*p & 0x7f) << shift;

        if (*p++ < 0x80) {
            if (shift == 63 && p[-1] > 1) {
                return -1;          /* more than 64 bits */
            }
            *v = r;
            *pp = p;
            return 0;
        }
    }

    return -1;
}


/* reads a field key; returns the field number, 0 at end, -1 on error */
static inline int64_t
pg_pb_key(const uint8_t **pp, const uint8_t *end, unsigned *wt)
{
    uint64_t  key;

    if (*pp == end) {
        return 0;
    }

    if (**pp < 0x80) {
        key = **pp;
        (*pp)++;

    } else if (pg_pb_varint(pp, end, &key) != 0) {
        return -1;
    }

    *wt = key & 7;
    key >>= 3;

    if (key == 0 || key > 0x1fffffff) {
        return -1;
    }

    return (int64_t) key;
}


static inline int
pg_pb_len(const uint8_t **pp, const uint8_t *end, const uint8_t **data,
    size_t *len)
{
    uint64_t  n;

    if (pg_pb_varint(pp, end, &n) != 0) {
        return -1;
    }

    if (n > (uint64_t) (end - *pp)) {
        return -1;
    }

    *data = *pp;
    *len = (size_t) n;
    *pp += n;

    return 0;
}


/* skips a field of an unknown number, checking it is well-formed */
static inline int
pg_pb_skip(const uint8_t **pp, const uint8_t *end, unsigned wt)
{
    uint64_t        v;
    const uint8_t  *d;
    size_t          n;

    switch (wt) {

    case PG_PB_VARINT:
        return pg_pb_varint(pp, end, &v);

    case PG_PB_I64:
        if (end - *pp < 8) {
            return -1;
        }
        *pp += 8;
        return 0;

    case PG_PB_LEN:
        return pg_pb_len(pp, end, &d, &n);

    case PG_PB_I32:
        if (end - *pp < 4) {
            return -1;
        }
        *pp += 4;
        return 0;

    default:
        /* groups (3, 4) are not used by the schemas and deprecated */
        return -1;
    }
}


/*
 * The next length-delimited field, the others read over: its number and
 * content, or 0 at the end or at bytes it cannot read.  For walks of a
 * message the decoder has validated.
 */
static inline int64_t
pg_pb_next_len(const uint8_t **pp, const uint8_t *end, const uint8_t **data,
    size_t *len)
{
    int64_t   field;
    unsigned  wt;

    while ((field = pg_pb_key(pp, end, &wt)) > 0) {

        if (wt == PG_PB_LEN) {
            return pg_pb_len(pp, end, data, len) == 0 ? field : 0;
        }

        if (pg_pb_skip(pp, end, wt) != 0) {
            return 0;
        }
    }

    return 0;
}


/*
 * A repeated varint field, packed or (as protobuf also allows) one element
 * at a time: the run of varints this occurrence holds.
 */
static inline int
pg_pb_varint_run(const uint8_t **pp, const uint8_t *end, unsigned wt,
    const uint8_t **data, size_t *len)
{
    uint64_t  v;

    if (wt == PG_PB_LEN) {
        return pg_pb_len(pp, end, data, len);
    }

    if (wt != PG_PB_VARINT) {
        return -1;
    }

    *data = *pp;

    if (pg_pb_varint(pp, end, &v) != 0) {
        return -1;
    }

    *len = (size_t) (*pp - *data);

    return 0;
}


/* a packed run of varints: well-formed to its last byte */
static inline int
pg_pb_packed_varints(const uint8_t *p, const uint8_t *end, uint64_t *count)
{
    uint64_t  v, n;

    for (n = 0; p < end; n++) {
        if (pg_pb_varint(&p, end, &v) != 0) {
            return -1;
        }
    }

    if (count) {
        *count = n;
    }

    return 0;
}


static inline double
pg_pb_double(const uint8_t *p)
{
    uint64_t  u;
    double    d;

    u = (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16
        | (uint64_t) p[3] << 24 | (uint64_t) p[4] << 32
        | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48
        | (uint64_t) p[7] << 56;

    memcpy(&d, &u, sizeof(d));

    return d;
}


static inline size_t
pg_pb_varint_size(uint64_t v)
{
    size_t  n;

    for (n = 1; v >= 0x80; n++) {
        v >>= 7;
    }

    return n;
}


static inline uint8_t *
pg_pb_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t) (v | 0x80);
        v >>= 7;
    }

    *p++ = (uint8_t) v;

    return p;
}


/* a length-delimited field: tag, length, bytes */
static inline uint8_t *
pg_pb_put_bytes(uint8_t *p, uint8_t tag, const uint8_t *data, size_t len)
{
    *p++ = tag;
    p = pg_pb_put_varint(p, len);

    if (len) {
        memcpy(p, data, len);
    }

    return p + len;
}


/* equality of short strings without a call to memcmp() */
static inline int
pg_rw_mem_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint64_t  x, y;
    uint32_t  u, v;

    if (n >= 8) {
        for ( /* void */ ; n > 8; a += 8, b += 8, n -= 8) {
            memcpy(&x, a, 8);
            memcpy(&y, b, 8);

            if (x != y) {
                return 0;
            }
        }

        /* the last 8 bytes, overlapping what was compared */
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);

        return x == y;
    }

    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);

        if (u != v) {
            return 0;
        }

        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);

        return u == v;
    }

    for ( /* void */ ; n; n--) {
        if (*a++ != *b++) {
            return 0;
        }
    }

    return 1;
}


static inline int
pg_rw_str_eq(pg_str_t a, pg_str_t b)
{
    return a.len == b.len && pg_rw_mem_eq(a.data, b.data, a.len);
}


/* ASCII is the common case: the full UTF-8 check only when it is not */
static inline int
pg_rw_ascii(const uint8_t *p, size_t len)
{
    size_t    i;
    uint64_t  w[4], acc;

    acc = 0;

    /* 32 bytes a turn: one test for four words */

    for (i = 0; i + 32 <= len; i += 32) {
        memcpy(w, p + i, 32);
        acc |= w[0] | w[1] | w[2] | w[3];
    }

    for ( /* void */ ; i + 8 <= len; i += 8) {
        memcpy(w, p + i, 8);
        acc |= w[0];
    }

    for ( /* void */ ; i < len; i++) {
        acc |= p[i];
    }

    return (acc & 0x8080808080808080ULL) == 0;
}


static inline int
pg_rw_utf8_valid(const uint8_t *p, size_t len)
{
    return pg_rw_ascii(p, len) || pg_utf8_valid(p, len);
}


static inline int
pg_rw_is_name(pg_str_t s)
{
    uint64_t  x, y;

    /* one word compared: gcc 12 calls memcmp() here (2.5% of a write) */

    if (s.len != 8) {
        return 0;
    }

    memcpy(&x, s.data, 8);
    memcpy(&y, "__name__", 8);

    return x == y;
}


/*
 * Parses a Label message.  Senders write the name then the value, each
 * shorter than 128 bytes as a rule: that shape is read directly, anything
 * else by the general loop.
 */

static inline __attribute__((always_inline)) int
pg_rw_parse_label(const uint8_t *p, const uint8_t *end, pg_label_t *label)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *d;
    size_t          n, nl, vl;

    if (end - p >= 4 && p[0] == 0x0a && p[1] < 0x80) {
        nl = p[1];

        if ((size_t) (end - p) >= nl + 4 && p[2 + nl] == 0x12
            && p[3 + nl] < 0x80 && (size_t) (end - p) == nl + 4 + p[3 + nl])
        {
            vl = p[3 + nl];

            label->name.data = p + 2;
            label->name.len = nl;
            label->value.data = p + 4 + nl;
            label->value.len = vl;

            return 0;
        }
    }

    label->name.data = (const uint8_t *) "";
    label->name.len = 0;
    label->value = label->name;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1 || field == 2) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                return -1;
            }

            if (field == 1) {
                label->name.data = d;
                label->name.len = n;

            } else {
                label->value.data = d;
                label->value.len = n;
            }

            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            return -1;
        }
    }

    return field < 0 ? -1 : 0;
}


/* the decoder's state, shared by pg_rw.c (1.0) and pg_rw2.c (2.0) */
typedef struct {
    const uint8_t         *buf;
    size_t                 len;
    pg_allocator_t        *alloc;
    pg_rw_request_t       *req;
    pg_rw_series_pt        cb;
    void                  *ctx;
    size_t                 nseries_max;  /* bits in req->dropped */
    pg_str_t              *names;        /* scratch of the duplicate check */
    size_t                 nnames;
    const pg_rw_limits_t  *limits;       /* NULL: none */
    uint64_t               nexemplars;   /* so far, all series */
    uint64_t               resolved;     /* 2.0: label bytes so far */
} pg_rw_dec_t;


static inline void *
pg_rw_alloc(pg_allocator_t *a, size_t size)
{
    return a ? a->alloc(a->ctx, size) : NULL;
}


/* a Histogram (1.0 fields 1..16, 2.0 adds 17): wire types, packed runs */
int pg_rw_check_histogram(const uint8_t *p, const uint8_t *end, int v2);

/*
 * An Exemplar's wire format: an exemplar never makes its series invalid.
 * 2.0 (sym not NULL): its label refs are added to *nrefs, and the first
 * one past the table goes to *bad if that is still UINT64_MAX.
 */
int pg_rw_check_exemplar(const uint8_t *p, const uint8_t *end,
    const pg_rw_symtab_t *sym, uint64_t *nrefs, uint64_t *bad);

/*
 * A series read to its end: the checks that need all of its labels, then
 * counted as invalid (reason and detail: what was found before) or valid
 * and handed to the callback.
 */
pg_rw_reason_e pg_rw_series_end(pg_rw_dec_t *d, pg_rw_series_t *s,
    pg_rw_reason_e reason, char *detail, size_t size);

/* a series that is not well-formed: the request fails */
pg_rw_reason_e pg_rw_series_malformed(pg_rw_dec_t *d,
    const pg_rw_series_t *s, const uint8_t *at);

/* a request-level error */
pg_rw_reason_e pg_rw_request_error(pg_rw_dec_t *d, pg_rw_reason_e reason,
    size_t series, const uint8_t *at, const char *fmt, ...);

/* "label \"x\"" cut to fit, escaped */
void pg_rw_detail_name(char *buf, size_t size, const char *what,
    pg_str_t name);

pg_rw_reason_e pg_rw2_decode(pg_rw_dec_t *d);

/*
 * The limits on the label just read (the series' s->nlabels-th, or an
 * exemplar's n-th when exemplar is not 0) and on the exemplars
 * (pg_rw_exemplar_limits, its labels too); PG_RW_OK or PG_RW_OVER_LIMIT
 * with req->first set.
 */
pg_rw_reason_e pg_rw_label_limits(pg_rw_dec_t *d, const pg_rw_series_t *s,
    uint64_t n, const pg_label_t *l, int exemplar);
pg_rw_reason_e pg_rw_exemplar_limits(pg_rw_dec_t *d, const pg_rw_series_t *s,
    const uint8_t *p, const uint8_t *end);


/* what a series' decoding counts, cleared */
static inline void
pg_rw_series_clear(pg_rw_series_t *s)
{
    s->name.data = NULL;
    s->name.len = 0;
    s->nlabels = 0;
    s->nsamples = 0;
    s->nexemplars = 0;
    s->nhistograms = 0;
    s->unsorted = 0;
}


/*
 * A Sample: value, timestamp and, in 2.0 (start not NULL), the start
 * timestamp of 2.0-rc.4 (field 3, unknown to 1.0).
 */
static inline int
pg_rw_check_sample(const uint8_t *p, const uint8_t *end, int64_t *start)
{
    int64_t   field;
    unsigned  wt;
    uint64_t  v;

    /* the usual shape: value, then a timestamp */

    if (end - p >= 10 && p[0] == 0x09 && p[9] == 0x10) {
        p += 10;
        if (pg_pb_varint(&p, end, &v) != 0) {
            return -1;
        }
    }

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1) {
            if (wt != PG_PB_I64 || end - p < 8) {
                return -1;
            }
            p += 8;
            continue;
        }

        if (field == 2 || (field == 3 && start != NULL)) {
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return -1;
            }

            if (field == 3) {
                *start = (int64_t) v;
            }

            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            return -1;
        }
    }

    return field < 0 ? -1 : 0;
}


/*
 * pg_str_cmp() for label names, inline: names are short and the ones
 * next to each other in a set differ early, so a word at a time (its
 * bytes in big-endian order compare as the strings do) and then bytes
 * beat a call to memcmp().
 */
static inline int
pg_rw_label_cmp(pg_str_t a, pg_str_t b)
{
    size_t    n, i;
    uint64_t  x, y;

    n = a.len < b.len ? a.len : b.len;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&x, a.data + i, 8);
        memcpy(&y, b.data + i, 8);

        if (x != y) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
#endif
            return x < y ? -1 : 1;
        }
    }

    for ( /* void */ ; i < n; i++) {
        if (a.data[i] != b.data[i]) {
            return a.data[i] < b.data[i] ? -1 : 1;
        }
    }

    return (a.len > b.len) - (a.len < b.len);
}


/*
 * One label of a series, as Prometheus 3.5 checks it (after the 2.0 ref
 * checks): a name, valid UTF-8 (utf8: the caller's verdict on the name
 * and the value), not the name before it.  A name below the one before
 * marks the series unsorted: pg_rw_series_end() then looks for a name
 * twice.  prev: the name before.  PG_RW_OK, or the reason with detail
 * written.
 */
static inline pg_rw_reason_e
pg_rw_check_label(pg_rw_series_t *s, pg_str_t *prev, pg_str_t name, int utf8,
    char *detail, size_t size)
{
    int  cmp;

    if (name.len == 0) {
        snprintf(detail, size, "label %u: empty name", s->nlabels - 1);
        return PG_RW_BAD_LABEL_NAME;
    }

    if (!utf8) {
        snprintf(detail, size, "label %u is not valid UTF-8",
                 s->nlabels - 1);
        return PG_RW_BAD_UTF8;
    }

    if (s->nlabels > 1) {
        cmp = pg_rw_label_cmp(*prev, name);

        if (cmp >= 0) {
            if (cmp == 0) {
                pg_rw_detail_name(detail, size, "duplicate label name", name);
                return PG_RW_DUPLICATE_LABEL;
            }

            s->unsorted = 1;
        }
    }

    *prev = name;

    return PG_RW_OK;
}

#endif /* PG_RW_WIRE_H */
