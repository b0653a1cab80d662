/*
 * Label matchers as Prometheus evaluates them: =, !=, =~ and !~ against a
 * series' label set, a missing label reading as the empty string.
 *
 * Regular expressions use Go's RE2 syntax, which Prometheus 3.5 compiles
 * as "^(?s:RE)$": anchored, and "." matches a newline too (unless the
 * pattern says (?-s)).  The pattern is parsed with Go's rules: whatever
 * Go refuses (lookaround, backreferences, possessive and nested
 * quantifiers, atomic groups, \K, recursion, conditionals, unknown
 * escapes...) is refused with Go's message, and the rest is written out as
 * a PCRE2 pattern that means the same, every construct spelled explicitly.
 *
 * Matching runs pcre2_dfa_match(), which does not backtrack, with a fixed
 * workspace that bounds its work per subject byte; a pattern that needs
 * more states (nested quantifiers on long values) falls back to
 * pcre2_match() under the limits below.  A match that hits a limit counts
 * as no match.
 *
 * Memory: everything, PCRE2's compiled code and match data included, comes
 * from the caller's pg_allocator_t through a PCRE2 general context whose
 * free() is a no-op: a matcher lives as long as that memory, and has
 * nothing to release.  Matching allocates nothing, except a buffer, once
 * per matcher and grown as needed, to read a value that is not UTF-8 (Go
 * reads each bad byte as U+FFFD).  A compiled matcher keeps match state,
 * one match at a time, and a regular expression its last 32 answers for
 * values under 58 bytes (2 KB): label values repeat across the series a
 * query meets.
 *
 * Known differences from Go: under (?i), \p{Lu}, \p{Ll} and \p{Lt} match
 * every cased letter and \p{Script} is not case-folded, where Go's tables
 * differ by a few characters; \p{..} classes follow PCRE2's Unicode 14
 * tables where Prometheus 3.5's Go has Unicode 16 (the scripts added since
 * are written as ranges: Unicode 15's exactly, 16's as their blocks);
 * non-capturing groups nested more than PG_REGEX_MAX_NESTING deep are
 * refused; a pattern PCRE2 cannot hold
 * (compiled size over 64 KiB, e.g. a big group repeated {1000} times) is
 * refused with PCRE2's reason.
 */

#ifndef PG_MATCHER_H
#define PG_MATCHER_H

#include "pg_core.h"
#include "pg_rw.h"                /* pg_label_t */


typedef enum {
    PG_MATCH_EQ = 0,
    PG_MATCH_NEQ,
    PG_MATCH_RE,
    PG_MATCH_NRE
} pg_match_op_e;


typedef struct pg_regex_s  pg_regex_t;


typedef struct {
    pg_match_op_e   op;
    pg_str_t        name;          /* unescaped */
    pg_str_t        value;         /* unescaped; the RE2 source for RE/NRE */
    pg_regex_t     *re;            /* compiled, RE and NRE only */
} pg_matcher_t;


typedef struct {
    pg_matcher_t   *matchers;
    size_t          nmatchers;
} pg_selector_t;


typedef struct {
    pg_selector_t  *selectors;
    size_t          nselectors;
} pg_selector_set_t;


/* pg_matcher_init() results */
#define PG_MATCHER_OK       0
#define PG_MATCHER_BAD_RE  -1     /* err holds Go's "error parsing regexp" */
#define PG_MATCHER_NOMEM   -2


/*
 * PCRE2's limits for the backtracking fallback: steps, backtracking depth
 * and the memory that depth takes, which is the bound that binds.
 */
#define PG_REGEX_MATCH_LIMIT   1000000
#define PG_REGEX_DEPTH_LIMIT   100000
#define PG_REGEX_HEAP_LIMIT    4096      /* KiB */

/* Go's limits on a regexp parse tree */
#define PG_REGEX_MAX_NESTING   1000
#define PG_REGEX_MAX_REPEAT    1000


/*
 * Sets up m; for RE and NRE compiles value.  err (may be NULL) receives a
 * NUL-terminated message, truncated to err_size, on PG_MATCHER_BAD_RE.
 * name and value are referenced, not copied.
 */
int pg_matcher_init(pg_matcher_t *m, pg_match_op_e op, pg_str_t name,
    pg_str_t value, pg_allocator_t *alloc, char *err, size_t err_size);

/* 1 if the matcher accepts the label value v */
int pg_matcher_matches(const pg_matcher_t *m, pg_str_t v);

/*
 * 1 if every matcher of sel accepts labels[], which must be sorted by name
 * with unique names (as remote write requires).
 */
int pg_selector_match(const pg_selector_t *sel, const pg_label_t *labels,
    size_t n);

/* 1 if any selector of set matches; an empty set matches nothing */
int pg_selector_set_match(const pg_selector_set_t *set,
    const pg_label_t *labels, size_t n);

/* "=", "!=", "=~", "!~" */
const char *pg_match_op_str(pg_match_op_e op);

/*
 * The selector as {name="value",...}, in matcher order, values quoted as
 * Go's %q quotes them (and U+FFFD as \ufffd), names that are not
 * [a-zA-Z_][a-zA-Z0-9_]* quoted the same way ({"service.name"="x"}):
 * PromQL that parses back to the same matchers.  Writes at most size
 * bytes, NUL-terminated; returns the length it needed, like snprintf().
 */
size_t pg_selector_format(const pg_selector_t *sel, char *buf, size_t size);

/*
 * Go's strconv.Quote (fmt's %q) of s, or strconv.QuoteRune's form when
 * quote is '\''.  Same contract as pg_selector_format().
 */
size_t pg_go_quote(char *buf, size_t size, const uint8_t *s, size_t len,
    int quote);

#endif /* PG_MATCHER_H */
