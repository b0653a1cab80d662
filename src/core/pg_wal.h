/*
 * The exemplar write-ahead log: record framing and segment scanning.
 *
 * A segment file is a sequence of frames:
 *
 *     u32 length of the payload (little-endian)
 *     u32 CRC32C of the payload
 *     payload: u64 seq, i64 ts (ms), f64 value, tenant, series labels,
 *              exemplar labels (each string as u32 length + bytes,
 *              each label set as u32 count + strings)
 *
 * Each process (its pid is the writer) appends to its own segments, so
 * records of all writers are merged by sequence number on replay.
 */

#ifndef PG_WAL_H
#define PG_WAL_H

#include "pg_core.h"
#include "pg_rw.h"


#define PG_WAL_FRAME_HEADER  8
#define PG_WAL_MAX_RECORD    (16 * 1024 * 1024)


typedef struct {
    uint64_t            seq;
    int64_t             ts;
    double              value;
    pg_str_t            tenant;
    const pg_label_t   *series;
    size_t              nseries;
    const pg_label_t   *labels;
    size_t              nlabels;
} pg_wal_record_t;


typedef struct {
    uint64_t            records;       /* good records */
    uint64_t            corrupt;       /* skipped: bad CRC or payload */
    uint64_t            first_seq;     /* of the good records, 0 if none */
    uint64_t            last_seq;
    size_t              good_bytes;    /* up to the end of the last frame
                                        * that could be read */
    int                 torn;          /* the tail was cut off */
    size_t              torn_offset;
} pg_wal_scan_t;


uint32_t pg_crc32c(uint32_t crc, const uint8_t *p, size_t len);

/* little-endian integers, as frames hold them */
uint8_t *pg_wal_put32(uint8_t *p, uint32_t v);
uint8_t *pg_wal_put64(uint8_t *p, uint64_t v);
uint32_t pg_wal_get32(const uint8_t *p);
uint64_t pg_wal_get64(const uint8_t *p);

/* the frame's size for a record */
size_t pg_wal_frame_size(const pg_wal_record_t *rec);

/*
 * Whether replay would read the record's frame: its payload is at most
 * PG_WAL_MAX_RECORD bytes (pg_wal_scan() takes a longer length for a torn
 * tail).
 */
int pg_wal_record_fits(const pg_wal_record_t *rec);

/*
 * Writes the frame into out (pg_wal_frame_size() bytes) and returns its
 * size; 0, with nothing written, for a record that does not fit.
 */
size_t pg_wal_encode(const pg_wal_record_t *rec, uint8_t *out);

/*
 * Decodes one payload; the label arrays come from alloc and point into
 * the payload.  Returns 0, or -1 if the payload is malformed or out of
 * memory.
 */
int pg_wal_decode(const uint8_t *payload, size_t len,
    const pg_allocator_t *alloc, pg_wal_record_t *rec);


/*
 * Called for each good frame: payload bytes and the frame's offset in the
 * segment.  Return non-zero to stop.
 */
typedef int (*pg_wal_frame_pt)(void *ctx, const uint8_t *payload,
    size_t len, uint64_t seq, size_t offset);

/*
 * Walks a segment's bytes.  A frame whose CRC does not match but whose
 * length fits is skipped and counted (a corrupt record in the middle); a
 * length that runs past the end, or a partial header, ends the scan as a
 * torn tail at that offset.
 */
void pg_wal_scan(const uint8_t *data, size_t len, pg_wal_frame_pt cb,
    void *ctx, pg_wal_scan_t *res);

/* the sequence number of a payload (its first 8 bytes), 0 if too short */
uint64_t pg_wal_payload_seq(const uint8_t *payload, size_t len);



/* ---------------------------------------------------------- segments */

/*
 * Segment files are named "<name>-w<writer>-<first seq, 20 digits>.wal",
 * the writer being the appending process's id (at least 4 digits; older
 * versions wrote a worker slot there).  A writer's segments, sorted by
 * first sequence number, hold increasing, disjoint sequence ranges: two
 * processes alive at once (a reload's old and new workers) never share a
 * writer id.
 */

#define PG_WAL_NAME_MAX  160

size_t pg_wal_segment_name(char *buf, size_t size, const char *zone,
    unsigned writer, uint64_t first_seq);

/* 0 and the writer and first seq, or -1 if name is not one of zone's */
int pg_wal_segment_parse(const char *name, const char *zone, unsigned *writer,
    uint64_t *first_seq);


typedef struct {
    unsigned            writer;
    uint64_t            first_seq;
    int                 deletable;     /* out */
} pg_wal_segment_t;

/*
 * Marks the segments that hold nothing the ring still has: a segment is
 * done when the next segment of its writer starts at or below oldest_live
 * (the sequence number of the oldest exemplar still stored).  The newest
 * segment of a writer is never marked.  Sorts segs by writer and first
 * seq.
 */
void pg_wal_mark_deletable(pg_wal_segment_t *segs, size_t n,
    uint64_t oldest_live);


/* one good record found on replay */
typedef struct {
    uint64_t            seq;
    const uint8_t      *payload;
    uint32_t            len;
    uint32_t            segment;       /* the caller's index */
} pg_wal_entry_t;

/*
 * Sorts entries by sequence number, drops repeated sequence numbers (the
 * first kept) and returns the index of the first of the last max entries,
 * which are what the ring held.  *n is updated after dropping repeats.
 */
size_t pg_wal_merge(pg_wal_entry_t *entries, size_t *n, size_t max);

#endif /* PG_WAL_H */
