
/*
 * promgate: the remote-write location.  Checks the request, reads the body
 * (memory, several buffers or a temp file), decodes and validates it, then
 * hands it to the forwarder.
 */


#include "ngx_http_promgate_module.h"


static ngx_int_t ngx_http_promgate_check_headers(ngx_http_request_t *r,
    ngx_str_t *why);
static void ngx_http_promgate_write_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_body(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, u_char **data, size_t *len);
static ngx_int_t ngx_http_promgate_validate(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_promgate_reject(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, ngx_uint_t status, ngx_uint_t reason,
    uint64_t samples, u_char *text, size_t len);
static ngx_uint_t ngx_http_promgate_write_decide(ngx_http_promgate_ctx_t *ctx);
static ngx_int_t ngx_http_promgate_write_answer(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, ngx_uint_t decision);
static void ngx_http_promgate_write_cleanup(void *data);
static int ngx_http_promgate_write_series(void *data,
    const pg_rw_series_t *s);


/* writes in flight in this worker, the background ones included */
static ngx_uint_t  ngx_http_promgate_inflight;


ngx_int_t
ngx_http_promgate_write_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      why;
    ngx_table_elt_t               *h;
    ngx_pool_cleanup_t            *cln;
    ngx_http_promgate_ctx_t       *ctx;
    ngx_http_promgate_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    if (r != r->main) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->plcf = plcf;
    ctx->start = ngx_current_msec;

    ngx_http_set_ctx(r, ctx, ngx_http_promgate_module);

    if (r->method != NGX_HTTP_POST) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
#endif
        ngx_str_set(&h->key, "Allow");
        ngx_str_set(&h->value, "POST");

        ngx_str_set(&why, "promgate: remote write takes POST only\n");

        return ngx_http_promgate_reject(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                        NGX_HTTP_PROMGATE_REJECT_METHOD, 0,
                                        why.data, why.len);
    }

    rc = ngx_http_promgate_check_headers(r, &why);
    if (rc != NGX_OK) {
        return ngx_http_promgate_reject(r, ctx, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                        rc, 0, why.data, why.len);
    }

    /* a dead target must not make bodies pile up without bound */

    if ((ngx_int_t) ngx_http_promgate_inflight >= plcf->max_inflight) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "promgate: %ui writes in flight in this worker "
                      "(promgate_max_inflight %i): answering 503",
                      ngx_http_promgate_inflight, plcf->max_inflight);

        ngx_str_set(&why, "promgate: too many writes in flight, retry "
                          "later\n");

        return ngx_http_promgate_reject(r, ctx,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        NGX_HTTP_PROMGATE_REJECT_INFLIGHT, 0,
                                        why.data, why.len);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_promgate_write_cleanup;
    cln->data = ctx;

    ctx->inflight = 1;
    ngx_http_promgate_inflight++;
    ngx_http_promgate_stats_inflight(ngx_http_promgate_inflight);

    rc = ngx_http_read_client_request_body(r, ngx_http_promgate_write_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ngx_http_promgate_stats_reject(rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                                       ? NGX_HTTP_PROMGATE_REJECT_TOO_LARGE
                                       : NGX_HTTP_PROMGATE_REJECT_BODY, 0);
        ngx_http_promgate_stats_answer(ctx, rc);
        return rc;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_promgate_token(u_char **pp, u_char *end, ngx_str_t *tok, u_char stop)
{
    u_char  *p;

    p = *pp;

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    tok->data = p;

    while (p < end && *p != stop && *p != ';') {
        p++;
    }

    tok->len = p - tok->data;

    while (tok->len && (tok->data[tok->len - 1] == ' '
                        || tok->data[tok->len - 1] == '\t'))
    {
        tok->len--;
    }

    *pp = p;

    return NGX_OK;
}


/*
 * Content-Type: application/x-protobuf[;proto=prometheus.WriteRequest]
 * Content-Encoding: snappy
 */

static ngx_int_t
ngx_http_promgate_check_headers(ngx_http_request_t *r, ngx_str_t *why)
{
    u_char           *p, *end;
    ngx_str_t         type, name, value;

    if (r->headers_in.content_type == NULL) {
        goto bad_type;
    }

    p = r->headers_in.content_type->value.data;
    end = p + r->headers_in.content_type->value.len;

    ngx_http_promgate_token(&p, end, &type, ';');

    if (type.len != sizeof("application/x-protobuf") - 1
        || ngx_strncasecmp(type.data, (u_char *) "application/x-protobuf",
                           type.len) != 0)
    {
        goto bad_type;
    }

    while (p < end) {
        p++;                                    /* ';' */

        ngx_http_promgate_token(&p, end, &name, '=');

        if (p < end && *p == '=') {
            p++;
            ngx_http_promgate_token(&p, end, &value, ';');

        } else {
            ngx_str_null(&value);
        }

        if (value.len >= 2 && value.data[0] == '"'
            && value.data[value.len - 1] == '"')
        {
            value.data++;
            value.len -= 2;
        }

        if (name.len != 5 || ngx_strncasecmp(name.data, (u_char *) "proto", 5)
                             != 0)
        {
            continue;
        }

        if (value.len == sizeof("prometheus.WriteRequest") - 1
            && ngx_strncmp(value.data, "prometheus.WriteRequest",
                           value.len) == 0)
        {
            continue;
        }

        if (value.len == sizeof("io.prometheus.write.v2.Request") - 1
            && ngx_strncmp(value.data, "io.prometheus.write.v2.Request",
                           value.len) == 0)
        {
            ngx_str_set(why, "promgate: remote write 2.0 "
                        "(proto=io.prometheus.write.v2.Request) is not "
                        "supported; send remote write 1.0: "
                        "application/x-protobuf;"
                        "proto=prometheus.WriteRequest\n");
            return NGX_HTTP_PROMGATE_REJECT_CONTENT_TYPE;
        }

        goto bad_type;
    }

    if (ngx_http_promgate_snappy_encoded(r)) {
        return NGX_OK;
    }

    ngx_str_set(why, "promgate: expected \"Content-Encoding: snappy\" "
                "(a snappy block-compressed protobuf WriteRequest)\n");

    return NGX_HTTP_PROMGATE_REJECT_ENCODING;

bad_type:

    ngx_str_set(why, "promgate: expected \"Content-Type: "
                "application/x-protobuf\" (optionally with "
                ";proto=prometheus.WriteRequest)\n");

    return NGX_HTTP_PROMGATE_REJECT_CONTENT_TYPE;
}


static void
ngx_http_promgate_write_body(ngx_http_request_t *r)
{
    u_char                   *data;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_http_promgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_promgate_module);

    data = NULL;
    len = 0;

    rc = ngx_http_promgate_body(r, ctx, &data, &len);

    if (rc == NGX_OK && !ctx->answer) {
        rc = ngx_http_promgate_validate(r, ctx, data, len);
    }

    /* a refused write has been answered already (rc is the output's) */

    if (rc != NGX_OK || ctx->answer) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->targets = ctx->plcf->forwards;
    ctx->decide = ngx_http_promgate_write_decide;
    ctx->answer_handler = ngx_http_promgate_write_answer;

    if (ngx_http_promgate_forward(r, ctx) != NGX_OK) {
        ngx_http_promgate_stats_answer(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the forwarder answers; the body-read reference is released then */
}


/* the compressed body as one piece of memory */

static ngx_int_t
ngx_http_promgate_body(ngx_http_request_t *r, ngx_http_promgate_ctx_t *ctx,
    u_char **data, size_t *len)
{
    if (ngx_http_promgate_body_bytes(r, data, len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body_len = *len;

    if (*len == 0) {
        return ngx_http_promgate_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        NGX_HTTP_PROMGATE_REJECT_SNAPPY, 0,
                                        (u_char *) "promgate: empty body: "
                                        "expected a snappy-compressed "
                                        "protobuf WriteRequest\n",
                                        sizeof("promgate: empty body: "
                                               "expected a snappy-compressed "
                                               "protobuf WriteRequest\n")
                                        - 1);
    }

    (void) ngx_atomic_fetch_add(&ngx_http_promgate_stats()->bytes, *len);

    return NGX_OK;
}


/*
 * The uncompressed body lives only while it is validated, synchronously:
 * one buffer per worker serves every write, instead of a fresh large
 * allocation (and its page faults) per request.  Buffers above 16m are
 * given back after use.
 */

static u_char  *ngx_http_promgate_decoded;
static size_t   ngx_http_promgate_decoded_size;


static u_char *
ngx_http_promgate_decode_buffer(size_t size, ngx_log_t *log)
{
    if (size <= ngx_http_promgate_decoded_size) {
        return ngx_http_promgate_decoded;
    }

    if (ngx_http_promgate_decoded) {
        ngx_free(ngx_http_promgate_decoded);
    }

    size = ngx_max(ngx_align(size, 65536), 1024 * 1024);

    ngx_http_promgate_decoded = ngx_alloc(size, log);
    ngx_http_promgate_decoded_size = ngx_http_promgate_decoded ? size : 0;

    return ngx_http_promgate_decoded;
}


static void
ngx_http_promgate_decode_release(void)
{
    if (ngx_http_promgate_decoded_size > 16 * 1024 * 1024) {
        ngx_free(ngx_http_promgate_decoded);
        ngx_http_promgate_decoded = NULL;
        ngx_http_promgate_decoded_size = 0;
    }
}


static ngx_int_t
ngx_http_promgate_validate(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, u_char *data, size_t len)
{
    u_char                     *decoded;
    size_t                      dlen;
    ngx_int_t                   rc;
    pg_rw_error_t               err;
    pg_rw_reason_e              reason;
    pg_snappy_rc_e              src;
    ngx_http_promgate_stats_t  *st;

    u_char                      msg[sizeof(err.message) + 64];

    src = pg_snappy_decoded_length(data, len, ctx->plcf->max_decoded, &dlen);

    if (src == PG_SNAPPY_TOO_LARGE) {
        return ngx_http_promgate_reject(r, ctx,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                   NGX_HTTP_PROMGATE_REJECT_TOO_LARGE, 0, msg,
                   ngx_snprintf(msg, sizeof(msg), "promgate: the body "
                                "declares %uz bytes uncompressed, above "
                                "promgate_max_decoded_size (%uz)\n",
                                dlen, ctx->plcf->max_decoded) - msg);
    }

    if (src != PG_SNAPPY_OK) {
        goto bad_snappy;
    }

    decoded = ngx_http_promgate_decode_buffer(dlen, r->connection->log);
    if (decoded == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (pg_snappy_decode(data, len, decoded, dlen) != PG_SNAPPY_OK) {
        ngx_http_promgate_decode_release();
        goto bad_snappy;
    }

    if (ctx->plcf->exemplar_zone || ctx->plcf->series_zone) {
        ngx_http_promgate_tenant(r, &ctx->tenant);
        reason = pg_rw_scan(decoded, dlen, &ctx->stats, &err,
                            ngx_http_promgate_write_series, ctx);

        if (reason == PG_RW_ABORTED) {
            ngx_http_promgate_decode_release();
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        reason = pg_rw_scan(decoded, dlen, &ctx->stats, &err, NULL, NULL);
    }

    if (reason != PG_RW_OK) {
        rc = ngx_http_promgate_reject(r, ctx, NGX_HTTP_BAD_REQUEST, reason,
                                      pg_rw_count_samples(decoded, dlen), msg,
                                      ngx_snprintf(msg, sizeof(msg),
                                                   "promgate: invalid write "
                                                   "request: %s\n",
                                                   err.message) - msg);
        ngx_http_promgate_decode_release();
        return rc;
    }

    ngx_http_promgate_series_flush(ctx);     /* the body is still here */
    ngx_http_promgate_decode_release();

    st = ngx_http_promgate_stats();

    (void) ngx_atomic_fetch_add(&st->decoded_bytes, dlen);
    (void) ngx_atomic_fetch_add(&st->series, ctx->stats.series);
    (void) ngx_atomic_fetch_add(&st->samples, ctx->stats.samples);
    (void) ngx_atomic_fetch_add(&st->histograms, ctx->stats.histograms);
    (void) ngx_atomic_fetch_add(&st->exemplars, ctx->stats.exemplars);
    (void) ngx_atomic_fetch_add(&st->metadata, ctx->stats.metadata);

    return NGX_OK;

bad_snappy:

    return ngx_http_promgate_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
               NGX_HTTP_PROMGATE_REJECT_SNAPPY, 0,
               (u_char *) "promgate: the body is not a valid snappy block "
               "(remote write uses snappy's block format, not framed)\n",
               sizeof("promgate: the body is not a valid snappy block "
                      "(remote write uses snappy's block format, not "
                      "framed)\n") - 1);
}


/*
 * Answers a refused write with a plain-text reason.  Returns what the
 * caller hands to ngx_http_finalize_request() (or returns from the
 * content handler).
 */

static ngx_int_t
ngx_http_promgate_reject(ngx_http_request_t *r, ngx_http_promgate_ctx_t *ctx,
    ngx_uint_t status, ngx_uint_t reason, uint64_t samples, u_char *text,
    size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_promgate_stats_reject(reason, samples);
    ngx_http_promgate_stats_answer(ctx, status);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "promgate: write refused with %ui: %*s", status,
                  len && text[len - 1] == '\n' ? len - 1 : len, text);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the ack policy decides; 0 while it depends on pending targets */

static ngx_uint_t
ngx_http_promgate_write_decide(ngx_http_promgate_ctx_t *ctx)
{
    return pg_ack_decide(ctx->plcf->ack, &ctx->acks);
}


static ngx_int_t
ngx_http_promgate_write_answer(ngx_http_request_t *r,
    ngx_http_promgate_ctx_t *ctx, ngx_uint_t decision)
{
    u_char                   *p, *last;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_uint_t                i;
    ngx_chain_t               out;
    ngx_table_elt_t          *h;
    ngx_http_promgate_fwd_t  *f;

    static ngx_str_t  names[] = {
        ngx_string("X-Prometheus-Remote-Write-Samples-Written"),
        ngx_string("X-Prometheus-Remote-Write-Histograms-Written"),
        ngx_string("X-Prometheus-Remote-Write-Exemplars-Written")
    };

    static const char  *states[] = { "pending", "stored", "rejected",
                                     "failed" };

    if (decision == 204) {
        ngx_http_promgate_stats_answer(ctx, NGX_HTTP_NO_CONTENT);
        ngx_http_promgate_exemplars_store(ctx);
        ngx_http_promgate_series_publish(ctx);

        r->headers_out.status = NGX_HTTP_NO_CONTENT;
        r->header_only = 1;
        ngx_http_clear_content_length(r);

        for (i = 0; i < 3; i++) {
            h = ngx_list_push(&r->headers_out.headers);
            if (h == NULL) {
                return NGX_ERROR;
            }

            p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
            if (p == NULL) {
                return NGX_ERROR;
            }

            h->hash = 1;
#if (nginx_version >= 1023000)
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
#endif
            h->key = names[i];
            h->value.data = p;
            h->value.len = ngx_sprintf(p, "%uL",
                                       i == 0 ? ctx->stats.samples
                                       : i == 1 ? ctx->stats.histograms
                                       : ctx->stats.exemplars)
                           - p;
        }

        return ngx_http_send_header(r);
    }

    if (decision == PG_ACK_REJECTED) {

        /* the data is bad: the first rejection (in target order) speaks */

        for (i = 0; i < ctx->nfwd; i++) {
            f = &ctx->fwd[i];

            if (f->state == PG_TARGET_REJECTED) {
                break;
            }
        }

        f = &ctx->fwd[i];

        len = sizeof("promgate: forward target \"\" rejected the data: ")
              - 1 + f->target->uri.len + f->reason.len + sizeof(" (cut)");

        b = ngx_create_temp_buf(r->pool, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_sprintf(b->last,
                              "promgate: forward target \"%V\" rejected the "
                              "data: %V%s", &f->target->uri, &f->reason,
                              f->truncated ? " (cut)" : "");

        if (b->last == b->pos || b->last[-1] != '\n') {
            *b->last++ = '\n';
        }

        r->headers_out.status = f->status;

    } else {

        /* 503: recoverable, the sender keeps the data and retries */

        len = sizeof("promgate: not stored as the ack policy requires;"
                     " the sender should retry:\n") - 1
              + ctx->nfwd * (NGX_HTTP_PROMGATE_TARGET_NAME + 64);

        b = ngx_create_temp_buf(r->pool, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        p = b->last;
        last = b->end;

        p = ngx_slprintf(p, last, "promgate: not stored as the ack policy "
                         "requires; the sender should retry:\n");

        for (i = 0; i < ctx->nfwd; i++) {
            f = &ctx->fwd[i];

            p = ngx_slprintf(p, last, "  %V: %s, status %ui after %ui "
                             "attempt%s\n", &f->target->uri, states[f->state],
                             f->status, f->attempts,
                             f->attempts == 1 ? "" : "s");
        }

        b->last = p;

        r->headers_out.status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_http_promgate_stats_answer(ctx, r->headers_out.status);

    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the scan's per-series callback: what the location keeps of a series */

static int
ngx_http_promgate_write_series(void *data, const pg_rw_series_t *s)
{
    ngx_http_promgate_ctx_t *ctx = data;

    if (ctx->plcf->exemplar_zone
        && ngx_http_promgate_exemplars_collect(ctx, s) != 0)
    {
        return -1;
    }

    if (ctx->plcf->series_zone) {
        (void) ngx_http_promgate_series_collect(ctx, s);
    }

    return 0;
}


static void
ngx_http_promgate_write_cleanup(void *data)
{
    ngx_http_promgate_ctx_t *ctx = data;

    ngx_http_promgate_forward_cleanup(ctx);

    if (ctx->inflight) {
        ctx->inflight = 0;
        ngx_http_promgate_inflight--;
        ngx_http_promgate_stats_inflight(ngx_http_promgate_inflight);
    }
}
