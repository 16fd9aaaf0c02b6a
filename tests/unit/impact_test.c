/* Tests for common/impact.c: the customer-impact rules in their order,
 * groups, skips, breaking changes, and the settings (YAML lists, flags and
 * environment strings, bad values). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "impact.h"

static impact_policy *policy(const char *yaml)
{
	fconfig *cfg;
	impact_policy *p;

	cr_assert_eq(fconfig_new(&cfg), 0);
	if (yaml)
		cr_assert_eq(fconfig_load_yaml_string(cfg, yaml, "test.yml"), 0, "%s", ferror_last());
	cr_assert_eq(impact_policy_new(&p, cfg), 0, "%s", ferror_last());
	fconfig_free(cfg);
	return p;
}

static impact_verdict judge(const impact_policy *p, const char *labels_json, int has_mr, const char *path)
{
	char json[512];
	cJSON *issue;
	impact_verdict v;

	snprintf(json, sizeof(json), "{\"iid\":1,\"labels\":%s}", labels_json);
	issue = cJSON_Parse(json);
	cr_assert_not_null(issue);
	cr_assert_eq(impact_assess_issue(&v, p, issue, has_mr, path), 0);
	cJSON_Delete(issue);
	return v;
}

Test(impact, rules_in_order)
{
	impact_policy *p = policy(NULL);
	impact_verdict v;

	v = judge(p, "[\"type::chore\",\"release::customer-facing\"]", 1, NULL);
	cr_assert(v.customer && v.strong, "a person's label wins: %s", v.reason);
	v = judge(p, "[\"type::security\",\"release::internal\"]", 1, NULL);
	cr_assert(!v.customer && v.strong, "%s", v.reason);
	cr_assert_eq(v.group, NOTES_SECURITY);
	v = judge(p, "[\"type::security\",\"type::chore\"]", 1, NULL);
	cr_assert(v.customer && v.strong, "security beats an internal label: %s", v.reason);
	v = judge(p, "[\"type::chore\",\"source::customer\"]", 1, NULL);
	cr_assert(v.customer && v.strong, "%s", v.reason);
	cr_assert(strstr(v.reason, "source::customer"), "%s", v.reason);
	v = judge(p, "[\"type::bug\",\"internal\"]", 1, NULL);
	cr_assert(!v.customer && v.strong, "%s", v.reason);
	v = judge(p, "[\"type::chore\"]", 1, "web/");
	cr_assert(!v.customer && v.strong, "an internal label beats a path: %s", v.reason);
	v = judge(p, "[]", 1, "web/");
	cr_assert(v.customer && v.strong, "%s", v.reason);
	cr_assert(strstr(v.reason, "web/"), "%s", v.reason);
	v = judge(p, "[\"type::bug\"]", 1, NULL);
	cr_assert(v.customer && !v.strong, "%s", v.reason);
	cr_assert_eq(v.group, NOTES_FIX);
	v = judge(p, "[\"type::feature\"]", 0, NULL);
	cr_assert(v.customer && !v.strong);
	cr_assert_eq(v.group, NOTES_FEATURE);
	v = judge(p, "[\"type::support\"]", 1, NULL);
	cr_assert(!v.customer && !v.strong && !v.skip, "%s", v.reason);
	v = judge(p, "[]", 1, NULL);
	cr_assert(!v.customer && !v.strong, "%s", v.reason);
	cr_assert_eq(v.group, NOTES_OTHER);
	impact_policy_free(p);
}

Test(impact, groups_skips_and_breaking)
{
	impact_policy *p = policy(NULL);
	impact_verdict v;

	v = judge(p, "[\"type::bug\",\"Performance\"]", 1, NULL);
	cr_assert_eq(v.group, NOTES_PERFORMANCE, "labels match in any case");
	v = judge(p, "[\"type::security\",\"performance\"]", 1, NULL);
	cr_assert_eq(v.group, NOTES_SECURITY);
	v = judge(p, "[\"type::bug\",\"duplicate\"]", 1, NULL);
	cr_assert(v.skip, "%s", v.reason);
	v = judge(p, "[\"type::support\"]", 0, NULL);
	cr_assert(v.skip, "a question closed without a merge request: %s", v.reason);
	v = judge(p, "[\"type::feedback\"]", 0, NULL);
	cr_assert(v.skip);
	v = judge(p, "[\"type::bug\"]", 0, NULL);
	cr_assert_not(v.skip, "a bug closed without a merge request is still a change");
	v = judge(p, "[\"type::feature\",\"breaking\"]", 1, NULL);
	cr_assert(v.breaking);
	/* label objects (with_labels_details) work too */
	v = judge(p, "[{\"name\":\"source::customer\"}]", 1, NULL);
	cr_assert(v.customer && v.strong, "%s", v.reason);
	impact_policy_free(p);
}

Test(impact, commits)
{
	impact_policy *p = policy(NULL);
	impact_verdict v;

	cr_assert_eq(impact_assess_commit(&v, p, "added", NULL), 0);
	cr_assert(v.customer && !v.strong);
	cr_assert_eq(v.group, NOTES_FEATURE);
	cr_assert_eq(impact_assess_commit(&v, p, "security", NULL), 0);
	cr_assert(v.customer && v.strong);
	cr_assert_eq(impact_assess_commit(&v, p, "other", NULL), 0);
	cr_assert(!v.customer);
	cr_assert_eq(impact_assess_commit(&v, p, "other", "api/public/"), 0);
	cr_assert(v.customer && v.strong);
	cr_assert_eq(impact_assess_commit(&v, p, "removed", NULL), 0);
	cr_assert(v.customer && v.breaking);
	impact_policy_free(p);
}

Test(impact, settings_from_yaml_and_environment)
{
	fconfig *cfg;
	impact_policy *p;
	impact_verdict v;
	size_t n;
	const char *const *paths;
	cJSON *j;

	cr_assert_eq(fconfig_new(&cfg), 0);
	cr_assert_eq(
	        fconfig_load_yaml_string(cfg,
	                                 "release:\n  customer_labels: [ux, billing]\n"
	                                 "  customer_paths: [web/, api/openapi.yaml]\n  customer_types: [feature]\n",
	                                 "t.yml"),
	        0);
	cr_assert_eq(impact_policy_new(&p, cfg), 0, "%s", ferror_last());
	paths = impact_policy_paths(p, &n);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(paths[1], "api/openapi.yaml");
	v = judge(p, "[\"billing\"]", 1, NULL);
	cr_assert(v.customer && v.strong);
	v = judge(p, "[\"source::customer\",\"type::chore\"]", 1, NULL);
	cr_assert(!v.customer, "the list replaces the default: %s", v.reason);
	v = judge(p, "[\"type::bug\"]", 1, NULL);
	cr_assert(!v.customer, "bugs are not in customer_types here: %s", v.reason);
	j = impact_policy_json(p);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "customer_labels")), 2);
	cJSON_Delete(j);
	impact_policy_free(p);

	/* the environment wins over the file, as a comma-separated string */
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "release.customer_labels", " a , b,c "), 0);
	cr_assert_eq(impact_policy_new(&p, cfg), 0);
	v = judge(p, "[\"c\"]", 1, NULL);
	cr_assert(v.customer && v.strong);
	v = judge(p, "[\"billing\"]", 1, NULL);
	cr_assert_not(v.strong);
	impact_policy_free(p);

	/* bad values */
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "release.customer_labels", "a,,b"), 0);
	cr_assert_eq(impact_policy_new(&p, cfg), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "release.customer_labels"), "%s", ferror_last());
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "release.customer_labels", NULL), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "release.customer_paths", "../etc"), 0);
	cr_assert_eq(impact_policy_new(&p, cfg), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "customer_paths"), "%s", ferror_last());
	fconfig_free(cfg);

	cr_assert_eq(fconfig_new(&cfg), 0);
	cr_assert_eq(fconfig_load_yaml_string(cfg, "release:\n  skip_labels: [1, 2]\n", "t.yml"), 0);
	cr_assert_eq(impact_policy_new(&p, cfg), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "release.skip_labels"), "%s", ferror_last());
	fconfig_free(cfg);
	cr_assert_eq(fconfig_new(&cfg), 0);
	cr_assert_eq(fconfig_load_yaml_string(cfg, "release:\n  skip_labels: {a: 1}\n", "t.yml"), 0);
	cr_assert_eq(impact_policy_new(&p, cfg), FACTORY_ECONFIG);
	fconfig_free(cfg);
}
