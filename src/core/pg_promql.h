/*
 * PromQL selector extraction for /api/v1/query_exemplars: parses a query
 * with the lexer, the very LALR automaton (goyacc's tables) and the checks
 * of Prometheus 3.5's parser.ParseExpr, experimental features off, and
 * returns what parser.ExtractSelectors would, as matcher sets.  UTF-8
 * names are written quoted: {"http.server.duration"}, {"service.name"="x"}.
 *
 * A query Prometheus rejects is rejected here, at the same position and
 * with the same text; a query it accepts yields the same selectors, each
 * with its matchers in Prometheus' order (a metric name written outside
 * the braces comes last).  Deliberate difference: a tree deeper than
 * PG_PROMQL_MAX_DEPTH is refused (Go's parser has no limit).
 */

#ifndef PG_PROMQL_H
#define PG_PROMQL_H

#include "pg_core.h"
#include "pg_matcher.h"


/* the height of the expression tree: parentheses, operators, calls... */
#define PG_PROMQL_MAX_DEPTH  2048


typedef enum {
    PG_PROMQL_OK = 0,
    PG_PROMQL_ERROR,              /* parse error, see pg_promql_error_t */
    PG_PROMQL_NOMEM               /* the allocator returned NULL */
} pg_promql_rc_e;


/*
 * message is Prometheus' text, cut at a character boundary where it is
 * longer (a regexp error quotes the whole pattern).
 */
typedef struct {
    size_t          pos;          /* byte offset in the query; above its
                                     length: Go's "invalid position" */
    int             raw;          /* the message alone: "unexpected error",
                                     Prometheus' answer to a Go panic in
                                     its parser */
    char            message[1024]; /* NUL-terminated */
} pg_promql_error_t;


/*
 * Parses query[0..len) and fills set with its vector selectors, in the
 * order ExtractSelectors yields them (depth first; an aggregation's
 * expression before its parameter).  A query without selectors ("1 + 1",
 * "vector(1)") succeeds with an empty set.  Everything, compiled regular
 * expressions included, is allocated from alloc and lives as long as it.
 * err may be NULL.
 */
pg_promql_rc_e pg_promql_selectors(const uint8_t *query, size_t len,
    pg_allocator_t *alloc, pg_selector_set_t *set, pg_promql_error_t *err);

/*
 * The error as Prometheus' API reports it, "<line>:<col>: parse error:
 * <message>" (col counts bytes from 1), "unknown position: parse error:
 * ..." for an empty query, or the message alone when err->raw is set.
 * Writes at most size bytes, NUL-terminated; returns the length it needed,
 * like snprintf().
 */
size_t pg_promql_error_format(const uint8_t *query, size_t len,
    const pg_promql_error_t *err, char *buf, size_t size);

#endif /* PG_PROMQL_H */
