/*
 * libFuzzer target: the exemplar WAL (src/core/pg_wal.c): frame scanning
 * and record decoding of segment bytes read back from disk, segment names,
 * the replay merge and the deletion rule.
 *
 * The first byte picks a mode:
 *
 *   0  the rest is a segment: pg_wal_scan() and pg_wal_decode() on
 *      whatever is there; every frame handed out lies inside the buffer,
 *      its seq is its payload's, the counts add up, and a payload that
 *      decodes encodes back to the very same frame;
 *   1  the rest describes records: they are encoded into a segment that is
 *      then torn at some offset or has one payload byte flipped; the scan
 *      must give back exactly the intact records, in order, count the
 *      damaged one as corrupt, and report a torn tail where there is one;
 *   2  segment names: what pg_wal_segment_name() writes parses back to the
 *      same writer and sequence number; arbitrary names parse or not, safely;
 *   3  pg_wal_merge() and pg_wal_mark_deletable() on arbitrary arrays.
 *
 * FUZZ_FLAGS: -max_len=8192
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_wal.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_wal", cond)

#define MAXREC  32


static fuzz_arena_t  arena;


typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} fuzz_in_t;


static unsigned
in_byte(fuzz_in_t *in)
{
    return in->p < in->end ? *in->p++ : 0;
}


static uint64_t
in_u64(fuzz_in_t *in, unsigned nbytes)
{
    uint64_t  v;
    unsigned  i;

    v = 0;
    for (i = 0; i < nbytes; i++) {
        v = v << 8 | in_byte(in);
    }

    return v;
}


static pg_str_t
in_str(fuzz_in_t *in, unsigned max)
{
    pg_str_t  s;
    size_t    n;

    n = in_byte(in) % (max + 1);
    if ((size_t) (in->end - in->p) < n) {
        n = in->end - in->p;
    }

    s.data = in->p;
    s.len = n;
    in->p += n;

    return s;
}


/* ------------------------------------------------------- mode 0 */

typedef struct {
    const uint8_t  *data;
    size_t          len;
    uint64_t        frames;
    uint64_t        first_seq;
    uint64_t        last_seq;
    size_t          last_end;
    unsigned        stop_after;
} scan_ctx_t;


static int
scan_frame(void *data, const uint8_t *payload, size_t len, uint64_t seq,
    size_t offset)
{
    scan_ctx_t       *ctx = data;
    pg_wal_record_t   rec;
    pg_allocator_t    al;
    uint8_t          *frame;
    size_t            n;

    check(payload >= ctx->data && len <= ctx->len
          && (size_t) (payload - ctx->data) <= ctx->len - len);
    check(payload == ctx->data + offset + PG_WAL_FRAME_HEADER);
    check(offset >= ctx->last_end);
    check(len >= 24 && len <= PG_WAL_MAX_RECORD);
    check(seq == pg_wal_payload_seq(payload, len));
    check(pg_crc32c(0, payload, len)
          == ((uint32_t) payload[-4] | (uint32_t) payload[-3] << 8
              | (uint32_t) payload[-2] << 16 | (uint32_t) payload[-1] << 24));

    if (ctx->frames == 0) {
        ctx->first_seq = seq;
    }
    ctx->last_seq = seq;
    ctx->frames++;
    ctx->last_end = offset + PG_WAL_FRAME_HEADER + len;

    fuzz_arena_reset(&arena, 16 << 20, 16 << 20);
    al = fuzz_arena_allocator(&arena);

    if (pg_wal_decode(payload, len, &al, &rec) == 0) {
        check(rec.seq == seq);

        /* the format has one encoding: decoding, then encoding, gives the
         * frame back byte for byte */
        n = pg_wal_frame_size(&rec);
        check(n == PG_WAL_FRAME_HEADER + len);
        frame = malloc(n);
        check(frame != NULL);
        check(pg_wal_encode(&rec, frame) == n);
        check(memcmp(frame, payload - PG_WAL_FRAME_HEADER, n) == 0);
        free(frame);
    }

    return ctx->stop_after && ctx->frames >= ctx->stop_after;
}


static void
mode_scan(const uint8_t *data, size_t len, unsigned stop_after)
{
    scan_ctx_t     ctx;
    pg_wal_scan_t  res;

    memset(&ctx, 0, sizeof(ctx));
    ctx.data = data;
    ctx.len = len;
    ctx.stop_after = stop_after;

    pg_wal_scan(data, len, scan_frame, &ctx, &res);

    check(res.records == ctx.frames);
    check(res.good_bytes <= len);
    check(res.good_bytes >= ctx.last_end);
    check(res.records == 0 || (res.first_seq == ctx.first_seq
                               && res.last_seq == ctx.last_seq));
    check(!res.torn || (res.torn_offset == res.good_bytes
                        && res.torn_offset < len));
    check(res.torn || ctx.stop_after || res.good_bytes == len);

    /* without a callback the counts are the same */
    if (!stop_after) {
        pg_wal_scan_t  res2;

        pg_wal_scan(data, len, NULL, NULL, &res2);
        check(memcmp(&res, &res2, sizeof(res)) == 0);
    }
}


/* ------------------------------------------------------- mode 1 */

typedef struct {
    uint8_t        *frames[MAXREC];
    size_t          sizes[MAXREC];
    size_t          offsets[MAXREC];
    size_t          n;
    size_t          next;           /* next record expected */
    size_t          damaged;        /* index, or (size_t) -1 */
} replay_ctx_t;


static int
replay_frame(void *data, const uint8_t *payload, size_t len, uint64_t seq,
    size_t offset)
{
    replay_ctx_t  *ctx = data;

    if (ctx->next == ctx->damaged) {
        ctx->next++;
    }

    check(ctx->next < ctx->n);
    check(offset == ctx->offsets[ctx->next]);
    check(len + PG_WAL_FRAME_HEADER == ctx->sizes[ctx->next]);
    check(memcmp(payload - PG_WAL_FRAME_HEADER, ctx->frames[ctx->next],
                 ctx->sizes[ctx->next]) == 0);
    ctx->next++;

    return 0;
}


static void
mode_replay(fuzz_in_t *in)
{
    pg_wal_record_t  rec;
    pg_label_t       series[4], labels[3];
    replay_ctx_t     ctx;
    pg_wal_scan_t    res;
    uint8_t         *seg;
    size_t           i, k, total, cut, pos;
    unsigned         how;

    memset(&ctx, 0, sizeof(ctx));
    ctx.damaged = (size_t) -1;
    ctx.n = 1 + in_byte(in) % MAXREC;
    how = in_byte(in);
    total = 0;

    for (i = 0; i < ctx.n; i++) {
        memset(&rec, 0, sizeof(rec));
        rec.seq = in_u64(in, 1 + in_byte(in) % 8);
        rec.ts = (int64_t) in_u64(in, 8);
        rec.value = (double) (int8_t) in_byte(in) / 4;
        rec.tenant = in_str(in, 12);
        rec.nseries = in_byte(in) % 5;
        for (k = 0; k < rec.nseries; k++) {
            series[k].name = in_str(in, 16);
            series[k].value = in_str(in, 16);
        }
        rec.series = series;
        rec.nlabels = in_byte(in) % 4;
        for (k = 0; k < rec.nlabels; k++) {
            labels[k].name = in_str(in, 16);
            labels[k].value = in_str(in, 40);
        }
        rec.labels = labels;

        ctx.sizes[i] = pg_wal_frame_size(&rec);
        ctx.frames[i] = malloc(ctx.sizes[i]);
        check(ctx.frames[i] != NULL);
        check(pg_wal_encode(&rec, ctx.frames[i]) == ctx.sizes[i]);
        ctx.offsets[i] = total;
        total += ctx.sizes[i];
    }

    seg = malloc(total);
    check(seg != NULL);
    for (i = 0; i < ctx.n; i++) {
        memcpy(seg + ctx.offsets[i], ctx.frames[i], ctx.sizes[i]);
    }

    pos = (size_t) in_u64(in, 2) % total;

    if (how & 1) {
        /* a torn tail: the segment ends at pos */
        cut = pos;
        for (k = 0; k < ctx.n && ctx.offsets[k] + ctx.sizes[k] <= cut; k++) {
            /* void */
        }

        pg_wal_scan(seg, cut, replay_frame, &ctx, &res);

        check(ctx.next == k);
        check(res.records == k && res.corrupt == 0);
        check(res.good_bytes == (k ? ctx.offsets[k - 1] + ctx.sizes[k - 1]
                                   : 0));
        check(res.torn == (res.good_bytes < cut));

    } else {
        /* one byte flipped in a payload or CRC (not in a length field) */
        for (k = 0; k + 1 < ctx.n && ctx.offsets[k + 1] <= pos; k++) {
            /* void */
        }
        if (pos < ctx.offsets[k] + 4) {
            pos = ctx.offsets[k] + 4;
        }
        seg[pos] ^= 1 + (how >> 1) % 255;
        ctx.damaged = k;

        pg_wal_scan(seg, total, replay_frame, &ctx, &res);

        check(res.corrupt == 1);
        check(res.records == ctx.n - 1);
        check(!res.torn && res.good_bytes == total);
    }

    free(seg);
    for (i = 0; i < ctx.n; i++) {
        free(ctx.frames[i]);
    }
}


/* ------------------------------------------------------- mode 2 */

static void
mode_names(fuzz_in_t *in)
{
    char       zone[32], name[PG_WAL_NAME_MAX], *s;
    pg_str_t   z;
    unsigned   writer, writer2;
    uint64_t   seq, seq2;
    size_t     n;

    z = in_str(in, sizeof(zone) - 1);
    memcpy(zone, z.data, z.len);
    zone[z.len] = '\0';

    /* every writer id a segment can carry: a process id, 32 bits */
    writer = (unsigned) in_u64(in, 4);
    seq = in_u64(in, 8);

    n = pg_wal_segment_name(name, sizeof(name), zone, writer, seq);
    if (n > 0 && strlen(zone) == z.len) {
        check(n == strlen(name));
        check(pg_wal_segment_parse(name, zone, &writer2, &seq2) == 0);
        check(writer2 == writer && seq2 == seq);
    }

    /* the rest as a file name found in the directory */
    n = in->end - in->p;
    s = malloc(n + 1);
    check(s != NULL);
    memcpy(s, in->p, n);
    s[n] = '\0';

    /* a name that parses is one segment_name() writes back the same */
    if (pg_wal_segment_parse(s, zone, &writer2, &seq2) == 0) {
        check(pg_wal_segment_name(name, sizeof(name), zone, writer2, seq2)
              > 0);
        check(pg_wal_segment_parse(name, zone, &writer, &seq) == 0);
        check(writer == writer2 && seq == seq2);
    }

    free(s);
}


/* ------------------------------------------------------- mode 3 */

static void
mode_merge(fuzz_in_t *in)
{
    pg_wal_entry_t    e[64];
    pg_wal_segment_t  segs[64];
    size_t            n, m, max, first, i;
    uint64_t          oldest;

    n = in_byte(in) % 65;
    for (i = 0; i < n; i++) {
        e[i].seq = in_u64(in, 1);
        e[i].segment = in_byte(in) % 4;
        e[i].payload = NULL;
        e[i].len = 0;
    }

    max = in_byte(in) % 70;
    m = n;
    first = pg_wal_merge(e, &m, max);

    check(m <= n);
    for (i = 1; i < m; i++) {
        check(e[i - 1].seq < e[i].seq);
    }
    check(first == (m > max ? m - max : 0));

    n = in_byte(in) % 65;
    for (i = 0; i < n; i++) {
        segs[i].writer = in_byte(in) % 4;
        segs[i].first_seq = in_u64(in, 1);
        segs[i].deletable = -1;
    }
    oldest = in_u64(in, 1);

    pg_wal_mark_deletable(segs, n, oldest);

    for (i = 0; i < n; i++) {
        check(segs[i].deletable == 0 || segs[i].deletable == 1);

        /* sorted by writer, then first seq */
        if (i > 0) {
            check(segs[i - 1].writer < segs[i].writer
                  || (segs[i - 1].writer == segs[i].writer
                      && segs[i - 1].first_seq <= segs[i].first_seq));
        }

        /* the newest segment of a writer (the last of its run) stays */
        if (i + 1 == n || segs[i + 1].writer != segs[i].writer) {
            check(!segs[i].deletable);
        }

        /* deleted only when a later segment of the writer starts at or
         * below the oldest live exemplar */
        if (segs[i].deletable) {
            check(i + 1 < n && segs[i + 1].writer == segs[i].writer
                  && segs[i + 1].first_seq <= oldest);
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t  in;
    unsigned   mode;

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    in.p = data + 1;
    in.end = data + size;

    switch (mode % 4) {
    case 0:
        mode_scan(in.p, in.end - in.p, (mode >> 2) % 4);
        break;
    case 1:
        mode_replay(&in);
        break;
    case 2:
        mode_names(&in);
        break;
    default:
        mode_merge(&in);
        break;
    }

    return 0;
}
