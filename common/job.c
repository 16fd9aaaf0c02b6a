/* job.c - the shared start and finish of every job binary. */
#include "job.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "version.h"

#define MAX_OPTIONS 64
#define TOKEN_FILE_MAX 4096

/* Common flags: index in this table is also getopt's val - 256. */
static const job_option common_options[] = {
	{"dry-run", "dry_run", 0, "print each write it would make, make none"},
	{"gitlab-url", "gitlab_url", 1, "URL      GitLab URL or API root (default $CI_API_V4_URL)"},
	{"project", "project", 1, "ID|PATH  project (default $CI_PROJECT_ID)"},
	{"token-file", "token_file", 1, "FILE     file holding the GitLab token (default $FACTORY_GITLAB_TOKEN)"},
	{"config", "config", 1, "FILE     settings file (default .factory.yml)"},
	{"report-dir", "report_dir", 1, "DIR      where report.md/report.json go (default factory-report)"},
	{"log-level", "log_level", 1, "LEVEL    debug, info, warn or error"},
	{NULL, NULL, 0, NULL},
};

static void print_options(FILE *f, const job_option *opts)
{
	const job_option *o;

	for (o = opts; o && o->flag; o++) {
		const char *h = o->help ? o->help : "";
		if (o->has_arg) {
			/* help starts with "VALUE  text" */
			fprintf(f, "  --%s %s\n", o->flag, h);
		} else {
			fprintf(f, "  --%-22s %s\n", o->flag, h);
		}
	}
}

static void usage(FILE *f, const job_ctx *ctx)
{
	fprintf(f, "usage: %s [options]%s\n\n%s\n\n", ctx->program, ctx->spec->usage ? " [command] [args]" : "",
		ctx->spec->summary);
	if (ctx->spec->usage)
		fprintf(f, "%s\n\n", ctx->spec->usage);
	fprintf(f, "options:\n");
	print_options(f, ctx->spec->options);
	print_options(f, common_options);
	fprintf(f, "  --help                   this text\n  --version                the version\n\n"
		   "Every option can also be set as FACTORY_<NAME> in the environment or in .factory.yml;\n"
		   "flags win over the environment, which wins over the file.\n"
		   "Exit codes: 0 done, 1 failed, 2 usage or configuration error, 3 GitLab unavailable.\n");
}

static int start(job_ctx *ctx, const job_spec *spec, int argc, char **argv)
{
	struct option longopts[MAX_OPTIONS + 3];
	const job_option *table[MAX_OPTIONS];
	size_t n = 0, i;
	const job_option *o;
	const char *cfgfile;
	fconfig_source src;
	int c, lvl;

	memset(ctx, 0, sizeof(*ctx));
	ctx->spec = spec;
	snprintf(ctx->program, sizeof(ctx->program), "factory-%s", spec->name);
	log_set_program(ctx->program);
	log_init_from_env();

	if (fconfig_new(&ctx->cfg) < 0) {
		fprintf(stderr, "%s: %s\n", ctx->program, ferror_last());
		return EXIT_FAILED;
	}
	for (o = spec->options; o && o->flag && n < MAX_OPTIONS; o++)
		table[n++] = o;
	for (o = common_options; o->flag && n < MAX_OPTIONS; o++)
		table[n++] = o;
	for (i = 0; i < n; i++) {
		longopts[i].name = table[i]->flag;
		longopts[i].has_arg = table[i]->has_arg ? required_argument : no_argument;
		longopts[i].flag = NULL;
		longopts[i].val = 256 + (int)i;
	}
	longopts[n] = (struct option){"help", no_argument, NULL, 'h'};
	longopts[n + 1] = (struct option){"version", no_argument, NULL, 'V'};
	longopts[n + 2] = (struct option){NULL, 0, NULL, 0};

	optind = 1;
	opterr = 0;
	/* "+" stops at the first positional argument (subcommands parse their own). */
	while ((c = getopt_long(argc, argv, "+hV", longopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout, ctx);
			return EXIT_DONE;
		}
		if (c == 'V') {
			printf("%s %s\n", ctx->program, FACTORY_VERSION);
			return EXIT_DONE;
		}
		if (c == '?' || c == ':') {
			fprintf(stderr, "%s: unknown or incomplete option '%s' (see --help)\n", ctx->program,
				argv[optind - 1]);
			return EXIT_USAGE;
		}
		i = (size_t)(c - 256);
		if (fconfig_set(ctx->cfg, CONFIG_FLAG, table[i]->key, table[i]->has_arg ? optarg : "true") < 0) {
			fprintf(stderr, "%s: %s\n", ctx->program, ferror_last());
			return EXIT_FAILED;
		}
	}
	ctx->args = argv + optind;
	ctx->nargs = argc - optind;

	/* The settings file: a file someone named must exist; the default name
	 * (.factory.yml, also what the CI component passes) may be absent. */
	cfgfile = fconfig_get(ctx->cfg, "config", &src);
	if (fconfig_load_yaml(ctx->cfg, cfgfile ? cfgfile : ".factory.yml",
			      cfgfile != NULL && strcmp(cfgfile, ".factory.yml") != 0) < 0) {
		fprintf(stderr, "%s: %s\n", ctx->program, ferror_last());
		return EXIT_USAGE;
	}
	if (fconfig_get(ctx->cfg, "log_level", NULL)) {
		lvl = log_level_parse(fconfig_get(ctx->cfg, "log_level", NULL));
		if (lvl < 0) {
			fprintf(stderr, "%s: bad setting log_level=%s: expected debug, info, warn or error\n",
				ctx->program, fconfig_get(ctx->cfg, "log_level", NULL));
			return EXIT_USAGE;
		}
		log_set_level((log_level)lvl);
	}
	if (fconfig_get_bool(&ctx->dry_run, ctx->cfg, "dry_run", 0) < 0) {
		fprintf(stderr, "%s: %s\n", ctx->program, ferror_last());
		return EXIT_USAGE;
	}
	ctx->report_dir = fconfig_get_str(ctx->cfg, "report_dir", "factory-report");
	ctx->default_branch = getenv("CI_DEFAULT_BRANCH");
	if (report_new(&ctx->rep, ctx->program, ctx->dry_run) < 0) {
		fprintf(stderr, "%s: %s\n", ctx->program, ferror_last());
		return EXIT_FAILED;
	}
	return JOB_CONTINUE;
}

int job_start(job_ctx *ctx, const job_spec *spec, int argc, char **argv)
{
	int rc = start(ctx, spec, argc, argv);

	/* --help, --version or a usage error: nothing follows, free what was made. */
	if (rc != JOB_CONTINUE) {
		report_free(ctx->rep);
		fconfig_free(ctx->cfg);
		ctx->rep = NULL;
		ctx->cfg = NULL;
	}
	return rc;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

int job_read_token(char **out, job_ctx *ctx)
{
	const char *file = fconfig_get(ctx->cfg, "token_file", NULL);
	const char *env;
	FILE *f = NULL;
	char *buf = NULL;
	size_t len;
	int error = FACTORY_ECONFIG;

	*out = NULL;
	if (file) {
		if (!(f = fopen(file, "r"))) {
			ferror_set(FACTORY_ECONFIG, "cannot read token file %s: %s", file, strerror(errno));
			goto cleanup;
		}
		if (!(buf = calloc(1, TOKEN_FILE_MAX + 1))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		len = fread(buf, 1, TOKEN_FILE_MAX, f);
		while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
			buf[--len] = '\0';
		if (!len) {
			ferror_set(FACTORY_ECONFIG, "token file %s is empty", file);
			goto cleanup;
		}
		if (strchr(buf, '\n')) {
			ferror_set(FACTORY_ECONFIG, "token file %s holds more than one line", file);
			goto cleanup;
		}
	} else if ((env = env_nonempty("FACTORY_GITLAB_TOKEN"))) {
		if (!(buf = strdup(env))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	} else {
		if (env_nonempty("CI_JOB_TOKEN"))
			ferror_set(FACTORY_ECONFIG,
				   "missing setting FACTORY_GITLAB_TOKEN: CI_JOB_TOKEN is set but cannot edit issues, "
				   "notes, branches or merge requests; store a project access token (scopes api, "
				   "write_repository) as a masked CI/CD variable FACTORY_GITLAB_TOKEN");
		else
			ferror_set(FACTORY_ECONFIG, "missing setting FACTORY_GITLAB_TOKEN (or --token-file FILE): "
						    "a project access token with scopes api and write_repository");
		goto cleanup;
	}
	log_add_secret(buf);
	*out = buf;
	buf = NULL;
	error = 0;
cleanup:
	if (f)
		fclose(f);
	if (buf) {
		explicit_bzero(buf, strlen(buf));
		free(buf);
	}
	return error;
}

/* The API root from a URL that may or may not end in /api/v4. */
static char *api_root(const char *url)
{
	size_t len = strlen(url);
	char *out;

	while (len && url[len - 1] == '/')
		len--;
	if (len >= 7 && !strncmp(url + len - 7, "/api/v4", 7))
		return strndup(url, len);
	out = malloc(len + 8);
	if (out) {
		memcpy(out, url, len);
		memcpy(out + len, "/api/v4", 8);
	}
	return out;
}

/* Whether the job has an option that sets `key`. */
static int has_option_key(const job_spec *spec, const char *key)
{
	const job_option *o;

	for (o = spec->options; o && o->flag; o++)
		if (o->key && !strcmp(o->key, key))
			return 1;
	return 0;
}

int job_connect(job_ctx *ctx)
{
	gitlab_options opts;
	const char *url, *project, *scope;
	char *token = NULL;
	long v;
	int error, group_scope;

	/* The first that is set: the setting, then what GitLab CI sets. */
	url = fconfig_get(ctx->cfg, "gitlab_url", NULL);
	if (!url || !*url)
		url = env_nonempty("CI_API_V4_URL");
	if (!url)
		url = env_nonempty("CI_SERVER_URL");
	if (!url) {
		error = ferror_set(FACTORY_ECONFIG, "missing setting gitlab_url: set CI_API_V4_URL (inside GitLab CI "
						    "it is set for you), FACTORY_GITLAB_URL or --gitlab-url");
		goto cleanup;
	}
	if (!(ctx->api_url = api_root(url))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (strncmp(ctx->api_url, "http://", 7) != 0 && strncmp(ctx->api_url, "https://", 8) != 0) {
		error = ferror_set(FACTORY_ECONFIG, "bad setting gitlab_url=%s: expected an http:// or https:// URL",
				   ctx->api_url);
		goto cleanup;
	}
	/* A job that walks a group says so with a "scope" option; any other
	 * refuses a group scope rather than quietly working on one project. */
	scope = fconfig_get(ctx->cfg, "scope", NULL);
	group_scope = scope && *scope && strcmp(scope, "project") != 0;
	if (group_scope && !has_option_key(ctx->spec, "scope")) {
		error = ferror_set(FACTORY_ECONFIG, "bad setting scope=%.200s: %s works on one project (it has no "
						    "group scope yet); unset FACTORY_SCOPE for it",
				   scope, ctx->program);
		goto cleanup;
	}
	project = fconfig_get(ctx->cfg, "project", NULL);
	if (!project || !*project)
		project = env_nonempty("CI_PROJECT_ID");
	if (!project)
		project = env_nonempty("CI_PROJECT_PATH");
	if (project) {
		if (!(ctx->project = strdup(project))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	} else if (!group_scope) {
		/* (a group scope needs no project of its own; a bad scope is the
		 * job's to report, common/scope.h) */
		error = ferror_set(FACTORY_ECONFIG, "missing setting project: set CI_PROJECT_ID (inside GitLab CI it "
						    "is set for you), FACTORY_PROJECT or --project");
		goto cleanup;
	}
	if ((error = job_read_token(&token, ctx)) < 0)
		goto cleanup;

	gitlab_options_init(&opts);
	opts.api_url = ctx->api_url;
	opts.project = ctx->project;
	opts.token = token;
	opts.dry_run = ctx->dry_run;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.timeout_ms", opts.http.timeout_ms, 100, 3600000)) < 0)
		goto cleanup;
	opts.http.timeout_ms = v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.connect_timeout_ms", opts.http.connect_timeout_ms, 100,
				      600000)) < 0)
		goto cleanup;
	opts.http.connect_timeout_ms = v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.max_retries", opts.http.max_retries, 0, 100)) < 0)
		goto cleanup;
	opts.http.max_retries = (int)v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.retry_budget_ms", opts.http.retry_budget_ms, 0,
				      3600000)) < 0)
		goto cleanup;
	opts.http.retry_budget_ms = v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.backoff_ms", opts.http.backoff_base_ms, 1, 600000)) < 0)
		goto cleanup;
	opts.http.backoff_base_ms = v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.pace_below_pct", opts.http.pace_below_pct, 0, 100)) < 0)
		goto cleanup;
	opts.http.pace_below_pct = (int)v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "http.pace_reserve", opts.http.pace_reserve, -1, 1000000)) < 0)
		goto cleanup;
	opts.http.pace_reserve = v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "gitlab.notes_per_minute", 0, 0, 100000)) < 0)
		goto cleanup;
	opts.notes_per_minute = (int)v;
	if ((error = fconfig_get_long(&v, ctx->cfg, "gitlab.issues_per_minute", 0, 0, 100000)) < 0)
		goto cleanup;
	opts.issues_per_minute = (int)v;
	error = gitlab_new(&ctx->gl, &opts);
cleanup:
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return error;
}

/*
 * The API budget in the report: counters api_throttled and api_paced_ms,
 * and, when the job set "issues_handled", api_calls_per_issue (rounded)
 * and data.api_budget with the exact figure.
 */
static void report_api_budget(job_ctx *ctx, const gitlab_stats *st)
{
	long handled = report_counter_get(ctx->rep, "issues_handled");
	cJSON *b;

	report_counter_set(ctx->rep, "api_throttled", st->throttled);
	report_counter_set(ctx->rep, "api_paced_ms", st->paced_ms);
	if (handled > 0)
		report_counter_set(ctx->rep, "api_calls_per_issue", (st->requests + handled / 2) / handled);
	b = cJSON_CreateObject();
	if (!b || !cJSON_AddNumberToObject(b, "requests", (double)st->requests) ||
	    !cJSON_AddNumberToObject(b, "issues_handled", (double)(handled > 0 ? handled : 0)) ||
	    !(handled > 0 ? cJSON_AddNumberToObject(b, "calls_per_issue", (double)st->requests / (double)handled)
			  : cJSON_AddNullToObject(b, "calls_per_issue")) ||
	    !cJSON_AddNumberToObject(b, "throttled", (double)st->throttled) ||
	    !cJSON_AddNumberToObject(b, "paced", (double)st->paced) ||
	    !cJSON_AddNumberToObject(b, "paced_ms", (double)st->paced_ms) ||
	    !cJSON_AddNumberToObject(b, "ratelimit_remaining", (double)st->ratelimit_remaining) ||
	    !cJSON_AddNumberToObject(b, "ratelimit_limit", (double)st->ratelimit_limit) ||
	    !cJSON_AddItemToObject(report_data(ctx->rep), "api_budget", b)) {
		cJSON_Delete(b);
		log_warn("report: api_budget dropped: out of memory");
	}
}

int job_finish(job_ctx *ctx, int rc)
{
	gitlab_stats st;
	int code = rc > 0 ? EXIT_FAILED : ferror_exit_code(rc);

	if (rc > 0)
		log_error("internal error: job step returned %d", rc);
	else if (rc < 0)
		log_error("%s", ferror_last());
	if (ctx->rep) {
		if (ctx->gl) {
			gitlab_get_stats(&st, ctx->gl);
			report_counter_set(ctx->rep, "api_requests", st.requests);
			report_counter_set(ctx->rep, "api_reads", st.reads);
			report_counter_set(ctx->rep, "api_writes", st.writes);
			report_counter_set(ctx->rep, "api_retries", st.retries);
			if (ctx->dry_run)
				report_counter_set(ctx->rep, "dry_run_writes", st.dry_run_writes);
			report_api_budget(ctx, &st);
		}
		if (report_write(ctx->rep, ctx->report_dir, code) < 0) {
			log_error("cannot write the report: %s", ferror_last());
			if (code == EXIT_DONE)
				code = EXIT_FAILED;
		}
		report_free(ctx->rep);
	}
	gitlab_free(ctx->gl);
	fconfig_free(ctx->cfg);
	free(ctx->api_url);
	free(ctx->project);
	memset(ctx, 0, sizeof(*ctx));
	return code;
}
