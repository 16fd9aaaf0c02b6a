/* impact.c - is a change customer-facing? */
#include "impact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

#define LIST_MAX 200
#define NAME_MAX_LEN 255

typedef struct {
	char **v;
	size_t n;
} strlist;

struct impact_policy {
	strlist customer_labels, internal_labels, customer_paths, customer_types, skip_labels, breaking_labels,
	        performance_labels;
};

static void strlist_release(strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int strlist_add(strlist *l, const char *s, size_t len, const char *key)
{
	char **p;

	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (!len)
		return ferror_set(FACTORY_ECONFIG, "bad setting %s: an empty name in the list", key);
	if (len > NAME_MAX_LEN)
		return ferror_set(FACTORY_ECONFIG, "bad setting %s: a name longer than %d bytes", key, NAME_MAX_LEN);
	if (l->n >= LIST_MAX)
		return ferror_set(FACTORY_ECONFIG, "bad setting %s: more than %d names", key, LIST_MAX);
	if (!(p = realloc(l->v, (l->n + 1) * sizeof(*p))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	l->v = p;
	if (!(l->v[l->n] = strndup(s, len)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	l->n++;
	return 0;
}

/* A list setting: flag/env string (comma-separated), else the YAML
 * sequence, else the defaults (NULL-terminated). */
static int load_list(strlist *l, const fconfig *cfg, const char *key, const char *const *defaults)
{
	fconfig_source src;
	const char *v = fconfig_get(cfg, key, &src);
	const cJSON *seq, *it;
	int error;

	if (v && *v) {
		const char *p = v;
		for (;;) {
			const char *c = strchr(p, ',');
			size_t n = c ? (size_t)(c - p) : strlen(p);
			if ((error = strlist_add(l, p, n, key)) < 0)
				return error;
			if (!c)
				return 0;
			p = c + 1;
		}
	}
	seq = fconfig_yaml_path(cfg, key);
	if (seq && !cJSON_IsNull(seq)) {
		if (!cJSON_IsArray(seq))
			return ferror_set(FACTORY_ECONFIG, "bad setting %s: expected a list of names", key);
		cJSON_ArrayForEach(it, seq)
		{
			if (!cJSON_IsString(it))
				return ferror_set(FACTORY_ECONFIG, "bad setting %s: every entry must be a string", key);
			if ((error = strlist_add(l, it->valuestring, strlen(it->valuestring), key)) < 0)
				return error;
		}
		return 0;
	}
	for (; defaults && *defaults; defaults++)
		if ((error = strlist_add(l, *defaults, strlen(*defaults), key)) < 0)
			return error;
	return 0;
}

static int check_paths(const strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		const char *s = l->v[i];
		if (strchr(s, ' ') || strstr(s, "..") || *s == '/' || strchr(s, '\n'))
			return ferror_set(FACTORY_ECONFIG,
			                  "bad setting release.customer_paths: '%s' (a path in the repository, no "
			                  "leading '/', no blank or '..')",
			                  s);
	}
	return 0;
}

int impact_policy_new(impact_policy **out, const fconfig *cfg)
{
	static const char *const d_customer[] = {"source::customer", "customer-facing", NULL};
	static const char *const d_internal[] = {"type::chore", "internal", NULL};
	static const char *const d_types[] = {"security", "feature",    "bug",     "performance",
	                                      "changed",  "deprecated", "removed", NULL};
	static const char *const d_skip[] = {"duplicate", "wontfix", "won't fix", "invalid", NULL};
	static const char *const d_breaking[] = {"breaking", "breaking change", NULL};
	static const char *const d_perf[] = {"performance", "type::performance", NULL};
	impact_policy *p = calloc(1, sizeof(*p));
	int error;

	*out = NULL;
	if (!p)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = load_list(&p->customer_labels, cfg, "release.customer_labels", d_customer)) < 0 ||
	    (error = load_list(&p->internal_labels, cfg, "release.internal_labels", d_internal)) < 0 ||
	    (error = load_list(&p->customer_paths, cfg, "release.customer_paths", NULL)) < 0 ||
	    (error = load_list(&p->customer_types, cfg, "release.customer_types", d_types)) < 0 ||
	    (error = load_list(&p->skip_labels, cfg, "release.skip_labels", d_skip)) < 0 ||
	    (error = load_list(&p->breaking_labels, cfg, "release.breaking_labels", d_breaking)) < 0 ||
	    (error = load_list(&p->performance_labels, cfg, "release.performance_labels", d_perf)) < 0 ||
	    (error = check_paths(&p->customer_paths)) < 0) {
		impact_policy_free(p);
		return error;
	}
	*out = p;
	return 0;
}

void impact_policy_free(impact_policy *p)
{
	if (!p)
		return;
	strlist_release(&p->customer_labels);
	strlist_release(&p->internal_labels);
	strlist_release(&p->customer_paths);
	strlist_release(&p->customer_types);
	strlist_release(&p->skip_labels);
	strlist_release(&p->breaking_labels);
	strlist_release(&p->performance_labels);
	free(p);
}

const char *const *impact_policy_paths(const impact_policy *p, size_t *n)
{
	*n = p->customer_paths.n;
	return (const char *const *)p->customer_paths.v;
}

static cJSON *list_json(const strlist *l)
{
	cJSON *a = cJSON_CreateArray();
	size_t i;

	for (i = 0; a && i < l->n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(l->v[i]));
	return a;
}

cJSON *impact_policy_json(const impact_policy *p)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddItemToObject(o, "customer_labels", list_json(&p->customer_labels));
	cJSON_AddItemToObject(o, "internal_labels", list_json(&p->internal_labels));
	cJSON_AddItemToObject(o, "customer_paths", list_json(&p->customer_paths));
	cJSON_AddItemToObject(o, "customer_types", list_json(&p->customer_types));
	cJSON_AddItemToObject(o, "skip_labels", list_json(&p->skip_labels));
	cJSON_AddItemToObject(o, "breaking_labels", list_json(&p->breaking_labels));
	cJSON_AddItemToObject(o, "performance_labels", list_json(&p->performance_labels));
	return o;
}

static int in_list(const strlist *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (!strcasecmp(l->v[i], name))
			return 1;
	return 0;
}

/* The first label of the issue in list `l`, or NULL. */
static const char *label_in(const cJSON *issue, const strlist *l)
{
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels"), *it;

	cJSON_ArrayForEach(it, labels)
	{
		const char *name = cJSON_IsString(it) ? it->valuestring : NULL;
		if (!name && cJSON_IsObject(it)) {
			const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
			name = cJSON_IsString(n) ? n->valuestring : NULL;
		}
		if (name && in_list(l, name))
			return name;
	}
	return NULL;
}

static int has_label(const cJSON *issue, const char *want)
{
	strlist one;
	char *v[1];

	v[0] = (char *)want;
	one.v = v;
	one.n = 1;
	return label_in(issue, &one) != NULL;
}

/* The issue's type:: label without its prefix ("bug"), or NULL. */
static const char *issue_type(const cJSON *issue)
{
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels"), *it;

	cJSON_ArrayForEach(it, labels)
	{
		if (cJSON_IsString(it) && !strncasecmp(it->valuestring, "type::", 6) && it->valuestring[6])
			return it->valuestring + 6;
	}
	return NULL;
}

/* Set the verdict; the reason is the parts a, b and c (b and c may be NULL) joined. */
static void verdict(impact_verdict *out, int customer, int strong, const char *a, const char *b, const char *c)
{
	out->customer = customer;
	out->strong = strong;
	snprintf(out->reason, sizeof(out->reason), "%s%s%s", a, b ? b : "", c ? c : "");
}

int impact_assess_issue(impact_verdict *out, const impact_policy *p, const cJSON *issue, int has_mr, const char *path)
{
	const char *type = issue_type(issue), *l;

	memset(out, 0, sizeof(*out));
	out->breaking = label_in(issue, &p->breaking_labels) != NULL;
	if (type && !strcasecmp(type, "security"))
		out->group = NOTES_SECURITY;
	else if (label_in(issue, &p->performance_labels))
		out->group = NOTES_PERFORMANCE;
	else if (type && !strcasecmp(type, "feature"))
		out->group = NOTES_FEATURE;
	else if (type && !strcasecmp(type, "bug"))
		out->group = NOTES_FIX;
	else
		out->group = NOTES_OTHER;

	if ((l = label_in(issue, &p->skip_labels))) {
		out->skip = 1;
		verdict(out, 0, 1, "labelled ", l, ": not a change");
		return 0;
	}
	if (!has_mr && type && (!strcasecmp(type, "support") || !strcasecmp(type, "feedback"))) {
		out->skip = 1;
		verdict(out, 0, 1, "type::", type, " closed without a merge request: not a change");
		return 0;
	}
	if (has_label(issue, LABEL_RELEASE_CUSTOMER))
		verdict(out, 1, 1, "labelled " LABEL_RELEASE_CUSTOMER, NULL, NULL);
	else if (has_label(issue, LABEL_RELEASE_INTERNAL))
		verdict(out, 0, 1, "labelled " LABEL_RELEASE_INTERNAL, NULL, NULL);
	else if (out->group == NOTES_SECURITY)
		verdict(out, 1, 1, "a security fix concerns every customer", NULL, NULL);
	else if ((l = label_in(issue, &p->customer_labels)))
		verdict(out, 1, 1, "labelled ", l, NULL);
	else if ((l = label_in(issue, &p->internal_labels)))
		verdict(out, 0, 1, "labelled ", l, NULL);
	else if (path)
		verdict(out, 1, 1, "changes ", path, NULL);
	else if (type && in_list(&p->customer_types, type))
		verdict(out, 1, 0, "type::", type, " is customer-facing by default");
	else if (type)
		verdict(out, 0, 0, "type::", type, " is internal by default");
	else
		verdict(out, 0, 0, "no type, customer label or customer path", NULL, NULL);
	return 0;
}

int impact_assess_commit(impact_verdict *out, const impact_policy *p, const char *category, const char *path)
{
	const char *type;

	memset(out, 0, sizeof(*out));
	out->group = notes_category_group(category, &out->breaking);
	type = !category                    ? "other"
	       : !strcmp(category, "added") ? "feature"
	       : !strcmp(category, "fixed") ? "bug"
	                                    : category;
	if (out->group == NOTES_SECURITY)
		verdict(out, 1, 1, "a security fix concerns every customer", NULL, NULL);
	else if (path)
		verdict(out, 1, 1, "changes ", path, NULL);
	else if (in_list(&p->customer_types, type))
		verdict(out, 1, 0, "Changelog: ", category ? category : "other", " is customer-facing by default");
	else
		verdict(out, 0, 0, "Changelog: ", category ? category : "other", " is internal by default");
	return 0;
}
