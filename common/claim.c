/* claim.c - claims and events in the Factory's notes, and who owns an issue. */
#define _GNU_SOURCE
#include "claim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

#define MARK_OPEN "<!-- factory:"
#define MARK_CLOSE " -->"

int claim_marker_format(fbuf *out, const char *kind, const cJSON *fields)
{
	char *json = NULL;
	const char *p;
	size_t start = out->len;
	int error = 0;

	if (!kind || (strcmp(kind, "claim") != 0 && strcmp(kind, "event") != 0))
		return ferror_set(FACTORY_EINVALID, "unknown marker kind %s", kind ? kind : "(null)");
	if (!cJSON_IsObject(fields))
		return ferror_set(FACTORY_EINVALID, "marker fields must be a JSON object");
	if (!(json = cJSON_PrintUnformatted(fields)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (strlen(json) > CLAIM_MARKER_MAX) {
		free(json);
		return ferror_set(FACTORY_EINVALID, "marker over %d bytes", CLAIM_MARKER_MAX);
	}
	error = fbuf_printf(out, MARK_OPEN "%s ", kind);
	/* '<', '>' and '&' only occur inside JSON strings: escape them so no
	 * text can close the comment or look like markup. */
	for (p = json; !error && *p; p++) {
		if (*p == '<')
			error = fbuf_puts(out, "\\u003c");
		else if (*p == '>')
			error = fbuf_puts(out, "\\u003e");
		else if (*p == '&')
			error = fbuf_puts(out, "\\u0026");
		else
			error = fbuf_putc(out, *p);
	}
	if (!error)
		error = fbuf_puts(out, MARK_CLOSE);
	free(json);
	if (error < 0 && out->ptr) {
		out->len = start;
		out->ptr[start] = '\0';
	}
	return error;
}

int claim_marker_parse(char kind_out[8], cJSON **fields, const char *body)
{
	const char *p, *last = NULL, *k, *json, *end;
	cJSON *o;
	size_t klen;

	*fields = NULL;
	kind_out[0] = '\0';
	if (!body)
		return FACTORY_ENOTFOUND;
	for (p = body; (p = strstr(p, MARK_OPEN)); p += sizeof(MARK_OPEN) - 1)
		last = p;
	if (!last)
		return FACTORY_ENOTFOUND;
	k = last + sizeof(MARK_OPEN) - 1;
	for (klen = 0; k[klen] && islower((unsigned char)k[klen]); klen++)
		;
	if (k[klen] != ' ' || !((klen == 5 && !strncmp(k, "claim", 5)) || (klen == 5 && !strncmp(k, "event", 5))))
		return FACTORY_ENOTFOUND;
	json = k + klen + 1;
	if (!(end = strstr(json, MARK_CLOSE)) || (size_t)(end - json) > CLAIM_MARKER_MAX)
		return FACTORY_ENOTFOUND;
	o = cJSON_ParseWithLength(json, (size_t)(end - json));
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return FACTORY_ENOTFOUND;
	}
	memcpy(kind_out, k, klen);
	kind_out[klen] = '\0';
	*fields = o;
	return 0;
}

static long num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	double d;

	if (!cJSON_IsNumber(v))
		return 0;
	d = v->valuedouble;
	if (!(d > -9.0e15 && d < 9.0e15))
		return 0;
	return (long)d;
}

static void str(char *out, size_t len, const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* Word-ish values (actions, diagnoses, runs, shas): [A-Za-z0-9_.-] only. */
static void word(char *out, size_t len, const cJSON *o, const char *key)
{
	size_t i;

	str(out, len, o, key);
	for (i = 0; out[i]; i++)
		if (!isalnum((unsigned char)out[i]) && !strchr("_.-", out[i])) {
			out[0] = '\0';
			return;
		}
}

static int add_num(cJSON *o, const char *k, double v)
{
	return cJSON_AddNumberToObject(o, k, v) ? 0 : -1;
}

static int add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v ? v : "") ? 0 : -1;
}

int claim_entry_json(cJSON **out, const claim_entry *c)
{
	cJSON *o = cJSON_CreateObject();

	*out = NULL;
	if (!o || add_num(o, "v", 1) || add_str(o, "run", c->run) || add_num(o, "pipeline", (double)c->pipeline) ||
	    add_num(o, "job", (double)c->job) || add_str(o, "job_url", c->job_url) || add_str(o, "branch", c->branch) ||
	    add_num(o, "started_at", (double)c->started_at) || add_num(o, "lease_until", (double)c->lease_until) ||
	    add_num(o, "attempt", c->attempt)) {
		cJSON_Delete(o);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	*out = o;
	return 0;
}

int claim_event_json(cJSON **out, const claim_event *e)
{
	cJSON *o = cJSON_CreateObject();

	*out = NULL;
	if (!o || add_num(o, "v", 1) || add_num(o, "ends", (double)e->ends) || add_str(o, "action", e->action) ||
	    add_str(o, "diagnosis", e->diagnosis) || add_num(o, "attempt", e->attempt) ||
	    add_num(o, "mr", (double)e->mr) || add_num(o, "pipeline", (double)e->pipeline) ||
	    add_str(o, "sha", e->sha) || add_str(o, "branch", e->branch) || add_str(o, "why", e->why)) {
		cJSON_Delete(o);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	*out = o;
	return 0;
}

void claim_history_release(claim_history *h)
{
	if (!h)
		return;
	free(h->claims);
	free(h->events);
	memset(h, 0, sizeof(*h));
}

static int cmp_claims(const void *a, const void *b)
{
	long x = ((const claim_entry *)a)->note_id, y = ((const claim_entry *)b)->note_id;
	return (x > y) - (x < y);
}

static int cmp_events(const void *a, const void *b)
{
	long x = ((const claim_event *)a)->note_id, y = ((const claim_event *)b)->note_id;
	return (x > y) - (x < y);
}

static int grow(void **v, size_t *alloc, size_t n, size_t size)
{
	void *nv;
	size_t na;

	if (n < *alloc)
		return 0;
	na = *alloc ? *alloc * 2 : 8;
	if (!(nv = realloc(*v, na * size)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	*v = nv;
	*alloc = na;
	return 0;
}

int claim_history_read(claim_history *out, const cJSON *notes, long me)
{
	const cJSON *n;
	size_t ac = 0, ae = 0, i, k;
	int error = 0;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsArray(notes))
		return ferror_set(FACTORY_EINVALID, "notes: expected a JSON array");
	cJSON_ArrayForEach(n, notes)
	{
		const cJSON *author = cJSON_GetObjectItemCaseSensitive(n, "author");
		const cJSON *body = cJSON_GetObjectItemCaseSensitive(n, "body");
		const cJSON *created = cJSON_GetObjectItemCaseSensitive(n, "created_at");
		cJSON *f = NULL;
		char kind[8];
		long id = num(n, "id");

		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "system")) || num(author, "id") != me || me <= 0 ||
		    id <= 0 || !cJSON_IsString(body))
			continue;
		if (claim_marker_parse(kind, &f, body->valuestring) < 0)
			continue;
		if (!strcmp(kind, "claim")) {
			claim_entry *c;
			if ((error = grow((void **)&out->claims, &ac, out->nclaims, sizeof(*c))) < 0) {
				cJSON_Delete(f);
				break;
			}
			c = &out->claims[out->nclaims++];
			memset(c, 0, sizeof(*c));
			c->note_id = id;
			c->created = cJSON_IsString(created) ? claim_parse_time(created->valuestring) : -1;
			word(c->run, sizeof(c->run), f, "run");
			c->pipeline = num(f, "pipeline");
			c->job = num(f, "job");
			str(c->job_url, sizeof(c->job_url), f, "job_url");
			str(c->branch, sizeof(c->branch), f, "branch");
			c->started_at = num(f, "started_at");
			c->lease_until = num(f, "lease_until");
			c->attempt = (int)num(f, "attempt");
		} else {
			claim_event *e;
			if ((error = grow((void **)&out->events, &ae, out->nevents, sizeof(*e))) < 0) {
				cJSON_Delete(f);
				break;
			}
			e = &out->events[out->nevents++];
			memset(e, 0, sizeof(*e));
			e->note_id = id;
			e->created = cJSON_IsString(created) ? claim_parse_time(created->valuestring) : -1;
			e->ends = num(f, "ends");
			word(e->action, sizeof(e->action), f, "action");
			word(e->diagnosis, sizeof(e->diagnosis), f, "diagnosis");
			e->attempt = (int)num(f, "attempt");
			e->mr = num(f, "mr");
			e->pipeline = num(f, "pipeline");
			word(e->sha, sizeof(e->sha), f, "sha");
			str(e->branch, sizeof(e->branch), f, "branch");
			str(e->why, sizeof(e->why), f, "why");
		}
		cJSON_Delete(f);
	}
	if (error < 0) {
		claim_history_release(out);
		return error;
	}
	if (out->nclaims)
		qsort(out->claims, out->nclaims, sizeof(*out->claims), cmp_claims);
	if (out->nevents)
		qsort(out->events, out->nevents, sizeof(*out->events), cmp_events);
	/* A claim is ended by the first event that names it. */
	for (i = 0; i < out->nclaims; i++)
		for (k = 0; k < out->nevents && !out->claims[i].ended_by; k++)
			if (out->events[k].ends == out->claims[i].note_id)
				out->claims[i].ended_by = out->events[k].note_id;
	return 0;
}

const claim_entry *claim_owner(const claim_history *h, long now)
{
	size_t i;

	for (i = 0; i < h->nclaims; i++) {
		const claim_entry *c = &h->claims[i];
		if (c->ended_by)
			continue;
		if (now > 0 && c->lease_until > 0 && c->lease_until < now)
			continue;
		return c;
	}
	return NULL;
}

const claim_entry *claim_find(const claim_history *h, long note_id)
{
	size_t i;

	for (i = 0; i < h->nclaims; i++)
		if (h->claims[i].note_id == note_id)
			return &h->claims[i];
	return NULL;
}

const claim_event *claim_first_end(const claim_history *h, long claim_note_id)
{
	size_t i;

	for (i = 0; i < h->nevents; i++)
		if (claim_note_id && h->events[i].ends == claim_note_id)
			return &h->events[i];
	return NULL;
}

const claim_event *claim_last_event(const claim_history *h, const char *action, long mr, long pipeline)
{
	size_t i;

	for (i = h->nevents; i-- > 0;) {
		const claim_event *e = &h->events[i];
		if (strcmp(e->action, action) != 0)
			continue;
		if (mr && e->mr != mr)
			continue;
		if (pipeline && e->pipeline != pipeline)
			continue;
		return e;
	}
	return NULL;
}

static int resets_attempts(const claim_event *e)
{
	return !strcmp(e->action, CLAIM_ACTION_NEEDS_INFO) || !strcmp(e->action, CLAIM_ACTION_NO_CHANGE);
}

/* Index of the first event after the last reset. */
static size_t count_from(const claim_history *h)
{
	size_t i, from = 0;

	for (i = 0; i < h->nevents; i++)
		if (resets_attempts(&h->events[i]))
			from = i + 1;
	return from;
}

int claim_attempts_made(const claim_history *h)
{
	size_t i;
	int n = 0;

	for (i = count_from(h); i < h->nevents; i++)
		if (!strcmp(h->events[i].action, CLAIM_ACTION_RETRY))
			n++;
	return n;
}

int claim_retry_context(fbuf *out, const claim_history *h)
{
	size_t i;
	int n = 0, error = 0;

	for (i = count_from(h); i < h->nevents && !error; i++) {
		const claim_event *e = &h->events[i];
		if (strcmp(e->action, CLAIM_ACTION_RETRY) != 0)
			continue;
		n++;
		error = fbuf_printf(out, "- attempt %d: %s: %s\n", e->attempt > 0 ? e->attempt : n,
		                    e->diagnosis[0] ? e->diagnosis : "unknown", e->why[0] ? e->why : "(no detail)");
	}
	return error;
}

long claim_parse_time(const char *s)
{
	struct tm tm;
	const char *p;
	long t, off = 0;
	int sign;

	if (!s)
		return -1;
	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -1;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		sign = *p == '-' ? -1 : 1;
		if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
		    !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]))
			return -1;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		mm = (p[4] - '0') * 10 + (p[5] - '0');
		if (hh > 23 || mm > 59)
			return -1;
		off = sign * (hh * 3600L + mm * 60L);
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	t = (long)timegm(&tm);
	return t - off;
}

void claim_format_time(char *out, size_t len, long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, len, "%ld", t);
}
