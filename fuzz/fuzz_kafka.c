/*
 * libFuzzer target: what the Kafka consumer reads from the outside
 * (src/core/pg_kafka.c).  Messages come from whoever can produce to the
 * topic; answers come from the target location over a unix socket.
 *
 * Input: one byte picking the check, then its data.
 *
 *   - decode (every format, a small or a failing allocator): never
 *     crashes; OK means the output scans as a valid WriteRequest with the
 *     stats given, and prompb output is the message itself; POISON always
 *     has a reason and a NUL-terminated error;
 *   - batch: decoded messages concatenated and compressed decode back to
 *     the same WriteRequest, with the summed stats;
 *   - the HTTP response parser, fed in pieces of every size the input asks
 *     for, gives the same answer as when fed at once, never reads past what
 *     it is given, and keeps its buffers NUL-terminated.
 *
 * FUZZ_FLAGS: -max_len=8192
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_kafka.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_kafka", cond)


static fuzz_arena_t  arena;


static void
check_decode(unsigned mode, const uint8_t *data, size_t size)
{
    size_t              max;
    uint8_t            *copy;
    pg_allocator_t      al;
    pg_rw_stats_t       st;
    pg_kafka_rc_e       rc;
    pg_kafka_decoded_t  d;

    /* an exactly sized copy: ASan sees any read past the message */
    copy = malloc(size ? size : 1);
    check(copy != NULL);
    memcpy(copy, data, size);

    max = (mode & 4) ? 256 : 1 << 20;

    fuzz_arena_reset(&arena, 4 << 20, (mode & 8) ? 512 : 4 << 20);
    al = fuzz_arena_allocator(&arena);

    rc = pg_kafka_decode((pg_kafka_format_e) (mode & 3), copy, size, max, &al,
                         &d);

    check(rc == PG_KAFKA_OK || rc == PG_KAFKA_POISON || rc == PG_KAFKA_NOMEM);

    if (rc == PG_KAFKA_POISON) {
        check(d.reason != NULL);
        check(memchr(d.error, '\0', sizeof(d.error)) != NULL);
        check(d.error[0] != '\0');

    } else if (rc == PG_KAFKA_OK) {
        check(d.len <= max);
        check(pg_rw_scan(d.data, d.len, &st, NULL, NULL, NULL) == PG_RW_OK);
        check(st.samples == d.stats.samples && st.series == d.stats.series);

        if (d.format == PG_KAFKA_FORMAT_PROMPB) {
            check(d.data == copy && d.len == size);
        }

        if (d.format == PG_KAFKA_FORMAT_JSON) {
            check(d.stats.series == 1 && d.stats.samples == 1);
        }
    }

    free(copy);
}


static void
check_batch(const uint8_t *data, size_t size)
{
    size_t              half, n, zlen;
    uint8_t            *cat, *z;
    pg_allocator_t      al;
    pg_kafka_decoded_t  a, b, back;

    half = size / 2;

    fuzz_arena_reset(&arena, 4 << 20, 4 << 20);
    al = fuzz_arena_allocator(&arena);

    if (pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, data, half, 1 << 20, &al, &a)
        != PG_KAFKA_OK
        || pg_kafka_decode(PG_KAFKA_FORMAT_JSON, data + half, size - half,
                           1 << 20, &al, &b) != PG_KAFKA_OK)
    {
        return;
    }

    n = a.len + b.len;
    cat = malloc(n ? n : 1);
    zlen = pg_kafka_compress_bound(n);
    z = malloc(zlen);
    check(cat != NULL && z != NULL);

    memcpy(cat, a.data, a.len);
    memcpy(cat + a.len, b.data, b.len);

    check(pg_kafka_compress(cat, n, z, &zlen) == 0);
    check(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen, 1 << 20,
                          &al, &back) == PG_KAFKA_OK);
    check(back.len == n && memcmp(back.data, cat, n) == 0);
    check(back.stats.samples == a.stats.samples + b.stats.samples);
    check(back.stats.series == a.stats.series + b.stats.series);

    free(cat);
    free(z);
}


static void
check_response(const uint8_t *data, size_t size)
{
    size_t              step, off, used, total_once;
    uint8_t            *copy;
    pg_kafka_resp_t     once, pieces;
    pg_kafka_resp_rc_e  rc_once, rc;

    if (size == 0) {
        return;
    }

    step = data[0] % 17 + 1;
    data++;
    size--;

    copy = malloc(size ? size : 1);
    check(copy != NULL);
    memcpy(copy, data, size);

    pg_kafka_resp_init(&once);
    rc_once = pg_kafka_resp_parse(&once, copy, size, &total_once);
    check(total_once <= size);

    pg_kafka_resp_init(&pieces);
    off = 0;
    rc = PG_KAFKA_RESP_AGAIN;

    while (off < size) {
        used = 0;
        rc = pg_kafka_resp_parse(&pieces, copy + off,
                                 size - off < step ? size - off : step, &used);
        check(used <= step);
        off += used;

        if (rc != PG_KAFKA_RESP_AGAIN) {
            break;
        }
    }

    check(rc == rc_once);

    if (rc == PG_KAFKA_RESP_DONE) {
        check(off == total_once);
        check(pieces.status == once.status);
        check(pieces.keepalive == once.keepalive);
        check(pieces.body_len == once.body_len);
        check(memcmp(pieces.body, once.body, once.body_len) == 0);
    }

    check(once.body_len < sizeof(once.body));
    check(once.body[once.body_len] == '\0');

    if (rc_once == PG_KAFKA_RESP_AGAIN) {
        rc = pg_kafka_resp_eof(&once);
        check(rc == PG_KAFKA_RESP_DONE || rc == PG_KAFKA_RESP_ERROR);
    }

    free(copy);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    switch (data[0] >> 4) {
    case 0:
        check_batch(data + 1, size - 1);
        break;
    case 1:
    case 2:
        check_response(data + 1, size - 1);
        break;
    default:
        check_decode(data[0] & 0x0f, data + 1, size - 1);
        break;
    }

    return 0;
}
