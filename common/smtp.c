/* smtp.c - one plain-text email at a time over SMTP with libcurl. */
#include "smtp.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "error.h"
#include "log.h"

#define ADDR_MAX 254
#define NAME_MAX_BYTES 200
#define SUBJECT_MAX 998
#define SECRET_FILE_MAX 4096
#define MESSAGE_MAX ((size_t)4 << 20)
#define QP_LINE 76

struct smtp {
	char *url;
	char *from;      /* as configured */
	char *from_addr; /* the address alone */
	char *username;
	char *password;
	char *domain; /* of the sender, for Message-ID */
	smtp_tls tls;
	long timeout_ms, connect_timeout_ms, backoff_ms;
	int max_retries;
	char *ca_file;
	smtp_stats stats;
};

static void default_sleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static smtp_sleep_fn sleep_fn = default_sleep;

void smtp_set_sleep(smtp_sleep_fn fn)
{
	sleep_fn = fn ? fn : default_sleep;
}

void smtp_options_init(smtp_options *o)
{
	memset(o, 0, sizeof(*o));
	o->tls = SMTP_TLS_STARTTLS;
	o->timeout_ms = 30000;
	o->connect_timeout_ms = 10000;
	o->max_retries = 3;
	o->backoff_ms = 1000;
}

static int read_secret_file(char **out, const char *path)
{
	FILE *f = fopen(path, "rb");
	char buf[SECRET_FILE_MAX + 1];
	size_t n;

	if (!f)
		return ferror_set(FACTORY_ECONFIG, "cannot read smtp.password_file %s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (n > SECRET_FILE_MAX) {
		memset(buf, 0, sizeof(buf));
		return ferror_set(FACTORY_ECONFIG, "smtp.password_file %s is over %d bytes", path, SECRET_FILE_MAX);
	}
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	if (!n || memchr(buf, '\0', n))
		return ferror_set(FACTORY_ECONFIG, "smtp.password_file %s is empty or binary", path);
	*out = strdup(buf);
	memset(buf, 0, sizeof(buf));
	return *out ? 0 : ferror_set(FACTORY_ENOMEM, "out of memory");
}

int smtp_options_from_config(smtp_options *o, char **password_out, const fconfig *cfg)
{
	const char *tls, *file;
	long n;
	int error;

	smtp_options_init(o);
	*password_out = NULL;
	o->url = fconfig_get_str(cfg, "smtp.url", NULL);
	if (!o->url || !*o->url) {
		o->url = NULL;
		return 0;
	}
	if ((error = fconfig_require(&o->from, cfg, "smtp.from")) < 0)
		return error;
	o->username = fconfig_get_str(cfg, "smtp.username", NULL);
	o->password = fconfig_get_str(cfg, "smtp.password", NULL);
	if (o->password && !*o->password)
		o->password = NULL;
	if (!o->password && (file = fconfig_get_str(cfg, "smtp.password_file", NULL)) && *file) {
		if ((error = read_secret_file(password_out, file)) < 0)
			return error;
		o->password = *password_out;
	}
	if (o->password)
		log_add_secret(o->password);
	tls = fconfig_get_str(cfg, "smtp.tls", "starttls");
	if (!strcasecmp(tls, "starttls"))
		o->tls = SMTP_TLS_STARTTLS;
	else if (!strcasecmp(tls, "none"))
		o->tls = SMTP_TLS_NONE;
	else
		return ferror_set(FACTORY_ECONFIG, "bad setting smtp.tls=%s: expected starttls or none", tls);
	if ((error = fconfig_get_long(&n, cfg, "smtp.timeout_ms", o->timeout_ms, 100, 600000)) < 0)
		return error;
	o->timeout_ms = n;
	if ((error = fconfig_get_long(&n, cfg, "smtp.max_retries", o->max_retries, 0, 20)) < 0)
		return error;
	o->max_retries = (int)n;
	if ((error = fconfig_get_long(&n, cfg, "smtp.backoff_ms", o->backoff_ms, 1, 600000)) < 0)
		return error;
	o->backoff_ms = n;
	o->ca_file = getenv("FACTORY_CA_FILE");
	if (o->ca_file && !*o->ca_file)
		o->ca_file = NULL;
	return 0;
}

/* ---- addresses ---- */

int smtp_address_valid(const char *addr)
{
	const char *at, *p;
	size_t len;

	if (!addr || (len = strlen(addr)) < 3 || len > ADDR_MAX)
		return 0;
	for (p = addr; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c >= 0x7f || strchr("<>,;\"\\()[]:", c))
			return 0;
	}
	at = strchr(addr, '@');
	if (!at || at == addr || strchr(at + 1, '@') || (size_t)(at - addr) > 64)
		return 0;
	p = at + 1;
	if (!*p || *p == '.' || !strchr(p, '.') || p[strlen(p) - 1] == '.' || strstr(p, ".."))
		return 0;
	return 1;
}

/* Split "Name <addr>" or "addr" into its parts (new strings). */
static int split_from(char **name, char **addr, const char *from)
{
	const char *lt = strchr(from, '<'), *gt;
	const char *s, *e;

	*name = *addr = NULL;
	if (strpbrk(from, "\r\n"))
		return ferror_set(FACTORY_ECONFIG, "bad setting smtp.from: a line break");
	if (!lt) {
		if (!smtp_address_valid(from))
			return ferror_set(FACTORY_ECONFIG, "bad setting smtp.from=%s: not an email address", from);
		*addr = strdup(from);
		return *addr ? 0 : ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	gt = strchr(lt, '>');
	if (!gt || gt[1] != '\0')
		return ferror_set(FACTORY_ECONFIG, "bad setting smtp.from=%s: expected \"Name <address>\"", from);
	if (!(*addr = strndup(lt + 1, (size_t)(gt - lt - 1))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!smtp_address_valid(*addr)) {
		free(*addr);
		*addr = NULL;
		return ferror_set(FACTORY_ECONFIG, "bad setting smtp.from=%s: not an email address", from);
	}
	s = from;
	e = lt;
	while (s < e && (*s == ' ' || *s == '\t' || *s == '"'))
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '"'))
		e--;
	if (e - s > NAME_MAX_BYTES)
		e = s + NAME_MAX_BYTES;
	if (e > s && !(*name = strndup(s, (size_t)(e - s)))) {
		free(*addr);
		*addr = NULL;
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	return 0;
}

/* ---- encodings ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_base64(fbuf *out, const unsigned char *p, size_t n)
{
	size_t i;
	int error = 0;

	for (i = 0; i + 2 < n && !error; i += 3) {
		char q[4] = {b64[p[i] >> 2], b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)],
		             b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)], b64[p[i + 2] & 63]};
		error = fbuf_put(out, q, 4);
	}
	if (!error && n - i == 1) {
		char q[4] = {b64[p[i] >> 2], b64[(p[i] & 3) << 4], '=', '='};
		error = fbuf_put(out, q, 4);
	} else if (!error && n - i == 2) {
		char q[4] = {b64[p[i] >> 2], b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)], b64[(p[i + 1] & 15) << 2], '='};
		error = fbuf_put(out, q, 4);
	}
	return error;
}

static int plain_ascii(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if ((unsigned char)*s < ' ' || (unsigned char)*s >= 0x7f)
			return 0;
	return n <= max;
}

/* A header value: as is when plain ASCII and short, else RFC 2047
 * encoded-words of at most 39 bytes of UTF-8 each (52 characters of
 * base64, so a folded line stays under 78), folded. */
static int put_header_text(fbuf *out, const char *s)
{
	size_t len = strlen(s), i = 0;
	int error = 0, first = 1;

	if (plain_ascii(s, 70) && !strstr(s, "=?"))
		return fbuf_puts(out, s);
	while (i < len && !error) {
		size_t n = len - i > 39 ? 39 : len - i;
		/* do not split a UTF-8 sequence */
		while (n < len - i && n > 0 && ((unsigned char)s[i + n] & 0xC0) == 0x80)
			n--;
		if (!n)
			n = len - i > 39 ? 39 : len - i;
		if (!first)
			error = fbuf_puts(out, "\r\n ");
		if (!error)
			error = fbuf_puts(out, "=?UTF-8?B?");
		if (!error)
			error = put_base64(out, (const unsigned char *)s + i, n);
		if (!error)
			error = fbuf_puts(out, "?=");
		i += n;
		first = 0;
	}
	return error;
}

/* The display name: as a quoted string when ASCII, else encoded-words. */
static int put_name(fbuf *out, const char *name)
{
	const char *p;
	int error;

	if (!plain_ascii(name, NAME_MAX_BYTES) || strstr(name, "=?"))
		return put_header_text(out, name);
	if ((error = fbuf_putc(out, '"')) < 0)
		return error;
	for (p = name; *p && !error; p++) {
		if (*p == '"' || *p == '\\')
			error = fbuf_putc(out, '\\');
		if (!error)
			error = fbuf_putc(out, *p);
	}
	return error ? error : fbuf_putc(out, '"');
}

/* Quoted-printable (RFC 2045) with "\n" turned into "\r\n". */
static int put_qp(fbuf *out, const char *text)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)text;
	size_t col = 0, start = out->len;
	int error = 0;

	while (*p && !error) {
		char enc[4];
		size_t n;
		int at_start = col == 0;
		int next_is_end = p[1] == '\n' || p[1] == '\0' || (p[1] == '\r' && p[2] == '\n');

		if (*p == '\r' && p[1] == '\n') {
			p++;
			continue;
		}
		if (*p == '\n') {
			error = fbuf_puts(out, "\r\n");
			col = 0;
			p++;
			continue;
		}
		if ((*p >= 33 && *p <= 126 && *p != '=' && !(at_start && *p == '.') &&
		     !(at_start && *p == 'F' && !strncmp((const char *)p, "From ", 5))) ||
		    ((*p == ' ' || *p == '\t') && !next_is_end)) {
			enc[0] = (char)*p;
			n = 1;
		} else {
			enc[0] = '=';
			enc[1] = hex[*p >> 4];
			enc[2] = hex[*p & 15];
			n = 3;
		}
		if (col + n > QP_LINE - 1) {
			if ((error = fbuf_puts(out, "=\r\n")) < 0)
				break;
			col = 0;
			if (n == 1 && (enc[0] == '.' || (enc[0] == 'F' && !strncmp((const char *)p, "From ", 5)))) {
				enc[0] = '=';
				enc[1] = hex[*p >> 4];
				enc[2] = hex[*p & 15];
				n = 3;
			}
		}
		error = fbuf_put(out, enc, n);
		col += n;
		p++;
	}
	if (!error && (out->len < start + 2 || strcmp(out->ptr + out->len - 2, "\r\n") != 0))
		error = fbuf_puts(out, "\r\n");
	return error;
}

int smtp_format(fbuf *out, const char *from, const char *to, const char *subject, const char *text, time_t date,
                const char *message_id)
{
	char *name = NULL, *addr = NULL, datebuf[64];
	struct tm tm;
	int error;

	if (!smtp_address_valid(to))
		return ferror_set(FACTORY_EINVALID, "not an email address (recipient)");
	if (!subject || strpbrk(subject, "\r\n") || strlen(subject) > SUBJECT_MAX)
		return ferror_set(FACTORY_EINVALID, "the subject holds a line break or is too long");
	if (message_id && (strpbrk(message_id, "\r\n <>") || !*message_id))
		return ferror_set(FACTORY_EINVALID, "bad Message-ID");
	if ((error = split_from(&name, &addr, from)) < 0)
		return error == FACTORY_ECONFIG ? ferror_set(FACTORY_EINVALID, "%s", ferror_last()) : error;
	gmtime_r(&date, &tm);
	strftime(datebuf, sizeof(datebuf), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	error = fbuf_puts(out, "From: ");
	if (!error && name)
		error = put_name(out, name);
	if (!error)
		error = fbuf_printf(out, "%s<%s>\r\nTo: <%s>\r\nSubject: ", name ? " " : "", addr, to);
	if (!error)
		error = put_header_text(out, subject);
	if (!error)
		error = fbuf_printf(out, "\r\nDate: %s\r\n", datebuf);
	if (!error && message_id)
		error = fbuf_printf(out, "Message-ID: <%s>\r\n", message_id);
	if (!error)
		error = fbuf_puts(out, "MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n"
		                       "Content-Type: text/plain; charset=UTF-8\r\n"
		                       "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	if (!error)
		error = put_qp(out, text ? text : "");
	free(name);
	free(addr);
	return error;
}

/* ---- the sender ---- */

static int loopback_host(const char *url)
{
	const char *h = strstr(url, "://");
	size_t n;

	if (!h)
		return 0;
	h += 3;
	if (strchr(h, '@') && strchr(h, '@') < h + strcspn(h, "/"))
		h = strchr(h, '@') + 1;
	if (*h == '[')
		return !strncmp(h, "[::1]", 5);
	n = strcspn(h, ":/");
	return (n == 9 && !strncasecmp(h, "localhost", 9)) || (n >= 4 && !strncmp(h, "127.", 4));
}

static char *dup_or_null(const char *s, int *failed)
{
	char *c;

	if (!s)
		return NULL;
	if (!(c = strdup(s)))
		*failed = 1;
	return c;
}

int smtp_new(smtp **out, const smtp_options *o)
{
	smtp *s;
	char *name = NULL;
	int failed = 0, error;

	*out = NULL;
	if (!o->url || (strncasecmp(o->url, "smtp://", 7) != 0 && strncasecmp(o->url, "smtps://", 8) != 0) ||
	    strpbrk(o->url, " \r\n"))
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting smtp.url: expected smtp://host:port or smtps://host:port");
	if (strchr(o->url + 7, '@'))
		return ferror_set(FACTORY_ECONFIG, "bad setting smtp.url: put credentials in smtp.username and "
		                                   "smtp.password, not in the URL");
	if (o->password && !o->username)
		return ferror_set(FACTORY_ECONFIG, "smtp.password is set but smtp.username is not");
	if (o->password && o->tls == SMTP_TLS_NONE && strncasecmp(o->url, "smtps://", 8) != 0 && !loopback_host(o->url))
		return ferror_set(FACTORY_ECONFIG,
		                  "refusing to send SMTP credentials without TLS to a host that is not "
		                  "this machine (smtp.tls=none)");
	if (!(s = calloc(1, sizeof(*s))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if ((error = split_from(&name, &s->from_addr, o->from ? o->from : "")) < 0) {
		smtp_free(s);
		return error;
	}
	free(name);
	s->url = dup_or_null(o->url, &failed);
	s->from = dup_or_null(o->from, &failed);
	s->username = dup_or_null(o->username, &failed);
	s->password = dup_or_null(o->password, &failed);
	s->ca_file = dup_or_null(o->ca_file, &failed);
	s->domain = dup_or_null(strchr(s->from_addr, '@') + 1, &failed);
	if (failed) {
		smtp_free(s);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	if (s->password)
		log_add_secret(s->password);
	s->tls = o->tls;
	s->timeout_ms = o->timeout_ms;
	s->connect_timeout_ms = o->connect_timeout_ms;
	s->max_retries = o->max_retries;
	s->backoff_ms = o->backoff_ms;
	*out = s;
	return 0;
}

void smtp_free(smtp *s)
{
	if (!s)
		return;
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s->url);
	free(s->from);
	free(s->from_addr);
	free(s->username);
	free(s->domain);
	free(s->ca_file);
	free(s);
}

void smtp_get_stats(smtp_stats *out, const smtp *s)
{
	*out = s->stats;
}

typedef struct {
	const char *data;
	size_t len, pos;
	int started; /* the body began to go out: the server may have it */
} upload;

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ctx)
{
	upload *u = ctx;
	size_t room = size * nitems, n = u->len - u->pos;

	if (n > room)
		n = room;
	memcpy(buf, u->data + u->pos, n);
	u->pos += n;
	u->started = 1;
	return n;
}

static int message_id(char *out, size_t len, const char *domain)
{
	static const char hexd[] = "0123456789abcdef";
	unsigned char r[12];
	char hex[2 * sizeof(r) + 1];
	size_t i;
	int n;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		ferror_set(FACTORY_ERR, "no randomness for a Message-ID");
		return FACTORY_ERR;
	}
	for (i = 0; i < sizeof(r); i++) {
		hex[2 * i] = hexd[r[i] >> 4];
		hex[2 * i + 1] = hexd[r[i] & 15];
	}
	hex[2 * sizeof(r)] = '\0';
	n = snprintf(out, len, "factory.%ld.%s@%s", (long)time(NULL), hex, domain);
	if (n < 0 || (size_t)n >= len) {
		ferror_set(FACTORY_ETOOBIG, "the sender's domain is too long for a Message-ID");
		return FACTORY_ETOOBIG;
	}
	return 0;
}

/* One SMTP transaction. *transient says whether trying again is safe. */
static int attempt(smtp *s, const char *to, upload *u, int *transient)
{
	CURL *c = curl_easy_init();
	struct curl_slist *rcpt = NULL;
	char errbuf[CURL_ERROR_SIZE] = "", from[ADDR_MAX + 3], rcptbuf[ADDR_MAX + 3];
	long code = 0;
	CURLcode rc;
	int error;

	*transient = 0;
	if (!c)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	snprintf(from, sizeof(from), "<%s>", s->from_addr);
	snprintf(rcptbuf, sizeof(rcptbuf), "<%s>", to);
	if (!(rcpt = curl_slist_append(NULL, rcptbuf))) {
		curl_easy_cleanup(c);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	curl_easy_setopt(c, CURLOPT_URL, s->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
	curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(c, CURLOPT_READDATA, u);
	curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)u->len);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_USE_SSL, s->tls == SMTP_TLS_NONE ? (long)CURLUSESSL_NONE : (long)CURLUSESSL_ALL);
	if (s->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
	if (s->username)
		curl_easy_setopt(c, CURLOPT_USERNAME, s->username);
	if (s->password)
		curl_easy_setopt(c, CURLOPT_PASSWORD, s->password);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(rcpt);
	curl_easy_cleanup(c);
	s->stats.attempts++;
	if (rc == CURLE_OK)
		return 0;
	if (rc == CURLE_LOGIN_DENIED || code == 530 || code == 534 || code == 535 || code == 538) {
		error = ferror_set(FACTORY_EAUTH, "the mail server refused the credentials: %ld (%s)", code,
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	} else if (code >= 500 && code < 600 && (strstr(errbuf, "RCPT") || u->started)) {
		/* this recipient, or this message: final */
		error = ferror_set(FACTORY_EINVALID, "the mail server refused the message: %ld (%s)", code,
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	} else if (code >= 500 && code < 600) {
		/* the greeting or the sender: every message would fail the same way */
		error = ferror_set(FACTORY_ECONFIG, "the mail server refused the sender or the session: %ld (%s)", code,
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	} else if (code >= 400 && code < 500) {
		*transient = 1; /* the server said "not now": it did not take the message */
		error = ferror_set(FACTORY_EUPSTREAM, "the mail server answered %ld (%s)", code,
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	} else if (rc == CURLE_USE_SSL_FAILED) {
		error = ferror_set(FACTORY_ECONFIG,
		                   "the mail server does not offer STARTTLS (set smtp.tls=none only for "
		                   "a relay on this machine)");
	} else {
		*transient = !u->started && (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
		                             rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING);
		error = ferror_set(FACTORY_EUPSTREAM, "cannot reach the mail server: %s",
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	return error;
}

int smtp_send(smtp *s, const char *to, const char *subject, const char *text)
{
	char mid[160];
	fbuf msg;
	upload u;
	long wait = s->backoff_ms;
	int error, transient, tries;

	if (!smtp_address_valid(to)) {
		s->stats.refused++;
		return ferror_set(FACTORY_EINVALID, "not an email address this sender accepts");
	}
	fbuf_init(&msg, MESSAGE_MAX);
	error = message_id(mid, sizeof(mid), s->domain);
	if (error == 0)
		error = smtp_format(&msg, s->from, to, subject, text, time(NULL), mid);
	if (error < 0)
		goto cleanup;
	for (tries = 0;; tries++) {
		memset(&u, 0, sizeof(u));
		u.data = msg.ptr;
		u.len = msg.len;
		if ((error = attempt(s, to, &u, &transient)) == 0 || !transient || tries >= s->max_retries)
			break;
		log_warn("email: %s; trying again in %ld ms", ferror_last(), wait);
		sleep_fn(wait);
		if (wait < 60000)
			wait *= 2;
	}
	if (!error)
		s->stats.sent++;
	else if (error == FACTORY_EINVALID)
		s->stats.refused++;
	else
		s->stats.failed++;
cleanup:
	fbuf_release(&msg);
	return error;
}
