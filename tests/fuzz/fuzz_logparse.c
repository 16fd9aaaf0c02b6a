/*
 * libFuzzer target for the log reader: logparse (every format, multi-line
 * joining, chunk boundaries) and logmine (masking and mining of what it
 * reads), the code that takes production log bytes from outside.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "logmine.h"
#include "logparse.h"

static logmine *lm;

static int on_record(void *ctx, const log_record *r)
{
	logmine_match m;
	int64_t ms;

	(void)ctx;
	if (logmine_add(&m, lm, r->message, r->message_len) == 0 && m.tmpl_len != strlen(m.tmpl))
		__builtin_trap();
	if (r->detail_len && memchr(r->detail, '\0', r->detail_len) && r->detail_len > 1 << 20)
		__builtin_trap();
	logparse_time(&ms, r->raw, r->raw_len < 40 ? r->raw_len : 40);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const logparse_format formats[] = {LOGPARSE_AUTO, LOGPARSE_JSON, LOGPARSE_LOGFMT, LOGPARSE_PATTERN,
	                                          LOGPARSE_PLAIN};
	logparse_options o;
	logparse *p;
	size_t split, f;

	if (!lm && logmine_new(&lm, NULL) < 0)
		return 0;
	for (f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
		logparse_options_init(&o);
		o.format = formats[f];
		o.max_line = 256;
		o.max_detail = 512;
		o.pattern = "^(?<time>\\S+) (?<level>[A-Z]+) (?:(?<user>u\\d+) )?(?<message>.*)$";
		if (logparse_new(&p, &o) < 0)
			return 0;
		split = size ? data[0] % (size + 1) : 0;
		logparse_feed(p, (const char *)data, split, on_record, NULL);
		logparse_feed(p, (const char *)data + split, size - split, on_record, NULL);
		logparse_finish(p, on_record, NULL);
		logparse_free(p);
	}
	return 0;
}
