
/*
 * promgate: a Prometheus remote-write gateway inside nginx.
 * Directives, configuration, variables and the location registry.
 */


#include "ngx_http_promgate_module.h"

#if (defined __GLIBC__)
#include <malloc.h>
#endif


static ngx_int_t ngx_http_promgate_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_promgate_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_promgate_init_process(ngx_cycle_t *cycle);
static void ngx_http_promgate_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_promgate_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_promgate_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_promgate_heap_retain(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_promgate_heap_init(ngx_cycle_t *cycle);
static void *ngx_http_promgate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_promgate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_promgate_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_promgate_forward_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_promgate_exemplar_query(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_promgate_check_targets(ngx_conf_t *cf,
    ngx_http_promgate_main_conf_t *pmcf);
static ngx_int_t ngx_http_promgate_stat_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


typedef struct {
    ngx_http_handler_pt             handler;
} ngx_http_promgate_endpoint_t;


static ngx_http_promgate_endpoint_t  ngx_http_promgate_write_endpoint = {
    ngx_http_promgate_write_handler
};


static ngx_http_promgate_endpoint_t  ngx_http_promgate_status_endpoint = {
    ngx_http_promgate_status_handler
};


static ngx_conf_enum_t  ngx_http_promgate_ack_policies[] = {
    { ngx_string("all"), PG_ACK_ALL },
    { ngx_string("quorum"), PG_ACK_QUORUM },
    { ngx_string("any"), PG_ACK_ANY },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_promgate_invalid_series[] = {
    { ngx_string("drop"), NGX_HTTP_PROMGATE_INVALID_DROP },
    { ngx_string("reject"), NGX_HTTP_PROMGATE_INVALID_REJECT },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_promgate_inflight_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};


/* 0 turns a limit off */
static ngx_conf_num_bounds_t  ngx_http_promgate_exemplars_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000000
};

static ngx_conf_num_bounds_t  ngx_http_promgate_labels_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000
};


static ngx_command_t  ngx_http_promgate_commands[] = {

    { ngx_string("promgate_remote_write"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_promgate_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, remote_write),
      &ngx_http_promgate_write_endpoint },

    { ngx_string("promgate_forward"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_forward_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_ack"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, ack),
      &ngx_http_promgate_ack_policies },

    { ngx_string("promgate_invalid_series"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, invalid_series),
      &ngx_http_promgate_invalid_series },

    { ngx_string("promgate_max_inflight"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, max_inflight),
      &ngx_http_promgate_inflight_bounds },

    { ngx_string("promgate_max_decoded_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, max_decoded),
      NULL },

    { ngx_string("promgate_max_exemplars"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, max_exemplars),
      &ngx_http_promgate_exemplars_bounds },

    { ngx_string("promgate_max_labels"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, max_labels),
      &ngx_http_promgate_labels_bounds },

    { ngx_string("promgate_max_label_bytes"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, max_label_bytes),
      NULL },

    { ngx_string("promgate_exemplar_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_exemplar_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_exemplars"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_promgate_exemplar_ref,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, exemplar_zone),
      NULL },

    { ngx_string("promgate_exemplar_query"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_exemplar_query,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, exemplar_query),
      NULL },

    { ngx_string("promgate_exemplar_peer"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_promgate_exemplar_peer,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_exemplar_peer_policy"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, exemplar_peer_policy),
      &ngx_http_promgate_peer_policies },

    { ngx_string("promgate_series_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_series_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_tenant_label"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_promgate_tenant_label_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_shard"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_shard_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_promgate_spool_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_series_index"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_series_index,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_tenant"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, tenant),
      NULL },

    { ngx_string("promgate_tenant_header"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_promgate_main_conf_t, tenant_header),
      NULL },

    { ngx_string("promgate_heap_retain"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_promgate_heap_retain,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_promgate_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_promgate_loc_conf_t, status),
      &ngx_http_promgate_status_endpoint },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_promgate_module_ctx = {
    ngx_http_promgate_add_variables,       /* preconfiguration */
    ngx_http_promgate_init,                /* postconfiguration */

    ngx_http_promgate_create_main_conf,    /* create main configuration */
    ngx_http_promgate_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_promgate_create_loc_conf,     /* create location configuration */
    ngx_http_promgate_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_promgate_module = {
    NGX_MODULE_V1,
    &ngx_http_promgate_module_ctx,         /* module context */
    ngx_http_promgate_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_promgate_spool_init_module,   /* init module */
    ngx_http_promgate_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_promgate_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_promgate_vars[] = {

    { ngx_string("promgate_samples"), NULL,
      ngx_http_promgate_stat_variable,
      offsetof(pg_rw_stats_t, samples), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("promgate_exemplars"), NULL,
      ngx_http_promgate_stat_variable,
      offsetof(pg_rw_stats_t, exemplars), NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_promgate_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_promgate_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_stat_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    ngx_http_promgate_write_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_promgate_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uL", *(uint64_t *) ((char *) &ctx->stats + data))
             - p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_init(ngx_conf_t *cf)
{
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    if (pmcf->tenant_header.len == 0) {
        ngx_str_set(&pmcf->tenant_header, "X-Scope-OrgID");
    }

    if (ngx_http_promgate_check_targets(cf, pmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the status page: the writes' counters, then each feature's */

    if (ngx_http_promgate_status_init(cf) != NGX_OK
        || ngx_http_promgate_status_add(cf, ngx_http_promgate_exemplar_status,
                                        &pmcf->exemplar_zones)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pmcf->series_zones.nelts
        && ngx_http_promgate_status_add(cf, ngx_http_promgate_series_status,
                                        &pmcf->series_zones)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_promgate_spool_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_promgate_status_add(cf, ngx_http_promgate_wal_status,
                                        &pmcf->exemplar_zones);
}


/*
 * The location a URI maps to within a server, as nginx would pick it for
 * exact and prefix locations (regex locations are not considered).
 */

ngx_http_promgate_location_t *
ngx_http_promgate_find_location(ngx_http_promgate_main_conf_t *pmcf,
    void *server, ngx_str_t *uri)
{
    ngx_uint_t                     i;
    ngx_http_promgate_location_t  *loc, *best;

    best = NULL;
    loc = pmcf->locations.elts;

    for (i = 0; i < pmcf->locations.nelts; i++) {
        if (loc[i].server != server || loc[i].name.len > uri->len
            || ngx_strncmp(loc[i].name.data, uri->data, loc[i].name.len) != 0)
        {
            continue;
        }

        if (loc[i].exact) {
            if (loc[i].name.len == uri->len) {
                return &loc[i];
            }

            continue;
        }

        if (best == NULL || loc[i].name.len > best->name.len) {
            best = &loc[i];
        }
    }

    return best;
}


static ngx_int_t
ngx_http_promgate_check_targets(ngx_conf_t *cf,
    ngx_http_promgate_main_conf_t *pmcf)
{
    ngx_uint_t                      i, j;
    ngx_http_promgate_forward_t    *fw;
    ngx_http_promgate_location_t   *loc, *target;
    ngx_http_promgate_loc_conf_t   *plcf;

    loc = pmcf->locations.elts;

    for (i = 0; i < pmcf->locations.nelts; i++) {
        plcf = loc[i].plcf;

        if (ngx_http_promgate_exemplar_check(cf, plcf->exemplar_zone)
            != NGX_OK
            || ngx_http_promgate_exemplar_check(cf, plcf->exemplar_query)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* exemplar peers: as forward targets, a location must take them */

        fw = plcf->exemplar_peers ? plcf->exemplar_peers->elts : NULL;

        for (j = 0; fw && j < plcf->exemplar_peers->nelts; j++) {
            if (ngx_http_promgate_find_location(pmcf, loc[i].server,
                                                &fw[j].target->uri)
                == NULL)
            {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "no location of the server of \"%V\" "
                                   "matches exemplar peer \"%V\"",
                                   &loc[i].name, &fw[j].target->uri);
            }
        }

        if (!plcf->remote_write || plcf->forwards == NULL) {
            continue;
        }

        fw = plcf->forwards->elts;

        for (j = 0; j < plcf->forwards->nelts; j++) {
            target = ngx_http_promgate_find_location(pmcf, loc[i].server,
                                                     &fw[j].target->uri);

            if (target == NULL) {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "no location of the server of \"%V\" "
                                   "matches forward target \"%V\"",
                                   &loc[i].name, &fw[j].target->uri);
                continue;
            }

            /*
             * nginx checks a subrequest's Content-Length against the target
             * location's client_max_body_size (1m by default); the body was
             * checked against the write location's limit already.
             */

            target->clcf->client_max_body_size = 0;

            if (target->read_timeout > loc[i].fcf->retry_timeout) {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "proxy_read_timeout %Mms of location "
                                   "\"%V\" (forward target \"%V\" of "
                                   "\"%V\") exceeds promgate_retry_timeout "
                                   "%Mms: a hanging storage holds writes that "
                                   "long", target->read_timeout,
                                   &target->name, &fw[j].target->uri,
                                   &loc[i].name,
                                   loc[i].fcf->retry_timeout);
            }
        }
    }

    return NGX_OK;
}


/*
 * promgate_heap_retain SIZE | off (default 32m).  nginx reads each request
 * body into one buffer of its size (a 2,000-series write: 250 KB), from
 * malloc.  glibc's dynamic thresholds give the top of the heap back to
 * the kernel whenever more than about two bodies' worth is free, and the
 * next bodies fault it in again, a page at a time: 12 to 60 page faults
 * per request with 8 senders, 4-15% of the worker's CPU
 * (bench/results/latest.md has the figures).  With SIZE, a worker keeps
 * up to SIZE of freed heap (M_TRIM_THRESHOLD) and takes allocations of
 * up to min(SIZE, 4m) from it (M_MMAP_THRESHOLD; larger bodies are mapped
 * and unmapped each, as before).  glibc only; elsewhere the directive is
 * accepted and does nothing.
 */

#define NGX_HTTP_PROMGATE_HEAP_RETAIN  (32 * 1024 * 1024)
#define NGX_HTTP_PROMGATE_HEAP_MMAP    (4 * 1024 * 1024)


static char *
ngx_http_promgate_heap_retain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_promgate_main_conf_t *pmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (pmcf->heap_retain != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        pmcf->heap_retain = 0;
        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < 65536) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid promgate_heap_retain \"%V\": a size "
                           "of at least 64k (\"32m\") or \"off\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    pmcf->heap_retain = size;

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_promgate_main_conf_t *pmcf = conf;

    ngx_conf_init_size_value(pmcf->heap_retain,
                             NGX_HTTP_PROMGATE_HEAP_RETAIN);

    return NGX_CONF_OK;
}


static void
ngx_http_promgate_heap_init(ngx_cycle_t *cycle)
{
#if (defined __GLIBC__)
    size_t                          mmap_max;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_promgate_module);

    if (pmcf == NULL || pmcf->heap_retain == 0) {
        return;
    }

    mmap_max = ngx_min(pmcf->heap_retain, NGX_HTTP_PROMGATE_HEAP_MMAP);

    if (mallopt(M_MMAP_THRESHOLD, (int) mmap_max) != 1
        || mallopt(M_TRIM_THRESHOLD, (int) ngx_min(pmcf->heap_retain,
                                                  NGX_MAX_INT32_VALUE))
           != 1)
    {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "promgate_heap_retain: mallopt() refused the "
                      "thresholds; the worker's heap keeps glibc's");
    }
#endif
}


static ngx_int_t
ngx_http_promgate_init_process(ngx_cycle_t *cycle)
{
    /* a worker respawned after a crash takes over its slot's gauge */
    ngx_http_promgate_stats_inflight(0);

    ngx_http_promgate_heap_init(cycle);

    if (ngx_http_promgate_wal_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_promgate_spool_init_process(cycle);
}


static void
ngx_http_promgate_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_promgate_wal_exit_process(cycle);
    ngx_http_promgate_spool_exit_process(cycle);
}


static void *
ngx_http_promgate_create_main_conf(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    /* never reallocated: locations keep pointers to its elements */

    if (ngx_array_init(&pmcf->targets, cf->pool,
                       NGX_HTTP_PROMGATE_MAX_TARGETS,
                       sizeof(ngx_http_promgate_target_t))
        != NGX_OK
        || ngx_array_init(&pmcf->locations, cf->pool, 16,
                          sizeof(ngx_http_promgate_location_t))
           != NGX_OK
        || ngx_array_init(&pmcf->exemplar_zones, cf->pool, 2,
                          sizeof(ngx_shm_zone_t *))
           != NGX_OK
        || ngx_array_init(&pmcf->series_zones, cf->pool, 2,
                          sizeof(ngx_shm_zone_t *))
           != NGX_OK
        || ngx_array_init(&pmcf->spools, cf->pool, 2,
                          sizeof(ngx_http_promgate_spool_t *))
           != NGX_OK
        || ngx_array_init(&pmcf->printers, cf->pool, 8,
                          sizeof(ngx_http_promgate_status_printer_t))
           != NGX_OK)
    {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pmcf->tenant_header = { 0, NULL };
     */

    /* the proxy module may be left out of a build: look it up by name */

    pmcf->proxy_index = -1;
    pmcf->heap_retain = NGX_CONF_UNSET_SIZE;

    for (i = 0; cf->cycle->modules[i]; i++) {
        if (ngx_strcmp(cf->cycle->modules[i]->name, "ngx_http_proxy_module")
            == 0)
        {
            pmcf->proxy_index = cf->cycle->modules[i]->ctx_index;
            break;
        }
    }

    return pmcf;
}


static void *
ngx_http_promgate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_promgate_loc_conf_t  *plcf;

    plcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_loc_conf_t));
    if (plcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     plcf->forwards = NULL;
     *     plcf->exemplar_peers = NULL;
     */

    plcf->remote_write = NGX_CONF_UNSET;
    plcf->status = NGX_CONF_UNSET;
    plcf->ack = NGX_CONF_UNSET_UINT;
    plcf->invalid_series = NGX_CONF_UNSET_UINT;
    plcf->max_inflight = NGX_CONF_UNSET;
    plcf->max_decoded = NGX_CONF_UNSET_SIZE;
    plcf->max_exemplars = NGX_CONF_UNSET;
    plcf->max_labels = NGX_CONF_UNSET;
    plcf->max_label_bytes = NGX_CONF_UNSET_SIZE;
    plcf->exemplar_zone = NGX_CONF_UNSET_PTR;
    plcf->exemplar_query = NGX_CONF_UNSET_PTR;
    plcf->tenant = NGX_CONF_UNSET_PTR;
    plcf->tenant_drop = NGX_CONF_UNSET;
    plcf->exemplar_peer_policy = NGX_CONF_UNSET_UINT;

    return plcf;
}


static char *
ngx_http_promgate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_promgate_loc_conf_t *prev = parent;
    ngx_http_promgate_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_upstream_conf_t       *ucf;
    ngx_http_promgate_location_t   *loc;
    ngx_http_promgate_main_conf_t  *pmcf;

    ngx_conf_merge_value(conf->remote_write, prev->remote_write, 0);
    ngx_conf_merge_value(conf->status, prev->status, 0);
    ngx_conf_merge_uint_value(conf->ack, prev->ack, PG_ACK_ALL);
    ngx_conf_merge_uint_value(conf->invalid_series, prev->invalid_series,
                              NGX_HTTP_PROMGATE_INVALID_DROP);
    ngx_conf_merge_size_value(conf->max_decoded, prev->max_decoded,
                              64 * 1024 * 1024);

    /*
     * What one write may cost beyond its size (docs/directives.md): far
     * above what Prometheus sends (max_samples_per_send 2000 by default,
     * exemplars included), low enough that a hostile write stays small.
     */
    ngx_conf_merge_value(conf->max_exemplars, prev->max_exemplars, 100000);
    ngx_conf_merge_value(conf->max_labels, prev->max_labels, 512);
    ngx_conf_merge_size_value(conf->max_label_bytes, prev->max_label_bytes,
                              16 * 1024);

    /*
     * By default a worker holds at most ~1 GB of request bodies:
     * 1g / client_max_body_size writes in flight, at least 1.
     */

    if (conf->max_inflight == NGX_CONF_UNSET) {
        if (prev->max_inflight != NGX_CONF_UNSET) {
            conf->max_inflight = prev->max_inflight;

        } else {
            clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

            conf->max_inflight = 1024;

            if (clcf->client_max_body_size > 0) {
                conf->max_inflight = (ngx_int_t) ngx_min(
                    (off_t) 1024 * 1024 * 1024 / clcf->client_max_body_size,
                    4096);
                if (conf->max_inflight < 1) {
                    conf->max_inflight = 1;
                }
            }
        }
    }

    /* a label and its drop go together: both set here, or both inherited */

    if (conf->tenant_label.data == NULL) {
        conf->tenant_drop = prev->tenant_drop;
    }

    ngx_conf_merge_str_value(conf->tenant_label, prev->tenant_label, "");
    ngx_conf_merge_value(conf->tenant_drop, prev->tenant_drop, 0);

    if (conf->forwards == NULL) {
        conf->forwards = prev->forwards;

        if (conf->tenant_label.len == prev->tenant_label.len
            && ngx_strncmp(conf->tenant_label.data, prev->tenant_label.data,
                           conf->tenant_label.len) == 0)
        {
            conf->router = prev->router;
        }
    }

    if (conf->forwards && conf->router == NULL
        && ngx_http_promgate_router_build(cf, conf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_ptr_value(conf->exemplar_zone, prev->exemplar_zone, NULL);
    ngx_conf_merge_ptr_value(conf->tenant, prev->tenant, NULL);

    if (conf->exemplar_query == NGX_CONF_UNSET_PTR) {
        conf->exemplar_query = NULL;    /* a handler: not inherited */
    }

    ngx_conf_merge_uint_value(conf->exemplar_peer_policy,
                              prev->exemplar_peer_policy,
                              NGX_HTTP_PROMGATE_PEER_ANY);

    if (conf->exemplar_peers && conf->exemplar_query == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_exemplar_peer\" needs "
                           "\"promgate_exemplar_query\" in the same "
                           "location");
        return NGX_CONF_ERROR;
    }

    if (conf->remote_write && (conf->forwards == NULL
                               || conf->forwards->nelts == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_remote_write\" needs at least one "
                           "\"promgate_forward\" target in the same "
                           "location");
        return NGX_CONF_ERROR;
    }

    /*
     * Remember every named location, with its proxy read timeout, so that
     * postconfiguration can check forward targets (merge runs per location
     * with cf->ctx pointing at it; the proxy module has merged already).
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    if (clcf->name.len && clcf->name.data[0] == '/' && !clcf->noname
#if (NGX_PCRE)
        && clcf->regex == NULL
#endif
        )
    {
        loc = ngx_array_push(&pmcf->locations);
        if (loc == NULL) {
            return NGX_CONF_ERROR;
        }

        loc->server = ngx_http_conf_get_module_srv_conf(cf,
                                                        ngx_http_core_module);
        loc->name = clcf->name;
        loc->exact = clcf->exact_match;
        loc->plcf = conf;
        loc->fcf = ((ngx_http_conf_ctx_t *) cf->ctx)
                       ->loc_conf[ngx_http_promgate_forward_module.ctx_index];
        loc->clcf = clcf;
        loc->read_timeout = 0;

        if (pmcf->proxy_index >= 0) {
            ucf = ((ngx_http_conf_ctx_t *) cf->ctx)
                      ->loc_conf[pmcf->proxy_index];

            if (ucf && ucf->read_timeout != NGX_CONF_UNSET_MSEC) {
                loc->read_timeout = ucf->read_timeout;
            }
        }
    }

    return NGX_CONF_OK;
}


/*
 * promgate_remote_write and promgate_status: a flag of the location, and
 * its content handler (cmd->post); one location has at most one of them.
 */

static char *
ngx_http_promgate_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_promgate_loc_conf_t *plcf = conf;

    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_promgate_endpoint_t  *ep;

    if (plcf->remote_write == 1 || plcf->status == 1) {
        return "is duplicate";
    }

    *(ngx_flag_t *) ((char *) conf + cmd->offset) = 1;

    ep = cmd->post;
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ep->handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_promgate_forward_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_loc_conf_t *plcf = conf;

    return ngx_http_promgate_target_list_add(cf, &plcf->forwards,
                                             "forward target", "/_rw/prom", 1);
}


/*
 * The one parser of target directives (promgate_forward,
 * promgate_read_forward): the URI of an internal location, once per list,
 * and, where params is set, the protocol the target speaks:
 * "proto=v1" (remote write 1.0, the default), "proto=v2" (2.0) or
 * "proto=asis" (whatever the sender sent), "spool=NAME" (the target's
 * promgate_spool), and its routing rules, match=, drop= and shard=
 * (route.c).
 */

char *
ngx_http_promgate_target_list_add(ngx_conf_t *cf, ngx_array_t **list,
    const char *what, const char *example, ngx_uint_t params)
{
    ngx_int_t                     rc;
    ngx_str_t                    *value, spool;
    ngx_uint_t                    i, proto;
    ngx_http_promgate_target_t   *t;
    ngx_http_promgate_forward_t  *fw, rules;

    value = cf->args->elts;
    ngx_str_null(&spool);
    ngx_memzero(&rules, sizeof(ngx_http_promgate_forward_t));

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s \"%V\": expected the URI of an "
                           "internal location, such as %s", what, &value[1],
                           example);
        return NGX_CONF_ERROR;
    }

    if (value[1].len >= NGX_HTTP_PROMGATE_TARGET_NAME) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s \"%V\" is longer than %d bytes", what,
                           &value[1], NGX_HTTP_PROMGATE_TARGET_NAME - 1);
        return NGX_CONF_ERROR;
    }

    proto = params ? NGX_HTTP_PROMGATE_PROTO_V1
                   : NGX_HTTP_PROMGATE_PROTO_ASIS;

    for (i = 2; i < cf->args->nelts; i++) {

        if (params && value[i].len > 6
            && ngx_strncmp(value[i].data, "spool=", 6) == 0)
        {
            spool.data = value[i].data + 6;
            spool.len = value[i].len - 6;
            continue;
        }

        if (params && value[i].len > 6
            && ngx_strncmp(value[i].data, "proto=", 6) == 0)
        {
            if (value[i].len == 8
                && ngx_strncmp(value[i].data + 6, "v1", 2) == 0)
            {
                proto = NGX_HTTP_PROMGATE_PROTO_V1;
                continue;
            }

            if (value[i].len == 8
                && ngx_strncmp(value[i].data + 6, "v2", 2) == 0)
            {
                proto = NGX_HTTP_PROMGATE_PROTO_V2;
                continue;
            }

            if (value[i].len == 10
                && ngx_strncmp(value[i].data + 6, "asis", 4) == 0)
            {
                proto = NGX_HTTP_PROMGATE_PROTO_ASIS;
                continue;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\" of %s \"%V\": expected "
                               "proto=v1, proto=v2 or proto=asis", &value[i],
                               what, &value[1]);
            return NGX_CONF_ERROR;
        }

        if (params) {
            rc = ngx_http_promgate_route_param(cf, &rules, &value[i], what,
                                               &value[1]);

            if (rc == NGX_OK) {
                continue;
            }

            if (rc == NGX_ERROR) {
                return NGX_CONF_ERROR;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" of %s \"%V\"",
                           &value[i], what, &value[1]);
        return NGX_CONF_ERROR;
    }

    if (*list == NULL) {
        *list = ngx_array_create(cf->pool, 4,
                                 sizeof(ngx_http_promgate_forward_t));
        if (*list == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    fw = (*list)->elts;

    for (i = 0; i < (*list)->nelts; i++) {
        if (fw[i].target->uri.len == value[1].len
            && ngx_strncmp(fw[i].target->uri.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s \"%V\" is duplicate", what, &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    t = ngx_http_promgate_target_add(cf, &value[1]);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    fw = ngx_array_push(*list);
    if (fw == NULL) {
        return NGX_CONF_ERROR;
    }

    *fw = rules;
    fw->target = t;
    fw->proto = proto;
    fw->spool = NULL;
    fw->spool_ops = NULL;
    fw->group = -1;

    if (spool.len) {
        return ngx_http_promgate_spool_ref(cf, &spool, t, fw);
    }

    return NGX_CONF_OK;
}


/*
 * Targets are shared by name across locations (and with remote read): their
 * counters live in the status zone.
 */

ngx_http_promgate_target_t *
ngx_http_promgate_target_add(ngx_conf_t *cf, ngx_str_t *uri)
{
    ngx_uint_t                      i;
    ngx_http_promgate_target_t     *t;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    t = pmcf->targets.elts;

    for (i = 0; i < pmcf->targets.nelts; i++) {
        if (t[i].uri.len == uri->len
            && ngx_strncmp(t[i].uri.data, uri->data, uri->len) == 0)
        {
            return &t[i];
        }
    }

    if (pmcf->targets.nelts == NGX_HTTP_PROMGATE_MAX_TARGETS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many forward targets (at most %d)",
                           NGX_HTTP_PROMGATE_MAX_TARGETS);
        return NULL;
    }

    t = ngx_array_push(&pmcf->targets);
    if (t == NULL) {
        return NULL;
    }

    t->uri = *uri;
    t->slot = 0;

    return t;
}


static char *
ngx_http_promgate_exemplar_query(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_loc_conf_t *plcf = conf;

    char                      *rv;
    ngx_int_t                  n;
    ngx_str_t                 *value, s;
    ngx_uint_t                 i, *p;
    ngx_http_core_loc_conf_t  *clcf;

    if (plcf->remote_write == 1 || plcf->status == 1) {
        return "cannot share a location with promgate_remote_write or "
               "promgate_status";
    }

    rv = ngx_http_promgate_exemplar_ref(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* the limits of one query (Prometheus has none: hostile clients) */

    plcf->query_max_selectors = 1000;
    plcf->query_max_series = 20000;
    plcf->query_max_exemplars = 100000;
    plcf->query_timeout = 120000;

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            plcf->query_timeout = ngx_parse_time(&s, 0);
            if (plcf->query_timeout == (ngx_msec_t) NGX_ERROR
                || plcf->query_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_selectors=", 14) == 0) {
            n = ngx_atoi(value[i].data + 14, value[i].len - 14);
            p = &plcf->query_max_selectors;

        } else if (ngx_strncmp(value[i].data, "max_series=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);
            p = &plcf->query_max_series;

        } else if (ngx_strncmp(value[i].data, "max_exemplars=", 14) == 0) {
            n = ngx_atoi(value[i].data + 14, value[i].len - 14);
            p = &plcf->query_max_exemplars;

        } else {
            goto invalid;
        }

        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        *p = (ngx_uint_t) n;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_promgate_exemplar_query_handler;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\": expected max_selectors=N, "
                       "max_series=N, max_exemplars=N (N above 0) or "
                       "timeout=TIME", &value[i]);
    return NGX_CONF_ERROR;
}
