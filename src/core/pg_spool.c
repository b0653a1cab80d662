/*
 * A spool's records (pg_spool.h).
 */

#include <string.h>

#include "pg_spool.h"


#define PG_SPOOL_FIXED  (8 + 8 + 1 + 1 + 2 + 4)


static uint8_t *
pg_spool_put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    return p + 2;
}


static size_t
pg_spool_get16(const uint8_t *p)
{
    return (size_t) p[0] | (size_t) p[1] << 8;
}


static size_t
pg_spool_meta_size(const pg_spool_record_t *rec)
{
    size_t  i, n;

    n = PG_SPOOL_FIXED;

    for (i = 0; i < rec->nheaders; i++) {
        n += 2 + rec->headers[i].name.len + 4 + rec->headers[i].value.len;
    }

    return n;
}


size_t
pg_spool_head_size(const pg_spool_record_t *rec)
{
    size_t  i, meta;

    if (rec->nheaders > PG_SPOOL_MAX_HEADERS
        || rec->body_len > PG_WAL_MAX_RECORD)
    {
        return 0;
    }

    for (i = 0; i < rec->nheaders; i++) {
        if (rec->headers[i].name.len > 0xffff
            || rec->headers[i].value.len > PG_WAL_MAX_RECORD)
        {
            return 0;
        }
    }

    meta = pg_spool_meta_size(rec);

    if (meta + rec->body_len > PG_WAL_MAX_RECORD) {
        return 0;
    }

    return PG_WAL_FRAME_HEADER + meta;
}


size_t
pg_spool_encode_head(const pg_spool_record_t *rec, uint8_t *out)
{
    size_t    i, meta;
    uint8_t  *p;
    uint32_t  crc;

    meta = pg_spool_meta_size(rec);

    p = out + PG_WAL_FRAME_HEADER;

    p = pg_wal_put64(p, rec->seq);
    p = pg_wal_put64(p, (uint64_t) rec->ts);
    *p++ = (uint8_t) rec->version;
    *p++ = 0;
    p = pg_spool_put16(p, (uint32_t) rec->nheaders);
    p = pg_wal_put32(p, (uint32_t) rec->body_len);

    for (i = 0; i < rec->nheaders; i++) {
        p = pg_spool_put16(p, (uint32_t) rec->headers[i].name.len);
        if (rec->headers[i].name.len) {
            memcpy(p, rec->headers[i].name.data, rec->headers[i].name.len);
            p += rec->headers[i].name.len;
        }

        p = pg_wal_put32(p, (uint32_t) rec->headers[i].value.len);
        if (rec->headers[i].value.len) {
            memcpy(p, rec->headers[i].value.data, rec->headers[i].value.len);
            p += rec->headers[i].value.len;
        }
    }

    crc = pg_crc32c(0, out + PG_WAL_FRAME_HEADER, meta);

    if (rec->body_len) {
        crc = pg_crc32c(crc, rec->body, rec->body_len);
    }

    (void) pg_wal_put32(out, (uint32_t) (meta + rec->body_len));
    (void) pg_wal_put32(out + 4, crc);

    return PG_WAL_FRAME_HEADER + meta;
}


int
pg_spool_decode(const uint8_t *payload, size_t len, pg_spool_header_t *hdrs,
    pg_spool_record_t *rec)
{
    size_t          i, n, nl, vl, body;
    const uint8_t  *p, *end;

    if (len < PG_SPOOL_FIXED) {
        return -1;
    }

    p = payload;
    end = payload + len;

    rec->seq = pg_wal_get64(p);
    rec->ts = (int64_t) pg_wal_get64(p + 8);
    rec->version = p[16];
    n = pg_spool_get16(p + 18);
    body = pg_wal_get32(p + 20);
    p += PG_SPOOL_FIXED;

    if ((rec->version != 1 && rec->version != 2) || p[-7] != 0
        || n > PG_SPOOL_MAX_HEADERS)
    {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if ((size_t) (end - p) < 2) {
            return -1;
        }

        nl = pg_spool_get16(p);
        p += 2;

        if ((size_t) (end - p) < nl + 4) {
            return -1;
        }

        hdrs[i].name.data = p;
        hdrs[i].name.len = nl;
        p += nl;

        vl = pg_wal_get32(p);
        p += 4;

        if ((size_t) (end - p) < vl) {
            return -1;
        }

        hdrs[i].value.data = p;
        hdrs[i].value.len = vl;
        p += vl;
    }

    if ((size_t) (end - p) != body) {
        return -1;
    }

    rec->headers = hdrs;
    rec->nheaders = n;
    rec->body = p;
    rec->body_len = body;

    return 0;
}
