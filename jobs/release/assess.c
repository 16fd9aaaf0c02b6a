/*
 * assess.c - the verdict on each change (impact.h's rules, then the
 * model's second opinion on the weak ones), its plain line, and the
 * version of the release.
 *
 * A plain line comes from, in order: a "Release note: ..." line in the
 * issue's description, in one of its merge requests' descriptions, or in
 * the commit message; the model's summary; the title.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "release_job.h"
#include "json.h"

/* A "Release note:" line for the item, into its summary. */
static int release_note(rel_run *r, rel_item *it)
{
	fbuf line;
	const cJSON *mr;
	size_t i;
	int error = FACTORY_ENOTFOUND;

	fbuf_init(&line, 64 * 1024);
	if (it->issue)
		error = notes_release_note(&line, json_str(it->issue, "description"));
	else if (it->item.is_commit) {
		const rel_commit *c = rel_commit_find(r, it->item.sha);
		if (c)
			error = notes_release_note(&line, json_str(c->commit, "message"));
	}
	for (i = 0; error == FACTORY_ENOTFOUND && i < it->item.nmrs; i++) {
		cJSON_ArrayForEach(mr, r->mrs)
		{
			const cJSON *iid = cJSON_GetObjectItemCaseSensitive(mr, "iid");
			if (cJSON_IsNumber(iid) && (long)iid->valuedouble == it->item.mrs[i].iid) {
				error = notes_release_note(&line, json_str(mr, "description"));
				break;
			}
		}
	}
	if (error == 0)
		error = notes_item_set(&it->item.summary, fbuf_cstr(&line));
	else if (error == FACTORY_ENOTFOUND || error == FACTORY_ETOOBIG)
		error = 0;
	fbuf_release(&line);
	return error;
}

static void drop_item(rel_run *r, size_t i)
{
	rel_item *it = &r->items[i];

	notes_item_release(&it->item);
	cJSON_Delete(it->issue);
	free(it->reporters);
	memmove(&r->items[i], &r->items[i + 1], (r->nitems - i - 1) * sizeof(*it));
	r->nitems--;
}

static int record(rel_run *r, const rel_item *it)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(report_data(r->job->rep), "changes"), *o;
	char key[32];

	if (!list && !(list = cJSON_AddArrayToObject(report_data(r->job->rep), "changes")))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	notes_item_key(key, sizeof(key), &it->item);
	/* no titles here: the report may be public and an item may be confidential */
	if (!(o = cJSON_CreateObject()) || !cJSON_AddStringToObject(o, "key", key) ||
	    !cJSON_AddStringToObject(o, "group", notes_group_name(it->item.group)) ||
	    !cJSON_AddStringToObject(o, "verdict", it->item.customer ? "customer-facing" : "internal") ||
	    !cJSON_AddBoolToObject(o, "strong", it->v.strong) || !cJSON_AddStringToObject(o, "reason", it->v.reason) ||
	    !cJSON_AddBoolToObject(o, "confidential", it->item.confidential) ||
	    (it->model && !cJSON_AddStringToObject(o, "model", it->model_reason))) {
		cJSON_Delete(o);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	cJSON_AddItemToArray(list, o);
	return 0;
}

int rel_assess(rel_run *r)
{
	size_t i;
	int error;

	for (i = 0; i < r->nitems;) {
		rel_item *it = &r->items[i];
		char key[32];

		if (it->issue)
			impact_assess_issue(&it->v, r->policy, it->issue, it->has_mr, it->path[0] ? it->path : NULL);
		else
			impact_assess_commit(&it->v, r->policy, it->category, it->path[0] ? it->path : NULL);
		notes_item_key(key, sizeof(key), &it->item);
		if (it->v.skip) {
			log_info("%s left out: %s", key, it->v.reason);
			r->skipped++;
			drop_item(r, i);
			continue;
		}
		it->item.group = it->v.group;
		it->item.customer = it->v.customer;
		it->item.breaking = it->v.breaking;
		if ((error = release_note(r, it)) < 0)
			return error;
		i++;
	}
	if (r->model && (error = rel_model_ask(r->model, r)) < 0)
		return error;
	for (i = 0; i < r->nitems; i++) {
		rel_item *it = &r->items[i];
		char key[32];

		notes_item_key(key, sizeof(key), &it->item);
		log_info("%s: %s, %s (%s%s%s)", key, notes_group_name(it->item.group),
		         it->item.customer ? "customer-facing" : "internal", it->v.reason, it->model ? "; model: " : "",
		         it->model ? it->model_reason : "");
		if ((error = record(r, it)) < 0)
			return error;
	}
	return 0;
}

int rel_choose_version(rel_run *r)
{
	semver v;
	size_t i;
	int error;

	r->change = SEMVER_PATCH;
	for (i = 0; i < r->nitems; i++) {
		const rel_item *it = &r->items[i];
		if (it->item.breaking)
			r->change = SEMVER_BREAKING;
		else if ((it->item.group == NOTES_FEATURE || !strcmp(it->category, "deprecated")) &&
		         r->change < SEMVER_MINOR)
			r->change = SEMVER_MINOR;
	}
	if (r->version_given && *r->version_given) {
		if (semver_parse(&v, r->version_given, r->tag_prefix) < 0)
			return ferror_set(FACTORY_ECONFIG, "bad setting release.version: %s", ferror_last());
		if (r->have_prev && r->prev_semver && semver_compare(&v, &r->prev_version) <= 0)
			return ferror_set(FACTORY_ECONFIG,
			                  "bad setting release.version=%s: not after the last release %s",
			                  r->version_given, r->prev_tag);
	} else if (r->have_prev) {
		if (!r->prev_semver)
			return ferror_set(
			        FACTORY_ECONFIG,
			        "the last release's tag '%s' is not a semantic version with prefix '%s': give "
			        "--release-version",
			        r->prev_tag, r->tag_prefix);
		if ((error = semver_bump(&v, &r->prev_version, r->change)) < 0)
			return error;
	} else if (semver_parse(&v, r->initial_version, r->tag_prefix) < 0) {
		return ferror_set(FACTORY_ECONFIG, "bad setting release.initial_version: %s", ferror_last());
	}
	if (semver_format(r->version, sizeof(r->version), &v, NULL) < 0 ||
	    snprintf(r->tag, sizeof(r->tag), "%s%s", r->tag_prefix, r->version) >= (int)sizeof(r->tag))
		return ferror_set(FACTORY_ECONFIG, "version too long");
	log_info("version %s (%s%s)", r->version,
	         r->version_given && *r->version_given ? "given" : semver_change_name(r->change),
	         r->have_prev ? "" : ", first release");
	cJSON_AddStringToObject(report_data(r->job->rep), "version", r->version);
	cJSON_AddStringToObject(report_data(r->job->rep), "tag", r->tag);
	cJSON_AddStringToObject(report_data(r->job->rep), "change", semver_change_name(r->change));
	if (r->have_prev)
		cJSON_AddStringToObject(report_data(r->job->rep), "previous", r->prev_tag);
	return 0;
}
