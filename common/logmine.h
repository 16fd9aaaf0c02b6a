/*
 * logmine.h - log templates: masking of variable parts, template mining of
 * the Drain family, stable fingerprints, and sliding windows over
 * (scope, fingerprint) for friction detection. Pure computation: no I/O.
 *
 * Masking (logmine_mask) rewrites one message into space-separated tokens
 * where variable parts are "<*>". Recognisers run at each token in a fixed
 * order, the first that matches wins:
 *   1. timestamps (2026-11-27, 2026-11-27T10:00:00.123Z, 10:00:00,123)
 *   2. UUIDs (8-4-4-4-12 hex)
 *   3. email addresses
 *   4. URLs (scheme://host/path?query: host, id segments and query values)
 *   5. IP addresses (v4 with optional port, v6)
 *   6. hex numbers (0x..., and hex runs of 8+ characters holding a digit)
 *   7. paths (segments holding a digit or a hex id)
 *   8. quoted values with no blank inside ('x', "x")
 *   9. key=value and key:value values
 *  10. numbers and any word holding a digit
 * Words are the parts of a token between punctuation (,;()[]{}<>|"'=:/),
 * so "id=42," becomes "id=<*>," and "(pid 12)" becomes "(pid <*>)".
 * Runs of wildcards separated only by blanks are folded into one "<*>" so a
 * variable-length list of values does not split a template.
 *
 * Mining (logmine_add) is Drain (He et al., ICWS 2017): messages are routed
 * through a fixed-depth tree by token count and their first `depth` tokens
 * (tokens holding a wildcard or a digit route to a shared "<*>" child; a
 * node with more than `max_children` children routes new tokens there too),
 * then joined to the most similar cluster of the leaf when the share of
 * equal constant tokens is at least `sim_threshold`, the differing
 * positions of the template turning into "<*>"; else a new cluster starts.
 * Two different words at one position (tokens of letters only, brackets
 * and trailing punctuation aside) keep messages apart: "VM Paused" and "VM
 * Resumed" are two events. Not so for literal values (true, false, null,
 * none, ...), for a word the message echoes inside a path or a variable of
 * its own ("hive: SAM, ... from path '/x/config/SAM'"), or where the
 * cluster already has a wildcard. Two key=value tokens with different keys
 * keep messages apart too.
 *
 * The fingerprint of a template is the 64-bit FNV-1a hash of its text,
 * written as 16 lowercase hex digits: the same template gives the same
 * fingerprint on every run and machine.
 *
 * Bounded state: at most `max_clusters` clusters are kept; when full, the
 * least recently used eighth is evicted (their ids are never reused). The
 * exact-match cache and the window table are fixed-size.
 */
#ifndef FACTORY_LOGMINE_H
#define FACTORY_LOGMINE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define LOGMINE_WILDCARD "<*>"
#define LOGMINE_MAX_TOKENS 512      /* tokens past this are folded into the last */
#define LOGMINE_MAX_LINE (64 << 10) /* bytes of a message that are looked at */

typedef struct {
	double sim_threshold; /* default 0.5 */
	int depth;            /* prefix tokens used for routing, default 2 */
	int max_children;     /* per tree node, default 100 */
	size_t max_clusters;  /* default 50000 */
} logmine_options;

void logmine_options_init(logmine_options *o);

/*
 * Mask one message into `out` (appended; tokens separated by one space,
 * leading/trailing blanks dropped). Input past LOGMINE_MAX_LINE is ignored.
 * Returns 0 or an fbuf error.
 */
int logmine_mask(fbuf *out, const char *msg, size_t len);

/* 64-bit FNV-1a of `len` bytes. */
uint64_t logmine_hash(const void *data, size_t len);
/* The fingerprint of a template text as 16 hex digits into out[17]. */
void logmine_fingerprint(char out[17], const char *tmpl, size_t len);

typedef struct logmine logmine;

/* A miner. Returns 0, or FACTORY_ENOMEM / FACTORY_ECONFIG (bad option). */
int logmine_new(logmine **out, const logmine_options *opts);
void logmine_free(logmine *lm);

typedef struct {
	uint64_t cluster_id; /* 1, 2, ... in order of creation; never reused */
	const char *tmpl;    /* the cluster's template now (owned by the miner,
	                        valid until the next logmine_add) */
	size_t tmpl_len;
	char fingerprint[17]; /* of tmpl */
	uint64_t count;       /* messages in the cluster so far */
	int created;          /* 1 when this message started the cluster */
	int changed;          /* 1 when this message made the template more general */
} logmine_match;

/*
 * Add one message: mask it, find or make its cluster, update the template.
 * Returns 0 (with *out filled) or FACTORY_ENOMEM. An empty message gets the
 * empty template.
 */
int logmine_add(logmine_match *out, logmine *lm, const char *msg, size_t len);

/*
 * The same for an already masked message (tokens separated by single
 * spaces, as logmine_mask writes them).
 */
int logmine_add_masked(logmine_match *out, logmine *lm, const char *masked, size_t len);

/* The current template of a cluster (NULL if evicted or unknown); owned by
 * the miner, valid until the next logmine_add. */
const char *logmine_template(const logmine *lm, uint64_t cluster_id);

typedef struct {
	size_t clusters;  /* live clusters */
	uint64_t created; /* clusters ever made */
	uint64_t evicted;
	uint64_t messages;
	uint64_t cache_hits; /* messages answered by the exact-match cache */
} logmine_stats;
void logmine_get_stats(logmine_stats *out, const logmine *lm);

/*
 * Similarity of two templates of the same token count, as the miner judges
 * it (share of equal constant tokens); -1 when the token counts differ.
 * Used to match a new template against ones filed earlier.
 */
double logmine_template_similarity(const char *a, const char *b);

/*
 * Sliding windows: per key (e.g. "user\x1f<fingerprint>") the times of the
 * last `count` events; an event fires when `count` events fall within
 * `window_ms`. Times must be non-decreasing per key for exact answers
 * (late events are still counted, by insertion). The table holds at most
 * `max_keys` keys; when full, a key whose events have all left the window
 * is dropped (that loses nothing), else the oldest of a few (counted by
 * logmine_windows_evicted).
 */
typedef struct logmine_windows logmine_windows;

int logmine_windows_new(logmine_windows **out, int count, long window_ms, size_t max_keys);
void logmine_windows_free(logmine_windows *w);

/*
 * Record an event at `t_ms` for `key`. *fired is set to 1 when this event
 * completes `count` events within the window (it fires once per burst: after
 * firing, the key's history is cleared so the next burst starts afresh).
 * Returns 0 or FACTORY_ENOMEM.
 */
int logmine_windows_add(int *fired, logmine_windows *w, const char *key, size_t key_len, int64_t t_ms);
size_t logmine_windows_keys(const logmine_windows *w);
uint64_t logmine_windows_evicted(const logmine_windows *w);

#endif
