/* Tests for common/logmine: masking, mining, fingerprints, eviction, windows. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "logmine.h"

static char *masked(const char *in)
{
	static char out[4096];
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(logmine_mask(&b, in, strlen(in)), 0);
	snprintf(out, sizeof(out), "%s", fbuf_cstr(&b));
	fbuf_release(&b);
	return out;
}

Test(logmine, masks_numbers_and_words_with_digits)
{
	cr_assert_str_eq(masked("PacketResponder 1 for block blk_-123 terminating"),
	                 "PacketResponder <*> for block <*> terminating");
	cr_assert_str_eq(masked("took 12.5 ms"), "took <*> ms");
	cr_assert_str_eq(masked("  leading and   inner blanks  "), "leading and inner blanks");
}

Test(logmine, masks_in_fixed_order)
{
	cr_assert_str_eq(masked("at 2026-11-27T10:00:00.123Z done"), "at <*> done");
	cr_assert_str_eq(masked("id 70c1714b-c11b-4c88-b300-239afe1f5ff8."), "id <*>.");
	cr_assert_str_eq(masked("mail bob@example.com now"), "mail <*> now");
	cr_assert_str_eq(masked("from 10.0.0.12:8080 ok"), "from <*> ok");
	cr_assert_str_eq(masked("addr fe80::1ff:fe23:4567:890a up"), "addr <*> up");
	cr_assert_str_eq(masked("flags 0x1f and deadbeef42"), "flags <*> and <*>");
	cr_assert_str_eq(masked("GET https://shop.example.com/api/v1/orders/123?token=abc"),
	                 "GET https://shop.example.com/api/<*>/orders/<*>?<*>");
	cr_assert_str_eq(masked("open /var/lib/app/cache/42/data failed"), "open /var/lib/app/cache/<*>/data failed");
	cr_assert_str_eq(masked("user 'alice' not found"), "user '<*>' not found");
	cr_assert_str_eq(masked("retry count=3, mode=fast"), "retry count=<*>, mode=<*>");
	cr_assert_str_eq(masked("tag=\"View Lock\", uid=10"), "tag=\"<*>\", uid=<*>");
	cr_assert_str_eq(masked("ret:false done"), "ret:<*> done");
}

Test(logmine, folds_runs_of_wildcards)
{
	cr_assert_str_eq(masked("speeds ( 3552 3534 3391 ) ok"), "speeds ( <*> ) ok");
	cr_assert_str_eq(masked("a 1 2 b 3"), "a <*> b <*>");
}

Test(logmine, mask_survives_hostile_input)
{
	char big[LOGMINE_MAX_LINE + 100];
	fbuf b;

	memset(big, 'x', sizeof(big));
	big[10] = '\0'; /* a NUL in the middle */
	big[20] = '=';
	big[21] = '"';
	fbuf_init(&b, 0);
	cr_assert_eq(logmine_mask(&b, big, sizeof(big)), 0);
	cr_assert(b.len <= LOGMINE_MAX_LINE + 16);
	fbuf_release(&b);
}

Test(logmine, fingerprint_is_fnv1a_64)
{
	char fp[17];

	/* Published FNV-1a 64 test vectors. */
	logmine_fingerprint(fp, "", 0);
	cr_assert_str_eq(fp, "cbf29ce484222325");
	logmine_fingerprint(fp, "a", 1);
	cr_assert_str_eq(fp, "af63dc4c8601ec8c");
	logmine_fingerprint(fp, "foobar", 6);
	cr_assert_str_eq(fp, "85944171f73967e8");
}

Test(logmine, groups_messages_of_one_template)
{
	logmine *lm;
	logmine_match a, b, c;

	cr_assert_eq(logmine_new(&lm, NULL), 0);
	cr_assert_eq(logmine_add(&a, lm, "payment failed for order 1: card declined", 41), 0);
	cr_assert(a.created);
	cr_assert_eq(logmine_add(&b, lm, "payment failed for order 22: card declined", 42), 0);
	cr_assert_eq(a.cluster_id, b.cluster_id);
	cr_assert(!b.created);
	cr_assert_eq(b.count, 2);
	cr_assert_str_eq(b.tmpl, "payment failed for order <*>: card declined");
	cr_assert_eq(logmine_add(&c, lm, "login failed for user <*>", 25), 0);
	cr_assert_neq(c.cluster_id, a.cluster_id);
	logmine_free(lm);
}

Test(logmine, generalises_a_variable_position)
{
	logmine *lm;
	logmine_match a, b;
	char fp[17];

	cr_assert_eq(logmine_new(&lm, NULL), 0);
	logmine_add(&a, lm, "session expired for user-alpha on web", 37);
	logmine_add(&b, lm, "session expired for user-beta on web", 36);
	cr_assert_eq(a.cluster_id, b.cluster_id);
	cr_assert(b.changed);
	cr_assert_str_eq(b.tmpl, "session expired for <*> on web");
	logmine_fingerprint(fp, b.tmpl, b.tmpl_len);
	cr_assert_str_eq(fp, b.fingerprint);
	cr_assert_str_eq(logmine_template(lm, b.cluster_id), "session expired for <*> on web");
	logmine_free(lm);
}

Test(logmine, different_words_are_different_events)
{
	logmine *lm;
	logmine_match a, b, c, d;

	cr_assert_eq(logmine_new(&lm, NULL), 0);
	logmine_add(&a, lm, "[instance: <*>] VM Paused (Lifecycle Event)", 43);
	logmine_add(&b, lm, "[instance: <*>] VM Resumed (Lifecycle Event)", 44);
	cr_assert_neq(a.cluster_id, b.cluster_id);
	/* literal values are values, not words */
	logmine_add(&c, lm, "key down true canceled false", 28);
	logmine_add(&d, lm, "key down false canceled false", 29);
	cr_assert_eq(c.cluster_id, d.cluster_id);
	logmine_free(lm);
}

Test(logmine, same_fingerprint_across_miners)
{
	logmine *x, *y;
	logmine_match a, b;

	cr_assert_eq(logmine_new(&x, NULL), 0);
	cr_assert_eq(logmine_new(&y, NULL), 0);
	logmine_add(&a, x, "db timeout after 300 ms on shard 4", 34);
	logmine_add(&b, y, "db timeout after 1200 ms on shard 17", 36);
	cr_assert_str_eq(a.fingerprint, b.fingerprint);
	logmine_free(x);
	logmine_free(y);
}

Test(logmine, state_is_bounded_by_eviction)
{
	logmine *lm;
	logmine_options o;
	logmine_match m;
	logmine_stats st;
	char line[64];
	int i;

	logmine_options_init(&o);
	o.max_clusters = 16;
	cr_assert_eq(logmine_new(&lm, &o), 0);
	for (i = 0; i < 1000; i++) {
		/* distinct words, different lengths: one template each */
		int n = snprintf(line, sizeof(line), "event %c%c%c happened", 'a' + i % 26, 'a' + (i / 26) % 26,
		                 'a' + (i / 676) % 26);
		cr_assert_eq(logmine_add(&m, lm, line, (size_t)n), 0);
	}
	logmine_get_stats(&st, lm);
	cr_assert_leq(st.clusters, 16);
	cr_assert_gt(st.evicted, 900);
	cr_assert_eq(st.messages, 1000);
	/* an evicted cluster's id is never reused */
	cr_assert_eq(m.cluster_id, st.created);
	logmine_free(lm);
}

Test(logmine, rejects_bad_options)
{
	logmine *lm;
	logmine_options o;

	logmine_options_init(&o);
	o.sim_threshold = 2;
	cr_assert_eq(logmine_new(&lm, &o), FACTORY_ECONFIG);
	cr_assert_null(lm);
}

Test(logmine, template_similarity)
{
	cr_assert_float_eq(logmine_template_similarity("a b <*> d", "a b c d"), 0.75, 1e-9);
	cr_assert_float_eq(logmine_template_similarity("a b", "a b c"), -1, 1e-9);
	cr_assert_float_eq(logmine_template_similarity("x y", "x y"), 1.0, 1e-9);
}

Test(windows, four_within_two_minutes_fire)
{
	logmine_windows *w;
	int fired = 0, i;

	cr_assert_eq(logmine_windows_new(&w, 4, 120000, 64), 0);
	for (i = 0; i < 3; i++) {
		cr_assert_eq(logmine_windows_add(&fired, w, "u1", 2, 1000 + i * 30000), 0);
		cr_assert_eq(fired, 0);
	}
	cr_assert_eq(logmine_windows_add(&fired, w, "u1", 2, 1000 + 3 * 30000), 0);
	cr_assert_eq(fired, 1);
	/* a fresh burst must start again */
	cr_assert_eq(logmine_windows_add(&fired, w, "u1", 2, 100000), 0);
	cr_assert_eq(fired, 0);
	logmine_windows_free(w);
}

Test(windows, three_or_spread_out_do_not_fire)
{
	logmine_windows *w;
	int fired = 0, i;

	cr_assert_eq(logmine_windows_new(&w, 4, 120000, 64), 0);
	for (i = 0; i < 3; i++) {
		logmine_windows_add(&fired, w, "u2", 2, i * 1000);
		cr_assert_eq(fired, 0);
	}
	/* the fourth comes 3 minutes after the first */
	logmine_windows_add(&fired, w, "u2", 2, 180000);
	cr_assert_eq(fired, 0);
	/* other keys do not add up */
	logmine_windows_add(&fired, w, "u3", 2, 181000);
	cr_assert_eq(fired, 0);
	logmine_windows_free(w);
}

Test(windows, keys_are_bounded)
{
	logmine_windows *w;
	char key[32];
	int fired, i;

	cr_assert_eq(logmine_windows_new(&w, 4, 120000, 64), 0);
	for (i = 0; i < 10000; i++) {
		int n = snprintf(key, sizeof(key), "user%d", i);
		cr_assert_eq(logmine_windows_add(&fired, w, key, (size_t)n, i), 0);
	}
	cr_assert_leq(logmine_windows_keys(w), 64);
	cr_assert_gt(logmine_windows_evicted(w), 9000);
	logmine_windows_free(w);
	/* keys whose events left the window go first, and that loses nothing */
	cr_assert_eq(logmine_windows_new(&w, 4, 120000, 64), 0);
	for (i = 0; i < 10000; i++) {
		int n = snprintf(key, sizeof(key), "user%d", i);
		cr_assert_eq(logmine_windows_add(&fired, w, key, (size_t)n, (int64_t)i * 10000), 0);
	}
	cr_assert_leq(logmine_windows_keys(w), 64);
	cr_assert_eq(logmine_windows_evicted(w), 0);
	logmine_windows_free(w);
	cr_assert_eq(logmine_windows_new(&w, 0, 1, 64), FACTORY_ECONFIG);
	cr_assert_null(w);
}
