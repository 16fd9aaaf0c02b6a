/*
 * libFuzzer target for what factory-release reads from outside and writes
 * back: release descriptions (the state marker: parse, put, strip), commit
 * messages and merge request texts (Changelog trailers, issue references,
 * "Release note:" lines), titles made into plain lines, and email bodies.
 * Checks: a state that parses survives format and parse unchanged; put
 * leaves exactly one marker that reads back the same; stripped text holds no
 * marker line; references are positive and within the cap; a plain line is
 * one line with no marker opening, within the cap; an email body has CRLF
 * lines of at most 76 characters, none starting with '.'.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "notes.h"
#include "smtp.h"

static void check_state_round_trip(const notes_state *s)
{
	notes_state back;
	fbuf b;
	size_t i;

	fbuf_init(&b, 0);
	if (notes_state_format(&b, s) < 0) {
		fbuf_release(&b);
		return;
	}
	if (notes_state_parse(&back, fbuf_cstr(&b)) != 0)
		__builtin_trap();
	if (strcmp(back.version, s->version) || strcmp(back.until, s->until) || back.done != s->done ||
	    back.webhook != s->webhook || back.nitems != s->nitems)
		__builtin_trap();
	for (i = 0; i < s->nitems; i++)
		if (back.items[i].is_commit != s->items[i].is_commit || back.items[i].iid != s->items[i].iid ||
		    back.items[i].customer != s->items[i].customer || strcmp(back.items[i].sha, s->items[i].sha))
			__builtin_trap();
	notes_state_release(&back);
	fbuf_release(&b);
}

static void check_markers(const char *text)
{
	notes_state s, again;
	fbuf put, strip;
	const char *p;

	fbuf_init(&put, 0);
	fbuf_init(&strip, 0);
	if (notes_state_parse(&s, text) == 0) {
		check_state_round_trip(&s);
		s.done = !s.done;
		if (notes_state_put(&put, text, &s) == 0) {
			if (notes_state_parse(&again, fbuf_cstr(&put)) != 0 || again.done != s.done)
				__builtin_trap();
			notes_state_release(&again);
		}
		notes_state_release(&s);
	}
	if (notes_strip_markers(&strip, text) == 0) {
		for (p = fbuf_cstr(&strip); p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
			if (!strncmp(p, "<!-- factory-release ", 21))
				__builtin_trap();
	}
	notes_has_marker(text, "announce", "1.2.0", NULL);
	notes_has_marker(text, "mailed", "1.2.0", "submission=fi-000000000000000000000001");
	fbuf_release(&put);
	fbuf_release(&strip);
}

static void check_refs(const char *text)
{
	long refs[8];
	size_t n, i;
	int closing;

	for (closing = 0; closing < 2; closing++) {
		n = notes_issue_refs(refs, 8, text, "g/p", closing);
		if (n > 8)
			__builtin_trap();
		for (i = 0; i < n; i++)
			if (refs[i] <= 0)
				__builtin_trap();
	}
}

static void check_lines(const char *text)
{
	notes_item it;
	fbuf b;
	char cat[16];
	cJSON *c;

	fbuf_init(&b, 0);
	if (notes_release_note(&b, text) == 0 && (!b.len || memchr(b.ptr, '\n', b.len)))
		__builtin_trap();
	fbuf_reset(&b);
	notes_item_init(&it);
	if (notes_item_set(&it.title, text) == 0 && notes_plain_line(&b, &it) == 0) {
		if (memchr(b.ptr, '\n', b.len) || strstr(fbuf_cstr(&b), "<!--") || b.len > NOTES_TITLE_MAX)
			__builtin_trap();
	}
	notes_item_release(&it);
	if ((c = cJSON_CreateObject())) {
		cJSON_AddStringToObject(c, "message", text);
		if (notes_commit_category(cat, sizeof(cat), c) == 0)
			notes_category_group(cat, NULL);
		cJSON_Delete(c);
	}
	if ((c = cJSON_Parse(text))) {
		notes_commit_category(cat, sizeof(cat), c);
		cJSON_Delete(c);
	}
	fbuf_release(&b);
}

static void check_email(const char *text)
{
	fbuf b;
	const char *p, *body;

	fbuf_init(&b, 0);
	if (smtp_format(&b, "Bot <bot@example.com>", "a@example.org", "s", text, 0, NULL) == 0) {
		body = strstr(fbuf_cstr(&b), "\r\n\r\n");
		if (!body)
			__builtin_trap();
		for (p = body + 4; *p;) {
			const char *nl = strstr(p, "\r\n");
			if (!nl || nl - p > 76 || *p == '.' || memchr(p, '\n', (size_t)(nl - p)))
				__builtin_trap();
			p = nl + 2;
		}
	}
	fbuf_reset(&b);
	smtp_format(&b, "bot@example.com", "a@example.org", text, "x", 0, NULL);
	fbuf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	if (size > 65536)
		return 0;
	if (!(text = malloc(size + 1)))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	check_markers(text);
	check_refs(text);
	check_lines(text);
	check_email(text);
	free(text);
	return 0;
}
