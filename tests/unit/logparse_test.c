/* Tests for common/logparse: formats, fields, multi-line records, chunks, caps. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "logparse.h"

#define MAXR 16

typedef struct {
	int n;
	int64_t time[MAXR];
	loglevel level[MAXR];
	char msg[MAXR][256];
	char user[MAXR][64];
	char route[MAXR][64];
	char request[MAXR][64];
	int status[MAXR];
	char detail[MAXR][512];
	uint64_t line[MAXR];
} got;

static int collect(void *ctx, const log_record *r)
{
	got *g = ctx;

	if (g->n >= MAXR)
		return 0;
	g->time[g->n] = r->time_ms;
	g->level[g->n] = r->level;
	snprintf(g->msg[g->n], sizeof(g->msg[0]), "%.*s", (int)r->message_len, r->message);
	snprintf(g->user[g->n], sizeof(g->user[0]), "%s", r->user);
	snprintf(g->route[g->n], sizeof(g->route[0]), "%s", r->route);
	snprintf(g->request[g->n], sizeof(g->request[0]), "%s", r->request);
	snprintf(g->detail[g->n], sizeof(g->detail[0]), "%.*s", (int)r->detail_len, r->detail);
	g->status[g->n] = r->status;
	g->line[g->n] = r->line_no;
	g->n++;
	return 0;
}

static void parse_all(got *g, const logparse_options *o, const char *text)
{
	logparse *p;

	memset(g, 0, sizeof(*g));
	cr_assert_eq(logparse_new(&p, o), 0, "%s", ferror_last());
	cr_assert_eq(logparse_feed(p, text, strlen(text), collect, g), 0);
	cr_assert_eq(logparse_finish(p, collect, g), 0);
	logparse_free(p);
}

Test(logparse, json_lines_with_default_fields)
{
	got g;

	parse_all(&g, NULL,
	          "{\"time\":\"2026-11-27T10:00:01.250Z\",\"level\":\"error\",\"msg\":\"payment failed\","
	          "\"user_id\":\"u42\",\"route\":\"/checkout\",\"status\":502,\"request_id\":\"r-1\"}\n"
	          "{\"ts\":1795780800,\"level\":50,\"message\":\"x\",\"user\":{\"id\":7}}\n");
	cr_assert_eq(g.n, 2);
	cr_assert_eq(g.time[0], 1795773601250LL);
	cr_assert_eq(g.level[0], LOGLEVEL_ERROR);
	cr_assert_str_eq(g.msg[0], "payment failed");
	cr_assert_str_eq(g.user[0], "u42");
	cr_assert_str_eq(g.route[0], "/checkout");
	cr_assert_str_eq(g.request[0], "r-1");
	cr_assert_eq(g.status[0], 502);
	cr_assert_eq(g.time[1], 1795780800000LL);
	cr_assert_eq(g.level[1], LOGLEVEL_ERROR); /* pino/bunyan 50 */
	cr_assert_str_eq(g.user[1], "7");         /* user.id path */
}

Test(logparse, json_field_names_are_configurable)
{
	logparse_options o;
	got g;

	logparse_options_init(&o);
	o.message_fields = "text";
	o.user_fields = "customer.email, customer";
	o.level_fields = "sev";
	parse_all(&g, &o, "{\"sev\":\"FATAL\",\"text\":\"boom\",\"customer\":{\"email\":\"a@b.c\"}}\n");
	cr_assert_eq(g.n, 1);
	cr_assert_str_eq(g.msg[0], "boom");
	cr_assert_str_eq(g.user[0], "a@b.c");
	cr_assert_eq(g.level[0], LOGLEVEL_FATAL);
}

Test(logparse, logfmt_with_quotes_and_escapes)
{
	got g;

	parse_all(&g, NULL,
	          "ts=2026-11-27T10:00:00Z level=warn msg=\"card \\\"declined\\\" twice\" user=bob status=402\n"
	          "time=2026-11-27T10:00:01+01:00 lvl=ERROR msg=plain bare\n");
	cr_assert_eq(g.n, 2);
	cr_assert_str_eq(g.msg[0], "card \"declined\" twice");
	cr_assert_str_eq(g.user[0], "bob");
	cr_assert_eq(g.status[0], 402);
	cr_assert_eq(g.level[0], LOGLEVEL_WARN);
	cr_assert_eq(g.time[1], 1795773601000LL - 3600000LL);
	cr_assert_str_eq(g.msg[1], "plain");
}

Test(logparse, pattern_with_named_groups)
{
	logparse_options o;
	got g;

	logparse_options_init(&o);
	o.format = LOGPARSE_PATTERN;
	o.pattern = "^(?<time>\\S+ \\S+) \\[(?<level>\\w+)\\] (?<user>\\w+): (?<message>.*)$";
	parse_all(&g, &o, "2026-11-27 10:00:00,5 [ERROR] carol: upload failed\n");
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.time[0], 1795773600500LL);
	cr_assert_str_eq(g.user[0], "carol");
	cr_assert_str_eq(g.msg[0], "upload failed");
	cr_assert_eq(g.level[0], LOGLEVEL_ERROR);
}

Test(logparse, bad_pattern_is_a_config_error)
{
	logparse *p;
	logparse_options o;

	logparse_options_init(&o);
	o.pattern = "(?<message>unclosed";
	cr_assert_eq(logparse_new(&p, &o), FACTORY_ECONFIG);
	cr_assert(strstr(ferror_last(), "offset"));
	o.pattern = "(?<nomessage>x)";
	cr_assert_eq(logparse_new(&p, &o), FACTORY_ECONFIG);
}

Test(logparse, stack_traces_join_their_record)
{
	got g;

	parse_all(&g, NULL,
	          "2026-11-27 10:00:00 ERROR checkout crashed\n"
	          "java.lang.NullPointerException: x\n"
	          "\tat shop.Cart.total(Cart.java:42)\n"
	          "Caused by: java.io.IOException\n"
	          "\t... 3 more\n"
	          "2026-11-27 10:00:01 INFO fine\n"
	          "Traceback (most recent call last):\n"
	          "  File \"app.py\", line 3, in <module>\n");
	cr_assert_eq(g.n, 3);
	cr_assert_str_eq(g.msg[0], "checkout crashed");
	cr_assert_eq(g.level[0], LOGLEVEL_ERROR);
	/* a line that does not look like a continuation starts a record of its own */
	cr_assert_str_eq(g.msg[1], "java.lang.NullPointerException: x");
	cr_assert(strstr(g.detail[1], "Cart.java:42"));
	cr_assert(strstr(g.detail[1], "Caused by"));
	cr_assert_str_eq(g.msg[2], "fine");
	cr_assert(strstr(g.detail[2], "Traceback"));
	cr_assert_eq(g.line[2], 6);
}

Test(logparse, json_records_join_non_json_lines)
{
	logparse_options o;
	got g;

	logparse_options_init(&o);
	o.format = LOGPARSE_JSON;
	parse_all(&g, &o, "{\"msg\":\"a\",\"level\":\"error\"}\n  at x\nnot json\n{\"msg\":\"b\"}\n");
	cr_assert_eq(g.n, 2);
	cr_assert_str_eq(g.detail[0], "  at x\nnot json");
}

Test(logparse, chunks_do_not_matter)
{
	const char *text = "{\"msg\":\"one\",\"level\":\"error\"}\r\nts=1 msg=two\nthree four\n  cont\nlast-no-newline";
	logparse *p;
	got a, b;
	size_t i;

	parse_all(&a, NULL, text);
	memset(&b, 0, sizeof(b));
	cr_assert_eq(logparse_new(&p, NULL), 0);
	for (i = 0; text[i]; i++)
		cr_assert_eq(logparse_feed(p, text + i, 1, collect, &b), 0);
	cr_assert_eq(logparse_finish(p, collect, &b), 0);
	logparse_free(p);
	cr_assert_eq(a.n, 4);
	cr_assert_eq(b.n, a.n);
	for (i = 0; i < (size_t)a.n; i++) {
		cr_assert_str_eq(a.msg[i], b.msg[i]);
		cr_assert_str_eq(a.detail[i], b.detail[i]);
	}
	cr_assert_str_eq(a.msg[0], "one");
	cr_assert_str_eq(a.msg[3], "last-no-newline");
}

Test(logparse, long_lines_are_cut)
{
	logparse_options o;
	logparse *p;
	logparse_stats st;
	got g;
	char *big = malloc(10000);

	memset(big, 'a', 9999);
	big[9999] = '\n';
	logparse_options_init(&o);
	o.max_line = 100;
	memset(&g, 0, sizeof(g));
	cr_assert_eq(logparse_new(&p, &o), 0);
	cr_assert_eq(logparse_feed(p, big, 5000, collect, &g), 0);
	cr_assert_eq(logparse_feed(p, big + 5000, 5000, collect, &g), 0);
	cr_assert_eq(logparse_feed(p, big, 10000, collect, &g), 0);
	cr_assert_eq(logparse_finish(p, collect, &g), 0);
	logparse_get_stats(&st, p);
	cr_assert_eq(st.truncated_lines, 2);
	cr_assert_eq(g.n, 2);
	cr_assert_eq(strlen(g.msg[0]), 100);
	logparse_free(p);
	free(big);
}

Test(logparse, times)
{
	int64_t ms;

	cr_assert_eq(logparse_time(&ms, "1970-01-01T00:00:00Z", 20), 0);
	cr_assert_eq(ms, 0);
	cr_assert_eq(logparse_time(&ms, "2000-02-29 12:30:15.123456+02:30", 32), 0);
	cr_assert_eq(ms, 951827415123LL - 9000000LL);
	cr_assert_eq(logparse_time(&ms, "1795780800123", 13), 0);
	cr_assert_eq(ms, 1795780800123LL);
	cr_assert_eq(logparse_time(&ms, "1795780800123456789", 19), 0);
	cr_assert_eq(ms, 1795780800123LL);
	cr_assert_eq(logparse_time(&ms, "yesterday", 9), -1);
	cr_assert_eq(logparse_time(&ms, "2026-13-01", 10), -1);
}

Test(logparse, levels)
{
	cr_assert_eq(logparse_level("ERR", 3), LOGLEVEL_ERROR);
	cr_assert_eq(logparse_level("[Warning]", 9), LOGLEVEL_WARN);
	cr_assert_eq(logparse_level("3", 1), LOGLEVEL_ERROR);
	cr_assert_eq(logparse_level("60", 2), LOGLEVEL_FATAL);
	cr_assert_eq(logparse_level("banana", 6), LOGLEVEL_UNKNOWN);
	cr_assert_str_eq(loglevel_name(LOGLEVEL_WARN), "warn");
}

Test(logparse, plain_headers_are_skipped)
{
	got g;

	parse_all(
	        &g, NULL,
	        "2015-10-18 18:05:27,570 WARN [LeaseRenewer:x@h:9000] org.apache.hadoop.ipc.Client: Address changed\n"
	        "2017-05-16 00:00:00.008 25746 INFO nova.osapi.server [req-1 2 - - -] 10.1.1.1 \"GET /x\" status: 200\n"
	        "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:2181:Election@774] - Notification: 3\n"
	        "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\n"
	        "90019 gige6 gige temperature 1109484216 1 warning\n");
	cr_assert_eq(g.n, 5);
	cr_assert_str_eq(g.msg[0], "Address changed");
	cr_assert_eq(g.level[0], LOGLEVEL_WARN);
	cr_assert_str_eq(g.msg[1], "10.1.1.1 \"GET /x\" status: 200");
	cr_assert_str_eq(g.msg[2], "Notification: 3");
	cr_assert_str_eq(g.msg[3], "workerEnv.init() ok");
	cr_assert_eq(g.level[3], LOGLEVEL_INFO);
	cr_assert_str_eq(g.msg[4], "warning");
}

Test(logparse, json_strings_escapes_and_priorities)
{
	got g;

	parse_all(&g, NULL,
	          "{\"msg\":\"second\",\"message\":\"caf\\u00e9 \\ud83d\\ude00 "
	          "\\\"q\\\"\\n\\tx\\/y\",\"level\":\"error\","
	          "\"user_id\":\"u9\",\"user\":\"u1\",\"extra\":{\"a\":[1,{\"b\":\"}\"}]},\"ok\":true,\"n\":null,"
	          "\"stack\":\"at a\\nat b\",\"status\":503}\n"
	          "{\"msg\":\"x\"} trailing\n"
	          "{\"msg\":\"bad \\ud800 surrogate\",\"level\":\"warn\"}\n"
	          "{ }\n");
	cr_assert_eq(g.n, 4);
	/* "message" comes before "msg" in the candidates, wherever it is in the line */
	cr_assert_str_eq(g.msg[0], "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"\n\tx/y");
	cr_assert_str_eq(g.user[0], "u1");
	cr_assert_eq(g.status[0], 503);
	cr_assert_str_eq(g.detail[0], "at a\nat b");
	/* an object with something after it: the object is read (as cJSON reads it) */
	cr_assert_str_eq(g.msg[1], "x");
	/* what the fast reader refuses, cJSON decides: a lone surrogate is not JSON, so plain text */
	cr_assert_eq(g.level[2], LOGLEVEL_UNKNOWN);
	cr_assert(strstr(g.msg[2], "surrogate"));
	cr_assert_str_eq(g.msg[3], "{ }");
}
