/*
 * untrusted.c - outside text made safe to write into GitLab.
 *
 * Three passes, each a single forward scan written by hand (no regex
 * engine, no backtracking, linear in the input):
 *
 *   sanitise   bytes -> valid UTF-8 with \n and \t as the only controls
 *   redact     secrets and personal data -> [secret], [email], [card]
 *   defuse     quick actions, mentions and HTML comments made inert
 *
 * untrusted_neutralise() is sanitise + defuse; untrusted_redact() is redact
 * alone (on the bytes as given); untrusted_clean() is sanitise + redact +
 * defuse, so control characters can never hide a secret from the redactor
 * (they are gone before it looks) and nothing the redactor writes can form
 * a quick action, mention or comment (the defuser looks last).
 */
#include "untrusted.h"

#include <stdint.h>
#include <string.h>

#include "error.h"
#include "log.h"

#define SCRATCH_MAX FBUF_DEFAULT_MAX

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */
static const char ZWSP[] = "\xE2\x80\x8B";        /* U+200B */

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
	return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int is_alnum(unsigned char c)
{
	return is_digit(c) || is_alpha(c);
}

static int is_xdigit(unsigned char c)
{
	return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive ASCII prefix test of `word` at t[i..n). */
static int has_word(const char *t, size_t n, size_t i, const char *word)
{
	size_t k;

	for (k = 0; word[k]; k++)
		if (i + k >= n || lower((unsigned char)t[i + k]) != (unsigned char)word[k])
			return 0;
	return 1;
}

static int has_exact(const char *t, size_t n, size_t i, const char *word)
{
	size_t k = strlen(word);

	return n - i >= k && !memcmp(t + i, word, k);
}

/*
 * Append to `out` as much of `data` as fits, cut on a UTF-8 boundary:
 * 0, or FACTORY_ETOOBIG (with what fitted appended), or FACTORY_ENOMEM.
 */
static int put_fit(fbuf *out, const char *data, size_t len)
{
	size_t room;
	int error;

	if ((error = fbuf_put(out, data, len)) != FACTORY_ETOOBIG)
		return error;
	room = out->max > out->len ? out->max - out->len : 0;
	if (room > len)
		room = len;
	while (room > 0 && room < len && ((unsigned char)data[room] & 0xC0) == 0x80)
		room--;
	if (room && (error = fbuf_put(out, data, room)) < 0)
		return error;
	return ferror_set(FACTORY_ETOOBIG, "text cut at the buffer cap of %zu bytes", out->max);
}

/*
 * Sanitise.
 */

/*
 * Decode the UTF-8 sequence at s[0..left). Returns its length (1-4) and sets
 * *cp, or 0 when invalid with *bad set to the length of the maximal invalid
 * subpart (what one U+FFFD stands for, as Unicode recommends).
 */
static size_t utf8_decode(const unsigned char *s, size_t left, uint32_t *cp, size_t *bad)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need, k;
	uint32_t v;

	*bad = 1;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F; /* no surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	for (k = 1; k <= need; k++) {
		unsigned char b = k < left ? s[k] : 0;
		if (k >= left || b < lo || b > hi) {
			*bad = k;
			return 0;
		}
		v = (v << 6) | (b & 0x3F);
		lo = 0x80;
		hi = 0xBF;
	}
	*cp = v;
	return need + 1;
}

/*
 * Append `text` as valid UTF-8: NUL and invalid sequences become U+FFFD;
 * \r\n, a lone \r, U+0085, U+2028 and U+2029 become \n; other C0 and C1
 * controls and DEL are dropped; \t and \n stay.
 */
static int sanitise(fbuf *out, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0, run = 0, n, bad;
	const char *rep;
	uint32_t cp;
	int error;

	while (i < len) {
		unsigned char c = s[i];

		if ((c >= 0x20 && c < 0x7F) || c == '\t' || c == '\n') {
			i++;
			continue;
		}
		n = 1;
		rep = NULL;
		if (c == '\r') {
			rep = "\n";
			if (i + 1 < len && s[i + 1] == '\n')
				n = 2;
		} else if (c == 0) {
			rep = REPLACEMENT;
		} else if (c >= 0x80) {
			n = utf8_decode(s + i, len - i, &cp, &bad);
			if (!n) {
				rep = REPLACEMENT;
				n = bad;
			} else if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
				rep = "\n";
			} else if (cp >= 0x80 && cp <= 0x9F) {
				rep = ""; /* C1 control */
			} else {
				i += n; /* a valid character: keep it in the run */
				continue;
			}
		} else {
			rep = ""; /* C0 control or DEL */
		}
		if ((error = put_fit(out, text + run, i - run)) < 0 || (error = put_fit(out, rep, strlen(rep))) < 0)
			return error;
		i += n;
		run = i;
	}
	return put_fit(out, text + run, len - run);
}

/*
 * Defuse: quick actions, mentions, HTML comments. Input is sanitised text.
 */

/* End of an http(s)/ftp URL whose ':' is at t[i] (0 if none starts there).
 * Only URLs GitLab surely renders as one link count: a host with a dot and
 * a path of plain URL characters (no '_', '*', '~', '`' or '&', which could
 * end the link early through emphasis or entities, and no brackets or
 * parentheses, which end a markdown link: "[x](https://a.b/)@all"). */
static size_t url_end_at(const char *t, size_t n, size_t i)
{
	static const char *const schemes[] = {"https", "http", "ftp", NULL};
	size_t s, j, k, dots = 0;

	if (!has_exact(t, n, i, "://"))
		return 0;
	for (k = 0; schemes[k]; k++) {
		size_t l = strlen(schemes[k]);
		if (i >= l && has_word(t, n, i - l, schemes[k]) && (i == l || !is_alnum((unsigned char)t[i - l - 1])))
			break;
	}
	if (!schemes[k])
		return 0;
	s = j = i + 3;
	while (j < n && (is_alnum((unsigned char)t[j]) || t[j] == '-' || t[j] == '.')) {
		dots += t[j] == '.';
		j++;
	}
	if (j == s || !dots || !is_alnum((unsigned char)t[s]))
		return 0;
	if (j < n && t[j] == ':')
		for (j++; j < n && is_digit((unsigned char)t[j]); j++)
			;
	if (j < n && (t[j] == '/' || t[j] == '?' || t[j] == '#'))
		while (j < n && (is_alnum((unsigned char)t[j]) || strchr("-./:%+=,;!$'@?#", t[j])) && t[j])
			j++;
	return j;
}

/* Bytes of an entity that decodes to '@' at t[i] ("&#64;", "&#x40;",
 * "&commat;"), else 0. Numeric ones count without the ';' too: an HTML
 * parser decodes "&#64all" inside inline HTML. */
static size_t at_entity(const char *t, size_t n, size_t i)
{
	size_t j = i + 1, digits;
	unsigned long v = 0;
	int hex;

	if (has_word(t, n, i, "&commat;"))
		return 8;
	if (j >= n || t[j] != '#')
		return 0;
	j++;
	hex = j < n && (t[j] == 'x' || t[j] == 'X');
	j += hex;
	/* Any number of leading zeros; the value saturates instead of wrapping. */
	for (digits = j; j < n && (hex ? is_xdigit((unsigned char)t[j]) : is_digit((unsigned char)t[j])); j++) {
		unsigned d =
		        is_digit((unsigned char)t[j]) ? (unsigned)(t[j] - '0') : (unsigned)((t[j] | 0x20) - 'a' + 10);
		if (v < 0x110000)
			v = v * (hex ? 16 : 10) + d;
	}
	if (j == digits || v != '@')
		return 0;
	return (j < n && t[j] == ';') ? j + 1 - i : j - i;
}

/* Whether the '@' at t[i] starts a mention. GitLab's pattern is
 * (?<!\w)@name: any '@' not after an ASCII letter or digit counts when a name
 * character follows (an '_' before it may close emphasis, which splits the
 * text, so it does not protect). */
static int mention_at(const char *t, size_t n, size_t i)
{
	unsigned char next;

	if (i + 1 >= n)
		return 0;
	next = (unsigned char)t[i + 1];
	if (!is_alnum(next) && next != '_' && next != '.' && next != '-')
		return 0;
	return i == 0 || !is_alnum((unsigned char)t[i - 1]);
}

/* Copy the text from *run up to `upto`, then `with` in place of the `skip`
 * bytes at `upto`; the next run starts after them. */
static int splice(fbuf *out, const char *t, size_t *run, size_t upto, const char *with, size_t skip)
{
	int error;

	if ((error = put_fit(out, t + *run, upto - *run)) < 0 || (error = put_fit(out, with, strlen(with))) < 0)
		return error;
	*run = upto + skip;
	return 0;
}

static int defuse(fbuf *out, const char *t, size_t n)
{
	size_t i = 0, run = 0, url_end = 0, k;
	int line_start = 1, error;

	while (i < n) {
		unsigned char c = (unsigned char)t[i];

		switch (c) {
		case '\n':
			line_start = 1;
			i++;
			continue;
		case ' ':
		case '\t':
			i++;
			continue;
		case '/':
			if (line_start && (error = splice(out, t, &run, i, "\\", 0)) < 0)
				return error;
			i++;
			break;
		case '@':
			if (i >= url_end && mention_at(t, n, i) && (error = splice(out, t, &run, i + 1, ZWSP, 0)) < 0)
				return error;
			i++;
			break;
		case '<':
			if (has_exact(t, n, i, "<!--")) {
				/* The "--" is left for the '-' case, so "<!-->" loses its '>' too. */
				if ((error = splice(out, t, &run, i, "&lt;!", 2)) < 0)
					return error;
				i = run;
			} else {
				i++;
			}
			break;
		case '-':
			if (has_exact(t, n, i, "-->")) {
				if ((error = splice(out, t, &run, i, "--&gt;", 3)) < 0)
					return error;
				i = run;
			} else {
				i++;
			}
			break;
		case '&':
			if (at_entity(t, n, i) > 0 && (error = splice(out, t, &run, i, "&amp;", 1)) < 0)
				return error;
			i++;
			break;
		case ':':
			/* A URL starting inside another ends no later (same characters). */
			if (i >= url_end && (k = url_end_at(t, n, i)) > url_end)
				url_end = k;
			i++;
			break;
		default:
			i++;
			break;
		}
		line_start = 0;
	}
	return put_fit(out, t + run, n - run);
}

/*
 * Redact.
 */

/* Characters of a key in key=value, and what may not come right before one. */
static int is_keychar(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-' || c == '.';
}

static int is_tokchar(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-';
}

typedef struct {
	const char *prefix;
	size_t min_body;
	int boundary; /* must not follow a letter or digit */
} token_kind;

/* Token prefixes; checked in order, so longer ones sharing a start come first. */
static const token_kind tokens[] = {
        {"glpat-", 8, 0},  {"gldt-", 8, 0},     {"glrt-", 8, 0},        {"glptt-", 8, 0},   {"glcbt-", 8, 0},
        {"glimt-", 8, 0},  {"glsoat-", 8, 0},   {"glft-", 8, 0},        {"glagent-", 8, 0}, {"gloas-", 8, 0},
        {"glffct-", 8, 0}, {"GR1348941", 8, 0}, {"github_pat_", 16, 0}, {"ghp_", 16, 0},    {"gho_", 16, 0},
        {"ghu_", 16, 0},   {"ghs_", 16, 0},     {"ghr_", 16, 0},        {"xoxa-", 8, 0},    {"xoxb-", 8, 0},
        {"xoxp-", 8, 0},   {"xoxr-", 8, 0},     {"xoxs-", 8, 0},        {"sk-ant-", 16, 1}, {"sk-", 20, 1},
        {NULL, 0, 0},
};

/* Length of a run of token characters (and inner dots) from t[i]. */
static size_t token_body(const char *t, size_t n, size_t i)
{
	size_t j = i;

	while (j < n &&
	       (is_tokchar((unsigned char)t[j]) || (t[j] == '.' && j + 1 < n && is_tokchar((unsigned char)t[j + 1]))))
		j++;
	return j - i;
}

/*
 * Where a failed scan ended, so that starts inside the same run are not
 * scanned again (they would fail the same way): without it "sk-sk-sk-..."
 * or "eyJeyJeyJ..." would take quadratic time.
 */
typedef struct {
	size_t sk_until;
	size_t jwt_until;
} token_memo;

/* Length of a JWT (eyJ<header>.eyJ<payload>.<signature>) at t[i], else 0. */
static size_t jwt_at(const char *t, size_t n, size_t i, token_memo *memo)
{
	size_t j = i, k, part;

	if (i < memo->jwt_until)
		return 0;
	for (part = 0; part < 2; part++) {
		if (!has_exact(t, n, j, "eyJ"))
			return 0;
		for (k = j + 3; k < n && is_tokchar((unsigned char)t[k]); k++)
			;
		if (k - j < 8 || k >= n || t[k] != '.') {
			memo->jwt_until = k;
			return 0;
		}
		j = k + 1;
	}
	while (j < n && is_tokchar((unsigned char)t[j]))
		j++;
	return j - i;
}

/* Length of a token-shaped secret at t[i], else 0. */
static size_t token_at(const char *t, size_t n, size_t i, token_memo *memo)
{
	unsigned char c = (unsigned char)t[i];
	int after_alnum = i > 0 && is_alnum((unsigned char)t[i - 1]);
	size_t k, l, body, d;

	switch (c) {
	case 'g':
	case 'G':
	case 'x':
	case 's':
		for (k = 0; tokens[k].prefix; k++) {
			if ((unsigned char)tokens[k].prefix[0] != c || !has_exact(t, n, i, tokens[k].prefix))
				continue;
			if (tokens[k].boundary && after_alnum)
				return 0;
			if (c == 's' && i < memo->sk_until)
				return 0;
			l = strlen(tokens[k].prefix);
			body = token_body(t, n, i + l);
			if (body < tokens[k].min_body) {
				if (c == 's')
					memo->sk_until = i + l + body;
				return 0;
			}
			if (!strcmp(tokens[k].prefix, "sk-")) {
				/* "sk-" alone is common in words; an API key has digits. */
				for (d = 0; d < body && !is_digit((unsigned char)t[i + l + d]); d++)
					;
				if (d == body) {
					memo->sk_until = i + l + body;
					return 0;
				}
			}
			return l + body;
		}
		return 0;
	case 'A':
		/* AWS access key ids: AKIA/ASIA + 16 upper-case letters or digits. */
		if (after_alnum || !(has_exact(t, n, i, "AKIA") || has_exact(t, n, i, "ASIA")) || n - i < 20)
			return 0;
		for (k = 4; k < 20; k++)
			if (!is_digit((unsigned char)t[i + k]) && !(t[i + k] >= 'A' && t[i + k] <= 'Z'))
				return 0;
		if (i + 20 < n && is_alnum((unsigned char)t[i + 20]))
			return 0;
		return 20;
	case 'e':
		return jwt_at(t, n, i, memo);
	}
	return 0;
}

/* Key names whose value is a secret; a key also matches when it ends in one
 * after '_', '-' or '.' ("db_password", "X-Auth-Token", "gitlab.token"). */
static const char *const secret_keys[] = {
        "password",      "passwd",     "pwd",          "secret",      "token",         "api_key",
        "apikey",        "api-key",    "access_token", "auth",        "authorization", "private-token",
        "private_token", "secret_key", "access_key",   "private_key", "client_secret", NULL,
};

static int secret_key(const char *t, size_t ks, size_t ke)
{
	size_t k, l, len = ke - ks;

	for (k = 0; secret_keys[k]; k++) {
		l = strlen(secret_keys[k]);
		if (l > len || !has_word(t, ke, ke - l, secret_keys[k]))
			continue;
		if (l == len || t[ke - l - 1] == '_' || t[ke - l - 1] == '-' || t[ke - l - 1] == '.')
			return 1;
	}
	return 0;
}

/* Already redacted: no need to do it again. */
static int redacted_at(const char *t, size_t n, size_t i)
{
	return has_exact(t, n, i, "[secret]") || has_exact(t, n, i, "[MASKED]");
}

typedef struct {
	size_t start; /* first byte replaced */
	size_t end;   /* first byte after */
	const char *with;
} match;

static int is_value_end(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '&' || c == ',' || c == ';' || c == '"' ||
	       c == '\'' || c == '<' || c == '>' || c == ')' || c == '}' || c == ']' || c == '\0';
}

/* End of an unquoted value from t[i]; a mark left by an earlier pass
 * ("[secret]", "[MASKED]") is one piece. */
static size_t value_end(const char *t, size_t n, size_t i)
{
	while (i < n) {
		if (t[i] == '[' && redacted_at(t, n, i))
			i += 8;
		else if (!is_value_end((unsigned char)t[i]))
			i++;
		else
			break;
	}
	return i;
}

/*
 * key=value, key: value, "key": "value", 'key'='value' with a secret key
 * starting at t[i] (a word start). The value (inside its quotes) is replaced.
 */
static int key_value_at(match *m, const char *t, size_t n, size_t i)
{
	size_t ks = i, ke, p, vs, ve;
	char q = 0, vq;
	int auth;

	if (t[i] == '"' || t[i] == '\'') {
		q = t[i];
		ks = i + 1;
	}
	for (ke = ks; ke < n && ke - ks < 64 && is_keychar((unsigned char)t[ke]); ke++)
		;
	if (ke == ks || (ke < n && is_keychar((unsigned char)t[ke])))
		return 0;
	p = ke;
	if (q) {
		if (p >= n || t[p] != q)
			return 0;
		p++;
	}
	while (p < n && (t[p] == ' ' || t[p] == '\t') && p - ke < 8)
		p++;
	if (p >= n || (t[p] != '=' && t[p] != ':'))
		return 0;
	if (t[p] == ':') {
		/* Unquoted "key:" needs a blank after it, so "auth:8080" and URLs stay. */
		if (!q && (p + 1 >= n || (t[p + 1] != ' ' && t[p + 1] != '\t')))
			return 0;
	}
	if (!secret_key(t, ks, ke))
		return 0;
	for (p++; p < n && (t[p] == ' ' || t[p] == '\t') && p - ke < 16; p++)
		;
	if (p >= n)
		return 0;
	vs = p;
	if (t[vs] == '"' || t[vs] == '\'') {
		vq = t[vs++];
		for (ve = vs; ve < n && t[ve] != vq && t[ve] != '\n'; ve++)
			if (t[ve] == '\\' && ve + 1 < n && t[ve + 1] != '\n')
				ve++;
		if (ve > n)
			ve = n;
	} else {
		auth = (ke - ks >= 13 && has_word(t, ke, ke - 13, "authorization"));
		ve = value_end(t, n, vs);
		/* "Authorization: Bearer x": the scheme and the credential go together. */
		if (auth && ve + 1 < n && t[ve] == ' ' && !is_value_end((unsigned char)t[ve + 1]))
			ve = value_end(t, n, ve + 1);
	}
	if (ve == vs || (ve - vs == 8 && redacted_at(t, n, vs)))
		return 0;
	m->start = vs;
	m->end = ve;
	m->with = "[secret]";
	return 1;
}

/* "Bearer <credential>" at t[i]: the credential is replaced. */
static int bearer_at(match *m, const char *t, size_t n, size_t i)
{
	size_t p, e;

	if (!has_word(t, n, i, "bearer"))
		return 0;
	p = i + 6;
	if (p >= n || (t[p] != ' ' && t[p] != '\t'))
		return 0;
	while (p < n && (t[p] == ' ' || t[p] == '\t'))
		p++;
	for (e = p; e < n && (is_tokchar((unsigned char)t[e]) || strchr("._~+/=", t[e])) && t[e]; e++)
		;
	if (e - p < 8)
		return 0;
	m->start = p;
	m->end = e;
	m->with = "[secret]";
	return 1;
}

/* user:password@ after "://" at t[i]: replaced up to the '@'. */
static int userinfo_at(match *m, const char *t, size_t n, size_t i)
{
	size_t j, colon = 0;

	if (!has_exact(t, n, i, "://"))
		return 0;
	for (j = i + 3; j < n && j - i < 512; j++) {
		unsigned char c = (unsigned char)t[j];
		if (c == '@')
			break;
		if (c <= ' ' || c == '/' || c == '?' || c == '#' || c == '<' || c == '>' || c == '"' || c == '\'' ||
		    c == 0x7F)
			return 0;
		if (c == ':' && !colon)
			colon = j;
	}
	if (j >= n || t[j] != '@' || !colon || redacted_at(t, n, i + 3))
		return 0;
	m->start = i + 3;
	m->end = j;
	m->with = "[secret]";
	return 1;
}

static int is_email_local(unsigned char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* An email address whose '@' is at t[i], not reaching back before `floor`. */
static int email_at(match *m, const char *t, size_t n, size_t i, size_t floor)
{
	size_t s = i, e, label, last_label = 0, labels = 0, k;
	int alpha_tld;

	while (s > floor && i - s < 64 && is_email_local((unsigned char)t[s - 1]))
		s--;
	while (s < i && t[s] == '.')
		s++;
	if (s == i)
		return 0;
	e = i + 1;
	for (;;) {
		label = e;
		while (e < n && e - label < 63 && (is_alnum((unsigned char)t[e]) || t[e] == '-'))
			e++;
		if (e == label)
			break;
		labels++;
		last_label = label;
		if (e + 1 < n && t[e] == '.' && is_alnum((unsigned char)t[e + 1]))
			e++;
		else
			break;
	}
	if (labels < 2)
		return 0;
	/* The top-level domain: letters only, two or more. */
	alpha_tld = e - last_label >= 2;
	for (k = last_label; k < e; k++)
		if (!is_alpha((unsigned char)t[k]))
			alpha_tld = 0;
	if (!alpha_tld)
		return 0;
	m->start = s;
	m->end = e;
	m->with = "[email]";
	return 1;
}

static int luhn_ok(const char *t, size_t s, size_t e)
{
	int sum = 0, dbl = 0, d;
	size_t k;

	for (k = e; k > s; k--) {
		if (!is_digit((unsigned char)t[k - 1]))
			continue;
		d = t[k - 1] - '0';
		if (dbl && (d *= 2) > 9)
			d -= 9;
		sum += d;
		dbl = !dbl;
	}
	return sum % 10 == 0;
}

/* End of the digit group starting at t[g]. */
static size_t group_end(const char *t, size_t n, size_t g)
{
	while (g < n && is_digit((unsigned char)t[g]))
		g++;
	return g;
}

/* Start of the group after the one ending at e (single ' ' or '-' between), or 0. */
static size_t next_group(const char *t, size_t n, size_t e)
{
	if (e + 1 < n && (t[e] == ' ' || t[e] == '-') && is_digit((unsigned char)t[e + 1]))
		return e + 1;
	return 0;
}

/*
 * A card-like number in the run of digit groups starting at t[i]: 13 to 19
 * digits over whole groups, Luhn-valid, starting with 2-6 (the major card
 * networks; this keeps millisecond timestamps and most ids out). *skip gets
 * the end of the run when there is none, so the run is scanned once.
 */
static int card_at(match *m, const char *t, size_t n, size_t i, size_t *skip)
{
	size_t a = i, b, e, digits, best;

	for (;;) {
		digits = 0;
		best = 0;
		b = a;
		for (;;) {
			e = group_end(t, n, b);
			digits += e - b;
			if (digits > 19)
				break;
			if (digits >= 13 && t[a] >= '2' && t[a] <= '6' && luhn_ok(t, a, e) &&
			    !(e < n && (is_alpha((unsigned char)t[e]) || t[e] == '_')))
				best = e;
			if (!(b = next_group(t, n, e)))
				break;
		}
		if (best) {
			m->start = a;
			m->end = best;
			m->with = "[card]";
			return 1;
		}
		e = group_end(t, n, a);
		if (!(a = next_group(t, n, e))) {
			*skip = e;
			return 0;
		}
	}
}

/* Whether t[i] starts a word (nothing key-like right before it). */
static int word_start(const char *t, size_t i)
{
	return i == 0 || !is_keychar((unsigned char)t[i - 1]);
}

/* Whether the digit at t[i] starts a number that may be a card: not inside
 * a word or a longer number, not the fraction of a decimal ("0.4111..."). */
static int number_start(const char *t, size_t i)
{
	unsigned char p;

	if (i == 0)
		return 1;
	p = (unsigned char)t[i - 1];
	if (is_alnum(p))
		return 0;
	if ((p == '.' || p == ',') && i > 1 && is_digit((unsigned char)t[i - 2]))
		return 0;
	return 1;
}

static int redact_raw(fbuf *out, const char *t, size_t n)
{
	size_t i = 0, copied = 0, skip, len;
	token_memo memo = {0, 0};
	match m;
	int error, found;

	while (i < n) {
		unsigned char c = (unsigned char)t[i];

		found = 0;
		m.with = NULL;
		if (c == '[' && has_exact(t, n, i, "[MASKED]")) {
			/* log_mask's mark, in this module's words. */
			m.start = i;
			m.end = i + 8;
			m.with = "[secret]";
			found = 1;
		} else if (c == ':') {
			found = userinfo_at(&m, t, n, i);
		} else if (c == '@') {
			found = email_at(&m, t, n, i, copied);
		} else {
			if ((len = token_at(t, n, i, &memo)) > 0) {
				m.start = i;
				m.end = i + len;
				m.with = "[secret]";
				found = 1;
			} else if (is_digit(c)) {
				if (number_start(t, i)) {
					found = card_at(&m, t, n, i, &skip);
					if (!found) {
						i = skip;
						continue;
					}
				}
			} else if (word_start(t, i) && (is_alpha(c) || c == '_' || c == '"' || c == '\'')) {
				found = key_value_at(&m, t, n, i) || ((c | 0x20) == 'b' && bearer_at(&m, t, n, i));
			}
		}
		if (!found) {
			i++;
			continue;
		}
		if ((error = put_fit(out, t + copied, m.start - copied)) < 0 ||
		    (error = put_fit(out, m.with, strlen(m.with))) < 0)
			return error;
		i = copied = m.end;
	}
	return put_fit(out, t + copied, n - copied);
}

/* Redact: registered secrets and log_mask's shapes first (as [MASKED]), then
 * this module's patterns, which also turn [MASKED] into [secret]. */
static int redact(fbuf *out, const char *text, size_t len)
{
	fbuf masked;
	int error;

	/* log_mask at most about triples its input ("Bearer x" -> "Bearer
	 * [MASKED]"): a cap it cannot reach, but one that follows the input. */
	fbuf_init(&masked, len < SIZE_MAX / 8 ? len * 4 + 64 : SIZE_MAX / 2);
	if ((error = log_mask(&masked, text, len)) >= 0)
		error = redact_raw(out, fbuf_cstr(&masked), masked.len);
	fbuf_release(&masked);
	return error;
}

/*
 * The API.
 */

int untrusted_neutralise(fbuf *out, const char *text, size_t len)
{
	fbuf clean;
	int error;

	if (!text) {
		text = "";
		len = 0;
	}
	fbuf_init(&clean, SCRATCH_MAX);
	if ((error = sanitise(&clean, text, len)) >= 0)
		error = defuse(out, fbuf_cstr(&clean), clean.len);
	fbuf_release(&clean);
	return error;
}

int untrusted_redact(fbuf *out, const char *text, size_t len)
{
	if (!text) {
		text = "";
		len = 0;
	}
	return redact(out, text ? text : "", len);
}

int untrusted_clean(fbuf *out, const char *text, size_t len)
{
	fbuf a, b;
	int error;

	if (!text) {
		text = "";
		len = 0;
	}
	fbuf_init(&a, SCRATCH_MAX);
	fbuf_init(&b, SCRATCH_MAX);
	if ((error = sanitise(&a, text, len)) >= 0 && (error = redact(&b, fbuf_cstr(&a), a.len)) >= 0)
		error = defuse(out, fbuf_cstr(&b), b.len);
	fbuf_release(&a);
	fbuf_release(&b);
	return error;
}

/* Fold \n and \t to spaces, squeeze runs of spaces, trim both ends. */
static int fold_line(fbuf *out, const char *t, size_t n)
{
	size_t i, start = 0, end = n;
	int space = 0, error;

	while (start < end && (t[start] == ' ' || t[start] == '\t' || t[start] == '\n'))
		start++;
	while (end > start && (t[end - 1] == ' ' || t[end - 1] == '\t' || t[end - 1] == '\n'))
		end--;
	for (i = start; i < end; i++) {
		if (t[i] == ' ' || t[i] == '\t' || t[i] == '\n') {
			space = 1;
			continue;
		}
		if (space && (error = fbuf_putc(out, ' ')) < 0)
			return error;
		space = 0;
		if ((error = fbuf_putc(out, t[i])) < 0)
			return error;
	}
	return 0;
}

/* Where to cut `t` to at most `max` bytes: not inside a UTF-8 character,
 * an entity this module wrote, or between an '@' and its guard. */
static size_t cut_point(const char *t, size_t n, size_t max)
{
	size_t k = max < n ? max : n, j;

	while (k > 0 && k < n && ((unsigned char)t[k] & 0xC0) == 0x80)
		k--;
	for (j = k; j > 0 && k - j < 6; j--) {
		if (t[j - 1] == ';')
			break;
		if (t[j - 1] == '&') {
			k = j - 1;
			break;
		}
	}
	if (k > 0 && k < n && t[k - 1] == '@' && has_exact(t, n, k, ZWSP))
		k--;
	if (k > 0 && t[k - 1] == '\\' && k < n && t[k] == '/')
		k--;
	while (k > 0 && t[k - 1] == ' ')
		k--;
	return k;
}

int untrusted_title(fbuf *out, const char *text, size_t len, size_t max_bytes)
{
	fbuf a, b, c;
	size_t k;
	int error;

	if (!text) {
		text = "";
		len = 0;
	}
	fbuf_init(&a, SCRATCH_MAX);
	fbuf_init(&b, SCRATCH_MAX);
	fbuf_init(&c, SCRATCH_MAX);
	if ((error = sanitise(&a, text, len)) < 0 || (error = fold_line(&b, fbuf_cstr(&a), a.len)) < 0)
		goto cleanup;
	fbuf_reset(&a);
	if ((error = redact(&a, fbuf_cstr(&b), b.len)) < 0 || (error = defuse(&c, fbuf_cstr(&a), a.len)) < 0)
		goto cleanup;
	if (!max_bytes || c.len <= max_bytes) {
		error = put_fit(out, fbuf_cstr(&c), c.len);
	} else if (max_bytes < 4) {
		error = put_fit(out, c.ptr, cut_point(c.ptr, c.len, max_bytes));
	} else {
		k = cut_point(c.ptr, c.len, max_bytes - 3);
		if ((error = put_fit(out, c.ptr, k)) >= 0)
			error = put_fit(out, "...", 3);
	}
cleanup:
	fbuf_release(&a);
	fbuf_release(&b);
	fbuf_release(&c);
	return error;
}
