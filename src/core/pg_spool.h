/*
 * A spool's record: a write's body as sent to one target, with the
 * request headers it needs there, in a WAL frame (pg_wal.h):
 *
 *     u64 seq, i64 ts (ms, when spooled), u8 version (1: remote write
 *     1.0, 2: 2.0), u8 0, u16 header count, u32 body length,
 *     headers (u16 name length, name, u32 value length, value),
 *     body
 *
 * The seq comes first, as in every WAL payload (pg_wal_payload_seq()).
 */

#ifndef PG_SPOOL_H
#define PG_SPOOL_H

#include "pg_core.h"
#include "pg_wal.h"


#define PG_SPOOL_MAX_HEADERS  100


typedef struct {
    pg_str_t            name;
    pg_str_t            value;
} pg_spool_header_t;


typedef struct {
    uint64_t                  seq;
    int64_t                   ts;
    unsigned                  version;
    const pg_spool_header_t  *headers;
    size_t                    nheaders;
    const uint8_t            *body;
    size_t                    body_len;
} pg_spool_record_t;


/*
 * The frame header and everything before the body: its size, and 0 for
 * a record whose frame replay could not read (PG_WAL_MAX_RECORD) or with
 * too many headers.
 */
size_t pg_spool_head_size(const pg_spool_record_t *rec);

/*
 * Writes the frame header and the part before the body into out
 * (pg_spool_head_size() bytes), the CRC covering the body too: the frame
 * is these bytes followed by rec->body.  Returns the size written.
 */
size_t pg_spool_encode_head(const pg_spool_record_t *rec, uint8_t *out);

/*
 * Decodes a frame's payload (pg_wal_scan() checked its CRC); the headers
 * go into hdrs (PG_SPOOL_MAX_HEADERS) and, as the body, point into the
 * payload.  0, or -1 if it is malformed.
 */
int pg_spool_decode(const uint8_t *payload, size_t len,
    pg_spool_header_t *hdrs, pg_spool_record_t *rec);

#endif /* PG_SPOOL_H */
