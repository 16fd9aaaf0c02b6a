/*
 * scope_job.c - a job over every project of a group, one report per project
 * folded into the job's (contract in scope_job.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "log.h"
#include "scope_job.h"
#include "json.h"

#define PROJECT_REPORT_MAX ((size_t)256 << 20)

typedef struct {
	job_ctx *ctx;
	scope *sc;
	scope_job_fn fn;
	void *arg;
	cJSON **entries; /* one per project of the scope, by index */
	long failed;
} walk;

/* projects/<path>, every character outside [A-Za-z0-9_.-/] and the dot
 * starting a segment made '_', so the folder stays under the report dir. */
static int project_dir(fbuf *out, const char *path)
{
	const char *s;
	int error;

	if ((error = fbuf_puts(out, "projects/")) < 0)
		return error;
	for (s = path; *s && !error; s++) {
		char c = *s;
		int seg_start = s == path || s[-1] == '/';
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == '.' || c == '/'))
			c = '_';
		if (c == '.' && seg_start)
			c = '_';
		if (c == '/' && seg_start)
			continue; /* no empty segment */
		error = fbuf_putc(out, c);
	}
	return error;
}

/* Read back the report a project's run wrote. NULL when it cannot be read. */
static cJSON *read_report(const char *dir)
{
	fbuf path, text;
	char chunk[65536];
	cJSON *json = NULL;
	FILE *f;
	size_t n;

	fbuf_init(&path, 8192);
	fbuf_init(&text, PROJECT_REPORT_MAX);
	if (fbuf_printf(&path, "%s/report.json", dir) < 0 || !(f = fopen(fbuf_cstr(&path), "rb")))
		goto done;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (fbuf_put(&text, chunk, n) < 0)
			break;
	if (!ferror(f) && feof(f))
		json = cJSON_ParseWithLength(text.ptr ? text.ptr : "", text.len);
	fclose(f);
done:
	fbuf_release(&path);
	fbuf_release(&text);
	return json;
}

static int add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v ? v : "") ? 0 : ferror_set(FACTORY_ENOMEM, "out of memory");
}

/* Fold a project's report (as written) into the job's: counters, actions. */
static int fold(job_ctx *ctx, const char *path, const cJSON *rep, cJSON *entry)
{
	const cJSON *c, *a;
	cJSON *counters;
	fbuf t;
	int error = 0;

	counters = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rep, "counters"), 1);
	if (!counters)
		counters = cJSON_CreateObject();
	if (!counters || !cJSON_AddItemToObject(entry, "counters", counters)) {
		cJSON_Delete(counters);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	cJSON_ArrayForEach(c, counters)
	{
		if (cJSON_IsNumber(c) && c->string && strncmp(c->string, "api_", 4) != 0 &&
		    strcmp(c->string, "dry_run_writes") != 0)
			report_counter_add(ctx->rep, c->string, (long)c->valuedouble);
	}
	fbuf_init(&t, 4096);
	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(rep, "actions"))
	{
		const char *target = json_str(a, "target");
		fbuf_reset(&t);
		if ((error = fbuf_printf(&t, "%s%s%s", path, target && *target == '#' ? "" : ": ",
		                         target ? target : "")) < 0)
			break;
		if ((error = report_action(ctx->rep, json_str(a, "kind") ? json_str(a, "kind") : "?", fbuf_cstr(&t), "%s",
		                           json_str(a, "detail") ? json_str(a, "detail") : "")) < 0)
			break;
	}
	fbuf_release(&t);
	return error == FACTORY_ETOOBIG ? 0 : error;
}

static size_t index_of(const scope *sc, const scope_project *p)
{
	size_t i;

	for (i = 0; i < scope_count(sc); i++)
		if (scope_at(sc, i) == p)
			return i;
	return (size_t)-1;
}

static int one_project(void *vw, gitlab *gl, const scope_project *p)
{
	walk *w = vw;
	job_ctx pctx = *w->ctx;
	gitlab_stats before, after;
	report *rep = NULL;
	cJSON *entry = NULL, *written = NULL;
	fbuf dir, rel;
	char message[1024];
	long handled;
	size_t i = index_of(w->sc, p);
	int rc, error, fold_error;

	fbuf_init(&dir, 8192);
	fbuf_init(&rel, 8192);
	message[0] = '\0';
	if ((error = report_new(&rep, w->ctx->program, w->ctx->dry_run)) < 0 ||
	    (error = project_dir(&rel, p->path)) < 0 ||
	    (error = fbuf_printf(&dir, "%s/%s", w->ctx->report_dir ? w->ctx->report_dir : "factory-report",
	                         fbuf_cstr(&rel))) < 0 ||
	    (error = fbuf_puts(&rel, "/report.json")) < 0)
		goto cleanup;
	pctx.cfg = p->cfg;
	pctx.project = p->path;
	pctx.default_branch = p->default_branch;
	pctx.rep = rep;
	pctx.report_dir = fbuf_cstr(&dir);
	pctx.gl = gl;
	log_section_start("factory_project", p->path, 0);
	gitlab_get_stats(&before, gl);
	rc = w->fn(&pctx, p, w->ctx, w->arg);
	gitlab_get_stats(&after, gl);
	log_section_end("factory_project");
	if (rc == FACTORY_EAUTH && gitlab_last_status(gl) == 403)
		rc = ferror_set(FACTORY_ERR, "GitLab refused the token for this project (403): %s", ferror_last());
	if (rc < 0) {
		snprintf(message, sizeof(message), "%s", ferror_last());
		w->failed++;
	}
	report_counter_set(rep, "api_requests", after.requests - before.requests);
	report_counter_set(rep, "api_reads", after.reads - before.reads);
	report_counter_set(rep, "api_writes", after.writes - before.writes);
	if (w->ctx->dry_run)
		report_counter_set(rep, "dry_run_writes", after.dry_run_writes - before.dry_run_writes);
	handled = report_counter_get(rep, "issues_handled");
	if (handled > 0)
		report_counter_set(rep, "api_calls_per_issue",
		                   (after.requests - before.requests + handled / 2) / handled);
	if ((error = report_write(rep, fbuf_cstr(&dir), rc < 0 ? ferror_exit_code(rc) : 0)) < 0)
		goto cleanup;
	if (!(written = read_report(fbuf_cstr(&dir)))) {
		error = ferror_set(FACTORY_ERR, "cannot read back %s/report.json", fbuf_cstr(&dir));
		goto cleanup;
	}
	if (!(entry = cJSON_CreateObject()) || !cJSON_AddNumberToObject(entry, "id", (double)p->id) ||
	    (error = add_str(entry, "path", p->path)) < 0 || !cJSON_AddTrueToObject(entry, "enabled") ||
	    (error = add_str(entry, "why", "")) < 0 ||
	    (error = add_str(entry, "result", rc < 0 ? "failed" : "ok")) < 0 ||
	    (error = add_str(entry, "error", message)) < 0 ||
	    (error = add_str(entry, "summary", json_str(written, "summary"))) < 0 ||
	    (error = add_str(entry, "report", fbuf_cstr(&rel))) < 0) {
		if (error >= 0)
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	fold_error = fold(w->ctx, p->path, written, entry);
	if (fold_error < 0) {
		error = fold_error;
		goto cleanup;
	}
	if (i != (size_t)-1) {
		w->entries[i] = entry;
		entry = NULL;
	}
	error = 0;
	if (rc < 0) {
		/* scope_each logs and counts it, with the message we keep */
		ferror_set(rc, "%s", message);
		error = rc;
	}
cleanup:
	cJSON_Delete(entry);
	cJSON_Delete(written);
	report_free(rep);
	fbuf_release(&dir);
	fbuf_release(&rel);
	return error;
}

/* A project left out: its entry, from the scope alone. */
static cJSON *left_out(const scope_project *p)
{
	cJSON *e = cJSON_CreateObject();

	if (!e || !cJSON_AddNumberToObject(e, "id", (double)p->id) || add_str(e, "path", p->path) < 0 ||
	    !cJSON_AddFalseToObject(e, "enabled") || add_str(e, "why", p->why) < 0 ||
	    add_str(e, "result", p->error ? "settings error" : "left out") < 0 ||
	    add_str(e, "error", p->error ? p->why : "") < 0 || add_str(e, "summary", "") < 0 ||
	    !cJSON_AddObjectToObject(e, "counters") || add_str(e, "report", "") < 0) {
		cJSON_Delete(e);
		return NULL;
	}
	return e;
}

/* data.projects and the markdown table, in path order. */
static int report_projects(walk *w, const char *group)
{
	cJSON *arr = cJSON_CreateArray(), *e;
	const cJSON *c;
	size_t i;
	int error = 0;

	if (!arr)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	report_markdown(w->ctx->rep,
	                "\n### Projects of group %s\n\n| project | result | issues handled | API requests "
	                "| summary or why |\n|---|---|---:|---:|---|\n",
	                group);
	for (i = 0; i < scope_count(w->sc); i++) {
		const scope_project *p = scope_at(w->sc, i);
		const char *result;
		long handled = 0, requests = 0;

		e = w->entries[i];
		w->entries[i] = NULL;
		if (!e && !(e = left_out(p))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			break;
		}
		cJSON_AddItemToArray(arr, e);
		c = cJSON_GetObjectItemCaseSensitive(e, "counters");
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, "issues_handled")))
			handled = (long)cJSON_GetObjectItemCaseSensitive(c, "issues_handled")->valuedouble;
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, "api_requests")))
			requests = (long)cJSON_GetObjectItemCaseSensitive(c, "api_requests")->valuedouble;
		result = json_str(e, "result");
		report_markdown(w->ctx->rep, "| %s | %s | %ld | %ld | %s |\n", p->path, result ? result : "", handled,
		                requests,
		                *json_str(e, "error") ? json_str(e, "error")
		                : p->enabled        ? json_str(e, "summary")
		                                    : p->why);
	}
	cJSON_AddItemToObject(report_data(w->ctx->rep), "projects", arr);
	report_counter_set(w->ctx->rep, "projects", (long)scope_count(w->sc));
	report_counter_set(w->ctx->rep, "projects_taking_part", (long)scope_enabled(w->sc));
	report_counter_set(w->ctx->rep, "projects_failed", w->failed);
	return error;
}

int scope_job_run(job_ctx *ctx, const char *group, scope_job_fn fn, void *arg)
{
	walk w;
	char message[1024];
	size_t i;
	int error, walk_error;

	memset(&w, 0, sizeof(w));
	w.ctx = ctx;
	w.fn = fn;
	w.arg = arg;
	if ((error = scope_load(&w.sc, ctx->gl, ctx->cfg, group)) < 0)
		return error;
	/* Every project is walked: read every file first, so a file that
	 * cannot be read fails the job before any project is worked on. */
	if ((error = scope_settle_all(w.sc)) < 0)
		goto cleanup;
	if (!(w.entries = calloc(scope_count(w.sc) + 1,
	                         sizeof(*w.entries)))) { /* NOLINT(bugprone-sizeof-expression): pointers */
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	walk_error = scope_each(w.sc, ctx->gl, one_project, &w);
	snprintf(message, sizeof(message), "%s", walk_error ? ferror_last() : "");
	if ((error = report_projects(&w, group)) < 0)
		goto cleanup;
	error = walk_error;
	if (walk_error < 0)
		ferror_set(walk_error, "%s", message); /* the walk's message is the one to keep */
cleanup:
	if (w.entries)
		for (i = 0; i < scope_count(w.sc); i++)
			cJSON_Delete(w.entries[i]);
	free(w.entries);
	scope_free(w.sc);
	return error;
}

int scope_job_same(const job_ctx *pctx, const job_ctx *group, const char *key)
{
	const char *mine = fconfig_get(pctx->cfg, key, NULL), *theirs = fconfig_get(group->cfg, key, NULL);

	if (!mine || !theirs)
		return !mine && !theirs;
	return !strcmp(mine, theirs);
}
