/*
 * deliver.h - from the spool to GitLab, in order, exactly once.
 *
 * Each spooled submission becomes one issue, plus one internal note when it
 * carries an email. Exactly once rests on the spool's durable marks and the
 * hidden markers (feedback.h):
 *   - before the create call the record is marked "attempt=<unix ms>"; if
 *     the outcome is uncertain (an error, a crash, a restart), the next try
 *     first looks for an issue whose description holds the submission marker
 *     (GitLab search, then the issues created since the submission arrived)
 *     and creates one only when there is none. A request GitLab may still be
 *     working on (no answer came: a timeout, a cut connection, a crash) is
 *     given settle_ms from its start before that search, so a create still
 *     in flight is not missed;
 *   - after the create the record is marked "issue=<iid>", so the issue is
 *     never made again; the note is marked "note=<iid>" first and, when that
 *     mark is found after a failure, the notes are searched for the
 *     reporter marker before it is written;
 *   - only then is the record acknowledged (removed from the queue).
 * The next record is not touched before the current one is done, so issues
 * appear in the order submissions were accepted.
 *
 * Failures: GitLab unavailable, 429, 5xx, network and auth errors are
 * retried with exponential backoff (1 s doubling up to retry_max_ms),
 * forever: nothing is dropped. A submission GitLab keeps refusing as invalid
 * (400/422, `dead_after` times in a row) or a record that is not a
 * submission is moved to <spool>/dead/<seq>.json with the reason, logged as
 * an error and counted, so one bad record cannot stop the queue.
 */
#ifndef FACTORY_INTAKE_DELIVER_H
#define FACTORY_INTAKE_DELIVER_H

#include <cjson/cJSON.h>

#include "gitlab.h"
#include "spool.h"

typedef struct deliverer deliverer;

typedef struct {
	const char *spool_dir;  /* for dead/ */
	long retry_min_ms;      /* default 1000 */
	long retry_max_ms;      /* default 60000 */
	int dead_after;         /* default 5 */
	long settle_ms;         /* how long GitLab may take to answer (the HTTP timeout); default 60000 */
} deliver_options;

int deliverer_new(deliverer **out, gitlab *gl, spool *sp, const deliver_options *o);
void deliverer_free(deliverer *d);

/* Run in a thread of its own until deliverer_stop(). */
int deliverer_start(deliverer *d);
/* Ask the thread to stop after the current call and wait for it. */
void deliverer_stop(deliverer *d);

/*
 * Deliver in the calling thread until the spool is empty. Returns 0, or
 * FACTORY_EUPSTREAM (or the error code) after `max_failures` failed tries in
 * a row (what was delivered stays delivered; the rest waits in the spool).
 */
int deliverer_drain(deliverer *d, int max_failures);

typedef struct {
	long delivered;    /* submissions delivered (issues made or found) */
	long found;        /* of which already existed after an uncertain try */
	long notes;        /* internal notes written */
	long failures;     /* failed tries */
	long dead;         /* moved to dead/ */
	int retrying;      /* the current submission is waiting to be retried */
	char last_error[256];
} deliver_stats;
void deliverer_get_stats(deliver_stats *out, deliverer *d);
/* The stats as a JSON object added to `parent` under "delivery". */
int deliverer_status_json(cJSON *parent, deliverer *d);

#endif
