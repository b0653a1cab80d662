/*
 * Exemplar WAL framing (see pg_wal.h).  CRC32C (Castagnoli) is computed
 * with a slicing-by-8 table: Debian ships no C library for it, and a
 * record is small next to the write that carries it.
 */

#include "pg_wal.h"

#include <stdio.h>
#include <stdlib.h>


static uint32_t  pg_crc32c_table[8][256];
static int       pg_crc32c_ready;


static void
pg_crc32c_init(void)
{
    uint32_t  c, i, k;

    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        pg_crc32c_table[0][i] = c;
    }

    for (i = 0; i < 256; i++) {
        c = pg_crc32c_table[0][i];
        for (k = 1; k < 8; k++) {
            c = pg_crc32c_table[0][c & 0xff] ^ (c >> 8);
            pg_crc32c_table[k][i] = c;
        }
    }

    pg_crc32c_ready = 1;
}


uint32_t
pg_crc32c(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t  w;

    if (!pg_crc32c_ready) {
        pg_crc32c_init();
    }

    crc = ~crc;

    while (len >= 8) {
        w = (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16
            | (uint64_t) p[3] << 24 | (uint64_t) p[4] << 32
            | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48
            | (uint64_t) p[7] << 56;
        w ^= crc;

        crc = pg_crc32c_table[7][w & 0xff]
              ^ pg_crc32c_table[6][(w >> 8) & 0xff]
              ^ pg_crc32c_table[5][(w >> 16) & 0xff]
              ^ pg_crc32c_table[4][(w >> 24) & 0xff]
              ^ pg_crc32c_table[3][(w >> 32) & 0xff]
              ^ pg_crc32c_table[2][(w >> 40) & 0xff]
              ^ pg_crc32c_table[1][(w >> 48) & 0xff]
              ^ pg_crc32c_table[0][w >> 56];

        p += 8;
        len -= 8;
    }

    while (len--) {
        crc = pg_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }

    return ~crc;
}


uint8_t *
pg_wal_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);

    return p + 4;
}


uint8_t *
pg_wal_put64(uint8_t *p, uint64_t v)
{
    p = pg_wal_put32(p, (uint32_t) v);
    return pg_wal_put32(p, (uint32_t) (v >> 32));
}


uint32_t
pg_wal_get32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


uint64_t
pg_wal_get64(const uint8_t *p)
{
    return (uint64_t) pg_wal_get32(p) | (uint64_t) pg_wal_get32(p + 4) << 32;
}


static uint8_t *
pg_wal_put_str(uint8_t *p, pg_str_t s)
{
    p = pg_wal_put32(p, (uint32_t) s.len);

    if (s.len) {
        memcpy(p, s.data, s.len);
    }

    return p + s.len;
}


static size_t
pg_wal_labels_size(const pg_label_t *l, size_t n)
{
    size_t  i, size;

    size = 4;

    for (i = 0; i < n; i++) {
        size += 8 + l[i].name.len + l[i].value.len;
    }

    return size;
}


size_t
pg_wal_frame_size(const pg_wal_record_t *rec)
{
    return PG_WAL_FRAME_HEADER + 24 + 4 + rec->tenant.len
           + pg_wal_labels_size(rec->series, rec->nseries)
           + pg_wal_labels_size(rec->labels, rec->nlabels);
}


int
pg_wal_record_fits(const pg_wal_record_t *rec)
{
    return pg_wal_frame_size(rec) - PG_WAL_FRAME_HEADER <= PG_WAL_MAX_RECORD;
}


size_t
pg_wal_encode(const pg_wal_record_t *rec, uint8_t *out)
{
    size_t     i, size;
    uint8_t   *p;
    uint64_t   bits;

    /* replay would take a larger frame for a torn tail and cut it off */

    if (!pg_wal_record_fits(rec)) {
        return 0;
    }

    size = pg_wal_frame_size(rec);
    p = out + PG_WAL_FRAME_HEADER;

    memcpy(&bits, &rec->value, sizeof(bits));

    p = pg_wal_put64(p, rec->seq);
    p = pg_wal_put64(p, (uint64_t) rec->ts);
    p = pg_wal_put64(p, bits);
    p = pg_wal_put_str(p, rec->tenant);

    p = pg_wal_put32(p, (uint32_t) rec->nseries);
    for (i = 0; i < rec->nseries; i++) {
        p = pg_wal_put_str(p, rec->series[i].name);
        p = pg_wal_put_str(p, rec->series[i].value);
    }

    p = pg_wal_put32(p, (uint32_t) rec->nlabels);
    for (i = 0; i < rec->nlabels; i++) {
        p = pg_wal_put_str(p, rec->labels[i].name);
        p = pg_wal_put_str(p, rec->labels[i].value);
    }

    pg_wal_put32(out, (uint32_t) (size - PG_WAL_FRAME_HEADER));
    pg_wal_put32(out + 4, pg_crc32c(0, out + PG_WAL_FRAME_HEADER,
                                    size - PG_WAL_FRAME_HEADER));

    return size;
}


static int
pg_wal_get_str(const uint8_t **pp, const uint8_t *end, pg_str_t *s)
{
    uint32_t  n;

    if (end - *pp < 4) {
        return -1;
    }

    n = pg_wal_get32(*pp);
    *pp += 4;

    if ((size_t) (end - *pp) < n) {
        return -1;
    }

    s->data = *pp;
    s->len = n;
    *pp += n;

    return 0;
}


static int
pg_wal_get_labels(const uint8_t **pp, const uint8_t *end,
    const pg_allocator_t *alloc, const pg_label_t **labels, size_t *n)
{
    uint32_t     count, i;
    pg_label_t  *l;

    if (end - *pp < 4) {
        return -1;
    }

    count = pg_wal_get32(*pp);
    *pp += 4;

    /* each label takes 8 bytes at least: an absurd count is caught here */
    if (count > (size_t) (end - *pp) / 8) {
        return -1;
    }

    l = alloc->alloc(alloc->ctx, (count ? count : 1) * sizeof(pg_label_t));
    if (l == NULL) {
        return -1;
    }

    for (i = 0; i < count; i++) {
        if (pg_wal_get_str(pp, end, &l[i].name) != 0
            || pg_wal_get_str(pp, end, &l[i].value) != 0)
        {
            return -1;
        }
    }

    *labels = l;
    *n = count;

    return 0;
}


int
pg_wal_decode(const uint8_t *payload, size_t len,
    const pg_allocator_t *alloc, pg_wal_record_t *rec)
{
    const uint8_t  *p, *end;
    uint64_t        bits;

    p = payload;
    end = payload + len;

    if (len < 24) {
        return -1;
    }

    rec->seq = pg_wal_get64(p);
    rec->ts = (int64_t) pg_wal_get64(p + 8);
    bits = pg_wal_get64(p + 16);
    memcpy(&rec->value, &bits, sizeof(bits));
    p += 24;

    if (pg_wal_get_str(&p, end, &rec->tenant) != 0
        || pg_wal_get_labels(&p, end, alloc, &rec->series, &rec->nseries)
           != 0
        || pg_wal_get_labels(&p, end, alloc, &rec->labels, &rec->nlabels)
           != 0
        || p != end)
    {
        return -1;
    }

    return 0;
}


uint64_t
pg_wal_payload_seq(const uint8_t *payload, size_t len)
{
    return len >= 8 ? pg_wal_get64(payload) : 0;
}


void
pg_wal_scan(const uint8_t *data, size_t len, pg_wal_frame_pt cb, void *ctx,
    pg_wal_scan_t *res)
{
    size_t    off;
    uint32_t  n, crc;
    uint64_t  seq;

    memset(res, 0, sizeof(pg_wal_scan_t));

    off = 0;

    while (off < len) {

        if (len - off < PG_WAL_FRAME_HEADER) {
            break;
        }

        n = pg_wal_get32(data + off);
        crc = pg_wal_get32(data + off + 4);

        if (n < 24 || n > PG_WAL_MAX_RECORD
            || n > len - off - PG_WAL_FRAME_HEADER)
        {
            break;
        }

        if (pg_crc32c(0, data + off + PG_WAL_FRAME_HEADER, n) != crc) {
            /* the length fits: skip the record, the rest may be good */
            res->corrupt++;
            off += PG_WAL_FRAME_HEADER + n;
            res->good_bytes = off;
            continue;
        }

        seq = pg_wal_payload_seq(data + off + PG_WAL_FRAME_HEADER, n);

        res->records++;

        if (res->first_seq == 0) {
            res->first_seq = seq;
        }

        res->last_seq = seq;

        if (cb && cb(ctx, data + off + PG_WAL_FRAME_HEADER, n, seq, off)) {
            res->good_bytes = off + PG_WAL_FRAME_HEADER + n;
            return;
        }

        off += PG_WAL_FRAME_HEADER + n;
        res->good_bytes = off;
    }

    if (off < len) {
        res->torn = 1;
        res->torn_offset = off;
    }
}


size_t
pg_wal_segment_name(char *buf, size_t size, const char *zone, unsigned writer,
    uint64_t first_seq)
{
    int  n;

    n = snprintf(buf, size, "%s-w%04u-%020llu.wal", zone, writer,
                 (unsigned long long) first_seq);

    return n < 0 || (size_t) n >= size ? 0 : (size_t) n;
}


/* exactly n decimal digits at p: 0 and their value, or -1 */
static int
pg_wal_digits(const char *p, size_t n, uint64_t *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        *v = *v * 10 + (uint64_t) (p[i] - '0');
    }

    return 0;
}


int
pg_wal_segment_parse(const char *name, const char *zone, unsigned *writer,
    uint64_t *first_seq)
{
    size_t       zl, n;
    uint64_t     s, seq;
    const char  *p;

    zl = strlen(zone);

    if (strncmp(name, zone, zl) != 0 || strncmp(name + zl, "-w", 2) != 0) {
        return -1;
    }

    /*
     * "W-NNNNNNNNNNNNNNNNNNNN.wal", as pg_wal_segment_name() writes: W is
     * the writer (a process id, or the worker slot of older versions), 4
     * to 10 digits
     */

    p = name + zl + 2;

    for (n = 0; n < 10 && p[n] >= '0' && p[n] <= '9'; n++) {
        /* void */
    }

    if (n < 4 || pg_wal_digits(p, n, &s) != 0 || s > 0xffffffff
        || p[n] != '-' || pg_wal_digits(p + n + 1, 20, &seq) != 0
        || strcmp(p + n + 21, ".wal") != 0)
    {
        return -1;
    }

    *writer = (unsigned) s;
    *first_seq = seq;

    return 0;
}


static int
pg_wal_segment_cmp(const void *a, const void *b)
{
    const pg_wal_segment_t  *x = a, *y = b;

    if (x->writer != y->writer) {
        return x->writer < y->writer ? -1 : 1;
    }

    return (x->first_seq > y->first_seq) - (x->first_seq < y->first_seq);
}


void
pg_wal_mark_deletable(pg_wal_segment_t *segs, size_t n, uint64_t oldest_live)
{
    size_t  i;

    qsort(segs, n, sizeof(pg_wal_segment_t), pg_wal_segment_cmp);

    for (i = 0; i < n; i++) {
        segs[i].deletable = i + 1 < n && segs[i + 1].writer == segs[i].writer
                            && segs[i + 1].first_seq <= oldest_live;
    }
}


static int
pg_wal_entry_cmp(const void *a, const void *b)
{
    const pg_wal_entry_t  *x = a, *y = b;

    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }

    /* stable for equal seqs: by segment, so "the first kept" is defined */
    return (x->segment > y->segment) - (x->segment < y->segment);
}


size_t
pg_wal_merge(pg_wal_entry_t *entries, size_t *n, size_t max)
{
    size_t  i, k;

    if (*n == 0) {
        return 0;
    }

    qsort(entries, *n, sizeof(pg_wal_entry_t), pg_wal_entry_cmp);

    k = 1;

    for (i = 1; i < *n; i++) {
        if (entries[i].seq != entries[k - 1].seq) {
            entries[k++] = entries[i];
        }
    }

    *n = k;

    return k > max ? k - max : 0;
}
