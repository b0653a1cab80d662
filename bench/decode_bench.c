/*
 * Decode-only throughput of src/core on the benchmark bodies: snappy alone,
 * snappy + the zero-copy validating scan (what promgate does per write),
 * and protobuf-c's unpack with its default allocator and with an arena,
 * for comparison.  CPU time per sample, one core.
 *
 *   decode_bench [-n ITER] BODY.bin...
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


static double
cpu_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


int
main(int argc, char **argv)
{
    int                        i, k, n, iter, first;
    size_t                     len[64], dlen, maxd;
    uint8_t                   *body[64], *dec;
    double                     t0, t_snappy, t_scan, t_pbc, t_arena;
    uint64_t                   samples;
    FILE                      *f;
    arena_t                    arena;
    pg_rw_stats_t              st;
    ProtobufCAllocator         pa;
    Prometheus__WriteRequest  *wr;

    iter = 20;
    first = 1;

    if (argc > 2 && strcmp(argv[1], "-n") == 0) {
        iter = atoi(argv[2]);
        first = 3;
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
        if (pg_snappy_decoded_length(body[n], len[n], 1 << 30, &dlen)
            != PG_SNAPPY_OK)
        {
            fprintf(stderr, "%s: not snappy\n", argv[i]);
            return 1;
        }
        if (dlen > maxd) {
            maxd = dlen;
        }
        n++;
    }

    if (n == 0) {
        fprintf(stderr, "usage: decode_bench [-n ITER] BODY.bin...\n");
        return 2;
    }

    dec = malloc(maxd);
    arena.size = maxd * 8;
    arena.base = malloc(arena.size);
    pa.alloc = arena_alloc;
    pa.free = arena_free;
    pa.allocator_data = &arena;

    samples = 0;

    t0 = cpu_now();
    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dlen);
            pg_snappy_decode(body[i], len[i], dec, dlen);
        }
    }
    t_snappy = cpu_now() - t0;

    t0 = cpu_now();
    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dlen);
            pg_snappy_decode(body[i], len[i], dec, dlen);
            if (pg_rw_scan(dec, dlen, &st, NULL, NULL, NULL) != PG_RW_OK) {
                fprintf(stderr, "invalid body %d\n", i);
                return 1;
            }
            samples += st.samples + st.histograms;
        }
    }
    t_scan = cpu_now() - t0;

    t0 = cpu_now();
    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dlen);
            pg_snappy_decode(body[i], len[i], dec, dlen);
            wr = prometheus__write_request__unpack(NULL, dlen, dec);
            prometheus__write_request__free_unpacked(wr, NULL);
        }
    }
    t_pbc = cpu_now() - t0;

    t0 = cpu_now();
    for (k = 0; k < iter; k++) {
        for (i = 0; i < n; i++) {
            pg_snappy_decoded_length(body[i], len[i], 1 << 30, &dlen);
            pg_snappy_decode(body[i], len[i], dec, dlen);
            arena.used = 0;
            wr = prometheus__write_request__unpack(&pa, dlen, dec);
            if (wr == NULL) {
                fprintf(stderr, "arena too small\n");
                return 1;
            }
        }
    }
    t_arena = cpu_now() - t0;

    printf("{\"bodies\":%d,\"iterations\":%d,\"samples\":%llu,"
           "\"snappy_us_per_sample\":%.4f,"
           "\"snappy_scan_us_per_sample\":%.4f,"
           "\"scan_only_us_per_sample\":%.4f,"
           "\"snappy_protobufc_malloc_us_per_sample\":%.4f,"
           "\"snappy_protobufc_arena_us_per_sample\":%.4f,"
           "\"decode_samples_per_cpu_second\":%.0f}\n",
           n, iter, (unsigned long long) samples,
           t_snappy * 1e6 / samples, t_scan * 1e6 / samples,
           (t_scan - t_snappy) * 1e6 / samples, t_pbc * 1e6 / samples,
           t_arena * 1e6 / samples, samples / t_scan);

    return 0;
}
