/* Tests for common/log.c: levels, line format, masking of registered secrets
 * and token-shaped strings, GitLab section markers. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "support/support.h"

static void cleanup(void)
{
	log_clear_secrets();
	log_set_stream(NULL);
	log_set_level(LOG_INFO);
}

TestSuite(log, .fini = cleanup);
TestSuite(mask, .fini = cleanup);
TestSuite(sections, .fini = cleanup);

static char *masked(const char *in)
{
	char *s = log_mask_dup(in);

	cr_assert_not_null(s);
	return s;
}

static void expect_mask(const char *in, const char *want)
{
	char *got = masked(in);

	cr_expect_str_eq(got, want, "[%s]: got [%s], want [%s]", in, got, want);
	free(got);
}

/* The input must come out without `secret` and with [MASKED]. */
static void expect_hidden(const char *in, const char *secret)
{
	char *got = masked(in);

	cr_expect_null(strstr(got, secret), "[%s] kept [%s]: [%s]", in, secret, got);
	cr_expect(strstr(got, "[MASKED]"), "[%s]: no [MASKED] in [%s]", in, got);
	free(got);
}

/* Run log lines into a temporary stream and return what was written. */
static char *capture(void (*fn)(void))
{
	FILE *f = tmpfile();
	char *s;
	long n;

	cr_assert_not_null(f);
	log_set_stream(f);
	fn();
	fflush(f);
	n = ftell(f);
	rewind(f);
	s = calloc(1, (size_t)n + 1);
	cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
	log_set_stream(NULL);
	fclose(f);
	return s;
}

/* ------------------------------------------------------------------ */
/* Levels and lines */

Test(log, level_names)
{
	cr_assert_eq(log_level_parse("debug"), LOG_DEBUG);
	cr_assert_eq(log_level_parse("info"), LOG_INFO);
	cr_assert_eq(log_level_parse("warn"), LOG_WARN);
	cr_assert_eq(log_level_parse("warning"), LOG_WARN);
	cr_assert_eq(log_level_parse("error"), LOG_ERROR);
	cr_assert_eq(log_level_parse("quiet"), LOG_QUIET);
	cr_assert_eq(log_level_parse("DEBUG"), LOG_DEBUG);
	cr_assert_eq(log_level_parse("Warn"), LOG_WARN);
	cr_assert_eq(log_level_parse("verbose"), -1);
	cr_assert_eq(log_level_parse(""), -1);
	cr_assert_eq(log_level_parse(NULL), -1);
}

Test(log, level_from_environment)
{
	log_set_level(LOG_INFO);
	setenv("FACTORY_LOG_LEVEL", "debug", 1);
	log_init_from_env();
	cr_assert_eq(log_get_level(), LOG_DEBUG);
	setenv("FACTORY_LOG_LEVEL", "nonsense", 1);
	log_init_from_env();
	cr_assert_eq(log_get_level(), LOG_DEBUG);
	setenv("FACTORY_LOG_LEVEL", "error", 1);
	log_init_from_env();
	cr_assert_eq(log_get_level(), LOG_ERROR);
	unsetenv("FACTORY_LOG_LEVEL");
}

static void four_lines(void)
{
	log_debug("d %d", 1);
	log_info("i %d", 2);
	log_warn("w %d", 3);
	log_error("e %d", 4);
}

Test(log, line_format)
{
	char *out;

	log_set_program("factory-test");
	log_set_level(LOG_INFO);
	out = capture(four_lines);
	cr_assert(tu_matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z info  factory-test: i 2\n"
	                  "[0-9T:Z-]+ warn  factory-test: w 3\n"
	                  "[0-9T:Z-]+ error factory-test: e 4\n$",
	                  out),
	          "[%s]", out);
	cr_assert_null(strchr(out, '\033'), "colour on a file");
	free(out);
}

Test(log, levels_filter_lines)
{
	char *out;

	log_set_level(LOG_DEBUG);
	out = capture(four_lines);
	cr_assert(strstr(out, " debug "), "%s", out);
	cr_assert(strstr(out, "d 1"));
	free(out);
	log_set_level(LOG_ERROR);
	out = capture(four_lines);
	cr_assert_null(strstr(out, "w 3"));
	cr_assert(strstr(out, "e 4"));
	free(out);
	log_set_level(LOG_QUIET);
	out = capture(four_lines);
	cr_assert_str_eq(out, "");
	free(out);
}

static void secret_lines(void)
{
	log_info("token is %s", "registered-secret-1");
	log_warn("header PRIVATE-TOKEN: %s", "glpat-abcdefghijklmnopqrst");
	log_error("url https://user:pw123456@gitlab.example.com/x");
}

Test(log, lines_are_masked)
{
	char *out;

	cr_assert_eq(log_add_secret("registered-secret-1"), 0);
	out = capture(secret_lines);
	cr_assert_null(strstr(out, "registered-secret-1"), "%s", out);
	cr_assert_null(strstr(out, "glpat-abc"), "%s", out);
	cr_assert_null(strstr(out, "pw123456"), "%s", out);
	cr_assert(strstr(out, "[MASKED]"));
	free(out);
}

static void long_line(void)
{
	char big[10000];

	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_info("%s", big);
}

Test(log, very_long_lines_are_cut_not_overflowed)
{
	char *out = capture(long_line);

	cr_assert_gt(strlen(out), 1000);
	cr_assert_lt(strlen(out), 10000);
	cr_assert_eq(out[strlen(out) - 1], '\n');
	free(out);
}

Test(log, error_messages_are_masked_too)
{
	cr_assert_eq(log_add_secret("hunter2-is-my-password"), 0);
	ferror_set(FACTORY_EAUTH, "login failed with %s", "hunter2-is-my-password");
	cr_assert_null(strstr(ferror_last(), "hunter2"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "login failed with [MASKED]"), "%s", ferror_last());
	ferror_set(FACTORY_EAUTH, "sent Bearer abcdefghijklmnop");
	cr_assert_null(strstr(ferror_last(), "abcdefghijklmnop"), "%s", ferror_last());
}

/* ------------------------------------------------------------------ */
/* Masking */

Test(mask, registered_secrets)
{
	cr_assert_eq(log_add_secret("abcdef-secret"), 0);
	cr_assert_eq(log_add_secret("another-one-42"), 0);
	expect_mask("x abcdef-secret y", "x [MASKED] y");
	expect_mask("abcdef-secretabcdef-secret", "[MASKED][MASKED]");
	expect_mask("another-one-42", "[MASKED]");
	expect_mask("abcdef-secre", "abcdef-secre");
	log_clear_secrets();
	expect_mask("x abcdef-secret y", "x abcdef-secret y");
}

Test(mask, short_secrets_are_ignored)
{
	cr_assert_eq(log_add_secret("abc"), 0);
	cr_assert_eq(log_add_secret(""), 0);
	cr_assert_eq(log_add_secret(NULL), 0);
	expect_mask("abc abc", "abc abc");
}

Test(mask, duplicate_and_too_many_secrets)
{
	char s[32];
	int i, rc = 0;

	cr_assert_eq(log_add_secret("same-secret"), 0);
	cr_assert_eq(log_add_secret("same-secret"), 0);
	for (i = 0; i < 100 && rc == 0; i++) {
		snprintf(s, sizeof(s), "secret-number-%03d", i);
		rc = log_add_secret(s);
	}
	cr_assert_eq(rc, FACTORY_ETOOBIG);
	expect_mask("same-secret", "[MASKED]");
	expect_mask("secret-number-000", "[MASKED]");
}

Test(mask, token_shapes)
{
	static const char *const tokens[] = {
	        "glpat-abcdefghij1234567890",
	        "gldt-abcdefghij1234567890",
	        "glrt-abcdefghij1234567890",
	        "glptt-abcdefghij1234567890",
	        "glcbt-abcdefghij1234567890",
	        "glimt-abcdefghij1234567890",
	        "glsoat-abcdefghij1234567890",
	        "GR1348941abcdefghij1234567890",
	        "sk-abcdefghij1234567890",
	        "sk-ant-api03-abcdefghij1234567890",
	        "xoxb-1234567890-abcdef",
	        "xoxp-1234567890-abcdef",
	        "xoxa-1234567890-abcdef",
	        "xoxs-1234567890-abcdef",
	        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
	        "gho_abcdefghijklmnopqrstuvwxyz0123456789",
	        "github_pat_11ABCDEFG0123456789_abcdefghijkl",
	        "AKIAIOSFODNN7EXAMPLE",
	        NULL,
	};
	char in[256];
	size_t i;

	for (i = 0; tokens[i]; i++) {
		snprintf(in, sizeof(in), "value %s end", tokens[i]);
		expect_mask(in, "value [MASKED] end");
		snprintf(in, sizeof(in), "%s", tokens[i]);
		expect_mask(in, "[MASKED]");
		snprintf(in, sizeof(in), "\"%s\"", tokens[i]);
		expect_mask(in, "\"[MASKED]\"");
	}
}

Test(mask, headers_and_urls)
{
	expect_hidden("Authorization: Bearer abc.def.ghi", "abc.def.ghi");
	expect_hidden("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz");
	expect_hidden("Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "eyJhbGciOiJIUzI1NiJ9");
	expect_hidden("PRIVATE-TOKEN: my-token-value", "my-token-value");
	expect_hidden("PRIVATE-TOKEN:my-token-value", "my-token-value");
	expect_hidden("JOB-TOKEN: job-token-value", "job-token-value");
	expect_hidden("-H 'PRIVATE-TOKEN: tok12345678'", "tok12345678");
	expect_mask("https://user:p4ssw0rd@gitlab.com/x.git", "https://[MASKED]@gitlab.com/x.git");
	expect_mask("https://oauth2:glpat-abcdefghijklmnop@gitlab.com", "https://[MASKED]@gitlab.com");
	expect_mask("https://gitlab.com/api/v4/projects", "https://gitlab.com/api/v4/projects");
	expect_mask("https://user@gitlab.com/x", "https://user@gitlab.com/x");
}

Test(mask, ordinary_text_is_unchanged)
{
	static const char *const plain[] = {
	        "label priority::1 created",
	        "GET /api/v4/projects/12/issues?page=2",
	        "sk is not a key",
	        "skip-tests",
	        "glpat",
	        "AKIA",
	        "2026-11-27T10:00:00Z info",
	        "a:b@c",
	        "",
	        "https://host:8080/path",
	        NULL,
	};
	size_t i;

	for (i = 0; plain[i]; i++)
		expect_mask(plain[i], plain[i]);
}

Test(mask, binary_and_length_bounded_input)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(log_mask(&b, "ab\0cd glpat-abcdefghijklmnop", 27), 0);
	cr_assert_eq(b.len, 14);
	cr_assert_eq(memcmp(b.ptr, "ab\0cd [MASKED]", 14), 0);
	fbuf_reset(&b);
	/* Only `len` bytes are read. */
	cr_assert_eq(log_mask(&b, "glpat-abcdefghijklmnop", 9), 0);
	cr_assert_str_eq(b.ptr, "glpat-abc");
	fbuf_release(&b);
}

/* This once deadlocked: fbuf's grow() reports ETOOBIG through ferror_set(),
 * which masks its message with log_mask_dup(), which took secrets_lock
 * again while the outer log_mask() held it. The timeout turns a relapse
 * into a failure instead of a hang. */
Test(mask, cap_is_respected, .timeout = 10)
{
	fbuf b;

	fbuf_init(&b, 4);
	cr_assert_eq(log_mask(&b, "hello world", 11), FACTORY_ETOOBIG);
	cr_assert_leq(b.len, 4);
	fbuf_release(&b);
}

static void *mask_worker(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < 2000; i++) {
		char *s = log_mask_dup("x thread-secret-value y");
		if (!s || strstr(s, "thread-secret-value"))
			return (void *)1;
		free(s);
	}
	return NULL;
}

Test(mask, concurrent_use)
{
	pthread_t t[4];
	void *rv;
	int i;

	cr_assert_eq(log_add_secret("thread-secret-value"), 0);
	for (i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, mask_worker, NULL), 0);
	for (i = 0; i < 50; i++) {
		char s[32];
		snprintf(s, sizeof(s), "other-secret-%02d", i % 20);
		log_add_secret(s);
	}
	for (i = 0; i < 4; i++) {
		cr_assert_eq(pthread_join(t[i], &rv), 0);
		cr_assert_null(rv);
	}
}

Test(mask, big_input)
{
	size_t n = 1 << 20, i;
	char *in = malloc(n + 1);
	char *out;

	for (i = 0; i < n; i++)
		in[i] = "glpat-xxxxxxxxxx Bearer yyyyyy "[i % 31];
	in[n] = '\0';
	out = masked(in);
	cr_assert_null(strstr(out, "xxxxxxxxxx"));
	free(out);
	free(in);
}

/* ------------------------------------------------------------------ */
/* Sections */

/* Run `fn` with stdout going to a temporary file; return what it printed. */
static char *stdout_of(void (*fn)(void))
{
	FILE *f = tmpfile();
	char *s = calloc(1, 8192);
	int saved;

	cr_assert_not_null(f);
	fflush(stdout);
	saved = dup(1);
	cr_assert_geq(saved, 0);
	cr_assert_geq(dup2(fileno(f), 1), 0);
	fn();
	fflush(stdout);
	cr_assert_geq(dup2(saved, 1), 0);
	close(saved);
	rewind(f);
	cr_assert_geq(fread(s, 1, 8191, f), 0);
	fclose(f);
	return s;
}

/* Parse one start marker; returns its time, or -1. */
static long long parse_start(const char *s, const char *name, const char *title, int collapsed)
{
	char want[512];
	long long t;
	const char *p;

	if (strncmp(s, "\033[0Ksection_start:", 18))
		return -1;
	t = strtoll(s + 18, (char **)&p, 10);
	snprintf(want, sizeof(want), ":%s%s\r\033[0K%s\n", name, collapsed ? "[collapsed=true]" : "", title);
	if (strncmp(p, want, strlen(want)))
		return -1;
	return t;
}

static void labels_section(void)
{
	log_section_start("setup_labels", "Setting up labels", 1);
	log_section_end("setup_labels");
}

static void build_section(void)
{
	log_section_start("build", "Build", 0);
}

static void odd_section(void)
{
	log_section_start("my section/1:x", "Using title-secret-123", 1);
	log_section_end("my section/1:x");
}

static void plain_section(void)
{
	log_section_start("Az09_.-", "t", 1);
}

Test(sections, exact_gitlab_format)
{
	long long before = (long long)time(NULL), t;
	char *out, *end, want[256];

	setenv("GITLAB_CI", "true", 1);
	out = stdout_of(labels_section);
	t = parse_start(out, "setup_labels", "Setting up labels", 1);
	cr_assert_geq(t, before, "start marker: [%s]", out);
	cr_assert_leq(t, (long long)time(NULL));
	end = strchr(out, '\n') + 1;
	snprintf(want, sizeof(want), "\033[0Ksection_end:%lld:setup_labels\r\033[0K\n", t);
	/* The end marker may be a second later. */
	cr_assert(!strcmp(end, want) || !strncmp(end, "\033[0Ksection_end:", 16), "end marker: [%s]", end);
	cr_assert(strstr(end, ":setup_labels\r\033[0K\n"), "[%s]", end);
	free(out);
}

Test(sections, not_collapsed)
{
	char *out;

	setenv("GITLAB_CI", "true", 1);
	out = stdout_of(build_section);
	cr_assert_geq(parse_start(out, "build", "Build", 0), 0, "[%s]", out);
	cr_assert_null(strstr(out, "collapsed"));
	free(out);
}

Test(sections, names_are_restricted_and_titles_masked)
{
	char *out;

	setenv("GITLAB_CI", "true", 1);
	cr_assert_eq(log_add_secret("title-secret-123"), 0);
	out = stdout_of(odd_section);
	cr_assert_geq(parse_start(out, "my_section_1_x", "Using [MASKED]", 1), 0, "[%s]", out);
	cr_assert(strstr(out, ":my_section_1_x\r\033[0K\n"), "[%s]", out);
	cr_assert_null(strstr(out, "title-secret-123"));
	free(out);
}

Test(sections, allowed_name_characters_pass)
{
	char *out;

	setenv("GITLAB_CI", "true", 1);
	out = stdout_of(plain_section);
	cr_assert_geq(parse_start(out, "Az09_.-", "t", 1), 0, "[%s]", out);
	free(out);
}
