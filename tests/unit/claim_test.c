/* Tests for common/claim.c: markers (format, parse, escaping, forgery),
 * histories read from GitLab's notes, who owns an issue, heals that race,
 * attempts and their context, times. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claim.h"
#include "error.h"

#define ME 2
#define SOMEONE 7

static cJSON *notes;

static void setup(void)
{
	notes = cJSON_CreateArray();
}

static void teardown(void)
{
	cJSON_Delete(notes);
}

TestSuite(claim, .init = setup, .fini = teardown);

/* Add a note as GitLab returns it (newest first, like the API's default). */
static void note(long id, long author, const char *created, const char *body, int system)
{
	cJSON *n = cJSON_CreateObject(), *a = cJSON_AddObjectToObject(n, "author");

	cJSON_AddNumberToObject(n, "id", (double)id);
	cJSON_AddNumberToObject(a, "id", (double)author);
	cJSON_AddStringToObject(n, "body", body);
	cJSON_AddStringToObject(n, "created_at", created);
	cJSON_AddBoolToObject(n, "system", system);
	cJSON_InsertItemInArray(notes, 0, n);
}

static char *claim_note(const char *run, long job, long lease_until, int attempt)
{
	claim_entry c;
	cJSON *j;
	fbuf b;

	memset(&c, 0, sizeof(c));
	snprintf(c.run, sizeof(c.run), "%s", run);
	c.job = job;
	c.pipeline = 100;
	snprintf(c.branch, sizeof(c.branch), "factory/12-fix");
	c.started_at = 1000;
	c.lease_until = lease_until;
	c.attempt = attempt;
	cr_assert_eq(claim_entry_json(&j, &c), 0);
	fbuf_init(&b, 0);
	fbuf_puts(&b, "The Factory is working on this issue.\n\n");
	cr_assert_eq(claim_marker_format(&b, "claim", j), 0);
	cJSON_Delete(j);
	return fbuf_detach(&b);
}

static char *event_note(long ends, const char *action, const char *diagnosis, int attempt, const char *why)
{
	claim_event e;
	cJSON *j;
	fbuf b;

	memset(&e, 0, sizeof(e));
	e.ends = ends;
	snprintf(e.action, sizeof(e.action), "%s", action);
	snprintf(e.diagnosis, sizeof(e.diagnosis), "%s", diagnosis);
	snprintf(e.why, sizeof(e.why), "%s", why);
	e.attempt = attempt;
	cr_assert_eq(claim_event_json(&j, &e), 0);
	fbuf_init(&b, 0);
	fbuf_puts(&b, "Healed.\n\n");
	cr_assert_eq(claim_marker_format(&b, "event", j), 0);
	cJSON_Delete(j);
	return fbuf_detach(&b);
}

static void add_claim(long id, long author, const char *run, long job, long lease_until)
{
	char *b = claim_note(run, job, lease_until, 1);
	note(id, author, "2026-11-27T10:00:00.000Z", b, 0);
	free(b);
}

static void add_event(long id, long ends, const char *action, const char *diagnosis, int attempt, const char *why)
{
	char *b = event_note(ends, action, diagnosis, attempt, why);
	note(id, ME, "2026-11-27T10:05:00Z", b, 0);
	free(b);
}

Test(claim, marker_round_trip_and_escaping)
{
	cJSON *o = cJSON_CreateObject(), *got = NULL;
	char kind[8];
	fbuf b;

	cJSON_AddStringToObject(o, "why", "a --> b <!-- c & d");
	cJSON_AddNumberToObject(o, "n", 3);
	fbuf_init(&b, 0);
	cr_assert_eq(claim_marker_format(&b, "event", o), 0);
	/* Exactly one comment opener and one closer, at the ends. */
	cr_assert_eq(strncmp(b.ptr, "<!-- factory:event {", 20), 0, "%s", b.ptr);
	cr_assert_eq(strstr(b.ptr, "-->"), b.ptr + b.len - 3, "%s", b.ptr);
	cr_assert_eq(strstr(b.ptr + 1, "<!--"), NULL);
	cr_assert_eq(claim_marker_parse(kind, &got, b.ptr), 0);
	cr_assert_str_eq(kind, "event");
	cr_assert_str_eq(cJSON_GetObjectItem(got, "why")->valuestring, "a --> b <!-- c & d");
	cJSON_Delete(got);
	cr_assert_eq(claim_marker_format(&b, "other", o), FACTORY_EINVALID);
	fbuf_release(&b);
	cJSON_Delete(o);
}

Test(claim, parse_refuses_what_is_not_a_marker)
{
	cJSON *f = NULL;
	char kind[8];

	cr_assert_eq(claim_marker_parse(kind, &f, "no marker"), FACTORY_ENOTFOUND);
	cr_assert_eq(claim_marker_parse(kind, &f, "<!-- factory:claim [1] -->"), FACTORY_ENOTFOUND);
	cr_assert_eq(claim_marker_parse(kind, &f, "<!-- factory:other {} -->"), FACTORY_ENOTFOUND);
	cr_assert_eq(claim_marker_parse(kind, &f, "<!-- factory:claim {\"a\":1}"), FACTORY_ENOTFOUND);
	cr_assert_eq(claim_marker_parse(kind, &f, "<!-- factory:claim {\"a\":"), FACTORY_ENOTFOUND);
	cr_assert_eq(claim_marker_parse(kind, &f, NULL), FACTORY_ENOTFOUND);
	cr_assert_null(f);
	/* The last marker counts. */
	cr_assert_eq(claim_marker_parse(kind, &f, "<!-- factory:claim {\"a\":1} -->\n<!-- factory:event {\"a\":2} -->"),
	             0);
	cr_assert_str_eq(kind, "event");
	cr_assert_eq(cJSON_GetObjectItem(f, "a")->valueint, 2);
	cJSON_Delete(f);
}

Test(claim, only_our_own_notes_count)
{
	claim_history h;

	add_claim(10, SOMEONE, "forged", 1, 0); /* someone else's note with a marker */
	add_claim(11, ME, "ours", 5, 0);
	note(12, ME, "2026-11-27T10:00:00Z", "<!-- factory:claim {\"run\":\"sys\"} -->", 1); /* system note */
	note(13, ME, "2026-11-27T10:00:00Z", "just talk", 0);
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_eq(h.nclaims, 1);
	cr_assert_str_eq(h.claims[0].run, "ours");
	cr_assert_eq(h.claims[0].job, 5);
	cr_assert_eq(h.claims[0].pipeline, 100);
	cr_assert_eq(h.claims[0].attempt, 1);
	cr_assert_str_eq(h.claims[0].branch, "factory/12-fix");
	cr_assert_eq(h.claims[0].created, claim_parse_time("2026-11-27T10:00:00Z"));
	claim_history_release(&h);
	cr_assert_eq(claim_history_read(&h, notes, 0), 0);
	cr_assert_eq(h.nclaims, 0);
	claim_history_release(&h);
	cr_assert_eq(claim_history_read(&h, cJSON_GetArrayItem(notes, 0), ME), FACTORY_EINVALID);
}

Test(claim, the_earliest_live_claim_owns_the_issue)
{
	claim_history h;

	add_claim(21, ME, "b", 2, 5000);
	add_claim(20, ME, "a", 1, 5000);
	add_claim(22, ME, "c", 3, 5000);
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_str_eq(claim_owner(&h, 0)->run, "a");
	cr_assert_eq(claim_owner(&h, 0)->note_id, 20);
	claim_history_release(&h);

	/* a's round ended (a retry): b's leftover claim is the owner now, unless its lease is over. */
	add_event(30, 20, CLAIM_ACTION_RETRY, "budget", 1, "ran out of turns");
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_eq(claim_find(&h, 20)->ended_by, 30);
	cr_assert_str_eq(claim_owner(&h, 0)->run, "b");
	cr_assert_str_eq(claim_owner(&h, 4000)->run, "b");
	cr_assert_null(claim_owner(&h, 6000));
	claim_history_release(&h);
}

Test(claim, the_first_heal_ending_a_claim_wins)
{
	claim_history h;

	add_claim(40, ME, "a", 1, 0);
	add_event(42, 40, CLAIM_ACTION_UP_NEXT, "cancelled", 1, "second healer");
	add_event(41, 40, CLAIM_ACTION_RETRY, "failed", 1, "first healer");
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_eq(claim_first_end(&h, 40)->note_id, 41);
	cr_assert_eq(claim_find(&h, 40)->ended_by, 41);
	cr_assert_null(claim_first_end(&h, 99));
	cr_assert_null(claim_first_end(&h, 0));
	cr_assert_null(claim_owner(&h, 0));
	claim_history_release(&h);
}

Test(claim, attempts_count_retries_since_a_person_was_asked)
{
	claim_history h;
	fbuf b;

	add_event(50, 1, CLAIM_ACTION_RETRY, "budget", 1, "ran out of turns");
	add_event(51, 2, CLAIM_ACTION_RETRY, "tool_failures", 2, "run_command kept failing");
	add_event(52, 3, CLAIM_ACTION_NEEDS_INFO, "attempts", 3, "gave up");
	add_event(53, 4, CLAIM_ACTION_RETRY, "timed_out", 1, "job timed out");
	add_event(54, 5, CLAIM_ACTION_UP_NEXT, "cancelled", 2, "someone cancelled it");
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_eq(claim_attempts_made(&h), 1);
	fbuf_init(&b, 0);
	cr_assert_eq(claim_retry_context(&b, &h), 0);
	cr_assert_str_eq(fbuf_cstr(&b), "- attempt 1: timed_out: job timed out\n");
	fbuf_release(&b);
	cr_assert_eq(claim_last_event(&h, CLAIM_ACTION_RETRY, 0, 0)->note_id, 53);
	cr_assert_null(claim_last_event(&h, CLAIM_ACTION_HANDBACK, 0, 0));
	claim_history_release(&h);
}

Test(claim, event_fields_round_trip_and_words_are_checked)
{
	claim_history h;
	claim_event e;
	cJSON *j;
	fbuf b;

	memset(&e, 0, sizeof(e));
	snprintf(e.action, sizeof(e.action), CLAIM_ACTION_HANDBACK);
	e.mr = 5;
	e.pipeline = 77;
	snprintf(e.sha, sizeof(e.sha), "0123456789abcdef0123456789abcdef01234567");
	snprintf(e.branch, sizeof(e.branch), "factory/9-x");
	cr_assert_eq(claim_event_json(&j, &e), 0);
	cJSON_ReplaceItemInObject(j, "diagnosis", cJSON_CreateString("bad word!"));
	fbuf_init(&b, 0);
	cr_assert_eq(claim_marker_format(&b, "event", j), 0);
	note(60, ME, "2026-11-27T11:00:00+01:00", b.ptr, 0);
	cr_assert_eq(claim_history_read(&h, notes, ME), 0);
	cr_assert_eq(h.nevents, 1);
	cr_assert_eq(h.events[0].mr, 5);
	cr_assert_eq(h.events[0].pipeline, 77);
	cr_assert_str_eq(h.events[0].sha, "0123456789abcdef0123456789abcdef01234567");
	cr_assert_str_eq(h.events[0].branch, "factory/9-x");
	cr_assert_str_eq(h.events[0].diagnosis, "");
	cr_assert_eq(h.events[0].created, claim_parse_time("2026-11-27T10:00:00Z"));
	cr_assert_not_null(claim_last_event(&h, CLAIM_ACTION_HANDBACK, 5, 77));
	cr_assert_null(claim_last_event(&h, CLAIM_ACTION_HANDBACK, 5, 78));
	claim_history_release(&h);
	fbuf_release(&b);
	cJSON_Delete(j);
}

Test(claim, times)
{
	char buf[32];

	cr_assert_eq(claim_parse_time("1970-01-01T00:00:10Z"), 10);
	cr_assert_eq(claim_parse_time("1970-01-01T01:00:10.999+01:00"), 10);
	cr_assert_eq(claim_parse_time("1970-01-01T00:00:10-00:30"), 1810);
	cr_assert_eq(claim_parse_time("1970-01-01T00:00:10"), -1);
	cr_assert_eq(claim_parse_time("1970-01-01T00:00:10Zjunk"), -1);
	cr_assert_eq(claim_parse_time("yesterday"), -1);
	claim_format_time(buf, sizeof(buf), 1795773600);
	cr_assert_str_eq(buf, "2026-11-27T10:00:00Z");
}
