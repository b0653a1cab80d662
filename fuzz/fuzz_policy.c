/*
 * libFuzzer target: the forwarding policy (src/core/pg_policy.c).  The
 * Retry-After header comes from a storage, so its parser meets whatever a
 * misbehaving or hostile target sends; the backoff and the ack decision are
 * checked for the properties the fan-out relies on.
 *
 * Input: one byte of options, then (Retry-After) the header value, or
 * (ack) a sequence of target outcomes.
 *
 *   - Retry-After gives -1 or a delay >= 0; plain digits give exactly
 *     their value in seconds (up to the saturation point);
 *   - the backoff never exceeds min(max, first * 2^retry);
 *   - the ack decision is one of 0, 204, 503, PG_ACK_REJECTED; it is known
 *     once no target is pending; and once it is known, later outcomes of
 *     background targets never change it (the sender was answered).
 *
 * FUZZ_FLAGS: -max_len=256
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_policy.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_policy", cond)


static void
retry_after(const uint8_t *p, size_t n, int64_t now)
{
    int64_t   r;
    size_t    i;
    uint64_t  v;
    int       digits;

    r = pg_retry_after_ms(p, n, now);
    check(r >= -1);

    digits = n > 0 && n <= 9;
    v = 0;
    for (i = 0; i < n && digits; i++) {
        digits = p[i] >= '0' && p[i] <= '9';
        v = v * 10 + (p[i] - '0');
    }

    /* beyond a year the parser saturates (the retry timeout rules then) */
    if (digits && v <= 86400 * 365) {
        check(r == (int64_t) v * 1000);

    } else if (digits) {
        check(r >= (int64_t) 86400 * 365 * 1000);
    }
}


static void
backoff(const uint8_t *p, size_t n)
{
    uint64_t  first, max, got, cap;
    unsigned  retry, i;
    uint32_t  rnd;

    if (n < 12) {
        return;
    }

    /* what the directive allows: ngx_msec_t values, far below 2^40 */
    first = ((uint64_t) p[0] << 32 | (uint64_t) p[1] << 24 | p[2] << 16
             | p[3] << 8 | p[4]) & ((1ULL << 40) - 1);
    max = ((uint64_t) p[5] << 32 | (uint64_t) p[6] << 24 | p[7] << 16
           | p[8] << 8 | p[9]) & ((1ULL << 40) - 1);
    retry = p[10] % 80;
    memcpy(&rnd, p + (n - 4), 4);

    got = pg_backoff_ms(first, max, retry, rnd);

    cap = first;
    for (i = 0; i < retry && cap < max; i++) {
        cap *= 2;
    }
    if (cap > max) {
        cap = max;
    }

    check(got <= cap);
    check(pg_backoff_ms(first, max, retry, 0) == 0);
    /* the top of the draw reaches the cap, within rounding */
    got = pg_backoff_ms(first, max, retry, UINT32_MAX);
    check(got <= cap && got + ((cap + 1) >> 32) + 1 >= cap);
}


static void
ack(unsigned opt, const uint8_t *p, size_t n)
{
    pg_ack_count_t   c;
    pg_ack_policy_e  policy;
    unsigned         decided, d, need, pending;
    size_t           i;

    policy = (pg_ack_policy_e) (opt % 3);
    memset(&c, 0, sizeof(c));
    c.targets = 1 + (opt >> 2) % 16;

    need = pg_ack_need(policy, c.targets);
    check(need >= 1 && need <= c.targets);

    decided = pg_ack_decide(policy, &c);

    for (i = 0; i < n; i++) {
        pending = c.targets - c.stored - c.rejected - c.failed;
        if (pending == 0) {
            break;
        }

        switch (p[i] % 3) {
        case 0: c.stored++; break;
        case 1: c.rejected++; break;
        default: c.failed++; break;
        }

        d = pg_ack_decide(policy, &c);
        check(d == 0 || d == 204 || d == 503 || d == PG_ACK_REJECTED);
        check((d == 204) == (c.stored >= need));

        if (decided != 0) {
            check(d == decided);
        }
        decided = d;
    }

    if (c.stored + c.rejected + c.failed == c.targets) {
        check(pg_ack_decide(policy, &c) != 0);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned  opt;
    int64_t   now;
    unsigned  i;

    if (size < 1) {
        return 0;
    }

    opt = data[0];
    data++;
    size--;

    for (i = 0; i < 1000; i += 97) {
        check((unsigned) pg_attempt_classify(i) <= PG_ATTEMPT_MISCONFIGURED);
    }

    switch (opt & 3) {
    case 0:
    case 1:
        now = (opt & 1) ? 1700000000 : (int64_t) (opt >> 2) * 100000000;
        retry_after(data, size, now);
        break;
    case 2:
        backoff(data, size);
        break;
    default:
        ack(opt >> 2, data, size);
        break;
    }

    return 0;
}
