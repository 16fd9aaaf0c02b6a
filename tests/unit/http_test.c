/* Tests for common/http.c against a real HTTP server on 127.0.0.1
 * (tests/unit/testserver.h): retries and their waits, budgets, network
 * failures, caps, redirects and what headers cross them. Waits are
 * recorded through http_set_sleep, never slept. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "http.h"
#include "log.h"
#include "testserver.h"
#include "version.h"
#include "support/support.h"

static long waits[64];
static int nwaits;

static void record_sleep(long ms)
{
	if (nwaits < 64)
		waits[nwaits] = ms;
	nwaits++;
}

static void setup(void)
{
	nwaits = 0;
	http_set_sleep(record_sleep);
	log_set_level(LOG_ERROR);
}

TestSuite(http, .init = setup, .timeout = 20);

static const char *const token_headers[] = {"PRIVATE-TOKEN: tok-abcdef-123456", "Authorization: Bearer zzz-secret-1",
                                            "Accept: application/json", NULL};

/* A client with small, fast settings. */
static http_client *client(int max_retries, long budget_ms)
{
	http_options o;
	http_client *c = NULL;

	http_options_init(&o);
	o.max_retries = max_retries;
	o.retry_budget_ms = budget_ms;
	o.backoff_base_ms = 100;
	o.backoff_max_ms = 1000;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = 5000;
	cr_assert_eq(http_client_new(&c, &o), 0, "%s", ferror_last());
	return c;
}

static int do_req(http_response *r, http_client *c, const char *method, const char *url, const char *body)
{
	http_request q;

	memset(&q, 0, sizeof(q));
	q.method = method;
	q.url = url;
	q.headers = token_headers;
	q.body = body;
	q.body_len = body ? strlen(body) : 0;
	return http_do(r, c, &q);
}

/* A scripted server, a client with small, fast settings, an answer to
 * fill and the URL of a path on the server: what most tests start with. */
typedef struct {
	ts_server *s;
	http_client *c;
	http_response r;
	char url[256];
} exchange;

static void exchange_start(exchange *x, int max_retries, long budget_ms, const char *path)
{
	x->s = ts_start();
	x->c = client(max_retries, budget_ms);
	http_response_init(&x->r);
	ts_url(x->url, sizeof(x->url), x->s, path);
}

static void exchange_end(exchange *x)
{
	http_response_release(&x->r);
	http_client_free(x->c);
	ts_stop(x->s);
}

Test(http, get_ok_user_agent_headers)
{
	exchange x;
	http_stats st;
	char v[64];

	exchange_start(&x, 3, 10000, "/api/v4/x?a=1");
	ts_reply(x.s, 200, "OK", "X-Thing: one\r\nRateLimit-Remaining: 41\r\nRateLimit-Reset: 1700000000\r\n", "[1,2]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(x.r.status, 200);
	cr_assert_str_eq(x.r.body.ptr, "[1,2]");
	cr_assert_eq(x.r.attempts, 1);
	cr_assert_eq(http_response_header(v, sizeof(v), &x.r, "x-thing"), 0);
	cr_assert_str_eq(v, "one");
	cr_assert_eq(http_response_header(v, sizeof(v), &x.r, "X-Missing"), FACTORY_ENOTFOUND);
	cr_assert_str_eq(x.r.effective_url, x.url);

	cr_assert_eq(ts_count(x.s), 1);
	cr_assert_str_eq(ts_req(x.s, 0)->method, "GET");
	cr_assert_str_eq(ts_req(x.s, 0)->target, "/api/v4/x?a=1");
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(x.s, 0)->headers, "User-Agent"), 0);
	cr_assert_str_eq(v, FACTORY_USER_AGENT);
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(x.s, 0)->headers, "PRIVATE-TOKEN"), 0);
	cr_assert_str_eq(v, "tok-abcdef-123456");

	http_client_stats(&st, x.c);
	cr_assert_eq(st.requests, 1);
	cr_assert_eq(st.retries, 0);
	cr_assert_eq(st.ratelimit_remaining, 41);
	cr_assert_eq(st.ratelimit_reset, 1700000000);
	exchange_end(&x);
}

Test(http, keep_alive_reuses_the_connection)
{
	exchange x;
	int i;

	exchange_start(&x, 0, 0, "/k");
	for (i = 0; i < 3; i++) {
		ts_reply(x.s, 200, "OK", NULL, "{}");
		cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	}
	cr_assert_eq(ts_count(x.s), 3);
	cr_assert_eq(ts_connections(x.s), 1);
	exchange_end(&x);
}

/* A GET is tried again after each of these statuses. */
static void retried_once(int status, const char *reason)
{
	ts_server *s = ts_start();
	http_client *c = client(3, 10000);
	http_response r;
	http_stats st;
	char url[256];

	ts_reply(s, status, reason, NULL, "busy");
	ts_reply(s, 200, "OK", NULL, "ok");
	ts_url(url, sizeof(url), s, "/r");
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0, "%d: %s", status, ferror_last());
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.body.ptr, "ok");
	cr_assert_eq(r.attempts, 2);
	cr_assert_eq(ts_count(s), 2);
	cr_assert_eq(nwaits, 1);
	/* No header: jittered backoff within the first step's cap. */
	cr_assert(waits[0] >= 0 && waits[0] <= 100, "wait %ld", waits[0]);
	http_client_stats(&st, c);
	cr_assert_eq(st.requests, 2);
	cr_assert_eq(st.retries, 1);
	cr_assert_eq(st.slept_ms, waits[0]);
	http_response_release(&r);
	http_client_free(c);
	ts_stop(s);
}

Test(http, get_retried_after_500)
{
	retried_once(500, "Internal Server Error");
}

Test(http, get_retried_after_502)
{
	retried_once(502, "Bad Gateway");
}

Test(http, get_retried_after_503)
{
	retried_once(503, "Service Unavailable");
}

Test(http, get_retried_after_504)
{
	retried_once(504, "Gateway Timeout");
}

Test(http, get_retried_after_429)
{
	retried_once(429, "Too Many Requests");
}

Test(http, no_retry_on_404)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/nf");
	ts_reply(x.s, 404, "Not Found", NULL, "{\"message\":\"404 Not Found\"}");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0);
	cr_assert_eq(x.r.status, 404);
	cr_assert_eq(ts_count(x.s), 1);
	cr_assert_eq(nwaits, 0);
	exchange_end(&x);
}

Test(http, post_not_retried_after_500)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/create");
	ts_reply(x.s, 500, "Internal Server Error", NULL, "oops");
	ts_reply(x.s, 201, "Created", NULL, "{}");
	cr_assert_eq(do_req(&x.r, x.c, "POST", x.url, "{\"a\":1}"), FACTORY_EUPSTREAM);
	cr_assert_eq(x.r.status, 500);
	cr_assert_str_eq(x.r.body.ptr, "oops");
	cr_assert_eq(ts_count(x.s), 1);
	cr_assert_eq(nwaits, 0);
	cr_assert_str_eq(ts_req(x.s, 0)->body, "{\"a\":1}");
	exchange_end(&x);
}

Test(http, post_retried_after_503_and_429)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/create");
	ts_reply(x.s, 503, "Service Unavailable", NULL, "");
	ts_reply(x.s, 429, "Too Many Requests", NULL, "Retry later");
	ts_reply(x.s, 201, "Created", NULL, "{\"id\":1}");
	cr_assert_eq(do_req(&x.r, x.c, "POST", x.url, "{\"a\":1}"), 0, "%s", ferror_last());
	cr_assert_eq(x.r.status, 201);
	cr_assert_eq(x.r.attempts, 3);
	cr_assert_eq(ts_count(x.s), 3);
	cr_assert_str_eq(ts_req(x.s, 2)->method, "POST");
	cr_assert_str_eq(ts_req(x.s, 2)->body, "{\"a\":1}");
	exchange_end(&x);
}

Test(http, retry_after_seconds)
{
	exchange x;

	exchange_start(&x, 3, 60000, "/ra");
	ts_reply(x.s, 429, "Too Many Requests", "Retry-After: 7\r\nRateLimit-Reset: 1\r\n", "Retry later");
	ts_reply(x.s, 200, "OK", NULL, "[]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(nwaits, 1);
	cr_assert_eq(waits[0], 7000);
	exchange_end(&x);
}

Test(http, retry_after_http_date)
{
	exchange x;
	char date[64], hdr[128];
	time_t when = time(NULL) + 5;
	struct tm tm;

	exchange_start(&x, 3, 60000, "/rd");
	gmtime_r(&when, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	snprintf(hdr, sizeof(hdr), "Retry-After: %s\r\n", date);
	ts_reply(x.s, 503, "Service Unavailable", hdr, "");
	ts_reply(x.s, 200, "OK", NULL, "[]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(nwaits, 1);
	cr_assert(waits[0] >= 3000 && waits[0] <= 5000, "wait %ld for %s", waits[0], date);
	exchange_end(&x);
}

Test(http, ratelimit_reset_when_no_retry_after)
{
	exchange x;
	http_stats st;
	char hdr[160];
	long reset = (long)time(NULL) + 4;

	exchange_start(&x, 3, 60000, "/rl");
	snprintf(hdr, sizeof(hdr), "RateLimit-Remaining: 0\r\nRateLimit-Reset: %ld\r\n", reset);
	ts_reply(x.s, 429, "Too Many Requests", hdr, "Retry later");
	ts_reply(x.s, 200, "OK", "RateLimit-Remaining: 599\r\n", "[]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(nwaits, 1);
	cr_assert(waits[0] >= 2000 && waits[0] <= 4000, "wait %ld", waits[0]);
	http_client_stats(&st, x.c);
	cr_assert_eq(st.ratelimit_remaining, 599);
	cr_assert_eq(st.ratelimit_reset, reset);
	exchange_end(&x);
}

Test(http, headerless_429_backoff_with_full_jitter)
{
	exchange x;
	long cap;
	int i, nonzero = 0;

	exchange_start(&x, 5, 600000, "/j");
	for (i = 0; i < 5; i++)
		ts_reply(x.s, 429, "Too Many Requests", NULL, "");
	ts_reply(x.s, 200, "OK", NULL, "[]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(x.r.attempts, 6);
	cr_assert_eq(nwaits, 5);
	for (i = 0, cap = 100; i<5; i++, cap = cap * 2> 1000 ? 1000 : cap * 2) {
		cr_assert(waits[i] >= 0 && waits[i] <= cap, "wait %d = %ld over %ld", i, waits[i], cap);
		nonzero += waits[i] > 0;
	}
	cr_assert(nonzero > 0);
	exchange_end(&x);
}

Test(http, jitter_spreads_waits)
{
	/* Many first waits from fresh clients: full jitter spreads them over
	 * [0, base], they are not all the same. */
	http_options o;
	http_client *c;
	ts_server *s = ts_start();
	http_response r;
	char url[256];
	long lo = 1000, hi = -1;
	int i;

	http_options_init(&o);
	o.max_retries = 1;
	o.backoff_base_ms = 1000;
	ts_url(url, sizeof(url), s, "/spread");
	http_response_init(&r);
	for (i = 0; i < 20; i++) {
		ts_reply(s, 503, "Service Unavailable", NULL, "");
		ts_reply(s, 200, "OK", NULL, "[]");
		cr_assert_eq(http_client_new(&c, &o), 0);
		cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0, "%s", ferror_last());
		http_client_free(c);
	}
	cr_assert_eq(nwaits, 20);
	for (i = 0; i < 20; i++) {
		cr_assert(waits[i] >= 0 && waits[i] <= 1000);
		lo = waits[i] < lo ? waits[i] : lo;
		hi = waits[i] > hi ? waits[i] : hi;
	}
	cr_assert(hi - lo > 100, "waits from %ld to %ld", lo, hi);
	http_response_release(&r);
	ts_stop(s);
}

Test(http, retry_budget_exhausted)
{
	exchange x;
	http_stats st;
	int i;

	exchange_start(&x, 10, 2500, "/b");
	for (i = 0; i < 5; i++)
		ts_reply(x.s, 503, "Service Unavailable", "Retry-After: 1\r\n", "down");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), FACTORY_EUPSTREAM);
	/* 1000 + 1000 slept; the third wait would pass 2500. */
	cr_assert_eq(nwaits, 2);
	cr_assert_eq(x.r.attempts, 3);
	cr_assert_eq(ts_count(x.s), 3);
	cr_assert_eq(x.r.status, 503);
	cr_assert_str_eq(x.r.body.ptr, "down");
	cr_assert(strstr(ferror_last(), "503"), "%s", ferror_last());
	http_client_stats(&st, x.c);
	cr_assert_eq(st.slept_ms, 2000);
	exchange_end(&x);
}

Test(http, retry_after_over_budget_stops_at_once)
{
	exchange x;

	exchange_start(&x, 10, 1000, "/long");
	ts_reply(x.s, 429, "Too Many Requests", "Retry-After: 3600\r\n", "Retry later");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), FACTORY_EUPSTREAM);
	cr_assert_eq(nwaits, 0);
	cr_assert_eq(x.r.status, 429);
	cr_assert_eq(ts_count(x.s), 1);
	exchange_end(&x);
}

Test(http, max_retries_exhausted)
{
	exchange x;
	int i;

	exchange_start(&x, 2, 100000, "/m");
	for (i = 0; i < 4; i++)
		ts_reply(x.s, 502, "Bad Gateway", NULL, "");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), FACTORY_EUPSTREAM);
	cr_assert_eq(x.r.attempts, 3);
	cr_assert_eq(ts_count(x.s), 3);
	cr_assert_eq(nwaits, 2);
	exchange_end(&x);
}

Test(http, connect_refused)
{
	http_client *c = client(2, 100000);
	http_response r;
	http_stats st;
	char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", ts_closed_port());
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), FACTORY_EUPSTREAM);
	cr_assert_eq(r.status, 0);
	cr_assert_eq(r.attempts, 3);
	cr_assert_eq(nwaits, 2);
	cr_assert(strstr(ferror_last(), "3 tries"), "%s", ferror_last());
	http_client_stats(&st, c);
	cr_assert_eq(st.requests, 3);
	/* A POST that never reached the server is safe to try again. */
	nwaits = 0;
	cr_assert_eq(do_req(&r, c, "POST", url, "{}"), FACTORY_EUPSTREAM);
	cr_assert_eq(r.attempts, 3);
	cr_assert_eq(nwaits, 2);
	http_response_release(&r);
	http_client_free(c);
}

Test(http, dropped_connection_get_retried)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/d");
	ts_push(x.s, "", 0, TS_DROP);
	ts_reply(x.s, 200, "OK", NULL, "fine");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(x.r.status, 200);
	cr_assert_str_eq(x.r.body.ptr, "fine");
	cr_assert_eq(x.r.attempts, 2);
	cr_assert_eq(nwaits, 1);
	exchange_end(&x);
}

Test(http, dropped_connection_post_not_retried)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/d");
	ts_push(x.s, "", 0, TS_DROP);
	ts_reply(x.s, 201, "Created", NULL, "{}");
	cr_assert_eq(do_req(&x.r, x.c, "POST", x.url, "{\"x\":1}"), FACTORY_EUPSTREAM);
	cr_assert_eq(x.r.status, 0);
	cr_assert_eq(ts_count(x.s), 1);
	cr_assert_eq(nwaits, 0);
	exchange_end(&x);
}

Test(http, truncated_body_retried)
{
	exchange x;

	exchange_start(&x, 3, 10000, "/t");
	ts_push(x.s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,2,3", 0, TS_CLOSE);
	ts_reply(x.s, 200, "OK", NULL, "[1,2,3]");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_str_eq(x.r.body.ptr, "[1,2,3]");
	cr_assert_eq(x.r.attempts, 2);
	cr_assert_eq(ts_connections(x.s), 2);
	exchange_end(&x);
}

Test(http, truncated_body_without_retries_fails)
{
	exchange x;

	exchange_start(&x, 0, 10000, "/t");
	ts_push(x.s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,2,3", 0, TS_CLOSE);
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), FACTORY_EUPSTREAM);
	cr_assert_eq(x.r.attempts, 1);
	/* A response cut short has no status to judge. */
	cr_assert_eq(x.r.status, 0);
	exchange_end(&x);
}

Test(http, timeout)
{
	ts_server *s = ts_start();
	http_options o;
	http_client *c;
	http_response r;
	char url[256];

	http_options_init(&o);
	o.max_retries = 0;
	o.timeout_ms = 50;
	cr_assert_eq(http_client_new(&c, &o), 0);
	ts_push(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", 150, 0);
	ts_url(url, sizeof(url), s, "/slow");
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), FACTORY_EUPSTREAM);
	cr_assert(strstr(ferror_last(), "imeout") || strstr(ferror_last(), "timed out"), "%s", ferror_last());
	http_response_release(&r);
	http_client_free(c);
	ts_stop(s);
}

static char *big_body(size_t n)
{
	char *b = malloc(n + 1);
	memset(b, 'x', n);
	b[n] = '\0';
	return b;
}

Test(http, response_cap)
{
	ts_server *s = ts_start();
	http_options o;
	http_client *c;
	http_response r;
	char url[256], *body = big_body(5000), *raw;

	http_options_init(&o);
	o.max_response = 1000;
	o.max_retries = 3;
	cr_assert_eq(http_client_new(&c, &o), 0);
	/* With a length, then without one (close-delimited): both stop. */
	ts_reply(s, 200, "OK", NULL, body);
	raw = ts_fmt("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", body);
	ts_push(s, raw, 0, TS_CLOSE);
	ts_url(url, sizeof(url), s, "/big");
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), FACTORY_ETOOBIG);
	cr_assert(strstr(ferror_last(), "cap"), "%s", ferror_last());
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), FACTORY_ETOOBIG);
	cr_assert_eq(ts_count(s), 2);
	cr_assert_eq(nwaits, 0);
	/* Exactly the cap is fine. */
	body[1000] = '\0';
	ts_reply(s, 200, "OK", NULL, body);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(r.body.len, 1000);
	free(raw);
	free(body);
	http_response_release(&r);
	http_client_free(c);
	ts_stop(s);
}

Test(http, redirect_same_host_keeps_token_and_final_headers)
{
	exchange x;
	char v[64];

	exchange_start(&x, 0, 0, "/first");
	ts_reply(x.s, 302, "Found", "Location: /second?x=1\r\nX-First: yes\r\n", "moved");
	ts_reply(x.s, 200, "OK", "X-Second: yes\r\n", "here");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(x.r.status, 200);
	cr_assert_str_eq(x.r.body.ptr, "here");
	cr_assert_eq(http_response_header(v, sizeof(v), &x.r, "X-First"), FACTORY_ENOTFOUND);
	cr_assert_eq(http_response_header(v, sizeof(v), &x.r, "X-Second"), 0);
	cr_assert(strstr(x.r.effective_url, "/second?x=1"), "%s", x.r.effective_url);
	cr_assert_eq(ts_count(x.s), 2);
	cr_assert_str_eq(ts_req(x.s, 1)->target, "/second?x=1");
	cr_assert(ts_has_header(ts_req(x.s, 1), "PRIVATE-TOKEN"));
	cr_assert(ts_has_header(ts_req(x.s, 1), "Authorization"));
	exchange_end(&x);
}

Test(http, redirect_cross_host_drops_token)
{
	ts_server *a = ts_start(), *b = ts_start();
	http_client *c = client(0, 0);
	http_response r;
	char url[256], loc[300], v[128];

	snprintf(loc, sizeof(loc), "Location: http://127.0.0.1:%d/storage/obj?sig=abc\r\n", b->port);
	ts_reply(a, 302, "Found", loc, "");
	ts_reply(b, 200, "OK", NULL, "trace text");
	ts_url(url, sizeof(url), a, "/api/v4/jobs/1/trace");
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0, "%s", ferror_last());
	cr_assert_str_eq(r.body.ptr, "trace text");
	cr_assert_eq(ts_count(a), 1);
	cr_assert_eq(ts_count(b), 1);
	cr_assert(ts_has_header(ts_req(a, 0), "PRIVATE-TOKEN"));
	cr_assert_not(ts_has_header(ts_req(b, 0), "PRIVATE-TOKEN"));
	cr_assert_not(ts_has_header(ts_req(b, 0), "Authorization"));
	cr_assert_not(strstr(ts_req(b, 0)->headers, "tok-abcdef"));
	/* Other headers still go. */
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(b, 0)->headers, "Accept"), 0);
	cr_assert_str_eq(v, "application/json");
	cr_assert_eq(ts_header(v, sizeof(v), ts_req(b, 0)->headers, "User-Agent"), 0);
	cr_assert_str_eq(v, FACTORY_USER_AGENT);
	http_response_release(&r);
	http_client_free(c);
	ts_stop(a);
	ts_stop(b);
}

Test(http, redirect_307_keeps_method_303_turns_to_get)
{
	exchange x;

	exchange_start(&x, 0, 0, "/post");
	ts_reply(x.s, 307, "Temporary Redirect", "Location: /again\r\n", "");
	ts_reply(x.s, 303, "See Other", "Location: /result\r\n", "");
	ts_reply(x.s, 200, "OK", NULL, "{}");
	cr_assert_eq(do_req(&x.r, x.c, "POST", x.url, "{\"k\":2}"), 0, "%s", ferror_last());
	cr_assert_eq(ts_count(x.s), 3);
	cr_assert_str_eq(ts_req(x.s, 1)->method, "POST");
	cr_assert_str_eq(ts_req(x.s, 1)->body, "{\"k\":2}");
	cr_assert_str_eq(ts_req(x.s, 2)->method, "GET");
	cr_assert_eq(ts_req(x.s, 2)->body_len, 0);
	exchange_end(&x);
}

Test(http, too_many_redirects)
{
	exchange x;
	int i;

	exchange_start(&x, 3, 10000, "/loop");
	for (i = 0; i < 10; i++)
		ts_reply(x.s, 302, "Found", "Location: /loop\r\n", "");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), FACTORY_EUPSTREAM);
	cr_assert(strstr(ferror_last(), "redirects"), "%s", ferror_last());
	cr_assert_eq(ts_count(x.s), 6);
	exchange_end(&x);
}

Test(http, redirects_not_followed_when_off)
{
	ts_server *s = ts_start();
	http_options o;
	http_client *c;
	http_response r;
	char url[256];

	http_options_init(&o);
	o.follow_redirects = 0;
	cr_assert_eq(http_client_new(&c, &o), 0);
	ts_reply(s, 302, "Found", "Location: /elsewhere\r\n", "");
	ts_url(url, sizeof(url), s, "/x");
	http_response_init(&r);
	cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0);
	cr_assert_eq(r.status, 302);
	cr_assert_eq(ts_count(s), 1);
	http_response_release(&r);
	http_client_free(c);
	ts_stop(s);
}

Test(http, sink_gets_2xx_body_error_body_buffered)
{
	exchange x;
	http_request q;
	tu_text sb = {{0}, 0, 0};

	exchange_start(&x, 0, 0, "/trace");
	ts_reply(x.s, 200, "OK", NULL, "line one\nline two\n");
	ts_reply(x.s, 404, "Not Found", NULL, "{\"message\":\"404 Not found\"}");
	memset(&q, 0, sizeof(q));
	q.method = "GET";
	q.url = x.url;
	q.sink = tu_text_sink;
	q.sink_ctx = &sb;
	cr_assert_eq(http_do(&x.r, x.c, &q), 0, "%s", ferror_last());
	cr_assert_str_eq(sb.data, "line one\nline two\n");
	cr_assert_eq(x.r.body.len, 0);
	cr_assert_eq(http_do(&x.r, x.c, &q), 0);
	cr_assert_eq(x.r.status, 404);
	cr_assert_str_eq(sb.data, "line one\nline two\n");
	cr_assert_str_eq(x.r.body.ptr, "{\"message\":\"404 Not found\"}");
	exchange_end(&x);
}

Test(http, sink_abort_is_returned)
{
	exchange x;
	http_request q;
	tu_text sb = {{0}, 0, 0};
	char *body = big_body(1000);

	exchange_start(&x, 3, 10000, "/trace");
	ts_reply(x.s, 200, "OK", NULL, body);
	memset(&q, 0, sizeof(q));
	q.method = "GET";
	q.url = x.url;
	q.sink = tu_text_sink;
	q.sink_ctx = &sb;
	cr_assert_eq(http_do(&x.r, x.c, &q), FACTORY_ETOOBIG);
	cr_assert_eq(ts_count(x.s), 1);
	free(body);
	exchange_end(&x);
}

Test(http, escape)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "x="), 0);
	cr_assert_eq(http_escape(&b, "group/sub proj~a_b.c-d%&?=+\xc3\xbc"), 0);
	cr_assert_str_eq(b.ptr, "x=group%2Fsub%20proj~a_b.c-d%25%26%3F%3D%2B%C3%BC");
	fbuf_release(&b);
}

Test(http, same_origin)
{
	cr_assert(http_same_origin("https://gitlab.example.com/api/v4", "https://GITLAB.example.com:443/x?y"));
	cr_assert(http_same_origin("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"));
	cr_assert_not(http_same_origin("http://127.0.0.1:8080/a", "http://127.0.0.1:8081/a"));
	cr_assert_not(http_same_origin("https://h/a", "http://h/a"));
	cr_assert_not(http_same_origin("https://h/a", "https://evil/a"));
	cr_assert_not(http_same_origin("not a url", "https://h/"));
}

Test(http, bad_request_rejected)
{
	http_client *c = client(0, 0);
	http_response r;
	http_request q;

	memset(&q, 0, sizeof(q));
	q.method = "GET";
	http_response_init(&r);
	cr_assert_eq(http_do(&r, c, &q), FACTORY_ERR);
	http_response_release(&r);
	http_client_free(c);
}

/* libcurl sends a request again by itself when a reused keep-alive
 * connection dies before any answer: counted for a GET, refused for a POST. */
Test(http, dead_keep_alive_connection)
{
	exchange x;
	http_stats st;

	exchange_start(&x, 0, 0, "/k");
	ts_reply(x.s, 200, "OK", NULL, "one");
	ts_push(x.s, "", 0, TS_DROP);
	ts_reply(x.s, 200, "OK", NULL, "two");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_str_eq(x.r.body.ptr, "two");
	cr_assert_eq(ts_count(x.s), 3);
	http_client_stats(&st, x.c);
	cr_assert_eq(st.requests, 3);
	cr_assert_eq(st.retries, 1);

	ts_reply(x.s, 200, "OK", NULL, "three");
	ts_push(x.s, "", 0, TS_DROP);
	ts_reply(x.s, 201, "Created", NULL, "{}");
	cr_assert_eq(do_req(&x.r, x.c, "GET", x.url, NULL), 0, "%s", ferror_last());
	cr_assert_eq(do_req(&x.r, x.c, "POST", x.url, "{\"once\":1}"), FACTORY_EUPSTREAM);
	cr_assert(strstr(ferror_last(), "not sent again"), "%s", ferror_last());
	cr_assert_eq(ts_count(x.s), 5);
	cr_assert_eq(nwaits, 0);
	exchange_end(&x);
}

/* ---- pacing: slowing down before the rate limit refuses us ---- */

/* "Date: ..." for unix time `t`, as a server sends it. */
static void http_date(char *out, size_t len, time_t t)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Rate-limit headers for a window of `quota` requests of which `remaining`
 * are left, resetting `secs` seconds after the server's `now`. */
static char *rl_headers(long quota, long remaining, long secs, time_t now)
{
	char date[64];

	http_date(date, sizeof(date), now);
	return ts_fmt("RateLimit-Limit: %ld\r\nRateLimit-Observed: %ld\r\nRateLimit-Remaining: %ld\r\n"
	              "RateLimit-Reset: %ld\r\nDate: %s\r\n",
	              quota, quota - remaining, remaining, (long)now + secs, date);
}

static http_client *pacing_client(int pct, long reserve, long budget_ms)
{
	http_options o;
	http_client *c = NULL;

	http_options_init(&o);
	o.max_retries = 3;
	o.retry_budget_ms = budget_ms;
	o.backoff_base_ms = 100;
	o.pace_below_pct = pct;
	o.pace_reserve = reserve;
	cr_assert_eq(http_client_new(&c, &o), 0, "%s", ferror_last());
	return c;
}

/* Send `n` GETs to `url`, each expected to succeed. */
static void gets(http_client *c, const char *url, int n)
{
	http_response r;
	int i;

	http_response_init(&r);
	for (i = 0; i < n; i++) {
		cr_assert_eq(do_req(&r, c, "GET", url, NULL), 0, "%s", ferror_last());
		cr_assert_eq(r.status, 200);
	}
	http_response_release(&r);
}

/* Two GETs from `c` to a new server: the first answered with the headers
 * `h` (freed here), the second with none; the pacing waits land in waits[]. */
static void gets_after(http_client *c, char *h)
{
	ts_server *s = ts_start();
	char url[256];

	ts_reply(s, 200, "OK", h, "[]");
	free(h);
	ts_reply(s, 200, "OK", NULL, "[]");
	ts_url(url, sizeof(url), s, "/p");
	gets(c, url, 2);
	ts_stop(s);
}

Test(http, pacing_defaults)
{
	http_options o;

	http_options_init(&o);
	cr_assert_eq(o.pace_below_pct, 10);
	cr_assert_eq(o.pace_reserve, -1);
}

Test(http, no_pacing_above_the_share)
{
	ts_server *s = ts_start();
	http_client *c = pacing_client(10, -1, 60000);
	http_stats st;
	time_t now = time(NULL);
	char url[256], *h;

	/* 10 of 100 left is not below 10%: no wait. */
	h = rl_headers(100, 10, 30, now);
	ts_reply(s, 200, "OK", h, "[]");
	ts_reply(s, 200, "OK", h, "[]");
	free(h);
	ts_url(url, sizeof(url), s, "/p");
	gets(c, url, 2);
	cr_assert_eq(nwaits, 0);
	http_client_stats(&st, c);
	cr_assert_eq(st.paced, 0);
	cr_assert_eq(st.paced_ms, 0);
	cr_assert_eq(st.ratelimit_limit, 100);
	cr_assert_eq(st.ratelimit_remaining, 10);
	http_client_free(c);
	ts_stop(s);
}

Test(http, pacing_spreads_what_is_left_over_the_window)
{
	ts_server *s = ts_start();
	http_client *c = pacing_client(10, 1, 60000);
	http_stats st;
	time_t now = time(NULL);
	char url[256], *h;

	/* 5 of 100 left (under 10%), reserve 1, 10 s to the reset: the next
	 * request waits 10000 / (5 - 1 + 1) = 2000 ms. */
	h = rl_headers(100, 5, 10, now);
	ts_reply(s, 200, "OK", h, "[]");
	free(h);
	h = rl_headers(100, 4, 8, now);
	ts_reply(s, 200, "OK", h, "[]");
	free(h);
	ts_reply(s, 200, "OK", NULL, "[]");
	ts_url(url, sizeof(url), s, "/p");
	gets(c, url, 1);
	cr_assert_eq(nwaits, 0, "the first request is not paced");
	gets(c, url, 1);
	cr_assert_eq(nwaits, 1);
	cr_assert(waits[0] > 1900 && waits[0] <= 2000, "wait %ld", waits[0]);
	/* 4 left, 8 s: 8000 / 4 = 2000 ms again; the last answer has no
	 * headers and changes nothing. */
	gets(c, url, 1);
	cr_assert_eq(nwaits, 2);
	cr_assert(waits[1] > 1900 && waits[1] <= 2000, "wait %ld", waits[1]);
	http_client_stats(&st, c);
	cr_assert_eq(st.paced, 2);
	cr_assert_eq(st.paced_ms, waits[0] + waits[1]);
	cr_assert_eq(st.slept_ms, 0, "pacing is not retry backoff");
	cr_assert_eq(st.throttled, 0);
	http_client_free(c);
	ts_stop(s);
}

Test(http, pacing_waits_for_the_reset_when_nothing_is_left)
{
	http_client *c = pacing_client(10, -1, 60000);
	http_stats st;

	/* A 200 with Remaining 0: the next request would be a 429, so it waits
	 * for the reset (6 s) instead of being refused. */
	gets_after(c, rl_headers(60, 0, 6, time(NULL)));
	cr_assert_eq(nwaits, 1);
	cr_assert(waits[0] > 5900 && waits[0] <= 6000, "wait %ld", waits[0]);
	http_client_stats(&st, c);
	cr_assert_eq(st.throttled, 0);
	cr_assert_eq(st.retries, 0);
	http_client_free(c);
}

Test(http, pacing_reserve_is_kept_for_other_jobs)
{
	http_client *c = pacing_client(10, 3, 60000);

	/* 3 left with a reserve of 3: this job waits for the reset (the 3 are
	 * for the other jobs on the token). */
	gets_after(c, rl_headers(100, 3, 4, time(NULL)));
	cr_assert_eq(nwaits, 1);
	cr_assert(waits[0] > 3900 && waits[0] <= 4000, "wait %ld", waits[0]);
	http_client_free(c);
}

Test(http, pacing_quota_from_observed_when_limit_is_per_minute)
{
	http_client *c = pacing_client(10, 0, 600000);
	time_t now = time(NULL);
	char date[64], *h;

	/* An hourly window of 7200: GitLab sends RateLimit-Limit 120 (per
	 * minute) but Observed 7000 + Remaining 200 = 7200. 200 is under 10%
	 * of 7200, so pacing starts (it would not against 120). */
	http_date(date, sizeof(date), now);
	h = ts_fmt("RateLimit-Limit: 120\r\nRateLimit-Observed: 7000\r\nRateLimit-Remaining: 200\r\n"
	           "RateLimit-Reset: %ld\r\nDate: %s\r\n",
	           (long)now + 201, date);
	gets_after(c, h);
	cr_assert_eq(nwaits, 1);
	/* 201000 / (200 + 1) = 1000 ms. */
	cr_assert(waits[0] > 900 && waits[0] <= 1000, "wait %ld", waits[0]);
	http_client_free(c);
}

Test(http, pacing_uses_the_servers_clock)
{
	http_client *c = pacing_client(10, 0, 60000);
	time_t server_now = time(NULL) - 3600;

	/* The server's clock is an hour behind ours: its reset is 8 s after
	 * its Date, which our clock would take as long past. */
	gets_after(c, rl_headers(100, 1, 8, server_now));
	cr_assert_eq(nwaits, 1);
	/* 8000 / (1 - 0 + 1) = 4000 ms. */
	cr_assert(waits[0] > 3900 && waits[0] <= 4000, "wait %ld", waits[0]);
	http_client_free(c);
}

Test(http, pacing_off)
{
	http_client *c = pacing_client(0, -1, 60000);

	gets_after(c, rl_headers(100, 0, 30, time(NULL)));
	cr_assert_eq(nwaits, 0);
	http_client_free(c);
}

Test(http, pacing_wait_is_cut_to_the_retry_budget_and_says_so)
{
	http_client *c = pacing_client(10, -1, 1500);
	http_stats st;

	tu_log_capture(LOG_WARN);
	/* Nothing left and 40 s to the reset, but the retry budget is 1.5 s. */
	gets_after(c, rl_headers(100, 0, 40, time(NULL)));
	cr_assert_eq(nwaits, 1);
	cr_assert_eq(waits[0], 1500);
	cr_assert(strstr(tu_log_text(), "retry budget of 1500 ms"), "%s", tu_log_text());
	cr_assert(strstr(tu_log_text(), "until the window resets"), "%s", tu_log_text());
	http_client_stats(&st, c);
	cr_assert_eq(st.paced_ms, 1500);
	tu_log_release();
	log_set_level(LOG_ERROR);
	http_client_free(c);
}

Test(http, retry_wait_counts_toward_the_pace)
{
	ts_server *s = ts_start();
	http_client *c = pacing_client(10, -1, 60000);
	http_stats st;
	time_t now = time(NULL);
	char url[256], *h;

	/* A 429 (Remaining 0, Retry-After 3): the retry waits 3 s, and the
	 * pacing plan from that 429 (wait for the reset) is already served by
	 * it, so the retry is not held up a second time. */
	h = rl_headers(60, 0, 3, now);
	{
		char *h2 = ts_fmt("%sRetry-After: 3\r\n", h);
		ts_reply(s, 429, "Too Many Requests", h2, "Retry later");
		free(h2);
	}
	free(h);
	ts_reply(s, 200, "OK", NULL, "[]");
	ts_url(url, sizeof(url), s, "/t");
	gets(c, url, 1);
	cr_assert_eq(nwaits, 1);
	cr_assert_eq(waits[0], 3000);
	http_client_stats(&st, c);
	cr_assert_eq(st.throttled, 1);
	cr_assert_eq(st.paced, 0);
	cr_assert_eq(st.retries, 1);
	http_client_free(c);
	ts_stop(s);
}

/* A fixed-window rate limiter shared by every client, as GitLab keeps one
 * count per token: `quota` requests per one-second window. */
typedef struct {
	pthread_mutex_t lock;
	long window;
	long count;
	long quota;
	long served;
	long refused;
} limiter;

static char *limiter_answer(void *vctx, const ts_request *req, size_t *len, int *flags)
{
	limiter *l = vctx;
	struct timespec ts;
	long observed, remaining;
	char date[64], *out;
	int refused;

	(void)req;
	(void)flags;
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&l->lock);
	if (ts.tv_sec != l->window) {
		l->window = ts.tv_sec;
		l->count = 0;
	}
	observed = ++l->count;
	refused = observed > l->quota;
	if (refused)
		l->refused++;
	else
		l->served++;
	pthread_mutex_unlock(&l->lock);
	remaining = observed > l->quota ? 0 : l->quota - observed;
	http_date(date, sizeof(date), ts.tv_sec);
	out = ts_fmt("HTTP/1.1 %s\r\nDate: %s\r\nRateLimit-Limit: %ld\r\nRateLimit-Observed: %ld\r\n"
	             "RateLimit-Remaining: %ld\r\nRateLimit-Reset: %ld\r\n%sContent-Length: %d\r\n\r\n%s",
	             refused ? "429 Too Many Requests" : "200 OK", date, l->quota, observed, remaining,
	             (long)ts.tv_sec + 1, refused ? "Retry-After: 1\r\n" : "", refused ? 12 : 2,
	             refused ? "Retry later\n" : "[]");
	*len = strlen(out);
	return out;
}

typedef struct {
	const char *url;
	int n;
	int failures;
} job_thread;

static void *job_main(void *arg)
{
	job_thread *j = arg;
	http_options o;
	http_client *c = NULL;
	http_response r;
	int i;

	http_options_init(&o);
	o.pace_below_pct = 50;
	o.pace_reserve = 2; /* three jobs: each other job may send one request on what it saw */
	o.retry_budget_ms = 10000;
	if (http_client_new(&c, &o) < 0) {
		j->failures = j->n;
		return NULL;
	}
	http_response_init(&r);
	for (i = 0; i < j->n; i++)
		if (do_req(&r, c, "GET", j->url, NULL) < 0 || r.status != 200)
			j->failures++;
	http_response_release(&r);
	http_client_free(c);
	return NULL;
}

Test(http, jobs_sharing_a_token_stay_under_the_limit)
{
	/* Three jobs at once against one shared limit of 20 requests a
	 * second, 20 requests each (60 in all, three windows at least): with
	 * pacing and a reserve of 2 none of them is ever refused. Real sleeps. */
	ts_server *s = ts_start();
	limiter l;
	job_thread jobs[3];
	pthread_t th[3];
	char url[256];
	int i;

	http_set_sleep(NULL);
	memset(&l, 0, sizeof(l));
	pthread_mutex_init(&l.lock, NULL);
	l.quota = 20;
	ts_set_handler(s, limiter_answer, &l);
	ts_url(url, sizeof(url), s, "/shared");
	for (i = 0; i < 3; i++) {
		jobs[i].url = url;
		jobs[i].n = 20;
		jobs[i].failures = 0;
		cr_assert_eq(pthread_create(&th[i], NULL, job_main, &jobs[i]), 0);
	}
	for (i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(jobs[i].failures, 0, "job %d: %d failures", i, jobs[i].failures);
	}
	cr_assert_eq(l.served, 60);
	cr_assert_eq(l.refused, 0, "%ld requests refused with 429", l.refused);
	ts_stop(s);
	pthread_mutex_destroy(&l.lock);
}
