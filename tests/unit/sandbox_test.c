/* Tests for common/sandbox.c: paths that stay inside the root, the
 * command environment, timeouts that kill the whole group, capped output,
 * and (these tests run as root) commands run as the unprivileged user. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "sandbox.h"

static char root[64];
static char outside[64];
static sandbox *sb;

static void put(const char *rel, const char *text)
{
	char p[256];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	f = fopen(p, "w");
	cr_assert_not_null(f, "cannot write %s", p);
	fputs(text, f);
	fclose(f);
}

static void make_tree(void)
{
	char p[256];

	snprintf(root, sizeof(root), "/tmp/sbtest-XXXXXX");
	cr_assert_not_null(mkdtemp(root));
	chmod(root, 0755);
	snprintf(outside, sizeof(outside), "/tmp/sbout-XXXXXX");
	cr_assert_not_null(mkdtemp(outside));
	snprintf(p, sizeof(p), "%s/secret.txt", outside);
	FILE *f = fopen(p, "w");
	fputs("outside secret\n", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/.git", root);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/.git/hooks", root);
	mkdir(p, 0755);
	put(".git/config", "[core]\n");
	snprintf(p, sizeof(p), "%s/src", root);
	mkdir(p, 0755);
	put("src/a.c", "int a;\n");
	put("README", "hello\n");
	snprintf(p, sizeof(p), "%s/out", root);
	cr_assert_eq(symlink(outside, p), 0);
	snprintf(p, sizeof(p), "%s/in", root);
	cr_assert_eq(symlink("src", p), 0);
	snprintf(p, sizeof(p), "%s/g", root);
	cr_assert_eq(symlink(".git", p), 0);
	snprintf(p, sizeof(p), "%s/fifo", root);
	cr_assert_eq(mkfifo(p, 0644), 0);
}

static void rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static void setup(void)
{
	sandbox_options o;

	make_tree();
	sandbox_options_init(&o);
	o.root = root;
	o.output_head = 64;
	o.output_tail = 64;
	cr_assert_eq(sandbox_new(&sb, &o), 0, "%s", ferror_last());
}

static void teardown(void)
{
	sandbox_free(sb);
	sb = NULL;
	rm_rf(root);
	rm_rf(outside);
}

TestSuite(sandbox, .init = setup, .fini = teardown);

static int path_of(fbuf *b, const char *p, int mode)
{
	return sandbox_path(b, sb, p, mode);
}

Test(sandbox, normalises_relative_paths)
{
	fbuf b;

	fbuf_init(&b, 4096);
	cr_assert_eq(path_of(&b, "./src//a.c", SANDBOX_READ), 0, "%s", ferror_last());
	cr_assert_str_eq(b.ptr, "src/a.c");
	cr_assert_eq(path_of(&b, "", SANDBOX_READ), 0);
	cr_assert_str_eq(b.ptr, ".");
	cr_assert_eq(path_of(&b, "in/a.c", SANDBOX_READ), 0, "a symlink inside the root is fine");
	cr_assert_eq(path_of(&b, "new/dir/file", SANDBOX_WRITE), 0, "missing parts are fine for writes");
	fbuf_release(&b);
}

Test(sandbox, refuses_absolute_dotdot_and_escaping_symlinks)
{
	fbuf b;

	fbuf_init(&b, 4096);
	cr_assert_eq(path_of(&b, "/etc/passwd", SANDBOX_READ), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "absolute"), "%s", ferror_last());
	cr_assert_eq(path_of(&b, "../x", SANDBOX_READ), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "'..'"), "%s", ferror_last());
	cr_assert_eq(path_of(&b, "src/../../x", SANDBOX_READ), FACTORY_EINVALID);
	cr_assert_eq(path_of(&b, "out/secret.txt", SANDBOX_READ), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "outside"), "%s", ferror_last());
	cr_assert_eq(path_of(&b, "out/new.txt", SANDBOX_WRITE), FACTORY_EINVALID);
	cr_assert_eq(path_of(&b, "", SANDBOX_WRITE), FACTORY_EINVALID);
	fbuf_release(&b);
}

Test(sandbox, refuses_writes_into_git)
{
	fbuf b;

	fbuf_init(&b, 4096);
	cr_assert_eq(path_of(&b, ".git/hooks/pre-commit", SANDBOX_WRITE), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), ".git"), "%s", ferror_last());
	cr_assert_eq(path_of(&b, "sub/.git/config", SANDBOX_WRITE), FACTORY_EINVALID);
	cr_assert_eq(path_of(&b, "g/hooks/post-checkout", SANDBOX_WRITE), FACTORY_EINVALID, "through a symlink");
	cr_assert_eq(path_of(&b, ".git/config", SANDBOX_READ), 0, "reading .git is not writing it");
	cr_assert_eq(sandbox_write_file(sb, "g/hooks/x", "x", 1), FACTORY_EINVALID);
	cr_assert_eq(access("/nonexistent", F_OK), -1);
	{
		char p[256];
		snprintf(p, sizeof(p), "%s/.git/hooks/x", root);
		cr_assert_eq(access(p, F_OK), -1, "nothing was written");
	}
	fbuf_release(&b);
}

Test(sandbox, reads_and_writes_regular_files_only)
{
	fbuf b;
	char p[256];
	struct stat st;

	fbuf_init(&b, 1 << 20);
	cr_assert_eq(sandbox_read_file(&b, sb, "src/a.c", 1024), 0, "%s", ferror_last());
	cr_assert_str_eq(b.ptr, "int a;\n");
	cr_assert_eq(sandbox_read_file(&b, sb, "nope.c", 1024), FACTORY_ENOTFOUND);
	cr_assert_eq(sandbox_read_file(&b, sb, "src", 1024), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "directory"), "%s", ferror_last());
	cr_assert_eq(sandbox_read_file(&b, sb, "fifo", 1024), FACTORY_EINVALID, "a FIFO must not block us");
	cr_assert_eq(sandbox_read_file(&b, sb, "README", 3), FACTORY_ETOOBIG);
	cr_assert_eq(sandbox_write_file(sb, "deep/er/new.txt", "x\n", 2), 0, "%s", ferror_last());
	snprintf(p, sizeof(p), "%s/deep/er/new.txt", root);
	cr_assert_eq(stat(p, &st), 0);
	if (geteuid() == 0)
		cr_assert_eq(st.st_uid, 65534, "what the job creates belongs to the command user");
	cr_assert_eq(sandbox_write_file(sb, "src", "x", 1), FACTORY_EINVALID, "a directory is not a file");
	cr_assert_eq(sandbox_write_file(sb, "README/x", "x", 1), FACTORY_EINVALID);
	fbuf_release(&b);
}

Test(sandbox, environment_is_an_allow_list)
{
	sandbox_result r;

	setenv("FACTORY_LLM_API_KEY", "sk-ant-should-never-show-1234", 1);
	setenv("GITLAB_TOKEN", "glpat-never-show-123456", 1);
	setenv("CI_JOB_TOKEN", "job-token-never-show", 1);
	setenv("SOME_OTHER", "other-value", 1);
	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, "env", 5000, NULL), 0, "%s", ferror_last());
	cr_assert_eq(r.exit_code, 0);
	cr_assert_null(strstr(r.output.ptr, "never-show"), "%s", r.output.ptr);
	cr_assert_null(strstr(r.output.ptr, "other-value"), "%s", r.output.ptr);
	cr_assert_eq(sandbox_run(&r, sb, "echo $HOME", 5000, NULL), 0);
	cr_assert(strstr(r.output.ptr, "/tmp/factory-sandbox-"), "%s", r.output.ptr);
	sandbox_result_release(&r);
	cr_assert(sandbox_env_forbidden("FACTORY_GITLAB_TOKEN"));
	cr_assert(sandbox_env_forbidden("CI_JOB_TOKEN"));
	cr_assert(sandbox_env_forbidden("CI_REGISTRY_PASSWORD"));
	cr_assert(sandbox_env_forbidden("GITLAB_TOKEN"));
	cr_assert_not(sandbox_env_forbidden("ANTHROPIC_API_KEY"));
	cr_assert(sandbox_env_secretish("ANTHROPIC_API_KEY"));
	cr_assert(sandbox_env_secretish("aws_secret_access_key"));
	cr_assert(sandbox_env_secretish("SSH_KEY"));
	cr_assert_not(sandbox_env_secretish("GOPATH"));
}

Test(sandbox, allow_list_refuses_secrets_and_passes_the_rest)
{
	sandbox_options o;
	sandbox *s2 = NULL;
	sandbox_result r;
	const char *bad[] = {"NPM_TOKEN", NULL};
	const char *good[] = {"GOFLAGS", NULL};
	const char *extra_bad[] = {"FACTORY_GITLAB_TOKEN=x", NULL};

	sandbox_options_init(&o);
	o.root = root;
	o.env_allow = bad;
	cr_assert_eq(sandbox_new(&s2, &o), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "NPM_TOKEN"), "%s", ferror_last());
	setenv("GOFLAGS", "-mod=vendor", 1);
	o.env_allow = good;
	cr_assert_eq(sandbox_new(&s2, &o), 0, "%s", ferror_last());
	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, s2, "echo \"$GOFLAGS\"", 5000, NULL), 0);
	cr_assert_str_eq(r.output.ptr, "-mod=vendor\n");
	cr_assert_eq(sandbox_run(&r, s2, "true", 5000, extra_bad), FACTORY_EINVALID);
	sandbox_result_release(&r);
	sandbox_free(s2);
}

Test(sandbox, command_and_values_may_live_in_the_environment)
{
	sandbox_result r;
	const char *extra[2];

	/* The child wipes the job's environment strings: what it needs must be copies. */
	setenv("MY_CHECK_COMMAND", "echo from-the-environment $GIVEN", 1);
	setenv("GIVEN_ENTRY", "GIVEN=given-value", 1);
	extra[0] = getenv("GIVEN_ENTRY");
	extra[1] = NULL;
	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, getenv("MY_CHECK_COMMAND"), 5000, extra), 0, "%s", ferror_last());
	cr_assert_str_eq(r.output.ptr, "from-the-environment given-value\n");
	cr_assert_str_eq(getenv("MY_CHECK_COMMAND"), "echo from-the-environment $GIVEN",
	                 "the job's own copy is intact");
	sandbox_result_release(&r);
}

Test(sandbox, exit_status_and_merged_output)
{
	sandbox_result r;

	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, "echo out; echo err >&2; exit 3", 5000, NULL), 0);
	cr_assert_eq(r.exit_code, 3);
	cr_assert_str_eq(r.output.ptr, "out\nerr\n");
	cr_assert_eq(sandbox_run(&r, sb, "kill -9 $$", 5000, NULL), 0);
	cr_assert_eq(r.signal, 9);
	cr_assert_eq(r.exit_code, -1);
	cr_assert_eq(sandbox_run(&r, sb, "pwd", 5000, NULL), 0);
	cr_assert(strstr(r.output.ptr, root + 5), "%s", r.output.ptr);
	sandbox_result_release(&r);
}

Test(sandbox, timeout_kills_the_whole_group)
{
	sandbox_result r;
	char marker[128], cmd[512];

	snprintf(marker, sizeof(marker), "%s/late-marker", root);
	/* A child in the group, and one that left it with setsid: both must die. */
	snprintf(cmd, sizeof(cmd),
	         "(sleep 2; touch late-marker) & setsid sh -c 'sleep 2; touch late-marker' & sleep 30; echo never");
	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, cmd, 500, NULL), 0, "%s", ferror_last());
	cr_assert(r.timed_out);
	cr_assert_null(strstr(r.output.ptr, "never"));
	sleep(3);
	if (sandbox_has_namespaces(sb))
		cr_assert_eq(access(marker, F_OK), -1, "a process outlived the command");
	sandbox_result_release(&r);
}

Test(sandbox, output_keeps_head_and_tail)
{
	sandbox_result r;

	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, "echo START; seq 1 20000; echo END", 5000, NULL), 0);
	cr_assert(r.truncated);
	cr_assert_gt(r.output_total, 100000);
	cr_assert(!strncmp(r.output.ptr, "START\n", 6), "%s", r.output.ptr);
	cr_assert(strstr(r.output.ptr, "bytes left out"), "%s", r.output.ptr);
	cr_assert(strstr(r.output.ptr, "20000\nEND\n"), "%s", r.output.ptr);
	cr_assert_lt(r.output.len, 64 + 64 + 64);
	sandbox_result_release(&r);
}

Test(sandbox, commands_run_unprivileged_and_cannot_touch_git)
{
	sandbox_result r;
	char p[256];

	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, "id -u; echo x > .git/hooks/post-checkout; echo rc=$?", 5000, NULL), 0);
	if (geteuid() == 0) {
		cr_assert(!strncmp(r.output.ptr, "65534\n", 6), "%s", r.output.ptr);
	} else {
		cr_assert_eq(atoi(r.output.ptr), (int)geteuid(), "%s", r.output.ptr);
		cr_assert(sandbox_has_namespaces(sb), "without root, .git is kept read-only by namespaces");
	}
	cr_assert(strstr(r.output.ptr, "rc=1") || strstr(r.output.ptr, "rc=2"), "%s", r.output.ptr);
	snprintf(p, sizeof(p), "%s/.git/hooks/post-checkout", root);
	cr_assert_eq(access(p, F_OK), -1);
	cr_assert_eq(sandbox_run(&r, sb, "mv .git .gone; echo rc=$?", 5000, NULL), 0);
	cr_assert(strstr(r.output.ptr, "rc=1"), "%s", r.output.ptr);
	snprintf(p, sizeof(p), "%s/.git", root);
	cr_assert_eq(access(p, F_OK), 0);
	if (geteuid() == 0) {
		cr_assert_eq(sandbox_run(&r, sb, "cat out/secret.txt; echo rc=$?", 5000, NULL), 0);
		cr_assert(strstr(r.output.ptr, "rc=1"), "/tmp/sbout-* is 0700 root: %s", r.output.ptr);
	}
	sandbox_result_release(&r);
}

Test(sandbox, the_job_becomes_non_dumpable)
{
	cr_assert_eq(sandbox_protect_self(), 0);
	cr_assert_eq(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

Test(sandbox, private_file_is_readable_by_commands)
{
	sandbox_result r;
	char *path = NULL, *bad = NULL, cmd[512];

	cr_assert_eq(sandbox_private_file(&path, sb, "prompt.md", "the prompt\n", 11), 0, "%s", ferror_last());
	cr_assert_eq(sandbox_private_file(&bad, sb, "../x", "x", 1), FACTORY_EINVALID);
	cr_assert_null(bad);
	snprintf(cmd, sizeof(cmd), "cat '%s'", path);
	sandbox_result_init(&r);
	cr_assert_eq(sandbox_run(&r, sb, cmd, 5000, NULL), 0);
	cr_assert_str_eq(r.output.ptr, "the prompt\n");
	sandbox_result_release(&r);
	free(path);
}

Test(sandbox, bad_roots_are_config_errors)
{
	sandbox_options o;
	sandbox *s2 = NULL;

	sandbox_options_init(&o);
	o.root = "/nonexistent/dir";
	cr_assert_eq(sandbox_new(&s2, &o), FACTORY_ECONFIG);
	o.root = NULL;
	cr_assert_eq(sandbox_new(&s2, &o), FACTORY_ECONFIG);
	o.root = "/etc/passwd";
	cr_assert_eq(sandbox_new(&s2, &o), FACTORY_ECONFIG);
}
