/*
 * testserver.h - a tiny scripted HTTP/1.1 server for unit tests, header-only.
 *
 * It listens on 127.0.0.1 on a port the kernel picks, records every
 * request (method, target, headers, body) and answers each with the next
 * raw response of its script, or with what a handler function builds. A
 * step of the script can wait before answering, close the connection after
 * answering, or drop the connection without a word; truncated bodies and
 * redirects are just raw responses. Each connection has its own thread, so
 * keep-alive and several clients (or redirects between two servers) work.
 *
 *   ts_server *s = ts_start();
 *   ts_reply(s, 200, "OK", "X-A: 1\r\n", "[]");
 *   ts_push(s, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 0, 0);
 *   char url[256]; ts_url(url, sizeof(url), s, "/api/v4/x");
 *   ... run the client ...
 *   cr_assert_eq(ts_count(s), 2);
 *   ts_stop(s);
 *
 * Unanswered requests (script exhausted, no handler) get "418 no script"
 * so a test that sends more than it planned fails visibly.
 */
#ifndef FACTORY_TESTSERVER_H
#define FACTORY_TESTSERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Every helper is static and may go unused by a given test file. */
#define TS_FN static __attribute__((unused))

#define TS_MAX_CONN 64
#define TS_MAX_REQUEST ((size_t)16 << 20)

enum {
	TS_CLOSE = 1, /* close the connection after the answer */
	TS_DROP = 2,  /* close the connection instead of answering */
};

typedef struct {
	char method[16];
	char target[8192]; /* as sent: "/path?query" */
	char *headers;     /* raw header lines, "Name: value\r\n"... */
	char *body;        /* NUL-terminated copy, body_len bytes */
	size_t body_len;
	int conn; /* number of the connection it came on (1-based) */
} ts_request;

/* Build an answer for `req`: a malloc'd raw response (*len bytes), or NULL
 * to take the next step of the script. *flags may be set to TS_CLOSE/TS_DROP. */
typedef char *(*ts_handler)(void *ctx, const ts_request *req, size_t *len, int *flags);

typedef struct {
	char *raw;
	size_t len;
	int delay_ms;
	int flags;
} ts_step;

typedef struct ts_server ts_server;

typedef struct {
	ts_server *s;
	int fd;
	int num;
} ts_conn;

struct ts_server {
	int fd;
	int port;
	pthread_t accept_thread;
	pthread_mutex_t lock;
	int stop;
	ts_step *steps;
	size_t nsteps, next_step;
	ts_request *reqs;
	size_t nreqs;
	pthread_t threads[TS_MAX_CONN];
	ts_conn *conns[TS_MAX_CONN];
	int nconn;
	ts_handler handler;
	void *handler_ctx;
};

/* memmem without _GNU_SOURCE. */
TS_FN const char *ts_find(const char *hay, size_t len, const char *needle, size_t n)
{
	size_t i;

	for (i = 0; i + n <= len; i++)
		if (!memcmp(hay + i, needle, n))
			return hay + i;
	return NULL;
}

TS_FN int ts_stopping(ts_server *s)
{
	int v;

	pthread_mutex_lock(&s->lock);
	v = s->stop;
	pthread_mutex_unlock(&s->lock);
	return v;
}

TS_FN void ts_sleep_ms(ts_server *s, int ms)
{
	struct timespec ts = {0, 10 * 1000000L};

	while (ms > 0 && !ts_stopping(s)) {
		nanosleep(&ts, NULL);
		ms -= 10;
	}
}

TS_FN int ts_send_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Value of header `name` in a raw block, copied into `out`; 0 if found. */
TS_FN int ts_header(char *out, size_t len, const char *raw, const char *name)
{
	size_t n = strlen(name), k;
	const char *line = raw, *end, *v;

	while (line && *line) {
		end = strstr(line, "\r\n");
		if (!end)
			end = line + strlen(line);
		if ((size_t)(end - line) > n && !strncasecmp(line, name, n) && line[n] == ':') {
			v = line + n + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			k = (size_t)(end - v);
			if (k >= len)
				k = len - 1;
			memcpy(out, v, k);
			out[k] = '\0';
			return 0;
		}
		line = *end ? end + 2 : end;
	}
	if (len)
		out[0] = '\0';
	return -1;
}

/* Whether request `r` carried header `name`. */
TS_FN int ts_has_header(const ts_request *r, const char *name)
{
	char v[8];
	return ts_header(v, sizeof(v), r->headers, name) == 0;
}

TS_FN void *ts_conn_main(void *arg)
{
	ts_conn *c = arg;
	ts_server *s = c->s;
	char *buf = NULL, *hend, *line_end, *sp1, *sp2, *answer = NULL;
	size_t len = 0, cap = 65536, need, body_len, alen;
	ts_request req;
	ts_step step;
	struct pollfd pfd;
	ssize_t n;
	char cl[32];
	int flags, delay, own;

	buf = malloc(cap);
	if (!buf)
		goto done;
	for (;;) {
		/* Read until a whole request (headers and body) is in. */
		for (;;) {
			hend = len ? (char *)ts_find(buf, len, "\r\n\r\n", 4) : NULL;
			if (hend) {
				size_t hl = (size_t)(hend - buf) + 4;
				char save = buf[hl - 2];
				buf[hl - 2] = '\0';
				body_len = ts_header(cl, sizeof(cl), buf, "Content-Length") == 0 ? strtoul(cl, NULL, 10)
				                                                                 : 0;
				buf[hl - 2] = save;
				need = hl + body_len;
				if (need > TS_MAX_REQUEST)
					goto done;
				if (len >= need)
					break;
			}
			if (len == cap) {
				char *nb;
				if (cap >= TS_MAX_REQUEST || !(nb = realloc(buf, cap * 2)))
					goto done;
				buf = nb;
				cap *= 2;
			}
			pfd.fd = c->fd;
			pfd.events = POLLIN;
			pfd.revents = 0;
			if (ts_stopping(s))
				goto done;
			if (poll(&pfd, 1, 20) <= 0)
				continue;
			n = recv(c->fd, buf + len, cap - len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				goto done;
			len += (size_t)n;
		}

		/* Parse and record it. */
		memset(&req, 0, sizeof(req));
		req.conn = c->num;
		line_end = (char *)ts_find(buf, (size_t)(hend - buf) + 2, "\r\n", 2);
		sp1 = memchr(buf, ' ', (size_t)(line_end - buf));
		sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
		if (!sp1 || !sp2)
			goto done;
		snprintf(req.method, sizeof(req.method), "%.*s", (int)(sp1 - buf), buf);
		snprintf(req.target, sizeof(req.target), "%.*s", (int)(sp2 - sp1 - 1), sp1 + 1);
		req.headers = strndup(line_end + 2, (size_t)(hend + 2 - (line_end + 2)));
		req.body_len = body_len;
		req.body = malloc(body_len + 1);
		if (!req.headers || !req.body) {
			free(req.headers);
			free(req.body);
			goto done;
		}
		memcpy(req.body, hend + 4, body_len);
		req.body[body_len] = '\0';

		pthread_mutex_lock(&s->lock);
		{
			ts_request *nr = realloc(s->reqs, (s->nreqs + 1) * sizeof(*nr));
			if (!nr) {
				pthread_mutex_unlock(&s->lock);
				free(req.headers);
				free(req.body);
				goto done;
			}
			s->reqs = nr;
			s->reqs[s->nreqs++] = req;
		}
		/* Pick the answer. */
		answer = NULL;
		alen = 0;
		flags = 0;
		delay = 0;
		own = 0;
		if (s->handler) {
			answer = s->handler(s->handler_ctx, &s->reqs[s->nreqs - 1], &alen, &flags);
			own = answer != NULL;
		}
		if (!answer && s->next_step < s->nsteps) {
			step = s->steps[s->next_step++];
			answer = step.raw;
			alen = step.len;
			flags = step.flags;
			delay = step.delay_ms;
		}
		pthread_mutex_unlock(&s->lock);
		if (!answer) {
			answer = "HTTP/1.1 418 no script\r\nContent-Length: 9\r\n\r\nno script";
			alen = strlen(answer);
		}
		if (delay)
			ts_sleep_ms(s, delay);
		if (flags & TS_DROP) {
			if (own)
				free(answer);
			goto done;
		}
		if (ts_send_all(c->fd, answer, alen) < 0) {
			if (own)
				free(answer);
			goto done;
		}
		if (own)
			free(answer);
		if (flags & TS_CLOSE)
			goto done;
		memmove(buf, buf + need, len - need);
		len -= need;
	}
done:
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	free(buf);
	return NULL;
}

TS_FN void *ts_accept_main(void *arg)
{
	ts_server *s = arg;
	struct pollfd pfd;
	ts_conn *c;
	int fd;

	while (!ts_stopping(s)) {
		pfd.fd = s->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		fd = accept(s->fd, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&s->lock);
		if (s->nconn == TS_MAX_CONN || !(c = calloc(1, sizeof(*c)))) {
			pthread_mutex_unlock(&s->lock);
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		c->num = s->nconn + 1;
		if (pthread_create(&s->threads[s->nconn], NULL, ts_conn_main, c) != 0) {
			pthread_mutex_unlock(&s->lock);
			close(fd);
			free(c);
			continue;
		}
		s->conns[s->nconn++] = c;
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

/* Start a server; NULL on failure. */
TS_FN ts_server *ts_start(void)
{
	ts_server *s = calloc(1, sizeof(*s));
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1;

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		goto fail;
	setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = 0;
	if (bind(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s->fd, 64) < 0 ||
	    getsockname(s->fd, (struct sockaddr *)&a, &alen) < 0)
		goto fail;
	s->port = ntohs(a.sin_port);
	if (pthread_create(&s->accept_thread, NULL, ts_accept_main, s) != 0)
		goto fail;
	return s;
fail:
	if (s->fd >= 0)
		close(s->fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return NULL;
}

/* Stop the server, wait for its threads and free everything. */
TS_FN void ts_stop(ts_server *s)
{
	size_t i;
	int k;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = 1;
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->accept_thread, NULL);
	for (k = 0; k < s->nconn; k++) {
		pthread_join(s->threads[k], NULL);
		free(s->conns[k]);
	}
	close(s->fd);
	for (i = 0; i < s->nsteps; i++)
		free(s->steps[i].raw);
	free(s->steps);
	for (i = 0; i < s->nreqs; i++) {
		free(s->reqs[i].headers);
		free(s->reqs[i].body);
	}
	free(s->reqs);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Add a raw response to the script (copied; len 0: strlen). */
TS_FN void ts_push_raw(ts_server *s, const char *raw, size_t len, int delay_ms, int flags)
{
	ts_step *ns;

	if (!len && raw)
		len = strlen(raw);
	pthread_mutex_lock(&s->lock);
	ns = realloc(s->steps, (s->nsteps + 1) * sizeof(*ns));
	if (ns) {
		s->steps = ns;
		s->steps[s->nsteps].raw = malloc(len + 1);
		if (s->steps[s->nsteps].raw) {
			if (len)
				memcpy(s->steps[s->nsteps].raw, raw, len);
			s->steps[s->nsteps].raw[len] = '\0';
			s->steps[s->nsteps].len = len;
			s->steps[s->nsteps].delay_ms = delay_ms;
			s->steps[s->nsteps].flags = flags;
			s->nsteps++;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

TS_FN void ts_push(ts_server *s, const char *raw, int delay_ms, int flags)
{
	ts_push_raw(s, raw, 0, delay_ms, flags);
}

/* A malloc'd string built printf-style (for handlers and scripts). */
TS_FN char *ts_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
TS_FN char *ts_fmt(const char *fmt, ...)
{
	va_list ap;
	char *out;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(out = malloc((size_t)n + 1)))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(out, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return out;
}

/* A whole response: status line, Content-Length, `headers` (each line
 * ending in "\r\n", may be NULL) and `body`. malloc'd. */
TS_FN char *ts_response(int status, const char *reason, const char *headers, const char *body)
{
	return ts_fmt("HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n%s", status, reason, body ? strlen(body) : 0,
	              headers ? headers : "", body ? body : "");
}

/* Script a response built by ts_response(). */
TS_FN void ts_reply(ts_server *s, int status, const char *reason, const char *headers, const char *body)
{
	char *r = ts_response(status, reason, headers, body);

	if (r) {
		ts_push(s, r, 0, 0);
		free(r);
	}
}

TS_FN void ts_set_handler(ts_server *s, ts_handler fn, void *ctx)
{
	pthread_mutex_lock(&s->lock);
	s->handler = fn;
	s->handler_ctx = ctx;
	pthread_mutex_unlock(&s->lock);
}

/* Requests received so far. */
TS_FN size_t ts_count(ts_server *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->nreqs;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Connections accepted so far. */
TS_FN int ts_connections(ts_server *s)
{
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->nconn;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Request number `i` (0-based). The pointer stays valid until the next
 * request arrives; read it after the client is done. */
TS_FN const ts_request *ts_req(ts_server *s, size_t i)
{
	const ts_request *r = NULL;

	pthread_mutex_lock(&s->lock);
	if (i < s->nreqs)
		r = &s->reqs[i];
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* "http://127.0.0.1:<port><path>" into `out`. */
TS_FN void ts_url(char *out, size_t len, const ts_server *s, const char *path)
{
	snprintf(out, len, "http://127.0.0.1:%d%s", s->port, path);
}

/* A port on 127.0.0.1 where nothing listens (connections are refused). */
TS_FN int ts_closed_port(void)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

	if (fd < 0)
		return 0;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

#endif
