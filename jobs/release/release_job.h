/*
 * release_job.h - the parts of factory-release: what a run holds and the
 * steps main.c calls in order. Each step is in its own file:
 *   collect.c   the last release, closed issues, merged merge requests,
 *               commits with a Changelog trailer, customer paths
 *   assess.c    verdicts (impact.h rules, then the model's second opinion),
 *               the version
 *   model.c     the optional model (llm.h)
 *   publish.c   the release, its resumption, the artifact, CHANGELOG.md,
 *               the verdict labels, the final state
 *   tell.c      notes on issues, emails to reporters, the chat webhook
 *
 * State lives in GitLab only (notes.h markers): the release description
 * says which release is being published, what is in it and which steps
 * are done; notes on the issues say who was told. A run that stops half-way
 * is finished by the next run, which tells nobody twice.
 */
#ifndef FACTORY_RELEASE_JOB_H
#define FACTORY_RELEASE_JOB_H

#include <cjson/cJSON.h>

#include "feedback.h"
#include "http.h"
#include "impact.h"
#include "job.h"
#include "notes.h"
#include "semver.h"
#include "smtp.h"

#define REL_SHA_LEN 40

typedef struct opinion rel_model; /* model.c: the model's second opinion (opinion.h) */

/* One reporter of an issue who left an address (from intake's internal note). */
typedef struct {
	char submission[FEEDBACK_ID_LEN + 1];
	char email[256];
	int told;  /* a mailed marker for this version exists */
	int tried; /* this run tried this address already */
} rel_reporter;

typedef struct {
	notes_item item;
	cJSON *issue; /* the issue as GitLab gave it (owned), NULL for a commit */
	impact_verdict v;
	char path[256];    /* a customer path it changed, "" if none */
	char category[16]; /* a commit's Changelog category */
	int has_mr;
	int model; /* the model changed the verdict */
	char model_reason[200];
	/* tell.c */
	rel_reporter *reporters;
	size_t nreporters;
	int announced; /* an announce note for this version exists */
} rel_item;

typedef struct {
	char sha[REL_SHA_LEN + 1];
	const cJSON *commit; /* borrowed from rel_run.commits */
} rel_commit;

typedef struct {
	job_ctx *job;
	gitlab *gl;
	impact_policy *policy;
	rel_model *model;
	long me; /* the Factory's user id (its own markers count only) */

	/* settings */
	const char *tag_prefix;
	const char *ref;    /* what to tag (a branch, tag or sha) */
	const char *branch; /* where CHANGELOG.md is committed */
	const char *version_given;
	const char *ci_tag; /* CI_COMMIT_TAG: a tag pipeline releases that tag */
	int not_a_version;  /* ... unless it is not a version tag */
	const char *initial_version;
	const char *changelog_file;
	const char *since; /* cut-off for a first release, or NULL */
	const char *sign;
	const char *webhook_url;
	int changelog;
	int changelog_skip_ci;
	long lookback_days;
	long max_items;

	/* the project */
	char *project_path;
	char *project_name;
	char *web_url;
	char *default_branch; /* owned; branch and ref may point here */

	/* the last release */
	int have_prev;
	char *prev_tag;
	long prev_cutoff; /* unix time: issues closed after it are new */
	int prev_semver;
	semver prev_version;

	/* this release */
	int resume;  /* finishing a release an earlier run began */
	int nothing; /* nothing changed: no release */
	long until;  /* unix time: issues closed up to it are in */
	char ref_sha[REL_SHA_LEN + 1];
	char version[NOTES_VERSION_MAX + 1];
	char tag[NOTES_VERSION_MAX + 32];
	char date[16];
	char *release_url;
	char *description; /* the release description as published (marker included) */
	notes_state state;
	fbuf notes; /* the release notes, Markdown, no markers */
	semver_change change;

	rel_item *items;
	size_t nitems;
	long skipped;

	cJSON *mrs;         /* merged merge requests (owned) */
	cJSON *commits;     /* new commits, newest first (owned) */
	rel_commit *by_sha; /* the same, sorted by sha */
	size_t ncommits;

	/* telling */
	smtp *mail;
	char *smtp_password;
	http_client *http;
	long failures; /* steps that failed and the next run will retry */
} rel_run;

/* main.c */
void rel_item_free_all(rel_run *r);
int rel_add_item(rel_item **out, rel_run *r);

/* collect.c */
int rel_project(rel_run *r);
int rel_find_last(rel_run *r); /* sets have_prev / prev_*, or resume (+ state, description) */
int rel_collect(rel_run *r);   /* issues, merge requests, commits; items with paths and links */
const rel_commit *rel_commit_find(const rel_run *r, const char *sha);
void rel_format_time(char *out, size_t len, long t);

/* assess.c */
int rel_assess(rel_run *r); /* verdicts, the model, drops skipped issues */
int rel_choose_version(rel_run *r);

/* model.c */
int rel_model_open(rel_model **out, job_ctx *ctx);
void rel_model_free(rel_model *m);
int rel_model_ask(rel_model *m, rel_run *r);
void rel_model_counters(const rel_model *m, long *asked, long *changed, long *ignored);

/* publish.c */
int rel_render(rel_run *r);      /* notes + description for a new release */
int rel_create(rel_run *r);      /* POST the release (or pick up one a lost answer made) */
int rel_load_resume(rel_run *r); /* items of an unfinished release from its marker */
int rel_artifact(rel_run *r);
int rel_changelog(rel_run *r);
int rel_labels(rel_run *r);
int rel_update_state(rel_run *r); /* PUT the description with the current state */

/* tell.c */
int rel_read_issue_notes(rel_run *r);
int rel_announce(rel_run *r);
int rel_email(rel_run *r);
int rel_webhook(rel_run *r);

/* Record a failed step that the next run retries: logged, counted, and
 * turned into 0 so the run goes on; GitLab being down and running out of
 * memory end the run at once (returned as they are). */
int rel_step_failed(rel_run *r, int error, const char *what);

#endif
