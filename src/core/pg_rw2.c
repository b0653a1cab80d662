/*
 * Zero-copy validating decoder of remote-write 2.0 requests
 * (io.prometheus.write.v2.Request, proto/write_v2.proto).
 *
 * Symbols and series may come in any order on the wire (repeated fields
 * may interleave), so the top level is walked three times: to count the
 * symbols, to index them (and check each one's UTF-8 once), and to
 * validate the series against them.  Each walk only hops over the other
 * fields.  Both layouts of the created timestamp are read: TimeSeries
 * field 6 (Prometheus 3.5) and the start_timestamp of samples and
 * histograms (2.0-rc.4).
 */

#include "pg_rw_wire.h"

#include <stdio.h>


typedef struct {
    pg_rw_series_t        *s;
    const pg_rw_symtab_t  *sym;
    pg_rw_dec_t           *dec;
    pg_rw_reason_e         reason;
    pg_rw_reason_e         over;      /* PG_RW_OVER_LIMIT: stop */
    uint32_t               name_ref;
    uint32_t               help_ref;
    uint32_t               unit_ref;
    unsigned               have_name:1;
    unsigned               has_help:1;
    unsigned               has_unit:1;
    pg_str_t               prev;
    char                   detail[200];
} pg_rw2_labels_t;


static inline void
pg_rw2_invalid(pg_rw2_labels_t *lb, pg_rw_reason_e reason, const char *fmt,
    uint64_t a, uint64_t b)
{
    if (lb->reason == PG_RW_OK) {
        lb->reason = reason;
        snprintf(lb->detail, sizeof(lb->detail), fmt,
                 (unsigned long long) a, (unsigned long long) b);
    }
}


/* one label ref, paired with the one before it */
static inline void
pg_rw2_label_ref(pg_rw2_labels_t *lb, uint64_t v)
{
    int              utf8;
    uint32_t         ref, nr;
    pg_str_t         name;
    pg_label_t       l;
    pg_rw_series_t  *s;

    /* a uint32 field: Go's protobuf (so Prometheus) keeps the low bits */
    ref = (uint32_t) v;

    if (ref >= lb->sym->n) {
        pg_rw2_invalid(lb, PG_RW_BAD_SYMBOL_REF,
                       "label ref %llu past the %llu symbols", ref,
                       lb->sym->n);
    }

    if (!lb->have_name) {
        lb->name_ref = ref;
        lb->have_name = 1;
        return;
    }

    lb->have_name = 0;

    s = lb->s;
    s->nlabels++;

    nr = lb->name_ref;

    if (lb->dec->limits) {
        l.name.data = NULL;
        l.name.len = 0;
        l.value = l.name;

        if (nr < lb->sym->n && ref < lb->sym->n) {
            l.name = pg_rw_symbol(lb->sym, nr);
            l.value = pg_rw_symbol(lb->sym, ref);
        }

        lb->over = pg_rw_label_limits(lb->dec, s, s->nlabels, &l, 0);
        if (lb->over != PG_RW_OK) {
            return;
        }
    }

    if (lb->reason != PG_RW_OK) {
        return;
    }

    name = pg_rw_symbol(lb->sym, nr);

    utf8 = !((lb->sym->off[nr] | lb->sym->off[ref]) & PG_RW_SYM_BAD_UTF8);

    lb->reason = pg_rw_check_label(s, &lb->prev, name, utf8, lb->detail,
                                   sizeof(lb->detail));

    if (lb->reason == PG_RW_OK && pg_rw_is_name(name)) {
        s->name = pg_rw_symbol(lb->sym, ref);
    }
}


/* the refs of an exemplar: a run of pairs, all in the table */
static int
pg_rw2_check_exemplar(pg_rw2_labels_t *lb, const uint8_t *p,
    const uint8_t *end, uint32_t index)
{
    uint64_t  nrefs, bad;

    nrefs = 0;
    bad = UINT64_MAX;

    if (pg_rw_check_exemplar(p, end, lb->sym, &nrefs, &bad) != 0) {
        return -1;
    }

    if (bad != UINT64_MAX) {
        pg_rw2_invalid(lb, PG_RW_BAD_SYMBOL_REF,
                       "exemplar %llu: label ref %llu past the symbols",
                       index, bad);
    }

    if (nrefs & 1) {
        pg_rw2_invalid(lb, PG_RW_BAD_SYMBOL_REF,
                       "exemplar %llu: an odd number (%llu) of label refs",
                       index, nrefs);
    }

    return 0;
}


/* a histogram's start timestamp (rc.4, field 17), 0 if none */
static int64_t
pg_rw2_histogram_start(const uint8_t *p, const uint8_t *end)
{
    int64_t   field, start;
    unsigned  wt;
    uint64_t  v;

    start = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 17 && wt == PG_PB_VARINT) {
            if (pg_pb_varint(&p, end, &v) != 0) {
                break;
            }
            start = (int64_t) v;
            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            break;
        }
    }

    return start;
}


/*
 * Metadata: a field present on the wire replaces what an earlier
 * occurrence set (a message field met twice merges), so its refs are
 * checked once the series is read.
 */
static int
pg_rw2_check_metadata(pg_rw2_labels_t *lb, const uint8_t *p,
    const uint8_t *end)
{
    int64_t   field;
    unsigned  wt;
    uint64_t  v;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field != 1 && field != 3 && field != 4) {
            if (pg_pb_skip(&p, end, wt) != 0) {
                return -1;
            }
            continue;
        }

        if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
            return -1;
        }

        if (field == 1) {
            lb->s->metadata_type = (uint32_t) v;

        } else if (field == 3) {
            lb->help_ref = (uint32_t) v;
            lb->has_help = 1;

        } else {
            lb->unit_ref = (uint32_t) v;
            lb->has_unit = 1;
        }
    }

    return field < 0 ? -1 : 0;
}


/* the help or unit text a metadata ref names */
static void
pg_rw2_metadata_text(pg_rw2_labels_t *lb, uint32_t ref, pg_str_t *text,
    const char *past)
{
    if (ref < lb->sym->n) {
        *text = pg_rw_symbol(lb->sym, ref);

    } else {
        pg_rw2_invalid(lb, PG_RW_BAD_SYMBOL_REF, past, ref, lb->sym->n);
    }
}


static pg_rw_reason_e
pg_rw2_series(pg_rw_dec_t *dec, pg_rw_series_t *s)
{
    int64_t          field;
    unsigned         wt;
    uint64_t         v;
    const uint8_t   *p, *end, *d, *q;
    size_t           n;
    int64_t          start, created;
    int              has_created;
    pg_rw2_labels_t  lb;

    p = s->data;
    end = s->data + s->len;

    pg_rw_series_clear(s);
    s->created_timestamp = 0;
    s->metadata_type = 0;
    s->help.data = (const uint8_t *) "";
    s->help.len = 0;
    s->unit = s->help;

    lb.s = s;
    lb.sym = s->symtab;
    lb.dec = dec;
    lb.reason = PG_RW_OK;
    lb.over = PG_RW_OK;
    lb.have_name = 0;
    lb.has_help = 0;
    lb.has_unit = 0;
    lb.name_ref = 0;
    lb.prev.data = NULL;
    lb.prev.len = 0;

    created = 0;
    has_created = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        switch (field) {

        case 1:
            if (pg_pb_varint_run(&p, end, wt, &d, &n) != 0) {
                goto malformed;
            }

            for (q = d; q < d + n; /* void */) {
                if (*q < 0x80) {
                    v = *q++;

                } else if (pg_pb_varint(&q, d + n, &v) != 0) {
                    p = q;
                    goto malformed;
                }

                pg_rw2_label_ref(&lb, v);

                if (lb.over != PG_RW_OK) {
                    return lb.over;
                }
            }

            break;

        case 2:
            start = 0;

            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                || pg_rw_check_sample(d, d + n, &start) != 0)
            {
                goto malformed;
            }

            if (created == 0) {
                created = start;
            }

            s->nsamples++;
            break;

        case 3:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                || pg_rw_check_histogram(d, d + n, 1) != 0)
            {
                goto malformed;
            }

            if (created == 0) {
                created = pg_rw2_histogram_start(d, d + n);
            }

            s->nhistograms++;
            break;

        case 4:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                || pg_rw2_check_exemplar(&lb, d, d + n, s->nexemplars) != 0)
            {
                goto malformed;
            }

            if (dec->limits
                && pg_rw_exemplar_limits(dec, s, d, d + n) != PG_RW_OK)
            {
                return PG_RW_OVER_LIMIT;
            }

            s->nexemplars++;
            break;

        case 5:
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0
                || pg_rw2_check_metadata(&lb, d, d + n) != 0)
            {
                goto malformed;
            }
            break;

        case 6:
            if (wt != PG_PB_VARINT || pg_pb_varint(&p, end, &v) != 0) {
                goto malformed;
            }

            s->created_timestamp = (int64_t) v;
            has_created = 1;
            break;

        default:
            if (pg_pb_skip(&p, end, wt) != 0) {
                goto malformed;
            }
        }
    }

    if (field < 0) {
        goto malformed;
    }

    if (!has_created) {
        s->created_timestamp = created;
    }

    if (lb.has_help) {
        pg_rw2_metadata_text(&lb, lb.help_ref, &s->help,
                             "metadata help ref %llu past the %llu symbols");
    }

    if (lb.has_unit) {
        pg_rw2_metadata_text(&lb, lb.unit_ref, &s->unit,
                             "metadata unit ref %llu past the %llu symbols");
    }

    if (lb.have_name) {
        pg_rw2_invalid(&lb, PG_RW_BAD_SYMBOL_REF,
                       "an odd number (%llu) of label refs",
                       (uint64_t) s->nlabels * 2 + 1, 0);
    }

    return pg_rw_series_end(dec, s, lb.reason, lb.detail, sizeof(lb.detail));

malformed:

    return pg_rw_series_malformed(dec, s, p);
}


pg_rw_reason_e
pg_rw2_decode(pg_rw_dec_t *dec)
{
    int64_t           field;
    unsigned          wt;
    const uint8_t    *p, *end, *d;
    size_t            n, nsym, nseries;
    uint32_t         *off;
    pg_str_t          s0;
    pg_rw_series_t    s;
    pg_rw_reason_e    reason;
    pg_rw_request_t  *req;

    req = dec->req;
    end = dec->buf + dec->len;

    if (dec->len > PG_RW_SYM_OFFSET) {
        return pg_rw_request_error(dec, PG_RW_MALFORMED, 0, dec->buf,
                                   "a 2.0 request of %zu bytes is above "
                                   "2 GB", dec->len);
    }

    /* 1: the wire format of the top level, the counts */

    nsym = 0;
    nseries = 0;
    p = dec->buf;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field == 4 || field == 5) {
            if (wt != PG_PB_LEN || pg_pb_len(&p, end, &d, &n) != 0) {
                goto malformed;
            }

            if (field == 4) {
                nsym++;
            } else {
                nseries++;
            }

            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            goto malformed;
        }
    }

    if (field < 0) {
        goto malformed;
    }

    dec->nseries_max = nseries;

    /* 2: the symbol table */

    off = NULL;

    if (nsym) {
        off = pg_rw_alloc(dec->alloc, nsym * sizeof(uint32_t));
        if (off == NULL) {
            return pg_rw_request_error(dec, PG_RW_NOMEM, 0, dec->buf,
                                       "out of memory for %zu symbols",
                                       nsym);
        }

        nsym = 0;
        p = dec->buf;

        while ((field = pg_pb_key(&p, end, &wt)) > 0) {
            if (field == 4) {
                off[nsym] = (uint32_t) (p - dec->buf);

                if (pg_pb_len(&p, end, &d, &n) != 0) {
                    goto malformed;   /* not reached: walk 1 checked it */
                }

                if (!pg_rw_utf8_valid(d, n)) {
                    off[nsym] |= PG_RW_SYM_BAD_UTF8;
                }

                nsym++;
                continue;
            }

            (void) pg_pb_skip(&p, end, wt);
        }
    }

    req->symtab.base = dec->buf;
    req->symtab.off = off;
    req->symtab.n = (uint32_t) nsym;

    /*
     * symbols[0] must be "": when it is not, the request is refused, but
     * only once its series proved well-formed (a malformed request is
     * reported as such), and no series goes to the callback.
     */

    s0.len = 0;

    if (nsym) {
        s0 = pg_rw_symbol(&req->symtab, 0);

        if (s0.len != 0) {
            dec->cb = NULL;
        }
    }

    /* 3: the series */

    memset(&s, 0, sizeof(pg_rw_series_t));
    s.version = PG_RW_V2;
    s.symtab = &req->symtab;

    p = dec->buf;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {

        if (field != 5) {
            (void) pg_pb_skip(&p, end, wt);
            continue;
        }

        if (pg_pb_len(&p, end, &d, &n) != 0) {
            goto malformed;
        }

        s.data = d;
        s.len = n;
        s.index = req->nseries_total++;

        reason = pg_rw2_series(dec, &s);
        if (reason != PG_RW_OK) {
            return reason;
        }
    }

    if (s0.len != 0) {
        memset(&req->stats, 0, sizeof(pg_rw_stats_t));

        return pg_rw_request_error(dec, PG_RW_BAD_SYMBOLS, 0, s0.data,
                                   "symbols[0] is not the empty string "
                                   "(%zu bytes)", s0.len);
    }

    return PG_RW_OK;

malformed:

    return pg_rw_request_error(dec, PG_RW_MALFORMED, 0, p,
                               "malformed protobuf Request at byte %zu",
                               (size_t) (p - dec->buf));
}
