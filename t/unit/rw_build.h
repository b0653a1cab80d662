/*
 * Remote-write 1.0 requests built with protobuf-c for the unit tests
 * (test_rw.c, test_rw2.c): an independent encoder to check the decoder
 * and the translations against.
 */

#ifndef RW_BUILD_H
#define RW_BUILD_H

#include <stdarg.h>
#include <string.h>

#include "remote.pb-c.h"


#define MAXS 16

typedef struct {
    Prometheus__WriteRequest   wr;
    Prometheus__TimeSeries     ts[MAXS];
    Prometheus__TimeSeries    *tsp[MAXS];
    Prometheus__Label          l[MAXS][16];
    Prometheus__Label         *lp[MAXS][16];
    Prometheus__Sample         s[MAXS][4];
    Prometheus__Sample        *sp[MAXS][4];
    Prometheus__Exemplar       e[MAXS];
    Prometheus__Exemplar      *ep[MAXS];
    Prometheus__Label          el[MAXS][4];
    Prometheus__Label         *elp[MAXS][4];
    Prometheus__Histogram      h[MAXS];
    Prometheus__Histogram     *hp[MAXS];
    Prometheus__MetricMetadata md[4];
    Prometheus__MetricMetadata *mdp[4];
    uint8_t                    buf[65536];
    size_t                     len;
} req_t;


static void
req_init(req_t *q)
{
    memset(q, 0, sizeof(*q));
    prometheus__write_request__init(&q->wr);
    q->wr.timeseries = q->tsp;
    q->wr.metadata = q->mdp;
}


/* labels as "name", "value", ..., NULL */
static size_t
req_series(req_t *q, ...)
{
    va_list                  ap;
    const char              *n;
    size_t                   i, k;
    Prometheus__TimeSeries  *ts;

    i = q->wr.n_timeseries++;
    ts = &q->ts[i];
    prometheus__time_series__init(ts);
    q->tsp[i] = ts;
    ts->labels = q->lp[i];
    ts->samples = q->sp[i];

    va_start(ap, q);
    for (k = 0; (n = va_arg(ap, const char *)) != NULL; k++) {
        prometheus__label__init(&q->l[i][k]);
        q->l[i][k].name = (char *) n;
        q->l[i][k].value = va_arg(ap, char *);
        q->lp[i][k] = &q->l[i][k];
    }
    va_end(ap);

    ts->n_labels = k;

    return i;
}


static void
req_sample(req_t *q, size_t i, double v, int64_t t)
{
    size_t  k;

    k = q->ts[i].n_samples++;
    prometheus__sample__init(&q->s[i][k]);
    q->s[i][k].value = v;
    q->s[i][k].timestamp = t;
    q->sp[i][k] = &q->s[i][k];
}


static void
req_exemplar(req_t *q, size_t i, const char *name, const char *value,
    double v, int64_t t)
{
    prometheus__exemplar__init(&q->e[i]);
    q->e[i].value = v;
    q->e[i].timestamp = t;
    q->ep[i] = &q->e[i];

    prometheus__label__init(&q->el[i][0]);
    q->el[i][0].name = (char *) name;
    q->el[i][0].value = (char *) value;
    q->elp[i][0] = &q->el[i][0];
    q->e[i].labels = q->elp[i];
    q->e[i].n_labels = 1;

    q->ts[i].exemplars = &q->ep[i];
    q->ts[i].n_exemplars = 1;
}


static void
req_histogram(req_t *q, size_t i)
{
    prometheus__histogram__init(&q->h[i]);
    q->h[i].count_case = PROMETHEUS__HISTOGRAM__COUNT_COUNT_INT;
    q->h[i].count_int = 3;
    q->h[i].sum = 1.5;
    q->h[i].schema = 3;
    q->h[i].timestamp = 1000;
    q->hp[i] = &q->h[i];
    q->ts[i].histograms = &q->hp[i];
    q->ts[i].n_histograms = 1;
}


static void
req_pack(req_t *q)
{
    q->len = prometheus__write_request__pack(&q->wr, q->buf);
}

#endif /* RW_BUILD_H */
