/*
 * Remote-write 1.0 request decoding and validation: a zero-copy scan of the
 * protobuf WriteRequest.  Nothing is allocated; label names, values and
 * exemplars are views into the decoded buffer.
 */

#ifndef PG_RW_H
#define PG_RW_H

#include "pg_core.h"


typedef enum {
    PG_RW_OK = 0,
    PG_RW_MALFORMED,          /* not a valid protobuf WriteRequest */
    PG_RW_NO_NAME,            /* series without __name__ (or empty) */
    PG_RW_BAD_LABEL_NAME,     /* label name not [a-zA-Z_][a-zA-Z0-9_]* */
    PG_RW_UNSORTED_LABELS,
    PG_RW_DUPLICATE_LABEL,
    PG_RW_BAD_UTF8,
    PG_RW_ABORTED,            /* the series callback asked to stop */
    PG_RW_NREASONS
} pg_rw_reason_e;


typedef struct {
    pg_str_t        name;
    pg_str_t        value;
} pg_label_t;


/* a protobuf sub-message seen as bytes; iterate it with the functions below */
typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} pg_pb_iter_t;


typedef struct {
    pg_pb_iter_t    labels;        /* the Exemplar message, labels inside */
    double          value;
    int64_t         timestamp;     /* ms */
} pg_exemplar_t;


typedef struct {
    const uint8_t  *data;          /* the TimeSeries message */
    size_t          len;
    size_t          index;         /* position in the request, from 0 */
    pg_str_t        name;          /* value of __name__ */
    uint32_t        nlabels;
    uint32_t        nsamples;
    uint32_t        nexemplars;
    uint32_t        nhistograms;
} pg_rw_series_t;


typedef struct {
    uint64_t        series;
    uint64_t        samples;
    uint64_t        histograms;
    uint64_t        exemplars;
    uint64_t        metadata;
    uint64_t        empty_series;  /* no sample, histogram nor exemplar */
} pg_rw_stats_t;


typedef struct {
    pg_rw_reason_e  reason;
    size_t          series;        /* index of the offending series */
    size_t          offset;        /* byte offset in the decoded body */
    char            message[512];  /* operator-readable, NUL-terminated */
} pg_rw_error_t;


/*
 * Called once per valid series, in request order.  Return 0 to continue,
 * non-zero to stop (the scan then fails with PG_RW_ABORTED).
 */
typedef int (*pg_rw_series_pt)(void *ctx, const pg_rw_series_t *series);


/*
 * Validates a decoded (uncompressed) WriteRequest and counts what it holds.
 * Returns PG_RW_OK or the reason of the first offending series; err (may be
 * NULL) then says which series and why.  cb may be NULL.
 */
pg_rw_reason_e pg_rw_scan(const uint8_t *buf, size_t len, pg_rw_stats_t *st,
    pg_rw_error_t *err, pg_rw_series_pt cb, void *ctx);

const char *pg_rw_reason_name(pg_rw_reason_e reason);

/* counts the samples of a request that failed validation, as far as it can */
uint64_t pg_rw_count_samples(const uint8_t *buf, size_t len);


/* iterators over a valid series (pg_rw_scan() checked the wire format) */
void pg_rw_series_labels(const pg_rw_series_t *s, pg_pb_iter_t *it);
void pg_rw_series_exemplars(const pg_rw_series_t *s, pg_pb_iter_t *it);
int pg_rw_next_label(pg_pb_iter_t *it, pg_label_t *label);
int pg_rw_next_exemplar(pg_pb_iter_t *it, pg_exemplar_t *ex);

/* the labels of an exemplar: it = ex->labels, then pg_rw_next_label() */


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

#endif /* PG_RW_H */
