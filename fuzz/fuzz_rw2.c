/*
 * libFuzzer target: remote-write 2.0 decoding, validation and re-encoding
 * (src/core/pg_rw2.c, pg_rw_encode.c), against protobuf-c: see
 * fuzz_rw_check.h for what is checked.
 *
 * Build: t/fuzz.sh (clang -fsanitize=fuzzer,address,undefined).
 */

#define FZ_TARGET  "fuzz_rw2"

#include "fuzz_rw_check.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_run(data, size, PG_RW_V2);

    return 0;
}
