/*
 * server.h - intake's HTTP server (libmicrohttpd, a pool of threads each
 * with its own epoll loop). A submission waiting for the disk does not hold
 * a thread: its connection is suspended and resumed by the spool's flusher
 * (spool_append_async), so one slow sync never queues other requests.
 *
 *   POST    /v1/feedback   a submission, JSON or form-encoded (feedback.h);
 *                          202 {"id", "status": "accepted"} once it is in the
 *                          spool and synced to disk; 4xx JSON errors
 *                          {"error", "message", "fields"}; an HTML page
 *                          instead when a browser form posts without
 *                          JavaScript (Accept: text/html)
 *   OPTIONS /v1/feedback   CORS preflight
 *   GET     /widget.js     the widget (ETag, Cache-Control, 304)
 *   GET     /widget.css    the stylesheet of the no-JavaScript form
 *   GET     /feedback      the no-JavaScript form
 *   GET     /healthz       200 {"status": "ok", "spool": {...}, "delivery": {...}}
 *
 * Guards, in the order a POST meets them: the origin allow-list (403
 * origin_not_allowed; requests without Origin, such as API clients, pass),
 * the per-client rate limit (429 rate_limited with Retry-After), the body
 * cap (413 body_too_large, checked against Content-Length before reading
 * and while reading), a body upload deadline (the connection is closed),
 * parsing and validation
 * (400/415/422, feedback.h), the honeypot (422 rejected), the minimum fill
 * time when the widget's elapsed_ms is present (422 too_fast), then
 * duplicate folding (202 with the first submission's id and
 * "duplicate": true). A failure to store answers 503 with Retry-After.
 * Idle connections are closed after timeout_s; each client may hold at most
 * max_conns_per_client connections.
 */
#ifndef FACTORY_INTAKE_SERVER_H
#define FACTORY_INTAKE_SERVER_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "spool.h"

typedef struct intake_server intake_server;

typedef struct {
	const char *listen;            /* "HOST:PORT", "[v6]:PORT"; port 0 picks one */
	const char *allowed_origins;   /* comma-separated origins, "*" for any; NULL/"" none */
	size_t max_body;               /* bytes, default 65536 */
	long rate_per_minute;          /* per client; 0 no limit */
	long rate_burst;               /* bucket size; 0: same as rate_per_minute */
	long min_fill_ms;              /* with elapsed_ms present; 0 no check */
	long dedup_window_s;           /* 0 no folding */
	long timeout_s;                /* idle connection timeout */
	long body_deadline_s;          /* whole body upload */
	int threads;                   /* pool size (default: one per core) */
	int max_conns_per_client;      /* 0: no limit */
	int trust_proxy;               /* client address from X-Forwarded-For */
	long cache_max_age_s;          /* for /widget.js */
	/* Adds the delivery status to /healthz (may be NULL). */
	int (*status_fn)(cJSON *parent, void *ctx);
	void *status_ctx;
} intake_server_options;

void intake_server_options_init(intake_server_options *o);

/* Start serving. Returns 0, FACTORY_ECONFIG (bad listen address, bad
 * origin list) or FACTORY_ERR (cannot bind: the message says why). */
int intake_server_start(intake_server **out, const intake_server_options *o, spool *sp);
/* The address actually bound, "host:port" (port filled in when 0 was asked). */
const char *intake_server_address(const intake_server *s);
/* Stop accepting and finish the requests in flight (the stats are final
 * after it). Calling it again does nothing. */
void intake_server_stop(intake_server *s);
/* Stop if still running, then free everything. NULL is fine. */
void intake_server_free(intake_server *s);

typedef struct {
	long accepted;       /* stored in the spool (even when the client left before the answer) */
	long duplicates;     /* folded into an earlier one */
	long rejected;       /* 4xx answers to POST /v1/feedback */
	long rate_limited;   /* of which 429 */
	long store_failed;   /* 503 */
} intake_server_stats;
void intake_server_get_stats(intake_server_stats *out, const intake_server *s);

#endif
