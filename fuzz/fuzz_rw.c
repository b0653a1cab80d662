/*
 * libFuzzer target: remote-write 1.0 decoding, validation and re-encoding
 * (src/core/pg_rw.c, pg_rw_encode.c, pg_snappy.c, pg_utf8.c), the way the
 * write location uses them, against protobuf-c: see fuzz_rw_check.h for
 * what is checked.
 *
 * Build: t/fuzz.sh (clang -fsanitize=fuzzer,address,undefined).
 */

#define FZ_TARGET  "fuzz_rw"

#include "fuzz_rw_check.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (pg_utf8_valid(data, size)) {
        check(pg_utf8_count(data, size) <= size);
    }

    fz_run(data, size, PG_RW_V1);

    return 0;
}
