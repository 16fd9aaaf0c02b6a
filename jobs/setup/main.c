/*
 * factory-setup - create or update, idempotently, the labels and the board
 * the Factory runs on. A second run makes no write at all and says so.
 *
 *   factory-setup [--dry-run] [--print-board]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "board.h"
#include "error.h"
#include "job.h"
#include "log.h"

static const job_option options[] = {
	{"print-board", "setup.print_board", 0, "print the board after setting it up"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"setup",
	"Create or update the Factory's labels and its board in a GitLab project (idempotent).",
	NULL,
	options,
};

static const char *str_of(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long num_of(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
}

static const cJSON *find_by_name(const cJSON *labels, const char *name)
{
	const cJSON *l;
	const char *n;

	cJSON_ArrayForEach(l, labels) {
		if ((n = str_of(l, "name")) && !strcmp(n, name))
			return l;
	}
	return NULL;
}

/* Labels: create what is missing, fix colour or description that differ. */
static int setup_labels(job_ctx *ctx, cJSON **labels_out)
{
	cJSON *labels = NULL, *made = NULL, *fresh = NULL;
	const board_label *want;
	int error;

	log_section_start("factory_labels", "labels", 1);
	if ((error = gitlab_list_all(&labels, ctx->gl, "projects/:id/labels", "include_ancestor_groups=true", 0)) < 0)
		goto cleanup;
	for (want = board_labels; want->name; want++) {
		const cJSON *have = find_by_name(labels, want->name);
		const char *color, *desc;
		cJSON *flag;

		if (!have) {
			if ((error = gitlab_label_create(&made, ctx->gl, want->name, want->color, want->description)) < 0)
				goto cleanup;
			report_action(ctx->rep, "label.create", want->name, "color %s", want->color);
			log_info("%slabel %s created", ctx->dry_run ? "dry-run: " : "", want->name);
			if (made) {
				cJSON_AddItemToArray(labels, made);
				made = NULL;
			} else {
				/* dry run: remember it as if made, so the board step can go on */
				fresh = cJSON_CreateObject();
				if (!fresh || !cJSON_AddStringToObject(fresh, "name", want->name) ||
				    !cJSON_AddNumberToObject(fresh, "id", 0)) {
					error = ferror_set(FACTORY_ENOMEM, "out of memory");
					goto cleanup;
				}
				cJSON_AddItemToArray(labels, fresh);
				fresh = NULL;
			}
			continue;
		}
		color = str_of(have, "color");
		desc = str_of(have, "description");
		if ((color && !strcasecmp(color, want->color)) && (desc && !strcmp(desc, want->description)))
			continue;
		flag = cJSON_GetObjectItemCaseSensitive(have, "is_project_label");
		if (cJSON_IsFalse(flag)) {
			log_warn("label %s is a group label with another colour or description: left as it is",
				 want->name);
			continue;
		}
		if ((error = gitlab_label_update(&made, ctx->gl, num_of(have, "id"), want->color, want->description)) < 0)
			goto cleanup;
		cJSON_Delete(made);
		made = NULL;
		report_action(ctx->rep, "label.update", want->name, "color %s, description set", want->color);
		log_info("%slabel %s updated", ctx->dry_run ? "dry-run: " : "", want->name);
	}
	*labels_out = labels;
	labels = NULL;
	error = 0;
cleanup:
	log_section_end("factory_labels");
	cJSON_Delete(labels);
	cJSON_Delete(made);
	cJSON_Delete(fresh);
	return error;
}

/* The board and its three lists, in order. */
static int setup_board(job_ctx *ctx, const cJSON *labels)
{
	cJSON *board = NULL, *made = NULL;
	const cJSON *lists;
	long board_id;
	size_t i;
	int error;

	log_section_start("factory_board", "board", 1);
	if ((error = board_find(&board, ctx->gl)) < 0)
		goto cleanup;
	if (!board) {
		if ((error = gitlab_board_create(&board, ctx->gl, BOARD_NAME)) < 0)
			goto cleanup;
		report_action(ctx->rep, "board.create", BOARD_NAME, "board created");
		log_info("%sboard %s created", ctx->dry_run ? "dry-run: " : "", BOARD_NAME);
		if (!board) { /* dry run */
			for (i = 0; board_list_labels[i]; i++) {
				report_action(ctx->rep, "board.list.create", board_list_labels[i], "list on board %s",
					      BOARD_NAME);
				log_info("dry-run: list %s added", board_list_labels[i]);
			}
			error = 0;
			goto cleanup;
		}
	}
	board_id = num_of(board, "id");
	lists = cJSON_GetObjectItemCaseSensitive(board, "lists");
	for (i = 0; board_list_labels[i]; i++) {
		const cJSON *list, *label = find_by_name(labels, board_list_labels[i]);
		int present = 0;

		cJSON_ArrayForEach(list, lists) {
			const char *n = str_of(cJSON_GetObjectItemCaseSensitive(list, "label"), "name");
			if (n && !strcmp(n, board_list_labels[i]))
				present = 1;
		}
		if (present)
			continue;
		if (!label) {
			error = ferror_set(FACTORY_ERR, "label %s is missing after it was created", board_list_labels[i]);
			goto cleanup;
		}
		if ((error = gitlab_board_list_create(&made, ctx->gl, board_id, num_of(label, "id"))) < 0)
			goto cleanup;
		cJSON_Delete(made);
		made = NULL;
		report_action(ctx->rep, "board.list.create", board_list_labels[i], "list on board %s", BOARD_NAME);
		log_info("%slist %s added to board %s", ctx->dry_run ? "dry-run: " : "", board_list_labels[i],
			 BOARD_NAME);
	}
	error = 0;
cleanup:
	log_section_end("factory_board");
	cJSON_Delete(board);
	cJSON_Delete(made);
	return error;
}

static int run(job_ctx *ctx)
{
	cJSON *project = NULL, *labels = NULL;
	int print = 0, error;
	int changes;

	if ((error = fconfig_get_bool(&print, ctx->cfg, "setup.print_board", 0)) < 0)
		goto cleanup;
	if ((error = gitlab_request(&project, ctx->gl, "GET", NULL, "projects/:id")) < 0)
		goto cleanup;
	log_info("project %s (id %ld)", str_of(project, "path_with_namespace") ? str_of(project, "path_with_namespace") : "?",
		 num_of(project, "id"));
	if ((error = setup_labels(ctx, &labels)) < 0)
		goto cleanup;
	if ((error = setup_board(ctx, labels)) < 0)
		goto cleanup;

	changes = report_action_count(ctx->rep);
	if (!changes) {
		report_summary(ctx->rep, "already set up: %d labels and board %s checked, no write made",
			       board_label_count(), BOARD_NAME);
	} else {
		report_summary(ctx->rep, "%s%d change%s to labels and board %s", ctx->dry_run ? "dry run: would make " : "",
			       changes, changes == 1 ? "" : "s", BOARD_NAME);
	}
	if (print && (error = board_print(stdout, ctx->gl, 5)) < 0)
		goto cleanup;
	if (!changes)
		log_info("already set up: no write made");
	else
		log_info("%s%d change%s made", ctx->dry_run ? "dry run: " : "", changes, changes == 1 ? "" : "s");
	error = 0;
cleanup:
	cJSON_Delete(project);
	cJSON_Delete(labels);
	return error;
}

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc = job_start(&ctx, &spec, argc, argv);

	if (rc != JOB_CONTINUE)
		return rc;
	if (ctx.nargs > 0) {
		return job_finish(&ctx, ferror_set(FACTORY_ECONFIG, "unexpected argument '%s' (see --help)", ctx.args[0]));
	}
	if ((rc = job_connect(&ctx)) == 0)
		rc = run(&ctx);
	return job_finish(&ctx, rc);
}
