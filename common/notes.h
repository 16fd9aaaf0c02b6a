/*
 * notes.h - release notes: the items of a release, the groups they fall
 * in, the plain line customers read for each, the renderings (Markdown for
 * the release, CHANGELOG.md and the job artifact; Slack-compatible text for
 * the chat webhook; plain text for email), and the hidden markers in which
 * factory-release keeps its state in GitLab. No I/O: every function here is
 * a pure function of its arguments, so the rules can be tested alone.
 *
 * Confidentiality: an item is "private" when it comes from a confidential
 * issue or is a security fix. A private item's title, summary and links
 * never appear in any rendering: it gets a neutral line ("A security issue
 * was fixed") and counts. Everything else that came from people (titles,
 * "Release note:" lines, a model's summary) goes through untrusted_title()
 * before it is rendered, so no rendering runs a quick action, mentions
 * anyone, or carries a forged marker.
 *
 * Markers (HTML comments, one per line, at the start of a line; only lines
 * that start with the marker count, so text quoted from elsewhere does not):
 *   release description   <!-- factory-release v1 version=V until=T state=S webhook=W items=L -->
 *       V a semantic version, T the cut-off (UTC, ISO 8601: issues closed up
 *       to T are in), S "publishing" or "done", W 0 or 1 (the chat post was
 *       made), L the items: "#12:c" (issue 12, customer-facing), "#15:i"
 *       (internal), "@<40 hex>:c" (a commit), comma-separated, or "-".
 *   a note on an issue    <!-- factory-release v1 announce version=V -->
 *   an internal note      <!-- factory-release v1 mailed version=V submission=ID -->
 *   CHANGELOG.md          <!-- factory-release v1 changelog version=V -->
 */
#ifndef FACTORY_NOTES_H
#define FACTORY_NOTES_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"

typedef enum {
	NOTES_SECURITY = 0,
	NOTES_FEATURE,
	NOTES_FIX,
	NOTES_PERFORMANCE,
	NOTES_OTHER,
	NOTES_NGROUPS
} notes_group;

#define NOTES_MAX_MRS 8
#define NOTES_TITLE_MAX 200 /* bytes of a rendered line's text */
#define NOTES_VERSION_MAX 63

typedef struct {
	long iid;
	char *url; /* web_url, may be NULL */
} notes_link;

typedef struct {
	int is_commit; /* 0: an issue; 1: a commit with a Changelog trailer */
	long iid;      /* the issue */
	char sha[41];  /* the commit */
	notes_group group;
	int customer;     /* 1 customer-facing, 0 internal */
	int confidential; /* a confidential issue */
	int breaking;
	char *title;   /* as GitLab has it (not yet cleaned) */
	char *summary; /* a plain line from a person or a model, or NULL */
	char *url;     /* web_url of the issue or commit, or NULL */
	notes_link mrs[NOTES_MAX_MRS];
	size_t nmrs;
} notes_item;

void notes_item_init(notes_item *it);
void notes_item_release(notes_item *it);
/* Replace a string field with a copy of `value` (NULL clears). 0 or ENOMEM. */
int notes_item_set(char **field, const char *value);
/* Add a merge request link (duplicates and links past NOTES_MAX_MRS are
 * ignored). 0 or ENOMEM. */
int notes_item_add_mr(notes_item *it, long iid, const char *url);
/* 1 when the item's text must never be shown: confidential or security. */
int notes_item_private(const notes_item *it);
/* "#12" or "@0123abcd" (the first 8 hex of the commit) into `out`. */
void notes_item_key(char *out, size_t len, const notes_item *it);

/* "Security", "New features", "Fixes", "Performance", "Other changes". */
const char *notes_group_title(notes_group g);
/* "security", "feature", "fix", "performance", "other". */
const char *notes_group_name(notes_group g);

/*
 * The line customers read for `it`, without links: its summary when set,
 * else its title made plain (a leading "feat:", "fix(ui):", "[bug]",
 * "Bug:" and the like dropped, the first letter upper-cased, a trailing
 * full stop dropped), cleaned with untrusted_title() and cut at
 * NOTES_TITLE_MAX bytes. A private item gets a neutral line for its group.
 */
int notes_plain_line(fbuf *out, const notes_item *it);

typedef struct {
	const char *project;     /* the project's name, for the chat text and email */
	const char *version;     /* "1.2.0" */
	const char *date;        /* "2026-11-27" */
	const char *release_url; /* may be NULL */
} notes_meta;

/*
 * The release notes in Markdown:
 *   ## V (DATE)
 *   ### Security / New features / Fixes / Performance / Other changes
 *       (customer-facing items, in that order, empty groups left out;
 *       security items as one neutral line with their count)
 *   ### Internal   (the rest, one short line each)
 * Each public line ends with its links: ([#12](url), [!7](url)) or the
 * commit ([abc1234](url)). "No customer-facing changes." when there are
 * none. Items are rendered in the order given within a group.
 */
int notes_render_markdown(fbuf *out, const notes_meta *m, const notes_item *items, size_t n);

/*
 * The chat announcement (Slack mrkdwn; &, < and > escaped): a headline with
 * the release link, then one bullet per customer-facing item ("New
 * feature: ...", "Fix: ...", security as a count), then the number of
 * internal changes. At most 20 bullets; the rest are counted.
 */
int notes_render_chat(fbuf *out, const notes_meta *m, const notes_item *items, size_t n);

/*
 * The body of the email to one reporter about the items they reported
 * (`mine`, `n`): plain text, lines ending "\n", no links to confidential
 * issues. `sign` (may be NULL) signs it.
 */
int notes_render_email(fbuf *out, const notes_meta *m, const notes_item *const *mine, size_t n, const char *sign);

/* ---- state markers ---- */

typedef struct {
	int is_commit;
	long iid;
	char sha[41];
	int customer;
} notes_ref;

typedef struct {
	char version[NOTES_VERSION_MAX + 1];
	char until[32];
	int done;
	int webhook;
	notes_ref *items;
	size_t nitems;
} notes_state;

void notes_state_init(notes_state *s);
void notes_state_release(notes_state *s);
/* Append a ref. 0 or ENOMEM. */
int notes_state_add(notes_state *s, const notes_ref *r);

/* The marker line (no newline). FACTORY_EINVALID when the version or the
 * cut-off holds characters a marker cannot carry. */
int notes_state_format(fbuf *out, const notes_state *s);
/*
 * Find and parse the release marker in `text` (a release description).
 * FACTORY_ENOTFOUND when there is none, FACTORY_EINVALID when a line
 * starts like one but does not parse (the message says why). At most
 * 100,000 items are read.
 */
int notes_state_parse(notes_state *out, const char *text);
/* `text` with its release marker line replaced by the marker of `s` (or
 * the marker appended on a line of its own when there was none). */
int notes_state_put(fbuf *out, const char *text, const notes_state *s);
/* `text` without any line that starts with "<!-- factory-release ",
 * trailing blank lines dropped. */
int notes_strip_markers(fbuf *out, const char *text);

/* "<!-- factory-release v1 WHAT version=V[ EXTRA] -->" (no newline).
 * `extra` (may be NULL) is "submission=ID" for the mailed marker.
 * FACTORY_EINVALID when a part holds a blank, '<', '>' or a control. */
int notes_marker(fbuf *out, const char *what, const char *version, const char *extra);
/* 1 when a line of `text` starts with exactly that marker, else 0. */
int notes_has_marker(const char *text, const char *what, const char *version, const char *extra);

/* ---- reading what GitLab gives ---- */

/*
 * The Changelog category of a commit as GitLab returns it: the trailers
 * object's "Changelog" (any case of the key), else a "Changelog: x" line in
 * the message's last paragraph. Lower-cased into `out`. FACTORY_ENOTFOUND
 * when there is none; FACTORY_EINVALID when it is not one of GitLab's
 * categories: added, fixed, changed, deprecated, removed, security,
 * performance, other.
 */
int notes_commit_category(char *out, size_t len, const cJSON *commit);
/* The group of a category (added -> features, fixed -> fixes, security,
 * performance, the rest -> other); *breaking set for "removed". */
notes_group notes_category_group(const char *category, int *breaking);

/*
 * Issue numbers referred to in `text` (a commit message, a merge request's
 * title or description) into `out` (at most `max`, no duplicates, in
 * order). With `closing` only those GitLab closes on merge: after
 * "close(s|d)/closing", "fix(es|ed|ing)", "resolve(s|d)/resolving",
 * "implement(s|ed|ing)" (any case, optional ':'), a list of references
 * joined by ',', "and" or blanks. References: "#12", "<project_path>#12",
 * and URLs ending "/<project_path>/-/issues/12"; another project's
 * references are not ours and are skipped. Without `closing`, every such
 * reference counts. Returns the number found (>= 0).
 */
size_t notes_issue_refs(long *out, size_t max, const char *text, const char *project_path, int closing);

/*
 * A "Release note: ..." line in a description (start of a line, any case,
 * blanks allowed before; the text after it must not be empty), into `out`
 * as written (cleaning happens when rendered). FACTORY_ENOTFOUND when none.
 */
int notes_release_note(fbuf *out, const char *description);

#endif
