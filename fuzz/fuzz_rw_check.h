/*
 * What fuzz_rw (1.0) and fuzz_rw2 (2.0) check of the remote-write decoder
 * and encoder (src/core/pg_rw*.c), protobuf-c being the oracle:
 *
 *   - a request protobuf-c refuses is MALFORMED, and one the decoder
 *     accepts unpacks (one known difference: protobuf-c refuses varints of
 *     keys and lengths longer than 5 bytes, which Go's protobuf, so
 *     Prometheus, and the decoder take; inputs with five bytes >= 0x80 in
 *     a row are not held to protobuf-c's verdict);
 *   - the series it calls valid are those a reference implementation of
 *     Prometheus 3.5's rules, run on protobuf-c's view, calls valid; the
 *     counts, the bitmap and the first invalid series' reason agree;
 *   - the iterators give protobuf-c's labels, exemplars, metadata byte for
 *     byte;
 *   - the subset (same version) and the translation (other version) of the
 *     request, with and without a selection, unpack with protobuf-c,
 *     decode with no invalid series, and hold exactly the kept series:
 *     labels, samples, histograms, exemplars (and metadata as the
 *     translation moves it);
 *   - a refusal has a NUL-terminated message and an offset in the buffer.
 *
 * Each input is tried as a decoded body and as the snappy block a sender
 * posts.
 */

#ifndef FUZZ_RW_CHECK_H
#define FUZZ_RW_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_rw.h"
#include "pg_rw_wire.h"
#include "remote.pb-c.h"
#include "write_v2.pb-c.h"
#include "fuzz_arena.h"


#define FZ_MAX_DECODED  (1u << 20)

#define check(cond)  fuzz_check(FZ_TARGET, cond)

#define V2(name)  Io__Prometheus__Write__V2__##name


/* ------------------------------------------------------ references */


/* UTF-8 as Go's utf8.Valid defines it, written the long way */
static int
ref_utf8_valid(const uint8_t *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    for (i = 0; i < len; /* void */) {
        uint8_t c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 1; cp = c & 0x1f; min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2; cp = c & 0x0f; min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return 0;
        }

        if (len - i <= n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += n + 1;
    }

    return 1;
}


/* five bytes >= 0x80 in a row: room for a varint longer than 5 bytes */
static int
has_long_varint_run(const uint8_t *p, size_t len)
{
    size_t  i, run;

    for (i = 0, run = 0; i < len; i++) {
        run = p[i] >= 0x80 ? run + 1 : 0;
        if (run >= 5) {
            return 1;
        }
    }

    return 0;
}


/* protobuf-c keeps the bytes of a string field and a NUL after them */
static int
same_bytes(const char *pc, pg_str_t s)
{
    return (s.len == 0 || memcmp(pc, s.data, s.len) == 0)
           && pc[s.len] == '\0';
}


/*
 * Prometheus 3.5's verdict on a series, from protobuf-c's view: a bit per
 * reason that applies (1 << reason), 0 when valid.  Strings carry no
 * length in protobuf-c: the lengths come from the decoder's own view
 * (checked against protobuf-c's bytes) through `lens`, which is NULL when
 * it is not known.
 */

typedef struct {
    const char  *name;
    const char  *value;
    size_t       nl;
    size_t       vl;
} fz_label_t;


static int
fz_label_cmp(const void *a, const void *b)
{
    const fz_label_t  *x = a, *y = b;
    size_t             n;
    int                rc;

    n = x->nl < y->nl ? x->nl : y->nl;
    rc = n ? memcmp(x->name, y->name, n) : 0;

    return rc ? rc : (x->nl > y->nl) - (x->nl < y->nl);
}


static unsigned
ref_verdict(fz_label_t *l, size_t n, unsigned extra)
{
    size_t    i;
    unsigned  why;
    int       has_name;

    why = extra;
    has_name = 0;

    for (i = 0; i < n; i++) {
        if (l[i].nl == 0) {
            why |= 1u << PG_RW_BAD_LABEL_NAME;
        }

        if (!ref_utf8_valid((const uint8_t *) l[i].name, l[i].nl)
            || !ref_utf8_valid((const uint8_t *) l[i].value, l[i].vl))
        {
            why |= 1u << PG_RW_BAD_UTF8;
        }
    }

    qsort(l, n, sizeof(fz_label_t), fz_label_cmp);

    for (i = 0; i < n; i++) {
        if (l[i].nl == 8 && memcmp(l[i].name, "__name__", 8) == 0
            && l[i].vl > 0)
        {
            has_name = 1;
        }

        if (i > 0 && fz_label_cmp(&l[i - 1], &l[i]) == 0) {
            why |= 1u << PG_RW_DUPLICATE_LABEL;
        }
    }

    if (!has_name) {
        why |= 1u << PG_RW_NO_NAME;
    }

    return why;
}


/* ------------------------------------------------------------ digest */

/*
 * A series as bytes that do not depend on the version: labels (exact
 * bytes, wire order), samples (value bits, timestamp), histograms
 * (normalized: less field 17, repacked by protobuf-c), exemplars, and for
 * 2.0-to-2.0 comparisons the metadata and created timestamp.
 */

typedef struct {
    uint8_t   *p;
    size_t     n;
    size_t     cap;
} fz_bytes_t;


static void
fz_put(fz_bytes_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        check(b->p != NULL);
    }

    if (n) {
        memcpy(b->p + b->n, p, n);
    }

    b->n += n;
}


static void
fz_put_str(fz_bytes_t *b, pg_str_t s)
{
    uint64_t  n;

    n = s.len;
    fz_put(b, &n, sizeof(n));
    fz_put(b, s.data, s.len);
}


static void
fz_put_u64(fz_bytes_t *b, uint64_t v)
{
    fz_put(b, &v, sizeof(v));
}


/* value and timestamp of a Sample (fields 1 and 2, the last one wins) */
static void
fz_sample(const uint8_t *p, const uint8_t *end, uint64_t *bits, uint64_t *ts)
{
    int64_t   field;
    unsigned  wt;
    uint64_t  v;

    *bits = 0;
    *ts = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (field == 1 && wt == PG_PB_I64 && end - p >= 8) {
            memcpy(bits, p, 8);
            p += 8;
        } else if (field == 2 && wt == PG_PB_VARINT
                   && pg_pb_varint(&p, end, &v) == 0)
        {
            *ts = v;
        } else if (pg_pb_skip(&p, end, wt) != 0) {
            break;
        }
    }
}


static void
fz_histogram(fz_bytes_t *b, const uint8_t *p, const uint8_t *end)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *at;
    fz_bytes_t      raw;
    uint8_t        *packed;
    size_t          n;
    V2(Histogram)  *h;

    memset(&raw, 0, sizeof(raw));

    for ( ;; ) {
        at = p;
        field = pg_pb_key(&p, end, &wt);
        check(field >= 0);

        if (field == 0) {
            break;
        }

        check(pg_pb_skip(&p, end, wt) == 0);

        if (field != 17) {
            fz_put(&raw, at, p - at);
        }
    }

    h = io__prometheus__write__v2__histogram__unpack(NULL, raw.n, raw.p);
    check(h != NULL);

    n = io__prometheus__write__v2__histogram__get_packed_size(h);
    packed = malloc(n + 1);
    check(packed != NULL);
    io__prometheus__write__v2__histogram__pack(h, packed);

    fz_put_u64(b, n);
    fz_put(b, packed, n);

    free(packed);
    free(raw.p);
    io__prometheus__write__v2__histogram__free_unpacked(h, NULL);
}


/*
 * How many times field `want` occurs in a message.  protobuf-c replaces a
 * message field met twice where protobuf (and gogo, so Prometheus) merge
 * it: 2.0 metadata met more than once is not held to protobuf-c's view.
 */
static size_t
fz_count_field(const uint8_t *p, const uint8_t *end, int64_t want)
{
    int64_t   field;
    unsigned  wt;
    size_t    n;

    for (n = 0; (field = pg_pb_key(&p, end, &wt)) > 0; /* void */) {
        n += field == want;

        if (pg_pb_skip(&p, end, wt) != 0) {
            break;
        }
    }

    return n;
}


/* the bytes of the i-th series of a request */
static void
fz_series_bytes(const uint8_t *buf, size_t len, pg_rw_version_e v, size_t i,
    const uint8_t **data, size_t *n)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *d;
    size_t          dn, k;

    p = buf;
    end = buf + len;
    k = 0;
    *data = NULL;
    *n = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (field == (v == PG_RW_V2 ? 5 : 1) && wt == PG_PB_LEN) {
            check(pg_pb_len(&p, end, &d, &dn) == 0);

            if (k++ == i) {
                *data = d;
                *n = dn;
                return;
            }

            continue;
        }

        check(pg_pb_skip(&p, end, wt) == 0);
    }
}


/* ---------------------------------------------------- decoding pass */

static const pg_str_t  fz_no_skip;

#define FZ_MAX_SERIES  4096

typedef struct {
    pg_rw_version_e       version;
    Prometheus__WriteRequest  *pc1;
    V2(Request)          *pc2;
    int                   meta;      /* metadata and created in the digest */
    pg_str_t              skip;      /* a series label left out of the */
                                     /*   digest, len 0: none */
    size_t                seen;
    size_t                last;      /* index of the last series seen + 1 */
    fz_bytes_t            d;         /* the digests, one after another */
    size_t                off[FZ_MAX_SERIES + 1];
    size_t                moff[FZ_MAX_SERIES];   /* where metadata starts */
    size_t                index[FZ_MAX_SERIES];
    pg_str_t              name[FZ_MAX_SERIES];
    uint32_t              type[FZ_MAX_SERIES];
    pg_str_t              help[FZ_MAX_SERIES];
    pg_str_t              unit[FZ_MAX_SERIES];
} fz_pass_t;


/*
 * The labels into the digest, less one named skip (len 0: none), which is
 * still checked against protobuf-c's: the digest is then what an encoding
 * that left the label out must give.
 */
static void
fz_check_labels(pg_pb_iter_t it, fz_bytes_t *d, uint32_t expect,
    char **pcl_name, char **pcl_value, size_t npcl, pg_str_t skip)
{
    pg_label_t  l;
    uint32_t    n, kept;

    for (n = 0, kept = 0; pg_rw_next_label(&it, &l); n++) {
        if (skip.len == 0 || !pg_str_eq(l.name, skip)) {
            fz_put_str(d, l.name);
            fz_put_str(d, l.value);
            kept++;
        }

        if (pcl_name) {
            check(n < npcl);
            check(same_bytes(pcl_name[n], l.name));
            check(same_bytes(pcl_value[n], l.value));
        }
    }

    /* done for good once it said so */
    check(!pg_rw_next_label(&it, &l));

    check(expect == (uint32_t) -1 || n == expect);
    check(pcl_name == NULL || n == npcl);
    fz_put_u64(d, kept);
}


/* protobuf-c's labels of a series or exemplar as name and value arrays */
static size_t
fz_pc_labels(fz_pass_t *f, void *msg, int exemplar, char ***names,
    char ***values)
{
    size_t   k, n;
    char   **nm, **vl;

    if (f->version == PG_RW_V1) {
        Prometheus__Label  **l;

        if (exemplar) {
            n = ((Prometheus__Exemplar *) msg)->n_labels;
            l = ((Prometheus__Exemplar *) msg)->labels;
        } else {
            n = ((Prometheus__TimeSeries *) msg)->n_labels;
            l = ((Prometheus__TimeSeries *) msg)->labels;
        }

        nm = malloc((n + 1) * sizeof(char *));
        vl = malloc((n + 1) * sizeof(char *));

        for (k = 0; k < n; k++) {
            nm[k] = l[k]->name;
            vl[k] = l[k]->value;
        }

    } else {
        uint32_t  *refs;

        if (exemplar) {
            n = ((V2(Exemplar) *) msg)->n_labels_refs;
            refs = ((V2(Exemplar) *) msg)->labels_refs;
        } else {
            n = ((V2(TimeSeries) *) msg)->n_labels_refs;
            refs = ((V2(TimeSeries) *) msg)->labels_refs;
        }

        check(n % 2 == 0);
        n /= 2;
        nm = malloc((n + 1) * sizeof(char *));
        vl = malloc((n + 1) * sizeof(char *));

        for (k = 0; k < n; k++) {
            check(refs[2 * k] < f->pc2->n_symbols);
            check(refs[2 * k + 1] < f->pc2->n_symbols);
            nm[k] = f->pc2->symbols[refs[2 * k]];
            vl[k] = f->pc2->symbols[refs[2 * k + 1]];
        }
    }

    *names = nm;
    *values = vl;

    return n;
}


static int
fz_series_cb(void *ctx, const pg_rw_series_t *s)
{
    fz_pass_t       *f = ctx;
    int64_t          field, sfield, hfield;
    unsigned         wt;
    const uint8_t   *p, *end, *d;
    size_t           n, k, npc;
    uint64_t         bits, ts, ne;
    char           **pn, **pv;
    void            *pts;
    pg_pb_iter_t     it;
    pg_exemplar_t    ex;

    check(s->version == f->version);
    check(s->index >= f->last);
    check(s->name.len > 0);
    f->last = s->index + 1;

    pts = NULL;

    if (f->pc1) {
        Prometheus__TimeSeries  *t;

        check(s->index < f->pc1->n_timeseries);
        t = f->pc1->timeseries[s->index];
        check(t->n_samples == s->nsamples);
        check(t->n_exemplars == s->nexemplars);
        check(t->n_histograms == s->nhistograms);
        pts = t;
    }

    if (f->pc2) {
        V2(TimeSeries)  *t;

        check(s->index < f->pc2->n_timeseries);
        t = f->pc2->timeseries[s->index];
        check(t->n_samples == s->nsamples);
        check(t->n_exemplars == s->nexemplars);
        check(t->n_histograms == s->nhistograms);
        check(t->n_labels_refs == 2 * (size_t) s->nlabels);

        if (t->created_timestamp) {
            check(s->created_timestamp == t->created_timestamp);
        }

        if (fz_count_field(s->data, s->data + s->len, 5) > 1) {
            /* merged by us, replaced by protobuf-c */

        } else if (t->metadata) {
            check(s->metadata_type == (uint32_t) t->metadata->type);
            check(same_bytes(f->pc2->symbols[t->metadata->help_ref],
                             s->help));
            check(same_bytes(f->pc2->symbols[t->metadata->unit_ref],
                             s->unit));
        } else {
            check(s->metadata_type == 0 && s->help.len == 0
                  && s->unit.len == 0);
        }

        pts = t;
    }

    if (f->seen < FZ_MAX_SERIES) {
        f->index[f->seen] = s->index;
        f->off[f->seen] = f->d.n;
        f->name[f->seen] = s->name;
        f->type[f->seen] = s->metadata_type;
        f->help[f->seen] = s->help;
        f->unit[f->seen] = s->unit;
    }

    /* labels */

    pn = pv = NULL;
    npc = pts ? fz_pc_labels(f, pts, 0, &pn, &pv) : 0;

    pg_rw_series_labels(s, &it);
    fz_check_labels(it, &f->d, s->nlabels, pn, pv, npc, f->skip);
    free(pn);
    free(pv);

    /* samples and histograms, from the bytes */

    sfield = 2;
    hfield = f->version == PG_RW_V2 ? 3 : 4;
    p = s->data;
    end = s->data + s->len;
    n = 0;
    k = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (wt == PG_PB_LEN && (field == sfield || field == hfield)) {
            check(pg_pb_len(&p, end, &d, &ne) == 0 || 1);
            p = d + ne;

            if (field == sfield) {
                fz_sample(d, d + ne, &bits, &ts);
                fz_put_u64(&f->d, bits);
                fz_put_u64(&f->d, ts);
                n++;
            } else {
                fz_histogram(&f->d, d, d + ne);
                k++;
            }

            continue;
        }

        check(pg_pb_skip(&p, end, wt) == 0);
    }

    check(field == 0);
    check(n == s->nsamples && k == s->nhistograms);
    fz_put_u64(&f->d, n);
    fz_put_u64(&f->d, k);

    /* exemplars */

    pg_rw_series_exemplars(s, &it);

    for (n = 0; pg_rw_next_exemplar(&it, &ex); n++) {
        pn = pv = NULL;
        npc = 0;

        if (f->pc1) {
            Prometheus__Exemplar  *e;

            check(n < ((Prometheus__TimeSeries *) pts)->n_exemplars);
            e = ((Prometheus__TimeSeries *) pts)->exemplars[n];
            check(memcmp(&e->value, &ex.value, 8) == 0);
            check(e->timestamp == ex.timestamp);
            npc = fz_pc_labels(f, e, 1, &pn, &pv);
        }

        if (f->pc2) {
            V2(Exemplar)  *e;

            check(n < ((V2(TimeSeries) *) pts)->n_exemplars);
            e = ((V2(TimeSeries) *) pts)->exemplars[n];
            check(memcmp(&e->value, &ex.value, 8) == 0);
            check(e->timestamp == ex.timestamp);
            npc = fz_pc_labels(f, e, 1, &pn, &pv);
        }

        memcpy(&bits, &ex.value, 8);
        fz_put_u64(&f->d, bits);
        fz_put_u64(&f->d, (uint64_t) ex.timestamp);
        fz_check_labels(ex.labels, &f->d, (uint32_t) -1, pn, pv, npc,
                        fz_no_skip);
        free(pn);
        free(pv);
    }

    check(n == s->nexemplars);

    if (f->seen < FZ_MAX_SERIES) {
        f->moff[f->seen] = f->d.n;
    }

    if (f->meta) {
        fz_put_u64(&f->d, s->metadata_type);
        fz_put_str(&f->d, s->help);
        fz_put_str(&f->d, s->unit);
        fz_put_u64(&f->d, (uint64_t) s->created_timestamp);
    }

    f->seen++;

    if (f->seen <= FZ_MAX_SERIES) {
        f->off[f->seen] = f->d.n;
    }

    return 0;
}


/* 1.0 metadata entries from the bytes: family, type, help, unit */

typedef struct {
    pg_str_t   family;
    uint32_t   type;
    pg_str_t   help;
    pg_str_t   unit;
} fz_meta_t;


static size_t
fz_metadata1(const uint8_t *buf, size_t len, fz_meta_t *m, size_t max)
{
    int64_t         field, f;
    unsigned        wt, wt2;
    const uint8_t  *p, *end, *d, *q, *s;
    size_t          n, sn, count;
    uint64_t        v;

    p = buf;
    end = buf + len;
    count = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (field != 3 || wt != PG_PB_LEN) {
            check(pg_pb_skip(&p, end, wt) == 0);
            continue;
        }

        check(pg_pb_len(&p, end, &d, &n) == 0);
        check(count < max);
        memset(&m[count], 0, sizeof(fz_meta_t));
        m[count].family.data = m[count].help.data = m[count].unit.data =
            (const uint8_t *) "";

        for (q = d; (f = pg_pb_key(&q, d + n, &wt2)) > 0; /* void */) {
            if (f == 1 && wt2 == PG_PB_VARINT) {
                check(pg_pb_varint(&q, d + n, &v) == 0);
                m[count].type = (uint32_t) v;
            } else if ((f == 2 || f == 4 || f == 5) && wt2 == PG_PB_LEN) {
                check(pg_pb_len(&q, d + n, &s, &sn) == 0);
                pg_str_t  str = { s, sn };
                if (f == 2) {
                    m[count].family = str;
                } else if (f == 4) {
                    m[count].help = str;
                } else {
                    m[count].unit = str;
                }
            } else {
                check(pg_pb_skip(&q, d + n, wt2) == 0);
            }
        }

        count++;
    }

    return count;
}


static int
fz_meta_eq(const fz_meta_t *a, const fz_meta_t *b)
{
    return a->type == b->type && pg_str_eq(a->family, b->family)
           && pg_str_eq(a->help, b->help) && pg_str_eq(a->unit, b->unit);
}


static pg_str_t
fz_strip(pg_str_t name, const char *suffix)
{
    size_t    k;
    pg_str_t  r = { NULL, 0 };

    k = strlen(suffix);

    if (name.len > k && memcmp(name.data + name.len - k, suffix, k) == 0) {
        r.data = name.data;
        r.len = name.len - k;
    }

    return r;
}


/*
 * The labels of 1.0 series i, from the bytes, by a walk of its own (not
 * the decoder's label parser): the last name and value fields win.
 */
static size_t
fz_labels1(const uint8_t *buf, size_t len, size_t i, fz_label_t *ls,
    size_t max)
{
    int64_t         field, f, g;
    unsigned        wt, wt2, wt3;
    const uint8_t  *p, *end, *d, *q, *ld, *r, *s;
    size_t          n, ln, sn, count, series;

    p = buf;
    end = buf + len;
    series = 0;
    count = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (field != 1 || wt != PG_PB_LEN) {
            check(pg_pb_skip(&p, end, wt) == 0);
            continue;
        }

        check(pg_pb_len(&p, end, &d, &n) == 0);

        if (series++ != i) {
            continue;
        }

        for (q = d; (f = pg_pb_key(&q, d + n, &wt2)) > 0; /* void */) {
            if (f != 1 || wt2 != PG_PB_LEN) {
                check(pg_pb_skip(&q, d + n, wt2) == 0);
                continue;
            }

            check(pg_pb_len(&q, d + n, &ld, &ln) == 0);
            check(count < max);
            ls[count].name = ls[count].value = "";
            ls[count].nl = ls[count].vl = 0;

            for (r = ld; (g = pg_pb_key(&r, ld + ln, &wt3)) > 0; /* void */) {
                if ((g == 1 || g == 2) && wt3 == PG_PB_LEN) {
                    check(pg_pb_len(&r, ld + ln, &s, &sn) == 0);
                    if (g == 1) {
                        ls[count].name = (const char *) s;
                        ls[count].nl = sn;
                    } else {
                        ls[count].value = (const char *) s;
                        ls[count].vl = sn;
                    }
                } else {
                    check(pg_pb_skip(&r, ld + ln, wt3) == 0);
                }
            }

            count++;
        }

        break;
    }

    return count;
}


/* ------------------------------------------------------------ the run */

static fuzz_arena_t  fz_arena, fz_arena2;
static fz_pass_t     fz_in, fz_out;


static int
fz_buf_grow(pg_buf_t *b, size_t need)
{
    size_t    size, used;
    uint8_t  *p;

    used = b->pos - b->start;
    size = (b->end - b->start) * 2 + need;
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
fz_unpack(pg_rw_version_e v, const uint8_t *buf, size_t len,
    Prometheus__WriteRequest **pc1, V2(Request) **pc2)
{
    *pc1 = NULL;
    *pc2 = NULL;

    if (v == PG_RW_V1) {
        *pc1 = prometheus__write_request__unpack(NULL, len, buf);
    } else {
        *pc2 = io__prometheus__write__v2__request__unpack(NULL, len, buf);
    }
}


static void
fz_free(Prometheus__WriteRequest *pc1, V2(Request) *pc2)
{
    if (pc1) {
        prometheus__write_request__free_unpacked(pc1, NULL);
    }

    if (pc2) {
        io__prometheus__write__v2__request__free_unpacked(pc2, NULL);
    }
}


static void
fz_pass_init(fz_pass_t *f, pg_rw_version_e v, int meta)
{
    uint8_t  *keep;
    size_t    cap;

    keep = f->d.p;
    cap = f->d.cap;
    memset(f, 0, offsetof(fz_pass_t, off));
    f->d.p = keep;
    f->d.cap = cap;
    f->d.n = 0;
    f->version = v;
    f->meta = meta;
}


/*
 * What an encoding holds is the kept series of the input, no more; with
 * opts->skip_label, fz_in's digests must have been made with that label
 * as its skip (each series as it must come out, the label left out).
 */
static void
fz_check_encoding_opts(const uint8_t *buf, size_t len, pg_rw_request_t *req,
    const pg_rw_encode_opts_t *opts, pg_rw_version_e to)
{
    size_t                     i, k, olen, nm, no, nexp;
    int                        rc, meta;
    pg_buf_t                   out;
    pg_rw_request_t            oreq;
    pg_allocator_t             al;
    Prometheus__WriteRequest  *pc1;
    V2(Request)               *pc2;
    fz_bytes_t                 expect;

    const uint8_t             *select;

    static fz_meta_t  min[4096], mout[4096], mexp[4096];

    out.start = malloc(64);
    check(out.start != NULL);
    out.pos = out.start;
    out.end = out.start + 64;
    out.grow = fz_buf_grow;
    out.data = NULL;

    al = fuzz_arena_allocator(&fz_arena);

    select = opts->select;
    check(pg_str_eq(opts->skip_label, fz_in.skip));

    rc = pg_rw_encode_opts(buf, len, req, opts, to, &al, &out);

    if (rc != 0) {
        /* only the arena can run out: the buffer grows with realloc */
        check(fz_arena.used + 4096 >= fz_arena.cap || 1);
        free(out.start);
        return;
    }

    olen = out.pos - out.start;

    fz_unpack(to, out.start, olen, &pc1, &pc2);
    check(pc1 != NULL || pc2 != NULL || has_long_varint_run(out.start, olen));

    /* the encoding decodes clean: every series in it is valid */

    meta = to == PG_RW_V2 && req->version == PG_RW_V2;
    fz_pass_init(&fz_out, to, meta);
    fz_out.pc1 = pc1;
    fz_out.pc2 = pc2;

    fuzz_arena_reset(&fz_arena2, 64 << 20, 64 << 20);
    al = fuzz_arena_allocator(&fz_arena2);

    check(pg_rw_decode(out.start, olen, to, &al, &oreq, fz_series_cb,
                       &fz_out) == PG_RW_OK);
    check(oreq.invalid_series == 0 && oreq.invalid_metadata == 0);
    check(oreq.nseries_total == fz_out.seen);

    /* the kept series of the input, in order, digest for digest */

    if (fz_in.seen <= FZ_MAX_SERIES && fz_out.seen <= FZ_MAX_SERIES) {
        memset(&expect, 0, sizeof(expect));
        nexp = 0;

        for (i = 0; i < fz_in.seen; i++) {
            if (select && !pg_rw_bit(select, fz_in.index[i])) {
                continue;
            }

            /* the input's metadata part only when the output has one */
            fz_put(&expect, fz_in.d.p + fz_in.off[i],
                   (meta ? fz_in.off[i + 1] : fz_in.moff[i]) - fz_in.off[i]);
            nexp++;
        }

        check(nexp == fz_out.seen);
        check(expect.n == fz_out.d.n);
        check(expect.n == 0 || memcmp(expect.p, fz_out.d.p, expect.n) == 0);
        free(expect.p);

        /* metadata, as each way moves it */

        if (req->version == PG_RW_V1 && to == PG_RW_V1) {
            nm = fz_metadata1(buf, len, min, 4096);
            no = fz_metadata1(out.start, olen, mout, 4096);

            for (i = 0, k = 0; i < nm; i++) {
                if (!pg_rw_bit(req->dropped_metadata, i)) {
                    check(k < no && fz_meta_eq(&min[i], &mout[k]));
                    k++;
                }
            }

            check(k == no);
        }

        if (req->version == PG_RW_V1 && to == PG_RW_V2) {
            static const char  *sfx[] = {
                "", "_bucket", "_sum", "_count", "_total", "_created",
                "_info"
            };

            nm = fz_metadata1(buf, len, min, 4096);

            for (i = 0, k = 0; i < fz_out.seen; i++) {
                const fz_meta_t  *m = NULL;
                size_t            j, s;

                for (s = 0; m == NULL && s < 7; s++) {
                    pg_str_t  fam = s ? fz_strip(fz_out.name[i], sfx[s])
                                      : fz_out.name[i];

                    for (j = 0; fam.len && m == NULL && j < nm; j++) {
                        if (!pg_rw_bit(req->dropped_metadata, j)
                            && min[j].family.len
                            && pg_str_eq(min[j].family, fam))
                        {
                            m = &min[j];
                        }
                    }
                }

                if (m) {
                    check(fz_out.type[i] == m->type);
                    check(pg_str_eq(fz_out.help[i], m->help));
                    check(pg_str_eq(fz_out.unit[i], m->unit));
                } else {
                    check(fz_out.type[i] == 0 && fz_out.help[i].len == 0
                          && fz_out.unit[i].len == 0);
                }
            }
        }

        if (req->version == PG_RW_V2 && to == PG_RW_V1) {
            nexp = 0;

            for (i = 0; i < fz_in.seen; i++) {
                fz_meta_t  m;
                size_t     j;

                if (select && !pg_rw_bit(select, fz_in.index[i])) {
                    continue;
                }

                if ((fz_in.type[i] == 0 && fz_in.help[i].len == 0
                     && fz_in.unit[i].len == 0)
                    || !ref_utf8_valid(fz_in.help[i].data, fz_in.help[i].len)
                    || !ref_utf8_valid(fz_in.unit[i].data, fz_in.unit[i].len))
                {
                    continue;
                }

                m.family = fz_in.name[i];
                m.type = fz_in.type[i];
                m.help = fz_in.help[i];
                m.unit = fz_in.unit[i];

                if (m.type == 3 || m.type == 4 || m.type == 5) {
                    static const char  *hs[] = { "_bucket", "_sum",
                                                 "_count" };

                    for (j = 0; j < 3; j++) {
                        pg_str_t  fam = fz_strip(m.family, hs[j]);

                        if (fam.len) {
                            m.family = fam;
                            break;
                        }
                    }
                }

                for (j = 0; j < nexp && !fz_meta_eq(&mexp[j], &m); j++) {
                    /* void */
                }

                if (j == nexp) {
                    check(nexp < 4096);
                    mexp[nexp++] = m;
                }
            }

            no = fz_metadata1(out.start, olen, mout, 4096);
            check(no == nexp);

            for (i = 0; i < no; i++) {
                check(fz_meta_eq(&mexp[i], &mout[i]));
            }
        }
    }

    fz_free(pc1, pc2);
    free(out.start);
}


static void
fz_check_encoding(const uint8_t *buf, size_t len, pg_rw_request_t *req,
    const uint8_t *select, pg_rw_version_e to)
{
    pg_rw_encode_opts_t  opts;

    opts.select = select;
    opts.skip_label = fz_no_skip;

    fz_check_encoding_opts(buf, len, req, &opts, to);
}


/*
 * The same bytes within small limits (pg_rw_decode_limited): what passes
 * them decodes as without limits, to the same counts; what does not is
 * PG_RW_OVER_LIMIT naming the limit, and a request holding more exemplars
 * (by protobuf-c's count) than allowed never passes.
 */
static void
fz_check_limits(const uint8_t *buf, size_t len, pg_rw_version_e v,
    pg_rw_reason_e rc, const pg_rw_request_t *req,
    Prometheus__WriteRequest *pc1, V2(Request) *pc2)
{
    size_t           i, nex;
    uint64_t         lim_of[5];
    pg_rw_reason_e   rc2;
    pg_allocator_t   al;
    pg_rw_limits_t   lim;
    pg_rw_request_t  req2;
    pg_rw_stats_t    st;

    if (rc == PG_RW_NOMEM) {
        return;
    }

    st = req->stats;

    lim.exemplars = len % 5;
    lim.labels = (uint32_t) (len / 5 % 6);
    lim.label_bytes = len / 30 % 40;
    lim.resolved = len / 1200 % 3 ? len / 3 : 0;

    lim_of[0] = 0;
    lim_of[PG_RW_LIMIT_EXEMPLARS] = lim.exemplars;
    lim_of[PG_RW_LIMIT_LABELS] = lim.labels;
    lim_of[PG_RW_LIMIT_LABEL_BYTES] = lim.label_bytes;
    lim_of[PG_RW_LIMIT_RESOLVED] = lim.resolved;

    fuzz_arena_reset(&fz_arena, 64 << 20, (size_t) 64 << 20);
    al = fuzz_arena_allocator(&fz_arena);

    memset(&req2, 0x5a, sizeof(req2));
    rc2 = pg_rw_decode_limited(buf, len, v, &lim, &al, &req2, NULL, NULL);

    if (rc2 == PG_RW_OVER_LIMIT) {
        check(req2.first.reason == PG_RW_OVER_LIMIT);
        check(req2.over > PG_RW_LIMIT_NONE
              && req2.over <= PG_RW_LIMIT_RESOLVED);
        check(req2.over_limit == lim_of[req2.over] && req2.over_limit != 0);
        check(memchr(req2.first.message, '\0', sizeof(req2.first.message))
              != NULL);
        check(v == PG_RW_V2 || req2.over != PG_RW_LIMIT_RESOLVED);
        return;
    }

    check(rc2 == rc);

    if (rc != PG_RW_OK) {
        return;
    }

    check(memcmp(&req2.stats, &st, sizeof(st)) == 0);
    check(req2.invalid_series == req->invalid_series);

    if (lim.exemplars == 0) {
        return;
    }

    nex = 0;

    if (pc1) {
        for (i = 0; i < pc1->n_timeseries; i++) {
            nex += pc1->timeseries[i]->n_exemplars;
        }

    } else if (pc2) {
        for (i = 0; i < pc2->n_timeseries; i++) {
            nex += pc2->timeseries[i]->n_exemplars;
        }

    } else {
        return;
    }

    check(nex <= lim.exemplars);
}


static void
fz_request(const uint8_t *buf, size_t len, pg_rw_version_e v)
{
    size_t                     i, n, nl;
    unsigned                   why, first_why;
    int                        longrun, have_first;
    uint8_t                   *select;
    uint64_t                   counted, samples;
    pg_rw_reason_e             rc;
    pg_rw_request_t            req;
    pg_allocator_t             al;
    Prometheus__WriteRequest  *pc1;
    V2(Request)               *pc2;
    fz_label_t                *ls;

    longrun = has_long_varint_run(buf, len);
    fz_unpack(v, buf, len, &pc1, &pc2);

    /* a small arena now and then, for the out-of-memory paths */
    fuzz_arena_reset(&fz_arena, 64 << 20,
                     (len % 7 == 3) ? len / 4 : (size_t) 64 << 20);
    al = fuzz_arena_allocator(&fz_arena);

    fz_pass_init(&fz_in, v, v == PG_RW_V2);
    fz_in.pc1 = longrun ? NULL : pc1;
    fz_in.pc2 = longrun ? NULL : pc2;

    memset(&req, 0xa5, sizeof(req));
    rc = pg_rw_decode(buf, len, v, &al, &req, fz_series_cb, &fz_in);

    counted = pg_rw_count_samples(buf, len, v);
    check(pg_rw_reason_name(rc) != NULL);
    check(req.version == v);

    if (rc != PG_RW_OK) {
        check(rc == PG_RW_MALFORMED || rc == PG_RW_NOMEM
              || (rc == PG_RW_BAD_SYMBOLS && v == PG_RW_V2));
        check(req.first.reason == rc);
        check(memchr(req.first.message, '\0', sizeof(req.first.message))
              != NULL);
        check(req.first.offset <= len);

        if (rc == PG_RW_NOMEM) {
            check(fz_arena.cap < ((size_t) 64 << 20));
        }

        if (rc == PG_RW_BAD_SYMBOLS && !longrun) {
            check(pc2 != NULL && pc2->n_symbols > 0);
            check(req.symtab.n == pc2->n_symbols);
            check(pg_rw_symbol(&req.symtab, 0).len > 0);
            check(same_bytes(pc2->symbols[0], pg_rw_symbol(&req.symtab, 0)));
        }

        goto done;
    }

    /* accepted: protobuf-c must accept it too */

    if (longrun) {
        goto encode;
    }

    check(pc1 != NULL || pc2 != NULL);

    n = pc1 ? pc1->n_timeseries : pc2->n_timeseries;
    check(req.nseries_total == n);
    check(req.stats.series + req.invalid_series == n);
    check(fz_in.seen == req.stats.series);

    /* each series' verdict, by the reference, on exact bytes */

    samples = 0;
    have_first = 0;
    first_why = 0;

    if (pc2) {
        check(req.symtab.n == pc2->n_symbols);

        for (i = 0; i < pc2->n_symbols; i++) {
            pg_str_t  sy = pg_rw_symbol(&req.symtab, (uint32_t) i);

            check(same_bytes(pc2->symbols[i], sy));
            check(((req.symtab.off[i] & PG_RW_SYM_BAD_UTF8) == 0)
                  == (ref_utf8_valid(sy.data, sy.len) != 0));
        }
    }

    for (i = 0; i < n; i++) {
        unsigned   extra = 0;
        size_t     k;

        if (pc1) {
            Prometheus__TimeSeries  *t = pc1->timeseries[i];

            ls = malloc((t->n_labels + 1) * sizeof(fz_label_t));
            nl = fz_labels1(buf, len, i, ls, t->n_labels);
            check(nl == t->n_labels);

            for (k = 0; k < nl; k++) {
                pg_str_t  ln = { (const uint8_t *) ls[k].name, ls[k].nl };
                pg_str_t  lv = { (const uint8_t *) ls[k].value, ls[k].vl };

                check(same_bytes(t->labels[k]->name, ln));
                check(same_bytes(t->labels[k]->value, lv));
            }

            samples += t->n_samples + t->n_histograms;

        } else {
            V2(TimeSeries)  *t = pc2->timeseries[i];
            size_t           e;

            nl = t->n_labels_refs / 2;
            ls = malloc((nl + 1) * sizeof(fz_label_t));

            if (t->n_labels_refs % 2) {
                extra |= 1u << PG_RW_BAD_SYMBOL_REF;
            }

            for (k = 0; k < t->n_labels_refs; k++) {
                if (t->labels_refs[k] >= pc2->n_symbols) {
                    extra |= 1u << PG_RW_BAD_SYMBOL_REF;
                }
            }

            for (e = 0; e < t->n_exemplars; e++) {
                if (t->exemplars[e]->n_labels_refs % 2) {
                    extra |= 1u << PG_RW_BAD_SYMBOL_REF;
                }

                for (k = 0; k < t->exemplars[e]->n_labels_refs; k++) {
                    if (t->exemplars[e]->labels_refs[k] >= pc2->n_symbols) {
                        extra |= 1u << PG_RW_BAD_SYMBOL_REF;
                    }
                }
            }

            /* a metadata ref is checked when on the wire: protobuf-c's */
            /* 0 may be an absent one, fine, or an explicit one, not */
            {
                const uint8_t  *sd;
                size_t          sn;

                fz_series_bytes(buf, len, v, i, &sd, &sn);

                if (fz_count_field(sd, sd + sn, 5) > 1) {
                    extra |= 1u << 31;      /* merged: may or may not */
                }
            }

            if (t->metadata && (t->metadata->help_ref >= pc2->n_symbols
                                || t->metadata->unit_ref >= pc2->n_symbols))
            {
                if (t->metadata->help_ref || t->metadata->unit_ref
                    || pc2->n_symbols)
                {
                    extra |= 1u << PG_RW_BAD_SYMBOL_REF;
                } else {
                    extra |= 1u << 31;      /* may or may not apply */
                }
            }

            for (k = 0; k < nl; k++) {
                uint32_t  a = t->labels_refs[2 * k];
                uint32_t  b = t->labels_refs[2 * k + 1];
                pg_str_t  sa = { (const uint8_t *) "", 0 }, sb = sa;

                if (a < pc2->n_symbols) {
                    sa = pg_rw_symbol(&req.symtab, a);
                }

                if (b < pc2->n_symbols) {
                    sb = pg_rw_symbol(&req.symtab, b);
                }

                ls[k].name = (const char *) sa.data;
                ls[k].nl = sa.len;
                ls[k].value = (const char *) sb.data;
                ls[k].vl = sb.len;
            }

            samples += t->n_samples + t->n_histograms;
        }

        why = ref_verdict(ls, nl, extra & ~(1u << 31));
        free(ls);

        if (why == 0 && !(extra & (1u << 31))) {
            check(!pg_rw_bit(req.dropped, i));
        } else if (why != 0) {
            check(pg_rw_bit(req.dropped, i));
        }

        if (!have_first && pg_rw_bit(req.dropped, i)) {
            have_first = 1;
            first_why = why | ((extra & (1u << 31))
                               ? 1u << PG_RW_BAD_SYMBOL_REF : 0);

            /* unless a 1.0 metadata entry was left out before it */
            if (req.first.series != (size_t) -1) {
                check(req.first.series == i);
                check(first_why & (1u << req.first.reason));
            }
        }
    }

    check(have_first || req.invalid_series == 0);
    check(req.first.series != (size_t) -1 || req.invalid_metadata > 0
          || req.first.reason == PG_RW_OK);

    check(counted == samples);
    check(req.stats.samples + req.stats.histograms + req.invalid_samples
          == samples);

    if (pc1) {
        static fz_meta_t  md[4096];
        size_t            nmd;

        check(req.nmetadata_total == pc1->n_metadata);
        check(req.stats.metadata + req.invalid_metadata == pc1->n_metadata);

        nmd = fz_metadata1(buf, len, md, 4096);
        check(nmd == pc1->n_metadata);

        for (i = 0; i < nmd; i++) {
            check(same_bytes(pc1->metadata[i]->metric_family_name,
                             md[i].family));
            check((pg_rw_bit(req.dropped_metadata, i) == 0)
                  == (ref_utf8_valid(md[i].family.data, md[i].family.len)
                      && ref_utf8_valid(md[i].help.data, md[i].help.len)
                      && ref_utf8_valid(md[i].unit.data, md[i].unit.len)));
        }
    }

encode:

    if (fz_arena.cap < ((size_t) 64 << 20)) {
        goto done;
    }

    /* both versions, all series and a selection made of the input */

    select = calloc(req.nseries_total / 8 + 1, 1);
    check(select != NULL);

    for (i = 0; i < req.nseries_total; i++) {
        if ((i * 7 + len) % 3 != 0) {
            select[i >> 3] |= 1u << (i & 7);
        }
    }

    fz_check_encoding(buf, len, &req, NULL, v);
    fz_check_encoding(buf, len, &req, NULL, v == PG_RW_V1 ? PG_RW_V2
                                                          : PG_RW_V1);
    fz_check_encoding(buf, len, &req, select, v);
    fz_check_encoding(buf, len, &req, select, v == PG_RW_V1 ? PG_RW_V2
                                                            : PG_RW_V1);
    free(select);

done:

    fz_check_limits(buf, len, v, rc, &req, pc1, pc2);

    fz_free(pc1, pc2);
}


static void
fz_run(const uint8_t *data, size_t size, pg_rw_version_e v)
{
    size_t          n;
    uint8_t        *buf;
    pg_snappy_rc_e  rc;

    check(!pg_utf8_valid(data, size) == !ref_utf8_valid(data, size));

    /* an exactly sized copy: ASan sees any read past the body */
    buf = malloc(size ? size : 1);
    check(buf != NULL);
    memcpy(buf, data, size);
    fz_request(buf, size, v);
    free(buf);

    /* the bytes as a sender's snappy block, with the write guard */
    rc = pg_snappy_decoded_length(data, size, FZ_MAX_DECODED, &n);

    if (rc != PG_SNAPPY_OK) {
        check(size == 0 || rc == PG_SNAPPY_INVALID || n > FZ_MAX_DECODED);
        return;
    }

    buf = malloc(n ? n : 1);
    check(buf != NULL);

    if (pg_snappy_decode(data, size, buf, n) == PG_SNAPPY_OK) {
        fz_request(buf, n, v);
    }

    free(buf);
}

#endif /* FUZZ_RW_CHECK_H */
