/* sources.c - factory-watch's inputs: files and globs (gzip too), standard
 * input, an HTTP(S) URL, and Grafana Loki's query_range API. */
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h"
#include "http.h"
#include "log.h"
#include "watch.h"

#define CHUNK (64 << 10)
#define LOKI_MAX_PAGES 10000
#define LOKI_MAX_RESPONSE ((size_t)64 << 20)

typedef struct {
	watch_chunk_fn chunk;
	void *ctx;
	size_t seen, max;
	int capped;
} sink_state;

static int sink(void *vctx, const char *data, size_t len)
{
	sink_state *s = vctx;

	if (s->max && s->seen + len > s->max) {
		len = s->max - s->seen;
		s->capped = 1;
	}
	s->seen += len;
	if (len && s->chunk(s->ctx, data, len, -1))
		return 1;
	return s->capped;
}

static int read_fd(const char *name, int fd, const watch_source *src, watch_chunk_fn chunk, void *ctx)
{
	char *buf = malloc(CHUNK);
	size_t total = 0;
	int rc = 0;

	if (!buf)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ferror_set(FACTORY_ERR, "cannot read %s: %s", name, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		if (src->max_bytes && total + (size_t)n > src->max_bytes) {
			n = (ssize_t)(src->max_bytes - total);
			log_warn("%s: read the first %zu bytes only (watch.max_bytes)", name, src->max_bytes);
		}
		total += (size_t)n;
		if (n && (rc = chunk(ctx, buf, (size_t)n, -1)) != 0)
			break;
		if (src->max_bytes && total >= src->max_bytes)
			break;
	}
	free(buf);
	return rc;
}

/* One file, plain or gzip (zlib reads both). */
static int read_file(const char *path, const watch_source *src, watch_chunk_fn chunk, void *ctx)
{
	gzFile gz = gzopen(path, "rb");
	char *buf = NULL;
	size_t total = 0;
	int rc = 0, n;

	if (!gz)
		return ferror_set(FACTORY_ENOTFOUND, "cannot open %s: %s", path, strerror(errno ? errno : ENOENT));
	gzbuffer(gz, 128 << 10);
	if (!(buf = malloc(CHUNK))) {
		gzclose(gz);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	while ((n = gzread(gz, buf, CHUNK)) > 0) {
		if (src->max_bytes && total + (size_t)n > src->max_bytes) {
			n = (int)(src->max_bytes - total);
			log_warn("%s: read the first %zu bytes only (watch.max_bytes)", path, src->max_bytes);
		}
		total += (size_t)n;
		if (n && (rc = chunk(ctx, buf, (size_t)n, -1)) != 0)
			break;
		if (src->max_bytes && total >= src->max_bytes)
			break;
	}
	if (n < 0 && rc == 0) {
		int errnum;
		const char *msg = gzerror(gz, &errnum);
		rc = ferror_set(FACTORY_EINVALID, "cannot read %s: %s", path,
		                errnum == Z_ERRNO ? strerror(errno) : msg);
	}
	free(buf);
	gzclose(gz);
	return rc;
}

typedef struct {
	char *path;
	struct timespec mtime;
} file_entry;

static int cmp_files(const void *a, const void *b)
{
	const file_entry *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return -strcmp(x->path, y->path); /* app.log.2 before app.log.1 */
}

static int read_glob(const watch_source *src, watch_chunk_fn chunk, watch_end_fn end, void *ctx)
{
	glob_t g;
	file_entry *files = NULL;
	size_t i, n = 0;
	int rc, error = 0;

	memset(&g, 0, sizeof(g));
	rc = glob(src->spec, GLOB_NOSORT, NULL, &g);
	if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
		globfree(&g);
		return ferror_set(FACTORY_ENOTFOUND, "no file matches %s", src->spec);
	}
	if (rc != 0) {
		globfree(&g);
		return ferror_set(FACTORY_ERR, "cannot list %s", src->spec);
	}
	if (!(files = calloc(g.gl_pathc, sizeof(*files)))) {
		globfree(&g);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	for (i = 0; i < g.gl_pathc; i++) {
		struct stat st;
		if (stat(g.gl_pathv[i], &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		files[n].path = g.gl_pathv[i];
		files[n].mtime = st.st_mtim;
		n++;
	}
	if (n == 0) {
		error = ferror_set(FACTORY_ENOTFOUND, "no regular file matches %s", src->spec);
		goto cleanup;
	}
	qsort(files, n, sizeof(*files), cmp_files);
	for (i = 0; i < n; i++) {
		log_debug("reading %s", files[i].path);
		if ((error = read_file(files[i].path, src, chunk, ctx)) != 0)
			goto cleanup;
		if ((error = end(ctx)) != 0)
			goto cleanup;
	}
cleanup:
	free(files);
	globfree(&g);
	return error;
}

static int read_url(const watch_source *src, const http_options *http, watch_chunk_fn chunk, void *ctx)
{
	http_client *c = NULL;
	http_response resp;
	http_request req;
	sink_state s = {chunk, ctx, 0, src->max_bytes, 0};
	int error;

	http_response_init(&resp);
	if ((error = http_client_new(&c, http)) < 0)
		goto cleanup;
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = src->spec;
	req.sink = sink;
	req.sink_ctx = &s;
	error = http_do(&resp, c, &req);
	if (error < 0 && !(s.capped && resp.status == 200)) {
		if (error != FACTORY_EUPSTREAM)
			goto cleanup;
		error = ferror_set(FACTORY_EUPSTREAM, "cannot read %s: %s", src->spec, ferror_last());
		goto cleanup;
	}
	if (resp.status < 200 || resp.status > 299) {
		error = ferror_set(resp.status >= 500 || resp.status == 429 ? FACTORY_EUPSTREAM : FACTORY_EINVALID,
		                   "cannot read the log URL: status %ld", resp.status);
		goto cleanup;
	}
	if (s.capped)
		log_warn("log URL: read the first %zu bytes only (watch.max_bytes)", src->max_bytes);
	error = 0;
cleanup:
	http_response_release(&resp);
	http_client_free(c);
	return error;
}

/* ---- Loki ---- */

typedef struct {
	int64_t ns;
	const char *line;
} loki_entry;

static int cmp_entries(const void *a, const void *b)
{
	const loki_entry *x = a, *y = b;
	return x->ns < y->ns ? -1 : x->ns > y->ns;
}

static int loki_page(const watch_source *src, http_client *c, int64_t start_ns, int64_t end_ns, int64_t *last_ns,
                     size_t *count, watch_chunk_fn chunk, watch_end_fn end, void *ctx)
{
	fbuf url, q;
	http_request req;
	http_response resp;
	cJSON *root = NULL;
	const cJSON *data, *result, *stream, *values, *v;
	loki_entry *entries = NULL;
	size_t n = 0, cap = 0, i;
	int error;
	const char *base = src->loki_url;
	size_t blen = strlen(base);

	fbuf_init(&url, 64 << 10);
	fbuf_init(&q, 32 << 10);
	http_response_init(&resp);
	*count = 0;
	while (blen && base[blen - 1] == '/')
		blen--;
	if ((error = http_escape(&q, src->loki_query)) < 0 || (error = fbuf_put(&url, base, blen)) < 0 ||
	    (error = fbuf_printf(&url,
	                         "/loki/api/v1/query_range?query=%s&start=%lld&end=%lld&limit=%ld&direction=forward",
	                         fbuf_cstr(&q), (long long)start_ns, (long long)end_ns, src->loki_limit)) < 0)
		goto cleanup;
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = fbuf_cstr(&url);
	error = http_do(&resp, c, &req);
	if (error < 0) {
		error = ferror_set(error == FACTORY_ETOOBIG ? FACTORY_ETOOBIG : FACTORY_EUPSTREAM,
		                   "Loki query_range: %s", ferror_last());
		goto cleanup;
	}
	if (resp.status != 200) {
		error = ferror_set(resp.status >= 500 || resp.status == 429 ? FACTORY_EUPSTREAM : FACTORY_EINVALID,
		                   "Loki query_range: status %ld: %.200s", resp.status, fbuf_cstr(&resp.body));
		goto cleanup;
	}
	root = cJSON_ParseWithLength(fbuf_cstr(&resp.body), resp.body.len);
	data = cJSON_GetObjectItemCaseSensitive(root, "data");
	result = cJSON_GetObjectItemCaseSensitive(data, "result");
	if (!cJSON_IsArray(result)) {
		error = ferror_set(FACTORY_EINVALID, "Loki query_range: the answer has no data.result list");
		goto cleanup;
	}
	cJSON_ArrayForEach(stream, result)
	{
		values = cJSON_GetObjectItemCaseSensitive(stream, "values");
		cJSON_ArrayForEach(v, values)
		{
			const cJSON *ts = cJSON_GetArrayItem(v, 0), *line = cJSON_GetArrayItem(v, 1);
			if (!cJSON_IsString(ts) || !cJSON_IsString(line))
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 1024;
				loki_entry *ne = realloc(entries, nc * sizeof(*ne));
				if (!ne) {
					error = ferror_set(FACTORY_ENOMEM, "out of memory");
					goto cleanup;
				}
				entries = ne;
				cap = nc;
			}
			entries[n].ns = strtoll(ts->valuestring, NULL, 10);
			entries[n].line = line->valuestring;
			n++;
		}
	}
	if (n > 0)
		qsort(entries, n, sizeof(*entries), cmp_entries);
	for (i = 0; i < n; i++) {
		const char *l = entries[i].line;
		if ((error = chunk(ctx, l, strlen(l), entries[i].ns / 1000000)) != 0 ||
		    (error = chunk(ctx, "\n", 1, entries[i].ns / 1000000)) != 0 || (error = end(ctx)) != 0)
			goto cleanup;
		*last_ns = entries[i].ns;
	}
	*count = n;
	error = 0;
cleanup:
	free(entries);
	cJSON_Delete(root);
	http_response_release(&resp);
	fbuf_release(&url);
	fbuf_release(&q);
	return error;
}

static int read_loki(const watch_source *src, const http_options *http, watch_chunk_fn chunk, watch_end_fn end,
                     void *ctx)
{
	http_client *c = NULL;
	http_options o = *http;
	int64_t start = src->start_ms * 1000000, stop = src->end_ms * 1000000, last = -1;
	int pages, error;

	if (!src->loki_query || !*src->loki_query)
		return ferror_set(FACTORY_ECONFIG, "missing setting watch.loki_query (a LogQL query)");
	if (o.max_response == 0 || o.max_response > LOKI_MAX_RESPONSE)
		o.max_response = LOKI_MAX_RESPONSE;
	if ((error = http_client_new(&c, &o)) < 0)
		return error;
	for (pages = 0; pages < LOKI_MAX_PAGES; pages++) {
		size_t got;
		if ((error = loki_page(src, c, start, stop, &last, &got, chunk, end, ctx)) != 0)
			break;
		if ((long)got < src->loki_limit || last < start)
			break;
		start = last + 1; /* forward: the next page starts after the last entry */
	}
	if (pages == LOKI_MAX_PAGES)
		log_warn("Loki: stopped after %d pages", LOKI_MAX_PAGES);
	http_client_free(c);
	return error;
}

int watch_read_source(const watch_source *src, const http_options *http, watch_chunk_fn chunk, watch_end_fn end,
                      void *ctx)
{
	int rc;

	if (src->loki_url)
		return read_loki(src, http, chunk, end, ctx);
	if (!strcmp(src->spec, "-") || !strcmp(src->spec, "stdin")) {
		if ((rc = read_fd("standard input", 0, src, chunk, ctx)) != 0)
			return rc;
		return end(ctx);
	}
	if (!strncmp(src->spec, "http://", 7) || !strncmp(src->spec, "https://", 8)) {
		if ((rc = read_url(src, http, chunk, ctx)) != 0)
			return rc;
		return end(ctx);
	}
	return read_glob(src, chunk, end, ctx);
}
