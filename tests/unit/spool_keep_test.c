/*
 * spool_keep_test.c - the spool keeps delivered segments for a while when
 * asked (spool_keep_delivered) and spool_scan() visits every record still on
 * disk, delivered or not, across a reopen. Segments rotate at 8 MiB, so the
 * records here are large (1 MiB) to make several segments quickly.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "spool.h"

#define BIG ((size_t)1 << 20)

static char dir[256];
static char *big;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/spool_keep_test.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	big = malloc(BIG);
	cr_assert_not_null(big);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
	free(big);
}

TestSuite(spool_keep, .init = setup, .fini = teardown);

static int count_segments(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, "seg-", 4);
	closedir(d);
	return n;
}

/* Append `n` records of BIG bytes, each filled with its own letter. */
static void append_big(spool *sp, int first, int n)
{
	int i;

	for (i = first; i < first + n; i++) {
		memset(big, 'a' + i % 26, BIG - 1);
		big[BIG - 1] = (char)('0' + i % 10);
		cr_assert_eq(spool_append(NULL, sp, big, BIG), 0, "%s", ferror_last());
	}
}

static void deliver_all(spool *sp)
{
	uint64_t seq;
	char *data;
	size_t len;

	while (spool_next(&seq, &data, &len, NULL, sp, 0) == 0) {
		free(data);
		cr_assert_eq(spool_ack(sp, seq), 0, "%s", ferror_last());
	}
}

typedef struct {
	int n;
	uint64_t last_seq;
	int in_order;
	int intact;
} visit;

static int count_record(void *ctx, uint64_t seq, const char *data, size_t len)
{
	visit *v = ctx;

	v->in_order &= seq > v->last_seq;
	v->last_seq = seq;
	v->intact &= len == BIG && data[0] == data[BIG - 2] && data[len] == '\0';
	v->n++;
	return 0;
}

static int stop_at_three(void *ctx, uint64_t seq, const char *data, size_t len)
{
	(void)seq;
	(void)data;
	(void)len;
	return ++*(int *)ctx == 3 ? FACTORY_ECONFLICT : 0;
}

Test(spool_keep, delivered_segments_go_at_once_by_default)
{
	spool *sp = NULL;
	visit v = {0, 0, 1, 1};

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	append_big(sp, 0, 20);
	cr_assert_geq(count_segments(), 3);
	deliver_all(sp);
	cr_assert_eq(count_segments(), 1, "only the segment being written stays");
	cr_assert_eq(spool_scan(sp, count_record, &v), 0, "%s", ferror_last());
	cr_assert_lt(v.n, 20);
	cr_assert(v.in_order && v.intact);
	spool_close(sp);
}

Test(spool_keep, kept_segments_are_scanned_after_a_reopen)
{
	spool *sp = NULL;
	spool_stats st;
	visit v = {0, 0, 1, 1};
	uint64_t seq;
	char *data = NULL;
	int segs, stopped = 0;

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	spool_keep_delivered(sp, 600000, 8);
	append_big(sp, 0, 20);
	segs = count_segments();
	cr_assert_geq(segs, 3);
	deliver_all(sp);
	cr_assert_eq(count_segments(), segs, "delivered segments are kept");
	spool_close(sp);

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	/* Asked before the first spool_next(), which would otherwise clear them. */
	spool_keep_delivered(sp, 600000, 8);
	spool_get_stats(&st, sp);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), FACTORY_ENOTFOUND, "nothing is delivered twice");
	cr_assert_eq(spool_scan(sp, count_record, &v), 0, "%s", ferror_last());
	cr_assert_eq(v.n, 20);
	cr_assert(v.in_order && v.intact);
	cr_assert_eq(spool_scan(sp, stop_at_three, &stopped), FACTORY_ECONFLICT, "the visitor's error ends the scan");
	cr_assert_eq(stopped, 3);

	/* New records after the kept ones come out, and only they. */
	cr_assert_eq(spool_append(NULL, sp, "new", 3), 0);
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), 0, "%s", ferror_last());
	cr_assert_str_eq(data, "new");
	free(data);
	cr_assert_eq(spool_ack(sp, seq), 0);
	spool_close(sp);
}

Test(spool_keep, at_most_max_segments_are_kept)
{
	spool *sp = NULL;

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	spool_keep_delivered(sp, 600000, 1);
	append_big(sp, 0, 30);
	cr_assert_geq(count_segments(), 4);
	deliver_all(sp);
	cr_assert_eq(count_segments(), 2, "one kept, one being written");
	spool_close(sp);
}

Test(spool_keep, kept_segments_go_once_they_are_old)
{
	spool *sp = NULL;
	uint64_t seq;
	char *data = NULL;

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	spool_keep_delivered(sp, 50, 8);
	append_big(sp, 0, 20);
	usleep(100 * 1000);
	cr_assert_eq(spool_append(NULL, sp, "late", 4), 0);
	deliver_all(sp);
	cr_assert_eq(count_segments(), 1, "old delivered segments went at the acknowledgements");
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), FACTORY_ENOTFOUND);
	spool_close(sp);
}
