
/*
 * promgate: the exemplar write-ahead log.
 *
 * Every exemplar the ring takes is appended, before the write is
 * answered, to a segment file of the worker's own slot (no cross-process
 * file lock); records carry a sequence number from the zone.  On start,
 * one worker replays all segments, merged by sequence number, under the
 * zone lock before any worker inserts.  fsync, when asked for, runs in
 * nginx's thread pool: from a timer for the open segment, and for every
 * segment that is closed (rotated, or after a write error), which the
 * thread syncs before it closes it, so that fsync=T bounds what a power
 * loss takes.  One task at a time; segments closed while it runs wait for
 * the next.  Segments whose exemplars have all left the ring are deleted.
 */


#include "ngx_http_promgate_module.h"
#include "pg_exemplar.h"
#include "pg_wal.h"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/statvfs.h>


#define NGX_HTTP_PROMGATE_WAL_ERROR_BURST  10000    /* ms between logs */


/*
 * The fsync task's context (ctx->fsync_task->ctx).  The thread reads
 * current, fds and nfds and writes synced and us; the event loop posts it
 * and reads the results in the completion handler, and alone touches the
 * fields below "pending".
 */
typedef struct {
    ngx_fd_t                        current;  /* synced, left open */
    ngx_fd_t                       *fds;      /* synced, then closed */
    ngx_uint_t                      nfds;
    ngx_uint_t                      synced;   /* out */
    ngx_msec_t                      us;       /* out */
    ngx_uint_t                      fds_cap;

    ngx_fd_t                       *pending;  /* closed since the post */
    ngx_uint_t                      npending;
    ngx_uint_t                      pending_cap;
} ngx_http_promgate_wal_sync_t;


static void ngx_http_promgate_wal_open(ngx_http_promgate_exzone_t *ctx,
    uint64_t first_seq, ngx_log_t *log);
static void ngx_http_promgate_wal_close(ngx_http_promgate_exzone_t *ctx,
    ngx_log_t *log);
static void ngx_http_promgate_wal_sync_now(ngx_http_promgate_exzone_t *ctx,
    ngx_fd_t fd, ngx_uint_t close_it);
static void ngx_http_promgate_wal_error(ngx_http_promgate_exzone_t *ctx,
    ngx_err_t err, const char *what, ngx_log_t *log);
static ngx_int_t ngx_http_promgate_wal_replay(ngx_http_promgate_exzone_t *ctx,
    ngx_log_t *log);
static void ngx_http_promgate_wal_cleanup(ngx_http_promgate_exzone_t *ctx,
    ngx_log_t *log);
static void ngx_http_promgate_wal_fsync_timer(ngx_event_t *ev);

#if (NGX_THREADS)
static void ngx_http_promgate_wal_fsync_post(ngx_http_promgate_exzone_t *ctx,
    ngx_uint_t current);
static void ngx_http_promgate_wal_fsync_thread(void *data, ngx_log_t *log);
static void ngx_http_promgate_wal_fsync_done(ngx_event_t *ev);
#endif


/* wal=DIR, fsync=off|TIME, segment=SIZE of promgate_exemplar_zone */

char *
ngx_http_promgate_wal_param(ngx_conf_t *cf, ngx_http_promgate_exzone_t *ctx,
    ngx_str_t *value)
{
    ngx_str_t  s;

    if (ngx_strncmp(value->data, "wal=", 4) == 0) {
        s.data = value->data + 4;
        s.len = value->len - 4;

        if (s.len == 0) {
            goto invalid;
        }

        ctx->wal = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
        if (ctx->wal == NULL) {
            return NGX_CONF_ERROR;
        }

        while (s.len > 1 && s.data[s.len - 1] == '/') {
            s.len--;
        }

        ctx->wal->name = s;
        ctx->wal->data = cf->cycle;     /* for ngx_http_promgate_wal_check() */
        ctx->wal->conf_file = cf->conf_file->file.name.data;
        ctx->wal->line = cf->conf_file->line;

        if (ngx_conf_full_name(cf->cycle, &ctx->wal->name, 0) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        /* NUL-terminated, and its parents made: nginx makes the last one */

        s.data = ngx_pnalloc(cf->pool, ctx->wal->name.len + 1);
        if (s.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(s.data, ctx->wal->name.data, ctx->wal->name.len);
        s.data[ctx->wal->name.len] = '\0';
        ctx->wal->name.data = s.data;

        /* on a copy: ngx_create_full_path() leaves it cut when it fails */

        s.data = ngx_pnalloc(cf->pool, ctx->wal->name.len + 1);
        if (s.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(s.data, ctx->wal->name.data, ctx->wal->name.len + 1);
        (void) ngx_create_full_path(s.data, 0755);

        /* nginx creates it, owned by the workers' user, as its temp paths */

        if (ngx_add_path(cf, &ctx->wal) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (ctx->segment == 0) {
            ctx->segment = 16 * 1024 * 1024;
        }

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "fsync=", 6) == 0) {
        s.data = value->data + 6;
        s.len = value->len - 6;

        if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
            ctx->fsync = 0;
            return NGX_CONF_OK;
        }

        ctx->fsync = ngx_parse_time(&s, 0);

        if (ctx->fsync == (ngx_msec_t) NGX_ERROR || ctx->fsync == 0) {
            goto invalid;
        }

#if (NGX_THREADS)
        ctx->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (ctx->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
#else
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs nginx built --with-threads (fsync "
                           "runs in a thread pool); use fsync=off", value);
        return NGX_CONF_ERROR;
#endif

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "segment=", 8) == 0) {
        s.data = value->data + 8;
        s.len = value->len - 8;

        ctx->segment = ngx_parse_size(&s);

        if (ctx->segment == (size_t) NGX_ERROR
            || ctx->segment < 64 * 1024)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\": a segment size of at least "
                               "64k is expected", value);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" (expected max=, wal=, "
                       "fsync= or segment=)", value);

    return NGX_CONF_ERROR;
}


/*
 * Whether uid (with gid and groups) may do "want" (S_IWOTH, S_IXOTH bits)
 * in a directory, by its mode bits, as the kernel decides for a non-root
 * user.
 */

static ngx_uint_t
ngx_http_promgate_wal_may(ngx_file_info_t *fi, ngx_uid_t uid, gid_t *groups,
    int ngroups, mode_t want)
{
    int  i;

    if (uid == 0) {
        return 1;
    }

    if (fi->st_uid == uid) {
        return (fi->st_mode & (want << 6)) == (want << 6);
    }

    for (i = 0; i < ngroups; i++) {
        if (groups[i] == fi->st_gid) {
            return (fi->st_mode & (want << 3)) == (want << 3);
        }
    }

    return (fi->st_mode & want) == want;
}


/*
 * At configuration time, in the master, once nginx made its paths (it
 * creates the directory and gives it to the workers' user): the WAL
 * directory must be one the workers' user can write into, or "nginx -t"
 * and the start fail naming the path and the user, as they do for nginx's
 * own paths.  A WAL that cannot be written would otherwise be off in
 * silence but for an error every few seconds.
 */

ngx_int_t
ngx_http_promgate_wal_check(ngx_http_promgate_exzone_t *ctx, ngx_log_t *log)
{
    u_char           *p, *dir;
    int               ngroups;
    gid_t             gid, groups[64];
    ngx_uid_t         uid;
    ngx_err_t         err;
    const char       *name, *why;
    ngx_cycle_t      *cycle;
    struct passwd    *pw;
    struct statvfs    vfs;
    ngx_file_info_t   fi;
    ngx_core_conf_t  *ccf;

    dir = ctx->wal->name.data;

    /* the cycle being configured (ngx_cycle is still the previous one) */

    cycle = ctx->wal->data;
    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (ccf == NULL || ccf->user == (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        uid = geteuid();
        gid = getegid();
        pw = getpwuid(uid);
        name = pw ? pw->pw_name : "?";

    } else {
        uid = ccf->user;
        gid = ccf->group;
        name = ccf->username;
    }

    err = 0;
    why = NULL;

    if (ngx_file_info(dir, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;
        why = "cannot be found";
        goto failed;
    }

    if (!ngx_is_dir(&fi)) {
        why = "is not a directory";
        goto failed;
    }

    if (statvfs((char *) dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
        err = EROFS;
        why = "is on a read-only file system";
        goto failed;
    }

    if (uid == geteuid()) {
        /* the workers run as this process (root, or not started as root) */

        if (faccessat(AT_FDCWD, (char *) dir, W_OK|X_OK, AT_EACCESS) != 0) {
            err = ngx_errno;
            why = "cannot be written";
            goto failed;
        }

        return NGX_OK;
    }

    ngroups = 64;

    if (getgrouplist(name, gid, groups, &ngroups) == -1) {
        ngroups = 1;
        groups[0] = gid;
    }

    if (!ngx_http_promgate_wal_may(&fi, uid, groups, ngroups,
                                   S_IWOTH|S_IXOTH))
    {
        err = NGX_EACCES;
        why = "cannot be written";
        goto failed;
    }

    /* and its parents must let that user through */

    for (p = dir + ctx->wal->name.len - 1; p > dir; p--) {

        if (*p != '/') {
            continue;
        }

        *p = '\0';

        if (ngx_file_info(dir, &fi) != NGX_FILE_ERROR
            && !ngx_http_promgate_wal_may(&fi, uid, groups, ngroups, S_IXOTH))
        {
            *p = '/';
            err = NGX_EACCES;
            why = "cannot be reached (a parent directory is closed)";
            goto failed;
        }

        *p = '/';
    }

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_EMERG, log, err,
                  "exemplar WAL directory \"%s\" of zone \"%V\" %s: the "
                  "workers' user \"%s\" (uid %d) must be able to write "
                  "into it; fix it or change wal=",
                  dir, &ctx->name, why, name, (int) uid);

    return NGX_ERROR;
}


/* ------------------------------------------------------------ process */


ngx_int_t
ngx_http_promgate_wal_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i, replayed;
    ngx_shm_zone_t                **zp;
    ngx_http_promgate_exzone_t     *ctx;
    ngx_http_promgate_main_conf_t  *pmcf;

    /* workers only: not the cache manager and loader processes */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_promgate_module);

    if (pmcf == NULL) {
        return NGX_OK;
    }

    zp = pmcf->exemplar_zones.elts;

    for (i = 0; i < pmcf->exemplar_zones.nelts; i++) {
        ctx = zp[i]->data;

        ctx->fd = NGX_INVALID_FILE;
        ctx->fsync_fd = NGX_INVALID_FILE;

        if (ctx->wal == NULL || ctx->ring == NULL) {
            continue;
        }

        /* the first worker to get here replays; the others wait for it */

        ngx_shmtx_lock(&ctx->zone.shpool->mutex);

        replayed = 0;

        if (!ctx->sh->replayed) {
            (void) ngx_http_promgate_wal_replay(ctx, cycle->log);
            ctx->sh->replayed = 1;
            replayed = 1;
        }

        ngx_shmtx_unlock(&ctx->zone.shpool->mutex);

        if (replayed) {
            ngx_http_promgate_wal_cleanup(ctx, cycle->log);
        }

#if (NGX_THREADS)
        if (ctx->fsync) {
            ctx->fsync_task = ngx_thread_task_alloc(cycle->pool,
                                      sizeof(ngx_http_promgate_wal_sync_t));
            if (ctx->fsync_task == NULL) {
                return NGX_ERROR;
            }

            ctx->fsync_task->handler = ngx_http_promgate_wal_fsync_thread;
            ctx->fsync_task->event.handler = ngx_http_promgate_wal_fsync_done;
            ctx->fsync_task->event.data = ctx;
            ctx->fsync_task->event.log = cycle->log;
        }
#endif

        if (ctx->fsync) {
            ctx->fsync_timer.handler = ngx_http_promgate_wal_fsync_timer;
            ctx->fsync_timer.data = ctx;
            ctx->fsync_timer.log = cycle->log;
            ctx->fsync_timer.cancelable = 1;
            ngx_add_timer(&ctx->fsync_timer, ctx->fsync);
        }
    }

    return NGX_OK;
}


void
ngx_http_promgate_wal_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
#if (NGX_THREADS)
    ngx_uint_t                      k;
    ngx_http_promgate_wal_sync_t   *sync;
#endif
    ngx_shm_zone_t                **zp;
    ngx_http_promgate_exzone_t     *ctx;
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

    zp = pmcf->exemplar_zones.elts;

    for (i = 0; i < pmcf->exemplar_zones.nelts; i++) {
        ctx = zp[i]->data;

        if (ctx->wal == NULL) {
            continue;
        }

        /*
         * The last interval's records and the segments closed since the
         * last task: a quit is a fine time to wait.  The thread pool has
         * stopped (its module exits first), so a task's own segments were
         * synced and closed by it.
         */

#if (NGX_THREADS)
        if (ctx->fsync_task) {
            sync = ctx->fsync_task->ctx;

            for (k = 0; k < sync->npending; k++) {
                ngx_http_promgate_wal_sync_now(ctx, sync->pending[k], 1);
            }

            sync->npending = 0;
        }
#endif

        if (ctx->fd != NGX_INVALID_FILE) {
            if (ctx->fsync && ctx->dirty) {
                ngx_http_promgate_wal_sync_now(ctx, ctx->fd, 0);
            }

            (void) ngx_close_file(ctx->fd);
            ctx->fd = NGX_INVALID_FILE;
        }
    }
}


/* ------------------------------------------------------------ writing */


static void
ngx_http_promgate_wal_open(ngx_http_promgate_exzone_t *ctx,
    uint64_t first_seq, ngx_log_t *log)
{
    u_char                         *p;
    char                            name[PG_WAL_NAME_MAX];
    ngx_http_promgate_wal_stats_t  *st;

    if (ctx->path == NULL) {
        ctx->path = ngx_alloc(NGX_MAX_PATH, log);
        if (ctx->path == NULL) {
            return;
        }
    }

    if (pg_wal_segment_name(name, sizeof(name), (char *) ctx->name.data,
                            (unsigned) ngx_worker, first_seq)
        == 0)
    {
        return;
    }

    p = ngx_snprintf(ctx->path, NGX_MAX_PATH - 1, "%V/%s", &ctx->wal->name,
                     name);
    *p = '\0';

    ctx->fd = ngx_open_file(ctx->path, NGX_FILE_APPEND,
                            NGX_FILE_CREATE_OR_OPEN, NGX_FILE_DEFAULT_ACCESS);

    if (ctx->fd == NGX_INVALID_FILE) {
        ngx_http_promgate_wal_error(ctx, ngx_errno, (char *) ctx->path, log);
        ctx->retry_open = ngx_current_msec + 1000;
        return;
    }

    ctx->fd_size = 0;

    st = &ctx->sh->wal;
    (void) ngx_atomic_fetch_add(&st->segments_created, 1);
}


/*
 * Closes the open segment.  With fsync= it is synced first, in the thread
 * pool: the thread closes it afterwards.
 */

static void
ngx_http_promgate_wal_close(ngx_http_promgate_exzone_t *ctx, ngx_log_t *log)
{
    ngx_fd_t                       fd, *more;
#if (NGX_THREADS)
    ngx_http_promgate_wal_sync_t  *sync;
#endif

    fd = ctx->fd;

    if (fd == NGX_INVALID_FILE) {
        return;
    }

    ctx->fd = NGX_INVALID_FILE;
    ctx->dirty = 0;

    if (!ctx->fsync) {
        (void) ngx_close_file(fd);
        return;
    }

#if (NGX_THREADS)
    sync = ctx->fsync_task->ctx;

    if (sync->npending == sync->pending_cap) {
        more = ngx_alloc((sync->pending_cap * 2 + 8) * sizeof(ngx_fd_t), log);

        if (more == NULL) {
            ngx_http_promgate_wal_sync_now(ctx, fd, 1);
            return;
        }

        if (sync->npending) {
            ngx_memcpy(more, sync->pending, sync->npending * sizeof(ngx_fd_t));
        }

        ngx_free(sync->pending);
        sync->pending = more;
        sync->pending_cap = sync->pending_cap * 2 + 8;
    }

    sync->pending[sync->npending++] = fd;

    ngx_http_promgate_wal_fsync_post(ctx, 0);
#else
    (void) more;
    ngx_http_promgate_wal_sync_now(ctx, fd, 1);
#endif
}


/* fsync in the event loop, counted: when no thread can do it */

static void
ngx_http_promgate_wal_sync_now(ngx_http_promgate_exzone_t *ctx, ngx_fd_t fd,
    ngx_uint_t close_it)
{
    struct timeval                  t0, t1;
    ngx_http_promgate_wal_stats_t  *st;

    ngx_gettimeofday(&t0);
    (void) fsync(fd);
    ngx_gettimeofday(&t1);

    st = &ctx->sh->wal;
    (void) ngx_atomic_fetch_add(&st->fsyncs, 1);
    (void) ngx_atomic_fetch_add(&st->fsync_us,
                                (t1.tv_sec - t0.tv_sec) * 1000000
                                + (t1.tv_usec - t0.tv_usec));

    if (close_it) {
        (void) ngx_close_file(fd);
    }
}


static void
ngx_http_promgate_wal_error(ngx_http_promgate_exzone_t *ctx, ngx_err_t err,
    const char *what, ngx_log_t *log)
{
    ngx_http_promgate_wal_stats_t  *st;

    st = &ctx->sh->wal;
    (void) ngx_atomic_fetch_add(&st->write_errors, 1);

    /* once per burst: a full disk must not flood the error log */

    if (ctx->last_error
        && ngx_current_msec - ctx->last_error
           < NGX_HTTP_PROMGATE_WAL_ERROR_BURST)
    {
        return;
    }

    ctx->last_error = ngx_current_msec;

    ngx_log_error(NGX_LOG_ERR, log, err,
                  "promgate: exemplar WAL of zone \"%V\" could not write "
                  "\"%s\"; exemplars are still served from memory but may "
                  "not survive a restart (further errors in the next %ds "
                  "are only counted)", &ctx->name, what,
                  NGX_HTTP_PROMGATE_WAL_ERROR_BURST / 1000);
}


void
ngx_http_promgate_wal_append(ngx_http_promgate_exzone_t *ctx, u_char *frames,
    size_t len, uint64_t first_seq, ngx_uint_t nrecords)
{
    ssize_t                         n;
    ngx_uint_t                      empty;
    ngx_log_t                      *log;
    ngx_http_promgate_wal_stats_t  *st;

    log = ngx_cycle->log;
    st = &ctx->sh->wal;

    if (ctx->fd == NGX_INVALID_FILE) {

        /*
         * After a failure (a full disk) a new segment is tried once a
         * second, not per write: the records meanwhile are counted lost.
         */

        if (ctx->retry_open
            && (ngx_msec_int_t) (ngx_current_msec - ctx->retry_open) < 0)
        {
            (void) ngx_atomic_fetch_add(&st->write_errors, 1);
            return;
        }

        ngx_http_promgate_wal_open(ctx, first_seq, log);

        if (ctx->fd == NGX_INVALID_FILE) {
            return;
        }
    }

    while (len) {
        n = write(ctx->fd, frames, len);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            ngx_http_promgate_wal_error(ctx, ngx_errno,
                                        (char *) ctx->path, log);

            /*
             * A partial frame is a torn tail: the next records go to a new
             * segment.  A segment that took nothing is removed, so a full
             * disk does not fill the directory with empty files.
             */

            empty = (ctx->fd_size == 0);
            ngx_http_promgate_wal_close(ctx, log);

            if (empty) {
                (void) ngx_delete_file(ctx->path);
            }

            ctx->retry_open = ngx_current_msec + 1000;
            return;
        }

        frames += n;
        len -= n;
        ctx->fd_size += n;

        (void) ngx_atomic_fetch_add(&st->bytes, n);
    }

    ctx->dirty = 1;

    (void) ngx_atomic_fetch_add(&st->records, nrecords);

    if ((size_t) ctx->fd_size >= ctx->segment) {
        ngx_http_promgate_wal_close(ctx, log);
        ngx_http_promgate_wal_cleanup(ctx, log);
    }
}


/*
 * Deletes the segments all of whose exemplars have left the ring: the
 * next segment of the same slot starts at or below the oldest live one.
 */

static void
ngx_http_promgate_wal_cleanup(ngx_http_promgate_exzone_t *ctx, ngx_log_t *log)
{
    u_char                         *p;
    DIR                            *dir;
    uint64_t                        oldest, seq;
    unsigned                        slot;
    ngx_uint_t                      i, n, cap;
    struct dirent                  *de;
    pg_exring_stats_t               es;
    pg_wal_segment_t               *segs, *more;
    ngx_http_promgate_wal_stats_t  *st;

    u_char                          path[NGX_MAX_PATH];

    ngx_shmtx_lock(&ctx->zone.shpool->mutex);

    pg_exring_stats(ctx->ring, &es);

    if (es.exemplars) {
        oldest = ctx->sh->wal_seq[(es.seq - es.exemplars + 1) % ctx->max];
    } else {
        oldest = ctx->sh->wal_next;
    }

    ngx_shmtx_unlock(&ctx->zone.shpool->mutex);

    dir = opendir((char *) ctx->wal->name.data);
    if (dir == NULL) {
        return;
    }

    n = 0;
    cap = 0;
    segs = NULL;

    while ((de = readdir(dir)) != NULL) {
        if (pg_wal_segment_parse(de->d_name, (char *) ctx->name.data, &slot,
                                 &seq)
            != 0)
        {
            continue;
        }

        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            more = realloc(segs, cap * sizeof(pg_wal_segment_t));
            if (more == NULL) {
                break;
            }
            segs = more;
        }

        segs[n].slot = slot;
        segs[n].first_seq = seq;
        n++;
    }

    closedir(dir);

    if (segs == NULL) {
        return;
    }

    pg_wal_mark_deletable(segs, n, oldest);

    st = &ctx->sh->wal;

    for (i = 0; i < n; i++) {
        if (!segs[i].deletable) {
            continue;
        }

        p = ngx_snprintf(path, sizeof(path) - PG_WAL_NAME_MAX, "%V/",
                         &ctx->wal->name);

        if (pg_wal_segment_name((char *) p, PG_WAL_NAME_MAX,
                                (char *) ctx->name.data, segs[i].slot,
                                segs[i].first_seq)
            == 0)
        {
            continue;
        }

        if (unlink((char *) path) == 0) {
            (void) ngx_atomic_fetch_add(&st->segments_deleted, 1);

        } else if (ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "promgate: could not delete WAL segment \"%s\"",
                          path);
        }
    }

    free(segs);
}


/* ------------------------------------------------------------- fsync */


static void
ngx_http_promgate_wal_fsync_timer(ngx_event_t *ev)
{
    ngx_http_promgate_exzone_t *ctx = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, ctx->fsync);

#if (NGX_THREADS)
    ngx_http_promgate_wal_fsync_post(ctx, 1);
#endif
}


#if (NGX_THREADS)

/*
 * Posts the task, unless it runs: the segments closed since the last post
 * and, from the timer, the open segment if it took records since.
 */

static void
ngx_http_promgate_wal_fsync_post(ngx_http_promgate_exzone_t *ctx,
    ngx_uint_t current)
{
    ngx_fd_t                      *fds;
    ngx_uint_t                     i, cap;
    ngx_http_promgate_wal_sync_t  *sync;

    if (ctx->fsync_running) {
        return;
    }

    sync = ctx->fsync_task->ctx;

    sync->current = NGX_INVALID_FILE;

    if (current && ctx->dirty && ctx->fd != NGX_INVALID_FILE) {
        sync->current = ctx->fd;
    }

    if (sync->current == NGX_INVALID_FILE && sync->npending == 0) {
        return;
    }

    /* the closed segments go to the thread; the list is refilled anew */

    fds = sync->fds;
    cap = sync->fds_cap;

    sync->fds = sync->pending;
    sync->fds_cap = sync->pending_cap;
    sync->nfds = sync->npending;

    sync->pending = fds;
    sync->pending_cap = cap;
    sync->npending = 0;

    sync->synced = 0;
    sync->us = 0;

    if (ngx_thread_task_post(ctx->thread_pool, ctx->fsync_task) == NGX_OK) {
        ctx->fsync_running = 1;
        ctx->fsync_fd = sync->current;
        ctx->dirty = (sync->current == NGX_INVALID_FILE) ? ctx->dirty : 0;
        return;
    }

    /* the pool's queue is full: the closed segments cannot wait */

    for (i = 0; i < sync->nfds; i++) {
        ngx_http_promgate_wal_sync_now(ctx, sync->fds[i], 1);
    }

    sync->nfds = 0;
}


static void
ngx_http_promgate_wal_fsync_thread(void *data, ngx_log_t *log)
{
    ngx_http_promgate_wal_sync_t *sync = data;

    ngx_uint_t      i;
    struct timeval  t0, t1;

    ngx_gettimeofday(&t0);

    if (sync->current != NGX_INVALID_FILE) {
        (void) fsync(sync->current);
        sync->synced++;
    }

    for (i = 0; i < sync->nfds; i++) {
        (void) fsync(sync->fds[i]);
        (void) close(sync->fds[i]);
        sync->synced++;
    }

    ngx_gettimeofday(&t1);

    sync->us = (t1.tv_sec - t0.tv_sec) * 1000000
               + (t1.tv_usec - t0.tv_usec);
}


static void
ngx_http_promgate_wal_fsync_done(ngx_event_t *ev)
{
    ngx_http_promgate_exzone_t *ctx = ev->data;

    ngx_http_promgate_wal_sync_t   *sync;
    ngx_http_promgate_wal_stats_t  *st;

    sync = ctx->fsync_task->ctx;

    st = &ctx->sh->wal;
    (void) ngx_atomic_fetch_add(&st->fsyncs, sync->synced);
    (void) ngx_atomic_fetch_add(&st->fsync_us, sync->us);

    sync->nfds = 0;
    ctx->fsync_running = 0;
    ctx->fsync_fd = NGX_INVALID_FILE;

    /* segments closed meanwhile: synced now, not at the next tick */

    ngx_http_promgate_wal_fsync_post(ctx, 0);
}

#endif


/* ------------------------------------------------------------ replay */


typedef struct {
    ngx_array_t      entries;      /* pg_wal_entry_t */
    uint32_t         segment;
} ngx_http_promgate_replay_t;


static int
ngx_http_promgate_wal_collect(void *data, const uint8_t *payload, size_t len,
    uint64_t seq, size_t offset)
{
    ngx_http_promgate_replay_t *rp = data;

    pg_wal_entry_t  *e;

    e = ngx_array_push(&rp->entries);
    if (e == NULL) {
        return -1;
    }

    e->seq = seq;
    e->payload = payload;
    e->len = (uint32_t) len;
    e->segment = rp->segment;

    return 0;
}


static ngx_int_t
ngx_http_promgate_wal_replay(ngx_http_promgate_exzone_t *ctx, ngx_log_t *log)
{
    u_char                         *p, *data;
    size_t                          n, first, i;
    ssize_t                         rd;
    DIR                            *dir;
    uint64_t                        seq, max_seq, ring_seq;
    unsigned                        slot;
    ngx_fd_t                        fd;
    ngx_msec_t                      start;
    ngx_pool_t                     *pool;
    struct dirent                  *de;
    pg_wal_scan_t                   res;
    pg_allocator_t                  alloc;
    pg_wal_record_t                 rec;
    pg_wal_entry_t                 *e;
    ngx_file_info_t                 fi;
    ngx_http_promgate_wal_stats_t  *st;
    ngx_http_promgate_replay_t      rp;

    u_char                          path[NGX_MAX_PATH];

    ngx_time_update();
    start = ngx_current_msec;

    st = &ctx->sh->wal;

    pool = ngx_create_pool(64 * 1024, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&rp.entries, pool, 1024, sizeof(pg_wal_entry_t))
        != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    dir = opendir((char *) ctx->wal->name.data);

    if (dir == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "promgate: exemplar WAL directory \"%V\" cannot be "
                      "read; nothing replayed", &ctx->wal->name);
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    rp.segment = 0;
    max_seq = 0;

    while ((de = readdir(dir)) != NULL) {

        if (pg_wal_segment_parse(de->d_name, (char *) ctx->name.data, &slot,
                                 &seq)
            != 0)
        {
            continue;
        }

        p = ngx_snprintf(path, sizeof(path) - 1, "%V/%s", &ctx->wal->name,
                         de->d_name);
        *p = '\0';

        fd = ngx_open_file(path, NGX_FILE_RDWR, NGX_FILE_OPEN, 0);

        if (fd == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "promgate: WAL segment \"%s\" cannot be opened; "
                          "skipped", path);
            continue;
        }

        if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
            || ngx_file_size(&fi) == 0)
        {
            (void) ngx_close_file(fd);
            continue;
        }

        data = ngx_palloc(pool, (size_t) ngx_file_size(&fi));
        if (data == NULL) {
            (void) ngx_close_file(fd);
            break;
        }

        rd = pread(fd, data, (size_t) ngx_file_size(&fi), 0);

        if (rd != (ssize_t) ngx_file_size(&fi)) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "promgate: WAL segment \"%s\" cannot be read; "
                          "skipped", path);
            (void) ngx_close_file(fd);
            continue;
        }

        pg_wal_scan(data, (size_t) rd, ngx_http_promgate_wal_collect, &rp,
                    &res);

        if (res.corrupt) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "promgate: WAL segment \"%s\": %uL corrupt "
                          "record(s) skipped", path, res.corrupt);
            (void) ngx_atomic_fetch_add(&st->corrupt_records,
                                        res.corrupt);
        }

        if (res.torn) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "promgate: WAL segment \"%s\": torn or corrupt "
                          "tail cut off at offset %uz (%uz bytes)", path,
                          res.torn_offset, (size_t) rd - res.torn_offset);

            if (ftruncate(fd, (off_t) res.torn_offset) == -1) {
                ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                              "promgate: ftruncate(\"%s\") failed", path);
            }

            (void) ngx_atomic_fetch_add(&st->truncations, 1);
        }

        if (res.last_seq > max_seq) {
            max_seq = res.last_seq;
        }

        (void) ngx_close_file(fd);
        rp.segment++;
    }

    closedir(dir);

    /* the last max records, in sequence order, are what the ring held */

    n = rp.entries.nelts;
    e = rp.entries.elts;
    first = pg_wal_merge(e, &n, ctx->max);

    alloc.alloc = ngx_http_promgate_pool_alloc;
    alloc.ctx = pool;

    for (i = 0; i < n; i++) {
        if (e[i].seq > max_seq) {
            max_seq = e[i].seq;
        }
    }

    for (i = first; i < n; i++) {
        if (pg_wal_decode(e[i].payload, e[i].len, &alloc, &rec) != 0) {
            (void) ngx_atomic_fetch_add(&st->corrupt_records, 1);
            continue;
        }

        if (pg_exring_insert(ctx->ring, rec.tenant, rec.series, rec.nseries,
                             rec.labels, rec.nlabels, rec.value, rec.ts,
                             &ring_seq)
            == PG_EXRING_ADDED)
        {
            ctx->sh->wal_seq[ring_seq % ctx->max] = rec.seq;
        }
    }

    ctx->sh->wal_next = max_seq + 1;

    ngx_time_update();

    (void) ngx_atomic_fetch_add(&st->replays, 1);
    (void) ngx_atomic_fetch_add(&st->replayed_records, n - first);
    (void) ngx_atomic_fetch_add(&st->replay_ms,
                                ngx_current_msec - start);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "promgate: exemplar zone \"%V\": replayed %uz exemplars "
                  "from the WAL in \"%V\" in %Mms", &ctx->name, n - first,
                  &ctx->wal->name, ngx_current_msec - start);

    ngx_destroy_pool(pool);

    /* the zone lock is held by the caller: cleanup takes it itself */

    return NGX_OK;
}


/* --------------------------------------------------------------- status */


static ngx_http_promgate_metric_t  ngx_http_promgate_wal_metrics[] = {
    { "promgate_wal_records_total", "counter", "Exemplar records appended.",
      offsetof(ngx_http_promgate_wal_stats_t, records) },
    { "promgate_wal_bytes_total", "counter",
      "Bytes appended to WAL segments.",
      offsetof(ngx_http_promgate_wal_stats_t, bytes) },
    { "promgate_wal_write_errors_total", "counter",
      "WAL opens and writes that failed (full disk, permissions).",
      offsetof(ngx_http_promgate_wal_stats_t, write_errors) },
    { "promgate_wal_segments_created_total", "counter",
      "WAL segments opened.",
      offsetof(ngx_http_promgate_wal_stats_t, segments_created) },
    { "promgate_wal_segments_deleted_total", "counter",
      "WAL segments deleted once the ring no longer held their "
      "exemplars.",
      offsetof(ngx_http_promgate_wal_stats_t, segments_deleted) },
    { "promgate_wal_fsyncs_total", "counter",
      "fsync calls on WAL segments.",
      offsetof(ngx_http_promgate_wal_stats_t, fsyncs) },

    { "promgate_wal_replays_total", "counter", "WAL replays at start.",
      offsetof(ngx_http_promgate_wal_stats_t, replays) },
    { "promgate_wal_replayed_records_total", "counter",
      "Exemplars restored from the WAL.",
      offsetof(ngx_http_promgate_wal_stats_t, replayed_records) },

    { "promgate_wal_truncations_total", "counter",
      "Segments whose torn tail was cut off on replay.",
      offsetof(ngx_http_promgate_wal_stats_t, truncations) },
    { "promgate_wal_corrupt_records_total", "counter",
      "Corrupt records skipped on replay.",
      offsetof(ngx_http_promgate_wal_stats_t, corrupt_records) },
};


/* the counters of every exemplar zone's WAL, summed */

void
ngx_http_promgate_wal_status(ngx_http_promgate_text_t *t, void *data)
{
    ngx_http_promgate_wal_stats_t  st;

    /* the struct holds counters only */

    ngx_http_promgate_zones_sum(data,
                                offsetof(ngx_http_promgate_exshm_t, wal),
                                sizeof(ngx_http_promgate_wal_stats_t)
                                / sizeof(ngx_atomic_t),
                                (ngx_atomic_t *) &st);

    ngx_http_promgate_text_counters(t, ngx_http_promgate_wal_metrics,
                                    sizeof(ngx_http_promgate_wal_metrics)
                                    / sizeof(ngx_http_promgate_metric_t),
                                    &st);

    ngx_http_promgate_text_family(t, "promgate_wal_fsync_seconds_total",
                                  "counter", "Time spent in fsync, in the "
                                  "thread pool.");
    ngx_http_promgate_text_sample(t, "promgate_wal_fsync_seconds_total",
                                  NULL, 0, "%uA.%06uA",
                                  st.fsync_us / 1000000,
                                  st.fsync_us % 1000000);

    ngx_http_promgate_text_family(t, "promgate_wal_replay_seconds_total",
                                  "counter", "Time spent replaying the WAL "
                                  "at start.");
    ngx_http_promgate_text_sample(t, "promgate_wal_replay_seconds_total",
                                  NULL, 0, "%uA.%03uA",
                                  st.replay_ms / 1000, st.replay_ms % 1000);
}
