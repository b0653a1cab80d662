
/*
 * promgate: helpers several glue files use (see the head of
 * ngx_http_promgate_util.h).  Nothing here calls another glue file.
 */


#include "ngx_http_promgate_module.h"


#define NGX_HTTP_PROMGATE_TEXT_BUF    16384
#define NGX_HTTP_PROMGATE_TEXT_VALUE  64     /* a sample's value, formatted */


static ngx_int_t ngx_http_promgate_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static u_char *ngx_http_promgate_text_room(ngx_http_promgate_text_t *t,
    size_t len);
static void ngx_http_promgate_text_wrote(ngx_http_promgate_text_t *t,
    u_char *p);


/* ------------------------------------------------------------ requests */


/* the first header of that name in a list (request or response headers) */

ngx_table_elt_t *
ngx_http_promgate_find_header(ngx_list_t *headers, u_char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Adds a header to a list (a response's, or a subrequest's request
 * headers): key is a literal, the value is not copied.  NULL: no memory.
 */

ngx_table_elt_t *
ngx_http_promgate_header_add(ngx_list_t *headers, char *key, u_char *value,
    size_t len)
{
    size_t            n;
    ngx_table_elt_t  *h;

    n = ngx_strlen(key);

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NULL;
    }

    h->lowcase_key = ngx_pnalloc(headers->pool, n);
    if (h->lowcase_key == NULL) {
        h->hash = 0;
        return NULL;
    }

    h->hash = ngx_hash_strlow(h->lowcase_key, (u_char *) key, n);
    h->key.data = (u_char *) key;
    h->key.len = n;
    h->value.data = value;
    h->value.len = len;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return h;
}


/* remote write and remote read bodies: "Content-Encoding: snappy" */

ngx_int_t
ngx_http_promgate_snappy_encoded(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_http_promgate_find_header(&r->headers_in.headers,
                                      (u_char *) "Content-Encoding", 16);

    return h != NULL && h->value.len == 6
           && ngx_strncasecmp(h->value.data, (u_char *) "snappy", 6) == 0;
}


/*
 * The tenant of a request: promgate_tenant's value (anything nginx knows:
 * $remote_user, $ssl_client_s_dn, a map...) where it is set, else the
 * request header promgate_tenant_header names.  NGX_ERROR: no memory.
 */

ngx_int_t
ngx_http_promgate_tenant(ngx_http_request_t *r, ngx_str_t *tenant)
{
    ngx_table_elt_t                *h;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_http_promgate_main_conf_t  *pmcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_promgate_module);

    if (plcf->tenant) {
        return ngx_http_complex_value(r, plcf->tenant, tenant);
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_promgate_module);

    h = ngx_http_promgate_find_header(&r->headers_in.headers,
                                      pmcf->tenant_header.data,
                                      pmcf->tenant_header.len);
    if (h) {
        *tenant = h->value;

    } else {
        ngx_str_null(tenant);
    }

    return NGX_OK;
}


/*
 * A request body as one piece of memory: in place when nginx holds it in
 * one buffer, else gathered from its buffers and temp file into the pool.
 * *len is 0 without a body.
 */

ngx_int_t
ngx_http_promgate_body_bytes(ngx_http_request_t *r, u_char **data,
    size_t *len)
{
    u_char  *p;

    *len = ngx_http_promgate_body_size(r);

    if (*len == 0) {
        *data = NULL;
        return NGX_OK;
    }

    if (ngx_http_promgate_body_piece(r, data)) {
        return NGX_OK;
    }

    p = ngx_palloc(r->pool, *len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *data = p;

    return ngx_http_promgate_body_join(r, p);
}


size_t
ngx_http_promgate_body_size(ngx_http_request_t *r)
{
    off_t         size;
    ngx_chain_t  *cl;

    size = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            size += ngx_buf_size(cl->buf);
        }
    }

    return (size_t) size;
}


/* 1 and *data when the body is one buffer in memory (no copy needed) */

ngx_uint_t
ngx_http_promgate_body_piece(ngx_http_request_t *r, u_char **data)
{
    ngx_chain_t  *cl;

    cl = r->request_body ? r->request_body->bufs : NULL;

    if (cl && cl->next == NULL && !cl->buf->in_file) {
        *data = cl->buf->pos;
        return 1;
    }

    return 0;
}


/* copies the body, memory and file parts, to p (body_size() bytes) */

ngx_int_t
ngx_http_promgate_body_join(ngx_http_request_t *r, u_char *p)
{
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                          "promgate: could not read the request body back "
                          "from \"%V\"", &b->file->name);
            return NGX_ERROR;
        }

        p += n;
    }

    return NGX_OK;
}


/*
 * Answers r with status, type and the len bytes at data, which must live
 * as long as the request (not on the stack); without bytes, the headers
 * only.  Returns what the content handler returns.
 */

ngx_int_t
ngx_http_promgate_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * Refuses a request with status and a plain-text reason, which may be on
 * the caller's stack; logged at the info level as "promgate: WHAT refused
 * with STATUS: TEXT".  Returns what the content handler returns.
 */

ngx_int_t
ngx_http_promgate_refuse(ngx_http_request_t *r, const char *what,
    ngx_uint_t status, u_char *text, size_t len)
{
    u_char     *p;
    ngx_int_t   rc;

    static ngx_str_t  type = ngx_string("text/plain");

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "promgate: %s refused with %ui: %*s", what, status,
                  len && text[len - 1] == '\n' ? len - 1 : len, text);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, text, len);

    return ngx_http_promgate_send(r, status, &type, p, len);
}


/* ----------------------------------------------------------- processes */


/*
 * A module's main configuration in a worker (or a single process); NULL
 * in the cache manager and loader processes, or when http{} has none
 */

void *
ngx_http_promgate_worker_conf(ngx_cycle_t *cycle, ngx_module_t *module)
{
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(cycle, (*module));
}


/* ------------------------------------------------------------- sockets */


/*
 * A unix socket left by an nginx that was killed makes bind() fail with
 * "Address already in use".  Only a socket file nothing listens on is
 * removed, and never by "nginx -t".
 */

void
ngx_http_promgate_stale_socket(ngx_conf_t *cf, u_char *path,
    struct sockaddr *sa, socklen_t socklen)
{
    int              fd, rc;
    ngx_err_t        err;
    ngx_file_info_t  fi;

    if (ngx_test_config || ngx_file_info(path, &fi) == NGX_FILE_ERROR
        || !S_ISSOCK(fi.st_mode))
    {
        return;
    }

    fd = socket(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return;
    }

    rc = connect(fd, sa, socklen);
    err = ngx_socket_errno;
    close(fd);

    if (rc == -1 && err == NGX_ECONNREFUSED) {
        if (ngx_delete_file(path) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_WARN, cf->log, ngx_errno,
                          "promgate: could not remove the stale unix socket "
                          "\"%s\"", path);
            return;
        }

        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "promgate: removed the stale unix socket \"%s\" "
                      "(nothing listened on it)", path);
    }
}


/*
 * A listener promgate adds to a server (the Kafka consumers' and the
 * spools' socket=PATH): what "listen unix:PATH;" there would add, made by
 * the listen directive's own handler, so that nginx
 * fills ngx_http_listen_opt_t itself (its fields and their defaults
 * change between nginx versions).
 */

ngx_int_t
ngx_http_promgate_listen(ngx_conf_t *cf, ngx_http_core_srv_conf_t *cscf,
    ngx_str_t *url)
{
    char           *rv;
    ngx_str_t      *value;
    ngx_array_t    *args, *saved;
    ngx_command_t  *cmd;

    for (cmd = ngx_http_core_module.commands; cmd->name.len; cmd++) {
        if (ngx_strcmp(cmd->name.data, "listen") == 0) {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "promgate: nginx has no \"listen\" directive");
        return NGX_ERROR;
    }

    args = ngx_array_create(cf->temp_pool, 2, sizeof(ngx_str_t));
    if (args == NULL) {
        return NGX_ERROR;
    }

    value = ngx_array_push_n(args, 2);
    if (value == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&value[0], "listen");
    value[1] = *url;

    saved = cf->args;
    cf->args = args;

    rv = cmd->set(cf, cmd, cscf);

    cf->args = saved;

    if (rv != NGX_CONF_OK) {
        if (rv != NGX_CONF_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "promgate: listen \"%V\": %s", url, rv);
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * nginx makes a unix listener mode 0666, owned by the master's user: any
 * local user could write through it.  The sockets promgate added itself
 * become the worker user's, mode 0600, once nginx opened them.
 */

ngx_int_t
ngx_http_promgate_socket_private(ngx_cycle_t *cycle, u_char *path)
{
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (geteuid() == 0
        && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT
        && chown((char *) path, ccf->user, ccf->group) == -1)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "promgate: chown(\"%s\") failed", path);
        return NGX_ERROR;
    }

    if (chmod((char *) path, S_IRUSR|S_IWUSR) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "promgate: chmod(\"%s\", 0600) failed", path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* -------------------------------------------------------------- memory */


void *
ngx_http_promgate_pool_alloc(void *ctx, size_t size)
{
    return ngx_palloc((ngx_pool_t *) ctx, size);
}


/* --------------------------------------------------------------- zones */


/*
 * The NAME:SIZE argument of the zone directives.  what and example make
 * the error messages ("exemplar zone", "exemplars:64m").
 */

ngx_int_t
ngx_http_promgate_zone_arg(ngx_conf_t *cf, ngx_str_t *arg, const char *what,
    const char *example, ngx_str_t *name, size_t *size)
{
    u_char     *p;
    ngx_str_t   s;

    p = (u_char *) ngx_strlchr(arg->data, arg->data + arg->len, ':');

    if (p == NULL || p == arg->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s \"%V\": expected NAME:SIZE, such as "
                           "%s", what, arg, example);
        return NGX_ERROR;
    }

    name->data = arg->data;
    name->len = p - arg->data;

    s.data = p + 1;
    s.len = arg->data + arg->len - s.data;

    *size = ngx_parse_size(&s);

    if (*size == (size_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s size \"%V\"", what, arg);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Defines a zone of a kind; zone is the first member of the kind's
 * context.  zones, if any, lists the kind's zones (ngx_shm_zone_t *).
 * A directive that only refers to a zone calls ngx_shared_memory_add()
 * with size 0 and the kind as tag.
 */

ngx_int_t
ngx_http_promgate_zone_add(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    ngx_http_promgate_zone_kind_t *kind, ngx_http_promgate_zone_t *zone,
    ngx_array_t *zones)
{
    ngx_shm_zone_t  *shm_zone, **zp;

    shm_zone = ngx_shared_memory_add(cf, name, size, kind);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s \"%V\" is duplicate", kind->what, name);
        return NGX_ERROR;
    }

    zone->kind = kind;
    zone->shm_zone = shm_zone;

    shm_zone->init = ngx_http_promgate_zone_init;
    shm_zone->data = zone;

    if (zones == NULL) {
        return NGX_OK;
    }

    zp = ngx_array_push(zones);
    if (zp == NULL) {
        return NGX_ERROR;
    }

    *zp = shm_zone;

    return NGX_OK;
}


/*
 * As ngx_http_limit_req_init_zone(): a zone nginx keeps across a reload
 * (data is the old cycle's zone) or finds existing is reused, once its
 * header says it is of this kind and layout; a new one gets its header,
 * zeroed, and the slab pool's log context.  Then the kind's init.
 */

static ngx_int_t
ngx_http_promgate_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                          len;
    ngx_slab_pool_t                *shpool;
    ngx_http_promgate_shm_t        *sh;
    ngx_http_promgate_zone_t       *zone;
    ngx_http_promgate_zone_kind_t  *kind;

    zone = shm_zone->data;
    kind = zone->kind;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    zone->shpool = shpool;

    if (data || shm_zone->shm.exists) {
        sh = shpool->data;

        if (sh == NULL || sh->magic != kind->magic
            || sh->layout != kind->layout)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "%s \"%V\" in shared memory was not made by this "
                          "build of promgate (magic %08xD, layout %uD; "
                          "expected %08xD, %uD): stop and start nginx to "
                          "make it anew", kind->what, &shm_zone->shm.name,
                          sh ? sh->magic : 0, sh ? sh->layout : 0,
                          kind->magic, kind->layout);
            return NGX_ERROR;
        }

        zone->sh = sh;

        return kind->init(zone, 1);
    }

    /* the header and the log context in one allocation */

    len = sizeof(" in  zone \"\"") + ngx_strlen(kind->name)
          + shm_zone->shm.name.len;

    sh = ngx_slab_calloc(shpool, kind->size + len);
    if (sh == NULL) {
        return NGX_ERROR;
    }

    sh->magic = kind->magic;
    sh->layout = kind->layout;

    shpool->data = sh;
    shpool->log_ctx = (u_char *) sh + kind->size;

    ngx_sprintf(shpool->log_ctx, " in %s zone \"%V\"%Z", kind->name,
                &shm_zone->shm.name);

    zone->sh = sh;

    return kind->init(zone, 0);
}


/*
 * The largest block left in a fresh shared zone, for the structures of
 * src/core that want one contiguous region (the exemplar ring, the
 * series set).  *size gets its size; NULL if not even a page is left.
 */

void *
ngx_http_promgate_shm_block(ngx_slab_pool_t *shpool, size_t *size)
{
    void    *base;
    size_t   n;

    for (n = shpool->pfree * ngx_pagesize; n > ngx_pagesize;
         n -= ngx_pagesize)
    {
        base = ngx_slab_alloc(shpool, n);

        if (base) {
            *size = n;
            return base;
        }
    }

    return NULL;
}


/*
 * Between two pieces of a long job under a zone lock: lets the lock go and
 * takes it again.  A process asleep waiting for it gets it first (up to
 * ~4096 pauses spent here for it to wake up and take it); nginx's lock is
 * not fair, so a plain unlock and lock would take it straight back.  A
 * process still spinning for it catches it in that window, or sleeps and
 * is counted as waiting by the next pass.  No waiter: an unlock and a
 * lock.
 */

void
ngx_http_promgate_shmtx_pass(ngx_shmtx_t *mtx)
{
#if (NGX_HAVE_ATOMIC_OPS && NGX_HAVE_POSIX_SEM)
    ngx_uint_t  i;
#endif

    ngx_shmtx_unlock(mtx);

#if (NGX_HAVE_ATOMIC_OPS && NGX_HAVE_POSIX_SEM)

    if (mtx->semaphore && *mtx->wait > 0) {
        for (i = 0; i < 4096 && *mtx->lock == 0; i++) {
            ngx_cpu_pause();
        }
    }

#endif

    ngx_shmtx_lock(mtx);
}


/*
 * sum[n]: the n counters at offset in the shared memory (sh) of every
 * zone of a list, summed.
 */

void
ngx_http_promgate_zones_sum(ngx_array_t *zones, size_t offset, ngx_uint_t n,
    ngx_atomic_t *sum)
{
    ngx_uint_t                 i, k;
    ngx_atomic_t              *v;
    ngx_shm_zone_t           **zp;
    ngx_http_promgate_zone_t  *zone;

    ngx_memzero((void *) sum, n * sizeof(ngx_atomic_t));

    zp = zones->elts;

    for (i = 0; i < zones->nelts; i++) {
        zone = zp[i]->data;
        v = (ngx_atomic_t *) ((u_char *) zone->sh + offset);

        for (k = 0; k < n; k++) {
            sum[k] += v[k];
        }
    }
}


/* ---------------------------------------------------------------- text */


void
ngx_http_promgate_text_init(ngx_http_promgate_text_t *t, ngx_pool_t *pool)
{
    t->pool = pool;
    t->out = NULL;
    t->last = &t->out;
    t->buf = NULL;
    t->size = 0;
    t->failed = 0;
}


/* "# HELP name help" and "# TYPE name type" */

void
ngx_http_promgate_text_family(ngx_http_promgate_text_t *t, char *name,
    char *type, char *help)
{
    u_char  *p;
    size_t   len;

    len = sizeof("# HELP  \n# TYPE  \n") + 2 * ngx_strlen(name)
          + ngx_strlen(type) + ngx_strlen(help);

    p = ngx_http_promgate_text_room(t, len);
    if (p == NULL) {
        return;
    }

    p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                    type);

    ngx_http_promgate_text_wrote(t, p);
}


/* name{label="value",...} VALUE, the value as fmt formats it */

void
ngx_http_promgate_text_sample(ngx_http_promgate_text_t *t, char *name,
    ngx_http_promgate_label_t *labels, ngx_uint_t nlabels,
    const char *fmt, ...)
{
    u_char      *p, *last, *s, *end;
    size_t       len;
    va_list      args;
    ngx_uint_t   i;

    len = ngx_strlen(name) + sizeof("{} \n") + NGX_HTTP_PROMGATE_TEXT_VALUE;

    for (i = 0; i < nlabels; i++) {
        len += ngx_strlen(labels[i].name) + sizeof(",=\"\"")
               + 2 * labels[i].value.len;
    }

    p = ngx_http_promgate_text_room(t, len);
    if (p == NULL) {
        return;
    }

    last = p + len;

    p = ngx_cpymem(p, name, ngx_strlen(name));

    for (i = 0; i < nlabels; i++) {
        *p++ = i ? ',' : '{';
        p = ngx_cpymem(p, labels[i].name, ngx_strlen(labels[i].name));
        *p++ = '=';
        *p++ = '"';

        s = labels[i].value.data;
        end = s + labels[i].value.len;

        for ( /* void */ ; s < end; s++) {
            if (*s == '\\' || *s == '"' || *s == '\n') {
                *p++ = '\\';
                *p++ = (*s == '\n') ? 'n' : *s;
                continue;
            }

            *p++ = *s;
        }

        *p++ = '"';
    }

    if (nlabels) {
        *p++ = '}';
    }

    *p++ = ' ';

    va_start(args, fmt);
    p = ngx_vslprintf(p, last - 1, fmt, args);
    va_end(args);

    *p++ = '\n';

    ngx_http_promgate_text_wrote(t, p);
}


void
ngx_http_promgate_label_cstr(ngx_http_promgate_label_t *label, char *name,
    const char *value)
{
    label->name = name;
    label->value.data = (u_char *) value;
    label->value.len = ngx_strlen(value);
}


/* a family per metric, with one sample: the ngx_atomic_t at its offset */

void
ngx_http_promgate_text_counters(ngx_http_promgate_text_t *t,
    ngx_http_promgate_metric_t *metrics, ngx_uint_t n, void *base)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        ngx_http_promgate_text_family(t, metrics[i].name, metrics[i].type,
                                      metrics[i].help);
        ngx_http_promgate_text_sample(t, metrics[i].name, NULL, 0, "%uA",
                                      *(ngx_atomic_t *) ((u_char *) base
                                                     + metrics[i].offset));
    }
}


/*
 * A family per metric, with a sample per zone of the list: zone="NAME",
 * the uint64_t at the metric's offset in the struct (size bytes) that
 * values() fills.
 */

void
ngx_http_promgate_text_zones(ngx_http_promgate_text_t *t,
    ngx_http_promgate_metric_t *metrics, ngx_uint_t n, ngx_array_t *zones,
    ngx_http_promgate_zone_values_pt values, size_t size)
{
    u_char                     *v, *all;
    ngx_int_t                   rc;
    ngx_uint_t                  i, k, nz;
    ngx_shm_zone_t            **zp, **shown;
    ngx_http_promgate_label_t   label;
    ngx_http_promgate_zone_t   *zone;

    all = ngx_palloc(t->pool, zones->nelts * (size + sizeof(void *)));
    if (all == NULL) {
        t->failed = 1;
        return;
    }

    shown = (ngx_shm_zone_t **) (all + zones->nelts * size);

    zp = zones->elts;
    nz = 0;

    for (i = 0; i < zones->nelts; i++) {
        zone = zp[i]->data;

        ngx_shmtx_lock(&zone->shpool->mutex);
        rc = values(zone, all + nz * size);
        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (rc == NGX_OK) {
            shown[nz++] = zp[i];
        }
    }

    label.name = "zone";

    for (k = 0; k < n; k++) {
        ngx_http_promgate_text_family(t, metrics[k].name, metrics[k].type,
                                      metrics[k].help);

        for (i = 0; i < nz; i++) {
            label.value = shown[i]->shm.name;
            v = all + i * size + metrics[k].offset;

            ngx_http_promgate_text_sample(t, metrics[k].name, &label, 1,
                                          "%uL", *(uint64_t *) v);
        }
    }
}


/* the current buffer, with at least len bytes free; NULL: out of memory */

static u_char *
ngx_http_promgate_text_room(ngx_http_promgate_text_t *t, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (t->failed) {
        return NULL;
    }

    if (t->buf && (size_t) (t->buf->end - t->buf->last) >= len) {
        return t->buf->last;
    }

    b = ngx_create_temp_buf(t->pool,
                            ngx_max(len, NGX_HTTP_PROMGATE_TEXT_BUF));
    cl = ngx_alloc_chain_link(t->pool);

    if (b == NULL || cl == NULL) {
        t->failed = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *t->last = cl;
    t->last = &cl->next;
    t->buf = b;

    return b->last;
}


static void
ngx_http_promgate_text_wrote(ngx_http_promgate_text_t *t, u_char *p)
{
    t->size += p - t->buf->last;
    t->buf->last = p;
}
