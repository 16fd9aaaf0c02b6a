/*
 * opinion.c - a model's opinion through one tool call (see opinion.h).
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "opinion.h"

struct opinion {
	llm *l;
	char *key; /* read from a file, wiped at free */
	char *system;
	char *tool;
	cJSON *tools;
	long max, answer_tokens, deadline_ms;
	long asked, changed, ignored;
	int disabled; /* the service failed: no more calls this run */
};

int opinion_wanted(const fconfig *cfg)
{
	const char *model = fconfig_get_str(cfg, "llm.model", NULL);

	return model && *model;
}

int opinion_open(opinion **out, const fconfig *cfg, const opinion_options *o, cJSON *schema)
{
	opinion *op = NULL;
	llm_options lo;
	llm_conv *c = NULL;
	cJSON *tool = NULL;
	int error = -1;

	*out = NULL;
	if (!opinion_wanted(cfg)) {
		cJSON_Delete(schema);
		return 0;
	}
	if (!schema || !(op = calloc(1, sizeof(*op)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	op->max = o->max;
	op->answer_tokens = o->answer_tokens;
	op->deadline_ms = o->deadline_ms;
	if ((error = llm_options_from_config(&lo, &op->key, cfg)) < 0 || (error = llm_new(&op->l, &lo)) < 0)
		goto cleanup;
	if (!(op->system = strdup(o->system)) || !(op->tool = strdup(o->tool)) || !(op->tools = cJSON_CreateArray()) ||
	    !(tool = cJSON_CreateObject()) || !cJSON_AddStringToObject(tool, "name", o->tool) ||
	    !cJSON_AddStringToObject(tool, "description", o->description)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	cJSON_AddItemToObject(tool, "input_schema", schema);
	schema = NULL;
	cJSON_AddItemToArray(op->tools, tool);
	tool = NULL;
	/* a tool llm.h refuses is refused now, not at every question */
	if ((error = llm_conv_new(&c, llm_get_provider(op->l), op->system, op->tools)) < 0)
		goto cleanup;
	*out = op;
	op = NULL;
	error = 0;
cleanup:
	llm_conv_free(c);
	cJSON_Delete(tool);
	cJSON_Delete(schema);
	opinion_free(op);
	return error;
}

void opinion_free(opinion *op)
{
	if (!op)
		return;
	llm_free(op->l);
	if (op->key) {
		memset(op->key, 0, strlen(op->key));
		free(op->key);
	}
	free(op->system);
	free(op->tool);
	cJSON_Delete(op->tools);
	free(op);
}

const llm *opinion_llm(const opinion *op)
{
	return op ? op->l : NULL;
}

long opinion_room(const opinion *op)
{
	if (!op || op->disabled || op->asked >= op->max)
		return 0;
	return op->max - op->asked;
}

/* The answer as a new JSON object: the input of a call to the tool, else a
 * JSON object in the text (fenced or not); NULL when there is none. */
static cJSON *answer_of(const opinion *op, const llm_response *resp)
{
	const char *s, *e;
	size_t i;

	for (i = 0; i < resp->ncalls; i++)
		if (resp->calls[i].name && !strcmp(resp->calls[i].name, op->tool) && resp->calls[i].input)
			return cJSON_Duplicate(resp->calls[i].input, 1);
	if (!resp->text || !(s = strchr(resp->text, '{')) || !(e = strrchr(resp->text, '}')) || e < s)
		return NULL;
	return cJSON_ParseWithLength(s, (size_t)(e - s) + 1);
}

int opinion_ask(cJSON **answer, opinion *op, const char *question, long n)
{
	llm_conv *c = NULL;
	llm_response resp;
	int error;

	*answer = NULL;
	llm_response_init(&resp);
	if ((error = llm_conv_new(&c, llm_get_provider(op->l), op->system, op->tools)) < 0 ||
	    (error = llm_conv_add_user_text(c, question)) < 0)
		goto cleanup;
	op->asked += n;
	error = llm_send(&resp, op->l, c, op->answer_tokens, op->deadline_ms ? llm_now_ms() + op->deadline_ms : 0);
	if (error < 0) {
		op->disabled = error == FACTORY_EAUTH || error == FACTORY_EUPSTREAM || error == FACTORY_ENOTFOUND ||
		               error == FACTORY_ETIMEOUT;
		log_warn("model: %s: the rules decide%s", ferror_last(),
		         op->disabled ? " alone for the rest of the run" : "");
		op->ignored += n;
		error = error == FACTORY_ENOMEM ? error : 0;
		goto cleanup;
	}
	if (!(*answer = answer_of(op, &resp))) {
		log_warn("model answer ignored: no %s call and no JSON object", op->tool);
		op->ignored += n;
	}
cleanup:
	llm_response_release(&resp);
	llm_conv_free(c);
	return error;
}

void opinion_ignored(opinion *op, long n, const char *why)
{
	if (!op)
		return;
	if (why)
		log_warn("model answer ignored: %s", why);
	op->ignored += n;
}

void opinion_changed(opinion *op, long n)
{
	if (op)
		op->changed += n;
}

void opinion_counters(const opinion *op, long *asked, long *changed, long *ignored)
{
	*asked = op ? op->asked : 0;
	*changed = op ? op->changed : 0;
	*ignored = op ? op->ignored : 0;
}
