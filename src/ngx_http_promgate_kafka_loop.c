
/*
 * promgate: librdkafka on the worker's event loop.  librdkafka's queues
 * (every consumer's, the producer's) signal one eventfd, registered as an
 * nginx read event (the worker drains them when it fires, see
 * ngx_http_promgate_kafka_worker.c), and librdkafka's logs come back
 * through the same queues so that they reach nginx's error log from the
 * worker, not from librdkafka's threads.  The handles are created here,
 * with nginx's signals blocked for librdkafka's threads.
 *
 * The consumers and the producer (created on first use) both need this:
 * it stands apart so that the calls between the Kafka files run one way.
 */


#include "ngx_http_promgate_kafka.h"

/* after nginx's headers, which set the feature macros (nginx >= 1.25) */
#include <sys/eventfd.h>
#include <signal.h>
#include <pthread.h>


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


/* the eventfd, registered for reading: one per worker */

ngx_int_t
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

    c->read->handler = ngx_http_promgate_kafka_w.notify_handler;
    c->read->log = ngx_http_promgate_kafka_w.log;
    c->write->handler = ngx_http_empty_handler;
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


/*
 * A consumer or the producer, from conf (a copy, with the caller's
 * callbacks set, that the handle takes over).  librdkafka's threads must
 * not take nginx's signals: they are blocked while it starts them.
 */

rd_kafka_t *
ngx_http_promgate_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
    void *opaque)
{
    char         err[512];
    sigset_t     all, old;
    rd_kafka_t  *rk;

    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_log_cb(conf, ngx_http_promgate_kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, ngx_http_promgate_kafka_error_cb);

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


/*
 * The handle's queue wakes the worker, and its logs come through the
 * queue: the worker writes them.
 */

void
ngx_http_promgate_kafka_wire(rd_kafka_t *rk, rd_kafka_queue_t *queue)
{
    rd_kafka_queue_io_event_enable(queue, ngx_http_promgate_kafka_w.notify->fd,
                                   "\1\0\0\0\0\0\0\0", 8);

    (void) rd_kafka_set_log_queue(rk, queue);
}


/*
 * A queue wired to the eventfd signals only when it turns non-empty: what
 * it held before (the new handle's first logs, moved there by
 * rd_kafka_set_log_queue()) is drained now, and the 1s tick runs.
 */

void
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
