/*
 * gitlab.h - a GitLab REST API v4 client over http.h and cJSON.
 *
 * Paths are relative to the API root and may use the placeholder ":id" for
 * the configured project (escaped as GitLab wants: numeric id or URL-encoded
 * full path), e.g. "projects/:id/issues/12/notes".
 *
 * Errors name the endpoint, the status and GitLab's own message, e.g.
 *   "POST projects/:id/labels: 409 Conflict: Label already exists"
 * and map statuses to codes: 400/422 FACTORY_EINVALID, 401/403 FACTORY_EAUTH,
 * 404 FACTORY_ENOTFOUND, 409 FACTORY_ECONFLICT, 429/5xx/network after retries
 * FACTORY_EUPSTREAM. A 2xx with a body that is not the expected JSON (HTML
 * error page, truncated or empty where JSON was due) is FACTORY_EINVALID.
 *
 * The token is sent only in the PRIVATE-TOKEN header, is registered with
 * log_add_secret(), is never printed, and is wiped from memory when the
 * client is freed.
 *
 * Dry run: with opts.dry_run set, every write (POST, PUT, DELETE) is logged
 * as "dry-run: would METHOD path body" and not sent; the call returns 0 with
 * *out set to NULL. Reads are sent as usual. Callers must handle *out == NULL
 * after a write.
 */
#ifndef FACTORY_GITLAB_H
#define FACTORY_GITLAB_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"
#include "http.h"

typedef struct gitlab gitlab;

typedef struct {
	const char *api_url;   /* e.g. "https://gitlab.com/api/v4" (no trailing slash needed) */
	const char *project;   /* numeric id or full path, may be NULL for non-project calls */
	const char *token;     /* copied; the caller should wipe its own copy */
	int dry_run;
	http_options http;     /* from http_options_init(), possibly adjusted */
	int notes_per_minute;  /* space note creation to at most this many a minute; 0 (the
				* default): no spacing. See "Note spacing" below. */
	int issues_per_minute; /* space issue creation likewise; 0 (the default): none */
} gitlab_options;

/*
 * Note spacing: GitLab limits note creation per user (60 a minute on
 * GitLab.com, 300 by default on a self-managed instance), an application
 * limit that the RateLimit-* headers do not show, so http.h's pacing cannot
 * see it coming. With notes_per_minute = N, every POST to
 * .../issues/:iid/notes or .../merge_requests/:iid/notes is sent at least
 * 60000 / N ms after the previous one of this client; the wait goes through
 * http_client_pause (counted as pacing). Dry-run writes are not spaced.
 *
 * Issue spacing: issue creation has an application limit of its own (200
 * a minute per user and project on GitLab.com; off by default on a
 * self-managed instance, where an administrator may set one), also absent
 * from the headers. With issues_per_minute = N, every POST to
 * projects/:id/issues is sent at least 60000 / N ms after the previous one
 * of this client, the same way. Both spacings are per client: jobs that
 * share a token and create at once should divide the figure between them.
 */

void gitlab_options_init(gitlab_options *o);

/* Create a client. Returns 0, FACTORY_ECONFIG (missing url or token) or
 * FACTORY_ENOMEM. Nothing is sent. */
int gitlab_new(gitlab **out, const gitlab_options *opts);
void gitlab_free(gitlab *gl);

/* The project as given, and its escaped form for paths. */
const char *gitlab_project(const gitlab *gl);
int gitlab_dry_run(const gitlab *gl);

/*
 * Point ":id" at another project (numeric id or full path; NULL or "" for
 * none), keeping everything else: the connection, the token, the counters
 * and the rate-limit pacing, which are the token's and not a project's.
 * This is how a job walks the projects of a group scope (common/scope.h)
 * with one client: switch, do the project's work, switch to the next.
 * Returns 0 or FACTORY_ENOMEM (the client then keeps its old project).
 */
int gitlab_set_project(gitlab *gl, const char *project);

/*
 * One request. `body` (may be NULL) is sent as JSON. On 2xx, *out gets the
 * parsed JSON (caller frees with cJSON_Delete), or NULL for 204 / empty
 * bodies on DELETE / dry-run writes. `path` is formatted printf-style.
 */
int gitlab_request(cJSON **out, gitlab *gl, const char *method, const cJSON *body,
		   const char *path_fmt, ...) __attribute__((format(printf, 5, 6)));

/* A GET whose body is text, not JSON (job traces): streamed into `sink`
 * (redirects followed). Returns 0 or an error as above. */
int gitlab_get_raw(gitlab *gl, http_sink_fn sink, void *sink_ctx, const char *path_fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Walk every page of a list endpoint. `query` (may be NULL) is appended
 * ("state=opened&labels=x"); per_page=100 is added. Keyset pagination is
 * used when `keyset_order_by` is non-NULL and the server answers with a
 * keyset Link (else it falls back to offset pagination transparently).
 * Pages are followed through Link rel="next", else X-Next-Page; totals are
 * never relied on. A keyset request refused with 400/405 on the first page
 * is sent again with offset pagination. A Link on another origin than
 * api_url (a GitLab whose external_url differs) is followed on api_url's
 * origin, so the token never leaves it. `cb` gets each element (borrowed:
 * copy what you keep); a non-zero return from cb stops the walk and is
 * returned.
 * At most `max_items` elements are visited (0: no limit).
 */
typedef int (*gitlab_item_fn)(void *ctx, const cJSON *item);
int gitlab_list_each(gitlab *gl, const char *path, const char *query, const char *keyset_order_by,
		     size_t max_items, gitlab_item_fn cb, void *ctx);
/* The same, collecting everything into one new array (*out, caller frees). */
int gitlab_list_all(cJSON **out, gitlab *gl, const char *path, const char *query, size_t max_items);

/* Counters: requests sent (retries included), of which writes; for reports.
 * The rate-limit fields come from http.h (see "Pacing" there). */
typedef struct {
	long requests;
	long reads;
	long writes;
	long dry_run_writes;  /* writes skipped by dry run */
	long retries;
	long throttled;            /* 429 answers received (each was retried or failed) */
	long paced;                /* requests that waited for the rate limit before they were sent */
	long paced_ms;             /* the total of those waits */
	long ratelimit_remaining;  /* last RateLimit-Remaining seen, -1 if none */
	long ratelimit_limit;      /* last RateLimit-Limit seen, -1 if none */
} gitlab_stats;
void gitlab_get_stats(gitlab_stats *out, const gitlab *gl);

/* The last HTTP status seen (0 if none), for callers that branch on it. */
long gitlab_last_status(const gitlab *gl);

/* ---- resources (thin wrappers over gitlab_request; JSON as GitLab returns it) ---- */

/* Labels: name, color ("#RRGGBB"), description. */
int gitlab_label_create(cJSON **out, gitlab *gl, const char *name, const char *color, const char *description);
int gitlab_label_update(cJSON **out, gitlab *gl, long label_id, const char *color, const char *description);

/* Issues. `fields` is a JSON object of the API's parameters (title,
 * description, labels, confidential, ...); borrowed. */
int gitlab_issue_get(cJSON **out, gitlab *gl, long iid);
int gitlab_issue_create(cJSON **out, gitlab *gl, const cJSON *fields);
int gitlab_issue_update(cJSON **out, gitlab *gl, long iid, const cJSON *fields);
/* Move labels in one PUT: add_labels and remove_labels together (either may
 * be NULL/empty: comma-separated names), so scoped labels behave the same on
 * Free and paid tiers. Label names are validated (non-empty, no comma,
 * at most 255 bytes) because add_labels silently creates unknown labels.
 * Spaces around names are dropped, control characters and a name both
 * added and removed are refused (FACTORY_EINVALID); with nothing to add or
 * remove no request is sent and *out is NULL. */
int gitlab_issue_move_labels(cJSON **out, gitlab *gl, long iid, const char *add, const char *remove);
/* Reorder issue `iid` with GitLab's meaning of the two parameters:
 * `after_id` is sent as move_after_id, the issue that is to come AFTER
 * ours (ours moves above it); `before_id` is sent as move_before_id, the
 * issue that is to come BEFORE ours (ours moves below it). Ids, not iids;
 * 0 = unset. */
int gitlab_issue_reorder(gitlab *gl, long iid, long after_id, long before_id);
int gitlab_note_create(cJSON **out, gitlab *gl, const char *noteable /* "issues"|"merge_requests" */,
		       long iid, const char *body, int internal);

/* Boards. */
int gitlab_board_create(cJSON **out, gitlab *gl, const char *name);
int gitlab_board_list_create(cJSON **out, gitlab *gl, long board_id, long label_id);

/* Merge requests. */
int gitlab_mr_create(cJSON **out, gitlab *gl, const cJSON *fields);
int gitlab_mr_merge(cJSON **out, gitlab *gl, long iid, int when_pipeline_succeeds);

/* Branches, pipelines, jobs, releases. */
int gitlab_branch_create(cJSON **out, gitlab *gl, const char *branch, const char *ref);
int gitlab_branch_delete(gitlab *gl, const char *branch);
int gitlab_job_retry(cJSON **out, gitlab *gl, long job_id);
int gitlab_job_trace(gitlab *gl, long job_id, http_sink_fn sink, void *sink_ctx);
int gitlab_release_create(cJSON **out, gitlab *gl, const cJSON *fields);

#endif
