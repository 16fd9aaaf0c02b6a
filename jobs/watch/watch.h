/*
 * watch.h - what the files of factory-watch share: reading the sources
 * (sources.c), the run's tally of error fingerprints (main.c), and filing
 * into GitLab (filing.c).
 */
#ifndef FACTORY_WATCH_H
#define FACTORY_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "logclass.h"
#include "logmine.h"
#include "logparse.h"

/* ---- sources.c ---- */

/* Called with each chunk of a source's bytes; `default_time_ms` is the time
 * the source gives the lines of this chunk when they carry none (Loki's
 * entry time), else -1. Non-zero stops the reading. */
typedef int (*watch_chunk_fn)(void *ctx, const char *data, size_t len, int64_t default_time_ms);
/* Called between sources (and between Loki entries) so the parser can end
 * the last record of one before the next starts. */
typedef int (*watch_end_fn)(void *ctx);

typedef struct {
	const char *spec;         /* "-", a path or glob, an http(s) URL */
	const char *loki_url;     /* Loki base URL when reading Loki, else NULL */
	const char *loki_query;   /* LogQL */
	int64_t start_ms, end_ms; /* the time range asked of Loki */
	long loki_limit;          /* entries per request */
	size_t max_bytes;         /* cap on the bytes read from one source (0: none) */
} watch_source;

/*
 * Read one source, handing its bytes to `chunk` (and calling `end` after
 * each file or Loki entry). Files are read through zlib, so gzip-compressed
 * rotated files (app.log.2.gz) read like plain ones; a glob's files are read
 * oldest first (by modification time). Returns 0, FACTORY_ENOTFOUND (no
 * file matches), FACTORY_EUPSTREAM (URL or Loki unreachable), FACTORY_EINVALID
 * (an answer that is not what was expected) or the callback's value.
 */
int watch_read_source(const watch_source *src, const http_options *http, watch_chunk_fn chunk, watch_end_fn end,
                      void *ctx);

/* ---- the tally (main.c) ---- */

#define WATCH_MAX_SAMPLES 5
#define WATCH_SAMPLE_MAX 2048

typedef struct {
	long iid;
	int closed;           /* state closed */
	int64_t closed_at_ms; /* -1 if unknown */
	int64_t last_seen_ms; /* from the state marker, -1 if none */
	uint64_t total;       /* events reported so far (state marker) */
	char fingerprint[17];
	char *template_text; /* the template recorded in the issue (redacted), may be NULL */
	char *description;   /* the issue's description as read */
	char *web_url;
} watch_known;

typedef struct {
	uint64_t cluster_id;
	char fingerprint[17];
	char *template_text;
	const logclass_rule *rule;
	loglevel max_level;
	int max_status;
	uint64_t count;    /* new events in the window */
	uint64_t baseline; /* events before the window */
	uint64_t skipped;  /* events already reported in an earlier run */
	int64_t first_ms, last_ms;
	uint64_t *users; /* hashes of distinct scope values (users), capped */
	size_t nusers, users_cap;
	int users_overflow;
	uint64_t friction_fires; /* bursts that met the friction rule */
	size_t friction_users;   /* distinct users with a burst */
	uint64_t *fired_users;
	size_t nfired, fired_cap;
	char *samples[WATCH_MAX_SAMPLES];
	size_t nsamples;
	char *route;        /* first route seen, may be NULL */
	watch_known *known; /* the issue that carries this fingerprint, or NULL */
} watch_fp;

typedef struct {
	/* settings */
	int64_t now_ms, window_start_ms, baseline_start_ms;
	int friction_count;
	long friction_window_ms;
	const char *friction_scope; /* user, route, everyone */
	int new_fingerprints;
	double rate_jump_factor;
	long rate_jump_min;
	long reopen_days;
	long max_issues;
	long max_notes;
	char *source_label;     /* where the lines came from, for the issue (owned) */
	const char *query_link; /* link back to the query that shows the lines, may be NULL;
	                           "{filter}" in it is replaced by the template's constant words */
	const char *loki_query; /* the LogQL read, may be NULL */
	/* state */
	watch_fp *fps;
	size_t nfps;
	int baseline_available; /* a record older than the window was read */
	watch_known *known;
	size_t nknown;
	char *release_tag, *release_url, *release_issues;
	int64_t release_at_ms;
} watch_run;

/* ---- filing.c ---- */

typedef struct {
	int file;          /* a new issue is called for (when none exists yet) */
	int friction;      /* a user (scope) hit it friction_count times within the window */
	int is_new;        /* not seen in the baseline (and a baseline was read) */
	int rate_jump;     /* well above its baseline rate */
	int severity;      /* 1 (worst) .. 4 */
	char reasons[768]; /* why this severity, markdown list items */
} watch_assessment;

/* Judge one fingerprint of the run. */
void watch_assess(watch_assessment *a, const watch_run *run, const watch_fp *fp);

/* Read the issues that carry fingerprints (open, and closed within the
 * reopen window) into run->known. */
int watch_load_known(watch_run *run, job_ctx *ctx);
/* The latest release, for linking regressions to it (best effort). */
int watch_load_release(watch_run *run, job_ctx *ctx);
/* Find the known issue for a fingerprint/template, or NULL. */
watch_known *watch_find_known(watch_run *run, const char *fingerprint, const char *tmpl);
/* File, note, or reopen, for every fingerprint that calls for it. */
int watch_file_all(watch_run *run, job_ctx *ctx);
/* Free run->known. */
void watch_known_free(watch_run *run);

/* Shared helpers. */
void watch_format_time(char *out, size_t len, int64_t ms);
int watch_parse_duration(long *ms, const char *s);

#endif
