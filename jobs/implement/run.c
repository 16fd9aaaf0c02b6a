/*
 * run.c - the main mode of factory-implement, top-down: read the settings,
 * learn who the Factory is in GitLab and where the project's code is, heal
 * what is In Progress and in Validation (phase 1), then take the first Up
 * Next issue to a merge request (phase 2).
 *
 * Settings (implement.* and git.*; FACTORY_IMPLEMENT_* in the environment):
 *   implement.heal (true), implement.take (true)   run phase 1 / phase 2
 *   implement.max_attempts (3)     agent attempts per issue before a person is asked
 *   implement.lease_s              how long a claim holds (default: agent.max_wall_s + 1800)
 *   implement.claim_settle_ms (1000)  wait between posting a claim and reading it back
 *   implement.claim_grace_s (300)  how long a claim may sit on an Up Next issue
 *   implement.candidates (10)      Up Next issues tried, in board order
 *   implement.merge (factory|people)  who merges once the pipeline passed
 *   implement.draft (false)        open merge requests as drafts
 *   implement.delivery (merge_request|direct)
 *   implement.direct_classes       labels whose issues may be pushed straight to the
 *                                  default branch when delivery is direct (e.g. type::chore)
 *   implement.check_command        the project's checks, run in the sandbox after the
 *                                  agent; a direct push needs them to pass
 *   implement.check_timeout_s (900)
 *   implement.checkout (auto|clone)   auto reuses the objects of a CI checkout
 *                                  ($CI_PROJECT_DIR) unless it is shallow
 *   implement.workdir ($TMPDIR or /tmp), implement.keep_workdir (false)
 *   implement.push_tries (3)       pushes refused as non-fast-forward are fetched,
 *                                  rebased and tried again up to this many times
 *   implement.changelog.<type>     the Changelog: trailer for an issue type
 *   implement.wip_limit (0: none)  issues In Progress at once in a project; a project's
 *                                  own .factory.yml may set it in a group scope
 *   implement.group_wip_limit (0: none)  issues In Progress at once in the group scope
 *   git.author_name (Factory), git.author_email (factory@<GitLab host>),
 *   git.committer_name, git.committer_email (default: the author)
 *
 * Parallel jobs (the component's implement_parallel, GitLab's parallel: N)
 * read CI_NODE_INDEX and CI_NODE_TOTAL: job k of N tries the Up Next
 * candidates k, k + N, k + 2N, ... first (then the others), so N jobs
 * started at once go for N different issues, and heals only the issues
 * whose id is k - 1 modulo N, so no two of them heal the same one. The
 * claim protocol (take.c) is what guarantees one job per issue; this only
 * keeps the jobs out of each other's way.
 *
 * Group scope (scope: group:<path>, common/scope.h): one job, or N
 * parallel ones, for every project of the group that takes part. The Up
 * Next, In Progress and Validation lists are read once for the whole group
 * (GET /groups/:id/issues, one request per 100 issues) instead of per
 * project; the client is switched to an issue's project before it is worked
 * on. Every setting is the group's (the job's own: the scheduling
 * project's variables and file), except implement.wip_limit, which a
 * project's .factory.yml may set for itself: a project's file is written
 * by that project's developers while the job runs with the scheduling
 * project's secrets, so nothing that reaches a credential, the model's
 * endpoint or the runner's files may come from it.
 *
 * Work-in-progress limits count the open issues labelled In Progress. They
 * are checked before a claim (a project or group at its limit is passed
 * over) and again after the labels moved: a job that then finds more
 * issues In Progress than the limit allows gives its issue back to Up Next
 * (an up_next event, not counted as an attempt). Of jobs that race past a
 * limit, the last to move its labels always sees every other one, so the
 * limit holds; at worst both give back and the next run takes them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "http.h"
#include "implement.h"
#include "log.h"
#include "scope.h"

long impl_now(void)
{
	return (long)time(NULL);
}

long impl_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void impl_time(impl_run *r, const char *step, long since_ms)
{
	cJSON *old;
	double v = (double)(impl_ms() - since_ms);

	if (!r->timings)
		return;
	if ((old = cJSON_GetObjectItemCaseSensitive(r->timings, step)))
		v += old->valuedouble;
	cJSON_DeleteItemFromObjectCaseSensitive(r->timings, step);
	cJSON_AddNumberToObject(r->timings, step, v);
}

static int get_long(long *out, impl_run *r, const char *key, long def, long min, long max)
{
	return fconfig_get_long(out, r->job->cfg, key, def, min, max);
}

static int one_of(const char **out, impl_run *r, const char *key, const char *def, const char *a, const char *b)
{
	const char *v = fconfig_get_str(r->job->cfg, key, def);
	char env[128];

	*out = def;
	if (strcmp(v, a) != 0 && strcmp(v, b) != 0) {
		fconfig_env_name(env, sizeof(env), key);
		return ferror_set(FACTORY_ECONFIG, "bad setting %s=%s (from %s): expected %s or %s", key, v, env, a, b);
	}
	*out = v;
	return 0;
}

/* The host of the API URL, for the default author email. */
static void api_host(char *out, size_t len, const char *url)
{
	const char *p = strstr(url, "://"), *e;

	p = p ? p + 3 : url;
	e = p + strcspn(p, ":/");
	snprintf(out, len, "%.*s", (int)(e - p), p);
	if (!out[0])
		snprintf(out, len, "localhost");
}

static int read_settings(impl_run *r)
{
	fconfig *cfg = r->job->cfg;
	const char *v = NULL;
	long n, wall;
	int b, error;
	static char email[300];

	if ((error = fconfig_get_bool(&r->do_heal, cfg, "implement.heal", 1)) < 0 ||
	    (error = fconfig_get_bool(&r->do_take, cfg, "implement.take", 1)) < 0 ||
	    (error = get_long(&r->max_attempts, r, "implement.max_attempts", 3, 1, 20)) < 0 ||
	    (error = get_long(&wall, r, "agent.max_wall_s", 1800, 1, 86400)) < 0 ||
	    (error = get_long(&r->lease_s, r, "implement.lease_s", wall + 1800, 60, 7 * 86400)) < 0 ||
	    (error = get_long(&r->settle_ms, r, "implement.claim_settle_ms", 1000, 0, 60000)) < 0 ||
	    (error = get_long(&r->grace_s, r, "implement.claim_grace_s", 300, 10, 86400)) < 0 ||
	    (error = get_long(&r->candidates, r, "implement.candidates", 10, 1, 100)) < 0 ||
	    (error = get_long(&r->check_timeout_s, r, "implement.check_timeout_s", 900, 1, 86400)) < 0 ||
	    (error = get_long(&n, r, "implement.push_tries", 3, 1, 10)) < 0 ||
	    (error = get_long(&r->wip_limit, r, "implement.wip_limit", 0, 0, 100000)) < 0 ||
	    (error = get_long(&r->group_wip_limit, r, "implement.group_wip_limit", 0, 0, 100000)) < 0)
		return error;
	r->push_tries = (int)n;
	if ((error = one_of(&v, r, "implement.merge", "factory", "factory", "people")) < 0)
		return error;
	r->people_merge = !strcmp(v, "people");
	if ((error = fconfig_get_bool(&r->draft, cfg, "implement.draft", 0)) < 0)
		return error;
	if ((error = one_of(&v, r, "implement.delivery", "merge_request", "merge_request", "direct")) < 0)
		return error;
	r->direct = !strcmp(v, "direct");
	r->direct_classes = fconfig_get_str(cfg, "implement.direct_classes", "");
	r->check_command = fconfig_get(cfg, "implement.check_command", NULL);
	if (r->check_command && !*r->check_command)
		r->check_command = NULL;
	if ((error = one_of(&r->checkout, r, "implement.checkout", "auto", "auto", "clone")) < 0)
		return error;
	v = getenv("TMPDIR");
	r->workdir = fconfig_get_str(cfg, "implement.workdir", v && *v ? v : "/tmp");
	if ((error = fconfig_get_bool(&b, cfg, "implement.keep_workdir", 0)) < 0)
		return error;
	r->keep_workdir = b;
	if (r->direct && !*r->direct_classes)
		log_warn("delivery is direct but implement.direct_classes is empty: every issue gets a merge request");
	if (r->direct && !r->check_command)
		log_warn("delivery is direct but there is no implement.check_command: no direct push without checks");
	r->author.name = fconfig_get_str(cfg, "git.author_name", "Factory");
	if (!(v = fconfig_get(cfg, "git.author_email", NULL)) || !*v) {
		char host[256];
		api_host(host, sizeof(host), r->job->api_url);
		snprintf(email, sizeof(email), "factory@%s", host);
		v = email;
	}
	r->author.email = v;
	r->committer.name = fconfig_get_str(cfg, "git.committer_name", r->author.name);
	r->committer.email = fconfig_get_str(cfg, "git.committer_email", r->author.email);
	if (!*r->author.name || !strchr(r->author.email, '@'))
		return ferror_set(FACTORY_ECONFIG, "bad setting git.author_email=%s: expected an email address",
		                  r->author.email);
	return 0;
}

/* CI_NODE_INDEX of CI_NODE_TOTAL (GitLab's parallel: N), 1 of 1 when unset. */
static int read_node(impl_run *r)
{
	const char *vi = getenv("CI_NODE_INDEX"), *vt = getenv("CI_NODE_TOTAL");
	char *end = NULL;
	long idx = 1, total = 1;

	if (vt && *vt) {
		errno = 0;
		total = strtol(vt, &end, 10);
		if (errno || *end || total < 1 || total > 1000)
			return ferror_set(FACTORY_ECONFIG,
			                  "bad CI_NODE_TOTAL=%.40s: expected a whole number from 1 to 1000", vt);
	}
	if (vi && *vi) {
		errno = 0;
		idx = strtol(vi, &end, 10);
		if (errno || *end || idx < 1 || idx > total)
			return ferror_set(FACTORY_ECONFIG,
			                  "bad CI_NODE_INDEX=%.40s: expected a whole number from 1 to %ld", vi, total);
	}
	r->node_index = idx;
	r->node_total = total;
	return 0;
}

/* The run's identity: CI ids when in CI, and a random id in every case. */
static void identify(impl_run *r)
{
	unsigned char raw[16];
	const char *v;
	ssize_t got = -1;
	int fd, i;

	if ((v = getenv("CI_PIPELINE_ID")))
		r->pipeline_id = strtol(v, NULL, 10);
	if ((v = getenv("CI_JOB_ID")))
		r->job_id = strtol(v, NULL, 10);
	if ((v = getenv("CI_JOB_URL")) && (!strncmp(v, "https://", 8) || !strncmp(v, "http://", 7)))
		snprintf(r->job_url, sizeof(r->job_url), "%s", v);
	if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) >= 0) {
		got = read(fd, raw, sizeof(raw));
		close(fd);
	}
	if (got != (ssize_t)sizeof(raw)) {
		unsigned long x = (unsigned long)impl_ms() ^ ((unsigned long)getpid() << 20);
		for (i = 0; i < 16; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			raw[i] = (unsigned char)(x >> 56);
		}
	}
	for (i = 0; i < 16; i++)
		snprintf(r->run_id + 2 * i, 3, "%02x", raw[i]);
}

static int whoami(impl_run *r)
{
	cJSON *user = NULL;
	int error;

	if ((error = gitlab_request(&user, r->gl, "GET", NULL, "user")) < 0)
		return error;
	r->me = impl_num(user, "id");
	cJSON_Delete(user);
	if (r->me <= 0)
		return ferror_set(FACTORY_EINVALID, "GET user: no id in the answer");
	return 0;
}

static void project_fields_release(impl_run *r)
{
	free(r->project_path);
	free(r->project_web_url);
	free(r->default_branch);
	free(r->clone_url);
	r->project_path = r->project_web_url = r->default_branch = r->clone_url = NULL;
}

/* The project fields from its path and default branch; `web` NULL: made
 * from the API's origin. */
static int set_project_fields(impl_run *r, const char *path, const char *branch, const char *web)
{
	char *root = NULL;
	size_t len;
	int error = 0;

	project_fields_release(r);
	/* The clone URL is made from the API's own origin, so the token goes
	 * nowhere else, whatever http_url_to_repo says. */
	len = strlen(r->job->api_url);
	if (len < 7 || strcmp(r->job->api_url + len - 7, "/api/v4") != 0)
		return ferror_set(FACTORY_ECONFIG, "the API URL %s does not end in /api/v4", r->job->api_url);
	if (!(root = strndup(r->job->api_url, len - 7)) || asprintf(&r->clone_url, "%s/%s.git", root, path) < 0 ||
	    !(r->project_path = strdup(path)) || !(r->default_branch = strdup(branch)) ||
	    (web ? !(r->project_web_url = strdup(web)) : asprintf(&r->project_web_url, "%s/%s", root, path) < 0)) {
		if (!web)
			r->project_web_url = NULL;
		project_fields_release(r);
		r->clone_url = NULL;
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	free(root);
	return error;
}

int impl_project(impl_run *r)
{
	cJSON *p = NULL;
	const char *path, *branch, *web;
	int error;

	if (r->clone_url)
		return 0;
	if ((error = gitlab_request(&p, r->gl, "GET", NULL, "projects/:id")) < 0)
		return error;
	path = impl_str(p, "path_with_namespace");
	branch = impl_str(p, "default_branch");
	web = impl_str(p, "web_url");
	if (!path || !*path || !branch || !*branch)
		error = ferror_set(FACTORY_EINVALID,
		                   "GET projects/:id: no path_with_namespace or default_branch (is the "
		                   "repository empty?)");
	else
		error = set_project_fields(r, path, branch, web);
	cJSON_Delete(p);
	return error;
}

static const scope_project *scope_find(const impl_run *r, long id)
{
	size_t i;

	for (i = 0; r->sc && i < scope_count(r->sc); i++)
		if (scope_at(r->sc, i)->id == id)
			return scope_at(r->sc, i);
	return NULL;
}

int impl_enter_project(impl_run *r, long id)
{
	const scope_project *p;
	char num[32];
	int error;

	if (!r->sc || id == r->project_id)
		return 0;
	if (!(p = scope_find(r, id)) || !p->enabled || !p->default_branch)
		return FACTORY_ENOTFOUND;
	/* Its .factory.yml is read now, the first time one of its issues is
	 * handled (scope.h): it may opt the project out or be broken. */
	if ((error = scope_settle(r->sc, scope_index(r->sc, id))) < 0)
		return error;
	if (!p->enabled)
		return FACTORY_ENOTFOUND;
	snprintf(num, sizeof(num), "%ld", id);
	if ((error = gitlab_set_project(r->gl, num)) < 0)
		return error;
	r->project_id = 0;
	if ((error = set_project_fields(r, p->path, p->default_branch, NULL)) < 0)
		return error;
	r->project_id = id;
	return 0;
}

int impl_node_owns(const impl_run *r, const cJSON *issue)
{
	long id = impl_num(issue, "id");

	return r->node_total <= 1 || id <= 0 || id % r->node_total == r->node_index - 1;
}

int impl_list_label(cJSON **out, impl_run *r, const char *label, size_t max)
{
	cJSON *all = NULL, *kept = NULL, *it;
	fbuf q, path;
	int error;

	*out = NULL;
	fbuf_init(&q, 1024);
	fbuf_init(&path, 1024);
	if ((error = fbuf_puts(&q, "state=opened&order_by=relative_position&sort=asc&labels=")) < 0 ||
	    (error = http_escape(&q, label)) < 0)
		goto cleanup;
	if (!r->sc) {
		error = gitlab_list_all(out, r->gl, "projects/:id/issues", q.ptr, max);
		goto cleanup;
	}
	if ((error = fbuf_printf(&path, "%s/issues", r->group_path)) < 0 ||
	    (error = gitlab_list_all(&all, r->gl, path.ptr, q.ptr, max)) < 0)
		goto cleanup;
	if (!(kept = cJSON_CreateArray())) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	/* Only the projects that take part as far as known (no project's file
	 * is read here: impl_enter_project reads it), detach those, leave the
	 * rest. */
	while ((it = all ? all->child : NULL)) {
		const scope_project *p = scope_find(r, impl_num(it, "project_id"));
		cJSON_DetachItemViaPointer(all, it);
		if (p && p->enabled && p->default_branch)
			cJSON_AddItemToArray(kept, it);
		else
			cJSON_Delete(it);
	}
	*out = kept;
	kept = NULL;
cleanup:
	cJSON_Delete(all);
	cJSON_Delete(kept);
	fbuf_release(&q);
	fbuf_release(&path);
	return error;
}

/* A group scope: load it (scope.h) and make the group endpoints' path. */
static int load_group(impl_run *r, const char *group)
{
	fbuf esc;
	int error;

	fbuf_init(&esc, 1024);
	if ((error = scope_load(&r->sc, r->gl, r->job->cfg, group)) < 0 || (error = http_escape(&esc, group)) < 0)
		goto cleanup;
	if (asprintf(&r->group_path, "groups/%s", esc.ptr) < 0) {
		r->group_path = NULL;
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	report_counter_set(r->rep, "projects", (long)scope_count(r->sc));
	report_counter_set(r->rep, "projects_taking_part", (long)scope_enabled(r->sc));
	log_info("group %s: %zu projects, %zu not opted out by topic (a project's .factory.yml is read when one of "
	         "its issues is handled)",
	         group, scope_count(r->sc), scope_enabled(r->sc));
cleanup:
	fbuf_release(&esc);
	return error;
}

static void run_release(impl_run *r)
{
	if (r->token) {
		explicit_bzero(r->token, strlen(r->token));
		free(r->token);
	}
	project_fields_release(r);
	scope_free(r->sc);
	free(r->group);
	free(r->group_path);
}

int impl_main(job_ctx *ctx)
{
	impl_run r;
	cJSON *data = report_data(ctx->rep);
	gitops_stats gs;
	long t0 = impl_ms();
	int error, heal_error = 0;

	memset(&r, 0, sizeof(r));
	r.job = ctx;
	r.rep = ctx->rep;
	r.dry_run = ctx->dry_run;
	r.healed = cJSON_AddArrayToObject(data, "healed");
	r.timings = cJSON_AddObjectToObject(data, "timings_ms");
	if ((error = job_connect(ctx)) < 0 || (error = read_settings(&r)) < 0)
		goto cleanup;
	r.gl = ctx->gl;
	if ((error = read_node(&r)) < 0 || (error = scope_group_from_config(&r.group, ctx->cfg)) < 0)
		goto cleanup;
	identify(&r);
	cJSON_AddStringToObject(data, "run", r.run_id);
	if (r.node_total > 1) {
		cJSON_AddNumberToObject(data, "node_index", (double)r.node_index);
		cJSON_AddNumberToObject(data, "node_total", (double)r.node_total);
	}
	if ((error = job_read_token(&r.token, ctx)) < 0 || (error = whoami(&r)) < 0)
		goto cleanup;
	if (r.group) {
		if ((error = load_group(&r, r.group)) < 0)
			goto cleanup;
		cJSON_AddStringToObject(data, "group", r.group);
		log_info("group %s, job %ld of %ld%s", r.group, r.node_index, r.node_total,
		         r.dry_run ? "; dry run" : "");
	} else {
		if ((error = impl_project(&r)) < 0)
			goto cleanup;
		log_info("project %s (default branch %s), job %ld of %ld%s", r.project_path, r.default_branch,
		         r.node_index, r.node_total, r.dry_run ? "; dry run" : "");
	}
	impl_time(&r, "setup", t0);

	if (r.do_heal) {
		long t = impl_ms();
		log_section_start("heal", "Phase 1: heal what is In Progress and in Validation", 0);
		heal_error = impl_heal(&r);
		log_section_end("heal");
		impl_time(&r, "heal", t);
		/* An upstream failure stops the run; a failure on one issue does not stop phase 2. */
		if (heal_error == FACTORY_EUPSTREAM || heal_error == FACTORY_EAUTH) {
			error = heal_error;
			goto cleanup;
		}
	}
	if (r.do_take) {
		long t = impl_ms();
		log_section_start("take", "Phase 2: the next Up Next issue", 0);
		error = impl_take(&r);
		log_section_end("take");
		impl_time(&r, "take", t);
		if (error < 0)
			goto cleanup;
	}
	error = heal_error;
cleanup:
	gitops_get_stats(&gs);
	report_counter_set(ctx->rep, "git_clones", gs.clones);
	report_counter_set(ctx->rep, "git_fetches", gs.fetches);
	report_counter_set(ctx->rep, "git_pushes", gs.pushes);
	report_counter_set(ctx->rep, "git_rebases", gs.rebases);
	report_counter_set(ctx->rep, "git_commits", gs.commits);
	report_counter_set(ctx->rep, "git_credential_requests", gs.credential_requests);
	impl_time(&r, "total", t0);
	run_release(&r);
	return error;
}
