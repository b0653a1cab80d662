/*
 * JSON writing for the query API, byte-identical to what Prometheus 3.5
 * answers: error texts with Go's encoding/json string escaping (HTML-safe),
 * label sets as the API's label encoder writes them (jsoniter's plain
 * WriteString, in label order), sample values as jsonutil.MarshalFloat
 * writes them and timestamps as jsonutil.MarshalTimestamp does.
 *
 * And the one JSON reader, for the documents promgate reads: the query
 * API's JSON body (pg_time.c) and prometheus-kafka-adapter's messages
 * (pg_kafka.c).
 */

#ifndef PG_JSON_H
#define PG_JSON_H

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_utf8.h"


/* room pg_json_format_value() and pg_json_format_timestamp() may need */
#define PG_JSON_NUMBER_MAX  40


/*
 * A growable output buffer over a pg_allocator_t (which never frees): it
 * grows by doubling, so the memory spent is at most about twice the final
 * length.  After a failed allocation "failed" is set and further writes are
 * dropped, so callers may check once at the end.
 */
typedef struct {
    uint8_t          *data;
    size_t            len;
    size_t            cap;
    pg_allocator_t    alloc;
    int               failed;
} pg_json_buf_t;


void pg_json_init(pg_json_buf_t *b, pg_allocator_t alloc);

/* returns room for n more bytes at b->data + b->len, or NULL */
uint8_t *pg_json_reserve(pg_json_buf_t *b, size_t n);

void pg_json_raw(pg_json_buf_t *b, const void *p, size_t n);

#define pg_json_literal(b, s)  pg_json_raw(b, s, sizeof(s) - 1)

/* a quoted JSON string, escaped as Go's encoding/json does */
void pg_json_string(pg_json_buf_t *b, const uint8_t *p, size_t n);

/* a sample value: a quoted string, e.g. "6", "0.1", "1e-07", "+Inf" */
void pg_json_value(pg_json_buf_t *b, double v);

/* a timestamp in ms as a number of seconds, e.g. 1600096945.479 */
void pg_json_timestamp(pg_json_buf_t *b, int64_t ms);

/*
 * A label set as a JSON object, every label in the order given (Prometheus
 * stores them sorted by name): names and values escaped as jsoniter's
 * WriteString() does, i.e. only controls, '"' and '\\' (no HTML escaping,
 * no U+FFFD for bytes that are not UTF-8, U+2028/U+2029 as they are).
 */
void pg_json_labels(pg_json_buf_t *b, const pg_label_t *labels, size_t n);

/*
 * One label name or value of pg_json_labels(), quoted, written at p, which
 * must have room for PG_JSON_LABEL_MAX(n) bytes; returns the end.  For
 * writers that reserve once for several pieces.
 */
#define PG_JSON_LABEL_MAX(n)  (6 * (n) + 2)

uint8_t *pg_json_label_write(uint8_t *p, const uint8_t *s, size_t n);

/* {"status":"error","errorType":"<type>","error":"<msg>"} */
void pg_json_error(pg_json_buf_t *b, const char *type, const uint8_t *msg,
    size_t len);

/*
 * The number formats, without quotes; out must hold PG_JSON_NUMBER_MAX
 * bytes.  Both return the length written (no NUL is added).
 *
 * pg_json_format_value(): Go's strconv.FormatFloat(v, 'f', -1, 64), or 'e'
 * when |v| < 1e-6 or |v| >= 1e21 (v != 0); "NaN", "+Inf", "-Inf".
 */
size_t pg_json_format_value(uint8_t *out, double v);
size_t pg_json_format_timestamp(uint8_t *out, int64_t ms);

/*
 * The shortest decimal digits that read back as v (v finite, not zero):
 * v = 0.DIGITS * 10^point.  digits must hold 17 bytes; returns their count.
 */
size_t pg_json_shortest(double v, uint8_t *digits, int *point);


/* ------------------------------------------------------------ reading */

/*
 * The caller walks the members it expects and skips the rest.  Strings
 * are unescaped as Go's encoding/json does: \uXXXX with surrogate pairs,
 * a lone surrogate as U+FFFD, and a byte that is not UTF-8 as U+FFFD
 * unless PG_JSON_RAW_BYTES keeps it.  Every call skips white space first;
 * -1 is an error: err then names the first one and err_pos where it was
 * found (at end: the input ended), or nomem is set (the allocator failed).
 */

/* bytes that are not UTF-8 are kept as they are (left to a later check) */
#define PG_JSON_RAW_BYTES    0x01
/* \u0000 is an error: the strings go on as C strings */
#define PG_JSON_NO_NUL       0x02
/*
 * a number is a digit after an optional '-', then any run of 0-9 . e E +
 * -, as the Kafka adapter's reader always took numbers (not only JSON's)
 */
#define PG_JSON_LAX_NUMBERS  0x04


typedef struct {
    const uint8_t          *start;
    const uint8_t          *p;
    const uint8_t          *end;
    const pg_allocator_t   *alloc;
    unsigned                flags;
    unsigned                max_depth;  /* of nested values; a member of */
                                        /*   the document's object is 1 */
    const char             *err;
    const uint8_t          *err_pos;
    unsigned                nomem:1;
} pg_json_reader_t;


void pg_json_read_init(pg_json_reader_t *r, const uint8_t *p, size_t len,
    const pg_allocator_t *alloc, unsigned flags, unsigned max_depth);

/* the next byte, not taken; -1 at the end */
int pg_json_read_peek(pg_json_reader_t *r);

/* -1, and what went wrong here unless an error is recorded already */
int pg_json_read_fail(pg_json_reader_t *r, const char *what);

/* the '{' of an object */
int pg_json_read_object(pg_json_reader_t *r);

/*
 * The next member of the object: 1 with its name (name NULL: checked, not
 * kept), the reader right after the ':'; 0 after the closing '}'.  first is
 * set for the call right after pg_json_read_object().
 */
int pg_json_read_member(pg_json_reader_t *r, pg_str_t *name, int first);

/* a string, unescaped into memory from the allocator and NUL-terminated */
int pg_json_read_string(pg_json_reader_t *r, pg_str_t *out);

/* a number, as the text in the input */
int pg_json_read_number(pg_json_reader_t *r, pg_str_t *out);

/* 1 and past it when "null" is next, else 0 */
int pg_json_read_null(pg_json_reader_t *r);

/* any value, checked and skipped (nothing is allocated) */
int pg_json_read_skip(pg_json_reader_t *r);

#endif /* PG_JSON_H */
