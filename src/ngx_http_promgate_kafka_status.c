
/*
 * promgate: the Kafka consumers' counters, in their own small shared zone
 * (summed over workers, kept across reloads by group and topics), and
 * their part of the status page, registered with the zone.
 */


#include "ngx_http_promgate_kafka.h"
#include "ngx_http_promgate_module.h"


#define NGX_HTTP_PROMGATE_KAFKA_STATUS_MAGIC   0x50474b53u    /* "PGKS" */
#define NGX_HTTP_PROMGATE_KAFKA_STATUS_LAYOUT  2    /* 6 poison reasons */


typedef struct {
    ngx_http_promgate_shm_t           shm;
    ngx_http_promgate_kafka_stats_t   stats;
} ngx_http_promgate_kafka_status_shm_t;


typedef struct {
    ngx_http_promgate_zone_t          zone;     /* first: see util.h */
    ngx_array_t                      *keys;
} ngx_http_promgate_kafka_status_zone_t;


static ngx_int_t ngx_http_promgate_kafka_status_init_zone(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);
static void ngx_http_promgate_kafka_status(ngx_http_promgate_text_t *t,
    void *data);


static ngx_http_promgate_zone_kind_t  ngx_http_promgate_kafka_status_kind = {
    "promgate_kafka_status",
    "Kafka status zone",
    NGX_HTTP_PROMGATE_KAFKA_STATUS_MAGIC,
    NGX_HTTP_PROMGATE_KAFKA_STATUS_LAYOUT,
    sizeof(ngx_http_promgate_kafka_status_shm_t),
    ngx_http_promgate_kafka_status_init_zone
};


static ngx_http_promgate_kafka_stats_t  *ngx_http_promgate_kafka_stats_ptr;
static ngx_slab_pool_t                  *ngx_http_promgate_kafka_shpool;
static ngx_http_promgate_kafka_cstats_t  ngx_http_promgate_kafka_cstats_dummy;


/* as ngx_http_promgate_kafka_poison_e */
static const char  *ngx_http_promgate_kafka_poison_names[] = {
    "malformed",
    "snappy",
    "too_large",
    "json",
    "tenant",
    "rejected"
};


/* the zone, and the consumers' part of the status page */

ngx_int_t
ngx_http_promgate_kafka_status_init(ngx_conf_t *cf, ngx_array_t *keys)
{
    size_t                                  size;
    ngx_str_t                               name;
    ngx_http_promgate_kafka_status_zone_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_kafka_status_zone_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->keys = keys;

    ngx_str_set(&name, "promgate_kafka_status");

    size = ngx_align(sizeof(ngx_slab_pool_t)
                     + sizeof(ngx_http_promgate_kafka_status_shm_t),
                     ngx_pagesize)
           + 8 * ngx_pagesize;

    if (ngx_http_promgate_zone_add(cf, &name, size,
                                   &ngx_http_promgate_kafka_status_kind,
                                   &ctx->zone, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_promgate_status_add(cf, ngx_http_promgate_kafka_status,
                                        ctx);
}


static ngx_int_t
ngx_http_promgate_kafka_key_is(ngx_http_promgate_kafka_cstats_t *cs,
    ngx_http_promgate_kafka_stats_key_t *key)
{
    return ngx_strlen(cs->group) == key->group.len
           && ngx_strncmp(cs->group, key->group.data, key->group.len) == 0
           && ngx_strlen(cs->topics) == key->topics.len
           && ngx_strncmp(cs->topics, key->topics.data, key->topics.len)
              == 0;
}


static ngx_int_t
ngx_http_promgate_kafka_status_init_zone(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused)
{
    ngx_array_t *keys = ((ngx_http_promgate_kafka_status_zone_t *) zone)->keys;

    ngx_uint_t                              i, j, free, keep;
    ngx_http_promgate_kafka_stats_key_t   **kp;
    ngx_http_promgate_kafka_cstats_t       *cs;
    ngx_http_promgate_kafka_pstats_t       *ps;
    ngx_http_promgate_kafka_status_shm_t   *sh;

    sh = zone->sh;

    ngx_http_promgate_kafka_stats_ptr = &sh->stats;
    ngx_http_promgate_kafka_shpool = zone->shpool;

    /* consumers keep their slot by group and topics across reloads */

    kp = keys->elts;

    for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS; i++) {
        cs = &sh->stats.consumers[i];

        if (!cs->used) {
            continue;
        }

        keep = 0;

        for (j = 0; j < keys->nelts; j++) {
            if (ngx_http_promgate_kafka_key_is(cs, kp[j])) {
                keep = 1;
                break;
            }
        }

        if (!keep) {
            cs->used = 0;
        }
    }

    for (j = 0; j < keys->nelts; j++) {
        free = NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS;

        for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS; i++) {
            cs = &sh->stats.consumers[i];

            if (!cs->used) {
                if (free == NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS) {
                    free = i;
                }
                continue;
            }

            if (ngx_http_promgate_kafka_key_is(cs, kp[j])) {
                break;
            }
        }

        if (i == NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS) {
            if (free == NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS) {
                return NGX_ERROR;   /* checked when parsing */
            }

            i = free;
            cs = &sh->stats.consumers[i];

            ngx_memzero(cs, sizeof(ngx_http_promgate_kafka_cstats_t));
            ngx_memcpy(cs->group, kp[j]->group.data, kp[j]->group.len);
            ngx_memcpy(cs->topics, kp[j]->topics.data, kp[j]->topics.len);
            cs->used = 1;
        }

        kp[j]->slot = i;
    }

    /* partitions of consumers gone, and owners that are gone */

    for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS; i++) {
        ps = &sh->stats.partitions[i];

        if (ps->used && !sh->stats.consumers[ps->consumer].used) {
            ps->used = 0;
        }
    }

    return NGX_OK;
}


ngx_http_promgate_kafka_cstats_t *
ngx_http_promgate_kafka_cstats(ngx_uint_t slot)
{
    if (ngx_http_promgate_kafka_stats_ptr == NULL
        || slot >= NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS)
    {
        return &ngx_http_promgate_kafka_cstats_dummy;
    }

    return &ngx_http_promgate_kafka_stats_ptr->consumers[slot];
}


/* the slot of a partition, found or taken; NULL when all are taken */

ngx_http_promgate_kafka_pstats_t *
ngx_http_promgate_kafka_pstats_get(ngx_uint_t consumer, const char *topic,
    int32_t partition)
{
    size_t                             len;
    ngx_uint_t                         i, free;
    ngx_http_promgate_kafka_pstats_t  *ps;

    if (ngx_http_promgate_kafka_stats_ptr == NULL) {
        return NULL;
    }

    len = ngx_strlen(topic);

    if (len >= NGX_HTTP_PROMGATE_KAFKA_NAME) {
        return NULL;
    }

    ngx_shmtx_lock(&ngx_http_promgate_kafka_shpool->mutex);

    free = NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS;

    for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS; i++) {
        ps = &ngx_http_promgate_kafka_stats_ptr->partitions[i];

        if (!ps->used) {
            if (free == NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS) {
                free = i;
            }
            continue;
        }

        if (ps->consumer == consumer
            && ps->partition == (ngx_atomic_t) partition
            && ngx_strcmp(ps->topic, topic) == 0)
        {
            break;
        }
    }

    if (i == NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS) {
        if (free == NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS) {
            ngx_shmtx_unlock(&ngx_http_promgate_kafka_shpool->mutex);
            return NULL;
        }

        ps = &ngx_http_promgate_kafka_stats_ptr->partitions[free];

        ngx_memzero(ps, sizeof(ngx_http_promgate_kafka_pstats_t));
        ngx_memcpy(ps->topic, topic, len + 1);
        ps->consumer = consumer;
        ps->partition = (ngx_atomic_t) partition;
        ps->committed = -1;
        ps->high = -1;
        ps->used = 1;
    }

    ngx_shmtx_unlock(&ngx_http_promgate_kafka_shpool->mutex);

    return ps;
}


ngx_uint_t
ngx_http_promgate_kafka_poison_index(const char *reason)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_NPOISON; i++) {
        if (ngx_strcmp(ngx_http_promgate_kafka_poison_names[i], reason) == 0)
        {
            return i;
        }
    }

    return NGX_HTTP_PROMGATE_KAFKA_POISON_MALFORMED;
}


/* ------------------------------------------------------------ the page */


typedef enum {
    NGX_HTTP_PROMGATE_KAFKA_COUNTER = 0,    /* the field at offset */
    NGX_HTTP_PROMGATE_KAFKA_POSTS,          /* by outcome */
    NGX_HTTP_PROMGATE_KAFKA_POISON,         /* by reason */
    NGX_HTTP_PROMGATE_KAFKA_INFLIGHT,       /* summed over workers */
    NGX_HTTP_PROMGATE_KAFKA_PAUSED,         /* workers paused */
    NGX_HTTP_PROMGATE_KAFKA_ASSIGNED,       /* per partition from here */
    NGX_HTTP_PROMGATE_KAFKA_PPAUSED,
    NGX_HTTP_PROMGATE_KAFKA_COMMITTED,
    NGX_HTTP_PROMGATE_KAFKA_HIGH,
    NGX_HTTP_PROMGATE_KAFKA_LAG
} ngx_http_promgate_kafka_metric_e;


typedef struct {
    char                              *name;
    char                              *type;
    char                              *help;
    ngx_http_promgate_kafka_metric_e   kind;
    size_t                             offset;
} ngx_http_promgate_kafka_metric_t;


#define ngx_http_promgate_kafka_counter(name, help, field)                    \
    { name, "counter", help, NGX_HTTP_PROMGATE_KAFKA_COUNTER,                 \
      offsetof(ngx_http_promgate_kafka_cstats_t, field) }


static ngx_http_promgate_kafka_metric_t  ngx_http_promgate_kafka_metrics[] = {

    ngx_http_promgate_kafka_counter("promgate_kafka_messages_total",
        "Messages taken from Kafka.", messages),
    ngx_http_promgate_kafka_counter("promgate_kafka_bytes_total",
        "Bytes of the messages taken from Kafka.", bytes),
    ngx_http_promgate_kafka_counter("promgate_kafka_acked_messages_total",
        "Messages stored as the target's ack policy requires (and so "
        "committable).", acked),
    ngx_http_promgate_kafka_counter("promgate_kafka_samples_total",
        "Samples in acknowledged messages.", samples),
    ngx_http_promgate_kafka_counter("promgate_kafka_histograms_total",
        "Native histogram samples in acknowledged messages.", histograms),
    ngx_http_promgate_kafka_counter("promgate_kafka_exemplars_total",
        "Exemplars in acknowledged messages.", exemplars),
    ngx_http_promgate_kafka_counter("promgate_kafka_retries_total",
        "Batches posted again after a 5xx, a timeout or a connection "
        "error.", retries),
    ngx_http_promgate_kafka_counter("promgate_kafka_splits_total",
        "Rejected batches split in halves to find the bad message.", splits),
    ngx_http_promgate_kafka_counter("promgate_kafka_dlq_produced_total",
        "Poison messages the dead-letter topic acknowledged.", dlq_produced),
    ngx_http_promgate_kafka_counter("promgate_kafka_dlq_failed_total",
        "Poison messages that could not be produced to the dead-letter "
        "topic (committed nevertheless).", dlq_failed),
    ngx_http_promgate_kafka_counter("promgate_kafka_rebalances_total",
        "Partition assignments and revocations seen by the workers.",
        rebalances),

    { "promgate_kafka_posts_total", "counter",
      "Batches posted to the target, by outcome: stored (2xx), failed "
      "(5xx, timeout: retried), rejected (400, 409, 413, 415).",
      NGX_HTTP_PROMGATE_KAFKA_POSTS, 0 },

    { "promgate_kafka_poison_total", "counter",
      "Poison messages (never retried, committed, sent to the dead-letter "
      "topic if any), by reason.",
      NGX_HTTP_PROMGATE_KAFKA_POISON, 0 },

    { "promgate_kafka_inflight_messages", "gauge",
      "Messages taken and not yet acknowledged, over all workers.",
      NGX_HTTP_PROMGATE_KAFKA_INFLIGHT, 0 },

    { "promgate_kafka_paused_workers", "gauge",
      "Workers whose consumer is paused because max_in_flight is reached.",
      NGX_HTTP_PROMGATE_KAFKA_PAUSED, 0 },

    { "promgate_kafka_partition_assigned", "gauge",
      "1 if a worker of this instance owns the partition.",
      NGX_HTTP_PROMGATE_KAFKA_ASSIGNED, 0 },

    { "promgate_kafka_partition_paused", "gauge",
      "1 while fetching from the partition is paused (backpressure or "
      "retries).",
      NGX_HTTP_PROMGATE_KAFKA_PPAUSED, 0 },

    { "promgate_kafka_partition_committed_offset", "gauge",
      "The last offset committed for the group (the next message to "
      "read).",
      NGX_HTTP_PROMGATE_KAFKA_COMMITTED, 0 },

    { "promgate_kafka_partition_high_watermark", "gauge",
      "The partition's high watermark, as last fetched.",
      NGX_HTTP_PROMGATE_KAFKA_HIGH, 0 },

    { "promgate_kafka_partition_lag", "gauge",
      "Messages not yet committed: high watermark minus committed "
      "offset.",
      NGX_HTTP_PROMGATE_KAFKA_LAG, 0 },

    { NULL, NULL, NULL, 0, 0 }
};


/* posts_total's outcomes */
static struct {
    char                              *outcome;
    size_t                             offset;
} ngx_http_promgate_kafka_outcomes[] = {
    { "stored", offsetof(ngx_http_promgate_kafka_cstats_t, posts_stored) },
    { "failed", offsetof(ngx_http_promgate_kafka_cstats_t, posts_failed) },
    { "rejected", offsetof(ngx_http_promgate_kafka_cstats_t,
                           posts_rejected) }
};


/* name{group="G",topics="T"[,label="value"]} v */

static void
ngx_http_promgate_kafka_line(ngx_http_promgate_text_t *t, char *name,
    ngx_http_promgate_kafka_cstats_t *cs, char *label, const char *value,
    ngx_atomic_uint_t v)
{
    ngx_http_promgate_label_t  l[3];

    ngx_http_promgate_label_cstr(&l[0], "group", (char *) cs->group);
    ngx_http_promgate_label_cstr(&l[1], "topics", (char *) cs->topics);

    if (label) {
        ngx_http_promgate_label_cstr(&l[2], label, value);
    }

    ngx_http_promgate_text_sample(t, name, l, label ? 3 : 2, "%uA", v);
}


/* name{group="G",topic="T",partition="P"} v */

static void
ngx_http_promgate_kafka_pline(ngx_http_promgate_text_t *t, char *name,
    ngx_http_promgate_kafka_stats_t *st, ngx_http_promgate_kafka_pstats_t *ps,
    ngx_atomic_int_t v)
{
    u_char                     num[NGX_ATOMIC_T_LEN];
    ngx_http_promgate_label_t  l[3];

    ngx_http_promgate_label_cstr(&l[0], "group",
                                 (char *) st->consumers[ps->consumer].group);
    ngx_http_promgate_label_cstr(&l[1], "topic", (char *) ps->topic);

    l[2].name = "partition";
    l[2].value.data = num;
    l[2].value.len = ngx_sprintf(num, "%uA", ps->partition) - num;

    ngx_http_promgate_text_sample(t, name, l, 3, "%A", v);
}


/* a consumer's lines of one metric */

static void
ngx_http_promgate_kafka_consumer_lines(ngx_http_promgate_text_t *t,
    ngx_http_promgate_kafka_metric_t *m, ngx_http_promgate_kafka_cstats_t *cs)
{
    size_t             off;
    ngx_uint_t         k, w;
    const char        *label;
    ngx_atomic_uint_t  v;

    switch (m->kind) {

    case NGX_HTTP_PROMGATE_KAFKA_POSTS:
        for (k = 0; k < 3; k++) {
            label = ngx_http_promgate_kafka_outcomes[k].outcome;
            off = ngx_http_promgate_kafka_outcomes[k].offset;
            v = *(ngx_atomic_t *) ((u_char *) cs + off);

            ngx_http_promgate_kafka_line(t, m->name, cs, "outcome", label, v);
        }

        return;

    case NGX_HTTP_PROMGATE_KAFKA_POISON:
        for (k = 0; k < NGX_HTTP_PROMGATE_KAFKA_NPOISON; k++) {
            label = ngx_http_promgate_kafka_poison_names[k];

            ngx_http_promgate_kafka_line(t, m->name, cs, "reason", label,
                                         cs->poison[k]);
        }

        return;

    case NGX_HTTP_PROMGATE_KAFKA_INFLIGHT:
    case NGX_HTTP_PROMGATE_KAFKA_PAUSED:
        v = 0;

        for (w = 0; w < NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS; w++) {
            if (m->kind == NGX_HTTP_PROMGATE_KAFKA_INFLIGHT) {
                v += cs->inflight[w];

            } else {
                v += cs->paused[w] ? 1 : 0;
            }
        }

        break;

    default: /* NGX_HTTP_PROMGATE_KAFKA_COUNTER */
        v = *(ngx_atomic_t *) ((u_char *) cs + m->offset);
        break;
    }

    ngx_http_promgate_kafka_line(t, m->name, cs, NULL, NULL, v);
}


/* a partition's value of one metric; NGX_DECLINED: not shown */

static ngx_int_t
ngx_http_promgate_kafka_partition_value(ngx_http_promgate_kafka_metric_t *m,
    ngx_http_promgate_kafka_pstats_t *ps, ngx_atomic_int_t *v)
{
    switch (m->kind) {

    case NGX_HTTP_PROMGATE_KAFKA_ASSIGNED:
        *v = ps->owner ? 1 : 0;
        return NGX_OK;

    case NGX_HTTP_PROMGATE_KAFKA_PPAUSED:
        *v = ps->paused ? 1 : 0;
        return ps->owner ? NGX_OK : NGX_DECLINED;

    case NGX_HTTP_PROMGATE_KAFKA_COMMITTED:
        *v = ps->committed;
        return ps->committed >= 0 ? NGX_OK : NGX_DECLINED;

    case NGX_HTTP_PROMGATE_KAFKA_HIGH:
        *v = ps->high;
        return ps->high >= 0 ? NGX_OK : NGX_DECLINED;

    default: /* NGX_HTTP_PROMGATE_KAFKA_LAG */
        *v = ps->high - ps->committed;

        if (*v < 0) {
            *v = 0;
        }

        return (ps->high >= 0 && ps->committed >= 0) ? NGX_OK : NGX_DECLINED;
    }
}


static void
ngx_http_promgate_kafka_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_http_promgate_kafka_status_zone_t *ctx = data;

    ngx_uint_t                         i;
    ngx_atomic_int_t                   v;
    ngx_http_promgate_kafka_metric_t  *m;
    ngx_http_promgate_kafka_stats_t   *st;
    ngx_http_promgate_kafka_cstats_t  *cs;
    ngx_http_promgate_kafka_pstats_t  *ps;

    st = &((ngx_http_promgate_kafka_status_shm_t *) ctx->zone.sh)->stats;

    for (m = ngx_http_promgate_kafka_metrics; m->name; m++) {
        ngx_http_promgate_text_family(t, m->name, m->type, m->help);

        if (m->kind < NGX_HTTP_PROMGATE_KAFKA_ASSIGNED) {
            for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS; i++) {
                cs = &st->consumers[i];

                if (cs->used) {
                    ngx_http_promgate_kafka_consumer_lines(t, m, cs);
                }
            }

            continue;
        }

        for (i = 0; i < NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS; i++) {
            ps = &st->partitions[i];

            if (ps->used
                && ngx_http_promgate_kafka_partition_value(m, ps, &v)
                   == NGX_OK)
            {
                ngx_http_promgate_kafka_pline(t, m->name, st, ps, v);
            }
        }
    }
}
