
/*
 * promgate: the spool's types, shared by ngx_http_promgate_spool.c (the
 * directive, appending, the receiving side of a replay, the status) and
 * ngx_http_promgate_spool_replay.c (per process: the scan at start, the
 * replayer).
 */


#ifndef _NGX_HTTP_PROMGATE_SPOOL_H_INCLUDED_
#define _NGX_HTTP_PROMGATE_SPOOL_H_INCLUDED_


#include "ngx_http_promgate_module.h"
#include "ngx_http_promgate_client.h"
#include "pg_spool.h"
#include "pg_wal.h"


/* a spool's zone: its state and counters, across reloads */
typedef struct {
    ngx_http_promgate_shm_t         shm;
    ngx_atomic_t                    next_seq;
    ngx_atomic_t                    records;   /* spooled, not replayed */
    ngx_atomic_t                    bytes;
    ngx_atomic_t                    oldest_ts; /* ms, of the next to replay */
    ngx_atomic_t                    owner;     /* the replaying worker's pid */
    ngx_atomic_t                    beat;      /* its last step, ms */
    ngx_atomic_t                    scanned;   /* the crc32 of its path */
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
    ngx_http_promgate_client_endpoint_t  endpoint; /* the socket */
    u_char                             *file;
    ngx_uint_t                          line;

    ngx_http_promgate_spool_replay_t   *replay;
    ngx_msec_t                          last_log;
};


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


/* the spool's request header: a replay, and the record's version */
extern ngx_str_t  ngx_http_promgate_spool_header;


/* ngx_http_promgate_spool_replay.c */
void ngx_http_promgate_spool_scan(ngx_http_promgate_spool_t *sp,
    ngx_log_t *log);


#endif /* _NGX_HTTP_PROMGATE_SPOOL_H_INCLUDED_ */
