/* run.c - the scheduled run of factory-pipeline: settings, project, ledger, then repair or optimise. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "pipeline.h"
#include "scope.h"
#include "scope_job.h"

void pl_iso(char *out, size_t len, long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

long pl_parse_time(const char *s)
{
	struct tm tm;
	const char *p;

	if (!s)
		return 0;
	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return 0;
	return (long)timegm(&tm);
}

int pl_in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while (p && *p) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		while (len && *p == ' ')
			p++, len--;
		while (len && p[len - 1] == ' ')
			len--;
		if (len == n && !strncmp(p, name, n))
			return 1;
		p = e ? e + 1 : NULL;
	}
	return 0;
}

static int read_settings(pl_run *r)
{
	fconfig *cfg = r->job->cfg;
	int error, no_fix;

	if ((error = fconfig_get_long(&r->max_pipelines, cfg, "pipeline.max_pipelines", 20, 1, 1000)) < 0 ||
	    (error = fconfig_get_long(&r->max_retries, cfg, "pipeline.max_retries", 3, 0, 100)) < 0 ||
	    (error = fconfig_get_long(&r->max_attempts, cfg, "pipeline.max_attempts", 2, 1, 10)) < 0 ||
	    (error = fconfig_get_long(&r->max_mrs, cfg, "pipeline.max_mrs", 2, 0, 50)) < 0 ||
	    (error = fconfig_get_long(&r->max_issues, cfg, "pipeline.max_issues", 5, 0, 100)) < 0 ||
	    (error = fconfig_get_long(&r->max_log_mb, cfg, "pipeline.max_log_mb", 512, 1, 65536)) < 0 ||
	    (error = fconfig_get_long(&r->since_h, cfg, "pipeline.since_hours", 24, 1, 24 * 90)) < 0 ||
	    (error = fconfig_get_long(&r->propose_after, cfg, "pipeline.propose_after", 5, 2, 10000)) < 0 ||
	    (error = fconfig_get_long(&r->check_timeout_s, r->trusted, "pipeline.check_timeout_s", 900, 1, 86400)) < 0 ||
	    (error = fconfig_get_long(&r->max_cleanups, cfg, "pipeline.max_cleanups", 20, 0, 1000)) < 0 ||
	    (error = fconfig_get_bool(&r->fix, cfg, "pipeline.fix", 1)) < 0 ||
	    (error = fconfig_get_bool(&no_fix, cfg, "pipeline.no_fix", 0)) < 0)
		return error;
	if (no_fix)
		r->fix = 0;
	r->fix_classes = fconfig_get_str(cfg, "pipeline.fix_classes",
					 "compile_error,link_error,lint,type_check,test_failure,dependency,ci_config");
	r->branch_prefix = fconfig_get_str(cfg, "pipeline.branch_prefix", "factory/");
	r->fix_prefix = fconfig_get_str(cfg, "pipeline.fix_prefix", "factory/fix-");
	r->mode = fconfig_get_str(cfg, "pipeline.mode", "auto");
	if (strcmp(r->mode, "auto") != 0 && strcmp(r->mode, "repair") != 0 && strcmp(r->mode, "optimise") != 0)
		return ferror_set(FACTORY_ECONFIG,
				  "bad setting pipeline.mode=%s: expected auto, repair or optimise", r->mode);
	if (!*r->branch_prefix || !*r->fix_prefix)
		return ferror_set(FACTORY_ECONFIG, "pipeline.branch_prefix and pipeline.fix_prefix must not be empty");
	/* the runner's files and commands: the job's own settings only */
	r->workdir = fconfig_get_str(r->trusted, "pipeline.workdir", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	r->check_command = fconfig_get(r->trusted, "pipeline.check_command", NULL);
	if (r->check_command && !*r->check_command)
		r->check_command = NULL;
	r->author.name = fconfig_get_str(cfg, "git.author_name", "Factory");
	r->author.email = fconfig_get_str(cfg, "git.author_email", "factory@localhost");
	return 0;
}

/* Who we are, the project's path, default branch and clone URL. */
static int load_project(pl_run *r)
{
	cJSON *me = NULL, *p = NULL;
	const char *path, *branch, *api = r->job->api_url;
	size_t len = strlen(api);
	int error;

	if ((error = gitlab_request(&me, r->gl, "GET", NULL, "user")) < 0)
		goto cleanup;
	r->me = json_long(me, "id");
	if ((error = gitlab_request(&p, r->gl, "GET", NULL, "projects/:id")) < 0)
		goto cleanup;
	path = json_str(p, "path_with_namespace");
	branch = r->job->default_branch && *r->job->default_branch ? r->job->default_branch : json_str(p, "default_branch");
	if (!path || !branch) {
		error = ferror_set(FACTORY_EINVALID, "GET projects/:id: no path_with_namespace or default_branch");
		goto cleanup;
	}
	if (!(r->project_path = strdup(path)) || !(r->default_branch = strdup(branch))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	/* The clone URL is made from the API URL the token is meant for, never
	 * from what the API answers (http_url_to_repo could name another host). */
	if (len > 7 && !strcmp(api + len - 7, "/api/v4"))
		len -= 7;
	if (asprintf(&r->clone_url, "%.*s/%s.git", (int)len, api, path) < 0) {
		r->clone_url = NULL;
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	error = 0;
cleanup:
	cJSON_Delete(me);
	cJSON_Delete(p);
	return error;
}

static void run_release(pl_run *r)
{
	free(r->default_branch);
	free(r->project_path);
	free(r->clone_url);
	cJSON_Delete(r->ledger);
	free(r->ledger_text);
	cJSON_Delete(r->markers);
}

/* What one run shares across the projects of a group: the rules, the
 * token, and the counters the per-run caps apply to. */
typedef struct {
	cilog_rules *rules;
	char *token;
	long retries, mrs, issues, agent_runs, cleanups;
} pl_shared;

/* The scheduled run over one project. `ctx` is the project's context (in
 * a group scope its settings are the group's with the project's
 * .factory.yml over them); `trusted` holds the settings that lead to the
 * runner's files, commands and credentials, never taken from a project's
 * file (scope_job.h, "Trust"). */
static int run_project(job_ctx *ctx, job_ctx *trusted, pl_shared *sh)
{
	pl_run r;
	long r0, m0, i0, a0, c0;
	int error;

	memset(&r, 0, sizeof(r));
	r.job = ctx;
	r.trusted = trusted->cfg;
	r.rep = ctx->rep;
	r.dry_run = ctx->dry_run;
	r.now = (long)time(NULL);
	r.gl = ctx->gl;
	r.rules = sh->rules;
	r.token = sh->token;
	r.retries = r0 = sh->retries;
	r.mrs = m0 = sh->mrs;
	r.issues = i0 = sh->issues;
	r.agent_runs = a0 = sh->agent_runs;
	r.cleanups = c0 = sh->cleanups;
	if ((error = read_settings(&r)) < 0 || (error = load_project(&r)) < 0)
		goto cleanup;
	log_info("project %s, default branch %s%s", r.project_path, r.default_branch, r.dry_run ? " (dry run)" : "");
	if ((error = pl_ledger_load(&r)) < 0 || (error = pl_markers_load(&r)) < 0)
		goto cleanup;
	if ((error = pl_ledger_learn(&r)) < 0)
		goto cleanup;
	if (strcmp(r.mode, "optimise") != 0 && (error = pl_repair(&r)) < 0)
		goto cleanup;
	if ((error = pl_ledger_propose(&r)) < 0)
		goto cleanup;
	if (!r.red && strcmp(r.mode, "repair") != 0) {
		if ((error = pl_optimise(&r)) < 0)
			goto cleanup;
	} else if (r.red) {
		log_info("something is red: optimise mode waits for a green run");
	}
	if ((error = pl_ledger_save(&r)) < 0)
		goto cleanup;
	report_summary(r.rep, "%s: %ld retries, %ld fixes, %ld issues, %ld clean-ups", r.red ? "red" : "green",
		       r.retries - r0, r.mrs - m0, r.issues - i0, r.cleanups - c0);
	log_info("done: %s, %ld retries, %ld fixes, %ld issues, %ld clean-ups", r.red ? "red" : "green", r.retries - r0,
		 r.mrs - m0, r.issues - i0, r.cleanups - c0);
	error = 0;
cleanup:
	/* this project's share of the run's counters (a group report adds them up) */
	report_counter_set(r.rep, "retries", r.retries - r0);
	report_counter_set(r.rep, "fix_merge_requests", r.mrs - m0);
	report_counter_set(r.rep, "issues", r.issues - i0);
	report_counter_set(r.rep, "agent_runs", r.agent_runs - a0);
	report_counter_set(r.rep, "cleanups", r.cleanups - c0);
	sh->retries = r.retries;
	sh->mrs = r.mrs;
	sh->issues = r.issues;
	sh->agent_runs = r.agent_runs;
	sh->cleanups = r.cleanups;
	run_release(&r);
	return error;
}

static int group_project(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg)
{
	(void)p;
	return run_project(pctx, group, arg);
}

int pipeline_cmd_run(job_ctx *ctx)
{
	pl_shared sh;
	char *group = NULL;
	int error;

	memset(&sh, 0, sizeof(sh));
	if (ctx->nargs > 1) {
		error = ferror_set(FACTORY_ECONFIG, "run takes no argument (see --help)");
		goto cleanup;
	}
	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0)
		goto cleanup;
	{
		/* the settings are checked before anything is asked of GitLab */
		pl_run probe;
		memset(&probe, 0, sizeof(probe));
		probe.job = ctx;
		probe.trusted = ctx->cfg;
		if ((error = read_settings(&probe)) < 0)
			goto cleanup;
	}
	if ((error = pipeline_load_rules(&sh.rules, ctx)) < 0)
		goto cleanup;
	if ((error = job_connect(ctx)) < 0 || (error = job_read_token(&sh.token, ctx)) < 0)
		goto cleanup;
	if (!group) {
		error = run_project(ctx, ctx, &sh);
		goto cleanup;
	}
	error = scope_job_run(ctx, group, group_project, &sh);
	report_summary(ctx->rep, "%sgroup %s: %ld of %ld projects run%s; %ld retries, %ld fixes, %ld issues, %ld clean-ups",
		       ctx->dry_run ? "dry run: " : "", group,
		       report_counter_get(ctx->rep, "projects_taking_part") - report_counter_get(ctx->rep, "projects_failed"),
		       report_counter_get(ctx->rep, "projects"),
		       report_counter_get(ctx->rep, "projects_failed") ? " (some failed)" : "", sh.retries, sh.mrs, sh.issues,
		       sh.cleanups);
cleanup:
	cilog_rules_free(sh.rules);
	if (sh.token) {
		explicit_bzero(sh.token, strlen(sh.token));
		free(sh.token);
	}
	free(group);
	return error;
}
