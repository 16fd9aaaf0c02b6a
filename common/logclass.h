/*
 * logclass.h - error classification with pcre2 rules kept as data.
 *
 * A rule set is a list of rules (common/rules.h: patterns are compiled
 * caseless unless case_sensitive, with match limits), tried in order; the
 * first that matches a record names its class. A rule (YAML or JSON):
 *
 *   - name: payment                # the class
 *     pattern: 'payment.*fail'     # pcre2 (or a list), matched against the
 *     in: [message]                #   fields "message" and "detail" (default both)
 *     severity: 2                  # 1 (worst) .. 4, the class's default severity
 *     status_min: 500              # optional: also matches records whose HTTP status
 *     status_max: 599              #   is in [status_min, status_max]
 *     error: true                  # optional (default true): a match makes the record an
 *                                  #   error even when its level says otherwise
 *
 * The built-in defaults (logclass_default_yaml) cover crash or panic,
 * payment or billing failure, authentication, database, timeout and 5xx.
 * A project's own rules come first, so they win over the defaults; a
 * project rule with a built-in rule's name replaces it.
 */
#ifndef FACTORY_LOGCLASS_H
#define FACTORY_LOGCLASS_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct logclass logclass;

typedef struct {
	const char *name;
	int severity;
	int makes_error;
} logclass_rule;

/* The built-in rule set as YAML text (a list of rules). */
extern const char logclass_default_yaml[];

/*
 * A rule set from a JSON array of rule objects (`rules`, may be NULL), then
 * the built-in defaults when `with_defaults` (parsed from
 * logclass_default_yaml through fconfig_yaml_to_json). FACTORY_ECONFIG
 * names the rule and what is wrong (bad pattern with its offset, severity
 * out of range); FACTORY_ENOMEM.
 */
int logclass_new(logclass **out, const cJSON *rules, int with_defaults);
void logclass_free(logclass *lc);

/* The first rule whose pattern matches the message (or the detail, the
 * record's continuation lines; may be NULL) or whose status range holds
 * `status`; NULL if none. Borrowed from the set. */
const logclass_rule *logclass_match(const logclass *lc, const char *message, size_t len, const char *detail,
                                    size_t detail_len, int status);

size_t logclass_count(const logclass *lc);

#endif
