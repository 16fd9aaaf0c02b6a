/*
 * tell.c - telling the customers, each once: a note on every
 * customer-facing issue (its reporters and subscribers get GitLab's
 * notification), one email to each reporter who left an address with
 * intake (feedback.h's reporter marker in an internal note), one post to
 * the chat webhook.
 *
 * What was done is kept in GitLab: the announce marker in our note on the
 * issue, the mailed marker in an internal note on the reporter's issues
 * (written right after the mail server took the message, or refused it
 * for good), and the webhook flag in the release description. Only notes
 * written by the Factory's own user count for our markers, and only
 * internal notes for reporters (customers cannot write either).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "log.h"
#include "release_job.h"

#define MAX_NOTES 5000
#define MAX_REPORTERS 50

static int oom(void)
{
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

static int is_customer_issue(const rel_item *it)
{
	return it->issue && it->item.customer;
}

typedef struct {
	rel_run *r;
	rel_item *it;
	fbuf mailed; /* bodies of our notes with a mailed marker */
	int error;
} notes_walk;

static long author_of(const cJSON *note)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(note, "author");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
	return cJSON_IsNumber(id) ? (long)id->valuedouble : -1;
}

static int add_reporter(rel_item *it, const char *id, const char *email)
{
	rel_reporter *p;
	size_t i;

	for (i = 0; i < it->nreporters; i++)
		if (!strcmp(it->reporters[i].submission, id))
			return 0;
	if (it->nreporters >= MAX_REPORTERS)
		return 0;
	if (!(p = realloc(it->reporters, (it->nreporters + 1) * sizeof(*p))))
		return oom();
	it->reporters = p;
	p = &it->reporters[it->nreporters++];
	memset(p, 0, sizeof(*p));
	snprintf(p->submission, sizeof(p->submission), "%s", id);
	snprintf(p->email, sizeof(p->email), "%s", email);
	return 0;
}

static int note_cb(void *ctx, const cJSON *note)
{
	notes_walk *w = ctx;
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(note, "body");
	int system = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(note, "system"));
	int internal = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(note, "internal")) ||
	               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(note, "confidential"));
	int mine = author_of(note) == w->r->me;
	char id[FEEDBACK_ID_LEN + 1], email[256];
	int error;

	if (!cJSON_IsString(body) || system)
		return 0;
	if (mine && notes_has_marker(body->valuestring, "announce", w->r->version, NULL))
		w->it->announced = 1;
	if (mine && strstr(body->valuestring, "<!-- factory-release v1 mailed ")) {
		if ((error = fbuf_puts(&w->mailed, body->valuestring)) < 0 || (error = fbuf_putc(&w->mailed, '\n')) < 0)
			return error == FACTORY_ETOOBIG ? 0 : error;
	}
	if (internal && feedback_find_reporter(id, email, sizeof(email), body->valuestring) == 0 &&
	    (error = add_reporter(w->it, id, email)) < 0)
		return error;
	return 0;
}

int rel_read_issue_notes(rel_run *r)
{
	size_t i, j;
	int error;

	for (i = 0; i < r->nitems; i++) {
		rel_item *it = &r->items[i];
		notes_walk w = {r, it, {0}, 0};
		char path[96];

		if (!is_customer_issue(it))
			continue;
		fbuf_init(&w.mailed, (size_t)4 << 20);
		snprintf(path, sizeof(path), "projects/:id/issues/%ld/notes", it->item.iid);
		error = gitlab_list_each(r->gl, path, "sort=asc&order_by=created_at", NULL, MAX_NOTES, note_cb, &w);
		if (error < 0) {
			fbuf_release(&w.mailed);
			return error;
		}
		for (j = 0; j < it->nreporters; j++) {
			char extra[64];
			snprintf(extra, sizeof(extra), "submission=%s", it->reporters[j].submission);
			it->reporters[j].told = notes_has_marker(fbuf_cstr(&w.mailed), "mailed", r->version, extra);
		}
		fbuf_release(&w.mailed);
	}
	return 0;
}

/* ---- notes on issues ---- */

int rel_announce(rel_run *r)
{
	size_t i;
	long posted = 0, already = 0;
	int error;

	for (i = 0; i < r->nitems; i++) {
		rel_item *it = &r->items[i];
		cJSON *out = NULL;
		fbuf body;
		char what[64];

		if (!is_customer_issue(it))
			continue;
		if (it->announced) {
			already++;
			continue;
		}
		fbuf_init(&body, 64 * 1024);
		error = fbuf_printf(&body, "This is part of [%s %s](%s), released on %s.\n\n", r->project_name,
		                    r->version, r->release_url, r->date);
		if (!error)
			error = notes_marker(&body, "announce", r->version, NULL);
		if (!error)
			error = gitlab_note_create(&out, r->gl, "issues", it->item.iid, fbuf_cstr(&body), 0);
		fbuf_release(&body);
		cJSON_Delete(out);
		snprintf(what, sizeof(what), "announcing on #%ld", it->item.iid);
		if (error < 0) {
			if ((error = rel_step_failed(r, error, what)) < 0)
				return error;
			continue;
		}
		it->announced = 1;
		posted++;
		report_action(r->job->rep, "note.create", what + 14, "release %s announced", r->version);
		log_info("%s#%ld: release %s announced", r->job->dry_run ? "dry-run: " : "", it->item.iid, r->version);
	}
	report_counter_set(r->job->rep, "notes_posted", posted);
	if (already)
		log_info("%ld issue%s already announced", already, already == 1 ? "" : "s");
	return 0;
}

/* ---- email ---- */

/* The internal note that says the reporter was told (or could not be). */
static int mailed_note(rel_run *r, long iid, const char *submission, const char *text)
{
	fbuf body;
	cJSON *out = NULL;
	char extra[64];
	int error;

	fbuf_init(&body, 64 * 1024);
	snprintf(extra, sizeof(extra), "submission=%s", submission);
	error = fbuf_printf(&body, "%s\n\n", text);
	if (!error)
		error = notes_marker(&body, "mailed", r->version, extra);
	if (!error)
		error = gitlab_note_create(&out, r->gl, "issues", iid, fbuf_cstr(&body), 1);
	cJSON_Delete(out);
	fbuf_release(&body);
	return error;
}

/* Every (issue, submission) of one address: write the mailed note on each. */
static int record_mailed(rel_run *r, const char *email, const char *text)
{
	size_t i, j;
	int error, first = 1;

	for (i = 0; i < r->nitems; i++) {
		rel_item *it = &r->items[i];
		if (!is_customer_issue(it))
			continue;
		for (j = 0; j < it->nreporters; j++) {
			rel_reporter *rp = &it->reporters[j];
			if (strcasecmp(rp->email, email) != 0 || rp->told)
				continue;
			error = mailed_note(r, it->item.iid, rp->submission, text);
			if (error < 0) {
				if (first)
					log_error(
					        "#%ld: the email went out but could not be recorded: the next run may "
					        "send it again",
					        it->item.iid);
				return error;
			}
			rp->told = 1;
			first = 0;
		}
	}
	return 0;
}

int rel_email(rel_run *r)
{
	size_t i, j;
	long waiting = 0, sent = 0;
	int error;

	for (i = 0; i < r->nitems; i++) {
		for (j = 0; j < r->items[i].nreporters; j++)
			waiting += is_customer_issue(&r->items[i]) && !r->items[i].reporters[j].told;
	}
	if (!waiting)
		return 0;
	if (!r->mail) {
		log_info("%ld reporter%s left an address but email is off (smtp.url not set)", waiting,
		         waiting == 1 ? "" : "s");
		return 0;
	}
	for (i = 0; i < r->nitems; i++) {
		for (j = 0; j < r->items[i].nreporters; j++) {
			rel_reporter *rp = &r->items[i].reporters[j];
			const notes_item **mine = NULL;
			size_t nmine = 0, a, b;
			int told = 0;
			notes_meta m = {r->project_name, r->version, r->date, r->release_url};
			fbuf text, subject;
			char what[64];

			if (!is_customer_issue(&r->items[i]) || rp->told || rp->tried)
				continue;
			/* one try per address and run, whatever comes of it */
			for (a = 0; a < r->nitems; a++)
				for (b = 0; b < r->items[a].nreporters; b++)
					if (!strcasecmp(r->items[a].reporters[b].email, rp->email))
						r->items[a].reporters[b].tried = 1;
			/* everything this address reported in the release; told once for all of it */
			for (a = 0; a < r->nitems; a++)
				for (b = 0; b < r->items[a].nreporters; b++)
					if (is_customer_issue(&r->items[a]) &&
					    !strcasecmp(r->items[a].reporters[b].email, rp->email))
						told |= r->items[a].reporters[b].told;
			if (told)
				continue; /* an earlier run told this address (one of its submissions is marked) */
			if (!(mine = calloc(r->nitems ? r->nitems : 1, sizeof(const notes_item *))))
				return oom();
			for (a = 0; a < r->nitems; a++) {
				int hit = 0;
				for (b = 0; b < r->items[a].nreporters; b++)
					hit |= is_customer_issue(&r->items[a]) &&
					       !strcasecmp(r->items[a].reporters[b].email, rp->email);
				if (hit)
					mine[nmine++] = &r->items[a].item;
			}
			fbuf_init(&text, 256 * 1024);
			fbuf_init(&subject, 1024);
			error = notes_render_email(&text, &m, mine, nmine, r->sign);
			if (!error)
				error = fbuf_printf(&subject, "%s %s: what you reported is released", r->project_name,
				                    r->version);
			free(mine);
			snprintf(what, sizeof(what), "emailing the reporter of #%ld", r->items[i].item.iid);
			if (error < 0) {
				fbuf_release(&text);
				fbuf_release(&subject);
				return error;
			}
			if (r->job->dry_run) {
				log_info("dry-run: would email the reporter of #%ld about %zu change%s",
				         r->items[i].item.iid, nmine, nmine == 1 ? "" : "s");
				report_action(r->job->rep, "email", what + 26, "the reporter, about release %s",
				              r->version);
				for (a = 0; a < r->nitems; a++)
					for (b = 0; b < r->items[a].nreporters; b++)
						if (!strcasecmp(r->items[a].reporters[b].email, rp->email))
							r->items[a].reporters[b].told = 1;
				fbuf_release(&text);
				fbuf_release(&subject);
				continue;
			}
			error = smtp_send(r->mail, rp->email, fbuf_cstr(&subject), fbuf_cstr(&text));
			fbuf_release(&text);
			fbuf_release(&subject);
			if (error == 0) {
				sent++;
				report_action(r->job->rep, "email", what + 26, "the reporter, about release %s",
				              r->version);
				log_info("#%ld: the reporter was emailed about %s", r->items[i].item.iid, r->version);
				error = record_mailed(r, rp->email, "The reporter was emailed about this release.");
			} else if (error == FACTORY_EINVALID) {
				char msg[400];
				log_warn("#%ld: %s: the reporter cannot be emailed", r->items[i].item.iid,
				         ferror_last());
				snprintf(msg, sizeof(msg), "The reporter could not be emailed about this release: %s.",
				         ferror_last());
				error = record_mailed(r, rp->email, msg);
			} else if (error == FACTORY_EAUTH || error == FACTORY_ECONFIG) {
				/* every other email would fail the same way */
				return rel_step_failed(r, error, what);
			} else if (error < 0 && error != FACTORY_ENOMEM) {
				error = rel_step_failed(r, ferror_set(FACTORY_ERR, "%s", ferror_last()), what);
			}
			if (error < 0 && (error = rel_step_failed(r, error, what)) < 0)
				return error;
		}
	}
	report_counter_set(r->job->rep, "reporters_emailed", sent);
	return 0;
}

/* ---- the chat webhook ---- */

int rel_webhook(rel_run *r)
{
	notes_item *view = NULL;
	notes_meta m = {r->project_name, r->version, r->date, r->release_url};
	cJSON *payload = NULL;
	char *json = NULL;
	fbuf text;
	http_response resp;
	http_request req;
	const char *headers[] = {"Content-Type: application/json", NULL};
	size_t i;
	int error;

	if (!r->webhook_url || r->state.webhook)
		return 0;
	fbuf_init(&text, 256 * 1024);
	http_response_init(&resp);
	if (!(view = calloc(r->nitems ? r->nitems : 1, sizeof(*view)))) {
		error = oom();
		goto cleanup;
	}
	for (i = 0; i < r->nitems; i++)
		view[i] = r->items[i].item;
	if ((error = notes_render_chat(&text, &m, view, r->nitems)) < 0)
		goto cleanup;
	if (!(payload = cJSON_CreateObject()) || !cJSON_AddStringToObject(payload, "text", fbuf_cstr(&text)) ||
	    !(json = cJSON_PrintUnformatted(payload))) {
		error = oom();
		goto cleanup;
	}
	if (r->job->dry_run) {
		log_info("dry-run: would post the announcement to the chat webhook");
		report_action(r->job->rep, "webhook", "chat", "release %s announced", r->version);
		r->state.webhook = 1;
		error = 0;
		goto cleanup;
	}
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = r->webhook_url;
	req.headers = headers;
	req.body = json;
	req.body_len = strlen(json);
	error = http_do(&resp, r->http, &req);
	if (error == 0 && resp.status >= 200 && resp.status < 300) {
		r->state.webhook = 1;
		report_action(r->job->rep, "webhook", "chat", "release %s announced", r->version);
		log_info("release %s announced on the chat webhook", r->version);
		report_counter_set(r->job->rep, "webhook_posts", 1);
		goto cleanup;
	}
	if (error == 0 || error == FACTORY_EUPSTREAM)
		error = ferror_set(FACTORY_ERR, "the chat webhook answered %ld%s", resp.status,
		                   resp.status ? "" : " (no answer)");
	error = rel_step_failed(r, error, "posting to the chat webhook");
cleanup:
	free(json);
	free(view);
	cJSON_Delete(payload);
	http_response_release(&resp);
	fbuf_release(&text);
	return error;
}
