/*
 * Zero-copy validating decoder of remote-write requests: 1.0 here, 2.0 in
 * pg_rw2.c, and what both share (the checks of exemplars, histograms and
 * whole series, the invalid-series bookkeeping, the messages, the
 * iterators; the checks of samples and labels are in pg_rw_wire.h).
 *
 * The decoder walks the protobuf wire format once, checks every field's
 * wire type against the schema in proto/, validates each series as
 * Prometheus 3.5's receiver does (storage/remote/write_handler.go: the
 * labels, sorted, must hold a non-empty __name__, non-empty names, valid
 * UTF-8 everywhere and no name twice), counts what the request carries and
 * hands each valid series to the caller as a view into the buffer.  An
 * invalid series is counted, marked in a bitmap and skipped; only a
 * malformed message fails the request.  Unknown fields are skipped, as
 * proto3 requires.  Exemplars never make a series invalid: Prometheus
 * drops a bad exemplar, not its series.
 */

#include "pg_rw_wire.h"

#include <stdarg.h>
#include <stdlib.h>


static const char  *pg_rw_reasons[] = {
    "ok",
    "malformed",
    "missing_name",
    "invalid_label_name",
    "duplicate_label",
    "invalid_utf8",
    "invalid_symbol_ref",
    "invalid_symbols",
    "no_memory",
    "aborted",
    "over_limit"
};


const char *
pg_rw_reason_name(pg_rw_reason_e reason)
{
    if ((unsigned) reason >= PG_RW_NREASONS) {
        return "unknown";
    }

    return pg_rw_reasons[reason];
}


/* ------------------------------------------------------ shared checks */


/* name and value are valid UTF-8 (a label's name may be any of it now) */
static inline int
pg_rw_label_utf8(const pg_label_t *l)
{
    /*
     * In the direct shape the value follows the name after its one-byte
     * key and length, both ASCII: one pass covers the two.
     */

    if (l->value.data == l->name.data + l->name.len + 2) {
        if (pg_rw_ascii(l->name.data, l->name.len + 2 + l->value.len)) {
            return 1;
        }

    } else if (pg_rw_ascii(l->name.data, l->name.len)
               && pg_rw_ascii(l->value.data, l->value.len))
    {
        return 1;
    }

    return pg_utf8_valid(l->name.data, l->name.len)
           && pg_utf8_valid(l->value.data, l->value.len);
}


static int
pg_rw_check_spans(const uint8_t *p, const uint8_t *end)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1 || field == 2) {
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return -1;
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
 * Every field of a Histogram with its wire type, the insides of its spans
 * and of its packed runs too: a translation copies histograms, and what it
 * writes must decode wherever it goes.
 */
int
pg_rw_check_histogram(const uint8_t *p, const uint8_t *end, int v2)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d;
    size_t          n;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1: case 4: case 6: case 14: case 15:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return -1;
            }
            break;

        case 2: case 3: case 5: case 7:
            if (wt != PG_PB_I64 || end - p < 8) {
                return -1;
            }
            p += 8;
            break;

        case 8: case 11:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                || pg_rw_check_spans(d, d + n) != 0)
            {
                return -1;
            }
            break;

        case 9: case 12:
            if (wt == PG_PB_VARINT) {
                if (pg_pb_varint(&p, end, &v) != 0) {
                    return -1;
                }

            } else if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                       || pg_pb_packed_varints(d, d + n, NULL) != 0)
            {
                return -1;
            }
            break;

        case 10: case 13: case 16:
            if (wt == PG_PB_I64) {
                if (end - p < 8) {
                    return -1;
                }
                p += 8;

            } else if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                       || n % 8 != 0)
            {
                return -1;
            }
            break;

        case 17:
            if (v2) {
                if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                    return -1;
                }
                break;
            }

            /* fall through */

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                return -1;
            }
        }
    }

    return field < 0 ? -1 : 0;
}


int
pg_rw_check_exemplar(const uint8_t *p, const uint8_t *end,
    const pg_rw_symtab_t *sym, uint64_t *nrefs, uint64_t *bad)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d, *q;
    size_t          n;
    pg_label_t      l;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1:
            if (sym == NULL) {
                if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                    || pg_rw_parse_label(d, d + n, &l) != 0)
                {
                    return -1;
                }
                break;
            }

            if (pg_pb_varint_run(&p, end, wt, &d, &n) != 0) {
                return -1;
            }

            for (q = d; q < d + n; (*nrefs)++) {
                if (pg_pb_varint(&q, d + n, &v) != 0) {
                    return -1;
                }

                /* a uint32 field: Go's protobuf keeps the low bits */
                if ((uint32_t) v >= sym->n && *bad == UINT64_MAX) {
                    *bad = (uint32_t) v;
                }
            }

            break;

        case 2:
            if (wt != PG_PB_I64 || end - p < 8) {
                return -1;
            }
            p += 8;
            break;

        case 3:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return -1;
            }
            break;

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                return -1;
            }
        }
    }

    return field < 0 ? -1 : 0;
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

    *out = '\0';

    return out;
}


void
pg_rw_detail_name(char *buf, size_t size, const char *what, pg_str_t name)
{
    char  *out, *last;

    out = buf + snprintf(buf, size, "%s \"", what);
    last = buf + size - 2;

    if (out < last) {
        out = pg_rw_error_append(out, last, name.data,
                                 name.len > 64 ? 64 : name.len);
        *out++ = '"';
        *out = '\0';
    }
}


/*
 * "series 3 {__name__="up", job="x"}: reason"; the label set is cut to
 * fit, and rendered only as far as it is well-formed.
 */
static void
pg_rw_error_series(pg_rw_dec_t *d, pg_rw_reason_e reason,
    const pg_rw_series_t *s, const char *detail)
{
    pg_rw_error_t  *err;
    char           *out, *last;
    pg_label_t      l;
    pg_pb_iter_t    it;
    int             first;

    err = &d->req->first;

    err->reason = reason;
    err->series = s->index;
    err->offset = (size_t) (s->data - d->buf);

    out = err->message;
    last = err->message + sizeof(err->message) - 1;

    out += snprintf(out, last - out + 1, "series %zu {", s->index);
    first = 1;

    pg_rw_series_labels(s, &it);

    while (last - out > 64 && pg_rw_next_label(&it, &l)) {

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


static int
pg_rw_mark(pg_rw_dec_t *d, uint8_t **map, size_t nbits, size_t i)
{
    size_t  size;

    if (*map == NULL) {
        size = nbits / 8 + 1;

        *map = pg_rw_alloc(d->alloc, size);
        if (*map == NULL) {
            return -1;
        }

        memset(*map, 0, size);
    }

    (*map)[i >> 3] |= (uint8_t) (1u << (i & 7));

    return 0;
}


/* an invalid series: counted, marked, the first one described */
static pg_rw_reason_e
pg_rw_series_invalid(pg_rw_dec_t *d, const pg_rw_series_t *s,
    pg_rw_reason_e reason, const char *detail)
{
    pg_rw_request_t  *req;

    req = d->req;

    if (pg_rw_mark(d, &req->dropped, d->nseries_max, s->index) != 0) {
        return pg_rw_request_error(d, PG_RW_NOMEM, s->index, s->data,
                                   "series %zu: out of memory", s->index);
    }

    req->invalid_series++;
    req->invalid_samples += (uint64_t) s->nsamples + s->nhistograms;
    req->invalid_exemplars += s->nexemplars;
    req->invalid[reason]++;

    if (req->first.reason == PG_RW_OK) {
        pg_rw_error_series(d, reason, s, detail);
    }

    return PG_RW_OK;
}


/* a valid series: counted, handed to the callback */
static pg_rw_reason_e
pg_rw_series_valid(pg_rw_dec_t *d, const pg_rw_series_t *s)
{
    pg_rw_stats_t  *st;

    st = &d->req->stats;

    if (s->version == PG_RW_V2
        && (s->metadata_type != 0 || s->help.len || s->unit.len))
    {
        st->metadata++;
    }

    st->series++;
    st->samples += s->nsamples;
    st->exemplars += s->nexemplars;
    st->histograms += s->nhistograms;

    if (s->nsamples + s->nexemplars + s->nhistograms == 0) {
        st->empty_series++;
    }

    if (d->cb && d->cb(d->ctx, s) != 0) {
        return pg_rw_request_error(d, PG_RW_ABORTED, s->index, s->data,
                                   "series %zu: processing stopped",
                                   s->index);
    }

    return PG_RW_OK;
}


pg_rw_reason_e
pg_rw_request_error(pg_rw_dec_t *d, pg_rw_reason_e reason, size_t series,
    const uint8_t *at, const char *fmt, ...)
{
    va_list         args;
    pg_rw_error_t  *err;

    err = &d->req->first;

    err->reason = reason;
    err->series = series;
    err->offset = (size_t) (at - d->buf);

    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);

    return reason;
}


static int
pg_rw_name_cmp(const void *a, const void *b)
{
    return pg_str_cmp(*(const pg_str_t *) a, *(const pg_str_t *) b);
}


/*
 * Only for labels that came out of order (Prometheus sorts them, then
 * refuses a name twice): their names sorted in scratch memory, compared
 * as neighbours.  Up to 64 names on the stack, by insertion; more in
 * memory from the allocator, reused from series to series.
 */
static int
pg_rw_find_duplicate(pg_rw_dec_t *d, const pg_rw_series_t *s, pg_str_t *dup)
{
    size_t        n, i, j, size;
    pg_str_t      local[64], *names, t;
    pg_label_t    l;
    pg_pb_iter_t  it;

    if (s->nlabels <= 64) {
        names = local;

    } else {
        if (d->nnames < s->nlabels) {
            size = (size_t) s->nlabels * 2;

            d->names = pg_rw_alloc(d->alloc, size * sizeof(pg_str_t));
            if (d->names == NULL) {
                d->nnames = 0;
                return -1;
            }

            d->nnames = size;
        }

        names = d->names;
    }

    n = 0;
    pg_rw_series_labels(s, &it);

    while (n < s->nlabels && pg_rw_next_label(&it, &l)) {
        names[n++] = l.name;
    }

    if (n > 64) {
        qsort(names, n, sizeof(pg_str_t), pg_rw_name_cmp);

    } else {
        for (i = 1; i < n; i++) {
            t = names[i];

            for (j = i; j > 0 && pg_str_cmp(names[j - 1], t) > 0; j--) {
                names[j] = names[j - 1];
            }

            names[j] = t;
        }
    }

    for (i = 1; i < n; i++) {
        if (pg_str_eq(names[i - 1], names[i])) {
            *dup = names[i];
            return 1;
        }
    }

    return 0;
}


pg_rw_reason_e
pg_rw_series_end(pg_rw_dec_t *d, pg_rw_series_t *s, pg_rw_reason_e reason,
    char *detail, size_t size)
{
    pg_str_t  dup;

    if (reason == PG_RW_OK && s->name.len == 0) {
        reason = PG_RW_NO_NAME;
        snprintf(detail, size, "%s",
                 s->name.data ? "empty metric name (__name__ label)"
                              : "no metric name (__name__ label)");
    }

    if (reason == PG_RW_OK && s->unsorted) {
        switch (pg_rw_find_duplicate(d, s, &dup)) {
        case 0:
            break;
        case 1:
            reason = PG_RW_DUPLICATE_LABEL;
            pg_rw_detail_name(detail, size, "duplicate label name", dup);
            break;
        default:
            return pg_rw_request_error(d, PG_RW_NOMEM, s->index, s->data,
                                       "series %zu: out of memory", s->index);
        }
    }

    if (reason != PG_RW_OK) {
        return pg_rw_series_invalid(d, s, reason, detail);
    }

    return pg_rw_series_valid(d, s);
}


pg_rw_reason_e
pg_rw_series_malformed(pg_rw_dec_t *d, const pg_rw_series_t *s,
    const uint8_t *at)
{
    return pg_rw_request_error(d, PG_RW_MALFORMED, s->index, at,
                               "malformed protobuf at byte %zu (series %zu)",
                               (size_t) (at - d->buf), s->index);
}


/* ------------------------------------------------------------ limits */


static pg_rw_reason_e
pg_rw_over(pg_rw_dec_t *d, const pg_rw_series_t *s, pg_rw_limit_e which,
    uint64_t limit, const char *what, uint64_t value)
{
    d->req->over = which;
    d->req->over_limit = limit;

    return pg_rw_request_error(d, PG_RW_OVER_LIMIT, s->index, s->data,
                               "series %zu: %s %llu, above the limit of %llu",
                               s->index, what, (unsigned long long) value,
                               (unsigned long long) limit);
}


pg_rw_reason_e
pg_rw_label_limits(pg_rw_dec_t *d, const pg_rw_series_t *s, uint64_t n,
    const pg_label_t *l, int exemplar)
{
    size_t                 bytes;
    const pg_rw_limits_t  *lim;

    lim = d->limits;
    bytes = l->name.len + l->value.len;

    if (lim->labels && n > lim->labels) {
        return pg_rw_over(d, s, PG_RW_LIMIT_LABELS, lim->labels,
                          exemplar ? "labels of an exemplar:"
                                   : "labels of the series:", n);
    }

    if (lim->label_bytes && bytes > lim->label_bytes) {
        return pg_rw_over(d, s, PG_RW_LIMIT_LABEL_BYTES, lim->label_bytes,
                          exemplar ? "bytes of an exemplar's label:"
                                   : "bytes of a label (name and value):",
                          bytes);
    }

    if (s->version == PG_RW_V2 && lim->resolved) {
        d->resolved += bytes;

        if (d->resolved > lim->resolved) {
            return pg_rw_over(d, s, PG_RW_LIMIT_RESOLVED, lim->resolved,
                              "bytes of labels with their symbols resolved "
                              "so far:", d->resolved);
        }
    }

    return PG_RW_OK;
}


/*
 * An exemplar costs its consumers a copy even when it is empty (2 bytes on
 * the wire): the count bounds that; its labels are bounded as a series'.
 * The exemplar's wire format has been checked.
 */
pg_rw_reason_e
pg_rw_exemplar_limits(pg_rw_dec_t *d, const pg_rw_series_t *s,
    const uint8_t *p, const uint8_t *end)
{
    uint64_t               n;
    pg_label_t             l;
    pg_pb_iter_t           it;
    pg_rw_reason_e         rc;
    const pg_rw_limits_t  *lim;

    lim = d->limits;

    d->nexemplars++;

    if (lim->exemplars && d->nexemplars > lim->exemplars) {
        return pg_rw_over(d, s, PG_RW_LIMIT_EXEMPLARS, lim->exemplars,
                          "exemplars in the request:", d->nexemplars);
    }

    if (lim->labels == 0 && lim->label_bytes == 0
        && (s->version != PG_RW_V2 || lim->resolved == 0))
    {
        return PG_RW_OK;
    }

    it.p = p;
    it.end = end;
    it.pp = NULL;
    it.pend = NULL;
    it.sym = s->version == PG_RW_V2 ? s->symtab : NULL;

    for (n = 1; pg_rw_next_label(&it, &l); n++) {
        rc = pg_rw_label_limits(d, s, n, &l, 1);
        if (rc != PG_RW_OK) {
            return rc;
        }
    }

    return PG_RW_OK;
}


/* -------------------------------------------------------- 1.0 decoding */


/*
 * -1 malformed, 0 valid, 1 text that is not UTF-8.  A field met twice
 * keeps its last value (protobuf's rule): only that one is checked.
 */
static int
pg_rw1_check_metadata(const uint8_t *p, const uint8_t *end)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d;
    size_t          n, i;
    pg_str_t        text[3];

    memset(text, 0, sizeof(text));

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                return -1;
            }
            break;

        case 2: case 4: case 5:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                return -1;
            }

            i = field == 2 ? 0 : field - 3;
            text[i].data = d;
            text[i].len = n;
            break;

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                return -1;
            }
        }
    }

    if (field < 0) {
        return -1;
    }

    for (i = 0; i < 3; i++) {
        if (!pg_rw_utf8_valid(text[i].data, text[i].len)) {
            return 1;
        }
    }

    return 0;
}


/*
 * The labels a sender writes first, one after another: the run of field 1
 * entries (key byte 0x0a) at the start of a TimeSeries.  Returns its end.
 * Only the framing is read, to learn where the run ends.
 */
static const uint8_t *
pg_rw1_label_run(const uint8_t *p, const uint8_t *end)
{
    const uint8_t  *q;
    uint64_t        len;

    while (p < end && *p == 0x0a) {
        q = p + 1;

        if (pg_pb_varint(&q, end, &len) != 0 || len > (uint64_t) (end - q)) {
            break;
        }

        p = q + len;
    }

    return p;
}


/*
 * Whether the series' latest label (bytes: its name and value) is over a
 * limit: 1.0 has only these two per label, tested inline;
 * pg_rw_label_limits() then reports it.
 */
static inline int
pg_rw1_over(const pg_rw_dec_t *dec, const pg_rw_series_t *s, size_t bytes)
{
    const pg_rw_limits_t  *lim;

    lim = dec->limits;

    return lim != NULL
           && ((lim->labels && s->nlabels > lim->labels)
               || (lim->label_bytes && bytes > lim->label_bytes));
}


static pg_rw_reason_e
pg_rw1_series(pg_rw_dec_t *dec, pg_rw_series_t *s)
{
    int             utf8;
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *d, *ascii;
    size_t          n;
    pg_label_t      l;
    pg_str_t        prev;
    pg_rw_reason_e  reason;
    char            detail[200];

    p = s->data;
    end = s->data + s->len;

    pg_rw_series_clear(s);

    prev.len = 0;
    prev.data = NULL;

    reason = PG_RW_OK;

    /*
     * The labels up front, the usual place, are checked for ASCII in one
     * pass, their framing included (a length byte above 0x7f makes it
     * fail, harmlessly): every label inside is then valid UTF-8, and
     * only labels outside, if any, are checked one by one.
     */

    ascii = pg_rw1_label_run(p, end);

    if (!pg_rw_ascii(p, ascii - p)) {
        ascii = p;
    }

    /*
     * Inside that ASCII run every length is one byte and in bounds: the
     * labels in the direct shape (name, then value, both present) are
     * read here without the general loop; the first in another shape
     * leaves the rest to it.
     */

    while (p < ascii) {
        n = p[1];
        d = p + 2;

        if (n < 4 || d[0] != 0x0a || (size_t) d[1] + 4 > n
            || d[2 + d[1]] != 0x12 || (size_t) d[3 + d[1]] != n - 4 - d[1])
        {
            break;
        }

        l.name.data = d + 2;
        l.name.len = d[1];
        l.value.data = d + 4 + l.name.len;
        l.value.len = n - 4 - l.name.len;

        s->nlabels++;

        if (pg_rw1_over(dec, s, n - 4)
            && pg_rw_label_limits(dec, s, s->nlabels, &l, 0) != PG_RW_OK)
        {
            return PG_RW_OVER_LIMIT;
        }

        if (reason == PG_RW_OK) {
            reason = pg_rw_check_label(s, &prev, l.name, 1, detail,
                                       sizeof(detail));

            if (reason == PG_RW_OK && pg_rw_is_name(l.name)) {
                s->name = l.value;
            }
        }

        p = d + n;
    }

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
            if (pg_rw_parse_label(d, d + n, &l) != 0) {
                goto malformed;
            }

            s->nlabels++;

            if (pg_rw1_over(dec, s, l.name.len + l.value.len)
                && pg_rw_label_limits(dec, s, s->nlabels, &l, 0) != PG_RW_OK)
            {
                return PG_RW_OVER_LIMIT;
            }

            if (reason != PG_RW_OK) {
                break;
            }

            utf8 = d + n <= ascii || pg_rw_label_utf8(&l);

            reason = pg_rw_check_label(s, &prev, l.name, utf8, detail,
                                       sizeof(detail));

            if (reason == PG_RW_OK && pg_rw_is_name(l.name)) {
                s->name = l.value;
            }

            break;

        case 2:
            if (pg_rw_check_sample(d, d + n, NULL) != 0) {
                goto malformed;
            }
            s->nsamples++;
            break;

        case 3:
            if (pg_rw_check_exemplar(d, d + n, NULL, NULL, NULL) != 0) {
                goto malformed;
            }

            if (dec->limits
                && pg_rw_exemplar_limits(dec, s, d, d + n) != PG_RW_OK)
            {
                return PG_RW_OVER_LIMIT;
            }

            s->nexemplars++;
            break;

        default: /* 4 */
            if (pg_rw_check_histogram(d, d + n, 0) != 0) {
                goto malformed;
            }
            s->nhistograms++;
            break;
        }
    }

    if (field < 0) {
        goto malformed;
    }

    return pg_rw_series_end(dec, s, reason, detail, sizeof(detail));

malformed:

    return pg_rw_series_malformed(dec, s, p);
}


static pg_rw_reason_e
pg_rw1_decode(pg_rw_dec_t *dec)
{
    int64_t           field;
    unsigned          wt;
    const uint8_t    *p, *end, *d;
    size_t            n;
    int               rc;
    pg_rw_series_t    s;
    pg_rw_reason_e    reason;
    pg_rw_request_t  *req;

    req = dec->req;

    /* a TimeSeries or MetricMetadata field takes 2 bytes at least */
    dec->nseries_max = dec->len / 2;

    memset(&s, 0, sizeof(pg_rw_series_t));
    s.version = PG_RW_V1;

    p = dec->buf;
    end = dec->buf + dec->len;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 1) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                goto malformed;
            }

            s.data = d;
            s.len = n;
            s.index = req->nseries_total++;

            reason = pg_rw1_series(dec, &s);
            if (reason != PG_RW_OK) {
                return reason;
            }

            continue;
        }

        if (field == 3) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                goto malformed;
            }

            rc = pg_rw1_check_metadata(d, d + n);

            if (rc < 0) {
                return pg_rw_request_error(dec, PG_RW_MALFORMED, (size_t) -1,
                                           d, "metadata %zu: malformed "
                                           "protobuf", req->nmetadata_total);
            }

            if (rc > 0) {
                if (pg_rw_mark(dec, &req->dropped_metadata, dec->nseries_max,
                               req->nmetadata_total)
                    != 0)
                {
                    return pg_rw_request_error(dec, PG_RW_NOMEM, (size_t) -1,
                                               d, "out of memory");
                }

                req->invalid_metadata++;
                req->invalid[PG_RW_BAD_UTF8]++;

                if (req->first.reason == PG_RW_OK) {
                    pg_rw_request_error(dec, PG_RW_BAD_UTF8, (size_t) -1, d,
                                        "metadata %zu: text is not valid "
                                        "UTF-8", req->nmetadata_total);
                }

            } else {
                req->stats.metadata++;
            }

            req->nmetadata_total++;
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

    return pg_rw_request_error(dec, PG_RW_MALFORMED, req->nseries_total, p,
                               "malformed protobuf WriteRequest at byte %zu "
                               "(after %zu series)", (size_t) (p - dec->buf),
                               req->nseries_total);
}


pg_rw_reason_e
pg_rw_decode(const uint8_t *buf, size_t len, pg_rw_version_e version,
    pg_allocator_t *alloc, pg_rw_request_t *req, pg_rw_series_pt cb,
    void *ctx)
{
    return pg_rw_decode_limited(buf, len, version, NULL, alloc, req, cb,
                                ctx);
}


pg_rw_reason_e
pg_rw_decode_limited(const uint8_t *buf, size_t len, pg_rw_version_e version,
    const pg_rw_limits_t *limits, pg_allocator_t *alloc, pg_rw_request_t *req,
    pg_rw_series_pt cb, void *ctx)
{
    pg_rw_dec_t  dec;

    memset(req, 0, sizeof(pg_rw_request_t));
    req->version = version;

    dec.buf = buf;
    dec.len = len;
    dec.alloc = alloc;
    dec.req = req;
    dec.cb = cb;
    dec.ctx = ctx;
    dec.nseries_max = 0;
    dec.names = NULL;
    dec.nnames = 0;
    dec.limits = limits;
    dec.nexemplars = 0;
    dec.resolved = 0;

    switch (version) {

    case PG_RW_V1:
        return pg_rw1_decode(&dec);

    case PG_RW_V2:
        return pg_rw2_decode(&dec);

    default:
        return pg_rw_request_error(&dec, PG_RW_MALFORMED, 0, buf,
                                   "unknown remote-write version %d",
                                   (int) version);
    }
}


/* -------------------------------------------------------- iteration */


void
pg_rw_series_labels(const pg_rw_series_t *s, pg_pb_iter_t *it)
{
    it->p = s->data;
    it->end = s->data + s->len;
    it->pp = NULL;
    it->pend = NULL;
    it->sym = s->version == PG_RW_V2 ? s->symtab : NULL;
}


void
pg_rw_series_exemplars(const pg_rw_series_t *s, pg_pb_iter_t *it)
{
    pg_rw_series_labels(s, it);
}


/* the next of a run of 2.0 label refs, packed or not */
static inline int
pg_rw2_next_ref(pg_pb_iter_t *it, uint32_t *ref)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v;
    const uint8_t  *d;
    size_t          n;

    for ( ;; ) {
        if (it->pp < it->pend) {
            if (pg_pb_varint(&it->pp, it->pend, &v) != 0) {
                return 0;
            }

            *ref = (uint32_t) v;
            return 1;
        }

        field = pg_pb_key(&it->p, it->end, &wt);

        if (field <= 0) {
            return 0;
        }

        if (field == 1 && (wt == PG_PB_VARINT || wt == PG_PB_LEN)) {
            if (pg_pb_varint_run(&it->p, it->end, wt, &d, &n) != 0) {
                return 0;
            }

            it->pp = d;
            it->pend = d + n;
            continue;
        }

        if (pg_pb_skip(&it->p, it->end, wt) != 0) {
            return 0;
        }
    }
}


/*
 * Both iterators walk a TimeSeries (or an Exemplar, for its labels) and
 * stop at fields of their kind; the decoder has validated the bytes.
 */
int
pg_rw_next_label(pg_pb_iter_t *it, pg_label_t *label)
{
    int64_t         field;
    const uint8_t  *d;
    size_t          n;
    uint32_t        nr, vr;

    if (it->sym) {
        if (pg_rw2_next_ref(it, &nr) && pg_rw2_next_ref(it, &vr)
            && nr < it->sym->n && vr < it->sym->n)
        {
            label->name = pg_rw_symbol(it->sym, nr);
            label->value = pg_rw_symbol(it->sym, vr);
            return 1;
        }

        goto done;
    }

    while ((field = pg_pb_next_len(&it->p, it->end, &d, &n)) > 0) {

        if (field == 1) {
            if (pg_rw_parse_label(d, d + n, label) != 0) {
                break;
            }
            return 1;
        }
    }

done:

    it->p = it->end;
    it->pp = it->pend;
    return 0;
}


int
pg_rw_next_exemplar(pg_pb_iter_t *it, pg_exemplar_t *ex)
{
    int64_t         field, want;
    unsigned        wt;
    const uint8_t  *d, *p, *end;
    size_t          n;
    uint64_t        v;

    want = it->sym ? 4 : 3;

    while ((field = pg_pb_next_len(&it->p, it->end, &d, &n)) > 0) {

        if (field != want) {
            continue;
        }

        ex->labels.p = d;
        ex->labels.end = d + n;
        ex->labels.pp = NULL;
        ex->labels.pend = NULL;
        ex->labels.sym = it->sym;
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


/* -------------------------------------------------------- best effort */


uint64_t
pg_rw_count_samples(const uint8_t *buf, size_t len, pg_rw_version_e version)
{
    int64_t         field, f2;
    const uint8_t  *p, *end, *d, *q, *d2;
    size_t          n, n2;
    uint64_t        samples;
    int64_t         ts_field, h_field;

    ts_field = version == PG_RW_V2 ? 5 : 1;
    h_field = version == PG_RW_V2 ? 3 : 4;

    samples = 0;
    p = buf;
    end = buf + len;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        if (field != ts_field) {
            continue;
        }

        q = d;

        while ((f2 = pg_pb_next_len(&q, d + n, &d2, &n2)) > 0) {
            if (f2 == 2 || f2 == h_field) {
                samples++;
            }
        }
    }

    return samples;
}


pg_label_t *
pg_rw_copy_labels(pg_pb_iter_t it, pg_allocator_t *a, size_t *n, int sort)
{
    size_t         i, count, bytes;
    uint8_t       *p;
    pg_label_t     l, tmp, *labels;
    pg_pb_iter_t   first;

    first = it;
    count = 0;
    bytes = 0;

    while (pg_rw_next_label(&it, &l)) {
        count++;
        bytes += l.name.len + l.value.len;
    }

    labels = a->alloc(a->ctx, count * sizeof(pg_label_t) + bytes + 1);
    if (labels == NULL) {
        return NULL;
    }

    p = (uint8_t *) (labels + count);
    it = first;
    count = 0;

    while (pg_rw_next_label(&it, &l)) {
        labels[count].name.data = p;
        labels[count].name.len = l.name.len;
        memcpy(p, l.name.data, l.name.len);
        p += l.name.len;

        labels[count].value.data = p;
        labels[count].value.len = l.value.len;
        memcpy(p, l.value.data, l.value.len);
        p += l.value.len;

        /* out of order (valid, Prometheus sorts): sorted as it stores */
        for (i = count; sort && i > 0
                        && pg_str_cmp(labels[i - 1].name, labels[i].name) > 0;
             i--)
        {
            tmp = labels[i];
            labels[i] = labels[i - 1];
            labels[i - 1] = tmp;
        }

        count++;
    }

    *n = count;

    return labels;
}


size_t
pg_rw_labels_drop(pg_label_t *labels, size_t n, pg_str_t name)
{
    size_t  i, k;

    for (i = 0, k = 0; i < n; i++) {
        if (pg_str_eq(labels[i].name, name)) {
            continue;
        }

        labels[k++] = labels[i];
    }

    return k;
}
