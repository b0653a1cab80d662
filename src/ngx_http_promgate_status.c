
/*
 * promgate: its own metrics and the promgate_status page.
 *
 * The writes' counters live in a shared zone so that the page sums every
 * worker, and survive reloads; forward targets keep their counters by
 * name.  Other features keep their own counters and register a printer
 * (ngx_http_promgate_status_add()) at configuration time; the page is
 * these printers' output, in the order they registered.
 */


#include "ngx_http_promgate_module.h"


#define NGX_HTTP_PROMGATE_STATUS_MAGIC  0x50475354u    /* "PGST" */
#define NGX_HTTP_PROMGATE_STATUS_LAYOUT 2


typedef struct {
    ngx_http_promgate_shm_t         shm;
    ngx_http_promgate_stats_t       stats;
} ngx_http_promgate_status_shm_t;


typedef struct {
    ngx_http_promgate_zone_t        zone;     /* first: see util.h */
    ngx_array_t                    *targets;
} ngx_http_promgate_status_zone_t;


static ngx_int_t ngx_http_promgate_status_init_zone(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);
static void ngx_http_promgate_status_writes(ngx_http_promgate_text_t *t,
    void *data);


static ngx_http_promgate_zone_kind_t  ngx_http_promgate_status_kind = {
    "promgate_status",
    "status zone",
    NGX_HTTP_PROMGATE_STATUS_MAGIC,
    NGX_HTTP_PROMGATE_STATUS_LAYOUT,
    sizeof(ngx_http_promgate_status_shm_t),
    ngx_http_promgate_status_init_zone
};


static ngx_http_promgate_stats_t   ngx_http_promgate_stats_local;
static ngx_http_promgate_stats_t  *ngx_http_promgate_stats_ptr =
    &ngx_http_promgate_stats_local;


/* upper bounds of the write latency histogram, in microseconds */
static ngx_uint_t  ngx_http_promgate_latency_le[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 0 /* +Inf */
};


/* the refusals of the glue; the core's reasons come from pg_rw */
static const char  *ngx_http_promgate_reject_names[] = {
    "method",
    "content_type",
    "content_encoding",
    "snappy",
    "too_large",
    "body",
    "inflight"
};


/* the status zone, and the writes' part of the page, first */

ngx_int_t
ngx_http_promgate_status_init(ngx_conf_t *cf)
{
    size_t                            size;
    ngx_str_t                         name;
    ngx_http_promgate_main_conf_t    *pmcf;
    ngx_http_promgate_status_zone_t  *ctx;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_status_zone_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->targets = &pmcf->targets;

    ngx_str_set(&name, "promgate_status");

    size = ngx_align(sizeof(ngx_slab_pool_t)
                     + sizeof(ngx_http_promgate_status_shm_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    if (ngx_http_promgate_zone_add(cf, &name, size,
                                   &ngx_http_promgate_status_kind,
                                   &ctx->zone, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_promgate_status_add(cf, ngx_http_promgate_status_writes,
                                        ctx);
}


/* a feature's part of the page: print(t, data), after those added before */

ngx_int_t
ngx_http_promgate_status_add(ngx_conf_t *cf, ngx_http_promgate_status_pt print,
    void *data)
{
    ngx_http_promgate_main_conf_t       *pmcf;
    ngx_http_promgate_status_printer_t  *pr;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    pr = ngx_array_push(&pmcf->printers);
    if (pr == NULL) {
        return NGX_ERROR;
    }

    pr->print = print;
    pr->data = data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_status_init_zone(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused)
{
    ngx_http_promgate_status_zone_t *ctx =
        (ngx_http_promgate_status_zone_t *) zone;

    ngx_uint_t                        i, j, free;
    ngx_http_promgate_target_t       *t;
    ngx_http_promgate_status_shm_t   *sh;
    ngx_http_promgate_target_stats_t *ts;

    sh = zone->sh;

    ngx_http_promgate_stats_ptr = &sh->stats;

    /*
     * Give each configured target its slot, by name, so a reload keeps its
     * counters; slots of targets no longer configured are recycled.
     */

    t = ctx->targets->elts;

    for (i = 0; i < ctx->targets->nelts; i++) {
        free = NGX_HTTP_PROMGATE_MAX_TARGETS;

        for (j = 0; j < NGX_HTTP_PROMGATE_MAX_TARGETS; j++) {
            ts = &sh->stats.targets[j];

            if (!ts->used) {
                if (free == NGX_HTTP_PROMGATE_MAX_TARGETS) {
                    free = j;
                }
                continue;
            }

            if (ngx_strlen(ts->name) == t[i].uri.len
                && ngx_strncmp(ts->name, t[i].uri.data, t[i].uri.len) == 0)
            {
                break;
            }
        }

        if (j == NGX_HTTP_PROMGATE_MAX_TARGETS) {

            if (free == NGX_HTTP_PROMGATE_MAX_TARGETS) {
                /* every slot taken by old names: reuse the last one */
                free = NGX_HTTP_PROMGATE_MAX_TARGETS - 1;
            }

            j = free;
            ts = &sh->stats.targets[j];

            ngx_memzero(ts, sizeof(ngx_http_promgate_target_stats_t));
            ngx_memcpy(ts->name, t[i].uri.data, t[i].uri.len);
            ts->used = 1;
        }

        t[i].slot = j;
    }

    return NGX_OK;
}


ngx_http_promgate_stats_t *
ngx_http_promgate_stats(void)
{
    return ngx_http_promgate_stats_ptr;
}


void
ngx_http_promgate_stats_reject(ngx_uint_t reason, uint64_t samples)
{
    ngx_http_promgate_stats_t  *st;

    st = ngx_http_promgate_stats_ptr;

    if (reason < NGX_HTTP_PROMGATE_NREJECTS) {
        (void) ngx_atomic_fetch_add(&st->rejected[reason], 1);
    }

    if (samples) {
        (void) ngx_atomic_fetch_add(&st->rejected_samples, samples);
    }
}


void
ngx_http_promgate_stats_answer(ngx_http_promgate_write_ctx_t *ctx,
    ngx_uint_t status)
{
    ngx_uint_t                  i, us;
    ngx_http_promgate_stats_t  *st;

    if (ctx->answer) {
        return;
    }

    ctx->answer = status;

    st = ngx_http_promgate_stats_ptr;

    if (status < 600) {
        (void) ngx_atomic_fetch_add(&st->codes[status], 1);
    }

    us = (ngx_current_msec - ctx->start) * 1000;

    for (i = 0; ngx_http_promgate_latency_le[i]; i++) {
        if (us <= ngx_http_promgate_latency_le[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&st->latency[i], 1);
    (void) ngx_atomic_fetch_add(&st->latency_count, 1);
    (void) ngx_atomic_fetch_add(&st->latency_sum_us, us);
}


void
ngx_http_promgate_stats_inflight(ngx_uint_t n)
{
    if (ngx_worker < NGX_HTTP_PROMGATE_MAX_WORKERS) {
        ngx_http_promgate_stats_ptr->inflight[ngx_worker] = n;
    }
}


/* ------------------------------------------------------------ the page */


static ngx_http_promgate_metric_t  ngx_http_promgate_status_counters[] = {
    { "promgate_received_samples_total", "counter",
      "Samples received in valid write requests.",
      offsetof(ngx_http_promgate_stats_t, samples) },
    { "promgate_received_histograms_total", "counter",
      "Native histogram samples received in valid write requests.",
      offsetof(ngx_http_promgate_stats_t, histograms) },
    { "promgate_received_exemplars_total", "counter",
      "Exemplars received in valid write requests.",
      offsetof(ngx_http_promgate_stats_t, exemplars) },
    { "promgate_received_metadata_total", "counter",
      "Metadata entries received in valid write requests.",
      offsetof(ngx_http_promgate_stats_t, metadata) },
    { "promgate_received_series_total", "counter",
      "Time series received in valid write requests.",
      offsetof(ngx_http_promgate_stats_t, series) },
    { "promgate_received_bytes_total", "counter",
      "Compressed request body bytes received.",
      offsetof(ngx_http_promgate_stats_t, bytes) },
    { "promgate_decoded_bytes_total", "counter",
      "Uncompressed protobuf bytes of valid write requests.",
      offsetof(ngx_http_promgate_stats_t, decoded_bytes) },
    { "promgate_rejected_samples_total", "counter",
      "Samples in write requests refused as invalid.",
      offsetof(ngx_http_promgate_stats_t, rejected_samples) },
    { "promgate_invalid_samples_total", "counter",
      "Samples and histogram samples of invalid series left out of "
      "forwarded writes.",
      offsetof(ngx_http_promgate_stats_t, invalid_samples) },
    { "promgate_invalid_metadata_total", "counter",
      "Metadata entries (remote write 1.0) left out of forwarded writes "
      "as invalid.",
      offsetof(ngx_http_promgate_stats_t, invalid_metadata) },
    { "promgate_encoded_bytes_total", "counter",
      "Compressed bytes of the bodies made for targets.",
      offsetof(ngx_http_promgate_stats_t, encoded_bytes) },
    { "promgate_inflight_rejected_total", "counter",
      "Writes answered 503 at once because promgate_max_inflight was "
      "reached.",
      offsetof(ngx_http_promgate_stats_t, rejected)
      + NGX_HTTP_PROMGATE_REJECT_INFLIGHT * sizeof(ngx_atomic_t) },
};


/* the families of forward targets, each with a sample per target */
static ngx_http_promgate_metric_t  ngx_http_promgate_status_targets[] = {
    { "promgate_forward_attempts_total", "counter",
      "Forward attempts (subrequests), by target.",
      offsetof(ngx_http_promgate_target_stats_t, attempts) },
    { "promgate_forward_retries_total", "counter",
      "Forward attempts that were retries, by target.",
      offsetof(ngx_http_promgate_target_stats_t, retries) },
    { "promgate_forward_outcomes_total", "counter",
      "Final outcome of each write per target: stored (2xx), rejected "
      "(400/409), failed, spooled (in its spool, to be replayed).",
      0 /* the name: by outcome */ },
    { "promgate_forward_giveups_total", "counter",
      "Targets given up on because the next retry would pass "
      "promgate_retry_timeout.",
      offsetof(ngx_http_promgate_target_stats_t, giveups) },
    { "promgate_forward_misconfigured_total", "counter",
      "Answers such as 401, 403, 404 or 413 that point at a misconfigured "
      "target.",
      offsetof(ngx_http_promgate_target_stats_t, misconfigured) },
    { "promgate_forward_series_total", "counter",
      "Series put in the bodies sent to each target (all valid series, or "
      "those its match=, drop= and shard= rules chose).",
      offsetof(ngx_http_promgate_target_stats_t, series_sent) },
    { "promgate_forward_samples_total", "counter",
      "Samples and histogram samples of the series sent to each target.",
      offsetof(ngx_http_promgate_target_stats_t, samples_sent) },
    { "promgate_forward_series_dropped_total", "counter",
      "Valid series not sent to a target because of its match=, drop= or "
      "shard= rules.",
      offsetof(ngx_http_promgate_target_stats_t, series_dropped) },
};


/* promgate_forward_outcomes_total's outcomes */
static ngx_http_promgate_metric_t  ngx_http_promgate_status_outcomes[] = {
    { "stored", NULL, NULL,
      offsetof(ngx_http_promgate_target_stats_t, stored) },
    { "rejected", NULL, NULL,
      offsetof(ngx_http_promgate_target_stats_t, rejected) },
    { "failed", NULL, NULL,
      offsetof(ngx_http_promgate_target_stats_t, failed) },
    { "spooled", NULL, NULL,
      offsetof(ngx_http_promgate_target_stats_t, spooled) },
    { NULL, NULL, NULL, 0 }
};


/* a counter by remote write version: counts[PG_RW_V1], counts[PG_RW_V2] */

static void
ngx_http_promgate_status_versions(ngx_http_promgate_text_t *t, char *name,
    char *help, ngx_atomic_t *counts)
{
    ngx_uint_t                    v;
    ngx_http_promgate_label_t     l[1];

    static char  *versions[] = { NULL, "1.0", "2.0" };

    ngx_http_promgate_text_family(t, name, "counter", help);

    for (v = PG_RW_V1; v <= PG_RW_V2; v++) {
        ngx_http_promgate_label_cstr(&l[0], "version", versions[v]);
        ngx_http_promgate_text_sample(t, name, l, 1, "%uA", counts[v]);
    }
}


static void
ngx_http_promgate_status_writes(ngx_http_promgate_text_t *t, void *data)
{
    ngx_http_promgate_status_zone_t *ctx = data;

    u_char                             num[NGX_INT_T_LEN + 8];
    ngx_uint_t                         i, n, cum;
    ngx_atomic_uint_t                  v;
    ngx_http_promgate_label_t          l[2];
    ngx_http_promgate_metric_t        *m, *o;
    ngx_http_promgate_stats_t         *st;
    ngx_http_promgate_target_stats_t  *ts;

    st = &((ngx_http_promgate_status_shm_t *) ctx->zone.sh)->stats;

    ngx_http_promgate_text_family(t, "promgate_write_requests_total",
                                  "counter", "Write requests answered, by "
                                  "status code.");

    l[0].name = "code";
    l[0].value.data = num;

    for (i = 0; i < 600; i++) {
        if (st->codes[i]) {
            l[0].value.len = ngx_sprintf(num, "%ui", i) - num;
            ngx_http_promgate_text_sample(t, "promgate_write_requests_total",
                                          l, 1, "%uA", st->codes[i]);
        }
    }

    ngx_http_promgate_text_counters(t, ngx_http_promgate_status_counters,
        sizeof(ngx_http_promgate_status_counters)
        / sizeof(ngx_http_promgate_metric_t), st);

    ngx_http_promgate_text_family(t, "promgate_rejected_requests_total",
                                  "counter", "Write requests refused before "
                                  "forwarding, by reason.");

    for (i = 1; i < NGX_HTTP_PROMGATE_NREJECTS; i++) {
        if (i == PG_RW_ABORTED || i == PG_RW_NOMEM) {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "reason",
                                     i < PG_RW_NREASONS
                                     ? pg_rw_reason_name(i)
                                     : ngx_http_promgate_reject_names[
                                           i - PG_RW_NREASONS]);
        ngx_http_promgate_text_sample(t, "promgate_rejected_requests_total",
                                      l, 1, "%uA", st->rejected[i]);
    }

    ngx_http_promgate_text_family(t, "promgate_invalid_series_total",
                                  "counter", "Invalid series left out of "
                                  "writes that were forwarded "
                                  "(promgate_invalid_series drop), by "
                                  "reason.");

    for (i = PG_RW_NO_NAME; i < PG_RW_NREASONS; i++) {
        /* request-level reasons: never a series' */

        if (i == PG_RW_BAD_SYMBOLS || i == PG_RW_NOMEM
            || i == PG_RW_ABORTED || i == PG_RW_OVER_LIMIT)
        {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "reason", pg_rw_reason_name(i));
        ngx_http_promgate_text_sample(t, "promgate_invalid_series_total",
                                      l, 1, "%uA", st->invalid_series[i]);
    }

    ngx_http_promgate_status_versions(t, "promgate_write_versions_total",
                                      "Valid write requests by remote "
                                      "write version.", st->versions);

    ngx_http_promgate_status_versions(t, "promgate_encoded_bodies_total",
                                      "Bodies made for targets (translated, "
                                      "or without invalid series), by "
                                      "remote write version.", st->encoded);

    ngx_http_promgate_text_family(t, "promgate_inflight_requests", "gauge",
                                  "Writes in flight, forwarding included.");

    v = 0;
    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_WORKERS; i++) {
        v += st->inflight[i];
    }

    ngx_http_promgate_text_sample(t, "promgate_inflight_requests", NULL, 0,
                                  "%uA", v);

    ngx_http_promgate_text_family(t, "promgate_write_duration_seconds",
                                  "histogram", "Time from the start of a "
                                  "write to its answer.");

    l[0].name = "le";
    l[0].value.data = num;
    cum = 0;

    for (i = 0; i < NGX_HTTP_PROMGATE_LATENCY_BUCKETS; i++) {
        cum += st->latency[i];
        n = ngx_http_promgate_latency_le[i];

        if (n) {
            l[0].value.len = ngx_sprintf(num, "%ui.%06ui", n / 1000000,
                                         n % 1000000)
                             - num;

        } else {
            ngx_str_set(&l[0].value, "+Inf");
        }

        ngx_http_promgate_text_sample(t,
                                      "promgate_write_duration_seconds_bucket",
                                      l, 1, "%ui", cum);
    }

    ngx_http_promgate_text_sample(t, "promgate_write_duration_seconds_sum",
                                  NULL, 0, "%uA.%06uA",
                                  st->latency_sum_us / 1000000,
                                  st->latency_sum_us % 1000000);
    ngx_http_promgate_text_sample(t, "promgate_write_duration_seconds_count",
                                  NULL, 0, "%uA", st->latency_count);

    /* per forward target */

    m = ngx_http_promgate_status_targets;
    n = sizeof(ngx_http_promgate_status_targets)
        / sizeof(ngx_http_promgate_metric_t);

    for ( /* void */ ; n--; m++) {
        ngx_http_promgate_text_family(t, m->name, m->type, m->help);

        for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
            ts = &st->targets[i];

            if (!ts->used) {
                continue;
            }

            ngx_http_promgate_label_cstr(&l[0], "target", (char *) ts->name);

            if (m->offset != 0) {
                v = *(ngx_atomic_t *) ((u_char *) ts + m->offset);
                ngx_http_promgate_text_sample(t, m->name, l, 1, "%uA", v);
                continue;
            }

            for (o = ngx_http_promgate_status_outcomes; o->name; o++) {
                ngx_http_promgate_label_cstr(&l[1], "outcome", o->name);
                v = *(ngx_atomic_t *) ((u_char *) ts + o->offset);
                ngx_http_promgate_text_sample(t, m->name, l, 2, "%uA", v);
            }
        }
    }
}


ngx_int_t
ngx_http_promgate_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_uint_t                           i;
    ngx_http_promgate_text_t             t;
    ngx_http_promgate_main_conf_t       *pmcf;
    ngx_http_promgate_status_printer_t  *pr;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_promgate_module);

    ngx_http_promgate_text_init(&t, r->pool);

    pr = pmcf->printers.elts;

    for (i = 0; i < pmcf->printers.nelts; i++) {
        pr[i].print(&t, pr[i].data);
    }

    if (t.failed || t.out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t.buf->last_buf = (r == r->main) ? 1 : 0;
    t.buf->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = t.size;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, t.out);
}
