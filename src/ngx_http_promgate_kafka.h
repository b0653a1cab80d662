
/*
 * promgate: Kafka consumer and producer in every worker
 * (ngx_http_promgate_kafka_module, a second nginx module in the same .so).
 *
 * The API other glue files use is at the top; the types below it are
 * shared by the Kafka glue files only.
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

/*
 * The consumers' metrics in the Prometheus text format (summed over all
 * workers, from a shared zone), for the status page.  Writes at most
 * last - p bytes; ngx_http_promgate_kafka_status_size() is enough.
 */
u_char *ngx_http_promgate_kafka_status(u_char *p, u_char *last);
size_t ngx_http_promgate_kafka_status_size(void);


/* -------------------------------------------- Kafka glue internals */

#define NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS   32
#define NGX_HTTP_PROMGATE_KAFKA_MAX_PARTITIONS  1024
#define NGX_HTTP_PROMGATE_KAFKA_NAME            192
#define NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS     256


/* poison reasons, as counted */
typedef enum {
    NGX_HTTP_PROMGATE_KAFKA_POISON_MALFORMED = 0,
    NGX_HTTP_PROMGATE_KAFKA_POISON_MISSING_NAME,
    NGX_HTTP_PROMGATE_KAFKA_POISON_INVALID_LABEL_NAME,
    NGX_HTTP_PROMGATE_KAFKA_POISON_UNSORTED_LABELS,
    NGX_HTTP_PROMGATE_KAFKA_POISON_DUPLICATE_LABEL,
    NGX_HTTP_PROMGATE_KAFKA_POISON_INVALID_UTF8,
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
    ngx_atomic_t                    inflight[NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS];
    ngx_atomic_t                    paused[NGX_HTTP_PROMGATE_KAFKA_MAX_WORKERS];
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


/* the unix-domain listener a target is posted to */
typedef struct {
    ngx_str_t                       name;           /* "unix:/path" */
    struct sockaddr                *sockaddr;
    socklen_t                       socklen;
    ngx_queue_t                     idle;           /* this worker's */
    ngx_uint_t                      nidle;
} ngx_http_promgate_kafka_endpoint_t;


typedef struct ngx_http_promgate_kafka_post_s  ngx_http_promgate_kafka_post_t;

typedef void (*ngx_http_promgate_kafka_post_pt)(
    ngx_http_promgate_kafka_post_t *post);


/*
 * One POST to the target over the endpoint, with a fresh or a keep-alive
 * connection.  status is 0 when there was no answer (error says why).
 */
struct ngx_http_promgate_kafka_post_s {
    ngx_http_promgate_kafka_endpoint_t  *endpoint;
    ngx_str_t                       head;           /* request line + headers */
    ngx_str_t                       body;
    ngx_msec_t                      timeout;
    ngx_log_t                      *log;

    ngx_http_promgate_kafka_post_pt handler;
    void                           *data;

    ngx_connection_t               *connection;
    void                           *link;           /* the connection's */
    ngx_queue_t                     queue;          /* active posts */
    ngx_chain_t                    *out;
    ngx_chain_t                     chain[2];
    ngx_buf_t                       bufs[2];
    pg_kafka_resp_t                 resp;

    ngx_uint_t                      status;
    const char                     *error;

    unsigned                        active:1;
    unsigned                        connecting:1;
    unsigned                        reused:1;       /* keep-alive connection */
    unsigned                        answered:1;     /* response bytes seen */
};


/* ngx_http_promgate_kafka_client.c */
ngx_int_t ngx_http_promgate_kafka_post_start(
    ngx_http_promgate_kafka_post_t *post);
void ngx_http_promgate_kafka_post_cancel(ngx_http_promgate_kafka_post_t *post);
void ngx_http_promgate_kafka_client_close_idle(
    ngx_http_promgate_kafka_endpoint_t *ep);
void ngx_http_promgate_kafka_client_cancel_all(void);
ngx_uint_t ngx_http_promgate_kafka_client_active(void);

/* ngx_http_promgate_kafka_status.c */
ngx_int_t ngx_http_promgate_kafka_status_init(ngx_conf_t *cf,
    ngx_array_t *keys);
ngx_http_promgate_kafka_stats_t *ngx_http_promgate_kafka_stats(void);
ngx_http_promgate_kafka_cstats_t *ngx_http_promgate_kafka_cstats(
    ngx_uint_t slot);
ngx_http_promgate_kafka_pstats_t *ngx_http_promgate_kafka_pstats_get(
    ngx_uint_t consumer, const char *topic, int32_t partition);
ngx_uint_t ngx_http_promgate_kafka_poison_index(const char *reason);


extern ngx_module_t  ngx_http_promgate_kafka_module;


#endif /* _NGX_HTTP_PROMGATE_KAFKA_H_INCLUDED_ */
