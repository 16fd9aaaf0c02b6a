/*
 * libFuzzer target for the CI log classifier (common/cilog): job logs are
 * outside input of any size and bytes. The input is fed in pieces whose
 * sizes come from its first bytes, with small caps so that cut lines, block
 * boundaries, the carry and the region cap are all reached; the result must
 * keep its invariants. Inputs starting with '-' are also tried as a rules
 * file (a project's own rules are data read from its repository).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cilog.h"

static cilog_rules *defaults;

static int valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
		size_t i;
		if (!n)
			return 0;
		for (i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return 0;
		p += n;
	}
	return 1;
}

static void run(const cilog_rules *rs, const uint8_t *data, size_t size)
{
	cilog_options o;
	cilog_result r;
	cilog *c = NULL;
	cJSON *j = NULL;
	size_t off = 0, step;

	cilog_options_init(&o);
	o.max_line = 64 + (size ? data[0] % 200 : 0);
	o.block_size = 4096;
	o.max_candidates = 1 + (size > 1 ? data[1] % 4 : 0);
	o.max_excerpt = 256;
	if (cilog_new(&c, rs, &o) < 0)
		return;
	step = 1 + (size > 2 ? data[2] : 7);
	while (off < size) {
		size_t n = size - off < step ? size - off : step;
		if (cilog_feed(c, (const char *)data + off, n) < 0)
			__builtin_trap();
		off += n;
		step = step * 3 % 1021 + 1;
	}
	cilog_result_init(&r);
	if (cilog_finish(&r, c) == 0) {
		if (r.first_line > r.last_line || r.last_line > r.lines || r.last_line - r.first_line + 1 > 40)
			if (r.first_line || r.last_line)
				__builtin_trap();
		if ((unsigned long long)r.bytes != size || !r.excerpt || !valid_utf8(r.excerpt))
			__builtin_trap();
		if (cilog_result_json(&j, &r) == 0)
			cJSON_Delete(j);
	}
	cilog_result_release(&r);
	cilog_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cilog_rules *own = NULL;

	if (!defaults && cilog_rules_new(&defaults, NULL, 1, "built-in") < 0)
		return 0;
	run(defaults, data, size);
	if (size && data[0] == '-' && size < 65536 &&
	    cilog_rules_from_yaml(&own, (const char *)data, size, 0, "fuzz") == 0) {
		run(own, data, size);
		cilog_rules_free(own);
	}
	return 0;
}
