/* server.c - intake's HTTP server over libmicrohttpd (see server.h). */
#include "server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "assets.h"
#include "buf.h"
#include "error.h"
#include "feedback.h"
#include "guard.h"
#include "log.h"
#include "version.h"

#define FEEDBACK_PATH "/v1/feedback"
#define ORIGINS_MAX 64

struct intake_server {
	struct MHD_Daemon *daemon;
	intake_server_options o;
	spool *sp;
	ratelimit *rl;
	dedup *dd;
	char *origins[ORIGINS_MAX];
	int norigins;
	int any_origin;
	char address[128];
	char widget_etag[40];
	const intake_asset *widget;
	unsigned char *widget_gz;       /* the widget gzipped once at start-up */
	size_t widget_gz_len;
	char widget_gz_etag[48];

	long accepted, duplicates, rejected, rate_limited, store_failed; /* atomics */
	long inflight;  /* submissions waiting for the disk (atomic) */
};

enum route { R_OTHER = 0, R_FEEDBACK, R_WIDGET, R_CSS, R_FORM, R_HEALTH };

enum { READING = 0, STORING, STORED };

typedef struct {
	enum route route;
	fbuf body;
	int too_big;
	size_t dropped;
	long long start_ms;
	/* while the spool writes it (the connection is suspended meanwhile) */
	intake_server *srv;
	struct MHD_Connection *conn;
	int state;                      /* READING, STORING, STORED (atomic) */
	int store_error;
	uint64_t seq;
	int html;
	dedup_key key;
	long long received_ms;
	char id[FEEDBACK_ID_LEN + 1];
} request;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(long *counter)
{
	__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

void intake_server_options_init(intake_server_options *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = "127.0.0.1:8080";
	o->max_body = 65536;
	o->rate_per_minute = 10;
	o->min_fill_ms = 3000;
	o->dedup_window_s = 600;
	o->timeout_s = 10;
	o->body_deadline_s = 30;
	/* One epoll loop per core: more only switch between each other (a
	 * request waiting for the disk holds no thread). */
	o->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (o->threads < 1)
		o->threads = 1;
	if (o->threads > 64)
		o->threads = 64;
	o->max_conns_per_client = 32;
	o->cache_max_age_s = 300;
}

/* ---- responses ---- */

static const char *header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The request's Origin when the allow-list lets it read our answers. */
static const char *allowed_origin(const intake_server *s, struct MHD_Connection *c)
{
	const char *origin = header(c, "Origin"), *host = header(c, "Host"), *p;
	int i;

	if (!origin)
		return NULL;
	if (s->any_origin)
		return origin;
	for (i = 0; i < s->norigins; i++) {
		if (!strcasecmp(origin, s->origins[i]))
			return origin;
	}
	/* Our own pages (the no-JavaScript form) post from our own origin. */
	p = strstr(origin, "://");
	if (host && p && !strcasecmp(p + 3, host))
		return origin;
	return NULL;
}

static enum MHD_Result send_reply(intake_server *s, struct MHD_Connection *c, unsigned int status,
				  const char *content_type, const void *body, size_t len, enum MHD_ResponseMemoryMode mode,
				  const char *cache, const char *const *extra)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, mode);
	const char *origin;
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	if (content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, cache ? cache : "no-store");
	if ((origin = allowed_origin(s, c))) {
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
	}
	for (; extra && extra[0]; extra += 2)
		MHD_add_response_header(resp, extra[0], extra[1]);
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result send_json(intake_server *s, struct MHD_Connection *c, unsigned int status, const fbuf *b,
				 const char *const *extra)
{
	return send_reply(s, c, status, "application/json; charset=utf-8", b->ptr ? b->ptr : "{}", b->ptr ? b->len : 2,
			  MHD_RESPMEM_MUST_COPY, NULL, extra);
}

/* {"error": code, "message": message} */
static enum MHD_Result send_error(intake_server *s, struct MHD_Connection *c, unsigned int status, const char *code,
				  const char *message, const char *const *extra)
{
	feedback_problem pr;
	fbuf b;
	enum MHD_Result ret;

	memset(&pr, 0, sizeof(pr));
	pr.status = (int)status;
	pr.code = code;
	snprintf(pr.message, sizeof(pr.message), "%s", message);
	fbuf_init(&b, 4096);
	if (feedback_problem_json(&b, &pr) < 0) {
		fbuf_release(&b);
		return MHD_NO;
	}
	ret = send_json(s, c, status, &b, extra);
	fbuf_release(&b);
	return ret;
}

static int html_escape(fbuf *out, const char *s)
{
	int error = 0;

	for (; *s && !error; s++) {
		switch (*s) {
		case '<': error = fbuf_puts(out, "&lt;"); break;
		case '>': error = fbuf_puts(out, "&gt;"); break;
		case '&': error = fbuf_puts(out, "&amp;"); break;
		case '"': error = fbuf_puts(out, "&quot;"); break;
		case '\'': error = fbuf_puts(out, "&#39;"); break;
		default: error = fbuf_putc(out, *s);
		}
	}
	return error;
}

/* A small page for browsers that posted the form without JavaScript. */
static enum MHD_Result send_html(intake_server *s, struct MHD_Connection *c, unsigned int status, const char *heading,
				 const char *text, const feedback_problem *pr)
{
	static const char *const csp[] = {
		"Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'",
		NULL};
	fbuf b;
	enum MHD_Result ret;
	int i;

	fbuf_init(&b, 65536);
	fbuf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
		      "<link rel=\"stylesheet\" href=\"/widget.css\"><title>");
	html_escape(&b, heading);
	fbuf_puts(&b, "</title></head><body><main class=\"fb-page\"><h1>");
	html_escape(&b, heading);
	fbuf_puts(&b, "</h1><p>");
	html_escape(&b, text);
	fbuf_puts(&b, "</p>");
	if (pr && pr->nfields) {
		fbuf_puts(&b, "<ul class=\"fb-errors\" role=\"alert\">");
		for (i = 0; i < pr->nfields; i++) {
			fbuf_puts(&b, "<li>");
			html_escape(&b, pr->fields[i].field);
			fbuf_puts(&b, ": ");
			html_escape(&b, pr->fields[i].message);
			fbuf_puts(&b, "</li>");
		}
		fbuf_puts(&b, "</ul>");
	}
	fbuf_puts(&b, "<p><a href=\"/feedback\">Send another message</a></p></main></body></html>\n");
	ret = send_reply(s, c, status, "text/html; charset=utf-8", b.ptr, b.len, MHD_RESPMEM_MUST_COPY, NULL, csp);
	fbuf_release(&b);
	return ret;
}

/* ---- routes ---- */

static enum route route_of(const char *url)
{
	if (!strcmp(url, FEEDBACK_PATH))
		return R_FEEDBACK;
	if (!strcmp(url, "/widget.js"))
		return R_WIDGET;
	if (!strcmp(url, "/widget.css"))
		return R_CSS;
	if (!strcmp(url, "/feedback"))
		return R_FORM;
	if (!strcmp(url, "/healthz"))
		return R_HEALTH;
	return R_OTHER;
}

/* Serve `a` as `data` (its bytes, or a compressed form named by
 * `encoding`); `variants` when the answer depends on Accept-Encoding. */
static enum MHD_Result serve_asset(intake_server *s, struct MHD_Connection *c, const intake_asset *a,
				   const void *data, size_t len, const char *etag, const char *encoding, int variants)
{
	const char *inm = header(c, MHD_HTTP_HEADER_IF_NONE_MATCH);
	char cache[64];
	const char *extra[11] = {MHD_HTTP_HEADER_ETAG, etag, "Cross-Origin-Resource-Policy", "cross-origin"};
	int n = 4;

	snprintf(cache, sizeof(cache), "public, max-age=%ld", s->o.cache_max_age_s);
	if (a->csp) {
		extra[n++] = "Content-Security-Policy";
		extra[n++] = a->csp;
	}
	if (variants) {
		extra[n++] = MHD_HTTP_HEADER_VARY;
		extra[n++] = "Accept-Encoding";
	}
	if (inm && (strstr(inm, etag) || !strcmp(inm, "*")))
		return send_reply(s, c, MHD_HTTP_NOT_MODIFIED, NULL, "", 0, MHD_RESPMEM_PERSISTENT, cache, extra);
	if (encoding) {
		extra[n++] = MHD_HTTP_HEADER_CONTENT_ENCODING;
		extra[n++] = encoding;
	}
	return send_reply(s, c, MHD_HTTP_OK, a->content_type, data, len, MHD_RESPMEM_PERSISTENT, cache, extra);
}

/* 1 when Accept-Encoding `ae` takes gzip: "gzip" (or "x-gzip"), else "*",
 * listed without q=0. */
static int accepts_gzip(const char *ae)
{
	int gzip = -1, star = -1;

	while (ae && *ae) {
		const char *end = strchr(ae, ','), *semi, *a, *b, *q;
		int ok = 1;

		if (!end)
			end = ae + strlen(ae);
		semi = memchr(ae, ';', (size_t)(end - ae));
		for (a = ae; a < end && (*a == ' ' || *a == '\t'); a++)
			;
		for (b = semi ? semi : end; b > a && (b[-1] == ' ' || b[-1] == '\t'); b--)
			;
		for (q = semi; q && q < end; q = memchr(q + 1, ';', (size_t)(end - q - 1))) {
			const char *v = q + 1;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			if (end - v >= 2 && (v[0] == 'q' || v[0] == 'Q') && v[1] == '=')
				ok = strtod(v + 2, NULL) > 0;
		}
		if ((b - a == 4 && !strncasecmp(a, "gzip", 4)) || (b - a == 6 && !strncasecmp(a, "x-gzip", 6)))
			gzip = ok;
		else if (b - a == 1 && *a == '*')
			star = ok;
		ae = *end ? end + 1 : end;
	}
	return gzip >= 0 ? gzip : star > 0;
}

static enum MHD_Result serve_widget(intake_server *s, struct MHD_Connection *c)
{
	if (s->widget_gz && accepts_gzip(header(c, MHD_HTTP_HEADER_ACCEPT_ENCODING)))
		return serve_asset(s, c, s->widget, s->widget_gz, s->widget_gz_len, s->widget_gz_etag, "gzip", 1);
	return serve_asset(s, c, s->widget, s->widget->data, s->widget->len, s->widget_etag, NULL, 1);
}

/* Compress the widget once (gzip, best compression) with an ETag of its
 * own: "<identity tag>-gzip". */
static int gzip_widget(intake_server *s)
{
	z_stream z;
	uLong cap;
	size_t etag_len = strlen(s->widget_etag);
	int rc;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return ferror_set(FACTORY_ENOMEM, "cannot start zlib");
	cap = deflateBound(&z, (uLong)s->widget->len) + 32;
	if (!(s->widget_gz = malloc(cap))) {
		deflateEnd(&z);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	z.next_in = (Bytef *)s->widget->data;
	z.avail_in = (uInt)s->widget->len;
	z.next_out = s->widget_gz;
	z.avail_out = (uInt)cap;
	rc = deflate(&z, Z_FINISH);
	s->widget_gz_len = z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END)
		return ferror_set(FACTORY_ERR, "cannot gzip the widget (zlib error %d)", rc);
	if (etag_len < 2 || etag_len + 5 >= sizeof(s->widget_gz_etag))
		return ferror_set(FACTORY_ERR, "the widget's ETag %s is not a quoted tag", s->widget_etag);
	snprintf(s->widget_gz_etag, sizeof(s->widget_gz_etag), "%.*s-gzip\"", (int)(etag_len - 1), s->widget_etag);
	return 0;
}

static enum MHD_Result serve_health(intake_server *s, struct MHD_Connection *c)
{
	cJSON *o = cJSON_CreateObject(), *sp;
	spool_stats st;
	char *text = NULL;
	enum MHD_Result ret = MHD_NO;

	spool_get_stats(&st, s->sp);
	if (!o || !cJSON_AddStringToObject(o, "status", "ok") || !cJSON_AddStringToObject(o, "version", FACTORY_VERSION) ||
	    !(sp = cJSON_AddObjectToObject(o, "spool")) || !cJSON_AddNumberToObject(sp, "pending", (double)st.pending) ||
	    !cJSON_AddNumberToObject(sp, "last_seq", (double)st.last_seq) ||
	    !cJSON_AddNumberToObject(sp, "delivered_seq", (double)st.delivered) ||
	    !cJSON_AddNumberToObject(sp, "segments", (double)st.segments) ||
	    !cJSON_AddNumberToObject(sp, "damaged", (double)st.damaged) ||
	    !cJSON_AddNumberToObject(o, "accepted", (double)__atomic_load_n(&s->accepted, __ATOMIC_RELAXED)) ||
	    !cJSON_AddNumberToObject(o, "duplicates", (double)__atomic_load_n(&s->duplicates, __ATOMIC_RELAXED)) ||
	    !cJSON_AddNumberToObject(o, "rejected", (double)__atomic_load_n(&s->rejected, __ATOMIC_RELAXED)))
		goto cleanup;
	if (s->o.status_fn) {
		if (s->o.status_fn(o, s->o.status_ctx) < 0)
			goto cleanup;
	} else {
		cJSON *d = cJSON_AddObjectToObject(o, "delivery");
		if (!d || !cJSON_AddStringToObject(d, "state", "off"))
			goto cleanup;
	}
	if (!(text = cJSON_PrintUnformatted(o)))
		goto cleanup;
	ret = send_reply(s, c, MHD_HTTP_OK, "application/json; charset=utf-8", text, strlen(text), MHD_RESPMEM_MUST_COPY,
			 NULL, NULL);
cleanup:
	free(text);
	cJSON_Delete(o);
	return ret;
}

/* The client's address as the rate limit sees it: IPv4 whole, IPv6 by its
 * /64 (one subscriber), or the last X-Forwarded-For hop behind a proxy. */
static void client_key(char *out, size_t len, const intake_server *s, struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	snprintf(out, len, "unknown");
	if (s->o.trust_proxy) {
		const char *xff = header(c, "X-Forwarded-For"), *last;
		if (xff && *xff) {
			last = strrchr(xff, ',');
			last = last ? last + 1 : xff;
			while (*last == ' ')
				last++;
			snprintf(out, len, "%.63s", last);
			return;
		}
	}
	if (!sa)
		return;
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
	} else if (sa->sa_family == AF_INET6) {
		struct in6_addr a = ((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(&a)) {
			inet_ntop(AF_INET, &a.s6_addr[12], out, (socklen_t)len);
			return;
		}
		memset(&a.s6_addr[8], 0, 8);
		inet_ntop(AF_INET6, &a, out, (socklen_t)len);
	}
}

static int wants_html(struct MHD_Connection *c)
{
	const char *accept = header(c, "Accept"), *ct = header(c, MHD_HTTP_HEADER_CONTENT_TYPE);

	return accept && strstr(accept, "text/html") && ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33);
}

static enum MHD_Result refuse(intake_server *s, struct MHD_Connection *c, unsigned int status, const char *code,
			      const char *message, const char *const *extra)
{
	count(&s->rejected);
	if (wants_html(c))
		return send_html(s, c, status, "Your message was not sent", message, NULL);
	return send_error(s, c, status, code, message, extra);
}

/* From the spool's flusher: the record is on disk (or failed); count it
 * (the client may be gone by now: it is stored all the same) and wake the
 * connection. `r` may be freed as soon as it is resumed. */
static void on_stored(void *ctx, uint64_t seq, int error)
{
	request *r = ctx;
	intake_server *s = r->srv;

	if (error) {
		dedup_forget(s->dd, &r->key);
		count(&s->store_failed);
	} else {
		dedup_stored(s->dd, &r->key, r->id, r->received_ms);
		count(&s->accepted);
	}
	r->seq = seq;
	r->store_error = error;
	__atomic_store_n(&r->state, STORED, __ATOMIC_RELEASE);
	MHD_resume_connection(r->conn);
}

/* The answer once the spool has spoken. */
static enum MHD_Result finish_submission(intake_server *s, struct MHD_Connection *c, request *r)
{
	char msg[256];
	fbuf out;
	enum MHD_Result ret;

	if (r->store_error) {
		static const char *const retry[] = {MHD_HTTP_HEADER_RETRY_AFTER, "5", NULL};
		log_error("cannot store a submission (error %d): see the spool directory", r->store_error);
		return send_error(s, c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
				  "the submission could not be stored; please try again in a moment", retry);
	}
	log_debug("accepted %s as spool record %llu", r->id, (unsigned long long)r->seq);
	if (r->html) {
		snprintf(msg, sizeof(msg), "Your message was received (reference %s).", r->id);
		return send_html(s, c, MHD_HTTP_ACCEPTED, "Thank you", msg, NULL);
	}
	fbuf_init(&out, 256);
	fbuf_printf(&out, "{\"id\":\"%s\",\"status\":\"accepted\"}", r->id);
	ret = send_json(s, c, MHD_HTTP_ACCEPTED, &out, NULL);
	fbuf_release(&out);
	return ret;
}

/* The folding key as the spool keeps it (feedback.fold). */
static void fold_hex(char *out, const dedup_key *key)
{
	snprintf(out, FEEDBACK_FOLD_LEN + 1, "%016llx%016llx", (unsigned long long)key->a, (unsigned long long)key->b);
}

static int fold_parse(dedup_key *key, const char *hex)
{
	char half[17];
	char *end;

	if (strlen(hex) != FEEDBACK_FOLD_LEN || strspn(hex, "0123456789abcdef") != FEEDBACK_FOLD_LEN)
		return -1;
	memcpy(half, hex, 16);
	half[16] = '\0';
	key->a = strtoull(half, &end, 16);
	key->b = strtoull(hex + 16, &end, 16);
	return 0;
}

typedef struct {
	intake_server *s;
	long long now;
	long seen, kept;
} rebuild_ctx;

/* One spooled record at start-up: remember its folding key when it was
 * stored within the window (records without one are older than folding
 * across restarts and are skipped). */
static int rebuild_one(void *ctx, uint64_t seq, const char *data, size_t len)
{
	rebuild_ctx *rc = ctx;
	cJSON *o;
	const cJSON *id, *fold, *at;
	dedup_key key;
	(void)seq;

	if (!strstr(data, "\"fold\""))
		return 0;
	if (!(o = cJSON_ParseWithLength(data, len)))
		return 0; /* not ours to judge here: delivery sends it to dead/ */
	id = cJSON_GetObjectItemCaseSensitive(o, "id");
	fold = cJSON_GetObjectItemCaseSensitive(o, "fold");
	at = cJSON_GetObjectItemCaseSensitive(o, "received_ms");
	rc->seen++;
	if (cJSON_IsString(id) && strlen(id->valuestring) == FEEDBACK_ID_LEN && cJSON_IsString(fold) &&
	    cJSON_IsNumber(at) && fold_parse(&key, fold->valuestring) == 0)
		rc->kept += dedup_remember(rc->s->dd, &key, id->valuestring, (long long)at->valuedouble, rc->now);
	cJSON_Delete(o);
	return 0;
}

/* Fill the folding table from the submissions still in the spool, so a
 * copy sent after a restart (or a crash) still folds into its first. */
static int rebuild_folding(intake_server *s)
{
	rebuild_ctx rc = {s, now_ms(), 0, 0};
	int error;

	if (s->o.dedup_window_s <= 0)
		return 0;
	if ((error = spool_scan(s->sp, rebuild_one, &rc)) < 0)
		return error;
	if (rc.kept)
		log_info("duplicate folding: %ld submission%s of the last %ld s remembered from the spool", rc.kept,
			 rc.kept == 1 ? "" : "s", s->o.dedup_window_s);
	return 0;
}

/* The whole body is in: parse, check, fold, store. */
static enum MHD_Result take_submission(intake_server *s, struct MHD_Connection *c, request *r, const char *client)
{
	feedback f;
	feedback_problem pr;
	dedup_key key;
	fbuf out;
	char id[48], msg[256];
	const char *parts[6];
	long long now = now_ms();
	int rc, html = wants_html(c);
	enum MHD_Result ret;

	fbuf_init(&out, 1 << 20);
	rc = feedback_parse(&f, &pr, header(c, MHD_HTTP_HEADER_CONTENT_TYPE), r->body.ptr ? r->body.ptr : "", r->body.len);
	if (rc == FACTORY_EINVALID) {
		count(&s->rejected);
		if (html) {
			ret = send_html(s, c, (unsigned)pr.status, "Your message was not sent",
					"Please go back, correct the form and send it again.", &pr);
		} else {
			ret = feedback_problem_json(&out, &pr) < 0 ? MHD_NO : send_json(s, c, (unsigned)pr.status, &out, NULL);
		}
		goto cleanup;
	}
	if (rc < 0) {
		ret = send_error(s, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "the server ran out of memory", NULL);
		goto cleanup;
	}
	if (f.honeypot) {
		ret = refuse(s, c, 422, "rejected",
			     "this looks automated: the hidden field 'website' must stay empty", NULL);
		goto cleanup;
	}
	if (f.elapsed_ms >= 0 && s->o.min_fill_ms > 0 && f.elapsed_ms < s->o.min_fill_ms) {
		snprintf(msg, sizeof(msg), "the form was sent %ld ms after it opened; please take at least %ld ms",
			 f.elapsed_ms, s->o.min_fill_ms);
		ret = refuse(s, c, 422, "too_fast", msg, NULL);
		goto cleanup;
	}
	parts[0] = client;
	parts[1] = feedback_kind_name(f.kind);
	parts[2] = f.title;
	parts[3] = f.description;
	parts[4] = f.email;
	parts[5] = f.page_url;
	dedup_key_of(&key, parts, 6);
	fold_hex(f.fold, &key);
	if (dedup_check(s->dd, &key, now, id, sizeof(id))) {
		count(&s->duplicates);
		if (html) {
			ret = send_html(s, c, MHD_HTTP_ACCEPTED, "Thank you",
					"We already have this message; there is no need to send it again.", NULL);
		} else {
			fbuf_printf(&out, "{\"id\":\"%s\",\"status\":\"accepted\",\"duplicate\":true}", id);
			ret = send_json(s, c, MHD_HTTP_ACCEPTED, &out, NULL);
		}
		goto cleanup;
	}
	f.received_ms = now;
	if (feedback_new_id(&f) < 0 || feedback_to_json(&out, &f) < 0) {
		dedup_forget(s->dd, &key);
		count(&s->store_failed);
		r->store_error = ferror_last_code() ? ferror_last_code() : FACTORY_ERR;
		r->state = STORED;
		memcpy(&r->key, &key, sizeof(key));
		ret = finish_submission(s, c, r);
		goto cleanup;
	}
	/* Hand the record to the spool and free this thread while the disk
	 * syncs: the connection sleeps until on_stored() wakes it. */
	memcpy(r->id, f.id, sizeof(r->id));
	memcpy(&r->key, &key, sizeof(key));
	r->html = html;
	r->received_ms = now;
	r->srv = s;
	r->conn = c;
	__atomic_store_n(&r->state, STORING, __ATOMIC_RELEASE);
	__atomic_fetch_add(&s->inflight, 1, __ATOMIC_ACQ_REL);
	MHD_suspend_connection(c);
	if (spool_append_async(s->sp, out.ptr, out.len, on_stored, r) < 0) {
		dedup_forget(s->dd, &key);
		count(&s->store_failed);
		r->store_error = ferror_last_code() ? ferror_last_code() : FACTORY_ERR;
		__atomic_store_n(&r->state, STORED, __ATOMIC_RELEASE);
		MHD_resume_connection(c);
	}
	ret = MHD_YES;
cleanup:
	fbuf_release(&out);
	feedback_release(&f);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
	intake_server *s = cls;
	request *r = *con_cls;
	char client[64];
	(void)version;

	if (!r) {
		/* First call: headers are in, no body yet. */
		const char *cl, *origin;
		long retry;

		if (!(r = calloc(1, sizeof(*r))))
			return MHD_NO;
		r->route = route_of(url);
		r->start_ms = now_ms();
		fbuf_init(&r->body, s->o.max_body);
		*con_cls = r;

		if (r->route != R_FEEDBACK) {
			const intake_asset *a;

			if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
				static const char *const allow[] = {MHD_HTTP_HEADER_ALLOW, "GET, HEAD", NULL};
				return r->route == R_OTHER ? send_error(s, c, MHD_HTTP_NOT_FOUND, "not_found", "no such page", NULL)
							   : send_error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
									"use GET", allow);
			}
			switch (r->route) {
			case R_WIDGET:
				return serve_widget(s, c);
			case R_CSS:
			case R_FORM:
				a = intake_asset_find(r->route == R_CSS ? "/widget.css" : "/feedback");
				if (a)
					return serve_asset(s, c, a, a->data, a->len, a->etag, NULL, 0);
				break;
			case R_HEALTH:
				return serve_health(s, c);
			default:
				break;
			}
			return send_error(s, c, MHD_HTTP_NOT_FOUND, "not_found", "no such page", NULL);
		}

		origin = header(c, "Origin");
		if (!strcmp(method, "OPTIONS")) {
			static const char *const preflight[] = {
				"Access-Control-Allow-Methods", "POST, OPTIONS", "Access-Control-Allow-Headers", "Content-Type",
				"Access-Control-Max-Age", "600", NULL};
			if (origin && !allowed_origin(s, c))
				return refuse(s, c, MHD_HTTP_FORBIDDEN, "origin_not_allowed",
					      "this site may not send feedback here", NULL);
			return send_reply(s, c, MHD_HTTP_NO_CONTENT, NULL, "", 0, MHD_RESPMEM_PERSISTENT, NULL, preflight);
		}
		if (strcmp(method, "POST") != 0) {
			static const char *const allow[] = {MHD_HTTP_HEADER_ALLOW, "POST, OPTIONS", NULL};
			return send_error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "use POST", allow);
		}
		if (origin && !allowed_origin(s, c))
			return refuse(s, c, MHD_HTTP_FORBIDDEN, "origin_not_allowed",
				      "this site may not send feedback here", NULL);
		client_key(client, sizeof(client), s, c);
		if (!ratelimit_take(s->rl, client, r->start_ms, &retry)) {
			char secs[24];
			const char *extra[] = {MHD_HTTP_HEADER_RETRY_AFTER, secs, NULL};
			snprintf(secs, sizeof(secs), "%ld", retry);
			count(&s->rate_limited);
			return refuse(s, c, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited",
				      "too many submissions from this address; please wait a moment", extra);
		}
		cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > s->o.max_body) {
			char msg[96];
			snprintf(msg, sizeof(msg), "the body is larger than %zu bytes", s->o.max_body);
			return refuse(s, c, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large", msg, NULL);
		}
		return MHD_YES;
	}

	if (r->route != R_FEEDBACK)
		return MHD_NO; /* a body sent to a GET route after we answered */
	switch (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE)) {
	case STORED:
		return finish_submission(s, c, r);
	case STORING:
		return MHD_YES; /* not ours to answer yet */
	default:
		break;
	}

	if (*upload_size) {
		/* libmicrohttpd takes a response only before or after the body, so
		 * an oversized body is read and dropped (up to a limit past which
		 * the connection is simply closed) and answered 413 at its end. */
		if (!r->too_big && fbuf_put(&r->body, upload_data, *upload_size) < 0)
			r->too_big = 1;
		if (r->too_big) {
			r->dropped += *upload_size;
			if (r->dropped > 4 * s->o.max_body + 65536)
				return MHD_NO;
		}
		*upload_size = 0;
		if (s->o.body_deadline_s > 0 && now_ms() - r->start_ms > s->o.body_deadline_s * 1000) {
			log_debug("closing a connection whose body took over %ld s", s->o.body_deadline_s);
			return MHD_NO;
		}
		return MHD_YES;
	}
	if (r->too_big) {
		char msg[96];
		snprintf(msg, sizeof(msg), "the body is larger than %zu bytes", s->o.max_body);
		return refuse(s, c, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large", msg, NULL);
	}
	client_key(client, sizeof(client), s, c);
	return take_submission(s, c, r, client);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	request *r = *con_cls;
	(void)cls;
	(void)c;
	(void)toe;

	if (!r)
		return;
	if (r->srv) /* it went to the spool: counted until answered */
		__atomic_fetch_sub(&r->srv->inflight, 1, __ATOMIC_ACQ_REL);
	fbuf_release(&r->body);
	free(r);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;
	(void)cls;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_debug("http: %s", line);
}

/* ---- setup ---- */

static int parse_origins(intake_server *s, const char *list)
{
	const char *p = list;

	while (p && *p) {
		const char *end = strchr(p, ','), *a, *b;
		size_t len;

		if (!end)
			end = p + strlen(p);
		for (a = p; a < end && isspace((unsigned char)*a); a++)
			;
		for (b = end; b > a && isspace((unsigned char)b[-1]); b--)
			;
		len = (size_t)(b - a);
		if (len == 1 && *a == '*') {
			s->any_origin = 1;
		} else if (len) {
			if (s->norigins >= ORIGINS_MAX)
				return ferror_set(FACTORY_ECONFIG, "too many allowed origins (at most %d)", ORIGINS_MAX);
			if (strncmp(a, "http://", 7) != 0 && strncmp(a, "https://", 8) != 0 &&
			    !(len == 4 && !strncmp(a, "null", 4)))
				return ferror_set(FACTORY_ECONFIG,
						  "bad setting intake.allowed_origins: '%.*s' is not an origin like "
						  "https://shop.example.com",
						  (int)len, a);
			if (memchr(a, '/', len) && len > 8 && memchr(a + 8, '/', len - 8))
				return ferror_set(FACTORY_ECONFIG,
						  "bad setting intake.allowed_origins: '%.*s' has a path; an origin is "
						  "scheme://host[:port]",
						  (int)len, a);
			if (!(s->origins[s->norigins] = strndup(a, len)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			s->norigins++;
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

static int resolve_listen(struct sockaddr_storage *ss, socklen_t *sslen, const char *listen)
{
	char host[256], port[16];
	const char *colon;
	struct addrinfo hints, *res = NULL;
	int rc;

	if (*listen == '[') {
		const char *close = strchr(listen, ']');
		if (!close || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof(host))
			return ferror_set(FACTORY_ECONFIG, "bad listen address '%s' (want HOST:PORT or [IPv6]:PORT)", listen);
		memcpy(host, listen + 1, (size_t)(close - listen - 1));
		host[close - listen - 1] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(listen, ':');
		if (!colon || (size_t)(colon - listen) >= sizeof(host))
			return ferror_set(FACTORY_ECONFIG, "bad listen address '%s' (want HOST:PORT)", listen);
		memcpy(host, listen, (size_t)(colon - listen));
		host[colon - listen] = '\0';
	}
	if (strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(port) || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	    strtol(colon + 1, NULL, 10) > 65535)
		return ferror_set(FACTORY_ECONFIG, "bad listen address '%s': the port must be a number from 0 to 65535",
				  listen);
	snprintf(port, sizeof(port), "%s", colon + 1);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (rc != 0 || !res)
		return ferror_set(FACTORY_ECONFIG, "bad listen address '%s': %s", listen, gai_strerror(rc));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int intake_server_start(intake_server **out, const intake_server_options *o, spool *sp)
{
	intake_server *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	const union MHD_DaemonInfo *info;
	unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
	char host[INET6_ADDRSTRLEN];
	int error = -1;

	*out = NULL;
	memset(&ss, 0, sizeof(ss));
	if (!s)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	s->o = *o;
	s->sp = sp;
	if (s->o.threads < 1)
		s->o.threads = 1;
	if (!(s->widget = intake_asset_find("/widget.js"))) {
		error = ferror_set(FACTORY_ERR, "the widget is missing from this build");
		goto cleanup;
	}
	snprintf(s->widget_etag, sizeof(s->widget_etag), "%s", s->widget->etag);
	if ((error = parse_origins(s, o->allowed_origins)) < 0 ||
	    (error = ratelimit_new(&s->rl, o->rate_per_minute, o->rate_burst)) < 0 ||
	    (error = dedup_new(&s->dd, o->dedup_window_s)) < 0 || (error = rebuild_folding(s)) < 0 ||
	    (error = gzip_widget(s)) < 0 || (error = resolve_listen(&ss, &sslen, o->listen)) < 0)
		goto cleanup;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)s->o.threads, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned int)(o->timeout_s > 0 ? o->timeout_s : 10), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		(unsigned int)(o->max_conns_per_client > 0 ? o->max_conns_per_client : 0), MHD_OPTION_CONNECTION_LIMIT,
		(unsigned int)4096, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE,
		(unsigned int)1024, MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_END);
	if (!s->daemon) {
		error = ferror_set(FACTORY_ERR, "cannot listen on %s (address in use, or not allowed)", o->listen);
		goto cleanup;
	}
	info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
		snprintf(s->address, sizeof(s->address), "[%s]:%u", host, info ? info->port : 0);
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
		snprintf(s->address, sizeof(s->address), "%s:%u", host, info ? info->port : 0);
	}
	*out = s;
	s = NULL;
	error = 0;
cleanup:
	intake_server_free(s);
	return error;
}

const char *intake_server_address(const intake_server *s)
{
	return s->address;
}

void intake_server_stop(intake_server *s)
{
	MHD_socket lsock;
	int waited;

	if (!s || !s->daemon)
		return;
	/* Take no new connection, let the submissions on their way to the disk
	 * be stored and answered, then stop. */
	lsock = MHD_quiesce_daemon(s->daemon);
	if (lsock != MHD_INVALID_SOCKET)
		close(lsock);
	for (waited = 0; __atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE) > 0 && waited < 30000; waited++)
		usleep(1000);
	MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
}

void intake_server_free(intake_server *s)
{
	int i;

	if (!s)
		return;
	intake_server_stop(s);
	ratelimit_free(s->rl);
	dedup_free(s->dd);
	free(s->widget_gz);
	for (i = 0; i < s->norigins; i++)
		free(s->origins[i]);
	free(s);
}

void intake_server_get_stats(intake_server_stats *out, const intake_server *s)
{
	out->accepted = __atomic_load_n(&s->accepted, __ATOMIC_RELAXED);
	out->duplicates = __atomic_load_n(&s->duplicates, __ATOMIC_RELAXED);
	out->rejected = __atomic_load_n(&s->rejected, __ATOMIC_RELAXED);
	out->rate_limited = __atomic_load_n(&s->rate_limited, __ATOMIC_RELAXED);
	out->store_failed = __atomic_load_n(&s->store_failed, __ATOMIC_RELAXED);
}
