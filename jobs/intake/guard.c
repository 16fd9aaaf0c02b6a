/* guard.c - rate limit and duplicate folding (see guard.h). */
#include "guard.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define STRIPES 16
#define BUCKETS 4096 /* per table, a power of two */

static uint64_t fnv1a(const void *data, size_t len, uint64_t h)
{
	const unsigned char *p = data;

	while (len--) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

void dedup_key_of(dedup_key *out, const char *const *parts, size_t nparts)
{
	uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
	size_t i;

	for (i = 0; i < nparts; i++) {
		const char *p = parts[i] ? parts[i] : "";
		size_t len = strlen(p);
		char sep = parts[i] ? '\x1f' : '\x1e'; /* absent differs from empty */

		a = fnv1a(p, len, a);
		a = fnv1a(&sep, 1, a);
		b = fnv1a(&sep, 1, b);
		b = fnv1a(p, len, b ^ (uint64_t)len);
	}
	out->a = mix(a);
	out->b = mix(b ^ out->a);
}

/* ---- the striped table both guards use ----
 *
 * A hash table of BUCKETS chains keyed by a 128-bit hash, each entry
 * carrying `payload_size` bytes of its user's state and the time after
 * which it is idle (`expires_ms`, set by the user; 0: never); chains are
 * guarded by STRIPES locks. Idle entries are swept from a chain whenever it
 * is visited, and from every chain when the table is full
 * (GUARD_MAX_ENTRIES). */

typedef struct entry {
	struct entry *next;
	dedup_key key;
	long long expires_ms;
	long long payload[]; /* aligned for any field the users keep */
} entry;

typedef struct {
	pthread_mutex_t mu[STRIPES];
	entry *buckets[BUCKETS];
	long count;          /* entries (atomic) */
	long long full_until; /* full, and nothing idle before this (atomic) */
	size_t payload_size;
} table;

static void table_init(table *t, size_t payload_size)
{
	int i;

	memset(t, 0, sizeof(*t));
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_init(&t->mu[i], NULL);
	t->payload_size = payload_size;
}

static void table_release(table *t)
{
	int i;

	for (i = 0; i < BUCKETS; i++) {
		entry *e = t->buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&t->mu[i]);
}

static size_t bucket_of(const dedup_key *key)
{
	return (size_t)(key->a & (BUCKETS - 1));
}

static pthread_mutex_t *stripe_of(table *t, size_t b)
{
	return &t->mu[b % STRIPES];
}

/* Drop the idle entries of chain `b` (its stripe locked). */
static void sweep_chain(table *t, size_t b, long long now_ms)
{
	entry *e, **pp = &t->buckets[b];
	long dropped = 0;

	while ((e = *pp)) {
		if (e->expires_ms && now_ms > e->expires_ms) {
			*pp = e->next;
			free(e);
			dropped++;
		} else {
			pp = &e->next;
		}
	}
	if (dropped)
		__atomic_fetch_sub(&t->count, dropped, __ATOMIC_RELAXED);
}

/* Sweep every chain, one stripe at a time (called with no lock held). When
 * the table is still full, note when its first entry goes idle: until then a
 * full table is not swept again (a flood would otherwise pay for a walk of
 * every entry on each request). */
static void sweep_all(table *t, long long now_ms)
{
	long long first = 0;
	size_t b;

	for (b = 0; b < BUCKETS; b++) {
		entry *e;

		pthread_mutex_lock(stripe_of(t, b));
		sweep_chain(t, b, now_ms);
		for (e = t->buckets[b]; e; e = e->next) {
			if (e->expires_ms && (!first || e->expires_ms < first))
				first = e->expires_ms;
		}
		pthread_mutex_unlock(stripe_of(t, b));
	}
	/* Entries still being stored have no expiry yet: look again soon. */
	if (!first || first > now_ms + 1000)
		first = now_ms + 1000;
	__atomic_store_n(&t->full_until, first, __ATOMIC_RELAXED);
}

static entry *find_locked(table *t, size_t b, const dedup_key *key)
{
	entry *e;

	for (e = t->buckets[b]; e; e = e->next) {
		if (e->key.a == key->a && e->key.b == key->b)
			return e;
	}
	return NULL;
}

/*
 * Lock the stripe of `key` and find its entry, after sweeping its chain.
 * With `create`, a missing entry is added with a zeroed payload (*created
 * set); when the table is full even after a sweep, or memory is short, the
 * result is NULL (fail open). Returns with the stripe locked in every case:
 * the caller reads or changes the payload, then calls table_unlock().
 */
static entry *table_lock(table *t, const dedup_key *key, long long now_ms, int create, int *created)
{
	size_t b = bucket_of(key);
	pthread_mutex_t *mu = stripe_of(t, b);
	entry *e;
	int swept = 0;

	*created = 0;
	for (;;) {
		pthread_mutex_lock(mu);
		sweep_chain(t, b, now_ms);
		if ((e = find_locked(t, b, key)) || !create)
			return e;
		if (__atomic_add_fetch(&t->count, 1, __ATOMIC_RELAXED) <= GUARD_MAX_ENTRIES)
			break;
		__atomic_fetch_sub(&t->count, 1, __ATOMIC_RELAXED);
		if (swept || now_ms <= __atomic_load_n(&t->full_until, __ATOMIC_RELAXED))
			return NULL;
		pthread_mutex_unlock(mu);
		sweep_all(t, now_ms);
		swept = 1;
	}
	if (!(e = calloc(1, sizeof(*e) + t->payload_size))) {
		__atomic_fetch_sub(&t->count, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	e->key = *key;
	e->next = t->buckets[b];
	t->buckets[b] = e;
	*created = 1;
	return e;
}

static void table_unlock(table *t, const dedup_key *key)
{
	pthread_mutex_unlock(stripe_of(t, bucket_of(key)));
}

/* Remove `e` (found by table_lock(), stripe still locked). */
static void table_remove_locked(table *t, entry *e)
{
	entry **pp;

	for (pp = &t->buckets[bucket_of(&e->key)]; *pp; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			free(e);
			__atomic_fetch_sub(&t->count, 1, __ATOMIC_RELAXED);
			return;
		}
	}
}

/* ---- rate limit ---- */

typedef struct {
	double tokens;
	long long at_ms;
} rl_state;

struct ratelimit {
	double per_ms;   /* tokens per millisecond */
	double burst;
	table t;
};

static double refill(const ratelimit *rl, const rl_state *st, long long now_ms)
{
	double t = st->tokens + (double)(now_ms - st->at_ms) * rl->per_ms;
	return t > rl->burst ? rl->burst : t;
}

int ratelimit_new(ratelimit **out, long per_minute, long burst)
{
	ratelimit *rl = calloc(1, sizeof(*rl));

	*out = NULL;
	if (!rl)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	rl->per_ms = per_minute > 0 ? (double)per_minute / 60000.0 : 0;
	rl->burst = burst > 0 ? (double)burst : (double)(per_minute > 0 ? per_minute : 1);
	table_init(&rl->t, sizeof(rl_state));
	*out = rl;
	return 0;
}

void ratelimit_free(ratelimit *rl)
{
	if (!rl)
		return;
	table_release(&rl->t);
	free(rl);
}

int ratelimit_take(ratelimit *rl, const char *client, long long now_ms, long *retry_after_s)
{
	dedup_key key;
	entry *e;
	rl_state *st;
	int allowed, created;

	if (retry_after_s)
		*retry_after_s = 0;
	if (rl->per_ms <= 0)
		return 1;
	dedup_key_of(&key, &client, 1);
	if (!(e = table_lock(&rl->t, &key, now_ms, 1, &created))) {
		table_unlock(&rl->t, &key);
		return 1; /* fail open, see guard.h */
	}
	st = (rl_state *)e->payload;
	if (created) {
		st->tokens = rl->burst;
		st->at_ms = now_ms;
	}
	st->tokens = refill(rl, st, now_ms);
	st->at_ms = now_ms;
	allowed = st->tokens >= 1.0;
	if (allowed)
		st->tokens -= 1.0;
	else if (retry_after_s)
		*retry_after_s = (long)((1.0 - st->tokens) / rl->per_ms / 1000.0) + 1;
	/* A client whose bucket is full again behaves exactly like a new one. */
	e->expires_ms = now_ms + (long long)((rl->burst - st->tokens) / rl->per_ms) + 1;
	table_unlock(&rl->t, &key);
	return allowed;
}

/* ---- duplicate folding ---- */

typedef struct {
	long long at_ms;   /* when stored; 0 while being stored */
	char id[40];
} dd_state;

struct dedup {
	long long window_ms;
	table t;
};

int dedup_new(dedup **out, long window_s)
{
	dedup *d = calloc(1, sizeof(*d));

	*out = NULL;
	if (!d)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	d->window_ms = window_s > 0 ? (long long)window_s * 1000 : 0;
	table_init(&d->t, sizeof(dd_state));
	*out = d;
	return 0;
}

void dedup_free(dedup *d)
{
	if (!d)
		return;
	table_release(&d->t);
	free(d);
}

int dedup_check(dedup *d, const dedup_key *key, long long now_ms, char *id_out, size_t id_len)
{
	entry *e;
	dd_state *st;
	int created;

	if (!d->window_ms)
		return 0;
	e = table_lock(&d->t, key, now_ms, 1, &created);
	st = e ? (dd_state *)e->payload : NULL;
	if (st && st->at_ms) {
		strncpy(id_out, st->id, id_len - 1);
		id_out[id_len - 1] = '\0';
		table_unlock(&d->t, key);
		return 1;
	}
	/* Reserved for the caller now (or being stored by another request:
	 * then both are stored, since folding into something not yet safe
	 * could lose it). */
	table_unlock(&d->t, key);
	return 0;
}

void dedup_stored(dedup *d, const dedup_key *key, const char *id, long long now_ms)
{
	entry *e;
	dd_state *st;
	int created;

	if (!d->window_ms)
		return;
	if ((e = table_lock(&d->t, key, now_ms, 0, &created))) {
		st = (dd_state *)e->payload;
		if (!st->at_ms) {
			st->at_ms = now_ms;
			strncpy(st->id, id, sizeof(st->id) - 1);
			e->expires_ms = now_ms + d->window_ms;
		}
	}
	table_unlock(&d->t, key);
}

void dedup_forget(dedup *d, const dedup_key *key)
{
	entry *e;
	int created;

	if (!d->window_ms)
		return;
	/* now_ms 0: nothing is idle yet, so nothing else is swept. */
	if ((e = table_lock(&d->t, key, 0, 0, &created)) && !((dd_state *)e->payload)->at_ms)
		table_remove_locked(&d->t, e);
	table_unlock(&d->t, key);
}

int dedup_remember(dedup *d, const dedup_key *key, const char *id, long long at_ms, long long now_ms)
{
	entry *e;
	dd_state *st;
	int created, kept = 0;

	if (!d->window_ms || at_ms <= 0 || now_ms - at_ms > d->window_ms)
		return 0;
	if ((e = table_lock(&d->t, key, now_ms, 1, &created))) {
		st = (dd_state *)e->payload;
		/* The first submission is the one later copies fold into. */
		if (!st->at_ms || at_ms < st->at_ms) {
			st->at_ms = at_ms;
			memset(st->id, 0, sizeof(st->id));
			strncpy(st->id, id, sizeof(st->id) - 1);
			e->expires_ms = at_ms + d->window_ms;
		}
		kept = 1;
	}
	table_unlock(&d->t, key);
	return kept;
}
