/*
 * Kafka consumer logic that does not need nginx or librdkafka: message
 * format detection and decoding (remote write 1.0 and 2.0 protobuf, raw or
 * snappy, and the JSON of prometheus-kafka-adapter), the per-partition
 * offset watermark, batch assembly and splitting, the classification of
 * the target's answer, and the HTTP/1.1 response parser of the client that
 * posts to the target.
 */

#ifndef PG_KAFKA_H
#define PG_KAFKA_H

#include "pg_core.h"
#include "pg_rw.h"


/* ------------------------------------------------------------ formats */

typedef enum {
    PG_KAFKA_FORMAT_AUTO = 0,       /* any protobuf form below, per message */
    PG_KAFKA_FORMAT_PROMPB,         /* a serialized 1.0 WriteRequest */
    PG_KAFKA_FORMAT_PROMPB_SNAPPY,  /* the same, snappy block-compressed */
    PG_KAFKA_FORMAT_JSON,           /* prometheus-kafka-adapter, one sample */
    PG_KAFKA_FORMAT_PROMPB_V2       /* a serialized 2.0 Request, raw or */
                                    /*   snappy block-compressed */
} pg_kafka_format_e;


/* -1 if the name is not a format */
int pg_kafka_format_parse(const uint8_t *name, size_t len);
const char *pg_kafka_format_name(pg_kafka_format_e format);


/*
 * The top-level fields of an uncompressed message tell the versions
 * apart: a 1.0 WriteRequest has fields 1 (timeseries) and 3 (metadata), a
 * 2.0 Request fields 4 (symbols) and 5 (timeseries) and reserves 1-3.
 * Each version's decoder skips the other's fields as unknown, so a message
 * of the wrong version would decode as an empty request: the consumer
 * checks the fields first.
 */
#define PG_KAFKA_FIELDS_V1  1
#define PG_KAFKA_FIELDS_V2  2

/*
 * Which versions' top-level fields the message has: 0 (an empty message,
 * or only fields of neither: no series either way), V1, V2, or both.  The
 * walk stops at the first malformed byte: the decoder reports it.
 */
unsigned pg_kafka_rw_fields(const uint8_t *msg, size_t len);


typedef enum {
    PG_KAFKA_OK = 0,
    PG_KAFKA_POISON,                /* not a well-formed request: never */
                                    /*   retried */
    PG_KAFKA_NOMEM
} pg_kafka_rc_e;


typedef struct {
    pg_kafka_format_e   format;     /* what the message turned out to be */
    pg_rw_version_e     version;    /* of the request */
    unsigned            snappy:1;   /* the message is the request snappy- */
                                    /*   compressed: it can be posted as */
                                    /*   it is */
    const uint8_t      *data;       /* the uncompressed request; may */
    size_t              len;        /*   point into the message itself */
    pg_rw_stats_t       stats;      /* of its valid series */
    uint64_t            invalid;    /* series and 1.0 metadata entries the */
                                    /*   target location drops (or refuses */
                                    /*   with promgate_invalid_series */
                                    /*   reject): not poison */
    const char         *reason;     /* a short name when poison: */
                                    /*   "malformed", "snappy", */
                                    /*   "too_large", "json" */
    char                error[640]; /* operator-readable, NUL-terminated; */
                                    /*   when not poison, the first invalid */
                                    /*   series, if any */
} pg_kafka_decoded_t;


/*
 * Decodes one message into an uncompressed request and validates it.  A
 * message is poison only when it is not a well-formed request of its
 * version (malformed protobuf, bad snappy, above max_decoded, a 2.0
 * symbols[0] that is not "", fields of the other version); invalid series
 * in a well-formed request are counted in out->invalid and left to the
 * target location.  max_decoded bounds the uncompressed size.  Memory
 * (snappy, JSON, the decoder's symbol table and bitmaps) comes from the
 * allocator; a raw message is returned in place.
 */
pg_kafka_rc_e pg_kafka_decode(pg_kafka_format_e format, const uint8_t *msg,
    size_t len, size_t max_decoded, pg_allocator_t *a,
    pg_kafka_decoded_t *out);


/* ----------------------------------------------- the offset watermark */

/*
 * The offsets taken from one partition, in order, with what is done with
 * them.  Only the lowest offset not yet done may be committed: a crash
 * then re-delivers what was in flight and never skips a message.  The
 * caller owns the ring's memory (cap a power of two) and grows it with
 * pg_kafka_wm_move() when pg_kafka_wm_take() says it is full.
 */
typedef struct {
    int64_t            *off;
    uint8_t            *done;
    uint32_t            cap;
    uint32_t            head;
    uint32_t            n;
    int64_t             next;       /* after the last taken; -1: none yet */
    int64_t             refetch;    /* awaited again; -1: none */
} pg_kafka_wm_t;


#define PG_KAFKA_WM_FULL     -1
#define PG_KAFKA_WM_ORDER    -2     /* not above the last offset taken */
#define PG_KAFKA_WM_REFETCH  -3     /* an earlier offset is awaited again */

void pg_kafka_wm_init(pg_kafka_wm_t *wm, int64_t *off, uint8_t *done,
    uint32_t cap);
void pg_kafka_wm_move(pg_kafka_wm_t *wm, int64_t *off, uint8_t *done,
    uint32_t cap);
int pg_kafka_wm_take(pg_kafka_wm_t *wm, int64_t offset);

/*
 * The message at offset could not be kept (no memory): the caller fetches
 * the partition again from there (a seek).  Until that offset comes back,
 * pg_kafka_wm_take() refuses every other one with PG_KAFKA_WM_REFETCH (they
 * come again after it), so that nothing after it is done, and committed,
 * before it: a message is never skipped.
 */
void pg_kafka_wm_refetch(pg_kafka_wm_t *wm, int64_t offset);

/* 0, or -1 if the offset is not held (done already, or never taken) */
int pg_kafka_wm_done(pg_kafka_wm_t *wm, int64_t offset);

/* the offset to commit: the lowest not done; -1 before any was taken */
int64_t pg_kafka_wm_low(const pg_kafka_wm_t *wm);

/* offsets taken and not done */
uint32_t pg_kafka_wm_held(const pg_kafka_wm_t *wm);


/* ---------------------------------------------------- batch assembly */

/*
 * Messages of one partition join a batch in offset order while they fit.
 * After the target rejected a batch (400/409/413/415) its messages carry a
 * limit, half the rejected batch's size: they are re-sent in halves until
 * the bad message stands alone (and is poison) and the good ones are
 * stored.  Messages with different limits, tenants or versions never share
 * a batch.  1.0 WriteRequests concatenate into one (protobuf merges
 * repeated fields); a 2.0 Request is always alone: each has its own symbol
 * table, which its series' refs index.
 */
typedef struct {
    size_t              max_count;
    size_t              max_bytes;
    size_t              count;
    size_t              bytes;
    uint32_t            limit;      /* of the first message */
    pg_str_t            tenant;     /* of the first message */
    pg_rw_version_e     version;    /* of the first message */
} pg_kafka_batch_t;


void pg_kafka_batch_init(pg_kafka_batch_t *b, size_t max_count,
    size_t max_bytes);

/* 1: added; 0: does not fit, send the batch as it is (never 0 when empty) */
int pg_kafka_batch_add(pg_kafka_batch_t *b, size_t size, uint32_t limit,
    pg_str_t tenant, pg_rw_version_e version);

/* 1 when no message of any size can join (count reached, or 2.0) */
int pg_kafka_batch_closed(const pg_kafka_batch_t *b);

/* the limit for the messages of a rejected batch; 0: one message, poison */
uint32_t pg_kafka_batch_split(size_t count);


/* ----------------------------------------------- the target's answer */

typedef enum {
    PG_KAFKA_ACK = 0,               /* 2xx: stored as the ack policy wants */
    PG_KAFKA_RETRY,                 /* 5xx, 429, no answer: keep, retry */
    PG_KAFKA_REJECT                 /* 400, 409, 413, 415: split or poison */
} pg_kafka_outcome_e;

/* status 0: no answer (connection error, timeout) */
pg_kafka_outcome_e pg_kafka_classify(unsigned status);


/* ----------------------------------------- HTTP/1.1 response parsing */

typedef enum {
    PG_KAFKA_RESP_AGAIN = 0,
    PG_KAFKA_RESP_DONE,
    PG_KAFKA_RESP_ERROR
} pg_kafka_resp_rc_e;


typedef struct {
    unsigned            state;
    unsigned            status;
    unsigned            version;    /* 10 or 11 */
    int                 keepalive;  /* the connection may carry another */
    int                 chunked;
    int64_t             length;     /* Content-Length, -1 if none */
    uint64_t            left;       /* body or chunk bytes to come */
    size_t              head;       /* header bytes seen */
    size_t              line_len;
    char                line[160];  /* the current line, truncated */
    size_t              body_len;
    char                body[512];  /* the body's beginning, for the log */
} pg_kafka_resp_t;


void pg_kafka_resp_init(pg_kafka_resp_t *r);

/*
 * Feeds n bytes; *used says how many were consumed (on DONE, the rest
 * would be the next response's, which a client that does not pipeline
 * never sees; on ERROR, where the error was found).
 */
pg_kafka_resp_rc_e pg_kafka_resp_parse(pg_kafka_resp_t *r, const uint8_t *p,
    size_t n, size_t *used);

/* the peer closed the connection: DONE if that ends the body */
pg_kafka_resp_rc_e pg_kafka_resp_eof(pg_kafka_resp_t *r);


#endif /* PG_KAFKA_H */
