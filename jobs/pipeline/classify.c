/* classify.c - factory-pipeline classify [FILE]: one job log -> one JSON object. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "log.h"
#include "pipeline.h"

#define READ_CHUNK (1 << 20)
#define RULES_FILE_MAX (1 << 20)

int pipeline_load_rules(cilog_rules **out, job_ctx *ctx)
{
	const char *path = fconfig_get(ctx->cfg, "pipeline.rules_file", NULL);
	int explicit = path && *path;
	fbuf text;
	FILE *f = NULL;
	char chunk[8192];
	size_t n;
	int error;

	*out = NULL;
	fbuf_init(&text, RULES_FILE_MAX);
	if (!explicit)
		path = ".factory/ci-rules.yml";
	if (!(f = fopen(path, "rb"))) {
		if (!explicit && errno == ENOENT) {
			error = cilog_rules_new(out, NULL, 1, "built-in CI log rules");
			goto cleanup;
		}
		error = ferror_set(FACTORY_ECONFIG, "cannot read the rules file %s: %s", path, strerror(errno));
		goto cleanup;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if ((error = fbuf_put(&text, chunk, n)) < 0) {
			if (error == FACTORY_ETOOBIG)
				error = ferror_set(FACTORY_ECONFIG, "the rules file %s is larger than 1 MiB", path);
			goto cleanup;
		}
	if (ferror(f)) {
		error = ferror_set(FACTORY_ECONFIG, "cannot read the rules file %s", path);
		goto cleanup;
	}
	error = cilog_rules_from_yaml(out, fbuf_cstr(&text), text.len, 1, path);
cleanup:
	if (f)
		fclose(f);
	fbuf_release(&text);
	return error;
}

int pipeline_cmd_classify(job_ctx *ctx)
{
	cilog_rules *rs = NULL;
	cilog *c = NULL;
	cilog_result res;
	cJSON *json = NULL;
	char *text = NULL, *buf = NULL;
	const char *path = ctx->nargs > 1 ? ctx->args[1] : NULL;
	FILE *f = NULL;
	struct stat st;
	size_t n;
	int error;

	cilog_result_init(&res);
	if (ctx->nargs > 2) {
		error = ferror_set(FACTORY_ECONFIG, "classify takes one FILE at most (see --help)");
		goto cleanup;
	}
	if ((error = pipeline_load_rules(&rs, ctx)) < 0)
		goto cleanup;
	if (path && strcmp(path, "-") != 0) {
		if (!(f = fopen(path, "rb"))) {
			error = ferror_set(FACTORY_ECONFIG, "cannot open %s: %s", path, strerror(errno));
			goto cleanup;
		}
		if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
			error = ferror_set(FACTORY_ECONFIG, "cannot read %s: it is a directory", path);
			goto cleanup;
		}
	} else {
		f = stdin;
	}
	if (!(buf = malloc(READ_CHUNK))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = cilog_new(&c, rs, NULL)) < 0)
		goto cleanup;
	while ((n = fread(buf, 1, READ_CHUNK, f)) > 0)
		if ((error = cilog_feed(c, buf, n)) < 0)
			goto cleanup;
	if (ferror(f)) {
		error = ferror_set(FACTORY_ERR, "cannot read %s: %s", path ? path : "standard input", strerror(errno));
		goto cleanup;
	}
	if ((error = cilog_finish(&res, c)) < 0 || (error = cilog_result_json(&json, &res)) < 0)
		goto cleanup;
	if (!(text = cJSON_PrintUnformatted(json))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	printf("%s\n", text);
	if (fflush(stdout) != 0) {
		error = ferror_set(FACTORY_ERR, "cannot write to standard output");
		goto cleanup;
	}
	report_summary(ctx->rep, "classified %ld lines: %s", res.lines, cilog_class_name(res.klass));
	error = 0;
cleanup:
	if (f && f != stdin)
		fclose(f);
	free(buf);
	free(text);
	cJSON_Delete(json);
	cilog_result_release(&res);
	cilog_free(c);
	cilog_rules_free(rs);
	return error;
}

int pipeline_cmd_rules(job_ctx *ctx)
{
	(void)ctx;
	if (fputs(cilog_default_rules_yaml, stdout) < 0 || fflush(stdout) != 0)
		return ferror_set(FACTORY_ERR, "cannot write to standard output");
	return 0;
}
