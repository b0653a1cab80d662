
/*
 * promgate: its own metrics.  Counters live in a shared zone so that the
 * status page sums every worker, and survive reloads; forward targets keep
 * their counters by name.
 */


#include "ngx_http_promgate_module.h"
#include "ngx_http_promgate_kafka.h"


#define NGX_HTTP_PROMGATE_STATUS_MAGIC  0x50475354u    /* "PGST" */
#define NGX_HTTP_PROMGATE_STATUS_LAYOUT 1


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


ngx_int_t
ngx_http_promgate_status_init(ngx_conf_t *cf,
    ngx_http_promgate_main_conf_t *pmcf)
{
    size_t                            size;
    ngx_str_t                         name;
    ngx_http_promgate_status_zone_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_status_zone_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->targets = &pmcf->targets;

    ngx_str_set(&name, "promgate_status");

    size = ngx_align(sizeof(ngx_slab_pool_t)
                     + sizeof(ngx_http_promgate_status_shm_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    return ngx_http_promgate_zone_add(cf, &name, size,
                                      &ngx_http_promgate_status_kind,
                                      &ctx->zone, NULL);
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


#define ngx_http_promgate_out(...)                                            \
    p = ngx_slprintf(p, last, __VA_ARGS__)


static u_char *
ngx_http_promgate_help(u_char *p, u_char *last, char *name, char *type,
    char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


static u_char *
ngx_http_promgate_render(u_char *p, u_char *last,
    ngx_http_promgate_main_conf_t *pmcf)
{
    ngx_uint_t                         i, n, cum;
    ngx_atomic_uint_t                  v;
    ngx_http_promgate_stats_t         *st;
    ngx_http_promgate_target_stats_t  *ts;

    static struct {
        char    *name;
        char    *help;
        size_t   offset;
    } counters[] = {
        { "promgate_received_samples_total",
          "Samples received in valid write requests.",
          offsetof(ngx_http_promgate_stats_t, samples) },
        { "promgate_received_histograms_total",
          "Native histogram samples received in valid write requests.",
          offsetof(ngx_http_promgate_stats_t, histograms) },
        { "promgate_received_exemplars_total",
          "Exemplars received in valid write requests.",
          offsetof(ngx_http_promgate_stats_t, exemplars) },
        { "promgate_received_metadata_total",
          "Metadata entries received in valid write requests.",
          offsetof(ngx_http_promgate_stats_t, metadata) },
        { "promgate_received_series_total",
          "Time series received in valid write requests.",
          offsetof(ngx_http_promgate_stats_t, series) },
        { "promgate_received_bytes_total",
          "Compressed request body bytes received.",
          offsetof(ngx_http_promgate_stats_t, bytes) },
        { "promgate_decoded_bytes_total",
          "Uncompressed protobuf bytes of valid write requests.",
          offsetof(ngx_http_promgate_stats_t, decoded_bytes) },
        { "promgate_rejected_samples_total",
          "Samples in write requests refused as invalid.",
          offsetof(ngx_http_promgate_stats_t, rejected_samples) },
        { "promgate_invalid_samples_total",
          "Samples and histogram samples of invalid series left out of "
          "forwarded writes.",
          offsetof(ngx_http_promgate_stats_t, invalid_samples) },
        { "promgate_invalid_metadata_total",
          "Metadata entries (remote write 1.0) left out of forwarded writes "
          "as invalid.",
          offsetof(ngx_http_promgate_stats_t, invalid_metadata) },
        { "promgate_encoded_bytes_total",
          "Compressed bytes of the bodies made for targets.",
          offsetof(ngx_http_promgate_stats_t, encoded_bytes) },
        { "promgate_inflight_rejected_total",
          "Writes answered 503 at once because promgate_max_inflight was "
          "reached.",
          offsetof(ngx_http_promgate_stats_t, rejected)
          + NGX_HTTP_PROMGATE_REJECT_INFLIGHT * sizeof(ngx_atomic_t) },
    };

    static struct {
        char    *outcome;
        size_t   offset;
    } outcomes[] = {
        { "stored", offsetof(ngx_http_promgate_target_stats_t, stored) },
        { "rejected", offsetof(ngx_http_promgate_target_stats_t, rejected) },
        { "failed", offsetof(ngx_http_promgate_target_stats_t, failed) },
    };

    st = ngx_http_promgate_stats_ptr;

    p = ngx_http_promgate_help(p, last, "promgate_write_requests_total",
                               "counter", "Write requests answered, by "
                               "status code.");

    for (i = 0; i < 600; i++) {
        if (st->codes[i]) {
            ngx_http_promgate_out("promgate_write_requests_total"
                                  "{code=\"%ui\"} %uA\n", i, st->codes[i]);
        }
    }

    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        p = ngx_http_promgate_help(p, last, counters[i].name, "counter",
                                   counters[i].help);
        v = *(ngx_atomic_t *) ((u_char *) st + counters[i].offset);
        ngx_http_promgate_out("%s %uA\n", counters[i].name, v);
    }

    p = ngx_http_promgate_help(p, last, "promgate_rejected_requests_total",
                               "counter", "Write requests refused before "
                               "forwarding, by reason.");

    for (i = 1; i < NGX_HTTP_PROMGATE_NREJECTS; i++) {
        if (i == PG_RW_ABORTED || i == PG_RW_NOMEM) {
            continue;
        }

        ngx_http_promgate_out("promgate_rejected_requests_total"
                              "{reason=\"%s\"} %uA\n",
                              i < PG_RW_NREASONS
                              ? pg_rw_reason_name(i)
                              : ngx_http_promgate_reject_names[
                                    i - PG_RW_NREASONS],
                              st->rejected[i]);
    }

    p = ngx_http_promgate_help(p, last, "promgate_invalid_series_total",
                               "counter", "Invalid series left out of "
                               "writes that were forwarded "
                               "(promgate_invalid_series drop), by reason.");

    for (i = PG_RW_NO_NAME; i < PG_RW_NREASONS; i++) {
        if (i == PG_RW_BAD_SYMBOLS || i == PG_RW_NOMEM
            || i == PG_RW_ABORTED)
        {
            continue;
        }

        ngx_http_promgate_out("promgate_invalid_series_total"
                              "{reason=\"%s\"} %uA\n",
                              pg_rw_reason_name(i), st->invalid_series[i]);
    }

    p = ngx_http_promgate_help(p, last, "promgate_write_versions_total",
                               "counter", "Valid write requests by remote "
                               "write version.");

    ngx_http_promgate_out("promgate_write_versions_total{version=\"1.0\"} "
                          "%uA\npromgate_write_versions_total"
                          "{version=\"2.0\"} %uA\n",
                          st->versions[PG_RW_V1], st->versions[PG_RW_V2]);

    p = ngx_http_promgate_help(p, last, "promgate_encoded_bodies_total",
                               "counter", "Bodies made for targets "
                               "(translated, or without invalid series), "
                               "by remote write version.");

    ngx_http_promgate_out("promgate_encoded_bodies_total{version=\"1.0\"} "
                          "%uA\npromgate_encoded_bodies_total"
                          "{version=\"2.0\"} %uA\n",
                          st->encoded[PG_RW_V1], st->encoded[PG_RW_V2]);

    p = ngx_http_promgate_help(p, last, "promgate_inflight_requests", "gauge",
                               "Writes in flight, forwarding included.");

    v = 0;
    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_WORKERS; i++) {
        v += st->inflight[i];
    }

    ngx_http_promgate_out("promgate_inflight_requests %uA\n", v);

    p = ngx_http_promgate_help(p, last, "promgate_write_duration_seconds",
                               "histogram", "Time from the start of a write "
                               "to its answer.");

    cum = 0;

    for (i = 0; i < NGX_HTTP_PROMGATE_LATENCY_BUCKETS; i++) {
        cum += st->latency[i];

        if (ngx_http_promgate_latency_le[i]) {
            n = ngx_http_promgate_latency_le[i];
            ngx_http_promgate_out("promgate_write_duration_seconds_bucket"
                                  "{le=\"%ui.%06ui\"} %ui\n",
                                  n / 1000000, n % 1000000, cum);

        } else {
            ngx_http_promgate_out("promgate_write_duration_seconds_bucket"
                                  "{le=\"+Inf\"} %ui\n", cum);
        }
    }

    ngx_http_promgate_out("promgate_write_duration_seconds_sum %uA.%06uA\n"
                          "promgate_write_duration_seconds_count %uA\n",
                          st->latency_sum_us / 1000000,
                          st->latency_sum_us % 1000000, st->latency_count);

    /* per forward target */

    p = ngx_http_promgate_help(p, last, "promgate_forward_attempts_total",
                               "counter", "Forward attempts (subrequests), "
                               "by target.");

    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
        ts = &st->targets[i];
        if (ts->used) {
            ngx_http_promgate_out("promgate_forward_attempts_total"
                                  "{target=\"%s\"} %uA\n", ts->name,
                                  ts->attempts);
        }
    }

    p = ngx_http_promgate_help(p, last, "promgate_forward_retries_total",
                               "counter", "Forward attempts that were "
                               "retries, by target.");

    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
        ts = &st->targets[i];
        if (ts->used) {
            ngx_http_promgate_out("promgate_forward_retries_total"
                                  "{target=\"%s\"} %uA\n", ts->name,
                                  ts->retries);
        }
    }

    p = ngx_http_promgate_help(p, last, "promgate_forward_outcomes_total",
                               "counter", "Final outcome of each write per "
                               "target: stored (2xx), rejected (400/409), "
                               "failed.");

    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
        ts = &st->targets[i];
        if (!ts->used) {
            continue;
        }

        for (n = 0; n < 3; n++) {
            v = *(ngx_atomic_t *) ((u_char *) ts + outcomes[n].offset);
            ngx_http_promgate_out("promgate_forward_outcomes_total"
                                  "{target=\"%s\",outcome=\"%s\"} %uA\n",
                                  ts->name, outcomes[n].outcome, v);
        }
    }

    p = ngx_http_promgate_help(p, last, "promgate_forward_giveups_total",
                               "counter", "Targets given up on because the "
                               "next retry would pass "
                               "promgate_retry_timeout.");

    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
        ts = &st->targets[i];
        if (ts->used) {
            ngx_http_promgate_out("promgate_forward_giveups_total"
                                  "{target=\"%s\"} %uA\n", ts->name,
                                  ts->giveups);
        }
    }

    p = ngx_http_promgate_help(p, last,
                               "promgate_forward_misconfigured_total",
                               "counter", "Answers such as 401, 403, 404 or "
                               "413 that point at a misconfigured target.");

    for (i = 0; i < NGX_HTTP_PROMGATE_MAX_TARGETS; i++) {
        ts = &st->targets[i];
        if (ts->used) {
            ngx_http_promgate_out("promgate_forward_misconfigured_total"
                                  "{target=\"%s\"} %uA\n", ts->name,
                                  ts->misconfigured);
        }
    }

    p = ngx_http_promgate_exemplar_status(p, last, pmcf);
    p = ngx_http_promgate_series_status(p, last, pmcf);
    p = ngx_http_promgate_wal_status(p, last, pmcf);
    p = ngx_http_promgate_kafka_status(p, last);

    return p;
}


ngx_int_t
ngx_http_promgate_status_handler(ngx_http_request_t *r)
{
    size_t        size;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    size = 64 * 1024 + NGX_HTTP_PROMGATE_MAX_TARGETS * 1024
           + ngx_http_promgate_kafka_status_size();

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_promgate_render(b->last, b->end,
                  ngx_http_get_module_main_conf(r, ngx_http_promgate_module));
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
