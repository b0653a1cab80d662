/*
 * Decode-only throughput of src/core on the benchmark bodies: snappy alone,
 * snappy + the zero-copy validating decoder (what promgate does per
 * write), protobuf-c's unpack with its default allocator and with an
 * arena for comparison, and, on the decoded bodies, the 1.0 and 2.0
 * decoders alone, the translations 1.0 -> 2.0 and 2.0 -> 1.0, and subset
 * re-encoding (1% of the series left out), these three timed without the
 * decoding that comes before them.  CPU time per sample, one core;
 * each figure is the best of REPEAT passes (other work on the machine only
 * ever adds time).
 *
 *   decode_bench [-n ITER] [-r REPEAT] [-m MODE] BODY.bin...
 *
 * -m MODE runs only that figure, once, and prints the samples it covered:
 * what `valgrind --tool=callgrind --collect-atstart=no
 * --toggle-collect=bench_pass` counts is then the instructions of MODE
 * alone (modes: snappy, scan, protobufc, arena, v1, v2, 1to2, 2to1, sub1,
 * sub2; scan is snappy + the validating scan, as timed).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <snappy-c.h>

#include "pg_rw.h"
#include "remote.pb-c.h"


typedef struct {
    uint8_t  *base;
    size_t    used;
    size_t    size;
} arena_t;


static void *
arena_alloc(void *data, size_t size)
{
    arena_t  *a = data;
    void     *p;

    size = (size + 15) & ~(size_t) 15;
    if (a->used + size > a->size) {
        return NULL;
    }
    p = a->base + a->used;
    a->used += size;
    return p;
}


static void
arena_free(void *data, void *p)
{
}


static int
buf_grow(pg_buf_t *b, size_t need)
{
    size_t    size, used;
    uint8_t  *p;

    used = b->pos - b->start;
    size = (b->end - b->start) * 2;
    if (size < used + need) {
        size = used + need;
    }
    p = realloc(b->start, size);
    if (p == NULL) {
        return -1;
    }
    b->start = p;
    b->pos = p + used;
    b->end = p + size;
    return 0;
}


static double
cpu_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


enum {
    T_SNAPPY, T_SNAPPY_SCAN, T_PBC, T_ARENA, T_V1, T_V2, T_1TO2, T_2TO1,
    T_SUB1, T_SUB2, T_N
};


static int           n, iter;
static size_t        len[64], dlen[64], v2len[64];
static uint8_t      *body[64], *dec[64], *v2[64], *drop1[64], *drop2[64];
static uint64_t      samples;
static arena_t       arena;
static pg_allocator_t  alloc = { arena_alloc, &arena };
static pg_buf_t      out;


static void
fail(const char *what, int i)
{
    fprintf(stderr, "decode_bench: %s (body %d)\n", what, i);
    exit(1);
}


static const char  *mode_names[T_N] = {
    "snappy", "scan", "protobufc", "arena", "v1", "v2", "1to2", "2to1",
    "sub1", "sub2"
};


/* not inlined: callgrind's --toggle-collect names it */
__attribute__((noinline)) double bench_pass(int mode);


double
bench_pass(int mode)
{
    int                        i, k;
    size_t                     dl;
    double                     t0, t1, enc;
    pg_rw_request_t            req;
    ProtobufCAllocator         pa;
    Prometheus__WriteRequest  *wr;

    pa.alloc = arena_alloc;
    pa.free = arena_free;
    pa.allocator_data = &arena;

    enc = 0;
    t0 = cpu_now();

    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            arena.used = 0;
            out.pos = out.start;

            switch (mode) {

            case T_SNAPPY:
                pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dl);
                pg_snappy_decode(body[i], len[i], dec[i], dl);
                break;

            case T_SNAPPY_SCAN:
                pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dl);
                pg_snappy_decode(body[i], len[i], dec[i], dl);
                if (pg_rw_decode(dec[i], dl, PG_RW_V1, &alloc, &req, NULL,
                                 NULL) != PG_RW_OK
                    || req.invalid_series)
                {
                    fail("invalid body", i);
                }
                break;

            case T_PBC:
                pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dl);
                pg_snappy_decode(body[i], len[i], dec[i], dl);
                wr = prometheus__write_request__unpack(NULL, dl, dec[i]);
                prometheus__write_request__free_unpacked(wr, NULL);
                break;

            case T_ARENA:
                pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dl);
                pg_snappy_decode(body[i], len[i], dec[i], dl);
                wr = prometheus__write_request__unpack(&pa, dl, dec[i]);
                if (wr == NULL) {
                    fail("arena too small", i);
                }
                break;

            case T_V1:
            case T_1TO2:
            case T_SUB1:
                if (pg_rw_decode(dec[i], dlen[i], PG_RW_V1, &alloc, &req,
                                 NULL, NULL) != PG_RW_OK)
                {
                    fail("1.0 decode", i);
                }
                if (mode == T_V1) {
                    break;
                }
                if (mode == T_SUB1) {
                    req.dropped = drop1[i];
                }
                t1 = cpu_now();
                if (pg_rw_encode(dec[i], dlen[i], &req, NULL,
                                 mode == T_1TO2 ? PG_RW_V2 : PG_RW_V1,
                                 &alloc, &out) != 0)
                {
                    fail("encode", i);
                }
                enc += cpu_now() - t1;
                break;

            default: /* T_V2, T_2TO1, T_SUB2 */
                if (pg_rw_decode(v2[i], v2len[i], PG_RW_V2, &alloc, &req,
                                 NULL, NULL) != PG_RW_OK)
                {
                    fail("2.0 decode", i);
                }
                if (mode == T_V2) {
                    break;
                }
                if (mode == T_SUB2) {
                    req.dropped = drop2[i];
                }
                t1 = cpu_now();
                if (pg_rw_encode(v2[i], v2len[i], &req, NULL,
                                 mode == T_2TO1 ? PG_RW_V1 : PG_RW_V2,
                                 &alloc, &out) != 0)
                {
                    fail("encode", i);
                }
                enc += cpu_now() - t1;
                break;
            }
        }
    }

    /* the encodings alone: the decoding before them is timed apart */
    if (mode >= T_1TO2) {
        return enc;
    }

    return cpu_now() - t0;
}


int
main(int argc, char **argv)
{
    int               i, m, r, repeat, first, only;
    size_t            maxd, k;
    double            t[T_N], x, per;
    FILE             *f;
    pg_rw_request_t   req;

    iter = 20;
    repeat = 5;
    first = 1;
    only = -1;

    while (argc > first + 1 && argv[first][0] == '-') {
        if (strcmp(argv[first], "-n") == 0) {
            iter = atoi(argv[first + 1]);
        } else if (strcmp(argv[first], "-r") == 0) {
            repeat = atoi(argv[first + 1]);
        } else if (strcmp(argv[first], "-m") == 0) {
            for (m = 0; m < T_N; m++) {
                if (strcmp(argv[first + 1], mode_names[m]) == 0) {
                    only = m;
                }
            }
            if (only < 0) {
                fprintf(stderr, "decode_bench: unknown mode \"%s\"\n",
                        argv[first + 1]);
                return 2;
            }
        } else {
            break;
        }
        first += 2;
    }

    n = 0;
    maxd = 0;

    for (i = first; i < argc && n < 64; i++) {
        f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        len[n] = (size_t) ftell(f);
        fseek(f, 0, SEEK_SET);
        body[n] = malloc(len[n]);
        if (fread(body[n], 1, len[n], f) != len[n]) {
            return 1;
        }
        fclose(f);
        if (pg_snappy_decoded_length(body[n], len[n], 1 << 30, &dlen[n])
            != PG_SNAPPY_OK)
        {
            fprintf(stderr, "%s: not snappy\n", argv[i]);
            return 1;
        }
        dec[n] = malloc(dlen[n]);
        pg_snappy_decode(body[n], len[n], dec[n], dlen[n]);
        if (dlen[n] > maxd) {
            maxd = dlen[n];
        }
        n++;
    }

    if (n == 0) {
        fprintf(stderr, "usage: decode_bench [-n ITER] [-r REPEAT] "
                        "[-m MODE] BODY.bin...\n");
        return 2;
    }

    arena.size = maxd * 8;
    arena.base = malloc(arena.size);
    out.start = malloc(maxd * 2);
    out.pos = out.start;
    out.end = out.start + maxd * 2;
    out.grow = buf_grow;

    /* the 2.0 bodies, and 1% of the series of each left out */

    samples = 0;

    for (i = 0; i < n; i++) {
        arena.used = 0;
        out.pos = out.start;

        if (pg_rw_decode(dec[i], dlen[i], PG_RW_V1, &alloc, &req, NULL, NULL)
            != PG_RW_OK
            || pg_rw_encode(dec[i], dlen[i], &req, NULL, PG_RW_V2, &alloc,
                            &out) != 0)
        {
            fail("1.0 -> 2.0", i);
        }

        samples += req.stats.samples + req.stats.histograms;

        v2len[i] = out.pos - out.start;
        v2[i] = malloc(v2len[i]);
        memcpy(v2[i], out.start, v2len[i]);

        drop1[i] = calloc(req.nseries_total / 8 + 1, 1);
        drop2[i] = calloc(req.nseries_total / 8 + 1, 1);

        for (k = 0; k < req.nseries_total; k += 100) {
            drop1[i][k >> 3] |= 1 << (k & 7);
            drop2[i][k >> 3] |= 1 << (k & 7);
        }
    }

    samples *= iter;

    if (only >= 0) {
        x = bench_pass(only);
        printf("{\"mode\":\"%s\",\"samples\":%llu,\"us_per_sample\":%.4f}\n",
               mode_names[only], (unsigned long long) samples,
               x * 1e6 / samples);
        return 0;
    }

    for (m = 0; m < T_N; m++) {
        t[m] = 1e9;
        for (r = 0; r < repeat; r++) {
            x = bench_pass(m);
            if (x < t[m]) {
                t[m] = x;
            }
        }
    }

    per = 1e6 / samples;

    printf("{\"bodies\":%d,\"iterations\":%d,\"repeat\":%d,\"samples\":%llu,"
           "\"snappy_us_per_sample\":%.4f,"
           "\"snappy_scan_us_per_sample\":%.4f,"
           "\"scan_only_us_per_sample\":%.4f,"
           "\"snappy_protobufc_malloc_us_per_sample\":%.4f,"
           "\"snappy_protobufc_arena_us_per_sample\":%.4f,"
           "\"decode_samples_per_cpu_second\":%.0f,"
           "\"decode_v1_us_per_sample\":%.4f,"
           "\"decode_v2_us_per_sample\":%.4f,"
           "\"translate_1to2_us_per_sample\":%.4f,"
           "\"translate_2to1_us_per_sample\":%.4f,"
           "\"subset_v1_us_per_sample\":%.4f,"
           "\"subset_v2_us_per_sample\":%.4f}\n",
           n, iter, repeat, (unsigned long long) samples,
           t[T_SNAPPY] * per, t[T_SNAPPY_SCAN] * per,
           (t[T_SNAPPY_SCAN] - t[T_SNAPPY]) * per, t[T_PBC] * per,
           t[T_ARENA] * per, samples / t[T_SNAPPY_SCAN],
           t[T_V1] * per, t[T_V2] * per, t[T_1TO2] * per, t[T_2TO1] * per,
           t[T_SUB1] * per, t[T_SUB2] * per);

    return 0;
}
