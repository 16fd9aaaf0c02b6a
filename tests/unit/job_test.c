/* Tests for common/job.c's API budget: the pacing settings reach the
 * client, and job_finish reports 429s, pacing and calls per issue handled
 * (report.json read back), against a scripted GitLab on 127.0.0.1. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "gitlab.h"
#include "job.h"
#include "log.h"
#include "testserver.h"
#include "support/support.h"

static long slept;

static void record_sleep(long ms)
{
	slept += ms;
}

static char dir[64];

static void setup(void)
{
	slept = 0;
	http_set_sleep(record_sleep);
	tu_job_dir_enter(dir, sizeof(dir), "job_test", "job-test-token-5678");
	unsetenv("FACTORY_HTTP_PACE_BELOW_PCT");
}

static void teardown(void)
{
	tu_job_dir_leave(dir);
}

TestSuite(job, .init = setup, .fini = teardown, .timeout = 30);

static const job_spec spec = {"budget", "a job for tests", NULL, NULL};

static int start(job_ctx *ctx, const char *url, const char *project)
{
	char rdir[128];
	char *argv[10];
	int argc = 0;

	snprintf(rdir, sizeof(rdir), "%s/report", dir);
	argv[argc++] = "factory-budget";
	argv[argc++] = "--gitlab-url";
	argv[argc++] = (char *)url;
	if (project) {
		argv[argc++] = "--project";
		argv[argc++] = (char *)project;
	}
	argv[argc++] = "--report-dir";
	argv[argc++] = rdir;
	argv[argc] = NULL;
	return job_start(ctx, &spec, argc, argv);
}

static cJSON *read_report(void)
{
	char path[128], *text;
	FILE *f;
	long n;
	cJSON *j;

	snprintf(path, sizeof(path), "%s/report/report.json", dir);
	f = fopen(path, "r");
	cr_assert_not_null(f, "no %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	j = cJSON_Parse(text);
	free(text);
	cr_assert_not_null(j);
	return j;
}

static double num(const cJSON *obj, const char *a, const char *b)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, a), b);

	cr_assert(cJSON_IsNumber(v), "%s.%s is not a number", a, b);
	return v->valuedouble;
}

Test(job, calls_per_issue_throttling_and_pacing_in_the_report)
{
	ts_server *s = ts_start();
	job_ctx ctx;
	cJSON *out = NULL, *rep;
	char url[256], hdr[256];
	long now = (long)time(NULL);
	int i;

	ts_url(url, sizeof(url), s, "");
	/* One 429 (retried), then answers that run the window down to 0 left:
	 * the last call waits for the reset. */
	snprintf(hdr, sizeof(hdr),
	         "Retry-After: 1\r\nRateLimit-Limit: 5\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: %ld\r\n", now + 1);
	ts_reply(s, 429, "Too Many Requests", hdr, "Retry later");
	for (i = 3; i >= 0; i--) {
		snprintf(hdr, sizeof(hdr),
		         "RateLimit-Limit: 5\r\nRateLimit-Observed: %d\r\nRateLimit-Remaining: %d\r\n"
		         "RateLimit-Reset: %ld\r\n",
		         5 - i, i, now + 20);
		ts_reply(s, 200, "OK", hdr, "{}");
	}
	ts_reply(s, 200, "OK", "RateLimit-Limit: 5\r\nRateLimit-Remaining: 4\r\n", "{}");
	cr_assert_eq(start(&ctx, url, "7"), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), 0, "%s", ferror_last());
	for (i = 0; i < 5; i++) {
		cr_assert_eq(gitlab_request(&out, ctx.gl, "GET", NULL, "projects/:id/issues/%d", i + 1), 0, "%s",
		             ferror_last());
		cJSON_Delete(out);
	}
	report_counter_set(ctx.rep, "issues_handled", 4);
	cr_assert_eq(job_finish(&ctx, 0), EXIT_DONE);

	rep = read_report();
	/* 6 requests (one a retried 429) for 4 issues: 1.5 a piece, 2 rounded. */
	cr_assert_eq(num(rep, "counters", "api_requests"), 6);
	cr_assert_eq(num(rep, "counters", "api_throttled"), 1);
	cr_assert_eq(num(rep, "counters", "api_calls_per_issue"), 2);
	cr_assert_eq(num(rep, "counters", "issues_handled"), 4);
	cr_assert(num(rep, "counters", "api_paced_ms") > 19000, "the last call waited for the reset");
	cr_assert_eq(slept, 1000 + (long)num(rep, "counters", "api_paced_ms"));
	{
		const cJSON *b =
		        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "data"), "api_budget");
		cr_assert_not_null(b);
		cr_assert_float_eq(cJSON_GetObjectItemCaseSensitive(b, "calls_per_issue")->valuedouble, 1.5, 1e-9);
		cr_assert_eq(cJSON_GetObjectItemCaseSensitive(b, "throttled")->valueint, 1);
		cr_assert_eq(cJSON_GetObjectItemCaseSensitive(b, "paced")->valueint, 1);
		cr_assert_eq(cJSON_GetObjectItemCaseSensitive(b, "ratelimit_limit")->valueint, 5);
	}
	cJSON_Delete(rep);
	ts_stop(s);
}

Test(job, no_issues_no_ratio)
{
	ts_server *s = ts_start();
	job_ctx ctx;
	cJSON *out = NULL, *rep;
	char url[256];

	ts_url(url, sizeof(url), s, "");
	ts_reply(s, 200, "OK", NULL, "{}");
	cr_assert_eq(start(&ctx, url, "7"), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), 0, "%s", ferror_last());
	cr_assert_eq(gitlab_request(&out, ctx.gl, "GET", NULL, "projects/:id"), 0);
	cJSON_Delete(out);
	cr_assert_eq(job_finish(&ctx, 0), EXIT_DONE);
	rep = read_report();
	cr_assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "counters"),
	                                                "api_calls_per_issue"));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "data"), "api_budget"),
	        "calls_per_issue")));
	cr_assert_eq(num(rep, "counters", "api_throttled"), 0);
	cJSON_Delete(rep);
	ts_stop(s);
}

Test(job, pacing_settings)
{
	job_ctx ctx;

	setenv("FACTORY_HTTP_PACE_BELOW_PCT", "150", 1);
	cr_assert_eq(start(&ctx, "http://127.0.0.1:9", "7"), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "http.pace_below_pct"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "FACTORY_HTTP_PACE_BELOW_PCT"), "%s", ferror_last());
	job_finish(&ctx, FACTORY_ECONFIG);
	unsetenv("FACTORY_HTTP_PACE_BELOW_PCT");
}

static const job_option scope_options[] = {
        {"scope", "scope", 1, "SCOPE    project or group:PATH"},
        {NULL, NULL, 0, NULL},
};
static const job_spec group_spec = {"walker", "a job that walks a group", NULL, scope_options};

Test(job, a_group_scope_needs_no_project)
{
	job_ctx ctx;
	char *argv[] = {"factory-walker", "--gitlab-url", "http://127.0.0.1:9", NULL};

	cr_assert_eq(job_start(&ctx, &group_spec, 3, argv), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "missing setting project"), "%s", ferror_last());
	job_finish(&ctx, FACTORY_ECONFIG);

	setenv("FACTORY_SCOPE", "group:acme", 1);
	cr_assert_eq(job_start(&ctx, &group_spec, 3, argv), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), 0, "%s", ferror_last());
	cr_assert_null(ctx.project);
	cr_assert_null(gitlab_project(ctx.gl));
	cr_assert_eq(job_finish(&ctx, 0), EXIT_DONE);

	/* A job without a scope option refuses it, project or not. */
	cr_assert_eq(start(&ctx, "http://127.0.0.1:9", "7"), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "scope=group:acme"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "factory-budget works on one project"), "%s", ferror_last());
	job_finish(&ctx, FACTORY_ECONFIG);
	setenv("FACTORY_SCOPE", "project", 1);
	cr_assert_eq(start(&ctx, "http://127.0.0.1:9", "7"), JOB_CONTINUE);
	cr_assert_eq(job_connect(&ctx), 0, "%s", ferror_last());
	job_finish(&ctx, 0);
	unsetenv("FACTORY_SCOPE");
}
