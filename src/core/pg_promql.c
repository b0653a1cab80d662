/*
 * PromQL parsing as Prometheus 3.5 does it (promql/parser: lex.go,
 * generated_parser.y, parse.go, ast.go), down to its quirks, so that a
 * query is accepted or refused, and its selectors come out, exactly as
 * there.
 *
 * The lexer is a transcription of lex.go, state function by state
 * function.  The parser is goyacc's automaton itself: pg_promql_yacc.h
 * holds the tables of generated_parser.y.go (t/gen_promql_yacc.py writes
 * it), pg_promql_parse() is goyacc's driver, error recovery included, and
 * pg_promql_reduce() holds the grammar's actions, case by case with the
 * Go file's rule numbers.  Error texts, their positions (often the
 * lookahead item's, as in Go) and which error comes first are therefore
 * Prometheus' own.  Like Prometheus it reports the first error only and
 * type-checks only a tree that parsed without one.
 *
 * Go's runtime panics inside the parser (a failed type assertion in an
 * action, an empty closingParens slice) become Prometheus' "unexpected
 * error", as parser.recover() makes them.  Experimental features are off,
 * as in a Prometheus started without --enable-feature: duration
 * expressions and experimental functions and aggregations are refused
 * with Prometheus' messages.
 *
 * Deliberate difference: an expression nesting deeper than
 * PG_PROMQL_MAX_DEPTH is refused (Go has no limit).
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pg_promql.h"
#include "pg_promql_yacc.h"
#include "pg_time.h"
#include "pg_utf8.h"


#define PG_EOF           (-1)
#define PG_RUNE_ERROR    0xfffd

/* goyacc's stack, in entries: more than PG_PROMQL_MAX_DEPTH trees need */
#define PG_YY_MAX_STACK  (4 * PG_PROMQL_MAX_DEPTH + 64)

#define PG_DURATION_LIMIT  (9223372036854775808.0 / 1e9)   /* 1<<63/1e9 */


/* an item of the lexer (lex.go Item): val is the text, or an error message */
typedef struct {
    int             typ;
    int64_t         pos;
    const uint8_t  *val;
    size_t          len;
} pg_item_t;


typedef enum {
    PG_LEX_NIL = 0,                 /* Go's nil stateFn: EOF from now on */
    PG_LEX_STATEMENTS,
    PG_LEX_INSIDE_BRACES,
    PG_LEX_DURATION_EXPR,
    PG_LEX_STRING,
    PG_LEX_RAW_STRING,
    PG_LEX_ESCAPE,
    PG_LEX_LINE_COMMENT,
    PG_LEX_SPACE,
    PG_LEX_NUMBER_OR_DURATION,
    PG_LEX_KEYWORD_OR_IDENTIFIER,
    PG_LEX_IDENTIFIER
} pg_lex_state_e;


typedef struct {
    const uint8_t  *input;
    size_t          len;
    size_t          pos;
    size_t          start;
    size_t          width;
    pg_lex_state_e  state;
    pg_item_t      *item;
    int             scanned;
    int             paren_depth;
    int             brace_open;
    int             bracket_open;
    int             got_colon;
    int             got_duration;
    int32_t         string_open;
    char            error[160];
} pg_lexer_t;


/* Go slices, with their nil-ness: an append may share or grow */
typedef struct {
    pg_matcher_t  **v;
    size_t          len;
    size_t          cap;
    int             nonnil;
} pg_mlist_t;

typedef struct {
    pg_str_t       *v;
    size_t          len;
    size_t          cap;
    int             nonnil;
} pg_slist_t;


typedef enum {
    PG_V_NONE = 0,
    PG_V_VECTOR,
    PG_V_SCALAR,
    PG_V_MATRIX,
    PG_V_STRING
} pg_vtype_e;


typedef struct {
    const char     *name;
    pg_vtype_e      args[5];
    int             nargs;
    int             variadic;
    pg_vtype_e      ret;
    int             experimental;
} pg_func_t;


typedef enum {
    PG_N_EXPRESSIONS = 1,
    PG_N_AGGREGATE,
    PG_N_BINARY,
    PG_N_CALL,
    PG_N_MATRIX,
    PG_N_SUBQUERY,
    PG_N_NUMBER,
    PG_N_PAREN,
    PG_N_STRING,
    PG_N_UNARY,
    PG_N_VECTOR,
    PG_N_DURATION
} pg_node_kind_e;


typedef enum {
    PG_CARD_ONE_TO_ONE = 0,
    PG_CARD_MANY_TO_ONE,
    PG_CARD_ONE_TO_MANY,
    PG_CARD_MANY_TO_MANY
} pg_card_e;


typedef struct pg_node_s  pg_node_t;

/* the AST nodes of ast.go the parser builds; NULL is Go's nil Node */
struct pg_node_s {
    pg_node_kind_e  kind;
    int             height;       /* recursion needed, PG_PROMQL_MAX_DEPTH */
    int             typed;        /* vtype is known */
    pg_vtype_e      vtype;

    /* PosRange of AGGREGATE, CALL, NUMBER, PAREN, STRING, VECTOR; the
     * start of UNARY and DURATION (StartPos); EndPos of MATRIX, SUBQUERY */
    int64_t         start;
    int64_t         end;

    /* EXPRESSIONS */
    pg_node_t     **list;
    size_t          n;
    size_t          cap;

    /* NUMBER */
    double          val;

    /* STRING; VECTOR: Name */
    pg_str_t        str;

    /* VECTOR */
    pg_mlist_t      matchers;
    int             bypass_empty_check;

    /* VECTOR, SUBQUERY: offset (ns), @ */
    int64_t         offset;
    pg_node_t      *offset_expr;
    int             has_timestamp;
    int             start_or_end;

    /* MATRIX (VectorSelector), SUBQUERY, PAREN, UNARY, AGGREGATE: Expr */
    pg_node_t      *expr;

    /* CALL */
    const pg_func_t  *func;
    pg_node_t      *args;         /* EXPRESSIONS */

    /* AGGREGATE, BINARY, UNARY, DURATION: Op; AGGREGATE: Param, Grouping */
    int             op;
    pg_node_t      *param;
    pg_slist_t      grouping;
    int             without;

    /* BINARY, DURATION */
    pg_node_t      *lhs;
    pg_node_t      *rhs;
    int             return_bool;
    int             matching;     /* VectorMatching != nil */
    pg_card_e       card;
    pg_slist_t      matching_labels;
    int             on;
    pg_slist_t      include;
    int             wrapped;
};


/* goyacc's yySymType */
typedef struct {
    int             yys;
    pg_node_t      *node;
    pg_item_t       item;
    pg_mlist_t      matchers;
    pg_matcher_t   *matcher;
    pg_slist_t      strings;
    double          flt;
} pg_yysym_t;


typedef struct {
    const uint8_t      *input;
    size_t              len;
    pg_allocator_t     *alloc;
    pg_lexer_t          lex;

    int                 inject;
    int                 injecting;
    pg_yysym_t          lval;       /* yyParserImpl.lval */

    int64_t             last_closing;
    int64_t            *closing;    /* closingParens[head..n) */
    size_t              nclosing;
    size_t              closing_head;
    size_t              closing_cap;

    pg_node_t          *result;
    size_t              nselectors;

    int                 has_error;
    int                 panicked;   /* a Go runtime panic: "unexpected error" */
    int                 too_deep;
    int                 nomem;
    pg_promql_error_t  *err;
    pg_promql_error_t   local_err;
} pg_parser_t;


static void pg_lex_next_item(pg_lexer_t *l, pg_item_t *item);
static int pg_yyparse(pg_parser_t *p);
static void pg_reduce(pg_parser_t *p, int rule, pg_yysym_t *d,
    pg_yysym_t *v);
static pg_vtype_e pg_check(pg_parser_t *p, pg_node_t *n);
static int pg_extract(pg_parser_t *p, pg_node_t *n, pg_selector_set_t *set);
static void pg_errorf(pg_parser_t *p, int64_t pos, const char *fmt, ...);
static size_t pg_decode_rune(const uint8_t *s, size_t len, int32_t *r);
static size_t pg_quote_rune(char *buf, size_t size, int32_t r);
static size_t pg_format_u(char *buf, size_t size, int32_t r);
static int pg_ascii_caseeq(const char *lower, const uint8_t *s, size_t len);


#define V  PG_V_VECTOR
#define M  PG_V_MATRIX
#define S  PG_V_SCALAR
#define T  PG_V_STRING

/* Prometheus 3.5 promql/parser/functions.go, sorted by name */
static const pg_func_t  pg_functions[] = {
    { "abs", { V }, 1, 0, V, 0 },
    { "absent", { V }, 1, 0, V, 0 },
    { "absent_over_time", { M }, 1, 0, V, 0 },
    { "acos", { V }, 1, 0, V, 0 },
    { "acosh", { V }, 1, 0, V, 0 },
    { "asin", { V }, 1, 0, V, 0 },
    { "asinh", { V }, 1, 0, V, 0 },
    { "atan", { V }, 1, 0, V, 0 },
    { "atanh", { V }, 1, 0, V, 0 },
    { "avg_over_time", { M }, 1, 0, V, 0 },
    { "ceil", { V }, 1, 0, V, 0 },
    { "changes", { M }, 1, 0, V, 0 },
    { "clamp", { V, S, S }, 3, 0, V, 0 },
    { "clamp_max", { V, S }, 2, 0, V, 0 },
    { "clamp_min", { V, S }, 2, 0, V, 0 },
    { "cos", { V }, 1, 0, V, 0 },
    { "cosh", { V }, 1, 0, V, 0 },
    { "count_over_time", { M }, 1, 0, V, 0 },
    { "day_of_month", { V }, 1, 1, V, 0 },
    { "day_of_week", { V }, 1, 1, V, 0 },
    { "day_of_year", { V }, 1, 1, V, 0 },
    { "days_in_month", { V }, 1, 1, V, 0 },
    { "deg", { V }, 1, 0, V, 0 },
    { "delta", { M }, 1, 0, V, 0 },
    { "deriv", { M }, 1, 0, V, 0 },
    { "double_exponential_smoothing", { M, S, S }, 3, 0, V, 1 },
    { "exp", { V }, 1, 0, V, 0 },
    { "floor", { V }, 1, 0, V, 0 },
    { "histogram_avg", { V }, 1, 0, V, 0 },
    { "histogram_count", { V }, 1, 0, V, 0 },
    { "histogram_fraction", { S, S, V }, 3, 0, V, 0 },
    { "histogram_quantile", { S, V }, 2, 0, V, 0 },
    { "histogram_stddev", { V }, 1, 0, V, 0 },
    { "histogram_stdvar", { V }, 1, 0, V, 0 },
    { "histogram_sum", { V }, 1, 0, V, 0 },
    { "hour", { V }, 1, 1, V, 0 },
    { "idelta", { M }, 1, 0, V, 0 },
    { "increase", { M }, 1, 0, V, 0 },
    { "info", { V, V }, 2, 0, V, 1 },
    { "irate", { M }, 1, 0, V, 0 },
    { "label_join", { V, T, T, T }, 4, -1, V, 0 },
    { "label_replace", { V, T, T, T, T }, 5, 0, V, 0 },
    { "last_over_time", { M }, 1, 0, V, 0 },
    { "ln", { V }, 1, 0, V, 0 },
    { "log10", { V }, 1, 0, V, 0 },
    { "log2", { V }, 1, 0, V, 0 },
    { "mad_over_time", { M }, 1, 0, V, 1 },
    { "max_over_time", { M }, 1, 0, V, 0 },
    { "min_over_time", { M }, 1, 0, V, 0 },
    { "minute", { V }, 1, 1, V, 0 },
    { "month", { V }, 1, 1, V, 0 },
    { "pi", { PG_V_NONE }, 0, 0, S, 0 },
    { "predict_linear", { M, S }, 2, 0, V, 0 },
    { "present_over_time", { M }, 1, 0, V, 0 },
    { "quantile_over_time", { S, M }, 2, 0, V, 0 },
    { "rad", { V }, 1, 0, V, 0 },
    { "rate", { M }, 1, 0, V, 0 },
    { "resets", { M }, 1, 0, V, 0 },
    { "round", { V, S }, 2, 1, V, 0 },
    { "scalar", { V }, 1, 0, S, 0 },
    { "sgn", { V }, 1, 0, V, 0 },
    { "sin", { V }, 1, 0, V, 0 },
    { "sinh", { V }, 1, 0, V, 0 },
    { "sort", { V }, 1, 0, V, 0 },
    { "sort_by_label", { V, T }, 2, -1, V, 1 },
    { "sort_by_label_desc", { V, T }, 2, -1, V, 1 },
    { "sort_desc", { V }, 1, 0, V, 0 },
    { "sqrt", { V }, 1, 0, V, 0 },
    { "stddev_over_time", { M }, 1, 0, V, 0 },
    { "stdvar_over_time", { M }, 1, 0, V, 0 },
    { "sum_over_time", { M }, 1, 0, V, 0 },
    { "tan", { V }, 1, 0, V, 0 },
    { "tanh", { V }, 1, 0, V, 0 },
    { "time", { PG_V_NONE }, 0, 0, S, 0 },
    { "timestamp", { V }, 1, 0, V, 0 },
    { "ts_of_last_over_time", { M }, 1, 0, V, 1 },
    { "ts_of_max_over_time", { M }, 1, 0, V, 1 },
    { "ts_of_min_over_time", { M }, 1, 0, V, 1 },
    { "vector", { S }, 1, 0, V, 0 },
    { "year", { V }, 1, 1, V, 0 },
    { NULL, { PG_V_NONE }, 0, 0, PG_V_NONE, 0 }
};

#undef V
#undef M
#undef S
#undef T


/* lex.go's key map: words the lexer turns into keywords, any case */
static const struct {
    const char     *word;
    int             typ;
} pg_keywords[] = {
    { "and", PG_I_LAND },
    { "or", PG_I_LOR },
    { "unless", PG_I_LUNLESS },
    { "atan2", PG_I_ATAN2 },
    { "sum", PG_I_SUM },
    { "avg", PG_I_AVG },
    { "count", PG_I_COUNT },
    { "min", PG_I_MIN },
    { "max", PG_I_MAX },
    { "group", PG_I_GROUP },
    { "stddev", PG_I_STDDEV },
    { "stdvar", PG_I_STDVAR },
    { "topk", PG_I_TOPK },
    { "bottomk", PG_I_BOTTOMK },
    { "count_values", PG_I_COUNT_VALUES },
    { "quantile", PG_I_QUANTILE },
    { "limitk", PG_I_LIMITK },
    { "limit_ratio", PG_I_LIMIT_RATIO },
    { "offset", PG_I_OFFSET },
    { "by", PG_I_BY },
    { "without", PG_I_WITHOUT },
    { "on", PG_I_ON },
    { "ignoring", PG_I_IGNORING },
    { "group_left", PG_I_GROUP_LEFT },
    { "group_right", PG_I_GROUP_RIGHT },
    { "bool", PG_I_BOOL },
    { "start", PG_I_START },
    { "end", PG_I_END },
    { "inf", PG_I_NUMBER },
    { "nan", PG_I_NUMBER },
    { NULL, 0 }
};


#define pg_is_operator(t)                                                    \
    ((t) > PG_I_operatorsStart && (t) < PG_I_operatorsEnd)
#define pg_is_aggregator(t)                                                  \
    ((t) > PG_I_aggregatorsStart && (t) < PG_I_aggregatorsEnd)
#define pg_is_keyword(t)                                                     \
    ((t) > PG_I_keywordsStart && (t) < PG_I_keywordsEnd)
#define pg_is_comparison(t)                                                  \
    ((t) == PG_I_EQLC || (t) == PG_I_NEQ || (t) == PG_I_LTE                   \
     || (t) == PG_I_LSS || (t) == PG_I_GTE || (t) == PG_I_GTR)
#define pg_is_set_operator(t)                                                \
    ((t) == PG_I_LAND || (t) == PG_I_LOR || (t) == PG_I_LUNLESS)


pg_promql_rc_e
pg_promql_selectors(const uint8_t *query, size_t len, pg_allocator_t *alloc,
    pg_selector_set_t *set, pg_promql_error_t *err)
{
    pg_parser_t  p;

    memset(&p, 0, sizeof(pg_parser_t));

    p.input = query;
    p.len = len;
    p.alloc = alloc;
    p.err = err != NULL ? err : &p.local_err;

    p.lex.input = query;
    p.lex.len = len;
    p.lex.state = PG_LEX_STATEMENTS;

    p.err->pos = 0;
    p.err->raw = 0;
    p.err->message[0] = '\0';

    set->selectors = NULL;
    set->nselectors = 0;

    /* parseGenerated(START_EXPRESSION) */
    p.inject = PG_I_START_EXPRESSION;
    p.injecting = 1;

    (void) pg_yyparse(&p);

    if (p.nomem) {
        return PG_PROMQL_NOMEM;
    }

    if (p.panicked || p.too_deep) {
        return PG_PROMQL_ERROR;
    }

    /* only a tree that parsed without an error is type-checked */
    if (!p.has_error && p.result != NULL) {
        (void) pg_check(&p, p.result);

        if (p.nomem) {
            return PG_PROMQL_NOMEM;
        }

        if (p.panicked) {
            return PG_PROMQL_ERROR;
        }
    }

    if (p.has_error) {
        return PG_PROMQL_ERROR;
    }

    if (p.result == NULL) {
        /* cannot happen without an error; Prometheus would panic later */
        pg_errorf(&p, 0, "no expression found in input");
        return PG_PROMQL_ERROR;
    }

    if (pg_extract(&p, p.result, set) != 0) {
        return p.panicked ? PG_PROMQL_ERROR : PG_PROMQL_NOMEM;
    }

    return PG_PROMQL_OK;
}


size_t
pg_promql_error_format(const uint8_t *query, size_t len,
    const pg_promql_error_t *err, char *buf, size_t size)
{
    size_t  i, line, last_break, col;
    int     n;

    if (err->raw) {
        n = snprintf(buf, size, "%s", err->message);

    } else if (len == 0) {
        /* PositionRange.StartPosInput() of an empty query */
        n = snprintf(buf, size, "unknown position: parse error: %s",
                     err->message);

    } else if (err->pos > len) {
        n = snprintf(buf, size, "invalid position: parse error: %s",
                     err->message);

    } else {
        line = 1;
        last_break = 0;

        for (i = 0; i < err->pos; i++) {
            if (query[i] == '\n') {
                last_break = i + 1;
                line++;
            }
        }

        /* Go counts bytes from the last line break, from 1 */
        col = err->pos - last_break + 1;

        n = snprintf(buf, size, "%zu:%zu: parse error: %s", line, col,
                     err->message);
    }

    return n < 0 ? 0 : (size_t) n;
}


/* lexer: lex.go */

static int32_t
pg_lex_rune(pg_lexer_t *l)
{
    int32_t  r;

    if (l->pos >= l->len) {
        l->width = 0;
        return PG_EOF;
    }

    l->width = pg_decode_rune(l->input + l->pos, l->len - l->pos, &r);
    l->pos += l->width;

    return r;
}


static void
pg_lex_backup(pg_lexer_t *l)
{
    l->pos -= l->width;
}


static int32_t
pg_lex_peek(pg_lexer_t *l)
{
    int32_t  r;

    r = pg_lex_rune(l);
    pg_lex_backup(l);

    return r;
}


/* strings.ContainsRune(valid, r) for the lexer's ASCII sets */
static int
pg_lex_in(const char *valid, int32_t r)
{
    return r > 0 && r < 0x80 && strchr(valid, (int) r) != NULL;
}


static int
pg_lex_accept(pg_lexer_t *l, const char *valid)
{
    if (pg_lex_in(valid, pg_lex_rune(l))) {
        return 1;
    }

    pg_lex_backup(l);

    return 0;
}


static void
pg_lex_accept_run(pg_lexer_t *l, const char *valid)
{
    while (pg_lex_in(valid, pg_lex_rune(l))) { /* void */ }
    pg_lex_backup(l);
}


static int
pg_lex_is(pg_lexer_t *l, const char *valid)
{
    return pg_lex_in(valid, pg_lex_peek(l));
}


static void
pg_lex_emit(pg_lexer_t *l, int typ)
{
    l->item->typ = typ;
    l->item->pos = (int64_t) l->start;
    l->item->val = l->input + l->start;
    l->item->len = l->pos - l->start;
    l->start = l->pos;
    l->scanned = 1;
}


static void
pg_lex_ignore(pg_lexer_t *l)
{
    l->start = l->pos;
}


/* errorf(): the item is an ERROR at the start of the item being scanned */
static pg_lex_state_e
pg_lex_errorf(pg_lexer_t *l, const char *fmt, ...)
{
    va_list  args;
    int      n;

    va_start(args, fmt);
    n = vsnprintf(l->error, sizeof(l->error), fmt, args);
    va_end(args);

    if (n < 0) {
        n = 0;
    }

    l->item->typ = PG_I_ERROR;
    l->item->pos = (int64_t) l->start;
    l->item->val = (const uint8_t *) l->error;
    l->item->len = (size_t) n < sizeof(l->error) ? (size_t) n
                                                  : sizeof(l->error) - 1;
    l->scanned = 1;

    return PG_LEX_NIL;
}


static int
pg_is_space(int32_t r)
{
    return r == ' ' || r == '\t' || r == '\n' || r == '\r';
}


static int
pg_is_alpha(int32_t r)
{
    return r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
}


static int
pg_is_digit(int32_t r)
{
    return r >= '0' && r <= '9';
}


static int
pg_is_alnum(int32_t r)
{
    return pg_is_alpha(r) || pg_is_digit(r);
}


static void
pg_skip_spaces(pg_lexer_t *l)
{
    while (pg_is_space(pg_lex_peek(l))) {
        pg_lex_rune(l);
    }

    pg_lex_ignore(l);
}


/* the arithmetic operators, the same in and out of brackets; else 0 */
static int
pg_lex_arith_item(int32_t r)
{
    switch (r) {
    case '+':
        return PG_I_ADD;
    case '-':
        return PG_I_SUB;
    case '*':
        return PG_I_MUL;
    case '/':
        return PG_I_DIV;
    case '%':
        return PG_I_MOD;
    case '^':
        return PG_I_POW;
    default:
        return 0;
    }
}


/* a quote opens a string; in a raw one (`), backslashes are no escapes */
static pg_lex_state_e
pg_lex_open_string(pg_lexer_t *l, int32_t r)
{
    l->string_open = r;

    return (r == '`') ? PG_LEX_RAW_STRING : PG_LEX_STRING;
}


/* '(' or ')', the lexer going on in next */
static pg_lex_state_e
pg_lex_paren(pg_lexer_t *l, int32_t r, pg_lex_state_e next)
{
    char  q[16];

    if (r == '(') {
        pg_lex_emit(l, PG_I_LEFT_PAREN);
        l->paren_depth++;
        return next;
    }

    pg_lex_emit(l, PG_I_RIGHT_PAREN);
    l->paren_depth--;

    if (l->paren_depth < 0) {
        pg_quote_rune(q, sizeof(q), r);
        return pg_lex_errorf(l, "unexpected right parenthesis %s", q);
    }

    return next;
}


static pg_lex_state_e
pg_lex_statements(pg_lexer_t *l)
{
    int32_t  r, t;
    char     q[16];

    if (l->brace_open) {
        return PG_LEX_INSIDE_BRACES;
    }

    if (l->pos < l->len && l->input[l->pos] == '#') {
        return PG_LEX_LINE_COMMENT;
    }

    r = pg_lex_rune(l);

    if (r == PG_EOF) {
        if (l->paren_depth != 0) {
            return pg_lex_errorf(l, "unclosed left parenthesis");
        }

        if (l->bracket_open) {
            return pg_lex_errorf(l, "unclosed left bracket");
        }

        pg_lex_emit(l, PG_I_EOF);
        return PG_LEX_NIL;
    }

    t = pg_lex_arith_item(r);

    if (t) {
        pg_lex_emit(l, t);
        return PG_LEX_STATEMENTS;
    }

    switch (r) {

    case ',':
        pg_lex_emit(l, PG_I_COMMA);
        return PG_LEX_STATEMENTS;

    case ' ': case '\t': case '\n': case '\r':
        return PG_LEX_SPACE;

    case '=':
        t = pg_lex_peek(l);

        if (t == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, PG_I_EQLC);

        } else if (t == '~') {
            pg_quote_rune(q, sizeof(q), t);
            return pg_lex_errorf(l, "unexpected character after '=': %s", q);

        } else {
            pg_lex_emit(l, PG_I_EQL);
        }
        return PG_LEX_STATEMENTS;

    case '!':
        t = pg_lex_rune(l);

        if (t != '=') {
            pg_quote_rune(q, sizeof(q), t);
            return pg_lex_errorf(l, "unexpected character after '!': %s", q);
        }

        pg_lex_emit(l, PG_I_NEQ);
        return PG_LEX_STATEMENTS;

    case '<':
        if (pg_lex_peek(l) == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, PG_I_LTE);

        } else {
            pg_lex_emit(l, PG_I_LSS);
        }
        return PG_LEX_STATEMENTS;

    case '>':
        if (pg_lex_peek(l) == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, PG_I_GTE);

        } else {
            pg_lex_emit(l, PG_I_GTR);
        }
        return PG_LEX_STATEMENTS;

    default:
        break;
    }

    if (pg_is_digit(r) || (r == '.' && pg_is_digit(pg_lex_peek(l)))) {
        pg_lex_backup(l);
        return PG_LEX_NUMBER_OR_DURATION;
    }

    if (r == '"' || r == '\'' || r == '`') {
        return pg_lex_open_string(l, r);
    }

    if (pg_is_alpha(r) || r == ':') {
        if (!l->bracket_open) {
            pg_lex_backup(l);
            return PG_LEX_KEYWORD_OR_IDENTIFIER;
        }

        if (l->got_colon) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_errorf(l, "unexpected colon %s", q);
        }

        pg_lex_emit(l, PG_I_COLON);
        l->got_colon = 1;
        return PG_LEX_STATEMENTS;
    }

    switch (r) {

    case '(':
    case ')':
        return pg_lex_paren(l, r, PG_LEX_STATEMENTS);

    case '{':
        pg_lex_emit(l, PG_I_LEFT_BRACE);
        l->brace_open = 1;
        return PG_LEX_INSIDE_BRACES;

    case '[':
        if (l->bracket_open) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_errorf(l, "unexpected left bracket %s", q);
        }

        l->got_colon = 0;
        pg_lex_emit(l, PG_I_LEFT_BRACKET);

        if (pg_is_space(pg_lex_peek(l))) {
            pg_skip_spaces(l);
        }

        l->bracket_open = 1;
        return PG_LEX_DURATION_EXPR;

    case ']':
        if (!l->bracket_open) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_errorf(l, "unexpected right bracket %s", q);
        }

        pg_lex_emit(l, PG_I_RIGHT_BRACKET);
        l->bracket_open = 0;
        return PG_LEX_STATEMENTS;

    case '@':
        pg_lex_emit(l, PG_I_AT);
        return PG_LEX_STATEMENTS;

    default:
        break;
    }

    pg_quote_rune(q, sizeof(q), r);

    return pg_lex_errorf(l, "unexpected character: %s", q);
}


/* inside {}: keywords are plain identifiers */
static pg_lex_state_e
pg_lex_inside_braces(pg_lexer_t *l)
{
    int32_t  r, n;
    char     q[16];

    if (l->pos < l->len && l->input[l->pos] == '#') {
        return PG_LEX_LINE_COMMENT;
    }

    r = pg_lex_rune(l);

    if (r == PG_EOF) {
        return pg_lex_errorf(l, "unexpected end of input inside braces");
    }

    if (pg_is_space(r)) {
        return PG_LEX_SPACE;
    }

    if (pg_is_alpha(r)) {
        pg_lex_backup(l);
        return PG_LEX_IDENTIFIER;
    }

    switch (r) {

    case ',':
        pg_lex_emit(l, PG_I_COMMA);
        break;

    case '"':
    case '\'':
    case '`':
        return pg_lex_open_string(l, r);

    case '=':
        if (pg_lex_rune(l) == '~') {
            pg_lex_emit(l, PG_I_EQL_REGEX);
            break;
        }

        pg_lex_backup(l);
        pg_lex_emit(l, PG_I_EQL);
        break;

    case '!':
        n = pg_lex_rune(l);

        if (n == '~') {
            pg_lex_emit(l, PG_I_NEQ_REGEX);

        } else if (n == '=') {
            pg_lex_emit(l, PG_I_NEQ);

        } else {
            pg_quote_rune(q, sizeof(q), n);
            return pg_lex_errorf(l, "unexpected character after '!' inside "
                                 "braces: %s", q);
        }
        break;

    case '{':
        pg_quote_rune(q, sizeof(q), r);
        return pg_lex_errorf(l, "unexpected left brace %s", q);

    case '}':
        pg_lex_emit(l, PG_I_RIGHT_BRACE);
        l->brace_open = 0;
        return PG_LEX_STATEMENTS;

    default:
        pg_quote_rune(q, sizeof(q), r);
        return pg_lex_errorf(l, "unexpected character inside braces: %s", q);
    }

    return PG_LEX_INSIDE_BRACES;
}


/* lexDurationExpr(): right after "[" (and "(", operators) in brackets */
static pg_lex_state_e
pg_lex_duration_expr(pg_lexer_t *l)
{
    int32_t  r, t;
    char     q[16];

    r = pg_lex_rune(l);

    if (r == PG_EOF) {
        return pg_lex_errorf(l, "unexpected end of input in duration "
                             "expression");
    }

    switch (r) {

    case ']':
        pg_lex_emit(l, PG_I_RIGHT_BRACKET);
        l->bracket_open = 0;
        l->got_colon = 0;
        return PG_LEX_STATEMENTS;

    case ':':
        pg_lex_emit(l, PG_I_COLON);

        if (!l->got_duration) {
            return pg_lex_errorf(l, "unexpected colon before duration in "
                                 "duration expression");
        }

        if (l->got_colon) {
            return pg_lex_errorf(l, "unexpected repeated colon in duration "
                                 "expression");
        }

        l->got_colon = 1;
        return PG_LEX_DURATION_EXPR;

    case '(':
    case ')':
        return pg_lex_paren(l, r, PG_LEX_DURATION_EXPR);

    case ' ': case '\t': case '\n': case '\r':
        pg_skip_spaces(l);
        return PG_LEX_DURATION_EXPR;

    default:
        break;
    }

    t = pg_lex_arith_item(r);

    if (t) {
        pg_lex_emit(l, t);
        return PG_LEX_DURATION_EXPR;
    }

    if (pg_is_digit(r) || (r == '.' && pg_is_digit(pg_lex_peek(l)))) {
        pg_lex_backup(l);
        l->got_duration = 1;
        return PG_LEX_NUMBER_OR_DURATION;
    }

    pg_quote_rune(q, sizeof(q), r);

    return pg_lex_errorf(l, "unexpected character in duration expression: %s",
                         q);
}


static pg_lex_state_e
pg_lex_string(pg_lexer_t *l)
{
    int32_t  r;

    for ( ;; ) {
        r = pg_lex_rune(l);

        if (r == '\\') {
            return PG_LEX_ESCAPE;
        }

        /* a bad byte, and a real U+FFFD too: Go cannot tell them apart */
        if (r == PG_RUNE_ERROR) {
            pg_lex_errorf(l, "invalid UTF-8 rune");
            return PG_LEX_STRING;
        }

        if (r == PG_EOF || r == '\n') {
            return pg_lex_errorf(l, "unterminated quoted string");
        }

        if (r == l->string_open) {
            break;
        }
    }

    pg_lex_emit(l, PG_I_STRING);

    return PG_LEX_STATEMENTS;
}


/* lexEscape(), from go/scanner */
static pg_lex_state_e
pg_lex_escape(pg_lexer_t *l)
{
    int       n;
    int32_t   ch;
    uint32_t  base, max, x, d;
    char      u[32];

    ch = pg_lex_rune(l);

    switch (ch) {

    case 'a': case 'b': case 'f': case 'n': case 'r': case 't': case 'v':
    case '\\':
        return PG_LEX_STRING;

    case '0': case '1': case '2': case '3': case '4': case '5': case '6':
    case '7':
        n = 3;
        base = 8;
        max = 255;
        break;

    case 'x':
        ch = pg_lex_rune(l);
        n = 2;
        base = 16;
        max = 255;
        break;

    case 'u':
        ch = pg_lex_rune(l);
        n = 4;
        base = 16;
        max = 0x10ffff;
        break;

    case 'U':
        ch = pg_lex_rune(l);
        n = 8;
        base = 16;
        max = 0x10ffff;
        break;

    case PG_EOF:
        pg_lex_errorf(l, "escape sequence not terminated");
        return PG_LEX_STRING;

    default:
        if (ch == l->string_open) {
            return PG_LEX_STRING;
        }

        pg_format_u(u, sizeof(u), ch);
        pg_lex_errorf(l, "unknown escape sequence %s", u);
        return PG_LEX_STRING;
    }

    x = 0;

    while (n > 0) {
        d = ch >= '0' && ch <= '9' ? (uint32_t) (ch - '0')
            : ch >= 'a' && ch <= 'f' ? (uint32_t) (ch - 'a' + 10)
            : ch >= 'A' && ch <= 'F' ? (uint32_t) (ch - 'A' + 10) : 16;

        if (d >= base) {
            if (ch == PG_EOF) {
                pg_lex_errorf(l, "escape sequence not terminated");
                return PG_LEX_STRING;
            }

            pg_format_u(u, sizeof(u), ch);
            pg_lex_errorf(l, "illegal character %s in escape sequence", u);
            return PG_LEX_STRING;
        }

        x = x * base + d;
        n--;

        if (n > 0) {
            ch = pg_lex_rune(l);
        }
    }

    if (x > max || (x >= 0xd800 && x < 0xe000)) {
        pg_lex_errorf(l, "escape sequence is an invalid Unicode code point");
    }

    return PG_LEX_STRING;
}


static pg_lex_state_e
pg_lex_raw_string(pg_lexer_t *l)
{
    int32_t  r;

    for ( ;; ) {
        r = pg_lex_rune(l);

        if (r == PG_RUNE_ERROR) {
            pg_lex_errorf(l, "invalid UTF-8 rune");
            return PG_LEX_RAW_STRING;
        }

        if (r == PG_EOF) {
            pg_lex_errorf(l, "unterminated raw string");
            return PG_LEX_RAW_STRING;
        }

        if (r == l->string_open) {
            break;
        }
    }

    pg_lex_emit(l, PG_I_STRING);

    return PG_LEX_STATEMENTS;
}


static pg_lex_state_e
pg_lex_space(pg_lexer_t *l)
{
    while (pg_is_space(pg_lex_peek(l))) {
        pg_lex_rune(l);
    }

    pg_lex_ignore(l);

    return PG_LEX_STATEMENTS;
}


static pg_lex_state_e
pg_lex_line_comment(pg_lexer_t *l)
{
    int32_t  r;

    l->pos++;

    do {
        r = pg_lex_rune(l);
    } while (r != '\r' && r != '\n' && r != PG_EOF);

    pg_lex_backup(l);
    pg_lex_emit(l, PG_I_COMMENT);

    return PG_LEX_STATEMENTS;
}


/* scanNumber(): what is scanned need not be a valid number */
static int
pg_lex_scan_number(pg_lexer_t *l)
{
    size_t       initial;
    int          dot, exp, hex;
    const char  *digits;
    char         set[40];

    initial = l->pos;
    digits = "0123456789";
    hex = 0;

    if (pg_lex_accept(l, "0") && pg_lex_accept(l, "xX")) {
        pg_lex_accept(l, "_");
        digits = "0123456789abcdefABCDEF";
        hex = 1;
    }

    snprintf(set, sizeof(set), "%s._eE", digits);

    pg_lex_accept(l, ".");
    pg_lex_accept(l, digits);

    dot = 0;
    exp = 0;

    while (pg_lex_is(l, set)) {

        if (pg_lex_is(l, ".") && dot) {
            pg_lex_accept(l, ".");
            return 0;
        }

        if (pg_lex_is(l, "eE") && exp) {
            pg_lex_accept(l, "eE");
            return 0;
        }

        if (pg_lex_accept(l, ".")) {
            dot = 1;

            if (pg_lex_accept(l, "_.")) {
                return 0;
            }

            /* fractional hexadecimal literals are not allowed */
            if (hex) {
                return 0;
            }
            continue;
        }

        if (pg_lex_accept(l, "eE")) {
            exp = 1;
            pg_lex_accept(l, "+-");

            if (pg_lex_accept(l, "._eE") || pg_lex_peek(l) == PG_EOF) {
                return 0;
            }
            continue;
        }

        if (pg_lex_accept(l, "_")) {
            if (pg_lex_accept(l, "._eE") || pg_lex_peek(l) == PG_EOF) {
                return 0;
            }
            continue;
        }

        pg_lex_accept_run(l, digits);
    }

    if (l->pos == initial) {
        return 0;
    }

    return !pg_is_alnum(pg_lex_peek(l));
}


static int
pg_lex_accept_remaining_duration(pg_lexer_t *l)
{
    if (!pg_lex_accept(l, "smhdwy")) {
        return 0;
    }

    /* "ms"; bad units like "hs" fail when the duration is parsed */
    pg_lex_accept(l, "s");

    while (pg_lex_accept(l, "0123456789")) {
        while (pg_lex_accept(l, "0123456789")) { /* void */ }

        if (!pg_lex_accept(l, "smhdw")) {
            return 0;
        }

        pg_lex_accept(l, "s");
    }

    return !pg_is_alnum(pg_lex_rune(l));
}


static pg_lex_state_e
pg_lex_number_or_duration(pg_lexer_t *l)
{
    if (pg_lex_scan_number(l)) {
        pg_lex_emit(l, PG_I_NUMBER);
        return PG_LEX_STATEMENTS;
    }

    /* the next two characters must be a unit and a non-alphanumeric */
    if (pg_lex_accept_remaining_duration(l)) {
        pg_lex_backup(l);
        pg_lex_emit(l, PG_I_DURATION);
        return PG_LEX_STATEMENTS;
    }

    return pg_lex_errorf(l, "bad number or duration syntax: \"%.*s\"",
                         (int) (l->pos - l->start),
                         (const char *) l->input + l->start);
}


static pg_lex_state_e
pg_lex_identifier(pg_lexer_t *l)
{
    while (pg_is_alnum(pg_lex_rune(l))) { /* void */ }

    pg_lex_backup(l);
    pg_lex_emit(l, PG_I_IDENTIFIER);

    return PG_LEX_STATEMENTS;
}


static pg_lex_state_e
pg_lex_keyword_or_identifier(pg_lexer_t *l)
{
    int32_t         r;
    size_t          i, len;
    const uint8_t  *word;

    do {
        r = pg_lex_rune(l);
    } while (pg_is_alnum(r) || r == ':');

    pg_lex_backup(l);

    word = l->input + l->start;
    len = l->pos - l->start;

    for (i = 0; pg_keywords[i].word != NULL; i++) {
        if (strlen(pg_keywords[i].word) == len
            && pg_ascii_caseeq(pg_keywords[i].word, word, len))
        {
            pg_lex_emit(l, pg_keywords[i].typ);
            return PG_LEX_STATEMENTS;
        }
    }

    pg_lex_emit(l, memchr(word, ':', len) != NULL ? PG_I_METRIC_IDENTIFIER
                                                  : PG_I_IDENTIFIER);

    return PG_LEX_STATEMENTS;
}


/* NextItem() */
static void
pg_lex_next_item(pg_lexer_t *l, pg_item_t *item)
{
    l->scanned = 0;
    l->item = item;

    if (l->state == PG_LEX_NIL) {
        pg_lex_emit(l, PG_I_EOF);
        return;
    }

    while (!l->scanned) {
        switch (l->state) {
        case PG_LEX_STATEMENTS:
            l->state = pg_lex_statements(l);
            break;
        case PG_LEX_INSIDE_BRACES:
            l->state = pg_lex_inside_braces(l);
            break;
        case PG_LEX_DURATION_EXPR:
            l->state = pg_lex_duration_expr(l);
            break;
        case PG_LEX_STRING:
            l->state = pg_lex_string(l);
            break;
        case PG_LEX_RAW_STRING:
            l->state = pg_lex_raw_string(l);
            break;
        case PG_LEX_ESCAPE:
            l->state = pg_lex_escape(l);
            break;
        case PG_LEX_LINE_COMMENT:
            l->state = pg_lex_line_comment(l);
            break;
        case PG_LEX_SPACE:
            l->state = pg_lex_space(l);
            break;
        case PG_LEX_NUMBER_OR_DURATION:
            l->state = pg_lex_number_or_duration(l);
            break;
        case PG_LEX_KEYWORD_OR_IDENTIFIER:
            l->state = pg_lex_keyword_or_identifier(l);
            break;
        case PG_LEX_IDENTIFIER:
            l->state = pg_lex_identifier(l);
            break;
        default:
            /* a nil state returned without an item cannot happen */
            pg_lex_emit(l, PG_I_EOF);
            l->state = PG_LEX_NIL;
            return;
        }
    }
}


/* parser: parse.go */

static void *
pg_palloc(pg_parser_t *p, size_t size)
{
    void  *m;

    if (p->nomem) {
        return NULL;
    }

    m = p->alloc->alloc(p->alloc->ctx, size);
    if (m == NULL) {
        p->nomem = 1;
        return NULL;
    }

    memset(m, 0, size);

    return m;
}


/*
 * Room for one more element after the n at v, which has room for *cap: v
 * itself, or when full a copy twice as large (first elements when *cap is
 * 0); NULL when out of memory.  Go's append(), without a free.
 */
static void *
pg_grow(pg_parser_t *p, void *v, size_t n, size_t *cap, size_t first,
    size_t size)
{
    void  *grown;

    if (n < *cap) {
        return v;
    }

    *cap = *cap ? *cap * 2 : first;

    grown = pg_palloc(p, *cap * size);
    if (grown == NULL) {
        return NULL;
    }

    if (n) {
        memcpy(grown, v, n * size);
    }

    return grown;
}


/* a Go runtime panic: parser.recover() turns it into "unexpected error" */
static void
pg_panic(pg_parser_t *p)
{
    if (p->panicked) {
        return;
    }

    p->panicked = 1;
    p->err->pos = 0;
    p->err->raw = 1;
    snprintf(p->err->message, sizeof(p->err->message), "unexpected error");
}


static void
pg_too_deep(pg_parser_t *p)
{
    if (p->too_deep || p->panicked) {
        return;
    }

    p->too_deep = 1;
    p->err->pos = 0;
    p->err->raw = 0;
    snprintf(p->err->message, sizeof(p->err->message),
             "query nests too deeply (more than %d levels)",
             PG_PROMQL_MAX_DEPTH);
}


static int
pg_aborted(pg_parser_t *p)
{
    return p->nomem || p->panicked || p->too_deep;
}


/* addParseErrf(): only the first error is reported, the rest counted */
static void
pg_errorf(pg_parser_t *p, int64_t pos, const char *fmt, ...)
{
    size_t   n;
    va_list  args;

    if (p->has_error || pg_aborted(p)) {
        p->has_error = 1;
        return;
    }

    p->has_error = 1;
    p->err->pos = pos < 0 ? SIZE_MAX : (size_t) pos;
    p->err->raw = 0;

    va_start(args, fmt);
    vsnprintf(p->err->message, sizeof(p->err->message), fmt, args);
    va_end(args);

    /* never leave half a UTF-8 sequence at a truncation */
    n = strlen(p->err->message);
    if (n == sizeof(p->err->message) - 1) {
        while (n > 0 && ((uint8_t) p->err->message[n - 1] & 0xc0) == 0x80) {
            n--;
        }
        if (n > 0 && ((uint8_t) p->err->message[n - 1] & 0xc0) == 0xc0) {
            n--;
        }
        p->err->message[n] = '\0';
    }
}


/* Go's %q of a string, into a buffer from the arena */
static const char *
pg_q(pg_parser_t *p, const uint8_t *s, size_t len)
{
    size_t   n;
    char    *buf;

    n = pg_go_quote(NULL, 0, s, len, '"');

    buf = pg_palloc(p, n + 1);
    if (buf == NULL) {
        return "\"\"";
    }

    (void) pg_go_quote(buf, n + 1, s, len, '"');

    return buf;
}


/* ItemTypeStr: the types with a string form */
static int
pg_item_has_str(int typ)
{
    switch (typ) {
    case PG_I_OPEN_HIST: case PG_I_CLOSE_HIST: case PG_I_LEFT_PAREN:
    case PG_I_RIGHT_PAREN: case PG_I_LEFT_BRACE: case PG_I_RIGHT_BRACE:
    case PG_I_LEFT_BRACKET: case PG_I_RIGHT_BRACKET: case PG_I_COMMA:
    case PG_I_EQL: case PG_I_COLON: case PG_I_SEMICOLON: case PG_I_BLANK:
    case PG_I_TIMES: case PG_I_SPACE: case PG_I_SUB: case PG_I_ADD:
    case PG_I_MUL: case PG_I_MOD: case PG_I_DIV: case PG_I_EQLC: case PG_I_NEQ:
    case PG_I_LTE: case PG_I_LSS: case PG_I_GTE: case PG_I_GTR:
    case PG_I_EQL_REGEX: case PG_I_NEQ_REGEX: case PG_I_POW:
    case PG_I_LAND: case PG_I_LOR: case PG_I_LUNLESS: case PG_I_ATAN2:
    case PG_I_OFFSET: case PG_I_BY: case PG_I_WITHOUT: case PG_I_ON:
    case PG_I_IGNORING: case PG_I_GROUP_LEFT: case PG_I_GROUP_RIGHT:
    case PG_I_BOOL: case PG_I_START: case PG_I_END:
        return 1;
    default:
        return pg_is_aggregator(typ);
    }
}


/* Item.String() */
static void
pg_item_string(pg_parser_t *p, const pg_item_t *it, char *buf, size_t size)
{
    size_t   i, runes;
    int32_t  r;

    if (it->typ == PG_I_EOF) {
        snprintf(buf, size, "EOF");

    } else if (it->typ == PG_I_ERROR) {
        snprintf(buf, size, "%.*s", (int) it->len, (const char *) it->val);

    } else if (it->typ == PG_I_IDENTIFIER
               || it->typ == PG_I_METRIC_IDENTIFIER)
    {
        pg_go_quote(buf, size, it->val, it->len, '"');

    } else if (pg_is_keyword(it->typ)) {
        snprintf(buf, size, "<%.*s>", (int) it->len, (const char *) it->val);

    } else if (pg_is_operator(it->typ)) {
        snprintf(buf, size, "<op:%.*s>", (int) it->len,
                 (const char *) it->val);

    } else if (pg_is_aggregator(it->typ)) {
        snprintf(buf, size, "<aggr:%.*s>", (int) it->len,
                 (const char *) it->val);

    } else if (it->len > 10) {
        /* %.10q: the first 10 runes, quoted */
        runes = 0;
        for (i = 0; i < it->len && runes < 10; runes++) {
            i += pg_decode_rune(it->val + i, it->len - i, &r);
        }

        pg_go_quote(buf, size > 3 ? size - 3 : size, it->val, i, '"');
        strncat(buf, "...", size - strlen(buf) - 1);

    } else {
        pg_go_quote(buf, size, it->val, it->len, '"');
    }

    (void) p;
}


/* Item.desc() */
static void
pg_item_desc(pg_parser_t *p, const pg_item_t *it, char *buf, size_t size)
{
    const char  *kind;
    char         str[96];

    if (pg_item_has_str(it->typ)) {
        pg_item_string(p, it, buf, size);
        return;
    }

    if (it->typ == PG_I_EOF) {
        snprintf(buf, size, "end of input");
        return;
    }

    switch (it->typ) {
    case PG_I_ERROR:
        kind = "error";
        break;
    case PG_I_COMMENT:
        kind = "comment";
        break;
    case PG_I_IDENTIFIER:
        kind = "identifier";
        break;
    case PG_I_METRIC_IDENTIFIER:
        kind = "metric identifier";
        break;
    case PG_I_STRING:
        kind = "string";
        break;
    case PG_I_NUMBER:
        kind = "number";
        break;
    case PG_I_DURATION:
        kind = "duration";
        break;
    default:
        /* %q of ItemType.String(): "<Item 57400>" (AT has no string) */
        kind = NULL;
        break;
    }

    pg_item_string(p, it, str, sizeof(str));

    if (kind != NULL) {
        snprintf(buf, size, "%s %s", kind, str);

    } else {
        snprintf(buf, size, "\"<Item %d>\" %s", it->typ, str);
    }
}


/* unexpected(): a syntax error at the last item the lexer produced */
static void
pg_unexpected(pg_parser_t *p, const char *context, const char *expected)
{
    char  desc[128];

    if (p->lval.item.typ == PG_I_ERROR) {
        return;
    }

    pg_item_desc(p, &p->lval.item, desc, sizeof(desc));

    pg_errorf(p, p->lval.item.pos, "unexpected %s%s%s%s%s", desc,
              context[0] ? " in " : "", context,
              expected[0] ? ", expected " : "", expected);
}


/* Lex(): comments skipped, EOF followed by the end, ERROR ends it all */
static int
pg_lex(pg_parser_t *p)
{
    int64_t   *closing;
    pg_item_t *it;

    if (p->injecting) {
        p->injecting = 0;
        return p->inject;
    }

    it = &p->lval.item;

    do {
        pg_lex_next_item(&p->lex, it);
    } while (it->typ == PG_I_COMMENT);

    switch (it->typ) {

    case PG_I_ERROR:
        /* reported at the lexer's start, the message as the item's value */
        pg_errorf(p, (int64_t) p->lex.start, "%.*s", (int) it->len,
                  (const char *) it->val);
        return 0;

    case PG_I_EOF:
        p->inject = 0;
        p->injecting = 1;
        break;

    case PG_I_RIGHT_PAREN:
        closing = pg_grow(p, p->closing, p->nclosing, &p->closing_cap, 16,
                          sizeof(int64_t));
        if (closing == NULL) {
            return 0;
        }
        p->closing = closing;
        p->closing[p->nclosing++] = it->pos + (int64_t) it->len;
        /* fall through */

    case PG_I_RIGHT_BRACE:
    case PG_I_RIGHT_BRACKET:
    case PG_I_DURATION:
    case PG_I_NUMBER:
        p->last_closing = it->pos + (int64_t) it->len;
        break;

    default:
        break;
    }

    return it->typ;
}


/* yylex1(): the item type as goyacc's token number */
static int
pg_yylex1(pg_parser_t *p, int *token)
{
    int  ch, tok;

    ch = pg_lex(p);

    if (ch <= 0) {
        tok = pg_yy_tok1[0];

    } else if (ch < (int) sizeof(pg_yy_tok1)) {
        tok = pg_yy_tok1[ch];

    } else if (ch >= PG_YY_PRIVATE
               && ch < PG_YY_PRIVATE + (int) sizeof(pg_yy_tok2))
    {
        tok = pg_yy_tok2[ch - PG_YY_PRIVATE];

    } else {
        tok = 0;
    }

    if (tok == 0) {
        tok = pg_yy_tok2[1];
    }

    *token = tok;

    return ch;
}


/* goyacc's Parse(), error recovery and all */
static int
pg_yyparse(pg_parser_t *p)
{
    int          n, state, ch, tok, errflag, xi, g, j, rule, k;
    size_t       cap, top, pt;
    pg_yysym_t  *s, val;

    cap = 16;
    s = pg_palloc(p, cap * sizeof(pg_yysym_t));
    if (s == NULL) {
        return 1;
    }

    memset(&val, 0, sizeof(pg_yysym_t));

    errflag = 0;
    state = 0;
    ch = -1;
    tok = -1;
    top = (size_t) -1;

yystack:

    /* put a state and value onto the stack */
    top++;

    if (top >= PG_YY_MAX_STACK) {
        pg_too_deep(p);
        return 1;
    }

    s = pg_grow(p, s, top, &cap, 0, sizeof(pg_yysym_t));
    if (s == NULL) {
        return 1;
    }

    s[top] = val;
    s[top].yys = state;

yynewstate:

    n = pg_yy_pact[state];
    if (n <= PG_YY_FLAG) {
        goto yydefault;
    }

    if (ch < 0) {
        ch = pg_yylex1(p, &tok);
        if (p->nomem) {
            return 1;
        }
    }

    n += tok;
    if (n < 0 || n >= PG_YY_LAST) {
        goto yydefault;
    }

    n = pg_yy_act[n];

    if (pg_yy_chk[n] == tok) {
        /* valid shift */
        ch = -1;
        tok = -1;
        val = p->lval;
        state = n;
        if (errflag > 0) {
            errflag--;
        }
        goto yystack;
    }

yydefault:

    n = pg_yy_def[state];

    if (n == -2) {
        if (ch < 0) {
            ch = pg_yylex1(p, &tok);
            if (p->nomem) {
                return 1;
            }
        }

        /* look through the exception table */
        for (xi = 0; !(pg_yy_exca[xi] == -1 && pg_yy_exca[xi + 1] == state);
             xi += 2)
        {
            /* void */
        }

        for (xi += 2; ; xi += 2) {
            n = pg_yy_exca[xi];
            if (n < 0 || n == tok) {
                break;
            }
        }

        n = pg_yy_exca[xi + 1];
        if (n < 0) {
            return 0;
        }
    }

    if (n == 0) {
        /* error: attempt to resume parsing (Error() reports nothing) */
        switch (errflag) {

        case 0:
        case 1:
        case 2:
            errflag = 3;

            /* find a state where "error" is a legal shift action */
            for ( ;; ) {
                n = pg_yy_pact[s[top].yys] + PG_YY_ERR_CODE;

                if (n >= 0 && n < PG_YY_LAST) {
                    state = pg_yy_act[n];
                    if (pg_yy_chk[state] == PG_YY_ERR_CODE) {
                        goto yystack;
                    }
                }

                if (top == 0) {
                    return 1;
                }

                top--;
            }

        default:
            /* no shift yet; clobber the input char */
            if (tok == PG_YY_EOF_CODE) {
                return 1;
            }

            ch = -1;
            tok = -1;
            goto yynewstate;
        }
    }

    /* reduction by production n */
    rule = n;
    pt = top;
    k = pg_yy_r2[rule];

    top -= k;

    s = pg_grow(p, s, top + 1, &cap, 0, sizeof(pg_yysym_t));
    if (s == NULL) {
        return 1;
    }

    val = s[top + 1];

    /* consult the goto table to find the next state */
    n = pg_yy_r1[rule];
    g = pg_yy_pgo[n];
    j = g + s[top].yys + 1;

    if (j >= PG_YY_LAST) {
        state = pg_yy_act[g];

    } else {
        state = pg_yy_act[j];
        if (pg_yy_chk[state] != -n) {
            state = pg_yy_act[g];
        }
    }

    /* $1 .. $k are s[pt - k + 1] .. s[pt] */
    pg_reduce(p, rule, &s[pt - k], &val);

    if (pg_aborted(p)) {
        return 1;
    }

    goto yystack;
}


/* nodes */

static pg_node_t *
pg_node(pg_parser_t *p, pg_node_kind_e kind)
{
    pg_node_t  *n;

    n = pg_palloc(p, sizeof(pg_node_t));
    if (n == NULL) {
        return NULL;
    }

    n->kind = kind;
    n->height = 1;

    return n;
}


/* the tree's height, bounded by PG_PROMQL_MAX_DEPTH */
static void
pg_child(pg_parser_t *p, pg_node_t *n, const pg_node_t *child)
{
    if (n == NULL || child == NULL) {
        return;
    }

    if (child->height + 1 > n->height) {
        n->height = child->height + 1;
    }

    if (n->height > PG_PROMQL_MAX_DEPTH) {
        pg_too_deep(p);
    }
}


/* x.(Expr): nil and Expressions are not expressions */
static pg_node_t *
pg_as_expr(pg_parser_t *p, pg_node_t *n)
{
    if (n == NULL || n->kind == PG_N_EXPRESSIONS) {
        pg_panic(p);
        return NULL;
    }

    return n;
}


/* x.(*Kind) */
static pg_node_t *
pg_as(pg_parser_t *p, pg_node_t *n, pg_node_kind_e kind)
{
    if (n == NULL || n->kind != kind) {
        pg_panic(p);
        return NULL;
    }

    return n;
}


static int
pg_is(const pg_node_t *n, pg_node_kind_e kind)
{
    return n != NULL && n->kind == kind;
}


/* Node.PositionRange().Start */
static int64_t
pg_start(pg_parser_t *p, const pg_node_t *n)
{
    if (n == NULL) {
        pg_panic(p);
        return 0;
    }

    /* down a left-associative chain without recursion */
    while ((n->kind == PG_N_BINARY || n->kind == PG_N_DURATION)
           && n->lhs != NULL)
    {
        n = n->lhs;
    }

    switch (n->kind) {
    case PG_N_BINARY:
        pg_panic(p);
        return 0;
    case PG_N_DURATION:
        return n->start;
    case PG_N_MATRIX:
    case PG_N_SUBQUERY:
        return pg_start(p, n->expr);
    case PG_N_EXPRESSIONS:
        return n->n == 0 ? -1 : pg_start(p, n->list[0]);
    default:
        return n->start;
    }
}


/* Node.PositionRange().End */
static int64_t
pg_end(pg_parser_t *p, const pg_node_t *n)
{
    if (n == NULL) {
        pg_panic(p);
        return 0;
    }

    switch (n->kind) {
    case PG_N_BINARY:
    case PG_N_DURATION:
        return pg_end(p, n->rhs);
    case PG_N_UNARY:
        return pg_end(p, n->expr);
    case PG_N_EXPRESSIONS:
        return n->n == 0 ? -1 : pg_end(p, n->list[n->n - 1]);
    default:
        return n->end;
    }
}


static pg_node_t *
pg_number_node(pg_parser_t *p, double v, int64_t start, int64_t end)
{
    pg_node_t  *n;

    n = pg_node(p, PG_N_NUMBER);
    if (n != NULL) {
        n->val = v;
        n->start = start;
        n->end = end;
    }

    return n;
}


static pg_node_t *
pg_expressions_append(pg_parser_t *p, pg_node_t *list, pg_node_t *e)
{
    pg_node_t  **grown;

    if (list == NULL) {
        return NULL;
    }

    grown = pg_grow(p, list->list, list->n, &list->cap, 4,
                    sizeof(pg_node_t *));
    if (grown == NULL) {
        return NULL;
    }

    list->list = grown;

    list->list[list->n++] = e;
    pg_child(p, list, e);

    return list;
}


/* Go's append() on a []*labels.Matcher */
static pg_mlist_t
pg_mlist_append(pg_parser_t *p, pg_mlist_t s, pg_matcher_t *m)
{
    pg_matcher_t  **grown;

    grown = pg_grow(p, s.v, s.len, &s.cap, 4, sizeof(pg_matcher_t *));
    if (grown == NULL) {
        return s;
    }

    s.v = grown;

    s.v[s.len++] = m;
    s.nonnil = 1;

    return s;
}


static pg_slist_t
pg_slist_append(pg_parser_t *p, pg_slist_t s, pg_str_t str)
{
    pg_str_t  *grown;

    grown = pg_grow(p, s.v, s.len, &s.cap, 4, sizeof(pg_str_t));
    if (grown == NULL) {
        return s;
    }

    s.v = grown;

    s.v[s.len++] = str;
    s.nonnil = 1;

    return s;
}


static pg_str_t
pg_item_val(const pg_item_t *it)
{
    pg_str_t  s;

    s.data = it->val;
    s.len = it->len;

    return s;
}


/* time.Duration(math.Round(v * float64(time.Second))) */
static int64_t
pg_seconds_to_ns(double v)
{
    return pg_go_f2i(round(v * 1e9));
}


/* strutil.Unquote() of a string the lexer has already validated */
static pg_str_t
pg_unquote(pg_parser_t *p, pg_str_t q)
{
    int             n;
    size_t          i, len;
    uint8_t        *buf, *o, quote, esc;
    uint32_t        v;
    const uint8_t  *s;
    pg_str_t        out;

    out.data = (const uint8_t *) "";
    out.len = 0;

    if (q.len < 2) {
        return out;
    }

    s = q.data + 1;
    len = q.len - 2;
    quote = q.data[0];

    if (quote == '`' || memchr(s, '\\', len) == NULL) {
        out.data = s;
        out.len = len;
        return out;
    }

    buf = pg_palloc(p, len);
    if (buf == NULL) {
        return out;
    }

    o = buf;

    for (i = 0; i < len; /* void */) {
        if (s[i] != '\\') {
            *o++ = s[i++];
            continue;
        }

        i++;

        switch (s[i]) {
        case 'a':
            *o++ = '\a';
            i++;
            continue;
        case 'b':
            *o++ = '\b';
            i++;
            continue;
        case 'f':
            *o++ = '\f';
            i++;
            continue;
        case 'n':
            *o++ = '\n';
            i++;
            continue;
        case 'r':
            *o++ = '\r';
            i++;
            continue;
        case 't':
            *o++ = '\t';
            i++;
            continue;
        case 'v':
            *o++ = '\v';
            i++;
            continue;
        case 'x':
        case 'u':
        case 'U':
            break;
        case '0': case '1': case '2': case '3': case '4': case '5':
        case '6': case '7':
            /* three octal digits, one byte */
            *o++ = (uint8_t) (((s[i] - '0') << 6) | ((s[i + 1] - '0') << 3)
                              | (s[i + 2] - '0'));
            i += 3;
            continue;
        default:
            /* \\ \' \" */
            *o++ = s[i++];
            continue;
        }

        esc = s[i++];
        n = esc == 'x' ? 2 : esc == 'u' ? 4 : 8;

        for (v = 0; n > 0; n--, i++) {
            v = v * 16 + (s[i] <= '9' ? (uint32_t) (s[i] - '0')
                                      : (uint32_t) ((s[i] | 0x20) - 'a' + 10));
        }

        /* \x is a byte, possibly not UTF-8; \u and \U are code points */
        if (esc == 'x') {
            *o++ = (uint8_t) v;

        } else {
            o += pg_utf8_encode_rune(o, v);
        }
    }

    out.data = buf;
    out.len = o - buf;

    return out;
}


/* strconv.ParseInt(s, 0, 64): 0 when it fails */
static int
pg_parse_int0(const uint8_t *s0, size_t len, int64_t *out)
{
    int             base, underscores;
    size_t          i;
    uint64_t        v, d;
    const uint8_t  *s;

    if (len == 0) {
        return 0;
    }

    s = s0;
    base = 10;
    i = 0;

    if (s[0] == '0') {
        if (len >= 3 && (s[1] | 0x20) == 'b') {
            base = 2;
            i = 2;
        } else if (len >= 3 && (s[1] | 0x20) == 'o') {
            base = 8;
            i = 2;
        } else if (len >= 3 && (s[1] | 0x20) == 'x') {
            base = 16;
            i = 2;
        } else {
            base = 8;
            i = 1;
        }
    }

    v = 0;
    underscores = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] == '_') {
            underscores = 1;
            continue;
        }

        d = s[i] >= '0' && s[i] <= '9' ? (uint64_t) (s[i] - '0')
            : (s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z'
              ? (uint64_t) ((s[i] | 0x20) - 'a' + 10) : 99;

        if (d >= (uint64_t) base) {
            return 0;
        }

        if (v > (UINT64_MAX - d) / (uint64_t) base) {
            return 0;
        }

        v = v * base + d;
    }

    if (underscores && !pg_go_underscore_ok(s0, len)) {
        return 0;
    }

    if (v > (uint64_t) INT64_MAX) {
        return 0;
    }

    *out = (int64_t) v;

    return 1;
}


/*
 * number(): strconv.ParseInt(s, 0, 64), then strconv.ParseFloat(s, 64),
 * on what the lexer took for a number; an error is reported at the
 * parser's lookahead item, as Prometheus reports it.
 */
static double
pg_number(pg_parser_t *p, pg_str_t s)
{
    char         *buf;
    double        f;
    int64_t       iv;
    const char   *why;

    if (pg_parse_int0(s.data, s.len, &iv)) {
        return (double) iv;
    }

    buf = pg_palloc(p, s.len + 1);
    if (buf == NULL) {
        return 0;
    }

    switch (pg_go_parse_float(s.data, s.len, buf, &f)) {

    case PG_GO_FLOAT_OK:
        return f;

    case PG_GO_FLOAT_RANGE:
        why = "value out of range";
        break;

    default:
        why = "invalid syntax";
        f = 0;
    }

    pg_errorf(p, p->lval.item.pos, "error parsing number: strconv.ParseFloat: "
              "parsing %s: %s", pg_q(p, s.data, s.len), why);

    return f;
}


/*
 * parseDuration(): prometheus/common v0.65 model.ParseDuration, in ns; the
 * error is returned as text, NULL when there is none.
 */
static const char *
pg_parse_duration(pg_parser_t *p, pg_str_t d, int64_t *ns)
{
    int             pos, last;
    size_t          i, j, u;
    uint64_t        v, mult, dur;
    const uint8_t  *s;
    char           *msg;
    const char     *unit, *whole;
    size_t          n;

    static const struct {
        const char  *unit;
        int          pos;
        uint64_t     mult;
    } units[] = {
        { "ms", 7, 1000000ULL },
        { "s", 6, 1000000000ULL },
        { "m", 5, 60000000000ULL },
        { "h", 4, 3600000000000ULL },
        { "d", 3, 86400000000000ULL },
        { "w", 2, 604800000000000ULL },
        { "y", 1, 31536000000000000ULL },
        { NULL, 0, 0 }
    };

    *ns = 0;
    s = d.data;
    dur = 0;
    last = 0;

    if (d.len == 1 && s[0] == '0') {
        return NULL;
    }

    if (d.len == 0) {
        return "empty duration string";
    }

    for (i = 0; i < d.len; /* void */) {

        if (!(s[i] >= '0' && s[i] <= '9')) {
            goto invalid;
        }

        v = 0;
        for (j = i; j < d.len && s[j] >= '0' && s[j] <= '9'; j++) {
            if (v > (UINT64_MAX - (s[j] - '0')) / 10) {
                goto invalid;       /* ParseUint: out of range */
            }
            v = v * 10 + (s[j] - '0');
        }

        for (i = j; i < d.len && !(s[i] >= '0' && s[i] <= '9'); i++) {
            /* void */
        }

        if (i == j) {
            goto invalid;
        }

        for (u = 0; units[u].unit != NULL; u++) {
            if (strlen(units[u].unit) == i - j
                && memcmp(units[u].unit, s + j, i - j) == 0)
            {
                break;
            }
        }

        if (units[u].unit == NULL) {
            unit = pg_q(p, s + j, i - j);
            whole = pg_q(p, s, d.len);
            n = strlen(unit) + strlen(whole) + 32;
            msg = pg_palloc(p, n);
            if (msg == NULL) {
                return "";
            }
            snprintf(msg, n, "unknown unit %s in duration %s", unit, whole);
            return msg;
        }

        pos = units[u].pos;
        mult = units[u].mult;

        if (pos <= last) {
            goto invalid;
        }

        last = pos;

        if (v > (1ULL << 63) / mult) {
            return "duration out of range";
        }

        dur += v * mult;

        if (dur > (uint64_t) INT64_MAX) {
            return "duration out of range";
        }
    }

    *ns = (int64_t) dur;

    return NULL;

invalid:

    n = pg_go_quote(NULL, 0, s, d.len, '"') + 32;
    msg = pg_palloc(p, n);
    if (msg == NULL) {
        return "";
    }

    snprintf(msg, n, "not a valid duration string: %s", pg_q(p, s, d.len));

    return msg;
}


/* time.Duration.Seconds() */
static double
pg_ns_seconds(int64_t ns)
{
    return (double) (ns / 1000000000) + (double) (ns % 1000000000) / 1e9;
}


static double
pg_duration_seconds(pg_parser_t *p, const pg_item_t *it)
{
    int64_t      ns;
    const char  *e;

    e = pg_parse_duration(p, pg_item_val(it), &ns);
    if (e != NULL) {
        pg_errorf(p, it->pos, "%s", e);
        ns = 0;
    }

    return pg_ns_seconds(ns);
}


static const pg_func_t *
pg_get_function(pg_str_t name)
{
    size_t  i;

    /* case-sensitive, as Go's map lookup */
    for (i = 0; pg_functions[i].name != NULL; i++) {
        if (strlen(pg_functions[i].name) == name.len
            && memcmp(pg_functions[i].name, name.data, name.len) == 0)
        {
            return &pg_functions[i];
        }
    }

    return NULL;
}


/* ItemType.String() of aggregators and operators (the key map's words) */
static const char *
pg_type_word(int typ)
{
    size_t  i;

    for (i = 0; pg_keywords[i].word != NULL; i++) {
        if (pg_keywords[i].typ == typ) {
            return pg_keywords[i].word;
        }
    }

    return "";
}


static pg_node_t *
pg_new_aggregate_expr(pg_parser_t *p, const pg_item_t *op,
    pg_node_t *modifier, pg_node_t *args)
{
    size_t      desired, i;
    pg_node_t  *ret, *arguments;

    ret = pg_as(p, modifier, PG_N_AGGREGATE);
    if (ret == NULL) {
        return NULL;
    }

    arguments = pg_as(p, args, PG_N_EXPRESSIONS);
    if (arguments == NULL) {
        return NULL;
    }

    if (p->nclosing == p->closing_head) {
        /* the error is already captured by the parser */
        return ret;
    }

    ret->start = op->pos;
    ret->end = p->closing[p->closing_head++];
    ret->op = op->typ;

    for (i = 0; i < arguments->n; i++) {
        pg_child(p, ret, arguments->list[i]);
    }

    if (arguments->n == 0) {
        pg_errorf(p, ret->start,
                  "no arguments for aggregate expression provided");
        return ret;
    }

    desired = 1;

    if (op->typ == PG_I_TOPK || op->typ == PG_I_BOTTOMK
        || op->typ == PG_I_COUNT_VALUES || op->typ == PG_I_QUANTILE
        || op->typ == PG_I_LIMITK || op->typ == PG_I_LIMIT_RATIO)
    {
        if (op->typ == PG_I_LIMITK || op->typ == PG_I_LIMIT_RATIO) {
            pg_errorf(p, ret->start, "%s() is experimental and must be "
                      "enabled with --enable-feature=promql-experimental-"
                      "functions", pg_type_word(op->typ));
            return ret;
        }

        desired = 2;
        ret->param = arguments->list[0];
    }

    if (arguments->n != desired) {
        pg_errorf(p, ret->start, "wrong number of arguments for aggregate "
                  "expression provided, expected %zu, got %zu", desired,
                  arguments->n);
        return ret;
    }

    ret->expr = arguments->list[desired - 1];

    return ret;
}


static pg_node_t *
pg_new_binary_expression(pg_parser_t *p, pg_node_t *lhs, const pg_item_t *op,
    pg_node_t *modifiers, pg_node_t *rhs)
{
    pg_node_t  *ret;

    ret = pg_as(p, modifiers, PG_N_BINARY);
    if (ret == NULL) {
        return NULL;
    }

    ret->lhs = pg_as_expr(p, lhs);
    if (ret->lhs == NULL) {
        return NULL;
    }

    ret->rhs = pg_as_expr(p, rhs);
    if (ret->rhs == NULL) {
        return NULL;
    }

    ret->op = op->typ;

    /* checks and walks go down the left side of a chain by iteration */
    ret->height = ret->lhs->height;
    pg_child(p, ret, ret->rhs);

    return ret;
}


static void
pg_assemble_vector_selector(pg_parser_t *p, pg_node_t *vs)
{
    int            rc;
    pg_str_t       name;
    pg_matcher_t  *m;

    if (vs->str.len == 0) {
        return;
    }

    m = pg_palloc(p, sizeof(pg_matcher_t));
    if (m == NULL) {
        return;
    }

    name.data = (const uint8_t *) "__name__";
    name.len = 8;

    rc = pg_matcher_init(m, PG_MATCH_EQ, name, vs->str, p->alloc, NULL, 0);
    if (rc != PG_MATCHER_OK) {
        p->nomem = 1;
        return;
    }

    vs->matchers = pg_mlist_append(p, vs->matchers, m);
}


static pg_matcher_t *
pg_matcher_new(pg_parser_t *p, pg_match_op_e op, pg_str_t name,
    pg_str_t value, int64_t pos)
{
    int            rc;
    char           msg[sizeof(p->err->message)];
    pg_matcher_t  *m;

    m = pg_palloc(p, sizeof(pg_matcher_t));
    if (m == NULL) {
        return NULL;
    }

    rc = pg_matcher_init(m, op, name, value, p->alloc, msg, sizeof(msg));

    if (rc == PG_MATCHER_NOMEM) {
        p->nomem = 1;
        return NULL;
    }

    if (rc != PG_MATCHER_OK) {
        pg_errorf(p, pos, "%s", msg);
        return NULL;
    }

    return m;
}


static pg_matcher_t *
pg_new_label_matcher(pg_parser_t *p, const pg_item_t *label,
    const pg_item_t *op, const pg_item_t *value)
{
    pg_match_op_e  mt;
    pg_str_t       val;

    val = pg_unquote(p, pg_item_val(value));

    switch (op->typ) {
    case PG_I_EQL:
        mt = PG_MATCH_EQ;
        break;
    case PG_I_NEQ:
        mt = PG_MATCH_NEQ;
        break;
    case PG_I_EQL_REGEX:
        mt = PG_MATCH_RE;
        break;
    case PG_I_NEQ_REGEX:
        mt = PG_MATCH_NRE;
        break;
    default:
        pg_panic(p);
        return NULL;
    }

    return pg_matcher_new(p, mt, pg_item_val(label), val, label->pos);
}


static pg_matcher_t *
pg_new_metric_name_matcher(pg_parser_t *p, const pg_item_t *value)
{
    pg_str_t  name;

    name.data = (const uint8_t *) "__name__";
    name.len = 8;

    return pg_matcher_new(p, PG_MATCH_EQ, name, pg_item_val(value),
                          value->pos);
}


/* addOffset() and addOffsetExpr() */
static void
pg_add_offset(pg_parser_t *p, pg_node_t *e, int64_t offset,
    pg_node_t *offset_expr)
{
    pg_node_t  *target, *vs;

    if (e == NULL) {
        pg_panic(p);
        return;
    }

    switch (e->kind) {

    case PG_N_VECTOR:
        target = e;
        break;

    case PG_N_MATRIX:
        vs = e->expr;
        if (!pg_is(vs, PG_N_VECTOR)) {
            pg_errorf(p, pg_start(p, e), "ranges only allowed for vector "
                      "selectors");
            return;
        }
        target = vs;
        break;

    case PG_N_SUBQUERY:
        target = e;
        break;

    default:
        pg_errorf(p, pg_start(p, e), "offset modifier must be preceded by an "
                  "instant vector selector or range vector selector or a "
                  "subquery");
        return;
    }

    if (target->offset != 0 || target->offset_expr != NULL) {
        pg_errorf(p, pg_start(p, e), "offset may not be set multiple times");

    } else if (offset_expr != NULL) {
        target->offset_expr = offset_expr;

    } else {
        target->offset = offset;
    }

    e->end = p->last_closing;
}


/* getAtModifierVars(): the node that carries the @, or NULL */
static pg_node_t *
pg_at_target(pg_parser_t *p, pg_node_t *e)
{
    pg_node_t  *target;

    if (e == NULL) {
        pg_panic(p);
        return NULL;
    }

    switch (e->kind) {

    case PG_N_VECTOR:
    case PG_N_SUBQUERY:
        target = e;
        break;

    case PG_N_MATRIX:
        target = e->expr;
        if (!pg_is(target, PG_N_VECTOR)) {
            pg_errorf(p, pg_start(p, e), "ranges only allowed for vector "
                      "selectors");
            return NULL;
        }
        break;

    default:
        pg_errorf(p, pg_start(p, e), "@ modifier must be preceded by an "
                  "instant vector selector or range vector selector or a "
                  "subquery");
        return NULL;
    }

    if (target->has_timestamp || target->start_or_end == PG_I_START
        || target->start_or_end == PG_I_END)
    {
        pg_errorf(p, pg_start(p, e), "@ <timestamp> may not be set multiple "
                  "times");
        return NULL;
    }

    return target;
}


static void
pg_set_timestamp(pg_parser_t *p, pg_node_t *e, double ts)
{
    pg_node_t  *target;

    if (isinf(ts) || isnan(ts) || ts >= 9223372036854775807.0
        || ts <= -9223372036854775808.0)
    {
        /* Go's %f: NaN, +Inf, -Inf */
        if (isnan(ts)) {
            pg_errorf(p, pg_start(p, e), "timestamp out of bounds for @ "
                      "modifier: NaN");

        } else if (isinf(ts)) {
            pg_errorf(p, pg_start(p, e), "timestamp out of bounds for @ "
                      "modifier: %sInf", ts > 0 ? "+" : "-");

        } else {
            pg_errorf(p, pg_start(p, e), "timestamp out of bounds for @ "
                      "modifier: %f", ts);
        }
    }

    target = pg_at_target(p, e);
    if (target == NULL) {
        return;
    }

    target->has_timestamp = 1;
    e->end = p->last_closing;
}


static void
pg_set_at_preprocessor(pg_parser_t *p, pg_node_t *e, int op)
{
    pg_node_t  *target;

    target = pg_at_target(p, e);
    if (target == NULL) {
        return;
    }

    target->start_or_end = op;
    e->end = p->last_closing;
}


static void
pg_experimental_duration_expr(pg_parser_t *p, pg_node_t *e)
{
    pg_errorf(p, pg_start(p, e), "experimental duration expression is not "
              "enabled");
}


/* the checks of duration_expr and offset_duration_expr on a literal */
static int
pg_duration_in_range(double v)
{
    return !(v > PG_DURATION_LIMIT || v < -PG_DURATION_LIMIT);
}


/*
 * The actions of generated_parser.y, by the rule numbers of the Go file
 * (see t/gen_promql_yacc.py).  d[1..] are $1.., v is $$, which holds $1
 * (or a stale stack slot for an empty rule) when an action starts, as in
 * goyacc.  Rules of the other start symbols (metrics, series
 * descriptions) are never reduced for an expression.
 */
/* a number duration after a unary + or -: signed, checked, starting at op */
static pg_node_t *
pg_signed_duration(pg_parser_t *p, const pg_item_t *op, pg_node_t *n)
{
    if (op->typ == PG_I_SUB) {
        n->val = -n->val;
    }

    if (!pg_duration_in_range(n->val)) {
        pg_errorf(p, op->pos, "duration out of range");
        return pg_number_node(p, 0, 0, 0);
    }

    n->start = op->pos;

    return n;
}


static void
pg_reduce(pg_parser_t *p, int rule, pg_yysym_t *d, pg_yysym_t *v)
{
    const char       *e;
    pg_node_t        *n, *vs;
    pg_str_t          s;
    const pg_func_t  *fn;
    double            f;

    switch (rule) {

    case 3:     /* start: START_EXPRESSION EOF */
        pg_errorf(p, 0, "no expression found in input");
        break;

    case 4:     /* start: START_EXPRESSION expr */
        p->result = d[2].node;
        break;

    case 7:     /* start: error */
        pg_unexpected(p, "", "");
        break;

    case 21:    /* aggregate_op aggregate_modifier function_call_body */
        if (p->nclosing - p->closing_head > 1) {
            p->closing_head++;
        }
        v->node = pg_new_aggregate_expr(p, &d[1].item, d[2].node, d[3].node);
        break;

    case 22:    /* aggregate_op function_call_body aggregate_modifier */
        if (p->nclosing - p->closing_head > 1) {
            p->closing_head++;
        }
        v->node = pg_new_aggregate_expr(p, &d[1].item, d[3].node, d[2].node);
        break;

    case 23:    /* aggregate_op function_call_body */
        v->node = pg_new_aggregate_expr(p, &d[1].item,
                                        pg_node(p, PG_N_AGGREGATE), d[2].node);
        break;

    case 24:    /* aggregate_op error */
        pg_unexpected(p, "aggregation", "");
        v->node = pg_new_aggregate_expr(p, &d[1].item,
                                        pg_node(p, PG_N_AGGREGATE),
                                        pg_node(p, PG_N_EXPRESSIONS));
        break;

    case 25:    /* aggregate_modifier: BY grouping_labels */
    case 26:    /* aggregate_modifier: WITHOUT grouping_labels */
        v->node = pg_node(p, PG_N_AGGREGATE);
        if (v->node != NULL) {
            v->node->grouping = d[2].strings;
            v->node->without = rule == 26;
        }
        break;

    case 27: case 28: case 29: case 30: case 31: case 32: case 33: case 34:
    case 35: case 36: case 37: case 38: case 39: case 40: case 41: case 42:
        /* binary_expr: expr OP bin_modifier expr */
        v->node = pg_new_binary_expression(p, d[1].node, &d[2].item,
                                           d[3].node, d[4].node);
        break;

    case 44:    /* bool_modifier: empty */
    case 45:    /* bool_modifier: BOOL */
        v->node = pg_node(p, PG_N_BINARY);
        if (v->node != NULL) {
            v->node->matching = 1;
            v->node->card = PG_CARD_ONE_TO_ONE;
            v->node->return_bool = rule == 45;
        }
        break;

    case 46:    /* on_or_ignoring: bool_modifier IGNORING grouping_labels */
    case 47:    /* on_or_ignoring: bool_modifier ON grouping_labels */
        v->node = d[1].node;
        n = pg_as(p, v->node, PG_N_BINARY);
        if (n != NULL) {
            n->matching_labels = d[3].strings;
            if (rule == 47) {
                n->on = 1;
            }
        }
        break;

    case 50:    /* group_modifiers: on_or_ignoring GROUP_LEFT ... */
    case 51:    /* group_modifiers: on_or_ignoring GROUP_RIGHT ... */
        v->node = d[1].node;
        n = pg_as(p, v->node, PG_N_BINARY);
        if (n != NULL) {
            n->card = rule == 50 ? PG_CARD_MANY_TO_ONE : PG_CARD_ONE_TO_MANY;
            n->include = d[3].strings;
        }
        break;

    case 52:    /* grouping_labels: "(" grouping_label_list ")" */
    case 53:    /* grouping_labels: "(" grouping_label_list "," ")" */
        v->strings = d[2].strings;
        break;

    case 54:    /* grouping_labels: "(" ")" */
        memset(&v->strings, 0, sizeof(pg_slist_t));
        v->strings.nonnil = 1;
        break;

    case 55:    /* grouping_labels: error */
        pg_unexpected(p, "grouping opts", "\"(\"");
        memset(&v->strings, 0, sizeof(pg_slist_t));
        break;

    case 56:    /* grouping_label_list: grouping_label_list "," label */
        v->strings = pg_slist_append(p, d[1].strings, pg_item_val(&d[3].item));
        break;

    case 57:    /* grouping_label_list: grouping_label */
        memset(&v->strings, 0, sizeof(pg_slist_t));
        v->strings = pg_slist_append(p, v->strings, pg_item_val(&d[1].item));
        break;

    case 58:    /* grouping_label_list: grouping_label_list error */
        pg_unexpected(p, "grouping opts", "\",\" or \")\"");
        v->strings = d[1].strings;
        break;

    case 59:    /* grouping_label: maybe_label */
        if (d[1].item.len == 0
            || !pg_utf8_valid(d[1].item.val, d[1].item.len))
        {
            pg_errorf(p, d[1].item.pos, "invalid label name for grouping: %s",
                      pg_q(p, d[1].item.val, d[1].item.len));
        }
        v->item = d[1].item;
        break;

    case 60:    /* grouping_label: STRING */
        s = pg_unquote(p, pg_item_val(&d[1].item));
        if (s.len == 0 || !pg_utf8_valid(s.data, s.len)) {
            pg_errorf(p, d[1].item.pos, "invalid label name for grouping: %s",
                      pg_q(p, s.data, s.len));
        }
        v->item = d[1].item;
        v->item.pos++;
        v->item.val = s.data;
        v->item.len = s.len;
        break;

    case 61:    /* grouping_label: error */
        pg_unexpected(p, "grouping opts", "label");
        memset(&v->item, 0, sizeof(pg_item_t));
        break;

    case 62:    /* function_call: IDENTIFIER function_call_body */
        fn = pg_get_function(pg_item_val(&d[1].item));

        if (fn == NULL) {
            pg_errorf(p, d[1].item.pos, "unknown function with name %s",
                      pg_q(p, d[1].item.val, d[1].item.len));
        }

        if (fn != NULL && fn->experimental) {
            pg_errorf(p, d[1].item.pos, "function %s is not enabled",
                      pg_q(p, d[1].item.val, d[1].item.len));
        }

        n = pg_as(p, d[2].node, PG_N_EXPRESSIONS);
        if (n == NULL) {
            break;
        }

        if (p->nclosing == p->closing_head) {
            pg_panic(p);            /* closingParens[0] */
            break;
        }

        v->node = pg_node(p, PG_N_CALL);
        if (v->node == NULL) {
            break;
        }

        v->node->func = fn;
        v->node->args = n;
        v->node->start = d[1].item.pos;
        v->node->end = p->closing[p->closing_head++];
        pg_child(p, v->node, n);
        break;

    case 63:    /* function_call_body: "(" function_call_args ")" */
        v->node = d[2].node;
        break;

    case 64:    /* function_call_body: "(" ")" */
        v->node = pg_node(p, PG_N_EXPRESSIONS);
        break;

    case 65:    /* function_call_args: function_call_args "," expr */
        n = pg_as(p, d[1].node, PG_N_EXPRESSIONS);
        if (n == NULL || pg_as_expr(p, d[3].node) == NULL) {
            break;
        }
        v->node = pg_expressions_append(p, n, d[3].node);
        break;

    case 66:    /* function_call_args: expr */
        if (pg_as_expr(p, d[1].node) == NULL) {
            break;
        }
        v->node = pg_expressions_append(p, pg_node(p, PG_N_EXPRESSIONS),
                                        d[1].node);
        break;

    case 67:    /* function_call_args: function_call_args "," */
        pg_errorf(p, d[2].item.pos, "trailing commas not allowed in function "
                  "call args");
        v->node = d[1].node;
        break;

    case 68:    /* paren_expr: "(" expr ")" */
        if (pg_as_expr(p, d[2].node) == NULL) {
            break;
        }

        v->node = pg_node(p, PG_N_PAREN);
        if (v->node == NULL) {
            break;
        }

        v->node->expr = d[2].node;
        v->node->start = d[1].item.pos;
        v->node->end = d[3].item.pos + (int64_t) d[3].item.len;
        pg_child(p, v->node, d[2].node);

        if (p->nclosing == p->closing_head) {
            pg_panic(p);            /* closingParens[1:] */
            break;
        }
        p->closing_head++;
        break;

    case 69:    /* positive_duration_expr: duration_expr */
        n = d[1].node;
        v->node = n;
        if (pg_is(n, PG_N_NUMBER) && n->val <= 0) {
            pg_errorf(p, n->start, "duration must be greater than 0");
            v->node = pg_number_node(p, 0, 0, 0);
        }
        break;

    case 70:    /* offset_expr: expr OFFSET offset_duration_expr */
        if (pg_is(d[3].node, PG_N_NUMBER)) {
            pg_add_offset(p, d[1].node, pg_seconds_to_ns(d[3].node->val),
                          NULL);
        } else if (pg_as(p, d[3].node, PG_N_DURATION) != NULL) {
            pg_add_offset(p, d[1].node, 0, d[3].node);
        }
        v->node = d[1].node;
        break;

    case 71:    /* offset_expr: expr OFFSET error */
        pg_unexpected(p, "offset", "number or duration");
        v->node = d[1].node;
        break;

    case 72:    /* step_invariant_expr: expr AT signed_or_unsigned_number */
        pg_set_timestamp(p, d[1].node, d[3].flt);
        v->node = d[1].node;
        break;

    case 73:    /* expr AT at_modifier_preprocessors "(" ")" */
        pg_set_at_preprocessor(p, d[1].node, d[3].item.typ);
        v->node = d[1].node;
        break;

    case 74:    /* step_invariant_expr: expr AT error */
        pg_unexpected(p, "@", "timestamp");
        v->node = d[1].node;
        break;

    case 77:    /* matrix_selector: expr "[" positive_duration_expr "]" */
        vs = d[1].node;
        e = NULL;

        if (!pg_is(vs, PG_N_VECTOR)) {
            e = "ranges only allowed for vector selectors";
        } else if (vs->offset != 0) {
            e = "no offset modifiers allowed before range";
        } else if (vs->has_timestamp) {
            e = "no @ modifiers allowed before range";
        }

        if (e != NULL) {
            pg_errorf(p, d[2].item.pos, "%s", e);
        }

        if (pg_as_expr(p, vs) == NULL) {
            break;
        }

        v->node = pg_node(p, PG_N_MATRIX);
        if (v->node != NULL) {
            v->node->expr = vs;
            v->node->end = p->last_closing;
            pg_child(p, v->node, vs);
        }
        break;

    case 78:    /* subquery_expr: expr "[" d ":" d "]" */
    case 79:    /* subquery_expr: expr "[" d ":" "]" */
        if (pg_as_expr(p, d[1].node) == NULL) {
            break;
        }

        v->node = pg_node(p, PG_N_SUBQUERY);
        if (v->node != NULL) {
            v->node->expr = d[1].node;
            v->node->end = d[rule == 78 ? 6 : 5].item.pos + 1;
            pg_child(p, v->node, d[1].node);
        }
        break;

    case 80:
        pg_unexpected(p, "subquery selector", "\"]\"");
        v->node = d[1].node;
        break;

    case 81:
        pg_unexpected(p, "subquery selector", "number or duration or \"]\"");
        v->node = d[1].node;
        break;

    case 82:
        pg_unexpected(p, "subquery or range", "\":\" or \"]\"");
        v->node = d[1].node;
        break;

    case 83:
        pg_unexpected(p, "subquery selector", "number or duration");
        v->node = d[1].node;
        break;

    case 84:    /* unary_expr: unary_op expr */
        n = d[2].node;

        if (pg_is(n, PG_N_NUMBER)) {
            if (d[1].item.typ == PG_I_SUB) {
                n->val = -n->val;
            }
            n->start = d[1].item.pos;
            v->node = n;
            break;
        }

        if (pg_as_expr(p, n) == NULL) {
            break;
        }

        v->node = pg_node(p, PG_N_UNARY);
        if (v->node != NULL) {
            v->node->op = d[1].item.typ;
            v->node->expr = n;
            v->node->start = d[1].item.pos;
            pg_child(p, v->node, n);
        }
        break;

    case 85:    /* vector_selector: metric_identifier label_matchers */
        vs = pg_as(p, d[2].node, PG_N_VECTOR);
        if (vs == NULL) {
            break;
        }
        vs->start = d[1].item.pos;
        vs->str = pg_item_val(&d[1].item);
        pg_assemble_vector_selector(p, vs);
        v->node = vs;
        break;

    case 86:    /* vector_selector: metric_identifier */
        vs = pg_node(p, PG_N_VECTOR);
        if (vs == NULL) {
            break;
        }
        vs->str = pg_item_val(&d[1].item);
        vs->matchers.nonnil = 1;
        vs->start = d[1].item.pos;
        vs->end = d[1].item.pos + (int64_t) d[1].item.len;
        pg_assemble_vector_selector(p, vs);
        v->node = vs;
        break;

    case 87:    /* vector_selector: label_matchers */
        vs = pg_as(p, d[1].node, PG_N_VECTOR);
        if (vs == NULL) {
            break;
        }
        pg_assemble_vector_selector(p, vs);
        v->node = vs;
        break;

    case 88:    /* label_matchers: "{" label_match_list "}" */
    case 89:    /* label_matchers: "{" label_match_list "," "}" */
    case 90:    /* label_matchers: "{" "}" */
        vs = pg_node(p, PG_N_VECTOR);
        if (vs == NULL) {
            break;
        }

        if (rule == 90) {
            vs->matchers.nonnil = 1;
        } else {
            vs->matchers = d[2].matchers;
        }

        vs->start = d[1].item.pos;
        vs->end = d[rule == 88 ? 3 : rule == 89 ? 4 : 2].item.pos
                  + (int64_t) d[rule == 88 ? 3 : rule == 89 ? 4 : 2].item.len;
        v->node = vs;
        break;

    case 91:    /* label_match_list: label_match_list "," label_matcher */
        if (d[1].matchers.nonnil) {
            v->matchers = pg_mlist_append(p, d[1].matchers, d[3].matcher);
        } else {
            v->matchers = d[1].matchers;
        }
        break;

    case 92:    /* label_match_list: label_matcher */
        memset(&v->matchers, 0, sizeof(pg_mlist_t));
        v->matchers = pg_mlist_append(p, v->matchers, d[1].matcher);
        break;

    case 93:    /* label_match_list: label_match_list error */
        pg_unexpected(p, "label matching", "\",\" or \"}\"");
        v->matchers = d[1].matchers;
        break;

    case 94:    /* label_matcher: IDENTIFIER match_op STRING */
    case 95:    /* label_matcher: string_identifier match_op STRING */
        v->matcher = pg_new_label_matcher(p, &d[1].item, &d[2].item,
                                          &d[3].item);
        break;

    case 96:    /* label_matcher: string_identifier */
        v->matcher = pg_new_metric_name_matcher(p, &d[1].item);
        break;

    case 97:    /* label_matcher: string_identifier match_op error */
    case 98:    /* label_matcher: IDENTIFIER match_op error */
        pg_unexpected(p, "label matching", "string");
        v->matcher = NULL;
        break;

    case 99:    /* label_matcher: IDENTIFIER error */
        pg_unexpected(p, "label matching", "label matching operator");
        v->matcher = NULL;
        break;

    case 100:   /* label_matcher: error */
        pg_unexpected(p, "label matching", "identifier or \"}\"");
        v->matcher = NULL;
        break;

    case 234:   /* number_duration_literal: NUMBER */
        f = pg_number(p, pg_item_val(&d[1].item));
        v->node = pg_number_node(p, f, d[1].item.pos,
                                 d[1].item.pos + (int64_t) d[1].item.len);
        break;

    case 235:   /* number_duration_literal: DURATION */
        f = pg_duration_seconds(p, &d[1].item);
        v->node = pg_number_node(p, f, d[1].item.pos,
                                 d[1].item.pos + (int64_t) d[1].item.len);
        break;

    case 236:   /* number: NUMBER */
        v->flt = pg_number(p, pg_item_val(&d[1].item));
        break;

    case 237:   /* number: DURATION */
        v->flt = pg_duration_seconds(p, &d[1].item);
        break;

    case 238:   /* signed_number: ADD number */
        v->flt = d[2].flt;
        break;

    case 239:   /* signed_number: SUB number */
        v->flt = -d[2].flt;
        break;

    case 245:   /* string_literal: STRING */
        v->node = pg_node(p, PG_N_STRING);
        if (v->node != NULL) {
            v->node->str = pg_unquote(p, pg_item_val(&d[1].item));
            v->node->start = d[1].item.pos;
            v->node->end = d[1].item.pos + (int64_t) d[1].item.len;
        }
        break;

    case 246:   /* string_identifier: STRING */
        s = pg_unquote(p, pg_item_val(&d[1].item));
        v->item.typ = PG_I_METRIC_IDENTIFIER;
        v->item.pos = d[1].item.pos;
        v->item.val = s.data;
        v->item.len = s.len;
        break;

    case 247:   /* maybe_grouping_labels: empty */
        memset(&v->strings, 0, sizeof(pg_slist_t));
        break;

    case 249:   /* offset_duration_expr: number_duration_literal */
    case 252:   /* duration_expr: number_duration_literal */
        n = pg_as(p, d[1].node, PG_N_NUMBER);
        if (n == NULL) {
            break;
        }

        if (!pg_duration_in_range(n->val)) {
            pg_errorf(p, n->start, "duration out of range");
            v->node = pg_number_node(p, 0, 0, 0);
            break;
        }

        v->node = n;
        break;

    case 250:   /* offset_duration_expr: unary_op number_duration_literal */
        n = pg_as(p, d[2].node, PG_N_NUMBER);
        if (n == NULL) {
            break;
        }

        v->node = pg_signed_duration(p, &d[1].item, n);
        break;

    case 253:   /* duration_expr: unary_op duration_expr */
        n = d[2].node;

        if (pg_is(n, PG_N_NUMBER)) {
            v->node = pg_signed_duration(p, &d[1].item, n);
            break;
        }

        if (pg_is(n, PG_N_DURATION)) {
            if (d[1].item.typ == PG_I_SUB) {
                v->node = pg_node(p, PG_N_DURATION);
                if (v->node != NULL) {
                    v->node->op = PG_I_SUB;
                    v->node->rhs = n;
                    v->node->start = d[1].item.pos;
                    pg_child(p, v->node, n);
                }
                break;
            }

            v->node = n;
            break;
        }

        pg_errorf(p, d[1].item.pos, "expected number literal or duration "
                  "expression");
        v->node = pg_number_node(p, 0, 0, 0);
        break;

    case 254: case 255: case 256: case 257: case 258: case 259:
        /* duration_expr: duration_expr OP duration_expr */
        if (pg_as_expr(p, d[1].node) == NULL) {
            break;
        }

        pg_experimental_duration_expr(p, d[1].node);

        if (pg_as_expr(p, d[3].node) == NULL) {
            break;
        }

        if ((rule == 257 || rule == 258) && pg_is(d[3].node, PG_N_NUMBER)
            && d[3].node->val == 0)
        {
            pg_errorf(p, d[2].item.pos, rule == 257 ? "division by zero"
                                                     : "modulo by zero");
            v->node = pg_number_node(p, 0, 0, 0);
            break;
        }

        v->node = pg_node(p, PG_N_DURATION);
        if (v->node != NULL) {
            v->node->op = d[2].item.typ;
            v->node->lhs = d[1].node;
            v->node->rhs = d[3].node;
            pg_child(p, v->node, d[1].node);
            pg_child(p, v->node, d[3].node);
        }
        break;

    case 261:   /* paren_duration_expr: "(" duration_expr ")" */
        if (pg_as_expr(p, d[2].node) == NULL) {
            break;
        }

        pg_experimental_duration_expr(p, d[2].node);

        if (pg_is(d[2].node, PG_N_DURATION)) {
            d[2].node->wrapped = 1;
        }

        v->node = d[2].node;
        break;

    default:
        /* no action: $$ is $1 */
        break;
    }
}


/* checkAST(): the type checks, in Prometheus' order */

static const char *
pg_vtype_name(pg_vtype_e t)
{
    switch (t) {
    case PG_V_SCALAR:
        return "scalar";
    case PG_V_VECTOR:
        return "vector";
    case PG_V_MATRIX:
        return "matrix";
    case PG_V_STRING:
        return "string";
    default:
        return "none";
    }
}


/* DocumentedType() */
static const char *
pg_vtype_doc(pg_vtype_e t)
{
    switch (t) {
    case PG_V_VECTOR:
        return "instant vector";
    case PG_V_MATRIX:
        return "range vector";
    default:
        return pg_vtype_name(t);
    }
}


static pg_vtype_e pg_type(pg_parser_t *p, pg_node_t *n);


/* BinaryExpr.Type() down a chain: scalar when every operand is */
static pg_vtype_e
pg_type_binary(pg_parser_t *p, pg_node_t *n)
{
    pg_node_t   *b;
    pg_vtype_e   t;

    t = PG_V_SCALAR;

    for (b = n; b != NULL && b->kind == PG_N_BINARY && !b->typed;
         b = b->lhs)
    {
        if (pg_type(p, b->rhs) != PG_V_SCALAR) {
            t = PG_V_VECTOR;
        }
    }

    if (b == NULL) {
        pg_panic(p);
        return PG_V_NONE;
    }

    if (pg_type(p, b) != PG_V_SCALAR) {
        t = PG_V_VECTOR;
    }

    return t;
}


/* Expr.Type(), cached: the tree does not change once parsed */
static pg_vtype_e
pg_type(pg_parser_t *p, pg_node_t *n)
{
    pg_vtype_e  t;

    if (n == NULL) {
        pg_panic(p);
        return PG_V_NONE;
    }

    if (n->typed) {
        return n->vtype;
    }

    switch (n->kind) {
    case PG_N_AGGREGATE:
    case PG_N_VECTOR:
        t = PG_V_VECTOR;
        break;
    case PG_N_CALL:
        if (n->func == NULL) {
            pg_panic(p);
            return PG_V_NONE;
        }
        t = n->func->ret;
        break;
    case PG_N_MATRIX:
    case PG_N_SUBQUERY:
        t = PG_V_MATRIX;
        break;
    case PG_N_NUMBER:
    case PG_N_DURATION:
        t = PG_V_SCALAR;
        break;
    case PG_N_PAREN:
    case PG_N_UNARY:
        t = pg_type(p, n->expr);
        break;
    case PG_N_STRING:
        t = PG_V_STRING;
        break;
    case PG_N_BINARY:
        t = pg_type_binary(p, n);
        break;
    default:
        t = PG_V_NONE;
        break;
    }

    n->typed = 1;
    n->vtype = t;

    return t;
}


static void
pg_expect_type(pg_parser_t *p, pg_node_t *n, pg_vtype_e want,
    const char *context)
{
    pg_vtype_e  t;

    t = pg_check(p, n);

    if (t != want) {
        pg_errorf(p, pg_start(p, n), "expected type %s in %s, got %s",
                  pg_vtype_doc(want), context, pg_vtype_doc(t));
    }
}


static void
pg_check_binary_node(pg_parser_t *p, pg_node_t *n, pg_vtype_e lt,
    pg_vtype_e rt)
{
    size_t       i, j;
    int64_t      op;
    const char  *word;

    if (pg_aborted(p)) {
        return;
    }

    /* opRange(): where the operator starts, blanks skipped */
    op = pg_end(p, n->lhs);
    while (op >= 0 && (size_t) op < p->len && pg_is_space(p->input[op])) {
        op++;
    }

    if (op < 0 || (size_t) op >= p->len) {
        op = -1;
    }

    word = pg_type_word(n->op);

    if (n->return_bool && !pg_is_comparison(n->op)) {
        pg_errorf(p, op, "bool modifier can only be used on comparison "
                  "operators");
    }

    if (pg_is_comparison(n->op) && !n->return_bool
        && pg_type(p, n->rhs) == PG_V_SCALAR
        && pg_type(p, n->lhs) == PG_V_SCALAR)
    {
        pg_errorf(p, op, "comparisons between scalars must use BOOL "
                  "modifier");
    }

    if (pg_is_set_operator(n->op) && n->card == PG_CARD_ONE_TO_ONE) {
        n->card = PG_CARD_MANY_TO_MANY;
    }

    for (i = 0; i < n->matching_labels.len; i++) {
        for (j = 0; j < n->include.len; j++) {
            if (n->on && pg_str_eq(n->matching_labels.v[i], n->include.v[j]))
            {
                pg_errorf(p, op, "label %s must not occur in ON and GROUP "
                          "clause at once",
                          pg_q(p, n->matching_labels.v[i].data,
                               n->matching_labels.v[i].len));
            }
        }
    }

    if (lt != PG_V_SCALAR && lt != PG_V_VECTOR) {
        pg_errorf(p, pg_start(p, n->lhs), "binary expression must contain "
                  "only scalar and instant vector types");
    }

    if (rt != PG_V_SCALAR && rt != PG_V_VECTOR) {
        pg_errorf(p, pg_start(p, n->rhs), "binary expression must contain "
                  "only scalar and instant vector types");
    }

    if ((lt != PG_V_VECTOR || rt != PG_V_VECTOR) && n->matching) {
        if (n->matching_labels.len > 0) {
            pg_errorf(p, pg_start(p, n), "vector matching only allowed "
                      "between instant vectors");
        }
        n->matching = 0;

    } else if (pg_is_set_operator(n->op)) {
        if (n->card == PG_CARD_ONE_TO_MANY || n->card == PG_CARD_MANY_TO_ONE)
        {
            pg_errorf(p, pg_start(p, n), "no grouping allowed for \"%s\" "
                      "operation", word);
        }

        if (n->card != PG_CARD_MANY_TO_MANY) {
            pg_errorf(p, pg_start(p, n), "set operations must always be "
                      "many-to-many");
        }
    }

    if ((lt == PG_V_SCALAR || rt == PG_V_SCALAR) && pg_is_set_operator(n->op))
    {
        pg_errorf(p, pg_start(p, n), "set operator \"%s\" not allowed in "
                  "binary scalar expression", word);
    }
}


/*
 * checkAST() of a BinaryExpr checks its LHS, its RHS, then itself: down a
 * left-associative chain that is its bottom operand, then each RHS and
 * node on the way up, here by iteration.
 */
static void
pg_check_binary(pg_parser_t *p, pg_node_t *n)
{
    size_t       depth, i;
    pg_node_t   *b, **spine;
    pg_vtype_e   lt, rt;

    depth = 0;
    for (b = n; b != NULL && b->kind == PG_N_BINARY; b = b->lhs) {
        depth++;
    }

    spine = pg_palloc(p, depth * sizeof(pg_node_t *));
    if (spine == NULL) {
        return;
    }

    i = depth;
    for (b = n; b != NULL && b->kind == PG_N_BINARY; b = b->lhs) {
        spine[--i] = b;
    }

    lt = pg_check(p, spine[0]->lhs);

    for (i = 0; i < depth && !pg_aborted(p); i++) {
        rt = pg_check(p, spine[i]->rhs);
        pg_check_binary_node(p, spine[i], lt, rt);
        lt = pg_type(p, spine[i]);
    }
}


static void
pg_check_call(pg_parser_t *p, pg_node_t *n)
{
    size_t             i, at, na, nmax, nargs;
    const pg_func_t   *f;
    const char        *name;
    char               ctx[96];

    f = n->func;
    nargs = n->args->n;
    name = pg_q(p, (const uint8_t *) f->name, strlen(f->name));

    if (f->variadic == 0) {
        if ((size_t) f->nargs != nargs) {
            pg_errorf(p, n->start, "expected %d argument(s) in call to %s, "
                      "got %zu", f->nargs, name, nargs);
        }

    } else {
        na = f->nargs - 1;
        nmax = na + f->variadic;

        if (na > nargs) {
            pg_errorf(p, n->start, "expected at least %zu argument(s) in "
                      "call to %s, got %zu", na, name, nargs);

        } else if (f->variadic > 0 && nmax < nargs) {
            pg_errorf(p, n->start, "expected at most %zu argument(s) in call "
                      "to %s, got %zu", nmax, name, nargs);
        }
    }

    snprintf(ctx, sizeof(ctx), "call to function %s", name);

    for (i = 0; i < nargs && !pg_aborted(p); i++) {
        at = i;

        if (at >= (size_t) f->nargs) {
            if (f->variadic == 0) {
                break;
            }
            at = f->nargs - 1;
        }

        pg_expect_type(p, n->args->list[i], f->args[at], ctx);
    }
}


static pg_vtype_e
pg_check(pg_parser_t *p, pg_node_t *n)
{
    size_t         i;
    pg_vtype_e     typ, t;
    pg_matcher_t  *m;
    pg_str_t       empty;

    if (pg_aborted(p)) {
        return PG_V_NONE;
    }

    if (n == NULL) {
        pg_panic(p);
        return PG_V_NONE;
    }

    typ = n->kind == PG_N_EXPRESSIONS ? PG_V_NONE : pg_type(p, n);

    switch (n->kind) {

    case PG_N_EXPRESSIONS:
        for (i = 0; i < n->n; i++) {
            t = pg_check(p, n->list[i]);
            if (t == PG_V_NONE) {
                pg_errorf(p, pg_start(p, n->list[i]), "expression must have "
                          "a valid expression type but got %s",
                          pg_vtype_doc(t));
            }
        }
        break;

    case PG_N_AGGREGATE:
        if (!pg_is_aggregator(n->op)) {
            pg_errorf(p, n->start, "aggregation operator expected in "
                      "aggregation expression but got \"<Item %d>\"", n->op);
        }

        pg_expect_type(p, n->expr, PG_V_VECTOR, "aggregation expression");

        if (n->op == PG_I_TOPK || n->op == PG_I_BOTTOMK
            || n->op == PG_I_QUANTILE || n->op == PG_I_LIMITK
            || n->op == PG_I_LIMIT_RATIO)
        {
            pg_expect_type(p, n->param, PG_V_SCALAR, "aggregation parameter");
        }

        if (n->op == PG_I_COUNT_VALUES) {
            pg_expect_type(p, n->param, PG_V_STRING, "aggregation parameter");
        }
        break;

    case PG_N_BINARY:
        pg_check_binary(p, n);
        break;

    case PG_N_CALL:
        pg_check_call(p, n);
        break;

    case PG_N_PAREN:
    case PG_N_MATRIX:
        (void) pg_check(p, n->expr);
        break;

    case PG_N_UNARY:
        t = pg_check(p, n->expr);

        if (t != PG_V_SCALAR && t != PG_V_VECTOR) {
            pg_errorf(p, n->start, "unary expression only allowed on "
                      "expressions of type scalar or instant vector, got "
                      "\"%s\"", pg_vtype_doc(t));
        }
        break;

    case PG_N_SUBQUERY:
        t = pg_check(p, n->expr);

        if (t != PG_V_VECTOR) {
            pg_errorf(p, pg_start(p, n), "subquery is only allowed on instant "
                      "vector, got %s instead", pg_vtype_name(t));
        }
        break;

    case PG_N_VECTOR:
        if (n->str.len) {
            /* the last matcher is the name outside the braces */
            for (i = 0; i + 1 < n->matchers.len; i++) {
                m = n->matchers.v[i];

                if (m != NULL && m->name.len == 8
                    && memcmp(m->name.data, "__name__", 8) == 0)
                {
                    pg_errorf(p, n->start, "metric name must not be set "
                              "twice: %s or %s",
                              pg_q(p, n->str.data, n->str.len),
                              pg_q(p, m->value.data, m->value.len));
                }
            }
            break;
        }

        if (n->bypass_empty_check) {
            break;
        }

        /* a selector must not select everything by accident */
        empty.data = (const uint8_t *) "";
        empty.len = 0;

        for (i = 0; i < n->matchers.len; i++) {
            m = n->matchers.v[i];

            if (m != NULL && !pg_matcher_matches(m, empty)) {
                break;
            }
        }

        if (i == n->matchers.len) {
            pg_errorf(p, n->start, "vector selector must contain at least "
                      "one non-empty matcher");
        }
        break;

    case PG_N_NUMBER:
    case PG_N_STRING:
        break;

    default:
        pg_errorf(p, pg_start(p, n), "unknown node type: "
                  "*parser.DurationExpr");
        break;
    }

    return typ;
}


/*
 * ExtractSelectors(): Inspect() walks depth first, parents before
 * children, an aggregation's expression before its parameter.
 */
static void
pg_walk(pg_parser_t *p, pg_node_t *n, pg_selector_set_t *set, int fill)
{
    size_t          i, k;
    pg_node_t      *b, **spine;
    pg_selector_t  *sel;

    if (n == NULL || pg_aborted(p)) {
        return;
    }

    switch (n->kind) {

    case PG_N_VECTOR:
        if (!fill) {
            p->nselectors++;
            break;
        }

        sel = &set->selectors[set->nselectors++];
        sel->nmatchers = n->matchers.len;
        sel->matchers = pg_palloc(p, (n->matchers.len ? n->matchers.len : 1)
                                     * sizeof(pg_matcher_t));
        if (sel->matchers == NULL) {
            return;
        }

        for (i = 0, k = 0; i < n->matchers.len; i++) {
            if (n->matchers.v[i] != NULL) {
                sel->matchers[k++] = *n->matchers.v[i];
            }
        }

        sel->nmatchers = k;
        break;

    case PG_N_AGGREGATE:
        pg_walk(p, n->expr, set, fill);
        pg_walk(p, n->param, set, fill);
        break;

    case PG_N_BINARY:
        /* the bottom operand of a left-associative chain, then each RHS */
        k = 0;
        for (b = n; b != NULL && b->kind == PG_N_BINARY; b = b->lhs) {
            k++;
        }

        spine = pg_palloc(p, k * sizeof(pg_node_t *));
        if (spine == NULL) {
            return;
        }

        i = k;
        for (b = n; b != NULL && b->kind == PG_N_BINARY; b = b->lhs) {
            spine[--i] = b;
        }

        pg_walk(p, spine[0]->lhs, set, fill);

        for (i = 0; i < k; i++) {
            pg_walk(p, spine[i]->rhs, set, fill);
        }
        break;

    case PG_N_CALL:
        for (i = 0; i < n->args->n; i++) {
            pg_walk(p, n->args->list[i], set, fill);
        }
        break;

    case PG_N_MATRIX:
    case PG_N_SUBQUERY:
    case PG_N_PAREN:
    case PG_N_UNARY:
        pg_walk(p, n->expr, set, fill);
        break;

    default:
        break;
    }
}


static int
pg_extract(pg_parser_t *p, pg_node_t *root, pg_selector_set_t *set)
{
    p->nselectors = 0;
    pg_walk(p, root, set, 0);

    if (p->nselectors == 0) {
        return 0;
    }

    set->selectors = pg_palloc(p, p->nselectors * sizeof(pg_selector_t));
    if (set->selectors == NULL) {
        return -1;
    }

    pg_walk(p, root, set, 1);

    return pg_aborted(p) ? -1 : 0;
}


/* helpers */

/* Go's %q of a rune: 'x' */
static size_t
pg_quote_rune(char *buf, size_t size, int32_t r)
{
    uint8_t  u[4];
    size_t   n;

    if (r < 0 || r > 0x10ffff || (r >= 0xd800 && r <= 0xdfff)) {
        r = 0xfffd;
    }

    if (r < 0x80) {
        u[0] = (uint8_t) r;
        n = 1;

    } else if (r < 0x800) {
        u[0] = (uint8_t) (0xc0 | (r >> 6));
        u[1] = (uint8_t) (0x80 | (r & 0x3f));
        n = 2;

    } else if (r < 0x10000) {
        u[0] = (uint8_t) (0xe0 | (r >> 12));
        u[1] = (uint8_t) (0x80 | ((r >> 6) & 0x3f));
        u[2] = (uint8_t) (0x80 | (r & 0x3f));
        n = 3;

    } else {
        u[0] = (uint8_t) (0xf0 | (r >> 18));
        u[1] = (uint8_t) (0x80 | ((r >> 12) & 0x3f));
        u[2] = (uint8_t) (0x80 | ((r >> 6) & 0x3f));
        u[3] = (uint8_t) (0x80 | (r & 0x3f));
        n = 4;
    }

    return pg_go_quote(buf, size, u, n, '\'');
}


/* Go's %#U: U+0071 'q', or U+000A where the rune is not printable */
static size_t
pg_format_u(char *buf, size_t size, int32_t r)
{
    int     n;
    size_t  q;
    char    quoted[16];

    if (r < 0) {
        r = 0xfffd;
    }

    n = snprintf(buf, size, "U+%04X", (unsigned) r);
    if (n < 0 || (size_t) n >= size) {
        return n < 0 ? 0 : (size_t) n;
    }

    /* %#U shows a printable rune as it is, quotes and backslash included */
    if (r == '\'' || r == '"' || r == '\\') {
        n += snprintf(buf + n, size - n, " '%c'", (char) r);
        return (size_t) n;
    }

    q = pg_quote_rune(quoted, sizeof(quoted), r);

    if (q >= 3 && quoted[1] != '\\') {
        n += snprintf(buf + n, size - n, " %s", quoted);
    }

    return (size_t) n;
}


/* parser */

/* strings.ToLower(s) == lower, for the ASCII words of the lexer */
static int
pg_ascii_caseeq(const char *lower, const uint8_t *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (lower[i] != (char) ((s[i] >= 'A' && s[i] <= 'Z') ? s[i] | 0x20
                                                            : s[i]))
        {
            return 0;
        }
    }

    return 1;
}


/* utf8.DecodeRune(): a bad or truncated sequence is U+FFFD of width 1 */
static size_t
pg_decode_rune(const uint8_t *p, size_t len, int32_t *r)
{
    size_t    n;
    uint32_t  rune;

    n = pg_utf8_decode_rune(p, len, &rune);

    if (n == 0) {
        *r = 0xfffd;
        return 1;
    }

    *r = (int32_t) rune;

    return n;
}
