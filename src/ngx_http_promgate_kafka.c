
/*
 * promgate: a Kafka consumer (and producer) in every worker.
 *
 * ngx_http_promgate_kafka_module is a second nginx module in promgate's
 * .so, with its own directives and main configuration.  Each worker, in
 * init_process (never the master, never before fork), creates one consumer
 * per promgate_kafka_consumer directive; they join their groups and the
 * partitions spread over every worker of every nginx in the group
 * (cooperative-sticky).  Everything runs on the worker's event loop:
 * librdkafka's queues signal an eventfd registered as an nginx read event,
 * and are drained on each wake-up (librdkafka's logs come back through the
 * same queue and go to nginx's error log from the worker).
 *
 * Messages reach the storages through the target location, the one with
 * promgate_remote_write, exactly as an HTTP write does: they are POSTed as
 * remote-write requests to a unix-domain listener of the target's server.
 * Why a socket and not a subrequest: a subrequest needs a parent request
 * and its connection; a timer-driven fake request has neither a real
 * client connection nor a body reader, and the target's handler, body
 * reading, validation, fan-out, retries, ack policy, limits and logging all
 * assume a real request (lua-nginx-module refuses subrequests from timer
 * requests for these reasons).  Over the socket the consumer is an
 * ordinary client: one implementation of the ingest path, with its status
 * codes as the contract.  The module finds the server holding the target
 * and uses its unix listener, or adds one itself (socket=PATH), so the
 * operator cannot point the consumer at the wrong place.
 *
 * Offsets: per partition only the lowest offset not yet done (stored, or
 * poison handled) is ever stored for commit (pg_kafka_wm_*): a crash
 * re-delivers, it never skips.  Each partition has at most one batch in
 * flight, so samples of a series reach the storages in Kafka order.
 *
 * librdkafka 2.0.2 purges a partition's fetch queue when it is paused and
 * resumes after the last message the application took, so promgate keeps
 * what it took (in flight, waiting for a retry, or for the dead-letter
 * topic) itself and pauses only to stop fetching more.
 */


#include "ngx_http_promgate_kafka.h"
#include "ngx_http_promgate_module.h"

/* after nginx's headers, which set the feature macros (nginx >= 1.25) */
#include <sys/eventfd.h>
#include <signal.h>
#include <pthread.h>


#define NGX_HTTP_PROMGATE_KAFKA_TICK         1000
#define NGX_HTTP_PROMGATE_KAFKA_STALL        10000   /* blocked, then pause */
#define NGX_HTTP_PROMGATE_KAFKA_SHUTDOWN     5000
#define NGX_HTTP_PROMGATE_KAFKA_DESTROY      1000    /* of it, for destroy */
#define NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX    10000
#define NGX_HTTP_PROMGATE_KAFKA_MAX_BATCH    (8 * 1024 * 1024)


typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       value;
} ngx_http_promgate_kafka_property_t;


typedef struct {
    ngx_http_core_srv_conf_t       *cscf;
    ngx_http_core_loc_conf_t       *clcf;
    void                          **loc_conf;
} ngx_http_promgate_kafka_location_t;


typedef struct {
    ngx_http_promgate_kafka_stats_key_t  key;         /* first: see status */

    ngx_array_t                     topics;           /* ngx_str_t */
    ngx_str_t                       group;
    pg_kafka_format_e               format;
    ngx_str_t                       target;
    ngx_uint_t                      max_in_flight;
    ngx_str_t                       dlq;
    ngx_uint_t                      batch;
    ngx_str_t                       socket;
    ngx_str_t                       tenant_header;
    ngx_msec_t                      timeout;

    /* from the target location, at postconfiguration */
    ngx_http_promgate_kafka_endpoint_t  *endpoint;
    ngx_str_t                       host;
    size_t                          max_bytes;
    size_t                          max_decoded;
    ngx_msec_t                      backoff_first;
    ngx_msec_t                      backoff_max;
    rd_kafka_conf_t                *rdconf;

    u_char                         *file;
    ngx_uint_t                      line;
} ngx_http_promgate_kafka_consumer_conf_t;


typedef struct {
    ngx_str_t                       brokers;
    ngx_array_t                     properties;
    ngx_array_t                     consumers;
    ngx_array_t                     keys;
    ngx_array_t                     locations;
    ngx_array_t                     endpoints;
    rd_kafka_conf_t                *producer_conf;
} ngx_http_promgate_kafka_main_conf_t;


typedef struct {
    ngx_flag_t                      unused;
} ngx_http_promgate_kafka_loc_conf_t;


typedef struct ngx_http_promgate_kafka_consumer_s
    ngx_http_promgate_kafka_consumer_t;
typedef struct ngx_http_promgate_kafka_partition_s
    ngx_http_promgate_kafka_partition_t;


/* a message taken from Kafka and not yet done */
typedef struct {
    ngx_queue_t                     queue;        /* in partition->msgs */
    ngx_http_promgate_kafka_partition_t  *part;
    rd_kafka_message_t             *rkm;
    int64_t                         offset;
    uint32_t                        limit;        /* from a split */
    pg_str_t                        tenant;
} ngx_http_promgate_kafka_msg_t;


struct ngx_http_promgate_kafka_partition_s {
    ngx_queue_t                     queue;        /* in consumer's lists */
    ngx_http_promgate_kafka_consumer_t   *consumer;
    char                           *topic;
    int32_t                         partition;

    ngx_queue_t                     msgs;         /* taken, in order */
    pg_kafka_wm_t                   wm;
    int64_t                         stored;
    ngx_uint_t                      pending;      /* post + DLQ deliveries */

    ngx_uint_t                      batch_n;      /* msgs posted */
    pg_rw_stats_t                   batch_stats;
    ngx_pool_t                     *batch_pool;
    ngx_http_promgate_kafka_post_t  post;

    ngx_event_t                     retry;
    ngx_uint_t                      retries;
    ngx_http_promgate_kafka_pstats_t     *ps;

    unsigned                        posting:1;
    unsigned                        failing:1;    /* waiting to retry */
    unsigned                        paused:1;     /* as librdkafka knows */
    unsigned                        revoked:1;
};


struct ngx_http_promgate_kafka_consumer_s {
    ngx_http_promgate_kafka_consumer_conf_t  *conf;
    rd_kafka_t                     *rk;
    rd_kafka_queue_t               *queue;
    ngx_queue_t                     partitions;   /* assigned */
    ngx_queue_t                     revoked;      /* still pending */
    ngx_uint_t                      held;
    ngx_http_promgate_kafka_cstats_t     *cs;
    ngx_msec_t                      blocked_since;
    unsigned                        blocked:1;    /* max_in_flight: not */
                                                  /*   polling */
    unsigned                        paused:1;     /* blocked too long */
    unsigned                        closing:1;
    unsigned                        closed:1;
};


/* a message produced through ngx_http_promgate_kafka_produce() */
typedef struct {
    ngx_http_promgate_kafka_delivery_pt  handler;
    void                           *opaque;
} ngx_http_promgate_kafka_delivery_t;


/* the worker's state */
typedef struct {
    ngx_http_promgate_kafka_main_conf_t  *kmcf;
    ngx_log_t                      *log;
    ngx_http_promgate_kafka_consumer_t   *consumers;
    ngx_uint_t                      nconsumers;
    ngx_connection_t               *notify;       /* the eventfd */
    ngx_event_t                     tick;
    ngx_event_t                     drain;
    ngx_event_t                     deadline;
    ngx_event_t                     done;         /* posted: finish */
    rd_kafka_t                     *producer;
    rd_kafka_queue_t               *producer_queue;
    unsigned                        started:1;
    unsigned                        stopping:1;
    unsigned                        finished:1;
} ngx_http_promgate_kafka_worker_t;


static void *ngx_http_promgate_kafka_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_promgate_kafka_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_promgate_kafka_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_promgate_kafka_init(ngx_conf_t *cf);
static char *ngx_http_promgate_kafka_property(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_promgate_kafka_consumer(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_promgate_kafka_init_process(ngx_cycle_t *cycle);
static void ngx_http_promgate_kafka_exit_process(ngx_cycle_t *cycle);

static void ngx_http_promgate_kafka_drain_all(void);
static void ngx_http_promgate_kafka_partition_send(
    ngx_http_promgate_kafka_partition_t *p);
static void ngx_http_promgate_kafka_poison(
    ngx_http_promgate_kafka_partition_t *p,
    ngx_http_promgate_kafka_msg_t *m, const char *reason, const char *error);
static void ngx_http_promgate_kafka_stop(void);
static void ngx_http_promgate_kafka_step(void);
static void ngx_http_promgate_kafka_finish(ngx_uint_t force);


static ngx_http_promgate_kafka_worker_t  ngx_http_promgate_kafka_w;

/* the debug log of a timer reads its data as a connection: give it one */
static ngx_connection_t  ngx_http_promgate_kafka_no_connection;


static ngx_command_t  ngx_http_promgate_kafka_commands[] = {

    { ngx_string("promgate_kafka_brokers"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_promgate_kafka_main_conf_t, brokers),
      NULL },

    { ngx_string("promgate_kafka_property"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_promgate_kafka_property,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_kafka_consumer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_kafka_consumer,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_promgate_kafka_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_promgate_kafka_init,          /* postconfiguration */

    ngx_http_promgate_kafka_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_promgate_kafka_create_loc_conf, /* create location configuration */
    ngx_http_promgate_kafka_merge_loc_conf /* merge location configuration */
};


ngx_module_t  ngx_http_promgate_kafka_module = {
    NGX_MODULE_V1,
    &ngx_http_promgate_kafka_module_ctx,   /* module context */
    ngx_http_promgate_kafka_commands,      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_promgate_kafka_init_process,  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_promgate_kafka_exit_process,  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * Properties promgate owns: the watermark needs its own offset store and
 * the auto commit of what it stored; logs must come through the queue.
 */
static const char  *ngx_http_promgate_kafka_reserved[] = {
    "enable.auto.offset.store", "enable.auto.commit", "log.queue",
    "group.id", "bootstrap.servers", "metadata.broker.list",
    "enable.partition.eof", NULL
};


/* ------------------------------------------------------ configuration */


static void *
ngx_http_promgate_kafka_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_promgate_kafka_main_conf_t  *kmcf;

    kmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_kafka_main_conf_t));
    if (kmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&kmcf->properties, cf->pool, 4,
                       sizeof(ngx_http_promgate_kafka_property_t))
        != NGX_OK
        || ngx_array_init(&kmcf->consumers, cf->pool, 2,
                          sizeof(ngx_http_promgate_kafka_consumer_conf_t))
           != NGX_OK
        || ngx_array_init(&kmcf->keys, cf->pool, 2,
                          sizeof(ngx_http_promgate_kafka_stats_key_t *))
           != NGX_OK
        || ngx_array_init(&kmcf->locations, cf->pool, 16,
                          sizeof(ngx_http_promgate_kafka_location_t))
           != NGX_OK
        || ngx_array_init(&kmcf->endpoints, cf->pool, 2,
                          sizeof(ngx_http_promgate_kafka_endpoint_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return kmcf;
}


static void *
ngx_http_promgate_kafka_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_kafka_loc_conf_t));
}


/* every location is remembered, to find the target at postconfiguration */

static char *
ngx_http_promgate_kafka_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_core_loc_conf_t             *clcf;
    ngx_http_promgate_kafka_location_t   *loc;
    ngx_http_promgate_kafka_main_conf_t  *kmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->name.len == 0 || clcf->name.data[0] != '/' || clcf->noname
#if (NGX_PCRE)
        || clcf->regex
#endif
        )
    {
        return NGX_CONF_OK;
    }

    kmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_promgate_kafka_module);

    loc = ngx_array_push(&kmcf->locations);
    if (loc == NULL) {
        return NGX_CONF_ERROR;
    }

    loc->cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    loc->clcf = clcf;
    loc->loc_conf = ((ngx_http_conf_ctx_t *) cf->ctx)->loc_conf;

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_kafka_property(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = conf;

    char                                 err[512];
    ngx_str_t                           *value;
    ngx_uint_t                           i;
    rd_kafka_conf_t                     *rc;
    rd_kafka_conf_res_t                  res;
    ngx_http_promgate_kafka_property_t  *prop;

    value = cf->args->elts;

    for (i = 0; ngx_http_promgate_kafka_reserved[i]; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_promgate_kafka_reserved[i])
            == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_kafka_property \"%V\" is set by "
                               "promgate itself (brokers: "
                               "promgate_kafka_brokers; group: the group= "
                               "parameter; offsets are stored by promgate "
                               "and committed automatically)", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    /* librdkafka says what it thinks of the property, right now */

    rc = rd_kafka_conf_new();
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    res = rd_kafka_conf_set(rc, (char *) value[1].data,
                            (char *) value[2].data, err, sizeof(err));
    rd_kafka_conf_destroy(rc);

    if (res != RD_KAFKA_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid promgate_kafka_property \"%V\" \"%V\": "
                           "%s", &value[1], &value[2], err);
        return NGX_CONF_ERROR;
    }

    if (ngx_strcmp(value[1].data, "partition.assignment.strategy") == 0
        && ngx_strstr(value[2].data, "cooperative-sticky")
        && rd_kafka_version() < 0x020300ff)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "cooperative-sticky with librdkafka %s: a worker "
                           "that exits before its first assignment aborts "
                           "(librdkafka #4312, fixed in 2.3.0)",
                           rd_kafka_version_str());
    }

    prop = ngx_array_push(&kmcf->properties);
    if (prop == NULL) {
        return NGX_CONF_ERROR;
    }

    prop->name = value[1];
    prop->value = value[2];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_topic_name(ngx_str_t *name)
{
    ngx_uint_t  i;
    u_char      ch;

    if (name->len == 0 || name->len > 249) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_'
              || ch == '-'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_cstr(ngx_conf_t *cf, ngx_str_t *dst, u_char *src,
    size_t len)
{
    dst->data = ngx_pnalloc(cf->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->data[len] = '\0';
    dst->len = len;

    return NGX_OK;
}


static char *
ngx_http_promgate_kafka_consumer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = conf;

    u_char                                   *p, *last, *start;
    ngx_int_t                                 n, format;
    ngx_str_t                                *value, v, *t, name;
    ngx_uint_t                                i, j;
    ngx_http_promgate_kafka_consumer_conf_t  *cc, *other;

    if (kmcf->consumers.nelts == NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many promgate_kafka_consumer directives "
                           "(at most %d)",
                           NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS);
        return NGX_CONF_ERROR;
    }

    cc = ngx_array_push(&kmcf->consumers);
    if (cc == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(cc, sizeof(ngx_http_promgate_kafka_consumer_conf_t));

    if (ngx_array_init(&cc->topics, cf->pool, 2, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cc->format = PG_KAFKA_FORMAT_AUTO;
    cc->max_in_flight = 1000;
    cc->batch = 100;
    cc->timeout = NGX_CONF_UNSET_MSEC;
    cc->file = cf->conf_file->file.name.data;
    cc->line = cf->conf_file->line;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        p = (u_char *) ngx_strchr(value[i].data, '=');
        if (p == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = p - value[i].data;
        v.data = p + 1;
        v.len = value[i].data + value[i].len - v.data;

#define ngx_http_promgate_kafka_is(s)                                         \
    (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

        if (ngx_http_promgate_kafka_is("topic")) {
            if (cc->topics.nelts) {
                goto duplicate;
            }

            last = v.data + v.len;

            for (start = v.data; start <= last; start = p + 1) {
                p = ngx_strlchr(start, last, ',');
                if (p == NULL) {
                    p = last;
                }

                t = ngx_array_push(&cc->topics);
                if (t == NULL) {
                    return NGX_CONF_ERROR;
                }

                if (ngx_http_promgate_kafka_cstr(cf, t, start, p - start)
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

                if (ngx_http_promgate_kafka_topic_name(t) != NGX_OK) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid topic \"%V\" in \"%V\": a "
                                       "topic is 1 to 249 of "
                                       "[a-zA-Z0-9._-]", t, &value[i]);
                    return NGX_CONF_ERROR;
                }
            }

            cc->key.topics = v;
            continue;
        }

        if (ngx_http_promgate_kafka_is("group")) {
            if (cc->group.len) {
                goto duplicate;
            }

            if (v.len == 0 || v.len >= NGX_HTTP_PROMGATE_KAFKA_NAME) {
                goto invalid;
            }

            if (ngx_http_promgate_kafka_cstr(cf, &cc->group, v.data, v.len)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_http_promgate_kafka_is("format")) {
            format = pg_kafka_format_parse(v.data, v.len);
            if (format < 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid format \"%V\": expected auto, "
                                   "prompb, prompb-snappy, prompb-v2 or "
                                   "json", &v);
                return NGX_CONF_ERROR;
            }

            cc->format = format;
            continue;
        }

        if (ngx_http_promgate_kafka_is("target")) {
            if (v.len == 0 || v.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid target \"%V\": expected the URI "
                                   "of a location with "
                                   "promgate_remote_write, such as "
                                   "/api/v1/write", &v);
                return NGX_CONF_ERROR;
            }

            cc->target = v;
            continue;
        }

        if (ngx_http_promgate_kafka_is("max_in_flight")
            || ngx_http_promgate_kafka_is("batch"))
        {
            n = ngx_atoi(v.data, v.len);

            if (n < 1 || n > 1000000
                || (ngx_http_promgate_kafka_is("batch") && n > 100000))
            {
                goto invalid;
            }

            if (ngx_http_promgate_kafka_is("batch")) {
                cc->batch = n;
            } else {
                cc->max_in_flight = n;
            }

            continue;
        }

        if (ngx_http_promgate_kafka_is("dlq")) {
            if (ngx_http_promgate_kafka_cstr(cf, &cc->dlq, v.data, v.len)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            if (ngx_http_promgate_kafka_topic_name(&cc->dlq) != NGX_OK) {
                goto invalid;
            }

            continue;
        }

        if (ngx_http_promgate_kafka_is("socket")) {
            if (v.len > 5 && ngx_strncmp(v.data, "unix:", 5) == 0) {
                v.data += 5;
                v.len -= 5;
            }

            if (v.len == 0 || v.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid socket \"%V\": expected the "
                                   "absolute path of a unix socket", &v);
                return NGX_CONF_ERROR;
            }

            if (ngx_http_promgate_kafka_cstr(cf, &cc->socket, v.data, v.len)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_http_promgate_kafka_is("tenant_header")) {
            for (j = 0; j < v.len; j++) {
                if (!((v.data[j] >= 'a' && v.data[j] <= 'z')
                      || (v.data[j] >= 'A' && v.data[j] <= 'Z')
                      || (v.data[j] >= '0' && v.data[j] <= '9')
                      || v.data[j] == '-' || v.data[j] == '_'))
                {
                    break;
                }
            }

            if (v.len == 0 || j < v.len) {
                goto invalid;
            }

            if (ngx_http_promgate_kafka_cstr(cf, &cc->tenant_header, v.data,
                                             v.len)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_http_promgate_kafka_is("timeout")) {
            cc->timeout = ngx_parse_time(&v, 0);

            if (cc->timeout == (ngx_msec_t) NGX_ERROR || cc->timeout == 0) {
                goto invalid;
            }

            continue;
        }

#undef ngx_http_promgate_kafka_is

        goto invalid;
    }

    if (cc->topics.nelts == 0 || cc->group.len == 0 || cc->target.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "promgate_kafka_consumer needs topic=, group= "
                           "and target=");
        return NGX_CONF_ERROR;
    }

    if (cc->key.topics.len >= NGX_HTTP_PROMGATE_KAFKA_NAME) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the topic list \"%V\" is longer than %d bytes",
                           &cc->key.topics, NGX_HTTP_PROMGATE_KAFKA_NAME - 1);
        return NGX_CONF_ERROR;
    }

    if (cc->batch > cc->max_in_flight) {
        cc->batch = cc->max_in_flight;
    }

    cc->key.group = cc->group;

    other = kmcf->consumers.elts;

    for (i = 0; i + 1 < kmcf->consumers.nelts; i++) {
        if (other[i].group.len == cc->group.len
            && ngx_strcmp(other[i].group.data, cc->group.data) == 0
            && other[i].key.topics.len == cc->key.topics.len
            && ngx_strncmp(other[i].key.topics.data, cc->key.topics.data,
                           cc->key.topics.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_kafka_consumer for group \"%V\" "
                               "and topics \"%V\" is duplicate",
                               &cc->group, &cc->key.topics);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is duplicate",
                       &value[i]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);

    return NGX_CONF_ERROR;
}


/* ---------------------------------------------- postconfiguration */


static ngx_http_promgate_kafka_location_t *
ngx_http_promgate_kafka_find_target(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf,
    ngx_http_promgate_kafka_consumer_conf_t *cc)
{
    ngx_str_t                            *uri;
    ngx_uint_t                            i, j, seen, matches;
    ngx_http_core_loc_conf_t             *clcf;
    ngx_http_promgate_loc_conf_t         *plcf;
    ngx_http_promgate_kafka_location_t   *loc, *best, *found;

    /*
     * Per server, the location nginx picks for the URI among exact and
     * prefix locations (regex ones are not considered): the consumer's
     * requests arrive on the target server's own listener.
     */

    uri = &cc->target;
    loc = kmcf->locations.elts;
    found = NULL;
    matches = 0;

    for (i = 0; i < kmcf->locations.nelts; i++) {

        seen = 0;
        for (j = 0; j < i; j++) {
            if (loc[j].cscf == loc[i].cscf) {
                seen = 1;
                break;
            }
        }

        if (seen) {
            continue;
        }

        best = NULL;

        for (j = i; j < kmcf->locations.nelts; j++) {
            clcf = loc[j].clcf;

            if (loc[j].cscf != loc[i].cscf || clcf->name.len > uri->len
                || ngx_strncmp(clcf->name.data, uri->data, clcf->name.len)
                   != 0)
            {
                continue;
            }

            if (clcf->exact_match) {
                if (clcf->name.len == uri->len) {
                    best = &loc[j];
                    break;
                }

                continue;
            }

            if (best == NULL || clcf->name.len > best->clcf->name.len) {
                best = &loc[j];
            }
        }

        if (best == NULL) {
            continue;
        }

        plcf = best->loc_conf[ngx_http_promgate_module.ctx_index];

        if (plcf == NULL || plcf->remote_write != 1) {
            continue;
        }

        matches++;

        if (found == NULL) {
            found = best;
        }
    }

    if (matches == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" matches no "
                      "location with \"promgate_remote_write\" in %s:%ui",
                      uri, cc->file, cc->line);
        return NULL;
    }

    if (matches > 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" matches "
                      "\"promgate_remote_write\" locations in %ui servers: "
                      "keep one in %s:%ui", uri, matches, cc->file,
                      cc->line);
        return NULL;
    }

    if (found->clcf->internal) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" is an internal "
                      "location: the consumer posts to it as a client does, "
                      "in %s:%ui", uri, cc->file, cc->line);
        return NULL;
    }

    return found;
}


static ngx_int_t
ngx_http_promgate_kafka_has_server(ngx_http_conf_addr_t *addr,
    ngx_http_core_srv_conf_t *cscf)
{
    ngx_uint_t                  i;
    ngx_http_core_srv_conf_t  **s;

    s = addr->servers.elts;

    for (i = 0; i < addr->servers.nelts; i++) {
        if (s[i] == cscf) {
            return 1;
        }
    }

    return 0;
}


/*
 * A unix socket left by an nginx that was killed makes bind() fail with
 * "Address already in use".  Only a socket file nothing listens on is
 * removed, and never by "nginx -t".
 */

static void
ngx_http_promgate_kafka_stale_socket(ngx_conf_t *cf, u_char *path,
    struct sockaddr *sa, socklen_t socklen)
{
    int              fd, rc;
    ngx_err_t        err;
    ngx_file_info_t  fi;

    if (ngx_test_config || ngx_file_info(path, &fi) == NGX_FILE_ERROR
        || !S_ISSOCK(fi.st_mode))
    {
        return;
    }

    fd = socket(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return;
    }

    rc = connect(fd, sa, socklen);
    err = ngx_socket_errno;
    close(fd);

    if (rc == -1 && err == NGX_ECONNREFUSED) {
        if (ngx_delete_file(path) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_WARN, cf->log, ngx_errno,
                          "promgate: could not remove the stale unix socket "
                          "\"%s\"", path);
            return;
        }

        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "promgate: removed the stale unix socket \"%s\" "
                      "(nothing listened on it)", path);
    }
}


static ngx_http_promgate_kafka_endpoint_t *
ngx_http_promgate_kafka_endpoint(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf,
    ngx_http_promgate_kafka_consumer_conf_t *cc,
    ngx_http_promgate_kafka_location_t *target)
{
    ngx_url_t                             u;
    ngx_uint_t                            i, j;
    struct sockaddr                      *sa;
    socklen_t                             socklen;
    ngx_http_conf_port_t                 *port;
    ngx_http_conf_addr_t                 *addr, *found;
    ngx_http_listen_opt_t                 lsopt;
    ngx_http_core_main_conf_t            *cmcf;
    ngx_http_promgate_kafka_endpoint_t   *ep, **epp;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    found = NULL;
    sa = NULL;
    socklen = 0;

    if (cc->socket.len) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.len = sizeof("unix:") - 1 + cc->socket.len;
        u.url.data = ngx_pnalloc(cf->pool, u.url.len + 1);
        if (u.url.data == NULL) {
            return NULL;
        }

        ngx_sprintf(u.url.data, "unix:%V%Z", &cc->socket);
        u.listen = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs != 1) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer socket \"%V\": %s in "
                          "%s:%ui", &cc->socket,
                          u.err ? u.err : "invalid path", cc->file, cc->line);
            return NULL;
        }

        sa = u.addrs[0].sockaddr;
        socklen = u.addrs[0].socklen;
    }

    port = cmcf->ports ? cmcf->ports->elts : NULL;

    for (i = 0; port && i < cmcf->ports->nelts && found == NULL; i++) {
        if (port[i].family != AF_UNIX) {
            continue;
        }

        addr = port[i].addrs.elts;

        for (j = 0; j < port[i].addrs.nelts; j++) {

            if (sa) {
                if (ngx_cmp_sockaddr(sa, socklen, addr[j].opt.sockaddr,
                                     addr[j].opt.socklen, 0)
                    != NGX_OK)
                {
                    continue;
                }

                if (!ngx_http_promgate_kafka_has_server(&addr[j],
                                                        target->cscf))
                {
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "promgate_kafka_consumer socket \"%V\" is "
                                  "a listener of another server than the "
                                  "one of target \"%V\" in %s:%ui",
                                  &cc->socket, &cc->target, cc->file,
                                  cc->line);
                    return NULL;
                }

                found = &addr[j];
                break;
            }

            if (ngx_http_promgate_kafka_has_server(&addr[j], target->cscf)) {
                found = &addr[j];
                break;
            }
        }
    }

    if (found) {
        if (found->opt.ssl || found->opt.http2 || found->opt.proxy_protocol) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer: the unix listener \"%V\" "
                          "of target \"%V\" has ssl, http2 or proxy_protocol; "
                          "the consumer speaks plain HTTP/1.1: give it its "
                          "own socket= in %s:%ui", &found->opt.addr_text,
                          &cc->target, cc->file, cc->line);
            return NULL;
        }

        sa = found->opt.sockaddr;
        socklen = found->opt.socklen;

    } else if (sa) {

        /* the module's own listener on the target's server */

        ngx_http_promgate_kafka_stale_socket(cf, cc->socket.data, sa,
                                             socklen);

        ngx_memzero(&lsopt, sizeof(ngx_http_listen_opt_t));

        lsopt.backlog = NGX_LISTEN_BACKLOG;
        lsopt.rcvbuf = -1;
        lsopt.sndbuf = -1;
#if (NGX_HAVE_SETFIB)
        lsopt.setfib = -1;
#endif
#if (NGX_HAVE_TCP_FASTOPEN)
        lsopt.fastopen = -1;
#endif
#if (nginx_version >= 1025000)
        lsopt.type = SOCK_STREAM;
#endif
        lsopt.sockaddr = sa;
        lsopt.socklen = socklen;
        lsopt.addr_text = u.addrs[0].name;
        lsopt.wildcard = 0;

        if (ngx_http_add_listen(cf, target->cscf, &lsopt) != NGX_OK) {
            return NULL;
        }

    } else {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\": its server has "
                      "no unix-domain listener; add socket=/run/promgate.sock "
                      "(promgate then listens there itself) or "
                      "\"listen unix:/run/promgate.sock;\" to that server, in "
                      "%s:%ui", &cc->target, cc->file, cc->line);
        return NULL;
    }

    /* consumers posting to the same socket share its connections */

    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        if (ngx_cmp_sockaddr(epp[i]->sockaddr, epp[i]->socklen, sa, socklen,
                             0)
            == NGX_OK)
        {
            return epp[i];
        }
    }

    ep = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_kafka_endpoint_t));
    if (ep == NULL) {
        return NULL;
    }

    ep->sockaddr = ngx_palloc(cf->pool, socklen);
    if (ep->sockaddr == NULL) {
        return NULL;
    }

    ngx_memcpy(ep->sockaddr, sa, socklen);
    ep->socklen = socklen;

    ep->name.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (ep->name.data == NULL) {
        return NULL;
    }

    ep->name.len = ngx_sock_ntop(sa, socklen, ep->name.data,
                                 NGX_SOCKADDR_STRLEN, 0);
    ep->name.data[ep->name.len] = '\0';

    ngx_queue_init(&ep->idle);

    epp = ngx_array_push(&kmcf->endpoints);
    if (epp == NULL) {
        return NULL;
    }

    *epp = ep;

    return ep;
}


/* the Host header: the server's name if it is a plain one */

static ngx_str_t
ngx_http_promgate_kafka_host(ngx_str_t *name)
{
    u_char      ch;
    ngx_str_t   host;
    ngx_uint_t  i;

    ngx_str_set(&host, "localhost");

    if (name->len == 0 || name->len > 255 || name->data[0] == '.') {
        return host;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'
              || ch == '_' || ch == ':'))
        {
            return host;
        }
    }

    return *name;
}


static ngx_int_t
ngx_http_promgate_kafka_set(ngx_conf_t *cf, rd_kafka_conf_t *conf,
    const char *name, const char *value)
{
    char  err[512];

    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err))
        != RD_KAFKA_CONF_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate kafka: property \"%s\" \"%s\": %s", name,
                      value, err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * cooperative-sticky moves only the partitions it must when a worker comes
 * or goes (reloads), but librdkafka before 2.3.0 aborts when such a
 * consumer is destroyed before its first assignment (librdkafka #4312,
 * fixed by #4381): a worker reloaded right after it started would crash.
 * With those versions promgate keeps librdkafka's own default.
 */

#define NGX_HTTP_PROMGATE_KAFKA_COOPERATIVE_OK  0x020300ff

static const char *
ngx_http_promgate_kafka_assignor(void)
{
    return rd_kafka_version() >= NGX_HTTP_PROMGATE_KAFKA_COOPERATIVE_OK
           ? "cooperative-sticky" : "range,roundrobin";
}


static ngx_int_t
ngx_http_promgate_kafka_user_properties(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf, rd_kafka_conf_t *conf)
{
    ngx_uint_t                           i;
    ngx_http_promgate_kafka_property_t  *prop;

    prop = kmcf->properties.elts;

    for (i = 0; i < kmcf->properties.nelts; i++) {
        if (ngx_http_promgate_kafka_set(cf, conf, (char *) prop[i].name.data,
                                        (char *) prop[i].value.data)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_promgate_kafka_conf_cleanup(void *data)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = data;

    ngx_uint_t                                i;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;

    cc = kmcf->consumers.elts;

    for (i = 0; i < kmcf->consumers.nelts; i++) {
        if (cc[i].rdconf) {
            rd_kafka_conf_destroy(cc[i].rdconf);
            cc[i].rdconf = NULL;
        }
    }

    if (kmcf->producer_conf) {
        rd_kafka_conf_destroy(kmcf->producer_conf);
        kmcf->producer_conf = NULL;
    }
}


static ngx_int_t
ngx_http_promgate_kafka_init(ngx_conf_t *cf)
{
    char                                     *brokers;
    ngx_uint_t                                i;
    rd_kafka_conf_t                          *conf;
    ngx_pool_cleanup_t                       *cln;
    ngx_http_core_loc_conf_t                 *clcf;
    ngx_http_promgate_loc_conf_t             *plcf;
    ngx_http_promgate_main_conf_t            *pmcf;
    ngx_http_promgate_kafka_location_t       *target;
    ngx_http_promgate_kafka_main_conf_t      *kmcf;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;
    ngx_http_promgate_kafka_stats_key_t     **kp;

    kmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_promgate_kafka_module);

    if (kmcf->brokers.len == 0) {
        if (kmcf->consumers.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer needs "
                          "promgate_kafka_brokers");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_promgate_kafka_conf_cleanup;
    cln->data = kmcf;

    brokers = (char *) ngx_pnalloc(cf->pool, kmcf->brokers.len + 1);
    if (brokers == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(brokers, kmcf->brokers.data, kmcf->brokers.len);
    brokers[kmcf->brokers.len] = '\0';

    /* the producer: bounded queue, bounded delivery time */

    conf = rd_kafka_conf_new();
    if (conf == NULL) {
        return NGX_ERROR;
    }

    kmcf->producer_conf = conf;

    if (ngx_http_promgate_kafka_set(cf, conf, "bootstrap.servers", brokers)
        != NGX_OK
        || ngx_http_promgate_kafka_set(cf, conf, "client.id", "promgate")
           != NGX_OK
        || ngx_http_promgate_kafka_set(cf, conf,
                                       "queue.buffering.max.messages",
                                       "10000") != NGX_OK
        || ngx_http_promgate_kafka_set(cf, conf, "queue.buffering.max.kbytes",
                                       "16384") != NGX_OK
        || ngx_http_promgate_kafka_set(cf, conf, "message.timeout.ms",
                                       "30000") != NGX_OK
        || ngx_http_promgate_kafka_user_properties(cf, kmcf, conf) != NGX_OK
        || ngx_http_promgate_kafka_set(cf, conf, "log.queue", "true")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* set by promgate's own postconfiguration, which runs before this */
    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    cc = kmcf->consumers.elts;

    for (i = 0; i < kmcf->consumers.nelts; i++) {

        /* the tenant travels as the Kafka header of the same name */

        if (cc[i].tenant_header.len == 0 && pmcf->tenant_header.len) {
            if (ngx_http_promgate_kafka_cstr(cf, &cc[i].tenant_header,
                                             pmcf->tenant_header.data,
                                             pmcf->tenant_header.len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        target = ngx_http_promgate_kafka_find_target(cf, kmcf, &cc[i]);
        if (target == NULL) {
            return NGX_ERROR;
        }

        cc[i].endpoint = ngx_http_promgate_kafka_endpoint(cf, kmcf, &cc[i],
                                                          target);
        if (cc[i].endpoint == NULL) {
            return NGX_ERROR;
        }

        /* what the target accepts bounds a batch */

        clcf = target->clcf;
        plcf = target->loc_conf[ngx_http_promgate_module.ctx_index];

        cc[i].host = ngx_http_promgate_kafka_host(&target->cscf->server_name);

        cc[i].max_decoded = plcf->max_decoded;
        cc[i].max_bytes = ngx_min(plcf->max_decoded,
                                  NGX_HTTP_PROMGATE_KAFKA_MAX_BATCH);

        if (clcf->client_max_body_size > 0) {
            cc[i].max_bytes = ngx_min(cc[i].max_bytes,
                                      (size_t) clcf->client_max_body_size
                                      / 4 * 3);
        }

        cc[i].backoff_first = plcf->backoff_first ? plcf->backoff_first : 100;
        cc[i].backoff_max = ngx_max(plcf->backoff_max, cc[i].backoff_first);

        if (cc[i].timeout == NGX_CONF_UNSET_MSEC) {
            cc[i].timeout = plcf->retry_timeout + 20000;
        }

        /* the consumer: promgate's defaults, the user's, promgate's own */

        conf = rd_kafka_conf_new();
        if (conf == NULL) {
            return NGX_ERROR;
        }

        cc[i].rdconf = conf;

        if (ngx_http_promgate_kafka_set(cf, conf, "bootstrap.servers",
                                        brokers) != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "client.id", "promgate")
               != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf,
                                           "partition.assignment.strategy",
                                           ngx_http_promgate_kafka_assignor())
               != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf,
                                           "queued.max.messages.kbytes",
                                           "8192") != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "auto.offset.reset",
                                           "earliest") != NGX_OK
            || ngx_http_promgate_kafka_user_properties(cf, kmcf, conf)
               != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "group.id",
                                           (char *) cc[i].group.data)
               != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "enable.auto.commit",
                                           "true") != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf,
                                           "enable.auto.offset.store",
                                           "false") != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "enable.partition.eof",
                                           "false") != NGX_OK
            || ngx_http_promgate_kafka_set(cf, conf, "log.queue", "true")
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        kp = ngx_array_push(&kmcf->keys);
        if (kp == NULL) {
            return NGX_ERROR;
        }

        *kp = &cc[i].key;
    }

    if (kmcf->consumers.nelts == 0) {
        return NGX_OK;
    }

    return ngx_http_promgate_kafka_status_init(cf, &kmcf->keys);
}


/* ------------------------------------------------ librdkafka callbacks */


static void
ngx_http_promgate_kafka_log_cb(const rd_kafka_t *rk, int level,
    const char *fac, const char *buf)
{
    ngx_uint_t  nlevel;

    /* librdkafka's syslog levels; nothing of it is critical to nginx */

    if (level <= 3) {
        nlevel = NGX_LOG_ERR;

    } else if (level == 4) {
        nlevel = NGX_LOG_WARN;

    } else if (level == 5) {
        nlevel = NGX_LOG_NOTICE;

    } else if (level == 6) {
        nlevel = NGX_LOG_INFO;

    } else {
        nlevel = NGX_LOG_DEBUG;
    }

    ngx_log_error(nlevel, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: %s: %s: %s", rd_kafka_name(rk), fac, buf);
}


static void
ngx_http_promgate_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
    void *opaque)
{
    ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: %s: %s: %s", rd_kafka_name(rk),
                  rd_kafka_err2name(err), reason);
}


static void
ngx_http_promgate_kafka_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    ngx_http_promgate_kafka_consumer_t *c = opaque;

    int                                i;
    ngx_uint_t                         level;
    rd_kafka_topic_partition_t        *tp;
    ngx_http_promgate_kafka_pstats_t  *ps;

    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {

        /* during a rebalance this is expected; the next commit carries it */

        level = NGX_LOG_WARN;

        if (err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS
            || err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION)
        {
            level = NGX_LOG_INFO;
        }

        ngx_log_error(level, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: group \"%V\": offset commit failed: "
                      "%s (the next commit carries the offsets; what was "
                      "not committed may be delivered again)",
                      &c->conf->group, rd_kafka_err2str(err));
    }

    if (offsets == NULL) {
        return;
    }

    for (i = 0; i < offsets->cnt; i++) {
        tp = &offsets->elems[i];

        if (tp->err || tp->offset < 0) {
            continue;
        }

        ps = ngx_http_promgate_kafka_pstats_get(c->conf->key.slot, tp->topic,
                                                tp->partition);
        if (ps) {
            ps->committed = tp->offset;
        }
    }
}


static void
ngx_http_promgate_kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
    void *opaque)
{
    ngx_http_promgate_kafka_delivery_t  *d;

    d = m->_private;

    if (d == NULL) {
        return;
    }

    d->handler(d->opaque, m->err ? NGX_ERROR : NGX_OK,
               m->err ? rd_kafka_err2str(m->err) : NULL);

    ngx_free(d);
}


/* ------------------------------------------------------ partitions */


static ngx_http_promgate_kafka_partition_t *
ngx_http_promgate_kafka_partition_find(ngx_http_promgate_kafka_consumer_t *c,
    const char *topic, int32_t partition)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

        if (p->partition == partition && ngx_strcmp(p->topic, topic) == 0) {
            return p;
        }
    }

    return NULL;
}


static void ngx_http_promgate_kafka_retry_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_posted(
    ngx_http_promgate_kafka_post_t *post);


static ngx_http_promgate_kafka_partition_t *
ngx_http_promgate_kafka_partition_new(ngx_http_promgate_kafka_consumer_t *c,
    const char *topic, int32_t partition)
{
    size_t                                len;
    int64_t                              *off;
    uint8_t                              *done;
    ngx_http_promgate_kafka_partition_t  *p;

    len = ngx_strlen(topic);

    p = ngx_calloc(sizeof(ngx_http_promgate_kafka_partition_t) + len + 1,
                   ngx_http_promgate_kafka_w.log);
    off = ngx_alloc(64 * sizeof(int64_t), ngx_http_promgate_kafka_w.log);
    done = ngx_alloc(64, ngx_http_promgate_kafka_w.log);

    if (p == NULL || off == NULL || done == NULL) {
        ngx_free(p);
        ngx_free(off);
        ngx_free(done);
        return NULL;
    }

    p->topic = (char *) (p + 1);
    ngx_memcpy(p->topic, topic, len + 1);

    p->consumer = c;
    p->partition = partition;
    p->stored = -1;

    /*
     * librdkafka keeps a partition's pause across revocation and a new
     * assignment: not knowing, the first sync_pause() says it explicitly.
     */
    p->paused = 1;

    ngx_queue_init(&p->msgs);
    pg_kafka_wm_init(&p->wm, off, done, 64);

    p->retry.handler = ngx_http_promgate_kafka_retry_handler;
    p->retry.data = p;
    p->retry.log = ngx_http_promgate_kafka_w.log;
    p->retry.cancelable = 1;

    p->post.endpoint = c->conf->endpoint;
    p->post.timeout = c->conf->timeout;
    p->post.log = ngx_http_promgate_kafka_w.log;
    p->post.handler = ngx_http_promgate_kafka_posted;
    p->post.data = p;

    p->ps = ngx_http_promgate_kafka_pstats_get(c->conf->key.slot, topic,
                                               partition);
    if (p->ps) {
        p->ps->owner = ngx_pid;
        p->ps->paused = 0;
    }

    ngx_queue_insert_tail(&c->partitions, &p->queue);

    return p;
}


static void
ngx_http_promgate_kafka_msg_free(ngx_http_promgate_kafka_msg_t *m)
{
    ngx_http_promgate_kafka_consumer_t  *c;

    c = m->part->consumer;
    c->held--;

    rd_kafka_message_destroy(m->rkm);
    ngx_free(m);
}


/* a message is done: stored, or poison handled; it may be committed */

static void
ngx_http_promgate_kafka_msg_done(ngx_http_promgate_kafka_msg_t *m)
{
    (void) pg_kafka_wm_done(&m->part->wm, m->offset);
    ngx_http_promgate_kafka_msg_free(m);
}


static void
ngx_http_promgate_kafka_partition_store(ngx_http_promgate_kafka_partition_t *p)
{
    int64_t                           low;
    rd_kafka_resp_err_t               err;
    rd_kafka_topic_partition_list_t  *list;

    if (p->revoked || p->consumer->rk == NULL || p->consumer->closed) {
        return;
    }

    low = pg_kafka_wm_low(&p->wm);

    if (low < 0 || low <= p->stored) {
        return;
    }

    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset =
        low;

    err = rd_kafka_offsets_store(p->consumer->rk, list);

    rd_kafka_topic_partition_list_destroy(list);

    if (err) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_http_promgate_kafka_w.log, 0,
                       "promgate kafka: offsets_store %s/%D: %s", p->topic,
                       p->partition, rd_kafka_err2str(err));
        return;
    }

    p->stored = low;
}


static void
ngx_http_promgate_kafka_partition_sync_pause(
    ngx_http_promgate_kafka_partition_t *p)
{
    ngx_uint_t                        want;
    rd_kafka_resp_err_t               err;
    rd_kafka_topic_partition_list_t  *list;

    if (p->revoked || p->consumer->rk == NULL || p->consumer->closing) {
        return;
    }

    want = p->consumer->paused || p->failing
           || ngx_http_promgate_kafka_w.stopping;

    if (want == p->paused) {
        return;
    }

    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, p->topic, p->partition);

    err = want ? rd_kafka_pause_partitions(p->consumer->rk, list)
               : rd_kafka_resume_partitions(p->consumer->rk, list);

    rd_kafka_topic_partition_list_destroy(list);

    if (err) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: could not %s %s/%D: %s",
                      want ? "pause" : "resume", p->topic, p->partition,
                      rd_kafka_err2str(err));
        return;
    }

    p->paused = want;

    if (p->ps) {
        p->ps->paused = want;
    }
}


/*
 * Backpressure.  At max_in_flight messages taken and not done, the worker
 * stops taking messages from librdkafka's queue, which is bounded
 * (queued.max.messages.kbytes): librdkafka then stops fetching by itself,
 * and nothing fetched is lost.  As messages are done the queue is drained
 * again (a posted event: librdkafka signals only an empty queue turning
 * non-empty).  Pausing partitions instead would cost a refetch on every
 * resume (librdkafka 2.0.2 purges a paused partition's fetch queue).
 *
 * Only when nothing moves for NGX_HTTP_PROMGATE_KAFKA_STALL (storages down)
 * are the partitions paused, so that the consumer can be polled again and
 * stay in its group (max.poll.interval.ms); they resume below half of
 * max_in_flight.
 */

static void
ngx_http_promgate_kafka_consumer_pressure(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;
    ngx_http_promgate_kafka_worker_t     *w;

    w = &ngx_http_promgate_kafka_w;

    if (c->blocked && c->held < c->conf->max_in_flight) {
        c->blocked = 0;

        if (!w->drain.posted && !w->finished) {
            ngx_post_event(&w->drain, &ngx_posted_events);
        }
    }

    if (ngx_worker < NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS) {
        c->cs->inflight[ngx_worker] = c->held;
        c->cs->paused[ngx_worker] = c->blocked || c->paused;
    }

    if (!c->paused || c->held > c->conf->max_in_flight / 2) {
        return;
    }

    c->paused = 0;

    ngx_log_error(NGX_LOG_INFO, w->log, 0,
                  "promgate kafka: group \"%V\": fetching resumed at %ui "
                  "messages in flight", &c->conf->group, c->held);

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);
        ngx_http_promgate_kafka_partition_sync_pause(p);
    }
}


/* blocked for too long: pause, to be able to poll */

static void
ngx_http_promgate_kafka_consumer_stall(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

    if (!c->blocked || c->paused
        || ngx_current_msec - c->blocked_since < NGX_HTTP_PROMGATE_KAFKA_STALL)
    {
        return;
    }

    c->paused = 1;
    c->blocked = 0;

    ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: group \"%V\": %ui messages in flight "
                  "(max_in_flight %ui) for %Mms: fetching paused",
                  &c->conf->group, c->held, c->conf->max_in_flight,
                  (ngx_msec_t) NGX_HTTP_PROMGATE_KAFKA_STALL);

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);
        ngx_http_promgate_kafka_partition_sync_pause(p);
    }

    ngx_http_promgate_kafka_consumer_pressure(c);
}


static void
ngx_http_promgate_kafka_partition_free(ngx_http_promgate_kafka_partition_t *p)
{
    ngx_queue_t                    *q;
    ngx_http_promgate_kafka_msg_t  *m;

    while (!ngx_queue_empty(&p->msgs)) {
        q = ngx_queue_head(&p->msgs);
        ngx_queue_remove(q);
        m = ngx_queue_data(q, ngx_http_promgate_kafka_msg_t, queue);
        ngx_http_promgate_kafka_msg_free(m);
    }

    if (p->retry.timer_set) {
        ngx_del_timer(&p->retry);
    }

    if (p->batch_pool) {
        ngx_destroy_pool(p->batch_pool);
        p->batch_pool = NULL;
    }

    ngx_queue_remove(&p->queue);

    ngx_free(p->wm.off);
    ngx_free(p->wm.done);
    ngx_free(p);
}


/* frees a revoked partition once nothing refers to it any more */

static void
ngx_http_promgate_kafka_partition_release(
    ngx_http_promgate_kafka_partition_t *p)
{
    if (p->revoked && p->pending == 0) {
        ngx_http_promgate_kafka_partition_free(p);
    }
}


static void
ngx_http_promgate_kafka_partition_revoke(ngx_http_promgate_kafka_partition_t *p)
{
    ngx_uint_t                        n;
    ngx_queue_t                      *q, *next;
    ngx_http_promgate_kafka_msg_t    *m;
    rd_kafka_topic_partition_list_t  *list;

    /* the final watermark, committed by librdkafka as it unassigns */
    ngx_http_promgate_kafka_partition_store(p);

    /* not paused for whoever gets it next in this process */
    if (p->paused && p->consumer->rk && !p->consumer->closing) {
        list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
        (void) rd_kafka_resume_partitions(p->consumer->rk, list);
        rd_kafka_topic_partition_list_destroy(list);
        p->paused = 0;
    }

    p->revoked = 1;

    if (p->ps) {
        p->ps->owner = 0;
        p->ps->paused = 0;
    }

    if (p->retry.timer_set) {
        ngx_del_timer(&p->retry);
    }

    /* what is not posted goes: the partition's new owner reads it again */

    n = 0;

    for (q = ngx_queue_head(&p->msgs); q != ngx_queue_sentinel(&p->msgs);
         q = next)
    {
        next = ngx_queue_next(q);

        if (p->posting && n++ < p->batch_n) {
            continue;
        }

        ngx_queue_remove(q);
        m = ngx_queue_data(q, ngx_http_promgate_kafka_msg_t, queue);
        ngx_http_promgate_kafka_msg_free(m);
    }

    ngx_queue_remove(&p->queue);
    ngx_queue_insert_tail(&p->consumer->revoked, &p->queue);

    ngx_http_promgate_kafka_partition_release(p);
}


static void
ngx_http_promgate_kafka_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ngx_http_promgate_kafka_consumer_t *c = opaque;

    int                                   i, cooperative;
    rd_kafka_error_t                     *error;
    rd_kafka_topic_partition_t           *tp;
    ngx_http_promgate_kafka_partition_t  *p;

    cooperative = ngx_strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE")
                  == 0;

    (void) ngx_atomic_fetch_add(&c->cs->rebalances, 1);

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {

        error = NULL;

        if (cooperative) {
            error = rd_kafka_incremental_assign(rk, parts);

        } else {
            err = rd_kafka_assign(rk, parts);
            if (err) {
                ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                              "promgate kafka: group \"%V\": assign failed: "
                              "%s", &c->conf->group, rd_kafka_err2str(err));
                return;
            }
        }

        if (error) {
            ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": assign failed: %s",
                          &c->conf->group, rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            return;
        }

        for (i = 0; i < parts->cnt; i++) {
            tp = &parts->elems[i];

            if (ngx_http_promgate_kafka_partition_find(c, tp->topic,
                                                       tp->partition))
            {
                continue;
            }

            p = ngx_http_promgate_kafka_partition_new(c, tp->topic,
                                                      tp->partition);
            if (p == NULL) {
                continue;
            }

            ngx_http_promgate_kafka_partition_sync_pause(p);

            ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": %s/%D assigned",
                          &c->conf->group, tp->topic, tp->partition);
        }

        return;
    }

    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: group \"%V\": rebalance error: %s",
                      &c->conf->group, rd_kafka_err2str(err));
    }

    for (i = 0; i < parts->cnt; i++) {
        tp = &parts->elems[i];

        p = ngx_http_promgate_kafka_partition_find(c, tp->topic,
                                                   tp->partition);
        if (p) {
            ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": %s/%D revoked%s",
                          &c->conf->group, tp->topic, tp->partition,
                          rd_kafka_assignment_lost(rk) ? " (lost)" : "");

            ngx_http_promgate_kafka_partition_revoke(p);
        }
    }

    if (cooperative) {
        error = rd_kafka_incremental_unassign(rk, parts);
        if (error) {
            ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": unassign failed: %s",
                          &c->conf->group, rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }

    } else {
        (void) rd_kafka_assign(rk, NULL);
    }

    ngx_http_promgate_kafka_consumer_pressure(c);
}


/* ------------------------------------------------ taking messages */


static void
ngx_http_promgate_kafka_take(ngx_http_promgate_kafka_consumer_t *c,
    rd_kafka_message_t *rkm)
{
    int                                   rc;
    size_t                                i, size;
    int64_t                              *off, *old_off;
    uint8_t                              *done, *old_done;
    const void                           *value;
    const char                           *topic;
    rd_kafka_headers_t                   *hdrs;
    ngx_http_promgate_kafka_msg_t        *m;
    ngx_http_promgate_kafka_partition_t  *p;

    if (rkm->err) {
        if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": %s",
                          &c->conf->group, rd_kafka_message_errstr(rkm));
        }

        rd_kafka_message_destroy(rkm);
        return;
    }

    topic = rd_kafka_topic_name(rkm->rkt);

    p = ngx_http_promgate_kafka_partition_find(c, topic, rkm->partition);

    if (p == NULL || ngx_http_promgate_kafka_w.stopping) {
        /* a stray message of a revoked partition, or shutting down */
        rd_kafka_message_destroy(rkm);
        return;
    }

    rc = pg_kafka_wm_take(&p->wm, rkm->offset);

    if (rc == PG_KAFKA_WM_FULL) {
        off = ngx_alloc(p->wm.cap * 2 * sizeof(int64_t),
                        ngx_http_promgate_kafka_w.log);
        done = ngx_alloc(p->wm.cap * 2, ngx_http_promgate_kafka_w.log);

        if (off == NULL || done == NULL) {
            ngx_free(off);
            ngx_free(done);
            rd_kafka_message_destroy(rkm);
            return;
        }

        old_off = p->wm.off;
        old_done = p->wm.done;

        pg_kafka_wm_move(&p->wm, off, done, p->wm.cap * 2);

        ngx_free(old_off);
        ngx_free(old_done);

        rc = pg_kafka_wm_take(&p->wm, rkm->offset);
    }

    if (rc != 0) {
        /* at or below an offset taken already: a duplicate */
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_http_promgate_kafka_w.log, 0,
                       "promgate kafka: %s/%D: offset %L again, dropped",
                       topic, rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }

    m = ngx_calloc(sizeof(ngx_http_promgate_kafka_msg_t),
                   ngx_http_promgate_kafka_w.log);
    if (m == NULL) {
        (void) pg_kafka_wm_done(&p->wm, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }

    m->part = p;
    m->rkm = rkm;
    m->offset = rkm->offset;

    ngx_queue_insert_tail(&p->msgs, &m->queue);
    c->held++;

    (void) ngx_atomic_fetch_add(&c->cs->messages, 1);
    (void) ngx_atomic_fetch_add(&c->cs->bytes, rkm->len);

    if (c->conf->tenant_header.len == 0) {
        return;
    }

    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR
        || rd_kafka_header_get_last(hdrs,
                                    (char *) c->conf->tenant_header.data,
                                    &value, &size)
           != RD_KAFKA_RESP_ERR_NO_ERROR
        || value == NULL)
    {
        return;
    }

    /* it becomes an HTTP header: visible ASCII only */

    for (i = 0; i < size; i++) {
        if (((u_char *) value)[i] < 0x20 || ((u_char *) value)[i] > 0x7e) {
            break;
        }
    }

    if (size == 0 || size > 256 || i < size) {
        ngx_http_promgate_kafka_poison(p, m, "tenant", "the tenant header "
                                       "is empty, too long or not visible "
                                       "ASCII");
        return;
    }

    m->tenant.data = value;
    m->tenant.len = size;
}


/* ------------------------------------------------ posting batches */


static void *
ngx_http_promgate_kafka_palloc(void *ctx, size_t size)
{
    return ngx_palloc(ctx, size);
}


/* the request head: remote write 1.0 or 2.0, as the body is */

static u_char *
ngx_http_promgate_kafka_head(ngx_http_promgate_kafka_partition_t *p,
    ngx_pool_t *pool, size_t body, pg_rw_version_e version, pg_str_t *tenant,
    size_t *len)
{
    u_char                                   *head, *last;
    size_t                                    size;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;

    static ngx_str_t  v1 = ngx_string(
                          "Content-Type: application/x-protobuf\r\n"
                          "X-Prometheus-Remote-Write-Version: 0.1.0\r\n");
    static ngx_str_t  v2 = ngx_string(
                          "Content-Type: application/x-protobuf;"
                          "proto=io.prometheus.write.v2.Request\r\n"
                          "X-Prometheus-Remote-Write-Version: 2.0.0\r\n");

    cc = p->consumer->conf;

    size = sizeof("POST  HTTP/1.1\r\nHost: \r\n"
                  "Content-Encoding: snappy\r\n"
                  "User-Agent: promgate-kafka/" PG_VERSION "\r\n"
                  "Content-Length: \r\n: \r\n\r\n")
           + v2.len + cc->target.len + cc->host.len + NGX_SIZE_T_LEN
           + cc->tenant_header.len + tenant->len;

    head = ngx_pnalloc(pool, size);
    if (head == NULL) {
        return NULL;
    }

    last = ngx_sprintf(head, "POST %V HTTP/1.1\r\nHost: %V\r\n"
                       "%V"
                       "Content-Encoding: snappy\r\n"
                       "User-Agent: promgate-kafka/" PG_VERSION "\r\n"
                       "Content-Length: %uz\r\n", &cc->target, &cc->host,
                       version == PG_RW_V2 ? &v2 : &v1, body);

    if (tenant->len) {
        last = ngx_sprintf(last, "%V: %*s\r\n", &cc->tenant_header,
                           tenant->len, tenant->data);
    }

    last = ngx_cpymem(last, "\r\n", 2);

    *len = last - head;

    return head;
}


static void
ngx_http_promgate_kafka_partition_send(ngx_http_promgate_kafka_partition_t *p)
{
    u_char                                   *buf, *z;
    size_t                                    zlen, hlen, total;
    ngx_str_t                                *piece;
    ngx_uint_t                                i, single;
    ngx_pool_t                               *tmp, *pool;
    ngx_queue_t                              *q, *next;
    ngx_array_t                               pieces;
    pg_allocator_t                            alloc;
    pg_kafka_rc_e                             rc;
    pg_kafka_batch_t                          b;
    pg_kafka_decoded_t                        d;
    ngx_http_promgate_kafka_msg_t            *m, *first;
    ngx_http_promgate_kafka_consumer_t       *c;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;

    if (p->posting || p->retry.timer_set || p->revoked
        || ngx_http_promgate_kafka_w.stopping || ngx_queue_empty(&p->msgs))
    {
        return;
    }

    c = p->consumer;
    cc = c->conf;

    tmp = ngx_create_pool(16384, ngx_http_promgate_kafka_w.log);
    if (tmp == NULL) {
        goto nomem;
    }

    if (ngx_array_init(&pieces, tmp, 16, sizeof(ngx_str_t)) != NGX_OK) {
        goto nomem;
    }

    alloc.alloc = ngx_http_promgate_kafka_palloc;
    alloc.ctx = tmp;

    pg_kafka_batch_init(&b, cc->batch, cc->max_bytes);
    ngx_memzero(&p->batch_stats, sizeof(pg_rw_stats_t));
    single = 0;

    /*
     * The batch is the head of the partition's queue: poison and empty
     * messages met on the way are done with at once.  A closed batch
     * (full, or holding a 2.0 message) ends the walk: the next message is
     * not decoded for nothing.
     */

    for (q = ngx_queue_head(&p->msgs);
         q != ngx_queue_sentinel(&p->msgs) && !pg_kafka_batch_closed(&b);
         q = next)
    {
        next = ngx_queue_next(q);
        m = ngx_queue_data(q, ngx_http_promgate_kafka_msg_t, queue);

        rc = pg_kafka_decode(cc->format, m->rkm->payload, m->rkm->len,
                             cc->max_decoded, &alloc, &d);

        if (rc == PG_KAFKA_NOMEM) {
            if (b.count) {
                break;
            }

            goto nomem;
        }

        if (rc == PG_KAFKA_POISON) {
            ngx_http_promgate_kafka_poison(p, m, d.reason, d.error);
            continue;
        }

        if (d.stats.series == 0 && d.stats.metadata == 0 && d.invalid == 0)
        {
            /* an empty request: nothing to store */
            ngx_queue_remove(q);
            (void) ngx_atomic_fetch_add(&c->cs->acked, 1);
            ngx_http_promgate_kafka_msg_done(m);
            continue;
        }

        if (!pg_kafka_batch_add(&b, d.len, m->limit, m->tenant, d.version)) {
            break;
        }

        if (d.invalid) {
            /* the target drops them and counts them (or refuses: split) */
            ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_http_promgate_kafka_w.log,
                           0, "promgate kafka: %s/%D offset %L: %uL invalid "
                           "series, first: %s", p->topic, p->partition,
                           m->offset, d.invalid, d.error);
        }

        piece = ngx_array_push(&pieces);
        if (piece == NULL) {
            goto nomem;
        }

        piece->data = (u_char *) d.data;
        piece->len = d.len;

        if (b.count == 1) {
            single = d.snappy;
        }

        p->batch_stats.samples += d.stats.samples;
        p->batch_stats.histograms += d.stats.histograms;
        p->batch_stats.exemplars += d.stats.exemplars;
        p->batch_stats.series += d.stats.series;
    }

    ngx_http_promgate_kafka_partition_store(p);

    if (b.count == 0) {
        ngx_destroy_pool(tmp);
        ngx_http_promgate_kafka_consumer_pressure(c);
        return;
    }

    pool = ngx_create_pool(4096, ngx_http_promgate_kafka_w.log);
    if (pool == NULL) {
        goto nomem;
    }

    first = ngx_queue_data(ngx_queue_head(&p->msgs),
                           ngx_http_promgate_kafka_msg_t, queue);

    if (b.count == 1 && single) {

        /*
         * One message as remote write sends it: forwarded byte-for-byte.
         * So is every snappy 2.0 message: one per post, never merged.
         */

        p->post.body.data = first->rkm->payload;
        p->post.body.len = first->rkm->len;

    } else {
        piece = pieces.elts;
        total = 0;

        for (i = 0; i < pieces.nelts; i++) {
            total += piece[i].len;
        }

        buf = ngx_pnalloc(tmp, total ? total : 1);
        z = ngx_pnalloc(pool, pg_kafka_compress_bound(total));

        if (buf == NULL || z == NULL) {
            ngx_destroy_pool(pool);
            goto nomem;
        }

        total = 0;

        for (i = 0; i < pieces.nelts; i++) {
            ngx_memcpy(buf + total, piece[i].data, piece[i].len);
            total += piece[i].len;
        }

        zlen = pg_kafka_compress_bound(total);

        if (pg_kafka_compress(buf, total, z, &zlen) != 0) {
            ngx_destroy_pool(pool);
            goto nomem;
        }

        p->post.body.data = z;
        p->post.body.len = zlen;
    }

    ngx_destroy_pool(tmp);
    tmp = NULL;

    p->post.head.data = ngx_http_promgate_kafka_head(p, pool,
                                                     p->post.body.len,
                                                     b.version,
                                                     &first->tenant, &hlen);
    if (p->post.head.data == NULL) {
        ngx_destroy_pool(pool);
        goto nomem;
    }

    p->post.head.len = hlen;
    p->batch_pool = pool;
    p->batch_n = b.count;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_http_promgate_kafka_w.log, 0,
                   "promgate kafka: %s/%D: posting %ui messages from offset "
                   "%L, %uz bytes", p->topic, p->partition, p->batch_n,
                   first->offset, p->post.body.len);

    if (ngx_http_promgate_kafka_post_start(&p->post) != NGX_OK) {
        /* as if the target had not answered: retried with backoff */
        p->posting = 1;
        p->pending++;
        ngx_http_promgate_kafka_posted(&p->post);
        return;
    }

    p->posting = 1;
    p->pending++;

    return;

nomem:

    if (tmp) {
        ngx_destroy_pool(tmp);
    }

    ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: %s/%D: out of memory building a batch, "
                  "retrying in 1s", p->topic, p->partition);

    ngx_add_timer(&p->retry, 1000);
}


static void
ngx_http_promgate_kafka_posted(ngx_http_promgate_kafka_post_t *post)
{
    ngx_http_promgate_kafka_partition_t *p = post->data;

    uint32_t                             limit;
    ngx_msec_t                           delay;
    ngx_uint_t                           i, n;
    ngx_queue_t                         *q;
    pg_kafka_outcome_e                   outcome;
    ngx_http_promgate_kafka_msg_t       *m;
    ngx_http_promgate_kafka_consumer_t  *c;
    u_char                               text[600];

    c = p->consumer;
    n = p->batch_n;

    p->posting = 0;
    p->pending--;
    p->batch_n = 0;

    if (p->revoked) {
        if (p->batch_pool) {
            ngx_destroy_pool(p->batch_pool);
            p->batch_pool = NULL;
        }

        ngx_http_promgate_kafka_partition_release(p);
        ngx_http_promgate_kafka_consumer_pressure(c);
        return;
    }

    outcome = pg_kafka_classify(post->status);

    /* the target's answer, on one line, for the log */

    if (post->status) {
        ngx_cpystrn(text, (u_char *) post->resp.body,
                    ngx_min(sizeof(text), post->resp.body_len + 1));

        for (i = 0; text[i]; i++) {
            if (text[i] == '\n' || text[i] == '\r') {
                text[i] = ' ';
            }
        }

    } else {
        ngx_cpystrn(text, (u_char *) (post->error ? post->error : "no answer"),
                    sizeof(text));
    }

    switch (outcome) {

    case PG_KAFKA_ACK:
        (void) ngx_atomic_fetch_add(&c->cs->posts_stored, 1);
        (void) ngx_atomic_fetch_add(&c->cs->acked, n);
        (void) ngx_atomic_fetch_add(&c->cs->samples, p->batch_stats.samples);
        (void) ngx_atomic_fetch_add(&c->cs->histograms,
                                    p->batch_stats.histograms);
        (void) ngx_atomic_fetch_add(&c->cs->exemplars,
                                    p->batch_stats.exemplars);

        for (i = 0; i < n && !ngx_queue_empty(&p->msgs); i++) {
            q = ngx_queue_head(&p->msgs);
            ngx_queue_remove(q);
            m = ngx_queue_data(q, ngx_http_promgate_kafka_msg_t, queue);
            ngx_http_promgate_kafka_msg_done(m);
        }

        if (p->failing) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: %s/%D: target \"%V\" stored the "
                          "batch after %ui retries", p->topic, p->partition,
                          &c->conf->target, p->retries);
            p->failing = 0;
        }

        p->retries = 0;
        break;

    case PG_KAFKA_REJECT:
        (void) ngx_atomic_fetch_add(&c->cs->posts_rejected, 1);

        limit = pg_kafka_batch_split(n);

        if (limit == 0 && !ngx_queue_empty(&p->msgs)) {
            m = ngx_queue_data(ngx_queue_head(&p->msgs),
                               ngx_http_promgate_kafka_msg_t, queue);
            ngx_http_promgate_kafka_poison(p, m, "rejected", (char *) text);
            break;
        }

        (void) ngx_atomic_fetch_add(&c->cs->splits, 1);

        ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: %s/%D: target \"%V\" answered %ui to "
                      "a batch of %ui messages: re-sending it in halves to "
                      "find the bad one", p->topic, p->partition,
                      &c->conf->target, post->status, n);

        i = 0;
        for (q = ngx_queue_head(&p->msgs);
             q != ngx_queue_sentinel(&p->msgs) && i < n;
             q = ngx_queue_next(q), i++)
        {
            m = ngx_queue_data(q, ngx_http_promgate_kafka_msg_t, queue);
            m->limit = limit;
        }

        break;

    default: /* PG_KAFKA_RETRY */
        (void) ngx_atomic_fetch_add(&c->cs->posts_failed, 1);

        if (ngx_http_promgate_kafka_w.stopping) {
            break;      /* not acknowledged: read again after the restart */
        }

        (void) ngx_atomic_fetch_add(&c->cs->retries, 1);

        delay = (ngx_msec_t) pg_backoff_ms(c->conf->backoff_first,
                                           c->conf->backoff_max, p->retries,
                                           (uint32_t) ngx_random());
        delay = ngx_max(delay, c->conf->backoff_first);

        if (p->retries == 0 || p->retries % 10 == 0) {
            ngx_log_error(NGX_LOG_WARN, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: %s/%D: target \"%V\" did not store "
                          "a batch of %ui messages (status %ui: %s); kept, "
                          "retry %ui in %Mms, fetching paused",
                          p->topic, p->partition, &c->conf->target, n,
                          post->status, text, p->retries + 1, delay);
        }

        p->retries++;
        p->failing = 1;

        ngx_add_timer(&p->retry, delay);
        break;
    }

    if (p->batch_pool) {
        ngx_destroy_pool(p->batch_pool);
        p->batch_pool = NULL;
    }

    ngx_http_promgate_kafka_partition_store(p);
    ngx_http_promgate_kafka_partition_sync_pause(p);
    ngx_http_promgate_kafka_consumer_pressure(c);

    if (ngx_http_promgate_kafka_w.stopping) {
        ngx_http_promgate_kafka_step();
        return;
    }

    ngx_http_promgate_kafka_partition_send(p);
}


static void
ngx_http_promgate_kafka_retry_handler(ngx_event_t *ev)
{
    ngx_http_promgate_kafka_partition_t *p = ev->data;

    ngx_http_promgate_kafka_partition_send(p);
}


/* ------------------------------------------------ poison and the DLQ */


static void
ngx_http_promgate_kafka_dlq_done(void *opaque, ngx_int_t rc, const char *err)
{
    ngx_http_promgate_kafka_msg_t *m = opaque;

    ngx_http_promgate_kafka_partition_t  *p;
    ngx_http_promgate_kafka_consumer_t   *c;

    p = m->part;
    c = p->consumer;

    if (rc == NGX_OK) {
        (void) ngx_atomic_fetch_add(&c->cs->dlq_produced, 1);

    } else {
        (void) ngx_atomic_fetch_add(&c->cs->dlq_failed, 1);

        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: %s/%D offset %L: could not produce "
                      "the poison message to the dead-letter topic \"%V\": "
                      "%s; committed nevertheless", p->topic, p->partition,
                      m->offset, &c->conf->dlq, err ? err : "error");
    }

    p->pending--;

    if (p->revoked) {
        ngx_http_promgate_kafka_msg_free(m);
        ngx_http_promgate_kafka_partition_release(p);

    } else {
        ngx_http_promgate_kafka_msg_done(m);
        ngx_http_promgate_kafka_partition_store(p);
    }

    ngx_http_promgate_kafka_consumer_pressure(c);

    if (ngx_http_promgate_kafka_w.stopping) {
        ngx_http_promgate_kafka_step();
    }
}


static ngx_int_t ngx_http_promgate_kafka_produce_raw(const char *topic,
    const void *key, size_t klen, const void *value, size_t vlen,
    rd_kafka_headers_t *hdrs, void *opaque,
    ngx_http_promgate_kafka_delivery_pt handler);


static void
ngx_http_promgate_kafka_poison(ngx_http_promgate_kafka_partition_t *p,
    ngx_http_promgate_kafka_msg_t *m, const char *reason, const char *error)
{
    u_char                               num[NGX_INT64_LEN + 1];
    ngx_int_t                            rc;
    rd_kafka_headers_t                  *hdrs, *orig;
    ngx_http_promgate_kafka_consumer_t  *c;

    c = p->consumer;

    ngx_queue_remove(&m->queue);

    (void) ngx_atomic_fetch_add(
               &c->cs->poison[ngx_http_promgate_kafka_poison_index(reason)],
               1);

    ngx_log_error(NGX_LOG_WARN, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: poison message %s/%D offset %L "
                  "(group \"%V\"): %s: %s; %s%V%s", p->topic, p->partition,
                  m->offset, &c->conf->group, reason, error,
                  c->conf->dlq.len ? "producing it to the dead-letter topic \""
                                   : "dropped (no dlq)",
                  &c->conf->dlq, c->conf->dlq.len ? "\"" : "");

    if (c->conf->dlq.len == 0) {
        ngx_http_promgate_kafka_msg_done(m);
        return;
    }

    /* the original message, its headers, and where and why it failed */

    hdrs = NULL;

    if (rd_kafka_message_headers(m->rkm, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        hdrs = rd_kafka_headers_copy(orig);
    }

    if (hdrs == NULL) {
        hdrs = rd_kafka_headers_new(5);
    }

    rd_kafka_header_add(hdrs, "promgate-topic", -1, p->topic, -1);
    rd_kafka_header_add(hdrs, "promgate-partition", -1, num,
                        ngx_sprintf(num, "%D", p->partition) - num);
    rd_kafka_header_add(hdrs, "promgate-offset", -1, num,
                        ngx_sprintf(num, "%L", m->offset) - num);
    rd_kafka_header_add(hdrs, "promgate-reason", -1, reason, -1);
    rd_kafka_header_add(hdrs, "promgate-error", -1, error, -1);

    rc = ngx_http_promgate_kafka_produce_raw((char *) c->conf->dlq.data,
                                             m->rkm->key, m->rkm->key_len,
                                             m->rkm->payload, m->rkm->len,
                                             hdrs, m,
                                             ngx_http_promgate_kafka_dlq_done);

    if (rc != NGX_OK) {
        rd_kafka_headers_destroy(hdrs);

        (void) ngx_atomic_fetch_add(&c->cs->dlq_failed, 1);

        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: %s/%D offset %L: could not queue the "
                      "poison message for the dead-letter topic \"%V\"; "
                      "committed nevertheless", p->topic, p->partition,
                      m->offset, &c->conf->dlq);

        ngx_http_promgate_kafka_msg_done(m);
        return;
    }

    p->pending++;
}


/* ------------------------------------------------ the producer */


static rd_kafka_t *ngx_http_promgate_kafka_new(rd_kafka_type_t type,
    rd_kafka_conf_t *conf, void *opaque);
static ngx_int_t ngx_http_promgate_kafka_notify_init(void);


/*
 * A queue wired to the eventfd signals only when it turns non-empty: what
 * it held before (the new handle's first logs, moved there by
 * rd_kafka_set_log_queue()) is drained now, and the 1s tick runs.
 */

static void
ngx_http_promgate_kafka_armed(void)
{
    ngx_http_promgate_kafka_worker_t  *w;

    w = &ngx_http_promgate_kafka_w;

    if (!w->drain.posted) {
        ngx_post_event(&w->drain, &ngx_posted_events);
    }

    if (!w->tick.timer_set && !w->finished) {
        ngx_add_timer(&w->tick, NGX_HTTP_PROMGATE_KAFKA_TICK);
    }
}


static ngx_int_t
ngx_http_promgate_kafka_producer(void)
{
    rd_kafka_t                           *rk;
    ngx_http_promgate_kafka_main_conf_t  *kmcf;

    if (ngx_http_promgate_kafka_w.producer) {
        return NGX_OK;
    }

    kmcf = ngx_http_promgate_kafka_w.kmcf;

    if (kmcf == NULL || kmcf->producer_conf == NULL
        || ngx_http_promgate_kafka_w.stopping
        || ngx_http_promgate_kafka_w.finished)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_promgate_kafka_notify_init() != NGX_OK) {
        return NGX_ERROR;
    }

    rk = ngx_http_promgate_kafka_new(RD_KAFKA_PRODUCER, kmcf->producer_conf,
                                     NULL);
    if (rk == NULL) {
        return NGX_ERROR;
    }

    ngx_http_promgate_kafka_w.producer = rk;
    ngx_http_promgate_kafka_w.producer_queue = rd_kafka_queue_get_main(rk);

    rd_kafka_queue_io_event_enable(ngx_http_promgate_kafka_w.producer_queue,
                                   ngx_http_promgate_kafka_w.notify->fd,
                                   "\1\0\0\0\0\0\0\0", 8);

    (void) rd_kafka_set_log_queue(rk,
                                  ngx_http_promgate_kafka_w.producer_queue);

    ngx_http_promgate_kafka_armed();

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_produce_raw(const char *topic, const void *key,
    size_t klen, const void *value, size_t vlen, rd_kafka_headers_t *hdrs,
    void *opaque, ngx_http_promgate_kafka_delivery_pt handler)
{
    ngx_int_t                            rc;
    rd_kafka_resp_err_t                  err;
    ngx_http_promgate_kafka_delivery_t  *d;

    rc = ngx_http_promgate_kafka_producer();
    if (rc != NGX_OK) {
        return rc;
    }

    d = ngx_alloc(sizeof(ngx_http_promgate_kafka_delivery_t),
                  ngx_http_promgate_kafka_w.log);
    if (d == NULL) {
        return NGX_ERROR;
    }

    d->handler = handler;
    d->opaque = opaque;

    if (hdrs) {
        err = rd_kafka_producev(ngx_http_promgate_kafka_w.producer,
                                RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, klen),
                                RD_KAFKA_V_VALUE((void *) value, vlen),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADERS(hdrs),
                                RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_END);

    } else {
        err = rd_kafka_producev(ngx_http_promgate_kafka_w.producer,
                                RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, klen),
                                RD_KAFKA_V_VALUE((void *) value, vlen),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_END);
    }

    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        return NGX_OK;
    }

    ngx_free(d);

    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        return NGX_BUSY;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: could not produce to \"%s\": %s", topic,
                  rd_kafka_err2str(err));

    return NGX_ERROR;
}


ngx_int_t
ngx_http_promgate_kafka_produce(ngx_str_t *topic, ngx_str_t *key,
    ngx_str_t *value, void *opaque,
    ngx_http_promgate_kafka_delivery_pt handler)
{
    char  name[256];

    if (topic->len == 0 || topic->len >= sizeof(name)) {
        return NGX_ERROR;
    }

    ngx_memcpy(name, topic->data, topic->len);
    name[topic->len] = '\0';

    return ngx_http_promgate_kafka_produce_raw(name,
                                               key ? key->data : NULL,
                                               key ? key->len : 0,
                                               value->data, value->len,
                                               NULL, opaque, handler);
}


/* ------------------------------------------------ the worker */


static void ngx_http_promgate_kafka_notify_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_tick_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_drain_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_deadline_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_done_handler(ngx_event_t *ev);


static void
ngx_http_promgate_kafka_dummy_handler(ngx_event_t *ev)
{
}


/* librdkafka's threads must not take nginx's signals: they are blocked */

static rd_kafka_t *
ngx_http_promgate_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *tmpl,
    void *opaque)
{
    char              err[512];
    sigset_t          all, old;
    rd_kafka_t       *rk;
    rd_kafka_conf_t  *conf;

    conf = rd_kafka_conf_dup(tmpl);
    if (conf == NULL) {
        return NULL;
    }

    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_log_cb(conf, ngx_http_promgate_kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, ngx_http_promgate_kafka_error_cb);

    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_conf_set_rebalance_cb(conf,
                                       ngx_http_promgate_kafka_rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(conf,
                                           ngx_http_promgate_kafka_commit_cb);

    } else {
        rd_kafka_conf_set_dr_msg_cb(conf, ngx_http_promgate_kafka_dr_cb);
    }

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    rk = rd_kafka_new(type, conf, err, sizeof(err));

    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: could not create the %s: %s",
                      type == RD_KAFKA_CONSUMER ? "consumer" : "producer",
                      err);
        return NULL;
    }

    return rk;
}


static ngx_int_t
ngx_http_promgate_kafka_notify_init(void)
{
    int                fd;
    ngx_connection_t  *c;

    if (ngx_http_promgate_kafka_w.notify) {
        return NGX_OK;
    }

    fd = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, ngx_errno,
                      "promgate kafka: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ngx_http_promgate_kafka_w.log);
    if (c == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    c->read->handler = ngx_http_promgate_kafka_notify_handler;
    c->read->log = ngx_http_promgate_kafka_w.log;
    c->write->handler = ngx_http_promgate_kafka_dummy_handler;
    c->write->log = ngx_http_promgate_kafka_w.log;
    c->data = NULL;

    /* ngx_close_idle_connections() tells us when the worker shuts down */
    c->idle = 1;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    ngx_http_promgate_kafka_w.notify = c;

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_consumer_start(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_uint_t                        i;
    ngx_str_t                        *topic;
    rd_kafka_resp_err_t               err;
    rd_kafka_topic_partition_list_t  *list;

    c->rk = ngx_http_promgate_kafka_new(RD_KAFKA_CONSUMER, c->conf->rdconf, c);
    if (c->rk == NULL) {
        return NGX_ERROR;
    }

    (void) rd_kafka_poll_set_consumer(c->rk);

    c->queue = rd_kafka_queue_get_consumer(c->rk);

    rd_kafka_queue_io_event_enable(c->queue,
                                   ngx_http_promgate_kafka_w.notify->fd,
                                   "\1\0\0\0\0\0\0\0", 8);

    (void) rd_kafka_set_log_queue(c->rk, c->queue);

    topic = c->conf->topics.elts;
    list = rd_kafka_topic_partition_list_new(c->conf->topics.nelts);

    for (i = 0; i < c->conf->topics.nelts; i++) {
        rd_kafka_topic_partition_list_add(list, (char *) topic[i].data,
                                          RD_KAFKA_PARTITION_UA);
    }

    err = rd_kafka_subscribe(c->rk, list);

    rd_kafka_topic_partition_list_destroy(list);

    if (err) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: group \"%V\": subscribe failed: %s",
                      &c->conf->group, rd_kafka_err2str(err));
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                                i;
    ngx_http_promgate_kafka_endpoint_t      **epp;
    ngx_http_promgate_kafka_main_conf_t      *kmcf;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;
    ngx_http_promgate_kafka_consumer_t       *c;
    ngx_http_promgate_kafka_worker_t         *w;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    kmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_promgate_kafka_module);

    if (kmcf == NULL || kmcf->brokers.len == 0) {
        return NGX_OK;
    }

    w = &ngx_http_promgate_kafka_w;

    ngx_memzero(w, sizeof(ngx_http_promgate_kafka_worker_t));

    w->kmcf = kmcf;
    w->log = cycle->log;
    w->started = 1;

    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        ngx_queue_init(&epp[i]->idle);
        epp[i]->nidle = 0;
    }

    ngx_http_promgate_kafka_no_connection.fd = (ngx_socket_t) -1;

    w->tick.handler = ngx_http_promgate_kafka_tick_handler;
    w->tick.data = &ngx_http_promgate_kafka_no_connection;
    w->tick.log = cycle->log;
    w->tick.cancelable = 1;

    w->drain.handler = ngx_http_promgate_kafka_drain_handler;
    w->drain.data = &ngx_http_promgate_kafka_no_connection;
    w->drain.log = cycle->log;

    w->deadline.handler = ngx_http_promgate_kafka_deadline_handler;
    w->deadline.data = &ngx_http_promgate_kafka_no_connection;
    w->deadline.log = cycle->log;

    w->done.handler = ngx_http_promgate_kafka_done_handler;
    w->done.data = &ngx_http_promgate_kafka_no_connection;
    w->done.log = cycle->log;

    if (kmcf->consumers.nelts == 0) {
        return NGX_OK;          /* the producer comes when first used */
    }

    if (ngx_http_promgate_kafka_notify_init() != NGX_OK) {
        return NGX_OK;          /* HTTP goes on without the consumers */
    }

    w->consumers = ngx_pcalloc(cycle->pool,
                               kmcf->consumers.nelts
                               * sizeof(ngx_http_promgate_kafka_consumer_t));
    if (w->consumers == NULL) {
        return NGX_ERROR;
    }

    w->nconsumers = kmcf->consumers.nelts;
    cc = kmcf->consumers.elts;

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];
        c->conf = &cc[i];
        c->cs = ngx_http_promgate_kafka_cstats(cc[i].key.slot);
        ngx_queue_init(&c->partitions);
        ngx_queue_init(&c->revoked);

        if (ngx_http_promgate_kafka_consumer_start(c) != NGX_OK) {
            if (c->rk) {
                if (c->queue) {
                    rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
                    rd_kafka_queue_destroy(c->queue);
                    c->queue = NULL;
                }

                rd_kafka_destroy_flags(c->rk,
                                       RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
                c->rk = NULL;
            }

            c->closed = 1;
        }
    }

    ngx_http_promgate_kafka_armed();

    return NGX_OK;
}


static void
ngx_http_promgate_kafka_notify_handler(ngx_event_t *ev)
{
    ssize_t            n;
    uint64_t           count;
    ngx_connection_t  *c;

    c = ev->data;

    if (c->close) {
        /* the worker shuts down (reload, quit), or its time is over */

        c->close = 0;
        c->idle = 0;

        if (c->error) {
            ngx_http_promgate_kafka_finish(1);
            return;
        }

        ngx_http_promgate_kafka_stop();
    }

    do {
        n = read(c->fd, &count, sizeof(count));
    } while (n > 0);

    ngx_http_promgate_kafka_drain_all();
}


static void
ngx_http_promgate_kafka_drain_handler(ngx_event_t *ev)
{
    ngx_http_promgate_kafka_drain_all();
}


static void
ngx_http_promgate_kafka_drain_all(void)
{
    int64_t                               lo, hi;
    ngx_uint_t                            i, n, more;
    ngx_queue_t                          *q;
    rd_kafka_message_t                   *rkm;
    ngx_http_promgate_kafka_worker_t     *w;
    ngx_http_promgate_kafka_consumer_t   *c;
    ngx_http_promgate_kafka_partition_t  *p;

    w = &ngx_http_promgate_kafka_w;

    if (w->finished) {
        return;
    }

    more = 0;

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];

        if (c->rk == NULL || c->closed) {
            continue;
        }

        /*
         * To empty: librdkafka signals only when the queue was empty.  Or
         * up to max_in_flight (see consumer_pressure()); while paused,
         * what comes is what was fetched before the pause.
         */

        for (n = 0; n < NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX; n++) {

            if (c->held >= c->conf->max_in_flight && !c->paused
                && !w->stopping)
            {
                if (!c->blocked) {
                    c->blocked = 1;
                    c->blocked_since = ngx_current_msec;
                }

                break;
            }

            rkm = rd_kafka_consumer_poll(c->rk, 0);

            if (rkm == NULL) {
                break;
            }

            ngx_http_promgate_kafka_take(c, rkm);
        }

        if (n == NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX) {
            more = 1;
        }

        if (c->closing && rd_kafka_consumer_closed(c->rk)) {
            c->closed = 1;
            continue;
        }

        for (q = ngx_queue_head(&c->partitions);
             q != ngx_queue_sentinel(&c->partitions);
             q = ngx_queue_next(q))
        {
            p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

            ngx_http_promgate_kafka_partition_send(p);

            if (p->ps
                && rd_kafka_get_watermark_offsets(c->rk, p->topic,
                                                  p->partition, &lo, &hi)
                   == RD_KAFKA_RESP_ERR_NO_ERROR
                && hi >= 0)
            {
                p->ps->high = hi;
            }
        }

        ngx_http_promgate_kafka_consumer_pressure(c);
    }

    if (w->producer) {
        for (n = 0; n < NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX; n++) {
            if (rd_kafka_poll(w->producer, 0) == 0) {
                break;
            }
        }

        if (n == NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX) {
            more = 1;
        }
    }

    /* stopped early: no signal comes for what is left, so come back */

    if (more && !w->drain.posted) {
        ngx_post_event(&w->drain, &ngx_posted_events);
    }

    if (w->stopping) {
        ngx_http_promgate_kafka_step();
    }
}


/*
 * Every second: the consumers are polled even while every partition is
 * paused, so that the member stays in its group (max.poll.interval.ms),
 * and a consumer blocked for too long is paused.
 */

static void
ngx_http_promgate_kafka_tick_handler(ngx_event_t *ev)
{
    ngx_uint_t                         i;
    ngx_http_promgate_kafka_worker_t  *w;

    w = &ngx_http_promgate_kafka_w;

    if ((ngx_exiting || ngx_quit || ngx_terminate) && !w->stopping) {
        ngx_http_promgate_kafka_stop();
    }

    for (i = 0; i < w->nconsumers; i++) {
        if (w->consumers[i].rk && !w->stopping) {
            ngx_http_promgate_kafka_consumer_stall(&w->consumers[i]);
        }
    }

    ngx_http_promgate_kafka_drain_all();

    if (!w->finished) {
        ngx_add_timer(&w->tick, NGX_HTTP_PROMGATE_KAFKA_TICK);
    }
}


/* ------------------------------------------------ shutdown */


/*
 * Reload and quit: stop fetching and drop what is not posted (it is read
 * again later), let the posts in flight end, store what they stored, and
 * close the consumers (which commits the stored offsets and leaves the
 * group), all within min(worker_shutdown_timeout, 5s).
 */

static void
ngx_http_promgate_kafka_stop(void)
{
    ngx_msec_t                            timeout;
    ngx_uint_t                            i, n;
    ngx_queue_t                          *q, *mq, *next;
    ngx_core_conf_t                      *ccf;
    ngx_http_promgate_kafka_msg_t        *m;
    ngx_http_promgate_kafka_worker_t     *w;
    ngx_http_promgate_kafka_consumer_t   *c;
    ngx_http_promgate_kafka_partition_t  *p;
    ngx_http_promgate_kafka_endpoint_t  **epp;

    w = &ngx_http_promgate_kafka_w;

    if (w->stopping || w->finished || !w->started) {
        return;
    }

    w->stopping = 1;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    timeout = NGX_HTTP_PROMGATE_KAFKA_SHUTDOWN;

    if (ccf->shutdown_timeout && ccf->shutdown_timeout < timeout) {
        timeout = ccf->shutdown_timeout;
    }

    /* rd_kafka_destroy() of a consumer that could not close takes ~1s */
    timeout -= ngx_min(NGX_HTTP_PROMGATE_KAFKA_DESTROY, timeout / 4);

    /* not cancelable: the worker waits for it */
    ngx_add_timer(&w->deadline, timeout);

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];

        for (q = ngx_queue_head(&c->partitions);
             q != ngx_queue_sentinel(&c->partitions);
             q = ngx_queue_next(q))
        {
            p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

            if (p->retry.timer_set) {
                ngx_del_timer(&p->retry);
            }

            n = 0;

            for (mq = ngx_queue_head(&p->msgs);
                 mq != ngx_queue_sentinel(&p->msgs);
                 mq = next)
            {
                next = ngx_queue_next(mq);

                if (p->posting && n++ < p->batch_n) {
                    continue;
                }

                ngx_queue_remove(mq);
                m = ngx_queue_data(mq, ngx_http_promgate_kafka_msg_t, queue);
                ngx_http_promgate_kafka_msg_free(m);
            }

            ngx_http_promgate_kafka_partition_sync_pause(p);
        }
    }

    epp = w->kmcf->endpoints.elts;

    for (i = 0; i < w->kmcf->endpoints.nelts; i++) {
        ngx_http_promgate_kafka_client_close_idle(epp[i]);
    }

    ngx_log_error(NGX_LOG_INFO, w->log, 0,
                  "promgate kafka: stopping: %ui posts in flight, %Mms at "
                  "most", ngx_http_promgate_kafka_client_active(), timeout);

    ngx_http_promgate_kafka_step();
}


static ngx_uint_t
ngx_http_promgate_kafka_posting(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

        if (p->pending) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_promgate_kafka_step(void)
{
    ngx_uint_t                           i, open;
    rd_kafka_error_t                    *error;
    ngx_http_promgate_kafka_worker_t    *w;
    ngx_http_promgate_kafka_consumer_t  *c;

    w = &ngx_http_promgate_kafka_w;

    if (!w->stopping || w->finished) {
        return;
    }

    open = 0;

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];

        if (c->rk == NULL || c->closed) {
            continue;
        }

        if (!c->closing) {
            if (ngx_http_promgate_kafka_posting(c)) {
                open++;
                continue;
            }

            /* commits what was stored, revokes, leaves the group */

            c->closing = 1;

            error = rd_kafka_consumer_close_queue(c->rk, c->queue);
            if (error) {
                ngx_log_error(NGX_LOG_WARN, w->log, 0,
                              "promgate kafka: group \"%V\": close: %s",
                              &c->conf->group, rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                c->closed = 1;
                continue;
            }
        }

        if (rd_kafka_consumer_closed(c->rk)) {
            c->closed = 1;
            continue;
        }

        open++;
    }

    if (open) {
        return;
    }

    if (w->producer && rd_kafka_outq_len(w->producer) > 0) {
        return;
    }

    /*
     * Not from here: step() runs inside librdkafka's callbacks (a DLQ
     * delivery report), and a handle must not be destroyed in its own poll.
     */

    if (!w->done.posted) {
        ngx_post_event(&w->done, &ngx_posted_events);
    }
}


static void
ngx_http_promgate_kafka_done_handler(ngx_event_t *ev)
{
    ngx_http_promgate_kafka_finish(0);
}


static void
ngx_http_promgate_kafka_deadline_handler(ngx_event_t *ev)
{
    ngx_log_error(NGX_LOG_WARN, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: the consumers did not close in time "
                  "(posts in flight or brokers unreachable): closing now; "
                  "uncommitted messages will be read again");

    ngx_http_promgate_kafka_finish(1);
}


static void
ngx_http_promgate_kafka_finish(ngx_uint_t force)
{
    ngx_uint_t                            i, n;
    ngx_queue_t                          *q;
    ngx_msec_t                            start;
    ngx_http_promgate_kafka_worker_t     *w;
    ngx_http_promgate_kafka_consumer_t   *c;
    ngx_http_promgate_kafka_partition_t  *p;
    ngx_http_promgate_kafka_endpoint_t  **epp;

    w = &ngx_http_promgate_kafka_w;

    if (!w->started || w->finished) {
        return;
    }

    w->finished = 1;
    start = ngx_current_msec;

    ngx_http_promgate_kafka_client_cancel_all();

    epp = w->kmcf->endpoints.elts;

    for (i = 0; i < w->kmcf->endpoints.nelts; i++) {
        ngx_http_promgate_kafka_client_close_idle(epp[i]);
    }

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];

        /* messages first: librdkafka's objects must go before the handle */

        while (!ngx_queue_empty(&c->partitions)) {
            q = ngx_queue_head(&c->partitions);
            p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

            if (p->ps) {
                p->ps->owner = 0;
            }

            ngx_http_promgate_kafka_partition_free(p);
        }

        while (!ngx_queue_empty(&c->revoked)) {
            q = ngx_queue_head(&c->revoked);
            p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);
            ngx_http_promgate_kafka_partition_free(p);
        }

        if (c->cs && ngx_worker < NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS) {
            c->cs->inflight[ngx_worker] = 0;
            c->cs->paused[ngx_worker] = 0;
        }
    }

    /* the producer: what is still queued fails, its callers are told */

    if (w->producer) {
        rd_kafka_purge(w->producer, RD_KAFKA_PURGE_F_QUEUE
                                    |RD_KAFKA_PURGE_F_INFLIGHT
                                    |RD_KAFKA_PURGE_F_NON_BLOCKING);

        for (n = 0; n < NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX; n++) {
            if (rd_kafka_poll(w->producer, 0) == 0) {
                break;
            }
        }
    }

    for (i = 0; i < w->nconsumers; i++) {
        c = &w->consumers[i];

        if (c->rk == NULL) {
            continue;
        }

        rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(c->queue);
        c->queue = NULL;

        rd_kafka_destroy_flags(c->rk, c->closed
                                      ? 0
                                      : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        c->rk = NULL;
    }

    if (w->producer) {
        rd_kafka_queue_io_event_enable(w->producer_queue, -1, NULL, 0);
        rd_kafka_queue_destroy(w->producer_queue);
        w->producer_queue = NULL;

        rd_kafka_destroy(w->producer);
        w->producer = NULL;
    }

    if (w->notify) {
        ngx_close_connection(w->notify);
        w->notify = NULL;
    }

    if (w->tick.timer_set) {
        ngx_del_timer(&w->tick);
    }

    if (w->deadline.timer_set) {
        ngx_del_timer(&w->deadline);
    }

    if (w->drain.posted) {
        ngx_delete_posted_event(&w->drain);
    }

    if (w->done.posted) {
        ngx_delete_posted_event(&w->done);
    }

    ngx_time_update();

    ngx_log_error(NGX_LOG_NOTICE, w->log, 0, "promgate kafka: %s in %Mms",
                  force ? "closed by force" : "closed",
                  ngx_current_msec - start);
}


static void
ngx_http_promgate_kafka_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_promgate_kafka_finish(1);
}
