/*
 * A peer's answer to an exemplar query (promgate_exemplar_peer), hostile:
 * pg_exring_peer_read() must refuse what is not well formed and give hits
 * that the join (pg_exring_hits_join(): sort, merge of a series' hits,
 * the comparison that decodes exemplar labels) and the JSON writer
 * (pg_exring_hit_json(), which trusts the label counts) handle without
 * reading or writing out of bounds.  A second read of the same input
 * joined with the first checks that a series held by two peers merges to
 * no more exemplars than one holds (duplicates removed).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_exemplar.h"
#include "fuzz_arena.h"


#define check(cond)  fuzz_check("fuzz_exemplar_peer", cond)


#define MAX_HITS  4096

typedef struct {
    pg_exring_hit_t  *hits[2 * MAX_HITS];
    size_t            n;
} hits_t;


static int
add_hit(void *ctx, pg_exring_hit_t *hit)
{
    hits_t  *h = ctx;

    check(hit->nexemplars > 0);

    if (h->n == 2 * MAX_HITS) {
        return 0;
    }

    h->hits[h->n++] = hit;

    return 1;
}


static hits_t  one, two;


static size_t
answer(hits_t *h, pg_allocator_t *alloc, size_t *bytes)
{
    size_t               i, n, exemplars;
    pg_json_buf_t        out;
    pg_exring_hit_pos_t  hp;

    n = h->n;

    if (pg_exring_hits_join(h->hits, &n, alloc, &exemplars) != 0) {
        return (size_t) -1;
    }

    pg_json_init(&out, *alloc);

    for (i = 0; i < n; i++) {
        memset(&hp, 0, sizeof(hp));
        if (pg_exring_hit_json(h->hits[i], i == 0, &hp, SIZE_MAX, &out)
            != 1)
        {
            return (size_t) -1;
        }

        if (i > 0) {
            check(pg_exring_hit_compare(h->hits[i - 1], h->hits[i]) < 0);
        }
    }

    *bytes = out.len;

    return exemplars;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_arena_t  a;
    pg_allocator_t       alloc;
    pg_exring_peer_rc_e  rc;
    const char          *err;
    size_t               e1, e2, b1, b2;

    fuzz_arena_reset(&a, 64 << 20, 64 << 20);
    alloc = fuzz_arena_allocator(&a);

    one.n = 0;
    err = NULL;
    rc = pg_exring_peer_read(data, size, &alloc, add_hit, &one, &err);

    if (rc == PG_EXRING_PEER_INVALID) {
        check(err != NULL);
        return 0;
    }

    if (rc != PG_EXRING_PEER_OK || one.n > MAX_HITS) {
        return 0;
    }

    e1 = answer(&one, &alloc, &b1);
    if (e1 == (size_t) -1) {
        return 0;
    }

    /*
     * the same answer from two peers: each exemplar once (a hostile answer
     * may repeat one inside a series, which only a merge removes)
     */

    two.n = 0;
    check(pg_exring_peer_read(data, size, &alloc, add_hit, &two, &err)
          == PG_EXRING_PEER_OK);
    check(pg_exring_peer_read(data, size, &alloc, add_hit, &two, &err)
          == PG_EXRING_PEER_OK);

    e2 = answer(&two, &alloc, &b2);
    if (e2 == (size_t) -1) {
        return 0;
    }

    check(e2 <= e1 && b2 <= b1);

    return 0;
}
