
/*
 * promgate: the HTTP/1.1 client of the workers' own unix-domain listeners
 * (ngx_http_promgate_client.c).  The Kafka consumers post their batches
 * with it, and a spool's replay its records: a POST on the worker's event
 * loop, keep-alive connections per endpoint.
 */


#ifndef _NGX_HTTP_PROMGATE_CLIENT_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_CLIENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "pg_kafka.h"     /* pg_kafka_resp_t: the answer's parser */


/*
 * The unix-domain listener a target is posted to.  One promgate added
 * itself (socket=, "own") is private: mode 0600, the worker user's, and it
 * serves the consumers' target locations only (targets).
 */
typedef struct {
    ngx_str_t                       name;           /* "unix:/path" */
    struct sockaddr                *sockaddr;
    socklen_t                       socklen;
    ngx_array_t                     targets;        /* core loc confs */
    ngx_queue_t                     idle;           /* this worker's */
    ngx_uint_t                      nidle;
    unsigned                        own:1;
} ngx_http_promgate_client_endpoint_t;


typedef struct ngx_http_promgate_client_post_s  ngx_http_promgate_client_post_t;

typedef void (*ngx_http_promgate_client_post_pt)(
    ngx_http_promgate_client_post_t *post);


/*
 * One POST to the target over the endpoint, with a fresh or a keep-alive
 * connection.  status is 0 when there was no answer (error says why).
 */
struct ngx_http_promgate_client_post_s {
    ngx_http_promgate_client_endpoint_t  *endpoint;
    ngx_str_t                       head;           /* request line + headers */
    ngx_str_t                       body;
    ngx_msec_t                      timeout;
    ngx_log_t                      *log;

    ngx_http_promgate_client_post_pt handler;
    void                           *data;

    ngx_connection_t               *connection;
    void                           *link;           /* the connection's */
    ngx_queue_t                     queue;          /* active posts */
    ngx_chain_t                    *out;
    ngx_chain_t                     chain[2];
    ngx_buf_t                       bufs[2];
    pg_kafka_resp_t                 resp;

    ngx_uint_t                      status;
    const char                     *error;

    unsigned                        active:1;
    unsigned                        connecting:1;
    unsigned                        reused:1;       /* keep-alive connection */
    unsigned                        answered:1;     /* response bytes seen */
};


ngx_int_t ngx_http_promgate_client_post(
    ngx_http_promgate_client_post_t *post);
void ngx_http_promgate_client_close_idle(
    ngx_http_promgate_client_endpoint_t *ep);
void ngx_http_promgate_client_cancel_all(void);
ngx_uint_t ngx_http_promgate_client_active(void);


#endif /* _NGX_HTTP_PROMGATE_CLIENT_H_INCLUDED_ */
