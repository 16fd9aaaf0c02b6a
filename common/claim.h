/*
 * claim.h - the Factory's claims on issues, and what it found and did about
 * them, kept in GitLab as hidden markers in the Factory's own notes; and
 * the rules that read them back. Domain layer, no I/O: the implement job
 * fetches the notes and posts the markers.
 *
 * A marker is the last line of a Factory note:
 *   <!-- factory:claim {"v":1,"run":"...","pipeline":7,"job":9,...} -->
 *   <!-- factory:event {"v":1,"ends":123,"action":"retry",...} -->
 * Only notes written by the Factory's own user (`me`) and not by the system
 * are read, so nobody can forge one through a comment; outside text in a
 * Factory note is cleaned (untrusted.h turns "<!--" into "&lt;!--"), and
 * the JSON of a marker carries '<', '>' and '&' as \u escapes, so nothing in
 * it can end the comment early.
 *
 * A claim: a job takes an issue. Fields: run (a random id of the job run),
 * pipeline and job (CI ids, 0 outside CI), job_url, branch, started_at and
 * lease_until (unix seconds, the job's clock), attempt (1, 2, ...).
 *
 * An event: what a job found and did. Fields: ends (the note id of the
 * claim it ends, 0 if none), action, diagnosis, attempt, mr (merge request
 * iid), pipeline, sha, why (one cleaned line for people and for the next
 * attempt's context). Actions: see CLAIM_ACTION_* below.
 *
 * Who owns an issue: the claims no event ends are "live"; the owner is the
 * live claim with the lowest note id (GitLab numbers notes in the order it
 * makes them), ignoring claims whose lease has run out when asked to.
 * Two jobs that claim the same issue at once both post a claim, read the
 * notes back, and only the one whose claim has the lowest id goes on; the
 * other deletes its note and backs off. Likewise for heals: the event that
 * ends a claim first is the one that counts; a second healer that finds an
 * earlier event ending the same claim deletes its own and does nothing.
 */
#ifndef FACTORY_CLAIM_H
#define FACTORY_CLAIM_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"

/* Actions an event records. */
#define CLAIM_ACTION_RETRY "retry"           /* back to Up Next for another attempt, with the diagnosis */
#define CLAIM_ACTION_NEEDS_INFO "needs_info" /* a person must add information (workflow::needs info) */
#define CLAIM_ACTION_UP_NEXT "up_next"       /* back to Up Next, not counted as an attempt */
#define CLAIM_ACTION_VALIDATION "validation" /* a merge request was opened: the issue is in Validation */
#define CLAIM_ACTION_DIRECT "direct"         /* the change was pushed to the default branch */
#define CLAIM_ACTION_NO_CHANGE "no_change"   /* the agent changed nothing (factory::no change) */
#define CLAIM_ACTION_ABANDONED "abandoned"   /* a claim its job left behind was ended */
#define CLAIM_ACTION_CLOSED "closed"         /* the merge request was merged: the issue was closed */
#define CLAIM_ACTION_MERGE "merge"           /* the Factory merged, or set auto-merge */
#define CLAIM_ACTION_HANDBACK "handback"     /* the pipeline failed: handed to the pipeline job */
#define CLAIM_ACTION_REBASED "rebased"       /* the branch was rebased onto the default branch */
#define CLAIM_ACTION_REBASE_FAILED "rebase_failed"

#define CLAIM_MARKER_MAX 8192

typedef struct {
	long note_id;
	long created; /* the note's created_at, unix seconds (GitLab's clock) */
	char run[40];
	long pipeline;
	long job;
	char job_url[512];
	char branch[256];
	long started_at;
	long lease_until;
	int attempt;
	long ended_by; /* note id of the first event that ends it, 0 while live */
} claim_entry;

typedef struct {
	long note_id;
	long created;
	long ends;
	char action[24];
	char diagnosis[32];
	int attempt;
	long mr;
	long pipeline;
	char sha[41];
	char branch[256];
	char why[1024];
} claim_event;

typedef struct {
	claim_entry *claims; /* in note id order */
	size_t nclaims;
	claim_event *events; /* in note id order */
	size_t nevents;
} claim_history;

/*
 * Append a marker line for `kind` ("claim" or "event") with `fields` (a JSON
 * object, borrowed) to `out`: "<!-- factory:<kind> {...} -->". Fails with
 * FACTORY_EINVALID for another kind or a marker over CLAIM_MARKER_MAX.
 */
int claim_marker_format(fbuf *out, const char *kind, const cJSON *fields);

/*
 * Find the last marker in a note body: *kind_out gets "claim" or "event",
 * *fields a new JSON object (caller frees). Returns 0, FACTORY_ENOTFOUND (no
 * marker, an unknown kind, or JSON that is not an object) or FACTORY_ENOMEM.
 */
int claim_marker_parse(char kind_out[8], cJSON **fields, const char *body);

/* The claim and event fields as JSON, for claim_marker_format. */
int claim_entry_json(cJSON **out, const claim_entry *c);
int claim_event_json(cJSON **out, const claim_event *e);

/*
 * Read an issue's notes (GitLab's JSON array, any order) into its history:
 * only notes by user `me`, not system notes, with a marker that parses.
 * Returns 0, FACTORY_EINVALID (not an array) or FACTORY_ENOMEM.
 */
int claim_history_read(claim_history *out, const cJSON *notes, long me);
void claim_history_release(claim_history *h);

/* The owner: the live claim with the lowest note id; with `now` > 0, claims
 * whose lease ended before `now` are passed over. NULL when there is none. */
const claim_entry *claim_owner(const claim_history *h, long now);
const claim_entry *claim_find(const claim_history *h, long note_id);

/* The first event (lowest note id) that ends claim `claim_note_id`; NULL if none. */
const claim_event *claim_first_end(const claim_history *h, long claim_note_id);

/* The last event with `action` (and, when non-zero, merge request `mr` and
 * pipeline `pipeline`); NULL if none. */
const claim_event *claim_last_event(const claim_history *h, const char *action, long mr, long pipeline);

/* Attempts already made: retry events since the last time a person was asked
 * (needs_info or no_change), so an issue a person answered starts again at 1. */
int claim_attempts_made(const claim_history *h);

/* Append what earlier attempts found (the why of each counted retry event),
 * one "- attempt N: diagnosis: why" line each, to `out`. */
int claim_retry_context(fbuf *out, const claim_history *h);

/* GitLab's time ("2026-11-27T10:00:00.123Z", "+01:00" offsets too) to unix
 * seconds; -1 if it does not parse. */
long claim_parse_time(const char *s);
/* Unix seconds as "2026-11-27T10:00:00Z" into `out` (at least 21 bytes). */
void claim_format_time(char *out, size_t len, long t);

#endif
