
/*
 * promgate: remote read.  A module of its own in promgate's .so, with its
 * own directives and request context; the fan-out and retries are the
 * forwarder's (ngx_http_promgate_forward.c), embedded in that context,
 * decoding and merging are src/core/pg_read.c.  The request is forwarded
 * to every read target asking for SAMPLES; the answers are merged into
 * one ReadResponse.
 */


#include "ngx_http_promgate_module.h"
#include "pg_read.h"


#define NGX_HTTP_PROMGATE_READ_DONE  1     /* every target is final */
#define NGX_HTTP_PROMGATE_READ_FAIL  2     /* "all" cannot be met */


typedef struct {
    ngx_flag_t                      enable;
    ngx_array_t                    *targets;  /* ngx_http_promgate_forward_t */
    ngx_array_t                    *replica_labels;  /* pg_str_t */
    ngx_uint_t                      ack;
    ngx_int_t                       max_samples;
    size_t                          max_size;
} ngx_http_promgate_read_loc_conf_t;


/* what the read module knows of one target within one read */
typedef struct {
    ngx_str_t                       type;     /* its last answer's */
    ngx_str_t                       encoding; /* its Content-Encoding */
    u_char                         *problem;  /* an invalid answer: why */
} ngx_http_promgate_read_target_t;


typedef struct {
    ngx_http_promgate_forwarder_t   fw;
    pg_read_request_t               req;
    pg_read_mode_e                  mode;
    ngx_http_promgate_read_target_t  *targets;   /* as fw.fwd */
} ngx_http_promgate_read_ctx_t;


static ngx_int_t ngx_http_promgate_read_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_read_check_headers(ngx_http_request_t *r,
    ngx_str_t *why);
static void ngx_http_promgate_read_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_read_collect(ngx_http_request_t *r,
    u_char **data, size_t *len);
static ngx_int_t ngx_http_promgate_read_start(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx, u_char *data, size_t len);
static ngx_uint_t ngx_http_promgate_read_decide(
    ngx_http_promgate_forwarder_t *fw);
static void ngx_http_promgate_read_done(ngx_http_promgate_forwarder_t *fw,
    ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr);
static ngx_int_t ngx_http_promgate_read_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision);
static ngx_int_t ngx_http_promgate_read_merge(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx);
static ngx_int_t ngx_http_promgate_read_failed(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx);
static ngx_int_t ngx_http_promgate_read_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, ngx_str_t *encoding, u_char *data,
    size_t len);
static ngx_int_t ngx_http_promgate_read_refuse(ngx_http_request_t *r,
    ngx_uint_t status, u_char *text, size_t len);

static void *ngx_http_promgate_read_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_promgate_read_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_promgate_remote_read(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_promgate_read_forward(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_promgate_read_replica_label(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_conf_enum_t  ngx_http_promgate_read_acks[] = {
    { ngx_string("all"), PG_ACK_ALL },
    { ngx_string("any"), PG_ACK_ANY },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_promgate_read_samples_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_MAX_INT32_VALUE
};


static ngx_command_t  ngx_http_promgate_read_commands[] = {

    { ngx_string("promgate_remote_read"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_promgate_remote_read,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_read_forward"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_promgate_read_forward,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_read_replica_label"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_promgate_read_replica_label,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_read_ack"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_read_loc_conf_t, ack),
      &ngx_http_promgate_read_acks },

    { ngx_string("promgate_read_max_samples"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_read_loc_conf_t, max_samples),
      &ngx_http_promgate_read_samples_bounds },

    { ngx_string("promgate_read_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_read_loc_conf_t, max_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_promgate_read_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_promgate_read_create_loc_conf,  /* create location configuration */
    ngx_http_promgate_read_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_promgate_read_module = {
    NGX_MODULE_V1,
    &ngx_http_promgate_read_module_ctx,    /* module context */
    ngx_http_promgate_read_commands,       /* module directives */
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


static ngx_str_t  ngx_http_promgate_read_samples_type =
    ngx_string("application/x-protobuf");
static ngx_str_t  ngx_http_promgate_read_snappy = ngx_string("snappy");
static ngx_str_t  ngx_http_promgate_read_stream_type =
    ngx_string("application/x-streamed-protobuf; "
               "proto=prometheus.ChunkedReadResponse");


static ngx_int_t
ngx_http_promgate_read_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;
    ngx_str_t  why;

    if (r != r->main) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->method != NGX_HTTP_POST) {
        if (ngx_http_promgate_header_add(&r->headers_out.headers, "Allow",
                                         (u_char *) "POST", 4)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&why, "promgate: remote read takes POST only\n");

        return ngx_http_promgate_read_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                             why.data, why.len);
    }

    if (ngx_http_promgate_read_check_headers(r, &why) != NGX_OK) {
        return ngx_http_promgate_read_refuse(r,
                                             NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                             why.data, why.len);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_promgate_read_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * Content-Type: application/x-protobuf (parameters are not checked: the
 * body says what it is), Content-Encoding: snappy
 */

static ngx_int_t
ngx_http_promgate_read_check_headers(ngx_http_request_t *r, ngx_str_t *why)
{
    size_t            len;
    u_char           *p;

    if (r->headers_in.content_type == NULL) {
        goto bad_type;
    }

    p = r->headers_in.content_type->value.data;
    len = r->headers_in.content_type->value.len;

    if (len < sizeof("application/x-protobuf") - 1
        || ngx_strncasecmp(p, (u_char *) "application/x-protobuf",
                           sizeof("application/x-protobuf") - 1) != 0
        || (len > sizeof("application/x-protobuf") - 1
            && p[sizeof("application/x-protobuf") - 1] != ';'
            && p[sizeof("application/x-protobuf") - 1] != ' '))
    {
        goto bad_type;
    }

    if (ngx_http_promgate_snappy_encoded(r)) {
        return NGX_OK;
    }

    ngx_str_set(why, "promgate: expected \"Content-Encoding: snappy\" "
                "(a snappy block-compressed protobuf ReadRequest)\n");

    return NGX_DECLINED;

bad_type:

    ngx_str_set(why, "promgate: expected \"Content-Type: "
                "application/x-protobuf\" (a snappy-compressed protobuf "
                "ReadRequest)\n");

    return NGX_DECLINED;
}


static void
ngx_http_promgate_read_body(ngx_http_request_t *r)
{
    u_char                        *data;
    size_t                         len;
    ngx_int_t                      rc;
    ngx_http_promgate_read_ctx_t  *rctx;

    rctx = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_read_ctx_t));
    if (rctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_set_ctx(r, rctx, ngx_http_promgate_read_module);

    data = NULL;
    len = 0;

    rc = ngx_http_promgate_read_collect(r, &data, &len);

    if (rc == NGX_OK && len == 0) {
        rc = ngx_http_promgate_read_refuse(r, NGX_HTTP_BAD_REQUEST,
                 (u_char *) "promgate: empty body: expected a "
                 "snappy-compressed protobuf ReadRequest\n",
                 sizeof("promgate: empty body: expected a "
                        "snappy-compressed protobuf ReadRequest\n") - 1);

    } else if (rc == NGX_OK) {
        rc = ngx_http_promgate_read_start(r, rctx, data, len);
    }

    /* NGX_DONE: forwarding; the forwarder answers and finalizes */

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/* the body as one piece of memory; *len is 0 without a body */

static ngx_int_t
ngx_http_promgate_read_collect(ngx_http_request_t *r, u_char **data,
    size_t *len)
{
    if (ngx_http_promgate_body_bytes(r, data, len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/* decode and check the request, then hand it to the forwarder */

static ngx_int_t
ngx_http_promgate_read_start(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx, u_char *data, size_t len)
{
    u_char                             *fdata;
    size_t                              flen;
    ngx_int_t                           status;
    ngx_pool_t                         *scratch;
    pg_read_rc_e                        rc;
    pg_allocator_t                      alloc, salloc;
    pg_read_error_t                     err;
    ngx_http_promgate_loc_conf_t       *plcf;
    ngx_http_promgate_read_loc_conf_t  *rlcf;

    u_char                              msg[sizeof(err.message) + 128];

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_read_module);

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    /* the decoded request is needed only until it is re-encoded */

    scratch = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, r->connection->log);
    if (scratch == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    salloc.alloc = ngx_http_promgate_pool_alloc;
    salloc.ctx = scratch;

    fdata = data;
    flen = len;
    status = NGX_OK;

    rc = pg_read_request_decode(data, len, plcf->max_decoded, &salloc,
                                &rctx->req, &err);

    switch (rc) {

    case PG_READ_OK:
        rctx->mode = pg_read_request_mode(&rctx->req, rlcf->targets->nelts);

        if (rctx->mode == PG_READ_MODE_REENCODE
            && pg_read_request_encode_samples(&rctx->req, &alloc, &fdata,
                                              &flen)
               != PG_READ_OK)
        {
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    case PG_READ_TOO_LARGE:
        status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        break;

    case PG_READ_NOMEM:
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        break;

    default:
        status = NGX_HTTP_BAD_REQUEST;
        break;
    }

    ngx_destroy_pool(scratch);
    rctx->req.msg = NULL;

    switch (status) {

    case NGX_OK:
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return ngx_http_promgate_read_refuse(r, status, msg,
                   ngx_snprintf(msg, sizeof(msg), "promgate: %s "
                                "(promgate_max_decoded_size)\n",
                                err.message) - msg);

    case NGX_HTTP_BAD_REQUEST:
        return ngx_http_promgate_read_refuse(r, status, msg,
                   ngx_snprintf(msg, sizeof(msg), "promgate: invalid read "
                                "request: %s\n", err.message) - msg);

    default:
        return status;
    }

    if (rctx->mode == PG_READ_MODE_UNSUPPORTED) {
        return ngx_http_promgate_read_refuse(r, NGX_HTTP_BAD_REQUEST, msg,
                   ngx_snprintf(msg, sizeof(msg), "promgate: none of the "
                                "accepted response types is supported: "
                                "promgate merges its targets' answers and "
                                "answers SAMPLES (0); STREAMED_XOR_CHUNKS "
                                "(1) is passed through only from a single "
                                "target (this location has %ui)\n",
                                rlcf->targets->nelts) - msg);
    }

    rctx->targets = ngx_pcalloc(r->pool, rlcf->targets->nelts
                                     * sizeof(ngx_http_promgate_read_target_t));
    if (rctx->targets == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_promgate_forwarder_init(&rctx->fw, r, rctx);

    /* the body the targets get, from memory, with its own length */

    if (ngx_http_promgate_payload_set(r->pool, &rctx->fw.payloads[PG_RW_V1],
                                      PG_RW_V1, fdata, flen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rctx->fw.version = PG_RW_V1;
    rctx->fw.targets = rlcf->targets;
    rctx->fw.decide = ngx_http_promgate_read_decide;
    rctx->fw.answer = ngx_http_promgate_read_answer;
    rctx->fw.done = ngx_http_promgate_read_done;

    if (ngx_http_promgate_forwarder_start(&rctx->fw) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


/*
 * A read waits for every target: the merge is only gap-free with all the
 * answers in.  With "all", a target that has failed settles it at once.
 */

static ngx_uint_t
ngx_http_promgate_read_decide(ngx_http_promgate_forwarder_t *fw)
{
    ngx_http_promgate_read_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(fw->request,
                                        ngx_http_promgate_read_module);

    if (rlcf->ack == PG_ACK_ALL && (fw->acks.failed || fw->acks.rejected)) {
        return NGX_HTTP_PROMGATE_READ_FAIL;
    }

    if (fw->acks.stored + fw->acks.rejected + fw->acks.failed
        < fw->acks.targets)
    {
        return 0;
    }

    return NGX_HTTP_PROMGATE_READ_DONE;
}


/*
 * An attempt ended: what a passed-through answer is sent as is its own
 * Content-Type and Content-Encoding (strings in the main request's pool).
 * An answer cut to subrequest_output_buffer_size is answered with 413.
 */

static void
ngx_http_promgate_read_done(ngx_http_promgate_forwarder_t *fw,
    ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr)
{
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_promgate_read_ctx_t     *rctx;
    ngx_http_promgate_read_target_t  *t;

    rctx = fw->data;
    t = &rctx->targets[f - fw->fwd];

    t->type = sr->headers_out.content_type;

    if (sr->headers_out.content_encoding) {
        t->encoding = sr->headers_out.content_encoding->value;

    } else {
        ngx_str_null(&t->encoding);
    }

    if (f->truncated && f->state == PG_TARGET_STORED) {
        clcf = ngx_http_get_module_loc_conf(sr, ngx_http_core_module);

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "promgate: the answer of read target \"%V\" is "
                      "larger than subrequest_output_buffer_size %uz of "
                      "its location: answering 413", &f->target->uri,
                      clcf->subrequest_output_buffer_size);
    }
}


static ngx_int_t
ngx_http_promgate_read_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision)
{
    u_char                           *p;
    ngx_uint_t                        i;
    ngx_http_promgate_fwd_t          *f;
    ngx_http_promgate_read_ctx_t     *rctx;
    ngx_http_promgate_read_target_t  *t;

    u_char                            msg[NGX_HTTP_PROMGATE_TARGET_NAME + 256];

    rctx = fw->data;

    /* an answer too big for its buffer is a limit, not a failed target */

    for (i = 0; i < fw->nfwd; i++) {
        f = &fw->fwd[i];

        if (f->state == PG_TARGET_STORED && f->truncated) {
            p = ngx_snprintf(msg, sizeof(msg), "promgate: the answer of read "
                             "target \"%V\" does not fit the "
                             "subrequest_output_buffer_size of its location: "
                             "raise it, or narrow the query\n",
                             &f->target->uri);

            return ngx_http_promgate_read_refuse(r,
                                           NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                           msg, p - msg);
        }
    }

    if (decision == NGX_HTTP_PROMGATE_READ_FAIL) {
        return ngx_http_promgate_read_failed(r, rctx);
    }

    if (rctx->mode == PG_READ_MODE_PASSTHROUGH) {
        f = &fw->fwd[0];

        if (f->state != PG_TARGET_STORED) {
            return ngx_http_promgate_read_failed(r, rctx);
        }

        /* as the target said it: a stream, or whatever it chose */

        t = &rctx->targets[0];

        return ngx_http_promgate_read_send(r, f->status,
                                  t->type.len ? &t->type
                                  : &ngx_http_promgate_read_stream_type,
                                  &t->encoding, f->reason.data, f->reason.len);
    }

    return ngx_http_promgate_read_merge(r, rctx);
}


static ngx_int_t
ngx_http_promgate_read_merge(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx)
{
    u_char                             *p, *out;
    size_t                              len;
    ngx_uint_t                          i, usable;
    ngx_pool_t                         *scratch;
    pg_read_rc_e                        rc;
    pg_allocator_t                      alloc, salloc;
    pg_read_merge_t                    *m;
    pg_read_error_t                     err;
    pg_read_stats_t                     st;
    pg_read_limits_t                    limits;
    ngx_http_promgate_fwd_t            *f;
    ngx_http_promgate_forwarder_t      *fw;
    ngx_http_promgate_read_loc_conf_t  *rlcf;

    u_char                              msg[sizeof(err.message)
                                            + NGX_HTTP_PROMGATE_TARGET_NAME
                                            + 128];

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_read_module);
    fw = &rctx->fw;

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    limits.max_samples = (uint64_t) rlcf->max_samples;
    limits.max_size = rlcf->max_size;

    m = pg_read_merge_create(&alloc, rctx->req.nqueries,
                             rlcf->replica_labels
                             ? rlcf->replica_labels->elts : NULL,
                             rlcf->replica_labels
                             ? rlcf->replica_labels->nelts : 0,
                             &limits);
    if (m == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    usable = 0;

    for (i = 0; i < fw->nfwd; i++) {
        f = &fw->fwd[i];

        if (f->state != PG_TARGET_STORED) {
            continue;
        }

        /* protobuf-c's copy of the answer lives only while it is merged */

        scratch = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, r->connection->log);
        if (scratch == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        salloc.alloc = ngx_http_promgate_pool_alloc;
        salloc.ctx = scratch;

        rc = pg_read_merge_add(m, f->reason.data, f->reason.len, &salloc,
                               &err);

        ngx_destroy_pool(scratch);

        switch (rc) {

        case PG_READ_OK:
            usable++;
            continue;

        case PG_READ_TOO_LARGE:
        case PG_READ_TOO_MANY_SAMPLES:
            p = ngx_snprintf(msg, sizeof(msg), "promgate: the answer of read "
                             "target \"%V\" is over a limit: %s (%s)\n",
                             &f->target->uri, err.message,
                             rc == PG_READ_TOO_LARGE
                             ? "promgate_read_max_response_size"
                             : "promgate_read_max_samples");

            return ngx_http_promgate_read_refuse(r,
                                           NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                           msg, p - msg);

        case PG_READ_NOMEM:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;

        default:
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "promgate: read target \"%V\" answered %ui with "
                          "an invalid ReadResponse: %s; is its location "
                          "proxying to a remote-read endpoint?",
                          &f->target->uri, f->status, err.message);

            p = ngx_pnalloc(r->pool, sizeof(err.message));
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            (void) ngx_cpystrn(p, (u_char *) err.message, sizeof(err.message));
            rctx->targets[i].problem = p;
            continue;
        }
    }

    if (usable == 0
        || (rlcf->ack == PG_ACK_ALL && usable < fw->nfwd))
    {
        return ngx_http_promgate_read_failed(r, rctx);
    }

    rc = pg_read_merge_finish(m, &out, &len, &st, &err);

    switch (rc) {

    case PG_READ_OK:
        break;

    case PG_READ_TOO_LARGE:
    case PG_READ_TOO_MANY_SAMPLES:
        p = ngx_snprintf(msg, sizeof(msg), "promgate: %s (%s)\n", err.message,
                         rc == PG_READ_TOO_LARGE
                         ? "promgate_read_max_response_size"
                         : "promgate_read_max_samples");

        return ngx_http_promgate_read_refuse(r,
                                             NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                             msg, p - msg);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "promgate read: %ui of %ui targets merged: %uL series, "
                   "%uL samples, %uL duplicates, %uz bytes",
                   usable, fw->nfwd, st.series, st.samples, st.duplicates,
                   st.size);

    return ngx_http_promgate_read_send(r, NGX_HTTP_OK,
                                       &ngx_http_promgate_read_samples_type,
                                       &ngx_http_promgate_read_snappy, out,
                                       len);
}


/*
 * The policy is not met.  Targets that rejected the query (400, 409)
 * speak for it: the query is bad.  Otherwise 503, with every target's
 * outcome.
 */

static ngx_int_t
ngx_http_promgate_read_failed(ngx_http_request_t *r,
    ngx_http_promgate_read_ctx_t *rctx)
{
    u_char                         *p, *last;
    size_t                          len;
    ngx_uint_t                      i;
    ngx_http_promgate_fwd_t        *f;
    ngx_http_promgate_forwarder_t  *fw;

    static const char              *states[] = { "pending", "answered",
                                                 "rejected the query",
                                                 "failed" };

    fw = &rctx->fw;

    for (i = 0; i < fw->nfwd; i++) {
        f = &fw->fwd[i];

        if (f->state != PG_TARGET_REJECTED) {
            continue;
        }

        len = sizeof("promgate: read target \"\" rejected the query: \n") - 1
              + f->target->uri.len + f->reason.len;

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        last = ngx_sprintf(p, "promgate: read target \"%V\" rejected the "
                           "query: %V", &f->target->uri, &f->reason);

        if (last == p || last[-1] != '\n') {
            *last++ = '\n';
        }

        return ngx_http_promgate_read_refuse(r, f->status, p, last - p);
    }

    len = sizeof("promgate: remote read failed as promgate_read_ack "
                 "requires:\n") - 1
          + fw->nfwd * (NGX_HTTP_PROMGATE_TARGET_NAME + 64
                        + sizeof(((pg_read_error_t *) 0)->message));

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = p + len;

    len = ngx_slprintf(p, last, "promgate: remote read failed as "
                       "promgate_read_ack requires:\n") - p;

    for (i = 0; i < fw->nfwd; i++) {
        f = &fw->fwd[i];

        if (rctx->targets[i].problem) {
            len = ngx_slprintf(p + len, last, "  %V: invalid answer: %s\n",
                               &f->target->uri, rctx->targets[i].problem)
                  - p;
            continue;
        }

        if (f->state == PG_TARGET_PENDING) {
            len = ngx_slprintf(p + len, last, "  %V: pending\n",
                               &f->target->uri) - p;
            continue;
        }

        len = ngx_slprintf(p + len, last, "  %V: %s, status %ui after %ui "
                           "attempt%s\n", &f->target->uri, states[f->state],
                           f->status, f->attempts,
                           f->attempts == 1 ? "" : "s") - p;
    }

    return ngx_http_promgate_read_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, p,
                                         len);
}


static ngx_int_t
ngx_http_promgate_read_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *encoding, u_char *data, size_t len)
{
    ngx_table_elt_t  *h;

    if (encoding && encoding->len) {
        h = ngx_http_promgate_header_add(&r->headers_out.headers,
                                         "Content-Encoding", encoding->data,
                                         encoding->len);
        if (h == NULL) {
            return NGX_ERROR;
        }

        /* nginx's gzip filter leaves an encoded body alone */
        r->headers_out.content_encoding = h;
    }

    return ngx_http_promgate_send(r, status, type, data, len);
}


/* a plain-text answer with the reason; what the caller returns */

static ngx_int_t
ngx_http_promgate_read_refuse(ngx_http_request_t *r, ngx_uint_t status,
    u_char *text, size_t len)
{
    return ngx_http_promgate_refuse(r, "read", status, text, len);
}


/* ------------------------------------------------------- configuration */


static void *
ngx_http_promgate_read_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_promgate_read_loc_conf_t  *rlcf;

    rlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_read_loc_conf_t));
    if (rlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rlcf->targets = NULL;
     *     rlcf->replica_labels = NULL;
     */

    rlcf->enable = NGX_CONF_UNSET;
    rlcf->ack = NGX_CONF_UNSET_UINT;
    rlcf->max_samples = NGX_CONF_UNSET;
    rlcf->max_size = NGX_CONF_UNSET_SIZE;

    return rlcf;
}


static char *
ngx_http_promgate_read_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_promgate_read_loc_conf_t *prev = parent;
    ngx_http_promgate_read_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /* a content handler: not inherited by nested locations */

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = 0;
    }

    if (conf->targets == NULL) {
        conf->targets = prev->targets;
    }

    if (conf->replica_labels == NULL) {
        conf->replica_labels = prev->replica_labels;
    }

    ngx_conf_merge_uint_value(conf->ack, prev->ack, PG_ACK_ANY);
    ngx_conf_merge_value(conf->max_samples, prev->max_samples, 5000000);
    ngx_conf_merge_size_value(conf->max_size, prev->max_size,
                              64 * 1024 * 1024);

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (conf->targets == NULL || conf->targets->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_remote_read\" needs at least one "
                           "\"promgate_read_forward\" target");
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != ngx_http_promgate_read_handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_remote_read\" cannot share location "
                           "\"%V\" with another content handler (such as "
                           "promgate_remote_write or proxy_pass)",
                           &clcf->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_remote_read(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_promgate_read_loc_conf_t *rlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (rlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != NULL) {
        return "cannot share a location with another content handler "
               "(such as promgate_remote_write or proxy_pass)";
    }

    rlcf->enable = 1;
    clcf->handler = ngx_http_promgate_read_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_read_forward(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_read_loc_conf_t *rlcf = conf;

    return ngx_http_promgate_target_list_add(cf, &rlcf->targets,
                                             "read target", "/_rr/prom", 0);
}


static char *
ngx_http_promgate_read_replica_label(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_read_loc_conf_t *rlcf = conf;

    u_char      c;
    pg_str_t   *l;
    ngx_str_t  *value;
    ngx_uint_t  i;

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
              || (i > 0 && c >= '0' && c <= '9')))
        {
            break;
        }
    }

    if (value[1].len == 0 || i < value[1].len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid replica label name \"%V\": expected "
                           "[a-zA-Z_][a-zA-Z0-9_]*", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (rlcf->replica_labels == NULL) {
        rlcf->replica_labels = ngx_array_create(cf->pool, 2,
                                                sizeof(pg_str_t));
        if (rlcf->replica_labels == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    l = rlcf->replica_labels->elts;

    for (i = 0; i < rlcf->replica_labels->nelts; i++) {
        if (l[i].len == value[1].len
            && ngx_strncmp(l[i].data, value[1].data, value[1].len) == 0)
        {
            return "is duplicate";
        }
    }

    l = ngx_array_push(rlcf->replica_labels);
    if (l == NULL) {
        return NGX_CONF_ERROR;
    }

    l->data = value[1].data;
    l->len = value[1].len;

    return NGX_CONF_OK;
}
