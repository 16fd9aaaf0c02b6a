/* Tests for common/gitlab.c against a real HTTP server on 127.0.0.1
 * (tests/unit/testserver.h): URLs and headers, pagination (Link,
 * X-Next-Page, keyset, past 10,000 rows), error messages in GitLab's words,
 * dry run, the token's secrecy and label validation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gitlab.h"
#include "log.h"
#include "support/support.h"
#include "testserver.h"

#define TOKEN "s3cr3t-t0ken-value-42"

static void setup(void)
{
	http_set_sleep(tu_no_sleep);
	tu_log_capture(LOG_DEBUG);
}

TestSuite(gitlab, .init = setup, .fini = tu_log_release, .timeout = 30);

static gitlab *client_for(ts_server *s, const char *project, int dry_run)
{
	return tu_gitlab_for(s, project, TOKEN, dry_run, 2);
}

Test(gitlab, new_needs_url_and_token)
{
	gitlab_options o;
	gitlab *gl = NULL;

	gitlab_options_init(&o);
	o.token = TOKEN;
	cr_assert_eq(gitlab_new(&gl, &o), FACTORY_ECONFIG);
	o.api_url = "https://gitlab.example.com/api/v4";
	o.token = NULL;
	cr_assert_eq(gitlab_new(&gl, &o), FACTORY_ECONFIG);
	o.token = "";
	cr_assert_eq(gitlab_new(&gl, &o), FACTORY_ECONFIG);
	o.token = "abc\ndef-ghi";
	cr_assert_eq(gitlab_new(&gl, &o), FACTORY_ECONFIG);
	o.api_url = "ftp://x";
	o.token = TOKEN;
	cr_assert_eq(gitlab_new(&gl, &o), FACTORY_ECONFIG);
	cr_assert_null(gl);
}

Test(gitlab, request_url_headers_and_body)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "group/sub proj", 0);
	cJSON *out = NULL, *body = cJSON_CreateObject();
	char v[128];

	ts_reply(s, 200, "OK", "Content-Type: application/json\r\n", "{\"id\":7,\"name\":\"x\"}");
	ts_reply(s, 201, "Created", NULL, "{\"id\":8}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), 0, "%s", ferror_last());
	cr_assert_eq(cJSON_GetObjectItem(out, "id")->valueint, 7);
	cJSON_Delete(out);
	cJSON_AddStringToObject(body, "title", "hello");
	cr_assert_eq(gitlab_request(&out, gl, "POST", body, "projects/:id/issues/%d/notes", 12), 0, "%s",
	             ferror_last());
	cr_assert_eq(cJSON_GetObjectItem(out, "id")->valueint, 8);
	cJSON_Delete(out);

	cr_assert_eq(ts_count(s), 2);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/group%2Fsub%20proj");
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(s, 0)->headers, "PRIVATE-TOKEN"), 0);
	cr_assert_str_eq(v, TOKEN);
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(s, 0)->headers, "Accept"), 0);
	cr_assert_str_eq(v, "application/json");
	cr_assert_not(ts_has_header(ts_req(s, 0), "Content-Type"));
	cr_assert_str_eq(ts_req(s, 1)->method, "POST");
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/group%2Fsub%20proj/issues/12/notes");
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(s, 1)->headers, "Content-Type"), 0);
	cr_assert_str_eq(v, "application/json");
	cr_assert_str_eq(ts_req(s, 1)->body, "{\"title\":\"hello\"}");
	cr_assert_eq(gitlab_last_status(gl), 201);
	cJSON_Delete(body);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, numeric_project_and_no_project)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "42", 0), *none = client_for(s, NULL, 0);
	cJSON *out = NULL;

	ts_reply(s, 200, "OK", NULL, "{}");
	ts_reply(s, 200, "OK", NULL, "{}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id/labels"), 0);
	cJSON_Delete(out);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/42/labels");
	/* ":id" only as a whole segment. */
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "users/:idx/x"), 0);
	cJSON_Delete(out);
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/users/:idx/x");
	cr_assert_eq(gitlab_request(&out, none, "GET", NULL, "projects/:id"), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "no project"), "%s", ferror_last());
	cr_assert_eq(ts_count(s), 2);
	cr_assert_str_eq(gitlab_project(gl), "42");
	gitlab_free(gl);
	gitlab_free(none);
	ts_stop(s);
}

/* ---- pagination ---- */

typedef struct {
	int count;
	long sum;
	int stop_at;
} walk;

static int count_cb(void *ctx, const cJSON *item)
{
	walk *w = ctx;
	const cJSON *id = cJSON_GetObjectItem(item, "id");

	w->count++;
	w->sum += id ? id->valueint : 0;
	return w->stop_at && w->count == w->stop_at ? 7 : 0;
}

Test(gitlab, pagination_over_link)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	char hdr[512];

	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/issues?page=2&per_page=100&state=opened>; rel=\"next\", "
	         "<http://127.0.0.1:%d/api/v4/projects/5/issues?page=1&per_page=100&state=opened>; rel=\"first\"\r\n"
	         "X-Next-Page: 2\r\nX-Total: 4\r\n",
	         s->port, s->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":1},{\"id\":2}]");
	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/issues?page=1&per_page=100&state=opened>; rel=\"prev\", "
	         "<http://127.0.0.1:%d/api/v4/projects/5/issues?page=3&per_page=100&state=opened>; rel=\"next\"\r\n",
	         s->port, s->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":3}]");
	ts_reply(s, 200, "OK", "X-Next-Page: \r\n", "[{\"id\":4}]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", "state=opened", NULL, 0, count_cb, &w), 0, "%s",
	             ferror_last());
	cr_assert_eq(w.count, 4);
	cr_assert_eq(w.sum, 10);
	cr_assert_eq(ts_count(s), 3);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/5/issues?state=opened&per_page=100");
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/issues?page=2&per_page=100&state=opened");
	cr_assert_str_eq(ts_req(s, 2)->target, "/api/v4/projects/5/issues?page=3&per_page=100&state=opened");
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_over_x_next_page_only)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *all = NULL;

	ts_reply(s, 200, "OK", "X-Next-Page: 2\r\nX-Page: 1\r\n", "[{\"id\":1},{\"id\":2}]");
	ts_reply(s, 200, "OK", "X-Next-Page: 3\r\nX-Page: 2\r\n", "[{\"id\":3}]");
	ts_reply(s, 200, "OK", "X-Next-Page: 4\r\nX-Page: 3\r\n", "[]");
	cr_assert_eq(gitlab_list_all(&all, gl, "projects/:id/labels", NULL, 0), 0, "%s", ferror_last());
	cr_assert_eq(cJSON_GetArraySize(all), 3);
	cr_assert_eq(ts_count(s), 3);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/5/labels?per_page=100");
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/labels?per_page=100&page=2");
	cr_assert_str_eq(ts_req(s, 2)->target, "/api/v4/projects/5/labels?per_page=100&page=3");
	cJSON_Delete(all);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_keyset_link_followed_exactly)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	char hdr[512];

	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/issues?cursor=eyJpZCI6IjIifQ%%3D%%3D&order_by=id&"
	         "pagination=keyset&per_page=100&sort=asc>; rel=\"next\"\r\n",
	         s->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":1},{\"id\":2}]");
	ts_reply(s, 200, "OK", NULL, "[{\"id\":3}]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", "state=opened", "id", 0, count_cb, &w), 0, "%s",
	             ferror_last());
	cr_assert_eq(w.count, 3);
	cr_assert_eq(ts_count(s), 2);
	cr_assert_str_eq(ts_req(s, 0)->target,
	                 "/api/v4/projects/5/issues?state=opened&per_page=100&pagination=keyset&order_by=id&sort=asc");
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/issues?cursor=eyJpZCI6IjIifQ%3D%3D&order_by=id&"
	                                       "pagination=keyset&per_page=100&sort=asc");
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_keyset_refused_falls_back_to_offset)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};

	ts_reply(s, 405, "Method Not Allowed", NULL,
	         "{\"message\":\"405 Method Not Allowed - Keyset pagination is not yet available\"}");
	ts_reply(s, 200, "OK", "X-Next-Page: 2\r\n", "[{\"id\":1}]");
	ts_reply(s, 200, "OK", "X-Next-Page:\r\n", "[{\"id\":2}]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, "updated_at", 0, count_cb, &w), 0, "%s",
	             ferror_last());
	cr_assert_eq(w.count, 2);
	cr_assert_eq(ts_count(s), 3);
	cr_assert(strstr(ts_req(s, 0)->target, "pagination=keyset&order_by=updated_at&sort=asc"));
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/issues?per_page=100");
	cr_assert_str_eq(ts_req(s, 2)->target, "/api/v4/projects/5/issues?per_page=100&page=2");
	gitlab_free(gl);
	ts_stop(s);
}

/* 10,050 issues in pages of 100, as GitLab answers past 10,000 rows: no
 * X-Total, no X-Total-Pages, no rel="last"; only the next page. */
static char *big_handler(void *ctx, const ts_request *req, size_t *len, int *flags)
{
	const char *p = strstr(req->target, "&page=");
	long page = p ? strtol(p + 6, NULL, 10) : 1, i, n, first;
	size_t cap = 16 << 10, used = 0;
	char *body = malloc(cap), *out, next[64];

	(void)ctx;
	(void)flags;
	n = page <= 100 ? 100 : (page == 101 ? 50 : 0);
	first = (page - 1) * 100 + 1;
	used += (size_t)snprintf(body + used, cap - used, "[");
	for (i = 0; i < n; i++)
		used += (size_t)snprintf(body + used, cap - used, "%s{\"id\":%ld,\"iid\":%ld}", i ? "," : "", first + i,
		                         first + i);
	snprintf(body + used, cap - used, "]");
	if (page < 101)
		snprintf(next, sizeof(next), "X-Next-Page: %ld\r\n", page + 1);
	else
		snprintf(next, sizeof(next), "X-Next-Page: \r\n");
	out = ts_response(200, "OK", next, body);
	free(body);
	*len = strlen(out);
	return out;
}

Test(gitlab, pagination_past_10000_without_totals)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	gitlab_stats st;

	ts_set_handler(s, big_handler, NULL);
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", "state=all", NULL, 0, count_cb, &w), 0, "%s",
	             ferror_last());
	cr_assert_eq(w.count, 10050);
	cr_assert_eq(w.sum, 10050L * 10051L / 2);
	cr_assert_eq(ts_count(s), 101);
	cr_assert_eq(ts_connections(s), 1);
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.requests, 101);
	cr_assert_eq(st.reads, 101);
	cr_assert_eq(st.writes, 0);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_max_items_and_callback_stop)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};

	ts_set_handler(s, big_handler, NULL);
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, NULL, 150, count_cb, &w), 0);
	cr_assert_eq(w.count, 150);
	cr_assert_eq(ts_count(s), 2);
	memset(&w, 0, sizeof(w));
	w.stop_at = 3;
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, NULL, 0, count_cb, &w), 7);
	cr_assert_eq(w.count, 3);
	cr_assert_eq(ts_count(s), 3);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_rejects_non_array_and_loops)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	char hdr[256];

	ts_reply(s, 200, "OK", NULL, "{\"id\":1}");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, NULL, 0, count_cb, &w), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "array"), "%s", ferror_last());
	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/issues?per_page=100>; rel=\"next\"\r\n", s->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":1}]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, NULL, 0, count_cb, &w), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "same page"), "%s", ferror_last());
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, pagination_link_to_other_origin_stays_on_ours)
{
	ts_server *s = ts_start(), *other = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	char hdr[256];

	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/issues?page=2&per_page=100>; rel=\"next\"\r\n",
	         other->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":1}]");
	ts_reply(s, 200, "OK", NULL, "[]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/issues", NULL, NULL, 0, count_cb, &w), 0, "%s", ferror_last());
	cr_assert_eq(ts_count(other), 0);
	cr_assert_eq(ts_count(s), 2);
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/issues?page=2&per_page=100");
	gitlab_free(gl);
	ts_stop(s);
	ts_stop(other);
}

/* ---- errors ---- */

static int expect_error(ts_server *s, gitlab *gl, const char *method, const char *raw_reply, const char *want)
{
	cJSON *out = (cJSON *)1;
	int rc;

	ts_push(s, raw_reply, 0, 0);
	rc = gitlab_request(&out, gl, method, NULL, "projects/:id/labels");
	cr_assert_lt(rc, 0);
	cr_assert_null(out);
	cr_assert_str_eq(ferror_last(), want);
	return rc;
}

Test(gitlab, error_messages)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	char *r;

	r = ts_response(409, "Conflict", NULL, "{\"message\":\"Label already exists\"}");
	cr_assert_eq(expect_error(s, gl, "POST", r, "POST projects/:id/labels: 409 Conflict: Label already exists"),
	             FACTORY_ECONFLICT);
	free(r);

	r = ts_response(
	        400, "Bad Request", NULL,
	        "{\"message\":{\"color\":[\"must be a valid color code\"],\"title\":[\"can't be blank\",\"is too "
	        "short\"]}}");
	cr_assert_eq(expect_error(s, gl, "POST", r,
	                          "POST projects/:id/labels: 400 Bad Request: color must be a valid color code, title "
	                          "can't be blank, title is too short"),
	             FACTORY_EINVALID);
	free(r);

	r = ts_response(422, "Unprocessable Entity", NULL, "{\"message\":[\"Branch already exists\"]}");
	cr_assert_eq(expect_error(s, gl, "POST", r,
	                          "POST projects/:id/labels: 422 Unprocessable Entity: Branch already exists"),
	             FACTORY_EINVALID);
	free(r);

	r = ts_response(
	        401, "Unauthorized", NULL,
	        "{\"error\":\"invalid_token\",\"error_description\":\"Token was revoked. You have to re-authorize "
	        "from the user.\"}");
	cr_assert_eq(
	        expect_error(s, gl, "GET", r,
	                     "GET projects/:id/labels: 401 Unauthorized: invalid_token: Token was revoked. You have "
	                     "to re-authorize from the user."),
	        FACTORY_EAUTH);
	free(r);

	r = ts_response(403, "Forbidden", NULL, "{\"message\":\"403 Forbidden\"}");
	cr_assert_eq(expect_error(s, gl, "GET", r, "GET projects/:id/labels: 403 Forbidden: 403 Forbidden"),
	             FACTORY_EAUTH);
	free(r);

	r = ts_response(404, "Not Found", NULL, "{\"message\":\"404 Project Not Found\"}");
	cr_assert_eq(expect_error(s, gl, "GET", r, "GET projects/:id/labels: 404 Not Found: 404 Project Not Found"),
	             FACTORY_ENOTFOUND);
	free(r);

	r = ts_response(404, "Not Found", NULL, "{\"error\":\"404 Not Found\"}");
	cr_assert_eq(expect_error(s, gl, "GET", r, "GET projects/:id/labels: 404 Not Found: 404 Not Found"),
	             FACTORY_ENOTFOUND);
	free(r);

	/* Plain text, several lines and long: one line of at most 200 bytes. */
	{
		char body[600], want[256];

		memset(body, 'x', 300);
		body[300] = '\0';
		r = ts_fmt("HTTP/1.1 418 I'm a teapot\r\nContent-Length: %zu\r\n\r\nfirst line\r\n\tsecond   line\n%s",
		           strlen(body) + 26, body);
		memset(want, 0, sizeof(want));
		memset(want, 'x', 200 - strlen("first line second line "));
		snprintf(body, sizeof(body), "GET projects/:id/labels: 418: first line second line %s...", want);
		cr_assert_eq(expect_error(s, gl, "GET", r, body), FACTORY_ERR);
		free(r);
	}
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, error_html_502_after_retries)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL;
	const char *page = "<!DOCTYPE html>\n<html>\n<head>\n  <title>502 Bad Gateway</title>\n</head>\n"
	                   "<body><h1>Whoops, GitLab is taking too much time to respond.</h1></body></html>\n";
	int i;

	for (i = 0; i < 3; i++)
		ts_reply(s, 502, "Bad Gateway", "Content-Type: text/html\r\n", page);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EUPSTREAM);
	cr_assert_str_eq(ferror_last(), "GET projects/:id: 502 Bad Gateway: an HTML page (\"502 Bad Gateway\")");
	cr_assert_eq(ts_count(s), 3);
	cr_assert_eq(gitlab_last_status(gl), 502);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, error_429_plain_text)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL;
	gitlab_stats st;
	int i;

	for (i = 0; i < 3; i++)
		ts_reply(s, 429, "Too Many Requests", "Retry-After: 0\r\n", "Retry later\n");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id/issues"), FACTORY_EUPSTREAM);
	cr_assert_str_eq(ferror_last(), "GET projects/:id/issues: 429 Too Many Requests: Retry later");
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.requests, 3);
	cr_assert_eq(st.retries, 2);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, bad_2xx_bodies)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL;

	ts_reply(s, 200, "OK", NULL, "");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert_str_eq(ferror_last(), "GET projects/:id: 200 OK: empty body where JSON was expected");

	ts_reply(s, 200, "OK", NULL, "{\"id\": 1, \"name\": \"abc");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "truncated JSON"), "%s", ferror_last());

	ts_reply(s, 200, "OK", NULL, "{\"id\" 1, \"name\": \"abc\"}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert_str_eq(ferror_last(), "GET projects/:id: 200 OK: malformed JSON at byte 6 of 23");

	ts_reply(s, 200, "OK", NULL, "{\"id\":1} trailing");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "data after"), "%s", ferror_last());

	ts_reply(s, 200, "OK", "Content-Type: text/html\r\n",
	         "<!DOCTYPE html><html><head><title>Sign in · GitLab</title></head><body></body></html>");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "GET projects/:id: 200 OK: an HTML page (\"Sign in · GitLab\") where JSON was "
	                                "expected"),
	          "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "/api/v4"));
	cr_assert_null(out);

	/* A 200 cut short, every time: an upstream failure, not a status. */
	for (int i = 0; i < 3; i++)
		ts_push(s, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n[{\"id\":1", 0, TS_CLOSE);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EUPSTREAM);
	cr_assert(!strncmp(ferror_last(), "GET projects/:id: transfer closed", 33), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "(3 tries)"), "%s", ferror_last());
	cr_assert_null(out);

	/* DELETE: an empty body or 204 is the expected answer. */
	ts_reply(s, 204, "No Content", NULL, NULL);
	out = (cJSON *)1;
	cr_assert_eq(gitlab_request(&out, gl, "DELETE", NULL, "projects/:id/labels/3"), 0, "%s", ferror_last());
	cr_assert_null(out);
	ts_reply(s, 200, "OK", NULL, "");
	cr_assert_eq(gitlab_branch_delete(gl, "feature/x y"), 0, "%s", ferror_last());
	cr_assert_str_eq(ts_req(s, 9)->target, "/api/v4/projects/5/repository/branches/feature%2Fx%20y");
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, network_error_names_the_path)
{
	gitlab_options o;
	gitlab *gl = NULL;
	cJSON *out = NULL;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v4", ts_closed_port());
	gitlab_options_init(&o);
	o.api_url = url;
	o.project = "5";
	o.token = TOKEN;
	o.http.max_retries = 1;
	cr_assert_eq(gitlab_new(&gl, &o), 0);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id/issues/%d", 3), FACTORY_EUPSTREAM);
	cr_assert(!strncmp(ferror_last(), "GET projects/:id/issues/3: ", 27), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "2 tries"), "%s", ferror_last());
	cr_assert_eq(gitlab_last_status(gl), 0);
	gitlab_free(gl);
}

/* ---- dry run, secrets ---- */

Test(gitlab, dry_run_sends_no_write)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 1);
	cJSON *out = (cJSON *)1, *list = NULL;
	gitlab_stats st;

	cr_assert(gitlab_dry_run(gl));
	cr_assert_eq(gitlab_label_create(&out, gl, "priority::1", "#FF0000", "Urgent"), 0, "%s", ferror_last());
	cr_assert_null(out);
	out = (cJSON *)1;
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 4, "doing", "todo"), 0);
	cr_assert_null(out);
	cr_assert_eq(gitlab_branch_delete(gl, "old"), 0);
	cr_assert_eq(gitlab_issue_reorder(gl, 4, 10, 0), 0);
	cr_assert_eq(ts_count(s), 0);
	cr_assert(strstr(tu_log_text(), "dry-run: would POST projects/:id/labels "
	                                "{\"name\":\"priority::1\",\"color\":\"#FF0000\",\"description\":\"Urgent\"}"),
	          "%s", tu_log_text());
	cr_assert(strstr(tu_log_text(), "dry-run: would PUT projects/:id/issues/4 "
	                                "{\"add_labels\":\"doing\",\"remove_labels\":\"todo\"}"),
	          "%s", tu_log_text());
	cr_assert(strstr(tu_log_text(), "dry-run: would DELETE projects/:id/repository/branches/old"), "%s",
	          tu_log_text());
	/* Reads still go out. */
	ts_reply(s, 200, "OK", NULL, "[{\"id\":1}]");
	cr_assert_eq(gitlab_list_all(&list, gl, "projects/:id/labels", NULL, 0), 0);
	cr_assert_eq(ts_count(s), 1);
	cr_assert_str_eq(ts_req(s, 0)->method, "GET");
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.dry_run_writes, 4);
	cr_assert_eq(st.writes, 0);
	cr_assert_eq(st.reads, 1);
	cJSON_Delete(list);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, token_never_in_errors_or_logs)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL, *body = cJSON_CreateObject();
	char v[128];

	/* A server that echoes the token back in its error and its page. */
	ts_reply(s, 401, "Unauthorized", NULL, "{\"message\":\"401 Unauthorized: token " TOKEN " is not valid\"}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EAUTH);
	cr_assert_null(strstr(ferror_last(), TOKEN), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "[MASKED]"), "%s", ferror_last());
	ts_reply(s, 400, "Bad Request", NULL, "PRIVATE-TOKEN: " TOKEN "\nbad");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_EINVALID);
	cr_assert_null(strstr(ferror_last(), TOKEN), "%s", ferror_last());
	log_error("%s", ferror_last());

	/* A dry-run body that contains it is masked in the log too. */
	gitlab_free(gl);
	gl = client_for(s, "5", 1);
	cJSON_AddStringToObject(body, "description", "leaked " TOKEN " here");
	cr_assert_eq(gitlab_issue_create(&out, gl, body), 0);
	cr_assert(strstr(tu_log_text(), "dry-run: would POST projects/:id/issues"), "%s", tu_log_text());
	cr_assert_null(strstr(tu_log_text(), TOKEN), "%s", tu_log_text());
	cr_assert_null(strstr(tu_log_text(), "t0ken-value"), "%s", tu_log_text());

	/* It did go where it belongs. */
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(s, 0)->headers, "PRIVATE-TOKEN"), 0);
	cr_assert_str_eq(v, TOKEN);
	cJSON_Delete(body);
	gitlab_free(gl);
	ts_stop(s);
}

/* ---- labels ---- */

Test(gitlab, move_labels_validation)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL;
	char longname[300];

	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, "a,,b", NULL), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "empty label name"), "%s", ferror_last());
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, NULL, "x,"), FACTORY_EINVALID);
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, ",", NULL), FACTORY_EINVALID);
	memset(longname, 'n', 256);
	longname[256] = '\0';
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, longname, NULL), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "256 bytes"), "%s", ferror_last());
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, "ok,bad\nname", NULL), FACTORY_EINVALID);
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, "doing", "todo, doing"), FACTORY_EINVALID);
	cr_assert_eq(ts_count(s), 0);

	/* Nothing to move: no request. */
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, "", NULL), 0);
	cr_assert_null(out);
	cr_assert_eq(ts_count(s), 0);

	/* 255 bytes is fine; spaces around names are dropped; one PUT. */
	longname[255] = '\0';
	ts_reply(s, 200, "OK", NULL, "{\"iid\":1,\"labels\":[\"doing\"]}");
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, " status::doing , priority::1", "status::todo"), 0, "%s",
	             ferror_last());
	cr_assert_not_null(out);
	cJSON_Delete(out);
	cr_assert_eq(ts_count(s), 1);
	cr_assert_str_eq(ts_req(s, 0)->method, "PUT");
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/5/issues/1");
	cr_assert_str_eq(ts_req(s, 0)->body,
	                 "{\"add_labels\":\"status::doing,priority::1\",\"remove_labels\":\"status::todo\"}");
	ts_reply(s, 200, "OK", NULL, "{}");
	cr_assert_eq(gitlab_issue_move_labels(&out, gl, 1, longname, NULL), 0, "%s", ferror_last());
	cJSON_Delete(out);
	gitlab_free(gl);
	ts_stop(s);
}

/* ---- resources ---- */

Test(gitlab, resource_wrappers)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	cJSON *out = NULL;
	int i;

	for (i = 0; i < 8; i++)
		ts_reply(s, 200, "OK", NULL, "{\"id\":1}");
	cr_assert_eq(gitlab_label_update(&out, gl, 9, "#00FF00", NULL), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_note_create(&out, gl, "issues", 3, "hello", 1), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_board_list_create(&out, gl, 2, 9), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_mr_merge(&out, gl, 4, 1), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_branch_create(&out, gl, "factory/1", "main"), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_job_retry(&out, gl, 77), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_issue_reorder(gl, 3, 0, 12), 0);
	cr_assert_eq(gitlab_issue_get(&out, gl, 3), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_note_create(&out, gl, "epics", 3, "x", 0), FACTORY_EINVALID);
	cr_assert_eq(gitlab_issue_reorder(gl, 3, 0, 0), FACTORY_EINVALID);

	cr_assert_eq(ts_count(s), 8);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/5/labels/9");
	cr_assert_str_eq(ts_req(s, 0)->body, "{\"color\":\"#00FF00\"}");
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/issues/3/notes");
	cr_assert_str_eq(ts_req(s, 1)->body, "{\"body\":\"hello\",\"internal\":true}");
	cr_assert_str_eq(ts_req(s, 2)->target, "/api/v4/projects/5/boards/2/lists");
	cr_assert_str_eq(ts_req(s, 2)->body, "{\"label_id\":9}");
	cr_assert_str_eq(ts_req(s, 3)->method, "PUT");
	cr_assert_str_eq(ts_req(s, 3)->target, "/api/v4/projects/5/merge_requests/4/merge");
	cr_assert_str_eq(ts_req(s, 4)->body, "{\"branch\":\"factory/1\",\"ref\":\"main\"}");
	cr_assert_str_eq(ts_req(s, 5)->target, "/api/v4/projects/5/jobs/77/retry");
	cr_assert_str_eq(ts_req(s, 6)->target, "/api/v4/projects/5/issues/3/reorder");
	cr_assert_str_eq(ts_req(s, 6)->body, "{\"move_before_id\":12}");
	cr_assert_str_eq(ts_req(s, 7)->method, "GET");
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, job_trace_follows_redirect_without_token)
{
	ts_server *s = ts_start(), *store = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	tu_text t = {{0}, 0, 0};
	char loc[256];

	snprintf(loc, sizeof(loc), "Location: http://127.0.0.1:%d/bucket/77.log?X-Amz-Signature=abc\r\n", store->port);
	ts_reply(s, 302, "Found", loc, "");
	ts_reply(store, 200, "OK", "Content-Type: text/plain\r\n", "$ make\nok\n");
	cr_assert_eq(gitlab_job_trace(gl, 77, tu_text_sink, &t), 0, "%s", ferror_last());
	cr_assert_str_eq(t.data, "$ make\nok\n");
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/5/jobs/77/trace");
	cr_assert(ts_has_header(ts_req(s, 0), "PRIVATE-TOKEN"));
	cr_assert_not(ts_has_header(ts_req(store, 0), "PRIVATE-TOKEN"));

	/* A missing trace: GitLab's words, not the body in the sink. */
	ts_reply(s, 404, "Not Found", NULL, "{\"message\":\"404 Not found\"}");
	cr_assert_eq(gitlab_job_trace(gl, 78, tu_text_sink, &t), FACTORY_ENOTFOUND);
	cr_assert_str_eq(ferror_last(), "GET projects/:id/jobs/78/trace: 404 Not Found: 404 Not found");
	cr_assert_str_eq(t.data, "$ make\nok\n");
	gitlab_free(gl);
	ts_stop(s);
	ts_stop(store);
}

Test(gitlab, pagination_link_forms)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "5", 0);
	walk w = {0, 0, 0};
	char hdr[512];

	/* Unquoted rel, odd spacing, "next" not first; then a relative link. */
	snprintf(hdr, sizeof(hdr),
	         "Link: <http://127.0.0.1:%d/api/v4/projects/5/boards?page=1>;rel=first ,"
	         "  <http://127.0.0.1:%d/api/v4/projects/5/boards?page=2&a=%%2C> ;  rel=next\r\n",
	         s->port, s->port);
	ts_reply(s, 200, "OK", hdr, "[{\"id\":1}]");
	ts_reply(s, 200, "OK", "Link: </api/v4/projects/5/boards?page=3>; rel=\"next\"\r\n", "[{\"id\":2}]");
	ts_reply(s, 200, "OK", "Link: <http://127.0.0.1:1/x>; rel=\"prev\"\r\n", "[{\"id\":3}]");
	cr_assert_eq(gitlab_list_each(gl, "projects/:id/boards", NULL, NULL, 0, count_cb, &w), 0, "%s", ferror_last());
	cr_assert_eq(w.count, 3);
	cr_assert_eq(ts_count(s), 3);
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/5/boards?page=2&a=%2C");
	cr_assert_str_eq(ts_req(s, 2)->target, "/api/v4/projects/5/boards?page=3");
	gitlab_free(gl);
	ts_stop(s);
}

/* ---- one client over many projects, one budget ---- */

Test(gitlab, set_project_switches_id_and_keeps_the_connection)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, NULL, 0);
	gitlab_stats st;
	cJSON *out = NULL;
	int i;

	for (i = 0; i < 4; i++)
		ts_reply(s, 200, "OK", NULL, "{}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_ECONFIG);
	cr_assert_eq(gitlab_set_project(gl, "acme/sub group/app"), 0);
	cr_assert_str_eq(gitlab_project(gl), "acme/sub group/app");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id/issues/3"), 0);
	cJSON_Delete(out);
	cr_assert_str_eq(ts_req(s, 0)->target, "/api/v4/projects/acme%2Fsub%20group%2Fapp/issues/3");
	cr_assert_eq(gitlab_set_project(gl, "17"), 0);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id/labels"), 0);
	cJSON_Delete(out);
	cr_assert_str_eq(ts_req(s, 1)->target, "/api/v4/projects/17/labels");
	/* Group paths need no project. */
	cr_assert_eq(gitlab_set_project(gl, NULL), 0);
	cr_assert_null(gitlab_project(gl));
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "groups/acme/labels"), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), FACTORY_ECONFIG);
	cr_assert_eq(gitlab_set_project(gl, ""), 0);
	cr_assert_null(gitlab_project(gl));
	/* One connection, one set of counters for all of it. */
	cr_assert_eq(ts_connections(s), 1);
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.requests, 3);
	gitlab_free(gl);
	ts_stop(s);
}

Test(gitlab, stats_carry_throttling_and_pacing)
{
	ts_server *s = ts_start();
	gitlab *gl = client_for(s, "1", 0);
	gitlab_stats st;
	cJSON *out = NULL;
	char hdr[256];
	long now = (long)time(NULL);

	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.ratelimit_remaining, -1);
	cr_assert_eq(st.ratelimit_limit, -1);
	/* A 429, retried; then a 200 with 0 left, so the next call is paced. */
	snprintf(hdr, sizeof(hdr),
	         "Retry-After: 1\r\nRateLimit-Limit: 50\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: %ld\r\n",
	         now + 1);
	ts_reply(s, 429, "Too Many Requests", hdr, "Retry later");
	snprintf(hdr, sizeof(hdr), "RateLimit-Limit: 50\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: %ld\r\n",
	         now + 30);
	ts_reply(s, 200, "OK", hdr, "{}");
	ts_reply(s, 200, "OK", "RateLimit-Limit: 50\r\nRateLimit-Remaining: 49\r\n", "{}");
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), 0, "%s", ferror_last());
	cJSON_Delete(out);
	cr_assert_eq(gitlab_request(&out, gl, "GET", NULL, "projects/:id"), 0, "%s", ferror_last());
	cJSON_Delete(out);
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.requests, 3);
	cr_assert_eq(st.retries, 1);
	cr_assert_eq(st.throttled, 1);
	cr_assert_eq(st.paced, 1);
	cr_assert(st.paced_ms > 28000 && st.paced_ms <= 30000, "paced %ld ms", st.paced_ms);
	cr_assert_eq(st.ratelimit_remaining, 49);
	cr_assert_eq(st.ratelimit_limit, 50);
	gitlab_free(gl);
	ts_stop(s);
}

static long spaced[16];
static int nspaced;

static void record_spacing(long ms)
{
	if (nspaced < 16)
		spaced[nspaced] = ms;
	nspaced++;
}

Test(gitlab, notes_are_spaced_when_asked)
{
	ts_server *s = ts_start();
	gitlab_options o;
	gitlab *gl = NULL;
	gitlab_stats st;
	cJSON *out = NULL;
	char url[256];
	int i;

	nspaced = 0;
	http_set_sleep(record_spacing);
	ts_url(url, sizeof(url), s, "/api/v4");
	gitlab_options_init(&o);
	cr_assert_eq(o.notes_per_minute, 0);
	o.api_url = url;
	o.project = "5";
	o.token = TOKEN;
	o.notes_per_minute = 60;
	cr_assert_eq(gitlab_new(&gl, &o), 0, "%s", ferror_last());
	for (i = 0; i < 6; i++)
		ts_reply(s, 201, "Created", NULL, "{\"id\":1}");
	/* Three notes in a row: the second and third wait about a second. */
	for (i = 0; i < 3; i++) {
		cr_assert_eq(gitlab_note_create(&out, gl, i == 1 ? "merge_requests" : "issues", 4, "hello", 0), 0, "%s",
		             ferror_last());
		cJSON_Delete(out);
	}
	cr_assert_eq(nspaced, 2);
	cr_assert(spaced[0] > 900 && spaced[0] <= 1000, "%ld", spaced[0]);
	cr_assert(spaced[1] > 900 && spaced[1] <= 1000, "%ld", spaced[1]);
	/* Other writes, and notes written through gitlab_request, by path. */
	cr_assert_eq(gitlab_request(&out, gl, "POST", NULL, "projects/:id/issues"), 0);
	cJSON_Delete(out);
	cr_assert_eq(gitlab_request(&out, gl, "POST", NULL, "projects/:id/labels"), 0);
	cJSON_Delete(out);
	cr_assert_eq(nspaced, 2);
	cr_assert_eq(gitlab_request(&out, gl, "POST", NULL, "projects/:id/issues/12/notes"), 0);
	cJSON_Delete(out);
	cr_assert_eq(nspaced, 3);
	gitlab_get_stats(&st, gl);
	cr_assert_eq(st.paced, 3);
	cr_assert_eq(st.paced_ms, spaced[0] + spaced[1] + spaced[2]);
	gitlab_free(gl);
	ts_stop(s);
}
