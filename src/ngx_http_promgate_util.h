
/*
 * promgate: what several glue files use (ngx_http_promgate_util.c).  The
 * helpers call no other glue file, so every feature may call them:
 *
 *   requests  a header by name, a header added, "Content-Encoding:
 *             snappy", the tenant,
 *             the request body as one piece of memory, an answer, a
 *             refusal
 *   memory    the request pool as src/core's allocator
 *   processes a module's main configuration in a worker
 *   sockets   a unix listener promgate adds to a server, made private
 *   zones     one shared-zone idiom for every promgate zone, as
 *             ngx_http_limit_req_module's: NAME:SIZE, the zone reused on
 *             reload and when it exists already, its header checked,
 *             its slab pool's log context, the largest free block
 *   text      the Prometheus text format: a family's HELP and TYPE
 *             lines, its samples, tables of counters
 */


#ifndef _NGX_HTTP_PROMGATE_UTIL_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_UTIL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "pg_core.h"


/* ------------------------------------------------------------ requests */

ngx_table_elt_t *ngx_http_promgate_find_header(ngx_list_t *headers,
    u_char *name, size_t len);
ngx_table_elt_t *ngx_http_promgate_header_add(ngx_list_t *headers,
    char *key, u_char *value, size_t len);
ngx_int_t ngx_http_promgate_snappy_encoded(ngx_http_request_t *r);
ngx_int_t ngx_http_promgate_tenant(ngx_http_request_t *r, ngx_str_t *tenant);
ngx_int_t ngx_http_promgate_body_bytes(ngx_http_request_t *r, u_char **data,
    size_t *len);
size_t ngx_http_promgate_body_size(ngx_http_request_t *r);
ngx_uint_t ngx_http_promgate_body_piece(ngx_http_request_t *r, u_char **data);
ngx_int_t ngx_http_promgate_body_join(ngx_http_request_t *r, u_char *p);
ngx_int_t ngx_http_promgate_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len);
ngx_int_t ngx_http_promgate_refuse(ngx_http_request_t *r, const char *what,
    ngx_uint_t status, u_char *text, size_t len);


/* ----------------------------------------------------------- processes */

void *ngx_http_promgate_worker_conf(ngx_cycle_t *cycle, ngx_module_t *module);


/* ------------------------------------------------------------- sockets */

void ngx_http_promgate_stale_socket(ngx_conf_t *cf, u_char *path,
    struct sockaddr *sa, socklen_t socklen);
ngx_int_t ngx_http_promgate_listen(ngx_conf_t *cf,
    ngx_http_core_srv_conf_t *cscf, ngx_str_t *url);
ngx_int_t ngx_http_promgate_socket_private(ngx_cycle_t *cycle, u_char *path);


/* -------------------------------------------------------------- memory */

/* pg_allocator_t's alloc() on an ngx_pool_t (its ctx) */
void *ngx_http_promgate_pool_alloc(void *ctx, size_t size);


/* --------------------------------------------------------------- zones */

/* what every promgate zone's shared memory starts with (shpool->data) */
typedef struct {
    uint32_t                        magic;    /* the kind's */
    uint32_t                        layout;   /* the kind's when made */
} ngx_http_promgate_shm_t;


typedef struct ngx_http_promgate_zone_s  ngx_http_promgate_zone_t;

/*
 * A kind's own part of a zone's initialization, with zone->sh set: fresh
 * (zeroed, reused 0), or as a previous cycle left it (reused 1: a reload,
 * or a zone that exists already).
 */
typedef ngx_int_t (*ngx_http_promgate_zone_init_pt)(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);


/*
 * A kind of zone: one static instance each, which is also the tag of its
 * zones (nginx refuses one name for two kinds).
 */
typedef struct {
    char                           *name;     /* "promgate_exemplar" */
    char                           *what;     /* "exemplar zone" */
    uint32_t                        magic;
    uint32_t                        layout;   /* bumped when sh changes */
    size_t                          size;     /* of sh */
    ngx_http_promgate_zone_init_pt  init;
} ngx_http_promgate_zone_kind_t;


/*
 * A zone in the configuration: the first member of a kind's context,
 * which is the ngx_shm_zone_t's data.
 */
struct ngx_http_promgate_zone_s {
    ngx_http_promgate_zone_kind_t  *kind;
    ngx_shm_zone_t                 *shm_zone;
    ngx_slab_pool_t                *shpool;
    void                           *sh;       /* ..._shm_t first */
};


ngx_int_t ngx_http_promgate_zone_arg(ngx_conf_t *cf, ngx_str_t *arg,
    const char *what, const char *example, ngx_str_t *name, size_t *size);
ngx_int_t ngx_http_promgate_zone_add(ngx_conf_t *cf, ngx_str_t *name,
    size_t size, ngx_http_promgate_zone_kind_t *kind,
    ngx_http_promgate_zone_t *zone, ngx_array_t *zones);
void *ngx_http_promgate_shm_block(ngx_slab_pool_t *shpool, size_t *size);
void ngx_http_promgate_shmtx_pass(ngx_shmtx_t *mtx);
void ngx_http_promgate_zones_sum(ngx_array_t *zones, size_t offset,
    ngx_uint_t n, ngx_atomic_t *sum);


/* ---------------------------------------------------------------- text */

/* a page being written: buffers from the pool, chained as they fill */
typedef struct {
    ngx_pool_t                     *pool;
    ngx_chain_t                    *out;
    ngx_chain_t                   **last;
    ngx_buf_t                      *buf;
    off_t                           size;     /* of the page so far */
    ngx_uint_t                      failed;   /* out of memory */
} ngx_http_promgate_text_t;


/* a label of a sample; the value is escaped as the text format wants */
typedef struct {
    char                           *name;
    ngx_str_t                       value;
} ngx_http_promgate_label_t;


/* a metric of a table: its value at offset in a struct */
typedef struct {
    char                           *name;
    char                           *type;     /* "counter", "gauge" */
    char                           *help;
    size_t                          offset;
} ngx_http_promgate_metric_t;


void ngx_http_promgate_text_init(ngx_http_promgate_text_t *t,
    ngx_pool_t *pool);
void ngx_http_promgate_text_family(ngx_http_promgate_text_t *t, char *name,
    char *type, char *help);
void ngx_http_promgate_text_sample(ngx_http_promgate_text_t *t, char *name,
    ngx_http_promgate_label_t *labels, ngx_uint_t nlabels,
    const char *fmt, ...);
void ngx_http_promgate_label_cstr(ngx_http_promgate_label_t *label,
    char *name, const char *value);
void ngx_http_promgate_text_counters(ngx_http_promgate_text_t *t,
    ngx_http_promgate_metric_t *metrics, ngx_uint_t n, void *base);

/* a zone's values (a struct of uint64_t), under its lock; NGX_DECLINED: none */
typedef ngx_int_t (*ngx_http_promgate_zone_values_pt)(
    ngx_http_promgate_zone_t *zone, void *values);

void ngx_http_promgate_text_zones(ngx_http_promgate_text_t *t,
    ngx_http_promgate_metric_t *metrics, ngx_uint_t n, ngx_array_t *zones,
    ngx_http_promgate_zone_values_pt values, size_t size);


#endif /* _NGX_HTTP_PROMGATE_UTIL_H_INCLUDED_ */
