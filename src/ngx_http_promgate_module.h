
/*
 * promgate: a Prometheus remote-write gateway inside nginx.
 * Types shared by the glue files (src/ngx_http_promgate_*.c).
 */


#ifndef _NGX_HTTP_PROMGATE_MODULE_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_policy.h"
#include "pg_route.h"

#include "ngx_http_promgate_forward.h"
#include "ngx_http_promgate_util.h"


#define NGX_HTTP_PROMGATE_MAX_TARGETS    64
#define NGX_HTTP_PROMGATE_MAX_WORKERS    256
#define NGX_HTTP_PROMGATE_TARGET_NAME    128
#define NGX_HTTP_PROMGATE_LATENCY_BUCKETS  14


/* why a write was refused before any forwarding */
typedef enum {
    NGX_HTTP_PROMGATE_REJECT_METHOD = PG_RW_NREASONS,
    NGX_HTTP_PROMGATE_REJECT_CONTENT_TYPE,
    NGX_HTTP_PROMGATE_REJECT_ENCODING,
    NGX_HTTP_PROMGATE_REJECT_SNAPPY,
    NGX_HTTP_PROMGATE_REJECT_TOO_LARGE,
    NGX_HTTP_PROMGATE_REJECT_BODY,
    NGX_HTTP_PROMGATE_REJECT_INFLIGHT,
    NGX_HTTP_PROMGATE_NREJECTS
} ngx_http_promgate_reject_e;


/* per forward target counters, kept by target name across reloads */
typedef struct {
    u_char                          name[NGX_HTTP_PROMGATE_TARGET_NAME];
    ngx_atomic_t                    used;
    ngx_atomic_t                    attempts;
    ngx_atomic_t                    retries;
    ngx_atomic_t                    stored;
    ngx_atomic_t                    rejected;
    ngx_atomic_t                    failed;
    ngx_atomic_t                    giveups;
    ngx_atomic_t                    misconfigured;
    ngx_atomic_t                    spooled;
    ngx_atomic_t                    series_sent;     /* in its bodies */
    ngx_atomic_t                    samples_sent;    /* and histograms */
    ngx_atomic_t                    series_dropped;  /* by its rules */
} ngx_http_promgate_target_stats_t;


/* the status zone (status.c): the writes' counters, summed over workers */
typedef struct {
    ngx_atomic_t                    codes[600];
    ngx_atomic_t                    samples;
    ngx_atomic_t                    histograms;
    ngx_atomic_t                    exemplars;
    ngx_atomic_t                    metadata;
    ngx_atomic_t                    series;
    ngx_atomic_t                    bytes;
    ngx_atomic_t                    decoded_bytes;
    ngx_atomic_t                    rejected[NGX_HTTP_PROMGATE_NREJECTS];
    ngx_atomic_t                    rejected_samples;
    ngx_atomic_t                    invalid_series[PG_RW_NREASONS];
    ngx_atomic_t                    invalid_samples;
    ngx_atomic_t                    invalid_metadata;
    ngx_atomic_t                    versions[3];     /* requests, by version */
    ngx_atomic_t                    encoded[3];      /* bodies made */
    ngx_atomic_t                    encoded_bytes;   /* compressed */
    ngx_atomic_t                    latency[NGX_HTTP_PROMGATE_LATENCY_BUCKETS];
    ngx_atomic_t                    latency_count;
    ngx_atomic_t                    latency_sum_us;
    ngx_atomic_t                    inflight[NGX_HTTP_PROMGATE_MAX_WORKERS];
    ngx_http_promgate_target_stats_t  targets[NGX_HTTP_PROMGATE_MAX_TARGETS];
} ngx_http_promgate_stats_t;


#define NGX_HTTP_PROMGATE_INVALID_DROP    0
#define NGX_HTTP_PROMGATE_INVALID_REJECT  1


/* what nginx -t needs to know of every location (see merge_loc_conf) */
typedef struct {
    void                           *server;   /* its core srv conf */
    ngx_str_t                       name;
    ngx_msec_t                      read_timeout;   /* proxy's, 0 if none */
    void                           *plcf;     /* ours */
    ngx_http_promgate_forward_loc_conf_t  *fcf;   /* its retries */
    ngx_http_core_loc_conf_t       *clcf;
    unsigned                        exact:1;
} ngx_http_promgate_location_t;


typedef struct {
    ngx_array_t                     targets;  /* ngx_http_promgate_target_t */
    ngx_array_t                     locations;
    ngx_array_t                     exemplar_zones;  /* ngx_shm_zone_t * */
    ngx_array_t                     series_zones;    /* ngx_shm_zone_t * */
    ngx_array_t                     spools;   /* ngx_http_promgate_spool_t * */
    ngx_array_t                     printers; /* the status page's */
    ngx_array_t                    *shards;   /* promgate_shard, route.c */
    ngx_str_t                       tenant_header;
    ngx_int_t                       proxy_index;    /* -1: no proxy module */
    size_t                          heap_retain;    /* 0: off */
} ngx_http_promgate_main_conf_t;


/* a segment directory's counters (wal.c), in its zone */
typedef struct {
    ngx_atomic_t                    records;
    ngx_atomic_t                    bytes;
    ngx_atomic_t                    write_errors;
    ngx_atomic_t                    segments_created;
    ngx_atomic_t                    segments_deleted;
    ngx_atomic_t                    fsyncs;
    ngx_atomic_t                    fsync_us;
    ngx_atomic_t                    replays;
    ngx_atomic_t                    replayed_records;
    ngx_atomic_t                    replay_ms;
    ngx_atomic_t                    truncations;
    ngx_atomic_t                    corrupt_records;
} ngx_http_promgate_wal_stats_t;


/* what an exemplar zone keeps in shared memory besides the ring */
typedef struct {
    ngx_http_promgate_shm_t         shm;
    uint32_t                        max;
    void                           *ring_base;
    size_t                          ring_size;
    uint64_t                       *wal_seq;  /* [max]: WAL seq by ring slot */
    uint64_t                        wal_next; /* the next WAL seq */
    ngx_uint_t                      replayed;
    ngx_atomic_t                    results[8];   /* by pg_exring_rc_e */
    ngx_http_promgate_wal_stats_t   wal;
} ngx_http_promgate_exshm_t;


/*
 * Segment files (wal.c): the exemplar WAL's and a spool's.  Each process
 * appends to segments of its own (pg_wal.h); the fields below "st" are
 * per process.
 */
typedef struct {
    ngx_str_t                       name;     /* NUL-terminated: file names */
    const char                     *what;     /* "exemplar WAL of zone" */
    const char                     *kind;     /* "exemplar WAL" */
    const char                     *owner;    /* "zone" */
    const char                     *dirparam; /* "wal=" */
    const char                     *loss;     /* what a write error costs */
    ngx_path_t                     *dir;      /* NULL: none */
    ngx_msec_t                      fsync;    /* 0: off */
    size_t                          segment;
#if (NGX_THREADS)
    ngx_thread_pool_t              *thread_pool;
#endif
    ngx_http_promgate_wal_stats_t  *st;       /* in shared memory */

#if (NGX_THREADS)
    ngx_thread_task_t              *fsync_task;
#endif
    ngx_event_t                     fsync_timer;
    ngx_fd_t                        fd;
    off_t                           fd_size;
    uint64_t                        first_seq;   /* of the open segment */
    ngx_msec_t                      last_error;
    ngx_msec_t                      retry_open;  /* after an error */
    u_char                         *path;     /* of the open segment */
    ngx_fd_t                        fsync_fd;
    unsigned                        fsync_running:1;
    unsigned                        dirty:1;
} ngx_http_promgate_segw_t;


/* an exemplar zone (src/core/pg_exemplar.c's ring in shared memory) */
typedef struct {
    ngx_http_promgate_zone_t        zone;     /* first: see util.h */
    ngx_str_t                       name;
    uint32_t                        max;
    ngx_http_promgate_exshm_t      *sh;
    struct pg_exring_s             *ring;
    ngx_http_promgate_segw_t        w;        /* the write-ahead log */
} ngx_http_promgate_exzone_t;


typedef struct {
    ngx_flag_t                      remote_write;
    ngx_flag_t                      status;
    ngx_array_t                    *forwards; /* ngx_http_promgate_forward_t */
    pg_router_t                    *router;   /* NULL: no target has rules */
                                              /*   and no tenant label */
    ngx_str_t                       tenant_label;  /* "": none */
    ngx_flag_t                      tenant_drop;   /* ... drop: the label */
                                                   /*   is not forwarded */
    ngx_uint_t                      ack;
    ngx_uint_t                      invalid_series;
    ngx_int_t                       max_inflight;
    size_t                          max_decoded;
    ngx_int_t                       max_exemplars;    /* per write, 0: any */
    ngx_int_t                       max_labels;       /* per series */
    size_t                          max_label_bytes;  /* name + value */
    ngx_shm_zone_t                 *exemplar_zone;    /* capture into */
    ngx_shm_zone_t                 *exemplar_query;   /* answer from */
    ngx_shm_zone_t                 *series_zone;      /* series index */
    ngx_str_t                       series_topic;
    ngx_http_complex_value_t       *tenant;     /* promgate_tenant */
    ngx_uint_t                      query_max_selectors;
    ngx_uint_t                      query_max_series;
    ngx_uint_t                      query_max_exemplars;
    ngx_msec_t                      query_timeout;
    ngx_array_t                    *exemplar_peers;  /* ..._forward_t */
    ngx_uint_t                      exemplar_peer_policy;
} ngx_http_promgate_loc_conf_t;


#define NGX_HTTP_PROMGATE_PEER_ANY  0     /* answer from the others */
#define NGX_HTTP_PROMGATE_PEER_ALL  1     /* a failed peer fails it */


/* one remote write: its forwarder, and what only a write keeps */
typedef struct {
    ngx_http_promgate_forwarder_t   fw;
    ngx_http_request_t             *request;
    ngx_http_promgate_loc_conf_t   *plcf;
    ngx_msec_t                      start;
    off_t                           body_len;
    pg_rw_stats_t                   stats;    /* of what is forwarded */
    uint64_t                        invalid_series;  /* dropped */
    ngx_uint_t                      answer;   /* status sent, 0 before */
    ngx_str_t                       tenant;
    ngx_array_t                    *exemplars;  /* to store on 2xx */
    void                           *series;     /* new series, for 2xx */
    pg_route_state_t               *route;      /* while decoding, with */
                                                /*   a router */
    unsigned                        inflight:1;
} ngx_http_promgate_write_ctx_t;


/* a feature's part of the status page (see status.c) */
typedef void (*ngx_http_promgate_status_pt)(ngx_http_promgate_text_t *t,
    void *data);

typedef struct {
    ngx_http_promgate_status_pt     print;
    void                           *data;
} ngx_http_promgate_status_printer_t;


extern ngx_module_t  ngx_http_promgate_module;


/* ngx_http_promgate_module.c */
ngx_http_promgate_target_t *ngx_http_promgate_target_add(ngx_conf_t *cf,
    ngx_str_t *uri);
char *ngx_http_promgate_target_list_add(ngx_conf_t *cf, ngx_array_t **list,
    const char *what, const char *example, ngx_uint_t params);
ngx_http_promgate_location_t *ngx_http_promgate_find_location(
    ngx_http_promgate_main_conf_t *pmcf, void *server, ngx_str_t *uri);

/* ngx_http_promgate_route.c */
char *ngx_http_promgate_shard_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_promgate_tenant_label_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_promgate_route_param(ngx_conf_t *cf,
    ngx_http_promgate_forward_t *fw, ngx_str_t *value, const char *what,
    ngx_str_t *uri);
ngx_int_t ngx_http_promgate_router_build(ngx_conf_t *cf,
    ngx_http_promgate_loc_conf_t *plcf);

/* ngx_http_promgate_write.c */
ngx_int_t ngx_http_promgate_write_handler(ngx_http_request_t *r);

/* ngx_http_promgate_exemplar.c */
char *ngx_http_promgate_exemplar_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_promgate_exemplar_ref(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_promgate_exemplar_check(ngx_conf_t *cf,
    ngx_shm_zone_t *zone);
void ngx_http_promgate_exemplar_status(ngx_http_promgate_text_t *t,
    void *data);
int ngx_http_promgate_exemplars_collect(void *data, const pg_rw_series_t *s);
void ngx_http_promgate_exemplars_store(ngx_http_promgate_write_ctx_t *ctx);
ngx_int_t ngx_http_promgate_exemplar_query_handler(ngx_http_request_t *r);
char *ngx_http_promgate_exemplar_peer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
extern ngx_conf_enum_t  ngx_http_promgate_peer_policies[];

/* ngx_http_promgate_wal.c */
ngx_int_t ngx_http_promgate_segw_param(ngx_conf_t *cf,
    ngx_http_promgate_segw_t *w, ngx_str_t *value, const char *dirparam);
ngx_int_t ngx_http_promgate_segw_check(ngx_http_promgate_segw_t *w,
    ngx_log_t *log);
ngx_int_t ngx_http_promgate_segw_init(ngx_http_promgate_segw_t *w,
    ngx_cycle_t *cycle);
void ngx_http_promgate_segw_exit(ngx_http_promgate_segw_t *w);
ngx_int_t ngx_http_promgate_segw_append(ngx_http_promgate_segw_t *w,
    struct iovec *iov, int n, size_t len, uint64_t first_seq,
    ngx_uint_t nrecords);
void ngx_http_promgate_segw_close(ngx_http_promgate_segw_t *w,
    ngx_log_t *log);
ngx_int_t ngx_http_promgate_wal_init_process(ngx_cycle_t *cycle);
void ngx_http_promgate_wal_exit_process(ngx_cycle_t *cycle);
void ngx_http_promgate_wal_append(ngx_http_promgate_exzone_t *ctx,
    u_char *frames, size_t len, uint64_t first_seq, ngx_uint_t nrecords);
void ngx_http_promgate_wal_status(ngx_http_promgate_text_t *t, void *data);

/* ngx_http_promgate_spool.c */
char *ngx_http_promgate_spool_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_promgate_spool_ref(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_promgate_target_t *target, ngx_http_promgate_forward_t *fw);
ngx_int_t ngx_http_promgate_spool_init(ngx_conf_t *cf);
ngx_int_t ngx_http_promgate_spool_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_http_promgate_spool_init_process(ngx_cycle_t *cycle);
void ngx_http_promgate_spool_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_promgate_spool_access(ngx_http_request_t *r);

/* ngx_http_promgate_series.c */
char *ngx_http_promgate_series_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_promgate_series_index(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
int ngx_http_promgate_series_collect(ngx_http_promgate_write_ctx_t *ctx,
    const pg_rw_series_t *s);
void ngx_http_promgate_series_flush(ngx_http_promgate_write_ctx_t *ctx);
void ngx_http_promgate_series_publish(ngx_http_promgate_write_ctx_t *ctx);
void ngx_http_promgate_series_status(ngx_http_promgate_text_t *t, void *data);

/* ngx_http_promgate_status.c */
ngx_int_t ngx_http_promgate_status_init(ngx_conf_t *cf);
ngx_int_t ngx_http_promgate_status_add(ngx_conf_t *cf,
    ngx_http_promgate_status_pt print, void *data);
ngx_http_promgate_stats_t *ngx_http_promgate_stats(void);
void ngx_http_promgate_stats_reject(ngx_uint_t reason, uint64_t samples);
void ngx_http_promgate_stats_answer(ngx_http_promgate_write_ctx_t *ctx,
    ngx_uint_t status);
void ngx_http_promgate_stats_inflight(ngx_uint_t n);
ngx_int_t ngx_http_promgate_status_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_PROMGATE_MODULE_H_INCLUDED_ */
