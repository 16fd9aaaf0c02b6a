/* Tests for common/report.c: report.json fields, report.md layout and
 * escaping, masking of everything written, atomic writes, directories. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "report.h"
#include "support/support.h"

static char dir[256];

static void setup(void)
{
	tu_tmpdir_make(dir, sizeof(dir), "report_test");
}

static void teardown(void)
{
	log_clear_secrets();
	tu_tmpdir_remove(dir);
}

TestSuite(report, .init = setup, .fini = teardown);

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	cr_assert_not_null(f, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	s[n] = '\0';
	fclose(f);
	return s;
}

static char *read_in(const char *sub, const char *name)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	return slurp(path);
}

static cJSON *read_json(const char *sub)
{
	char *s = read_in(sub, "report.json");
	cJSON *j = cJSON_Parse(s);

	cr_assert_not_null(j, "report.json does not parse: %s", s);
	free(s);
	return j;
}

static void write_to(report *r, const char *sub, int code)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	cr_assert_eq(report_write(r, path, code), 0, "%s", ferror_last());
}

Test(report, json_has_every_field)
{
	report *r = NULL;
	cJSON *j, *a, *c;

	cr_assert_eq(report_new(&r, "factory-setup", 0), 0);
	cr_assert_eq(report_action(r, "label.create", "priority::1", "color %s", "#ff0000"), 0);
	cr_assert_eq(report_action(r, "board.create", "Factory", "board created"), 0);
	report_counter_set(r, "api_requests", 12);
	report_counter_add(r, "api_requests", 3);
	report_counter_add(r, "api_writes", 2);
	cr_assert_eq(report_summary(r, "%d changes", 2), 0);
	cJSON_AddStringToObject(report_data(r), "board", "Factory");
	cr_assert_eq(report_action_count(r), 2);
	write_to(r, "out", 0);
	report_free(r);

	j = read_json("out");
	cr_assert_str_eq(cJSON_GetObjectItem(j, "job")->valuestring, "factory-setup");
	cr_assert(cJSON_IsString(cJSON_GetObjectItem(j, "version")));
	cr_assert(tu_matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
	                  cJSON_GetObjectItem(j, "started_at")->valuestring));
	cr_assert(tu_matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
	                  cJSON_GetObjectItem(j, "finished_at")->valuestring));
	cr_assert_leq(strcmp(cJSON_GetObjectItem(j, "started_at")->valuestring,
	                     cJSON_GetObjectItem(j, "finished_at")->valuestring),
	              0);
	cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "dry_run")));
	cr_assert_eq(cJSON_GetObjectItem(j, "exit_code")->valueint, 0);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "summary")->valuestring, "2 changes");
	c = cJSON_GetObjectItem(j, "counters");
	cr_assert_eq(cJSON_GetObjectItem(c, "api_requests")->valueint, 15);
	cr_assert_eq(cJSON_GetObjectItem(c, "api_writes")->valueint, 2);
	cr_assert_str_eq(c->child->string, "api_requests"); /* order kept */
	a = cJSON_GetObjectItem(j, "actions");
	cr_assert_eq(cJSON_GetArraySize(a), 2);
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "kind")->valuestring, "label.create");
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "target")->valuestring, "priority::1");
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "detail")->valuestring, "color #ff0000");
	cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "dry_run")));
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "board")->valuestring, "Factory");
	cJSON_Delete(j);
}

Test(report, empty_report_and_exit_code)
{
	report *r = NULL;
	cJSON *j;

	cr_assert_eq(report_new(&r, "factory-x", 1), 0);
	write_to(r, "e", 3);
	report_free(r);
	j = read_json("e");
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "dry_run")));
	cr_assert_eq(cJSON_GetObjectItem(j, "exit_code")->valueint, 3);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "summary")->valuestring, "");
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "actions")), 0);
	cr_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "counters")));
	cr_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "data")));
	cJSON_Delete(j);
}

Test(report, dry_run_marks_actions)
{
	report *r = NULL;
	cJSON *j, *a;
	char *md;

	cr_assert_eq(report_new(&r, "factory-setup", 1), 0);
	cr_assert_eq(report_action(r, "label.create", "x", NULL), 0);
	write_to(r, "d", 0);
	report_free(r);
	j = read_json("d");
	a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "actions"), 0);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(a, "dry_run")));
	cr_assert_str_eq(cJSON_GetObjectItem(a, "detail")->valuestring, "");
	cJSON_Delete(j);
	md = read_in("d", "report.md");
	cr_assert(strstr(md, "dry run"), "%s", md);
	free(md);
}

Test(report, counters)
{
	report *r = NULL;

	cr_assert_eq(report_new(&r, "j", 0), 0);
	cr_assert_eq(report_counter_get(r, "none"), 0);
	report_counter_add(r, "n", 5);
	report_counter_add(r, "n", -2);
	cr_assert_eq(report_counter_get(r, "n"), 3);
	report_counter_set(r, "n", 100);
	cr_assert_eq(report_counter_get(r, "n"), 100);
	report_counter_set(NULL, "n", 1);
	report_counter_add(r, NULL, 1);
	cr_assert_eq(report_counter_get(NULL, "n"), 0);
	report_free(r);
	report_free(NULL);
}

Test(report, markdown_layout)
{
	report *r = NULL;
	char *md;

	cr_assert_eq(report_new(&r, "factory-setup", 0), 0);
	cr_assert_eq(report_summary(r, "made %d changes", 2), 0);
	report_counter_set(r, "api_requests", 7);
	cr_assert_eq(report_action(r, "label.create", "priority::1", "color red"), 0);
	cr_assert_eq(report_markdown(r, "## Board\n\n%s\n", "all lists present"), 0);
	cr_assert_eq(report_markdown(r, "extra line"), 0);
	write_to(r, "m", 0);
	report_free(r);
	md = read_in("m", "report.md");
	cr_assert_eq(strncmp(md, "# factory-setup report\n", 23), 0, "%s", md);
	cr_assert(strstr(md, "made 2 changes"));
	cr_assert(strstr(md, "| Counter | Value |"));
	cr_assert(strstr(md, "| api_requests | 7 |"), "%s", md);
	cr_assert(strstr(md, "| # | Kind | Target | Detail |"));
	cr_assert(strstr(md, "| 1 | label.create | priority::1 | color red |"), "%s", md);
	cr_assert(strstr(md, "## Board\n\nall lists present\nextra line\n"), "%s", md);
	/* Order: summary, counters, actions, then the job's sections. */
	cr_assert(strstr(md, "made 2 changes") < strstr(md, "| Counter"));
	cr_assert(strstr(md, "| Counter") < strstr(md, "| # | Kind"));
	cr_assert(strstr(md, "| # | Kind") < strstr(md, "## Board"));
	free(md);
}

Test(report, title_for_short_job_names)
{
	report *r = NULL;
	char *md;

	cr_assert_eq(report_new(&r, "triage", 0), 0);
	write_to(r, "t", 0);
	report_free(r);
	md = read_in("t", "report.md");
	cr_assert_eq(strncmp(md, "# factory-triage report\n", 24), 0, "%s", md);
	free(md);
}

Test(report, table_cells_are_escaped)
{
	report *r = NULL;
	char *md;

	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_action(r, "a|b", "line1\nline2\r\nline3", "back\\slash | pipe"), 0);
	report_counter_set(r, "odd|name", 1);
	write_to(r, "esc", 0);
	report_free(r);
	md = read_in("esc", "report.md");
	cr_assert(strstr(md, "| 1 | a\\|b | line1<br>line2<br>line3 | back\\\\slash \\| pipe |"), "%s", md);
	cr_assert(strstr(md, "| odd\\|name | 1 |"), "%s", md);
	free(md);
}

Test(report, everything_written_is_masked)
{
	const char *secret = "s3cr3t-value-xyz";
	report *r = NULL;
	char *md, *json;
	cJSON *nested;

	cr_assert_eq(log_add_secret(secret), 0);
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_summary(r, "summary %s", secret), 0);
	cr_assert_eq(report_action(r, secret, secret, "detail %s", secret), 0);
	cr_assert_eq(report_action(r, "k", "t", "token glpat-abcdefghijklmnopqrst"), 0);
	report_counter_set(r, secret, 1);
	cr_assert_eq(report_markdown(r, "section %s and glpat-zzzzzzzzzzzzzzzzzzzz\n", secret), 0);
	cJSON_AddStringToObject(report_data(r), "value", secret);
	cJSON_AddStringToObject(report_data(r), secret, "as a key");
	nested = cJSON_AddArrayToObject(report_data(r), "list");
	cJSON_AddItemToArray(nested, cJSON_CreateString("Bearer abcdefghijklmnop"));
	write_to(r, "mask", 0);
	/* The job's own data is left as it was. */
	cr_assert_str_eq(cJSON_GetObjectItem(report_data(r), "value")->valuestring, secret);
	report_free(r);
	json = read_in("mask", "report.json");
	md = read_in("mask", "report.md");
	cr_assert_null(strstr(json, secret), "%s", json);
	cr_assert_null(strstr(md, secret), "%s", md);
	cr_assert_null(strstr(json, "glpat-abcdef"), "%s", json);
	cr_assert_null(strstr(md, "glpat-zzzz"), "%s", md);
	cr_assert_null(strstr(json, "abcdefghijklmnop"), "%s", json);
	cr_assert(strstr(json, "[MASKED]"));
	cr_assert(strstr(md, "[MASKED]"));
	free(json);
	free(md);
}

static int count_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

Test(report, writes_are_atomic_and_leave_no_temporary_files)
{
	report *r = NULL;
	char path[600];
	struct stat st;
	cJSON *j;

	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_summary(r, "first"), 0);
	write_to(r, "a/b/c", 0);
	cr_assert_eq(report_summary(r, "second"), 0);
	write_to(r, "a/b/c", 1);
	report_free(r);
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	cr_assert_eq(count_entries(path), 2);
	j = read_json("a/b/c");
	cr_assert_str_eq(cJSON_GetObjectItem(j, "summary")->valuestring, "second");
	cJSON_Delete(j);
	snprintf(path, sizeof(path), "%s/a/b/c/report.json", dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0644);
}

Test(report, directory_errors)
{
	report *r = NULL;
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/file", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fclose(f);
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_write(r, path, 0), FACTORY_ERR);
	cr_assert(strstr(ferror_last(), "report directory"), "%s", ferror_last());
	snprintf(path, sizeof(path), "%s/file/sub", dir);
	cr_assert_eq(report_write(r, path, 0), FACTORY_ERR);
	cr_assert_eq(report_write(NULL, dir, 0), FACTORY_ERR);
	cr_assert_eq(count_entries(dir), 1);
	report_free(r);
}

Test(report, unwritable_directory_fails_cleanly)
{
	report *r = NULL;
	char path[600];

	if (geteuid() == 0)
		cr_skip_test("root can write anywhere");
	snprintf(path, sizeof(path), "%s/ro", dir);
	cr_assert_eq(mkdir(path, 0555), 0);
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_write(r, path, 0), FACTORY_ERR);
	cr_assert_eq(count_entries(path), 0);
	report_free(r);
}

Test(report, default_directory_is_factory_report)
{
	report *r = NULL;
	char cwd[512], path[600];
	struct stat st;

	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(dir), 0);
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_write(r, NULL, 0), 0);
	report_free(r);
	snprintf(path, sizeof(path), "%s/factory-report/report.md", dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(chdir(cwd), 0);
}

Test(report, many_actions_stay_in_json_and_are_cut_in_markdown)
{
	report *r = NULL;
	cJSON *j;
	char *md;
	int i;

	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	for (i = 0; i < 1500; i++)
		cr_assert_eq(report_action(r, "k", "t", "n %d", i), 0);
	cr_assert_eq(report_action_count(r), 1500);
	write_to(r, "many", 0);
	report_free(r);
	j = read_json("many");
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "actions")), 1500);
	cJSON_Delete(j);
	md = read_in("many", "report.md");
	cr_assert(strstr(md, "| 1000 | k | t | n 999 |"));
	cr_assert_null(strstr(md, "| 1001 |"));
	cr_assert(strstr(md, "500 more actions are listed in report.json"), "%s", md + strlen(md) - 200);
	free(md);
}

Test(report, ci_context_is_recorded)
{
	report *r = NULL;
	cJSON *j, *ci;

	setenv("CI_JOB_ID", "4242", 1);
	setenv("CI_PROJECT_PATH", "group/project", 1);
	unsetenv("CI_JOB_URL");
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	write_to(r, "ci", 0);
	report_free(r);
	j = read_json("ci");
	ci = cJSON_GetObjectItem(j, "ci");
	cr_assert_not_null(ci);
	cr_assert_str_eq(cJSON_GetObjectItem(ci, "CI_JOB_ID")->valuestring, "4242");
	cr_assert_str_eq(cJSON_GetObjectItem(ci, "CI_PROJECT_PATH")->valuestring, "group/project");
	cr_assert_null(cJSON_GetObjectItem(ci, "CI_JOB_URL"));
	cJSON_Delete(j);
}

Test(report, hostile_strings_stay_valid_json)
{
	report *r = NULL;
	cJSON *j;
	char odd[64];

	snprintf(odd, sizeof(odd), "quote\" back\\ nl\n tab\t ctl\x01 \xFF end");
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	cr_assert_eq(report_action(r, odd, odd, "%s", odd), 0);
	cr_assert_eq(report_summary(r, "%s", odd), 0);
	write_to(r, "odd", 0);
	report_free(r);
	j = read_json("odd");
	cr_assert_str_eq(cJSON_GetObjectItem(j, "summary")->valuestring, odd);
	cJSON_Delete(j);
}

Test(report, times_are_utc_whatever_the_zone)
{
	report *r = NULL;
	cJSON *j;
	char now[32];
	time_t t = time(NULL);
	struct tm tm;

	setenv("TZ", "Pacific/Kiritimati", 1);
	tzset();
	cr_assert_eq(report_new(&r, "factory-x", 0), 0);
	write_to(r, "tz", 0);
	report_free(r);
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H", &tm);
	j = read_json("tz");
	cr_assert_eq(strncmp(cJSON_GetObjectItem(j, "started_at")->valuestring, now, strlen(now)), 0);
	cJSON_Delete(j);
}
