/*
 * A spool's records (src/core/pg_spool.c): the frame is a WAL frame, its
 * CRC covers the body, decoding takes back what was encoded and refuses
 * what is malformed.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pg_spool.h"


static pg_spool_header_t  hdrs[] = {
    { pg_str_lit("X-Scope-OrgID"), pg_str_lit("tenant-1") },
    { pg_str_lit("Authorization"), pg_str_lit("Bearer s3cret") },
    { pg_str_lit("Empty"), { NULL, 0 } },
};


static size_t
make_frame(uint8_t *out, size_t size, uint64_t seq, const uint8_t *body,
    size_t blen)
{
    size_t             hlen;
    pg_spool_record_t  rec;

    rec.seq = seq;
    rec.ts = 1700000000123LL;
    rec.version = 2;
    rec.headers = hdrs;
    rec.nheaders = 3;
    rec.body = body;
    rec.body_len = blen;

    hlen = pg_spool_head_size(&rec);
    assert_true(hlen > 0 && hlen + blen <= size);
    assert_int_equal(pg_spool_encode_head(&rec, out), hlen);
    memcpy(out + hlen, body, blen);

    return hlen + blen;
}


typedef struct {
    const uint8_t  *payload;
    size_t          len;
    uint64_t        seq;
    int             n;
} seen_t;


static int
seen_cb(void *ctx, const uint8_t *payload, size_t len, uint64_t seq,
    size_t offset)
{
    seen_t  *s = ctx;

    (void) offset;
    s->payload = payload;
    s->len = len;
    s->seq = seq;
    s->n++;

    return 0;
}


static void
test_round_trip(void **state)
{
    uint8_t             buf[4096], body[300];
    size_t              n, i;
    seen_t              seen;
    pg_wal_scan_t       res;
    pg_spool_record_t   rec;
    pg_spool_header_t   out[PG_SPOOL_MAX_HEADERS];

    (void) state;

    for (i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t) (i * 7);
    }

    n = make_frame(buf, sizeof(buf), 42, body, sizeof(body));

    memset(&seen, 0, sizeof(seen));
    pg_wal_scan(buf, n, seen_cb, &seen, &res);

    assert_int_equal(seen.n, 1);
    assert_int_equal(res.records, 1);
    assert_int_equal(res.corrupt, 0);
    assert_int_equal(seen.seq, 42);
    assert_int_equal(pg_wal_payload_seq(seen.payload, seen.len), 42);

    assert_int_equal(pg_spool_decode(seen.payload, seen.len, out, &rec), 0);
    assert_int_equal(rec.seq, 42);
    assert_int_equal(rec.ts, 1700000000123LL);
    assert_int_equal(rec.version, 2);
    assert_int_equal(rec.nheaders, 3);
    assert_int_equal(rec.headers[1].value.len, 13);
    assert_memory_equal(rec.headers[1].value.data, "Bearer s3cret", 13);
    assert_int_equal(rec.headers[2].value.len, 0);
    assert_int_equal(rec.body_len, sizeof(body));
    assert_memory_equal(rec.body, body, sizeof(body));
}


static void
test_crc_covers_the_body(void **state)
{
    uint8_t        buf[4096], body[100];
    size_t         n;
    pg_wal_scan_t  res;

    (void) state;

    memset(body, 'b', sizeof(body));
    n = make_frame(buf, sizeof(buf), 7, body, sizeof(body));

    buf[n - 1] ^= 1;

    pg_wal_scan(buf, n, NULL, NULL, &res);
    assert_int_equal(res.records, 0);
    assert_int_equal(res.corrupt, 1);
}


static void
test_torn_frame(void **state)
{
    uint8_t        buf[4096], body[100];
    size_t         n;
    pg_wal_scan_t  res;

    (void) state;

    memset(body, 'b', sizeof(body));
    n = make_frame(buf, sizeof(buf), 7, body, sizeof(body));

    pg_wal_scan(buf, n - 10, NULL, NULL, &res);
    assert_int_equal(res.records, 0);
    assert_true(res.torn);
    assert_int_equal(res.torn_offset, 0);
}


static void
test_malformed_payloads(void **state)
{
    uint8_t             buf[4096], body[10], payload[4096];
    size_t              n, len, cut;
    pg_spool_record_t   rec;
    pg_spool_header_t   out[PG_SPOOL_MAX_HEADERS];

    (void) state;

    memset(body, 'x', sizeof(body));
    n = make_frame(buf, sizeof(buf), 9, body, sizeof(body));
    len = n - PG_WAL_FRAME_HEADER;

    /* every cut is refused, never read past */

    for (cut = 0; cut < len; cut++) {
        memcpy(payload, buf + PG_WAL_FRAME_HEADER, cut);
        assert_int_equal(pg_spool_decode(payload, cut, out, &rec), -1);
    }

    /* a bad version, a flag byte set, too many headers */

    memcpy(payload, buf + PG_WAL_FRAME_HEADER, len);
    payload[16] = 3;
    assert_int_equal(pg_spool_decode(payload, len, out, &rec), -1);

    memcpy(payload, buf + PG_WAL_FRAME_HEADER, len);
    payload[17] = 1;
    assert_int_equal(pg_spool_decode(payload, len, out, &rec), -1);

    memcpy(payload, buf + PG_WAL_FRAME_HEADER, len);
    payload[18] = PG_SPOOL_MAX_HEADERS + 1;
    payload[19] = 0;
    assert_int_equal(pg_spool_decode(payload, len, out, &rec), -1);

    /* a body length that does not match what is there */

    memcpy(payload, buf + PG_WAL_FRAME_HEADER, len);
    payload[20] = 11;
    assert_int_equal(pg_spool_decode(payload, len, out, &rec), -1);
    payload[20] = 10;
    assert_int_equal(pg_spool_decode(payload, len, out, &rec), 0);
}


static void
test_limits(void **state)
{
    pg_spool_record_t  rec;

    (void) state;

    memset(&rec, 0, sizeof(rec));
    rec.version = 1;
    rec.body_len = PG_WAL_MAX_RECORD;
    assert_int_equal(pg_spool_head_size(&rec), 0);

    rec.body_len = PG_WAL_MAX_RECORD - 24;
    assert_int_equal(pg_spool_head_size(&rec), PG_WAL_FRAME_HEADER + 24);

    rec.body_len = 0;
    rec.nheaders = PG_SPOOL_MAX_HEADERS + 1;
    rec.headers = hdrs;
    assert_int_equal(pg_spool_head_size(&rec), 0);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_crc_covers_the_body),
        cmocka_unit_test(test_torn_frame),
        cmocka_unit_test(test_malformed_payloads),
        cmocka_unit_test(test_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
