/* deliver.c - spool to GitLab, in order, exactly once (see deliver.h). */
#include "deliver.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "feedback.h"
#include "log.h"

/* How much below the server the delivery thread runs (nice). */
#define DELIVER_NICE 10

struct deliverer {
	gitlab *gl;
	spool *sp;
	deliver_options o;
	char *dead_dir;

	pthread_t thread;
	int running;
	int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;

	deliver_stats st;
	uint64_t invalid_seq;   /* the record GitLab refused as invalid */
	int invalid_count;      /* how many times in a row */
	uint64_t attempt_seq;   /* the record this process last tried to create */
	long long settle_until; /* its create may still be running in GitLab until then */
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *code_name(int code)
{
	switch (code) {
	case FACTORY_EUPSTREAM: return "upstream unavailable";
	case FACTORY_EAUTH: return "not allowed";
	case FACTORY_ENOTFOUND: return "not found";
	case FACTORY_EINVALID: return "invalid";
	case FACTORY_ETIMEOUT: return "timeout";
	default: return "error";
	}
}

int deliverer_new(deliverer **out, gitlab *gl, spool *sp, const deliver_options *o)
{
	deliverer *d = calloc(1, sizeof(*d));
	size_t n;

	*out = NULL;
	if (!d)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	d->gl = gl;
	d->sp = sp;
	d->o = *o;
	if (d->o.retry_min_ms <= 0)
		d->o.retry_min_ms = 1000;
	if (d->o.retry_max_ms < d->o.retry_min_ms)
		d->o.retry_max_ms = d->o.retry_min_ms > 60000 ? d->o.retry_min_ms : 60000;
	if (d->o.dead_after <= 0)
		d->o.dead_after = 5;
	if (d->o.settle_ms <= 0)
		d->o.settle_ms = 60000;
	n = strlen(o->spool_dir) + 8;
	if (!(d->dead_dir = malloc(n))) {
		free(d);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	snprintf(d->dead_dir, n, "%s/dead", o->spool_dir);
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	*out = d;
	return 0;
}

void deliverer_free(deliverer *d)
{
	if (!d)
		return;
	if (d->running)
		deliverer_stop(d);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d->dead_dir);
	free(d);
}

static void note_failure(deliverer *d, int code, const char *what)
{
	pthread_mutex_lock(&d->mu);
	d->st.failures++;
	d->st.retrying = 1;
	snprintf(d->st.last_error, sizeof(d->st.last_error), "%s: %s", what, ferror_last());
	pthread_mutex_unlock(&d->mu);
	log_warn("delivery: %s (%s): %s", what, code_name(code), ferror_last());
}

/* ---- looking for what an uncertain try may have made ---- */

typedef struct {
	const char *id;
	long iid;
} find_ctx;

static int find_issue_cb(void *ctx, const cJSON *item)
{
	find_ctx *fc = ctx;
	const cJSON *desc = cJSON_GetObjectItemCaseSensitive(item, "description");
	const cJSON *iid = cJSON_GetObjectItemCaseSensitive(item, "iid");

	if (cJSON_IsString(desc) && cJSON_IsNumber(iid) && feedback_has_issue_marker(desc->valuestring, fc->id)) {
		fc->iid = (long)iid->valuedouble;
		return 1;
	}
	return 0;
}

/* The iid of the issue already made for `f`, or 0. */
static int find_issue(long *iid_out, deliverer *d, const feedback *f)
{
	find_ctx fc = {f->id, 0};
	char query[160];
	int rc;

	*iid_out = 0;
	snprintf(query, sizeof(query), "search=%s&in=description&state=all", f->id);
	rc = gitlab_list_each(d->gl, "projects/:id/issues", query, NULL, 100, find_issue_cb, &fc);
	if (rc < 0)
		return rc;
	if (!fc.iid) {
		/* Search indexes can lag: also read what was created since the
		 * submission arrived (less ten minutes for clock skew). */
		time_t since = (time_t)(f->received_ms / 1000) - 600;
		struct tm tm;
		char when[32];

		gmtime_r(&since, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(query, sizeof(query), "created_after=%s&state=all&order_by=created_at&sort=asc", when);
		rc = gitlab_list_each(d->gl, "projects/:id/issues", query, NULL, 5000, find_issue_cb, &fc);
		if (rc < 0)
			return rc;
	}
	*iid_out = fc.iid;
	return 0;
}

static int find_note_cb(void *ctx, const cJSON *item)
{
	find_ctx *fc = ctx;
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(item, "body");

	if (cJSON_IsString(body) && feedback_has_reporter_marker(body->valuestring, fc->id)) {
		fc->iid = 1;
		return 1;
	}
	return 0;
}

static int has_reporter_note(int *found, deliverer *d, long iid, const char *id)
{
	find_ctx fc = {id, 0};
	char path[64];
	int rc;

	snprintf(path, sizeof(path), "projects/:id/issues/%ld/notes", iid);
	rc = gitlab_list_each(d->gl, path, "sort=asc", NULL, 0, find_note_cb, &fc);
	if (rc < 0)
		return rc;
	*found = fc.iid != 0;
	return 0;
}

/* ---- dead letters ---- */

static int write_dead(deliverer *d, uint64_t seq, const char *data, size_t len, const char *reason)
{
	char path[4200], tmp[4300];
	cJSON *o = cJSON_CreateObject();
	char *text = NULL, *raw = NULL;
	int fd = -1, dfd = -1, error = -1;
	size_t n;

	if (mkdir(d->dead_dir, 0700) < 0 && errno != EEXIST) {
		error = ferror_set(FACTORY_ERR, "cannot create %s: %s", d->dead_dir, strerror(errno));
		goto cleanup;
	}
	if (!o || !(raw = strndup(data, len)) || !cJSON_AddNumberToObject(o, "seq", (double)seq) ||
	    !cJSON_AddStringToObject(o, "reason", reason) || !cJSON_AddStringToObject(o, "record", raw) ||
	    !(text = cJSON_Print(o))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/%016" PRIx64 ".json", d->dead_dir, seq);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	n = strlen(text);
	if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) < 0 || rename(tmp, path) < 0) {
		error = ferror_set(FACTORY_ERR, "cannot write %s: %s", path, strerror(errno));
		goto cleanup;
	}
	dfd = open(d->dead_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		fsync(dfd);
	log_error("delivery: submission %" PRIu64 " moved to %s: %s", seq, path, reason);
	pthread_mutex_lock(&d->mu);
	d->st.dead++;
	pthread_mutex_unlock(&d->mu);
	error = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(text);
	free(raw);
	cJSON_Delete(o);
	return error;
}

/* GitLab refused the record as invalid: count, and give up on it (into
 * dead/) after dead_after refusals in a row. Returns 0 when it went to
 * dead/ (the caller acknowledges it), else `code`. */
static int refused(deliverer *d, uint64_t seq, const char *data, size_t len, int code, const char *what)
{
	char reason[512];

	if (code != FACTORY_EINVALID)
		return code;
	if (d->invalid_seq != seq) {
		d->invalid_seq = seq;
		d->invalid_count = 0;
	}
	if (++d->invalid_count < d->o.dead_after)
		return code;
	snprintf(reason, sizeof(reason), "%s refused %d times: %s", what, d->invalid_count, ferror_last());
	if (write_dead(d, seq, data, len, reason) < 0)
		return code;
	return 0;
}

static int pause_ms(deliverer *d, long ms);

/* ---- one record ---- */

/* The iid in a mark "<prefix><iid>", or 0. */
static long mark_iid(const char *mark, const char *prefix)
{
	size_t n = strlen(prefix);
	char *end;
	long v;

	if (strncmp(mark, prefix, n) != 0)
		return 0;
	errno = 0;
	v = strtol(mark + n, &end, 10);
	return errno || *end || v < 1 ? 0 : v;
}

static int deliver_record(deliverer *d, uint64_t seq, const char *data, size_t len, const char *mark)
{
	feedback f;
	cJSON *fields = NULL, *made = NULL;
	const cJSON *iid_item;
	fbuf note;
	long iid = 0;
	long long started;
	int note_uncertain = 0, found = 0, error;
	char newmark[SPOOL_MARK_MAX + 1];

	fbuf_init(&note, 4096);
	if ((error = feedback_from_json(&f, data, len)) < 0) {
		if (error == FACTORY_ENOMEM)
			goto cleanup;
		if ((error = write_dead(d, seq, data, len, ferror_last())) < 0)
			goto cleanup;
		error = spool_ack(d->sp, seq);
		goto cleanup;
	}
	if ((iid = mark_iid(mark, "issue=")) > 0) {
		/* made before a restart or a failed note: never again */
	} else if ((iid = mark_iid(mark, "note=")) > 0) {
		note_uncertain = 1;
	} else {
		iid = 0;
		if (!strncmp(mark, "attempt", 7)) {
			/* An earlier try may have made the issue: let a create that
			 * got no answer settle, then look for it. */
			long long until = d->attempt_seq == seq ? d->settle_until : 0, wait;
			const char *at = strchr(mark, '=');

			if (d->attempt_seq != seq && at)
				until = strtoll(at + 1, NULL, 10) + d->o.settle_ms;
			wait = until - now_ms();
			if (wait > 0) {
				log_info("delivery: waiting %lld ms for an earlier try of %s to settle", wait, f.id);
				if (pause_ms(d, (long)wait)) {
					error = ferror_set(FACTORY_ETIMEOUT, "stopping");
					goto cleanup;
				}
			}
			if ((error = find_issue(&iid, d, &f)) < 0) {
				note_failure(d, error, "looking for an issue from an earlier try");
				goto cleanup;
			}
			if (iid) {
				log_info("delivery: submission %s was already issue #%ld", f.id, iid);
				found = 1;
				snprintf(newmark, sizeof(newmark), "issue=%ld", iid);
				if ((error = spool_mark(d->sp, seq, newmark)) < 0)
					goto cleanup;
			}
		}
	}
	if (!iid) {
		if ((error = feedback_issue_fields(&fields, &f)) < 0)
			goto cleanup;
		started = now_ms();
		snprintf(newmark, sizeof(newmark), "attempt=%lld", started);
		if ((error = spool_mark(d->sp, seq, newmark)) < 0)
			goto cleanup;
		d->attempt_seq = seq;
		d->settle_until = 0;
		if ((error = gitlab_issue_create(&made, d->gl, fields)) < 0) {
			/* No answer at all: GitLab may still be making it. */
			if (gitlab_last_status(d->gl) == 0)
				d->settle_until = started + d->o.settle_ms;
			note_failure(d, error, "creating an issue");
			if ((error = refused(d, seq, data, len, error, "creating the issue")) == 0)
				error = spool_ack(d->sp, seq);
			goto cleanup;
		}
		iid_item = cJSON_GetObjectItemCaseSensitive(made, "iid");
		if (!cJSON_IsNumber(iid_item) || iid_item->valuedouble < 1) {
			error = ferror_set(FACTORY_EINVALID, "GitLab answered the issue create without an iid");
			note_failure(d, error, "creating an issue");
			goto cleanup;
		}
		iid = (long)iid_item->valuedouble;
		snprintf(newmark, sizeof(newmark), "issue=%ld", iid);
		if ((error = spool_mark(d->sp, seq, newmark)) < 0)
			goto cleanup;
		log_info("delivery: submission %s is issue #%ld", f.id, iid);
	}
	if (f.email) {
		int have = 0;

		if (note_uncertain && (error = has_reporter_note(&have, d, iid, f.id)) < 0) {
			note_failure(d, error, "looking for the reporter note");
			goto cleanup;
		}
		if (!have) {
			cJSON_Delete(made);
			made = NULL;
			if ((error = feedback_reporter_note(&note, &f)) < 0)
				goto cleanup;
			snprintf(newmark, sizeof(newmark), "note=%ld", iid);
			if ((error = spool_mark(d->sp, seq, newmark)) < 0)
				goto cleanup;
			if ((error = gitlab_note_create(&made, d->gl, "issues", iid, fbuf_cstr(&note), 1)) < 0) {
				note_failure(d, error, "writing the reporter note");
				if (error == FACTORY_ENOTFOUND)
					error = FACTORY_EINVALID; /* the issue is gone: keep the email in dead/ */
				if ((error = refused(d, seq, data, len, error, "writing the reporter note")) == 0)
					error = spool_ack(d->sp, seq);
				goto cleanup;
			}
			pthread_mutex_lock(&d->mu);
			d->st.notes++;
			pthread_mutex_unlock(&d->mu);
		}
	}
	if ((error = spool_ack(d->sp, seq)) < 0)
		goto cleanup;
	pthread_mutex_lock(&d->mu);
	d->st.delivered++;
	d->st.found += found;
	d->st.retrying = 0;
	pthread_mutex_unlock(&d->mu);
	d->invalid_count = 0;
cleanup:
	cJSON_Delete(fields);
	cJSON_Delete(made);
	fbuf_release(&note);
	feedback_release(&f);
	return error;
}

/* Take the oldest record and deliver it. 0 done, FACTORY_ENOTFOUND when
 * the spool is empty, else the error. */
static int deliver_next(deliverer *d, long wait_ms)
{
	uint64_t seq;
	char *data = NULL, mark[SPOOL_MARK_MAX + 1];
	size_t len;
	int error;

	if ((error = spool_next(&seq, &data, &len, mark, d->sp, wait_ms)) < 0) {
		if (error != FACTORY_ENOTFOUND)
			note_failure(d, error, "reading the spool");
		return error;
	}
	error = deliver_record(d, seq, data, len, mark);
	free(data);
	return error;
}

static long backoff_ms(const deliverer *d, int failures)
{
	long ms = d->o.retry_min_ms;
	int i;

	for (i = 1; i < failures && ms < d->o.retry_max_ms; i++)
		ms *= 2;
	if (ms > d->o.retry_max_ms)
		ms = d->o.retry_max_ms;
	/* jitter: 75% to 100% */
	return ms - (long)((double)ms * 0.25 * ((double)rand() / RAND_MAX));
}

/* Sleep `ms` unless asked to stop. Returns 1 if stopping. */
static int pause_ms(deliverer *d, long ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&d->mu);
	while (!d->stop && pthread_cond_timedwait(&d->cv, &d->mu, &ts) != ETIMEDOUT)
		;
	stop = d->stop;
	pthread_mutex_unlock(&d->mu);
	return stop;
}

static int stopping(deliverer *d)
{
	int stop;

	pthread_mutex_lock(&d->mu);
	stop = d->stop;
	pthread_mutex_unlock(&d->mu);
	return stop;
}

static void *run(void *arg)
{
	deliverer *d = arg;
	int failures = 0;

	/* Below the server's threads: a submission waiting for its 202 comes
	 * before one on its way to GitLab (Linux nices a thread by its id;
	 * lowering one's own priority is always allowed). */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), DELIVER_NICE) < 0)
		log_debug("delivery thread keeps its priority: %s", strerror(errno));

	while (!stopping(d)) {
		int rc = deliver_next(d, 1000);

		if (rc == 0 || rc == FACTORY_ENOTFOUND) {
			failures = 0;
			continue;
		}
		failures++;
		if (pause_ms(d, backoff_ms(d, failures)))
			break;
	}
	return NULL;
}

int deliverer_start(deliverer *d)
{
	int rc = pthread_create(&d->thread, NULL, run, d);

	if (rc)
		return ferror_set(FACTORY_ERR, "cannot start the delivery thread: %s", strerror(rc));
	d->running = 1;
	return 0;
}

void deliverer_stop(deliverer *d)
{
	if (!d->running)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = 1;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	spool_wake(d->sp);
	pthread_join(d->thread, NULL);
	d->running = 0;
}

int deliverer_drain(deliverer *d, int max_failures)
{
	int failures = 0;

	for (;;) {
		int rc = deliver_next(d, 0);

		if (rc == FACTORY_ENOTFOUND)
			return 0;
		if (rc == 0) {
			failures = 0;
			continue;
		}
		if (++failures >= max_failures)
			return rc;
		pause_ms(d, backoff_ms(d, failures));
	}
}

void deliverer_get_stats(deliver_stats *out, deliverer *d)
{
	pthread_mutex_lock(&d->mu);
	*out = d->st;
	pthread_mutex_unlock(&d->mu);
}

int deliverer_status_json(cJSON *parent, deliverer *d)
{
	deliver_stats st;
	cJSON *o;

	deliverer_get_stats(&st, d);
	if (!(o = cJSON_AddObjectToObject(parent, "delivery")) ||
	    !cJSON_AddStringToObject(o, "state", st.retrying ? "retrying" : "ok") ||
	    !cJSON_AddNumberToObject(o, "delivered", (double)st.delivered) ||
	    !cJSON_AddNumberToObject(o, "found_after_retry", (double)st.found) ||
	    !cJSON_AddNumberToObject(o, "notes", (double)st.notes) ||
	    !cJSON_AddNumberToObject(o, "failures", (double)st.failures) ||
	    !cJSON_AddNumberToObject(o, "dead", (double)st.dead) ||
	    (st.retrying && !cJSON_AddStringToObject(o, "last_error", st.last_error)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}
