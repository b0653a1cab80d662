
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


#include "ngx_http_promgate_module.h"
#include "ngx_http_promgate_kafka.h"
#include "pg_spool.h"
#include "pg_wal.h"

#include <dirent.h>


#define NGX_HTTP_PROMGATE_SPOOL_ZONE       (64 * 1024)
#define NGX_HTTP_PROMGATE_SPOOL_IDLE       100      /* ms between looks */
#define NGX_HTTP_PROMGATE_SPOOL_TORN       5000     /* a partial frame */
#define NGX_HTTP_PROMGATE_SPOOL_BACKOFF    2000     /* the most, ms */
#define NGX_HTTP_PROMGATE_SPOOL_LOG_BURST  10000
#define NGX_HTTP_PROMGATE_SPOOL_CURSORS    256
#define NGX_HTTP_PROMGATE_SPOOL_BATCH      64       /* records a post */
#define NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE (4 * 1024 * 1024)  /* decoded */


/* a spool's zone: its state and counters, across reloads */
typedef struct {
    ngx_http_promgate_shm_t         shm;
    ngx_atomic_t                    next_seq;
    ngx_atomic_t                    records;   /* spooled, not replayed */
    ngx_atomic_t                    bytes;
    ngx_atomic_t                    oldest_ts; /* ms, of the next to replay */
    ngx_atomic_t                    owner;     /* the replaying worker's pid */
    ngx_atomic_t                    beat;      /* its last step, ms */
    ngx_atomic_t                    scanned;
    ngx_atomic_t                    appended;
    ngx_atomic_t                    appended_bytes;
    ngx_atomic_t                    replayed;
    ngx_atomic_t                    replayed_bytes;
    ngx_atomic_t                    replay_errors;
    ngx_atomic_t                    replay_posts;
    ngx_atomic_t                    dropped[3];   /* ..._spool_drop_e */
    ngx_atomic_t                    refused[3];   /* ..._spool_refusal_e */
    ngx_http_promgate_wal_stats_t   wal;
} ngx_http_promgate_spool_shm_t;


typedef struct ngx_http_promgate_spool_replay_s
    ngx_http_promgate_spool_replay_t;


/* one promgate_spool; the fields below "replay" are per process */
struct ngx_http_promgate_spool_s {
    ngx_http_promgate_zone_t            zone;     /* first: see util.h */
    ngx_str_t                           name;     /* NUL-terminated */
    ngx_http_promgate_spool_shm_t      *sh;
    ngx_http_promgate_segw_t            w;
    off_t                               max_size;
    ngx_msec_t                          max_age;  /* 0: any */
    ngx_str_t                           socket;   /* NUL-terminated */
    ngx_http_promgate_target_t         *target;   /* the one it serves */
    ngx_http_core_srv_conf_t           *server;
    ngx_str_t                           uri;      /* replays go there */
    ngx_http_promgate_kafka_endpoint_t  endpoint; /* the socket */
    u_char                             *file;
    ngx_uint_t                          line;

    ngx_http_promgate_spool_replay_t   *replay;
    ngx_msec_t                          last_log;
};


/* what one writer's segments look like to the replayer */
typedef struct {
    unsigned                        writer;
    uint64_t                        first_seq;    /* of the segment read */
    ngx_fd_t                        fd;
    off_t                           offset;       /* of the next frame */
    off_t                           pend;         /* bytes in the batch */
    ngx_uint_t                      pend_n;       /* records in the batch */
    u_char                         *frame;        /* read, not yet sent */
    size_t                          frame_len;
    size_t                          frame_cap;
    uint64_t                        seq;
    int64_t                         ts;
    ngx_msec_t                      torn_since;
    unsigned                        used:1;
} ngx_http_promgate_spool_cursor_t;


/* the replay state of a spool in the worker that owns it */
struct ngx_http_promgate_spool_replay_s {
    ngx_http_promgate_spool_t         *spool;
    ngx_event_t                        timer;
    ngx_http_promgate_spool_cursor_t  *cursors;   /* [..._SPOOL_CURSORS] */
    ngx_uint_t                         ncursors;
    ngx_http_promgate_kafka_post_t     post;
    ngx_uint_t                         batch_n;   /* records posted */
    uint64_t                           batch_seq; /* the first one's */
    ngx_uint_t                         single;    /* to post one by one */
    u_char                            *dec;       /* 1.0 bodies decoded */
    size_t                             dec_len;
    size_t                             dec_cap;
    ngx_str_t                          hblock;    /* the batch's headers */
    ngx_atomic_uint_t                  segments;  /* created, at the scan */
    ngx_pool_t                        *pool;      /* of the post's head */
    ngx_uint_t                         failures;  /* in a row */
    ngx_fd_t                           state_fd;  /* <name>.replay */
    unsigned                           owner:1;
    unsigned                           posting:1;
    unsigned                           rescan:1;
};


/* a record being replayed, on the receiving side */
typedef struct {
    ngx_http_promgate_forwarder_t   fw;
    ngx_http_promgate_spool_t      *spool;
    ngx_array_t                     targets;
} ngx_http_promgate_spool_req_t;


typedef enum {
    NGX_HTTP_PROMGATE_SPOOL_FULL = 0,
    NGX_HTTP_PROMGATE_SPOOL_ERROR,
    NGX_HTTP_PROMGATE_SPOOL_TOO_LARGE
} ngx_http_promgate_spool_refusal_e;


typedef enum {
    NGX_HTTP_PROMGATE_SPOOL_REJECTED = 0,
    NGX_HTTP_PROMGATE_SPOOL_MAX_AGE,
    NGX_HTTP_PROMGATE_SPOOL_CORRUPT
} ngx_http_promgate_spool_drop_e;


static ngx_int_t ngx_http_promgate_spool_zone_init(
    ngx_http_promgate_zone_t *zone, ngx_uint_t reused);
static void ngx_http_promgate_spool_scan(ngx_http_promgate_spool_t *sp,
    ngx_log_t *log);
static void ngx_http_promgate_spool_step(ngx_event_t *ev);
static void ngx_http_promgate_spool_posted(
    ngx_http_promgate_kafka_post_t *post);
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


static ngx_str_t  ngx_http_promgate_spool_header =
    ngx_string("X-Promgate-Spool");


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
    ngx_uint_t                      i;
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_promgate_spool_t     **spp, *sp;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_promgate_module);

    if (pmcf->spools.nelts == 0) {
        return NGX_OK;
    }

    spp = pmcf->spools.elts;

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


/* ------------------------------------------------------------ process */


static ngx_int_t
ngx_http_promgate_spool_replay_path(ngx_http_promgate_spool_t *sp,
    u_char *buf, size_t size)
{
    u_char  *p;

    p = ngx_snprintf(buf, size - 1, "%V/%V.replay", &sp->w.dir->name,
                     &sp->name);
    *p = '\0';

    return NGX_OK;
}


/*
 * Where replay stands, as saved: per writer, the segment being read and
 * the offset of its next frame.  A frame is u32 count, then per cursor
 * u32 writer, u64 first_seq, u64 offset, then u32 CRC32C of it all.
 */

static void
ngx_http_promgate_spool_state_save(ngx_http_promgate_spool_replay_t *rp)
{
    u_char                            *p;
    uint32_t                           crc;
    ngx_uint_t                         i, n;
    ngx_http_promgate_spool_cursor_t  *c;

    u_char  buf[4 + NGX_HTTP_PROMGATE_SPOOL_CURSORS * 20 + 4];

    if (rp->state_fd == NGX_INVALID_FILE) {
        return;
    }

    p = buf + 4;
    n = 0;

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];

        if (!c->used) {
            continue;
        }

        ngx_memcpy(p, &c->writer, 4);
        ngx_memcpy(p + 4, &c->first_seq, 8);
        ngx_memcpy(p + 12, &c->offset, 8);
        p += 20;
        n++;
    }

    ngx_memcpy(buf, &n, 4);

    crc = pg_crc32c(0, buf, p - buf);
    ngx_memcpy(p, &crc, 4);
    p += 4;

    if (pwrite(rp->state_fd, buf, p - buf, 0) != p - buf
        || ftruncate(rp->state_fd, p - buf) == -1)
    {
        /* replay goes on; a restart may send records twice */
        return;
    }
}


static ngx_http_promgate_spool_cursor_t *
ngx_http_promgate_spool_cursor(ngx_http_promgate_spool_replay_t *rp,
    unsigned writer, ngx_uint_t add)
{
    ngx_uint_t                         i;
    ngx_http_promgate_spool_cursor_t  *c, *free;

    free = NULL;

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];

        if (c->used && c->writer == writer) {
            return c;
        }

        if (!c->used && free == NULL) {
            free = c;
        }
    }

    if (!add) {
        return NULL;
    }

    if (free == NULL) {
        if (rp->ncursors == NGX_HTTP_PROMGATE_SPOOL_CURSORS) {
            return NULL;
        }

        free = &rp->cursors[rp->ncursors++];
    }

    ngx_memzero(free, sizeof(ngx_http_promgate_spool_cursor_t));
    free->used = 1;
    free->writer = writer;
    free->fd = NGX_INVALID_FILE;

    return free;
}


static void
ngx_http_promgate_spool_state_load(ngx_http_promgate_spool_replay_t *rp,
    ngx_log_t *log)
{
    u_char                            *p;
    ssize_t                            n;
    uint32_t                           crc, count, i, writer;
    uint64_t                           first, off;
    ngx_http_promgate_spool_cursor_t  *c;

    u_char  buf[4 + NGX_HTTP_PROMGATE_SPOOL_CURSORS * 20 + 4];

    n = pread(rp->state_fd, buf, sizeof(buf), 0);

    if (n < 8) {
        return;
    }

    ngx_memcpy(&count, buf, 4);

    if (count > NGX_HTTP_PROMGATE_SPOOL_CURSORS
        || (size_t) n != 4 + count * 20 + 4)
    {
        goto bad;
    }

    ngx_memcpy(&crc, buf + n - 4, 4);

    if (pg_crc32c(0, buf, n - 4) != crc) {
        goto bad;
    }

    p = buf + 4;

    for (i = 0; i < count; i++, p += 20) {
        ngx_memcpy(&writer, p, 4);
        ngx_memcpy(&first, p + 4, 8);
        ngx_memcpy(&off, p + 12, 8);

        c = ngx_http_promgate_spool_cursor(rp, writer, 1);
        if (c == NULL) {
            return;
        }

        c->first_seq = first;
        c->offset = (off_t) off;
    }

    return;

bad:

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "promgate: spool \"%V\": its replay state is unreadable; "
                  "replay starts over from its oldest segments (records may "
                  "be sent twice)", &rp->spool->name);
}


/* the segments of the directory, sorted by writer and first seq */

typedef struct {
    pg_wal_segment_t               *segs;
    ngx_uint_t                      n;
} ngx_http_promgate_spool_dir_t;


static ngx_int_t
ngx_http_promgate_spool_list(ngx_http_promgate_spool_t *sp,
    ngx_http_promgate_spool_dir_t *d)
{
    DIR               *dir;
    uint64_t           seq;
    unsigned           writer;
    ngx_uint_t         cap;
    struct dirent     *de;
    pg_wal_segment_t  *more;

    d->segs = NULL;
    d->n = 0;
    cap = 0;

    dir = opendir((char *) sp->w.dir->name.data);
    if (dir == NULL) {
        return NGX_ERROR;
    }

    while ((de = readdir(dir)) != NULL) {
        if (pg_wal_segment_parse(de->d_name, (char *) sp->name.data,
                                 &writer, &seq)
            != 0)
        {
            continue;
        }

        if (d->n == cap) {
            cap = cap ? cap * 2 : 64;
            more = realloc(d->segs, cap * sizeof(pg_wal_segment_t));
            if (more == NULL) {
                break;
            }
            d->segs = more;
        }

        d->segs[d->n].writer = writer;
        d->segs[d->n].first_seq = seq;
        d->n++;
    }

    closedir(dir);

    /* sorts them by writer and first seq (nothing is marked: max seq) */

    if (d->n) {
        pg_wal_mark_deletable(d->segs, d->n, 0);
    }

    return NGX_OK;
}


static u_char *
ngx_http_promgate_spool_segment_path(ngx_http_promgate_spool_t *sp,
    unsigned writer, uint64_t first_seq, u_char *buf, size_t size)
{
    u_char  *p;

    p = ngx_snprintf(buf, size - PG_WAL_NAME_MAX, "%V/", &sp->w.dir->name);

    if (pg_wal_segment_name((char *) p, PG_WAL_NAME_MAX,
                            (char *) sp->name.data, writer, first_seq)
        == 0)
    {
        return NULL;
    }

    return buf;
}


/*
 * At start, in the first worker, under the zone lock, before any worker
 * writes: what is in the directory past the saved replay state (records,
 * bytes), and the next sequence number past every record there.
 */

static void
ngx_http_promgate_spool_scan(ngx_http_promgate_spool_t *sp, ngx_log_t *log)
{
    off_t                              off, size;
    ssize_t                            n;
    uint32_t                           len;
    uint64_t                           seq, max_seq, records, bytes;
    ngx_fd_t                           fd;
    ngx_uint_t                         i;
    ngx_file_info_t                    fi;
    ngx_http_promgate_spool_dir_t      d;
    ngx_http_promgate_spool_replay_t   rp;
    ngx_http_promgate_spool_cursor_t  *c;

    u_char  path[NGX_MAX_PATH];
    u_char  hdr[PG_WAL_FRAME_HEADER + 8];

    ngx_memzero(&rp, sizeof(ngx_http_promgate_spool_replay_t));
    rp.spool = sp;

    rp.cursors = ngx_calloc(NGX_HTTP_PROMGATE_SPOOL_CURSORS
                            * sizeof(ngx_http_promgate_spool_cursor_t), log);
    if (rp.cursors == NULL) {
        return;
    }

    (void) ngx_http_promgate_spool_replay_path(sp, path, sizeof(path));

    rp.state_fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (rp.state_fd != NGX_INVALID_FILE) {
        ngx_http_promgate_spool_state_load(&rp, log);
        (void) ngx_close_file(rp.state_fd);
    }

    max_seq = 0;
    records = 0;
    bytes = 0;

    if (ngx_http_promgate_spool_list(sp, &d) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "promgate: spool directory \"%V\" cannot be read",
                      &sp->w.dir->name);
        ngx_free(rp.cursors);
        return;
    }

    for (i = 0; i < d.n; i++) {

        if (d.segs[i].first_seq > max_seq) {
            max_seq = d.segs[i].first_seq;
        }

        if (ngx_http_promgate_spool_segment_path(sp, d.segs[i].writer,
                                                 d.segs[i].first_seq, path,
                                                 sizeof(path))
            == NULL)
        {
            continue;
        }

        fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

        if (fd == NGX_INVALID_FILE) {
            continue;
        }

        if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
            (void) ngx_close_file(fd);
            continue;
        }

        size = ngx_file_size(&fi);

        /* what replay did of this writer's segments already */

        c = ngx_http_promgate_spool_cursor(&rp, d.segs[i].writer, 0);

        /* the frames: their headers and sequence numbers only */

        for (off = 0; off + (off_t) sizeof(hdr) <= size; /* void */) {
            n = pread(fd, hdr, sizeof(hdr), off);

            if (n != (ssize_t) sizeof(hdr)) {
                break;
            }

            ngx_memcpy(&len, hdr, 4);
            ngx_memcpy(&seq, hdr + PG_WAL_FRAME_HEADER, 8);

            if (len > PG_WAL_MAX_RECORD
                || off + PG_WAL_FRAME_HEADER + (off_t) len > size)
            {
                break;
            }

            if (seq > max_seq) {
                max_seq = seq;
            }

            if (c == NULL || d.segs[i].first_seq > c->first_seq
                || (d.segs[i].first_seq == c->first_seq && off >= c->offset))
            {
                records++;
                bytes += PG_WAL_FRAME_HEADER + len;
            }

            off += PG_WAL_FRAME_HEADER + len;
        }

        (void) ngx_close_file(fd);
    }

    free(d.segs);
    ngx_free(rp.cursors);

    sp->sh->next_seq = max_seq + 1;
    sp->sh->records = records;
    sp->sh->bytes = bytes;

    if (records) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "promgate: spool \"%V\" holds %uL record(s), %uL "
                      "bytes, to replay to forward target \"%V\"",
                      &sp->name, records, bytes, &sp->target->uri);
    }
}


ngx_int_t
ngx_http_promgate_spool_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                         i;
    ngx_http_promgate_spool_t        **spp, *sp;
    ngx_http_promgate_spool_replay_t  *rp;
    ngx_http_promgate_main_conf_t     *pmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_promgate_module);

    if (pmcf == NULL) {
        return NGX_OK;
    }

    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        sp = spp[i];

        if (sp->target == NULL) {
            continue;
        }

        ngx_shmtx_lock(&sp->zone.shpool->mutex);

        if (!sp->sh->scanned) {
            ngx_http_promgate_spool_scan(sp, cycle->log);
            sp->sh->scanned = 1;
        }

        ngx_shmtx_unlock(&sp->zone.shpool->mutex);

        if (ngx_http_promgate_segw_init(&sp->w, cycle) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_queue_init(&sp->endpoint.idle);
        sp->endpoint.nidle = 0;

        rp = ngx_pcalloc(cycle->pool,
                         sizeof(ngx_http_promgate_spool_replay_t));
        if (rp == NULL) {
            return NGX_ERROR;
        }

        rp->cursors = ngx_pcalloc(cycle->pool,
                                  NGX_HTTP_PROMGATE_SPOOL_CURSORS
                                  * sizeof(ngx_http_promgate_spool_cursor_t));
        if (rp->cursors == NULL) {
            return NGX_ERROR;
        }

        rp->spool = sp;
        rp->state_fd = NGX_INVALID_FILE;

        rp->post.endpoint = &sp->endpoint;
        rp->post.timeout = 60000;
        rp->post.log = cycle->log;
        rp->post.handler = ngx_http_promgate_spool_posted;
        rp->post.data = rp;

        rp->timer.handler = ngx_http_promgate_spool_step;
        rp->timer.data = rp;
        rp->timer.log = cycle->log;
        rp->timer.cancelable = 1;

        sp->replay = rp;

        ngx_add_timer(&rp->timer, NGX_HTTP_PROMGATE_SPOOL_IDLE);
    }

    return NGX_OK;
}


static void
ngx_http_promgate_spool_release(ngx_http_promgate_spool_replay_t *rp)
{
    ngx_uint_t                         i;
    ngx_http_promgate_spool_cursor_t  *c;

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];

        if (c->fd != NGX_INVALID_FILE) {
            (void) ngx_close_file(c->fd);
            c->fd = NGX_INVALID_FILE;
        }

        ngx_free(c->frame);
        c->frame = NULL;
        c->frame_cap = 0;
        c->used = 0;
    }

    rp->ncursors = 0;

    if (rp->state_fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(rp->state_fd);
        rp->state_fd = NGX_INVALID_FILE;
    }

    if (rp->owner) {
        rp->owner = 0;
        (void) ngx_atomic_cmp_set(&rp->spool->sh->owner, ngx_pid, 0);
    }
}


void
ngx_http_promgate_spool_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_promgate_spool_t     **spp, *sp;
    ngx_http_promgate_main_conf_t  *pmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_promgate_module);

    if (pmcf == NULL) {
        return;
    }

    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        sp = spp[i];

        if (sp->target == NULL) {
            continue;
        }

        ngx_http_promgate_segw_exit(&sp->w);

        if (sp->replay) {
            ngx_http_promgate_spool_release(sp->replay);
        }
    }
}


/* ------------------------------------------------------------- replay */


/* whether a writer may still append: alive (pid reuse aside) */

static ngx_uint_t
ngx_http_promgate_spool_alive(unsigned pid)
{
    if ((ngx_pid_t) pid == ngx_pid) {
        return 1;
    }

    return kill((ngx_pid_t) pid, 0) == 0 || ngx_errno == NGX_EPERM;
}


/* takes the replay of the spool if nobody alive has it */

static ngx_uint_t
ngx_http_promgate_spool_own(ngx_http_promgate_spool_replay_t *rp)
{
    ngx_atomic_uint_t               owner;
    ngx_http_promgate_spool_shm_t  *sh;

    sh = rp->spool->sh;

    if (rp->owner) {
        if (sh->owner == (ngx_atomic_uint_t) ngx_pid) {
            sh->beat = ngx_current_msec;
            return 1;
        }

        /* taken over while this worker looked dead: let it be */
        rp->owner = 0;
        ngx_http_promgate_spool_release(rp);
        return 0;
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return 0;
    }

    owner = sh->owner;

    /*
     * An owner is left alone while it lives: it hands the replay over
     * itself when it stops (between records), or dies
     */

    if (owner != 0 && ngx_http_promgate_spool_alive((unsigned) owner)) {
        return 0;
    }

    if (!ngx_atomic_cmp_set(&sh->owner, owner, ngx_pid)) {
        return 0;
    }

    sh->beat = ngx_current_msec;
    rp->owner = 1;
    rp->rescan = 1;

    ngx_log_error(NGX_LOG_INFO, rp->timer.log, 0,
                  "promgate: spool \"%V\": this worker replays it",
                  &rp->spool->name);

    return 1;
}


/*
 * The replay state as saved and the directory: a cursor per writer with
 * segments, at its oldest segment not done.
 */

static void
ngx_http_promgate_spool_rescan(ngx_http_promgate_spool_replay_t *rp)
{
    u_char                             path[NGX_MAX_PATH];
    ngx_uint_t                         i;
    ngx_http_promgate_spool_t         *sp;
    ngx_http_promgate_spool_dir_t      d;
    ngx_http_promgate_spool_cursor_t  *c;

    sp = rp->spool;
    rp->rescan = 0;

    if (rp->state_fd == NGX_INVALID_FILE) {
        (void) ngx_http_promgate_spool_replay_path(sp, path, sizeof(path));

        rp->state_fd = ngx_open_file(path, NGX_FILE_RDWR,
                                     NGX_FILE_CREATE_OR_OPEN,
                                     NGX_FILE_DEFAULT_ACCESS);

        if (rp->state_fd != NGX_INVALID_FILE && rp->ncursors == 0) {
            ngx_http_promgate_spool_state_load(rp, rp->timer.log);
        }
    }

    if (ngx_http_promgate_spool_list(sp, &d) != NGX_OK) {
        return;
    }

    /* a writer without a cursor starts at its oldest segment */

    for (i = 0; i < d.n; i++) {
        c = ngx_http_promgate_spool_cursor(rp, d.segs[i].writer, 0);

        if (c == NULL) {
            c = ngx_http_promgate_spool_cursor(rp, d.segs[i].writer, 1);
            if (c == NULL) {
                break;
            }

            c->first_seq = d.segs[i].first_seq;
            c->offset = 0;
            continue;
        }

        /* the saved segment is gone (deleted): the next one */

        if (c->fd == NGX_INVALID_FILE && c->first_seq < d.segs[i].first_seq
            && (i == 0 || d.segs[i - 1].writer != c->writer
                || d.segs[i - 1].first_seq < c->first_seq))
        {
            c->first_seq = d.segs[i].first_seq;
            c->offset = 0;
        }
    }

    /* cursors of writers whose segments are all gone */

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];

        if (c->used && c->fd == NGX_INVALID_FILE && c->frame == NULL) {
            ngx_uint_t  k, found = 0;

            for (k = 0; k < d.n; k++) {
                if (d.segs[k].writer == c->writer
                    && d.segs[k].first_seq >= c->first_seq)
                {
                    found = 1;
                    break;
                }
            }

            if (!found) {
                c->used = 0;
            }
        }
    }

    free(d.segs);
}


/*
 * The cursor's segment is read: it is deleted, and the cursor moves to
 * the writer's next segment, if the writer made one.  NGX_OK: moved;
 * NGX_DECLINED: this is the writer's newest (kept: it may grow, unless
 * its writer is gone, then it goes too and the cursor with it).
 */

static ngx_int_t
ngx_http_promgate_spool_next_segment(ngx_http_promgate_spool_replay_t *rp,
    ngx_http_promgate_spool_cursor_t *c)
{
    u_char                          path[NGX_MAX_PATH];
    uint64_t                        next;
    ngx_uint_t                      i;
    ngx_http_promgate_spool_t      *sp;
    ngx_http_promgate_spool_dir_t   d;

    sp = rp->spool;

    if (ngx_http_promgate_spool_list(sp, &d) != NGX_OK) {
        return NGX_DECLINED;
    }

    next = 0;

    for (i = 0; i < d.n; i++) {
        if (d.segs[i].writer == c->writer
            && d.segs[i].first_seq > c->first_seq)
        {
            next = d.segs[i].first_seq;
            break;
        }
    }

    free(d.segs);

    if (next == 0 && ngx_http_promgate_spool_alive(c->writer)) {
        return NGX_DECLINED;
    }

    if (c->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(c->fd);
        c->fd = NGX_INVALID_FILE;
    }

    if (ngx_http_promgate_spool_segment_path(sp, c->writer, c->first_seq,
                                             path, sizeof(path))
        && unlink((char *) path) == 0)
    {
        (void) ngx_atomic_fetch_add(&sp->sh->wal.segments_deleted, 1);
    }

    if (next == 0) {
        c->used = 0;
        ngx_http_promgate_spool_state_save(rp);
        return NGX_OK;
    }

    c->first_seq = next;
    c->offset = 0;
    c->torn_since = 0;

    ngx_http_promgate_spool_state_save(rp);

    return NGX_OK;
}


/*
 * Reads the cursor's next frame, if it is there whole.  NGX_OK: c->frame;
 * NGX_AGAIN: nothing yet; NGX_ERROR: the cursor is gone.
 */

static ngx_int_t
ngx_http_promgate_spool_read(ngx_http_promgate_spool_replay_t *rp,
    ngx_http_promgate_spool_cursor_t *c)
{
    u_char                      *buf;
    ssize_t                      n;
    uint32_t                     len, crc;
    ngx_uint_t                   tries;
    ngx_http_promgate_spool_t   *sp;
    pg_wal_scan_t                res;

    u_char  path[NGX_MAX_PATH];
    u_char  hdr[PG_WAL_FRAME_HEADER];

    sp = rp->spool;

    for (tries = 0; tries < 64; tries++) {

        if (c->fd == NGX_INVALID_FILE) {
            if (ngx_http_promgate_spool_segment_path(sp, c->writer,
                                                     c->first_seq, path,
                                                     sizeof(path))
                == NULL)
            {
                c->used = 0;
                return NGX_ERROR;
            }

            c->fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

            if (c->fd == NGX_INVALID_FILE) {
                /* gone: the directory says what is next */
                rp->rescan = 1;
                c->used = 0;
                return NGX_ERROR;
            }
        }

        n = pread(c->fd, hdr, sizeof(hdr), c->offset + c->pend);

        if (n == (ssize_t) sizeof(hdr)) {
            ngx_memcpy(&len, hdr, 4);
            ngx_memcpy(&crc, hdr + 4, 4);

            if (len <= PG_WAL_MAX_RECORD) {

                if (c->frame_cap < PG_WAL_FRAME_HEADER + len) {
                    buf = ngx_alloc(PG_WAL_FRAME_HEADER + len,
                                    rp->timer.log);
                    if (buf == NULL) {
                        return NGX_AGAIN;
                    }

                    ngx_free(c->frame);
                    c->frame = buf;
                    c->frame_cap = PG_WAL_FRAME_HEADER + len;
                }

                n = pread(c->fd, c->frame, PG_WAL_FRAME_HEADER + len,
                          c->offset + c->pend);

                if (n == (ssize_t) (PG_WAL_FRAME_HEADER + len)) {

                    pg_wal_scan(c->frame, n, NULL, NULL, &res);

                    c->torn_since = 0;

                    if (res.records == 1 && res.last_seq) {
                        c->frame_len = (size_t) n;
                        c->seq = res.last_seq;
                        ngx_memcpy(&c->ts,
                                   c->frame + PG_WAL_FRAME_HEADER + 8, 8);
                        return NGX_OK;
                    }

                    /* a frame whose CRC does not match: skipped, counted */

                    if (c->pend) {
                        /* after the batch posted */
                        return NGX_AGAIN;
                    }

                    ngx_log_error(NGX_LOG_WARN, rp->timer.log, 0,
                                  "promgate: spool \"%V\": a corrupt record "
                                  "at offset %O of writer %ud's segment "
                                  "%uL is dropped", &sp->name, c->offset,
                                  c->writer, c->first_seq);

                    (void) ngx_atomic_fetch_add(
                        &sp->sh->dropped[NGX_HTTP_PROMGATE_SPOOL_CORRUPT], 1);
                    (void) ngx_atomic_fetch_add(&sp->sh->records,
                                                (ngx_atomic_uint_t) -1);
                    (void) ngx_atomic_fetch_add(&sp->sh->bytes,
                                                -(ngx_atomic_int_t) n);

                    c->offset += n;
                    continue;
                }
            }
        }

        /* the end of what is there; a partial frame (torn or being written) */

        if (c->pend) {
            /* the batch's records are not done with yet */
            return NGX_AGAIN;
        }

        if (n > 0) {
            if (c->torn_since == 0) {
                c->torn_since = ngx_current_msec;
            }

            if (ngx_http_promgate_spool_alive(c->writer)
                && ngx_current_msec - c->torn_since
                   < NGX_HTTP_PROMGATE_SPOOL_TORN)
            {
                return NGX_AGAIN;
            }

            ngx_log_error(NGX_LOG_WARN, rp->timer.log, 0,
                          "promgate: spool \"%V\": writer %ud's segment %uL "
                          "ends with a partial record at offset %O (its "
                          "process was killed while writing it; it was not "
                          "acknowledged)", &sp->name, c->writer,
                          c->first_seq, c->offset);

            (void) ngx_atomic_fetch_add(&sp->sh->wal.truncations, 1);
        }

        if (ngx_http_promgate_spool_next_segment(rp, c) != NGX_OK) {
            return NGX_AGAIN;
        }

        if (!c->used) {
            return NGX_ERROR;
        }
    }

    return NGX_AGAIN;
}


/*
 * The records of the batch are done with (stored, or dropped): each
 * cursor moves past its part of it.
 */

static off_t
ngx_http_promgate_spool_commit(ngx_http_promgate_spool_replay_t *rp)
{
    off_t                              bytes;
    ngx_uint_t                         i;
    ngx_http_promgate_spool_shm_t     *sh;
    ngx_http_promgate_spool_cursor_t  *c;

    sh = rp->spool->sh;
    bytes = 0;

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];

        if (!c->used || c->pend_n == 0) {
            continue;
        }

        c->offset += c->pend;
        bytes += c->pend;

        (void) ngx_atomic_fetch_add(&sh->records,
                                    -(ngx_atomic_int_t) c->pend_n);
        (void) ngx_atomic_fetch_add(&sh->bytes, -(ngx_atomic_int_t) c->pend);

        c->pend = 0;
        c->pend_n = 0;
    }

    rp->batch_n = 0;

    ngx_http_promgate_spool_state_save(rp);

    return bytes;
}


/* the batch goes back: its records are read again for the next post */

static void
ngx_http_promgate_spool_uncommit(ngx_http_promgate_spool_replay_t *rp)
{
    ngx_uint_t                         i;
    ngx_http_promgate_spool_cursor_t  *c;

    for (i = 0; i < rp->ncursors; i++) {
        c = &rp->cursors[i];
        c->pend = 0;
        c->pend_n = 0;
        c->frame_len = 0;
    }

    rp->batch_n = 0;
}


/* a record read goes into the batch */

static void
ngx_http_promgate_spool_take(ngx_http_promgate_spool_replay_t *rp,
    ngx_http_promgate_spool_cursor_t *c)
{
    c->pend += c->frame_len;
    c->pend_n++;
    c->frame_len = 0;

    if (rp->batch_n++ == 0) {
        rp->batch_seq = c->seq;
    }
}


/* a record dropped before it is posted (corrupt, too old) */

static void
ngx_http_promgate_spool_drop(ngx_http_promgate_spool_replay_t *rp,
    ngx_http_promgate_spool_cursor_t *c, ngx_uint_t why)
{
    (void) ngx_atomic_fetch_add(&rp->spool->sh->dropped[why], 1);

    ngx_http_promgate_spool_take(rp, c);
    (void) ngx_http_promgate_spool_commit(rp);
}


/* the request line and headers of a record's replay */

static ngx_int_t
ngx_http_promgate_spool_head(ngx_http_promgate_spool_replay_t *rp,
    pg_spool_record_t *rec, size_t body_len)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_promgate_spool_t  *sp;
    const pg_spool_header_t    *h;

    sp = rp->spool;

    len = sizeof("POST  HTTP/1.1\r\nHost: promgate-spool\r\n"
                 ": 1\r\nContent-Length: \r\n\r\n") + sp->uri.len
          + ngx_http_promgate_spool_header.len + NGX_SIZE_T_LEN;

    for (i = 0; i < rec->nheaders; i++) {
        len += rec->headers[i].name.len + rec->headers[i].value.len + 4;
    }

    p = ngx_pnalloc(rp->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    rp->post.head.data = p;

    p = ngx_sprintf(p, "POST %V HTTP/1.1\r\nHost: promgate-spool\r\n"
                    "%V: %ud\r\nContent-Length: %uz\r\n", &sp->uri,
                    &ngx_http_promgate_spool_header, rec->version,
                    body_len);

    for (i = 0; i < rec->nheaders; i++) {
        h = &rec->headers[i];

        /* the connection's own are this request's */

        if ((h->name.len == 4
             && ngx_strncasecmp((u_char *) h->name.data, (u_char *) "Host", 4)
                == 0)
            || (h->name.len == 10
                && ngx_strncasecmp((u_char *) h->name.data,
                                   (u_char *) "Connection", 10) == 0)
            || (h->name.len == 10
                && ngx_strncasecmp((u_char *) h->name.data,
                                   (u_char *) "Keep-Alive", 10) == 0)
            || (h->name.len == ngx_http_promgate_spool_header.len
                && ngx_strncasecmp((u_char *) h->name.data,
                                   ngx_http_promgate_spool_header.data,
                                   h->name.len) == 0))
        {
            continue;
        }

        p = ngx_cpymem(p, h->name.data, h->name.len);
        *p++ = ':';
        *p++ = ' ';
        p = ngx_cpymem(p, h->value.data, h->value.len);
        *p++ = '\r';
        *p++ = '\n';
    }

    *p++ = '\r';
    *p++ = '\n';

    rp->post.head.len = p - rp->post.head.data;

    return NGX_OK;
}


static void
ngx_http_promgate_spool_later(ngx_http_promgate_spool_replay_t *rp,
    ngx_msec_t delay)
{
    if (rp->timer.timer_set) {
        ngx_del_timer(&rp->timer);
    }

    ngx_add_timer(&rp->timer, delay);
}


/*
 * Appends a remote write 1.0 body, decoded, to the batch: two serialized
 * WriteRequests one after the other are one WriteRequest with both series
 * lists, in that order.  NGX_DECLINED: it does not fit (or is not snappy).
 */

static ngx_int_t
ngx_http_promgate_spool_batch_add(ngx_http_promgate_spool_replay_t *rp,
    pg_spool_record_t *rec)
{
    u_char  *p;
    size_t   n, cap;

    if (pg_snappy_decoded_length(rec->body, rec->body_len,
                                 NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE, &n)
        != PG_SNAPPY_OK)
    {
        return NGX_DECLINED;
    }

    if (rp->batch_n && rp->dec_len + n > NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE)
    {
        return NGX_DECLINED;
    }

    if (rp->dec_len + n > rp->dec_cap) {
        cap = ngx_max(rp->dec_len + n, 2 * rp->dec_cap);

        p = ngx_alloc(cap, rp->timer.log);
        if (p == NULL) {
            return NGX_DECLINED;
        }

        if (rp->dec_len) {
            ngx_memcpy(p, rp->dec, rp->dec_len);
        }

        ngx_free(rp->dec);
        rp->dec = p;
        rp->dec_cap = cap;
    }

    if (pg_snappy_decode(rec->body, rec->body_len, rp->dec + rp->dec_len, n)
        != PG_SNAPPY_OK)
    {
        return NGX_DECLINED;
    }

    rp->dec_len += n;

    return NGX_OK;
}


/*
 * One replay step: the records in sequence order, merged across the
 * writers; consecutive remote write 1.0 records with the same headers go
 * in one post (up to NGX_HTTP_PROMGATE_SPOOL_BATCH records or
 * NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE decoded bytes), a 2.0 record alone.
 */

static void
ngx_http_promgate_spool_step(ngx_event_t *ev)
{
    ngx_http_promgate_spool_replay_t *rp = ev->data;

    u_char                            *body;
    size_t                             blen;
    int64_t                            now;
    ngx_int_t                          rc;
    ngx_uint_t                         i, steps, v1;
    ngx_str_t                          hb;
    pg_spool_record_t                  rec, first;
    ngx_http_promgate_spool_t         *sp;
    ngx_http_promgate_spool_cursor_t  *c, *best;

    pg_spool_header_t  hdrs[PG_SPOOL_MAX_HEADERS];

    sp = rp->spool;

    if (rp->posting) {
        return;
    }

    if (!ngx_http_promgate_spool_own(rp)) {

        if (ngx_exiting || ngx_terminate || ngx_quit) {
            ngx_http_promgate_spool_release(rp);
            return;
        }

        ngx_http_promgate_spool_later(rp, NGX_HTTP_PROMGATE_SPOOL_IDLE);
        return;
    }

    /* a worker that stops hands the replay over between posts */

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        ngx_http_promgate_spool_release(rp);
        return;
    }

    if (rp->pool) {
        ngx_destroy_pool(rp->pool);
    }

    rp->pool = ngx_create_pool(4096, ev->log);
    if (rp->pool == NULL) {
        ngx_http_promgate_spool_later(rp, 1000);
        return;
    }

    rp->batch_n = 0;
    rp->dec_len = 0;
    body = NULL;
    blen = 0;
    v1 = 0;
    ngx_memzero(&first, sizeof(pg_spool_record_t));

    for (steps = 0; steps < 1024; steps++) {

        /*
         * A writer with a segment the cursors do not know yet (its first,
         * or one after a restart) may hold the next record: the directory
         * is read again before a batch begins.
         */

        if (rp->batch_n == 0
            && (rp->rescan || rp->ncursors == 0
                || rp->segments != sp->sh->wal.segments_created))
        {
            rp->segments = sp->sh->wal.segments_created;
            ngx_http_promgate_spool_rescan(rp);
        }

        best = NULL;

        for (i = 0; i < rp->ncursors; i++) {
            c = &rp->cursors[i];

            if (!c->used) {
                continue;
            }

            if (c->frame_len == 0) {
                rc = ngx_http_promgate_spool_read(rp, c);

                if (rc != NGX_OK) {
                    continue;
                }
            }

            if (best == NULL || c->seq < best->seq) {
                best = c;
            }
        }

        if (best == NULL) {
            break;
        }

        if (pg_spool_decode(best->frame + PG_WAL_FRAME_HEADER,
                            best->frame_len - PG_WAL_FRAME_HEADER, hdrs, &rec)
            != 0)
        {
            if (rp->batch_n) {
                break;
            }

            ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                          "promgate: spool \"%V\": record %uL cannot be "
                          "decoded; dropped", &sp->name, best->seq);
            ngx_http_promgate_spool_drop(rp, best,
                                         NGX_HTTP_PROMGATE_SPOOL_CORRUPT);
            continue;
        }

        now = (int64_t) ngx_time() * 1000 + (int64_t) ngx_timeofday()->msec;

        if (sp->max_age && now - rec.ts > (int64_t) sp->max_age) {
            if (rp->batch_n) {
                break;
            }

            ngx_http_promgate_spool_drop(rp, best,
                                         NGX_HTTP_PROMGATE_SPOOL_MAX_AGE);
            continue;
        }

        /* the headers' bytes: those between the fixed part and the body */

        hb.data = best->frame + PG_WAL_FRAME_HEADER + 24;
        hb.len = rec.body - hb.data;

        if (rp->batch_n == 0) {
            sp->sh->oldest_ts = (ngx_atomic_uint_t) rec.ts;

            first = rec;

            /* what the head needs outlives the cursor's frame buffer */

            first.headers = ngx_palloc(rp->pool, rec.nheaders
                                                 * sizeof(pg_spool_header_t));
            rp->hblock.data = ngx_pnalloc(rp->pool, hb.len + 1);

            if (first.headers == NULL || rp->hblock.data == NULL) {
                break;
            }

            ngx_memcpy(rp->hblock.data, hb.data, hb.len);
            rp->hblock.len = hb.len;

            for (i = 0; i < rec.nheaders; i++) {
                ((pg_spool_header_t *) first.headers)[i].name.data =
                    rp->hblock.data
                    + (rec.headers[i].name.data - hb.data);
                ((pg_spool_header_t *) first.headers)[i].name.len =
                    rec.headers[i].name.len;
                ((pg_spool_header_t *) first.headers)[i].value.data =
                    rp->hblock.data
                    + (rec.headers[i].value.data - hb.data);
                ((pg_spool_header_t *) first.headers)[i].value.len =
                    rec.headers[i].value.len;
            }

            v1 = (rec.version == 1 && rp->single == 0);

            if (!v1 || ngx_http_promgate_spool_batch_add(rp, &rec)
                       != NGX_OK)
            {
                /* alone, as it is */
                body = ngx_pnalloc(rp->pool, rec.body_len + 1);
                if (body == NULL) {
                    break;
                }

                ngx_memcpy(body, rec.body, rec.body_len);
                blen = rec.body_len;
                v1 = 0;

                ngx_http_promgate_spool_take(rp, best);
                break;
            }

            ngx_http_promgate_spool_take(rp, best);

            continue;
        }

        /* a 1.0 record with the same headers joins the batch */

        if (rec.version != 1 || rp->batch_n >= NGX_HTTP_PROMGATE_SPOOL_BATCH
            || hb.len != rp->hblock.len
            || ngx_memcmp(hb.data, rp->hblock.data, hb.len) != 0
            || ngx_http_promgate_spool_batch_add(rp, &rec) != NGX_OK)
        {
            break;
        }

        ngx_http_promgate_spool_take(rp, best);
    }

    if (rp->batch_n == 0) {
        sp->sh->oldest_ts = 0;

        /* nothing there now: look again soon, and at the directory */
        rp->rescan = 1;
        ngx_http_promgate_spool_later(rp, NGX_HTTP_PROMGATE_SPOOL_IDLE);
        return;
    }

    if (v1) {
        blen = pg_snappy_max_encoded(rp->dec_len);
        body = ngx_pnalloc(rp->pool, blen);

        if (body == NULL
            || pg_snappy_encode(rp->dec, rp->dec_len, body, &blen)
               != PG_SNAPPY_OK)
        {
            ngx_http_promgate_spool_uncommit(rp);
            ngx_http_promgate_spool_later(rp, 1000);
            return;
        }
    }

    if (ngx_http_promgate_spool_head(rp, &first, blen) != NGX_OK) {
        ngx_http_promgate_spool_uncommit(rp);
        ngx_http_promgate_spool_later(rp, 1000);
        return;
    }

    rp->post.body.data = body;
    rp->post.body.len = blen;
    rp->posting = 1;

    if (ngx_http_promgate_kafka_post_start(&rp->post) != NGX_OK) {
        ngx_http_promgate_spool_posted(&rp->post);
    }
}


/* the answer of the write location to a replay */

static void
ngx_http_promgate_spool_posted(ngx_http_promgate_kafka_post_t *post)
{
    ngx_http_promgate_spool_replay_t *rp = post->data;

    ngx_msec_t                  delay;
    ngx_uint_t                  status, n;
    ngx_http_promgate_spool_t  *sp;

    sp = rp->spool;
    status = post->status;
    n = rp->batch_n;

    rp->posting = 0;

    if (!rp->owner || n == 0) {
        ngx_http_promgate_spool_uncommit(rp);
        ngx_http_promgate_spool_later(rp, NGX_HTTP_PROMGATE_SPOOL_IDLE);
        return;
    }

    if (rp->single) {
        rp->single--;
    }

    if (status >= 200 && status < 300) {
        rp->failures = 0;
        (void) ngx_atomic_fetch_add(&sp->sh->replayed, n);
        (void) ngx_atomic_fetch_add(&sp->sh->replay_posts, 1);
        (void) ngx_atomic_fetch_add(&sp->sh->replayed_bytes,
                                    ngx_http_promgate_spool_commit(rp));
        ngx_http_promgate_spool_later(rp, 0);
        return;
    }

    if (status == 400 || status == 409 || status == 413 || status == 415) {
        rp->failures = 0;

        if (n > 1) {
            /* which one is bad: they go one by one now */
            rp->single = n;
            ngx_http_promgate_spool_uncommit(rp);
            ngx_http_promgate_spool_later(rp, 0);
            return;
        }

        ngx_log_error(NGX_LOG_WARN, rp->timer.log, 0,
                      "promgate: spool \"%V\": forward target \"%V\" "
                      "refused record %uL (status %ui): dropped, not "
                      "retried", &sp->name, &sp->target->uri, rp->batch_seq,
                      status);

        (void) ngx_atomic_fetch_add(
            &sp->sh->dropped[NGX_HTTP_PROMGATE_SPOOL_REJECTED], 1);
        (void) ngx_http_promgate_spool_commit(rp);
        ngx_http_promgate_spool_later(rp, 0);
        return;
    }

    /* the target is still down: the same records, after a backoff */

    ngx_http_promgate_spool_uncommit(rp);

    (void) ngx_atomic_fetch_add(&sp->sh->replay_errors, 1);

    delay = (ngx_msec_t) pg_backoff_ms(200, NGX_HTTP_PROMGATE_SPOOL_BACKOFF,
                                       rp->failures,
                                       (uint32_t) ngx_random());
    if (delay < 100) {
        delay = 100;
    }

    if (rp->failures < 16) {
        rp->failures++;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, rp->timer.log, 0,
                   "promgate spool \"%V\": replay status %ui, again in "
                   "%Mms", &sp->name, status, delay);

    ngx_http_promgate_spool_later(rp, delay);
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


static void
ngx_http_promgate_spool_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_array_t *spools = data;

    int64_t                         age, now, oldest;
    ngx_uint_t                      i, k, m;
    ngx_atomic_int_t                v;
    ngx_http_promgate_label_t       l[3];
    ngx_http_promgate_spool_t     **spp, *sp;

    static char  *drops[] = { "rejected", "max_age", "corrupt" };
    static char  *refusals[] = { "full", "error", "too_large" };

    spp = spools->elts;
    now = (int64_t) ngx_time() * 1000;

    ngx_http_promgate_text_family(t, "promgate_spool_records", "gauge",
                                  "Writes in the spool, not yet replayed.");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "spool", (char *) sp->name.data);
        l[1].name = "target";
        l[1].value = sp->target->uri;

        v = (ngx_atomic_int_t) sp->sh->records;
        ngx_http_promgate_text_sample(t, "promgate_spool_records", l, 2,
                                      "%uA", v > 0 ? (ngx_atomic_uint_t) v
                                                   : 0);
    }

    ngx_http_promgate_text_family(t, "promgate_spool_bytes", "gauge",
                                  "Bytes in the spool, not yet replayed.");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "spool", (char *) sp->name.data);
        l[1].name = "target";
        l[1].value = sp->target->uri;

        v = (ngx_atomic_int_t) sp->sh->bytes;
        ngx_http_promgate_text_sample(t, "promgate_spool_bytes", l, 2,
                                      "%uA", v > 0 ? (ngx_atomic_uint_t) v
                                                   : 0);
    }

    ngx_http_promgate_text_family(t, "promgate_spool_oldest_age_seconds",
                                  "gauge", "Age of the oldest record "
                                  "waiting for replay (0: none).");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "spool", (char *) sp->name.data);
        l[1].name = "target";
        l[1].value = sp->target->uri;

        oldest = (int64_t) sp->sh->oldest_ts;
        age = ((ngx_atomic_int_t) sp->sh->records > 0 && oldest > 0
               && now > oldest) ? now - oldest : 0;

        ngx_http_promgate_text_sample(t, "promgate_spool_oldest_age_seconds",
                                      l, 2, "%L.%03L", age / 1000,
                                      age % 1000);
    }

    ngx_http_promgate_text_family(t, "promgate_spool_dropped_records_total",
                                  "counter", "Spooled writes dropped: the "
                                  "target refused them as bad (rejected), "
                                  "older than max_age, or corrupt on "
                                  "disk.");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        for (k = 0; k < 3; k++) {
            ngx_http_promgate_label_cstr(&l[0], "spool",
                                         (char *) sp->name.data);
            l[1].name = "target";
            l[1].value = sp->target->uri;
            ngx_http_promgate_label_cstr(&l[2], "reason", drops[k]);

            ngx_http_promgate_text_sample(t,
                                      "promgate_spool_dropped_records_total",
                                      l, 3, "%uA", sp->sh->dropped[k]);
        }
    }

    ngx_http_promgate_text_family(t, "promgate_spool_refused_total",
                                  "counter", "Writes the spool could not "
                                  "take (the target then counts as failed "
                                  "for them): full (max_size), a write "
                                  "error, too large for a record.");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        for (k = 0; k < 3; k++) {
            ngx_http_promgate_label_cstr(&l[0], "spool",
                                         (char *) sp->name.data);
            l[1].name = "target";
            l[1].value = sp->target->uri;
            ngx_http_promgate_label_cstr(&l[2], "reason", refusals[k]);

            ngx_http_promgate_text_sample(t, "promgate_spool_refused_total",
                                          l, 3, "%uA", sp->sh->refused[k]);
        }
    }

    for (m = 0; m < sizeof(ngx_http_promgate_spool_metrics)
                    / sizeof(ngx_http_promgate_metric_t); m++)
    {
        ngx_http_promgate_text_family(t,
                                      ngx_http_promgate_spool_metrics[m].name,
                                      ngx_http_promgate_spool_metrics[m].type,
                                      ngx_http_promgate_spool_metrics[m].help);

        for (i = 0; i < spools->nelts; i++) {
            sp = spp[i];
            if (sp->target == NULL) {
                continue;
            }

            ngx_http_promgate_label_cstr(&l[0], "spool",
                                         (char *) sp->name.data);
            l[1].name = "target";
            l[1].value = sp->target->uri;

            ngx_http_promgate_text_sample(t,
                         ngx_http_promgate_spool_metrics[m].name, l, 2, "%uA",
                         *(ngx_atomic_t *) ((u_char *) sp->sh
                             + ngx_http_promgate_spool_metrics[m].offset));
        }
    }

    ngx_http_promgate_text_family(t, "promgate_spool_owner", "gauge",
                                  "The pid of the worker that replays the "
                                  "spool (0: none).");

    for (i = 0; i < spools->nelts; i++) {
        sp = spp[i];
        if (sp->target == NULL) {
            continue;
        }

        ngx_http_promgate_label_cstr(&l[0], "spool", (char *) sp->name.data);
        l[1].name = "target";
        l[1].value = sp->target->uri;

        ngx_http_promgate_text_sample(t, "promgate_spool_owner", l, 2, "%uA",
                                      sp->sh->owner);
    }
}
