/*
 * UTF-8 with Go's rules: shortest form only, no surrogate halves, nothing
 * above U+10FFFF.
 */

#include "pg_utf8.h"


size_t
pg_utf8_decode_rune(const uint8_t *p, size_t len, uint32_t *rune)
{
    uint8_t  c, lo, hi;
    size_t   n, i;

    c = p[0];

    if (c < 0x80) {
        *rune = c;
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        *rune = c & 0x1f;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        *rune = c & 0x0f;

        if (c == 0xe0) {
            lo = 0xa0;
        } else if (c == 0xed) {
            hi = 0x9f;
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        *rune = c & 0x07;

        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f;
        }

    } else {
        return 0;
    }

    if (len < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if (i > 1 && (p[i] & 0xc0) != 0x80) {
            return 0;
        }
        *rune = (*rune << 6) | (p[i] & 0x3f);
    }

    return n;
}


size_t
pg_utf8_encode_rune(uint8_t *p, uint32_t rune)
{
    if (rune < 0x80) {
        p[0] = (uint8_t) rune;
        return 1;
    }

    if (rune < 0x800) {
        p[0] = (uint8_t) (0xc0 | (rune >> 6));
        p[1] = (uint8_t) (0x80 | (rune & 0x3f));
        return 2;
    }

    if (rune < 0x10000) {
        p[0] = (uint8_t) (0xe0 | (rune >> 12));
        p[1] = (uint8_t) (0x80 | ((rune >> 6) & 0x3f));
        p[2] = (uint8_t) (0x80 | (rune & 0x3f));
        return 3;
    }

    p[0] = (uint8_t) (0xf0 | (rune >> 18));
    p[1] = (uint8_t) (0x80 | ((rune >> 12) & 0x3f));
    p[2] = (uint8_t) (0x80 | ((rune >> 6) & 0x3f));
    p[3] = (uint8_t) (0x80 | (rune & 0x3f));

    return 4;
}


int
pg_utf8_valid(const uint8_t *p, size_t len)
{
    const uint8_t  *end;
    uint32_t        rune;
    size_t          n;

    end = p + len;

    while (p < end) {

        /* fast path over ASCII, 8 bytes at a time */
        while (end - p >= 8) {
            uint64_t  w;

            memcpy(&w, p, 8);
            if (w & 0x8080808080808080ULL) {
                break;
            }
            p += 8;
        }

        if (p == end) {
            break;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = pg_utf8_decode_rune(p, end - p, &rune);

        if (n == 0) {
            return 0;
        }

        p += n;
    }

    return 1;
}


size_t
pg_utf8_count(const uint8_t *p, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        n += (p[i] & 0xc0) != 0x80;
    }

    return n;
}
