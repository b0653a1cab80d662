/*
 * PromQL parsing as Prometheus 2.42 does it (promql/parser: lex.go,
 * generated_parser.y, parse.go), down to its quirks, so that a query is
 * accepted or refused, and its selectors come out, exactly as there.
 *
 * The lexer is a transcription of lex.go.  The parser is recursive
 * descent with precedence climbing in place of the yacc grammar; its error
 * texts follow the grammar's error rules: a syntax error is reported with
 * the context of the innermost construct that has an error rule (label
 * matching, grouping, offset, @, brackets, an aggregation), or plainly.
 * Like Prometheus it keeps only the first error: semantic errors found
 * while parsing (an unknown function, a bad duration or regexp) do not stop
 * the parse, and a later syntax error does not replace them; type checks
 * run on a tree that parsed cleanly.
 */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pg_promql.h"


#define PG_EOF  (-1)


typedef enum {
    PG_T_EOF = 0,
    PG_T_ERROR,
    PG_T_COMMENT,
    PG_T_IDENTIFIER,
    PG_T_METRIC_IDENTIFIER,
    PG_T_NUMBER,
    PG_T_STRING,
    PG_T_DURATION,
    PG_T_LEFT_PAREN,
    PG_T_RIGHT_PAREN,
    PG_T_LEFT_BRACE,
    PG_T_RIGHT_BRACE,
    PG_T_LEFT_BRACKET,
    PG_T_RIGHT_BRACKET,
    PG_T_COMMA,
    PG_T_EQL,
    PG_T_COLON,

    /* operators */
    PG_T_ADD,
    PG_T_DIV,
    PG_T_EQLC,
    PG_T_EQL_REGEX,
    PG_T_GTE,
    PG_T_GTR,
    PG_T_LAND,
    PG_T_LOR,
    PG_T_LSS,
    PG_T_LTE,
    PG_T_LUNLESS,
    PG_T_MOD,
    PG_T_MUL,
    PG_T_NEQ,
    PG_T_NEQ_REGEX,
    PG_T_POW,
    PG_T_SUB,
    PG_T_AT,
    PG_T_ATAN2,

    /* aggregators */
    PG_T_AVG,
    PG_T_BOTTOMK,
    PG_T_COUNT,
    PG_T_COUNT_VALUES,
    PG_T_GROUP,
    PG_T_MAX,
    PG_T_MIN,
    PG_T_QUANTILE,
    PG_T_STDDEV,
    PG_T_STDVAR,
    PG_T_SUM,
    PG_T_TOPK,

    /* keywords */
    PG_T_BOOL,
    PG_T_BY,
    PG_T_GROUP_LEFT,
    PG_T_GROUP_RIGHT,
    PG_T_IGNORING,
    PG_T_OFFSET,
    PG_T_ON,
    PG_T_WITHOUT,

    /* preprocessors */
    PG_T_START,
    PG_T_END
} pg_tok_e;


#define pg_tok_is_operator(t)    ((t) >= PG_T_ADD && (t) <= PG_T_ATAN2)
#define pg_tok_is_aggregator(t)  ((t) >= PG_T_AVG && (t) <= PG_T_TOPK)
#define pg_tok_is_keyword(t)     ((t) >= PG_T_BOOL && (t) <= PG_T_WITHOUT)
#define pg_tok_is_comparison(t)                                              \
    ((t) == PG_T_EQLC || (t) == PG_T_NEQ || (t) == PG_T_LTE                   \
     || (t) == PG_T_LSS || (t) == PG_T_GTE || (t) == PG_T_GTR)
#define pg_tok_is_set_operator(t)                                            \
    ((t) == PG_T_LAND || (t) == PG_T_LOR || (t) == PG_T_LUNLESS)


typedef struct {
    pg_tok_e        type;
    size_t          pos;
    size_t          len;          /* of the text at query + pos */
    const char     *error;        /* PG_T_ERROR: the lexer's message */
} pg_token_t;


typedef enum {
    PG_LEX_STATEMENTS = 0,
    PG_LEX_DURATION,              /* right after "[" */
    PG_LEX_DONE
} pg_lex_state_e;


typedef struct {
    const uint8_t  *input;
    size_t          len;
    size_t          pos;
    size_t          start;
    size_t          width;
    int             paren_depth;
    int             brace_open;
    int             bracket_open;
    int             got_colon;
    int32_t         string_open;
    pg_lex_state_e  state;
    char            error[128];
} pg_lexer_t;


typedef enum {
    PG_V_NONE = 0,
    PG_V_SCALAR,
    PG_V_VECTOR,
    PG_V_MATRIX,
    PG_V_STRING
} pg_vtype_e;


typedef struct {
    const char     *name;
    pg_vtype_e      args[5];
    int             nargs;
    int             variadic;
    pg_vtype_e      ret;
} pg_func_t;


typedef enum {
    PG_N_NUMBER = 0,
    PG_N_STRING,
    PG_N_VECTOR,
    PG_N_MATRIX,
    PG_N_SUBQUERY,
    PG_N_PAREN,
    PG_N_CALL,
    PG_N_AGGREGATE,
    PG_N_BINARY,
    PG_N_UNARY
} pg_node_type_e;


typedef enum {
    PG_CARD_ONE_TO_ONE = 0,
    PG_CARD_MANY_TO_ONE,
    PG_CARD_ONE_TO_MANY,
    PG_CARD_MANY_TO_MANY
} pg_card_e;


typedef struct {
    pg_str_t       *labels;
    size_t          n;
} pg_label_list_t;


typedef struct pg_node_s  pg_node_t;

struct pg_node_s {
    pg_node_type_e  type;
    pg_vtype_e      vtype;
    size_t          start;
    size_t          end;

    /* NUMBER */
    double          number;

    /* VECTOR */
    pg_str_t        name;
    pg_matcher_t   *matchers;     /* in braces, in order */
    size_t          nmatchers;
    int64_t         offset;       /* also SUBQUERY */
    int             has_timestamp;
    pg_tok_e        start_or_end;

    /* MATRIX, SUBQUERY, PAREN, UNARY: the operand; AGGREGATE: Expr */
    pg_node_t      *expr;

    /* CALL: args; AGGREGATE: args, before they are sorted out */
    const pg_func_t  *func;
    pg_node_t     **args;
    size_t          nargs;

    /* AGGREGATE, BINARY, UNARY */
    pg_tok_e        op;
    pg_node_t      *param;

    /* BINARY */
    pg_node_t      *lhs;
    pg_node_t      *rhs;
    int             return_bool;
    int             matching;     /* VectorMatching != nil */
    pg_card_e       card;
    int             on;
    pg_label_list_t matching_labels;
    pg_label_list_t include;
};


typedef struct {
    const uint8_t      *input;
    size_t              len;
    pg_allocator_t     *alloc;
    pg_lexer_t          lex;
    pg_token_t          tok;
    int                 have_tok;
    size_t              last_closing;
    unsigned            depth;
    unsigned            agg_depth;
    size_t              nnodes;
    size_t              nselectors;
    int                 failed;   /* stop parsing */
    int                 nomem;
    int                 has_error;
    pg_promql_error_t  *err;
    pg_promql_error_t   local_err;
} pg_parser_t;


static void pg_lex_next(pg_lexer_t *l, pg_token_t *t);
static int32_t pg_lex_rune(pg_lexer_t *l);
static int32_t pg_lex_peek(pg_lexer_t *l);
static void pg_lex_backup(pg_lexer_t *l);
static int pg_lex_accept(pg_lexer_t *l, const char *valid);
static void pg_lex_accept_run(pg_lexer_t *l, const char *valid);
static int pg_lex_error(pg_lexer_t *l, pg_token_t *t, const char *fmt, ...);
static int pg_lex_statements(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_inside_braces(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_string(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_escape(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_raw_string(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_comment(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_duration(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_number_or_duration(pg_lexer_t *l, pg_token_t *t);
static int pg_lex_scan_number(pg_lexer_t *l);
static int pg_lex_accept_remaining_duration(pg_lexer_t *l);
static int pg_lex_keyword_or_identifier(pg_lexer_t *l, pg_token_t *t);
static void pg_lex_emit(pg_lexer_t *l, pg_token_t *t, pg_tok_e type);
static size_t pg_quote_rune(char *buf, size_t size, int32_t r);
static size_t pg_format_u(char *buf, size_t size, int32_t r);

static pg_token_t *pg_peek(pg_parser_t *p);
static void pg_consume(pg_parser_t *p);
static void pg_soft_error(pg_parser_t *p, size_t pos, const char *fmt, ...);
static void *pg_unexpected(pg_parser_t *p, const char *context,
    const char *expected);
static void *pg_fail_nomem(pg_parser_t *p);
static size_t pg_token_desc(pg_parser_t *p, const pg_token_t *t, char *buf,
    size_t size);
static void *pg_palloc(pg_parser_t *p, size_t size);
static pg_node_t *pg_new_node(pg_parser_t *p, pg_node_type_e type,
    size_t start);
static const char *pg_context(pg_parser_t *p);

static pg_node_t *pg_parse_expr(pg_parser_t *p, int min_prec);
static pg_node_t *pg_parse_unary(pg_parser_t *p);
static pg_node_t *pg_parse_primary(pg_parser_t *p);
static pg_node_t *pg_parse_postfix(pg_parser_t *p, pg_node_t *n);
static pg_node_t *pg_parse_vector_selector(pg_parser_t *p,
    const pg_token_t *name);
static int pg_parse_label_matchers(pg_parser_t *p, pg_node_t *vs);
static pg_node_t *pg_parse_call(pg_parser_t *p, const pg_token_t *name);
static pg_node_t *pg_parse_aggregate(pg_parser_t *p, const pg_token_t *op);
static int pg_parse_call_body(pg_parser_t *p, pg_node_t *n);
static int pg_parse_grouping(pg_parser_t *p, pg_label_list_t *list);
static int pg_parse_bin_modifier(pg_parser_t *p, pg_node_t *n);
static int pg_parse_offset(pg_parser_t *p, pg_node_t *n);
static int pg_parse_at(pg_parser_t *p, pg_node_t *n);
static pg_node_t *pg_parse_range(pg_parser_t *p, pg_node_t *n);
static int pg_parse_duration(pg_parser_t *p, const pg_token_t *t,
    int64_t *ms);
static double pg_parse_number(pg_parser_t *p, const pg_token_t *t);
static int pg_unquote(pg_parser_t *p, const pg_token_t *t, pg_str_t *out);

static void pg_add_offset(pg_parser_t *p, pg_node_t *n, int64_t offset);
static void pg_set_timestamp(pg_parser_t *p, pg_node_t *n, double ts);
static void pg_set_at_preprocessor(pg_parser_t *p, pg_node_t *n,
    pg_tok_e op);
static pg_node_t *pg_at_target(pg_parser_t *p, pg_node_t *n);

static pg_vtype_e pg_check(pg_parser_t *p, pg_node_t *n);
static pg_vtype_e pg_check_binary(pg_parser_t *p, pg_node_t *n);
static void pg_check_binary_node(pg_parser_t *p, pg_node_t *n,
    pg_vtype_e lt, pg_vtype_e rt);
static void pg_expect_type(pg_parser_t *p, pg_node_t *n, pg_vtype_e want,
    const char *context);
static size_t pg_node_start(const pg_node_t *n);
static size_t pg_node_end(const pg_node_t *n);
static const char *pg_vtype_doc(pg_vtype_e t);
static const char *pg_vtype_name(pg_vtype_e t);
static const char *pg_tok_text(pg_tok_e t);

static int pg_extract(pg_parser_t *p, pg_node_t *root,
    pg_selector_set_t *set);

static const pg_func_t *pg_get_function(const uint8_t *name, size_t len);
static int pg_is_space(int32_t r);
static int pg_is_alpha(int32_t r);
static int pg_is_digit(int32_t r);
static int pg_is_alnum(int32_t r);
static int pg_is_label(const uint8_t *s, size_t len);
static int pg_ascii_caseeq(const char *lower, const uint8_t *s, size_t len);
static size_t pg_decode_rune(const uint8_t *p, size_t len, int32_t *r);


#define V  PG_V_VECTOR
#define M  PG_V_MATRIX
#define S  PG_V_SCALAR
#define T  PG_V_STRING

/* Prometheus 2.42 promql/parser/functions.go, sorted by name */
static const pg_func_t  pg_functions[] = {
    { "abs", { V }, 1, 0, V },
    { "absent", { V }, 1, 0, V },
    { "absent_over_time", { M }, 1, 0, V },
    { "acos", { V }, 1, 0, V },
    { "acosh", { V }, 1, 0, V },
    { "asin", { V }, 1, 0, V },
    { "asinh", { V }, 1, 0, V },
    { "atan", { V }, 1, 0, V },
    { "atanh", { V }, 1, 0, V },
    { "avg_over_time", { M }, 1, 0, V },
    { "ceil", { V }, 1, 0, V },
    { "changes", { M }, 1, 0, V },
    { "clamp", { V, S, S }, 3, 0, V },
    { "clamp_max", { V, S }, 2, 0, V },
    { "clamp_min", { V, S }, 2, 0, V },
    { "cos", { V }, 1, 0, V },
    { "cosh", { V }, 1, 0, V },
    { "count_over_time", { M }, 1, 0, V },
    { "day_of_month", { V }, 1, 1, V },
    { "day_of_week", { V }, 1, 1, V },
    { "day_of_year", { V }, 1, 1, V },
    { "days_in_month", { V }, 1, 1, V },
    { "deg", { V }, 1, 0, V },
    { "delta", { M }, 1, 0, V },
    { "deriv", { M }, 1, 0, V },
    { "exp", { V }, 1, 0, V },
    { "floor", { V }, 1, 0, V },
    { "histogram_count", { V }, 1, 0, V },
    { "histogram_fraction", { S, S, V }, 3, 0, V },
    { "histogram_quantile", { S, V }, 2, 0, V },
    { "histogram_sum", { V }, 1, 0, V },
    { "holt_winters", { M, S, S }, 3, 0, V },
    { "hour", { V }, 1, 1, V },
    { "idelta", { M }, 1, 0, V },
    { "increase", { M }, 1, 0, V },
    { "irate", { M }, 1, 0, V },
    { "label_join", { V, T, T, T }, 4, -1, V },
    { "label_replace", { V, T, T, T, T }, 5, 0, V },
    { "last_over_time", { M }, 1, 0, V },
    { "ln", { V }, 1, 0, V },
    { "log10", { V }, 1, 0, V },
    { "log2", { V }, 1, 0, V },
    { "max_over_time", { M }, 1, 0, V },
    { "min_over_time", { M }, 1, 0, V },
    { "minute", { V }, 1, 1, V },
    { "month", { V }, 1, 1, V },
    { "pi", { PG_V_NONE }, 0, 0, S },
    { "predict_linear", { M, S }, 2, 0, V },
    { "present_over_time", { M }, 1, 0, V },
    { "quantile_over_time", { S, M }, 2, 0, V },
    { "rad", { V }, 1, 0, V },
    { "rate", { M }, 1, 0, V },
    { "resets", { M }, 1, 0, V },
    { "round", { V, S }, 2, 1, V },
    { "scalar", { V }, 1, 0, S },
    { "sgn", { V }, 1, 0, V },
    { "sin", { V }, 1, 0, V },
    { "sinh", { V }, 1, 0, V },
    { "sort", { V }, 1, 0, V },
    { "sort_desc", { V }, 1, 0, V },
    { "sqrt", { V }, 1, 0, V },
    { "stddev_over_time", { M }, 1, 0, V },
    { "stdvar_over_time", { M }, 1, 0, V },
    { "sum_over_time", { M }, 1, 0, V },
    { "tan", { V }, 1, 0, V },
    { "tanh", { V }, 1, 0, V },
    { "time", { PG_V_NONE }, 0, 0, S },
    { "timestamp", { V }, 1, 0, V },
    { "vector", { S }, 1, 0, V },
    { "year", { V }, 1, 1, V },
    { NULL, { PG_V_NONE }, 0, 0, PG_V_NONE }
};

#undef V
#undef M
#undef S
#undef T


/* lex.go's key map: words the lexer turns into keywords, any case */
static const struct {
    const char     *word;
    pg_tok_e        type;
} pg_keywords[] = {
    { "and", PG_T_LAND },
    { "or", PG_T_LOR },
    { "unless", PG_T_LUNLESS },
    { "atan2", PG_T_ATAN2 },
    { "sum", PG_T_SUM },
    { "avg", PG_T_AVG },
    { "count", PG_T_COUNT },
    { "min", PG_T_MIN },
    { "max", PG_T_MAX },
    { "group", PG_T_GROUP },
    { "stddev", PG_T_STDDEV },
    { "stdvar", PG_T_STDVAR },
    { "topk", PG_T_TOPK },
    { "bottomk", PG_T_BOTTOMK },
    { "count_values", PG_T_COUNT_VALUES },
    { "quantile", PG_T_QUANTILE },
    { "offset", PG_T_OFFSET },
    { "by", PG_T_BY },
    { "without", PG_T_WITHOUT },
    { "on", PG_T_ON },
    { "ignoring", PG_T_IGNORING },
    { "group_left", PG_T_GROUP_LEFT },
    { "group_right", PG_T_GROUP_RIGHT },
    { "bool", PG_T_BOOL },
    { "start", PG_T_START },
    { "end", PG_T_END },
    { "inf", PG_T_NUMBER },
    { "nan", PG_T_NUMBER },
    { NULL, PG_T_EOF }
};


pg_promql_rc_e
pg_promql_selectors(const uint8_t *query, size_t len, pg_allocator_t *alloc,
    pg_selector_set_t *set, pg_promql_error_t *err)
{
    pg_node_t    *root;
    pg_token_t   *t;
    pg_parser_t   p;

    memset(&p, 0, sizeof(pg_parser_t));
    root = NULL;

    p.input = query;
    p.len = len;
    p.alloc = alloc;
    p.err = err != NULL ? err : &p.local_err;
    p.lex.input = query;
    p.lex.len = len;

    p.err->pos = 0;
    p.err->message[0] = '\0';

    set->selectors = NULL;
    set->nselectors = 0;

    t = pg_peek(&p);

    if (p.failed) {
        goto failed;
    }

    if (t->type == PG_T_EOF) {
        pg_soft_error(&p, 0, "no expression found in input");
        return PG_PROMQL_ERROR;
    }

    root = pg_parse_expr(&p, 0);

    if (root != NULL) {
        t = pg_peek(&p);

        if (!p.failed && t->type != PG_T_EOF) {
            pg_unexpected(&p, NULL, NULL);
        }
    }

failed:

    if (p.nomem) {
        return PG_PROMQL_NOMEM;
    }

    if (p.has_error || root == NULL) {
        return PG_PROMQL_ERROR;
    }

    /* Prometheus type-checks only a tree that parsed without error */
    (void) pg_check(&p, root);

    if (p.nomem) {
        return PG_PROMQL_NOMEM;
    }

    if (p.has_error) {
        return PG_PROMQL_ERROR;
    }

    if (pg_extract(&p, root, set) != 0) {
        return PG_PROMQL_NOMEM;
    }

    return PG_PROMQL_OK;
}


size_t
pg_promql_error_format(const uint8_t *query, size_t len,
    const pg_promql_error_t *err, char *buf, size_t size)
{
    size_t  i, line, last_break, col;
    int     n;

    if (err->pos > len) {
        n = snprintf(buf, size, "invalid position: parse error: %s",
                     err->message);
        return n < 0 ? 0 : (size_t) n;
    }

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

    return n < 0 ? 0 : (size_t) n;
}


/* lexer: lex.go */

static void
pg_lex_next(pg_lexer_t *l, pg_token_t *t)
{
    t->error = NULL;

    for ( ;; ) {

        switch (l->state) {

        case PG_LEX_DONE:
            l->start = l->pos;
            pg_lex_emit(l, t, PG_T_EOF);
            return;

        case PG_LEX_DURATION:
            l->state = PG_LEX_STATEMENTS;
            if (pg_lex_duration(l, t)) {
                return;
            }
            break;

        default:
            if (l->brace_open) {
                if (pg_lex_inside_braces(l, t)) {
                    return;
                }
                break;
            }

            if (pg_lex_statements(l, t)) {
                return;
            }
            break;
        }
    }
}


/* next(): Go decodes a bad byte as U+FFFD of width 1 */
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


static int32_t
pg_lex_peek(pg_lexer_t *l)
{
    int32_t  r;

    r = pg_lex_rune(l);
    pg_lex_backup(l);

    return r;
}


static void
pg_lex_backup(pg_lexer_t *l)
{
    l->pos -= l->width;
}


static int
pg_lex_accept(pg_lexer_t *l, const char *valid)
{
    int32_t  r;

    r = pg_lex_rune(l);

    if (r > 0 && r < 0x80 && strchr(valid, (int) r) != NULL) {
        return 1;
    }

    pg_lex_backup(l);

    return 0;
}


static void
pg_lex_accept_run(pg_lexer_t *l, const char *valid)
{
    while (pg_lex_accept(l, valid)) { /* void */ }
}


static void
pg_lex_emit(pg_lexer_t *l, pg_token_t *t, pg_tok_e type)
{
    t->type = type;
    t->pos = l->start;
    t->len = l->pos - l->start;
    l->start = l->pos;
}


/* errorf(): the scan ends with an error item at the start of the item */
static int
pg_lex_error(pg_lexer_t *l, pg_token_t *t, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(l->error, sizeof(l->error), fmt, args);
    va_end(args);

    t->type = PG_T_ERROR;
    t->pos = l->start;
    t->len = 0;
    t->error = l->error;

    l->state = PG_LEX_DONE;

    return 1;
}


/* returns 1 with an item in t, 0 to go on scanning */
static int
pg_lex_statements(pg_lexer_t *l, pg_token_t *t)
{
    int32_t  r, n;
    char     q[16];

    if (l->pos < l->len && l->input[l->pos] == '#') {
        return pg_lex_comment(l, t);
    }

    r = pg_lex_rune(l);

    switch (r) {

    case PG_EOF:
        if (l->paren_depth != 0) {
            return pg_lex_error(l, t, "unclosed left parenthesis");
        }

        if (l->bracket_open) {
            return pg_lex_error(l, t, "unclosed left bracket");
        }

        pg_lex_emit(l, t, PG_T_EOF);
        l->state = PG_LEX_DONE;
        return 1;

    case ',':
        pg_lex_emit(l, t, PG_T_COMMA);
        return 1;

    case ' ': case '\t': case '\n': case '\r':
        while (pg_is_space(pg_lex_peek(l))) {
            pg_lex_rune(l);
        }
        l->start = l->pos;
        return 0;

    case '*':
        pg_lex_emit(l, t, PG_T_MUL);
        return 1;

    case '/':
        pg_lex_emit(l, t, PG_T_DIV);
        return 1;

    case '%':
        pg_lex_emit(l, t, PG_T_MOD);
        return 1;

    case '+':
        pg_lex_emit(l, t, PG_T_ADD);
        return 1;

    case '-':
        pg_lex_emit(l, t, PG_T_SUB);
        return 1;

    case '^':
        pg_lex_emit(l, t, PG_T_POW);
        return 1;

    case '=':
        n = pg_lex_peek(l);

        if (n == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, t, PG_T_EQLC);

        } else if (n == '~') {
            pg_quote_rune(q, sizeof(q), n);
            return pg_lex_error(l, t, "unexpected character after '=': %s",
                                q);

        } else {
            pg_lex_emit(l, t, PG_T_EQL);
        }
        return 1;

    case '!':
        n = pg_lex_rune(l);

        if (n == '=') {
            pg_lex_emit(l, t, PG_T_NEQ);
            return 1;
        }

        pg_quote_rune(q, sizeof(q), n);
        return pg_lex_error(l, t, "unexpected character after '!': %s", q);

    case '<':
        if (pg_lex_peek(l) == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, t, PG_T_LTE);

        } else {
            pg_lex_emit(l, t, PG_T_LSS);
        }
        return 1;

    case '>':
        if (pg_lex_peek(l) == '=') {
            pg_lex_rune(l);
            pg_lex_emit(l, t, PG_T_GTE);

        } else {
            pg_lex_emit(l, t, PG_T_GTR);
        }
        return 1;

    case '"':
    case '\'':
        l->string_open = r;
        return pg_lex_string(l, t);

    case '`':
        l->string_open = r;
        return pg_lex_raw_string(l, t);

    case '(':
        pg_lex_emit(l, t, PG_T_LEFT_PAREN);
        l->paren_depth++;
        return 1;

    case ')':
        pg_lex_emit(l, t, PG_T_RIGHT_PAREN);
        l->paren_depth--;

        if (l->paren_depth < 0) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_error(l, t, "unexpected right parenthesis %s", q);
        }
        return 1;

    case '{':
        pg_lex_emit(l, t, PG_T_LEFT_BRACE);
        l->brace_open = 1;
        return 1;

    case '[':
        if (l->bracket_open) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_error(l, t, "unexpected left bracket %s", q);
        }

        l->got_colon = 0;
        pg_lex_emit(l, t, PG_T_LEFT_BRACKET);

        if (pg_is_space(pg_lex_peek(l))) {
            while (pg_is_space(pg_lex_peek(l))) {
                pg_lex_rune(l);
            }
            l->start = l->pos;
        }

        l->bracket_open = 1;
        l->state = PG_LEX_DURATION;
        return 1;

    case ']':
        if (!l->bracket_open) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_error(l, t, "unexpected right bracket %s", q);
        }

        pg_lex_emit(l, t, PG_T_RIGHT_BRACKET);
        l->bracket_open = 0;
        return 1;

    case '@':
        pg_lex_emit(l, t, PG_T_AT);
        return 1;

    default:
        break;
    }

    if (pg_is_digit(r) || (r == '.' && pg_is_digit(pg_lex_peek(l)))) {
        pg_lex_backup(l);
        return pg_lex_number_or_duration(l, t);
    }

    if (pg_is_alpha(r) || r == ':') {
        if (!l->bracket_open) {
            pg_lex_backup(l);
            return pg_lex_keyword_or_identifier(l, t);
        }

        /* inside brackets any letter reads as the subquery colon */
        if (l->got_colon) {
            pg_quote_rune(q, sizeof(q), r);
            return pg_lex_error(l, t, "unexpected colon %s", q);
        }

        pg_lex_emit(l, t, PG_T_COLON);
        l->got_colon = 1;
        return 1;
    }

    pg_quote_rune(q, sizeof(q), r);

    return pg_lex_error(l, t, "unexpected character: %s", q);
}


static int
pg_lex_inside_braces(pg_lexer_t *l, pg_token_t *t)
{
    int32_t  r, n;
    char     q[16];

    if (l->pos < l->len && l->input[l->pos] == '#') {
        return pg_lex_comment(l, t);
    }

    r = pg_lex_rune(l);

    switch (r) {

    case PG_EOF:
        return pg_lex_error(l, t, "unexpected end of input inside braces");

    case ' ': case '\t': case '\n': case '\r':
        while (pg_is_space(pg_lex_peek(l))) {
            pg_lex_rune(l);
        }
        l->start = l->pos;
        return 0;

    case ',':
        pg_lex_emit(l, t, PG_T_COMMA);
        return 1;

    case '"':
    case '\'':
        l->string_open = r;
        return pg_lex_string(l, t);

    case '`':
        l->string_open = r;
        return pg_lex_raw_string(l, t);

    case '=':
        if (pg_lex_rune(l) == '~') {
            pg_lex_emit(l, t, PG_T_EQL_REGEX);
            return 1;
        }

        pg_lex_backup(l);
        pg_lex_emit(l, t, PG_T_EQL);
        return 1;

    case '!':
        n = pg_lex_rune(l);

        if (n == '~') {
            pg_lex_emit(l, t, PG_T_NEQ_REGEX);
            return 1;
        }

        if (n == '=') {
            pg_lex_emit(l, t, PG_T_NEQ);
            return 1;
        }

        pg_quote_rune(q, sizeof(q), n);
        return pg_lex_error(l, t,
                            "unexpected character after '!' inside braces: %s",
                            q);

    case '{':
        pg_quote_rune(q, sizeof(q), r);
        return pg_lex_error(l, t, "unexpected left brace %s", q);

    case '}':
        pg_lex_emit(l, t, PG_T_RIGHT_BRACE);
        l->brace_open = 0;
        return 1;

    default:
        break;
    }

    if (pg_is_alpha(r)) {
        /* keywords are plain identifiers in here */
        while (pg_is_alnum(pg_lex_rune(l))) { /* void */ }
        pg_lex_backup(l);
        pg_lex_emit(l, t, PG_T_IDENTIFIER);
        return 1;
    }

    pg_quote_rune(q, sizeof(q), r);

    return pg_lex_error(l, t, "unexpected character inside braces: %s", q);
}


static int
pg_lex_string(pg_lexer_t *l, pg_token_t *t)
{
    int32_t  r;

    for ( ;; ) {
        r = pg_lex_rune(l);

        if (r == '\\') {
            if (pg_lex_escape(l, t)) {
                return 1;
            }
            continue;
        }

        /* a bad byte, and a real U+FFFD too: Go cannot tell them apart */
        if (r == 0xfffd) {
            return pg_lex_error(l, t, "invalid UTF-8 rune");
        }

        if (r == PG_EOF || r == '\n') {
            return pg_lex_error(l, t, "unterminated quoted string");
        }

        if (r == l->string_open) {
            break;
        }
    }

    pg_lex_emit(l, t, PG_T_STRING);

    return 1;
}


/* lexEscape(), from go/scanner; returns 1 on error */
static int
pg_lex_escape(pg_lexer_t *l, pg_token_t *t)
{
    int       n;
    int32_t   ch;
    uint32_t  base, max, x, d;
    char      u[32];

    ch = pg_lex_rune(l);

    switch (ch) {

    case 'a': case 'b': case 'f': case 'n': case 'r': case 't': case 'v':
    case '\\':
        return 0;

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
        return pg_lex_error(l, t, "escape sequence not terminated");

    default:
        if (ch == l->string_open) {
            return 0;
        }

        pg_format_u(u, sizeof(u), ch);
        return pg_lex_error(l, t, "unknown escape sequence %s", u);
    }

    x = 0;

    while (n > 0) {
        d = ch >= '0' && ch <= '9' ? (uint32_t) (ch - '0')
            : ch >= 'a' && ch <= 'f' ? (uint32_t) (ch - 'a' + 10)
            : ch >= 'A' && ch <= 'F' ? (uint32_t) (ch - 'A' + 10) : 16;

        if (d >= base) {
            if (ch == PG_EOF) {
                return pg_lex_error(l, t, "escape sequence not terminated");
            }

            pg_format_u(u, sizeof(u), ch);
            return pg_lex_error(l, t,
                                "illegal character %s in escape sequence", u);
        }

        x = x * base + d;
        n--;

        if (n > 0) {
            ch = pg_lex_rune(l);
        }
    }

    if (x > max || (x >= 0xd800 && x < 0xe000)) {
        return pg_lex_error(l, t,
                            "escape sequence is an invalid Unicode code point");
    }

    return 0;
}


static int
pg_lex_raw_string(pg_lexer_t *l, pg_token_t *t)
{
    int32_t  r;

    for ( ;; ) {
        r = pg_lex_rune(l);

        if (r == 0xfffd) {
            return pg_lex_error(l, t, "invalid UTF-8 rune");
        }

        if (r == PG_EOF) {
            return pg_lex_error(l, t, "unterminated raw string");
        }

        if (r == l->string_open) {
            break;
        }
    }

    pg_lex_emit(l, t, PG_T_STRING);

    return 1;
}


static int
pg_lex_comment(pg_lexer_t *l, pg_token_t *t)
{
    int32_t  r;

    l->pos++;

    do {
        r = pg_lex_rune(l);
    } while (r != '\r' && r != '\n' && r != PG_EOF);

    pg_lex_backup(l);
    pg_lex_emit(l, t, PG_T_COMMENT);

    return 1;
}


static int
pg_lex_duration(pg_lexer_t *l, pg_token_t *t)
{
    if (pg_lex_scan_number(l)) {
        return pg_lex_error(l, t, "missing unit character in duration");
    }

    if (!pg_lex_accept_remaining_duration(l)) {
        return pg_lex_error(l, t, "bad duration syntax: \"%.*s\"",
                            (int) (l->pos - l->start),
                            (const char *) l->input + l->start);
    }

    pg_lex_backup(l);
    pg_lex_emit(l, t, PG_T_DURATION);

    return 1;
}


static int
pg_lex_number_or_duration(pg_lexer_t *l, pg_token_t *t)
{
    if (pg_lex_scan_number(l)) {
        pg_lex_emit(l, t, PG_T_NUMBER);
        return 1;
    }

    /* the next two characters must be a unit and a non-alphanumeric */
    if (pg_lex_accept_remaining_duration(l)) {
        pg_lex_backup(l);
        pg_lex_emit(l, t, PG_T_DURATION);
        return 1;
    }

    return pg_lex_error(l, t, "bad number or duration syntax: \"%.*s\"",
                        (int) (l->pos - l->start),
                        (const char *) l->input + l->start);
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
        pg_lex_accept_run(l, "0123456789");

        if (!pg_lex_accept(l, "smhdw")) {
            return 0;
        }

        pg_lex_accept(l, "s");
    }

    return !pg_is_alnum(pg_lex_rune(l));
}


/* scanNumber(): what is scanned need not be a valid number */
static int
pg_lex_scan_number(pg_lexer_t *l)
{
    const char  *digits;

    digits = "0123456789";

    if (pg_lex_accept(l, "0") && pg_lex_accept(l, "xX")) {
        digits = "0123456789abcdefABCDEF";
    }

    pg_lex_accept_run(l, digits);

    if (pg_lex_accept(l, ".")) {
        pg_lex_accept_run(l, digits);
    }

    if (pg_lex_accept(l, "eE")) {
        pg_lex_accept(l, "+-");
        pg_lex_accept_run(l, "0123456789");
    }

    return !pg_is_alnum(pg_lex_peek(l));
}


static int
pg_lex_keyword_or_identifier(pg_lexer_t *l, pg_token_t *t)
{
    int32_t         r;
    size_t          i, len;
    const uint8_t  *word;
    int             colon;

    colon = 0;

    for ( ;; ) {
        r = pg_lex_rune(l);

        if (r == ':') {
            colon = 1;
            continue;
        }

        if (!pg_is_alnum(r)) {
            break;
        }
    }

    pg_lex_backup(l);

    word = l->input + l->start;
    len = l->pos - l->start;

    for (i = 0; pg_keywords[i].word != NULL; i++) {
        if (strlen(pg_keywords[i].word) == len
            && pg_ascii_caseeq(pg_keywords[i].word, word, len))
        {
            pg_lex_emit(l, t, pg_keywords[i].type);
            return 1;
        }
    }

    pg_lex_emit(l, t, colon ? PG_T_METRIC_IDENTIFIER : PG_T_IDENTIFIER);

    return 1;
}


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

static pg_token_t *
pg_peek(pg_parser_t *p)
{
    if (p->have_tok) {
        return &p->tok;
    }

    /* comments are skipped, as parser.Lex() does */
    do {
        pg_lex_next(&p->lex, &p->tok);
    } while (p->tok.type == PG_T_COMMENT);

    p->have_tok = 1;

    switch (p->tok.type) {

    case PG_T_ERROR:
        /* a lexer error is reported at the start of the bad item */
        if (!p->has_error) {
            p->has_error = 1;
            p->err->pos = p->lex.start;
            snprintf(p->err->message, sizeof(p->err->message), "%s",
                     p->tok.error);
        }
        p->failed = 1;
        break;

    case PG_T_RIGHT_BRACE:
    case PG_T_RIGHT_PAREN:
    case PG_T_RIGHT_BRACKET:
    case PG_T_DURATION:
    case PG_T_NUMBER:
        p->last_closing = p->tok.pos + p->tok.len;
        break;

    default:
        break;
    }

    return &p->tok;
}


static void
pg_consume(pg_parser_t *p)
{
    p->have_tok = 0;
}


/* an error that does not stop the parse; only the first one is kept */
static void
pg_soft_error(pg_parser_t *p, size_t pos, const char *fmt, ...)
{
    size_t   n;
    va_list  args;

    if (p->has_error) {
        return;
    }

    p->has_error = 1;
    p->err->pos = pos;

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


/*
 * A syntax error at the current token, as parser.unexpected() words it;
 * nothing is added for a lexer error, which is already reported.
 */
static void *
pg_unexpected(pg_parser_t *p, const char *context, const char *expected)
{
    char         desc[64];
    pg_token_t  *t;

    t = &p->tok;

    if (t->type != PG_T_ERROR) {
        pg_token_desc(p, t, desc, sizeof(desc));

        pg_soft_error(p, t->pos, "unexpected %s%s%s%s%s", desc,
                      context != NULL && context[0] ? " in " : "",
                      context != NULL ? context : "",
                      expected != NULL ? ", expected " : "",
                      expected != NULL ? expected : "");
    }

    p->failed = 1;

    return NULL;
}


static void *
pg_fail_nomem(pg_parser_t *p)
{
    p->nomem = 1;
    p->failed = 1;

    return NULL;
}


/* Item.desc() */
static size_t
pg_token_desc(pg_parser_t *p, const pg_token_t *t, char *buf, size_t size)
{
    int             n;
    size_t          i, len, runes;
    int32_t         r;
    const char     *kind;
    const uint8_t  *val;
    char            q[40];

    val = p->input + t->pos;
    len = t->len;

    switch (t->type) {

    case PG_T_EOF:
        return snprintf(buf, size, "end of input");

    case PG_T_IDENTIFIER:
    case PG_T_METRIC_IDENTIFIER:
        kind = t->type == PG_T_IDENTIFIER ? "identifier"
                                          : "metric identifier";
        n = snprintf(buf, size, "%s ", kind);
        pg_go_quote(buf + n, size - n, val, len, '"');
        return strlen(buf);

    case PG_T_STRING:
    case PG_T_NUMBER:
    case PG_T_DURATION:
        kind = t->type == PG_T_STRING ? "string"
               : t->type == PG_T_NUMBER ? "number" : "duration";
        break;

    case PG_T_AT:
        /* AT is missing from ItemTypeStr: its desc() is this */
        return snprintf(buf, size, "\"<Item 57385>\" <op:%.*s>",
                        (int) len, (const char *) val);

    default:
        if (pg_tok_is_operator(t->type)) {
            return snprintf(buf, size, "<op:%.*s>", (int) len,
                            (const char *) val);
        }

        if (pg_tok_is_aggregator(t->type)) {
            return snprintf(buf, size, "<aggr:%.*s>", (int) len,
                            (const char *) val);
        }

        if (pg_tok_is_keyword(t->type)) {
            return snprintf(buf, size, "<%.*s>", (int) len,
                            (const char *) val);
        }

        kind = NULL;
        break;
    }

    n = 0;
    if (kind != NULL) {
        n = snprintf(buf, size, "%s ", kind);
    }

    /* Item.String(): values of more than 10 bytes show 10 runes and ... */
    if (len > 10) {
        runes = 0;
        for (i = 0; i < len && runes < 10; runes++) {
            i += pg_decode_rune(val + i, len - i, &r);
        }

        pg_go_quote(q, sizeof(q), val, i, '"');
        snprintf(buf + n, size - n, "%s...", q);

    } else {
        pg_go_quote(buf + n, size - n, val, len, '"');
    }

    return strlen(buf);
}


static void *
pg_palloc(pg_parser_t *p, size_t size)
{
    void  *m;

    m = p->alloc->alloc(p->alloc->ctx, size);
    if (m == NULL) {
        return pg_fail_nomem(p);
    }

    return m;
}


static pg_node_t *
pg_new_node(pg_parser_t *p, pg_node_type_e type, size_t start)
{
    pg_node_t  *n;

    n = pg_palloc(p, sizeof(pg_node_t));
    if (n == NULL) {
        return NULL;
    }

    memset(n, 0, sizeof(pg_node_t));
    n->type = type;
    n->start = start;
    n->end = start;

    p->nnodes++;

    return n;
}


/* the error rule a syntax error in an expression falls back to */
static const char *
pg_context(pg_parser_t *p)
{
    return p->agg_depth ? "aggregation" : NULL;
}


static int
pg_binary_prec(pg_tok_e t)
{
    switch (t) {
    case PG_T_LOR:
        return 1;
    case PG_T_LAND:
    case PG_T_LUNLESS:
        return 2;
    case PG_T_EQLC: case PG_T_GTE: case PG_T_GTR: case PG_T_LSS:
    case PG_T_LTE: case PG_T_NEQ:
        return 3;
    case PG_T_ADD:
    case PG_T_SUB:
        return 4;
    case PG_T_MUL: case PG_T_DIV: case PG_T_MOD: case PG_T_ATAN2:
        return 5;
    case PG_T_POW:
        return 6;
    default:
        return 0;
    }
}


/* the grammar's metric_identifier: keywords that may name a metric */
static int
pg_is_metric_identifier(pg_tok_e t)
{
    switch (t) {
    case PG_T_IDENTIFIER: case PG_T_METRIC_IDENTIFIER:
    case PG_T_AVG: case PG_T_BOTTOMK: case PG_T_BY: case PG_T_COUNT:
    case PG_T_COUNT_VALUES: case PG_T_GROUP: case PG_T_LAND: case PG_T_LOR:
    case PG_T_LUNLESS: case PG_T_MAX: case PG_T_MIN: case PG_T_OFFSET:
    case PG_T_QUANTILE: case PG_T_STDDEV: case PG_T_STDVAR: case PG_T_SUM:
    case PG_T_TOPK: case PG_T_WITHOUT: case PG_T_START: case PG_T_END:
        return 1;
    default:
        return 0;
    }
}


/* the grammar's maybe_label: what grouping labels may be lexed as */
static int
pg_is_maybe_label(pg_tok_e t)
{
    switch (t) {
    case PG_T_BOOL: case PG_T_GROUP_LEFT: case PG_T_GROUP_RIGHT:
    case PG_T_IGNORING: case PG_T_ON: case PG_T_ATAN2:
        return 1;
    default:
        return pg_is_metric_identifier(t);
    }
}


static int
pg_starts_expr(pg_tok_e t)
{
    return pg_is_metric_identifier(t) || t == PG_T_LEFT_BRACE
           || t == PG_T_NUMBER || t == PG_T_STRING || t == PG_T_LEFT_PAREN
           || t == PG_T_ADD || t == PG_T_SUB;
}


/* precedence climbing over the grammar's %left / %right declarations */
static pg_node_t *
pg_parse_expr(pg_parser_t *p, int min_prec)
{
    int          prec;
    pg_node_t   *lhs, *rhs, *n;
    pg_token_t  *t;

    if (++p->depth > PG_PROMQL_MAX_DEPTH) {
        t = pg_peek(p);
        if (!p->failed) {
            pg_soft_error(p, t->pos, "query nests too deeply (more than %d "
                          "levels)", PG_PROMQL_MAX_DEPTH);
            p->failed = 1;
        }
        return NULL;
    }

    lhs = pg_parse_unary(p);
    if (lhs == NULL) {
        return NULL;
    }

    for ( ;; ) {
        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        prec = pg_binary_prec(t->type);
        if (prec == 0 || prec < min_prec) {
            break;
        }

        n = pg_new_node(p, PG_N_BINARY, pg_node_start(lhs));
        if (n == NULL) {
            return NULL;
        }

        n->op = t->type;
        pg_consume(p);

        if (pg_parse_bin_modifier(p, n) != 0) {
            return NULL;
        }

        /* "^" is right-associative, the rest left */
        rhs = pg_parse_expr(p, n->op == PG_T_POW ? prec : prec + 1);
        if (rhs == NULL) {
            return NULL;
        }

        n->lhs = lhs;
        n->rhs = rhs;
        n->end = pg_node_end(rhs);
        n->vtype = lhs->vtype == PG_V_SCALAR && rhs->vtype == PG_V_SCALAR
                   ? PG_V_SCALAR : PG_V_VECTOR;
        lhs = n;
    }

    p->depth--;

    return lhs;
}


/* unary_op expr %prec MUL: the operand takes only "^" and postfixes */
static pg_node_t *
pg_parse_unary(pg_parser_t *p)
{
    pg_node_t   *n, *e;
    pg_token_t  *t;
    pg_tok_e     op;
    size_t       start;

    t = pg_peek(p);
    if (p->failed) {
        return NULL;
    }

    if (t->type != PG_T_ADD && t->type != PG_T_SUB) {
        return pg_parse_primary(p);
    }

    op = t->type;
    start = t->pos;
    pg_consume(p);

    e = pg_parse_expr(p, 6);
    if (e == NULL) {
        return NULL;
    }

    if (e->type == PG_N_NUMBER) {
        if (op == PG_T_SUB) {
            e->number = -e->number;
        }
        e->start = start;
        return e;
    }

    n = pg_new_node(p, PG_N_UNARY, start);
    if (n == NULL) {
        return NULL;
    }

    n->op = op;
    n->expr = e;
    n->end = pg_node_end(e);
    n->vtype = e->vtype;

    return n;
}


static pg_node_t *
pg_parse_primary(pg_parser_t *p)
{
    pg_node_t   *n, *e;
    pg_token_t  *t, tok;

    t = pg_peek(p);
    if (p->failed) {
        return NULL;
    }

    tok = *t;

    switch (tok.type) {

    case PG_T_NUMBER:
        pg_consume(p);

        n = pg_new_node(p, PG_N_NUMBER, tok.pos);
        if (n == NULL) {
            return NULL;
        }

        n->end = tok.pos + tok.len;
        n->vtype = PG_V_SCALAR;
        n->number = pg_parse_number(p, &tok);
        break;

    case PG_T_STRING:
        pg_consume(p);

        n = pg_new_node(p, PG_N_STRING, tok.pos);
        if (n == NULL) {
            return NULL;
        }

        n->end = tok.pos + tok.len;
        n->vtype = PG_V_STRING;
        break;

    case PG_T_LEFT_PAREN:
        pg_consume(p);

        e = pg_parse_expr(p, 0);
        if (e == NULL) {
            return NULL;
        }

        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (t->type != PG_T_RIGHT_PAREN) {
            return pg_unexpected(p, pg_context(p), NULL);
        }

        pg_consume(p);

        n = pg_new_node(p, PG_N_PAREN, tok.pos);
        if (n == NULL) {
            return NULL;
        }

        n->expr = e;
        n->end = t->pos + 1;
        n->vtype = e->vtype;
        break;

    case PG_T_LEFT_BRACE:
        n = pg_parse_vector_selector(p, NULL);
        break;

    default:
        if (!pg_is_metric_identifier(tok.type)) {
            return pg_unexpected(p, pg_context(p), NULL);
        }

        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (tok.type == PG_T_IDENTIFIER && t->type == PG_T_LEFT_PAREN) {
            n = pg_parse_call(p, &tok);

        } else if (pg_tok_is_aggregator(tok.type)
                   && (t->type == PG_T_LEFT_PAREN || t->type == PG_T_BY
                       || t->type == PG_T_WITHOUT))
        {
            n = pg_parse_aggregate(p, &tok);

        } else {
            n = pg_parse_vector_selector(p, &tok);
        }
        break;
    }

    if (n == NULL) {
        return NULL;
    }

    return pg_parse_postfix(p, n);
}


/* offset, @ and [range] bind to what precedes them before any operator */
static pg_node_t *
pg_parse_postfix(pg_parser_t *p, pg_node_t *n)
{
    pg_token_t  *t;

    for ( ;; ) {
        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        switch (t->type) {

        case PG_T_OFFSET:
            pg_consume(p);
            if (pg_parse_offset(p, n) != 0) {
                return NULL;
            }
            break;

        case PG_T_AT:
            pg_consume(p);
            if (pg_parse_at(p, n) != 0) {
                return NULL;
            }
            break;

        case PG_T_LEFT_BRACKET:
            pg_consume(p);
            n = pg_parse_range(p, n);
            if (n == NULL) {
                return NULL;
            }
            break;

        default:
            return n;
        }
    }
}


/* name is NULL for a selector that starts with "{" */
static pg_node_t *
pg_parse_vector_selector(pg_parser_t *p, const pg_token_t *name)
{
    pg_node_t   *vs;
    pg_token_t  *t;

    vs = pg_new_node(p, PG_N_VECTOR, name != NULL ? name->pos : p->tok.pos);
    if (vs == NULL) {
        return NULL;
    }

    vs->vtype = PG_V_VECTOR;

    if (name != NULL) {
        vs->name.data = p->input + name->pos;
        vs->name.len = name->len;
        vs->end = name->pos + name->len;
        p->nselectors++;

        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (t->type != PG_T_LEFT_BRACE) {
            return vs;
        }

    } else {
        p->nselectors++;
    }

    if (pg_parse_label_matchers(p, vs) != 0) {
        return NULL;
    }

    return vs;
}


static int
pg_parse_label_matchers(pg_parser_t *p, pg_node_t *vs)
{
    int            rc;
    size_t         cap;
    char           msg[256];
    pg_str_t       value, label;
    pg_token_t    *t, name;
    pg_matcher_t  *m, *grown;
    pg_match_op_e  op;

    /* the "{" */
    pg_consume(p);

    cap = 0;

    for ( ;; ) {
        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type == PG_T_RIGHT_BRACE) {
            break;
        }

        if (t->type != PG_T_IDENTIFIER) {
            pg_unexpected(p, "label matching", "identifier or \"}\"");
            return -1;
        }

        name = *t;
        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        switch (t->type) {
        case PG_T_EQL:
            op = PG_MATCH_EQ;
            break;
        case PG_T_NEQ:
            op = PG_MATCH_NEQ;
            break;
        case PG_T_EQL_REGEX:
            op = PG_MATCH_RE;
            break;
        case PG_T_NEQ_REGEX:
            op = PG_MATCH_NRE;
            break;
        default:
            pg_unexpected(p, "label matching", "label matching operator");
            return -1;
        }

        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type != PG_T_STRING) {
            pg_unexpected(p, "label matching", "string");
            return -1;
        }

        pg_consume(p);

        if (pg_unquote(p, t, &value) != 0) {
            return -1;
        }

        if (vs->nmatchers == cap) {
            cap = cap ? cap * 2 : 4;

            grown = pg_palloc(p, cap * sizeof(pg_matcher_t));
            if (grown == NULL) {
                return -1;
            }

            if (vs->nmatchers) {
                memcpy(grown, vs->matchers,
                       vs->nmatchers * sizeof(pg_matcher_t));
            }

            vs->matchers = grown;
        }

        m = &vs->matchers[vs->nmatchers];

        label.data = p->input + name.pos;
        label.len = name.len;

        rc = pg_matcher_init(m, op, label, value, p->alloc, msg, sizeof(msg));

        if (rc == PG_MATCHER_NOMEM) {
            pg_fail_nomem(p);
            return -1;
        }

        if (rc != PG_MATCHER_OK) {
            pg_soft_error(p, name.pos, "%s", msg);

        } else {
            vs->nmatchers++;
        }

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type == PG_T_COMMA) {
            pg_consume(p);
            continue;
        }

        if (t->type != PG_T_RIGHT_BRACE) {
            pg_unexpected(p, "label matching", "\",\" or \"}\"");
            return -1;
        }

        break;
    }

    /* the "}" */
    vs->end = p->tok.pos + 1;
    pg_consume(p);

    return 0;
}


static pg_node_t *
pg_parse_call(pg_parser_t *p, const pg_token_t *name)
{
    pg_node_t  *n;

    n = pg_new_node(p, PG_N_CALL, name->pos);
    if (n == NULL) {
        return NULL;
    }

    if (pg_parse_call_body(p, n) != 0) {
        return NULL;
    }

    n->end = p->last_closing;

    /* reported once the call is complete, as the grammar's action does */
    n->func = pg_get_function(p->input + name->pos, name->len);

    if (n->func == NULL) {
        pg_soft_error(p, name->pos, "unknown function with name \"%.*s\"",
                      (int) name->len, (const char *) p->input + name->pos);
        n->vtype = PG_V_NONE;

    } else {
        n->vtype = n->func->ret;
    }

    return n;
}


static pg_node_t *
pg_parse_aggregate(pg_parser_t *p, const pg_token_t *op)
{
    int          modifier, desired;
    pg_node_t   *n;
    pg_token_t  *t;

    n = pg_new_node(p, PG_N_AGGREGATE, op->pos);
    if (n == NULL) {
        return NULL;
    }

    n->op = op->type;
    n->vtype = PG_V_VECTOR;

    p->agg_depth++;

    /* by/without before or after the arguments */
    t = pg_peek(p);
    modifier = 0;

    if (t->type == PG_T_BY || t->type == PG_T_WITHOUT) {
        pg_consume(p);

        if (pg_parse_grouping(p, &n->matching_labels) != 0) {
            return NULL;
        }

        modifier = 1;

        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (t->type != PG_T_LEFT_PAREN) {
            return pg_unexpected(p, "aggregation", NULL);
        }
    }

    if (pg_parse_call_body(p, n) != 0) {
        return NULL;
    }

    if (!modifier) {
        /* the grammar needs the next token to see if a modifier follows */
        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (t->type == PG_T_BY || t->type == PG_T_WITHOUT) {
            pg_consume(p);

            if (pg_parse_grouping(p, &n->matching_labels) != 0) {
                return NULL;
            }
        }
    }

    p->agg_depth--;

    n->end = p->last_closing;

    /* newAggregateExpr() */
    if (n->nargs == 0) {
        pg_soft_error(p, n->start,
                      "no arguments for aggregate expression provided");
        return n;
    }

    desired = 1;
    if (n->op == PG_T_TOPK || n->op == PG_T_BOTTOMK
        || n->op == PG_T_COUNT_VALUES || n->op == PG_T_QUANTILE)
    {
        desired = 2;
        n->param = n->args[0];
    }

    if (n->nargs != (size_t) desired) {
        pg_soft_error(p, n->start, "wrong number of arguments for aggregate "
                      "expression provided, expected %d, got %zu",
                      desired, n->nargs);
        return n;
    }

    n->expr = n->args[desired - 1];

    return n;
}


/* "(" args ")" with the grammar's tolerance of trailing commas */
static int
pg_parse_call_body(pg_parser_t *p, pg_node_t *n)
{
    size_t        cap;
    size_t        comma;
    pg_node_t    *arg, **grown;
    pg_token_t   *t;

    /* the "(" */
    pg_consume(p);

    cap = 0;

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type == PG_T_RIGHT_PAREN) {
        pg_consume(p);
        return 0;
    }

    for ( ;; ) {
        arg = pg_parse_expr(p, 0);
        if (arg == NULL) {
            return -1;
        }

        if (n->nargs == cap) {
            cap = cap ? cap * 2 : 4;

            grown = pg_palloc(p, cap * sizeof(pg_node_t *));
            if (grown == NULL) {
                return -1;
            }

            if (n->nargs) {
                memcpy(grown, n->args, n->nargs * sizeof(pg_node_t *));
            }

            n->args = grown;
        }

        n->args[n->nargs++] = arg;

        for ( ;; ) {
            t = pg_peek(p);
            if (p->failed) {
                return -1;
            }

            if (t->type == PG_T_RIGHT_PAREN) {
                pg_consume(p);
                return 0;
            }

            if (t->type != PG_T_COMMA) {
                pg_unexpected(p, pg_context(p), NULL);
                return -1;
            }

            comma = t->pos;
            pg_consume(p);

            t = pg_peek(p);
            if (p->failed) {
                return -1;
            }

            if (pg_starts_expr(t->type)) {
                break;
            }

            /* the args are reduced, complaining, and a "," may follow */
            pg_soft_error(p, comma,
                          "trailing commas not allowed in function call args");
        }
    }
}


/* "(" label, ... ")" after by, without, on, ignoring, group_x */
static int
pg_parse_grouping(pg_parser_t *p, pg_label_list_t *list)
{
    size_t       cap;
    pg_str_t    *grown;
    pg_token_t  *t;

    list->labels = NULL;
    list->n = 0;
    cap = 0;

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type != PG_T_LEFT_PAREN) {
        pg_unexpected(p, "grouping opts", "\"(\"");
        return -1;
    }

    pg_consume(p);

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type == PG_T_RIGHT_PAREN) {
        pg_consume(p);
        return 0;
    }

    for ( ;; ) {
        if (!pg_is_maybe_label(t->type)) {
            pg_unexpected(p, "grouping opts", "label");
            return -1;
        }

        if (!pg_is_label(p->input + t->pos, t->len)) {
            /* reported from an action: the parse goes on */
            pg_unexpected(p, "grouping opts", "label");
            p->failed = 0;
        }

        if (list->n == cap) {
            cap = cap ? cap * 2 : 4;

            grown = pg_palloc(p, cap * sizeof(pg_str_t));
            if (grown == NULL) {
                return -1;
            }

            if (list->n) {
                memcpy(grown, list->labels, list->n * sizeof(pg_str_t));
            }

            list->labels = grown;
        }

        list->labels[list->n].data = p->input + t->pos;
        list->labels[list->n].len = t->len;
        list->n++;

        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type == PG_T_RIGHT_PAREN) {
            pg_consume(p);
            return 0;
        }

        if (t->type != PG_T_COMMA) {
            pg_unexpected(p, "grouping opts", "\",\" or \")\"");
            return -1;
        }

        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type == PG_T_RIGHT_PAREN) {
            pg_consume(p);
            return 0;
        }
    }
}


/* [bool] [on|ignoring (...) [group_left|group_right [(...)]]] */
static int
pg_parse_bin_modifier(pg_parser_t *p, pg_node_t *n)
{
    pg_token_t  *t;

    n->matching = 1;
    n->card = PG_CARD_ONE_TO_ONE;

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type == PG_T_BOOL) {
        n->return_bool = 1;
        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }
    }

    if (t->type != PG_T_ON && t->type != PG_T_IGNORING) {
        return 0;
    }

    n->on = t->type == PG_T_ON;
    pg_consume(p);

    if (pg_parse_grouping(p, &n->matching_labels) != 0) {
        return -1;
    }

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type != PG_T_GROUP_LEFT && t->type != PG_T_GROUP_RIGHT) {
        return 0;
    }

    n->card = t->type == PG_T_GROUP_LEFT ? PG_CARD_MANY_TO_ONE
                                         : PG_CARD_ONE_TO_MANY;
    pg_consume(p);

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    /* a "(" here opens the labels, never the right-hand side */
    if (t->type == PG_T_LEFT_PAREN) {
        return pg_parse_grouping(p, &n->include);
    }

    /*
     * The grammar's state here holds an error rule, so what cannot start
     * the right-hand side is a grouping error, not an expression one.
     */
    if (!pg_starts_expr(t->type)) {
        pg_unexpected(p, "grouping opts", "\"(\"");
        return -1;
    }

    return 0;
}


static int
pg_parse_offset(pg_parser_t *p, pg_node_t *n)
{
    int          neg;
    int64_t      ms;
    pg_token_t  *t, tok;

    neg = 0;

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type == PG_T_SUB) {
        neg = 1;
        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }
    }

    if (t->type != PG_T_DURATION) {
        pg_unexpected(p, "offset", "duration");
        return -1;
    }

    tok = *t;
    pg_consume(p);

    ms = 0;
    (void) pg_parse_duration(p, &tok, &ms);

    pg_add_offset(p, n, neg ? -ms : ms);

    return 0;
}


static int
pg_parse_at(pg_parser_t *p, pg_node_t *n)
{
    int          neg;
    double       ts;
    pg_tok_e     pre;
    pg_token_t  *t, tok;

    t = pg_peek(p);
    if (p->failed) {
        return -1;
    }

    if (t->type == PG_T_START || t->type == PG_T_END) {
        pre = t->type;
        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type != PG_T_LEFT_PAREN) {
            pg_unexpected(p, "@", "timestamp");
            return -1;
        }

        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }

        if (t->type != PG_T_RIGHT_PAREN) {
            pg_unexpected(p, "@", "timestamp");
            return -1;
        }

        pg_consume(p);

        pg_set_at_preprocessor(p, n, pre);

        return 0;
    }

    neg = 0;

    if (t->type == PG_T_ADD || t->type == PG_T_SUB) {
        neg = t->type == PG_T_SUB;
        pg_consume(p);

        t = pg_peek(p);
        if (p->failed) {
            return -1;
        }
    }

    if (t->type != PG_T_NUMBER) {
        pg_unexpected(p, "@", "timestamp");
        return -1;
    }

    tok = *t;
    pg_consume(p);

    ts = pg_parse_number(p, &tok);

    pg_set_timestamp(p, n, neg ? -ts : ts);

    return 0;
}


/* "[" range "]" or "[" range ":" [step] "]" */
static pg_node_t *
pg_parse_range(pg_parser_t *p, pg_node_t *n)
{
    int64_t      range, step;
    size_t       bracket;
    pg_node_t   *r;
    pg_token_t  *t, tok;

    bracket = p->tok.pos;

    t = pg_peek(p);
    if (p->failed) {
        return NULL;
    }

    if (t->type != PG_T_DURATION) {
        return pg_unexpected(p, "subquery selector", "duration");
    }

    tok = *t;
    pg_consume(p);

    range = 0;
    (void) pg_parse_duration(p, &tok, &range);

    t = pg_peek(p);
    if (p->failed) {
        return NULL;
    }

    if (t->type == PG_T_RIGHT_BRACKET) {
        pg_consume(p);

        if (n->type != PG_N_VECTOR) {
            pg_soft_error(p, bracket, "ranges only allowed for vector "
                          "selectors");

        } else if (n->offset != 0) {
            pg_soft_error(p, bracket, "no offset modifiers allowed before "
                          "range");

        } else if (n->has_timestamp) {
            pg_soft_error(p, bracket, "no @ modifiers allowed before range");
        }

        r = pg_new_node(p, PG_N_MATRIX, pg_node_start(n));
        if (r == NULL) {
            return NULL;
        }

        r->expr = n;
        r->end = p->last_closing;
        r->vtype = PG_V_MATRIX;

        return r;
    }

    if (t->type != PG_T_COLON) {
        return pg_unexpected(p, "subquery or range", "\":\" or \"]\"");
    }

    pg_consume(p);

    t = pg_peek(p);
    if (p->failed) {
        return NULL;
    }

    if (t->type == PG_T_DURATION) {
        tok = *t;
        pg_consume(p);

        step = 0;
        (void) pg_parse_duration(p, &tok, &step);

        t = pg_peek(p);
        if (p->failed) {
            return NULL;
        }

        if (t->type != PG_T_RIGHT_BRACKET) {
            return pg_unexpected(p, "subquery selector", "\"]\"");
        }

    } else if (t->type != PG_T_RIGHT_BRACKET) {
        return pg_unexpected(p, "subquery selector", "duration or \"]\"");
    }

    r = pg_new_node(p, PG_N_SUBQUERY, pg_node_start(n));
    if (r == NULL) {
        return NULL;
    }

    r->expr = n;
    r->end = t->pos + 1;
    r->vtype = PG_V_MATRIX;

    pg_consume(p);

    return r;
}


/* model.ParseDuration(), then "duration must be greater than 0" */
static int
pg_parse_duration(pg_parser_t *p, const pg_token_t *t, int64_t *ms)
{
    int             unit, last;
    size_t          i, j, len;
    int64_t         n, mult, limit, dur;
    const uint8_t  *s;
    static const int64_t  mults[] = {
        31536000000LL, 604800000LL, 86400000LL, 3600000LL, 60000LL,
        1000LL, 1LL
    };

    s = p->input + t->pos;
    len = t->len;
    dur = 0;
    last = -1;

    for (i = 0; i < len; /* void */) {

        for (j = i; j < len && s[j] >= '0' && s[j] <= '9'; j++) {
            /* void */
        }

        if (j == i || j == len) {
            goto invalid;
        }

        /* y w d h m s ms, each at most once and in this order */
        switch (s[j]) {
        case 'y':
            unit = 0;
            break;
        case 'w':
            unit = 1;
            break;
        case 'd':
            unit = 2;
            break;
        case 'h':
            unit = 3;
            break;
        case 'm':
            unit = (j + 1 < len && s[j + 1] == 's') ? 6 : 4;
            break;
        case 's':
            unit = 5;
            break;
        default:
            goto invalid;
        }

        if (unit <= last) {
            goto invalid;
        }

        last = unit;
        mult = mults[unit];

        /* strconv.Atoi saturates; Go then finds it out of range */
        n = 0;
        for ( /* void */ ; i < j; i++) {
            if (n > (INT64_MAX - 9) / 10) {
                n = INT64_MAX;
                break;
            }
            n = n * 10 + (s[i] - '0');
        }

        limit = INT64_MAX / mult / 1000000;

        if (n > limit || dur > INT64_MAX / 1000000 - n * mult) {
            pg_soft_error(p, t->pos, "duration out of range");
            return -1;
        }

        dur += n * mult;
        i = j + (unit == 6 ? 2 : 1);
    }

    if (dur == 0) {
        pg_soft_error(p, t->pos, "duration must be greater than 0");
        return -1;
    }

    *ms = dur;

    return 0;

invalid:

    pg_soft_error(p, t->pos, "not a valid duration string: \"%.*s\"",
                  (int) len, (const char *) s);

    return -1;
}


/*
 * strconv.ParseInt(s, 0, 64), and strconv.ParseFloat(s, 64) where that
 * fails, on what the lexer accepted as a number.
 */
static double
pg_parse_number(pg_parser_t *p, const pg_token_t *t)
{
    int             base, ok;
    size_t          i, len, digits, exp_digits;
    uint64_t        v, d;
    double          f;
    char           *buf;
    const uint8_t  *s;
    const char     *why;

    s = p->input + t->pos;
    len = t->len;

    if (len == 3 && pg_ascii_caseeq("inf", s, 3)) {
        return INFINITY;
    }

    if (len == 3 && pg_ascii_caseeq("nan", s, 3)) {
        return NAN;
    }

    /* ParseInt, base 0 */
    base = 10;
    i = 0;

    if (len >= 1 && s[0] == '0') {
        if (len >= 3 && (s[1] | 0x20) == 'x') {
            base = 16;
            i = 2;

        } else {
            base = 8;
            i = 1;
        }
    }

    ok = 1;
    v = 0;

    for ( /* void */ ; i < len; i++) {
        d = s[i] >= '0' && s[i] <= '9' ? (uint64_t) (s[i] - '0')
            : (s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'f'
              ? (uint64_t) ((s[i] | 0x20) - 'a' + 10) : 99;

        if (d >= (uint64_t) base || v > (UINT64_MAX - d) / base) {
            ok = 0;
            break;
        }

        v = v * base + d;
    }

    if (ok && v <= INT64_MAX) {
        return (double) v;
    }

    /* ParseFloat: decimal only, hex floats need a 'p' the lexer never takes */
    why = "invalid syntax";
    digits = 0;
    exp_digits = 1;

    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        digits++;
    }

    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            digits++;
        }
    }

    if (i < len && (s[i] | 0x20) == 'e') {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            i++;
        }

        for (exp_digits = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            exp_digits++;
        }
    }

    if (i == len && digits > 0 && exp_digits > 0) {
        buf = pg_palloc(p, len + 1);
        if (buf == NULL) {
            return 0;
        }

        memcpy(buf, s, len);
        buf[len] = '\0';

        errno = 0;
        f = strtod(buf, NULL);

        if (!(errno == ERANGE && isinf(f))) {
            return f;
        }

        why = "value out of range";
    }

    pg_soft_error(p, t->pos, "error parsing number: strconv.ParseFloat: "
                  "parsing \"%.*s\": %s", (int) len, (const char *) s, why);

    return 0;
}


/* strutil.Unquote() of a string the lexer has already validated */
static int
pg_unquote(pg_parser_t *p, const pg_token_t *t, pg_str_t *out)
{
    int             n;
    size_t          i, len;
    uint8_t        *buf, *o, quote, esc;
    uint32_t        v;
    const uint8_t  *s;

    s = p->input + t->pos + 1;
    len = t->len - 2;
    quote = s[-1];

    if (quote == '`' || memchr(s, '\\', len) == NULL) {
        out->data = s;
        out->len = len;
        return 0;
    }

    buf = pg_palloc(p, len);
    if (buf == NULL) {
        return -1;
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
        if (esc == 'x' || v < 0x80) {
            *o++ = (uint8_t) v;

        } else if (v < 0x800) {
            *o++ = (uint8_t) (0xc0 | (v >> 6));
            *o++ = (uint8_t) (0x80 | (v & 0x3f));

        } else if (v < 0x10000) {
            *o++ = (uint8_t) (0xe0 | (v >> 12));
            *o++ = (uint8_t) (0x80 | ((v >> 6) & 0x3f));
            *o++ = (uint8_t) (0x80 | (v & 0x3f));

        } else {
            *o++ = (uint8_t) (0xf0 | (v >> 18));
            *o++ = (uint8_t) (0x80 | ((v >> 12) & 0x3f));
            *o++ = (uint8_t) (0x80 | ((v >> 6) & 0x3f));
            *o++ = (uint8_t) (0x80 | (v & 0x3f));
        }
    }

    out->data = buf;
    out->len = o - buf;

    return 0;
}


/* parse.go addOffset() */
static void
pg_add_offset(pg_parser_t *p, pg_node_t *n, int64_t offset)
{
    pg_node_t  *vs;

    switch (n->type) {

    case PG_N_VECTOR:
        vs = n;
        break;

    case PG_N_MATRIX:
        vs = n->expr;
        if (vs->type != PG_N_VECTOR) {
            pg_soft_error(p, pg_node_start(n), "ranges only allowed for "
                          "vector selectors");
            return;
        }
        break;

    case PG_N_SUBQUERY:
        vs = n;
        break;

    default:
        pg_soft_error(p, pg_node_start(n), "offset modifier must be preceded "
                      "by an instant vector selector or range vector "
                      "selector or a subquery");
        return;
    }

    if (vs->offset != 0) {
        pg_soft_error(p, pg_node_start(n), "offset may not be set multiple "
                      "times");

    } else {
        vs->offset = offset;
    }

    n->end = p->last_closing;
}


/* parse.go setTimestamp() */
static void
pg_set_timestamp(pg_parser_t *p, pg_node_t *n, double ts)
{
    pg_node_t  *vs;

    if (isinf(ts) || isnan(ts) || ts >= 9223372036854775807.0
        || ts <= -9223372036854775808.0)
    {
        if (isnan(ts)) {
            pg_soft_error(p, pg_node_start(n), "timestamp out of bounds for "
                          "@ modifier: NaN");

        } else if (isinf(ts)) {
            pg_soft_error(p, pg_node_start(n), "timestamp out of bounds for "
                          "@ modifier: %sInf", ts > 0 ? "+" : "-");

        } else {
            pg_soft_error(p, pg_node_start(n), "timestamp out of bounds for "
                          "@ modifier: %f", ts);
        }
    }

    vs = pg_at_target(p, n);
    if (vs == NULL) {
        return;
    }

    vs->has_timestamp = 1;
    n->end = p->last_closing;
}


static void
pg_set_at_preprocessor(pg_parser_t *p, pg_node_t *n, pg_tok_e op)
{
    pg_node_t  *vs;

    vs = pg_at_target(p, n);
    if (vs == NULL) {
        return;
    }

    vs->start_or_end = op;
    n->end = p->last_closing;
}


/* getAtModifierVars(): the node that carries the @ */
static pg_node_t *
pg_at_target(pg_parser_t *p, pg_node_t *n)
{
    pg_node_t  *vs;

    switch (n->type) {

    case PG_N_VECTOR:
    case PG_N_SUBQUERY:
        vs = n;
        break;

    case PG_N_MATRIX:
        vs = n->expr;
        if (vs->type != PG_N_VECTOR) {
            pg_soft_error(p, pg_node_start(n), "ranges only allowed for "
                          "vector selectors");
            return NULL;
        }
        break;

    default:
        pg_soft_error(p, pg_node_start(n), "@ modifier must be preceded by "
                      "an instant vector selector or range vector selector "
                      "or a subquery");
        return NULL;
    }

    if (vs->has_timestamp || vs->start_or_end == PG_T_START
        || vs->start_or_end == PG_T_END)
    {
        pg_soft_error(p, pg_node_start(n), "@ <timestamp> may not be set "
                      "multiple times");
        return NULL;
    }

    return vs;
}


/*
 * parse.go checkAST(): the type checks, in Prometheus' order.  Recursion
 * follows the parser's nesting, bounded by PG_PROMQL_MAX_DEPTH, except
 * for chains of binary operators, which are walked down their left side.
 */
static pg_vtype_e
pg_check(pg_parser_t *p, pg_node_t *n)
{
    size_t      i, na, nmax, at;
    pg_str_t    empty;
    pg_vtype_e  t, want;
    char        ctx[64], q1[128], q2[128];

    switch (n->type) {

    case PG_N_AGGREGATE:
        pg_expect_type(p, n->expr, PG_V_VECTOR, "aggregation expression");

        if (n->op == PG_T_TOPK || n->op == PG_T_BOTTOMK
            || n->op == PG_T_QUANTILE)
        {
            pg_expect_type(p, n->param, PG_V_SCALAR, "aggregation parameter");
        }

        if (n->op == PG_T_COUNT_VALUES) {
            pg_expect_type(p, n->param, PG_V_STRING, "aggregation parameter");
        }
        break;

    case PG_N_BINARY:
        return pg_check_binary(p, n);

    case PG_N_CALL:
        na = n->func->nargs;

        if (n->func->variadic == 0) {
            if (na != n->nargs) {
                pg_soft_error(p, n->start, "expected %zu argument(s) in call "
                              "to \"%s\", got %zu", na, n->func->name,
                              n->nargs);
            }

        } else {
            na--;
            nmax = na + n->func->variadic;

            if (na > n->nargs) {
                pg_soft_error(p, n->start, "expected at least %zu "
                              "argument(s) in call to \"%s\", got %zu", na,
                              n->func->name, n->nargs);

            } else if (n->func->variadic > 0 && nmax < n->nargs) {
                pg_soft_error(p, n->start, "expected at most %zu "
                              "argument(s) in call to \"%s\", got %zu", nmax,
                              n->func->name, n->nargs);
            }
        }

        snprintf(ctx, sizeof(ctx), "call to function \"%s\"",
                 n->func->name);

        for (i = 0; i < n->nargs; i++) {
            at = i;

            if (at >= (size_t) n->func->nargs) {
                if (n->func->variadic == 0) {
                    break;
                }
                at = n->func->nargs - 1;
            }

            want = n->func->args[at];
            pg_expect_type(p, n->args[i], want, ctx);
        }
        break;

    case PG_N_PAREN:
        (void) pg_check(p, n->expr);
        break;

    case PG_N_UNARY:
        t = pg_check(p, n->expr);

        if (t != PG_V_SCALAR && t != PG_V_VECTOR) {
            pg_soft_error(p, n->start, "unary expression only allowed on "
                          "expressions of type scalar or instant vector, "
                          "got \"%s\"", pg_vtype_doc(t));
        }
        break;

    case PG_N_SUBQUERY:
        t = pg_check(p, n->expr);

        if (t != PG_V_VECTOR) {
            pg_soft_error(p, n->start, "subquery is only allowed on instant "
                          "vector, got %s instead", pg_vtype_name(t));
        }
        break;

    case PG_N_MATRIX:
        (void) pg_check(p, n->expr);
        break;

    case PG_N_VECTOR:
        if (n->name.len) {
            for (i = 0; i < n->nmatchers; i++) {
                if (n->matchers[i].name.len == 8
                    && memcmp(n->matchers[i].name.data, "__name__", 8) == 0)
                {
                    pg_go_quote(q1, sizeof(q1), n->name.data, n->name.len,
                                '"');
                    pg_go_quote(q2, sizeof(q2), n->matchers[i].value.data,
                                n->matchers[i].value.len, '"');
                    pg_soft_error(p, n->start, "metric name must not be set "
                                  "twice: %s or %s", q1, q2);
                }
            }
            break;
        }

        /* a selector must not select everything by accident */
        empty.data = (const uint8_t *) "";
        empty.len = 0;

        for (i = 0; i < n->nmatchers; i++) {
            if (!pg_matcher_matches(&n->matchers[i], empty)) {
                break;
            }
        }

        if (i == n->nmatchers) {
            pg_soft_error(p, n->start, "vector selector must contain at "
                          "least one non-empty matcher");
        }
        break;

    default:
        break;
    }

    return n->vtype;
}


static pg_vtype_e
pg_check_binary(pg_parser_t *p, pg_node_t *n)
{
    size_t       depth, i;
    pg_node_t   *b, **spine;
    pg_vtype_e   lt;

    /* collect the left spine: a op b op c ... */
    depth = 0;
    for (b = n; b->type == PG_N_BINARY; b = b->lhs) {
        depth++;
    }

    spine = pg_palloc(p, depth * sizeof(pg_node_t *));
    if (spine == NULL) {
        return PG_V_NONE;
    }

    i = depth;
    for (b = n; b->type == PG_N_BINARY; b = b->lhs) {
        spine[--i] = b;
    }

    lt = pg_check(p, spine[0]->lhs);

    for (i = 0; i < depth; i++) {
        pg_check_binary_node(p, spine[i], lt, pg_check(p, spine[i]->rhs));
        lt = spine[i]->vtype;
    }

    return n->vtype;
}


static void
pg_check_binary_node(pg_parser_t *p, pg_node_t *n, pg_vtype_e lt,
    pg_vtype_e rt)
{
    size_t       i, j, op_start;
    const char  *op;

    /* where the operator is: after the left side, blanks skipped */
    op_start = pg_node_end(n->lhs);
    while (op_start < p->len && (p->input[op_start] == ' '
                                 || p->input[op_start] == '\t'
                                 || p->input[op_start] == '\n'
                                 || p->input[op_start] == '\r'))
    {
        op_start++;
    }

    op = pg_tok_text(n->op);

    if (n->return_bool && !pg_tok_is_comparison(n->op)) {
        pg_soft_error(p, op_start, "bool modifier can only be used on "
                      "comparison operators");
    }

    if (pg_tok_is_comparison(n->op) && !n->return_bool
        && n->rhs->vtype == PG_V_SCALAR && n->lhs->vtype == PG_V_SCALAR)
    {
        pg_soft_error(p, op_start, "comparisons between scalars must use "
                      "BOOL modifier");
    }

    if (pg_tok_is_set_operator(n->op) && n->card == PG_CARD_ONE_TO_ONE) {
        n->card = PG_CARD_MANY_TO_MANY;
    }

    for (i = 0; i < n->matching_labels.n; i++) {
        for (j = 0; j < n->include.n; j++) {
            if (n->on && pg_str_eq(n->matching_labels.labels[i],
                                   n->include.labels[j]))
            {
                pg_soft_error(p, op_start, "label \"%.*s\" must not occur in "
                              "ON and GROUP clause at once",
                              (int) n->matching_labels.labels[i].len,
                              (const char *) n->matching_labels.labels[i].data);
            }
        }
    }

    if (lt != PG_V_SCALAR && lt != PG_V_VECTOR) {
        pg_soft_error(p, pg_node_start(n->lhs), "binary expression must "
                      "contain only scalar and instant vector types");
    }

    if (rt != PG_V_SCALAR && rt != PG_V_VECTOR) {
        pg_soft_error(p, pg_node_start(n->rhs), "binary expression must "
                      "contain only scalar and instant vector types");
    }

    if (lt != PG_V_VECTOR || rt != PG_V_VECTOR) {
        if (n->matching) {
            if (n->matching_labels.n > 0) {
                pg_soft_error(p, n->start, "vector matching only allowed "
                              "between instant vectors");
            }
            n->matching = 0;
        }

    } else if (pg_tok_is_set_operator(n->op)) {
        if (n->card == PG_CARD_ONE_TO_MANY
            || n->card == PG_CARD_MANY_TO_ONE)
        {
            pg_soft_error(p, n->start, "no grouping allowed for \"%s\" "
                          "operation", op);
        }

        if (n->card != PG_CARD_MANY_TO_MANY) {
            pg_soft_error(p, n->start, "set operations must always be "
                          "many-to-many");
        }
    }

    if ((lt == PG_V_SCALAR || rt == PG_V_SCALAR)
        && pg_tok_is_set_operator(n->op))
    {
        pg_soft_error(p, n->start, "set operator \"%s\" not allowed in "
                      "binary scalar expression", op);
    }
}


static void
pg_expect_type(pg_parser_t *p, pg_node_t *n, pg_vtype_e want,
    const char *context)
{
    pg_vtype_e  t;

    t = pg_check(p, n);

    if (t != want) {
        pg_soft_error(p, pg_node_start(n), "expected type %s in %s, got %s",
                      pg_vtype_doc(want), context, pg_vtype_doc(t));
    }
}


static size_t
pg_node_start(const pg_node_t *n)
{
    return n->start;
}


static size_t
pg_node_end(const pg_node_t *n)
{
    return n->end;
}


/* parser.DocumentedType() */
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


/* ItemType.String() of the operators, as %q shows them */
static const char *
pg_tok_text(pg_tok_e t)
{
    switch (t) {
    case PG_T_LAND:
        return "and";
    case PG_T_LOR:
        return "or";
    case PG_T_LUNLESS:
        return "unless";
    default:
        return "";
    }
}


/*
 * ExtractSelectors(): Inspect() walks depth first, parents before
 * children, an aggregation's expression before its parameter.  An explicit
 * stack keeps long operator chains off the C stack.
 */
static int
pg_extract(pg_parser_t *p, pg_node_t *root, pg_selector_set_t *set)
{
    size_t          top, i, k;
    pg_node_t      *n, **stack;
    pg_matcher_t   *m;
    pg_selector_t  *sel;
    pg_str_t        name;
    int             rc;

    if (p->nselectors == 0) {
        return 0;
    }

    set->selectors = pg_palloc(p, p->nselectors * sizeof(pg_selector_t));
    stack = pg_palloc(p, (p->nnodes + 1) * sizeof(pg_node_t *));

    if (set->selectors == NULL || stack == NULL) {
        return -1;
    }

    top = 0;
    stack[top++] = root;

    while (top > 0) {
        n = stack[--top];

        /* children go on the stack last first */
        switch (n->type) {

        case PG_N_VECTOR:
            sel = &set->selectors[set->nselectors++];
            sel->nmatchers = n->nmatchers + (n->name.len ? 1 : 0);

            m = pg_palloc(p, (sel->nmatchers ? sel->nmatchers : 1)
                             * sizeof(pg_matcher_t));
            if (m == NULL) {
                return -1;
            }

            sel->matchers = m;
            k = 0;

            if (n->name.len) {
                name.data = (const uint8_t *) "__name__";
                name.len = 8;

                rc = pg_matcher_init(&m[k++], PG_MATCH_EQ, name, n->name,
                                     p->alloc, NULL, 0);
                if (rc != PG_MATCHER_OK) {
                    return -1;
                }
            }

            for (i = 0; i < n->nmatchers; i++) {
                m[k++] = n->matchers[i];
            }
            break;

        case PG_N_AGGREGATE:
            if (n->param != NULL) {
                stack[top++] = n->param;
            }
            if (n->expr != NULL) {
                stack[top++] = n->expr;
            }
            break;

        case PG_N_BINARY:
            stack[top++] = n->rhs;
            stack[top++] = n->lhs;
            break;

        case PG_N_CALL:
            for (i = n->nargs; i > 0; i--) {
                stack[top++] = n->args[i - 1];
            }
            break;

        case PG_N_MATRIX:
        case PG_N_SUBQUERY:
        case PG_N_PAREN:
        case PG_N_UNARY:
            stack[top++] = n->expr;
            break;

        default:
            break;
        }
    }

    return 0;
}


static const pg_func_t *
pg_get_function(const uint8_t *name, size_t len)
{
    size_t  i;

    /* case-sensitive, as Go's map lookup */
    for (i = 0; pg_functions[i].name != NULL; i++) {
        if (strlen(pg_functions[i].name) == len
            && memcmp(pg_functions[i].name, name, len) == 0)
        {
            return &pg_functions[i];
        }
    }

    return NULL;
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


/* ASCII only: Go's unicode.IsDigit would take other scripts' digits */
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


static int
pg_is_label(const uint8_t *s, size_t len)
{
    size_t  i;

    if (len == 0 || !pg_is_alpha(s[0])) {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (!pg_is_alnum(s[i])) {
            return 0;
        }
    }

    return 1;
}


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
    size_t  n;

    if (p[0] < 0x80) {
        *r = p[0];
        return 1;
    }

    n = (p[0] >= 0xc2 && p[0] <= 0xdf) ? 2
        : (p[0] >= 0xe0 && p[0] <= 0xef) ? 3
        : (p[0] >= 0xf0 && p[0] <= 0xf4) ? 4 : 0;

    if (n == 0 || len < n || !pg_utf8_valid(p, n)) {
        *r = 0xfffd;
        return 1;
    }

    if (n == 2) {
        *r = ((p[0] & 0x1f) << 6) | (p[1] & 0x3f);

    } else if (n == 3) {
        *r = ((p[0] & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);

    } else {
        *r = ((p[0] & 0x07) << 18) | ((p[1] & 0x3f) << 12)
             | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
    }

    return n;
}
