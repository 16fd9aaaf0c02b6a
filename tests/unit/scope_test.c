/* Tests for common/scope.c against a scripted GitLab on 127.0.0.1
 * (tests/unit/testserver.h): the scope setting, a group's projects with
 * their own .factory.yml merged over the group's settings, opting out by
 * topic and by settings, broken files, and the walk over the projects with
 * one client. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "gitlab.h"
#include "log.h"
#include "scope.h"
#include "support/support.h"
#include "testserver.h"

static void setup(void)
{
	http_set_sleep(tu_no_sleep);
	log_set_level(LOG_ERROR);
}

TestSuite(scope, .init = setup, .timeout = 30);

/* ---- the setting ---- */

static int parse(char **g, const char *value)
{
	fconfig *c = NULL;
	int rc;

	cr_assert_eq(fconfig_new(&c), 0);
	if (value)
		cr_assert_eq(fconfig_set(c, CONFIG_FLAG, "scope", value), 0);
	rc = scope_group_from_config(g, c);
	fconfig_free(c);
	return rc;
}

Test(scope, setting)
{
	static const char *const bad[] = {"group:", "group:/a",    "group:a/", "group:a//b", "group:a b",
	                                  "grp:x",  "group:a/b?c", "projects", NULL};
	char *g = (char *)1;
	size_t i;

	cr_assert_eq(parse(&g, NULL), 0);
	cr_assert_null(g);
	cr_assert_eq(parse(&g, "project"), 0);
	cr_assert_null(g);
	cr_assert_eq(parse(&g, "group:acme/sub-group/team.x_1"), 0);
	cr_assert_str_eq(g, "acme/sub-group/team.x_1");
	free(g);
	cr_assert_eq(parse(&g, "group:42"), 0);
	cr_assert_str_eq(g, "42");
	free(g);
	for (i = 0; bad[i]; i++) {
		cr_assert_eq(parse(&g, bad[i]), FACTORY_ECONFIG, "%s accepted", bad[i]);
		cr_assert_null(g);
		cr_assert(strstr(ferror_last(), "scope="), "%s", ferror_last());
		cr_assert(strstr(ferror_last(), "--scope"), "%s", ferror_last());
	}
}

/* ---- a scripted group ---- */

typedef struct {
	long id;
	const char *path;
	const char *branch; /* NULL: empty repository */
	const char *topics; /* JSON array text */
	const char *file;   /* .factory.yml, NULL: none (404), FILE_DOWN: 503 */
	int issues_status;  /* answer to GET projects/:id/issues (0: 200) */
} fake_project;

#define FILE_DOWN "<503>"

typedef struct {
	const char *group_escaped;
	const fake_project *projects;
	size_t n;
	size_t big_file; /* > 0: project 1's file is this many bytes */
} fake_group;

static char *answer(int status, const char *reason, const char *ctype, const char *body)
{
	return ts_fmt("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", status, reason, ctype,
	              strlen(body), body);
}

static char *fake_gitlab(void *ctx, const ts_request *req, size_t *len, int *flags)
{
	const fake_group *g = ctx;
	char want[512], *out = NULL, *list, *tmp;
	size_t i;

	(void)flags;
	snprintf(want, sizeof(want), "/api/v4/groups/%s/projects?", g->group_escaped);
	if (!strncmp(req->target, want, strlen(want))) {
		list = strdup("[");
		for (i = 0; i < g->n; i++) {
			const fake_project *p = &g->projects[i];
			char branch[128];

			if (p->branch)
				snprintf(branch, sizeof(branch), "\"%s\"", p->branch);
			else
				snprintf(branch, sizeof(branch), "null");
			tmp = ts_fmt(
			        "%s%s{\"id\":%ld,\"path_with_namespace\":\"%s\",\"default_branch\":%s,\"topics\":%s}",
			        list, i ? "," : "", p->id, p->path, branch, p->topics ? p->topics : "[]");
			free(list);
			list = tmp;
		}
		tmp = ts_fmt("%s]", list);
		free(list);
		out = answer(200, "OK", "application/json", tmp);
		free(tmp);
	}
	for (i = 0; !out && i < g->n; i++) {
		const fake_project *p = &g->projects[i];
		char file[256], issues[128];

		snprintf(file, sizeof(file), "/api/v4/projects/%ld/repository/files/.factory.yml/raw?ref=%s", p->id,
		         p->branch ? p->branch : "");
		snprintf(issues, sizeof(issues), "/api/v4/projects/%ld/issues", p->id);
		if (!strcmp(req->target, file)) {
			if (g->big_file && i == 0) {
				char *body = malloc(g->big_file + 1);
				memset(body, '#', g->big_file);
				body[g->big_file] = '\0';
				out = answer(200, "OK", "text/plain", body);
				free(body);
			} else if (p->file && !strcmp(p->file, FILE_DOWN)) {
				out = answer(503, "Service Unavailable", "text/plain", "down");
			} else if (p->file) {
				out = answer(200, "OK", "text/plain", p->file);
			} else {
				out = answer(404, "Not Found", "application/json",
				             "{\"message\":\"404 File Not Found\"}");
			}
		} else if (!strcmp(req->target, issues)) {
			if (p->issues_status == 503)
				out = answer(503, "Service Unavailable", "text/plain", "down");
			else if (p->issues_status)
				out = answer(p->issues_status, "Error", "application/json", "{\"message\":\"nope\"}");
			else
				out = answer(200, "OK", "application/json", "[]");
		}
	}
	if (!out)
		out = answer(404, "Not Found", "application/json", "{\"message\":\"404 Not Found\"}");
	*len = strlen(out);
	return out;
}

static gitlab *client_for(ts_server *s, const char *project)
{
	return tu_gitlab_for(s, project, "scope-test-token-1234", 0, 1);
}

static fconfig *group_cfg(const char *yaml)
{
	fconfig *c = NULL;

	cr_assert_eq(fconfig_new(&c), 0);
	cr_assert_eq(fconfig_load_yaml_string(c, yaml, "group.yml"), 0, "%s", ferror_last());
	return c;
}

static size_t count_target(ts_server *s, const char *part)
{
	size_t i, n = 0;

	for (i = 0; i < ts_count(s); i++)
		if (strstr(ts_req(s, i)->target, part))
			n++;
	return n;
}

static const fake_project acme[] = {
        {1, "acme/a", "main", NULL, "triage:\n  wip_limit: 5\n", 0},
        {2, "acme/sub/b", "main", "[\"backend\"]", NULL, 0},
        {3, "acme/c", "main", "[\"Factory-Opt-Out\"]", "triage:\n  wip_limit: 9\n", 0},
        {4, "acme/d", "trunk", NULL, "factory:\n  enabled: false\n", 0},
        {5, "acme/e", "main", NULL, "triage: [unclosed\n", 0},
        {6, "acme/empty", NULL, NULL, NULL, 0},
};

static const scope_project *find(const scope *sc, const char *path)
{
	size_t i;

	for (i = 0; i < scope_count(sc); i++)
		if (!strcmp(scope_at(sc, i)->path, path))
			return scope_at(sc, i);
	cr_assert_fail("no project %s", path);
	return NULL;
}

Test(scope, load_merges_and_opts_out)
{
	ts_server *s = ts_start();
	fake_group g = {"acme", acme, 6, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("triage:\n  wip_limit: 2\n  mode: strict\n");
	scope *sc = NULL;
	const scope_project *p;
	long v;

	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "dry_run", "true"), 0);
	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "acme"), 0, "%s", ferror_last());
	fconfig_free(cfg); /* the scope keeps its own copy */
	cr_assert_str_eq(scope_group(sc), "acme");
	cr_assert_eq(scope_count(sc), 6);
	/* Loading lists the group and reads no file: taking part as far as
	 * known is everyone but the one opted out by topic. */
	cr_assert_eq(ts_count(s), 1);
	cr_assert_eq(scope_enabled(sc), 5);
	/* In path order. */
	cr_assert_str_eq(scope_at(sc, 0)->path, "acme/a");
	cr_assert_str_eq(scope_at(sc, 5)->path, "acme/sub/b");
	cr_assert_null(scope_at(sc, 6));
	cr_assert(!find(sc, "acme/a")->settled && !find(sc, "acme/a")->cfg);
	cr_assert(find(sc, "acme/c")->settled && !find(sc, "acme/c")->enabled);
	cr_assert_eq(scope_index(sc, 4), 2);
	cr_assert_eq(scope_index(sc, 99), SCOPE_NONE);
	cr_assert_eq(scope_settle(sc, 6), FACTORY_EINVALID);

	/* Settling one project reads its file alone, once. */
	cr_assert_eq(scope_settle(sc, scope_index(sc, 4)), 0, "%s", ferror_last());
	cr_assert_eq(scope_settle(sc, scope_index(sc, 4)), 0, "%s", ferror_last());
	cr_assert_eq(count_target(s, "/repository/files/"), 1);
	cr_assert(find(sc, "acme/d")->settled && !find(sc, "acme/d")->enabled);
	cr_assert_eq(scope_enabled(sc), 4);
	cr_assert(!find(sc, "acme/a")->settled);

	/* Settling all reads the rest. */
	cr_assert_eq(scope_settle_all(sc), 0, "%s", ferror_last());
	cr_assert_eq(scope_enabled(sc), 3);
	cr_assert_eq(scope_settle_all(sc), 0, "%s", ferror_last());

	p = find(sc, "acme/a");
	cr_assert(p->enabled && p->has_file && !p->error);
	cr_assert_eq(fconfig_get_long(&v, p->cfg, "triage.wip_limit", 1, 1, 100), 0);
	cr_assert_eq(v, 5, "the project's own file wins over the group's");
	cr_assert_str_eq(fconfig_get(p->cfg, "triage.mode", NULL), "strict");
	cr_assert_str_eq(fconfig_get(p->cfg, "dry_run", NULL), "true");

	p = find(sc, "acme/sub/b");
	cr_assert(p->enabled && !p->has_file);
	cr_assert_eq(fconfig_get_long(&v, p->cfg, "triage.wip_limit", 1, 1, 100), 0);
	cr_assert_eq(v, 2);

	p = find(sc, "acme/c");
	cr_assert(!p->enabled && !p->error);
	cr_assert(strstr(p->why, "factory-opt-out"), "%s", p->why);

	p = find(sc, "acme/d");
	cr_assert(!p->enabled && !p->error && p->has_file);
	cr_assert(strstr(p->why, "acme/d/.factory.yml"), "%s", p->why);

	p = find(sc, "acme/e");
	cr_assert(!p->enabled);
	cr_assert_eq(p->error, FACTORY_ECONFIG);
	cr_assert(strstr(p->why, "acme/e/.factory.yml"), "%s", p->why);

	p = find(sc, "acme/empty");
	cr_assert(p->enabled && !p->has_file);
	cr_assert_null(p->default_branch);

	/* One listing; the file of every project but the opted-out by topic
	 * and the empty one, on its own default branch, each read once. */
	cr_assert_eq(count_target(s, "/groups/acme/projects?"), 1);
	cr_assert(strstr(ts_req(s, 0)->target, "include_subgroups=true"), "%s", ts_req(s, 0)->target);
	cr_assert(strstr(ts_req(s, 0)->target, "archived=false"), "%s", ts_req(s, 0)->target);
	cr_assert_eq(count_target(s, "/repository/files/"), 4);
	cr_assert_eq(count_target(s, "/projects/3/"), 0);
	cr_assert_eq(count_target(s, "/projects/6/"), 0);
	cr_assert_eq(count_target(s, "/projects/4/repository/files/.factory.yml/raw?ref=trunk"), 1);
	for (size_t i = 0; i < ts_count(s); i++)
		cr_assert_str_eq(ts_req(s, i)->method, "GET");
	scope_free(sc);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, opt_in_group)
{
	static const fake_project projects[] = {
	        {1, "team/in", "main", NULL, "factory:\n  enabled: true\n", 0},
	        {2, "team/quiet", "main", NULL, NULL, 0},
	        {3, "team/bad-flag", "main", NULL, "factory:\n  enabled: perhaps\n", 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"team", projects, 3, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("factory:\n  enabled: false\n");
	scope *sc = NULL;

	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "team"), 0, "%s", ferror_last());
	cr_assert_eq(scope_settle_all(sc), 0, "%s", ferror_last());
	cr_assert_eq(scope_enabled(sc), 1);
	cr_assert(find(sc, "team/in")->enabled);
	cr_assert(!find(sc, "team/quiet")->enabled);
	cr_assert(strstr(find(sc, "team/quiet")->why, "the group's settings"), "%s", find(sc, "team/quiet")->why);
	cr_assert_eq(find(sc, "team/bad-flag")->error, FACTORY_ECONFIG);
	cr_assert(strstr(find(sc, "team/bad-flag")->why, "perhaps"), "%s", find(sc, "team/bad-flag")->why);
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, file_over_the_cap_leaves_the_project_out)
{
	static const fake_project projects[] = {
	        {1, "big/huge", "main", NULL, NULL, 0},
	        {2, "big/fine", "main", NULL, "a: 1\n", 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"big", projects, 2, ((size_t)1 << 20) + 10};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("");
	scope *sc = NULL;

	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "big"), 0, "%s", ferror_last());
	cr_assert_eq(scope_settle_all(sc), 0, "%s", ferror_last());
	cr_assert_eq(find(sc, "big/huge")->error, FACTORY_ECONFIG);
	cr_assert(strstr(find(sc, "big/huge")->why, "over 1 MiB"), "%s", find(sc, "big/huge")->why);
	cr_assert(find(sc, "big/fine")->enabled);
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, unknown_group_and_bad_path)
{
	ts_server *s = ts_start();
	fake_group g = {"acme", acme, 6, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("");
	scope *sc = (scope *)1;

	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "nobody"), FACTORY_ENOTFOUND);
	cr_assert_null(sc);
	cr_assert(strstr(ferror_last(), "groups/nobody/projects"), "%s", ferror_last());
	cr_assert_eq(scope_load(&sc, gl, cfg, "a b"), FACTORY_ECONFIG);
	cr_assert_eq(ts_count(s), 1);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

/* ---- the walk ---- */

typedef struct {
	char seen[8][64];
	int n;
	int stop_after;
} walk;

static int visit(void *ctx, gitlab *gl, const scope_project *p)
{
	walk *w = ctx;
	cJSON *out = NULL;
	int error;
	char id[32];

	snprintf(id, sizeof(id), "%ld", p->id);
	cr_assert_str_eq(gitlab_project(gl), id);
	if (w->n < 8)
		snprintf(w->seen[w->n], sizeof(w->seen[0]), "%s", p->path);
	w->n++;
	if (w->stop_after && w->n == w->stop_after)
		return 1;
	error = gitlab_request(&out, gl, "GET", NULL, "projects/:id/issues");
	cJSON_Delete(out);
	return error;
}

Test(scope, each_project_with_one_client)
{
	fake_project projects[] = {
	        {1, "acme/a", "main", NULL, NULL, 0},
	        {2, "acme/b", "main", NULL, NULL, 404},
	        {3, "acme/c", "main", NULL, "x: [\n", 0},
	        {4, "acme/d", "main", NULL, NULL, 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"acme", projects, 4, 0};
	gitlab *gl = client_for(s, "home/project");
	fconfig *cfg = group_cfg("");
	scope *sc = NULL;
	walk w;

	memset(&w, 0, sizeof(w));
	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "acme"), 0, "%s", ferror_last());
	/* b fails, c's file is broken (found out by the walk, which settles
	 * each project in its turn): a and d are still done, and the
	 * answer is b's error, counting both. */
	cr_assert_eq(scope_each(sc, gl, visit, &w), FACTORY_ENOTFOUND);
	cr_assert(strstr(ferror_last(), "2 of 4 projects of group acme failed"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "acme/b"), "%s", ferror_last());
	cr_assert_eq(w.n, 3);
	cr_assert_str_eq(w.seen[0], "acme/a");
	cr_assert_str_eq(w.seen[1], "acme/b");
	cr_assert_str_eq(w.seen[2], "acme/d");
	cr_assert_eq(count_target(s, "/projects/1/issues"), 1);
	cr_assert_eq(count_target(s, "/projects/4/issues"), 1);
	cr_assert_eq(count_target(s, "/projects/3/issues"), 0);
	cr_assert_str_eq(gitlab_project(gl), "home/project", "the client's own project is back");
	cr_assert_eq(ts_connections(s), 1);

	/* A positive answer stops the walk and comes back as it is. */
	memset(&w, 0, sizeof(w));
	w.stop_after = 1;
	cr_assert_eq(scope_each(sc, gl, visit, &w), 1);
	cr_assert_eq(w.n, 1);
	cr_assert_str_eq(gitlab_project(gl), "home/project");
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, an_unavailable_gitlab_stops_the_walk)
{
	fake_project projects[] = {
	        {1, "acme/a", "main", NULL, NULL, 503},
	        {2, "acme/b", "main", NULL, NULL, 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"acme", projects, 2, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("");
	scope *sc = NULL;
	walk w;

	memset(&w, 0, sizeof(w));
	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "acme"), 0, "%s", ferror_last());
	cr_assert_eq(scope_each(sc, gl, visit, &w), FACTORY_EUPSTREAM);
	cr_assert_eq(w.n, 1);
	cr_assert_eq(count_target(s, "/projects/2/issues"), 0);
	cr_assert_null(gitlab_project(gl));
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, all_well)
{
	fake_project projects[] = {
	        {1, "solo/a", "main", NULL, NULL, 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"solo", projects, 1, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("");
	scope *sc = NULL;
	walk w;

	memset(&w, 0, sizeof(w));
	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "solo"), 0, "%s", ferror_last());
	cr_assert_eq(scope_each(sc, gl, visit, &w), 0, "%s", ferror_last());
	cr_assert_eq(w.n, 1);
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}

Test(scope, a_file_that_cannot_be_read)
{
	fake_project projects[] = {
	        {1, "acme/a", "main", NULL, NULL, 0},
	        {2, "acme/b", "main", NULL, FILE_DOWN, 0},
	        {3, "acme/c", "main", NULL, NULL, 0},
	};
	ts_server *s = ts_start();
	fake_group g = {"acme", projects, 3, 0};
	gitlab *gl = client_for(s, NULL);
	fconfig *cfg = group_cfg("");
	scope *sc = NULL;
	walk w;

	memset(&w, 0, sizeof(w));
	ts_set_handler(s, fake_gitlab, &g);
	cr_assert_eq(scope_load(&sc, gl, cfg, "acme"), 0, "%s", ferror_last());
	/* Settling b fails with GitLab's error and leaves it unsettled. */
	cr_assert_eq(scope_settle(sc, 1), FACTORY_EUPSTREAM);
	cr_assert(!scope_at(sc, 1)->settled && !scope_at(sc, 1)->cfg);
	cr_assert_eq(scope_settle_all(sc), FACTORY_EUPSTREAM);
	/* The walk does a, then stops at b: every other project would fail
	 * the same way. */
	cr_assert_eq(scope_each(sc, gl, visit, &w), FACTORY_EUPSTREAM);
	cr_assert(strstr(ferror_last(), "acme/b"), "%s", ferror_last());
	cr_assert_eq(w.n, 1);
	cr_assert_str_eq(w.seen[0], "acme/a");
	cr_assert_eq(count_target(s, "/projects/3/"), 0);
	scope_free(sc);
	fconfig_free(cfg);
	gitlab_free(gl);
	ts_stop(s);
}
