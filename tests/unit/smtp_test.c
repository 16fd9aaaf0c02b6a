/* Tests for common/smtp.c: the message it writes (headers, encoded
 * subjects and names, quoted-printable bodies that survive the trip),
 * address checks, header injection, and the settings (TLS and credentials).
 * Sending is tested end to end against tests/lib/smtp_sink.py by the
 * factory-release integration tests. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "smtp.h"

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decode a quoted-printable body with CRLF lines back to "\n" text. */
static char *qp_decode(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	while (*s) {
		if (s[0] == '=' && s[1] == '\r' && s[2] == '\n') {
			s += 3;
		} else if (s[0] == '=') {
			cr_assert(hexval(s[1]) >= 0 && hexval(s[2]) >= 0, "bad escape at %.10s", s);
			*o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
			s += 3;
		} else if (s[0] == '\r' && s[1] == '\n') {
			*o++ = '\n';
			s += 2;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

static const char *body_of(const char *msg)
{
	const char *b = strstr(msg, "\r\n\r\n");
	cr_assert_not_null(b);
	return b + 4;
}

Test(smtp, message_headers)
{
	fbuf b;
	const char *m;

	fbuf_init(&b, 0);
	cr_assert_eq(smtp_format(&b, "Factory Bot <bot@example.com>", "jane@example.org", "Released: Demo 1.2.0",
	                         "Hello.\n", 1764237600, "abc.1@example.com"),
	             0, "%s", ferror_last());
	m = fbuf_cstr(&b);
	{
		const char *head = "From: \"Factory Bot\" <bot@example.com>\r\nTo: <jane@example.org>\r\n"
		                   "Subject: Released: Demo 1.2.0\r\nDate: Thu, 27 Nov 2025 10:00:00 +0000\r\n"
		                   "Message-ID: <abc.1@example.com>\r\nMIME-Version: 1.0\r\n";
		cr_assert(!strncmp(m, head, strlen(head)), "%s", m);
	}
	cr_assert(strstr(m, "Content-Type: text/plain; charset=UTF-8\r\n"));
	cr_assert(strstr(m, "Content-Transfer-Encoding: quoted-printable\r\n"));
	cr_assert(strstr(m, "Auto-Submitted: auto-generated\r\n"));
	cr_assert_str_eq(body_of(m), "Hello.\r\n");
	/* every line ends in CRLF: no bare LF */
	{
		const char *p;
		for (p = m; (p = strchr(p, '\n')); p++)
			cr_assert_eq(p[-1], '\r');
	}
	fbuf_release(&b);
}

Test(smtp, encoded_subject_and_name)
{
	fbuf b;
	const char *m;

	fbuf_init(&b, 0);
	cr_assert_eq(
	        smtp_format(
	                &b, "L\xc3\xa9a \"the\" bot <bot@example.com>", "a@example.org",
	                "Sortie : d\xc3\xa9mo 1.2.0 \xe2\x80\x94 ce que vous avez signal\xc3\xa9 est corrig\xc3\xa9 "
	                "et disponible maintenant",
	                "x", 0, NULL),
	        0, "%s", ferror_last());
	m = fbuf_cstr(&b);
	cr_assert(strstr(m, "From: =?UTF-8?B?"), "%s", m);
	cr_assert(strstr(m, "Subject: =?UTF-8?B?"), "%s", m);
	cr_assert(strstr(m, "?=\r\n =?UTF-8?B?"), "a long subject is folded: %s", m);
	cr_assert_null(strstr(m, "Message-ID"), "no id given, none written");
	/* no header line is longer than 78 characters */
	{
		const char *p = m, *end = strstr(m, "\r\n\r\n");
		while (p < end) {
			const char *nl = strstr(p, "\r\n");
			cr_assert_leq(nl - p, 78, "%.*s", (int)(nl - p), p);
			p = nl + 2;
		}
	}
	fbuf_release(&b);
	/* a plain ASCII name with specials is quoted and escaped */
	fbuf_init(&b, 0);
	cr_assert_eq(smtp_format(&b, "A \\ B <bot@example.com>", "a@example.org", "s", "x", 0, NULL), 0);
	cr_assert(strstr(fbuf_cstr(&b), "From: \"A \\\\ B\" <bot@example.com>\r\n"), "%s", fbuf_cstr(&b));
	fbuf_release(&b);
}

Test(smtp, quoted_printable_bodies_survive)
{
	static const char *texts[] = {
	        "plain\nlines\n",
	        ".\n.leading dot\n..two\nFrom the start\nFrom here\n",
	        "trailing blanks   \nand\ttabs\t\nend",
	        "caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve = equals\n",
	        "CRLF\r\nlines\r\n",
	        "",
	};
	char longline[2000];
	size_t i;

	memset(longline, 'x', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	longline[300] = '.';
	longline[75] = '=';
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]) + 1; i++) {
		const char *t = i < sizeof(texts) / sizeof(texts[0]) ? texts[i] : longline;
		fbuf b;
		char *back, *want;
		const char *body, *p;
		size_t wl;

		fbuf_init(&b, 0);
		cr_assert_eq(smtp_format(&b, "bot@example.com", "a@example.org", "s", t, 0, NULL), 0);
		body = body_of(fbuf_cstr(&b));
		/* lines of at most 76, none starting with '.' or "From " */
		for (p = body; *p;) {
			const char *nl = strstr(p, "\r\n");
			cr_assert_not_null(nl);
			cr_assert_leq(nl - p, 76, "line of %ld", (long)(nl - p));
			cr_assert_neq(*p, '.', "a line starts with a dot");
			cr_assert(strncmp(p, "From ", 5), "a line starts with From");
			if (nl > p)
				cr_assert(nl[-1] != ' ' && nl[-1] != '\t', "a line ends with a blank");
			p = nl + 2;
		}
		back = qp_decode(body);
		/* the text as sent: CRLF folded to LF, and a final newline added */
		want = malloc(strlen(t) + 2);
		{
			const char *s = t;
			char *o = want;
			while (*s) {
				if (s[0] == '\r' && s[1] == '\n')
					s++;
				*o++ = *s++;
			}
			*o = '\0';
		}
		wl = strlen(want);
		if (!wl || want[wl - 1] != '\n')
			strcat(want, "\n");
		cr_assert_str_eq(back, want, "text %zu", i);
		free(back);
		free(want);
		fbuf_release(&b);
	}
}

Test(smtp, refuses_injection_and_bad_addresses)
{
	static const char *bad[] = {
	        "",        "a",       "a@b",     "a@.b.c",    "a@b.c.", "a@b..c", "a b@c.d", "a@b.c\r\nBcc: x@y.z",
	        "<a@b.c>", "a@b@c.d", "a,b@c.d", "\"a\"@b.c", "a@b.c;", NULL};
	size_t i;
	fbuf b;

	for (i = 0; bad[i]; i++)
		cr_assert_not(smtp_address_valid(bad[i]), "'%s' accepted", bad[i]);
	cr_assert(smtp_address_valid("Jane.Doe+release@mail.example.co.uk"));
	fbuf_init(&b, 0);
	cr_assert_eq(smtp_format(&b, "bot@example.com", "a@b.c\r\nBcc: x@y.z", "s", "x", 0, NULL), FACTORY_EINVALID);
	cr_assert_eq(smtp_format(&b, "bot@example.com", "a@b.co", "s\r\nBcc: x@y.z", "x", 0, NULL), FACTORY_EINVALID);
	cr_assert_eq(smtp_format(&b, "Bot <bot@example.com>\r\nBcc: x@y.z", "a@b.co", "s", "x", 0, NULL),
	             FACTORY_EINVALID);
	cr_assert_eq(smtp_format(&b, "Bot <not an address>", "a@b.co", "s", "x", 0, NULL), FACTORY_EINVALID);
	cr_assert_eq(smtp_format(&b, "bot@example.com", "a@b.co", "s", "x", 0, "id>\r\nBcc: x"), FACTORY_EINVALID);
	fbuf_release(&b);
}

static int options_from(fconfig *cfg, smtp_options *o, char **pw)
{
	return smtp_options_from_config(o, pw, cfg);
}

Test(smtp, settings_and_tls_rules)
{
	fconfig *cfg;
	smtp_options o;
	smtp *s = NULL;
	char *pw = NULL;
	FILE *f;
	char path[] = "/tmp/smtp-test-pw-XXXXXX";
	int fd;

	cr_assert_eq(fconfig_new(&cfg), 0);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_null(o.url, "no URL: email is off");
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "smtp://mail.example.com:587"), 0);
	cr_assert_eq(options_from(cfg, &o, &pw), FACTORY_ECONFIG, "smtp.from is required");
	cr_assert(strstr(ferror_last(), "smtp.from"), "%s", ferror_last());
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.from", "Releases <releases@example.com>"), 0);
	cr_assert_eq(options_from(cfg, &o, &pw), 0, "%s", ferror_last());
	cr_assert_eq(o.tls, SMTP_TLS_STARTTLS, "STARTTLS by default");
	cr_assert_eq(smtp_new(&s, &o), 0, "%s", ferror_last());
	smtp_free(s);

	/* a password from a file, trailing newline dropped */
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	f = fdopen(fd, "w");
	fputs("s3cret-pass-word\n", f);
	fclose(f);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.username", "bot"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.password_file", path), 0);
	cr_assert_eq(options_from(cfg, &o, &pw), 0, "%s", ferror_last());
	cr_assert_str_eq(o.password, "s3cret-pass-word");
	cr_assert_eq(o.password, pw);
	cr_assert_eq(smtp_new(&s, &o), 0);
	smtp_free(s);

	/* credentials in plain text: only to this machine */
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.tls", "none"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "without TLS"), "%s", ferror_last());
	cr_assert_null(strstr(ferror_last(), "s3cret"));
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "smtp://127.0.0.1:2525"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), 0, "%s", ferror_last());
	smtp_free(s);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "smtps://mail.example.com"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), 0, "smtps is TLS from the start");
	smtp_free(s);

	/* bad values */
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.tls", "maybe"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), FACTORY_ECONFIG);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.tls", NULL), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "http://mail.example.com"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), FACTORY_ECONFIG);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "smtp://user:pw@mail.example.com"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "smtp.username"), "%s", ferror_last());
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.url", "smtp://mail.example.com"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.from", "nobody"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), 0);
	cr_assert_eq(smtp_new(&s, &o), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "smtp.from"), "%s", ferror_last());
	cr_assert_eq(fconfig_set(cfg, CONFIG_ENV, "smtp.password_file", "/nonexistent/pw"), 0);
	free(pw);
	cr_assert_eq(options_from(cfg, &o, &pw), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "/nonexistent/pw"), "%s", ferror_last());
	free(pw);
	unlink(path);
	fconfig_free(cfg);
}
