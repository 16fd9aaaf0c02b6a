/*
 * triage.h - the triage decision: an issue's type, severity, priority, fast
 * lane and confidentiality, with the reasons, as a pure function of the
 * issue (GitLab's JSON, as the API returns it) and a policy. Both
 * `factory-triage classify` and the scheduled run call triage_decide(), so
 * a decision can be reproduced and explained without a GitLab.
 *
 * The policy is YAML: the built-in default (triage_default_policy_yaml,
 * printed by `factory-triage policy`), overridden by the project's
 * .factory.yml `triage:` section:
 *
 *   wip_limit: 5               issues the Up Next list holds (1..100)
 *   threshold: 3               score a type needs to be decided by rules alone
 *   security_threshold: 5      score that makes an issue a security issue
 *   ambiguous_margin: 1        a runner-up this close to the winner makes it ambiguous
 *   default_type: support      the type when no rule is decisive
 *   default_severity: 3        a bug's severity when no rule names one
 *   priorities: {security: 1, bug: {1: 2, 2: 2, 3: 3, 4: 5}, feature: 4, support: 4,
 *                feedback: 5, chore: 4, revenue: 3, fast_lane: 2}
 *   limits: {match_limit: .., depth_limit: .., max_subject: ..}   (rules.h)
 *   llm: {enabled: true, max_issues: 20}   ask a configured model about ambiguous issues
 *   rules: [...]               replaces the built-in rules
 *   extra_rules: [...]         added to them
 *   disable_rules: [name...]   removes built-in rules by name
 *
 * A rule (rules.h syntax) adds its `weight` (default 1) to the score of its
 * `type` (security, bug, feature, support, feedback, chore), may name a bug
 * `severity` (1 worst .. 4) and raise `signal`s: revenue (billing, paying or
 * several customers), polish (typos, cosmetics, wording), fast_lane (red
 * default-branch pipeline, failed deployment, billing down). Rules look at
 * "title", "body" (the description) and "labels" (the issue's labels that
 * are not triage's own, one per line). The reasons quote what a rule
 * matched (cleaned, cut at 80 bytes), unless the rule says `quote: false`
 * (rules that match secrets: a note must never repeat a key).
 *
 * The decision, in order:
 *   1. security when the security score reaches security_threshold or the
 *      issue carries type::security: priority 1, confidential, always;
 *   2. else the type with the highest score (ties: bug, feature, support,
 *      chore, feedback), or default_type when none reaches `threshold`
 *      (ambiguous); ambiguous too when the runner-up is within the margin;
 *   3. bugs get a severity: the worst any matching rule names, else 4 when
 *      the polish signal is up, else default_severity;
 *   4. priority from `priorities` (bugs by severity); the revenue signal
 *      raises it to priorities.revenue unless the issue is polish; the fast
 *      lane raises it to priorities.fast_lane;
 *   5. labels a person put on the issue win (unless TRIAGE_FRESH): a
 *      priority::1..5 label is kept as the priority, a type:: label as the
 *      type (type::security still means security), a severity:: label as
 *      the severity, and fast-lane keeps the fast lane. decision.human says
 *      one of them changed the outcome.
 * Labels that are not ours, or not valid (priority::urgent, priority::9),
 * are never removed and never break anything; invalid ones are named in the
 * reasons.
 */
#ifndef FACTORY_TRIAGE_H
#define FACTORY_TRIAGE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rules.h"

typedef enum {
	TRIAGE_SECURITY = 0,
	TRIAGE_BUG,
	TRIAGE_FEATURE,
	TRIAGE_SUPPORT,
	TRIAGE_FEEDBACK,
	TRIAGE_CHORE,
	TRIAGE_NTYPES
} triage_type;

/* "security", "bug", ...; and back (-1 if unknown). */
const char *triage_type_name(triage_type t);
int triage_type_parse(const char *s);

/* The label that marks an issue whose triage labels the Factory set (and so
 * may set again when the issue changes). A person who changes a triage
 * label takes the issue over: the Factory then removes this label and
 * leaves the issue to them. */
#define TRIAGE_MARK_LABEL "triage::factory"
#define TRIAGE_MARK_COLOR "#D4C5F9"
#define TRIAGE_MARK_DESCRIPTION \
	"Triaged by factory-triage, which re-triages it when it changes; change a triage label to take it over"

/* The built-in policy, YAML. */
extern const char triage_default_policy_yaml[];

typedef struct triage_policy triage_policy;

/*
 * The policy: the built-in YAML, with `override` (the .factory.yml
 * `triage:` mapping as cJSON; NULL for none) laid over it as described
 * above. `origin` names the override in messages (".factory.yml").
 * Returns 0, FACTORY_ECONFIG naming the key or rule that is wrong, or
 * FACTORY_ENOMEM.
 */
int triage_policy_new(triage_policy **out, const cJSON *override, const char *origin);
void triage_policy_free(triage_policy *p);

long triage_policy_wip_limit(const triage_policy *p);
/* llm.enabled (0/1) and llm.max_issues (how many issues one run may ask about). */
int triage_policy_llm_enabled(const triage_policy *p);
long triage_policy_llm_max(const triage_policy *p);
/* The rule set (borrowed), for reports. */
const rules *triage_policy_rules(const triage_policy *p);
/* The effective policy as one JSON object (borrowed), for reports. */
const cJSON *triage_policy_json(const triage_policy *p);

/* Flags of triage_decide(). */
#define TRIAGE_FRESH 1u   /* ignore triage labels on the issue: the rules' own verdict */

typedef struct {
	triage_type type;
	int severity;           /* 1..4 for bugs, 0 for other types */
	int priority;           /* 1..5 */
	int fast_lane;
	int confidential;       /* the issue should be confidential (security) */
	int ambiguous;          /* no type was decisive: a model may be asked */
	int human;              /* a person's label decided part of it */
	int model;              /* a model's answer changed it (triage_apply_model) */
	double scores[TRIAGE_NTYPES];
	size_t limit_hits;      /* pattern matches abandoned at a limit */
	size_t truncated;       /* fields only partly searched */
	cJSON *rules;           /* array of names of the rules that matched */
	cJSON *reasons;         /* array of short strings, untrusted text cleaned */
} triage_decision;

void triage_decision_init(triage_decision *d);
void triage_decision_release(triage_decision *d);

/*
 * Decide for `issue` (a GitLab issue object: title, description, labels as
 * strings or as {name} objects, confidential; anything missing or of
 * another JSON type counts as empty). `out` is initialised here; release it
 * in every case. Returns 0, FACTORY_EINVALID when `issue` is not a JSON
 * object, or FACTORY_ENOMEM.
 */
int triage_decide(triage_decision *out, const triage_policy *p, const cJSON *issue, unsigned flags);

/* The decision as one JSON object: type, severity (null unless a bug),
 * priority, fast_lane, confidential, ambiguous, human, model, reasons,
 * rules, scores, labels (the triage labels it stands for). */
int triage_decision_json(cJSON **out, const triage_decision *d);

/*
 * The fixed schema a model's answer must follow, as a JSON schema object
 * (new, caller frees), for the model's tool definition:
 *   {"type": "security|bug|feature|support|feedback|chore",
 *    "priority": 1..5, "severity": 1..4 or null, "fast_lane": bool,
 *    "reason": "at most 300 characters"}
 * type, priority and reason are required; no other keys.
 */
cJSON *triage_model_schema(void);

/*
 * Check `answer` against that schema and merge it into `d`: a model may
 * name the type of an ambiguous issue, raise the priority (never lower
 * it), make a bug more severe, put an issue in the fast lane, or call it a
 * security issue (priority 1, confidential); it can never change a
 * security decision or a person's label. Returns 0 (d->model set when the
 * answer changed something, its reason added to the reasons, cleaned), or
 * FACTORY_EINVALID with a message saying what is wrong with the answer
 * (the decision is then left as it was).
 */
int triage_apply_model(triage_decision *d, const cJSON *answer);

/* ---- labels and the run's bookkeeping ---- */

/* Whether `name` is one of triage's own labels (type::, priority::,
 * severity:: of the catalogue, fast-lane, the mark) or a board list label
 * (workflow::). Those are never fed to the rules. */
int triage_is_own_label(const char *name);

/* The triage labels a decision stands for, comma-separated into `out`
 * ("type::bug,priority::2,severity::1,fast-lane"). */
int triage_decision_labels(fbuf *out, const triage_decision *d);

/* The priority (1..5) / severity (1..4) / type of an issue's labels, 0 (or
 * -1 for the type) when it has none valid. */
int triage_issue_priority(const cJSON *issue);
int triage_issue_severity(const cJSON *issue);
int triage_issue_type(const cJSON *issue);
/* Whether the issue has label `name`. */
int triage_issue_has_label(const cJSON *issue, const char *name);

/* A hash of what triage reads: title, description and the labels that are
 * not triage's own (sorted). */
uint64_t triage_content_hash(const cJSON *issue);

/*
 * The hidden marker a decision note ends with:
 *   <!-- factory-triage v1 content=<16 hex> labels=<triage labels> confidential=<0|1> -->
 * (labels as triage_decision_labels, "-" when none).
 */
typedef struct {
	uint64_t content;
	char labels[256];
	int confidential;
} triage_marker;

int triage_marker_format(fbuf *out, const triage_marker *m);
/* Find the marker in a note body (the last one, if several); 0 when found
 * and well formed, FACTORY_ENOTFOUND otherwise. Text from outside cannot
 * forge one in a Factory note: untrusted.h escapes "<!--". */
int triage_marker_parse(triage_marker *out, const char *body);

/*
 * The decision note: a short markdown text saying what was decided and
 * why (the signals, the rules, the model's answer), followed by the
 * marker. Everything taken from the issue or the model is cleaned
 * (untrusted.h). `extra` (may be NULL) is one more sentence of the
 * Factory's own.
 */
int triage_note(fbuf *out, const triage_decision *d, const triage_marker *m, const char *extra);

#endif
