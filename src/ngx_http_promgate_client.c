
/*
 * promgate: the HTTP/1.1 client of the workers' own unix-domain listeners
 * (the Kafka consumers' batches, a spool's replays).  It posts a
 * remote-write request to a target location over the listener of the
 * location's server, on the worker's event loop (ngx_event_connect_peer),
 * and reuses connections (keep-alive).  The response is parsed by
 * pg_kafka_resp_parse(), apart from the I/O.
 *
 * A keep-alive connection the server closed meanwhile fails before any
 * byte of the answer: the request then goes once more on a fresh
 * connection (a duplicate is harmless, a loss is not possible: the caller
 * acknowledges only a 2xx).
 */


#include "ngx_http_promgate_client.h"


#define NGX_HTTP_PROMGATE_CLIENT_MAX_IDLE  64


typedef struct {
    ngx_queue_t                          queue;    /* in endpoint->idle */
    ngx_http_promgate_client_endpoint_t  *endpoint;
    ngx_connection_t                    *connection;
    ngx_pool_t                          *pool;
} ngx_http_promgate_client_link_t;


static ngx_int_t ngx_http_promgate_client_connect(
    ngx_http_promgate_client_post_t *post);
static ngx_int_t ngx_http_promgate_client_send(
    ngx_http_promgate_client_post_t *post);
static void ngx_http_promgate_client_write(ngx_event_t *wev);
static void ngx_http_promgate_client_read(ngx_event_t *rev);
static void ngx_http_promgate_client_done(
    ngx_http_promgate_client_post_t *post, ngx_uint_t keepalive);
static void ngx_http_promgate_client_fail(
    ngx_http_promgate_client_post_t *post, const char *error);
static void ngx_http_promgate_client_idle_put(ngx_connection_t *c,
    ngx_http_promgate_client_link_t *link);
static ngx_connection_t *ngx_http_promgate_client_idle_get(
    ngx_http_promgate_client_endpoint_t *ep,
    ngx_http_promgate_client_link_t **link);
static void ngx_http_promgate_client_idle_handler(ngx_event_t *ev);
static void ngx_http_promgate_client_close(ngx_connection_t *c,
    ngx_http_promgate_client_link_t *link);
static void ngx_http_promgate_client_end(
    ngx_http_promgate_client_post_t *post, ngx_uint_t keepalive);


static ngx_queue_t  ngx_http_promgate_client_posts;
static ngx_uint_t   ngx_http_promgate_client_nposts;
static ngx_uint_t   ngx_http_promgate_client_posts_init;


ngx_int_t
ngx_http_promgate_client_post(ngx_http_promgate_client_post_t *post)
{
    ngx_int_t   rc;
    ngx_uint_t  tries;

    if (!ngx_http_promgate_client_posts_init) {
        ngx_queue_init(&ngx_http_promgate_client_posts);
        ngx_http_promgate_client_posts_init = 1;
    }

    post->status = 0;
    post->error = NULL;
    post->reused = 0;
    post->answered = 0;
    post->connection = NULL;
    post->link = NULL;

    /* a stale keep-alive connection may fail at once: one more try */

    for (tries = 0; tries < 2; tries++) {

        rc = ngx_http_promgate_client_connect(post);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        post->active = 1;
        ngx_queue_insert_tail(&ngx_http_promgate_client_posts, &post->queue);
        ngx_http_promgate_client_nposts++;

        if (rc == NGX_AGAIN) {
            ngx_add_timer(post->connection->write, post->timeout);
            return NGX_OK;
        }

        if (ngx_http_promgate_client_send(post) == NGX_OK) {
            return NGX_OK;
        }

        ngx_http_promgate_client_end(post, 0);

        if (!post->reused) {
            break;
        }
    }

    if (post->error == NULL) {
        post->error = "could not send the request";
    }

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_promgate_client_connect(ngx_http_promgate_client_post_t *post)
{
    ngx_int_t                            rc;
    ngx_pool_t                          *pool;
    ngx_connection_t                    *c;
    ngx_peer_connection_t                pc;
    ngx_http_promgate_client_link_t      *link;
    ngx_http_promgate_client_endpoint_t  *ep;
    ngx_file_info_t                      fi;

    ep = post->endpoint;
    post->connecting = 0;

    c = ngx_http_promgate_client_idle_get(ep, &link);

    if (c) {
        post->reused = 1;

    } else {
        post->reused = 0;

        /*
         * A missing socket file (the listener went away in a reload) makes
         * connect() fail with ENOENT, which nginx logs as critical.
         */

        if (ngx_file_info(ep->name.data + sizeof("unix:") - 1, &fi)
            == NGX_FILE_ERROR)
        {
            post->error = (ngx_errno == NGX_EACCES)
                          ? "the worker user may not reach the unix socket "
                            "of the target (permissions of its directory)"
                          : "the unix socket of the target does not exist";
            return NGX_ERROR;
        }

        ngx_memzero(&pc, sizeof(ngx_peer_connection_t));

        pc.sockaddr = ep->sockaddr;
        pc.socklen = ep->socklen;
        pc.name = &ep->name;
        pc.get = ngx_event_get_peer;
        pc.log = post->log;
        pc.log_error = NGX_ERROR_ERR;

        rc = ngx_event_connect_peer(&pc);

        if (rc != NGX_OK && rc != NGX_AGAIN) {
            post->error = "could not connect to the target's unix socket";
            return NGX_ERROR;
        }

        c = pc.connection;

        pool = ngx_create_pool(256, post->log);
        if (pool == NULL) {
            ngx_close_connection(c);
            post->error = "out of memory";
            return NGX_ERROR;
        }

        link = ngx_pcalloc(pool, sizeof(ngx_http_promgate_client_link_t));
        if (link == NULL) {
            ngx_close_connection(c);
            ngx_destroy_pool(pool);
            post->error = "out of memory";
            return NGX_ERROR;
        }

        link->pool = pool;
        link->endpoint = ep;
        link->connection = c;
        c->pool = pool;

        post->connecting = (rc == NGX_AGAIN);
    }

    c->data = post;
    c->idle = 0;
    c->read->handler = ngx_http_promgate_client_read;
    c->write->handler = ngx_http_promgate_client_write;

    post->connection = c;
    post->link = link;

    pg_kafka_resp_init(&post->resp);

    /* the request, from the start: head and body are left untouched */

    ngx_memzero(post->bufs, sizeof(post->bufs));

    post->bufs[0].pos = post->head.data;
    post->bufs[0].last = post->head.data + post->head.len;
    post->bufs[0].start = post->bufs[0].pos;
    post->bufs[0].end = post->bufs[0].last;
    post->bufs[0].memory = 1;

    post->bufs[1].pos = post->body.data;
    post->bufs[1].last = post->body.data + post->body.len;
    post->bufs[1].start = post->bufs[1].pos;
    post->bufs[1].end = post->bufs[1].last;
    post->bufs[1].memory = 1;
    post->bufs[1].last_buf = 1;

    post->chain[0].buf = &post->bufs[0];
    post->chain[0].next = post->body.len ? &post->chain[1] : NULL;
    post->chain[1].buf = &post->bufs[1];
    post->chain[1].next = NULL;

    post->out = &post->chain[0];

    return post->connecting ? NGX_AGAIN : NGX_OK;
}


static ngx_int_t
ngx_http_promgate_client_send(ngx_http_promgate_client_post_t *post)
{
    ngx_chain_t       *cl;
    ngx_connection_t  *c;

    c = post->connection;

    if (post->out) {
        cl = c->send_chain(c, post->out, 0);

        if (cl == NGX_CHAIN_ERROR) {
            post->error = "could not send the request";
            return NGX_ERROR;
        }

        post->out = cl;
    }

    if (post->out) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, post->timeout);
        }

        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            post->error = "could not wait to send";
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!c->read->timer_set) {
        ngx_add_timer(c->read, post->timeout);
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        post->error = "could not wait for the answer";
        return NGX_ERROR;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_promgate_client_write(ngx_event_t *wev)
{
    int                              err;
    socklen_t                        len;
    ngx_connection_t                *c;
    ngx_http_promgate_client_post_t  *post;

    c = wev->data;
    post = c->data;

    if (wev->timedout) {
        ngx_http_promgate_client_fail(post, "timed out sending");
        return;
    }

    if (post->connecting) {
        post->connecting = 0;

        /* the connect result */

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_promgate_client_fail(post, "could not connect to "
                                              "the target's unix socket");
            return;
        }
    }

    if (ngx_http_promgate_client_send(post) != NGX_OK) {
        ngx_http_promgate_client_fail(post, post->error);
    }
}


static void
ngx_http_promgate_client_read(ngx_event_t *rev)
{
    size_t                           used;
    ssize_t                          n;
    ngx_connection_t                *c;
    pg_kafka_resp_rc_e               rc;
    ngx_http_promgate_client_post_t  *post;
    u_char                           buf[4096];

    c = rev->data;
    post = c->data;

    if (rev->timedout) {
        ngx_http_promgate_client_fail(post, "timed out waiting for the "
                                          "answer");
        return;
    }

    if (c->close) {
        ngx_http_promgate_client_fail(post, "the worker is exiting");
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_promgate_client_fail(post, "could not wait for "
                                                  "the answer");
            }

            return;
        }

        if (n == 0 || n == NGX_ERROR) {

            if (n == 0 && post->answered
                && pg_kafka_resp_eof(&post->resp) == PG_KAFKA_RESP_DONE)
            {
                ngx_http_promgate_client_done(post, 0);
                return;
            }

            if (post->reused && !post->answered) {

                /* the server had closed the keep-alive connection */

                ngx_http_promgate_client_end(post, 0);

                if (ngx_http_promgate_client_post(post) != NGX_OK) {
                    post->status = 0;
                    post->handler(post);
                }

                return;
            }

            ngx_http_promgate_client_fail(post, "the connection closed "
                                              "before the answer");
            return;
        }

        post->answered = 1;

        rc = pg_kafka_resp_parse(&post->resp, buf, n, &used);

        if (rc == PG_KAFKA_RESP_ERROR) {
            ngx_http_promgate_client_fail(post, "invalid HTTP answer");
            return;
        }

        if (rc == PG_KAFKA_RESP_DONE) {
            ngx_http_promgate_client_done(post,
                                              post->resp.keepalive
                                              && (ssize_t) used == n
                                              && post->out == NULL);
            return;
        }
    }
}


static void
ngx_http_promgate_client_done(ngx_http_promgate_client_post_t *post,
    ngx_uint_t keepalive)
{
    ngx_connection_t  *c;

    c = post->connection;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ngx_http_promgate_client_end(post, keepalive && !ngx_exiting
                                           && !ngx_terminate && !ngx_quit);

    post->status = post->resp.status;

    post->handler(post);
}


static void
ngx_http_promgate_client_fail(ngx_http_promgate_client_post_t *post,
    const char *error)
{
    ngx_http_promgate_client_end(post, 0);

    post->status = 0;
    post->error = error;

    post->handler(post);
}


/*
 * The attempt is over: the post leaves the active ones, its connection is
 * kept for another post (keepalive) or closed.
 */

static void
ngx_http_promgate_client_end(ngx_http_promgate_client_post_t *post,
    ngx_uint_t keepalive)
{
    if (keepalive) {
        ngx_http_promgate_client_idle_put(post->connection, post->link);

    } else {
        ngx_http_promgate_client_close(post->connection, post->link);
    }

    post->connection = NULL;

    ngx_queue_remove(&post->queue);
    ngx_http_promgate_client_nposts--;
    post->active = 0;
}


void
ngx_http_promgate_client_cancel_all(void)
{
    ngx_queue_t                     *q;
    ngx_http_promgate_client_post_t  *post;

    if (!ngx_http_promgate_client_posts_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_promgate_client_posts)) {
        q = ngx_queue_head(&ngx_http_promgate_client_posts);
        post = ngx_queue_data(q, ngx_http_promgate_client_post_t, queue);
        ngx_http_promgate_client_end(post, 0);
    }
}


ngx_uint_t
ngx_http_promgate_client_active(void)
{
    return ngx_http_promgate_client_nposts;
}


/* ------------------------------------------------ keep-alive connections */


static void
ngx_http_promgate_client_idle_put(ngx_connection_t *c,
    ngx_http_promgate_client_link_t *link)
{
    ngx_http_promgate_client_endpoint_t  *ep;

    ep = link->endpoint;

    if (ep->nidle >= NGX_HTTP_PROMGATE_CLIENT_MAX_IDLE) {
        ngx_http_promgate_client_close(c, link);
        return;
    }

    c->data = link;
    c->read->handler = ngx_http_promgate_client_idle_handler;
    c->write->handler = ngx_http_empty_handler;

    /* ngx_close_idle_connections() closes it when the worker exits */
    c->idle = 1;

    ngx_queue_insert_head(&ep->idle, &link->queue);
    ep->nidle++;

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


static ngx_connection_t *
ngx_http_promgate_client_idle_get(ngx_http_promgate_client_endpoint_t *ep,
    ngx_http_promgate_client_link_t **link)
{
    ngx_queue_t                     *q;
    ngx_connection_t                *c;
    ngx_http_promgate_client_link_t  *l;

    if (ngx_queue_empty(&ep->idle)) {
        return NULL;
    }

    q = ngx_queue_head(&ep->idle);
    ngx_queue_remove(q);
    ep->nidle--;

    l = ngx_queue_data(q, ngx_http_promgate_client_link_t, queue);
    c = l->connection;

    c->idle = 0;

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    *link = l;

    return c;
}


static void
ngx_http_promgate_client_idle_handler(ngx_event_t *ev)
{
    int                              n;
    char                             buf[1];
    ngx_connection_t                *c;
    ngx_http_promgate_client_link_t  *link;

    c = ev->data;
    link = c->data;

    if (!c->close) {
        n = recv(c->fd, buf, 1, MSG_PEEK);

        if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
            ev->ready = 0;

            if (ngx_handle_read_event(c->read, 0) == NGX_OK) {
                return;
            }
        }
    }

    /* closed by the server, unexpected bytes, or the worker is exiting */

    ngx_queue_remove(&link->queue);
    link->endpoint->nidle--;

    ngx_http_promgate_client_close(c, link);
}


void
ngx_http_promgate_client_close_idle(
    ngx_http_promgate_client_endpoint_t *ep)
{
    ngx_queue_t                     *q;
    ngx_http_promgate_client_link_t  *link;

    while (!ngx_queue_empty(&ep->idle)) {
        q = ngx_queue_head(&ep->idle);
        ngx_queue_remove(q);
        ep->nidle--;

        link = ngx_queue_data(q, ngx_http_promgate_client_link_t, queue);
        ngx_http_promgate_client_close(link->connection, link);
    }
}


static void
ngx_http_promgate_client_close(ngx_connection_t *c,
    ngx_http_promgate_client_link_t *link)
{
    ngx_pool_t  *pool;

    pool = link ? link->pool : NULL;

    if (c) {
        c->pool = NULL;
        ngx_close_connection(c);
    }

    if (pool) {
        ngx_destroy_pool(pool);
    }
}
