/*
 * optimise.c - optimise mode, when nothing is red:
 *
 *   clean-up      merged Factory branches deleted (GitLab's "merged", or a
 *                 merged MR whose head is still the branch's head); the
 *                 Factory's own MRs without activity for pipeline.stale_days
 *                 closed with a neutral note. Never a protected or default
 *                 branch, a branch outside pipeline.branch_prefix, a branch
 *                 with an open MR, a person's MR, or a branch implement holds
 *                 a live claim on (claim.h). At most pipeline.max_cleanups
 *                 writes per run.
 *   CI speed      the last pipeline.speed_pipelines pipelines of the default
 *                 branch: per job, mean duration and queue time; the slowest
 *                 jobs and what would help them, read from .gitlab-ci.yml
 *                 (cache, needs:, interruptible, rules:changes, parallel)
 *   dependencies  the manifests at the root (npm, Python, Go, Cargo, Ruby),
 *                 each entry checked against its registry's public JSON API
 *                 (URLs in pipeline.registry.*): deprecated packages, and
 *                 entries a major version behind unless Renovate is
 *                 configured (it does the bumps); then, on a clone of the
 *                 default branch read through deps.h (made when the tree
 *                 holds a manifest or lock file at the root or up to
 *                 DEPS_MANIFEST_DEPTH folders below it), unused entries and
 *                 bloat (declared twice, development tools at run time,
 *                 lighter replacements, lock file duplicates)
 *
 * What it finds is proposed as an issue labelled factory::ci-proposal with
 * a marker naming its kind; at most pipeline.max_open_proposals such issues
 * are open at a time, and one kind is never filed twice while open.
 *
 * Also the offline command `factory-pipeline deps [DIR]`: the same reading
 * of a local checkout, printed as JSON.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claim.h"
#include "deps.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "pipeline.h"
#include "untrusted.h"
#include "fs.h"

#define MANIFEST_MAX (1 << 20)
#define MAX_DEPS 400
#define MAX_JOBS_SEEN 2000

/* ---- helpers ---- */

typedef struct {
	cJSON *open_kinds;      /* kinds of open proposal issues */
	int open;
	long max_open;
	long stale_days;
	long speed_pipelines;
	long max_lookups;
	long lookups;
} opt_state;

static int proposals_open(opt_state *st, pl_run *r)
{
	cJSON *list = NULL, *it;
	int error;

	if (!(st->open_kinds = cJSON_CreateObject()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = gitlab_list_all(&list, r->gl, "projects/:id/issues",
				     "labels=" PIPELINE_LABEL_PROPOSAL "&state=opened", 500)) < 0)
		return error;
	cJSON_ArrayForEach(it, list) {
		cJSON *m = NULL;
		if (json_long(cJSON_GetObjectItemCaseSensitive(it, "author"), "id") != r->me)
			continue;
		pl_marker_read(&m, json_str(it, "description"), PIPELINE_MARKER_PROPOSAL);
		if (m && json_str(m, "kind"))
			cJSON_AddTrueToObject(st->open_kinds, json_str(m, "kind"));
		st->open++;
		cJSON_Delete(m);
	}
	cJSON_Delete(list);
	return 0;
}

/* File one proposal issue of `kind` unless one is open or the cap is reached. */
static int propose(opt_state *st, pl_run *r, const char *kind, const char *title, const char *body)
{
	cJSON *fields = NULL, *made = NULL, *m = NULL;
	fbuf text;
	int error;

	if (cJSON_GetObjectItemCaseSensitive(st->open_kinds, kind)) {
		log_info("optimise: a %s proposal is already open", kind);
		return 0;
	}
	if (st->open >= st->max_open) {
		log_info("optimise: %d proposals open (pipeline.max_open_proposals=%ld): %s waits", st->open, st->max_open,
			 kind);
		return 0;
	}
	if (r->issues >= r->max_issues)
		return 0;
	fbuf_init(&text, 512 << 10);
	if ((error = fbuf_puts(&text, body)) < 0)
		goto cleanup;
	if (!(m = cJSON_CreateObject()) || !cJSON_AddNumberToObject(m, "v", 1) || !cJSON_AddStringToObject(m, "kind", kind)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = pl_marker_write(&text, PIPELINE_MARKER_PROPOSAL, m)) < 0)
		goto cleanup;
	if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "title", title) ||
	    !cJSON_AddStringToObject(fields, "description", text.ptr) ||
	    !cJSON_AddStringToObject(fields, "labels", PIPELINE_LABEL_PROPOSAL)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = gitlab_issue_create(&made, r->gl, fields)) < 0)
		goto cleanup;
	r->issues++;
	st->open++;
	cJSON_AddTrueToObject(st->open_kinds, kind);
	report_action(r->rep, "issue.optimise", title, "%s", kind);
	log_info("%soptimise: proposed %s", r->dry_run ? "dry-run: " : "", title);
cleanup:
	fbuf_release(&text);
	cJSON_Delete(fields);
	cJSON_Delete(made);
	cJSON_Delete(m);
	return error;
}

/* ---- clean-up ---- */

/* 1 when implement holds a live claim on `branch` ("<prefix><iid>-<slug>"):
 * the owner of the issue's claims (claim.h) names this branch. One owner
 * per branch: the clean-up never touches what implement is working on. */
static int claimed(int *out, pl_run *r, const char *branch)
{
	const char *p = branch + strlen(r->branch_prefix);
	cJSON *notes = NULL;
	claim_history h;
	const claim_entry *owner;
	char path[128];
	long iid = 0;
	int error;

	*out = 0;
	while (*p >= '0' && *p <= '9' && iid < 100000000)
		iid = iid * 10 + (*p++ - '0');
	if (!iid || *p != '-')
		return 0;
	snprintf(path, sizeof(path), "projects/:id/issues/%ld/notes", iid);
	if ((error = gitlab_list_all(&notes, r->gl, path, "sort=asc&order_by=created_at", 2000)) < 0)
		return error == FACTORY_ENOTFOUND ? 0 : error;
	memset(&h, 0, sizeof(h));
	if ((error = claim_history_read(&h, notes, r->me)) == 0) {
		owner = claim_owner(&h, r->now);
		*out = owner && !strcmp(owner->branch, branch);
	}
	claim_history_release(&h);
	cJSON_Delete(notes);
	return error == FACTORY_EINVALID ? 0 : error;
}

/* Is the branch merged? GitLab says so when its head is in the default
 * branch; else a merged merge request from it whose head is the branch's
 * head now (new commits after the merge keep the branch). */
static int branch_merged(int *out, pl_run *r, const cJSON *b, const char *name)
{
	cJSON *mrs = NULL, *it;
	fbuf q;
	const char *head = json_str(cJSON_GetObjectItemCaseSensitive(b, "commit"), "id");
	int error;

	*out = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "merged"));
	if (*out || !head)
		return 0;
	fbuf_init(&q, 2048);
	if ((error = fbuf_puts(&q, "state=merged&source_branch=")) < 0 || (error = http_escape(&q, name)) < 0)
		goto cleanup;
	if ((error = gitlab_list_all(&mrs, r->gl, "projects/:id/merge_requests", q.ptr, 20)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(it, mrs) {
		if (json_str(it, "sha") && !strcmp(json_str(it, "sha"), head))
			*out = 1;
	}
cleanup:
	fbuf_release(&q);
	cJSON_Delete(mrs);
	return error;
}

static int open_mr_from(const cJSON *open_mrs, const char *branch)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, open_mrs) {
		if (json_str(it, "source_branch") && !strcmp(json_str(it, "source_branch"), branch))
			return 1;
	}
	return 0;
}

static int cleanup_cap(pl_run *r, const char *what)
{
	if (r->cleanups < r->max_cleanups)
		return 0;
	log_info("optimise: %ld clean-ups this run (pipeline.max_cleanups): %s waits for the next run", r->cleanups, what);
	return 1;
}

/* Merged Factory branches deleted; the Factory's own merge requests idle
 * for pipeline.stale_days closed with a note. Never a protected or default
 * branch, a branch outside pipeline.branch_prefix, a branch with an open
 * merge request, a branch implement holds a claim on, or anyone else's
 * merge request. A second run finds nothing to do. */
static int cleanup_branches(opt_state *st, pl_run *r)
{
	cJSON *mrs = NULL, *branches = NULL, *it;
	size_t plen = strlen(r->branch_prefix);
	long cutoff = r->now - st->stale_days * 86400, deleted = 0, closed = 0;
	fbuf q;
	int error, flag;

	fbuf_init(&q, 1024);
	if ((error = gitlab_list_all(&mrs, r->gl, "projects/:id/merge_requests", "state=opened", 2000)) < 0)
		goto cleanup;
	/* stale Factory merge requests first: a closed one's branch may then go too */
	cJSON_ArrayForEach(it, mrs) {
		const char *src = json_str(it, "source_branch");
		long updated = pl_parse_time(json_str(it, "updated_at")), iid = json_long(it, "iid");
		cJSON *made = NULL, *fields = NULL;
		char note[512];
		if (!src || strncmp(src, r->branch_prefix, plen) != 0 || !updated || updated >= cutoff ||
		    json_long(cJSON_GetObjectItemCaseSensitive(it, "author"), "id") != r->me ||
		    (json_long(it, "source_project_id") && json_long(it, "source_project_id") != json_long(it, "project_id")))
			continue;
		if ((error = claimed(&flag, r, src)) < 0)
			goto cleanup;
		if (flag) {
			log_info("optimise: !%ld is idle but its branch %s is claimed by implement: left open", iid, src);
			continue;
		}
		if (cleanup_cap(r, "closing a stale merge request"))
			break;
		snprintf(note, sizeof(note),
			 "The Factory closed this merge request: it has had no activity for %ld days "
			 "(setting pipeline.stale_days). Its branch is kept; reopen the merge request to go on with it.",
			 st->stale_days);
		if ((error = gitlab_note_create(&made, r->gl, "merge_requests", iid, note, 0)) < 0)
			goto cleanup;
		cJSON_Delete(made);
		made = NULL;
		if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "state_event", "close")) {
			cJSON_Delete(fields);
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		error = gitlab_request(&made, r->gl, "PUT", fields, "projects/:id/merge_requests/%ld", iid);
		cJSON_Delete(fields);
		cJSON_Delete(made);
		if (error < 0)
			goto cleanup;
		r->cleanups++;
		closed++;
		report_action(r->rep, "mr.close_stale", src, "!%ld: no activity for %ld days", iid, st->stale_days);
		log_info("%soptimise: closed stale merge request !%ld (%s)", r->dry_run ? "dry-run: " : "", iid, src);
	}
	/* merged Factory branches that still exist */
	if ((error = fbuf_puts(&q, "search=^")) < 0 || (error = http_escape(&q, r->branch_prefix)) < 0)
		goto cleanup;
	if ((error = gitlab_list_all(&branches, r->gl, "projects/:id/repository/branches", q.ptr, 5000)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(it, branches) {
		const char *name = json_str(it, "name");
		if (!name || strncmp(name, r->branch_prefix, plen) != 0 ||
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "protected")) ||
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "default")) || !strcmp(name, r->default_branch) ||
		    open_mr_from(mrs, name))
			continue;
		if ((error = branch_merged(&flag, r, it, name)) < 0)
			goto cleanup;
		if (!flag)
			continue;
		if ((error = claimed(&flag, r, name)) < 0)
			goto cleanup;
		if (flag) {
			log_info("optimise: %s is merged but claimed by implement: kept", name);
			continue;
		}
		if (cleanup_cap(r, "deleting a merged branch"))
			break;
		if ((error = gitlab_branch_delete(r->gl, name)) < 0) {
			if (error != FACTORY_ENOTFOUND)
				goto cleanup;
			continue;
		}
		r->cleanups++;
		deleted++;
		report_action(r->rep, "branch.delete", name, "merged into %s", r->default_branch);
		log_info("%soptimise: deleted merged branch %s", r->dry_run ? "dry-run: " : "", name);
	}
	report_counter_set(r->rep, "branches_deleted", deleted);
	report_counter_set(r->rep, "stale_mrs_closed", closed);
	error = 0;
cleanup:
	fbuf_release(&q);
	cJSON_Delete(mrs);
	cJSON_Delete(branches);
	return error;
}

/* ---- CI speed ---- */

typedef struct {
	char name[128];
	double duration, queued;
	long n;
} job_stat;

/* Does the YAML job `name` (or the file, when name is NULL) say `word`? A
 * scan of the text, not a YAML parse: enough to suggest, never to change. */
static const char *job_block(const char *yaml, const char *name, size_t *len)
{
	char head[160];
	const char *p, *e;

	snprintf(head, sizeof(head), "\n%s:", name);
	if (strlen(yaml) >= strlen(head + 1) && memcmp(yaml, head + 1, strlen(head + 1)) == 0)
		p = yaml;
	else if ((p = strstr(yaml, head)))
		p++;
	else
		return NULL;
	for (e = strchr(p, '\n'); e && e[1] && (e[1] == ' ' || e[1] == '\t' || e[1] == '\n' || e[1] == '#');
	     e = strchr(e + 1, '\n'))
		;
	*len = e ? (size_t)(e - p) : strlen(p);
	return p;
}

static int has_word(const char *block, size_t len, const char *word)
{
	return block && memmem(block, len, word, strlen(word)) != NULL;
}

static int ci_speed(opt_state *st, pl_run *r)
{
	cJSON *pls = NULL, *pl, *yaml_file = NULL;
	job_stat *stats = NULL;
	size_t nstats = 0, i, j;
	fbuf body, q, yaml;
	char query[512], path[128];
	int error, suggestions = 0;

	fbuf_init(&body, 256 << 10);
	fbuf_init(&q, 1024);
	fbuf_init(&yaml, MANIFEST_MAX);
	if ((error = http_escape(&q, r->default_branch)) < 0)
		goto cleanup;
	snprintf(query, sizeof(query), "ref=%s&status=success&order_by=id&sort=desc", q.ptr);
	if ((error = gitlab_list_all(&pls, r->gl, "projects/:id/pipelines", query, (size_t)st->speed_pipelines)) < 0)
		goto cleanup;
	if (cJSON_GetArraySize(pls) < 2) {
		log_info("optimise: fewer than 2 green pipelines on %s: no CI speed figures yet", r->default_branch);
		error = 0;
		goto cleanup;
	}
	if (!(stats = calloc(MAX_JOBS_SEEN, sizeof(*stats)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	cJSON_ArrayForEach(pl, pls) {
		cJSON *jobs = NULL, *job;
		snprintf(path, sizeof(path), "projects/:id/pipelines/%ld/jobs", json_long(pl, "id"));
		if ((error = gitlab_list_all(&jobs, r->gl, path, NULL, 500)) < 0)
			goto cleanup;
		cJSON_ArrayForEach(job, jobs) {
			const char *name = json_str(job, "name");
			const cJSON *d = cJSON_GetObjectItemCaseSensitive(job, "duration");
			const cJSON *qd = cJSON_GetObjectItemCaseSensitive(job, "queued_duration");
			if (!name || !cJSON_IsNumber(d))
				continue;
			for (i = 0; i < nstats && strcmp(stats[i].name, name) != 0; i++)
				;
			if (i == nstats) {
				if (nstats == MAX_JOBS_SEEN)
					continue;
				snprintf(stats[nstats++].name, sizeof(stats[0].name), "%s", name);
			}
			stats[i].duration += d->valuedouble;
			stats[i].queued += cJSON_IsNumber(qd) ? qd->valuedouble : 0;
			stats[i].n++;
		}
		cJSON_Delete(jobs);
	}
	/* slowest first */
	for (i = 1; i < nstats; i++) {
		job_stat v = stats[i];
		for (j = i; j > 0 && stats[j - 1].duration / stats[j - 1].n < v.duration / v.n; j--)
			stats[j] = stats[j - 1];
		stats[j] = v;
	}
	{
		cJSON *f = NULL;
		if (gitlab_request(&f, r->gl, "GET", NULL, "projects/:id/repository/files/.gitlab-ci.yml?ref=%s", q.ptr) == 0 &&
		    json_str(f, "content")) {
			/* base64 content */
			const char *b64 = json_str(f, "content");
			static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
			unsigned acc = 0;
			int bits = 0;
			for (; *b64; b64++) {
				const char *pos = strchr(tbl, *b64);
				if (!pos || *b64 == '=')
					continue;
				acc = (acc << 6) | (unsigned)(pos - tbl);
				bits += 6;
				if (bits >= 8) {
					bits -= 8;
					if (fbuf_putc(&yaml, (char)((acc >> bits) & 0xff)) < 0)
						break;
				}
			}
		}
		cJSON_Delete(f);
		yaml_file = NULL;
	}
	if ((error = fbuf_printf(&body,
				 "**factory-pipeline looked at CI speed.** Mean job times over the last %d green "
				 "pipelines of `%s`, slowest first, and what would help:\n\n"
				 "| job | mean duration | mean queue | runs |\n|---|---|---|---|\n",
				 cJSON_GetArraySize(pls), r->default_branch)) < 0)
		goto cleanup;
	for (i = 0; i < nstats && i < 10; i++) {
		fbuf nm;
		fbuf_init(&nm, 512);
		untrusted_title(&nm, stats[i].name, strlen(stats[i].name), 100);
		error = fbuf_printf(&body, "| `%s` | %.0f s | %.0f s | %ld |\n", fbuf_cstr(&nm), stats[i].duration / stats[i].n,
				    stats[i].queued / stats[i].n, stats[i].n);
		fbuf_release(&nm);
		if (error < 0)
			goto cleanup;
	}
	if ((error = fbuf_puts(&body, "\nSuggestions:\n\n")) < 0)
		goto cleanup;
	{
		const char *y = fbuf_cstr(&yaml);
		size_t all = yaml.len;
		int uses_stages = has_word(y, all, "\nstages:") || !strncmp(y, "stages:", 7);
		if (yaml.len && uses_stages && !has_word(y, all, "needs:")) {
			suggestions++;
			fbuf_puts(&body, "- The pipeline runs stage by stage and no job says `needs:`: jobs that only need "
					 "one earlier job could start as soon as it ends (a DAG).\n");
		}
		if (yaml.len && !has_word(y, all, "interruptible:")) {
			suggestions++;
			fbuf_puts(&body, "- No job is `interruptible: true`: a newer pipeline on the same branch cannot cancel "
					 "the older one, so runners spend time on commits nobody waits for.\n");
		}
		if (yaml.len && !has_word(y, all, "changes:")) {
			suggestions++;
			fbuf_puts(&body, "- No `rules: changes:`: every job runs on every change, documentation included.\n");
		}
		for (i = 0; i < nstats && i < 5; i++) {
			size_t blen = 0;
			const char *b = yaml.len ? job_block(y, stats[i].name, &blen) : NULL;
			double mean = stats[i].duration / stats[i].n;
			if (!b)
				continue;
			if (!has_word(b, blen, "cache:") && !has_word(y, all, "\ncache:") &&
			    (has_word(b, blen, "npm ci") || has_word(b, blen, "npm install") || has_word(b, blen, "pip install") ||
			     has_word(b, blen, "bundle install") || has_word(b, blen, "go mod download") ||
			     has_word(b, blen, "cargo build") || has_word(b, blen, "yarn") || has_word(b, blen, "mvn ") ||
			     has_word(b, blen, "gradle"))) {
				suggestions++;
				fbuf_printf(&body, "- `%.100s` (%.0f s) installs dependencies without a `cache:`: cache them "
						   "keyed on the lock file.\n",
					    stats[i].name, mean);
			}
			if (mean >= 300 && !has_word(b, blen, "parallel:") &&
			    (has_word(b, blen, "test") || has_word(b, blen, "spec") || has_word(b, blen, "check"))) {
				suggestions++;
				fbuf_printf(&body, "- `%.100s` takes %.0f s: split its tests with `parallel:`.\n", stats[i].name,
					    mean);
			}
		}
		for (i = 0; i < nstats; i++)
			if (stats[i].queued / stats[i].n >= 120) {
				suggestions++;
				fbuf_printf(&body, "- `%.100s` waits %.0f s on average for a runner: more runner capacity, or "
						   "fewer jobs per pipeline.\n",
					    stats[i].name, stats[i].queued / stats[i].n);
				break;
			}
	}
	if (!suggestions) {
		log_info("optimise: CI speed: nothing to suggest");
		error = 0;
		goto cleanup;
	}
	error = propose(st, r, "ci-speed", "CI speed: what would make the pipeline faster", body.ptr);
cleanup:
	cJSON_Delete(pls);
	cJSON_Delete(yaml_file);
	free(stats);
	fbuf_release(&body);
	fbuf_release(&q);
	fbuf_release(&yaml);
	return error;
}

/* ---- dependencies ---- */

typedef struct {
	char eco[8];        /* npm, pypi, go, cargo, ruby */
	char name[200];
	char version[64];   /* as pinned ("" when none) */
} dep;

static int leading_major(const char *v)
{
	while (*v && !isdigit((unsigned char)*v))
		v++;
	return *v ? (int)strtol(v, NULL, 10) : -1;
}

static void add_dep(dep *ents, size_t *n, const char *eco, const char *name, size_t nlen, const char *ver, size_t vlen)
{
	dep *d;

	if (*n >= MAX_DEPS || !nlen || nlen >= sizeof(d->name))
		return;
	d = &ents[(*n)++];
	snprintf(d->eco, sizeof(d->eco), "%s", eco);
	snprintf(d->name, sizeof(d->name), "%.*s", (int)nlen, name);
	snprintf(d->version, sizeof(d->version), "%.*s", (int)(vlen < sizeof(d->version) ? vlen : sizeof(d->version) - 1),
		 ver ? ver : "");
}

static void parse_package_json(dep *ents, size_t *n, const char *text)
{
	cJSON *pkg = cJSON_Parse(text), *sec, *it;
	static const char *const sections[] = {"dependencies", "devDependencies", NULL};
	int s;

	for (s = 0; pkg && sections[s]; s++) {
		sec = cJSON_GetObjectItemCaseSensitive(pkg, sections[s]);
		cJSON_ArrayForEach(it, sec) {
			if (cJSON_IsString(it))
				add_dep(ents, n, "npm", it->string, strlen(it->string), it->valuestring, strlen(it->valuestring));
		}
	}
	cJSON_Delete(pkg);
}

static void parse_lines(dep *ents, size_t *n, const char *text, const char *eco)
{
	const char *line = text;

	while (line && *line) {
		const char *end = strchr(line, '\n'), *p = line, *ns, *ne, *vs = NULL, *ve = NULL;
		size_t len = end ? (size_t)(end - line) : strlen(line);
		while (p < line + len && (*p == ' ' || *p == '\t'))
			p++;
		if (!strcmp(eco, "pypi")) {
			/* name[extras] ==|>=|~= version */
			ns = p;
			while (p < line + len && (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
				p++;
			ne = p;
			if (ne > ns && *ns != '#' && *ns != '-') {
				const char *op = memmem(p, (size_t)(line + len - p), "==", 2);
				if (op) {
					vs = op + 2;
					for (ve = vs; ve < line + len && (isalnum((unsigned char)*ve) || *ve == '.'); ve++)
						;
				}
				add_dep(ents, n, eco, ns, (size_t)(ne - ns), vs, vs ? (size_t)(ve - vs) : 0);
			}
		} else if (!strcmp(eco, "go")) {
			/* "module vX.Y.Z" lines inside require ( ... ) or "require module vX" */
			if (!strncmp(p, "require ", 8))
				p += 8;
			ns = p;
			while (p < line + len && *p != ' ' && *p != '\t')
				p++;
			ne = p;
			while (p < line + len && (*p == ' ' || *p == '\t'))
				p++;
			if (ne > ns && memchr(ns, '.', (size_t)(ne - ns)) && p < line + len && *p == 'v') {
				vs = p;
				for (ve = vs; ve < line + len && *ve != ' ' && *ve != '/'; ve++)
					;
				add_dep(ents, n, eco, ns, (size_t)(ne - ns), vs, (size_t)(ve - vs));
			}
		} else if (!strcmp(eco, "ruby")) {
			/* gem 'name', 'version' */
			if (!strncmp(p, "gem ", 4)) {
				char q;
				p += 4;
				while (p < line + len && *p == ' ')
					p++;
				if (p < line + len && (*p == '\'' || *p == '"')) {
					q = *p++;
					ns = p;
					while (p < line + len && *p != q)
						p++;
					ne = p;
					add_dep(ents, n, eco, ns, (size_t)(ne - ns), NULL, 0);
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
}

static void parse_cargo(dep *ents, size_t *n, const char *text)
{
	const char *sec = strstr(text, "[dependencies]"), *line;

	if (!sec)
		return;
	for (line = strchr(sec, '\n'); line && *++line && *line != '[';) {
		const char *end = strchr(line, '\n'), *p = line, *ns, *ne, *q;
		size_t len = end ? (size_t)(end - line) : strlen(line);
		ns = p;
		while (p < line + len && (isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
			p++;
		ne = p;
		if (ne > ns && (q = memchr(p, '"', (size_t)(line + len - p)))) {
			const char *ve = memchr(q + 1, '"', (size_t)(line + len - q - 1));
			add_dep(ents, n, "cargo", ns, (size_t)(ne - ns), q + 1, ve ? (size_t)(ve - q - 1) : 0);
		}
		line = end;
	}
}

typedef struct {
	http_client *http;
	const char *npm, *pypi, *go, *crates, *rubygems;
} registries;

/* GET a registry's JSON; NULL when it failed (the reason is logged). */
static cJSON *registry_get(opt_state *st, registries *reg, const char *url)
{
	http_response res;
	http_request req;
	const char *const headers[] = {"Accept: application/json", NULL};
	cJSON *out = NULL;

	if (st->lookups >= st->max_lookups)
		return NULL;
	st->lookups++;
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url;
	req.headers = headers;
	http_response_init(&res);
	if (http_do(&res, reg->http, &req) == 0 && res.status == 200)
		out = cJSON_ParseWithLength(res.body.ptr ? res.body.ptr : "", res.body.len);
	else
		log_info("optimise: %s: %s", url, res.status ? "not found or refused" : ferror_last());
	http_response_release(&res);
	return out;
}

/* Check one dependency; append a line to `deprecated` or `outdated`. */
static void check_dep(opt_state *st, registries *reg, const dep *d, fbuf *deprecated, fbuf *outdated)
{
	fbuf name, url;
	cJSON *j = NULL;
	const char *latest = NULL, *why = NULL;

	fbuf_init(&name, 1024);
	fbuf_init(&url, 4096);
	if (!strcmp(d->eco, "go")) {
		/* the module proxy escapes capitals as !lower */
		const char *p;
		for (p = d->name; *p; p++) {
			if (isupper((unsigned char)*p)) {
				fbuf_putc(&name, '!');
				fbuf_putc(&name, (char)tolower((unsigned char)*p));
			} else {
				fbuf_putc(&name, *p);
			}
		}
	} else {
		http_escape(&name, d->name);
	}
	if (!strcmp(d->eco, "npm"))
		fbuf_printf(&url, "%s/%s", reg->npm, fbuf_cstr(&name));
	else if (!strcmp(d->eco, "pypi"))
		fbuf_printf(&url, "%s/pypi/%s/json", reg->pypi, fbuf_cstr(&name));
	else if (!strcmp(d->eco, "go"))
		fbuf_printf(&url, "%s/%s/@latest", reg->go, fbuf_cstr(&name));
	else if (!strcmp(d->eco, "cargo"))
		fbuf_printf(&url, "%s/api/v1/crates/%s", reg->crates, fbuf_cstr(&name));
	else
		fbuf_printf(&url, "%s/api/v1/gems/%s.json", reg->rubygems, fbuf_cstr(&name));
	j = registry_get(st, reg, fbuf_cstr(&url));
	if (!j)
		goto cleanup;
	if (!strcmp(d->eco, "npm")) {
		const cJSON *versions = cJSON_GetObjectItemCaseSensitive(j, "versions");
		latest = json_str(cJSON_GetObjectItemCaseSensitive(j, "dist-tags"), "latest");
		if (latest)
			why = json_str(cJSON_GetObjectItemCaseSensitive(versions, latest), "deprecated");
	} else if (!strcmp(d->eco, "pypi")) {
		const cJSON *info = cJSON_GetObjectItemCaseSensitive(j, "info");
		const cJSON *cls = cJSON_GetObjectItemCaseSensitive(info, "classifiers"), *c;
		latest = json_str(info, "version");
		cJSON_ArrayForEach(c, cls) {
			if (cJSON_IsString(c) && strstr(c->valuestring, "Development Status :: 7 - Inactive"))
				why = "marked inactive (Development Status :: 7 - Inactive)";
		}
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(info, "yanked")))
			why = "the latest release is yanked";
	} else if (!strcmp(d->eco, "go")) {
		latest = json_str(j, "Version");
		if (json_str(j, "Deprecated"))
			why = json_str(j, "Deprecated");
	} else if (!strcmp(d->eco, "cargo")) {
		const cJSON *crate = cJSON_GetObjectItemCaseSensitive(j, "crate");
		latest = json_str(crate, "max_stable_version") ? json_str(crate, "max_stable_version") : json_str(crate, "max_version");
	} else {
		latest = json_str(j, "version");
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "yanked")))
			why = "yanked";
	}
	if (why) {
		fbuf clean;
		fbuf_init(&clean, 2048);
		untrusted_title(&clean, why, strlen(why), 300);
		fbuf_printf(deprecated, "| %s | `%s` | %s |\n", d->eco, d->name, fbuf_cstr(&clean));
		fbuf_release(&clean);
	} else if (outdated && latest && d->version[0] && leading_major(latest) > leading_major(d->version) &&
		   leading_major(d->version) >= 0) {
		fbuf_printf(outdated, "| %s | `%s` | %s | %s |\n", d->eco, d->name, d->version, latest);
	}
cleanup:
	cJSON_Delete(j);
	fbuf_release(&name);
	fbuf_release(&url);
}

static int sink_buf(void *ctx, const char *data, size_t len)
{
	return fbuf_put((fbuf *)ctx, data, len) < 0;
}

/* A file of the default branch into `out`. */
static int fetch_file(fbuf *out, pl_run *r, const char *path)
{
	fbuf p, ref;
	int error;

	fbuf_reset(out);
	fbuf_init(&p, 1024);
	fbuf_init(&ref, 1024);
	http_escape(&p, path);
	http_escape(&ref, r->default_branch);
	error = gitlab_get_raw(r->gl, sink_buf, out, "projects/:id/repository/files/%s/raw?ref=%s", fbuf_cstr(&p),
			       fbuf_cstr(&ref));
	fbuf_release(&p);
	fbuf_release(&ref);
	return error;
}

/* ---- unused dependencies and bloat (deps.h) ---- */

#define WALK_FILE_MAX (1 << 20)

typedef struct {
	deps *d;
	size_t root_len;
	long files, skipped, max_files;
	long long bytes, max_bytes;
	int incomplete;
	fbuf content;
} walk_state;

static const char *const skip_dirs[] = {".git", "node_modules", "vendor", "target", "dist", ".venv", "venv",
					"__pycache__", ".tox", "bower_components", ".next", ".nuxt", "coverage",
					".mypy_cache", ".pytest_cache", ".cache", NULL};

/* Walk the clone: regular files only (a symbolic link is never followed:
 * it could point out of the repository, at the runner's files). */
static int walk_dir(walk_state *w, const char *dir, int depth)
{
	DIR *dh;
	struct dirent *de;
	int error = 0;

	if (depth > 40 || !(dh = opendir(dir)))
		return 0;
	while (!error && (de = readdir(dh))) {
		char path[4096];
		struct stat sb;
		size_t i;
		int skip = 0;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path) || lstat(path, &sb) < 0)
			continue;
		if (S_ISDIR(sb.st_mode)) {
			for (i = 0; skip_dirs[i]; i++)
				if (!strcmp(de->d_name, skip_dirs[i]))
					skip = 1;
			if (!skip)
				error = walk_dir(w, path, depth + 1);
			continue;
		}
		if (!S_ISREG(sb.st_mode) || !deps_file_kind(path + w->root_len + 1))
			continue;
		if (sb.st_size > WALK_FILE_MAX) {
			w->skipped++;
			continue;
		}
		if (w->files >= w->max_files || w->bytes + sb.st_size > w->max_bytes) {
			w->incomplete = 1;
			break;
		}
		{
			FILE *f = fopen(path, "rb");
			char chunk[65536];
			size_t n;
			if (!f)
				continue;
			fbuf_reset(&w->content);
			while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
				if (fbuf_put(&w->content, chunk, n) < 0)
					break;
			fclose(f);
		}
		w->files++;
		w->bytes += (long long)w->content.len;
		error = deps_add_file(w->d, path + w->root_len + 1, w->content.ptr ? w->content.ptr : "", w->content.len);
	}
	closedir(dh);
	return error;
}

/* pipeline.deps: {aliases: {dist: module | [modules]}, keep: [names],
 * lighter: {ecosystem: {name: replacement}}} from the settings file. */
static int deps_settings(deps *d, const fconfig *cfg)
{
	const cJSON *al = fconfig_yaml_path(cfg, "pipeline.deps.aliases");
	const cJSON *keep = fconfig_yaml_path(cfg, "pipeline.deps.keep");
	const cJSON *li = fconfig_yaml_path(cfg, "pipeline.deps.lighter");
	const cJSON *it, *m;
	int error = 0;

	cJSON_ArrayForEach(it, al) {
		if (cJSON_IsString(it) && it->string)
			error = deps_alias(d, it->string, it->valuestring);
		else if (it->string)
			cJSON_ArrayForEach(m, it) {
				if (cJSON_IsString(m) && error == 0)
					error = deps_alias(d, it->string, m->valuestring);
			}
		if (error < 0)
			return error;
	}
	cJSON_ArrayForEach(it, keep) {
		if (cJSON_IsString(it) && (error = deps_keep(d, it->valuestring)) < 0)
			return error;
	}
	cJSON_ArrayForEach(it, li) {
		cJSON_ArrayForEach(m, it) {
			if (it->string && m->string && cJSON_IsString(m) &&
			    (error = deps_lighter(d, it->string, m->string, m->valuestring)) < 0)
				return error;
		}
	}
	return 0;
}

static void md_cell(fbuf *out, const char *text, size_t max)
{
	fbuf c;
	size_t i;
	fbuf_init(&c, 4096);
	untrusted_title(&c, text ? text : "", text ? strlen(text) : 0, max);
	for (i = 0; i < c.len; i++)
		fbuf_putc(out, c.ptr[i] == '|' ? '/' : c.ptr[i] == '`' ? '\'' : c.ptr[i]);
	fbuf_release(&c);
}

/* Read the tree at `root` under the settings `cfg` into *out (deps.h's
 * findings, with "incomplete": true when a cap stopped the walk). */
static int scan_tree(cJSON **out, walk_state *w, const char *root, const fconfig *cfg)
{
	long max_mb;
	int error;

	*out = NULL;
	if ((error = fconfig_get_long(&w->max_files, cfg, "pipeline.deps.max_files", 50000, 1, 10000000)) < 0 ||
	    (error = fconfig_get_long(&max_mb, cfg, "pipeline.deps.max_mb", 256, 1, 65536)) < 0)
		return error;
	w->max_bytes = (long long)max_mb << 20;
	if ((error = deps_new(&w->d)) < 0 || (error = deps_settings(w->d, cfg)) < 0)
		return error;
	w->root_len = strlen(root);
	if ((error = walk_dir(w, root, 0)) < 0 || (error = deps_findings(out, w->d)) < 0)
		return error;
	if ((w->incomplete && !cJSON_AddTrueToObject(*out, "incomplete")) ||
	    !cJSON_AddNumberToObject(*out, "bytes", (double)w->bytes) ||
	    !cJSON_AddNumberToObject(*out, "skipped_large", (double)w->skipped))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (w->incomplete) {
		/* a partial reading cannot tell what is unused */
		cJSON_DeleteItemFromObjectCaseSensitive(*out, "unused");
		if (!cJSON_AddArrayToObject(*out, "unused"))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

/* factory-pipeline deps [DIR]: the same reading of a local checkout (the
 * current directory without DIR), the findings as one JSON object. */
int pipeline_cmd_deps(job_ctx *ctx)
{
	walk_state w;
	cJSON *f = NULL;
	char *text = NULL;
	const char *root = ctx->nargs > 1 ? ctx->args[1] : ".";
	struct stat sb;
	int error;

	memset(&w, 0, sizeof(w));
	fbuf_init(&w.content, WALK_FILE_MAX);
	if (ctx->nargs > 2) {
		error = ferror_set(FACTORY_ECONFIG, "deps takes one directory at most (see --help)");
		goto cleanup;
	}
	if (stat(root, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		error = ferror_set(FACTORY_ECONFIG, "deps: %s is not a directory", root);
		goto cleanup;
	}
	if ((error = scan_tree(&f, &w, root, ctx->cfg)) < 0)
		goto cleanup;
	if (!(text = cJSON_Print(f))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (printf("%s\n", text) < 0 || fflush(stdout) != 0) {
		error = ferror_set(FACTORY_ERR, "deps: cannot write standard output");
		goto cleanup;
	}
	error = 0;
cleanup:
	free(text);
	cJSON_Delete(f);
	deps_free(w.d);
	fbuf_release(&w.content);
	return error;
}

/* Clone the default branch, read its files, and write what is unused and
 * what is bloat as Markdown into `md` (empty when nothing). *found counts
 * the findings. */
static int usage(long *found, fbuf *md, pl_run *r)
{
	gitops_remote rem = {r->clone_url, "oauth2", r->token};
	fgit_repo *repo = NULL;
	walk_state w;
	cJSON *f = NULL, *it;
	char dir[4096], root[4200];
	int error;

	*found = 0;
	memset(&w, 0, sizeof(w));
	dir[0] = '\0';
	fbuf_init(&w.content, WALK_FILE_MAX);
	if ((size_t)snprintf(dir, sizeof(dir), "%s/factory-deps-XXXXXX", r->workdir) >= sizeof(dir) || !mkdtemp(dir)) {
		error = ferror_set(FACTORY_ERR, "cannot make a work directory in %s: %s", r->workdir, strerror(errno));
		dir[0] = '\0';
		goto cleanup;
	}
	snprintf(root, sizeof(root), "%s/repo", dir);
	if ((error = gitops_clone(&repo, &rem, root, r->default_branch)) < 0)
		goto cleanup;
	if ((error = scan_tree(&f, &w, root, r->job->cfg)) < 0)
		goto cleanup;
	log_info("optimise: dependency use: %ld files read (%lld bytes), %ld over 1 MiB skipped, %d declared entries",
		 w.files, w.bytes, w.skipped, (int)json_long(f, "declared"));
	report_counter_set(r->rep, "deps_files_read", w.files);
	if (!w.incomplete && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "unused"))) {
		fbuf_puts(md, "Declared but never used: no source file imports, requires or uses them, and no script or "
			      "configuration file names them (remove them, or list them in `pipeline.deps.keep`):\n\n"
			      "| ecosystem | package | manifest | section |\n|---|---|---|---|\n");
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(f, "unused")) {
			fbuf_printf(md, "| %s | `", json_str(it, "eco"));
			md_cell(md, json_str(it, "name"), 214);
			fbuf_puts(md, "` | ");
			md_cell(md, json_str(it, "manifest"), 200);
			fbuf_puts(md, " | ");
			md_cell(md, json_str(it, "section"), 60);
			fbuf_puts(md, " |\n");
			(*found)++;
		}
		fbuf_puts(md, "\n");
	} else if (w.incomplete) {
		log_warn("optimise: the repository is larger than pipeline.deps.max_files/max_mb: no entry is called unused");
	}
	if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "bloat"))) {
		fbuf_puts(md, "Bloat:\n\n| kind | ecosystem | package | manifest | what to do |\n|---|---|---|---|---|\n");
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(f, "bloat")) {
			const char *k = json_str(it, "kind");
			fbuf_printf(md, "| %s | %s | `", !strcmp(k, "twice") ? "declared twice"
						       : !strcmp(k, "dev_in_runtime") ? "development tool at run time"
						       : !strcmp(k, "lighter") ? "lighter replacement"
									       : "lock file duplicates",
				    json_str(it, "eco"));
			md_cell(md, json_str(it, "name"), 214);
			fbuf_puts(md, "` | ");
			md_cell(md, json_str(it, "manifest"), 200);
			fbuf_puts(md, " | ");
			md_cell(md, json_str(it, "detail"), 1000);
			fbuf_puts(md, " |\n");
			(*found)++;
		}
		fbuf_puts(md, "\n");
	}
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(f, "notes")) {
		if (cJSON_IsString(it))
			log_info("optimise: %s", it->valuestring);
	}
	report_counter_set(r->rep, "deps_unused", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "unused")));
	report_counter_set(r->rep, "deps_bloat", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "bloat")));
	error = 0;
cleanup:
	cJSON_Delete(f);
	deps_free(w.d);
	fgit_free(repo);
	fbuf_release(&w.content);
	if (dir[0])
		fs_remove_tree(dir);
	return error;
}

/* Whether the repository holds a manifest or a lock file below the root
 * (a monorepo): the recursive tree listing, at most SUB_LIST_MAX entries;
 * a listing cut by that cap counts as yes (the clone tells). Paths under
 * the directories the walk skips, and deeper than DEPS_MANIFEST_DEPTH
 * folders, do not count. */
#define SUB_LIST_MAX 5000
static int manifest_below(int *out, pl_run *r, const char *ref_query)
{
	cJSON *all = NULL, *it;
	char query[600];
	int error;

	*out = 0;
	snprintf(query, sizeof(query), "%s&recursive=true", ref_query);
	if ((error = gitlab_list_all(&all, r->gl, "projects/:id/repository/tree", query, SUB_LIST_MAX)) < 0)
		return error;
	if (cJSON_GetArraySize(all) >= SUB_LIST_MAX)
		*out = 1;
	cJSON_ArrayForEach(it, all) {
		const char *path = json_str(it, "path"), *c, *seg;
		int depth = 0, skip = 0, i;
		if (*out || !path || strcmp(json_str(it, "type") ? json_str(it, "type") : "blob", "blob") != 0)
			continue;
		for (seg = path; !skip && (c = strchr(seg, '/')); seg = c + 1, depth++)
			for (i = 0; skip_dirs[i]; i++)
				if ((size_t)(c - seg) == strlen(skip_dirs[i]) &&
				    !strncmp(seg, skip_dirs[i], (size_t)(c - seg)))
					skip = 1;
		if (!skip && depth <= DEPS_MANIFEST_DEPTH + 1 &&
		    (deps_file_kind(path) == 'm' || deps_file_kind(path) == 'l'))
			*out = 1;
	}
	cJSON_Delete(all);
	return 0;
}

static int dependencies(opt_state *st, pl_run *r)
{
	static const char *const renovate_files[] = {"renovate.json", "renovate.json5", ".renovaterc",
						     ".renovaterc.json", ".github/renovate.json", ".gitlab/renovate.json",
						     NULL};
	cJSON *tree = NULL, *it;
	dep *ents = NULL;
	size_t n = 0, i;
	registries reg;
	http_options ho;
	fbuf text, deprecated, outdated, body, q;
	int renovate = 0, error, manifests = 0, any_manifest = 0, check_use;
	long use_found = 0;
	fbuf use_md;
	char query[512];

	memset(&reg, 0, sizeof(reg));
	fbuf_init(&text, MANIFEST_MAX);
	fbuf_init(&deprecated, 256 << 10);
	fbuf_init(&outdated, 256 << 10);
	fbuf_init(&body, 512 << 10);
	fbuf_init(&q, 1024);
	fbuf_init(&use_md, 512 << 10);
	reg.npm = fconfig_get_str(r->trusted, "pipeline.registry.npm", "https://registry.npmjs.org");
	reg.pypi = fconfig_get_str(r->trusted, "pipeline.registry.pypi", "https://pypi.org");
	reg.go = fconfig_get_str(r->trusted, "pipeline.registry.go", "https://proxy.golang.org");
	reg.crates = fconfig_get_str(r->trusted, "pipeline.registry.crates", "https://crates.io");
	reg.rubygems = fconfig_get_str(r->trusted, "pipeline.registry.rubygems", "https://rubygems.org");
	if ((error = http_escape(&q, r->default_branch)) < 0)
		goto cleanup;
	snprintf(query, sizeof(query), "ref=%s", q.ptr);
	if ((error = gitlab_list_all(&tree, r->gl, "projects/:id/repository/tree", query, 2000)) < 0)
		goto cleanup;
	if (!(ents = calloc(MAX_DEPS, sizeof(*ents)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	cJSON_ArrayForEach(it, tree) {
		const char *name = json_str(it, "name");
		if (!name)
			continue;
		for (i = 0; renovate_files[i]; i++)
			if (!strcmp(name, renovate_files[i]))
				renovate = 1;
		if (deps_file_kind(name) == 'm' || deps_file_kind(name) == 'l')
			any_manifest = 1;
		if (strcmp(name, "package.json") != 0 && strcmp(name, "requirements.txt") != 0 &&
		    strcmp(name, "go.mod") != 0 && strcmp(name, "Cargo.toml") != 0 && strcmp(name, "Gemfile") != 0)
			continue;
		if (fetch_file(&text, r, name) < 0) {
			log_info("optimise: %s cannot be read: %s", name, ferror_last());
			continue;
		}
		manifests++;
		if (!strcmp(name, "package.json"))
			parse_package_json(ents, &n, fbuf_cstr(&text));
		else if (!strcmp(name, "requirements.txt"))
			parse_lines(ents, &n, fbuf_cstr(&text), "pypi");
		else if (!strcmp(name, "go.mod"))
			parse_lines(ents, &n, fbuf_cstr(&text), "go");
		else if (!strcmp(name, "Cargo.toml"))
			parse_cargo(ents, &n, fbuf_cstr(&text));
		else
			parse_lines(ents, &n, fbuf_cstr(&text), "ruby");
	}
	/* renovate settings in the repository's own config, too */
	if (!renovate && fetch_file(&text, r, ".gitlab-ci.yml") == 0 && strstr(fbuf_cstr(&text), "renovate"))
		renovate = 1;
	log_info("optimise: %d manifests, %zu dependencies%s", manifests, n, renovate ? ", Renovate configured" : "");
	if ((error = fconfig_get_bool(&check_use, r->job->cfg, "pipeline.deps.unused", 1)) < 0)
		goto cleanup;
	if (!any_manifest && check_use && (error = manifest_below(&any_manifest, r, query)) < 0) {
		if (error == FACTORY_ENOMEM || error == FACTORY_EAUTH)
			goto cleanup;
		log_warn("optimise: the repository tree cannot be listed: %s", ferror_last());
	}
	if (any_manifest && check_use && (error = usage(&use_found, &use_md, r)) < 0) {
		if (error == FACTORY_ENOMEM || error == FACTORY_EAUTH)
			goto cleanup;
		log_warn("optimise: dependency use not checked: %s", ferror_last());
	}
	http_options_init(&ho);
	ho.max_retries = 1;
	ho.timeout_ms = 20000;
	ho.max_response = 32 << 20;
	if ((error = http_client_new(&reg.http, &ho)) < 0)
		goto cleanup;
	for (i = 0; i < n; i++)
		check_dep(st, &reg, &ents[i], &deprecated, renovate ? NULL : &outdated);
	if (!deprecated.len && !outdated.len && !use_md.len) {
		log_info("optimise: dependencies: nothing deprecated%s, unused or bloated",
			 renovate ? "" : ", a major version behind");
		error = 0;
		goto cleanup;
	}
	fbuf_printf(&body, "**factory-pipeline checked the dependencies** (%zu entries in %d manifests, %ld registry "
			   "lookups).%s\n\n",
		    n, manifests, st->lookups,
		    renovate ? " Renovate is configured, so version bumps are left to it: only what it does not do "
			       "is listed." : "");
	if (deprecated.len)
		fbuf_printf(&body, "Deprecated or abandoned (replace them):\n\n| ecosystem | package | why |\n|---|---|---|\n%s\n",
			    deprecated.ptr);
	if (outdated.len)
		fbuf_printf(&body, "A major version behind:\n\n| ecosystem | package | pinned | latest |\n|---|---|---|---|\n%s\n",
			    outdated.ptr);
	if (use_md.len)
		fbuf_puts(&body, use_md.ptr);
	error = propose(st, r, "dependencies", "Dependencies: deprecated, outdated, unused or bloated entries", body.ptr);
cleanup:
	http_client_free(reg.http);
	cJSON_Delete(tree);
	free(ents);
	fbuf_release(&text);
	fbuf_release(&deprecated);
	fbuf_release(&outdated);
	fbuf_release(&use_md);
	fbuf_release(&body);
	fbuf_release(&q);
	return error;
}

int pl_optimise(pl_run *r)
{
	opt_state st;
	int error, b;

	memset(&st, 0, sizeof(st));
	if ((error = fconfig_get_long(&st.max_open, r->job->cfg, "pipeline.max_open_proposals", 1, 0, 50)) < 0 ||
	    (error = fconfig_get_long(&st.stale_days, r->job->cfg, "pipeline.stale_days", 14, 1, 3650)) < 0 ||
	    (error = fconfig_get_long(&st.speed_pipelines, r->job->cfg, "pipeline.speed_pipelines", 20, 2, 500)) < 0 ||
	    (error = fconfig_get_long(&st.max_lookups, r->job->cfg, "pipeline.max_lookups", 100, 0, 10000)) < 0)
		return error;
	log_info("optimise mode: nothing is red");
	if ((error = proposals_open(&st, r)) < 0)
		goto cleanup;
	if ((error = cleanup_branches(&st, r)) < 0)
		goto cleanup;
	if ((error = ci_speed(&st, r)) < 0)
		goto cleanup;
	if ((error = fconfig_get_bool(&b, r->job->cfg, "pipeline.dependencies", 1)) < 0)
		goto cleanup;
	if (b && (error = dependencies(&st, r)) < 0)
		goto cleanup;
	error = 0;
cleanup:
	cJSON_Delete(st.open_kinds);
	return error;
}
