/*
 * PromQL selector extraction for /api/v1/query_exemplars: parses a query
 * with the grammar, lexer and checks of Prometheus 2.42's parser.ParseExpr
 * and returns what parser.ExtractSelectors would, as matcher sets.
 *
 * A query Prometheus rejects is rejected here, at the same position and,
 * wherever practical, with the same text; a query it accepts yields the
 * same selectors.  Deliberate differences: nesting deeper than
 * PG_PROMQL_MAX_DEPTH is refused (Go's parser has no limit); in each
 * selector the __name__ matcher of a metric name comes first (Prometheus
 * appends it last; order does not change what matches).
 */

#ifndef PG_PROMQL_H
#define PG_PROMQL_H

#include "pg_core.h"
#include "pg_matcher.h"


/* parentheses, calls, unary operators, "^" chains and the like */
#define PG_PROMQL_MAX_DEPTH  256


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
    size_t          pos;          /* byte offset in the query */
    char            message[256]; /* NUL-terminated */
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
 * <message>" (col counts bytes from 1).  Writes at most size bytes,
 * NUL-terminated; returns the length it needed, like snprintf().
 */
size_t pg_promql_error_format(const uint8_t *query, size_t len,
    const pg_promql_error_t *err, char *buf, size_t size);

#endif /* PG_PROMQL_H */
