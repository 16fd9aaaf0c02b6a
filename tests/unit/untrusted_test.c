/* Tests for common/untrusted.c: quick actions, mentions, comments, UTF-8,
 * controls, redaction patterns, titles, caps and hostile sizes. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "untrusted.h"

#define ZW "\xE2\x80\x8B"
#define FFFD "\xEF\xBF\xBD"

typedef int (*text_fn)(fbuf *, const char *, size_t);

/* Run `f` over `len` bytes of `in` into a fresh string (caller frees). */
static char *runn(text_fn f, const char *in, size_t len)
{
	fbuf b;
	int rc;

	fbuf_init(&b, 0);
	rc = f(&b, in, len);
	cr_assert_eq(rc, 0, "rc %d: %s", rc, ferror_last());
	return fbuf_detach(&b);
}

static char *run(text_fn f, const char *in)
{
	return runn(f, in, strlen(in));
}

static void expect(text_fn f, const char *in, const char *want)
{
	char *got = run(f, in);
	cr_expect_str_eq(got, want, "input [%s]: got [%s], want [%s]", in, got, want);
	free(got);
}

#define NEUT(in, want) expect(untrusted_neutralise, in, want)
#define RED(in, want) expect(untrusted_redact, in, want)
#define CLEAN(in, want) expect(untrusted_clean, in, want)

/* Valid UTF-8 with no control characters but \t and \n. */
static int valid_utf8_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k, need;
	uint32_t cp;

	while (i < n) {
		unsigned char c = p[i];
		if (c < 0x80) {
			if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
				return 0;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 1, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3, cp = c & 0x07;
		else
			return 0;
		for (k = 1; k <= need; k++) {
			if (i + k >= n || (p[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		if (cp >= 0x80 && cp <= 0x9F)
			return 0;
		i += need + 1;
	}
	return 1;
}

static int alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * What GitLab must never see in neutralised text: a line starting (after
 * blanks) with '/', a live mention by GitLab's rule (?<!\w)@name, an HTML
 * comment opener or closer, \r, invalid UTF-8, controls.
 */
static void assert_safe(const char *s, size_t n)
{
	size_t i;
	int line_start = 1;

	cr_assert(valid_utf8_text(s, n), "output is not clean UTF-8");
	cr_assert_null(memchr(s, '\r', n));
	cr_assert_null(memmem(s, n, "<!--", 4), "comment opener survived");
	cr_assert_null(memmem(s, n, "-->", 3), "comment closer survived");
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n') {
			line_start = 1;
			continue;
		}
		if (c == ' ' || c == '\t')
			continue;
		if (line_start)
			cr_assert_neq(c, '/', "quick action at byte %zu", i);
		line_start = 0;
		if (c == '@' && (i == 0 || !alnum((unsigned char)s[i - 1])) && i + 1 < n &&
		    (alnum((unsigned char)s[i + 1]) || s[i + 1] == '_'))
			cr_assert_fail("live mention at byte %zu: [%.20s]", i, s + i);
	}
}

static void check_neutral(const char *in, size_t len)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_neutralise(&b, in, len), 0);
	assert_safe(fbuf_cstr(&b), b.len);
	fbuf_release(&b);
}

/* ------------------------------------------------------------------ */
/* Quick actions */

static const char *const quick_actions[] = {
        "/close",
        "/reopen",
        "/label ~bug",
        "/unlabel ~bug",
        "/relabel ~x",
        "/assign @me",
        "/unassign",
        "/assign_reviewer @a",
        "/confidential",
        "/lock",
        "/unlock",
        "/title pwned",
        "/due tomorrow",
        "/remove_due_date",
        "/milestone %v1",
        "/remove_milestone",
        "/estimate 1d",
        "/spend 1h",
        "/merge",
        "/approve",
        "/unapprove",
        "/shrug",
        "/tableflip",
        "/award :+1:",
        "/copy_metadata #1",
        "/move group/p",
        "/clone group/p",
        "/epic &1",
        "/weight 3",
        "/iteration *iteration:1",
        "/promote",
        "/submit_review",
        "/draft",
        "/ready",
        "/target_branch main",
        "/rebase",
        "/duplicate #2",
        "/create_merge_request b",
        "/relate #3",
        "/severity S1",
        "/cc @all",
        "/todo",
        "/done",
        "/subscribe",
        "/unsubscribe",
        "/q",
        "/CLOSE",
        "/close\t",
        "/",
        "//",
        "/label~x",
        NULL,
};

Test(quick_actions, every_form_at_text_start_is_escaped)
{
	size_t i;
	char want[128];

	for (i = 0; quick_actions[i]; i++) {
		char *got = run(untrusted_neutralise, quick_actions[i]);
		snprintf(want, sizeof(want), "\\%s", quick_actions[i]);
		cr_expect_eq(strncmp(got, want, strcspn(want, "@")), 0, "[%s] -> [%s]", quick_actions[i], got);
		free(got);
		check_neutral(quick_actions[i], strlen(quick_actions[i]));
	}
}

Test(quick_actions, every_form_after_every_kind_of_line_break)
{
	static const char *const breaks[] = {"\n",       "\r\n",         "\r",           "\n\n",       "\r\r\n",
	                                     "\xC2\x85", "\xE2\x80\xA8", "\xE2\x80\xA9", "\n \t ",     "\r\n   ",
	                                     "\n\x01",   "\n\x1b",       "\n\x7f",       "\n\xC2\x9B", NULL};
	char in[256];
	size_t i, j;

	for (i = 0; quick_actions[i]; i++) {
		for (j = 0; breaks[j]; j++) {
			snprintf(in, sizeof(in), "thanks for the report%s%s\nmore text", breaks[j], quick_actions[i]);
			check_neutral(in, strlen(in));
		}
	}
}

Test(quick_actions, leading_blanks_are_kept_and_the_slash_escaped)
{
	NEUT("  /close", "  \\/close");
	NEUT("\t/close", "\t\\/close");
	NEUT(" \t /label ~x", " \t \\/label ~x");
	NEUT("hi\n   /close\nbye", "hi\n   \\/close\nbye");
}

Test(quick_actions, crlf_and_lone_cr_become_lf)
{
	NEUT("a\r\n/close", "a\n\\/close");
	NEUT("a\r/close", "a\n\\/close");
	NEUT("a\r\r\n/close", "a\n\n\\/close");
	NEUT("a\r\n\r\nb", "a\n\nb");
}

Test(quick_actions, slashes_elsewhere_are_untouched)
{
	NEUT("see a/b and /close", "see a/b and /close");
	NEUT("http://x/y", "http://x/y");
	NEUT("x /close", "x /close");
	NEUT("> /close", "> /close");
	NEUT("\\/close", "\\/close");
}

Test(quick_actions, controls_between_break_and_slash_cannot_hide_it)
{
	NEUT("a\n\x01/close", "a\n\\/close");
	NEUT("a\n\x1b\x7f/close", "a\n\\/close");
	NEUT("\x02/close", "\\/close");
	NEUT("a\n \x03 /close", "a\n  \\/close");
}

Test(quick_actions, every_line_of_a_long_text)
{
	fbuf in, out;
	int i;

	fbuf_init(&in, 0);
	fbuf_init(&out, 0);
	for (i = 0; i < 2000; i++)
		cr_assert_eq(
		        fbuf_printf(&in, "%s%s%s", i % 3 ? "\r\n" : "\n", i % 5 ? "" : "   ", quick_actions[i % 50]),
		        0);
	cr_assert_eq(untrusted_neutralise(&out, in.ptr, in.len), 0);
	assert_safe(out.ptr, out.len);
	fbuf_release(&in);
	fbuf_release(&out);
}

/* ------------------------------------------------------------------ */
/* Mentions */

Test(mentions, at_text_start_and_after_spaces)
{
	NEUT("@all", "@" ZW "all");
	NEUT("hi @all there", "hi @" ZW "all there");
	NEUT("\n@all", "\n@" ZW "all");
	NEUT("\t@bob", "\t@" ZW "bob");
}

Test(mentions, groups_subgroups_and_names_with_dots)
{
	NEUT("ping @group/sub/team", "ping @" ZW "group/sub/team");
	NEUT("@first.last", "@" ZW "first.last");
	NEUT("@user_name", "@" ZW "user_name");
	NEUT("@_x", "@" ZW "_x");
	NEUT("@1bob", "@" ZW "1bob");
	NEUT("@.hidden", "@" ZW ".hidden");
	NEUT("@-x", "@" ZW "-x");
}

Test(mentions, after_punctuation_which_gitlab_treats_as_a_boundary)
{
	NEUT("(@all)", "(@" ZW "all)");
	NEUT("[@all]", "[@" ZW "all]");
	NEUT("x.@all", "x.@" ZW "all");
	NEUT("x-@all", "x-@" ZW "all");
	NEUT("x/@all", "x/@" ZW "all");
	NEUT("_a_@all", "_a_@" ZW "all");
	NEUT("**@all**", "**@" ZW "all**");
	NEUT("`x`@all", "`x`@" ZW "all");
	NEUT("\\@all", "\\@" ZW "all");
	NEUT("\"@all\"", "\"@" ZW "all\"");
	NEUT("caf\xC3\xA9@all", "caf\xC3\xA9@" ZW "all");
	NEUT("<b>@all</b>", "<b>@" ZW "all</b>");
	NEUT("@@all", "@@" ZW "all");
	NEUT("a,@all;@bob", "a,@" ZW "all;@" ZW "bob");
}

Test(mentions, emails_and_non_mentions_are_left_alone)
{
	NEUT("mail a@b.com now", "mail a@b.com now");
	NEUT("first.last@example.org", "first.last@example.org");
	NEUT("x1@all", "x1@all");
	NEUT("@ alone", "@ alone");
	NEUT("end @", "end @");
	NEUT("@", "@");
	NEUT("@!", "@!");
	NEUT("@" ZW "all", "@" ZW "all");
}

Test(mentions, urls_with_at_paths_stay_links)
{
	NEUT("see https://mastodon.social/@user now", "see https://mastodon.social/@user now");
	NEUT("https://www.npmjs.com/package/@scope/pkg", "https://www.npmjs.com/package/@scope/pkg");
	NEUT("HTTP://EXAMPLE.COM/@x", "HTTP://EXAMPLE.COM/@x");
	/* Not links GitLab would surely render: still defused. */
	NEUT("https://localhost/@all", "https://localhost/@" ZW "all");
	NEUT("https://a.b/_x_@all", "https://a.b/_x_@" ZW "all");
	NEUT("javascript://a.b/@all", "javascript://a.b/@" ZW "all");
	NEUT("https://a.b/ @all", "https://a.b/ @" ZW "all");
	NEUT("xhttps://a.b/@all", "xhttps://a.b/@" ZW "all");
	/* The link ends at the bracket; what follows is text. */
	NEUT("[x](https://a.b/)@all", "[x](https://a.b/)@" ZW "all");
	NEUT("(https://a.b/x)@all", "(https://a.b/x)@" ZW "all");
	NEUT("<https://a.b/x>@all", "<https://a.b/x>@" ZW "all");
	NEUT("https://a.b/*x*@all", "https://a.b/*x*@" ZW "all");
	NEUT("https://a.b/&#64;all", "https://a.b/&amp;#64;all");
}

Test(mentions, entities_that_render_as_at)
{
	NEUT("&#64;all", "&amp;#64;all");
	NEUT("&#064;all", "&amp;#064;all");
	NEUT("&#x40;all", "&amp;#x40;all");
	NEUT("&#X40;all", "&amp;#X40;all");
	NEUT("&commat;all", "&amp;commat;all");
	NEUT("&COMMAT;all", "&amp;COMMAT;all");
	NEUT("&#65;b", "&#65;b");
	NEUT("&amp; &lt;", "&amp; &lt;");
	NEUT("&#64all", "&amp;#64all");
	NEUT("<span>&#x40 all</span>", "<span>&amp;#x40 all</span>");
	NEUT("&#x40all", "&#x40all"); /* hex 40a: not '@' */
	NEUT("&#000000000000000000000064;all", "&amp;#000000000000000000000064;all");
	NEUT("&#99999999999999999999999999;", "&#99999999999999999999999999;");
	NEUT("&#64", "&amp;#64");
	NEUT("&#640;", "&#640;");
	NEUT("&#x400;", "&#x400;");
	NEUT("&commatall", "&commatall");
}

Test(mentions, many_positions_in_one_text)
{
	const char *in = "@a b@c (@d) [@e] {@f} <@g> '@h' \"@i\" ,@j ;@k :@l !@m ?@n *@o ~@p =@q +@r |@s #@t "
	                 "$@u %@v ^@w &@x\n@y\t@z";
	check_neutral(in, strlen(in));
}

/* ------------------------------------------------------------------ */
/* HTML comments and forged markers */

Test(comments, forged_factory_markers_are_broken)
{
	NEUT("<!-- factory:feedback id=42 -->", "&lt;!-- factory:feedback id=42 --&gt;");
	NEUT("x<!--factory:triage-->y", "x&lt;!--factory:triage--&gt;y");
	NEUT("<!---->", "&lt;!----&gt;");
	NEUT("<!-->", "&lt;!--&gt;");
	NEUT("<!--->", "&lt;!---&gt;");
	NEUT("-->", "--&gt;");
	NEUT("--->", "---&gt;");
	NEUT("<!-- <!-- -->", "&lt;!-- &lt;!-- --&gt;");
	NEUT("<! -- x -- >", "<! -- x -- >");
	NEUT("a -> b --> c", "a -> b --&gt; c");
}

Test(comments, controls_and_line_breaks_cannot_assemble_one)
{
	NEUT("<\x01!--", "&lt;!--");
	NEUT("<!\x02-\x03-", "&lt;!--");
	NEUT("-\x7f->", "--&gt;");
	NEUT("<!-\r\n-", "<!-\n-");
	NEUT("<!\xC2\x9B--", "&lt;!--");
	{
		const char *s = "<\x1b!\x1b-\x1b- factory:x -\x1b-\x1b>";
		check_neutral(s, strlen(s));
	}
}

Test(comments, nul_bytes_break_rather_than_form_one)
{
	char *got = runn(untrusted_neutralise, "<!\0--", 5);
	cr_assert_str_eq(got, "<!" FFFD "--");
	free(got);
}

/* ------------------------------------------------------------------ */
/* UTF-8, NUL, controls */

Test(utf8, valid_text_passes_unchanged)
{
	NEUT("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF",
	     "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF");
	NEUT("tab\tand\nnewline", "tab\tand\nnewline");
	NEUT("", "");
}

Test(utf8, invalid_sequences_become_replacement_characters)
{
	NEUT("a\xFF"
	     "b",
	     "a" FFFD "b");
	NEUT("\x80", FFFD);
	NEUT("\xC0\xAF", FFFD FFFD);                   /* overlong '/' */
	NEUT("\xE0\x80\xAF", FFFD FFFD FFFD);          /* overlong */
	NEUT("\xED\xA0\x80", FFFD FFFD FFFD);          /* surrogate */
	NEUT("\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD); /* above U+10FFFF */
	NEUT("\xF8\x88\x80\x80\x80", FFFD FFFD FFFD FFFD FFFD);
	NEUT("\xE2\x82", FFFD);      /* truncated at the end */
	NEUT("\xE2\x82x", FFFD "x"); /* truncated in the middle */
	NEUT("\xF0\x9F\x98", FFFD);
	NEUT("\xC3", FFFD);
	NEUT("\xC3\xC3\xA9", FFFD "\xC3\xA9");
}

Test(utf8, overlong_slash_is_not_a_quick_action)
{
	NEUT("\xC0\xAF"
	     "close",
	     FFFD FFFD "close");
}

Test(utf8, nul_bytes_become_replacement_characters)
{
	char *got = runn(untrusted_neutralise, "a\0b\0\0", 5);
	cr_assert_str_eq(got, "a" FFFD "b" FFFD FFFD);
	free(got);
	got = runn(untrusted_neutralise, "\0/close", 7);
	cr_assert_str_eq(got, FFFD "/close");
	free(got);
}

Test(utf8, controls_are_dropped_but_tab_and_newline_kept)
{
	NEUT("\x1b[31mred\x1b[0m", "[31mred[0m");
	NEUT("a\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x1f"
	     "b",
	     "ab");
	NEUT("a\x7f"
	     "b",
	     "ab");
	NEUT("a\xC2\x80\xC2\x9F"
	     "b",
	     "ab");
	NEUT("a\xC2\x85"
	     "b",
	     "a\nb");
	NEUT("a\xE2\x80\xA8"
	     "b\xE2\x80\xA9"
	     "c",
	     "a\nb\nc");
	NEUT("a\tb", "a\tb");
	NEUT("\xC2\xA0nbsp", "\xC2\xA0nbsp");
}

Test(utf8, random_bytes_always_come_out_safe)
{
	char buf[4096];
	size_t i, round;

	srand(12345);
	for (round = 0; round < 300; round++) {
		size_t len = (size_t)rand() % sizeof(buf);
		for (i = 0; i < len; i++) {
			int r = rand() % 16;
			buf[i] = r < 6 ? "/@<!->\n\r &#;:\t"[rand() % 15] : (char)(rand() % 256);
		}
		check_neutral(buf, len);
	}
}

/* ------------------------------------------------------------------ */
/* Neutralise: contract details */

Test(neutralise, appends_to_what_is_there)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "prefix: "), 0);
	cr_assert_eq(untrusted_neutralise(&b, "@all", 4), 0);
	cr_assert_str_eq(b.ptr, "prefix: @" ZW "all");
	fbuf_release(&b);
}

Test(neutralise, is_idempotent)
{
	static const char *const in[] = {"/close",     "@all",       "<!-- x -->", "<!-->",    "&#64;all",
	                                 "a\r\n/x @y", "x.@all -->", "\xFF\x00",   "&commat;", NULL};
	size_t i;

	for (i = 0; in[i]; i++) {
		char *once = run(untrusted_neutralise, in[i]);
		char *twice = run(untrusted_neutralise, once);
		cr_expect_str_eq(once, twice, "[%s]", in[i]);
		free(once);
		free(twice);
	}
}

Test(neutralise, cap_leaves_what_fitted_on_a_character_boundary)
{
	fbuf b;
	int rc;

	fbuf_init(&b, 10);
	rc = untrusted_neutralise(&b, "\xE6\x97\xA5\xE6\x97\xA5\xE6\x97\xA5\xE6\x97\xA5", 12);
	cr_assert_eq(rc, FACTORY_ETOOBIG);
	cr_assert_eq(b.len, 9);
	cr_assert(valid_utf8_text(b.ptr, b.len));
	fbuf_release(&b);

	fbuf_init(&b, 5);
	rc = untrusted_neutralise(&b, "hello world", 11);
	cr_assert_eq(rc, FACTORY_ETOOBIG);
	cr_assert_str_eq(b.ptr, "hello");
	fbuf_release(&b);
}

Test(neutralise, null_text_is_empty)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_neutralise(&b, NULL, 5), 0);
	cr_assert_eq(untrusted_clean(&b, NULL, 5), 0);
	cr_assert_eq(untrusted_redact(&b, NULL, 5), 0);
	cr_assert_eq(b.len, 0);
	fbuf_release(&b);
}

/* ------------------------------------------------------------------ */
/* Redaction */

Test(redact, emails)
{
	RED("mail me at john.doe+tag@example.co.uk please", "mail me at [email] please");
	RED("a@b.cd", "[email]");
	RED("<bob_smith@mail.example.com>", "<[email]>");
	RED("x@y.com, z@w.org.", "[email], [email].");
	RED("name%ext@host-1.example.io", "[email]");
	RED("..a@b.com", "..[email]");
	RED("user@localhost", "user@localhost");
	RED("a@b.c", "a@b.c");
	RED("a@b.c0m", "a@b.c0m");
	RED("@all and @group/sub", "@all and @group/sub");
	RED("nobody@", "nobody@");
}

Test(redact, gitlab_tokens)
{
	static const char *const prefixes[] = {"glpat-",  "gldt-",     "glrt-", "glptt-",   "glcbt-",
	                                       "glimt-",  "glsoat-",   "glft-", "glagent-", "gloas-",
	                                       "glffct-", "GR1348941", NULL};
	char in[128], want[128];
	size_t i;

	for (i = 0; prefixes[i]; i++) {
		snprintf(in, sizeof(in), "use %sAbc123_def-456GHIjkl to log in", prefixes[i]);
		snprintf(want, sizeof(want), "use [secret] to log in");
		RED(in, want);
	}
	RED("glpat-abcdefghij1234567890.01.abc1def23", "[secret]");
	RED("xglpat-abcdefghij1234567890 end", "x[secret] end");
}

Test(redact, other_vendor_tokens)
{
	RED("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]");
	RED("gho_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]");
	RED("ghu_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]");
	RED("ghs_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]");
	RED("ghr_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]");
	RED("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[secret]");
	RED("key sk-proj-abc123DEF456ghi789JKL0mno end", "key [secret] end");
	RED("sk-ant-api03-abcdefghijklmnopqrstuvwxyz-0123456789", "[secret]");
	RED("xoxa-1234567890-abc", "[secret]");
	RED("xoxb-1234567890-abcdef", "[secret]");
	RED("xoxp-1234567890-abcdef", "[secret]");
	RED("xoxr-1234567890-abcdef", "[secret]");
	RED("xoxs-1234567890-abcdef", "[secret]");
	RED("AKIAIOSFODNN7EXAMPLE", "[secret]");
	RED("id=AKIAIOSFODNN7EXAMPLE,", "id=[secret],");
	RED("ASIAIOSFODNN7EXAMPLE", "[secret]");
	RED("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF_123-x ok", "jwt [secret] ok");
	RED("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. unsigned", "[secret] unsigned");
}

Test(redact, token_look_alikes_stay)
{
	RED("sk-learn and scikit sk-learn", "sk-learn and scikit sk-learn");
	RED("task-abcdefghijklmnopqrstuvwxyz0123", "task-abcdefghijklmnopqrstuvwxyz0123");
	RED("glpat-short", "glpat-short");
	RED("ghp_short", "ghp_short");
	RED("AKIAlowercase0000000", "AKIAlowercase0000000");
	RED("XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE");
	RED("AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX");
	RED("eyJ.eyJ.x", "eyJ.eyJ.x");
	RED("xox-1234567890", "xox-1234567890");
}

Test(redact, bearer_authorization_private_token)
{
	RED("Bearer abcdefgh12345", "Bearer [secret]");
	RED("bearer abc.def.ghi-jkl_mno", "bearer [secret]");
	RED("curl -H 'Authorization: Bearer abc.def.ghi12345' x", "curl -H 'Authorization: [secret]' x");
	RED("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: [secret]");
	RED("authorization: token123456", "authorization: [secret]");
	RED("PRIVATE-TOKEN: glpat-xxxxxxxxxxxxxxxxxxxx", "PRIVATE-TOKEN: [secret]");
	RED("PRIVATE-TOKEN: abcdef123", "PRIVATE-TOKEN: [secret]");
	RED("private-token: abcdef", "private-token: [secret]");
	RED("{\"Authorization\": \"Bearer x\"}", "{\"Authorization\": \"[secret]\"}");
	RED("the Bearer-token scheme", "the Bearer-token scheme");
	RED("Bearer short", "Bearer [secret]"); /* log_mask masks any "Bearer x" */
}

Test(redact, key_value_pairs)
{
	RED("?password=hunter2&user=bob", "?password=[secret]&user=bob");
	RED("https://h/x?a=1&token=xyz&b=2", "https://h/x?a=1&token=[secret]&b=2");
	RED("level=info password=hunter2 user=x", "level=info password=[secret] user=x");
	RED("password=\"a b c\" user=x", "password=\"[secret]\" user=x");
	RED("passwd=x pwd=y secret=z", "passwd=[secret] pwd=[secret] secret=[secret]");
	RED("api_key=1 apikey=2 api-key=3 access_token=4 auth=5",
	    "api_key=[secret] apikey=[secret] api-key=[secret] access_token=[secret] auth=[secret]");
	RED("PASSWORD=x Token=y", "PASSWORD=[secret] Token=[secret]");
	RED("db_password=foo client_secret=bar X-Auth-Token=baz gitlab.token=q",
	    "db_password=[secret] client_secret=[secret] X-Auth-Token=[secret] gitlab.token=[secret]");
	RED("password = spaced", "password = [secret]");
	RED("password: hunter2", "password: [secret]");
	RED("token:\tabc", "token:\t[secret]");
}

Test(redact, json_and_quoted_keys)
{
	RED("{\"password\":\"s3cr3t\",\"a\":1}", "{\"password\":\"[secret]\",\"a\":1}");
	RED("{\"password\" : \"s3cr\\\"et\"}", "{\"password\" : \"[secret]\"}");
	RED("{'token': 'abc', 'user': 'bob'}", "{'token': '[secret]', 'user': 'bob'}");
	RED("{\"api_key\": 12345}", "{\"api_key\": [secret]}");
	RED("{\"access_token\":\"\"}", "{\"access_token\":\"\"}");
	RED("{\"user\":\"bob\"}", "{\"user\":\"bob\"}");
}

Test(redact, key_look_alikes_stay)
{
	RED("tokens=5 max_tokens=100 token_count=3", "tokens=5 max_tokens=100 token_count=3");
	RED("passwordless=true author=me", "passwordless=true author=me");
	RED("http://auth:8080/x", "http://auth:8080/x");
	RED("token:abc", "token:abc");
	RED("user=bob", "user=bob");
	RED("password=", "password=");
	RED("password=[secret]", "password=[secret]");
}

Test(redact, userinfo_in_urls)
{
	RED("https://user:hunter2@example.com/x", "https://[secret]@example.com/x");
	RED("redis://:pw@cache:6379", "redis://[secret]@cache:6379");
	RED("git clone https://oauth2:abc@gitlab.com/g/p.git", "git clone https://[secret]@gitlab.com/g/p.git");
	RED("https://host:8080/path", "https://host:8080/path");
	RED("https://example.com/a:b@c", "https://example.com/a:b@c");
}

Test(redact, card_numbers)
{
	RED("card 4111 1111 1111 1111 exp", "card [card] exp");
	RED("4111-1111-1111-1111", "[card]");
	RED("4111111111111111", "[card]");
	RED("amex 378282246310005.", "amex [card].");
	RED("mc 5555555555554444 and 2223003122003222", "mc [card] and [card]");
	RED("disc 6011111111111117", "disc [card]");
	RED("visa13 4222222222222", "visa13 [card]");
	RED("order 12 4111111111111111", "order 12 [card]");
	RED("4111 1111 1111 1111 99", "[card] 99");
	RED("card-4111111111111111 and id_4111111111111111", "card-[card] and id_[card]");
	RED("(4111111111111111)", "([card])");
}

Test(redact, numbers_that_are_not_cards_stay)
{
	RED("4111111111111112", "4111111111111112");
	RED("ts=1700000000123", "ts=1700000000123");
	RED("41111111111111111111", "41111111111111111111");
	RED("4111  1111 1111 1111", "4111  1111 1111 1111");
	RED("v4111111111111111", "v4111111111111111");
	RED("0.4111111111111111", "0.4111111111111111");
	RED("1,4111111111111111", "1,4111111111111111");
	RED("4111111111111111abc", "4111111111111111abc");
	RED("x4111111111111111", "x4111111111111111");
	RED("phone +1 555-123-4567", "phone +1 555-123-4567");
	RED("2024-01-15 12:00:00", "2024-01-15 12:00:00");
}

Test(redact, registered_secrets_are_masked_too)
{
	cr_assert_eq(log_add_secret("correct-horse-battery"), 0);
	RED("the value correct-horse-battery leaked", "the value [secret] leaked");
	log_clear_secrets();
	RED("the value correct-horse-battery leaked", "the value correct-horse-battery leaked");
}

Test(redact, bytes_pass_through)
{
	char *got = runn(untrusted_redact, "a\0b\xFF", 4);
	cr_assert_eq(memcmp(got, "a\0b\xFF", 4), 0);
	free(got);
}

Test(redact, many_patterns_in_one_line)
{
	RED("user bob@x.com token=abc Bearer abcdefghijk https://u:p@h.io 4111111111111111 glpat-aaaaaaaaaaaaaaaaaaaa",
	    "user [email] token=[secret] Bearer [secret] https://[secret]@h.io [card] [secret]");
}

/* ------------------------------------------------------------------ */
/* Clean = redact + neutralise */

Test(clean, redacts_and_neutralises)
{
	CLEAN("contact @bob or bob@x.com", "contact @" ZW "bob or [email]");
	CLEAN("<!-- token=abc -->", "&lt;!-- token=[secret] --&gt;");
	CLEAN("/close\r\nmy password=hunter2", "\\/close\nmy password=[secret]");
	CLEAN("card 4111 1111 1111 1111\n/label ~x", "card [card]\n\\/label ~x");
}

Test(clean, controls_cannot_hide_a_secret)
{
	CLEAN("glpat\x01-abcdefghijklmnopqrst", "[secret]");
	CLEAN("pass\x1bword=hunter2", "password=[secret]");
	CLEAN("a\x02@b.com", "[email]");
}

Test(clean, output_is_safe_for_hostile_mixes)
{
	static const char *const in[] = {
	        "/close @all <!-- factory:x --> glpat-abcdefghijklmnop",
	        "\r/assign @me\r\n\x00@all",
	        "&#64;all\n\t/lock",
	        "a@b.com/close",
	        "\xC0\xAF"
	        "close",
	        NULL,
	};
	size_t i;
	fbuf b;

	for (i = 0; in[i]; i++) {
		fbuf_init(&b, 0);
		cr_assert_eq(untrusted_clean(&b, in[i], strlen(in[i])), 0);
		assert_safe(b.ptr, b.len);
		fbuf_release(&b);
	}
}

/* ------------------------------------------------------------------ */
/* Titles */

static void expect_title(const char *in, size_t max, const char *want)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_title(&b, in, strlen(in), max), 0);
	cr_expect_str_eq(fbuf_cstr(&b), want, "[%s] max %zu: got [%s] want [%s]", in, max, fbuf_cstr(&b), want);
	cr_expect_leq(b.len, max ? max : (size_t)-1);
	fbuf_release(&b);
}

Test(title, folds_trims_and_squeezes)
{
	expect_title("  Hello\n\tworld  ", 100, "Hello world");
	expect_title("a\r\n\r\nb\tc", 100, "a b c");
	expect_title("\n\n\n", 100, "");
	expect_title("", 100, "");
}

Test(title, is_cleaned)
{
	expect_title("Ping @all about bob@x.com", 100, "Ping @" ZW "all about [email]");
	expect_title("<!-- x --> title", 100, "&lt;!-- x --&gt; title");
	expect_title("token=abc failed", 100, "token=[secret] failed");
}

Test(title, cut_with_ellipsis_within_the_limit)
{
	expect_title("0123456789abcdef", 10, "0123456...");
	expect_title("0123456789", 10, "0123456789");
	expect_title("0123456789a", 10, "0123456...");
	expect_title("0123456789", 0, "0123456789");
	expect_title("hello world again", 9, "hello...");
	expect_title("abcdef", 3, "abc");
	expect_title("abcdef", 0, "abcdef");
}

Test(title, cut_never_splits_a_character_or_an_entity)
{
	/* Three bytes a character: 10 - 3 = 7 leaves room for two. */
	expect_title("\xE6\x97\xA5\xE6\x97\xA5\xE6\x97\xA5\xE6\x97\xA5", 10, "\xE6\x97\xA5\xE6\x97\xA5...");
	expect_title("ab <!-- x", 9, "ab...");
	expect_title("ab @all xyz", 10, "ab @" ZW "...");
	expect_title("ab @all xyz", 8, "ab...");
	expect_title("ab \xF0\x9F\x98\x80\xF0\x9F\x98\x80", 10, "ab \xF0\x9F\x98\x80...");
	expect_title("ab \xF0\x9F\x98\x80\xF0\x9F\x98\x80", 9, "ab...");
}

Test(title, hostile_input)
{
	char *big = malloc(100000);
	fbuf b;
	size_t i;

	for (i = 0; i < 100000; i++)
		big[i] = "\n\r\t @/<!->x\xFF\0"[i % 14];
	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_title(&b, big, 100000, 255), 0);
	cr_assert_leq(b.len, 255);
	cr_assert_null(memchr(b.ptr, '\n', b.len));
	cr_assert(valid_utf8_text(b.ptr, b.len));
	cr_assert_null(memmem(b.ptr, b.len, "<!--", 4));
	fbuf_release(&b);
	free(big);
}

/* ------------------------------------------------------------------ */
/* Size and speed */

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 1 MiB of `unit` repeated. */
static char *repeat(const char *unit, size_t ulen, size_t total)
{
	char *s = malloc(total);
	size_t i;

	cr_assert_not_null(s);
	for (i = 0; i < total; i++)
		s[i] = unit[i % ulen];
	return s;
}

static void big_case(const char *unit, size_t ulen)
{
	size_t total = 1 << 20;
	char *in = repeat(unit, ulen, total);
	double t0 = seconds();
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_clean(&b, in, total), 0, "%s", ferror_last());
	assert_safe(b.ptr, b.len);
	cr_assert_lt(seconds() - t0, 10.0, "1 MiB took too long");
	fbuf_reset(&b);
	cr_assert_eq(untrusted_redact(&b, in, total), 0);
	fbuf_reset(&b);
	cr_assert_eq(untrusted_neutralise(&b, in, total), 0);
	assert_safe(b.ptr, b.len);
	fbuf_release(&b);
	free(in);
}

Test(big, one_mebibyte_inputs_of_every_shape, .timeout = 120)
{
	static const char *const units[] = {
	        "@",
	        "@a",
	        "a@",
	        "a@b.",
	        "/close\r\n",
	        "<!--",
	        "-->",
	        "://",
	        "a://b:",
	        "password=",
	        "password=\"",
	        "4",
	        "4 ",
	        "4111 1111 1111 1111 ",
	        "glpat-",
	        "eyJaaaaaaaaa.",
	        "&#64;",
	        "\0",
	        "\xFF",
	        "\xE2\x80",
	        "\r",
	        "Bearer ",
	        "Authorization: ",
	        "x.y@",
	        "a",
	        "aaaaaaaaaaaaaaaaaaaa",
	        "\"token\":",
	        "eyJ",
	        "eyJabcdefgh.",
	        "sk-",
	        "sk-a",
	        "http://a.b/",
	        "https://a.b/x?",
	        "xhttp://a.b/",
	        "glpat-x",
	        "token='",
	        "a@b.c",
	        "@a.",
	        "0",
	        "4-",
	        "&#0",
	        "&#x",
	        "ghp_",
	        "GR1348941",
	        NULL,
	};
	size_t i;

	for (i = 0; units[i]; i++)
		big_case(units[i], units[i][0] ? strlen(units[i]) : 1);
}

Test(big, realistic_log_text_is_fast, .timeout = 120)
{
	const char *line = "2024-05-01T10:00:00Z ERROR payment failed for user=bob@x.com card=4111111111111111 "
	                   "token=abc123 url=https://u:p@api.example.com/v1?key=1 trace=eyJhbGciOi.eyJzdWIiOi.sig "
	                   "@ops please look /close\r\n";
	size_t total = 1 << 20;
	char *in = repeat(line, strlen(line), total);
	double t0 = seconds();
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(untrusted_clean(&b, in, total), 0);
	cr_assert_lt(seconds() - t0, 5.0);
	cr_assert_null(memmem(b.ptr, b.len, "bob@x.com", 9));
	cr_assert_null(memmem(b.ptr, b.len, "4111111111111111", 16));
	cr_assert_null(memmem(b.ptr, b.len, "abc123", 6));
	assert_safe(b.ptr, b.len);
	fbuf_release(&b);
	free(in);
}
