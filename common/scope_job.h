/*
 * scope_job.h - a job run over every project of a group (scope.h), each
 * project with a report of its own, folded into the job's report.
 *
 * For each project of the group, in path order, scope_job_run calls `fn`
 * with a job context of the project's own: a copy of the job's where
 *   cfg            is the project's settings (scope.h: the group's, with
 *                  its .factory.yml merged over them),
 *   project        is its path_with_namespace,
 *   default_branch is its default branch,
 *   rep            is a new report for this project alone, and
 *   report_dir     is <report dir>/projects/<project path>/,
 * and the one GitLab client switched to the project (gitlab_set_project).
 * So a job's per-project code is its project-scope code, unchanged: the
 * counters, actions and data it records land in the project's report.
 * `group` is the job's own context (its cfg is the group's settings), for
 * what must not come from a project's file (see "Trust" below).
 *
 * After each project its report gets the API counters of that project
 * alone (api_requests, api_reads, api_writes, and api_calls_per_issue when
 * the job set "issues_handled"), is written to its folder, and is folded
 * into the job's report:
 *   - every counter but the api_* ones is added to the job's counter of the
 *     same name (so "issues_handled" and the job's counters are totals; the
 *     job's api_* counters come from job_finish, for the whole run);
 *   - every action is copied, its target prefixed with the project's path
 *     ("acme/web#12", "acme/web: v1.2.0");
 *   - data.projects gets one entry per project of the group: path, id,
 *     enabled, why (left out), result ("ok", "failed", "left out",
 *     "settings error"), error (the message), summary, counters (its own),
 *     and report (its report.json, relative to the report dir);
 *   - report.md gets a table of the projects.
 * The job's report also gets counters projects, projects_taking_part and
 * projects_failed.
 *
 * Failures: a project that fails (its `fn` returns an error) does not stop
 * the others. A project's 403 (FACTORY_EAUTH with status 403: the token
 * has no access to that one project) counts as that project's failure and
 * the walk goes on; a 401, GitLab unavailable and out of memory stop the
 * walk at once (scope_each). The return is 0 when every project went well,
 * else the error of scope_each (the first project's error, its message
 * naming how many failed), so the exit code says a project failed: 1 for a
 * failed project, 2 for a project whose .factory.yml cannot be used, 3
 * when GitLab was unavailable.
 *
 * Trust: a project's .factory.yml is written by that project's developers,
 * while the job runs with the scheduling project's runner and secrets.
 * Settings that lead to a credential or the runner's files are therefore
 * read from `group->cfg`, never from the project's file; scope_job_same
 * tells a job whether a project's value is the group's.
 */
#ifndef FACTORY_SCOPE_JOB_H
#define FACTORY_SCOPE_JOB_H

#include "job.h"
#include "scope.h"

/* Work on one project: `pctx` as described above, `p` the project. */
typedef int (*scope_job_fn)(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg);

/*
 * Load the group (scope_load), read every project's .factory.yml
 * (scope_settle_all: the job walks them all) and run `fn` for each project
 * taking part. Returns 0, the error of scope_load (the group cannot be
 * listed) or of scope_settle_all (a project's file cannot be read: nothing
 * is run then), or the error of scope_each as described above. Fills the
 * job's report as described above in every case where the walk ran.
 */
int scope_job_run(job_ctx *ctx, const char *group, scope_job_fn fn, void *arg);

/* 1 when the project's value of `key` is the group's (both unset counts as
 * the same), else 0. */
int scope_job_same(const job_ctx *pctx, const job_ctx *group, const char *key);

#endif
