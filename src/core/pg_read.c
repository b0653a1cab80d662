/*
 * Remote read: request decoding and re-encoding, and the merge of the
 * targets' SAMPLES answers.
 *
 * protobuf-c decodes the messages into caller memory.  A target's answer
 * is decoded into scratch memory with a budget (protobuf-c needs several
 * times the wire size, far more for pathological input), copied into
 * compact arrays, and the scratch is the caller's to release.  The merged
 * response is written by hand: the wire format of four small messages.
 */

#include "pg_read.h"
#include "pg_rw_wire.h"

#include <stdio.h>
#include <stdlib.h>

#include <snappy-c.h>
#include <protobuf-c/protobuf-c.h>

#include "remote.pb-c.h"


/* scratch for one answer: ten times its decoded size, and some slack */
#define PG_READ_SCRATCH_FACTOR  10
#define PG_READ_SCRATCH_SLACK   65536


typedef struct {
    int64_t                 ts;
    double                  v;
} pg_read_sample_t;


typedef struct {
    int64_t                 ts;
    uint8_t                *data;       /* the packed Histogram message */
    size_t                  len;
} pg_read_hist_t;


typedef struct {
    pg_label_t             *labels;     /* sorted by name, drop removed */
    size_t                  nlabels;
    pg_read_sample_t       *samples;
    size_t                  nsamples;
    pg_read_hist_t         *hists;
    size_t                  nhists;
    uint64_t                order;      /* arrival: target, then position */
    uint64_t                size;       /* encoded TimeSeries, at finish */
} pg_read_series_t;


/* the series one answer gave to one query */
typedef struct pg_read_batch_s  pg_read_batch_t;

struct pg_read_batch_s {
    pg_read_series_t       *series;
    size_t                  n;
    pg_read_batch_t        *next;
};


typedef struct {
    pg_read_batch_t        *first;
    pg_read_batch_t        *last;
    size_t                  nseries;
} pg_read_query_t;


struct pg_read_merge_s {
    pg_allocator_t          a;
    pg_read_limits_t        limits;
    const pg_str_t         *drop;
    size_t                  ndrop;
    size_t                  nqueries;
    pg_read_query_t        *queries;
    uint64_t                order;
};


/* protobuf-c's allocator on top of the caller's, with a budget */
typedef struct {
    pg_allocator_t         *a;
    size_t                  used;
    size_t                  budget;
    int                     over;
    int                     nomem;
} pg_read_budget_t;


static void *
pg_read_pb_alloc(void *data, size_t size)
{
    pg_read_budget_t  *b = data;

    void  *p;

    if (size == 0) {
        size = 1;
    }

    if (size > b->budget - b->used) {
        b->over = 1;
        return NULL;
    }

    b->used += size;

    p = b->a->alloc(b->a->ctx, size);
    if (p == NULL) {
        b->nomem = 1;
    }

    return p;
}


static void
pg_read_pb_free(void *data, void *p)
{
    /* the caller's memory goes as a whole */
}


static void *
pg_read_alloc(pg_allocator_t *a, size_t size)
{
    return a->alloc(a->ctx, size ? size : 1);
}


#define pg_read_fail(err, ...)                                               \
    do {                                                                     \
        if ((err) != NULL) {                                                 \
            snprintf((err)->message, sizeof((err)->message), __VA_ARGS__);  \
        }                                                                    \
    } while (0)


const char *
pg_read_rc_name(pg_read_rc_e rc)
{
    static const char  *names[] = {
        "ok", "snappy", "too_large", "malformed", "invalid",
        "too_many_samples", "nomem"
    };

    return (unsigned) rc < PG_READ_NRCS ? names[rc] : "unknown";
}


/*
 * A snappy block (its declared length checked first) unpacked by
 * protobuf-c as a desc message, both in allocator memory, protobuf-c's
 * within a budget.  what names the message in errors; *decoded: the
 * uncompressed length.
 */

static pg_read_rc_e
pg_read_unpack(const uint8_t *body, size_t len, size_t max,
    pg_allocator_t *a, const ProtobufCMessageDescriptor *desc,
    const char *what, ProtobufCMessage **msg, size_t *decoded,
    pg_read_error_t *err)
{
    size_t              n;
    uint8_t            *p;
    pg_snappy_rc_e      rc;
    pg_read_budget_t    budget;
    ProtobufCAllocator  pba;

    rc = pg_snappy_decoded_length(body, len, max, &n);

    if (rc == PG_SNAPPY_TOO_LARGE) {
        pg_read_fail(err, "the %s declares %zu bytes uncompressed, above the "
                     "limit of %zu", what, n, max);
        return PG_READ_TOO_LARGE;
    }

    if (rc != PG_SNAPPY_OK) {
        pg_read_fail(err, "the %s is not a valid snappy block (remote read "
                     "uses snappy's block format, not framed)", what);
        return PG_READ_SNAPPY;
    }

    p = pg_read_alloc(a, n);
    if (p == NULL) {
        pg_read_fail(err, "out of memory");
        return PG_READ_NOMEM;
    }

    if (pg_snappy_decode(body, len, p, n) != PG_SNAPPY_OK) {
        pg_read_fail(err, "the %s is not a valid snappy block", what);
        return PG_READ_SNAPPY;
    }

    *decoded = n;

    budget.a = a;
    budget.used = 0;
    budget.budget = n * PG_READ_SCRATCH_FACTOR + PG_READ_SCRATCH_SLACK;
    budget.over = 0;
    budget.nomem = 0;

    pba.alloc = pg_read_pb_alloc;
    pba.free = pg_read_pb_free;
    pba.allocator_data = &budget;

    *msg = protobuf_c_message_unpack(desc, &pba, n, p);

    if (*msg != NULL) {
        return PG_READ_OK;
    }

    if (budget.nomem) {
        pg_read_fail(err, "out of memory");
        return PG_READ_NOMEM;
    }

    if (budget.over) {
        pg_read_fail(err, "decoding the %s (%zu bytes) needs more than %zu "
                     "bytes of memory", what, n, budget.budget);
        return PG_READ_TOO_LARGE;
    }

    pg_read_fail(err, "the %s is not a valid protobuf %s", what,
                 desc->short_name);
    return PG_READ_MALFORMED;
}


/* ------------------------------------------------------------- requests */


pg_read_rc_e
pg_read_request_decode(const uint8_t *body, size_t len, size_t max_decoded,
    pg_allocator_t *a, pg_read_request_t *req, pg_read_error_t *err)
{
    size_t                    i, j, n;
    pg_read_rc_e              rc;
    ProtobufCMessage         *pm;
    Prometheus__Query        *q;
    Prometheus__ReadRequest  *msg;
    Prometheus__LabelMatcher *lm;

    memset(req, 0, sizeof(pg_read_request_t));

    rc = pg_read_unpack(body, len, max_decoded, a,
                        &prometheus__read_request__descriptor, "request", &pm,
                        &n, err);
    if (rc != PG_READ_OK) {
        return rc;
    }

    msg = (Prometheus__ReadRequest *) pm;

    for (i = 0; i < msg->n_queries; i++) {
        q = msg->queries[i];

        for (j = 0; j < q->n_matchers; j++) {
            lm = q->matchers[j];

            if ((unsigned) lm->type > PROMETHEUS__LABEL_MATCHER__TYPE__NRE) {
                pg_read_fail(err, "query %zu, matcher %zu: unknown matcher "
                             "type %d (0 =, 1 !=, 2 =~, 3 !~)", i, j,
                             (int) lm->type);
                return PG_READ_INVALID;
            }

            if (lm->name[0] == '\0') {
                pg_read_fail(err, "query %zu, matcher %zu: empty label name",
                             i, j);
                return PG_READ_INVALID;
            }

            if (!pg_utf8_valid((const uint8_t *) lm->name,
                               strlen(lm->name))
                || !pg_utf8_valid((const uint8_t *) lm->value,
                                  strlen(lm->value)))
            {
                pg_read_fail(err, "query %zu, matcher %zu: invalid UTF-8",
                             i, j);
                return PG_READ_INVALID;
            }
        }
    }

    req->msg = msg;
    req->nqueries = msg->n_queries;
    req->decoded_len = n;
    req->only_samples = 1;

    for (i = 0; i < msg->n_accepted_response_types; i++) {
        switch ((int) msg->accepted_response_types[i]) {

        case PROMETHEUS__READ_REQUEST__RESPONSE_TYPE__SAMPLES:
            req->accept |= PG_READ_ACCEPT_SAMPLES;
            break;

        case PROMETHEUS__READ_REQUEST__RESPONSE_TYPE__STREAMED_XOR_CHUNKS:
            req->accept |= PG_READ_ACCEPT_STREAMED;
            req->only_samples = 0;
            break;

        default:
            req->accept |= PG_READ_ACCEPT_UNKNOWN;
            req->only_samples = 0;
            break;
        }
    }

    return PG_READ_OK;
}


/*
 * Prometheus answers the first accepted type it supports; promgate
 * answers SAMPLES whenever the client takes them (it merges), and passes
 * a stream through only when there is nothing to merge.
 */

pg_read_mode_e
pg_read_request_mode(const pg_read_request_t *req, size_t ntargets)
{
    if (req->accept == 0 || req->only_samples) {
        return PG_READ_MODE_SAMPLES;
    }

    if (req->accept & PG_READ_ACCEPT_SAMPLES) {
        return PG_READ_MODE_REENCODE;
    }

    if ((req->accept & PG_READ_ACCEPT_STREAMED) && ntargets == 1) {
        return PG_READ_MODE_PASSTHROUGH;
    }

    return PG_READ_MODE_UNSUPPORTED;
}


pg_read_rc_e
pg_read_request_encode_samples(pg_read_request_t *req, pg_allocator_t *a,
    uint8_t **out, size_t *len)
{
    size_t                                  n, clen;
    uint8_t                                *raw, *z;
    Prometheus__ReadRequest                *msg;
    Prometheus__ReadRequest__ResponseType  *types;

    msg = req->msg;

    types = pg_read_alloc(a, sizeof(Prometheus__ReadRequest__ResponseType));
    if (types == NULL) {
        return PG_READ_NOMEM;
    }

    types[0] = PROMETHEUS__READ_REQUEST__RESPONSE_TYPE__SAMPLES;

    msg->accepted_response_types = types;
    msg->n_accepted_response_types = 1;

    n = prometheus__read_request__get_packed_size(msg);

    raw = pg_read_alloc(a, n);
    if (raw == NULL) {
        return PG_READ_NOMEM;
    }

    n = prometheus__read_request__pack(msg, raw);

    clen = snappy_max_compressed_length(n);

    z = pg_read_alloc(a, clen);
    if (z == NULL) {
        return PG_READ_NOMEM;
    }

    if (snappy_compress((const char *) raw, n, (char *) z, &clen)
        != SNAPPY_OK)
    {
        return PG_READ_NOMEM;
    }

    req->accept = PG_READ_ACCEPT_SAMPLES;
    req->only_samples = 1;

    *out = z;
    *len = clen;

    return PG_READ_OK;
}


/* ---------------------------------------------------------------- merge */


pg_read_merge_t *
pg_read_merge_create(pg_allocator_t *a, size_t nqueries,
    const pg_str_t *drop, size_t ndrop, const pg_read_limits_t *limits)
{
    pg_read_merge_t  *m;

    m = pg_read_alloc(a, sizeof(pg_read_merge_t));
    if (m == NULL) {
        return NULL;
    }

    memset(m, 0, sizeof(pg_read_merge_t));

    m->queries = pg_read_alloc(a, nqueries * sizeof(pg_read_query_t));
    if (m->queries == NULL) {
        return NULL;
    }

    memset(m->queries, 0, nqueries * sizeof(pg_read_query_t));

    m->a = *a;
    m->limits = *limits;
    m->drop = drop;
    m->ndrop = ndrop;
    m->nqueries = nqueries;

    return m;
}


static int
pg_read_dropped(pg_read_merge_t *m, pg_str_t name)
{
    size_t  i;

    for (i = 0; i < m->ndrop; i++) {
        if (pg_str_eq(m->drop[i], name)) {
            return 1;
        }
    }

    return 0;
}


static int
pg_read_copy_str(pg_allocator_t *a, const char *s, pg_str_t *to)
{
    size_t    n;
    uint8_t  *p;

    n = strlen(s);

    if (n == 0) {
        to->data = (const uint8_t *) "";
        to->len = 0;
        return 0;
    }

    p = pg_read_alloc(a, n);
    if (p == NULL) {
        return -1;
    }

    memcpy(p, s, n);

    to->data = p;
    to->len = n;

    return 0;
}


static int
pg_read_label_cmp(const void *a, const void *b)
{
    const pg_label_t  *x = a;
    const pg_label_t  *y = b;

    int  rc;

    rc = pg_str_cmp(x->name, y->name);

    return rc ? rc : pg_str_cmp(x->value, y->value);
}


/* a series of an answer, in compact form: labels sorted, drop removed */

static pg_read_rc_e
pg_read_copy_series(pg_read_merge_t *m, Prometheus__TimeSeries *ts,
    pg_read_series_t *s, pg_read_error_t *err)
{
    size_t                  i, j, n;
    pg_str_t                name;
    pg_label_t              l;
    Prometheus__Histogram  *h;

    s->labels = pg_read_alloc(&m->a, ts->n_labels * sizeof(pg_label_t));
    s->samples = pg_read_alloc(&m->a,
                               ts->n_samples * sizeof(pg_read_sample_t));
    s->hists = pg_read_alloc(&m->a, ts->n_histograms * sizeof(pg_read_hist_t));

    if (s->labels == NULL || s->samples == NULL || s->hists == NULL) {
        goto nomem;
    }

    n = 0;

    for (i = 0; i < ts->n_labels; i++) {
        name.data = (const uint8_t *) ts->labels[i]->name;
        name.len = strlen(ts->labels[i]->name);

        if (pg_read_dropped(m, name)) {
            continue;
        }

        if (pg_read_copy_str(&m->a, ts->labels[i]->name, &l.name) != 0
            || pg_read_copy_str(&m->a, ts->labels[i]->value, &l.value) != 0)
        {
            goto nomem;
        }

        s->labels[n++] = l;
    }

    s->nlabels = n;

    /* storages send labels sorted by name; this is a safety net */

    for (j = 1; j < n; j++) {
        if (pg_str_cmp(s->labels[j - 1].name, s->labels[j].name) > 0) {
            qsort(s->labels, n, sizeof(pg_label_t), pg_read_label_cmp);
            break;
        }
    }

    for (i = 0; i < ts->n_samples; i++) {
        s->samples[i].ts = ts->samples[i]->timestamp;
        s->samples[i].v = ts->samples[i]->value;
    }

    s->nsamples = ts->n_samples;

    for (i = 0; i < ts->n_histograms; i++) {
        h = ts->histograms[i];

        s->hists[i].ts = h->timestamp;
        s->hists[i].len = prometheus__histogram__get_packed_size(h);
        s->hists[i].data = pg_read_alloc(&m->a, s->hists[i].len);

        if (s->hists[i].data == NULL) {
            goto nomem;
        }

        (void) prometheus__histogram__pack(h, s->hists[i].data);
    }

    s->nhists = ts->n_histograms;
    s->order = m->order++;

    return PG_READ_OK;

nomem:

    pg_read_fail(err, "out of memory");
    return PG_READ_NOMEM;
}


pg_read_rc_e
pg_read_merge_add(pg_read_merge_t *m, const uint8_t *body, size_t len,
    pg_allocator_t *scratch, pg_read_error_t *err)
{
    size_t                     i, j, n;
    uint64_t                   samples;
    pg_read_rc_e               rc;
    pg_read_batch_t           *batches;
    ProtobufCMessage          *pm;
    Prometheus__QueryResult   *qr;
    Prometheus__ReadResponse  *msg;

    rc = pg_read_unpack(body, len, m->limits.max_size, scratch,
                        &prometheus__read_response__descriptor, "answer", &pm,
                        &n, err);
    if (rc != PG_READ_OK) {
        return rc;
    }

    msg = (Prometheus__ReadResponse *) pm;

    if (msg->n_results != m->nqueries) {
        pg_read_fail(err, "the answer has %zu results for %zu queries",
                     msg->n_results, m->nqueries);
        return PG_READ_INVALID;
    }

    /* count first: nothing is copied from an answer over the limit */

    samples = 0;

    for (i = 0; i < msg->n_results; i++) {
        qr = msg->results[i];

        for (j = 0; j < qr->n_timeseries; j++) {
            samples += qr->timeseries[j]->n_samples
                       + qr->timeseries[j]->n_histograms;
        }
    }

    if (samples > m->limits.max_samples) {
        pg_read_fail(err, "the answer holds %llu samples, above the limit "
                     "of %llu", (unsigned long long) samples,
                     (unsigned long long) m->limits.max_samples);
        return PG_READ_TOO_MANY_SAMPLES;
    }

    batches = pg_read_alloc(&m->a, m->nqueries * sizeof(pg_read_batch_t));
    if (batches == NULL && m->nqueries) {
        pg_read_fail(err, "out of memory");
        return PG_READ_NOMEM;
    }

    for (i = 0; i < msg->n_results; i++) {
        qr = msg->results[i];

        batches[i].n = qr->n_timeseries;
        batches[i].next = NULL;
        batches[i].series = pg_read_alloc(&m->a, qr->n_timeseries
                                                 * sizeof(pg_read_series_t));
        if (batches[i].series == NULL) {
            pg_read_fail(err, "out of memory");
            return PG_READ_NOMEM;
        }

        for (j = 0; j < qr->n_timeseries; j++) {
            rc = pg_read_copy_series(m, qr->timeseries[j],
                                     &batches[i].series[j], err);
            if (rc != PG_READ_OK) {
                return rc;
            }
        }
    }

    /* all copied: commit */

    for (i = 0; i < m->nqueries; i++) {
        if (m->queries[i].last) {
            m->queries[i].last->next = &batches[i];

        } else {
            m->queries[i].first = &batches[i];
        }

        m->queries[i].last = &batches[i];
        m->queries[i].nseries += batches[i].n;
    }

    return PG_READ_OK;
}


/* Prometheus' order of label sets (labels.Compare), then arrival */

static int
pg_read_labels_cmp(const pg_read_series_t *a, const pg_read_series_t *b)
{
    int     rc;
    size_t  i, n;

    n = a->nlabels < b->nlabels ? a->nlabels : b->nlabels;

    for (i = 0; i < n; i++) {
        rc = pg_str_cmp(a->labels[i].name, b->labels[i].name);
        if (rc != 0) {
            return rc;
        }

        rc = pg_str_cmp(a->labels[i].value, b->labels[i].value);
        if (rc != 0) {
            return rc;
        }
    }

    return (a->nlabels > b->nlabels) - (a->nlabels < b->nlabels);
}


static int
pg_read_series_cmp(const void *x, const void *y)
{
    int                            rc;
    const pg_read_series_t *const *a = x;
    const pg_read_series_t *const *b = y;

    rc = pg_read_labels_cmp(*a, *b);
    if (rc != 0) {
        return rc;
    }

    return ((*a)->order > (*b)->order) - ((*a)->order < (*b)->order);
}


/*
 * A stable merge sort by timestamp of elements whose first member is an
 * int64_t timestamp: stability keeps the first target's sample first.
 */

static int64_t
pg_read_ts(const uint8_t *e)
{
    int64_t  ts;

    memcpy(&ts, e, sizeof(int64_t));

    return ts;
}


static void
pg_read_sort_ts(uint8_t *base, size_t n, size_t size, uint8_t *tmp)
{
    size_t    width, lo, mid, hi, i, j, k;
    uint8_t  *from, *to, *t;

    from = base;
    to = tmp;

    for (width = 1; width < n; width *= 2) {

        for (lo = 0; lo < n; lo += 2 * width) {
            mid = lo + width < n ? lo + width : n;
            hi = lo + 2 * width < n ? lo + 2 * width : n;

            i = lo;
            j = mid;
            k = lo;

            while (i < mid && j < hi) {
                if (pg_read_ts(from + j * size) < pg_read_ts(from + i * size))
                {
                    memcpy(to + k++ * size, from + j++ * size, size);

                } else {
                    memcpy(to + k++ * size, from + i++ * size, size);
                }
            }

            if (i < mid) {
                memcpy(to + k * size, from + i * size, (mid - i) * size);
                k += mid - i;
            }

            if (j < hi) {
                memcpy(to + k * size, from + j * size, (hi - j) * size);
            }
        }

        t = from;
        from = to;
        to = t;
    }

    if (from != base) {
        memcpy(base, from, n * size);
    }
}


static int
pg_read_strictly_sorted(const uint8_t *base, size_t n, size_t size)
{
    size_t  i;

    for (i = 1; i < n; i++) {
        if (pg_read_ts(base + i * size) <= pg_read_ts(base + (i - 1) * size)) {
            return 0;
        }
    }

    return 1;
}


/* keeps the first element of each timestamp; returns the new count */

static size_t
pg_read_dedupe(uint8_t *base, size_t n, size_t size)
{
    size_t  i, k;

    if (n == 0) {
        return 0;
    }

    for (i = 1, k = 1; i < n; i++) {
        if (pg_read_ts(base + i * size) != pg_read_ts(base + (k - 1) * size)) {
            if (k != i) {
                memcpy(base + k * size, base + i * size, size);
            }
            k++;
        }
    }

    return k;
}


/*
 * Merges the elements (samples or histograms) of the series group[0..n)
 * into group[0]: concatenated in arrival order, stably sorted, deduped.
 */

static pg_read_rc_e
pg_read_merge_elts(pg_read_merge_t *m, pg_read_series_t **group, size_t n,
    size_t off_data, size_t off_n, size_t size, uint64_t *dups)
{
    size_t     i, total, k, ni;
    uint8_t   *all, *tmp, *di;

#define pg_read_elts(s)   (*(uint8_t **) ((uint8_t *) (s) + off_data))
#define pg_read_nelts(s)  (*(size_t *) ((uint8_t *) (s) + off_n))

    total = 0;

    for (i = 0; i < n; i++) {
        total += pg_read_nelts(group[i]);
    }

    if (n == 1 && pg_read_strictly_sorted(pg_read_elts(group[0]), total,
                                          size))
    {
        return PG_READ_OK;
    }

    if (n == 1) {
        all = pg_read_elts(group[0]);

    } else {
        all = pg_read_alloc(&m->a, total * size);
        if (all == NULL) {
            return PG_READ_NOMEM;
        }

        for (i = 0, k = 0; i < n; i++) {
            di = pg_read_elts(group[i]);
            ni = pg_read_nelts(group[i]);

            if (ni) {
                memcpy(all + k * size, di, ni * size);
            }

            k += ni;
        }
    }

    if (!pg_read_strictly_sorted(all, total, size)) {
        tmp = pg_read_alloc(&m->a, total * size);
        if (tmp == NULL) {
            return PG_READ_NOMEM;
        }

        pg_read_sort_ts(all, total, size, tmp);
    }

    k = pg_read_dedupe(all, total, size);

    *dups += total - k;

    pg_read_elts(group[0]) = all;
    pg_read_nelts(group[0]) = k;

#undef pg_read_elts
#undef pg_read_nelts

    return PG_READ_OK;
}


/* a length-delimited field's size with its tag and length */
#define pg_read_field_len(n)  (1 + pg_pb_varint_size(n) + (n))


static uint64_t
pg_read_label_len(const pg_label_t *l)
{
    return (l->name.len ? pg_read_field_len(l->name.len) : 0)
           + (l->value.len ? pg_read_field_len(l->value.len) : 0);
}


static uint64_t
pg_read_sample_len(const pg_read_sample_t *s)
{
    uint64_t  bits;

    memcpy(&bits, &s->v, sizeof(uint64_t));

    return (bits ? 9 : 0)
           + (s->ts ? 1 + pg_pb_varint_size((uint64_t) s->ts) : 0);
}


static uint64_t
pg_read_series_len(const pg_read_series_t *s)
{
    size_t    i;
    uint64_t  n;

    n = 0;

    for (i = 0; i < s->nlabels; i++) {
        n += pg_read_field_len(pg_read_label_len(&s->labels[i]));
    }

    for (i = 0; i < s->nsamples; i++) {
        n += pg_read_field_len(pg_read_sample_len(&s->samples[i]));
    }

    for (i = 0; i < s->nhists; i++) {
        n += pg_read_field_len(s->hists[i].len);
    }

    return n;
}


static uint8_t *
pg_read_put_series(uint8_t *p, const pg_read_series_t *s)
{
    size_t             i, b;
    uint64_t           bits;
    const pg_label_t  *l;

    for (i = 0; i < s->nlabels; i++) {
        l = &s->labels[i];

        *p++ = 0x0a;                                  /* labels = 1 */
        p = pg_pb_put_varint(p, pg_read_label_len(l));

        if (l->name.len) {
            p = pg_pb_put_bytes(p, 0x0a, l->name.data, l->name.len);
        }

        if (l->value.len) {
            p = pg_pb_put_bytes(p, 0x12, l->value.data, l->value.len);
        }
    }

    for (i = 0; i < s->nsamples; i++) {
        *p++ = 0x12;                                  /* samples = 2 */
        p = pg_pb_put_varint(p, pg_read_sample_len(&s->samples[i]));

        memcpy(&bits, &s->samples[i].v, sizeof(uint64_t));

        if (bits) {
            *p++ = 0x09;                              /* value = 1, fixed64 */

            for (b = 0; b < 8; b++) {
                *p++ = (uint8_t) (bits >> (8 * b));
            }
        }

        if (s->samples[i].ts) {
            *p++ = 0x10;                              /* timestamp = 2 */
            p = pg_pb_put_varint(p, (uint64_t) s->samples[i].ts);
        }
    }

    for (i = 0; i < s->nhists; i++) {                 /* histograms = 4 */
        p = pg_pb_put_bytes(p, 0x22, s->hists[i].data, s->hists[i].len);
    }

    return p;
}


pg_read_rc_e
pg_read_merge_finish(pg_read_merge_t *m, uint8_t **out, size_t *len,
    pg_read_stats_t *st, pg_read_error_t *err)
{
    size_t              q, i, j, k, n, clen;
    uint8_t            *buf, *p, *z;
    uint64_t            total, samples, qlen, *qlens;
    pg_read_batch_t    *b;
    pg_read_series_t  **all, ***outs;

    memset(st, 0, sizeof(pg_read_stats_t));

    qlens = pg_read_alloc(&m->a, m->nqueries * sizeof(uint64_t));
    outs = pg_read_alloc(&m->a, m->nqueries * sizeof(pg_read_series_t **));

    if (qlens == NULL || outs == NULL) {
        goto nomem;
    }

    /* per query: sort the series, merge runs of equal label sets */

    for (q = 0; q < m->nqueries; q++) {
        n = m->queries[q].nseries;

        all = pg_read_alloc(&m->a, n * sizeof(pg_read_series_t *));
        if (all == NULL) {
            goto nomem;
        }

        for (b = m->queries[q].first, k = 0; b; b = b->next) {
            for (i = 0; i < b->n; i++) {
                all[k++] = &b->series[i];
            }
        }

        qsort(all, n, sizeof(pg_read_series_t *), pg_read_series_cmp);

        qlen = 0;

        for (i = 0, k = 0; i < n; i = j) {
            for (j = i + 1; j < n && pg_read_labels_cmp(all[i], all[j]) == 0;
                 j++)
            {
                /* void */
            }

            if (pg_read_merge_elts(m, &all[i], j - i,
                                   offsetof(pg_read_series_t, samples),
                                   offsetof(pg_read_series_t, nsamples),
                                   sizeof(pg_read_sample_t), &st->duplicates)
                != PG_READ_OK
                || pg_read_merge_elts(m, &all[i], j - i,
                                      offsetof(pg_read_series_t, hists),
                                      offsetof(pg_read_series_t, nhists),
                                      sizeof(pg_read_hist_t),
                                      &st->duplicates)
                   != PG_READ_OK)
            {
                goto nomem;
            }

            st->series++;
            st->samples += all[i]->nsamples;
            st->histograms += all[i]->nhists;

            all[i]->size = pg_read_series_len(all[i]);
            qlen += pg_read_field_len(all[i]->size);

            all[k++] = all[i];
        }

        samples = st->samples + st->histograms;

        if (samples > m->limits.max_samples) {
            pg_read_fail(err, "the merged response holds more than %llu "
                         "samples (%llu so far)",
                         (unsigned long long) m->limits.max_samples,
                         (unsigned long long) samples);
            return PG_READ_TOO_MANY_SAMPLES;
        }

        /* the query now holds its merged series only */

        m->queries[q].nseries = k;
        qlens[q] = qlen;
        outs[q] = all;
    }

    total = 0;

    for (q = 0; q < m->nqueries; q++) {
        total += pg_read_field_len(qlens[q]);
    }

    if (total > m->limits.max_size) {
        pg_read_fail(err, "the merged response needs %llu bytes "
                     "uncompressed, above the limit of %zu",
                     (unsigned long long) total, m->limits.max_size);
        return PG_READ_TOO_LARGE;
    }

    buf = pg_read_alloc(&m->a, total);
    if (buf == NULL) {
        goto nomem;
    }

    p = buf;

    for (q = 0; q < m->nqueries; q++) {
        all = outs[q];

        *p++ = 0x0a;                                  /* results = 1 */
        p = pg_pb_put_varint(p, qlens[q]);

        for (i = 0; i < m->queries[q].nseries; i++) {
            *p++ = 0x0a;                              /* timeseries = 1 */
            p = pg_pb_put_varint(p, all[i]->size);
            p = pg_read_put_series(p, all[i]);
        }
    }

    st->size = p - buf;

    clen = snappy_max_compressed_length(st->size);

    z = pg_read_alloc(&m->a, clen);
    if (z == NULL) {
        goto nomem;
    }

    if (snappy_compress((const char *) buf, st->size, (char *) z, &clen)
        != SNAPPY_OK)
    {
        goto nomem;
    }

    *out = z;
    *len = clen;

    return PG_READ_OK;

nomem:

    pg_read_fail(err, "out of memory");
    return PG_READ_NOMEM;
}
