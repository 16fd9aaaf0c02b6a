/* git.c - the libgit2 calls the Factory needs. */
#include "git.h"

#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "error.h"

struct fgit_repo {
	git_repository *repo;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_libgit2(void)
{
	git_libgit2_init();
}

/* Our message, then libgit2's own. */
static int git_fail(int code, const char *what)
{
	const git_error *e = git_error_last();

	return ferror_set(code, "%s: %s", what, e && e->message ? e->message : "unknown libgit2 error");
}

int fgit_open(fgit_repo **out, const char *path)
{
	fgit_repo *r;
	int rc;

	*out = NULL;
	pthread_once(&init_once, init_libgit2);
	if (!(r = calloc(1, sizeof(*r))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	rc = git_repository_open_ext(&r->repo, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	if (rc < 0) {
		int code = rc == GIT_ENOTFOUND ? FACTORY_ENOTFOUND : FACTORY_ERR;
		char what[512];
		snprintf(what, sizeof(what), "cannot open repository %.400s", path);
		free(r);
		return git_fail(code, what);
	}
	if (git_repository_is_bare(r->repo)) {
		fgit_free(r);
		return ferror_set(FACTORY_EINVALID, "repository %.400s is bare: a work tree is needed", path);
	}
	*out = r;
	return 0;
}

void fgit_free(fgit_repo *r)
{
	if (!r)
		return;
	git_repository_free(r->repo);
	free(r);
}

const char *fgit_workdir(const fgit_repo *r)
{
	return git_repository_workdir(r->repo);
}

git_repository *fgit_raw(fgit_repo *r)
{
	return r->repo;
}

void fgit_filelist_free(fgit_filelist *l)
{
	size_t i;

	if (!l)
		return;
	for (i = 0; i < l->count; i++)
		free(l->paths[i]);
	free(l->paths);
	l->paths = NULL;
	l->count = 0;
}

typedef struct {
	char **v;
	size_t n, alloc;
} strvec;

static int strvec_add(strvec *s, const char *p)
{
	if (s->n == s->alloc) {
		size_t na = s->alloc ? s->alloc * 2 : 256;
		char **nv = realloc(s->v, na * sizeof(*nv));
		if (!nv)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		s->v = nv;
		s->alloc = na;
	}
	if (!(s->v[s->n] = strdup(p)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	s->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int fgit_list_files(fgit_filelist *out, fgit_repo *r, size_t max, int *truncated)
{
	git_index *index = NULL;
	git_status_list *status = NULL;
	git_status_options so;
	strvec all = {0};
	const char *wd = git_repository_workdir(r->repo);
	char path[4096];
	struct stat st;
	size_t i, n, k;
	int error = -1;

	out->paths = NULL;
	out->count = 0;
	if (truncated)
		*truncated = 0;
	if (git_repository_index(&index, r->repo) < 0 || git_index_read(index, 0) < 0) {
		error = git_fail(FACTORY_ERR, "cannot read the index");
		goto cleanup;
	}
	n = git_index_entrycount(index);
	for (i = 0; i < n; i++) {
		const git_index_entry *e = git_index_get_byindex(index, i);
		if (!e || git_index_entry_stage(e) > 1)
			continue;
		snprintf(path, sizeof(path), "%s%s", wd, e->path);
		if (lstat(path, &st) < 0)
			continue; /* deleted in the work tree */
		if ((error = strvec_add(&all, e->path)) < 0)
			goto cleanup;
	}
	git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);
	so.show = GIT_STATUS_SHOW_WORKDIR_ONLY;
	so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS |
	           GIT_STATUS_OPT_EXCLUDE_SUBMODULES;
	if (git_status_list_new(&status, r->repo, &so) < 0) {
		error = git_fail(FACTORY_ERR, "cannot list untracked files");
		goto cleanup;
	}
	n = git_status_list_entrycount(status);
	for (i = 0; i < n; i++) {
		const git_status_entry *e = git_status_byindex(status, i);
		if (!e || !(e->status & GIT_STATUS_WT_NEW) || !e->index_to_workdir)
			continue;
		if ((error = strvec_add(&all, e->index_to_workdir->new_file.path)) < 0)
			goto cleanup;
	}
	if (all.n)
		qsort(all.v, all.n, sizeof(*all.v), cmp_str);
	/* Unique, and capped. */
	for (i = 0, k = 0; i < all.n; i++) {
		if (k && !strcmp(all.v[k - 1], all.v[i])) {
			free(all.v[i]);
			continue;
		}
		if (max && k >= max) {
			if (truncated)
				*truncated = 1;
			free(all.v[i]);
			continue;
		}
		all.v[k++] = all.v[i];
	}
	out->paths = all.v;
	out->count = k;
	all.v = NULL;
	all.n = 0;
	error = 0;
cleanup:
	for (i = 0; i < all.n; i++)
		free(all.v[i]);
	free(all.v);
	git_status_list_free(status);
	git_index_free(index);
	return error;
}

static int head_tree(git_tree **out, git_repository *repo)
{
	git_object *obj = NULL;
	int rc;

	*out = NULL;
	rc = git_revparse_single(&obj, repo, "HEAD^{tree}");
	if (rc == GIT_ENOTFOUND || rc == GIT_EUNBORNBRANCH) {
		git_error_clear();
		return 0; /* unborn: diff against the empty tree */
	}
	if (rc < 0)
		return git_fail(FACTORY_ERR, "cannot read HEAD");
	*out = (git_tree *)obj;
	return 0;
}

static int make_diff(git_diff **out, fgit_repo *r)
{
	git_diff_options opts;
	git_tree *tree = NULL;
	int error;

	*out = NULL;
	if ((error = head_tree(&tree, r->repo)) < 0)
		return error;
	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	opts.flags = GIT_DIFF_INCLUDE_UNTRACKED | GIT_DIFF_RECURSE_UNTRACKED_DIRS | GIT_DIFF_SHOW_UNTRACKED_CONTENT |
	             GIT_DIFF_IGNORE_SUBMODULES;
	/* A file a command blew up to gigabytes is shown as binary, not loaded. */
	opts.max_size = (git_off_t)16 << 20;
	if (git_diff_tree_to_workdir_with_index(out, r->repo, tree, &opts) < 0)
		error = git_fail(FACTORY_ERR, "cannot diff the work tree against HEAD");
	git_tree_free(tree);
	return error;
}

typedef struct {
	fbuf *out;
	int cut;
	int error;
} print_ctx;

static int print_line(const git_diff_delta *delta, const git_diff_hunk *hunk, const git_diff_line *line, void *payload)
{
	print_ctx *p = payload;
	int error = 0;

	(void)delta;
	(void)hunk;
	if (line->origin == GIT_DIFF_LINE_CONTEXT || line->origin == GIT_DIFF_LINE_ADDITION ||
	    line->origin == GIT_DIFF_LINE_DELETION)
		error = fbuf_putc(p->out, line->origin);
	if (!error)
		error = fbuf_put(p->out, line->content, line->content_len);
	if (error == FACTORY_ETOOBIG) {
		p->cut = 1;
		return 1;
	}
	if (error < 0) {
		p->error = error;
		return 1;
	}
	return 0;
}

int fgit_diff_workdir(fbuf *out, fgit_repo *r, int *truncated)
{
	git_diff *diff = NULL;
	print_ctx p = {out, 0, 0};
	int rc, error;

	if (truncated)
		*truncated = 0;
	if ((error = make_diff(&diff, r)) < 0)
		return error;
	rc = git_diff_print(diff, GIT_DIFF_FORMAT_PATCH, print_line, &p);
	if (p.error) {
		error = p.error;
	} else if (p.cut) {
		char note[96];
		size_t n = (size_t)snprintf(note, sizeof(note), "\n[diff cut: more than %zu bytes]\n", out->max);
		/* Make room for the note at the end of what fitted. */
		if (out->len + n > out->max)
			out->len = out->max > n ? out->max - n : 0;
		if (out->ptr)
			out->ptr[out->len] = '\0';
		fbuf_put(out, note, n);
		if (truncated)
			*truncated = 1;
		error = 0;
	} else if (rc < 0) {
		error = git_fail(FACTORY_ERR, "cannot print the diff");
	} else {
		error = 0;
		if (!out->ptr)
			error = fbuf_puts(out, "");
	}
	git_diff_free(diff);
	return error;
}

int fgit_changed_count(size_t *out, fgit_repo *r)
{
	git_diff *diff = NULL;
	int error;

	*out = 0;
	if ((error = make_diff(&diff, r)) < 0)
		return error;
	*out = git_diff_num_deltas(diff);
	git_diff_free(diff);
	return 0;
}

int fgit_url_strip_userinfo(fbuf *out, const char *url)
{
	const char *scheme = strstr(url, "://"), *host, *at, *slash;

	fbuf_reset(out);
	if (!scheme) {
		fbuf_puts(out, url);
		return 0;
	}
	host = scheme + 3;
	slash = strchr(host, '/');
	at = memchr(host, '@', slash ? (size_t)(slash - host) : strlen(host));
	if (!at) {
		fbuf_puts(out, url);
		return 0;
	}
	/* ssh://git@host/ is a user name, not a credential: keep it. */
	if (!strncmp(url, "ssh://", 6) && !memchr(host, ':', (size_t)(at - host))) {
		fbuf_puts(out, url);
		return 0;
	}
	fbuf_put(out, url, (size_t)(host - url));
	fbuf_puts(out, at + 1);
	return 1;
}

typedef struct {
	char *name;
	char *value; /* new value, or NULL to delete */
} config_fix;

int fgit_scrub_credentials(fgit_repo *r, int *changed)
{
	git_config *cfg = NULL, *local = NULL;
	git_config_iterator *it = NULL;
	git_config_entry *e;
	config_fix fixes[64];
	size_t nfix = 0, i;
	fbuf url;
	int rc, error = -1;

	if (changed)
		*changed = 0;
	fbuf_init(&url, 65536);
	if (git_repository_config(&cfg, r->repo) < 0 ||
	    git_config_open_level(&local, cfg, GIT_CONFIG_LEVEL_LOCAL) < 0) {
		error = git_fail(FACTORY_ERR, "cannot open the repository's config");
		goto cleanup;
	}
	if (git_config_iterator_new(&it, local) < 0) {
		error = git_fail(FACTORY_ERR, "cannot read the repository's config");
		goto cleanup;
	}
	while (git_config_next(&e, it) == 0) {
		size_t nl = strlen(e->name);
		int is_url = !strncmp(e->name, "remote.", 7) && ((nl > 4 && !strcmp(e->name + nl - 4, ".url")) ||
		                                                 (nl > 8 && !strcmp(e->name + nl - 8, ".pushurl")));
		int is_header = nl > 12 && !strcasecmp(e->name + nl - 12, ".extraheader");

		if (nfix >= sizeof(fixes) / sizeof(fixes[0]))
			break;
		if (is_url && e->value && fgit_url_strip_userinfo(&url, e->value) == 1) {
			fixes[nfix].name = strdup(e->name);
			fixes[nfix].value = strdup(url.ptr);
			if (!fixes[nfix].name || !fixes[nfix].value) {
				free(fixes[nfix].name);
				free(fixes[nfix].value);
				error = ferror_set(FACTORY_ENOMEM, "out of memory");
				goto cleanup;
			}
			nfix++;
		} else if (is_header) {
			if (!(fixes[nfix].name = strdup(e->name))) {
				error = ferror_set(FACTORY_ENOMEM, "out of memory");
				goto cleanup;
			}
			fixes[nfix].value = NULL;
			nfix++;
		}
	}
	git_config_iterator_free(it);
	it = NULL;
	for (i = 0; i < nfix; i++) {
		if (fixes[i].value)
			rc = git_config_set_string(local, fixes[i].name, fixes[i].value);
		else
			rc = git_config_delete_multivar(local, fixes[i].name, ".*");
		if (rc < 0) {
			char what[300];
			snprintf(what, sizeof(what), "cannot remove the credential in %.200s from .git/config",
			         fixes[i].name);
			error = git_fail(FACTORY_ERR, what);
			goto cleanup;
		}
	}
	if (changed)
		*changed = (int)nfix;
	error = 0;
cleanup:
	for (i = 0; i < nfix; i++) {
		if (fixes[i].value) {
			explicit_bzero(fixes[i].value, strlen(fixes[i].value));
			free(fixes[i].value);
		}
		free(fixes[i].name);
	}
	if (url.ptr)
		explicit_bzero(url.ptr, url.len);
	fbuf_release(&url);
	git_config_iterator_free(it);
	git_config_free(local);
	git_config_free(cfg);
	return error;
}
