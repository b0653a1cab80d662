
/*
 * promgate: a durable spool per forward target.
 *
 * A write's body for a target goes to the target's spool when the target
 * fails after its retries (5xx, 429, timeout, no connection), and every
 * later write for that target goes straight to the spool while it is not
 * empty, so that a series' samples stay in order.  Spooled counts as
 * stored for the ack policy: the body, as sent to that target, with the
 * request headers it needs (pg_spool.h), is appended to a segment file of
 * the writing process (ngx_http_promgate_segw_t, as the exemplar WAL),
 * before the sender is answered.
 *
 * Replay: one worker at a time owns a spool's replay (its pid in the
 * spool's zone, taken over when the owner dies or stops).  It merges the
 * writers' segments by sequence number, oldest first, and posts each
 * record over the spool's private unix socket (the Kafka consumers' HTTP
 * client) to the write location that named the spool.  There the request
 * is taken over before the access phase (ngx_http_promgate_spool_access)
 * and forwarded to the spool's target alone, through the forwarder (its
 * retries, backoff, Retry-After), never spooled again.  A record the
 * target refuses as bad (400, 409, 413, 415) is dropped and counted;
 * anything else is tried again after a backoff.  Segments are deleted as
 * they drain; where replay stands (each writer's segment and offset) is
 * kept in "<name>.replay" in the spool's directory, so a restart goes on
 * from there (a record may be sent twice, none is skipped).
 */



#include "ngx_http_promgate_spool.h"


#define NGX_HTTP_PROMGATE_SPOOL_ZONE       (64 * 1024)
#define NGX_HTTP_PROMGATE_SPOOL_LOG_BURST  10000


/* a record being replayed, on the receiving side */
typedef struct {
    ngx_http_promgate_forwarder_t   fw;
    ngx_http_promgate_spool_t      *spool;
    ngx_array_t                     targets;
} ngx_http_promgate_spool_req_t;


static ngx_int_t ngx_http_promgate_spool_zone_init(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);
static void ngx_http_promgate_spool_body(ngx_http_request_t *r);
static void ngx_http_promgate_spool_status(ngx_http_promgate_text_t *t,
    void *data);


static ngx_uint_t ngx_http_promgate_spool_busy(ngx_http_promgate_spool_t *sp);
static ngx_int_t ngx_http_promgate_spool_append(ngx_http_promgate_spool_t *sp,
    ngx_http_request_t *r, ngx_http_promgate_payload_t *pl);


/* what the forwarder calls (forward.h) */
static ngx_http_promgate_spool_ops_t  ngx_http_promgate_spool_ops = {
    ngx_http_promgate_spool_busy,
    ngx_http_promgate_spool_append
};


static ngx_http_promgate_zone_kind_t  ngx_http_promgate_spool_kind = {
    "promgate_spool",
    "spool",
    0x4c4f4f50,                            /* "POOL" */
    1,
    sizeof(ngx_http_promgate_spool_shm_t),
    ngx_http_promgate_spool_zone_init
};


ngx_str_t  ngx_http_promgate_spool_header = ngx_string("X-Promgate-Spool");


/* ------------------------------------------------------ configuration */


/*
 * promgate_spool NAME path=DIR [max_size=SIZE] [segment=SIZE]
 *     [fsync=TIME|off] [max_age=TIME] [socket=PATH];
 */

char *
ngx_http_promgate_spool_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_main_conf_t *pmcf = conf;

    u_char                     *p;
    ngx_str_t                  *value, s, zname;
    ngx_uint_t                  i;
    ngx_http_promgate_spool_t  *sp, **spp;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64
        || ngx_strlchr(value[1].data, value[1].data + value[1].len, '/')
        || value[1].data[0] == '.')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid spool name \"%V\": 1 to 64 characters, "
                           "no \"/\", not starting with \".\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        if (spp[i]->name.len == value[1].len
            && ngx_strncmp(spp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "spool \"%V\" is duplicate", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    sp = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_spool_t));
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    sp->name.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (sp->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(sp->name.data, value[1].data, value[1].len);
    sp->name.data[value[1].len] = '\0';
    sp->name.len = value[1].len;

    sp->max_size = 1024 * 1024 * 1024;
    sp->w.segment = 64 * 1024 * 1024;
    sp->w.fsync = 1000;
    sp->file = cf->conf_file->file.name.data;
    sp->line = cf->conf_file->line;

    sp->w.name = sp->name;
    sp->w.what = "spool";
    sp->w.kind = "spool";
    sp->w.owner = "spool";
    sp->w.dirparam = "path=";
    sp->w.loss = "its target counts as failed for these writes";

#if (NGX_THREADS)
    sp->w.thread_pool = ngx_thread_pool_add(cf, NULL);
    if (sp->w.thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }
#else
    sp->w.fsync = 0;
#endif

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            sp->max_size = ngx_parse_offset(&s);

            if (sp->max_size == NGX_ERROR || sp->max_size < 1024 * 1024) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a size of at least 1m "
                                   "is expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_age=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            sp->max_age = ngx_parse_time(&s, 0);

            if (sp->max_age == (ngx_msec_t) NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a time such as 2h is "
                                   "expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "socket=", 7) == 0) {
            sp->socket.data = value[i].data + 7;
            sp->socket.len = value[i].len - 7;

            if (sp->socket.len == 0 || sp->socket.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": the absolute path of a "
                                   "unix socket is expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        switch (ngx_http_promgate_segw_param(cf, &sp->w, &value[i],
                                             "path=")) {
        case NGX_OK:
            continue;

        case NGX_DECLINED:
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" (expected path=, "
                               "max_size=, segment=, fsync=, max_age= or "
                               "socket=)", &value[i]);
            return NGX_CONF_ERROR;

        default:
            return NGX_CONF_ERROR;
        }
    }

    if (sp->w.dir == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spool \"%V\" needs path=DIR", &sp->name);
        return NGX_CONF_ERROR;
    }

    /* the socket replays go through: in the directory unless set */

    if (sp->socket.len == 0) {
        sp->socket.len = sp->w.dir->name.len + sizeof("/.sock") - 1
                         + sp->name.len;
        sp->socket.data = ngx_pnalloc(cf->pool, sp->socket.len + 1);
        if (sp->socket.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(sp->socket.data, "%V/%V.sock%Z", &sp->w.dir->name,
                    &sp->name);

    } else {
        p = ngx_pnalloc(cf->pool, sp->socket.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, sp->socket.data, sp->socket.len);
        p[sp->socket.len] = '\0';
        sp->socket.data = p;
    }

    if (sp->socket.len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spool \"%V\": the unix socket path \"%V\" is "
                           "longer than a unix socket can have (%uz); set a "
                           "shorter socket=", &sp->name, &sp->socket,
                           sizeof(((struct sockaddr_un *) 0)->sun_path) - 1);
        return NGX_CONF_ERROR;
    }

    /* its zone: "spool_NAME", apart from the other kinds' names */

    zname.len = sizeof("spool_") - 1 + sp->name.len;
    zname.data = ngx_pnalloc(cf->pool, zname.len);
    if (zname.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(zname.data, "spool_%V", &sp->name);

    if (ngx_http_promgate_zone_add(cf, &zname,
                                   NGX_HTTP_PROMGATE_SPOOL_ZONE,
                                   &ngx_http_promgate_spool_kind, &sp->zone,
                                   NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    spp = ngx_array_push(&pmcf->spools);
    if (spp == NULL) {
        return NGX_CONF_ERROR;
    }

    *spp = sp;

    return NGX_CONF_OK;
}


/*
 * spool=NAME of a promgate_forward target: the spool must be defined
 * before, serves that target only, and replays through this location
 * (a prefix or exact one, in one server).
 */

char *
ngx_http_promgate_spool_ref(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_promgate_target_t *target, ngx_http_promgate_forward_t *fw)
{
    ngx_uint_t                      i;
    ngx_http_core_srv_conf_t       *cscf;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_promgate_spool_t      *sp, **spp;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    sp = NULL;
    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        if (spp[i]->name.len == name->len
            && ngx_strncmp(spp[i]->name.data, name->data, name->len) == 0)
        {
            sp = spp[i];
            break;
        }
    }

    if (sp == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown spool \"%V\" of forward target \"%V\" "
                           "(\"promgate_spool %V path=...\" must come before, "
                           "at http level)", name, &target->uri, name);
        return NGX_CONF_ERROR;
    }

    if (sp->target && sp->target != target) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spool \"%V\" serves forward target \"%V\" "
                           "already: one spool per target", name,
                           &sp->target->uri);
        return NGX_CONF_ERROR;
    }

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (sp->server && sp->server != cscf) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spool \"%V\" is used in two servers: its replays "
                           "go to one, give the other its own spool", name);
        return NGX_CONF_ERROR;
    }

    if (sp->uri.len == 0) {
        if (clcf->name.len == 0 || clcf->name.data[0] != '/' || clcf->noname
#if (NGX_PCRE)
            || clcf->regex
#endif
            )
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "spool \"%V\" needs a prefix or exact "
                               "location (its replays are posted to its "
                               "URI), not \"%V\"", name, &clcf->name);
            return NGX_CONF_ERROR;
        }

        sp->uri = clcf->name;
    }

    sp->target = target;
    sp->server = cscf;
    fw->spool = sp;
    fw->spool_ops = &ngx_http_promgate_spool_ops;

    return NGX_CONF_OK;
}


/* postconfiguration: each spool's socket on its server, the status page */

ngx_int_t
ngx_http_promgate_spool_init(ngx_conf_t *cf)
{
    ngx_url_t                       u;
    ngx_uint_t                      i, j;
    ngx_shm_zone_t                **zp;
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_promgate_spool_t     **spp, *sp;
    ngx_http_promgate_exzone_t     *ez;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    if (pmcf->spools.nelts == 0) {
        return NGX_OK;
    }

    spp = pmcf->spools.elts;

    /*
     * A spool and an exemplar WAL name their segment files alike (pg_wal's
     * NAME.PID.SEQ): with the same name in the same directory each would
     * read the other's records as its own.
     */

    zp = pmcf->exemplar_zones.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        sp = spp[i];

        for (j = 0; j < pmcf->exemplar_zones.nelts; j++) {
            ez = zp[j]->data;

            if (ez->w.dir == NULL
                || ez->w.dir->name.len != sp->w.dir->name.len
                || ngx_strncmp(ez->w.dir->name.data, sp->w.dir->name.data,
                               sp->w.dir->name.len) != 0
                || ez->name.len != sp->name.len
                || ngx_strncmp(ez->name.data, sp->name.data, sp->name.len)
                   != 0)
            {
                continue;
            }

            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "spool \"%V\" in %s:%ui writes to directory "
                          "\"%V\", where the WAL of exemplar zone \"%V\" "
                          "(%s:%ui) writes segment files of the same name: "
                          "give the spool another path= or name",
                          &sp->name, sp->file, sp->line, &sp->w.dir->name,
                          &ez->name, ez->w.dir->conf_file, ez->w.dir->line);
            return NGX_ERROR;
        }
    }

    for (i = 0; i < pmcf->spools.nelts; i++) {
        sp = spp[i];

        if (sp->target == NULL) {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "spool \"%V\" in %s:%ui is used by no "
                          "\"promgate_forward ... spool=%V\"", &sp->name,
                          sp->file, sp->line, &sp->name);
            continue;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.len = sizeof("unix:") - 1 + sp->socket.len;
        u.url.data = ngx_pnalloc(cf->pool, u.url.len + 1);
        if (u.url.data == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(u.url.data, "unix:%V%Z", &sp->socket);
        u.listen = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs != 1) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "spool \"%V\" socket \"%V\": %s in %s:%ui",
                          &sp->name, &sp->socket,
                          u.err ? u.err : "invalid path", sp->file, sp->line);
            return NGX_ERROR;
        }

        ngx_http_promgate_stale_socket(cf, sp->socket.data,
                                       u.addrs[0].sockaddr,
                                       u.addrs[0].socklen);

        if (ngx_http_promgate_listen(cf, sp->server, &u.url) != NGX_OK) {
            return NGX_ERROR;
        }

        sp->endpoint.name = u.url;
        sp->endpoint.sockaddr = u.addrs[0].sockaddr;
        sp->endpoint.socklen = u.addrs[0].socklen;
        sp->endpoint.own = 1;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_promgate_spool_access;

    return ngx_http_promgate_status_add(cf, ngx_http_promgate_spool_status,
                                        &pmcf->spools);
}


/* in the master, once nginx opened the sockets: they become private */

ngx_int_t
ngx_http_promgate_spool_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_promgate_spool_t     **spp;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_promgate_module);

    if (pmcf == NULL || ngx_test_config) {
        return NGX_OK;
    }

    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        if (spp[i]->target
            && ngx_http_promgate_socket_private(cycle, spp[i]->socket.data)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_promgate_spool_zone_init(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused)
{
    ngx_http_promgate_spool_t *sp = (ngx_http_promgate_spool_t *) zone;

    sp->sh = zone->sh;
    sp->w.st = &sp->sh->wal;

    if (ngx_http_promgate_segw_check(&sp->w, zone->shm_zone->shm.log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ------------------------------------------------------------ writing */


/* whether a write for the spool's target goes straight to it */

static ngx_uint_t
ngx_http_promgate_spool_busy(ngx_http_promgate_spool_t *sp)
{
    return (ngx_atomic_int_t) sp->sh->records > 0;
}


static void
ngx_http_promgate_spool_refused(ngx_http_promgate_spool_t *sp,
    ngx_http_request_t *r, ngx_uint_t why, const char *text)
{
    (void) ngx_atomic_fetch_add(&sp->sh->refused[why], 1);

    if (sp->last_log
        && ngx_current_msec - sp->last_log < NGX_HTTP_PROMGATE_SPOOL_LOG_BURST)
    {
        return;
    }

    sp->last_log = ngx_current_msec;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "promgate: spool \"%V\" of forward target \"%V\" %s; the "
                  "target counts as failed for this write (further refusals "
                  "in the next %ds are only counted)", &sp->name,
                  &sp->target->uri, text,
                  NGX_HTTP_PROMGATE_SPOOL_LOG_BURST / 1000);
}


/*
 * Appends a payload as sent to the spool's target: NGX_OK once it is in
 * a segment (the target counts as stored), NGX_ERROR if it could not be
 * (full, too large, a write error: counted, logged once per burst).
 */

static ngx_int_t
ngx_http_promgate_spool_append(ngx_http_promgate_spool_t *sp,
    ngx_http_request_t *r, ngx_http_promgate_payload_t *pl)
{
    u_char             *head, *data;
    size_t              hlen, len;
    ngx_int_t           rc;
    ngx_uint_t          i, n;
    struct iovec        iov[2];
    ngx_list_part_t    *part;
    ngx_table_elt_t    *h;
    pg_spool_record_t   rec;
    pg_spool_header_t  *hdrs;

    if (sp->w.fd == NGX_INVALID_FILE && sp->w.retry_open
        && (ngx_msec_int_t) (ngx_current_msec - sp->w.retry_open) < 0)
    {
        ngx_http_promgate_spool_refused(sp, r, NGX_HTTP_PROMGATE_SPOOL_ERROR,
                                        "cannot be written (see the error "
                                        "before)");
        return NGX_ERROR;
    }

    if (pl->body) {
        data = pl->body->bufs->buf->pos;
        len = (size_t) pl->len;

    } else if (ngx_http_promgate_body_bytes(r->main, &data, &len) != NGX_OK) {
        return NGX_ERROR;
    }

    n = 0;
    for (part = &pl->headers.part; part; part = part->next) {
        n += part->nelts;
    }

    hdrs = ngx_palloc(r->pool, (n + 1) * sizeof(pg_spool_header_t));
    if (hdrs == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (part = &pl->headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0) {
                continue;
            }

            hdrs[n].name.data = h[i].key.data;
            hdrs[n].name.len = h[i].key.len;
            hdrs[n].value.data = h[i].value.data;
            hdrs[n].value.len = h[i].value.len;
            n++;
        }
    }

    rec.seq = 0;
    rec.ts = (int64_t) ngx_time() * 1000
             + (int64_t) ngx_timeofday()->msec;
    rec.version = pl->version == PG_RW_V2 ? 2 : 1;
    rec.headers = hdrs;
    rec.nheaders = n;
    rec.body = data;
    rec.body_len = len;

    hlen = pg_spool_head_size(&rec);

    if (hlen == 0) {
        ngx_http_promgate_spool_refused(sp, r,
                                        NGX_HTTP_PROMGATE_SPOOL_TOO_LARGE,
                                        "cannot hold a body this large "
                                        "(16 MB a record) or with this many "
                                        "headers");
        return NGX_ERROR;
    }

    if ((off_t) ((ngx_atomic_int_t) sp->sh->bytes) + (off_t) (hlen + len)
        > sp->max_size)
    {
        ngx_http_promgate_spool_refused(sp, r, NGX_HTTP_PROMGATE_SPOOL_FULL,
                                        "is full (max_size)");
        return NGX_ERROR;
    }

    head = ngx_pnalloc(r->pool, hlen);
    if (head == NULL) {
        return NGX_ERROR;
    }

    /* sequence numbers are the zone's: the replay merges writers by them */

    rec.seq = ngx_atomic_fetch_add(&sp->sh->next_seq, 1);

    (void) pg_spool_encode_head(&rec, head);

    iov[0].iov_base = head;
    iov[0].iov_len = hlen;
    iov[1].iov_base = data;
    iov[1].iov_len = len;

    rc = ngx_http_promgate_segw_append(&sp->w, iov, len ? 2 : 1, hlen + len,
                                       rec.seq, 1);

    if (rc == NGX_ERROR) {
        ngx_http_promgate_spool_refused(sp, r, NGX_HTTP_PROMGATE_SPOOL_ERROR,
                                        "could not be written (see the "
                                        "error before)");
        return NGX_ERROR;
    }

    (void) ngx_atomic_fetch_add(&sp->sh->records, 1);
    (void) ngx_atomic_fetch_add(&sp->sh->bytes, hlen + len);
    (void) ngx_atomic_fetch_add(&sp->sh->appended, 1);
    (void) ngx_atomic_fetch_add(&sp->sh->appended_bytes, hlen + len);

    return NGX_OK;
}


/* ------------------------------------------------- the receiving side */


static ngx_uint_t
ngx_http_promgate_spool_decide(ngx_http_promgate_forwarder_t *fw)
{
    ngx_http_promgate_fwd_t  *f;

    f = &fw->fwd[0];

    switch (f->state) {

    case PG_TARGET_PENDING:
        return 0;

    case PG_TARGET_STORED:
        return NGX_HTTP_NO_CONTENT;

    case PG_TARGET_REJECTED:
        return f->status;

    default:
        /* a body too large or of a type the target refuses: bad data */
        if (f->status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
            || f->status == NGX_HTTP_UNSUPPORTED_MEDIA_TYPE)
        {
            return f->status;
        }

        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }
}


static ngx_int_t
ngx_http_promgate_spool_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision)
{
    ngx_http_promgate_fwd_t  *f;

    static ngx_str_t  type = ngx_string("text/plain");

    f = &fw->fwd[0];

    if (decision == NGX_HTTP_NO_CONTENT) {
        r->headers_out.status = NGX_HTTP_NO_CONTENT;
        r->header_only = 1;
        ngx_http_clear_content_length(r);
        return ngx_http_send_header(r);
    }

    return ngx_http_promgate_send(r, decision, &type, f->reason.data,
                                  f->reason.len);
}


/*
 * A request on a spool's socket is a record's replay: it is taken over
 * here, before the location's access checks (the socket is the workers'
 * own, mode 0600), and forwarded to the spool's target alone.
 */

ngx_int_t
ngx_http_promgate_spool_access(ngx_http_request_t *r)
{
    ngx_int_t                       rc, v;
    ngx_uint_t                      i;
    ngx_listening_t                *ls;
    ngx_table_elt_t                *h;
    ngx_http_promgate_spool_t     **spp, *sp;
    ngx_http_promgate_forward_t    *fe;
    ngx_http_promgate_spool_req_t  *ctx;
    ngx_http_promgate_main_conf_t  *pmcf;

    if (r != r->main || r->internal
        || r->connection->listening == NULL
        || r->connection->listening->sockaddr->sa_family != AF_UNIX)
    {
        return NGX_DECLINED;
    }

    ls = r->connection->listening;
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_promgate_module);

    sp = NULL;
    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        if (spp[i]->target
            && ngx_cmp_sockaddr(ls->sockaddr, ls->socklen,
                                spp[i]->endpoint.sockaddr,
                                spp[i]->endpoint.socklen, 0)
               == NGX_OK)
        {
            sp = spp[i];
            break;
        }
    }

    if (sp == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_get_module_ctx(r, ngx_http_promgate_forward_module)) {
        return NGX_DECLINED;
    }

    h = ngx_http_promgate_find_header(&r->headers_in.headers,
                                      ngx_http_promgate_spool_header.data,
                                      ngx_http_promgate_spool_header.len);

    v = h ? ngx_atoi(h->value.data, h->value.len) : NGX_ERROR;

    if (r->method != NGX_HTTP_POST || (v != PG_RW_V1 && v != PG_RW_V2)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "promgate: \"%V\" is not a replay of spool \"%V\": "
                      "refused on its socket", &r->uri, &sp->name);
        return NGX_HTTP_FORBIDDEN;
    }

    /* the marker goes no further */
    h->hash = 0;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_spool_req_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&ctx->targets, r->pool, 1,
                       sizeof(ngx_http_promgate_forward_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fe = ngx_array_push(&ctx->targets);
    if (fe == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fe->target = sp->target;
    fe->proto = NGX_HTTP_PROMGATE_PROTO_ASIS;
    fe->spool = NULL;
    fe->spool_ops = NULL;

    ctx->spool = sp;

    ngx_http_promgate_forwarder_init(&ctx->fw, r, ctx);

    ctx->fw.version = (ngx_uint_t) v;
    ctx->fw.nospool = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_promgate_spool_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_http_promgate_spool_body(ngx_http_request_t *r)
{
    ngx_http_promgate_payload_t    *pl;
    ngx_http_promgate_forwarder_t  *fw;
    ngx_http_promgate_spool_req_t  *ctx;

    fw = ngx_http_get_module_ctx(r, ngx_http_promgate_forward_module);
    ctx = fw ? fw->data : NULL;

    if (ctx == NULL || r->request_body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    pl = &ctx->fw.payloads[ctx->fw.version];
    pl->body = NULL;
    pl->len = r->headers_in.content_length_n;
    pl->version = ctx->fw.version;
    pl->remote_write = 1;
    pl->ready = 1;

    ctx->fw.targets = &ctx->targets;
    ctx->fw.decide = ngx_http_promgate_spool_decide;
    ctx->fw.answer = ngx_http_promgate_spool_answer;

    if (ngx_http_promgate_forwarder_start(&ctx->fw) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    /* the forwarder answers; the body-read reference is released then */
}


/* ------------------------------------------------------------ status */


static ngx_http_promgate_metric_t  ngx_http_promgate_spool_metrics[] = {
    { "promgate_spool_appended_records_total", "counter",
      "Writes spooled for the spool's target (they count as stored).",
      offsetof(ngx_http_promgate_spool_shm_t, appended) },
    { "promgate_spool_appended_bytes_total", "counter",
      "Bytes spooled (frames: body, headers, framing).",
      offsetof(ngx_http_promgate_spool_shm_t, appended_bytes) },
    { "promgate_spool_replayed_records_total", "counter",
      "Spooled writes the target stored on replay.",
      offsetof(ngx_http_promgate_spool_shm_t, replayed) },
    { "promgate_spool_replayed_bytes_total", "counter",
      "Bytes of the spooled writes the target stored on replay.",
      offsetof(ngx_http_promgate_spool_shm_t, replayed_bytes) },
    { "promgate_spool_replay_requests_total", "counter",
      "Replay requests the target stored (consecutive remote write 1.0 "
      "records with the same headers go in one).",
      offsetof(ngx_http_promgate_spool_shm_t, replay_posts) },
    { "promgate_spool_replay_errors_total", "counter",
      "Replays that failed (the target still down) and are tried again.",
      offsetof(ngx_http_promgate_spool_shm_t, replay_errors) },
    { "promgate_spool_segments_created_total", "counter",
      "Spool segments opened.",
      offsetof(ngx_http_promgate_spool_shm_t, wal.segments_created) },
    { "promgate_spool_segments_deleted_total", "counter",
      "Spool segments deleted once replayed.",
      offsetof(ngx_http_promgate_spool_shm_t, wal.segments_deleted) },
    { "promgate_spool_write_errors_total", "counter",
      "Spool opens and writes that failed (full disk, permissions).",
      offsetof(ngx_http_promgate_spool_shm_t, wal.write_errors) },
    { "promgate_spool_fsyncs_total", "counter",
      "fsync calls on spool segments.",
      offsetof(ngx_http_promgate_spool_shm_t, wal.fsyncs) },
};


/* a spool's value for a gauge of the status page (k: gauges[k]) */

static ngx_atomic_uint_t
ngx_http_promgate_spool_gauge(ngx_http_promgate_spool_t *sp, ngx_uint_t k,
    int64_t now)
{
    int64_t           oldest;
    ngx_atomic_int_t  v;

    switch (k) {

    case 0:
        v = (ngx_atomic_int_t) sp->sh->records;
        return v > 0 ? (ngx_atomic_uint_t) v : 0;

    case 1:
        v = (ngx_atomic_int_t) sp->sh->bytes;
        return v > 0 ? (ngx_atomic_uint_t) v : 0;

    case 2:
        /* ms, printed as seconds */
        oldest = (int64_t) sp->sh->oldest_ts;
        return ((ngx_atomic_int_t) sp->sh->records > 0 && oldest > 0
                && now > oldest) ? (ngx_atomic_uint_t) (now - oldest) : 0;

    default:
        return sp->sh->owner;
    }
}


static void
ngx_http_promgate_spool_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_array_t *spools = data;

    int64_t                         now;
    ngx_uint_t                      i, k, m;
    ngx_atomic_t                   *counts;
    ngx_atomic_uint_t               v;
    ngx_http_promgate_label_t       l[3];
    ngx_http_promgate_spool_t     **spp, *sp;

    static char  *gauges[][2] = {
        { "promgate_spool_records", "Writes in the spool, not yet replayed." },
        { "promgate_spool_bytes", "Bytes in the spool, not yet replayed." },
        { "promgate_spool_oldest_age_seconds",
          "Age of the oldest record waiting for replay (0: none)." },
        { "promgate_spool_owner",
          "The pid of the worker that replays the spool (0: none)." }
    };

    static char  *reasons[2][3] = {
        { "rejected", "max_age", "corrupt" },
        { "full", "error", "too_large" }
    };

    static char  *by_reason[2][2] = {
        { "promgate_spool_dropped_records_total",
          "Spooled writes dropped: the target refused them as bad "
          "(rejected), older than max_age, or corrupt on disk." },
        { "promgate_spool_refused_total",
          "Writes the spool could not take (the target then counts as "
          "failed for them): full (max_size), a write error, too large for "
          "a record." }
    };

    spp = spools->elts;
    now = (int64_t) ngx_time() * 1000 + (int64_t) ngx_timeofday()->msec;

    /* every family, then a sample per spool with a target */

    for (m = 0; m < 4 + 2 + sizeof(ngx_http_promgate_spool_metrics)
                            / sizeof(ngx_http_promgate_metric_t); m++)
    {
        if (m < 4) {
            ngx_http_promgate_text_family(t, gauges[m][0], "gauge",
                                          gauges[m][1]);

        } else if (m < 6) {
            ngx_http_promgate_text_family(t, by_reason[m - 4][0], "counter",
                                          by_reason[m - 4][1]);

        } else {
            ngx_http_promgate_text_family(t,
                                  ngx_http_promgate_spool_metrics[m - 6].name,
                                  ngx_http_promgate_spool_metrics[m - 6].type,
                                  ngx_http_promgate_spool_metrics[m - 6].help);
        }

        for (i = 0; i < spools->nelts; i++) {
            sp = spp[i];

            if (sp->target == NULL) {
                continue;
            }

            ngx_http_promgate_label_cstr(&l[0], "spool",
                                         (char *) sp->name.data);
            l[1].name = "target";
            l[1].value = sp->target->uri;

            if (m == 2) {
                v = ngx_http_promgate_spool_gauge(sp, m, now);
                ngx_http_promgate_text_sample(t, gauges[m][0], l, 2,
                                              "%uA.%03uA", v / 1000,
                                              v % 1000);

            } else if (m < 4) {
                ngx_http_promgate_text_sample(t, gauges[m][0], l, 2, "%uA",
                                      ngx_http_promgate_spool_gauge(sp, m,
                                                                    now));

            } else if (m < 6) {
                counts = (m == 4) ? sp->sh->dropped : sp->sh->refused;

                for (k = 0; k < 3; k++) {
                    ngx_http_promgate_label_cstr(&l[2], "reason",
                                                 reasons[m - 4][k]);
                    ngx_http_promgate_text_sample(t, by_reason[m - 4][0], l,
                                                  3, "%uA", counts[k]);
                }

            } else {
                ngx_http_promgate_text_sample(t,
                         ngx_http_promgate_spool_metrics[m - 6].name, l, 2,
                         "%uA",
                         *(ngx_atomic_t *) ((u_char *) sp->sh
                             + ngx_http_promgate_spool_metrics[m - 6].offset));
            }
        }
    }
}
