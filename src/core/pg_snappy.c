/*
 * Remote write frames its protobuf body as one snappy block (not the
 * framed stream format).  The declared length is checked against the
 * caller's limit before anything is allocated: decompression bombs stop
 * here.
 */

#include "pg_rw.h"

#include <snappy-c.h>


pg_snappy_rc_e
pg_snappy_decoded_length(const uint8_t *src, size_t len, size_t max,
    size_t *decoded)
{
    size_t  n;

    if (len == 0
        || snappy_uncompressed_length((const char *) src, len, &n)
           != SNAPPY_OK)
    {
        return PG_SNAPPY_INVALID;
    }

    *decoded = n;

    return n > max ? PG_SNAPPY_TOO_LARGE : PG_SNAPPY_OK;
}


pg_snappy_rc_e
pg_snappy_decode(const uint8_t *src, size_t len, uint8_t *dst,
    size_t dst_len)
{
    size_t  n;

    n = dst_len;

    if (snappy_uncompress((const char *) src, len, (char *) dst, &n)
        != SNAPPY_OK || n != dst_len)
    {
        return PG_SNAPPY_INVALID;
    }

    return PG_SNAPPY_OK;
}


size_t
pg_snappy_max_encoded(size_t len)
{
    return snappy_max_compressed_length(len);
}


pg_snappy_rc_e
pg_snappy_encode(const uint8_t *src, size_t len, uint8_t *dst,
    size_t *dst_len)
{
    size_t  n;

    n = snappy_max_compressed_length(len);

    if (snappy_compress((const char *) src, len, (char *) dst, &n)
        != SNAPPY_OK)
    {
        return PG_SNAPPY_INVALID;
    }

    *dst_len = n;

    return PG_SNAPPY_OK;
}
