/*
 * cilog.h - classify a failed CI job's log: streaming, one pass, capped
 * memory, rules kept as data.
 *
 * A job log (GitLab's trace, or any CI's) is fed in chunks of any size.
 * Each raw line (ended by '\n'; the 1-based line numbers reported are those
 * of the RAW log) is cleaned before matching: trailing '\r's are dropped,
 * ANSI escape sequences (CSI, OSC, two-byte ESC) are removed, and a '\r'
 * inside a line keeps only the text after the last '\r' that is followed by
 * something not blank (what a terminal shows; this also removes GitLab's
 * `section_start:<time>:<name>[opts]\r` and `section_end:<time>:<name>\r`
 * markers). A line longer than max_line bytes is cut there.
 *
 * Rules (YAML or JSON, a list; the built-in defaults are
 * cilog_default_rules_yaml, a project's own come first and a project rule
 * with a built-in rule's name replaces it):
 *
 *   - name: gcc-error                   required, [A-Za-z0-9_.-]{1,64}, unique
 *     class: compile_error              one of cilog_class_name()'s names
 *     keywords: ['error:', 'error ']    literal words: the rule is tried only on a line
 *                                       holding one of them (ASCII case-insensitive; a
 *                                       leading '^' means "at the start of the line")
 *     pattern: '^(?<file>[^\s:]+):(?<line>\d+):\d+: (?:fatal )?error: '
 *                                       pcre2, matched against one cleaned line; named
 *                                       groups file, line, test and tool are extracted
 *     case_sensitive: true              optional, default false
 *     tool: gcc                         optional: the tool when no (?<tool>) group matched
 *     weight: 80                        optional, 1..100 (default 50): how sure a hit is
 *     before: 2                         optional, 0..20 (default 2): context lines kept before
 *     after: 15                         optional, 0..39 (default 10): lines after the hit that
 *                                       may join its region (see below)
 *     role: error                       optional: error (default), step (a command echoed by
 *                                       the runner, "$ make"), step_class (a step whose command
 *                                       matches sets the class of generic hits inside it),
 *                                       failed (the runner says a step failed: "exited with 1"),
 *                                       flaky (evidence of a rerun that passed), ignore (a line
 *                                       that must never start a region, e.g. "0 errors")
 *
 * One pass, whatever the number of rules: the keywords of every rule are
 * compiled into one Aho-Corasick automaton (bytes folded to lower case and
 * grouped into classes) that scans the cleaned text once; only the lines it
 * flags are matched, and only against the rules whose keywords they hold
 * (their patterns compiled with pcre2 JIT, with match limits). A rule
 * without keywords is matched through one extra combined pcre2 pass (slower:
 * give keywords). Patterns are compiled without PCRE2_UTF: any bytes are
 * accepted, \w and \d are ASCII, and a character class holds bytes (write
 * (?:✓|✔), never [✓✔]: that class would hold every byte of both).
 *
 * Regions: a hit opens a region of its `before` lines and itself; the
 * following lines join it while they look like the same report (indented,
 * a stack frame, a caret line, another hit of the same class, at most
 * `after` lines past the last hit, never a step line) and the region stays
 * within 40 lines. At most max_candidates regions are kept (the first one
 * always; then the highest scores). At the end the best region wins: its
 * rule's weight, plus a bonus when it lies in the step that failed (the
 * step before the first `failed` line, or the last step), minus a penalty
 * after that line (after_failure output). When nothing matched, the region
 * is the lines before the first `failed` line (or the log's last lines),
 * and the class is the failing step's class (from step_class rules) or
 * "unknown".
 *
 * Memory is bounded whatever the log size: one block of cleaned text
 * (block_size), the regions (max_candidates x 40 lines, each line capped at
 * max_excerpt_line bytes) and a capped tail.
 */
#ifndef FACTORY_CILOG_H
#define FACTORY_CILOG_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"

typedef enum {
	CILOG_UNKNOWN = 0,
	CILOG_COMPILE,      /* compile_error */
	CILOG_LINK,         /* link_error */
	CILOG_LINT,         /* lint */
	CILOG_TYPECHECK,    /* type_check */
	CILOG_TEST,         /* test_failure */
	CILOG_FLAKY,        /* flaky_test */
	CILOG_DEPENDENCY,   /* dependency */
	CILOG_NETWORK,      /* network */
	CILOG_OOM,          /* oom */
	CILOG_TIMEOUT,      /* job_timeout */
	CILOG_RUNNER,       /* runner_failure */
	CILOG_CONFIG,       /* ci_config */
	CILOG_PERMISSION,   /* permission */
	CILOG_NCLASSES
} cilog_class;

/* "compile_error", ...; "unknown" for CILOG_UNKNOWN and out-of-range values. */
const char *cilog_class_name(cilog_class c);
/* The class of a name, or -1. */
int cilog_class_parse(const char *name);
/* 1 for the classes a retry may cure (network, runner_failure, flaky_test),
 * else 0. */
int cilog_class_transient(cilog_class c);

/* The built-in rules as YAML text (a list of rules). */
extern const char cilog_default_rules_yaml[];

typedef struct cilog_rules cilog_rules;

/*
 * Compile a rule set: `extra` (a cJSON array of rule objects as above, may
 * be NULL) first, then the built-in defaults when `with_defaults`. `origin`
 * names where `extra` came from, for messages. Returns 0, FACTORY_ECONFIG
 * naming the rule and what is wrong ("rules.yml: rule 'x': pattern: missing
 * closing parenthesis at offset 7"), or FACTORY_ENOMEM. *out is NULL on
 * failure. A compiled set is read-only and may be shared by readers.
 */
int cilog_rules_new(cilog_rules **out, const cJSON *extra, int with_defaults, const char *origin);
/* The same from YAML text (parsed by fconfig_yaml_to_json). */
int cilog_rules_from_yaml(cilog_rules **out, const char *yaml, size_t len, int with_defaults, const char *origin);
void cilog_rules_free(cilog_rules *rs);
size_t cilog_rules_count(const cilog_rules *rs);
/* Whether every pattern runs on the pcre2 JIT. */
int cilog_rules_jit(const cilog_rules *rs);

typedef struct {
	size_t max_line;          /* bytes of a cleaned line matched, default 16384 */
	size_t block_size;        /* bytes of cleaned text scanned at once, default 1 MiB */
	size_t max_candidates;    /* regions kept, default 32 */
	size_t max_region;        /* lines in a region, default 40 (at most 40) */
	size_t tail_lines;        /* lines of the tail kept, default 40 */
	size_t max_excerpt_line;  /* bytes of a line kept for the excerpt, default 512 */
	size_t max_excerpt;       /* bytes of the excerpt, default 8192 */
} cilog_options;

void cilog_options_init(cilog_options *o);

typedef struct {
	cilog_class klass;
	char *rule;               /* the rule that found the region, NULL when none did */
	char *tool;               /* NULL when unknown */
	char *file;               /* NULL when unknown */
	long line;                /* 0 when unknown */
	char *test;               /* NULL when unknown */
	long first_line;          /* the region, 1-based raw line numbers; 0 for an empty log */
	long last_line;
	char *excerpt;            /* the region's cleaned lines, valid UTF-8, capped */
	char *headline;           /* the line of the region's surest hit (or its last line that is not
				     blank): what a fingerprint is made of; NULL for an empty log */
	char *step;               /* the failing step's command ("make test"), NULL when unknown */
	long lines;               /* raw lines read */
	unsigned long long bytes; /* raw bytes read */
	long hits;                /* rule hits (error role) */
	long class_hits[CILOG_NCLASSES];
	int flaky_evidence;       /* a flaky-role line was seen */
	long cut_lines;           /* lines longer than max_line */
	long limit_hits;          /* matches abandoned at a pcre2 limit */
} cilog_result;

void cilog_result_init(cilog_result *r);
void cilog_result_release(cilog_result *r);

/* {"class", "rule", "tool", "location": {"file", "line"}, "test",
 * "error_lines": [first, last], "excerpt", "step", "lines", "bytes"} with
 * null for what is unknown. *out is the caller's. */
int cilog_result_json(cJSON **out, const cilog_result *r);

typedef struct cilog cilog;

/* A reader over a compiled set (borrowed: it must outlive the reader). */
int cilog_new(cilog **out, const cilog_rules *rs, const cilog_options *o);
void cilog_free(cilog *c);
/* Feed the next bytes of the log (any split, any bytes). 0 or FACTORY_ENOMEM. */
int cilog_feed(cilog *c, const char *data, size_t len);
/* The same, shaped as an http_sink_fn (ctx is the cilog); non-zero aborts. */
int cilog_sink(void *ctx, const char *data, size_t len);
/* End of the log: classify into `out` (initialised; replaced). The reader
 * cannot be fed after. 0 or FACTORY_ENOMEM. */
int cilog_finish(cilog_result *out, cilog *c);

/* One call for a whole buffer. */
int cilog_classify(cilog_result *out, const cilog_rules *rs, const char *data, size_t len);

#endif
