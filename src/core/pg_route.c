/*
 * Per-target series routing (see pg_route.h).
 */

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pg_route.h"


/* a label's part of a series key: name and value, each hash chained */
static uint64_t
pg_route_key_label(uint64_t h, pg_str_t name, pg_str_t value)
{
    h = XXH3_64bits_withSeed(name.data, name.len, h);
    return XXH3_64bits_withSeed(value.data, value.len,
                                h ^ 0x9e3779b97f4a7c15ull);
}


static uint64_t
pg_route_key(const pg_route_group_t *g, const pg_label_t *labels, size_t n)
{
    size_t    i, k;
    int       rc;
    uint64_t  h;
    pg_str_t  empty;

    h = 0x5851f42d4c957f2dull;

    if (g->nby == 0) {
        for (i = 0; i < n; i++) {
            h = pg_route_key_label(h, labels[i].name, labels[i].value);
        }

        return h;
    }

    /* both sorted: one merge; a label the series lacks reads as "" */

    empty.data = (const uint8_t *) "";
    empty.len = 0;

    for (i = 0, k = 0; k < g->nby; k++) {
        rc = 1;

        while (i < n && (rc = pg_str_cmp(labels[i].name, g->by[k])) < 0) {
            i++;
        }

        h = pg_route_key_label(h, g->by[k],
                               i < n && rc == 0 ? labels[i].value : empty);
    }

    return h;
}


/* splitmix64's finalizer: a member's score for a key */
static inline uint64_t
pg_route_score(uint64_t key, uint64_t seed)
{
    uint64_t  z;

    z = key ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;

    return z ^ (z >> 31);
}


uint64_t
pg_route_seed(const uint8_t *name, size_t len)
{
    return XXH3_64bits_withSeed(name, len, 0x72a9f4d3c1b08e65ull);
}


uint64_t
pg_route_shard(const pg_route_group_t *g, const pg_label_t *labels, size_t n)
{
    unsigned  m, r, best;
    uint64_t  key, chosen, s, top;
    uint64_t  score[PG_ROUTE_MAX_MEMBERS];

    key = pg_route_key(g, labels, n);

    for (m = 0; m < g->nmembers; m++) {
        score[m] = pg_route_score(key, g->seeds[m]);
    }

    chosen = 0;

    for (r = 0; r < g->replicas && r < g->nmembers; r++) {
        best = 0;
        top = 0;

        for (m = 0; m < g->nmembers; m++) {
            s = score[m];

            if (!(chosen >> m & 1) && (best == 0 || s > top)) {
                best = m + 1;
                top = s;
            }
        }

        chosen |= 1ull << (best - 1);
    }

    return chosen;
}


/* a selector several routes use is matched once per series */
typedef struct {
    const pg_selector_t  *sel[2 * PG_ROUTE_MAX];
    int                   rc[2 * PG_ROUTE_MAX];
    size_t                n;
} pg_route_memo_t;


static int
pg_route_match(pg_route_memo_t *memo, const pg_selector_t *sel,
    const pg_label_t *labels, size_t n)
{
    size_t  j;

    for (j = 0; j < memo->n; j++) {
        if (memo->sel[j] == sel) {
            return memo->rc[j];
        }
    }

    memo->sel[j] = sel;
    memo->rc[j] = pg_selector_match(sel, labels, n);
    memo->n++;

    return memo->rc[j];
}


uint64_t
pg_route_series(const pg_router_t *rt, const pg_label_t *labels, size_t n)
{
    size_t             k;
    uint64_t           mask, shard[PG_ROUTE_MAX];
    uint8_t            sharded[PG_ROUTE_MAX];
    pg_route_memo_t    memo;
    const pg_route_t  *r;

    mask = 0;
    memo.n = 0;
    memset(sharded, 0, rt->ngroups);

    for (k = 0; k < rt->nroutes; k++) {
        r = &rt->routes[k];

        if ((r->match && !pg_route_match(&memo, r->match, labels, n))
            || (r->drop && pg_route_match(&memo, r->drop, labels, n)))
        {
            continue;
        }

        if (r->group >= 0) {
            if (!sharded[r->group]) {
                shard[r->group] = pg_route_shard(&rt->groups[r->group],
                                                 labels, n);
                sharded[r->group] = 1;
            }

            if (!(shard[r->group] >> r->member & 1)) {
                continue;
            }
        }

        mask |= 1ull << k;
    }

    return mask;
}


int
pg_route_init(pg_route_state_t *st, const pg_router_t *rt,
    pg_allocator_t *alloc, size_t nseries)
{
    size_t  k, bytes;

    memset(st, 0, sizeof(pg_route_state_t));

    st->router = rt;
    st->alloc = alloc;
    st->cap = (nseries + 63) & ~(size_t) 63;

    if (st->cap == 0) {
        st->cap = 64;
    }

    bytes = st->cap / 8;

    st->select = alloc->alloc(alloc->ctx, rt->nroutes * sizeof(uint8_t *));
    st->series = alloc->alloc(alloc->ctx, 2 * rt->nroutes * sizeof(uint64_t));

    if (st->select == NULL || st->series == NULL) {
        return -1;
    }

    st->samples = st->series + rt->nroutes;
    memset(st->series, 0, 2 * rt->nroutes * sizeof(uint64_t));

    for (k = 0; k < rt->nroutes; k++) {
        st->select[k] = alloc->alloc(alloc->ctx, bytes);
        if (st->select[k] == NULL) {
            return -1;
        }

        memset(st->select[k], 0, bytes);
    }

    if (rt->tenant_label.len) {
        st->tenant_of = alloc->alloc(alloc->ctx, st->cap);
        if (st->tenant_of == NULL) {
            return -1;
        }

        memset(st->tenant_of, 0, st->cap);
    }

    return 0;
}


/* room for series index i in every bitmap */
static int
pg_route_grow(pg_route_state_t *st, size_t i)
{
    size_t    k, cap;
    uint8_t  *p;

    cap = st->cap;

    while (cap <= i) {
        cap *= 2;
    }

    for (k = 0; k < st->router->nroutes; k++) {
        p = st->alloc->alloc(st->alloc->ctx, cap / 8);
        if (p == NULL) {
            return -1;
        }

        memcpy(p, st->select[k], st->cap / 8);
        memset(p + st->cap / 8, 0, (cap - st->cap) / 8);
        st->select[k] = p;
    }

    if (st->tenant_of) {
        p = st->alloc->alloc(st->alloc->ctx, cap);
        if (p == NULL) {
            return -1;
        }

        memcpy(p, st->tenant_of, st->cap);
        memset(p + st->cap, 0, cap - st->cap);
        st->tenant_of = p;
    }

    st->cap = cap;

    return 0;
}


/* the tenant of series i: the value of the tenant label, if any */
static int
pg_route_tenant(pg_route_state_t *st, size_t i, const pg_label_t *labels,
    size_t n)
{
    int        rc;
    size_t     lo, hi, mid, t;
    uint8_t   *p;
    pg_str_t   v;

    v.data = NULL;
    v.len = 0;
    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = pg_str_cmp(labels[mid].name, st->router->tenant_label);

        if (rc == 0) {
            v = labels[mid].value;
            break;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    st->tenant = v;

    if (v.len == 0) {
        return 0;
    }

    /* few tenants in a write: the last one first, then each */

    t = st->ntenants;

    if (i > 0 && st->tenant_of[i - 1]
        && pg_str_eq(st->tenants[st->tenant_of[i - 1] - 1], v))
    {
        t = st->tenant_of[i - 1] - 1;

    } else {
        for (t = 0; t < st->ntenants; t++) {
            if (pg_str_eq(st->tenants[t], v)) {
                break;
            }
        }
    }

    if (t == st->ntenants) {
        if (t == PG_ROUTE_MAX_TENANTS) {
            st->too_many_tenants = 1;
            return -1;
        }

        /* the body goes before the requests are sent: a copy */

        p = st->alloc->alloc(st->alloc->ctx, v.len);
        if (p == NULL) {
            return -1;
        }

        memcpy(p, v.data, v.len);
        st->tenants[t].data = p;
        st->tenants[t].len = v.len;
        st->ntenants++;
    }

    st->tenant_of[i] = (uint8_t) (t + 1);
    st->tenant = st->tenants[t];

    return 0;
}


size_t
pg_route_tenant_select(const pg_route_state_t *st, size_t k, unsigned t,
    uint8_t *out)
{
    size_t          i, j, count;
    uint8_t         bits, b;
    const uint8_t  *sel;

    sel = st->select[k];
    count = 0;

    for (j = 0; j < st->cap / 8; j++) {
        bits = 0;

        if (sel[j]) {
            for (b = 0; b < 8; b++) {
                i = j * 8 + b;

                if ((sel[j] >> b & 1) && st->tenant_of[i] == t) {
                    bits |= (uint8_t) (1u << b);
                    count++;
                }
            }
        }

        out[j] = bits;
    }

    return count;
}


int
pg_route_add(pg_route_state_t *st, const pg_rw_series_t *s)
{
    size_t         n, i, k;
    uint64_t       mask;
    pg_label_t     l, tmp, *labels;
    pg_pb_iter_t   it;

    if (s->index >= st->cap && pg_route_grow(st, s->index) != 0) {
        return -1;
    }

    if (s->nlabels > st->nlabels) {
        n = s->nlabels < 16 ? 16 : s->nlabels * 2;

        labels = st->alloc->alloc(st->alloc->ctx, n * sizeof(pg_label_t));
        if (labels == NULL) {
            return -1;
        }

        st->labels = labels;
        st->nlabels = n;
    }

    /* views into the body, sorted by name when the sender did not */

    labels = st->labels;
    n = 0;
    pg_rw_series_labels(s, &it);

    while (n < st->nlabels && pg_rw_next_label(&it, &l)) {
        labels[n] = l;

        for (i = n; s->unsorted && i > 0
                    && pg_str_cmp(labels[i - 1].name, labels[i].name) > 0;
             i--)
        {
            tmp = labels[i];
            labels[i] = labels[i - 1];
            labels[i - 1] = tmp;
        }

        n++;
    }

    if (st->tenant_of && pg_route_tenant(st, s->index, labels, n) != 0) {
        return -1;
    }

    mask = pg_route_series(st->router, labels, n);

    st->routed++;

    for (k = 0; mask; k++, mask >>= 1) {
        if (mask & 1) {
            st->select[k][s->index >> 3] |= (uint8_t) (1u << (s->index & 7));
            st->series[k]++;
            st->samples[k] += s->nsamples + s->nhistograms;
        }
    }

    return 0;
}
