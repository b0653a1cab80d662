
/*
 * promgate: segment files, and the exemplar write-ahead log built on them.
 *
 * Segment files (ngx_http_promgate_segw_t) are what the exemplar WAL and
 * the spools (ngx_http_promgate_spool.c) write: CRC-framed records
 * (pg_wal.h) appended by each process to segments of its own, named by
 * its pid and the sequence number of their first record (no
 * cross-process file lock; the sequence numbers come from the owner's
 * shared zone).  A write that fails is cut back, so a segment never holds
 * half a record but where a process was killed mid-write.  fsync, when
 * asked for, runs in nginx's thread pool: from a timer for the open
 * segment, and for every segment that is closed (rotated, or after a
 * write error), which the thread syncs before it closes it, so that
 * fsync=T bounds what a power loss takes.  One task at a time; segments
 * closed while it runs wait for the next.
 *
 * The exemplar WAL: every exemplar the ring takes is appended before the
 * write is answered.  On start, one worker replays all segments, merged
 * by sequence number, under the zone lock before any worker inserts.
 * Segments whose exemplars have all left the ring are deleted.
 */


#include "ngx_http_promgate_module.h"
#include "pg_exemplar.h"
#include "pg_wal.h"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/statvfs.h>
#include <sys/uio.h>


#define NGX_HTTP_PROMGATE_WAL_ERROR_BURST  10000    /* ms between logs */


/*
 * The fsync task's context (w->fsync_task->ctx).  The thread reads
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


static void ngx_http_promgate_segw_open(ngx_http_promgate_segw_t *w,
    uint64_t first_seq, ngx_log_t *log);
static void ngx_http_promgate_segw_sync_now(ngx_http_promgate_segw_t *w,
    ngx_fd_t fd, ngx_uint_t close_it);
static void ngx_http_promgate_segw_error(ngx_http_promgate_segw_t *w,
    ngx_err_t err, const char *what, ngx_log_t *log);
static void ngx_http_promgate_segw_fsync_timer(ngx_event_t *ev);
#if (NGX_THREADS)
static void ngx_http_promgate_segw_fsync_post(ngx_http_promgate_segw_t *w,
    ngx_uint_t current);
static void ngx_http_promgate_segw_fsync_thread(void *data, ngx_log_t *log);
static void ngx_http_promgate_segw_fsync_done(ngx_event_t *ev);
#endif

static ngx_int_t ngx_http_promgate_wal_replay(ngx_http_promgate_exzone_t *ctx,
    ngx_log_t *log);
static void ngx_http_promgate_wal_cleanup(ngx_http_promgate_exzone_t *ctx,
    ngx_log_t *log);


/* ------------------------------------------------------ configuration */


/*
 * The directory (dirparam, "wal=" or "path="), fsync=off|TIME and
 * segment=SIZE of a zone or spool: NGX_OK, NGX_DECLINED if value is none
 * of them, NGX_ERROR (logged).
 */

ngx_int_t
ngx_http_promgate_segw_param(ngx_conf_t *cf, ngx_http_promgate_segw_t *w,
    ngx_str_t *value, const char *dirparam)
{
    size_t     dl;
    ngx_str_t  s;

    dl = ngx_strlen(dirparam);

    if (value->len >= dl
        && ngx_strncmp(value->data, dirparam, dl) == 0)
    {
        s.data = value->data + dl;
        s.len = value->len - dl;

        if (s.len == 0) {
            goto invalid;
        }

        w->dir = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
        if (w->dir == NULL) {
            return NGX_ERROR;
        }

        while (s.len > 1 && s.data[s.len - 1] == '/') {
            s.len--;
        }

        w->dir->name = s;
        w->dir->data = cf->cycle;     /* for ngx_http_promgate_segw_check() */
        w->dir->conf_file = cf->conf_file->file.name.data;
        w->dir->line = cf->conf_file->line;

        if (ngx_conf_full_name(cf->cycle, &w->dir->name, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        /* NUL-terminated, and its parents made: nginx makes the last one */

        s.data = ngx_pnalloc(cf->pool, w->dir->name.len + 1);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(s.data, w->dir->name.data, w->dir->name.len);
        s.data[w->dir->name.len] = '\0';
        w->dir->name.data = s.data;

        /* on a copy: ngx_create_full_path() leaves it cut when it fails */

        s.data = ngx_pnalloc(cf->pool, w->dir->name.len + 1);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        ngx_cpystrn(s.data, w->dir->name.data, w->dir->name.len + 1);
        (void) ngx_create_full_path(s.data, 0755);

        /* nginx creates it, owned by the workers' user, as its temp paths */

        if (ngx_add_path(cf, &w->dir) != NGX_OK) {
            return NGX_ERROR;
        }

        if (w->segment == 0) {
            w->segment = 16 * 1024 * 1024;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "fsync=", 6) == 0) {
        s.data = value->data + 6;
        s.len = value->len - 6;

        if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
            w->fsync = 0;
            return NGX_OK;
        }

        w->fsync = ngx_parse_time(&s, 0);

        if (w->fsync == (ngx_msec_t) NGX_ERROR || w->fsync == 0) {
            goto invalid;
        }

#if (NGX_THREADS)
        w->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (w->thread_pool == NULL) {
            return NGX_ERROR;
        }
#else
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs nginx built --with-threads (fsync "
                           "runs in a thread pool); use fsync=off", value);
        return NGX_ERROR;
#endif

        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "segment=", 8) == 0) {
        s.data = value->data + 8;
        s.len = value->len - 8;

        w->segment = ngx_parse_size(&s);

        if (w->segment == (size_t) NGX_ERROR
            || w->segment < 64 * 1024)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\": a segment size of at least "
                               "64k is expected", value);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    return NGX_DECLINED;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       value);

    return NGX_ERROR;
}


/*
 * Whether uid (with gid and groups) may do "want" (S_IWOTH, S_IXOTH bits)
 * in a directory, by its mode bits, as the kernel decides for a non-root
 * user.
 */

static ngx_uint_t
ngx_http_promgate_segw_may(ngx_file_info_t *fi, ngx_uid_t uid, gid_t *groups,
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
 * creates the directory and gives it to the workers' user): the directory
 * must be one the workers' user can write into, or "nginx -t" and the
 * start fail naming the path and the user, as they do for nginx's own
 * paths.  A WAL or spool that cannot be written would otherwise be off in
 * silence but for an error every few seconds.
 */

ngx_int_t
ngx_http_promgate_segw_check(ngx_http_promgate_segw_t *w, ngx_log_t *log)
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

    dir = w->dir->name.data;

    /* the cycle being configured (ngx_cycle is still the previous one) */

    cycle = w->dir->data;
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

    if (!ngx_http_promgate_segw_may(&fi, uid, groups, ngroups,
                                   S_IWOTH|S_IXOTH))
    {
        err = NGX_EACCES;
        why = "cannot be written";
        goto failed;
    }

    /* and its parents must let that user through */

    for (p = dir + w->dir->name.len - 1; p > dir; p--) {

        if (*p != '/') {
            continue;
        }

        *p = '\0';

        if (ngx_file_info(dir, &fi) != NGX_FILE_ERROR
            && !ngx_http_promgate_segw_may(&fi, uid, groups, ngroups, S_IXOTH))
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
                  "%s directory \"%s\" of %s \"%V\" %s: the workers' "
                  "user \"%s\" (uid %d) must be able to write into it; fix "
                  "it or change %s", w->kind, dir, w->owner, &w->name, why,
                  name, (int) uid, w->dirparam);

    return NGX_ERROR;
}




/* ------------------------------------------------------------ process */


/* a process's own part: no segment open yet, the fsync task and timer */

ngx_int_t
ngx_http_promgate_segw_init(ngx_http_promgate_segw_t *w, ngx_cycle_t *cycle)
{
    w->fd = NGX_INVALID_FILE;
    w->fsync_fd = NGX_INVALID_FILE;

    if (w->dir == NULL || w->fsync == 0) {
        return NGX_OK;
    }

#if (NGX_THREADS)
    w->fsync_task = ngx_thread_task_alloc(cycle->pool,
                                          sizeof(ngx_http_promgate_wal_sync_t));
    if (w->fsync_task == NULL) {
        return NGX_ERROR;
    }

    w->fsync_task->handler = ngx_http_promgate_segw_fsync_thread;
    w->fsync_task->event.handler = ngx_http_promgate_segw_fsync_done;
    w->fsync_task->event.data = w;
    w->fsync_task->event.log = cycle->log;
#endif

    w->fsync_timer.handler = ngx_http_promgate_segw_fsync_timer;
    w->fsync_timer.data = w;
    w->fsync_timer.log = cycle->log;
    w->fsync_timer.cancelable = 1;
    ngx_add_timer(&w->fsync_timer, w->fsync);

    return NGX_OK;
}


/*
 * The last interval's records and the segments closed since the last
 * task: a quit is a fine time to wait.  The thread pool has stopped (its
 * module exits first), so a task's own segments were synced and closed by
 * it.
 */

void
ngx_http_promgate_segw_exit(ngx_http_promgate_segw_t *w)
{
#if (NGX_THREADS)
    ngx_uint_t                     k;
    ngx_http_promgate_wal_sync_t  *sync;

    if (w->fsync_task) {
        sync = w->fsync_task->ctx;

        for (k = 0; k < sync->npending; k++) {
            ngx_http_promgate_segw_sync_now(w, sync->pending[k], 1);
        }

        sync->npending = 0;
    }
#endif

    if (w->fd != NGX_INVALID_FILE) {
        if (w->fsync && w->dirty) {
            ngx_http_promgate_segw_sync_now(w, w->fd, 0);
        }

        (void) ngx_close_file(w->fd);
        w->fd = NGX_INVALID_FILE;
    }
}


ngx_int_t
ngx_http_promgate_wal_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i, replayed;
    ngx_shm_zone_t                **zp;
    ngx_http_promgate_exzone_t     *ctx;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_promgate_worker_conf(cycle, &ngx_http_promgate_module);

    if (pmcf == NULL) {
        return NGX_OK;
    }

    zp = pmcf->exemplar_zones.elts;

    for (i = 0; i < pmcf->exemplar_zones.nelts; i++) {
        ctx = zp[i]->data;

        ctx->w.fd = NGX_INVALID_FILE;
        ctx->w.fsync_fd = NGX_INVALID_FILE;

        if (ctx->w.dir == NULL || ctx->ring == NULL) {
            continue;
        }

        ctx->w.st = &ctx->sh->wal;

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

        if (ngx_http_promgate_segw_init(&ctx->w, cycle) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_promgate_wal_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_shm_zone_t                **zp;
    ngx_http_promgate_exzone_t     *ctx;
    ngx_http_promgate_main_conf_t  *pmcf;

    pmcf = ngx_http_promgate_worker_conf(cycle, &ngx_http_promgate_module);

    if (pmcf == NULL) {
        return;
    }

    zp = pmcf->exemplar_zones.elts;

    for (i = 0; i < pmcf->exemplar_zones.nelts; i++) {
        ctx = zp[i]->data;

        if (ctx->w.dir) {
            ngx_http_promgate_segw_exit(&ctx->w);
        }
    }
}


/* ------------------------------------------------------------ writing */


static void
ngx_http_promgate_segw_open(ngx_http_promgate_segw_t *w, uint64_t first_seq,
    ngx_log_t *log)
{
    u_char  *p;
    char     name[PG_WAL_NAME_MAX];

    if (w->path == NULL) {
        w->path = ngx_alloc(NGX_MAX_PATH, log);
        if (w->path == NULL) {
            return;
        }
    }

    if (pg_wal_segment_name(name, sizeof(name), (char *) w->name.data,
                            (unsigned) ngx_pid, first_seq)
        == 0)
    {
        return;
    }

    p = ngx_snprintf(w->path, NGX_MAX_PATH - 1, "%V/%s", &w->dir->name,
                     name);
    *p = '\0';

    w->fd = ngx_open_file(w->path, NGX_FILE_APPEND,
                          NGX_FILE_CREATE_OR_OPEN, NGX_FILE_DEFAULT_ACCESS);

    if (w->fd == NGX_INVALID_FILE) {
        ngx_http_promgate_segw_error(w, ngx_errno, (char *) w->path, log);
        w->retry_open = ngx_current_msec + 1000;
        return;
    }

    w->fd_size = 0;
    w->first_seq = first_seq;

    (void) ngx_atomic_fetch_add(&w->st->segments_created, 1);
}


/*
 * Closes the open segment.  With fsync= it is synced first, in the thread
 * pool: the thread closes it afterwards.
 */

void
ngx_http_promgate_segw_close(ngx_http_promgate_segw_t *w, ngx_log_t *log)
{
    ngx_fd_t                       fd, *more;
#if (NGX_THREADS)
    ngx_http_promgate_wal_sync_t  *sync;
#endif

    fd = w->fd;

    if (fd == NGX_INVALID_FILE) {
        return;
    }

    w->fd = NGX_INVALID_FILE;
    w->dirty = 0;

    if (!w->fsync) {
        (void) ngx_close_file(fd);
        return;
    }

#if (NGX_THREADS)
    sync = w->fsync_task->ctx;

    if (sync->npending == sync->pending_cap) {
        more = ngx_alloc((sync->pending_cap * 2 + 8) * sizeof(ngx_fd_t), log);

        if (more == NULL) {
            ngx_http_promgate_segw_sync_now(w, fd, 1);
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

    ngx_http_promgate_segw_fsync_post(w, 0);
#else
    (void) more;
    ngx_http_promgate_segw_sync_now(w, fd, 1);
#endif
}


/* fsync in the event loop, counted: when no thread can do it */

static void
ngx_http_promgate_segw_sync_now(ngx_http_promgate_segw_t *w, ngx_fd_t fd,
    ngx_uint_t close_it)
{
    struct timeval  t0, t1;

    ngx_gettimeofday(&t0);
    (void) fsync(fd);
    ngx_gettimeofday(&t1);

    (void) ngx_atomic_fetch_add(&w->st->fsyncs, 1);
    (void) ngx_atomic_fetch_add(&w->st->fsync_us,
                                (t1.tv_sec - t0.tv_sec) * 1000000
                                + (t1.tv_usec - t0.tv_usec));

    if (close_it) {
        (void) ngx_close_file(fd);
    }
}


static void
ngx_http_promgate_segw_error(ngx_http_promgate_segw_t *w, ngx_err_t err,
    const char *what, ngx_log_t *log)
{
    (void) ngx_atomic_fetch_add(&w->st->write_errors, 1);

    /* once per burst: a full disk must not flood the error log */

    if (w->last_error
        && ngx_current_msec - w->last_error
           < NGX_HTTP_PROMGATE_WAL_ERROR_BURST)
    {
        return;
    }

    w->last_error = ngx_current_msec;

    ngx_log_error(NGX_LOG_ERR, log, err,
                  "promgate: %s \"%V\" could not write \"%s\"; %s (further "
                  "errors in the next %ds are only counted)", w->what,
                  &w->name, what, w->loss,
                  NGX_HTTP_PROMGATE_WAL_ERROR_BURST / 1000);
}


/*
 * Appends whole frames (iov, n pieces, len bytes; the first one's
 * sequence number first_seq), opening a segment if none is.  NGX_OK, or
 * NGX_DONE when the segment was closed after them (it reached segment=);
 * NGX_ERROR when they could not be written: what was written of them is
 * cut back, the segment is closed (deleted if it took nothing) and a new
 * one is tried a second later, not per write.
 */

ngx_int_t
ngx_http_promgate_segw_append(ngx_http_promgate_segw_t *w, struct iovec *iov,
    int n, size_t len, uint64_t first_seq, ngx_uint_t nrecords)
{
    off_t       start;
    size_t      total;
    ssize_t     k;
    ngx_err_t   err;
    ngx_log_t  *log;

    log = ngx_cycle->log;

    if (w->fd == NGX_INVALID_FILE) {

        if (w->retry_open
            && (ngx_msec_int_t) (ngx_current_msec - w->retry_open) < 0)
        {
            (void) ngx_atomic_fetch_add(&w->st->write_errors, 1);
            return NGX_ERROR;
        }

        ngx_http_promgate_segw_open(w, first_seq, log);

        if (w->fd == NGX_INVALID_FILE) {
            return NGX_ERROR;
        }
    }

    start = w->fd_size;
    total = len;

    while (len) {
        k = writev(w->fd, iov, n);

        if (k == -1) {
            err = ngx_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            goto failed;
        }

        if (k == 0) {
            err = NGX_ENOSPC;
            goto failed;
        }

        w->fd_size += k;
        len -= k;

        /* the pieces written go; a piece written in part is cut */

        while (n && (size_t) k >= iov->iov_len) {
            k -= iov->iov_len;
            iov++;
            n--;
        }

        if (n && k) {
            iov->iov_base = (u_char *) iov->iov_base + k;
            iov->iov_len -= k;
        }
    }

    w->dirty = 1;

    (void) ngx_atomic_fetch_add(&w->st->bytes, total);
    (void) ngx_atomic_fetch_add(&w->st->records, nrecords);

    if ((size_t) w->fd_size >= w->segment) {
        ngx_http_promgate_segw_close(w, log);
        return NGX_DONE;
    }

    return NGX_OK;

failed:

    ngx_http_promgate_segw_error(w, err, (char *) w->path, log);

    /*
     * What was written of these frames is cut back, so that the segment
     * ends with a whole frame; it is closed, and removed if it holds
     * nothing, so that a full disk does not fill the directory with empty
     * files.
     */

    if (w->fd_size != start && ftruncate(w->fd, start) == -1) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "promgate: ftruncate(\"%s\") failed", w->path);
    }

    w->fd_size = start;

    ngx_http_promgate_segw_close(w, log);

    if (start == 0) {
        (void) ngx_delete_file(w->path);
    }

    w->retry_open = ngx_current_msec + 1000;

    return NGX_ERROR;
}


/* the exemplar WAL's records of one write, after the ring took them */

void
ngx_http_promgate_wal_append(ngx_http_promgate_exzone_t *ctx, u_char *frames,
    size_t len, uint64_t first_seq, ngx_uint_t nrecords)
{
    struct iovec  iov;

    iov.iov_base = frames;
    iov.iov_len = len;

    if (ngx_http_promgate_segw_append(&ctx->w, &iov, 1, len, first_seq,
                                      nrecords)
        == NGX_DONE)
    {
        ngx_http_promgate_wal_cleanup(ctx, ngx_cycle->log);
    }
}


/*
 * Deletes the segments all of whose exemplars have left the ring: the
 * next segment of the same writer starts at or below the oldest live one.
 */

static void
ngx_http_promgate_wal_cleanup(ngx_http_promgate_exzone_t *ctx, ngx_log_t *log)
{
    u_char                         *p;
    DIR                            *dir;
    uint64_t                        oldest, seq;
    unsigned                        writer;
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

    dir = opendir((char *) ctx->w.dir->name.data);
    if (dir == NULL) {
        return;
    }

    n = 0;
    cap = 0;
    segs = NULL;

    while ((de = readdir(dir)) != NULL) {
        if (pg_wal_segment_parse(de->d_name, (char *) ctx->name.data, &writer,
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

        segs[n].writer = writer;
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
                         &ctx->w.dir->name);

        if (pg_wal_segment_name((char *) p, PG_WAL_NAME_MAX,
                                (char *) ctx->name.data, segs[i].writer,
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
ngx_http_promgate_segw_fsync_timer(ngx_event_t *ev)
{
    ngx_http_promgate_segw_t *w = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, w->fsync);

#if (NGX_THREADS)
    ngx_http_promgate_segw_fsync_post(w, 1);
#endif
}


#if (NGX_THREADS)

/*
 * Posts the task, unless it runs: the segments closed since the last post
 * and, from the timer, the open segment if it took records since.
 */

static void
ngx_http_promgate_segw_fsync_post(ngx_http_promgate_segw_t *w,
    ngx_uint_t current)
{
    ngx_fd_t                      *fds;
    ngx_uint_t                     i, cap;
    ngx_http_promgate_wal_sync_t  *sync;

    if (w->fsync_running) {
        return;
    }

    sync = w->fsync_task->ctx;

    sync->current = NGX_INVALID_FILE;

    if (current && w->dirty && w->fd != NGX_INVALID_FILE) {
        sync->current = w->fd;
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

    if (ngx_thread_task_post(w->thread_pool, w->fsync_task) == NGX_OK) {
        w->fsync_running = 1;
        w->fsync_fd = sync->current;
        w->dirty = (sync->current == NGX_INVALID_FILE) ? w->dirty : 0;
        return;
    }

    /* the pool's queue is full: the closed segments cannot wait */

    for (i = 0; i < sync->nfds; i++) {
        ngx_http_promgate_segw_sync_now(w, sync->fds[i], 1);
    }

    sync->nfds = 0;
}


static void
ngx_http_promgate_segw_fsync_thread(void *data, ngx_log_t *log)
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
ngx_http_promgate_segw_fsync_done(ngx_event_t *ev)
{
    ngx_http_promgate_segw_t *w = ev->data;

    ngx_http_promgate_wal_sync_t  *sync;

    sync = w->fsync_task->ctx;

    (void) ngx_atomic_fetch_add(&w->st->fsyncs, sync->synced);
    (void) ngx_atomic_fetch_add(&w->st->fsync_us, sync->us);

    sync->nfds = 0;
    w->fsync_running = 0;
    w->fsync_fd = NGX_INVALID_FILE;

    /* segments closed meanwhile: synced now, not at the next tick */

    ngx_http_promgate_segw_fsync_post(w, 0);
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
    unsigned                        writer;
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

    dir = opendir((char *) ctx->w.dir->name.data);

    if (dir == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "promgate: exemplar WAL directory \"%V\" cannot be "
                      "read; nothing replayed", &ctx->w.dir->name);
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    rp.segment = 0;
    max_seq = 0;

    while ((de = readdir(dir)) != NULL) {

        if (pg_wal_segment_parse(de->d_name, (char *) ctx->name.data, &writer,
                                 &seq)
            != 0)
        {
            continue;
        }

        p = ngx_snprintf(path, sizeof(path) - 1, "%V/%s", &ctx->w.dir->name,
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
                  &ctx->w.dir->name, ngx_current_msec - start);

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
