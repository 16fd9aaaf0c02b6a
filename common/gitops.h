/*
 * gitops.h - the git work of the implement job, over libgit2: clone over
 * HTTPS with a token, branches, commits, pushes, fetches and rebases.
 * (git.h reads work trees for the agent; this module writes history. It
 * uses git.h's handle, fgit_repo, and reaches libgit2 through fgit_raw.)
 *
 * Credentials. A gitops_remote names a URL without userinfo and the token
 * to send there. The token goes only through libgit2's credential callback,
 * as HTTP basic auth (user "oauth2" unless told otherwise), only to the
 * origin (scheme, host, port) of that URL, and only once per operation: a
 * second request for credentials means the server refused the token, and
 * the operation stops with FACTORY_EAUTH instead of asking again forever
 * (libgit2.md trap 1). The token never goes into .git/config, a remote URL,
 * a reflog or a message (trap 8). Redirects are not followed, so it cannot
 * be led to another host either. TLS certificates are verified; the CA
 * bundle is $FACTORY_CA_FILE or $CI_SERVER_TLS_CA_FILE when set.
 *
 * Pushes register push_update_reference: a ref the server refused (a
 * protected branch, a hook) is an error even though libgit2's push call
 * returns 0 (trap 2). A push that is not a fast-forward is FACTORY_ECONFLICT
 * whichever way it is reported. Fetch-then-rebase stands in for pull
 * (trap 6).
 *
 * Shallow repositories (GitLab CI checkouts with GIT_DEPTH) cannot be
 * deepened by libgit2 1.5 (trap 7): gitops_is_shallow() tells, and the job
 * clones afresh instead.
 *
 * Errors: FACTORY_EAUTH (token refused or missing), FACTORY_ENOTFOUND (no
 * such ref or repository), FACTORY_ECONFLICT (non-fast-forward, a rebase
 * that conflicts, a branch that moved under a lease), FACTORY_EUPSTREAM (the
 * server could not be reached or answered an error), FACTORY_EINVALID (bad
 * arguments), FACTORY_ERR (anything else), each with a message that says
 * what failed first and then libgit2's own words.
 */
#ifndef FACTORY_GITOPS_H
#define FACTORY_GITOPS_H

#include <stddef.h>

#include "buf.h"
#include "git.h"

/* A commit id as 40 hex digits and a NUL. */
#define GITOPS_SHA_LEN 41

typedef struct {
	const char *url;      /* http(s)://host/path.git, or a local path / file:// URL (tests); no userinfo */
	const char *username; /* basic auth user; NULL: "oauth2" */
	const char *token;    /* may be NULL: no credentials are offered */
} gitops_remote;

typedef struct {
	const char *name;
	const char *email;
} gitops_identity;

/*
 * Clone `rem` into `dir` (which must not exist or be empty) and check out
 * `branch` (NULL: the remote's default). The remote is called "origin" and
 * its URL in .git/config is rem->url, which holds no credentials; every
 * branch of the remote is fetched as refs/remotes/origin/<name>. A URL with
 * userinfo is refused (FACTORY_EINVALID): the token has its own field.
 * *out is the caller's (fgit_free).
 */
int gitops_clone(fgit_repo **out, const gitops_remote *rem, const char *dir, const char *branch);

/* Point remote "origin" at `url` (refused when it holds userinfo), making
 * it (with the usual fetch refspec) when the repository has none. */
int gitops_set_origin(fgit_repo *r, const char *url);

/* Set `key` to `value` in the repository's own config (.git/config). */
int gitops_config_set(fgit_repo *r, const char *key, const char *value);

/* 1 when the repository is shallow (a CI checkout with GIT_DEPTH), else 0. */
int gitops_is_shallow(fgit_repo *r);

/*
 * Fetch `branches` (NULL-terminated branch names, e.g. {"main", NULL}) from
 * `rem` into refs/remotes/origin/<name>, forced (a branch that was rewritten
 * on the server is taken as it is). A branch the server does not have is
 * not an error: its remote-tracking ref is removed, and *missing (may be
 * NULL) counts them. Tags are not fetched.
 */
int gitops_fetch(fgit_repo *r, const gitops_remote *rem, const char *const *branches, size_t *missing);

/*
 * Make local branch `name` point at the commit `start` names (a ref or a
 * revision: "refs/remotes/origin/main", "origin/main", a sha), replacing it
 * if it exists, then check it out (forced: the work tree is made to match,
 * files that are not tracked there are left alone) and make HEAD point to it.
 */
int gitops_branch_checkout(fgit_repo *r, const char *name, const char *start);

/* The commit `rev` names, as hex into `out`. FACTORY_ENOTFOUND if none. */
int gitops_resolve(char out[GITOPS_SHA_LEN], fgit_repo *r, const char *rev);

/* The message of the commit `rev` names, appended to `out`. */
int gitops_commit_message(fbuf *out, fgit_repo *r, const char *rev);

/* How many commits `a` has that `b` has not (*ahead) and the reverse (*behind). */
int gitops_ahead_behind(size_t *ahead, size_t *behind, fgit_repo *r, const char *a, const char *b);

/* One file a commit changed: its path and the lines added and removed
 * (binary files count 0/0). */
typedef struct {
	char *path;
	char status; /* 'A'dded, 'M'odified, 'D'eleted, 'R'enamed, 'T'ype change */
	size_t added, removed;
} gitops_file;

typedef struct {
	gitops_file *files;
	size_t count;
	char sha[GITOPS_SHA_LEN]; /* the new commit, "" when nothing was committed */
} gitops_commit_result;

void gitops_commit_result_release(gitops_commit_result *c);

/*
 * Commit everything in the work tree, as `git add -A && git commit` would:
 * new files that are not ignored, changes, deletions. `message` is used as
 * given (a final newline is added when missing). The commit goes on the
 * branch HEAD points to, with HEAD's commit as its parent (none when HEAD is
 * unborn). When the tree is the same as HEAD's, nothing is committed: 0 is
 * returned with out->sha "" and out->count 0. `committer` NULL means the
 * author. Signatures carry the current time.
 */
int gitops_commit_all(gitops_commit_result *out, fgit_repo *r, const gitops_identity *author,
                      const gitops_identity *committer, const char *message);

/*
 * Push local ref `local` (a branch name or "refs/heads/x") to branch
 * `remote_branch` on `rem`. With `force`, a non-fast-forward update is
 * allowed; `expect` (may be NULL or "") then works as a lease: the push is
 * refused with FACTORY_ECONFLICT unless the server's branch is at that
 * commit ("0000...": it must not exist) when the push is negotiated.
 * A refusal by the server (protected branch, hook, non-fast-forward) is an
 * error naming the ref and the server's reason; non-fast-forward is
 * FACTORY_ECONFLICT, any other refusal FACTORY_EAUTH for "protected" or
 * "not allowed" reasons and FACTORY_ERR otherwise.
 */
int gitops_push(fgit_repo *r, const gitops_remote *rem, const char *local, const char *remote_branch, int force,
                const char *expect);

/*
 * Rebase the branch HEAD points to onto `upstream` (a ref or revision),
 * replaying its commits with `committer` (authors are kept). Nothing is done
 * when the branch already contains `upstream`. Commits whose change is
 * already upstream are dropped. A conflict aborts the rebase, leaves the
 * branch and work tree as they were, and returns FACTORY_ECONFLICT naming the
 * first conflicting path. *replayed (may be NULL) gets the number of commits
 * written.
 */
int gitops_rebase(size_t *replayed, fgit_repo *r, const char *upstream, const gitops_identity *committer);

/*
 * Push local branch `branch` to `remote_branch` on `rem`; when the server
 * refuses it as a non-fast-forward (someone pushed meanwhile), fetch
 * `remote_branch`, rebase the local branch onto it and try again, up to
 * `max_tries` pushes in all (at least 1). *rebases (may be NULL) gets how
 * many rebases it took. A rebase conflict ends it with FACTORY_ECONFLICT.
 */
int gitops_push_rebasing(size_t *rebases, fgit_repo *r, const gitops_remote *rem, const char *branch,
                         const char *remote_branch, const gitops_identity *committer, int max_tries);

/* Operations done, for reports and benchmarks. */
typedef struct {
	long clones, fetches, pushes, rebases, commits;
	long credential_requests; /* times the credential callback ran */
} gitops_stats;

/* Counters since the process started (all threads). */
void gitops_get_stats(gitops_stats *out);

#endif
