/* Tests for common/spool.c: order, durability across reopen, marks, torn
 * tails, concurrent appends and the lock. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "spool.h"
#include "support/support.h"

static char dir[256];

static void make_dir(void)
{
	tu_tmpdir_make(dir, sizeof(dir), "spool_test");
}

static void remove_dir(void)
{
	tu_tmpdir_remove(dir);
}

TestSuite(spool, .init = make_dir, .fini = remove_dir);

static void expect_next(spool *sp, uint64_t *seq, const char *want, const char *want_mark)
{
	char *data = NULL, mark[SPOOL_MARK_MAX + 1];
	size_t len = 0;

	cr_assert_eq(spool_next(seq, &data, &len, mark, sp, 0), 0, "%s", ferror_last());
	cr_assert_str_eq(data, want);
	cr_assert_eq(len, strlen(want));
	cr_assert_str_eq(mark, want_mark);
	free(data);
}

Test(spool, appends_come_out_in_order_and_survive_reopen)
{
	spool *sp = NULL;
	uint64_t s1, s2, s3, seq;
	char *data = NULL;

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	cr_assert_eq(spool_append(&s1, sp, "one", 3), 0);
	cr_assert_eq(spool_append(&s2, sp, "two", 3), 0);
	cr_assert_eq(spool_append(&s3, sp, "three", 5), 0);
	cr_assert(s1 < s2 && s2 < s3);
	expect_next(sp, &seq, "one", "");
	cr_assert_eq(seq, s1);
	/* The same record until it is acknowledged. */
	expect_next(sp, &seq, "one", "");
	cr_assert_eq(spool_ack(sp, seq), 0);
	expect_next(sp, &seq, "two", "");
	cr_assert_eq(spool_mark(sp, seq, "attempt"), 0);
	spool_close(sp);

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	expect_next(sp, &seq, "two", "attempt");
	cr_assert_eq(seq, s2);
	cr_assert_eq(spool_mark(sp, seq, "issue=12"), 0);
	cr_assert_eq(spool_ack(sp, seq), 0);
	expect_next(sp, &seq, "three", "");
	cr_assert_eq(spool_ack(sp, seq), 0);
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), FACTORY_ENOTFOUND);
	/* New records after a reopen continue the numbering. */
	cr_assert_eq(spool_append(&seq, sp, "four", 4), 0);
	cr_assert(seq > s3);
	spool_close(sp);
}

Test(spool, a_second_opener_is_refused)
{
	spool *a = NULL, *b = NULL;

	cr_assert_eq(spool_open(&a, dir), 0);
	cr_assert_eq(spool_open(&b, dir), FACTORY_ECONFLICT);
	cr_assert_null(b);
	cr_assert(strstr(ferror_last(), "in use"));
	spool_close(a);
	cr_assert_eq(spool_open(&b, dir), 0);
	spool_close(b);
}

Test(spool, a_torn_tail_is_cut_and_earlier_records_kept)
{
	spool *sp = NULL;
	uint64_t seq;
	char path[512], *data = NULL;
	int fd;

	cr_assert_eq(spool_open(&sp, dir), 0);
	cr_assert_eq(spool_append(&seq, sp, "kept", 4), 0);
	spool_close(sp);
	snprintf(path, sizeof(path), "%s/seg-%016llx.log", dir, 1ULL);
	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(write(fd, "FS1 0000000000000002 00000010 1234", 34), 34); /* header cut short */
	close(fd);

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	expect_next(sp, &seq, "kept", "");
	cr_assert_eq(spool_ack(sp, seq), 0);
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), FACTORY_ENOTFOUND);
	cr_assert_eq(spool_append(&seq, sp, "after", 5), 0);
	expect_next(sp, &seq, "after", "");
	spool_close(sp);
}

Test(spool, a_damaged_record_is_reported_and_the_file_kept)
{
	spool *sp = NULL;
	spool_stats st;
	uint64_t seq;
	char path[512], *data = NULL;
	int fd;

	cr_assert_eq(spool_open(&sp, dir), 0);
	cr_assert_eq(spool_append(&seq, sp, "first", 5), 0);
	cr_assert_eq(spool_append(&seq, sp, "second", 6), 0);
	cr_assert_eq(spool_append(&seq, sp, "third", 5), 0);
	spool_close(sp);
	snprintf(path, sizeof(path), "%s/seg-%016llx.log", dir, 1ULL);
	fd = open(path, O_WRONLY);
	cr_assert(fd >= 0);
	/* Flip a payload byte of the second record (39-byte header + "first\n"). */
	cr_assert_eq(pwrite(fd, "X", 1, 39 + 6 + 39), 1);
	close(fd);

	cr_assert_eq(spool_open(&sp, dir), 0, "%s", ferror_last());
	spool_get_stats(&st, sp);
	cr_assert_eq(st.damaged, 1);
	expect_next(sp, &seq, "first", "");
	cr_assert_eq(spool_ack(sp, seq), 0);
	cr_assert_eq(spool_next(&seq, &data, NULL, NULL, sp, 0), FACTORY_ENOTFOUND);
	/* Writing goes on in a new segment. */
	cr_assert_eq(spool_append(&seq, sp, "fourth", 6), 0);
	expect_next(sp, &seq, "fourth", "");
	cr_assert_eq(spool_ack(sp, seq), 0);
	spool_close(sp);
	/* The damaged file was kept for a person to look at. */
	snprintf(path, sizeof(path), "%s/damaged-%016llx.log", dir, 1ULL);
	cr_assert_eq(access(path, F_OK), 0, "%s", path);
}

Test(spool, bad_input_is_refused)
{
	spool *sp = NULL;
	uint64_t seq;
	static char big[SPOOL_RECORD_MAX + 1];

	cr_assert_eq(spool_open(&sp, dir), 0);
	cr_assert_eq(spool_append(&seq, sp, "", 0), FACTORY_ETOOBIG);
	cr_assert_eq(spool_append(&seq, sp, big, sizeof(big)), FACTORY_ETOOBIG);
	cr_assert_eq(spool_append(&seq, sp, "x", 1), 0);
	cr_assert_eq(spool_ack(sp, seq), FACTORY_EINVALID); /* not handed out yet */
	cr_assert_eq(spool_mark(sp, seq, "x"), FACTORY_EINVALID);
	spool_close(sp);
	cr_assert_eq(spool_open(&sp, ""), FACTORY_ECONFIG);
}

struct writer {
	spool *sp;
	int id;
	int n;
};

static void *write_many(void *arg)
{
	struct writer *w = arg;
	char rec[64];
	int i;

	for (i = 0; i < w->n; i++) {
		int len = snprintf(rec, sizeof(rec), "w%d-%d", w->id, i);
		if (spool_append(NULL, w->sp, rec, (size_t)len) < 0)
			return (void *)1;
	}
	return NULL;
}

Test(spool, concurrent_appends_are_all_kept_once_in_per_writer_order, .timeout = 60)
{
	enum { WRITERS = 8, EACH = 500 };
	pthread_t t[WRITERS];
	struct writer w[WRITERS];
	int next_of[WRITERS] = {0};
	spool *sp = NULL;
	spool_stats st;
	uint64_t seq, last = 0;
	char *data;
	int i, total = 0;

	cr_assert_eq(spool_open(&sp, dir), 0);
	for (i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){sp, i, EACH};
		pthread_create(&t[i], NULL, write_many, &w[i]);
	}
	for (i = 0; i < WRITERS; i++) {
		void *r;
		pthread_join(t[i], &r);
		cr_assert_null(r);
	}
	spool_get_stats(&st, sp);
	cr_assert_eq(st.appended, WRITERS * EACH);
	cr_assert_leq(st.flushes, st.appended);
	spool_close(sp);

	cr_assert_eq(spool_open(&sp, dir), 0);
	while (spool_next(&seq, &data, NULL, NULL, sp, 0) == 0) {
		int id, n;
		cr_assert(seq > last);
		last = seq;
		cr_assert_eq(sscanf(data, "w%d-%d", &id, &n), 2);
		cr_assert_eq(n, next_of[id], "writer %d: got %d, want %d", id, n, next_of[id]);
		next_of[id]++;
		free(data);
		cr_assert_eq(spool_ack(sp, seq), 0);
		total++;
	}
	cr_assert_eq(total, WRITERS * EACH);
	spool_close(sp);
}

struct async_result {
	pthread_mutex_t mu;
	int calls;
	int errors;
	uint64_t seqs[2000];
};

static void on_done(void *ctx, uint64_t seq, int error)
{
	struct async_result *r = ctx;

	pthread_mutex_lock(&r->mu);
	if (error)
		r->errors++;
	else
		r->seqs[r->calls] = seq;
	r->calls++;
	pthread_mutex_unlock(&r->mu);
}

Test(spool, async_appends_call_back_once_each_and_are_kept, .timeout = 60)
{
	static struct async_result r = {PTHREAD_MUTEX_INITIALIZER, 0, 0, {0}};
	spool *sp = NULL;
	spool_stats st;
	uint64_t seq;
	char rec[32], *data;
	int i, n = 0;

	cr_assert_eq(spool_open(&sp, dir), 0);
	for (i = 0; i < 2000; i++) {
		int len = snprintf(rec, sizeof(rec), "async-%d", i);
		cr_assert_eq(spool_append_async(sp, rec, (size_t)len, on_done, &r), 0, "%s", ferror_last());
	}
	cr_assert_eq(spool_append_async(sp, "", 0, on_done, &r), FACTORY_ETOOBIG);
	spool_close(sp); /* writes what is queued and runs the callbacks */
	cr_assert_eq(r.calls, 2000);
	cr_assert_eq(r.errors, 0);
	for (i = 1; i < 2000; i++)
		cr_assert(r.seqs[i] > r.seqs[i - 1], "callbacks in record order");

	cr_assert_eq(spool_open(&sp, dir), 0);
	spool_get_stats(&st, sp);
	cr_assert_eq(st.pending, 2000);
	while (spool_next(&seq, &data, NULL, NULL, sp, 0) == 0) {
		snprintf(rec, sizeof(rec), "async-%d", n++);
		cr_assert_str_eq(data, rec);
		free(data);
		cr_assert_eq(spool_ack(sp, seq), 0);
	}
	cr_assert_eq(n, 2000);
	spool_close(sp);
}
