/* log.c - levels, sections, colour on a TTY, and masking of secrets. */
#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

#define MAX_SECRETS 32
#define MIN_SECRET_LEN 6

static const char *program = "factory";
static log_level level = LOG_INFO;
static FILE *stream;
static int colour = -1; /* -1: decide on first use */

static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[MAX_SECRETS];
static size_t nsecrets;
/* Bytes a masked thing can start with (registered secrets' first bytes,
 * token prefixes, secret keys in either case, ':' of "://"); every other
 * byte is passed over at once. Kept under secrets_lock. */
static unsigned char first_byte[256];
static int first_byte_ready;

void log_set_program(const char *name)
{
	program = name;
}

void log_set_level(log_level l)
{
	level = l;
}

log_level log_get_level(void)
{
	return level;
}

int log_level_parse(const char *s)
{
	static const char *names[] = {"debug", "info", "warn", "error", "quiet"};
	size_t i;

	if (!s)
		return -1;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(s, names[i]))
			return (int)i;
	if (!strcasecmp(s, "warning"))
		return LOG_WARN;
	return -1;
}

static int use_colour(void);

void log_init_from_env(void)
{
	int l = log_level_parse(getenv("FACTORY_LOG_LEVEL"));

	if (l >= 0)
		level = (log_level)l;
	/* Decide colour now, on the main thread, so no worker races to do it. */
	(void)use_colour();
}

static FILE *out_stream(void)
{
	return stream ? stream : stderr;
}

void log_set_stream(FILE *f)
{
	stream = f;
	colour = -1;
	(void)use_colour();
}

static int use_colour(void)
{
	if (colour < 0) {
		const char *nc = getenv("NO_COLOR");
		colour = (!nc || !*nc) && isatty(fileno(out_stream()));
	}
	return colour;
}

int log_add_secret(const char *value)
{
	size_t i;
	char *copy;

	if (!value || strlen(value) < MIN_SECRET_LEN)
		return 0;
	pthread_mutex_lock(&secrets_lock);
	for (i = 0; i < nsecrets; i++) {
		if (!strcmp(secrets[i], value)) {
			pthread_mutex_unlock(&secrets_lock);
			return 0;
		}
	}
	if (nsecrets == MAX_SECRETS) {
		pthread_mutex_unlock(&secrets_lock);
		return ferror_set(FACTORY_ETOOBIG, "too many secrets registered");
	}
	copy = strdup(value);
	if (!copy) {
		pthread_mutex_unlock(&secrets_lock);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	secrets[nsecrets++] = copy;
	first_byte[(unsigned char)copy[0]] = 1;
	pthread_mutex_unlock(&secrets_lock);
	return 0;
}

void log_clear_secrets(void)
{
	size_t i;

	pthread_mutex_lock(&secrets_lock);
	for (i = 0; i < nsecrets; i++) {
		explicit_bzero(secrets[i], strlen(secrets[i]));
		free(secrets[i]);
		secrets[i] = NULL;
	}
	nsecrets = 0;
	first_byte_ready = 0;
	pthread_mutex_unlock(&secrets_lock);
}

/* Characters that may appear inside a token. */
static int tokchar(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

/* Token prefixes that mark a secret wherever they start a word. */
static const char *const token_prefixes[] = {
	"glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glimt-", "glsoat-", "glft-", "glagent-",
	"GR1348941", "sk-ant-", "sk-", "xoxb-", "xoxp-", "xoxa-", "xoxs-", "xoxr-",
	"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", NULL,
};

/* Length of a token-shaped secret starting at p (0 if none). */
static size_t token_at(const char *s, size_t i, size_t len)
{
	const char *p = s + i;
	size_t j, k, n;

	if (i > 0 && tokchar((unsigned char)s[i - 1]))
		return 0;
	for (j = 0; token_prefixes[j]; j++) {
		n = strlen(token_prefixes[j]);
		if (len - i > n && !strncmp(p, token_prefixes[j], n)) {
			for (k = n; i + k < len && tokchar((unsigned char)p[k]); k++)
				;
			if (k - n >= 8)
				return k;
		}
	}
	/* AWS access key id: AKIA + 16 upper-case letters or digits. */
	if (len - i >= 20 && !strncmp(p, "AKIA", 4)) {
		for (k = 4; k < 20 && (isupper((unsigned char)p[k]) || isdigit((unsigned char)p[k])); k++)
			;
		if (k == 20 && (i + 20 == len || !isalnum((unsigned char)p[20])))
			return 20;
	}
	return 0;
}

/* Header-like "Name: value" or "Name value" prefixes whose value is secret. */
static const char *const secret_keys[] = {
	"Bearer ", "PRIVATE-TOKEN: ", "PRIVATE-TOKEN:", "JOB-TOKEN: ", "Authorization: ", "x-api-key: ", NULL,
};

static size_t key_at(const char *p, size_t left)
{
	size_t j, n;

	for (j = 0; secret_keys[j]; j++) {
		n = strlen(secret_keys[j]);
		if (left > n && !strncasecmp(p, secret_keys[j], n))
			return n;
	}
	return 0;
}

/* Fill first_byte from the fixed prefixes and the registered secrets;
 * called with secrets_lock held. */
static void init_first_byte(void)
{
	size_t j;

	memset(first_byte, 0, sizeof(first_byte));
	for (j = 0; token_prefixes[j]; j++)
		first_byte[(unsigned char)token_prefixes[j][0]] = 1;
	for (j = 0; secret_keys[j]; j++) {
		first_byte[(unsigned char)tolower((unsigned char)secret_keys[j][0])] = 1;
		first_byte[(unsigned char)toupper((unsigned char)secret_keys[j][0])] = 1;
	}
	first_byte['A'] = 1; /* AKIA... */
	first_byte[':'] = 1; /* "://" user:password@ */
	for (j = 0; j < nsecrets; j++)
		first_byte[(unsigned char)secrets[j][0]] = 1;
	first_byte_ready = 1;
}

/* Set while this thread holds secrets_lock in log_mask: an error raised
 * inside (a buffer cap) calls ferror_set, which masks its own message; that
 * message is ours and holds no secret, so it is copied as it is instead of
 * taking the lock again. */
static _Thread_local int in_mask;

int log_mask(fbuf *out, const char *in, size_t len)
{
	size_t i = 0, k, n, start = 0;
	int error = 0;

	if (in_mask)
		return fbuf_put(out, in, len);
	pthread_mutex_lock(&secrets_lock);
	in_mask = 1;
	if (!first_byte_ready)
		init_first_byte();
	while (i < len) {
		size_t hit = 0, keep = 0;

		if (!first_byte[(unsigned char)in[i]]) {
			i++;
			continue;
		}

		/* Registered secrets, longest first is not needed: any match masks. */
		for (k = 0; k < nsecrets; k++) {
			n = strlen(secrets[k]);
			if (len - i >= n && !memcmp(in + i, secrets[k], n)) {
				hit = n;
				break;
			}
		}
		if (!hit && (keep = key_at(in + i, len - i)) > 0) {
			/* "Authorization: Bearer x": the scheme word stays, the credential goes. */
			static const char *const schemes[] = {"Bearer ", "Basic ", "token ", "Token ", NULL};
			for (k = 0; schemes[k]; k++) {
				n = strlen(schemes[k]);
				if (len - i - keep > n && !strncmp(in + i + keep, schemes[k], n)) {
					keep += n;
					break;
				}
			}
			for (n = keep; i + n < len && !isspace((unsigned char)in[i + n]) && in[i + n] != '"' &&
				       in[i + n] != '\'' && in[i + n] != ','; n++)
				;
			/* "Authorization: Bearer x": keep the scheme word as part of the mask. */
			if (n == keep)
				keep = 0, hit = 0;
			else
				hit = n;
		}
		if (!hit)
			hit = token_at(in, i, len);
		/* user:password@ in URLs: "://" then userinfo with ':' before '@'. */
		if (!hit && len - i > 3 && !memcmp(in + i, "://", 3)) {
			size_t j = i + 3, colon = 0;
			while (j < len && !isspace((unsigned char)in[j]) && in[j] != '/' && in[j] != '@') {
				if (in[j] == ':' && !colon)
					colon = j;
				j++;
			}
			if (j < len && in[j] == '@' && colon) {
				if ((error = fbuf_put(out, in + start, i + 3 - start)) < 0)
					goto done;
				if ((error = fbuf_puts(out, "[MASKED]@")) < 0)
					goto done;
				i = start = j + 1;
				continue;
			}
		}
		if (hit) {
			if ((error = fbuf_put(out, in + start, i - start)) < 0)
				goto done;
			if (keep && (error = fbuf_put(out, in + i, keep)) < 0)
				goto done;
			if ((error = fbuf_puts(out, "[MASKED]")) < 0)
				goto done;
			i += hit;
			start = i;
			continue;
		}
		i++;
	}
	error = fbuf_put(out, in + start, len - start);
done:
	in_mask = 0;
	pthread_mutex_unlock(&secrets_lock);
	return error;
}

char *log_mask_dup(const char *in)
{
	fbuf b;

	fbuf_init(&b, 0);
	if (log_mask(&b, in, strlen(in)) < 0) {
		fbuf_release(&b);
		return NULL;
	}
	return fbuf_detach(&b);
}

static void timestamp(char *out, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void log_msg(log_level l, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info ", "warn ", "error"};
	static const char *colours[] = {"\033[2m", "", "\033[33m", "\033[31m"};
	char raw[4096], ts[32];
	char *masked;
	va_list ap;
	FILE *f = out_stream();

	if (l < level || l >= LOG_QUIET)
		return;
	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	masked = log_mask_dup(raw);
	timestamp(ts, sizeof(ts));
	if (use_colour())
		fprintf(f, "%s%s %s %s: %s\033[0m\n", colours[l], ts, names[l], program,
			masked ? masked : "(message withheld: masking failed)");
	else
		fprintf(f, "%s %s %s: %s\n", ts, names[l], program, masked ? masked : "(message withheld: masking failed)");
	fflush(f);
	free(masked);
}

static void section_name(char *out, size_t len, const char *name)
{
	size_t i;

	for (i = 0; name[i] && i + 1 < len; i++) {
		unsigned char c = (unsigned char)name[i];
		out[i] = (isalnum(c) || c == '_' || c == '.' || c == '-') ? (char)c : '_';
	}
	out[i] = '\0';
}

/* Section markers mean something in a GitLab job log; on a person's terminal
 * outside CI they are noise, so they are left out there. */
static int sections_wanted(void)
{
	const char *ci = getenv("GITLAB_CI");

	return (ci && *ci) || !isatty(fileno(stdout));
}

void log_section_start(const char *name, const char *title, int collapsed)
{
	char clean[128];
	char *masked;

	if (!sections_wanted())
		return;
	masked = log_mask_dup(title);

	section_name(clean, sizeof(clean), name);
	fflush(stderr);
	printf("\033[0Ksection_start:%lld:%s%s\r\033[0K%s\n", (long long)time(NULL), clean,
	       collapsed ? "[collapsed=true]" : "", masked ? masked : "");
	fflush(stdout);
	free(masked);
}

void log_section_end(const char *name)
{
	char clean[128];

	if (!sections_wanted())
		return;
	section_name(clean, sizeof(clean), name);
	fflush(stderr);
	printf("\033[0Ksection_end:%lld:%s\r\033[0K\n", (long long)time(NULL), clean);
	fflush(stdout);
}
