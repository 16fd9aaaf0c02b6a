/* Tests for jobs/intake/guard.c at its bound: a full table fails open (new
 * keys pass untracked, known ones still fold or stay limited), is not swept
 * again before its first entry can go idle, and tracks again once entries
 * expire. The table is made small (64) so the bound is reached in a test;
 * the code is the server's own, compiled in here. */
#define GUARD_MAX_ENTRIES 64
#include "../../jobs/intake/guard.c"

#include <criterion/criterion.h>
#include <stdio.h>

static void key_of(dedup_key *k, int i)
{
	char text[32];
	const char *parts[1] = {text};

	snprintf(text, sizeof(text), "submission %d", i);
	dedup_key_of(k, parts, 1);
}

static void store(dedup *d, int i, long long now_ms)
{
	dedup_key k;
	char id[40], got[40];

	key_of(&k, i);
	snprintf(id, sizeof(id), "id-%d", i);
	cr_assert_eq(dedup_check(d, &k, now_ms, got, sizeof(got)), 0, "submission %d is new", i);
	dedup_stored(d, &k, id, now_ms);
}

Test(intake_guard, a_full_folding_table_fails_open_and_recovers)
{
	dedup *d = NULL;
	dedup_key k;
	char got[40];
	int i;

	cr_assert_eq(dedup_new(&d, 60), 0);
	for (i = 0; i < GUARD_MAX_ENTRIES; i++)
		store(d, i, 1000 + i);
	cr_assert_eq(d->t.count, GUARD_MAX_ENTRIES);

	/* Full of live entries: a new submission is let through, untracked... */
	key_of(&k, 1000);
	cr_assert_eq(dedup_check(d, &k, 2000, got, sizeof(got)), 0);
	cr_assert_eq(d->t.count, GUARD_MAX_ENTRIES, "nothing added past the bound");
	/* ...the sweep noted when the first entry goes idle (stored at 1000,
	 * window 60 s), and no other sweep happens before that. */
	cr_assert_eq(d->t.full_until, 2000 + 1000, "a full table is looked at again a second later at the latest");
	cr_assert_eq(dedup_check(d, &k, 2500, got, sizeof(got)), 0);
	/* Known submissions still fold while the table is full. */
	key_of(&k, 7);
	cr_assert_eq(dedup_check(d, &k, 2600, got, sizeof(got)), 1);
	cr_assert_str_eq(got, "id-7");

	/* Past the window of the first entries, they are swept and new ones
	 * are tracked again. */
	store(d, 2000, 1000 + 60000 + 10);
	key_of(&k, 2000);
	cr_assert_eq(dedup_check(d, &k, 1000 + 60000 + 20, got, sizeof(got)), 1);
	cr_assert_str_eq(got, "id-2000");
	cr_assert(d->t.count <= GUARD_MAX_ENTRIES);
	dedup_free(d);
}

Test(intake_guard, a_full_rate_table_lets_new_clients_through_and_keeps_limiting_known_ones)
{
	ratelimit *rl = NULL;
	char client[32];
	long retry = 0;
	int i;

	cr_assert_eq(ratelimit_new(&rl, 1, 1), 0); /* one a minute */
	for (i = 0; i < GUARD_MAX_ENTRIES; i++) {
		snprintf(client, sizeof(client), "10.0.0.%d", i);
		cr_assert_eq(ratelimit_take(rl, client, 1000, NULL), 1);
	}
	/* A known client is still limited. */
	cr_assert_eq(ratelimit_take(rl, "10.0.0.3", 1001, &retry), 0);
	cr_assert(retry >= 59 && retry <= 61, "retry after %ld s", retry);
	/* A new client gets through untracked (fail open), twice. */
	cr_assert_eq(ratelimit_take(rl, "192.0.2.1", 1002, NULL), 1);
	cr_assert_eq(ratelimit_take(rl, "192.0.2.1", 1003, NULL), 1);
	cr_assert_eq(rl->t.count, GUARD_MAX_ENTRIES);
	/* A minute later the buckets are full again, the entries idle, and the
	 * new client is tracked (and limited) like any other. */
	cr_assert_eq(ratelimit_take(rl, "192.0.2.1", 1000 + 60000 + 10, NULL), 1);
	cr_assert_eq(ratelimit_take(rl, "192.0.2.1", 1000 + 60000 + 20, NULL), 0);
	ratelimit_free(rl);
}
