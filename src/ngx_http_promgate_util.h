
/*
 * promgate: what several glue files use (ngx_http_promgate_util.c).  The
 * helpers call no other glue file, so every feature may call them:
 *
 *   requests  a header by name, "Content-Encoding: snappy", the tenant,
 *             the request body as one piece of memory
 *   memory    the request pool as src/core's allocator
 *   zones     the NAME:SIZE argument, the largest free block of a zone
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
ngx_int_t ngx_http_promgate_snappy_encoded(ngx_http_request_t *r);
void ngx_http_promgate_tenant(ngx_http_request_t *r, ngx_str_t *tenant);
ngx_int_t ngx_http_promgate_body_bytes(ngx_http_request_t *r, u_char **data,
    size_t *len);


/* -------------------------------------------------------------- memory */

/* pg_allocator_t's alloc() on an ngx_pool_t (its ctx) */
void *ngx_http_promgate_pool_alloc(void *ctx, size_t size);


/* --------------------------------------------------------------- zones */

ngx_int_t ngx_http_promgate_zone_arg(ngx_conf_t *cf, ngx_str_t *arg,
    const char *what, const char *example, ngx_str_t *name, size_t *size);
void *ngx_http_promgate_shm_block(ngx_slab_pool_t *shpool, size_t *size);


#endif /* _NGX_HTTP_PROMGATE_UTIL_H_INCLUDED_ */
