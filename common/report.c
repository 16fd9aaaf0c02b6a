/*
 * report.c - the run report: report.md and report.json, written atomically.
 *
 * Everything a job records is kept as given; masking (log_mask) happens when
 * the report is written, on every string of report.json and on the whole of
 * report.md, so a secret registered late is still masked.
 */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "error.h"
#include "log.h"
#include "version.h"

#define MARKDOWN_MAX ((size_t)16 << 20)
#define FIELD_MAX ((size_t)64 << 10)
#define MD_ACTION_ROWS 1000
#define COUNTER_NAME_MAX 128

typedef struct {
	char *kind, *target, *detail;
	int dry_run;
} action;

typedef struct {
	char *name;
	long value;
} counter;

struct report {
	char *job;
	int dry_run;
	time_t started;
	char *summary;
	action *actions;
	size_t nactions, aactions;
	counter *counters;
	size_t ncounters, acounters;
	fbuf md;
	cJSON *data;
};

static char *vformat(size_t max, const char *fmt, va_list ap)
{
	fbuf b;

	fbuf_init(&b, max);
	if (fbuf_vprintf(&b, fmt, ap) < 0) {
		fbuf_release(&b);
		return NULL;
	}
	return fbuf_detach(&b);
}

int report_new(report **out, const char *job, int dry_run)
{
	report *r;

	*out = NULL;
	if (!(r = calloc(1, sizeof(*r))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	r->job = strdup(job ? job : "factory");
	r->data = cJSON_CreateObject();
	if (!r->job || !r->data) {
		report_free(r);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	r->dry_run = dry_run ? 1 : 0;
	r->started = time(NULL);
	fbuf_init(&r->md, MARKDOWN_MAX);
	*out = r;
	return 0;
}

void report_free(report *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->nactions; i++) {
		free(r->actions[i].kind);
		free(r->actions[i].target);
		free(r->actions[i].detail);
	}
	free(r->actions);
	for (i = 0; i < r->ncounters; i++)
		free(r->counters[i].name);
	free(r->counters);
	free(r->summary);
	free(r->job);
	fbuf_release(&r->md);
	cJSON_Delete(r->data);
	free(r);
}

int report_action(report *r, const char *kind, const char *target, const char *fmt, ...)
{
	action a = {0};
	va_list ap;

	if (!r)
		return ferror_set(FACTORY_EINVALID, "no report");
	if (r->nactions == r->aactions) {
		size_t n = r->aactions ? r->aactions * 2 : 16;
		action *v = realloc(r->actions, n * sizeof(*v));
		if (!v)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		r->actions = v;
		r->aactions = n;
	}
	a.kind = strdup(kind ? kind : "");
	a.target = strdup(target ? target : "");
	if (fmt) {
		va_start(ap, fmt);
		a.detail = vformat(FIELD_MAX, fmt, ap);
		va_end(ap);
	} else {
		a.detail = strdup("");
	}
	if (!a.kind || !a.target || !a.detail) {
		free(a.kind);
		free(a.target);
		free(a.detail);
		return ferror_set(FACTORY_ENOMEM, "cannot record action: out of memory or detail too long");
	}
	a.dry_run = r->dry_run;
	r->actions[r->nactions++] = a;
	return 0;
}

int report_action_count(const report *r)
{
	return r ? (int)r->nactions : 0;
}

static counter *find_counter(const report *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->ncounters; i++)
		if (!strcmp(r->counters[i].name, name))
			return &r->counters[i];
	return NULL;
}

/* The counter `name`, created at 0 when missing; NULL (logged) on failure. */
static counter *get_counter(report *r, const char *name)
{
	counter *c;

	if (!r || !name)
		return NULL;
	if ((c = find_counter(r, name)))
		return c;
	if (r->ncounters == r->acounters) {
		size_t n = r->acounters ? r->acounters * 2 : 16;
		counter *v = realloc(r->counters, n * sizeof(*v));
		if (!v)
			goto nomem;
		r->counters = v;
		r->acounters = n;
	}
	c = &r->counters[r->ncounters];
	if (!(c->name = strndup(name, COUNTER_NAME_MAX)))
		goto nomem;
	c->value = 0;
	r->ncounters++;
	return c;
nomem:
	log_warn("report: counter %s dropped: out of memory", name);
	return NULL;
}

void report_counter_set(report *r, const char *name, long value)
{
	counter *c = get_counter(r, name);

	if (c)
		c->value = value;
}

void report_counter_add(report *r, const char *name, long delta)
{
	counter *c = get_counter(r, name);

	if (c)
		c->value += delta;
}

long report_counter_get(const report *r, const char *name)
{
	const counter *c = (r && name) ? find_counter(r, name) : NULL;

	return c ? c->value : 0;
}

int report_summary(report *r, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (!r)
		return ferror_set(FACTORY_EINVALID, "no report");
	va_start(ap, fmt);
	s = vformat(FIELD_MAX, fmt, ap);
	va_end(ap);
	if (!s)
		return ferror_set(FACTORY_ENOMEM, "cannot set the summary: out of memory or too long");
	free(r->summary);
	r->summary = s;
	return 0;
}

int report_markdown(report *r, const char *fmt, ...)
{
	va_list ap;
	int error;

	if (!r)
		return ferror_set(FACTORY_EINVALID, "no report");
	va_start(ap, fmt);
	error = fbuf_vprintf(&r->md, fmt, ap);
	va_end(ap);
	return error;
}

cJSON *report_data(report *r)
{
	return r ? r->data : NULL;
}

/*
 * Writing.
 */

static void iso_time(char *out, size_t len, time_t t)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A masked copy of `s` (never NULL unless out of memory). */
static char *masked(const char *s)
{
	return log_mask_dup(s ? s : "");
}

/* Mask every string (and member name) of a JSON tree in place. */
static int mask_tree(cJSON *node)
{
	cJSON *item;
	char *m;

	for (; node; node = node->next) {
		if (node->string) {
			if (!(m = masked(node->string)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			if (!(node->type & cJSON_StringIsConst))
				free(node->string);
			node->string = m;
			node->type &= ~cJSON_StringIsConst;
		}
		if ((cJSON_IsString(node) || cJSON_IsRaw(node)) && node->valuestring) {
			if (!(m = masked(node->valuestring)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			if (!(node->type & cJSON_IsReference))
				free(node->valuestring);
			node->valuestring = m;
			node->type &= ~cJSON_IsReference;
		}
		item = node->child;
		if (item && mask_tree(item) < 0)
			return FACTORY_ENOMEM;
	}
	return 0;
}

static int add_string(cJSON *obj, const char *name, const char *value)
{
	char *m = masked(value);
	cJSON *s;

	if (!m)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	s = cJSON_AddStringToObject(obj, name, m);
	free(m);
	return s ? 0 : ferror_set(FACTORY_ENOMEM, "out of memory");
}

/* The CI context present in the environment. */
static int add_ci(cJSON *root)
{
	static const char *const vars[] = {"CI_PROJECT_PATH", "CI_DEFAULT_BRANCH", "CI_PIPELINE_ID",
	                                   "CI_JOB_ID",       "CI_JOB_URL",        NULL};
	cJSON *ci = NULL;
	const char *v;
	size_t i;

	for (i = 0; vars[i]; i++) {
		if (!(v = getenv(vars[i])) || !*v)
			continue;
		if (!ci && !(ci = cJSON_AddObjectToObject(root, "ci")))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		if (add_string(ci, vars[i], v) < 0)
			return FACTORY_ENOMEM;
	}
	return 0;
}

static char *build_json(const report *r, time_t finished, int exit_code)
{
	cJSON *root = cJSON_CreateObject(), *obj, *arr, *item, *data = NULL;
	char ts[32];
	char *text = NULL;
	size_t i;

	if (!root)
		goto nomem;
	iso_time(ts, sizeof(ts), r->started);
	if (add_string(root, "job", r->job) < 0 || add_string(root, "version", FACTORY_VERSION) < 0 ||
	    add_string(root, "started_at", ts) < 0)
		goto nomem;
	iso_time(ts, sizeof(ts), finished);
	if (add_string(root, "finished_at", ts) < 0 || !cJSON_AddBoolToObject(root, "dry_run", r->dry_run) ||
	    !cJSON_AddNumberToObject(root, "exit_code", exit_code) ||
	    add_string(root, "summary", r->summary ? r->summary : "") < 0)
		goto nomem;
	if (!(obj = cJSON_AddObjectToObject(root, "counters")))
		goto nomem;
	for (i = 0; i < r->ncounters; i++) {
		char *name = masked(r->counters[i].name);
		if (!name || !cJSON_AddNumberToObject(obj, name, (double)r->counters[i].value)) {
			free(name);
			goto nomem;
		}
		free(name);
	}
	if (!(arr = cJSON_AddArrayToObject(root, "actions")))
		goto nomem;
	for (i = 0; i < r->nactions; i++) {
		if (!(item = cJSON_CreateObject()))
			goto nomem;
		cJSON_AddItemToArray(arr, item);
		if (add_string(item, "kind", r->actions[i].kind) < 0 ||
		    add_string(item, "target", r->actions[i].target) < 0 ||
		    add_string(item, "detail", r->actions[i].detail) < 0 ||
		    !cJSON_AddBoolToObject(item, "dry_run", r->actions[i].dry_run))
			goto nomem;
	}
	if (!(data = cJSON_Duplicate(r->data, 1)))
		goto nomem;
	if (mask_tree(data->child) < 0)
		goto nomem;
	cJSON_AddItemToObject(root, "data", data);
	data = NULL;
	if (add_ci(root) < 0)
		goto nomem;
	text = cJSON_Print(root);
	if (!text)
		goto nomem;
	cJSON_Delete(root);
	return text;
nomem:
	cJSON_Delete(data);
	cJSON_Delete(root);
	ferror_set(FACTORY_ENOMEM, "cannot build report.json: out of memory");
	return NULL;
}

/* Append a table cell: masked, with '\\' and '|' escaped and line breaks as <br>. */
static int put_cell(fbuf *b, const char *s)
{
	char *m = masked(s);
	const char *p;
	int error = 0;

	if (!m)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (p = m; *p && error == 0; p++) {
		switch (*p) {
		case '|':
			error = fbuf_puts(b, "\\|");
			break;
		case '\\':
			error = fbuf_puts(b, "\\\\");
			break;
		case '\n':
			error = fbuf_puts(b, "<br>");
			break;
		case '\r':
			if (p[1] != '\n')
				error = fbuf_puts(b, "<br>");
			break;
		default:
			error = fbuf_putc(b, *p);
			break;
		}
	}
	free(m);
	return error;
}

static char *build_markdown(const report *r, time_t finished, int exit_code)
{
	char started[32], done[32];
	const char *job = r->job;
	fbuf b;
	size_t i;
	int e = 0;

	fbuf_init(&b, 0);
	iso_time(started, sizeof(started), r->started);
	iso_time(done, sizeof(done), finished);
	e |= fbuf_printf(&b, "# %s%s report\n\n", strncmp(job, "factory-", 8) ? "factory-" : "", job);
	if (r->summary && *r->summary)
		e |= fbuf_printf(&b, "%s\n\n", r->summary);
	e |= fbuf_printf(&b, "- started: %s\n- finished: %s\n- exit code: %d\n- dry run: %s\n- version: %s\n\n",
	                 started, done, exit_code, r->dry_run ? "yes" : "no", FACTORY_VERSION);

	e |= fbuf_puts(&b, "## Counters\n\n");
	if (!r->ncounters) {
		e |= fbuf_puts(&b, "No counters.\n\n");
	} else {
		e |= fbuf_puts(&b, "| Counter | Value |\n| --- | ---: |\n");
		for (i = 0; i < r->ncounters; i++) {
			e |= fbuf_puts(&b, "| ");
			e |= put_cell(&b, r->counters[i].name);
			e |= fbuf_printf(&b, " | %ld |\n", r->counters[i].value);
		}
		e |= fbuf_puts(&b, "\n");
	}

	e |= fbuf_printf(&b, "## Actions%s\n\n", r->dry_run ? " (dry run: none was made)" : "");
	if (!r->nactions) {
		e |= fbuf_puts(&b, "No actions.\n\n");
	} else {
		e |= fbuf_puts(&b, "| # | Kind | Target | Detail |\n| ---: | --- | --- | --- |\n");
		for (i = 0; i < r->nactions && i < MD_ACTION_ROWS; i++) {
			e |= fbuf_printf(&b, "| %zu | ", i + 1);
			e |= put_cell(&b, r->actions[i].kind);
			e |= fbuf_puts(&b, " | ");
			e |= put_cell(&b, r->actions[i].target);
			e |= fbuf_puts(&b, " | ");
			e |= put_cell(&b, r->actions[i].detail);
			e |= fbuf_puts(&b, " |\n");
		}
		if (r->nactions > MD_ACTION_ROWS)
			e |= fbuf_printf(&b, "\n%zu more actions are listed in report.json.\n",
			                 r->nactions - MD_ACTION_ROWS);
		e |= fbuf_puts(&b, "\n");
	}
	if (r->md.len) {
		e |= fbuf_put(&b, r->md.ptr, r->md.len);
		if (r->md.ptr[r->md.len - 1] != '\n')
			e |= fbuf_putc(&b, '\n');
	}
	if (e) {
		fbuf_release(&b);
		ferror_set(FACTORY_ENOMEM, "cannot build report.md: out of memory");
		return NULL;
	}
	return fbuf_detach(&b);
}

/* mkdir -p. */
static int make_dirs(const char *dir)
{
	char path[4096];
	struct stat st;
	size_t i, len = strlen(dir);

	if (!len)
		return ferror_set(FACTORY_ERR, "cannot create report directory: empty name");
	if (len >= sizeof(path))
		return ferror_set(FACTORY_ERR, "cannot create report directory %s: name too long", dir);
	memcpy(path, dir, len + 1);
	for (i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		if (path[i - 1] == '/')
			continue;
		path[i] = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return ferror_set(FACTORY_ERR, "cannot create report directory %s: %s", path, strerror(errno));
		if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
			return ferror_set(FACTORY_ERR, "cannot create report directory %s: not a directory", path);
		path[i] = dir[i];
	}
	return 0;
}

/* Write `text` to dir/name through a temporary file in dir, fsync and rename. */
static int write_atomic(const char *dir, const char *name, const char *text)
{
	char tmp[4200], final[4200];
	size_t len = strlen(text), off = 0;
	ssize_t n;
	int fd, error = FACTORY_ERR;

	if ((size_t)snprintf(final, sizeof(final), "%s/%s", dir, name) >= sizeof(final) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name) >= sizeof(tmp))
		return ferror_set(FACTORY_ERR, "cannot write %s: path too long", name);
	if ((fd = mkstemp(tmp)) < 0)
		return ferror_set(FACTORY_ERR, "cannot write %s: %s", final, strerror(errno));
	while (off < len) {
		n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ferror_set(FACTORY_ERR, "cannot write %s: %s", final, strerror(errno));
			goto fail;
		}
		off += (size_t)n;
	}
	if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
		ferror_set(FACTORY_ERR, "cannot write %s: %s", final, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		ferror_set(FACTORY_ERR, "cannot write %s: %s", final, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, final) < 0) {
		ferror_set(FACTORY_ERR, "cannot write %s: %s", final, strerror(errno));
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return error;
}

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int report_write(report *r, const char *dir, int exit_code)
{
	char *json = NULL, *md = NULL, *mmd = NULL;
	time_t finished = time(NULL);
	int error = FACTORY_ERR;

	if (!r)
		return ferror_set(FACTORY_ERR, "no report to write");
	if (!dir || !*dir)
		dir = "factory-report";
	if (make_dirs(dir) < 0)
		goto cleanup;
	if (!(json = build_json(r, finished, exit_code)) || !(md = build_markdown(r, finished, exit_code))) {
		error = FACTORY_ERR;
		goto cleanup;
	}
	/* The job's own sections are masked here, with the rest of the page. */
	if (!(mmd = masked(md))) {
		ferror_set(FACTORY_ERR, "cannot build report.md: out of memory");
		goto cleanup;
	}
	if (write_atomic(dir, "report.json", json) < 0 || write_atomic(dir, "report.md", mmd) < 0)
		goto cleanup;
	sync_dir(dir);
	error = 0;
cleanup:
	free(json);
	free(md);
	free(mmd);
	return error;
}
