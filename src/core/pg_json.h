/*
 * JSON writing for the query API, byte-identical to what Prometheus 3.5
 * answers: error texts with Go's encoding/json string escaping (HTML-safe),
 * label sets as the API's label encoder writes them (jsoniter's plain
 * WriteString, in label order), sample values as jsonutil.MarshalFloat
 * writes them and timestamps as jsonutil.MarshalTimestamp does.
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

/* the name pg_utf8_decode_rune() had here */
#define pg_json_utf8_decode  pg_utf8_decode_rune

/*
 * The shortest decimal digits that read back as v (v finite, not zero):
 * v = 0.DIGITS * 10^point.  digits must hold 17 bytes; returns their count.
 */
size_t pg_json_shortest(double v, uint8_t *digits, int *point);

#endif /* PG_JSON_H */
