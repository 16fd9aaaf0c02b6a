/*
 * job.h - what every job binary shares: flags, the environment contract,
 * the GitLab client, the report and the exit code.
 *
 * A job's main reads as:
 *
 *   job_ctx ctx;
 *   int rc = job_start(&ctx, &spec, argc, argv);
 *   if (rc != JOB_CONTINUE) return rc;          (--help, --version, or a usage error)
 *   if ((rc = job_connect(&ctx)) == 0) rc = do_the_work(&ctx);
 *   return job_finish(&ctx, rc);
 *
 * Common flags: --help, --version, --dry-run, --gitlab-url URL, --project
 * ID|PATH, --token-file FILE, --config FILE (default .factory.yml),
 * --report-dir DIR, --log-level LEVEL. The token is never a flag (it would
 * show in the process list).
 *
 * The environment contract, first match wins:
 *   API URL   --gitlab-url / FACTORY_GITLAB_URL (with or without /api/v4),
 *             CI_API_V4_URL, CI_SERVER_URL + "/api/v4"
 *   project   --project / FACTORY_PROJECT, CI_PROJECT_ID, CI_PROJECT_PATH
 *   token     --token-file / FACTORY_TOKEN_FILE, FACTORY_GITLAB_TOKEN
 *             (CI_JOB_TOKEN is never enough: it cannot edit issues, notes,
 *             branches or merge requests; the error says so)
 *   reports   --report-dir / FACTORY_REPORT_DIR, default "factory-report"
 * CI_DEFAULT_BRANCH, CI_PIPELINE_ID, CI_JOB_ID, CI_JOB_URL and
 * CI_PROJECT_PATH are read when present and recorded in the report.
 *
 * HTTP settings (for slow or rate-limited instances, and tests):
 * http.timeout_ms, http.connect_timeout_ms, http.max_retries,
 * http.retry_budget_ms, http.backoff_ms (FACTORY_HTTP_TIMEOUT_MS, ...),
 * and the rate-limit pacing of http.h: http.pace_below_pct (default 10,
 * 0 = off) and http.pace_reserve (default -1: a tenth of the pacing zone;
 * set it to the number of jobs sharing the token, less one), and
 * gitlab.notes_per_minute (default 0, no spacing; 60 on GitLab.com, whose
 * note creation limit the headers do not show: see gitlab.h) and
 * gitlab.issues_per_minute (default 0; GitLab.com allows 200 a minute).
 *
 * A group scope (scope: group:<full path>, see common/scope.h) is for jobs
 * that walk a group: they have a job_option whose key is "scope" (the
 * --scope flag). For them a group scope needs no project: job_connect then
 * leaves ctx->project NULL when none is set. Any other job refuses a group
 * scope with FACTORY_ECONFIG instead of working on one project unasked.
 *
 * The API budget: job_finish reports api_requests, api_reads, api_writes,
 * api_retries, api_throttled (429 answers) and api_paced_ms (time waited to
 * stay under the rate limit). A job that sets the report counter
 * "issues_handled" (report_counter_set) also gets api_calls_per_issue
 * (api_requests / issues_handled, rounded) and the exact figure in
 * report.json's data.api_budget.calls_per_issue.
 */
#ifndef FACTORY_JOB_H
#define FACTORY_JOB_H

#include "config.h"
#include "error.h"
#include "gitlab.h"
#include "report.h"

/* job_start's answer when the job should go on (any other value is the
 * exit code to return at once). */
#define JOB_CONTINUE 100

typedef struct {
	const char *flag;   /* long flag without "--", e.g. "wip-limit" */
	const char *key;    /* config key it sets, e.g. "wip_limit" */
	int has_arg;        /* 0: boolean flag (sets "true") */
	const char *help;   /* one line for --help, "VALUE  text" style */
} job_option;

typedef struct {
	const char *name;            /* "setup" -> program "factory-setup" */
	const char *summary;         /* one line for --help */
	const char *usage;           /* extra usage text (subcommands), may be NULL */
	const job_option *options;   /* job-specific flags, ends with {NULL}; may be NULL */
} job_spec;

typedef struct {
	const job_spec *spec;
	char program[64];       /* "factory-setup" */
	fconfig *cfg;
	gitlab *gl;             /* set by job_connect */
	report *rep;
	int dry_run;
	const char *report_dir;
	char **args;            /* positional arguments (not owned) */
	int nargs;
	char *api_url;          /* resolved, owned */
	char *project;          /* resolved, owned */
	const char *default_branch;
} job_ctx;

/*
 * Parse flags, load the config file, set up logging and the report.
 * Returns JOB_CONTINUE, or an exit code: EXIT_DONE after --help/--version,
 * EXIT_USAGE after a usage or config error (message already printed).
 */
int job_start(job_ctx *ctx, const job_spec *spec, int argc, char **argv);

/* Resolve the environment contract and create ctx->gl. 0, or FACTORY_ECONFIG
 * with the error printed (naming the missing variable). Sends nothing. */
int job_connect(job_ctx *ctx);

/* Read the token per the contract into a new string (caller wipes and frees).
 * Exposed for jobs that need it for git over HTTP. */
int job_read_token(char **out, job_ctx *ctx);

/*
 * Finish: `rc` is 0 or a FACTORY_E* code. Prints the error when rc < 0,
 * adds the API counters to the report, writes report.md/report.json, frees
 * everything and returns the exit code (EXIT_*).
 */
int job_finish(job_ctx *ctx, int rc);

#endif
