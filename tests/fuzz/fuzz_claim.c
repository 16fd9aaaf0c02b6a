/*
 * Fuzz target for common/claim.c: any bytes as a note body (the marker
 * parser) and as GitLab's notes JSON (the history reader and the owner
 * rules). Whatever parses is formatted again: the new marker must parse back
 * to the same kind and be the only comment in its text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "claim.h"

static void check_marker(const char *kind, const cJSON *fields)
{
	cJSON *again = NULL;
	char k2[8];
	fbuf b;

	fbuf_init(&b, 1 << 20);
	if (claim_marker_format(&b, kind, fields) == 0) {
		if (claim_marker_parse(k2, &again, b.ptr) < 0 || strcmp(k2, kind))
			abort();
		if (strstr(b.ptr + 1, "<!--") || strstr(b.ptr, "-->") != b.ptr + b.len - 3)
			abort();
		cJSON_Delete(again);
	}
	fbuf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	claim_history h;
	cJSON *fields = NULL, *notes;
	char kind[8], *text;
	size_t i;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (claim_marker_parse(kind, &fields, text) == 0) {
		check_marker(kind, fields);
		cJSON_Delete(fields);
	}
	claim_parse_time(text);
	notes = cJSON_ParseWithLength((const char *)data, size);
	if (claim_history_read(&h, notes, 2) == 0) {
		const claim_entry *o = claim_owner(&h, 0);
		fbuf ctx;
		if (o && o->ended_by)
			abort();
		for (i = 0; i < h.nclaims; i++) {
			cJSON *j = NULL;
			if (claim_entry_json(&j, &h.claims[i]) == 0)
				check_marker("claim", j);
			cJSON_Delete(j);
			claim_first_end(&h, h.claims[i].note_id);
		}
		for (i = 0; i < h.nevents; i++) {
			cJSON *j = NULL;
			if (claim_event_json(&j, &h.events[i]) == 0)
				check_marker("event", j);
			cJSON_Delete(j);
		}
		fbuf_init(&ctx, 1 << 16);
		claim_retry_context(&ctx, &h);
		fbuf_release(&ctx);
		if (claim_attempts_made(&h) < 0)
			abort();
		claim_history_release(&h);
	}
	cJSON_Delete(notes);
	free(text);
	return 0;
}
