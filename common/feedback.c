/* feedback.c - customer submissions: parse, validate, keep, render (see feedback.h). */
#include "feedback.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "error.h"
#include "untrusted.h"

#define EMAIL_MAX 254
#define URL_MAX 2048
#define VERSION_MAX 64
#define UA_MAX 512
#define VIEWPORT_MAX 32
#define LANGUAGE_MAX 35
#define CONSOLE_MAX 10
#define CONSOLE_LINE_MAX 1000
#define ISSUE_TITLE_MAX 255
#define DESCRIPTION_OUT_MAX ((size_t)1 << 20)

static const char *const kind_names[] = {"bug", "feature", "support", "feedback"};

const char *feedback_kind_name(feedback_kind k)
{
	return (unsigned)k < 4 ? kind_names[k] : "feedback";
}

void feedback_init(feedback *f)
{
	memset(f, 0, sizeof(*f));
	f->elapsed_ms = -1;
	f->kind = FEEDBACK_FEEDBACK;
}

void feedback_release(feedback *f)
{
	free(f->title);
	free(f->description);
	free(f->email);
	free(f->page_url);
	free(f->app_version);
	cJSON_Delete(f->context);
	feedback_init(f);
}

/* ---- text checks ---- */

/* Length of the valid UTF-8 sequence at `p` (strict: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
			return 0;
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

/* 1 if `s` (len bytes) is valid UTF-8; *chars_out (may be NULL) gets the
 * number of code points. */
static int utf8_valid(const char *s, size_t len, size_t *chars_out)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, chars = 0;

	while (i < len) {
		size_t n = utf8_seq(p + i, len - i);
		if (!n)
			return 0;
		i += n;
		chars++;
	}
	if (chars_out)
		*chars_out = chars;
	return 1;
}

/* Cut `s` in place to at most `max` bytes on a UTF-8 boundary. */
static void utf8_cut(char *s, size_t max)
{
	size_t len = strlen(s);

	if (len <= max)
		return;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	s[max] = '\0';
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* A trimmed copy of s[0..len); NULL on ENOMEM. */
static char *trim_dup(const char *s, size_t len)
{
	char *out;

	while (len && is_blank(*s)) {
		s++;
		len--;
	}
	while (len && is_blank(s[len - 1]))
		len--;
	out = malloc(len + 1);
	if (!out)
		return NULL;
	memcpy(out, s, len);
	out[len] = '\0';
	return out;
}

/* Copy with "\r\n" and lone "\r" turned into "\n"; NULL on ENOMEM. */
static char *newline_dup(const char *s)
{
	size_t len = strlen(s), i, o = 0;
	char *out = malloc(len + 1);

	if (!out)
		return NULL;
	for (i = 0; i < len; i++) {
		if (s[i] == '\r') {
			out[o++] = '\n';
			if (s[i + 1] == '\n')
				i++;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

static int has_control(const char *s, int allow_newlines)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t')))
			return 1;
		if (c == 0x7F)
			return 1;
	}
	return 0;
}

static int ascii_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int ascii_alnum(char c)
{
	return ascii_alpha(c) || (c >= '0' && c <= '9');
}

int feedback_email_valid(const char *email)
{
	const char *at, *p, *last_dot = NULL;
	size_t local_len, len;

	if (!email)
		return 0;
	len = strlen(email);
	at = strchr(email, '@');
	if (len > EMAIL_MAX || !at || strchr(at + 1, '@'))
		return 0;
	local_len = (size_t)(at - email);
	if (local_len < 1 || local_len > 64 || email[0] == '.' || at[-1] == '.')
		return 0;
	for (p = email; p < at; p++) {
		if (!(ascii_alnum(*p) || *p == '.' || *p == '_' || *p == '%' || *p == '+' || *p == '-'))
			return 0;
		if (*p == '.' && p[1] == '.')
			return 0;
	}
	p = at + 1;
	if (!*p || *p == '.' || *p == '-')
		return 0;
	for (; *p; p++) {
		if (*p == '.') {
			if (p[1] == '.' || p[1] == '\0' || p[1] == '-' || p[-1] == '-')
				return 0;
			last_dot = p;
		} else if (!(ascii_alnum(*p) || *p == '-')) {
			return 0;
		}
	}
	if (!last_dot || strlen(last_dot + 1) < 2)
		return 0;
	for (p = last_dot + 1; *p; p++) {
		if (!ascii_alpha(*p))
			return 0;
	}
	return 1;
}

/* ---- problems ---- */

static void problem_reset(feedback_problem *pr)
{
	memset(pr, 0, sizeof(*pr));
}

static int problem_set(feedback_problem *pr, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int problem_set(feedback_problem *pr, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	pr->status = status;
	pr->code = code;
	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(pr->message, sizeof(pr->message), fmt, ap);
	va_end(ap);
	return ferror_set(FACTORY_EINVALID, "%s", pr->message);
}

static void field_error(feedback_problem *pr, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void field_error(feedback_problem *pr, const char *field, const char *fmt, ...)
{
	va_list ap;
	int i;

	for (i = 0; i < pr->nfields; i++) {
		if (!strcmp(pr->fields[i].field, field))
			return; /* the first problem of a field is the one to fix */
	}
	if (pr->nfields >= FEEDBACK_MAX_FIELD_ERRORS)
		return;
	pr->fields[pr->nfields].field = field;
	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(pr->fields[pr->nfields].message, sizeof(pr->fields[0].message), fmt, ap);
	va_end(ap);
	pr->nfields++;
}

/* Append `o` to `out` as compact JSON and free it; `built` 0 means
 * building it ran out of memory. Returns 0, FACTORY_ENOMEM or fbuf's error. */
static int put_json(fbuf *out, cJSON *o, int built)
{
	char *s = built ? cJSON_PrintUnformatted(o) : NULL;
	int error = s ? fbuf_puts(out, s) : FACTORY_ENOMEM;

	if (error == FACTORY_ENOMEM)
		ferror_set(error, "out of memory");
	free(s);
	cJSON_Delete(o);
	return error;
}

int feedback_problem_json(fbuf *out, const feedback_problem *pr)
{
	cJSON *o = cJSON_CreateObject(), *fields = NULL;
	int i, built = 0;

	if (!o || !cJSON_AddStringToObject(o, "error", pr->code ? pr->code : "error") ||
	    !cJSON_AddStringToObject(o, "message", pr->message))
		goto cleanup;
	if (pr->nfields) {
		if (!(fields = cJSON_AddObjectToObject(o, "fields")))
			goto cleanup;
		for (i = 0; i < pr->nfields; i++) {
			if (!cJSON_AddStringToObject(fields, pr->fields[i].field, pr->fields[i].message))
				goto cleanup;
		}
	}
	built = 1;
cleanup:
	return put_json(out, o, built);
}

int feedback_problem_text(fbuf *out, const feedback_problem *pr)
{
	int i, error;

	if (!pr->nfields)
		return fbuf_puts(out, pr->message);
	for (i = 0; i < pr->nfields; i++) {
		if ((error = fbuf_printf(out, "%s%s: %s", i ? "; " : "", pr->fields[i].field, pr->fields[i].message)) < 0)
			return error;
	}
	return 0;
}

/* ---- validation ---- */

typedef struct {
	const char *kind, *title, *description, *email, *page_url, *app_version, *website;
	size_t kind_len, title_len, description_len, email_len, page_url_len, app_version_len, website_len;
	const cJSON *context_obj;   /* JSON: the object */
	const char *context_str;    /* form: JSON text */
	size_t context_len;
	int context_bad_type;
	const char *elapsed_str;    /* form */
	size_t elapsed_len;
	double elapsed_num;
	int elapsed_kind;           /* 0 absent, 1 number, 2 string, 3 bad type */
	int bad_type[8];            /* per string field: not a string */
} raw_fields;

enum { F_KIND, F_TITLE, F_DESCRIPTION, F_EMAIL, F_PAGE_URL, F_APP_VERSION, F_WEBSITE };
static const char *const field_names[] = {"kind", "title", "description", "email", "page_url", "app_version", "website"};

/* Check one optional or required string field and give back a trimmed copy
 * (NULL when absent or empty). */
static int take_string(char **out, feedback_problem *pr, int idx, const char *s, size_t len, int bad_type)
{
	const char *name = field_names[idx];

	*out = NULL;
	if (bad_type) {
		field_error(pr, name, "must be a string");
		return 0;
	}
	if (!s)
		return 0;
	if (memchr(s, '\0', len)) {
		field_error(pr, name, "must not contain NUL bytes");
		return 0;
	}
	if (!utf8_valid(s, len, NULL)) {
		field_error(pr, name, "is not valid UTF-8");
		return 0;
	}
	if (!(*out = trim_dup(s, len)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!**out) {
		free(*out);
		*out = NULL;
	}
	return 0;
}

static int keep_context(feedback *f, feedback_problem *pr, const cJSON *ctx)
{
	static const struct {
		const char *key;
		size_t max;
	} strings[] = {{"user_agent", UA_MAX}, {"viewport", VIEWPORT_MAX}, {"language", LANGUAGE_MAX}};
	const cJSON *v, *item;
	cJSON *kept = NULL, *errors = NULL;
	size_t i;
	int error = FACTORY_ENOMEM;

	if (!cJSON_IsObject(ctx)) {
		field_error(pr, "context", "must be a JSON object");
		return 0;
	}
	if (!(kept = cJSON_CreateObject()))
		goto cleanup;
	for (i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		char *copy;

		v = cJSON_GetObjectItemCaseSensitive(ctx, strings[i].key);
		if (!v || cJSON_IsNull(v))
			continue;
		if (!cJSON_IsString(v) || !utf8_valid(v->valuestring, strlen(v->valuestring), NULL)) {
			field_error(pr, "context", "%s must be a string", strings[i].key);
			continue;
		}
		if (!(copy = strdup(v->valuestring)))
			goto cleanup;
		utf8_cut(copy, strings[i].max);
		if (!cJSON_AddStringToObject(kept, strings[i].key, copy)) {
			free(copy);
			goto cleanup;
		}
		free(copy);
	}
	v = cJSON_GetObjectItemCaseSensitive(ctx, "console_errors");
	if (v && !cJSON_IsNull(v)) {
		int n = 0, total = cJSON_GetArraySize(v), skip;

		if (!cJSON_IsArray(v)) {
			field_error(pr, "context", "console_errors must be a list of strings");
		} else {
			if (!(errors = cJSON_CreateArray()))
				goto cleanup;
			skip = total > CONSOLE_MAX ? total - CONSOLE_MAX : 0; /* keep the last ones */
			cJSON_ArrayForEach(item, v) {
				char *copy;

				if (!cJSON_IsString(item) || !utf8_valid(item->valuestring, strlen(item->valuestring), NULL)) {
					field_error(pr, "context", "console_errors must be a list of strings");
					break;
				}
				if (skip > 0) {
					skip--;
					continue;
				}
				if (!(copy = strdup(item->valuestring)))
					goto cleanup;
				utf8_cut(copy, CONSOLE_LINE_MAX);
				if (!cJSON_AddItemToArray(errors, cJSON_CreateString(copy))) {
					free(copy);
					goto cleanup;
				}
				free(copy);
				n++;
			}
			if (n > 0) {
				cJSON_AddItemToObject(kept, "console_errors", errors);
				errors = NULL;
			}
		}
	}
	if (kept->child) {
		f->context = kept;
		kept = NULL;
	}
	error = 0;
cleanup:
	if (error)
		ferror_set(error, "out of memory");
	cJSON_Delete(kept);
	cJSON_Delete(errors);
	return error;
}

static int validate(feedback *f, feedback_problem *pr, const raw_fields *r)
{
	char *kind = NULL, *website = NULL, *desc = NULL;
	size_t chars;
	int error, i;

	if ((error = take_string(&kind, pr, F_KIND, r->kind, r->kind_len, r->bad_type[F_KIND])) < 0 ||
	    (error = take_string(&f->title, pr, F_TITLE, r->title, r->title_len, r->bad_type[F_TITLE])) < 0 ||
	    (error = take_string(&desc, pr, F_DESCRIPTION, r->description, r->description_len,
				 r->bad_type[F_DESCRIPTION])) < 0 ||
	    (error = take_string(&f->email, pr, F_EMAIL, r->email, r->email_len, r->bad_type[F_EMAIL])) < 0 ||
	    (error = take_string(&f->page_url, pr, F_PAGE_URL, r->page_url, r->page_url_len, r->bad_type[F_PAGE_URL])) < 0 ||
	    (error = take_string(&f->app_version, pr, F_APP_VERSION, r->app_version, r->app_version_len,
				 r->bad_type[F_APP_VERSION])) < 0 ||
	    (error = take_string(&website, pr, F_WEBSITE, r->website, r->website_len, 0)) < 0)
		goto cleanup;

	if (kind) {
		for (i = 0; i < 4; i++) {
			if (!strcmp(kind, kind_names[i]))
				break;
		}
		if (i == 4)
			field_error(pr, "kind", "must be one of bug, feature, support, feedback");
		else
			f->kind = (feedback_kind)i;
	} else if (!r->bad_type[F_KIND]) {
		field_error(pr, "kind", "is required (bug, feature, support or feedback)");
	}

	if (!f->title)
		field_error(pr, "title", "is required");
	else if (!utf8_valid(f->title, strlen(f->title), &chars) || chars > FEEDBACK_TITLE_MAX)
		field_error(pr, "title", "is too long (at most %d characters)", FEEDBACK_TITLE_MAX);
	else if (has_control(f->title, 1))
		field_error(pr, "title", "must not contain control characters");

	if (!desc) {
		field_error(pr, "description", "is required");
	} else {
		if (!(f->description = newline_dup(desc))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if (!utf8_valid(f->description, strlen(f->description), &chars) || chars > FEEDBACK_DESCRIPTION_MAX)
			field_error(pr, "description", "is too long (at most %d characters)", FEEDBACK_DESCRIPTION_MAX);
	}

	if (f->email && !feedback_email_valid(f->email))
		field_error(pr, "email", "is not an email address (like name@example.com)");

	if (f->page_url) {
		const char *u = f->page_url;
		if (strlen(u) > URL_MAX)
			field_error(pr, "page_url", "is too long (at most %d bytes)", URL_MAX);
		else if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
			field_error(pr, "page_url", "must be an http or https address");
		else if (has_control(u, 0) || strpbrk(u, " \t\n<>\"'`"))
			field_error(pr, "page_url", "must not contain spaces, quotes or angle brackets");
	}

	if (f->app_version) {
		if (!utf8_valid(f->app_version, strlen(f->app_version), &chars) || chars > VERSION_MAX)
			field_error(pr, "app_version", "is too long (at most %d characters)", VERSION_MAX);
		else if (has_control(f->app_version, 0))
			field_error(pr, "app_version", "must not contain control characters");
	}

	if (r->context_bad_type) {
		field_error(pr, "context", "must be a JSON object");
	} else if (r->context_obj) {
		if ((error = keep_context(f, pr, r->context_obj)) < 0)
			goto cleanup;
	} else if (r->context_str && r->context_len > 0) {
		cJSON *ctx;
		if (r->context_len > FEEDBACK_CONTEXT_MAX) {
			field_error(pr, "context", "is too large (at most %d bytes)", FEEDBACK_CONTEXT_MAX);
		} else if (!(ctx = cJSON_ParseWithLength(r->context_str, r->context_len))) {
			field_error(pr, "context", "is not valid JSON");
		} else {
			error = keep_context(f, pr, ctx);
			cJSON_Delete(ctx);
			if (error < 0)
				goto cleanup;
		}
	}

	if (r->elapsed_kind == 1) {
		if (r->elapsed_num < 0 || r->elapsed_num > 1e12)
			field_error(pr, "elapsed_ms", "must be a whole number of milliseconds");
		else
			f->elapsed_ms = (long)r->elapsed_num;
	} else if (r->elapsed_kind == 2) {
		char tmp[24], *end;
		long v;
		if (r->elapsed_len == 0 || r->elapsed_len >= sizeof(tmp)) {
			field_error(pr, "elapsed_ms", "must be a whole number of milliseconds");
		} else {
			memcpy(tmp, r->elapsed_str, r->elapsed_len);
			tmp[r->elapsed_len] = '\0';
			errno = 0;
			v = strtol(tmp, &end, 10);
			if (errno || *end || v < 0)
				field_error(pr, "elapsed_ms", "must be a whole number of milliseconds");
			else
				f->elapsed_ms = v;
		}
	} else if (r->elapsed_kind == 3) {
		field_error(pr, "elapsed_ms", "must be a whole number of milliseconds");
	}

	f->honeypot = website != NULL;
	if (pr->nfields) {
		error = problem_set(pr, 422, "validation_failed", "the submission has %d problem%s", pr->nfields,
				    pr->nfields == 1 ? "" : "s");
		goto cleanup;
	}
	error = 0;
cleanup:
	free(kind);
	free(website);
	free(desc);
	return error;
}

/* ---- JSON bodies ---- */

static void json_field(raw_fields *r, int idx, const cJSON *o, const char **s, size_t *len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field_names[idx]);

	if (!v || cJSON_IsNull(v))
		return;
	if (!cJSON_IsString(v)) {
		r->bad_type[idx] = 1;
		return;
	}
	*s = v->valuestring;
	*len = strlen(v->valuestring);
}

static int parse_json(feedback *f, feedback_problem *pr, const char *body, size_t len)
{
	const char *end = NULL;
	cJSON *o;
	const cJSON *v;
	raw_fields r;
	int error;

	memset(&r, 0, sizeof(r));
	o = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!o)
		return problem_set(pr, 400, "malformed_json", "the body is not valid JSON");
	while (end && end < body + len && is_blank(*end))
		end++;
	if (end && end < body + len && *end != '\0') {
		cJSON_Delete(o);
		return problem_set(pr, 400, "malformed_json", "the body has data after the JSON value");
	}
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return problem_set(pr, 400, "malformed_json", "the body must be a JSON object");
	}
	json_field(&r, F_KIND, o, &r.kind, &r.kind_len);
	json_field(&r, F_TITLE, o, &r.title, &r.title_len);
	json_field(&r, F_DESCRIPTION, o, &r.description, &r.description_len);
	json_field(&r, F_EMAIL, o, &r.email, &r.email_len);
	json_field(&r, F_PAGE_URL, o, &r.page_url, &r.page_url_len);
	json_field(&r, F_APP_VERSION, o, &r.app_version, &r.app_version_len);
	v = cJSON_GetObjectItemCaseSensitive(o, "website");
	if (v && !cJSON_IsNull(v)) {
		if (cJSON_IsString(v)) {
			r.website = v->valuestring;
			r.website_len = strlen(v->valuestring);
		} else if (!cJSON_IsFalse(v)) {
			r.website = "x"; /* anything filled in counts */
			r.website_len = 1;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "context");
	if (v && !cJSON_IsNull(v)) {
		if (cJSON_IsObject(v)) {
			char *printed = cJSON_PrintUnformatted(v);
			if (!printed) {
				cJSON_Delete(o);
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			}
			if (strlen(printed) > FEEDBACK_CONTEXT_MAX)
				field_error(pr, "context", "is too large (at most %d bytes)", FEEDBACK_CONTEXT_MAX);
			else
				r.context_obj = v;
			free(printed);
		} else if (cJSON_IsString(v)) {
			r.context_str = v->valuestring;
			r.context_len = strlen(v->valuestring);
		} else {
			r.context_bad_type = 1;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "elapsed_ms");
	if (v && !cJSON_IsNull(v)) {
		if (cJSON_IsNumber(v)) {
			r.elapsed_kind = 1;
			r.elapsed_num = v->valuedouble;
		} else if (cJSON_IsString(v)) {
			r.elapsed_kind = 2;
			r.elapsed_str = v->valuestring;
			r.elapsed_len = strlen(v->valuestring);
		} else {
			r.elapsed_kind = 3;
		}
	}
	error = validate(f, pr, &r);
	cJSON_Delete(o);
	return error;
}

/* ---- form bodies ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode one application/x-www-form-urlencoded component into `out`
 * (which has room for len + 1). Returns the decoded length, or -1 on a bad
 * percent escape. */
static long form_decode(char *out, const char *in, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		if (in[i] == '+') {
			out[o++] = ' ';
		} else if (in[i] == '%') {
			int hi, lo;
			if (i + 2 >= len)
				return -1;
			hi = hexval(in[i + 1]);
			lo = hexval(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
	return (long)o;
}

static int parse_form(feedback *f, feedback_problem *pr, const char *body, size_t len)
{
	static const char *const extra_names[] = {"context", "elapsed_ms"};
	char *copy = NULL;       /* all decoded values, back to back */
	size_t used = 0, pos = 0;
	raw_fields r;
	int error;

	memset(&r, 0, sizeof(r));
	copy = malloc(len + 1 + 16);
	if (!copy)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	while (pos < len) {
		const char *pair = body + pos, *amp = memchr(pair, '&', len - pos), *eq;
		size_t plen = amp ? (size_t)(amp - pair) : len - pos;
		char key[32];
		long klen, vlen;
		char *val;
		int i, matched = 0;

		pos += plen + 1;
		if (plen == 0)
			continue;
		eq = memchr(pair, '=', plen);
		if (!eq || (size_t)(eq - pair) >= sizeof(key)) {
			/* a key without value, or a key too long to be one of ours: check the escapes only */
			char *tmp = malloc(plen + 1);
			long d;
			if (!tmp) {
				error = ferror_set(FACTORY_ENOMEM, "out of memory");
				goto cleanup;
			}
			d = form_decode(tmp, pair, plen);
			free(tmp);
			if (d < 0) {
				error = problem_set(pr, 400, "malformed_form", "the form body has a bad %% escape");
				goto cleanup;
			}
			continue;
		}
		klen = form_decode(key, pair, (size_t)(eq - pair));
		val = copy + used;
		vlen = form_decode(val, eq + 1, plen - (size_t)(eq - pair) - 1);
		if (klen < 0 || vlen < 0) {
			error = problem_set(pr, 400, "malformed_form", "the form body has a bad %% escape");
			goto cleanup;
		}
		used += (size_t)vlen + 1;
		for (i = 0; i <= F_WEBSITE && !matched; i++) {
			if (strcmp(key, field_names[i]) != 0)
				continue;
			matched = 1;
			switch (i) {
			case F_KIND: if (!r.kind) { r.kind = val; r.kind_len = (size_t)vlen; } break;
			case F_TITLE: if (!r.title) { r.title = val; r.title_len = (size_t)vlen; } break;
			case F_DESCRIPTION: if (!r.description) { r.description = val; r.description_len = (size_t)vlen; } break;
			case F_EMAIL: if (!r.email) { r.email = val; r.email_len = (size_t)vlen; } break;
			case F_PAGE_URL: if (!r.page_url) { r.page_url = val; r.page_url_len = (size_t)vlen; } break;
			case F_APP_VERSION: if (!r.app_version) { r.app_version = val; r.app_version_len = (size_t)vlen; } break;
			case F_WEBSITE: if (!r.website) { r.website = val; r.website_len = (size_t)vlen; } break;
			}
		}
		if (!matched && !strcmp(key, extra_names[0]) && !r.context_str) {
			r.context_str = val;
			r.context_len = (size_t)vlen;
		} else if (!matched && !strcmp(key, extra_names[1]) && !r.elapsed_kind) {
			r.elapsed_kind = 2;
			r.elapsed_str = val;
			r.elapsed_len = (size_t)vlen;
		}
	}
	if (r.context_str && memchr(r.context_str, '\0', r.context_len))
		field_error(pr, "context", "must not contain NUL bytes");
	else if (r.context_str && !utf8_valid(r.context_str, r.context_len, NULL))
		field_error(pr, "context", "is not valid UTF-8");
	error = validate(f, pr, &r);
cleanup:
	free(copy);
	return error;
}

/* The media type of a Content-Type header, lowercased, without parameters. */
static void media_type(char *out, size_t len, const char *ct)
{
	size_t i = 0;

	while (*ct == ' ')
		ct++;
	while (*ct && *ct != ';' && *ct != ' ' && i + 1 < len)
		out[i++] = (char)tolower((unsigned char)*ct++);
	out[i] = '\0';
}

int feedback_parse(feedback *out, feedback_problem *pr, const char *content_type, const char *body, size_t len)
{
	char mt[64];

	feedback_init(out);
	problem_reset(pr);
	media_type(mt, sizeof(mt), content_type ? content_type : "application/json");
	if (strcmp(mt, "application/json") != 0 && strcmp(mt, "application/x-www-form-urlencoded") != 0)
		return problem_set(pr, 415, "unsupported_media_type",
				   "send application/json or application/x-www-form-urlencoded, not %s",
				   *mt ? mt : "an empty Content-Type");
	if (len == 0)
		return problem_set(pr, 400, !strcmp(mt, "application/json") ? "malformed_json" : "malformed_form",
				   "the body is empty");
	if (!utf8_valid(body, len, NULL))
		return problem_set(pr, 400, "invalid_utf8", "the body is not valid UTF-8");
	if (!strcmp(mt, "application/json"))
		return parse_json(out, pr, body, len);
	return parse_form(out, pr, body, len);
}

int feedback_from_fields(feedback *out, feedback_problem *pr, const char *kind, const char *title,
			 const char *description, const char *email, const char *page_url, const char *app_version)
{
	raw_fields r;

	feedback_init(out);
	problem_reset(pr);
	memset(&r, 0, sizeof(r));
#define SET(f, v)                                 \
	do {                                      \
		if (v) {                          \
			r.f = v;                  \
			r.f##_len = strlen(v);    \
		}                                 \
	} while (0)
	SET(kind, kind);
	SET(title, title);
	SET(description, description);
	SET(email, email);
	SET(page_url, page_url);
	SET(app_version, app_version);
#undef SET
	return validate(out, pr, &r);
}

/* ---- ids and the spool form ---- */

int feedback_new_id(feedback *f)
{
	unsigned char rnd[12];
	size_t got = 0;
	int i;

	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ferror_set(FACTORY_ERR, "cannot get random bytes: %s", strerror(errno));
		}
		got += (size_t)n;
	}
	memcpy(f->id, "fi-", 3);
	for (i = 0; i < 12; i++)
		snprintf(f->id + 3 + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

static int id_valid(const char *id)
{
	int i;

	if (strlen(id) != FEEDBACK_ID_LEN || strncmp(id, "fi-", 3) != 0)
		return 0;
	for (i = 3; i < FEEDBACK_ID_LEN; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	}
	return 1;
}

int feedback_to_json(fbuf *out, const feedback *f)
{
	cJSON *o = cJSON_CreateObject();
	int built = 0;

	if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", f->id) ||
	    !cJSON_AddStringToObject(o, "kind", feedback_kind_name(f->kind)) ||
	    !cJSON_AddStringToObject(o, "title", f->title ? f->title : "") ||
	    !cJSON_AddStringToObject(o, "description", f->description ? f->description : "") ||
	    (f->email && !cJSON_AddStringToObject(o, "email", f->email)) ||
	    (f->page_url && !cJSON_AddStringToObject(o, "page_url", f->page_url)) ||
	    (f->app_version && !cJSON_AddStringToObject(o, "app_version", f->app_version)) ||
	    !cJSON_AddNumberToObject(o, "received_ms", (double)f->received_ms) ||
	    (f->source[0] && !cJSON_AddStringToObject(o, "source", f->source)) ||
	    (f->fold[0] && !cJSON_AddStringToObject(o, "fold", f->fold)))
		goto cleanup;
	if (f->context) {
		cJSON *c = cJSON_Duplicate(f->context, 1);
		if (!c)
			goto cleanup;
		cJSON_AddItemToObject(o, "context", c);
	}
	built = 1;
cleanup:
	return put_json(out, o, built);
}

int feedback_from_json(feedback *out, const char *json, size_t len)
{
	feedback_problem pr;
	cJSON *o = cJSON_ParseWithLength(json, len);
	const cJSON *id, *ctx, *at;
	raw_fields r;
	int error;

	feedback_init(out);
	problem_reset(&pr);
	memset(&r, 0, sizeof(r));
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return ferror_set(FACTORY_EINVALID, "spooled submission is not a JSON object");
	}
	id = cJSON_GetObjectItemCaseSensitive(o, "id");
	if (!cJSON_IsString(id) || !id_valid(id->valuestring)) {
		cJSON_Delete(o);
		return ferror_set(FACTORY_EINVALID, "spooled submission has no valid id");
	}
	json_field(&r, F_KIND, o, &r.kind, &r.kind_len);
	json_field(&r, F_TITLE, o, &r.title, &r.title_len);
	json_field(&r, F_DESCRIPTION, o, &r.description, &r.description_len);
	json_field(&r, F_EMAIL, o, &r.email, &r.email_len);
	json_field(&r, F_PAGE_URL, o, &r.page_url, &r.page_url_len);
	json_field(&r, F_APP_VERSION, o, &r.app_version, &r.app_version_len);
	ctx = cJSON_GetObjectItemCaseSensitive(o, "context");
	if (cJSON_IsObject(ctx))
		r.context_obj = ctx;
	error = validate(out, &pr, &r);
	if (error == FACTORY_EINVALID) {
		fbuf msg;
		fbuf_init(&msg, 1024);
		feedback_problem_text(&msg, &pr);
		error = ferror_set(FACTORY_EINVALID, "spooled submission %s is invalid: %s", id->valuestring,
				   fbuf_cstr(&msg));
		fbuf_release(&msg);
	}
	if (!error) {
		memcpy(out->id, id->valuestring, FEEDBACK_ID_LEN + 1);
		at = cJSON_GetObjectItemCaseSensitive(o, "received_ms");
		if (cJSON_IsNumber(at))
			out->received_ms = (long long)at->valuedouble;
		at = cJSON_GetObjectItemCaseSensitive(o, "source");
		if (cJSON_IsString(at) && (!strcmp(at->valuestring, "customer") || !strcmp(at->valuestring, "internal") ||
					   !strcmp(at->valuestring, "factory")))
			snprintf(out->source, sizeof(out->source), "%s", at->valuestring);
		at = cJSON_GetObjectItemCaseSensitive(o, "fold");
		if (cJSON_IsString(at) && strlen(at->valuestring) == FEEDBACK_FOLD_LEN &&
		    strspn(at->valuestring, "0123456789abcdef") == FEEDBACK_FOLD_LEN)
			memcpy(out->fold, at->valuestring, FEEDBACK_FOLD_LEN + 1);
	}
	cJSON_Delete(o);
	return error;
}

/* ---- rendering ---- */

int feedback_issue_marker(fbuf *out, const char *id)
{
	return fbuf_printf(out, "<!-- factory-intake submission=%s -->", id);
}

/* Whether `text` holds `before`, the valid submission id `id`, then `after`. */
static int has_marker(const char *text, const char *before, const char *id, const char *after)
{
	char want[128];

	if (!text || !id_valid(id))
		return 0;
	snprintf(want, sizeof(want), "%s%s%s", before, id, after);
	return strstr(text, want) != NULL;
}

int feedback_has_issue_marker(const char *text, const char *id)
{
	return has_marker(text, "<!-- factory-intake submission=", id, " -->");
}

int feedback_has_reporter_marker(const char *text, const char *id)
{
	return has_marker(text, "<!-- factory-intake reporter submission=", id, " email=");
}

/* One line of context: "- **label:** value" with the value made one safe line. */
static int context_line(fbuf *out, const char *label, const char *value, size_t max)
{
	int error;

	if (!value || !*value)
		return 0;
	if ((error = fbuf_printf(out, "- **%s:** ", label)) < 0 ||
	    (error = untrusted_title(out, value, strlen(value), max)) < 0)
		return error;
	return fbuf_putc(out, '\n');
}

static size_t longest_run(const char *s, char c)
{
	size_t best = 0, run = 0;

	for (; *s; s++) {
		run = *s == c ? run + 1 : 0;
		if (run > best)
			best = run;
	}
	return best;
}

static int put_repeat(fbuf *out, char c, size_t n)
{
	int error = 0;

	while (n-- && !error)
		error = fbuf_putc(out, c);
	return error;
}

int feedback_issue_fields(cJSON **out, const feedback *f)
{
	fbuf title, desc, errs;
	cJSON *o = NULL;
	const cJSON *ctx = f->context, *ce, *item;
	char labels[64];
	int error;

	*out = NULL;
	fbuf_init(&title, 4096);
	fbuf_init(&desc, DESCRIPTION_OUT_MAX);
	fbuf_init(&errs, 64 * 1024);
	if ((error = untrusted_title(&title, f->title ? f->title : "", f->title ? strlen(f->title) : 0, ISSUE_TITLE_MAX)) < 0)
		goto cleanup;
	if (!title.len && (error = fbuf_puts(&title, "Feedback")) < 0)
		goto cleanup;
	if (f->description && (error = untrusted_clean(&desc, f->description, strlen(f->description))) < 0)
		goto cleanup;
	if ((error = fbuf_printf(&desc, "\n\n---\n\n**From the feedback form** (%s, submission `%s`)\n\n",
				 feedback_kind_name(f->kind), f->id)) < 0)
		goto cleanup;
	if ((error = context_line(&desc, "Page", f->page_url, URL_MAX)) < 0 ||
	    (error = context_line(&desc, "App version", f->app_version, VERSION_MAX * 4)) < 0)
		goto cleanup;
	if (ctx) {
		const cJSON *ua = cJSON_GetObjectItemCaseSensitive(ctx, "user_agent");
		const cJSON *vp = cJSON_GetObjectItemCaseSensitive(ctx, "viewport");
		const cJSON *lang = cJSON_GetObjectItemCaseSensitive(ctx, "language");

		if ((error = context_line(&desc, "Browser", cJSON_IsString(ua) ? ua->valuestring : NULL, UA_MAX)) < 0 ||
		    (error = context_line(&desc, "Viewport", cJSON_IsString(vp) ? vp->valuestring : NULL, VIEWPORT_MAX)) < 0 ||
		    (error = context_line(&desc, "Language", cJSON_IsString(lang) ? lang->valuestring : NULL, LANGUAGE_MAX)) < 0)
			goto cleanup;
		ce = cJSON_GetObjectItemCaseSensitive(ctx, "console_errors");
		if (cJSON_IsArray(ce) && cJSON_GetArraySize(ce) > 0) {
			size_t fence;
			cJSON_ArrayForEach(item, ce) {
				if (!cJSON_IsString(item))
					continue;
				if ((error = untrusted_clean(&errs, item->valuestring, strlen(item->valuestring))) < 0 ||
				    (error = fbuf_putc(&errs, '\n')) < 0)
					goto cleanup;
			}
			fence = longest_run(fbuf_cstr(&errs), '`') + 1;
			if (fence < 3)
				fence = 3;
			if ((error = fbuf_printf(&desc, "\n<details><summary>Recent console errors (%d)</summary>\n\n",
						 cJSON_GetArraySize(ce))) < 0 ||
			    (error = put_repeat(&desc, '`', fence)) < 0 || (error = fbuf_putc(&desc, '\n')) < 0 ||
			    (error = fbuf_put(&desc, errs.ptr, errs.len)) < 0 || (error = put_repeat(&desc, '`', fence)) < 0 ||
			    (error = fbuf_puts(&desc, "\n\n</details>\n")) < 0)
				goto cleanup;
		}
	}
	if ((error = fbuf_putc(&desc, '\n')) < 0 || (error = feedback_issue_marker(&desc, f->id)) < 0 ||
	    (error = fbuf_putc(&desc, '\n')) < 0)
		goto cleanup;
	snprintf(labels, sizeof(labels), "source::%s,type::%s", f->source[0] ? f->source : "customer",
		 feedback_kind_name(f->kind));
	if (!(o = cJSON_CreateObject()) || !cJSON_AddStringToObject(o, "title", fbuf_cstr(&title)) ||
	    !cJSON_AddStringToObject(o, "description", fbuf_cstr(&desc)) || !cJSON_AddStringToObject(o, "labels", labels)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	*out = o;
	o = NULL;
	error = 0;
cleanup:
	cJSON_Delete(o);
	fbuf_release(&title);
	fbuf_release(&desc);
	fbuf_release(&errs);
	return error;
}

int feedback_reporter_note(fbuf *out, const feedback *f)
{
	if (!f->email || !feedback_email_valid(f->email))
		return ferror_set(FACTORY_ENOTFOUND, "submission %s has no email", f->id);
	return fbuf_printf(out,
			   "<!-- factory-intake reporter submission=%s email=%s -->\n"
			   "Reporter's email (internal note, not shown to the customer; the release job uses it to "
			   "tell them when this ships): `%s`\n",
			   f->id, f->email, f->email);
}

int feedback_find_reporter(char *id_out, char *email_out, size_t email_len, const char *body)
{
	static const char prefix[] = "<!-- factory-intake reporter submission=";
	const char *line = body;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);

		if (llen > sizeof(prefix) - 1 && !strncmp(line, prefix, sizeof(prefix) - 1)) {
			const char *p = line + sizeof(prefix) - 1, *end = line + llen;
			char id[FEEDBACK_ID_LEN + 1], email[EMAIL_MAX + 1];
			const char *e, *close;

			if ((size_t)(end - p) > FEEDBACK_ID_LEN && p[FEEDBACK_ID_LEN] == ' ') {
				memcpy(id, p, FEEDBACK_ID_LEN);
				id[FEEDBACK_ID_LEN] = '\0';
				e = p + FEEDBACK_ID_LEN + 1;
				close = NULL;
				if (!strncmp(e, "email=", 6)) {
					e += 6;
					close = e;
					while (close < end && *close != ' ')
						close++;
				}
				if (close && (size_t)(close - e) <= EMAIL_MAX && end - close >= 4 &&
				    !strncmp(close, " -->", 4) && id_valid(id)) {
					memcpy(email, e, (size_t)(close - e));
					email[close - e] = '\0';
					if (feedback_email_valid(email) && strlen(email) < email_len) {
						memcpy(id_out, id, FEEDBACK_ID_LEN + 1);
						memcpy(email_out, email, strlen(email) + 1);
						return 0;
					}
				}
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	return ferror_set(FACTORY_ENOTFOUND, "no reporter marker");
}
