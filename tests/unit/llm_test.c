/* Tests for common/llm.c: request bodies for both APIs (tools, cache
 * markers, tool results), parsing answers (and refusing malformed ones),
 * compaction, prices, and llm_send against a real HTTP server on 127.0.0.1
 * (tests/unit/testserver.h): retries on 429/529/5xx and dropped
 * connections, retry-after, compaction on context-length errors, and the
 * errors that end a run. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "llm.h"
#include "log.h"
#include "testserver.h"

#define KEY "sk-ant-unit-test-key-0123456789"

static long slept[32];
static int nslept;

static void record_sleep(long ms)
{
	if (nslept < 32)
		slept[nslept++] = ms;
}

static cJSON *tools(void)
{
	return cJSON_Parse("[{\"name\":\"read_file\",\"description\":\"read\",\"input_schema\":{\"type\":\"object\","
	                   "\"properties\":{\"path\":{\"type\":\"string\"}},\"required\":[\"path\"]}},"
	                   "{\"name\":\"finish\",\"description\":\"end\",\"input_schema\":{\"type\":\"object\"}}]");
}

static llm *client(llm_provider p, const char *url, int cache)
{
	llm_options o;
	llm *l = NULL;

	llm_options_init(&o);
	o.provider = p;
	o.base_url = url ? url : "http://127.0.0.1:9";
	o.model = p == LLM_OPENAI ? "gpt-4o" : "claude-sonnet-4-5";
	o.api_key = KEY;
	o.prompt_cache = cache;
	o.max_retries = 4;
	o.backoff_base_ms = 10;
	o.timeout_ms = 5000;
	cr_assert_eq(llm_new(&l, &o), 0, "%s", ferror_last());
	return l;
}

static const char *anthropic_tool_answer =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\","
        "\"content\":[{\"type\":\"text\",\"text\":\"Let me look.\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\","
        "\"name\":\"read_file\",\"input\":{\"path\":\"a.c\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
        "\"usage\":{\"input_tokens\":100,\"output_tokens\":20,\"cache_creation_input_tokens\":50,"
        "\"cache_read_input_tokens\":30}}";

static const char *openai_tool_answer =
        "{\"id\":\"c1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"a.c\\\"}\"}},{\"id\":\"call_2\","
        "\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{broken\"}}]},"
        "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":9,"
        "\"prompt_tokens_details\":{\"cached_tokens\":20}}}";

/* A conversation: the task, one answer with calls, their results. */
static llm_conv *conversation(llm_provider p)
{
	llm_conv *c = NULL;
	llm_response r;
	cJSON *t = tools();
	const char *ans = p == LLM_OPENAI ? openai_tool_answer : anthropic_tool_answer;
	size_t i;

	cr_assert_eq(llm_conv_new(&c, p, "You are careful.", t), 0, "%s", ferror_last());
	cJSON_Delete(t);
	cr_assert_eq(llm_conv_add_user_text(c, "Fix the bug."), 0);
	cr_assert_eq(llm_parse_response(&r, p, ans, strlen(ans)), 0, "%s", ferror_last());
	cr_assert_eq(llm_conv_add_assistant(c, &r), 0);
	cr_assert_eq(llm_conv_add_user_text(c, "a note after the results"), 0);
	for (i = 0; i < r.ncalls; i++)
		cr_assert_eq(llm_conv_add_tool_result(c, r.calls[i].id, i ? "no such file" : "int a;", i != 0), 0);
	llm_response_release(&r);
	return c;
}

static cJSON *built(llm *l, llm_conv *c)
{
	fbuf b;
	cJSON *j;

	fbuf_init(&b, 0);
	cr_assert_eq(llm_build_request(&b, l, c, 0), 0, "%s", ferror_last());
	j = cJSON_Parse(b.ptr);
	cr_assert_not_null(j, "not JSON: %s", b.ptr);
	fbuf_release(&b);
	return j;
}

Test(llm, anthropic_request_has_cache_markers_and_ordered_results)
{
	llm *l = client(LLM_ANTHROPIC, NULL, 1);
	llm_conv *c = conversation(LLM_ANTHROPIC);
	cJSON *j = built(l, c), *msgs, *last, *blk;

	cr_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "claude-sonnet-4-5");
	cr_assert_eq(cJSON_GetObjectItem(j, "max_tokens")->valueint, 8192);
	cr_assert_not_null(
	        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "system"), 0), "cache_control"));
	cr_assert_not_null(
	        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tools"), 1), "cache_control"));
	cr_assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tools"), 0), "cache_control"));
	msgs = cJSON_GetObjectItem(j, "messages");
	cr_assert_eq(cJSON_GetArraySize(msgs), 3);
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "role")->valuestring, "assistant");
	last = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 2), "content");
	/* The result came after the note but goes first. */
	blk = cJSON_GetArrayItem(last, 0);
	cr_assert_str_eq(cJSON_GetObjectItem(blk, "type")->valuestring, "tool_result");
	cr_assert_str_eq(cJSON_GetObjectItem(blk, "tool_use_id")->valuestring, "toolu_1");
	blk = cJSON_GetArrayItem(last, cJSON_GetArraySize(last) - 1);
	cr_assert_str_eq(cJSON_GetObjectItem(blk, "type")->valuestring, "text");
	cr_assert_not_null(cJSON_GetObjectItem(blk, "cache_control"), "the newest block is a cache breakpoint");
	cJSON_Delete(j);
	/* Built again: the marker moved with nothing left behind. */
	cr_assert_eq(llm_conv_add_user_text(c, "more"), 0);
	j = built(l, c);
	last = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 2), "content");
	cr_assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(last, 1), "cache_control"));
	cJSON_Delete(j);
	llm_conv_free(c);
	llm_free(l);
}

Test(llm, anthropic_request_without_cache)
{
	llm *l = client(LLM_ANTHROPIC, NULL, 0);
	llm_conv *c = conversation(LLM_ANTHROPIC);
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(llm_build_request(&b, l, c, 100), 0);
	cr_assert_null(strstr(b.ptr, "cache_control"));
	cr_assert(strstr(b.ptr, "\"max_tokens\":100"), "%s", b.ptr);
	fbuf_release(&b);
	llm_conv_free(c);
	llm_free(l);
}

Test(llm, openai_request_turns_results_into_tool_messages)
{
	llm *l = client(LLM_OPENAI, NULL, 1);
	llm_conv *c = conversation(LLM_OPENAI);
	cJSON *j = built(l, c), *msgs, *m, *calls;

	cr_assert_null(cJSON_GetObjectItem(j, "system"));
	msgs = cJSON_GetObjectItem(j, "messages");
	/* system, user, assistant, tool, tool, user */
	cr_assert_eq(cJSON_GetArraySize(msgs), 6, "%s", cJSON_PrintUnformatted(msgs));
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "role")->valuestring, "system");
	m = cJSON_GetArrayItem(msgs, 2);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(m, "content")));
	calls = cJSON_GetObjectItem(m, "tool_calls");
	cr_assert_eq(cJSON_GetArraySize(calls), 2);
	/* Arguments go back exactly as the model wrote them, broken ones too. */
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(calls, 1), "function"), "arguments")
	                         ->valuestring,
	                 "{broken");
	m = cJSON_GetArrayItem(msgs, 4);
	cr_assert_str_eq(cJSON_GetObjectItem(m, "role")->valuestring, "tool");
	cr_assert_str_eq(cJSON_GetObjectItem(m, "tool_call_id")->valuestring, "call_2");
	cr_assert_str_eq(cJSON_GetObjectItem(m, "content")->valuestring, "ERROR: no such file");
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 5), "role")->valuestring, "user");
	cr_assert_str_eq(
	        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tools"), 0), "type")->valuestring,
	        "function");
	{
		char *text = cJSON_PrintUnformatted(j);
		cr_assert_null(strstr(text, "cache_control"));
		free(text);
	}
	cJSON_Delete(j);
	llm_conv_free(c);
	llm_free(l);
}

Test(llm, parses_anthropic_answers)
{
	llm_response r;

	cr_assert_eq(llm_parse_response(&r, LLM_ANTHROPIC, anthropic_tool_answer, strlen(anthropic_tool_answer)), 0);
	cr_assert_eq(r.stop, LLM_STOP_TOOL_USE);
	cr_assert_str_eq(r.text, "Let me look.");
	cr_assert_eq(r.ncalls, 1);
	cr_assert_str_eq(r.calls[0].id, "toolu_1");
	cr_assert_str_eq(cJSON_GetObjectItem(r.calls[0].input, "path")->valuestring, "a.c");
	cr_assert_eq(r.usage.input, 100);
	cr_assert_eq(r.usage.cache_write, 50);
	cr_assert_eq(r.usage.cache_read, 30);
	cr_assert_eq(llm_usage_input_total(&r.usage), 180);
	llm_response_release(&r);
}

Test(llm, parses_openai_answers)
{
	llm_response r;
	const char *ollama =
	        "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":"
	        "{\"name\":\"finish\",\"arguments\":{\"summary\":\"x\"}}}]},\"finish_reason\":\"stop\"}]}";

	cr_assert_eq(llm_parse_response(&r, LLM_OPENAI, openai_tool_answer, strlen(openai_tool_answer)), 0);
	cr_assert_eq(r.stop, LLM_STOP_TOOL_USE);
	cr_assert_eq(r.ncalls, 2);
	cr_assert_null(r.calls[0].input_error);
	cr_assert_null(r.calls[1].input);
	cr_assert_not_null(r.calls[1].input_error);
	cr_assert_eq(r.usage.input, 100);
	cr_assert_eq(r.usage.cache_read, 20);
	cr_assert_eq(r.usage.output, 9);
	llm_response_release(&r);
	/* Object arguments, no id, and "stop" with calls, as some local servers answer. */
	cr_assert_eq(llm_parse_response(&r, LLM_OPENAI, ollama, strlen(ollama)), 0, "%s", ferror_last());
	cr_assert_eq(r.stop, LLM_STOP_TOOL_USE);
	cr_assert_str_eq(r.calls[0].id, "call_0");
	cr_assert_str_eq(cJSON_GetObjectItem(r.calls[0].input, "summary")->valuestring, "x");
	llm_response_release(&r);
}

Test(llm, refuses_malformed_answers)
{
	static const char *const anth[] = {"",
	                                   "[]",
	                                   "not json",
	                                   "{\"type\":\"error\",\"error\":{}}",
	                                   "{\"content\":{}}",
	                                   "{\"content\":[{\"text\":\"x\"}]}",
	                                   "{\"content\":[{\"type\":\"tool_use\",\"name\":\"x\",\"input\":{}}]}",
	                                   "{\"content\":[{\"type\":\"text\"}]}",
	                                   NULL};
	static const char *const oai[] = {"{}",
	                                  "{\"choices\":[]}",
	                                  "{\"choices\":[{}]}",
	                                  "{\"choices\":[{\"message\":{\"content\":5}}]}",
	                                  "{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{}}]}}]}",
	                                  "{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}",
	                                  NULL};
	llm_response r;
	size_t i;

	for (i = 0; anth[i]; i++)
		cr_assert_eq(llm_parse_response(&r, LLM_ANTHROPIC, anth[i], strlen(anth[i])), FACTORY_EINVALID, "%s",
		             anth[i]);
	for (i = 0; oai[i]; i++)
		cr_assert_eq(llm_parse_response(&r, LLM_OPENAI, oai[i], strlen(oai[i])), FACTORY_EINVALID, "%s",
		             oai[i]);
}

Test(llm, stop_reasons)
{
	static const struct {
		llm_provider p;
		const char *body;
		llm_stop stop;
	} cases[] = {
	        {LLM_ANTHROPIC, "{\"content\":[],\"stop_reason\":\"end_turn\"}", LLM_STOP_END},
	        {LLM_ANTHROPIC, "{\"content\":[],\"stop_reason\":\"max_tokens\"}", LLM_STOP_MAX_TOKENS},
	        {LLM_ANTHROPIC, "{\"content\":[],\"stop_reason\":\"refusal\"}", LLM_STOP_REFUSAL},
	        {LLM_ANTHROPIC, "{\"content\":[],\"stop_reason\":\"pause_turn\"}", LLM_STOP_PAUSE},
	        {LLM_ANTHROPIC, "{\"content\":[],\"stop_reason\":null}", LLM_STOP_OTHER},
	        {LLM_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}",
	         LLM_STOP_MAX_TOKENS},
	        {LLM_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":\"content_filter\"}]}",
	         LLM_STOP_REFUSAL},
	        {LLM_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}",
	         LLM_STOP_END},
	};
	llm_response r;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(llm_parse_response(&r, cases[i].p, cases[i].body, strlen(cases[i].body)), 0, "%s",
		             cases[i].body);
		cr_assert_eq(r.stop, cases[i].stop, "%s", cases[i].body);
		llm_response_release(&r);
	}
}

Test(llm, tools_must_have_object_schemas)
{
	llm_conv *c = NULL;
	cJSON *bad = cJSON_Parse("[{\"name\":\"x\",\"input_schema\":{\"type\":\"string\"}}]");
	cJSON *badname = cJSON_Parse("[{\"name\":\"a b\",\"input_schema\":{\"type\":\"object\"}}]");

	cr_assert_eq(llm_conv_new(&c, LLM_ANTHROPIC, "s", bad), FACTORY_EINVALID);
	cr_assert_eq(llm_conv_new(&c, LLM_ANTHROPIC, "s", badname), FACTORY_EINVALID);
	cJSON_Delete(bad);
	cJSON_Delete(badname);
}

/* After compaction the request is still well formed: roles alternate and
 * every tool_result answers a tool_use of the message before. */
static void check_well_formed(llm *l, llm_conv *c)
{
	cJSON *j = built(l, c), *m, *b;
	const char *want = "user";
	cJSON *prev = NULL;

	cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "messages"))
	{
		cr_assert_str_eq(cJSON_GetObjectItem(m, "role")->valuestring, want);
		cJSON_ArrayForEach(b, cJSON_GetObjectItem(m, "content"))
		{
			if (!strcmp(cJSON_GetObjectItem(b, "type")->valuestring, "tool_result")) {
				const char *id = cJSON_GetObjectItem(b, "tool_use_id")->valuestring;
				cJSON *u;
				int found = 0;
				cr_assert_not_null(prev);
				cJSON_ArrayForEach(u, cJSON_GetObjectItem(prev, "content"))
				{
					cJSON *uid = cJSON_GetObjectItem(u, "id");
					if (uid && !strcmp(uid->valuestring, id))
						found = 1;
				}
				cr_assert(found, "tool_result %s has no tool_use before it", id);
			}
		}
		prev = m;
		want = !strcmp(want, "user") ? "assistant" : "user";
	}
	cJSON_Delete(j);
}

Test(llm, compaction_shrinks_and_keeps_the_shape)
{
	llm *l = client(LLM_ANTHROPIC, NULL, 0);
	llm_conv *c = NULL;
	cJSON *t = tools();
	char big[5000], ans[600];
	size_t before, i;
	llm_response r;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(llm_conv_new(&c, LLM_ANTHROPIC, "sys", t), 0);
	cJSON_Delete(t);
	cr_assert_eq(llm_conv_add_user_text(c, "task"), 0);
	for (i = 0; i < 10; i++) {
		snprintf(ans, sizeof(ans),
		         "{\"content\":[{\"type\":\"tool_use\",\"id\":\"t%zu\",\"name\":\"read_file\",\"input\":{"
		         "\"path\":\"f\"}}],"
		         "\"stop_reason\":\"tool_use\"}",
		         i);
		cr_assert_eq(llm_parse_response(&r, LLM_ANTHROPIC, ans, strlen(ans)), 0);
		cr_assert_eq(llm_conv_add_assistant(c, &r), 0);
		llm_response_release(&r);
		snprintf(ans, sizeof(ans), "t%zu", i);
		cr_assert_eq(llm_conv_add_tool_result(c, ans, big, 0), 0);
	}
	before = llm_conv_bytes(c);
	cr_assert_eq(llm_conv_compact(c, 1), 0);
	cr_assert_lt(llm_conv_bytes(c), before);
	check_well_formed(l, c);
	before = llm_conv_bytes(c);
	cr_assert_eq(llm_conv_compact(c, 2), 0);
	cr_assert_lt(llm_conv_bytes(c), before);
	cr_assert_eq(llm_conv_compact(c, 2), FACTORY_ETOOBIG, "nothing more to cut at that level");
	before = llm_conv_count(c);
	cr_assert_eq(llm_conv_compact(c, 3), 0);
	cr_assert_lt(llm_conv_count(c), before);
	check_well_formed(l, c);
	llm_conv_free(c);
	llm_free(l);
}

Test(llm, prices)
{
	llm_price p;
	llm_usage u = {1000000, 1000000, 0, 0};
	cJSON *table = cJSON_Parse(
	        "{\"my-local\":{\"input\":0,\"output\":0},\"claude-sonnet-4-5\":{\"input\":1,\"output\":2}}");
	cJSON *bad = cJSON_Parse("{\"m\":{\"input\":\"cheap\",\"output\":1}}");

	cr_assert_eq(llm_price_lookup(&p, "claude-sonnet-4-5-20250929", NULL), 0);
	cr_assert_float_eq(llm_cost(&p, &u), 18.0, 1e-9);
	cr_assert_eq(llm_price_lookup(&p, "claude-sonnet-4-5-20250929", table), 0);
	cr_assert_float_eq(p.input, 1.0, 1e-9);
	cr_assert_float_eq(p.cache_write, 1.25, 1e-9);
	cr_assert_float_eq(p.cache_read, 0.1, 1e-9);
	cr_assert_eq(llm_price_lookup(&p, "my-local-7b", table), 0);
	cr_assert_eq(llm_price_lookup(&p, "mystery-model", table), FACTORY_ENOTFOUND);
	cr_assert_eq(llm_price_lookup(&p, "m1", bad), FACTORY_ECONFIG);
	cr_assert_eq(llm_price_lookup(&p, "gpt-4o-mini-2024", NULL), 0);
	cr_assert_float_eq(p.input, 0.15, 1e-9, "the longest prefix wins");
	cJSON_Delete(table);
	cJSON_Delete(bad);
}

Test(llm, options_are_checked)
{
	llm_options o;
	llm *l = NULL;

	llm_options_init(&o);
	cr_assert_eq(llm_new(&l, &o), FACTORY_ECONFIG);
	o.model = "m";
	cr_assert_eq(llm_new(&l, &o), FACTORY_ECONFIG, "anthropic needs a key");
	cr_assert(strstr(ferror_last(), "FACTORY_LLM_API_KEY"), "%s", ferror_last());
	o.provider = LLM_OPENAI;
	o.base_url = "ftp://x";
	cr_assert_eq(llm_new(&l, &o), FACTORY_ECONFIG);
	o.base_url = "http://127.0.0.1:1/v1/";
	cr_assert_eq(llm_new(&l, &o), 0, "a local server needs no key: %s", ferror_last());
	llm_free(l);
	cr_assert_eq(llm_provider_parse("openai-compatible"), LLM_OPENAI);
	cr_assert_eq(llm_provider_parse("gemini"), -1);
}

/* ---- against a server ---- */

static char *ok_answer(void)
{
	return ts_response(200, "OK", "Content-Type: application/json\r\n",
	                   "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"done\"}],\"stop_reason\":"
	                   "\"end_turn\","
	                   "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}");
}

static void push(ts_server *s, char *raw, int flags)
{
	ts_push(s, raw, 0, flags);
	free(raw);
}

static void setup_server(void)
{
	nslept = 0;
	llm_set_sleep(record_sleep);
	log_set_level(LOG_ERROR);
}

TestSuite(llm_send, .init = setup_server);

static llm_conv *simple_conv(void)
{
	llm_conv *c = NULL;
	cJSON *t = tools();

	cr_assert_eq(llm_conv_new(&c, LLM_ANTHROPIC, "sys", t), 0);
	cJSON_Delete(t);
	cr_assert_eq(llm_conv_add_user_text(c, "task"), 0);
	return c;
}

/* A scripted server, an Anthropic client for it and a one-task
 * conversation: what the llm_send tests start with. */
typedef struct {
	ts_server *s;
	llm *l;
	llm_conv *c;
} model_server;

static void model_server_start(model_server *x)
{
	char url[256];

	x->s = ts_start();
	ts_url(url, sizeof(url), x->s, "");
	x->l = client(LLM_ANTHROPIC, url, 1);
	x->c = simple_conv();
}

static void model_server_end(model_server *x)
{
	llm_conv_free(x->c);
	llm_free(x->l);
	ts_stop(x->s);
}

Test(llm_send, retries_429_529_500_and_drops_then_answers)
{
	model_server x;
	llm_response r;
	llm_stats st;
	char hdr[256];

	model_server_start(&x);
	push(x.s,
	     ts_response(429, "Too Many Requests", "retry-after-ms: 1234\r\n",
	                 "{\"type\":\"error\",\"error\":"
	                 "{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}"),
	     0);
	push(x.s,
	     ts_response(529, "Overloaded", "retry-after: 2\r\n",
	                 "{\"type\":\"error\",\"error\":{\"type\":"
	                 "\"overloaded_error\",\"message\":\"Overloaded\"}}"),
	     0);
	push(x.s, ts_response(500, "Internal Server Error", "", "{}"), 0);
	push(x.s, ok_answer(), 0);
	cr_assert_eq(llm_send(&r, x.l, x.c, 0, 0), 0, "%s", ferror_last());
	cr_assert_str_eq(r.text, "done");
	llm_get_stats(&st, x.l);
	cr_assert_eq(st.requests, 4, "requests %ld retries %ld slept %d: %s", st.requests, st.retries, nslept,
	             ferror_last());
	cr_assert_eq(st.retries, 3);
	cr_assert_eq(nslept, 3);
	cr_assert_eq(slept[0], 1234, "retry-after-ms is honoured");
	cr_assert_eq(slept[1], 2000, "retry-after is honoured");
	cr_assert_eq(ts_count(x.s), 4);
	cr_assert_eq(ts_header(hdr, sizeof(hdr), ts_req(x.s, 0)->headers, "x-api-key"), 0);
	cr_assert_str_eq(hdr, KEY);
	cr_assert_eq(ts_header(hdr, sizeof(hdr), ts_req(x.s, 0)->headers, "anthropic-version"), 0);
	cr_assert_str_eq(ts_req(x.s, 0)->target, "/v1/messages");
	llm_response_release(&r);
	model_server_end(&x);
}

Test(llm_send, retries_a_dropped_connection)
{
	model_server x;
	llm_response r;
	llm_stats st;

	model_server_start(&x);
	/* The first connection is always fresh, so curl cannot hide the drop. */
	ts_push(x.s, "", 0, TS_DROP);
	push(x.s, ok_answer(), 0);
	cr_assert_eq(llm_send(&r, x.l, x.c, 0, 0), 0, "%s", ferror_last());
	llm_get_stats(&st, x.l);
	cr_assert_eq(st.retries, 1);
	llm_response_release(&r);
	model_server_end(&x);
}

Test(llm_send, gives_up_after_the_retries)
{
	model_server x;
	llm_response r;
	int i;

	model_server_start(&x);
	for (i = 0; i < 5; i++)
		push(x.s,
		     ts_response(529, "Overloaded", "",
		                 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
		                 "\"message\":\"Overloaded\"}}"),
		     0);
	cr_assert_eq(llm_send(&r, x.l, x.c, 0, 0), FACTORY_EUPSTREAM);
	cr_assert(strstr(ferror_last(), "529"), "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "overloaded_error"), "%s", ferror_last());
	cr_assert_eq(ts_count(x.s), 5, "one try and four retries");
	model_server_end(&x);
}

Test(llm_send, context_length_error_compacts_then_retries)
{
	model_server x;
	char big[3000], id[16];
	llm_response r;
	llm_stats st;
	int i;

	model_server_start(&x);
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (i = 0; i < 6; i++) {
		char ans[256];
		snprintf(ans, sizeof(ans),
		         "{\"content\":[{\"type\":\"tool_use\",\"id\":\"u%d\",\"name\":\"read_file\","
		         "\"input\":{}}],\"stop_reason\":\"tool_use\"}",
		         i);
		cr_assert_eq(llm_parse_response(&r, LLM_ANTHROPIC, ans, strlen(ans)), 0);
		llm_conv_add_assistant(x.c, &r);
		llm_response_release(&r);
		snprintf(id, sizeof(id), "u%d", i);
		llm_conv_add_tool_result(x.c, id, big, 0);
	}
	push(x.s,
	     ts_response(400, "Bad Request", "",
	                 "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	                 "\"message\":\"prompt is too long: 250000 tokens > 200000 maximum\"}}"),
	     0);
	push(x.s, ok_answer(), 0);
	cr_assert_eq(llm_send(&r, x.l, x.c, 0, 0), 0, "%s", ferror_last());
	llm_get_stats(&st, x.l);
	cr_assert_eq(st.compactions, 1);
	cr_assert_lt(ts_req(x.s, 1)->body_len, ts_req(x.s, 0)->body_len);
	llm_response_release(&r);
	model_server_end(&x);
}

Test(llm_send, errors_that_end_the_run)
{
	static const struct {
		int status;
		const char *body;
		int code;
		const char *says;
	} cases[] = {
	        {401,
	         "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}",
	         FACTORY_EAUTH, "invalid x-api-key"},
	        {404, "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: nope\"}}",
	         FACTORY_ENOTFOUND, "model: nope"},
	        {400,
	         "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"messages: bad\"}}",
	         FACTORY_EINVALID, "messages: bad"},
	        {200, "<html>not json</html>", FACTORY_EINVALID, "cannot be read"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		model_server x;
		llm_response r;

		model_server_start(&x);
		push(x.s, ts_response(cases[i].status, "X", "", cases[i].body), 0);
		cr_assert_eq(llm_send(&r, x.l, x.c, 0, 0), cases[i].code, "status %d: %s", cases[i].status,
		             ferror_last());
		cr_assert(strstr(ferror_last(), cases[i].says), "%s", ferror_last());
		cr_assert_null(strstr(ferror_last(), KEY));
		cr_assert_eq(ts_count(x.s), 1, "no retry for %d", cases[i].status);
		model_server_end(&x);
	}
}

Test(llm_send, openai_sends_bearer_to_chat_completions)
{
	ts_server *s = ts_start();
	char url[256], hdr[256];
	llm *l;
	llm_conv *c = NULL;
	llm_response r;
	cJSON *t = tools();

	push(s, ts_response(200, "OK", "", openai_tool_answer), 0);
	ts_url(url, sizeof(url), s, "/v1");
	l = client(LLM_OPENAI, url, 1);
	cr_assert_eq(llm_conv_new(&c, LLM_OPENAI, "sys", t), 0);
	cJSON_Delete(t);
	llm_conv_add_user_text(c, "task");
	cr_assert_eq(llm_send(&r, l, c, 0, 0), 0, "%s", ferror_last());
	cr_assert_eq(r.ncalls, 2);
	cr_assert_str_eq(ts_req(s, 0)->target, "/v1/chat/completions");
	cr_assert_eq(ts_header(hdr, sizeof(hdr), ts_req(s, 0)->headers, "Authorization"), 0);
	cr_assert_str_eq(hdr, "Bearer " KEY);
	llm_response_release(&r);
	llm_conv_free(c);
	llm_free(l);
	ts_stop(s);
}

Test(llm_send, deadline_bounds_the_call)
{
	model_server x;
	llm_response r;

	model_server_start(&x);
	ts_push(x.s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 3000, 0);
	/* Cut short by the deadline (the answer would have come, 3 s later). */
	cr_assert_eq(llm_send(&r, x.l, x.c, 0, llm_now_ms() + 300), FACTORY_ETIMEOUT, "%s", ferror_last());
	cr_assert(strstr(ferror_last(), "time budget ran out"), "%s", ferror_last());
	model_server_end(&x);
}
