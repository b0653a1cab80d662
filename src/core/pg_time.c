/*
 * Query API parameters as Prometheus 3.5 reads them: times with
 * parseTime() and timestamp.FromTime(), forms with url.ParseQuery() and
 * r.FormValue(), and a JSON body for clients that post one.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pg_json.h"
#include "pg_time.h"
#include "pg_matcher.h"


/* seconds from 0001-01-01 to 1970-01-01, Go's unixToInternal */
#define PG_UNIX_TO_INTERNAL  INT64_C(62135596800)


/* a time as Go's time.Time holds it: Unix seconds (may have wrapped) */
typedef struct {
    int64_t         sec;
    int32_t         nsec;
} pg_time_t;


static int pg_time_parse_exact(const uint8_t *s, size_t len, pg_time_t *t);
static int pg_time_parse_rfc3339(const uint8_t *s, size_t len, pg_time_t *t);
static int64_t pg_time_to_ms(pg_time_t t);
static int pg_time_before(pg_time_t a, pg_time_t b);
static int pg_form_unescape(const uint8_t *s, size_t len, uint8_t *out,
    size_t *out_len);
static size_t pg_query_key(const uint8_t *name, size_t len);
static int pg_form_lookup(const uint8_t *s, size_t len,
    const pg_allocator_t *alloc, pg_str_t *found, unsigned *have);
static pg_time_rc_e pg_query_finish(pg_query_params_t *qp,
    const pg_str_t *vals, unsigned have, const pg_allocator_t *alloc,
    char *err, size_t err_len);
static void pg_time_errorf(char *err, size_t err_len, const char *fmt, ...);
static pg_time_rc_e pg_query_json_failed(const pg_json_reader_t *r,
    char *err, size_t err_len);


static const char  *pg_query_keys[] = { "query", "start", "end" };

#define PG_Q_QUERY  0
#define PG_Q_START  1
#define PG_Q_END    2
#define PG_Q_KEYS   3


int
pg_parse_time(const uint8_t *s, size_t len, int64_t *ms)
{
    pg_time_t  t;

    if (pg_time_parse_exact(s, len, &t) != 0) {
        return -1;
    }

    *ms = pg_time_to_ms(t);

    return 0;
}


static int
pg_time_parse_exact(const uint8_t *s, size_t len, pg_time_t *t)
{
    char      buf[128];
    double    v, ip, fp;
    uint64_t  sec, n;
    int64_t   nsec;

    static const char  min_time[] = "-292273086-05-16T16:47:06Z";
    static const char  max_time[] = "292277025-08-18T07:12:54.999999999Z";

    if (len < sizeof(buf)
        && pg_go_parse_float(s, len, buf, &v) == PG_GO_FLOAT_OK)
    {

        /*
         * Prometheus: s, ns := math.Modf(t); ns = math.Round(ns*1000)/1000;
         * time.Unix(int64(s), int64(ns*1e9)).  The same double operations
         * give the same rounding; Go's float to int64 conversion yields
         * INT64_MIN for NaN and out-of-range values on amd64, and time.Unix
         * normalizes with wrapping int64 arithmetic.
         */
        if (isinf(v)) {
            ip = v;
            fp = NAN;

        } else {
            fp = modf(v, &ip);
        }

        fp = round(fp * 1000) / 1000;

        sec = (uint64_t) pg_go_f2i(ip);
        nsec = pg_go_f2i(fp * 1e9);

        if (nsec < 0 || nsec >= 1000000000) {
            n = (uint64_t) (nsec / 1000000000);
            sec += n;
            nsec -= (int64_t) (n * 1000000000);

            if (nsec < 0) {
                nsec += 1000000000;
                sec--;
            }
        }

        t->sec = (int64_t) sec;
        t->nsec = (int32_t) nsec;

        return 0;
    }

    if (pg_time_parse_rfc3339(s, len, t) == 0) {
        return 0;
    }

    /* Go's parser takes 4-digit years only; Prometheus' own bounds */
    if (len == sizeof(min_time) - 1 && memcmp(s, min_time, len) == 0) {
        t->sec = INT64_MIN / 1000 + 62135596801;
        t->nsec = 0;
        return 0;
    }

    if (len == sizeof(max_time) - 1 && memcmp(s, max_time, len) == 0) {
        t->sec = INT64_MAX / 1000 - 62135596801;
        t->nsec = 999999999;
        return 0;
    }

    return -1;
}


/* what CVTTSD2SI gives, as Go's int64(f) does on amd64 */
int64_t
pg_go_f2i(double v)
{
    if (isnan(v) || v >= 9223372036854775808.0 || v < -9223372036854775808.0)
    {
        return INT64_MIN;
    }

    return (int64_t) v;
}


/* timestamp.FromTime(): t.Unix()*1000 + t.Nanosecond()/1e6, wrapping */
static int64_t
pg_time_to_ms(pg_time_t t)
{
    return (int64_t) ((uint64_t) t.sec * 1000 + (uint64_t) (t.nsec / 1000000));
}


/* time.Time.Before() compares the seconds since year 1, which may wrap */
static int
pg_time_before(pg_time_t a, pg_time_t b)
{
    int64_t  ia, ib;

    ia = (int64_t) ((uint64_t) a.sec + PG_UNIX_TO_INTERNAL);
    ib = (int64_t) ((uint64_t) b.sec + PG_UNIX_TO_INTERNAL);

    return ia < ib || (ia == ib && a.nsec < b.nsec);
}


/*
 * The syntax is checked here, then the string without '_' goes to strtod,
 * which rounds correctly as Go does.
 */
pg_go_float_rc_e
pg_go_parse_float(const uint8_t *s, size_t len, char *buf, double *v)
{
    size_t    i, n;
    int       hex, sawdigits, sawdot, sawexp, underscores;
    uint8_t   c;

    static const char  inf[] = "infinity";

    if (len == 0) {
        return PG_GO_FLOAT_SYNTAX;
    }

    i = 0;

    if (s[0] == '+' || s[0] == '-') {
        i = 1;
    }

    /* inf, infinity, nan */
    if (i < len && (s[i] | 0x20) == 'i') {
        for (n = 0; i + n < len && n < 8; n++) {
            if ((s[i + n] | 0x20) != inf[n]) {
                break;
            }
        }

        if (i + n != len || (n != 3 && n != 8)) {
            return PG_GO_FLOAT_SYNTAX;
        }

        *v = (s[0] == '-') ? -INFINITY : INFINITY;
        return PG_GO_FLOAT_OK;
    }

    if (i == 0 && len == 3 && (s[0] | 0x20) == 'n' && (s[1] | 0x20) == 'a'
        && (s[2] | 0x20) == 'n')
    {
        *v = NAN;
        return PG_GO_FLOAT_OK;
    }

    hex = 0;

    if (i + 2 < len && s[i] == '0' && (s[i + 1] | 0x20) == 'x') {
        hex = 1;
        i += 2;
    }

    sawdigits = 0;
    sawdot = 0;
    sawexp = 0;
    underscores = 0;

    for ( /* void */ ; i < len; i++) {
        c = s[i];

        if (c == '_') {
            underscores = 1;
            continue;
        }

        if (c == '.') {
            if (sawdot) {
                return PG_GO_FLOAT_SYNTAX;
            }
            sawdot = 1;
            continue;
        }

        if ((c >= '0' && c <= '9')
            || (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f'))
        {
            sawdigits = 1;
            continue;
        }

        break;
    }

    if (!sawdigits) {
        return PG_GO_FLOAT_SYNTAX;
    }

    if (i < len && (s[i] | 0x20) == (hex ? 'p' : 'e')) {
        sawexp = 1;
        i++;

        if (i < len && (s[i] == '+' || s[i] == '-')) {
            i++;
        }

        if (i >= len || s[i] < '0' || s[i] > '9') {
            return PG_GO_FLOAT_SYNTAX;
        }

        while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
            underscores |= (s[i] == '_');
            i++;
        }
    }

    if (i != len || (hex && !sawexp)) {
        return PG_GO_FLOAT_SYNTAX;
    }

    if (underscores && !pg_go_underscore_ok(s, len)) {
        return PG_GO_FLOAT_SYNTAX;
    }

    for (i = 0, n = 0; i < len; i++) {
        if (s[i] != '_') {
            buf[n++] = s[i];
        }
    }

    buf[n] = '\0';

    *v = strtod(buf, NULL);

    return isinf(*v) ? PG_GO_FLOAT_RANGE : PG_GO_FLOAT_OK;
}


/* Go's underscoreOK(): '_' only between digits or after a base prefix */
int
pg_go_underscore_ok(const uint8_t *s, size_t len)
{
    size_t   i;
    int      hex;
    char     saw;
    uint8_t  c;

    saw = '^';
    i = 0;
    hex = 0;

    if (len >= 1 && (s[0] == '-' || s[0] == '+')) {
        s++;
        len--;
    }

    if (len >= 2 && s[0] == '0'
        && ((s[1] | 0x20) == 'b' || (s[1] | 0x20) == 'o'
            || (s[1] | 0x20) == 'x'))
    {
        i = 2;
        saw = '0';
        hex = (s[1] | 0x20) == 'x';
    }

    for ( /* void */ ; i < len; i++) {
        c = s[i];

        if ((c >= '0' && c <= '9')
            || (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f'))
        {
            saw = '0';
            continue;
        }

        if (c == '_') {
            if (saw != '0') {
                return 0;
            }
            saw = '_';
            continue;
        }

        if (saw == '_') {
            return 0;
        }

        saw = '!';
    }

    return saw != '_';
}


/*
 * time.Parse(time.RFC3339Nano, s) of the Go Prometheus 3.5 is built with:
 * a 4-digit year, 2-digit month, day, minute and second, a 1- or 2-digit
 * hour, an optional fraction of any number of digits after '.' or ','
 * (the first 9 count; Go 1.19 took 9 at most), then 'Z' or +hh:mm/-hh:mm
 * (offset digits not range-checked).
 */
static int
pg_time_parse_rfc3339(const uint8_t *s, size_t len, pg_time_t *t)
{
    size_t   i, k;
    int      year, month, day, hour, min, sec, mdays, off, digits;
    int32_t  nsec;

    static const int  days_in[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

#define pg_digit(c)  ((c) >= '0' && (c) <= '9')

    if (len < 19) {
        return -1;
    }

    for (i = 0; i < 4; i++) {
        if (!pg_digit(s[i])) {
            return -1;
        }
    }

    year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10
           + (s[3] - '0');

    if (s[4] != '-' || !pg_digit(s[5]) || !pg_digit(s[6]) || s[7] != '-'
        || !pg_digit(s[8]) || !pg_digit(s[9]) || s[10] != 'T'
        || !pg_digit(s[11]))
    {
        return -1;
    }

    month = (s[5] - '0') * 10 + (s[6] - '0');
    day = (s[8] - '0') * 10 + (s[9] - '0');

    i = 12;
    hour = s[11] - '0';

    if (pg_digit(s[i])) {
        hour = hour * 10 + (s[i] - '0');
        i++;
    }

    if (len < i + 6 || s[i] != ':' || !pg_digit(s[i + 1])
        || !pg_digit(s[i + 2]) || s[i + 3] != ':' || !pg_digit(s[i + 4])
        || !pg_digit(s[i + 5]))
    {
        return -1;
    }

    min = (s[i + 1] - '0') * 10 + (s[i + 2] - '0');
    sec = (s[i + 4] - '0') * 10 + (s[i + 5] - '0');
    i += 6;

    if (month < 1 || month > 12 || hour > 23 || min > 59 || sec > 59) {
        return -1;
    }

    mdays = days_in[month - 1];

    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
    {
        mdays = 29;
    }

    if (day < 1 || day > mdays) {
        return -1;
    }

    nsec = 0;

    if (i + 1 < len && (s[i] == '.' || s[i] == ',') && pg_digit(s[i + 1])) {
        i++;
        digits = 0;

        /* Go 1.20+ takes any number of digits, the first 9 counting */
        while (i < len && pg_digit(s[i])) {
            if (digits < 9) {
                nsec = nsec * 10 + (s[i] - '0');
                digits++;
            }
            i++;
        }

        while (digits++ < 9) {
            nsec *= 10;
        }
    }

    if (i < len && s[i] == 'Z') {
        off = 0;
        i++;

    } else {
        if (len - i < 6 || (s[i] != '+' && s[i] != '-') || s[i + 3] != ':')
        {
            return -1;
        }

        for (k = 1; k < 6; k++) {
            if (k != 3 && !pg_digit(s[i + k])) {
                return -1;
            }
        }

        off = (((s[i + 1] - '0') * 10 + (s[i + 2] - '0')) * 60
               + (s[i + 4] - '0') * 10 + (s[i + 5] - '0')) * 60;

        if (s[i] == '-') {
            off = -off;
        }

        i += 6;
    }

#undef pg_digit

    if (i != len) {
        return -1;
    }

    t->sec = pg_days_from_civil(year, month, day) * 86400
             + hour * 3600 + min * 60 + sec - off;
    t->nsec = nsec;

    return 0;
}


/* Howard Hinnant's days_from_civil() */
int64_t
pg_days_from_civil(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


/* Go's url.QueryUnescape(): "%XX" (else an error) and '+' as a space */
static int
pg_form_unescape(const uint8_t *s, size_t len, uint8_t *out,
    size_t *out_len)
{
    size_t   i, n;
    uint8_t  c, h, l;

    n = 0;

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c == '+') {
            c = ' ';

        } else if (c == '%') {
            if (i + 2 >= len) {
                return -1;
            }

            h = s[i + 1];
            l = s[i + 2];

#define pg_unhex(x)                                                          \
    ((x) >= '0' && (x) <= '9' ? (x) - '0'                                    \
     : ((x) | 0x20) >= 'a' && ((x) | 0x20) <= 'f' ? ((x) | 0x20) - 'a' + 10  \
     : 16)

            if (pg_unhex(h) > 15 || pg_unhex(l) > 15) {
                return -1;
            }

            c = (uint8_t) (pg_unhex(h) << 4 | pg_unhex(l));

#undef pg_unhex

            i += 2;
        }

        if (out) {
            out[n] = c;
        }

        n++;
    }

    *out_len = n;

    return 0;
}


/* the index of a parameter we look for, PG_Q_KEYS for any other */
static size_t
pg_query_key(const uint8_t *name, size_t len)
{
    size_t  k;

    for (k = 0; k < PG_Q_KEYS; k++) {
        if (strlen(pg_query_keys[k]) == len
            && memcmp(pg_query_keys[k], name, len) == 0)
        {
            break;
        }
    }

    return k;
}


/*
 * url.ParseQuery() split into pairs; the first value of each key we look
 * for is kept (FormValue() returns the first) unless already found.
 */
static int
pg_form_lookup(const uint8_t *s, size_t len, const pg_allocator_t *alloc,
    pg_str_t *found, unsigned *have)
{
    const uint8_t  *pair, *end, *eq, *p;
    size_t          plen, klen, vlen, k, n;
    uint8_t         key[8], *v;

    if (len == 0) {
        return 0;
    }

    end = s + len;

    for (pair = s; pair < end; pair = (p < end) ? p + 1 : end) {

        for (p = pair; p < end && *p != '&'; p++) { /* void */ }

        plen = p - pair;

        /* Go 1.17+ rejects ';' separators: the whole pair is skipped */
        if (plen == 0 || memchr(pair, ';', plen) != NULL) {
            continue;
        }

        eq = memchr(pair, '=', plen);
        klen = eq ? (size_t) (eq - pair) : plen;

        if (pg_form_unescape(pair, klen, NULL, &n) != 0) {
            continue;
        }

        if (n > sizeof(key)) {
            continue;
        }

        (void) pg_form_unescape(pair, klen, key, &n);

        k = pg_query_key(key, n);

        vlen = eq ? (size_t) (p - eq - 1) : 0;

        /* a bad value drops the pair, even for keys that are not ours */
        if (pg_form_unescape(eq ? eq + 1 : p, vlen, NULL, &n) != 0) {
            continue;
        }

        if (k == PG_Q_KEYS || (*have & (1u << k))) {
            continue;
        }

        v = NULL;

        if (n) {
            v = alloc->alloc(alloc->ctx, n);
            if (v == NULL) {
                return -1;
            }

            (void) pg_form_unescape(eq + 1, vlen, v, &n);
        }

        found[k].data = v;
        found[k].len = n;
        *have |= 1u << k;
    }

    return 0;
}


pg_time_rc_e
pg_parse_query_params(const uint8_t *args, size_t args_len,
    const uint8_t *body, size_t body_len, const pg_allocator_t *alloc,
    pg_query_params_t *qp, char *err, size_t err_len)
{
    pg_str_t  vals[PG_Q_KEYS];
    unsigned  have;

    memset(vals, 0, sizeof(vals));
    have = 0;

    /* r.Form holds the body's values before the query string's */
    if (pg_form_lookup(body, body_len, alloc, vals, &have) != 0
        || pg_form_lookup(args, args_len, alloc, vals, &have) != 0)
    {
        pg_time_errorf(err, err_len, "out of memory");
        return PG_TIME_NO_MEMORY;
    }

    return pg_query_finish(qp, vals, have, alloc, err, err_len);
}


static pg_time_rc_e
pg_query_finish(pg_query_params_t *qp, const pg_str_t *vals, unsigned have,
    const pg_allocator_t *alloc, char *err, size_t err_len)
{
    pg_time_t   start, end;
    char       *quoted;
    size_t      k, n;
    pg_time_t  *t;

    static const pg_time_t  min_time = {
        INT64_MIN / 1000 + 62135596801, 0
    };
    static const pg_time_t  max_time = {
        INT64_MAX / 1000 - 62135596801, 999999999
    };

    memset(qp, 0, sizeof(pg_query_params_t));

    qp->query.data = (const uint8_t *) "";

    if (have & (1u << PG_Q_QUERY)) {
        qp->has_query = 1;
        qp->query = vals[PG_Q_QUERY];

        if (qp->query.data == NULL) {
            qp->query.data = (const uint8_t *) "";
        }
    }

    start = min_time;
    end = max_time;

    for (k = PG_Q_START; k <= PG_Q_END; k++) {
        t = (k == PG_Q_START) ? &start : &end;

        /* FormValue() gives "" for a missing key: the default applies */
        if (!(have & (1u << k)) || vals[k].len == 0) {
            continue;
        }

        if (pg_time_parse_exact(vals[k].data, vals[k].len, t) != 0) {
            n = pg_go_quote(NULL, 0, vals[k].data, vals[k].len, '"');
            quoted = alloc->alloc(alloc->ctx, n + 1);

            if (quoted == NULL) {
                pg_time_errorf(err, err_len, "out of memory");
                return PG_TIME_NO_MEMORY;
            }

            (void) pg_go_quote(quoted, n + 1, vals[k].data, vals[k].len,
                               '"');

            pg_time_errorf(err, err_len, "invalid parameter \"%s\": invalid "
                           "time value for '%s': cannot parse %s to a valid "
                           "timestamp", pg_query_keys[k], pg_query_keys[k],
                           quoted);

            return PG_TIME_BAD_REQUEST;
        }

        if (k == PG_Q_START) {
            qp->has_start = 1;
        } else {
            qp->has_end = 1;
        }
    }

    if (pg_time_before(end, start)) {
        pg_time_errorf(err, err_len,
                       "end timestamp must not be before start timestamp");
        return PG_TIME_BAD_REQUEST;
    }

    qp->start_ms = pg_time_to_ms(start);
    qp->end_ms = pg_time_to_ms(end);

    /*
     * Beyond Prometheus' own min and max times the conversion to ms wraps
     * (in Prometheus too, which then finds nothing); an inverted range is
     * refused as if the times were.
     */
    if (qp->end_ms < qp->start_ms) {
        pg_time_errorf(err, err_len,
                       "end timestamp must not be before start timestamp");
        return PG_TIME_BAD_REQUEST;
    }

    return PG_TIME_OK;
}


/* the message, cut to fit err_len and NUL-terminated */
static void
pg_time_errorf(char *err, size_t err_len, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || err_len == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, err_len, fmt, args);
    va_end(args);
}


pg_time_rc_e
pg_parse_query_json(const uint8_t *body, size_t len,
    const pg_allocator_t *alloc, pg_query_params_t *qp, char *err,
    size_t err_len)
{
    int               c, first, rc;
    size_t            k;
    uint8_t          *copy;
    pg_str_t          key, val, vals[PG_Q_KEYS];
    unsigned          have;
    pg_json_reader_t  r;

    memset(vals, 0, sizeof(vals));
    have = 0;

    if (len > PG_QUERY_JSON_MAX) {
        pg_time_errorf(err, err_len, "invalid JSON body: larger than %d "
                       "bytes", PG_QUERY_JSON_MAX);
        return PG_TIME_BAD_REQUEST;
    }

    pg_json_read_init(&r, body, len, alloc, 0, PG_QUERY_JSON_DEPTH);

    if (pg_json_read_object(&r) != 0) {
        return pg_query_json_failed(&r, err, err_len);
    }

    for (first = 1; /* void */ ; first = 0) {
        rc = pg_json_read_member(&r, &key, first);

        if (rc == 0) {
            break;
        }

        if (rc != 1) {
            return pg_query_json_failed(&r, err, err_len);
        }

        k = pg_query_key(key.data, key.len);
        c = pg_json_read_peek(&r);

        if (k == PG_Q_KEYS) {
            rc = pg_json_read_skip(&r);

        } else if (c == '"') {
            rc = pg_json_read_string(&r, &vals[k]);
            have |= 1u << k;

        } else if (c == '-' || (c >= '0' && c <= '9')) {
            rc = pg_json_read_number(&r, &val);

            if (rc == 0) {
                /* the text outlives the body, as a string's does */
                copy = alloc->alloc(alloc->ctx, val.len);
                if (copy == NULL) {
                    r.nomem = 1;
                    return pg_query_json_failed(&r, err, err_len);
                }

                memcpy(copy, val.data, val.len);
                vals[k].data = copy;
                vals[k].len = val.len;
                have |= 1u << k;
            }

        } else if (pg_json_read_null(&r)) {
            /* Go leaves a string as it was for null */
            rc = 0;

        } else {
            if (pg_json_read_skip(&r) != 0) {
                return pg_query_json_failed(&r, err, err_len);
            }

            pg_time_errorf(err, err_len, "invalid parameter \"%s\": must "
                           "be a string or a number", pg_query_keys[k]);
            return PG_TIME_BAD_REQUEST;
        }

        if (rc != 0) {
            return pg_query_json_failed(&r, err, err_len);
        }
    }

    if (pg_json_read_peek(&r) != -1) {
        pg_json_read_fail(&r, "unexpected data after the object");
        return pg_query_json_failed(&r, err, err_len);
    }

    return pg_query_finish(qp, vals, have, alloc, err, err_len);
}


/* the reader's error, worded with where it was found */
static pg_time_rc_e
pg_query_json_failed(const pg_json_reader_t *r, char *err, size_t err_len)
{
    unsigned long  off;
    uint8_t        c;

    if (r->nomem) {
        pg_time_errorf(err, err_len, "out of memory");
        return PG_TIME_NO_MEMORY;
    }

    if (r->err_pos >= r->end) {
        pg_time_errorf(err, err_len, "invalid JSON body: unexpected end of "
                       "input (%s)", r->err);
        return PG_TIME_BAD_REQUEST;
    }

    off = (unsigned long) (r->err_pos - r->start);
    c = *r->err_pos;

    if (c >= 0x20 && c < 0x7f) {
        pg_time_errorf(err, err_len, "invalid JSON body: unexpected '%c' at "
                       "offset %lu (%s)", c, off, r->err);

    } else {
        pg_time_errorf(err, err_len, "invalid JSON body: unexpected byte "
                       "0x%02x at offset %lu (%s)", c, off, r->err);
    }

    return PG_TIME_BAD_REQUEST;
}
