/*
 * opinion.h - a configured model's opinion through one tool call: the shape
 * triage and release share when they ask a model (llm.h) to second the
 * rules. The job writes the question; this module sends it with a system
 * prompt and one tool, takes the answer out (the tool call's input, or a
 * JSON object in the text), and keeps the run's count of subjects asked
 * about, answers that changed something and answers ignored. The job
 * validates and applies the answer and says which it was.
 *
 * Failure is a warning, never the end of the run: a failed call or an
 * answer without a JSON object is logged ("model: <why>: the rules
 * decide", "model answer ignored: <why>"), counted as ignored, and the
 * rules' decision stands. A failed call that will fail again (the service
 * refused the key, is gone, unavailable after its retries, or too slow)
 * disables the opinion for the rest of the run. Once open, only running
 * out of memory is returned as an error.
 *
 * Settings: llm.* (see llm.h); no llm.model means no opinion (the rules
 * alone decide).
 */
#ifndef FACTORY_OPINION_H
#define FACTORY_OPINION_H

#include <cjson/cJSON.h>

#include "config.h"
#include "llm.h"

typedef struct opinion opinion;

typedef struct {
	const char *system;      /* the system prompt (copied) */
	const char *tool;        /* the one tool the model answers through (copied) */
	const char *description; /* what the tool records (copied) */
	long max;                /* subjects to ask about in a run, at most */
	long answer_tokens;      /* max_tokens of an answer, 0: llm.max_tokens */
	long deadline_ms;        /* one question, retries included, 0: none */
} opinion_options;

/* Whether a model is configured (llm.model set and not empty). */
int opinion_wanted(const fconfig *cfg);

/*
 * Open a client for the model in `cfg`. `schema` is the tool's input
 * schema, an object schema; it is taken (freed here, on failure too).
 * Sets *out NULL and returns 0 when no model is configured. Returns
 * FACTORY_ECONFIG (a bad llm.* setting, named), FACTORY_EINVALID (a tool
 * name or schema llm.h refuses), FACTORY_ENOMEM (also for a NULL schema).
 * The API key read from a file is wiped at opinion_free.
 */
int opinion_open(opinion **out, const fconfig *cfg, const opinion_options *o, cJSON *schema);
void opinion_free(opinion *op);

/* The client (borrowed), for naming the model in logs. */
const llm *opinion_llm(const opinion *op);

/* How many more subjects may be asked about: 0 for NULL, after the
 * service failed, or once `max` were asked about. */
long opinion_room(const opinion *op);

/*
 * Ask `question` (a user message; outside text in it cleaned by the
 * caller) about `n` subjects, counted as asked once the question is built.
 * On 0, *answer is the answer as a new JSON object (caller frees), or NULL
 * when the call failed or the answer held none: then the `n` are counted
 * as ignored and a warning is logged. Returns 0 or FACTORY_ENOMEM (out of
 * memory before the question went out: nothing asked or counted; during
 * the call: the `n` are asked and ignored).
 */
int opinion_ask(cJSON **answer, opinion *op, const char *question, long n);

/* Count `n` subjects whose answer the caller could not use; `why` (may be
 * NULL: not logged) is logged as "model answer ignored: <why>". */
void opinion_ignored(opinion *op, long n, const char *why);
/* Count `n` subjects whose decision the answer changed. */
void opinion_changed(opinion *op, long n);

/* The run's counts; all 0 for NULL. */
void opinion_counters(const opinion *op, long *asked, long *changed, long *ignored);

#endif
