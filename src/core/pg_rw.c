/*
 * Zero-copy validating scan of a remote-write 1.0 WriteRequest.
 *
 * The scan walks the protobuf wire format once, checks every field's wire
 * type against the schema in proto/, validates labels as Prometheus expects
 * them, counts what the request carries and hands each valid series to the
 * caller as a view into the buffer.  Unknown fields are skipped, as proto3
 * requires.
 */

#include "pg_rw.h"

#include <stdio.h>


#define PG_PB_VARINT   0
#define PG_PB_I64      1
#define PG_PB_LEN      2
#define PG_PB_I32      5


typedef struct {
    pg_rw_stats_t   *st;
    pg_rw_error_t   *err;
    const uint8_t   *base;
} pg_rw_scan_t;


static const char  *pg_rw_reasons[] = {
    "ok",
    "malformed",
    "missing_name",
    "invalid_label_name",
    "unsorted_labels",
    "duplicate_label",
    "invalid_utf8",
    "aborted"
};


const char *
pg_rw_reason_name(pg_rw_reason_e reason)
{
    if ((unsigned) reason >= PG_RW_NREASONS) {
        return "unknown";
    }

    return pg_rw_reasons[reason];
}


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

    if (pg_pb_varint(pp, end, &key) != 0) {
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
static int
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
        /* groups (3, 4) are not used by the schema and deprecated */
        return -1;
    }
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


/* label name characters: 1 first or later, 2 later only */
static const uint8_t  pg_rw_name_chars[256] = {
    ['0'] = 2, ['1'] = 2, ['2'] = 2, ['3'] = 2, ['4'] = 2,
    ['5'] = 2, ['6'] = 2, ['7'] = 2, ['8'] = 2, ['9'] = 2,
    ['_'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1
};


static inline int
pg_rw_label_name_valid(pg_str_t name)
{
    size_t  i;

    if (name.len == 0 || pg_rw_name_chars[name.data[0]] != 1) {
        return 0;
    }

    for (i = 1; i < name.len; i++) {
        if (pg_rw_name_chars[name.data[i]] == 0) {
            return 0;
        }
    }

    return 1;
}


/* ASCII is the common case: the full UTF-8 check only when it is not */
static inline int
pg_rw_utf8_valid(const uint8_t *p, size_t len)
{
    size_t    i;
    uint64_t  w, acc;

    acc = 0;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        acc |= w;
    }

    for ( /* void */ ; i < len; i++) {
        acc |= p[i];
    }

    if ((acc & 0x8080808080808080ULL) == 0) {
        return 1;
    }

    return pg_utf8_valid(p, len);
}


/*
 * Parses a Label message; 0 or a reason.  Senders write the name then the
 * value, each shorter than 128 bytes as a rule: that shape is read
 * directly, anything else by the general loop.
 */

static inline pg_rw_reason_e
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

            return PG_RW_OK;
        }
    }

    label->name.data = (const uint8_t *) "";
    label->name.len = 0;
    label->value = label->name;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1 || field == 2) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                return PG_RW_MALFORMED;
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
            return PG_RW_MALFORMED;
        }
    }

    return field < 0 ? PG_RW_MALFORMED : PG_RW_OK;
}


static inline pg_rw_reason_e
pg_rw_check_label(const pg_label_t *l)
{
    /* a valid name is ASCII: its UTF-8 check is only for the error */

    if (!pg_rw_label_name_valid(l->name)) {
        return pg_utf8_valid(l->name.data, l->name.len)
               ? PG_RW_BAD_LABEL_NAME : PG_RW_BAD_UTF8;
    }

    if (!pg_rw_utf8_valid(l->value.data, l->value.len)) {
        return PG_RW_BAD_UTF8;
    }

    return PG_RW_OK;
}


static pg_rw_reason_e
pg_rw_scan_sample(const uint8_t *p, const uint8_t *end)
{
    int64_t   field;
    unsigned  wt;
    uint64_t  v;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1) {
            if (wt != PG_PB_I64 || end - p < 8) {
                return PG_RW_MALFORMED;
            }
            p += 8;
            continue;
        }

        if (field == 2) {
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return PG_RW_MALFORMED;
            }
            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            return PG_RW_MALFORMED;
        }
    }

    return field < 0 ? PG_RW_MALFORMED : PG_RW_OK;
}


static pg_rw_reason_e
pg_rw_scan_exemplar(const uint8_t *p, const uint8_t *end, pg_label_t *bad)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d;
    size_t          n;
    pg_rw_reason_e  rc;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                return PG_RW_MALFORMED;
            }

            rc = pg_rw_parse_label(d, d + n, bad);
            if (rc == PG_RW_OK) {
                rc = pg_rw_check_label(bad);
            }

            if (rc != PG_RW_OK) {
                return rc;
            }

            break;

        case 2:
            if (wt != PG_PB_I64 || end - p < 8) {
                return PG_RW_MALFORMED;
            }
            p += 8;
            break;

        case 3:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return PG_RW_MALFORMED;
            }
            break;

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                return PG_RW_MALFORMED;
            }
        }
    }

    return field < 0 ? PG_RW_MALFORMED : PG_RW_OK;
}


/*
 * The wire type a Histogram field must have; repeated scalars may come
 * packed (LEN) or not.
 */
static int
pg_rw_histogram_wt_ok(int64_t field, unsigned wt)
{
    switch (field) {
    case 1: case 4: case 6: case 14: case 15:
        return wt == PG_PB_VARINT;
    case 2: case 3: case 5: case 7:
        return wt == PG_PB_I64;
    case 8: case 11:
        return wt == PG_PB_LEN;
    case 9: case 12:
        return wt == PG_PB_VARINT || wt == PG_PB_LEN;
    case 10: case 13:
        return wt == PG_PB_I64 || wt == PG_PB_LEN;
    default:
        return 1;
    }
}


static pg_rw_reason_e
pg_rw_scan_histogram(const uint8_t *p, const uint8_t *end)
{
    int64_t   field;
    unsigned  wt;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (!pg_rw_histogram_wt_ok(field, wt)) {
            return PG_RW_MALFORMED;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            return PG_RW_MALFORMED;
        }
    }

    return field < 0 ? PG_RW_MALFORMED : PG_RW_OK;
}


static pg_rw_reason_e
pg_rw_scan_metadata(const uint8_t *p, const uint8_t *end)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d;
    size_t          n;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return PG_RW_MALFORMED;
            }
            break;

        case 2: case 4: case 5:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                return PG_RW_MALFORMED;
            }
            if (!pg_utf8_valid(d, n)) {
                return PG_RW_BAD_UTF8;
            }
            break;

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                return PG_RW_MALFORMED;
            }
        }
    }

    return field < 0 ? PG_RW_MALFORMED : PG_RW_OK;
}


/* appends s to the message, escaped as Prometheus prints label values */
static char *
pg_rw_error_append(char *out, char *last, const uint8_t *s, size_t len)
{
    size_t   i;
    uint8_t  c;

    for (i = 0; i < len && out < last; i++) {
        c = s[i];

        if (c == '"' || c == '\\') {
            if (last - out < 2) {
                break;
            }
            *out++ = '\\';
            *out++ = c;

        } else if (c == '\n') {
            if (last - out < 2) {
                break;
            }
            *out++ = '\\';
            *out++ = 'n';

        } else if (c < 0x20 || c >= 0x7f) {
            if (last - out < 4) {
                break;
            }
            out += snprintf(out, last - out + 1, "\\x%02x", c);

        } else {
            *out++ = c;
        }
    }

    return out;
}


/*
 * "series 3 {__name__="up", job="x"}: reason"; the label set is cut to fit,
 * and rendered only as far as it is well-formed.
 */
static void
pg_rw_error_set(pg_rw_scan_t *sc, pg_rw_reason_e reason, size_t series,
    const uint8_t *p, const uint8_t *end, const char *detail)
{
    pg_rw_error_t  *err;
    char           *out, *last;
    int64_t         field;
    unsigned        wt;
    const uint8_t  *d;
    size_t          n;
    pg_label_t      l;
    int             first;

    err = sc->err;

    if (err == NULL) {
        return;
    }

    err->reason = reason;
    err->series = series;
    err->offset = (size_t) (p - sc->base);

    out = err->message;
    last = err->message + sizeof(err->message) - 1;

    out += snprintf(out, last - out + 1, "series %zu {", series);
    first = 1;

    while (last - out > 64 && (field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field != 1 || wt != PG_PB_LEN) {
            if (pg_pb_skip(&p, end, wt) != 0) {
                break;
            }
            continue;
        }

        if (pg_pb_len(&p, end, &d, &n) != 0
            || pg_rw_parse_label(d, d + n, &l) != PG_RW_OK)
        {
            break;
        }

        if (!first) {
            *out++ = ',';
            *out++ = ' ';
        }

        first = 0;

        out = pg_rw_error_append(out, last - 40, l.name.data, l.name.len);
        *out++ = '=';
        *out++ = '"';
        out = pg_rw_error_append(out, last - 40, l.value.data, l.value.len);
        *out++ = '"';
    }

    if (last - out > 3) {
        *out++ = '}';
        *out++ = ':';
        *out++ = ' ';
    }

    snprintf(out, last - out + 1, "%s", detail);
}


static pg_rw_reason_e
pg_rw_scan_series(pg_rw_scan_t *sc, pg_rw_series_t *s)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *d;
    size_t          n;
    pg_label_t      l, prev, bad;
    pg_rw_reason_e  rc;
    char            detail[200];
    int             cmp;

    p = s->data;
    end = s->data + s->len;

    s->name.data = NULL;
    s->name.len = 0;
    s->nlabels = 0;
    s->nsamples = 0;
    s->nexemplars = 0;
    s->nhistograms = 0;

    prev.name.len = 0;
    prev.name.data = NULL;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field > 4) {
            if (pg_pb_skip(&p, end, wt) != 0) {
                goto malformed;
            }
            continue;
        }

        if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
            goto malformed;
        }

        switch (field) {

        case 1:
            rc = pg_rw_parse_label(d, d + n, &l);
            if (rc != PG_RW_OK) {
                goto malformed;
            }

            rc = pg_rw_check_label(&l);
            if (rc == PG_RW_BAD_UTF8) {
                snprintf(detail, sizeof(detail),
                         "label %u is not valid UTF-8", s->nlabels);
                goto invalid;
            }

            if (rc != PG_RW_OK) {
                snprintf(detail, sizeof(detail), "invalid label name \"");
                pg_rw_error_append(detail + strlen(detail),
                                   detail + sizeof(detail) - 2,
                                   l.name.data, l.name.len)[0] = '\0';
                strcat(detail, "\"");
                goto invalid;
            }

            if (s->nlabels > 0) {
                cmp = pg_str_cmp(prev.name, l.name);

                if (cmp >= 0) {
                    rc = cmp == 0 ? PG_RW_DUPLICATE_LABEL
                                  : PG_RW_UNSORTED_LABELS;
                    snprintf(detail, sizeof(detail), "%s: \"%.*s\" %s \"%.*s\"",
                             cmp == 0 ? "duplicate label name"
                                      : "label names not sorted",
                             (int) (l.name.len > 60 ? 60 : l.name.len),
                             l.name.data,
                             cmp == 0 ? "repeats" : "after",
                             (int) (prev.name.len > 60 ? 60 : prev.name.len),
                             prev.name.data);
                    goto invalid;
                }
            }

            if (l.name.len == 8 && memcmp(l.name.data, "__name__", 8) == 0) {
                s->name = l.value;
            }

            prev = l;
            s->nlabels++;
            break;

        case 2:
            if (pg_rw_scan_sample(d, d + n) != PG_RW_OK) {
                goto malformed;
            }
            s->nsamples++;
            break;

        case 3:
            rc = pg_rw_scan_exemplar(d, d + n, &bad);
            if (rc == PG_RW_MALFORMED) {
                goto malformed;
            }

            if (rc != PG_RW_OK) {
                snprintf(detail, sizeof(detail), "exemplar %u: %s",
                         s->nexemplars,
                         rc == PG_RW_BAD_UTF8 ? "label is not valid UTF-8"
                                              : "invalid label name");
                goto invalid;
            }

            s->nexemplars++;
            break;

        default: /* 4 */
            if (pg_rw_scan_histogram(d, d + n) != PG_RW_OK) {
                goto malformed;
            }
            s->nhistograms++;
            break;
        }
    }

    if (field < 0) {
        goto malformed;
    }

    if (s->name.len == 0) {
        rc = PG_RW_NO_NAME;
        snprintf(detail, sizeof(detail), "no metric name (__name__ label)");
        goto invalid;
    }

    return PG_RW_OK;

malformed:

    rc = PG_RW_MALFORMED;
    snprintf(detail, sizeof(detail),
             "malformed protobuf at byte %zu", (size_t) (p - sc->base));

invalid:

    pg_rw_error_set(sc, rc, s->index, s->data, s->data + s->len, detail);

    return rc;
}


pg_rw_reason_e
pg_rw_scan(const uint8_t *buf, size_t len, pg_rw_stats_t *st,
    pg_rw_error_t *err, pg_rw_series_pt cb, void *ctx)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *d;
    size_t          n;
    pg_rw_scan_t    sc;
    pg_rw_series_t  s;
    pg_rw_reason_e  rc;

    memset(st, 0, sizeof(pg_rw_stats_t));

    sc.st = st;
    sc.err = err;
    sc.base = buf;

    p = buf;
    end = buf + len;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1 || field == 3) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                goto malformed;
            }

            if (field == 3) {
                rc = pg_rw_scan_metadata(d, d + n);
                if (rc != PG_RW_OK) {
                    if (err) {
                        err->reason = rc;
                        err->series = (size_t) -1;
                        err->offset = (size_t) (d - buf);
                        snprintf(err->message, sizeof(err->message),
                                 "metadata %llu: %s",
                                 (unsigned long long) st->metadata,
                                 rc == PG_RW_BAD_UTF8
                                 ? "text is not valid UTF-8"
                                 : "malformed protobuf");
                    }
                    return rc;
                }

                st->metadata++;
                continue;
            }

            s.data = d;
            s.len = n;
            s.index = st->series;

            rc = pg_rw_scan_series(&sc, &s);
            if (rc != PG_RW_OK) {
                return rc;
            }

            st->series++;
            st->samples += s.nsamples;
            st->exemplars += s.nexemplars;
            st->histograms += s.nhistograms;

            if (s.nsamples + s.nexemplars + s.nhistograms == 0) {
                st->empty_series++;
            }

            if (cb && cb(ctx, &s) != 0) {
                if (err) {
                    err->reason = PG_RW_ABORTED;
                    err->series = s.index;
                    err->offset = (size_t) (d - buf);
                    snprintf(err->message, sizeof(err->message),
                             "series %zu: processing stopped", s.index);
                }
                return PG_RW_ABORTED;
            }

            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            goto malformed;
        }
    }

    if (field == 0) {
        return PG_RW_OK;
    }

malformed:

    if (err) {
        err->reason = PG_RW_MALFORMED;
        err->series = st->series;
        err->offset = (size_t) (p - buf);
        snprintf(err->message, sizeof(err->message),
                 "malformed protobuf WriteRequest at byte %zu (after %llu "
                 "series)", (size_t) (p - buf),
                 (unsigned long long) st->series);
    }

    return PG_RW_MALFORMED;
}


void
pg_rw_series_labels(const pg_rw_series_t *s, pg_pb_iter_t *it)
{
    it->p = s->data;
    it->end = s->data + s->len;
}


void
pg_rw_series_exemplars(const pg_rw_series_t *s, pg_pb_iter_t *it)
{
    it->p = s->data;
    it->end = s->data + s->len;
}


/*
 * Both iterators walk a TimeSeries (or an Exemplar, for its labels) and
 * stop at fields of their kind; the scan has validated the bytes.
 */
int
pg_rw_next_label(pg_pb_iter_t *it, pg_label_t *label)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *d;
    size_t          n;

    while ((field = pg_pb_key(&it->p, it->end, &wt)) > 0) {

        if (field == 1 && wt == PG_PB_LEN) {
            if (pg_pb_len(&it->p, it->end, &d, &n) != 0
                || pg_rw_parse_label(d, d + n, label) != PG_RW_OK)
            {
                break;
            }
            return 1;
        }

        if (pg_pb_skip(&it->p, it->end, wt) != 0) {
            break;
        }
    }

    it->p = it->end;
    return 0;
}


int
pg_rw_next_exemplar(pg_pb_iter_t *it, pg_exemplar_t *ex)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *d, *p, *end;
    size_t          n;
    uint64_t        v;

    while ((field = pg_pb_key(&it->p, it->end, &wt)) > 0) {

        if (field != 3 || wt != PG_PB_LEN) {
            if (pg_pb_skip(&it->p, it->end, wt) != 0) {
                break;
            }
            continue;
        }

        if (pg_pb_len(&it->p, it->end, &d, &n) != 0) {
            break;
        }

        ex->labels.p = d;
        ex->labels.end = d + n;
        ex->value = 0;
        ex->timestamp = 0;

        p = d;
        end = d + n;

        while ((field = pg_pb_key(&p, end, &wt)) > 0) {
            if (field == 2 && wt == PG_PB_I64 && end - p >= 8) {
                ex->value = pg_pb_double(p);
                p += 8;

            } else if (field == 3 && wt == PG_PB_VARINT
                       && pg_pb_varint(&p, end, &v) == 0)
            {
                ex->timestamp = (int64_t) v;

            } else if (pg_pb_skip(&p, end, wt) != 0) {
                break;
            }
        }

        return 1;
    }

    it->p = it->end;
    return 0;
}


uint64_t
pg_rw_count_samples(const uint8_t *buf, size_t len)
{
    int64_t         field, f2;
    unsigned        wt, wt2;
    const uint8_t  *p, *end, *d, *q, *d2;
    size_t          n, n2;
    uint64_t        samples;

    samples = 0;
    p = buf;
    end = buf + len;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field != 1 || wt != PG_PB_LEN) {
            if (pg_pb_skip(&p, end, wt) != 0) {
                break;
            }
            continue;
        }

        if (pg_pb_len(&p, end, &d, &n) != 0) {
            break;
        }

        q = d;

        while ((f2 = pg_pb_key(&q, d + n, &wt2)) > 0) {
            if (f2 == 2 && wt2 == PG_PB_LEN) {
                if (pg_pb_len(&q, d + n, &d2, &n2) != 0) {
                    break;
                }
                samples++;
                continue;
            }

            if (pg_pb_skip(&q, d + n, wt2) != 0) {
                break;
            }
        }
    }

    return samples;
}
