/*
 * impact.h - is a change customer-facing? The rules factory-release applies
 * to each closed issue and each commit with a Changelog trailer, from labels,
 * types and the paths a change touched, and the project's settings.
 *
 * Settings (lists: a YAML sequence in .factory.yml, or a comma-separated
 * string in a flag or FACTORY_RELEASE_* variable, which wins; matching is
 * case-insensitive):
 *   release.customer_labels   labels that make a change customer-facing
 *                             (default: source::customer, customer-facing)
 *   release.internal_labels   labels that make it internal
 *                             (default: type::chore, internal)
 *   release.customer_paths    paths (a file, or a folder ending in '/')
 *                             whose changes are customer-facing (default: none)
 *   release.customer_types    types that are customer-facing by default
 *                             (default: security, feature, bug, performance,
 *                             changed, deprecated, removed); an issue's type is
 *                             its type:: label, a commit's its Changelog
 *                             category (added = feature, fixed = bug)
 *   release.skip_labels       closed issues that are not changes
 *                             (default: duplicate, wontfix, won't fix, invalid)
 *   release.breaking_labels   labels of a breaking change
 *                             (default: breaking, breaking change)
 *   release.performance_labels  labels that put a change under Performance
 *                             (default: performance, type::performance)
 *
 * The verdict for an issue, first match wins (a "strong" verdict comes from
 * a label, the security type or a path; a weak one is the default for the
 * type, which a model may be asked to second-guess):
 *   1. release::customer-facing / release::internal (a person's decision, or
 *      an earlier run's) - strong
 *   2. type::security - customer-facing, strong (every customer must know)
 *   3. a customer label (source::customer by default) - customer-facing, strong
 *   4. an internal label - internal, strong
 *   5. a change to a customer path - customer-facing, strong
 *   6. a customer type - customer-facing, weak
 *   7. otherwise internal, weak
 * Issues with a skip label, and questions and opinions (type::support,
 * type::feedback) closed without a merge request, are not changes: skipped.
 * Commits follow 2 (category security), 5, 6 and 7.
 */
#ifndef FACTORY_IMPACT_H
#define FACTORY_IMPACT_H

#include <cjson/cJSON.h>

#include "config.h"
#include "notes.h"

#define LABEL_RELEASE_CUSTOMER "release::customer-facing"
#define LABEL_RELEASE_INTERNAL "release::internal"

typedef struct impact_policy impact_policy;

/* Read the settings above. FACTORY_ECONFIG names a bad one (a list that is
 * not a list of strings, an empty name, a path with a blank or "..").  */
int impact_policy_new(impact_policy **out, const fconfig *cfg);
void impact_policy_free(impact_policy *p);

/* The customer paths (borrowed), *n their number. */
const char *const *impact_policy_paths(const impact_policy *p, size_t *n);
/* The effective settings as JSON, for the report (new object). */
cJSON *impact_policy_json(const impact_policy *p);

typedef struct {
	int customer; /* 1 customer-facing, 0 internal */
	int strong;   /* decided by a label, the security type or a path */
	int skip;     /* not a change: leave it out of the release */
	int breaking;
	notes_group group;
	char reason[200]; /* one sentence for people */
} impact_verdict;

/*
 * Judge a closed issue (GitLab's JSON: labels as names). `has_mr`: a merged
 * merge request closed it. `path` (may be NULL): a customer path one of its
 * merge requests changed. Always succeeds (0).
 */
int impact_assess_issue(impact_verdict *out, const impact_policy *p, const cJSON *issue, int has_mr, const char *path);

/* Judge a commit by its Changelog category (see notes.h) and `path` (a
 * customer path it changed, or NULL). Always succeeds (0). */
int impact_assess_commit(impact_verdict *out, const impact_policy *p, const char *category, const char *path);

#endif
