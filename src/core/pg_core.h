/*
 * promgate core: plain C99, no nginx headers.  Everything under src/core
 * takes its memory from the caller and never logs.
 */

#ifndef PG_CORE_H
#define PG_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>


#define PG_VERSION  "0.1.0"


typedef struct {
    const uint8_t  *data;
    size_t          len;
} pg_str_t;


#define pg_str_lit(s)  { (const uint8_t *) (s), sizeof(s) - 1 }


/* bytewise comparison, as Go compares strings */
static inline int
pg_str_cmp(pg_str_t a, pg_str_t b)
{
    size_t  n;
    int     rc;

    n = a.len < b.len ? a.len : b.len;
    rc = n ? memcmp(a.data, b.data, n) : 0;

    if (rc != 0) {
        return rc;
    }

    return (a.len > b.len) - (a.len < b.len);
}


static inline int
pg_str_eq(pg_str_t a, pg_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}


/*
 * A bump allocator over caller memory; the nginx glue backs it with the
 * request pool, tests with malloc.  alloc() returns NULL when out of memory.
 */
typedef struct {
    void   *(*alloc)(void *ctx, size_t size);
    void    *ctx;
} pg_allocator_t;


/* UTF-8 validity as Go's utf8.Valid defines it (no surrogates, <= U+10FFFF) */
int pg_utf8_valid(const uint8_t *p, size_t len);

/* number of code points of valid UTF-8 */
size_t pg_utf8_count(const uint8_t *p, size_t len);

#endif /* PG_CORE_H */
