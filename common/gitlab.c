/*
 * gitlab.c - GitLab REST API v4 over http.h and cJSON: URLs, the token,
 * JSON answers checked for shape, errors in GitLab's own words, pagination
 * (offset and keyset), dry run, and the resource wrappers.
 */
#include "gitlab.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "error.h"
#include "log.h"

#define MAX_PATH_LEN ((size_t)8 << 10)
#define MAX_URL_LEN ((size_t)32 << 10)
#define MAX_LINK_HEADER ((size_t)32 << 10)
#define MAX_MESSAGE 300       /* bytes of GitLab's message kept in an error */
#define MAX_TEXT_MESSAGE 200  /* bytes of a plain-text body kept in an error */
#define MAX_DRY_RUN_BODY 2000 /* bytes of a dry-run body shown in the log */
#define MAX_LABEL_LEN 255

struct gitlab {
	http_client *http;
	char *api_url;      /* without trailing slash */
	char *project;      /* as given, or NULL */
	char *project_esc;  /* escaped for paths, or NULL */
	char *token_header; /* "PRIVATE-TOKEN: <token>", wiped on free */
	int dry_run;
	long last_status;
	gitlab_stats stats;
	long note_interval_ms;  /* note spacing (gitlab.h), 0: none */
	long long last_note;    /* monotonic ms of the last note sent, 0: none yet */
	long issue_interval_ms; /* issue spacing (gitlab.h), 0: none */
	long long last_issue;   /* monotonic ms of the last issue created, 0: none yet */
};

/* One call as the layer below sees it. */
typedef struct {
	const char *method;
	const char *path; /* as the caller wrote it, for messages */
	const char *url;  /* absolute */
	const char *body; /* JSON text or NULL */
	http_sink_fn sink;
	void *sink_ctx;
	int raw; /* any content type is welcome (job traces) */
} gl_call;

static int is_write(const char *method)
{
	return strcasecmp(method, "GET") != 0 && strcasecmp(method, "HEAD") != 0;
}

/* ---- client ---- */

void gitlab_options_init(gitlab_options *o)
{
	memset(o, 0, sizeof(*o));
	http_options_init(&o->http);
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void gitlab_free(gitlab *gl)
{
	if (!gl)
		return;
	http_client_free(gl->http);
	free(gl->api_url);
	free(gl->project);
	free(gl->project_esc);
	wipe_free(gl->token_header);
	free(gl);
}

/* The project and its escaped form for paths (digits stay as they are),
 * both new strings into *raw and *esc; NULLs for no project. */
static int project_strings(char **raw, char **esc, const char *project)
{
	fbuf b;
	const char *p;
	int error;

	*raw = *esc = NULL;
	if (!project || !*project)
		return 0;
	fbuf_init(&b, 4096);
	for (p = project; isdigit((unsigned char)*p); p++)
		;
	if (*p) {
		if ((error = http_escape(&b, project)) < 0) {
			fbuf_release(&b);
			return error;
		}
		*esc = fbuf_detach(&b);
	} else {
		*esc = strdup(project);
	}
	fbuf_release(&b);
	if (!*esc || !(*raw = strdup(project))) {
		free(*esc);
		*esc = NULL;
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

int gitlab_set_project(gitlab *gl, const char *project)
{
	char *raw, *esc;
	int error;

	if ((error = project_strings(&raw, &esc, project)) < 0)
		return error;
	free(gl->project);
	free(gl->project_esc);
	gl->project = raw;
	gl->project_esc = esc;
	return 0;
}

int gitlab_new(gitlab **out, const gitlab_options *opts)
{
	gitlab *gl = NULL;
	size_t len, tlen, i;
	int error = -1;

	*out = NULL;
	if (!opts || !opts->api_url || !*opts->api_url) {
		error = ferror_set(FACTORY_ECONFIG, "missing GitLab API url");
		goto cleanup;
	}
	if (strncmp(opts->api_url, "http://", 7) != 0 && strncmp(opts->api_url, "https://", 8) != 0) {
		error = ferror_set(FACTORY_ECONFIG, "bad GitLab API url %s: expected http:// or https://",
		                   opts->api_url);
		goto cleanup;
	}
	if (!opts->token || !*opts->token) {
		error = ferror_set(FACTORY_ECONFIG, "missing GitLab token");
		goto cleanup;
	}
	tlen = strlen(opts->token);
	for (i = 0; i < tlen; i++) {
		if (iscntrl((unsigned char)opts->token[i]) || opts->token[i] == ' ') {
			error = ferror_set(FACTORY_ECONFIG,
			                   "bad GitLab token: it contains spaces or control characters");
			goto cleanup;
		}
	}
	if ((error = log_add_secret(opts->token)) < 0)
		goto cleanup;
	if (!(gl = calloc(1, sizeof(*gl))))
		goto oom;
	gl->stats.ratelimit_remaining = -1;
	gl->stats.ratelimit_limit = -1;
	len = strlen(opts->api_url);
	while (len > 0 && opts->api_url[len - 1] == '/')
		len--;
	if (!(gl->api_url = strndup(opts->api_url, len)))
		goto oom;
	if ((error = project_strings(&gl->project, &gl->project_esc, opts->project)) < 0)
		goto cleanup;
	if (!(gl->token_header = malloc(sizeof("PRIVATE-TOKEN: ") + tlen)))
		goto oom;
	memcpy(gl->token_header, "PRIVATE-TOKEN: ", sizeof("PRIVATE-TOKEN: ") - 1);
	memcpy(gl->token_header + sizeof("PRIVATE-TOKEN: ") - 1, opts->token, tlen + 1);
	gl->dry_run = opts->dry_run;
	if (opts->notes_per_minute > 0)
		gl->note_interval_ms = (60000L + opts->notes_per_minute - 1) / opts->notes_per_minute;
	if (opts->issues_per_minute > 0)
		gl->issue_interval_ms = (60000L + opts->issues_per_minute - 1) / opts->issues_per_minute;
	if ((error = http_client_new(&gl->http, &opts->http)) < 0)
		goto cleanup;
	*out = gl;
	gl = NULL;
	error = 0;
	goto cleanup;
oom:
	error = ferror_set(FACTORY_ENOMEM, "out of memory");
cleanup:
	gitlab_free(gl);
	return error;
}

const char *gitlab_project(const gitlab *gl)
{
	return gl->project;
}

int gitlab_dry_run(const gitlab *gl)
{
	return gl->dry_run;
}

void gitlab_get_stats(gitlab_stats *out, const gitlab *gl)
{
	*out = gl->stats;
}

long gitlab_last_status(const gitlab *gl)
{
	return gl->last_status;
}

/* ---- URLs ---- */

/* api_url + "/" + path, with each ":id" path segment replaced by the
 * escaped project. */
static int build_url(fbuf *url, const gitlab *gl, const char *path)
{
	const char *p;
	int error;

	while (*path == '/')
		path++;
	if ((error = fbuf_puts(url, gl->api_url)) < 0 || (error = fbuf_putc(url, '/')) < 0)
		return error;
	for (p = path; *p;) {
		if ((p == path || p[-1] == '/') && !strncmp(p, ":id", 3) &&
		    (p[3] == '\0' || p[3] == '/' || p[3] == '?')) {
			if (!gl->project_esc)
				return ferror_set(FACTORY_ECONFIG,
				                  "%s: no project configured (set FACTORY_PROJECT or "
				                  "CI_PROJECT_ID)",
				                  path);
			if ((error = fbuf_puts(url, gl->project_esc)) < 0)
				return error;
			p += 3;
			continue;
		}
		if ((error = fbuf_putc(url, *p++)) < 0)
			return error;
	}
	return 0;
}

/* ---- messages ---- */

/* Reason phrases for the statuses GitLab and its proxies send. */
static const struct {
	long status;
	const char *phrase;
} phrases[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {412, "Precondition Failed"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Entity"},
        {423, "Locked"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
};

static const char *reason_phrase(long s)
{
	size_t i;

	for (i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
		if (phrases[i].status == s)
			return phrases[i].phrase;
	return "";
}

static int status_to_code(long s)
{
	if (s == 400 || s == 422)
		return FACTORY_EINVALID;
	if (s == 401 || s == 403)
		return FACTORY_EAUTH;
	if (s == 404)
		return FACTORY_ENOTFOUND;
	if (s == 409)
		return FACTORY_ECONFLICT;
	if (s == 413)
		return FACTORY_ETOOBIG;
	if (s == 429 || s >= 500)
		return FACTORY_EUPSTREAM;
	return FACTORY_ERR;
}

/* "404 Not Found", or "418" when we know no phrase. */
static void status_words(char *out, size_t len, long s)
{
	const char *r = reason_phrase(s);
	snprintf(out, len, "%ld%s%s", s, *r ? " " : "", r);
}

/* Skip leading white space in [p, end). */
static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && isspace((unsigned char)*p))
		p++;
	return p;
}

static const char *find_ci(const char *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle), i;

	for (i = 0; i + n <= len; i++)
		if (!strncasecmp(hay + i, needle, n))
			return hay + i;
	return NULL;
}

static int looks_like_html(const char *body, size_t len)
{
	const char *p = skip_ws(body, body + len);
	size_t left = len - (size_t)(p - body);

	if (!left || *p != '<')
		return 0;
	left = left > 1024 ? 1024 : left;
	return find_ci(p, left, "<!doctype html") || find_ci(p, left, "<html") || find_ci(p, left, "<head") ||
	       find_ci(p, left, "<body") || find_ci(p, left, "<title");
}

/*
 * Make `in` fit in one line of at most `max` bytes: the text is masked
 * first (so a secret cut in two cannot slip through), control characters
 * become spaces, runs of spaces shrink to one, and a cut never splits a
 * UTF-8 sequence. Appends to `out`.
 */
static int one_line(fbuf *out, const char *in, size_t len, size_t max)
{
	fbuf masked;
	size_t i, kept = 0;
	int error, space = 0;

	fbuf_init(&masked, 0);
	if (len > 4096)
		len = 4096;
	if ((error = log_mask(&masked, in, len)) < 0)
		goto cleanup;
	for (i = 0; i < masked.len; i++) {
		unsigned char ch = (unsigned char)masked.ptr[i];
		if (ch < 0x20 || ch == 0x7f || ch == ' ') {
			space = kept > 0;
			continue;
		}
		if (kept >= max && (ch & 0xc0) != 0x80) {
			if ((error = fbuf_puts(out, "...")) < 0)
				goto cleanup;
			break;
		}
		if (space) {
			if ((error = fbuf_putc(out, ' ')) < 0)
				goto cleanup;
			space = 0;
			kept++;
		}
		if ((error = fbuf_putc(out, (char)ch)) < 0)
			goto cleanup;
		kept++;
	}
	error = 0;
cleanup:
	fbuf_release(&masked);
	return error;
}

/* Flatten GitLab's `message`: a string, or an object of arrays such as
 * {"color": ["must be a valid color code"]}, into "color must be a valid
 * color code", pieces joined by ", ". Rails' "base" key is not named. */
static int flatten(fbuf *out, const cJSON *node, const char *prefix)
{
	const cJSON *child;
	char num[64];
	int error = 0;

	if (out->len >= 4 * MAX_MESSAGE)
		return 0;
	if (cJSON_IsString(node) || cJSON_IsNumber(node) || cJSON_IsBool(node)) {
		if (out->len && (error = fbuf_puts(out, ", ")) < 0)
			return error;
		if (prefix && (error = fbuf_printf(out, "%s ", prefix)) < 0)
			return error;
		if (cJSON_IsString(node))
			return fbuf_puts(out, node->valuestring);
		if (cJSON_IsBool(node))
			return fbuf_puts(out, cJSON_IsTrue(node) ? "true" : "false");
		snprintf(num, sizeof(num), "%g", node->valuedouble);
		return fbuf_puts(out, num);
	}
	if (cJSON_IsArray(node)) {
		cJSON_ArrayForEach(child, node) if ((error = flatten(out, child, prefix)) < 0) return error;
		return 0;
	}
	if (cJSON_IsObject(node)) {
		cJSON_ArrayForEach(child, node)
		{
			fbuf key;
			const char *k = child->string && strcmp(child->string, "base") != 0 ? child->string : NULL;

			fbuf_init(&key, 1024);
			if (prefix && k)
				error = fbuf_printf(&key, "%s %s", prefix, k);
			else if (prefix || k)
				error = fbuf_puts(&key, prefix ? prefix : k);
			if (!error)
				error = flatten(out, child, key.len ? key.ptr : NULL);
			fbuf_release(&key);
			if (error < 0)
				return error;
		}
	}
	return 0;
}

/* The <title> of an HTML page, or "". */
static void html_title(fbuf *out, const char *body, size_t len)
{
	const char *t = find_ci(body, len > 65536 ? 65536 : len, "<title"), *s, *e;

	if (!t)
		return;
	s = memchr(t, '>', len - (size_t)(t - body));
	if (!s)
		return;
	s++;
	e = find_ci(s, len - (size_t)(s - body), "</title");
	if (!e)
		return;
	one_line(out, s, (size_t)(e - s), 100);
}

/* GitLab's own words for a failed call, from the body: `message`, `error`
 * (+ `error_description`), the title of an HTML page, or the plain text. */
static int gitlab_words(fbuf *out, const http_response *r)
{
	const char *body = r->body.ptr;
	size_t len = r->body.len;
	const char *p;
	cJSON *json = NULL;
	fbuf flat;
	int error = 0;

	fbuf_init(&flat, 0);
	if (!body || !len)
		goto cleanup;
	p = skip_ws(body, body + len);
	if (p < body + len && (*p == '{' || *p == '[') &&
	    (json = cJSON_ParseWithLengthOpts(body, len, NULL, 0)) != NULL) {
		const cJSON *m = cJSON_IsObject(json) ? cJSON_GetObjectItemCaseSensitive(json, "message") : json;
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(json, "error");
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(json, "error_description");

		if (m && !cJSON_IsNull(m))
			error = flatten(&flat, m, NULL);
		else if (cJSON_IsString(e) && cJSON_IsString(d))
			error = fbuf_printf(&flat, "%s: %s", e->valuestring, d->valuestring);
		else if (e && !cJSON_IsNull(e))
			error = flatten(&flat, e, NULL);
		else if (cJSON_IsString(d))
			error = fbuf_puts(&flat, d->valuestring);
		if (error < 0)
			goto cleanup;
		if (flat.len)
			error = one_line(out, flat.ptr, flat.len, MAX_MESSAGE);
		else
			error = one_line(out, body, len, MAX_TEXT_MESSAGE);
	} else if (looks_like_html(body, len)) {
		fbuf title;

		fbuf_init(&title, 1024);
		html_title(&title, body, len);
		if (title.len)
			error = fbuf_printf(out, "an HTML page (\"%s\")", title.ptr);
		else
			error = fbuf_puts(out, "an HTML page");
		fbuf_release(&title);
	} else {
		error = one_line(out, body, len, MAX_TEXT_MESSAGE);
	}
cleanup:
	cJSON_Delete(json);
	fbuf_release(&flat);
	return error;
}

/* Set the error for a non-2xx answer: "METHOD path: 409 Conflict: words". */
static int status_error(const gl_call *call, const http_response *r)
{
	char sw[64];
	fbuf words;
	int code = status_to_code(r->status);

	fbuf_init(&words, 4096);
	status_words(sw, sizeof(sw), r->status);
	gitlab_words(&words, r);
	if (words.len)
		ferror_set(code, "%s %s: %s: %s", call->method, call->path, sw, words.ptr);
	else
		ferror_set(code, "%s %s: %s", call->method, call->path, sw);
	fbuf_release(&words);
	return code;
}

/* ---- sending ---- */

/*
 * Send one call. Returns 0 on a 2xx (the response in `resp`), else the
 * code for the status or the transport failure, with the message naming
 * the method and the path (never the token, never a signed URL).
 */
static int gl_send(http_response *resp, gitlab *gl, const gl_call *call)
{
	const char *headers[5];
	http_request req;
	http_stats before, after;
	const char *m, *sp, *detail;
	char *copy;
	int n = 0, error;

	headers[n++] = gl->token_header;
	headers[n++] = call->raw ? "Accept: */*" : "Accept: application/json";
	if (call->body)
		headers[n++] = "Content-Type: application/json";
	headers[n] = NULL;
	memset(&req, 0, sizeof(req));
	req.method = call->method;
	req.url = call->url;
	req.headers = headers;
	req.body = call->body;
	req.body_len = call->body ? strlen(call->body) : 0;
	req.sink = call->sink;
	req.sink_ctx = call->sink_ctx;

	http_client_stats(&before, gl->http);
	error = http_do(resp, gl->http, &req);
	http_client_stats(&after, gl->http);
	gl->stats.requests += after.requests - before.requests;
	gl->stats.retries += after.retries - before.retries;
	gl->stats.throttled += after.throttled - before.throttled;
	gl->stats.paced += after.paced - before.paced;
	gl->stats.paced_ms += after.paced_ms - before.paced_ms;
	gl->stats.ratelimit_remaining = after.ratelimit_remaining;
	gl->stats.ratelimit_limit = after.ratelimit_limit;
	if (is_write(call->method))
		gl->stats.writes += after.requests - before.requests;
	else
		gl->stats.reads += after.requests - before.requests;
	gl->last_status = resp->status;

	if (resp->status >= 200 && resp->status < 300 && error == 0)
		return 0;
	if (resp->status && (resp->status < 200 || resp->status >= 300) && (error == 0 || error == FACTORY_EUPSTREAM))
		return status_error(call, resp);
	/* A transport failure: http.c says "METHOD url: detail"; keep the
	 * detail and name the path instead of the URL. */
	m = ferror_last();
	detail = m;
	if (!strncmp(m, call->method, strlen(call->method)) && m[strlen(call->method)] == ' ') {
		sp = strstr(m + strlen(call->method) + 1, ": ");
		if (sp && !memchr(m + strlen(call->method) + 1, ' ', (size_t)(sp - m - strlen(call->method) - 1)))
			detail = sp + 2;
	}
	if (!(copy = strdup(detail)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	ferror_set(error, "%s %s: %s", call->method, call->path, copy);
	free(copy);
	return error;
}

/* Whether JSON text stops inside a string, an object or an array: the
 * mark of a body cut short rather than one written wrong. */
static int json_unfinished(const char *p, size_t len)
{
	size_t i, depth = 0;
	int in_string = 0, escaped = 0;

	for (i = 0; i < len; i++) {
		char ch = p[i];
		if (in_string) {
			if (escaped)
				escaped = 0;
			else if (ch == '\\')
				escaped = 1;
			else if (ch == '"')
				in_string = 0;
		} else if (ch == '"') {
			in_string = 1;
		} else if (ch == '{' || ch == '[') {
			depth++;
		} else if ((ch == '}' || ch == ']') && depth) {
			depth--;
		}
	}
	return in_string || depth > 0;
}

/*
 * Parse a 2xx body as JSON into *out. 204 and, when `allow_empty`, an
 * empty body give NULL. An HTML page, an empty body where JSON was due,
 * malformed or truncated JSON and trailing data are FACTORY_EINVALID.
 */
static int parse_json(cJSON **out, const gl_call *call, const http_response *r, int allow_empty)
{
	const char *body = r->body.ptr ? r->body.ptr : "", *end = NULL, *rest;
	size_t len = r->body.len;
	char sw[64];
	cJSON *json;

	*out = NULL;
	status_words(sw, sizeof(sw), r->status);
	if (r->status == 204)
		return 0;
	if (skip_ws(body, body + len) == body + len) {
		if (allow_empty)
			return 0;
		return ferror_set(FACTORY_EINVALID, "%s %s: %s: empty body where JSON was expected", call->method,
		                  call->path, sw);
	}
	if (looks_like_html(body, len)) {
		fbuf title;
		int code;

		fbuf_init(&title, 1024);
		html_title(&title, body, len);
		code = ferror_set(FACTORY_EINVALID,
		                  "%s %s: %s: an HTML page%s%s%s where JSON was expected (is the GitLab URL the API "
		                  "root, ending in /api/v4?)",
		                  call->method, call->path, sw, title.len ? " (\"" : "", title.len ? title.ptr : "",
		                  title.len ? "\")" : "");
		fbuf_release(&title);
		return code;
	}
	json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!json) {
		size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : len;
		if (json_unfinished(body, len))
			return ferror_set(FACTORY_EINVALID, "%s %s: %s: truncated JSON (%zu bytes)", call->method,
			                  call->path, sw, len);
		return ferror_set(FACTORY_EINVALID, "%s %s: %s: malformed JSON at byte %zu of %zu", call->method,
		                  call->path, sw, at, len);
	}
	rest = end ? skip_ws(end, body + len) : body + len;
	if (rest < body + len) {
		cJSON_Delete(json);
		return ferror_set(FACTORY_EINVALID, "%s %s: %s: malformed JSON: data after the value at byte %zu",
		                  call->method, call->path, sw, (size_t)(rest - body));
	}
	*out = json;
	return 0;
}

/* Log a write that dry run skips, with its body (masked, capped). */
static void log_dry_run(gitlab *gl, const char *method, const char *path, const char *body)
{
	size_t len = body ? strlen(body) : 0;

	gl->stats.dry_run_writes++;
	if (len > MAX_DRY_RUN_BODY)
		log_info("dry-run: would %s %s %.*s...", method, path, MAX_DRY_RUN_BODY, body);
	else
		log_info("dry-run: would %s %s%s%s", method, path, len ? " " : "", len ? body : "");
}

/* Whether segment [s, e) of a path is `word`. */
static int segment_is(const char *s, const char *e, const char *word)
{
	return (size_t)(e - s) == strlen(word) && !strncmp(s, word, (size_t)(e - s));
}

/* Whether `path` creates a note: .../issues/:iid/notes or
 * .../merge_requests/:iid/notes (no query). */
static int is_note_path(const char *path)
{
	const char *end = path + strlen(path), *iid, *kind;

	if (end - path < 6 || strcmp(end - 6, "/notes") != 0)
		return 0;
	end -= 6;
	for (iid = end; iid > path && isdigit((unsigned char)iid[-1]); iid--)
		;
	if (iid == end || iid == path || iid[-1] != '/')
		return 0;
	end = iid - 1;
	for (kind = end; kind > path && kind[-1] != '/'; kind--)
		;
	return segment_is(kind, end, "issues") || segment_is(kind, end, "merge_requests");
}

static long long mono_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether `path` creates an issue: projects/<id>/issues (no query). */
static int is_issue_create_path(const char *path)
{
	const char *p = path, *e;

	if (strncmp(p, "projects/", 9) != 0)
		return 0;
	p += 9;
	if (!(e = strchr(p, '/')) || e == p)
		return 0;
	return !strcmp(e, "/issues");
}

/* Wait until `*last` is `interval` ms ago, then make it now. */
static void space_after(gitlab *gl, long long *last, long interval, const char *what, const char *path)
{
	long long now = mono_now_ms(), due;

	if (*last) {
		due = *last + interval;
		if (due > now) {
			log_debug("POST %s: %s spacing: waiting %lld ms", path, what, due - now);
			http_client_pause(gl->http, (long)(due - now));
			gl->stats.paced++;
			gl->stats.paced_ms += (long)(due - now);
			now = mono_now_ms();
		}
	}
	*last = now;
}

/* Note and issue spacing (gitlab.h): wait until the previous one is far enough. */
static void space_note(gitlab *gl, const char *path)
{
	if (gl->note_interval_ms && is_note_path(path))
		space_after(gl, &gl->last_note, gl->note_interval_ms, "note", path);
	else if (gl->issue_interval_ms && is_issue_create_path(path))
		space_after(gl, &gl->last_issue, gl->issue_interval_ms, "issue", path);
}

/* The body of gitlab_request, also used with out == NULL by wrappers that
 * need no answer (the body may then be empty). */
static int request_v(cJSON **out, gitlab *gl, const char *method, const cJSON *body, const char *fmt, va_list ap)
{
	fbuf path, url;
	http_response resp;
	gl_call call;
	char *json = NULL;
	cJSON *parsed = NULL;
	int error = -1;

	if (out)
		*out = NULL;
	fbuf_init(&path, MAX_PATH_LEN);
	fbuf_init(&url, MAX_URL_LEN);
	http_response_init(&resp);
	if ((error = fbuf_vprintf(&path, fmt, ap)) < 0)
		goto cleanup;
	if (body && !(json = cJSON_PrintUnformatted(body))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = build_url(&url, gl, path.ptr)) < 0)
		goto cleanup;
	if (gl->dry_run && is_write(method)) {
		log_dry_run(gl, method, path.ptr, json);
		error = 0;
		goto cleanup;
	}
	memset(&call, 0, sizeof(call));
	call.method = method;
	call.path = path.ptr;
	call.url = url.ptr;
	call.body = json;
	if (!strcasecmp(method, "POST"))
		space_note(gl, path.ptr);
	if ((error = gl_send(&resp, gl, &call)) < 0)
		goto cleanup;
	if ((error = parse_json(&parsed, &call, &resp, !out || !strcasecmp(method, "DELETE"))) < 0)
		goto cleanup;
	if (out) {
		*out = parsed;
		parsed = NULL;
	}
	error = 0;
cleanup:
	cJSON_Delete(parsed);
	if (json) {
		explicit_bzero(json, strlen(json));
		cJSON_free(json);
	}
	http_response_release(&resp);
	fbuf_release(&path);
	fbuf_release(&url);
	return error;
}

int gitlab_request(cJSON **out, gitlab *gl, const char *method, const cJSON *body, const char *path_fmt, ...)
{
	va_list ap;
	int error;

	va_start(ap, path_fmt);
	error = request_v(out, gl, method, body, path_fmt, ap);
	va_end(ap);
	return error;
}

/* The same without an answer to keep. */
static int request_noout(gitlab *gl, const char *method, const cJSON *body, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int request_noout(gitlab *gl, const char *method, const cJSON *body, const char *fmt, ...)
{
	va_list ap;
	int error;

	va_start(ap, fmt);
	error = request_v(NULL, gl, method, body, fmt, ap);
	va_end(ap);
	return error;
}

static int get_raw_v(gitlab *gl, http_sink_fn sink, void *sink_ctx, const char *fmt, va_list ap)
{
	fbuf path, url;
	http_response resp;
	gl_call call;
	int error = -1;

	fbuf_init(&path, MAX_PATH_LEN);
	fbuf_init(&url, MAX_URL_LEN);
	http_response_init(&resp);
	if ((error = fbuf_vprintf(&path, fmt, ap)) < 0)
		goto cleanup;
	if ((error = build_url(&url, gl, path.ptr)) < 0)
		goto cleanup;
	memset(&call, 0, sizeof(call));
	call.method = "GET";
	call.path = path.ptr;
	call.url = url.ptr;
	call.sink = sink;
	call.sink_ctx = sink_ctx;
	call.raw = 1;
	error = gl_send(&resp, gl, &call);
cleanup:
	http_response_release(&resp);
	fbuf_release(&path);
	fbuf_release(&url);
	return error;
}

int gitlab_get_raw(gitlab *gl, http_sink_fn sink, void *sink_ctx, const char *path_fmt, ...)
{
	va_list ap;
	int error;

	va_start(ap, path_fmt);
	error = get_raw_v(gl, sink, sink_ctx, path_fmt, ap);
	va_end(ap);
	return error;
}

/* ---- pagination ---- */

/* Whether the parameters of one Link entry, [p, end), hold rel="next"
 * (also rel=next and rel="prev next"). */
static int rel_is_next(const char *p, const char *end)
{
	const char *r = p, *v, *ve, *w;
	int quoted;

	while ((r = find_ci(r, (size_t)(end - r), "rel=")) != NULL) {
		v = r + 4;
		quoted = v < end && *v == '"';
		if (quoted)
			v++;
		for (ve = v; ve < end; ve++) {
			if (quoted ? *ve == '"' : (*ve == ';' || *ve == ',' || isspace((unsigned char)*ve)))
				break;
		}
		while (v < ve) {
			for (w = v; w < ve && !isspace((unsigned char)*w); w++)
				;
			if (w - v == 4 && !strncasecmp(v, "next", 4))
				return 1;
			for (v = w; v < ve && isspace((unsigned char)*v); v++)
				;
		}
		r = ve;
	}
	return 0;
}

/*
 * Find the rel="next" target in a Link header value:
 *   <https://h/api/v4/x?page=2>; rel="next", <...>; rel="last"
 * Copies the URL into `out`. Returns 1 when found, 0 when not (or when
 * it does not fit).
 */
static int link_next(fbuf *out, const char *link)
{
	const char *p = link, *lt, *gt, *end;

	while ((lt = strchr(p, '<')) != NULL) {
		if (!(gt = strchr(lt + 1, '>')))
			return 0;
		if (!(end = strchr(gt + 1, '<')))
			end = gt + 1 + strlen(gt + 1);
		if (rel_is_next(gt + 1, end)) {
			fbuf_reset(out);
			return fbuf_put(out, lt + 1, (size_t)(gt - lt - 1)) < 0 ? 0 : 1;
		}
		p = gt + 1;
	}
	return 0;
}

/* Length of "scheme://authority" at the start of `url` (0 if none). */
static size_t origin_len(const char *url)
{
	const char *s = strstr(url, "://"), *e;

	if (!s)
		return 0;
	e = strpbrk(s + 3, "/?#");
	return e ? (size_t)(e - url) : strlen(url);
}

/*
 * The next page's URL from a Link target. On our own origin it is used
 * exactly as given; on another origin (a GitLab whose external_url differs
 * from the address we use) its path and query are taken onto ours, so the
 * token goes only where it was meant to.
 */
static int next_from_link(fbuf *out, const gitlab *gl, const char *target)
{
	size_t ol;
	int error;

	fbuf_reset(out);
	if (!strncmp(target, "http://", 7) || !strncmp(target, "https://", 8)) {
		if (http_same_origin(target, gl->api_url))
			return fbuf_puts(out, target);
		ol = origin_len(target);
		log_debug("pagination link on another origin; following its path on the API's origin");
		if ((error = fbuf_put(out, gl->api_url, origin_len(gl->api_url))) < 0)
			return error;
		return fbuf_puts(out, target + ol);
	}
	/* A relative reference: resolve against the origin. */
	if (target[0] == '/') {
		if ((error = fbuf_put(out, gl->api_url, origin_len(gl->api_url))) < 0)
			return error;
		return fbuf_puts(out, target);
	}
	return ferror_set(FACTORY_EINVALID, "pagination link is not a URL: %.100s", target);
}

/* The first page's URL: path, the caller's query, per_page, keyset. */
static int list_url(fbuf *url, const gitlab *gl, const char *path, const char *query, const char *keyset)
{
	int error;

	fbuf_reset(url);
	if ((error = build_url(url, gl, path)) < 0)
		return error;
	if ((error = fbuf_putc(url, strchr(path, '?') ? '&' : '?')) < 0)
		return error;
	if (query && *query) {
		while (*query == '?' || *query == '&')
			query++;
		if (*query && ((error = fbuf_puts(url, query)) < 0 || (error = fbuf_putc(url, '&')) < 0))
			return error;
	}
	if ((error = fbuf_puts(url, "per_page=100")) < 0)
		return error;
	if (keyset) {
		int has_order = query && (!strncmp(query, "order_by=", 9) || strstr(query, "&order_by="));
		int has_sort = query && (!strncmp(query, "sort=", 5) || strstr(query, "&sort="));

		if ((error = fbuf_puts(url, "&pagination=keyset")) < 0)
			return error;
		if (!has_order &&
		    ((error = fbuf_puts(url, "&order_by=")) < 0 || (error = http_escape(url, keyset)) < 0))
			return error;
		if (!has_sort && (error = fbuf_puts(url, "&sort=asc")) < 0)
			return error;
	}
	return 0;
}

int gitlab_list_each(gitlab *gl, const char *path, const char *query, const char *keyset_order_by, size_t max_items,
                     gitlab_item_fn cb, void *ctx)
{
	fbuf base, url, next;
	http_response resp;
	gl_call call;
	cJSON *page = NULL;
	const cJSON *item;
	char *link = NULL, np[32];
	const char *keyset = keyset_order_by && *keyset_order_by ? keyset_order_by : NULL;
	size_t seen = 0;
	long pages = 0;
	int error = -1, rc, n, has_link;

	fbuf_init(&base, MAX_URL_LEN);
	fbuf_init(&url, MAX_URL_LEN);
	fbuf_init(&next, MAX_URL_LEN);
	http_response_init(&resp);
	if (!(link = malloc(MAX_LINK_HEADER))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = list_url(&base, gl, path, query, keyset)) < 0 || (error = fbuf_puts(&url, base.ptr)) < 0)
		goto cleanup;
	memset(&call, 0, sizeof(call));
	call.method = "GET";
	call.path = path;
	for (;;) {
		call.url = url.ptr;
		error = gl_send(&resp, gl, &call);
		if (error < 0 && keyset && pages == 0 && (resp.status == 400 || resp.status == 405)) {
			/* This endpoint or version has no keyset pagination: walk by offset. */
			log_debug("GET %s: keyset pagination refused (%ld), using offset pagination", path,
			          resp.status);
			keyset = NULL;
			if ((error = list_url(&base, gl, path, query, NULL)) < 0)
				goto cleanup;
			fbuf_reset(&url);
			if ((error = fbuf_puts(&url, base.ptr)) < 0)
				goto cleanup;
			continue;
		}
		if (error < 0)
			goto cleanup;
		pages++;
		cJSON_Delete(page);
		page = NULL;
		if ((error = parse_json(&page, &call, &resp, 0)) < 0)
			goto cleanup;
		if (!cJSON_IsArray(page)) {
			error = ferror_set(FACTORY_EINVALID, "GET %s: expected a JSON array, got %s", path,
			                   cJSON_IsObject(page) ? "an object" : "another JSON value");
			goto cleanup;
		}
		n = 0;
		cJSON_ArrayForEach(item, page)
		{
			if (max_items && seen >= max_items)
				break;
			seen++;
			n++;
			if ((rc = cb(ctx, item)) != 0) {
				error = rc;
				goto cleanup;
			}
		}
		if (!n || (max_items && seen >= max_items))
			break;

		/* The next page: Link rel="next" as given, else X-Next-Page. */
		has_link = !http_response_header(link, MAX_LINK_HEADER, &resp, "Link");
		if (has_link && strlen(link) + 1 >= MAX_LINK_HEADER) {
			error = ferror_set(FACTORY_ETOOBIG, "GET %s: Link header over %zu bytes", path,
			                   MAX_LINK_HEADER);
			goto cleanup;
		}
		if (has_link && link_next(&next, link)) {
			char *target = fbuf_detach(&next);
			if (!target) {
				error = ferror_set(FACTORY_ENOMEM, "out of memory");
				goto cleanup;
			}
			error = next_from_link(&next, gl, target);
			free(target);
			if (error < 0)
				goto cleanup;
		} else if (!http_response_header(np, sizeof(np), &resp, "X-Next-Page") && np[0]) {
			char *endp;
			long pg = strtol(np, &endp, 10);
			if (*endp || pg < 1) {
				error = ferror_set(FACTORY_EINVALID, "GET %s: bad X-Next-Page header: %.20s", path, np);
				goto cleanup;
			}
			fbuf_reset(&next);
			if ((error = fbuf_printf(&next, "%s&page=%ld", base.ptr, pg)) < 0)
				goto cleanup;
		} else {
			break;
		}
		if (!strcmp(next.ptr, url.ptr)) {
			error = ferror_set(FACTORY_EINVALID, "GET %s: the next page is the same page (page %ld)", path,
			                   pages);
			goto cleanup;
		}
		fbuf_reset(&url);
		if ((error = fbuf_puts(&url, next.ptr)) < 0)
			goto cleanup;
	}
	error = 0;
cleanup:
	free(link);
	cJSON_Delete(page);
	http_response_release(&resp);
	fbuf_release(&base);
	fbuf_release(&url);
	fbuf_release(&next);
	return error;
}

static int collect_cb(void *ctx, const cJSON *item)
{
	cJSON *copy = cJSON_Duplicate(item, 1);

	if (!copy || !cJSON_AddItemToArray((cJSON *)ctx, copy)) {
		cJSON_Delete(copy);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

int gitlab_list_all(cJSON **out, gitlab *gl, const char *path, const char *query, size_t max_items)
{
	cJSON *all = cJSON_CreateArray();
	int error;

	*out = NULL;
	if (!all)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = gitlab_list_each(gl, path, query, NULL, max_items, collect_cb, all)) != 0) {
		cJSON_Delete(all);
		return error;
	}
	*out = all;
	return 0;
}

/* ---- resources ---- */

static int oom(void)
{
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

int gitlab_label_create(cJSON **out, gitlab *gl, const char *name, const char *color, const char *description)
{
	cJSON *b = cJSON_CreateObject();
	int error;

	*out = NULL;
	if (!name || !*name) {
		cJSON_Delete(b);
		return ferror_set(FACTORY_EINVALID, "label create: empty label name");
	}
	if (!b || !cJSON_AddStringToObject(b, "name", name) || (color && !cJSON_AddStringToObject(b, "color", color)) ||
	    (description && !cJSON_AddStringToObject(b, "description", description))) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "POST", b, "projects/:id/labels");
	cJSON_Delete(b);
	return error;
}

int gitlab_label_update(cJSON **out, gitlab *gl, long label_id, const char *color, const char *description)
{
	cJSON *b = cJSON_CreateObject();
	int error;

	*out = NULL;
	if (!b || (color && !cJSON_AddStringToObject(b, "color", color)) ||
	    (description && !cJSON_AddStringToObject(b, "description", description))) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "PUT", b, "projects/:id/labels/%ld", label_id);
	cJSON_Delete(b);
	return error;
}

int gitlab_issue_get(cJSON **out, gitlab *gl, long iid)
{
	return gitlab_request(out, gl, "GET", NULL, "projects/:id/issues/%ld", iid);
}

int gitlab_issue_create(cJSON **out, gitlab *gl, const cJSON *fields)
{
	return gitlab_request(out, gl, "POST", fields, "projects/:id/issues");
}

int gitlab_issue_update(cJSON **out, gitlab *gl, long iid, const cJSON *fields)
{
	return gitlab_request(out, gl, "PUT", fields, "projects/:id/issues/%ld", iid);
}

/*
 * Check a comma-separated list of label names and write it back cleaned
 * (spaces around names dropped) into `out`. Each name must be non-empty,
 * at most 255 bytes and free of control characters; `what` names the list
 * in messages.
 */
static int clean_labels(fbuf *out, const char *list, const char *what)
{
	const char *p = list, *s, *e, *q, *c;
	size_t count = 0;
	int error;

	fbuf_reset(out);
	if (!list)
		return 0;
	for (s = list; *s == ' ' || *s == '\t'; s++)
		;
	if (!*s)
		return 0;
	for (;;) {
		e = strchr(p, ',');
		if (!e)
			e = p + strlen(p);
		for (s = p; s < e && (*s == ' ' || *s == '\t'); s++)
			;
		q = e;
		while (q > s && (q[-1] == ' ' || q[-1] == '\t'))
			q--;
		if (q == s)
			return ferror_set(FACTORY_EINVALID, "bad %s \"%.100s\": empty label name", what, list);
		if ((size_t)(q - s) > MAX_LABEL_LEN)
			return ferror_set(FACTORY_EINVALID, "bad %s: label name of %zu bytes (at most %d)", what,
			                  (size_t)(q - s), MAX_LABEL_LEN);
		for (c = s; c < q; c++)
			if (iscntrl((unsigned char)*c))
				return ferror_set(FACTORY_EINVALID, "bad %s: label name with a control character",
				                  what);
		if ((count++ && (error = fbuf_putc(out, ',')) < 0) || (error = fbuf_put(out, s, (size_t)(q - s))) < 0)
			return error;
		if (!*e)
			break;
		p = e + 1;
	}
	return 0;
}

/* 1 when the cleaned lists `a` and `b` share a name. */
static int lists_overlap(const char *a, const char *b)
{
	const char *p = a, *e, *q, *f;

	while (*p) {
		e = strchr(p, ',');
		if (!e)
			e = p + strlen(p);
		for (q = b; *q;) {
			f = strchr(q, ',');
			if (!f)
				f = q + strlen(q);
			if (f - q == e - p && !strncmp(p, q, (size_t)(e - p)))
				return 1;
			q = *f ? f + 1 : f;
		}
		p = *e ? e + 1 : e;
	}
	return 0;
}

int gitlab_issue_move_labels(cJSON **out, gitlab *gl, long iid, const char *add, const char *remove)
{
	fbuf a, r;
	cJSON *b = NULL;
	int error = -1;

	*out = NULL;
	fbuf_init(&a, 64 << 10);
	fbuf_init(&r, 64 << 10);
	if ((error = clean_labels(&a, add, "add_labels")) < 0 ||
	    (error = clean_labels(&r, remove, "remove_labels")) < 0)
		goto cleanup;
	if (!a.len && !r.len) {
		error = 0; /* nothing to move */
		goto cleanup;
	}
	if (a.len && r.len && lists_overlap(a.ptr, r.ptr)) {
		error = ferror_set(FACTORY_EINVALID, "move labels of issue %ld: a label is both added and removed",
		                   iid);
		goto cleanup;
	}
	if (!(b = cJSON_CreateObject()) || (a.len && !cJSON_AddStringToObject(b, "add_labels", a.ptr)) ||
	    (r.len && !cJSON_AddStringToObject(b, "remove_labels", r.ptr))) {
		error = oom();
		goto cleanup;
	}
	error = gitlab_request(out, gl, "PUT", b, "projects/:id/issues/%ld", iid);
cleanup:
	cJSON_Delete(b);
	fbuf_release(&a);
	fbuf_release(&r);
	return error;
}

int gitlab_issue_reorder(gitlab *gl, long iid, long after_id, long before_id)
{
	cJSON *b;
	int error;

	if (!after_id && !before_id)
		return ferror_set(FACTORY_EINVALID, "reorder issue %ld: neither move_after_id nor move_before_id", iid);
	if (!(b = cJSON_CreateObject()) ||
	    (after_id && !cJSON_AddNumberToObject(b, "move_after_id", (double)after_id)) ||
	    (before_id && !cJSON_AddNumberToObject(b, "move_before_id", (double)before_id))) {
		cJSON_Delete(b);
		return oom();
	}
	error = request_noout(gl, "PUT", b, "projects/:id/issues/%ld/reorder", iid);
	cJSON_Delete(b);
	return error;
}

int gitlab_note_create(cJSON **out, gitlab *gl, const char *noteable, long iid, const char *body, int internal)
{
	cJSON *b;
	int error;

	*out = NULL;
	if (!noteable || (strcmp(noteable, "issues") != 0 && strcmp(noteable, "merge_requests") != 0))
		return ferror_set(FACTORY_EINVALID, "note create: noteable must be issues or merge_requests");
	if (!body || !*body)
		return ferror_set(FACTORY_EINVALID, "note create: empty body");
	if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "body", body) ||
	    (internal && !cJSON_AddTrueToObject(b, "internal"))) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "POST", b, "projects/:id/%s/%ld/notes", noteable, iid);
	cJSON_Delete(b);
	return error;
}

int gitlab_board_create(cJSON **out, gitlab *gl, const char *name)
{
	cJSON *b;
	int error;

	*out = NULL;
	if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "name", name ? name : "")) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "POST", b, "projects/:id/boards");
	cJSON_Delete(b);
	return error;
}

int gitlab_board_list_create(cJSON **out, gitlab *gl, long board_id, long label_id)
{
	cJSON *b;
	int error;

	*out = NULL;
	if (!(b = cJSON_CreateObject()) || !cJSON_AddNumberToObject(b, "label_id", (double)label_id)) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "POST", b, "projects/:id/boards/%ld/lists", board_id);
	cJSON_Delete(b);
	return error;
}

int gitlab_mr_create(cJSON **out, gitlab *gl, const cJSON *fields)
{
	return gitlab_request(out, gl, "POST", fields, "projects/:id/merge_requests");
}

int gitlab_mr_merge(cJSON **out, gitlab *gl, long iid, int when_pipeline_succeeds)
{
	cJSON *b;
	int error;

	*out = NULL;
	/* GitLab 17.11 renamed merge_when_pipeline_succeeds to auto_merge;
	 * both are sent, an older server ignores the one it does not know. */
	if (!(b = cJSON_CreateObject()) ||
	    (when_pipeline_succeeds &&
	     (!cJSON_AddTrueToObject(b, "merge_when_pipeline_succeeds") || !cJSON_AddTrueToObject(b, "auto_merge")))) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "PUT", b, "projects/:id/merge_requests/%ld/merge", iid);
	cJSON_Delete(b);
	return error;
}

int gitlab_branch_create(cJSON **out, gitlab *gl, const char *branch, const char *ref)
{
	cJSON *b;
	int error;

	*out = NULL;
	if (!branch || !*branch || !ref || !*ref)
		return ferror_set(FACTORY_EINVALID, "branch create: empty branch or ref");
	if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "branch", branch) ||
	    !cJSON_AddStringToObject(b, "ref", ref)) {
		cJSON_Delete(b);
		return oom();
	}
	error = gitlab_request(out, gl, "POST", b, "projects/:id/repository/branches");
	cJSON_Delete(b);
	return error;
}

int gitlab_branch_delete(gitlab *gl, const char *branch)
{
	fbuf esc;
	int error;

	if (!branch || !*branch)
		return ferror_set(FACTORY_EINVALID, "branch delete: empty branch name");
	fbuf_init(&esc, 4096);
	if ((error = http_escape(&esc, branch)) == 0)
		error = request_noout(gl, "DELETE", NULL, "projects/:id/repository/branches/%s", esc.ptr);
	fbuf_release(&esc);
	return error;
}

int gitlab_job_retry(cJSON **out, gitlab *gl, long job_id)
{
	return gitlab_request(out, gl, "POST", NULL, "projects/:id/jobs/%ld/retry", job_id);
}

int gitlab_job_trace(gitlab *gl, long job_id, http_sink_fn sink, void *sink_ctx)
{
	return gitlab_get_raw(gl, sink, sink_ctx, "projects/:id/jobs/%ld/trace", job_id);
}

int gitlab_release_create(cJSON **out, gitlab *gl, const cJSON *fields)
{
	return gitlab_request(out, gl, "POST", fields, "projects/:id/releases");
}
