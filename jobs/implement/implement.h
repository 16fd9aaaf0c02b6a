/*
 * implement.h - the main mode of factory-implement, shared by its files:
 *
 *   run.c     settings, the run's identity, phase 1 then phase 2
 *   heal.c    phase 1: issues In Progress and in Validation made true
 *   take.c    phase 2: the first Up Next issue claimed, worked, delivered
 *   work.c    the git side of phase 2 and of rebases: clone, branch,
 *             commit, push (common/gitops.h)
 *   task.c    what the agent is told: the issue, its comments, linked
 *             issues, earlier attempts, the repository's guidance files
 *   notes.c   the Factory's notes, markers, labels and trace lines
 *
 * What the Factory knows about an issue is kept in GitLab (common/claim.h):
 * claims and events in its own notes. A job prints, to its log, lines
 *   factory:stage {"issue":12,"claim":345,"stage":"push"}
 *   factory:outcome {"issue":12,"claim":345,"outcome":"budget","why":"..."}
 * so that when it dies before it can say so in GitLab, the next run reads
 * its trace and knows how far it got.
 */
#ifndef FACTORY_IMPLEMENT_H
#define FACTORY_IMPLEMENT_H

#include <cjson/cJSON.h>

#include "board.h"
#include "claim.h"
#include "git.h"
#include "gitops.h"
#include "job.h"
#include "scope.h"

/* Diagnoses: why a claim ended without a delivery. */
#define DIAG_BUDGET "budget"               /* the agent ran out of a budget */
#define DIAG_TOOL_FAILURES "tool_failures" /* its tool calls kept failing */
#define DIAG_NO_FINISH "no_finish"         /* it stopped without calling finish */
#define DIAG_NEEDS_INFO "needs_info"       /* the issue lacks information or is ambiguous */
#define DIAG_REFUSED "refused"             /* the model refused */
#define DIAG_AGENT_ERROR "agent_error"     /* the model's service failed */
#define DIAG_PUSH_FAILED "push_failed"
#define DIAG_MR_FAILED "mr_failed"
#define DIAG_CANCELLED "cancelled"         /* the CI job was cancelled */
#define DIAG_TIMED_OUT "timed_out"         /* the CI job hit its time limit */
#define DIAG_OVERTIME "overtime"           /* still running past the claim's lease */
#define DIAG_JOB_FAILED "job_failed"       /* the job failed, no more is known */
#define DIAG_JOB_GONE "job_gone"           /* GitLab no longer knows the job */
#define DIAG_LEASE_EXPIRED "lease_expired" /* no job to ask (outside CI) and the lease is over */
#define DIAG_FAILED "failed"               /* the job said it failed, for another reason */

typedef struct {
	job_ctx *job;
	gitlab *gl;
	report *rep;
	int dry_run;

	/* settings (implement.*, git.*) */
	long max_attempts;
	long lease_s;
	long settle_ms;
	long grace_s;
	long candidates;
	int people_merge;
	int draft;
	int do_heal;
	int do_take;
	int direct;                 /* delivery: direct push allowed for some classes */
	const char *direct_classes; /* comma-separated labels */
	const char *check_command;
	long check_timeout_s;
	const char *checkout; /* "auto" or "clone" */
	const char *workdir;
	int keep_workdir;
	int push_tries;
	gitops_identity author;
	gitops_identity committer;
	long wip_limit;       /* implement.wip_limit: In Progress issues per project, 0: none */
	long group_wip_limit; /* implement.group_wip_limit: In Progress issues in the group, 0: none */

	/* parallel jobs (GitLab's parallel: N): this job is node_index of node_total */
	long node_index; /* 1..node_total (CI_NODE_INDEX), 1 when not parallel */
	long node_total; /* CI_NODE_TOTAL, 1 when not parallel */

	/* a group scope (scope.h): NULL for the project scope */
	scope *sc;
	char *group;      /* the group as given */
	char *group_path; /* "groups/<escaped group>" for the group endpoints */
	long project_id;  /* the project ":id" points at now (group scope), 0 before the first */

	/* from GitLab */
	long me;
	char *project_path;
	char *project_web_url;
	char *default_branch;
	char *clone_url;

	/* this run */
	long pipeline_id;
	long job_id;
	char job_url[512];
	char run_id[33];
	char *token;
	cJSON *healed;  /* report: what phase 1 found and did */
	cJSON *timings; /* report: milliseconds per step */
} impl_run;

/* run.c */
int impl_main(job_ctx *ctx);
long impl_now(void); /* unix seconds */
long impl_ms(void);  /* monotonic milliseconds */
void impl_time(impl_run *r, const char *step, long since_ms);
int impl_project(impl_run *r); /* project path, default branch, clone URL (once) */
/* Group scope: point the client and the project fields at project `id`.
 * FACTORY_ENOTFOUND when it is not a project of the scope that takes part
 * (left out, or an empty repository); 0 at once in the project scope. */
int impl_enter_project(impl_run *r, long id);
/* The issues of `label` (open, in board order, at most `max`, 0: all): the
 * project's, or the group's whose project takes part. Caller frees. */
int impl_list_label(cJSON **out, impl_run *r, const char *label, size_t max);
/* Is the issue this node's to heal? (its id modulo node_total) */
int impl_node_owns(const impl_run *r, const cJSON *issue);

/* heal.c */
int impl_heal(impl_run *r);
/* Decide what to do after a claim ended without delivery and do it (also
 * used by phase 2 when its own agent stops short). `claim` is the ended
 * claim; `why` one line (outside text allowed: it is cleaned). */
int impl_heal_claim(impl_run *r, const cJSON *issue, const claim_history *h, const claim_entry *claim,
                    const char *diagnosis, const char *why, const char *found);

/* take.c */
int impl_take(impl_run *r);

/* One issue asked for by a person (implement.issue: --issue, or
 * FACTORY_IMPLEMENT_ISSUE, or FACTORY_ISSUE): phase 2 takes it instead of
 * the top of Up Next (take.c says how). */
typedef struct {
	long iid;          /* 0: none asked for */
	char project[256]; /* the project of "path#N", "" when only N was given */
	char source[64];   /* where it came from: "--issue", "FACTORY_ISSUE", ... */
	char value[96];    /* the value as given, cut, for messages */
} impl_request;

/* Read the request from the settings: 0 with out->iid 0 when there is
 * none, 0 with it filled, or FACTORY_ECONFIG naming the variable for a bad
 * value (not a whole number from 1, "path#N" with no path, N alone in a
 * group scope, set in the settings file, FACTORY_ISSUE and
 * FACTORY_IMPLEMENT_ISSUE disagreeing). Reads nothing from GitLab. */
int impl_request_read(impl_request *out, const fconfig *cfg, int group_scope);

/* notes.c */
int impl_history(claim_history *h, cJSON **notes_out, impl_run *r, long iid);
/* Post a Factory note: `text` (ours, already cleaned where it quotes
 * outside text) then the marker; *note_id gets its id (0 in a dry run). */
int impl_post_note(long *note_id, impl_run *r, long iid, const char *text, const char *kind, const cJSON *fields);
int impl_post_event(long *note_id, impl_run *r, long iid, const claim_event *e, const char *text);
int impl_delete_note(impl_run *r, long iid, long note_id);
int impl_move(impl_run *r, long iid, const char *add, const char *remove);
/* Has the issue this label? */
int impl_has_label(const cJSON *issue, const char *name);
/* Append `text` cleaned (untrusted.h) and cut at `max` bytes to `out`. */
int impl_clean(fbuf *out, const char *text, size_t max);
/* One cleaned line (no newlines), cut at `max` bytes, into a caller buffer. */
void impl_line(char *out, size_t len, const char *text);
/* factory:stage / factory:outcome lines on standard output. */
void impl_stage(impl_run *r, long iid, long claim_id, const char *stage);
void impl_outcome(impl_run *r, long iid, long claim_id, const char *outcome, const char *why);
/* Read a job's trace tail and find this claim's last stage and outcome. */
int impl_trace_find(char *stage, size_t stage_len, char *outcome, size_t outcome_len, char *why, size_t why_len,
                    impl_run *r, long job_id, long iid, long claim_id);
long impl_num(const cJSON *o, const char *key);
const char *impl_str(const cJSON *o, const char *key);

/* work.c */
typedef struct {
	fgit_repo *repo;
	char dir[3072];  /* the parent directory made for this run */
	char root[4096]; /* the work tree */
} impl_checkout;

/* Clone the project (or reuse the CI checkout's objects) into a new
 * directory and check out `branch` made from the default branch. */
int impl_checkout_branch(impl_checkout *co, impl_run *r, const char *branch, int from_remote_branch);
void impl_checkout_release(impl_checkout *co, impl_run *r);
/* As root, the sandbox handed the work tree (not .git/) to its command
 * user; take it back once the agent is done, so nothing it left running
 * could change it and git's stat cache matches again (no file re-read). */
int impl_reclaim_tree(impl_checkout *co);
gitops_remote impl_remote(const impl_run *r);

/* task.c */
int impl_build_task(fbuf *out, impl_run *r, const cJSON *issue, const cJSON *notes, const claim_history *h,
                    const char *root);
/* The branch name for an issue: factory/<iid>-<slug of the title>. */
void impl_branch_name(char *out, size_t len, long iid, const char *title);
/* The Changelog: trailer value for an issue's type label. */
const char *impl_changelog(impl_run *r, const cJSON *issue);

#endif
