
/*
 * promgate: the Kafka module's configuration.
 *
 * ngx_http_promgate_kafka_module is a second nginx module in promgate's
 * .so, with its own directives and main configuration; its workers' side
 * is in ngx_http_promgate_kafka_worker.c.
 *
 * Messages reach the storages through the target location, the one with
 * promgate_remote_write, exactly as an HTTP write does: they are POSTed as
 * remote-write requests to a unix-domain listener of the target's server.
 * Why a socket and not a subrequest: a subrequest needs a parent request
 * and its connection; a timer-driven fake request has neither a real
 * client connection nor a body reader, and the target's handler, body
 * reading, validation, fan-out, retries, ack policy, limits and logging all
 * assume a real request (lua-nginx-module refuses subrequests from timer
 * requests for these reasons).  Over the socket the consumer is an
 * ordinary client: one implementation of the ingest path, with its status
 * codes as the contract.  At postconfiguration the module finds the server
 * holding the target (through promgate's location registry) and uses its
 * unix listener, or adds one itself (socket=PATH), so the operator cannot
 * point the consumer at the wrong place.
 */


#include "ngx_http_promgate_kafka.h"
#include "ngx_http_promgate_module.h"


#define NGX_HTTP_PROMGATE_KAFKA_MAX_BATCH    (8 * 1024 * 1024)


typedef struct {
    ngx_str_t                       name;
    ngx_str_t                       value;
} ngx_http_promgate_kafka_property_t;


static void *ngx_http_promgate_kafka_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_promgate_kafka_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_promgate_kafka_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_promgate_kafka_socket_access(ngx_http_request_t *r);
static char *ngx_http_promgate_kafka_property(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_promgate_kafka_consumer(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_promgate_kafka_commands[] = {

    { ngx_string("promgate_kafka_brokers"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_promgate_kafka_main_conf_t, brokers),
      NULL },

    { ngx_string("promgate_kafka_property"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_promgate_kafka_property,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("promgate_kafka_consumer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_promgate_kafka_consumer,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_promgate_kafka_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_promgate_kafka_init,          /* postconfiguration */

    ngx_http_promgate_kafka_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_promgate_kafka_module = {
    NGX_MODULE_V1,
    &ngx_http_promgate_kafka_module_ctx,   /* module context */
    ngx_http_promgate_kafka_commands,      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_promgate_kafka_init_module,   /* init module */
    ngx_http_promgate_kafka_init_process,  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_promgate_kafka_exit_process,  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * Properties promgate owns: the watermark needs its own offset store and
 * the auto commit of what it stored; logs must come through the queue.
 */
static const char  *ngx_http_promgate_kafka_reserved[] = {
    "enable.auto.offset.store", "enable.auto.commit", "log.queue",
    "group.id", "bootstrap.servers", "metadata.broker.list",
    "enable.partition.eof", NULL
};


/*
 * What promgate sets, in name and value pairs: its defaults, before the
 * user's promgate_kafka_property (which may change them), and what it
 * owns, after them (reserved above).  The brokers, the group and the
 * assignment strategy are set at postconfiguration.
 */

static const char  *ngx_http_promgate_kafka_producer_defaults[] = {
    "client.id", "promgate",
    "queue.buffering.max.messages", "10000",    /* bounded queue */
    "queue.buffering.max.kbytes", "16384",
    "message.timeout.ms", "30000",              /* bounded delivery time */
    NULL
};

static const char  *ngx_http_promgate_kafka_producer_own[] = {
    "log.queue", "true",
    NULL
};

static const char  *ngx_http_promgate_kafka_consumer_defaults[] = {
    "client.id", "promgate",
    "queued.max.messages.kbytes", "8192",
    "auto.offset.reset", "earliest",
    NULL
};

static const char  *ngx_http_promgate_kafka_consumer_own[] = {
    "enable.auto.commit", "true",
    "enable.auto.offset.store", "false",
    "enable.partition.eof", "false",
    "log.queue", "true",
    NULL
};


/* ------------------------------------------------------ configuration */


static void *
ngx_http_promgate_kafka_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_promgate_kafka_main_conf_t  *kmcf;

    kmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_kafka_main_conf_t));
    if (kmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&kmcf->properties, cf->pool, 4,
                       sizeof(ngx_http_promgate_kafka_property_t))
        != NGX_OK
        || ngx_array_init(&kmcf->consumers, cf->pool, 2,
                          sizeof(ngx_http_promgate_kafka_consumer_conf_t))
           != NGX_OK
        || ngx_array_init(&kmcf->keys, cf->pool, 2,
                          sizeof(ngx_http_promgate_kafka_stats_key_t *))
           != NGX_OK
        || ngx_array_init(&kmcf->endpoints, cf->pool, 2,
                          sizeof(ngx_http_promgate_client_endpoint_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return kmcf;
}


static char *
ngx_http_promgate_kafka_property(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = conf;

    char                                 err[512];
    ngx_str_t                           *value;
    ngx_uint_t                           i;
    rd_kafka_conf_t                     *rc;
    rd_kafka_conf_res_t                  res;
    ngx_http_promgate_kafka_property_t  *prop;

    value = cf->args->elts;

    for (i = 0; ngx_http_promgate_kafka_reserved[i]; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_promgate_kafka_reserved[i])
            == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_kafka_property \"%V\" is set by "
                               "promgate itself (brokers: "
                               "promgate_kafka_brokers; group: the group= "
                               "parameter; offsets are stored by promgate "
                               "and committed automatically)", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    /* librdkafka says what it thinks of the property, right now */

    rc = rd_kafka_conf_new();
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    res = rd_kafka_conf_set(rc, (char *) value[1].data,
                            (char *) value[2].data, err, sizeof(err));
    rd_kafka_conf_destroy(rc);

    if (res != RD_KAFKA_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid promgate_kafka_property \"%V\" \"%V\": "
                           "%s", &value[1], &value[2], err);
        return NGX_CONF_ERROR;
    }

    if (ngx_strcmp(value[1].data, "partition.assignment.strategy") == 0
        && ngx_strstr(value[2].data, "cooperative-sticky")
        && rd_kafka_version() < 0x020300ff)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "cooperative-sticky with librdkafka %s: a worker "
                           "that exits before its first assignment aborts "
                           "(librdkafka #4312, fixed in 2.3.0)",
                           rd_kafka_version_str());
    }

    prop = ngx_array_push(&kmcf->properties);
    if (prop == NULL) {
        return NGX_CONF_ERROR;
    }

    prop->name = value[1];
    prop->value = value[2];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_topic_name(ngx_str_t *name)
{
    ngx_uint_t  i;
    u_char      ch;

    if (name->len == 0 || name->len > 249) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_'
              || ch == '-'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_kafka_cstr(ngx_conf_t *cf, ngx_str_t *dst, u_char *src,
    size_t len)
{
    dst->data = ngx_pnalloc(cf->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->data[len] = '\0';
    dst->len = len;

    return NGX_OK;
}


static char *
ngx_http_promgate_kafka_consumer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = conf;

    u_char                                   *p, *last, *start;
    ngx_int_t                                 n, format;
    ngx_str_t                                *value, v, *t, name, *dst;
    ngx_uint_t                                i, j;
    ngx_http_promgate_kafka_consumer_conf_t  *cc, *other;

    if (kmcf->consumers.nelts == NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many promgate_kafka_consumer directives "
                           "(at most %d)",
                           NGX_HTTP_PROMGATE_KAFKA_MAX_CONSUMERS);
        return NGX_CONF_ERROR;
    }

    cc = ngx_array_push(&kmcf->consumers);
    if (cc == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(cc, sizeof(ngx_http_promgate_kafka_consumer_conf_t));

    if (ngx_array_init(&cc->topics, cf->pool, 2, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cc->format = PG_KAFKA_FORMAT_AUTO;
    cc->max_in_flight = 1000;
    cc->batch = 100;
    cc->timeout = NGX_CONF_UNSET_MSEC;
    cc->file = cf->conf_file->file.name.data;
    cc->line = cf->conf_file->line;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        p = (u_char *) ngx_strchr(value[i].data, '=');
        if (p == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = p - value[i].data;
        v.data = p + 1;
        v.len = value[i].data + value[i].len - v.data;

        /* a string parameter is checked, then copied NUL-terminated */
        dst = NULL;

#define ngx_http_promgate_kafka_is(s)                                         \
    (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

        if (ngx_http_promgate_kafka_is("topic")) {
            if (cc->topics.nelts) {
                goto duplicate;
            }

            last = v.data + v.len;

            for (start = v.data; start <= last; start = p + 1) {
                p = ngx_strlchr(start, last, ',');
                if (p == NULL) {
                    p = last;
                }

                t = ngx_array_push(&cc->topics);
                if (t == NULL) {
                    return NGX_CONF_ERROR;
                }

                if (ngx_http_promgate_kafka_cstr(cf, t, start, p - start)
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

                if (ngx_http_promgate_kafka_topic_name(t) != NGX_OK) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid topic \"%V\" in \"%V\": a "
                                       "topic is 1 to 249 of "
                                       "[a-zA-Z0-9._-]", t, &value[i]);
                    return NGX_CONF_ERROR;
                }
            }

            cc->key.topics = v;

        } else if (ngx_http_promgate_kafka_is("group")) {
            if (cc->group.len) {
                goto duplicate;
            }

            if (v.len == 0 || v.len >= NGX_HTTP_PROMGATE_KAFKA_NAME) {
                goto invalid;
            }

            dst = &cc->group;

        } else if (ngx_http_promgate_kafka_is("format")) {
            format = pg_kafka_format_parse(v.data, v.len);
            if (format < 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid format \"%V\": expected auto, "
                                   "prompb, prompb-snappy, prompb-v2 or "
                                   "json", &v);
                return NGX_CONF_ERROR;
            }

            cc->format = format;

        } else if (ngx_http_promgate_kafka_is("target")) {
            if (v.len == 0 || v.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid target \"%V\": expected the URI "
                                   "of a location with "
                                   "promgate_remote_write, such as "
                                   "/api/v1/write", &v);
                return NGX_CONF_ERROR;
            }

            cc->target = v;

        } else if (ngx_http_promgate_kafka_is("max_in_flight")
                   || ngx_http_promgate_kafka_is("batch"))
        {
            n = ngx_atoi(v.data, v.len);

            if (n < 1 || n > 1000000
                || (ngx_http_promgate_kafka_is("batch") && n > 100000))
            {
                goto invalid;
            }

            if (ngx_http_promgate_kafka_is("batch")) {
                cc->batch = n;
            } else {
                cc->max_in_flight = n;
            }

        } else if (ngx_http_promgate_kafka_is("dlq")) {
            if (ngx_http_promgate_kafka_topic_name(&v) != NGX_OK) {
                goto invalid;
            }

            dst = &cc->dlq;

        } else if (ngx_http_promgate_kafka_is("socket")) {
            if (v.len > 5 && ngx_strncmp(v.data, "unix:", 5) == 0) {
                v.data += 5;
                v.len -= 5;
            }

            if (v.len == 0 || v.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid socket \"%V\": expected the "
                                   "absolute path of a unix socket", &v);
                return NGX_CONF_ERROR;
            }

            dst = &cc->socket;

        } else if (ngx_http_promgate_kafka_is("tenant_header")) {
            for (j = 0; j < v.len; j++) {
                if (!((v.data[j] >= 'a' && v.data[j] <= 'z')
                      || (v.data[j] >= 'A' && v.data[j] <= 'Z')
                      || (v.data[j] >= '0' && v.data[j] <= '9')
                      || v.data[j] == '-' || v.data[j] == '_'))
                {
                    break;
                }
            }

            if (v.len == 0 || j < v.len) {
                goto invalid;
            }

            dst = &cc->tenant_header;

        } else if (ngx_http_promgate_kafka_is("timeout")) {
            cc->timeout = ngx_parse_time(&v, 0);

            if (cc->timeout == (ngx_msec_t) NGX_ERROR || cc->timeout == 0) {
                goto invalid;
            }

        } else {
            goto invalid;
        }

#undef ngx_http_promgate_kafka_is

        if (dst
            && ngx_http_promgate_kafka_cstr(cf, dst, v.data, v.len) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (cc->topics.nelts == 0 || cc->group.len == 0 || cc->target.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "promgate_kafka_consumer needs topic=, group= "
                           "and target=");
        return NGX_CONF_ERROR;
    }

    if (cc->key.topics.len >= NGX_HTTP_PROMGATE_KAFKA_NAME) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the topic list \"%V\" is longer than %d bytes",
                           &cc->key.topics, NGX_HTTP_PROMGATE_KAFKA_NAME - 1);
        return NGX_CONF_ERROR;
    }

    if (cc->batch > cc->max_in_flight) {
        cc->batch = cc->max_in_flight;
    }

    cc->key.group = cc->group;

    other = kmcf->consumers.elts;

    for (i = 0; i + 1 < kmcf->consumers.nelts; i++) {
        if (other[i].group.len == cc->group.len
            && ngx_strcmp(other[i].group.data, cc->group.data) == 0
            && other[i].key.topics.len == cc->key.topics.len
            && ngx_strncmp(other[i].key.topics.data, cc->key.topics.data,
                           cc->key.topics.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "promgate_kafka_consumer for group \"%V\" "
                               "and topics \"%V\" is duplicate",
                               &cc->group, &cc->key.topics);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is duplicate",
                       &value[i]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);

    return NGX_CONF_ERROR;
}


/* ---------------------------------------------- postconfiguration */


/*
 * In each server, the location nginx picks for the URI among exact and
 * prefix locations (promgate's location registry; regex ones are not
 * considered): the consumer's requests arrive on the target server's own
 * listener, so the target must be a write location in one server only.
 */

static ngx_http_promgate_location_t *
ngx_http_promgate_kafka_find_target(ngx_conf_t *cf,
    ngx_http_promgate_kafka_consumer_conf_t *cc)
{
    ngx_str_t                      *uri;
    ngx_uint_t                      i, j, matches;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_http_promgate_location_t   *loc, *best, *found;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    uri = &cc->target;
    loc = pmcf->locations.elts;
    found = NULL;
    matches = 0;

    for (i = 0; i < pmcf->locations.nelts; i++) {

        /* each server once */

        for (j = 0; j < i; j++) {
            if (loc[j].server == loc[i].server) {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        best = ngx_http_promgate_find_location(pmcf, loc[i].server, uri);
        if (best == NULL) {
            continue;
        }

        plcf = best->plcf;

        if (plcf->remote_write != 1) {
            continue;
        }

        matches++;

        if (found == NULL) {
            found = best;
        }
    }

    if (matches == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" matches no "
                      "location with \"promgate_remote_write\" in %s:%ui",
                      uri, cc->file, cc->line);
        return NULL;
    }

    if (matches > 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" matches "
                      "\"promgate_remote_write\" locations in %ui servers: "
                      "keep one in %s:%ui", uri, matches, cc->file,
                      cc->line);
        return NULL;
    }

    if (found->clcf->internal) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\" is an internal "
                      "location: the consumer posts to it as a client does, "
                      "in %s:%ui", uri, cc->file, cc->line);
        return NULL;
    }

    return found;
}


static ngx_int_t
ngx_http_promgate_kafka_has_server(ngx_http_conf_addr_t *addr,
    ngx_http_core_srv_conf_t *cscf)
{
    ngx_uint_t                  i;
    ngx_http_core_srv_conf_t  **s;

    s = addr->servers.elts;

    for (i = 0; i < addr->servers.nelts; i++) {
        if (s[i] == cscf) {
            return 1;
        }
    }

    return 0;
}


static ngx_http_promgate_client_endpoint_t *
ngx_http_promgate_kafka_endpoint(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf,
    ngx_http_promgate_kafka_consumer_conf_t *cc,
    ngx_http_core_srv_conf_t *cscf)
{
    ngx_url_t                             u;
    ngx_uint_t                            i, j;
    struct sockaddr                      *sa;
    socklen_t                             socklen;
    ngx_http_conf_port_t                 *port;
    ngx_http_conf_addr_t                 *addr, *found;
    ngx_http_core_main_conf_t            *cmcf;
    ngx_uint_t                            own;
    ngx_http_promgate_client_endpoint_t   *ep, **epp;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    own = 0;
    found = NULL;
    sa = NULL;
    socklen = 0;

    if (cc->socket.len) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.len = sizeof("unix:") - 1 + cc->socket.len;
        u.url.data = ngx_pnalloc(cf->pool, u.url.len + 1);
        if (u.url.data == NULL) {
            return NULL;
        }

        ngx_sprintf(u.url.data, "unix:%V%Z", &cc->socket);
        u.listen = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs != 1) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer socket \"%V\": %s in "
                          "%s:%ui", &cc->socket,
                          u.err ? u.err : "invalid path", cc->file, cc->line);
            return NULL;
        }

        sa = u.addrs[0].sockaddr;
        socklen = u.addrs[0].socklen;
    }

    port = cmcf->ports ? cmcf->ports->elts : NULL;

    for (i = 0; port && i < cmcf->ports->nelts && found == NULL; i++) {
        if (port[i].family != AF_UNIX) {
            continue;
        }

        addr = port[i].addrs.elts;

        for (j = 0; j < port[i].addrs.nelts; j++) {

            if (sa) {
                if (ngx_cmp_sockaddr(sa, socklen, addr[j].opt.sockaddr,
                                     addr[j].opt.socklen, 0)
                    != NGX_OK)
                {
                    continue;
                }

                if (!ngx_http_promgate_kafka_has_server(&addr[j], cscf)) {
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "promgate_kafka_consumer socket \"%V\" is "
                                  "a listener of another server than the "
                                  "one of target \"%V\" in %s:%ui",
                                  &cc->socket, &cc->target, cc->file,
                                  cc->line);
                    return NULL;
                }

                found = &addr[j];
                break;
            }

            if (ngx_http_promgate_kafka_has_server(&addr[j], cscf)) {
                found = &addr[j];
                break;
            }
        }
    }

    if (found) {
        if (found->opt.ssl || found->opt.http2 || found->opt.proxy_protocol) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer: the unix listener \"%V\" "
                          "of target \"%V\" has ssl, http2 or proxy_protocol; "
                          "the consumer speaks plain HTTP/1.1: give it its "
                          "own socket= in %s:%ui", &found->opt.addr_text,
                          &cc->target, cc->file, cc->line);
            return NULL;
        }

        sa = found->opt.sockaddr;
        socklen = found->opt.socklen;

    } else if (sa) {

        /* the module's own listener on the target's server */

        ngx_http_promgate_stale_socket(cf, cc->socket.data, sa, socklen);

        if (ngx_http_promgate_listen(cf, cscf, &u.url) != NGX_OK) {
            return NULL;
        }

        own = 1;

    } else {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate_kafka_consumer target \"%V\": its server has "
                      "no unix-domain listener; add socket=/run/promgate.sock "
                      "(promgate then listens there itself) or "
                      "\"listen unix:/run/promgate.sock;\" to that server, in "
                      "%s:%ui", &cc->target, cc->file, cc->line);
        return NULL;
    }


    /* consumers posting to the same socket share its connections */

    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        if (ngx_cmp_sockaddr(epp[i]->sockaddr, epp[i]->socklen, sa, socklen,
                             0)
            == NGX_OK)
        {
            return epp[i];
        }
    }

    ep = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_client_endpoint_t));
    if (ep == NULL) {
        return NULL;
    }

    ep->sockaddr = ngx_palloc(cf->pool, socklen);
    if (ep->sockaddr == NULL) {
        return NULL;
    }

    ngx_memcpy(ep->sockaddr, sa, socklen);
    ep->socklen = socklen;
    ep->own = own;

    if (ngx_array_init(&ep->targets, cf->pool, 1,
                       sizeof(ngx_http_core_loc_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    ep->name.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (ep->name.data == NULL) {
        return NULL;
    }

    ep->name.len = ngx_sock_ntop(sa, socklen, ep->name.data,
                                 NGX_SOCKADDR_STRLEN, 0);
    ep->name.data[ep->name.len] = '\0';

    ngx_queue_init(&ep->idle);

    epp = ngx_array_push(&kmcf->endpoints);
    if (epp == NULL) {
        return NULL;
    }

    *epp = ep;

    return ep;
}


/* the Host header: the server's name if it is a plain one */

static ngx_str_t
ngx_http_promgate_kafka_host(ngx_str_t *name)
{
    u_char      ch;
    ngx_str_t   host;
    ngx_uint_t  i;

    ngx_str_set(&host, "localhost");

    if (name->len == 0 || name->len > 255 || name->data[0] == '.') {
        return host;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'
              || ch == '_' || ch == ':'))
        {
            return host;
        }
    }

    return *name;
}


static ngx_int_t
ngx_http_promgate_kafka_set(ngx_conf_t *cf, rd_kafka_conf_t *conf,
    const char *name, const char *value)
{
    char  err[512];

    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err))
        != RD_KAFKA_CONF_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate kafka: property \"%s\" \"%s\": %s", name,
                      value, err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * cooperative-sticky moves only the partitions it must when a worker comes
 * or goes (reloads), but librdkafka before 2.3.0 aborts when such a
 * consumer is destroyed before its first assignment (librdkafka #4312,
 * fixed by #4381): a worker reloaded right after it started would crash.
 * With those versions promgate keeps librdkafka's own default.
 */

#define NGX_HTTP_PROMGATE_KAFKA_COOPERATIVE_OK  0x020300ff

static const char *
ngx_http_promgate_kafka_assignor(void)
{
    return rd_kafka_version() >= NGX_HTTP_PROMGATE_KAFKA_COOPERATIVE_OK
           ? "cooperative-sticky" : "range,roundrobin";
}


/* the defaults, the user's properties, what promgate owns, the brokers */

static ngx_int_t
ngx_http_promgate_kafka_configure(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf, rd_kafka_conf_t *conf,
    const char **defaults, const char **own)
{
    const char                         **kv;
    ngx_uint_t                           i;
    ngx_http_promgate_kafka_property_t  *prop;

    for (kv = defaults; *kv; kv += 2) {
        if (ngx_http_promgate_kafka_set(cf, conf, kv[0], kv[1]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    prop = kmcf->properties.elts;

    for (i = 0; i < kmcf->properties.nelts; i++) {
        if (ngx_http_promgate_kafka_set(cf, conf, (char *) prop[i].name.data,
                                        (char *) prop[i].value.data)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    for (kv = own; *kv; kv += 2) {
        if (ngx_http_promgate_kafka_set(cf, conf, kv[0], kv[1]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_promgate_kafka_set(cf, conf, "bootstrap.servers",
                                       (char *) kmcf->brokers.data);
}


/* the consumer's target: its listener, and what bounds a batch */

static ngx_int_t
ngx_http_promgate_kafka_target(ngx_conf_t *cf,
    ngx_http_promgate_kafka_main_conf_t *kmcf,
    ngx_http_promgate_kafka_consumer_conf_t *cc)
{
    ngx_http_core_srv_conf_t       *cscf;
    ngx_http_core_loc_conf_t       *clcf, **clcfp;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_http_promgate_location_t   *target;
    ngx_http_promgate_main_conf_t  *pmcf;

    /* set by promgate's own postconfiguration, which runs before this */
    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    /* the tenant travels as the Kafka header of the same name */

    if (cc->tenant_header.len == 0 && pmcf->tenant_header.len) {
        if (ngx_http_promgate_kafka_cstr(cf, &cc->tenant_header,
                                         pmcf->tenant_header.data,
                                         pmcf->tenant_header.len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    target = ngx_http_promgate_kafka_find_target(cf, cc);
    if (target == NULL) {
        return NGX_ERROR;
    }

    cscf = target->server;
    clcf = target->clcf;
    plcf = target->plcf;

    cc->endpoint = ngx_http_promgate_kafka_endpoint(cf, kmcf, cc, cscf);
    if (cc->endpoint == NULL) {
        return NGX_ERROR;
    }

    clcfp = ngx_array_push(&cc->endpoint->targets);
    if (clcfp == NULL) {
        return NGX_ERROR;
    }

    *clcfp = clcf;

    cc->host = ngx_http_promgate_kafka_host(&cscf->server_name);

    /* what the target accepts bounds a batch */

    cc->max_decoded = plcf->max_decoded;
    cc->max_bytes = ngx_min(plcf->max_decoded,
                            NGX_HTTP_PROMGATE_KAFKA_MAX_BATCH);

    if (clcf->client_max_body_size > 0) {
        cc->max_bytes = ngx_min(cc->max_bytes,
                                (size_t) clcf->client_max_body_size / 4 * 3);
    }

    cc->backoff_first = target->fcf->backoff_first
                        ? target->fcf->backoff_first : 100;
    cc->backoff_max = ngx_max(target->fcf->backoff_max, cc->backoff_first);

    if (cc->timeout == NGX_CONF_UNSET_MSEC) {
        cc->timeout = target->fcf->retry_timeout + 20000;
    }

    return NGX_OK;
}


static void
ngx_http_promgate_kafka_conf_cleanup(void *data)
{
    ngx_http_promgate_kafka_main_conf_t *kmcf = data;

    ngx_uint_t                                i;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;

    cc = kmcf->consumers.elts;

    for (i = 0; i < kmcf->consumers.nelts; i++) {
        if (cc[i].rdconf) {
            rd_kafka_conf_destroy(cc[i].rdconf);
            cc[i].rdconf = NULL;
        }
    }

    if (kmcf->producer_conf) {
        rd_kafka_conf_destroy(kmcf->producer_conf);
        kmcf->producer_conf = NULL;
    }
}


/* ------------------------------------------ the consumers' sockets */


static ngx_uint_t
ngx_http_promgate_kafka_own_sockets(ngx_http_promgate_kafka_main_conf_t *kmcf)
{
    ngx_uint_t                            i;
    ngx_http_promgate_client_endpoint_t  **epp;

    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        if (epp[i]->own) {
            return 1;
        }
    }

    return 0;
}


/* the sockets promgate added itself (socket=) become private */

static ngx_int_t
ngx_http_promgate_kafka_init_module(ngx_cycle_t *cycle)
{
    u_char                               *path;
    ngx_uint_t                            i;
    ngx_http_promgate_kafka_main_conf_t  *kmcf;
    ngx_http_promgate_client_endpoint_t  **epp;

    kmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_promgate_kafka_module);

    if (kmcf == NULL || ngx_test_config) {
        return NGX_OK;
    }

    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        if (!epp[i]->own) {
            continue;
        }

        path = epp[i]->name.data + sizeof("unix:") - 1;

        if (ngx_http_promgate_socket_private(cycle, path) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A socket promgate added serves the consumers' target locations only:
 * the rest of the target's server (its status, its exemplar query, its
 * other locations) stays behind the server's own listeners and their
 * checks.  Subrequests and internal redirects started there pass.
 */

static ngx_int_t
ngx_http_promgate_kafka_socket_access(ngx_http_request_t *r)
{
    ngx_uint_t                            i, j;
    ngx_listening_t                      *ls;
    ngx_http_core_loc_conf_t             *clcf, **targets;
    ngx_http_promgate_kafka_main_conf_t  *kmcf;
    ngx_http_promgate_client_endpoint_t  **epp;

    if (r != r->main || r->internal
        || r->connection->listening == NULL
        || r->connection->listening->sockaddr->sa_family != AF_UNIX)
    {
        return NGX_DECLINED;
    }

    ls = r->connection->listening;
    kmcf = ngx_http_get_module_main_conf(r, ngx_http_promgate_kafka_module);
    epp = kmcf->endpoints.elts;

    for (i = 0; i < kmcf->endpoints.nelts; i++) {
        if (!epp[i]->own
            || ngx_cmp_sockaddr(ls->sockaddr, ls->socklen, epp[i]->sockaddr,
                                epp[i]->socklen, 0)
               != NGX_OK)
        {
            continue;
        }

        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
        targets = epp[i]->targets.elts;

        for (j = 0; j < epp[i]->targets.nelts; j++) {
            if (targets[j] == clcf) {
                return NGX_DECLINED;
            }
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "promgate kafka: \"%V\" is not a consumer's target: "
                      "refused on the consumers' socket \"%V\"", &r->uri,
                      &epp[i]->name);

        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_promgate_kafka_init(ngx_conf_t *cf)
{
    ngx_uint_t                                i;
    ngx_pool_cleanup_t                       *cln;
    ngx_http_promgate_kafka_main_conf_t      *kmcf;
    ngx_http_promgate_kafka_consumer_conf_t  *cc;
    ngx_http_promgate_kafka_stats_key_t     **kp;
    ngx_http_handler_pt                      *h;
    ngx_http_core_main_conf_t                *cmcf;

    kmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_promgate_kafka_module);

    if (kmcf->brokers.len == 0) {
        if (kmcf->consumers.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate_kafka_consumer needs "
                          "promgate_kafka_brokers");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_promgate_kafka_conf_cleanup;
    cln->data = kmcf;

    if (ngx_http_promgate_kafka_cstr(cf, &kmcf->brokers, kmcf->brokers.data,
                                     kmcf->brokers.len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    kmcf->producer_conf = rd_kafka_conf_new();

    if (kmcf->producer_conf == NULL
        || ngx_http_promgate_kafka_configure(cf, kmcf, kmcf->producer_conf,
                                      ngx_http_promgate_kafka_producer_defaults,
                                      ngx_http_promgate_kafka_producer_own)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    cc = kmcf->consumers.elts;

    for (i = 0; i < kmcf->consumers.nelts; i++) {

        if (ngx_http_promgate_kafka_target(cf, kmcf, &cc[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        cc[i].rdconf = rd_kafka_conf_new();

        if (cc[i].rdconf == NULL
            || ngx_http_promgate_kafka_set(cf, cc[i].rdconf,
                                           "partition.assignment.strategy",
                                           ngx_http_promgate_kafka_assignor())
               != NGX_OK
            || ngx_http_promgate_kafka_configure(cf, kmcf, cc[i].rdconf,
                                      ngx_http_promgate_kafka_consumer_defaults,
                                      ngx_http_promgate_kafka_consumer_own)
               != NGX_OK
            || ngx_http_promgate_kafka_set(cf, cc[i].rdconf, "group.id",
                                           (char *) cc[i].group.data)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        kp = ngx_array_push(&kmcf->keys);
        if (kp == NULL) {
            return NGX_ERROR;
        }

        *kp = &cc[i].key;
    }

    if (ngx_http_promgate_kafka_own_sockets(kmcf)) {
        cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_promgate_kafka_socket_access;
    }

    if (kmcf->consumers.nelts == 0) {
        return NGX_OK;
    }

    return ngx_http_promgate_kafka_status_init(cf, &kmcf->keys);
}
