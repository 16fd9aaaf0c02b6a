/* gitops.c - clone, branch, commit, push, fetch and rebase over libgit2. */
#define _GNU_SOURCE
#include "gitops.h"

#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "log.h"

#define REF_MAX 1024

static gitops_stats stats;

#define COUNT(field) __atomic_fetch_add(&stats.field, 1, __ATOMIC_RELAXED)

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* libgit2 once per process, and the CA bundle the rest of the Factory uses. */
static void init_libgit2(void)
{
	const char *ca = getenv("FACTORY_CA_FILE");

	git_libgit2_init();
	if (!ca || !*ca)
		ca = getenv("CI_SERVER_TLS_CA_FILE");
	if (ca && *ca && git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, ca, NULL) < 0)
		log_warn("cannot use the CA bundle %s for git: %s", ca,
		         git_error_last() ? git_error_last()->message : "unknown libgit2 error");
}

static void init(void)
{
	pthread_once(&init_once, init_libgit2);
}

void gitops_get_stats(gitops_stats *out)
{
	out->clones = __atomic_load_n(&stats.clones, __ATOMIC_RELAXED);
	out->fetches = __atomic_load_n(&stats.fetches, __ATOMIC_RELAXED);
	out->pushes = __atomic_load_n(&stats.pushes, __ATOMIC_RELAXED);
	out->rebases = __atomic_load_n(&stats.rebases, __ATOMIC_RELAXED);
	out->commits = __atomic_load_n(&stats.commits, __ATOMIC_RELAXED);
	out->credential_requests = __atomic_load_n(&stats.credential_requests, __ATOMIC_RELAXED);
}

/* libgit2's last message, never NULL. */
static const char *git_msg(void)
{
	const git_error *e = git_error_last();

	return e && e->message ? e->message : "unknown libgit2 error";
}

/* What one network operation learned through its callbacks. */
typedef struct {
	const gitops_remote *rem;
	int cred_calls;
	int auth_refused; /* credentials were asked for again: the token was refused */
	int no_token;     /* credentials were asked for and there is no token */
	int wrong_origin; /* credentials were asked for by another origin */
	int bad_type;     /* the server wants a kind of credential we do not have */
	char refused_ref[256];
	char refused_why[256];
	char remote_says[512]; /* the server's own words (sideband), last lines */
	const char *expect;    /* push lease: the server's branch must be here */
	int lease_broken;
	char lease_actual[GITOPS_SHA_LEN];
} op_ctx;

static int cred_cb(git_credential **out, const char *url, const char *user_from_url, unsigned int allowed,
                   void *payload)
{
	op_ctx *c = payload;

	(void)user_from_url;
	COUNT(credential_requests);
	if (!c->rem->token || !*c->rem->token) {
		c->no_token = 1;
		git_error_set_str(GIT_ERROR_NET, "no token to offer");
		return GIT_EUSER;
	}
	if (c->cred_calls++ > 0) {
		/* libgit2 asks again after every 401: once refused, always refused. */
		c->auth_refused = 1;
		git_error_set_str(GIT_ERROR_NET, "the token was refused");
		return GIT_EUSER;
	}
	if (!http_same_origin(url, c->rem->url)) {
		c->wrong_origin = 1;
		git_error_set_str(GIT_ERROR_NET, "credentials asked for by another origin");
		return GIT_EUSER;
	}
	if (!(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT)) {
		c->bad_type = 1;
		git_error_set_str(GIT_ERROR_NET, "the server wants credentials other than a user and token");
		return GIT_EUSER;
	}
	return git_credential_userpass_plaintext_new(out, c->rem->username ? c->rem->username : "oauth2",
	                                             c->rem->token);
}

/* Messages from the server ("remote: ..."): keep the last ones for errors. */
static int sideband_cb(const char *str, int len, void *payload)
{
	op_ctx *c = payload;
	size_t have = strlen(c->remote_says), n, i;

	if (len <= 0)
		return 0;
	n = (size_t)len;
	if (n >= sizeof(c->remote_says))
		n = sizeof(c->remote_says) - 1;
	if (have + n >= sizeof(c->remote_says)) {
		size_t drop = have + n - (sizeof(c->remote_says) - 1);
		memmove(c->remote_says, c->remote_says + drop, have - drop + 1);
		have -= drop;
	}
	for (i = 0; i < n; i++) {
		char ch = str[len - (int)n + (int)i];
		c->remote_says[have + i] = (ch == '\r' || ch == '\n' || (unsigned char)ch < 0x20) ? ' ' : ch;
	}
	c->remote_says[have + n] = '\0';
	return 0;
}

static int push_ref_cb(const char *refname, const char *status, void *payload)
{
	op_ctx *c = payload;

	/* A status message means the server refused this ref (libgit2.md trap 2). */
	if (status && !c->refused_ref[0]) {
		snprintf(c->refused_ref, sizeof(c->refused_ref), "%s", refname ? refname : "?");
		snprintf(c->refused_why, sizeof(c->refused_why), "%s", status);
	}
	return 0;
}

static int negotiation_cb(const git_push_update **updates, size_t len, void *payload)
{
	op_ctx *c = payload;
	git_oid want;
	size_t i;

	if (!c->expect || !*c->expect)
		return 0;
	if (git_oid_fromstr(&want, c->expect) < 0)
		return GIT_EUSER;
	for (i = 0; i < len; i++) {
		if (!git_oid_equal(&updates[i]->src, &want)) {
			c->lease_broken = 1;
			git_oid_tostr(c->lease_actual, sizeof(c->lease_actual), &updates[i]->src);
			git_error_set_str(GIT_ERROR_REFERENCE, "the branch moved on the server");
			return GIT_EUSER;
		}
	}
	return 0;
}

static void callbacks_init(git_remote_callbacks *cb, op_ctx *c)
{
	cb->credentials = cred_cb;
	cb->sideband_progress = sideband_cb;
	cb->push_update_reference = push_ref_cb;
	cb->push_negotiation = negotiation_cb;
	cb->payload = c;
}

/* A failed network operation as one of our errors, naming the URL (which
 * holds no credentials) and what the callbacks learned. */
static int op_fail(const op_ctx *c, int rc, const char *what)
{
	const git_error *e = git_error_last();
	const char *msg = git_msg();
	const char *url = c->rem->url;

	if (c->auth_refused)
		return ferror_set(FACTORY_EAUTH, "%s: %s refused the token (a token with write_repository is needed)",
		                  what, url);
	if (c->no_token)
		return ferror_set(FACTORY_EAUTH, "%s: %s asks for credentials and there is no token", what, url);
	if (c->wrong_origin)
		return ferror_set(FACTORY_EAUTH, "%s: credentials were asked for by another origin than %s; not sent",
		                  what, url);
	if (c->bad_type)
		return ferror_set(FACTORY_EAUTH, "%s: %s wants credentials other than a user and token", what, url);
	if (c->lease_broken)
		return ferror_set(FACTORY_ECONFLICT,
		                  "%s: the branch moved on the server (now at %.12s, expected %.12s)", what,
		                  c->lease_actual, c->expect ? c->expect : "?");
	if (rc == GIT_ENONFASTFORWARD)
		return ferror_set(FACTORY_ECONFLICT, "%s: not a fast-forward: %s", what, msg);
	if (rc == GIT_ENOTFOUND)
		return ferror_set(FACTORY_ENOTFOUND, "%s: %s", what, msg);
	if (strstr(msg, "401") || strstr(msg, "403") || strstr(msg, "authentication"))
		return ferror_set(FACTORY_EAUTH, "%s: %s: %s", what, url, msg);
	if (e && (e->klass == GIT_ERROR_NET || e->klass == GIT_ERROR_HTTP || e->klass == GIT_ERROR_SSL ||
	          e->klass == GIT_ERROR_OS))
		return ferror_set(FACTORY_EUPSTREAM, "%s: %s: %s", what, url, msg);
	return ferror_set(FACTORY_ERR, "%s: %s: %s", what, url, msg);
}

static int check_remote(const gitops_remote *rem)
{
	fbuf b;
	int had;

	if (!rem || !rem->url || !*rem->url)
		return ferror_set(FACTORY_EINVALID, "no remote URL");
	fbuf_init(&b, 8192);
	had = fgit_url_strip_userinfo(&b, rem->url);
	fbuf_release(&b);
	if (had == 1)
		return ferror_set(FACTORY_EINVALID, "the remote URL holds credentials: pass the token on its own");
	return 0;
}

static void op_init(op_ctx *c, const gitops_remote *rem)
{
	memset(c, 0, sizeof(*c));
	c->rem = rem;
}

/*
 * A remote for `url` (name NULL: anonymous, in memory only), without
 * url.*.insteadOf rewriting: the URL we were given is the URL used, and
 * libgit2 1.5's pattern matching over the config, which leaks its match data
 * on every miss, is not run.
 */
static int remote_new(git_remote **out, git_repository *repo, const char *name, const char *url)
{
	git_remote_create_options o;
	char spec[256];

	git_remote_create_options_init(&o, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	o.repository = repo;
	o.name = name;
	o.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF;
	if (name) {
		snprintf(spec, sizeof(spec), "+refs/heads/*:refs/remotes/%s/*", name);
		o.fetchspec = spec;
	}
	return git_remote_create_with_opts(out, url, &o);
}

static int clone_remote_cb(git_remote **out, git_repository *repo, const char *name, const char *url, void *payload)
{
	(void)payload;
	return remote_new(out, repo, name, url);
}

/* A branch name as a full ref: "x" -> "refs/heads/x"; "refs/..." stays. */
static int full_ref(char *out, size_t len, const char *name)
{
	int n;

	if (!name || !*name)
		return ferror_set(FACTORY_EINVALID, "empty branch name");
	if (!strncmp(name, "refs/", 5))
		n = snprintf(out, len, "%s", name);
	else
		n = snprintf(out, len, "refs/heads/%s", name);
	if (n < 0 || (size_t)n >= len)
		return ferror_set(FACTORY_EINVALID, "branch name too long: %.80s...", name);
	return 0;
}

/* The short branch name of a ref ("refs/heads/x" -> "x"). */
static const char *short_branch(const char *name)
{
	return !strncmp(name, "refs/heads/", 11) ? name + 11 : name;
}

int gitops_clone(fgit_repo **out, const gitops_remote *rem, const char *dir, const char *branch)
{
	git_clone_options co;
	git_repository *repo = NULL;
	op_ctx c;
	char what[512];
	int rc, error;

	*out = NULL;
	init();
	if ((error = check_remote(rem)) < 0)
		return error;
	op_init(&c, rem);
	git_clone_options_init(&co, GIT_CLONE_OPTIONS_VERSION);
	callbacks_init(&co.fetch_opts.callbacks, &c);
	co.fetch_opts.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
	co.fetch_opts.proxy_opts.type = GIT_PROXY_AUTO;
	co.fetch_opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	co.checkout_branch = branch;
	co.remote_cb = clone_remote_cb;
	snprintf(what, sizeof(what), "cannot clone into %.300s", dir);
	rc = git_clone(&repo, rem->url, dir, &co);
	COUNT(clones);
	if (rc < 0)
		return op_fail(&c, rc, what);
	git_repository_free(repo);
	return fgit_open(out, dir);
}

int gitops_set_origin(fgit_repo *r, const char *url)
{
	gitops_remote rem = {url, NULL, NULL};
	git_config *cfg = NULL;
	git_config_entry *e = NULL;
	int error;

	init();
	if ((error = check_remote(&rem)) < 0)
		return error;
	/* Config keys only: looking the remote up would run libgit2's insteadOf
	 * matching (see remote_new). */
	if (git_remote_set_url(fgit_raw(r), "origin", url) < 0)
		return ferror_set(FACTORY_ERR, "cannot set the origin URL: %s", git_msg());
	if (git_repository_config(&cfg, fgit_raw(r)) < 0)
		return ferror_set(FACTORY_ERR, "cannot read the repository's config: %s", git_msg());
	if (git_config_get_entry(&e, cfg, "remote.origin.fetch") < 0 &&
	    git_remote_add_fetch(fgit_raw(r), "origin", "+refs/heads/*:refs/remotes/origin/*") < 0)
		error = ferror_set(FACTORY_ERR, "cannot add the origin fetch refspec: %s", git_msg());
	git_config_entry_free(e);
	git_config_free(cfg);
	return error;
}

int gitops_config_set(fgit_repo *r, const char *key, const char *value)
{
	git_config *cfg = NULL;
	int error = 0;

	init();
	if (git_repository_config(&cfg, fgit_raw(r)) < 0 || git_config_set_string(cfg, key, value) < 0)
		error = ferror_set(FACTORY_ERR, "cannot set %s in the repository's config: %s", key, git_msg());
	git_config_free(cfg);
	return error;
}

int gitops_is_shallow(fgit_repo *r)
{
	init();
	return git_repository_is_shallow(fgit_raw(r)) == 1;
}

int gitops_fetch(fgit_repo *r, const gitops_remote *rem, const char *const *branches, size_t *missing)
{
	git_repository *repo = fgit_raw(r);
	git_remote *remote = NULL;
	git_fetch_options fo;
	git_strarray specs = {NULL, 0};
	const git_remote_head **heads = NULL;
	size_t nheads = 0, n = 0, i, k, miss = 0;
	op_ctx c;
	char ref[REF_MAX];
	int rc, error = -1;

	init();
	if (missing)
		*missing = 0;
	if ((error = check_remote(rem)) < 0)
		return error;
	while (branches && branches[n])
		n++;
	if (!n)
		return 0;
	if (!(specs.strings = calloc(n, sizeof(char *)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < n; i++) {
		const char *b = short_branch(branches[i]);
		if (!*b || strchr(b, ':') || strchr(b, '*')) {
			error = ferror_set(FACTORY_EINVALID, "bad branch name to fetch: %.200s", branches[i]);
			goto cleanup;
		}
		if (asprintf(&specs.strings[i], "+refs/heads/%s:refs/remotes/origin/%s", b, b) < 0) {
			specs.strings[i] = NULL;
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		specs.count = i + 1;
	}
	op_init(&c, rem);
	if (remote_new(&remote, repo, NULL, rem->url) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot fetch from %s: %s", rem->url, git_msg());
		goto cleanup;
	}
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	callbacks_init(&fo.callbacks, &c);
	fo.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
	fo.proxy_opts.type = GIT_PROXY_AUTO;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	fo.update_fetchhead = 0;
	rc = git_remote_fetch(remote, &specs, &fo, "factory: fetch");
	COUNT(fetches);
	if (rc < 0) {
		char what[128];
		snprintf(what, sizeof(what), "cannot fetch %s%s", short_branch(branches[0]), n > 1 ? " and more" : "");
		error = op_fail(&c, rc, what);
		goto cleanup;
	}
	/* The advertisement stays readable after the fetch: which branches were there? */
	if (git_remote_ls(&heads, &nheads, remote) < 0)
		nheads = 0;
	for (i = 0; i < n; i++) {
		const char *b = short_branch(branches[i]);
		int found = 0;
		snprintf(ref, sizeof(ref), "refs/heads/%s", b);
		for (k = 0; k < nheads && !found; k++)
			found = !strcmp(heads[k]->name, ref);
		if (found)
			continue;
		miss++;
		snprintf(ref, sizeof(ref), "refs/remotes/origin/%s", b);
		git_reference_remove(repo, ref);
	}
	if (missing)
		*missing = miss;
	error = 0;
cleanup:
	git_remote_free(remote);
	for (i = 0; i < specs.count; i++)
		free(specs.strings[i]);
	free(specs.strings);
	return error;
}

/* The commit a revision names. */
static int lookup_commit(git_commit **out, git_repository *repo, const char *rev)
{
	git_object *obj = NULL, *peeled = NULL;
	int rc;

	*out = NULL;
	rc = git_revparse_single(&obj, repo, rev);
	if (rc < 0)
		return ferror_set(rc == GIT_ENOTFOUND ? FACTORY_ENOTFOUND : FACTORY_ERR, "no commit %s: %s", rev,
		                  git_msg());
	rc = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);
	git_object_free(obj);
	if (rc < 0)
		return ferror_set(FACTORY_EINVALID, "%s is not a commit: %s", rev, git_msg());
	*out = (git_commit *)peeled;
	return 0;
}

int gitops_resolve(char out[GITOPS_SHA_LEN], fgit_repo *r, const char *rev)
{
	git_commit *c = NULL;
	int error;

	out[0] = '\0';
	init();
	if ((error = lookup_commit(&c, fgit_raw(r), rev)) < 0)
		return error;
	git_oid_tostr(out, GITOPS_SHA_LEN, git_commit_id(c));
	git_commit_free(c);
	return 0;
}

int gitops_commit_message(fbuf *out, fgit_repo *r, const char *rev)
{
	git_commit *c = NULL;
	const char *m;
	int error;

	init();
	if ((error = lookup_commit(&c, fgit_raw(r), rev)) < 0)
		return error;
	m = git_commit_message(c);
	error = fbuf_puts(out, m ? m : "");
	git_commit_free(c);
	return error;
}

int gitops_ahead_behind(size_t *ahead, size_t *behind, fgit_repo *r, const char *a, const char *b)
{
	git_commit *ca = NULL, *cb = NULL;
	int error;

	*ahead = *behind = 0;
	init();
	if ((error = lookup_commit(&ca, fgit_raw(r), a)) < 0 || (error = lookup_commit(&cb, fgit_raw(r), b)) < 0)
		goto cleanup;
	if (git_graph_ahead_behind(ahead, behind, fgit_raw(r), git_commit_id(ca), git_commit_id(cb)) < 0)
		error = ferror_set(FACTORY_ERR, "cannot compare %s with %s: %s", a, b, git_msg());
cleanup:
	git_commit_free(ca);
	git_commit_free(cb);
	return error;
}

int gitops_branch_checkout(fgit_repo *r, const char *name, const char *start)
{
	git_repository *repo = fgit_raw(r);
	git_commit *commit = NULL;
	git_reference *branch = NULL, *head = NULL;
	git_checkout_options co;
	char ref[REF_MAX];
	const char *b = name ? short_branch(name) : NULL;
	int error;

	init();
	if ((error = full_ref(ref, sizeof(ref), name)) < 0)
		return error;
	if (!git_reference_is_valid_name(ref))
		return ferror_set(FACTORY_EINVALID, "bad branch name: %.200s", name);
	if ((error = lookup_commit(&commit, repo, start)) < 0)
		return error;
	/* libgit2 will not move the branch HEAD is on: step off it first. */
	if (git_repository_head(&head, repo) == 0 && git_reference_is_branch(head) &&
	    !strcmp(git_reference_name(head), ref) &&
	    git_repository_set_head_detached(repo, git_reference_target(head)) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot detach HEAD from %s: %s", b, git_msg());
		goto cleanup;
	}
	if (git_branch_create(&branch, repo, b, commit, 1) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot create branch %s at %s: %s", b, start, git_msg());
		goto cleanup;
	}
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	if (git_checkout_tree(repo, (const git_object *)commit, &co) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot check out %s: %s", b, git_msg());
		goto cleanup;
	}
	if (git_repository_set_head(repo, ref) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot point HEAD at %s: %s", b, git_msg());
		goto cleanup;
	}
	error = 0;
cleanup:
	git_reference_free(head);
	git_reference_free(branch);
	git_commit_free(commit);
	return error;
}

void gitops_commit_result_release(gitops_commit_result *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->count; i++)
		free(c->files[i].path);
	free(c->files);
	c->files = NULL;
	c->count = 0;
	c->sha[0] = '\0';
}

static char delta_letter(git_delta_t s)
{
	switch (s) {
	case GIT_DELTA_ADDED:
		return 'A';
	case GIT_DELTA_DELETED:
		return 'D';
	case GIT_DELTA_RENAMED:
		return 'R';
	case GIT_DELTA_TYPECHANGE:
		return 'T';
	default:
		return 'M';
	}
}

/* The files between two trees, with line counts, into out->files. */
static int list_changes(gitops_commit_result *out, git_repository *repo, git_tree *from, git_tree *to)
{
	git_diff *diff = NULL;
	git_diff_options dopt;
	git_diff_find_options fopt;
	size_t n, i;
	int error = -1;

	git_diff_options_init(&dopt, GIT_DIFF_OPTIONS_VERSION);
	git_diff_find_options_init(&fopt, GIT_DIFF_FIND_OPTIONS_VERSION);
	fopt.flags = GIT_DIFF_FIND_RENAMES;
	if (git_diff_tree_to_tree(&diff, repo, from, to, &dopt) < 0 || git_diff_find_similar(diff, &fopt) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot list the changes: %s", git_msg());
		goto cleanup;
	}
	n = git_diff_num_deltas(diff);
	if (n && !(out->files = calloc(n, sizeof(*out->files)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < n; i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		git_patch *patch = NULL;
		gitops_file *f = &out->files[out->count];
		const char *path = d->new_file.path ? d->new_file.path : d->old_file.path;
		if (!(f->path = strdup(path ? path : "?"))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		f->status = delta_letter(d->status);
		out->count++;
		if (!(d->flags & GIT_DIFF_FLAG_BINARY) && git_patch_from_diff(&patch, diff, i) == 0 && patch) {
			size_t ctx_lines;
			git_patch_line_stats(&ctx_lines, &f->added, &f->removed, patch);
		}
		git_patch_free(patch);
	}
	error = 0;
cleanup:
	git_diff_free(diff);
	return error;
}

int gitops_commit_all(gitops_commit_result *out, fgit_repo *r, const gitops_identity *author,
                      const gitops_identity *committer, const char *message)
{
	git_repository *repo = fgit_raw(r);
	git_index *index = NULL;
	git_tree *tree = NULL, *parent_tree = NULL;
	git_commit *parent = NULL;
	git_signature *a = NULL, *c = NULL;
	git_oid tree_id, head_id, commit_id;
	const git_commit *parents[1];
	char *msg = NULL;
	size_t mlen;
	int rc, error = -1;

	memset(out, 0, sizeof(*out));
	init();
	if (!author || !author->name || !*author->name || !author->email || !*author->email)
		return ferror_set(FACTORY_EINVALID, "cannot commit: no author name and email");
	if (!committer)
		committer = author;
	if (!message || !*message)
		return ferror_set(FACTORY_EINVALID, "cannot commit: empty message");
	if (git_repository_index(&index, repo) < 0 || git_index_read(index, 1) < 0 ||
	    git_index_add_all(index, NULL, GIT_INDEX_ADD_DEFAULT, NULL, NULL) < 0 ||
	    git_index_update_all(index, NULL, NULL, NULL) < 0 || git_index_write(index) < 0 ||
	    git_index_write_tree(&tree_id, index) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot stage the work tree: %s", git_msg());
		goto cleanup;
	}
	rc = git_reference_name_to_id(&head_id, repo, "HEAD");
	if (rc == 0) {
		if (git_commit_lookup(&parent, repo, &head_id) < 0 || git_commit_tree(&parent_tree, parent) < 0) {
			error = ferror_set(FACTORY_ERR, "cannot read HEAD: %s", git_msg());
			goto cleanup;
		}
		if (git_oid_equal(git_tree_id(parent_tree), &tree_id)) {
			error = 0; /* nothing to commit */
			goto cleanup;
		}
	} else if (rc != GIT_ENOTFOUND && rc != GIT_EUNBORNBRANCH) {
		error = ferror_set(FACTORY_ERR, "cannot read HEAD: %s", git_msg());
		goto cleanup;
	}
	if (git_tree_lookup(&tree, repo, &tree_id) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot read the new tree: %s", git_msg());
		goto cleanup;
	}
	if ((error = list_changes(out, repo, parent_tree, tree)) < 0)
		goto cleanup;
	if (!out->count) {
		error = 0;
		goto cleanup;
	}
	if (git_signature_now(&a, author->name, author->email) < 0 ||
	    git_signature_now(&c, committer->name && *committer->name ? committer->name : author->name,
	                      committer->email && *committer->email ? committer->email : author->email) < 0) {
		error = ferror_set(FACTORY_EINVALID, "bad author or committer: %s", git_msg());
		goto cleanup;
	}
	mlen = strlen(message);
	if (!(msg = malloc(mlen + 2))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	memcpy(msg, message, mlen + 1);
	if (message[mlen - 1] != '\n') {
		msg[mlen] = '\n';
		msg[mlen + 1] = '\0';
	}
	parents[0] = parent;
	if (git_commit_create(&commit_id, repo, "HEAD", a, c, NULL, msg, tree, parent ? 1 : 0, parents) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot commit: %s", git_msg());
		goto cleanup;
	}
	COUNT(commits);
	git_oid_tostr(out->sha, sizeof(out->sha), &commit_id);
	error = 0;
cleanup:
	if (error < 0 || !out->sha[0])
		gitops_commit_result_release(out); /* an error, or nothing committed */
	free(msg);
	git_signature_free(a);
	git_signature_free(c);
	git_tree_free(tree);
	git_tree_free(parent_tree);
	git_commit_free(parent);
	git_index_free(index);
	return error;
}

int gitops_push(fgit_repo *r, const gitops_remote *rem, const char *local, const char *remote_branch, int force,
                const char *expect)
{
	git_repository *repo = fgit_raw(r);
	git_remote *remote = NULL;
	git_push_options po;
	git_strarray specs;
	git_reference *lref = NULL;
	op_ctx c;
	char lfull[REF_MAX], rfull[REF_MAX], spec[2 * REF_MAX + 4], tracking[REF_MAX + 32], what[2 * REF_MAX + 32];
	char *spec_p = spec;
	int rc, error;

	init();
	if ((error = check_remote(rem)) < 0 || (error = full_ref(lfull, sizeof(lfull), local)) < 0 ||
	    (error = full_ref(rfull, sizeof(rfull), remote_branch)) < 0)
		return error;
	if (strncmp(rfull, "refs/heads/", 11) != 0)
		return ferror_set(FACTORY_EINVALID, "can only push to a branch, not %s", rfull);
	if (git_reference_lookup(&lref, repo, lfull) < 0)
		return ferror_set(FACTORY_ENOTFOUND, "cannot push %s: no such local branch", short_branch(lfull));
	snprintf(what, sizeof(what), "cannot push %s to %s", short_branch(lfull), short_branch(rfull));
	snprintf(spec, sizeof(spec), "%s%s:%s", force ? "+" : "", lfull, rfull);
	specs.strings = &spec_p;
	specs.count = 1;
	op_init(&c, rem);
	c.expect = force ? expect : NULL;
	if (remote_new(&remote, repo, NULL, rem->url) < 0) {
		error = ferror_set(FACTORY_ERR, "%s: %s", what, git_msg());
		goto cleanup;
	}
	git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
	callbacks_init(&po.callbacks, &c);
	po.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
	po.proxy_opts.type = GIT_PROXY_AUTO;
	rc = git_remote_push(remote, &specs, &po);
	COUNT(pushes);
	if (rc < 0) {
		error = op_fail(&c, rc, what);
		goto cleanup;
	}
	if (c.refused_ref[0]) {
		const char *why = c.refused_why, *says = c.remote_says;
		int code = FACTORY_ERR;
		/* A ref that moved meanwhile: fetch, rebase and try again. */
		if (strstr(why, "non-fast-forward") || strstr(why, "fetch first") || strstr(why, "stale info") ||
		    strstr(why, "failed to lock") || strstr(why, "cannot lock") || strstr(why, "failed to update"))
			code = FACTORY_ECONFLICT;
		else if (strstr(why, "protected") || strstr(why, "not allowed") || strstr(why, "denied") ||
		         strstr(says, "protected") || strstr(says, "not allowed"))
			code = FACTORY_EAUTH;
		while (*says == ' ')
			says++;
		for (size_t k = strlen(c.remote_says); k && c.remote_says[k - 1] == ' '; k--)
			c.remote_says[k - 1] = '\0';
		error = ferror_set(code, "%s: the server refused %s: %s%s%s%s", what, c.refused_ref, why,
		                   *says ? " (" : "", says, *says ? ")" : "");
		goto cleanup;
	}
	/* An anonymous remote updates no tracking ref: keep origin/<branch> true. */
	snprintf(tracking, sizeof(tracking), "refs/remotes/origin/%s", short_branch(rfull));
	{
		git_reference *resolved = NULL, *t = NULL;
		if (git_reference_resolve(&resolved, lref) == 0)
			git_reference_create(&t, repo, tracking, git_reference_target(resolved), 1, "factory: push");
		git_reference_free(t);
		git_reference_free(resolved);
	}
	error = 0;
cleanup:
	git_reference_free(lref);
	git_remote_free(remote);
	return error;
}

/* The first conflicting path in the index, into `out`. */
static void first_conflict(char *out, size_t len, git_repository *repo)
{
	git_index *index = NULL;
	git_index_conflict_iterator *it = NULL;
	const git_index_entry *anc, *ours, *theirs;

	snprintf(out, len, "?");
	if (git_repository_index(&index, repo) < 0)
		return;
	if (git_index_conflict_iterator_new(&it, index) == 0 &&
	    git_index_conflict_next(&anc, &ours, &theirs, it) == 0) {
		const git_index_entry *e = ours ? ours : theirs ? theirs : anc;
		if (e)
			snprintf(out, len, "%s", e->path);
	}
	git_index_conflict_iterator_free(it);
	git_index_free(index);
}

int gitops_rebase(size_t *replayed, fgit_repo *r, const char *upstream, const gitops_identity *committer)
{
	git_repository *repo = fgit_raw(r);
	git_annotated_commit *up = NULL;
	git_commit *upc = NULL;
	git_reference *head = NULL;
	git_rebase *rebase = NULL;
	git_rebase_options ro;
	git_rebase_operation *op;
	git_signature *sig = NULL;
	git_index *index = NULL;
	git_oid base, oid;
	size_t n = 0;
	char path[512];
	int rc, error = -1;

	if (replayed)
		*replayed = 0;
	init();
	if (!committer || !committer->name || !committer->email)
		return ferror_set(FACTORY_EINVALID, "cannot rebase: no committer");
	if ((error = lookup_commit(&upc, repo, upstream)) < 0)
		return error;
	if (git_repository_head(&head, repo) < 0 || !git_reference_is_branch(head)) {
		error = ferror_set(FACTORY_EINVALID, "cannot rebase: HEAD is not on a branch");
		goto cleanup;
	}
	/* Already on top of upstream: nothing to replay. */
	if (git_merge_base(&base, repo, git_reference_target(head), git_commit_id(upc)) == 0 &&
	    git_oid_equal(&base, git_commit_id(upc))) {
		error = 0;
		goto cleanup;
	}
	if (git_annotated_commit_lookup(&up, repo, git_commit_id(upc)) < 0 ||
	    git_signature_now(&sig, committer->name, committer->email) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot rebase onto %s: %s", upstream, git_msg());
		goto cleanup;
	}
	git_rebase_options_init(&ro, GIT_REBASE_OPTIONS_VERSION);
	ro.checkout_options.checkout_strategy = GIT_CHECKOUT_SAFE;
	if (git_rebase_init(&rebase, repo, NULL, up, NULL, &ro) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot start a rebase onto %s: %s", upstream, git_msg());
		goto cleanup;
	}
	COUNT(rebases);
	while ((rc = git_rebase_next(&op, rebase)) == 0) {
		git_index_free(index);
		index = NULL;
		if (git_repository_index(&index, repo) < 0) {
			error = ferror_set(FACTORY_ERR, "cannot rebase: %s", git_msg());
			goto abort;
		}
		if (git_index_has_conflicts(index)) {
			first_conflict(path, sizeof(path), repo);
			error = ferror_set(FACTORY_ECONFLICT, "rebase onto %s conflicts in %s", upstream, path);
			goto abort;
		}
		rc = git_rebase_commit(&oid, rebase, NULL, sig, NULL, NULL);
		if (rc == GIT_EAPPLIED)
			continue; /* already upstream */
		if (rc < 0) {
			error = ferror_set(FACTORY_ERR, "cannot write a rebased commit: %s", git_msg());
			goto abort;
		}
		n++;
	}
	if (rc == GIT_EMERGECONFLICT || rc == GIT_ECONFLICT) {
		error = ferror_set(FACTORY_ECONFLICT, "rebase onto %s conflicts: %s", upstream, git_msg());
		goto abort;
	}
	if (rc != GIT_ITEROVER) {
		error = ferror_set(FACTORY_ERR, "cannot rebase onto %s: %s", upstream, git_msg());
		goto abort;
	}
	if (git_rebase_finish(rebase, sig) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot finish the rebase: %s", git_msg());
		goto abort;
	}
	if (replayed)
		*replayed = n;
	error = 0;
	goto cleanup;
abort:
	git_rebase_abort(rebase);
cleanup:
	git_index_free(index);
	git_rebase_free(rebase);
	git_signature_free(sig);
	git_annotated_commit_free(up);
	git_reference_free(head);
	git_commit_free(upc);
	return error;
}

int gitops_push_rebasing(size_t *rebases, fgit_repo *r, const gitops_remote *rem, const char *branch,
                         const char *remote_branch, const gitops_identity *committer, int max_tries)
{
	const char *fetch[2] = {NULL, NULL};
	char tracking[REF_MAX];
	size_t n = 0, missing = 0;
	int tries, error = -1;

	if (rebases)
		*rebases = 0;
	if (max_tries < 1)
		max_tries = 1;
	fetch[0] = short_branch(remote_branch);
	snprintf(tracking, sizeof(tracking), "refs/remotes/origin/%s", fetch[0]);
	for (tries = 1;; tries++) {
		error = gitops_push(r, rem, branch, remote_branch, 0, NULL);
		if (error != FACTORY_ECONFLICT || tries >= max_tries)
			break;
		log_info("push of %s was refused as not a fast-forward: fetching, rebasing and trying again", branch);
		if ((error = gitops_fetch(r, rem, fetch, &missing)) < 0)
			break;
		if (missing)
			continue; /* the branch is gone on the server: a plain push will do */
		if ((error = gitops_rebase(NULL, r, tracking, committer)) < 0)
			break;
		n++;
	}
	if (rebases)
		*rebases = n;
	return error;
}
