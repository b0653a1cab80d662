
/*
 * promgate: the series index.  A shared zone holds the set of series seen
 * recently (src/core/pg_series.c); the series of a write that are not in
 * it are copied out of the decoded body while it is validated, offered on
 * 2xx (pending) and produced to Kafka; the delivery report makes them seen,
 * or forgets them so that a later write offers them again.  The answer to
 * the sender never waits for Kafka, and Kafka never fails a write.
 */


#include "ngx_http_promgate_module.h"
#include "pg_series.h"

#include "ngx_http_promgate_kafka.h"


#define NGX_HTTP_PROMGATE_SERIES_MAGIC   0x50475349u    /* "PGSI" */
#define NGX_HTTP_PROMGATE_SERIES_LAYOUT  1


/* a zone's shared memory: the set in one block of the slab pool */
typedef struct {
    ngx_http_promgate_shm_t         shm;
    void                           *base;     /* of the set's block */
    size_t                          size;
} ngx_http_promgate_series_shm_t;


typedef struct {
    ngx_http_promgate_zone_t        zone;     /* first: see util.h */
    ngx_str_t                       name;
    time_t                          ttl;
    time_t                          pending;
    pg_series_set_t                *set;
} ngx_http_promgate_series_zone_t;


/* a new series of a write, copied out of the body */
typedef struct {
    pg_series_id_t                  id;
    uint64_t                        tenant;   /* its hash */
    pg_str_t                        tenant_name;
    pg_label_t                     *labels;
    size_t                          nlabels;
    uint32_t                        token;
} ngx_http_promgate_series_new_t;


/* the index's part of a write (ctx->series) */
typedef struct {
    ngx_http_promgate_series_zone_t  *zone;
    uint64_t                        tenant;   /* the request's, hashed */
    pg_str_t                        tenant_name;
    ngx_array_t                     news;     /* ..._series_new_t */
    ngx_uint_t                      nbatch;   /* series not looked up yet */
    pg_series_id_t                  ids[PG_SERIES_BATCH];
    pg_pb_iter_t                    labels[PG_SERIES_BATCH];
    uint64_t                        tenants[PG_SERIES_BATCH];
    pg_str_t                        names[PG_SERIES_BATCH];  /* tenants' */
    u_char                          drop[PG_SERIES_BATCH];   /* the label */
    unsigned                        failed:1;
} ngx_http_promgate_series_write_t;


/* a message in the producer, until its delivery report */
typedef struct {
    ngx_http_promgate_series_zone_t  *zone;
    uint64_t                        tenant;
    uint64_t                        hash;
    uint32_t                        token;
} ngx_http_promgate_series_msg_t;


static ngx_int_t ngx_http_promgate_series_init_zone(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);
static ngx_int_t ngx_http_promgate_series_values(
    ngx_http_promgate_zone_t *zone, void *values);
static void ngx_http_promgate_series_delivered(void *opaque, ngx_int_t rc,
    const char *err);
static void ngx_http_promgate_series_drop(ngx_http_promgate_series_zone_t *z,
    uint64_t tenant, ngx_http_promgate_series_new_t *n, pg_series_drop_e why);


static ngx_http_promgate_zone_kind_t  ngx_http_promgate_series_kind = {
    "promgate_series",
    "series zone",
    NGX_HTTP_PROMGATE_SERIES_MAGIC,
    NGX_HTTP_PROMGATE_SERIES_LAYOUT,
    sizeof(ngx_http_promgate_series_shm_t),
    ngx_http_promgate_series_init_zone
};


/* --------------------------------------------------- configuration */


/* promgate_series_zone NAME:SIZE [ttl=DURATION] [pending=DURATION] */

char *
ngx_http_promgate_series_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_promgate_main_conf_t  *pmcf = conf;

    size_t                            size;
    time_t                            ttl, pending;
    ngx_str_t                        *value, name, s;
    ngx_uint_t                        i;
    ngx_http_promgate_series_zone_t  *ctx;

    value = cf->args->elts;

    if (ngx_http_promgate_zone_arg(cf, &value[1], "series zone",
                                   "series:32m", &name, &size)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (size < 64 * ngx_pagesize
        || pg_series_capacity(size - 16 * ngx_pagesize) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "series zone \"%V\" is too small: make it at "
                           "least %uzk (about 48 bytes per series)",
                           &name, 64 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    ttl = 7 * 24 * 3600;
    pending = 60;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            ttl = ngx_parse_time(&s, 1);

            if (ttl == (time_t) NGX_ERROR || ttl < 1 || ttl > 0x7fffffff) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid ttl \"%V\": expected how long a "
                                   "series stays known without being seen, "
                                   "such as ttl=7d", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "pending=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            pending = ngx_parse_time(&s, 1);

            if (pending == (time_t) NGX_ERROR || pending < 1
                || pending > 0x7fffffff)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid pending \"%V\": expected at "
                                   "least the producer's message.timeout.ms, "
                                   "such as pending=60s", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_series_zone_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->name = name;
    ctx->ttl = ttl;
    ctx->pending = pending;

    if (ngx_http_promgate_zone_add(cf, &name, size,
                                   &ngx_http_promgate_series_kind,
                                   &ctx->zone, &pmcf->series_zones)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The kind's part of a zone's initialization: the set, laid out in the
 * largest block of a new zone, or attached as the previous cycle left it.
 */

static ngx_int_t
ngx_http_promgate_series_init_zone(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused)
{
    ngx_http_promgate_series_zone_t *ctx =
        (ngx_http_promgate_series_zone_t *) zone;

    uint64_t                          seed;
    ngx_time_t                       *tp;
    ngx_http_promgate_series_shm_t   *sh;

    sh = zone->sh;

    if (reused) {
        /* a reload with the same size: the series known are kept */

        ctx->set = pg_series_attach(sh->base, sh->size);

        if (ctx->set) {
            /* two aligned words; the old workers may read either value */
            pg_series_configure(ctx->set, (uint32_t) ctx->ttl,
                                (uint32_t) ctx->pending);
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_NOTICE, zone->shm_zone->shm.log, 0,
                      "series zone \"%V\" rebuilt: its layout changed",
                      &ctx->name);

    } else {

        /* one block, as large as the zone allows */

        sh->base = ngx_http_promgate_shm_block(zone->shpool, &sh->size);

        if (sh->base == NULL) {
            goto too_small;
        }
    }

    tp = ngx_timeofday();

    seed = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
           ^ ((uint64_t) tp->msec << 48) ^ (uint64_t) ngx_pid
           ^ (uint64_t) (uintptr_t) sh->base;

    ctx->set = pg_series_init(sh->base, sh->size, (uint64_t) ngx_time(), seed,
                              (uint32_t) ctx->ttl, (uint32_t) ctx->pending);

    if (ctx->set == NULL) {
        goto too_small;
    }

    ngx_log_error(NGX_LOG_INFO, zone->shm_zone->shm.log, 0,
                  "series zone \"%V\" tracks up to %uD series",
                  &ctx->name, pg_series_capacity(sh->size));

    return NGX_OK;

too_small:

    ngx_log_error(NGX_LOG_EMERG, zone->shm_zone->shm.log, 0,
                  "series zone \"%V\" is too small", &ctx->name);

    return NGX_ERROR;
}


/* promgate_series_index NAME topic=TOPIC */

char *
ngx_http_promgate_series_index(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_loc_conf_t  *plcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (plcf->series_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "topic=", 6) == 0) {
            plcf->series_topic.data = value[i].data + 6;
            plcf->series_topic.len = value[i].len - 6;

            if (plcf->series_topic.len == 0
                || plcf->series_topic.len > 249)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid topic \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (plcf->series_topic.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_series_index\" needs the Kafka topic "
                           "new series are published to: "
                           "promgate_series_index %V topic=NAME", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* an undefined zone, or one of another kind, is refused by nginx */

    plcf->series_zone = ngx_shared_memory_add(cf, &value[1], 0,
                                              &ngx_http_promgate_series_kind);
    if (plcf->series_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* ------------------------------------------------------------ a write */


/*
 * The scan's per-series callback: the series is hashed, and looked up with
 * the ones before it, PG_SERIES_BATCH at a time (one lock, the zone's
 * memory fetched for all of them at once).  A known series is refreshed;
 * one not in the set is copied out of the decoded body, to be offered if
 * the write is answered 2xx.  Out of memory, the index skips the rest of
 * this write (later writes offer those series); it never fails a write.
 */

int
ngx_http_promgate_series_collect(ngx_http_promgate_write_ctx_t *ctx,
    const pg_rw_series_t *s)
{
    size_t                             n;
    ngx_uint_t                         k;
    pg_str_t                           tenant;
    pg_label_t                        *labels;
    pg_allocator_t                     alloc;
    ngx_http_promgate_series_zone_t   *zone;
    ngx_http_promgate_series_write_t  *sw;

    sw = ctx->series;

    if (sw == NULL) {
        zone = ctx->plcf->series_zone->data;

        if (zone->set == NULL) {
            return 0;
        }

        sw = ngx_pcalloc(ctx->request->pool,
                         sizeof(ngx_http_promgate_series_write_t));
        if (sw == NULL) {
            return 0;
        }

        if (ngx_array_init(&sw->news, ctx->request->pool, 8,
                           sizeof(ngx_http_promgate_series_new_t))
            != NGX_OK)
        {
            return 0;
        }

        tenant.data = ctx->tenant.data;
        tenant.len = ctx->tenant.len;

        sw->zone = zone;
        sw->tenant = pg_series_tenant_hash(tenant);
        sw->tenant_name = tenant;

        ctx->series = sw;
    }

    if (sw->failed) {
        return 0;
    }

    k = sw->nbatch;

    /*
     * promgate_tenant_label: the series' tenant when it names one, and
     * with drop, the series as that tenant's storage holds it: without
     * the label (as the exemplar zone keeps it)
     */

    if (ctx->route && ctx->route->tenant.len) {
        sw->tenants[k] = pg_series_tenant_hash(ctx->route->tenant);
        sw->names[k] = ctx->route->tenant;
        sw->drop[k] = ctx->plcf->tenant_drop ? 1 : 0;

    } else {
        sw->tenants[k] = sw->tenant;
        sw->names[k] = sw->tenant_name;
        sw->drop[k] = 0;
    }

    pg_rw_series_labels(s, &sw->labels[k]);

    if (s->unsorted || sw->drop[k]) {
        /* the identity of the label set Prometheus stores: sorted */
        alloc.alloc = ngx_http_promgate_pool_alloc;
        alloc.ctx = ctx->request->pool;

        labels = pg_rw_copy_labels(sw->labels[k], &alloc, &n, 1);
        if (labels == NULL) {
            return 0;
        }

        if (sw->drop[k]) {
            n = pg_rw_labels_drop(labels, n,
                                  ctx->route->router->tenant_label);
        }

        pg_series_hash(labels, n, &sw->ids[k]);

    } else {
        pg_series_hash_iter(sw->labels[k], &sw->ids[k]);
    }

    if (++sw->nbatch == PG_SERIES_BATCH) {
        ngx_http_promgate_series_flush(ctx);
    }

    return 0;
}


/*
 * Looks the batch up; called by the collector and once the scan is over,
 * while the decoded body is still there.
 */

void
ngx_http_promgate_series_flush(ngx_http_promgate_write_ctx_t *ctx)
{
    ngx_uint_t                         i;
    pg_allocator_t                     alloc;
    ngx_http_promgate_series_new_t    *n;
    ngx_http_promgate_series_write_t  *sw;

    u_char                             states[PG_SERIES_BATCH];

    sw = ctx->series;

    if (sw == NULL || sw->nbatch == 0) {
        return;
    }

    ngx_shmtx_lock(&sw->zone->zone.shpool->mutex);
    pg_series_check_batch_tenants(sw->zone->set, sw->tenants, sw->ids,
                                  sw->nbatch, (uint64_t) ngx_time(), states);
    ngx_shmtx_unlock(&sw->zone->zone.shpool->mutex);

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = ctx->request->pool;

    for (i = 0; i < sw->nbatch; i++) {
        if (states[i] != PG_SERIES_NEW) {
            continue;
        }

        n = ngx_array_push(&sw->news);
        if (n == NULL) {
            goto failed;
        }

        n->id = sw->ids[i];
        n->tenant = sw->tenants[i];
        n->tenant_name = sw->names[i];
        n->token = 0;
        n->labels = pg_rw_copy_labels(sw->labels[i], &alloc, &n->nlabels,
                                      1);

        if (n->labels == NULL) {
            sw->news.nelts--;
            goto failed;
        }

        if (sw->drop[i]) {
            n->nlabels = pg_rw_labels_drop(n->labels, n->nlabels,
                                           ctx->route->router->tenant_label);
        }
    }

    sw->nbatch = 0;

    return;

failed:

    sw->nbatch = 0;
    sw->failed = 1;

    ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                  "promgate: series index: out of memory, the new series "
                  "of this write are not published now (later writes "
                  "offer them)");
}


/*
 * The write was answered 2xx: its new series become pending in the zone
 * (one lock for all) and are produced to Kafka, with no wait.
 */

void
ngx_http_promgate_series_publish(ngx_http_promgate_write_ctx_t *ctx)
{
    uint64_t                           now;
    ngx_uint_t                         i;
    ngx_http_promgate_series_new_t    *n;
    ngx_http_promgate_series_zone_t   *zone;
    ngx_http_promgate_series_write_t  *sw;
    int64_t                            ms;
    ngx_int_t                          rc;
    ngx_str_t                          key, value;
    ngx_time_t                        *tp;
    pg_json_buf_t                      json;
    pg_allocator_t                     alloc;
    ngx_http_promgate_series_msg_t    *m;

    u_char                             hex[PG_SERIES_KEY_LEN];
    static time_t                      logged;

    sw = ctx->series;

    if (sw == NULL || sw->news.nelts == 0) {
        return;
    }

    zone = sw->zone;
    n = sw->news.elts;
    now = (uint64_t) ngx_time();

    ngx_shmtx_lock(&zone->zone.shpool->mutex);

    for (i = 0; i < sw->news.nelts; i++) {

        /* a write of many new series passes the lock on now and then */

        if (i && i % (4 * PG_SERIES_BATCH) == 0) {
            ngx_http_promgate_shmtx_pass(&zone->zone.shpool->mutex);
        }

        n[i].token = pg_series_offer(zone->set, n[i].tenant, &n[i].id, now);
    }

    ngx_shmtx_unlock(&zone->zone.shpool->mutex);


    tp = ngx_timeofday();
    ms = (int64_t) tp->sec * 1000 + tp->msec;

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = ctx->request->pool;

    key.data = hex;
    key.len = PG_SERIES_KEY_LEN;

    for (i = 0; i < sw->news.nelts; i++) {
        if (n[i].token == 0) {
            continue;           /* someone else offered it */
        }

        pg_series_key(n[i].id.hash, hex);

        pg_json_init(&json, alloc);
        pg_series_json(&json, n[i].labels, n[i].nlabels, n[i].tenant_name,
                       ms);

        m = ngx_alloc(sizeof(ngx_http_promgate_series_msg_t),
                      ctx->request->connection->log);

        if (json.failed || m == NULL) {
            if (m) {
                ngx_free(m);
            }

            ngx_http_promgate_series_drop(zone, n[i].tenant, &n[i],
                                          PG_SERIES_FAILED);
            continue;
        }

        value.data = json.data;
        value.len = json.len;

        m->zone = zone;
        m->tenant = n[i].tenant;
        m->hash = n[i].id.hash;
        m->token = n[i].token;

        rc = ngx_http_promgate_kafka_produce(
                 &ctx->plcf->series_topic, &key, &value, m,
                 ngx_http_promgate_series_delivered);

        if (rc == NGX_OK) {
            continue;
        }

        ngx_free(m);

        ngx_http_promgate_series_drop(zone, n[i].tenant, &n[i],
                                      rc == NGX_BUSY ? PG_SERIES_OVERFLOW
                                                     : PG_SERIES_FAILED);

        if (logged != ngx_time()) {
            logged = ngx_time();

            ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                          "promgate: series index: new series not published "
                          "to topic \"%V\": %s; later writes offer them "
                          "again", &ctx->plcf->series_topic,
                          rc == NGX_BUSY ? "the producer's queue is full"
                          : rc == NGX_DECLINED ? "no Kafka producer (set "
                                                 "promgate_kafka_brokers)"
                          : "the producer refused them");
        }
    }


    sw->news.nelts = 0;
}


static void
ngx_http_promgate_series_drop(ngx_http_promgate_series_zone_t *zone,
    uint64_t tenant, ngx_http_promgate_series_new_t *n, pg_series_drop_e why)
{
    ngx_shmtx_lock(&zone->zone.shpool->mutex);
    (void) pg_series_drop(zone->set, tenant, n->id.hash, n->token, why);
    ngx_shmtx_unlock(&zone->zone.shpool->mutex);
}



/*
 * The delivery report, from the worker's event loop: the broker has the
 * message (the series is seen), or it never will (the series is
 * forgotten, the next write carrying it offers it again).
 */

static void
ngx_http_promgate_series_delivered(void *opaque, ngx_int_t rc,
    const char *err)
{
    ngx_http_promgate_series_msg_t *m = opaque;

    ngx_http_promgate_series_zone_t  *zone;

    static time_t                     logged;

    zone = m->zone;

    ngx_shmtx_lock(&zone->zone.shpool->mutex);

    if (rc == NGX_OK) {
        (void) pg_series_confirm(zone->set, m->tenant, m->hash, m->token,
                                 (uint64_t) ngx_time());

    } else {
        (void) pg_series_drop(zone->set, m->tenant, m->hash, m->token,
                              PG_SERIES_FAILED);
    }

    ngx_shmtx_unlock(&zone->zone.shpool->mutex);

    if (rc != NGX_OK && logged != ngx_time()) {
        logged = ngx_time();

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "promgate: series index: a new series of zone \"%V\" "
                      "was not delivered to Kafka (%s); later writes offer "
                      "it again", &zone->name, err ? err : "unknown error");
    }

    ngx_free(m);
}



/* ----------------------------------------------------------- status */


static ngx_http_promgate_metric_t  ngx_http_promgate_series_metrics[] = {
    { "promgate_series_zone_entries", "gauge",
      "Series the index tracks, pending ones included.",
      offsetof(pg_series_stats_t, entries) },
    { "promgate_series_zone_capacity", "gauge",
      "Series the index can track; beyond, the least recently seen go.",
      offsetof(pg_series_stats_t, capacity) },
    { "promgate_series_zone_pending", "gauge",
      "New series produced to Kafka and not yet confirmed.",
      offsetof(pg_series_stats_t, pending) },
    { "promgate_series_new_total", "counter",
      "New series of writes answered 2xx, offered to Kafka.",
      offsetof(pg_series_stats_t, offered) },
    { "promgate_series_published_total", "counter",
      "New series Kafka confirmed.",
      offsetof(pg_series_stats_t, published) },
    { "promgate_series_failed_total", "counter",
      "New series Kafka did not take (offered again by later writes).",
      offsetof(pg_series_stats_t, failed) },
    { "promgate_series_queue_overflow_total", "counter",
      "New series not produced because the producer's queue was full "
      "(offered again by later writes).",
      offsetof(pg_series_stats_t, overflow) },
    { "promgate_series_evictions_total", "counter",
      "Series forgotten within their ttl to make room.",
      offsetof(pg_series_stats_t, evictions) },
    { "promgate_series_expired_total", "counter",
      "Series forgotten after their ttl, or offers never confirmed.",
      offsetof(pg_series_stats_t, expired) },
    { "promgate_series_collisions_total", "counter",
      "Lookups of a series whose hash a different label set already "
      "holds (64-bit hash collisions detected).",
      offsetof(pg_series_stats_t, collisions) },
    { "promgate_series_zone_repairs_total", "counter",
      "Times the index was emptied because a worker died while changing "
      "it (its series are announced again).",
      offsetof(pg_series_stats_t, repairs) },
};


void
ngx_http_promgate_series_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_http_promgate_text_zones(t, ngx_http_promgate_series_metrics,
                                 sizeof(ngx_http_promgate_series_metrics)
                                 / sizeof(ngx_http_promgate_metric_t),
                                 data, ngx_http_promgate_series_values,
                                 sizeof(pg_series_stats_t));
}


static ngx_int_t
ngx_http_promgate_series_values(ngx_http_promgate_zone_t *zone, void *values)
{
    ngx_http_promgate_series_zone_t *ctx =
        (ngx_http_promgate_series_zone_t *) zone;

    if (ctx->set == NULL) {
        return NGX_DECLINED;
    }

    pg_series_stats(ctx->set, values);

    return NGX_OK;
}
