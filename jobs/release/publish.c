/*
 * publish.c - the release itself: its notes and description (with the
 * state marker), creating it on its tag, picking up a release an earlier
 * run began, the notes as a job artifact, CHANGELOG.md through a commit,
 * the verdict labels, and the state written back to the description.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "release_job.h"
#include "json.h"

#define CHANGELOG_MAX ((size_t)8 << 20)
#define DESCRIPTION_MAX ((size_t)1000000)

static int oom(void)
{
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

static int set_release_url(rel_run *r)
{
	fbuf u;
	int error;

	fbuf_init(&u, 8192);
	if ((error = fbuf_printf(&u, "%s/-/releases/", r->web_url)) < 0 || (error = http_escape(&u, r->tag)) < 0) {
		fbuf_release(&u);
		return error;
	}
	free(r->release_url);
	r->release_url = fbuf_detach(&u);
	return r->release_url ? 0 : oom();
}

static void meta(notes_meta *m, const rel_run *r)
{
	m->project = r->project_name;
	m->version = r->version;
	m->date = r->date;
	m->release_url = r->release_url;
}

static notes_item *items_view(const rel_run *r)
{
	notes_item *v = calloc(r->nitems ? r->nitems : 1, sizeof(*v));
	size_t i;

	for (i = 0; v && i < r->nitems; i++)
		v[i] = r->items[i].item; /* a shallow view: the items keep their strings */
	return v;
}

int rel_render(rel_run *r)
{
	notes_item *view = NULL;
	notes_meta m;
	fbuf desc;
	char iso[32];
	size_t i;
	int error;

	fbuf_init(&desc, DESCRIPTION_MAX);
	rel_format_time(iso, sizeof(iso), r->until);
	snprintf(r->date, sizeof(r->date), "%.10s", iso);
	if ((error = set_release_url(r)) < 0)
		goto cleanup;
	meta(&m, r);
	if (!(view = items_view(r))) {
		error = oom();
		goto cleanup;
	}
	fbuf_reset(&r->notes);
	if ((error = notes_render_markdown(&r->notes, &m, view, r->nitems)) < 0)
		goto cleanup;
	notes_state_release(&r->state);
	snprintf(r->state.version, sizeof(r->state.version), "%s", r->version);
	snprintf(r->state.until, sizeof(r->state.until), "%s", iso);
	for (i = 0; i < r->nitems; i++) {
		const notes_item *it = &r->items[i].item;
		notes_ref ref;

		memset(&ref, 0, sizeof(ref));
		ref.is_commit = it->is_commit;
		ref.iid = it->iid;
		memcpy(ref.sha, it->sha, sizeof(ref.sha));
		ref.customer = it->customer;
		if ((error = notes_state_add(&r->state, &ref)) < 0)
			goto cleanup;
	}
	if ((error = notes_state_put(&desc, fbuf_cstr(&r->notes), &r->state)) < 0) {
		if (error == FACTORY_ETOOBIG)
			ferror_set(error, "the release notes are over %zu bytes", DESCRIPTION_MAX);
		goto cleanup;
	}
	free(r->description);
	if (!(r->description = fbuf_detach(&desc)))
		error = oom();
cleanup:
	free(view);
	fbuf_release(&desc);
	return error;
}

/* A release with our tag exists: ours, unfinished (an answer that got
 * lost), or somebody else's. */
static int pick_up(rel_run *r)
{
	cJSON *rel = NULL;
	notes_state st;
	fbuf q;
	int error;

	notes_state_init(&st);
	fbuf_init(&q, 1024);
	if ((error = http_escape(&q, r->tag)) < 0 ||
	    (error = gitlab_request(&rel, r->gl, "GET", NULL, "projects/:id/releases/%s", fbuf_cstr(&q))) < 0)
		goto cleanup;
	error = notes_state_parse(&st, json_str(rel, "description") ? json_str(rel, "description") : "");
	if (error < 0 || strcmp(st.version, r->version) != 0 || st.done) {
		error = ferror_set(FACTORY_ECONFLICT,
		                   "release %s already exists and is not one this job left unfinished: "
		                   "give another --release-version",
		                   r->tag);
		goto cleanup;
	}
	log_info("release %s already exists, begun by an earlier run: finishing it", r->tag);
	free(r->description);
	if (!(r->description = strdup(json_str(rel, "description")))) {
		error = oom();
		goto cleanup;
	}
	notes_state_release(&r->state);
	r->state = st;
	notes_state_init(&st);
	r->resume = 1;
	error = 0;
cleanup:
	notes_state_release(&st);
	fbuf_release(&q);
	cJSON_Delete(rel);
	return error;
}

int rel_create(rel_run *r)
{
	cJSON *body = NULL, *made = NULL;
	char name[256];
	int error;

	snprintf(name, sizeof(name), "%s %s", r->project_name, r->version);
	if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "tag_name", r->tag) ||
	    !cJSON_AddStringToObject(body, "ref", r->ref_sha) || !cJSON_AddStringToObject(body, "name", name) ||
	    !cJSON_AddStringToObject(body, "description", r->description)) {
		error = oom();
		goto cleanup;
	}
	error = gitlab_request(&made, r->gl, "POST", body, "projects/:id/releases");
	if (error == FACTORY_ECONFLICT) {
		error = pick_up(r);
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	report_action(r->job->rep, "release.create", r->tag, "on %.12s, %zu changes", r->ref_sha, r->nitems);
	log_info("%srelease %s created on %.12s", r->job->dry_run ? "dry-run: " : "", r->tag, r->ref_sha);
cleanup:
	cJSON_Delete(body);
	cJSON_Delete(made);
	return error;
}

/* ---- resuming ---- */

static int load_issue(rel_run *r, const notes_ref *ref)
{
	cJSON *issue = NULL;
	rel_item *it;
	int error;

	error = gitlab_request(&issue, r->gl, "GET", NULL, "projects/:id/issues/%ld", ref->iid);
	if (error == FACTORY_ENOTFOUND) {
		log_warn("#%ld is in release %s but is gone: left out", ref->iid, r->tag);
		return 0;
	}
	if (error < 0)
		return error;
	if ((error = rel_add_item(&it, r)) < 0) {
		cJSON_Delete(issue);
		return error;
	}
	it->issue = issue;
	impact_assess_issue(&it->v, r->policy, issue, 1, NULL);
	it->item.iid = ref->iid;
	it->item.customer = ref->customer;
	it->item.group = it->v.group;
	it->item.confidential = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(issue, "confidential"));
	snprintf(it->v.reason, sizeof(it->v.reason), "as recorded in release %s", r->tag);
	if ((error = notes_item_set(&it->item.title, json_str(issue, "title"))) < 0 ||
	    (error = notes_item_set(&it->item.url, json_str(issue, "web_url"))) < 0)
		return error;
	return 0;
}

static int load_commit(rel_run *r, const notes_ref *ref)
{
	cJSON *c = NULL;
	rel_item *it;
	char cat[16] = "other";
	const char *msg;
	int error;

	error = gitlab_request(&c, r->gl, "GET", NULL, "projects/:id/repository/commits/%s", ref->sha);
	if (error == FACTORY_ENOTFOUND) {
		log_warn("commit %.8s is in release %s but is gone: left out", ref->sha, r->tag);
		return 0;
	}
	if (error < 0)
		return error;
	if ((error = rel_add_item(&it, r)) < 0)
		goto cleanup;
	notes_commit_category(cat, sizeof(cat), c);
	it->item.is_commit = 1;
	memcpy(it->item.sha, ref->sha, sizeof(it->item.sha));
	it->item.customer = ref->customer;
	it->item.group = notes_category_group(cat, &it->item.breaking);
	snprintf(it->category, sizeof(it->category), "%s", cat);
	msg = json_str(c, "title") ? json_str(c, "title") : json_str(c, "message");
	if ((error = notes_item_set(&it->item.title, msg ? msg : "")) < 0 ||
	    (error = notes_item_set(&it->item.url, json_str(c, "web_url"))) < 0)
		goto cleanup;
	if (it->item.title && strchr(it->item.title, '\n'))
		*strchr(it->item.title, '\n') = '\0';
cleanup:
	cJSON_Delete(c);
	return error;
}

int rel_load_resume(rel_run *r)
{
	size_t i;
	int error;

	rel_item_free_all(r);
	if (!r->version[0])
		snprintf(r->version, sizeof(r->version), "%s", r->state.version);
	if (!r->date[0]) {
		char iso[40];
		rel_format_time(iso, sizeof(iso), (long)time(NULL));
		snprintf(r->date, sizeof(r->date), "%.10s", iso);
	}
	if ((error = set_release_url(r)) < 0)
		return error;
	for (i = 0; i < r->state.nitems; i++) {
		const notes_ref *ref = &r->state.items[i];
		if ((error = ref->is_commit ? load_commit(r, ref) : load_issue(r, ref)) < 0)
			return error;
	}
	fbuf_reset(&r->notes);
	if ((error = notes_strip_markers(&r->notes, r->description)) < 0)
		return error;
	cJSON_AddStringToObject(report_data(r->job->rep), "version", r->version);
	cJSON_AddStringToObject(report_data(r->job->rep), "tag", r->tag);
	cJSON_AddBoolToObject(report_data(r->job->rep), "resumed", 1);
	log_info("release %s: %zu changes as recorded; %s", r->tag, r->nitems,
	         r->state.webhook ? "chat announcement already made" : "chat announcement not made yet");
	return 0;
}

/* ---- the artifact ---- */

static int mkdir_p(const char *dir)
{
	char path[4096];
	size_t i, n = strlen(dir);

	if (n >= sizeof(path))
		return ferror_set(FACTORY_ECONFIG, "report directory path too long");
	memcpy(path, dir, n + 1);
	for (i = 1; i <= n; i++) {
		if (path[i] == '/' || path[i] == '\0') {
			char c = path[i];
			path[i] = '\0';
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				return ferror_set(FACTORY_ERR, "cannot create %s: %s", path, strerror(errno));
			path[i] = c;
		}
	}
	return 0;
}

int rel_artifact(rel_run *r)
{
	char path[4200], tmp[4300];
	const char *dir = r->job->report_dir ? r->job->report_dir : "factory-report";
	FILE *f;
	int error;

	if ((error = mkdir_p(dir)) < 0)
		return error;
	snprintf(path, sizeof(path), "%s/release-notes.md", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	if (!(f = fopen(tmp, "w")))
		return ferror_set(FACTORY_ERR, "cannot write %s: %s", tmp, strerror(errno));
	if (fwrite(r->notes.ptr ? r->notes.ptr : "", 1, r->notes.len, f) != r->notes.len || fclose(f) != 0) {
		unlink(tmp);
		return ferror_set(FACTORY_ERR, "cannot write %s", path);
	}
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return ferror_set(FACTORY_ERR, "cannot write %s: %s", path, strerror(errno));
	}
	cJSON_AddStringToObject(report_data(r->job->rep), "notes_file", path);
	report_markdown(r->job->rep, "\n%s\n", fbuf_cstr(&r->notes));
	log_info("release notes written to %s", path);
	return 0;
}

/* ---- CHANGELOG.md ---- */

static int sink_cb(void *ctx, const char *data, size_t len)
{
	return fbuf_put(ctx, data, len);
}

/* The file with our section put in: after a leading "# Title" block, else
 * at the top. */
static int changelog_text(fbuf *out, const rel_run *r, const char *old)
{
	const char *rest = old ? old : "";
	int error = 0;

	if (!strncmp(rest, "# ", 2)) {
		const char *nl = strchr(rest, '\n');
		size_t n = nl ? (size_t)(nl - rest) + 1 : strlen(rest);
		error = fbuf_put(out, rest, n);
		rest += n;
		while (*rest == '\n')
			rest++;
	} else if (!old || !*old) {
		error = fbuf_puts(out, "# Changelog\n");
	}
	if (!error)
		error = fbuf_putc(out, '\n');
	if (!error)
		error = notes_marker(out, "changelog", r->version, NULL);
	if (!error)
		error = fbuf_printf(out, "\n%s", fbuf_cstr(&r->notes));
	if (!error && *rest)
		error = fbuf_printf(out, "\n%s", rest);
	return error;
}

int rel_changelog(rel_run *r)
{
	fbuf old, q, b, text, msg;
	cJSON *body = NULL, *actions, *action, *made = NULL;
	int error, exists = 1;

	if (!r->changelog)
		return 0;
	fbuf_init(&old, CHANGELOG_MAX);
	fbuf_init(&q, 8192);
	fbuf_init(&b, 8192);
	fbuf_init(&text, CHANGELOG_MAX + ((size_t)2 << 20));
	fbuf_init(&msg, 1024);
	if ((error = http_escape(&q, r->changelog_file)) < 0 || (error = http_escape(&b, r->branch)) < 0)
		goto cleanup;
	error = gitlab_get_raw(r->gl, sink_cb, &old, "projects/:id/repository/files/%s/raw?ref=%s", fbuf_cstr(&q),
	                       fbuf_cstr(&b));
	if (error == FACTORY_ENOTFOUND) {
		exists = 0;
		fbuf_reset(&old);
	} else if (error == FACTORY_ETOOBIG) {
		error = rel_step_failed(
		        r, ferror_set(FACTORY_ETOOBIG, "%s is over %zu bytes", r->changelog_file, CHANGELOG_MAX),
		        "updating the changelog");
		goto cleanup;
	} else if (error < 0) {
		error = rel_step_failed(r, error, "reading the changelog");
		goto cleanup;
	}
	if (notes_has_marker(fbuf_cstr(&old), "changelog", r->version, NULL)) {
		log_info("%s already has %s", r->changelog_file, r->version);
		error = 0;
		goto cleanup;
	}
	if ((error = changelog_text(&text, r, exists ? fbuf_cstr(&old) : NULL)) < 0 ||
	    (error = fbuf_printf(&msg, "Changelog for %s%s", r->version, r->changelog_skip_ci ? " [skip ci]" : "")) < 0)
		goto cleanup;
	if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "branch", r->branch) ||
	    !cJSON_AddStringToObject(body, "commit_message", fbuf_cstr(&msg)) ||
	    !(actions = cJSON_AddArrayToObject(body, "actions")) || !(action = cJSON_CreateObject())) {
		error = oom();
		goto cleanup;
	}
	cJSON_AddItemToArray(actions, action);
	if (!cJSON_AddStringToObject(action, "action", exists ? "update" : "create") ||
	    !cJSON_AddStringToObject(action, "file_path", r->changelog_file) ||
	    !cJSON_AddStringToObject(action, "content", fbuf_cstr(&text))) {
		error = oom();
		goto cleanup;
	}
	error = gitlab_request(&made, r->gl, "POST", body, "projects/:id/repository/commits");
	if (error == FACTORY_EAUTH)
		error = ferror_set(FACTORY_EAUTH,
				   "%s (if %s is protected: let the token push to it, set release.branch, or set "
				   "release.changelog to false)",
				   ferror_last(), r->branch);
	if (error < 0) {
		error = rel_step_failed(r, error, "committing the changelog");
		goto cleanup;
	}
	report_action(r->job->rep, "commit", r->changelog_file, "%s %s on %s", exists ? "updated for" : "created with",
	              r->version, r->branch);
	log_info("%s%s %s on %s", r->job->dry_run ? "dry-run: " : "", r->changelog_file, exists ? "updated" : "created",
	         r->branch);
cleanup:
	cJSON_Delete(body);
	cJSON_Delete(made);
	fbuf_release(&old);
	fbuf_release(&q);
	fbuf_release(&b);
	fbuf_release(&text);
	fbuf_release(&msg);
	return error;
}

/* ---- labels ---- */

static int has_label(const cJSON *issue, const char *name)
{
	const cJSON *l;

	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels"))
	{
		if (cJSON_IsString(l) && !strcmp(l->valuestring, name))
			return 1;
	}
	return 0;
}

int rel_labels(rel_run *r)
{
	size_t i;
	int error;

	for (i = 0; i < r->nitems; i++) {
		rel_item *it = &r->items[i];
		const char *want = it->item.customer ? LABEL_RELEASE_CUSTOMER : LABEL_RELEASE_INTERNAL;
		const char *other = it->item.customer ? LABEL_RELEASE_INTERNAL : LABEL_RELEASE_CUSTOMER;
		cJSON *out = NULL;
		char what[64];

		if (!it->issue || (has_label(it->issue, want) && !has_label(it->issue, other)))
			continue;
		error = gitlab_issue_move_labels(&out, r->gl, it->item.iid, want,
		                                 has_label(it->issue, other) ? other : NULL);
		cJSON_Delete(out);
		snprintf(what, sizeof(what), "labelling #%ld", it->item.iid);
		if (error < 0) {
			if ((error = rel_step_failed(r, error, what)) < 0)
				return error;
			continue;
		}
		report_action(r->job->rep, "issue.label", what + 10, "%s", want);
		log_info("%s#%ld labelled %s", r->job->dry_run ? "dry-run: " : "", it->item.iid, want);
	}
	return 0;
}

/* ---- the state ---- */

int rel_update_state(rel_run *r)
{
	fbuf desc, q;
	cJSON *body = NULL, *out = NULL;
	int error;

	fbuf_init(&desc, DESCRIPTION_MAX + 4096);
	fbuf_init(&q, 1024);
	if ((error = notes_state_put(&desc, r->description, &r->state)) < 0)
		goto cleanup;
	if (r->description && !strcmp(fbuf_cstr(&desc), r->description))
		goto cleanup; /* nothing new to record */
	if ((error = http_escape(&q, r->tag)) < 0)
		goto cleanup;
	if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "description", fbuf_cstr(&desc))) {
		error = oom();
		goto cleanup;
	}
	if ((error = gitlab_request(&out, r->gl, "PUT", body, "projects/:id/releases/%s", fbuf_cstr(&q))) < 0)
		goto cleanup;
	report_action(r->job->rep, "release.update", r->tag, "state %s%s", r->state.done ? "done" : "publishing",
	              r->state.webhook ? ", chat announcement made" : "");
	free(r->description);
	if (!(r->description = fbuf_detach(&desc)))
		error = oom();
cleanup:
	cJSON_Delete(body);
	cJSON_Delete(out);
	fbuf_release(&desc);
	fbuf_release(&q);
	return error;
}
