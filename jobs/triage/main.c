/*
 * factory-triage - give every open issue a type, a severity (bugs), a
 * priority and, when it must just work, the fast lane; make security issues
 * confidential; order the board's Up Next list; leave one short note per
 * decision saying why. Stateless between runs: what it did is kept in
 * GitLab (labels, and a hidden marker in its notes), so a second run over an
 * unchanged project makes no write.
 *
 *   factory-triage [--dry-run] [--wip-limit N]   the scheduled run
 *   factory-triage classify < issue.json          one decision, offline
 *   factory-triage policy                         the effective policy
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "job.h"
#include "log.h"
#include "scope_job.h"
#include "triage_job.h"

#define CLASSIFY_MAX ((size_t)16 << 20)

static const job_option options[] = {
	{"wip-limit", "triage.wip_limit", 1, "N        how many issues the Up Next list holds (default from the policy: 5)"},
	{"no-llm", "triage.no_llm", 0, "decide with the rules alone even when a model is configured"},
	{"scope", "scope", 1, "SCOPE    project (default) or group:PATH: every project of the group, each under its own policy"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"triage",
	"Triage open issues: type, severity, priority P1-P5, fast lane, confidential security issues, "
	"and the order of the board's Up Next list.",
	"commands:\n"
	"  (none)     the scheduled run over the project's open issues (or, with --scope group:PATH,\n"
	"             over every project of the group and its subgroups, each under its own .factory.yml)\n"
	"  classify   read one issue as GitLab's JSON on standard input, print the decision as JSON\n"
	"  policy     print the effective policy (built-in, then .factory.yml triage:) as JSON\n"
	"\n"
	"A model (FACTORY_LLM_*) is asked about ambiguous issues when one is configured; it may raise\n"
	"a priority, never lower it. Issues a person gave a priority:: label are left as they are.",
	options,
};

/* The run's own settings under triage: (read by the job, not the policy). */
static const char *const job_keys[] = {"skip_labels", "no_llm", NULL};

/* The policy: built-in, then the project's .factory.yml triage: section
 * (less the run's own settings, job_keys). */
static int load_policy(triage_policy **out, job_ctx *ctx)
{
	const cJSON *over = fconfig_yaml_path(ctx->cfg, "triage");
	const char *file = fconfig_get_str(ctx->cfg, "config", ".factory.yml");
	cJSON *copy = NULL;
	size_t i;
	int error;

	if (cJSON_IsObject(over)) {
		if (!(copy = cJSON_Duplicate(over, 1)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		for (i = 0; job_keys[i]; i++)
			cJSON_DeleteItemFromObjectCaseSensitive(copy, job_keys[i]);
		over = copy;
	}
	error = triage_policy_new(out, over, file);
	cJSON_Delete(copy);
	return error;
}

/* The model, when configured and not turned off. Its settings (llm.*, with
 * the API key) come from `trusted`: the job's own settings, never a
 * project's .factory.yml in a group scope (scope_job.h, "Trust"). */
static int load_model(tri_model **out, job_ctx *ctx, job_ctx *trusted, const triage_policy *p)
{
	int no_llm = 0, error;

	*out = NULL;
	if ((error = fconfig_get_bool(&no_llm, ctx->cfg, "triage.no_llm", 0)) < 0)
		return error;
	if (no_llm || !triage_policy_llm_enabled(p))
		return 0;
	return tri_model_open(out, trusted, p);
}

/* classify: one issue on stdin, one decision on stdout. */
static int classify(job_ctx *ctx)
{
	triage_policy *policy = NULL;
	tri_model *model = NULL;
	triage_decision d;
	cJSON *issue = NULL, *out = NULL;
	char chunk[65536], *text = NULL;
	fbuf in;
	size_t n;
	int error = -1;

	triage_decision_init(&d);
	fbuf_init(&in, CLASSIFY_MAX);
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		if ((error = fbuf_put(&in, chunk, n)) < 0) {
			if (error == FACTORY_ETOOBIG)
				ferror_set(FACTORY_EINVALID, "classify: the issue JSON on standard input is over %zu bytes",
					   CLASSIFY_MAX);
			goto cleanup;
		}
	}
	if (ferror(stdin)) {
		error = ferror_set(FACTORY_ERR, "classify: cannot read standard input");
		goto cleanup;
	}
	if (!in.len) {
		error = ferror_set(FACTORY_ECONFIG, "classify: no issue on standard input (expected GitLab's issue JSON)");
		goto cleanup;
	}
	issue = cJSON_ParseWithLength(in.ptr, in.len);
	if (!cJSON_IsObject(issue)) {
		error = ferror_set(FACTORY_EINVALID, "classify: standard input is not a JSON object (expected GitLab's issue JSON)");
		goto cleanup;
	}
	if ((error = load_policy(&policy, ctx)) < 0 || (error = load_model(&model, ctx, ctx, policy)) < 0)
		goto cleanup;
	if ((error = tri_decide(&d, model, policy, issue)) < 0 || (error = triage_decision_json(&out, &d)) < 0)
		goto cleanup;
	if (!(text = cJSON_PrintUnformatted(out))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (printf("%s\n", text) < 0 || fflush(stdout) != 0) {
		error = ferror_set(FACTORY_ERR, "classify: cannot write standard output");
		goto cleanup;
	}
	error = 0;
cleanup:
	free(text);
	cJSON_Delete(out);
	cJSON_Delete(issue);
	triage_decision_release(&d);
	tri_model_free(model);
	triage_policy_free(policy);
	fbuf_release(&in);
	return error;
}

static int print_policy(job_ctx *ctx)
{
	triage_policy *policy = NULL;
	char *text = NULL;
	int error;

	if ((error = load_policy(&policy, ctx)) < 0)
		return error;
	if (!(text = cJSON_Print(triage_policy_json(policy))))
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
	else
		printf("%s\n", text);
	free(text);
	triage_policy_free(policy);
	return error;
}

/* The scheduled run over one project: one list pass, a look at the issues
 * that changed, the writes, the Up Next list and its order, the report.
 * `trusted` holds the model's settings (the job's own; see load_model). */
static int run_project(job_ctx *ctx, job_ctx *trusted)
{
	tri_run r;
	long asked = 0, changed = 0, ignored = 0, wip;
	int error;

	memset(&r, 0, sizeof(r));
	r.job = ctx;
	if ((error = load_policy(&r.policy, ctx)) < 0 || (error = load_model(&r.model, ctx, trusted, r.policy)) < 0)
		goto cleanup;
	if ((error = fconfig_get_long(&wip, ctx->cfg, "triage.wip_limit", triage_policy_wip_limit(r.policy), 1, 100)) < 0)
		goto cleanup;
	r.wip = wip;
	/* the labels that leave an issue out, read once (not per issue) */
	r.skip_labels = fconfig_get_str(ctx->cfg, "triage.skip_labels", "factory::ledger");
	if (!(r.decisions = cJSON_AddArrayToObject(report_data(ctx->rep), "decisions"))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	log_info("policy: %zu rules (%s), Up Next holds %ld, model %s", rules_count(triage_policy_rules(r.policy)),
		 rules_jit(triage_policy_rules(r.policy)) ? "JIT" : "interpreter", r.wip,
		 r.model ? "configured for ambiguous issues" : "not configured: rules alone decide");

	if ((error = tri_scan(&r)) < 0)         /* one list pass: decide, or mark for a look */
		goto cleanup;
	if ((error = tri_look(&r)) < 0)         /* our last note, for issues the rules now see otherwise */
		goto cleanup;
	if ((error = tri_choose_up_next(&r)) < 0)
		goto cleanup;
	if ((error = tri_write(&r)) < 0)        /* one PUT per changed issue, one note per decision */
		goto cleanup;
	if ((error = tri_reorder(&r)) < 0)      /* only when the order is wrong */
		goto cleanup;
	if ((error = tri_report_markdown(&r)) < 0)
		goto cleanup;
	if (r.model) {
		tri_model_counters(r.model, &asked, &changed, &ignored);
		report_counter_set(ctx->rep, "model_asked", asked);
		report_counter_set(ctx->rep, "model_changed", changed);
		report_counter_set(ctx->rep, "model_ignored", ignored);
	}
	if (r.failures) {
		error = ferror_set(FACTORY_ERR, "%ld write%s failed (see the log and the report)", r.failures,
				   r.failures == 1 ? "" : "s");
		goto cleanup;
	}
	error = 0;
cleanup:
	/* the API budget: calls per issue triaged (job.h) */
	report_counter_set(ctx->rep, "issues_handled", report_counter_get(ctx->rep, "triaged"));
	if (error >= 0 || report_action_count(ctx->rep) || report_counter_get(ctx->rep, "issues_seen")) {
		int changes = report_action_count(ctx->rep);
		report_summary(ctx->rep, "%s%ld open issues read, %ld triaged, %d change%s%s",
			       ctx->dry_run ? "dry run: " : "", report_counter_get(ctx->rep, "issues_seen"),
			       report_counter_get(ctx->rep, "triaged"), changes, changes == 1 ? "" : "s",
			       changes ? (ctx->dry_run ? " that would be made" : " made") : ": no write made");
	}
	tri_run_release(&r);
	return error;
}

static int group_project(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg)
{
	(void)p;
	(void)arg;
	return run_project(pctx, group);
}

/* The scheduled run: the job's project, or every project of a group. */
static int run(job_ctx *ctx)
{
	char *group = NULL;
	int error;

	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0)
		return error;
	if (!group)
		return run_project(ctx, ctx);
	error = scope_job_run(ctx, group, group_project, NULL);
	report_summary(ctx->rep, "%sgroup %s: %ld of %ld projects triaged%s, %ld open issues read, %ld triaged, %d change%s%s",
		       ctx->dry_run ? "dry run: " : "", group,
		       report_counter_get(ctx->rep, "projects_taking_part") - report_counter_get(ctx->rep, "projects_failed"),
		       report_counter_get(ctx->rep, "projects"),
		       report_counter_get(ctx->rep, "projects_failed") ? " (some failed)" : "",
		       report_counter_get(ctx->rep, "issues_seen"), report_counter_get(ctx->rep, "triaged"),
		       report_action_count(ctx->rep), report_action_count(ctx->rep) == 1 ? "" : "s",
		       report_action_count(ctx->rep) ? (ctx->dry_run ? " that would be made" : " made") : ": no write made");
	free(group);
	return error;
}

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc = job_start(&ctx, &spec, argc, argv);

	if (rc != JOB_CONTINUE)
		return rc;
	if (ctx.nargs > 1 || (ctx.nargs == 1 && strcmp(ctx.args[0], "classify") != 0 && strcmp(ctx.args[0], "policy") != 0))
		return job_finish(&ctx, ferror_set(FACTORY_ECONFIG, "unknown command '%s' (see --help)", ctx.args[ctx.nargs - 1]));
	if (ctx.nargs == 1) {
		/* offline commands: no GitLab, no report */
		report_free(ctx.rep);
		ctx.rep = NULL;
		rc = !strcmp(ctx.args[0], "classify") ? classify(&ctx) : print_policy(&ctx);
		return job_finish(&ctx, rc);
	}
	if ((rc = job_connect(&ctx)) == 0)
		rc = run(&ctx);
	return job_finish(&ctx, rc);
}
