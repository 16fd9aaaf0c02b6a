/*
 * agent.h - the coding agent: a model in a tool loop over a sandboxed
 * working tree, with budgets and a transcript; or an external agent CLI
 * run in the same sandbox.
 *
 * The tools, as the model sees them (names and arguments):
 *   list_files(path)                     tracked + untracked-not-ignored files (libgit2)
 *   read_file(path, start_line, end_line) lines of a file, numbered, capped
 *   write_file(path, content)            create or replace a file
 *   edit_file(path, old, new)            replace one exact, unique occurrence
 *   search(pattern, path)                PCRE2 over the files, capped
 *   run_command(command, timeout_s)      sh -c in the root, sandboxed (sandbox.h)
 *   git_diff()                           the work tree against HEAD
 *   finish(summary, tested, confidence)  the end: what was done, whether it
 *                                        was tested, and how sure (low|medium|high)
 * A tool that fails answers the model with is_error and a message it can act
 * on (bad arguments, a path outside the root, zero or several matches, a bad
 * pattern, a timeout...); the loop goes on.
 *
 * What the loop can touch is the working tree, through the sandbox, and
 * nothing else: it holds no GitLab client, no token and no way to commit or
 * push. The job's own code does those after the loop, deterministically.
 * The task text is untrusted: it is framed as quoted data in the first user
 * message, after a system prompt that says so; the defence does not rest on
 * that, since there is no secret in reach and no write beyond the tree.
 *
 * Budgets (agent.* settings, FACTORY_AGENT_* in the environment):
 *   max_turns (50), max_input_tokens (2,000,000, cache reads included),
 *   max_output_tokens (200,000), max_wall_s (1800), max_cost_usd (5; 0 = no
 *   limit; needs a price for the model, from llm.prices in .factory.yml or
 *   the built-in table), command_timeout_s (120, the default for
 *   run_command), command_timeout_max_s (900).
 * When one is reached the loop stops cleanly: the result says which and why,
 * the working tree keeps what was done, the transcript ends with an "end"
 * record. The last answer's max_tokens is lowered to what the output budget
 * has left, and each request's time to what the wall budget has left.
 *
 * The transcript is JSON Lines, one record per event (start, system, user,
 * assistant, tool, note, end), every line passed through log_mask(), the
 * file created 0600.
 */
#ifndef FACTORY_AGENT_H
#define FACTORY_AGENT_H

#include <stddef.h>

#include "config.h"
#include "git.h"
#include "llm.h"
#include "sandbox.h"

typedef struct {
	long max_turns;
	long max_input_tokens;
	long max_output_tokens;
	long max_wall_ms;
	double max_cost_usd; /* 0: no limit */
	llm_price price;
	int price_known;
	long command_timeout_s;
	long command_timeout_max_s;
	size_t read_max;          /* bytes of a file read_file/edit_file/search will load (4 MiB) */
	size_t write_max;         /* bytes write_file accepts (1 MiB) */
	size_t result_max;        /* bytes of one tool result sent to the model (64 KiB) */
	size_t search_max;        /* matches search reports (200) */
	size_t list_max;          /* paths list_files reports (2000) */
	const char *transcript;   /* JSONL path, or NULL for none */
	const char *instructions; /* more system prompt from the settings, may be NULL */
} agent_options;

void agent_options_init(agent_options *o);

/*
 * Read the agent.* settings above and the price of `model` (llm.prices,
 * then the built-in table). A cost limit without a known price is
 * FACTORY_ECONFIG naming both ways out (a price, or max_cost_usd=0).
 */
int agent_options_from_config(agent_options *o, const fconfig *cfg, const char *model);

typedef struct {
	int finished;     /* the model called finish (or the external agent exited 0) */
	char *outcome;    /* "finished", "budget", "no_finish", "refused", "failed", "error" */
	char *reason;     /* one line: why it stopped */
	char *summary;    /* finish's summary (or the last text) */
	int tested;       /* finish's tested */
	char *confidence; /* finish's confidence */
	long turns;       /* model answers */
	long tool_calls;
	long tool_errors;
	llm_usage usage;
	double cost_usd;
	int cost_known;
	long wall_ms;
	long model_us;        /* inside HTTP requests and retry waits */
	long tool_us;         /* inside the tools */
	long overhead_us;     /* the rest: the loop's own work */
	long overhead_max_us; /* the largest per turn */
	long llm_requests;    /* HTTP requests to the model, retries included */
	long llm_retries;     /* of which were retries (429, 529, 5xx, network) */
	long llm_compactions; /* context-length compactions */
	int exit_code;        /* external agent: its exit status (-1 if killed) */
} agent_result;

void agent_result_init(agent_result *r);
void agent_result_release(agent_result *r);

/*
 * Run the tool loop on `task` (untrusted text) until finish, a budget, a
 * refusal or an error. Returns 0 when the loop ended cleanly, whatever the
 * outcome (r->outcome says which), or the error that ended it (an LLM
 * failure: FACTORY_EUPSTREAM, FACTORY_EAUTH, ...; r->outcome "error"; the
 * transcript still gets its end record). `repo` and `sb` share the root.
 */
int agent_run(agent_result *r, const agent_options *o, llm *l, sandbox *sb, fgit_repo *repo, const char *task,
              size_t task_len);

/*
 * Run an external agent CLI: `command` (FACTORY_AGENT_CMD) through the
 * sandbox, with the prompt (instructions + framed task) in a file whose path
 * replaces "{prompt_file}" in the command and is in $AGENT_PROMPT_FILE;
 * `pass_env` (NULL-terminated names, may be NULL) are given from the job's
 * environment (never a FACTORY_* or GitLab secret: FACTORY_EINVALID).
 * Bounded by the wall budget; its output (capped) goes to the transcript.
 * r->finished when it exits 0.
 */
int agent_run_external(agent_result *r, const agent_options *o, sandbox *sb, const char *command,
                       const char *const *pass_env, const char *task, size_t task_len);

/*
 * Run one tool outside the loop, as the loop would (arguments checked, the
 * answer masked, cleaned and capped into `out`, *is_error set when the tool
 * failed). For tests and tools around the agent; finish only checks its
 * arguments. Returns 0, or an error that is not the tool's (ENOMEM).
 */
int agent_tool_run(fbuf *out, int *is_error, const agent_options *o, sandbox *sb, fgit_repo *repo, const char *name,
                   const cJSON *input);

/* The tool definitions as sent to the model (a new JSON array; caller frees). */
int agent_tools(cJSON **out);

/* Append `in` as valid UTF-8 (bad bytes and NUL become U+FFFD). */
int agent_utf8_clean(fbuf *out, const char *in, size_t len);

#endif
