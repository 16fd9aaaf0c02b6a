/*
 * order.c - the Up Next list: which issues, in which order.
 *
 * Rank: security (priority 1) first, no exceptions; then the fast lane;
 * then priority, severity (none counts after 4), reach (upvotes: each is
 * another person with the problem), age (older first), iid. Up Next holds
 * the first `wip` of that rank, and every fast-lane issue even past the
 * limit: those skip the queue. Issues in progress or in validation belong
 * to other jobs and are left out.
 *
 * Order: GitLab shows a list by relative_position. The run reads the
 * positions in its list pass, keeps the longest run of Up Next issues that
 * is already in the right order (longest increasing subsequence), and moves
 * only the others, each right after its predecessor in the wanted order. A
 * list already in order costs no request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "triage_job.h"

static int bucket(const tri_item *it)
{
	if (it->priority == 1)
		return 0;
	return it->fast_lane ? 1 : 2;
}

static int rank_cmp(const void *a, const void *b)
{
	const tri_item *x = *(const tri_item *const *)a, *y = *(const tri_item *const *)b;
	int sx = x->severity ? x->severity : 5, sy = y->severity ? y->severity : 5, c;

	if (bucket(x) != bucket(y))
		return bucket(x) - bucket(y);
	if (x->priority != y->priority)
		return x->priority - y->priority;
	if (sx != sy)
		return sx - sy;
	if (x->upvotes != y->upvotes)
		return x->upvotes > y->upvotes ? -1 : 1;
	if ((c = strcmp(x->created_at, y->created_at)))
		return c;
	return x->iid < y->iid ? -1 : x->iid > y->iid;
}

/* The wanted Up Next list, in order, into *out (caller frees); *n its length. */
static int wanted(tri_item ***out, size_t *n, tri_run *r)
{
	tri_item **v;
	size_t i, k = 0, keep = 0;

	*out = NULL;
	*n = 0;
	if (!(v = calloc(r->n ? r->n : 1, sizeof(*v)))) /* NOLINT(bugprone-sizeof-expression): pointers */
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (i = 0; i < r->n; i++) {
		tri_item *it = &r->v[i];
		if (!it->gone && !it->busy && it->priority >= 1 && it->priority <= 5)
			v[k++] = it;
	}
	qsort(v, k, sizeof(*v), rank_cmp); /* NOLINT(bugprone-sizeof-expression): pointers */
	for (i = 0; i < k; i++)
		if ((long)i < r->wip || v[i]->fast_lane)
			v[keep++] = v[i];
	*out = v;
	*n = keep;
	return 0;
}

int tri_choose_up_next(tri_run *r)
{
	tri_item **v = NULL;
	size_t n, i;
	cJSON *arr;
	int error;

	for (i = 0; i < r->n; i++)
		r->v[i].want_up_next = 0;
	if ((error = wanted(&v, &n, r)) < 0)
		return error;
	arr = cJSON_AddArrayToObject(report_data(r->job->rep), "up_next");
	for (i = 0; i < n; i++) {
		v[i]->want_up_next = 1;
		if (arr)
			cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)v[i]->iid));
	}
	free(v);
	return arr ? 0 : ferror_set(FACTORY_ENOMEM, "out of memory");
}

/* Mark in `keep` the longest strictly increasing run of positions (issues
 * without a position never belong to it). O(n log n). */
static int longest_in_order(unsigned char *keep, tri_item **v, size_t n)
{
	size_t *tail = calloc(n + 1, sizeof(size_t)), *prev = calloc(n + 1, sizeof(size_t));
	size_t len = 0, i, k;
	int error = 0;

	if (!tail || !prev) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < n; i++) {
		size_t lo = 0, hi = len;
		if (!v[i]->has_relpos)
			continue;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (v[tail[mid]]->relpos < v[i]->relpos)
				lo = mid + 1;
			else
				hi = mid;
		}
		prev[i] = lo ? tail[lo - 1] : (size_t)-1;
		tail[lo] = i;
		if (lo == len)
			len++;
	}
	memset(keep, 0, n);
	if (len)
		for (k = tail[len - 1];; k = prev[k]) {
			keep[k] = 1;
			if (prev[k] == (size_t)-1)
				break;
		}
cleanup:
	free(tail);
	free(prev);
	return error;
}

int tri_reorder(tri_run *r)
{
	tri_item **all = NULL, **v = NULL;
	unsigned char *keep = NULL;
	size_t n, k = 0, i, first_kept;
	long moves = 0;
	int error;

	if ((error = wanted(&all, &n, r)) < 0)
		return error;
	/* only the issues that are really in Up Next now (a failed write left one out) */
	if (!(v = calloc(n ? n : 1, sizeof(*v))) || /* NOLINT(bugprone-sizeof-expression): pointers */
	    !(keep = calloc(n ? n : 1, 1))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < n; i++)
		if (!all[i]->gone)
			v[k++] = all[i];
	if (k < 2)
		goto cleanup;
	if ((error = longest_in_order(keep, v, k)) < 0)
		goto cleanup;
	for (first_kept = 0; first_kept < k && !keep[first_kept]; first_kept++)
		;
	log_section_start("triage_order", "ordering Up Next", 1);
	for (i = 0; i < k; i++) {
		if (keep[i])
			continue;
		if (i == 0 && first_kept == k)
			continue; /* nothing in place: the first is where the others line up */
		/* GitLab's move_after_id names the issue that comes after, move_before_id the one before */
		if (i == 0)
			error = gitlab_issue_reorder(r->job->gl, v[i]->iid, v[first_kept]->id, 0);
		else
			error = gitlab_issue_reorder(r->job->gl, v[i]->iid, 0, v[i - 1]->id);
		if (error == FACTORY_ENOTFOUND) {
			log_warn("#%ld: deleted while the run went on: not reordered", v[i]->iid);
			error = 0;
			continue;
		}
		if (error < 0)
			break;
		moves++;
		{
			char t[32];
			snprintf(t, sizeof(t), "#%ld", v[i]->iid);
			if (i)
				report_action(r->job->rep, "reorder", t, "Up Next position %zu, after #%ld", i + 1, v[i - 1]->iid);
			else
				report_action(r->job->rep, "reorder", t, "Up Next position 1, before #%ld", v[first_kept]->iid);
		}
	}
	log_section_end("triage_order");
	if (error >= 0)
		log_info("Up Next: %zu issues, %ld %s", k, moves, moves == 1 ? "move" : "moves");
	report_counter_set(r->job->rep, "reorders", moves);
cleanup:
	free(all);
	free(v);
	free(keep);
	return error;
}
