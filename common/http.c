/*
 * http.c - HTTP over libcurl: one reused easy handle per client, redirects
 * followed by hand (so credentials never leave the first host), retries
 * with Retry-After / RateLimit-Reset / jittered backoff, capped bodies.
 */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "version.h"

#define MAX_REDIRECTS 5
#define MAX_HEADER_BYTES ((size_t)256 << 10)
/* Longest wait a server may ask for that we take at face value (a day). */
#define MAX_SERVER_WAIT_MS (24L * 3600 * 1000)

struct http_client {
	CURL *curl;
	http_options opts;
	char *ca_file; /* resolved CA bundle path (owned), or NULL */
	http_stats stats;
	uint64_t rng; /* xorshift state for the jitter */
	/* Pacing (http.h): the wait owed before the next request, planned from
	 * the last response with rate-limit headers, when it was planned
	 * (monotonic ms), and the time slept since through the hook. */
	long pace_ms;
	long long pace_from;
	long pace_slept;
	int pacing; /* in a pacing stretch (for one log line per stretch) */
	char errbuf[CURL_ERROR_SIZE];
};

/* ---- process-wide state ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
	init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Sleep `ms` milliseconds, resuming after signals. */
static void default_sleep(long ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static http_sleep_fn sleep_fn = default_sleep;

void http_set_sleep(http_sleep_fn fn)
{
	sleep_fn = fn ? fn : default_sleep;
}

/* Milliseconds on the monotonic clock. */
static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- options, client ---- */

void http_options_init(http_options *o)
{
	memset(o, 0, sizeof(*o));
	o->connect_timeout_ms = 10000;
	o->timeout_ms = 60000;
	o->max_retries = 5;
	o->retry_budget_ms = 120000;
	o->backoff_base_ms = 500;
	o->backoff_max_ms = 30000;
	o->max_response = FBUF_DEFAULT_MAX;
	o->follow_redirects = 1;
	o->ca_file = NULL;
	o->pace_below_pct = 10;
	o->pace_reserve = -1;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* Seed the jitter generator; it need not be cryptographic, only differ
 * between processes so that clients do not retry in lockstep. */
static uint64_t seed_rng(const void *salt)
{
	uint64_t s = 0;
	struct timespec ts;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		s = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16) ^
		    (uint64_t)(uintptr_t)salt;
	}
	return s ? s : 0x9e3779b97f4a7c15ULL;
}

static uint64_t next_rand(http_client *c)
{
	uint64_t x = c->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

int http_client_new(http_client **out, const http_options *opts)
{
	http_client *c = NULL;
	const char *ca;
	int error = -1;

	*out = NULL;
	pthread_once(&init_once, global_init);
	if (init_rc != CURLE_OK)
		return ferror_set(FACTORY_ERR, "cannot initialise libcurl: %s", curl_easy_strerror(init_rc));
	if (!(c = calloc(1, sizeof(*c)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (opts)
		c->opts = *opts;
	else
		http_options_init(&c->opts);
	if (!c->opts.max_response)
		c->opts.max_response = FBUF_DEFAULT_MAX;
	ca = c->opts.ca_file && *c->opts.ca_file ? c->opts.ca_file : NULL;
	if (!ca && !(ca = env_nonempty("FACTORY_CA_FILE")))
		ca = env_nonempty("CI_SERVER_TLS_CA_FILE");
	if (ca && !(c->ca_file = strdup(ca))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	c->opts.ca_file = c->ca_file;
	if (!(c->curl = curl_easy_init())) {
		error = ferror_set(FACTORY_ERR, "cannot create a curl handle");
		goto cleanup;
	}
	c->stats.ratelimit_remaining = -1;
	c->stats.ratelimit_reset = -1;
	c->stats.ratelimit_limit = -1;
	c->rng = seed_rng(c);
	*out = c;
	c = NULL;
	error = 0;
cleanup:
	http_client_free(c);
	return error;
}

void http_client_free(http_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->ca_file);
	free(c);
}

void http_client_stats(http_stats *out, const http_client *c)
{
	*out = c->stats;
}

/* ---- responses and headers ---- */

void http_response_init(http_response *r)
{
	memset(r, 0, sizeof(*r));
	fbuf_init(&r->body, 0);
}

void http_response_release(http_response *r)
{
	fbuf_release(&r->body);
	free(r->headers);
	r->headers = NULL;
	free(r->effective_url);
	r->effective_url = NULL;
	r->status = 0;
	r->attempts = 0;
}

/*
 * Find header `name` in a raw "Name: value\r\n" block and copy its value,
 * trimmed, into `out`. Repeated headers are joined with ", " as RFC 9110
 * allows for list-valued fields (Link). Returns 0 or FACTORY_ENOTFOUND.
 */
static int find_header(char *out, size_t out_len, const char *raw, const char *name)
{
	size_t nlen = strlen(name), used = 0;
	const char *line = raw, *end, *v, *ve;
	int found = 0;

	if (out_len)
		out[0] = '\0';
	while (line && *line) {
		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if ((size_t)(end - line) > nlen && !strncasecmp(line, name, nlen) && line[nlen] == ':') {
			v = line + nlen + 1;
			ve = end;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && isspace((unsigned char)ve[-1]))
				ve--;
			if (out_len) {
				if (found && used + 2 < out_len) {
					memcpy(out + used, ", ", 2);
					used += 2;
				}
				while (v < ve && used + 1 < out_len)
					out[used++] = *v++;
				out[used] = '\0';
			}
			found = 1;
		}
		line = *end ? end + 1 : end;
	}
	return found ? 0 : FACTORY_ENOTFOUND;
}

int http_response_header(char *out, size_t out_len, const http_response *r, const char *name)
{
	if (!r->headers) {
		if (out_len)
			out[0] = '\0';
		return FACTORY_ENOTFOUND;
	}
	return find_header(out, out_len, r->headers, name);
}

/* ---- escaping ---- */

int http_escape(fbuf *out, const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;
	char enc[3];
	int error;

	for (p = (const unsigned char *)in; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			error = fbuf_putc(out, (char)*p);
		} else {
			enc[0] = '%';
			enc[1] = hex[*p >> 4];
			enc[2] = hex[*p & 15];
			error = fbuf_put(out, enc, 3);
		}
		if (error < 0)
			return error;
	}
	return 0;
}

/* ---- one transfer ---- */

typedef struct {
	http_response *out;
	const http_request *req;
	fbuf headers;     /* headers of the response being received */
	long status;      /* its status, from the status line */
	int body_error;   /* fbuf error when buffering the body */
	int header_error; /* fbuf error when keeping the headers */
	int sink_rc;      /* the sink's non-zero answer */
	size_t sunk;      /* bytes handed to the sink */
	int sends;        /* times libcurl was about to send the request */
	int once;         /* the method must not be sent twice */
	int resend_refused;
} xfer;

/*
 * Called before each send of the request. libcurl sends a request again,
 * on its own, when a reused keep-alive connection turns out dead before
 * any answer came; for a POST that answer-less drop does not prove the
 * server did nothing, so the second send is refused (and counted).
 */
static int prereq_cb(void *vx, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	xfer *x = vx;

	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	if (++x->sends > 1 && x->once) {
		x->resend_refused = 1;
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

static size_t header_cb(char *data, size_t size, size_t n, void *vx)
{
	xfer *x = vx;
	size_t len = size * n;
	int error;

	/* A status line starts a new response (1xx, or the next of a chain):
	 * forget the headers kept so far so only the final ones remain. */
	if (len >= 5 && !memcmp(data, "HTTP/", 5)) {
		const char *sp = memchr(data, ' ', len);
		fbuf_reset(&x->headers);
		x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		return len;
	}
	if (len <= 2 && (data[0] == '\r' || data[0] == '\n'))
		return len;
	if ((error = fbuf_put(&x->headers, data, len)) < 0) {
		x->header_error = error;
		return 0;
	}
	return len;
}

/* Bodies of 2xx responses go to the sink when there is one; anything else
 * (error pages, redirects) is buffered, under the cap, for the caller. */
static size_t write_cb(char *data, size_t size, size_t n, void *vx)
{
	xfer *x = vx;
	size_t len = size * n;
	int error;

	if (x->req->sink && x->status >= 200 && x->status < 300) {
		int rc = x->req->sink(x->req->sink_ctx, data, len);
		if (rc) {
			x->sink_rc = rc;
			return CURL_WRITEFUNC_ERROR;
		}
		x->sunk += len;
		return len;
	}
	if ((error = fbuf_put(&x->out->body, data, len)) < 0) {
		x->body_error = error;
		return CURL_WRITEFUNC_ERROR;
	}
	return len;
}

static int method_is(const char *m, const char *want)
{
	return !strcasecmp(m, want);
}

static int is_idempotent(const char *m)
{
	return !method_is(m, "POST") && !method_is(m, "PATCH");
}

/* Set every option for one request; the handle was reset before. */
static CURLcode setup_handle(http_client *c, xfer *x, const char *method, const char *url, struct curl_slist *hdrs,
                             const char *body, size_t body_len)
{
	CURL *h = c->curl;
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                                                  \
	do {                                                                                                           \
		if ((rc = curl_easy_setopt(h, opt, val)) != CURLE_OK)                                                  \
			return rc;                                                                                     \
	} while (0)

	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, c->opts.timeout_ms);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		SET(CURLOPT_CAINFO, c->ca_file);
	SET(CURLOPT_USERAGENT, FACTORY_USER_AGENT);
	/* Redirects are followed in http_do, hop by hop, so that credential
	 * headers can be dropped when the origin changes (libcurl 7.88 would
	 * forward custom headers such as PRIVATE-TOKEN). */
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_UNRESTRICTED_AUTH, 0L);
	SET(CURLOPT_ACCEPT_ENCODING, "");
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_HTTPHEADER, hdrs);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, x);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, x);
	SET(CURLOPT_ERRORBUFFER, c->errbuf);
	SET(CURLOPT_PREREQFUNCTION, prereq_cb);
	SET(CURLOPT_PREREQDATA, x);
	if (!x->req->sink)
		SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->opts.max_response);

	if (method_is(method, "GET")) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (method_is(method, "HEAD")) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (method_is(method, "POST")) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, body ? body : "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
	} else {
		SET(CURLOPT_CUSTOMREQUEST, method);
		if (body || method_is(method, "PUT") || method_is(method, "PATCH")) {
			SET(CURLOPT_POSTFIELDS, body ? body : "");
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
		}
	}
#undef SET
	return rc;
}

/* The origin (scheme, host, port) of a URL as "scheme://host:port",
 * lower-cased, into `out`. Returns 0 or -1 when the URL does not parse. */
static int url_origin(char *out, size_t len, const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int error = -1;
	size_t i;

	if (!u)
		return -1;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto cleanup;
	snprintf(out, len, "%s://%s:%s", scheme, host, port);
	for (i = 0; out[i]; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	error = 0;
cleanup:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return error;
}

int http_same_origin(const char *a, const char *b)
{
	char oa[512], ob[512];

	if (!a || !b || url_origin(oa, sizeof(oa), a) < 0 || url_origin(ob, sizeof(ob), b) < 0)
		return 0;
	return !strcmp(oa, ob);
}

/* Headers that carry credentials and go to the first origin only. */
static int is_credential_header(const char *h)
{
	static const char *const names[] = {"authorization", "private-token",       "job-token", "deploy-token",
	                                    "cookie",        "proxy-authorization", NULL};
	size_t i, n;

	for (i = 0; names[i]; i++) {
		n = strlen(names[i]);
		if (!strncasecmp(h, names[i], n) && (h[n] == ':' || h[n] == ';'))
			return 1;
	}
	return 0;
}

/* Build the header list for one hop. NULL (with *error set) on failure. */
static struct curl_slist *build_headers(const http_request *req, int same_origin, int *error)
{
	struct curl_slist *list = NULL, *t;
	const char *const *h;

	*error = 0;
	for (h = req->headers; h && *h; h++) {
		if (!same_origin && is_credential_header(*h))
			continue;
		if (!(t = curl_slist_append(list, *h)))
			goto oom;
		list = t;
	}
	/* No "Expect: 100-continue" round trip on large bodies. */
	if (!(t = curl_slist_append(list, "Expect:")))
		goto oom;
	return t;
oom:
	curl_slist_free_all(list);
	*error = ferror_set(FACTORY_ENOMEM, "out of memory");
	return NULL;
}

/* A URL for messages and logs: no query (it may hold signatures) and no
 * userinfo; written into `out`. */
static void url_for_log(char *out, size_t len, const char *url)
{
	const char *q, *at, *scheme_end, *path;
	size_t n;

	if (!url) {
		snprintf(out, len, "(no url)");
		return;
	}
	scheme_end = strstr(url, "://");
	if (scheme_end && (path = strpbrk(scheme_end + 3, "/?#")) != NULL)
		at = memchr(scheme_end + 3, '@', (size_t)(path - scheme_end - 3));
	else
		at = scheme_end ? strchr(scheme_end + 3, '@') : NULL;
	q = strpbrk(url, "?#");
	n = q ? (size_t)(q - url) : strlen(url);
	if (at && scheme_end && (!q || at < q))
		snprintf(out, len, "%.*s%.*s", (int)(scheme_end + 3 - url), url, (int)(n - (size_t)(at + 1 - url)),
		         at + 1);
	else
		snprintf(out, len, "%.*s", (int)n, url);
}

static long parse_long(const char *s, int *ok)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	*ok = end != s && !*end && !errno;
	return v;
}

/* A whole number header of `raw`, or -1 when missing or not one. */
static long header_long(const char *raw, const char *name)
{
	char v[64];
	long n;
	int ok;

	if (find_header(v, sizeof(v), raw, name) < 0)
		return -1;
	n = parse_long(v, &ok);
	return ok && n >= 0 ? n : -1;
}

/*
 * Read the rate-limit headers of a response into the stats and plan the
 * wait before the next request (see "Pacing" in http.h). A response
 * without RateLimit-Remaining and RateLimit-Reset leaves the plan as it is.
 */
static void note_ratelimit(http_client *c, const char *raw, long status)
{
	char date[128];
	long remaining, reset, limit, observed, quota, zone, reserve, wait;
	long long window_ms;
	time_t server_now;

	if (status == 429)
		c->stats.throttled++;
	remaining = header_long(raw, "RateLimit-Remaining");
	reset = header_long(raw, "RateLimit-Reset");
	limit = header_long(raw, "RateLimit-Limit");
	observed = header_long(raw, "RateLimit-Observed");
	if (remaining >= 0)
		c->stats.ratelimit_remaining = remaining;
	if (reset >= 0)
		c->stats.ratelimit_reset = reset;
	if (limit >= 0)
		c->stats.ratelimit_limit = limit;
	if (remaining < 0 || reset < 0)
		return;
	c->pace_ms = 0;
	if (c->opts.pace_below_pct <= 0)
		return;

	/* The time left in the window, on the server's clock when it says. */
	if (reset < 1000000000L) {
		window_ms = (long long)reset * 1000;
	} else {
		server_now = time(NULL);
		if (!find_header(date, sizeof(date), raw, "Date")) {
			time_t t = curl_getdate(date, NULL);
			if (t != -1)
				server_now = t;
		}
		window_ms = ((long long)reset - (long long)server_now) * 1000;
	}
	if (window_ms > MAX_SERVER_WAIT_MS)
		window_ms = MAX_SERVER_WAIT_MS;

	quota = observed >= 0 && remaining > 0 ? observed + remaining : limit;
	zone = quota > 0 ? (long)(((long long)quota * c->opts.pace_below_pct + 99) / 100) : 1;
	if (window_ms <= 0 || remaining >= zone) {
		if (c->pacing)
			log_debug("rate limit: %ld requests left, no more pacing", remaining);
		c->pacing = 0;
		return;
	}
	reserve = c->opts.pace_reserve >= 0 ? c->opts.pace_reserve : zone / 10;
	if (reserve > zone - 1)
		reserve = zone - 1;
	if (remaining <= reserve)
		wait = (long)window_ms;
	else
		wait = (long)(window_ms / (remaining - reserve + 1));
	if (!c->pacing)
		log_info("rate limit: %ld of %ld requests left, the window resets in %lld s: pacing the requests "
		         "(%ld ms apart, %ld kept for other jobs)",
		         remaining, quota > 0 ? quota : remaining, (window_ms + 999) / 1000, wait, reserve);
	c->pacing = 1;
	c->pace_ms = wait;
	c->pace_from = mono_ms();
	c->pace_slept = 0;
}

/* Sleep through the hook, counting the time for the pacing plan. */
static void client_sleep(http_client *c, long ms)
{
	sleep_fn(ms);
	if (ms > 0)
		c->pace_slept = ms > LONG_MAX - c->pace_slept ? LONG_MAX : c->pace_slept + ms;
}

void http_client_pause(http_client *c, long ms)
{
	if (ms <= 0)
		return;
	client_sleep(c, ms);
	c->stats.paced++;
	c->stats.paced_ms += ms;
}

/* Before a try: wait what the pacing plan still owes (http.h), at most the
 * retry budget, and say so when the budget cuts it. */
static void pace_before(http_client *c, const http_request *req)
{
	char where[2048];
	long long elapsed;
	long wait;

	if (c->pace_ms <= 0)
		return;
	elapsed = mono_ms() - c->pace_from;
	if (elapsed < c->pace_slept)
		elapsed = c->pace_slept;
	wait = elapsed >= c->pace_ms ? 0 : (long)(c->pace_ms - elapsed);
	c->pace_ms = 0; /* one wait per plan; the next response plans again */
	if (wait <= 0)
		return;
	url_for_log(where, sizeof(where), req->url);
	if (wait > c->opts.retry_budget_ms) {
		log_warn("%s %s: rate limit nearly used up: waiting the retry budget of %ld ms, not the %ld ms "
		         "until the window resets",
		         req->method, where, c->opts.retry_budget_ms, wait);
		wait = c->opts.retry_budget_ms;
		if (wait <= 0)
			return;
	} else {
		log_debug("%s %s: pacing: waiting %ld ms (rate limit)", req->method, where, wait);
	}
	client_sleep(c, wait);
	c->stats.paced++;
	c->stats.paced_ms += wait;
}

enum { OUT_RESPONSE = 1, OUT_NETWORK, OUT_FATAL };

typedef struct {
	int kind;
	CURLcode cc;    /* for OUT_NETWORK */
	int error;      /* for OUT_FATAL: the FACTORY_E* code, ferror set */
	size_t sunk;    /* bytes the sink got */
	char url[2048]; /* URL of the last hop, for messages */
} outcome;

static int is_redirect(long status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/*
 * One try: the request and the redirects it leads to. The final response
 * (or the failure) is described in `oc`; `out` holds the response.
 */
static void run_chain(outcome *oc, http_client *c, const http_request *req, http_response *out)
{
	char origin0[512], origin[512];
	const char *method = req->method, *body = req->body;
	size_t body_len = req->body ? req->body_len : 0;
	char *url = NULL, *next, *eff = NULL;
	struct curl_slist *hdrs = NULL;
	xfer x;
	int hop, same, error;
	long status;
	CURLcode cc;

	memset(oc, 0, sizeof(*oc));
	memset(&x, 0, sizeof(x));
	x.out = out;
	x.req = req;
	fbuf_init(&x.headers, MAX_HEADER_BYTES);
	if (url_origin(origin0, sizeof(origin0), req->url) < 0)
		origin0[0] = '\0';
	if (!(url = strdup(req->url))) {
		oc->kind = OUT_FATAL;
		oc->error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (hop = 0;; hop++) {
		same = origin0[0] && !url_origin(origin, sizeof(origin), url) && !strcmp(origin, origin0);
		curl_slist_free_all(hdrs);
		if (!(hdrs = build_headers(req, same, &error))) {
			oc->kind = OUT_FATAL;
			oc->error = error;
			goto cleanup;
		}
		fbuf_reset(&out->body);
		fbuf_reset(&x.headers);
		x.status = 0;
		x.body_error = x.header_error = x.sink_rc = 0;
		x.sends = x.resend_refused = 0;
		x.once = !is_idempotent(method);
		c->errbuf[0] = '\0';
		url_for_log(oc->url, sizeof(oc->url), url);

		curl_easy_reset(c->curl);
		if ((cc = setup_handle(c, &x, method, url, hdrs, body, body_len)) != CURLE_OK) {
			oc->kind = OUT_FATAL;
			oc->error = ferror_set(FACTORY_ERR, "%s %s: cannot set up the request: %s", method, oc->url,
			                       curl_easy_strerror(cc));
			goto cleanup;
		}
		cc = curl_easy_perform(c->curl);
		c->stats.requests++;
		if (x.sends > 1) {
			/* libcurl's own resends on a dead reused connection. */
			c->stats.requests += x.sends - 1 - x.resend_refused;
			c->stats.retries += x.sends - 1 - x.resend_refused;
		}
		oc->sunk += x.sunk;

		status = 0;
		curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
		free(out->headers);
		out->headers = fbuf_detach(&x.headers);
		if (!out->headers) {
			oc->kind = OUT_FATAL;
			oc->error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		note_ratelimit(c, out->headers, status);
		eff = NULL;
		curl_easy_getinfo(c->curl, CURLINFO_EFFECTIVE_URL, &eff);
		free(out->effective_url);
		out->effective_url = strdup(eff ? eff : url);
		out->status = status;

		if (cc != CURLE_OK) {
			if (x.body_error == FACTORY_ENOMEM || x.header_error == FACTORY_ENOMEM) {
				oc->kind = OUT_FATAL;
				oc->error = ferror_set(FACTORY_ENOMEM, "out of memory");
			} else if (x.body_error || cc == CURLE_FILESIZE_EXCEEDED) {
				oc->kind = OUT_FATAL;
				oc->error =
				        ferror_set(FACTORY_ETOOBIG, "%s %s: response body over the cap of %zu bytes",
				                   method, oc->url, c->opts.max_response);
			} else if (x.header_error) {
				oc->kind = OUT_FATAL;
				oc->error = ferror_set(FACTORY_ETOOBIG, "%s %s: response headers over %zu bytes",
				                       method, oc->url, MAX_HEADER_BYTES);
			} else if (x.resend_refused) {
				oc->kind = OUT_FATAL;
				oc->error = ferror_set(FACTORY_EUPSTREAM,
				                       "%s %s: connection closed before any answer; "
				                       "not sent again as the server may have acted on it",
				                       method, oc->url);
			} else if (x.sink_rc) {
				oc->kind = OUT_FATAL;
				oc->error = x.sink_rc < 0
				                    ? x.sink_rc
				                    : ferror_set(FACTORY_ERR, "%s %s: transfer stopped by the caller",
				                                 method, oc->url);
			} else {
				/* A response cut short is no response: the caller
				 * must not judge a status whose body never came. */
				oc->kind = OUT_NETWORK;
				oc->cc = cc;
				out->status = 0;
			}
			goto cleanup;
		}
		if (!out->effective_url) {
			oc->kind = OUT_FATAL;
			oc->error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}

		next = NULL;
		if (c->opts.follow_redirects && is_redirect(status))
			curl_easy_getinfo(c->curl, CURLINFO_REDIRECT_URL, &next);
		if (!next) {
			oc->kind = OUT_RESPONSE;
			goto cleanup;
		}
		if (hop == MAX_REDIRECTS) {
			oc->kind = OUT_FATAL;
			oc->error = ferror_set(FACTORY_EUPSTREAM, "%s %s: more than %d redirects", method, oc->url,
			                       MAX_REDIRECTS);
			goto cleanup;
		}
		/* 303 always, and 301/302 after a POST (as browsers and curl do),
		 * go on with a GET without body; 307/308 keep method and body. */
		if ((status == 303 && !method_is(method, "HEAD")) ||
		    ((status == 301 || status == 302) && method_is(method, "POST"))) {
			method = "GET";
			body = NULL;
			body_len = 0;
		}
		free(url);
		if (!(url = strdup(next))) {
			oc->kind = OUT_FATAL;
			oc->error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	}
cleanup:
	curl_slist_free_all(hdrs);
	fbuf_release(&x.headers);
	free(url);
}

/* Transport failures worth another try. */
static int network_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

/* Failures that certainly happened before the request was sent. */
static int before_send(CURLcode cc)
{
	return cc == CURLE_COULDNT_RESOLVE_PROXY || cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_CONNECT ||
	       cc == CURLE_SSL_CONNECT_ERROR;
}

static int status_retryable(long s)
{
	return s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

/* Milliseconds from now until unix time `t` (0 if past), capped. */
static long ms_until(time_t t, time_t now)
{
	if (t <= now)
		return 0;
	if (t - now > MAX_SERVER_WAIT_MS / 1000)
		return MAX_SERVER_WAIT_MS;
	return (long)(t - now) * 1000;
}

/*
 * The wait before the next try, per http.h: Retry-After (seconds or an
 * HTTP date), then RateLimit-Reset (a unix time; small values are taken as
 * seconds from now, as some proxies send them), then exponential backoff
 * with full jitter. RateLimit-Reset says when the throttle window ends, so
 * it is used only when the response says the client is throttled (429, or
 * RateLimit-Remaining: 0), not for a plain 502.
 */
static long retry_wait(http_client *c, const http_response *r, int retry_index, const char **why)
{
	char v[128];
	time_t now = time(NULL), t;
	long n, cap;
	int ok, throttled;

	if (r->status && !http_response_header(v, sizeof(v), r, "Retry-After") && v[0]) {
		n = parse_long(v, &ok);
		if (ok && n >= 0) {
			*why = "Retry-After";
			return n > MAX_SERVER_WAIT_MS / 1000 ? MAX_SERVER_WAIT_MS : n * 1000;
		}
		if (!ok && (t = curl_getdate(v, NULL)) != -1) {
			*why = "Retry-After";
			return ms_until(t, now);
		}
	}
	throttled = r->status == 429 || (r->status && !http_response_header(v, sizeof(v), r, "RateLimit-Remaining") &&
	                                 parse_long(v, &ok) == 0 && ok);
	if (throttled && !http_response_header(v, sizeof(v), r, "RateLimit-Reset")) {
		n = parse_long(v, &ok);
		if (ok && n >= 0) {
			*why = "RateLimit-Reset";
			if (n < 1000000000L)
				return n > MAX_SERVER_WAIT_MS / 1000 ? MAX_SERVER_WAIT_MS : n * 1000;
			return ms_until((time_t)n, now);
		}
	}
	*why = "backoff";
	cap = c->opts.backoff_base_ms > 0 ? c->opts.backoff_base_ms : 1;
	while (retry_index-- > 0 && cap < c->opts.backoff_max_ms)
		cap = cap > LONG_MAX / 2 ? LONG_MAX : cap * 2;
	if (c->opts.backoff_max_ms > 0 && cap > c->opts.backoff_max_ms)
		cap = c->opts.backoff_max_ms;
	return (long)(next_rand(c) % ((uint64_t)cap + 1));
}

static const char *tries_word(int n)
{
	return n == 1 ? "try" : "tries";
}

int http_do(http_response *out, http_client *c, const http_request *req)
{
	outcome oc;
	char what[CURL_ERROR_SIZE + 32];
	const char *why, *detail;
	long wait, left;
	int attempt, retryable, error = -1;

	http_response_release(out);
	http_response_init(out);
	fbuf_init(&out->body, c->opts.max_response);
	if (!req || !req->method || !req->url || !*req->method || !*req->url)
		return ferror_set(FACTORY_ERR, "http request without method or url");

	for (attempt = 1;; attempt++) {
		out->attempts = attempt;
		pace_before(c, req);
		run_chain(&oc, c, req, out);
		if (oc.kind == OUT_FATAL) {
			error = oc.error;
			goto cleanup;
		}
		if (oc.kind == OUT_RESPONSE)
			retryable = status_retryable(out->status) && (out->status != 500 || is_idempotent(req->method));
		else
			retryable = network_retryable(oc.cc) && (is_idempotent(req->method) || before_send(oc.cc));
		/* What went to the sink cannot be taken back. */
		if (oc.sunk)
			retryable = 0;
		if (!retryable || attempt > c->opts.max_retries)
			break;
		wait = retry_wait(c, out, attempt - 1, &why);
		left = c->opts.retry_budget_ms - c->stats.slept_ms;
		if (oc.kind == OUT_RESPONSE)
			snprintf(what, sizeof(what), "status %ld", out->status);
		else
			snprintf(what, sizeof(what), "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(oc.cc));
		if (wait > left) {
			log_warn("%s %s: %s, not trying again: a wait of %ld ms (%s) is over what is left of the "
			         "retry budget (%ld ms)",
			         req->method, oc.url, what, wait, why, left > 0 ? left : 0);
			break;
		}
		log_warn("%s %s: %s, trying again in %ld ms (%s; try %d of %d)", req->method, oc.url, what, wait, why,
		         attempt + 1, c->opts.max_retries + 1);
		client_sleep(c, wait);
		c->stats.slept_ms += wait;
		c->stats.retries++;
	}

	if (oc.kind == OUT_RESPONSE) {
		if (status_retryable(out->status)) {
			error = ferror_set(FACTORY_EUPSTREAM, "%s %s: status %ld (%d %s)", req->method, oc.url,
			                   out->status, attempt, tries_word(attempt));
			goto cleanup;
		}
		error = 0;
		goto cleanup;
	}
	detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(oc.cc);
	error = ferror_set(FACTORY_EUPSTREAM, "%s %s: %s (%d %s)", req->method, oc.url, detail, attempt,
	                   tries_word(attempt));
cleanup:
	return error;
}
