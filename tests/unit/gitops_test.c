/* Tests for common/gitops.c against local bare repositories: clone, branch,
 * commit (author, committer, message, exactly the work tree's change), push,
 * a rejected push recovered by fetch + rebase, rebase conflicts, leases,
 * fetches of missing branches, shallow checkouts. (Credentials over HTTP and
 * refusals by a server hook are exercised end to end against the GitLab
 * double in tests/integration/test_implement_*.py: the local transport asks
 * for no credentials and runs no hooks.) The git command line only builds
 * fixtures and checks results here; the code under test never runs it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "git.h"
#include "gitops.h"
#include "log.h"

static char tmp[64];
static char bare[128];
static gitops_remote rem;
static const gitops_identity author = {"Factory Bot", "factory@example.invalid"};
static const gitops_identity committer = {"Factory Committer", "committer@example.invalid"};

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* The first line of a command's output, trailing newline removed. */
static char *out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *out(const char *fmt, ...)
{
	static char buf[8192];
	char cmd[4096];
	va_list ap;
	FILE *p;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(buf, 1, sizeof(buf) - 1, p);
	pclose(p);
	buf[n] = '\0';
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return buf;
}

#define GIT "git -c user.email=t@t -c user.name=t -c init.defaultBranch=main"

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/gitopstest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(bare, sizeof(bare), "%s/remote.git", tmp);
	/* A bare "server" with main (two files) and a second branch. */
	sh("cd %s && " GIT " init -q -b main seed && cd seed && printf 'one\\ntwo\\nthree\\n' > a.txt && "
	   "mkdir -p src && echo 'int x;' > src/x.c && echo gone > old.txt && " GIT " add . && " GIT
	   " commit -qm init && " GIT " branch other && " GIT " clone -q --bare . %s",
	   tmp, bare);
	memset(&rem, 0, sizeof(rem));
	rem.url = bare;
	log_set_level(LOG_ERROR);
}

static void teardown(void)
{
	sh("rm -rf %s", tmp);
}

TestSuite(gitops, .init = setup, .fini = teardown);

static fgit_repo *clone_to(const char *name, const char *branch)
{
	fgit_repo *r = NULL;
	char dir[256];

	snprintf(dir, sizeof(dir), "%s/%s", tmp, name);
	cr_assert_eq(gitops_clone(&r, &rem, dir, branch), 0, "%s", ferror_last());
	return r;
}

static void write_file(fgit_repo *r, const char *path, const char *text)
{
	char full[512];
	FILE *f;

	snprintf(full, sizeof(full), "%s%s", fgit_workdir(r), path);
	f = fopen(full, "w");
	cr_assert_not_null(f, "%s", full);
	fputs(text, f);
	fclose(f);
}

Test(gitops, clone_checks_out_the_default_branch_and_keeps_the_url_clean)
{
	fgit_repo *r = clone_to("c", NULL);
	char sha[GITOPS_SHA_LEN], head[GITOPS_SHA_LEN];

	cr_assert_str_eq(out("git -C %s/c rev-parse --abbrev-ref HEAD", tmp), "main");
	cr_assert_str_eq(out("git -C %s/c config remote.origin.url", tmp), bare);
	cr_assert_eq(gitops_resolve(sha, r, "refs/remotes/origin/other"), 0, "%s", ferror_last());
	cr_assert_eq(gitops_resolve(head, r, "HEAD"), 0);
	cr_assert_str_eq(sha, head);
	cr_assert_str_eq(head, out("git -C %s rev-parse main", bare));
	cr_assert_eq(gitops_is_shallow(r), 0);
	cr_assert_eq(gitops_resolve(sha, r, "refs/remotes/origin/nope"), FACTORY_ENOTFOUND);
	fgit_free(r);
}

Test(gitops, clone_refuses_credentials_in_the_url_and_reports_a_missing_remote)
{
	fgit_repo *r = NULL;
	gitops_remote bad = {"https://oauth2:glpat-secret-12345@gitlab.example/x.git", NULL, NULL};
	char dir[256], missing[256];

	snprintf(dir, sizeof(dir), "%s/x", tmp);
	cr_assert_eq(gitops_clone(&r, &bad, dir, NULL), FACTORY_EINVALID);
	cr_assert_null(strstr(ferror_last(), "glpat"), "%s", ferror_last());
	cr_assert_null(r);
	snprintf(missing, sizeof(missing), "%s/nothing-here.git", tmp);
	bad.url = missing;
	cr_assert_lt(gitops_clone(&r, &bad, dir, NULL), 0);
	cr_assert_not_null(strstr(ferror_last(), "cannot clone"), "%s", ferror_last());
	cr_assert_null(r);
}

Test(gitops, commit_holds_exactly_the_work_tree_change_with_author_committer_and_trailers)
{
	fgit_repo *r = clone_to("c", NULL);
	gitops_commit_result res;
	const char *msg = "Fix the thing\n\nLonger text.\n\nCloses #12\n\nChangelog: fixed";
	char *log;
	size_t i;
	int seen_a = 0, seen_new = 0, seen_old = 0;

	cr_assert_eq(gitops_branch_checkout(r, "factory/12-fix-the-thing", "refs/remotes/origin/main"), 0, "%s",
	             ferror_last());
	cr_assert_str_eq(out("git -C %s/c rev-parse --abbrev-ref HEAD", tmp), "factory/12-fix-the-thing");
	write_file(r, "a.txt", "one\nTWO\nthree\nfour\n");
	write_file(r, "new.txt", "hello\n");
	sh("rm %s/c/old.txt && echo '*.log' > %s/c/.git/info/exclude && echo x > %s/c/build.log", tmp, tmp, tmp);
	cr_assert_eq(gitops_commit_all(&res, r, &author, &committer, msg), 0, "%s", ferror_last());
	cr_assert_eq(strlen(res.sha), 40);
	cr_assert_eq(res.count, 3);
	for (i = 0; i < res.count; i++) {
		if (!strcmp(res.files[i].path, "a.txt")) {
			seen_a = 1;
			cr_assert_eq(res.files[i].status, 'M');
			cr_assert_eq(res.files[i].added, 2);
			cr_assert_eq(res.files[i].removed, 1);
		} else if (!strcmp(res.files[i].path, "new.txt")) {
			seen_new = 1;
			cr_assert_eq(res.files[i].status, 'A');
			cr_assert_eq(res.files[i].added, 1);
		} else if (!strcmp(res.files[i].path, "old.txt")) {
			seen_old = 1;
			cr_assert_eq(res.files[i].status, 'D');
		}
	}
	cr_assert(seen_a && seen_new && seen_old);
	cr_assert_str_eq(out("git -C %s/c rev-parse HEAD", tmp), res.sha);
	cr_assert_str_eq(out("git -C %s/c rev-parse factory/12-fix-the-thing", tmp), res.sha);
	cr_assert_str_eq(out("git -C %s/c log -1 --format='%%an <%%ae>|%%cn <%%ce>'", tmp),
	                 "Factory Bot <factory@example.invalid>|Factory Committer <committer@example.invalid>");
	cr_assert_str_eq(out("git -C %s/c log -1 --format='%%(trailers:key=Changelog,valueonly)'", tmp), "fixed");
	log = out("git -C %s/c log -1 --format=%%B", tmp);
	cr_assert_not_null(strstr(log, "Closes #12"));
	/* Exactly that change: the diff against main names three files, the ignored log is not in it. */
	cr_assert_str_eq(out("git -C %s/c diff --name-only origin/main HEAD | tr '\\n' ' '", tmp),
	                 "a.txt new.txt old.txt ");
	cr_assert_str_eq(out("git -C %s/c status --porcelain", tmp), "");
	cr_assert_str_eq(out("git -C %s/c rev-parse HEAD~1", tmp), out("git -C %s rev-parse main", bare));
	gitops_commit_result_release(&res);
	fgit_free(r);
}

Test(gitops, commit_of_a_clean_tree_makes_nothing)
{
	fgit_repo *r = clone_to("c", NULL);
	gitops_commit_result res;
	char before[GITOPS_SHA_LEN], after[GITOPS_SHA_LEN];

	cr_assert_eq(gitops_resolve(before, r, "HEAD"), 0);
	cr_assert_eq(gitops_commit_all(&res, r, &author, NULL, "nothing"), 0, "%s", ferror_last());
	cr_assert_str_eq(res.sha, "");
	cr_assert_eq(res.count, 0);
	cr_assert_eq(gitops_resolve(after, r, "HEAD"), 0);
	cr_assert_str_eq(before, after);
	gitops_commit_result_release(&res);
	cr_assert_eq(gitops_commit_all(&res, r, &(gitops_identity){"", ""}, NULL, "x"), FACTORY_EINVALID);
	cr_assert_eq(gitops_commit_all(&res, r, &author, NULL, ""), FACTORY_EINVALID);
	fgit_free(r);
}

Test(gitops, commit_on_an_unborn_branch_has_no_parent)
{
	fgit_repo *r = NULL;
	gitops_commit_result res;
	char dir[256];

	snprintf(dir, sizeof(dir), "%s/fresh", tmp);
	sh(GIT " init -q -b main %s && echo hi > %s/f.txt", dir, dir);
	cr_assert_eq(fgit_open(&r, dir), 0);
	cr_assert_eq(gitops_commit_all(&res, r, &author, NULL, "first"), 0, "%s", ferror_last());
	cr_assert_eq(res.count, 1);
	cr_assert_str_eq(out("git -C %s rev-list --count HEAD", dir), "1");
	gitops_commit_result_release(&res);
	fgit_free(r);
}

static void commit_change(fgit_repo *r, const char *path, const char *text, const char *msg)
{
	gitops_commit_result res;

	write_file(r, path, text);
	cr_assert_eq(gitops_commit_all(&res, r, &author, &committer, msg), 0, "%s", ferror_last());
	cr_assert_neq(res.sha[0], '\0');
	gitops_commit_result_release(&res);
}

Test(gitops, push_creates_the_branch_on_the_server)
{
	fgit_repo *r = clone_to("c", NULL);
	char sha[GITOPS_SHA_LEN], tracking[GITOPS_SHA_LEN];

	cr_assert_eq(gitops_branch_checkout(r, "factory/1-x", "origin/main"), 0, "%s", ferror_last());
	commit_change(r, "new.txt", "new\n", "add new");
	cr_assert_eq(gitops_resolve(sha, r, "HEAD"), 0);
	cr_assert_eq(gitops_push(r, &rem, "factory/1-x", "factory/1-x", 0, NULL), 0, "%s", ferror_last());
	cr_assert_str_eq(out("git -C %s rev-parse factory/1-x", bare), sha);
	cr_assert_eq(gitops_resolve(tracking, r, "refs/remotes/origin/factory/1-x"), 0);
	cr_assert_str_eq(tracking, sha);
	cr_assert_eq(gitops_push(r, &rem, "no-such-branch", "x", 0, NULL), FACTORY_ENOTFOUND);
	cr_assert_eq(gitops_push(r, &rem, "factory/1-x", "refs/tags/v1", 0, NULL), FACTORY_EINVALID);
	fgit_free(r);
}

Test(gitops, a_rejected_push_is_fetched_rebased_and_pushed_again)
{
	fgit_repo *r = clone_to("c", NULL), *other = clone_to("o", NULL);
	size_t rebases = 9;
	char mine[GITOPS_SHA_LEN], theirs[GITOPS_SHA_LEN];

	/* Both start factory/2-y from main; the other one pushes first. */
	cr_assert_eq(gitops_branch_checkout(other, "factory/2-y", "origin/main"), 0);
	commit_change(other, "theirs.txt", "theirs\n", "their change");
	cr_assert_eq(gitops_push(other, &rem, "factory/2-y", "factory/2-y", 0, NULL), 0, "%s", ferror_last());
	cr_assert_eq(gitops_resolve(theirs, other, "HEAD"), 0);

	cr_assert_eq(gitops_branch_checkout(r, "factory/2-y", "origin/main"), 0);
	commit_change(r, "mine.txt", "mine\n", "my change");
	cr_assert_eq(gitops_push(r, &rem, "factory/2-y", "factory/2-y", 0, NULL), FACTORY_ECONFLICT);
	cr_assert_str_eq(out("git -C %s rev-parse factory/2-y", bare), theirs);

	cr_assert_eq(gitops_push_rebasing(&rebases, r, &rem, "factory/2-y", "factory/2-y", &committer, 3), 0, "%s",
	             ferror_last());
	cr_assert_eq(rebases, 1);
	cr_assert_eq(gitops_resolve(mine, r, "HEAD"), 0);
	cr_assert_str_eq(out("git -C %s rev-parse factory/2-y", bare), mine);
	cr_assert_str_eq(out("git -C %s rev-parse factory/2-y~1", bare), theirs);
	cr_assert_str_eq(out("git -C %s log -1 --format=%%s factory/2-y", bare), "my change");
	cr_assert_str_eq(out("git -C %s log -1 --format=%%an factory/2-y", bare), "Factory Bot");
	cr_assert_str_eq(out("git -C %s/c status --porcelain", tmp), "");
	fgit_free(r);
	fgit_free(other);
}

Test(gitops, a_rebase_that_conflicts_leaves_everything_as_it_was)
{
	fgit_repo *r = clone_to("c", NULL), *other = clone_to("o", NULL);
	char before[GITOPS_SHA_LEN], after[GITOPS_SHA_LEN];
	size_t n = 7;

	commit_change(other, "a.txt", "ONE\ntwo\nthree\n", "upstream edits line 1");
	cr_assert_eq(gitops_push(other, &rem, "main", "main", 0, NULL), 0, "%s", ferror_last());

	cr_assert_eq(gitops_branch_checkout(r, "factory/3-z", "origin/main"), 0);
	commit_change(r, "a.txt", "uno\ntwo\nthree\n", "we edit line 1 too");
	cr_assert_eq(gitops_resolve(before, r, "HEAD"), 0);
	cr_assert_eq(gitops_fetch(r, &rem, (const char *const[]){"main", NULL}, NULL), 0, "%s", ferror_last());
	cr_assert_eq(gitops_rebase(&n, r, "refs/remotes/origin/main", &committer), FACTORY_ECONFLICT);
	cr_assert_not_null(strstr(ferror_last(), "a.txt"), "%s", ferror_last());
	cr_assert_eq(n, 0);
	cr_assert_eq(gitops_resolve(after, r, "HEAD"), 0);
	cr_assert_str_eq(before, after);
	cr_assert_str_eq(out("git -C %s/c rev-parse --abbrev-ref HEAD", tmp), "factory/3-z");
	cr_assert_str_eq(out("git -C %s/c status --porcelain", tmp), "");
	cr_assert_str_eq(out("cat %s/c/a.txt | head -1", tmp), "uno");
	fgit_free(r);
	fgit_free(other);
}

Test(gitops, rebase_onto_a_moved_default_branch)
{
	fgit_repo *r = clone_to("c", NULL), *other = clone_to("o", NULL);
	char main_sha[GITOPS_SHA_LEN];
	size_t n = 0, ahead = 0, behind = 0;

	cr_assert_eq(gitops_branch_checkout(r, "factory/4-w", "origin/main"), 0);
	commit_change(r, "mine1.txt", "1\n", "first");
	commit_change(r, "mine2.txt", "2\n", "second");
	commit_change(other, "src/x.c", "int y;\n", "upstream moves on");
	cr_assert_eq(gitops_push(other, &rem, "main", "main", 0, NULL), 0);
	cr_assert_eq(gitops_fetch(r, &rem, (const char *const[]){"main", NULL}, NULL), 0);
	cr_assert_eq(gitops_ahead_behind(&ahead, &behind, r, "HEAD", "origin/main"), 0);
	cr_assert_eq(ahead, 2);
	cr_assert_eq(behind, 1);
	cr_assert_eq(gitops_rebase(&n, r, "origin/main", &committer), 0, "%s", ferror_last());
	cr_assert_eq(n, 2);
	cr_assert_eq(gitops_resolve(main_sha, r, "origin/main"), 0);
	cr_assert_str_eq(out("git -C %s/c rev-parse HEAD~2", tmp), main_sha);
	cr_assert_eq(gitops_ahead_behind(&ahead, &behind, r, "HEAD", "origin/main"), 0);
	cr_assert_eq(ahead, 2);
	cr_assert_eq(behind, 0);
	/* On top already: nothing to do. */
	cr_assert_eq(gitops_rebase(&n, r, "origin/main", &committer), 0);
	cr_assert_eq(n, 0);
	cr_assert_str_eq(out("git -C %s/c log -1 --format='%%an|%%cn'", tmp), "Factory Bot|Factory Committer");
	fgit_free(r);
	fgit_free(other);
}

Test(gitops, force_push_holds_to_its_lease)
{
	fgit_repo *r = clone_to("c", NULL), *other = clone_to("o", "other");
	char old[GITOPS_SHA_LEN], moved[GITOPS_SHA_LEN];

	cr_assert_eq(gitops_resolve(old, r, "origin/other"), 0);
	/* Someone moves "other" after we looked. */
	commit_change(other, "b.txt", "b\n", "moves other");
	cr_assert_eq(gitops_push(other, &rem, "other", "other", 0, NULL), 0);
	cr_assert_eq(gitops_resolve(moved, other, "HEAD"), 0);

	cr_assert_eq(gitops_branch_checkout(r, "other", "origin/main"), 0);
	commit_change(r, "c.txt", "c\n", "our rewrite");
	cr_assert_eq(gitops_push(r, &rem, "other", "other", 1, old), FACTORY_ECONFLICT);
	cr_assert_not_null(strstr(ferror_last(), "moved on the server"), "%s", ferror_last());
	cr_assert_str_eq(out("git -C %s rev-parse other", bare), moved);
	cr_assert_eq(gitops_push(r, &rem, "other", "other", 1, moved), 0, "%s", ferror_last());
	cr_assert_str_eq(out("git -C %s log -1 --format=%%s other", bare), "our rewrite");
	fgit_free(r);
	fgit_free(other);
}

Test(gitops, fetch_tells_which_branches_the_server_lacks)
{
	fgit_repo *r = clone_to("c", NULL);
	size_t missing = 0;
	char sha[GITOPS_SHA_LEN];

	cr_assert_eq(gitops_resolve(sha, r, "refs/remotes/origin/other"), 0);
	sh("git -C %s branch -D other -q", bare);
	cr_assert_eq(gitops_fetch(r, &rem, (const char *const[]){"main", "other", "factory/none", NULL}, &missing), 0,
	             "%s", ferror_last());
	cr_assert_eq(missing, 2);
	cr_assert_eq(gitops_resolve(sha, r, "refs/remotes/origin/other"), FACTORY_ENOTFOUND);
	cr_assert_eq(gitops_resolve(sha, r, "refs/remotes/origin/main"), 0);
	cr_assert_eq(gitops_fetch(r, &rem, (const char *const[]){"a:b", NULL}, NULL), FACTORY_EINVALID);
	fgit_free(r);
}

Test(gitops, shallow_checkouts_are_recognised)
{
	fgit_repo *r = NULL;
	char dir[256];

	snprintf(dir, sizeof(dir), "%s/shallow", tmp);
	sh("git clone -q --depth 1 file://%s %s", bare, dir);
	cr_assert_eq(fgit_open(&r, dir), 0);
	cr_assert_eq(gitops_is_shallow(r), 1);
	fgit_free(r);
}

Test(gitops, branch_checkout_refuses_bad_names_and_moves_the_current_branch)
{
	fgit_repo *r = clone_to("c", NULL);
	char sha[GITOPS_SHA_LEN];

	cr_assert_eq(gitops_branch_checkout(r, "bad..name", "origin/main"), FACTORY_EINVALID);
	cr_assert_eq(gitops_branch_checkout(r, "x", "origin/no-such"), FACTORY_ENOTFOUND);
	commit_change(r, "z.txt", "z\n", "local");
	/* Re-creating the branch HEAD is on (a retry starting over) works. */
	cr_assert_eq(gitops_branch_checkout(r, "main", "origin/main"), 0, "%s", ferror_last());
	cr_assert_eq(gitops_resolve(sha, r, "HEAD"), 0);
	cr_assert_str_eq(sha, out("git -C %s rev-parse main", bare));
	cr_assert_eq(access(out("echo %s/c/z.txt", tmp), F_OK), -1);
	cr_assert_str_eq(out("git -C %s/c rev-parse --abbrev-ref HEAD", tmp), "main");
	fgit_free(r);
}

Test(gitops, stats_count_operations)
{
	gitops_stats before, after;
	fgit_repo *r;

	gitops_get_stats(&before);
	r = clone_to("c", NULL);
	cr_assert_eq(gitops_fetch(r, &rem, (const char *const[]){"main", NULL}, NULL), 0);
	gitops_get_stats(&after);
	cr_assert_eq(after.clones - before.clones, 1);
	cr_assert_eq(after.fetches - before.fetches, 1);
	fgit_free(r);
}
