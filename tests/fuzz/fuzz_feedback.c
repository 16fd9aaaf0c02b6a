/*
 * Fuzz target for the feedback body parser (common/feedback.c): JSON and
 * form-encoded bodies from the internet. The first byte picks the
 * Content-Type; the rest is the body. Whatever parses must survive the trip
 * through the spool form and render into an issue whose text carries no
 * forged marker.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "feedback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = {"application/json", "application/x-www-form-urlencoded",
					    "application/json; charset=utf-8", NULL, "text/plain"};
	feedback f, back;
	feedback_problem pr;
	fbuf json, out;
	cJSON *issue = NULL;
	const char *ct;

	if (size < 1)
		return 0;
	ct = types[data[0] % 5];
	fbuf_init(&json, 1 << 20);
	fbuf_init(&out, 1 << 20);
	feedback_init(&back);
	if (feedback_parse(&f, &pr, ct, (const char *)data + 1, size - 1) == 0) {
		if (feedback_new_id(&f) < 0 || feedback_to_json(&json, &f) < 0)
			abort();
		if (feedback_from_json(&back, json.ptr, json.len) < 0)
			abort(); /* what we accept we must be able to deliver */
		if (strcmp(back.title, f.title) || strcmp(back.description, f.description))
			abort();
		if (feedback_issue_fields(&issue, &back) < 0)
			abort();
		{
			const cJSON *d = cJSON_GetObjectItemCaseSensitive(issue, "description");
			const char *p = d->valuestring, *first = strstr(p, "<!-- factory-intake");
			/* Exactly one marker, ours, at the end. */
			if (!first || strstr(first + 1, "<!-- factory-intake") || !feedback_has_issue_marker(p, back.id))
				abort();
		}
		if (back.email && feedback_reporter_note(&out, &back) < 0)
			abort();
	} else {
		if (pr.status != 400 && pr.status != 415 && pr.status != 422)
			abort();
		if (feedback_problem_json(&out, &pr) < 0)
			abort();
	}
	cJSON_Delete(issue);
	feedback_release(&f);
	feedback_release(&back);
	fbuf_release(&json);
	fbuf_release(&out);
	return 0;
}
