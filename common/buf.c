/* buf.c - capped growable buffer. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void fbuf_init(fbuf *b, size_t max)
{
	b->ptr = NULL;
	b->len = 0;
	b->alloc = 0;
	b->max = max ? max : FBUF_DEFAULT_MAX;
}

void fbuf_release(fbuf *b)
{
	free(b->ptr);
	b->ptr = NULL;
	b->len = 0;
	b->alloc = 0;
}

void fbuf_reset(fbuf *b)
{
	b->len = 0;
	if (b->ptr)
		b->ptr[0] = '\0';
}

/* Make room for `extra` more bytes plus the NUL. */
static int grow(fbuf *b, size_t extra)
{
	size_t need, n;
	char *p;

	if (extra > b->max || b->len > b->max - extra)
		return ferror_set(FACTORY_ETOOBIG, "buffer cap of %zu bytes reached", b->max);
	need = b->len + extra + 1;
	if (need <= b->alloc)
		return 0;
	n = b->alloc ? b->alloc : 64;
	while (n < need)
		n = n > SIZE_MAX / 2 ? need : n * 2;
	if (n > b->max + 1)
		n = b->max + 1;
	p = realloc(b->ptr, n);
	if (!p) {
		fbuf_release(b);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	b->ptr = p;
	b->alloc = n;
	return 0;
}

int fbuf_put(fbuf *b, const void *data, size_t len)
{
	int error;

	if ((error = grow(b, len)) < 0)
		return error;
	if (len)
		/* grow() leaves ptr allocated whenever alloc > 0, which the analyser cannot see: */
		/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
		memcpy(b->ptr + b->len, data, len);
	b->len += len;
	b->ptr[b->len] = '\0';
	return 0;
}

int fbuf_puts(fbuf *b, const char *s)
{
	return fbuf_put(b, s, strlen(s));
}

int fbuf_putc(fbuf *b, char c)
{
	return fbuf_put(b, &c, 1);
}

int fbuf_vprintf(fbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, error;

	va_copy(ap2, ap);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_copy is above */
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return ferror_set(FACTORY_ERR, "bad format");
	if ((error = grow(b, (size_t)n)) < 0)
		return error;
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int fbuf_printf(fbuf *b, const char *fmt, ...)
{
	va_list ap;
	int error;

	va_start(ap, fmt);
	error = fbuf_vprintf(b, fmt, ap);
	va_end(ap);
	return error;
}

const char *fbuf_cstr(const fbuf *b)
{
	return b->ptr ? b->ptr : "";
}

char *fbuf_detach(fbuf *b)
{
	char *p = b->ptr;

	if (!p) {
		p = calloc(1, 1);
		if (!p)
			return NULL;
	}
	b->ptr = NULL;
	b->len = 0;
	b->alloc = 0;
	return p;
}
