/*
 * factory-implement - hand an issue to the coding agent and turn its work
 * into a draft merge request.
 *
 *   factory-implement agent --repo DIR --task FILE [--transcript FILE]
 *       runs only the agent on a local checkout with the configured model
 *       (FACTORY_LLM_*), or the external agent (FACTORY_AGENT=command), with
 *       no GitLab at all; prints the diff it left in the work tree, the usage
 *       and where the transcript is. For trying a model or a prompt.
 *
 *   factory-implement [--dry-run]
 *       the main mode (jobs/implement/run.c and its neighbours, see
 *       implement.h): heal what is In Progress and in Validation, then take
 *       the first Up Next issue to a merge request.
 *
 *   factory-implement --issue N   (or FACTORY_ISSUE=N, FACTORY_IMPLEMENT_ISSUE=N)
 *       a person asks for issue N: phase 1 heals as usual, then phase 2
 *       takes N instead of the top of Up Next, through the same claim as
 *       any take (take.c), so it never collides with a parallel job. N
 *       must be open, in Open or Up Next: closed, missing, one of the
 *       Factory's own issues (triage.skip_labels, default factory::ledger),
 *       In Progress (a live claim: the message names its job), in
 *       Validation or needs info, or over a work-in-progress limit
 *       (implement.wip_limit, implement.group_wip_limit are respected), it
 *       exits 1 with the reason and writes nothing. A bad value (abc, 0,
 *       -3), N alone in a group scope (write path/to/project#N there), the
 *       setting in the settings file, FACTORY_ISSUE and
 *       FACTORY_IMPLEMENT_ISSUE disagreeing, or implement.take=false: exit
 *       2 before anything is read. With parallel jobs only job 1 takes it.
 *       The value is N, #N or path/to/project#N; the flag wins over the
 *       variables.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "agent.h"
#include "error.h"
#include "git.h"
#include "implement.h"
#include "job.h"
#include "llm.h"
#include "log.h"
#include "sandbox.h"

#define TASK_FILE_MAX ((size_t)1 << 20)
#define DIFF_MAX ((size_t)16 << 20)
#define MAX_LIST 64

static const job_option options[] = {
	{"scope", "scope", 1, "SCOPE    project (default) or group:PATH: take and heal issues of every project of a group"},
	{"issue", "implement.issue", 1, "N        take issue N (or path/to/project#N) instead of the top of Up Next "
					"(also FACTORY_ISSUE)"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"implement",
	"Heal what is In Progress and in Validation, then take the first Up Next issue to a merge request.",
	"commands:\n"
	"  (none)     the scheduled run: phase 1 heals claimed issues (job gone or over its lease: retry\n"
	"             with the diagnosis, ask for information, or back to Up Next; Validation: merge when\n"
	"             the pipeline passed, hand back when it failed, close when merged, rebase on\n"
	"             conflicts); phase 2 claims the first Up Next issue, runs the agent, commits, pushes\n"
	"             and opens a merge request (settings implement.* and git.*: see jobs/implement/run.c)\n"
	"  --issue N  (or FACTORY_ISSUE=N) phase 2 takes issue N, in Open or Up Next, instead of the top of\n"
	"             Up Next, through the same claim; exit 1 with the reason, nothing written, when N is\n"
	"             missing, closed, the Factory's own, claimed (In Progress), in Validation, needs info\n"
	"             or over implement.wip_limit; exit 2 for a bad value. In a group scope write\n"
	"             path/to/project#N (docs/implement.md)\n"
	"  agent --repo DIR --task FILE [--transcript FILE]\n"
	"             run only the coding agent on the checkout DIR with the task in FILE, no GitLab;\n"
	"             print the diff it made, the usage and where the transcript is.\n"
	"             Exit 0 when the agent called finish, 1 when it stopped short (a budget, no\n"
	"             finish, a refusal), 3 when the model's service stayed unavailable.\n\n"
	"settings: FACTORY_LLM_PROVIDER (anthropic|openai), FACTORY_LLM_BASE_URL, FACTORY_LLM_MODEL,\n"
	"  FACTORY_LLM_API_KEY or FACTORY_LLM_API_KEY_FILE; budgets FACTORY_AGENT_MAX_TURNS,\n"
	"  _MAX_INPUT_TOKENS, _MAX_OUTPUT_TOKENS, _MAX_WALL_S, _MAX_COST_USD; FACTORY_AGENT=command with\n"
	"  FACTORY_AGENT_CMD for an external agent CLI. Run as root, commands run as uid 65534\n"
	"  (FACTORY_AGENT_SANDBOX_UID) and the work tree outside .git/ is handed to that user.\n"
	"  Parallel jobs (parallel: N) read CI_NODE_INDEX/CI_NODE_TOTAL; implement.wip_limit and\n"
	"  implement.group_wip_limit cap the issues In Progress per project and per group.",
	options,
};

/* Split a comma-separated list into `out` (pointers into `buf`). */
static size_t split_list(const char **out, size_t max, char *buf)
{
	size_t n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(buf, ", ", &save); tok && n + 1 < max; tok = strtok_r(NULL, ", ", &save))
		out[n++] = tok;
	out[n] = NULL;
	return n;
}

static int read_task(char **out, size_t *len, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;

	*out = NULL;
	if (!f)
		return ferror_set(FACTORY_ECONFIG, "cannot read the task file %s: %s", path, strerror(errno));
	if (!(buf = malloc(TASK_FILE_MAX + 2))) {
		fclose(f);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	n = fread(buf, 1, TASK_FILE_MAX + 1, f);
	fclose(f);
	if (n > TASK_FILE_MAX) {
		free(buf);
		return ferror_set(FACTORY_ECONFIG, "the task file %s is larger than %zu bytes", path, TASK_FILE_MAX);
	}
	buf[n] = '\0';
	if (!n || strspn(buf, " \t\r\n") == n) {
		free(buf);
		return ferror_set(FACTORY_ECONFIG, "the task file %s is empty", path);
	}
	*out = buf;
	*len = n;
	return 0;
}

/* --repo, --task, --transcript after the `agent` word. */
static int parse_agent_args(job_ctx *ctx)
{
	static const struct option longopts[] = {
		{"repo", required_argument, NULL, 'r'},
		{"task", required_argument, NULL, 't'},
		{"transcript", required_argument, NULL, 'T'},
		{NULL, 0, NULL, 0},
	};
	const char *key;
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(ctx->nargs, ctx->args, "+", longopts, NULL)) != -1) {
		if (c == 'r')
			key = "agent.repo";
		else if (c == 't')
			key = "agent.task";
		else if (c == 'T')
			key = "agent.transcript";
		else
			return ferror_set(FACTORY_ECONFIG, "agent: unknown or incomplete option '%s' (see --help)",
					  ctx->args[optind - 1]);
		if (fconfig_set(ctx->cfg, CONFIG_FLAG, key, optarg) < 0)
			return FACTORY_ENOMEM;
	}
	if (optind < ctx->nargs)
		return ferror_set(FACTORY_ECONFIG, "agent: unexpected argument '%s' (see --help)", ctx->args[optind]);
	return 0;
}

static void print_outcome(FILE *f, const agent_result *r, const char *model, const char *transcript, size_t changed)
{
	fprintf(f, "--- agent\n");
	fprintf(f, "outcome: %s (%s)\n", r->outcome ? r->outcome : "error", r->reason ? r->reason : "");
	if (r->summary && *r->summary)
		fprintf(f, "summary: %s\n", r->summary);
	if (r->confidence)
		fprintf(f, "tested: %s, confidence: %s\n", r->tested ? "yes" : "no", r->confidence);
	fprintf(f, "files changed: %zu\n", changed);
	fprintf(f, "turns: %ld, tool calls: %ld (%ld errors)\n", r->turns, r->tool_calls, r->tool_errors);
	fprintf(f, "tokens: input %ld, output %ld, cache write %ld, cache read %ld\n", r->usage.input, r->usage.output,
		r->usage.cache_write, r->usage.cache_read);
	if (r->cost_known)
		fprintf(f, "cost: $%.4f (%s)\n", r->cost_usd, model ? model : "?");
	else
		fprintf(f, "cost: unknown (no price for %s)\n", model ? model : "the external agent");
	fprintf(f, "time: %.1f s (model %.1f s, tools %.1f s, loop %.3f ms)\n", (double)r->wall_ms / 1000,
		(double)r->model_us / 1e6, (double)r->tool_us / 1e6, (double)r->overhead_us / 1000);
	fprintf(f, "transcript: %s\n", transcript ? transcript : "(none)");
}

/* The peak resident set size of this process since exec, in KiB (0 if unknown). */
static long peak_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6)) {
			kb = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

static void report_result(job_ctx *ctx, const agent_result *r, const char *model, const char *transcript,
			  size_t changed)
{
	cJSON *a = cJSON_AddObjectToObject(report_data(ctx->rep), "agent"), *u;
	struct rusage ru;
	long peak;

	report_counter_set(ctx->rep, "agent_turns", r->turns);
	report_counter_set(ctx->rep, "agent_tool_calls", r->tool_calls);
	report_counter_set(ctx->rep, "agent_tool_errors", r->tool_errors);
	report_counter_set(ctx->rep, "llm_input_tokens", r->usage.input);
	report_counter_set(ctx->rep, "llm_output_tokens", r->usage.output);
	report_counter_set(ctx->rep, "llm_cache_write_tokens", r->usage.cache_write);
	report_counter_set(ctx->rep, "llm_cache_read_tokens", r->usage.cache_read);
	report_counter_set(ctx->rep, "llm_requests", r->llm_requests);
	report_counter_set(ctx->rep, "llm_retries", r->llm_retries);
	report_counter_set(ctx->rep, "llm_compactions", r->llm_compactions);
	report_summary(ctx->rep, "agent %s: %s; %zu file%s changed", r->outcome ? r->outcome : "error",
		       r->reason ? r->reason : "", changed, changed == 1 ? "" : "s");
	if (!a)
		return;
	cJSON_AddStringToObject(a, "outcome", r->outcome ? r->outcome : "error");
	cJSON_AddStringToObject(a, "reason", r->reason ? r->reason : "");
	cJSON_AddBoolToObject(a, "finished", r->finished);
	if (r->summary)
		cJSON_AddStringToObject(a, "summary", r->summary);
	if (r->confidence) {
		cJSON_AddBoolToObject(a, "tested", r->tested);
		cJSON_AddStringToObject(a, "confidence", r->confidence);
	}
	if (model)
		cJSON_AddStringToObject(a, "model", model);
	cJSON_AddNumberToObject(a, "files_changed", (double)changed);
	cJSON_AddNumberToObject(a, "turns", (double)r->turns);
	cJSON_AddNumberToObject(a, "tool_calls", (double)r->tool_calls);
	cJSON_AddNumberToObject(a, "tool_errors", (double)r->tool_errors);
	if ((u = cJSON_AddObjectToObject(a, "usage"))) {
		cJSON_AddNumberToObject(u, "input_tokens", (double)r->usage.input);
		cJSON_AddNumberToObject(u, "output_tokens", (double)r->usage.output);
		cJSON_AddNumberToObject(u, "cache_write_tokens", (double)r->usage.cache_write);
		cJSON_AddNumberToObject(u, "cache_read_tokens", (double)r->usage.cache_read);
	}
	if (r->cost_known)
		cJSON_AddNumberToObject(a, "cost_usd", r->cost_usd);
	cJSON_AddNumberToObject(a, "wall_ms", (double)r->wall_ms);
	cJSON_AddNumberToObject(a, "model_us", (double)r->model_us);
	cJSON_AddNumberToObject(a, "tool_us", (double)r->tool_us);
	cJSON_AddNumberToObject(a, "loop_overhead_us", (double)r->overhead_us);
	cJSON_AddNumberToObject(a, "loop_overhead_max_us", (double)r->overhead_max_us);
	/* VmHWM is this program's own peak; ru_maxrss also counts the parent
	 * that forked us, from before exec. */
	if ((peak = peak_rss_kb()) > 0 || (getrusage(RUSAGE_SELF, &ru) == 0 && (peak = ru.ru_maxrss) > 0))
		cJSON_AddNumberToObject(a, "peak_rss_kb", (double)peak);
	if (transcript)
		cJSON_AddStringToObject(a, "transcript", transcript);
	report_markdown(ctx->rep, "## Agent\n\n- outcome: %s (%s)\n- turns: %ld, tool calls: %ld (%ld errors)\n"
				  "- tokens: input %ld, output %ld, cache write %ld, cache read %ld\n- transcript: %s\n",
			r->outcome ? r->outcome : "error", r->reason ? r->reason : "", r->turns, r->tool_calls,
			r->tool_errors, r->usage.input, r->usage.output, r->usage.cache_write, r->usage.cache_read,
			transcript ? transcript : "(none)");
}

/* The transcript's path: the flag, else agent-transcript.jsonl in the report directory. */
static int transcript_path(char **out, job_ctx *ctx)
{
	const char *flag = fconfig_get(ctx->cfg, "agent.transcript", NULL);
	char dir[PATH_MAX];

	*out = NULL;
	if (flag && *flag) {
		if (!(*out = strdup(flag)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		return 0;
	}
	if (mkdir(ctx->report_dir, 0700) < 0 && errno != EEXIST)
		return ferror_set(FACTORY_ERR, "cannot make the report directory %s: %s", ctx->report_dir, strerror(errno));
	if (!realpath(ctx->report_dir, dir))
		return ferror_set(FACTORY_ERR, "report directory %s: %s", ctx->report_dir, strerror(errno));
	if (asprintf(out, "%s/agent-transcript.jsonl", dir) < 0) {
		*out = NULL;
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

/* Is `name` suspect only for its prefix (FACTORY_*, GITLAB_*), or a file name? */
static int prefix_only(const char *name)
{
	static const char *const words[] = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY",
					    "APIKEY", "PRIVATE_KEY", NULL};
	size_t i, n = strlen(name);

	if (n > 5 && !strcmp(name + n - 5, "_FILE"))
		return 1;
	for (i = 0; words[i]; i++)
		if (strstr(name, words[i]))
			return 0;
	return !(n > 4 && !strcmp(name + n - 4, "_KEY"));
}

/* Every secret-looking variable of the job's own environment is masked in
 * whatever it writes (transcript, report, log), should a file or the model
 * ever repeat one. */
static void register_env_secrets(void)
{
	extern char **environ;
	char name[256];
	char **e;

	for (e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		size_t n = eq ? (size_t)(eq - *e) : 0;
		if (!n || n >= sizeof(name) || strlen(eq + 1) < 8)
			continue;
		memcpy(name, *e, n);
		name[n] = '\0';
		/* Secret by its name's words, not by prefix alone: FACTORY_LLM_MODEL
		 * or a *_FILE path is no secret, and masking it would hide it. */
		if (sandbox_env_secretish(name) && !prefix_only(name))
			log_add_secret(eq + 1);
	}
}

static int run_agent(job_ctx *ctx)
{
	llm_options lo;
	agent_options ao;
	agent_result res;
	llm *l = NULL;
	sandbox *sb = NULL;
	fgit_repo *repo = NULL;
	fbuf diff;
	char *key_from_file = NULL, *task = NULL, *transcript = NULL;
	char pass_buf[4096];
	const char *pass[MAX_LIST];
	const char *repo_dir, *task_file, *kind, *model = NULL;
	size_t task_len = 0, changed = 0;
	int external, scrubbed = 0, cut = 0, error;

	agent_result_init(&res);
	fbuf_init(&diff, DIFF_MAX);
	if ((error = parse_agent_args(ctx)) < 0)
		goto cleanup;
	if ((error = fconfig_require(&repo_dir, ctx->cfg, "agent.repo")) < 0 ||
	    (error = fconfig_require(&task_file, ctx->cfg, "agent.task")) < 0)
		goto cleanup;
	kind = fconfig_get_str(ctx->cfg, "agent", "builtin");
	if (strcmp(kind, "builtin") != 0 && strcmp(kind, "command") != 0) {
		error = ferror_set(FACTORY_ECONFIG, "bad setting agent=%s (from FACTORY_AGENT): expected builtin or command",
				   kind);
		goto cleanup;
	}
	external = !strcmp(kind, "command");
	if ((error = read_task(&task, &task_len, task_file)) < 0)
		goto cleanup;
	if (!external) {
		if ((error = llm_options_from_config(&lo, &key_from_file, ctx->cfg)) < 0)
			goto cleanup;
		model = lo.model;
	}
	/* After the model's key, which must never lose its place to these. */
	register_env_secrets();
	if ((error = agent_options_from_config(&ao, ctx->cfg, external ? NULL : model)) < 0)
		goto cleanup;
	if ((error = transcript_path(&transcript, ctx)) < 0)
		goto cleanup;
	ao.transcript = transcript;

	if ((error = fgit_open(&repo, repo_dir)) < 0) {
		if (error == FACTORY_ENOTFOUND || error == FACTORY_EINVALID)
			error = ferror_set(FACTORY_ECONFIG, "--repo %s: %s", repo_dir, ferror_last());
		goto cleanup;
	}
	if ((error = fgit_scrub_credentials(repo, &scrubbed)) < 0)
		goto cleanup;
	if (scrubbed)
		log_warn("removed %d credential%s from %s.git/config: commands could have read %s", scrubbed,
			 scrubbed == 1 ? "" : "s", fgit_workdir(repo), scrubbed == 1 ? "it" : "them");
	if ((error = sandbox_new_from_config(&sb, ctx->cfg, fgit_workdir(repo), external)) < 0)
		goto cleanup;
	log_info("agent: %s on %s; commands run as %s", external ? "external command" : model, sandbox_root(sb),
		 sandbox_describe(sb));

	if (external) {
		const char *v = fconfig_get(ctx->cfg, "agent.external_env", NULL);
		pass[0] = NULL;
		if (v && *v) {
			snprintf(pass_buf, sizeof(pass_buf), "%s", v);
			split_list(pass, MAX_LIST, pass_buf);
		}
		error = agent_run_external(&res, &ao, sb, fconfig_get(ctx->cfg, "agent_cmd", NULL), pass, task, task_len);
	} else {
		if ((error = llm_new(&l, &lo)) < 0)
			goto cleanup;
		error = agent_run(&res, &ao, l, sb, repo, task, task_len);
	}
	/* Whatever happened, show what is in the tree now. */
	if (fgit_diff_workdir(&diff, repo, &cut) == 0) {
		fwrite(diff.ptr ? diff.ptr : "", 1, diff.len, stdout);
		fgit_changed_count(&changed, repo);
	}
	print_outcome(stdout, &res, model, transcript, changed);
	fflush(stdout);
	report_result(ctx, &res, model, transcript, changed);
	if (error < 0)
		goto cleanup;
	if (!res.finished)
		error = ferror_set(FACTORY_ERR, "the agent stopped before finishing: %s", res.reason ? res.reason : "unknown");
cleanup:
	agent_result_release(&res);
	llm_free(l);
	sandbox_free(sb);
	fgit_free(repo);
	fbuf_release(&diff);
	free(task);
	free(transcript);
	if (key_from_file) {
		explicit_bzero(key_from_file, strlen(key_from_file));
		free(key_from_file);
	}
	return error;
}

/* A request for one issue (implement.issue, FACTORY_ISSUE) checked before
 * anything is read or written: a bad one exits 2 at once. */
static int check_request(job_ctx *ctx)
{
	impl_request q;
	char *group = NULL;
	int take = 1, error;

	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0 ||
	    (error = impl_request_read(&q, ctx->cfg, group != NULL)) < 0)
		goto cleanup;
	if (q.iid && (error = fconfig_get_bool(&take, ctx->cfg, "implement.take", 1)) == 0 && !take)
		error = ferror_set(FACTORY_ECONFIG, "%s=%s asks for an issue to be taken, but implement.take is false",
				   q.source, q.value);
cleanup:
	free(group);
	return error;
}

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc;

	/* Before anything reads a secret: no /proc/<pid>/environ or mem for commands, no core file. */
	if (sandbox_protect_self() < 0) {
		fprintf(stderr, "factory-implement: %s\n", ferror_last());
		return EXIT_FAILED;
	}
	rc = job_start(&ctx, &spec, argc, argv);
	if (rc != JOB_CONTINUE)
		return rc;
	if (ctx.nargs < 1) {
		if ((rc = check_request(&ctx)) < 0)
			return job_finish(&ctx, rc);
		return job_finish(&ctx, impl_main(&ctx));
	}
	if (strcmp(ctx.args[0], "agent") != 0) {
		rc = ferror_set(FACTORY_ECONFIG, "unknown command '%s': the commands are `agent`, or none (see --help)",
				ctx.args[0]);
		return job_finish(&ctx, rc);
	}
	return job_finish(&ctx, run_agent(&ctx));
}
