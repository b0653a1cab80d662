
/*
 * promgate: the Kafka module in each worker, from init_process to exit.
 *
 * Each worker, in init_process (never the master, never before fork),
 * creates one consumer per promgate_kafka_consumer directive; they join
 * their groups and the partitions spread over every worker of every nginx
 * in the group (cooperative-sticky).  Everything runs on the worker's
 * event loop: librdkafka's queues signal an eventfd registered as an nginx
 * read event (ngx_http_promgate_kafka_loop.c), and are drained here on each
 * wake-up, on posted drains and on a 1s tick; what is taken is the
 * consumers' (ngx_http_promgate_kafka_consumer.c).  On reload and quit the
 * worker stops fetching, lets the posts in flight end and closes the
 * consumers, within a deadline.
 */


#include "ngx_http_promgate_kafka.h"


#define NGX_HTTP_PROMGATE_KAFKA_SHUTDOWN     5000
#define NGX_HTTP_PROMGATE_KAFKA_DESTROY      1000    /* of it, for destroy */


static void ngx_http_promgate_kafka_notify_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_drain_all(void);
static void ngx_http_promgate_kafka_stop(void);
static void ngx_http_promgate_kafka_step(void);
static void ngx_http_promgate_kafka_finish(ngx_uint_t force);
static void ngx_http_promgate_kafka_tick_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_drain_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_deadline_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_done_handler(ngx_event_t *ev);


ngx_http_promgate_kafka_worker_t  ngx_http_promgate_kafka_w;

/* the debug log of a timer reads its data as a connection: give it one */
static ngx_connection_t  ngx_http_promgate_kafka_no_connection;


static ngx_int_t
ngx_http_promgate_kafka_consumer_start(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_uint_t                        i;
    ngx_str_t                        *topic;
    rd_kafka_conf_t                  *conf;
    rd_kafka_resp_err_t               err;
    rd_kafka_topic_partition_list_t  *list;

    conf = rd_kafka_conf_dup(c->conf->rdconf);
    if (conf == NULL) {
        return NGX_ERROR;
    }

    rd_kafka_conf_set_rebalance_cb(conf, ngx_http_promgate_kafka_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf,
                                       ngx_http_promgate_kafka_commit_cb);

    c->rk = ngx_http_promgate_kafka_new(RD_KAFKA_CONSUMER, conf, c);
    if (c->rk == NULL) {
        return NGX_ERROR;
    }

    (void) rd_kafka_poll_set_consumer(c->rk);

    c->queue = rd_kafka_queue_get_consumer(c->rk);

    ngx_http_promgate_kafka_wire(c->rk, c->queue);

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


ngx_int_t
ngx_http_promgate_kafka_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                                i;
    ngx_http_promgate_client_endpoint_t      **epp;
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

    w->notify_handler = ngx_http_promgate_kafka_notify_handler;

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
    ngx_uint_t                         i, n, more;
    ngx_http_promgate_kafka_worker_t  *w;

    w = &ngx_http_promgate_kafka_w;

    if (w->finished) {
        return;
    }

    more = 0;

    for (i = 0; i < w->nconsumers; i++) {
        if (ngx_http_promgate_kafka_consumer_drain(&w->consumers[i])
            == NGX_AGAIN)
        {
            more = 1;
        }
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
    ngx_uint_t                            i;
    ngx_core_conf_t                      *ccf;
    ngx_http_promgate_kafka_worker_t     *w;
    ngx_http_promgate_client_endpoint_t  **epp;

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
        ngx_http_promgate_kafka_consumer_stop(&w->consumers[i]);
    }

    epp = w->kmcf->endpoints.elts;

    for (i = 0; i < w->kmcf->endpoints.nelts; i++) {
        ngx_http_promgate_client_close_idle(epp[i]);
    }

    ngx_log_error(NGX_LOG_INFO, w->log, 0,
                  "promgate kafka: stopping: %ui posts in flight, %Mms at "
                  "most", ngx_http_promgate_client_active(), timeout);

    ngx_http_promgate_kafka_step();
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
            if (ngx_http_promgate_kafka_consumer_posting(c)) {
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
     * Not from here: step() runs in the middle of the worker's handlers
     * (stop(), drain_all() right after a poll), and the handles go in a
     * handler of their own.
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
    ngx_msec_t                            start;
    ngx_http_promgate_kafka_worker_t     *w;
    ngx_http_promgate_kafka_consumer_t   *c;
    ngx_http_promgate_client_endpoint_t  **epp;

    w = &ngx_http_promgate_kafka_w;

    if (!w->started || w->finished) {
        return;
    }

    w->finished = 1;
    start = ngx_current_msec;

    ngx_http_promgate_client_cancel_all();

    epp = w->kmcf->endpoints.elts;

    for (i = 0; i < w->kmcf->endpoints.nelts; i++) {
        ngx_http_promgate_client_close_idle(epp[i]);
    }

    /* messages first: librdkafka's objects must go before the handle */

    for (i = 0; i < w->nconsumers; i++) {
        ngx_http_promgate_kafka_consumer_free(&w->consumers[i]);
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


void
ngx_http_promgate_kafka_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_promgate_kafka_finish(1);
}
