/*
 * A bump allocator for the fuzz targets, as the nginx glue backs
 * pg_allocator_t with a request pool: never frees, reset per input, with a
 * cap a target may lower to reach the out-of-memory paths.  Under ASan
 * every allocation is followed by a poisoned red zone, so an overflow from
 * one allocation into the next is caught as it would be with malloc().
 */

#ifndef FUZZ_ARENA_H
#define FUZZ_ARENA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sanitizer/asan_interface.h>

#include "fuzz_check.h"


#define FUZZ_REDZONE  16


typedef struct {
    uint8_t   *base;
    size_t     used;
    size_t     cap;        /* what alloc() may hand out now */
    size_t     size;       /* what base holds */
} fuzz_arena_t;


static void *
fuzz_arena_alloc(void *ctx, size_t size)
{
    fuzz_arena_t  *a = ctx;
    uint8_t       *p;
    size_t         span;

    span = ((size + 15) & ~(size_t) 15) + FUZZ_REDZONE;

    if (span > a->cap - a->used) {
        return NULL;
    }

    p = a->base + a->used;
    a->used += span;

    ASAN_UNPOISON_MEMORY_REGION(p, size);

    return p;
}


static void
fuzz_arena_reset(fuzz_arena_t *a, size_t size, size_t cap)
{
    if (a->base == NULL) {
        a->base = malloc(size);
        a->size = size;
        if (a->base == NULL) {
            abort();
        }
    }

    ASAN_POISON_MEMORY_REGION(a->base, a->used ? a->used : a->size);

    a->used = 0;
    a->cap = cap < a->size ? cap : a->size;
}


static pg_allocator_t
fuzz_arena_allocator(fuzz_arena_t *a)
{
    pg_allocator_t  al;

    al.alloc = fuzz_arena_alloc;
    al.ctx = a;

    return al;
}

#endif /* FUZZ_ARENA_H */
