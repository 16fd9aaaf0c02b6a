/* Tests for common/config.c: precedence across flags, environment, files
 * and defaults; typed getters and their messages; YAML to cJSON with types,
 * limits and errors; merging of several files. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "support/support.h"

static fconfig *cfg;
static char dir[256];

static void setup(void)
{
	tu_tmpdir_make(dir, sizeof(dir), "config_test");
	cr_assert_eq(fconfig_new(&cfg), 0);
}

static void teardown(void)
{
	fconfig_free(cfg);
	cfg = NULL;
	tu_tmpdir_remove(dir);
}

TestSuite(precedence, .init = setup, .fini = teardown);
TestSuite(getters, .init = setup, .fini = teardown);
TestSuite(yaml, .init = setup, .fini = teardown);
TestSuite(load, .init = setup, .fini = teardown);

/* Write `text` to dir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text, size_t len)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	return path;
}

static void load(const char *yaml, const char *name)
{
	int rc = fconfig_load_yaml_string(cfg, yaml, name);
	cr_assert_eq(rc, 0, "load %s: %s", name, ferror_last());
}

static void expect_get(const char *key, const char *want, fconfig_source want_src)
{
	fconfig_source src = (fconfig_source)-1;
	const char *v = fconfig_get(cfg, key, &src);

	if (!want) {
		cr_assert_null(v, "%s: want unset, got [%s]", key, v);
		return;
	}
	cr_assert_not_null(v, "%s: unset, want [%s]", key, want);
	cr_assert_str_eq(v, want, "%s: got [%s], want [%s]", key, v, want);
	cr_assert_eq(src, want_src, "%s: source %s, want %s", key, fconfig_source_name(src),
	             fconfig_source_name(want_src));
}

/* Parse YAML and return the compact JSON text (caller frees). */
static char *json_of(const char *yaml)
{
	cJSON *j = NULL;
	char *s;
	int rc = fconfig_yaml_to_json(&j, yaml, strlen(yaml), "t.yml");

	cr_assert_eq(rc, 0, "[%s]: %s", yaml, ferror_last());
	s = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	return s;
}

static void expect_json(const char *yaml, const char *want)
{
	char *got = json_of(yaml);
	cr_expect_str_eq(got, want, "[%s]: got %s, want %s", yaml, got, want);
	free(got);
}

/* The YAML must be refused with a message containing every `parts` string. */
static void expect_yaml_error(const char *yaml, size_t len, const char *const *parts)
{
	cJSON *j = (cJSON *)1;
	int rc = fconfig_yaml_to_json(&j, yaml, len, "bad.yml");
	size_t i;

	cr_assert_eq(rc, FACTORY_ECONFIG, "[%.60s] was accepted", yaml);
	cr_assert_null(j);
	for (i = 0; parts[i]; i++)
		cr_expect(strstr(ferror_last(), parts[i]), "[%.60s]: message [%s] lacks [%s]", yaml, ferror_last(),
		          parts[i]);
}

#define YAML_ERR(yaml, ...)                                                                                            \
	do {                                                                                                           \
		const char *const parts_[] = {__VA_ARGS__, NULL};                                                      \
		expect_yaml_error(yaml, strlen(yaml), parts_);                                                         \
	} while (0)

/* ------------------------------------------------------------------ */
/* Precedence */

Test(precedence, flag_over_env_over_file_over_default)
{
	cr_assert_eq(fconfig_set(cfg, CONFIG_DEFAULT, "wip_limit", "1"), 0);
	expect_get("wip_limit", "1", CONFIG_DEFAULT);
	load("wip_limit: 2\n", "f.yml");
	expect_get("wip_limit", "2", CONFIG_FILE);
	setenv("FACTORY_WIP_LIMIT", "3", 1);
	expect_get("wip_limit", "3", CONFIG_ENV);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "wip_limit", "4"), 0);
	expect_get("wip_limit", "4", CONFIG_FLAG);

	/* Peel them off again, top first. */
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "wip_limit", NULL), 0);
	expect_get("wip_limit", "3", CONFIG_ENV);
	unsetenv("FACTORY_WIP_LIMIT");
	expect_get("wip_limit", "2", CONFIG_FILE);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "wip_limit", NULL), 0);
	expect_get("wip_limit", "1", CONFIG_DEFAULT);
	cr_assert_eq(fconfig_set(cfg, CONFIG_DEFAULT, "wip_limit", NULL), 0);
	expect_get("wip_limit", NULL, 0);
}

Test(precedence, order_of_setting_does_not_matter)
{
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "k", "flag"), 0);
	setenv("FACTORY_K", "env", 1);
	load("k: file\n", "f.yml");
	cr_assert_eq(fconfig_set(cfg, CONFIG_DEFAULT, "k", "default"), 0);
	expect_get("k", "flag", CONFIG_FLAG);
}

Test(precedence, every_pair_of_sources)
{
	static const fconfig_source order[] = {CONFIG_DEFAULT, CONFIG_FILE, CONFIG_ENV, CONFIG_FLAG};
	static const char *const names[] = {"default", "file", "env", "flag"};
	size_t lo, hi;
	char key[32], env[64], yaml[64];

	for (lo = 0; lo < 4; lo++) {
		for (hi = lo + 1; hi < 4; hi++) {
			size_t pick[2] = {lo, hi}, k;
			snprintf(key, sizeof(key), "pair_%zu_%zu", lo, hi);
			for (k = 0; k < 2; k++) {
				size_t s = pick[k];
				if (order[s] == CONFIG_ENV) {
					fconfig_env_name(env, sizeof(env), key);
					setenv(env, names[s], 1);
				} else if (order[s] == CONFIG_FILE) {
					snprintf(yaml, sizeof(yaml), "%s: %s\n", key, names[s]);
					load(yaml, "pairs.yml");
				} else {
					cr_assert_eq(fconfig_set(cfg, order[s], key, names[s]), 0);
				}
			}
			expect_get(key, names[hi], order[hi]);
		}
	}
}

Test(precedence, nested_keys_from_files_env_and_flags)
{
	load("triage:\n  wip_limit: 5\n  rules:\n    - a\n", "nested.yml");
	expect_get("triage.wip_limit", "5", CONFIG_FILE);
	setenv("FACTORY_TRIAGE_WIP_LIMIT", "6", 1);
	expect_get("triage.wip_limit", "6", CONFIG_ENV);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "triage.wip_limit", "7"), 0);
	expect_get("triage.wip_limit", "7", CONFIG_FLAG);
	expect_get("triage.rules", NULL, 0);
	expect_get("triage", NULL, 0);
}

Test(precedence, empty_environment_variable_counts_as_unset)
{
	load("project: from-file\n", "f.yml");
	setenv("FACTORY_PROJECT", "", 1);
	expect_get("project", "from-file", CONFIG_FILE);
}

Test(precedence, env_is_read_on_demand)
{
	expect_get("late", NULL, 0);
	setenv("FACTORY_LATE", "now", 1);
	expect_get("late", "now", CONFIG_ENV);
	setenv("FACTORY_LATE", "changed", 1);
	expect_get("late", "changed", CONFIG_ENV);
}

Test(precedence, explicit_env_value_stands_in_for_the_environment)
{
	setenv("FACTORY_STUB", "real", 1);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "stub", "stubbed"), 0);
	expect_get("stub", "stubbed", CONFIG_ENV);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "stub", NULL), 0);
	expect_get("stub", "real", CONFIG_ENV);
}

Test(precedence, later_sets_replace_earlier_ones)
{
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "x", "1"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "x", "2"), 0);
	expect_get("x", "2", CONFIG_FLAG);
	cr_assert_str_eq(fconfig_get_str(cfg, "x", "d"), "2");
	cr_assert_str_eq(fconfig_get_str(cfg, "nope", "d"), "d");
	cr_assert_null(fconfig_get_str(cfg, "nope", NULL));
	cr_assert_null(fconfig_get(cfg, "nope", NULL));
}

Test(precedence, bad_sets_are_refused)
{
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "", "x"), FACTORY_EINVALID);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, NULL, "x"), FACTORY_EINVALID);
	cr_assert_eq(fconfig_set(cfg, (fconfig_source)9, "k", "x"), FACTORY_EINVALID);
}

Test(precedence, many_keys)
{
	char key[32], val[32];
	int i;

	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		cr_assert_eq(fconfig_set(cfg, i % 2 ? CONFIG_FLAG : CONFIG_DEFAULT, key, val), 0);
	}
	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		expect_get(key, val, i % 2 ? CONFIG_FLAG : CONFIG_DEFAULT);
	}
}

/* ------------------------------------------------------------------ */
/* Names */

Test(getters, derived_names)
{
	char buf[64];

	fconfig_env_name(buf, sizeof(buf), "triage.wip_limit");
	cr_assert_str_eq(buf, "FACTORY_TRIAGE_WIP_LIMIT");
	fconfig_env_name(buf, sizeof(buf), "http.timeout-ms");
	cr_assert_str_eq(buf, "FACTORY_HTTP_TIMEOUT_MS");
	fconfig_flag_name(buf, sizeof(buf), "triage.wip_limit");
	cr_assert_str_eq(buf, "triage-wip-limit");
	fconfig_env_name(buf, 10, "abcdef");
	cr_assert_str_eq(buf, "FACTORY_A");
	fconfig_env_name(buf, 4, "abcdef");
	cr_assert_str_eq(buf, "FAC");
	fconfig_flag_name(buf, 3, "abcdef");
	cr_assert_str_eq(buf, "ab");
	buf[0] = 'x';
	fconfig_flag_name(buf, 0, "abc");
	cr_assert_eq(buf[0], 'x');
	cr_assert_str_eq(fconfig_source_name(CONFIG_DEFAULT), "default");
	cr_assert_str_eq(fconfig_source_name(CONFIG_FILE), "file");
	cr_assert_str_eq(fconfig_source_name(CONFIG_ENV), "environment");
	cr_assert_str_eq(fconfig_source_name(CONFIG_FLAG), "flag");
}

/* ------------------------------------------------------------------ */
/* Typed getters */

static void expect_long(const char *value, long min, long max, int ok, long want)
{
	long v = -12345;
	int rc;

	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "n", value), 0);
	rc = fconfig_get_long(&v, cfg, "n", 7, min, max);
	if (ok) {
		cr_expect_eq(rc, 0, "[%s]: %s", value, ferror_last());
		cr_expect_eq(v, want, "[%s]: got %ld, want %ld", value, v, want);
	} else {
		cr_expect_eq(rc, FACTORY_ECONFIG, "[%s] accepted as %ld", value, v);
	}
}

Test(getters, whole_numbers)
{
	long v = 0;

	cr_assert_eq(fconfig_get_long(&v, cfg, "n", 7, 1, 100), 0);
	cr_assert_eq(v, 7);
	expect_long("42", 1, 100, 1, 42);
	expect_long(" 42 ", 1, 100, 1, 42);
	expect_long("+5", 1, 100, 1, 5);
	expect_long("-5", -10, 10, 1, -5);
	expect_long("1", 1, 100, 1, 1);
	expect_long("100", 1, 100, 1, 100);
	expect_long("0", 1, 100, 0, 0);
	expect_long("101", 1, 100, 0, 0);
	expect_long("abc", 1, 100, 0, 0);
	expect_long("3.0", 1, 100, 0, 0);
	expect_long("0x10", 1, 100, 0, 0);
	expect_long("1e3", 1, 10000, 0, 0);
	expect_long("", 1, 100, 0, 0);
	expect_long(" ", 1, 100, 0, 0);
	expect_long("-", 1, 100, 0, 0);
	expect_long("12abc", 1, 100, 0, 0);
	expect_long("1 2", 1, 100, 0, 0);
	expect_long("99999999999999999999999", LONG_MIN, LONG_MAX, 0, 0);
	expect_long("9223372036854775807", LONG_MIN, LONG_MAX, 1, LONG_MAX);
	expect_long("-9223372036854775808", LONG_MIN, LONG_MAX, 1, LONG_MIN);
}

Test(getters, number_errors_name_key_value_and_every_source)
{
	long v;

	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "wip_limit", "abc"), 0);
	cr_assert_eq(fconfig_get_long(&v, cfg, "wip_limit", 3, 1, 100), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(),
	                 "bad setting wip_limit=abc (from --wip-limit): expected a whole number from 1 to 100");
	cr_assert_eq(v, 3);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "wip_limit", NULL), 0);

	setenv("FACTORY_WIP_LIMIT", "500", 1);
	cr_assert_eq(fconfig_get_long(&v, cfg, "wip_limit", 3, 1, 100), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(),
	                 "bad setting wip_limit=500 (from FACTORY_WIP_LIMIT): expected a whole number from 1 to 100");
	unsetenv("FACTORY_WIP_LIMIT");

	load("wip_limit: many\n", "team.yml");
	cr_assert_eq(fconfig_get_long(&v, cfg, "wip_limit", 3, 1, 100), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(),
	                 "bad setting wip_limit=many (from team.yml): expected a whole number from 1 to 100");

	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "wip_limit", NULL), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_DEFAULT, "wip_limit", "zero"), 0);
	cr_assert_eq(fconfig_get_long(&v, cfg, "wip_limit", 3, 1, 100), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(),
	                 "bad setting wip_limit=zero (from the default): expected a whole number from 1 to 100");

	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "any", "x"), 0);
	cr_assert_eq(fconfig_get_long(&v, cfg, "any", 0, LONG_MIN, LONG_MAX), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(), "bad setting any=x (from --any): expected a whole number");
}

Test(getters, nested_key_errors_name_the_file_that_set_it)
{
	long v;

	load("http:\n  timeout_ms: soon\n", "first.yml");
	load("other: 1\n", "second.yml");
	cr_assert_eq(fconfig_get_long(&v, cfg, "http.timeout_ms", 1000, 100, 60000), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "http.timeout_ms=soon (from first.yml)"), "%s", ferror_last());
	setenv("FACTORY_HTTP_TIMEOUT_MS", "x", 1);
	cr_assert_eq(fconfig_get_long(&v, cfg, "http.timeout_ms", 1000, 100, 60000), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "(from FACTORY_HTTP_TIMEOUT_MS)"), "%s", ferror_last());
}

Test(getters, long_and_hostile_values_are_shown_cut_and_clean)
{
	char big[300];
	long v;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "n", big), 0);
	cr_assert_eq(fconfig_get_long(&v, cfg, "n", 0, 0, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "xxx..."), "%s", ferror_last());
	cr_assert_lt(strlen(ferror_last()), 250);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "n", "a\nb\033c"), 0);
	cr_assert_eq(fconfig_get_long(&v, cfg, "n", 0, 0, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "n=a?b?c "), "%s", ferror_last());
}

static void expect_bool(const char *value, int ok, int want)
{
	int v = -1, rc;

	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "b", value), 0);
	rc = fconfig_get_bool(&v, cfg, "b", 0);
	if (ok) {
		cr_expect_eq(rc, 0, "[%s]: %s", value, ferror_last());
		cr_expect_eq(v, want, "[%s]", value);
	} else {
		cr_expect_eq(rc, FACTORY_ECONFIG, "[%s] accepted", value);
	}
}

Test(getters, booleans)
{
	int v = -1;

	cr_assert_eq(fconfig_get_bool(&v, cfg, "b", 1), 0);
	cr_assert_eq(v, 1);
	cr_assert_eq(fconfig_get_bool(&v, cfg, "b", 0), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(fconfig_get_bool(&v, cfg, "b", 5), 0);
	cr_assert_eq(v, 1);
	expect_bool("true", 1, 1);
	expect_bool("TRUE", 1, 1);
	expect_bool("True", 1, 1);
	expect_bool("yes", 1, 1);
	expect_bool("on", 1, 1);
	expect_bool("1", 1, 1);
	expect_bool(" yes ", 1, 1);
	expect_bool("false", 1, 0);
	expect_bool("no", 1, 0);
	expect_bool("OFF", 1, 0);
	expect_bool("0", 1, 0);
	expect_bool("", 0, 0);
	expect_bool("2", 0, 0);
	expect_bool("truee", 0, 0);
	expect_bool("y", 0, 0);
	expect_bool("nope", 0, 0);
	cr_assert(strstr(ferror_last(), "bad setting b=nope (from --b): expected true or false"), "%s", ferror_last());
}

Test(getters, booleans_from_yaml_file_use_the_text)
{
	int v = -1;

	load("a: true\nb: yes\nc: 'off'\nd: 0\n", "f.yml");
	cr_assert_eq(fconfig_get_bool(&v, cfg, "a", 0), 0);
	cr_assert_eq(v, 1);
	cr_assert_eq(fconfig_get_bool(&v, cfg, "b", 0), 0);
	cr_assert_eq(v, 1);
	cr_assert_eq(fconfig_get_bool(&v, cfg, "c", 1), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(fconfig_get_bool(&v, cfg, "d", 1), 0);
	cr_assert_eq(v, 0);
}

Test(getters, require)
{
	const char *v = "x";

	cr_assert_eq(fconfig_require(&v, cfg, "gitlab_token"), FACTORY_ECONFIG);
	cr_assert_null(v);
	cr_assert_str_eq(ferror_last(), "missing setting gitlab_token (set FACTORY_GITLAB_TOKEN or --gitlab-token)");
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "gitlab_token", ""), 0);
	cr_assert_eq(fconfig_require(&v, cfg, "gitlab_token"), FACTORY_ECONFIG);
	cr_assert_eq(fconfig_require(&v, cfg, "triage.board"), FACTORY_ECONFIG);
	cr_assert_str_eq(ferror_last(), "missing setting triage.board (set FACTORY_TRIAGE_BOARD or --triage-board)");
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "gitlab_token", "tok"), 0);
	cr_assert_eq(fconfig_require(&v, cfg, "gitlab_token"), 0);
	cr_assert_str_eq(v, "tok");
}

/* ------------------------------------------------------------------ */
/* YAML to cJSON: types */

Test(yaml, mappings_sequences_scalars)
{
	expect_json("a: 1\nb: [x, 'y', 2.5]\nc: {d: e}\n", "{\"a\":1,\"b\":[\"x\",\"y\",2.5],\"c\":{\"d\":\"e\"}}");
	expect_json("- 1\n- - 2\n  - 3\n- k: v\n", "[1,[2,3],{\"k\":\"v\"}]");
	expect_json("plain text", "\"plain text\"");
	expect_json("", "null");
	expect_json("# only a comment\n", "null");
	expect_json("---\n", "null");
	expect_json("{}", "{}");
	expect_json("[]", "[]");
}

Test(yaml, core_schema_nulls_and_booleans)
{
	expect_json("[~, null, Null, NULL, '', \"null\", nil]", "[null,null,null,null,\"\",\"null\",\"nil\"]");
	expect_json("a:\nb: ~\n", "{\"a\":null,\"b\":null}");
	expect_json("[true, True, TRUE, false, False, FALSE]", "[true,true,true,false,false,false]");
	expect_json("[yes, no, on, off, y, n, Yes, tRue]",
	            "[\"yes\",\"no\",\"on\",\"off\",\"y\",\"n\",\"Yes\",\"tRue\"]");
	expect_json("['true', \"false\"]", "[\"true\",\"false\"]");
}

Test(yaml, core_schema_numbers)
{
	expect_json("[0, 42, -17, +5, 007, 0o17, 0x1F, 0xff]", "[0,42,-17,5,7,15,31,255]");
	expect_json("[1.5, -0.25, .5, 5., 1e3, 1E-2, +1.5e+2]", "[1.5,-0.25,0.5,5,1000,0.01,150]");
	expect_json("[9007199254740993, -9007199254740993, 99999999999999999999, 0x20000000000001]",
	            "[\"9007199254740993\",\"-9007199254740993\",\"99999999999999999999\",\"0x20000000000001\"]");
	{
		cJSON *j = NULL;
		cr_assert_eq(fconfig_yaml_to_json(&j, "[9007199254740992, -9007199254740992]", 37, "t"), 0);
		cr_assert(cJSON_IsNumber(cJSON_GetArrayItem(j, 0)));
		cr_assert_eq(cJSON_GetArrayItem(j, 0)->valuedouble, 9007199254740992.0);
		cr_assert_eq(cJSON_GetArrayItem(j, 1)->valuedouble, -9007199254740992.0);
		cJSON_Delete(j);
	}
	expect_json("[.inf, -.inf, .nan, .NaN]", "[\".inf\",\"-.inf\",\".nan\",\".NaN\"]");
	expect_json(
	        "[1e999, 0x, 0o8, 1_000, 0b101, 12:30, 1.2.3, 2024-01-15, -0x1, 0X1F]",
	        "[\"1e999\",\"0x\",\"0o8\",\"1_000\",\"0b101\",\"12:30\",\"1.2.3\",\"2024-01-15\",\"-0x1\",\"0X1F\"]");
	expect_json("- 1,000\n", "[\"1,000\"]");
	expect_json("['42', \"1.5\", 1.0]", "[\"42\",\"1.5\",1]");
	expect_json("[-, +, ., e3, -.5]", "[\"-\",\"+\",\".\",\"e3\",-0.5]");
}

Test(yaml, block_and_quoted_strings)
{
	expect_json("a: |\n  line 1\n  line 2\nb: >\n  folded\n  text\n",
	            "{\"a\":\"line 1\\nline 2\\n\",\"b\":\"folded text\\n\"}");
	expect_json("a: \"tab\\there caf\\u00e9\"\nb: 'it''s'\n", "{\"a\":\"tab\\there caf\xC3\xA9\",\"b\":\"it's\"}");
	expect_json("a: |\n  42\n", "{\"a\":\"42\\n\"}");
	expect_json("a: caf\xC3\xA9\n", "{\"a\":\"caf\xC3\xA9\"}");
}

Test(yaml, tags)
{
	expect_json("[!!str 42, !!str true, ! 7, !!int '42', !!float 1, !!bool 'true', !!null '']",
	            "[\"42\",\"true\",\"7\",42,1,true,null]");
	expect_json("a: !!map {b: 1}\nc: !!seq [1]\n", "{\"a\":{\"b\":1},\"c\":[1]}");
	YAML_ERR("a: !!int abc\n", "bad.yml", "line 1, column 4", "does not match");
	YAML_ERR("a: !!binary aGVsbG8=\n", "unsupported tag");
	YAML_ERR("a: !custom x\n", "unsupported tag");
	YAML_ERR("a: !!set {x}\n", "unsupported tag");
	YAML_ERR("!!python/object:os.system [ls]\n", "unsupported tag");
}

Test(yaml, only_the_first_document)
{
	expect_json("a: 1\n---\nb: 2\n", "{\"a\":1}");
	expect_json("---\na: 1\n...\n---\nb: [unclosed\n", "{\"a\":1}");
}

/* ------------------------------------------------------------------ */
/* YAML: what is refused */

Test(yaml, syntax_errors_name_file_line_and_column)
{
	YAML_ERR("a: 1\n b: 2\n", "bad yaml in bad.yml at line 2, column 3", "mapping values are not allowed");
	YAML_ERR("a: [1, 2\n", "bad.yml", "line 2", "flow sequence");
	YAML_ERR("a: 'unterminated\n", "bad.yml", "line 2", "quoted scalar");
	YAML_ERR("key: value\n\tindented: tab\n", "bad.yml", "line 2, column 1");
	YAML_ERR("a:\n  - 1\n  b: 2\n", "bad.yml", "line 3");
	YAML_ERR("a: b: c\n", "line 1, column 5");
	YAML_ERR("{a: 1\n", "line 2");
	YAML_ERR("a: \"\\q\"\n", "line 1", "escape");
	YAML_ERR("%YAML 9.9\n---\na: 1\n", "line 1");
}

Test(yaml, invalid_utf8_is_refused_with_a_position)
{
	YAML_ERR("a: 1\nb: \xFF\n", "bad yaml in bad.yml at line 2, column 4", "invalid");
	YAML_ERR("a: \xC3\n", "line 1");
	YAML_ERR("a: \x01\n", "line 1, column 4", "control characters");
}

Test(yaml, nul_bytes_are_refused)
{
	const char *const parts[] = {"line 1", NULL};
	const char *const parts2[] = {"NUL", NULL};

	expect_yaml_error("a: b\0c\n", 7, parts);
	expect_yaml_error("a: \"x\\0y\"\n", 10, parts2);
	expect_yaml_error("\"k\\0\": 1\n", 8, parts2);
}

Test(yaml, anchors_and_aliases_are_refused)
{
	YAML_ERR("a: &x 1\nb: *x\n", "bad.yml", "line 1, column 4", "anchors are not allowed");
	YAML_ERR("b: *x\n", "line 1, column 4", "aliases are not allowed");
	YAML_ERR("base: &b {a: 1}\nother:\n  <<: *b\n", "anchors");
	YAML_ERR("- &s [1]\n", "anchors");
	YAML_ERR("&k key: v\n", "anchors");
	YAML_ERR("a: &a [\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
	         "anchors");
}

Test(yaml, duplicate_and_complex_keys_are_refused)
{
	YAML_ERR("a: 1\nb: 2\na: 3\n", "line 3, column 1", "duplicate key a");
	YAML_ERR("x:\n  a: 1\n  a: 2\n", "line 3", "duplicate key a");
	YAML_ERR("{a: 1, a: 2}", "duplicate key");
	YAML_ERR("? [a, b]\n: 1\n", "a mapping key must be a scalar");
	YAML_ERR("? {a: 1}\n: 1\n", "a mapping key must be a scalar");
	expect_json("a: 1\nx:\n  a: 2\n", "{\"a\":1,\"x\":{\"a\":2}}");
	expect_json("- a: 1\n- a: 2\n", "[{\"a\":1},{\"a\":2}]");
	expect_json("1: a\ntrue: b\n~: c\n", "{\"1\":\"a\",\"true\":\"b\",\"~\":\"c\"}");
}

static char *nested(int depth, int flow)
{
	size_t cap = (size_t)depth * (size_t)(flow ? 2 : depth * 2 + 8) + 64;
	char *s = malloc(cap), *p = s;
	int i, j;

	cr_assert_not_null(s);
	if (flow) {
		for (i = 0; i < depth; i++)
			*p++ = '[';
		*p++ = '1';
		for (i = 0; i < depth; i++)
			*p++ = ']';
	} else {
		for (i = 0; i < depth; i++) {
			for (j = 0; j < i * 2; j++)
				*p++ = ' ';
			p += sprintf(p, "k%d:\n", i);
		}
		for (j = 0; j < depth * 2; j++)
			*p++ = ' ';
		p += sprintf(p, "leaf\n");
	}
	*p = '\0';
	return s;
}

Test(yaml, nesting_up_to_64_levels)
{
	cJSON *j = NULL;
	char *s;

	s = nested(64, 1);
	cr_assert_eq(fconfig_yaml_to_json(&j, s, strlen(s), "deep"), 0, "%s", ferror_last());
	cJSON_Delete(j);
	free(s);
	s = nested(64, 0);
	cr_assert_eq(fconfig_yaml_to_json(&j, s, strlen(s), "deep"), 0, "%s", ferror_last());
	cJSON_Delete(j);
	free(s);
}

Test(yaml, nesting_deeper_than_64_is_refused)
{
	const char *const parts[] = {"deeper than 64", NULL};
	char *s;

	s = nested(65, 1);
	expect_yaml_error(s, strlen(s), parts);
	free(s);
	s = nested(65, 0);
	expect_yaml_error(s, strlen(s), parts);
	free(s);
	s = nested(100000, 1);
	expect_yaml_error(s, strlen(s), parts);
	free(s);
}

Test(yaml, more_than_one_mebibyte_is_refused)
{
	size_t n = (1 << 20) + 1;
	char *s = malloc(n + 1);
	cJSON *j = NULL;

	memset(s, '#', n);
	s[n] = '\0';
	cr_assert_eq(fconfig_yaml_to_json(&j, s, n, "big.yml"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "big.yml is too big"), "%s", ferror_last());
	/* Exactly 1 MiB is fine. */
	s[n - 2] = '\n';
	cr_assert_eq(fconfig_yaml_to_json(&j, s, n - 1, "big.yml"), 0, "%s", ferror_last());
	cJSON_Delete(j);
	free(s);
}

Test(yaml, many_keys_are_fast, .timeout = 30)
{
	size_t n = 70000, i;
	char *s = malloc(n * 16), *p = s;
	cJSON *j = NULL;

	for (i = 0; i < n; i++)
		p += sprintf(p, "k%zu: %zu\n", i, i);
	cr_assert_eq(fconfig_yaml_to_json(&j, s, (size_t)(p - s), "many"), 0, "%s", ferror_last());
	cr_assert_eq(cJSON_GetArraySize(j), (int)n);
	cJSON_Delete(j);
	cr_assert_eq(fconfig_load_yaml_string(cfg, s, "many"), 0, "%s", ferror_last());
	cr_assert_str_eq(fconfig_get(cfg, "k69999", NULL), "69999");
	free(s);
}

/* ------------------------------------------------------------------ */
/* Loading into a config */

Test(load, scalars_become_settings_with_their_text)
{
	load("a: 0x1F\nb: 1.10\nc: True\nd: 'quoted'\ne: ~\nf: [1, 2]\ng: {}\nh:\n  i:\n    j: deep\n"
	     "k: |\n  two\n  lines\n",
	     "t.yml");
	expect_get("a", "0x1F", CONFIG_FILE);
	expect_get("b", "1.10", CONFIG_FILE);
	expect_get("c", "True", CONFIG_FILE);
	expect_get("d", "quoted", CONFIG_FILE);
	expect_get("e", NULL, 0);
	expect_get("f", NULL, 0);
	expect_get("g", NULL, 0);
	expect_get("h.i.j", "deep", CONFIG_FILE);
	expect_get("k", "two\nlines\n", CONFIG_FILE);
	cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(fconfig_yaml(cfg), "a")));
	cr_assert_eq(cJSON_GetObjectItem(fconfig_yaml(cfg), "a")->valueint, 31);
}

Test(load, yaml_path)
{
	const cJSON *n;

	cr_assert_null(fconfig_yaml(cfg));
	cr_assert_null(fconfig_yaml_path(cfg, "a"));
	load("triage:\n  rules:\n    - name: stale\n      days: 30\n  wip: 3\n", "t.yml");
	n = fconfig_yaml_path(cfg, "triage.rules");
	cr_assert(cJSON_IsArray(n));
	cr_assert_eq(cJSON_GetArraySize(n), 1);
	cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(n, 0), "days")->valueint, 30);
	cr_assert(cJSON_IsNumber(fconfig_yaml_path(cfg, "triage.wip")));
	cr_assert_eq(fconfig_yaml_path(cfg, ""), fconfig_yaml(cfg));
	cr_assert_eq(fconfig_yaml_path(cfg, NULL), fconfig_yaml(cfg));
	cr_assert_null(fconfig_yaml_path(cfg, "triage.nope"));
	cr_assert_null(fconfig_yaml_path(cfg, "triage.wip.x"));
	cr_assert_null(fconfig_yaml_path(cfg, "triage."));
	cr_assert_null(fconfig_yaml_path(cfg, "triage..rules"));
	cr_assert_null(fconfig_yaml_path(cfg, "triage.rules.0"));
}

Test(load, later_files_override_and_documents_deep_merge)
{
	char *s;

	load("a: 1\nb:\n  c: 2\n  d: 3\ne: [1, 2]\nf: scalar\ng:\n  h: 1\nk: keep\n", "one.yml");
	load("b:\n  c: 20\n  x: new\ne: [9]\nf:\n  now: map\ng: flat\nk: ~\n", "two.yml");
	s = cJSON_PrintUnformatted(fconfig_yaml(cfg));
	cr_assert_str_eq(s, "{\"a\":1,\"b\":{\"c\":20,\"d\":3,\"x\":\"new\"},\"e\":[9],\"f\":{\"now\":\"map\"},"
	                    "\"g\":\"flat\",\"k\":null}");
	free(s);
	expect_get("a", "1", CONFIG_FILE);
	expect_get("b.c", "20", CONFIG_FILE);
	expect_get("b.d", "3", CONFIG_FILE);
	expect_get("b.x", "new", CONFIG_FILE);
	expect_get("f", NULL, 0);
	expect_get("f.now", "map", CONFIG_FILE);
	expect_get("g", "flat", CONFIG_FILE);
	expect_get("g.h", NULL, 0);
	expect_get("k", NULL, 0);
}

Test(load, merged_settings_remember_their_file)
{
	long v;

	load("a: x\nb: 1\n", "one.yml");
	load("b: y\n", "two.yml");
	cr_assert_eq(fconfig_get_long(&v, cfg, "a", 0, 0, 9), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "(from one.yml)"), "%s", ferror_last());
	cr_assert_eq(fconfig_get_long(&v, cfg, "b", 0, 0, 9), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "(from two.yml)"), "%s", ferror_last());
}

Test(load, a_bad_file_changes_nothing)
{
	load("a: 1\n", "good.yml");
	cr_assert_eq(fconfig_load_yaml_string(cfg, "a: 2\nb: [\n", "bad.yml"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "bad.yml"));
	cr_assert_eq(fconfig_load_yaml_string(cfg, "- a\n", "list.yml"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "list.yml"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "mapping"), "%s", ferror_last());
	cr_assert_eq(fconfig_load_yaml_string(cfg, "just text", "scalar.yml"), FACTORY_ECONFIG);
	expect_get("a", "1", CONFIG_FILE);
	expect_get("b", NULL, 0);
}

Test(load, direct_file_sets_survive_unrelated_loads)
{
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "manual", "m"), 0);
	load("other: 1\n", "f.yml");
	expect_get("manual", "m", CONFIG_FILE);
	load("manual: from-file\n", "g.yml");
	expect_get("manual", "from-file", CONFIG_FILE);
}

Test(load, empty_string_and_null_name)
{
	cr_assert_eq(fconfig_load_yaml_string(cfg, "", NULL), 0);
	cr_assert(cJSON_IsObject(fconfig_yaml(cfg)));
	cr_assert_eq(fconfig_load_yaml_string(cfg, NULL, NULL), 0);
	cr_assert_eq(fconfig_load_yaml_string(cfg, "a: [", NULL), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "bad yaml in yaml at line"), "%s", ferror_last());
}

Test(load, files)
{
	const char *p = "wip_limit: 4\nnested:\n  x: y\n";
	p = write_file("f.yml", p, strlen(p));

	cr_assert_eq(fconfig_load_yaml(cfg, p, 1), 0, "%s", ferror_last());
	expect_get("wip_limit", "4", CONFIG_FILE);
	expect_get("nested.x", "y", CONFIG_FILE);
}

Test(load, missing_files)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/none.yml", dir);
	cr_assert_eq(fconfig_load_yaml(cfg, path, 0), 0);
	cr_assert_null(fconfig_yaml(cfg));
	cr_assert_eq(fconfig_load_yaml(cfg, path, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "cannot read settings file"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "none.yml"), "%s", ferror_last());
	cr_assert_eq(fconfig_load_yaml(cfg, dir, 0), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "directory"), "%s", ferror_last());
}

Test(load, empty_file_loads_as_an_empty_mapping)
{
	const char *p = write_file("empty.yml", "", 0);

	cr_assert_eq(fconfig_load_yaml(cfg, p, 1), 0);
	cr_assert(cJSON_IsObject(fconfig_yaml(cfg)));
	cr_assert_eq(cJSON_GetArraySize(fconfig_yaml(cfg)), 0);
}

Test(load, big_files_are_refused)
{
	size_t n = (1 << 20) + 10;
	char *s = malloc(n);
	const char *p;

	memset(s, '#', n);
	p = write_file("big.yml", s, n);
	cr_assert_eq(fconfig_load_yaml(cfg, p, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "too big"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "big.yml"), "%s", ferror_last());
	free(s);
}

Test(load, syntax_error_in_a_file_names_it)
{
	const char *p = write_file("broken.yml", "a: 1\nb: [\n", 10);

	cr_assert_eq(fconfig_load_yaml(cfg, p, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "broken.yml at line 3"), "%s", ferror_last());
}

Test(load, aliases_in_a_file_are_refused)
{
	const char *p = write_file("alias.yml", "a: &x 1\nb: *x\n", 14);

	cr_assert_eq(fconfig_load_yaml(cfg, p, 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "alias.yml at line 1, column 4: anchors are not allowed"), "%s", ferror_last());
}

Test(load, free_null_is_fine)
{
	fconfig_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Clone: one project's file laid over a group's settings */

Test(load, clone_is_deep_and_keeps_precedence)
{
	fconfig *proj = NULL;
	fconfig_source src;
	const cJSON *rules;
	int b = -1;

	load("triage:\n  wip_limit: 3\n  rules: [a, b]\nfactory:\n  enabled: true\nname: group\n", "group.yml");
	cr_assert_eq(fconfig_set(cfg, CONFIG_FLAG, "dry_run", "true"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "triage.wip_limit", "9"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_DEFAULT, "colour", "blue"), 0);
	cr_assert_eq(fconfig_clone(&proj, cfg), 0, "%s", ferror_last());

	/* The project's file merges over the group's at the file level. */
	cr_assert_eq(fconfig_load_yaml_string(proj, "factory:\n  enabled: false\ntriage:\n  rules: [c]\n",
	                                      "acme/app/.factory.yml"),
	             0, "%s", ferror_last());
	cr_assert_str_eq(fconfig_get(proj, "factory.enabled", &src), "false");
	cr_assert_eq(src, CONFIG_FILE);
	cr_assert_eq(fconfig_get_bool(&b, proj, "factory.enabled", 1), 0);
	cr_assert_eq(b, 0);
	cr_assert_str_eq(fconfig_get(proj, "name", NULL), "group");
	rules = fconfig_yaml_path(proj, "triage.rules");
	cr_assert_eq(cJSON_GetArraySize(rules), 1);
	/* Flags, environment and defaults still win as before. */
	cr_assert_str_eq(fconfig_get(proj, "dry_run", &src), "true");
	cr_assert_eq(src, CONFIG_FLAG);
	cr_assert_str_eq(fconfig_get(proj, "triage.wip_limit", &src), "9");
	cr_assert_eq(src, CONFIG_ENV);
	cr_assert_str_eq(fconfig_get(proj, "colour", &src), "blue");
	cr_assert_eq(src, CONFIG_DEFAULT);
	/* A bad value in the project's file is named after that file. */
	cr_assert_eq(fconfig_load_yaml_string(proj, "factory:\n  enabled: maybe\n", "acme/app/.factory.yml"), 0);
	cr_assert_eq(fconfig_get_bool(&b, proj, "factory.enabled", 1), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "acme/app/.factory.yml"), "%s", ferror_last());

	/* The group's settings did not move. */
	cr_assert_str_eq(fconfig_get(cfg, "factory.enabled", NULL), "true");
	cr_assert_eq(cJSON_GetArraySize(fconfig_yaml_path(cfg, "triage.rules")), 2);
	cr_assert_eq(fconfig_set(proj, CONFIG_FLAG, "dry_run", NULL), 0);
	cr_assert_str_eq(fconfig_get(cfg, "dry_run", NULL), "true");
	fconfig_free(proj);
	/* And it still works once the clone is gone. */
	cr_assert_str_eq(fconfig_get(cfg, "name", &src), "group");
	cr_assert_eq(src, CONFIG_FILE);
}

Test(load, clone_of_an_empty_config)
{
	fconfig *c2 = NULL;

	cr_assert_eq(fconfig_clone(&c2, cfg), 0);
	cr_assert_null(fconfig_yaml(c2));
	cr_assert_eq(fconfig_load_yaml_string(c2, "a: 1\n", "p.yml"), 0);
	cr_assert_str_eq(fconfig_get(c2, "a", NULL), "1");
	cr_assert_null(fconfig_get(cfg, "a", NULL));
	fconfig_free(c2);
}
