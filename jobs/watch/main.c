/*
 * factory-watch - read production logs, find the errors customers run into,
 * and file one deduplicated GitLab issue per error fingerprint.
 *
 *   factory-watch [options] [run]  the scheduled run: sources -> records -> error
 *                           fingerprints -> friction, new and rising errors
 *                           -> issues (filed, noted, reopened) in GitLab
 *   factory-watch scan      the same analysis without GitLab: findings as
 *                           JSON lines on standard output
 *   factory-watch templates standard input -> "template_id<TAB>template" per line
 *
 * No state is kept on the runner: what was reported lives in the issues
 * (a hidden fingerprint marker and a state marker with the last event time).
 *
 * With a group scope (--scope group:PATH, common/scope.h) `run` watches
 * each project of the group that names a log source in its settings
 * (watch.source or watch.loki_url, its .factory.yml over the group's) and
 * files the issues in that project; a project with no source is skipped
 * and the report says so. A project's own file may name only http(s)
 * sources: files on the runner and standard input are the group's to name
 * (scope_job.h, "Trust"), and so is watch.rules_file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "job.h"
#include "log.h"
#include "scope_job.h"
#include "watch.h"

#define MAX_FINGERPRINTS 5000
#define MAX_USERS_PER_FP 4096
#define MAX_SOURCES 32

static const job_option options[] = {
        {"source", "watch.source", 1,
         "SPECS    where logs come from: paths or globs (.gz too), '-', http(s) URLs; comma-separated"},
        {"loki-url", "watch.loki_url", 1, "URL      Grafana Loki base URL (query_range)"},
        {"loki-query", "watch.loki_query", 1, "LOGQL    the LogQL query for Loki"},
        {"format", "watch.format", 1, "FORMAT   auto, json, logfmt, pattern or plain (default auto)"},
        {"pattern", "watch.pattern", 1,
         "REGEX    pcre2 line pattern with named groups (time, level, message, user, ...)"},
        {"window", "watch.window", 1, "DURATION the run's window, e.g. 15m (default 15m)"},
        {"baseline", "watch.baseline", 1, "DURATION history before the window used as baseline (default 24h)"},
        {"now", "watch.now", 1, "TIME     the end of the window (default: now), RFC 3339"},
        {"friction-count", "watch.friction_count", 1, "N        events that make friction (default 4)"},
        {"friction-window", "watch.friction_window", 1, "DURATION within this time (default 2m)"},
        {"friction-scope", "watch.friction_scope", 1, "SCOPE    user, route or everyone (default user)"},
        {"max-issues", "watch.max_issues", 1, "N        new issues per run at most (default 20)"},
        {"raw", "watch.raw", 0, "templates: parse each line as a record and template its message"},
        {"scope", "scope", 1,
         "SCOPE    project (default) or group:PATH: run watches each project of the group with a source"},
        {NULL, NULL, 0, NULL},
};

static const job_spec spec = {
        "watch",
        "Read production logs, find the errors customers run into, and file one deduplicated issue per error.",
        "commands (options come before the command):\n"
        "  run        (default) read the sources, detect, file issues in GitLab\n"
        "  scan       the same detection without GitLab: findings as JSON lines\n"
        "  templates  read standard input, write \"template_id<TAB>template\" per line",
        options,
};

/* ------------------------------------------------------------ helpers */

void watch_format_time(char *out, size_t len, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0) {
		snprintf(out, len, "-");
		return;
	}
	gmtime_r(&t, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	         tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int watch_parse_duration(long *ms, const char *s)
{
	char *end;
	double v;

	if (!s || !*s)
		return -1;
	v = strtod(s, &end);
	if (end == s || v < 0)
		return -1;
	if (!strcmp(end, "ms"))
		;
	else if (!*end || !strcmp(end, "s"))
		v *= 1000;
	else if (!strcmp(end, "m"))
		v *= 60e3;
	else if (!strcmp(end, "h"))
		v *= 3600e3;
	else if (!strcmp(end, "d"))
		v *= 86400e3;
	else
		return -1;
	if (v > 366 * 86400e3)
		return -1;
	*ms = (long)v;
	return 0;
}

static int get_duration(long *out, job_ctx *ctx, const char *key, const char *def)
{
	fconfig_source src;
	const char *v = fconfig_get(ctx->cfg, key, &src);

	if (!v)
		v = def;
	if (watch_parse_duration(out, v) < 0 || *out <= 0)
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting %s=%s (from %s): expected a duration such as 90s, 2m, 24h", key, v,
		                  fconfig_source_name(src));
	return 0;
}

/* ---------------------------------------------------------- templates */

typedef struct {
	fbuf msg;
} raw_ctx;

static int keep_message(void *vctx, const log_record *r)
{
	raw_ctx *rc = vctx;

	fbuf_reset(&rc->msg);
	return fbuf_put(&rc->msg, r->message, r->message_len) < 0 ? FACTORY_ENOMEM : 0;
}

/* Each line of standard input is one message (with --raw: one record whose
 * message part is templated); one output line per input line. */
static int cmd_templates(job_ctx *ctx)
{
	logmine *lm = NULL;
	logparse *lp = NULL;
	logmine_match m;
	raw_ctx rc;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int raw = 0, error;

	fbuf_init(&rc.msg, LOGMINE_MAX_LINE + 1);
	if ((error = fconfig_get_bool(&raw, ctx->cfg, "watch.raw", 0)) < 0)
		goto cleanup;
	if ((error = logmine_new(&lm, NULL)) < 0)
		goto cleanup;
	if (raw) {
		logparse_options po;
		logparse_options_init(&po);
		po.pattern = fconfig_get(ctx->cfg, "watch.pattern", NULL);
		if ((error = logparse_new(&lp, &po)) < 0)
			goto cleanup;
	}
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		const char *msg = line;
		size_t len = (size_t)n;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (raw) {
			fbuf_reset(&rc.msg);
			if ((error = logparse_feed(lp, line, len, keep_message, &rc)) != 0 ||
			    (error = logparse_finish(lp, keep_message, &rc)) != 0)
				goto cleanup;
			msg = fbuf_cstr(&rc.msg);
			len = rc.msg.len;
		}
		if ((error = logmine_add(&m, lm, msg, len)) < 0)
			goto cleanup;
		printf("%llu\t%s\n", (unsigned long long)m.cluster_id, m.tmpl);
	}
	if (ferror(stdin)) {
		error = ferror_set(FACTORY_ERR, "cannot read standard input");
		goto cleanup;
	}
	if (fflush(stdout) != 0) {
		error = ferror_set(FACTORY_ERR, "cannot write standard output");
		goto cleanup;
	}
	error = 0;
cleanup:
	free(line);
	fbuf_release(&rc.msg);
	logparse_free(lp);
	logmine_free(lm);
	return error;
}

/* --------------------------------------------------------------- tally */

typedef struct {
	watch_run *run;
	logparse *lp;
	logmine *lm;
	logclass *lc;
	logmine_windows *win;
	uint64_t *map_keys; /* cluster id -> fps index + 1 */
	uint32_t *map_vals;
	size_t map_cap;
	int64_t default_time; /* for the lines of the current chunk (Loki), -1 */
	int scope;            /* 0 user, 1 route, 2 everyone */
	fbuf scratch;
	/* counters */
	uint64_t records, errors, too_old, too_new, untracked, no_scope;
} reader;

static size_t map_slot(const reader *rd, uint64_t id)
{
	size_t i = (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 20) & (rd->map_cap - 1);

	while (rd->map_keys[i] && rd->map_keys[i] != id)
		i = (i + 1) & (rd->map_cap - 1);
	return i;
}

static void set_template(reader *rd, watch_fp *fp, const logmine_match *m)
{
	char *t = strndup(m->tmpl, m->tmpl_len);

	if (!t)
		return; /* keep the old one */
	free(fp->template_text);
	fp->template_text = t;
	memcpy(fp->fingerprint, m->fingerprint, sizeof(fp->fingerprint));
	if (!fp->known)
		fp->known = watch_find_known(rd->run, fp->fingerprint, fp->template_text);
}

/* The tally entry of a record's cluster; NULL when the table is full. */
static watch_fp *fp_for(reader *rd, const logmine_match *m)
{
	watch_run *run = rd->run;
	size_t slot = map_slot(rd, m->cluster_id);
	watch_fp *fp;

	if (rd->map_keys[slot]) {
		fp = &run->fps[rd->map_vals[slot]];
		if (m->changed || m->created)
			set_template(rd, fp, m);
		return fp;
	}
	if (run->nfps >= MAX_FINGERPRINTS)
		return NULL;
	fp = &run->fps[run->nfps];
	memset(fp, 0, sizeof(*fp));
	fp->cluster_id = m->cluster_id;
	fp->first_ms = fp->last_ms = -1;
	set_template(rd, fp, m);
	if (!fp->template_text)
		return NULL;
	rd->map_keys[slot] = m->cluster_id;
	rd->map_vals[slot] = (uint32_t)run->nfps++;
	return fp;
}

/* Add a scope value's hash to a capped open-addressing set. Returns 1 when
 * it was not there. */
static int set_add(uint64_t **set, size_t *n, size_t *cap, int *overflow, uint64_t h)
{
	size_t i;

	if (!h)
		h = 1;
	if ((*n + 1) * 2 > *cap) {
		size_t nc = *cap ? *cap * 2 : 16, j;
		uint64_t *ns;
		if (nc > MAX_USERS_PER_FP * 2) {
			*overflow = 1;
			return 0;
		}
		if (!(ns = calloc(nc, sizeof(*ns))))
			return 0;
		for (j = 0; j < *cap; j++) {
			if ((*set)[j]) {
				size_t k = (size_t)((*set)[j] & (nc - 1));
				while (ns[k])
					k = (k + 1) & (nc - 1);
				ns[k] = (*set)[j];
			}
		}
		free(*set);
		*set = ns;
		*cap = nc;
	}
	i = (size_t)(h & (*cap - 1));
	while ((*set)[i]) {
		if ((*set)[i] == h)
			return 0;
		i = (i + 1) & (*cap - 1);
	}
	(*set)[i] = h;
	(*n)++;
	return 1;
}

static void keep_sample(watch_fp *fp, const log_record *r)
{
	fbuf b;

	if (fp->nsamples >= WATCH_MAX_SAMPLES)
		return;
	fbuf_init(&b, WATCH_SAMPLE_MAX);
	if (fbuf_put(&b, r->raw, r->raw_len < WATCH_SAMPLE_MAX ? r->raw_len : WATCH_SAMPLE_MAX) < 0)
		goto done;
	if (r->detail_len && !r->detail_in_line) { /* a JSON stack field is in the line already */
		size_t room = WATCH_SAMPLE_MAX - b.len;
		if (room > 1) {
			fbuf_putc(&b, '\n');
			room--;
			fbuf_put(&b, r->detail, r->detail_len < room ? r->detail_len : room);
		}
	}
	fp->samples[fp->nsamples] = fbuf_detach(&b);
	if (fp->samples[fp->nsamples])
		fp->nsamples++;
done:
	fbuf_release(&b);
}

static int on_record(void *vctx, const log_record *r)
{
	reader *rd = vctx;
	watch_run *run = rd->run;
	int64_t t = r->time_ms >= 0 ? r->time_ms : rd->default_time >= 0 ? rd->default_time : run->now_ms;
	const logclass_rule *rule = NULL;
	int is_error, fired = 0;
	logmine_match m;
	watch_fp *fp;
	const char *scope_value;
	uint64_t uh;

	rd->records++;
	if (t < run->baseline_start_ms) {
		rd->too_old++;
		return 0;
	}
	if (t > run->now_ms) {
		rd->too_new++; /* after the window: the next run reads it */
		return 0;
	}
	if (t < run->window_start_ms)
		run->baseline_available = 1;
	is_error = r->level >= LOGLEVEL_ERROR || r->status >= 500;
	if (!is_error && (r->level == LOGLEVEL_UNKNOWN || r->level == LOGLEVEL_WARN)) {
		rule = logclass_match(rd->lc, r->message, r->message_len, NULL, 0, r->status);
		is_error = rule && rule->makes_error;
	}
	if (!is_error)
		return 0;
	rd->errors++;
	if (logmine_add(&m, rd->lm, r->message, r->message_len) < 0)
		return FACTORY_ENOMEM;
	if (!(fp = fp_for(rd, &m))) {
		rd->untracked++;
		return 0;
	}
	if (t < run->window_start_ms) {
		fp->baseline++;
		return 0;
	}
	if (fp->known && fp->known->last_seen_ms >= t) {
		fp->skipped++; /* reported by an earlier run */
		return 0;
	}
	if (!fp->rule) {
		fp->rule =
		        rule ? rule
		             : logclass_match(rd->lc, r->message, r->message_len, r->detail, r->detail_len, r->status);
	}
	fp->count++;
	if (fp->first_ms < 0 || t < fp->first_ms)
		fp->first_ms = t;
	if (t > fp->last_ms)
		fp->last_ms = t;
	if (r->level > fp->max_level)
		fp->max_level = r->level;
	if (r->status > fp->max_status)
		fp->max_status = r->status;
	if (!fp->route && r->route[0])
		fp->route = strdup(r->route);
	keep_sample(fp, r);
	if (r->user[0])
		set_add(&fp->users, &fp->nusers, &fp->users_cap, &fp->users_overflow,
		        logmine_hash(r->user, strlen(r->user)));
	/* friction: the same scope value hits the same error count times within the window */
	scope_value = rd->scope == 0 ? r->user : rd->scope == 1 ? r->route : "*";
	if (!scope_value[0]) {
		rd->no_scope++;
		return 0;
	}
	fbuf_reset(&rd->scratch);
	if (fbuf_puts(&rd->scratch, scope_value) < 0 || fbuf_putc(&rd->scratch, '\x1f') < 0 ||
	    fbuf_put(&rd->scratch, &fp->cluster_id, sizeof(fp->cluster_id)) < 0)
		return 0; /* a scope value over the cap: not counted */
	if (logmine_windows_add(&fired, rd->win, rd->scratch.ptr, rd->scratch.len, t) < 0)
		return FACTORY_ENOMEM;
	if (fired) {
		int dummy = 0;
		fp->friction_fires++;
		uh = logmine_hash(scope_value, strlen(scope_value));
		if (set_add(&fp->fired_users, &fp->nfired, &fp->fired_cap, &dummy, uh))
			fp->friction_users++;
	}
	return 0;
}

static int on_chunk(void *vctx, const char *data, size_t len, int64_t default_time)
{
	reader *rd = vctx;

	rd->default_time = default_time;
	return logparse_feed(rd->lp, data, len, on_record, rd);
}

static int on_end(void *vctx)
{
	reader *rd = vctx;
	int rc = logparse_finish(rd->lp, on_record, rd);

	rd->default_time = -1;
	return rc;
}

static void reader_release(reader *rd)
{
	logparse_free(rd->lp);
	logmine_free(rd->lm);
	logclass_free(rd->lc);
	logmine_windows_free(rd->win);
	free(rd->map_keys);
	free(rd->map_vals);
	fbuf_release(&rd->scratch);
}

static void run_release(watch_run *run)
{
	size_t i, k;

	for (i = 0; i < run->nfps; i++) {
		watch_fp *fp = &run->fps[i];
		free(fp->template_text);
		free(fp->users);
		free(fp->fired_users);
		free(fp->route);
		for (k = 0; k < fp->nsamples; k++)
			free(fp->samples[k]);
	}
	free(run->fps);
	watch_known_free(run);
	free(run->source_label);
	free(run->release_tag);
	free(run->release_url);
	free(run->release_issues);
}

/* ------------------------------------------------------------ settings */

static int load_settings(watch_run *run, reader *rd, job_ctx *ctx)
{
	const char *now = fconfig_get(ctx->cfg, "watch.now", NULL);
	const char *friction = fconfig_get_str(ctx->cfg, "watch.friction_scope", "user");
	const char *format = fconfig_get_str(ctx->cfg, "watch.format", "auto");
	long window_ms = 0, baseline_ms = 0, count = 0, max_clusters = 0;
	const cJSON *rules;
	cJSON *file_rules = NULL;
	const char *rules_file;
	logparse_options po;
	logmine_options mo;
	int error, defaults = 1;

	memset(rd, 0, sizeof(*rd));
	rd->run = run;
	rd->default_time = -1;
	fbuf_init(&rd->scratch, 4096);
	if (now) {
		if (logparse_time(&run->now_ms, now, strlen(now)) < 0)
			return ferror_set(FACTORY_ECONFIG, "bad setting watch.now=%s: expected an RFC 3339 time", now);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		run->now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	}
	if ((error = get_duration(&window_ms, ctx, "watch.window", "15m")) < 0 ||
	    (error = get_duration(&baseline_ms, ctx, "watch.baseline", "24h")) < 0 ||
	    (error = get_duration(&run->friction_window_ms, ctx, "watch.friction_window", "2m")) < 0)
		return error;
	run->window_start_ms = run->now_ms - window_ms;
	run->baseline_start_ms = run->window_start_ms - baseline_ms;
	if ((error = fconfig_get_long(&count, ctx->cfg, "watch.friction_count", 4, 1, 1000)) < 0 ||
	    (error = fconfig_get_long(&run->max_issues, ctx->cfg, "watch.max_issues", 20, 0, 1000)) < 0 ||
	    (error = fconfig_get_long(&run->max_notes, ctx->cfg, "watch.max_notes", 100, 0, 10000)) < 0 ||
	    (error = fconfig_get_long(&run->reopen_days, ctx->cfg, "watch.reopen_days", 14, 0, 3650)) < 0 ||
	    (error = fconfig_get_long(&run->rate_jump_min, ctx->cfg, "watch.rate_jump_min", 10, 1, 100000000)) < 0 ||
	    (error = fconfig_get_bool(&run->new_fingerprints, ctx->cfg, "watch.new_fingerprints", 1)) < 0 ||
	    (error = fconfig_get_long(&max_clusters, ctx->cfg, "watch.max_templates", 50000, 100, 10000000)) < 0)
		return error;
	{
		long factor;
		if ((error = fconfig_get_long(&factor, ctx->cfg, "watch.rate_jump_factor", 5, 2, 10000)) < 0)
			return error;
		run->rate_jump_factor = (double)factor;
	}
	run->friction_count = (int)count;
	if (!strcmp(friction, "user"))
		rd->scope = 0;
	else if (!strcmp(friction, "route"))
		rd->scope = 1;
	else if (!strcmp(friction, "everyone"))
		rd->scope = 2;
	else
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting watch.friction_scope=%s: expected user, route or everyone", friction);
	run->friction_scope = friction;
	run->query_link = fconfig_get(ctx->cfg, "watch.query_link", NULL);

	logparse_options_init(&po);
	if (!strcmp(format, "auto"))
		po.format = LOGPARSE_AUTO;
	else if (!strcmp(format, "json"))
		po.format = LOGPARSE_JSON;
	else if (!strcmp(format, "logfmt"))
		po.format = LOGPARSE_LOGFMT;
	else if (!strcmp(format, "pattern"))
		po.format = LOGPARSE_PATTERN;
	else if (!strcmp(format, "plain"))
		po.format = LOGPARSE_PLAIN;
	else
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting watch.format=%s: expected auto, json, logfmt, pattern or plain", format);
	po.pattern = fconfig_get(ctx->cfg, "watch.pattern", NULL);
	po.time_fields = fconfig_get(ctx->cfg, "watch.fields.time", NULL);
	po.level_fields = fconfig_get(ctx->cfg, "watch.fields.level", NULL);
	po.message_fields = fconfig_get(ctx->cfg, "watch.fields.message", NULL);
	po.user_fields = fconfig_get(ctx->cfg, "watch.fields.user", NULL);
	po.request_fields = fconfig_get(ctx->cfg, "watch.fields.request", NULL);
	po.route_fields = fconfig_get(ctx->cfg, "watch.fields.route", NULL);
	po.status_fields = fconfig_get(ctx->cfg, "watch.fields.status", NULL);
	if ((error = logparse_new(&rd->lp, &po)) < 0)
		return error;

	logmine_options_init(&mo);
	mo.max_clusters = (size_t)max_clusters;
	if ((error = logmine_new(&rd->lm, &mo)) < 0)
		return error;
	if ((error = logmine_windows_new(&rd->win, run->friction_count, run->friction_window_ms, 1 << 16)) < 0)
		return error;

	/* classification rules: the project's (config or file) first, then the defaults */
	rules = fconfig_yaml_path(ctx->cfg, "watch.rules");
	rules_file = fconfig_get(ctx->cfg, "watch.rules_file", NULL);
	if (rules_file) {
		FILE *f = fopen(rules_file, "r");
		fbuf text;
		char buf[8192];
		size_t n;
		if (!f)
			return ferror_set(FACTORY_ECONFIG, "cannot read watch.rules_file %s", rules_file);
		fbuf_init(&text, 1 << 20);
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			if (fbuf_put(&text, buf, n) < 0) {
				fclose(f);
				fbuf_release(&text);
				return ferror_set(FACTORY_ECONFIG, "watch.rules_file %s is over 1 MiB", rules_file);
			}
		fclose(f);
		error = fconfig_yaml_to_json(&file_rules, fbuf_cstr(&text), text.len, rules_file);
		fbuf_release(&text);
		if (error < 0)
			return error;
		rules = file_rules;
	}
	if ((error = fconfig_get_bool(&defaults, ctx->cfg, "watch.default_rules", 1)) < 0 ||
	    (error = logclass_new(&rd->lc, rules, defaults)) < 0) {
		cJSON_Delete(file_rules);
		return error;
	}
	cJSON_Delete(file_rules);

	rd->map_cap = 1;
	while (rd->map_cap < MAX_FINGERPRINTS * 4)
		rd->map_cap <<= 1;
	if (!(rd->map_keys = calloc(rd->map_cap, sizeof(*rd->map_keys))) ||
	    !(rd->map_vals = calloc(rd->map_cap, sizeof(*rd->map_vals))) ||
	    !(run->fps = calloc(MAX_FINGERPRINTS, sizeof(*run->fps))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

/* Read every configured source through the reader. */
static int read_sources(watch_run *run, reader *rd, job_ctx *ctx)
{
	const char *specs = fconfig_get(ctx->cfg, "watch.source", NULL);
	const char *loki = fconfig_get(ctx->cfg, "watch.loki_url", NULL);
	http_options http;
	watch_source src;
	long max_mb, limit;
	char *list = NULL, *save = NULL, *tok, *p;
	int n = 0, error = 0;
	fbuf label;

	fbuf_init(&label, 4096);
	http_options_init(&http);
	if ((error = fconfig_get_long(&http.timeout_ms, ctx->cfg, "http.timeout_ms", 60000, 100, 3600000)) < 0 ||
	    (error = fconfig_get_long(&max_mb, ctx->cfg, "watch.max_mb", 0, 0, 1000000)) < 0 ||
	    (error = fconfig_get_long(&limit, ctx->cfg, "watch.loki_limit", 5000, 1, 100000)) < 0)
		goto cleanup;
	if (!specs && !loki) {
		error = ferror_set(FACTORY_ECONFIG,
		                   "missing setting watch.source (set FACTORY_WATCH_SOURCE or --source), "
		                   "or watch.loki_url");
		goto cleanup;
	}
	memset(&src, 0, sizeof(src));
	src.max_bytes = (size_t)max_mb << 20;
	src.start_ms = run->baseline_start_ms;
	src.end_ms = run->now_ms;
	src.loki_limit = limit;
	if (specs) {
		if (!(list = strdup(specs))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		for (p = list; (tok = strtok_r(p, ",", &save)); p = NULL) {
			while (*tok == ' ')
				tok++;
			if (!*tok)
				continue;
			if (++n > MAX_SOURCES) {
				error = ferror_set(FACTORY_ECONFIG, "watch.source: more than %d sources", MAX_SOURCES);
				goto cleanup;
			}
			src.spec = tok;
			log_info("reading %s", tok);
			if ((error = watch_read_source(&src, &http, on_chunk, on_end, rd)) != 0)
				goto cleanup;
			fbuf_printf(&label, "%s%s", label.len ? ", " : "", tok);
		}
	}
	if (loki) {
		src.spec = loki;
		src.loki_url = loki;
		src.loki_query = fconfig_get(ctx->cfg, "watch.loki_query", NULL);
		run->loki_query = src.loki_query;
		log_info("querying Loki at %s", loki);
		if ((error = watch_read_source(&src, &http, on_chunk, on_end, rd)) != 0)
			goto cleanup;
		fbuf_printf(&label, "%sLoki %s", label.len ? ", " : "", src.loki_query ? src.loki_query : "");
	}
	if (label.len)
		run->source_label = fbuf_detach(&label); /* NULL on ENOMEM: the issue just lacks the line */
cleanup:
	free(list);
	fbuf_release(&label);
	return error;
}

/* --------------------------------------------------------------- output */

static void log_counts(job_ctx *ctx, const reader *rd)
{
	logparse_stats ps;
	logmine_stats ms;

	logparse_get_stats(&ps, rd->lp);
	logmine_get_stats(&ms, rd->lm);
	log_info("%llu lines, %llu records, %llu errors in %zu fingerprints (%llu before the baseline, %llu after now)",
	         (unsigned long long)ps.lines, (unsigned long long)rd->records, (unsigned long long)rd->errors,
	         rd->run->nfps, (unsigned long long)rd->too_old, (unsigned long long)rd->too_new);
	if (ps.truncated_lines)
		log_warn("%llu lines longer than the line cap were cut", (unsigned long long)ps.truncated_lines);
	if (rd->untracked)
		log_warn("%llu errors of templates past the %d tracked were not counted",
		         (unsigned long long)rd->untracked, MAX_FINGERPRINTS);
	report_counter_set(ctx->rep, "lines", (long)ps.lines);
	report_counter_set(ctx->rep, "records", (long)rd->records);
	report_counter_set(ctx->rep, "errors", (long)rd->errors);
	report_counter_set(ctx->rep, "fingerprints", (long)rd->run->nfps);
	report_counter_set(ctx->rep, "templates", (long)ms.clusters);
	report_counter_set(ctx->rep, "joined_lines", (long)ps.joined_lines);
}

/* `s` with invalid UTF-8 sequences replaced by U+FFFD (JSON output must
 * be valid UTF-8, and a template is made of log bytes). */
static int utf8_valid_copy(fbuf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
		size_t k;
		int ok = n > 0;
		for (k = 1; ok && k < n; k++)
			ok = (p[k] & 0xc0) == 0x80;
		if (ok && n == 2 && *p < 0xc2)
			ok = 0; /* overlong */
		if (!ok) {
			if (fbuf_puts(out, "\xef\xbf\xbd") < 0)
				return FACTORY_ENOMEM;
			p++;
			continue;
		}
		if (fbuf_put(out, p, n) < 0)
			return FACTORY_ENOMEM;
		p += n;
	}
	return 0;
}

/* scan: one JSON object per fingerprint with events in the window. */
static int print_findings(const watch_run *run)
{
	size_t i;

	for (i = 0; i < run->nfps; i++) {
		const watch_fp *fp = &run->fps[i];
		watch_assessment a;
		cJSON *o;
		char *text, first[40], last[40];

		if (!fp->count)
			continue;
		watch_assess(&a, run, fp);
		watch_format_time(first, sizeof(first), fp->first_ms);
		watch_format_time(last, sizeof(last), fp->last_ms);
		if (!(o = cJSON_CreateObject()))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		cJSON_AddStringToObject(o, "fingerprint", fp->fingerprint);
		{
			fbuf t;
			fbuf_init(&t, LOGMINE_MAX_LINE * 4);
			utf8_valid_copy(&t, fp->template_text);
			cJSON_AddStringToObject(o, "template", fbuf_cstr(&t));
			fbuf_release(&t);
		}
		cJSON_AddStringToObject(o, "class", fp->rule ? fp->rule->name : "error");
		cJSON_AddNumberToObject(o, "severity", a.severity);
		cJSON_AddNumberToObject(o, "count", (double)fp->count);
		cJSON_AddNumberToObject(o, "baseline", (double)fp->baseline);
		cJSON_AddNumberToObject(o, "users", (double)fp->nusers);
		cJSON_AddNumberToObject(o, "friction_users", (double)fp->friction_users);
		cJSON_AddBoolToObject(o, "friction", a.friction);
		cJSON_AddBoolToObject(o, "new", a.is_new);
		cJSON_AddBoolToObject(o, "rate_jump", a.rate_jump);
		cJSON_AddStringToObject(o, "first_seen", first);
		cJSON_AddStringToObject(o, "last_seen", last);
		cJSON_AddStringToObject(o, "action", a.file ? "file" : "none");
		text = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		if (!text)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		{
			char *masked = log_mask_dup(text);
			printf("%s\n", masked ? masked : "");
			free(masked);
		}
		free(text);
	}
	return fflush(stdout) == 0 ? 0 : ferror_set(FACTORY_ERR, "cannot write standard output");
}

/* ------------------------------------------------------------------ run */

/* One project's run. In a group scope (`in_group`) the client is connected
 * already, and a log source that cannot be reached fails this project only
 * (FACTORY_ERR), where GitLab unavailable (FACTORY_EUPSTREAM) stops the walk. */
static int run_one(job_ctx *ctx, int with_gitlab, int in_group)
{
	watch_run run;
	reader rd;
	int error;

	memset(&run, 0, sizeof(run));
	if ((error = load_settings(&run, &rd, ctx)) < 0)
		goto cleanup;
	if (with_gitlab) {
		if (!in_group && (error = job_connect(ctx)) < 0)
			goto cleanup;
		if ((error = watch_load_known(&run, ctx)) < 0)
			goto cleanup;
		watch_load_release(&run, ctx);
	}
	if ((error = read_sources(&run, &rd, ctx)) != 0) {
		if (in_group && error == FACTORY_EUPSTREAM) {
			char message[1024];
			snprintf(message, sizeof(message), "%s", ferror_last());
			error = ferror_set(FACTORY_ERR, "its log source is unavailable: %s", message);
		}
		goto cleanup;
	}
	log_counts(ctx, &rd);
	if (!run.baseline_available)
		log_info("no record older than the window: new and rising errors are not judged this run");
	if (with_gitlab) {
		error = watch_file_all(&run, ctx);
		/* the API budget: calls per issue filed or updated (job.h) */
		report_counter_set(ctx->rep, "issues_handled",
		                   report_counter_get(ctx->rep, "issues_filed") +
		                           report_counter_get(ctx->rep, "issues_noted"));
	} else {
		error = print_findings(&run);
	}
cleanup:
	reader_release(&rd);
	run_release(&run);
	return error;
}

/* Whether a project's own sources are ones it may name (see the top). */
static int check_trust(job_ctx *pctx, const scope_project *p, job_ctx *group)
{
	const char *specs = fconfig_get(pctx->cfg, "watch.source", NULL);
	char *list = NULL, *save = NULL, *tok, *s;
	int error = 0;

	if (!scope_job_same(pctx, group, "watch.rules_file"))
		return ferror_set(FACTORY_ECONFIG,
		                  "%s/" SCOPE_PROJECT_FILE ": watch.rules_file names a file on the runner: in a group "
		                  "scope only the group's settings may (put the rules in watch.rules)",
		                  p->path);
	if (!specs)
		return 0;
	if (!(list = strdup(specs)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (s = list; (tok = strtok_r(s, ",", &save)); s = NULL) {
		while (*tok == ' ')
			tok++;
		if (!*tok)
			continue;
		if (!strcmp(tok, "-")) {
			error = ferror_set(FACTORY_ECONFIG,
			                   "%s: watch.source: standard input cannot be read for each "
			                   "project of a group",
			                   p->path);
			break;
		}
		if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0 &&
		    !scope_job_same(pctx, group, "watch.source")) {
			error = ferror_set(FACTORY_ECONFIG,
			                   "%s/" SCOPE_PROJECT_FILE
			                   ": watch.source: %s is not an http(s) URL: in a group "
			                   "scope files on the runner are the group's to name",
			                   p->path, tok);
			break;
		}
	}
	free(list);
	return error;
}

static int group_project(job_ctx *pctx, const scope_project *p, job_ctx *group, void *arg)
{
	int error;

	(void)arg;
	if (!fconfig_get(pctx->cfg, "watch.source", NULL) && !fconfig_get(pctx->cfg, "watch.loki_url", NULL)) {
		log_info("project %s names no log source (watch.source, watch.loki_url): skipped", p->path);
		report_counter_set(pctx->rep, "skipped_no_source", 1);
		report_summary(pctx->rep, "no log source (watch.source or watch.loki_url): not watched");
		return 0;
	}
	if ((error = check_trust(pctx, p, group)) < 0)
		return error;
	report_counter_set(pctx->rep, "watched", 1);
	return run_one(pctx, 1, 1);
}

/* run and scan: the job's project, or each project of a group (run only). */
static int cmd_run(job_ctx *ctx, int with_gitlab)
{
	char *group = NULL;
	int error;

	if (!with_gitlab)
		return run_one(ctx, 0, 0);
	if ((error = scope_group_from_config(&group, ctx->cfg)) < 0)
		return error;
	if (!group)
		return run_one(ctx, 1, 0);
	if ((error = job_connect(ctx)) == 0)
		error = scope_job_run(ctx, group, group_project, NULL);
	report_summary(ctx->rep,
	               "%sgroup %s: %ld of %ld projects watched (%ld with no log source)%s, %ld issue%s filed, "
	               "%ld noted",
	               ctx->dry_run ? "dry run: " : "", group, report_counter_get(ctx->rep, "watched"),
	               report_counter_get(ctx->rep, "projects"), report_counter_get(ctx->rep, "skipped_no_source"),
	               report_counter_get(ctx->rep, "projects_failed") ? ", some failed" : "",
	               report_counter_get(ctx->rep, "issues_filed"),
	               report_counter_get(ctx->rep, "issues_filed") == 1 ? "" : "s",
	               report_counter_get(ctx->rep, "issues_noted"));
	free(group);
	return error;
}

int main(int argc, char **argv)
{
	job_ctx ctx;
	int rc = job_start(&ctx, &spec, argc, argv);
	const char *cmd;

	if (rc != JOB_CONTINUE)
		return rc;
	cmd = ctx.nargs > 0 ? ctx.args[0] : "run";
	if (ctx.nargs > 1)
		return job_finish(&ctx,
		                  ferror_set(FACTORY_ECONFIG, "unexpected argument '%s' (see --help)", ctx.args[1]));
	if (!strcmp(cmd, "templates"))
		rc = cmd_templates(&ctx);
	else if (!strcmp(cmd, "scan"))
		rc = cmd_run(&ctx, 0);
	else if (!strcmp(cmd, "run"))
		rc = cmd_run(&ctx, 1);
	else
		rc = ferror_set(FACTORY_ECONFIG, "unknown command '%s' (templates, scan or run; see --help)", cmd);
	return job_finish(&ctx, rc);
}
