
/*
 * promgate: the worker's Kafka producer, for the series index
 * (ngx_http_promgate_kafka_produce()) and the consumers' dead-letter
 * topic.  It is created on first use, with promgate_kafka_brokers and
 * promgate_kafka_property; its queue wakes the worker through the same
 * eventfd as the consumers' (ngx_http_promgate_kafka_loop.c), and delivery
 * reports come back from the worker's event loop, never from inside a
 * produce call.  The worker purges and destroys it when it exits.
 */


#include "ngx_http_promgate_kafka.h"


/* a message produced through ngx_http_promgate_kafka_produce() */
typedef struct {
    ngx_http_promgate_kafka_delivery_pt  handler;
    void                           *opaque;
} ngx_http_promgate_kafka_delivery_t;


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


static ngx_int_t
ngx_http_promgate_kafka_producer(void)
{
    rd_kafka_t                           *rk;
    rd_kafka_conf_t                      *conf;
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

    conf = rd_kafka_conf_dup(kmcf->producer_conf);
    if (conf == NULL) {
        return NGX_ERROR;
    }

    rd_kafka_conf_set_dr_msg_cb(conf, ngx_http_promgate_kafka_dr_cb);

    rk = ngx_http_promgate_kafka_new(RD_KAFKA_PRODUCER, conf, NULL);
    if (rk == NULL) {
        return NGX_ERROR;
    }

    ngx_http_promgate_kafka_w.producer = rk;
    ngx_http_promgate_kafka_w.producer_queue = rd_kafka_queue_get_main(rk);

    ngx_http_promgate_kafka_wire(rk, ngx_http_promgate_kafka_w.producer_queue);
    ngx_http_promgate_kafka_armed();

    return NGX_OK;
}


ngx_int_t
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

    /* hdrs NULL: no headers (librdkafka takes a NULL list as none) */

    err = rd_kafka_producev(ngx_http_promgate_kafka_w.producer,
                            RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_KEY(key, klen),
                            RD_KAFKA_V_VALUE((void *) value, vlen),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(hdrs),
                            RD_KAFKA_V_OPAQUE(d),
                            RD_KAFKA_V_END);

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
