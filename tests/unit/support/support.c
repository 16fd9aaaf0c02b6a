/*
 * support.c - helpers the unit tests share (see support.h).
 */
#include "support.h"

#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

void tu_tmpdir_make(char *dir, size_t len, const char *prefix)
{
	int n = snprintf(dir, len, "/tmp/%s.XXXXXX", prefix);

	cr_assert(n > 0 && (size_t)n < len, "directory name too long for its buffer");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

void tu_tmpdir_remove(const char *dir)
{
	char cmd[600];
	int n = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);

	cr_assert(n > 0 && (size_t)n < sizeof(cmd) && !strchr(dir, '\''), "cannot remove %s", dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static char job_old_cwd[4096];

void tu_job_dir_enter(char *dir, size_t len, const char *prefix, const char *token)
{
	tu_tmpdir_make(dir, len, prefix);
	cr_assert_not_null(getcwd(job_old_cwd, sizeof(job_old_cwd)));
	cr_assert_eq(chdir(dir), 0);
	setenv("FACTORY_GITLAB_TOKEN", token, 1);
	setenv("FACTORY_LOG_LEVEL", "error", 1);
	unsetenv("FACTORY_SCOPE");
}

void tu_job_dir_leave(const char *dir)
{
	cr_assert_eq(chdir(job_old_cwd), 0);
	tu_tmpdir_remove(dir);
}

static char *log_text;
static size_t log_len;
static FILE *log_file;

void tu_log_capture(log_level level)
{
	tu_log_release();
	log_file = open_memstream(&log_text, &log_len);
	cr_assert_not_null(log_file);
	log_set_stream(log_file);
	log_set_level(level);
}

const char *tu_log_text(void)
{
	if (log_file)
		fflush(log_file);
	return log_text ? log_text : "";
}

void tu_log_release(void)
{
	if (!log_file)
		return;
	log_set_stream(NULL);
	fclose(log_file);
	log_file = NULL;
	free(log_text);
	log_text = NULL;
	log_len = 0;
}

int tu_matches(const char *re, const char *s)
{
	regex_t rx;
	int ok;

	cr_assert_eq(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0, "bad regex %s", re);
	ok = regexec(&rx, s, 0, NULL, 0) == 0;
	regfree(&rx);
	return ok;
}

void tu_no_sleep(long ms)
{
	(void)ms;
}

int tu_text_sink(void *ctx, const char *data, size_t len)
{
	tu_text *t = ctx;

	if (t->len + len >= sizeof(t->data))
		return FACTORY_ETOOBIG;
	memcpy(t->data + t->len, data, len);
	t->len += len;
	t->data[t->len] = '\0';
	t->calls++;
	return 0;
}

gitlab *tu_gitlab_for(ts_server *s, const char *project, const char *token, int dry_run, int max_retries)
{
	gitlab_options o;
	gitlab *gl = NULL;
	char url[256];

	ts_url(url, sizeof(url), s, "/api/v4/");
	gitlab_options_init(&o);
	o.api_url = url;
	o.project = project;
	o.token = token;
	o.dry_run = dry_run;
	o.http.max_retries = max_retries;
	o.http.backoff_base_ms = 1;
	cr_assert_eq(gitlab_new(&gl, &o), 0, "%s", ferror_last());
	return gl;
}
