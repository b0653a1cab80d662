/*
 * libFuzzer target: the query API's parameters (src/core/pg_time.c): times
 * as Prometheus' parseTime() reads them, query strings and form bodies as
 * Go's r.FormValue() picks them, and JSON bodies.
 *
 * Input: one byte choosing the parser and the error buffer's size, then
 * the text (for the form parser: the URL query string, a NUL byte, the
 * body).  Besides the sanitizers (UBSan catches the integer and
 * float-to-integer overflows a time in seconds or an RFC 3339 year can
 * cause), it checks that
 *
 *   - plain decimal seconds ("-12.5") give exactly their value in ms;
 *   - an accepted request's query lies in memory the allocator handed
 *     out, and absent times are Prometheus' minTime and maxTime;
 *   - a refusal's message is NUL-terminated inside the buffer, whatever
 *     its size;
 *   - running out of memory is PG_TIME_NO_MEMORY, never a crash.
 *
 * FUZZ_FLAGS: -max_len=4096
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_time.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_time", cond)


static fuzz_arena_t  arena;


static void
check_params(pg_time_rc_e rc, const pg_query_params_t *qp, const char *err,
    size_t err_len, size_t input_len)
{
    check(rc == PG_TIME_OK || rc == PG_TIME_BAD_REQUEST
          || rc == PG_TIME_NO_MEMORY);

    if (rc != PG_TIME_OK) {
        check(memchr(err, '\0', err_len) != NULL);
        return;
    }

    /*
     * Not checked: start_ms <= end_ms.  Like Prometheus, pg_time compares
     * the times themselves, then converts them to ms as Go's
     * timestamp.FromTime() does, wrapping for times beyond int64 ms
     * (fuzz/corpus/fuzz_time/regress-end-ms-wraps).
     */
    check(qp->has_start || qp->start_ms == PG_TIME_MIN_MS);
    check(qp->has_end || qp->end_ms == PG_TIME_MAX_MS);
    check(qp->has_query || qp->query.len == 0);
    check(qp->query.len <= 3 * (size_t) PG_QUERY_JSON_MAX + 1);

    /* %-decoding never makes a value longer (JSON may: invalid UTF-8
     * becomes U+FFFD, as in Go) */
    check(input_len == 0 || qp->query.len <= input_len);

    if (qp->query.len > 0) {
        check(qp->query.data != NULL);
        /* readable, all of it (ASan checks the bytes) */
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < qp->query.len; i++) {
            sink ^= qp->query.data[i];
        }
        (void) sink;
    }
}


/* "-?D{1,10}(.D{1,3})?" seconds: exactly that many ms, nothing to round */
static void
check_plain_seconds(const uint8_t *p, size_t n, int r, int64_t ms)
{
    size_t   i, digits, frac;
    int64_t  v, sign;
    int      dot;

    i = 0;
    sign = 1;
    if (n > 0 && p[0] == '-') {
        sign = -1;
        i++;
    }

    v = 0;
    digits = frac = 0;
    dot = 0;

    for ( /* void */ ; i < n; i++) {
        if (p[i] == '.' && !dot) {
            dot = 1;
            continue;
        }
        if (p[i] < '0' || p[i] > '9' || digits > 10 || frac > 3) {
            return;
        }
        v = v * 10 + (p[i] - '0');
        if (dot) {
            frac++;
        } else {
            digits++;
        }
    }

    if (digits == 0 || digits > 10 || frac > 3 || (dot && frac == 0)) {
        return;
    }

    for ( /* void */ ; frac < 3; frac++) {
        v *= 10;
    }

    check(r == 0);
    check(ms == sign * v);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pg_query_params_t   qp;
    pg_allocator_t      al;
    pg_time_rc_e        rc;
    const uint8_t      *z, *args, *body;
    size_t              args_len, body_len, err_len;
    char               *err;
    int64_t             ms;
    unsigned            opt;
    int                 r;

    if (size < 1) {
        return 0;
    }

    opt = data[0];
    data++;
    size--;

    /* the error buffer exactly as large as chosen, so ASan sees overruns */
    err_len = 1 + (opt >> 3) * 8;
    err = malloc(err_len);
    check(err != NULL);
    memset(err, 0x7f, err_len);

    fuzz_arena_reset(&arena, 16 << 20,
                     (opt & 0xc0) == 0xc0 ? (size_t) (opt & 0x38) * 4
                                          : (size_t) 16 << 20);
    al = fuzz_arena_allocator(&arena);

    memset(&qp, 0xa5, sizeof(qp));

    switch (opt % 3) {

    case 0:
        r = pg_parse_time(data, size, &ms);
        check(r == 0 || r == -1);
        check_plain_seconds(data, size, r, ms);
        break;

    case 1:
        z = memchr(data, '\0', size);
        args = data;
        args_len = z ? (size_t) (z - data) : size;
        body = z ? z + 1 : data + size;
        body_len = z ? size - args_len - 1 : 0;

        rc = pg_parse_query_params(args, args_len, body, body_len, &al, &qp,
                                   err, err_len);
        check_params(rc, &qp, err, err_len, size);
        break;

    default:
        rc = pg_parse_query_json(data, size, &al, &qp, err, err_len);
        check_params(rc, &qp, err, err_len, 0);
        break;
    }

    free(err);

    return 0;
}
