/*
 * Exemplar WAL framing, scanning, merging and segment bookkeeping
 * (src/core/pg_wal.c).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pg_wal.h"


static void *
test_alloc(void *ctx, size_t size)
{
    /* freed with the test process; the tests are small */
    return malloc(size);
}


static const pg_allocator_t  alloc = { test_alloc, NULL };


static size_t
make_record(uint8_t *out, uint64_t seq, const char *trace)
{
    pg_wal_record_t  rec;
    pg_label_t       series[2], labels[1];

    series[0].name = (pg_str_t) pg_str_lit("__name__");
    series[0].value = (pg_str_t) pg_str_lit("http_requests_total");
    series[1].name = (pg_str_t) pg_str_lit("job");
    series[1].value = (pg_str_t) pg_str_lit("api");
    labels[0].name = (pg_str_t) pg_str_lit("trace_id");
    labels[0].value.data = (const uint8_t *) trace;
    labels[0].value.len = strlen(trace);

    memset(&rec, 0, sizeof(rec));
    rec.seq = seq;
    rec.ts = 1600096945479 + (int64_t) seq;
    rec.value = 0.25 * (double) seq;
    rec.tenant = (pg_str_t) pg_str_lit("team-a");
    rec.series = series;
    rec.nseries = 2;
    rec.labels = labels;
    rec.nlabels = 1;

    assert_int_equal(pg_wal_encode(&rec, out), pg_wal_frame_size(&rec));

    return pg_wal_frame_size(&rec);
}


/*
 * Append and replay agree on the largest frame: a record whose payload is
 * at PG_WAL_MAX_RECORD is written and read back as a good record (not as
 * a torn tail that replay would cut off with everything after it); one
 * byte more is refused at encoding (nothing written), so it never reaches
 * a segment.
 */
static void
test_frame_limit(void **state)
{
    size_t            fixed, size, n;
    uint8_t          *buf, *big;
    pg_label_t        labels[1];
    pg_wal_scan_t     res;
    pg_wal_record_t   rec;

    memset(&rec, 0, sizeof(rec));
    rec.seq = 7;
    rec.labels = labels;
    rec.nlabels = 1;
    labels[0].name = (pg_str_t) pg_str_lit("trace_id");
    labels[0].value.data = NULL;
    labels[0].value.len = 0;

    fixed = pg_wal_frame_size(&rec) - PG_WAL_FRAME_HEADER;

    big = malloc(PG_WAL_MAX_RECORD + 1);
    assert_non_null(big);
    memset(big, 'a', PG_WAL_MAX_RECORD + 1);
    labels[0].value.data = big;

    buf = malloc(PG_WAL_FRAME_HEADER + PG_WAL_MAX_RECORD + 64);
    assert_non_null(buf);

    /* the largest record replay reads */
    labels[0].value.len = PG_WAL_MAX_RECORD - fixed;
    size = pg_wal_frame_size(&rec);
    assert_int_equal(size, PG_WAL_FRAME_HEADER + PG_WAL_MAX_RECORD);
    assert_true(pg_wal_record_fits(&rec));
    assert_int_equal(pg_wal_encode(&rec, buf), size);

    /* and a small record after it */
    n = size + make_record(buf + size, 8, "abc");

    pg_wal_scan(buf, n, NULL, NULL, &res);
    assert_int_equal(res.records, 2);
    assert_int_equal(res.torn, 0);
    assert_int_equal(res.last_seq, 8);

    /* one byte more: refused, nothing written */
    labels[0].value.len++;
    assert_false(pg_wal_record_fits(&rec));
    memset(buf, 0x5a, 16);
    assert_int_equal(pg_wal_encode(&rec, buf), 0);
    assert_int_equal(buf[0], 0x5a);

    free(buf);
    free(big);
}


static void
test_crc32c(void **state)
{
    /* the check value of CRC-32C (Castagnoli) */
    assert_int_equal(pg_crc32c(0, (const uint8_t *) "123456789", 9),
                     0xe3069283u);
    assert_int_equal(pg_crc32c(0, (const uint8_t *) "", 0), 0);

    /* incremental equals one-shot, across the 8-byte fast path */
    {
        const char  *s = "The quick brown fox jumps over the lazy dog";
        uint32_t     one, two;

        one = pg_crc32c(0, (const uint8_t *) s, strlen(s));
        two = pg_crc32c(pg_crc32c(0, (const uint8_t *) s, 13),
                        (const uint8_t *) s + 13, strlen(s) - 13);
        assert_int_equal(one, two);
        assert_int_equal(one, 0x22620404u);
    }
}


static void
test_roundtrip(void **state)
{
    uint8_t          buf[512];
    size_t           n;
    pg_wal_record_t  rec;

    n = make_record(buf, 42, "00112233445566778899aabbccddeeff");

    assert_int_equal(pg_wal_payload_seq(buf + 8, n - 8), 42);
    assert_int_equal(pg_wal_decode(buf + 8, n - 8, &alloc, &rec), 0);
    assert_int_equal(rec.seq, 42);
    assert_int_equal(rec.ts, 1600096945479 + 42);
    assert_true(rec.value == 10.5);
    assert_int_equal(rec.tenant.len, 6);
    assert_memory_equal(rec.tenant.data, "team-a", 6);
    assert_int_equal(rec.nseries, 2);
    assert_memory_equal(rec.series[1].value.data, "api", 3);
    assert_int_equal(rec.nlabels, 1);
    assert_int_equal(rec.labels[0].value.len, 32);

    /* a payload cut short or with trailing bytes is malformed */
    assert_int_equal(pg_wal_decode(buf + 8, n - 9, &alloc, &rec), -1);
    assert_int_equal(pg_wal_decode(buf + 8, 20, &alloc, &rec), -1);
}


typedef struct {
    uint64_t  seqs[64];
    size_t    n;
} seen_t;


static int
collect(void *ctx, const uint8_t *payload, size_t len, uint64_t seq,
    size_t offset)
{
    seen_t  *s = ctx;

    s->seqs[s->n++] = seq;

    return 0;
}


static void
test_scan_torn_and_corrupt(void **state)
{
    uint8_t        seg[4096];
    size_t         off, ends[5], i;
    seen_t         seen;
    pg_wal_scan_t  res;

    off = 0;
    for (i = 0; i < 5; i++) {
        off += make_record(seg + off, 10 + i, "t");
        ends[i] = off;
    }

    memset(&seen, 0, sizeof(seen));
    pg_wal_scan(seg, off, collect, &seen, &res);
    assert_int_equal(res.records, 5);
    assert_int_equal(res.corrupt, 0);
    assert_false(res.torn);
    assert_int_equal(res.first_seq, 10);
    assert_int_equal(res.last_seq, 14);
    assert_int_equal(res.good_bytes, off);

    /* every cut inside the last frame is a torn tail at its start */
    for (i = ends[3] + 1; i < ends[4]; i++) {
        memset(&seen, 0, sizeof(seen));
        pg_wal_scan(seg, i, collect, &seen, &res);
        assert_int_equal(res.records, 4);
        assert_true(res.torn);
        assert_int_equal(res.torn_offset, ends[3]);
        assert_int_equal(res.good_bytes, ends[3]);
    }

    /* a flipped payload byte in record 2: skipped, the rest read */
    seg[ends[1] + 20] ^= 0x40;
    memset(&seen, 0, sizeof(seen));
    pg_wal_scan(seg, off, collect, &seen, &res);
    assert_int_equal(res.records, 4);
    assert_int_equal(res.corrupt, 1);
    assert_false(res.torn);
    assert_int_equal(seen.n, 4);
    assert_int_equal(seen.seqs[2], 13);
    seg[ends[1] + 20] ^= 0x40;

    /* a zero-filled tail (preallocated space after a crash) is torn */
    memset(seg + off, 0, 64);
    pg_wal_scan(seg, off + 64, NULL, NULL, &res);
    assert_int_equal(res.records, 5);
    assert_true(res.torn);
    assert_int_equal(res.torn_offset, off);

    /* a length running past the end: torn there */
    seg[ends[2]] = 0xff;
    seg[ends[2] + 1] = 0xff;
    pg_wal_scan(seg, off, NULL, NULL, &res);
    assert_int_equal(res.records, 3);
    assert_true(res.torn);
    assert_int_equal(res.torn_offset, ends[2]);
}


static void
test_merge_across_slots(void **state)
{
    pg_wal_entry_t  e[10];
    size_t          n, first, i;

    /* three workers' segments, interleaved sequence numbers, one repeat */
    static const uint64_t  seqs[] = { 5, 1, 9, 2, 8, 3, 7, 4, 6, 9 };

    for (i = 0; i < 10; i++) {
        e[i].seq = seqs[i];
        e[i].segment = (uint32_t) (i % 3);
        e[i].payload = NULL;
        e[i].len = 0;
    }

    n = 10;
    first = pg_wal_merge(e, &n, 100);
    assert_int_equal(n, 9);
    assert_int_equal(first, 0);

    for (i = 0; i < n; i++) {
        assert_int_equal(e[i].seq, i + 1);   /* continuous, in order */
    }

    /* a smaller max keeps the newest */
    first = pg_wal_merge(e, &n, 4);
    assert_int_equal(first, 5);
    assert_int_equal(e[first].seq, 6);

    n = 0;
    assert_int_equal(pg_wal_merge(e, &n, 4), 0);
}


static void
test_segment_names(void **state)
{
    char      name[PG_WAL_NAME_MAX];
    unsigned  slot;
    uint64_t  seq;

    assert_true(pg_wal_segment_name(name, sizeof(name), "exemplars", 3,
                                    12345) > 0);
    assert_string_equal(name, "exemplars-w0003-00000000000000012345.wal");
    assert_int_equal(pg_wal_segment_parse(name, "exemplars", &slot, &seq), 0);
    assert_int_equal(slot, 3);
    assert_int_equal(seq, 12345);

    assert_int_equal(pg_wal_segment_parse(name, "other", &slot, &seq), -1);
    assert_true(pg_wal_segment_name(name, sizeof(name), "ex", 1023, 42) > 0);
    assert_int_equal(pg_wal_segment_parse(name, "ex", &slot, &seq), 0);
    assert_int_equal(slot, 1023);
    assert_int_equal(pg_wal_segment_parse("exemplars-w003-123.wal",
                                          "exemplars", &slot, &seq), -1);

    /* a process id as the writer */
    assert_true(pg_wal_segment_name(name, sizeof(name), "ex", 4194304, 7)
                > 0);
    assert_string_equal(name, "ex-w4194304-00000000000000000007.wal");
    assert_int_equal(pg_wal_segment_parse(name, "ex", &slot, &seq), 0);
    assert_int_equal(slot, 4194304);
    assert_int_equal(seq, 7);
    assert_int_equal(pg_wal_segment_parse(
                         "ex-w12345678901-00000000000000000007.wal", "ex",
                         &slot, &seq), -1);
    assert_int_equal(pg_wal_segment_parse(
                         "ex-w9999999999-00000000000000000007.wal", "ex",
                         &slot, &seq), -1);
    assert_int_equal(pg_wal_segment_parse(
                         "exemplars-w0003-00000000000000012345.wal.tmp",
                         "exemplars", &slot, &seq), -1);
}


static void
test_deletion(void **state)
{
    pg_wal_segment_t  s[6];

    /* slot 0: 1, 100, 200 (open); slot 1: 50, 150 (open); slot 2: 10 */
    s[0] = (pg_wal_segment_t) { 0, 100, 0 };
    s[1] = (pg_wal_segment_t) { 1, 150, 0 };
    s[2] = (pg_wal_segment_t) { 0, 1, 0 };
    s[3] = (pg_wal_segment_t) { 2, 10, 0 };
    s[4] = (pg_wal_segment_t) { 1, 50, 0 };
    s[5] = (pg_wal_segment_t) { 0, 200, 0 };

    /* the ring's oldest exemplar is seq 120 */
    pg_wal_mark_deletable(s, 6, 120);

    /* sorted: (0,1) (0,100) (0,200) (1,50) (1,150) (2,10) */
    assert_int_equal(s[0].first_seq, 1);
    assert_true(s[0].deletable);        /* next starts at 100 <= 120 */
    assert_false(s[1].deletable);       /* holds 100..199, 120 lives */
    assert_false(s[2].deletable);       /* newest of slot 0 */
    assert_false(s[3].deletable);       /* 50..149 */
    assert_false(s[4].deletable);       /* newest of slot 1 */
    assert_false(s[5].deletable);       /* the only one of slot 2 */

    pg_wal_mark_deletable(s, 6, 150);
    assert_true(s[3].deletable);        /* next of slot 1 starts at 150 */
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_frame_limit),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_scan_torn_and_corrupt),
        cmocka_unit_test(test_merge_across_slots),
        cmocka_unit_test(test_segment_names),
        cmocka_unit_test(test_deletion),
    };

    return cmocka_run_group_tests_name("exemplar WAL", tests, NULL, NULL);
}
