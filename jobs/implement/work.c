/*
 * work.c - the project's code on disk: a fresh clone over HTTPS with the
 * token (through gitops, never in a URL), or the objects of the CI checkout
 * reused when it is complete (GitLab's checkouts are shallow by default,
 * and libgit2 cannot deepen them: then it clones), and the Factory's branch
 * checked out from the default branch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "implement.h"
#include "log.h"
#include "fs.h"

gitops_remote impl_remote(const impl_run *r)
{
	gitops_remote rem = {r->clone_url, "oauth2", r->token};
	return rem;
}

void impl_checkout_release(impl_checkout *co, impl_run *r)
{
	fgit_free(co->repo);
	co->repo = NULL;
	if (co->dir[0]) {
		if (r->keep_workdir)
			log_info("work tree kept in %s", co->root);
		else
			fs_remove_tree(co->dir);
	}
	co->dir[0] = co->root[0] = '\0';
}

static uid_t reclaim_uid;
static gid_t reclaim_gid;
static const char *reclaim_git;
static size_t reclaim_git_len;

static int reclaim_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	if (!strncmp(path, reclaim_git, reclaim_git_len) && (path[reclaim_git_len] == '/' || !path[reclaim_git_len]))
		return 0; /* .git/ stayed the job's */
	if (st->st_uid != reclaim_uid || st->st_gid != reclaim_gid)
		lchown(path, reclaim_uid, reclaim_gid);
	return 0;
}

int impl_reclaim_tree(impl_checkout *co)
{
	char git[sizeof(co->root) + 8];
	int rc;

	if (geteuid() != 0 || !co->root[0])
		return 0; /* not root: the tree was never handed over */
	snprintf(git, sizeof(git), "%s/.git", co->root);
	reclaim_uid = geteuid();
	reclaim_gid = getegid();
	reclaim_git = git;
	reclaim_git_len = strlen(git);
	rc = nftw(co->root, reclaim_cb, 32, FTW_PHYS);
	reclaim_git = NULL;
	if (rc < 0)
		return ferror_set(FACTORY_ERR, "cannot take the work tree %s back from the sandbox: %s", co->root,
		                  strerror(errno));
	return 0;
}

/* A CI checkout whose objects can seed our clone: a repository that is not shallow. */
static const char *reusable_ci_checkout(impl_run *r)
{
	const char *dir = getenv("CI_PROJECT_DIR");
	fgit_repo *ci = NULL;
	int shallow;

	/* In a group scope the CI checkout is the scheduling project's, not the issue's. */
	if (strcmp(r->checkout, "auto") != 0 || !dir || !*dir || r->sc)
		return NULL;
	if (fgit_open(&ci, dir) < 0) {
		log_info("CI_PROJECT_DIR %s is not a git checkout: cloning", dir);
		return NULL;
	}
	shallow = gitops_is_shallow(ci);
	fgit_free(ci);
	if (shallow) {
		log_info("the CI checkout is shallow (GIT_DEPTH): libgit2 cannot deepen it, cloning instead "
		         "(set GIT_DEPTH: 0 on the job to reuse it)");
		return NULL;
	}
	return dir;
}

int impl_checkout_branch(impl_checkout *co, impl_run *r, const char *branch, int from_remote_branch)
{
	gitops_remote rem = impl_remote(r);
	const char *ci = reusable_ci_checkout(r);
	const char *fetch[3] = {r->default_branch, from_remote_branch ? branch : NULL, NULL};
	char start[1024];
	size_t missing = 0;
	int error;

	memset(co, 0, sizeof(*co));
	if ((size_t)snprintf(co->dir, sizeof(co->dir), "%s/factory-implement-XXXXXX", r->workdir) >= sizeof(co->dir) ||
	    !mkdtemp(co->dir)) {
		error = ferror_set(FACTORY_ERR, "cannot make a work directory in %s: %s", r->workdir, strerror(errno));
		co->dir[0] = '\0';
		return error;
	}
	/* The agent's commands run as another user when the job is root: they must reach the tree. */
	chmod(co->dir, 0755);
	snprintf(co->root, sizeof(co->root), "%s/%s", co->dir, "repo");
	if (ci) {
		gitops_remote local = {ci, NULL, NULL};
		log_info("reusing the objects of the CI checkout %s", ci);
		if ((error = gitops_clone(&co->repo, &local, co->root, NULL)) < 0 ||
		    (error = gitops_set_origin(co->repo, r->clone_url)) < 0 ||
		    (error = gitops_fetch(co->repo, &rem, fetch, &missing)) < 0)
			goto fail;
	} else {
		if ((error = gitops_clone(&co->repo, &rem, co->root, r->default_branch)) < 0)
			goto fail;
	}
	if (from_remote_branch)
		snprintf(start, sizeof(start), "refs/remotes/origin/%s", branch);
	else
		snprintf(start, sizeof(start), "refs/remotes/origin/%s", r->default_branch);
	if ((error = gitops_branch_checkout(co->repo, branch, start)) < 0)
		goto fail;
	/* The tree is handed to the sandbox's user and back (impl_reclaim_tree):
	 * that changes every file's ctime, never its content. */
	if ((error = gitops_config_set(co->repo, "core.trustctime", "false")) < 0)
		goto fail;
	return 0;
fail:
	impl_checkout_release(co, r);
	return error;
}
