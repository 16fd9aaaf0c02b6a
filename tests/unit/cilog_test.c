/* Tests for common/cilog: cleaning, raw line numbers, streaming, regions, rules as data, caps. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cilog.h"
#include "error.h"

static cilog_rules *defaults(void)
{
	cilog_rules *rs = NULL;

	cr_assert_eq(cilog_rules_new(&rs, NULL, 1, "test"), 0, "%s", ferror_last());
	return rs;
}

static void classify(cilog_result *r, const cilog_rules *rs, const char *log)
{
	cilog_result_init(r);
	cr_assert_eq(cilog_classify(r, rs, log, strlen(log)), 0, "%s", ferror_last());
}

Test(cilog, class_names_round_trip)
{
	int i;

	for (i = 0; i < CILOG_NCLASSES; i++)
		cr_assert_eq(cilog_class_parse(cilog_class_name((cilog_class)i)), i);
	cr_assert_eq(cilog_class_parse("nope"), -1);
	cr_assert_eq(cilog_class_parse(NULL), -1);
	cr_assert_str_eq(cilog_class_name((cilog_class)99), "unknown");
	cr_assert(cilog_class_transient(CILOG_NETWORK));
	cr_assert(cilog_class_transient(CILOG_RUNNER));
	cr_assert(cilog_class_transient(CILOG_FLAKY));
	cr_assert(!cilog_class_transient(CILOG_COMPILE));
	cr_assert(!cilog_class_transient(CILOG_TEST));
}

Test(cilog, gitlab_markers_and_ansi_are_stripped_and_raw_lines_kept)
{
	cilog_rules *rs = defaults();
	cilog_result r;
	/* line 1..3 are markers and colours; the error is on raw line 6 */
	const char *log = "\x1b[0KRunning with gitlab-runner 16.0\n"
			  "\x1b[0Ksection_start:1700000000:step_script\r\x1b[0K\x1b[36;1mExecuting step_script\x1b[0;m\n"
			  "\x1b[32;1m$ make\x1b[0;m\n"
			  "cc -c -o src/main.o src/main.c\n"
			  "In file included from src/main.c:1:\n"
			  "\x1b[01m\x1b[Ksrc/util.h:7:3:\x1b[m\x1b[K \x1b[01;31m\x1b[Kerror: \x1b[m\x1b[Kunknown type name 'sizet'\n"
			  "    7 |   sizet n;\n"
			  "      |   ^~~~~\n"
			  "make: *** [Makefile:4: src/main.o] Error 1\n"
			  "\x1b[0Ksection_end:1700000001:step_script\r\x1b[0K\n"
			  "\x1b[0Ksection_start:1700000001:cleanup_file_variables\r\x1b[0KCleaning up project directory\n"
			  "\x1b[31;1mERROR: Job failed: exit code 2\x1b[0;m\n";

	classify(&r, rs, log);
	cr_assert_eq(r.klass, CILOG_COMPILE, "%s", cilog_class_name(r.klass));
	cr_assert_str_eq(r.file, "src/util.h");
	cr_assert_eq(r.line, 7);
	cr_assert_str_eq(r.tool, "cc");
	cr_assert_str_eq(r.step, "make");
	cr_assert_leq(r.first_line, 6);
	cr_assert_geq(r.last_line, 8);
	cr_assert_leq(r.last_line - r.first_line + 1, 40);
	cr_assert(strstr(r.excerpt, "src/util.h:7:3: error: unknown type name 'sizet'"), "%s", r.excerpt);
	cr_assert_null(strchr(r.excerpt, '\x1b'));
	cr_assert_null(strstr(r.excerpt, "section_"));
	cr_assert_eq(r.lines, 12);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, any_split_of_the_input_gives_the_same_answer)
{
	cilog_rules *rs = defaults();
	const char *log = "$ npm ci\r\nadded 100 packages\r\n$ npx jest\r\n"
			  " PASS  src/a.test.js\r\n FAIL  src/cart.test.js\r\n  \xe2\x97\x8f Cart \xe2\x80\xba adds an item\r\n"
			  "\r\n    expect(received).toBe(expected)\r\n\r\n    Expected: 2\r\n    Received: 1\r\n"
			  "\r\n      at Object.<anonymous> (src/cart.test.js:12:5)\r\n"
			  "Tests:       1 failed, 3 passed, 4 total\r\nERROR: Job failed: exit code 1";
	cilog_result whole, bytes;
	cJSON *a = NULL, *b = NULL;
	char *sa, *sb;
	size_t i, n = strlen(log);
	cilog *c = NULL;

	classify(&whole, rs, log);
	cilog_result_init(&bytes);
	cr_assert_eq(cilog_new(&c, rs, NULL), 0);
	for (i = 0; i < n; i++)
		cr_assert_eq(cilog_feed(c, log + i, 1), 0);
	cr_assert_eq(cilog_finish(&bytes, c), 0);
	cilog_free(c);
	cr_assert_eq(cilog_result_json(&a, &whole), 0);
	cr_assert_eq(cilog_result_json(&b, &bytes), 0);
	sa = cJSON_PrintUnformatted(a);
	sb = cJSON_PrintUnformatted(b);
	cr_assert_str_eq(sa, sb);
	cr_assert_eq(whole.klass, CILOG_TEST, "%s", sa);
	cr_assert_str_eq(whole.test, "Cart \xe2\x80\xba adds an item");
	cr_assert_geq(whole.first_line, 3, "%s", sa);
	cr_assert_leq(whole.first_line, 6, "%s", sa);
	cr_assert_geq(whole.last_line, 13, "%s", sa);
	cr_assert_str_eq(whole.file, "src/cart.test.js");
	cr_assert_eq(whole.line, 12, "%s", sa);
	cr_assert_eq(whole.lines, 15);
	free(sa);
	free(sb);
	cJSON_Delete(a);
	cJSON_Delete(b);
	cilog_result_release(&whole);
	cilog_result_release(&bytes);
	cilog_rules_free(rs);
}

Test(cilog, carriage_return_keeps_what_the_terminal_shows)
{
	cilog_rules *rs = defaults();
	cilog_result r;
	const char *log = "Downloading 10%\rDownloading 50%\rDownloading 100%\n"
			  "npm ERR! code ETIMEDOUT\rnpm ERR! network request to https://registry.npmjs.org/x failed, "
			  "reason: connect ETIMEDOUT 104.16.0.35:443\n"
			  "The command \"npm ci\" exited with 1.\n";

	classify(&r, rs, log);
	cr_assert_eq(r.klass, CILOG_NETWORK, "%s", cilog_class_name(r.klass));
	cr_assert_eq(r.first_line, 1);
	cr_assert(strstr(r.excerpt, "Downloading 100%\n"), "%s", r.excerpt);
	cr_assert_null(strstr(r.excerpt, "10%"));
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, empty_and_quiet_logs)
{
	cilog_rules *rs = defaults();
	cilog_result r;
	cJSON *j = NULL;

	classify(&r, rs, "");
	cr_assert_eq(r.klass, CILOG_UNKNOWN);
	cr_assert_eq(r.first_line, 0);
	cr_assert_eq(r.lines, 0);
	cr_assert_eq(cilog_result_json(&j, &r), 0);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "error_lines")), 0);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "rule")));
	cJSON_Delete(j);
	cilog_result_release(&r);

	/* nothing a rule knows: the region is the last lines, not blank */
	classify(&r, rs, "one\ntwo\nthree\n\n\n");
	cr_assert_eq(r.klass, CILOG_UNKNOWN);
	cr_assert_eq(r.first_line, 1);
	cr_assert_eq(r.last_line, 3);
	cr_assert_eq(r.lines, 5);
	cr_assert_null(r.rule);
	cilog_result_release(&r);

	/* a failed line and nothing else: the lines before it */
	classify(&r, rs, "$ ./deploy.sh\nstep one\nstep two\nThe command \"./deploy.sh\" exited with 3.\nafter\n");
	cr_assert_eq(r.klass, CILOG_UNKNOWN);
	cr_assert_eq(r.first_line, 1);
	cr_assert_eq(r.last_line, 4);
	cr_assert_str_eq(r.tool, "deploy.sh");
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, the_failing_step_wins_over_a_survived_error)
{
	cilog_rules *rs = defaults();
	cilog_result r;
	fbuf b;
	int i;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "$ bundle install\nfatal: unable to access 'https://github.com/x/y/': "
				   "Could not resolve host: github.com\nretrying\nBundle complete!\n"
				   "The command \"bundle install\" exited with 0.\n$ bundle exec rspec\n"), 0);
	for (i = 0; i < 400; i++)
		cr_assert_eq(fbuf_printf(&b, "  works %d\n", i), 0);
	cr_assert_eq(fbuf_puts(&b, "Failures:\n\n  1) Cart adds an item\n     Failure/Error: expect(cart.size).to eq(2)\n"
				   "       expected: 2\n            got: 1\n     # ./spec/cart_spec.rb:12:in `block'\n\n"
				   "rspec ./spec/cart_spec.rb:10 # Cart adds an item\n"
				   "The command \"bundle exec rspec\" exited with 1.\n"), 0);
	classify(&r, rs, b.ptr);
	cr_assert_eq(r.klass, CILOG_TEST, "%s %s", cilog_class_name(r.klass), r.excerpt);
	cr_assert_str_eq(r.file, "spec/cart_spec.rb");
	/* the example's line, from rspec's rerun line (the surest hit of the region) */
	cr_assert_eq(r.line, 10);
	cr_assert_str_eq(r.test, "Cart adds an item");
	cr_assert_gt(r.first_line, 400);
	cr_assert_eq(r.class_hits[CILOG_NETWORK], 1);
	cilog_result_release(&r);
	fbuf_release(&b);
	cilog_rules_free(rs);
}

Test(cilog, flaky_evidence_turns_a_test_failure_flaky)
{
	cilog_rules *rs = defaults();
	cilog_result r;

	classify(&r, rs,
		 "$ pytest\ntests/test_api.py::test_fetch RERUN\ntests/test_api.py::test_fetch FAILED\n"
		 "FAILED tests/test_api.py::test_fetch - TimeoutError\nERROR: Job failed: exit code 1\n");
	cr_assert_eq(r.klass, CILOG_FLAKY, "%s", cilog_class_name(r.klass));
	cr_assert_str_eq(r.test, "tests/test_api.py::test_fetch");
	cr_assert(r.flaky_evidence);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, project_rules_come_first_replace_by_name_and_may_lack_keywords)
{
	cilog_rules *rs = NULL;
	cilog_result r;
	const char *yaml = "- name: deploy-quota\n  class: permission\n  weight: 99\n"
			   "  pattern: 'quota (?<test>\\w+) exhausted'\n"
			   "- name: oom\n  class: oom\n  keywords: ['zzz-never']\n  pattern: 'zzz-never'\n";

	cr_assert_eq(cilog_rules_from_yaml(&rs, yaml, strlen(yaml), 1, "ci-rules.yml"), 0, "%s", ferror_last());
	classify(&r, rs, "$ deploy\nerror: deploy quota cpu exhausted\nERROR: Job failed: exit code 1\n");
	cr_assert_eq(r.klass, CILOG_PERMISSION, "%s", cilog_class_name(r.klass));
	cr_assert_str_eq(r.rule, "deploy-quota");
	cr_assert_str_eq(r.test, "cpu");
	cilog_result_release(&r);
	/* the built-in oom rule was replaced: "Killed" alone is no longer oom */
	classify(&r, rs, "$ make\ncc1plus: fatal error: Killed signal terminated program cc1plus\n");
	cr_assert_neq(r.klass, CILOG_OOM);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, bad_rules_are_config_errors_naming_the_rule)
{
	static const struct {
		const char *yaml;
		const char *says;
	} cases[] = {
		{"- name: a\n  class: lint\n  pattern: '(unclosed'\n", "rule 'a': pattern"},
		{"- name: b\n  class: nope\n  pattern: 'x'\n", "rule 'b': class"},
		{"- name: c\n  pattern: 'x'\n", "rule 'c': class is required"},
		{"- name: d\n  class: lint\n  pattern: 'x'\n  keywords: ['x']\n", "rule 'd': keyword"},
		{"- name: e\n  class: lint\n  pattern: 'x'\n  weight: 500\n", "rule 'e': weight"},
		{"- name: f\n  class: lint\n  pattern: 'x'\n  role: boss\n", "rule 'f': role"},
		{"- name: g\n  class: lint\n  pattern: 'x'\n- name: g\n  class: lint\n  pattern: 'y'\n", "used twice"},
		{"- name: 'has space'\n  class: lint\n  pattern: 'x'\n", "rule name"},
		{"- name: h\n  class: lint\n", "rule 'h': pattern is required"},
		{"name: notalist\n", "must be a list"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cilog_rules *rs = (cilog_rules *)1;
		int rc = cilog_rules_from_yaml(&rs, cases[i].yaml, strlen(cases[i].yaml), 0, "ci-rules.yml");
		cr_assert_eq(rc, FACTORY_ECONFIG, "case %zu: %d", i, rc);
		cr_assert_null(rs);
		cr_assert(strstr(ferror_last(), cases[i].says), "case %zu: %s", i, ferror_last());
	}
}

Test(cilog, word_boundary_keywords_skip_flags)
{
	cilog_rules *rs = NULL;
	cilog_result r;
	const char *yaml = "- name: boom\n  class: lint\n  keywords: ['\\bboom\\b']\n  pattern: 'boom'\n";

	cr_assert_eq(cilog_rules_from_yaml(&rs, yaml, strlen(yaml), 0, "t"), 0, "%s", ferror_last());
	classify(&r, rs, "-Wboom\nboomerang\nsay boom now\n");
	cr_assert_eq(r.klass, CILOG_LINT);
	cr_assert_eq(r.hits, 1);
	cr_assert(strstr(r.excerpt, "say boom now"), "%s", r.excerpt);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, memory_is_capped_whatever_the_input)
{
	cilog_rules *rs = defaults();
	cilog_options o;
	cilog_result r;
	cilog *c = NULL;
	char *line;
	size_t n = 200000, i;

	cilog_options_init(&o);
	o.max_line = 1024;
	o.block_size = 8192;
	o.max_candidates = 4;
	cr_assert_eq(cilog_new(&c, rs, &o), 0);
	/* a line far longer than max_line, fed in pieces */
	line = malloc(n);
	memset(line, 'a', n);
	memcpy(line + 10, " error: ", 8);
	for (i = 0; i < n; i += 4096)
		cr_assert_eq(cilog_feed(c, line + i, n - i < 4096 ? n - i : 4096), 0);
	cr_assert_eq(cilog_feed(c, "\n", 1), 0);
	/* many hits: only max_candidates regions are kept, the first among them */
	for (i = 0; i < 500; i++) {
		char buf[128];
		int len = snprintf(buf, sizeof(buf), "src/f%zu.c:%zu:1: error: bad thing\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"
					     "\n\n\n\n",
				   i, i + 1);
		cr_assert_eq(cilog_feed(c, buf, (size_t)len), 0);
	}
	cilog_result_init(&r);
	cr_assert_eq(cilog_finish(&r, c), 0);
	cr_assert_eq(r.cut_lines, 1);
	cr_assert_eq(r.klass, CILOG_COMPILE);
	cr_assert_str_eq(r.file, "src/f0.c");
	cr_assert_leq(strlen(r.excerpt), o.max_excerpt);
	cr_assert_eq(cilog_feed(c, "x", 1), FACTORY_EINVALID);
	cilog_result_release(&r);
	cilog_free(c);
	free(line);
	cilog_rules_free(rs);
}

Test(cilog, excerpt_is_valid_utf8_without_controls)
{
	cilog_rules *rs = defaults();
	cilog_result r;
	const unsigned char *p;

	classify(&r, rs, "$ make\nmain.c:1:1: error: bad \xff\xfe byte \x01\x02 and \xc3\xa9\n");
	cr_assert_eq(r.klass, CILOG_COMPILE);
	cr_assert(strstr(r.excerpt, "\xef\xbf\xbd"), "%s", r.excerpt);
	cr_assert(strstr(r.excerpt, "\xc3\xa9"));
	for (p = (const unsigned char *)r.excerpt; *p; p++)
		cr_assert(*p >= 0x20 || *p == '\n' || *p == '\t', "control byte %02x", *p);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}

Test(cilog, paths_lose_the_ci_build_root)
{
	cilog_rules *rs = defaults();
	cilog_result r;

	classify(&r, rs, "/builds/group/project/src/app.c:3:1: error: oops\n");
	cr_assert_str_eq(r.file, "src/app.c");
	cilog_result_release(&r);
	classify(&r, rs, "/home/travis/build/o/r/lib/x.c:9:2: error: oops\n");
	cr_assert_str_eq(r.file, "lib/x.c");
	cr_assert_eq(r.line, 9);
	cilog_result_release(&r);
	cilog_rules_free(rs);
}
