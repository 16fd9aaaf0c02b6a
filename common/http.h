/*
 * http.h - HTTP over libcurl: timeouts, retries with backoff and jitter,
 * capped responses, TLS verification always on.
 *
 * Retries: a request is tried again on network errors (cannot connect,
 * reset, timeout, truncated body), on 429 and on 500/502/503/504, up to
 * opts.max_retries more times and while the total time slept stays within
 * opts.retry_budget_ms. The wait before the next try is, in this order:
 *   1. Retry-After (seconds or an HTTP date),
 *   2. RateLimit-Reset (a unix time; the wait is reset - now),
 *   3. exponential backoff from backoff_base_ms, doubled each try, capped
 *      at backoff_max_ms, with full jitter.
 * A wait longer than what is left of the budget ends the retries. A request
 * whose method is not idempotent (POST, PATCH) is retried only when it
 * certainly did not reach the server (connect failure, 429, 502/503/504),
 * never after a 500 or a connection dropped mid-response, so a create is
 * not made twice.
 *
 * Details of the above: RateLimit-Reset is used when the response says the
 * client is throttled (429, or RateLimit-Remaining: 0); values below 10^9
 * are taken as seconds from now. Nothing is retried once part of a body
 * went to a sink. libcurl's own resend of a request on a reused keep-alive
 * connection that died before any answer counts as a retry in the stats,
 * and is refused for POST/PATCH (FACTORY_EUPSTREAM). A response cut short
 * (truncated body, reset) is a network failure: status 0.
 *
 * TLS peer and host verification are always on. The CA bundle is
 * opts.ca_file when set, else $FACTORY_CA_FILE, else $CI_SERVER_TLS_CA_FILE,
 * else curl's default. Proxies come from the usual environment variables
 * (http_proxy, https_proxy, no_proxy), as libcurl reads them. Every request
 * sends "User-Agent: factory/<version>". Redirects are followed (at most 5)
 * when opts.follow_redirects is set, keeping the method for 307/308; the
 * Authorization/PRIVATE-TOKEN headers are not sent to another host.
 * (They are followed hop by hop here, not by libcurl, which would forward
 * custom headers; "another host" means another scheme, host or port. 303,
 * and 301/302 after a POST, go on as a GET without body.)
 *
 * Pacing (one API budget for every job sharing a token): each response's
 * RateLimit-Remaining, -Limit, -Observed and -Reset are read. The window's
 * quota is RateLimit-Observed + RateLimit-Remaining when both are sent
 * (GitLab rounds RateLimit-Limit to a per-minute figure when its window is
 * not a minute), else RateLimit-Limit. When Remaining falls below
 * opts.pace_below_pct percent of the quota, the client slows down BEFORE
 * it is refused: the next request waits
 *     time to the reset / (Remaining - reserve + 1)
 * so the requests left are spread over the rest of the window, and with
 * Remaining at or under the reserve it waits for the reset itself. The
 * reserve (opts.pace_reserve; -1, the default, means a tenth of the pacing
 * zone) is left for the other jobs on the same token: each of them sends
 * at most one request on what it saw before it sees the low count too, so
 * N jobs stay under the limit with a reserve of N - 1. The time to the
 * reset is measured on the server's clock (Reset minus the response's
 * Date) when the response has a Date, so a skewed local clock does not
 * shorten it. The wait is counted from when the response came (time spent
 * since, and any retry wait slept since, counts), is slept through the
 * http_set_sleep() hook, is counted in http_stats.paced/paced_ms (not in
 * the retry budget), and is never longer than opts.retry_budget_ms: a
 * longer one is cut to it with a warning that says so. A response without
 * these headers leaves the plan as it was. GitLab's application limits
 * (issue and note creation) are not in the headers; a 429 from them is
 * retried as above.
 */
#ifndef FACTORY_HTTP_H
#define FACTORY_HTTP_H

#include <stddef.h>

#include "buf.h"

typedef struct {
	long connect_timeout_ms;  /* default 10000 */
	long timeout_ms;          /* whole transfer, default 60000 */
	int max_retries;          /* default 5 */
	long retry_budget_ms;     /* total sleep across retries, default 120000 */
	long backoff_base_ms;     /* default 500 */
	long backoff_max_ms;      /* default 30000 */
	size_t max_response;      /* cap on a buffered body, default 64 MiB */
	int follow_redirects;     /* default 1 */
	const char *ca_file;      /* NULL: see above; not copied */
	int pace_below_pct;       /* pace when RateLimit-Remaining is under this % of the quota;
				   * default 10, 0 turns pacing off */
	long pace_reserve;        /* requests left for other jobs; default -1: a tenth of the zone */
} http_options;

/* Fill `o` with the defaults above. */
void http_options_init(http_options *o);

typedef struct http_client http_client;

/* Create a client (one curl easy handle, reused for keep-alive). The options
 * are copied. Returns 0, or FACTORY_ENOMEM/FACTORY_ERR with ferror set. */
int http_client_new(http_client **out, const http_options *opts);
/* Free the client; NULL is fine. */
void http_client_free(http_client *c);

/* Called with each chunk of a streamed body; return non-zero to abort. */
typedef int (*http_sink_fn)(void *ctx, const char *data, size_t len);

typedef struct {
	const char *method;            /* "GET", "POST", "PUT", "DELETE", ... */
	const char *url;               /* absolute URL */
	const char *const *headers;    /* NULL-terminated "Name: value" list, or NULL */
	const char *body;              /* request body or NULL */
	size_t body_len;
	http_sink_fn sink;             /* when set, a 2xx body is streamed there, not buffered;
					* other bodies (errors) are still buffered in out->body.
					* A negative return is handed back by http_do. */
	void *sink_ctx;
} http_request;

typedef struct {
	long status;          /* final HTTP status, 0 if none */
	fbuf body;            /* buffered body (empty when a sink was used) */
	char *headers;        /* raw headers of the final response, "Name: value\r\n"... */
	char *effective_url;  /* URL after redirects */
	int attempts;         /* tries made, >= 1 */
} http_response;

void http_response_init(http_response *r);
void http_response_release(http_response *r);
/* Value of header `name` (case-insensitive) in the final response, copied
 * into `out` (capped at out_len, NUL-terminated). Returns 0 if found, else
 * FACTORY_ENOTFOUND. */
int http_response_header(char *out, size_t out_len, const http_response *r, const char *name);

/*
 * Perform `req`, with the retries described above. Returns 0 whenever an
 * HTTP response was received, whatever its status (the caller judges it),
 * including a final 429/5xx after retries ran out: then the return value is
 * FACTORY_EUPSTREAM and `out` still holds that last response. Network
 * failure after retries: FACTORY_EUPSTREAM. Body over the cap:
 * FACTORY_ETOOBIG. The caller releases `out` in every case.
 */
int http_do(http_response *out, http_client *c, const http_request *req);

/* Counters since the client was made. */
typedef struct {
	long requests;    /* HTTP requests sent, retries included */
	long retries;     /* of which were retries */
	long slept_ms;    /* total backoff */
	long ratelimit_remaining; /* last RateLimit-Remaining seen, -1 if none */
	long ratelimit_reset;     /* last RateLimit-Reset seen (unix time), -1 if none */
	long ratelimit_limit;     /* last RateLimit-Limit seen, -1 if none */
	long throttled;           /* 429 responses received */
	long paced;               /* requests that waited because of pacing */
	long paced_ms;            /* total pacing wait (not part of slept_ms) */
} http_stats;
void http_client_stats(http_stats *out, const http_client *c);

/* Percent-encode `in` for a URL path segment or query value into `out`. */
int http_escape(fbuf *out, const char *in);

/* 1 when URLs `a` and `b` have the same origin (scheme, host and port, the
 * default port filled in), else 0, also when either does not parse. Used to
 * decide whether a URL may receive credentials meant for the other. */
int http_same_origin(const char *a, const char *b);

/* Wait `ms` through the sleep hook below as pacing, for a caller that
 * knows of a limit the headers do not show (gitlab.h's note spacing): it is
 * counted in http_stats.paced/paced_ms and toward the wait the rate-limit
 * plan still owes. */
void http_client_pause(http_client *c, long ms);

/* Sleep function used for backoff; tests may replace it to record waits. */
typedef void (*http_sleep_fn)(long ms);
void http_set_sleep(http_sleep_fn fn);

#endif
