/*
 * collect.c - what changed since the last release: the project, the last
 * release (and whether an earlier run left it unfinished), the issues
 * closed since (GitLab cannot filter on closed_at: filtered here), the
 * merged merge requests that closed them, the new commits and those with a
 * Changelog trailer no issue covers, and which changes touched a customer
 * path.
 *
 * New commits are those reachable from the commit being tagged and not from
 * the last release's tag, among the commits of the last release.lookback_days
 * before the last release (GitLab's commit list filters by date; the set
 * difference makes it exact for commits in that window). A merge request's
 * commits are the ones its merge commit brought in (reachable from its
 * second parent, not its first); squash and fast-forward merges count their
 * head and squash commits.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "claim.h"
#include "error.h"
#include "log.h"
#include "release_job.h"
#include "json.h"

#define MAX_COMMITS 20000
#define MAX_MRS 5000
#define MAX_REFS 64
#define MAX_PARENTS 4

void rel_format_time(char *out, size_t len, long t)
{
	claim_format_time(out, len, t);
}

static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int oom(void)
{
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

int rel_project(rel_run *r)
{
	cJSON *p = NULL, *me = NULL;
	const char *def;
	int error;

	if ((error = gitlab_request(&p, r->gl, "GET", NULL, "projects/:id")) < 0)
		goto cleanup;
	if (!r->me) { /* else read already, for an earlier project of the group */
		if ((error = gitlab_request(&me, r->gl, "GET", NULL, "user")) < 0)
			goto cleanup;
		r->me = json_long(me, "id");
	}
	if (!(r->project_path = dup_str(json_str(p, "path_with_namespace"))) ||
	    !(r->project_name = dup_str(json_str(p, "name") ? json_str(p, "name") : json_str(p, "path_with_namespace"))) ||
	    !(r->web_url = dup_str(json_str(p, "web_url")))) {
		error = json_str(p, "web_url") ? oom()
		                             : ferror_set(FACTORY_EINVALID, "GET projects/:id: no web_url or path");
		goto cleanup;
	}
	def = json_str(p, "default_branch");
	if (def && !(r->default_branch = strdup(def))) {
		error = oom();
		goto cleanup;
	}
	def = r->default_branch;
	if (!r->branch || !*r->branch)
		r->branch = r->job->default_branch && *r->job->default_branch ? r->job->default_branch : def;
	if (!r->branch) {
		error = ferror_set(FACTORY_ECONFIG, "the project has no default branch: set release.branch");
		goto cleanup;
	}
	if (!r->ref || !*r->ref)
		r->ref = r->branch;
	error = 0;
cleanup:
	cJSON_Delete(p);
	cJSON_Delete(me);
	return error;
}

static int first_cb(void *ctx, const cJSON *item)
{
	cJSON **out = ctx;

	if (!(*out = cJSON_Duplicate(item, 1)))
		return oom();
	return 1;
}

static long release_time(const cJSON *rel)
{
	long t = claim_parse_time(json_str(rel, "released_at"));
	return t >= 0 ? t : claim_parse_time(json_str(rel, "created_at"));
}

/* The date of a time, "2026-11-27". */
static void day_of(char *out, size_t len, long t)
{
	char iso[40];

	rel_format_time(iso, sizeof(iso), t);
	snprintf(out, len, "%.10s", iso);
}

int rel_find_last(rel_run *r)
{
	cJSON *rel = NULL;
	const char *tag, *desc;
	int error;

	error = gitlab_list_each(r->gl, "projects/:id/releases", "order_by=released_at&sort=desc", NULL, 1, first_cb,
	                         &rel);
	if (error < 0)
		goto cleanup;
	if (!rel) {
		r->have_prev = 0;
		r->prev_cutoff = -1;
		if (r->since && *r->since) {
			char buf[64];
			snprintf(buf, sizeof(buf), strlen(r->since) == 10 ? "%sT00:00:00Z" : "%s", r->since);
			if ((r->prev_cutoff = claim_parse_time(buf)) < 0) {
				error = ferror_set(FACTORY_ECONFIG,
				                   "bad setting release.since=%s: expected a date or an "
				                   "ISO 8601 time",
				                   r->since);
				goto cleanup;
			}
		}
		log_info("no release yet: everything closed %s counts",
		         r->prev_cutoff >= 0 ? "since release.since" : "so far");
		error = 0;
		goto cleanup;
	}
	tag = json_str(rel, "tag_name");
	desc = json_str(rel, "description");
	if (!tag || !(r->prev_tag = strdup(tag))) {
		error = tag ? oom() : ferror_set(FACTORY_EINVALID, "GET releases: a release without tag_name");
		goto cleanup;
	}
	r->have_prev = 1;
	r->prev_semver = semver_parse(&r->prev_version, tag, r->tag_prefix) == 0;
	error = notes_state_parse(&r->state, desc ? desc : "");
	if (error == FACTORY_EINVALID) {
		error = ferror_set(FACTORY_EINVALID,
		                   "release %s: its factory-release marker does not parse (%s); fix or "
		                   "remove that line",
		                   tag, ferror_last());
		goto cleanup;
	}
	if (error == FACTORY_ENOTFOUND) {
		r->prev_cutoff = release_time(rel);
		log_info("last release %s (not made by the Factory): issues closed after %s count", tag,
		         json_str(rel, "released_at") ? json_str(rel, "released_at") : "?");
	} else if (error < 0) {
		goto cleanup;
	} else if (r->state.done) {
		r->prev_cutoff = claim_parse_time(r->state.until);
		log_info("last release %s: issues closed after %s count", tag, r->state.until);
	} else {
		/* an earlier run began this release and did not finish: finish it */
		r->resume = 1;
		snprintf(r->version, sizeof(r->version), "%s", r->state.version);
		snprintf(r->tag, sizeof(r->tag), "%s", tag);
		day_of(r->date, sizeof(r->date), release_time(rel));
		if (!(r->description = strdup(desc ? desc : ""))) {
			error = oom();
			goto cleanup;
		}
		log_info("release %s was begun by an earlier run and is not finished: finishing it", tag);
	}
	if (r->prev_cutoff < 0 && !r->resume) {
		error = ferror_set(FACTORY_EINVALID, "release %s: cannot read when it was made", tag);
		goto cleanup;
	}
	error = 0;
cleanup:
	cJSON_Delete(rel);
	return error;
}

/* ---- issues ---- */

static int issue_cb(void *ctx, const cJSON *issue)
{
	rel_run *r = ctx;
	long closed = claim_parse_time(json_str(issue, "closed_at"));
	rel_item *it;
	int error;

	if (closed < 0 || closed > r->until || (r->prev_cutoff >= 0 && closed <= r->prev_cutoff))
		return 0;
	if (!strcmp(json_str(issue, "state") ? json_str(issue, "state") : "", "opened"))
		return 0;
	if ((error = rel_add_item(&it, r)) < 0)
		return error;
	if (!(it->issue = cJSON_Duplicate(issue, 1)))
		return oom();
	it->item.iid = json_long(issue, "iid");
	it->item.confidential = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(issue, "confidential"));
	if ((error = notes_item_set(&it->item.title, json_str(issue, "title"))) < 0 ||
	    (error = notes_item_set(&it->item.url, json_str(issue, "web_url"))) < 0)
		return error;
	return 0;
}

static rel_item *issue_item(rel_run *r, long iid)
{
	size_t i;

	for (i = 0; i < r->nitems; i++)
		if (!r->items[i].item.is_commit && r->items[i].item.iid == iid)
			return &r->items[i];
	return NULL;
}

/* ---- commits ---- */

static int cmp_commit(const void *a, const void *b)
{
	return strcmp(((const rel_commit *)a)->sha, ((const rel_commit *)b)->sha);
}

const rel_commit *rel_commit_find(const rel_run *r, const char *sha)
{
	rel_commit key;

	if (!sha || strlen(sha) != REL_SHA_LEN || !r->by_sha)
		return NULL;
	memset(&key, 0, sizeof(key));
	memcpy(key.sha, sha, REL_SHA_LEN + 1);
	return bsearch(&key, r->by_sha, r->ncommits, sizeof(key), cmp_commit);
}

static long commit_index(const rel_run *r, const char *sha)
{
	const rel_commit *c = rel_commit_find(r, sha);
	return c ? (long)(c - r->by_sha) : -1;
}

/* The commits of `ref` since `since` (0: all), as a new array. */
static int list_commits(cJSON **out, rel_run *r, const char *ref, long since, const char *path)
{
	fbuf q;
	char iso[40];
	int error;

	fbuf_init(&q, 8192);
	error = fbuf_puts(&q, "ref_name=");
	if (!error)
		error = http_escape(&q, ref);
	if (!error && since > 0) {
		rel_format_time(iso, sizeof(iso), since);
		if (!(error = fbuf_puts(&q, "&since=")))
			error = http_escape(&q, iso);
	}
	if (!error && path) {
		if (!(error = fbuf_puts(&q, "&path=")))
			error = http_escape(&q, path);
	}
	if (!error)
		error = gitlab_list_all(out, r->gl, "projects/:id/repository/commits", fbuf_cstr(&q), MAX_COMMITS);
	fbuf_release(&q);
	if (!error && cJSON_GetArraySize(*out) >= MAX_COMMITS)
		log_warn("more than %d commits in the window: only the newest %d are read", MAX_COMMITS, MAX_COMMITS);
	return error;
}

/* The sha strings of an array of commits, sorted, for set difference. */
static int sorted_shas(rel_commit **out, size_t *n, const cJSON *list)
{
	const cJSON *c;
	size_t k = 0, cap = (size_t)cJSON_GetArraySize(list);

	*out = NULL;
	*n = 0;
	if (!cap)
		return 0;
	if (!(*out = calloc(cap, sizeof(**out))))
		return oom();
	cJSON_ArrayForEach(c, list)
	{
		const char *id = json_str(c, "id");
		if (!id || strlen(id) != REL_SHA_LEN)
			continue;
		memcpy((*out)[k].sha, id, REL_SHA_LEN + 1);
		(*out)[k].commit = c;
		k++;
	}
	qsort(*out, k, sizeof(**out), cmp_commit);
	*n = k;
	return 0;
}

static int new_commits(rel_run *r)
{
	cJSON *all = NULL, *old = NULL, *kept = NULL;
	rel_commit *olds = NULL;
	size_t nold = 0;
	long since = r->have_prev ? r->prev_cutoff - r->lookback_days * 86400L : 0;
	int error, n, i;

	if ((error = list_commits(&all, r, r->ref_sha, since, NULL)) < 0)
		goto cleanup;
	if (r->have_prev) {
		if ((error = list_commits(&old, r, r->prev_tag, since, NULL)) < 0)
			goto cleanup;
		if ((error = sorted_shas(&olds, &nold, old)) < 0)
			goto cleanup;
	}
	if (!(kept = cJSON_CreateArray())) {
		error = oom();
		goto cleanup;
	}
	n = cJSON_GetArraySize(all);
	for (i = 0; i < n; i++) {
		cJSON *c = cJSON_GetArrayItem(all, i);
		const char *id = json_str(c, "id");
		rel_commit key;

		if (!id || strlen(id) != REL_SHA_LEN)
			continue;
		memset(&key, 0, sizeof(key));
		memcpy(key.sha, id, REL_SHA_LEN + 1);
		if (olds && bsearch(&key, olds, nold, sizeof(key), cmp_commit))
			continue;
		cJSON_AddItemReferenceToArray(kept, c);
	}
	/* keep the commits themselves: detach what is kept from `all` */
	r->commits = cJSON_Duplicate(kept, 1);
	if (!r->commits) {
		error = oom();
		goto cleanup;
	}
	error = sorted_shas(&r->by_sha, &r->ncommits, r->commits);
cleanup:
	cJSON_Delete(kept);
	cJSON_Delete(all);
	cJSON_Delete(old);
	free(olds);
	return error;
}

/* Parent indices of commit `i` within the new commits. */
static int parents_of(long *out, const rel_run *r, size_t i)
{
	const cJSON *ps = cJSON_GetObjectItemCaseSensitive(r->by_sha[i].commit, "parent_ids"), *p;
	int n = 0;

	cJSON_ArrayForEach(p, ps)
	{
		long k;
		if (n >= MAX_PARENTS || !cJSON_IsString(p))
			break;
		k = commit_index(r, p->valuestring);
		out[n++] = k;
	}
	return n;
}

/* Walk from `start` through parents within the new commits, marking `mark`
 * with `val` where it is 0; stop at commits marked otherwise. */
static int walk(const rel_run *r, unsigned char *mark, long start, unsigned char val)
{
	long *stack, sp = 0;

	if (start < 0 || mark[start])
		return 0;
	if (!(stack = malloc(r->ncommits * sizeof(*stack))))
		return oom();
	mark[start] = val;
	stack[sp++] = start;
	while (sp > 0) {
		long cur = stack[--sp], ps[MAX_PARENTS];
		int np = parents_of(ps, r, (size_t)cur), j;

		for (j = 0; j < np; j++) {
			if (ps[j] >= 0 && !mark[ps[j]]) {
				mark[ps[j]] = val;
				stack[sp++] = ps[j];
			}
		}
	}
	free(stack);
	return 0;
}

/*
 * Mark (with 2) the new commits merge request `mr` brought in: what its
 * merge commit's second parent reaches and its first does not, plus its
 * merge, squash and head commits. `mark` is reset first.
 */
static int mr_commits(const rel_run *r, const cJSON *mr, unsigned char *mark)
{
	static const char *const keys[] = {"merge_commit_sha", "squash_commit_sha", "sha"};
	long m = commit_index(r, json_str(mr, "merge_commit_sha")), ps[MAX_PARENTS];
	size_t i;
	int error;

	if (!mark || !r->ncommits)
		return 0;
	memset(mark, 0, r->ncommits);
	if (m >= 0 && parents_of(ps, r, (size_t)m) >= 2 && ps[1] >= 0) {
		if ((error = walk(r, mark, ps[0], 1)) < 0 || (error = walk(r, mark, ps[1], 2)) < 0)
			return error;
	}
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		long k = commit_index(r, json_str(mr, keys[i]));
		if (k >= 0)
			mark[k] = 2;
	}
	return 0;
}

/* ---- merge requests, coverage, paths ---- */

static int link_mrs(rel_run *r, unsigned char *covered, unsigned char *scratch)
{
	fbuf q, text;
	char iso[40];
	const cJSON *mr;
	int error;

	fbuf_init(&q, 4096);
	fbuf_init(&text, (size_t)2 << 20);
	error = fbuf_puts(&q, "state=merged&order_by=updated_at&sort=asc&target_branch=");
	if (!error)
		error = http_escape(&q, r->branch);
	if (!error && r->prev_cutoff >= 0) {
		rel_format_time(iso, sizeof(iso), r->prev_cutoff - r->lookback_days * 86400L);
		if (!(error = fbuf_puts(&q, "&updated_after=")))
			error = http_escape(&q, iso);
	}
	if (!error)
		error = gitlab_list_all(&r->mrs, r->gl, "projects/:id/merge_requests", fbuf_cstr(&q), MAX_MRS);
	if (error < 0)
		goto cleanup;
	cJSON_ArrayForEach(mr, r->mrs)
	{
		long refs[MAX_REFS];
		size_t n, i, k;
		int linked = 0;

		fbuf_reset(&text);
		fbuf_printf(&text, "%s\n%s", json_str(mr, "title") ? json_str(mr, "title") : "",
		            json_str(mr, "description") ? json_str(mr, "description") : "");
		n = notes_issue_refs(refs, MAX_REFS, fbuf_cstr(&text), r->project_path, 1);
		for (i = 0; i < n; i++) {
			rel_item *it = issue_item(r, refs[i]);
			if (!it)
				continue;
			if ((error = notes_item_add_mr(&it->item, json_long(mr, "iid"), json_str(mr, "web_url"))) < 0)
				goto cleanup;
			it->has_mr = 1;
			linked = 1;
		}
		if (!linked || !r->ncommits || !scratch || !covered)
			continue;
		if ((error = mr_commits(r, mr, scratch)) < 0)
			goto cleanup;
		for (k = 0; k < r->ncommits; k++)
			if (scratch[k] == 2)
				covered[k] = 1;
	}
	error = 0;
cleanup:
	fbuf_release(&q);
	fbuf_release(&text);
	return error;
}

/* The first line of a commit message, for a title. */
static int set_title_line(char **field, const char *msg)
{
	size_t n = msg ? strcspn(msg, "\n") : 0;
	char *t = msg ? strndup(msg, n) : strdup("");
	int error;

	if (!t)
		return oom();
	error = notes_item_set(field, t);
	free(t);
	return error;
}

/* Commits with a Changelog trailer that no issue of the release covers. */
static int trailer_items(rel_run *r, const unsigned char *covered)
{
	int n = cJSON_GetArraySize(r->commits), i, error;

	for (i = n - 1; i >= 0; i--) { /* oldest first */
		const cJSON *c = cJSON_GetArrayItem(r->commits, i);
		const char *id = json_str(c, "id"), *msg = json_str(c, "message");
		char cat[16];
		long refs[MAX_REFS], k = commit_index(r, id);
		size_t nrefs, j;
		int mine = 0;
		rel_item *it;

		error = notes_commit_category(cat, sizeof(cat), c);
		if (error == FACTORY_ENOTFOUND)
			continue;
		if (error == FACTORY_EINVALID) {
			log_warn("commit %.8s: %s: left out", id ? id : "?", ferror_last());
			report_action(r->job->rep, "skip", id ? id : "?", "%s", ferror_last());
			continue;
		}
		if (error < 0)
			return error;
		if (k >= 0 && covered && covered[k])
			continue;
		nrefs = notes_issue_refs(refs, MAX_REFS, msg, r->project_path, 0);
		for (j = 0; j < nrefs && !mine; j++)
			mine = issue_item(r, refs[j]) != NULL;
		if (mine)
			continue;
		if ((error = rel_add_item(&it, r)) < 0)
			return error;
		it->item.is_commit = 1;
		snprintf(it->item.sha, sizeof(it->item.sha), "%s", id);
		if ((error = set_title_line(&it->item.title, msg)) < 0 ||
		    (error = notes_item_set(&it->item.url, json_str(c, "web_url"))) < 0 ||
		    (error = notes_item_set(&it->item.summary, NULL)) < 0)
			return error;
		snprintf(it->category, sizeof(it->category), "%s", cat);
	}
	return 0;
}

/* Which changes touched a customer path. */
static int customer_paths(rel_run *r, unsigned char *scratch)
{
	size_t np, p, i, k;
	const char *const *paths = impact_policy_paths(r->policy, &np);
	long since = r->have_prev ? r->prev_cutoff - r->lookback_days * 86400L : 0;
	unsigned char *touched = NULL;
	int error = 0;

	if (!np || !r->ncommits || !scratch)
		return 0;
	if (!(touched = calloc(r->ncommits, 1)))
		return oom();
	for (p = 0; p < np; p++) {
		cJSON *list = NULL;
		const cJSON *c;
		const cJSON *mr;

		memset(touched, 0, r->ncommits);
		if ((error = list_commits(&list, r, r->ref_sha, since, paths[p])) < 0)
			goto cleanup;
		cJSON_ArrayForEach(c, list)
		{
			long idx = commit_index(r, json_str(c, "id"));
			if (idx >= 0)
				touched[idx] = 1;
		}
		cJSON_Delete(list);
		/* commits with a trailer */
		for (i = 0; i < r->nitems; i++) {
			rel_item *it = &r->items[i];
			long idx = it->item.is_commit ? commit_index(r, it->item.sha) : -1;
			if (idx >= 0 && touched[idx] && !it->path[0])
				snprintf(it->path, sizeof(it->path), "%s", paths[p]);
		}
		/* issues: through their merge requests' commits */
		cJSON_ArrayForEach(mr, r->mrs)
		{
			long refs[MAX_REFS];
			size_t n, j;
			int hit = 0;
			fbuf text;

			fbuf_init(&text, (size_t)2 << 20);
			fbuf_printf(&text, "%s\n%s", json_str(mr, "title") ? json_str(mr, "title") : "",
			            json_str(mr, "description") ? json_str(mr, "description") : "");
			n = notes_issue_refs(refs, MAX_REFS, fbuf_cstr(&text), r->project_path, 1);
			fbuf_release(&text);
			for (j = 0; j < n && !hit; j++)
				hit = issue_item(r, refs[j]) != NULL;
			if (!hit)
				continue;
			if ((error = mr_commits(r, mr, scratch)) < 0)
				goto cleanup;
			hit = 0;
			for (k = 0; k < r->ncommits && !hit; k++)
				hit = scratch[k] == 2 && touched[k];
			if (!hit)
				continue;
			for (j = 0; j < n; j++) {
				rel_item *it = issue_item(r, refs[j]);
				if (it && !it->path[0])
					snprintf(it->path, sizeof(it->path), "%s", paths[p]);
			}
		}
		/* issues: through commits that close them directly */
		for (k = 0; k < r->ncommits; k++) {
			long refs[MAX_REFS];
			size_t n, j;

			if (!touched[k])
				continue;
			n = notes_issue_refs(refs, MAX_REFS, json_str(r->by_sha[k].commit, "message"), r->project_path,
			                     1);
			for (j = 0; j < n; j++) {
				rel_item *it = issue_item(r, refs[j]);
				if (it && !it->path[0])
					snprintf(it->path, sizeof(it->path), "%s", paths[p]);
			}
		}
	}
cleanup:
	free(touched);
	return error;
}

int rel_collect(rel_run *r)
{
	cJSON *head = NULL;
	fbuf q;
	char iso[40];
	unsigned char *covered = NULL, *scratch = NULL;
	size_t nissues;
	int error;

	fbuf_init(&q, 4096);
	/* a second back: what closes during this second belongs to the next release */
	r->until = (long)time(NULL) - 1;
	log_section_start("release_collect", "what changed", 1);
	if ((error = http_escape(&q, r->ref)) < 0 ||
	    (error = gitlab_request(&head, r->gl, "GET", NULL, "projects/:id/repository/commits/%s", fbuf_cstr(&q))) <
	            0)
		goto cleanup;
	if (!json_str(head, "id") || strlen(json_str(head, "id")) != REL_SHA_LEN) {
		error = ferror_set(FACTORY_EINVALID, "GET repository/commits/%s: no commit id", r->ref);
		goto cleanup;
	}
	snprintf(r->ref_sha, sizeof(r->ref_sha), "%s", json_str(head, "id"));

	fbuf_reset(&q);
	error = fbuf_puts(&q, "state=closed&order_by=updated_at&sort=asc");
	if (!error && r->prev_cutoff >= 0) {
		rel_format_time(iso, sizeof(iso), r->prev_cutoff);
		if (!(error = fbuf_puts(&q, "&updated_after=")))
			error = http_escape(&q, iso);
	}
	if (!error)
		error = gitlab_list_each(r->gl, "projects/:id/issues", fbuf_cstr(&q), NULL, 0, issue_cb, r);
	if (error < 0)
		goto cleanup;
	nissues = r->nitems;
	if ((error = new_commits(r)) < 0)
		goto cleanup;
	if (r->ncommits && (!(covered = calloc(r->ncommits, 1)) || !(scratch = calloc(r->ncommits, 1)))) {
		error = oom();
		goto cleanup;
	}
	if ((error = link_mrs(r, covered, scratch)) < 0 || (error = trailer_items(r, covered)) < 0 ||
	    (error = customer_paths(r, scratch)) < 0)
		goto cleanup;
	log_info("%s%s: %zu issue%s closed, %zu new commit%s, %zu with a Changelog trailer no issue covers",
	         r->have_prev ? "since " : "", r->have_prev ? r->prev_tag : "first release", nissues,
	         nissues == 1 ? "" : "s", r->ncommits, r->ncommits == 1 ? "" : "s", r->nitems - nissues);
	report_counter_set(r->job->rep, "issues_closed", (long)nissues);
	report_counter_set(r->job->rep, "commits_new", (long)r->ncommits);
	report_counter_set(r->job->rep, "merge_requests_merged", (long)cJSON_GetArraySize(r->mrs));
	error = 0;
cleanup:
	log_section_end("release_collect");
	cJSON_Delete(head);
	free(covered);
	free(scratch);
	fbuf_release(&q);
	return error;
}
