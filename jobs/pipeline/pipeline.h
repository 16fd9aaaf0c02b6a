/*
 * pipeline.h - what the files of factory-pipeline share.
 *
 *   main.c      commands: run (default), classify, rules
 *   classify.c  the offline classifier command (a job log -> one JSON object)
 *   run.c       the scheduled run: settings, the project, the ledger, then
 *               repair mode when something is red, optimise mode when not
 *   repair.c    failed pipelines -> classification -> retry, fix, or issue
 *   fix.c       the fix step: clone, the coding agent, commit, push, MR
 *   ledger.c    the failure ledger kept in GitLab (an issue holding JSON),
 *               the Factory's markers, flaky tests, preventive proposals
 *   optimise.c  optimise mode: CI speed, dependencies (deps.h), clean-up;
 *               the offline deps command
 *
 * Nothing is kept on the runner: the mark of the last run, the ledger and
 * the fingerprints of what was filed live in GitLab, so a second run over
 * the same failures files nothing again.
 */
#ifndef FACTORY_PIPELINE_H
#define FACTORY_PIPELINE_H

#include <cjson/cJSON.h>

#include "cilog.h"
#include "gitops.h"
#include "job.h"
#include "json.h"

#define PIPELINE_LABEL_FAILURE "factory::ci-failure"   /* issues filed for failures */
#define PIPELINE_LABEL_FIX "factory::ci-fix"           /* fix merge requests */
#define PIPELINE_LABEL_LEDGER "factory::ledger"        /* the ledger issue */
#define PIPELINE_LABEL_PROPOSAL "factory::ci-proposal" /* preventive changes and optimisations */
#define PIPELINE_MARKER_FAILURE "factory:ci-failure"
#define PIPELINE_MARKER_LEDGER "factory:pipeline-ledger"
#define PIPELINE_MARKER_PROPOSAL "factory:ci-proposal"
#define PIPELINE_FP_LEN 17
/* A ledger whose only change would be its mark is not rewritten while the
 * mark is younger than this (seconds; half of repair's hour of overlap). */
#define PIPELINE_MARK_SLACK 1800

/* The load rules from the settings: pipeline.rules_file (a YAML list of
 * rules; when unset, .factory/ci-rules.yml if it exists) before the
 * built-in rules. */
int pipeline_load_rules(cilog_rules **out, job_ctx *ctx);

/* factory-pipeline classify [FILE] */
int pipeline_cmd_classify(job_ctx *ctx);
/* factory-pipeline rules: the built-in rules, as YAML, on standard output */
int pipeline_cmd_rules(job_ctx *ctx);

/* The run's state (run.c). */
typedef struct {
	job_ctx *job;           /* the project's context (its settings) */
	fconfig *trusted;       /* the job's own settings: workdir, commands, agent, model, registries */
	gitlab *gl;
	report *rep;
	int dry_run;
	cilog_rules *rules;     /* borrowed: one set for the whole run */

	/* settings */
	long max_pipelines;     /* failed pipelines looked at per run */
	long max_retries;       /* job retries per run */
	long max_attempts;      /* runs of one job in one pipeline before it is no longer retried */
	long max_mrs;           /* fix merge requests (or fix commits) per run */
	long max_issues;        /* issues per run */
	long max_log_mb;        /* bytes of a job log read */
	long since_h;           /* first run: how far back to look */
	long propose_after;     /* occurrences of a class before a preventive proposal */
	long max_cleanups;      /* branches deleted plus merge requests closed per run */
	int fix;                /* run the coding agent on deterministic failures */
	const char *fix_classes;
	const char *branch_prefix;   /* the Factory's branches ("factory/") */
	const char *fix_prefix;      /* fix branches ("factory/fix-") */
	const char *mode;            /* auto, repair or optimise */
	const char *workdir;
	const char *check_command;
	long check_timeout_s;
	gitops_identity author;

	/* from GitLab */
	long me;
	char *default_branch;
	char *project_path;
	char *clone_url;
	char *token;            /* borrowed */
	cJSON *ledger;          /* the ledger's JSON (see ledger.c), owned */
	long ledger_iid;        /* 0 until it exists */
	char *ledger_text;      /* the description as read, to write only when it changed */
	cJSON *markers;         /* open issues and MRs the Factory filed: [{"kind","iid","id","fp",...}] */

	/* this run (in a group scope: counted across the group, so the caps hold per run) */
	long retries, mrs, issues, agent_runs, cleanups;
	int red;                /* the default branch's latest pipeline failed */
	long now;
} pl_run;

/* run.c */
int pipeline_cmd_run(job_ctx *ctx);
/* "2026-11-27T10:00:00Z" for a unix time, into `out` (at least 21 bytes). */
void pl_iso(char *out, size_t len, long t);
/* GitLab's time ("2026-11-27T10:00:00.000Z") to unix seconds, 0 if it does not parse. */
long pl_parse_time(const char *s);
/* 1 when `name` is in the comma-separated `list`. */
int pl_in_list(const char *list, const char *name);

/* ledger.c */
int pl_ledger_load(pl_run *r);
int pl_ledger_save(pl_run *r);
/* Count one classified failure. */
void pl_ledger_count(pl_run *r, const char *fp, const cilog_result *res, const char *job_name, long job_id);
int pl_ledger_handled(pl_run *r, long job_id);
void pl_ledger_mark_handled(pl_run *r, long job_id);
void pl_ledger_set(pl_run *r, const char *fp, const char *key, long value);
/* A retry we made, to learn from its outcome next run. */
void pl_ledger_retry(pl_run *r, long old_job, long new_job, const char *fp, const char *test);
long pl_ledger_flaky(pl_run *r, const char *fp, const char *test);
/* Next run: the outcome of our earlier retries (a pass marks the test flaky). */
int pl_ledger_learn(pl_run *r);
/* A class that keeps coming back: one issue proposing a preventive change. */
int pl_ledger_propose(pl_run *r);
/* The Factory's open issues and MRs with a failure marker, into r->markers. */
int pl_markers_load(pl_run *r);
/* The open issue or MR filed for fingerprint `fp` (kind "issue" or "mr"), or NULL. */
const cJSON *pl_marker_find(pl_run *r, const char *kind, const char *fp);
void pl_marker_add(pl_run *r, const char *kind, long iid, const char *fp);
/* The hidden marker line for a filed issue or MR (appended to `out`). */
int pl_marker_write(fbuf *out, const char *marker, const cJSON *fields);
/* Parse the marker `marker` out of `text` into a new object (*out NULL when absent). */
int pl_marker_read(cJSON **out, const char *text, const char *marker);

/* repair.c */
int pl_repair(pl_run *r);
/* The fingerprint of a failure: class, job name, and the failure's line
 * with numbers, hashes and paths masked. */
void pl_fingerprint(char out[PIPELINE_FP_LEN], const cilog_result *res, const char *job_name);

/* fix.c */
typedef struct {
	const cJSON *pipeline;
	const cJSON *job;
	const cilog_result *res;
	const char *fp;
	const char *ref;        /* the failing branch */
	long mr_iid;            /* a Factory MR whose branch failed (fix on it), else 0 */
	/* out */
	long new_mr_iid;
	char why[512];          /* why no fix was made */
} pl_fix;

/* Try to fix: 0 with fx->new_mr_iid (or a commit on fx->ref for an MR
 * branch) when a fix was pushed; 1 when no fix was made (fx->why says why);
 * < 0 on an error that stops the run. */
int pl_fix_run(pl_run *r, pl_fix *fx);

/* optimise.c */
int pl_optimise(pl_run *r);
/* factory-pipeline deps [DIR]: unused dependencies and bloat of a local checkout, as JSON */
int pipeline_cmd_deps(job_ctx *ctx);

#endif
