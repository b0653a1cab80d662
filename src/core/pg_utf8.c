/*
 * UTF-8 validation with Go's rules: shortest form only, no surrogate
 * halves, nothing above U+10FFFF.
 */

#include "pg_core.h"


int
pg_utf8_valid(const uint8_t *p, size_t len)
{
    const uint8_t  *end;
    uint8_t         c, lo, hi;
    size_t          n, i;

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

        c = *p;

        if (c < 0x80) {
            p++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;
            } else if (c == 0xed) {
                hi = 0x9f;
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;
            }

        } else {
            return 0;
        }

        if ((size_t) (end - p) <= n) {
            return 0;
        }

        if (p[1] < lo || p[1] > hi) {
            return 0;
        }

        for (i = 2; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return 0;
            }
        }

        p += n + 1;
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
