/*
 * PromQL selector extraction (src/core/pg_promql.c) and the matchers it
 * builds.  Every expectation in the table below was checked against
 * Prometheus 3.5.3's parser (promtool promql format, the ParseExpr that
 * /api/v1/query_exemplars runs): the same queries are refused with the
 * same "line:col: parse error: ..." text, and accepted ones are accepted,
 * their selectors in Prometheus' matcher order (a metric name written
 * outside the braces last).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pg_promql.h"


/* malloc behind a pg_allocator_t, all freed at once, with a cap */
typedef struct test_block_s  test_block_t;

struct test_block_s {
    test_block_t   *next;
};


typedef struct {
    test_block_t   *blocks;
    size_t          used;
    size_t          cap;
} test_arena_t;


typedef struct {
    const char     *query;
    const char     *expect;       /* selectors, space separated, or error */
} test_case_t;


static const test_case_t  cases[] = {
    { "http_requests_total",
      "{__name__=\"http_requests_total\"}" },
    { "http_requests_total{job=~\"api.*\"}",
      "{job=~\"api.*\",__name__=\"http_requests_total\"}" },
    { "{__name__=\"http_requests_total\",job=\"api\"}",
      "{__name__=\"http_requests_total\",job=\"api\"}" },
    { "{__name__=~\"a|b\"}",
      "{__name__=~\"a|b\"}" },
    { "{__name__=~\"a|b\", job!=\"\"}",
      "{__name__=~\"a|b\",job!=\"\"}" },
    { "foo:bar:rate5m{instance=\"x:9090\"}",
      "{instance=\"x:9090\",__name__=\"foo:bar:rate5m\"}" },
    { "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_sec"
      "onds_bucket{job=~\"api.*\"}[5m])))",
      "{job=~\"api.*\",__name__=\"http_request_duration_seconds_bucket\"}" },
    { "sum(rate(x[1m])) / ignoring(code) group_left sum(rate(y[1m]))",
      "{__name__=\"x\"} {__name__=\"y\"}" },
    { "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / sum by"
      " (job) (rate(http_requests_total[5m])) > 0.05",
      "{code=~\"5..\",__name__=\"http_requests_total\"} {__name__=\"http_re"
      "quests_total\"}" },
    { "topk(5, sum without (instance) (rate(node_cpu_seconds_total{mode!=\""
      "idle\"}[1m])))",
      "{mode!=\"idle\",__name__=\"node_cpu_seconds_total\"}" },
    { "count_values(\"version\", build_info)",
      "{__name__=\"build_info\"}" },
    { "quantile(0.9, scalar(bar) * foo)",
      "{__name__=\"bar\"} {__name__=\"foo\"}" },
    { "bottomk(scalar(k), foo)",
      "{__name__=\"foo\"} {__name__=\"k\"}" },
    { "label_replace(up{job=\"api\"}, \"host\", \"$1\", \"instance\", \"(.*"
      "):.*\")",
      "{job=\"api\",__name__=\"up\"}" },
    { "label_join(up, \"x\", \",\", \"a\", \"b\", \"c\")",
      "{__name__=\"up\"}" },
    { "max_over_time(rate(foo[5m])[1h:5m])",
      "{__name__=\"foo\"}" },
    { "rate(foo[5m:])",
      "{__name__=\"foo\"}" },
    { "foo[5m:1m] offset -1h",
      "{__name__=\"foo\"}" },
    { "foo offset 1h30m",
      "{__name__=\"foo\"}" },
    { "foo offset -5m",
      "{__name__=\"foo\"}" },
    { "rate(foo[5m] offset 1w)",
      "{__name__=\"foo\"}" },
    { "foo @ 1609746000",
      "{__name__=\"foo\"}" },
    { "rate(foo[5m] @ end())",
      "{__name__=\"foo\"}" },
    { "foo @ start() offset 5m",
      "{__name__=\"foo\"}" },
    { "min_over_time(foo[1y2w3d4h5m6s7ms])",
      "{__name__=\"foo\"}" },
    { "-foo",
      "{__name__=\"foo\"}" },
    { "- - foo",
      "{__name__=\"foo\"}" },
    { "+foo * -bar ^ 2",
      "{__name__=\"foo\"} {__name__=\"bar\"}" },
    { "foo and on(a) bar or baz unless qux",
      "{__name__=\"foo\"} {__name__=\"bar\"} {__name__=\"baz\"} {__name__="
      "\"qux\"}" },
    { "a > bool 1",
      "{__name__=\"a\"}" },
    { "a == on(x) group_right(y) b",
      "{__name__=\"a\"} {__name__=\"b\"}" },
    { "(((((foo)))))",
      "{__name__=\"foo\"}" },
    { "SUM BY (x) (Foo) OR Sum(bar)",
      "{__name__=\"Foo\"} {__name__=\"bar\"}" },
    { "foo and and",
      "{__name__=\"foo\"} {__name__=\"and\"}" },
    { "offset offset 5m",
      "{__name__=\"offset\"}" },
    { "sum + by",
      "{__name__=\"sum\"} {__name__=\"by\"}" },
    { "vector(1)",
      "" },
    { "1 + 1",
      "" },
    { "time() - 60",
      "" },
    { "scalar(foo)",
      "{__name__=\"foo\"}" },
    { "\"string\"",
      "" },
    { "sum(rate(foo[5m])) # a comment",
      "{__name__=\"foo\"}" },
    { "# leading comment",
      "1:1: parse error: no expression found in input" },
    { "sum(\n  rate(foo[5m])   # per-second\n)",
      "{__name__=\"foo\"}" },
    { "foo{a=\"\\a\\b\\f\\n\\r\\t\\v\\\\\\\"\"}",
      "{a=\"\\a\\b\\f\\n\\r\\t\\v\\\\\\\"\",__name__=\"foo\"}" },
    { "foo{a='it\\'s'}",
      "{a=\"it's\",__name__=\"foo\"}" },
    { "foo{a=`raw \\n \"text\"`}",
      "{a=\"raw \\\\n \\\"text\\\"\",__name__=\"foo\"}" },
    { "foo{a=\"\\x41\\101\\u00e9\\U0001F600\"}",
      "{a=\"AA\303\251\360\237\230\200\",__name__=\"foo\"}" },
    { "foo{a=\"\346\227\245\346\234\254\350\252\236\", b=~\"\303\251+\"}",
      "{a=\"\346\227\245\346\234\254\350\252\236\",b=~\"\303\251+\",__name_"
      "_=\"foo\"}" },
    { "foo{a=\"\",b!=\"\",c=~\"x\"}",
      "{a=\"\",b!=\"\",c=~\"x\",__name__=\"foo\"}" },
    { "foo{a=\"b\",}",
      "{a=\"b\",__name__=\"foo\"}" },
    { "foo{job=~\"api.*\", job!~\"api-canary.*\"}",
      "{job=~\"api.*\",job!~\"api-canary.*\",__name__=\"foo\"}" },
    { "{a=~\".+\"}",
      "{a=~\".+\"}" },
    { "foo{}",
      "{__name__=\"foo\"}" },
    { "{}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "{a=\"\"}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "{a=~\".*\"}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "{a!~\".+\"}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "sum by",
      "1:7: parse error: unexpected end of input in grouping opts, expected"
      " \"(\"" },
    { "sum by (a b) (x)",
      "1:11: parse error: unexpected identifier \"b\" in grouping opts, exp"
      "ected \",\" or \")\"" },
    { "sum(x) by (a,,b)",
      "1:14: parse error: unexpected \",\" in grouping opts, expected label" },
    { "rate(x[5m]",
      "1:11: parse error: unclosed left parenthesis" },
    { "rate(x[5m)]",
      "1:10: parse error: unexpected \")\" in subquery or range, expected "
      "\":\" or \"]\"" },
    { "foo[5x]",
      "1:5: parse error: bad number or duration syntax: \"5\"" },
    { "foo[0s]",
      "1:5: parse error: duration must be greater than 0" },
    { "foo[1.5h]",
      "1:5: parse error: unknown unit \".\" in duration \"1.5h\"" },
    { "foo[5m:0s]",
      "1:8: parse error: duration must be greater than 0" },
    { "foo offset",
      "1:11: parse error: unexpected end of input in offset, expected numbe"
      "r or duration" },
    { "foo offset 5",
      "{__name__=\"foo\"}" },
    { "foo @",
      "1:6: parse error: unexpected end of input in @, expected timestamp" },
    { "foo @ start",
      "1:12: parse error: unexpected end of input in @, expected timestamp" },
    { "foo[5m][5m]",
      "1:8: parse error: ranges only allowed for vector selectors" },
    { "(foo)[5m]",
      "1:6: parse error: ranges only allowed for vector selectors" },
    { "foo offset 1m[5m]",
      "1:14: parse error: no offset modifiers allowed before range" },
    { "foo offset 1m offset 2m",
      "1:1: parse error: offset may not be set multiple times" },
    { "foo{a=\"b\"",
      "1:10: parse error: unexpected end of input inside braces" },
    { "foo{a}",
      "1:6: parse error: unexpected \"}\" in label matching, expected label"
      " matching operator" },
    { "foo{a=}",
      "1:7: parse error: unexpected \"}\" in label matching, expected strin"
      "g" },
    { "foo{a=\"b\" c=\"d\"}",
      "1:11: parse error: unexpected identifier \"c\" in label matching, ex"
      "pected \",\" or \"}\"" },
    { "foo{,}",
      "1:5: parse error: unexpected \",\" in label matching, expected ident"
      "ifier or \"}\"" },
    { "foo{a=1}",
      "1:7: parse error: unexpected character inside braces: '1'" },
    { "\"unterminated",
      "1:1: parse error: unterminated quoted string" },
    { "'unterminated",
      "1:1: parse error: unterminated quoted string" },
    { "`unterminated",
      "1:1: parse error: unterminated raw string" },
    { "foo{a=\"\\q\"}",
      "1:7: parse error: unknown escape sequence U+0071 'q'" },
    { "foo{a=\"\\400\"}",
      "1:7: parse error: escape sequence is an invalid Unicode code point" },
    { "foo{a=\"\\uD800\"}",
      "1:7: parse error: escape sequence is an invalid Unicode code point" },
    { "foo bar",
      "1:5: parse error: unexpected identifier \"bar\"" },
    { "foo +",
      "1:6: parse error: unexpected end of input" },
    { "* foo",
      "1:1: parse error: unexpected <op:*>" },
    { ")",
      "1:2: parse error: unexpected right parenthesis ')'" },
    { "(",
      "1:2: parse error: unclosed left parenthesis" },
    { "()",
      "1:2: parse error: unexpected \")\"" },
    { "foo(bar)",
      "1:1: parse error: unknown function with name \"foo\"" },
    { "Rate(foo[5m])",
      "1:1: parse error: unknown function with name \"Rate\"" },
    { "rate(foo)",
      "1:6: parse error: expected type range vector in call to function \"r"
      "ate\", got instant vector" },
    { "rate(foo[5m], 1)",
      "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2" },
    { "round(foo, 1, 2)",
      "1:1: parse error: expected at most 2 argument(s) in call to \"round"
      "\", got 3" },
    { "time(1)",
      "1:1: parse error: expected 0 argument(s) in call to \"time\", got 1" },
    { "sum()",
      "1:1: parse error: no arguments for aggregate expression provided" },
    { "topk(foo)",
      "1:1: parse error: wrong number of arguments for aggregate expression"
      " provided, expected 2, got 1" },
    { "sum(foo, bar)",
      "1:1: parse error: wrong number of arguments for aggregate expression"
      " provided, expected 1, got 2" },
    { "count_values(1, foo)",
      "1:14: parse error: expected type string in aggregation parameter, go"
      "t scalar" },
    { "\"a\" + 1",
      "1:1: parse error: binary expression must contain only scalar and ins"
      "tant vector types" },
    { "1 == 1",
      "1:3: parse error: comparisons between scalars must use BOOL modifier" },
    { "foo and 1",
      "1:1: parse error: set operator \"and\" not allowed in binary scalar "
      "expression" },
    { "foo + bool bar",
      "1:5: parse error: bool modifier can only be used on comparison opera"
      "tors" },
    { "foo + on(a) group_left(a) bar",
      "1:5: parse error: label \"a\" must not occur in ON and GROUP clause "
      "at once" },
    { "-\"a\"",
      "1:1: parse error: unary expression only allowed on expressions of ty"
      "pe scalar or instant vector, got \"string\"" },
    { "foo[5m:][1m:]",
      "1:1: parse error: subquery is only allowed on instant vector, got ma"
      "trix instead" },
    { "foo @ 1e100",
      "1:1: parse error: timestamp out of bounds for @ modifier: 1000000000"
      "00000001590289110975991804683608085639452813897813275577478387721703"
      "81060813469985856815104.000000" },
    { "foo @ -Inf",
      "1:1: parse error: timestamp out of bounds for @ modifier: -Inf" },
    { "foo{__name__=\"bar\"}",
      "1:1: parse error: metric name must not be set twice: \"foo\" or \"ba"
      "r\"" },
    { "1e",
      "1:1: parse error: bad number or duration syntax: \"1e\"" },
    { "0x",
      "1:1: parse error: error parsing number: strconv.ParseFloat: parsing "
      "\"0x\": invalid syntax" },
    { "1e500",
      "1:1: parse error: error parsing number: strconv.ParseFloat: parsing "
      "\"1e500\": value out of range" },
    { "foo{a=~\"(\"}",
      "1:5: parse error: error parsing regexp: missing closing ): `(`" },
    { "foo{a=~\"a**\"}",
      "1:5: parse error: error parsing regexp: invalid nested repetition op"
      "erator: `**`" },
    { "foo{a=~\"(?=x)\"}",
      "1:5: parse error: error parsing regexp: invalid or unsupported Perl "
      "syntax: `(?=`" },
    { "foo{a=~\"(?<!x)\"}",
      "1:5: parse error: error parsing regexp: invalid named capture: `(?<!"
      "x)`" },
    { "foo{a=~\"(a)\\\\1\"}",
      "1:5: parse error: error parsing regexp: invalid escape sequence: `\\"
      "1`" },
    { "foo{a=~\"a++\"}",
      "1:5: parse error: error parsing regexp: invalid nested repetition op"
      "erator: `++`" },
    { "foo{a=~\"(?>a)\"}",
      "1:5: parse error: error parsing regexp: invalid or unsupported Perl "
      "syntax: `(?>`" },
    { "foo{a=~\"\\\\K\"}",
      "1:5: parse error: error parsing regexp: invalid escape sequence: `\\"
      "K`" },
    { "foo{a=~\"(?R)\"}",
      "1:5: parse error: error parsing regexp: invalid or unsupported Perl "
      "syntax: `(?R`" },
    { "foo{a=~\"(?(1)a|b)\"}",
      "1:5: parse error: error parsing regexp: invalid or unsupported Perl "
      "syntax: `(?(`" },
    { "foo{a=~\"a{1001}\"}",
      "1:5: parse error: error parsing regexp: invalid repeat count: `{1001"
      "}`" },
    { "foo{a=~\"[z-a]\"}",
      "1:5: parse error: error parsing regexp: invalid character class rang"
      "e: `z-a`" },
    { "foo{a=~\"\\\\p{Klingon}\"}",
      "1:5: parse error: error parsing regexp: invalid character class rang"
      "e: `\\p{Klingon}`" },
    { "foo{a=~\"\\\\xff\"}",
      "{a=~\"\\\\xff\",__name__=\"foo\"}" },
    { "foo{a=~\"a)|(b\"}",
      "1:5: parse error: error parsing regexp: unexpected ): `a)|(b`" },
    { "foo\n  + bar baz",
      "2:9: parse error: unexpected identifier \"baz\"" },
    { "foo{a=\"\357\277\275\"}",
      "1:7: parse error: invalid UTF-8 rune" },
    { "foo \303\251",
      "1:5: parse error: unexpected character: '\303\251'" },
    { "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
      "((((((((((((((((((((((((((((((((foo)))))))))))))))))))))))))))))))))"
      ")))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))",
      "{__name__=\"foo\"}" },
    { "{\"http.server.duration\"}",
      "{__name__=\"http.server.duration\"}" },
    { "{\"service.name\"=\"x\", \"http.server.duration\"}",
      "{\"service.name\"=\"x\",__name__=\"http.server.duration\"}" },
    { "http_requests_total{\"service.name\"=~\"api.*\"}",
      "{\"service.name\"=~\"api.*\",__name__=\"http_requests_total\"}" },
    { "sum by (\"service.name\") (rate({\"http.server.duration\"}[5m]))",
      "{__name__=\"http.server.duration\"}" },
    { "foo{\"bar\"}",
      "1:1: parse error: metric name must not be set twice: \"foo\" or \"ba"
      "r\"" },
    { "{\"foo\", __name__=\"bar\"}",
      "{__name__=\"foo\",__name__=\"bar\"}" },
    { "{\"\"}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "{\"\", a=\"b\"}",
      "{__name__=\"\",a=\"b\"}" },
    { "sum by (\"\") (x)",
      "1:9: parse error: invalid label name for grouping: \"\"" },
    { "sum by (\"\377\") (x)",
      "1:9: parse error: invalid UTF-8 rune" },
    { "rate(foo[5])",
      "{__name__=\"foo\"}" },
    { "foo offset 5",
      "{__name__=\"foo\"}" },
    { "foo offset -1.5",
      "{__name__=\"foo\"}" },
    { "foo[0]",
      "1:5: parse error: duration must be greater than 0" },
    { "foo[0s]",
      "1:5: parse error: duration must be greater than 0" },
    { "foo[5m:0]",
      "1:8: parse error: duration must be greater than 0" },
    { "foo[1m+1m]",
      "1:5: parse error: experimental duration expression is not enabled" },
    { "foo[(1m)]",
      "1:6: parse error: experimental duration expression is not enabled" },
    { "foo offset (1m)",
      "1:13: parse error: experimental duration expression is not enabled" },
    { "foo[:5m]",
      "1:6: parse error: unexpected colon before duration in duration expre"
      "ssion" },
    { "limitk(2, foo)",
      "1:1: parse error: limitk() is experimental and must be enabled with "
      "--enable-feature=promql-experimental-functions" },
    { "limit_ratio(0.5, foo)",
      "1:1: parse error: limit_ratio() is experimental and must be enabled "
      "with --enable-feature=promql-experimental-functions" },
    { "info(foo)",
      "1:1: parse error: function \"info\" is not enabled" },
    { "mad_over_time(foo[5m])",
      "1:1: parse error: function \"mad_over_time\" is not enabled" },
    { "sort_by_label(foo, \"a\")",
      "1:1: parse error: function \"sort_by_label\" is not enabled" },
    { "holt_winters(foo[5m], 0.5, 0.5)",
      "1:1: parse error: unknown function with name \"holt_winters\"" },
    { "double_exponential_smoothing(foo[5m], 0.5, 0.5)",
      "1:1: parse error: function \"double_exponential_smoothing\" is not e"
      "nabled" },
    { "histogram_avg(foo) + histogram_stddev(foo)",
      "{__name__=\"foo\"} {__name__=\"foo\"}" },
    { "1_000 + foo",
      "{__name__=\"foo\"}" },
    { "0x_1F * foo",
      "{__name__=\"foo\"}" },
    { ".5 * foo",
      "{__name__=\"foo\"}" },
    { "foo{a=~\"\\xff\"}",
      "{a=~\"\\xff\",__name__=\"foo\"}" },
    { "foo{a=~\"a|\377\"}",
      "1:8: parse error: invalid UTF-8 rune" },
    { "foo{a=~\"(?<name>x)\"}",
      "{a=~\"(?<name>x)\",__name__=\"foo\"}" },
    { "foo{a=~\"(?P<1>x)\"}",
      "{a=~\"(?P<1>x)\",__name__=\"foo\"}" },
    { "foo @ 5m",
      "{__name__=\"foo\"}" },
    { "foo @ -5m",
      "{__name__=\"foo\"}" },
    { "",
      "unknown position: parse error: no expression found in input" },
    { "# only a comment",
      "1:1: parse error: no expression found in input" },
    { "  ",
      "1:1: parse error: no expression found in input" },
    { "(1)[5m:]",
      "1:1: parse error: subquery is only allowed on instant vector, got sc"
      "alar instead" },
    { "foo[1m] offset (1)",
      "1:17: parse error: experimental duration expression is not enabled" },
    { "foo[5m:1m] @ end()",
      "{__name__=\"foo\"}" },
    { "sum(foo) by (a) (bar)",
      "1:17: parse error: unexpected \"(\"" },
    { "rate(foo[5m",
      "1:12: parse error: unclosed left parenthesis" },
    { "foo[5m 1m]",
      "1:8: parse error: unexpected duration \"1m\" in subquery or range, e"
      "xpected \":\" or \"]\"" },
    { "foo[1y1y]",
      "1:5: parse error: bad number or duration syntax: \"1y1\"" },
    { "foo[5mm]",
      "1:5: parse error: bad number or duration syntax: \"5mm\"" },
    { "foo[99999999999999999999s]",
      "1:5: parse error: not a valid duration string: \"9999999999999999999"
      "9s\"" },
    { "foo offset 300y",
      "1:12: parse error: duration out of range" },
    { "foo[Inf]",
      "1:5: parse error: unexpected character in duration expression: 'I'" },
    { "foo offset Inf",
      "1:12: parse error: duration out of range" },
    { "count(foo) by ()",
      "{__name__=\"foo\"}" },
    { "ts_of_max_over_time(foo[5m])",
      "1:1: parse error: function \"ts_of_max_over_time\" is not enabled" },
    { "{\"http.server.duration\"}",
      "{__name__=\"http.server.duration\"}" },
    { "{\"service.name\"=\"x\", \"http.server.duration\"}",
      "{\"service.name\"=\"x\",__name__=\"http.server.duration\"}" },
    { "http_requests_total{\"service.name\"=~\"api.*\"}",
      "{\"service.name\"=~\"api.*\",__name__=\"http_requests_total\"}" },
    { "sum by (\"service.name\") (rate({\"http.server.duration\"}[5m]))",
      "{__name__=\"http.server.duration\"}" },
    { "foo{\"bar\"}",
      "1:1: parse error: metric name must not be set twice: \"foo\" or \"ba"
      "r\"" },
    { "{\"foo\", __name__=\"bar\"}",
      "{__name__=\"foo\",__name__=\"bar\"}" },
    { "{\"\"}",
      "1:1: parse error: vector selector must contain at least one non-empt"
      "y matcher" },
    { "{\"\", a=\"b\"}",
      "{__name__=\"\",a=\"b\"}" },
    { "sum by (\"\") (x)",
      "1:9: parse error: invalid label name for grouping: \"\"" },
    { "sum by (\"\377\") (x)",
      "1:9: parse error: invalid UTF-8 rune" },
    { "rate(foo[5])",
      "{__name__=\"foo\"}" },
    { "foo offset 5",
      "{__name__=\"foo\"}" },
    { "foo offset -1.5",
      "{__name__=\"foo\"}" },
    { "foo[0]",
      "1:5: parse error: duration must be greater than 0" },
    { "foo[0s]",
      "1:5: parse error: duration must be greater than 0" },
    { "foo[5m:0]",
      "1:8: parse error: duration must be greater than 0" },
    { "foo[1m+1m]",
      "1:5: parse error: experimental duration expression is not enabled" },
    { "foo[(1m)]",
      "1:6: parse error: experimental duration expression is not enabled" },
    { "foo offset (1m)",
      "1:13: parse error: experimental duration expression is not enabled" },
    { "foo[:5m]",
      "1:6: parse error: unexpected colon before duration in duration expre"
      "ssion" },
    { "limitk(2, foo)",
      "1:1: parse error: limitk() is experimental and must be enabled with "
      "--enable-feature=promql-experimental-functions" },
    { "limit_ratio(0.5, foo)",
      "1:1: parse error: limit_ratio() is experimental and must be enabled "
      "with --enable-feature=promql-experimental-functions" },
    { "info(foo)",
      "1:1: parse error: function \"info\" is not enabled" },
    { "mad_over_time(foo[5m])",
      "1:1: parse error: function \"mad_over_time\" is not enabled" },
    { "sort_by_label(foo, \"a\")",
      "1:1: parse error: function \"sort_by_label\" is not enabled" },
    { "holt_winters(foo[5m], 0.5, 0.5)",
      "1:1: parse error: unknown function with name \"holt_winters\"" },
    { "double_exponential_smoothing(foo[5m], 0.5, 0.5)",
      "1:1: parse error: function \"double_exponential_smoothing\" is not e"
      "nabled" },
    { "histogram_avg(foo) + histogram_stddev(foo)",
      "{__name__=\"foo\"} {__name__=\"foo\"}" },
    { "1_000 + foo",
      "{__name__=\"foo\"}" },
    { "0x_1F * foo",
      "{__name__=\"foo\"}" },
    { ".5 * foo",
      "{__name__=\"foo\"}" },
    { "foo{a=~\"\\xff\"}",
      "{a=~\"\\xff\",__name__=\"foo\"}" },
    { "foo{a=~\"a|\377\"}",
      "1:8: parse error: invalid UTF-8 rune" },
    { "foo{a=~\"(?<name>x)\"}",
      "{a=~\"(?<name>x)\",__name__=\"foo\"}" },
    { "foo{a=~\"(?P<1>x)\"}",
      "{a=~\"(?P<1>x)\",__name__=\"foo\"}" },
    { "foo @ 5m",
      "{__name__=\"foo\"}" },
    { "foo @ -5m",
      "{__name__=\"foo\"}" },
    { "",
      "unknown position: parse error: no expression found in input" },
    { "# only a comment",
      "1:1: parse error: no expression found in input" },
    { "  ",
      "1:1: parse error: no expression found in input" },
    { "(1)[5m:]",
      "1:1: parse error: subquery is only allowed on instant vector, got sc"
      "alar instead" },
    { "foo[1m] offset (1)",
      "1:17: parse error: experimental duration expression is not enabled" },
    { "foo[5m:1m] @ end()",
      "{__name__=\"foo\"}" },
    { "sum(foo) by (a) (bar)",
      "1:17: parse error: unexpected \"(\"" },
    { "rate(foo[5m",
      "1:12: parse error: unclosed left parenthesis" },
    { "foo[5m 1m]",
      "1:8: parse error: unexpected duration \"1m\" in subquery or range, e"
      "xpected \":\" or \"]\"" },
    { "foo[1y1y]",
      "1:5: parse error: bad number or duration syntax: \"1y1\"" },
    { "foo[5mm]",
      "1:5: parse error: bad number or duration syntax: \"5mm\"" },
    { "foo[99999999999999999999s]",
      "1:5: parse error: not a valid duration string: \"9999999999999999999"
      "9s\"" },
    { "foo offset 300y",
      "1:12: parse error: duration out of range" },
    { "foo[Inf]",
      "1:5: parse error: unexpected character in duration expression: 'I'" },
    { "foo offset Inf",
      "1:12: parse error: duration out of range" },
    { "count(foo) by ()",
      "{__name__=\"foo\"}" },
    { "ts_of_max_over_time(foo[5m])",
      "1:1: parse error: function \"ts_of_max_over_time\" is not enabled" },
};


static void *
test_alloc(void *ctx, size_t size)
{
    test_arena_t  *a = ctx;
    test_block_t  *b;

    if (size > a->cap - a->used) {
        return NULL;
    }

    b = malloc(sizeof(test_block_t) + size + 16);
    if (b == NULL) {
        return NULL;
    }

    b->next = a->blocks;
    a->blocks = b;
    a->used += size;

    return (char *) b + 16;
}


static pg_allocator_t
test_arena(test_arena_t *a, size_t cap)
{
    pg_allocator_t  al;

    a->blocks = NULL;
    a->used = 0;
    a->cap = cap;

    al.alloc = test_alloc;
    al.ctx = a;

    return al;
}


static void
test_arena_free(test_arena_t *a)
{
    test_block_t  *b, *next;

    for (b = a->blocks; b != NULL; b = next) {
        next = b->next;
        free(b);
    }

    a->blocks = NULL;
    a->used = 0;
}


/* the selectors as text, or the error as Prometheus' API shows it */
static pg_promql_rc_e
test_run(const char *query, size_t len, size_t cap, char *out, size_t size)
{
    size_t              i, n;
    test_arena_t        arena;
    pg_allocator_t      al;
    pg_promql_rc_e      rc;
    pg_selector_set_t   set;
    pg_promql_error_t   err;

    al = test_arena(&arena, cap);
    rc = pg_promql_selectors((const uint8_t *) query, len, &al, &set, &err);

    out[0] = '\0';

    if (rc == PG_PROMQL_ERROR) {
        pg_promql_error_format((const uint8_t *) query, len, &err, out,
                               size);

    } else if (rc == PG_PROMQL_OK) {
        for (i = 0, n = 0; i < set.nselectors; i++) {
            if (i) {
                out[n++] = ' ';
            }
            n += pg_selector_format(&set.selectors[i], out + n, size - n);
            assert_true(n < size);
        }
    }

    test_arena_free(&arena);

    return rc;
}


static void
test_table(void **state)
{
    size_t  i, failed;
    char    got[4096];

    failed = 0;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        (void) test_run(cases[i].query, strlen(cases[i].query), SIZE_MAX,
                        got, sizeof(got));

        if (strcmp(got, cases[i].expect) != 0) {
            print_error("query:    %s\nexpected: %s\ngot:      %s\n",
                        cases[i].query, cases[i].expect, got);
            failed++;
        }
    }

    assert_int_equal(failed, 0);
}


static void
test_error_positions(void **state)
{
    test_arena_t        arena;
    pg_allocator_t      al;
    pg_selector_set_t   set;
    pg_promql_error_t   err;
    char                buf[64];
    size_t              n, k;
    const char         *q;

    al = test_arena(&arena, SIZE_MAX);

    /* the byte offset of the item the error is about */
    q = "sum by (a b) (x)";
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q),
                                         &al, &set, &err), PG_PROMQL_ERROR);
    assert_int_equal(err.pos, 10);
    assert_string_equal(err.message, "unexpected identifier \"b\" in "
                        "grouping opts, expected \",\" or \")\"");

    /* lexer errors: at the start of the bad item; end of input: at len */
    q = "foo{a=\"\\q\"}";
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q),
                                         &al, &set, &err), PG_PROMQL_ERROR);
    assert_int_equal(err.pos, 6);

    q = "rate(x[5m]";
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q),
                                         &al, &set, &err), PG_PROMQL_ERROR);
    assert_int_equal(err.pos, strlen(q));
    assert_string_equal(err.message, "unclosed left parenthesis");

    /* lines and columns, columns in bytes from 1 */
    q = "foo\n + \"é\" x";
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q),
                                         &al, &set, &err), PG_PROMQL_ERROR);
    n = pg_promql_error_format((const uint8_t *) q, strlen(q), &err, buf,
                               sizeof(buf));
    assert_string_equal(buf, "2:9: parse error: unexpected identifier "
                        "\"x\"");
    assert_int_equal(n, strlen(buf));

    /* snprintf() contract: the length needed, truncated output */
    assert_int_equal(pg_promql_error_format((const uint8_t *) q, strlen(q),
                                            &err, NULL, 0), n);

    for (k = 1; k <= n + 1; k++) {
        memset(buf, 'Z', sizeof(buf));
        assert_int_equal(pg_promql_error_format((const uint8_t *) q,
                                                strlen(q), &err, buf, k), n);
        assert_int_equal(strlen(buf), k - 1 < n ? k - 1 : n);
    }

    /* an empty query has no position (3.5); blanks have one */
    assert_int_equal(pg_promql_selectors((const uint8_t *) "", 0, &al, &set,
                                         &err), PG_PROMQL_ERROR);
    pg_promql_error_format((const uint8_t *) "", 0, &err, buf, sizeof(buf));
    assert_string_equal(buf, "unknown position: parse error: no expression "
                        "found in input");

    assert_int_equal(pg_promql_selectors((const uint8_t *) " ", 1, &al, &set,
                                         &err), PG_PROMQL_ERROR);
    pg_promql_error_format((const uint8_t *) " ", 1, &err, buf, sizeof(buf));
    assert_string_equal(buf, "1:1: parse error: no expression found in "
                        "input");

    /* err may be NULL */
    assert_int_equal(pg_promql_selectors((const uint8_t *) "(", 1, &al, &set,
                                         NULL), PG_PROMQL_ERROR);

    test_arena_free(&arena);
}


static char *
test_repeat(const char *pre, size_t n, const char *mid, const char *post)
{
    size_t  i, len;
    char   *s;

    len = strlen(pre) * n + strlen(mid) + strlen(post) * n;
    s = malloc(len + 1);
    assert_non_null(s);

    s[0] = '\0';
    for (i = 0; i < n; i++) {
        strcat(s, pre);
    }
    strcat(s, mid);
    for (i = 0; i < n; i++) {
        strcat(s, post);
    }

    return s;
}


static void
test_nesting(void **state)
{
    char   *q, got[256];

    /* deep enough for any real query, but bounded */
    q = test_repeat("(", PG_PROMQL_MAX_DEPTH - 1, "foo", ")");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_OK);
    assert_string_equal(got, "{__name__=\"foo\"}");
    free(q);

    q = test_repeat("(", PG_PROMQL_MAX_DEPTH + 100, "foo", ")");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_ERROR);
    assert_string_equal(got, "1:1: parse error: query nests too deeply "
                        "(more than 2048 levels)");
    free(q);

    /* what Prometheus takes, as the bad-input matrix sends it */
    q = test_repeat("(", 1000, "up", ")");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_OK);
    free(q);

    q = test_repeat("sum(rate(", 300, "foo[5m]", "))");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_ERROR);
    assert_string_equal(got, "1:2692: parse error: expected type range "
                        "vector in call to function \"rate\", got instant "
                        "vector");
    free(q);

    q = test_repeat("-", 100000, "foo", "");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_ERROR);
    free(q);

    q = test_repeat("2 ^ ", 5000, "foo", "");
    assert_int_equal(test_run(q, strlen(q), SIZE_MAX, got, sizeof(got)),
                     PG_PROMQL_ERROR);
    free(q);

    /* long left-associative chains are no nesting: see test_long_chains */
}


/* a chain of 50000 operands: no recursion in parse, check or walk */
static void
test_long_chains(void **state)
{
    char                *q, *p;
    size_t               i, n;
    test_arena_t         arena;
    pg_allocator_t       al;
    pg_selector_set_t    set;
    pg_promql_error_t    err;

    n = 50000;
    q = malloc(n * 8 + 8);
    assert_non_null(q);

    p = q;
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%sm%zu", i ? " or " : "", i % 10);
    }

    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, p - q, &al,
                                         &set, &err), PG_PROMQL_OK);
    assert_int_equal(set.nselectors, n);
    assert_int_equal(set.selectors[n - 1].matchers[0].value.len, 2);
    assert_memory_equal(set.selectors[n - 1].matchers[0].value.data, "m9",
                        2);
    test_arena_free(&arena);

    /* a type error deep down the chain is still found */
    p = q;
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s%s", i ? " + " : "", i == 7 ? "\"s\"" : "x");
    }

    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, p - q, &al,
                                         &set, &err), PG_PROMQL_ERROR);
    assert_string_equal(err.message, "binary expression must contain only "
                        "scalar and instant vector types");
    assert_int_equal(err.pos, 28);
    test_arena_free(&arena);

    free(q);
}


static void
test_no_selectors(void **state)
{
    static const char  *qs[] = {
        "vector(1)", "1 + 1", "time() > bool 0", "\"x\"", "-Inf",
        "scalar(vector(1))[5m:1m] offset 1m", "pi() * 2 ^ 3"
    };

    size_t               i;
    test_arena_t         arena;
    pg_allocator_t       al;
    pg_selector_set_t    set;
    pg_promql_error_t    err;

    for (i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        al = test_arena(&arena, SIZE_MAX);
        set.nselectors = 99;

        pg_promql_rc_e rc = pg_promql_selectors((const uint8_t *) qs[i],
                                                strlen(qs[i]), &al, &set,
                                                &err);
        if (i == 5) {
            /* a subquery needs an instant vector, and says so */
            assert_int_equal(rc, PG_PROMQL_ERROR);

        } else {
            assert_int_equal(rc, PG_PROMQL_OK);
            assert_int_equal(set.nselectors, 0);
        }

        test_arena_free(&arena);
    }
}


static void
test_out_of_memory(void **state)
{
    static const char  *qs[] = {
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_"
        "seconds_bucket{job=~\"api.*|web-[0-9]+\", code!~\"5..\"}[5m])))",
        "foo{a=\"\\u00e9\\x41\"} / on(a) group_left(b) bar offset 5m",
        "foo{a=~\"(?i)x{3}\\\\p{Greek}+[^\\\\d]\"} + 1e",
        "sum(x,) by (a:b)"
    };

    size_t   i, cap;
    char     full[1024], got[1024];
    int      rc, ok;

    for (i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        rc = test_run(qs[i], strlen(qs[i]), SIZE_MAX, full, sizeof(full));
        assert_int_not_equal(rc, PG_PROMQL_NOMEM);

        /* any cap: the same answer, or NOMEM; never a crash */
        ok = 0;
        for (cap = 0; cap < (1 << 17); cap += cap < 4096 ? 16 : 1024) {
            rc = test_run(qs[i], strlen(qs[i]), cap, got, sizeof(got));

            if (rc == PG_PROMQL_NOMEM) {
                continue;
            }

            assert_string_equal(got, full);
            ok = 1;
        }

        assert_true(ok);
    }
}


static void
test_set_match(void **state)
{
    test_arena_t         arena;
    pg_allocator_t       al;
    pg_selector_set_t    set;
    pg_promql_error_t    err;
    const char          *q;

    /* labels sorted by name, as remote write has them */
    pg_label_t  api[] = {
        { pg_str_lit("__name__"), pg_str_lit("http_request_duration_seconds_"
                                             "bucket") },
        { pg_str_lit("job"), pg_str_lit("api-server") },
        { pg_str_lit("le"), pg_str_lit("0.5") }
    };
    pg_label_t  web[] = {
        { pg_str_lit("__name__"), pg_str_lit("http_request_duration_seconds_"
                                             "bucket") },
        { pg_str_lit("job"), pg_str_lit("web") },
        { pg_str_lit("le"), pg_str_lit("0.5") }
    };
    pg_label_t  up[] = {
        { pg_str_lit("__name__"), pg_str_lit("up") },
        { pg_str_lit("job"), pg_str_lit("web") }
    };
    pg_label_t  nojob[] = {
        { pg_str_lit("__name__"), pg_str_lit("up") }
    };

    al = test_arena(&arena, SIZE_MAX);

    q = "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_"
        "seconds_bucket{job=~\"api.*\"}[5m]))) > on() group_left up{job!=\"\"}";

    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q), &al,
                                         &set, &err), PG_PROMQL_OK);
    assert_int_equal(set.nselectors, 2);

    assert_true(pg_selector_set_match(&set, api, 3));
    assert_false(pg_selector_set_match(&set, web, 3));
    assert_true(pg_selector_set_match(&set, up, 2));

    /* a missing label reads as "", which job!="" refuses */
    assert_false(pg_selector_set_match(&set, nojob, 1));
    assert_false(pg_selector_set_match(&set, NULL, 0));

    assert_true(pg_selector_match(&set.selectors[0], api, 3));
    assert_false(pg_selector_match(&set.selectors[1], api, 3));

    test_arena_free(&arena);
}


/* what pg_selector_format() writes is PromQL for the same selector */
static void
test_round_trip(void **state)
{
    size_t               i, j, k, n;
    char                 text[1024];
    test_arena_t         arena, arena2;
    pg_allocator_t       al, al2;
    pg_selector_set_t    set, set2;
    pg_promql_error_t    err;
    const pg_matcher_t  *a, *b;
    const char          *q;

    q = "foo{a=\"\\a\\x00\\xff\\ufffd\\U0001F600\\\\ \\\"\", b=~'x\\n.', "
        "c!~`\\d+`, d!=\"\\u00ad\\u200b\"} + {__name__=~\"a|b\", z=\"\"}";

    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_promql_selectors((const uint8_t *) q, strlen(q), &al,
                                         &set, &err), PG_PROMQL_OK);
    assert_int_equal(set.nselectors, 2);

    for (i = 0; i < set.nselectors; i++) {
        n = pg_selector_format(&set.selectors[i], text, sizeof(text));
        assert_true(n < sizeof(text));

        for (k = 0; k <= n; k++) {
            char  small[1024];

            memset(small, 'Z', sizeof(small));
            assert_int_equal(pg_selector_format(&set.selectors[i], small, k),
                             n);
            if (k) {
                assert_int_equal(strlen(small), k - 1);
            }
            assert_int_equal(small[k], 'Z');
        }

        al2 = test_arena(&arena2, SIZE_MAX);
        assert_int_equal(pg_promql_selectors((const uint8_t *) text, n, &al2,
                                             &set2, &err), PG_PROMQL_OK);
        assert_int_equal(set2.nselectors, 1);
        assert_int_equal(set2.selectors[0].nmatchers,
                         set.selectors[i].nmatchers);

        for (j = 0; j < set2.selectors[0].nmatchers; j++) {
            a = &set.selectors[i].matchers[j];
            b = &set2.selectors[0].matchers[j];
            assert_int_equal(a->op, b->op);
            assert_true(pg_str_eq(a->name, b->name));
            assert_true(pg_str_eq(a->value, b->value));
        }

        test_arena_free(&arena2);
    }

    n = pg_selector_format(&set.selectors[0], text, sizeof(text));
    assert_string_equal(text, "{a=\"\\a\\x00\\xff\\ufffd"
                        "\360\237\230\200\\\\ \\\"\",b=~\"x\\n.\","
                        "c!~\"\\\\d+\",d!=\"\\u00ad\\u200b\","
                        "__name__=\"foo\"}");

    test_arena_free(&arena);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_long_chains),
        cmocka_unit_test(test_no_selectors),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_set_match),
        cmocka_unit_test(test_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
