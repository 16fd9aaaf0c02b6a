/*
 * ledger.c - what factory-pipeline remembers, kept in GitLab.
 *
 * The ledger is one issue (label factory::ledger, made by the Factory's own
 * user) whose description ends with a hidden marker holding JSON:
 *   {"v":1, "mark": <unix time a run started: left alone while younger
 *    than PIPELINE_MARK_SLACK if nothing else changed, so a quiet rerun
 *    writes nothing>,
 *    "classes": {class: count},
 *    "fps": {fp: {"class","job","n","first","last","test","issue","mr","flaky"}},
 *    "handled": [job ids acted on], "retries": [{"job","new","fp","test"}],
 *    "flaky": {test or fp: passes after a retry},
 *    "branch_fixes": {branch: fixes pushed}, "proposals": {class: issue iid}}
 * Lists are capped (the oldest entries go first), so the description stays
 * far below GitLab's limit whatever the history.
 *
 * Markers: every issue and merge request the job files ends with
 *   <!-- factory:ci-failure {"v":1,"fp":"...","class":"...","job":"...","ref":"..."} -->
 * Only items authored by the Factory's own user count, and the JSON carries
 * '<', '>' and '&' as \u escapes, so outside text can neither forge nor end
 * a marker (untrusted.h also turns "<!--" in outside text into "&lt;!--").
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "pipeline.h"
#include "untrusted.h"

#define MAX_FPS 300
#define MAX_HANDLED 2000
#define MAX_RETRIES_KEPT 200
#define MAX_FLAKY 300
#define MARKER_MAX (512 << 10)

int pl_marker_write(fbuf *out, const char *marker, const cJSON *fields)
{
	char *json = cJSON_PrintUnformatted(fields);
	const char *p;
	int error = 0;

	if (!json)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	error = fbuf_printf(out, "\n<!-- %s ", marker);
	for (p = json; !error && *p; p++) {
		if (*p == '<')
			error = fbuf_puts(out, "\\u003c");
		else if (*p == '>')
			error = fbuf_puts(out, "\\u003e");
		else if (*p == '&')
			error = fbuf_puts(out, "\\u0026");
		else
			error = fbuf_putc(out, *p);
	}
	if (!error)
		error = fbuf_puts(out, " -->\n");
	free(json);
	return error;
}

int pl_marker_read(cJSON **out, const char *text, const char *marker)
{
	char head[128];
	const char *p, *e;

	*out = NULL;
	if (!text)
		return 0;
	snprintf(head, sizeof(head), "<!-- %s ", marker);
	/* the last marker wins (an edited description keeps its newest) */
	for (p = strstr(text, head), e = NULL; p; p = strstr(p + 1, head))
		e = p;
	if (!e)
		return 0;
	p = e + strlen(head);
	if (!(e = strstr(p, " -->")) || (size_t)(e - p) > MARKER_MAX)
		return 0;
	*out = cJSON_ParseWithLength(p, (size_t)(e - p));
	if (*out && !cJSON_IsObject(*out)) {
		cJSON_Delete(*out);
		*out = NULL;
	}
	return 0;
}

static cJSON *obj(cJSON *parent, const char *key)
{
	cJSON *o = cJSON_GetObjectItemCaseSensitive(parent, key);

	if (cJSON_IsObject(o))
		return o;
	cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
	return cJSON_AddObjectToObject(parent, key);
}

static cJSON *arr(cJSON *parent, const char *key)
{
	cJSON *a = cJSON_GetObjectItemCaseSensitive(parent, key);

	if (cJSON_IsArray(a))
		return a;
	cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
	return cJSON_AddArrayToObject(parent, key);
}

static void set_num(cJSON *o, const char *key, double v)
{
	cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);

	if (cJSON_IsNumber(n))
		cJSON_SetNumberValue(n, v);
	else {
		cJSON_DeleteItemFromObjectCaseSensitive(o, key);
		cJSON_AddNumberToObject(o, key, v);
	}
}

static void set_str(cJSON *o, const char *key, const char *v)
{
	cJSON_DeleteItemFromObjectCaseSensitive(o, key);
	if (v)
		cJSON_AddStringToObject(o, key, v);
}

/* Drop the oldest entries of an array beyond `max`. */
static void cap_array(cJSON *a, int max)
{
	while (cJSON_GetArraySize(a) > max)
		cJSON_DeleteItemFromArray(a, 0);
}

/* Drop the fingerprints seen least recently beyond `max`. */
static void cap_fps(cJSON *fps, int max)
{
	while (cJSON_GetArraySize(fps) > max) {
		cJSON *it, *oldest = NULL;
		cJSON_ArrayForEach(it, fps) {
			if (!oldest || json_long(it, "last") < json_long(oldest, "last"))
				oldest = it;
		}
		if (!oldest)
			break;
		cJSON_DeleteItemFromObjectCaseSensitive(fps, oldest->string);
	}
}

/* The ledger issue: the Factory's own issue with the ledger label. */
int pl_ledger_load(pl_run *r)
{
	cJSON *issues = NULL, *it, *found = NULL;
	int error;

	if ((error = gitlab_list_all(&issues, r->gl, "projects/:id/issues",
				     "labels=" PIPELINE_LABEL_LEDGER "&state=all&order_by=created_at&sort=asc", 50)) < 0)
		return error;
	cJSON_ArrayForEach(it, issues) {
		const cJSON *author = cJSON_GetObjectItemCaseSensitive(it, "author");
		if (json_long(author, "id") == r->me) {
			found = it;
			break;
		}
	}
	if (found) {
		const char *d = json_str(found, "description");
		r->ledger_iid = json_long(found, "iid");
		if (d && !(r->ledger_text = strdup(d))) {
			cJSON_Delete(issues);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		pl_marker_read(&r->ledger, d, PIPELINE_MARKER_LEDGER);
		if (!r->ledger)
			log_warn("the ledger issue #%ld has no readable marker: starting a new ledger", r->ledger_iid);
	}
	cJSON_Delete(issues);
	if (!r->ledger && !(r->ledger = cJSON_CreateObject()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	set_num(r->ledger, "v", 1);
	if (!obj(r->ledger, "classes") || !obj(r->ledger, "fps") || !arr(r->ledger, "handled") ||
	    !arr(r->ledger, "retries") || !obj(r->ledger, "flaky") || !obj(r->ledger, "branch_fixes") ||
	    !obj(r->ledger, "proposals"))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	log_info("ledger: %s", r->ledger_iid ? "read from GitLab" : "none yet (made at the end of the run)");
	return 0;
}

void pl_ledger_count(pl_run *r, const char *fp, const cilog_result *res, const char *job_name, long job_id)
{
	cJSON *classes = obj(r->ledger, "classes"), *fps = obj(r->ledger, "fps"), *f;
	const char *cls = cilog_class_name(res->klass);

	(void)job_id;
	set_num(classes, cls, (double)json_long(classes, cls) + 1);
	f = cJSON_GetObjectItemCaseSensitive(fps, fp);
	if (!f) {
		f = cJSON_AddObjectToObject(fps, fp);
		if (!f)
			return;
		set_str(f, "class", cls);
		set_str(f, "job", job_name);
		set_num(f, "first", (double)r->now);
		if (res->test)
			set_str(f, "test", res->test);
	}
	set_num(f, "n", (double)json_long(f, "n") + 1);
	set_num(f, "last", (double)r->now);
	cap_fps(fps, MAX_FPS);
}

void pl_ledger_set(pl_run *r, const char *fp, const char *key, long value)
{
	cJSON *f = cJSON_GetObjectItemCaseSensitive(obj(r->ledger, "fps"), fp);

	if (f)
		set_num(f, key, (double)value);
}

int pl_ledger_handled(pl_run *r, long job_id)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, arr(r->ledger, "handled")) {
		if (cJSON_IsNumber(it) && (long)it->valuedouble == job_id)
			return 1;
	}
	return 0;
}

void pl_ledger_mark_handled(pl_run *r, long job_id)
{
	cJSON *a = arr(r->ledger, "handled");

	if (pl_ledger_handled(r, job_id))
		return;
	cJSON_AddItemToArray(a, cJSON_CreateNumber((double)job_id));
	cap_array(a, MAX_HANDLED);
}

void pl_ledger_retry(pl_run *r, long old_job, long new_job, const char *fp, const char *test)
{
	cJSON *a = arr(r->ledger, "retries"), *o = cJSON_CreateObject();

	if (!o)
		return;
	cJSON_AddNumberToObject(o, "job", (double)old_job);
	cJSON_AddNumberToObject(o, "new", (double)new_job);
	cJSON_AddStringToObject(o, "fp", fp);
	if (test)
		cJSON_AddStringToObject(o, "test", test);
	cJSON_AddItemToArray(a, o);
	cap_array(a, MAX_RETRIES_KEPT);
}

long pl_ledger_flaky(pl_run *r, const char *fp, const char *test)
{
	cJSON *flaky = obj(r->ledger, "flaky");

	return json_long(flaky, test ? test : fp) + (test ? json_long(flaky, fp) : 0);
}

int pl_ledger_learn(pl_run *r)
{
	cJSON *a = arr(r->ledger, "retries"), *flaky = obj(r->ledger, "flaky");
	int i, error;

	for (i = cJSON_GetArraySize(a) - 1; i >= 0; i--) {
		cJSON *e = cJSON_GetArrayItem(a, i), *job = NULL;
		const char *status, *key;
		long id = json_long(e, "new");
		error = gitlab_request(&job, r->gl, "GET", NULL, "projects/:id/jobs/%ld", id);
		if (error == FACTORY_ENOTFOUND) {
			cJSON_DeleteItemFromArray(a, i);
			continue;
		}
		if (error < 0)
			return error;
		status = json_str(job, "status");
		key = json_str(e, "test") ? json_str(e, "test") : json_str(e, "fp");
		if (status && !strcmp(status, "success") && key) {
			/* failed, then passed on a retry of the same commit: flaky */
			set_num(flaky, key, (double)json_long(flaky, key) + 1);
			pl_ledger_set(r, json_str(e, "fp") ? json_str(e, "fp") : "", "flaky", json_long(flaky, key));
			report_action(r->rep, "learn.flaky", key, "job %ld failed, its retry %ld passed", json_long(e, "job"),
				      id);
			log_info("flaky: %s (job %ld failed, its retry %ld passed)", key, json_long(e, "job"), id);
			cJSON_DeleteItemFromArray(a, i);
		} else if (status && (!strcmp(status, "failed") || !strcmp(status, "canceled") ||
				      !strcmp(status, "skipped"))) {
			cJSON_DeleteItemFromArray(a, i);
		}
		cJSON_Delete(job);
	}
	while (cJSON_GetArraySize(flaky) > MAX_FLAKY)
		cJSON_DeleteItemFromArray(flaky, 0);
	return 0;
}

/* What to propose for a class that keeps coming back. */
static const struct {
	const char *klass;
	const char *title;
	const char *text;
} proposals[] = {
	{"lint", "run the linters before the push",
	 "Lint failures keep reaching CI. Run the same linters locally before each push (a pre-commit hook with "
	 "the project's own configuration) and early in the pipeline (a first stage that fails fast), so the "
	 "slow jobs do not start on code that will be rejected anyway."},
	{"type_check", "type-check before the tests",
	 "Type errors keep reaching CI. Add the type checker to the pre-commit hook and run it in the first "
	 "stage, before the tests."},
	{"dependency", "pin and lock the dependencies",
	 "Dependency resolution keeps failing. Commit a lock file (package-lock.json, poetry.lock, Gemfile.lock, "
	 "go.sum, Cargo.lock), pin the toolchain versions in the CI image, and let one job update them on "
	 "purpose (Renovate or a scheduled pipeline) instead of every pipeline resolving afresh."},
	{"network", "cache or mirror the package registries",
	 "Jobs keep failing on the network (registry timeouts, DNS, 5xx). Cache the package directories between "
	 "pipelines (`cache:` keyed on the lock file), use a registry mirror or the GitLab dependency proxy, and "
	 "set `retry: {max: 2, when: [runner_system_failure, api_failure, stuck_or_timeout_failure]}` on the "
	 "install jobs."},
	{"flaky_test", "quarantine and fix the flaky tests",
	 "Tests keep failing and then passing on a retry. Mark them (quarantine them out of the blocking job), "
	 "open one issue per test with its failure rate, and fix the cause (timing, order, shared state)."},
	{"test_failure", "run the affected tests before the push",
	 "Test failures keep reaching CI. Run the tests of the changed modules before the push and split the "
	 "suite so that the fast, affected tests run first."},
	{"compile_error", "build before the push",
	 "Compile errors keep reaching CI. Build locally (or in a first fast job) before the slower jobs start."},
	{"oom", "give the memory-hungry jobs what they need",
	 "Jobs keep running out of memory. Lower the build's parallelism (make -j, Gradle workers, Node's "
	 "--max-old-space-size) or move these jobs to a larger runner (tags:)."},
	{"job_timeout", "split the slow jobs",
	 "Jobs keep hitting their time limit. Split them with `parallel:`, cache what they rebuild, and set a "
	 "`timeout:` that says how long they should take."},
	{"runner_failure", "look at the runners",
	 "Runner and system failures keep happening (images that cannot be pulled, full disks, lost pods). Check "
	 "the runners' capacity and add `retry: {when: [runner_system_failure, scheduler_failure]}`."},
	{NULL, NULL, NULL},
};

int pl_ledger_propose(pl_run *r)
{
	cJSON *classes = obj(r->ledger, "classes"), *done = obj(r->ledger, "proposals"), *it;
	int error, i;

	cJSON_ArrayForEach(it, classes) {
		cJSON *fields = NULL, *made = NULL, *marker = NULL;
		fbuf body;
		if (!cJSON_IsNumber(it) || it->valuedouble < r->propose_after ||
		    cJSON_GetObjectItemCaseSensitive(done, it->string))
			continue;
		for (i = 0; proposals[i].klass && strcmp(proposals[i].klass, it->string) != 0; i++)
			;
		if (!proposals[i].klass)
			continue;
		if (r->issues >= r->max_issues) {
			log_info("proposal for %s waits: the run's issue cap (%ld) is reached", it->string, r->max_issues);
			continue;
		}
		fbuf_init(&body, 64 << 10);
		fields = cJSON_CreateObject();
		marker = cJSON_CreateObject();
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		if (!fields || !marker || !cJSON_AddNumberToObject(marker, "v", 1) ||
		    !cJSON_AddStringToObject(marker, "class", it->string))
			goto next;
		if ((error = fbuf_printf(&body,
					 "**The Factory proposes a preventive change.** CI failed %d times with the class "
					 "`%s` (counted in the failure ledger%s).\n\n%s\n",
					 (int)it->valuedouble, it->string, r->ledger_iid ? "" : ", made by this run",
					 proposals[i].text)) < 0 ||
		    (error = pl_marker_write(&body, PIPELINE_MARKER_PROPOSAL, marker)) < 0)
			goto next;
		{
			char title[256];
			snprintf(title, sizeof(title), "CI keeps failing with %s: %s", it->string, proposals[i].title);
			if (!cJSON_AddStringToObject(fields, "title", title) ||
			    !cJSON_AddStringToObject(fields, "description", body.ptr) ||
			    !cJSON_AddStringToObject(fields, "labels", PIPELINE_LABEL_PROPOSAL))
				goto next;
		}
		if ((error = gitlab_issue_create(&made, r->gl, fields)) < 0)
			goto next;
		r->issues++;
		set_num(done, it->string, made ? (double)json_long(made, "iid") : 0);
		report_action(r->rep, "issue.proposal", it->string, "%s", proposals[i].title);
		log_info("%sproposal filed for %s%s", r->dry_run ? "dry-run: " : "", it->string,
			 made ? "" : " (not sent)");
		error = 0;
next:
		fbuf_release(&body);
		cJSON_Delete(fields);
		cJSON_Delete(marker);
		cJSON_Delete(made);
		if (error < 0)
			return error;
	}
	return 0;
}

/* The description of the ledger issue: a table for people, the marker for the job. */
static int render(fbuf *out, pl_run *r)
{
	cJSON *classes = obj(r->ledger, "classes"), *fps = obj(r->ledger, "fps"), *flaky = obj(r->ledger, "flaky");
	const cJSON *it;
	char when[32];
	int error, shown = 0;

	pl_iso(when, sizeof(when), json_long(r->ledger, "mark"));
	if ((error = fbuf_printf(out,
				 "The Factory's memory of CI failures (factory-pipeline). It is read and rewritten by "
				 "every run: edit nothing below.\n\nLast run: %s\n\n| class | failures |\n|---|---|\n",
				 when)) < 0)
		return error;
	cJSON_ArrayForEach(it, classes) {
		if ((error = fbuf_printf(out, "| %s | %d |\n", it->string, (int)it->valuedouble)) < 0)
			return error;
	}
	if ((error = fbuf_puts(out, "\n| fingerprint | class | job | seen | flaky |\n|---|---|---|---|---|\n")) < 0)
		return error;
	cJSON_ArrayForEach(it, fps) {
		fbuf job;
		if (shown++ >= 50)
			break;
		fbuf_init(&job, 1024);
		untrusted_title(&job, json_str(it, "job") ? json_str(it, "job") : "", strlen(json_str(it, "job") ? json_str(it, "job") : ""), 120);
		error = fbuf_printf(out, "| `%s` | %s | %s | %ld | %ld |\n", it->string,
				    json_str(it, "class") ? json_str(it, "class") : "", fbuf_cstr(&job), json_long(it, "n"),
				    json_long(it, "flaky"));
		fbuf_release(&job);
		if (error < 0)
			return error;
	}
	if (cJSON_GetArraySize(flaky) && (error = fbuf_printf(out, "\nFlaky (failed, then passed on a retry): %d\n",
							    cJSON_GetArraySize(flaky))) < 0)
		return error;
	return pl_marker_write(out, PIPELINE_MARKER_LEDGER, r->ledger);
}

int pl_ledger_save(pl_run *r)
{
	cJSON *fields = NULL, *made = NULL;
	fbuf body;
	long prev;
	int error;

	fbuf_init(&body, 1 << 20);
	/*
	 * The mark only moves the start of the next run's window back (repair
	 * looks from an hour before it), so an old mark is always safe: a run
	 * that changed nothing else leaves a mark younger than
	 * PIPELINE_MARK_SLACK alone and writes nothing at all.
	 */
	prev = json_long(r->ledger, "mark");
	if (r->ledger_text && prev && r->now >= prev && r->now - prev < PIPELINE_MARK_SLACK) {
		if ((error = render(&body, r)) < 0)
			goto cleanup;
		if (!strcmp(r->ledger_text, body.ptr)) {
			error = 0;
			goto cleanup;
		}
		fbuf_reset(&body);
	}
	set_num(r->ledger, "mark", (double)r->now);
	if ((error = render(&body, r)) < 0)
		goto cleanup;
	if (r->ledger_text && !strcmp(r->ledger_text, body.ptr)) {
		error = 0;
		goto cleanup;
	}
	if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "description", body.ptr)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (r->ledger_iid) {
		error = gitlab_issue_update(&made, r->gl, r->ledger_iid, fields);
	} else {
		if (!cJSON_AddStringToObject(fields, "title", "Factory: CI failure ledger") ||
		    !cJSON_AddStringToObject(fields, "labels", PIPELINE_LABEL_LEDGER)) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		error = gitlab_issue_create(&made, r->gl, fields);
		if (!error)
			report_action(r->rep, "ledger.create", "Factory: CI failure ledger", "the failure ledger");
	}
cleanup:
	fbuf_release(&body);
	cJSON_Delete(fields);
	cJSON_Delete(made);
	return error;
}

/* ---- markers on open issues and merge requests ---- */

static int collect(pl_run *r, const char *kind, const char *path, const char *query)
{
	cJSON *items = NULL, *it;
	int error;

	if ((error = gitlab_list_all(&items, r->gl, path, query, 2000)) < 0)
		return error;
	cJSON_ArrayForEach(it, items) {
		cJSON *m = NULL;
		const cJSON *author = cJSON_GetObjectItemCaseSensitive(it, "author");
		if (json_long(author, "id") != r->me)
			continue;
		pl_marker_read(&m, json_str(it, "description"), PIPELINE_MARKER_FAILURE);
		if (m && json_str(m, "fp")) {
			cJSON_AddStringToObject(m, "kind", kind);
			cJSON_AddNumberToObject(m, "iid", (double)json_long(it, "iid"));
			if (json_str(it, "source_branch"))
				cJSON_AddStringToObject(m, "branch", json_str(it, "source_branch"));
			cJSON_AddItemToArray(r->markers, m);
		} else {
			cJSON_Delete(m);
		}
	}
	cJSON_Delete(items);
	return 0;
}

int pl_markers_load(pl_run *r)
{
	int error;

	if (!(r->markers = cJSON_CreateArray()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = collect(r, "issue", "projects/:id/issues", "labels=" PIPELINE_LABEL_FAILURE "&state=opened")) < 0 ||
	    (error = collect(r, "mr", "projects/:id/merge_requests", "labels=" PIPELINE_LABEL_FIX "&state=opened")) < 0)
		return error;
	log_info("open items filed for CI failures: %d", cJSON_GetArraySize(r->markers));
	return 0;
}

const cJSON *pl_marker_find(pl_run *r, const char *kind, const char *fp)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, r->markers) {
		const char *k = json_str(it, "kind"), *f = json_str(it, "fp");
		if (k && f && !strcmp(k, kind) && !strcmp(f, fp))
			return it;
	}
	return NULL;
}

void pl_marker_add(pl_run *r, const char *kind, long iid, const char *fp)
{
	cJSON *m = cJSON_CreateObject();

	if (!m)
		return;
	cJSON_AddStringToObject(m, "kind", kind);
	cJSON_AddNumberToObject(m, "iid", (double)iid);
	cJSON_AddStringToObject(m, "fp", fp);
	cJSON_AddItemToArray(r->markers, m);
}
