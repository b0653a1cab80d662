/*
 * libFuzzer target: what the Kafka consumer reads from the outside
 * (src/core/pg_kafka.c).  Messages come from whoever can produce to the
 * topic; answers come from the target location over a unix socket.
 *
 * Input: one byte picking the check, then its data.
 *
 *   - decode (every format, a small or a failing allocator): never
 *     crashes; OK means the output decodes as a well-formed request of the
 *     version given, with the stats and invalid count given, whose
 *     top-level fields are that version's; raw output is the message
 *     itself, snappy output the message decompressed; a 2.0 request
 *     compressed as the consumer posts it decodes back the same, and never
 *     shares a batch; POISON always has a reason and a NUL-terminated
 *     error;
 *   - batch: decoded 1.0 messages concatenated and compressed decode back
 *     to the same WriteRequest, with the summed stats;
 *   - the HTTP response parser, fed in pieces of every size the input asks
 *     for, gives the same answer as when fed at once, never reads past what
 *     it is given, and keeps its buffers NUL-terminated.
 *
 * The first byte: high nibble 0 batch, 1-2 response, 3-7 decode with the
 * format in its low 2 bits (auto, prompb, prompb-snappy, json), 8-15
 * decode as prompb-v2; bit 2 a small size limit, bit 3 a small arena.
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
static fuzz_arena_t  check_arena;   /* for the checks: arena holds d.data */


/* a 2.0 request as the consumer posts it: compressed, decoded back */

static void
check_v2_post(const pg_kafka_decoded_t *d)
{
    size_t              zlen;
    uint8_t            *z;
    pg_allocator_t      al;
    pg_kafka_batch_t    b;
    pg_kafka_decoded_t  back;
    pg_str_t            none = { NULL, 0 };

    pg_kafka_batch_init(&b, 100, 1 << 20);
    check(pg_kafka_batch_add(&b, d->len, 0, none, PG_RW_V2) == 1);
    check(pg_kafka_batch_closed(&b));
    check(pg_kafka_batch_add(&b, 1, 0, none, PG_RW_V2) == 0);
    check(pg_kafka_batch_add(&b, 1, 0, none, PG_RW_V1) == 0);

    zlen = pg_snappy_max_encoded(d->len);
    z = malloc(zlen);
    check(z != NULL);
    check(pg_snappy_encode(d->data, d->len, z, &zlen) == PG_SNAPPY_OK);

    al = fuzz_arena_allocator(&check_arena);

    if (pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_V2, z, zlen, 1 << 20, &al,
                        &back) != PG_KAFKA_NOMEM)
    {
        check(back.reason == NULL);
        check(back.version == PG_RW_V2 && back.snappy);
        check(back.len == d->len && memcmp(back.data, d->data, d->len) == 0);
        check(back.stats.samples == d->stats.samples);
        check(back.stats.series == d->stats.series);
        check(back.invalid == d->invalid);
    }

    free(z);
}


static void
check_decode(unsigned sel, const uint8_t *data, size_t size)
{
    size_t              max, dlen;
    unsigned            mode, fields;
    uint8_t            *copy, *plain;
    pg_allocator_t      al;
    pg_rw_reason_e      reason;
    pg_rw_request_t     req;
    pg_kafka_rc_e       rc;
    pg_kafka_format_e   format;
    pg_kafka_decoded_t  d;

    mode = sel & 0x0f;
    format = (sel >> 4) >= 8 ? PG_KAFKA_FORMAT_PROMPB_V2
                             : (pg_kafka_format_e) (mode & 3);

    /* an exactly sized copy: ASan sees any read past the message */
    copy = malloc(size ? size : 1);
    check(copy != NULL);
    memcpy(copy, data, size);

    max = (mode & 4) ? 256 : 1 << 20;

    fuzz_arena_reset(&arena, 4 << 20, (mode & 8) ? 512 : 4 << 20);
    al = fuzz_arena_allocator(&arena);

    rc = pg_kafka_decode(format, copy, size, max, &al, &d);

    check(rc == PG_KAFKA_OK || rc == PG_KAFKA_POISON || rc == PG_KAFKA_NOMEM);

    if (rc == PG_KAFKA_POISON) {
        check(d.reason != NULL);
        check(memchr(d.error, '\0', sizeof(d.error)) != NULL);
        check(d.error[0] != '\0');

    } else if (rc == PG_KAFKA_OK) {
        check(d.reason == NULL);
        check(d.len <= max);
        check(d.version == PG_RW_V1 || d.version == PG_RW_V2);
        check(memchr(d.error, '\0', sizeof(d.error)) != NULL);
        check((d.invalid != 0) == (d.error[0] != '\0'));

        fuzz_arena_reset(&check_arena, 4 << 20, 4 << 20);
        al = fuzz_arena_allocator(&check_arena);

        reason = pg_rw_decode(d.data, d.len, d.version, &al, &req, NULL,
                              NULL);
        check(reason == PG_RW_OK);
        check(req.stats.samples == d.stats.samples);
        check(req.stats.series == d.stats.series);
        check(req.stats.exemplars == d.stats.exemplars);
        check(req.invalid_series + req.invalid_metadata == d.invalid);

        fields = pg_kafka_rw_fields(d.data, d.len);
        check(fields == 0
              || fields == (d.version == PG_RW_V2 ? PG_KAFKA_FIELDS_V2
                                                  : PG_KAFKA_FIELDS_V1));

        switch (format) {
        case PG_KAFKA_FORMAT_PROMPB:
            check(d.version == PG_RW_V1 && !d.snappy);
            break;
        case PG_KAFKA_FORMAT_PROMPB_SNAPPY:
            check(d.version == PG_RW_V1 && d.snappy);
            break;
        case PG_KAFKA_FORMAT_JSON:
            check(d.version == PG_RW_V1 && !d.snappy);
            check(d.stats.series + d.invalid == 1);
            check(d.stats.series == 0 || d.stats.samples == 1);
            break;
        case PG_KAFKA_FORMAT_PROMPB_V2:
            check(d.version == PG_RW_V2);
            break;
        default:
            check(d.format == (d.version == PG_RW_V2
                               ? PG_KAFKA_FORMAT_PROMPB_V2
                               : d.snappy ? PG_KAFKA_FORMAT_PROMPB_SNAPPY
                                          : PG_KAFKA_FORMAT_PROMPB));
            break;
        }

        if (format != PG_KAFKA_FORMAT_JSON && !d.snappy) {
            check(d.data == copy && d.len == size);
        }

        if (d.snappy) {
            check(pg_snappy_decoded_length(copy, size, max, &dlen)
                  == PG_SNAPPY_OK && dlen == d.len);
            plain = malloc(dlen ? dlen : 1);
            check(plain != NULL);
            check(pg_snappy_decode(copy, size, plain, dlen) == PG_SNAPPY_OK);
            check(memcmp(plain, d.data, dlen) == 0);
            free(plain);
        }

        if (d.version == PG_RW_V2) {
            check_v2_post(&d);
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

    /* only 1.0 requests concatenate (a 2.0 one is posted alone) */

    if (pg_kafka_decode(PG_KAFKA_FORMAT_AUTO, data, half, 1 << 20, &al, &a)
        != PG_KAFKA_OK
        || a.version != PG_RW_V1
        || pg_kafka_decode(PG_KAFKA_FORMAT_JSON, data + half, size - half,
                           1 << 20, &al, &b) != PG_KAFKA_OK)
    {
        return;
    }

    n = a.len + b.len;
    cat = malloc(n ? n : 1);
    zlen = pg_snappy_max_encoded(n);
    z = malloc(zlen);
    check(cat != NULL && z != NULL);

    memcpy(cat, a.data, a.len);
    memcpy(cat + a.len, b.data, b.len);

    check(pg_snappy_encode(cat, n, z, &zlen) == PG_SNAPPY_OK);
    check(pg_kafka_decode(PG_KAFKA_FORMAT_PROMPB_SNAPPY, z, zlen, 1 << 20,
                          &al, &back) == PG_KAFKA_OK);
    check(back.len == n && memcmp(back.data, cat, n) == 0);
    check(back.stats.samples == a.stats.samples + b.stats.samples);
    check(back.stats.series == a.stats.series + b.stats.series);
    check(back.invalid == a.invalid + b.invalid);

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
        check_decode(data[0], data + 1, size - 1);
        break;
    }

    return 0;
}
