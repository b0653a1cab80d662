/*
 * libFuzzer target: the JSON writer of the query API (src/core/pg_json.c).
 * Exemplar values, timestamps and label values come from senders, and the
 * number formatters write into fixed PG_JSON_NUMBER_MAX-byte buffers, so a
 * value that needed more would corrupt a worker's memory.
 *
 * Input: one byte picking the check, then its data.
 *
 *   - values: at most PG_JSON_NUMBER_MAX bytes (ASan sees an exactly sized
 *     buffer); finite ones read back as the same double, with no more
 *     digits than the shortest correctly rounded printf %.*e that reads
 *     back; 'e' notation exactly when Go uses it;
 *   - timestamps: at most PG_JSON_NUMBER_MAX bytes, and they read back as
 *     the same ms, for every int64;
 *   - strings: a valid JSON string that decodes to the input with invalid
 *     UTF-8 replaced by U+FFFD, as Go's encoding/json writes it, with <, >,
 *     &, U+2028 and U+2029 escaped (HTML-safe);
 *   - a buffer whose allocator fails sets "failed" and never crashes.
 *
 * FUZZ_FLAGS: -max_len=4096
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_json.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_json", cond)


static fuzz_arena_t  arena;


/* ------------------------------------------------------------ values */

static void
check_value(double v)
{
    uint8_t  *out, digits[17];
    char      text[64], ref[64];
    size_t    n, nd, prec;
    int       point, e_form;
    double    back, a;

    out = malloc(PG_JSON_NUMBER_MAX);
    check(out != NULL);

    n = pg_json_format_value(out, v);
    check(n > 0 && n <= PG_JSON_NUMBER_MAX);
    check(n < sizeof(text));
    memcpy(text, out, n);
    text[n] = '\0';
    free(out);

    if (isnan(v)) {
        check(strcmp(text, "NaN") == 0);
        return;
    }

    if (isinf(v)) {
        check(strcmp(text, v > 0 ? "+Inf" : "-Inf") == 0);
        return;
    }

    back = strtod(text, NULL);
    check(memcmp(&back, &v, sizeof(double)) == 0
          || (v == 0 && back == 0));

    a = fabs(v);
    e_form = v != 0 && (a < 1e-6 || a >= 1e21);
    check((strchr(text, 'e') != NULL) == e_form);

    if (v == 0) {
        return;
    }

    /* the shortest digits: the first printf precision that reads back */
    nd = pg_json_shortest(v, digits, &point);
    check(nd >= 1 && nd <= 17);

    for (prec = 0; prec < 17; prec++) {
        snprintf(ref, sizeof(ref), "%.*e", (int) prec, a);
        if (strtod(ref, NULL) == a) {
            break;
        }
    }

    /* never longer than the correctly rounded form that reads back; it
     * may be shorter next to a power of two, where the interval that
     * reads back is lopsided and Go's algorithm finds a digit string
     * that is not the nearest */
    check(nd <= prec + 1);
}


/* -------------------------------------------------------- timestamps */

static void
check_timestamp(int64_t ms)
{
    uint8_t   *out;
    size_t     n, i;
    uint64_t   sec, frac, t;
    int        neg;

    out = malloc(PG_JSON_NUMBER_MAX);
    check(out != NULL);

    n = pg_json_format_timestamp(out, ms);
    check(n > 0 && n <= PG_JSON_NUMBER_MAX);

    i = 0;
    neg = out[0] == '-';
    i += neg;

    sec = 0;
    check(i < n && out[i] >= '0' && out[i] <= '9');
    while (i < n && out[i] >= '0' && out[i] <= '9') {
        sec = sec * 10 + (out[i++] - '0');
    }

    frac = 0;
    if (i < n) {
        check(out[i++] == '.');
        check(n - i == 3);
        for ( /* void */ ; i < n; i++) {
            check(out[i] >= '0' && out[i] <= '9');
            frac = frac * 10 + (out[i] - '0');
        }
        check(frac != 0);
    }

    t = sec * 1000 + frac;
    check(neg ? t == (uint64_t) 0 - (uint64_t) ms && ms < 0
              : t == (uint64_t) ms);

    free(out);
}


/* ----------------------------------------------------------- strings */

/* Go's utf8.DecodeRune, written out: width of a valid sequence, or 0 */
static size_t
ref_rune(const uint8_t *p, size_t len, uint32_t *r)
{
    size_t    n, k;
    uint32_t  cp, min;

    if (p[0] < 0x80) {
        *r = p[0];
        return 1;
    }

    if ((p[0] & 0xe0) == 0xc0) {
        n = 1; cp = p[0] & 0x1f; min = 0x80;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 2; cp = p[0] & 0x0f; min = 0x800;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 3; cp = p[0] & 0x07; min = 0x10000;
    } else {
        return 0;
    }

    if (len <= n) {
        return 0;
    }

    for (k = 1; k <= n; k++) {
        if ((p[k] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (p[k] & 0x3f);
    }

    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }

    *r = cp;
    return n + 1;
}


static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}


/* decodes one JSON string (no surrogate pairs: Go never writes them) into
 * code points; returns their count */
static size_t
json_decode(const uint8_t *p, size_t n, uint32_t *cps)
{
    size_t    i, k, w;
    uint32_t  cp;
    int       h, j;

    check(n >= 2 && p[0] == '"' && p[n - 1] == '"');
    k = 0;

    for (i = 1; i < n - 1; /* void */) {
        if (p[i] == '\\') {
            check(i + 1 < n - 1);
            switch (p[i + 1]) {
            case '"': cps[k++] = '"'; i += 2; break;
            case '\\': cps[k++] = '\\'; i += 2; break;
            case 'n': cps[k++] = '\n'; i += 2; break;
            case 'r': cps[k++] = '\r'; i += 2; break;
            case 't': cps[k++] = '\t'; i += 2; break;
            case 'u':
                check(i + 6 <= n - 1);
                cp = 0;
                for (j = 0; j < 4; j++) {
                    h = hexval(p[i + 2 + j]);
                    check(h >= 0);
                    cp = cp << 4 | (uint32_t) h;
                }
                cps[k++] = cp;
                i += 6;
                break;
            default:
                check(0);
            }
            continue;
        }

        /* raw: printable ASCII other than the escaped, or valid UTF-8 */
        check(p[i] >= 0x20 && p[i] != '"' && p[i] != '<' && p[i] != '>'
              && p[i] != '&');
        w = ref_rune(p + i, n - 1 - i, &cp);
        check(w > 0);
        check(cp != 0x2028 && cp != 0x2029);
        cps[k++] = cp;
        i += w;
    }

    return k;
}


static void
check_string(const uint8_t *s, size_t n, size_t cap)
{
    pg_json_buf_t   b;
    uint32_t       *got, *want, cp;
    size_t          ng, nw, i, w;

    fuzz_arena_reset(&arena, 1 << 20, cap);
    pg_json_init(&b, fuzz_arena_allocator(&arena));

    pg_json_literal(&b, "[");
    pg_json_string(&b, s, n);

    if (b.failed) {
        return;
    }

    check(b.len >= 3 && b.len <= b.cap && b.data[0] == '[');

    got = malloc((b.len + 1) * sizeof(uint32_t));
    want = malloc((n + 1) * sizeof(uint32_t));
    check(got != NULL && want != NULL);

    ng = json_decode(b.data + 1, b.len - 1, got);

    for (i = 0, nw = 0; i < n; /* void */) {
        w = ref_rune(s + i, n - i, &cp);
        want[nw++] = w ? cp : 0xfffd;
        i += w ? w : 1;
    }

    check(ng == nw);
    check(nw == 0 || memcmp(got, want, nw * sizeof(uint32_t)) == 0);

    free(got);
    free(want);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned  opt;
    double    v;
    int64_t   ms;
    size_t    i;

    if (size < 1) {
        return 0;
    }

    opt = data[0];
    data++;
    size--;

    switch (opt % 3) {

    case 0:
        for (i = 0; i + 8 <= size; i += 8) {
            memcpy(&v, data + i, 8);
            check_value(v);
        }
        break;

    case 1:
        for (i = 0; i + 8 <= size; i += 8) {
            memcpy(&ms, data + i, 8);
            check_timestamp(ms);
        }
        check_timestamp(INT64_MIN);
        check_timestamp(INT64_MAX);
        break;

    default:
        /* sometimes with too little memory for the answer */
        check_string(data, size, (opt & 0x80) ? (size_t) (opt & 0x7f) * 4
                                              : (size_t) 1 << 20);
        break;
    }

    return 0;
}
