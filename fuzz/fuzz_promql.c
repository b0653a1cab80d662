/*
 * libFuzzer target: PromQL selector extraction (src/core/pg_promql.c, with
 * the matchers and regular expressions of pg_matcher.c behind it).
 *
 * The input is a query.  Besides the sanitizers (and libFuzzer's timeout,
 * which is what a catastrophic query would hit), the target checks:
 *
 *   - a refusal has a position inside the query and a NUL-terminated
 *     message; pg_promql_error_format() honours every buffer size;
 *   - every extracted selector has a matcher that does not match the empty
 *     string (Prometheus refuses selectors that match everything);
 *   - pg_selector_format() honours every buffer size, and its text parses
 *     back to the very same matchers (the selector round-trips);
 *   - each matcher agrees with itself on a few label values, and a
 *     compiled regexp with its negation;
 *   - running out of memory (a small cap for some inputs) is reported as
 *     PG_PROMQL_NOMEM, never a crash.
 *
 * FUZZ_FLAGS: -max_len=2048 -dict=fuzz/promql.dict
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_promql.h"
#include "pg_matcher.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_promql", cond)


static fuzz_arena_t  arena;
static fuzz_arena_t  arena2;


static void
check_format(const pg_selector_t *sel, char *out, size_t *outlen)
{
    char    small[8];
    size_t  n, k;

    n = pg_selector_format(sel, NULL, 0);
    check(n >= 2);

    for (k = 1; k <= sizeof(small); k++) {
        memset(small, 0x7f, sizeof(small));
        check(pg_selector_format(sel, small, k) == n);
        check(strlen(small) == (n < k ? n : k - 1));
        if (k < sizeof(small)) {
            check((unsigned char) small[k] == 0x7f);
        }
    }

    check(pg_selector_format(sel, out, n + 1) == n);
    check(strlen(out) == n);
    *outlen = n;
}


static void
check_matchers(const pg_selector_t *sel)
{
    size_t               i;
    int                  nonempty, r;
    const pg_matcher_t  *m;
    pg_matcher_t         neg;
    pg_allocator_t       al;
    static const char   *probes[] = { "", "a", "up", "0.5", "\xff", "a\nb" };
    size_t               j;

    nonempty = 0;

    for (i = 0; i < sel->nmatchers; i++) {
        m = &sel->matchers[i];

        check((unsigned) m->op <= PG_MATCH_NRE);
        /*
         * a quoted name may be empty: Prometheus 3.5 takes {""="x"}
         * (promtool 3.5.3 formats it as is), a selector no series matches
         */
        check((m->re != NULL) == (m->op == PG_MATCH_RE
                                  || m->op == PG_MATCH_NRE));

        if (!pg_matcher_matches(m, (pg_str_t) pg_str_lit(""))) {
            nonempty = 1;
        }

        if (m->op == PG_MATCH_EQ || m->op == PG_MATCH_NEQ) {
            check(pg_matcher_matches(m, m->value)
                  == (m->op == PG_MATCH_EQ));
            continue;
        }

        /* the negated operator on the same pattern says the opposite */
        al = fuzz_arena_allocator(&arena2);
        fuzz_arena_reset(&arena2, 64 << 20, 64 << 20);

        r = pg_matcher_init(&neg, m->op == PG_MATCH_RE ? PG_MATCH_NRE
                                                       : PG_MATCH_RE,
                            m->name, m->value, &al, NULL, 0);
        if (r == PG_MATCHER_NOMEM) {
            continue;
        }
        check(r == PG_MATCHER_OK);

        for (j = 0; j < sizeof(probes) / sizeof(probes[0]); j++) {
            pg_str_t v = { (const uint8_t *) probes[j], strlen(probes[j]) };
            check(pg_matcher_matches(m, v) != pg_matcher_matches(&neg, v));
        }

        check(pg_matcher_matches(m, m->value)
              != pg_matcher_matches(&neg, m->value));
    }

    check(nonempty);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pg_selector_set_t   set, set2;
    pg_promql_error_t   err;
    pg_promql_rc_e      rc;
    pg_allocator_t      al, al2;
    size_t              i, j, n, need, k;
    char                buf[600], *text;
    const pg_matcher_t *a, *b;

    /* about one input in 16 runs with little memory */
    fuzz_arena_reset(&arena, 64 << 20,
                     size > 0 && (data[size - 1] & 0x0f) == 0x0f
                     ? (size_t) data[0] * 64 : (size_t) 64 << 20);
    al = fuzz_arena_allocator(&arena);

    memset(&err, 0x5a, sizeof(err));

    rc = pg_promql_selectors(data, size, &al, &set, &err);

    if (rc == PG_PROMQL_NOMEM) {
        return 0;
    }

    if (rc != PG_PROMQL_OK) {
        check(rc == PG_PROMQL_ERROR);
        check(err.pos <= size);
        check(memchr(err.message, '\0', sizeof(err.message)) != NULL);

        need = pg_promql_error_format(data, size, &err, NULL, 0);
        check(need > 0);

        for (k = 1; k < 12; k++) {
            check(pg_promql_error_format(data, size, &err, buf, k) == need);
            check(strlen(buf) == (need < k ? need : k - 1));
        }

        check(pg_promql_error_format(data, size, &err, buf, sizeof(buf))
              == need);
        check(strlen(buf) == (need < sizeof(buf) ? need : sizeof(buf) - 1));

        return 0;
    }

    check(set.nselectors == 0 || set.selectors != NULL);

    for (i = 0; i < set.nselectors; i++) {
        check(set.selectors[i].nmatchers > 0);

        check_matchers(&set.selectors[i]);

        n = pg_selector_format(&set.selectors[i], NULL, 0);
        text = malloc(n + 1);
        check(text != NULL);
        check_format(&set.selectors[i], text, &n);

        /* the text parses back to the same matchers */
        fuzz_arena_reset(&arena2, 64 << 20, 64 << 20);
        al2 = fuzz_arena_allocator(&arena2);

        rc = pg_promql_selectors((const uint8_t *) text, n, &al2, &set2,
                                 &err);
        if (rc != PG_PROMQL_OK) {
            fprintf(stderr, "fuzz_promql: %s does not parse back: %s\n",
                    text, rc == PG_PROMQL_ERROR ? err.message : "nomem");
            abort();
        }

        check(set2.nselectors == 1);
        check(set2.selectors[0].nmatchers == set.selectors[i].nmatchers);

        for (j = 0; j < set2.selectors[0].nmatchers; j++) {
            a = &set.selectors[i].matchers[j];
            b = &set2.selectors[0].matchers[j];
            check(a->op == b->op);
            check(pg_str_eq(a->name, b->name));
            check(pg_str_eq(a->value, b->value));
        }

        free(text);
    }

    return 0;
}
