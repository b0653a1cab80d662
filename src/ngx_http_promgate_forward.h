
/*
 * promgate: the forwarder, the one fan-out of a request to its targets,
 * with retries (ngx_http_promgate_forward.c).
 *
 * A caller embeds an ngx_http_promgate_forwarder_t in its own request
 * context, fills in the targets, the payloads and its callbacks, and
 * starts it.  The forwarder keeps its state in that struct, finds it in
 * its own module's ctx slot (ngx_http_promgate_forward_module), and
 * reports through the callbacks: decide() after every attempt, answer()
 * once, from the main request's handler, when decide() says the answer
 * is known, and done() (optional) when an attempt ends.  A target with a
 * spool (promgate_spool) that fails after its retries, or whose spool is
 * not empty, is spooled instead: stored, for the caller.
 */


#ifndef _NGX_HTTP_PROMGATE_FORWARD_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_FORWARD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "pg_rw.h"
#include "pg_policy.h"


/* the protocol a forward target speaks (promgate_forward ... proto=) */
#define NGX_HTTP_PROMGATE_PROTO_ASIS  0
#define NGX_HTTP_PROMGATE_PROTO_V1    PG_RW_V1
#define NGX_HTTP_PROMGATE_PROTO_V2    PG_RW_V2

#define NGX_HTTP_PROMGATE_TYPE_V1  "application/x-protobuf"
#define NGX_HTTP_PROMGATE_TYPE_V2                                            \
    "application/x-protobuf;proto=io.prometheus.write.v2.Request"


/* a target: the URI of an internal location, shared by name */
typedef struct {
    ngx_str_t                       uri;
    ngx_uint_t                      slot;     /* in the status zone */
} ngx_http_promgate_target_t;


typedef struct ngx_http_promgate_payload_s  ngx_http_promgate_payload_t;
typedef struct ngx_http_promgate_spool_s  ngx_http_promgate_spool_t;


/*
 * What the forwarder does with a target's spool (spool.c fills it in, so
 * that the forwarder calls no feature of its own accord): whether writes
 * go straight to it, and appending one (NGX_OK: stored).
 */
typedef struct {
    ngx_uint_t                    (*busy)(ngx_http_promgate_spool_t *sp);
    ngx_int_t                     (*append)(ngx_http_promgate_spool_t *sp,
                                      ngx_http_request_t *r,
                                      ngx_http_promgate_payload_t *pl);
} ngx_http_promgate_spool_ops_t;


/* one entry of a location's target list: a target and how to talk to it */
typedef struct {
    ngx_http_promgate_target_t     *target;
    ngx_uint_t                      proto;
    ngx_http_promgate_spool_t      *spool;    /* spool=, or NULL */
    ngx_http_promgate_spool_ops_t  *spool_ops;
    ngx_str_t                       match;    /* match=, "": every series */
    ngx_str_t                       drop;     /* drop=, "": none */
    void                           *match_sel;  /* pg_selector_t, parsed */
    void                           *drop_sel;
    ngx_str_t                       shard;    /* shard=NAME, "": none */
    ngx_uint_t                      route;    /* in its location's router */
    ngx_int_t                       group;    /* its shard group, -1: none */
} ngx_http_promgate_forward_t;


/* promgate_retries, promgate_retry_backoff, promgate_retry_timeout */
typedef struct {
    ngx_int_t                       retries;
    ngx_msec_t                      backoff_first;
    ngx_msec_t                      backoff_max;
    ngx_msec_t                      retry_timeout;
} ngx_http_promgate_forward_loc_conf_t;


/* a body as sent to targets: the client's, or one made for them */
struct ngx_http_promgate_payload_s {
    ngx_http_request_body_t        *body;     /* NULL: the client's */
    off_t                           len;
    ngx_list_t                      headers;  /* for the subrequests */
    ngx_uint_t                      version;  /* PG_RW_V1, PG_RW_V2 */
    ngx_str_t                       type;     /* its Content-Type, or */
                                              /*   empty: the client's */
    ngx_str_t                       tenant_header;  /* set to tenant, */
    ngx_str_t                       tenant;   /*   when tenant.len */
    unsigned                        ready:1;
    unsigned                        remote_write:1;  /* canonical headers */
    unsigned                        none:1;   /* nothing for the target: */
                                              /*   no request, stored */
};


typedef struct ngx_http_promgate_forwarder_s  ngx_http_promgate_forwarder_t;


/* one target within one request */
typedef struct {
    ngx_http_promgate_forwarder_t  *fw;
    ngx_http_promgate_target_t     *target;
    ngx_http_promgate_payload_t    *payload;  /* what it is sent */
    ngx_http_promgate_spool_t      *spool;    /* where it goes if down */
    ngx_http_promgate_spool_ops_t  *spool_ops;
    ngx_http_post_subrequest_t      ps;
    ngx_event_t                     timer;
    pg_target_state_e               state;
    ngx_uint_t                      attempts;
    ngx_uint_t                      status;   /* of the last attempt */
    ngx_str_t                       reason;   /* the target's answer body */
    off_t                           received; /* answer bytes kept */
    uint64_t                        written[3];  /* its RW 2.0 answer */
    unsigned                        confirmed:1; /* it sent written[] */
    unsigned                        running:1;
    unsigned                        waiting:1;   /* timer holds a reference */
    unsigned                        truncated:1; /* answer cut to fit */
    unsigned                        ended:1;     /* its end passed */
    unsigned                        spooled:1;   /* stored in its spool */
    unsigned                        skipped:1;   /* nothing to send it */
} ngx_http_promgate_fwd_t;


/* the answer, once known: non-zero, as the caller chooses to code it */
typedef ngx_uint_t (*ngx_http_promgate_decide_pt)(
    ngx_http_promgate_forwarder_t *fw);

/* answers the main request; what ngx_http_finalize_request() gets */
typedef ngx_int_t (*ngx_http_promgate_answer_pt)(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision);

/*
 * An attempt ended: f->status, f->reason, f->truncated are its answer's,
 * f->state is final unless a retry is due, sr (the attempt) still has its
 * headers.  A caller with this hook reports an answer that was cut
 * (f->truncated) itself; without it the forwarder logs it.
 */
typedef void (*ngx_http_promgate_done_pt)(ngx_http_promgate_forwarder_t *fw,
    ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr);


struct ngx_http_promgate_forwarder_s {
    /* ngx_http_promgate_forwarder_init() sets these */
    ngx_http_request_t                    *request;
    ngx_http_promgate_forward_loc_conf_t  *conf;     /* its location's */
    ngx_msec_t                             start;    /* retries end from */
    void                                  *data;     /* the caller's */

    /* the caller sets these before ngx_http_promgate_forwarder_start() */
    ngx_array_t                           *targets;  /* ..._forward_t */
    ngx_uint_t                             version;  /* the request body's */
    ngx_http_promgate_payload_t            payloads[3];  /* [0] unused */
    ngx_http_promgate_payload_t          **tpayloads;  /* per target, or */
                                                       /*   NULL: payloads */
    ngx_http_promgate_decide_pt            decide;
    ngx_http_promgate_answer_pt            answer;
    ngx_http_promgate_done_pt              done;     /* optional */

    /* the forwarder's own */
    ngx_uint_t                             nfwd;
    ngx_http_promgate_fwd_t               *fwd;      /* as targets */
    pg_ack_count_t                         acks;
    unsigned                               answered:1;
    unsigned                               nospool:1;  /* a spool's replay */
};


extern ngx_module_t  ngx_http_promgate_forward_module;


void ngx_http_promgate_forwarder_init(ngx_http_promgate_forwarder_t *fw,
    ngx_http_request_t *r, void *data);
ngx_int_t ngx_http_promgate_forwarder_start(ngx_http_promgate_forwarder_t *fw);
ngx_int_t ngx_http_promgate_payload_set(ngx_pool_t *pool,
    ngx_http_promgate_payload_t *pl, ngx_uint_t version, u_char *data,
    size_t len);


#endif /* _NGX_HTTP_PROMGATE_FORWARD_H_INCLUDED_ */
