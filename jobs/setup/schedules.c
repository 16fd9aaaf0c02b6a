/*
 * schedules.c - one pipeline schedule per job, created and kept in shape
 * through the Pipeline schedules API (contract in schedules.h):
 *   GET  /projects/:id/pipeline_schedules                (every page)
 *   GET  /projects/:id/pipeline_schedules/:id            (its variables)
 *   POST /projects/:id/pipeline_schedules                description, ref, cron, cron_timezone, active
 *   PUT  /projects/:id/pipeline_schedules/:id            what drifted
 *   POST /projects/:id/pipeline_schedules/:id/variables  key, value
 *   PUT  /projects/:id/pipeline_schedules/:id/variables/:key
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "error.h"
#include "log.h"
#include "schedules.h"
#include "json.h"

#define SCHEDULE_PREFIX "factory: "
#define SCHEDULE_VAR "FACTORY_JOB"
#define CRON_MAX 120
#define TZ_MAX 64
#define REF_MAX 255

/* Every job the component knows, and the cron each is scheduled with when
 * the policy file says nothing (NULL: no schedule unless given one).
 * Minutes are spread so the jobs of one project do not all start at once. */
static const struct {
	const char *job;
	const char *cron;
} job_crons[] = {
        {"setup", NULL},
        {"triage", "0 * * * *"},
        {"implement", "5,35 * * * *"},
        {"pipeline", "*/15 * * * *"},
        {"release", "0 6 * * *"},
        {"watch", "*/10 * * * *"},
        {"intake", NULL},
};
#define N_JOBS (sizeof(job_crons) / sizeof(job_crons[0]))

typedef struct {
	const char *job;
	char description[64];
	char cron[CRON_MAX + 1]; /* empty: not wanted */
} wanted_schedule;

static int is_off(const char *v)
{
	return !strcasecmp(v, "off") || !strcasecmp(v, "false") || !strcasecmp(v, "none") || !strcasecmp(v, "no");
}

/* The next name of the comma-separated list at *p (blanks around names
 * allowed): its start, with *len set (0 at the end of the list); *p moves
 * past it. */
static const char *next_name(const char **p, size_t *len)
{
	const char *start, *end;

	while (**p == ' ' || **p == ',')
		(*p)++;
	start = *p;
	while (**p && **p != ',')
		(*p)++;
	end = *p;
	while (end > start && end[-1] == ' ')
		end--;
	*len = (size_t)(end - start);
	return start;
}

/* `job` appears in the comma-separated `list`. */
static int in_list(const char *list, const char *job)
{
	size_t n = strlen(job), len;
	const char *p = list, *name;

	while (*p) {
		name = next_name(&p, &len);
		if (len == n && !strncmp(name, job, n))
			return 1;
	}
	return 0;
}

static int known_job(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < N_JOBS; i++) {
		if (strlen(job_crons[i].job) == len && !strncmp(job_crons[i].job, name, len))
			return 1;
	}
	return 0;
}

/* Every name in the jobs setting is a job the component has. */
static int check_jobs(const fconfig *cfg)
{
	fconfig_source src;
	const char *list = fconfig_get(cfg, "jobs", &src), *p, *name;
	size_t len;

	if (!list)
		return 0;
	for (p = list; *p;) {
		name = next_name(&p, &len);
		if (len && !known_job(name, len))
			return ferror_set(
			        FACTORY_ECONFIG,
			        "bad setting jobs=%s (from %s): unknown job '%.*s' (known: setup, triage, implement, "
			        "pipeline, release, watch, intake)",
			        list, fconfig_source_name(src), (int)len, name);
	}
	return 0;
}

/* A cron expression as GitLab takes it: five fields of digits, names and
 * the characters * , - / ?. GitLab checks the values themselves. */
static int cron_ok(const char *cron)
{
	int fields = 0, in_field = 0;
	const char *p;

	if (strlen(cron) > CRON_MAX)
		return 0;
	for (p = cron; *p; p++) {
		if (*p == ' ' || *p == '\t') {
			in_field = 0;
			continue;
		}
		if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      strchr("*,-/?", *p)))
			return 0;
		if (!in_field) {
			fields++;
			in_field = 1;
		}
	}
	return fields == 5;
}

/* Time zone names: tz database ("Europe/Berlin") or ActiveSupport ("Pacific
 * Time (US & Canada)"). */
static int tz_ok(const char *tz)
{
	const char *p;

	if (!*tz || strlen(tz) > TZ_MAX)
		return 0;
	for (p = tz; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      strchr(" _+-/.()&'", *p)))
			return 0;
	}
	return 1;
}

/* The wanted schedule of every job, from the settings. */
static int read_wanted(wanted_schedule *w, const fconfig *cfg)
{
	const char *jobs = fconfig_get(cfg, "jobs", NULL);
	char key[64];
	size_t i;

	for (i = 0; i < N_JOBS; i++) {
		fconfig_source src;
		const char *cron;

		w[i].job = job_crons[i].job;
		snprintf(w[i].description, sizeof(w[i].description), SCHEDULE_PREFIX "%s", w[i].job);
		w[i].cron[0] = '\0';
		snprintf(key, sizeof(key), "schedules.%s", w[i].job);
		cron = fconfig_get(cfg, key, &src);
		if (cron && is_off(cron))
			continue;
		if (cron && !cron_ok(cron))
			return ferror_set(FACTORY_ECONFIG,
			                  "bad setting %s=%s (from %s): expected a cron expression of five fields "
			                  "(minute hour day-of-month month day-of-week), or off",
			                  key, cron, fconfig_source_name(src));
		if (!cron)
			cron = job_crons[i].cron;
		if (!cron || (jobs && !in_list(jobs, w[i].job)))
			continue;
		snprintf(w[i].cron, sizeof(w[i].cron), "%s", cron);
	}
	return 0;
}

int schedules_check(job_ctx *ctx)
{
	wanted_schedule w[N_JOBS];
	fconfig_source src;
	const char *tz = fconfig_get(ctx->cfg, "schedules.timezone", &src), *ref;
	int error;

	if ((error = check_jobs(ctx->cfg)) < 0 || (error = read_wanted(w, ctx->cfg)) < 0)
		return error;
	if (tz && !tz_ok(tz))
		return ferror_set(
		        FACTORY_ECONFIG,
		        "bad setting schedules.timezone=%s (from %s): expected a time zone name such as UTC or "
		        "Europe/Berlin",
		        tz, fconfig_source_name(src));
	ref = fconfig_get(ctx->cfg, "schedules.ref", &src);
	if (ref && (strlen(ref) > REF_MAX || strpbrk(ref, " ~^:?*[\\")))
		return ferror_set(FACTORY_ECONFIG, "bad setting schedules.ref=%s (from %s): not a branch or tag name",
		                  ref, fconfig_source_name(src));
	return 0;
}

/* "refs/heads/main" and "main" name the same ref (GitLab stores the full
 * form from 16.x on). */
static int same_ref(const char *a, const char *b)
{
	if (!strncmp(a, "refs/heads/", 11))
		a += 11;
	if (!strncmp(b, "refs/heads/", 11))
		b += 11;
	return !strcmp(a, b);
}

/* After a failed write: a 403 says what the token's user lacks. */
static int write_failed(job_ctx *ctx, int error, const char *what, const char *description)
{
	char detail[512];

	if (error != FACTORY_EAUTH || gitlab_last_status(ctx->gl) != 403)
		return error;
	snprintf(detail, sizeof(detail), "%s", ferror_last());
	return ferror_set(FACTORY_EAUTH,
	                  "cannot %s pipeline schedule%s%s%s: the token's user is not allowed (403): it needs at least "
	                  "the Developer role to create a schedule and must own a schedule to change it; scheduled "
	                  "pipelines run with their owner's permissions (%s)",
	                  what, description ? " '" : "s", description ? description : "", description ? "'" : "",
	                  detail);
}

static cJSON *schedule_body(const char *description, const char *ref, const char *cron, const char *tz, int active)
{
	cJSON *b = cJSON_CreateObject();

	if (!b || (description && !cJSON_AddStringToObject(b, "description", description)) ||
	    (ref && !cJSON_AddStringToObject(b, "ref", ref)) || (cron && !cJSON_AddStringToObject(b, "cron", cron)) ||
	    (tz && !cJSON_AddStringToObject(b, "cron_timezone", tz)) ||
	    (active >= 0 && !cJSON_AddBoolToObject(b, "active", active))) {
		cJSON_Delete(b);
		return NULL;
	}
	return b;
}

static int create_one(job_ctx *ctx, const wanted_schedule *w, const char *ref, const char *tz, long *id_out)
{
	cJSON *body = schedule_body(w->description, ref, w->cron, tz, 1), *made = NULL, *var = NULL, *answer = NULL;
	int error;

	*id_out = 0;
	if (!body)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = gitlab_request(&made, ctx->gl, "POST", body, "projects/:id/pipeline_schedules")) < 0) {
		error = write_failed(ctx, error, "create", w->description);
		goto cleanup;
	}
	report_action(ctx->rep, "schedule.create", w->description, "cron \"%s\" %s on %s, %s=%s", w->cron, tz, ref,
	              SCHEDULE_VAR, w->job);
	log_info("%sschedule '%s' created: cron \"%s\" %s on %s", ctx->dry_run ? "dry-run: " : "", w->description,
	         w->cron, tz, ref);
	if (!made) { /* dry run: no id to put the variable on */
		log_info("dry-run: would POST projects/:id/pipeline_schedules/<new>/variables %s=%s", SCHEDULE_VAR,
		         w->job);
		error = 0;
		goto cleanup;
	}
	*id_out = json_long(made, "id");
	if (!(var = cJSON_CreateObject()) || !cJSON_AddStringToObject(var, "key", SCHEDULE_VAR) ||
	    !cJSON_AddStringToObject(var, "value", w->job)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = gitlab_request(&answer, ctx->gl, "POST", var, "projects/:id/pipeline_schedules/%ld/variables",
	                            *id_out)) < 0) {
		error = write_failed(ctx, error, "add the variable to", w->description);
		goto cleanup;
	}
	error = 0;
cleanup:
	cJSON_Delete(body);
	cJSON_Delete(made);
	cJSON_Delete(var);
	cJSON_Delete(answer);
	return error;
}

/* The FACTORY_JOB variable of an existing schedule: added or corrected. */
static int repair_variable(job_ctx *ctx, const wanted_schedule *w, long id)
{
	cJSON *one = NULL, *body = NULL, *answer = NULL;
	const cJSON *v, *found = NULL;
	const char *value;
	int error;

	if ((error = gitlab_request(&one, ctx->gl, "GET", NULL, "projects/:id/pipeline_schedules/%ld", id)) < 0)
		goto cleanup;
	cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(one, "variables"))
	{
		const char *k = json_str(v, "key");
		if (k && !strcmp(k, SCHEDULE_VAR))
			found = v;
	}
	value = found ? json_str(found, "value") : NULL;
	if (found && value && !strcmp(value, w->job)) {
		error = 0;
		goto cleanup;
	}
	if (!(body = cJSON_CreateObject()) || (!found && !cJSON_AddStringToObject(body, "key", SCHEDULE_VAR)) ||
	    !cJSON_AddStringToObject(body, "value", w->job)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (found)
		error = gitlab_request(&answer, ctx->gl, "PUT", body,
		                       "projects/:id/pipeline_schedules/%ld/variables/%s", id, SCHEDULE_VAR);
	else
		error = gitlab_request(&answer, ctx->gl, "POST", body, "projects/:id/pipeline_schedules/%ld/variables",
		                       id);
	if (error < 0) {
		error = write_failed(ctx, error, "set the variable of", w->description);
		goto cleanup;
	}
	report_action(ctx->rep, found ? "schedule.variable.update" : "schedule.variable.create", w->description,
	              "%s=%s (was %s)", SCHEDULE_VAR, w->job, found ? (value ? value : "?") : "missing");
	log_info("%sschedule '%s': variable %s=%s %s", ctx->dry_run ? "dry-run: " : "", w->description, SCHEDULE_VAR,
	         w->job, found ? "corrected" : "added");
	error = 0;
cleanup:
	cJSON_Delete(one);
	cJSON_Delete(body);
	cJSON_Delete(answer);
	return error;
}

/* An existing schedule of ours: what drifted is put right in one PUT. */
static int repair_one(job_ctx *ctx, const wanted_schedule *w, const cJSON *have, const char *ref, const char *tz)
{
	const char *h_cron = json_str(have, "cron"), *h_tz = json_str(have, "cron_timezone"), *h_ref = json_str(have, "ref");
	int h_active = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(have, "active"));
	long id = json_long(have, "id");
	cJSON *body = NULL, *answer = NULL;
	fbuf what;
	int error;

	fbuf_init(&what, 1024);
	if (!w->cron[0]) { /* no longer wanted: deactivated, kept */
		if (!h_active) {
			error = 0;
			goto cleanup;
		}
		if (!(body = schedule_body(NULL, NULL, NULL, NULL, 0))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_request(&answer, ctx->gl, "PUT", body, "projects/:id/pipeline_schedules/%ld", id)) <
		    0) {
			error = write_failed(ctx, error, "deactivate", w->description);
			goto cleanup;
		}
		report_action(ctx->rep, "schedule.deactivate", w->description, "job %s is not enabled or has no cron",
		              w->job);
		log_info("%sschedule '%s' deactivated: job %s is not enabled or has no cron",
		         ctx->dry_run ? "dry-run: " : "", w->description, w->job);
		error = 0;
		goto cleanup;
	}
	if ((!h_cron || strcmp(h_cron, w->cron) != 0) &&
	    (error = fbuf_printf(&what, "%scron \"%s\" (was \"%s\")", what.len ? ", " : "", w->cron,
	                         h_cron ? h_cron : "?")) < 0)
		goto cleanup;
	if ((!h_tz || strcmp(h_tz, tz) != 0) &&
	    (error = fbuf_printf(&what, "%stimezone %s (was %s)", what.len ? ", " : "", tz, h_tz ? h_tz : "?")) < 0)
		goto cleanup;
	if ((!h_ref || !same_ref(h_ref, ref)) &&
	    (error = fbuf_printf(&what, "%sref %s (was %s)", what.len ? ", " : "", ref, h_ref ? h_ref : "?")) < 0)
		goto cleanup;
	if (!h_active && (error = fbuf_printf(&what, "%sactive (was inactive)", what.len ? ", " : "")) < 0)
		goto cleanup;
	if (what.len) {
		if (!(body = schedule_body(NULL, ref, w->cron, tz, 1))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_request(&answer, ctx->gl, "PUT", body, "projects/:id/pipeline_schedules/%ld", id)) <
		    0) {
			error = write_failed(ctx, error, "update", w->description);
			goto cleanup;
		}
		report_action(ctx->rep, "schedule.update", w->description, "%s", fbuf_cstr(&what));
		log_info("%sschedule '%s' repaired: %s", ctx->dry_run ? "dry-run: " : "", w->description,
		         fbuf_cstr(&what));
	}
	error = repair_variable(ctx, w, id);
cleanup:
	fbuf_release(&what);
	cJSON_Delete(body);
	cJSON_Delete(answer);
	return error;
}

/* The first schedule described as `description`, and how many there are. */
static const cJSON *find_schedule(const cJSON *all, const char *description, int *count)
{
	const cJSON *s, *first = NULL;

	*count = 0;
	cJSON_ArrayForEach(s, all)
	{
		const char *d = json_str(s, "description");
		if (d && !strcmp(d, description)) {
			if (!first)
				first = s;
			(*count)++;
		}
	}
	return first;
}

static int add_row(cJSON *rows, const wanted_schedule *w, long id, const char *state, const char *ref, const char *tz)
{
	cJSON *row = cJSON_CreateObject();

	if (!row || !cJSON_AddItemToArray(rows, row) || !cJSON_AddStringToObject(row, "job", w->job) ||
	    !cJSON_AddStringToObject(row, "description", w->description) ||
	    !cJSON_AddNumberToObject(row, "id", (double)id) || !cJSON_AddStringToObject(row, "state", state) ||
	    (w->cron[0] &&
	     (!cJSON_AddStringToObject(row, "cron", w->cron) || !cJSON_AddStringToObject(row, "cron_timezone", tz) ||
	      !cJSON_AddStringToObject(row, "ref", ref))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

int schedules_setup(job_ctx *ctx, const cJSON *project)
{
	wanted_schedule w[N_JOBS];
	cJSON *all = NULL, *me = NULL, *rows = NULL;
	const char *tz, *ref, *my_name;
	size_t i;
	int error;

	log_section_start("factory_schedules", "pipeline schedules", 1);
	if ((error = schedules_check(ctx)) < 0 || (error = read_wanted(w, ctx->cfg)) < 0)
		goto cleanup;
	tz = fconfig_get_str(ctx->cfg, "schedules.timezone", "UTC");
	ref = fconfig_get(ctx->cfg, "schedules.ref", NULL);
	if (!ref)
		ref = json_str(project, "default_branch");
	if (!ref || !*ref)
		ref = ctx->default_branch;
	if (!ref || !*ref) {
		error = ferror_set(FACTORY_ECONFIG, "the project has no default branch to schedule pipelines on: set "
		                                    "schedules.ref (FACTORY_SCHEDULES_REF)");
		goto cleanup;
	}
	if ((error = gitlab_request(&me, ctx->gl, "GET", NULL, "user")) < 0)
		goto cleanup;
	my_name = json_str(me, "username");
	if ((error = gitlab_list_all(&all, ctx->gl, "projects/:id/pipeline_schedules", NULL, 0)) < 0) {
		error = write_failed(ctx, error, "list the", NULL);
		goto cleanup;
	}
	if (!(rows = cJSON_CreateArray())) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	report_markdown(ctx->rep,
	                "\n### Pipeline schedules (ref %s, %s)\n\n| schedule | cron | state |\n|---|---|---|\n", ref,
	                tz);
	for (i = 0; i < N_JOBS; i++) {
		int count, before = report_action_count(ctx->rep);
		const cJSON *have = find_schedule(all, w[i].description, &count);
		const char *owner = have ? json_str(cJSON_GetObjectItemCaseSensitive(have, "owner"), "username") : NULL;
		const char *state;
		long id = have ? json_long(have, "id") : 0;

		if (!have && !w[i].cron[0])
			continue;
		if (count > 1)
			log_warn("%d schedules are described as '%s': the first (id %ld) is the Factory's, the others "
			         "are left as they are",
			         count, w[i].description, id);
		if (have && owner && my_name && strcmp(owner, my_name) != 0) {
			log_warn("schedule '%s' (id %ld) is owned by %s, not by the token's user %s: left as it is "
			         "(take "
			         "ownership of it as %s for setup to manage it)",
			         w[i].description, id, owner, my_name, my_name);
			state = "left: owned by another user";
		} else if (!have) {
			if ((error = create_one(ctx, &w[i], ref, tz, &id)) < 0)
				goto cleanup;
			state = ctx->dry_run ? "would be created" : "created";
		} else {
			if ((error = repair_one(ctx, &w[i], have, ref, tz)) < 0)
				goto cleanup;
			if (!w[i].cron[0])
				state = report_action_count(ctx->rep) > before
				                ? (ctx->dry_run ? "would be deactivated" : "deactivated")
				                : "inactive";
			else
				state = report_action_count(ctx->rep) > before
				                ? (ctx->dry_run ? "would be repaired" : "repaired")
				                : "as wanted";
		}
		if ((error = add_row(rows, &w[i], id, state, ref, tz)) < 0)
			goto cleanup;
		report_markdown(ctx->rep, "| %s | %s | %s |\n", w[i].description, w[i].cron[0] ? w[i].cron : "(none)",
		                state);
	}
	cJSON_AddItemToObject(report_data(ctx->rep), "schedules", rows);
	rows = NULL;
	error = 0;
cleanup:
	log_section_end("factory_schedules");
	cJSON_Delete(all);
	cJSON_Delete(me);
	cJSON_Delete(rows);
	return error;
}
