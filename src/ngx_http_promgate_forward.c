
/*
 * promgate: the forwarder, fan-out of a request to every target, with
 * retries.  This is the one implementation of forwarding: HTTP writes,
 * Kafka messages (posted to the same location) and remote reads all come
 * through here.  A module of its own in promgate's .so: its request
 * context (the caller's ngx_http_promgate_forwarder_t), the retry
 * directives, the $promgate_forward_status variable and the body filter
 * that caps the targets' answers.  The caller says when the answer is
 * known (fw->decide) and what it is (fw->answer).
 *
 * Each attempt is a background, in-memory POST subrequest to an internal
 * location that proxies to a storage.  The subrequest carries the client's
 * body byte-for-byte.  Background subrequests do not hold back the main
 * request's output, so the sender is answered as soon as the policy is
 * met; targets still pending go on until they end or the retry deadline.
 */


#include "ngx_http_promgate_module.h"


static ngx_int_t ngx_http_promgate_headers(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_http_promgate_payload_t *pl);
static ngx_int_t ngx_http_promgate_attempt(ngx_http_promgate_fwd_t *f);
static ngx_int_t ngx_http_promgate_attempt_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_promgate_written(ngx_http_promgate_fwd_t *f,
    ngx_http_request_t *sr);
static void ngx_http_promgate_retry(ngx_http_promgate_fwd_t *f,
    ngx_http_request_t *sr);
static void ngx_http_promgate_retry_handler(ngx_event_t *ev);
static void ngx_http_promgate_target_end(ngx_http_promgate_fwd_t *f,
    pg_target_state_e state);
static void ngx_http_promgate_target_failed(ngx_http_promgate_fwd_t *f);
static void ngx_http_promgate_resume(ngx_http_request_t *r);
static void ngx_http_promgate_forwarder_cleanup(void *data);
static ngx_int_t ngx_http_promgate_forward_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_promgate_forward_status_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_promgate_forward_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_promgate_forward_init(ngx_conf_t *cf);
static void *ngx_http_promgate_forward_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_promgate_forward_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_promgate_retry_backoff(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_conf_num_bounds_t  ngx_http_promgate_retries_bounds = {
    ngx_conf_check_num_bounds, 0, 20
};


static ngx_command_t  ngx_http_promgate_forward_commands[] = {

    { ngx_string("promgate_retries"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_forward_loc_conf_t, retries),
      &ngx_http_promgate_retries_bounds },

    { ngx_string("promgate_retry_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_promgate_retry_backoff,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_retry_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_forward_loc_conf_t, retry_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_promgate_forward_module_ctx = {
    ngx_http_promgate_forward_add_variables,  /* preconfiguration */
    ngx_http_promgate_forward_init,        /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_promgate_forward_create_loc_conf,
                                           /* create location configuration */
    ngx_http_promgate_forward_merge_loc_conf
                                           /* merge location configuration */
};


ngx_module_t  ngx_http_promgate_forward_module = {
    NGX_MODULE_V1,
    &ngx_http_promgate_forward_module_ctx, /* module context */
    ngx_http_promgate_forward_commands,    /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;

static ngx_str_t  ngx_http_promgate_post = ngx_string("POST");
static ngx_str_t  ngx_http_promgate_user_agent =
    ngx_string("promgate/" PG_VERSION);


/*
 * A forwarder for r, embedded in the caller's context (data): the retry
 * settings of r's location, the deadline's start, and r's ctx slot of this
 * module, where the forwarder's handlers and $promgate_forward_status find
 * it.  The caller then sets the targets, the body's version, a payload for
 * every version its targets speak, decide and answer, and starts it.
 */

void
ngx_http_promgate_forwarder_init(ngx_http_promgate_forwarder_t *fw,
    ngx_http_request_t *r, void *data)
{
    fw->request = r;
    fw->conf = ngx_http_get_module_loc_conf(r,
                                            ngx_http_promgate_forward_module);
    fw->start = ngx_current_msec;
    fw->data = data;

    ngx_http_set_ctx(r, fw, ngx_http_promgate_forward_module);
}


/*
 * Starts an attempt to every target.  On an error the caller answers the
 * request; attempts already started go on in the background, and the
 * forwarder answers nothing.
 */

ngx_int_t
ngx_http_promgate_forwarder_start(ngx_http_promgate_forwarder_t *fw)
{
    ngx_uint_t                     i, n, v;
    ngx_http_request_t            *r;
    ngx_pool_cleanup_t            *cln;
    ngx_http_promgate_fwd_t       *f;
    ngx_http_promgate_forward_t   *fe;
    ngx_http_promgate_payload_t   *pl;

    r = fw->request;
    n = fw->targets->nelts;

    /* no timer may outlive the request's pool */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    cln->handler = ngx_http_promgate_forwarder_cleanup;
    cln->data = fw;

    fw->fwd = ngx_pcalloc(r->pool, n * sizeof(ngx_http_promgate_fwd_t));
    if (fw->fwd == NULL) {
        goto failed;
    }

    fw->nfwd = n;
    fw->acks.targets = n;

    fe = fw->targets->elts;

    for (i = 0; i < n; i++) {
        f = &fw->fwd[i];

        /* the caller made a payload for every protocol its targets speak */

        v = fe[i].proto == NGX_HTTP_PROMGATE_PROTO_ASIS ? fw->version
                                                         : fe[i].proto;
        pl = (fw->tpayloads && fw->tpayloads[i]) ? fw->tpayloads[i]
                                                 : &fw->payloads[v];

        if (!pl->ready) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "promgate: no body of version %ui for forward "
                          "target \"%V\"", v, &fe[i].target->uri);
            goto failed;
        }

        if (!pl->none && pl->headers.part.elts == NULL
            && ngx_http_promgate_headers(r, fw, pl) != NGX_OK)
        {
            goto failed;
        }

        f->fw = fw;
        f->target = fe[i].target;
        f->payload = pl;
        f->spool = fw->nospool ? NULL : fe[i].spool;
        f->spool_ops = fe[i].spool_ops;
        f->state = PG_TARGET_PENDING;

        f->timer.handler = ngx_http_promgate_retry_handler;
        f->timer.data = f;
        f->timer.log = r->connection->log;
    }

    r->write_event_handler = ngx_http_promgate_resume;

    for (i = 0; i < n; i++) {
        f = &fw->fwd[i];

        /* its rules chose no series: no request, counted as stored */

        if (f->payload->none) {
            f->skipped = 1;
            f->state = PG_TARGET_STORED;
            fw->acks.stored++;
            continue;
        }

        /* while a spool is not empty, its target's writes go after it */

        if (f->spool && f->spool_ops->busy(f->spool)) {
            ngx_http_promgate_target_failed(f);
            continue;
        }

        if (ngx_http_promgate_attempt(f) != NGX_OK) {
            goto failed;
        }
    }

    if (fw->decide(fw) != 0) {
        /* every target spooled: answered from the main request's handler */
        (void) ngx_http_post_request(r, NULL);
    }

    return NGX_OK;

failed:

    fw->answered = 1;

    return NGX_ERROR;
}


/* a payload whose body is in memory (made for the targets) */

ngx_int_t
ngx_http_promgate_payload_set(ngx_pool_t *pool,
    ngx_http_promgate_payload_t *pl, ngx_uint_t version, u_char *data,
    size_t len)
{
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *body;

    b = ngx_calloc_buf(pool);
    cl = ngx_alloc_chain_link(pool);
    body = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));

    if (b == NULL || cl == NULL || body == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;
    body->bufs = cl;

    pl->body = body;
    pl->len = len;
    pl->version = version;
    pl->ready = 1;

    return NGX_OK;
}


/*
 * The subrequests' request headers: the client's, with the remote-write
 * ones the spec asks a sender for, our User-Agent, and no framing headers
 * (the proxy module sets Content-Length from the body).  Accept-Encoding
 * goes too: a storage's reason must come back readable, not gzipped.  A
 * remote-write body goes with the Content-Type, Content-Encoding and
 * version header of what it is, whatever the client wrote (promgate took
 * an "Application/X-Protobuf" or an odd parameter that Prometheus 3
 * answers 415 to); 1.0's type is the plain one Prometheus sends.  A
 * payload with a type of its own (an exemplar peer's query) goes with it.
 */

static ngx_int_t
ngx_http_promgate_headers(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_http_promgate_payload_t *pl)
{
    ngx_str_t         type, rwv;
    ngx_uint_t        i, n, version, rw;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    n = 0;
    for (part = &r->headers_in.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    if (ngx_list_init(&pl->headers, r->pool, n + 4, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rw = pl->remote_write;
    version = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        if ((h[i].key.len == 10
             && ngx_strncasecmp(h[i].key.data, (u_char *) "User-Agent", 10)
                == 0)
            || (h[i].key.len == 14
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Content-Length", 14) == 0)
            || (h[i].key.len == 17
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Transfer-Encoding", 17) == 0)
            || (h[i].key.len == 6
                && ngx_strncasecmp(h[i].key.data, (u_char *) "Expect", 6)
                   == 0)
            || (h[i].key.len == 15
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Accept-Encoding", 15) == 0)
            || ((rw || pl->type.len) && h[i].key.len == 12
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Content-Type", 12) == 0)
            || (rw && h[i].key.len == 16
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Content-Encoding", 16) == 0))
        {
            continue;
        }

        /* a body of one tenant (promgate_tenant_label) goes as its */

        if (pl->tenant.len && h[i].key.len == pl->tenant_header.len
            && ngx_strncasecmp(h[i].key.data, pl->tenant_header.data,
                               h[i].key.len) == 0)
        {
            continue;
        }

        if (h[i].key.len == sizeof("X-Prometheus-Remote-Write-Version") - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) "X-Prometheus-Remote-Write-Version",
                               h[i].key.len) == 0)
        {
            if (rw) {
                continue;
            }

            version = 1;
        }

        nh = ngx_list_push(&pl->headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
#if (nginx_version >= 1023000)
        nh->next = NULL;
#endif
    }

    if (pl->version == PG_RW_V2) {
        ngx_str_set(&type, NGX_HTTP_PROMGATE_TYPE_V2);
        ngx_str_set(&rwv, "2.0.0");

    } else {
        ngx_str_set(&type, NGX_HTTP_PROMGATE_TYPE_V1);
        ngx_str_set(&rwv, "0.1.0");
    }

    if (ngx_http_promgate_header_add(&pl->headers, "User-Agent",
                                     ngx_http_promgate_user_agent.data,
                                     ngx_http_promgate_user_agent.len)
        == NULL)
    {
        return NGX_ERROR;
    }

    if (pl->type.len
        && ngx_http_promgate_header_add(&pl->headers, "Content-Type",
                                        pl->type.data, pl->type.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    if (rw
        && (ngx_http_promgate_header_add(&pl->headers, "Content-Encoding",
                                         (u_char *) "snappy", 6)
            == NULL
            || ngx_http_promgate_header_add(&pl->headers, "Content-Type",
                                            type.data, type.len)
               == NULL))
    {
        return NGX_ERROR;
    }

    if (!version
        && ngx_http_promgate_header_add(&pl->headers,
                                        "X-Prometheus-Remote-Write-Version",
                                        rwv.data, rwv.len)
           == NULL)
    {
        return NGX_ERROR;
    }

    if (pl->tenant.len) {
        nh = ngx_list_push(&pl->headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        nh->lowcase_key = ngx_pnalloc(r->pool, pl->tenant_header.len);
        if (nh->lowcase_key == NULL) {
            nh->hash = 0;
            return NGX_ERROR;
        }

        nh->hash = ngx_hash_strlow(nh->lowcase_key, pl->tenant_header.data,
                                   pl->tenant_header.len);
        nh->key = pl->tenant_header;
        nh->value = pl->tenant;
#if (nginx_version >= 1023000)
        nh->next = NULL;
#endif
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_attempt(ngx_http_promgate_fwd_t *f)
{
    ngx_http_request_t                *r, *sr;
    ngx_http_promgate_target_stats_t  *ts;

    r = f->fw->request;

    f->ps.handler = ngx_http_promgate_attempt_done;
    f->ps.data = f;

    if (ngx_http_subrequest(r, &f->target->uri, NULL, &sr, &f->ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* subrequests are GETs by default */
    sr->method = NGX_HTTP_POST;
    sr->method_name = ngx_http_promgate_post;

    sr->headers_in.headers = f->payload->headers;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = f->payload->len;

    if (f->payload->body) {
        /* a body of our own (re-encoded), not the client's */
        sr->request_body = f->payload->body;
    }
    sr->headers_in.chunked = 0;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.user_agent = NULL;
    sr->headers_in.expect = NULL;

    f->running = 1;
    f->attempts++;
    f->status = 0;
    f->received = 0;
    f->truncated = 0;
    f->ended = 0;

    ts = &ngx_http_promgate_stats()->targets[f->target->slot];
    (void) ngx_atomic_fetch_add(&ts->attempts, 1);

    if (f->attempts > 1) {
        (void) ngx_atomic_fetch_add(&ts->retries, 1);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_attempt_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_promgate_fwd_t *f = data;

    ngx_buf_t                         *b;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_promgate_forwarder_t     *fw;
    ngx_http_promgate_target_stats_t  *ts;

    /* finalization may pass here again for the same subrequest */
    if (!f->running) {
        return NGX_OK;
    }

    /*
     * nginx calls this at each finalization of the subrequest, the first
     * one as soon as the upstream is done, while the end of the answer may
     * still be in the output filters: a proxy's temporary file read by
     * "aio threads" (or "aio on") reaches sr->out only after the read.
     * Judged now, a part of the answer would pass for all of it.  The
     * finalization after the read (ngx_http_writer) passes here again.
     */

    if (sr->buffered
        && (rc == NGX_OK || rc == NGX_AGAIN)
        && !sr->connection->error)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                       "promgate forward \"%V\" attempt %ui: answer still "
                       "buffered", &f->target->uri, f->attempts);
        return NGX_OK;
    }

    f->running = 0;
    fw = f->fw;

    f->status = sr->headers_out.status;

    if (f->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE && rc < 600) {
        f->status = rc;        /* no answer: nginx's own 502/504 */
    }

    if (sr->buffered
        || (f->status >= NGX_HTTP_OK && f->status < NGX_HTTP_SPECIAL_RESPONSE
            && !f->ended && !sr->header_only))
    {
        /*
         * a part of its answer still on its way, or the answer broke off
         * (the upstream closed or timed out in its body: nginx then ends
         * the subrequest with a flush, not with its last buffer)
         */

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "promgate: the answer %ui of forward target \"%V\" "
                      "broke off before its end; counted as 502",
                      f->status, &f->target->uri);

        f->status = NGX_HTTP_BAD_GATEWAY;
    }

    if (sr->out && sr->out->buf) {
        b = sr->out->buf;
        f->reason.data = b->pos;
        f->reason.len = b->last - b->pos;

    } else {
        ngx_str_null(&f->reason);
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "promgate forward \"%V\" attempt %ui: status %ui rc %i",
                   &f->target->uri, f->attempts, f->status, rc);

    /*
     * nginx's own answers count like a storage's: 502/504 (no connection,
     * timeout) are retried, a 404 or 413 of the target location is not
     */

    switch (pg_attempt_classify(f->status)) {

    case PG_ATTEMPT_STORED:
        ngx_http_promgate_written(f, sr);
        ngx_http_promgate_target_end(f, PG_TARGET_STORED);
        break;

    case PG_ATTEMPT_REJECTED:
        ngx_http_promgate_target_end(f, PG_TARGET_REJECTED);
        break;

    case PG_ATTEMPT_MISCONFIGURED:
        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "promgate: forward target \"%V\" answered %ui: the "
                      "target or its location is misconfigured (check the "
                      "proxy_pass URL, credentials and body size limits); "
                      "not retried", &f->target->uri, f->status);

        ts = &ngx_http_promgate_stats()->targets[f->target->slot];
        (void) ngx_atomic_fetch_add(&ts->misconfigured, 1);

        ngx_http_promgate_target_end(f, PG_TARGET_FAILED);
        break;

    default: /* PG_ATTEMPT_RETRY */
        ngx_http_promgate_retry(f, sr);
        break;
    }

    if (fw->done) {
        fw->done(fw, f, sr);

    } else if (f->truncated) {
        clcf = ngx_http_get_module_loc_conf(sr, ngx_http_core_module);

        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "promgate: the answer of forward target \"%V\" is "
                      "larger than subrequest_output_buffer_size %uz of its "
                      "location; its text is cut", &f->target->uri,
                      clcf->subrequest_output_buffer_size);
    }

    if (!fw->answered && fw->decide(fw) != 0) {
        /* answer from the main request's own handler, not from here */
        (void) ngx_http_post_request(fw->request, NULL);
    }

    /* the subrequest's outcome is ours to judge: never fail the request */
    return NGX_OK;
}


/*
 * What a remote write 2.0 target says it wrote (X-Prometheus-Remote-Write-
 * {Samples,Histograms,Exemplars}-Written); a target that sends none of them
 * is taken to have written everything, as Prometheus' sender does.
 */

static void
ngx_http_promgate_written(ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr)
{
    ngx_int_t         n;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static ngx_str_t  names[] = {
        ngx_string("X-Prometheus-Remote-Write-Samples-Written"),
        ngx_string("X-Prometheus-Remote-Write-Histograms-Written"),
        ngx_string("X-Prometheus-Remote-Write-Exemplars-Written")
    };

    f->confirmed = 0;

    if (f->payload->version != PG_RW_V2) {
        return;
    }

    for (i = 0; i < 3; i++) {
        f->written[i] = 0;

        h = ngx_http_promgate_find_header(&sr->headers_out.headers,
                                          names[i].data, names[i].len);
        if (h == NULL) {
            continue;
        }

        f->confirmed = 1;

        n = ngx_atoi(h->value.data, h->value.len);
        if (n > 0) {
            f->written[i] = (uint64_t) n;
        }
    }
}


static void
ngx_http_promgate_retry(ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr)
{
    int64_t                                ra;
    ngx_msec_t                             delay, elapsed;
    ngx_table_elt_t                       *h;
    ngx_http_promgate_forwarder_t         *fw;
    ngx_http_promgate_target_stats_t      *ts;
    ngx_http_promgate_forward_loc_conf_t  *fcf;

    fw = f->fw;
    fcf = fw->conf;

    if ((ngx_int_t) f->attempts > fcf->retries) {
        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "promgate: forward target \"%V\" failed after %ui "
                      "attempts, last status %ui%s", &f->target->uri,
                      f->attempts, f->status,
                      f->spool ? "; the write goes to its spool" : "");
        ngx_http_promgate_target_failed(f);
        return;
    }

    delay = (ngx_msec_t) pg_backoff_ms(fcf->backoff_first,
                                       fcf->backoff_max, f->attempts - 1,
                                       (uint32_t) ngx_random());

    /* a storage that says when to come back is believed */

    h = sr->headers_out.status
        ? ngx_http_promgate_find_header(&sr->headers_out.headers,
                                        (u_char *) "Retry-After", 11)
        : NULL;

    if (h) {
        ra = pg_retry_after_ms(h->value.data, h->value.len, ngx_time());

        if (ra >= 0) {
            delay = ra > NGX_MAX_INT32_VALUE ? NGX_MAX_INT32_VALUE
                                             : (ngx_msec_t) ra;
        }
    }

    elapsed = ngx_current_msec - fw->start;

    if (elapsed + delay >= fcf->retry_timeout) {
        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "promgate: forward target \"%V\" failed with status "
                      "%ui; no retry: promgate_retry_timeout %Mms would "
                      "pass (after %ui attempts, %Mms)", &f->target->uri,
                      f->status, fcf->retry_timeout, f->attempts, elapsed);

        ts = &ngx_http_promgate_stats()->targets[f->target->slot];
        (void) ngx_atomic_fetch_add(&ts->giveups, 1);

        ngx_http_promgate_target_failed(f);
        return;
    }

    /* the timer keeps the request alive, even after the answer */
    fw->request->main->count++;
    f->waiting = 1;

    ngx_add_timer(&f->timer, delay);
}


static void
ngx_http_promgate_retry_handler(ngx_event_t *ev)
{
    ngx_http_promgate_fwd_t *f = ev->data;

    ngx_connection_t               *c;
    ngx_http_request_t             *r;
    ngx_http_promgate_forwarder_t  *fw;

    fw = f->fw;
    r = fw->request;
    c = r->connection;

    f->waiting = 0;

    if (ngx_http_promgate_attempt(f) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "promgate: could not start an attempt to forward "
                      "target \"%V\"", &f->target->uri);

        ngx_http_promgate_target_failed(f);

        if (!fw->answered && fw->decide(fw) != 0) {
            (void) ngx_http_post_request(r, NULL);
        }
    }

    /*
     * The timer's reference is dropped first (the new subrequest holds its
     * own): a posted request run below may terminate the write (its
     * connection in error: a client gone, an HTTP/2 stream reset) and free
     * it at once, whatever its count.  The connection is still readable
     * then: nginx marks it destroyed, and so does a freed request.
     */
    ngx_http_finalize_request(r, NGX_DONE);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_promgate_target_end(ngx_http_promgate_fwd_t *f,
    pg_target_state_e state)
{
    ngx_http_promgate_forwarder_t     *fw;
    ngx_http_promgate_target_stats_t  *ts;

    fw = f->fw;
    f->state = state;

    ts = &ngx_http_promgate_stats()->targets[f->target->slot];

    switch (state) {

    case PG_TARGET_STORED:
        fw->acks.stored++;
        (void) ngx_atomic_fetch_add(&ts->stored, 1);
        break;

    case PG_TARGET_REJECTED:
        fw->acks.rejected++;
        (void) ngx_atomic_fetch_add(&ts->rejected, 1);
        break;

    default:
        fw->acks.failed++;
        (void) ngx_atomic_fetch_add(&ts->failed, 1);
        break;
    }
}


/*
 * A target that is down (5xx, 429, no answer, after its retries), or
 * whose spool is not empty: with a spool, the write goes there and counts
 * as stored; without one, or when the spool cannot take it, it failed.
 */

static void
ngx_http_promgate_target_failed(ngx_http_promgate_fwd_t *f)
{
    ngx_http_promgate_target_stats_t  *ts;

    if (f->spool == NULL
        || f->spool_ops->append(f->spool, f->fw->request, f->payload)
           != NGX_OK)
    {
        ngx_http_promgate_target_end(f, PG_TARGET_FAILED);
        return;
    }

    f->spooled = 1;
    f->state = PG_TARGET_STORED;
    f->fw->acks.stored++;

    ts = &ngx_http_promgate_stats()->targets[f->target->slot];
    (void) ngx_atomic_fetch_add(&ts->spooled, 1);
}


static void
ngx_http_promgate_resume(ngx_http_request_t *r)
{
    ngx_uint_t                      decision;
    ngx_http_promgate_forwarder_t  *fw;

    fw = ngx_http_get_module_ctx(r, ngx_http_promgate_forward_module);

    if (fw == NULL || fw->answered) {
        return;
    }

    decision = fw->decide(fw);

    if (decision == 0) {
        return;
    }

    fw->answered = 1;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, fw->answer(r, fw, decision));
}


/* the request's pool goes: no timer may outlive it */

static void
ngx_http_promgate_forwarder_cleanup(void *data)
{
    ngx_http_promgate_forwarder_t *fw = data;

    ngx_uint_t  i;

    for (i = 0; i < fw->nfwd; i++) {
        if (fw->fwd[i].timer.timer_set) {
            ngx_del_timer(&fw->fwd[i].timer);
        }
    }
}


/*
 * A target's answer is read in memory, into the target location's
 * subrequest_output_buffer_size; nginx treats an answer that does not fit
 * as an error of the client's connection and drops it.  This filter keeps
 * what fits and swallows the rest, for every caller's targets: the
 * answer's status still counts, its text is cut (f->truncated); what that
 * means is the caller's (a write says "(cut)", a read answers 413).
 */

static ngx_int_t
ngx_http_promgate_forward_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                      size;
    ngx_chain_t               *cl;
    ngx_http_promgate_fwd_t   *f;
    ngx_http_core_loc_conf_t  *clcf;

    if (r == r->main || !r->subrequest_in_memory || r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_http_promgate_attempt_done)
    {
        return ngx_http_next_body_filter(r, in);
    }

    f = r->post_subrequest->data;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_in_chain || cl->buf->last_buf) {
            f->ended = 1;       /* nginx's NGX_HTTP_LAST: the whole answer */
        }
    }

    if (r->headers_out.content_length_n
        > (off_t) clcf->subrequest_output_buffer_size)
    {
        /* else nginx's in-memory filter refuses it at once */
        r->headers_out.content_length_n = -1;
    }

    if (!f->truncated) {
        size = 0;

        for (cl = in; cl; cl = cl->next) {
            size += ngx_buf_size(cl->buf);
        }

        if (f->received + size <= (off_t) clcf->subrequest_output_buffer_size)
        {
            f->received += size;
            return ngx_http_next_body_filter(r, in);
        }

        f->truncated = 1;
    }

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return NGX_OK;
}


/* each target's final status, in target order; "-" while pending */

static ngx_int_t
ngx_http_promgate_forward_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    ngx_uint_t                      i;
    ngx_http_promgate_forwarder_t  *fw;

    fw = ngx_http_get_module_ctx(r->main, ngx_http_promgate_forward_module);

    if (fw == NULL || fw->nfwd == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, fw->nfwd * (NGX_INT_T_LEN + 1));
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    for (i = 0; i < fw->nfwd; i++) {
        if (i) {
            *p++ = ',';
        }

        if (fw->fwd[i].state == PG_TARGET_PENDING) {
            *p++ = '-';

        } else {
            p = ngx_sprintf(p, "%ui", fw->fwd[i].status);
        }
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* ------------------------------------------------------- configuration */


static ngx_int_t
ngx_http_promgate_forward_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    static ngx_str_t  name = ngx_string("promgate_forward_status");

    var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_promgate_forward_status_variable;

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_forward_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_promgate_forward_body_filter;

    return NGX_OK;
}


static void *
ngx_http_promgate_forward_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_promgate_forward_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_forward_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->retries = NGX_CONF_UNSET;
    conf->backoff_first = NGX_CONF_UNSET_MSEC;
    conf->backoff_max = NGX_CONF_UNSET_MSEC;
    conf->retry_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_promgate_forward_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_promgate_forward_loc_conf_t *prev = parent;
    ngx_http_promgate_forward_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->retries, prev->retries, 3);
    ngx_conf_merge_msec_value(conf->backoff_first, prev->backoff_first, 100);
    ngx_conf_merge_msec_value(conf->backoff_max, prev->backoff_max, 2000);
    ngx_conf_merge_msec_value(conf->retry_timeout, prev->retry_timeout,
                              10000);

    if (conf->backoff_first > conf->backoff_max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_retry_backoff\": the first delay "
                           "(%Mms) is above the maximum (%Mms)",
                           conf->backoff_first, conf->backoff_max);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_retry_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_forward_loc_conf_t *fcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   first, max;

    if (fcf->backoff_first != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    first = ngx_parse_time(&value[1], 0);
    if (first == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid first retry delay \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    max = ngx_parse_time(&value[2], 0);
    if (max == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid maximum retry delay \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    fcf->backoff_first = first;
    fcf->backoff_max = max;

    return NGX_CONF_OK;
}
