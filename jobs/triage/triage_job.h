/*
 * triage_job.h - what the parts of factory-triage share (this folder only).
 *
 *   main.c   the commands: the scheduled run, classify, policy
 *   scan.c   the list pass, the look at changed issues, the writes
 *   order.c  the Up Next list: who is in it and in which order
 *   model.c  asking a configured model about ambiguous issues
 */
#ifndef FACTORY_TRIAGE_JOB_H
#define FACTORY_TRIAGE_JOB_H

#include <cjson/cJSON.h>

#include "job.h"
#include "llm.h"
#include "triage.h"

typedef struct opinion tri_model; /* model.c: the model's opinion (opinion.h) */

/* What the run means to do with an issue. */
enum {
	PLAN_NONE = 0,    /* nothing: unchanged, or a person's */
	PLAN_TRIAGE,      /* set the triage labels (and maybe confidential), leave a note */
	PLAN_LOOK,        /* triaged by us and the rules now disagree: read our last note first */
	PLAN_HANDOVER,    /* a person changed our labels: remove the mark, leave a note */
};

typedef struct {
	long iid, id;
	long upvotes;
	char created_at[40];
	double relpos;
	int has_relpos;
	/* triage labels as they are, then as planned */
	int priority, severity, fast_lane;
	int marked, up_next, busy, confidential;
	uint64_t content;
	/* the plan */
	int plan;
	cJSON *issue;          /* kept for PLAN_LOOK */
	triage_decision d;     /* for PLAN_TRIAGE */
	char *add, *remove;    /* label moves, comma-separated, NULL when none */
	int set_confidential;
	int want_up_next;
	int gone;              /* deleted (404) while the run went on */
	const char *why;       /* one word for the report: "new", "changed", "policy", ... */
} tri_item;

typedef struct {
	job_ctx *job;
	triage_policy *policy;
	tri_model *model;      /* NULL: rules alone decide */
	long wip;
	tri_item *v;
	size_t n, alloc;
	long me;               /* the Factory's user id, 0 until needed */
	long failures;         /* writes that failed for a reason other than a deleted issue */
	const char *skip_labels; /* triage.skip_labels, read at start-up (borrowed from the settings) */
	cJSON *decisions;      /* report data */
} tri_run;

/* scan.c */
int tri_scan(tri_run *r);
int tri_look(tri_run *r);
int tri_write(tri_run *r);
void tri_run_release(tri_run *r);
/* The report's markdown section: decisions and the Up Next list. */
int tri_report_markdown(tri_run *r);
/* Decide for `issue` as the run does (rules, then the model when ambiguous). */
int tri_decide(triage_decision *d, tri_model *m, const triage_policy *p, const cJSON *issue);

/* order.c: choose the Up Next list (sets want_up_next), then put it in order. */
int tri_choose_up_next(tri_run *r);
int tri_reorder(tri_run *r);

/* model.c */
int tri_model_open(tri_model **out, job_ctx *ctx, const triage_policy *p);
void tri_model_free(tri_model *m);
/* Ask about an ambiguous decision; a failed call or a bad answer is a
 * warning and leaves `d` as it was. Returns 0, or FACTORY_ENOMEM. */
int tri_model_ask(tri_model *m, triage_decision *d, const cJSON *issue);
void tri_model_counters(const tri_model *m, long *asked, long *changed, long *ignored);

#endif
