/*
 * git.h - the libgit2 calls the Factory needs, behind one small API.
 *
 * Names start with fgit_ (libgit2 owns git_). A repository handle is an
 * fgit_repo; the raw git_repository is reachable through fgit_raw() for a
 * module that needs more (the implement job adds clone, branch, commit and
 * push here, next to these). libgit2 is initialised on first use.
 *
 * Errors carry libgit2's own message after ours, e.g.
 *   "cannot open repository /x: could not find repository at '/x'"
 * Credentials never go into .git/config or a remote URL (libgit2.md trap 8):
 * fgit_scrub_credentials() removes any that a checkout left there.
 */
#ifndef FACTORY_GIT_H
#define FACTORY_GIT_H

#include <stddef.h>

#include "buf.h"

typedef struct fgit_repo fgit_repo;
struct git_repository;

/* Open the repository whose work tree root is `path` (no search upwards;
 * bare repositories are refused). Returns 0, FACTORY_ENOTFOUND (not a
 * repository), FACTORY_EINVALID (bare) or FACTORY_ERR. */
int fgit_open(fgit_repo **out, const char *path);
void fgit_free(fgit_repo *r);

/* The work tree root, with a trailing '/' (libgit2's form); owned by r. */
const char *fgit_workdir(const fgit_repo *r);
/* The libgit2 handle, for code that extends this module; owned by r. */
struct git_repository *fgit_raw(fgit_repo *r);

/* Sorted, unique list of paths relative to the work tree. */
typedef struct {
	char **paths;
	size_t count;
} fgit_filelist;

void fgit_filelist_free(fgit_filelist *l);

/*
 * Every file in the work tree that git would see: tracked files that exist
 * on disk, plus untracked files that are not ignored (inside untracked
 * directories too). Nothing under .git/. At most `max` paths (0: no limit);
 * more is not an error: *truncated (may be NULL) is set to 1.
 */
int fgit_list_files(fgit_filelist *out, fgit_repo *r, size_t max, int *truncated);

/*
 * The changes in the work tree against HEAD (an empty tree when HEAD is
 * unborn) as a unified patch, untracked files included as new files,
 * appended to `out`. A patch larger than out's cap stops there with a last
 * line "[diff cut: more than N bytes]" and *truncated (may be NULL) set;
 * that is not an error. Returns 0 or FACTORY_ERR/FACTORY_ENOMEM.
 */
int fgit_diff_workdir(fbuf *out, fgit_repo *r, int *truncated);

/* Number of files changed by fgit_diff_workdir's diff (0 = clean tree). */
int fgit_changed_count(size_t *out, fgit_repo *r);

/*
 * Remove credentials left in the repository's own config (.git/config):
 * user:password@ or user@ (token) in remote.*.url and remote.*.pushurl
 * become the bare URL, and every *.extraheader entry (a GitLab runner's
 * "AUTHORIZATION: basic ..." among them) is deleted. *changed (may be NULL)
 * gets the number of entries fixed. Returns 0 or FACTORY_ERR.
 */
int fgit_scrub_credentials(fgit_repo *r, int *changed);

/* Strip userinfo from a URL into `out` ("https://t:x@h/p" -> "https://h/p");
 * 1 when something was removed, 0 when the URL had none. */
int fgit_url_strip_userinfo(fbuf *out, const char *url);

#endif
