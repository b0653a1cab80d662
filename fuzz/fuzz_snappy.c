/*
 * pg_snappy_decode() (ours, src/core/pg_snappy.c) against libsnappy's
 * decoder as the oracle.  The first byte picks the mode:
 *
 *   even  the rest is a compressed block, hostile: both read the same
 *         length from its preamble or both refuse it, and both decoders
 *         accept it and write the same bytes, or both refuse it; the output
 *         buffer is exactly the declared length (heap, so ASan sees a
 *         byte written past it)
 *   odd   the rest is data: libsnappy compresses it, ours decodes it
 *         back to the same bytes (long, valid streams through the fast
 *         loop)
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <snappy-c.h>

#include "pg_rw.h"
#include "fuzz_check.h"


#define check(cond)  fuzz_check("fuzz_snappy", cond)


#define MAX_DECODED  (4u << 20)


static void
block(const uint8_t *data, size_t size)
{
    size_t    n, m;
    int       ok_lib, ok_pg;
    char     *a;
    uint8_t  *b;

    /* the preamble: ours reads the same length, or both refuse it */

    ok_lib = snappy_uncompressed_length((const char *) data, size, &n)
             == SNAPPY_OK;
    ok_pg = pg_snappy_decoded_length(data, size, SIZE_MAX, &m)
            == PG_SNAPPY_OK;

    check(ok_lib == ok_pg);
    check(!ok_lib || n == m);

    if (!ok_lib || n > MAX_DECODED) {
        return;
    }

    a = malloc(n ? n : 1);
    b = malloc(n ? n : 1);
    check(a != NULL && b != NULL);

    m = n;
    ok_lib = snappy_uncompress((const char *) data, size, a, &m)
             == SNAPPY_OK && m == n;
    ok_pg = pg_snappy_decode(data, size, b, n) == PG_SNAPPY_OK;

    check(ok_lib == ok_pg);
    check(!ok_lib || memcmp(a, b, n) == 0);

    free(a);
    free(b);
}


static void
roundtrip(const uint8_t *data, size_t size)
{
    size_t    clen, n;
    char     *c;
    uint8_t  *b;

    clen = snappy_max_compressed_length(size);
    c = malloc(clen);
    check(c != NULL);
    check(snappy_compress((const char *) data, size, c, &clen) == SNAPPY_OK);

    check(pg_snappy_decoded_length((uint8_t *) c, clen, MAX_DECODED, &n)
          == PG_SNAPPY_OK);
    check(n == size);

    b = malloc(n ? n : 1);
    check(b != NULL);
    check(pg_snappy_decode((uint8_t *) c, clen, b, n) == PG_SNAPPY_OK);
    check(memcmp(b, data, n) == 0);

    /* the block itself, cut short: refused (or, if empty, nothing) */
    if (clen > 1) {
        block((uint8_t *) c, clen - 1);
    }

    free(b);
    free(c);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    if (data[0] & 1) {
        roundtrip(data + 1, size - 1);

    } else {
        block(data + 1, size - 1);
    }

    return 0;
}
