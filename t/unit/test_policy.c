/*
 * Forwarding policy (src/core/pg_policy.c): attempt classification, backoff,
 * Retry-After and the ack decision for every combination of outcomes.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "pg_policy.h"


static void
test_classify(void **state)
{
    unsigned  s;

    for (s = 200; s < 300; s++) {
        assert_int_equal(pg_attempt_classify(s), PG_ATTEMPT_STORED);
    }

    assert_int_equal(pg_attempt_classify(400), PG_ATTEMPT_REJECTED);
    assert_int_equal(pg_attempt_classify(409), PG_ATTEMPT_REJECTED);
    assert_int_equal(pg_attempt_classify(429), PG_ATTEMPT_RETRY);
    assert_int_equal(pg_attempt_classify(0), PG_ATTEMPT_RETRY);

    for (s = 500; s < 600; s++) {
        assert_int_equal(pg_attempt_classify(s), PG_ATTEMPT_RETRY);
    }

    assert_int_equal(pg_attempt_classify(401), PG_ATTEMPT_MISCONFIGURED);
    assert_int_equal(pg_attempt_classify(403), PG_ATTEMPT_MISCONFIGURED);
    assert_int_equal(pg_attempt_classify(404), PG_ATTEMPT_MISCONFIGURED);
    assert_int_equal(pg_attempt_classify(413), PG_ATTEMPT_MISCONFIGURED);
    assert_int_equal(pg_attempt_classify(301), PG_ATTEMPT_MISCONFIGURED);
    assert_int_equal(pg_attempt_classify(101), PG_ATTEMPT_MISCONFIGURED);
}


static void
test_backoff(void **state)
{
    unsigned  retry;
    uint64_t  d, cap, max_seen;
    uint32_t  rnd;

    /* bounds: [0, min(max, first * 2^retry)] */
    for (retry = 0; retry < 40; retry++) {
        cap = 100;
        for (unsigned i = 0; i < retry && cap < 2000; i++) {
            cap *= 2;
        }
        if (cap > 2000) {
            cap = 2000;
        }

        assert_int_equal(pg_backoff_ms(100, 2000, retry, 0), 0);
        assert_int_equal(pg_backoff_ms(100, 2000, retry, 0xffffffffu), cap);

        max_seen = 0;
        for (rnd = 1; rnd < 0xfff00000u; rnd += 0x0100007u) {
            d = pg_backoff_ms(100, 2000, retry, rnd);
            assert_true(d <= cap);
            if (d > max_seen) {
                max_seen = d;
            }
        }

        /* full jitter spreads over the whole range */
        assert_true(max_seen > cap * 9 / 10);
    }

    assert_int_equal(pg_backoff_ms(100, 2000, 1, 0xffffffffu), 200);
    assert_int_equal(pg_backoff_ms(100, 2000, 4, 0xffffffffu), 1600);
    assert_int_equal(pg_backoff_ms(100, 2000, 5, 0xffffffffu), 2000);
    assert_int_equal(pg_backoff_ms(0, 0, 3, 12345), 0);
}


static int64_t
ra(const char *s, int64_t now)
{
    return pg_retry_after_ms((const uint8_t *) s, strlen(s), now);
}


static void
test_retry_after(void **state)
{
    /* 1994-11-06T08:49:37Z */
    const int64_t  t = 784111777;

    assert_int_equal(ra("0", t), 0);
    assert_int_equal(ra("1", t), 1000);
    assert_int_equal(ra(" 120 ", t), 120000);
    assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 GMT", t), 0);
    assert_int_equal(ra("Sun, 06 Nov 1994 08:49:47 GMT", t), 10000);
    assert_int_equal(ra("Sunday, 06-Nov-94 08:49:39 GMT", t), 2000);
    assert_int_equal(ra("Sun Nov  6 08:49:40 1994", t), 3000);
    assert_int_equal(ra("Sun, 06 Nov 1994 08:49:00 GMT", t), 0);  /* past */
    assert_int_equal(ra("Thu, 01 Jan 1970 00:00:00 GMT", 0), 0);
    assert_int_equal(ra("Wed, 31 Dec 1969 23:59:59 GMT", t), 0);
    assert_int_equal(ra("Sat, 01 Jan 2000 00:00:01 GMT", 946684800), 1000);

    assert_int_equal(ra("", t), -1);
    assert_int_equal(ra("soon", t), -1);
    assert_int_equal(ra("-1", t), -1);
    assert_int_equal(ra("1.5", t), -1);
    assert_int_equal(ra("Sun, 06 Foo 1994 08:49:37 GMT", t), -1);
    assert_int_equal(ra("Sun, 06 Nov 1994 25:49:37 GMT", t), -1);
    assert_int_equal(ra("Sun, 06 Nov 1994 08:49:37 UTC", t), -1);

    /* absurd values saturate instead of overflowing */
    assert_true(ra("99999999999999999999999999", t) > 0);
}


static void
test_ack_need(void **state)
{
    assert_int_equal(pg_ack_need(PG_ACK_ALL, 3), 3);
    assert_int_equal(pg_ack_need(PG_ACK_QUORUM, 1), 1);
    assert_int_equal(pg_ack_need(PG_ACK_QUORUM, 2), 2);
    assert_int_equal(pg_ack_need(PG_ACK_QUORUM, 3), 2);
    assert_int_equal(pg_ack_need(PG_ACK_QUORUM, 4), 3);
    assert_int_equal(pg_ack_need(PG_ACK_QUORUM, 5), 3);
    assert_int_equal(pg_ack_need(PG_ACK_ANY, 5), 1);
}


/*
 * The whole decision table: for 1..4 targets and every split of them into
 * stored / rejected / failed / pending, the answer follows the rule
 *   stored >= need                      -> 204
 *   stored + pending >= need            -> wait
 *   failed > 0                          -> 503
 *   pending > 0                         -> wait
 *   otherwise                           -> the first rejection
 */
static void
test_ack_table(void **state)
{
    unsigned         n, s, j, f, need, expect, got, pending;
    pg_ack_policy_e  p;
    pg_ack_count_t   c;
    unsigned         cases;

    cases = 0;

    for (p = PG_ACK_ALL; p <= PG_ACK_ANY; p++) {
        for (n = 1; n <= 4; n++) {
            need = pg_ack_need(p, n);

            for (s = 0; s <= n; s++) {
                for (j = 0; s + j <= n; j++) {
                    for (f = 0; s + j + f <= n; f++) {
                        c.targets = n;
                        c.stored = s;
                        c.rejected = j;
                        c.failed = f;
                        pending = n - s - j - f;

                        if (s >= need) {
                            expect = 204;
                        } else if (s + pending >= need) {
                            expect = 0;
                        } else if (f) {
                            expect = 503;
                        } else if (pending) {
                            expect = 0;
                        } else {
                            expect = PG_ACK_REJECTED;
                        }

                        got = pg_ack_decide(p, &c);
                        if (got != expect) {
                            fail_msg("policy %d n=%u s=%u j=%u f=%u: got "
                                     "%u, want %u", p, n, s, j, f, got,
                                     expect);
                        }

                        /* never 2xx unless the policy's count is stored */
                        if (got == 204) {
                            assert_true(s >= need);
                        }

                        cases++;
                    }
                }
            }
        }
    }

    assert_true(cases > 100);

    /* spot checks in words */
    c = (pg_ack_count_t) { 2, 1, 0, 1 };
    assert_int_equal(pg_ack_decide(PG_ACK_ALL, &c), 503);
    assert_int_equal(pg_ack_decide(PG_ACK_ANY, &c), 204);
    c = (pg_ack_count_t) { 2, 1, 1, 0 };
    assert_int_equal(pg_ack_decide(PG_ACK_ALL, &c), PG_ACK_REJECTED);
    c = (pg_ack_count_t) { 3, 2, 0, 0 };
    assert_int_equal(pg_ack_decide(PG_ACK_QUORUM, &c), 204);
    assert_int_equal(pg_ack_decide(PG_ACK_ALL, &c), 0);
    c = (pg_ack_count_t) { 2, 0, 1, 0 };
    assert_int_equal(pg_ack_decide(PG_ACK_ALL, &c), 0);  /* wait for #2 */
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_ack_need),
        cmocka_unit_test(test_ack_table),
    };

    return cmocka_run_group_tests_name("forwarding policy", tests, NULL,
                                       NULL);
}
