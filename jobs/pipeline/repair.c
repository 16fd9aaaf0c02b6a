/*
 * repair.c - repair mode: failed pipelines on the default branch and on the
 * Factory's own merge-request branches since the last run, their failed
 * jobs, each job's log classified (common/cilog), then one action per
 * failure:
 *
 *   transient (network, runner failure, flaky test, a test the ledger knows
 *   as flaky) and attempts left      -> retry the job through the API
 *   a fix MR or an issue already open
 *   for the fingerprint              -> nothing (one open item per fingerprint)
 *   deterministic and fixable, not a
 *   fix of a fix                     -> the coding agent (fix.c): a fix MR, or a
 *                                       commit on the Factory MR's own branch
 *   anything else                    -> an issue with the excerpt; on the default
 *                                       branch a fast-lane issue at the top of
 *                                       Up Next
 *
 * Only the newest pipeline of a branch is looked at (an older failure that
 * a newer pipeline replaced is history), and a Factory branch only while its
 * merge request is open and its newest pipeline has failed: that is when the
 * implement job keeps off it (one owner per branch). Caps per run on
 * retries, fixes and issues; a failure left by a cap is taken up next run.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "logmine.h"
#include "pipeline.h"
#include "untrusted.h"

#define EXCERPT_MAX (8 << 10)

/* The job name without a parallel suffix ("rspec 2/5" -> "rspec"). */
static size_t job_base_len(const char *name)
{
	size_t n = strlen(name), i = n;

	while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
		i--;
	if (i > 0 && i < n && name[i - 1] == '/') {
		size_t j = i - 1;
		while (j > 0 && name[j - 1] >= '0' && name[j - 1] <= '9')
			j--;
		if (j < i - 1 && j > 0 && name[j - 1] == ' ')
			return j - 1;
	}
	return n;
}

void pl_fingerprint(char out[PIPELINE_FP_LEN], const cilog_result *res, const char *job_name)
{
	fbuf b, masked;
	const char *head = res->headline ? res->headline : "";

	fbuf_init(&b, 1 << 16);
	fbuf_init(&masked, 1 << 16);
	logmine_mask(&masked, head, strlen(head));
	fbuf_printf(&b, "%s\n%.*s\n%s\n%s\n%s", cilog_class_name(res->klass), (int)job_base_len(job_name), job_name,
		    fbuf_cstr(&masked), res->file ? res->file : "", res->test ? res->test : "");
	logmine_fingerprint(out, fbuf_cstr(&b), b.len);
	fbuf_release(&b);
	fbuf_release(&masked);
}

typedef struct {
	cilog *c;
	unsigned long long n, max;
	int capped;
} trace_sink;

static int on_trace(void *ctx, const char *data, size_t len)
{
	trace_sink *s = ctx;

	if (s->n + len > s->max) {
		len = (size_t)(s->max - s->n);
		s->capped = 1;
	}
	s->n += len;
	if (len && cilog_feed(s->c, data, len) < 0)
		return 1;
	return s->capped;
}

/* Read job `job_id`'s log and classify it. */
static int classify_job(cilog_result *out, pl_run *r, long job_id)
{
	trace_sink s;
	int error;

	memset(&s, 0, sizeof(s));
	s.max = (unsigned long long)r->max_log_mb << 20;
	if ((error = cilog_new(&s.c, r->rules, NULL)) < 0)
		return error;
	error = gitlab_job_trace(r->gl, job_id, on_trace, &s);
	if (error < 0 && s.capped) {
		log_warn("job %ld: log longer than %ld MiB: classified from its first %ld MiB", job_id, r->max_log_mb,
			 r->max_log_mb);
		error = 0;
	}
	if (error == 0)
		error = cilog_finish(out, s.c);
	cilog_free(s.c);
	return error;
}

static int escape(fbuf *out, const char *s)
{
	fbuf_reset(out);
	return http_escape(out, s);
}

/* The newest pipeline of `ref` (a new object, NULL when none). */
static int latest_of_ref(cJSON **out, pl_run *r, const char *ref)
{
	cJSON *list = NULL;
	fbuf q;
	int error;

	*out = NULL;
	fbuf_init(&q, 4096);
	if ((error = escape(&q, ref)) < 0)
		goto cleanup;
	if ((error = gitlab_request(&list, r->gl, "GET", NULL,
				    "projects/:id/pipelines?ref=%s&order_by=id&sort=desc&per_page=1", q.ptr)) < 0)
		goto cleanup;
	if (cJSON_GetArraySize(list) > 0)
		*out = cJSON_DetachItemFromArray(list, 0);
cleanup:
	fbuf_release(&q);
	cJSON_Delete(list);
	return error;
}

/* The open merge request whose source branch is `ref` (iid, or 0). */
static int open_mr_of(long *iid, pl_run *r, const char *ref)
{
	cJSON *list = NULL;
	fbuf q;
	int error;

	*iid = 0;
	fbuf_init(&q, 4096);
	if ((error = escape(&q, ref)) < 0)
		goto cleanup;
	if ((error = gitlab_request(&list, r->gl, "GET", NULL,
				    "projects/:id/merge_requests?state=opened&source_branch=%s&per_page=5", q.ptr)) < 0)
		goto cleanup;
	if (cJSON_GetArraySize(list) > 0)
		*iid = json_long(cJSON_GetArrayItem(list, 0), "iid");
cleanup:
	fbuf_release(&q);
	cJSON_Delete(list);
	return error;
}

/* A Markdown code fence longer than any run of backticks in `text`. */
static void fence_for(char *out, size_t len, const char *text)
{
	size_t run = 0, best = 2, i;

	for (; *text; text++) {
		run = *text == '`' ? run + 1 : 0;
		if (run > best)
			best = run;
	}
	for (i = 0; i < best + 1 && i + 1 < len; i++)
		out[i] = '`';
	out[i] = '\0';
}

/* Put issue `iid` at the top of Up Next. */
static int to_top_of_up_next(pl_run *r, long iid)
{
	cJSON *list = NULL, *it;
	long first_id = 0;
	int error;

	if ((error = gitlab_request(&list, r->gl, "GET", NULL,
				    "projects/:id/issues?state=opened&labels=%s&order_by=relative_position&sort=asc"
				    "&per_page=5",
				    "workflow%3A%3Aup%20next")) < 0)
		return error;
	cJSON_ArrayForEach(it, list) {
		if (json_long(it, "iid") != iid) {
			first_id = json_long(it, "id");
			break;
		}
	}
	cJSON_Delete(list);
	if (!first_id)
		return 0;
	/* GitLab's move_after_id names the issue to be placed after this one */
	return gitlab_issue_reorder(r->gl, iid, first_id, 0);
}

/* The facts of a failure, for an issue or a merge request (appended to `out`). */
static int describe(fbuf *out, const cJSON *pl, const cJSON *job, const cilog_result *res)
{
	fbuf clean, name;
	char fence[32];
	const char *stage = json_str(job, "stage");
	int error;

	fbuf_init(&clean, EXCERPT_MAX * 4);
	fbuf_init(&name, 1024);
	untrusted_title(&name, json_str(job, "name") ? json_str(job, "name") : "?", strlen(json_str(job, "name") ? json_str(job, "name") : "?"), 200);
	if ((error = fbuf_printf(out, "- Pipeline: [#%ld](%s) on `%s` at `%.12s`\n", json_long(pl, "id"),
				 json_str(pl, "web_url") ? json_str(pl, "web_url") : "", json_str(pl, "ref") ? json_str(pl, "ref") : "",
				 json_str(pl, "sha") ? json_str(pl, "sha") : "")) < 0 ||
	    (error = fbuf_printf(out, "- Job: [%s](%s)%s%s%s\n", fbuf_cstr(&name),
				 json_str(job, "web_url") ? json_str(job, "web_url") : "", stage ? " (stage `" : "",
				 stage ? stage : "", stage ? "`)" : "")) < 0 ||
	    (error = fbuf_printf(out, "- Class: `%s`%s%s%s\n", cilog_class_name(res->klass), res->rule ? " (rule `" : "",
				 res->rule ? res->rule : "", res->rule ? "`)" : "")) < 0)
		goto cleanup;
	if (res->tool) {
		fbuf_reset(&name);
		untrusted_title(&name, res->tool, strlen(res->tool), 100);
		if ((error = fbuf_printf(out, "- Tool: `%s`\n", fbuf_cstr(&name))) < 0)
			goto cleanup;
	}
	if (res->file) {
		fbuf_reset(&name);
		untrusted_title(&name, res->file, strlen(res->file), 300);
		if (res->line)
			error = fbuf_printf(out, "- Where: `%s:%ld`\n", fbuf_cstr(&name), res->line);
		else
			error = fbuf_printf(out, "- Where: `%s`\n", fbuf_cstr(&name));
		if (error < 0)
			goto cleanup;
	}
	if (res->test) {
		fbuf_reset(&name);
		untrusted_title(&name, res->test, strlen(res->test), 300);
		if ((error = fbuf_printf(out, "- Test: `%s`\n", fbuf_cstr(&name))) < 0)
			goto cleanup;
	}
	untrusted_clean(&clean, res->excerpt ? res->excerpt : "", res->excerpt ? strlen(res->excerpt) : 0);
	fence_for(fence, sizeof(fence), fbuf_cstr(&clean));
	error = fbuf_printf(out, "\nLog lines %ld to %ld of the job:\n\n%stext\n%s%s%s\n", res->first_line,
			    res->last_line, fence, fbuf_cstr(&clean),
			    clean.len && clean.ptr[clean.len - 1] == '\n' ? "" : "\n", fence);
cleanup:
	fbuf_release(&clean);
	fbuf_release(&name);
	return error;
}

static int failure_marker(fbuf *out, const char *fp, const cilog_result *res, const cJSON *job, const char *ref,
			  int depth)
{
	cJSON *m = cJSON_CreateObject();
	int error;

	if (!m || !cJSON_AddNumberToObject(m, "v", 1) || !cJSON_AddStringToObject(m, "fp", fp) ||
	    !cJSON_AddStringToObject(m, "class", cilog_class_name(res->klass)) ||
	    !cJSON_AddStringToObject(m, "job", json_str(job, "name") ? json_str(job, "name") : "") ||
	    !cJSON_AddNumberToObject(m, "job_id", (double)json_long(job, "id")) || !cJSON_AddStringToObject(m, "ref", ref) ||
	    !cJSON_AddNumberToObject(m, "depth", depth)) {
		cJSON_Delete(m);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	error = pl_marker_write(out, PIPELINE_MARKER_FAILURE, m);
	cJSON_Delete(m);
	return error;
}

/* An issue for a failure the job does not fix. */
static int file_issue(pl_run *r, const cJSON *pl, const cJSON *job, const cilog_result *res, const char *fp,
		      const char *why, int depth)
{
	const char *ref = json_str(pl, "ref") ? json_str(pl, "ref") : "";
	int fast = !strcmp(ref, r->default_branch);
	cJSON *fields = NULL, *made = NULL;
	fbuf body, title, raw;
	int error;

	fbuf_init(&body, 256 << 10);
	fbuf_init(&title, 1024);
	fbuf_init(&raw, 1024);
	if ((error = fbuf_printf(&raw, "CI %s: %s in job %s on %s", fast ? "is red" : "failure",
				 cilog_class_name(res->klass), json_str(job, "name") ? json_str(job, "name") : "?", ref)) < 0 ||
	    (error = untrusted_title(&title, raw.ptr, raw.len, 200)) < 0)
		goto cleanup;
	if ((error = fbuf_printf(&body, "**factory-pipeline found a CI failure it does not fix itself.** %s\n\n",
				 why)) < 0 ||
	    (fast && (error = fbuf_printf(&body, "The default branch `%s` is red: this issue is in the fast lane.\n\n",
					  r->default_branch)) < 0) ||
	    (error = describe(&body, pl, job, res)) < 0 || (error = failure_marker(&body, fp, res, job, ref, depth)) < 0)
		goto cleanup;
	if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "title", title.ptr) ||
	    !cJSON_AddStringToObject(fields, "description", body.ptr) ||
	    !cJSON_AddStringToObject(fields, "labels",
				     fast ? PIPELINE_LABEL_FAILURE "," LABEL_FAST_LANE "," LABEL_UP_NEXT
					  : PIPELINE_LABEL_FAILURE)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = gitlab_issue_create(&made, r->gl, fields)) < 0)
		goto cleanup;
	r->issues++;
	report_action(r->rep, fast ? "issue.fast_lane" : "issue.create", title.ptr, "fingerprint %s: %s", fp, why);
	log_info("%sissue filed%s: %s", r->dry_run ? "dry-run: " : "", fast ? " (fast lane, top of Up Next)" : "",
		 title.ptr);
	if (made) {
		long iid = json_long(made, "iid");
		pl_marker_add(r, "issue", iid, fp);
		pl_ledger_set(r, fp, "issue", iid);
		if (fast && to_top_of_up_next(r, iid) < 0)
			log_warn("issue #%ld: cannot move it to the top of Up Next: %s", iid, ferror_last());
		error = 0;
	}
cleanup:
	fbuf_release(&body);
	fbuf_release(&title);
	fbuf_release(&raw);
	cJSON_Delete(fields);
	cJSON_Delete(made);
	return error;
}

/* How many times a job of this name ran in the pipeline (retries included). */
static long attempts_of(const cJSON *all, const char *name)
{
	const cJSON *it;
	long n = 0;

	cJSON_ArrayForEach(it, all) {
		const char *nm = json_str(it, "name");
		if (nm && name && !strcmp(nm, name))
			n++;
	}
	return n;
}

/* Act on one classified failure. Returns 1 when it was handled (the job
 * is not looked at again), 0 when a cap left it for the next run, < 0 on
 * an error. */
static int act(pl_run *r, const cJSON *pl, const cJSON *job, const cJSON *all, const cilog_result *res,
	       const char *fp, long mr_iid)
{
	const char *ref = json_str(pl, "ref") ? json_str(pl, "ref") : "";
	const char *name = json_str(job, "name") ? json_str(job, "name") : "";
	const char *cls = cilog_class_name(res->klass);
	long job_id = json_long(job, "id"), attempts = attempts_of(all, name);
	long fixes = json_long(cJSON_GetObjectItemCaseSensitive(r->ledger, "branch_fixes"), ref);
	int depth = !strncmp(ref, r->fix_prefix, strlen(r->fix_prefix)) || (mr_iid && fixes > 0);
	int flaky = res->klass == CILOG_TEST && pl_ledger_flaky(r, fp, res->test) > 0;
	int transient = cilog_class_transient(res->klass) || flaky;
	const cJSON *open;
	char why[768];
	int error;

	if (transient && attempts < r->max_attempts) {
		cJSON *new_job = NULL;
		if (r->retries >= r->max_retries) {
			log_info("job %ld (%s, %s): retry left for the next run (cap of %ld retries per run)", job_id, name,
				 cls, r->max_retries);
			return 0;
		}
		if ((error = gitlab_job_retry(&new_job, r->gl, job_id)) < 0) {
			log_warn("job %ld: retry refused: %s", job_id, ferror_last());
			cJSON_Delete(new_job);
			return error == FACTORY_EUPSTREAM ? error : 1;
		}
		r->retries++;
		if (new_job)
			pl_ledger_retry(r, job_id, json_long(new_job, "id"), fp, res->test);
		report_action(r->rep, "job.retry", name, "job %ld on %s: %s%s (attempt %ld of %ld)", job_id, ref, cls,
			      flaky ? ", known flaky test" : "", attempts + 1, r->max_attempts);
		log_info("%sretried job %ld (%s on %s): %s", r->dry_run ? "dry-run: " : "", job_id, name, ref, cls);
		cJSON_Delete(new_job);
		return 1;
	}
	if ((open = pl_marker_find(r, "mr", fp))) {
		log_info("job %ld (%s, %s): fix merge request !%ld is already open for fingerprint %s", job_id, name, cls,
			 json_long(open, "iid"), fp);
		report_action(r->rep, "skip.open_mr", name, "fingerprint %s: !%ld open", fp, json_long(open, "iid"));
		return 1;
	}
	if ((open = pl_marker_find(r, "issue", fp))) {
		log_info("job %ld (%s, %s): issue #%ld is already open for fingerprint %s", job_id, name, cls,
			 json_long(open, "iid"), fp);
		report_action(r->rep, "skip.open_issue", name, "fingerprint %s: #%ld open", fp, json_long(open, "iid"));
		return 1;
	}
	if (transient)
		snprintf(why, sizeof(why), "It looks transient (`%s`) but failed %ld times in this pipeline.", cls,
			 attempts);
	else if (depth)
		snprintf(why, sizeof(why), "It failed on `%s`, a branch the Factory already fixed once: no fix of a fix.",
			 ref);
	else if (!r->fix)
		snprintf(why, sizeof(why), "Fixing is off (pipeline.fix=false).");
	else if (!pl_in_list(r->fix_classes, cls))
		snprintf(why, sizeof(why), "The class `%s` needs a person (pipeline.fix_classes does not include it).",
			 cls);
	else {
		pl_fix fx;
		if (r->mrs >= r->max_mrs) {
			log_info("job %ld (%s, %s): fix left for the next run (cap of %ld fixes per run)", job_id, name, cls,
				 r->max_mrs);
			return 0;
		}
		memset(&fx, 0, sizeof(fx));
		fx.pipeline = pl;
		fx.job = job;
		fx.res = res;
		fx.fp = fp;
		fx.ref = ref;
		fx.mr_iid = mr_iid;
		if ((error = pl_fix_run(r, &fx)) < 0)
			return error;
		if (error == 0) {
			r->mrs++;
			if (fx.new_mr_iid) {
				pl_marker_add(r, "mr", fx.new_mr_iid, fp);
				pl_ledger_set(r, fp, "mr", fx.new_mr_iid);
			}
			return 1;
		}
		snprintf(why, sizeof(why), "The coding agent did not fix it: %s", fx.why);
	}
	if (r->issues >= r->max_issues) {
		log_info("job %ld (%s, %s): issue left for the next run (cap of %ld issues per run)", job_id, name, cls,
			 r->max_issues);
		return 0;
	}
	if ((error = file_issue(r, pl, job, res, fp, why, depth)) < 0)
		return error;
	return 1;
}

/* The failed jobs of one failed pipeline. */
static int handle_pipeline(pl_run *r, const cJSON *pl, long mr_iid)
{
	cJSON *failed = NULL, *all = NULL, *job;
	char path[128];
	int error;

	snprintf(path, sizeof(path), "projects/:id/pipelines/%ld/jobs", json_long(pl, "id"));
	if ((error = gitlab_list_all(&failed, r->gl, path, "scope[]=failed", 500)) < 0 ||
	    (error = gitlab_list_all(&all, r->gl, path, "include_retried=true", 2000)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(job, failed) {
		cilog_result res;
		char fp[PIPELINE_FP_LEN];
		long id = json_long(job, "id");
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(job, "allow_failure")))
			continue;
		if (pl_ledger_handled(r, id)) {
			log_info("job %ld (%s): already handled by an earlier run", id, json_str(job, "name"));
			continue;
		}
		cilog_result_init(&res);
		if ((error = classify_job(&res, r, id)) < 0) {
			cilog_result_release(&res);
			if (error == FACTORY_EUPSTREAM || error == FACTORY_EAUTH)
				goto cleanup;
			log_warn("job %ld: its log cannot be read: %s", id, ferror_last());
			continue;
		}
		pl_fingerprint(fp, &res, json_str(job, "name") ? json_str(job, "name") : "");
		log_info("job %ld (%s) on %s: %s%s%s, lines %ld-%ld, fingerprint %s", id, json_str(job, "name"),
			 json_str(pl, "ref"), cilog_class_name(res.klass), res.file ? " at " : "", res.file ? res.file : "",
			 res.first_line, res.last_line, fp);
		pl_ledger_count(r, fp, &res, json_str(job, "name") ? json_str(job, "name") : "", id);
		error = act(r, pl, job, all, &res, fp, mr_iid);
		cilog_result_release(&res);
		if (error < 0)
			goto cleanup;
		if (error == 1)
			pl_ledger_mark_handled(r, id);
	}
	error = 0;
cleanup:
	cJSON_Delete(failed);
	cJSON_Delete(all);
	return error;
}

int pl_repair(pl_run *r)
{
	cJSON *latest = NULL, *list = NULL, *seen = NULL, *pl;
	char since[32], query[256];
	long mark = json_long(r->ledger, "mark"), from, done = 0;
	int error;

	if ((error = latest_of_ref(&latest, r, r->default_branch)) < 0)
		goto cleanup;
	if (latest && json_str(latest, "status") && !strcmp(json_str(latest, "status"), "failed"))
		r->red = 1;
	log_info("default branch %s: %s", r->default_branch,
		 latest ? (json_str(latest, "status") ? json_str(latest, "status") : "?") : "no pipeline");
	/* since the last run (with an hour of overlap: markers make a second look harmless) */
	from = mark ? mark - 3600 : r->now - r->since_h * 3600;
	pl_iso(since, sizeof(since), from);
	snprintf(query, sizeof(query), "status=failed&updated_after=%s&order_by=id&sort=desc", since);
	if ((error = gitlab_list_all(&list, r->gl, "projects/:id/pipelines", query, (size_t)r->max_pipelines * 5)) < 0)
		goto cleanup;
	if (!(seen = cJSON_CreateObject())) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	/* a red default branch first, however long ago it turned red */
	cJSON_AddTrueToObject(seen, r->default_branch);
	if (r->red) {
		done++;
		log_info("pipeline %ld on %s failed", json_long(latest, "id"), r->default_branch);
		if ((error = handle_pipeline(r, latest, 0)) < 0)
			goto cleanup;
	}
	cJSON_ArrayForEach(pl, list) {
		const char *ref = json_str(pl, "ref");
		cJSON *newest = NULL;
		long mr_iid = 0;
		int is_default;
		if (!ref || cJSON_GetObjectItemCaseSensitive(seen, ref))
			continue;
		cJSON_AddTrueToObject(seen, ref);
		is_default = !strcmp(ref, r->default_branch);
		if (!is_default && strncmp(ref, r->branch_prefix, strlen(r->branch_prefix)) != 0)
			continue;
		if (done >= r->max_pipelines) {
			log_info("more failed pipelines than pipeline.max_pipelines (%ld): the rest next run",
				 r->max_pipelines);
			break;
		}
		/* only the newest pipeline of the branch */
		if (is_default) {
			continue;
		} else {
			if ((error = latest_of_ref(&newest, r, ref)) < 0)
				goto cleanup;
			if (!newest || json_long(newest, "id") != json_long(pl, "id")) {
				cJSON_Delete(newest);
				continue;
			}
			cJSON_Delete(newest);
			if ((error = open_mr_of(&mr_iid, r, ref)) < 0)
				goto cleanup;
			if (!mr_iid) {
				log_info("branch %s: no open merge request, left alone", ref);
				continue;
			}
		}
		r->red = 1;
		done++;
		log_info("pipeline %ld on %s failed", json_long(pl, "id"), ref);
		if ((error = handle_pipeline(r, pl, mr_iid)) < 0)
			goto cleanup;
	}
	report_counter_set(r->rep, "failed_pipelines", done);
	error = 0;
cleanup:
	cJSON_Delete(latest);
	cJSON_Delete(list);
	cJSON_Delete(seen);
	return error;
}
