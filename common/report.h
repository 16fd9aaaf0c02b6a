/*
 * report.h - the run report every job writes: report.md (for people) and
 * report.json (for machines) in FACTORY_REPORT_DIR (default
 * "factory-report/"), kept as CI artifacts. Everything written is passed
 * through log_mask() first.
 *
 * report.json: {"job": "...", "version": "...", "started_at": "...",
 *   "finished_at": "...", "dry_run": bool, "exit_code": n, "summary": "...",
 *   "counters": {"api_requests": n, ...}, "actions": [{"kind", "target",
 *   "detail", "dry_run"}...], "data": {...job specific...}}
 */
#ifndef FACTORY_REPORT_H
#define FACTORY_REPORT_H

#include <cjson/cJSON.h>

typedef struct report report;

/* A new report for job `job` (e.g. "factory-setup"); started_at is now. */
int report_new(report **out, const char *job, int dry_run);
void report_free(report *r);

/* Record one change (or, in a dry run, one change that would be made). */
int report_action(report *r, const char *kind, const char *target, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Set or add to a named counter. */
void report_counter_set(report *r, const char *name, long value);
void report_counter_add(report *r, const char *name, long delta);
long report_counter_get(const report *r, const char *name);
/* The one-line summary (copied). */
int report_summary(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append markdown (a job's own section) to report.md (copied). */
int report_markdown(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The "data" object of report.json, for job-specific content (borrowed). */
cJSON *report_data(report *r);
/* Number of actions recorded. */
int report_action_count(const report *r);

/* Write report.md and report.json into `dir` (created if missing, with
 * parents), atomically (temp file + rename). Returns 0 or FACTORY_ERR. */
int report_write(report *r, const char *dir, int exit_code);

#endif
