/*
 * Per-target series routing: which series of a write go to which target.
 *
 * A route is what a target's rules make of a series: kept when it matches
 * the target's `match` selector (none: every series) and not its `drop`
 * selector, and, for a target in a shard group, when the group's
 * consistent hash puts it there.  Targets with the same rules share a
 * route, so one body is made per route, not per target.
 *
 * Sharding is rendezvous (highest random weight) hashing: a series' key is
 * an XXH3 hash of its sorted labels (or of the group's `by` labels, a
 * missing one read as empty, as a matcher reads it); each member scores
 * mix(key, hash of the member's name), and the series goes to the
 * `replicas` members with the highest scores.  Adding a member moves to it
 * only the series it now wins (1/n of them), removing one moves only its
 * own; the other members' series stay where they are, whatever the order
 * of the targets in the configuration.
 *
 * Routing a request takes its valid series one by one (the decoder's
 * series callback) and sets bit `index` of each route's bitmap, the
 * `select` pg_rw_encode() takes.
 *
 * With a tenant label, each series also gets the tenant its value names
 * (0: none, the series has no such label or an empty one; else 1 + its
 * place among the distinct values met), so that the caller can split
 * every route's series by tenant (pg_route_tenant_select()).
 */

#ifndef PG_ROUTE_H
#define PG_ROUTE_H

#include "pg_core.h"
#include "pg_rw.h"
#include "pg_matcher.h"


#define PG_ROUTE_MAX          64     /* routes of one location */
#define PG_ROUTE_MAX_MEMBERS  64     /* targets of one shard group */
#define PG_ROUTE_MAX_TENANTS  64     /* distinct tenants in one request */


typedef struct {
    const pg_selector_t   *match;    /* NULL: every series */
    const pg_selector_t   *drop;     /* NULL: none */
    int                    group;    /* in the router's groups, -1: none */
    unsigned               member;   /* the target's place in its group */
} pg_route_t;


typedef struct {
    unsigned               replicas; /* 1 .. nmembers */
    unsigned               nmembers;
    const uint64_t        *seeds;    /* per member: pg_route_seed(name) */
    const pg_str_t        *by;       /* label names, sorted and unique; */
    size_t                 nby;      /*   0: every label of the series */
} pg_route_group_t;


typedef struct {
    const pg_route_t        *routes;
    size_t                   nroutes;   /* at most PG_ROUTE_MAX */
    const pg_route_group_t  *groups;
    size_t                   ngroups;
    pg_str_t                 tenant_label;   /* len 0: none */
} pg_router_t;


/* one request's routing */
typedef struct {
    const pg_router_t     *router;
    pg_allocator_t        *alloc;
    uint8_t              **select;   /* per route: bit i, series i */
    uint64_t              *series;   /* per route: series chosen */
    uint64_t              *samples;  /* per route: samples + histograms */
    uint64_t               routed;   /* valid series seen */
    size_t                 cap;      /* series the bitmaps hold */
    pg_label_t            *labels;   /* a series' labels, sorted */
    size_t                 nlabels;  /* room in labels */

    /* with a tenant label */
    uint8_t               *tenant_of;  /* per series: 0, or tenant + 1 */
    pg_str_t               tenants[PG_ROUTE_MAX_TENANTS];  /* copies */
    size_t                 ntenants;
    pg_str_t               tenant;   /* the last series': its value, or */
                                     /*   len 0 (none) */
    unsigned               too_many_tenants:1;  /* pg_route_add() failed */
                                                /*   for that */
} pg_route_state_t;


/* a member's seed: the hash of its name */
uint64_t pg_route_seed(const uint8_t *name, size_t len);

/*
 * The members of g a series (labels sorted by name, unique) goes to, as a
 * bit mask (bit m: member m): the g->replicas highest scores.
 */
uint64_t pg_route_shard(const pg_route_group_t *g, const pg_label_t *labels,
    size_t n);

/* the routes a series goes to, as a bit mask (bit k: route k) */
uint64_t pg_route_series(const pg_router_t *rt, const pg_label_t *labels,
    size_t n);

/*
 * Starts routing a request of about nseries series (the bitmaps grow when
 * there are more).  0, or -1 when alloc failed.
 */
int pg_route_init(pg_route_state_t *st, const pg_router_t *rt,
    pg_allocator_t *alloc, size_t nseries);

/*
 * Routes one valid series (a pg_rw_series_pt's); 0, or -1: out of memory,
 * or more than PG_ROUTE_MAX_TENANTS tenants (st->too_many_tenants).
 */
int pg_route_add(pg_route_state_t *st, const pg_rw_series_t *s);

/*
 * Writes into out (st->cap / 8 bytes) the bitmap of route k's series whose
 * tenant is t (0: none; else 1 + the index in st->tenants); returns how
 * many series it holds.
 */
size_t pg_route_tenant_select(const pg_route_state_t *st, size_t k,
    unsigned t, uint8_t *out);

#endif /* PG_ROUTE_H */
