/* filing.c - factory-watch's issues: find the one that carries a
 * fingerprint, file a new one, note a re-occurrence, reopen a recent one.
 *
 * The state lives in GitLab, in hidden markers of the issue description:
 *   <!-- factory:fingerprint=0123456789abcdef -->
 *   <!-- factory:template=<hex of the redacted template> -->
 *   <!-- factory:watch-state last_seen=2026-11-27T10:00:00.000Z total=12 -->
 * Events at or before last_seen were reported already; a run over an
 * overlapping window skips them, so nothing is counted twice.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gitlab.h"
#include "log.h"
#include "untrusted.h"
#include "watch.h"
#include "json.h"

#define MARK_FP "<!-- factory:fingerprint="
#define MARK_TMPL "<!-- factory:template="
#define MARK_STATE "<!-- factory:watch-state "
#define LABEL_QUERY "labels=source%3A%3Afactory"
#define MAX_KNOWN 10000
#define TITLE_MAX 160
#define TEMPLATE_MAX 2048

/* ------------------------------------------------------------ markers */

static int hex_encode(fbuf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++)
		if (fbuf_putc(out, hex[(unsigned char)s[i] >> 4]) < 0 ||
		    fbuf_putc(out, hex[(unsigned char)s[i] & 15]) < 0)
			return FACTORY_ENOMEM;
	return 0;
}

static char *hex_decode(const char *s, size_t n)
{
	char *out;
	size_t i;

	if (n % 2 || !(out = malloc(n / 2 + 1)))
		return NULL;
	for (i = 0; i < n / 2; i++) {
		int hi = (unsigned char)s[2 * i], lo = (unsigned char)s[2 * i + 1];
		hi = hi >= 'a' ? hi - 'a' + 10 : hi - '0';
		lo = lo >= 'a' ? lo - 'a' + 10 : lo - '0';
		if (hi < 0 || hi > 15 || lo < 0 || lo > 15) {
			free(out);
			return NULL;
		}
		out[i] = (char)(hi * 16 + lo);
	}
	out[n / 2] = '\0';
	return out;
}

/* The value after `marker` up to " -->" or a blank, copied into out. */
static int marker_value(char *out, size_t len, const char *text, const char *marker)
{
	const char *p = strstr(text, marker), *e;
	size_t n;

	if (!p)
		return -1;
	p += strlen(marker);
	e = p;
	while (*e && *e != ' ' && *e != '\n' && *e != '-')
		e++;
	n = (size_t)(e - p);
	if (n >= len)
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

/* The redacted template, as it is recorded in an issue. */
static char *redacted_template(const char *tmpl)
{
	fbuf b;
	size_t n = strlen(tmpl);

	fbuf_init(&b, TEMPLATE_MAX * 4);
	if (untrusted_redact(&b, tmpl, n < TEMPLATE_MAX ? n : TEMPLATE_MAX) < 0) {
		fbuf_release(&b);
		return NULL;
	}
	return fbuf_detach(&b);
}

/* ----------------------------------------------------------- known issues */

typedef struct {
	watch_run *run;
	int closed;
} load_ctx;

static int add_known(void *vctx, const cJSON *issue)
{
	load_ctx *lc = vctx;
	watch_run *run = lc->run;
	const char *desc = json_str(issue, "description"), *closed_at = json_str(issue, "closed_at");
	const cJSON *iid = cJSON_GetObjectItemCaseSensitive(issue, "iid");
	watch_known *k;
	char fp[17], buf[40], hexbuf[TEMPLATE_MAX * 2 + 1] = "";
	size_t i;

	if (!desc || !cJSON_IsNumber(iid) || marker_value(fp, sizeof(fp), desc, MARK_FP) < 0 || strlen(fp) != 16)
		return 0;
	for (i = 0; i < run->nknown; i++)
		if (!strcmp(run->known[i].fingerprint, fp))
			return 0; /* open issues are read first and win */
	if (run->nknown >= MAX_KNOWN)
		return 0;
	if (run->nknown % 64 == 0) {
		watch_known *nk = realloc(run->known, (run->nknown + 64) * sizeof(*nk));
		if (!nk)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		run->known = nk;
	}
	k = &run->known[run->nknown];
	memset(k, 0, sizeof(*k));
	k->iid = (long)iid->valuedouble;
	k->closed = lc->closed || (json_str(issue, "state") && !strcmp(json_str(issue, "state"), "closed"));
	k->closed_at_ms = -1;
	k->last_seen_ms = -1;
	memcpy(k->fingerprint, fp, sizeof(fp));
	if (closed_at && logparse_time(&k->closed_at_ms, closed_at, strlen(closed_at)) < 0)
		k->closed_at_ms = -1;
	{
		const char *st = strstr(desc, MARK_STATE), *p, *e;
		if (st && (p = strstr(st, "last_seen=")) && (e = strchr(p + 10, ' ')) &&
		    (size_t)(e - p - 10) < sizeof(buf)) {
			memcpy(buf, p + 10, (size_t)(e - p - 10));
			buf[e - p - 10] = '\0';
			if (logparse_time(&k->last_seen_ms, buf, strlen(buf)) < 0)
				k->last_seen_ms = -1;
		}
		if (st && (p = strstr(st, "total=")))
			k->total = strtoull(p + 6, NULL, 10);
	}
	if (marker_value(hexbuf, sizeof(hexbuf), desc, MARK_TMPL) == 0)
		k->template_text = hex_decode(hexbuf, strlen(hexbuf));
	k->description = strdup(desc);
	if (json_str(issue, "web_url"))
		k->web_url = strdup(json_str(issue, "web_url"));
	if (!k->description)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	run->nknown++;
	return 0;
}

int watch_load_known(watch_run *run, job_ctx *ctx)
{
	load_ctx lc = {run, 0};
	char since[40], query[160];
	int error;

	log_section_start("factory_watch_known", "issues that carry fingerprints", 1);
	if ((error = gitlab_list_each(ctx->gl, "projects/:id/issues", "state=opened&" LABEL_QUERY, NULL, MAX_KNOWN,
	                              add_known, &lc)) < 0)
		goto done;
	lc.closed = 1;
	watch_format_time(since, sizeof(since), run->now_ms - run->reopen_days * 86400000LL);
	snprintf(query, sizeof(query), "state=closed&%s&updated_after=%s", LABEL_QUERY, since);
	if (run->reopen_days > 0 &&
	    (error = gitlab_list_each(ctx->gl, "projects/:id/issues", query, NULL, MAX_KNOWN, add_known, &lc)) < 0)
		goto done;
	log_info("%zu issues carry fingerprints (open, or closed since %s)", run->nknown, since);
	error = 0;
done:
	log_section_end("factory_watch_known");
	return error;
}

void watch_known_free(watch_run *run)
{
	size_t i;

	for (i = 0; i < run->nknown; i++) {
		free(run->known[i].template_text);
		free(run->known[i].description);
		free(run->known[i].web_url);
	}
	free(run->known);
	run->known = NULL;
	run->nknown = 0;
}

/* Two templates name the same error when they have the same tokens where
 * both are constant, differ only where one has a wildcard, and share at
 * least half their tokens. */
static int templates_compatible(const char *a, const char *b)
{
	size_t same = 0, n = 0;

	while (*a || *b) {
		size_t la = strcspn(a, " "), lb = strcspn(b, " ");
		int wa = la == 3 && !memcmp(a, LOGMINE_WILDCARD, 3), wb = lb == 3 && !memcmp(b, LOGMINE_WILDCARD, 3);
		if (!*a || !*b)
			return 0; /* token counts differ */
		if (la == lb && !memcmp(a, b, la))
			same += !wa;
		else if (!wa && !wb)
			return 0;
		n++;
		a += la + (a[la] == ' ');
		b += lb + (b[lb] == ' ');
	}
	return n > 0 && same * 2 >= n;
}

watch_known *watch_find_known(watch_run *run, const char *fingerprint, const char *tmpl)
{
	char *red = NULL;
	watch_known *found = NULL;
	size_t i;

	for (i = 0; i < run->nknown; i++)
		if (!strcmp(run->known[i].fingerprint, fingerprint))
			return &run->known[i];
	for (i = 0; i < run->nknown && !found; i++) {
		if (!run->known[i].template_text)
			continue;
		if (!red && !(red = redacted_template(tmpl)))
			return NULL;
		if (templates_compatible(run->known[i].template_text, red))
			found = &run->known[i];
	}
	free(red);
	return found;
}

/* ----------------------------------------------------------- release */

int watch_load_release(watch_run *run, job_ctx *ctx)
{
	cJSON *rels = NULL;
	const cJSON *r, *links;
	const char *at, *desc;
	fbuf refs;

	if (gitlab_request(&rels, ctx->gl, "GET", NULL, "projects/:id/releases?per_page=1") < 0) {
		log_debug("no release read: %s", ferror_last());
		ferror_clear();
		return 0;
	}
	r = cJSON_GetArrayItem(rels, 0);
	at = json_str(r, "released_at");
	if (!r || !json_str(r, "tag_name") || !at || logparse_time(&run->release_at_ms, at, strlen(at)) < 0) {
		cJSON_Delete(rels);
		return 0;
	}
	run->release_tag = strdup(json_str(r, "tag_name"));
	links = cJSON_GetObjectItemCaseSensitive(r, "_links");
	if (json_str(links, "self"))
		run->release_url = strdup(json_str(links, "self"));
	/* the issues it shipped: #123 references in its notes */
	desc = json_str(r, "description");
	fbuf_init(&refs, 1024);
	if (desc) {
		const char *p = desc;
		int n = 0;
		while ((p = strchr(p, '#')) && n < 20) {
			char *end;
			long iid = strtol(p + 1, &end, 10);
			if (end > p + 1 && iid > 0 && (p == desc || p[-1] == ' ' || p[-1] == '(' || p[-1] == '\n')) {
				fbuf_printf(&refs, "%s#%ld", n ? ", " : "", iid);
				n++;
			}
			p = end > p + 1 ? end : p + 1;
		}
	}
	if (refs.len)
		run->release_issues = fbuf_detach(&refs);
	fbuf_release(&refs);
	cJSON_Delete(rels);
	return 0;
}

/* ------------------------------------------------------------- assess */

void watch_assess(watch_assessment *a, const watch_run *run, const watch_fp *fp)
{
	long window_ms = (long)(run->now_ms - run->window_start_ms);
	long base_ms = (long)(run->window_start_ms - run->baseline_start_ms);
	double expected = base_ms > 0 ? (double)fp->baseline * (double)window_ms / (double)base_ms : 0;
	int sev = fp->rule ? fp->rule->severity : 3;
	size_t len = 0;

	memset(a, 0, sizeof(*a));
	a->friction = fp->friction_fires > 0;
	a->is_new = run->baseline_available && run->new_fingerprints && fp->baseline == 0 && fp->count > 0;
	a->rate_jump = run->baseline_available && fp->baseline > 0 && (long)fp->count >= run->rate_jump_min &&
	               (double)fp->count >= run->rate_jump_factor * (expected > 1 ? expected : 1);
	a->file = a->friction || a->is_new || a->rate_jump;

#define REASON(...)                                                                                                    \
	do {                                                                                                           \
		if (len < sizeof(a->reasons))                                                                          \
			len += (size_t)snprintf(a->reasons + len, sizeof(a->reasons) - len, __VA_ARGS__);              \
	} while (0)
	if (fp->rule)
		REASON("- class **%s**: severity %d by default\n", fp->rule->name, fp->rule->severity);
	else
		REASON("- an error of no known class: severity 3 by default\n");
	if (fp->max_level >= LOGLEVEL_FATAL && sev > 1) {
		sev = 1;
		REASON("- logged at fatal level: severity 1\n");
	}
	if (a->friction && sev > 1) {
		sev--;
		REASON("- customers hit it repeatedly (%zu user%s %d times within %lds): one step more severe\n",
		       fp->friction_users, fp->friction_users == 1 ? "" : "s", run->friction_count,
		       run->friction_window_ms / 1000);
	}
	if (fp->nusers >= 10 && sev > 1) {
		sev--;
		REASON("- %zu%s users affected: one step more severe\n", fp->nusers, fp->users_overflow ? "+" : "");
	}
	if (a->rate_jump)
		REASON("- %llu events against about %.1f expected from the baseline\n", (unsigned long long)fp->count,
		       expected);
	if (a->is_new)
		REASON("- first seen in this window (not in the %ld h before it)\n", base_ms / 3600000);
#undef REASON
	a->severity = sev;
}

/* ------------------------------------------------------------- writing */

/* A code fence longer than any run of backticks in the text. */
static void fence_for(char *out, size_t len, const char *text)
{
	size_t run = 0, best = 0, i;

	for (; *text; text++) {
		run = *text == '`' ? run + 1 : 0;
		if (run > best)
			best = run;
	}
	best = best < 3 ? 3 : best + 1;
	if (best >= len)
		best = len - 1;
	for (i = 0; i < best; i++)
		out[i] = '`';
	out[best] = '\0';
}

/* Append outside text as inline code inside a line (a table cell):
 * cleaned, one line, no backtick or pipe that could end the span or cell. */
static int put_inline(fbuf *b, const char *text, size_t max, int in_table)
{
	fbuf t;
	size_t i;
	int error;

	fbuf_init(&t, max * 4 + 64);
	untrusted_title(&t, text, strlen(text), max);
	for (i = 0; i < t.len; i++)
		if (t.ptr[i] == '`' || (in_table && t.ptr[i] == '|'))
			t.ptr[i] = '\'';
	/* a leading "\/" is only there against quick actions at a line start */
	error = fbuf_printf(b, "`%s`", t.len > 1 && t.ptr[0] == '\\' && t.ptr[1] == '/' ? t.ptr + 1 : fbuf_cstr(&t));
	fbuf_release(&t);
	return error;
}

/* Append cleaned (redacted, neutralised) text in a code block. */
static int put_code(fbuf *b, const char *text)
{
	fbuf clean;
	char fence[64];
	int error;

	fbuf_init(&clean, 64 << 10);
	if ((error = untrusted_clean(&clean, text, strlen(text))) < 0 && error != FACTORY_ETOOBIG)
		goto done;
	fence_for(fence, sizeof(fence), fbuf_cstr(&clean));
	error = fbuf_printf(b, "%stext\n%s\n%s\n", fence, fbuf_cstr(&clean), fence);
done:
	fbuf_release(&clean);
	return error < 0 ? error : 0;
}

static int put_samples(fbuf *b, const watch_fp *fp, size_t max)
{
	size_t i;
	int error;

	for (i = 0; i < fp->nsamples && i < max; i++)
		if ((error = put_code(b, fp->samples[i])) < 0)
			return error;
	return 0;
}

static int put_state_markers(fbuf *b, const watch_fp *fp, const char *fingerprint, int64_t last_seen, uint64_t total)
{
	char t[40];
	char *red = redacted_template(fp->template_text);
	int error;

	watch_format_time(t, sizeof(t), last_seen);
	if (!red)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	error = fbuf_printf(b, MARK_FP "%s -->\n" MARK_TMPL, fingerprint);
	if (!error)
		error = hex_encode(b, red, strlen(red));
	if (!error)
		error = fbuf_printf(b, " -->\n" MARK_STATE "last_seen=%s total=%llu -->\n", t,
		                    (unsigned long long)total);
	free(red);
	return error;
}

/* The longest run of constant tokens of a template (to search the logs
 * with), without quotes or backslashes. */
static void constant_words(char *out, size_t len, const char *tmpl)
{
	const char *p = tmpl, *best = tmpl, *run = tmpl;
	size_t best_len = 0, i, n = 0;

	for (;;) {
		size_t tl = strcspn(p, " ");
		int wild = memmem(p, tl, LOGMINE_WILDCARD, 3) != NULL;
		if (wild || !p[tl]) {
			const char *end = wild ? p : p + tl;
			while (end > run && end[-1] == ' ')
				end--;
			if ((size_t)(end - run) > best_len) {
				best = run;
				best_len = (size_t)(end - run);
			}
			if (!p[tl])
				break;
			run = p + tl + 1;
		}
		p += tl + 1;
	}
	for (i = 0; i < best_len && n + 1 < len && n < 80; i++)
		if (best[i] != '"' && best[i] != '\\' && best[i] != '`')
			out[n++] = best[i];
	out[n] = '\0';
}

static int build_description(fbuf *b, const watch_run *run, const watch_fp *fp, const watch_assessment *a)
{
	char first[40], last[40], filter[128];
	int error = 0;

	watch_format_time(first, sizeof(first), fp->first_ms);
	watch_format_time(last, sizeof(last), fp->last_ms);
	if ((error = put_state_markers(b, fp, fp->fingerprint, fp->last_ms, fp->count)) < 0)
		return error;
	fbuf_printf(b, "\n## What customers run into\n\nfactory-watch found this error in the production logs");
	{
		const char *sep = ": ";
		if (a->friction) {
			fbuf_printf(b, "%s%zu customer%s hit it %d times within %ld seconds", sep, fp->friction_users,
			            fp->friction_users == 1 ? "" : "s", run->friction_count,
			            run->friction_window_ms / 1000);
			sep = "; ";
		}
		if (a->is_new) {
			fbuf_printf(b, "%sit is new (not seen before this window)", sep);
			sep = "; ";
		}
		if (a->rate_jump)
			fbuf_printf(b, "%sits rate jumped well above its baseline", sep);
	}
	fbuf_printf(b, ".\n\n**Template**\n\n");
	if ((error = put_code(b, fp->template_text)) < 0)
		return error;
	fbuf_printf(b, "\n| | |\n|---|---|\n");
	fbuf_printf(b, "| Class | %s |\n", fp->rule ? fp->rule->name : "error");
	fbuf_printf(b, "| Severity | %d |\n", a->severity);
	fbuf_printf(b, "| Events in the window | %llu |\n", (unsigned long long)fp->count);
	fbuf_printf(b, "| Events in the baseline before it | %llu |\n", (unsigned long long)fp->baseline);
	fbuf_printf(b, "| First seen | %s |\n| Last seen | %s |\n", first, last);
	fbuf_printf(b, "| Affected users | %zu%s |\n", fp->nusers, fp->users_overflow ? "+" : "");
	if (fp->max_status)
		fbuf_printf(b, "| HTTP status | %d |\n", fp->max_status);
	if (fp->route) {
		fbuf_printf(b, "| Route | ");
		put_inline(b, fp->route, 200, 1);
		fbuf_printf(b, " |\n");
	}
	fbuf_printf(b, "| Fingerprint | `%s` |\n", fp->fingerprint);
	fbuf_printf(b, "\n### Severity %d: why\n\n%s", a->severity, a->reasons);
	if (a->is_new && run->release_tag && run->release_at_ms >= 0 && run->release_at_ms <= fp->first_ms) {
		fbuf t;
		fbuf_init(&t, 1024);
		untrusted_title(&t, run->release_tag, strlen(run->release_tag), 100);
		fbuf_printf(b, "\n### Likely cause\n\nFirst seen after release **%s**", fbuf_cstr(&t));
		if (run->release_url)
			fbuf_printf(b, " (%s)", run->release_url);
		if (run->release_issues)
			fbuf_printf(b, ", which shipped %s", run->release_issues);
		fbuf_printf(b, ".\n");
		fbuf_release(&t);
	}
	fbuf_printf(b, "\n### Sample lines\n\n");
	if ((error = put_samples(b, fp, WATCH_MAX_SAMPLES)) < 0)
		return error;
	fbuf_printf(b, "\n### Where to look\n\n");
	{
		char *red = redacted_template(fp->template_text);
		constant_words(filter, sizeof(filter), red ? red : "");
		free(red);
	}
	if (run->query_link) {
		const char *at = strstr(run->query_link, "{filter}");
		fbuf esc;
		fbuf_init(&esc, 1024);
		http_escape(&esc, filter);
		if (at)
			fbuf_printf(b, "- The lines: %.*s%s%s\n", (int)(at - run->query_link), run->query_link,
			            fbuf_cstr(&esc), at + 8);
		else
			fbuf_printf(b, "- The lines: %s\n", run->query_link);
		fbuf_release(&esc);
	}
	if (run->loki_query) {
		fbuf q;
		fbuf_init(&q, 4096);
		fbuf_printf(&q, "%s |= \"%s\"", run->loki_query, filter);
		fbuf_printf(b, "- LogQL: ");
		put_inline(b, fbuf_cstr(&q), 1000, 0);
		fbuf_printf(b, "\n");
		fbuf_release(&q);
	}
	if (run->source_label) {
		fbuf_printf(b, "- Source: ");
		put_inline(b, run->source_label, 1000, 0);
		fbuf_printf(b, "\n");
	}
	fbuf_printf(b, "- Search the logs for: ");
	put_inline(b, filter, 100, 0);
	error = fbuf_printf(b, "\n\n"
	                       "_Filed by factory-watch: one issue per error fingerprint; later occurrences are "
	                       "added here as notes. Emails, tokens and card numbers are redacted; users are counted, "
	                       "not named._\n");
	return error < 0 ? error : 0;
}

static int create_issue(job_ctx *ctx, watch_run *run, watch_fp *fp, const watch_assessment *a, const watch_known *old)
{
	fbuf title, desc, t;
	cJSON *fields = NULL, *made = NULL;
	char labels[96];
	int error;

	fbuf_init(&title, 1024);
	fbuf_init(&desc, 256 << 10);
	fbuf_init(&t, 1024);
	untrusted_title(&t, fp->template_text, strlen(fp->template_text), TITLE_MAX - 20);
	fbuf_printf(&title, "[%s] %s", fp->rule ? fp->rule->name : "error", fbuf_cstr(&t));
	if ((error = build_description(&desc, run, fp, a)) < 0)
		goto cleanup;
	if (old)
		fbuf_printf(&desc, "\nThe same error was reported in #%ld, closed more than %ld days ago.\n", old->iid,
		            run->reopen_days);
	snprintf(labels, sizeof(labels), "source::factory,type::bug,severity::%d", a->severity);
	if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "title", fbuf_cstr(&title)) ||
	    !cJSON_AddStringToObject(fields, "description", fbuf_cstr(&desc)) ||
	    !cJSON_AddStringToObject(fields, "labels", labels)) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((error = gitlab_issue_create(&made, ctx->gl, fields)) < 0)
		goto cleanup;
	report_action(ctx->rep, "issue.create", fp->fingerprint, "%s (severity %d, %llu events)", fbuf_cstr(&title),
	              a->severity, (unsigned long long)fp->count);
	log_info("%sissue filed for %s: %s", ctx->dry_run ? "dry-run: " : "", fp->fingerprint, fbuf_cstr(&title));
cleanup:
	cJSON_Delete(fields);
	cJSON_Delete(made);
	fbuf_release(&title);
	fbuf_release(&desc);
	fbuf_release(&t);
	return error;
}

/* The description with its state marker replaced. */
static int new_state_description(fbuf *out, const watch_known *k, const watch_fp *fp)
{
	const char *st = strstr(k->description, MARK_STATE), *end;
	char t[40];
	int64_t last = fp->last_ms > k->last_seen_ms ? fp->last_ms : k->last_seen_ms;

	watch_format_time(t, sizeof(t), last);
	if (!st || !(end = strstr(st, "-->")))
		return fbuf_printf(out, MARK_STATE "last_seen=%s total=%llu -->\n%s", t,
		                   (unsigned long long)k->total + (unsigned long long)fp->count, k->description);
	if (fbuf_put(out, k->description, (size_t)(st - k->description)) < 0 ||
	    fbuf_printf(out, MARK_STATE "last_seen=%s total=%llu -->", t,
	                (unsigned long long)k->total + (unsigned long long)fp->count) < 0 ||
	    fbuf_puts(out, end + 3) < 0)
		return FACTORY_ENOMEM;
	return 0;
}

static int note_issue(job_ctx *ctx, watch_run *run, watch_fp *fp, const watch_assessment *a, watch_known *k, int reopen)
{
	fbuf note, desc;
	cJSON *fields = NULL, *out = NULL;
	char first[40], last[40];
	int error;

	fbuf_init(&note, 128 << 10);
	fbuf_init(&desc, 1 << 20);
	watch_format_time(first, sizeof(first), fp->first_ms);
	watch_format_time(last, sizeof(last), fp->last_ms);
	fbuf_printf(&note, "<!-- factory:watch-note fingerprint=%s -->\n", k->fingerprint);
	fbuf_printf(&note, "%s: **%llu** new event%s between %s and %s, %zu%s affected user%s.\n",
	            reopen ? "It came back after the issue was closed" : "Seen again", (unsigned long long)fp->count,
	            fp->count == 1 ? "" : "s", first, last, fp->nusers, fp->users_overflow ? "+" : "",
	            fp->nusers == 1 ? "" : "s");
	if (a->friction)
		fbuf_printf(&note, "\n%zu customer%s hit it %d times within %ld seconds.\n", fp->friction_users,
		            fp->friction_users == 1 ? "" : "s", run->friction_count, run->friction_window_ms / 1000);
	if (a->rate_jump)
		fbuf_printf(&note, "\nIts rate is well above its baseline (%llu events before the window).\n",
		            (unsigned long long)fp->baseline);
	fbuf_printf(&note, "\nSeverity now: %d.\n\n%s\nLatest sample:\n\n", a->severity, a->reasons);
	if ((error = put_samples(&note, fp, 1)) < 0)
		goto cleanup;
	if (reopen) {
		if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "state_event", "reopen")) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		if ((error = gitlab_issue_update(&out, ctx->gl, k->iid, fields)) < 0)
			goto cleanup;
		cJSON_Delete(out);
		out = NULL;
		cJSON_Delete(fields);
		fields = NULL;
		report_action(ctx->rep, "issue.reopen", fp->fingerprint, "#%ld came back", k->iid);
		log_info("%sissue #%ld reopened: %s came back", ctx->dry_run ? "dry-run: " : "", k->iid,
		         fp->fingerprint);
	}
	if ((error = gitlab_note_create(&out, ctx->gl, "issues", k->iid, fbuf_cstr(&note), 0)) < 0)
		goto cleanup;
	cJSON_Delete(out);
	out = NULL;
	report_action(ctx->rep, "issue.note", fp->fingerprint, "#%ld: %llu new events", k->iid,
	              (unsigned long long)fp->count);
	log_info("%snote on #%ld: %llu new events of %s", ctx->dry_run ? "dry-run: " : "", k->iid,
	         (unsigned long long)fp->count, fp->fingerprint);
	/* the state marker moves on, so the next run skips these events */
	if ((error = new_state_description(&desc, k, fp)) < 0)
		goto cleanup;
	if (!(fields = cJSON_CreateObject()) || !cJSON_AddStringToObject(fields, "description", fbuf_cstr(&desc))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	error = gitlab_issue_update(&out, ctx->gl, k->iid, fields);
cleanup:
	cJSON_Delete(fields);
	cJSON_Delete(out);
	fbuf_release(&note);
	fbuf_release(&desc);
	return error;
}

/* Two clusters can end with the same template: count them as one. */
static void coalesce(watch_run *run)
{
	size_t i, j, k;

	for (i = 0; i < run->nfps; i++) {
		watch_fp *a = &run->fps[i];
		for (j = i + 1; j < run->nfps; j++) {
			watch_fp *b = &run->fps[j];
			if (!b->count && !b->baseline)
				continue;
			if (strcmp(a->fingerprint, b->fingerprint) != 0)
				continue;
			a->count += b->count;
			a->baseline += b->baseline;
			a->skipped += b->skipped;
			if (b->first_ms >= 0 && (a->first_ms < 0 || b->first_ms < a->first_ms))
				a->first_ms = b->first_ms;
			if (b->last_ms > a->last_ms)
				a->last_ms = b->last_ms;
			a->nusers += b->nusers; /* an upper bound */
			a->friction_fires += b->friction_fires;
			a->friction_users += b->friction_users;
			if (!a->rule)
				a->rule = b->rule;
			for (k = 0; k < b->nsamples && a->nsamples < WATCH_MAX_SAMPLES; k++) {
				a->samples[a->nsamples++] = b->samples[k];
				b->samples[k] = NULL;
			}
			if (!a->known)
				a->known = b->known;
			b->count = b->baseline = 0;
		}
	}
}

/* Act on a fingerprint whose issue is known: note it, reopen and note it
 * when closed recently, or file anew when closed long ago. */
static int act_on_known(job_ctx *ctx, watch_run *run, watch_fp *fp, const watch_assessment *a, watch_known *k,
                        long *filed, long *noted)
{
	int error;

	if (k->closed && !(k->closed_at_ms >= 0 && run->now_ms - k->closed_at_ms <= run->reopen_days * 86400000LL)) {
		if (!a->file || *filed >= run->max_issues)
			return 0;
		if ((error = create_issue(ctx, run, fp, a, k)) < 0)
			return error;
		(*filed)++;
		return 0;
	}
	if (*noted >= run->max_notes)
		return 0;
	if ((error = note_issue(ctx, run, fp, a, k, k->closed)) < 0)
		return error;
	(*noted)++;
	return 0;
}

/*
 * The label may have been taken off an issue the Factory filed: before
 * filing anew, search the descriptions for the fingerprint (any state).
 * Fills `found` (a run of its own, freed by the caller) and returns the
 * issue or NULL.
 */
static watch_known *search_fingerprint(watch_run *found, job_ctx *ctx, const watch_run *run, const char *fp)
{
	load_ctx lc;
	char query[96];
	size_t i;

	memset(found, 0, sizeof(*found));
	found->now_ms = run->now_ms;
	lc.run = found;
	lc.closed = 0;
	snprintf(query, sizeof(query), "search=%s&in=description&state=all", fp);
	if (gitlab_list_each(ctx->gl, "projects/:id/issues", query, NULL, 20, add_known, &lc) < 0) {
		log_warn("searching issues for %s: %s", fp, ferror_last());
		ferror_clear();
		return NULL;
	}
	for (i = 0; i < found->nknown; i++)
		if (!strcmp(found->known[i].fingerprint, fp))
			return &found->known[i];
	return NULL;
}

/* One fingerprint in report.json's data.fingerprints (no log text but the
 * redacted template). */
static void record_finding(job_ctx *ctx, const watch_fp *fp, const watch_assessment *a)
{
	cJSON *data = report_data(ctx->rep), *list, *o;
	char *red;

	if (!data)
		return;
	if (!(list = cJSON_GetObjectItemCaseSensitive(data, "fingerprints")) &&
	    !(list = cJSON_AddArrayToObject(data, "fingerprints")))
		return;
	if (!(o = cJSON_CreateObject()))
		return;
	{
		/* redacted, and valid UTF-8 as JSON must be */
		fbuf b;
		fbuf_init(&b, TEMPLATE_MAX * 4);
		untrusted_clean(&b, fp->template_text, strlen(fp->template_text));
		red = fbuf_detach(&b);
		fbuf_release(&b);
	}
	cJSON_AddStringToObject(o, "fingerprint", fp->fingerprint);
	cJSON_AddStringToObject(o, "template", red ? red : "");
	cJSON_AddStringToObject(o, "class", fp->rule ? fp->rule->name : "error");
	cJSON_AddNumberToObject(o, "severity", a->severity);
	cJSON_AddNumberToObject(o, "events", (double)fp->count);
	cJSON_AddNumberToObject(o, "baseline", (double)fp->baseline);
	cJSON_AddNumberToObject(o, "already_reported", (double)fp->skipped);
	cJSON_AddNumberToObject(o, "users", (double)fp->nusers);
	cJSON_AddBoolToObject(o, "friction", a->friction);
	cJSON_AddBoolToObject(o, "new", a->is_new);
	cJSON_AddBoolToObject(o, "rate_jump", a->rate_jump);
	if (fp->known)
		cJSON_AddNumberToObject(o, "issue", (double)fp->known->iid);
	cJSON_AddItemToArray(list, o);
	free(red);
}

int watch_file_all(watch_run *run, job_ctx *ctx)
{
	long filed = 0, noted = 0;
	size_t i;
	int error = 0;

	coalesce(run);
	log_section_start("factory_watch_file", "filing", 0);
	for (i = 0; i < run->nfps; i++) {
		watch_fp *fp = &run->fps[i];
		watch_assessment a;
		watch_run found;
		watch_known *k;

		if (!fp->count)
			continue;
		watch_assess(&a, run, fp);
		record_finding(ctx, fp, &a);
		if (fp->known) {
			if ((error = act_on_known(ctx, run, fp, &a, fp->known, &filed, &noted)) < 0)
				goto done;
			continue;
		}
		if (!a.file)
			continue;
		if (filed >= run->max_issues) {
			log_warn("watch.max_issues (%ld) reached: %s not filed this run", run->max_issues,
			         fp->fingerprint);
			continue;
		}
		if ((k = search_fingerprint(&found, ctx, run, fp->fingerprint))) {
			log_info("#%ld carries %s without the source::factory label", k->iid, fp->fingerprint);
			error = act_on_known(ctx, run, fp, &a, k, &filed, &noted);
		} else {
			error = create_issue(ctx, run, fp, &a, NULL);
			if (error == 0)
				filed++;
		}
		watch_known_free(&found);
		if (error < 0)
			goto done;
	}
	report_counter_set(ctx->rep, "issues_filed", filed);
	report_counter_set(ctx->rep, "issues_noted", noted);
	report_summary(ctx->rep, "%s%ld issue%s filed, %ld noted, from %zu error fingerprints",
	               ctx->dry_run ? "dry run: " : "", filed, filed == 1 ? "" : "s", noted, run->nfps);
	log_info("%s%ld issue%s filed, %ld noted or reopened", ctx->dry_run ? "dry-run: " : "", filed,
	         filed == 1 ? "" : "s", noted);
done:
	log_section_end("factory_watch_file");
	return error;
}
