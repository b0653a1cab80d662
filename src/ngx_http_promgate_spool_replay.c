
/*
 * promgate: a spool per process (see ngx_http_promgate_spool.c): at start
 * the scan of what the directory holds; in every worker its segment
 * writer; in the worker that owns it, the replay.  The replayer merges the
 * writers' segments by sequence number, sends consecutive remote write
 * 1.0 records with the same headers in one request (a 2.0 record alone),
 * one request at a time, over the spool's unix socket with the Kafka
 * consumers' HTTP client, and moves on only when the write location
 * answered.  Where it stands is kept in "<name>.replay".
 */


#include "ngx_http_promgate_spool.h"

#include <dirent.h>


#define NGX_HTTP_PROMGATE_SPOOL_IDLE       100      /* ms between looks */
#define NGX_HTTP_PROMGATE_SPOOL_TORN       5000     /* a partial frame */
#define NGX_HTTP_PROMGATE_SPOOL_BACKOFF    2000     /* the most, ms */
#define NGX_HTTP_PROMGATE_SPOOL_CURSORS    256
#define NGX_HTTP_PROMGATE_SPOOL_BATCH      64       /* records a post */
#define NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE (1024 * 1024)   /* decoded */

/*
 * Only small records are joined: one more request costs the gateway about
 * 0.25 ms, decoding and encoding again about 2.7 ns a decoded byte, so
 * joining pays below ~90 KB a record (bench/spool_bench.py: 2000-series
 * records of 842 KB joined by four replayed at 1.1 us a sample, alone at
 * 0.2).
 */
#define NGX_HTTP_PROMGATE_SPOOL_JOIN       (32 * 1024)    /* decoded */


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
    ngx_http_promgate_client_post_t     post;
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


static void ngx_http_promgate_spool_step(ngx_event_t *ev);
static void ngx_http_promgate_spool_posted(
    ngx_http_promgate_client_post_t *post);


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

        /* segments are regular files: never a device or a link to one */

        if ((de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
            || pg_wal_segment_parse(de->d_name, (char *) sp->name.data,
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
 * writes (and in the first new worker after a reload that changed path=):
 * what is in the directory past the saved replay state (records, bytes),
 * and the next sequence number past every record there.  It reads frame
 * headers only, and no request waits for the lock meanwhile: appends
 * count with atomics, and no worker of this configuration serves yet.
 */

void
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

    if (sp->sh->next_seq < max_seq + 1) {    /* only up: a new path= */
        sp->sh->next_seq = max_seq + 1;
    }

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
    uint32_t                           crc;
    ngx_uint_t                         i;
    ngx_http_promgate_spool_t        **spp, *sp;
    ngx_http_promgate_spool_replay_t  *rp;
    ngx_http_promgate_main_conf_t     *pmcf;

    pmcf = ngx_http_promgate_worker_conf(cycle, &ngx_http_promgate_module);

    if (pmcf == NULL) {
        return NGX_OK;
    }

    spp = pmcf->spools.elts;

    for (i = 0; i < pmcf->spools.nelts; i++) {
        sp = spp[i];

        if (sp->target == NULL) {
            continue;
        }

        /*
         * Scanned once per directory: a reload that keeps the zone but
         * changes path= counts what the new directory holds (what is left
         * in the old one stays there, said in the log)
         */

        crc = ngx_crc32_short(sp->w.dir->name.data, sp->w.dir->name.len)
              | 1;

        ngx_shmtx_lock(&sp->zone.shpool->mutex);

        if (sp->sh->scanned != crc) {

            if (sp->sh->scanned && sp->sh->records) {
                ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                              "promgate: spool \"%V\" now writes to "
                              "\"%V\": the %uA record(s) left in its "
                              "previous directory are not replayed unless "
                              "their segment files are moved here",
                              &sp->name, &sp->w.dir->name,
                              sp->sh->records);
            }

            ngx_http_promgate_spool_scan(sp, cycle->log);
            sp->sh->scanned = crc;
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

    pmcf = ngx_http_promgate_worker_conf(cycle, &ngx_http_promgate_module);

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
 * NGX_AGAIN: nothing yet; NGX_BUSY: the end of what the batch may take
 * from it; NGX_ERROR: the cursor is gone.
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
                        return NGX_BUSY;
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
            /*
             * The batch's records are not done with yet, and what comes
             * next (maybe in the writer's next segment) may come before
             * other writers' next records: the batch ends here.
             */
            return NGX_BUSY;
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
                                 NGX_HTTP_PROMGATE_SPOOL_JOIN, &n)
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
 * writers; consecutive small remote write 1.0 records with the same
 * headers go in one post (up to NGX_HTTP_PROMGATE_SPOOL_BATCH records or
 * NGX_HTTP_PROMGATE_SPOOL_BATCH_SIZE decoded bytes), any other record
 * alone, its body as it was spooled.
 */

static void
ngx_http_promgate_spool_step(ngx_event_t *ev)
{
    ngx_http_promgate_spool_replay_t *rp = ev->data;

    u_char                            *body;
    size_t                             blen;
    int64_t                            now;
    ngx_int_t                          rc;
    ngx_uint_t                         i, steps, v1, ended;
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
        ended = 0;

        for (i = 0; i < rp->ncursors; i++) {
            c = &rp->cursors[i];

            if (!c->used) {
                continue;
            }

            if (c->frame_len == 0) {
                rc = ngx_http_promgate_spool_read(rp, c);

                if (rc == NGX_BUSY) {
                    ended = 1;
                }

                if (rc != NGX_OK) {
                    continue;
                }
            }

            if (best == NULL || c->seq < best->seq) {
                best = c;
            }
        }

        if (best == NULL || ended) {
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

            /* its body as it is: for a record that goes alone */

            body = ngx_pnalloc(rp->pool, rec.body_len + 1);
            if (body == NULL) {
                break;
            }

            ngx_memcpy(body, rec.body, rec.body_len);
            blen = rec.body_len;

            v1 = (rec.version == 1 && rp->single == 0
                  && ngx_http_promgate_spool_batch_add(rp, &rec) == NGX_OK);

            ngx_http_promgate_spool_take(rp, best);

            if (!v1) {
                break;
            }

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

    if (v1 && rp->batch_n > 1) {
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

    if (ngx_http_promgate_client_post(&rp->post) != NGX_OK) {
        ngx_http_promgate_spool_posted(&rp->post);
    }
}


/* the answer of the write location to a replay */

static void
ngx_http_promgate_spool_posted(ngx_http_promgate_client_post_t *post)
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
