/*
 * Remote write frames its protobuf body as one snappy block (not the
 * framed stream format).  The declared length is checked against the
 * caller's limit before anything is allocated: decompression bombs stop
 * here.
 */

#include "pg_rw.h"

#include <string.h>
#include <snappy-c.h>


/*
 * The preamble: the uncompressed length, a varint of up to 32 bits.
 * Returns the bytes it took, 0 if it is not one.
 */

static size_t
pg_snappy_preamble(const uint8_t *src, size_t len, uint32_t *decoded)
{
    size_t    i;
    unsigned  b;
    uint32_t  v;

    v = 0;

    for (i = 0; i < len && i < 5; i++) {
        b = src[i];

        if (i == 4 && b > 15) {
            return 0;
        }

        v |= (uint32_t) (b & 0x7f) << (7 * i);

        if (b < 0x80) {
            *decoded = v;
            return i + 1;
        }
    }

    return 0;
}


pg_snappy_rc_e
pg_snappy_decoded_length(const uint8_t *src, size_t len, size_t max,
    size_t *decoded)
{
    uint32_t  n;

    if (pg_snappy_preamble(src, len, &n) == 0) {
        return PG_SNAPPY_INVALID;
    }

    *decoded = n;

    return n > max ? PG_SNAPPY_TOO_LARGE : PG_SNAPPY_OK;
}


/*
 * The block decoder is ours, not libsnappy's: snappy 1.1.9 (Debian 12)
 * moves the bytes of every element through two calls (snappy::MemMove,
 * then memmove through the PLT), about 60,000 per 840 KB body of the
 * main benchmark shape; here the usual element (a literal of up to 64
 * bytes, a copy of up to 64 bytes from 16 or more bytes back) is a few
 * 16-byte loads and stores written in line.  bench/decode_bench.c shows
 * the gain; libsnappy stays the reference: t/unit/test_rw.c and
 * fuzz/fuzz_snappy.c hold every input to its answer (the same bytes, or
 * both refuse).
 *
 * Hostile input: every length and offset is checked before it is used.
 * The in-line copies write up to 15 bytes past an element (overwritten by
 * the next one), so they run only while 64 bytes of output room are left,
 * and read up to 15 bytes past a literal only while 64 bytes of input are
 * left; the last elements go through the exact path.
 */

#define PG_SNAPPY_SLOP  64


static inline void
pg_snappy_copy16(uint8_t *dst, const uint8_t *src)
{
    uint8_t  b[16];

    memcpy(b, src, 16);
    memcpy(dst, b, 16);
}


static inline uint32_t
pg_snappy_le32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


pg_snappy_rc_e
pg_snappy_decode(const uint8_t *src, size_t len, uint8_t *dst,
    size_t dst_len)
{
    size_t          n, nb, off;
    uint32_t        v;
    uint8_t        *op, *op_end;
    const uint8_t  *ip, *ip_end, *from;
    unsigned        tag, t, i;

    nb = pg_snappy_preamble(src, len, &v);

    if (nb == 0 || v != dst_len) {
        return PG_SNAPPY_INVALID;
    }

    ip = src + nb;
    ip_end = src + len;

    op = dst;
    op_end = dst + dst_len;

    /*
     * The fast loop: 64 bytes of input and of output room are left, so
     * the tag's fields can be read and the element moved in 16-byte
     * pieces without a bound check of their own.  Which branch a tag
     * takes is data, not pattern: the copy's length, offset width and
     * offset are chosen without branches, and a copy always moves 64
     * bytes (a mispredicted branch costs more than three more stores).
     */

fast:

    while ((size_t) (ip_end - ip) >= PG_SNAPPY_SLOP
           && (size_t) (op_end - op) >= PG_SNAPPY_SLOP)
    {
        tag = *ip++;

        if ((tag & 3) == 0) {
            n = (tag >> 2) + 1;

            if (n <= 16) {
                pg_snappy_copy16(op, ip);
                op += n;
                ip += n;
                continue;
            }

            if (n <= 48) {
                pg_snappy_copy16(op, ip);
                pg_snappy_copy16(op + 16, ip + 16);
                pg_snappy_copy16(op + 32, ip + 32);
                op += n;
                ip += n;
                continue;
            }

            /* 49 bytes or more: the exact loop reads the length */

            ip--;
            goto exact;
        }

        /*
         * copy 1: length 4-11 in bits 2-4, offset bits 8-10 in bits 5-7,
         * one byte of offset; copy 2 and 4: length 1-64 in bits 2-7,
         * two or four bytes of offset, little-endian
         */

        switch (tag & 3) {

        case 1:
            n = ((tag >> 2) & 7) + 4;
            off = ((size_t) (tag >> 5) << 8) | ip[0];
            ip += 1;
            break;

        case 2:
            n = (tag >> 2) + 1;
            off = (size_t) ip[0] | (size_t) ip[1] << 8;
            ip += 2;
            break;

        default:
            n = (tag >> 2) + 1;
            off = pg_snappy_le32(ip);
            ip += 4;
            break;
        }

        if (off - 1 >= (size_t) (op - dst)) {
            return PG_SNAPPY_INVALID;
        }

        from = op - off;

        if (off >= 16) {

            /* in order: each load reads output written before it */

            pg_snappy_copy16(op, from);
            pg_snappy_copy16(op + 16, from + 16);
            pg_snappy_copy16(op + 32, from + 32);
            pg_snappy_copy16(op + 48, from + 48);
            op += n;
            continue;
        }

        /* a repeating pattern */

        while (n--) {
            *op++ = *from++;
        }
    }

exact:

    /* the exact loop: every length checked, nothing moved past it */

    while (ip < ip_end) {

        tag = *ip++;

        if ((tag & 3) == 0) {

            /* a literal: length - 1 in the tag, or in 1 to 4 bytes after */

            n = (tag >> 2) + 1;

            if (n > 60) {
                nb = n - 60;

                if ((size_t) (ip_end - ip) < nb) {
                    return PG_SNAPPY_INVALID;
                }

                n = 0;

                for (i = nb; i > 0; i--) {
                    n = (n << 8) | ip[i - 1];
                }

                ip += nb;
                n += 1;
            }

            if (n > (size_t) (ip_end - ip) || n > (size_t) (op_end - op)) {
                return PG_SNAPPY_INVALID;
            }

            memcpy(op, ip, n);
            op += n;
            ip += n;

        } else {
            t = tag & 3;
            n = t == 1 ? ((tag >> 2) & 7) + 4 : (tag >> 2) + 1;
            nb = t == 3 ? 4 : t;

            if ((size_t) (ip_end - ip) < nb) {
                return PG_SNAPPY_INVALID;
            }

            off = t == 1 ? (size_t) (tag >> 5) << 8 : 0;

            for (i = 0; i < nb; i++) {
                off += (size_t) ip[i] << (8 * i);
            }

            ip += nb;

            if (off - 1 >= (size_t) (op - dst)
                || n > (size_t) (op_end - op))
            {
                return PG_SNAPPY_INVALID;
            }

            from = op - off;

            while (n--) {
                *op++ = *from++;
            }
        }

        if ((size_t) (ip_end - ip) >= PG_SNAPPY_SLOP
            && (size_t) (op_end - op) >= PG_SNAPPY_SLOP)
        {
            /* a long literal is behind: back to the fast loop */
            goto fast;
        }
    }

    return op == op_end ? PG_SNAPPY_OK : PG_SNAPPY_INVALID;
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
