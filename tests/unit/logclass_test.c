/* Tests for common/logclass: built-in classes, project rules first, status rules, bad rules. */
#include <criterion/criterion.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "logclass.h"

static const char *cls(const logclass *lc, const char *msg, int status)
{
	const logclass_rule *r = logclass_match(lc, msg, strlen(msg), NULL, 0, status);
	return r ? r->name : "-";
}

Test(logclass, defaults_name_the_common_classes)
{
	logclass *lc;

	cr_assert_eq(logclass_new(&lc, NULL, 1), 0, "%s", ferror_last());
	cr_assert_str_eq(cls(lc, "panic: runtime error: index out of range", 0), "crash");
	cr_assert_str_eq(cls(lc, "Segmentation fault (core dumped)", 0), "crash");
	cr_assert_str_eq(cls(lc, "payment failed for order 12: card declined", 0), "payment");
	cr_assert_str_eq(cls(lc, "could not charge customer", 0), "payment");
	cr_assert_str_eq(cls(lc, "login failed: invalid password", 0), "authentication");
	cr_assert_str_eq(cls(lc, "ERROR: duplicate key value violates unique constraint", 0), "database");
	cr_assert_str_eq(cls(lc, "request to inventory timed out", 0), "timeout");
	cr_assert_str_eq(cls(lc, "upstream said no", 503), "server-error");
	cr_assert_str_eq(cls(lc, "everything is fine", 200), "-");
	cr_assert_geq(logclass_count(lc), 6);
	logclass_free(lc);
}

Test(logclass, project_rules_come_first_and_replace_by_name)
{
	logclass *lc;
	cJSON *rules = NULL;
	const char *yaml = "- name: inventory\n  pattern: 'inventory'\n  severity: 1\n"
	                   "- name: timeout\n  pattern: 'slow'\n  severity: 4\n  error: false\n";
	const logclass_rule *r;

	cr_assert_eq(fconfig_yaml_to_json(&rules, yaml, strlen(yaml), "test"), 0, "%s", ferror_last());
	cr_assert_eq(logclass_new(&lc, rules, 1), 0, "%s", ferror_last());
	cr_assert_str_eq(cls(lc, "request to inventory timed out", 0), "inventory");
	r = logclass_match(lc, "slow query", 10, NULL, 0, 0);
	cr_assert_not_null(r);
	cr_assert_str_eq(r->name, "timeout");
	cr_assert_eq(r->severity, 4);
	cr_assert_eq(r->makes_error, 0);
	/* the built-in timeout rule is gone: its pattern no longer matches */
	cr_assert_str_eq(cls(lc, "deadline exceeded", 0), "-");
	/* the detail (stack trace) is searched too */
	r = logclass_match(lc, "checkout failed", 15, "goroutine 1 [running]:\npanic: boom", 33, 0);
	cr_assert_not_null(r);
	logclass_free(lc);
	cJSON_Delete(rules);
}

Test(logclass, bad_rules_are_config_errors)
{
	logclass *lc;
	cJSON *rules = NULL;
	const char *bad_sev = "- name: x\n  pattern: 'a'\n  severity: 7\n";
	const char *bad_re = "- name: y\n  pattern: '(unclosed'\n  severity: 2\n";

	cr_assert_eq(fconfig_yaml_to_json(&rules, bad_sev, strlen(bad_sev), "t"), 0);
	cr_assert_eq(logclass_new(&lc, rules, 0), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "severity"), "%s", ferror_last());
	cJSON_Delete(rules);
	cr_assert_eq(fconfig_yaml_to_json(&rules, bad_re, strlen(bad_re), "t"), 0);
	cr_assert_eq(logclass_new(&lc, rules, 0), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "y"), "%s", ferror_last());
	cJSON_Delete(rules);
	rules = cJSON_CreateObject();
	cr_assert_eq(logclass_new(&lc, rules, 1), FACTORY_ECONFIG);
	cJSON_Delete(rules);
}
