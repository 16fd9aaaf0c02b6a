/*
 * support.h - what the unit tests share besides the scripted server
 * (testserver.h): a temporary directory, the log caught in memory, a
 * regex match, a backoff that does not sleep, a capped text sink and a
 * GitLab client for a scripted server. Linked into every unit test binary
 * (the Makefile links every .c file of this folder); include it as
 * "support/support.h".
 *
 * Each helper fails the running test (a Criterion assertion) when its own
 * set-up fails, so a test never goes on with half a fixture.
 */
#ifndef FACTORY_TEST_SUPPORT_H
#define FACTORY_TEST_SUPPORT_H

#include <stddef.h>

#include "gitlab.h"
#include "log.h"
#include "../testserver.h"

/* Make a new directory /tmp/<prefix>.XXXXXX into `dir` (`len` bytes). */
void tu_tmpdir_make(char *dir, size_t len, const char *prefix);
/* Remove `dir` and everything under it. */
void tu_tmpdir_remove(const char *dir);

/* For tests of job.h: make a new directory as tu_tmpdir_make() and work in
 * it (so no .factory.yml of the source tree is read), with the token
 * `token` in FACTORY_GITLAB_TOKEN, FACTORY_LOG_LEVEL=error and no
 * FACTORY_SCOPE. tu_job_dir_leave() goes back to the directory the test
 * started in and removes `dir`. */
void tu_job_dir_enter(char *dir, size_t len, const char *prefix, const char *token);
void tu_job_dir_leave(const char *dir);

/* Send log.h output at `level` and above into memory until
 * tu_log_release(), which puts it back on stderr and frees the text. */
void tu_log_capture(log_level level);
/* What was logged since tu_log_capture() ("" if nothing); valid until the
 * next log line or tu_log_release(). */
const char *tu_log_text(void);
void tu_log_release(void);

/* Whether `s` matches the extended regular expression `re`. */
int tu_matches(const char *re, const char *s);

/* A sleep for http_set_sleep() / llm_set_sleep() that returns at once. */
void tu_no_sleep(long ms);

/* A text sink (http.h and gitlab.h sink shape) into a fixed buffer: the
 * data stays NUL-terminated; FACTORY_ETOOBIG when it would not fit. */
typedef struct {
	char data[256];
	size_t len;
	int calls;
} tu_text;

int tu_text_sink(void *ctx, const char *data, size_t len);

/* A GitLab client for the server `s` (its /api/v4/), project `project`,
 * token `token`, with `max_retries` quick retries (1 ms backoff). */
gitlab *tu_gitlab_for(ts_server *s, const char *project, const char *token, int dry_run, int max_retries);

#endif
