/*
 * rules.h - pcre2 rule sets loaded from data, matched with hard limits.
 *
 * A rule set is a list of named rules read from data (YAML turned into
 * cJSON by config.h). Each rule is one or more patterns tried against named
 * fields of a subject (for triage: "title", "body", "labels"):
 *
 *   - name: leaked-credential        required, [A-Za-z0-9_.-]{1,64}, unique
 *     pattern: 'AKIA[0-9A-Z]{16}'    a string, or a list of strings (any one matching is enough)
 *     unless: 'example|dummy'        optional: a string or list; when one matches the same
 *                                    field, the rule does not match there
 *     in: [title, body]              optional: the fields to look in, in this order
 *                                    (default: every field the caller allows)
 *     case_sensitive: false          optional, default false
 *     ...                            any other keys are the caller's (weights, types...):
 *                                    kept untouched, read back through rules_data()
 *
 * Patterns are compiled with PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_UCP
 * | PCRE2_MULTILINE (and PCRE2_CASELESS unless case_sensitive), so '^' and
 * '$' match at line starts and ends, '\w' and '\b' know non-ASCII letters,
 * and invalid UTF-8 in a subject (binary junk) never fails a match: it is
 * simply never part of one.
 *
 * Limits, so that neither a hostile subject (an issue body) nor a careless
 * pattern (a project's policy) can stall a job:
 *   - every match runs with pcre2_set_match_limit, pcre2_set_depth_limit and
 *     pcre2_set_heap_limit; a match that hits one counts as "no match" and
 *     is counted in rules_result.limit_hits (the caller can say so);
 *   - only the first max_subject bytes of a field are searched (the cut is
 *     counted in rules_result.truncated);
 *   - at most max_rules rules and max_pattern bytes per pattern are accepted.
 * JIT is used when pcre2 has it (rules_jit()); the JIT matcher honours the
 * match limit and runs on its own bounded stack (1 MiB), so the depth limit
 * is replaced by that stack's size. Without JIT the interpreter runs with
 * all three limits.
 *
 * A compiled set is read-only: matching allocates its own scratch, so one
 * set may be shared by several threads.
 */
#ifndef FACTORY_RULES_H
#define FACTORY_RULES_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
	uint32_t match_limit;    /* pcre2 match limit, default 100000 */
	uint32_t depth_limit;    /* pcre2 depth limit, default 1000 */
	uint32_t heap_limit_kib; /* pcre2 heap limit, default 20480 (20 MiB) */
	size_t max_subject;      /* bytes of a field searched, default 65536 */
	size_t max_rules;        /* default 1000 */
	size_t max_pattern;      /* bytes per pattern, default 4096 */
	int jit;                 /* use JIT when available, default 1 */
} rules_limits;

/* Fill `l` with the defaults above. */
void rules_limits_init(rules_limits *l);

/*
 * Read limits from a cJSON object such as {"match_limit": 5000,
 * "max_subject": 131072} (NULL: nothing changes); keys absent keep their
 * value. Returns 0 or FACTORY_ECONFIG naming the key ("<origin>: limits.
 * match_limit: expected a whole number from 100 to 100000000").
 */
int rules_limits_from_json(rules_limits *l, const cJSON *obj, const char *origin);

typedef struct rules rules;

/*
 * Compile the rules of `spec` (a cJSON array of rule objects, described
 * above) into *out. `fields` is the NULL-terminated list of field names the
 * caller will match against; a rule naming another field is an error.
 * `origin` names where the rules came from, for messages ("built-in
 * policy", ".factory.yml"). The spec is copied: the caller keeps its own.
 *
 * Returns 0, FACTORY_ECONFIG with a message naming the rule and the problem
 * (e.g. ".factory.yml: rule 'outage': pattern 2: missing closing
 * parenthesis at offset 7"), or FACTORY_ENOMEM. *out is NULL on failure.
 */
int rules_compile(rules **out, const cJSON *spec, const char *const *fields, const rules_limits *limits,
		  const char *origin);

/* Free a rule set; NULL is fine. */
void rules_free(rules *rs);

/* Number of rules, a rule's name, its own object (borrowed, valid while the
 * set lives: read the caller's keys from it), and the index of a name (-1
 * when absent). */
size_t rules_count(const rules *rs);
const char *rules_name(const rules *rs, size_t i);
const cJSON *rules_data(const rules *rs, size_t i);
int rules_find(const rules *rs, const char *name);

/* Whether the set's patterns run on the JIT (1) or the interpreter (0). */
int rules_jit(const rules *rs);
/* The limits the set was compiled with. */
const rules_limits *rules_get_limits(const rules *rs);

/* One field of a subject: name (one of those given to rules_compile) and
 * text (need not be NUL-terminated, may hold any bytes). */
typedef struct {
	const char *name;
	const char *text;
	size_t len;
} rules_field;

/* One rule that matched: which rule, in which of the given fields, and
 * where (byte offset and length of the match in that field's text). */
typedef struct {
	size_t rule;
	size_t field;
	size_t offset;
	size_t length;
} rules_hit;

typedef struct {
	rules_hit *hits;      /* in rule order; at most one hit per rule */
	size_t nhits;
	size_t limit_hits;    /* matches abandoned at a limit or on a matcher error (counted as no match) */
	size_t truncated;     /* fields longer than max_subject (only their start was searched) */
} rules_result;

void rules_result_init(rules_result *r);
void rules_result_release(rules_result *r);

/*
 * Match every rule of `rs` against `fields` (`nfields` of them; fields the
 * set does not know are ignored, fields a rule wants but the caller did
 * not give are skipped). For each rule the first field (in the rule's `in`
 * order) where a pattern matches gives its hit. `out` must be initialised;
 * previous hits are replaced. Returns 0, or FACTORY_ENOMEM. Any matcher
 * failure (a limit, or another pcre2 error, never expected) counts as no
 * match and is counted in limit_hits: a subject can never fail the call.
 */
int rules_match(rules_result *out, const rules *rs, const rules_field *fields, size_t nfields);

#endif
