/*
 * Remote read: the client's ReadRequest (decode, check, re-encode asking
 * for SAMPLES) and the merge of several targets' ReadResponses into one.
 * Messages are decoded with protobuf-c into the caller's memory; every
 * size is checked against the caller's limits before it is allocated.
 */

#ifndef PG_READ_H
#define PG_READ_H

#include "pg_core.h"


typedef enum {
    PG_READ_OK = 0,
    PG_READ_SNAPPY,           /* not a snappy block */
    PG_READ_TOO_LARGE,        /* a size or memory limit */
    PG_READ_MALFORMED,        /* not a valid protobuf message */
    PG_READ_INVALID,          /* valid protobuf, not valid remote read */
    PG_READ_TOO_MANY_SAMPLES,
    PG_READ_NOMEM,            /* the caller's allocator failed */
    PG_READ_NRCS
} pg_read_rc_e;


typedef struct {
    char            message[256];   /* operator-readable, NUL-terminated */
} pg_read_error_t;


/* ReadRequest.accepted_response_types, as a set */
#define PG_READ_ACCEPT_SAMPLES    0x1u
#define PG_READ_ACCEPT_STREAMED   0x2u
#define PG_READ_ACCEPT_UNKNOWN    0x4u


/* what to do with a request, given its accepted types and the targets */
typedef enum {
    PG_READ_MODE_SAMPLES = 0,     /* forward as is: it asks for SAMPLES */
    PG_READ_MODE_REENCODE,        /* forward re-encoded to ask for SAMPLES */
    PG_READ_MODE_PASSTHROUGH,     /* STREAMED_XOR_CHUNKS only, one target */
    PG_READ_MODE_UNSUPPORTED
} pg_read_mode_e;


typedef struct {
    void           *msg;          /* Prometheus__ReadRequest */
    size_t          nqueries;
    size_t          decoded_len;
    unsigned        accept;       /* PG_READ_ACCEPT_*; 0: the list is empty */
    unsigned        only_samples; /* the list is empty or only SAMPLES */
} pg_read_request_t;


typedef struct {
    uint64_t        max_samples;  /* samples + histograms, per answer and
                                     in the merged response */
    size_t          max_size;     /* uncompressed bytes, per answer and of
                                     the merged response */
} pg_read_limits_t;


typedef struct {
    uint64_t        series;       /* in the merged response */
    uint64_t        samples;
    uint64_t        histograms;
    uint64_t        duplicates;   /* dropped: same series, same timestamp */
    size_t          size;         /* uncompressed */
} pg_read_stats_t;


/*
 * Decodes a snappy-compressed ReadRequest (declared size checked against
 * max_decoded first) and checks its queries: matcher types, non-empty
 * UTF-8 matcher names, UTF-8 values.
 */
pg_read_rc_e pg_read_request_decode(const uint8_t *body, size_t len,
    size_t max_decoded, pg_allocator_t *a, pg_read_request_t *req,
    pg_read_error_t *err);

pg_read_mode_e pg_read_request_mode(const pg_read_request_t *req,
    size_t ntargets);

/* the request asking for SAMPLES only, snappy-compressed, in a's memory */
pg_read_rc_e pg_read_request_encode_samples(pg_read_request_t *req,
    pg_allocator_t *a, uint8_t **out, size_t *len);


typedef struct pg_read_merge_s  pg_read_merge_t;

/*
 * A merge of answers to a request of nqueries queries.  Labels named in
 * drop (the replicas' external labels) are removed from every series
 * before series are compared.  The strings in drop must outlive the merge.
 */
pg_read_merge_t *pg_read_merge_create(pg_allocator_t *a, size_t nqueries,
    const pg_str_t *drop, size_t ndrop, const pg_read_limits_t *limits);

/*
 * Adds one target's answer: a snappy-compressed ReadResponse.  Answers are
 * added in target order; on equal timestamps within a series the sample
 * added first wins.  The decoded message lives in scratch, which the
 * caller may release after the call (at most about ten times the
 * uncompressed answer is taken from it); what the merge keeps comes from
 * the merge's own allocator.  A failed call leaves the merge as it was.
 */
pg_read_rc_e pg_read_merge_add(pg_read_merge_t *m, const uint8_t *body,
    size_t len, pg_allocator_t *scratch, pg_read_error_t *err);

/*
 * The merged ReadResponse, snappy-compressed: per query, series sorted by
 * their labels, samples and histograms sorted by time, one per timestamp.
 */
pg_read_rc_e pg_read_merge_finish(pg_read_merge_t *m, uint8_t **out,
    size_t *len, pg_read_stats_t *st, pg_read_error_t *err);

const char *pg_read_rc_name(pg_read_rc_e rc);

#endif /* PG_READ_H */
