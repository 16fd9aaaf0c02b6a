/*
 * Fuzz target for the LLM answer parser (common/llm.c): bodies from a model
 * service, Anthropic or OpenAI-compatible. The first byte picks the
 * provider; the rest is the body. Whatever parses must go into a
 * conversation, come back out as a request that is valid JSON, and survive
 * every level of compaction.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static llm *client[2];
	llm_provider p;
	llm_response r;
	llm_conv *c = NULL;
	cJSON *tools, *back;
	fbuf req;
	size_t i;
	int level;

	if (size < 1)
		return 0;
	p = (data[0] & 1) ? LLM_OPENAI : LLM_ANTHROPIC;
	if (!client[p]) {
		llm_options o;
		llm_options_init(&o);
		o.provider = p;
		o.model = "fuzz-model";
		o.api_key = "sk-fuzz-key-0123456789";
		o.base_url = "http://127.0.0.1:9";
		if (llm_new(&client[p], &o) < 0)
			abort();
	}
	if (llm_parse_response(&r, p, (const char *)data + 1, size - 1) < 0)
		return 0;
	/* What parsed is consistent. */
	if (!r.text || !r.content)
		abort();
	for (i = 0; i < r.ncalls; i++)
		if (!r.calls[i].id || !r.calls[i].name || (!r.calls[i].input == !r.calls[i].input_error))
			abort();
	tools = cJSON_Parse("[{\"name\":\"t\",\"input_schema\":{\"type\":\"object\"}}]");
	fbuf_init(&req, 0);
	if (tools && llm_conv_new(&c, p, "system", tools) == 0 && llm_conv_add_user_text(c, "task") == 0 &&
	    llm_conv_add_assistant(c, &r) == 0) {
		for (i = 0; i < r.ncalls; i++)
			llm_conv_add_tool_result(c, r.calls[i].id, "result", (int)(i & 1));
		for (level = 0; level <= 3; level++) {
			if (level)
				llm_conv_compact(c, level);
			if (llm_build_request(&req, client[p], c, 0) == 0) {
				back = cJSON_ParseWithLength(req.ptr, req.len);
				if (!back)
					abort(); /* we built something that is not JSON */
				cJSON_Delete(back);
			}
		}
	}
	fbuf_release(&req);
	llm_conv_free(c);
	cJSON_Delete(tools);
	llm_response_release(&r);
	return 0;
}
