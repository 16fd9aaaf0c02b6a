/* Tests for common/notes.c: plain lines, the Markdown, chat and email
 * renderings (grouping, links, confidentiality), the state markers, the
 * Changelog trailer, issue references and "Release note:" lines. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "notes.h"

static notes_item item(int commit, long iid, notes_group g, int customer, int confidential, const char *title,
                       const char *url)
{
	notes_item it;

	notes_item_init(&it);
	it.is_commit = commit;
	it.iid = iid;
	if (commit)
		snprintf(it.sha, sizeof(it.sha), "%040ld", iid);
	it.group = g;
	it.customer = customer;
	it.confidential = confidential;
	cr_assert_eq(notes_item_set(&it.title, title), 0);
	cr_assert_eq(notes_item_set(&it.url, url), 0);
	return it;
}

static char *plain(const char *title, const char *summary)
{
	notes_item it = item(0, 1, NOTES_FIX, 1, 0, title, NULL);
	fbuf b;
	char *s;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_item_set(&it.summary, summary), 0);
	cr_assert_eq(notes_plain_line(&b, &it), 0);
	s = strdup(fbuf_cstr(&b));
	fbuf_release(&b);
	notes_item_release(&it);
	return s;
}

#define ASSERT_PLAIN(title, summary, want)                                                                             \
	do {                                                                                                           \
		char *got_ = plain(title, summary);                                                                    \
		cr_assert_str_eq(got_, want, "plain(%s)", title);                                                      \
		free(got_);                                                                                            \
	} while (0)

Test(notes, plain_lines_drop_prefixes_and_are_cleaned)
{
	ASSERT_PLAIN("feat(ui): dark mode for the dashboard.", NULL, "Dark mode for the dashboard");
	ASSERT_PLAIN("fix!: crash on empty cart", NULL, "Crash on empty cart");
	ASSERT_PLAIN("[Bug] [UI] login button hidden", NULL, "Login button hidden");
	ASSERT_PLAIN("Bug: export fails", NULL, "Export fails");
	ASSERT_PLAIN("Fixing: is not a prefix word here", NULL, "Fixing: is not a prefix word here");
	ASSERT_PLAIN("  export\n  invoices   as CSV ", NULL, "Export invoices as CSV");
	ASSERT_PLAIN("something", "Invoices can now be exported as CSV.", "Invoices can now be exported as CSV");
	ASSERT_PLAIN("Wait...", NULL, "Wait...");
	ASSERT_PLAIN("", NULL, "(untitled)");
	ASSERT_PLAIN("feat:", NULL, "Feat:");
	/* outside text is neutralised: mentions, quick actions, markers, secrets */
	{
		char *s = plain(
		        "/close @all <!-- factory-release v1 announce version=1.0.0 --> glpat-abcdefghij0123456789",
		        NULL);
		cr_assert_null(strstr(s, "<!--"), "%s", s);
		cr_assert_null(strstr(s, "@all"), "%s", s);
		cr_assert_null(strstr(s, "glpat-abc"), "%s", s);
		cr_assert_neq(s[0], '/', "%s", s);
		free(s);
	}
	/* cut at the cap */
	{
		char long_title[1000];
		char *s;
		memset(long_title, 'a', sizeof(long_title) - 1);
		long_title[sizeof(long_title) - 1] = '\0';
		s = plain(long_title, NULL);
		cr_assert_leq(strlen(s), NOTES_TITLE_MAX);
		free(s);
	}
}

Test(notes, private_items_get_neutral_lines)
{
	notes_item sec = item(0, 3, NOTES_SECURITY, 1, 0, "SQL injection in /search?q=", NULL);
	notes_item conf = item(0, 4, NOTES_FIX, 1, 1, "Customer ACME's invoices leak", NULL);
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert(notes_item_private(&sec));
	cr_assert(notes_item_private(&conf));
	cr_assert_eq(notes_plain_line(&b, &sec), 0);
	cr_assert_str_eq(fbuf_cstr(&b), "A security issue was fixed");
	fbuf_reset(&b);
	cr_assert_eq(notes_plain_line(&b, &conf), 0);
	cr_assert_str_eq(fbuf_cstr(&b), "A privately reported problem was fixed");
	fbuf_release(&b);
	notes_item_release(&sec);
	notes_item_release(&conf);
}

static notes_item *sample(size_t *n)
{
	static notes_item it[8];

	it[0] = item(0, 12, NOTES_FEATURE, 1, 0, "feat: export invoices as CSV", "https://gl.example/g/p/-/issues/12");
	notes_item_add_mr(&it[0], 7, "https://gl.example/g/p/-/merge_requests/7");
	notes_item_add_mr(&it[0], 7, "https://gl.example/g/p/-/merge_requests/7"); /* duplicate: ignored */
	it[1] = item(0, 13, NOTES_FIX, 1, 0, "Login fails with SSO", "https://gl.example/g/p/-/issues/13");
	it[2] = item(0, 14, NOTES_SECURITY, 1, 1, "XSS in the profile page", "https://gl.example/g/p/-/issues/14");
	notes_item_add_mr(&it[2], 9, "https://gl.example/g/p/-/merge_requests/9");
	it[3] = item(0, 15, NOTES_SECURITY, 1, 0, "Token printed in logs", "https://gl.example/g/p/-/issues/15");
	it[4] = item(0, 16, NOTES_PERFORMANCE, 1, 0, "Search is slow", "https://gl.example/g/p/-/issues/16");
	it[5] = item(0, 17, NOTES_OTHER, 0, 0, "Refactor the CI cache", "https://gl.example/g/p/-/issues/17");
	it[6] = item(1, 99, NOTES_FIX, 1, 0, "fix: rounding of totals", "https://gl.example/g/p/-/commit/x");
	it[7] = item(0, 18, NOTES_FIX, 0, 1, "Secret customer thing", "https://gl.example/g/p/-/issues/18");
	*n = 8;
	return it;
}

static void release_all(notes_item *it, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		notes_item_release(&it[i]);
}

Test(notes, markdown_groups_links_and_keeps_secrets)
{
	size_t n;
	notes_item *it = sample(&n);
	notes_meta m = {"Demo", "1.2.0", "2026-11-27", "https://gl.example/g/p/-/releases/v1.2.0"};
	fbuf b;
	const char *s, *sec, *feat, *fix, *perf, *internal;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_render_markdown(&b, &m, it, n), 0);
	s = fbuf_cstr(&b);
	cr_assert(!strncmp(s, "## 1.2.0 (2026-11-27)\n", 22), "%s", s);
	sec = strstr(s, "### Security");
	feat = strstr(s, "### New features");
	fix = strstr(s, "### Fixes");
	perf = strstr(s, "### Performance");
	internal = strstr(s, "### Internal");
	cr_assert(sec && feat && fix && perf && internal, "%s", s);
	cr_assert(sec < feat && feat < fix && fix < perf && perf < internal, "groups out of order:\n%s", s);
	cr_assert_null(strstr(s, "### Other changes"), "an empty group is left out:\n%s", s);
	cr_assert(strstr(s, "- 2 security issues were fixed. We recommend upgrading.\n"), "%s", s);
	cr_assert(strstr(s, "- Export invoices as CSV ([#12](https://gl.example/g/p/-/issues/12), "
	                    "[!7](https://gl.example/g/p/-/merge_requests/7))\n"),
	          "%s", s);
	cr_assert(strstr(s, "- Rounding of totals ([00000000](https://gl.example/g/p/-/commit/x))\n"), "%s", s);
	cr_assert(strstr(s, "- Refactor the CI cache ([#17]"), "%s", s);
	cr_assert(strstr(s, "- A privately reported problem was fixed\n"), "%s", s);
	/* nothing of the private items leaks: no title, no link to them or their merge requests */
	cr_assert_null(strstr(s, "XSS"));
	cr_assert_null(strstr(s, "Token printed"));
	cr_assert_null(strstr(s, "Secret customer"));
	cr_assert_null(strstr(s, "issues/14"));
	cr_assert_null(strstr(s, "issues/15"));
	cr_assert_null(strstr(s, "issues/18"));
	cr_assert_null(strstr(s, "merge_requests/9"));
	fbuf_release(&b);

	/* with only internal items */
	fbuf_init(&b, 0);
	cr_assert_eq(notes_render_markdown(&b, &m, &it[5], 1), 0);
	cr_assert(strstr(fbuf_cstr(&b), "No customer-facing changes."), "%s", fbuf_cstr(&b));
	fbuf_release(&b);
	release_all(it, n);
}

Test(notes, markdown_refuses_odd_urls_as_links)
{
	notes_item it = item(0, 5, NOTES_FIX, 1, 0, "x", "javascript:alert(1)");
	notes_meta m = {"Demo", "1.0.0", "2026-01-01", NULL};
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_render_markdown(&b, &m, &it, 1), 0);
	cr_assert(strstr(fbuf_cstr(&b), "- X (#5)\n"), "%s", fbuf_cstr(&b));
	cr_assert_null(strstr(fbuf_cstr(&b), "javascript"));
	fbuf_release(&b);
	notes_item_release(&it);
}

Test(notes, chat_text_is_escaped_and_short)
{
	size_t n, i;
	notes_item *it = sample(&n);
	notes_item many[30];
	notes_meta m = {"Demo <&>", "1.2.0", "2026-11-27", "https://gl.example/g/p/-/releases/v1.2.0"};
	fbuf b;
	const char *s;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_item_set(&it[1].title, "a <!channel> & b"), 0);
	cr_assert_eq(notes_render_chat(&b, &m, it, n), 0);
	s = fbuf_cstr(&b);
	{
		const char *head = "*<https://gl.example/g/p/-/releases/v1.2.0|Demo &lt;&amp;&gt; 1.2.0>* is out.\n";
		cr_assert(!strncmp(s, head, strlen(head)), "%s", s);
	}
	cr_assert(strstr(s, "\u2022 Security: 2 security issues fixed"), "%s", s);
	cr_assert(strstr(s, "\u2022 New feature: Export invoices as CSV"), "%s", s);
	cr_assert(strstr(s, "&lt;!channel&gt;"), "%s", s);
	cr_assert_null(strstr(s, "<!channel>"));
	cr_assert(strstr(s, "_Plus 2 internal changes._"), "%s", s);
	cr_assert_null(strstr(s, "XSS"));
	cr_assert_null(strstr(s, "Secret customer"));
	fbuf_release(&b);
	release_all(it, n);

	for (i = 0; i < 30; i++)
		many[i] = item(0, (long)i + 1, NOTES_FIX, 1, 0, "a fix", NULL);
	fbuf_init(&b, 0);
	cr_assert_eq(notes_render_chat(&b, &m, many, 30), 0);
	cr_assert(strstr(fbuf_cstr(&b), "and 10 more"), "%s", fbuf_cstr(&b));
	fbuf_release(&b);
	release_all(many, 30);
}

Test(notes, email_lists_the_reporters_items)
{
	size_t n;
	notes_item *it = sample(&n);
	const notes_item *mine[2] = {&it[0], &it[2]};
	notes_meta m = {"Demo", "1.2.0", "2026-11-27", "https://gl.example/g/p/-/releases/v1.2.0"};
	fbuf b;
	const char *s;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_render_email(&b, &m, mine, 2, "The Demo team"), 0);
	s = fbuf_cstr(&b);
	cr_assert(strstr(s, "part of Demo 1.2.0, released on 2026-11-27"), "%s", s);
	cr_assert(strstr(s, "- Export invoices as CSV (new feature)\n"), "%s", s);
	cr_assert(strstr(s, "- A security issue was fixed (security fix)\n"), "%s", s);
	cr_assert(strstr(s, "The release notes: https://gl.example/g/p/-/releases/v1.2.0\n"), "%s", s);
	cr_assert(strstr(s, "The Demo team"), "%s", s);
	cr_assert_null(strstr(s, "XSS"));
	cr_assert_null(strstr(s, "issues/"), "no links to issues in email:\n%s", s);
	fbuf_release(&b);
	release_all(it, n);
}

Test(notes, state_marker_round_trips)
{
	notes_state s, back;
	notes_ref r1 = {0, 12, "", 1}, r2 = {1, 0, "", 0}, r3 = {0, 7, "", 0};
	fbuf b, put, again;

	notes_state_init(&s);
	snprintf(s.version, sizeof(s.version), "1.2.0-rc.1");
	snprintf(s.until, sizeof(s.until), "2026-11-27T10:00:00Z");
	memset(r2.sha, 'a', 40);
	r2.sha[40] = '\0';
	cr_assert_eq(notes_state_add(&s, &r1), 0);
	cr_assert_eq(notes_state_add(&s, &r2), 0);
	cr_assert_eq(notes_state_add(&s, &r3), 0);
	s.webhook = 1;
	fbuf_init(&b, 0);
	cr_assert_eq(notes_state_format(&b, &s), 0);
	cr_assert_str_eq(fbuf_cstr(&b),
	                 "<!-- factory-release v1 version=1.2.0-rc.1 until=2026-11-27T10:00:00Z "
	                 "state=publishing webhook=1 items=#12:c,@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:i,"
	                 "#7:i -->");
	/* put into a description, then parse it back */
	fbuf_init(&put, 0);
	cr_assert_eq(notes_state_put(&put, "## 1.2.0\n\n- a line", &s), 0);
	cr_assert_eq(notes_state_parse(&back, fbuf_cstr(&put)), 0, "%s", ferror_last());
	cr_assert_str_eq(back.version, "1.2.0-rc.1");
	cr_assert_str_eq(back.until, "2026-11-27T10:00:00Z");
	cr_assert_eq(back.done, 0);
	cr_assert_eq(back.webhook, 1);
	cr_assert_eq(back.nitems, 3);
	cr_assert_eq(back.items[0].iid, 12);
	cr_assert_eq(back.items[0].customer, 1);
	cr_assert_eq(back.items[1].is_commit, 1);
	cr_assert_str_eq(back.items[1].sha, r2.sha);
	cr_assert_eq(back.items[2].customer, 0);
	notes_state_release(&back);
	/* replace in place: state done, the text around unchanged */
	s.done = 1;
	fbuf_init(&again, 0);
	cr_assert_eq(notes_state_put(&again, fbuf_cstr(&put), &s), 0);
	cr_assert(!strncmp(fbuf_cstr(&again), "## 1.2.0\n\n- a line\n\n<!-- factory-release v1 version=1.2.0-rc.1", 60),
	          "%s", fbuf_cstr(&again));
	cr_assert(strstr(fbuf_cstr(&again), "state=done"));
	{
		const char *first = strstr(fbuf_cstr(&again), "factory-release v1 version");
		cr_assert_not_null(first);
		cr_assert_null(strstr(first + 1, "factory-release v1 version"), "one marker only");
	}
	cr_assert_eq(notes_state_parse(&back, fbuf_cstr(&again)), 0);
	cr_assert_eq(back.done, 1);
	notes_state_release(&back);
	/* strip markers: the notes alone */
	fbuf_reset(&b);
	cr_assert_eq(notes_strip_markers(&b, fbuf_cstr(&again)), 0);
	cr_assert_str_eq(fbuf_cstr(&b), "## 1.2.0\n\n- a line\n");
	fbuf_release(&b);
	fbuf_release(&put);
	fbuf_release(&again);
	notes_state_release(&s);
}

Test(notes, state_marker_refuses_what_does_not_parse)
{
	static const char *bad[] = {
	        "<!-- factory-release v1 version=1.0.0 state=done items=#1:c",       /* not closed */
	        "<!-- factory-release v1 version=1.0.0 state=maybe -->",             /* state */
	        "<!-- factory-release v1 version=1.0.0 state=done items=#x:c -->",   /* item */
	        "<!-- factory-release v1 version=1.0.0 state=done items=#1:z -->",   /* verdict */
	        "<!-- factory-release v1 version=1.0.0 state=done items=@abc:c -->", /* sha */
	        "<!-- factory-release v1 version=1.0.0 state=done items=#1:c, -->",  /* trailing comma */
	        "<!-- factory-release v1 version=1.0.0 -->",                         /* no state */
	        "<!-- factory-release v1 version= state=done -->",                   /* empty version */
	        "<!-- factory-release v1 version=1.0.0 state=done webhook=2 -->",    /* flag */
	        "<!-- factory-release v1 version=1.0.0 state=done junk -->",         /* not key=value */
	};
	notes_state s;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(notes_state_parse(&s, bad[i]), FACTORY_EINVALID, "accepted: %s", bad[i]);
	cr_assert_eq(notes_state_parse(&s, "no marker\n  <!-- factory-release v1 version=1.0.0 state=done -->"),
	             FACTORY_ENOTFOUND, "a marker not at the start of a line does not count");
	cr_assert_eq(
	        notes_state_parse(&s, "x\n<!-- factory-release v1 version=1.0.0 state=done future=1 items=- -->\n"), 0,
	        "unknown keys are ignored");
	cr_assert_eq(s.nitems, 0);
	notes_state_release(&s);
	/* a version with a blank cannot be written */
	{
		fbuf b;
		notes_state_init(&s);
		snprintf(s.version, sizeof(s.version), "1.0 -->");
		snprintf(s.until, sizeof(s.until), "x");
		fbuf_init(&b, 0);
		cr_assert_eq(notes_state_format(&b, &s), FACTORY_EINVALID);
		fbuf_release(&b);
	}
}

Test(notes, issue_and_email_markers)
{
	fbuf b;
	const char *text = "Shipped.\n<!-- factory-release v1 announce version=1.2.0 -->\n";

	fbuf_init(&b, 0);
	cr_assert_eq(notes_marker(&b, "mailed", "1.2.0", "submission=fi-0123456789abcdef01234567"), 0);
	cr_assert_str_eq(fbuf_cstr(&b),
	                 "<!-- factory-release v1 mailed version=1.2.0 submission=fi-0123456789abcdef01234567 -->");
	cr_assert(notes_has_marker(fbuf_cstr(&b), "mailed", "1.2.0", "submission=fi-0123456789abcdef01234567"));
	cr_assert_not(notes_has_marker(fbuf_cstr(&b), "mailed", "1.2.0", "submission=fi-0123456789abcdef0123456"));
	cr_assert(notes_has_marker(text, "announce", "1.2.0", NULL));
	cr_assert_not(notes_has_marker(text, "announce", "1.2.1", NULL));
	cr_assert_not(notes_has_marker(text, "announce", "1.2", NULL));
	cr_assert_not(
	        notes_has_marker("> <!-- factory-release v1 announce version=1.2.0 -->", "announce", "1.2.0", NULL),
	        "quoted, not at the start of a line");
	cr_assert_eq(notes_marker(&b, "announce", "1.0.0 -->", NULL), FACTORY_EINVALID);
	fbuf_release(&b);
}

static int category(const char *json, char *out)
{
	cJSON *c = cJSON_Parse(json);
	int rc;

	cr_assert_not_null(c);
	rc = notes_commit_category(out, 32, c);
	cJSON_Delete(c);
	return rc;
}

Test(notes, changelog_trailer_from_gitlab_or_the_message)
{
	char cat[32];
	int breaking;

	cr_assert_eq(category("{\"trailers\":{\"Changelog\":\"Added\"},\"message\":\"x\"}", cat), 0);
	cr_assert_str_eq(cat, "added");
	cr_assert_eq(category("{\"trailers\":{},\"message\":\"Fix totals\\n\\nLonger text.\\n\\nChangelog: fixed\\n"
	                      "Signed-off-by: A <a@b.c>\\n\"}",
	                      cat),
	             0);
	cr_assert_str_eq(cat, "fixed");
	cr_assert_eq(category("{\"message\":\"Changelog: fixed\"}", cat), FACTORY_ENOTFOUND,
	             "a subject is not a trailer");
	cr_assert_eq(category("{\"message\":\"Fix\\n\\nChangelog: fixed\\n\\nMore text after\\n\"}", cat),
	             FACTORY_ENOTFOUND, "only the last paragraph holds trailers");
	cr_assert_eq(category("{\"trailers\":{\"changelog\":\"bogus\"}}", cat), FACTORY_EINVALID);
	cr_assert_eq(category("{\"trailers\":{\"Other\":\"x\"},\"message\":\"a\"}", cat), FACTORY_ENOTFOUND);
	cr_assert_eq(notes_category_group("added", &breaking), NOTES_FEATURE);
	cr_assert_eq(notes_category_group("fixed", &breaking), NOTES_FIX);
	cr_assert_eq(notes_category_group("security", &breaking), NOTES_SECURITY);
	cr_assert_eq(notes_category_group("performance", &breaking), NOTES_PERFORMANCE);
	cr_assert_eq(notes_category_group("removed", &breaking), NOTES_OTHER);
	cr_assert_eq(breaking, 1);
	cr_assert_eq(notes_category_group("changed", &breaking), NOTES_OTHER);
	cr_assert_eq(breaking, 0);
}

Test(notes, issue_references)
{
	long got[16];
	size_t n;

	n = notes_issue_refs(got, 16,
	                     "Fix totals\n\nCloses #12, #13 and #14. Fixes g/p#15, other/q#16 and "
	                     "https://gl.example/g/p/-/issues/17\nSee #18",
	                     "g/p", 1);
	cr_assert_eq(n, 5, "%zu", n);
	cr_assert_eq(got[0], 12);
	cr_assert_eq(got[1], 13);
	cr_assert_eq(got[2], 14);
	cr_assert_eq(got[3], 15);
	cr_assert_eq(got[4], 17);
	n = notes_issue_refs(got, 16, "Resolves: issue #3\nimplements #4\nprefix #5\nclosing#6\nFIXES #7 #8", "g/p", 1);
	cr_assert_eq(n, 4, "%zu", n);
	cr_assert_eq(got[0], 3);
	cr_assert_eq(got[1], 4);
	cr_assert_eq(got[2], 7);
	cr_assert_eq(got[3], 8);
	/* any reference */
	n = notes_issue_refs(got, 16, "See #18, g/p#19, x/y#20, &#64; a#21 (#22) #23x #0 #12", "g/p", 0);
	cr_assert_eq(n, 4, "%zu", n);
	cr_assert_eq(got[0], 18);
	cr_assert_eq(got[1], 19);
	cr_assert_eq(got[2], 22);
	cr_assert_eq(got[3], 12);
	/* the cap and NULL */
	cr_assert_eq(notes_issue_refs(got, 2, "Closes #1, #2, #3", "g/p", 1), 2);
	cr_assert_eq(notes_issue_refs(got, 2, NULL, "g/p", 1), 0);
	cr_assert_eq(notes_issue_refs(got, 2, "Closes #99999999999", "g/p", 1), 0, "too long a number");
}

Test(notes, release_note_lines)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(notes_release_note(&b, "Details.\n\n  Release note:  You can export invoices as CSV. \nmore"), 0);
	cr_assert_str_eq(fbuf_cstr(&b), "You can export invoices as CSV.");
	fbuf_reset(&b);
	cr_assert_eq(notes_release_note(&b, "release note:\nnothing on that line"), FACTORY_ENOTFOUND);
	cr_assert_eq(notes_release_note(&b, NULL), FACTORY_ENOTFOUND);
	fbuf_release(&b);
}
