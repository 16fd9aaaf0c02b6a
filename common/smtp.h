/*
 * smtp.h - sending one plain-text email at a time over SMTP with libcurl.
 *
 * Settings (config.h keys, environment names in brackets):
 *   smtp.url        [FACTORY_SMTP_URL]  smtp://host:port (STARTTLS) or
 *                   smtps://host:port (TLS from the start); unset: no email
 *   smtp.from       [FACTORY_SMTP_FROM] "Name <address>" or "address" (required
 *                   when smtp.url is set)
 *   smtp.username   [FACTORY_SMTP_USERNAME]
 *   smtp.password   [FACTORY_SMTP_PASSWORD], or smtp.password_file
 *                   [FACTORY_SMTP_PASSWORD_FILE]: registered with
 *                   log_add_secret(), never printed, wiped when freed
 *   smtp.tls        [FACTORY_SMTP_TLS] "starttls" (default: smtp:// must
 *                   upgrade with STARTTLS or the send fails) or "none" (plain,
 *                   for a relay on the same machine: credentials are then
 *                   refused unless the host is a loopback address)
 *   smtp.timeout_ms (default 30000), smtp.max_retries (default 3),
 *   smtp.backoff_ms (default 1000)
 * The CA bundle is FACTORY_CA_FILE when set, as for HTTP.
 *
 * Messages: RFC 5322 with From, To, Subject (RFC 2047 encoded-words when
 * it is not plain ASCII), Date, Message-ID, MIME-Version, Auto-Submitted:
 * auto-generated, Content-Type text/plain; charset=UTF-8, and the body in
 * quoted-printable (lines of at most 76 characters; a '.' or "From " at the
 * start of a line is encoded too), so no line of the body can end the DATA
 * phase or be read as a header. Addresses are checked: no blanks, controls,
 * '<', '>', ',', ';', '"' or '\\'; local@domain with a dot in the domain.
 * Header values cannot carry a line break.
 *
 * Retries: a connection that cannot be made, and a 4xx answer (the server's
 * "try later"), are tried again up to smtp.max_retries times with a doubling
 * backoff. A 5xx answer to the recipient or the message is final for that
 * message (FACTORY_EINVALID); a 5xx to the sender or the session, or a
 * refused login (530, 534, 535, 538), would fail every message the same
 * way (FACTORY_ECONFIG, FACTORY_EAUTH). A message is never sent again once
 * the server may have taken it (a failure after the DATA phase began
 * without an answer is not retried).
 */
#ifndef FACTORY_SMTP_H
#define FACTORY_SMTP_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "config.h"

typedef enum { SMTP_TLS_STARTTLS = 0, SMTP_TLS_NONE = 1 } smtp_tls;

typedef struct {
	const char *url;      /* NULL: email is off */
	const char *from;     /* "Name <address>" or "address" */
	const char *username; /* may be NULL */
	const char *password; /* may be NULL; copied by smtp_new */
	smtp_tls tls;
	long timeout_ms;
	long connect_timeout_ms;
	int max_retries;
	long backoff_ms;
	const char *ca_file; /* may be NULL */
} smtp_options;

void smtp_options_init(smtp_options *o);

/*
 * Fill `o` from the settings above. With smtp.url unset, o->url is NULL and
 * 0 is returned (email is off). A password read from a file goes to
 * *password_out (caller wipes and frees; NULL otherwise). FACTORY_ECONFIG
 * names a bad or missing setting.
 */
int smtp_options_from_config(smtp_options *o, char **password_out, const fconfig *cfg);

typedef struct smtp smtp;

/* Check the options and make a sender (nothing is sent). FACTORY_ECONFIG
 * for a bad URL or sender, or credentials over plain text to a host that is
 * not a loopback address. */
int smtp_new(smtp **out, const smtp_options *o);
void smtp_free(smtp *s);

/* 1 when `addr` is a plain address as described above, else 0. */
int smtp_address_valid(const char *addr);

/*
 * The whole message (headers, blank line, quoted-printable body) into
 * `out`, lines ending "\r\n". `from` is as in smtp.from; `text` is UTF-8
 * with "\n" line ends. FACTORY_EINVALID for a bad address or a header
 * value with a line break.
 */
int smtp_format(fbuf *out, const char *from, const char *to, const char *subject, const char *text, time_t date,
                const char *message_id);

/*
 * Send one message to `to`. Returns 0 when the server accepted it,
 * FACTORY_EINVALID when it refused it for good (5xx; the message names the
 * server's answer) or `to` is not an address smtp_address_valid() accepts,
 * FACTORY_EUPSTREAM when it could not be delivered after the retries,
 * FACTORY_EAUTH when the server refused the credentials, FACTORY_ECONFIG
 * when it offers no STARTTLS and smtp.tls wants it, or refused the sender.
 */
int smtp_send(smtp *s, const char *to, const char *subject, const char *text);

typedef struct {
	long sent;     /* accepted messages */
	long refused;  /* final 5xx */
	long failed;   /* not delivered after retries */
	long attempts; /* SMTP transactions tried */
} smtp_stats;

void smtp_get_stats(smtp_stats *out, const smtp *s);

/* For tests: replace the backoff sleep (NULL restores nanosleep). */
typedef void (*smtp_sleep_fn)(long ms);
void smtp_set_sleep(smtp_sleep_fn fn);

#endif
