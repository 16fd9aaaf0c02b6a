/* notes.c - the Factory's notes and markers, labels, and its trace lines. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http.h"
#include "implement.h"
#include "log.h"
#include "untrusted.h"

#define NOTES_MAX 5000
#define NOTE_MAX ((size_t)256 << 10)
#define TRACE_KEEP ((size_t)256 << 10)
#define LINE_MAX_JSON 8192

long impl_num(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

	if (!v || !cJSON_IsNumber(v) || !(v->valuedouble > -9.0e15 && v->valuedouble < 9.0e15))
		return 0;
	return (long)v->valuedouble;
}

const char *impl_str(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

int impl_has_label(const cJSON *issue, const char *name)
{
	const cJSON *l;

	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels"))
	{
		const char *n = cJSON_IsString(l) ? l->valuestring : impl_str(l, "name");
		if (n && !strcmp(n, name))
			return 1;
	}
	return 0;
}

int impl_history(claim_history *h, cJSON **notes_out, impl_run *r, long iid)
{
	cJSON *notes = NULL;
	char path[128];
	int error;

	memset(h, 0, sizeof(*h));
	if (notes_out)
		*notes_out = NULL;
	snprintf(path, sizeof(path), "projects/:id/issues/%ld/notes", iid);
	if ((error = gitlab_list_all(&notes, r->gl, path, "order_by=created_at&sort=asc", NOTES_MAX)) < 0)
		return error;
	if ((error = claim_history_read(h, notes, r->me)) < 0) {
		cJSON_Delete(notes);
		return error;
	}
	if (notes_out)
		*notes_out = notes;
	else
		cJSON_Delete(notes);
	return 0;
}

int impl_post_note(long *note_id, impl_run *r, long iid, const char *text, const char *kind, const cJSON *fields)
{
	cJSON *out = NULL;
	fbuf body;
	int error;

	if (note_id)
		*note_id = 0;
	fbuf_init(&body, NOTE_MAX + CLAIM_MARKER_MAX + 64);
	if ((error = fbuf_puts(&body, text)) < 0 || (error = fbuf_puts(&body, "\n\n")) < 0 ||
	    (kind && (error = claim_marker_format(&body, kind, fields)) < 0))
		goto cleanup;
	if ((error = gitlab_note_create(&out, r->gl, "issues", iid, body.ptr, 0)) < 0)
		goto cleanup;
	if (note_id)
		*note_id = impl_num(out, "id");
	if (out && note_id && *note_id <= 0) {
		error = ferror_set(FACTORY_EINVALID, "POST projects/:id/issues/%ld/notes: no id in the answer", iid);
		goto cleanup;
	}
	report_action(r->rep, "note", "issue", "#%ld %s", iid, kind ? kind : "note");
cleanup:
	cJSON_Delete(out);
	fbuf_release(&body);
	return error;
}

int impl_post_event(long *note_id, impl_run *r, long iid, const claim_event *e, const char *text)
{
	cJSON *fields = NULL;
	int error;

	if ((error = claim_event_json(&fields, e)) < 0)
		return error;
	error = impl_post_note(note_id, r, iid, text, "event", fields);
	cJSON_Delete(fields);
	return error;
}

int impl_delete_note(impl_run *r, long iid, long note_id)
{
	cJSON *out = NULL;
	int error;

	if (note_id <= 0)
		return 0;
	error = gitlab_request(&out, r->gl, "DELETE", NULL, "projects/:id/issues/%ld/notes/%ld", iid, note_id);
	cJSON_Delete(out);
	return error;
}

int impl_move(impl_run *r, long iid, const char *add, const char *remove)
{
	cJSON *out = NULL;
	int error;

	error = gitlab_issue_move_labels(&out, r->gl, iid, add, remove);
	cJSON_Delete(out);
	if (error == 0)
		report_action(r->rep, "labels", "issue", "#%ld +%s -%s", iid, add ? add : "", remove ? remove : "");
	return error;
}

int impl_clean(fbuf *out, const char *text, size_t max)
{
	fbuf tmp;
	int error;

	if (!text)
		return 0;
	fbuf_init(&tmp, max);
	error = untrusted_clean(&tmp, text, strlen(text));
	if (error == FACTORY_ETOOBIG)
		error = 0; /* what fitted, then a mark */
	if (!error)
		error = fbuf_put(out, tmp.ptr ? tmp.ptr : "", tmp.len);
	if (!error && tmp.len >= max)
		error = fbuf_puts(out, " [...]");
	fbuf_release(&tmp);
	return error;
}

void impl_line(char *out, size_t len, const char *text)
{
	fbuf b;

	out[0] = '\0';
	if (!text || !len)
		return;
	fbuf_init(&b, len * 4 + 16);
	if (untrusted_title(&b, text, strlen(text), len - 1) == 0 && b.ptr)
		snprintf(out, len, "%s", b.ptr);
	fbuf_release(&b);
}

static void trace_line(impl_run *r, const char *what, long iid, long claim_id, const char *key, const char *value,
                       const char *why)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (!o)
		return;
	cJSON_AddNumberToObject(o, "issue", (double)iid);
	cJSON_AddNumberToObject(o, "claim", (double)claim_id);
	cJSON_AddStringToObject(o, "run", r->run_id);
	cJSON_AddStringToObject(o, key, value);
	if (why)
		cJSON_AddStringToObject(o, "why", why);
	if ((s = cJSON_PrintUnformatted(o))) {
		char *masked = log_mask_dup(s);
		printf("factory:%s %s\n", what, masked ? masked : "{}");
		fflush(stdout);
		free(masked);
		free(s);
	}
	cJSON_Delete(o);
}

void impl_stage(impl_run *r, long iid, long claim_id, const char *stage)
{
	trace_line(r, "stage", iid, claim_id, "stage", stage, NULL);
}

void impl_outcome(impl_run *r, long iid, long claim_id, const char *outcome, const char *why)
{
	char line[512];

	impl_line(line, sizeof(line), why ? why : "");
	trace_line(r, "outcome", iid, claim_id, "outcome", outcome, line);
}

/* The last TRACE_KEEP bytes of a trace. */
typedef struct {
	fbuf buf;
} tail_sink;

static int tail_cb(void *ctx, const char *data, size_t len)
{
	tail_sink *t = ctx;
	size_t keep;

	if (len >= TRACE_KEEP) {
		fbuf_reset(&t->buf);
		return fbuf_put(&t->buf, data + len - TRACE_KEEP, TRACE_KEEP) < 0 ? -1 : 0;
	}
	if (t->buf.len + len > TRACE_KEEP) {
		keep = TRACE_KEEP - len;
		memmove(t->buf.ptr, t->buf.ptr + t->buf.len - keep, keep);
		t->buf.len = keep;
		t->buf.ptr[keep] = '\0';
	}
	return fbuf_put(&t->buf, data, len) < 0 ? -1 : 0;
}

/* The JSON object after `prefix` on one line, if it is for this issue and claim. */
static cJSON *trace_object(const char *line, size_t len, const char *prefix, long iid, long claim_id)
{
	const char *p = memmem(line, len, prefix, strlen(prefix)), *end;
	cJSON *o;

	if (!p)
		return NULL;
	p += strlen(prefix);
	end = line + len;
	while (end > p && end[-1] != '}')
		end--;
	if (end <= p || (size_t)(end - p) > LINE_MAX_JSON)
		return NULL;
	o = cJSON_ParseWithLength(p, (size_t)(end - p));
	if (!cJSON_IsObject(o) || impl_num(o, "issue") != iid || (claim_id && impl_num(o, "claim") != claim_id)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

int impl_trace_find(char *stage, size_t stage_len, char *outcome, size_t outcome_len, char *why, size_t why_len,
                    impl_run *r, long job_id, long iid, long claim_id)
{
	tail_sink t;
	const char *p, *nl, *end;
	int error;

	stage[0] = outcome[0] = why[0] = '\0';
	fbuf_init(&t.buf, TRACE_KEEP + 1);
	if ((error = gitlab_job_trace(r->gl, job_id, tail_cb, &t)) < 0)
		goto cleanup;
	p = t.buf.ptr ? t.buf.ptr : "";
	end = p + t.buf.len;
	for (; p < end; p = nl + 1) {
		cJSON *o;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		if ((o = trace_object(p, (size_t)(nl - p), "factory:stage ", iid, claim_id))) {
			const char *s = impl_str(o, "stage");
			if (s)
				snprintf(stage, stage_len, "%s", s);
			cJSON_Delete(o);
		} else if ((o = trace_object(p, (size_t)(nl - p), "factory:outcome ", iid, claim_id))) {
			const char *s = impl_str(o, "outcome"), *w = impl_str(o, "why");
			if (s)
				snprintf(outcome, outcome_len, "%s", s);
			impl_line(why, why_len, w ? w : "");
			cJSON_Delete(o);
		}
		if (nl == end)
			break;
	}
	error = 0;
cleanup:
	fbuf_release(&t.buf);
	return error;
}
