
/*
 * promgate: the Kafka consumers' work in a worker: partitions as they are
 * assigned and revoked, messages taken from librdkafka's queue, batches
 * posted to the target (ngx_http_promgate_client.c), poison messages
 * and the dead-letter topic.  ngx_http_promgate_kafka_worker.c drives it
 * from the event loop and shuts it down.
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


#define NGX_HTTP_PROMGATE_KAFKA_STALL        10000   /* blocked, then pause */


static void ngx_http_promgate_kafka_take(ngx_http_promgate_kafka_consumer_t *c,
    rd_kafka_message_t *rkm);
static void ngx_http_promgate_kafka_refetch(
    ngx_http_promgate_kafka_partition_t *p, rd_kafka_message_t *rkm);
static void ngx_http_promgate_kafka_partition_seek(
    ngx_http_promgate_kafka_partition_t *p);
static void ngx_http_promgate_kafka_partition_send(
    ngx_http_promgate_kafka_partition_t *p);
static void ngx_http_promgate_kafka_retry_handler(ngx_event_t *ev);
static void ngx_http_promgate_kafka_posted(
    ngx_http_promgate_client_post_t *post);
static void ngx_http_promgate_kafka_poison(
    ngx_http_promgate_kafka_partition_t *p,
    ngx_http_promgate_kafka_msg_t *m, const char *reason, const char *error);
static void ngx_http_promgate_kafka_settled(void);


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
     * Not paused, and nothing is said to librdkafka about it here.
     * librdkafka keeps a partition's pause across revocation and a new
     * assignment, but promgate resumes what it paused as the partition is
     * revoked (partition_revoke()), so a partition arrives unpaused.  An
     * explicit resume now would be worse than useless: librdkafka 2.0.2
     * bumps the partition's op version on every pause or resume call, and
     * one that lands while the library starts the fetcher for this
     * assignment (FETCH_START, sent once the committed offset is known)
     * makes that op outdated: it is dropped, and the partition stays
     * assigned and is never fetched until the next rebalance (librdkafka
     * #2190).  Even when it lands after the start, it discards what was
     * fetched and fetches it again.
     */
    p->paused = 0;

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

    /*
     * Until its first message comes, librdkafka may still be starting the
     * partition's fetcher: a pause or a resume then could make the start
     * outdated (see partition_new()).  Nothing fetched, nothing to hold
     * back: take() calls this again with the first message.
     */
    if (!p->fetched) {
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


static void
ngx_http_promgate_kafka_consumer_sync_pause(
    ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);
        ngx_http_promgate_kafka_partition_sync_pause(p);
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
    ngx_http_promgate_kafka_worker_t  *w;

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

    ngx_http_promgate_kafka_consumer_sync_pause(c);
}


/* blocked for too long: pause, to be able to poll */

void
ngx_http_promgate_kafka_consumer_stall(ngx_http_promgate_kafka_consumer_t *c)
{
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

    ngx_http_promgate_kafka_consumer_sync_pause(c);

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


/* the messages taken and not in the batch being posted are dropped */

static void
ngx_http_promgate_kafka_partition_drop(ngx_http_promgate_kafka_partition_t *p)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *next;
    ngx_http_promgate_kafka_msg_t  *m;

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
}


static void
ngx_http_promgate_kafka_partition_revoke(ngx_http_promgate_kafka_partition_t *p)
{
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
    ngx_http_promgate_kafka_partition_drop(p);

    ngx_queue_remove(&p->queue);
    ngx_queue_insert_tail(&p->consumer->revoked, &p->queue);

    ngx_http_promgate_kafka_partition_release(p);
}


/* ---------------------------------------- rebalances and commits */


void
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

            /* nothing said to librdkafka before the first message */

            ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                          "promgate kafka: group \"%V\": %s/%D assigned",
                          &c->conf->group, tp->topic, tp->partition);
        }

        ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: group \"%V\": joined, %d "
                      "partition(s) assigned to this worker",
                      &c->conf->group, parts->cnt);
        return;
    }

    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: group \"%V\": rebalance error: %s",
                      &c->conf->group, rd_kafka_err2str(err));
    }

    ngx_log_error(NGX_LOG_INFO, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: group \"%V\": rebalancing, %d "
                  "partition(s) revoked from this worker",
                  &c->conf->group, parts->cnt);

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


void
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


/* ------------------------------------------------ taking messages */


/*
 * What librdkafka's queue holds: to empty it (librdkafka signals only when
 * it was empty), or up to max_in_flight (see consumer_pressure()); while
 * paused, what comes is what was fetched before the pause.  Then each
 * partition posts what waits.  NGX_AGAIN: stopped at DRAIN_MAX, more is
 * there (and no signal comes for it).
 */

ngx_int_t
ngx_http_promgate_kafka_consumer_drain(ngx_http_promgate_kafka_consumer_t *c)
{
    int64_t                               lo, hi;
    ngx_int_t                             rc;
    ngx_uint_t                            n;
    ngx_queue_t                          *q;
    rd_kafka_message_t                   *rkm;
    ngx_http_promgate_kafka_partition_t  *p;

    if (c->rk == NULL || c->closed) {
        return NGX_OK;
    }

    for (n = 0; n < NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX; n++) {

        if (c->held >= c->conf->max_in_flight && !c->paused
            && !ngx_http_promgate_kafka_w.stopping)
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

    rc = (n == NGX_HTTP_PROMGATE_KAFKA_DRAIN_MAX) ? NGX_AGAIN : NGX_OK;

    if (c->closing && rd_kafka_consumer_closed(c->rk)) {
        c->closed = 1;
        return rc;
    }

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

        if (p->seek) {
            ngx_http_promgate_kafka_partition_seek(p);
        }

        ngx_http_promgate_kafka_partition_send(p);

        if (p->ps
            && rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition,
                                              &lo, &hi)
               == RD_KAFKA_RESP_ERR_NO_ERROR
            && hi >= 0)
        {
            p->ps->high = hi;
        }
    }

    ngx_http_promgate_kafka_consumer_pressure(c);

    return rc;
}


/*
 * A message that could not be kept for want of memory: the partition is
 * fetched again from its offset (the watermark refuses the later ones
 * meanwhile); a seek that fails is tried again at the next drain.
 */

static void
ngx_http_promgate_kafka_refetch(ngx_http_promgate_kafka_partition_t *p,
    rd_kafka_message_t *rkm)
{
    ngx_log_error(NGX_LOG_WARN, ngx_http_promgate_kafka_w.log, 0,
                  "promgate kafka: %s/%D: no memory for offset %L: it is "
                  "fetched again", p->topic, p->partition, rkm->offset);

    pg_kafka_wm_refetch(&p->wm, rkm->offset);
    rd_kafka_message_destroy(rkm);

    p->seek = 1;
    ngx_http_promgate_kafka_partition_seek(p);
}


static void
ngx_http_promgate_kafka_partition_seek(ngx_http_promgate_kafka_partition_t *p)
{
    rd_kafka_error_t                 *error;
    rd_kafka_topic_partition_list_t  *list;

    if (!p->seek || p->wm.refetch < 0 || p->revoked
        || p->consumer->rk == NULL || p->consumer->closed)
    {
        p->seek = 0;
        return;
    }

    list = rd_kafka_topic_partition_list_new(1);
    if (list == NULL) {
        return;
    }

    rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset =
        p->wm.refetch;

    /* asynchronous: messages fetched before it are discarded */
    error = rd_kafka_seek_partitions(p->consumer->rk, list, 0);

    rd_kafka_topic_partition_list_destroy(list);

    if (error) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_promgate_kafka_w.log, 0,
                      "promgate kafka: %s/%D: seek to offset %L failed: %s",
                      p->topic, p->partition, p->wm.refetch,
                      rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return;
    }

    p->seek = 0;
}


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

    if (p && !p->fetched) {
        /* its fetcher has started: pausing and resuming are safe now */
        p->fetched = 1;
        ngx_http_promgate_kafka_partition_sync_pause(p);
    }

    if (p == NULL || ngx_http_promgate_kafka_w.stopping) {
        /* a stray message of a revoked partition, or shutting down */
        rd_kafka_message_destroy(rkm);
        return;
    }

    /* no memory: the message is fetched again, nothing after it is taken */

    m = ngx_calloc(sizeof(ngx_http_promgate_kafka_msg_t),
                   ngx_http_promgate_kafka_w.log);
    if (m == NULL) {
        ngx_http_promgate_kafka_refetch(p, rkm);
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
            ngx_free(m);
            ngx_http_promgate_kafka_refetch(p, rkm);
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
        /*
         * at or below an offset taken already (a duplicate), or after one
         * awaited again (it comes again after that one)
         */
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_http_promgate_kafka_w.log, 0,
                       "promgate kafka: %s/%D: offset %L dropped (%d)",
                       topic, rkm->partition, rkm->offset, rc);
        ngx_free(m);
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

    alloc.alloc = ngx_http_promgate_pool_alloc;
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
        z = ngx_pnalloc(pool, pg_snappy_max_encoded(total));

        if (buf == NULL || z == NULL) {
            ngx_destroy_pool(pool);
            goto nomem;
        }

        total = 0;

        for (i = 0; i < pieces.nelts; i++) {
            ngx_memcpy(buf + total, piece[i].data, piece[i].len);
            total += piece[i].len;
        }

        zlen = pg_snappy_max_encoded(total);

        if (pg_snappy_encode(buf, total, z, &zlen) != PG_SNAPPY_OK) {
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

    if (ngx_http_promgate_client_post(&p->post) != NGX_OK) {
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
ngx_http_promgate_kafka_posted(ngx_http_promgate_client_post_t *post)
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
        ngx_http_promgate_kafka_settled();
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
        ngx_http_promgate_kafka_settled();
    }
}


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


/* ------------------------------------------------ shutdown */


/*
 * While the worker stops, a post or a DLQ delivery that ends may let a
 * consumer close: the worker's drain (which then steps the shutdown on)
 * runs once this event is handled.
 */

static void
ngx_http_promgate_kafka_settled(void)
{
    ngx_http_promgate_kafka_worker_t  *w;

    w = &ngx_http_promgate_kafka_w;

    if (!w->drain.posted && !w->finished) {
        ngx_post_event(&w->drain, &ngx_posted_events);
    }
}


/* stop fetching; what is not posted is dropped (it is read again later) */

void
ngx_http_promgate_kafka_consumer_stop(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

    for (q = ngx_queue_head(&c->partitions);
         q != ngx_queue_sentinel(&c->partitions);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_promgate_kafka_partition_t, queue);

        if (p->retry.timer_set) {
            ngx_del_timer(&p->retry);
        }

        ngx_http_promgate_kafka_partition_drop(p);
        ngx_http_promgate_kafka_partition_sync_pause(p);
    }
}


/* a post or a DLQ delivery of an assigned partition is still pending */

ngx_uint_t
ngx_http_promgate_kafka_consumer_posting(ngx_http_promgate_kafka_consumer_t *c)
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


/*
 * The partitions and their messages, assigned or revoked: librdkafka's
 * messages must go before the consumer's handle does.
 */

void
ngx_http_promgate_kafka_consumer_free(ngx_http_promgate_kafka_consumer_t *c)
{
    ngx_queue_t                          *q;
    ngx_http_promgate_kafka_partition_t  *p;

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
