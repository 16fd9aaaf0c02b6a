/*
 * spool.h - a durable, ordered local queue of records (a directory), with
 * group commit, for work that must not be lost between being accepted and
 * being delivered (intake's submissions on their way to GitLab).
 *
 * Layout of the directory:
 *   lock                 flock()ed by the one process that has it open
 *   seg-<16 hex>.log     append-only segments, named by their first sequence
 *                        number; each record is a fixed-width header
 *                        "FS1 <seq 16 hex> <len 8 hex> <crc32 8 hex>\n", the
 *                        payload, then "\n"
 *   state                the delivery state: two 128-byte slots written in
 *                        turn (so a torn write never loses both), each
 *                        "FST1 <gen> <delivered> <current> <crc> <mark>\n"
 *
 * Appending: spool_append() returns only once the record is on disk
 * (written and fdatasync()ed, and the directory fsync()ed when a segment was
 * created). Concurrent appenders share one write and one fdatasync (group
 * commit): the first waiting caller flushes everything queued so far while
 * the others wait for it, so throughput grows with concurrency.
 *
 * Delivering: records come out in the order they were appended. The
 * consumer takes the oldest undelivered record with spool_next(), may record
 * durable progress on it with spool_mark() (a short text of its own, e.g.
 * "attempt" before an outside call that must happen once, "issue=12" after
 * it), and finishes it with spool_ack(). After a restart, spool_next() hands
 * back the same record with the last mark, so the consumer knows whether its
 * outside call may already have happened and can check before repeating it.
 * Fully delivered segments are deleted (or kept a while, see
 * spool_keep_delivered()).
 *
 * Recovery: on open, every record is checked (header, length, CRC32). A torn
 * tail of the last segment (a crash during a write, never acknowledged to
 * anyone) is cut off. A damaged record elsewhere is reported once through
 * log_error() and counted; the records after it in that segment are skipped
 * (they cannot be framed safely); they stay on disk for a person to inspect.
 *
 * Thread safety: every function may be called from any thread; appends run
 * concurrently with one consumer, and the consumer's state syncs
 * (spool_mark(), spool_ack()) never hold up an append. Only one process may open a directory at a
 * time (FACTORY_ECONFLICT names the lock file otherwise).
 */
#ifndef FACTORY_SPOOL_H
#define FACTORY_SPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct spool spool;

/* Largest record accepted by spool_append() (FACTORY_ETOOBIG above it). */
#define SPOOL_RECORD_MAX ((size_t)1 << 20)
/* Longest mark kept by spool_mark() (longer marks are refused). */
#define SPOOL_MARK_MAX 63

/*
 * Open (creating it and its parents when missing, mode 0700) the spool in
 * `dir`, take its lock and recover its contents as described above.
 * Returns 0, FACTORY_ECONFLICT (another process holds it), FACTORY_ERR (an I/O
 * error, named) or FACTORY_ENOMEM.
 */
int spool_open(spool **out, const char *dir);

/* Close: writes what spool_append_async() queued (running its callbacks),
 * releases the lock and frees everything. NULL is fine. */
void spool_close(spool *sp);

/*
 * Append one record and wait until it is durable. On 0, *seq_out (may be
 * NULL) gets its sequence number: positive and increasing, with gaps where an
 * append failed. Returns FACTORY_ETOOBIG (empty or over SPOOL_RECORD_MAX),
 * FACTORY_ERR (write or sync failed, e.g. disk full: the record is not kept
 * and the caller must not acknowledge it to anyone) or FACTORY_ENOMEM.
 */
int spool_append(uint64_t *seq_out, spool *sp, const void *data, size_t len);

/*
 * The same without waiting: the record is queued and `fn(ctx, seq, error)`
 * is called exactly once, from another thread, when it is durable (error 0)
 * or could not be written (error < 0: not kept). Servers use it to answer
 * without holding a thread while the disk syncs. Returns 0 (fn will be
 * called), or an error as spool_append() (fn will not be called). The
 * callback runs without the spool's lock held; spool_close() waits for all.
 */
typedef void (*spool_done_fn)(void *ctx, uint64_t seq, int error);
int spool_append_async(spool *sp, const void *data, size_t len, spool_done_fn fn, void *ctx);

/*
 * The oldest record not yet acknowledged: *data_out (malloc'd, NUL-terminated,
 * caller frees), *len_out, *seq_out and, in *mark_out (SPOOL_MARK_MAX + 1
 * bytes, may be NULL), the mark last recorded for it ("" when none). Waits up
 * to `wait_ms` for one to arrive (0: do not wait). Returns 0, FACTORY_ENOTFOUND
 * when there is none (or spool_wake() was called), FACTORY_ERR on a read error.
 * Calling it again before spool_ack() returns the same record.
 */
int spool_next(uint64_t *seq_out, char **data_out, size_t *len_out, char *mark_out, spool *sp, long wait_ms);

/* Record `mark` durably for record `seq` (the one spool_next() returned).
 * Returns 0, FACTORY_EINVALID (another record, or a mark that is too long or
 * holds a newline) or FACTORY_ERR (write or sync failed). */
int spool_mark(spool *sp, uint64_t seq, const char *mark);

/* Acknowledge record `seq` (the one spool_next() returned): durably
 * delivered; the next spool_next() moves on. Returns as spool_mark(). */
int spool_ack(spool *sp, uint64_t seq);

/*
 * Keep fully delivered segments on disk for `keep_ms` after their last
 * write, but never more than `max_segments` of them (0 keep_ms: delete them
 * as soon as they are delivered, the default). What is kept is visited by
 * spool_scan(), so a user can rebuild recent state at start-up (intake
 * folds duplicates across a restart that way). Kept segments go at a later
 * acknowledgement once they are old enough. Call it right after
 * spool_open(), before the first spool_next() (which deletes what is
 * delivered and not kept).
 */
void spool_keep_delivered(spool *sp, long keep_ms, size_t max_segments);

/*
 * Visit every valid record on disk, delivered or not, oldest first: `fn`
 * gets each record's sequence number and bytes (NUL-terminated, valid only
 * during the call) and returns 0 to go on or a negative error to stop with
 * it. Records appended after the call began are not visited. Returns 0,
 * fn's error, FACTORY_ERR (a read error) or FACTORY_ENOMEM.
 */
typedef int (*spool_scan_fn)(void *ctx, uint64_t seq, const char *data, size_t len);
int spool_scan(spool *sp, spool_scan_fn fn, void *ctx);

/* Wake a consumer waiting in spool_next() (for shutdown). */
void spool_wake(spool *sp);

typedef struct {
	uint64_t last_seq;      /* highest sequence number given out */
	uint64_t delivered;     /* highest acknowledged */
	uint64_t pending;       /* records appended and not yet acknowledged */
	uint64_t appended;      /* appended since open */
	uint64_t flushes;       /* write+sync rounds since open (appended/flushes = batch size) */
	uint64_t damaged;       /* damaged records found on open */
	uint64_t segments;      /* segment files on disk */
} spool_stats;
void spool_get_stats(spool_stats *out, spool *sp);

#endif
