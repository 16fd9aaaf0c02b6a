/*
 * buf.h - a growable byte buffer with a hard cap (after curl's dynbuf).
 *
 * Every buffer that holds outside input has a maximum size; an append that
 * would pass it fails with FACTORY_ETOOBIG and leaves the buffer as it was.
 * On allocation failure the buffer is released and FACTORY_ENOMEM returned.
 * The content is always NUL-terminated (the NUL is not counted in len).
 *
 *   fbuf b;
 *   fbuf_init(&b, 1 << 20);
 *   if (fbuf_printf(&b, "%d", 42) < 0) goto cleanup;
 *   use(b.ptr, b.len);
 * cleanup:
 *   fbuf_release(&b);
 */
#ifndef FACTORY_BUF_H
#define FACTORY_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
	char *ptr;     /* content, NUL-terminated; NULL until first append */
	size_t len;    /* bytes used, excluding the NUL */
	size_t alloc;  /* bytes allocated */
	size_t max;    /* hard cap on len */
} fbuf;

#define FBUF_DEFAULT_MAX ((size_t)64 << 20)

/* Initialise an empty buffer that may grow to `max` bytes (0: FBUF_DEFAULT_MAX). */
void fbuf_init(fbuf *b, size_t max);
/* Free the content; the buffer is empty and reusable after (same cap). */
void fbuf_release(fbuf *b);
/* Empty the buffer, keeping its allocation. */
void fbuf_reset(fbuf *b);
/* Append bytes. 0, FACTORY_ETOOBIG (unchanged) or FACTORY_ENOMEM. */
int fbuf_put(fbuf *b, const void *data, size_t len);
int fbuf_puts(fbuf *b, const char *s);
int fbuf_putc(fbuf *b, char c);
int fbuf_printf(fbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fbuf_vprintf(fbuf *b, const char *fmt, va_list ap);
/* The content as a C string ("" when empty); owned by the buffer. */
const char *fbuf_cstr(const fbuf *b);
/* Hand the content to the caller (free() it); the buffer is left empty.
 * Returns NULL on allocation failure. */
char *fbuf_detach(fbuf *b);

#endif
