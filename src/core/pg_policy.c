/*
 * Forwarding policy, kept apart from nginx so that the decision table and
 * the backoff can be tested exhaustively.
 */

#include "pg_policy.h"
#include "pg_time.h"

#include <time.h>


pg_attempt_e
pg_attempt_classify(unsigned status)
{
    if (status >= 200 && status < 300) {
        return PG_ATTEMPT_STORED;
    }

    if (status == 400 || status == 409) {
        return PG_ATTEMPT_REJECTED;
    }

    if (status == 0 || status == 429 || status >= 500) {
        return PG_ATTEMPT_RETRY;
    }

    /* 401, 403, 404, 413...: the target is misconfigured, not the data */
    return PG_ATTEMPT_MISCONFIGURED;
}


uint64_t
pg_backoff_ms(uint64_t first_ms, uint64_t max_ms, unsigned retry,
    uint32_t rnd)
{
    uint64_t  cap;

    cap = first_ms;

    while (retry-- && cap < max_ms) {
        cap *= 2;
    }

    if (cap > max_ms) {
        cap = max_ms;
    }

    /* uniform in [0, cap] */
    return (uint64_t) (((unsigned __int128) rnd * (cap + 1)) >> 32);
}


static int
pg_parse_digits(const uint8_t **pp, const uint8_t *end, int n, int *v)
{
    int  r, i;

    r = 0;

    for (i = 0; i < n; i++) {
        if (*pp == end || **pp < '0' || **pp > '9') {
            return -1;
        }
        r = r * 10 + (*(*pp)++ - '0');
    }

    *v = r;

    return 0;
}


static int
pg_parse_month(const uint8_t **pp, const uint8_t *end)
{
    static const char  months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int                i;

    if (end - *pp < 3) {
        return -1;
    }

    for (i = 0; i < 12; i++) {
        if (memcmp(*pp, months + i * 3, 3) == 0) {
            *pp += 3;
            return i;
        }
    }

    return -1;
}


static int
pg_expect(const uint8_t **pp, const uint8_t *end, char c)
{
    if (*pp == end || **pp != (uint8_t) c) {
        return -1;
    }

    (*pp)++;

    return 0;
}


static int
pg_parse_hms(const uint8_t **pp, const uint8_t *end, int *h, int *m, int *s)
{
    if (pg_parse_digits(pp, end, 2, h) || pg_expect(pp, end, ':')
        || pg_parse_digits(pp, end, 2, m) || pg_expect(pp, end, ':')
        || pg_parse_digits(pp, end, 2, s))
    {
        return -1;
    }

    return (*h > 23 || *m > 59 || *s > 60) ? -1 : 0;
}


/* the date as Unix seconds in *t; -1 if it is not an HTTP-date */
static int
pg_http_date(const uint8_t *p, const uint8_t *end, int64_t *t)
{
    const uint8_t  *q;
    int             day, mon, year, h, m, s;

    /* skip the weekday name up to ',' (IMF-fixdate, RFC 850) or ' ' */
    q = p;
    while (q < end && *q != ',' && *q != ' ') {
        q++;
    }

    if (q == end) {
        return -1;
    }

    if (*q == ',') {
        q++;
        if (pg_expect(&q, end, ' ')) {
            return -1;
        }

        if (pg_parse_digits(&q, end, 2, &day)) {
            return -1;
        }

        if (q < end && *q == ' ') {
            /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
            q++;
            if ((mon = pg_parse_month(&q, end)) < 0
                || pg_expect(&q, end, ' ')
                || pg_parse_digits(&q, end, 4, &year))
            {
                return -1;
            }

        } else {
            /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
            if (pg_expect(&q, end, '-')
                || (mon = pg_parse_month(&q, end)) < 0
                || pg_expect(&q, end, '-')
                || pg_parse_digits(&q, end, 2, &year))
            {
                return -1;
            }
            year += year < 70 ? 2000 : 1900;
        }

        if (pg_expect(&q, end, ' ') || pg_parse_hms(&q, end, &h, &m, &s)
            || end - q != 4 || memcmp(q, " GMT", 4) != 0)
        {
            return -1;
        }

    } else {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        q++;
        if ((mon = pg_parse_month(&q, end)) < 0 || pg_expect(&q, end, ' ')) {
            return -1;
        }

        if (q < end && *q == ' ') {
            q++;
            if (pg_parse_digits(&q, end, 1, &day)) {
                return -1;
            }

        } else if (pg_parse_digits(&q, end, 2, &day)) {
            return -1;
        }

        if (pg_expect(&q, end, ' ') || pg_parse_hms(&q, end, &h, &m, &s)
            || pg_expect(&q, end, ' ') || pg_parse_digits(&q, end, 4, &year)
            || q != end)
        {
            return -1;
        }
    }

    if (day < 1 || day > 31) {
        return -1;
    }

    *t = pg_days_from_civil(year, mon + 1, day) * 86400
         + h * 3600 + m * 60 + s;

    return 0;
}


int64_t
pg_retry_after_ms(const uint8_t *v, size_t len, int64_t now)
{
    const uint8_t  *end;
    int64_t         secs, t;
    size_t          i;

    while (len && (v[0] == ' ' || v[0] == '\t')) {
        v++;
        len--;
    }

    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }

    if (len == 0) {
        return -1;
    }

    end = v + len;

    if (v[0] >= '0' && v[0] <= '9') {
        secs = 0;

        for (i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9') {
                return -1;
            }

            if (secs > 86400 * 365) {
                continue;   /* absurd; saturate */
            }

            secs = secs * 10 + (v[i] - '0');
        }

        return secs * 1000;
    }

    if (pg_http_date(v, end, &t) != 0) {
        return -1;
    }

    return t > now ? (t - now) * 1000 : 0;
}


unsigned
pg_ack_need(pg_ack_policy_e policy, unsigned targets)
{
    switch (policy) {
    case PG_ACK_ANY:
        return targets ? 1 : 0;
    case PG_ACK_QUORUM:
        return targets / 2 + 1;
    default:
        return targets;
    }
}


unsigned
pg_ack_decide(pg_ack_policy_e policy, const pg_ack_count_t *c)
{
    unsigned  need, pending;

    need = pg_ack_need(policy, c->targets);
    pending = c->targets - c->stored - c->rejected - c->failed;

    if (c->stored >= need) {
        return 204;
    }

    if (c->stored + pending >= need) {
        return 0;             /* still reachable: wait */
    }

    /* not storable as the policy says */

    if (c->failed) {
        return 503;
    }

    if (pending) {
        return 0;             /* a pending failure would turn this into 503 */
    }

    return PG_ACK_REJECTED;
}
