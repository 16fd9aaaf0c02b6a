/*
 * factory-release - release what changed since the last release, and tell
 * the customers it concerns.
 *
 * It collects the issues closed since the last release, the merged merge
 * requests that closed them and the commits with a Changelog trailer no
 * issue covers; judges each customer-facing or internal (labels, types,
 * paths, and a model's second opinion when one is configured) and records
 * the verdict as a release:: label; writes release notes grouped by type;
 * publishes a GitLab release on a tag (the version given, or the next
 * semantic version), commits CHANGELOG.md and keeps the notes as an
 * artifact; then notes each customer-facing issue, emails each reporter who
 * left an address once, and posts one announcement to a chat webhook.
 * Nothing changed: no release. A run that stops half-way is finished by the
 * next one, which tells nobody twice (state in GitLab, never on disk).
 *
 *   factory-release [--dry-run] [--release-version X.Y.Z] [--ref REF]
 *   factory-release [--dry-run] --scope group:PATH
 *
 * With a group scope (common/scope.h) every project of the group and its
 * subgroups is released on its own, as if the job ran in it: its own tag,
 * version, notes, CHANGELOG.md and customers, under its own .factory.yml.
 * The model and the mail server are the group's (the job's own settings),
 * never a project's file (scope_job.h, "Trust"); a version, a ref and a
 * tag pipeline name one project's release, so they are refused (version,
 * ref) or ignored (CI_COMMIT_TAG) there.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "release_job.h"
#include "scope_job.h"

static const job_option options[] = {
        {"release-version", "release.version", 1,
         "X.Y.Z    the version to release (default: the next one, from the changes)"},
        {"tag-prefix", "release.tag_prefix", 1, "TEXT     put before the version in the tag name (default \"v\")"},
        {"ref", "release.ref", 1, "REF      what to tag: branch, tag or commit (default: the default branch)"},
        {"branch", "release.branch", 1, "NAME     where CHANGELOG.md is committed (default: the default branch)"},
        {"since", "release.since", 1, "TIME     for a first release: only issues closed after TIME (ISO 8601)"},
        {"no-llm", "release.no_llm", 0, "judge with the rules alone even when a model is configured"},
        {"scope", "scope", 1, "SCOPE    project (default) or group:PATH: release every project of the group"},
        {NULL, NULL, 0, NULL},
};

static const job_spec spec = {
        "release",
        "Release what changed since the last release: notes grouped by type, a GitLab release and tag, "
        "CHANGELOG.md, and the customers told once (issue notes, email, chat webhook).",
        NULL,
        options,
};

void rel_item_free_all(rel_run *r)
{
	size_t i;

	for (i = 0; i < r->nitems; i++) {
		notes_item_release(&r->items[i].item);
		cJSON_Delete(r->items[i].issue);
		free(r->items[i].reporters);
	}
	free(r->items);
	r->items = NULL;
	r->nitems = 0;
}

int rel_add_item(rel_item **out, rel_run *r)
{
	rel_item *p;

	if ((long)r->nitems >= r->max_items)
		return ferror_set(
		        FACTORY_ETOOBIG,
		        "more than %ld changes for one release (raise release.max_items, or set release.since "
		        "for a first release)",
		        r->max_items);
	if (!(p = realloc(r->items, (r->nitems + 1) * sizeof(*p))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	r->items = p;
	p = &r->items[r->nitems++];
	memset(p, 0, sizeof(*p));
	notes_item_init(&p->item);
	*out = p;
	return 0;
}

int rel_step_failed(rel_run *r, int error, const char *what)
{
	if (error >= 0)
		return error;
	if (error == FACTORY_EUPSTREAM || error == FACTORY_ENOMEM)
		return error;
	log_error("%s: %s (the next run tries again)", what, ferror_last());
	report_action(r->job->rep, "failed", what, "%s", ferror_last());
	r->failures++;
	return 0;
}

/* Settings, the rules, and the ways to tell people. The model's and the
 * mail server's settings (with their secrets) come from `trusted`: the
 * job's own, never a project's file in a group scope. `group` is 1 in a
 * group scope (no tag pipeline there). */
static int open_run(rel_run *r, job_ctx *ctx, job_ctx *trusted, int group)
{
	smtp_options so;
	http_options ho;
	int no_llm = 0, error;

	memset(r, 0, sizeof(*r));
	r->job = ctx;
	r->gl = ctx->gl;
	notes_state_init(&r->state);
	fbuf_init(&r->notes, (size_t)8 << 20);
	r->tag_prefix = fconfig_get_str(ctx->cfg, "release.tag_prefix", "v");
	r->ref = fconfig_get_str(ctx->cfg, "release.ref", NULL);
	r->branch = fconfig_get_str(ctx->cfg, "release.branch", NULL);
	r->version_given = fconfig_get_str(ctx->cfg, "release.version", NULL);
	/* a pipeline for a tag a person pushed: release that tag, as that version */
	r->ci_tag = group ? NULL : getenv("CI_COMMIT_TAG");
	if (r->ci_tag && *r->ci_tag && !(r->ref && *r->ref) && !(r->version_given && *r->version_given)) {
		semver v;
		if (semver_parse(&v, r->ci_tag, r->tag_prefix) < 0) {
			log_info("tag %s is not a version tag (prefix \"%s\"): no release", r->ci_tag, r->tag_prefix);
			r->not_a_version = 1;
		}
		r->ref = r->ci_tag;
		r->version_given = r->ci_tag;
		log_info("tag pipeline for %s: releasing that tag", r->ci_tag);
	} else {
		r->ci_tag = NULL;
	}
	r->initial_version = fconfig_get_str(ctx->cfg, "release.initial_version", "0.1.0");
	r->changelog_file = fconfig_get_str(ctx->cfg, "release.changelog_file", "CHANGELOG.md");
	r->since = fconfig_get_str(ctx->cfg, "release.since", NULL);
	r->sign = fconfig_get_str(ctx->cfg, "release.email_signature", NULL);
	r->webhook_url = fconfig_get_str(ctx->cfg, "release.webhook_url", NULL);
	if (r->webhook_url && !*r->webhook_url)
		r->webhook_url = NULL;
	if (r->webhook_url) {
		log_add_secret(r->webhook_url); /* chat webhook URLs are credentials */
		if (strncmp(r->webhook_url, "https://", 8) != 0 && strncmp(r->webhook_url, "http://", 7) != 0)
			return ferror_set(FACTORY_ECONFIG, "bad setting release.webhook_url: expected an http(s) URL");
	}
	if (strlen(r->tag_prefix) > 16 || strpbrk(r->tag_prefix, " ~^:?*[\\"))
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting release.tag_prefix=%s: at most 16 characters a tag name "
		                  "may hold",
		                  r->tag_prefix);
	if ((error = fconfig_get_bool(&r->changelog, ctx->cfg, "release.changelog", 1)) < 0 ||
	    (error = fconfig_get_bool(&r->changelog_skip_ci, ctx->cfg, "release.changelog_skip_ci", 1)) < 0 ||
	    (error = fconfig_get_long(&r->lookback_days, ctx->cfg, "release.lookback_days", 90, 0, 3650)) < 0 ||
	    (error = fconfig_get_long(&r->max_items, ctx->cfg, "release.max_items", 1000, 1, 100000)) < 0 ||
	    (error = fconfig_get_bool(&no_llm, ctx->cfg, "release.no_llm", 0)) < 0)
		return error;
	if (strpbrk(r->changelog_file, "\n\r") || strstr(r->changelog_file, "..") || *r->changelog_file == '/' ||
	    !*r->changelog_file)
		return ferror_set(FACTORY_ECONFIG, "bad setting release.changelog_file=%s: a path in the repository",
		                  r->changelog_file);
	if ((error = impact_policy_new(&r->policy, ctx->cfg)) < 0)
		return error;
	if (!no_llm && (error = rel_model_open(&r->model, trusted)) < 0)
		return error;
	if ((error = smtp_options_from_config(&so, &r->smtp_password, trusted->cfg)) < 0)
		return error;
	if (so.url && (error = smtp_new(&r->mail, &so)) < 0)
		return error;
	http_options_init(&ho);
	if ((error = fconfig_get_long(&ho.timeout_ms, ctx->cfg, "http.timeout_ms", 30000, 100, 600000)) < 0)
		return error;
	{
		long retries;
		if ((error = fconfig_get_long(&retries, ctx->cfg, "http.max_retries", 3, 0, 20)) < 0 ||
		    (error = fconfig_get_long(&ho.backoff_base_ms, ctx->cfg, "http.backoff_ms", 500, 1, 600000)) < 0 ||
		    (error = fconfig_get_long(&ho.retry_budget_ms, ctx->cfg, "http.retry_budget_ms", 60000, 0,
		                              3600000)) < 0)
			return error;
		ho.max_retries = (int)retries;
	}
	ho.max_response = 1 << 20;
	ho.follow_redirects = 0;
	if (r->webhook_url && (error = http_client_new(&r->http, &ho)) < 0)
		return error;
	log_info("release: tags %s<version>, email %s, chat webhook %s, model %s", r->tag_prefix,
	         r->mail ? "on" : "off (smtp.url not set)", r->webhook_url ? "on" : "off (release.webhook_url not set)",
	         r->model ? "asked for a second opinion" : "not asked");
	return 0;
}

/* 1 when the CI tag already has a release, 0 when not, or an error. */
static int tag_released(rel_run *r)
{
	cJSON *rel = NULL;
	fbuf q;
	int error;

	fbuf_init(&q, 1024);
	if ((error = http_escape(&q, r->ci_tag)) == 0)
		error = gitlab_request(&rel, r->gl, "GET", NULL, "projects/:id/releases/%s", fbuf_cstr(&q));
	fbuf_release(&q);
	cJSON_Delete(rel);
	if (error == FACTORY_ENOTFOUND)
		return 0;
	if (error == 0)
		log_info("tag %s already has its release: nothing to do", r->ci_tag);
	return error < 0 ? error : 1;
}

static void close_run(rel_run *r)
{
	rel_item_free_all(r);
	impact_policy_free(r->policy);
	rel_model_free(r->model);
	smtp_free(r->mail);
	if (r->smtp_password) {
		memset(r->smtp_password, 0, strlen(r->smtp_password));
		free(r->smtp_password);
	}
	http_client_free(r->http);
	free(r->project_path);
	free(r->project_name);
	free(r->web_url);
	free(r->default_branch);
	free(r->prev_tag);
	free(r->release_url);
	free(r->description);
	notes_state_release(&r->state);
	fbuf_release(&r->notes);
	cJSON_Delete(r->mrs);
	cJSON_Delete(r->commits);
	free(r->by_sha);
}

static void summarise(rel_run *r, int error)
{
	report *rep = r->job->rep;
	long asked = 0, changed = 0, ignored = 0;
	long customer = 0;
	size_t i;

	for (i = 0; i < r->nitems; i++)
		customer += r->items[i].item.customer != 0;
	report_counter_set(rep, "items", (long)r->nitems);
	report_counter_set(rep, "customer_facing", customer);
	report_counter_set(rep, "internal", (long)r->nitems - customer);
	report_counter_set(rep, "skipped", r->skipped);
	report_counter_set(rep, "failures", r->failures);
	/* the API budget: calls per issue in the release notes (job.h) */
	{
		long issues = 0;
		for (i = 0; i < r->nitems; i++)
			issues += r->items[i].item.iid > 0;
		report_counter_set(rep, "issues_handled", issues);
	}
	report_counter_set(rep, "releases", !r->nothing && r->version[0] ? 1 : 0);
	if (r->model) {
		rel_model_counters(r->model, &asked, &changed, &ignored);
		report_counter_set(rep, "model_asked", asked);
		report_counter_set(rep, "model_changed", changed);
		report_counter_set(rep, "model_ignored", ignored);
	}
	if (r->mail) {
		smtp_stats st;
		smtp_get_stats(&st, r->mail);
		report_counter_set(rep, "emails_sent", st.sent);
		report_counter_set(rep, "emails_refused", st.refused);
		report_counter_set(rep, "emails_failed", st.failed);
	}
	if (r->nothing && r->not_a_version) {
		report_summary(rep, "no release: tag %s is not a version tag", r->ci_tag);
	} else if (r->nothing && r->ci_tag) {
		report_summary(rep, "no release: tag %s already has its release", r->ci_tag);
	} else if (r->nothing) {
		report_summary(rep, "no release: nothing changed since %s", r->have_prev ? r->prev_tag : "the start");
	} else if (r->version[0]) {
		report_summary(rep, "%s%s %s: %zu change%s (%ld customer-facing), %d action%s%s%s",
		               r->job->dry_run ? "dry run: " : "", r->resume ? "finished release" : "release", r->tag,
		               r->nitems, r->nitems == 1 ? "" : "s", customer, report_action_count(rep),
		               report_action_count(rep) == 1 ? "" : "s", r->failures ? ", some failed" : "",
		               error < 0 ? " (stopped early)" : "");
	}
}

/*
 * One project's release (the job's project, or one of a group's). `me` is
 * the Factory's user id when a project before this one read it (0: not yet);
 * the id read here is left in it, so a group costs one GET /user, not one a
 * project.
 */
static int run_project(job_ctx *ctx, job_ctx *trusted, int group, long *me)
{
	rel_run r;
	int error;

	if ((error = open_run(&r, ctx, trusted, group)) < 0)
		goto cleanup;
	r.me = *me;
	if ((error = rel_project(&r)) < 0)
		goto cleanup;
	*me = r.me;
	if ((error = rel_find_last(&r)) < 0)
		goto cleanup;
	if (!r.resume && r.not_a_version) {
		r.nothing = 1;
		goto cleanup;
	}
	if (!r.resume && r.ci_tag && (error = tag_released(&r)) != 0) {
		if (error > 0) { /* its release exists (maybe this job made it, and the tag's pipeline runs now) */
			r.nothing = 1;
			error = 0;
		}
		goto cleanup;
	}
	if (!r.resume) {
		if ((error = rel_collect(&r)) < 0 || (error = rel_assess(&r)) < 0)
			goto cleanup;
		if (!r.nitems) {
			r.nothing = 1;
			log_info("no release: nothing changed since %s", r.have_prev ? r.prev_tag : "the start");
			error = 0;
			goto cleanup;
		}
		if ((error = rel_choose_version(&r)) < 0 || (error = rel_render(&r)) < 0 ||
		    (error = rel_create(&r)) < 0)
			goto cleanup;
	}
	if (r.resume && (error = rel_load_resume(&r)) < 0)
		goto cleanup;
	if ((error = rel_artifact(&r)) < 0)
		goto cleanup;
	if ((error = rel_changelog(&r)) < 0 || (error = rel_labels(&r)) < 0)
		goto cleanup;
	if ((error = rel_read_issue_notes(&r)) < 0 || (error = rel_announce(&r)) < 0 || (error = rel_email(&r)) < 0 ||
	    (error = rel_webhook(&r)) < 0)
		goto cleanup;
	r.state.done = !r.failures;
	if ((error = rel_update_state(&r)) < 0)
		goto cleanup;
	if (r.failures) {
		error = ferror_set(FACTORY_ERR,
		                   "%ld step%s failed; the next run finishes release %s without telling "
		                   "anyone twice",
		                   r.failures, r.failures == 1 ? "" : "s", r.tag);
		goto cleanup;
	}
	log_info("%srelease %s %s", ctx->dry_run ? "dry run: " : "", r.tag, r.resume ? "finished" : "done");
	error = 0;
cleanup:
	if (ctx->rep)
		summarise(&r, error);
	close_run(&r);
	return error;
}

static int group_project(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg)
{
	(void)p;
	return run_project(pctx, group, 1, arg);
}

/* The job's project, or every project of a group, each released on its own. */
static int run(job_ctx *ctx)
{
	static const char *const one_project[] = {"release.version", "release.ref", NULL};
	char *group = NULL;
	long me = 0;
	size_t i;
	int error;

	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0)
		return error;
	if (!group)
		return run_project(ctx, ctx, 0, &me);
	for (i = 0; one_project[i]; i++) {
		fconfig_source src;
		if (fconfig_get(ctx->cfg, one_project[i], &src)) {
			error = ferror_set(FACTORY_ECONFIG,
			                   "%s (from %s) names one project's release: not with scope group:%s (each "
			                   "project's version comes from its own changes)",
			                   one_project[i], fconfig_source_name(src), group);
			goto cleanup;
		}
	}
	error = scope_job_run(ctx, group, group_project, &me);
	report_summary(ctx->rep, "%sgroup %s: %ld release%s of %ld project%s taking part%s, %ld change%s, %d action%s",
	               ctx->dry_run ? "dry run: " : "", group, report_counter_get(ctx->rep, "releases"),
	               report_counter_get(ctx->rep, "releases") == 1 ? "" : "s",
	               report_counter_get(ctx->rep, "projects_taking_part"),
	               report_counter_get(ctx->rep, "projects_taking_part") == 1 ? "" : "s",
	               report_counter_get(ctx->rep, "projects_failed") ? " (some failed)" : "",
	               report_counter_get(ctx->rep, "items"), report_counter_get(ctx->rep, "items") == 1 ? "" : "s",
	               report_action_count(ctx->rep), report_action_count(ctx->rep) == 1 ? "" : "s");
cleanup:
	free(group);
	return error;
}

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc = job_start(&ctx, &spec, argc, argv);

	if (rc != JOB_CONTINUE)
		return rc;
	if (ctx.nargs > 0)
		return job_finish(&ctx,
		                  ferror_set(FACTORY_ECONFIG, "unexpected argument '%s' (see --help)", ctx.args[0]));
	if ((rc = job_connect(&ctx)) == 0)
		rc = run(&ctx);
	return job_finish(&ctx, rc);
}
