/*
 * The fuzz targets' assertion: a failed check names the target, the
 * place and the condition, then aborts, so libFuzzer keeps the input as
 * a crash.  One definition for every target (fuzz/*.c).
 */

#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>


#define fuzz_check(target, cond)                                             \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s: check failed at %s:%d: %s\n", target,       \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif /* FUZZ_CHECK_H */
