/*
 * llm.h - talking to a language model with tools: the Anthropic Messages API
 * and OpenAI-compatible Chat Completions (OpenAI, Ollama, vLLM, llama.cpp's
 * server, LiteLLM, ...), over http.h and cJSON.
 *
 * Settings (config.h keys, environment names in brackets):
 *   llm.provider   [FACTORY_LLM_PROVIDER]  "anthropic" (default) or "openai"
 *   llm.base_url   [FACTORY_LLM_BASE_URL]  default https://api.anthropic.com
 *                  (the request goes to <base>/v1/messages) or
 *                  https://api.openai.com/v1 (<base>/chat/completions),
 *                  the same convention as each provider's own SDK
 *   llm.model      [FACTORY_LLM_MODEL]     required
 *   llm.api_key    [FACTORY_LLM_API_KEY]   required for anthropic, optional
 *                  for openai-compatible local servers; or llm.api_key_file
 *                  [FACTORY_LLM_API_KEY_FILE]. Registered with
 *                  log_add_secret(), sent only in its header, wiped at free.
 *   llm.max_tokens [FACTORY_LLM_MAX_TOKENS] per answer, default 8192
 *   llm.max_tokens_field  "max_tokens" (default) or "max_completion_tokens"
 *                  for OpenAI models that want the newer name
 *   llm.timeout_ms, llm.max_retries, llm.retry_budget_ms, llm.backoff_ms
 *   llm.prompt_cache  (anthropic) cache_control on the system prompt, the
 *                  tool list and the newest message; default true
 *
 * Retries: 408, 429, 500-599 (529 "overloaded" among them) and network
 * failures are tried again with exponential backoff and full jitter,
 * honouring retry-after-ms and retry-after, up to llm.max_retries times
 * and llm.retry_budget_ms of sleep in all. A context-length error (400/413
 * saying the prompt is too long) compacts the conversation one level
 * (llm_conv_compact) and tries again, up to three levels. Anything else ends
 * with FACTORY_EAUTH (401/403), FACTORY_ENOTFOUND (404: model or URL),
 * FACTORY_EINVALID (400: the service's own message), FACTORY_EUPSTREAM
 * (retries exhausted) or FACTORY_ETIMEOUT (the caller's deadline), each
 * with a message naming the provider, status and the service's words.
 *
 * Conversations are kept provider-neutral (text, tool_use and tool_result
 * blocks, Anthropic's shape) and serialised per provider; each message is
 * serialised once and kept, so building a request costs a copy, not a walk.
 */
#ifndef FACTORY_LLM_H
#define FACTORY_LLM_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"

typedef enum { LLM_ANTHROPIC = 0, LLM_OPENAI = 1 } llm_provider;

typedef struct {
	llm_provider provider;
	const char *base_url; /* NULL: the provider's default */
	const char *model;
	const char *api_key;          /* copied; may be NULL for openai */
	long max_tokens;              /* default 8192 */
	const char *max_tokens_field; /* openai: NULL = "max_tokens" */
	long timeout_ms;              /* one request, default 600000 */
	long connect_timeout_ms;      /* default 10000 */
	int max_retries;              /* default 6 */
	long retry_budget_ms;         /* default 300000 */
	long backoff_base_ms;         /* default 1000 */
	long backoff_max_ms;          /* default 60000 */
	int prompt_cache;             /* default 1 */
} llm_options;

void llm_options_init(llm_options *o);

/*
 * Fill `o` from the settings above. Strings point into the config (or the
 * environment) except the key read from a file, which goes to *key_out
 * (caller wipes and frees; NULL when the key came from elsewhere).
 * FACTORY_ECONFIG names the setting that is missing or bad.
 */
int llm_options_from_config(llm_options *o, char **key_out, const fconfig *cfg);

const char *llm_provider_name(llm_provider p);
/* "anthropic" / "openai" (also "openai-compatible"); -1 if unknown. */
int llm_provider_parse(const char *s);

/* ---- usage and prices ---- */

typedef struct {
	long input; /* input tokens not read from or written to the cache */
	long output;
	long cache_write; /* input tokens written to the prompt cache */
	long cache_read;  /* input tokens read from the prompt cache */
} llm_usage;

void llm_usage_add(llm_usage *sum, const llm_usage *u);
/* All input tokens: input + cache_write + cache_read. */
long llm_usage_input_total(const llm_usage *u);

/* USD per million tokens. */
typedef struct {
	double input, output, cache_write, cache_read;
} llm_price;

/*
 * The price of `model`: from `table` (a JSON object, model name -> {input,
 * output, cache_write, cache_read}; may be NULL) first, else the built-in
 * table; the longest key that is a prefix of the model name wins (so
 * "claude-sonnet-4-5" prices "claude-sonnet-4-5-20250929"). A missing
 * cache_write defaults to 1.25 x input, cache_read to 0.1 x input.
 * Returns 0, FACTORY_ENOTFOUND (no price known), FACTORY_ECONFIG (a bad
 * entry in `table`).
 */
int llm_price_lookup(llm_price *out, const char *model, const cJSON *table);
double llm_cost(const llm_price *p, const llm_usage *u);

/* ---- conversations ---- */

typedef struct llm_conv llm_conv;

/*
 * A new conversation with a system prompt and tools: `tools` is a JSON
 * array of {name, description, input_schema} (copied). Each schema must be
 * an object schema ({"type": "object", ...}); FACTORY_EINVALID otherwise.
 */
int llm_conv_new(llm_conv **out, llm_provider provider, const char *system, const cJSON *tools);
void llm_conv_free(llm_conv *c);

/* Add a user text block (to the open user message, or a new one). */
int llm_conv_add_user_text(llm_conv *c, const char *text);
/* Add a tool result answering tool_use `id` to the open user message. */
int llm_conv_add_tool_result(llm_conv *c, const char *id, const char *content, int is_error);
/* Number of messages (a user message being built counts). */
size_t llm_conv_count(const llm_conv *c);
/* Total bytes of the serialised messages (for reports and tests). */
size_t llm_conv_bytes(const llm_conv *c);

/*
 * Make the conversation smaller, one level at a time:
 *   1. tool results and long texts older than the last 4 messages are cut
 *      to their first 1,000 bytes with a note;
 *   2. the same for all but the last 2 messages, cut to 200 bytes;
 *   3. the oldest half of the exchanges after the first message (the task)
 *      are dropped whole, leaving a note in their place.
 * Roles stay alternating and every tool_result keeps its tool_use.
 * Returns 0, or FACTORY_ETOOBIG when nothing more can be removed.
 */
int llm_conv_compact(llm_conv *c, int level);

/* ---- answers ---- */

typedef enum {
	LLM_STOP_END = 0,    /* the model is done (end_turn, stop) */
	LLM_STOP_TOOL_USE,   /* it wants tools run (tool_use, tool_calls) */
	LLM_STOP_MAX_TOKENS, /* cut at max_tokens (max_tokens, length) */
	LLM_STOP_STOP_SEQUENCE,
	LLM_STOP_REFUSAL, /* refusal, content_filter */
	LLM_STOP_PAUSE,   /* pause_turn: ask again to let it go on */
	LLM_STOP_CONTEXT, /* model_context_window_exceeded */
	LLM_STOP_OTHER,
} llm_stop;

const char *llm_stop_name(llm_stop s);

typedef struct {
	char *id; /* the provider's id for the call */
	char *name;
	cJSON *input;      /* the arguments object, NULL when they did not parse */
	char *input_error; /* why they did not parse, NULL when they did */
} llm_tool_call;

typedef struct {
	llm_stop stop;
	char *stop_raw; /* the provider's own word */
	char *text;     /* the text blocks joined by "\n" ("" if none) */
	llm_tool_call *calls;
	size_t ncalls;
	llm_usage usage;
	char *model;    /* as the service reports it, may be NULL */
	cJSON *content; /* neutral content blocks, for llm_conv_add_assistant */
} llm_response;

void llm_response_init(llm_response *r);
void llm_response_release(llm_response *r);

/*
 * Parse a 2xx response body. Returns 0 or FACTORY_EINVALID naming what is
 * wrong ("answer has no choices", "tool_use block without an id", ...).
 * Tool arguments that do not parse are not an error here: the call gets
 * input NULL and input_error set, so the model can be told.
 */
int llm_parse_response(llm_response *out, llm_provider provider, const char *body, size_t len);

/* Add the model's answer to the conversation (its content is copied). */
int llm_conv_add_assistant(llm_conv *c, const llm_response *r);

/* ---- the client ---- */

typedef struct llm llm;

/* Create a client. FACTORY_ECONFIG for a missing model or key or a bad URL. */
int llm_new(llm **out, const llm_options *o);
void llm_free(llm *l);

const char *llm_model(const llm *l);
llm_provider llm_get_provider(const llm *l);

/* Build the request body for `c` into `out` (reset first); `max_tokens`
 * 0 means the client's setting. Exposed for tests. */
int llm_build_request(fbuf *out, const llm *l, llm_conv *c, long max_tokens);

/*
 * Ask the model for the next message: send `c`, retry as described, compact
 * on context-length errors, parse the answer into `out` (caller releases;
 * init'd here). `max_tokens` 0 means the client's setting; `deadline_ms`
 * (CLOCK_MONOTONIC milliseconds, 0 = none) bounds the whole call, retries
 * and sleeps included. Does not add the answer to `c`.
 */
int llm_send(llm_response *out, llm *l, llm_conv *c, long max_tokens, long deadline_ms);

typedef struct {
	long requests;    /* HTTP requests sent */
	long retries;     /* of which were retries */
	long compactions; /* context-length compactions */
	long slept_ms;    /* backoff in all */
	long http_us;     /* time inside HTTP requests, microseconds */
	long build_us;    /* time building requests */
	long parse_us;    /* time parsing answers */
	long last_status; /* last HTTP status (0 if none) */
} llm_stats;

void llm_get_stats(llm_stats *out, const llm *l);

/* For tests: replace the backoff sleep (NULL restores nanosleep). */
typedef void (*llm_sleep_fn)(long ms);
void llm_set_sleep(llm_sleep_fn fn);

/* Monotonic clock in milliseconds, the one deadlines use. */
long llm_now_ms(void);

#endif
