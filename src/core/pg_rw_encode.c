/*
 * Re-encoding of a decoded remote-write request: the kept series in the
 * same version (a subset, for targets that must not see invalid series or
 * only get some), or translated between 1.0 and 2.0.
 *
 * The input was validated by pg_rw_decode(), so the walks here trust the
 * wire format (they still stop at anything they cannot read, never reading
 * past a buffer).  A length-delimited field is written with a one-byte
 * length first and moved up when its content turns out longer: contents
 * are short as a rule.  2.0 output puts the symbol table first, as senders
 * do: it is built while the series are written, then the series are moved
 * up behind it once.
 *
 * A skipped label (opts->skip_label, promgate_tenant_label ... drop) is
 * left out of the series' own labels on every path: a series that has it
 * is written again without it (same version) or translated without it;
 * exemplar labels and the series without it are as they were.  A 2.0
 * body of the same version keeps the whole symbol table, the skipped
 * name's symbol too (a symbol no ref points at is allowed and harmless);
 * a translation to 2.0 never interns it.
 */

#include "pg_rw_wire.h"


#define PG_ENC_CACHE  64               /* label positions remembered */


/* a slot of the symbol hash table: the string itself, no indirection */
typedef struct {
    const uint8_t  *data;
    uint32_t        len;
    uint32_t        ref;               /* 0: empty slot ("" is never in) */
} pg_enc_slot_t;


typedef struct {
    pg_str_t        str;
    uint32_t        ref;
} pg_enc_cached_t;


/* a 1.0 MetricMetadata, or the metadata of a 2.0 series */
typedef struct {
    pg_str_t        family;
    uint32_t        type;
    pg_str_t        help;
    pg_str_t        unit;
    uint64_t        hash;
} pg_enc_meta_t;


typedef struct {
    pg_buf_t        *out;
    pg_allocator_t  *alloc;

    /* 1.0 to 2.0: the symbols being built */
    pg_str_t        *syms;
    uint32_t         nsyms;
    uint32_t         csyms;
    pg_enc_slot_t   *slots;
    uint32_t         mask;
    uint64_t         seed;
    uint8_t         *copy;             /* the symbols' bytes, close */
    size_t           ncopy;            /*   together: cache-friendly */
    pg_enc_cached_t  names[PG_ENC_CACHE];
    pg_enc_cached_t  values[PG_ENC_CACHE];

    pg_str_t         skip;             /* the label left out, len 0: none */

    /* metadata: 1.0 entries by family, or 2.0's distinct ones */
    pg_enc_meta_t   *meta;
    uint32_t         nmeta;
    uint32_t         cmeta;
    uint32_t        *mslots;           /* index + 1, 0 empty */
    uint32_t         mmask;
} pg_enc_t;


/* ------------------------------------------------------------ hashing */


static inline uint64_t
pg_enc_mix(uint64_t a, uint64_t b)
{
    __uint128_t  r;

    r = (__uint128_t) a * b;

    return (uint64_t) r ^ (uint64_t) (r >> 64);
}


/*
 * A multiply-fold hash in the manner of wyhash, inline: the symbol table
 * hashes every label string of a request, and most are short.  The seed
 * comes from the caller's address (ASLR), so inputs that collide on
 * purpose are harder to make.
 */
static inline uint64_t
pg_enc_hash(const uint8_t *p, size_t len, uint64_t seed)
{
    uint64_t  a, b, h;
    uint32_t  x, y;
    size_t    i;

    h = seed ^ (len * 0x9e3779b97f4a7c15ull);

    if (len <= 16) {
        if (len >= 8) {
            memcpy(&a, p, 8);
            memcpy(&b, p + len - 8, 8);

        } else if (len >= 4) {
            memcpy(&x, p, 4);
            memcpy(&y, p + len - 4, 4);
            a = x;
            b = y;

        } else if (len > 0) {
            a = (uint64_t) p[0] << 16 | (uint64_t) p[len >> 1] << 8
                | p[len - 1];
            b = 0;

        } else {
            a = 0;
            b = 0;
        }

    } else {
        for (i = len; i > 16; i -= 16, p += 16) {
            memcpy(&a, p, 8);
            memcpy(&b, p + 8, 8);
            h = pg_enc_mix(a ^ 0xa0761d6478bd642full, b ^ h);
        }

        /* the last 16 bytes, overlapping what was mixed in */
        memcpy(&a, p + i - 16, 8);
        memcpy(&b, p + i - 8, 8);
    }

    return pg_enc_mix(a ^ 0xe7037ed1a0b428dbull,
                      b ^ h ^ 0x8ebc6af09c88c6e3ull);
}


/* ------------------------------------------------------------ output */


static inline int
pg_enc_reserve(pg_buf_t *b, size_t n)
{
    if ((size_t) (b->end - b->pos) >= n) {
        return 0;
    }

    if (b->grow == NULL || b->grow(b, n) != 0
        || (size_t) (b->end - b->pos) < n)
    {
        return -1;
    }

    return 0;
}


static inline int
pg_enc_bytes(pg_buf_t *b, const uint8_t *p, size_t n)
{
    if (pg_enc_reserve(b, n) != 0) {
        return -1;
    }

    memcpy(b->pos, p, n);
    b->pos += n;

    return 0;
}


/* a length-delimited field with a one-byte length for now (reserved) */
static inline size_t
pg_enc_open(pg_buf_t *b, uint8_t tag)
{
    *b->pos++ = tag;
    return (size_t) (b->pos++ - b->start);
}


static inline int
pg_enc_close(pg_buf_t *b, size_t at)
{
    size_t    len, k;
    uint8_t  *p;

    len = (size_t) (b->pos - b->start) - at - 1;

    if (len < 0x80) {
        b->start[at] = (uint8_t) len;
        return 0;
    }

    k = pg_pb_varint_size(len) - 1;

    if (pg_enc_reserve(b, k) != 0) {
        return -1;
    }

    p = b->start + at;
    memmove(p + 1 + k, p + 1, len);
    pg_pb_put_varint(p, len);
    b->pos += k;

    return 0;
}


static inline void
pg_enc_string(pg_buf_t *b, uint8_t tag, pg_str_t s)
{
    b->pos = pg_pb_put_bytes(b->pos, tag, s.data, s.len);
}


/* ------------------------------------------------------------ subset */


static int
pg_rw_kept(const pg_rw_request_t *req, const uint8_t *select, size_t i)
{
    return !pg_rw_bit(req->dropped, i)
           && (select == NULL || pg_rw_bit(select, i));
}


/*
 * The label pairs of a 2.0 series or exemplar: its labels_refs, packed or
 * not, in one or more fields, read a pair at a time.  Not through the
 * iterator of pg_rw2.c: this is the hot loop of the translations.  A
 * malformed field ends the walk (the series were validated before).
 */

typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
    const uint8_t  *q;          /* the refs of the current field */
    const uint8_t  *qend;
} pg_enc_refs_t;


static void
pg_enc_refs_init(pg_enc_refs_t *it, const uint8_t *d, size_t n)
{
    it->p = d;
    it->end = d + n;
    it->q = NULL;
    it->qend = NULL;
}


/* the next ref: 1, or 0 at the end */
static inline int
pg_enc_refs_ref(pg_enc_refs_t *it, uint32_t *ref)
{
    int64_t   field;
    unsigned  wt;
    uint64_t  v;
    size_t    len;

    while (it->q == it->qend) {

        field = pg_pb_key(&it->p, it->end, &wt);

        if (field <= 0) {
            return 0;
        }

        if (field != 1) {
            if (pg_pb_skip(&it->p, it->end, wt) != 0) {
                return 0;
            }
            continue;
        }

        if (wt == PG_PB_LEN) {
            if (pg_pb_len(&it->p, it->end, &it->q, &len) != 0) {
                return 0;
            }
            it->qend = it->q + len;

        } else {
            it->q = it->p;
            if (pg_pb_varint(&it->p, it->end, &v) != 0) {
                return 0;
            }
            it->qend = it->p;
        }
    }

    if (*it->q < 0x80) {
        *ref = *it->q++;
        return 1;
    }

    if (pg_pb_varint(&it->q, it->qend, &v) != 0) {
        it->q = it->qend;
        it->p = it->end;
        return 0;
    }

    *ref = (uint32_t) v;

    return 1;
}


/* the next (name, value) pair of refs: 1, or 0 at the end */
static inline int
pg_enc_refs_next(pg_enc_refs_t *it, uint32_t *name, uint32_t *value)
{
    return pg_enc_refs_ref(it, name) && pg_enc_refs_ref(it, value);
}


/*
 * The label pairs of a 2.0 series, those whose name is skip left out:
 * written to out as varints when out is not NULL; returns how many pairs
 * were left out.
 */
static size_t
pg_enc_refs_skip(const pg_rw_symtab_t *sym, const uint8_t *d, size_t n,
    pg_str_t skip, pg_buf_t *out)
{
    uint32_t       ref, nref;
    size_t         skipped;
    pg_enc_refs_t  it;

    skipped = 0;
    pg_enc_refs_init(&it, d, n);

    while (pg_enc_refs_next(&it, &nref, &ref)) {

        if (nref < sym->n && pg_rw_str_eq(pg_rw_symbol(sym, nref), skip)) {
            skipped++;
            continue;
        }

        if (out) {
            out->pos = pg_pb_put_varint(out->pos, nref);
            out->pos = pg_pb_put_varint(out->pos, ref);
        }
    }

    return skipped;
}


/* whether a series (content d[0..n)) has a label named skip */
static int
pg_enc_series_has(const pg_rw_request_t *req, const uint8_t *d, size_t n,
    pg_str_t skip)
{
    int64_t         field;
    const uint8_t  *p, *end, *ld;
    size_t          ln;
    pg_label_t      l;

    if (req->version == PG_RW_V2) {
        return pg_enc_refs_skip(&req->symtab, d, n, skip, NULL) != 0;
    }

    p = d;
    end = d + n;

    while ((field = pg_pb_next_len(&p, end, &ld, &ln)) > 0) {
        if (field == 1 && pg_rw_parse_label(ld, ld + ln, &l) == 0
            && pg_rw_str_eq(l.name, skip))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * A kept series (field tag, content d[0..n)) that has the label named
 * skip, written without it: 0, or -1 when out could not grow.  1.0: the
 * Label fields of that name are left out; 2.0: the refs are written again
 * as one packed field where the first labels_refs field was, less the
 * pair.
 */
static int
pg_enc_series_skip(pg_buf_t *out, const pg_rw_request_t *req, uint8_t tag,
    const uint8_t *d, size_t n, pg_str_t skip)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *at, *ld, *q;
    size_t          ln, o, r;
    pg_label_t      l;
    int             refs;

    end = d + n;

    /* no longer than it was, but for the lengths written again */

    if (pg_enc_reserve(out, n + 32) != 0) {
        return -1;
    }

    o = pg_enc_open(out, tag);

    p = d;
    refs = 0;

    for ( ;; ) {
        at = p;
        field = pg_pb_key(&p, end, &wt);

        if (field <= 0 || pg_pb_skip(&p, end, wt) != 0) {
            break;
        }

        if (field == 1 && req->version == PG_RW_V2) {
            if (refs) {
                continue;
            }

            refs = 1;
            r = pg_enc_open(out, pg_pb_tag(1, PG_PB_LEN));
            (void) pg_enc_refs_skip(&req->symtab, d, n, skip, out);

            if (out->pos == out->start + r + 1) {
                out->pos -= 2;          /* no labels left: no field */

            } else if (pg_enc_close(out, r) != 0) {
                return -1;
            }

            continue;
        }

        if (field == 1 && wt == PG_PB_LEN && req->version == PG_RW_V1) {
            q = at;
            (void) pg_pb_key(&q, end, &wt);

            if (pg_pb_len(&q, end, &ld, &ln) == 0
                && pg_rw_parse_label(ld, ld + ln, &l) == 0
                && pg_rw_str_eq(l.name, skip))
            {
                continue;
            }
        }

        memcpy(out->pos, at, p - at);
        out->pos += p - at;
    }

    return pg_enc_close(out, o);
}


/*
 * The top-level fields as they are, less the series (and 1.0 metadata)
 * left out; runs of kept fields are copied in one piece.  A kept series
 * that has the skipped label is written again without it.
 */
static int
pg_rw_encode_subset(const uint8_t *buf, size_t len,
    const pg_rw_request_t *req, const uint8_t *select, pg_str_t skip,
    pg_buf_t *out)
{
    int64_t         field, series_field;
    unsigned        wt;
    const uint8_t  *p, *end, *run, *at, *d, *q;
    size_t          nseries, nmeta, n;
    int             keep;

    if (req->dropped == NULL && req->dropped_metadata == NULL
        && select == NULL && skip.len == 0)
    {
        return pg_enc_bytes(out, buf, len);
    }

    series_field = req->version == PG_RW_V2 ? 5 : 1;

    p = buf;
    end = buf + len;
    run = p;
    at = p;
    nseries = 0;
    nmeta = 0;

    for ( ;; ) {
        at = p;
        field = pg_pb_key(&p, end, &wt);

        if (field <= 0) {
            break;
        }

        d = p;

        if (pg_pb_skip(&p, end, wt) != 0) {
            break;
        }

        if (field == series_field && wt == PG_PB_LEN) {
            keep = pg_rw_kept(req, select, nseries);
            nseries++;

            if (keep && skip.len) {
                q = d;

                if (pg_pb_len(&q, end, &d, &n) != 0) {
                    break;
                }

                if (!pg_enc_series_has(req, d, n, skip)) {
                    continue;
                }

                if (at > run && pg_enc_bytes(out, run, at - run) != 0) {
                    return -1;
                }

                if (pg_enc_series_skip(out, req,
                                       pg_pb_tag(series_field, PG_PB_LEN),
                                       d, n, skip)
                    != 0)
                {
                    return -1;
                }

                run = p;
                continue;
            }

        } else if (req->version == PG_RW_V1 && field == 3 && wt == PG_PB_LEN) {
            keep = !pg_rw_bit(req->dropped_metadata, nmeta);
            nmeta++;

        } else {
            keep = 1;
        }

        if (!keep) {
            if (at > run && pg_enc_bytes(out, run, at - run) != 0) {
                return -1;
            }

            run = p;
        }
    }

    if (at > run && pg_enc_bytes(out, run, at - run) != 0) {
        return -1;
    }

    return 0;
}


/* ------------------------------------------------ what both ways share */


/* a Histogram less its start timestamp (field 17, 2.0-rc.4) */
static int
pg_enc_histogram(pg_buf_t *out, uint8_t tag, const uint8_t *d, size_t n)
{
    int64_t         field;
    unsigned        wt;
    const uint8_t  *p, *end, *run, *at;
    size_t          o;

    if (pg_enc_reserve(out, n + 2) != 0) {
        return -1;
    }

    o = pg_enc_open(out, tag);

    p = d;
    end = d + n;
    run = p;
    at = p;

    for ( ;; ) {
        at = p;
        field = pg_pb_key(&p, end, &wt);

        if (field <= 0 || pg_pb_skip(&p, end, wt) != 0) {
            break;
        }

        if (field == 17) {
            memcpy(out->pos, run, at - run);
            out->pos += at - run;
            run = p;
        }
    }

    memcpy(out->pos, run, at - run);
    out->pos += at - run;

    return pg_enc_close(out, o);
}


/*
 * A value (double, field f) and a timestamp (int64, field f + 1), alike in
 * both versions: a Sample's (1, 2) or an Exemplar's (2, 3).  A zero
 * timestamp is left out, as proto3 does.  out holds 20 bytes.
 */
static inline void
pg_enc_value_ts(pg_buf_t *out, const uint8_t *p, const uint8_t *end,
    int64_t f)
{
    int64_t         field;
    unsigned        wt;
    uint64_t        v, ts;
    const uint8_t  *value;

    value = NULL;
    ts = 0;

    while ((field = pg_pb_key(&p, end, &wt)) > 0) {
        if (field == f && wt == PG_PB_I64 && end - p >= 8) {
            value = p;
            p += 8;
            continue;
        }

        if (field == f + 1 && wt == PG_PB_VARINT
            && pg_pb_varint(&p, end, &v) == 0)
        {
            ts = v;
            continue;
        }

        if (pg_pb_skip(&p, end, wt) != 0) {
            break;
        }
    }

    if (value) {
        *out->pos++ = pg_pb_tag(f, PG_PB_I64);
        memcpy(out->pos, value, 8);
        out->pos += 8;
    }

    if (ts) {
        *out->pos++ = pg_pb_tag(f + 1, PG_PB_VARINT);
        out->pos = pg_pb_put_varint(out->pos, ts);
    }
}


static int
pg_enc_sample(pg_buf_t *out, const uint8_t *d, size_t n)
{
    uint64_t        v;
    const uint8_t  *p;
    size_t          o;

    if (pg_enc_reserve(out, 24) != 0) {
        return -1;
    }

    /* the usual shape, value then timestamp and nothing else: as it is */

    p = d + 10;

    if (n >= 11 && n <= 20 && d[0] == 0x09 && d[9] == 0x10
        && pg_pb_varint(&p, d + n, &v) == 0 && p == d + n)
    {
        *out->pos++ = pg_pb_tag(2, PG_PB_LEN);
        *out->pos++ = (uint8_t) n;
        memcpy(out->pos, d, n);
        out->pos += n;
        return 0;
    }

    o = pg_enc_open(out, pg_pb_tag(2, PG_PB_LEN));
    pg_enc_value_ts(out, d, d + n, 1);

    return pg_enc_close(out, o);
}


static const char  *pg_enc_suffixes[] = {
    "_bucket", "_sum", "_count", "_total", "_created", "_info"
};


/* name less one of the first n suffixes, or an empty string */
static pg_str_t
pg_enc_strip(pg_str_t name, size_t i)
{
    size_t    k;
    pg_str_t  r;

    k = strlen(pg_enc_suffixes[i]);

    if (name.len > k
        && memcmp(name.data + name.len - k, pg_enc_suffixes[i], k) == 0)
    {
        r.data = name.data;
        r.len = name.len - k;
        return r;
    }

    r.data = NULL;
    r.len = 0;
    return r;
}


static uint64_t
pg_enc_meta_hash(const pg_enc_meta_t *m, int full, uint64_t seed)
{
    uint64_t  h;

    h = pg_enc_hash(m->family.data, m->family.len, seed);

    if (full) {
        h ^= pg_enc_hash(m->help.data, m->help.len, seed + m->type + 1);
        h = h * 0x9e3779b97f4a7c15ull
            ^ pg_enc_hash(m->unit.data, m->unit.len, seed + 7);
    }

    return h;
}


static int
pg_enc_meta_eq(const pg_enc_meta_t *a, const pg_enc_meta_t *b, int full)
{
    if (!pg_str_eq(a->family, b->family)) {
        return 0;
    }

    return !full || (a->type == b->type && pg_str_eq(a->help, b->help)
                     && pg_str_eq(a->unit, b->unit));
}


/*
 * Finds m (by family, or by all four fields when full), else adds it.
 * Returns its index, or -1 when out of memory.
 */
static int64_t
pg_enc_meta_add(pg_enc_t *e, pg_enc_meta_t *m, int full, int *added)
{
    uint32_t        i, k, cap, *slots;
    pg_enc_meta_t  *meta;

    m->hash = pg_enc_meta_hash(m, full, e->seed);
    *added = 0;

    if (e->mslots) {
        for (i = (uint32_t) m->hash & e->mmask; e->mslots[i];
             i = (i + 1) & e->mmask)
        {
            k = e->mslots[i] - 1;

            if (e->meta[k].hash == m->hash && pg_enc_meta_eq(&e->meta[k], m,
                                                             full))
            {
                return k;
            }
        }
    }

    if (e->nmeta == e->cmeta) {
        cap = e->cmeta ? e->cmeta * 2 : 64;

        meta = pg_rw_alloc(e->alloc, cap * sizeof(pg_enc_meta_t));
        slots = pg_rw_alloc(e->alloc, cap * 2 * sizeof(uint32_t));

        if (meta == NULL || slots == NULL) {
            return -1;
        }

        if (e->nmeta) {
            memcpy(meta, e->meta, e->nmeta * sizeof(pg_enc_meta_t));
        }

        memset(slots, 0, cap * 2 * sizeof(uint32_t));

        e->meta = meta;
        e->cmeta = cap;
        e->mslots = slots;
        e->mmask = cap * 2 - 1;

        for (k = 0; k < e->nmeta; k++) {
            for (i = (uint32_t) meta[k].hash & e->mmask; slots[i];
                 i = (i + 1) & e->mmask)
            {
                /* void */
            }

            slots[i] = k + 1;
        }
    }

    k = e->nmeta++;
    e->meta[k] = *m;

    for (i = (uint32_t) m->hash & e->mmask; e->mslots[i];
         i = (i + 1) & e->mmask)
    {
        /* void */
    }

    e->mslots[i] = k + 1;
    *added = 1;

    return k;
}


static const pg_enc_meta_t *
pg_enc_meta_find(pg_enc_t *e, pg_str_t family)
{
    uint32_t  i, k;
    uint64_t  h;

    if (e->nmeta == 0 || family.len == 0) {
        return NULL;
    }

    h = pg_enc_hash(family.data, family.len, e->seed);

    for (i = (uint32_t) h & e->mmask; e->mslots[i]; i = (i + 1) & e->mmask) {
        k = e->mslots[i] - 1;

        if (e->meta[k].hash == h && pg_str_eq(e->meta[k].family, family)) {
            return &e->meta[k];
        }
    }

    return NULL;
}


/* ------------------------------------------------------- 1.0 to 2.0 */


static int
pg_enc_grow_symbols(pg_enc_t *e)
{
    uint32_t        cap, i, j;
    uint64_t        h;
    pg_str_t       *syms;
    pg_enc_slot_t  *slots;

    if (e->nsyms == e->csyms) {
        cap = e->csyms * 2;

        syms = pg_rw_alloc(e->alloc, cap * sizeof(pg_str_t));
        if (syms == NULL) {
            return -1;
        }

        memcpy(syms, e->syms, e->nsyms * sizeof(pg_str_t));
        e->syms = syms;
        e->csyms = cap;
    }

    if (e->nsyms * 4 > (e->mask + 1) * 3) {
        cap = (e->mask + 1) * 2;

        slots = pg_rw_alloc(e->alloc, cap * sizeof(pg_enc_slot_t));
        if (slots == NULL) {
            return -1;
        }

        memset(slots, 0, cap * sizeof(pg_enc_slot_t));

        for (i = 0; i <= e->mask; i++) {
            if (e->slots[i].ref == 0) {
                continue;
            }

            h = pg_enc_hash(e->slots[i].data, e->slots[i].len, e->seed);

            for (j = (uint32_t) h & (cap - 1); slots[j].ref;
                 j = (j + 1) & (cap - 1))
            {
                /* void */
            }

            slots[j] = e->slots[i];
        }

        e->slots = slots;
        e->mask = cap - 1;
    }

    return 0;
}


/*
 * The ref of s (hashed to h) in the table being built; UINT32_MAX: out of
 * memory.
 */
static inline uint32_t
pg_enc_intern_hashed(pg_enc_t *e, pg_str_t s, uint64_t h)
{
    uint32_t        i, r;
    pg_enc_slot_t  *slot;

    for (i = (uint32_t) h & e->mask;
         (slot = &e->slots[i])->ref != 0;
         i = (i + 1) & e->mask)
    {
        if (slot->len == s.len && pg_rw_mem_eq(slot->data, s.data, s.len)) {
            return slot->ref;
        }
    }

    /* a new symbol: its bytes copied next to the others' */

    if (s.len <= 256) {
        if (e->ncopy < s.len) {
            e->ncopy = 65536;
            e->copy = pg_rw_alloc(e->alloc, e->ncopy);
            if (e->copy == NULL) {
                return UINT32_MAX;
            }
        }

        memcpy(e->copy, s.data, s.len);
        s.data = e->copy;
        e->copy += s.len;
        e->ncopy -= s.len;
    }

    r = e->nsyms++;
    e->syms[r] = s;
    slot->data = s.data;
    slot->len = (uint32_t) s.len;
    slot->ref = r;

    if ((e->nsyms == e->csyms || e->nsyms * 4 > (e->mask + 1) * 3)
        && pg_enc_grow_symbols(e) != 0)
    {
        return UINT32_MAX;
    }

    return r;
}


static inline uint32_t
pg_enc_intern(pg_enc_t *e, pg_str_t s)
{
    if (s.len == 0) {
        return 0;
    }

    return pg_enc_intern_hashed(e, s, pg_enc_hash(s.data, s.len, e->seed));
}


/*
 * A label string on its way to a ref.  What label position i had in the
 * series before is tried first (names repeat so, and values often);
 * otherwise the string is hashed and its slot prefetched, and looked up
 * only when the next label has been read: the cache misses of two labels
 * overlap.
 */
typedef struct {
    pg_str_t        str;
    uint64_t        hash;
    uint32_t        ref;               /* UINT32_MAX: not known yet */
} pg_enc_pending_t;


static inline void
pg_enc_prepare(pg_enc_t *e, pg_enc_pending_t *pd, pg_enc_cached_t *cache,
    uint32_t i, pg_str_t s)
{
    pd->str = s;

    if (i < PG_ENC_CACHE && pg_rw_str_eq(cache[i].str, s)) {
        pd->ref = cache[i].ref;
        return;
    }

    if (s.len == 0) {
        pd->ref = 0;
        return;
    }

    pd->hash = pg_enc_hash(s.data, s.len, e->seed);
    pd->ref = UINT32_MAX;

    __builtin_prefetch(&e->slots[(uint32_t) pd->hash & e->mask]);
}


static inline uint32_t
pg_enc_resolve(pg_enc_t *e, pg_enc_pending_t *pd, pg_enc_cached_t *cache,
    uint32_t i)
{
    uint32_t  r;

    if (pd->ref != UINT32_MAX) {
        return pd->ref;
    }

    r = pg_enc_intern_hashed(e, pd->str, pd->hash);

    if (i < PG_ENC_CACHE) {
        cache[i].str = pd->str;
        cache[i].ref = r;
    }

    return r;
}


/* the refs of label i - 1 */
static inline int
pg_enc_label_refs(pg_enc_t *e, pg_enc_pending_t *pd, uint32_t i,
    pg_buf_t *out)
{
    uint32_t  nr, vr;

    nr = pg_enc_resolve(e, &pd[0], e->names, i - 1);
    vr = pg_enc_resolve(e, &pd[1], e->values, i - 1);

    if (nr == UINT32_MAX || vr == UINT32_MAX
        || pg_enc_reserve(out, 10) != 0)
    {
        return -1;
    }

    out->pos = pg_pb_put_varint(out->pos, nr);
    out->pos = pg_pb_put_varint(out->pos, vr);

    return 0;
}


static int
pg_enc12_init(pg_enc_t *e, size_t len)
{
    /* about one distinct string per 256 bytes of a 1.0 request */

    for (e->csyms = 1024; e->csyms < len / 256 && e->csyms < (1u << 24);
         e->csyms *= 2)
    {
        /* void */
    }

    e->mask = e->csyms * 2 - 1;

    e->syms = pg_rw_alloc(e->alloc, e->csyms * sizeof(pg_str_t));
    e->slots = pg_rw_alloc(e->alloc, (e->mask + 1) * sizeof(pg_enc_slot_t));

    if (e->syms == NULL || e->slots == NULL) {
        return -1;
    }

    memset(e->slots, 0, (e->mask + 1) * sizeof(pg_enc_slot_t));

    e->syms[0].data = (const uint8_t *) "";
    e->syms[0].len = 0;
    e->nsyms = 1;

    /* an empty entry matches only an empty string: ref 0 */
    memset(e->names, 0, sizeof(e->names));
    memset(e->values, 0, sizeof(e->values));

    return 0;
}


/* 1.0 MetricMetadata entries kept, by family name (the first one wins) */
static int
pg_enc12_metadata(pg_enc_t *e, const uint8_t *buf, size_t len,
    const pg_rw_request_t *req)
{
    int64_t         field, f;
    unsigned        wt2;
    const uint8_t  *p, *end, *d, *q, *s;
    size_t          n, sn, nmeta;
    uint64_t        v;
    pg_enc_meta_t   m;
    int             added;

    p = buf;
    end = buf + len;
    nmeta = 0;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        if (field != 3) {
            continue;
        }

        if (pg_rw_bit(req->dropped_metadata, nmeta)) {
            nmeta++;
            continue;
        }

        nmeta++;

        memset(&m, 0, sizeof(m));
        q = d;

        while ((f = pg_pb_key(&q, d + n, &wt2)) > 0) {
            if (f == 1 && wt2 == PG_PB_VARINT) {
                if (pg_pb_varint(&q, d + n, &v) != 0) {
                    break;
                }
                m.type = (uint32_t) v;
                continue;
            }

            if ((f == 2 || f == 4 || f == 5) && wt2 == PG_PB_LEN) {
                if (pg_pb_len(&q, d + n, &s, &sn) != 0) {
                    break;
                }

                if (f == 2) {
                    m.family.data = s;
                    m.family.len = sn;

                } else if (f == 4) {
                    m.help.data = s;
                    m.help.len = sn;

                } else {
                    m.unit.data = s;
                    m.unit.len = sn;
                }

                continue;
            }

            if (pg_pb_skip(&q, d + n, wt2) != 0) {
                break;
            }
        }

        if (m.family.len == 0) {
            continue;
        }

        if (pg_enc_meta_add(e, &m, 0, &added) < 0) {
            return -1;
        }
    }

    return 0;
}


/* a 1.0 Exemplar as a 2.0 one: labels as refs */
static int
pg_enc12_exemplar(pg_enc_t *e, const uint8_t *d, size_t n)
{
    size_t          o, r;
    pg_label_t      l;
    pg_buf_t       *out;
    uint32_t        nr, vr;
    pg_pb_iter_t    it;

    out = e->out;

    if (pg_enc_reserve(out, 2 * n + 32) != 0) {
        return -1;
    }

    o = pg_enc_open(out, pg_pb_tag(4, PG_PB_LEN));
    r = pg_enc_open(out, pg_pb_tag(1, PG_PB_LEN));

    it.p = d;
    it.end = d + n;
    it.pp = NULL;
    it.pend = NULL;
    it.sym = NULL;

    while (pg_rw_next_label(&it, &l)) {
        nr = pg_enc_intern(e, l.name);
        vr = pg_enc_intern(e, l.value);

        if (nr == UINT32_MAX || vr == UINT32_MAX) {
            return -1;
        }

        out->pos = pg_pb_put_varint(out->pos, nr);
        out->pos = pg_pb_put_varint(out->pos, vr);
    }

    if (out->pos == out->start + r + 1) {
        out->pos -= 2;              /* no labels: no field */

    } else if (pg_enc_close(out, r) != 0) {
        return -1;
    }

    if (pg_enc_reserve(out, 24) != 0) {
        return -1;
    }

    pg_enc_value_ts(out, d, d + n, 2);

    return pg_enc_close(out, o);
}


static int
pg_enc12_series(pg_enc_t *e, const uint8_t *data, size_t len)
{
    int64_t               field;
    unsigned              wt;
    const uint8_t        *p, *end, *d, *rest, *at;
    size_t                n, o, r;
    uint32_t              i, nr, vr;
    pg_label_t            l;
    pg_str_t              name, family;
    pg_buf_t             *out;
    const pg_enc_meta_t  *m;
    size_t                mo;
    pg_enc_pending_t      pd[4];

    out = e->out;

    if (pg_enc_reserve(out, len + 64) != 0) {
        return -1;
    }

    o = pg_enc_open(out, pg_pb_tag(5, PG_PB_LEN));
    r = pg_enc_open(out, pg_pb_tag(1, PG_PB_LEN));

    /* labels first, as one packed run of refs */

    p = data;
    end = data + len;
    rest = NULL;
    name.data = NULL;
    name.len = 0;
    i = 0;

    for ( ;; ) {
        at = p;
        field = pg_pb_key(&p, end, &wt);

        if (field <= 0) {
            break;
        }

        if (field != 1 || wt != PG_PB_LEN) {
            if (rest == NULL) {
                rest = at;
            }

            if (pg_pb_skip(&p, end, wt) != 0) {
                break;
            }

            continue;
        }

        if (pg_pb_len(&p, end, &d, &n) != 0
            || pg_rw_parse_label(d, d + n, &l) != 0)
        {
            break;
        }

        if (e->skip.len && pg_rw_str_eq(l.name, e->skip)) {
            continue;
        }

        /* label i read, label i - 1 written */

        pg_enc_prepare(e, &pd[2 * (i & 1)], e->names, i, l.name);
        pg_enc_prepare(e, &pd[2 * (i & 1) + 1], e->values, i, l.value);

        if (i > 0 && pg_enc_label_refs(e, &pd[2 * ((i - 1) & 1)], i, out)
                     != 0)
        {
            return -1;
        }

        i++;

        if (pg_rw_is_name(l.name)) {
            name = l.value;
        }
    }

    if (i > 0 && pg_enc_label_refs(e, &pd[2 * ((i - 1) & 1)], i, out) != 0) {
        return -1;
    }

    if (out->pos == out->start + r + 1) {
        out->pos -= 2;

    } else if (pg_enc_close(out, r) != 0) {
        return -1;
    }

    /* then samples, exemplars and histograms, in their order */

    p = rest ? rest : end;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        switch (field) {

        case 2:
            if (pg_enc_sample(out, d, n) != 0) {
                return -1;
            }
            break;

        case 3:
            if (pg_enc12_exemplar(e, d, n) != 0) {
                return -1;
            }
            break;

        case 4:
            if (pg_enc_histogram(out, pg_pb_tag(3, PG_PB_LEN), d, n) != 0) {
                return -1;
            }
            break;

        default:
            break;
        }
    }

    /* the metadata of its family */

    m = NULL;

    if (e->nmeta) {
        m = pg_enc_meta_find(e, name);

        for (i = 0; m == NULL && i < 6; i++) {
            family = pg_enc_strip(name, i);
            m = family.len ? pg_enc_meta_find(e, family) : NULL;
        }
    }

    if (m) {
        nr = pg_enc_intern(e, m->help);
        vr = pg_enc_intern(e, m->unit);

        if (nr == UINT32_MAX || vr == UINT32_MAX
            || pg_enc_reserve(out, 24) != 0)
        {
            return -1;
        }

        mo = pg_enc_open(out, pg_pb_tag(5, PG_PB_LEN));

        if (m->type) {
            *out->pos++ = pg_pb_tag(1, PG_PB_VARINT);
            out->pos = pg_pb_put_varint(out->pos, m->type);
        }

        if (nr) {
            *out->pos++ = pg_pb_tag(3, PG_PB_VARINT);
            out->pos = pg_pb_put_varint(out->pos, nr);
        }

        if (vr) {
            *out->pos++ = pg_pb_tag(4, PG_PB_VARINT);
            out->pos = pg_pb_put_varint(out->pos, vr);
        }

        (void) pg_enc_close(out, mo);
    }

    return pg_enc_close(out, o);
}


static int
pg_rw_encode_1to2(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const uint8_t *select, pg_enc_t *e)
{
    int64_t         field;
    const uint8_t  *p, *end, *d;
    size_t          n, i, base, body, size;
    uint32_t        k;
    pg_buf_t       *out;
    uint8_t        *q;

    out = e->out;

    if (pg_enc12_init(e, len) != 0) {
        return -1;
    }

    if (req->stats.metadata && pg_enc12_metadata(e, buf, len, req) != 0) {
        return -1;
    }

    base = (size_t) (out->pos - out->start);

    p = buf;
    end = buf + len;
    i = 0;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        if (field == 1 && pg_rw_kept(req, select, i++)
            && pg_enc12_series(e, d, n) != 0)
        {
            return -1;
        }
    }

    /* the symbols, put in front of the series */

    size = 0;

    for (k = 0; k < e->nsyms; k++) {
        size += 1 + pg_pb_varint_size(e->syms[k].len) + e->syms[k].len;
    }

    if (pg_enc_reserve(out, size) != 0) {
        return -1;
    }

    body = (size_t) (out->pos - out->start) - base;
    q = out->start + base;

    memmove(q + size, q, body);

    for (k = 0; k < e->nsyms; k++) {
        *q++ = pg_pb_tag(4, PG_PB_LEN);
        q = pg_pb_put_varint(q, e->syms[k].len);
        memcpy(q, e->syms[k].data, e->syms[k].len);
        q += e->syms[k].len;
    }

    out->pos += size;

    return 0;
}


/* ------------------------------------------------------- 2.0 to 1.0 */


/* a Label message of a resolved pair */
static inline int
pg_enc21_label(pg_buf_t *out, pg_str_t name, pg_str_t value)
{
    size_t    n;
    uint8_t  *p;

    if (pg_enc_reserve(out, name.len + value.len + 24) != 0) {
        return -1;
    }

    p = out->pos;
    n = 4 + name.len + value.len;

    if (n < 0x80) {
        p[0] = pg_pb_tag(1, PG_PB_LEN);
        p[1] = (uint8_t) n;
        p[2] = pg_pb_tag(1, PG_PB_LEN);
        p[3] = (uint8_t) name.len;
        memcpy(p + 4, name.data, name.len);
        p += 4 + name.len;
        p[0] = pg_pb_tag(2, PG_PB_LEN);
        p[1] = (uint8_t) value.len;
        memcpy(p + 2, value.data, value.len);
        out->pos = p + 2 + value.len;
        return 0;
    }

    n = 2 + pg_pb_varint_size(name.len) + name.len
        + pg_pb_varint_size(value.len) + value.len;

    *out->pos++ = pg_pb_tag(1, PG_PB_LEN);
    out->pos = pg_pb_put_varint(out->pos, n);
    pg_enc_string(out, pg_pb_tag(1, PG_PB_LEN), name);
    pg_enc_string(out, pg_pb_tag(2, PG_PB_LEN), value);

    return 0;
}


/*
 * The labels of a 2.0 series or exemplar as 1.0 Label messages, less the
 * one named skip (len 0: none).  The series is valid: refs come in
 * pairs, each in the table (a ref past it would be skipped).
 */
static int
pg_enc21_labels(pg_buf_t *out, const pg_rw_symtab_t *sym, const uint8_t *d,
    size_t n, pg_str_t *name, pg_str_t skip)
{
    uint32_t       ref, nref;
    pg_str_t       ln, lv;
    pg_enc_refs_t  it;

    pg_enc_refs_init(&it, d, n);

    while (pg_enc_refs_next(&it, &nref, &ref)) {

        if (nref >= sym->n || ref >= sym->n) {
            continue;
        }

        ln = pg_rw_symbol(sym, nref);
        lv = pg_rw_symbol(sym, ref);

        if (skip.len && pg_rw_str_eq(ln, skip)) {
            continue;
        }

        if (pg_enc21_label(out, ln, lv) != 0) {
            return -1;
        }

        if (name && pg_rw_is_name(ln)) {
            *name = lv;
        }
    }

    return 0;
}


/* a 2.0 Exemplar as a 1.0 one: labels resolved */
static int
pg_enc21_exemplar(pg_buf_t *out, const pg_rw_symtab_t *sym, const uint8_t *d,
    size_t n)
{
    size_t    o;
    pg_str_t  none;

    if (pg_enc_reserve(out, 32) != 0) {
        return -1;
    }

    o = pg_enc_open(out, pg_pb_tag(3, PG_PB_LEN));

    none.data = NULL;
    none.len = 0;

    if (pg_enc21_labels(out, sym, d, n, NULL, none) != 0
        || pg_enc_reserve(out, 24) != 0)
    {
        return -1;
    }

    pg_enc_value_ts(out, d, d + n, 2);

    return pg_enc_close(out, o);
}


static int
pg_enc21_series(pg_enc_t *e, const pg_rw_symtab_t *sym, const uint8_t *data,
    size_t len)
{
    int64_t         field, f;
    unsigned        wt2;
    const uint8_t  *p, *end, *d, *q;
    size_t          n, o, i;
    uint64_t        v;
    uint32_t        ref;
    pg_str_t        name, family;
    pg_buf_t       *out;
    pg_enc_meta_t   m;
    int             has_meta, bad, added;

    out = e->out;

    if (pg_enc_reserve(out, 8) != 0) {
        return -1;
    }

    o = pg_enc_open(out, pg_pb_tag(1, PG_PB_LEN));

    name.data = NULL;
    name.len = 0;

    if (pg_enc21_labels(out, sym, data, len, &name, e->skip) != 0) {
        return -1;
    }

    memset(&m, 0, sizeof(m));
    has_meta = 0;
    bad = 0;

    p = data;
    end = data + len;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        switch (field) {

        case 2:
            if (pg_enc_sample(out, d, n) != 0) {
                return -1;
            }
            break;

        case 3:
            if (pg_enc_histogram(out, pg_pb_tag(4, PG_PB_LEN), d, n) != 0) {
                return -1;
            }
            break;

        case 4:
            if (pg_enc21_exemplar(out, sym, d, n) != 0) {
                return -1;
            }
            break;

        case 5:
            has_meta = 1;
            q = d;

            while ((f = pg_pb_key(&q, d + n, &wt2)) > 0) {
                if (wt2 != PG_PB_VARINT) {
                    if (pg_pb_skip(&q, d + n, wt2) != 0) {
                        break;
                    }
                    continue;
                }

                if (pg_pb_varint(&q, d + n, &v) != 0) {
                    break;
                }

                ref = (uint32_t) v;

                if (f == 1) {
                    m.type = ref;

                } else if ((f == 3 || f == 4) && ref < sym->n) {
                    if (sym->off[ref] & PG_RW_SYM_BAD_UTF8) {
                        bad = 1;
                    }

                    if (f == 3) {
                        m.help = pg_rw_symbol(sym, ref);
                    } else {
                        m.unit = pg_rw_symbol(sym, ref);
                    }
                }
            }

            break;
        }
    }

    if (pg_enc_close(out, o) != 0) {
        return -1;
    }

    if (!has_meta || bad || name.len == 0
        || (m.type == 0 && m.help.len == 0 && m.unit.len == 0))
    {
        return 0;
    }

    m.family = name;

    /* histogram, gauge histogram, summary: the family of their series */

    if (m.type == 3 || m.type == 4 || m.type == 5) {
        for (i = 0; i < 3; i++) {
            family = pg_enc_strip(name, i);

            if (family.len) {
                m.family = family;
                break;
            }
        }
    }

    return pg_enc_meta_add(e, &m, 1, &added) < 0 ? -1 : 0;
}


static int
pg_enc21_metadata(pg_enc_t *e)
{
    uint32_t        k;
    size_t          o;
    pg_buf_t       *out;
    pg_enc_meta_t  *m;

    out = e->out;

    for (k = 0; k < e->nmeta; k++) {
        m = &e->meta[k];

        if (pg_enc_reserve(out, m->family.len + m->help.len + m->unit.len
                                + 40)
            != 0)
        {
            return -1;
        }

        o = pg_enc_open(out, pg_pb_tag(3, PG_PB_LEN));

        if (m->type) {
            *out->pos++ = pg_pb_tag(1, PG_PB_VARINT);
            out->pos = pg_pb_put_varint(out->pos, m->type);
        }

        pg_enc_string(out, pg_pb_tag(2, PG_PB_LEN), m->family);

        if (m->help.len) {
            pg_enc_string(out, pg_pb_tag(4, PG_PB_LEN), m->help);
        }

        if (m->unit.len) {
            pg_enc_string(out, pg_pb_tag(5, PG_PB_LEN), m->unit);
        }

        if (pg_enc_close(out, o) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
pg_rw_encode_2to1(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const uint8_t *select, pg_enc_t *e)
{
    int64_t         field;
    const uint8_t  *p, *end, *d;
    size_t          n, i;

    p = buf;
    end = buf + len;
    i = 0;

    while ((field = pg_pb_next_len(&p, end, &d, &n)) > 0) {

        if (field == 5 && pg_rw_kept(req, select, i++)
            && pg_enc21_series(e, &req->symtab, d, n) != 0)
        {
            return -1;
        }
    }

    return pg_enc21_metadata(e);
}


int
pg_rw_encode(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const uint8_t *select, pg_rw_version_e to, pg_allocator_t *alloc,
    pg_buf_t *out)
{
    pg_rw_encode_opts_t  opts;

    opts.select = select;
    opts.skip_label.data = NULL;
    opts.skip_label.len = 0;

    return pg_rw_encode_opts(buf, len, req, &opts, to, alloc, out);
}


int
pg_rw_encode_opts(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const pg_rw_encode_opts_t *opts, pg_rw_version_e to,
    pg_allocator_t *alloc, pg_buf_t *out)
{
    pg_enc_t  e;

    if (req->version == to) {
        return pg_rw_encode_subset(buf, len, req, opts->select,
                                   opts->skip_label, out);
    }

    memset(&e, 0, sizeof(pg_enc_t));
    e.out = out;
    e.alloc = alloc;
    e.skip = opts->skip_label;
    e.seed = pg_enc_mix((uintptr_t) &e ^ 0x2d358dccaa6c78a5ull,
                        (uintptr_t) out ^ 0x8bb84b93962eacc9ull);

    if (req->version == PG_RW_V1 && to == PG_RW_V2) {
        return pg_rw_encode_1to2(buf, len, req, opts->select, &e);
    }

    if (req->version == PG_RW_V2 && to == PG_RW_V1) {
        return pg_rw_encode_2to1(buf, len, req, opts->select, &e);
    }

    return -1;
}
