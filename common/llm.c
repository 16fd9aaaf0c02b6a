/* llm.c - Anthropic Messages and OpenAI-compatible Chat Completions with tools. */
#define _GNU_SOURCE
#include "llm.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "error.h"
#include "http.h"
#include "json.h"
#include "log.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define MAX_RESPONSE ((size_t)32 << 20)
#define MAX_REQUEST ((size_t)64 << 20)
#define KEY_FILE_MAX 4096
#define MAX_COMPACTIONS 3

long llm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void default_sleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static llm_sleep_fn sleep_fn = default_sleep;

void llm_set_sleep(llm_sleep_fn fn)
{
	sleep_fn = fn ? fn : default_sleep;
}

/* ---- options ---- */

void llm_options_init(llm_options *o)
{
	memset(o, 0, sizeof(*o));
	o->provider = LLM_ANTHROPIC;
	o->max_tokens = 8192;
	o->timeout_ms = 600000;
	o->connect_timeout_ms = 10000;
	o->max_retries = 6;
	o->retry_budget_ms = 300000;
	o->backoff_base_ms = 1000;
	o->backoff_max_ms = 60000;
	o->prompt_cache = 1;
}

const char *llm_provider_name(llm_provider p)
{
	return p == LLM_OPENAI ? "openai" : "anthropic";
}

int llm_provider_parse(const char *s)
{
	if (!s)
		return -1;
	if (!strcasecmp(s, "anthropic") || !strcasecmp(s, "claude"))
		return LLM_ANTHROPIC;
	if (!strcasecmp(s, "openai") || !strcasecmp(s, "openai-compatible") || !strcasecmp(s, "openai_compatible"))
		return LLM_OPENAI;
	return -1;
}

static int read_key_file(char **out, const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t len;

	*out = NULL;
	if (!f)
		return ferror_set(FACTORY_ECONFIG, "cannot read the LLM key file %s: %s", path, strerror(errno));
	if (!(buf = calloc(1, KEY_FILE_MAX + 1))) {
		fclose(f);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	len = fread(buf, 1, KEY_FILE_MAX, f);
	fclose(f);
	while (len && isspace((unsigned char)buf[len - 1]))
		buf[--len] = '\0';
	if (!len || strchr(buf, '\n')) {
		free(buf);
		return ferror_set(FACTORY_ECONFIG, "the LLM key file %s must hold one line", path);
	}
	*out = buf;
	return 0;
}

int llm_options_from_config(llm_options *o, char **key_out, const fconfig *cfg)
{
	const char *v, *file;
	long n;
	int p, b, error;

	*key_out = NULL;
	llm_options_init(o);
	v = fconfig_get_str(cfg, "llm.provider", "anthropic");
	if ((p = llm_provider_parse(v)) < 0)
		return ferror_set(FACTORY_ECONFIG, "bad setting llm.provider=%s: expected anthropic or openai", v);
	o->provider = (llm_provider)p;
	o->base_url = fconfig_get_str(cfg, "llm.base_url", NULL);
	if (o->base_url && !*o->base_url)
		o->base_url = NULL;
	if ((error = fconfig_require(&o->model, cfg, "llm.model")) < 0)
		return error;
	o->api_key = fconfig_get_str(cfg, "llm.api_key", NULL);
	if (o->api_key && !*o->api_key)
		o->api_key = NULL;
	if (!o->api_key && (file = fconfig_get_str(cfg, "llm.api_key_file", NULL)) && *file) {
		if ((error = read_key_file(key_out, file)) < 0)
			return error;
		o->api_key = *key_out;
	}
	if (o->api_key)
		log_add_secret(o->api_key);
	if ((error = fconfig_get_long(&n, cfg, "llm.max_tokens", o->max_tokens, 1, 1000000)) < 0)
		return error;
	o->max_tokens = n;
	o->max_tokens_field = fconfig_get_str(cfg, "llm.max_tokens_field", NULL);
	if (o->max_tokens_field && strcmp(o->max_tokens_field, "max_tokens") != 0 &&
	    strcmp(o->max_tokens_field, "max_completion_tokens") != 0)
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting llm.max_tokens_field=%s: expected max_tokens or max_completion_tokens",
		                  o->max_tokens_field);
	if ((error = fconfig_get_long(&n, cfg, "llm.timeout_ms", o->timeout_ms, 100, 3600000)) < 0)
		return error;
	o->timeout_ms = n;
	if ((error = fconfig_get_long(&n, cfg, "llm.connect_timeout_ms", o->connect_timeout_ms, 100, 600000)) < 0)
		return error;
	o->connect_timeout_ms = n;
	if ((error = fconfig_get_long(&n, cfg, "llm.max_retries", o->max_retries, 0, 100)) < 0)
		return error;
	o->max_retries = (int)n;
	if ((error = fconfig_get_long(&n, cfg, "llm.retry_budget_ms", o->retry_budget_ms, 0, 3600000)) < 0)
		return error;
	o->retry_budget_ms = n;
	if ((error = fconfig_get_long(&n, cfg, "llm.backoff_ms", o->backoff_base_ms, 1, 600000)) < 0)
		return error;
	o->backoff_base_ms = n;
	if ((error = fconfig_get_bool(&b, cfg, "llm.prompt_cache", 1)) < 0)
		return error;
	o->prompt_cache = b;
	return 0;
}

/* ---- usage and prices ---- */

void llm_usage_add(llm_usage *sum, const llm_usage *u)
{
	sum->input += u->input;
	sum->output += u->output;
	sum->cache_write += u->cache_write;
	sum->cache_read += u->cache_read;
}

long llm_usage_input_total(const llm_usage *u)
{
	return u->input + u->cache_write + u->cache_read;
}

typedef struct {
	const char *prefix;
	llm_price price;
} price_row;

/* Published list prices, USD per million tokens. */
static const price_row builtin_prices[] = {
        {"claude-opus-4-5", {5.0, 25.0, 6.25, 0.50}},
        {"claude-opus-4", {15.0, 75.0, 18.75, 1.50}},
        {"claude-sonnet-4", {3.0, 15.0, 3.75, 0.30}},
        {"claude-3-7-sonnet", {3.0, 15.0, 3.75, 0.30}},
        {"claude-3-5-sonnet", {3.0, 15.0, 3.75, 0.30}},
        {"claude-haiku-4-5", {1.0, 5.0, 1.25, 0.10}},
        {"claude-3-5-haiku", {0.80, 4.0, 1.0, 0.08}},
        {"gpt-4o-mini", {0.15, 0.60, 0.15, 0.075}},
        {"gpt-4o", {2.50, 10.0, 2.50, 1.25}},
        {"gpt-4.1-nano", {0.10, 0.40, 0.10, 0.025}},
        {"gpt-4.1-mini", {0.40, 1.60, 0.40, 0.10}},
        {"gpt-4.1", {2.0, 8.0, 2.0, 0.50}},
        {"o4-mini", {1.10, 4.40, 1.10, 0.275}},
        {"o3", {2.0, 8.0, 2.0, 0.50}},
        {NULL, {0, 0, 0, 0}},
};

static int price_number(double *out, const cJSON *entry, const char *key, const char *model, int required)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, key);

	if (!v) {
		if (required)
			return ferror_set(FACTORY_ECONFIG, "bad price for model %s: %s is missing", model, key);
		return 1;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || !isfinite(v->valuedouble))
		return ferror_set(FACTORY_ECONFIG,
		                  "bad price for model %s: %s must be a number of USD per "
		                  "million tokens, 0 or more",
		                  model, key);
	*out = v->valuedouble;
	return 0;
}

int llm_price_lookup(llm_price *out, const char *model, const cJSON *table)
{
	const cJSON *e, *best = NULL;
	size_t best_len = 0, i;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!model)
		return ferror_set(FACTORY_ENOTFOUND, "no model named");
	if (table && !cJSON_IsObject(table))
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting llm.prices: expected a mapping of model names to prices");
	cJSON_ArrayForEach(e, table)
	{
		size_t n = strlen(e->string);
		if (n >= best_len && !strncmp(model, e->string, n)) {
			best = e;
			best_len = n;
		}
	}
	if (best) {
		if (!cJSON_IsObject(best))
			return ferror_set(FACTORY_ECONFIG,
			                  "bad price for model %s: expected input, output, "
			                  "cache_write, cache_read",
			                  best->string);
		if ((rc = price_number(&out->input, best, "input", best->string, 1)) < 0 ||
		    (rc = price_number(&out->output, best, "output", best->string, 1)) < 0)
			return rc;
		if ((rc = price_number(&out->cache_write, best, "cache_write", best->string, 0)) < 0)
			return rc;
		if (rc == 1)
			out->cache_write = out->input * 1.25;
		if ((rc = price_number(&out->cache_read, best, "cache_read", best->string, 0)) < 0)
			return rc;
		if (rc == 1)
			out->cache_read = out->input * 0.1;
		return 0;
	}
	for (i = 0, best_len = 0; builtin_prices[i].prefix; i++) {
		size_t n = strlen(builtin_prices[i].prefix);
		if (n > best_len && !strncmp(model, builtin_prices[i].prefix, n)) {
			*out = builtin_prices[i].price;
			best_len = n;
		}
	}
	if (best_len)
		return 0;
	return ferror_set(FACTORY_ENOTFOUND, "no price known for model %s", model);
}

double llm_cost(const llm_price *p, const llm_usage *u)
{
	return ((double)u->input * p->input + (double)u->output * p->output + (double)u->cache_write * p->cache_write +
	        (double)u->cache_read * p->cache_read) /
	       1e6;
}

/* ---- JSON helpers ---- */

/* Append `s` as a JSON string literal. */
static int put_json_str(fbuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *run = p;
	int error;

	if ((error = fbuf_putc(b, '"')) < 0)
		return error;
	for (; *p; p++) {
		const char *esc = NULL;
		char u[7];
		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		if ((error = fbuf_put(b, run, (size_t)(p - run))) < 0)
			return error;
		switch (*p) {
		case '"':
			esc = "\\\"";
			break;
		case '\\':
			esc = "\\\\";
			break;
		case '\n':
			esc = "\\n";
			break;
		case '\r':
			esc = "\\r";
			break;
		case '\t':
			esc = "\\t";
			break;
		case '\b':
			esc = "\\b";
			break;
		case '\f':
			esc = "\\f";
			break;
		default:
			memcpy(u, "\\u00", 4);
			u[4] = hex[*p >> 4];
			u[5] = hex[*p & 15];
			u[6] = '\0';
			esc = u;
		}
		if ((error = fbuf_puts(b, esc)) < 0)
			return error;
		run = p + 1;
	}
	if ((error = fbuf_put(b, run, (size_t)(p - run))) < 0)
		return error;
	return fbuf_putc(b, '"');
}

static long jlong(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e15 ? (long)v->valuedouble : 0;
}

/* ---- conversations ---- */

typedef struct {
	int assistant;  /* 0 user, 1 assistant */
	cJSON *content; /* neutral blocks */
	char *ser;      /* cached serialisation (no cache marker), NULL when stale */
	size_t ser_len;
} conv_msg;

struct llm_conv {
	llm_provider provider;
	char *system;
	cJSON *tools;
	char *tools_ser;     /* cached */
	int tools_ser_cache; /* the prompt_cache flag tools_ser was made with */
	conv_msg *msgs;
	size_t n, alloc;
	int user_open; /* the last message is a user message still taking blocks */
};

static int valid_tool_name(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (!(isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == '-'))
			return 0;
	return n >= 1 && n <= 64;
}

int llm_conv_new(llm_conv **out, llm_provider provider, const char *system, const cJSON *tools)
{
	llm_conv *c;
	const cJSON *t;

	*out = NULL;
	if (tools && !cJSON_IsArray(tools))
		return ferror_set(FACTORY_EINVALID, "tools must be an array");
	cJSON_ArrayForEach(t, tools)
	{
		const char *name = json_str(t, "name");
		const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
		if (!name || !valid_tool_name(name))
			return ferror_set(FACTORY_EINVALID, "a tool needs a name of 1-64 letters, digits, _ or -");
		if (!cJSON_IsObject(schema) || !json_str(schema, "type") ||
		    strcmp(json_str(schema, "type"), "object") != 0)
			return ferror_set(FACTORY_EINVALID, "tool %s: input_schema must be an object schema", name);
	}
	if (!(c = calloc(1, sizeof(*c))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	c->provider = provider;
	c->tools_ser_cache = -1;
	if (!(c->system = strdup(system ? system : "")) ||
	    !(c->tools = tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateArray())) {
		llm_conv_free(c);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	*out = c;
	return 0;
}

void llm_conv_free(llm_conv *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		cJSON_Delete(c->msgs[i].content);
		free(c->msgs[i].ser);
	}
	free(c->msgs);
	cJSON_Delete(c->tools);
	free(c->tools_ser);
	free(c->system);
	free(c);
}

size_t llm_conv_count(const llm_conv *c)
{
	return c->n;
}

static int conv_push(llm_conv *c, int assistant, cJSON *content)
{
	if (c->n == c->alloc) {
		size_t na = c->alloc ? c->alloc * 2 : 16;
		conv_msg *nm = realloc(c->msgs, na * sizeof(*nm));
		if (!nm)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		c->msgs = nm;
		c->alloc = na;
	}
	c->msgs[c->n].assistant = assistant;
	c->msgs[c->n].content = content;
	c->msgs[c->n].ser = NULL;
	c->msgs[c->n].ser_len = 0;
	c->n++;
	return 0;
}

/* The open user message, made when needed; NULL (ferror set) when out of memory. */
static conv_msg *open_user(llm_conv *c)
{
	conv_msg *m;
	cJSON *content;

	if (!c->user_open || !c->n || c->msgs[c->n - 1].assistant) {
		if (!(content = cJSON_CreateArray())) {
			ferror_set(FACTORY_ENOMEM, "out of memory");
			return NULL;
		}
		if (conv_push(c, 0, content) < 0) {
			cJSON_Delete(content);
			return NULL;
		}
		c->user_open = 1;
	}
	m = &c->msgs[c->n - 1];
	free(m->ser);
	m->ser = NULL;
	return m;
}

int llm_conv_add_user_text(llm_conv *c, const char *text)
{
	conv_msg *m;
	cJSON *b;

	if (!(m = open_user(c)))
		return FACTORY_ENOMEM;
	if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "type", "text") ||
	    !cJSON_AddStringToObject(b, "text", text && *text ? text : "(empty)")) {
		cJSON_Delete(b);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	cJSON_AddItemToArray(m->content, b);
	return 0;
}

int llm_conv_add_tool_result(llm_conv *c, const char *id, const char *content, int is_error)
{
	conv_msg *m;
	cJSON *b;

	if (!id)
		return ferror_set(FACTORY_EINVALID, "a tool result needs the id of its call");
	if (!(m = open_user(c)))
		return FACTORY_ENOMEM;
	if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "type", "tool_result") ||
	    !cJSON_AddStringToObject(b, "tool_use_id", id) ||
	    !cJSON_AddStringToObject(b, "content", content && *content ? content : "(no output)") ||
	    (is_error && !cJSON_AddTrueToObject(b, "is_error"))) {
		cJSON_Delete(b);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	/* Tool results come first in a user message (both APIs want them there).
	 * cJSON 1.7.15's InsertItemInArray loses items, so move the others aside. */
	{
		cJSON *others = cJSON_CreateArray(), *it, *next;
		if (!others) {
			cJSON_Delete(b);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		for (it = m->content->child; it; it = next) {
			const char *t = json_str(it, "type");
			next = it->next;
			if (!t || strcmp(t, "tool_result") != 0) {
				cJSON_DetachItemViaPointer(m->content, it);
				cJSON_AddItemToArray(others, it);
			}
		}
		cJSON_AddItemToArray(m->content, b);
		while ((it = others->child)) {
			cJSON_DetachItemViaPointer(others, it);
			cJSON_AddItemToArray(m->content, it);
		}
		cJSON_Delete(others);
	}
	return 0;
}

int llm_conv_add_assistant(llm_conv *c, const llm_response *r)
{
	cJSON *content = NULL, *b;
	int error;

	if (!(content = r->content ? cJSON_Duplicate(r->content, 1) : cJSON_CreateArray()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!cJSON_GetArraySize(content)) {
		if (!(b = cJSON_CreateObject()) || !cJSON_AddStringToObject(b, "type", "text") ||
		    !cJSON_AddStringToObject(b, "text", "(no answer)")) {
			cJSON_Delete(b);
			cJSON_Delete(content);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		cJSON_AddItemToArray(content, b);
	}
	if ((error = conv_push(c, 1, content)) < 0) {
		cJSON_Delete(content);
		return error;
	}
	c->user_open = 0;
	return 0;
}

/* ---- serialising ---- */

static int ser_anthropic(fbuf *b, const conv_msg *m, int cache_last)
{
	cJSON *last = NULL, *marker = NULL;
	char *s;
	int error;

	if (cache_last && (last = cJSON_GetArrayItem(m->content, cJSON_GetArraySize(m->content) - 1))) {
		const char *t = json_str(last, "type");
		if (t && (!strcmp(t, "text") || !strcmp(t, "tool_result") || !strcmp(t, "tool_use"))) {
			if (!(marker = cJSON_CreateObject()) || !cJSON_AddStringToObject(marker, "type", "ephemeral")) {
				cJSON_Delete(marker);
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			}
			cJSON_AddItemToObject(last, "cache_control", marker);
		} else {
			last = NULL;
		}
	}
	s = cJSON_PrintUnformatted(m->content);
	if (last)
		cJSON_DeleteItemFromObjectCaseSensitive(last, "cache_control");
	if (!s)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	error = fbuf_printf(b, "{\"role\":\"%s\",\"content\":", m->assistant ? "assistant" : "user");
	if (!error)
		error = fbuf_puts(b, s);
	if (!error)
		error = fbuf_putc(b, '}');
	free(s);
	return error;
}

static int ser_openai(fbuf *b, const conv_msg *m)
{
	const cJSON *blk;
	fbuf text;
	int error = 0, first = 1, ncalls = 0;

	fbuf_init(&text, 0);
	if (m->assistant) {
		cJSON_ArrayForEach(blk, m->content)
		{
			const char *t = json_str(blk, "type");
			if (t && !strcmp(t, "text") && json_str(blk, "text")) {
				if ((text.len && (error = fbuf_putc(&text, '\n')) < 0) ||
				    (error = fbuf_puts(&text, json_str(blk, "text"))) < 0)
					goto cleanup;
			}
		}
		if ((error = fbuf_puts(b, "{\"role\":\"assistant\",\"content\":")) < 0)
			goto cleanup;
		error = text.len ? put_json_str(b, text.ptr) : fbuf_puts(b, "null");
		if (error < 0)
			goto cleanup;
		cJSON_ArrayForEach(blk, m->content)
		{
			const char *t = json_str(blk, "type"), *raw;
			char *args = NULL;
			if (!t || strcmp(t, "tool_use") != 0)
				continue;
			if ((error = fbuf_puts(b, ncalls++ ? "," : ",\"tool_calls\":[")) < 0)
				goto cleanup;
			if ((error = fbuf_puts(b, "{\"id\":")) < 0 ||
			    (error = put_json_str(b, json_str(blk, "id") ? json_str(blk, "id") : "")) < 0 ||
			    (error = fbuf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":")) < 0 ||
			    (error = put_json_str(b, json_str(blk, "name") ? json_str(blk, "name") : "")) < 0 ||
			    (error = fbuf_puts(b, ",\"arguments\":")) < 0)
				goto cleanup;
			raw = json_str(blk, "x_arguments");
			if (!raw) {
				const cJSON *in = cJSON_GetObjectItemCaseSensitive(blk, "input");
				if (!(args = in ? cJSON_PrintUnformatted(in) : strdup("{}"))) {
					error = ferror_set(FACTORY_ENOMEM, "out of memory");
					goto cleanup;
				}
				raw = args;
			}
			error = put_json_str(b, raw);
			free(args);
			if (error < 0 || (error = fbuf_puts(b, "}}")) < 0)
				goto cleanup;
		}
		if (ncalls && (error = fbuf_putc(b, ']')) < 0)
			goto cleanup;
		error = fbuf_putc(b, '}');
		goto cleanup;
	}
	/* A user message: tool results become "tool" messages, then the text. */
	cJSON_ArrayForEach(blk, m->content)
	{
		const char *t = json_str(blk, "type");
		if (!t || strcmp(t, "tool_result") != 0)
			continue;
		if (!first && (error = fbuf_putc(b, ',')) < 0)
			goto cleanup;
		first = 0;
		if ((error = fbuf_puts(b, "{\"role\":\"tool\",\"tool_call_id\":")) < 0 ||
		    (error = put_json_str(b, json_str(blk, "tool_use_id") ? json_str(blk, "tool_use_id") : "")) < 0 ||
		    (error = fbuf_puts(b, ",\"content\":")) < 0)
			goto cleanup;
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(blk, "is_error"))) {
			fbuf_reset(&text);
			if ((error = fbuf_puts(&text, "ERROR: ")) < 0 ||
			    (error = fbuf_puts(&text, json_str(blk, "content") ? json_str(blk, "content") : "")) < 0 ||
			    (error = put_json_str(b, text.ptr)) < 0)
				goto cleanup;
			fbuf_reset(&text);
		} else if ((error = put_json_str(b, json_str(blk, "content") ? json_str(blk, "content") : "")) < 0) {
			goto cleanup;
		}
		if ((error = fbuf_putc(b, '}')) < 0)
			goto cleanup;
	}
	cJSON_ArrayForEach(blk, m->content)
	{
		const char *t = json_str(blk, "type");
		if (t && !strcmp(t, "text") && json_str(blk, "text")) {
			if ((text.len && (error = fbuf_putc(&text, '\n')) < 0) ||
			    (error = fbuf_puts(&text, json_str(blk, "text"))) < 0)
				goto cleanup;
		}
	}
	if (text.len) {
		if ((!first && (error = fbuf_putc(b, ',')) < 0) ||
		    (error = fbuf_puts(b, "{\"role\":\"user\",\"content\":")) < 0 ||
		    (error = put_json_str(b, text.ptr)) < 0 || (error = fbuf_putc(b, '}')) < 0)
			goto cleanup;
	}
cleanup:
	fbuf_release(&text);
	return error;
}

/* The cached form of message i (made when stale). */
static int msg_ser(llm_conv *c, size_t i, const char **out, size_t *len)
{
	conv_msg *m = &c->msgs[i];
	fbuf b;
	int error;

	if (!m->ser) {
		fbuf_init(&b, MAX_REQUEST);
		error = c->provider == LLM_OPENAI ? ser_openai(&b, m) : ser_anthropic(&b, m, 0);
		if (!error && !b.ptr)
			error = fbuf_puts(&b, "");
		if (error < 0) {
			fbuf_release(&b);
			return error;
		}
		m->ser_len = b.len;
		m->ser = fbuf_detach(&b);
		if (!m->ser)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	*out = m->ser;
	*len = m->ser_len;
	return 0;
}

size_t llm_conv_bytes(const llm_conv *c)
{
	size_t i, n = 0;

	for (i = 0; i < c->n; i++) {
		const char *s;
		size_t len;
		if (msg_ser((llm_conv *)c, i, &s, &len) == 0)
			n += len;
	}
	return n;
}

static int tools_ser(llm_conv *c, int cache)
{
	const cJSON *t;
	fbuf b;
	char *s;
	int error = 0, i = 0, n = cJSON_GetArraySize(c->tools);

	if (c->tools_ser && c->tools_ser_cache == cache)
		return 0;
	free(c->tools_ser);
	c->tools_ser = NULL;
	fbuf_init(&b, MAX_REQUEST);
	if ((error = fbuf_putc(&b, '[')) < 0)
		goto cleanup;
	cJSON_ArrayForEach(t, c->tools)
	{
		const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
		if (i && (error = fbuf_putc(&b, ',')) < 0)
			goto cleanup;
		if (!(s = cJSON_PrintUnformatted(schema))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		/* the same name and description; the schema under each provider's own key */
		error = fbuf_puts(&b, c->provider == LLM_OPENAI ? "{\"type\":\"function\",\"function\":{\"name\":"
		                                                : "{\"name\":");
		if (!error)
			error = put_json_str(&b, json_str(t, "name"));
		if (!error)
			error = fbuf_puts(&b, ",\"description\":");
		if (!error)
			error = put_json_str(&b, json_str(t, "description") ? json_str(t, "description") : "");
		if (!error && c->provider == LLM_OPENAI)
			error = fbuf_printf(&b, ",\"parameters\":%s}}", s);
		else if (!error)
			error = fbuf_printf(&b, ",\"input_schema\":%s%s}", s,
			                    cache && i == n - 1 ? ",\"cache_control\":{\"type\":\"ephemeral\"}" : "");
		free(s);
		if (error < 0)
			goto cleanup;
		i++;
	}
	if ((error = fbuf_putc(&b, ']')) < 0)
		goto cleanup;
	c->tools_ser = fbuf_detach(&b);
	c->tools_ser_cache = cache;
	if (!c->tools_ser)
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
cleanup:
	fbuf_release(&b);
	return error;
}

/* ---- compaction ---- */

/* Cut a string member to `keep` bytes (on a UTF-8 boundary) with a note; 1 if cut. */
static int cut_member(cJSON *obj, const char *key, size_t keep)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	size_t n;
	char *s;

	if (!cJSON_IsString(v) || (n = strlen(v->valuestring)) <= keep + 64)
		return 0;
	while (keep && ((unsigned char)v->valuestring[keep] & 0xC0) == 0x80)
		keep--;
	if (!(s = malloc(keep + 96)))
		return 0;
	memcpy(s, v->valuestring, keep);
	snprintf(s + keep, 96, "\n[... %zu bytes elided to fit the context window ...]", n - keep);
	cJSON_SetValuestring(v, s);
	free(s);
	return 1;
}

/* Cut long strings in a tool_use input object (and forget the raw form). */
static int cut_input(cJSON *blk, size_t keep)
{
	cJSON *in = cJSON_GetObjectItemCaseSensitive(blk, "input"), *v;
	int cut = 0;

	cJSON_ArrayForEach(v, in)
	{
		if (cJSON_IsString(v))
			cut |= cut_member(in, v->string, keep);
	}
	if (cut)
		cJSON_DeleteItemFromObjectCaseSensitive(blk, "x_arguments");
	return cut;
}

static int cut_message(conv_msg *m, size_t keep)
{
	cJSON *blk;
	int cut = 0;

	cJSON_ArrayForEach(blk, m->content)
	{
		const char *t = json_str(blk, "type");
		if (!t)
			continue;
		if (!strcmp(t, "tool_result"))
			cut |= cut_member(blk, "content", keep);
		else if (!strcmp(t, "text"))
			cut |= cut_member(blk, "text", keep);
		else if (!strcmp(t, "tool_use"))
			cut |= cut_input(blk, keep);
	}
	if (cut) {
		free(m->ser);
		m->ser = NULL;
	}
	return cut;
}

int llm_conv_compact(llm_conv *c, int level)
{
	size_t i, keep_tail, drop;
	int cut = 0;
	cJSON *note;
	char text[128];

	if (level == 1 || level == 2) {
		keep_tail = level == 1 ? 4 : 2;
		for (i = 1; i + keep_tail < c->n; i++)
			cut |= cut_message(&c->msgs[i], level == 1 ? 1000 : 200);
		return cut ? 0 : ferror_set(FACTORY_ETOOBIG, "nothing left to shorten");
	}
	if (level == 3) {
		/* Keep message 0 (the task) and whole assistant/user pairs at the end. */
		if (c->n < 5)
			return ferror_set(FACTORY_ETOOBIG, "too few messages to drop any");
		drop = ((c->n - 1) / 2) & ~(size_t)1;
		if (drop < 2 || 1 + drop >= c->n - 1)
			return ferror_set(FACTORY_ETOOBIG, "too few messages to drop any");
		for (i = 1; i < 1 + drop; i++) {
			cJSON_Delete(c->msgs[i].content);
			free(c->msgs[i].ser);
		}
		memmove(&c->msgs[1], &c->msgs[1 + drop], (c->n - 1 - drop) * sizeof(*c->msgs));
		c->n -= drop;
		snprintf(text, sizeof(text), "[%zu earlier messages were removed to fit the context window]", drop);
		if ((note = cJSON_CreateObject()) && cJSON_AddStringToObject(note, "type", "text") &&
		    cJSON_AddStringToObject(note, "text", text)) {
			cJSON_AddItemToArray(c->msgs[0].content, note);
			free(c->msgs[0].ser);
			c->msgs[0].ser = NULL;
		} else {
			cJSON_Delete(note);
		}
		return 0;
	}
	return ferror_set(FACTORY_ETOOBIG, "no compaction level %d", level);
}

/* ---- responses ---- */

static const char *const stop_names[] = {"end",     "tool_use", "max_tokens",     "stop_sequence",
                                         "refusal", "pause",    "context_window", "other"};

const char *llm_stop_name(llm_stop s)
{
	return (unsigned)s < sizeof(stop_names) / sizeof(stop_names[0]) ? stop_names[s] : "other";
}

void llm_response_init(llm_response *r)
{
	memset(r, 0, sizeof(*r));
}

void llm_response_release(llm_response *r)
{
	size_t i;

	for (i = 0; i < r->ncalls; i++) {
		free(r->calls[i].id);
		free(r->calls[i].name);
		cJSON_Delete(r->calls[i].input);
		free(r->calls[i].input_error);
	}
	free(r->calls);
	free(r->stop_raw);
	free(r->text);
	free(r->model);
	cJSON_Delete(r->content);
	memset(r, 0, sizeof(*r));
}

static int add_call(llm_response *r, const char *id, const char *name, const cJSON *input, const char *input_error)
{
	llm_tool_call *nc = realloc(r->calls, (r->ncalls + 1) * sizeof(*nc));
	llm_tool_call *c;

	if (!nc)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	r->calls = nc;
	c = &r->calls[r->ncalls];
	memset(c, 0, sizeof(*c));
	c->id = strdup(id);
	c->name = strdup(name);
	c->input = input ? cJSON_Duplicate(input, 1) : NULL;
	c->input_error = input_error ? strdup(input_error) : NULL;
	r->ncalls++;
	if (!c->id || !c->name || (input && !c->input) || (input_error && !c->input_error))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

static int append_text(fbuf *t, const char *s)
{
	int error = 0;

	if (t->len)
		error = fbuf_putc(t, '\n');
	return error ? error : fbuf_puts(t, s);
}

static llm_stop stop_of(const char *s, int openai)
{
	static const struct {
		const char *word;
		llm_stop stop;
	} map[] = {
	        {"end_turn", LLM_STOP_END},           {"stop", LLM_STOP_END},
	        {"tool_use", LLM_STOP_TOOL_USE},      {"tool_calls", LLM_STOP_TOOL_USE},
	        {"function_call", LLM_STOP_TOOL_USE}, {"max_tokens", LLM_STOP_MAX_TOKENS},
	        {"length", LLM_STOP_MAX_TOKENS},      {"stop_sequence", LLM_STOP_STOP_SEQUENCE},
	        {"refusal", LLM_STOP_REFUSAL},        {"content_filter", LLM_STOP_REFUSAL},
	        {"pause_turn", LLM_STOP_PAUSE},       {"model_context_window_exceeded", LLM_STOP_CONTEXT},
	};
	size_t i;

	(void)openai;
	if (!s)
		return LLM_STOP_OTHER;
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(s, map[i].word))
			return map[i].stop;
	return LLM_STOP_OTHER;
}

static int parse_anthropic(llm_response *r, const cJSON *root, fbuf *text)
{
	const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content"), *blk, *usage;
	const char *type = json_str(root, "type"), *stop;
	int error;

	if (type && strcmp(type, "message") != 0)
		return ferror_set(FACTORY_EINVALID, "the answer is a '%.40s', not a message", type);
	if (!cJSON_IsArray(content))
		return ferror_set(FACTORY_EINVALID, "the answer has no content array");
	if (!(r->content = cJSON_CreateArray()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	cJSON_ArrayForEach(blk, content)
	{
		const char *t = json_str(blk, "type");
		cJSON *copy;
		if (!t)
			return ferror_set(FACTORY_EINVALID, "a content block has no type");
		if (!strcmp(t, "text")) {
			const char *s = json_str(blk, "text");
			if (!s)
				return ferror_set(FACTORY_EINVALID, "a text block has no text");
			if (!*s)
				continue; /* empty text blocks may not be sent back */
			if ((error = append_text(text, s)) < 0)
				return error;
		} else if (!strcmp(t, "tool_use")) {
			const char *id = json_str(blk, "id"), *name = json_str(blk, "name");
			const cJSON *in = cJSON_GetObjectItemCaseSensitive(blk, "input");
			if (!id || !*id)
				return ferror_set(FACTORY_EINVALID, "a tool_use block has no id");
			if (!name)
				return ferror_set(FACTORY_EINVALID, "a tool_use block has no name");
			error = add_call(r, id, name, cJSON_IsObject(in) ? in : NULL,
			                 cJSON_IsObject(in) ? NULL : "the arguments are not a JSON object");
			if (error < 0)
				return error;
		}
		if (!(copy = cJSON_Duplicate(blk, 1)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		cJSON_AddItemToArray(r->content, copy);
	}
	stop = json_str(root, "stop_reason");
	r->stop = stop_of(stop, 0);
	if (stop && !(r->stop_raw = strdup(stop)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	r->usage.input = jlong(usage, "input_tokens");
	r->usage.output = jlong(usage, "output_tokens");
	r->usage.cache_write = jlong(usage, "cache_creation_input_tokens");
	r->usage.cache_read = jlong(usage, "cache_read_input_tokens");
	return 0;
}

static int parse_openai(llm_response *r, const cJSON *root, fbuf *text)
{
	const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices"), *choice, *msg, *content, *calls,
	            *call;
	const cJSON *usage, *details;
	const char *finish;
	cJSON *blk;
	char gen_id[32];
	int error, i = 0;

	if (!cJSON_IsArray(choices) || !(choice = cJSON_GetArrayItem(choices, 0)))
		return ferror_set(FACTORY_EINVALID, "the answer has no choices");
	msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
	if (!cJSON_IsObject(msg))
		return ferror_set(FACTORY_EINVALID, "the answer's first choice has no message");
	if (!(r->content = cJSON_CreateArray()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	content = cJSON_GetObjectItemCaseSensitive(msg, "content");
	if (cJSON_IsString(content)) {
		if (*content->valuestring && (error = append_text(text, content->valuestring)) < 0)
			return error;
	} else if (cJSON_IsArray(content)) {
		const cJSON *part;
		cJSON_ArrayForEach(part, content)
		{
			const char *s = json_str(part, "text");
			if (s && *s && (error = append_text(text, s)) < 0)
				return error;
		}
	} else if (content && !cJSON_IsNull(content)) {
		return ferror_set(FACTORY_EINVALID, "the message content is neither text nor null");
	}
	if (text->len) {
		if (!(blk = cJSON_CreateObject()) || !cJSON_AddStringToObject(blk, "type", "text") ||
		    !cJSON_AddStringToObject(blk, "text", text->ptr)) {
			cJSON_Delete(blk);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		cJSON_AddItemToArray(r->content, blk);
	}
	calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
	if (calls && !cJSON_IsArray(calls) && !cJSON_IsNull(calls))
		return ferror_set(FACTORY_EINVALID, "tool_calls is not an array");
	cJSON_ArrayForEach(call, calls)
	{
		const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function"), *args;
		const char *id = json_str(call, "id"), *name;
		cJSON *input = NULL;
		char *raw = NULL;
		const char *input_error = NULL;

		if (!cJSON_IsObject(fn) || !(name = json_str(fn, "name")))
			return ferror_set(FACTORY_EINVALID, "a tool call has no function name");
		if (!id || !*id) {
			snprintf(gen_id, sizeof(gen_id), "call_%d", i);
			id = gen_id;
		}
		args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
		if (cJSON_IsString(args)) {
			const char *s = args->valuestring;
			while (isspace((unsigned char)*s))
				s++;
			if (!*s)
				input = cJSON_CreateObject();
			else if (!(input = cJSON_Parse(s)) || !cJSON_IsObject(input)) {
				cJSON_Delete(input);
				input = NULL;
				input_error = "the arguments are not a JSON object";
			}
			raw = args->valuestring;
		} else if (cJSON_IsObject(args)) {
			input = cJSON_Duplicate(args, 1);
		} else if (!args || cJSON_IsNull(args)) {
			input = cJSON_CreateObject();
		} else {
			input_error = "the arguments are not a JSON object";
		}
		if (!input && !input_error)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		error = add_call(r, id, name, input, input_error);
		if (error < 0) {
			cJSON_Delete(input);
			return error;
		}
		if (!(blk = cJSON_CreateObject()) || !cJSON_AddStringToObject(blk, "type", "tool_use") ||
		    !cJSON_AddStringToObject(blk, "id", id) || !cJSON_AddStringToObject(blk, "name", name) ||
		    !cJSON_AddItemToObject(blk, "input", input ? input : cJSON_CreateObject()) ||
		    (raw && !cJSON_AddStringToObject(blk, "x_arguments", raw))) {
			cJSON_Delete(blk);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		input = NULL;
		cJSON_AddItemToArray(r->content, blk);
		i++;
	}
	finish = json_str(choice, "finish_reason");
	r->stop = stop_of(finish, 1);
	if (r->ncalls && (r->stop == LLM_STOP_END || r->stop == LLM_STOP_OTHER))
		r->stop = LLM_STOP_TOOL_USE; /* servers that say "stop" after tool calls */
	if (finish && !(r->stop_raw = strdup(finish)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	details = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
	r->usage.cache_read = jlong(details, "cached_tokens");
	r->usage.input = jlong(usage, "prompt_tokens") - r->usage.cache_read;
	if (r->usage.input < 0)
		r->usage.input = 0;
	r->usage.output = jlong(usage, "completion_tokens");
	return 0;
}

int llm_parse_response(llm_response *out, llm_provider provider, const char *body, size_t len)
{
	cJSON *root = NULL;
	fbuf text;
	const char *model;
	int error;

	llm_response_init(out);
	fbuf_init(&text, MAX_RESPONSE);
	if (!body || !len) {
		error = ferror_set(FACTORY_EINVALID, "the answer is empty");
		goto cleanup;
	}
	if (!(root = cJSON_ParseWithLength(body, len)) || !cJSON_IsObject(root)) {
		error = ferror_set(FACTORY_EINVALID, "the answer is not a JSON object");
		goto cleanup;
	}
	error = provider == LLM_OPENAI ? parse_openai(out, root, &text) : parse_anthropic(out, root, &text);
	if (error < 0)
		goto cleanup;
	if ((model = json_str(root, "model")) && !(out->model = strdup(model))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (!(out->text = strdup(text.ptr ? text.ptr : ""))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	error = 0;
cleanup:
	if (error < 0)
		llm_response_release(out);
	fbuf_release(&text);
	cJSON_Delete(root);
	return error;
}

/* ---- the client ---- */

struct llm {
	llm_options o;
	char *model;
	char *base_url;
	char *url;
	char *key;
	char *auth_header; /* "x-api-key: K" or "Authorization: Bearer K", wiped at free */
	http_client *http;
	llm_stats stats;
};

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

int llm_new(llm **out, const llm_options *o)
{
	llm *l = NULL;
	http_options ho;
	const char *base;
	size_t n;
	int error = -1;

	*out = NULL;
	if (!o->model || !*o->model)
		return ferror_set(FACTORY_ECONFIG, "missing setting llm.model (set FACTORY_LLM_MODEL)");
	if (o->provider == LLM_ANTHROPIC && (!o->api_key || !*o->api_key))
		return ferror_set(FACTORY_ECONFIG, "missing setting llm.api_key (set FACTORY_LLM_API_KEY or "
		                                   "FACTORY_LLM_API_KEY_FILE)");
	base = o->base_url ? o->base_url
	                   : (o->provider == LLM_OPENAI ? "https://api.openai.com/v1" : "https://api.anthropic.com");
	if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
		return ferror_set(FACTORY_ECONFIG, "bad setting llm.base_url=%s: expected an http:// or https:// URL",
		                  base);
	if (!(l = calloc(1, sizeof(*l))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	l->o = *o;
	n = strlen(base);
	while (n && base[n - 1] == '/')
		n--;
	if (!(l->model = strdup(o->model)) || !(l->base_url = strndup(base, n)) ||
	    (o->api_key && !(l->key = strdup(o->api_key)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	l->o.model = l->model;
	l->o.base_url = l->base_url;
	l->o.api_key = l->key;
	if (asprintf(&l->url, "%s%s", l->base_url, o->provider == LLM_OPENAI ? "/chat/completions" : "/v1/messages") <
	    0) {
		l->url = NULL;
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (l->key) {
		log_add_secret(l->key);
		if (asprintf(&l->auth_header, o->provider == LLM_OPENAI ? "Authorization: Bearer %s" : "x-api-key: %s",
		             l->key) < 0) {
			l->auth_header = NULL;
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	}
	http_options_init(&ho);
	ho.timeout_ms = o->timeout_ms;
	ho.connect_timeout_ms = o->connect_timeout_ms;
	ho.max_retries = 0; /* retries are ours: 529 and 500 are safe to repeat here */
	ho.max_response = MAX_RESPONSE;
	if ((error = http_client_new(&l->http, &ho)) < 0)
		goto cleanup;
	*out = l;
	l = NULL;
	error = 0;
cleanup:
	llm_free(l);
	return error;
}

void llm_free(llm *l)
{
	if (!l)
		return;
	http_client_free(l->http);
	wipe_free(l->key);
	wipe_free(l->auth_header);
	free(l->model);
	free(l->base_url);
	free(l->url);
	free(l);
}

const char *llm_model(const llm *l)
{
	return l->model;
}

llm_provider llm_get_provider(const llm *l)
{
	return l->o.provider;
}

void llm_get_stats(llm_stats *out, const llm *l)
{
	*out = l->stats;
}

int llm_build_request(fbuf *out, const llm *l, llm_conv *c, long max_tokens)
{
	const char *s = NULL;
	size_t len = 0, i;
	int error, cache = l->o.prompt_cache && l->o.provider == LLM_ANTHROPIC;

	fbuf_reset(out);
	if (c->provider != l->o.provider)
		return ferror_set(FACTORY_EINVALID, "the conversation was made for %s, the client speaks %s",
		                  llm_provider_name(c->provider), llm_provider_name(l->o.provider));
	if (!max_tokens || max_tokens > l->o.max_tokens)
		max_tokens = l->o.max_tokens;
	if ((error = fbuf_puts(out, "{\"model\":")) < 0 || (error = put_json_str(out, l->model)) < 0)
		return error;
	if (l->o.provider == LLM_OPENAI) {
		if ((error = fbuf_printf(out, ",\"%s\":%ld,\"messages\":[",
		                         l->o.max_tokens_field ? l->o.max_tokens_field : "max_tokens", max_tokens)) < 0)
			return error;
		if (*c->system) {
			if ((error = fbuf_puts(out, "{\"role\":\"system\",\"content\":")) < 0 ||
			    (error = put_json_str(out, c->system)) < 0 || (error = fbuf_putc(out, '}')) < 0)
				return error;
		}
		for (i = 0; i < c->n; i++) {
			if ((error = msg_ser(c, i, &s, &len)) < 0)
				return error;
			if (!len)
				continue;
			if ((out->len && out->ptr[out->len - 1] != '[' && (error = fbuf_putc(out, ',')) < 0) ||
			    (error = fbuf_put(out, s, len)) < 0)
				return error;
		}
		if ((error = fbuf_putc(out, ']')) < 0)
			return error;
		if (cJSON_GetArraySize(c->tools)) {
			if ((error = tools_ser(c, 0)) < 0 || (error = fbuf_puts(out, ",\"tools\":")) < 0 ||
			    (error = fbuf_puts(out, c->tools_ser)) < 0)
				return error;
		}
		return fbuf_putc(out, '}');
	}
	if ((error = fbuf_printf(out, ",\"max_tokens\":%ld", max_tokens)) < 0)
		return error;
	if (*c->system) {
		if ((error = fbuf_puts(out, ",\"system\":[{\"type\":\"text\",\"text\":")) < 0 ||
		    (error = put_json_str(out, c->system)) < 0 ||
		    (error = fbuf_puts(out, cache ? ",\"cache_control\":{\"type\":\"ephemeral\"}}]" : "}]")) < 0)
			return error;
	}
	if (cJSON_GetArraySize(c->tools)) {
		if ((error = tools_ser(c, cache)) < 0 || (error = fbuf_puts(out, ",\"tools\":")) < 0 ||
		    (error = fbuf_puts(out, c->tools_ser)) < 0)
			return error;
	}
	if ((error = fbuf_puts(out, ",\"messages\":[")) < 0)
		return error;
	for (i = 0; i < c->n; i++) {
		if (i && (error = fbuf_putc(out, ',')) < 0)
			return error;
		if (cache && i == c->n - 1) {
			/* The newest message carries the moving cache breakpoint. */
			if ((error = ser_anthropic(out, &c->msgs[i], 1)) < 0)
				return error;
			continue;
		}
		if ((error = msg_ser(c, i, &s, &len)) < 0 || (error = fbuf_put(out, s, len)) < 0)
			return error;
	}
	return fbuf_puts(out, "]}");
}

/* The service's own words about an error: "type: message". */
static void error_words(char *out, size_t len, const http_response *r)
{
	cJSON *root = r->body.len ? cJSON_ParseWithLength(r->body.ptr, r->body.len) : NULL;
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
	const char *type = NULL, *msg = NULL, *code = NULL;

	if (cJSON_IsObject(err)) {
		type = json_str(err, "type");
		msg = json_str(err, "message");
		code = json_str(err, "code");
	} else if (cJSON_IsString(err)) {
		msg = err->valuestring;
	}
	if (msg)
		snprintf(out, len, "%s%s%s%s%s", type ? type : "", type ? ": " : "", msg, code ? " (" : "",
		         code ? code : "");
	else if (r->body.len)
		snprintf(out, len, "%.200s", r->body.ptr);
	else
		snprintf(out, len, "no body");
	if (msg && code && strlen(out) + 2 < len)
		strcat(out, ")");
	cJSON_Delete(root);
}

static int is_context_error(long status, const char *words)
{
	static const char *const signs[] = {
	        "prompt is too long", "context length",    "context_length",    "maximum context",     "context window",
	        "too many tokens",    "request_too_large", "input is too long", "exceeds the context", NULL};
	char low[512];
	size_t i;

	if (status != 400 && status != 413)
		return 0;
	for (i = 0; i < sizeof(low) - 1 && words[i]; i++)
		low[i] = (char)tolower((unsigned char)words[i]);
	low[i] = '\0';
	for (i = 0; signs[i]; i++)
		if (strstr(low, signs[i]))
			return 1;
	return status == 413;
}

static int retryable(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

/* How long to wait before try number `attempt` (1-based). */
static long backoff_ms(const llm *l, const http_response *r, int attempt)
{
	char v[64];
	long cap, wait, least;
	double secs;
	char *end;

	if (r && http_response_header(v, sizeof(v), r, "retry-after-ms") == 0) {
		wait = strtol(v, &end, 10);
		if (end != v && wait >= 0)
			return wait;
	}
	if (r && http_response_header(v, sizeof(v), r, "retry-after") == 0) {
		secs = strtod(v, &end);
		if (end != v && secs >= 0 && secs < 86400)
			return (long)(secs * 1000);
	}
	cap = l->o.backoff_base_ms;
	for (int i = 1; i < attempt && cap < l->o.backoff_max_ms; i++)
		cap *= 2;
	if (cap > l->o.backoff_max_ms)
		cap = l->o.backoff_max_ms;
	/* Full jitter, but never less than a tenth of the cap. */
	least = cap / 10;
	wait = least + (long)((double)random() / (double)RAND_MAX * (double)(cap - least));
	return wait;
}

static int send_once(http_response *resp, llm *l, const fbuf *body, long deadline_ms)
{
	const char *headers[5];
	http_request req;
	http_client *tmp = NULL, *use = l->http;
	http_options ho;
	long left, t0;
	int n = 0, error;

	headers[n++] = "Content-Type: application/json";
	if (l->auth_header)
		headers[n++] = l->auth_header;
	if (l->o.provider == LLM_ANTHROPIC)
		headers[n++] = "anthropic-version: " ANTHROPIC_VERSION;
	headers[n] = NULL;
	if (deadline_ms && (left = deadline_ms - llm_now_ms()) < l->o.timeout_ms) {
		/* Less time left than a request may take: a client with the shorter timeout. */
		if (left < 1)
			return ferror_set(FACTORY_ETIMEOUT, "%s: no time left for the request",
			                  llm_provider_name(l->o.provider));
		http_options_init(&ho);
		ho.timeout_ms = left;
		ho.connect_timeout_ms = l->o.connect_timeout_ms < left ? l->o.connect_timeout_ms : left;
		ho.max_retries = 0;
		ho.max_response = MAX_RESPONSE;
		if ((error = http_client_new(&tmp, &ho)) < 0)
			return error;
		use = tmp;
	}
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = l->url;
	req.headers = headers;
	req.body = body->ptr;
	req.body_len = body->len;
	t0 = now_us();
	error = http_do(resp, use, &req);
	l->stats.http_us += now_us() - t0;
	l->stats.requests++;
	l->stats.last_status = resp->status;
	http_client_free(tmp);
	return error;
}

int llm_send(llm_response *out, llm *l, llm_conv *c, long max_tokens, long deadline_ms)
{
	http_response resp;
	fbuf body;
	char words[400];
	const char *pname = llm_provider_name(l->o.provider);
	long slept = 0, wait, t0;
	int attempt = 0, level = 0, error;

	llm_response_init(out);
	http_response_init(&resp);
	fbuf_init(&body, MAX_REQUEST);
	for (;;) {
		t0 = now_us();
		error = llm_build_request(&body, l, c, max_tokens);
		l->stats.build_us += now_us() - t0;
		if (error < 0)
			goto cleanup;
		http_response_release(&resp);
		http_response_init(&resp);
		error = send_once(&resp, l, &body, deadline_ms);
		if (error == FACTORY_ETIMEOUT || error == FACTORY_ETOOBIG || error == FACTORY_ENOMEM)
			goto cleanup;
		if (error == 0 && resp.status >= 200 && resp.status < 300) {
			t0 = now_us();
			error = llm_parse_response(out, l->o.provider, resp.body.ptr, resp.body.len);
			l->stats.parse_us += now_us() - t0;
			if (error < 0)
				error = ferror_set(FACTORY_EINVALID, "%s: the answer (HTTP %ld) cannot be read: %s",
				                   pname, resp.status, ferror_last());
			goto cleanup;
		}
		if (resp.status)
			error_words(words, sizeof(words), &resp);
		else
			snprintf(words, sizeof(words), "%s", ferror_last());
		if (resp.status && is_context_error(resp.status, words)) {
			while (++level <= MAX_COMPACTIONS && llm_conv_compact(c, level) < 0)
				;
			if (level > MAX_COMPACTIONS) {
				error = ferror_set(FACTORY_EINVALID,
				                   "%s: the conversation does not fit the model's context "
				                   "window, even compacted: %s",
				                   pname, words);
				goto cleanup;
			}
			l->stats.compactions++;
			log_info("%s: context window exceeded (%s): conversation compacted (level %d)", pname, words,
			         level);
			continue;
		}
		if (!resp.status || retryable(resp.status)) {
			attempt++;
			wait = backoff_ms(l, resp.status ? &resp : NULL, attempt);
			if (deadline_ms && llm_now_ms() + wait >= deadline_ms) {
				/* The caller's time is up: that, not the service, ends it. */
				if (resp.status)
					error = ferror_set(FACTORY_ETIMEOUT,
					                   "%s: the time budget ran out (last: HTTP %ld: %s)", pname,
					                   resp.status, words);
				else
					error = ferror_set(FACTORY_ETIMEOUT, "%s: the time budget ran out (last: %s)",
					                   pname, words);
				goto cleanup;
			}
			if (attempt > l->o.max_retries || slept + wait > l->o.retry_budget_ms) {
				if (resp.status)
					error = ferror_set(FACTORY_EUPSTREAM, "%s: HTTP %ld after %d %s: %s", pname,
					                   resp.status, attempt, attempt == 1 ? "try" : "tries", words);
				else
					error = ferror_set(FACTORY_EUPSTREAM, "%s: unreachable after %d %s: %s", pname,
					                   attempt, attempt == 1 ? "try" : "tries", words);
				goto cleanup;
			}
			log_warn("%s: %s%ld (%s): trying again in %ld ms", pname, resp.status ? "HTTP " : "",
			         resp.status, words, wait);
			sleep_fn(wait);
			slept += wait;
			l->stats.slept_ms += wait;
			l->stats.retries++;
			continue;
		}
		switch (resp.status) {
		case 401:
		case 403:
			error = ferror_set(FACTORY_EAUTH, "%s: the service refused the API key (HTTP %ld): %s", pname,
			                   resp.status, words);
			break;
		case 404:
			error = ferror_set(FACTORY_ENOTFOUND, "%s: HTTP 404 for model %s at %s: %s", pname, l->model,
			                   l->url, words);
			break;
		default:
			error = ferror_set(FACTORY_EINVALID, "%s: the request was refused (HTTP %ld): %s", pname,
			                   resp.status, words);
		}
		goto cleanup;
	}
cleanup:
	if (error < 0)
		llm_response_release(out);
	if (body.ptr)
		explicit_bzero(body.ptr, body.len);
	fbuf_release(&body);
	http_response_release(&resp);
	return error;
}
