/*
 * factory-setup - create or update, idempotently, the labels and the board
 * the Factory runs on. A second run makes no write at all and says so.
 *
 *   factory-setup [--dry-run] [--print-board] [--scope group:PATH]
 *
 * With a group scope (scope: group:<full path>, common/scope.h) the labels
 * are group labels and the board a group board, shared by every project of
 * the group and its subgroups: GET/POST/PUT /groups/:id/labels,
 * /groups/:id/boards and /groups/:id/boards/:board_id/lists. A label a
 * parent group already has is used as it is. A group board besides the
 * group's first one is a paid feature (POST /groups/:id/boards is 403 on
 * Free): then the Factory's lists go on the group's existing board, which
 * later runs recognise by those lists.
 *
 * With --schedules (setup.schedules; the component turns it on through its
 * `schedules` input) it also creates, or repairs, one pipeline schedule per
 * enabled job, routed by the variable FACTORY_JOB=<job> (schedules.h): so
 * adopting the Factory is the include, two masked variables and one run of
 * setup. In a group scope the schedules go in the project that runs setup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "board.h"
#include "buf.h"
#include "error.h"
#include "job.h"
#include "log.h"
#include "schedules.h"
#include "scope.h"
#include "json.h"

static const job_option options[] = {
	{"print-board", "setup.print_board", 0, "print the board after setting it up"},
	{"scope", "scope", 1, "SCOPE    project (default) or group:PATH for group labels and a group board"},
	{"schedules", "setup.schedules", 0, "also create or repair one pipeline schedule per enabled job"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"setup",
	"Create or update the Factory's labels and its board in a GitLab project or group (idempotent).",
	NULL,
	options,
};

static const cJSON *find_by_name(const cJSON *labels, const char *name)
{
	const cJSON *l;
	const char *n;

	cJSON_ArrayForEach(l, labels) {
		if ((n = json_str(l, "name")) && !strcmp(n, name))
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
		color = json_str(have, "color");
		desc = json_str(have, "description");
		if ((color && !strcasecmp(color, want->color)) && (desc && !strcmp(desc, want->description)))
			continue;
		flag = cJSON_GetObjectItemCaseSensitive(have, "is_project_label");
		if (cJSON_IsFalse(flag)) {
			log_warn("label %s is a group label with another colour or description: left as it is",
				 want->name);
			continue;
		}
		if ((error = gitlab_label_update(&made, ctx->gl, json_long(have, "id"), want->color, want->description)) < 0)
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
	board_id = json_long(board, "id");
	lists = cJSON_GetObjectItemCaseSensitive(board, "lists");
	for (i = 0; board_list_labels[i]; i++) {
		const cJSON *list, *label = find_by_name(labels, board_list_labels[i]);
		int present = 0;

		cJSON_ArrayForEach(list, lists) {
			const char *n = json_str(cJSON_GetObjectItemCaseSensitive(list, "label"), "name");
			if (n && !strcmp(n, board_list_labels[i]))
				present = 1;
		}
		if (present)
			continue;
		if (!label) {
			error = ferror_set(FACTORY_ERR, "label %s is missing after it was created", board_list_labels[i]);
			goto cleanup;
		}
		if ((error = gitlab_board_list_create(&made, ctx->gl, board_id, json_long(label, "id"))) < 0)
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

/* ---- group scope ---- */

/* The three list labels are all on `board`. */
static int has_factory_lists(const cJSON *board)
{
	const cJSON *list;
	size_t i, found = 0;

	for (i = 0; board_list_labels[i]; i++) {
		cJSON_ArrayForEach(list, cJSON_GetObjectItemCaseSensitive(board, "lists")) {
			const char *n = json_str(cJSON_GetObjectItemCaseSensitive(list, "label"), "name");
			if (n && !strcmp(n, board_list_labels[i])) {
				found++;
				break;
			}
		}
	}
	return found == i;
}

/* A label for the dry run's bookkeeping: named, id 0. */
static int add_fake_label(cJSON *labels, const char *name)
{
	cJSON *l = cJSON_CreateObject();

	if (!l || !cJSON_AddStringToObject(l, "name", name) || !cJSON_AddNumberToObject(l, "id", 0) ||
	    !cJSON_AddItemToArray(labels, l)) {
		cJSON_Delete(l);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

/*
 * Group labels: create what neither the group nor a parent group has, fix
 * the group's own labels whose colour or description differ, leave a
 * parent's as they are. *labels_out gets every label the group sees.
 */
static int setup_group_labels(job_ctx *ctx, const char *group, const char *gpath, cJSON **labels_out)
{
	cJSON *own = NULL, *seen = NULL, *made = NULL, *body = NULL;
	const board_label *want;
	int error;

	log_section_start("factory_labels", "group labels", 1);
	if ((error = gitlab_list_all(&own, ctx->gl, gpath, "include_ancestor_groups=false", 0)) < 0 ||
	    (error = gitlab_list_all(&seen, ctx->gl, gpath, "include_ancestor_groups=true", 0)) < 0)
		goto cleanup;
	for (want = board_labels; want->name; want++) {
		const cJSON *have = find_by_name(own, want->name), *inherited = find_by_name(seen, want->name);
		const char *color, *desc;

		if (!have && inherited) {
			color = json_str(inherited, "color");
			desc = json_str(inherited, "description");
			if (!color || strcasecmp(color, want->color) != 0 || !desc || strcmp(desc, want->description) != 0)
				log_warn("label %s comes from a parent group with another colour or description: "
					 "left as it is",
					 want->name);
			continue;
		}
		if (!have) {
			if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "name", want->name) ||
			    !cJSON_AddStringToObject(body, "color", want->color) ||
			    !cJSON_AddStringToObject(body, "description", want->description)) {
				error = ferror_set(FACTORY_ENOMEM, "out of memory");
				goto cleanup;
			}
			if ((error = gitlab_request(&made, ctx->gl, "POST", body, "%s", gpath)) < 0)
				goto cleanup;
			cJSON_Delete(body);
			body = NULL;
			report_action(ctx->rep, "label.create", want->name, "group %s, color %s", group, want->color);
			log_info("%sgroup label %s created", ctx->dry_run ? "dry-run: " : "", want->name);
			if (made) {
				cJSON_AddItemToArray(seen, made);
				made = NULL;
			} else if ((error = add_fake_label(seen, want->name)) < 0) {
				goto cleanup;
			}
			continue;
		}
		color = json_str(have, "color");
		desc = json_str(have, "description");
		if (color && !strcasecmp(color, want->color) && desc && !strcmp(desc, want->description))
			continue;
		if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "color", want->color) ||
		    !cJSON_AddStringToObject(body, "description", want->description)) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_request(&made, ctx->gl, "PUT", body, "%s/%ld", gpath, json_long(have, "id"))) < 0)
			goto cleanup;
		cJSON_Delete(body);
		body = NULL;
		cJSON_Delete(made);
		made = NULL;
		report_action(ctx->rep, "label.update", want->name, "group %s, color %s, description set", group,
			      want->color);
		log_info("%sgroup label %s updated", ctx->dry_run ? "dry-run: " : "", want->name);
	}
	*labels_out = seen;
	seen = NULL;
	error = 0;
cleanup:
	log_section_end("factory_labels");
	cJSON_Delete(own);
	cJSON_Delete(seen);
	cJSON_Delete(made);
	cJSON_Delete(body);
	return error;
}

/*
 * The group board: "Factory", or the board that already carries the
 * Factory's lists, or a new "Factory" board; on a tier without more than
 * one group board (403), the group's first board. Then its three lists.
 */
static int setup_group_board(job_ctx *ctx, const char *group, const char *gpath, const cJSON *labels)
{
	cJSON *boards = NULL, *made = NULL, *body = NULL;
	const cJSON *board = NULL, *b, *lists;
	long board_id;
	size_t i;
	int error;

	log_section_start("factory_board", "group board", 1);
	if ((error = gitlab_list_all(&boards, ctx->gl, gpath, NULL, 0)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(b, boards) {
		const char *n = json_str(b, "name");
		if (n && !strcmp(n, BOARD_NAME)) {
			board = b;
			break;
		}
	}
	cJSON_ArrayForEach(b, boards) {
		if (!board && has_factory_lists(b))
			board = b;
	}
	if (!board) {
		if (!(body = cJSON_CreateObject()) || !cJSON_AddStringToObject(body, "name", BOARD_NAME)) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		error = gitlab_request(&made, ctx->gl, "POST", body, "%s", gpath);
		if (error == FACTORY_EAUTH && gitlab_last_status(ctx->gl) == 403 && cJSON_GetArraySize(boards) > 0) {
			board = cJSON_GetArrayItem(boards, 0);
			log_warn("group %s cannot have a board named %s (more than one group board needs GitLab "
				 "Premium): the Factory's lists go on its board %s",
				 group, BOARD_NAME, json_str(board, "name") ? json_str(board, "name") : "?");
			report_action(ctx->rep, "board.use", json_str(board, "name") ? json_str(board, "name") : "?",
				      "group %s: its one board takes the Factory's lists", group);
		} else if (error < 0) {
			goto cleanup;
		} else {
			report_action(ctx->rep, "board.create", BOARD_NAME, "group %s: board created", group);
			log_info("%sgroup board %s created", ctx->dry_run ? "dry-run: " : "", BOARD_NAME);
			if (!made) { /* dry run */
				for (i = 0; board_list_labels[i]; i++) {
					report_action(ctx->rep, "board.list.create", board_list_labels[i],
						      "list on group board %s", BOARD_NAME);
					log_info("dry-run: list %s added", board_list_labels[i]);
				}
				error = 0;
				goto cleanup;
			}
			board = made;
		}
	}
	board_id = json_long(board, "id");
	lists = cJSON_GetObjectItemCaseSensitive(board, "lists");
	for (i = 0; board_list_labels[i]; i++) {
		const cJSON *list, *label = find_by_name(labels, board_list_labels[i]);
		cJSON *fields, *answer = NULL;
		int present = 0;

		cJSON_ArrayForEach(list, lists) {
			const char *n = json_str(cJSON_GetObjectItemCaseSensitive(list, "label"), "name");
			if (n && !strcmp(n, board_list_labels[i]))
				present = 1;
		}
		if (present)
			continue;
		if (!label) {
			error = ferror_set(FACTORY_ERR, "label %s is missing after it was created", board_list_labels[i]);
			goto cleanup;
		}
		if (!(fields = cJSON_CreateObject()) ||
		    !cJSON_AddNumberToObject(fields, "label_id", (double)json_long(label, "id"))) {
			cJSON_Delete(fields);
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		error = gitlab_request(&answer, ctx->gl, "POST", fields, "%s/%ld/lists", gpath, board_id);
		cJSON_Delete(fields);
		cJSON_Delete(answer);
		if (error < 0)
			goto cleanup;
		report_action(ctx->rep, "board.list.create", board_list_labels[i], "list on group board %s",
			      json_str(board, "name") ? json_str(board, "name") : BOARD_NAME);
		log_info("%slist %s added to group board %s", ctx->dry_run ? "dry-run: " : "", board_list_labels[i],
			 json_str(board, "name") ? json_str(board, "name") : BOARD_NAME);
	}
	error = 0;
cleanup:
	log_section_end("factory_board");
	cJSON_Delete(boards);
	cJSON_Delete(made);
	cJSON_Delete(body);
	return error;
}

/*
 * Which projects of the group the Factory works on (common/scope.h), in
 * the report: data.projects and a table in report.md. A project whose own
 * .factory.yml cannot be used is an error (FACTORY_ECONFIG naming it),
 * after everything else is done and reported.
 */
static int report_projects(job_ctx *ctx, const char *group, size_t *taking_part, size_t *found)
{
	scope *sc = NULL;
	cJSON *arr = NULL, *item;
	const scope_project *p;
	const char *first_bad = NULL, *first_why = NULL;
	size_t i, bad = 0;
	int error;

	log_section_start("factory_projects", "projects of the group", 1);
	if ((error = scope_load(&sc, ctx->gl, ctx->cfg, group)) < 0 || (error = scope_settle_all(sc)) < 0)
		goto cleanup;
	*taking_part = scope_enabled(sc);
	*found = scope_count(sc);
	if (!(arr = cJSON_CreateArray())) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	report_markdown(ctx->rep, "\n### Projects of group %s\n\n| project | Factory | why not | own .factory.yml |\n"
				  "|---|---|---|---|\n",
			group);
	for (i = 0; i < scope_count(sc); i++) {
		p = scope_at(sc, i);
		if (!(item = cJSON_CreateObject()) || !cJSON_AddItemToArray(arr, item) ||
		    !cJSON_AddNumberToObject(item, "id", (double)p->id) ||
		    !cJSON_AddStringToObject(item, "path", p->path) ||
		    !cJSON_AddBoolToObject(item, "enabled", p->enabled) ||
		    !cJSON_AddStringToObject(item, "why", p->why) ||
		    !cJSON_AddBoolToObject(item, "own_settings", p->has_file) ||
		    !cJSON_AddBoolToObject(item, "settings_error", p->error != 0)) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		report_markdown(ctx->rep, "| %s | %s | %s | %s |\n", p->path, p->enabled ? "yes" : "no",
				p->why[0] ? p->why : "", p->has_file ? "yes" : "no");
		if (p->error && !bad++) {
			first_bad = p->path;
			first_why = p->why;
		}
	}
	report_counter_set(ctx->rep, "projects", (long)scope_count(sc));
	report_counter_set(ctx->rep, "projects_taking_part", (long)scope_enabled(sc));
	cJSON_AddItemToObject(report_data(ctx->rep), "projects", arr);
	arr = NULL;
	error = 0;
	if (bad)
		error = ferror_set(FACTORY_ECONFIG, "%zu project%s of group %s cannot be used as %s; the first, %s: %s",
				   bad, bad == 1 ? "" : "s", group, bad == 1 ? "its settings are" : "their settings are",
				   first_bad, first_why);
cleanup:
	log_section_end("factory_projects");
	cJSON_Delete(arr);
	scope_free(sc);
	return error;
}

/* In a group scope the schedules go in the project that runs setup. */
static int group_schedules(job_ctx *ctx)
{
	cJSON *project = NULL;
	int error;

	if ((error = gitlab_set_project(ctx->gl, ctx->project)) < 0)
		return error;
	if ((error = gitlab_request(&project, ctx->gl, "GET", NULL, "projects/:id")) == 0)
		error = schedules_setup(ctx, project);
	cJSON_Delete(project);
	return error;
}

static int run_group(job_ctx *ctx, const char *group, int print, int schedules)
{
	cJSON *info = NULL, *labels = NULL;
	fbuf base, labels_path, boards_path;
	size_t taking_part = 0, found = 0;
	int changes, error, projects_error;

	fbuf_init(&base, 4096);
	fbuf_init(&labels_path, 4096);
	fbuf_init(&boards_path, 4096);
	if (print) {
		error = ferror_set(FACTORY_ECONFIG, "--print-board prints a project's board; with scope group:%s "
						    "it is not available",
				   group);
		goto cleanup;
	}
	if ((error = fbuf_puts(&base, "groups/")) < 0 || (error = http_escape(&base, group)) < 0 ||
	    (error = fbuf_printf(&labels_path, "%s/labels", base.ptr)) < 0 ||
	    (error = fbuf_printf(&boards_path, "%s/boards", base.ptr)) < 0)
		goto cleanup;
	if ((error = gitlab_request(&info, ctx->gl, "GET", NULL, "%s", base.ptr)) < 0)
		goto cleanup;
	log_info("group %s (id %ld)", json_str(info, "full_path") ? json_str(info, "full_path") : group, json_long(info, "id"));
	if ((error = setup_group_labels(ctx, group, labels_path.ptr, &labels)) < 0)
		goto cleanup;
	if ((error = setup_group_board(ctx, group, boards_path.ptr, labels)) < 0)
		goto cleanup;
	if (schedules && (error = group_schedules(ctx)) < 0)
		goto cleanup;
	projects_error = report_projects(ctx, group, &taking_part, &found);
	if (projects_error < 0 && projects_error != FACTORY_ECONFIG) {
		error = projects_error;
		goto cleanup;
	}
	changes = report_action_count(ctx->rep);
	if (!changes) {
		report_summary(ctx->rep,
			       "already set up: %d labels and board %s of group %s%s checked, no write made; %zu of %zu "
			       "projects take part",
			       board_label_count(), BOARD_NAME, group, schedules ? " and the pipeline schedules" : "",
			       taking_part, found);
		log_info("already set up: no write made");
	} else {
		report_summary(ctx->rep, "%s%d change%s to the labels and board of group %s%s; %zu of %zu projects take part",
			       ctx->dry_run ? "dry run: would make " : "", changes, changes == 1 ? "" : "s", group,
			       schedules ? " and the pipeline schedules" : "", taking_part, found);
		log_info("%s%d change%s made", ctx->dry_run ? "dry run: " : "", changes, changes == 1 ? "" : "s");
	}
	log_info("%zu of %zu projects of group %s take part", taking_part, found, group);
	error = projects_error;
cleanup:
	cJSON_Delete(info);
	cJSON_Delete(labels);
	fbuf_release(&base);
	fbuf_release(&labels_path);
	fbuf_release(&boards_path);
	return error;
}

static int run(job_ctx *ctx)
{
	cJSON *project = NULL, *labels = NULL;
	char *group = NULL;
	int print = 0, schedules = 0, error;
	int changes;

	if ((error = fconfig_get_bool(&print, ctx->cfg, "setup.print_board", 0)) < 0 ||
	    (error = fconfig_get_bool(&schedules, ctx->cfg, "setup.schedules", 0)) < 0)
		goto cleanup;
	if (schedules && (error = schedules_check(ctx)) < 0)
		goto cleanup;
	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0)
		goto cleanup;
	if (group && schedules && (!ctx->project || !*ctx->project)) {
		error = ferror_set(FACTORY_ECONFIG, "pipeline schedules are made in the project that runs the Factory: "
						    "set FACTORY_PROJECT (CI_PROJECT_ID in CI) or leave setup.schedules off");
		goto cleanup;
	}
	if (group) {
		error = run_group(ctx, group, print, schedules);
		goto cleanup;
	}
	if ((error = gitlab_request(&project, ctx->gl, "GET", NULL, "projects/:id")) < 0)
		goto cleanup;
	log_info("project %s (id %ld)", json_str(project, "path_with_namespace") ? json_str(project, "path_with_namespace") : "?",
		 json_long(project, "id"));
	if ((error = setup_labels(ctx, &labels)) < 0)
		goto cleanup;
	if ((error = setup_board(ctx, labels)) < 0)
		goto cleanup;
	if (schedules && (error = schedules_setup(ctx, project)) < 0)
		goto cleanup;

	changes = report_action_count(ctx->rep);
	if (!changes) {
		report_summary(ctx->rep, "already set up: %d labels and board %s%s checked, no write made",
			       board_label_count(), BOARD_NAME, schedules ? " and the pipeline schedules" : "");
	} else {
		report_summary(ctx->rep, "%s%d change%s to labels and board %s%s",
			       ctx->dry_run ? "dry run: would make " : "", changes, changes == 1 ? "" : "s", BOARD_NAME,
			       schedules ? " and the pipeline schedules" : "");
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
	free(group);
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
