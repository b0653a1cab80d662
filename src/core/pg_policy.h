/*
 * Forwarding policy: how a target's answer is classified, how long to wait
 * before the next attempt, and when the sender can be answered.
 */

#ifndef PG_POLICY_H
#define PG_POLICY_H

#include "pg_core.h"


typedef enum {
    PG_TARGET_PENDING = 0,
    PG_TARGET_STORED,         /* 2xx */
    PG_TARGET_REJECTED,       /* 400, 409: the data is bad, final */
    PG_TARGET_FAILED          /* anything else, after retries */
} pg_target_state_e;


typedef enum {
    PG_ATTEMPT_STORED,
    PG_ATTEMPT_REJECTED,
    PG_ATTEMPT_RETRY,         /* 5xx, 429, network error, timeout */
    PG_ATTEMPT_MISCONFIGURED  /* other 4xx, 1xx, 3xx: not retried */
} pg_attempt_e;


typedef enum {
    PG_ACK_ALL = 0,
    PG_ACK_QUORUM,
    PG_ACK_ANY
} pg_ack_policy_e;


/* status 0 means no HTTP answer at all (connect error, reset) */
pg_attempt_e pg_attempt_classify(unsigned status);


/*
 * Exponential backoff with full jitter: a uniform draw in
 * [0, min(max, first * 2^retry)], retry counted from 0.  rnd is a uniform
 * 32-bit random number supplied by the caller.
 */
uint64_t pg_backoff_ms(uint64_t first_ms, uint64_t max_ms, unsigned retry,
    uint32_t rnd);


/*
 * Retry-After: delta-seconds or an HTTP-date (IMF-fixdate, RFC 850 or
 * asctime).  now is the current Unix time in seconds.  Returns the delay in
 * ms, or -1 if the value is not valid.  A date in the past gives 0.
 */
int64_t pg_retry_after_ms(const uint8_t *v, size_t len, int64_t now);


typedef struct {
    unsigned        targets;
    unsigned        stored;
    unsigned        rejected;
    unsigned        failed;
} pg_ack_count_t;


/* how many stored targets the policy needs */
unsigned pg_ack_need(pg_ack_policy_e policy, unsigned targets);


/*
 * The answer once it is known: 204, 503 (some target failed), or
 * PG_ACK_REJECTED (answer the first rejection's status); 0 while it
 * still depends on pending targets.
 */
#define PG_ACK_REJECTED  1

unsigned pg_ack_decide(pg_ack_policy_e policy, const pg_ack_count_t *c);

#endif /* PG_POLICY_H */
