/*
 * JSON writing, byte-identical to Prometheus 3.5: encoding/json's HTML-safe
 * string escaping (jsoniter's standard-library mode, for error texts),
 * jsoniter's plain WriteString for label names and values (the API's own
 * label encoder), strconv's shortest float formatting as
 * jsonutil.MarshalFloat uses it, jsonutil.MarshalTimestamp.
 *
 * JSON reading: the one reader of the JSON promgate takes in (see
 * pg_json.h), strict but for what its callers' flags relax.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "pg_json.h"


static int pg_json_next_up(char *buf);
static void pg_json_read_ws(pg_json_reader_t *r);
static int pg_json_read_name(pg_json_reader_t *r, pg_str_t *name,
    int first, unsigned depth);
static int pg_json_read_hex4(const uint8_t *p, uint32_t *v);
static int pg_json_read_chars(pg_json_reader_t *r, uint8_t *out,
    size_t *len);
static int pg_json_read_digits(pg_json_reader_t *r, const uint8_t **pp);
static int pg_json_read_value(pg_json_reader_t *r, unsigned depth);


static const char  pg_json_hex[] = "0123456789abcdef";


/* the escape of a byte that needs one: \" \\ \n \r \t, else \u00XX */
static inline uint8_t *
pg_json_escape_byte(uint8_t *p, uint8_t c)
{
    *p++ = '\\';

    switch (c) {
    case '"':
    case '\\':
        *p++ = c;
        break;
    case '\n':
        *p++ = 'n';
        break;
    case '\r':
        *p++ = 'r';
        break;
    case '\t':
        *p++ = 't';
        break;
    default:
        /* other controls, and <>& which browsers might sniff */
        *p++ = 'u';
        *p++ = '0';
        *p++ = '0';
        *p++ = pg_json_hex[c >> 4];
        *p++ = pg_json_hex[c & 0xf];
    }

    return p;
}

/* "00" to "99" */
static const char  pg_json_digits2[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";


/* v in decimal at p, two digits a step from the end; returns the end */
static uint8_t *
pg_json_decimal(uint8_t *p, uint64_t v)
{
    size_t    n;
    uint64_t  x;

    for (n = 1, x = v; x >= 100; x /= 100) {
        n += 2;
    }

    n += (x >= 10);
    p += n;

    for (x = v; x >= 100; x /= 100) {
        p -= 2;
        memcpy(p, pg_json_digits2 + 2 * (x % 100), 2);
    }

    if (x >= 10) {
        p -= 2;
        memcpy(p, pg_json_digits2 + 2 * x, 2);

    } else {
        *--p = (uint8_t) ('0' + x);
    }

    return p + n;
}


void
pg_json_init(pg_json_buf_t *b, pg_allocator_t alloc)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->alloc = alloc;
    b->failed = 0;
}


uint8_t *
pg_json_reserve(pg_json_buf_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *p;

    if (b->failed) {
        return NULL;
    }

    if (b->cap - b->len >= n) {
        return b->data + b->len;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return NULL;
        }
        cap *= 2;
    }

    /* the allocator cannot free: the old buffer is simply abandoned */
    p = b->alloc.alloc(b->alloc.ctx, cap);
    if (p == NULL) {
        b->failed = 1;
        return NULL;
    }

    if (b->len) {
        memcpy(p, b->data, b->len);
    }

    b->data = p;
    b->cap = cap;

    return p + b->len;
}


void
pg_json_raw(pg_json_buf_t *b, const void *data, size_t n)
{
    uint8_t  *p;

    p = pg_json_reserve(b, n);
    if (p == NULL) {
        return;
    }

    if (n) {
        memcpy(p, data, n);
    }

    b->len += n;
}


/*
 * A quoted string.  go: as Go's encoding/json writes it (HTML-safe: <, >
 * and & escaped too; a byte that is not UTF-8 as \ufffd; U+2028, U+2029
 * escaped); else as jsoniter's Stream.WriteString() does: only controls,
 * '"' and '\\' are escaped, other bytes go out as they are.
 */
static void
pg_json_quote(pg_json_buf_t *b, const uint8_t *s, size_t n, int go)
{
    size_t    i, start, size;
    uint8_t  *p, c;
    uint32_t  rune;

    /* the worst case, every byte as \ufffd or \u00XX, is 6 bytes each */
    if (n > (SIZE_MAX - 2) / 6) {
        b->failed = 1;
        return;
    }

    p = pg_json_reserve(b, n * 6 + 2);
    if (p == NULL) {
        return;
    }

    *p++ = '"';
    start = 0;
    i = 0;

    while (i < n) {
        c = s[i];

        if (c >= 0x80 && go) {
            size = pg_utf8_decode_rune(s + i, n - i, &rune);

            if (size == 0) {
                memcpy(p, s + start, i - start);
                p += i - start;
                memcpy(p, "\\ufffd", 6);
                p += 6;
                i++;
                start = i;
                continue;
            }

            if (rune == 0x2028 || rune == 0x2029) {
                /* valid JSON, but line terminators in JavaScript */
                memcpy(p, s + start, i - start);
                p += i - start;
                memcpy(p, "\\u202", 5);
                p += 5;
                *p++ = pg_json_hex[rune & 0xf];
                i += size;
                start = i;
                continue;
            }

            i += size;
            continue;
        }

        if (c >= 0x20 && c != '"' && c != '\\'
            && !(go && (c == '<' || c == '>' || c == '&')))
        {
            i++;
            continue;
        }

        memcpy(p, s + start, i - start);
        p += i - start;

        p = pg_json_escape_byte(p, c);

        i++;
        start = i;
    }

    memcpy(p, s + start, n - start);
    p += n - start;
    *p++ = '"';

    b->len = p - b->data;
}


void
pg_json_string(pg_json_buf_t *b, const uint8_t *s, size_t n)
{
    pg_json_quote(b, s, n, 1);
}


/*
 * Adds one unit in the last digit of a "d.ddde+XX" string in place; fails
 * when that would carry into a new leading digit (9.99 -> 10.0), which the
 * next precision tries anyway.
 */
static int
pg_json_next_up(char *buf)
{
    char  *e;

    e = strchr(buf, 'e');
    if (e == NULL) {
        return 0;
    }

    while (--e >= buf) {
        if (*e < '0' || *e > '9') {
            continue;
        }

        if (*e < '9') {
            (*e)++;
            return 1;
        }

        *e = '0';
    }

    return 0;
}


#if defined(__SIZEOF_INT128__)

typedef unsigned __int128  pg_json_u128_t;


/*
 * The candidate of d = 17 - j digits for the exact path below: the
 * decimal c * 10^j nearest to S = q + r / 2^sh (ties to an even c), or the
 * next one up when that is below S and out of the interval; 1 when it
 * reads back as v, i.e. lies within lo below or hi above X = 4 * S in
 * units of 2^-(sh + 2) (the bounds themselves when incl).  Inlined with a
 * constant p = 10^j.
 */
static inline int
pg_json_candidate(uint64_t q, uint64_t r, int sh, uint64_t p,
    pg_json_u128_t x, pg_json_u128_t lo, pg_json_u128_t hi, int incl,
    uint64_t *c)
{
    uint64_t        a, b;
    pg_json_u128_t  twice, half, cand, diff;

    a = q / p;
    b = q % p;

    twice = ((pg_json_u128_t) b << (sh + 1)) + 2 * (pg_json_u128_t) r;
    half = (pg_json_u128_t) p << sh;

    if (twice > half || (twice == half && (a & 1))) {
        a++;
    }

    cand = (pg_json_u128_t) (a * p) << (sh + 2);

    if (cand < x) {
        diff = x - cand;

        if (diff < lo || (incl && diff == lo)) {
            *c = a;
            return 1;
        }

        /* a power of two: its interval is twice as wide above */
        a++;
        cand = (pg_json_u128_t) (a * p) << (sh + 2);
    }

    diff = cand - x;

    if (diff < hi || (incl && diff == hi)) {
        *c = a;
        return 1;
    }

    return 0;
}


/*
 * The shortest digits of a normal v in [1e-6, 1e15) with integers alone,
 * the same digits as the printf search below finds.  v = m * 2^e; with k
 * such that 10^16 <= S = v * 10^k < 10^17, S = m * 5^k / 2^sh exactly
 * (m * 5^k < 2^107, 0 < sh < 64).  What reads back as v is within half
 * an ulp of it (a quarter below a power of two), the bounds included when
 * m is even (strtod rounds ties to even).  At most one decimal of up to
 * 15 digits lies there, the nearest: it is found as the 15-digit one with
 * its zeros stripped; else the nearest of 16 digits, else of 17, as Go's
 * shortest formatting picks them.  Returns 0 when v is not for this path.
 */
static size_t
pg_json_shortest_exact(double v, uint8_t *digits, int *point)
{
    int             x, k, sh, e, j, n, i;
    uint64_t        bits, m, q, r, c;
    pg_json_u128_t  big, lo, hi, four;

    static const uint64_t  pow5[] = {
        1ULL, 5ULL, 25ULL, 125ULL, 625ULL, 3125ULL, 15625ULL, 78125ULL,
        390625ULL, 1953125ULL, 9765625ULL, 48828125ULL, 244140625ULL,
        1220703125ULL, 6103515625ULL, 30517578125ULL, 152587890625ULL,
        762939453125ULL, 3814697265625ULL, 19073486328125ULL,
        95367431640625ULL, 476837158203125ULL, 2384185791015625ULL,
        11920928955078125ULL, 59604644775390625ULL
    };

    memcpy(&bits, &v, sizeof(double));

    x = (int) (bits >> 52 & 0x7ff);
    m = (bits & 0xfffffffffffffULL) | (1ULL << 52);
    e = x - 1075;

    /* floor(log10(v)) is d or d + 1, d = floor((x - 1023) * log10(2)) */
    x -= 1023;
    k = (x >= 0) ? 16 - (x * 1233 >> 12) : 16 + ((-x * 1233 + 4095) >> 12);

    for (i = 0; ; i++) {
        sh = -(e + k);

        if (i == 3 || k < 0 || k > 24 || sh <= 0 || sh > 62) {
            return 0;
        }

        big = (pg_json_u128_t) m * pow5[k];
        q = (uint64_t) (big >> sh);

        if (q < 10000000000000000ULL) {
            k++;

        } else if (q >= 100000000000000000ULL) {
            k--;

        } else {
            break;
        }
    }

    r = (uint64_t) (big & (((pg_json_u128_t) 1 << sh) - 1));

    four = big << 2;
    hi = 2 * (pg_json_u128_t) pow5[k];
    lo = ((bits & 0xfffffffffffffULL) == 0) ? hi / 2 : hi;

    if (pg_json_candidate(q, r, sh, 100, four, lo, hi, !(m & 1), &c)) {
        j = 2;

    } else if (pg_json_candidate(q, r, sh, 10, four, lo, hi, !(m & 1), &c))
    {
        j = 1;

    } else if (pg_json_candidate(q, r, sh, 1, four, lo, hi, !(m & 1), &c))
    {
        j = 0;

    } else {
        return 0;       /* 17 digits always do: not reached */
    }

    /* v = c * 10^(j - k); c has up to 17 digits, often a few then 0s */
    while (c % 100000000 == 0) {
        c /= 100000000;
        j += 8;
    }

    if (c % 10000 == 0) {
        c /= 10000;
        j += 4;
    }

    if (c % 100 == 0) {
        c /= 100;
        j += 2;
    }

    if (c % 10 == 0) {
        c /= 10;
        j++;
    }

    n = (int) (pg_json_decimal(digits, c) - digits);

    *point = n + j - k;

    return (size_t) n;
}

#endif


/*
 * The shortest digits.  Two facts make this simple: a double's interval
 * of values reading back as it is narrower than a unit in the 15th digit,
 * so at most one decimal of up to 15 digits reads back as v; and for 16
 * and 17 digits the correctly rounded candidate (%.*e) is the closest one,
 * which is what Go picks.  Powers of two have a lopsided interval and
 * subnormals fewer digits: they take a slower search.  Values from 1e-6
 * to 1e15, all but the largest and smallest of sample values, take the
 * exact integer path above, which finds the same digits (t/unit/test_json.c
 * compares the two) without printf and strtod.
 */
size_t
pg_json_shortest(double v, uint8_t *digits, int *point)
{
    char      buf[40], *e;
    int       prec, exp10, lo, hi, k;
    size_t    n, i;
    uint64_t  bits, c;
    double    w, r;

    static const double  pow10[] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
    };

    v = fabs(v);

    memcpy(&bits, &v, sizeof(double));

    prec = 15;

    if (v >= 1e-6 && v < 1e15) {

#if defined(__SIZEOF_INT128__)
        n = pg_json_shortest_exact(v, digits, point);

        if (n) {
            return n;
        }
#endif

        /*
         * Up to 15 digits without printf: if w * 10^-k (w an integer
         * below 10^15) reads back as v, v * 10^k is within 0.11 of w
         * before rounding and 0.18 after, and the division, of exact
         * operands, rounds as strtod() would.  The loop reaches every k
         * such a w may have, so when it finds none, 15 digits do not do.
         */
        for (k = 0; k <= 22; k++) {
            w = v * pow10[k];

            if (w >= 1e15) {
                break;
            }

            r = floor(w + 0.5);

            if (fabs(w - r) <= 0.2 && r / pow10[k] == v && r >= 1) {
                c = (uint64_t) r;
                n = 0;

                while (c) {
                    buf[n++] = (char) ('0' + c % 10);
                    c /= 10;
                }

                *point = (int) n - k;

                for (i = 0; i < n; i++) {
                    digits[i] = buf[n - 1 - i];
                }

                while (n > 1 && digits[n - 1] == '0') {
                    n--;
                }

                return n;
            }
        }

        prec = 16;
    }

    if ((bits >> 52) == 0) {

        /* a subnormal: the interval is symmetric, p digits then p + 1 */
        lo = 1;
        hi = 17;

        while (lo < hi) {
            prec = (lo + hi) / 2;
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (strtod(buf, NULL) == v) {
                hi = prec;
            } else {
                lo = prec + 1;
            }
        }

        prec = lo;
        snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

    } else if ((bits & 0xfffffffffffffULL) != 0) {

        for ( /* void */ ; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (prec == 17 || strtod(buf, NULL) == v) {
                break;
            }
        }

    } else {
        /*
         * A power of two: the interval is twice as wide above v as below,
         * so the candidate just above v may read back when the nearest
         * does not; search linearly and try both.
         */
        for (prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);

            if (prec == 17 || strtod(buf, NULL) == v) {
                break;
            }

            if (strtod(buf, NULL) < v && pg_json_next_up(buf)
                && strtod(buf, NULL) == v)
            {
                break;
            }
        }
    }

    /* "d.ddde+XX": collect the digits, skipping the decimal point */
    n = 0;

    for (i = 0; buf[i] != '\0' && buf[i] != 'e'; i++) {
        if (buf[i] >= '0' && buf[i] <= '9') {
            digits[n++] = buf[i];
        }
    }

    e = buf + i;
    exp10 = (*e == 'e') ? atoi(e + 1) : 0;

    while (n > 1 && digits[n - 1] == '0') {
        n--;
    }

    *point = exp10 + 1;

    return n;
}


size_t
pg_json_format_value(uint8_t *out, double v)
{
    uint8_t  digits[20], *p;
    int      point, exp10, i;
    size_t   n;
    double   a;

    if (isnan(v)) {
        memcpy(out, "NaN", 3);
        return 3;
    }

    if (isinf(v)) {
        memcpy(out, v > 0 ? "+Inf" : "-Inf", 4);
        return 4;
    }

    p = out;

    if (signbit(v)) {
        *p++ = '-';
    }

    if (v == 0) {
        *p++ = '0';
        return p - out;
    }

    a = fabs(v);

    if (a < 9007199254740992.0 && a == (double) (int64_t) a) {
        /* an integer below 2^53: all its digits, as Go's 'f' prints it */
        return pg_json_decimal(p, (uint64_t) a) - out;
    }

    n = pg_json_shortest(a, digits, &point);

    if (a < 1e-6 || a >= 1e21) {
        /* Go's 'e' with -1 precision: d[.ddd]e±XX, two exponent digits */
        *p++ = digits[0];

        if (n > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, n - 1);
            p += n - 1;
        }

        exp10 = point - 1;
        *p++ = 'e';

        if (exp10 < 0) {
            *p++ = '-';
            exp10 = -exp10;
        } else {
            *p++ = '+';
        }

        if (exp10 < 10) {
            *p++ = '0';
            *p++ = '0' + exp10;

        } else if (exp10 < 100) {
            *p++ = '0' + exp10 / 10;
            *p++ = '0' + exp10 % 10;

        } else {
            *p++ = '0' + exp10 / 100;
            *p++ = '0' + exp10 / 10 % 10;
            *p++ = '0' + exp10 % 10;
        }

        return p - out;
    }

    /* Go's 'f' with -1 precision */
    if (point > 0) {
        for (i = 0; i < point; i++) {
            *p++ = (size_t) i < n ? digits[i] : '0';
        }

    } else {
        *p++ = '0';
    }

    if ((int) n > point) {
        *p++ = '.';

        for (i = point; i < (int) n; i++) {
            *p++ = i < 0 ? '0' : digits[i];
        }
    }

    return p - out;
}


size_t
pg_json_format_timestamp(uint8_t *out, int64_t ms)
{
    uint8_t   *p;
    uint64_t   t, frac;

    p = out;

    /* as jsonutil.MarshalTimestamp: sign, seconds, 3 digits if not 0 */
    if (ms < 0) {
        *p++ = '-';
        t = (uint64_t) 0 - (uint64_t) ms;

    } else {
        t = (uint64_t) ms;
    }

    p = pg_json_decimal(p, t / 1000);
    frac = t % 1000;

    if (frac) {
        *p++ = '.';
        *p++ = (uint8_t) ('0' + frac / 100);
        memcpy(p, pg_json_digits2 + 2 * (frac % 100), 2);
        p += 2;
    }

    return p - out;
}


void
pg_json_value(pg_json_buf_t *b, double v)
{
    uint8_t  *p;

    p = pg_json_reserve(b, PG_JSON_NUMBER_MAX + 2);
    if (p == NULL) {
        return;
    }

    *p = '"';
    p += 1 + pg_json_format_value(p + 1, v);
    *p++ = '"';

    b->len = p - b->data;
}


void
pg_json_timestamp(pg_json_buf_t *b, int64_t ms)
{
    uint8_t  *p;

    p = pg_json_reserve(b, PG_JSON_NUMBER_MAX);
    if (p == NULL) {
        return;
    }

    b->len += pg_json_format_timestamp(p, ms);
}


/*
 * 8 (or 4) bytes, in any order, that jsoniter's WriteString copies as
 * they are: no control below 0x20, no '"', no '\\' (bytes >= 0x80 go as
 * they are).  The tests for a byte below n and for a zero byte are exact
 * for the word as a whole, which is all that is asked here.
 */
#define PG_JSON_ONES   0x0101010101010101ULL
#define PG_JSON_HIGHS  0x8080808080808080ULL

static inline int
pg_json_plain8(uint64_t w)
{
    uint64_t  q, b;

    q = w ^ (PG_JSON_ONES * '"');
    b = w ^ (PG_JSON_ONES * '\\');

    return ((((w - PG_JSON_ONES * 0x20) & ~w)
             | ((q - PG_JSON_ONES) & ~q)
             | ((b - PG_JSON_ONES) & ~b))
            & PG_JSON_HIGHS) == 0;
}


static inline int
pg_json_plain4(uint32_t w)
{
    uint32_t  q, b;

    q = w ^ ((uint32_t) PG_JSON_ONES * '"');
    b = w ^ ((uint32_t) PG_JSON_ONES * '\\');

    return ((((w - (uint32_t) PG_JSON_ONES * 0x20) & ~w)
             | ((q - (uint32_t) PG_JSON_ONES) & ~q)
             | ((b - (uint32_t) PG_JSON_ONES) & ~b))
            & (uint32_t) PG_JSON_HIGHS) == 0;
}


/* the string from s on, escaping what needs it, and the closing quote */
static uint8_t *
pg_json_label_escape(uint8_t *p, const uint8_t *s, size_t n)
{
    uint8_t         c;
    uint64_t        w;
    const uint8_t  *end;

    end = s + n;

    while (s < end) {

        if (end - s >= 8) {
            memcpy(&w, s, 8);

            if (pg_json_plain8(w)) {
                memcpy(p, &w, 8);
                p += 8;
                s += 8;
                continue;
            }
        }

        c = *s++;

        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = c;
            continue;
        }

        p = pg_json_escape_byte(p, c);
    }

    *p++ = '"';

    return p;
}


/*
 * Label names and values rarely need escaping: they are checked and
 * copied a word at a time, the last word overlapping the one before (a
 * string of 4 to 7 bytes as two 4-byte words), and only a word that
 * needs escaping sends the rest to the byte loop.
 */
uint8_t *
pg_json_label_write(uint8_t *p, const uint8_t *s, size_t n)
{
    size_t    i;
    uint32_t  a, b;
    uint64_t  w;

    *p++ = '"';

    if (n >= 8) {
        for (i = 0; i < n; i += 8) {
            if (n - i < 8) {
                i = n - 8;
            }

            memcpy(&w, s + i, 8);

            if (!pg_json_plain8(w)) {
                return pg_json_label_escape(p + i, s + i, n - i);
            }

            memcpy(p + i, &w, 8);
        }

        p += n;
        *p++ = '"';

        return p;
    }

    if (n >= 4) {
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);

        if (pg_json_plain4(a) && pg_json_plain4(b)) {
            memcpy(p, &a, 4);
            memcpy(p + n - 4, &b, 4);
            p += n;
            *p++ = '"';

            return p;
        }
    }

    return pg_json_label_escape(p, s, n);
}


void
pg_json_labels(pg_json_buf_t *b, const pg_label_t *labels, size_t n)
{
    size_t    i, size;
    uint8_t  *p;

    /* marshalLabelsJSON(): every label, in order, as WriteString writes */
    for (i = 0; i < n; i++) {
        if (labels[i].name.len > SIZE_MAX / 16
            || labels[i].value.len > SIZE_MAX / 16)
        {
            b->failed = 1;
            return;
        }

        size = PG_JSON_LABEL_MAX(labels[i].name.len)
               + PG_JSON_LABEL_MAX(labels[i].value.len);

        p = pg_json_reserve(b, size + 2);
        if (p == NULL) {
            return;
        }

        *p++ = i ? ',' : '{';
        p = pg_json_label_write(p, labels[i].name.data, labels[i].name.len);
        *p++ = ':';
        p = pg_json_label_write(p, labels[i].value.data,
                                labels[i].value.len);

        b->len = p - b->data;
    }

    pg_json_raw(b, n ? "}" : "{}", n ? 1 : 2);
}


void
pg_json_error(pg_json_buf_t *b, const char *type, const uint8_t *msg,
    size_t len)
{
    pg_json_literal(b, "{\"status\":\"error\",\"errorType\":");
    pg_json_string(b, (const uint8_t *) type, strlen(type));
    pg_json_literal(b, ",\"error\":");
    pg_json_string(b, msg, len);
    pg_json_literal(b, "}");
}


/* ------------------------------------------------------------ reading */

void
pg_json_read_init(pg_json_reader_t *r, const uint8_t *p, size_t len,
    const pg_allocator_t *alloc, unsigned flags, unsigned max_depth)
{
    if (p == NULL) {
        p = (const uint8_t *) "";
        len = 0;
    }

    r->start = p;
    r->p = p;
    r->end = p + len;
    r->alloc = alloc;
    r->flags = flags;
    r->max_depth = max_depth;
    r->err = NULL;
    r->err_pos = NULL;
    r->nomem = 0;
}


static void
pg_json_read_ws(pg_json_reader_t *r)
{
    while (r->p < r->end
           && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n'
               || *r->p == '\r'))
    {
        r->p++;
    }
}


int
pg_json_read_peek(pg_json_reader_t *r)
{
    pg_json_read_ws(r);

    return r->p < r->end ? *r->p : -1;
}


int
pg_json_read_fail(pg_json_reader_t *r, const char *what)
{
    if (r->err == NULL && !r->nomem) {
        r->err = what;
        r->err_pos = r->p;
    }

    return -1;
}


int
pg_json_read_object(pg_json_reader_t *r)
{
    if (pg_json_read_peek(r) != '{') {
        return pg_json_read_fail(r, "expected an object");
    }

    r->p++;

    return 0;
}


int
pg_json_read_member(pg_json_reader_t *r, pg_str_t *name, int first)
{
    return pg_json_read_name(r, name, first, 1);
}


/*
 * A member's name at depth: it counts as a value there, so a name too deep
 * is refused before it is read.  Stops right after the ':' (a value too
 * deep is refused there).
 */
static int
pg_json_read_name(pg_json_reader_t *r, pg_str_t *name, int first,
    unsigned depth)
{
    int  c;

    c = pg_json_read_peek(r);

    if (c == '}') {
        r->p++;
        return 0;
    }

    if (!first) {
        if (c != ',') {
            return pg_json_read_fail(r, "expected ',' or '}'");
        }

        r->p++;
    }

    if (pg_json_read_peek(r) != '"') {
        return pg_json_read_fail(r, "expected a member name");
    }

    if (depth > r->max_depth) {
        return pg_json_read_fail(r, "nested too deeply");
    }

    if (name) {
        if (pg_json_read_string(r, name) != 0) {
            return -1;
        }

    } else if (pg_json_read_chars(r, NULL, NULL) != 0) {
        return -1;
    }

    if (pg_json_read_peek(r) != ':') {
        return pg_json_read_fail(r, "expected ':'");
    }

    r->p++;

    return 1;
}


static int
pg_json_read_hex4(const uint8_t *p, uint32_t *v)
{
    size_t   i;
    uint8_t  c;

    *v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            *v = *v << 4 | (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            *v = *v << 4 | ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return 0;
}


/*
 * The string at r->p, from its opening quote to past its closing one,
 * checked in reading order and, with out, unescaped into out (room for
 * the bound pg_json_read_string() allocates).
 */
static int
pg_json_read_chars(pg_json_reader_t *r, uint8_t *out, size_t *len)
{
    size_t          n;
    uint8_t        *w;
    uint32_t        c, lo;
    const uint8_t  *p;

    p = r->p + 1;
    w = out;

    for ( ;; ) {
        if (p == r->end) {
            r->p = r->end;
            return pg_json_read_fail(r, "unterminated string");
        }

        if (*p == '"') {
            break;
        }

        if (*p < 0x20) {
            r->p = p;
            return pg_json_read_fail(r, "control character in string");
        }

        if (*p != '\\') {
            if (out == NULL || *p < 0x80 || (r->flags & PG_JSON_RAW_BYTES)) {
                if (out) {
                    *w++ = *p;
                }

                p++;
                continue;
            }

            n = pg_utf8_decode_rune(p, r->end - p, &c);

            if (n == 0) {
                w += pg_utf8_encode_rune(w, 0xfffd);
                p++;

            } else {
                memcpy(w, p, n);
                w += n;
                p += n;
            }

            continue;
        }

        if (++p == r->end) {
            r->p = r->end;
            return pg_json_read_fail(r, "unterminated string");
        }

        switch (*p) {
        case '"':
        case '\\':
        case '/':
            c = *p;
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;

        case 'u':
            if (r->end - p < 5 || pg_json_read_hex4(p + 1, &c) != 0) {
                r->p = p;
                return pg_json_read_fail(r, "invalid \\u escape");
            }

            if (c == 0 && (r->flags & PG_JSON_NO_NUL)) {
                r->p = p;
                return pg_json_read_fail(r, "\\u0000 in a string");
            }

            p += 4;

            if (c >= 0xd800 && c < 0xdc00 && r->end - p >= 7
                && p[1] == '\\' && p[2] == 'u'
                && pg_json_read_hex4(p + 3, &lo) == 0
                && lo >= 0xdc00 && lo < 0xe000)
            {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;

            } else if (c >= 0xd800 && c < 0xe000) {
                c = 0xfffd;
            }

            break;

        default:
            r->p = p;
            return pg_json_read_fail(r, "invalid escape");
        }

        p++;

        if (out) {
            w += pg_utf8_encode_rune(w, c);
        }
    }

    r->p = p + 1;

    if (len) {
        *len = w - out;
    }

    return 0;
}


int
pg_json_read_string(pg_json_reader_t *r, pg_str_t *out)
{
    size_t          n;
    uint8_t        *buf;
    const uint8_t  *q;

    if (pg_json_read_peek(r) != '"') {
        return pg_json_read_fail(r, "expected a string");
    }

    /* its end first: the room it needs depends on the length */
    for (q = r->p + 1; q < r->end && *q != '"'; q++) {
        if (*q == '\\' && ++q == r->end) {
            break;
        }
    }

    if (q >= r->end) {
        r->p = r->end;
        return pg_json_read_fail(r, "unterminated string");
    }

    /* a byte that is not UTF-8 may become 3 (U+FFFD), an escape never */
    n = q - (r->p + 1);
    n = (r->flags & PG_JSON_RAW_BYTES) ? n + 1 : n * 3 + 1;

    buf = r->alloc->alloc(r->alloc->ctx, n);
    if (buf == NULL) {
        r->nomem = 1;
        return -1;
    }

    if (pg_json_read_chars(r, buf, &n) != 0) {
        return -1;
    }

    buf[n] = '\0';

    out->data = buf;
    out->len = n;

    return 0;
}


int
pg_json_read_number(pg_json_reader_t *r, pg_str_t *out)
{
    const uint8_t  *p, *end;

    pg_json_read_ws(r);

    p = r->p;
    end = r->end;

    if (p < end && *p == '-') {
        p++;
    }

    if (r->flags & PG_JSON_LAX_NUMBERS) {
        if (pg_json_read_digits(r, &p) != 0) {
            return -1;
        }

        while (p < end
               && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e'
                   || *p == 'E' || *p == '+' || *p == '-'))
        {
            p++;
        }

        goto done;
    }

    if (p < end && *p == '0') {
        p++;

    } else if (pg_json_read_digits(r, &p) != 0) {
        return -1;
    }

    if (p < end && *p == '.') {
        p++;

        if (pg_json_read_digits(r, &p) != 0) {
            return -1;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (pg_json_read_digits(r, &p) != 0) {
            return -1;
        }
    }

done:

    if (out) {
        out->data = r->p;
        out->len = p - r->p;
    }

    r->p = p;

    return 0;
}


/* one digit or more at *pp, past them; else an invalid number there */
static int
pg_json_read_digits(pg_json_reader_t *r, const uint8_t **pp)
{
    const uint8_t  *p;

    p = *pp;

    if (p == r->end || *p < '0' || *p > '9') {
        r->p = p;
        return pg_json_read_fail(r, "invalid number");
    }

    while (p < r->end && *p >= '0' && *p <= '9') {
        p++;
    }

    *pp = p;

    return 0;
}


int
pg_json_read_null(pg_json_reader_t *r)
{
    pg_json_read_ws(r);

    if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
        r->p += 4;
        return 1;
    }

    return 0;
}


int
pg_json_read_skip(pg_json_reader_t *r)
{
    return pg_json_read_value(r, 1);
}


/*
 * Any value, checked and skipped; depth bounds the recursion.  It is
 * checked where the value is to start, before white space.
 */
static int
pg_json_read_value(pg_json_reader_t *r, unsigned depth)
{
    int  c, first, rc;

    if (depth > r->max_depth) {
        return pg_json_read_fail(r, "nested too deeply");
    }

    c = pg_json_read_peek(r);

    switch (c) {

    case -1:
        return pg_json_read_fail(r, "expected a value");

    case '"':
        return pg_json_read_chars(r, NULL, NULL);

    case '{':
        r->p++;

        for (first = 1; /* void */ ; first = 0) {
            rc = pg_json_read_name(r, NULL, first, depth + 1);

            if (rc != 1) {
                return rc;
            }

            if (pg_json_read_value(r, depth + 1) != 0) {
                return -1;
            }
        }

    case '[':
        r->p++;

        if (pg_json_read_peek(r) == ']') {
            r->p++;
            return 0;
        }

        for ( ;; ) {
            pg_json_read_ws(r);

            if (pg_json_read_value(r, depth + 1) != 0) {
                return -1;
            }

            c = pg_json_read_peek(r);

            if (c == ',') {
                r->p++;
                continue;
            }

            if (c == ']') {
                r->p++;
                return 0;
            }

            return pg_json_read_fail(r, "expected ',' or ']'");
        }

    case 't':
        if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
            r->p += 4;
            return 0;
        }
        break;

    case 'f':
        if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
            r->p += 5;
            return 0;
        }
        break;

    case 'n':
        if (pg_json_read_null(r)) {
            return 0;
        }
        break;

    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            return pg_json_read_number(r, NULL);
        }
    }

    return pg_json_read_fail(r, "invalid value");
}
