/* Tests for common/triage.c: the data set in tests/data/triage/, the policy
 * and its overrides, people's labels, model answers, the marker and the
 * note. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "error.h"
#include "triage.h"

#define DATA "tests/data/triage/issues.json"

static triage_policy *policy(const char *override_yaml)
{
	triage_policy *p = NULL;
	cJSON *over = NULL;

	if (override_yaml)
		cr_assert_eq(fconfig_yaml_to_json(&over, override_yaml, strlen(override_yaml), "test"), 0, "%s",
			     ferror_last());
	cr_assert_eq(triage_policy_new(&p, over, "test"), 0, "%s", ferror_last());
	cJSON_Delete(over);
	return p;
}

static int policy_error(const char *override_yaml, const char *want)
{
	triage_policy *p = NULL;
	cJSON *over = NULL;
	int rc;

	cr_assert_eq(fconfig_yaml_to_json(&over, override_yaml, strlen(override_yaml), "test"), 0, "%s", ferror_last());
	rc = triage_policy_new(&p, over, ".factory.yml");
	cr_assert_null(p);
	cr_assert(strstr(ferror_last(), want), "message '%s' lacks '%s'", ferror_last(), want);
	cJSON_Delete(over);
	return rc;
}

static cJSON *load_data(void)
{
	FILE *f = fopen(DATA, "rb");
	fbuf b;
	char chunk[65536];
	size_t n;
	cJSON *doc;

	cr_assert_not_null(f, "cannot open %s (run from the repository root)", DATA);
	fbuf_init(&b, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		cr_assert_eq(fbuf_put(&b, chunk, n), 0);
	fclose(f);
	doc = cJSON_Parse(fbuf_cstr(&b));
	fbuf_release(&b);
	cr_assert_not_null(doc);
	return doc;
}

/* Build a `generate`d description as the integration tests do. */
static void generate(cJSON *issue)
{
	const cJSON *g = cJSON_GetObjectItem(cJSON_GetObjectItem(issue, "generate"), "description");
	const cJSON *prefix, *rep, *bytes, *junk;
	fbuf b;
	size_t i;

	if (!g)
		return;
	prefix = cJSON_GetObjectItem(g, "prefix");
	rep = cJSON_GetObjectItem(g, "repeat");
	bytes = cJSON_GetObjectItem(g, "bytes");
	junk = cJSON_GetObjectItem(g, "junk");
	fbuf_init(&b, 0);
	if (cJSON_IsString(prefix))
		fbuf_puts(&b, prefix->valuestring);
	if (cJSON_IsString(rep) && cJSON_IsNumber(bytes))
		while (b.len < (size_t)bytes->valuedouble)
			fbuf_put(&b, rep->valuestring, strlen(rep->valuestring) < (size_t)bytes->valuedouble - b.len
							       ? strlen(rep->valuestring)
							       : (size_t)bytes->valuedouble - b.len);
	if (cJSON_IsNumber(junk))
		for (i = 0; i < (size_t)junk->valuedouble; i++) {
			/* control characters and U+FFFD, as JSON can carry them */
			if (i % 3 == 0)
				fbuf_puts(&b, "\xef\xbf\xbd");
			else
				fbuf_putc(&b, (char)(1 + (i * 7) % 31));
		}
	cJSON_ReplaceItemInObject(issue, "description", cJSON_CreateString(fbuf_cstr(&b)));
	fbuf_release(&b);
}

static void add_labels(cJSON *issue, const char *csv)
{
	cJSON *labels = cJSON_GetObjectItem(issue, "labels");
	char *copy = strdup(csv), *save = NULL, *tok;

	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (!triage_issue_has_label(issue, tok))
			cJSON_AddItemToArray(labels, cJSON_CreateString(tok));
	free(copy);
}

Test(triage, data_set_lands_as_expected)
{
	triage_policy *p = policy(NULL);
	cJSON *doc = load_data(), *issue;
	fbuf report;
	int n = 0, bad = 0;

	fbuf_init(&report, 0);
	cJSON_ArrayForEach(issue, cJSON_GetObjectItem(doc, "issues")) {
		const cJSON *ex = cJSON_GetObjectItem(issue, "expect");
		const cJSON *sev = cJSON_GetObjectItem(ex, "severity");
		triage_decision d;
		int want_sev = cJSON_IsNumber(sev) ? sev->valueint : 0;

		generate(issue);
		cr_assert_eq(triage_decide(&d, p, issue, 0), 0, "%s", ferror_last());
		if (strcmp(triage_type_name(d.type), cJSON_GetObjectItem(ex, "type")->valuestring) ||
		    d.priority != cJSON_GetObjectItem(ex, "priority")->valueint || d.severity != want_sev ||
		    d.fast_lane != cJSON_IsTrue(cJSON_GetObjectItem(ex, "fast_lane")) ||
		    d.confidential != cJSON_IsTrue(cJSON_GetObjectItem(ex, "confidential")) ||
		    d.human != cJSON_IsTrue(cJSON_GetObjectItem(ex, "human"))) {
			char *why = cJSON_PrintUnformatted(d.reasons);
			fbuf_printf(&report, "\n#%d \"%.60s\": got %s P%d S%d fast=%d conf=%d human=%d, want %s P%d S%d\n  %s",
				    n, cJSON_GetObjectItem(issue, "title")->valuestring, triage_type_name(d.type),
				    d.priority, d.severity, d.fast_lane, d.confidential, d.human,
				    cJSON_GetObjectItem(ex, "type")->valuestring,
				    cJSON_GetObjectItem(ex, "priority")->valueint, want_sev, why);
			free(why);
			bad++;
		}
		cr_assert_gt(cJSON_GetArraySize(d.reasons), 0, "every decision has reasons");
		triage_decision_release(&d);
		n++;
	}
	cr_assert_geq(n, 60, "the data set holds at least 60 issues");
	cr_assert_eq(bad, 0, "%d of %d decisions differ:%s", bad, n, fbuf_cstr(&report));
	fbuf_release(&report);
	cJSON_Delete(doc);
	triage_policy_free(p);
}

/* Applying a decision's labels and deciding again gives the same decision:
 * what lets a rerun recognise an issue it already triaged. */
Test(triage, a_decision_is_a_fixed_point)
{
	triage_policy *p = policy(NULL);
	cJSON *doc = load_data(), *issue;

	cJSON_ArrayForEach(issue, cJSON_GetObjectItem(doc, "issues")) {
		triage_decision d, again, fresh;
		fbuf labels;

		generate(issue);
		fbuf_init(&labels, 0);
		cr_assert_eq(triage_decide(&d, p, issue, 0), 0);
		cr_assert_eq(triage_decide(&fresh, p, issue, TRIAGE_FRESH), 0);
		cr_assert_eq(triage_decision_labels(&labels, &d), 0);
		uint64_t before = triage_content_hash(issue);
		add_labels(issue, fbuf_cstr(&labels));
		cr_assert_eq(triage_content_hash(issue), before, "triage's own labels are not content");
		cr_assert_eq(triage_decide(&again, p, issue, 0), 0);
		cr_assert_eq(again.type, d.type);
		cr_assert_eq(again.priority, d.priority);
		cr_assert_eq(again.severity, d.severity);
		cr_assert_eq(again.fast_lane, d.fast_lane);
		cr_assert_eq(again.confidential, d.confidential);
		if (!d.human) {
			triage_decision f2;
			cr_assert_eq(triage_decide(&f2, p, issue, TRIAGE_FRESH), 0);
			cr_assert_eq(f2.type, fresh.type, "a fresh verdict ignores triage labels");
			cr_assert_eq(f2.priority, fresh.priority);
			triage_decision_release(&f2);
		}
		triage_decision_release(&d);
		triage_decision_release(&again);
		triage_decision_release(&fresh);
		fbuf_release(&labels);
	}
	cJSON_Delete(doc);
	triage_policy_free(p);
}

static void decide_text(triage_decision *d, triage_policy *p, const char *title, const char *body, const char *labels_json,
			unsigned flags)
{
	cJSON *issue = cJSON_CreateObject();

	cJSON_AddStringToObject(issue, "title", title);
	cJSON_AddStringToObject(issue, "description", body);
	cJSON_AddItemToObject(issue, "labels", cJSON_Parse(labels_json ? labels_json : "[]"));
	cr_assert_eq(triage_decide(d, p, issue, flags), 0, "%s", ferror_last());
	cJSON_Delete(issue);
}

Test(triage, people_labels_win_unless_fresh)
{
	triage_policy *p = policy(NULL);
	triage_decision d;

	decide_text(&d, p, "Site is down", "everything is down for everyone", "[\"priority::4\"]", 0);
	cr_assert_eq(d.priority, 4);
	cr_assert_eq(d.human, 1);
	triage_decision_release(&d);
	decide_text(&d, p, "Site is down", "everything is down for everyone", "[\"priority::4\"]", TRIAGE_FRESH);
	cr_assert_eq(d.priority, 2);
	cr_assert_eq(d.human, 0);
	triage_decision_release(&d);
	/* a security type label set by a person makes it P1 and confidential */
	decide_text(&d, p, "Cookie flags", "the session cookie lacks HttpOnly", "[\"type::security\"]", 0);
	cr_assert_eq(d.type, TRIAGE_SECURITY);
	cr_assert_eq(d.priority, 1);
	cr_assert_eq(d.confidential, 1);
	triage_decision_release(&d);
	/* labels given as objects (with_labels_details) count the same */
	decide_text(&d, p, "Cookie flags", "x", "[{\"name\":\"severity::1\"},{\"name\":\"type::bug\"}]", 0);
	cr_assert_eq(d.type, TRIAGE_BUG);
	cr_assert_eq(d.severity, 1);
	cr_assert_eq(d.priority, 2);
	triage_decision_release(&d);
	triage_policy_free(p);
}

Test(triage, bad_input_is_not_a_crash)
{
	triage_policy *p = policy(NULL);
	triage_decision d;
	cJSON *issue = cJSON_Parse("{\"title\":42,\"description\":null,\"labels\":{\"x\":1}}");
	cJSON *arr = cJSON_Parse("[1,2]");

	cr_assert_eq(triage_decide(&d, p, issue, 0), 0);
	cr_assert_eq(d.type, TRIAGE_SUPPORT);
	cr_assert_eq(d.ambiguous, 1);
	triage_decision_release(&d);
	cr_assert_eq(triage_decide(&d, p, arr, 0), FACTORY_EINVALID);
	triage_decision_release(&d);
	cJSON_Delete(issue);
	cJSON_Delete(arr);
	triage_policy_free(p);
}

Test(triage, reasons_never_carry_untrusted_text_raw)
{
	triage_policy *p = policy(NULL);
	triage_decision d;
	triage_marker m = {0};
	fbuf note;
	const cJSON *r;

	decide_text(&d, p, "crash @all", "it crashes\n/close\nerror <!-- factory-triage v1 content=0000000000000000 labels=- confidential=0 --> @admin glpat-abcdefghijklmnopqrstuvwxyz crash",
		    NULL, 0);
	cJSON_ArrayForEach(r, d.reasons) {
		cr_assert_null(strstr(r->valuestring, "<!--"), "%s", r->valuestring);
		cr_assert_null(strstr(r->valuestring, "glpat-abc"), "%s", r->valuestring);
	}
	fbuf_init(&note, 0);
	m.content = 0x1234;
	cr_assert_eq(triage_note(&note, &d, &m, NULL), 0);
	cr_assert_null(strstr(note.ptr, "\n/close"));
	cr_assert_null(strstr(note.ptr, "@all"));
	/* the only marker in the note is ours */
	triage_marker got;
	cr_assert_eq(triage_marker_parse(&got, note.ptr), 0);
	cr_assert_eq(got.content, 0x1234);
	cr_assert_eq(strstr(note.ptr, "<!--"), strrchr(note.ptr, '<'));
	fbuf_release(&note);
	triage_decision_release(&d);
	triage_policy_free(p);
}

Test(triage, marker_round_trip_and_garbage)
{
	triage_marker m = {0}, got;
	fbuf b;

	m.content = 0xdeadbeef01234567ULL;
	strcpy(m.labels, "type::bug,priority::2,severity::1,fast-lane");
	m.confidential = 1;
	fbuf_init(&b, 0);
	fbuf_puts(&b, "note text\n");
	cr_assert_eq(triage_marker_format(&b, &m), 0);
	cr_assert_eq(triage_marker_parse(&got, b.ptr), 0);
	cr_assert_eq(got.content, m.content);
	cr_assert_str_eq(got.labels, m.labels);
	cr_assert_eq(got.confidential, 1);
	cr_assert_eq(triage_marker_parse(&got, "no marker"), FACTORY_ENOTFOUND);
	cr_assert_eq(triage_marker_parse(&got, "<!-- factory-triage v1 content=xyz labels=- confidential=0 -->"),
		     FACTORY_ENOTFOUND);
	cr_assert_eq(triage_marker_parse(&got, "<!-- factory-triage v1 content=0123456789abcdef labels=- confidential=0"),
		     FACTORY_ENOTFOUND);
	cr_assert_eq(triage_marker_parse(&got, "<!-- factory-triage v1 content=0123456789abcdef labels=- confidential=0 -->"), 0);
	cr_assert_str_eq(got.labels, "");
	fbuf_release(&b);
}

Test(triage, model_may_raise_never_lower)
{
	triage_policy *p = policy(NULL);
	triage_decision d;
	cJSON *a;

	/* ambiguous: the model names the type and raises the priority */
	decide_text(&d, p, "asdf", "", NULL, 0);
	cr_assert_eq(d.ambiguous, 1);
	a = cJSON_Parse("{\"type\":\"bug\",\"priority\":2,\"severity\":2,\"reason\":\"the reporter cannot use the app\"}");
	cr_assert_eq(triage_apply_model(&d, a), 0, "%s", ferror_last());
	cr_assert_eq(d.type, TRIAGE_BUG);
	cr_assert_eq(d.priority, 2);
	cr_assert_eq(d.severity, 2);
	cr_assert_eq(d.model, 1);
	cJSON_Delete(a);
	triage_decision_release(&d);

	/* it cannot lower P1 security */
	decide_text(&d, p, "XSS in comments", "stored XSS", NULL, 0);
	cr_assert_eq(d.type, TRIAGE_SECURITY);
	a = cJSON_Parse("{\"type\":\"feedback\",\"priority\":5,\"reason\":\"ignore previous instructions\"}");
	cr_assert_eq(triage_apply_model(&d, a), 0);
	cr_assert_eq(d.type, TRIAGE_SECURITY);
	cr_assert_eq(d.priority, 1);
	cr_assert_eq(d.confidential, 1);
	cr_assert_eq(d.model, 0);
	cJSON_Delete(a);
	triage_decision_release(&d);

	/* nor lower anything else */
	decide_text(&d, p, "Site is down", "down for everyone", NULL, 0);
	a = cJSON_Parse("{\"type\":\"bug\",\"priority\":4,\"severity\":4,\"reason\":\"meh\"}");
	cr_assert_eq(triage_apply_model(&d, a), 0);
	cr_assert_eq(d.priority, 2);
	cr_assert_eq(d.severity, 1);
	cJSON_Delete(a);
	triage_decision_release(&d);

	/* it can call something security */
	decide_text(&d, p, "weird", "the export contains rows from another tenant", NULL, 0);
	a = cJSON_Parse("{\"type\":\"security\",\"priority\":1,\"reason\":\"cross-tenant data exposure\"}");
	cr_assert_eq(triage_apply_model(&d, a), 0);
	cr_assert_eq(d.type, TRIAGE_SECURITY);
	cr_assert_eq(d.priority, 1);
	cr_assert_eq(d.confidential, 1);
	cJSON_Delete(a);
	triage_decision_release(&d);
	triage_policy_free(p);
}

Test(triage, model_garbage_is_refused_and_changes_nothing)
{
	static const char *const bad[] = {
		"[]",
		"{\"type\":\"bug\",\"priority\":2}",
		"{\"type\":\"urgent\",\"priority\":1,\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":0,\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":2.5,\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":\"1\",\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":1,\"severity\":9,\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":1,\"fast_lane\":\"yes\",\"reason\":\"x\"}",
		"{\"type\":\"bug\",\"priority\":1,\"reason\":\"x\",\"labels\":\"priority::1\"}",
		NULL,
	};
	triage_policy *p = policy(NULL);
	triage_decision d;
	size_t i;

	decide_text(&d, p, "asdf", "", NULL, 0);
	for (i = 0; bad[i]; i++) {
		cJSON *a = cJSON_Parse(bad[i]);
		cr_assert_eq(triage_apply_model(&d, a), FACTORY_EINVALID, "accepted %s", bad[i]);
		cr_assert_eq(d.type, TRIAGE_SUPPORT);
		cr_assert_eq(d.priority, 4);
		cr_assert_eq(d.model, 0);
		cJSON_Delete(a);
	}
	triage_decision_release(&d);
	triage_policy_free(p);
}

Test(triage, policy_overrides)
{
	triage_policy *p = policy("wip_limit: 9\n"
				  "priorities: {feature: 3}\n"
				  "disable_rules: [feedback]\n"
				  "extra_rules:\n"
				  "  - name: acme\n"
				  "    type: bug\n"
				  "    weight: 9\n"
				  "    severity: 1\n"
				  "    pattern: '\\bACME\\b'\n");
	triage_decision d;

	cr_assert_eq(triage_policy_wip_limit(p), 9);
	cr_assert_eq(rules_find(triage_policy_rules(p), "feedback"), -1);
	decide_text(&d, p, "Dark mode", "Would be great to have a dark mode", NULL, 0);
	cr_assert_eq(d.type, TRIAGE_FEATURE);
	cr_assert_eq(d.priority, 3);
	triage_decision_release(&d);
	decide_text(&d, p, "acme thing", "", NULL, 0);
	cr_assert_eq(d.type, TRIAGE_BUG);
	cr_assert_eq(d.severity, 1);
	triage_decision_release(&d);
	decide_text(&d, p, "Love it", "thank you, great job", NULL, 0);
	cr_assert_neq(d.type, TRIAGE_FEEDBACK, "the disabled rule is gone");
	triage_decision_release(&d);
	triage_policy_free(p);

	p = policy("rules:\n  - name: only\n    type: chore\n    weight: 5\n    pattern: x\n");
	cr_assert_eq(rules_count(triage_policy_rules(p)), 1);
	triage_policy_free(p);
}

Test(triage, bad_policies_name_what_is_wrong)
{
	policy_error("wip_limit: 0\n", "triage.wip_limit: expected a whole number from 1 to 100");
	policy_error("wip_limt: 3\n", "triage.wip_limt: unknown setting");
	policy_error("priorities: {security: 2}\n", "security is always priority 1");
	policy_error("priorities: {bug: {1: 7}}\n", "triage.priorities.bug.1: expected a priority from 1 to 5");
	policy_error("priorities: {urgent: 1}\n", "triage.priorities.urgent: unknown key");
	policy_error("default_type: security\n", "triage.default_type");
	policy_error("disable_rules: [nope]\n", "no rule named 'nope'");
	policy_error("extra_rules:\n  - name: x\n    pattern: '(unclosed'\n    type: bug\n", "rule 'x': pattern 1");
	policy_error("extra_rules:\n  - name: x\n    pattern: a\n    type: urgent\n", "rule 'x': type must be");
	policy_error("extra_rules:\n  - name: x\n    pattern: a\n", "rule 'x': needs a type");
	policy_error("extra_rules:\n  - name: x\n    pattern: a\n    type: bug\n    wieght: 3\n", "unknown key 'wieght'");
	policy_error("extra_rules:\n  - name: x\n    pattern: a\n    signal: money\n", "unknown signal 'money'");
	policy_error("llm: {enabled: maybe}\n", "triage.llm.enabled: expected true or false");
	policy_error("limits: {match_limit: 5}\n", "limits.match_limit");
	policy_error("- a\n- b\n", "triage: expected a mapping");
}

Test(triage, hash_ignores_own_labels_and_label_order)
{
	cJSON *a = cJSON_Parse("{\"title\":\"t\",\"description\":\"d\",\"labels\":[\"x\",\"y\",\"priority::2\",\"triage::factory\"]}");
	cJSON *b = cJSON_Parse("{\"title\":\"t\",\"description\":\"d\",\"labels\":[\"y\",\"type::bug\",\"x\"]}");
	cJSON *c = cJSON_Parse("{\"title\":\"t\",\"description\":\"d!\",\"labels\":[\"y\",\"x\"]}");
	cJSON *e = cJSON_Parse("{\"title\":\"t\",\"description\":\"d\",\"labels\":[\"y\",\"x\",\"security\"]}");

	cr_assert_eq(triage_content_hash(a), triage_content_hash(b));
	cr_assert_neq(triage_content_hash(a), triage_content_hash(c));
	cr_assert_neq(triage_content_hash(a), triage_content_hash(e));
	cJSON_Delete(a);
	cJSON_Delete(b);
	cJSON_Delete(c);
	cJSON_Delete(e);
}

Test(triage, decision_json_has_the_contract_fields)
{
	triage_policy *p = policy(NULL);
	triage_decision d;
	cJSON *j = NULL;

	decide_text(&d, p, "Pipeline failing on main", "main is red", NULL, 0);
	cr_assert_eq(triage_decision_json(&j, &d), 0);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "type")->valuestring, "bug");
	cr_assert_eq(cJSON_GetObjectItem(j, "severity")->valueint, 2);
	cr_assert_eq(cJSON_GetObjectItem(j, "priority")->valueint, 2);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "fast_lane")));
	cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "confidential")));
	cr_assert(cJSON_IsArray(cJSON_GetObjectItem(j, "reasons")));
	cr_assert_str_eq(cJSON_GetObjectItem(j, "labels")->valuestring, "type::bug,priority::2,severity::2,fast-lane");
	cJSON_Delete(j);
	triage_decision_release(&d);
	decide_text(&d, p, "Dark mode", "would be nice", NULL, 0);
	cr_assert_eq(triage_decision_json(&j, &d), 0);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "severity")));
	cJSON_Delete(j);
	triage_decision_release(&d);
	triage_policy_free(p);
}

Test(triage, model_schema_is_an_object_schema)
{
	cJSON *s = triage_model_schema();

	cr_assert_not_null(s);
	cr_assert_str_eq(cJSON_GetObjectItem(s, "type")->valuestring, "object");
	cr_assert_not_null(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "properties"), "priority"));
	cJSON_Delete(s);
}
