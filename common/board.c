/* board.c - the Factory's labels and board. */
#include "board.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

const board_label board_labels[] = {
	{"priority::1", "#B60205", "P1: security, always first"},
	{"priority::2", "#D93F0B", "P2: high-severity bug (outage, crash, data loss, cannot log in or pay)"},
	{"priority::3", "#E99695", "P3: revenue impact (billing, checkout, paying customers)"},
	{"priority::4", "#FBCA04", "P4: feature"},
	{"priority::5", "#C2E0C6", "P5: polish (typos, cosmetics, docs wording)"},
	{"type::security", "#B60205", "A vulnerability, leaked credential or security weakness"},
	{"type::bug", "#D73A4A", "Something does not work as it should"},
	{"type::feature", "#1D76DB", "Something new"},
	{"type::support", "#5319E7", "A question or a request for help"},
	{"type::feedback", "#0E8A16", "An opinion or suggestion from a user"},
	{"type::chore", "#BFD4F2", "Maintenance: dependencies, CI, refactoring"},
	{"workflow::up next", "#0052CC", "Ready to be taken by the Factory, in board order"},
	{"workflow::in progress", "#FBCA04", "Claimed by a Factory job"},
	{"workflow::validation", "#5319E7", "A merge request is waiting for its pipeline or review"},
	/* factory-implement's ways of handing an issue to a person (jobs/implement/heal.c, take.c) */
	{LABEL_NEEDS_INFO, "#D93F0B", "The Factory needs a person: information is missing, the issue is ambiguous, or its attempts ran out"},
	{LABEL_NO_CHANGE, "#C2E0C6", "The Factory's agent found nothing to change; its note says why"},
	{"source::customer", "#F9D0C4", "Reported by a customer"},
	{"source::internal", "#C5DEF5", "Filed by the team"},
	{"source::factory", "#D4C5F9", "Filed by the Factory itself (watch, pipeline)"},
	{"severity::1", "#B60205", "Critical: outage, data loss, security"},
	{"severity::2", "#D93F0B", "High: a main feature broken, no workaround"},
	{"severity::3", "#FBCA04", "Medium: broken with a workaround"},
	{"severity::4", "#C2E0C6", "Low: minor or cosmetic"},
	{"triage::factory", "#D4C5F9", "Triaged by factory-triage, which re-triages it when it changes; change a triage label to take it over"},
	{LABEL_FAST_LANE, "#FF0000", "Must just work (red pipeline, failed deploy, billing down): skips the queue"},
	/* factory-release's verdict on a closed issue (common/impact.h); a person may set or change it */
	{"release::customer-facing", "#0E8A16", "Customers notice this change: in the release notes, announced to them"},
	{"release::internal", "#BFDADC", "Internal change: in the release notes' internal section, not announced"},
	{NULL, NULL, NULL},
};

const char *const board_list_labels[] = {LABEL_UP_NEXT, LABEL_IN_PROGRESS, LABEL_VALIDATION, NULL};

int board_label_count(void)
{
	int n = 0;

	while (board_labels[n].name)
		n++;
	return n;
}

const board_label *board_label_find(const char *name)
{
	const board_label *l;

	for (l = board_labels; l->name; l++)
		if (!strcmp(l->name, name))
			return l;
	return NULL;
}

typedef struct {
	cJSON *found;
} find_ctx;

static int find_cb(void *vctx, const cJSON *item)
{
	find_ctx *ctx = vctx;
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");

	if (cJSON_IsString(name) && !strcmp(name->valuestring, BOARD_NAME)) {
		ctx->found = cJSON_Duplicate(item, 1);
		if (!ctx->found)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		return 1; /* stop the walk */
	}
	return 0;
}

int board_find(cJSON **out, gitlab *gl)
{
	find_ctx ctx = {NULL};
	int error;

	*out = NULL;
	error = gitlab_list_each(gl, "projects/:id/boards", NULL, NULL, 0, find_cb, &ctx);
	if (error < 0) {
		cJSON_Delete(ctx.found);
		return error;
	}
	*out = ctx.found;
	return 0;
}

static const char *priority_of(const cJSON *issue)
{
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels");
	const cJSON *l;

	cJSON_ArrayForEach(l, labels) {
		if (cJSON_IsString(l) && !strncmp(l->valuestring, "priority::", 10))
			return l->valuestring + 10;
	}
	return NULL;
}

static int has_any_list_label(const cJSON *issue)
{
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels");
	const cJSON *l;
	size_t i;

	cJSON_ArrayForEach(l, labels) {
		for (i = 0; board_list_labels[i]; i++)
			if (cJSON_IsString(l) && !strcmp(l->valuestring, board_list_labels[i]))
				return 1;
	}
	return 0;
}

typedef struct {
	FILE *f;
	int count;
	int open_column; /* skip issues that belong to a list */
} print_ctx;

static int print_cb(void *vctx, const cJSON *issue)
{
	print_ctx *ctx = vctx;
	const cJSON *iid = cJSON_GetObjectItemCaseSensitive(issue, "iid");
	const cJSON *title = cJSON_GetObjectItemCaseSensitive(issue, "title");
	const char *prio = priority_of(issue);
	char *masked;

	if (ctx->open_column && has_any_list_label(issue))
		return 0;
	masked = log_mask_dup(cJSON_IsString(title) ? title->valuestring : "");
	fprintf(ctx->f, "    #%-5d %s%s%s %s\n", cJSON_IsNumber(iid) ? iid->valueint : 0, prio ? "[P" : "",
		prio ? prio : "", prio ? "]" : "", masked ? masked : "");
	free(masked);
	ctx->count++;
	return 0;
}

static int print_column(FILE *f, gitlab *gl, const char *title, const char *query, int open_column, size_t max)
{
	print_ctx ctx = {f, 0, open_column};
	int error;

	fprintf(f, "  %s\n", title);
	error = gitlab_list_each(gl, "projects/:id/issues", query, NULL, max, print_cb, &ctx);
	if (error < 0)
		return error;
	if (!ctx.count)
		fprintf(f, "    (empty)\n");
	return 0;
}

int board_print(FILE *f, gitlab *gl, int closed_max)
{
	cJSON *board = NULL;
	const cJSON *lists, *list;
	fbuf q;
	int error;

	fbuf_init(&q, 4096);
	if ((error = board_find(&board, gl)) < 0)
		goto cleanup;
	fprintf(f, "Board \"%s\" of project %s%s\n", BOARD_NAME, gitlab_project(gl), board ? "" : " (not set up)");
	if ((error = print_column(f, gl, "Open", "state=opened&order_by=created_at&sort=asc", 1, 0)) < 0)
		goto cleanup;
	lists = board ? cJSON_GetObjectItemCaseSensitive(board, "lists") : NULL;
	cJSON_ArrayForEach(list, lists) {
		const cJSON *label = cJSON_GetObjectItemCaseSensitive(list, "label");
		const cJSON *name = label ? cJSON_GetObjectItemCaseSensitive(label, "name") : NULL;
		if (!name || !cJSON_IsString(name)) /* (cJSON_IsString(NULL) is false; the analyser cannot see it) */
			continue;
		fbuf_reset(&q);
		if ((error = fbuf_puts(&q, "state=opened&order_by=relative_position&sort=asc&labels=")) < 0 ||
		    (error = http_escape(&q, name->valuestring)) < 0)
			goto cleanup;
		if ((error = print_column(f, gl, name->valuestring, fbuf_cstr(&q), 0, 0)) < 0)
			goto cleanup;
	}
	if (closed_max > 0 &&
	    (error = print_column(f, gl, "Closed", "state=closed&order_by=updated_at&sort=desc", 0, (size_t)closed_max)) < 0)
		goto cleanup;
	error = 0;
cleanup:
	fbuf_release(&q);
	cJSON_Delete(board);
	return error;
}
