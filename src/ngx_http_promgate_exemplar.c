
/*
 * promgate: the exemplar store (a shared zone holding the ring of
 * src/core/pg_exemplar.c) and Prometheus' /api/v1/query_exemplars over it.
 *
 * Exemplars of a write are copied out of the decoded body while it is
 * validated and inserted only once the write is answered 2xx.
 */


#include "ngx_http_promgate_module.h"
#include "pg_exemplar.h"
#include "pg_promql.h"
#include "pg_time.h"
#include "pg_wal.h"


/* exemplars inserted per hold of the zone lock (a few hundred µs at most) */
#define NGX_HTTP_PROMGATE_EXEMPLAR_BATCH  64


#define NGX_HTTP_PROMGATE_EXEMPLAR_MAGIC   0x50475845u    /* "PGXE" */
#define NGX_HTTP_PROMGATE_EXEMPLAR_LAYOUT  1


typedef struct {
    pg_label_t                     *series;
    size_t                          nseries;
    pg_label_t                     *labels;
    size_t                          nlabels;
    double                          value;
    int64_t                         ts;
    pg_str_t                        tenant;   /* the request's, or its */
                                              /*   series' tenant label */
} ngx_http_promgate_exemplar_t;


/*
 * Limits of one query (promgate_exemplar_query).  A query finds its
 * series in slices under the zone lock: each holds it for at most
 * NGX_HTTP_PROMGATE_QUERY_SLICE, copying the series found and their
 * exemplars out of the zone, and the worker then serves its other events
 * (a 1 ms timer, so that writers in the other workers get the lock) before
 * the next one; a query costing minutes of CPU delays no write by more
 * than a slice.  The answer is then written from the copies without the
 * lock, a buffer at a time, and sent as it is written (chunked when it
 * takes more than one buffer): at most NGX_HTTP_PROMGATE_QUERY_BUFS
 * buffers wait for the client, and after a slice of writing the worker
 * serves its other events (posted, no timer) before it goes on.
 */
#define NGX_HTTP_PROMGATE_QUERY_SLICE          2000000      /* ns */

/* series examined between two looks at the clock */
#define NGX_HTTP_PROMGATE_QUERY_SCAN_STEP      8

/*
 * The answer's buffers: one is filled up to BUF - SLACK bytes, and the
 * piece that crosses that (the labels of a series, or one exemplar) goes
 * in whole; a piece larger than the slack makes its buffer grow.
 */
#define NGX_HTTP_PROMGATE_QUERY_BUF            65536
#define NGX_HTTP_PROMGATE_QUERY_SLACK          16384
#define NGX_HTTP_PROMGATE_QUERY_BUFS           4

/*
 * The copies of a query's series and its answer's buffers take blocks of
 * NGX_HTTP_PROMGATE_QUERY_BUF bytes, which the worker keeps for the next
 * query (up to NGX_HTTP_PROMGATE_QUERY_KEEP of them, 4 MB).  Freed, their
 * memory went back to the kernel after every large answer and was faulted
 * in again by the next: 500 page faults a 2.8 MB answer, a third of the
 * worker's CPU time for it.
 */
#define NGX_HTTP_PROMGATE_QUERY_KEEP           64

/*
 * A gateway asks its peers (promgate_exemplar_peer) with a form body that
 * starts with this mark; a query so marked is answered from the zone only
 * (never from the peers: no loops, whatever the configuration), in the
 * peer format of pg_exemplar.h, with this type.  Over its limits a peer
 * answers 409 (not 422: the forwarder takes a 4xx other than 400/409 for
 * a misconfigured target).
 */
#define NGX_HTTP_PROMGATE_PEER_MARK   "promgate_peer=1&"
#define NGX_HTTP_PROMGATE_PEER_TYPE   "application/x-promgate-exemplars"
#define NGX_HTTP_PROMGATE_PEER_LIMIT  NGX_HTTP_CONFLICT


typedef struct ngx_http_promgate_block_s  ngx_http_promgate_block_t;

struct ngx_http_promgate_block_s {
    ngx_http_promgate_block_t      *next;
    void                           *align;      /* the data that follows */
};


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_promgate_exzone_t     *zctx;
    ngx_http_promgate_loc_conf_t   *plcf;           /* its limits */
    pg_selector_set_t               set;
    pg_str_t                        tenant;
    int64_t                         start_ms;
    int64_t                         end_ms;
    uint64_t                        deadline;       /* ns, monotonic */
    uint32_t                        pos;            /* next series id */
    ngx_array_t                     hits;           /* pg_exring_hit_t * */
    ngx_uint_t                      next;           /* next hit to write */
    pg_exring_hit_pos_t             hpos;           /*   and where in it */
    ngx_uint_t                      series;         /* series written */
    pg_allocator_t                  alloc;          /* from blocks */
    ngx_http_promgate_block_t      *blocks;         /* taken */
    u_char                         *block_pos;      /* free in the last */
    u_char                         *block_end;
    pg_allocator_t                  scratch_alloc;
    void                           *scratch;
    size_t                          scratch_size;
    ngx_chain_t                    *free;           /* answer buffers */
    ngx_chain_t                    *busy;
    ngx_uint_t                      nbufs;
    ngx_event_t                     resume;
    u_char                          err[160];       /* a limit's message */
    size_t                          err_len;
    ngx_http_promgate_forwarder_t   fw;             /* asking the peers */
    ngx_str_t                      *peer_types;     /* their answers' */
    pg_json_buf_t                   warnings;       /* peers failed */
    ngx_uint_t                      status;         /* of a failed merge */
    const char                     *err_type;
    unsigned                        peer:1;         /* asked by a peer */
    unsigned                        scanned:1;      /* the local scan */
    unsigned                        sending:1;      /* the answer */
    unsigned                        header_sent:1;
    unsigned                        done:1;         /* written */
} ngx_http_promgate_query_ctx_t;


static ngx_int_t ngx_http_promgate_exzone_init(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused);
static uint64_t ngx_http_promgate_exzone_seed(void);
static ngx_int_t ngx_http_promgate_exzone_values(
    ngx_http_promgate_zone_t *zone, void *values);
static void ngx_http_promgate_query_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_query(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_query_send(ngx_http_request_t *r,
    ngx_uint_t status, u_char *data, size_t len);
static ngx_int_t ngx_http_promgate_query_error(ngx_http_request_t *r,
    const char *msg, size_t len);
static int ngx_http_promgate_query_match(void *ctx, const pg_label_t *labels,
    size_t n);
static ngx_uint_t ngx_http_promgate_query_braces(const u_char *p,
    size_t len);
static ngx_int_t ngx_http_promgate_query_too_many(ngx_http_request_t *r);
static ngx_int_t ngx_http_promgate_query_start(ngx_http_request_t *r,
    pg_selector_set_t *set, pg_query_params_t *qp, ngx_uint_t peer);
static ngx_int_t ngx_http_promgate_query_ask(
    ngx_http_promgate_query_ctx_t *ctx, pg_query_params_t *qp);
static ngx_uint_t ngx_http_promgate_query_peers_decide(
    ngx_http_promgate_forwarder_t *fw);
static void ngx_http_promgate_query_peer_done(
    ngx_http_promgate_forwarder_t *fw, ngx_http_promgate_fwd_t *f,
    ngx_http_request_t *sr);
static ngx_int_t ngx_http_promgate_query_peers_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision);
static ngx_int_t ngx_http_promgate_query_merge(
    ngx_http_promgate_query_ctx_t *ctx);
static ngx_int_t ngx_http_promgate_query_peer_failed(
    ngx_http_promgate_query_ctx_t *ctx, ngx_http_promgate_fwd_t *f,
    const char *why);
static int ngx_http_promgate_query_peer_hit(void *data, pg_exring_hit_t *hit);
static ngx_int_t ngx_http_promgate_query_limits(
    ngx_http_promgate_query_ctx_t *ctx, ngx_uint_t series,
    ngx_uint_t exemplars);
static ngx_int_t ngx_http_promgate_query_peer_send(
    ngx_http_promgate_query_ctx_t *ctx);
static ngx_int_t ngx_http_promgate_query_run(
    ngx_http_promgate_query_ctx_t *ctx);
static ngx_int_t ngx_http_promgate_query_scan(
    ngx_http_promgate_query_ctx_t *ctx, uint64_t until);
static ngx_int_t ngx_http_promgate_query_write(
    ngx_http_promgate_query_ctx_t *ctx, uint64_t until);
static ngx_int_t ngx_http_promgate_query_fill(
    ngx_http_promgate_query_ctx_t *ctx, ngx_buf_t *b);
static ngx_int_t ngx_http_promgate_query_wait(
    ngx_http_promgate_query_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_promgate_query_resume(ngx_event_t *ev);
static void ngx_http_promgate_query_writer(ngx_http_request_t *r);
static void ngx_http_promgate_query_cleanup(void *data);
static int ngx_http_promgate_query_hit(void *data, pg_exring_hit_t *hit);
static void *ngx_http_promgate_query_scratch(void *data, size_t size);
static void *ngx_http_promgate_query_alloc(void *data, size_t size);
static u_char *ngx_http_promgate_query_block(
    ngx_http_promgate_query_ctx_t *ctx);
static int ngx_http_promgate_query_hit_cmp(const void *a, const void *b);
static uint64_t ngx_http_promgate_query_clock(void);
static ngx_int_t ngx_http_promgate_query_fail(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *msg, size_t len);


/* the worker's spare blocks for queries */
static ngx_http_promgate_block_t  *ngx_http_promgate_query_spare;
static ngx_uint_t                  ngx_http_promgate_query_nspare;


static ngx_http_promgate_zone_kind_t  ngx_http_promgate_exemplar_kind = {
    "promgate_exemplar",
    "exemplar zone",
    NGX_HTTP_PROMGATE_EXEMPLAR_MAGIC,
    NGX_HTTP_PROMGATE_EXEMPLAR_LAYOUT,
    sizeof(ngx_http_promgate_exshm_t),
    ngx_http_promgate_exzone_init
};


/* ------------------------------------------------------------ the zone */


char *
ngx_http_promgate_exemplar_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    size_t                          size, need;
    ngx_str_t                      *value, name;
    ngx_int_t                       max;
    ngx_uint_t                      i;
    ngx_http_promgate_exzone_t     *ctx;
    ngx_http_promgate_main_conf_t  *pmcf = conf;

    value = cf->args->elts;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_promgate_exzone_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_promgate_zone_arg(cf, &value[1], "exemplar zone",
                                   "exemplars:64m", &name, &size)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    max = 100000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max=", 4) == 0) {
            max = ngx_atoi(value[i].data + 4, value[i].len - 4);

            if (max <= 0 || max > 0x7ffffffe) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max \"%V\": expected the number "
                                   "of exemplars to keep, such as "
                                   "max=100000", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        switch (ngx_http_promgate_segw_param(cf, &ctx->w, &value[i],
                                             "wal=")) {
        case NGX_OK:
            continue;

        case NGX_DECLINED:
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" (expected max=, "
                               "wal=, fsync= or segment=)", &value[i]);
            return NGX_CONF_ERROR;

        default:
            return NGX_CONF_ERROR;
        }
    }

    /* the ring, the WAL sequence map and the slab allocator's own use */

    need = pg_exring_min_size((uint32_t) max) + (size_t) max * 8;
    need += need / 64 + 16 * ngx_pagesize;

    if (size < need) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "exemplar zone \"%V\" is too small for max=%i "
                           "exemplars: make it at least %uzk",
                           &name, max, need / 1024 + 1);
        return NGX_CONF_ERROR;
    }

    /* NUL-terminated: the WAL's file names are built from it */

    ctx->name.data = ngx_pnalloc(cf->pool, name.len + 1);
    if (ctx->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ctx->name.data, name.data, name.len);
    ctx->name.data[name.len] = '\0';
    ctx->name.len = name.len;
    ctx->max = (uint32_t) max;

    ctx->w.name = ctx->name;
    ctx->w.what = "exemplar WAL of zone";
    ctx->w.kind = "exemplar WAL";
    ctx->w.owner = "zone";
    ctx->w.dirparam = "wal=";
    ctx->w.loss = "exemplars are still served from memory but may not "
                  "survive a restart";

    if (ngx_http_promgate_zone_add(cf, &name, size,
                                   &ngx_http_promgate_exemplar_kind,
                                   &ctx->zone, &pmcf->exemplar_zones)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The kind's part of a zone's initialization: the ring and the WAL
 * sequence map, built anew, or attached as the previous cycle left them.
 */

static ngx_int_t
ngx_http_promgate_exzone_init(ngx_http_promgate_zone_t *zone,
    ngx_uint_t reused)
{
    ngx_http_promgate_exzone_t *ctx = (ngx_http_promgate_exzone_t *) zone;

    size_t                      size;
    void                       *base;
    ngx_slab_pool_t            *shpool;
    ngx_http_promgate_exshm_t  *sh;

    shpool = zone->shpool;
    sh = zone->sh;
    ctx->sh = sh;

    /* after nginx made its paths, before a worker could find it unusable */

    if (ctx->w.dir
        && ngx_http_promgate_segw_check(&ctx->w, zone->shm_zone->shm.log)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (reused) {

        /*
         * A reload, or a binary upgrade: workers of the previous cycle
         * still insert through the ring, the WAL sequence map and the
         * counters where they are, so none of it may move or change
         * shape.  Another max= takes effect at a restart (or with another
         * zone size, which gets new shared memory).
         */

        if (sh->max != ctx->max) {
            ngx_log_error(NGX_LOG_WARN, zone->shm_zone->shm.log, 0,
                          "exemplar zone \"%V\" keeps max=%uD until a "
                          "restart: max=%uD needs new shared memory, and "
                          "the running workers still use this one",
                          &ctx->name, sh->max, ctx->max);
            ctx->max = sh->max;
        }

        ctx->ring = pg_exring_attach(sh->ring_base, sh->ring_size,
                                     ctx->max);
        if (ctx->ring) {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, zone->shm_zone->shm.log, 0,
                      "exemplar zone \"%V\" was built by another version "
                      "of the module, whose workers still use it: restart "
                      "nginx instead of reloading", &ctx->name);

        return NGX_ERROR;
    }

    sh->max = ctx->max;
    sh->wal_next = 1;
    sh->replayed = 0;

    sh->wal_seq = ngx_slab_calloc(shpool, (size_t) ctx->max * 8);
    if (sh->wal_seq == NULL) {
        goto too_small;
    }

    /* the ring: one block, as large as the rest of the zone allows */

    base = ngx_http_promgate_shm_block(shpool, &size);

    if (base == NULL) {
        goto too_small;
    }

    sh->ring_base = base;
    sh->ring_size = size;

    ctx->ring = pg_exring_init_seed(base, size, ctx->max,
                                    ngx_http_promgate_exzone_seed());

    if (ctx->ring == NULL) {
        goto too_small;
    }

    return NGX_OK;

too_small:

    ngx_log_error(NGX_LOG_EMERG, zone->shm_zone->shm.log, 0,
                  "exemplar zone \"%V\" is too small for max=%uD",
                  &ctx->name, ctx->max);

    return NGX_ERROR;
}


/*
 * The ring's hash seed: chosen once, when the ring is built, and kept in
 * it across reloads.  From the kernel's generator; nginx's own random()
 * is seeded from the pid and the time, which a sender could guess.
 */

static uint64_t
ngx_http_promgate_exzone_seed(void)
{
    ssize_t   n;
    uint64_t  seed;
    ngx_fd_t  fd;

    seed = 0;
    n = -1;

    fd = ngx_open_file("/dev/urandom", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd != NGX_INVALID_FILE) {
        n = read(fd, &seed, sizeof(seed));
        (void) ngx_close_file(fd);
    }

    if (n != (ssize_t) sizeof(seed)) {
        seed = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
               ^ (uint64_t) ngx_time() ^ ((uint64_t) ngx_pid << 16);
    }

    return seed;
}


char *
ngx_http_promgate_exemplar_ref(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t        *value;
    ngx_shm_zone_t  **field;

    field = (ngx_shm_zone_t **) (p + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* a zone of another kind by that name is refused by nginx */

    *field = ngx_shared_memory_add(cf, &value[1], 0,
                                   &ngx_http_promgate_exemplar_kind);
    if (*field == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* called from postconfiguration: every referenced zone must be defined */

ngx_int_t
ngx_http_promgate_exemplar_check(ngx_conf_t *cf, ngx_shm_zone_t *zone)
{
    if (zone && zone != NGX_CONF_UNSET_PTR && zone->data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown exemplar zone \"%V\": define it with "
                           "promgate_exemplar_zone at the http level",
                           &zone->shm.name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ---------------------------------------------------------- capturing */


/*
 * An exemplar's labels as the ring can keep them: non-empty names, valid
 * UTF-8.  Prometheus ignores an exemplar it cannot store without failing
 * the series; so does promgate (the series is forwarded with it).
 */

static ngx_int_t
ngx_http_promgate_exemplar_labels_valid(pg_pb_iter_t it)
{
    pg_label_t  l;

    while (pg_rw_next_label(&it, &l)) {
        if (l.name.len == 0 || !pg_utf8_valid(l.name.data, l.name.len)
            || !pg_utf8_valid(l.value.data, l.value.len))
        {
            return 0;
        }
    }

    return 1;
}


/* the scan's per-series callback: copy the series' exemplars, if any */

int
ngx_http_promgate_exemplars_collect(void *data, const pg_rw_series_t *s)
{
    ngx_http_promgate_write_ctx_t *ctx = data;

    size_t                         nseries;
    pg_str_t                       tenant;
    pg_label_t                    *series;
    pg_pb_iter_t                   it;
    pg_exemplar_t                  ex;
    ngx_pool_t                    *pool;
    pg_allocator_t                 alloc;
    ngx_http_promgate_exemplar_t  *e;

    if (s->nexemplars == 0) {
        return 0;
    }

    pool = ctx->request->pool;

    if (ctx->exemplars == NULL) {
        ctx->exemplars = ngx_array_create(pool, 16,
                                          sizeof(ngx_http_promgate_exemplar_t));
        if (ctx->exemplars == NULL) {
            return -1;
        }
    }

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = pool;

    /* promgate_tenant_label: the series' tenant, when it names one */

    if (ctx->route && ctx->route->tenant.len) {
        tenant = ctx->route->tenant;

    } else {
        tenant.data = ctx->tenant.data;
        tenant.len = ctx->tenant.len;
    }

    /* Prometheus sorts a series' labels before it stores them */

    pg_rw_series_labels(s, &it);

    series = pg_rw_copy_labels(it, &alloc, &nseries, s->unsorted);
    if (series == NULL) {
        return -1;
    }

    /*
     * promgate_tenant_label ... drop: stored as the tenant's storage holds
     * the series, without the label (the exemplar's own labels keep it)
     */

    if (ctx->route && ctx->plcf->tenant_drop) {
        nseries = pg_rw_labels_drop(series, nseries,
                                    ctx->route->router->tenant_label);
    }

    pg_rw_series_exemplars(s, &it);

    while (pg_rw_next_exemplar(&it, &ex)) {

        if (!ngx_http_promgate_exemplar_labels_valid(ex.labels)) {
            continue;
        }

        e = ngx_array_push(ctx->exemplars);
        if (e == NULL) {
            return -1;
        }

        e->series = series;
        e->nseries = nseries;
        e->value = ex.value;
        e->ts = ex.timestamp;
        e->tenant = tenant;

        e->labels = pg_rw_copy_labels(ex.labels, &alloc, &e->nlabels, 0);
        if (e->labels == NULL) {
            return -1;
        }
    }

    return 0;
}


/*
 * The write was answered 2xx: its exemplars go into the zone, and those
 * the ring took into the WAL (before the answer leaves).
 */

void
ngx_http_promgate_exemplars_store(ngx_http_promgate_write_ctx_t *ctx)
{
    u_char                        *frames, *p;
    size_t                         size;
    uint64_t                       seq, first;
    ngx_uint_t                     i, nrecords, too_large;
    pg_exring_rc_e                 rc;
    pg_wal_record_t                rec;
    ngx_http_promgate_exzone_t    *zctx;
    ngx_http_promgate_exemplar_t  *e;

    if (ctx->exemplars == NULL || ctx->exemplars->nelts == 0
        || ctx->plcf->exemplar_zone == NULL)
    {
        return;
    }

    zctx = ctx->plcf->exemplar_zone->data;

    e = ctx->exemplars->elts;

    /* room for every frame, filled under the lock, written after it */

    frames = NULL;
    p = NULL;

    if (zctx->w.dir) {
        size = 0;

        for (i = 0; i < ctx->exemplars->nelts; i++) {
            rec.tenant = e[i].tenant;
            rec.series = e[i].series;
            rec.nseries = e[i].nseries;
            rec.labels = e[i].labels;
            rec.nlabels = e[i].nlabels;

            if (pg_wal_record_fits(&rec)) {
                size += pg_wal_frame_size(&rec);
            }
        }

        frames = ngx_palloc(ctx->request->pool, size);
        p = frames;
    }

    first = 0;
    nrecords = 0;
    too_large = 0;

    ngx_shmtx_lock(&zctx->zone.shpool->mutex);

    for (i = 0; i < ctx->exemplars->nelts; i++) {

        /*
         * A few microseconds an insert: the lock is passed on every
         * NGX_HTTP_PROMGATE_EXEMPLAR_BATCH of them, so that a write
         * carrying many exemplars never holds up the other workers' writes
         * and queries for long (each insert leaves the ring whole)
         */

        if (i && i % NGX_HTTP_PROMGATE_EXEMPLAR_BATCH == 0) {
            ngx_http_promgate_shmtx_pass(&zctx->zone.shpool->mutex);
        }

        rc = pg_exring_insert(zctx->ring, e[i].tenant, e[i].series,
                              e[i].nseries, e[i].labels, e[i].nlabels,
                              e[i].value, e[i].ts, &seq);

        if (rc < PG_EXRING_NRESULTS) {
            (void) ngx_atomic_fetch_add(&zctx->sh->results[rc], 1);
        }

        if (rc != PG_EXRING_ADDED || frames == NULL) {
            continue;
        }

        rec.ts = e[i].ts;
        rec.value = e[i].value;
        rec.tenant = e[i].tenant;
        rec.series = e[i].series;
        rec.nseries = e[i].nseries;
        rec.labels = e[i].labels;
        rec.nlabels = e[i].nlabels;

        if (!pg_wal_record_fits(&rec)) {

            /*
             * Replay would take its frame for a torn tail and cut the
             * segment there: it is kept in memory only.  Its slot maps to
             * the next sequence number, so the segments before it can
             * still be deleted once it is the oldest.
             */

            zctx->sh->wal_seq[seq % zctx->max] = zctx->sh->wal_next;
            too_large++;
            continue;
        }

        /* WAL sequence numbers are the zone's, kept per ring slot */

        rec.seq = zctx->sh->wal_next++;
        zctx->sh->wal_seq[seq % zctx->max] = rec.seq;

        if (first == 0) {
            first = rec.seq;
        }

        nrecords++;

        p += pg_wal_encode(&rec, p);
    }

    ngx_shmtx_unlock(&zctx->zone.shpool->mutex);

    if (too_large) {
        (void) ngx_atomic_fetch_add(&zctx->sh->wal.write_errors, too_large);

        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "promgate: exemplar WAL of zone \"%V\": %ui "
                      "exemplar(s) not logged, their series' labels take "
                      "more than the %uz bytes a WAL record can hold; "
                      "they are served from memory but will not survive a "
                      "restart", &zctx->name, too_large,
                      (size_t) PG_WAL_MAX_RECORD);
    }

    if (frames && p > frames) {
        ngx_http_promgate_wal_append(zctx, frames, p - frames, first,
                                     nrecords);
    }

    ctx->exemplars->nelts = 0;
}


/* ------------------------------------------------------------ status */


static ngx_http_promgate_metric_t  ngx_http_promgate_exemplar_metrics[] = {
    { "promgate_exemplar_zone_exemplars", "gauge",
      "Exemplars stored in the zone.",
      offsetof(pg_exring_stats_t, exemplars) },
    { "promgate_exemplar_zone_capacity", "gauge",
      "Exemplars the zone keeps (max=).",
      offsetof(pg_exring_stats_t, max) },
    { "promgate_exemplar_zone_series", "gauge",
      "Series with stored exemplars.",
      offsetof(pg_exring_stats_t, series) },
    { "promgate_exemplar_zone_label_bytes", "gauge",
      "Bytes holding exemplar and series label sets.",
      offsetof(pg_exring_stats_t, log_used) },
    { "promgate_exemplar_zone_label_capacity_bytes", "gauge",
      "Bytes of variable-length label storage in the zone.",
      offsetof(pg_exring_stats_t, log_size) },
    { "promgate_exemplar_zone_appended_total", "counter",
      "Exemplars appended to the zone since it was created.",
      offsetof(pg_exring_stats_t, seq) },
};


/* the insert results summed over the zones, then each zone's ring */

void
ngx_http_promgate_exemplar_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_array_t *zones = data;

    ngx_uint_t                  k;
    ngx_atomic_t                results[PG_EXRING_NRESULTS];
    ngx_http_promgate_label_t   l;

    ngx_http_promgate_zones_sum(zones,
                                offsetof(ngx_http_promgate_exshm_t, results),
                                PG_EXRING_NRESULTS, results);

    ngx_http_promgate_text_family(t, "promgate_exemplars_inserted_total",
                                  "counter", "Exemplars of acknowledged "
                                  "writes offered to the zone, by result.");

    for (k = 0; k < PG_EXRING_NRESULTS; k++) {
        ngx_http_promgate_label_cstr(&l, "result", pg_exring_rc_name(k));
        ngx_http_promgate_text_sample(t, "promgate_exemplars_inserted_total",
                                      &l, 1, "%uA", results[k]);
    }

    ngx_http_promgate_text_zones(t, ngx_http_promgate_exemplar_metrics,
                                 sizeof(ngx_http_promgate_exemplar_metrics)
                                 / sizeof(ngx_http_promgate_metric_t),
                                 zones, ngx_http_promgate_exzone_values,
                                 sizeof(pg_exring_stats_t));
}


static ngx_int_t
ngx_http_promgate_exzone_values(ngx_http_promgate_zone_t *zone,
    void *values)
{
    ngx_http_promgate_exzone_t *ctx = (ngx_http_promgate_exzone_t *) zone;

    if (ctx->ring == NULL) {
        return NGX_DECLINED;
    }

    pg_exring_stats(ctx->ring, values);

    return NGX_OK;
}


/* ------------------------------------------------------------ querying */


ngx_int_t
ngx_http_promgate_exemplar_query_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->method == NGX_HTTP_POST) {
        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r,
                                               ngx_http_promgate_query_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_promgate_query(r);
}


static void
ngx_http_promgate_query_body(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_http_promgate_query(r));
}


static ngx_int_t
ngx_http_promgate_query(ngx_http_request_t *r)
{
    u_char                        *body;
    size_t                         blen, n;
    ngx_uint_t                     peer;
    pg_allocator_t                 alloc;
    pg_time_rc_e                   trc;
    pg_promql_rc_e                 prc;
    pg_query_params_t              qp;
    pg_selector_set_t              set;
    pg_promql_error_t              perr;
    ngx_http_promgate_loc_conf_t  *plcf;

    char                           err[512];

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    /* the body, for POST, as one piece */

    if (ngx_http_promgate_body_bytes(r, &body, &blen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    err[0] = '\0';
    peer = 0;

    if (body && r->headers_in.content_type
        && r->headers_in.content_type->value.len >= 16
        && ngx_strncasecmp(r->headers_in.content_type->value.data,
                           (u_char *) "application/json", 16) == 0)
    {
        /* a promgate extension: the JSON body of the Kafka-era tooling */
        trc = pg_parse_query_json(body, blen, &alloc, &qp, err, sizeof(err));

    } else {
        if (body && (r->headers_in.content_type == NULL
                     || r->headers_in.content_type->value.len < 33
                     || ngx_strncasecmp(
                            r->headers_in.content_type->value.data,
                            (u_char *) "application/x-www-form-urlencoded",
                            33) != 0))
        {
            body = NULL;        /* Go's ParseForm reads form bodies only */
            blen = 0;
        }

        /* a peer's question: see ngx_http_promgate_query_ask() */

        if (body && blen >= sizeof(NGX_HTTP_PROMGATE_PEER_MARK) - 1
            && ngx_strncmp(body, NGX_HTTP_PROMGATE_PEER_MARK,
                           sizeof(NGX_HTTP_PROMGATE_PEER_MARK) - 1) == 0)
        {
            peer = 1;
        }

        trc = pg_parse_query_params(r->args.data, r->args.len, body, blen,
                                    &alloc, &qp, err, sizeof(err));
    }

    if (trc == PG_TIME_NO_MEMORY) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (trc != PG_TIME_OK) {
        return ngx_http_promgate_query_error(r, err, ngx_strlen(err));
    }

    /* pg_time compared start and end as Prometheus does, before ms */

    if (ngx_http_promgate_query_braces(qp.query.data, qp.query.len)
        > plcf->query_max_selectors)
    {
        return ngx_http_promgate_query_too_many(r);
    }

    prc = pg_promql_selectors(qp.query.data, qp.query.len, &alloc, &set,
                              &perr);

    if (prc == PG_PROMQL_NOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (prc != PG_PROMQL_OK) {
        n = pg_promql_error_format(qp.query.data, qp.query.len, &perr, err,
                                   sizeof(err));
        return ngx_http_promgate_query_error(r, err, n);
    }

    if (set.nselectors == 0) {
        /* Prometheus 3.5 (as 2.42) answers a query without a selector so */
        return ngx_http_promgate_query_send(r, NGX_HTTP_NO_CONTENT, NULL, 0);
    }

    if (set.nselectors > plcf->query_max_selectors) {
        return ngx_http_promgate_query_too_many(r);
    }

    return ngx_http_promgate_query_start(r, &set, &qp, peer);
}


/*
 * The selectors with matchers in a query, counted without parsing it:
 * the "{" outside strings and comments.  Parsing compiles every regular
 * expression in the worker's event loop (about 8 us each), so a query far
 * over the limit is refused before.
 */

static ngx_uint_t
ngx_http_promgate_query_braces(const u_char *p, size_t len)
{
    u_char          quote;
    ngx_uint_t      n;
    const u_char   *end;

    n = 0;
    quote = 0;
    end = p + len;

    for ( /* void */ ; p < end; p++) {

        if (quote) {
            if (*p == '\\' && quote != '`') {
                p++;

            } else if (*p == quote) {
                quote = 0;
            }

            continue;
        }

        switch (*p) {

        case '"':
        case '\'':
        case '`':
            quote = *p;
            break;

        case '#':
            while (p + 1 < end && p[1] != '\n') {
                p++;
            }
            break;

        case '{':
            n++;
            break;
        }
    }

    return n;
}


static ngx_int_t
ngx_http_promgate_query_too_many(ngx_http_request_t *r)
{
    size_t                         n;
    char                           err[160];
    ngx_http_promgate_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    n = ngx_snprintf((u_char *) err, sizeof(err),
                     "query has more than %ui selectors "
                     "(promgate_exemplar_query max_selectors=)",
                     plcf->query_max_selectors)
        - (u_char *) err;

    return ngx_http_promgate_query_error(r, err, n);
}


/*
 * The query's state lives in the request's pool; the request is kept
 * (r->main->count) while a slice is due or the client has buffers to take.
 */

static ngx_int_t
ngx_http_promgate_query_start(ngx_http_request_t *r, pg_selector_set_t *set,
    pg_query_params_t *qp, ngx_uint_t peer)
{
    ngx_int_t                       rc;
    ngx_str_t                       tenant;
    ngx_pool_cleanup_t             *cln;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_http_promgate_query_ctx_t  *ctx;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_promgate_query_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&ctx->hits, r->pool, 64, sizeof(pg_exring_hit_t *))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_promgate_query_cleanup;
    cln->data = ctx;

    if (ngx_http_promgate_tenant(r, &tenant) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->plcf = plcf;
    ctx->zctx = plcf->exemplar_query->data;
    ctx->set = *set;
    ctx->tenant.data = tenant.data;
    ctx->tenant.len = tenant.len;
    ctx->start_ms = qp->start_ms;
    ctx->end_ms = qp->end_ms;
    ctx->deadline = ngx_http_promgate_query_clock()
                    + (uint64_t) plcf->query_timeout * 1000000;

    ctx->alloc.alloc = ngx_http_promgate_query_alloc;
    ctx->alloc.ctx = ctx;
    ctx->scratch_alloc.alloc = ngx_http_promgate_query_scratch;
    ctx->scratch_alloc.ctx = ctx;

    ctx->resume.handler = ngx_http_promgate_query_resume;
    ctx->resume.data = ctx;
    ctx->resume.log = r->connection->log;

    /* a peer's question is answered from this zone only: no loops */

    ctx->peer = peer;

    if (!peer && plcf->exemplar_peers) {
        rc = ngx_http_promgate_query_ask(ctx, qp);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    rc = ngx_http_promgate_query_run(ctx);

    if (rc == NGX_BUSY || rc == NGX_AGAIN) {

        /*
         * A client that goes away ends the query (499): nginx terminates
         * the request, and the pool's cleanup removes the timer.
         */

        r->read_event_handler = ngx_http_test_reading;

        r->main->count++;
        return NGX_DONE;
    }

    return rc;
}


/* the next slice, after the timer between scan slices or when posted */

static void
ngx_http_promgate_query_resume(ngx_event_t *ev)
{
    ngx_http_promgate_query_ctx_t *ctx = ev->data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    rc = ngx_http_promgate_query_run(ctx);

    if (rc != NGX_BUSY && rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


/*
 * The client took (some of) the answer's buffers: on with the answer.
 * The query's state is found through the pool cleanup that owns it (the
 * module's request ctx is the write ctx, which variables read).
 */

static void
ngx_http_promgate_query_writer(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_event_t                    *wev;
    ngx_connection_t               *c;
    ngx_pool_cleanup_t             *cln;
    ngx_http_promgate_query_ctx_t  *ctx;

    c = r->connection;
    wev = c->write;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    ctx = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_promgate_query_cleanup) {
            ctx = cln->data;
            break;
        }
    }

    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (wev->delayed || r->aio) {
        if (ngx_http_promgate_query_wait(ctx, NGX_AGAIN) == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    rc = ngx_http_promgate_query_run(ctx);

    if (rc != NGX_BUSY && rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }
}


/* the end of the request: timers and posted events off, blocks kept */

static void
ngx_http_promgate_query_cleanup(void *data)
{
    ngx_http_promgate_query_ctx_t *ctx = data;

    ngx_http_promgate_block_t  *b;

    if (ctx->resume.timer_set) {
        ngx_del_timer(&ctx->resume);
    }

    if (ctx->resume.posted) {
        ngx_delete_posted_event(&ctx->resume);
    }

    while (ctx->blocks) {
        b = ctx->blocks;
        ctx->blocks = b->next;

        if (ngx_http_promgate_query_nspare < NGX_HTTP_PROMGATE_QUERY_KEEP) {
            b->next = ngx_http_promgate_query_spare;
            ngx_http_promgate_query_spare = b;
            ngx_http_promgate_query_nspare++;

        } else {
            ngx_free(b);
        }
    }
}


/*
 * One slice: the scan of the series (matching, copying out), then the
 * answer, written and sent without the lock.  NGX_BUSY when the next
 * slice is due (a timer, or a posted event, so that the worker's other
 * events run first), NGX_AGAIN when the client has the answer's buffers
 * to take first, otherwise what the answer's sending returned, for
 * ngx_http_finalize_request().
 */

static ngx_int_t
ngx_http_promgate_query_run(ngx_http_promgate_query_ctx_t *ctx)
{
    uint64_t    until;
    ngx_int_t   rc;

    static const char  timeout[] = "query timed out in query execution "
                                   "(promgate_exemplar_query)";

    until = ngx_http_promgate_query_clock();

    if (!ctx->sending) {

        if (!ctx->scanned && until > ctx->deadline) {
            return ngx_http_promgate_query_fail(ctx->request,
                                                NGX_HTTP_SERVICE_UNAVAILABLE,
                                                "timeout", timeout,
                                                sizeof(timeout) - 1);
        }

        until += NGX_HTTP_PROMGATE_QUERY_SLICE;

        rc = ctx->scanned ? NGX_OK : ngx_http_promgate_query_scan(ctx, until);

        if (rc == NGX_AGAIN) {
            ngx_add_timer(&ctx->resume, 1);
            return NGX_BUSY;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            /* over max_series or max_exemplars: an execution error */
            return ngx_http_promgate_query_fail(ctx->request,
                                           ctx->peer
                                           ? NGX_HTTP_PROMGATE_PEER_LIMIT
                                           : 422,
                                           "execution", (char *) ctx->err,
                                           ctx->err_len);
        }

        ctx->scanned = 1;

        if (ctx->peer) {
            return ngx_http_promgate_query_peer_send(ctx);
        }

        if (ctx->fw.targets) {

            /* the peers' answers too: the forwarder posts the last one */

            if (!ctx->fw.answered) {
                if (ngx_http_promgate_query_peers_decide(&ctx->fw) == 0) {
                    return NGX_BUSY;
                }

                ctx->fw.answered = 1;
            }

            rc = ngx_http_promgate_query_merge(ctx);

            if (rc == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (rc == NGX_DECLINED) {
                return ngx_http_promgate_query_fail(ctx->request,
                                                    ctx->status,
                                                    ctx->err_type,
                                                    (char *) ctx->err,
                                                    ctx->err_len);
            }
        }

        ctx->sending = 1;

    } else {
        until += NGX_HTTP_PROMGATE_QUERY_SLICE;
    }

    return ngx_http_promgate_query_write(ctx, until);
}


/*
 * Matches series until the clock passes "until", copying out those found;
 * NGX_OK when all were, the hits then sorted.
 */

static ngx_int_t
ngx_http_promgate_query_scan(ngx_http_promgate_query_ctx_t *ctx,
    uint64_t until)
{
    int                           rc;
    size_t                        n;
    uint64_t                      need;
    ngx_uint_t                    i, exemplars;
    ngx_shmtx_t                  *mutex;
    pg_exring_hit_t             **hits;

    char                          err[160];

    mutex = &ctx->zctx->zone.shpool->mutex;

    /* the label bits a matching series has: the others are not read */
    need = pg_exring_selectors_sig(ctx->zctx->ring, &ctx->set);

    ngx_shmtx_lock(mutex);

    do {
        rc = pg_exring_query_collect_sig(ctx->zctx->ring, ctx->tenant,
                                         need, ngx_http_promgate_query_match,
                                         &ctx->set, ctx->start_ms, ctx->end_ms,
                                         &ctx->pos,
                                         NGX_HTTP_PROMGATE_QUERY_SCAN_STEP,
                                         ngx_http_promgate_query_hit, ctx,
                                         &ctx->alloc, &ctx->scratch_alloc);

    } while (rc == 0 && ngx_http_promgate_query_clock() < until);

    ngx_shmtx_unlock(mutex);

    if (rc < 0) {
        if (ctx->hits.nelts < ctx->plcf->query_max_series) {
            return NGX_ERROR;
        }

        n = ngx_snprintf((u_char *) err, sizeof(err),
                         "query matches more than %ui series "
                         "(promgate_exemplar_query max_series=)",
                         ctx->plcf->query_max_series)
            - (u_char *) err;

        ctx->err_len = ngx_cpymem(ctx->err, err, n) - ctx->err;
        return NGX_DECLINED;
    }

    if (rc == 0) {
        return NGX_AGAIN;
    }

    /* labels.Compare order; a series found twice is written once */

    hits = ctx->hits.elts;

    if (ctx->hits.nelts > 1) {
        ngx_qsort(hits, ctx->hits.nelts, sizeof(pg_exring_hit_t *),
                  ngx_http_promgate_query_hit_cmp);
    }

    exemplars = 0;

    for (i = 0; i < ctx->hits.nelts; i++) {
        if (i + 1 == ctx->hits.nelts
            || pg_exring_labels_compare(hits[i]->labels, hits[i]->nlabels,
                                        hits[i + 1]->labels,
                                        hits[i + 1]->nlabels)
               != 0)
        {
            exemplars += hits[i]->nexemplars;
        }
    }

    if (exemplars > ctx->plcf->query_max_exemplars) {
        n = ngx_snprintf((u_char *) err, sizeof(err),
                         "query answer has more than %ui exemplars "
                         "(promgate_exemplar_query max_exemplars=)",
                         ctx->plcf->query_max_exemplars)
            - (u_char *) err;

        ctx->err_len = ngx_cpymem(ctx->err, err, n) - ctx->err;
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Writes and sends the answer, a buffer at a time, until the clock
 * passes "until" or every buffer waits for the client.
 */

static ngx_int_t
ngx_http_promgate_query_write(ngx_http_promgate_query_ctx_t *ctx,
    uint64_t until)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    static ngx_str_t  type = ngx_string("application/json");

    r = ctx->request;

    /* what the client has not taken yet first, and the buffers it took */

    if (ctx->busy) {
        cl = NULL;
        rc = ngx_http_output_filter(r, NULL);

        ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &cl,
                                (ngx_buf_tag_t) &ngx_http_promgate_module);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    for ( ;; ) {

        /* a buffer the client took, or a new one */

        if (ctx->free) {
            cl = ctx->free;
            ctx->free = cl->next;
            cl->next = NULL;
            b = cl->buf;

        } else if (ctx->nbufs < NGX_HTTP_PROMGATE_QUERY_BUFS) {
            b = ngx_calloc_buf(r->pool);
            cl = ngx_alloc_chain_link(r->pool);

            if (b == NULL || cl == NULL
                || (b->start = ngx_http_promgate_query_block(ctx)) == NULL)
            {
                return ctx->header_sent ? NGX_ERROR
                                        : NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            b->end = b->start + NGX_HTTP_PROMGATE_QUERY_BUF;
            b->pos = b->start;
            b->last = b->start;
            b->temporary = 1;
            b->tag = (ngx_buf_tag_t) &ngx_http_promgate_module;
            cl->buf = b;
            cl->next = NULL;
            ctx->nbufs++;

        } else {
            return ngx_http_promgate_query_wait(ctx, NGX_AGAIN);
        }

        if (ngx_http_promgate_query_fill(ctx, b) != NGX_OK) {
            return ctx->header_sent ? NGX_ERROR
                                    : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (!ctx->header_sent) {

            /* chunked when the answer takes more than this buffer */

            r->headers_out.status = NGX_HTTP_OK;
            r->headers_out.content_length_n = ctx->done
                                              ? (off_t) ngx_buf_size(b) : -1;
            r->headers_out.content_type = type;
            r->headers_out.content_type_len = type.len;
            r->headers_out.content_type_lowcase = NULL;

            ctx->header_sent = 1;

            rc = ngx_http_send_header(r);

            if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
                return rc;
            }
        }

        rc = ngx_http_output_filter(r, cl);

        ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &cl,
                                (ngx_buf_tag_t) &ngx_http_promgate_module);

        if (rc == NGX_ERROR) {
            return rc;
        }

        if (ctx->done) {
            /*
             * the last buffer, which the client may not have taken yet:
             * finalizing the request sends the rest (ngx_http_writer); as
             * NGX_AGAIN the callers would wait for an event nothing waits
             * for
             */
            return rc == NGX_AGAIN ? NGX_OK : rc;
        }

        if (ngx_http_promgate_query_clock() >= until) {
            return ngx_http_promgate_query_wait(ctx, NGX_BUSY);
        }
    }
}


/*
 * The answer's next part into b: the envelope's start first, then the
 * hits' pieces until the buffer is full, the envelope's end after the
 * last hit.
 */

static ngx_int_t
ngx_http_promgate_query_fill(ngx_http_promgate_query_ctx_t *ctx,
    ngx_buf_t *b)
{
    int               rc;
    ngx_uint_t        i;
    pg_json_buf_t     out;
    pg_exring_hit_t **hits;

    static const char  head[] = "{\"status\":\"success\",\"data\":[";

    hits = ctx->hits.elts;

    out.data = b->start;
    out.len = 0;
    out.cap = b->end - b->start;
    out.alloc = ctx->alloc;
    out.failed = 0;

    if (!ctx->header_sent) {
        pg_json_literal(&out, head);
    }

    while (ctx->next < ctx->hits.nelts) {
        i = ctx->next;

        /* of a run of equal labels (a series found twice), the last */

        if (ctx->hpos.piece == 0 && i + 1 < ctx->hits.nelts
            && pg_exring_labels_compare(hits[i]->labels, hits[i]->nlabels,
                                        hits[i + 1]->labels,
                                        hits[i + 1]->nlabels)
               == 0)
        {
            ctx->next++;
            continue;
        }

        rc = pg_exring_hit_json(hits[i], ctx->series == 0, &ctx->hpos,
                                out.cap - NGX_HTTP_PROMGATE_QUERY_SLACK,
                                &out);
        if (rc <= 0) {
            break;
        }

        ctx->series++;
        ctx->next++;
        ngx_memzero(&ctx->hpos, sizeof(pg_exring_hit_pos_t));
    }

    if (ctx->next == ctx->hits.nelts) {

        /* as Prometheus' API writes its warnings, after the data */

        if (ctx->warnings.len) {
            pg_json_literal(&out, "],\"warnings\":[");
            pg_json_raw(&out, ctx->warnings.data, ctx->warnings.len);
        }

        pg_json_literal(&out, "]}");
        ctx->done = 1;
    }

    if (out.failed) {
        return NGX_ERROR;
    }

    /* a piece larger than the slack made the buffer grow */

    if (out.data != b->start) {
        b->start = out.data;
        b->end = out.data + out.cap;
    }

    b->pos = out.data;
    b->last = out.data + out.len;
    b->last_buf = ctx->done;
    b->last_in_chain = 1;

    return NGX_OK;
}


/*
 * Waiting: for the client to take the answer's buffers (rc NGX_AGAIN; as
 * ngx_http_set_write_handler() waits, send_timeout included), or, after a
 * slice of writing, for the worker's other events (NGX_BUSY: the next
 * slice is posted for after them, as it is when the client's socket takes
 * more already).
 */

static ngx_int_t
ngx_http_promgate_query_wait(ngx_http_promgate_query_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_event_t               *wev;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ctx->request;
    wev = r->connection->write;

    if (rc == NGX_BUSY) {
#if (nginx_version >= 1017005)
        ngx_post_event(&ctx->resume, &ngx_posted_next_events);
#else
        ngx_add_timer(&ctx->resume, 1);
#endif
        return NGX_BUSY;
    }

    r->write_event_handler = ngx_http_promgate_query_writer;

    if (wev->ready && wev->delayed) {
        return NGX_AGAIN;
    }

    clcf = ngx_http_get_module_loc_conf(r->main, ngx_http_core_module);

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a socket that takes more already gives no event: as if it did */

    if (wev->ready && !wev->delayed) {
#if (nginx_version >= 1017005)
        ngx_post_event(wev, &ngx_posted_next_events);
#else
        ngx_post_event(wev, &ngx_posted_events);
#endif
    }

    return NGX_AGAIN;
}


/* ------------------------------------------------------------ peers */


ngx_conf_enum_t  ngx_http_promgate_peer_policies[] = {
    { ngx_string("any"), NGX_HTTP_PROMGATE_PEER_ANY },
    { ngx_string("all"), NGX_HTTP_PROMGATE_PEER_ALL },
    { ngx_null_string, 0 }
};


char *
ngx_http_promgate_exemplar_peer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_promgate_loc_conf_t *plcf = conf;

    return ngx_http_promgate_target_list_add(cf, &plcf->exemplar_peers,
                                             "exemplar peer", "/_peer/gw2",
                                             0);
}


/*
 * Asks every peer, through the forwarder, while the zone is scanned: a
 * form body with the mark, the query and the range in ms as the query
 * API reads it back exactly (start and end left out when absent).
 */

static ngx_int_t
ngx_http_promgate_query_ask(ngx_http_promgate_query_ctx_t *ctx,
    pg_query_params_t *qp)
{
    u_char                        *body, *p;
    size_t                         len;
    pg_allocator_t                 alloc;
    ngx_http_request_t            *r;
    ngx_http_promgate_payload_t   *pl;
    ngx_http_promgate_loc_conf_t  *plcf;

    r = ctx->request;
    plcf = ctx->plcf;

    len = sizeof(NGX_HTTP_PROMGATE_PEER_MARK) - 1 + sizeof("query=") - 1
          + 3 * qp->query.len
          + 2 * (sizeof("&start=") - 1 + PG_JSON_NUMBER_MAX);

    body = ngx_pnalloc(r->pool, len);
    ctx->peer_types = ngx_pcalloc(r->pool, plcf->exemplar_peers->nelts
                                           * sizeof(ngx_str_t));
    if (body == NULL || ctx->peer_types == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, NGX_HTTP_PROMGATE_PEER_MARK,
                   sizeof(NGX_HTTP_PROMGATE_PEER_MARK) - 1);
    p = ngx_cpymem(p, "query=", sizeof("query=") - 1);
    p = (u_char *) ngx_escape_uri(p, (u_char *) qp->query.data,
                                  qp->query.len, NGX_ESCAPE_URI_COMPONENT);

    if (qp->start_ms != PG_TIME_MIN_MS) {
        p = ngx_cpymem(p, "&start=", sizeof("&start=") - 1);
        p += pg_json_format_timestamp(p, qp->start_ms);
    }

    if (qp->end_ms != PG_TIME_MAX_MS) {
        p = ngx_cpymem(p, "&end=", sizeof("&end=") - 1);
        p += pg_json_format_timestamp(p, qp->end_ms);
    }

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;
    pg_json_init(&ctx->warnings, alloc);

    ngx_http_promgate_forwarder_init(&ctx->fw, r, ctx);

    pl = &ctx->fw.payloads[PG_RW_V1];

    if (ngx_http_promgate_payload_set(r->pool, pl, PG_RW_V1, body, p - body)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&pl->type, "application/x-www-form-urlencoded");

    ctx->fw.version = PG_RW_V1;
    ctx->fw.targets = plcf->exemplar_peers;
    ctx->fw.decide = ngx_http_promgate_query_peers_decide;
    ctx->fw.answer = ngx_http_promgate_query_peers_answer;
    ctx->fw.done = ngx_http_promgate_query_peer_done;

    if (ngx_http_promgate_forwarder_start(&ctx->fw) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/* the answer waits for the zone's scan and every peer's final answer */

static ngx_uint_t
ngx_http_promgate_query_peers_decide(ngx_http_promgate_forwarder_t *fw)
{
    ngx_http_promgate_query_ctx_t *ctx = fw->data;

    if (!ctx->scanned
        || fw->acks.stored + fw->acks.rejected + fw->acks.failed
           < fw->acks.targets)
    {
        return 0;
    }

    return 1;
}


/* what a peer's answer is (the peer format, or something else) */

static void
ngx_http_promgate_query_peer_done(ngx_http_promgate_forwarder_t *fw,
    ngx_http_promgate_fwd_t *f, ngx_http_request_t *sr)
{
    ngx_http_promgate_query_ctx_t *ctx = fw->data;

    ctx->peer_types[f - fw->fwd] = sr->headers_out.content_type;
}


/* from the forwarder's handler: the scan ended first, then the peers */

static ngx_int_t
ngx_http_promgate_query_peers_answer(ngx_http_request_t *r,
    ngx_http_promgate_forwarder_t *fw, ngx_uint_t decision)
{
    ngx_http_promgate_query_ctx_t *ctx = fw->data;

    ngx_int_t  rc;

    rc = ngx_http_promgate_query_run(ctx);

    if (rc == NGX_BUSY || rc == NGX_AGAIN) {
        /* the query keeps its reference: the forwarder drops one */
        r->main->count++;
        return NGX_DONE;
    }

    return rc;
}


/*
 * The peers' series joined to the zone's, as one Prometheus holding all
 * of them answers: one hit per series (of the zone's hits of a series
 * found twice, the last, as without peers), the exemplars of a series
 * held by several nodes merged in Prometheus' order, each once.  Then the
 * query's limits, on the merged answer.  NGX_DECLINED: ctx->status and
 * ctx->err say the error to answer.
 */

static ngx_int_t
ngx_http_promgate_query_merge(ngx_http_promgate_query_ctx_t *ctx)
{
    u_char                         *p;
    ngx_int_t                       rc;
    ngx_str_t                      *type;
    size_t                          n, exemplars;
    ngx_uint_t                      i;
    const char                     *err;
    pg_exring_peer_rc_e             prc;
    ngx_http_promgate_fwd_t        *f;
    ngx_http_promgate_forwarder_t  *fw;

    u_char                          why[128];

    fw = &ctx->fw;

    for (i = 0; i < fw->nfwd; i++) {
        f = &fw->fwd[i];
        type = &ctx->peer_types[i];

        if (f->state != PG_TARGET_STORED) {

            if (f->status == NGX_HTTP_PROMGATE_PEER_LIMIT) {
                p = ngx_snprintf(ctx->err, sizeof(ctx->err),
                                 "exemplar peer \"%V\" has more than the "
                                 "query's limits (promgate_exemplar_query "
                                 "max_series=, max_exemplars=)",
                                 &f->target->uri);

                ctx->err_len = p - ctx->err;
                ctx->status = 422;
                ctx->err_type = "execution";
                return NGX_DECLINED;
            }

            p = f->status
                ? ngx_snprintf(why, sizeof(why) - 1, "answered %ui",
                               f->status)
                : ngx_snprintf(why, sizeof(why) - 1, "did not answer");

        } else if (f->truncated) {
            p = ngx_snprintf(why, sizeof(why) - 1, "answered more than "
                             "the subrequest_output_buffer_size of its "
                             "location");

        } else if (type->len < sizeof(NGX_HTTP_PROMGATE_PEER_TYPE) - 1
                   || ngx_strncasecmp(type->data,
                                      (u_char *) NGX_HTTP_PROMGATE_PEER_TYPE,
                                      sizeof(NGX_HTTP_PROMGATE_PEER_TYPE) - 1)
                      != 0)
        {
            p = ngx_snprintf(why, sizeof(why) - 1, "answered %ui, not in "
                             "the peer format (not a promgate_exemplar_query "
                             "location?)", f->status);

        } else {
            err = NULL;

            prc = pg_exring_peer_read(f->reason.data, f->reason.len,
                                      &ctx->alloc,
                                      ngx_http_promgate_query_peer_hit, ctx,
                                      &err);

            if (prc == PG_EXRING_PEER_OK) {
                continue;
            }

            if (prc == PG_EXRING_PEER_NOMEM) {
                return NGX_ERROR;
            }

            if (prc == PG_EXRING_PEER_REFUSED) {
                if (ctx->hits.nelts < ctx->plcf->query_max_series) {
                    return NGX_ERROR;
                }

                return ngx_http_promgate_query_limits(ctx,
                                            ctx->plcf->query_max_series + 1,
                                            0);
            }

            p = ngx_snprintf(why, sizeof(why) - 1, "answered an invalid "
                             "peer answer: %s", err);
        }

        *p = '\0';

        rc = ngx_http_promgate_query_peer_failed(ctx, f, (char *) why);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* one hit per series, as one Prometheus holding all would answer */

    n = ctx->hits.nelts;

    if (pg_exring_hits_join(ctx->hits.elts, &n, &ctx->alloc, &exemplars)
        != 0)
    {
        return NGX_ERROR;
    }

    ctx->hits.nelts = n;

    return ngx_http_promgate_query_limits(ctx, n, exemplars);
}


/* a failed peer: a warning in the answer, or with "all" the answer */

static ngx_int_t
ngx_http_promgate_query_peer_failed(ngx_http_promgate_query_ctx_t *ctx,
    ngx_http_promgate_fwd_t *f, const char *why)
{
    u_char              *p;
    ngx_http_request_t  *r;

    u_char               msg[NGX_HTTP_PROMGATE_TARGET_NAME + 256];

    r = ctx->request;

    if (ctx->plcf->exemplar_peer_policy == NGX_HTTP_PROMGATE_PEER_ALL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "promgate: exemplar peer \"%V\" %s; the query fails "
                      "(promgate_exemplar_peer_policy all)",
                      &f->target->uri, why);

        ctx->err_len = ngx_snprintf(ctx->err, sizeof(ctx->err),
                                    "exemplar peer \"%V\" %s",
                                    &f->target->uri, why)
                       - ctx->err;
        ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ctx->err_type = "unavailable";
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "promgate: exemplar peer \"%V\" %s; answered from the "
                  "others, with a warning", &f->target->uri, why);

    p = ngx_snprintf(msg, sizeof(msg), "promgate: exemplar peer \"%V\" %s; "
                     "its exemplars are missing", &f->target->uri, why);

    if (ctx->warnings.len) {
        pg_json_literal(&ctx->warnings, ",");
    }

    pg_json_string(&ctx->warnings, msg, p - msg);

    return ctx->warnings.failed ? NGX_ERROR : NGX_OK;
}


/* a peer's series; the limit is the merged answer's, checked after it */

static int
ngx_http_promgate_query_peer_hit(void *data, pg_exring_hit_t *hit)
{
    ngx_http_promgate_query_ctx_t *ctx = data;

    pg_exring_hit_t  **h;

    if (ctx->hits.nelts
        >= ctx->plcf->query_max_series * (ctx->fw.nfwd + 1))
    {
        return 0;
    }

    h = ngx_array_push(&ctx->hits);
    if (h == NULL) {
        return 0;
    }

    *h = hit;

    return 1;
}


static ngx_int_t
ngx_http_promgate_query_limits(ngx_http_promgate_query_ctx_t *ctx,
    ngx_uint_t series, ngx_uint_t exemplars)
{
    if (series > ctx->plcf->query_max_series) {
        ctx->err_len = ngx_snprintf(ctx->err, sizeof(ctx->err),
                                    "query matches more than %ui series "
                                    "(promgate_exemplar_query max_series=)",
                                    ctx->plcf->query_max_series)
                       - ctx->err;

    } else if (exemplars > ctx->plcf->query_max_exemplars) {
        ctx->err_len = ngx_snprintf(ctx->err, sizeof(ctx->err),
                                    "query answer has more than %ui "
                                    "exemplars (promgate_exemplar_query "
                                    "max_exemplars=)",
                                    ctx->plcf->query_max_exemplars)
                       - ctx->err;

    } else {
        return NGX_OK;
    }

    ctx->status = 422;
    ctx->err_type = "execution";

    return NGX_DECLINED;
}


/* a peer's question answered: the zone's series in the peer format */

static ngx_int_t
ngx_http_promgate_query_peer_send(ngx_http_promgate_query_ctx_t *ctx)
{
    ngx_int_t           rc;
    ngx_uint_t          i;
    pg_json_buf_t       out;
    pg_exring_hit_t   **hits;

    static ngx_str_t  type = ngx_string(NGX_HTTP_PROMGATE_PEER_TYPE);

    hits = ctx->hits.elts;

    pg_json_init(&out, ctx->alloc);
    pg_exring_peer_head(&out);

    for (i = 0; i < ctx->hits.nelts; i++) {

        /* of a run of equal labels (a series found twice), the last */

        if (i + 1 < ctx->hits.nelts
            && pg_exring_labels_compare(hits[i]->labels, hits[i]->nlabels,
                                        hits[i + 1]->labels,
                                        hits[i + 1]->nlabels)
               == 0)
        {
            continue;
        }

        pg_exring_peer_write(hits[i], &out);
    }

    if (out.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_promgate_send(ctx->request, NGX_HTTP_OK, &type, out.data,
                                out.len);

    /*
     * NGX_AGAIN is "the client has the rest to take": finalizing the
     * request sends it (the query's callers take NGX_AGAIN for a query
     * still running)
     */

    return rc == NGX_AGAIN ? NGX_OK : rc;
}


/* the scan's hit: the series and its exemplars, copied out of the zone */

static int
ngx_http_promgate_query_hit(void *data, pg_exring_hit_t *hit)
{
    ngx_http_promgate_query_ctx_t *ctx = data;

    pg_exring_hit_t  **h;

    if (ctx->hits.nelts >= ctx->plcf->query_max_series) {
        return 0;               /* over the limit: the scan fails */
    }

    h = ngx_array_push(&ctx->hits);
    if (h == NULL) {
        return 0;
    }

    *h = hit;

    return 1;
}


/* the scan's label views: one buffer, reused by every step */

static void *
ngx_http_promgate_query_scratch(void *data, size_t size)
{
    ngx_http_promgate_query_ctx_t *ctx = data;

    if (size > ctx->scratch_size) {
        ctx->scratch = ngx_palloc(ctx->request->pool, size);
        if (ctx->scratch == NULL) {
            ctx->scratch_size = 0;
            return NULL;
        }

        ctx->scratch_size = size;
    }

    return ctx->scratch;
}


/*
 * The query's memory (the copies, a buffer that grows): from its blocks,
 * or the pool for what is larger than a block.
 */

static void *
ngx_http_promgate_query_alloc(void *data, size_t size)
{
    ngx_http_promgate_query_ctx_t *ctx = data;

    u_char  *p;

    size = ngx_align(size, 8);

    if (size > NGX_HTTP_PROMGATE_QUERY_BUF / 4) {
        return ngx_palloc(ctx->request->pool, size);
    }

    if ((size_t) (ctx->block_end - ctx->block_pos) < size) {
        p = ngx_http_promgate_query_block(ctx);
        if (p == NULL) {
            return NULL;
        }

        ctx->block_pos = p;
        ctx->block_end = p + NGX_HTTP_PROMGATE_QUERY_BUF;
    }

    p = ctx->block_pos;
    ctx->block_pos += size;

    return p;
}


/* a block for the query: a spare one, or a new one */

static u_char *
ngx_http_promgate_query_block(ngx_http_promgate_query_ctx_t *ctx)
{
    ngx_http_promgate_block_t  *b;

    b = ngx_http_promgate_query_spare;

    if (b) {
        ngx_http_promgate_query_spare = b->next;
        ngx_http_promgate_query_nspare--;

    } else {
        b = ngx_alloc(offsetof(ngx_http_promgate_block_t, align)
                      + NGX_HTTP_PROMGATE_QUERY_BUF,
                      ctx->request->connection->log);
        if (b == NULL) {
            return NULL;
        }
    }

    b->next = ctx->blocks;
    ctx->blocks = b;

    return (u_char *) &b->align;
}


static int
ngx_http_promgate_query_hit_cmp(const void *a, const void *b)
{
    return pg_exring_hit_compare(*(pg_exring_hit_t * const *) a,
                                 *(pg_exring_hit_t * const *) b);
}


static uint64_t
ngx_http_promgate_query_clock(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}


static int
ngx_http_promgate_query_match(void *ctx, const pg_label_t *labels, size_t n)
{
    return pg_selector_set_match(ctx, labels, n);
}


static ngx_int_t
ngx_http_promgate_query_error(ngx_http_request_t *r, const char *msg,
    size_t len)
{
    return ngx_http_promgate_query_fail(r, NGX_HTTP_BAD_REQUEST, "bad_data",
                                        msg, len);
}


/* Prometheus' error answer: bad_data 400, execution 422, timeout 503 */

static ngx_int_t
ngx_http_promgate_query_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *msg, size_t len)
{
    pg_json_buf_t   out;
    pg_allocator_t  alloc;

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = r->pool;

    pg_json_init(&out, alloc);
    pg_json_error(&out, type, (const uint8_t *) msg, len);

    if (out.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_promgate_query_send(r, status, out.data, out.len);
}


static ngx_int_t
ngx_http_promgate_query_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_int_t  rc;

    static ngx_str_t  type = ngx_string("application/json");

    if (status == NGX_HTTP_NO_CONTENT) {
        r->headers_out.status = status;
        r->header_only = 1;
        ngx_http_clear_content_length(r);
        return ngx_http_send_header(r);
    }

    rc = ngx_http_promgate_send(r, status, &type, data, len);

    /* the rest is sent when the request is finalized (see peer_send) */

    return rc == NGX_AGAIN ? NGX_OK : rc;
}
