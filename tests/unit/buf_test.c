/* Tests for common/buf.c: appends, the hard cap, ownership. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"

Test(buf, starts_empty)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_null(b.ptr);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.max, FBUF_DEFAULT_MAX);
	cr_assert_str_eq(fbuf_cstr(&b), "");
	fbuf_release(&b);
	fbuf_init(&b, 10);
	cr_assert_eq(b.max, 10);
	fbuf_release(&b);
}

Test(buf, appends_of_every_kind)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_put(&b, "ab", 2), 0);
	cr_assert_eq(fbuf_puts(&b, "cd"), 0);
	cr_assert_eq(fbuf_putc(&b, 'e'), 0);
	cr_assert_eq(fbuf_printf(&b, "%d-%s", 42, "x"), 0);
	cr_assert_eq(fbuf_put(&b, "", 0), 0);
	cr_assert_eq(fbuf_puts(&b, ""), 0);
	cr_assert_str_eq(b.ptr, "abcde42-x");
	cr_assert_eq(b.len, 9);
	cr_assert_eq(b.ptr[b.len], '\0');
	fbuf_release(&b);
}

Test(buf, binary_content_with_nuls)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_put(&b, "a\0b\0", 4), 0);
	cr_assert_eq(b.len, 4);
	cr_assert_eq(memcmp(b.ptr, "a\0b\0", 4), 0);
	cr_assert_eq(b.ptr[4], '\0');
	fbuf_release(&b);
}

Test(buf, cap_is_reachable_exactly)
{
	fbuf b;

	fbuf_init(&b, 5);
	cr_assert_eq(fbuf_puts(&b, "12345"), 0);
	cr_assert_eq(b.len, 5);
	cr_assert_str_eq(b.ptr, "12345");
	cr_assert_leq(b.alloc, 6);
	fbuf_release(&b);
}

Test(buf, appends_past_the_cap_fail_and_change_nothing)
{
	fbuf b;

	fbuf_init(&b, 5);
	cr_assert_eq(fbuf_puts(&b, "123"), 0);
	cr_assert_eq(fbuf_puts(&b, "456"), FACTORY_ETOOBIG);
	cr_assert_str_eq(b.ptr, "123");
	cr_assert_eq(b.len, 3);
	cr_assert(strstr(ferror_last(), "cap"), "%s", ferror_last());
	cr_assert_eq(ferror_last_code(), FACTORY_ETOOBIG);
	cr_assert_eq(fbuf_printf(&b, "%s", "abc"), FACTORY_ETOOBIG);
	cr_assert_str_eq(b.ptr, "123");
	cr_assert_eq(fbuf_putc(&b, '4'), 0);
	cr_assert_eq(fbuf_putc(&b, '5'), 0);
	cr_assert_eq(fbuf_putc(&b, '6'), FACTORY_ETOOBIG);
	cr_assert_str_eq(b.ptr, "12345");
	cr_assert_eq(fbuf_put(&b, "", 0), 0);
	fbuf_release(&b);
}

Test(buf, huge_lengths_do_not_overflow)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "x"), 0);
	cr_assert_eq(fbuf_put(&b, "y", SIZE_MAX), FACTORY_ETOOBIG);
	cr_assert_eq(fbuf_put(&b, "y", SIZE_MAX - 1), FACTORY_ETOOBIG);
	cr_assert_eq(fbuf_put(&b, "y", FBUF_DEFAULT_MAX), FACTORY_ETOOBIG);
	cr_assert_str_eq(b.ptr, "x");
	fbuf_release(&b);
	fbuf_init(&b, SIZE_MAX - 1);
	cr_assert_eq(fbuf_puts(&b, "x"), 0);
	cr_assert_eq(fbuf_put(&b, "y", SIZE_MAX - 1), FACTORY_ETOOBIG);
	fbuf_release(&b);
}

Test(buf, reset_keeps_the_allocation)
{
	fbuf b;
	char *p;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "hello"), 0);
	p = b.ptr;
	fbuf_reset(&b);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.ptr, p);
	cr_assert_str_eq(fbuf_cstr(&b), "");
	cr_assert_eq(fbuf_puts(&b, "hi"), 0);
	cr_assert_str_eq(b.ptr, "hi");
	fbuf_release(&b);
	fbuf_reset(&b); /* on an empty buffer too */
	cr_assert_eq(b.len, 0);
}

Test(buf, release_leaves_it_reusable_with_the_same_cap)
{
	fbuf b;

	fbuf_init(&b, 4);
	cr_assert_eq(fbuf_puts(&b, "abcd"), 0);
	fbuf_release(&b);
	cr_assert_null(b.ptr);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.max, 4);
	cr_assert_eq(fbuf_puts(&b, "wxyz"), 0);
	cr_assert_eq(fbuf_puts(&b, "!"), FACTORY_ETOOBIG);
	fbuf_release(&b);
	fbuf_release(&b);
}

Test(buf, detach_hands_over_the_content)
{
	fbuf b;
	char *s;

	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_puts(&b, "mine"), 0);
	s = fbuf_detach(&b);
	cr_assert_str_eq(s, "mine");
	cr_assert_null(b.ptr);
	cr_assert_eq(b.len, 0);
	free(s);
	s = fbuf_detach(&b);
	cr_assert_not_null(s);
	cr_assert_str_eq(s, "");
	free(s);
	cr_assert_eq(fbuf_puts(&b, "again"), 0);
	cr_assert_str_eq(b.ptr, "again");
	fbuf_release(&b);
}

Test(buf, grows_through_many_small_appends)
{
	fbuf b;
	size_t i;

	fbuf_init(&b, 0);
	for (i = 0; i < (1 << 20); i++)
		cr_assert_eq(fbuf_putc(&b, (char)('a' + i % 26)), 0);
	cr_assert_eq(b.len, (size_t)1 << 20);
	for (i = 0; i < b.len; i += 4099)
		cr_assert_eq(b.ptr[i], (char)('a' + i % 26));
	cr_assert_eq(b.ptr[b.len], '\0');
	cr_assert_geq(b.alloc, b.len + 1);
	fbuf_release(&b);
}

Test(buf, printf_of_long_strings)
{
	fbuf b;
	char *big = malloc(100001);

	memset(big, 'z', 100000);
	big[100000] = '\0';
	fbuf_init(&b, 0);
	cr_assert_eq(fbuf_printf(&b, "<%s>", big), 0);
	cr_assert_eq(b.len, 100002);
	cr_assert_eq(b.ptr[0], '<');
	cr_assert_eq(b.ptr[100001], '>');
	fbuf_release(&b);
	fbuf_init(&b, 100000);
	cr_assert_eq(fbuf_printf(&b, "<%s>", big), FACTORY_ETOOBIG);
	cr_assert_eq(b.len, 0);
	fbuf_release(&b);
	free(big);
}

static int vcall(fbuf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = fbuf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

Test(buf, vprintf)
{
	fbuf b;

	fbuf_init(&b, 0);
	cr_assert_eq(vcall(&b, "%s=%ld", "n", 12L), 0);
	cr_assert_eq(vcall(&b, "%c", '!'), 0);
	cr_assert_str_eq(b.ptr, "n=12!");
	fbuf_release(&b);
}
