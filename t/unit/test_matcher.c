/*
 * Label matchers (src/core/pg_matcher.c): =, !=, =~, !~ with Prometheus'
 * semantics, Go (RE2) regular expression syntax on PCRE2.  The tables of
 * regexp verdicts and of refused patterns, with their messages, were
 * checked against a real Prometheus 2.42 (series scraped with those label
 * values, then /api/v1/query_exemplars), the refusals and "." (DotNL)
 * again against Prometheus 3.5.3.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "pg_matcher.h"


/* malloc behind a pg_allocator_t, all freed at once, with a cap */
typedef struct test_block_s  test_block_t;

struct test_block_s {
    test_block_t   *next;
};


typedef struct {
    test_block_t   *blocks;
    size_t          used;
    size_t          cap;
    size_t          calls;
} test_arena_t;


typedef struct {
    const char     *re;
    const char     *matches;      /* '1' per value of values[] it matches */
} test_sem_t;


typedef struct {
    const char     *re;
    const char     *error;
} test_bad_t;


static const char  *values[] = {
    "", "a", "A", "abc", "ABC", "k", "K", "\342\204\252", "s", "S", "\305\277",
    "foo", "foobar", "foo\nbar", "foo\n", "\n", "\303\251", "\303\211",
    "\346\227\245\346\234\254", "123", "a.b", "a-b", "a b", " ", "\t", "x{2}",
    "{", "]", "\\", "ab", "aaa", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "\302\265",
    "\316\274", "api", "api-1", "apiserver", "API", "\013", "\357\277\275",
    "500", "404", "q\"uote", "\303\237",
};


static const test_sem_t  sem[] = {
    { "api.*",
      "00000000000000000000000000000000001110000000" },
    { "api",
      "00000000000000000000000000000000001000000000" },
    { "(?i)API",
      "00000000000000000000000000000000001001000000" },
    { "(?i)k",
      "00000111000000000000000000000000000000000000" },
    { "(?i)s",
      "00000000111000000000000000000000000000000000" },
    { "(?i)\\W",
      "00000000000000011100000110111000110000110001" },
    { "(?i)[[:^upper:]]",
      "00000000000000011100000110111000110000110001" },
    { "(?i)[^k]",
      "01100000111000011100000110111000110000110001" },
    { "\\w+",
      "01111110110110000001000000000110001011001100" },
    { "\\s",
      "00000000000000010000000110000000000000000000" },
    { "\\S+",
      "01111111111110001111110001111111111111111111" },
    { "[\\v]",
      "00000000000000000000000000000000000000100000" },
    { "\\d+",
      "00000000000000000001000000000000000000001100" },
    { ".",
      "01100111111000011100000110111000110000110001" },
    { "(?-s).",
      "01100111111000001100000110111000110000110001" },
    { "(?s).",
      "01100111111000011100000110111000110000110001" },
    { ".*",
      "11111111111111111111111111111111111111111111" },
    { "(?-s).*",
      "11111111111110001111111111111111111111111111" },
    { "(?<n>a)",
      "01000000000000000000000000000000000000000000" },
    { "foo$",
      "00000000000100000000000000000000000000000000" },
    { "(?m)foo$",
      "00000000000100000000000000000000000000000000" },
    { "(?m)foo$\\n",
      "00000000000000100000000000000000000000000000" },
    { "(?m)^$",
      "10000000000000000000000000000000000000000000" },
    { "foo\\n",
      "00000000000000100000000000000000000000000000" },
    { "[^\\n]*",
      "11111111111110001111111111111111111111111111" },
    { "\\pL+",
      "01111111111110001110000000000110111011000001" },
    { "\\p{Greek}",
      "00000000000000000000000000000000010000000000" },
    { "\\P{Greek}+",
      "01111111111111111111111111111111101111111111" },
    { "\\p{Han}+",
      "00000000000000000010000000000000000000000000" },
    { "\\x{FFFD}",
      "00000000000000000000000000000000000000010000" },
    { "\\x{D800}",
      "00000000000000000000000000000000000000010000" },
    { "\\x{212A}",
      "00000001000000000000000000000000000000000000" },
    { "a|b",
      "01000000000000000000000000000000000000000000" },
    { "ab|a",
      "01000000000000000000000000000100000000000000" },
    { "a{3}",
      "00000000000000000000000000000010000000000000" },
    { "(a|aa)+!",
      "00000000000000000000000000000001000000000000" },
    { "a.b",
      "00000000000000000000111000000000000000000000" },
    { "a\\.b",
      "00000000000000000000100000000000000000000000" },
    { "\\Qa.b\\E",
      "00000000000000000000100000000000000000000000" },
    { "x\\{2\\}",
      "00000000000000000000000001000000000000000000" },
    { "x{2}",
      "00000000000000000000000000000000000000000000" },
    { "{",
      "00000000000000000000000000100000000000000000" },
    { "\\\\",
      "00000000000000000000000000001000000000000000" },
    { "[]]",
      "00000000000000000000000000010000000000000000" },
    { "[\\d-z]+",
      "00000000000000000001000000000000000000001100" },
    { "\\ba\\b",
      "01000000000000000000000000000000000000000000" },
    { "\303\251",
      "00000000000000001000000000000000000000000000" },
    { "(?i)\303\251",
      "00000000000000001100000000000000000000000000" },
    { "\\x{e9}",
      "00000000000000001000000000000000000000000000" },
    { "\346\227\245\346\234\254",
      "00000000000000000010000000000000000000000000" },
    { "[[:punct:]]",
      "00000000000000000000000000111000000000000000" },
    { "5\\d\\d",
      "00000000000000000000000000000000000000001000" },
    { "q\"uote",
      "00000000000000000000000000000000000000000010" },
};


/* what Go's RE2 syntax refuses, PCRE2 would take */
static const test_bad_t  bad[] = {
    { "(?=a)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?=`" },
    { "(?!a)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?!`" },
    { "(?<=a)",
      "error parsing regexp: invalid named capture: `(?<=a)`" },
    { "(?<!a)",
      "error parsing regexp: invalid named capture: `(?<!a)`" },
    { "(?>a)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?>`" },
    { "(?#c)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?#`" },
    { "(?R)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?R`" },
    { "(?1)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?1`" },
    { "(?(1)a|b)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?(`" },
    { "(?|a)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?|`" },
    { "(?'n'a)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?'`" },
    { "(?P=n)",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?P`" },
    { "(?x)a",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?x`" },
    { "(a)\\1",
      "error parsing regexp: invalid escape sequence: `\\1`" },
    { "\\1",
      "error parsing regexp: invalid escape sequence: `\\1`" },
    { "\\8",
      "error parsing regexp: invalid escape sequence: `\\8`" },
    { "a++",
      "error parsing regexp: invalid nested repetition operator: `++`" },
    { "a*+",
      "error parsing regexp: invalid nested repetition operator: `*+`" },
    { "a?+",
      "error parsing regexp: invalid nested repetition operator: `?+`" },
    { "a{2}+",
      "error parsing regexp: invalid nested repetition operator: `{2}+`" },
    { "a**",
      "error parsing regexp: invalid nested repetition operator: `**`" },
    { "a{2}{3}",
      "error parsing regexp: invalid nested repetition operator: `{2}{3}`" },
    { "*a",
      "error parsing regexp: missing argument to repetition operator: `*`" },
    { "a{1001}",
      "error parsing regexp: invalid repeat count: `{1001}`" },
    { "a{2,1}",
      "error parsing regexp: invalid repeat count: `{2,1}`" },
    { "(a{100}){100}",
      "error parsing regexp: invalid repeat count: `{100}`" },
    { "\\K",
      "error parsing regexp: invalid escape sequence: `\\K`" },
    { "\\Z",
      "error parsing regexp: invalid escape sequence: `\\Z`" },
    { "\\G",
      "error parsing regexp: invalid escape sequence: `\\G`" },
    { "\\C",
      "error parsing regexp: invalid escape sequence: `\\C`" },
    { "\\X",
      "error parsing regexp: invalid escape sequence: `\\X`" },
    { "\\R",
      "error parsing regexp: invalid escape sequence: `\\R`" },
    { "\\h",
      "error parsing regexp: invalid escape sequence: `\\h`" },
    { "\\e",
      "error parsing regexp: invalid escape sequence: `\\e`" },
    { "\\cA",
      "error parsing regexp: invalid escape sequence: `\\c`" },
    { "\\g1",
      "error parsing regexp: invalid escape sequence: `\\g`" },
    { "\\k<n>",
      "error parsing regexp: invalid escape sequence: `\\k`" },
    { "\\N",
      "error parsing regexp: invalid escape sequence: `\\N`" },
    { "\\o{12}",
      "error parsing regexp: invalid escape sequence: `\\o`" },
    { "\\x{110000}",
      "error parsing regexp: invalid escape sequence: `\\x{110000`" },
    { "\\x{}",
      "error parsing regexp: invalid escape sequence: `\\x{}`" },
    { "\\p{Klingon}",
      "error parsing regexp: invalid character class range: `\\p{Klingon}`" },
    { "\\pX",
      "error parsing regexp: invalid character class range: `\\pX`" },
    { "[\\b]",
      "error parsing regexp: invalid escape sequence: `\\b`" },
    { "[z-a]",
      "error parsing regexp: invalid character class range: `z-a`" },
    { "[[:foo:]]",
      "error parsing regexp: invalid character class range: `[:foo:]`" },
    { "[a",
      "error parsing regexp: missing closing ]: `[a`" },
    { "(a",
      "error parsing regexp: missing closing ): `(a`" },
    { "a)",
      "error parsing regexp: unexpected ): `a)`" },
    { "(*UTF)a",
      "error parsing regexp: missing argument to repetition operator: `*`" },
    { "(?i",
      "error parsing regexp: invalid or unsupported Perl syntax: `(?i`" },
    { "a+\377",
      "error parsing regexp: invalid UTF-8: `\357\277\275`" },
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
    a->calls++;

    return (char *) b + 16;
}


static pg_allocator_t
test_arena(test_arena_t *a, size_t cap)
{
    pg_allocator_t  al;

    memset(a, 0, sizeof(test_arena_t));
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


static pg_str_t
test_str(const char *s)
{
    pg_str_t  v;

    v.data = (const uint8_t *) s;
    v.len = strlen(s);

    return v;
}


static int
test_match(pg_match_op_e op, const char *value, const char *subject)
{
    int             r;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    m;

    al = test_arena(&arena, SIZE_MAX);

    assert_int_equal(pg_matcher_init(&m, op, test_str("l"), test_str(value),
                                     &al, NULL, 0), PG_MATCHER_OK);
    r = pg_matcher_matches(&m, test_str(subject));

    test_arena_free(&arena);

    return r;
}


static void
test_eq_neq(void **state)
{
    assert_true(test_match(PG_MATCH_EQ, "api", "api"));
    assert_false(test_match(PG_MATCH_EQ, "api", "api "));
    assert_false(test_match(PG_MATCH_EQ, "api", "API"));
    assert_true(test_match(PG_MATCH_EQ, "", ""));
    assert_false(test_match(PG_MATCH_EQ, "", "x"));
    assert_true(test_match(PG_MATCH_EQ, "\303\251", "\303\251"));

    assert_false(test_match(PG_MATCH_NEQ, "api", "api"));
    assert_true(test_match(PG_MATCH_NEQ, "api", "ap"));
    assert_true(test_match(PG_MATCH_NEQ, "", "x"));
    assert_false(test_match(PG_MATCH_NEQ, "", ""));

    /* = and != are bytes, not regexps */
    assert_false(test_match(PG_MATCH_EQ, "a.*", "abc"));
    assert_true(test_match(PG_MATCH_EQ, "a.*", "a.*"));

    assert_string_equal(pg_match_op_str(PG_MATCH_EQ), "=");
    assert_string_equal(pg_match_op_str(PG_MATCH_NEQ), "!=");
    assert_string_equal(pg_match_op_str(PG_MATCH_RE), "=~");
    assert_string_equal(pg_match_op_str(PG_MATCH_NRE), "!~");
}


static void
test_regex_semantics(void **state)
{
    size_t          i, j, k, nv, failed;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    re, nre;
    char            err[256];
    int             r;

    nv = sizeof(values) / sizeof(values[0]);
    failed = 0;

    for (i = 0; i < sizeof(sem) / sizeof(sem[0]); i++) {
        assert_int_equal(strlen(sem[i].matches), nv);

        al = test_arena(&arena, SIZE_MAX);

        assert_int_equal(pg_matcher_init(&re, PG_MATCH_RE, test_str("v"),
                                         test_str(sem[i].re), &al, err,
                                         sizeof(err)), PG_MATCHER_OK);
        assert_int_equal(pg_matcher_init(&nre, PG_MATCH_NRE, test_str("v"),
                                         test_str(sem[i].re), &al, err,
                                         sizeof(err)), PG_MATCHER_OK);

        /* twice, the second time backwards: answers remembered */
        for (k = 0; k < 2 * nv; k++) {
            j = k < nv ? k : 2 * nv - 1 - k;
            r = pg_matcher_matches(&re, test_str(values[j]));

            if (r != (sem[i].matches[j] == '1')) {
                print_error("%s =~ value #%zu: got %d\n", sem[i].re, j, r);
                failed++;
            }

            assert_int_equal(pg_matcher_matches(&nre, test_str(values[j])),
                             !r);
        }

        test_arena_free(&arena);
    }

    assert_int_equal(failed, 0);
}


/*
 * A regular expression's remembered answers are its answers: values that
 * share a cache entry, of every length around the longest remembered, not
 * UTF-8, empty and absent, in rounds, against a matcher that has seen
 * none of them before.
 */
static void
test_regex_cache(void **state)
{
    int             r;
    char            v[80];
    size_t          i, k, n, round;
    test_arena_t    arena, fresh;
    pg_allocator_t  al, fl;
    pg_matcher_t    m, f;

    static const char  *res[] = {
        "api-[12]", "(?i)a.*1", ".*\\xff.*|b{3,}", "[^a]*", ".{57}|.{58}",
    };

    for (i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        al = test_arena(&arena, SIZE_MAX);
        assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("v"),
                                         test_str(res[i]), &al, NULL, 0),
                         PG_MATCHER_OK);
        for (round = 0; round < 3; round++) {
            for (k = 0; k < 400; k++) {

                /* from a few hundred values, most of them met again */
                n = (k * 7 + round * 131) % 64;
                memset(v, "ab1\xff-"[(k + n) % 5], n);
                memcpy(v, "api-", n < 4 ? n : 4);

                if (n > 4) {
                    v[4] = (char) ('0' + k % 3);
                }

                fl = test_arena(&fresh, SIZE_MAX);
                assert_int_equal(pg_matcher_init(&f, PG_MATCH_RE,
                                                 test_str("v"),
                                                 test_str(res[i]), &fl, NULL,
                                                 0), PG_MATCHER_OK);

                r = pg_matcher_matches(&m, (pg_str_t) { (uint8_t *) v, n });
                assert_int_equal(r, pg_matcher_matches(&f, (pg_str_t) {
                                                       (uint8_t *) v, n }));

                test_arena_free(&fresh);
            }
        }

        /* absent and empty read the same */
        assert_int_equal(pg_matcher_matches(&m, (pg_str_t) { NULL, 0 }),
                         pg_matcher_matches(&m, test_str("")));

        test_arena_free(&arena);
    }

    /*
     * Values that never come back: the regexp stops remembering after its
     * trial, and its answers stay right, then for values that do.
     */
    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("v"),
                                     test_str("/p/1.*"), &al, NULL, 0),
                     PG_MATCHER_OK);

    for (k = 0; k < 1200; k++) {
        n = (size_t) snprintf(v, sizeof(v), "/p/%zu", k < 600 ? k : k % 7);
        r = pg_matcher_matches(&m, (pg_str_t) { (uint8_t *) v, n });
        assert_int_equal(r, v[3] == '1');
    }

    test_arena_free(&arena);
}


static void
test_regex_rejected(void **state)
{
    size_t          i, k;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    m;
    char            err[256], small[16];

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        al = test_arena(&arena, SIZE_MAX);

        assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("v"),
                                         test_str(bad[i].re), &al, err,
                                         sizeof(err)), PG_MATCHER_BAD_RE);
        assert_string_equal(err, bad[i].error);

        assert_int_equal(pg_matcher_init(&m, PG_MATCH_NRE, test_str("v"),
                                         test_str(bad[i].re), &al, NULL, 0),
                         PG_MATCHER_BAD_RE);

        /* any buffer size gives a NUL-terminated prefix */
        for (k = 1; k <= sizeof(small); k++) {
            memset(small, 'Z', sizeof(small));
            assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("v"),
                                             test_str(bad[i].re), &al, small,
                                             k), PG_MATCHER_BAD_RE);
            assert_int_equal(strlen(small), k - 1);
            assert_memory_equal(small, bad[i].error, k - 1);
        }

        test_arena_free(&arena);
    }
}


static void
test_anchoring(void **state)
{
    /* Prometheus anchors the whole expression: ^(?:RE)$ */
    assert_true(test_match(PG_MATCH_RE, "api", "api"));
    assert_false(test_match(PG_MATCH_RE, "api", "apiserver"));
    assert_false(test_match(PG_MATCH_RE, "api", "my-api"));
    assert_true(test_match(PG_MATCH_RE, ".*api.*", "my-api-1"));

    /* both sides of an alternation */
    assert_false(test_match(PG_MATCH_RE, "a|b", "ab"));
    assert_true(test_match(PG_MATCH_RE, "a|b", "b"));
    assert_false(test_match(PG_MATCH_RE, "foo|bar", "foobar"));

    /* $ is the end of text only, not before a final newline */
    assert_false(test_match(PG_MATCH_RE, "foo$", "foo\n"));
    assert_false(test_match(PG_MATCH_RE, "foo", "foo\n"));
    assert_true(test_match(PG_MATCH_RE, "(?m)foo$\\n", "foo\n"));
    assert_true(test_match(PG_MATCH_RE, "(?m)foo\\n^", "foo\n"));

    /* Prometheus 3.5 parses with DotNL: . takes a newline unless (?-s) */
    assert_true(test_match(PG_MATCH_RE, ".*", "a\nb"));
    assert_true(test_match(PG_MATCH_RE, "(?s).*", "a\nb"));
    assert_false(test_match(PG_MATCH_RE, "(?-s).*", "a\nb"));

    /* literals and "|" alone compare bytes, never parsed (3.5) */
    assert_true(test_match(PG_MATCH_RE, "a|\377", "\377"));
    assert_false(test_match(PG_MATCH_RE, "a|\377", "\357\277\275"));
    assert_true(test_match(PG_MATCH_RE, "a|", ""));
    assert_false(test_match(PG_MATCH_RE, "a|b", "a|b"));
    assert_true(test_match(PG_MATCH_NRE, "a|b", "c"));

    /* the empty pattern matches the empty value only */
    assert_true(test_match(PG_MATCH_RE, "", ""));
    assert_false(test_match(PG_MATCH_RE, "", "x"));
    assert_true(test_match(PG_MATCH_NRE, "", "x"));
}


/* the classes Go's newer tables have (Prometheus 3.5's Go, Unicode 16) */
static void
test_unicode_tables(void **state)
{
    /* Unicode 14 scripts (PCRE2 has them) */
    assert_true(test_match(PG_MATCH_RE, "\\p{Vithkuqi}", "\360\220\225\260"));
    /* Unicode 15: Go's ranges */
    assert_true(test_match(PG_MATCH_RE, "\\p{Kawi}+", "\360\221\274\200"));
    assert_false(test_match(PG_MATCH_RE, "\\p{Kawi}", "\360\221\274\221"));
    assert_true(test_match(PG_MATCH_RE, "\\P{Kawi}", "a"));
    assert_true(test_match(PG_MATCH_RE, "[^\\P{Nag_Mundari}]",
                           "\360\236\223\220"));
    /* Unicode 16: blocks */
    assert_true(test_match(PG_MATCH_RE, "\\p{Garay}", "\360\220\265\200"));
    /* Go 1.25's categories */
    assert_true(test_match(PG_MATCH_RE, "\\p{LC}+", "aB"));
    assert_false(test_match(PG_MATCH_RE, "\\p{LC}", "1"));
    assert_true(test_match(PG_MATCH_RE, "\\p{Cn}", "\363\240\200\200"));
    assert_false(test_match(PG_MATCH_RE, "\\p{Cn}", "a"));
}


static void
test_utf8(void **state)
{
    size_t          i, calls;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    m;

    assert_true(test_match(PG_MATCH_RE, "\303\251", "\303\251"));
    assert_true(test_match(PG_MATCH_RE, ".", "\303\251"));
    assert_false(test_match(PG_MATCH_RE, "..", "\303\251"));
    assert_true(test_match(PG_MATCH_RE, ".", "\360\237\230\200"));
    assert_true(test_match(PG_MATCH_RE, "(?i)\303\251", "\303\211"));
    assert_true(test_match(PG_MATCH_RE, "\\p{Han}+",
                           "\346\227\245\346\234\254"));
    assert_true(test_match(PG_MATCH_RE, "[\\x{65e5}-\\x{672c}]{2}",
                           "\346\227\245\346\234\254"));

    /* Go folds k to KELVIN SIGN; \w is ASCII, but (?i)\w folds */
    assert_true(test_match(PG_MATCH_RE, "(?i)k", "\342\204\252"));
    assert_false(test_match(PG_MATCH_RE, "\\w", "\342\204\252"));
    assert_true(test_match(PG_MATCH_RE, "(?i)\\w", "\342\204\252"));
    assert_false(test_match(PG_MATCH_RE, "(?i)\\W", "\342\204\252"));

    /* a byte that is not UTF-8 reads as U+FFFD, one per byte, as in Go */
    assert_true(test_match(PG_MATCH_RE, ".", "\377"));
    assert_true(test_match(PG_MATCH_RE, "a..b", "a\377\376b"));
    assert_true(test_match(PG_MATCH_RE, "\\x{fffd}", "\377"));
    assert_false(test_match(PG_MATCH_RE, "\\x{fffd}", "\377\377"));
    /* a truncated sequence is one U+FFFD per byte, as utf8.DecodeRune */
    assert_false(test_match(PG_MATCH_RE, "a.c", "a\340\240c"));
    assert_true(test_match(PG_MATCH_RE, "a..c", "a\340\240c"));

    /* such values reuse one buffer: no allocation per match */
    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("l"),
                                     test_str("a.*"), &al, NULL, 0),
                     PG_MATCHER_OK);
    assert_true(pg_matcher_matches(&m, test_str("a\377\377\377")));
    calls = arena.calls;

    for (i = 0; i < 10000; i++) {
        assert_true(pg_matcher_matches(&m, test_str("a\377\377")));
        assert_true(pg_matcher_matches(&m, test_str("abc")));
    }

    assert_int_equal(arena.calls, calls);
    test_arena_free(&arena);
}


static double
test_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
test_catastrophic(void **state)
{
    static const char  *patterns[] = {
        "(a+)+$", "(a|a)*b", "(a*)*b", "(x+x+)+y", "(.*a){20}",
        "(a|aa)+c", "(\\w+\\d*)+!", "((a+)*)+b"
    };

    size_t          i, n;
    char           *s;
    double          t0, t1;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    m;
    pg_str_t        v;

    /*
     * 20000 bytes: exponential for a backtracking matcher, milliseconds
     * here (the bound leaves room for valgrind)
     */
    n = 20000;
    s = malloc(n + 1);
    assert_non_null(s);

    for (i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
        al = test_arena(&arena, SIZE_MAX);

        assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("l"),
                                         test_str(patterns[i]), &al, NULL,
                                         0), PG_MATCHER_OK);

        /* a long near-miss */
        memset(s, i == 3 ? 'x' : 'a', n);
        s[n - 1] = '#';
        s[n] = '\0';
        v.data = (const uint8_t *) s;
        v.len = n;

        t0 = test_now();
        assert_false(pg_matcher_matches(&m, v));
        t1 = test_now();

        if (t1 - t0 > 10.0) {
            fail_msg("%s took %.3f s", patterns[i], t1 - t0);
        }

        test_arena_free(&arena);
    }

    /* and a long value still matches where it should */
    al = test_arena(&arena, SIZE_MAX);
    assert_int_equal(pg_matcher_init(&m, PG_MATCH_RE, test_str("l"),
                                     test_str("(a+)+b"), &al, NULL, 0),
                     PG_MATCHER_OK);
    memset(s, 'a', n);
    s[n - 1] = 'b';
    assert_true(pg_matcher_matches(&m, v));
    test_arena_free(&arena);

    free(s);
}


static void
test_selector_match(void **state)
{
    size_t             i;
    test_arena_t       arena;
    pg_allocator_t     al;
    pg_matcher_t       m[4];
    pg_selector_t      sel, none;
    pg_selector_set_t  set;
    pg_label_t         many[26];
    char               names[26][2];

    pg_label_t  lbls[] = {
        { pg_str_lit("__name__"), pg_str_lit("http_requests_total") },
        { pg_str_lit("code"), pg_str_lit("503") },
        { pg_str_lit("job"), pg_str_lit("api-server") }
    };

    al = test_arena(&arena, SIZE_MAX);

    assert_int_equal(pg_matcher_init(&m[0], PG_MATCH_EQ, test_str("__name__"),
                                     test_str("http_requests_total"), &al,
                                     NULL, 0), PG_MATCHER_OK);
    assert_int_equal(pg_matcher_init(&m[1], PG_MATCH_RE, test_str("code"),
                                     test_str("5.."), &al, NULL, 0),
                     PG_MATCHER_OK);
    assert_int_equal(pg_matcher_init(&m[2], PG_MATCH_NRE, test_str("job"),
                                     test_str("web.*"), &al, NULL, 0),
                     PG_MATCHER_OK);

    /* a label the series lacks reads as "" */
    assert_int_equal(pg_matcher_init(&m[3], PG_MATCH_EQ, test_str("env"),
                                     test_str(""), &al, NULL, 0),
                     PG_MATCHER_OK);

    sel.matchers = m;
    sel.nmatchers = 4;
    assert_true(pg_selector_match(&sel, lbls, 3));

    m[3].value = test_str("prod");
    assert_false(pg_selector_match(&sel, lbls, 3));

    assert_int_equal(pg_matcher_init(&m[3], PG_MATCH_NEQ, test_str("env"),
                                     test_str("prod"), &al, NULL, 0),
                     PG_MATCHER_OK);
    assert_true(pg_selector_match(&sel, lbls, 3));

    assert_int_equal(pg_matcher_init(&m[3], PG_MATCH_NRE, test_str("env"),
                                     test_str(".+"), &al, NULL, 0),
                     PG_MATCHER_OK);
    assert_true(pg_selector_match(&sel, lbls, 3));

    assert_int_equal(pg_matcher_init(&m[3], PG_MATCH_RE, test_str("env"),
                                     test_str(".+"), &al, NULL, 0),
                     PG_MATCHER_OK);
    assert_false(pg_selector_match(&sel, lbls, 3));

    /* every label found by its name among many */
    for (i = 0; i < 26; i++) {
        names[i][0] = (char) ('a' + i);
        names[i][1] = '\0';
        many[i].name.data = (const uint8_t *) names[i];
        many[i].name.len = 1;
        many[i].value = many[i].name;
    }

    for (i = 0; i < 26; i++) {
        assert_int_equal(pg_matcher_init(&m[0], PG_MATCH_EQ,
                                         many[i].name, many[i].name, &al,
                                         NULL, 0), PG_MATCHER_OK);
        sel.nmatchers = 1;
        assert_true(pg_selector_match(&sel, many, 26));
        assert_false(pg_selector_match(&sel, many, i));
    }

    /* a set matches if any selector does; an empty set never */
    set.selectors = &sel;
    set.nselectors = 1;
    assert_true(pg_selector_set_match(&set, many, 26));

    none.matchers = NULL;
    none.nmatchers = 0;
    assert_true(pg_selector_match(&none, NULL, 0));

    set.nselectors = 0;
    assert_false(pg_selector_set_match(&set, many, 26));

    test_arena_free(&arena);
}


static void
test_out_of_memory(void **state)
{
    size_t          cap;
    int             rc, ok;
    test_arena_t    arena;
    pg_allocator_t  al;
    pg_matcher_t    m;

    ok = 0;

    for (cap = 0; cap < 256 * 1024; cap += cap < 8192 ? 8 : 512) {
        al = test_arena(&arena, cap);

        rc = pg_matcher_init(&m, PG_MATCH_RE, test_str("l"),
                             test_str("(?i)(api|web)-[0-9]{1,3}\\.\\p{L}+"),
                             &al, NULL, 0);
        assert_true(rc == PG_MATCHER_OK || rc == PG_MATCHER_NOMEM);

        if (rc == PG_MATCHER_OK) {
            assert_true(pg_matcher_matches(&m, test_str("WEB-12.x")));
            assert_false(pg_matcher_matches(&m, test_str("web-1234.x")));
            ok = 1;
        }

        test_arena_free(&arena);
    }

    assert_true(ok);
}


static void
test_quote(void **state)
{
    char    buf[64];
    size_t  n, k;

    /* Go's %q */
    n = pg_go_quote(buf, sizeof(buf),
                    (const uint8_t *) "a\"b\\c\n\t\001\177\303\251\377", 12,
                    '"');
    assert_string_equal(buf, "\"a\\\"b\\\\c\\n\\t\\x01\\x7f\303\251\\xff\"");
    assert_int_equal(n, strlen(buf));

    pg_go_quote(buf, sizeof(buf), (const uint8_t *) "'", 1, '\'');
    assert_string_equal(buf, "'\\''");

    pg_go_quote(buf, sizeof(buf), (const uint8_t *) "\302\240\342\200\250",
                5, '"');
    assert_string_equal(buf, "\"\\u00a0\\u2028\"");

    for (k = 0; k <= n; k++) {
        memset(buf, 'Z', sizeof(buf));
        assert_int_equal(pg_go_quote(buf, k, (const uint8_t *) "a\"b", 3,
                                     '"'), 6);
        if (k) {
            assert_int_equal(strlen(buf), k - 1 < 6 ? k - 1 : 6);
        }
    }

    assert_int_equal(pg_go_quote(NULL, 0, (const uint8_t *) "x", 1, '"'), 3);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_eq_neq),
        cmocka_unit_test(test_regex_semantics),
        cmocka_unit_test(test_regex_cache),
        cmocka_unit_test(test_regex_rejected),
        cmocka_unit_test(test_anchoring),
        cmocka_unit_test(test_unicode_tables),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_catastrophic),
        cmocka_unit_test(test_selector_match),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_quote),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
