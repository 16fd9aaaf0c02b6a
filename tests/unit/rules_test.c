/* Tests for common/rules.c: loading rule sets from data, field order,
 * unless patterns, bad rules, limits against hostile subjects and binary
 * junk. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "rules.h"

static const char *const fields[] = {"title", "body", "labels", NULL};

static rules *load(const char *json, const rules_limits *lim)
{
	cJSON *spec = cJSON_Parse(json);
	rules *rs = NULL;

	cr_assert_not_null(spec, "test JSON does not parse: %s", json);
	cr_assert_eq(rules_compile(&rs, spec, fields, lim, "test"), 0, "%s", ferror_last());
	cJSON_Delete(spec);
	return rs;
}

static int load_error(const char *json, const char *want_msg)
{
	cJSON *spec = cJSON_Parse(json);
	rules *rs = NULL;
	int rc;

	cr_assert_not_null(spec);
	rc = rules_compile(&rs, spec, fields, NULL, "test");
	cr_assert_null(rs);
	cr_assert(strstr(ferror_last(), want_msg), "message '%s' lacks '%s'", ferror_last(), want_msg);
	cJSON_Delete(spec);
	return rc;
}

static void subject(rules_field *f, const char *title, const char *body, const char *labels)
{
	f[0] = (rules_field){"title", title, title ? strlen(title) : 0};
	f[1] = (rules_field){"body", body, body ? strlen(body) : 0};
	f[2] = (rules_field){"labels", labels, labels ? strlen(labels) : 0};
}

Test(rules, matches_in_field_order_and_keeps_caller_keys)
{
	rules *rs = load("[{\"name\":\"outage\",\"pattern\":[\"\\\\bdown\\\\b\",\"outage\"],\"in\":[\"body\",\"title\"],"
			 "\"type\":\"bug\",\"weight\":3},"
			 "{\"name\":\"typo\",\"pattern\":\"typo\",\"in\":\"title\"}]",
			 NULL);
	rules_result r;
	rules_field f[3];

	rules_result_init(&r);
	subject(f, "Site DOWN", "the whole site is down since 9am", "");
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 1);
	cr_assert_eq(r.hits[0].rule, 0);
	cr_assert_eq(r.hits[0].field, 1, "body comes first in the rule's order");
	cr_assert_eq(r.hits[0].offset, strlen("the whole site is "));
	cr_assert_eq(r.hits[0].length, 4);
	cr_assert_str_eq(rules_name(rs, 0), "outage");
	cr_assert_str_eq(cJSON_GetObjectItem(rules_data(rs, 0), "type")->valuestring, "bug");
	cr_assert_eq(cJSON_GetObjectItem(rules_data(rs, 0), "weight")->valueint, 3);
	cr_assert_eq(rules_find(rs, "typo"), 1);
	cr_assert_eq(rules_find(rs, "nope"), -1);

	subject(f, "Typo on the pricing page", "", "");
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 1);
	cr_assert_eq(r.hits[0].rule, 1);
	cr_assert_eq(r.hits[0].field, 0);
	rules_result_release(&r);
	rules_free(rs);
}

Test(rules, caseless_by_default_unicode_aware_and_multiline)
{
	rules *rs = load("[{\"name\":\"fr\",\"pattern\":\"\\\\bpanne\\\\b|ne fonctionne plus\"},"
			 "{\"name\":\"de\",\"pattern\":\"Störung\"},"
			 "{\"name\":\"cs\",\"pattern\":\"CVE\",\"case_sensitive\":true},"
			 "{\"name\":\"label\",\"pattern\":\"^security$\",\"in\":\"labels\"}]",
			 NULL);
	rules_result r;
	rules_field f[3];

	rules_result_init(&r);
	subject(f, "PANNE générale", "GROSSE STÖRUNG beim Login, cve nicht bekannt", "frontend\nSecurity\nux");
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 3);
	cr_assert_eq(r.hits[0].rule, 0);
	cr_assert_eq(r.hits[1].rule, 1, "caseless matching folds non-ASCII letters");
	cr_assert_eq(r.hits[2].rule, 3, "^ and $ match at label boundaries");
	subject(f, "", "", "insecurity\nsecurity-team");
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 0, "anchors keep whole labels apart");
	rules_result_release(&r);
	rules_free(rs);
}

Test(rules, unless_vetoes_the_field_but_not_another)
{
	rules *rs = load("[{\"name\":\"key\",\"pattern\":\"AKIA[0-9A-Z]{16}\",\"unless\":[\"EXAMPLE\"],"
			 "\"in\":[\"title\",\"body\"],\"case_sensitive\":true}]",
			 NULL);
	rules_result r;
	rules_field f[3];

	rules_result_init(&r);
	subject(f, "docs use AKIAIOSFODNN7EXAMPLE", "no key here", NULL);
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 0);
	subject(f, "docs use AKIAIOSFODNN7EXAMPLE", "but prod has AKIAZZZZZZZZZZZZZZZZ in it", NULL);
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_eq(r.nhits, 1);
	cr_assert_eq(r.hits[0].field, 1);
	rules_result_release(&r);
	rules_free(rs);
}

Test(rules, bad_rules_are_config_errors_naming_the_rule)
{
	cr_assert_eq(load_error("{\"name\":\"x\"}", "rules must be a list"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":\"(a\"}]", "rule 'x': pattern 1: missing closing"),
		     FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":[\"ok\",\"[z-a]\"]}]", "rule 'x': pattern 2:"),
		     FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\"}]", "rule 'x': pattern is missing"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"pattern\":\"a\"}]", "rule 1: name must be"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"bad name\",\"pattern\":\"a\"}]", "rule 1: name must be"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":\"a\"},{\"name\":\"x\",\"pattern\":\"b\"}]",
				"rule 'x' is defined twice"),
		     FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":\"a\",\"in\":[\"bdy\"]}]", "unknown field 'bdy'"),
		     FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":[]}]", "pattern is an empty list"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":\"\"}]", "pattern 1 is empty"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":7}]", "must be a string or a list"), FACTORY_ECONFIG);
	cr_assert_eq(load_error("[{\"name\":\"x\",\"pattern\":\"a\",\"case_sensitive\":\"yes\"}]",
				"case_sensitive must be true or false"),
		     FACTORY_ECONFIG);
	cr_assert_eq(load_error("[3]", "rule 1: expected a mapping"), FACTORY_ECONFIG);
}

Test(rules, caps_on_rule_count_and_pattern_size)
{
	rules_limits lim;
	cJSON *spec = cJSON_Parse("[{\"name\":\"a\",\"pattern\":\"a\"},{\"name\":\"b\",\"pattern\":\"b\"}]");
	rules *rs = NULL;

	rules_limits_init(&lim);
	lim.max_rules = 1;
	cr_assert_eq(rules_compile(&rs, spec, fields, &lim, "test"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "more than the limit of 1"));
	rules_limits_init(&lim);
	lim.max_pattern = 16;
	cJSON_Delete(spec);
	spec = cJSON_Parse("[{\"name\":\"a\",\"pattern\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}]");
	cr_assert_eq(rules_compile(&rs, spec, fields, &lim, "test"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "longer than 16 bytes"), "%s", ferror_last());
	cJSON_Delete(spec);
}

Test(rules, limits_from_json)
{
	rules_limits lim;
	cJSON *o = cJSON_Parse("{\"match_limit\":5000,\"max_subject\":1024,\"jit\":false}");

	rules_limits_init(&lim);
	cr_assert_eq(rules_limits_from_json(&lim, o, "x"), 0);
	cr_assert_eq(lim.match_limit, 5000);
	cr_assert_eq(lim.max_subject, 1024);
	cr_assert_eq(lim.jit, 0);
	cr_assert_eq(lim.depth_limit, 1000, "absent keys keep their value");
	cJSON_Delete(o);
	o = cJSON_Parse("{\"match_limit\":1.5}");
	cr_assert_eq(rules_limits_from_json(&lim, o, "x"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "x: limits.match_limit: expected a whole number"));
	cJSON_Delete(o);
	o = cJSON_Parse("{\"match_limt\":100}");
	cr_assert_eq(rules_limits_from_json(&lim, o, "x"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "unknown key 'match_limt'"));
	cJSON_Delete(o);
	cr_assert_eq(rules_limits_from_json(&lim, NULL, "x"), 0);
}

/* A catastrophic pattern against a subject built to make it backtrack: the
 * match gives up at the limit, counts it, and the call stays quick. */
static void hostile(int jit)
{
	rules_limits lim;
	rules *rs;
	rules_result r;
	rules_field f[3];
	char *body = malloc(70000);
	struct timespec t0, t1;
	double secs;

	rules_limits_init(&lim);
	lim.jit = jit;
	rs = load("[{\"name\":\"evil\",\"pattern\":\"^(a+)+$\",\"in\":\"body\"},"
		  "{\"name\":\"nested\",\"pattern\":\"(a|aa)+(b|c)*z\",\"in\":\"body\"},"
		  "{\"name\":\"fine\",\"pattern\":\"hello\",\"in\":\"title\"}]",
		  &lim);
	cr_assert_eq(rules_jit(rs) != 0, jit != 0 && rules_jit(rs) != 0);
	memset(body, 'a', 69999);
	body[40000] = '!'; /* inside the searched part: the pattern must fail there */
	body[69999] = '\0';
	rules_result_init(&r);
	subject(f, "hello", body, "");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_eq(r.nhits, 1, "the sane rule still matches (%zu hits, first %zu, limits %zu)", r.nhits, r.nhits ? r.hits[0].rule : 99, r.limit_hits);
	cr_assert_eq(r.hits[0].rule, 2);
	cr_assert_geq(r.limit_hits, 1, "the catastrophic match was abandoned at a limit");
	cr_assert_eq(r.truncated, 1, "a 70,000-byte body is cut at 65,536");
	/* Not a timing assertion on the machine's speed: without limits this
	 * takes longer than the age of the universe. */
	cr_assert_lt(secs, 30.0);
	rules_result_release(&r);
	rules_free(rs);
	free(body);
}

Test(rules, hostile_subject_hits_the_limit_jit)
{
	hostile(1);
}

Test(rules, hostile_subject_hits_the_limit_interpreter)
{
	hostile(0);
}

Test(rules, binary_junk_and_invalid_utf8_never_fail)
{
	rules *rs = load("[{\"name\":\"word\",\"pattern\":\"\\\\bcrash\\\\w*\"},{\"name\":\"dot\",\"pattern\":\"x.y\"}]", NULL);
	unsigned char junk[4096];
	rules_result r;
	rules_field f[3];
	size_t i;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)((i * 131 + 7) & 0xff);
	memcpy(junk + 100, "\xff\xfe crashes \xc3\x28 x\xe2\x82y", 19);
	rules_result_init(&r);
	f[0] = (rules_field){"title", (const char *)junk, sizeof(junk)};
	f[1] = (rules_field){"body", NULL, 0};
	f[2] = (rules_field){"labels", "", 0};
	cr_assert_eq(rules_match(&r, rs, f, 3), 0);
	cr_assert_geq(r.nhits, 1);
	cr_assert_eq(r.hits[0].rule, 0, "a word between invalid bytes still matches");
	cr_assert_eq(r.hits[0].length, strlen("crashes"));
	cr_assert_eq(r.limit_hits, 0);
	rules_result_release(&r);
	rules_free(rs);
}

Test(rules, empty_set_and_missing_fields)
{
	rules *rs = load("[]", NULL);
	rules *rs2 = load("[{\"name\":\"a\",\"pattern\":\"a\",\"in\":\"labels\"}]", NULL);
	rules_result r;
	rules_field f[1] = {{"title", "aaa", 3}};

	rules_result_init(&r);
	cr_assert_eq(rules_count(rs), 0);
	cr_assert_eq(rules_match(&r, rs, f, 1), 0);
	cr_assert_eq(r.nhits, 0);
	cr_assert_eq(rules_match(&r, rs2, f, 1), 0);
	cr_assert_eq(r.nhits, 0, "a field the caller did not give is skipped");
	rules_result_release(&r);
	rules_free(rs);
	rules_free(rs2);
}
