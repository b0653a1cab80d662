
/*
 * promgate: Kafka consumer and producer in every worker
 * (ngx_http_promgate_kafka_module, a second nginx module in the same .so).
 *
 * The API other glue files use is at the top; the types below it are
 * shared by the Kafka glue files only.  The Kafka glue, by concern (each
 * file calls only the ones below it; the others reach it through handlers
 * it registers: the module table, librdkafka callbacks, nginx events):
 *
 *   _conf.c      directives, postconfiguration: the target, its unix
 *                listener, librdkafka's configurations
 *   _worker.c    init/exit process, draining the queues, the tick,
 *                shutdown
 *   _consumer.c  partitions, taking messages, batches posted to the
 *                target (with ngx_http_promgate_client.c, which a
 *                spool's replay uses too), poison and the dead-letter topic
 *   _producer.c  the producer (the series index, the dead-letter topic)
 *   _loop.c      librdkafka on the event loop: the eventfd, handles
 *   _status.c    counters in a shared zone and their page
 */


#ifndef _NGX_HTTP_PROMGATE_KAFKA_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_KAFKA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <librdkafka/rdkafka.h>

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_kafka.h"

#include "ngx_http_promgate_client.h"


/* ------------------------------------------------ API for other files */

/*
 * Called once per message produced with ngx_http_promgate_kafka_produce(),
 * from the worker's event loop, never from inside the produce call: rc is
 * NGX_OK when the broker has the message, NGX_ERROR otherwise (err says
 * why: timed out, topic unknown, worker shutting down...).
 */
typedef void (*ngx_http_promgate_kafka_delivery_pt)(void *opaque,
    ngx_int_t rc, const char *err);

/*
 * Queues a message to the worker's producer (created on first use; the
 * brokers and properties are those of promgate_kafka_brokers and
 * promgate_kafka_property).  Never blocks.  Returns
 *   NGX_OK        queued, handler will be called
 *   NGX_BUSY      the producer's bounded queue is full: retry later
 *   NGX_DECLINED  no promgate_kafka_brokers, or the worker is exiting
 *   NGX_ERROR     anything else (logged)
 * topic, key and value are copied; key may be NULL.
 */
ngx_int_t ngx_http_promgate_kafka_produce(ngx_str_t *topic, ngx_str_t *key,
    ngx_str_t *value, void *opaque,
    ngx_http_promgate_kafka_delivery_pt handler);


/* -------------------------------------------- Kafka glue internals */

#define NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS   32
#define NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS  1024
#define NGX_HTTP_PROMGATE_KAFKA_NAME            192
#define NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS     256

#define NGX_HTTP_PROMGATE_KAFKA_TICK            1000
#define NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX       10000   /* per wake-up */


/* poison reasons, as counted: pg_kafka_decode()'s, and the glue's */
typedef enum {
    NGX_HTTP_PROMGATE_KAFKA_POISON_MALFORMED = 0,
    NGX_HTTP_PROMGATE_KAFKA_POISON_SNAPPY,
    NGX_HTTP_PROMGATE_KAFKA_POISON_TOO_LARGE,
    NGX_HTTP_PROMGATE_KAFKA_POISON_JSON,
    NGX_HTTP_PROMGATE_KAFKA_POISON_TENANT,
    NGX_HTTP_PROMGATE_KAFKA_POISON_REJECTED,
    NGX_HTTP_PROMGATE_KAFKA_NPOISON
} ngx_http_promgate_kafka_poison_e;


/* counters of one consumer directive, summed over workers */
typedef struct {
    u_char                          group[NGX_HTTP_PROMGATE_KAFKA_NAME];
    u_char                          topics[NGX_HTTP_PROMGATE_KAFKA_NAME];
    ngx_atomic_t                    used;
    ngx_atomic_t                    messages;
    ngx_atomic_t                    bytes;
    ngx_atomic_t                    acked;
    ngx_atomic_t                    samples;
    ngx_atomic_t                    histograms;
    ngx_atomic_t                    exemplars;
    ngx_atomic_t                    posts_stored;
    ngx_atomic_t                    posts_failed;
    ngx_atomic_t                    posts_rejected;
    ngx_atomic_t                    retries;
    ngx_atomic_t                    splits;
    ngx_atomic_t                    poison[NGX_HTTP_PROMGATE_KAFKA_NPOISON];
    ngx_atomic_t                    dlq_produced;
    ngx_atomic_t                    dlq_failed;
    ngx_atomic_t                    rebalances;
    ngx_atomic_t                    inflight[
                                        NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS];
    ngx_atomic_t                    paused[
                                        NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS];
} ngx_http_promgate_kafka_cstats_t;


/* one partition, as last seen by the worker that owns it */
typedef struct {
    u_char                          topic[NGX_HTTP_PROMGATE_KAFKA_NAME];
    ngx_atomic_t                    used;
    ngx_atomic_t                    consumer;       /* cstats slot */
    ngx_atomic_t                    partition;
    ngx_atomic_t                    owner;          /* pid, 0: unassigned */
    ngx_atomic_t                    paused;
    ngx_atomic_int_t                committed;      /* -1: unknown */
    ngx_atomic_int_t                high;           /* -1: unknown */
} ngx_http_promgate_kafka_pstats_t;


typedef struct {
    ngx_http_promgate_kafka_cstats_t  consumers[
                                        NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS];
    ngx_http_promgate_kafka_pstats_t  partitions[
                                        NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS];
} ngx_http_promgate_kafka_stats_t;


/* what names a consumer's counters in the zone, across reloads */
typedef struct {
    ngx_str_t                       group;
    ngx_str_t                       topics;         /* comma-separated */
    ngx_uint_t                      slot;
} ngx_http_promgate_kafka_stats_key_t;


/* ----------------------------------------------------- configuration */

/* one promgate_kafka_consumer directive; read-only after postconfiguration */
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
    ngx_http_promgate_client_endpoint_t  *endpoint;
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
    ngx_array_t                     endpoints;
    rd_kafka_conf_t                *producer_conf;
} ngx_http_promgate_kafka_main_conf_t;


/* ----------------------------------------------------------- runtime */

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


/* an assigned partition, and after its revocation until nothing uses it */
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
    ngx_http_promgate_client_post_t  post;

    ngx_event_t                     retry;
    ngx_uint_t                      retries;
    ngx_http_promgate_kafka_pstats_t     *ps;

    unsigned                        posting:1;
    unsigned                        failing:1;    /* waiting to retry */
    unsigned                        paused:1;     /* as librdkafka knows */
    unsigned                        fetched:1;    /* a message came: its */
                                                  /*   fetcher has started */
    unsigned                        revoked:1;
    unsigned                        seek:1;       /* to wm.refetch, due */
};


/*
 * A consumer of one promgate_kafka_consumer directive in this worker.
 * _worker.c creates its handle and closes it; its partitions and
 * messages are _consumer.c's.
 */
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


/*
 * The worker's Kafka state: one per process, ngx_http_promgate_kafka_w
 * (defined in _worker.c), zeroed and set up by init_process when
 * promgate_kafka_brokers is set.  Who owns what:
 *
 *   kmcf, log, consumers,    _worker.c: set in init_process, released
 *   the four events          in finish(); the events' handlers are its
 *   notify (the eventfd)     _loop.c opens it on first need (consumers or
 *                            producer); _worker.c reads it and closes it
 *   producer, its queue      _producer.c creates them on first use;
 *                            _worker.c polls them with the consumers,
 *                            purges and destroys them in finish()
 *   started, stopping,       _worker.c; every file reads them: nothing
 *   finished                 new is started once stopping
 *
 * Other files post drain (to have the queues drained, and the shutdown
 * move on) and arm tick; only _worker.c adds deadline and posts done.
 * _worker.c sets the handlers, notify_handler included (_loop.c gives it
 * to the eventfd).
 */
typedef struct {
    ngx_http_promgate_kafka_main_conf_t  *kmcf;
    ngx_log_t                      *log;
    ngx_http_promgate_kafka_consumer_t   *consumers;
    ngx_uint_t                      nconsumers;
    ngx_connection_t               *notify;       /* the eventfd */
    ngx_event_handler_pt            notify_handler;   /* its read handler */
    ngx_event_t                     tick;
    ngx_event_t                     drain;        /* posted: drain_all */
    ngx_event_t                     deadline;
    ngx_event_t                     done;         /* posted: finish */
    rd_kafka_t                     *producer;
    rd_kafka_queue_t               *producer_queue;
    unsigned                        started:1;
    unsigned                        stopping:1;
    unsigned                        finished:1;
} ngx_http_promgate_kafka_worker_t;


extern ngx_http_promgate_kafka_worker_t  ngx_http_promgate_kafka_w;
extern ngx_module_t  ngx_http_promgate_kafka_module;


/* ngx_http_promgate_kafka_worker.c */
ngx_int_t ngx_http_promgate_kafka_init_process(ngx_cycle_t *cycle);
void ngx_http_promgate_kafka_exit_process(ngx_cycle_t *cycle);

/* ngx_http_promgate_kafka_consumer.c */
void ngx_http_promgate_kafka_rebalance_cb(rd_kafka_t *rk,
    rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
    void *opaque);
void ngx_http_promgate_kafka_commit_cb(rd_kafka_t *rk,
    rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
    void *opaque);
ngx_int_t ngx_http_promgate_kafka_consumer_drain(
    ngx_http_promgate_kafka_consumer_t *c);
void ngx_http_promgate_kafka_consumer_stall(
    ngx_http_promgate_kafka_consumer_t *c);
void ngx_http_promgate_kafka_consumer_stop(
    ngx_http_promgate_kafka_consumer_t *c);
ngx_uint_t ngx_http_promgate_kafka_consumer_posting(
    ngx_http_promgate_kafka_consumer_t *c);
void ngx_http_promgate_kafka_consumer_free(
    ngx_http_promgate_kafka_consumer_t *c);


/* ngx_http_promgate_kafka_producer.c */
ngx_int_t ngx_http_promgate_kafka_produce_raw(const char *topic,
    const void *key, size_t klen, const void *value, size_t vlen,
    rd_kafka_headers_t *hdrs, void *opaque,
    ngx_http_promgate_kafka_delivery_pt handler);

/* ngx_http_promgate_kafka_loop.c */
rd_kafka_t *ngx_http_promgate_kafka_new(rd_kafka_type_t type,
    rd_kafka_conf_t *conf, void *opaque);
ngx_int_t ngx_http_promgate_kafka_notify_init(void);
void ngx_http_promgate_kafka_wire(rd_kafka_t *rk, rd_kafka_queue_t *queue);
void ngx_http_promgate_kafka_armed(void);

/* ngx_http_promgate_kafka_status.c */
ngx_int_t ngx_http_promgate_kafka_status_init(ngx_conf_t *cf,
    ngx_array_t *keys);
ngx_http_promgate_kafka_cstats_t *ngx_http_promgate_kafka_cstats(
    ngx_uint_t slot);
ngx_http_promgate_kafka_pstats_t *ngx_http_promgate_kafka_pstats_get(
    ngx_uint_t consumer, const char *topic, int32_t partition);
ngx_uint_t ngx_http_promgate_kafka_poison_index(const char *reason);


#endif /* _NGX_HTTP_PROMGATE_KAFKA_H_INCLUDED_ */
