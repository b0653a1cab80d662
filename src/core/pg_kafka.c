/*
 * Kafka consumer logic without nginx or librdkafka: see pg_kafka.h.
 *
 * A message becomes an uncompressed request: a raw protobuf message as it
 * is, a snappy one decoded, and the JSON of prometheus-kafka-adapter built
 * with protobuf-c into a WriteRequest of one series and one sample.  Every
 * request is decoded by the same code as an HTTP write (pg_rw_decode), so a
 * message that is not a well-formed request is known as poison before
 * anything is posted; invalid series in a well-formed one are the target
 * location's to drop (or refuse), as for an HTTP write.  Serialized 1.0
 * WriteRequests concatenate into one WriteRequest (protobuf merges repeated
 * fields), which is how a batch is built; 2.0 Requests do not (see
 * pg_kafka_batch_add()).
 */

#include "pg_json.h"
#include "pg_kafka.h"
#include "pg_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "remote.pb-c.h"


/* ------------------------------------------------------------ formats */

static const char  *pg_kafka_formats[] = {
    "auto", "prompb", "prompb-snappy", "json", "prompb-v2"
};


int
pg_kafka_format_parse(const uint8_t *name, size_t len)
{
    size_t  i;

    for (i = 0; i < sizeof(pg_kafka_formats) / sizeof(pg_kafka_formats[0]);
         i++)
    {
        if (strlen(pg_kafka_formats[i]) == len
            && memcmp(pg_kafka_formats[i], name, len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


const char *
pg_kafka_format_name(pg_kafka_format_e format)
{
    if ((unsigned) format > PG_KAFKA_FORMAT_PROMPB_V2) {
        return "unknown";
    }

    return pg_kafka_formats[format];
}


#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static pg_kafka_rc_e
pg_kafka_poison(pg_kafka_decoded_t *out, const char *reason,
    const char *fmt, ...)
{
    va_list  args;

    out->reason = reason;

    va_start(args, fmt);
    vsnprintf(out->error, sizeof(out->error), fmt, args);
    va_end(args);

    return PG_KAFKA_POISON;
}


/* ------------------------------------------- remote write 1.0 or 2.0 */

/* a varint; 0, or -1 past the end or above 64 bits */

static int
pg_kafka_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t  *p;
    uint64_t        r;
    unsigned        shift;

    p = *pp;
    r = 0;

    for (shift = 0; shift < 64 && p < end; shift += 7) {
        r |= (uint64_t) (*p & 0x7f) << shift;

        if (*p++ < 0x80) {
            *v = r;
            *pp = p;
            return 0;
        }
    }

    return -1;
}


unsigned
pg_kafka_rw_fields(const uint8_t *msg, size_t len)
{
    uint64_t        key, n;
    unsigned        fields;
    const uint8_t  *p, *end;

    p = msg;
    end = msg + len;
    fields = 0;

    while (p < end
           && fields != (PG_KAFKA_FIELDS_V1 | PG_KAFKA_FIELDS_V2))
    {
        if (pg_kafka_varint(&p, end, &key) != 0) {
            break;
        }

        switch (key >> 3) {
        case 1:
        case 3:
            fields |= PG_KAFKA_FIELDS_V1;
            break;
        case 4:
        case 5:
            fields |= PG_KAFKA_FIELDS_V2;
            break;
        }

        switch (key & 7) {

        case 0:
            if (pg_kafka_varint(&p, end, &n) != 0) {
                return fields;
            }
            break;

        case 1:
            if (end - p < 8) {
                return fields;
            }
            p += 8;
            break;

        case 2:
            if (pg_kafka_varint(&p, end, &n) != 0
                || n > (uint64_t) (end - p))
            {
                return fields;
            }
            p += n;
            break;

        case 5:
            if (end - p < 4) {
                return fields;
            }
            p += 4;
            break;

        default:
            return fields;          /* groups: no remote-write message */
        }
    }

    return fields;
}


/*
 * An uncompressed request, of the version `want` (0: the one its fields
 * say), through the remote-write decoder.
 */

static pg_kafka_rc_e
pg_kafka_decode_request(const uint8_t *buf, size_t len, pg_rw_version_e want,
    pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    unsigned          fields;
    pg_rw_reason_e    reason;
    pg_rw_version_e   version;
    pg_rw_request_t   req;

    fields = pg_kafka_rw_fields(buf, len);

    if (fields == (PG_KAFKA_FIELDS_V1 | PG_KAFKA_FIELDS_V2)) {
        return pg_kafka_poison(out, "malformed", "%s",
                               "top-level fields of both remote write 1.0 "
                               "(1, 3) and 2.0 (4, 5)");
    }

    /* no field of either: an empty request, whichever version */

    version = (fields == PG_KAFKA_FIELDS_V2) ? PG_RW_V2 : PG_RW_V1;

    if (want != 0 && fields != 0 && version != want) {
        return pg_kafka_poison(out, "malformed", "%s",
                               want == PG_RW_V1
                               ? "a remote write 2.0 Request (top-level "
                                 "fields 4, 5), not a 1.0 WriteRequest: "
                                 "use format=prompb-v2 or auto"
                               : "a remote write 1.0 WriteRequest (top-level "
                                 "fields 1, 3), not a 2.0 Request: use "
                                 "format=auto");
    }

    if (want != 0) {
        version = want;
    }

    reason = pg_rw_decode(buf, len, version, a, &req, NULL, NULL);

    if (reason == PG_RW_NOMEM) {
        return PG_KAFKA_NOMEM;
    }

    if (reason != PG_RW_OK) {
        /* MALFORMED, or a 2.0 symbols[0] that is not "" */
        return pg_kafka_poison(out, "malformed", "invalid %s: %s",
                               version == PG_RW_V2 ? "2.0 Request"
                                                   : "WriteRequest",
                               req.first.message);
    }

    out->version = version;
    out->data = buf;
    out->len = len;
    out->stats = req.stats;
    out->invalid = req.invalid_series + req.invalid_metadata;
    out->reason = NULL;
    out->error[0] = '\0';

    if (out->invalid) {
        snprintf(out->error, sizeof(out->error), "%s", req.first.message);
    }

    return PG_KAFKA_OK;
}


static pg_kafka_rc_e
pg_kafka_decode_raw(const uint8_t *msg, size_t len, pg_rw_version_e want,
    size_t max_decoded, pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    if (len > max_decoded) {
        return pg_kafka_poison(out, "too_large", "the message (%zu bytes) is "
                               "above the size limit of %zu", len,
                               max_decoded);
    }

    out->snappy = 0;

    return pg_kafka_decode_request(msg, len, want, a, out);
}


/* out->snappy is set once the message proved a snappy block */

static pg_kafka_rc_e
pg_kafka_decode_snappy(const uint8_t *msg, size_t len, pg_rw_version_e want,
    size_t max_decoded, pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    size_t          dlen;
    uint8_t        *buf;
    pg_snappy_rc_e  src;

    out->snappy = 0;

    src = pg_snappy_decoded_length(msg, len, max_decoded, &dlen);

    if (src == PG_SNAPPY_TOO_LARGE) {
        return pg_kafka_poison(out, "too_large", "the snappy block declares "
                               "%zu bytes, above the limit of %zu", dlen,
                               max_decoded);
    }

    if (src != PG_SNAPPY_OK) {
        return pg_kafka_poison(out, "snappy", "%s",
                               "not a snappy block (remote write uses the "
                               "block format, not framed)");
    }

    buf = a->alloc(a->ctx, dlen ? dlen : 1);
    if (buf == NULL) {
        return PG_KAFKA_NOMEM;
    }

    if (pg_snappy_decode(msg, len, buf, dlen) != PG_SNAPPY_OK) {
        return pg_kafka_poison(out, "snappy", "%s",
                               "the snappy block is corrupt");
    }

    out->snappy = 1;

    return pg_kafka_decode_request(buf, dlen, want, a, out);
}


/*
 * auto and prompb-v2: snappy first (what remote write sends), then raw.  A
 * snappy block that happens to decode into a well-formed request, or the
 * reverse, would need both to be valid protobuf: the decoder tells them
 * apart in practice.  When neither works, a message that was a snappy
 * block (or declared a size above the limit, which a raw request's first
 * byte cannot) is reported as snappy.
 */

static pg_kafka_rc_e
pg_kafka_decode_either(const uint8_t *msg, size_t len, pg_rw_version_e want,
    size_t max_decoded, pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    unsigned        was_snappy;
    const char     *snappy_reason;
    pg_kafka_rc_e   rc;
    char            snappy_error[sizeof(out->error)];
    char            raw_error[256];

    rc = pg_kafka_decode_snappy(msg, len, want, max_decoded, a, out);

    if (rc != PG_KAFKA_POISON) {
        return rc;
    }

    was_snappy = out->snappy;
    snappy_reason = out->reason;
    memcpy(snappy_error, out->error, sizeof(snappy_error));

    rc = pg_kafka_decode_raw(msg, len, want, max_decoded, a, out);

    if (rc != PG_KAFKA_POISON) {
        return rc;
    }

    if (was_snappy || strcmp(snappy_reason, "too_large") == 0) {
        out->snappy = was_snappy;
        out->reason = snappy_reason;
        snprintf(out->error, sizeof(out->error),
                 "snappy-compressed: %.600s", snappy_error);
        return PG_KAFKA_POISON;
    }

    memcpy(raw_error, out->error, sizeof(raw_error) - 1);
    raw_error[sizeof(raw_error) - 1] = '\0';

    out->reason = "malformed";
    snprintf(out->error, sizeof(out->error), "neither snappy-compressed "
             "(%.200s) nor raw (%s)", snappy_error, raw_error);

    return PG_KAFKA_POISON;
}


/* ----------------------------------------------------------- the JSON */

/*
 * prometheus-kafka-adapter writes one sample per message:
 *
 *   {"timestamp":"1970-01-01T00:00:00Z","value":"9876543210","name":"up",
 *    "labels":{"__name__":"up","job":"node"}}
 *
 * The timestamp is RFC 3339 (a JSON number is taken as milliseconds since
 * the epoch), the value a Go float string ("NaN", "+Inf" too) or a number.
 * __name__ in labels wins over "name".  Unknown keys are skipped.
 */

#define PG_KAFKA_JSON_DEPTH   32
#define PG_KAFKA_JSON_LABELS  4096


typedef struct {
    char               *name;
    char               *value;
} pg_kafka_label_t;


static int
pg_kafka_digits(const char *s, size_t n, int *v)
{
    size_t  i;
    int     r;

    r = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        r = r * 10 + (s[i] - '0');
    }

    *v = r;

    return 0;
}


/* RFC 3339: 2006-01-02T15:04:05[.999999999](Z|+07:00), in ms */

static int
pg_kafka_rfc3339(const char *s, size_t len, int64_t *ms)
{
    int       year, mon, day, hour, min, sec, oh, om, leap;
    size_t    i;
    int64_t   t, frac, scale;

    static const int  mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
                                  30, 31 };

    if (len < 20
        || pg_kafka_digits(s, 4, &year) != 0 || s[4] != '-'
        || pg_kafka_digits(s + 5, 2, &mon) != 0 || s[7] != '-'
        || pg_kafka_digits(s + 8, 2, &day) != 0
        || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        || pg_kafka_digits(s + 11, 2, &hour) != 0 || s[13] != ':'
        || pg_kafka_digits(s + 14, 2, &min) != 0 || s[16] != ':'
        || pg_kafka_digits(s + 17, 2, &sec) != 0)
    {
        return -1;
    }

    leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    if (mon < 1 || mon > 12 || day < 1
        || day > mdays[mon - 1] + (mon == 2 && leap)
        || hour > 23 || min > 59 || sec > 59)
    {
        return -1;
    }

    i = 19;
    frac = 0;
    scale = 1000;

    if (s[i] == '.') {
        i++;

        if (i == len || s[i] < '0' || s[i] > '9') {
            return -1;
        }

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (scale > 1) {
                scale /= 10;
                frac += (s[i] - '0') * scale;
            }
            i++;
        }
    }

    t = pg_days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60
        + sec;

    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;

    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        if (len - i < 6 || pg_kafka_digits(s + i + 1, 2, &oh) != 0
            || s[i + 3] != ':' || pg_kafka_digits(s + i + 4, 2, &om) != 0
            || oh > 23 || om > 59)
        {
            return -1;
        }

        t += (s[i] == '+' ? -1 : 1) * (oh * 3600 + om * 60);
        i += 6;

    } else {
        return -1;
    }

    if (i != len) {
        return -1;
    }

    *ms = t * 1000 + frac;

    return 0;
}


/* a float as Go's strconv formats it ("NaN", "+Inf" included) */

static int
pg_kafka_float(const char *s, size_t len, double *v)
{
    char   buf[64], *end;

    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }

    memcpy(buf, s, len);
    buf[len] = '\0';

    *v = strtod(buf, &end);

    return end == buf + len ? 0 : -1;
}


static int
pg_kafka_label_cmp(const void *a, const void *b)
{
    const Prometheus__Label  *la = *(Prometheus__Label * const *) a;
    const Prometheus__Label  *lb = *(Prometheus__Label * const *) b;

    return strcmp(la->name, lb->name);
}


/* a member's value: a string, or a number as its text */
static int
pg_kafka_json_scalar(pg_json_reader_t *r, pg_str_t *s)
{
    if (pg_json_read_peek(r) == '"') {
        return pg_json_read_string(r, s);
    }

    return pg_json_read_number(r, s);
}


/*
 * Strings are taken as C strings (protobuf-c's), with their bytes as they
 * are: the WriteRequest's scan checks UTF-8 as for any other request.
 */
static pg_kafka_rc_e
pg_kafka_decode_json(const uint8_t *msg, size_t len, size_t max_decoded,
    pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    int                        first, lfirst, rc;
    char                      *name;
    size_t                     i, nlabels, cap, size;
    uint8_t                   *buf;
    int64_t                    ts;
    double                     value, tsf;
    pg_str_t                   key, s, lname, lvalue;
    unsigned                   have_ts, have_value;
    pg_json_reader_t           r;
    pg_kafka_label_t          *labels, *nl;
    Prometheus__Label         *pl, **plp;
    Prometheus__Sample         sample, *samplep;
    Prometheus__TimeSeries     series, *seriesp;
    Prometheus__WriteRequest   wr;

    pg_json_read_init(&r, msg, len, a,
                      PG_JSON_RAW_BYTES | PG_JSON_NO_NUL
                      | PG_JSON_LAX_NUMBERS, PG_KAFKA_JSON_DEPTH);

    name = NULL;
    labels = NULL;
    nlabels = 0;
    cap = 0;
    have_ts = 0;
    have_value = 0;
    ts = 0;
    value = 0;

    if (pg_json_read_object(&r) != 0) {
        goto failed;
    }

    for (first = 1; /* void */ ; first = 0) {
        rc = pg_json_read_member(&r, &key, first);

        if (rc == 0) {
            break;
        }

        if (rc != 1) {
            goto failed;
        }

        if (strcmp((char *) key.data, "timestamp") == 0) {
            if (pg_json_read_peek(&r) == '"') {
                if (pg_json_read_string(&r, &s) != 0) {
                    goto failed;
                }

                if (pg_kafka_rfc3339((char *) s.data, s.len, &ts) != 0) {
                    pg_json_read_fail(&r, "\"timestamp\" is not RFC 3339");
                    goto failed;
                }

            } else {
                if (pg_json_read_number(&r, &s) != 0) {
                    goto failed;
                }

                if (pg_kafka_float((char *) s.data, s.len, &tsf) != 0
                    || tsf != tsf || tsf > 9.2e18 || tsf < -9.2e18)
                {
                    pg_json_read_fail(&r, "invalid \"timestamp\"");
                    goto failed;
                }

                ts = (int64_t) tsf;
            }

            have_ts = 1;

        } else if (strcmp((char *) key.data, "value") == 0) {
            if (pg_kafka_json_scalar(&r, &s) != 0) {
                goto failed;
            }

            if (pg_kafka_float((char *) s.data, s.len, &value) != 0) {
                pg_json_read_fail(&r, "\"value\" is not a number");
                goto failed;
            }

            have_value = 1;

        } else if (strcmp((char *) key.data, "name") == 0) {
            if (pg_json_read_string(&r, &s) != 0) {
                goto failed;
            }

            name = (char *) s.data;

        } else if (strcmp((char *) key.data, "labels") == 0) {
            if (pg_json_read_peek(&r) != '{') {
                pg_json_read_fail(&r, "\"labels\" is not an object");
                goto failed;
            }

            (void) pg_json_read_object(&r);
            nlabels = 0;

            for (lfirst = 1; /* void */ ; lfirst = 0) {
                rc = pg_json_read_member(&r, &lname, lfirst);

                if (rc == 0) {
                    break;
                }

                if (rc != 1 || pg_json_read_string(&r, &lvalue) != 0) {
                    goto failed;
                }

                if (nlabels == cap) {
                    if (cap == PG_KAFKA_JSON_LABELS) {
                        pg_json_read_fail(&r, "too many labels");
                        goto failed;
                    }

                    cap = cap ? cap * 2 : 16;

                    nl = a->alloc(a->ctx, cap * sizeof(pg_kafka_label_t));
                    if (nl == NULL) {
                        r.nomem = 1;
                        goto failed;
                    }

                    if (nlabels) {
                        memcpy(nl, labels,
                               nlabels * sizeof(pg_kafka_label_t));
                    }

                    labels = nl;
                }

                labels[nlabels].name = (char *) lname.data;
                labels[nlabels].value = (char *) lvalue.data;
                nlabels++;
            }

        } else if (pg_json_read_skip(&r) != 0) {
            goto failed;
        }
    }

    if (pg_json_read_peek(&r) != -1) {
        pg_json_read_fail(&r, "trailing data after the object");
        goto failed;
    }

    if (!have_ts || !have_value) {
        return pg_kafka_poison(out, "json", "%s",
                               !have_ts ? "json: no \"timestamp\""
                                        : "json: no \"value\"");
    }

    /* the series: labels sorted by name, __name__ from "name" if absent */

    pl = a->alloc(a->ctx, (nlabels + 1) * sizeof(Prometheus__Label));
    plp = a->alloc(a->ctx, (nlabels + 1) * sizeof(Prometheus__Label *));
    if (pl == NULL || plp == NULL) {
        return PG_KAFKA_NOMEM;
    }

    prometheus__time_series__init(&series);
    series.labels = plp;

    for (i = 0; i < nlabels; i++) {
        prometheus__label__init(&pl[i]);
        pl[i].name = labels[i].name;
        pl[i].value = labels[i].value;
        plp[i] = &pl[i];
    }

    series.n_labels = nlabels;

    for (i = 0; i < nlabels; i++) {
        if (strcmp(labels[i].name, "__name__") == 0) {
            break;
        }
    }

    if (i == nlabels && name != NULL) {
        prometheus__label__init(&pl[nlabels]);
        pl[nlabels].name = "__name__";
        pl[nlabels].value = name;
        plp[nlabels] = &pl[nlabels];
        series.n_labels++;
    }

    qsort(plp, series.n_labels, sizeof(Prometheus__Label *),
          pg_kafka_label_cmp);

    prometheus__sample__init(&sample);
    sample.value = value;
    sample.timestamp = ts;
    samplep = &sample;

    series.samples = &samplep;
    series.n_samples = 1;
    seriesp = &series;

    prometheus__write_request__init(&wr);
    wr.timeseries = &seriesp;
    wr.n_timeseries = 1;

    size = prometheus__write_request__get_packed_size(&wr);

    if (size > max_decoded) {
        return pg_kafka_poison(out, "too_large", "%s",
                               "json: the sample is above the size limit");
    }

    buf = a->alloc(a->ctx, size ? size : 1);
    if (buf == NULL) {
        return PG_KAFKA_NOMEM;
    }

    size = prometheus__write_request__pack(&wr, buf);

    rc = pg_kafka_decode_request(buf, size, PG_RW_V1, a, out);

    if (rc == PG_KAFKA_OK) {
        out->format = PG_KAFKA_FORMAT_JSON;
    }

    return rc;

failed:

    if (r.nomem) {
        return PG_KAFKA_NOMEM;
    }

    out->reason = "json";
    snprintf(out->error, sizeof(out->error), "json: %s at byte %zu", r.err,
             (size_t) (r.err_pos - r.start));

    return PG_KAFKA_POISON;
}


pg_kafka_rc_e
pg_kafka_decode(pg_kafka_format_e format, const uint8_t *msg, size_t len,
    size_t max_decoded, pg_allocator_t *a, pg_kafka_decoded_t *out)
{
    pg_kafka_rc_e  rc;

    out->format = format;
    out->version = PG_RW_V1;
    out->snappy = 0;
    out->data = NULL;
    out->len = 0;
    out->invalid = 0;
    out->reason = NULL;
    out->error[0] = '\0';
    memset(&out->stats, 0, sizeof(pg_rw_stats_t));

    switch (format) {

    case PG_KAFKA_FORMAT_PROMPB:
        return pg_kafka_decode_raw(msg, len, PG_RW_V1, max_decoded, a, out);

    case PG_KAFKA_FORMAT_PROMPB_SNAPPY:
        return pg_kafka_decode_snappy(msg, len, PG_RW_V1, max_decoded, a,
                                      out);

    case PG_KAFKA_FORMAT_JSON:
        return pg_kafka_decode_json(msg, len, max_decoded, a, out);

    case PG_KAFKA_FORMAT_PROMPB_V2:
        return pg_kafka_decode_either(msg, len, PG_RW_V2, max_decoded, a,
                                      out);

    default:
        break;
    }

    /* auto: the version from the fields, raw or snappy as they decode */

    rc = pg_kafka_decode_either(msg, len, 0, max_decoded, a, out);

    if (rc == PG_KAFKA_OK && out->version == PG_RW_V1) {
        out->format = out->snappy ? PG_KAFKA_FORMAT_PROMPB_SNAPPY
                                  : PG_KAFKA_FORMAT_PROMPB;

    } else if (rc == PG_KAFKA_OK) {
        out->format = PG_KAFKA_FORMAT_PROMPB_V2;
    }

    return rc;
}


/* ----------------------------------------------- the offset watermark */

void
pg_kafka_wm_init(pg_kafka_wm_t *wm, int64_t *off, uint8_t *done,
    uint32_t cap)
{
    wm->off = off;
    wm->done = done;
    wm->cap = cap;
    wm->head = 0;
    wm->n = 0;
    wm->next = -1;
    wm->refetch = -1;
}


void
pg_kafka_wm_move(pg_kafka_wm_t *wm, int64_t *off, uint8_t *done,
    uint32_t cap)
{
    uint32_t  i, k;

    for (i = 0; i < wm->n; i++) {
        k = (wm->head + i) & (wm->cap - 1);
        off[i] = wm->off[k];
        done[i] = wm->done[k];
    }

    wm->off = off;
    wm->done = done;
    wm->cap = cap;
    wm->head = 0;
}


int
pg_kafka_wm_take(pg_kafka_wm_t *wm, int64_t offset)
{
    uint32_t  k;

    if (wm->refetch >= 0) {
        if (offset != wm->refetch) {
            return PG_KAFKA_WM_REFETCH;
        }

        wm->refetch = -1;
    }

    if (wm->next >= 0 && offset < wm->next) {
        return PG_KAFKA_WM_ORDER;
    }

    if (wm->n == wm->cap) {
        return PG_KAFKA_WM_FULL;
    }

    k = (wm->head + wm->n) & (wm->cap - 1);

    wm->off[k] = offset;
    wm->done[k] = 0;
    wm->n++;
    wm->next = offset + 1;

    return 0;
}


void
pg_kafka_wm_refetch(pg_kafka_wm_t *wm, int64_t offset)
{
    if (wm->refetch < 0 || offset < wm->refetch) {
        wm->refetch = offset;
    }
}


int
pg_kafka_wm_done(pg_kafka_wm_t *wm, int64_t offset)
{
    uint32_t  lo, hi, mid, k, mask;

    mask = wm->cap - 1;
    lo = 0;
    hi = wm->n;

    /* offsets increase along the ring */

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (wm->off[(wm->head + mid) & mask] < offset) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    if (lo == wm->n) {
        return -1;
    }

    k = (wm->head + lo) & mask;

    if (wm->off[k] != offset || wm->done[k]) {
        return -1;
    }

    wm->done[k] = 1;

    while (wm->n && wm->done[wm->head]) {
        wm->head = (wm->head + 1) & mask;
        wm->n--;
    }

    return 0;
}


int64_t
pg_kafka_wm_low(const pg_kafka_wm_t *wm)
{
    if (wm->n) {
        return wm->off[wm->head];
    }

    return wm->next;
}


uint32_t
pg_kafka_wm_held(const pg_kafka_wm_t *wm)
{
    uint32_t  i, held;

    held = 0;

    for (i = 0; i < wm->n; i++) {
        held += !wm->done[(wm->head + i) & (wm->cap - 1)];
    }

    return held;
}


/* ---------------------------------------------------- batch assembly */

void
pg_kafka_batch_init(pg_kafka_batch_t *b, size_t max_count, size_t max_bytes)
{
    b->max_count = max_count ? max_count : 1;
    b->max_bytes = max_bytes;
    b->count = 0;
    b->bytes = 0;
    b->limit = 0;
    b->tenant.data = NULL;
    b->tenant.len = 0;
    b->version = PG_RW_V1;
}


static size_t
pg_kafka_batch_max(const pg_kafka_batch_t *b)
{
    if (b->version == PG_RW_V2) {
        return 1;
    }

    if (b->limit && b->limit < b->max_count) {
        return b->limit;
    }

    return b->max_count;
}


int
pg_kafka_batch_add(pg_kafka_batch_t *b, size_t size, uint32_t limit,
    pg_str_t tenant, pg_rw_version_e version)
{
    if (b->count == 0) {
        b->limit = limit;
        b->tenant = tenant;
        b->version = version;
        b->count = 1;
        b->bytes = size;
        return 1;
    }

    if (limit != b->limit || !pg_str_eq(tenant, b->tenant)
        || version != b->version)
    {
        return 0;
    }

    if (b->count >= pg_kafka_batch_max(b) || size > b->max_bytes - b->bytes
        || b->bytes > b->max_bytes)
    {
        return 0;
    }

    b->count++;
    b->bytes += size;

    return 1;
}


int
pg_kafka_batch_closed(const pg_kafka_batch_t *b)
{
    return b->count != 0 && b->count >= pg_kafka_batch_max(b);
}


uint32_t
pg_kafka_batch_split(size_t count)
{
    if (count <= 1) {
        return 0;
    }

    return (uint32_t) ((count + 1) / 2);
}


/* ----------------------------------------------- the target's answer */

pg_kafka_outcome_e
pg_kafka_classify(unsigned status)
{
    if (status >= 200 && status < 300) {
        return PG_KAFKA_ACK;
    }

    switch (status) {
    case 400:
    case 409:
    case 413:
    case 415:
        return PG_KAFKA_REJECT;
    default:
        return PG_KAFKA_RETRY;
    }
}


/* ----------------------------------------- HTTP/1.1 response parsing */

enum {
    PG_RESP_STATUS = 0,
    PG_RESP_HEADER,
    PG_RESP_BODY,
    PG_RESP_BODY_EOF,
    PG_RESP_CHUNK_SIZE,
    PG_RESP_CHUNK_DATA,
    PG_RESP_CHUNK_END,
    PG_RESP_TRAILER,
    PG_RESP_DONE
};


#define PG_RESP_MAX_HEAD  65536


void
pg_kafka_resp_init(pg_kafka_resp_t *r)
{
    memset(r, 0, sizeof(pg_kafka_resp_t));
    r->state = PG_RESP_STATUS;
    r->length = -1;
}


static int
pg_resp_ieq(const char *a, size_t alen, const char *b)
{
    size_t  i, n;

    n = strlen(b);

    if (alen != n) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if ((a[i] | 0x20) != b[i]) {
            return 0;
        }
    }

    return 1;
}


/* a case-insensitive token inside a comma-separated value */

static int
pg_resp_has(const char *v, size_t len, const char *tok)
{
    size_t  i, n;

    n = strlen(tok);

    for (i = 0; i + n <= len; i++) {
        if (pg_resp_ieq(v + i, n, tok)) {
            return 1;
        }
    }

    return 0;
}


static void
pg_resp_keep(pg_kafka_resp_t *r, const uint8_t *p, size_t n)
{
    size_t  room;

    room = sizeof(r->body) - 1 - r->body_len;

    if (n > room) {
        n = room;
    }

    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}


static pg_kafka_resp_rc_e
pg_resp_line(pg_kafka_resp_t *r)
{
    char      *l, *v, *end;
    size_t     len, nlen;
    uint64_t   n;
    unsigned   d;

    l = r->line;
    len = r->line_len;

    if (len && l[len - 1] == '\r') {
        len--;
    }

    switch (r->state) {

    case PG_RESP_STATUS:
        if (len == 0) {
            return PG_KAFKA_RESP_AGAIN;        /* a stray CRLF */
        }

        if (len < 12 || memcmp(l, "HTTP/1.", 7) != 0
            || (l[7] != '0' && l[7] != '1') || l[8] != ' '
            || l[9] < '1' || l[9] > '5' || l[10] < '0' || l[10] > '9'
            || l[11] < '0' || l[11] > '9' || (len > 12 && l[12] != ' '))
        {
            return PG_KAFKA_RESP_ERROR;
        }

        r->version = l[7] == '1' ? 11 : 10;
        r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
        r->keepalive = r->version == 11;
        r->chunked = 0;
        r->length = -1;
        r->state = PG_RESP_HEADER;

        return PG_KAFKA_RESP_AGAIN;

    case PG_RESP_HEADER:
        if (len == 0) {
            if (r->status < 200) {
                r->state = PG_RESP_STATUS;     /* 100 Continue and such */
                return PG_KAFKA_RESP_AGAIN;
            }

            if (r->status == 204 || r->status == 304) {
                r->state = PG_RESP_DONE;
                return PG_KAFKA_RESP_DONE;
            }

            if (r->chunked) {
                r->state = PG_RESP_CHUNK_SIZE;
                return PG_KAFKA_RESP_AGAIN;
            }

            if (r->length >= 0) {
                if (r->length == 0) {
                    r->state = PG_RESP_DONE;
                    return PG_KAFKA_RESP_DONE;
                }

                r->left = (uint64_t) r->length;
                r->state = PG_RESP_BODY;
                return PG_KAFKA_RESP_AGAIN;
            }

            r->keepalive = 0;
            r->state = PG_RESP_BODY_EOF;
            return PG_KAFKA_RESP_AGAIN;
        }

        v = memchr(l, ':', len);
        if (v == NULL) {
            return PG_KAFKA_RESP_ERROR;
        }

        nlen = (size_t) (v - l);
        v++;
        end = l + len;

        while (v < end && (*v == ' ' || *v == '\t')) {
            v++;
        }

        while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }

        if (pg_resp_ieq(l, nlen, "content-length")) {
            if (v == end) {
                return PG_KAFKA_RESP_ERROR;
            }

            for (n = 0; v < end; v++) {
                if (*v < '0' || *v > '9' || n > ((uint64_t) 1 << 56)) {
                    return PG_KAFKA_RESP_ERROR;
                }

                n = n * 10 + (uint64_t) (*v - '0');
            }

            if (r->length >= 0 && (uint64_t) r->length != n) {
                return PG_KAFKA_RESP_ERROR;
            }

            r->length = (int64_t) n;

        } else if (pg_resp_ieq(l, nlen, "transfer-encoding")) {
            if (pg_resp_has(v, (size_t) (end - v), "chunked")) {
                r->chunked = 1;
            }

        } else if (pg_resp_ieq(l, nlen, "connection")) {
            if (pg_resp_has(v, (size_t) (end - v), "close")) {
                r->keepalive = 0;

            } else if (pg_resp_has(v, (size_t) (end - v), "keep-alive")) {
                r->keepalive = 1;
            }
        }

        return PG_KAFKA_RESP_AGAIN;

    case PG_RESP_CHUNK_SIZE:
        n = 0;
        nlen = 0;

        while (nlen < len && l[nlen] != ';' && l[nlen] != ' '
               && l[nlen] != '\t')
        {
            d = (unsigned char) l[nlen];

            if (d >= '0' && d <= '9') {
                d -= '0';

            } else if ((d | 0x20) >= 'a' && (d | 0x20) <= 'f') {
                d = (d | 0x20) - 'a' + 10;

            } else {
                return PG_KAFKA_RESP_ERROR;
            }

            if (n > ((uint64_t) 1 << 56)) {
                return PG_KAFKA_RESP_ERROR;
            }

            n = n << 4 | d;
            nlen++;
        }

        if (nlen == 0) {
            return PG_KAFKA_RESP_ERROR;
        }

        if (n == 0) {
            r->state = PG_RESP_TRAILER;
            return PG_KAFKA_RESP_AGAIN;
        }

        r->left = n;
        r->state = PG_RESP_CHUNK_DATA;
        return PG_KAFKA_RESP_AGAIN;

    case PG_RESP_CHUNK_END:
        if (len != 0) {
            return PG_KAFKA_RESP_ERROR;
        }

        r->state = PG_RESP_CHUNK_SIZE;
        return PG_KAFKA_RESP_AGAIN;

    case PG_RESP_TRAILER:
        if (len == 0) {
            r->state = PG_RESP_DONE;
            return PG_KAFKA_RESP_DONE;
        }

        return PG_KAFKA_RESP_AGAIN;

    default:
        return PG_KAFKA_RESP_ERROR;
    }
}


pg_kafka_resp_rc_e
pg_kafka_resp_parse(pg_kafka_resp_t *r, const uint8_t *p, size_t n,
    size_t *used)
{
    size_t              i, take;
    uint8_t             c;
    pg_kafka_resp_rc_e  rc;

    i = 0;
    *used = 0;

    while (i < n) {

        switch (r->state) {

        case PG_RESP_DONE:
            *used = i;
            return PG_KAFKA_RESP_DONE;

        case PG_RESP_BODY:
        case PG_RESP_CHUNK_DATA:
            take = n - i;

            if (take > r->left) {
                take = (size_t) r->left;
            }

            pg_resp_keep(r, p + i, take);
            i += take;
            r->left -= take;

            if (r->left == 0) {
                if (r->state == PG_RESP_BODY) {
                    r->state = PG_RESP_DONE;
                    *used = i;
                    return PG_KAFKA_RESP_DONE;
                }

                r->state = PG_RESP_CHUNK_END;
            }

            continue;

        case PG_RESP_BODY_EOF:
            pg_resp_keep(r, p + i, n - i);
            i = n;
            continue;

        default:
            break;
        }

        c = p[i++];

        if (++r->head > PG_RESP_MAX_HEAD) {
            *used = i;
            return PG_KAFKA_RESP_ERROR;
        }

        if (c != '\n') {
            if (r->line_len < sizeof(r->line) - 1) {
                r->line[r->line_len++] = (char) c;
            }

            continue;
        }

        rc = pg_resp_line(r);
        r->line_len = 0;

        if (rc == PG_KAFKA_RESP_ERROR) {
            *used = i;
            return rc;
        }

        if (rc == PG_KAFKA_RESP_DONE) {
            *used = i;
            return rc;
        }
    }

    *used = n;

    return r->state == PG_RESP_DONE ? PG_KAFKA_RESP_DONE : PG_KAFKA_RESP_AGAIN;
}


pg_kafka_resp_rc_e
pg_kafka_resp_eof(pg_kafka_resp_t *r)
{
    if (r->state == PG_RESP_BODY_EOF || r->state == PG_RESP_DONE) {
        r->state = PG_RESP_DONE;
        r->keepalive = 0;
        return PG_KAFKA_RESP_DONE;
    }

    return PG_KAFKA_RESP_ERROR;
}
