/* Tests for common/agent.c's tools (through agent_tool_run, the way the
 * loop runs them) and common/git.c: every error the model can be told,
 * caps, masking, UTF-8 cleaning, file lists and diffs. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "error.h"
#include "git.h"
#include "log.h"
#include "sandbox.h"

static char root[64];
static sandbox *sb;
static fgit_repo *repo;
static agent_options opts;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void setup(void)
{
	sandbox_options so;

	snprintf(root, sizeof(root), "/tmp/agtest-XXXXXX");
	cr_assert_not_null(mkdtemp(root));
	chmod(root, 0755);
	sh("cd %s && git init -q -b main . && printf 'one\\ntwo\\nthree\\ntwo\\n' > a.txt && mkdir -p src && "
	   "printf 'int main(void) { return 0; }\\n' > src/m.c && printf 'ignored.log\\n' > .gitignore && "
	   "git add . && git -c user.email=t@t -c user.name=t commit -qm init && echo new > untracked.txt && "
	   "echo x > ignored.log && printf 'a\\0b' > bin.dat",
	   root);
	cr_assert_eq(fgit_open(&repo, root), 0, "%s", ferror_last());
	sandbox_options_init(&so);
	so.root = root;
	cr_assert_eq(sandbox_new(&sb, &so), 0, "%s", ferror_last());
	agent_options_init(&opts);
	opts.result_max = 4096;
	opts.search_max = 5;
	log_set_level(LOG_ERROR);
}

static void teardown(void)
{
	sandbox_free(sb);
	fgit_free(repo);
	sh("rm -rf %s", root);
}

TestSuite(agent, .init = setup, .fini = teardown);

/* Run a tool with JSON arguments; returns the answer (static buffer owner: caller frees). */
static char *tool(int *is_error, const char *name, const char *args)
{
	cJSON *in = args ? cJSON_Parse(args) : NULL;
	fbuf out;

	cr_assert(args == NULL || in != NULL, "bad test JSON %s", args);
	fbuf_init(&out, 0);
	cr_assert_eq(agent_tool_run(&out, is_error, &opts, sb, repo, name, in), 0, "%s", ferror_last());
	cJSON_Delete(in);
	return fbuf_detach(&out);
}

#define EXPECT_ERROR(name, args, says)                                                                                 \
	do {                                                                                                           \
		int e_;                                                                                                \
		char *o_ = tool(&e_, name, args);                                                                      \
		cr_assert(e_, "%s %s should fail: %s", name, args ? args : "", o_);                                    \
		cr_assert(strstr(o_, says), "%s %s: expected '%s' in: %s", name, args ? args : "", says, o_);          \
		free(o_);                                                                                              \
	} while (0)

#define EXPECT_OK(name, args, says)                                                                                    \
	do {                                                                                                           \
		int e_;                                                                                                \
		char *o_ = tool(&e_, name, args);                                                                      \
		cr_assert_not(e_, "%s %s failed: %s", name, args ? args : "", o_);                                     \
		cr_assert(strstr(o_, says), "%s %s: expected '%s' in: %s", name, args ? args : "", says, o_);          \
		free(o_);                                                                                              \
	} while (0)

Test(agent, argument_errors)
{
	EXPECT_ERROR("no_such_tool", "{}", "no tool named 'no_such_tool'");
	EXPECT_ERROR("read_file", NULL, "not a JSON object");
	EXPECT_ERROR("read_file", "{}", "'path' is missing");
	EXPECT_ERROR("read_file", "{\"path\":5}", "'path' must be a string");
	EXPECT_ERROR("read_file", "{\"path\":\"a.txt\",\"start_line\":1.5}", "whole number");
	EXPECT_ERROR("write_file", "{\"path\":\"x\"}", "'content' is missing");
	EXPECT_ERROR("edit_file", "{\"path\":\"a.txt\",\"old\":\"one\"}", "'new' is missing");
	EXPECT_ERROR("run_command", "{\"command\":[\"ls\"]}", "must be a string");
	EXPECT_ERROR("finish", "{\"summary\":\"s\",\"tested\":\"yes\",\"confidence\":\"high\"}", "true or false");
	EXPECT_ERROR("finish", "{\"summary\":\"s\",\"tested\":true,\"confidence\":\"total\"}", "low, medium or high");
	EXPECT_ERROR("finish", "{\"summary\":\"\",\"tested\":true,\"confidence\":\"low\"}", "summary is empty");
	EXPECT_OK("finish", "{\"summary\":\"s\",\"tested\":false,\"confidence\":\"low\"}", "finished");
}

Test(agent, list_files_sees_tracked_and_untracked_not_ignored)
{
	int e;
	char *o = tool(&e, "list_files", "{\"path\":\".\"}");

	cr_assert_not(e, "%s", o);
	cr_assert(strstr(o, "a.txt\n") && strstr(o, "src/m.c\n") && strstr(o, "untracked.txt\n"), "%s", o);
	cr_assert_null(strstr(o, "ignored.log"), "%s", o);
	cr_assert_null(strstr(o, ".git/"), "%s", o);
	free(o);
	EXPECT_OK("list_files", "{\"path\":\"src\"}", "src/m.c\n(1 file)");
	EXPECT_ERROR("list_files", "{\"path\":\"nope\"}", "no files under nope");
	EXPECT_ERROR("list_files", "{\"path\":\"../\"}", "'..' is not allowed");
	EXPECT_ERROR("list_files", "{\"path\":\"/etc\"}", "absolute paths are not allowed");
}

Test(agent, read_file_lines_and_errors)
{
	EXPECT_OK("read_file", "{\"path\":\"a.txt\"}", "1\tone\n2\ttwo\n3\tthree\n4\ttwo\n");
	EXPECT_OK("read_file", "{\"path\":\"a.txt\",\"start_line\":2,\"end_line\":3}",
	          "2\ttwo\n3\tthree\n(lines 2-3 of 4)");
	EXPECT_OK("read_file", "{\"path\":\"a.txt\",\"start_line\":\"3\"}", "3\tthree");
	EXPECT_ERROR("read_file", "{\"path\":\"a.txt\",\"start_line\":9}", "has 4 lines");
	EXPECT_ERROR("read_file", "{\"path\":\"a.txt\",\"start_line\":3,\"end_line\":2}", "before start_line");
	EXPECT_ERROR("read_file", "{\"path\":\"a.txt\",\"start_line\":0}", "1 or more");
	EXPECT_ERROR("read_file", "{\"path\":\"missing.txt\"}", "no such file");
	EXPECT_ERROR("read_file", "{\"path\":\"src\"}", "is a directory");
	EXPECT_ERROR("read_file", "{\"path\":\"bin.dat\"}", "binary file");
	EXPECT_ERROR("read_file", "{\"path\":\"/etc/passwd\"}", "absolute paths are not allowed");
	EXPECT_ERROR("read_file", "{\"path\":\"src/../../etc/passwd\"}", "'..' is not allowed");
}

Test(agent, read_file_output_is_capped_with_a_way_on)
{
	int e;
	char *o;

	sh("cd %s && seq 1 5000 > long.txt", root);
	o = tool(&e, "read_file", "{\"path\":\"long.txt\"}");
	cr_assert_not(e);
	cr_assert(strstr(o, "[output cut at line"), "%s", o);
	cr_assert(strstr(o, "read on with start_line="), "%s", o);
	cr_assert_leq(strlen(o), opts.result_max);
	free(o);
}

Test(agent, write_and_edit)
{
	int e;
	char *o;

	EXPECT_OK("write_file", "{\"path\":\"new/dir/f.txt\",\"content\":\"hello\\n\"}", "wrote 6 bytes");
	EXPECT_OK("read_file", "{\"path\":\"new/dir/f.txt\"}", "1\thello");
	EXPECT_OK("edit_file", "{\"path\":\"a.txt\",\"old\":\"three\",\"new\":\"THREE\"}", "at line 3");
	EXPECT_ERROR("edit_file", "{\"path\":\"a.txt\",\"old\":\"two\",\"new\":\"2\"}", "occurs 2 times");
	EXPECT_ERROR("edit_file", "{\"path\":\"a.txt\",\"old\":\"four\",\"new\":\"4\"}", "was not found");
	EXPECT_ERROR("edit_file", "{\"path\":\"a.txt\",\"old\":\"\",\"new\":\"4\"}", "'old' is empty");
	EXPECT_ERROR("edit_file", "{\"path\":\"nope.txt\",\"old\":\"a\",\"new\":\"b\"}", "no such file");
	EXPECT_ERROR("write_file", "{\"path\":\".git/hooks/pre-commit\",\"content\":\"#!/bin/sh\\n\"}",
	             ".git/ cannot be written");
	EXPECT_ERROR("edit_file", "{\"path\":\".git/config\",\"old\":\"[core]\",\"new\":\"x\"}",
	             ".git/ cannot be written");
	EXPECT_ERROR("write_file", "{\"path\":\"src\",\"content\":\"x\"}", "directory");
	opts.write_max = 4;
	EXPECT_ERROR("write_file", "{\"path\":\"big\",\"content\":\"12345\"}", "more than the 4 allowed");
	opts.write_max = (size_t)1 << 20;
	o = tool(&e, "git_diff", "{}");
	cr_assert_not(e);
	cr_assert(strstr(o, "-three\n+THREE"), "%s", o);
	cr_assert(strstr(o, "+++ b/new/dir/f.txt"), "new files are in the diff: %s", o);
	free(o);
}

Test(agent, search_matches_and_errors)
{
	EXPECT_OK("search", "{\"pattern\":\"^t\\\\w+\"}", "a.txt:2: two");
	EXPECT_OK("search", "{\"pattern\":\"main\",\"path\":\"src\"}", "src/m.c:1: int main");
	EXPECT_OK("search", "{\"pattern\":\"zzz-nothing\"}", "no matches");
	EXPECT_ERROR("search", "{\"pattern\":\"(unclosed\"}", "bad pattern at offset");
	EXPECT_ERROR("search", "{\"pattern\":\"\"}", "pattern is empty");
	EXPECT_ERROR("search", "{\"pattern\":\"x\",\"path\":\"nowhere\"}", "no files under");
	EXPECT_ERROR("search", "{\"pattern\":\"x\",\"path\":\"/etc\"}", "absolute");
	sh("cd %s && seq 1 100 > many.txt", root);
	EXPECT_OK("search", "{\"pattern\":\"\\\\d\",\"path\":\"many.txt\"}", "stopped at 5 matches");
	/* Catastrophic backtracking is stopped, not waited out. */
	sh("cd %s && (printf 'a%%.0s' $(seq 1 40); echo b) > evil.txt", root);
	EXPECT_ERROR("search", "{\"pattern\":\"^(a+)+$\",\"path\":\"evil.txt\"}", "too costly");
}

Test(agent, run_command_results)
{
	EXPECT_OK("run_command", "{\"command\":\"echo hi; exit 4\"}", "exit code 4\nhi\n");
	EXPECT_ERROR("run_command", "{\"command\":\"sleep 20\",\"timeout_s\":1}", "timed out after 1.0 s");
	/* What it printed before the timeout reaches the model, however long. */
	EXPECT_ERROR("run_command", "{\"command\":\"seq 1 1500; sleep 20\",\"timeout_s\":1}", "\n1500\n");
	EXPECT_ERROR("run_command", "{\"command\":\"\"}", "command is empty");
	EXPECT_ERROR("run_command", "{\"command\":\"true\",\"timeout_s\":0}", "1 or more");
}

Test(agent, answers_are_masked_cleaned_and_capped)
{
	int e;
	char *o;

	log_add_secret("sk-ant-secret-in-a-file-99999");
	sh("cd %s && echo 'key=sk-ant-secret-in-a-file-99999' > leak.txt && printf 'bad \\377\\376 bytes\\n' > "
	   "latin.txt",
	   root);
	o = tool(&e, "read_file", "{\"path\":\"leak.txt\"}");
	cr_assert_null(strstr(o, "secret-in-a-file"), "%s", o);
	cr_assert(strstr(o, "[MASKED]"), "%s", o);
	free(o);
	o = tool(&e, "run_command", "{\"command\":\"cat latin.txt\"}");
	cr_assert(strstr(o, "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes"), "%s", o);
	free(o);
	o = tool(&e, "run_command", "{\"command\":\"seq 1 100000\"}");
	cr_assert_leq(strlen(o), opts.result_max);
	cr_assert(strstr(o, "left out"), "%s", o);
	cr_assert(strstr(o, "100000\n"), "the end is kept: %s", o + strlen(o) - 40);
	free(o);
}

Test(agent, git_diff_when_clean)
{
	sh("cd %s && rm untracked.txt bin.dat", root);
	EXPECT_OK("git_diff", "{}", "(no changes)");
}

Test(agent, tool_schemas_are_valid_for_the_providers)
{
	cJSON *t = NULL, *x;
	llm_conv *c = NULL;
	const char *names[] = {"list_files", "read_file",   "write_file", "edit_file",
	                       "search",     "run_command", "git_diff",   "finish"};
	int i = 0;

	cr_assert_eq(agent_tools(&t), 0);
	cJSON_ArrayForEach(x, t) cr_assert_str_eq(cJSON_GetObjectItem(x, "name")->valuestring, names[i++]);
	cr_assert_eq(i, 8);
	cr_assert_eq(llm_conv_new(&c, LLM_ANTHROPIC, "s", t), 0, "%s", ferror_last());
	llm_conv_free(c);
	cJSON_Delete(t);
}

Test(agent, utf8_clean)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(agent_utf8_clean(&b, "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14), 0);
	cr_assert_str_eq(b.ptr, "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
	fbuf_reset(&b);
	cr_assert_eq(agent_utf8_clean(&b, "a\0b\xC0\x80\xED\xA0\x80", 8), 0);
	cr_assert_str_eq(b.ptr, "a\xEF\xBF\xBD"
	                        "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
	fbuf_release(&b);
}

Test(agent, git_scrubs_credentials)
{
	fbuf u;
	int changed = -1;
	char cmd[512];
	FILE *f;
	char buf[4096] = "";
	size_t n;

	fbuf_init(&u, 0);
	cr_assert_eq(fgit_url_strip_userinfo(&u, "https://oauth2:glpat-abcdefgh12345@gitlab.example.com/g/p.git"), 1);
	cr_assert_str_eq(u.ptr, "https://gitlab.example.com/g/p.git");
	cr_assert_eq(fgit_url_strip_userinfo(&u, "https://gitlab.example.com/g/p.git"), 0);
	cr_assert_eq(fgit_url_strip_userinfo(&u, "ssh://git@gitlab.example.com/g/p.git"), 0);
	fbuf_release(&u);
	sh("cd %s && git remote add origin https://gitlab-ci-token:glcbt-64_secret123456@gitlab.example.com/g/p.git && "
	   "git config http.https://gitlab.example.com.extraheader 'AUTHORIZATION: basic c2VjcmV0'",
	   root);
	cr_assert_eq(fgit_scrub_credentials(repo, &changed), 0, "%s", ferror_last());
	cr_assert_eq(changed, 2);
	snprintf(cmd, sizeof(cmd), "%s/.git/config", root);
	f = fopen(cmd, "r");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	cr_assert_null(strstr(buf, "secret123456"), "%s", buf);
	cr_assert_null(strstr(buf, "c2VjcmV0"), "%s", buf);
	cr_assert(strstr(buf, "url = https://gitlab.example.com/g/p.git"), "%s", buf);
}

Test(agent, git_open_errors, .init = NULL)
{
	fgit_repo *r = NULL;

	cr_assert_eq(fgit_open(&r, "/nonexistent"), FACTORY_ENOTFOUND);
	cr_assert(strstr(ferror_last(), "cannot open repository"), "%s", ferror_last());
}
