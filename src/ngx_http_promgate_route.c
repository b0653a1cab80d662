
/*
 * promgate: per-target series routing, the configuration side (the
 * routing itself is src/core/pg_route.c; the write path applies it).
 *
 *   promgate_shard NAME [replicas=N] [by=LABEL[,LABEL...]];      (http)
 *   promgate_forward URI ... ['match=SELECTOR'] ['drop=SELECTOR']
 *                            [shard=NAME];
 *
 *   promgate_tenant_label NAME [drop];             (http, server, location)
 *
 * Selectors are parsed once, here, with the exemplar query's PromQL parser
 * and matchers; one that does not parse fails `nginx -t` with Prometheus'
 * message.  A location's targets make its router: one route per distinct
 * set of rules (targets with the same match=, drop= and no shard share
 * one, and so one body), one shard group per shard name its targets use,
 * and the tenant label, if any.
 */


#include "ngx_http_promgate_module.h"
#include "pg_promql.h"


/* a promgate_shard */
typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      replicas;
    pg_str_t                       *by;       /* sorted, unique */
    size_t                          nby;
} ngx_http_promgate_shard_t;


static ngx_int_t ngx_http_promgate_selector(ngx_conf_t *cf, ngx_str_t *text,
    void **sel, const char *param, const char *what, ngx_str_t *uri);
static int ngx_libc_cdecl ngx_http_promgate_str_cmp(const void *a,
    const void *b);


/* promgate_shard NAME [replicas=N] [by=LABEL[,LABEL...]] */

char *
ngx_http_promgate_shard_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_main_conf_t *pmcf = conf;

    u_char                     *p, *last, *start;
    size_t                      k;
    ngx_str_t                  *value;
    ngx_int_t                   n;
    ngx_uint_t                  i;
    ngx_http_promgate_shard_t  *sh;

    value = cf->args->elts;

    if (pmcf->shards == NULL) {
        pmcf->shards = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_promgate_shard_t));
        if (pmcf->shards == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    sh = pmcf->shards->elts;

    for (i = 0; i < pmcf->shards->nelts; i++) {
        if (sh[i].name.len == value[1].len
            && ngx_strncmp(sh[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_shard \"%V\" is duplicate",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    sh = ngx_array_push(pmcf->shards);
    if (sh == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(sh, sizeof(ngx_http_promgate_shard_t));
    sh->name = value[1];
    sh->replicas = 1;

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len > 9
            && ngx_strncmp(value[i].data, "replicas=", 9) == 0)
        {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);

            if (n < 1 || n > PG_ROUTE_MAX_MEMBERS) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\" of promgate_shard \"%V\": "
                                   "expected a number of targets from 1 "
                                   "to %d", &value[i], &value[1],
                                   PG_ROUTE_MAX_MEMBERS);
                return NGX_CONF_ERROR;
            }

            sh->replicas = n;
            continue;
        }

        if (value[i].len > 3 && ngx_strncmp(value[i].data, "by=", 3) == 0) {
            p = value[i].data + 3;
            last = value[i].data + value[i].len;

            sh->by = ngx_pcalloc(cf->pool, (last - p + 1) * sizeof(pg_str_t));
            if (sh->by == NULL) {
                return NGX_CONF_ERROR;
            }

            sh->nby = 0;

            while (p <= last) {
                start = p;

                while (p < last && *p != ',') {
                    p++;
                }

                if (p == start) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid \"%V\" of promgate_shard "
                                       "\"%V\": an empty label name; "
                                       "expected by=LABEL[,LABEL...]",
                                       &value[i], &value[1]);
                    return NGX_CONF_ERROR;
                }

                sh->by[sh->nby].data = start;
                sh->by[sh->nby].len = p - start;
                sh->nby++;
                p++;
            }

            ngx_qsort(sh->by, sh->nby, sizeof(pg_str_t),
                      ngx_http_promgate_str_cmp);

            for (k = 1; k < sh->nby; k++) {
                if (pg_str_eq(sh->by[k - 1], sh->by[k])) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid \"%V\" of promgate_shard "
                                       "\"%V\": label \"%*s\" is duplicate",
                                       &value[i], &value[1], sh->by[k].len,
                                       sh->by[k].data);
                    return NGX_CONF_ERROR;
                }
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" of promgate_shard "
                           "\"%V\": expected replicas=N or "
                           "by=LABEL[,LABEL...]", &value[i], &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static int ngx_libc_cdecl
ngx_http_promgate_str_cmp(const void *a, const void *b)
{
    return pg_str_cmp(*(const pg_str_t *) a, *(const pg_str_t *) b);
}


/*
 * promgate_tenant_label NAME [drop]: with drop, the label is left out of
 * the series that are forwarded (pg_rw_encode_opts()'s skip_label) and of
 * the exemplar zone's series.  "" is no tenant label (it turns off one
 * set on an outer level).
 */

char *
ngx_http_promgate_tenant_label_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_loc_conf_t *plcf = conf;

    ngx_str_t  *value;

    if (plcf->tenant_label.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    plcf->tenant_label = value[1];
    plcf->tenant_drop = 0;

    if (cf->args->nelts < 3) {
        return NGX_CONF_OK;
    }

    if (value[2].len != 4 || ngx_strncmp(value[2].data, "drop", 4) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" of "
                           "\"promgate_tenant_label %V\": the only one is "
                           "\"drop\"", &value[2], &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 0
        || (value[1].len == 8
            && ngx_strncmp(value[1].data, "__name__", 8) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"promgate_tenant_label %V drop\": %s",
                           &value[1],
                           value[1].len ? "dropping __name__ would leave "
                                          "every series without its name"
                                        : "no label to drop");
        return NGX_CONF_ERROR;
    }

    plcf->tenant_drop = 1;

    return NGX_CONF_OK;
}


/*
 * A routing parameter of promgate_forward: match=, drop=, shard=.
 * NGX_DECLINED when value is none of them.
 */

ngx_int_t
ngx_http_promgate_route_param(ngx_conf_t *cf, ngx_http_promgate_forward_t *fw,
    ngx_str_t *value, const char *what, ngx_str_t *uri)
{
    ngx_str_t  text;

    if (value->len >= 6 && ngx_strncmp(value->data, "match=", 6) == 0) {
        if (fw->match.len) {
            goto duplicate;
        }

        text.data = value->data + 6;
        text.len = value->len - 6;
        fw->match = text;

        return ngx_http_promgate_selector(cf, &text, &fw->match_sel, "match",
                                          what, uri);
    }

    if (value->len >= 5 && ngx_strncmp(value->data, "drop=", 5) == 0) {
        if (fw->drop.len) {
            goto duplicate;
        }

        text.data = value->data + 5;
        text.len = value->len - 5;
        fw->drop = text;

        return ngx_http_promgate_selector(cf, &text, &fw->drop_sel, "drop",
                                          what, uri);
    }

    if (value->len > 6 && ngx_strncmp(value->data, "shard=", 6) == 0) {
        if (fw->shard.len) {
            goto duplicate;
        }

        fw->shard.data = value->data + 6;
        fw->shard.len = value->len - 6;

        return NGX_OK;
    }

    return NGX_DECLINED;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" of %s \"%V\" is duplicate", value, what, uri);

    return NGX_ERROR;
}


/*
 * A series selector, as `promgate_forward ... 'match={job="api"}'` writes
 * it: a metric name, a {...} of matchers, or both; parsed with the
 * exemplar query's PromQL parser, refused with Prometheus' message.
 */

static ngx_int_t
ngx_http_promgate_selector(ngx_conf_t *cf, ngx_str_t *text, void **sel,
    const char *param, const char *what, ngx_str_t *uri)
{
    u_char             *p, *q, *last;
    ngx_uint_t          name;
    pg_allocator_t      alloc;
    pg_promql_rc_e      rc;
    pg_selector_set_t   set;
    pg_promql_error_t   err;
    char                msg[1100];

    p = text->data;
    last = p + text->len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (p == last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty %s= selector of %s \"%V\": expected a "
                           "series selector such as "
                           "'%s={__name__=~\"go_.*\",job!=\"test\"}'",
                           param, what, uri, param);
        return NGX_ERROR;
    }

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = cf->pool;

    rc = pg_promql_selectors(text->data, text->len, &alloc, &set, &err);

    if (rc == PG_PROMQL_NOMEM) {
        return NGX_ERROR;
    }

    if (rc != PG_PROMQL_OK) {
        (void) pg_promql_error_format(text->data, text->len, &err, msg,
                                      sizeof(msg));

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s= selector \"%V\" of %s \"%V\": %s",
                           param, text, what, uri, msg);
        return NGX_ERROR;
    }

    /*
     * One plain selector, not an expression that holds one: it starts
     * with a metric name or "{", and ends with "}" or is a metric name
     * alone (no range, offset, @, function or operator)
     */

    name = 1;

    for (q = p; q < last; q++) {
        if (!(*q == '_' || *q == ':' || (*q >= 'a' && *q <= 'z')
              || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9')))
        {
            name = 0;
            break;
        }
    }

    if (set.nselectors != 1
        || !(*p == '{' || *p == '_' || *p == ':'
             || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
        || !(last[-1] == '}' || name))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s= selector \"%V\" of %s \"%V\": "
                           "expected one series selector, such as "
                           "'%s={__name__=~\"go_.*\",job!=\"test\"}', not "
                           "an expression", param, text, what, uri, param);
        return NGX_ERROR;
    }

    *sel = &set.selectors[0];

    return NGX_OK;
}


/*
 * The router of a location whose targets have rules or that has a tenant
 * label (NULL otherwise: every target gets every series, at no cost per
 * series): a route per distinct rule set, a shard group per shard name.
 */

ngx_int_t
ngx_http_promgate_router_build(ngx_conf_t *cf,
    ngx_http_promgate_loc_conf_t *plcf)
{
    size_t                          nr;
    uint64_t                       *seeds;
    ngx_uint_t                      i, j, g, ngroups, rules;
    pg_router_t                    *rt;
    pg_route_t                     *routes, *ro;
    pg_route_group_t               *groups;
    ngx_http_promgate_shard_t      *sh, *gsh[PG_ROUTE_MAX];
    ngx_http_promgate_forward_t    *fe;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    fe = plcf->forwards->elts;
    rules = 0;

    for (i = 0; i < plcf->forwards->nelts; i++) {
        fe[i].route = 0;
        fe[i].group = -1;

        if (fe[i].match.len || fe[i].drop.len || fe[i].shard.len) {
            rules = 1;
        }
    }

    if (!rules && plcf->tenant_label.len == 0) {
        return NGX_OK;
    }

    if (plcf->forwards->nelts > PG_ROUTE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "at most %d \"promgate_forward\" targets with "
                           "match=, drop= or shard= in one location",
                           PG_ROUTE_MAX);
        return NGX_ERROR;
    }

    rt = ngx_pcalloc(cf->pool, sizeof(pg_router_t));
    routes = ngx_pcalloc(cf->pool, PG_ROUTE_MAX * sizeof(pg_route_t));
    groups = ngx_pcalloc(cf->pool, PG_ROUTE_MAX * sizeof(pg_route_group_t));

    if (rt == NULL || routes == NULL || groups == NULL) {
        return NGX_ERROR;
    }

    ngroups = 0;
    nr = 0;

    for (i = 0; i < plcf->forwards->nelts; i++) {

        /* the same selector text is the same selector: matched once */

        for (j = 0; j < i; j++) {
            if (fe[i].match.len && fe[j].match_sel
                && fe[j].match.len == fe[i].match.len
                && ngx_strncmp(fe[j].match.data, fe[i].match.data,
                               fe[i].match.len) == 0)
            {
                fe[i].match_sel = fe[j].match_sel;
            }

            if (fe[i].drop.len && fe[j].drop_sel
                && fe[j].drop.len == fe[i].drop.len
                && ngx_strncmp(fe[j].drop.data, fe[i].drop.data,
                               fe[i].drop.len) == 0)
            {
                fe[i].drop_sel = fe[j].drop_sel;
            }
        }

        if (fe[i].shard.len) {

            for (g = 0; g < ngroups; g++) {
                if (gsh[g]->name.len == fe[i].shard.len
                    && ngx_strncmp(gsh[g]->name.data, fe[i].shard.data,
                                   fe[i].shard.len) == 0)
                {
                    break;
                }
            }

            if (g == ngroups) {
                sh = pmcf->shards ? pmcf->shards->elts : NULL;

                for (j = 0; pmcf->shards && j < pmcf->shards->nelts; j++) {
                    if (sh[j].name.len == fe[i].shard.len
                        && ngx_strncmp(sh[j].name.data, fe[i].shard.data,
                                       fe[i].shard.len) == 0)
                    {
                        break;
                    }
                }

                if (pmcf->shards == NULL || j == pmcf->shards->nelts) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "forward target \"%V\" names shard "
                                       "\"%V\", which no \"promgate_shard\" "
                                       "in the http block defines",
                                       &fe[i].target->uri, &fe[i].shard);
                    return NGX_ERROR;
                }

                gsh[ngroups++] = &sh[j];
            }

            fe[i].group = g;
            fe[i].route = nr;

            ro = &routes[nr++];
            ro->match = fe[i].match_sel;
            ro->drop = fe[i].drop_sel;
            ro->group = (int) g;
            ro->member = groups[g].nmembers++;

            continue;
        }

        /* targets with the same rules share a route, and its body */

        for (j = 0; j < nr; j++) {
            if (routes[j].group < 0 && routes[j].match == fe[i].match_sel
                && routes[j].drop == fe[i].drop_sel)
            {
                break;
            }
        }

        if (j == nr) {
            ro = &routes[nr++];
            ro->match = fe[i].match_sel;
            ro->drop = fe[i].drop_sel;
            ro->group = -1;
        }

        fe[i].route = j;
    }

    for (g = 0; g < ngroups; g++) {
        if (gsh[g]->replicas > groups[g].nmembers) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_shard \"%V\" has replicas=%ui, but "
                               "only %ui forward target%s of this location "
                               "name%s it", &gsh[g]->name,
                               gsh[g]->replicas, groups[g].nmembers,
                               groups[g].nmembers == 1 ? "" : "s",
                               groups[g].nmembers == 1 ? "s" : "");
            return NGX_ERROR;
        }

        seeds = ngx_pcalloc(cf->pool, groups[g].nmembers * sizeof(uint64_t));
        if (seeds == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < plcf->forwards->nelts; i++) {
            if (fe[i].group == (ngx_int_t) g) {
                seeds[routes[fe[i].route].member] =
                    pg_route_seed(fe[i].target->uri.data,
                                  fe[i].target->uri.len);
            }
        }

        groups[g].replicas = gsh[g]->replicas;
        groups[g].seeds = seeds;
        groups[g].by = gsh[g]->by;
        groups[g].nby = gsh[g]->nby;
    }

    rt->routes = routes;
    rt->nroutes = nr;
    rt->groups = groups;
    rt->ngroups = ngroups;
    rt->tenant_label.data = plcf->tenant_label.data;
    rt->tenant_label.len = plcf->tenant_label.len;

    plcf->router = rt;

    return NGX_OK;
}
