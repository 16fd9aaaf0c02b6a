/*
 * factory-pipeline - diagnose and fix failed pipelines, learn failure
 * classes, and optimise CI when everything is green.
 *
 *   factory-pipeline [options] [run]   the scheduled run: repair mode when
 *                                      something is red, optimise mode when not
 *   factory-pipeline classify [FILE]   classify one job log offline (standard
 *                                      input without FILE): one JSON object
 *   factory-pipeline deps [DIR]        unused dependencies and bloat of a checkout
 *   factory-pipeline rules             print the built-in classification rules
 *
 * No state is kept on the runner: the mark of the last run, the failure
 * ledger and every fingerprint live in GitLab.
 */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "job.h"
#include "pipeline.h"

static const job_option options[] = {
	{"rules-file", "pipeline.rules_file", 1, "FILE     more CI log rules (YAML), before the built-in ones"},
	{"mode", "pipeline.mode", 1, "MODE     auto (default), repair or optimise"},
	{"max-retries", "pipeline.max_retries", 1, "N        job retries per run (default 3)"},
	{"max-mrs", "pipeline.max_mrs", 1, "N        fix merge requests per run (default 2)"},
	{"max-issues", "pipeline.max_issues", 1, "N        issues per run (default 5)"},
	{"no-fix", "pipeline.no_fix", 0, "        never run the coding agent: file issues instead"},
	{"max-cleanups", "pipeline.max_cleanups", 1, "N        branches deleted plus merge requests closed per run (default 20)"},
	{"scope", "scope", 1, "SCOPE    project (default) or group:PATH: every project of the group, each under its own settings"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"pipeline",
	"Diagnose and fix failed pipelines, learn failure classes, and optimise CI when everything is green.",
	"commands (options come before the command):\n"
	"  run              (default) the scheduled run against GitLab\n"
	"  classify [FILE]  classify one CI job log (standard input without FILE):\n"
	"                   {class, tool, location {file, line}, test, error_lines [first, last], excerpt}\n"
	"  deps [DIR]       unused dependencies and bloat of a local checkout (the current\n"
	"                   directory without DIR): one JSON object\n"
	"  rules            print the built-in classification rules (YAML)",
	options,
};

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc = job_start(&ctx, &spec, argc, argv);
	const char *cmd;

	if (rc != JOB_CONTINUE)
		return rc;
	cmd = ctx.nargs > 0 ? ctx.args[0] : "run";
	if (!strcmp(cmd, "run"))
		rc = pipeline_cmd_run(&ctx);
	else if (!strcmp(cmd, "deps"))
		rc = pipeline_cmd_deps(&ctx);
	else if (!strcmp(cmd, "classify"))
		rc = pipeline_cmd_classify(&ctx);
	else if (!strcmp(cmd, "rules"))
		rc = ctx.nargs > 1 ? ferror_set(FACTORY_ECONFIG, "rules takes no argument") : pipeline_cmd_rules(&ctx);
	else
		rc = ferror_set(FACTORY_ECONFIG, "unknown command '%s' (run, classify, deps or rules; see --help)", cmd);
	return job_finish(&ctx, rc);
}
