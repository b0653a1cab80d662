/*
 * Remote-write requests, 1.0 (prometheus.WriteRequest) and 2.0
 * (io.prometheus.write.v2.Request): decoding, validation with Prometheus
 * 3.5's rules, iteration, and re-encoding (a subset of the series in the
 * same version, or a translation to the other one).
 *
 * Decoding is a zero-copy scan: label names, values and exemplars are
 * views into the decoded buffer (or, for 2.0, into its symbol table, itself
 * views into the buffer).  An invalid series never fails the request: it is
 * counted, remembered in a bitmap and left out of what is forwarded, as
 * Prometheus leaves it out of what it stores.  Only a request that is not a
 * well-formed protobuf message of its version fails as a whole.
 */

#ifndef PG_RW_H
#define PG_RW_H

#include "pg_core.h"


typedef enum {
    PG_RW_V1 = 1,
    PG_RW_V2 = 2
} pg_rw_version_e;


typedef enum {
    PG_RW_OK = 0,
    PG_RW_MALFORMED,          /* request: not a valid protobuf message */
    PG_RW_NO_NAME,            /* series: no __name__, or an empty one */
    PG_RW_BAD_LABEL_NAME,     /* series: an empty label name */
    PG_RW_DUPLICATE_LABEL,    /* series: two labels of one name */
    PG_RW_BAD_UTF8,           /* series (or 1.0 metadata entry) */
    PG_RW_BAD_SYMBOL_REF,     /* 2.0 series: odd label refs, a ref past */
                              /*   the symbol table */
    PG_RW_BAD_SYMBOLS,        /* 2.0 request: symbols[0] is not "" */
    PG_RW_NOMEM,              /* the allocator failed */
    PG_RW_ABORTED,            /* the series callback asked to stop */
    PG_RW_OVER_LIMIT,         /* request: above a pg_rw_limits_t limit */
    PG_RW_NREASONS
} pg_rw_reason_e;


typedef struct {
    pg_str_t        name;
    pg_str_t        value;
} pg_label_t;


/*
 * The symbols of a 2.0 request, as 4 bytes each (memory stays within twice
 * the request): symbol i is the length-prefixed string at
 * base + (off[i] & PG_RW_SYM_OFFSET); PG_RW_SYM_BAD_UTF8 is set when it is
 * not valid UTF-8 (checked once per symbol, not per reference).
 */
typedef struct {
    const uint8_t  *base;          /* the request */
    const uint32_t *off;
    uint32_t        n;
} pg_rw_symtab_t;

#define PG_RW_SYM_OFFSET    0x7fffffffu
#define PG_RW_SYM_BAD_UTF8  0x80000000u


/* symbol i < t->n */
static inline pg_str_t
pg_rw_symbol(const pg_rw_symtab_t *t, uint32_t i)
{
    const uint8_t  *p;
    pg_str_t        s;
    size_t          n;
    unsigned        shift;

    p = t->base + (t->off[i] & PG_RW_SYM_OFFSET);

    if (*p < 0x80) {
        s.len = *p;
        s.data = p + 1;
        return s;
    }

    n = 0;

    for (shift = 0; *p >= 0x80; shift += 7) {
        n |= (size_t) (*p++ & 0x7f) << shift;
    }

    s.len = n | (size_t) *p << shift;
    s.data = p + 1;

    return s;
}


/*
 * An iterator over the labels or exemplars of a TimeSeries, or over the
 * labels of an exemplar; 1.0 when sym is NULL, 2.0 (labels as refs into
 * sym) otherwise.  Copy it by value to iterate again.
 */
typedef struct {
    const uint8_t         *p;
    const uint8_t         *end;
    const uint8_t         *pp;     /* 2.0: the rest of packed label refs */
    const uint8_t         *pend;
    const pg_rw_symtab_t  *sym;
} pg_pb_iter_t;


typedef struct {
    pg_pb_iter_t    labels;        /* iterate with pg_rw_next_label() */
    double          value;
    int64_t         timestamp;     /* ms */
} pg_exemplar_t;


typedef struct {
    const uint8_t         *data;   /* the TimeSeries message */
    size_t                 len;
    size_t                 index;  /* position in the request, from 0, */
                                   /*   invalid series counted too */
    pg_rw_version_e        version;
    const pg_rw_symtab_t  *symtab; /* 2.0 */
    pg_str_t               name;   /* value of __name__ */
    uint32_t               nlabels;
    uint32_t               nsamples;
    uint32_t               nexemplars;
    uint32_t               nhistograms;
    unsigned               unsorted:1;  /* label names out of order: valid, */
                                        /*   consumers that need order sort */

    /* 2.0 only */
    int64_t                created_timestamp;  /* TimeSeries field 6, else */
                                               /*   the first sample's or */
                                               /*   histogram's start */
    uint32_t               metadata_type;      /* MetricType, 0: unknown */
    pg_str_t               help;
    pg_str_t               unit;
} pg_rw_series_t;


/*
 * What one request may hold, so that what it costs its consumers (who copy
 * labels and exemplars out of the buffer) is bounded; 0: no limit.  Over
 * one, decoding stops at once with PG_RW_OVER_LIMIT: the series callback
 * has seen only series before the one that crossed it.
 */
typedef enum {
    PG_RW_LIMIT_NONE = 0,
    PG_RW_LIMIT_EXEMPLARS,         /* exemplars in the request */
    PG_RW_LIMIT_LABELS,            /* labels of a series or an exemplar */
    PG_RW_LIMIT_LABEL_BYTES,       /* name + value of one label */
    PG_RW_LIMIT_RESOLVED           /* 2.0: label bytes once refs resolved */
} pg_rw_limit_e;

typedef struct {
    uint64_t        exemplars;
    uint32_t        labels;
    size_t          label_bytes;
    uint64_t        resolved;      /* name + value of every label of every */
                                   /*   series and exemplar, 2.0 only: a */
                                   /*   symbol may be referenced many times */
} pg_rw_limits_t;


/* what the valid series (and metadata) hold: what is forwarded */
typedef struct {
    uint64_t        series;
    uint64_t        samples;
    uint64_t        histograms;
    uint64_t        exemplars;
    uint64_t        metadata;      /* 1.0 entries; 2.0 series with metadata */
    uint64_t        empty_series;  /* no sample, histogram nor exemplar */
} pg_rw_stats_t;


typedef struct {
    pg_rw_reason_e  reason;
    size_t          series;        /* index of the series; (size_t) -1 for */
                                   /*   a 1.0 metadata entry */
    size_t          offset;        /* byte offset in the decoded body */
    char            message[512];  /* operator-readable, NUL-terminated */
} pg_rw_error_t;


typedef struct {
    pg_rw_version_e   version;
    pg_rw_stats_t     stats;             /* the valid series */
    uint64_t          invalid_series;    /* series left out */
    uint64_t          invalid_samples;   /* samples + histograms in them */
    uint64_t          invalid_exemplars;
    uint64_t          invalid[PG_RW_NREASONS];  /* series and 1.0 metadata */
                                                /*   entries, per reason */
    uint64_t          invalid_metadata;  /* 1.0 metadata entries left out */
    uint8_t          *dropped;           /* bit i: series i left out; NULL */
                                         /*   when none */
    uint8_t          *dropped_metadata;  /* 1.0 metadata entries, the same */
    size_t            nseries_total;     /* valid + invalid */
    size_t            nmetadata_total;
    pg_rw_symtab_t    symtab;            /* 2.0 */
    pg_rw_error_t     first;             /* the first invalid series (or */
                                         /*   metadata entry), or the */
                                         /*   request-level error */
    pg_rw_limit_e     over;              /* PG_RW_OVER_LIMIT: which one */
    uint64_t          over_limit;        /*   and its value */
} pg_rw_request_t;


#define pg_rw_bit(map, i)  ((map) != NULL && ((map)[(i) >> 3] >> ((i) & 7)) & 1)


/*
 * Called once per valid series, in request order.  Return 0 to continue,
 * non-zero to stop (decoding then fails with PG_RW_ABORTED).
 */
typedef int (*pg_rw_series_pt)(void *ctx, const pg_rw_series_t *series);


/*
 * Decodes and validates a decoded (uncompressed) request.  Returns
 * PG_RW_OK when it is a well-formed message of that version (invalid
 * series may be in it: see req->invalid_series), else the request-level
 * reason (MALFORMED, BAD_SYMBOLS, NOMEM, ABORTED) with req->first set.
 * alloc provides the 2.0 symbol table (4 bytes a symbol) and the bitmaps:
 * at most about 2.1 times len for 2.0, len / 8 for 1.0, plus, when a
 * series of more than 64 labels has them out of order, 64 bytes a label of
 * the largest such series (their names are sorted to find duplicates).
 * Nothing is allocated for a valid 1.0 request.  alloc NULL: any need of
 * memory is PG_RW_NOMEM.  cb may be NULL; it may have been called for
 * earlier series when a later byte turns out malformed.  After a
 * request-level error only req->first is meaningful.
 */
pg_rw_reason_e pg_rw_decode(const uint8_t *buf, size_t len,
    pg_rw_version_e version, pg_allocator_t *alloc, pg_rw_request_t *req,
    pg_rw_series_pt cb, void *ctx);

/* the same within limits (NULL: none); see pg_rw_limits_t */
pg_rw_reason_e pg_rw_decode_limited(const uint8_t *buf, size_t len,
    pg_rw_version_e version, const pg_rw_limits_t *limits,
    pg_allocator_t *alloc, pg_rw_request_t *req, pg_rw_series_pt cb,
    void *ctx);

/* snake_case, for metrics */
const char *pg_rw_reason_name(pg_rw_reason_e reason);

/* samples + histograms of a request that failed, as far as it can tell */
uint64_t pg_rw_count_samples(const uint8_t *buf, size_t len,
    pg_rw_version_e version);


/* iterators over a series pg_rw_decode() gave */
void pg_rw_series_labels(const pg_rw_series_t *s, pg_pb_iter_t *it);
void pg_rw_series_exemplars(const pg_rw_series_t *s, pg_pb_iter_t *it);

/* 1 and a label, 0 at the end; 1.0 and 2.0 alike */
int pg_rw_next_label(pg_pb_iter_t *it, pg_label_t *label);

/* 1 and an exemplar, 0 at the end; its labels: it = ex->labels */
int pg_rw_next_exemplar(pg_pb_iter_t *it, pg_exemplar_t *ex);

/*
 * Copies labels (views into a body about to be freed) into one allocation;
 * with sort, sorted by name as Prometheus stores a series' (senders may
 * send them out of order).  NULL when out of memory.
 */
pg_label_t *pg_rw_copy_labels(pg_pb_iter_t labels, pg_allocator_t *a,
    size_t *n, int sort);

/* labels[0..n) less those named name (promgate_tenant_label ... drop),
 * in place, in their order; returns how many are left */
size_t pg_rw_labels_drop(pg_label_t *labels, size_t n, pg_str_t name);


/* an output buffer that grows through the caller */
typedef struct pg_buf_s  pg_buf_t;

struct pg_buf_s {
    uint8_t        *start;
    uint8_t        *pos;
    uint8_t        *end;
    /* makes end - pos >= need (may move the bytes); 0, or -1 on failure */
    int           (*grow)(pg_buf_t *b, size_t need);
    void           *data;
};


/*
 * Appends to out the series of a decoded request that are not in
 * req->dropped (and, when select is not NULL, whose bit is set in select),
 * encoded as version `to`:
 *
 *   - same version: the kept top-level fields copied as they are (2.0: all
 *     symbols, the kept series; 1.0: the kept series and the metadata
 *     entries not in req->dropped_metadata);
 *   - 1.0 to 2.0: a symbol table ("" first, each string once), labels and
 *     exemplar labels as refs, samples and histograms as they are, 1.0
 *     metadata attached to each series of the family it describes
 *     (__name__, or __name__ less a _bucket, _sum, _count, _total,
 *     _created or _info suffix when only that matches);
 *   - 2.0 to 1.0: labels resolved, samples without their start timestamp,
 *     histograms without theirs (field 17), exemplars, created timestamps
 *     dropped, series metadata moved to WriteRequest.metadata once per
 *     (family, type, help, unit), the family being __name__ less a _bucket,
 *     _sum or _count suffix for the histogram, gauge histogram and summary
 *     types.
 *
 * alloc holds, for a translation, the symbol table being built (1.0 to
 * 2.0: about 60 bytes a distinct string plus a copy of the strings up to
 * 256 bytes) and the metadata sets; a subset allocates nothing.  The
 * output grows through out->grow (NULL: it must be large enough).
 * Returns 0, or -1 when alloc or out->grow failed (out then holds a part).
 */
int pg_rw_encode(const uint8_t *buf, size_t len, const pg_rw_request_t *req,
    const uint8_t *select, pg_rw_version_e to, pg_allocator_t *alloc,
    pg_buf_t *out);


/* what pg_rw_encode_opts() makes of a request */
typedef struct {
    const uint8_t  *select;      /* NULL: every series not dropped */
    pg_str_t        skip_label;  /* len 0: none; else a series' label of */
                                 /*   this name (exact bytes) is left out */
} pg_rw_encode_opts_t;

/*
 * pg_rw_encode() with options: opts->select as there, and, with a
 * skip_label, each kept series that has a label of that name written
 * without it, on every path (the same version too: such a series is
 * written again, the others are copied; a 2.0 body keeps the whole symbol
 * table).  Exemplar labels and metadata are left as they are.  The name
 * must not be __name__ (a series would lose its name).
 */
int pg_rw_encode_opts(const uint8_t *buf, size_t len,
    const pg_rw_request_t *req, const pg_rw_encode_opts_t *opts,
    pg_rw_version_e to, pg_allocator_t *alloc, pg_buf_t *out);


/* snappy block format (remote write's framing) */
typedef enum {
    PG_SNAPPY_OK = 0,
    PG_SNAPPY_INVALID,        /* not a snappy block */
    PG_SNAPPY_TOO_LARGE       /* declared length above the limit */
} pg_snappy_rc_e;

/* reads the declared uncompressed length, checks it against max */
pg_snappy_rc_e pg_snappy_decoded_length(const uint8_t *src, size_t len,
    size_t max, size_t *decoded);

/* dst must hold the length pg_snappy_decoded_length() returned */
pg_snappy_rc_e pg_snappy_decode(const uint8_t *src, size_t len,
    uint8_t *dst, size_t dst_len);

/* dst must hold pg_snappy_max_encoded(len); *dst_len: the encoded length */
size_t pg_snappy_max_encoded(size_t len);
pg_snappy_rc_e pg_snappy_encode(const uint8_t *src, size_t len,
    uint8_t *dst, size_t *dst_len);

#endif /* PG_RW_H */
