/* Tests for common/scope_job.c against a scripted GitLab on 127.0.0.1
 * (tests/unit/testserver.h): each project of a group gets a context and a
 * report of its own (written to projects/<path>/), folded into the job's
 * report (counters summed, actions prefixed, data.projects in path order);
 * a 403 on one project fails that project alone; the settings of a project
 * against the group's (scope_job_same). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gitlab.h"
#include "job.h"
#include "log.h"
#include "scope_job.h"
#include "support/support.h"
#include "testserver.h"

static char dir[64];

static void setup(void)
{
	http_set_sleep(tu_no_sleep);
	tu_job_dir_enter(dir, sizeof(dir), "scope_job_test", "scope-job-token-9876");
	unsetenv("FACTORY_PROJECT");
}

static void teardown(void)
{
	tu_job_dir_leave(dir);
}

TestSuite(scope_job, .init = setup, .fini = teardown, .timeout = 30);

static const job_option options[] = {
        {"scope", "scope", 1, "SCOPE    for tests"},
        {NULL, NULL, 0, NULL},
};
static const job_spec spec = {"walker", "a group job for tests", NULL, options};

static char *answer(int status, const char *body)
{
	return ts_fmt("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", status,
	              strlen(body), body);
}

/* acme: a (own file), sub/b (403 on its issues), c (opted out by topic). */
static char *fake_gitlab(void *ctx, const ts_request *req, size_t *len, int *flags)
{
	char *out;

	(void)ctx;
	(void)flags;
	if (!strncmp(req->target, "/api/v4/groups/acme/projects?", 29))
		out = answer(
		        200,
		        "[{\"id\":1,\"path_with_namespace\":\"acme/a\",\"default_branch\":\"main\",\"topics\":[]},"
		        "{\"id\":2,\"path_with_namespace\":\"acme/sub/b\",\"default_branch\":\"main\",\"topics\":[]},"
		        "{\"id\":3,\"path_with_namespace\":\"acme/c\",\"default_branch\":\"main\","
		        "\"topics\":[\"factory-opt-out\"]}]");
	else if (!strcmp(req->target, "/api/v4/projects/1/repository/files/.factory.yml/raw?ref=main"))
		out = answer(200, "walker:\n  greeting: own\n");
	else if (strstr(req->target, "/repository/files/.factory.yml/raw"))
		out = answer(404, "{\"message\":\"404 File Not Found\"}");
	else if (!strcmp(req->target, "/api/v4/projects/1/issues"))
		out = answer(200, "[{\"iid\":1},{\"iid\":2}]");
	else if (!strcmp(req->target, "/api/v4/projects/2/issues"))
		out = answer(403, "{\"message\":\"403 Forbidden\"}");
	else
		out = answer(404, "{\"message\":\"404 Not Found\"}");
	*len = strlen(out);
	return out;
}

static int visited;

/* Reads the project's issues, counts them as handled, records an action. */
static int per_project(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg)
{
	cJSON *issues = NULL;
	int error;

	(void)arg;
	visited++;
	cr_assert_str_eq(pctx->project, p->path);
	cr_assert_eq(pctx->cfg, p->cfg);
	cr_assert_neq(pctx->rep, group->rep);
	cr_assert_str_eq(fconfig_get_str(pctx->cfg, "walker.greeting", "group"),
	                 !strcmp(p->path, "acme/a") ? "own" : "group");
	cr_assert_eq(scope_job_same(pctx, group, "walker.greeting"), strcmp(p->path, "acme/a") != 0);
	if ((error = gitlab_request(&issues, pctx->gl, "GET", NULL, "projects/:id/issues")) < 0)
		return error;
	report_counter_set(pctx->rep, "issues_handled", cJSON_GetArraySize(issues));
	report_counter_set(pctx->rep, "seen", 1);
	report_action(pctx->rep, "note", "#1", "hello");
	report_summary(pctx->rep, "%d issues", cJSON_GetArraySize(issues));
	cJSON_Delete(issues);
	return 0;
}

static cJSON *read_json(const char *path)
{
	char *text;
	FILE *f = fopen(path, "r");
	long n;
	cJSON *j;

	cr_assert_not_null(f, "no %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	j = cJSON_Parse(text);
	free(text);
	cr_assert_not_null(j, "%s is not JSON", path);
	return j;
}

static double counter(const cJSON *rep, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "counters"), name);

	cr_assert(cJSON_IsNumber(v), "counter %s missing", name);
	return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	cr_assert(cJSON_IsString(v), "%s is not a string", k);
	return v->valuestring;
}

Test(scope_job, projects_reported_one_by_one_and_folded)
{
	ts_server *s = ts_start();
	char url[128], rdir[128], path[256];
	char *argv[] = {"factory-walker", "--gitlab-url", url, "--scope", "group:acme", "--report-dir", rdir, NULL};
	job_ctx ctx;
	cJSON *rep, *sub, *projects, *actions;
	int rc;

	ts_set_handler(s, fake_gitlab, NULL);
	ts_url(url, sizeof(url), s, "");
	snprintf(rdir, sizeof(rdir), "%s/report", dir);
	visited = 0;
	cr_assert_eq(job_start(&ctx, &spec, 7, argv), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), 0, "%s", ferror_last());
	cr_assert_null(ctx.project);
	rc = scope_job_run(&ctx, "acme", per_project, NULL);
	/* b's 403 is b's failure: a was done, the walk went on, the error says so */
	cr_assert_eq(rc, FACTORY_ERR, "%d %s", rc, ferror_last());
	cr_assert(strstr(ferror_last(), "acme/sub/b"), "%s", ferror_last());
	cr_assert_eq(visited, 2);
	cr_assert_eq(job_finish(&ctx, rc), EXIT_FAILED);

	snprintf(path, sizeof(path), "%s/report/report.json", dir);
	rep = read_json(path);
	cr_assert_eq(counter(rep, "issues_handled"), 2);
	cr_assert_eq(counter(rep, "seen"), 1);
	cr_assert_eq(counter(rep, "projects"), 3);
	cr_assert_eq(counter(rep, "projects_taking_part"), 2);
	cr_assert_eq(counter(rep, "projects_failed"), 1);
	/* one listing, two file reads (c is opted out by topic), a's and b's issues */
	cr_assert_eq(counter(rep, "api_requests"), 5);
	actions = cJSON_GetObjectItemCaseSensitive(rep, "actions");
	cr_assert_eq(cJSON_GetArraySize(actions), 1);
	cr_assert_str_eq(str(cJSON_GetArrayItem(actions, 0), "target"), "acme/a#1");
	projects = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "data"), "projects");
	cr_assert_eq(cJSON_GetArraySize(projects), 3);
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 0), "path"), "acme/a");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 0), "result"), "ok");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 0), "summary"), "2 issues");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 1), "path"), "acme/c");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 1), "result"), "left out");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 2), "path"), "acme/sub/b");
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 2), "result"), "failed");
	cr_assert(strstr(str(cJSON_GetArrayItem(projects, 2), "error"), "403"));
	cr_assert_str_eq(str(cJSON_GetArrayItem(projects, 0), "report"), "projects/acme/a/report.json");

	/* a's own report: its requests alone, its calls per issue */
	snprintf(path, sizeof(path), "%s/report/projects/acme/a/report.json", dir);
	sub = read_json(path);
	cr_assert_eq(counter(sub, "api_requests"), 1);
	cr_assert_eq(counter(sub, "issues_handled"), 2);
	cr_assert_eq(counter(sub, "api_calls_per_issue"), 1);
	cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(sub, "actions"), 0), "target"), "#1");
	cJSON_Delete(sub);
	snprintf(path, sizeof(path), "%s/report/projects/acme/sub/b/report.json", dir);
	sub = read_json(path);
	cr_assert_eq(cJSON_GetObjectItemCaseSensitive(sub, "exit_code")->valuedouble, EXIT_FAILED);
	cJSON_Delete(sub);
	cJSON_Delete(rep);
	ts_stop(s);
}
