/*
 * libFuzzer target: label matchers and Go-syntax regular expressions
 * (src/core/pg_matcher.c: Go's parser rules, translation to PCRE2, DFA
 * matching).
 *
 * Input: one byte of options, then the pattern, a NUL byte, and the label
 * value to match.  Besides the sanitizers and libFuzzer's timeout (a
 * pattern/value pair that made matching slow would stall a worker), it
 * checks that
 *
 *   - a refused pattern comes with a NUL-terminated message that honours
 *     the buffer size, and is refused by =~ and !~ alike;
 *   - !~ says the opposite of =~ on every value;
 *   - "(?:P)" and "(?:P)|(?:P)" (when Go accepts them) match what P does;
 *   - a pattern of letters and digits only matches exactly itself;
 *   - = and != compare bytes.
 *
 * FUZZ_FLAGS: -max_len=1024 -dict=fuzz/promql.dict
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_matcher.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_matcher", cond)


static fuzz_arena_t  arena;


static int
plain(pg_str_t s)
{
    size_t  i;

    for (i = 0; i < s.len; i++) {
        uint8_t c = s.data[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/* matcher on a derived pattern; -1 when it does not compile */
static int
derived(const char *pre, pg_str_t pat, const char *mid, const char *post,
    pg_str_t v, pg_allocator_t *al)
{
    pg_matcher_t   m;
    uint8_t       *p;
    size_t         n;
    pg_str_t       src;

    n = strlen(pre) + pat.len + (mid ? strlen(mid) + pat.len : 0)
        + strlen(post);
    p = malloc(n + 1);
    check(p != NULL);

    n = 0;
    memcpy(p + n, pre, strlen(pre)); n += strlen(pre);
    memcpy(p + n, pat.data, pat.len); n += pat.len;
    if (mid) {
        memcpy(p + n, mid, strlen(mid)); n += strlen(mid);
        memcpy(p + n, pat.data, pat.len); n += pat.len;
    }
    memcpy(p + n, post, strlen(post)); n += strlen(post);

    src.data = p;
    src.len = n;

    if (pg_matcher_init(&m, PG_MATCH_RE, (pg_str_t) pg_str_lit("l"), src, al,
                        NULL, 0) != PG_MATCHER_OK)
    {
        free(p);
        return -1;
    }

    n = pg_matcher_matches(&m, v);
    free(p);

    return (int) n;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pg_matcher_t     re, nre, eq, neq;
    pg_str_t         pat, v, name;
    pg_allocator_t   al;
    const uint8_t   *z;
    char             err[64], err2[64];
    int              rc, rc2, r, d;
    unsigned         opt;

    if (size < 1) {
        return 0;
    }

    opt = data[0];
    data++;
    size--;

    z = memchr(data, '\0', size);
    pat.data = data;
    pat.len = z ? (size_t) (z - data) : size;
    v.data = z ? z + 1 : data + size;
    v.len = z ? size - pat.len - 1 : 0;
    name = (pg_str_t) pg_str_lit("job");

    fuzz_arena_reset(&arena, 64 << 20,
                     (opt & 0xf0) == 0xf0 ? (opt & 0x0f) * 512
                                          : (size_t) 64 << 20);
    al = fuzz_arena_allocator(&arena);

    check(pg_matcher_init(&eq, PG_MATCH_EQ, name, pat, &al, NULL, 0)
          == PG_MATCHER_OK || (opt & 0xf0) == 0xf0);
    check(pg_matcher_init(&neq, PG_MATCH_NEQ, name, pat, &al, NULL, 0)
          == PG_MATCHER_OK || (opt & 0xf0) == 0xf0);

    memset(err, 0x7f, sizeof(err));
    rc = pg_matcher_init(&re, PG_MATCH_RE, name, pat, &al, err,
                         1 + (opt % sizeof(err)));
    rc2 = pg_matcher_init(&nre, PG_MATCH_NRE, name, pat, &al, err2,
                          sizeof(err2));

    check(rc == PG_MATCHER_OK || rc == PG_MATCHER_BAD_RE
          || rc == PG_MATCHER_NOMEM);

    if (rc == PG_MATCHER_NOMEM || rc2 == PG_MATCHER_NOMEM) {
        return 0;
    }

    check(rc == rc2);

    if (rc == PG_MATCHER_BAD_RE) {
        check(memchr(err, '\0', 1 + (opt % sizeof(err))) != NULL);
        check(memchr(err2, '\0', sizeof(err2)) != NULL);
        return 0;
    }

    check(pg_matcher_matches(&eq, v) == pg_str_eq(pat, v));
    check(pg_matcher_matches(&neq, v) == !pg_str_eq(pat, v));

    r = pg_matcher_matches(&re, v);
    check(r == 0 || r == 1);
    check(pg_matcher_matches(&nre, v) == !r);

    if (plain(pat)) {
        check(r == pg_str_eq(pat, v));
    }

    /* a regexp matches itself-as-text only if Go would say so; at least
     * the two compiled forms must agree on it */
    check(pg_matcher_matches(&re, pat) != pg_matcher_matches(&nre, pat));

    if (opt & 1) {
        d = derived("(?:", pat, NULL, ")", v, &al);
        check(d == -1 || d == r);
    }

    if (opt & 2) {
        d = derived("(?:", pat, ")|(?:", ")", v, &al);
        check(d == -1 || d == r);
    }

    return 0;
}
