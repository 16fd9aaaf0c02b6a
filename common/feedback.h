/*
 * feedback.h - what a customer's submission is: parsed from an HTTP body
 * (JSON or form-encoded), validated, kept as JSON in the intake spool, and
 * turned into a GitLab issue and an internal note; plus the hidden markers
 * that tie GitLab back to a submission (the release job reads the reporter
 * marker to tell the customer when the fix ships).
 *
 * Fields (the API of POST /v1/feedback and of `factory-intake create`):
 *   kind         bug | feature | support | feedback          (required)
 *   title        1..FEEDBACK_TITLE_MAX characters, one line   (required)
 *   description  1..FEEDBACK_DESCRIPTION_MAX characters       (required)
 *   email        optional; a plain address (local@domain.tld), <= 254 bytes
 *   page_url     optional; an http(s) URL, <= 2048 bytes
 *   app_version  optional; <= 64 printable characters
 *   context      optional; a JSON object (in a form, a JSON string) of at
 *                most 8 KiB: user_agent, viewport, language (strings),
 *                console_errors (up to 10 strings); other keys are dropped
 *   website      the honeypot: must be absent or empty
 *   elapsed_ms   the widget's timing field: milliseconds the form was open
 * Unknown top-level fields are ignored.
 *
 * Markers (HTML comments, invisible in GitLab; untrusted_clean() turns
 * "<!--" from customers into "&lt;!--", so customer text cannot forge them):
 *   in the issue description   <!-- factory-intake submission=ID -->
 *   in the internal note       <!-- factory-intake reporter submission=ID email=ADDRESS -->
 * ID is "fi-" followed by 24 lowercase hex digits.
 */
#ifndef FACTORY_FEEDBACK_H
#define FACTORY_FEEDBACK_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"

#define FEEDBACK_TITLE_MAX 200         /* characters */
#define FEEDBACK_DESCRIPTION_MAX 20000 /* characters */
#define FEEDBACK_CONTEXT_MAX 8192      /* bytes of context JSON */
#define FEEDBACK_ID_LEN 27             /* "fi-" + 24 hex */
#define FEEDBACK_MAX_FIELD_ERRORS 10
#define FEEDBACK_FOLD_LEN 32           /* hex digits of the folding key */

typedef enum { FEEDBACK_BUG = 0, FEEDBACK_FEATURE, FEEDBACK_SUPPORT, FEEDBACK_FEEDBACK } feedback_kind;

typedef struct {
	char id[FEEDBACK_ID_LEN + 1];  /* "" until feedback_new_id() */
	feedback_kind kind;
	char *title;          /* trimmed, valid UTF-8 */
	char *description;    /* valid UTF-8, \r\n folded to \n */
	char *email;          /* NULL when absent */
	char *page_url;       /* NULL when absent */
	char *app_version;    /* NULL when absent */
	cJSON *context;       /* object with the known keys only, or NULL */
	long elapsed_ms;      /* -1 when absent */
	int honeypot;         /* the honeypot field was filled */
	long long received_ms; /* unix time in ms, 0 when unknown */
	char source[16];      /* label source::<source>; "" means "customer" */
	char fold[FEEDBACK_FOLD_LEN + 1]; /* intake's duplicate-folding key (a hash, hex), "" when none */
} feedback;

void feedback_init(feedback *f);
void feedback_release(feedback *f);

/* Why a body was refused: an HTTP status, a stable code and a sentence,
 * plus per-field messages for validation failures. */
typedef struct {
	int status;            /* 400, 415 or 422 */
	const char *code;      /* "malformed_json", "malformed_form", "invalid_utf8",
	                          "unsupported_media_type", "validation_failed" */
	char message[256];
	int nfields;
	struct {
		const char *field;
		char message[160];
	} fields[FEEDBACK_MAX_FIELD_ERRORS];
} feedback_problem;

/*
 * Parse and validate a request body. `content_type` is the request's
 * Content-Type header (parameters such as charset allowed; NULL means JSON).
 * Returns 0 with `out` filled (release it in every case), or FACTORY_EINVALID
 * with `problem` describing what is wrong, or FACTORY_ENOMEM. Never reads
 * past `len`; `body` need not be NUL-terminated.
 */
int feedback_parse(feedback *out, feedback_problem *problem, const char *content_type, const char *body, size_t len);

/* The same validation for fields given one by one (`factory-intake create`);
 * NULL means absent. */
int feedback_from_fields(feedback *out, feedback_problem *problem, const char *kind, const char *title,
			 const char *description, const char *email, const char *page_url, const char *app_version);

/* The problem as a JSON body: {"error": code, "message": ..., "fields": {name: message}}. */
int feedback_problem_json(fbuf *out, const feedback_problem *problem);
/* The problem as one line for people: "title: is required; kind: ...". */
int feedback_problem_text(fbuf *out, const feedback_problem *problem);

/* Give `f` a new random id (from getrandom). 0 or FACTORY_ERR. */
int feedback_new_id(feedback *f);

/* The spool form: one JSON object with every field, id, received_ms and
 * (when set) fold, the key intake folds duplicates by, so the folding
 * table can be rebuilt from the spool after a restart. */
int feedback_to_json(fbuf *out, const feedback *f);
/* Back from the spool form; FACTORY_EINVALID when it is not one. */
int feedback_from_json(feedback *out, const char *json, size_t len);

const char *feedback_kind_name(feedback_kind k);

/*
 * The GitLab issue for `f`: a new JSON object with title, description and
 * labels ("source::<source>,type::<kind>", source "customer" unless set). Every piece of customer text goes
 * through untrusted_clean()/untrusted_title(); the description ends with the
 * submission marker. The email is never in it.
 */
int feedback_issue_fields(cJSON **out, const feedback *f);

/* The internal note that keeps the reporter's email: text for people and
 * the reporter marker. FACTORY_ENOTFOUND when `f` has no email. */
int feedback_reporter_note(fbuf *out, const feedback *f);

/* The markers, into `out`. */
int feedback_issue_marker(fbuf *out, const char *id);

/* 1 if `text` holds the issue marker of submission `id`, else 0. */
int feedback_has_issue_marker(const char *text, const char *id);
/* 1 if `text` holds a reporter marker of submission `id`, else 0. */
int feedback_has_reporter_marker(const char *text, const char *id);

/*
 * Find a reporter marker in a note body (for the release job). On 0, `id_out`
 * (FEEDBACK_ID_LEN + 1 bytes) and `email_out` (email_len bytes) hold the
 * submission id and the address; FACTORY_ENOTFOUND when there is none or it
 * is malformed. Only markers at the start of a line count.
 */
int feedback_find_reporter(char *id_out, char *email_out, size_t email_len, const char *note_body);

/* 1 if `email` is an address intake accepts (see above), else 0. */
int feedback_email_valid(const char *email);

#endif
