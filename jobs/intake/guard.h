/*
 * guard.h - intake's in-memory guards: a per-client token-bucket rate limit
 * and a short-window table that folds duplicate submissions into one.
 *
 * Both are bounded: at most GUARD_MAX_ENTRIES entries each; when full, idle
 * entries are swept, and if none can go the new client is let through
 * untracked (fail open: a flood of distinct addresses must not lock out
 * real customers nor grow memory). A table still full after a sweep is
 * not swept again before its first entry can go idle, so a flood costs no
 * more per request than normal traffic. Thread-safe (striped locks). Both
 * are one kind of table inside: 128-bit keys with a small state and an
 * idle time each.
 */
#ifndef FACTORY_INTAKE_GUARD_H
#define FACTORY_INTAKE_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Entries per table (a test may set a smaller bound before including). */
#ifndef GUARD_MAX_ENTRIES
#define GUARD_MAX_ENTRIES 65536
#endif

typedef struct ratelimit ratelimit;

/* `per_minute` tokens per minute per client, bucket of `burst` (0 per_minute:
 * no limit, every call allowed). */
int ratelimit_new(ratelimit **out, long per_minute, long burst);
void ratelimit_free(ratelimit *rl);
/* Take one token for `client` at time `now_ms`. Returns 1 if allowed, else 0
 * with *retry_after_s (may be NULL) set to the seconds until one is back. */
int ratelimit_take(ratelimit *rl, const char *client, long long now_ms, long *retry_after_s);

typedef struct dedup dedup;

/* Fold identical submissions seen within `window_s` seconds (0: never fold). */
int dedup_new(dedup **out, long window_s);
void dedup_free(dedup *d);

/* The key of a submission: a 128-bit hash of the given parts. */
typedef struct {
	uint64_t a, b;
} dedup_key;
void dedup_key_of(dedup_key *out, const char *const *parts, size_t nparts);

/*
 * Look up `key` at `now_ms`. Returns 1 with `id_out` (id_len bytes) set when
 * an identical submission was stored within the window (fold it), else 0
 * after reserving the key for the caller, who must then call dedup_stored()
 * once the submission is safe, or dedup_forget() if storing it failed.
 */
int dedup_check(dedup *d, const dedup_key *key, long long now_ms, char *id_out, size_t id_len);
void dedup_stored(dedup *d, const dedup_key *key, const char *id, long long now_ms);
void dedup_forget(dedup *d, const dedup_key *key);

/*
 * Remember a submission stored earlier (`at_ms`), e.g. found in the spool at
 * start-up, so copies sent after a restart still fold into it. Kept only
 * when it is within the window at `now_ms`; of two with one key the older
 * wins. Returns 1 when kept, else 0.
 */
int dedup_remember(dedup *d, const dedup_key *key, const char *id, long long at_ms, long long now_ms);

#endif
