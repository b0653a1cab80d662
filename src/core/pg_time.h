/*
 * Time and query parameters of the query API, parsed as Prometheus 3.5
 * parses them (as 2.42 did, but for the wording of a bad time):
 * parseTime(), r.FormValue(), and the errors it words.
 */

#ifndef PG_TIME_H
#define PG_TIME_H

#include "pg_core.h"


/*
 * Prometheus' minTime and maxTime in ms, the defaults of a missing or empty
 * start and end ("-292273086-05-16T16:47:06Z", "292277025-08-18T07:12:54.
 * 999999999Z", both of which pg_parse_time() accepts too).
 */
#define PG_TIME_MIN_MS  (-INT64_C(9223309901257974000))
#define PG_TIME_MAX_MS  INT64_C(9223309901257974999)


typedef enum {
    PG_TIME_OK = 0,
    PG_TIME_BAD_REQUEST,      /* err holds the message; errorType bad_data */
    PG_TIME_NO_MEMORY
} pg_time_rc_e;


/*
 * A Unix time in seconds as Go's strconv.ParseFloat reads it (fractions
 * rounded to ms as Prometheus does; hex floats, underscores, inf and nan
 * included), or an RFC 3339 time with optional fraction and offset.
 * Returns 0 and the time as timestamp.FromTime() gives it in ms, or -1.
 */
int pg_parse_time(const uint8_t *s, size_t len, int64_t *ms);


typedef struct {
    pg_str_t        query;         /* decoded; empty when absent */
    int64_t         start_ms;      /* PG_TIME_MIN_MS when absent or empty */
    int64_t         end_ms;        /* PG_TIME_MAX_MS when absent or empty */
    unsigned        has_query:1;
    unsigned        has_start:1;
    unsigned        has_end:1;
} pg_query_params_t;


/*
 * The query, start and end parameters from an URL query string and an
 * application/x-www-form-urlencoded body (either may be empty), as Go's
 * r.FormValue() picks them: the first value, the body's before the query
 * string's; pairs with a bad %-escape or a ';' are skipped.  Then start and
 * end are parsed and checked against each other (an accepted request has
 * start_ms <= end_ms).  Decoded strings are taken from alloc.  On
 * PG_TIME_BAD_REQUEST err gets the message as Prometheus words it (which
 * quotes the whole bad value), cut to err_len and NUL-terminated.
 */
pg_time_rc_e pg_parse_query_params(const uint8_t *args, size_t args_len,
    const uint8_t *body, size_t body_len, const pg_allocator_t *alloc,
    pg_query_params_t *qp, char *err, size_t err_len);

/*
 * The same from a JSON body: {"query":"...","start":"...","end":...},
 * values strings or numbers (null as absent); other members are ignored,
 * a repeated member replaces the earlier one, as Go's encoding/json does.
 * Malformed JSON, nesting deeper than PG_QUERY_JSON_DEPTH and a body above
 * PG_QUERY_JSON_MAX bytes are rejected with a message.
 */
#define PG_QUERY_JSON_DEPTH  64
#define PG_QUERY_JSON_MAX    (1024 * 1024)

pg_time_rc_e pg_parse_query_json(const uint8_t *body, size_t len,
    const pg_allocator_t *alloc, pg_query_params_t *qp, char *err,
    size_t err_len);


/* ------------------------------- Go's numbers and dates, for PromQL too */

typedef enum {
    PG_GO_FLOAT_OK = 0,
    PG_GO_FLOAT_SYNTAX,     /* strconv.ErrSyntax */
    PG_GO_FLOAT_RANGE       /* strconv.ErrRange: *v is +Inf or -Inf */
} pg_go_float_rc_e;

/*
 * Go's strconv.ParseFloat(s, 64): [+-] then inf, infinity (any case) or,
 * unsigned, nan; or decimal digits with an optional '.' and e-exponent; or
 * 0x hex digits with an optional '.' and a mandatory p-exponent; '_' as
 * underscoreOK() allows.  An underflow is no error, as in Go.  buf must
 * hold len + 1 bytes.
 */
pg_go_float_rc_e pg_go_parse_float(const uint8_t *s, size_t len, char *buf,
    double *v);

/* Go's underscoreOK(): '_' only between digits or after a base prefix */
int pg_go_underscore_ok(const uint8_t *s, size_t len);

/* Go's int64(f) on amd64: NaN and values out of range give INT64_MIN */
int64_t pg_go_f2i(double v);

/* days since 1970-01-01 of a proleptic Gregorian date */
int64_t pg_days_from_civil(int64_t y, int m, int d);

#endif /* PG_TIME_H */
