/*
 * Fuzz target for common/untrusted.c. Every entry point runs on the input;
 * what comes out of neutralise, clean and title must be safe for GitLab
 * whatever came in (no quick action at a line start, no live mention by
 * GitLab's (?<!\w)@name rule outside a URL, no HTML comment, clean UTF-8),
 * neutralise must be idempotent, and a title must fit its limit. Any
 * violation aborts, which libFuzzer reports as a crash.
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "untrusted.h"

static int alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Valid UTF-8, no controls but \t and \n, no C1 controls. */
static int clean_utf8(const unsigned char *p, size_t n)
{
	size_t i = 0, k, need;
	uint32_t cp;

	while (i < n) {
		unsigned char c = p[i];
		if (c < 0x80) {
			if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
				return 0;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 1, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3, cp = c & 0x07;
		else
			return 0;
		for (k = 1; k <= need; k++) {
			if (i + k >= n || (p[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029)
			return 0;
		i += need + 1;
	}
	return 1;
}

/* Whether byte i lies inside an http(s):// or ftp:// run (where the module
 * may leave an '@' alone); a loose superset of what it accepts. */
static int in_url(const char *s, size_t i)
{
	size_t j = i;

	while (j > 0 && s[j - 1] != ' ' && s[j - 1] != '\n' && s[j - 1] != '\t')
		j--;
	return memmem(s + j, i - j, "://", 3) != NULL;
}

static void check_safe(const fbuf *b)
{
	const char *s = fbuf_cstr(b);
	size_t n = b->len, i;
	int line_start = 1;

	if (!clean_utf8((const unsigned char *)s, n))
		abort();
	if (memmem(s, n, "<!--", 4) || memmem(s, n, "-->", 3))
		abort();
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n') {
			line_start = 1;
			continue;
		}
		if (c == ' ' || c == '\t')
			continue;
		if (line_start && c == '/')
			abort();
		line_start = 0;
		if (c == '@' && (i == 0 || !alnum((unsigned char)s[i - 1])) && i + 1 < n &&
		    (alnum((unsigned char)s[i + 1]) || s[i + 1] == '_') && !in_url(s, i))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	fbuf a, b, small;
	size_t max;

	fbuf_init(&a, 1 << 24);
	fbuf_init(&b, 1 << 24);

	if (untrusted_neutralise(&a, text, size) < 0)
		abort();
	check_safe(&a);
	if (untrusted_neutralise(&b, a.ptr ? a.ptr : "", a.len) < 0)
		abort();
	if (a.len != b.len || (a.len && memcmp(a.ptr, b.ptr, a.len)))
		abort(); /* not idempotent */

	fbuf_reset(&a);
	if (untrusted_redact(&a, text, size) < 0)
		abort();

	fbuf_reset(&a);
	if (untrusted_clean(&a, text, size) < 0)
		abort();
	check_safe(&a);

	/* The first byte picks a title limit. */
	max = size ? data[0] % 64 : 0;
	fbuf_reset(&a);
	if (untrusted_title(&a, text, size, max) < 0)
		abort();
	check_safe(&a);
	if ((max && a.len > max) || memchr(fbuf_cstr(&a), '\n', a.len) || memchr(fbuf_cstr(&a), '\t', a.len))
		abort();

	/* A tiny cap: what fitted is still clean UTF-8. */
	fbuf_init(&small, size ? data[size - 1] % 16 + 1 : 1);
	untrusted_clean(&small, text, size);
	if (!clean_utf8((const unsigned char *)fbuf_cstr(&small), small.len) || small.len > small.max)
		abort();

	fbuf_release(&small);
	fbuf_release(&a);
	fbuf_release(&b);
	return 0;
}
