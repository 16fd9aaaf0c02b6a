/* semver.c - semantic versions: parse, compare, bump, format. */
#include "semver.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

static int is_alnum_dash(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A whole number without leading zeros; advances *p. */
static int parse_number(long *out, const char **p, const char *text, const char *what)
{
	const char *s = *p;
	long v = 0;

	if (!is_digit(*s))
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': %s is not a number", text, what);
	if (*s == '0' && is_digit(s[1]))
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': %s has a leading zero", text,
		                  what);
	while (is_digit(*s)) {
		v = v * 10 + (*s - '0');
		if (v > SEMVER_NUMBER_MAX)
			return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': %s is too large", text,
			                  what);
		s++;
	}
	*out = v;
	*p = s;
	return 0;
}

/* Dot-separated identifiers up to the end or `stop`; numeric ones checked
 * for leading zeros when `numeric_rule`. Copies into `out`. */
static int parse_ids(char *out, const char **p, const char *text, const char *what, char stop, int numeric_rule)
{
	const char *s = *p, *id = s;
	size_t n = 0;

	for (;; s++) {
		if (*s == '.' || *s == '\0' || *s == stop) {
			size_t len = (size_t)(s - id), i;
			int numeric = len > 0;

			if (!len)
				return ferror_set(FACTORY_EINVALID,
				                  "not a semantic version '%.80s': empty %s identifier", text, what);
			for (i = 0; i < len; i++)
				numeric &= is_digit(id[i]);
			if (numeric_rule && numeric && len > 1 && id[0] == '0')
				return ferror_set(
				        FACTORY_EINVALID,
				        "not a semantic version '%.80s': numeric %s identifier with a leading zero",
				        text, what);
			if (*s != '.')
				break;
			id = s + 1;
			continue;
		}
		if (!is_alnum_dash(*s))
			return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': bad character in the %s",
			                  text, what);
	}
	n = (size_t)(s - *p);
	if (n > SEMVER_LABEL_MAX)
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': %s longer than %d bytes", text,
		                  what, SEMVER_LABEL_MAX);
	memcpy(out, *p, n);
	out[n] = '\0';
	*p = s;
	return 0;
}

int semver_parse(semver *out, const char *text, const char *prefix)
{
	const char *p = text;
	semver v;
	int error;

	memset(&v, 0, sizeof(v));
	if (!text)
		return ferror_set(FACTORY_EINVALID, "not a semantic version: no text");
	if (prefix && *prefix && !strncmp(p, prefix, strlen(prefix)) && is_digit(p[strlen(prefix)]))
		p += strlen(prefix);
	if ((error = parse_number(&v.major, &p, text, "the major version")) < 0)
		return error;
	if (*p++ != '.')
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': expected MAJOR.MINOR.PATCH", text);
	if ((error = parse_number(&v.minor, &p, text, "the minor version")) < 0)
		return error;
	if (*p++ != '.')
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': expected MAJOR.MINOR.PATCH", text);
	if ((error = parse_number(&v.patch, &p, text, "the patch version")) < 0)
		return error;
	if (*p == '-') {
		p++;
		if ((error = parse_ids(v.pre, &p, text, "pre-release", '+', 1)) < 0)
			return error;
	}
	if (*p == '+') {
		p++;
		if ((error = parse_ids(v.build, &p, text, "build metadata", '\0', 0)) < 0)
			return error;
	}
	if (*p)
		return ferror_set(FACTORY_EINVALID, "not a semantic version '%.80s': unexpected '%c'", text, *p);
	*out = v;
	return 0;
}

static int cmp_long(long a, long b)
{
	return a < b ? -1 : a > b;
}

/* Compare one identifier of each pre-release (lengths given). */
static int cmp_id(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i;
	int an = 1, bn = 1, c;

	for (i = 0; i < alen; i++)
		an &= is_digit(a[i]);
	for (i = 0; i < blen; i++)
		bn &= is_digit(b[i]);
	if (an && bn) /* no leading zeros: the longer number is larger */
		return alen != blen ? cmp_long((long)alen, (long)blen)
		                    : (memcmp(a, b, alen) > 0) - (memcmp(a, b, alen) < 0);
	if (an != bn)
		return an ? -1 : 1;
	c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c < 0 ? -1 : 1;
	return cmp_long((long)alen, (long)blen);
}

int semver_compare(const semver *a, const semver *b)
{
	const char *pa = a->pre, *pb = b->pre;
	int c;

	if ((c = cmp_long(a->major, b->major)) || (c = cmp_long(a->minor, b->minor)) ||
	    (c = cmp_long(a->patch, b->patch)))
		return c;
	if (!*pa || !*pb)
		return !*pa && !*pb ? 0 : (*pa ? -1 : 1);
	for (;;) {
		size_t la = strcspn(pa, "."), lb = strcspn(pb, ".");

		if ((c = cmp_id(pa, la, pb, lb)))
			return c;
		pa += la;
		pb += lb;
		if (!*pa || !*pb)
			return !*pa && !*pb ? 0 : (*pa ? 1 : -1);
		pa++;
		pb++;
	}
}

int semver_bump(semver *out, const semver *cur, semver_change change)
{
	semver v = *cur;
	int pre = v.pre[0] != '\0';

	v.pre[0] = '\0';
	v.build[0] = '\0';
	if (change == SEMVER_BREAKING && v.major == 0)
		change = SEMVER_MINOR;
	switch (change) {
	case SEMVER_BREAKING:
		if (!(pre && v.minor == 0 && v.patch == 0))
			v.major++;
		v.minor = 0;
		v.patch = 0;
		break;
	case SEMVER_MINOR:
		if (!(pre && v.patch == 0))
			v.minor++;
		v.patch = 0;
		break;
	default:
		if (!pre)
			v.patch++;
		break;
	}
	if (v.major > SEMVER_NUMBER_MAX || v.minor > SEMVER_NUMBER_MAX || v.patch > SEMVER_NUMBER_MAX)
		return ferror_set(FACTORY_ETOOBIG, "version number too large to bump");
	*out = v;
	return 0;
}

int semver_format(char *out, size_t len, const semver *v, const char *prefix)
{
	int n = snprintf(out, len, "%s%ld.%ld.%ld%s%s%s%s", prefix ? prefix : "", v->major, v->minor, v->patch,
	                 v->pre[0] ? "-" : "", v->pre, v->build[0] ? "+" : "", v->build);

	if (n < 0 || (size_t)n >= len) {
		if (len)
			out[0] = '\0';
		return ferror_set(FACTORY_ETOOBIG, "version does not fit in %zu bytes", len);
	}
	return 0;
}

const char *semver_change_name(semver_change c)
{
	switch (c) {
	case SEMVER_PATCH:
		return "patch";
	case SEMVER_MINOR:
		return "minor";
	case SEMVER_BREAKING:
		return "breaking";
	}
	return "?";
}
