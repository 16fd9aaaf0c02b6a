/*
 * scope.h - where a job works: one project (the default) or every project
 * of a GitLab group and its subgroups, each under its own settings.
 *
 * The setting `scope` (FACTORY_SCOPE, the component input of the same
 * name) is "project" (or unset) for the job's one project, or
 * "group:<full path>" for a group, e.g. "group:acme/platform". A full path
 * is one or more segments of letters, digits, '_', '-' and '.', joined by
 * '/'; a numeric group id is taken too. Anything else is FACTORY_ECONFIG.
 * A job that walks a group declares a job_option with the key "scope"
 * (the --scope flag, job.h); with a group scope it then needs no project of
 * its own (job_connect leaves ctx->project NULL when none is set). A job
 * without that option refuses a group scope. The shape of such a job:
 *
 *   char *group = NULL;
 *   scope *sc = NULL;
 *   if ((error = scope_group_from_config(&group, ctx->cfg)) < 0) goto cleanup;
 *   if (!group) { error = do_one_project(ctx, ctx->gl, ctx->cfg); goto cleanup; }
 *   if ((error = scope_load(&sc, ctx->gl, ctx->cfg, group)) < 0) goto cleanup;
 *   error = scope_each(sc, ctx->gl, per_project, ctx);   (per_project reads p->cfg)
 *   ...
 *   scope_free(sc); free(group);
 *
 * Group endpoints are used where GitLab has them (group labels, group
 * boards: see factory-setup); the rest is per project, one project at a
 * time, through one GitLab client whose ":id" is switched with
 * gitlab_set_project(). One client means one connection, one set of
 * counters and one rate-limit pacing for the whole group (http.h).
 *
 * Loading is lazy. scope_load only lists the group:
 *   GET /groups/:id/projects?include_subgroups=true&archived=false
 *       &simple=true&order_by=path&sort=asc    one request per 100 projects
 * Archived projects are left out by the listing, and so is a project with
 * the opt-out topic (the listing says so). A project's own file is read
 * when its settings are first needed (scope_settle: scope_each does it
 * before the project's turn), at most once per scope:
 *   GET /projects/:id/repository/files/.factory.yml/raw?ref=<default branch>
 *       one request per project settled that has a default branch (none
 *       for an empty repository); a 404 means it has no file of its own.
 * So a job that works on a few projects of a big group (factory-implement:
 * the projects of the issues it handles) reads only their files, and a job
 * that walks every project (scope_settle_all, scope_each) reads them all.
 * GitLab.com limits the repository files API to 500 requests a minute per
 * IP address and file path (docs/scaling.md): another reason not to read
 * every project's file on every run of every parallel job.
 *
 * A project's settings: the group's settings (the job's own, from its
 * --config file, FACTORY_* variables and flags) with the project's own
 * .factory.yml merged over the group's file: mappings merge key by key,
 * anything else (a scalar, a list) from the project's file replaces. Flags
 * and FACTORY_* variables still win over both files, as everywhere
 * (config.h). Errors in a project's values name its file,
 * "<project path>/.factory.yml".
 *
 * Opting out: a project is left out (enabled = 0, `why` says why) when its
 * topics include "factory-opt-out" (any case), or when its settings say
 * factory: {enabled: false}. With `factory: {enabled: false}` in the
 * group's own file the group is opt-in: only projects whose file says
 * `enabled: true` take part.
 *
 * A project whose .factory.yml cannot be used (bad YAML, a bad
 * factory.enabled value, a NUL byte, over 1 MiB) is left out too, with
 * `error` set to FACTORY_ECONFIG and the message in `why`; it is never run
 * on the group's policy alone, and scope_each reports it at the end. Both
 * are found out when the project is settled, not before. A failure to list
 * the group fails scope_load with the GitLab error; a failure to read a
 * project's file (other than 404) fails scope_settle with it, leaving the
 * project unsettled.
 */
#ifndef FACTORY_SCOPE_H
#define FACTORY_SCOPE_H

#include <stddef.h>

#include "config.h"
#include "gitlab.h"

/* The topic that takes a project out of a group scope. */
#define SCOPE_OPT_OUT_TOPIC "factory-opt-out"
/* The project's own settings file, at the root of its default branch. */
#define SCOPE_PROJECT_FILE ".factory.yml"

/*
 * Read the `scope` setting of `cfg`. *group_out is a new string (caller
 * frees) holding the group's full path or id for a group scope, or NULL for
 * the project scope. Returns 0 or FACTORY_ECONFIG naming the setting, its
 * value and where it came from.
 */
int scope_group_from_config(char **group_out, const fconfig *cfg);

typedef struct {
	long id;              /* project id */
	char *path;           /* path_with_namespace */
	char *default_branch; /* NULL for an empty repository */
	fconfig *cfg;         /* its settings (see above), owned by the scope; NULL until settled
	                         and for a project left out by topic or a broken file */
	int settled;          /* its .factory.yml was read (or needs no reading): the fields
	                         below are final */
	int has_file;         /* it has a .factory.yml of its own (known once settled) */
	int enabled;          /* 1: the job works on it (before it is settled: as far as known,
	                         i.e. not opted out by topic) */
	int error;            /* FACTORY_ECONFIG when its .factory.yml cannot be used, else 0 */
	char why[512];        /* why it is left out ("" when enabled) */
} scope_project;

typedef struct scope scope;

/*
 * List the projects of `group` (full path or id) and its subgroups and
 * leave out those with the opt-out topic; no project's file is read yet
 * (scope_settle). `cfg` is the group's settings (the job's; copied, so
 * `cfg` may go before the scope does). `gl` is borrowed: the scope reads
 * the projects' files through it, so it must outlive the scope. Sends only
 * reads. Returns 0 or a GitLab error (FACTORY_ENOTFOUND for an unknown
 * group), or FACTORY_ENOMEM.
 */
int scope_load(scope **out, gitlab *gl, const fconfig *cfg, const char *group);
void scope_free(scope *s);

/*
 * Settle project `i`: read its .factory.yml (once per scope; a settled
 * project returns 0 at once without a request), make its settings and
 * decide whether it takes part, as described above; scope_at(s, i) then
 * has its final cfg, enabled, why and error. Opting out by its file or a
 * broken file is not an error here: the project is left out (enabled 0,
 * and error set for a broken file). Returns 0, a GitLab error reading the
 * file (the project stays unsettled and may be tried again),
 * FACTORY_EINVALID for an `i` out of range, or FACTORY_ENOMEM.
 */
int scope_settle(scope *s, size_t i);

/* Settle every project (each file not yet read is read now) and log how
 * many take part. Returns 0 or the first error of scope_settle. */
int scope_settle_all(scope *s);

/* The index of the project with id `id`, or SCOPE_NONE. */
#define SCOPE_NONE ((size_t)-1)
size_t scope_index(const scope *s, long id);

/* The group as given, the number of projects found, how many take part
 * as far as known (those listed, less those left out by topic and those
 * settled so far that are left out by or for their file: exact once
 * every project is settled), and project `i` (0 <= i < scope_count), in
 * path order. */
const char *scope_group(const scope *s);
size_t scope_count(const scope *s);
size_t scope_enabled(const scope *s);
const scope_project *scope_at(const scope *s, size_t i);

/*
 * Run `fn` for each project that takes part, in path order, with `gl`
 * switched to it (gitlab_set_project with its id); the client's own project
 * is put back afterwards. Each project is settled (scope_settle) when its
 * turn comes; one whose file cannot be read counts as a failed project. A failing project does not stop the others: its
 * error is logged as "project <path>: <message>" and the walk goes on,
 * except after FACTORY_EAUTH, FACTORY_EUPSTREAM or FACTORY_ENOMEM, which
 * would fail every project alike and stop it at once. Returns 0 when every
 * project went well and none was left out for a broken .factory.yml, else
 * the first error, its message saying how many projects failed and naming
 * the first. A non-zero, positive return of `fn` stops the walk and is
 * returned as it is (for a callback that wants to stop early).
 */
typedef int (*scope_fn)(void *ctx, gitlab *gl, const scope_project *p);
int scope_each(scope *s, gitlab *gl, scope_fn fn, void *ctx);

#endif
