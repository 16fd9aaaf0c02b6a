/*
 * Fuzz target for `factory-triage classify`'s input: any bytes as an issue's
 * JSON. Whatever parses is decided (fresh and with people's labels), turned
 * into the decision JSON and the note; the note must carry exactly one
 * marker, ours, whatever the issue holds. The marker parser also gets the
 * raw bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "triage.h"

static triage_policy *policy;

static void check_note(const triage_decision *d, const cJSON *issue)
{
	triage_marker m = {0}, got;
	fbuf note;
	const char *p;
	int n = 0;

	m.content = triage_content_hash(issue);
	strcpy(m.labels, "type::bug,priority::2");
	fbuf_init(&note, 1 << 20);
	if (triage_note(&note, d, &m, NULL) < 0)
		abort();
	for (p = note.ptr; (p = strstr(p, "<!--")); p++)
		n++;
	if (n != 1 || triage_marker_parse(&got, note.ptr) != 0 || got.content != m.content)
		abort(); /* an issue forged or broke the marker */
	fbuf_release(&note);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	triage_decision d;
	triage_marker mk;
	cJSON *issue, *j = NULL;
	char *text;
	unsigned flags;

	if (!policy && triage_policy_new(&policy, NULL, "fuzz") < 0)
		abort();
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	triage_marker_parse(&mk, text);
	issue = cJSON_ParseWithLength((const char *)data, size);
	for (flags = 0; flags <= TRIAGE_FRESH; flags++) {
		int rc = triage_decide(&d, policy, issue, flags);
		if (rc == 0) {
			if (d.priority < 1 || d.priority > 5 || d.type >= TRIAGE_NTYPES || (d.type == TRIAGE_SECURITY && !d.confidential))
				abort();
			if (triage_decision_json(&j, &d) < 0)
				abort();
			cJSON_Delete(j);
			j = NULL;
			check_note(&d, issue);
		} else if (cJSON_IsObject(issue)) {
			abort(); /* any object must decide */
		}
		triage_decision_release(&d);
	}
	cJSON_Delete(issue);
	free(text);
	return 0;
}
