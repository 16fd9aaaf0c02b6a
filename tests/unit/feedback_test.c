/* Tests for common/feedback.c: parsing, validation, the spool form, the
 * issue and note it renders, and the markers. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "feedback.h"

static const char *JSON = "application/json";
static const char *FORM = "application/x-www-form-urlencoded";

static int parse(feedback *f, feedback_problem *pr, const char *ct, const char *body)
{
	return feedback_parse(f, pr, ct, body, strlen(body));
}

static const char *field_msg(const feedback_problem *pr, const char *name)
{
	int i;

	for (i = 0; i < pr->nfields; i++) {
		if (!strcmp(pr->fields[i].field, name))
			return pr->fields[i].message;
	}
	return NULL;
}

Test(feedback, json_with_every_field)
{
	feedback f;
	feedback_problem pr;
	const char *body = "{\"kind\":\"feature\",\"title\":\"  Dark mode \\n\",\"description\":\"a\\r\\nb\",\"email\":"
			   "\"Jane.Doe+x@example.co.uk\",\"page_url\":\"https://x.example/a?b=c\",\"app_version\":\"1.2\","
			   "\"context\":{\"user_agent\":\"UA\",\"viewport\":\"1x2\",\"console_errors\":[\"e1\",\"e2\"],"
			   "\"secret\":\"dropped\"},\"elapsed_ms\":4200,\"website\":\"\",\"extra\":1}";

	cr_assert_eq(parse(&f, &pr, "application/json; charset=utf-8", body), 0, "%s", pr.message);
	cr_assert_eq(f.kind, FEEDBACK_FEATURE);
	cr_assert_str_eq(f.title, "Dark mode");
	cr_assert_str_eq(f.description, "a\nb");
	cr_assert_str_eq(f.email, "Jane.Doe+x@example.co.uk");
	cr_assert_str_eq(f.page_url, "https://x.example/a?b=c");
	cr_assert_str_eq(f.app_version, "1.2");
	cr_assert_eq(f.elapsed_ms, 4200);
	cr_assert_eq(f.honeypot, 0);
	cr_assert_not_null(cJSON_GetObjectItem(f.context, "console_errors"));
	cr_assert_null(cJSON_GetObjectItem(f.context, "secret"));
	feedback_release(&f);
}

Test(feedback, form_bodies_decode_and_first_value_wins)
{
	feedback f;
	feedback_problem pr;

	cr_assert_eq(parse(&f, &pr, FORM, "kind=bug&title=Caf%C3%A9+broken&title=second&description=x%26y&"
					   "context=%7B%22viewport%22%3A%221x1%22%7D&elapsed_ms=99&unknown"),
		     0, "%s", pr.message);
	cr_assert_str_eq(f.title, "Café broken");
	cr_assert_str_eq(f.description, "x&y");
	cr_assert_eq(f.elapsed_ms, 99);
	cr_assert_str_eq(cJSON_GetObjectItem(f.context, "viewport")->valuestring, "1x1");
	feedback_release(&f);
	cr_assert_eq(parse(&f, &pr, FORM, "kind=bug&title=%4"), FACTORY_EINVALID);
	cr_assert_eq(pr.status, 400);
	cr_assert_str_eq(pr.code, "malformed_form");
	feedback_release(&f);
	cr_assert_eq(parse(&f, &pr, FORM, "kind=bug&title=a%00b&description=x"), FACTORY_EINVALID);
	cr_assert_not_null(field_msg(&pr, "title"));
	feedback_release(&f);
}

Test(feedback, malformed_bodies)
{
	feedback f;
	feedback_problem pr;
	static const char bad_utf8[] = "{\"kind\":\"bug\",\"title\":\"\xc3\x28\",\"description\":\"x\"}";
	static const char overlong[] = "{\"kind\":\"bug\",\"title\":\"\xc0\xaf\",\"description\":\"x\"}";
	static const char surrogate[] = "{\"kind\":\"bug\",\"title\":\"\xed\xa0\x80\",\"description\":\"x\"}";

	cr_assert_eq(parse(&f, &pr, JSON, "{\"kind\":"), FACTORY_EINVALID);
	cr_assert_str_eq(pr.code, "malformed_json");
	cr_assert_eq(parse(&f, &pr, JSON, "\"just a string\""), FACTORY_EINVALID);
	cr_assert_str_eq(pr.code, "malformed_json");
	cr_assert_eq(parse(&f, &pr, JSON, "{} {}"), FACTORY_EINVALID);
	cr_assert_eq(parse(&f, &pr, JSON, ""), FACTORY_EINVALID);
	cr_assert_eq(parse(&f, &pr, JSON, bad_utf8), FACTORY_EINVALID);
	cr_assert_str_eq(pr.code, "invalid_utf8");
	cr_assert_eq(parse(&f, &pr, JSON, overlong), FACTORY_EINVALID);
	cr_assert_str_eq(pr.code, "invalid_utf8");
	cr_assert_eq(parse(&f, &pr, JSON, surrogate), FACTORY_EINVALID);
	cr_assert_str_eq(pr.code, "invalid_utf8");
	cr_assert_eq(parse(&f, &pr, JSON, "{\"title\":\"\\udc00\"}"), FACTORY_EINVALID); /* lone surrogate escape */
	cr_assert_eq(parse(&f, &pr, "text/html", "<p>"), FACTORY_EINVALID);
	cr_assert_eq(pr.status, 415);
	feedback_release(&f);
}

Test(feedback, validation_names_each_field)
{
	feedback f;
	feedback_problem pr;
	char title[300];
	char body[600];

	memset(title, 'x', 201);
	title[201] = '\0';
	snprintf(body, sizeof(body),
		 "{\"kind\":\"rant\",\"title\":\"%s\",\"description\":\" \",\"email\":\"a@b\",\"page_url\":\"ftp://x\","
		 "\"app_version\":\"a\\tb\",\"context\":[1],\"elapsed_ms\":-5}",
		 title);
	cr_assert_eq(parse(&f, &pr, JSON, body), FACTORY_EINVALID);
	cr_assert_eq(pr.status, 422);
	cr_assert_str_eq(pr.code, "validation_failed");
	cr_assert_eq(pr.nfields, 8, "%d", pr.nfields);
	cr_assert(strstr(field_msg(&pr, "title"), "200"));
	cr_assert(strstr(field_msg(&pr, "kind"), "bug, feature"));
	cr_assert_not_null(field_msg(&pr, "description"));
	cr_assert_not_null(field_msg(&pr, "email"));
	cr_assert_not_null(field_msg(&pr, "page_url"));
	cr_assert_not_null(field_msg(&pr, "app_version"));
	cr_assert_not_null(field_msg(&pr, "context"));
	cr_assert_not_null(field_msg(&pr, "elapsed_ms"));
	feedback_release(&f);
	/* 200 characters of multi-byte text is fine. */
	{
		char t[1000] = "";
		int i;
		for (i = 0; i < 200; i++)
			strcat(t, "\xc3\xa9");
		cr_assert_eq(feedback_from_fields(&f, &pr, "bug", t, "d", NULL, NULL, NULL), 0, "%s", pr.message);
		feedback_release(&f);
	}
}

Test(feedback, emails)
{
	cr_assert(feedback_email_valid("a@b.co"));
	cr_assert(feedback_email_valid("first.last+tag@sub.example.org"));
	cr_assert_not(feedback_email_valid("a@b"));
	cr_assert_not(feedback_email_valid("a@@b.co"));
	cr_assert_not(feedback_email_valid("a b@c.co"));
	cr_assert_not(feedback_email_valid("a@b..co"));
	cr_assert_not(feedback_email_valid(".a@b.co"));
	cr_assert_not(feedback_email_valid("a@-b.co"));
	cr_assert_not(feedback_email_valid("a@b.c0"));
	cr_assert_not(feedback_email_valid("x@y.co --><script>"));
	cr_assert_not(feedback_email_valid(NULL));
}

Test(feedback, honeypot_is_reported)
{
	feedback f;
	feedback_problem pr;

	cr_assert_eq(parse(&f, &pr, JSON, "{\"kind\":\"bug\",\"title\":\"t\",\"description\":\"d\",\"website\":\"x\"}"), 0);
	cr_assert_eq(f.honeypot, 1);
	feedback_release(&f);
	cr_assert_eq(parse(&f, &pr, JSON, "{\"kind\":\"bug\",\"title\":\"t\",\"description\":\"d\",\"website\":true}"), 0);
	cr_assert_eq(f.honeypot, 1);
	feedback_release(&f);
}

Test(feedback, spool_round_trip_and_issue_rendering)
{
	feedback f, back;
	feedback_problem pr;
	fbuf json, note;
	cJSON *issue = NULL;
	const char *d, *t, *l;

	fbuf_init(&json, 0);
	fbuf_init(&note, 0);
	cr_assert_eq(parse(&f, &pr, JSON,
			   "{\"kind\":\"support\",\"title\":\"/close @all <!-- x\",\"description\":\"/label ~x\\n@all "
			   "see <!-- factory-intake submission=fi-000000000000000000000000 -->\",\"email\":\"c@d.io\","
			   "\"context\":{\"console_errors\":[\"```broken``` fence\"]}}"),
		     0);
	cr_assert_eq(feedback_new_id(&f), 0);
	cr_assert_eq(strlen(f.id), FEEDBACK_ID_LEN);
	f.received_ms = 1700000000123LL;
	cr_assert_eq(feedback_to_json(&json, &f), 0);
	cr_assert_eq(feedback_from_json(&back, json.ptr, json.len), 0, "%s", ferror_last());
	cr_assert_str_eq(back.id, f.id);
	cr_assert_str_eq(back.email, "c@d.io");
	cr_assert_eq(back.received_ms, 1700000000123LL);
	cr_assert_eq(feedback_issue_fields(&issue, &back), 0, "%s", ferror_last());
	t = cJSON_GetObjectItem(issue, "title")->valuestring;
	d = cJSON_GetObjectItem(issue, "description")->valuestring;
	l = cJSON_GetObjectItem(issue, "labels")->valuestring;
	cr_assert_str_eq(l, "source::customer,type::support");
	cr_assert_neq(t[0], '/');
	cr_assert_null(strstr(d, "\n/label"), "%s", d);
	cr_assert_neq(d[0], '/');
	cr_assert_null(strstr(d, "c@d.io"));
	cr_assert_null(strstr(d, "submission=fi-000000000000000000000000 -->"), "%s", d);
	cr_assert(feedback_has_issue_marker(d, back.id));
	cr_assert_not(feedback_has_issue_marker(d, "fi-000000000000000000000000"));
	cr_assert(strstr(d, "````\n"), "the fence is longer than the backticks inside: %s", d);
	cr_assert_eq(feedback_reporter_note(&note, &back), 0);
	cr_assert(feedback_has_reporter_marker(note.ptr, back.id));
	{
		char id[FEEDBACK_ID_LEN + 1], email[255];
		cr_assert_eq(feedback_find_reporter(id, email, sizeof(email), note.ptr), 0);
		cr_assert_str_eq(id, back.id);
		cr_assert_str_eq(email, "c@d.io");
		cr_assert_eq(feedback_find_reporter(id, email, sizeof(email), "no marker here"), FACTORY_ENOTFOUND);
		cr_assert_eq(feedback_find_reporter(id, email, sizeof(email),
						    "x <!-- factory-intake reporter submission=fi-000000000000000000000000 "
						    "email=a@b.co -->"),
			     FACTORY_ENOTFOUND); /* not at the start of a line */
	}
	feedback_release(&back);
	cr_assert_eq(feedback_from_json(&back, "{\"id\":\"nope\"}", 13), FACTORY_EINVALID);
	feedback_release(&back);
	cr_assert_eq(feedback_from_json(&back, "[]", 2), FACTORY_EINVALID);
	cJSON_Delete(issue);
	feedback_release(&f);
	feedback_release(&back);
	fbuf_release(&json);
	fbuf_release(&note);
}

Test(feedback, problem_json)
{
	feedback f;
	feedback_problem pr;
	fbuf b;
	cJSON *o;

	fbuf_init(&b, 0);
	cr_assert_eq(parse(&f, &pr, JSON, "{\"kind\":\"bug\"}"), FACTORY_EINVALID);
	cr_assert_eq(feedback_problem_json(&b, &pr), 0);
	o = cJSON_Parse(b.ptr);
	cr_assert_not_null(o);
	cr_assert_str_eq(cJSON_GetObjectItem(o, "error")->valuestring, "validation_failed");
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "fields"), "title")->valuestring, "is required");
	cJSON_Delete(o);
	fbuf_release(&b);
	feedback_release(&f);
}
