/*
 * UTF-8 as Go reads and writes it: one decoder, which the validator and
 * every reader of runes use, and one encoder.  pg_utf8_valid() and
 * pg_utf8_count() are declared in pg_core.h.
 */

#ifndef PG_UTF8_H
#define PG_UTF8_H

#include "pg_core.h"


/*
 * Go's utf8.DecodeRune(): the length of the valid sequence at p and its
 * code point, or 0 when p[0] does not start one (Go: U+FFFD, width 1).
 * Shortest form only, no surrogate halves, nothing above U+10FFFF.
 */
size_t pg_utf8_decode_rune(const uint8_t *p, size_t len, uint32_t *rune);

/* Go's utf8.EncodeRune() of a valid code point: 1 to 4 bytes at p */
size_t pg_utf8_encode_rune(uint8_t *p, uint32_t rune);

#endif /* PG_UTF8_H */
