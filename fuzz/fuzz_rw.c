/*
 * libFuzzer target: remote-write decoding and validation (src/core/pg_rw.c,
 * pg_snappy.c, pg_utf8.c), the way the write location uses them.
 *
 * Each input is tried twice: as a decoded WriteRequest, and as the snappy
 * block a sender posts (declared-length guard, decode, scan).  Besides the
 * sanitizers, the target checks properties the scan promises:
 *
 *   - a request pg_rw_scan() accepts is one protobuf-c accepts too (see
 *     check_request() for the two known, harmless differences), with the
 *     same counts, and the zero-copy iterators give exactly protobuf-c's
 *     labels and exemplars, byte for byte;
 *   - every label the scan accepts has a valid name, valid UTF-8, and the
 *     names of a series are strictly sorted;
 *   - a refusal carries a NUL-terminated message and an offset inside the
 *     buffer;
 *   - pg_utf8_valid() agrees with a plain reference decoder.
 *
 * Build: t/fuzz.sh (clang -fsanitize=fuzzer,address,undefined).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_rw.h"
#include "remote.pb-c.h"


#define FUZZ_MAX_DECODED  (4u << 20)

#define check(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_rw: check failed at %s:%d: %s\n",          \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)


typedef struct {
    Prometheus__WriteRequest  *pc;          /* protobuf-c's view, or NULL */
    size_t                     series;
} fuzz_rw_ctx_t;


/* UTF-8 as Go's utf8.Valid defines it, written the long way */
static int
ref_utf8_valid(const uint8_t *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    for (i = 0; i < len; /* void */) {
        uint8_t c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 1; cp = c & 0x1f; min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2; cp = c & 0x0f; min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return 0;
        }

        if (len - i <= n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += n + 1;
    }

    return 1;
}


static int
ref_label_name_valid(pg_str_t s)
{
    size_t   i;
    uint8_t  c;

    if (s.len == 0) {
        return 0;
    }

    for (i = 0; i < s.len; i++) {
        c = s.data[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
              || (i > 0 && c >= '0' && c <= '9')))
        {
            return 0;
        }
    }

    return 1;
}


/* protobuf-c keeps the bytes of a string field and a NUL after them */
static int
same_bytes(const char *pc, pg_str_t s)
{
    return (s.len == 0 || memcmp(pc, s.data, s.len) == 0) && pc[s.len] == '\0';
}


static void
check_labels(pg_pb_iter_t *it, uint32_t expect, Prometheus__Label **pcl,
    size_t npcl, pg_str_t *name)
{
    pg_label_t  l, prev;
    uint32_t    n;

    n = 0;
    memset(&prev, 0, sizeof(prev));

    while (pg_rw_next_label(it, &l)) {
        check(ref_utf8_valid(l.name.data, l.name.len));
        check(ref_utf8_valid(l.value.data, l.value.len));
        check(ref_label_name_valid(l.name));

        if (n > 0) {
            check(pg_str_cmp(prev.name, l.name) < 0);
        }

        if (name && l.name.len == 8 && memcmp(l.name.data, "__name__", 8) == 0) {
            check(l.value.len > 0);
            check(pg_str_eq(l.value, *name));
        }

        if (pcl) {
            check(n < npcl);
            check(same_bytes(pcl[n]->name, l.name));
            check(same_bytes(pcl[n]->value, l.value));
        }

        prev = l;
        n++;
    }

    check(n == expect);
    check(pcl == NULL || n == npcl);
}


static int
series_cb(void *data, const pg_rw_series_t *s)
{
    fuzz_rw_ctx_t          *ctx = data;
    pg_pb_iter_t            it, lit;
    pg_exemplar_t           ex;
    Prometheus__TimeSeries *ts;
    Prometheus__Exemplar   *pe;
    uint32_t                n;

    check(s->index == ctx->series);
    ctx->series++;

    ts = NULL;

    if (ctx->pc) {
        check(s->index < ctx->pc->n_timeseries);
        ts = ctx->pc->timeseries[s->index];
        check(ts->n_labels == s->nlabels);
        check(ts->n_samples == s->nsamples);
        check(ts->n_exemplars == s->nexemplars);
        check(ts->n_histograms == s->nhistograms);
    }

    check(s->name.len > 0);

    pg_rw_series_labels(s, &it);
    check_labels(&it, s->nlabels, ts ? ts->labels : NULL,
                 ts ? ts->n_labels : 0, (pg_str_t *) &s->name);

    /* the iterator is done for good once it said so */
    check(!pg_rw_next_label(&it, &(pg_label_t) { { 0 } }));

    pg_rw_series_exemplars(s, &it);
    n = 0;

    while (pg_rw_next_exemplar(&it, &ex)) {
        pe = NULL;

        if (ts) {
            check(n < ts->n_exemplars);
            pe = ts->exemplars[n];
            check(memcmp(&pe->value, &ex.value, sizeof(double)) == 0);
            check(pe->timestamp == ex.timestamp);
        }

        /* exemplar labels need not be sorted; they must be valid */
        lit = ex.labels;
        {
            pg_label_t  l;
            size_t      k = 0;

            while (pg_rw_next_label(&lit, &l)) {
                check(ref_utf8_valid(l.name.data, l.name.len));
                check(ref_utf8_valid(l.value.data, l.value.len));
                check(ref_label_name_valid(l.name));

                if (pe) {
                    check(k < pe->n_labels);
                    check(same_bytes(pe->labels[k]->name, l.name));
                    check(same_bytes(pe->labels[k]->value, l.value));
                }
                k++;
            }

            check(pe == NULL || k == pe->n_labels);
        }

        n++;
    }

    check(n == s->nexemplars);

    return 0;
}


/* five bytes >= 0x80 in a row: room for a varint longer than 5 bytes */
static int
has_long_varint_run(const uint8_t *p, size_t len)
{
    size_t  i, run;

    for (i = 0, run = 0; i < len; i++) {
        run = p[i] >= 0x80 ? run + 1 : 0;
        if (run >= 5) {
            return 1;
        }
    }

    return 0;
}


static void
check_request(const uint8_t *buf, size_t len)
{
    pg_rw_stats_t       st;
    pg_rw_error_t       err;
    pg_rw_reason_e      rc;
    fuzz_rw_ctx_t       ctx;
    uint64_t            counted;
    size_t              i, samples, exemplars, histograms;

    memset(&ctx, 0, sizeof(ctx));
    memset(&err, 0xa5, sizeof(err));

    ctx.pc = prometheus__write_request__unpack(NULL, len, buf);

    rc = pg_rw_scan(buf, len, &st, &err, series_cb, &ctx);

    counted = pg_rw_count_samples(buf, len);

    check(pg_rw_reason_name(rc) != NULL);

    if (rc != PG_RW_OK) {
        check(rc < PG_RW_NREASONS && rc != PG_RW_ABORTED);
        check(err.reason == rc);
        check(memchr(err.message, '\0', sizeof(err.message)) != NULL);
        check(err.offset <= len);
        goto done;
    }

    check(ctx.series == st.series);
    check(counted == st.samples);
    check(st.empty_series <= st.series);

    if (ctx.pc == NULL) {
        /*
         * Two known differences, both harmless:
         *
         *   - the scan checks wire types, not the insides of a native
         *     histogram's spans and packed buckets; a storage refuses those
         *     (400) and the sender gets that answer;
         *   - protobuf-c refuses field keys longer than 5 bytes (padded
         *     varints); the scan accepts them, as Go's protobuf (and so
         *     Prometheus) does.  A key that long needs five continuation
         *     bytes in a row, so only inputs without such a run are
         *     held to protobuf-c's verdict.
         */
        check(st.histograms > 0 || has_long_varint_run(buf, len));
        goto done;
    }

    check(ctx.pc->n_timeseries == st.series);
    check(ctx.pc->n_metadata == st.metadata);

    samples = exemplars = histograms = 0;

    for (i = 0; i < ctx.pc->n_timeseries; i++) {
        samples += ctx.pc->timeseries[i]->n_samples;
        exemplars += ctx.pc->timeseries[i]->n_exemplars;
        histograms += ctx.pc->timeseries[i]->n_histograms;
    }

    check(samples == st.samples);
    check(exemplars == st.exemplars);
    check(histograms == st.histograms);

done:

    if (ctx.pc) {
        prometheus__write_request__free_unpacked(ctx.pc, NULL);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          n;
    uint8_t        *buf;
    pg_snappy_rc_e  rc;

    check(!pg_utf8_valid(data, size) == !ref_utf8_valid(data, size));

    if (pg_utf8_valid(data, size)) {
        check(pg_utf8_count(data, size) <= size);
    }

    /* the bytes as a decoded WriteRequest */
    check_request(data, size);

    /* the bytes as a sender's snappy block, with the write location's guard */
    rc = pg_snappy_decoded_length(data, size, FUZZ_MAX_DECODED, &n);

    if (rc != PG_SNAPPY_OK) {
        check(size == 0 || rc == PG_SNAPPY_INVALID || n > FUZZ_MAX_DECODED);
        return 0;
    }

    buf = malloc(n ? n : 1);
    check(buf != NULL);

    if (pg_snappy_decode(data, size, buf, n) == PG_SNAPPY_OK) {
        check_request(buf, n);
    }

    free(buf);

    return 0;
}
