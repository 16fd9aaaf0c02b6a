/*
 * heal.c - phase 1: before the Factory starts anything new, the board is
 * made to show the real state.
 *
 * In Progress. For each issue: the Factory's claim is read back from its
 * notes and GitLab is asked about the claim's CI job. A job still running
 * within the claim's lease is left alone. Otherwise the job's trace says how
 * far it got (its factory:stage and factory:outcome lines) and the
 * diagnosis is one of those in implement.h. If the branch was pushed with
 * the issue's commit, the work is not lost: the merge request is opened (or
 * found) and the issue moves to Validation. Else the heal is:
 *   - retry (back to Up Next; the next attempt is told what this one found)
 *     while attempts remain (implement.max_attempts);
 *   - ask for information (workflow::needs info and a note saying what is
 *     missing) when the agent said the issue lacks it, or the attempts ran out;
 *   - back to Up Next without counting an attempt when the cause was outside
 *     the issue (the job was cancelled, the model's service failed).
 * Each heal leaves one note saying what was found and what was done; when
 * two jobs heal the same claim at once, the first note wins and the other
 * job takes its own note back and does nothing.
 *
 * Validation. The merge request the Factory opened for the issue decides:
 * merged -> the issue is closed if GitLab did not close it; closed without
 * merging -> a person is asked; conflicts -> the branch is rebased onto the
 * default branch (a force push under a lease); head pipeline passed -> the
 * Factory merges (unless implement.merge is "people", or it is a draft);
 * pipeline running -> auto-merge is set (GitLab merges when it passes);
 * pipeline failed -> handed to the pipeline job for a fix, once per
 * pipeline, and the Factory keeps off the branch (one owner per branch).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "implement.h"
#include "log.h"

static const char *const active_statuses[] = {"created",   "pending",   "running", "waiting_for_resource",
                                              "preparing", "scheduled", NULL};

static int is_active(const char *status)
{
	size_t i;

	for (i = 0; status && active_statuses[i]; i++)
		if (!strcmp(status, active_statuses[i]))
			return 1;
	return 0;
}

/* What a diagnosis means, for people. */
static const char *diag_text(const char *d)
{
	static const struct {
		const char *d, *text;
	} t[] = {
	        {DIAG_BUDGET, "the agent ran out of its budget"},
	        {DIAG_TOOL_FAILURES, "the agent's tool calls kept failing"},
	        {DIAG_NO_FINISH, "the agent stopped without finishing"},
	        {DIAG_NEEDS_INFO, "the issue lacks information or is ambiguous"},
	        {DIAG_REFUSED, "the model refused the task"},
	        {DIAG_AGENT_ERROR, "the model's service failed"},
	        {DIAG_PUSH_FAILED, "the push failed"},
	        {DIAG_MR_FAILED, "the merge request could not be opened"},
	        {DIAG_CANCELLED, "the job was cancelled"},
	        {DIAG_TIMED_OUT, "the job hit its time limit"},
	        {DIAG_OVERTIME, "the job ran past its claim's lease"},
	        {DIAG_JOB_FAILED, "the job failed"},
	        {DIAG_JOB_GONE, "GitLab no longer knows the job"},
	        {DIAG_LEASE_EXPIRED, "the claim's lease ran out"},
	        {DIAG_FAILED, "the job failed"},
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(d, t[i].d))
			return t[i].text;
	return "the job failed";
}

static int known_diag(const char *d)
{
	return strcmp(diag_text(d), "the job failed") != 0 || !strcmp(d, DIAG_JOB_FAILED) || !strcmp(d, DIAG_FAILED);
}

/* What to do about a diagnosis after attempt `attempt`. */
static const char *decide(const char *diag, int attempt, long max_attempts)
{
	if (!strcmp(diag, DIAG_NEEDS_INFO) || !strcmp(diag, DIAG_REFUSED))
		return CLAIM_ACTION_NEEDS_INFO;
	if (!strcmp(diag, DIAG_CANCELLED) || !strcmp(diag, DIAG_AGENT_ERROR) || !strcmp(diag, DIAG_JOB_GONE))
		return CLAIM_ACTION_UP_NEXT;
	return attempt < max_attempts ? CLAIM_ACTION_RETRY : CLAIM_ACTION_NEEDS_INFO;
}

static void record(impl_run *r, long iid, const char *list, const char *found, const char *action, const char *why)
{
	cJSON *o = r->healed ? cJSON_CreateObject() : NULL;

	log_info("#%ld (%s): %s -> %s%s%s", iid, list, found, action, why && *why ? ": " : "", why ? why : "");
	if (!o)
		return;
	cJSON_AddNumberToObject(o, "issue", (double)iid);
	if (r->sc && r->project_path)
		cJSON_AddStringToObject(o, "project", r->project_path);
	cJSON_AddStringToObject(o, "list", list);
	cJSON_AddStringToObject(o, "found", found);
	cJSON_AddStringToObject(o, "action", action);
	if (why && *why)
		cJSON_AddStringToObject(o, "why", why);
	cJSON_AddBoolToObject(o, "dry_run", r->dry_run);
	cJSON_AddItemToArray(r->healed, o);
}

/* Post an event that ends claim `ends`, then check no other job ended it
 * first. *won is 1 when ours counts (always in a dry run: nothing posted). */
static int post_ending(int *won, impl_run *r, long iid, const claim_event *e, const char *text)
{
	claim_history again;
	const claim_event *first;
	long id = 0;
	int error;

	*won = 0;
	if (r->dry_run) {
		log_info("dry-run: would note on #%ld: %s", iid, text);
		*won = 1;
		return 0;
	}
	if ((error = impl_post_event(&id, r, iid, e, text)) < 0)
		return error;
	if (!e->ends) {
		*won = 1;
		return 0;
	}
	if ((error = impl_history(&again, NULL, r, iid)) < 0)
		return error;
	first = claim_first_end(&again, e->ends);
	*won = first && first->note_id == id;
	claim_history_release(&again);
	if (!*won) {
		log_info("#%ld: another job healed this claim first; taking our note back", iid);
		return impl_delete_note(r, iid, id);
	}
	return 0;
}

int impl_heal_claim(impl_run *r, const cJSON *issue, const claim_history *h, const claim_entry *claim,
                    const char *diagnosis, const char *why, const char *found)
{
	long iid = impl_num(issue, "iid");
	int attempt = claim->attempt > 0 ? claim->attempt : claim_attempts_made(h) + 1;
	const char *action = decide(diagnosis, attempt, r->max_attempts);
	const char *list = impl_has_label(issue, LABEL_VALIDATION) ? LABEL_VALIDATION : LABEL_IN_PROGRESS;
	claim_event e;
	fbuf text;
	int won = 0, error;

	memset(&e, 0, sizeof(e));
	e.ends = claim->note_id;
	snprintf(e.action, sizeof(e.action), "%s", action);
	snprintf(e.diagnosis, sizeof(e.diagnosis), "%s", diagnosis);
	e.attempt = attempt;
	snprintf(e.branch, sizeof(e.branch), "%s", claim->branch);
	impl_line(e.why, 500, why && *why ? why : diag_text(diagnosis));

	fbuf_init(&text, 64 << 10);
	error = fbuf_printf(&text, "**The Factory healed this issue.** Found: %s",
	                    found ? found : diag_text(diagnosis));
	if (!error && why && *why) {
		error = fbuf_puts(&text, " (");
		if (!error)
			error = fbuf_puts(&text, e.why);
		if (!error)
			error = fbuf_puts(&text, ")");
	}
	if (!error) {
		if (!strcmp(action, CLAIM_ACTION_RETRY))
			error = fbuf_printf(&text,
			                    ".\n\nDone: back to Up Next for attempt %d of %ld; that attempt is told "
			                    "what this one found.",
			                    attempt + 1, r->max_attempts);
		else if (!strcmp(action, CLAIM_ACTION_UP_NEXT))
			error = fbuf_puts(&text, ".\n\nDone: back to Up Next; this does not count as an attempt.");
		else if (!strcmp(diagnosis, DIAG_NEEDS_INFO) || !strcmp(diagnosis, DIAG_REFUSED))
			error = fbuf_printf(&text,
			                    ".\n\nDone: labelled ~\"%s\". Please add what is missing to the "
			                    "description or a comment, then move the issue back to Up Next.",
			                    LABEL_NEEDS_INFO);
		else
			error = fbuf_printf(&text,
			                    ".\n\nDone: the Factory gave up after %d attempt%s and labelled it "
			                    "~\"%s\". A person should look: clarify or split the issue, then "
			                    "move it back to Up Next.",
			                    attempt, attempt == 1 ? "" : "s", LABEL_NEEDS_INFO);
	}
	if (error < 0)
		goto cleanup;
	if ((error = post_ending(&won, r, iid, &e, text.ptr)) < 0 || !won)
		goto cleanup;
	if (!strcmp(action, CLAIM_ACTION_NEEDS_INFO))
		error = impl_move(r, iid, LABEL_NEEDS_INFO, list);
	else
		error = impl_move(r, iid, LABEL_UP_NEXT, list);
	record(r, iid, list, diagnosis, action, e.why);
cleanup:
	fbuf_release(&text);
	return error;
}

/* The job a claim names, as GitLab sees it: *status (static words or NULL
 * when the job is gone), *reason its failure_reason (may be empty). */
static int job_status(char *status, size_t slen, char *reason, size_t rlen, impl_run *r, long job_id)
{
	cJSON *j = NULL;
	const char *s, *f;
	int error;

	status[0] = reason[0] = '\0';
	error = gitlab_request(&j, r->gl, "GET", NULL, "projects/:id/jobs/%ld", job_id);
	if (error == FACTORY_ENOTFOUND)
		return 0;
	if (error < 0)
		return error;
	s = impl_str(j, "status");
	f = impl_str(j, "failure_reason");
	snprintf(status, slen, "%s", s ? s : "unknown");
	snprintf(reason, rlen, "%s", f ? f : "");
	cJSON_Delete(j);
	return 0;
}

/* The claim's branch was pushed with the issue's commit but left without a
 * merge request: open it (or find it) and move the issue to Validation.
 * *done is 1 when the issue was moved. */
static int salvage(int *done, impl_run *r, const cJSON *issue, const claim_entry *claim)
{
	long iid = impl_num(issue, "iid"), mr_iid = 0;
	cJSON *branch = NULL, *mrs = NULL, *mr = NULL, *fields = NULL;
	const char *msg, *sha, *web = NULL;
	char closes[64], query[1024], title[300];
	claim_event e;
	fbuf q, text;
	int won = 0, error;

	*done = 0;
	fbuf_init(&q, 2048);
	fbuf_init(&text, 8192);
	if (!claim->branch[0] || strncmp(claim->branch, "factory/", 8) != 0)
		return 0;
	if ((error = http_escape(&q, claim->branch)) < 0)
		goto cleanup;
	error = gitlab_request(&branch, r->gl, "GET", NULL, "projects/:id/repository/branches/%s", q.ptr);
	if (error == FACTORY_ENOTFOUND) {
		error = 0;
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	msg = impl_str(cJSON_GetObjectItemCaseSensitive(branch, "commit"), "message");
	sha = impl_str(cJSON_GetObjectItemCaseSensitive(branch, "commit"), "id");
	snprintf(closes, sizeof(closes), "Closes #%ld", iid);
	if (!msg || !strstr(msg, closes))
		goto cleanup; /* not the Factory's finished work */
	snprintf(query, sizeof(query), "state=opened&source_branch=%s", q.ptr);
	if ((error = gitlab_list_all(&mrs, r->gl, "projects/:id/merge_requests", query, 1)) < 0)
		goto cleanup;
	if (cJSON_GetArraySize(mrs) > 0) {
		mr_iid = impl_num(cJSON_GetArrayItem(mrs, 0), "iid");
		web = impl_str(cJSON_GetArrayItem(mrs, 0), "web_url");
	} else if (!r->dry_run) {
		impl_line(title, sizeof(title), impl_str(issue, "title"));
		if (!(fields = cJSON_CreateObject()) ||
		    !cJSON_AddStringToObject(fields, "source_branch", claim->branch) ||
		    !cJSON_AddStringToObject(fields, "target_branch", r->default_branch) ||
		    !cJSON_AddStringToObject(fields, "title", title[0] ? title : closes) ||
		    fbuf_printf(&text,
		                "The Factory's work for #%ld, found pushed without a merge request after its "
		                "job ended (%s).\n\nCloses #%ld\n",
		                iid, claim->job_url[0] ? claim->job_url : "a run outside CI", iid) < 0 ||
		    !cJSON_AddStringToObject(fields, "description", text.ptr) ||
		    !cJSON_AddTrueToObject(fields, "remove_source_branch")) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_mr_create(&mr, r->gl, fields)) < 0)
			goto cleanup;
		mr_iid = impl_num(mr, "iid");
		web = impl_str(mr, "web_url");
	}
	memset(&e, 0, sizeof(e));
	e.ends = claim->note_id;
	snprintf(e.action, sizeof(e.action), CLAIM_ACTION_VALIDATION);
	snprintf(e.diagnosis, sizeof(e.diagnosis), DIAG_MR_FAILED);
	e.attempt = claim->attempt;
	e.mr = mr_iid;
	snprintf(e.sha, sizeof(e.sha), "%s", sha ? sha : "");
	snprintf(e.branch, sizeof(e.branch), "%s", claim->branch);
	snprintf(e.why, sizeof(e.why), "the branch was pushed but the job ended before the merge request was done");
	fbuf_reset(&text);
	if ((error = fbuf_printf(
	             &text,
	             "**The Factory healed this issue.** Found: the branch `%s` was pushed with the change, "
	             "but the job ended before it finished.\n\nDone: merge request !%ld%s%s; the issue is "
	             "in Validation.",
	             claim->branch, mr_iid, web ? " " : "", web ? web : "")) < 0)
		goto cleanup;
	if ((error = post_ending(&won, r, iid, &e, text.ptr)) < 0 || !won)
		goto cleanup;
	if ((error = impl_move(r, iid, LABEL_VALIDATION, LABEL_IN_PROGRESS)) < 0)
		goto cleanup;
	record(r, iid, LABEL_IN_PROGRESS, DIAG_MR_FAILED, CLAIM_ACTION_VALIDATION, e.why);
	*done = 1;
cleanup:
	cJSON_Delete(branch);
	cJSON_Delete(mrs);
	cJSON_Delete(mr);
	cJSON_Delete(fields);
	fbuf_release(&q);
	fbuf_release(&text);
	return error;
}

/* In Progress without a live claim, though the Factory's history is there:
 * an earlier run ended the claim and could not move the labels. Finish the move. */
static int finish_move(impl_run *r, const cJSON *issue, const claim_history *h)
{
	long iid = impl_num(issue, "iid");
	const claim_event *last = h->nevents ? &h->events[h->nevents - 1] : NULL;
	const char *to = NULL;

	if (!last) {
		record(r, iid, LABEL_IN_PROGRESS, "no claim by the Factory", "left alone", NULL);
		return 0;
	}
	if (!strcmp(last->action, CLAIM_ACTION_VALIDATION))
		to = LABEL_VALIDATION;
	else if (!strcmp(last->action, CLAIM_ACTION_RETRY) || !strcmp(last->action, CLAIM_ACTION_UP_NEXT) ||
	         !strcmp(last->action, CLAIM_ACTION_ABANDONED))
		to = LABEL_UP_NEXT;
	else if (!strcmp(last->action, CLAIM_ACTION_NEEDS_INFO))
		to = LABEL_NEEDS_INFO;
	else if (!strcmp(last->action, CLAIM_ACTION_NO_CHANGE))
		to = LABEL_NO_CHANGE;
	if (!to) {
		record(r, iid, LABEL_IN_PROGRESS, "no live claim", "left alone", last->action);
		return 0;
	}
	record(r, iid, LABEL_IN_PROGRESS, "no live claim, labels not moved", "moved", to);
	return impl_move(r, iid, to, LABEL_IN_PROGRESS);
}

static int heal_in_progress(impl_run *r, const cJSON *issue)
{
	long iid = impl_num(issue, "iid"), now = impl_now();
	claim_history h;
	const claim_entry *owner;
	char status[40], reason[80], stage[40], outcome[40], why[600], found[800];
	const char *diag = NULL;
	int done = 0, error;

	if ((error = impl_history(&h, NULL, r, iid)) < 0)
		return error;
	if (!(owner = claim_owner(&h, 0))) {
		error = finish_move(r, issue, &h);
		goto cleanup;
	}
	status[0] = reason[0] = stage[0] = outcome[0] = why[0] = '\0';
	if (owner->job > 0 && (error = job_status(status, sizeof(status), reason, sizeof(reason), r, owner->job)) < 0)
		goto cleanup;
	if ((is_active(status) || owner->job <= 0) && (owner->lease_until <= 0 || now < owner->lease_until)) {
		record(r, iid, LABEL_IN_PROGRESS, owner->job > 0 ? "job running within its lease" : "lease running",
		       "left alone", owner->job_url);
		error = 0;
		goto cleanup;
	}
	if (is_active(status)) {
		/* Running too long: stop it, then heal. */
		cJSON *out = NULL;
		diag = DIAG_OVERTIME;
		snprintf(why, sizeof(why), "job %ld still %s %ld s after its lease ended", owner->job, status,
		         now - owner->lease_until);
		if (!r->dry_run) {
			error = gitlab_request(&out, r->gl, "POST", NULL, "projects/:id/jobs/%ld/cancel", owner->job);
			cJSON_Delete(out);
			if (error < 0 && error != FACTORY_ENOTFOUND && error != FACTORY_EAUTH)
				goto cleanup;
		}
	} else if (owner->job <= 0) {
		diag = DIAG_LEASE_EXPIRED;
		snprintf(why, sizeof(why), "no CI job recorded and the lease ended %ld s ago",
		         now - owner->lease_until);
	} else if (!status[0]) {
		diag = DIAG_JOB_GONE;
		snprintf(why, sizeof(why), "job %ld is not known to GitLab any more", owner->job);
	} else {
		if ((error = impl_trace_find(stage, sizeof(stage), outcome, sizeof(outcome), why, sizeof(why), r,
		                             owner->job, iid, owner->note_id)) < 0 &&
		    error != FACTORY_ENOTFOUND)
			goto cleanup;
		if (!strcmp(status, "canceled")) {
			diag = DIAG_CANCELLED;
			snprintf(why, sizeof(why), "job %ld was cancelled%s%s", owner->job, stage[0] ? " during " : "",
			         stage);
		} else if (outcome[0]) {
			diag = known_diag(outcome) ? outcome : DIAG_FAILED;
		} else if (!strcmp(reason, "job_execution_timeout") || !strcmp(reason, "stuck_or_timeout_failure")) {
			diag = DIAG_TIMED_OUT;
			snprintf(why, sizeof(why), "job %ld: %s%s%s", owner->job, reason, stage[0] ? " during " : "",
			         stage);
		} else if (!strcmp(stage, "push")) {
			diag = DIAG_PUSH_FAILED;
			snprintf(why, sizeof(why), "job %ld %s during the push", owner->job, status);
		} else if (!strcmp(stage, "mr")) {
			diag = DIAG_MR_FAILED;
			snprintf(why, sizeof(why), "job %ld %s while opening the merge request", owner->job, status);
		} else {
			diag = DIAG_JOB_FAILED;
			snprintf(why, sizeof(why), "job %ld ended %s%s%s%s without moving the issue", owner->job,
			         status, reason[0] ? " (" : "", reason, reason[0] ? ")" : "");
			if (stage[0])
				snprintf(why + strlen(why), sizeof(why) - strlen(why), "; it got as far as %s", stage);
		}
	}
	/* Finished work that only lacks its merge request is kept. */
	if ((error = salvage(&done, r, issue, owner)) < 0 || done)
		goto cleanup;
	snprintf(found, sizeof(found), "%s", diag_text(diag));
	error = impl_heal_claim(r, issue, &h, owner, diag, why, found);
cleanup:
	claim_history_release(&h);
	return error;
}

/* ---- Validation ---- */

static int note_event(impl_run *r, long iid, const char *action, const char *diag, long mr, long pipeline,
                      const char *sha, const char *text)
{
	claim_event e;
	int won;

	memset(&e, 0, sizeof(e));
	snprintf(e.action, sizeof(e.action), "%s", action);
	snprintf(e.diagnosis, sizeof(e.diagnosis), "%s", diag ? diag : "");
	e.mr = mr;
	e.pipeline = pipeline;
	snprintf(e.sha, sizeof(e.sha), "%s", sha ? sha : "");
	return post_ending(&won, r, iid, &e, text);
}

/* Close the issue if it is still open, leaving the Validation list. */
static int close_issue(impl_run *r, long iid)
{
	cJSON *issue = NULL, *fields = NULL, *out = NULL;
	const char *state;
	int error;

	if ((error = gitlab_issue_get(&issue, r->gl, iid)) < 0)
		return error;
	state = impl_str(issue, "state");
	if (state && !strcmp(state, "opened")) {
		if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "state_event", "close") ||
		    !cJSON_AddStringToObject(fields, "remove_labels", LABEL_VALIDATION)) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_issue_update(&out, r->gl, iid, fields)) < 0)
			goto cleanup;
		report_action(r->rep, "close", "issue", "#%ld", iid);
	} else if (impl_has_label(issue, LABEL_VALIDATION)) {
		error = impl_move(r, iid, NULL, LABEL_VALIDATION);
	}
cleanup:
	cJSON_Delete(issue);
	cJSON_Delete(fields);
	cJSON_Delete(out);
	return error;
}

/* Rebase the merge request's branch onto the default branch and force-push
 * it under a lease (only if nobody moved it since we fetched). */
static int rebase_branch(impl_run *r, long iid, const cJSON *mr, const claim_history *h)
{
	const char *branch = impl_str(mr, "source_branch"), *sha = impl_str(mr, "sha");
	long mr_iid = impl_num(mr, "iid");
	impl_checkout co;
	gitops_remote rem = impl_remote(r);
	char tracking[1024], upstream[1024], expect[GITOPS_SHA_LEN], head[GITOPS_SHA_LEN];
	char text[2048];
	size_t n = 0;
	int error;

	memset(&co, 0, sizeof(co));
	if (!branch || strncmp(branch, "factory/", 8) != 0) {
		record(r, iid, LABEL_VALIDATION, "conflicts on a branch that is not the Factory's", "left alone",
		       branch);
		return 0;
	}
	{
		const claim_event *last = claim_last_event(h, CLAIM_ACTION_REBASE_FAILED, mr_iid, 0);
		if (last && sha && !strcmp(last->sha, sha)) {
			record(r, iid, LABEL_VALIDATION, "conflicts a rebase cannot resolve", "left for a person", sha);
			return 0;
		}
	}
	if (r->dry_run) {
		record(r, iid, LABEL_VALIDATION, "merge conflicts", "would rebase", branch);
		return 0;
	}
	if ((error = impl_checkout_branch(&co, r, branch, 1)) < 0)
		goto cleanup;
	snprintf(tracking, sizeof(tracking), "refs/remotes/origin/%s", branch);
	snprintf(upstream, sizeof(upstream), "refs/remotes/origin/%s", r->default_branch);
	if ((error = gitops_resolve(expect, co.repo, tracking)) < 0)
		goto cleanup;
	error = gitops_rebase(&n, co.repo, upstream, &r->committer);
	if (error == FACTORY_ECONFLICT) {
		snprintf(text, sizeof(text),
		         "**The Factory looked at this issue.** Found: merge request !%ld conflicts with `%s`, and a "
		         "rebase does not resolve it (%s).\n\nDone: nothing; a person should resolve the conflict "
		         "on `%s`.",
		         mr_iid, r->default_branch, ferror_last(), branch);
		record(r, iid, LABEL_VALIDATION, "merge conflicts", "rebase failed", ferror_last());
		error = note_event(r, iid, CLAIM_ACTION_REBASE_FAILED, "conflicts", mr_iid, 0, sha, text);
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	if ((error = gitops_push(co.repo, &rem, branch, branch, 1, expect)) < 0)
		goto cleanup;
	gitops_resolve(head, co.repo, "HEAD");
	snprintf(text, sizeof(text),
	         "**The Factory healed this issue.** Found: merge request !%ld conflicted with `%s`.\n\nDone: rebased "
	         "`%s` onto `%s` (%zu commit%s replayed, now at %.12s); a new pipeline will run.",
	         mr_iid, r->default_branch, branch, r->default_branch, n, n == 1 ? "" : "s", head);
	record(r, iid, LABEL_VALIDATION, "merge conflicts", "rebased", branch);
	error = note_event(r, iid, CLAIM_ACTION_REBASED, "conflicts", mr_iid, 0, head, text);
cleanup:
	impl_checkout_release(&co, r);
	return error;
}

static int is_draft(const cJSON *mr)
{
	const char *title = impl_str(mr, "title");

	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mr, "draft")) ||
	       (title && (!strncasecmp(title, "draft:", 6) || !strncasecmp(title, "[draft]", 7)));
}

static int heal_validation(impl_run *r, const cJSON *issue)
{
	long iid = impl_num(issue, "iid"), mr_iid, pl_id;
	claim_history h;
	const claim_event *ev;
	cJSON *mr = NULL, *res = NULL;
	const cJSON *pl;
	const char *state, *pl_status, *pl_sha, *sha, *web;
	char text[2048];
	int error;

	if ((error = impl_history(&h, NULL, r, iid)) < 0)
		return error;
	if (!(ev = claim_last_event(&h, CLAIM_ACTION_VALIDATION, 0, 0)) || ev->mr <= 0) {
		record(r, iid, LABEL_VALIDATION, "no merge request by the Factory", "left alone", NULL);
		goto cleanup;
	}
	mr_iid = ev->mr;
	error = gitlab_request(&mr, r->gl, "GET", NULL, "projects/:id/merge_requests/%ld", mr_iid);
	if (error == FACTORY_ENOTFOUND) {
		snprintf(text, sizeof(text),
		         "**The Factory healed this issue.** Found: its merge request !%ld is gone.\n\nDone: labelled "
		         "~\"%s\"; move the issue back to Up Next for a new attempt.",
		         mr_iid, LABEL_NEEDS_INFO);
		record(r, iid, LABEL_VALIDATION, "merge request gone", CLAIM_ACTION_NEEDS_INFO, NULL);
		if ((error = note_event(r, iid, CLAIM_ACTION_NEEDS_INFO, "mr_gone", mr_iid, 0, NULL, text)) == 0)
			error = impl_move(r, iid, LABEL_NEEDS_INFO, LABEL_VALIDATION);
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	state = impl_str(mr, "state");
	sha = impl_str(mr, "sha");
	web = impl_str(mr, "web_url");
	pl = cJSON_GetObjectItemCaseSensitive(mr, "head_pipeline");
	pl_id = impl_num(pl, "id");
	pl_status = impl_str(pl, "status");
	pl_sha = impl_str(pl, "sha");
	if (state && !strcmp(state, "merged")) {
		snprintf(text, sizeof(text),
		         "**The Factory closed this issue.** Found: merge request !%ld was merged and the issue was "
		         "still open.\n\nDone: closed it.",
		         mr_iid);
		record(r, iid, LABEL_VALIDATION, "merged, issue open", CLAIM_ACTION_CLOSED, NULL);
		if (!r->dry_run &&
		    (error = note_event(r, iid, CLAIM_ACTION_CLOSED, "merged", mr_iid, 0, sha, text)) == 0)
			error = close_issue(r, iid);
		goto cleanup;
	}
	if (state && !strcmp(state, "closed")) {
		snprintf(text, sizeof(text),
		         "**The Factory healed this issue.** Found: merge request !%ld was closed without being merged."
		         "\n\nDone: labelled ~\"%s\": say in a comment what should change, then move the issue back to "
		         "Up Next.",
		         mr_iid, LABEL_NEEDS_INFO);
		record(r, iid, LABEL_VALIDATION, "merge request closed", CLAIM_ACTION_NEEDS_INFO, NULL);
		if ((error = note_event(r, iid, CLAIM_ACTION_NEEDS_INFO, "mr_closed", mr_iid, 0, sha, text)) == 0)
			error = impl_move(r, iid, LABEL_NEEDS_INFO, LABEL_VALIDATION);
		goto cleanup;
	}
	/* Open. A failed pipeline belongs to the pipeline job: one owner per branch. */
	if (pl_status && !strcmp(pl_status, "failed")) {
		if (claim_last_event(&h, CLAIM_ACTION_HANDBACK, mr_iid, pl_id)) {
			record(r, iid, LABEL_VALIDATION, "pipeline failed, handed back", "left to the pipeline job",
			       NULL);
			goto cleanup;
		}
		snprintf(
		        text, sizeof(text),
		        "**The Factory handed this back.** Found: pipeline #%ld of merge request !%ld failed.\n\nDone: "
		        "the pipeline job fixes it (one owner per branch: the Factory keeps off `%s` meanwhile) and "
		        "the Factory merges once a pipeline passes.",
		        pl_id, mr_iid, impl_str(mr, "source_branch") ? impl_str(mr, "source_branch") : "the branch");
		record(r, iid, LABEL_VALIDATION, "pipeline failed", CLAIM_ACTION_HANDBACK, NULL);
		error = note_event(r, iid, CLAIM_ACTION_HANDBACK, "pipeline_failed", mr_iid, pl_id, pl_sha, text);
		goto cleanup;
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mr, "has_conflicts"))) {
		error = rebase_branch(r, iid, mr, &h);
		goto cleanup;
	}
	if (r->people_merge || is_draft(mr)) {
		record(r, iid, LABEL_VALIDATION, pl_status ? pl_status : "no pipeline",
		       r->people_merge ? "left to people (implement.merge=people)" : "left to people (draft)", NULL);
		goto cleanup;
	}
	if (pl_status && !strcmp(pl_status, "success")) {
		if (r->dry_run) {
			record(r, iid, LABEL_VALIDATION, "pipeline passed", "would merge", NULL);
			goto cleanup;
		}
		if ((error = gitlab_mr_merge(&res, r->gl, mr_iid, 1)) < 0)
			goto cleanup;
		report_action(r->rep, "merge", "merge_request", "!%ld", mr_iid);
		snprintf(text, sizeof(text),
		         "**The Factory merged this.** Found: pipeline #%ld of merge request !%ld passed.\n\nDone: "
		         "merged "
		         "!%ld%s%s.",
		         pl_id, mr_iid, mr_iid, web ? " " : "", web ? web : "");
		record(r, iid, LABEL_VALIDATION, "pipeline passed", CLAIM_ACTION_MERGE, NULL);
		if ((error = note_event(r, iid, CLAIM_ACTION_MERGE, "pipeline_passed", mr_iid, pl_id, sha, text)) < 0)
			goto cleanup;
		state = impl_str(res, "state");
		if (state && !strcmp(state, "merged"))
			error = close_issue(r, iid);
		goto cleanup;
	}
	if (pl_status && is_active(pl_status) && sha && pl_sha && !strcmp(sha, pl_sha) &&
	    !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mr, "merge_when_pipeline_succeeds"))) {
		if (r->dry_run) {
			record(r, iid, LABEL_VALIDATION, "pipeline running", "would set auto-merge", NULL);
			goto cleanup;
		}
		if ((error = gitlab_mr_merge(&res, r->gl, mr_iid, 1)) < 0)
			goto cleanup;
		report_action(r->rep, "auto-merge", "merge_request", "!%ld", mr_iid);
		snprintf(text, sizeof(text),
		         "**The Factory set auto-merge.** Found: pipeline #%ld of merge request !%ld is %s.\n\nDone: "
		         "GitLab merges !%ld when the pipeline succeeds.",
		         pl_id, mr_iid, pl_status, mr_iid);
		record(r, iid, LABEL_VALIDATION, "pipeline running", "auto-merge set", NULL);
		error = note_event(r, iid, CLAIM_ACTION_MERGE, "pipeline_running", mr_iid, pl_id, sha, text);
		goto cleanup;
	}
	record(r, iid, LABEL_VALIDATION, pl_status ? pl_status : "no pipeline", "waiting", NULL);
cleanup:
	cJSON_Delete(mr);
	cJSON_Delete(res);
	claim_history_release(&h);
	return error;
}

typedef int (*heal_fn)(impl_run *r, const cJSON *issue);

/* Heal every issue of `label` that is this node's (run.c: parallel jobs),
 * in the project or, in a group scope, in every project taking part. */
static int heal_list(impl_run *r, const char *label, heal_fn fn, int *failed)
{
	cJSON *issues = NULL;
	const cJSON *issue;
	int error;

	if ((error = impl_list_label(&issues, r, label, 0)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(issue, issues)
	{
		if (!impl_node_owns(r, issue))
			continue;
		error = impl_enter_project(r, impl_num(issue, "project_id"));
		if (error == FACTORY_ENOTFOUND)
			continue;
		if (error == 0)
			error = fn(r, issue);
		if (error == FACTORY_EUPSTREAM || error == FACTORY_EAUTH || error == FACTORY_ENOMEM)
			goto cleanup;
		if (error < 0) {
			log_error("#%ld: cannot heal: %s", impl_num(issue, "iid"), ferror_last());
			record(r, impl_num(issue, "iid"), label, "error", "none", ferror_last());
			(*failed)++;
		}
	}
	error = 0;
cleanup:
	cJSON_Delete(issues);
	return error;
}

int impl_heal(impl_run *r)
{
	int failed = 0, error;

	if ((error = heal_list(r, LABEL_IN_PROGRESS, heal_in_progress, &failed)) < 0 ||
	    (error = heal_list(r, LABEL_VALIDATION, heal_validation, &failed)) < 0)
		return error;
	report_counter_set(r->rep, "heal_failures", failed);
	if (failed)
		return ferror_set(FACTORY_ERR, "%d issue%s could not be healed (see above)", failed,
		                  failed == 1 ? "" : "s");
	return 0;
}
