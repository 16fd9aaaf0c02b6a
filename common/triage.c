/* triage.c - the triage decision, a pure function of an issue and a policy. */
#include "triage.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "untrusted.h"

#define SNIPPET_MAX 80
#define MODEL_REASON_MAX 300
#define MAX_LABELS 200

enum { SIG_REVENUE = 1, SIG_POLISH = 2, SIG_FAST_LANE = 4 };

static const char *const type_names[TRIAGE_NTYPES] = {"security", "bug", "feature", "support", "feedback", "chore"};

/* Ties between non-security types go to the first in this order. */
static const triage_type tie_order[] = {TRIAGE_BUG, TRIAGE_FEATURE, TRIAGE_SUPPORT, TRIAGE_CHORE, TRIAGE_FEEDBACK};

static const char *const rule_fields[] = {"title", "body", "labels", NULL};

typedef struct {
	int type;       /* -1: none */
	double weight;
	int severity;   /* 0: none */
	unsigned signals;
	int quote;      /* quote the match in the reasons */
} rule_info;

struct triage_policy {
	cJSON *doc;           /* the effective policy */
	rules *rs;
	rule_info *info;
	long wip_limit;
	double threshold, security_threshold, margin;
	triage_type default_type;
	int default_severity;
	int prio_type[TRIAGE_NTYPES];
	int prio_bug[5];      /* by severity 1..4 */
	int prio_revenue, prio_fast_lane;
	int revenue_types[TRIAGE_NTYPES];
	int llm_enabled;
	long llm_max;
};

const char *triage_type_name(triage_type t)
{
	return t >= 0 && t < TRIAGE_NTYPES ? type_names[t] : "unknown";
}

int triage_type_parse(const char *s)
{
	int i;

	for (i = 0; s && i < TRIAGE_NTYPES; i++)
		if (!strcmp(s, type_names[i]))
			return i;
	return -1;
}

/* ---- the policy ---- */

static int merge_object(cJSON *base, const cJSON *over, const char *what, const char *origin)
{
	const cJSON *item;

	if (!cJSON_IsObject(over))
		return ferror_set(FACTORY_ECONFIG, "%s: triage.%s: expected a mapping", origin, what);
	cJSON_ArrayForEach(item, over) {
		cJSON *copy, *have = cJSON_GetObjectItemCaseSensitive(base, item->string);
		if (cJSON_IsObject(have) && cJSON_IsObject(item)) {
			int error = merge_object(have, item, what, origin);
			if (error < 0)
				return error;
			continue;
		}
		if (!(copy = cJSON_Duplicate(item, 1)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		if (have)
			cJSON_ReplaceItemInObjectCaseSensitive(base, item->string, copy);
		else
			cJSON_AddItemToObject(base, item->string, copy);
	}
	return 0;
}

/* Lay the .factory.yml triage: section over the built-in document. */
static int apply_override(cJSON *doc, const cJSON *over, const char *origin)
{
	static const char *const scalars[] = {"wip_limit", "threshold", "security_threshold", "ambiguous_margin",
					      "default_type", "default_severity", "revenue_types", NULL};
	static const char *const maps[] = {"priorities", "limits", "llm", NULL};
	const cJSON *item, *r;
	cJSON *rules_arr = cJSON_GetObjectItemCaseSensitive(doc, "rules");
	size_t i;
	int error;

	if (!over || cJSON_IsNull(over))
		return 0;
	if (!cJSON_IsObject(over))
		return ferror_set(FACTORY_ECONFIG, "%s: triage: expected a mapping", origin);
	cJSON_ArrayForEach(item, over) {
		const char *k = item->string ? item->string : "";
		int done = 0;

		for (i = 0; scalars[i] && !done; i++) {
			if (strcmp(k, scalars[i]) != 0)
				continue;
			cJSON *copy = cJSON_Duplicate(item, 1);
			if (!copy)
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			if (cJSON_GetObjectItemCaseSensitive(doc, k))
				cJSON_ReplaceItemInObjectCaseSensitive(doc, k, copy);
			else
				cJSON_AddItemToObject(doc, k, copy);
			done = 1;
		}
		for (i = 0; maps[i] && !done; i++) {
			if (strcmp(k, maps[i]) != 0)
				continue;
			cJSON *have = cJSON_GetObjectItemCaseSensitive(doc, k);
			if (!have) {
				have = cJSON_AddObjectToObject(doc, k);
				if (!have)
					return ferror_set(FACTORY_ENOMEM, "out of memory");
			}
			if ((error = merge_object(have, item, k, origin)) < 0)
				return error;
			done = 1;
		}
		if (done)
			continue;
		if (!strcmp(k, "rules")) {
			cJSON *copy;
			if (!cJSON_IsArray(item))
				return ferror_set(FACTORY_ECONFIG, "%s: triage.rules: expected a list of rules", origin);
			if (!(copy = cJSON_Duplicate(item, 1)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			cJSON_ReplaceItemInObjectCaseSensitive(doc, "rules", copy);
			rules_arr = copy;
		} else if (!strcmp(k, "extra_rules") || !strcmp(k, "disable_rules")) {
			/* applied after the loop, so `rules` may come in any order */
		} else {
			return ferror_set(FACTORY_ECONFIG, "%s: triage.%s: unknown setting", origin, k);
		}
	}
	item = cJSON_GetObjectItemCaseSensitive(over, "disable_rules");
	if (item) {
		if (!cJSON_IsArray(item))
			return ferror_set(FACTORY_ECONFIG, "%s: triage.disable_rules: expected a list of rule names", origin);
		cJSON_ArrayForEach(r, item) {
			cJSON *cur;
			int found = 0, idx = 0;
			if (!cJSON_IsString(r))
				return ferror_set(FACTORY_ECONFIG, "%s: triage.disable_rules: expected rule names", origin);
			cJSON_ArrayForEach(cur, rules_arr) {
				const cJSON *n = cJSON_GetObjectItemCaseSensitive(cur, "name");
				if (cJSON_IsString(n) && !strcmp(n->valuestring, r->valuestring)) {
					found = 1;
					break;
				}
				idx++;
			}
			if (!found)
				return ferror_set(FACTORY_ECONFIG, "%s: triage.disable_rules: no rule named '%s'", origin,
						  r->valuestring);
			cJSON_DeleteItemFromArray(rules_arr, idx);
		}
	}
	item = cJSON_GetObjectItemCaseSensitive(over, "extra_rules");
	if (item) {
		if (!cJSON_IsArray(item))
			return ferror_set(FACTORY_ECONFIG, "%s: triage.extra_rules: expected a list of rules", origin);
		cJSON_ArrayForEach(r, item) {
			cJSON *copy = cJSON_Duplicate(r, 1);
			if (!copy)
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			cJSON_AddItemToArray(rules_arr, copy);
		}
	}
	return 0;
}

static int get_num(double *out, const cJSON *doc, const char *key, double min, double max, int whole,
		   const char *origin)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max ||
	    (whole && v->valuedouble != floor(v->valuedouble)))
		return ferror_set(FACTORY_ECONFIG, "%s: triage.%s: expected a %s from %g to %g", origin, key,
				  whole ? "whole number" : "number", min, max);
	*out = v->valuedouble;
	return 0;
}

static int get_prio(int *out, const cJSON *obj, const char *key, const char *path, const char *origin)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 5 || v->valuedouble != floor(v->valuedouble))
		return ferror_set(FACTORY_ECONFIG, "%s: triage.%s%s: expected a priority from 1 to 5", origin, path, key);
	*out = (int)v->valuedouble;
	return 0;
}

static int read_priorities(triage_policy *p, const cJSON *pr, const char *origin)
{
	const cJSON *bug, *item;
	char key[16];
	int t, s, error;

	if (!cJSON_IsObject(pr))
		return ferror_set(FACTORY_ECONFIG, "%s: triage.priorities: expected a mapping", origin);
	cJSON_ArrayForEach(item, pr) {
		if (triage_type_parse(item->string) < 0 && strcmp(item->string, "revenue") != 0 &&
		    strcmp(item->string, "fast_lane") != 0)
			return ferror_set(FACTORY_ECONFIG, "%s: triage.priorities.%s: unknown key", origin, item->string);
	}
	for (t = 0; t < TRIAGE_NTYPES; t++) {
		if (t == TRIAGE_BUG)
			continue;
		if ((error = get_prio(&p->prio_type[t], pr, type_names[t], "priorities.", origin)) < 0)
			return error;
	}
	if (p->prio_type[TRIAGE_SECURITY] != 1)
		return ferror_set(FACTORY_ECONFIG, "%s: triage.priorities.security: security is always priority 1",
				  origin);
	bug = cJSON_GetObjectItemCaseSensitive(pr, "bug");
	if (!cJSON_IsObject(bug))
		return ferror_set(FACTORY_ECONFIG, "%s: triage.priorities.bug: expected a mapping of severity 1..4 to priority",
				  origin);
	for (s = 1; s <= 4; s++) {
		snprintf(key, sizeof(key), "%d", s);
		if ((error = get_prio(&p->prio_bug[s], bug, key, "priorities.bug.", origin)) < 0)
			return error;
	}
	if ((error = get_prio(&p->prio_revenue, pr, "revenue", "priorities.", origin)) < 0 ||
	    (error = get_prio(&p->prio_fast_lane, pr, "fast_lane", "priorities.", origin)) < 0)
		return error;
	return 0;
}

static int parse_signals(unsigned *out, const cJSON *v, const char *rname, const char *origin)
{
	const cJSON *s;

	*out = 0;
	if (!v)
		return 0;
	for (s = cJSON_IsArray(v) ? v->child : v; s; s = cJSON_IsArray(v) ? s->next : NULL) {
		if (!cJSON_IsString(s))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': signal must be a name or a list of names", origin,
					  rname);
		if (!strcmp(s->valuestring, "revenue"))
			*out |= SIG_REVENUE;
		else if (!strcmp(s->valuestring, "polish"))
			*out |= SIG_POLISH;
		else if (!strcmp(s->valuestring, "fast_lane"))
			*out |= SIG_FAST_LANE;
		else
			return ferror_set(FACTORY_ECONFIG,
					  "%s: rule '%s': unknown signal '%s' (revenue, polish or fast_lane)", origin,
					  rname, s->valuestring);
	}
	return 0;
}

/* The keys of a rule that are ours (rules.h checks its own). */
static int read_rule_info(rule_info *ri, const cJSON *obj, const char *rname, const char *origin)
{
	static const char *const known[] = {"name", "pattern", "unless", "in", "case_sensitive", "type", "weight",
					    "severity", "signal", "description", "quote", NULL};
	const cJSON *item, *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
	const cJSON *weight = cJSON_GetObjectItemCaseSensitive(obj, "weight");
	const cJSON *sev = cJSON_GetObjectItemCaseSensitive(obj, "severity");
	size_t i;
	int error;

	cJSON_ArrayForEach(item, obj) {
		for (i = 0; known[i]; i++)
			if (!strcmp(item->string, known[i]))
				break;
		if (!known[i])
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': unknown key '%s'", origin, rname, item->string);
	}
	ri->type = -1;
	if (type) {
		if (!cJSON_IsString(type) || (ri->type = triage_type_parse(type->valuestring)) < 0)
			return ferror_set(FACTORY_ECONFIG,
					  "%s: rule '%s': type must be security, bug, feature, support, feedback or chore",
					  origin, rname);
	}
	ri->weight = 1;
	if (weight) {
		if (!cJSON_IsNumber(weight) || weight->valuedouble < 0 || weight->valuedouble > 100)
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': weight must be a number from 0 to 100", origin,
					  rname);
		ri->weight = weight->valuedouble;
	}
	ri->severity = 0;
	if (sev) {
		if (!cJSON_IsNumber(sev) || sev->valuedouble < 1 || sev->valuedouble > 4 ||
		    sev->valuedouble != floor(sev->valuedouble))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': severity must be 1, 2, 3 or 4", origin, rname);
		ri->severity = (int)sev->valuedouble;
	}
	item = cJSON_GetObjectItemCaseSensitive(obj, "quote");
	if (item && !cJSON_IsBool(item))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': quote must be true or false", origin, rname);
	ri->quote = !cJSON_IsFalse(item);
	if ((error = parse_signals(&ri->signals, cJSON_GetObjectItemCaseSensitive(obj, "signal"), rname, origin)) < 0)
		return error;
	if (ri->type < 0 && !ri->signals && !ri->severity)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': needs a type, a severity or a signal", origin, rname);
	return 0;
}

static int read_policy(triage_policy *p, const char *origin)
{
	const cJSON *doc = p->doc, *v, *llm;
	rules_limits lim;
	double d = 0;
	size_t i, n;
	int error;

	if ((error = get_num(&d, doc, "wip_limit", 1, 100, 1, origin)) < 0)
		return error;
	p->wip_limit = (long)d;
	if ((error = get_num(&p->threshold, doc, "threshold", 0.001, 1000, 0, origin)) < 0 ||
	    (error = get_num(&p->security_threshold, doc, "security_threshold", 0.001, 1000, 0, origin)) < 0 ||
	    (error = get_num(&p->margin, doc, "ambiguous_margin", 0, 1000, 0, origin)) < 0)
		return error;
	if ((error = get_num(&d, doc, "default_severity", 1, 4, 1, origin)) < 0)
		return error;
	p->default_severity = (int)d;
	v = cJSON_GetObjectItemCaseSensitive(doc, "default_type");
	if (!cJSON_IsString(v) || triage_type_parse(v->valuestring) <= TRIAGE_SECURITY)
		return ferror_set(FACTORY_ECONFIG,
				  "%s: triage.default_type: expected bug, feature, support, feedback or chore", origin);
	p->default_type = (triage_type)triage_type_parse(v->valuestring);
	if ((error = read_priorities(p, cJSON_GetObjectItemCaseSensitive(doc, "priorities"), origin)) < 0)
		return error;
	v = cJSON_GetObjectItemCaseSensitive(doc, "revenue_types");
	if (v) {
		const cJSON *t;
		if (!cJSON_IsArray(v))
			return ferror_set(FACTORY_ECONFIG, "%s: triage.revenue_types: expected a list of types", origin);
		cJSON_ArrayForEach(t, v) {
			int k = cJSON_IsString(t) ? triage_type_parse(t->valuestring) : -1;
			if (k < 0)
				return ferror_set(FACTORY_ECONFIG, "%s: triage.revenue_types: unknown type", origin);
			p->revenue_types[k] = 1;
		}
	} else {
		p->revenue_types[TRIAGE_BUG] = p->revenue_types[TRIAGE_FEATURE] = 1;
	}
	llm = cJSON_GetObjectItemCaseSensitive(doc, "llm");
	p->llm_enabled = 1;
	p->llm_max = 20;
	if (llm) {
		const cJSON *item;
		if (!cJSON_IsObject(llm))
			return ferror_set(FACTORY_ECONFIG, "%s: triage.llm: expected a mapping", origin);
		cJSON_ArrayForEach(item, llm) {
			if (strcmp(item->string, "enabled") != 0 && strcmp(item->string, "max_issues") != 0)
				return ferror_set(FACTORY_ECONFIG, "%s: triage.llm.%s: unknown setting", origin, item->string);
		}
		v = cJSON_GetObjectItemCaseSensitive(llm, "enabled");
		if (v) {
			if (!cJSON_IsBool(v))
				return ferror_set(FACTORY_ECONFIG, "%s: triage.llm.enabled: expected true or false", origin);
			p->llm_enabled = cJSON_IsTrue(v);
		}
		if (cJSON_GetObjectItemCaseSensitive(llm, "max_issues")) {
			if ((error = get_num(&d, llm, "max_issues", 0, 10000, 1, origin)) < 0)
				return ferror_set(error, "%s: triage.llm.max_issues: expected a whole number from 0 to 10000",
						  origin);
			p->llm_max = (long)d;
		}
	}
	rules_limits_init(&lim);
	if ((error = rules_limits_from_json(&lim, cJSON_GetObjectItemCaseSensitive(doc, "limits"), origin)) < 0)
		return error;
	if ((error = rules_compile(&p->rs, cJSON_GetObjectItemCaseSensitive(doc, "rules"), rule_fields, &lim, origin)) <
	    0)
		return error;
	n = rules_count(p->rs);
	p->info = calloc(n ? n : 1, sizeof(*p->info));
	if (!p->info)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (i = 0; i < n; i++)
		if ((error = read_rule_info(&p->info[i], rules_data(p->rs, i), rules_name(p->rs, i), origin)) < 0)
			return error;
	return 0;
}

int triage_policy_new(triage_policy **out, const cJSON *override, const char *origin)
{
	triage_policy *p;
	int error = -1;

	*out = NULL;
	if (!origin)
		origin = ".factory.yml";
	if (!(p = calloc(1, sizeof(*p))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = fconfig_yaml_to_json(&p->doc, triage_default_policy_yaml, strlen(triage_default_policy_yaml),
					  "built-in triage policy")) < 0)
		goto cleanup;
	if ((error = read_policy(p, "built-in triage policy")) < 0)
		goto cleanup;
	if (override && !cJSON_IsNull(override)) {
		rules_free(p->rs);
		free(p->info);
		p->rs = NULL;
		p->info = NULL;
		memset(p->revenue_types, 0, sizeof(p->revenue_types));
		if ((error = apply_override(p->doc, override, origin)) < 0)
			goto cleanup;
		if ((error = read_policy(p, origin)) < 0)
			goto cleanup;
	}
	*out = p;
	p = NULL;
	error = 0;
cleanup:
	triage_policy_free(p);
	return error;
}

void triage_policy_free(triage_policy *p)
{
	if (!p)
		return;
	rules_free(p->rs);
	free(p->info);
	cJSON_Delete(p->doc);
	free(p);
}

long triage_policy_wip_limit(const triage_policy *p)
{
	return p->wip_limit;
}

int triage_policy_llm_enabled(const triage_policy *p)
{
	return p->llm_enabled;
}

long triage_policy_llm_max(const triage_policy *p)
{
	return p->llm_max;
}

const rules *triage_policy_rules(const triage_policy *p)
{
	return p->rs;
}

const cJSON *triage_policy_json(const triage_policy *p)
{
	return p->doc;
}

/* ---- labels ---- */

static const char *label_name(const cJSON *l)
{
	if (cJSON_IsString(l))
		return l->valuestring;
	if (cJSON_IsObject(l)) {
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(l, "name");
		if (cJSON_IsString(n))
			return n->valuestring;
	}
	return NULL;
}

static int scoped_value(const char *name, const char *prefix, int min, int max)
{
	size_t n = strlen(prefix);

	if (strncmp(name, prefix, n) != 0 || !name[n] || name[n + 1] || name[n] < '0' + min || name[n] > '0' + max)
		return 0;
	return name[n] - '0';
}

int triage_is_own_label(const char *name)
{
	if (!name)
		return 0;
	if (scoped_value(name, "priority::", 1, 5) || scoped_value(name, "severity::", 1, 4))
		return 1;
	if (!strncmp(name, "type::", 6) && triage_type_parse(name + 6) >= 0)
		return 1;
	if (!strncmp(name, "workflow::", 10))
		return 1;
	return !strcmp(name, "fast-lane") || !strcmp(name, TRIAGE_MARK_LABEL);
}

int triage_issue_has_label(const cJSON *issue, const char *name)
{
	const cJSON *l;

	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *n = label_name(l);
		if (n && !strcmp(n, name))
			return 1;
	}
	return 0;
}

/* The most urgent valid value among the labels with `prefix`, 0 if none;
 * *count gets how many valid ones there are. */
static int best_scoped(const cJSON *issue, const char *prefix, int max, int *count)
{
	const cJSON *l;
	int best = 0, v;

	*count = 0;
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *n = label_name(l);
		if (n && (v = scoped_value(n, prefix, 1, max))) {
			(*count)++;
			if (!best || v < best)
				best = v;
		}
	}
	return best;
}

int triage_issue_priority(const cJSON *issue)
{
	int n;
	return best_scoped(issue, "priority::", 5, &n);
}

int triage_issue_severity(const cJSON *issue)
{
	int n;
	return best_scoped(issue, "severity::", 4, &n);
}

/* The type:: label of the issue: the one valid type, security if any is
 * security, -1 when none (or several other than security). */
static int issue_type(const cJSON *issue, int *count)
{
	const cJSON *l;
	int found = -1, t;

	*count = 0;
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *n = label_name(l);
		if (n && !strncmp(n, "type::", 6) && (t = triage_type_parse(n + 6)) >= 0) {
			(*count)++;
			if (t == TRIAGE_SECURITY || found < 0)
				found = found == TRIAGE_SECURITY ? found : t;
		}
	}
	return found;
}

int triage_issue_type(const cJSON *issue)
{
	int n, t = issue_type(issue, &n);
	return n > 1 && t != TRIAGE_SECURITY ? -1 : t;
}

int triage_decision_labels(fbuf *out, const triage_decision *d)
{
	int error = fbuf_printf(out, "type::%s,priority::%d", triage_type_name(d->type), d->priority);

	if (!error && d->type == TRIAGE_BUG && d->severity)
		error = fbuf_printf(out, ",severity::%d", d->severity);
	if (!error && d->fast_lane)
		error = fbuf_puts(out, ",fast-lane");
	return error;
}

/* ---- the decision ---- */

void triage_decision_init(triage_decision *d)
{
	memset(d, 0, sizeof(*d));
	d->type = TRIAGE_SUPPORT;
}

void triage_decision_release(triage_decision *d)
{
	cJSON_Delete(d->rules);
	cJSON_Delete(d->reasons);
	triage_decision_init(d);
}

static const char *str_field(const cJSON *issue, const char *key, size_t *len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(issue, key);

	if (cJSON_IsString(v) && v->valuestring) {
		*len = strlen(v->valuestring);
		return v->valuestring;
	}
	*len = 0;
	return "";
}

static int __attribute__((format(printf, 2, 3))) add_reason(triage_decision *d, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	cJSON *s;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (!(s = cJSON_CreateString(buf)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	cJSON_AddItemToArray(d->reasons, s);
	return 0;
}

/* The issue's labels that are not triage's own, one per line, into `out`;
 * invalid triage-looking labels are named in the reasons. */
static int labels_text(fbuf *out, triage_decision *d, const cJSON *issue)
{
	const cJSON *l;
	int n = 0, error;

	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *name = label_name(l);
		if (!name || triage_is_own_label(name))
			continue;
		if (n++ >= MAX_LABELS)
			break;
		if (!strncmp(name, "priority::", 10) || !strncmp(name, "severity::", 10)) {
			fbuf clean;
			fbuf_init(&clean, 256);
			untrusted_title(&clean, name, strlen(name), 60);
			error = add_reason(d, "label \"%s\" is not a triage label: ignored, kept on the issue",
					   fbuf_cstr(&clean));
			fbuf_release(&clean);
			if (error < 0)
				return error;
		}
		if ((error = fbuf_puts(out, name)) < 0 || (error = fbuf_putc(out, '\n')) < 0)
			return error == FACTORY_ETOOBIG ? 0 : error;
	}
	return 0;
}

static int hit_reason(triage_decision *d, const triage_policy *p, const rules_hit *h, const rules_field *f)
{
	fbuf snip;
	size_t len = h->length;
	const char *name = rules_name(p->rs, h->rule);
	int error;

	if (!p->info[h->rule].quote)
		return add_reason(d, "rule %s (%s): matched (not quoted: it may be a secret)", name, f->name);
	fbuf_init(&snip, 1024);
	if (len > 4 * SNIPPET_MAX)
		len = 4 * SNIPPET_MAX;
	if ((error = untrusted_title(&snip, f->text + h->offset, len, SNIPPET_MAX)) < 0 && error != FACTORY_ETOOBIG)
		goto cleanup;
	error = add_reason(d, "rule %s (%s): \"%s\"", name, f->name, fbuf_cstr(&snip));
cleanup:
	fbuf_release(&snip);
	return error;
}

int triage_decide(triage_decision *out, const triage_policy *p, const cJSON *issue, unsigned flags)
{
	rules_result res;
	rules_field f[3];
	fbuf labels;
	size_t i;
	unsigned signals = 0;
	int sev_rules = 0, error = -1, fresh = (flags & TRIAGE_FRESH) != 0;
	int best = -1, second = -1, ht_count, hp_count, hs_count, human_type, human_prio, human_sev, human_fast;
	const char *why_prio = "";

	triage_decision_init(out);
	rules_result_init(&res);
	fbuf_init(&labels, 64 * 1024);
	if (!cJSON_IsObject(issue))
		return ferror_set(FACTORY_EINVALID, "issue is not a JSON object");
	out->rules = cJSON_CreateArray();
	out->reasons = cJSON_CreateArray();
	if (!out->rules || !out->reasons) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = labels_text(&labels, out, issue)) < 0)
		goto cleanup;
	f[0].name = "title";
	f[0].text = str_field(issue, "title", &f[0].len);
	f[1].name = "body";
	f[1].text = str_field(issue, "description", &f[1].len);
	f[2].name = "labels";
	f[2].text = fbuf_cstr(&labels);
	f[2].len = labels.len;
	if ((error = rules_match(&res, p->rs, f, 3)) < 0)
		goto cleanup;
	out->limit_hits = res.limit_hits;
	out->truncated = res.truncated;

	/* Scores, severity and signals from the rules that matched. */
	for (i = 0; i < res.nhits; i++) {
		const rules_hit *h = &res.hits[i];
		const rule_info *ri = &p->info[h->rule];
		cJSON *name = cJSON_CreateString(rules_name(p->rs, h->rule));

		if (!name) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		cJSON_AddItemToArray(out->rules, name);
		if (ri->type >= 0)
			out->scores[ri->type] += ri->weight;
		if (ri->severity && (!sev_rules || ri->severity < sev_rules))
			sev_rules = ri->severity;
		signals |= ri->signals;
		if ((error = hit_reason(out, p, h, &f[h->field])) < 0)
			goto cleanup;
	}
	if (res.truncated && (error = add_reason(out, "only the first %zu bytes of long fields were read",
						 rules_get_limits(p->rs)->max_subject)) < 0)
		goto cleanup;
	if (res.limit_hits &&
	    (error = add_reason(out, "%zu pattern match%s gave up at the match limit", res.limit_hits,
				res.limit_hits == 1 ? "" : "es")) < 0)
		goto cleanup;

	/* The type. */
	for (i = 0; i < sizeof(tie_order) / sizeof(tie_order[0]); i++) {
		int t = tie_order[i];
		if (best < 0 || out->scores[t] > out->scores[best]) {
			second = best;
			best = t;
		} else if (second < 0 || out->scores[t] > out->scores[second]) {
			second = t;
		}
	}
	if (out->scores[TRIAGE_SECURITY] >= p->security_threshold) {
		out->type = TRIAGE_SECURITY;
		error = add_reason(out, "type security: security score %g reaches %g", out->scores[TRIAGE_SECURITY],
				   p->security_threshold);
	} else if (out->scores[best] < p->threshold) {
		out->type = p->default_type;
		out->ambiguous = 1;
		error = add_reason(out, "type %s by default: no type scored %g or more (best: %s %g)",
				   triage_type_name(out->type), p->threshold, triage_type_name(best), out->scores[best]);
	} else {
		out->type = best;
		if (out->scores[second] >= p->threshold && out->scores[best] - out->scores[second] <= p->margin)
			out->ambiguous = 1;
		error = add_reason(out, "type %s: score %g (next: %s %g)%s", triage_type_name(best), out->scores[best],
				   triage_type_name(second), out->scores[second], out->ambiguous ? ", close: ambiguous" : "");
	}
	if (error < 0)
		goto cleanup;
	if (out->type != TRIAGE_SECURITY && out->scores[TRIAGE_SECURITY] >= p->threshold) {
		out->ambiguous = 1;
		if ((error = add_reason(out, "security score %g: possibly a security issue, ambiguous",
					out->scores[TRIAGE_SECURITY])) < 0)
			goto cleanup;
	}

	/* Severity (bugs), then priority. */
	if (out->type == TRIAGE_BUG)
		out->severity = sev_rules ? sev_rules : (signals & SIG_POLISH) ? 4 : p->default_severity;
	if (out->type == TRIAGE_SECURITY) {
		out->priority = 1;
		why_prio = "security";
	} else if (out->type == TRIAGE_BUG) {
		out->priority = p->prio_bug[out->severity];
		why_prio = "bug severity";
	} else {
		out->priority = p->prio_type[out->type];
		why_prio = "type";
	}
	if ((signals & SIG_POLISH) && out->type != TRIAGE_SECURITY && (out->type != TRIAGE_BUG || out->severity == 4) &&
	    out->priority < 5) {
		out->priority = 5;
		why_prio = "polish";
	}
	if ((signals & SIG_REVENUE) && !(signals & SIG_POLISH) && p->revenue_types[out->type] &&
	    p->prio_revenue < out->priority) {
		out->priority = p->prio_revenue;
		why_prio = "revenue impact";
	}
	if (signals & SIG_FAST_LANE) {
		out->fast_lane = 1;
		if (p->prio_fast_lane < out->priority) {
			out->priority = p->prio_fast_lane;
			why_prio = "fast lane";
		}
	}
	if (out->type == TRIAGE_BUG)
		error = add_reason(out, "priority %d (%s, severity %d)%s", out->priority, why_prio, out->severity,
				   out->fast_lane ? ", fast lane" : "");
	else
		error = add_reason(out, "priority %d (%s)%s", out->priority, why_prio, out->fast_lane ? ", fast lane" : "");
	if (error < 0)
		goto cleanup;

	/* A person's labels win. */
	if (!fresh) {
		human_type = issue_type(issue, &ht_count);
		human_prio = best_scoped(issue, "priority::", 5, &hp_count);
		human_sev = best_scoped(issue, "severity::", 4, &hs_count);
		human_fast = triage_issue_has_label(issue, "fast-lane");
		if (human_type >= 0 && (ht_count == 1 || human_type == TRIAGE_SECURITY) && human_type != (int)out->type) {
			if (out->type == TRIAGE_SECURITY &&
			    (error = add_reason(out, "the rules see a security issue, but a person labelled it type::%s: "
						     "left to them",
						triage_type_name(human_type))) < 0)
				goto cleanup;
			out->type = human_type;
			out->human = 1;
			out->ambiguous = 0;
			if ((error = add_reason(out, "type %s: labelled so on the issue", triage_type_name(human_type))) < 0)
				goto cleanup;
			if (out->type == TRIAGE_SECURITY) {
				out->priority = 1;
			} else if (out->type == TRIAGE_BUG) {
				if (!out->severity)
					out->severity = sev_rules ? sev_rules : p->default_severity;
			} else {
				out->severity = 0;
				out->priority = out->fast_lane ? p->prio_fast_lane : p->prio_type[out->type];
			}
			if (out->type == TRIAGE_BUG && !human_prio)
				out->priority = out->fast_lane && p->prio_fast_lane < p->prio_bug[out->severity]
							? p->prio_fast_lane
							: p->prio_bug[out->severity];
		}
		if (out->type == TRIAGE_BUG && human_sev && human_sev != out->severity) {
			out->severity = human_sev;
			out->human = 1;
			if ((error = add_reason(out, "severity %d: labelled so on the issue", human_sev)) < 0)
				goto cleanup;
			if (!human_prio && out->type != TRIAGE_SECURITY)
				out->priority = out->fast_lane && p->prio_fast_lane < p->prio_bug[human_sev]
							? p->prio_fast_lane
							: p->prio_bug[human_sev];
		}
		if (human_fast && !out->fast_lane) {
			out->fast_lane = 1;
			out->human = 1;
			if (out->type != TRIAGE_SECURITY && !human_prio && p->prio_fast_lane < out->priority)
				out->priority = p->prio_fast_lane;
			if ((error = add_reason(out, "fast lane: labelled so on the issue")) < 0)
				goto cleanup;
		}
		if (human_prio && human_prio != out->priority) {
			if (out->type == TRIAGE_SECURITY &&
			    (error = add_reason(out, "a security issue is priority 1, but a person set priority::%d: "
						     "left to them",
						human_prio)) < 0)
				goto cleanup;
			out->priority = human_prio;
			out->human = 1;
			if ((error = add_reason(out, "priority %d: labelled so on the issue", human_prio)) < 0)
				goto cleanup;
		}
		if (out->type != TRIAGE_BUG && human_sev) {
			/* kept on the issue, so the labels are partly a person's */
			out->human = 1;
			if ((error = add_reason(out, "label severity::%d on the issue is kept", human_sev)) < 0)
				goto cleanup;
		}
		if (ht_count > 1 && human_type != TRIAGE_SECURITY) {
			out->human = 1;
			if ((error = add_reason(out, "%d type labels on the issue: none counts, all are kept", ht_count)) < 0)
				goto cleanup;
		}
		if (hp_count > 1 && (error = add_reason(out, "%d priority labels on the issue: the most urgent counts",
							hp_count)) < 0)
			goto cleanup;
		if (out->human)
			out->ambiguous = 0;
	}
	out->confidential = out->type == TRIAGE_SECURITY;
	if (out->confidential && (error = add_reason(out, "confidential: a security issue")) < 0)
		goto cleanup;
	error = 0;
cleanup:
	rules_result_release(&res);
	fbuf_release(&labels);
	return error;
}

int triage_decision_json(cJSON **out, const triage_decision *d)
{
	cJSON *o = cJSON_CreateObject(), *scores = NULL;
	fbuf labels;
	int t, error = -1;

	*out = NULL;
	fbuf_init(&labels, 256);
	if (!o)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!cJSON_AddStringToObject(o, "type", triage_type_name(d->type)) ||
	    !(d->type == TRIAGE_BUG && d->severity ? cJSON_AddNumberToObject(o, "severity", d->severity)
						    : cJSON_AddNullToObject(o, "severity")) ||
	    !cJSON_AddNumberToObject(o, "priority", d->priority) || !cJSON_AddBoolToObject(o, "fast_lane", d->fast_lane) ||
	    !cJSON_AddBoolToObject(o, "confidential", d->confidential) ||
	    !cJSON_AddItemToObject(o, "reasons", d->reasons ? cJSON_Duplicate(d->reasons, 1) : cJSON_CreateArray()) ||
	    !cJSON_AddBoolToObject(o, "ambiguous", d->ambiguous) || !cJSON_AddBoolToObject(o, "human", d->human) ||
	    !cJSON_AddBoolToObject(o, "model", d->model) ||
	    !cJSON_AddItemToObject(o, "rules", d->rules ? cJSON_Duplicate(d->rules, 1) : cJSON_CreateArray()) ||
	    !(scores = cJSON_AddObjectToObject(o, "scores")))
		goto nomem;
	for (t = 0; t < TRIAGE_NTYPES; t++)
		if (!cJSON_AddNumberToObject(scores, type_names[t], d->scores[t]))
			goto nomem;
	if (triage_decision_labels(&labels, d) < 0 || !cJSON_AddStringToObject(o, "labels", fbuf_cstr(&labels)))
		goto nomem;
	*out = o;
	o = NULL;
	error = 0;
	goto cleanup;
nomem:
	error = ferror_set(FACTORY_ENOMEM, "out of memory");
cleanup:
	fbuf_release(&labels);
	cJSON_Delete(o);
	return error;
}

/* ---- the model's answer ---- */

cJSON *triage_model_schema(void)
{
	static const char schema[] =
		"{\"type\":\"object\",\"additionalProperties\":false,"
		"\"required\":[\"type\",\"priority\",\"reason\"],"
		"\"properties\":{"
		"\"type\":{\"type\":\"string\",\"enum\":[\"security\",\"bug\",\"feature\",\"support\",\"feedback\",\"chore\"],"
		"\"description\":\"what the issue is\"},"
		"\"priority\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":5,"
		"\"description\":\"1 security, 2 high-severity bug, 3 revenue impact, 4 feature, 5 polish\"},"
		"\"severity\":{\"type\":[\"integer\",\"null\"],\"minimum\":1,\"maximum\":4,"
		"\"description\":\"for bugs: 1 outage/data loss, 2 main feature broken, 3 workaround exists, 4 cosmetic\"},"
		"\"fast_lane\":{\"type\":\"boolean\",\"description\":\"red default-branch pipeline, failed deployment or "
		"billing down\"},"
		"\"reason\":{\"type\":\"string\",\"maxLength\":300,\"description\":\"one sentence: why\"}}}";
	return cJSON_Parse(schema);
}

static int whole_in(const cJSON *v, int min, int max)
{
	return cJSON_IsNumber(v) && v->valuedouble >= min && v->valuedouble <= max && v->valuedouble == floor(v->valuedouble);
}

static int validate_answer(const cJSON *a)
{
	const cJSON *item, *v;

	if (!cJSON_IsObject(a))
		return ferror_set(FACTORY_EINVALID, "model answer is not a JSON object");
	cJSON_ArrayForEach(item, a) {
		if (strcmp(item->string, "type") != 0 && strcmp(item->string, "priority") != 0 && strcmp(item->string, "severity") != 0 &&
		    strcmp(item->string, "fast_lane") != 0 && strcmp(item->string, "reason") != 0)
			return ferror_set(FACTORY_EINVALID, "model answer has an unknown key");
	}
	v = cJSON_GetObjectItemCaseSensitive(a, "type");
	if (!cJSON_IsString(v) || triage_type_parse(v->valuestring) < 0)
		return ferror_set(FACTORY_EINVALID, "model answer: type is missing or not one of the six types");
	if (!whole_in(cJSON_GetObjectItemCaseSensitive(a, "priority"), 1, 5))
		return ferror_set(FACTORY_EINVALID, "model answer: priority is missing or not a whole number from 1 to 5");
	v = cJSON_GetObjectItemCaseSensitive(a, "severity");
	if (v && !cJSON_IsNull(v) && !whole_in(v, 1, 4))
		return ferror_set(FACTORY_EINVALID, "model answer: severity is not null or a whole number from 1 to 4");
	v = cJSON_GetObjectItemCaseSensitive(a, "fast_lane");
	if (v && !cJSON_IsBool(v))
		return ferror_set(FACTORY_EINVALID, "model answer: fast_lane is not true or false");
	v = cJSON_GetObjectItemCaseSensitive(a, "reason");
	if (!cJSON_IsString(v) || strlen(v->valuestring) > 4 * MODEL_REASON_MAX)
		return ferror_set(FACTORY_EINVALID, "model answer: reason is missing or longer than %d characters",
				  MODEL_REASON_MAX);
	return 0;
}

int triage_apply_model(triage_decision *d, const cJSON *answer)
{
	const cJSON *rv;
	fbuf why;
	int type, prio, sev = 0, fast, changed = 0, error;
	const cJSON *sv;

	if ((error = validate_answer(answer)) < 0)
		return error;
	type = triage_type_parse(cJSON_GetObjectItemCaseSensitive(answer, "type")->valuestring);
	prio = (int)cJSON_GetObjectItemCaseSensitive(answer, "priority")->valuedouble;
	sv = cJSON_GetObjectItemCaseSensitive(answer, "severity");
	if (cJSON_IsNumber(sv))
		sev = (int)sv->valuedouble;
	fast = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(answer, "fast_lane"));
	rv = cJSON_GetObjectItemCaseSensitive(answer, "reason");

	if (d->type != TRIAGE_SECURITY && !d->human) {
		if (type == TRIAGE_SECURITY) {
			d->type = TRIAGE_SECURITY;
			d->priority = 1;
			d->severity = 0;
			d->confidential = 1;
			changed = 1;
		} else {
			if (d->ambiguous && type != (int)d->type) {
				d->type = type;
				if (type != TRIAGE_BUG)
					d->severity = 0;
				else if (!d->severity)
					d->severity = sev ? sev : 3;
				changed = 1;
			}
			if (d->type == TRIAGE_BUG && sev && (!d->severity || sev < d->severity)) {
				d->severity = sev;
				changed = 1;
			}
			if (prio < d->priority) {
				d->priority = prio;
				changed = 1;
			}
			if (fast && !d->fast_lane) {
				d->fast_lane = 1;
				changed = 1;
			}
		}
	}
	fbuf_init(&why, 4 * MODEL_REASON_MAX);
	untrusted_title(&why, rv->valuestring, strlen(rv->valuestring), MODEL_REASON_MAX);
	if (changed) {
		d->model = 1;
		d->ambiguous = 0;
		error = add_reason(d, "model answer (%s, priority %d): \"%s\": now type %s, priority %d",
				   triage_type_name(type), prio, fbuf_cstr(&why), triage_type_name(d->type), d->priority);
	} else {
		error = add_reason(d, "model answer (%s, priority %d): \"%s\": nothing changed (a model may only raise)",
				   triage_type_name(type), prio, fbuf_cstr(&why));
	}
	fbuf_release(&why);
	return error;
}

/* ---- hash, marker, note ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

uint64_t triage_content_hash(const cJSON *issue)
{
	const char *names[MAX_LABELS];
	const cJSON *l;
	uint64_t h = 14695981039346656037ULL;
	size_t n = 0, len, i;
	const char *s;

	s = str_field(issue, "title", &len);
	h = fnv(h, s, len + 1);
	s = str_field(issue, "description", &len);
	h = fnv(h, s, len + 1);
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *name = label_name(l);
		if (name && !triage_is_own_label(name) && n < MAX_LABELS)
			names[n++] = name;
	}
	if (n > 1)
		qsort(names, n, sizeof(names[0]), cmp_str);
	for (i = 0; i < n; i++)
		h = fnv(h, names[i], strlen(names[i]) + 1);
	return h;
}

#define MARKER_HEAD "<!-- factory-triage v1 "

int triage_marker_format(fbuf *out, const triage_marker *m)
{
	return fbuf_printf(out, MARKER_HEAD "content=%016llx labels=%s confidential=%d -->",
			   (unsigned long long)m->content, m->labels[0] ? m->labels : "-", m->confidential ? 1 : 0);
}

int triage_marker_parse(triage_marker *out, const char *body)
{
	const char *p = NULL, *q, *end;
	char hex[17];
	size_t n;

	memset(out, 0, sizeof(*out));
	for (q = body; q && (q = strstr(q, MARKER_HEAD)); q++)
		p = q;
	if (!p)
		return FACTORY_ENOTFOUND;
	p += strlen(MARKER_HEAD);
	if (!(end = strstr(p, "-->")))
		return FACTORY_ENOTFOUND;
	if (strncmp(p, "content=", 8) != 0)
		return FACTORY_ENOTFOUND;
	p += 8;
	for (n = 0; n < 16; n++) {
		char c = p[n];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return FACTORY_ENOTFOUND;
		hex[n] = c;
	}
	hex[16] = '\0';
	out->content = strtoull(hex, NULL, 16);
	p += 16;
	if (strncmp(p, " labels=", 8) != 0)
		return FACTORY_ENOTFOUND;
	p += 8;
	q = strchr(p, ' ');
	if (!q || q > end || (size_t)(q - p) >= sizeof(out->labels))
		return FACTORY_ENOTFOUND;
	memcpy(out->labels, p, (size_t)(q - p));
	out->labels[q - p] = '\0';
	if (!strcmp(out->labels, "-"))
		out->labels[0] = '\0';
	p = q;
	if (!strncmp(p, " confidential=1 -->", 19))
		out->confidential = 1;
	else if (strncmp(p, " confidential=0 -->", 19) != 0)
		return FACTORY_ENOTFOUND;
	return 0;
}

int triage_note(fbuf *out, const triage_decision *d, const triage_marker *m, const char *extra)
{
	const cJSON *r;
	int error;

	error = fbuf_printf(out, "**Triage:** `type::%s` `priority::%d`", triage_type_name(d->type), d->priority);
	if (!error && d->type == TRIAGE_BUG && d->severity)
		error = fbuf_printf(out, " `severity::%d`", d->severity);
	if (!error && d->fast_lane)
		error = fbuf_puts(out, " `fast-lane`");
	if (!error && d->confidential)
		error = fbuf_puts(out, ", confidential");
	if (!error)
		error = fbuf_printf(out, " (%s%s).\n\nWhy:\n", d->model ? "rules and model" : "rules",
				    d->human ? ", with labels set by a person" : "");
	cJSON_ArrayForEach(r, d->reasons) {
		if (error)
			break;
		/* reasons were cleaned when they were made; clean again so a
		 * caller's own reasons cannot slip anything through */
		error = fbuf_puts(out, "- ");
		if (!error)
			error = untrusted_neutralise(out, r->valuestring, strlen(r->valuestring));
		if (!error)
			error = fbuf_putc(out, '\n');
	}
	if (!error && extra)
		error = fbuf_printf(out, "\n%s\n", extra);
	if (!error)
		error = fbuf_puts(out, "\n");
	if (!error)
		error = triage_marker_format(out, m);
	return error;
}
