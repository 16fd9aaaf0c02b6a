/* Tests for common/opinion.c against a scripted model on 127.0.0.1
 * (tests/unit/testserver.h speaking the Anthropic Messages API): the
 * question and the one tool in the request, the answer from the tool call
 * or from a JSON object in the text, an answer with neither, a failed call
 * that disables the opinion and one that does not, the room left and the
 * counts, no model configured and a bad setting. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "opinion.h"
#include "support/support.h"
#include "testserver.h"

#define KEY "sk-ant-opinion-test-key-0123456789"

static fconfig *cfg;

static void setup(void)
{
	llm_set_sleep(tu_no_sleep);
	tu_log_capture(LOG_INFO);
	cr_assert_eq(fconfig_new(&cfg), 0);
}

static void teardown(void)
{
	fconfig_free(cfg);
	cfg = NULL;
	tu_log_release();
	llm_set_sleep(NULL);
}

TestSuite(opinion, .init = setup, .fini = teardown, .timeout = 30);

static cJSON *schema(void)
{
	return cJSON_Parse("{\"type\":\"object\",\"properties\":{\"verdict\":{\"type\":\"string\"}},"
	                   "\"required\":[\"verdict\"]}");
}

static const opinion_options options = {
        .system = "You judge things.",
        .tool = "record_verdict",
        .description = "Record the verdict.",
        .max = 3,
        .answer_tokens = 321,
        .deadline_ms = 20000,
};

/* An opinion asking the model behind `s`. */
static opinion *open_for(ts_server *s, const opinion_options *o)
{
	opinion *op = NULL;
	char url[256];

	ts_url(url, sizeof(url), s, "");
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.model", "claude-sonnet-4-5"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.base_url", url), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.api_key", KEY), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.max_retries", "1"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.backoff_ms", "1"), 0);
	cr_assert_eq(opinion_open(&op, cfg, o, schema()), 0, "%s", ferror_last());
	cr_assert_not_null(op);
	return op;
}

/* Script one 200 answer with `content` (Anthropic content blocks). */
static void answer(ts_server *s, const char *content)
{
	char *body = ts_fmt("{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
	                    "\"claude-sonnet-4-5\",\"content\":%s,\"stop_reason\":\"end_turn\",\"usage\":"
	                    "{\"input_tokens\":10,\"output_tokens\":5}}",
	                    content);

	ts_reply(s, 200, "OK", "Content-Type: application/json\r\n", body);
	free(body);
}

static const char *verdict_of(const cJSON *a)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, "verdict");

	return cJSON_IsString(v) ? v->valuestring : "";
}

Test(opinion, no_model_no_opinion)
{
	opinion *op = (opinion *)1;
	long asked, changed, ignored;

	cr_assert_not(opinion_wanted(cfg));
	cr_assert_eq(opinion_open(&op, cfg, &options, schema()), 0);
	cr_assert_null(op);
	cr_assert_eq(opinion_room(op), 0);
	opinion_counters(op, &asked, &changed, &ignored);
	cr_assert_eq(asked + changed + ignored, 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.model", ""), 0);
	cr_assert_not(opinion_wanted(cfg));
	opinion_free(op);
}

Test(opinion, bad_setting_is_a_config_error)
{
	opinion *op = NULL;

	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.model", "m"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.provider", "nosuch"), 0);
	cr_assert(opinion_wanted(cfg));
	cr_assert_eq(opinion_open(&op, cfg, &options, schema()), FACTORY_ECONFIG);
	cr_assert_null(op);
	cr_assert(strstr(ferror_last(), "llm.provider"), "%s", ferror_last());
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.provider", "anthropic"), 0);
	cr_assert_eq(fconfig_set(cfg, CONFIG_FILE, "llm.api_key", KEY), 0);
	cr_assert_eq(opinion_open(&op, cfg, &options, NULL), FACTORY_ENOMEM, "a schema that could not be made");
	cr_assert_null(op);
	cr_assert_eq(opinion_open(&op, cfg, &options, cJSON_Parse("{\"type\":\"string\"}")), FACTORY_EINVALID);
	cr_assert(strstr(ferror_last(), "object schema"), "%s", ferror_last());
	cr_assert_null(op);
}

Test(opinion, tool_call_answer_and_the_request)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);
	cJSON *a = NULL, *req;
	const cJSON *tools;
	long asked, changed, ignored;

	answer(s, "[{\"type\":\"text\",\"text\":\"{\\\"verdict\\\":\\\"from text\\\"}\"},{\"type\":\"tool_use\","
	          "\"id\":\"toolu_1\",\"name\":\"record_verdict\",\"input\":{\"verdict\":\"yes\"}}]");
	cr_assert_eq(opinion_llm(op) != NULL, 1);
	cr_assert_str_eq(llm_model(opinion_llm(op)), "claude-sonnet-4-5");
	cr_assert_eq(opinion_room(op), 3);
	cr_assert_eq(opinion_ask(&a, op, "Is it good?", 2), 0, "%s", ferror_last());
	cr_assert_not_null(a);
	cr_assert_str_eq(verdict_of(a), "yes", "the tool call wins over the text");
	cJSON_Delete(a);
	cr_assert_eq(opinion_room(op), 1);
	opinion_counters(op, &asked, &changed, &ignored);
	cr_assert_eq(asked, 2);
	cr_assert_eq(changed + ignored, 0);

	cr_assert_eq(ts_count(s), 1);
	cr_assert_str_eq(ts_req(s, 0)->target, "/v1/messages");
	req = cJSON_Parse(ts_req(s, 0)->body);
	cr_assert_not_null(req);
	cr_assert_eq(cJSON_GetObjectItemCaseSensitive(req, "max_tokens")->valueint, 321);
	tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
	cr_assert_eq(cJSON_GetArraySize(tools), 1);
	cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "name")->valuestring,
	                 "record_verdict");
	cr_assert(strstr(ts_req(s, 0)->body, "You judge things."));
	cr_assert(strstr(ts_req(s, 0)->body, "Is it good?"));
	cJSON_Delete(req);
	opinion_free(op);
	ts_stop(s);
}

Test(opinion, json_object_in_the_text_is_an_answer)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);
	cJSON *a = NULL;

	answer(s, "[{\"type\":\"text\",\"text\":\"Here:\\n```json\\n{\\\"verdict\\\":\\\"no\\\"}\\n```\"}]");
	/* a call to another tool is not the answer; the text is */
	answer(s, "[{\"type\":\"text\",\"text\":\"{\\\"verdict\\\":\\\"maybe\\\"}\"},{\"type\":\"tool_use\","
	          "\"id\":\"toolu_2\",\"name\":\"other_tool\",\"input\":{\"verdict\":\"wrong\"}}]");
	cr_assert_eq(opinion_ask(&a, op, "q1", 1), 0);
	cr_assert_str_eq(verdict_of(a), "no");
	cJSON_Delete(a);
	cr_assert_eq(opinion_ask(&a, op, "q2", 1), 0);
	cr_assert_str_eq(verdict_of(a), "maybe");
	cJSON_Delete(a);
	opinion_free(op);
	ts_stop(s);
}

Test(opinion, answer_without_json_is_ignored_with_a_warning)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);
	cJSON *a = (cJSON *)1;
	long asked, changed, ignored;

	answer(s, "[{\"type\":\"text\",\"text\":\"I would rather not say.\"}]");
	cr_assert_eq(opinion_ask(&a, op, "q", 2), 0);
	cr_assert_null(a);
	opinion_counters(op, &asked, &changed, &ignored);
	cr_assert_eq(asked, 2);
	cr_assert_eq(ignored, 2);
	cr_assert(strstr(tu_log_text(), "model answer ignored: no record_verdict call and no JSON object"), "%s",
	          tu_log_text());
	cr_assert_eq(opinion_room(op), 1, "a bad answer does not stop the run's questions");
	opinion_free(op);
	ts_stop(s);
}

/* Script an Anthropic error answer and ask: no answer, and 0 all the same. */
static void ask_into_error(ts_server *s, opinion *op, int status, const char *reason, const char *type,
                           const char *message)
{
	cJSON *a = (cJSON *)1;
	char *body = ts_fmt("{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type, message);

	ts_reply(s, status, reason, "Content-Type: application/json\r\n", body);
	free(body);
	cr_assert_eq(opinion_ask(&a, op, "q", 1), 0);
	cr_assert_null(a);
}

Test(opinion, refused_key_disables_for_the_run)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);
	long asked, changed, ignored;

	ask_into_error(s, op, 401, "Unauthorized", "authentication_error", "invalid x-api-key");
	cr_assert_eq(opinion_room(op), 0);
	opinion_counters(op, &asked, &changed, &ignored);
	cr_assert_eq(asked, 1);
	cr_assert_eq(ignored, 1);
	cr_assert(strstr(tu_log_text(), "rules decide alone for the rest of the run"), "%s", tu_log_text());
	cr_assert_null(strstr(tu_log_text(), KEY), "the key is never logged");
	cr_assert_eq(ts_count(s), 1);
	opinion_free(op);
	ts_stop(s);
}

Test(opinion, rejected_question_does_not_disable)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);

	ask_into_error(s, op, 400, "Bad Request", "invalid_request_error", "odd question");
	cr_assert_eq(opinion_room(op), 2);
	cr_assert(strstr(tu_log_text(), "the rules decide"), "%s", tu_log_text());
	cr_assert_null(strstr(tu_log_text(), "rest of the run"), "%s", tu_log_text());
	opinion_free(op);
	ts_stop(s);
}

Test(opinion, counts_what_the_caller_says)
{
	ts_server *s = ts_start();
	opinion *op = open_for(s, &options);
	long asked, changed, ignored;

	opinion_changed(op, 2);
	opinion_ignored(op, 1, NULL);
	cr_assert_eq(tu_log_text()[0], '\0', "%s", tu_log_text());
	opinion_ignored(op, 3, "no list of changes");
	cr_assert(strstr(tu_log_text(), "model answer ignored: no list of changes"), "%s", tu_log_text());
	opinion_counters(op, &asked, &changed, &ignored);
	cr_assert_eq(asked, 0);
	cr_assert_eq(changed, 2);
	cr_assert_eq(ignored, 4);
	opinion_changed(NULL, 1);
	opinion_ignored(NULL, 1, NULL);
	opinion_free(op);
	ts_stop(s);
}
