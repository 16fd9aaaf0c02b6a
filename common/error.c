/* error.c - thread-local last error message. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static _Thread_local char last_msg[1024];
static _Thread_local int last_code;

int ferror_set(int code, const char *fmt, ...)
{
	char raw[1024];
	va_list ap;
	char *masked;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);

	masked = log_mask_dup(raw);
	snprintf(last_msg, sizeof(last_msg), "%s", masked ? masked : "error (message could not be masked)");
	free(masked);
	last_code = code;
	return code;
}

const char *ferror_last(void)
{
	return last_msg[0] ? last_msg : "unknown error";
}

int ferror_last_code(void)
{
	return last_code;
}

void ferror_clear(void)
{
	last_msg[0] = '\0';
	last_code = 0;
}

int ferror_exit_code(int code)
{
	switch (code) {
	case FACTORY_OK:
		return EXIT_DONE;
	case FACTORY_ECONFIG:
		return EXIT_USAGE;
	case FACTORY_EUPSTREAM:
		return EXIT_UPSTREAM;
	default:
		return EXIT_FAILED;
	}
}
