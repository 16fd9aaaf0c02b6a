/* guard.c - rate limit and duplicate folding (see guard.h). */
#include "guard.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define STRIPES 16
#define BUCKETS 4096 /* per table, a power of two */
#define CLIENT_MAX 64

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

/* ---- rate limit ---- */

typedef struct rl_entry {
	struct rl_entry *next;
	char client[CLIENT_MAX];
	double tokens;
	long long at_ms;
} rl_entry;

struct ratelimit {
	double per_ms;   /* tokens per millisecond */
	double burst;
	pthread_mutex_t mu[STRIPES];
	rl_entry *buckets[BUCKETS];
	long count;      /* guarded by count_mu */
	pthread_mutex_t count_mu;
};

int ratelimit_new(ratelimit **out, long per_minute, long burst)
{
	ratelimit *rl = calloc(1, sizeof(*rl));
	int i;

	*out = NULL;
	if (!rl)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	rl->per_ms = per_minute > 0 ? (double)per_minute / 60000.0 : 0;
	rl->burst = burst > 0 ? (double)burst : (double)(per_minute > 0 ? per_minute : 1);
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_init(&rl->mu[i], NULL);
	pthread_mutex_init(&rl->count_mu, NULL);
	*out = rl;
	return 0;
}

void ratelimit_free(ratelimit *rl)
{
	int i;

	if (!rl)
		return;
	for (i = 0; i < BUCKETS; i++) {
		rl_entry *e = rl->buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&rl->mu[i]);
	pthread_mutex_destroy(&rl->count_mu);
	free(rl);
}

static double refill(const ratelimit *rl, const rl_entry *e, long long now_ms)
{
	double t = e->tokens + (double)(now_ms - e->at_ms) * rl->per_ms;
	return t > rl->burst ? rl->burst : t;
}

/* Drop entries of this bucket chain whose bucket is full again (they
 * behave exactly like a new client). Called with the stripe locked. */
static long sweep_chain(ratelimit *rl, rl_entry **head, long long now_ms)
{
	rl_entry *e, *prev = NULL, *next;
	long dropped = 0;

	for (e = *head; e; e = next) {
		next = e->next;
		if (refill(rl, e, now_ms) >= rl->burst) {
			if (prev)
				prev->next = next;
			else
				*head = next;
			free(e);
			dropped++;
		} else {
			prev = e;
		}
	}
	return dropped;
}

/* A new entry for `client` in chain `b` (stripe locked), or NULL when the
 * table is full or memory is short. */
static rl_entry *rl_add(ratelimit *rl, size_t b, const char *client, long long now_ms)
{
	long dropped = sweep_chain(rl, &rl->buckets[b], now_ms);
	rl_entry *e = NULL;
	int room;

	pthread_mutex_lock(&rl->count_mu);
	rl->count -= dropped;
	room = rl->count < GUARD_MAX_ENTRIES;
	if (room)
		rl->count++;
	pthread_mutex_unlock(&rl->count_mu);
	if (room && !(e = calloc(1, sizeof(*e)))) {
		pthread_mutex_lock(&rl->count_mu);
		rl->count--;
		pthread_mutex_unlock(&rl->count_mu);
	}
	if (!e)
		return NULL;
	strncpy(e->client, client, CLIENT_MAX - 1);
	e->tokens = rl->burst;
	e->at_ms = now_ms;
	e->next = rl->buckets[b];
	rl->buckets[b] = e;
	return e;
}

static void rl_sweep_all(ratelimit *rl, long long now_ms)
{
	size_t b;

	for (b = 0; b < BUCKETS; b++) {
		long dropped;

		pthread_mutex_lock(&rl->mu[b % STRIPES]);
		dropped = sweep_chain(rl, &rl->buckets[b], now_ms);
		pthread_mutex_unlock(&rl->mu[b % STRIPES]);
		pthread_mutex_lock(&rl->count_mu);
		rl->count -= dropped;
		pthread_mutex_unlock(&rl->count_mu);
	}
}

int ratelimit_take(ratelimit *rl, const char *client, long long now_ms, long *retry_after_s)
{
	int swept = 0;

	uint64_t h;
	size_t b;
	pthread_mutex_t *mu;
	rl_entry *e;
	int allowed;

	if (retry_after_s)
		*retry_after_s = 0;
	if (rl->per_ms <= 0)
		return 1;
	h = mix(fnv1a(client, strlen(client), 0xcbf29ce484222325ULL));
	b = (size_t)(h & (BUCKETS - 1));
	mu = &rl->mu[b % STRIPES];
again:
	pthread_mutex_lock(mu);
	for (e = rl->buckets[b]; e; e = e->next) {
		if (!strncmp(e->client, client, CLIENT_MAX - 1))
			break;
	}
	if (!e)
		e = rl_add(rl, b, client, now_ms);
	if (!e) {
		pthread_mutex_unlock(mu);
		if (!swept) {
			rl_sweep_all(rl, now_ms);
			swept = 1;
			goto again;
		}
		return 1; /* fail open, see guard.h */
	}
	e->tokens = refill(rl, e, now_ms);
	e->at_ms = now_ms;
	allowed = e->tokens >= 1.0;
	if (allowed)
		e->tokens -= 1.0;
	else if (retry_after_s)
		*retry_after_s = (long)((1.0 - e->tokens) / rl->per_ms / 1000.0) + 1;
	pthread_mutex_unlock(mu);
	return allowed;
}

/* ---- duplicate folding ---- */

typedef struct dd_entry {
	struct dd_entry *next;
	dedup_key key;
	long long at_ms;   /* when stored; 0 while being stored */
	char id[40];
} dd_entry;

struct dedup {
	long long window_ms;
	pthread_mutex_t mu[STRIPES];
	dd_entry *buckets[BUCKETS];
	long count;
	pthread_mutex_t count_mu;
};

int dedup_new(dedup **out, long window_s)
{
	dedup *d = calloc(1, sizeof(*d));
	int i;

	*out = NULL;
	if (!d)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	d->window_ms = window_s > 0 ? (long long)window_s * 1000 : 0;
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_init(&d->mu[i], NULL);
	pthread_mutex_init(&d->count_mu, NULL);
	*out = d;
	return 0;
}

void dedup_free(dedup *d)
{
	int i;

	if (!d)
		return;
	for (i = 0; i < BUCKETS; i++) {
		dd_entry *e = d->buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&d->mu[i]);
	pthread_mutex_destroy(&d->count_mu);
	free(d);
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

static long dd_sweep(dedup *d, dd_entry **head, long long now_ms)
{
	dd_entry *e, *prev = NULL, *next;
	long dropped = 0;

	for (e = *head; e; e = next) {
		next = e->next;
		if (e->at_ms && now_ms - e->at_ms > d->window_ms) {
			if (prev)
				prev->next = next;
			else
				*head = next;
			free(e);
			dropped++;
		} else {
			prev = e;
		}
	}
	return dropped;
}

/* Sweep every chain, one stripe at a time (called with no lock held). */
static void dd_sweep_all(dedup *d, long long now_ms)
{
	size_t b;

	for (b = 0; b < BUCKETS; b++) {
		long dropped;

		pthread_mutex_lock(&d->mu[b % STRIPES]);
		dropped = dd_sweep(d, &d->buckets[b], now_ms);
		pthread_mutex_unlock(&d->mu[b % STRIPES]);
		pthread_mutex_lock(&d->count_mu);
		d->count -= dropped;
		pthread_mutex_unlock(&d->count_mu);
	}
}

int dedup_check(dedup *d, const dedup_key *key, long long now_ms, char *id_out, size_t id_len)
{
	int swept = 0;

	size_t b = (size_t)(key->a & (BUCKETS - 1));
	pthread_mutex_t *mu = &d->mu[b % STRIPES];
	dd_entry *e;
	long dropped;
	int room;

	if (!d->window_ms)
		return 0;
again:
	pthread_mutex_lock(mu);
	dropped = dd_sweep(d, &d->buckets[b], now_ms);
	for (e = d->buckets[b]; e; e = e->next) {
		if (e->key.a == key->a && e->key.b == key->b)
			break;
	}
	if (e && e->at_ms) {
		strncpy(id_out, e->id, id_len - 1);
		id_out[id_len - 1] = '\0';
		pthread_mutex_unlock(mu);
		pthread_mutex_lock(&d->count_mu);
		d->count -= dropped;
		pthread_mutex_unlock(&d->count_mu);
		return 1;
	}
	/* Not stored yet (or being stored by another request: then both are
	 * stored, since folding into something not yet safe could lose it). */
	pthread_mutex_lock(&d->count_mu);
	d->count -= dropped;
	room = !e && d->count < GUARD_MAX_ENTRIES;
	if (room)
		d->count++;
	pthread_mutex_unlock(&d->count_mu);
	if (!e && !room && !swept) {
		pthread_mutex_unlock(mu);
		dd_sweep_all(d, now_ms);
		swept = 1;
		goto again;
	}
	if (room && (e = calloc(1, sizeof(*e)))) {
		e->key = *key;
		e->next = d->buckets[b];
		d->buckets[b] = e;
	} else if (room) {
		pthread_mutex_lock(&d->count_mu);
		d->count--;
		pthread_mutex_unlock(&d->count_mu);
	}
	pthread_mutex_unlock(mu);
	return 0;
}

void dedup_stored(dedup *d, const dedup_key *key, const char *id, long long now_ms)
{
	size_t b = (size_t)(key->a & (BUCKETS - 1));
	pthread_mutex_t *mu = &d->mu[b % STRIPES];
	dd_entry *e;

	if (!d->window_ms)
		return;
	pthread_mutex_lock(mu);
	for (e = d->buckets[b]; e; e = e->next) {
		if (e->key.a == key->a && e->key.b == key->b) {
			if (!e->at_ms) {
				e->at_ms = now_ms;
				strncpy(e->id, id, sizeof(e->id) - 1);
			}
			break;
		}
	}
	pthread_mutex_unlock(mu);
}

void dedup_forget(dedup *d, const dedup_key *key)
{
	size_t b = (size_t)(key->a & (BUCKETS - 1));
	pthread_mutex_t *mu = &d->mu[b % STRIPES];
	dd_entry **pp, *e;

	if (!d->window_ms)
		return;
	pthread_mutex_lock(mu);
	for (pp = &d->buckets[b]; (e = *pp); pp = &e->next) {
		if (e->key.a == key->a && e->key.b == key->b && !e->at_ms) {
			*pp = e->next;
			free(e);
			pthread_mutex_lock(&d->count_mu);
			d->count--;
			pthread_mutex_unlock(&d->count_mu);
			break;
		}
	}
	pthread_mutex_unlock(mu);
}
