
/*
 * promgate: the remote-write location.  Checks the request, reads the body
 * (memory, several buffers or a temp file), decodes and validates it, then
 * hands it to the forwarder.
 */


#include "ngx_http_promgate_module.h"


static ngx_int_t ngx_http_promgate_check_headers(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, ngx_str_t *why);
static void ngx_http_promgate_write_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_body(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char **data, size_t *len);
static ngx_int_t ngx_http_promgate_validate(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_promgate_reject(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, ngx_uint_t status, ngx_uint_t reason,
    uint64_t samples, u_char *text, size_t len);
static ngx_uint_t ngx_http_promgate_write_decide(
    ngx_http_promgate_forwarder_t *fw);
static void ngx_http_promgate_written_counts(
    ngx_http_promgate_write_ctx_t *ctx, uint64_t *written);
static ngx_int_t ngx_http_promgate_payload(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req, ngx_uint_t v, ngx_http_promgate_payload_t *pl,
    const uint8_t *select, pg_str_t skip);
static ngx_int_t ngx_http_promgate_route_payloads(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req, ngx_uint_t *need);
static ngx_int_t ngx_http_promgate_tenant_payloads(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req);
static void ngx_http_promgate_target_counts(ngx_http_promgate_write_ctx_t *ctx,
    ngx_uint_t i, uint64_t series, uint64_t samples);
static void ngx_http_promgate_log_invalid(ngx_http_request_t *r,
    pg_rw_request_t *req);
static ngx_int_t ngx_http_promgate_write_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision);
static void ngx_http_promgate_write_cleanup(void *data);
static int ngx_http_promgate_write_series(void *data,
    const pg_rw_series_t *s);


/* writes in flight in this worker, the background ones included */
static ngx_uint_t  ngx_http_promgate_inflight;

/* no label to leave out of a body */
static const pg_str_t  ngx_http_promgate_no_label;


ngx_int_t
ngx_http_promgate_write_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       why;
    ngx_pool_cleanup_t             *cln;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_http_promgate_write_ctx_t  *ctx;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    if (r != r->main) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_write_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->plcf = plcf;
    ctx->start = ngx_current_msec;

    ngx_http_set_ctx(r, ctx, ngx_http_promgate_module);

    ngx_http_promgate_forwarder_init(&ctx->fw, r, ctx);

    if (r->method != NGX_HTTP_POST) {
        if (ngx_http_promgate_header_add(&r->headers_out.headers, "Allow",
                                         (u_char *) "POST", 4)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&why, "promgate: remote write takes POST only\n");

        return ngx_http_promgate_reject(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                        NGX_HTTP_PROMGATE_REJECT_METHOD, 0,
                                        why.data, why.len);
    }

    rc = ngx_http_promgate_check_headers(r, ctx, &why);
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
 *               application/x-protobuf;proto=io.prometheus.write.v2.Request
 * Content-Encoding: snappy
 */

static ngx_int_t
ngx_http_promgate_check_headers(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, ngx_str_t *why)
{
    u_char           *p, *end;
    ngx_str_t         type, name, value;

    ctx->fw.version = PG_RW_V1;

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
            ctx->fw.version = PG_RW_V1;
            continue;
        }

        if (value.len == sizeof("io.prometheus.write.v2.Request") - 1
            && ngx_strncmp(value.data, "io.prometheus.write.v2.Request",
                           value.len) == 0)
        {
            ctx->fw.version = PG_RW_V2;
            continue;
        }

        why->data = ngx_pnalloc(r->pool, 256);
        if (why->data == NULL) {
            goto bad_type;
        }

        why->len = ngx_snprintf(why->data, 256,
                                "promgate: unsupported proto=\"%*s\"; "
                                "accepted: prometheus.WriteRequest (remote "
                                "write 1.0), io.prometheus.write.v2.Request "
                                "(2.0)\n",
                                ngx_min(value.len, 64), value.data)
                   - why->data;

        return NGX_HTTP_PROMGATE_REJECT_CONTENT_TYPE;
    }

    if (ngx_http_promgate_snappy_encoded(r)) {
        return NGX_OK;
    }

    ngx_str_set(why, "promgate: expected \"Content-Encoding: snappy\" "
                "(a snappy block-compressed protobuf message; no other "
                "encoding is accepted)\n");

    return NGX_HTTP_PROMGATE_REJECT_ENCODING;

bad_type:

    ngx_str_set(why, "promgate: expected \"Content-Type: "
                "application/x-protobuf\", optionally with "
                ";proto=prometheus.WriteRequest (remote write 1.0) or "
                ";proto=io.prometheus.write.v2.Request (2.0)\n");

    return NGX_HTTP_PROMGATE_REJECT_CONTENT_TYPE;
}


/*
 * The uncompressed body lives only while it is validated, synchronously:
 * one buffer per worker serves every write, instead of a fresh large
 * allocation (and its page faults) per request.  So do the compressed
 * body, when it has to be joined from the pieces it was read in, and the
 * buffer a body made for targets (translated, or without invalid series)
 * is encoded into before it is compressed.  Buffers above 16m are given
 * back after use.
 */

typedef struct {
    u_char   *data;
    size_t    size;
} ngx_http_promgate_scratch_t;


static ngx_http_promgate_scratch_t  ngx_http_promgate_joined;
static ngx_http_promgate_scratch_t  ngx_http_promgate_decoded;
static ngx_http_promgate_scratch_t  ngx_http_promgate_encoded;


static u_char *
ngx_http_promgate_scratch(ngx_http_promgate_scratch_t *sb, size_t size,
    ngx_log_t *log)
{
    if (size <= sb->size) {
        return sb->data;
    }

    if (sb->data) {
        ngx_free(sb->data);
    }

    size = ngx_max(ngx_align(size, 65536), 1024 * 1024);

    sb->data = ngx_alloc(size, log);
    sb->size = sb->data ? size : 0;

    return sb->data;
}


static void
ngx_http_promgate_scratch_release(ngx_http_promgate_scratch_t *sb)
{
    if (sb->size > 16 * 1024 * 1024) {
        ngx_free(sb->data);
        sb->data = NULL;
        sb->size = 0;
    }
}


static void
ngx_http_promgate_write_body(ngx_http_request_t *r)
{
    u_char                         *data;
    size_t                          len;
    ngx_int_t                       rc;
    ngx_http_promgate_write_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_promgate_module);

    data = NULL;
    len = 0;

    rc = ngx_http_promgate_body(r, ctx, &data, &len);

    if (rc == NGX_OK && !ctx->answer) {
        rc = ngx_http_promgate_validate(r, ctx, data, len);
    }

    ngx_http_promgate_scratch_release(&ngx_http_promgate_joined);

    /* a refused write has been answered already (rc is the output's) */

    if (rc != NGX_OK || ctx->answer) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ctx->stats.series == 0 && ctx->stats.metadata == 0
        && ctx->invalid_series)
    {
        /* every series was invalid and dropped: nothing to store */
        r->write_event_handler = ngx_http_request_empty_handler;
        ngx_http_finalize_request(r,
                                  ngx_http_promgate_write_answer(r, &ctx->fw,
                                                                 204));
        return;
    }

    if (ctx->fw.targets == NULL) {
        ctx->fw.targets = ctx->plcf->forwards;   /* else one per tenant */
    }

    ctx->fw.decide = ngx_http_promgate_write_decide;
    ctx->fw.answer = ngx_http_promgate_write_answer;

    if (ngx_http_promgate_forwarder_start(&ctx->fw) != NGX_OK) {
        ngx_http_promgate_stats_answer(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the forwarder answers; the body-read reference is released then */
}


/* the compressed body as one piece of memory */

static ngx_int_t
ngx_http_promgate_body(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char **data, size_t *len)
{
    *len = ngx_http_promgate_body_size(r);

    /*
     * A body read in pieces (the part that came with the header, then
     * the rest) is joined in a buffer of the worker's: it is read only
     * while the write is validated, synchronously
     */

    if (*len && !ngx_http_promgate_body_piece(r, data)) {
        *data = ngx_http_promgate_scratch(&ngx_http_promgate_joined, *len,
                                          r->connection->log);

        if (*data == NULL || ngx_http_promgate_body_join(r, *data) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
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


/* pg_buf_t's growth over the encode scratch buffer */

static int
ngx_http_promgate_encoded_grow(pg_buf_t *b, size_t need)
{
    u_char                       *p;
    size_t                        used, size;
    ngx_http_promgate_scratch_t  *sb;

    sb = b->data;
    used = b->pos - b->start;

    size = ngx_max(sb->size * 2, used + need);
    size = ngx_align(size, 65536);

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        return -1;
    }

    if (used) {
        ngx_memcpy(p, b->start, used);
    }

    if (sb->data) {
        ngx_free(sb->data);
    }

    sb->data = p;
    sb->size = size;

    b->start = p;
    b->pos = p + used;
    b->end = p + size;

    return 0;
}


/*
 * A body of version v for the targets that need one other than the
 * client's: the valid series only (and of them, with select, those a
 * route chose), in v, less their label named skip (len 0: none;
 * promgate_tenant_label ... drop), compressed; made once, shared by every
 * target and retry that speaks v (and has that route).
 */

static ngx_int_t
ngx_http_promgate_payload(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req, ngx_uint_t v, ngx_http_promgate_payload_t *pl,
    const uint8_t *select, pg_str_t skip)
{
    u_char                       *out;
    size_t                        clen;
    pg_buf_t                      eb;
    pg_allocator_t                alloc;
    pg_rw_encode_opts_t           opts;
    ngx_http_promgate_stats_t    *st;

    pl->version = v;
    pl->ready = 1;
    pl->remote_write = 1;

    if (select == NULL && skip.len == 0 && v == ctx->fw.version
        && req->invalid_series == 0 && req->invalid_metadata == 0)
    {
        pl->body = NULL;                  /* the client's bytes */
        pl->len = ctx->body_len;
        return NGX_OK;
    }

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    eb.start = ngx_http_promgate_scratch(&ngx_http_promgate_encoded,
                                         dlen + 1024, r->connection->log);
    if (eb.start == NULL) {
        return NGX_ERROR;
    }

    eb.pos = eb.start;
    eb.end = eb.start + ngx_http_promgate_encoded.size;
    eb.grow = ngx_http_promgate_encoded_grow;
    eb.data = &ngx_http_promgate_encoded;

    opts.select = select;
    opts.skip_label = skip;

    if (pg_rw_encode_opts(decoded, dlen, req, &opts, v, &alloc, &eb) != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "promgate: out of memory making a remote write %s "
                      "body of %uz bytes", v == PG_RW_V2 ? "2.0" : "1.0",
                      dlen);
        return NGX_ERROR;
    }

    clen = pg_snappy_max_encoded(eb.pos - eb.start);

    out = ngx_pnalloc(r->pool, clen);
    if (out == NULL) {
        return NGX_ERROR;
    }

    if (pg_snappy_encode(eb.start, eb.pos - eb.start, out, &clen)
        != PG_SNAPPY_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_promgate_scratch_release(&ngx_http_promgate_encoded);

    if (ngx_http_promgate_payload_set(r->pool, pl, v, out, clen) != NGX_OK) {
        return NGX_ERROR;
    }

    st = ngx_http_promgate_stats();
    (void) ngx_atomic_fetch_add(&st->encoded[v], 1);
    (void) ngx_atomic_fetch_add(&st->encoded_bytes, clen);

    return NGX_OK;
}


/*
 * The bodies of a location whose targets have rules: per target, the
 * whole write (the body every target without rules gets, need[v]) when
 * its route chose every valid series, no request when it chose none, else
 * the body of its route in its version, made once for every target with
 * that route.
 */

static ngx_int_t
ngx_http_promgate_route_payloads(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req, ngx_uint_t *need)
{
    ngx_uint_t                     i, k, v, n;
    pg_route_state_t              *rs;
    ngx_http_promgate_payload_t  **routed, *none;
    ngx_http_promgate_forward_t   *fe;

    rs = ctx->route;
    fe = ctx->plcf->forwards->elts;
    n = ctx->plcf->forwards->nelts;

    if (rs->ntenants) {
        return ngx_http_promgate_tenant_payloads(r, ctx, decoded, dlen, req);
    }

    ctx->fw.tpayloads = ngx_pcalloc(r->pool,
                                    n * sizeof(ngx_http_promgate_payload_t *));
    routed = ngx_pcalloc(r->pool, rs->router->nroutes * 3
                                  * sizeof(ngx_http_promgate_payload_t *));
    none = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_payload_t));

    if (ctx->fw.tpayloads == NULL || routed == NULL || none == NULL) {
        return NGX_ERROR;
    }

    none->ready = 1;
    none->none = 1;

    for (i = 0; i < n; i++) {
        k = fe[i].route;
        v = fe[i].proto == NGX_HTTP_PROMGATE_PROTO_ASIS ? ctx->fw.version
                                                        : fe[i].proto;

        ngx_http_promgate_target_counts(ctx, i, rs->series[k],
                                        rs->samples[k]);

        if (rs->series[k] == req->stats.series) {
            need[v] = 1;
            continue;
        }

        if (rs->series[k] == 0) {
            ctx->fw.tpayloads[i] = none;
            continue;
        }

        if (routed[k * 3 + v] == NULL) {
            routed[k * 3 + v] = ngx_pcalloc(r->pool,
                                        sizeof(ngx_http_promgate_payload_t));
            if (routed[k * 3 + v] == NULL
                || ngx_http_promgate_payload(r, ctx, decoded, dlen, req, v,
                                             routed[k * 3 + v],
                                             rs->select[k],
                                             ngx_http_promgate_no_label)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        ctx->fw.tpayloads[i] = routed[k * 3 + v];
    }

    return NGX_OK;
}


/*
 * With promgate_tenant_label, when some series name a tenant: each target
 * appears once per tenant (the request's own, for the series without the
 * label, first; then each tenant in the order its series came) with the
 * series of that tenant its rules choose, and the tenant header set to
 * the tenant.  A tenant's body is made once per route and protocol; one
 * that holds every valid series of the write is the body every target
 * without rules gets, under the tenant's header.  With
 * promgate_tenant_label ... drop, every body is made without the label
 * (the sender's bytes have it): this function runs only when some series
 * has it, the route payloads otherwise.
 */

static ngx_int_t
ngx_http_promgate_tenant_payloads(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *decoded, size_t dlen,
    pg_rw_request_t *req)
{
    size_t                          count;
    uint8_t                        *bits;
    ngx_uint_t                      i, k, t, v, n, nt, nr, slot;
    ngx_array_t                    *targets;
    pg_str_t                        skip;
    pg_route_state_t               *rs;
    ngx_http_promgate_payload_t   **made, *pl, *none, *base;
    ngx_http_promgate_forward_t    *fe, *te;
    ngx_http_promgate_main_conf_t  *pmcf;

    rs = ctx->route;
    fe = ctx->plcf->forwards->elts;
    n = ctx->plcf->forwards->nelts;
    nt = rs->ntenants + 1;
    nr = rs->router->nroutes;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_promgate_module);

    skip.data = NULL;
    skip.len = 0;

    if (ctx->plcf->tenant_drop) {
        skip.data = ctx->plcf->tenant_label.data;
        skip.len = ctx->plcf->tenant_label.len;
    }

    targets = ngx_array_create(r->pool, n * nt,
                               sizeof(ngx_http_promgate_forward_t));
    ctx->fw.tpayloads = ngx_pcalloc(r->pool, n * nt
                                    * sizeof(ngx_http_promgate_payload_t *));
    made = ngx_pcalloc(r->pool, nt * nr * 3
                                * sizeof(ngx_http_promgate_payload_t *));
    none = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_payload_t));
    bits = ngx_palloc(r->pool, rs->cap / 8);

    if (targets == NULL || ctx->fw.tpayloads == NULL || made == NULL
        || none == NULL || bits == NULL)
    {
        return NGX_ERROR;
    }

    none->ready = 1;
    none->none = 1;

    for (i = 0; i < n; i++) {
        ngx_http_promgate_target_counts(ctx, i, rs->series[fe[i].route],
                                        rs->samples[fe[i].route]);
    }

    for (t = 0; t < nt; t++) {
        for (i = 0; i < n; i++) {
            te = ngx_array_push(targets);
            if (te == NULL) {
                return NGX_ERROR;
            }

            *te = fe[i];
            k = fe[i].route;
            v = fe[i].proto == NGX_HTTP_PROMGATE_PROTO_ASIS ? ctx->fw.version
                                                            : fe[i].proto;
            slot = (t * nr + k) * 3 + v;

            if (made[slot] == NULL) {
                count = pg_route_tenant_select(rs, k, t, bits);

                if (count == 0) {
                    made[slot] = none;

                } else if (count == req->stats.series && t == 0
                           && skip.len == 0)
                {
                    made[slot] = &ctx->fw.payloads[v];

                    if (!made[slot]->ready
                        && ngx_http_promgate_payload(r, ctx, decoded, dlen,
                                                     req, v, made[slot], NULL,
                                                     ngx_http_promgate_no_label)
                           != NGX_OK)
                    {
                        return NGX_ERROR;
                    }

                } else {
                    pl = ngx_pcalloc(r->pool,
                                     sizeof(ngx_http_promgate_payload_t));
                    if (pl == NULL) {
                        return NGX_ERROR;
                    }

                    if (count == req->stats.series && skip.len == 0) {

                        /* the whole write: its body, the tenant's header */

                        base = &ctx->fw.payloads[v];

                        if (!base->ready
                            && ngx_http_promgate_payload(r, ctx, decoded,
                                                         dlen, req, v, base,
                                                         NULL,
                                                     ngx_http_promgate_no_label)
                               != NGX_OK)
                        {
                            return NGX_ERROR;
                        }

                        pl->body = base->body;
                        pl->len = base->len;
                        pl->version = base->version;
                        pl->ready = 1;
                        pl->remote_write = 1;

                    } else if (ngx_http_promgate_payload(r, ctx, decoded,
                                                         dlen, req, v, pl,
                                                         bits, skip)
                               != NGX_OK)
                    {
                        return NGX_ERROR;
                    }

                    if (t > 0) {
                        pl->tenant_header = pmcf->tenant_header;
                        pl->tenant.data = (u_char *) rs->tenants[t - 1].data;
                        pl->tenant.len = rs->tenants[t - 1].len;
                    }

                    made[slot] = pl;
                }
            }

            ctx->fw.tpayloads[targets->nelts - 1] = made[slot];
        }
    }

    ctx->fw.targets = targets;

    return NGX_OK;
}


/* what target i is sent of a write, and what its rules left out */

static void
ngx_http_promgate_target_counts(ngx_http_promgate_write_ctx_t *ctx,
    ngx_uint_t i, uint64_t series, uint64_t samples)
{
    ngx_http_promgate_forward_t       *fe;
    ngx_http_promgate_target_stats_t  *ts;

    fe = ctx->plcf->forwards->elts;
    ts = &ngx_http_promgate_stats()->targets[fe[i].target->slot];

    (void) ngx_atomic_fetch_add(&ts->series_sent, series);
    (void) ngx_atomic_fetch_add(&ts->samples_sent, samples);

    if (series < ctx->stats.series) {
        (void) ngx_atomic_fetch_add(&ts->series_dropped,
                                    ctx->stats.series - series);
    }
}


/*
 * Invalid series that were dropped are logged at most once a second per
 * worker, naming the first of them; the counters have them all.
 */

static void
ngx_http_promgate_log_invalid(ngx_http_request_t *r, pg_rw_request_t *req)
{
    static ngx_msec_t  last;
    static uint64_t    suppressed;

    if (ngx_current_msec - last < 1000 && last != 0) {
        suppressed += req->invalid_series + req->invalid_metadata;
        return;
    }

    last = ngx_current_msec;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "promgate: dropped %uL invalid series and %uL metadata "
                  "entries of a write, forwarded the %uL valid series (%uL "
                  "more dropped since the last message); the first: %s",
                  req->invalid_series, req->invalid_metadata,
                  req->stats.series, suppressed, req->first.message);

    suppressed = 0;
}


/* what a refusal names, by pg_rw_limit_e */
static const char  *ngx_http_promgate_limit_names[] = {
    "no limit",
    "promgate_max_exemplars",
    "promgate_max_labels",
    "promgate_max_label_bytes",
    "the 2.0 label expansion limit"
};


/*
 * What a write may cost its consumers (the exemplar capture and the
 * series index copy labels and exemplars out of the body): the directives,
 * and for 2.0, where one symbol may be referenced by every label, the
 * labels' bytes once resolved.  Prometheus' own 2.0 requests resolve to a
 * few times their size (a label ref is 1 to 3 bytes, a label 20 to 60).
 */

static void
ngx_http_promgate_write_limits(ngx_http_promgate_loc_conf_t *plcf,
    size_t dlen, pg_rw_limits_t *limits)
{
    limits->exemplars = (uint64_t) plcf->max_exemplars;
    limits->labels = (uint32_t) plcf->max_labels;
    limits->label_bytes = plcf->max_label_bytes;
    limits->resolved = (uint64_t) dlen * 8 + 4 * 1024 * 1024;
}


static ngx_int_t
ngx_http_promgate_validate(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, u_char *data, size_t len)
{
    u_char                       *decoded;
    size_t                        dlen;
    ngx_int_t                     rc;
    ngx_uint_t                    i, need[3];
    pg_allocator_t                alloc;
    pg_rw_reason_e                reason;
    pg_snappy_rc_e                src;
    pg_rw_limits_t                limits;
    pg_rw_request_t               req;
    ngx_http_promgate_forward_t  *fe;
    ngx_http_promgate_stats_t    *st;

    u_char                        msg[sizeof(req.first.message) + 128];

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

    decoded = ngx_http_promgate_scratch(&ngx_http_promgate_decoded, dlen,
                                        r->connection->log);
    if (decoded == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (pg_snappy_decode(data, len, decoded, dlen) != PG_SNAPPY_OK) {
        ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
        goto bad_snappy;
    }

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    ngx_http_promgate_write_limits(ctx->plcf, dlen, &limits);

    if (ctx->plcf->router) {
        ctx->route = ngx_palloc(r->pool, sizeof(pg_route_state_t));

        if (ctx->route == NULL
            || pg_route_init(ctx->route, ctx->plcf->router, &alloc,
                             dlen / 32) != 0)
        {
            ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->plcf->exemplar_zone || ctx->plcf->series_zone
        || ctx->plcf->router)
    {
        if (ngx_http_promgate_tenant(r, &ctx->tenant) != NGX_OK) {
            ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        reason = pg_rw_decode_limited(decoded, dlen, ctx->fw.version, &limits,
                                      &alloc, &req,
                                      ngx_http_promgate_write_series, ctx);

    } else {
        reason = pg_rw_decode_limited(decoded, dlen, ctx->fw.version, &limits,
                                      &alloc, &req, NULL, NULL);
    }

    if (reason == PG_RW_ABORTED && ctx->route
        && ctx->route->too_many_tenants)
    {
        rc = ngx_http_promgate_reject(r, ctx,
                 NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, PG_RW_OVER_LIMIT,
                 pg_rw_count_samples(decoded, dlen, ctx->fw.version), msg,
                 ngx_snprintf(msg, sizeof(msg), "promgate: write refused: "
                              "its series name more than %d tenants "
                              "(values of label \"%V\", "
                              "promgate_tenant_label); send them in "
                              "separate writes\n", PG_ROUTE_MAX_TENANTS,
                              &ctx->plcf->tenant_label) - msg);
        ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
        return rc;
    }

    if (reason == PG_RW_ABORTED || reason == PG_RW_NOMEM) {
        ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reason == PG_RW_OVER_LIMIT) {
        rc = ngx_http_promgate_reject(r, ctx,
                 NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, PG_RW_OVER_LIMIT,
                 pg_rw_count_samples(decoded, dlen, ctx->fw.version), msg,
                 ngx_snprintf(msg, sizeof(msg), "promgate: write refused "
                              "by %s (%uL): %s\n",
                              ngx_http_promgate_limit_names[req.over],
                              req.over_limit, req.first.message) - msg);
        ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
        return rc;
    }

    if (reason == PG_RW_OK && req.invalid_series + req.invalid_metadata
        && ctx->plcf->invalid_series == NGX_HTTP_PROMGATE_INVALID_REJECT)
    {
        reason = req.first.reason;
    }

    if (reason != PG_RW_OK) {
        rc = ngx_http_promgate_reject(r, ctx, NGX_HTTP_BAD_REQUEST, reason,
                                      pg_rw_count_samples(decoded, dlen,
                                                          ctx->fw.version),
                                      msg,
                                      ngx_snprintf(msg, sizeof(msg),
                                                   "promgate: invalid write "
                                                   "request: %s\n",
                                                   req.first.message) - msg);
        ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);
        return rc;
    }

    ctx->stats = req.stats;
    ctx->invalid_series = req.invalid_series;

    ngx_http_promgate_series_flush(ctx);     /* the body is still here */

    /* a body for each protocol the targets speak, made while it is here */

    need[PG_RW_V1] = 0;
    need[PG_RW_V2] = 0;

    fe = ctx->plcf->forwards->elts;
    rc = NGX_OK;

    if (ctx->route) {
        rc = ngx_http_promgate_route_payloads(r, ctx, decoded, dlen, &req,
                                              need);
        ctx->route = NULL;

    } else {
        for (i = 0; i < ctx->plcf->forwards->nelts; i++) {
            need[fe[i].proto == NGX_HTTP_PROMGATE_PROTO_ASIS
                 ? ctx->fw.version : fe[i].proto] = 1;

            ngx_http_promgate_target_counts(ctx, i, req.stats.series,
                                            req.stats.samples
                                            + req.stats.histograms);
        }
    }

    for (i = PG_RW_V1; i <= PG_RW_V2; i++) {
        if (need[i] && rc == NGX_OK
            && (req.stats.series || req.stats.metadata
                || req.invalid_series == 0))
        {
            rc = ngx_http_promgate_payload(r, ctx, decoded, dlen, &req, i,
                                           &ctx->fw.payloads[i], NULL,
                                           ngx_http_promgate_no_label);
        }
    }

    ngx_http_promgate_scratch_release(&ngx_http_promgate_decoded);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st = ngx_http_promgate_stats();

    if (req.invalid_series || req.invalid_metadata) {
        ngx_http_promgate_log_invalid(r, &req);

        for (i = 0; i < PG_RW_NREASONS; i++) {
            if (req.invalid[i]) {
                (void) ngx_atomic_fetch_add(&st->invalid_series[i],
                                            req.invalid[i]);
            }
        }

        (void) ngx_atomic_fetch_add(&st->invalid_samples,
                                    req.invalid_samples);
        (void) ngx_atomic_fetch_add(&st->invalid_metadata,
                                    req.invalid_metadata);
    }

    (void) ngx_atomic_fetch_add(&st->versions[ctx->fw.version], 1);
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
ngx_http_promgate_reject(ngx_http_request_t *r,
    ngx_http_promgate_write_ctx_t *ctx, ngx_uint_t status, ngx_uint_t reason,
    uint64_t samples, u_char *text, size_t len)
{
    ngx_http_promgate_stats_reject(reason, samples);
    ngx_http_promgate_stats_answer(ctx, status);

    return ngx_http_promgate_refuse(r, "write", status, text, len);
}


/*
 * The counts a remote write 2.0 sender is answered with: what promgate
 * forwarded (the valid series), lowered to what any target that stored
 * the write says it wrote (a 2.0 target's own headers).  Targets that did
 * not store it (failed or pending, where the ack policy let the answer go
 * before them) do not count, nor do targets sent a part of the write
 * (match=, drop=, shard=, a tenant's series): their counts are of that
 * part.
 */

static void
ngx_http_promgate_written_counts(ngx_http_promgate_write_ctx_t *ctx,
    uint64_t *written)
{
    ngx_uint_t                i, k;
    ngx_http_promgate_fwd_t  *f;

    written[0] = ctx->stats.samples;
    written[1] = ctx->stats.histograms;
    written[2] = ctx->stats.exemplars;

    for (i = 0; i < ctx->fw.nfwd; i++) {
        f = &ctx->fw.fwd[i];

        if (f->state != PG_TARGET_STORED || !f->confirmed
            || (ctx->fw.tpayloads && ctx->fw.tpayloads[i]))
        {
            continue;
        }

        for (k = 0; k < 3; k++) {
            written[k] = ngx_min(written[k], f->written[k]);
        }
    }
}


/*
 * The ack policy decides; 0 while it depends on pending targets.  With
 * routing it decides among the targets that got the whole write; a target
 * that got a part of it (match=, drop=, a tenant's series) and a shard
 * group must store (or spool) theirs whatever the policy: with any or
 * quorum, a series sent to one target only would otherwise be lost when
 * that target fails and another stored the rest.  A shard group counts as
 * one: stored when every member that got series stored them, rejected or
 * failed when one member was.  A target that got no series counts for
 * nothing (a write whose rules choose no series at all is answered 204).
 */

static ngx_uint_t
ngx_http_promgate_write_decide(ngx_http_promgate_forwarder_t *fw)
{
    ngx_http_promgate_write_ctx_t *ctx = fw->data;

    ngx_uint_t                    i, g, ngroups, whole;
    ngx_uint_t                    part_failed, part_rejected, part_pending;
    pg_ack_count_t                acks;
    pg_target_state_e             state, group[PG_ROUTE_MAX];
    u_char                        used[PG_ROUTE_MAX];
    ngx_http_promgate_forward_t  *fe;

    if (ctx->plcf->router == NULL) {
        return pg_ack_decide(ctx->plcf->ack, &fw->acks);
    }

    ngroups = ctx->plcf->router->ngroups;

    for (g = 0; g < ngroups; g++) {
        group[g] = PG_TARGET_STORED;
        used[g] = 0;
    }

    ngx_memzero(&acks, sizeof(pg_ack_count_t));
    part_failed = 0;
    part_rejected = 0;
    part_pending = 0;

    fe = fw->targets->elts;

    for (i = 0; i < fw->nfwd; i++) {
        state = fw->fwd[i].state;

        if (fw->fwd[i].skipped) {
            continue;
        }

        if (fe[i].group >= 0) {
            g = fe[i].group;
            used[g] = 1;

            /* rejected over failed over pending over stored */

            if (state == PG_TARGET_REJECTED
                || (state == PG_TARGET_FAILED
                    && group[g] != PG_TARGET_REJECTED)
                || (state == PG_TARGET_PENDING
                    && group[g] == PG_TARGET_STORED))
            {
                group[g] = state;
            }

            continue;
        }

        if (fw->tpayloads && fw->tpayloads[i]) {
            part_failed += (state == PG_TARGET_FAILED);
            part_rejected += (state == PG_TARGET_REJECTED);
            part_pending += (state == PG_TARGET_PENDING);
            continue;
        }

        acks.targets++;

        if (state == PG_TARGET_STORED) {
            acks.stored++;

        } else if (state == PG_TARGET_REJECTED) {
            acks.rejected++;

        } else if (state == PG_TARGET_FAILED) {
            acks.failed++;
        }
    }

    for (g = 0; g < ngroups; g++) {
        if (used[g]) {
            part_failed += (group[g] == PG_TARGET_FAILED);
            part_rejected += (group[g] == PG_TARGET_REJECTED);
            part_pending += (group[g] == PG_TARGET_PENDING);
        }
    }

    /* no target got the whole write: nothing is needed of them */

    whole = pg_ack_decide(ctx->plcf->ack, &acks);

    if (part_failed || whole == 503) {
        return 503;
    }

    if (part_pending || whole == 0) {
        return 0;
    }

    if (part_rejected || whole == PG_ACK_REJECTED) {
        return PG_ACK_REJECTED;
    }

    return 204;
}


static ngx_int_t
ngx_http_promgate_write_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision)
{
    ngx_http_promgate_write_ctx_t *ctx = fw->data;

    u_char                   *p, *last;
    size_t                    len;
    ngx_buf_t                *b;
    ngx_uint_t                i;
    uint64_t                  written[3];
    ngx_http_promgate_fwd_t  *f;

    static char  *names[] = {
        "X-Prometheus-Remote-Write-Samples-Written",
        "X-Prometheus-Remote-Write-Histograms-Written",
        "X-Prometheus-Remote-Write-Exemplars-Written"
    };

    static const char  *states[] = { "pending", "stored", "rejected",
                                     "failed" };

    static ngx_str_t  type = ngx_string("text/plain");

    if (decision == 204) {
        ngx_http_promgate_stats_answer(ctx, NGX_HTTP_NO_CONTENT);
        ngx_http_promgate_exemplars_store(ctx);
        ngx_http_promgate_series_publish(ctx);

        r->headers_out.status = NGX_HTTP_NO_CONTENT;
        r->header_only = 1;
        ngx_http_clear_content_length(r);

        /* remote write 1.0 answers carry no counts, as Prometheus' don't */

        if (fw->version != PG_RW_V2) {
            return ngx_http_send_header(r);
        }

        ngx_http_promgate_written_counts(ctx, written);

        for (i = 0; i < 3; i++) {
            p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (ngx_http_promgate_header_add(&r->headers_out.headers,
                                             names[i], p,
                                             ngx_sprintf(p, "%uL", written[i])
                                             - p)
                == NULL)
            {
                return NGX_ERROR;
            }
        }

        return ngx_http_send_header(r);
    }

    if (decision == PG_ACK_REJECTED) {

        /* the data is bad: the first rejection (in target order) speaks */

        for (i = 0; i < fw->nfwd; i++) {
            f = &fw->fwd[i];

            if (f->state == PG_TARGET_REJECTED) {
                break;
            }
        }

        f = &fw->fwd[i];

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
              + fw->nfwd * (NGX_HTTP_PROMGATE_TARGET_NAME + 64);

        b = ngx_create_temp_buf(r->pool, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        p = b->last;
        last = b->end;

        p = ngx_slprintf(p, last, "promgate: not stored as the ack policy "
                         "requires; the sender should retry:\n");

        for (i = 0; i < fw->nfwd; i++) {
            f = &fw->fwd[i];

            p = ngx_slprintf(p, last, "  %V: %s, status %ui after %ui "
                             "attempt%s\n", &f->target->uri, states[f->state],
                             f->status, f->attempts,
                             f->attempts == 1 ? "" : "s");
        }

        b->last = p;

        r->headers_out.status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_http_promgate_stats_answer(ctx, r->headers_out.status);

    return ngx_http_promgate_send(r, r->headers_out.status, &type, b->pos,
                                  b->last - b->pos);
}


/* the scan's per-series callback: what the location keeps of a series */

static int
ngx_http_promgate_write_series(void *data, const pg_rw_series_t *s)
{
    ngx_http_promgate_write_ctx_t *ctx = data;

    if (ctx->route && pg_route_add(ctx->route, s) != 0) {
        return -1;
    }

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
    ngx_http_promgate_write_ctx_t *ctx = data;

    if (ctx->inflight) {
        ctx->inflight = 0;
        ngx_http_promgate_inflight--;
        ngx_http_promgate_stats_inflight(ngx_http_promgate_inflight);
    }
}
