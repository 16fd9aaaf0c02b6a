/* logparse.c - JSON lines, logfmt, pcre2 patterns and plain text into log records. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "logparse.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "error.h"

enum { F_TIME, F_LEVEL, F_MESSAGE, F_USER, F_REQUEST, F_ROUTE, F_STATUS, F_COUNT };

#define MAX_CANDIDATES 12
#define KEY_SLOTS 256 /* > F_COUNT * MAX_CANDIDATES, a power of two */

typedef struct {
	char *buf; /* the list, split in place */
	const char *names[MAX_CANDIDATES];
	size_t lens[MAX_CANDIDATES];
	int n;
} candidates;

struct logparse {
	logparse_options o;
	candidates fields[F_COUNT];
	pcre2_code *re;
	pcre2_match_data *md;
	int group[F_COUNT]; /* capture group numbers, 0 when absent */
	struct {
		uint32_t hash; /* 0: empty */
		int field;     /* -1: only a prefix */
		int cand;      /* its place in the field's candidate list */
		int prefix;    /* the first part of a dotted candidate ("user" of "user.id") */
		const char *name;
		size_t len;
	} keys[KEY_SLOTS]; /* key -> field; the first field listing it wins */
	fbuf partial;      /* a line split across feeds */
	int partial_cut;   /* the partial line passed max_line */
	fbuf first;        /* the pending record's first line */
	fbuf detail;       /* its continuation lines */
	int pending;
	uint64_t pending_line;
	uint64_t line_no;
	fbuf store; /* field values of the record being handed over */
	logparse_stats st;
};

static const char *const default_fields[F_COUNT] = {
        "time,timestamp,ts,@timestamp,t",
        "level,severity,lvl,log.level,loglevel",
        "message,msg,error,err,event",
        "user,user_id,userId,uid,session,session_id,sessionId,user.id",
        "request_id,requestId,req_id,trace_id,traceId",
        "route,path,url,endpoint,http.route",
        "status,status_code,statusCode,http.status_code",
};

static const char *const group_names[F_COUNT][2] = {
        {"time", NULL},    {"level", NULL}, {"message", "msg"}, {"user", NULL},
        {"request", NULL}, {"route", NULL}, {"status", NULL},
};

void logparse_options_init(logparse_options *o)
{
	memset(o, 0, sizeof(*o));
	o->format = LOGPARSE_AUTO;
	o->max_line = 64 << 10;
	o->max_detail = 16 << 10;
}

static uint32_t key_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h ? h : 1;
}

/* The slot of a key in the index (an empty one when absent). */
static uint32_t key_slot(const logparse *p, const char *s, size_t n, uint32_t h)
{
	uint32_t i = h & (KEY_SLOTS - 1);

	while (p->keys[i].hash && !(p->keys[i].hash == h && p->keys[i].len == n && !memcmp(p->keys[i].name, s, n)))
		i = (i + 1) & (KEY_SLOTS - 1);
	return i;
}

/* Index every candidate name (for logfmt keys and top-level JSON keys), and
 * the first part of every dotted one (a JSON object there needs cJSON). */
static void keys_init(logparse *p)
{
	int field, k;

	for (field = 0; field < F_COUNT; field++) {
		for (k = 0; k < p->fields[field].n; k++) {
			const char *name = p->fields[field].names[k], *dot = strchr(name, '.');
			size_t len = p->fields[field].lens[k];
			uint32_t h = key_hash(name, len), i = key_slot(p, name, len, h);
			if (!p->keys[i].hash) {
				p->keys[i].hash = h;
				p->keys[i].field = field;
				p->keys[i].cand = k;
				p->keys[i].name = name;
				p->keys[i].len = len;
			} else if (p->keys[i].field < 0) {
				p->keys[i].field = field;
				p->keys[i].cand = k;
			}
			if (dot && dot > name) {
				size_t pl = (size_t)(dot - name);
				h = key_hash(name, pl);
				i = key_slot(p, name, pl, h);
				if (!p->keys[i].hash) {
					p->keys[i].hash = h;
					p->keys[i].field = -1;
					p->keys[i].name = name;
					p->keys[i].len = pl;
				}
				p->keys[i].prefix = 1;
			}
		}
	}
}

/* The field a logfmt key names, -1 if none. */
static int key_field(const logparse *p, const char *s, size_t n)
{
	uint32_t i = key_slot(p, s, n, key_hash(s, n));

	return p->keys[i].hash ? p->keys[i].field : -1;
}

static int candidates_init(candidates *c, const char *list)
{
	char *p, *save = NULL, *tok;

	c->n = 0;
	if (!(c->buf = strdup(list)))
		return FACTORY_ENOMEM;
	for (p = c->buf; (tok = strtok_r(p, ",", &save)) && c->n < MAX_CANDIDATES; p = NULL) {
		while (*tok == ' ')
			tok++;
		if (*tok) {
			c->lens[c->n] = strlen(tok);
			c->names[c->n++] = tok;
		}
	}
	return 0;
}

int logparse_new(logparse **out, const logparse_options *opts)
{
	logparse *p;
	const char *lists[F_COUNT];
	int i, error = FACTORY_ENOMEM;

	*out = NULL;
	if (!(p = calloc(1, sizeof(*p))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (opts)
		p->o = *opts;
	else
		logparse_options_init(&p->o);
	if (!p->o.max_line)
		p->o.max_line = 64 << 10;
	if (!p->o.max_detail)
		p->o.max_detail = 16 << 10;
	lists[F_TIME] = p->o.time_fields;
	lists[F_LEVEL] = p->o.level_fields;
	lists[F_MESSAGE] = p->o.message_fields;
	lists[F_USER] = p->o.user_fields;
	lists[F_REQUEST] = p->o.request_fields;
	lists[F_ROUTE] = p->o.route_fields;
	lists[F_STATUS] = p->o.status_fields;
	for (i = 0; i < F_COUNT; i++)
		if (candidates_init(&p->fields[i], lists[i] && *lists[i] ? lists[i] : default_fields[i]) < 0)
			goto fail;
	keys_init(p);
	fbuf_init(&p->partial, p->o.max_line + 1);
	fbuf_init(&p->first, p->o.max_line + 1);
	fbuf_init(&p->detail, p->o.max_detail);
	fbuf_init(&p->store, p->o.max_line * 2 + p->o.max_detail + 1024);
	if (p->o.format == LOGPARSE_PATTERN && (!p->o.pattern || !*p->o.pattern)) {
		error = ferror_set(FACTORY_ECONFIG, "the pattern format needs a line pattern");
		goto fail_set;
	}
	if (p->o.pattern && *p->o.pattern) {
		int errcode, j;
		PCRE2_SIZE erroff;
		p->re = pcre2_compile((PCRE2_SPTR)p->o.pattern, PCRE2_ZERO_TERMINATED,
		                      PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &errcode, &erroff, NULL);
		if (!p->re) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(errcode, msg, sizeof(msg));
			error = ferror_set(FACTORY_ECONFIG, "bad line pattern at offset %zu: %s", (size_t)erroff,
			                   (const char *)msg);
			goto fail_set;
		}
		pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* best effort: interpreted if it fails */
		if (!(p->md = pcre2_match_data_create_from_pattern(p->re, NULL)))
			goto fail;
		for (i = 0; i < F_COUNT; i++) {
			for (j = 0; j < 2 && group_names[i][j]; j++) {
				int n = pcre2_substring_number_from_name(p->re, (PCRE2_SPTR)group_names[i][j]);
				if (n > 0) {
					p->group[i] = n;
					break;
				}
			}
		}
		if (!p->group[F_MESSAGE]) {
			error = ferror_set(FACTORY_ECONFIG, "the line pattern has no (?<message>...) group");
			goto fail_set;
		}
	}
	*out = p;
	return 0;
fail:
	ferror_set(FACTORY_ENOMEM, "out of memory");
fail_set:
	logparse_free(p);
	return error;
}

void logparse_free(logparse *p)
{
	int i;

	if (!p)
		return;
	for (i = 0; i < F_COUNT; i++)
		free(p->fields[i].buf);
	if (p->md)
		pcre2_match_data_free(p->md);
	if (p->re)
		pcre2_code_free(p->re);
	fbuf_release(&p->partial);
	fbuf_release(&p->first);
	fbuf_release(&p->detail);
	fbuf_release(&p->store);
	free(p);
}

void logparse_get_stats(logparse_stats *out, const logparse *p)
{
	*out = p->st;
}

/* ------------------------------------------------------------ time, level */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, size_t len, size_t at, size_t n, int *out)
{
	size_t i;
	int v = 0;

	if (at + n > len)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[at + i] < '0' || s[at + i] > '9')
			return -1;
		v = v * 10 + (s[at + i] - '0');
	}
	*out = v;
	return 0;
}

int logparse_time(int64_t *ms, const char *s, size_t len)
{
	int y, mo, d, h, mi, sec = 0, frac_ms = 0, oh = 0, om = 0;
	size_t i;
	int64_t t;

	while (len && (*s == ' ' || *s == '"'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '"'))
		len--;
	if (len == 0)
		return -1;
	/* epoch numbers */
	for (i = 0; i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'); i++)
		;
	if (i == len && s[0] != '.') {
		char num[48];
		double v;
		if (len >= sizeof(num))
			return -1;
		memcpy(num, s, len); /* s need not end at len */
		num[len] = '\0';
		v = strtod(num, NULL);
		if (!(v < 1e20))
			return -1; /* past any clock (or not a number) */
		if (v >= 1e17)
			v /= 1e6; /* ns */
		else if (v >= 1e14)
			v /= 1e3; /* us */
		else if (v < 1e11)
			v *= 1e3; /* s */
		*ms = (int64_t)v;
		return 0;
	}
	if (digits(s, len, 0, 4, &y) || len < 10 || (s[4] != '-' && s[4] != '/') || digits(s, len, 5, 2, &mo) ||
	    s[7] != s[4] || digits(s, len, 8, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	h = mi = 0;
	i = 10;
	if (i < len && (s[i] == 'T' || s[i] == ' ' || s[i] == 't')) {
		if (digits(s, len, 11, 2, &h) || len < 16 || s[13] != ':' || digits(s, len, 14, 2, &mi))
			return -1;
		i = 16;
		if (i < len && s[i] == ':') {
			if (digits(s, len, 17, 2, &sec))
				return -1;
			i = 19;
		}
		if (i < len && (s[i] == '.' || s[i] == ',')) {
			int k = 0;
			i++;
			while (i < len && s[i] >= '0' && s[i] <= '9') {
				if (k < 3)
					frac_ms = frac_ms * 10 + (s[i] - '0');
				k++;
				i++;
			}
			while (k < 3) {
				frac_ms *= 10;
				k++;
			}
		}
		if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
			i++;
		} else if (i < len && (s[i] == '+' || s[i] == '-')) {
			int sign = s[i] == '-' ? -1 : 1;
			if (digits(s, len, i + 1, 2, &oh))
				return -1;
			i += 3;
			if (i < len && s[i] == ':')
				i++;
			if (i < len)
				digits(s, len, i, 2, &om); /* minutes of the offset, when there */
			oh *= sign;
			om *= sign;
		}
	}
	if (h > 23 || mi > 59 || sec > 60)
		return -1;
	t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - oh * 3600 - om * 60;
	*ms = t * 1000 + frac_ms;
	return 0;
}

loglevel logparse_level(const char *s, size_t len)
{
	static const struct {
		const char *name;
		loglevel l;
	} names[] = {
	        {"trace", LOGLEVEL_DEBUG},    {"debug", LOGLEVEL_DEBUG},      {"dbg", LOGLEVEL_DEBUG},
	        {"info", LOGLEVEL_INFO},      {"information", LOGLEVEL_INFO}, {"notice", LOGLEVEL_INFO},
	        {"inf", LOGLEVEL_INFO},       {"warn", LOGLEVEL_WARN},        {"warning", LOGLEVEL_WARN},
	        {"wrn", LOGLEVEL_WARN},       {"error", LOGLEVEL_ERROR},      {"err", LOGLEVEL_ERROR},
	        {"severe", LOGLEVEL_ERROR},   {"fatal", LOGLEVEL_FATAL},      {"crit", LOGLEVEL_FATAL},
	        {"critical", LOGLEVEL_FATAL}, {"panic", LOGLEVEL_FATAL},      {"alert", LOGLEVEL_FATAL},
	        {"emerg", LOGLEVEL_FATAL},    {"emergency", LOGLEVEL_FATAL},  {NULL, LOGLEVEL_UNKNOWN},
	};
	int i;

	while (len && (*s == ' ' || *s == '[' || *s == '"'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == ']' || s[len - 1] == '"' || s[len - 1] == ':'))
		len--;
	if (len == 0)
		return LOGLEVEL_UNKNOWN;
	if (s[0] >= '0' && s[0] <= '9') {
		int v = 0;
		size_t k;
		for (k = 0; k < len && k < 4 && s[k] >= '0' && s[k] <= '9'; k++)
			v = v * 10 + (s[k] - '0');
		if (k != len)
			return LOGLEVEL_UNKNOWN;
		if (len == 1) /* syslog severity */
			return v <= 2   ? LOGLEVEL_FATAL
			       : v == 3 ? LOGLEVEL_ERROR
			       : v == 4 ? LOGLEVEL_WARN
			       : v <= 6 ? LOGLEVEL_INFO
			                : LOGLEVEL_DEBUG;
		/* pino / bunyan */
		return v >= 60   ? LOGLEVEL_FATAL
		       : v >= 50 ? LOGLEVEL_ERROR
		       : v >= 40 ? LOGLEVEL_WARN
		       : v >= 30 ? LOGLEVEL_INFO
		                 : LOGLEVEL_DEBUG;
	}
	if (len > 11)
		return LOGLEVEL_UNKNOWN; /* longer than any name */
	for (i = 0; names[i].name; i++)
		if ((names[i].name[0] | 0x20) == (s[0] | 0x20) && strlen(names[i].name) == len &&
		    !strncasecmp(names[i].name, s, len))
			return names[i].l;
	return LOGLEVEL_UNKNOWN;
}

const char *loglevel_name(loglevel l)
{
	static const char *const n[] = {"unknown", "debug", "info", "warn", "error", "fatal"};
	return (unsigned)l < sizeof(n) / sizeof(n[0]) ? n[l] : "unknown";
}

/* --------------------------------------------------------------- records */

typedef struct {
	size_t off[F_COUNT]; /* offsets in p->store, (size_t)-1 when absent */
	size_t len[F_COUNT];
} fields_found;

static void found_init(fields_found *f)
{
	int i;

	for (i = 0; i < F_COUNT; i++) {
		f->off[i] = (size_t)-1;
		f->len[i] = 0;
	}
}

static int store_put(logparse *p, fields_found *f, int field, const char *s, size_t n)
{
	if (f->off[field] != (size_t)-1)
		return 0; /* the first candidate found wins */
	f->off[field] = p->store.len;
	f->len[field] = n;
	if (fbuf_put(&p->store, s, n) < 0 || fbuf_putc(&p->store, '\0') < 0) {
		f->off[field] = (size_t)-1;
		return -1;
	}
	return 0;
}

static int is_ident_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
	       c == '-' || c == '@';
}

/* Does the line start with key= (logfmt)? */
static int starts_logfmt(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && is_ident_char(s[i]))
		i++;
	return i > 0 && i < n && s[i] == '=';
}

/* JSON: a value by candidate name, with dotted paths into objects. */
static const cJSON *json_lookup(const cJSON *obj, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
	const char *dot;
	char key[128];

	if (v || !(dot = strchr(name, '.')))
		return v;
	if ((size_t)(dot - name) >= sizeof(key))
		return NULL;
	memcpy(key, name, (size_t)(dot - name));
	key[dot - name] = '\0';
	v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsObject(v) ? json_lookup(v, dot + 1) : NULL;
}

static int json_put(logparse *p, fields_found *f, int field, const cJSON *v)
{
	char num[64];

	if (cJSON_IsString(v) && v->valuestring)
		return store_put(p, f, field, v->valuestring, strlen(v->valuestring));
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble > -9e18 && v->valuedouble < 9e18 &&
		    v->valuedouble == (double)(long long)v->valuedouble)
			snprintf(num, sizeof(num), "%lld", (long long)v->valuedouble);
		else
			snprintf(num, sizeof(num), "%.17g", v->valuedouble);
		return store_put(p, f, field, num, strlen(num));
	}
	if (cJSON_IsBool(v))
		return store_put(p, f, field, cJSON_IsTrue(v) ? "true" : "false", cJSON_IsTrue(v) ? 4 : 5);
	if (cJSON_IsObject(v) && field == F_MESSAGE) {
		/* {"error": {"message": "..."}} */
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "message");
		if (cJSON_IsString(m))
			return store_put(p, f, field, m->valuestring, strlen(m->valuestring));
	}
	return 0;
}

static int is_stack_key(const char *k, size_t n)
{
	static const char *const names[] = {"stack", "stack_trace", "stacktrace", "exception", "traceback", NULL};
	int i;

	for (i = 0; names[i]; i++)
		if (strlen(names[i]) == n && !memcmp(names[i], k, n))
			return 1;
	return 0;
}

/* A JSON string at s[*i] (the opening quote) decoded into `out`; *i moves
 * past the closing quote. -1 when malformed. */
static int json_string(fbuf *out, const char *s, size_t n, size_t *i)
{
	size_t j = *i + 1, run = j;

	for (;;) {
		if (j >= n)
			return -1;
		if (s[j] == '"')
			break;
		if ((unsigned char)s[j] < 0x20)
			return -1;
		if (s[j] != '\\') {
			j++;
			continue;
		}
		if (out && fbuf_put(out, s + run, j - run) < 0)
			return -1;
		if (++j >= n)
			return -1;
		switch (s[j]) {
		case '"':
		case '\\':
		case '/':
			if (out && fbuf_putc(out, s[j]) < 0)
				return -1;
			break;
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			if (out && fbuf_putc(out, s[j] == 'n'   ? '\n'
			                          : s[j] == 't' ? '\t'
			                          : s[j] == 'r' ? '\r'
			                          : s[j] == 'b' ? '\b'
			                                        : '\f') < 0)
				return -1;
			break;
		case 'u': {
			unsigned cp = 0, lo = 0;
			int k;
			char u[4];
			if (j + 4 >= n)
				return -1;
			for (k = 1; k <= 4; k++) {
				char c = s[j + k];
				cp = cp * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
				                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
				                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
				                                                 : 99);
				if (cp > 0xffff)
					return -1;
			}
			j += 4;
			if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair */
				if (j + 6 >= n || s[j + 1] != '\\' || s[j + 2] != 'u')
					return -1;
				for (k = 3; k <= 6; k++) {
					char c = s[j + k];
					lo = lo * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
					                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
					                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
					                                                 : 99);
					if (lo > 0xffff)
						return -1;
				}
				if (lo < 0xdc00 || lo > 0xdfff)
					return -1;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				j += 6;
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return -1;
			}
			if (cp < 0x80) {
				u[0] = (char)cp;
				k = 1;
			} else if (cp < 0x800) {
				u[0] = (char)(0xc0 | (cp >> 6));
				u[1] = (char)(0x80 | (cp & 0x3f));
				k = 2;
			} else if (cp < 0x10000) {
				u[0] = (char)(0xe0 | (cp >> 12));
				u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
				u[2] = (char)(0x80 | (cp & 0x3f));
				k = 3;
			} else {
				u[0] = (char)(0xf0 | (cp >> 18));
				u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
				u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
				u[3] = (char)(0x80 | (cp & 0x3f));
				k = 4;
			}
			if (out && fbuf_put(out, u, (size_t)k) < 0)
				return -1;
			break;
		}
		default:
			return -1;
		}
		run = ++j;
	}
	if (out && fbuf_put(out, s + run, j - run) < 0)
		return -1;
	*i = j + 1;
	return 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
		i++;
	return i;
}

/*
 * The fast path for JSON lines: one pass over a flat object, taking the
 * candidate fields' string, number and boolean values without building a
 * tree. Returns 0 (done), 1 (not a JSON object: read it as plain text) or
 * 2 (nested values where a candidate may look, or anything unusual: let
 * cJSON read it).
 */
static int parse_json_fast(logparse *p, fields_found *f, const char *s, size_t n, fbuf *extra_detail)
{
	int best[F_COUNT];
	size_t i = skip_ws(s, n, 0), k;

	for (k = 0; k < F_COUNT; k++)
		best[k] = MAX_CANDIDATES;
	if (i >= n || s[i] != '{')
		return 1;
	i = skip_ws(s, n, i + 1);
	if (i < n && s[i] == '}')
		return 0;
	for (;;) {
		size_t ks, ke, vs;
		uint32_t slot;
		int field = -1, cand = 0, prefix = 0;

		if (i >= n || s[i] != '"')
			return 2;
		ks = i + 1;
		if (json_string(NULL, s, n, &i) < 0)
			return 2;
		ke = i - 1;
		if (memchr(s + ks, '\\', ke - ks))
			return 2; /* an escaped key: rare, cJSON knows */
		slot = key_slot(p, s + ks, ke - ks, key_hash(s + ks, ke - ks));
		if (p->keys[slot].hash) {
			field = p->keys[slot].field;
			cand = p->keys[slot].cand;
			prefix = p->keys[slot].prefix;
		}
		i = skip_ws(s, n, i);
		if (i >= n || s[i] != ':')
			return 2;
		i = skip_ws(s, n, i + 1);
		if (i >= n)
			return 2;
		vs = i;
		if (s[i] == '"') {
			int stack = field < 0 && extra_detail->len == 0 && is_stack_key(s + ks, ke - ks);
			if (field >= 0 && cand < best[field]) {
				size_t off = p->store.len;
				if (json_string(&p->store, s, n, &i) < 0 || fbuf_putc(&p->store, '\0') < 0)
					return 2;
				f->off[field] = off;
				f->len[field] = p->store.len - off - 1;
				best[field] = cand;
			} else if (stack) {
				if (json_string(extra_detail, s, n, &i) < 0)
					return 2;
			} else if (json_string(NULL, s, n, &i) < 0) {
				return 2;
			}
		} else if (s[i] == '{' || s[i] == '[') {
			if (prefix || field >= 0)
				return 2; /* a candidate may be inside: cJSON walks it */
			{
				int depth = 0;
				while (i < n) {
					if (s[i] == '"') {
						if (json_string(NULL, s, n, &i) < 0)
							return 2;
						continue;
					}
					if (s[i] == '{' || s[i] == '[')
						depth++;
					else if (s[i] == '}' || s[i] == ']')
						depth--;
					i++;
					if (depth == 0)
						break;
				}
				if (depth != 0)
					return 2;
			}
		} else {
			/* number, true, false, null */
			while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' &&
			       s[i] != '\n')
				i++;
			if (i == vs)
				return 2;
			if (!(s[vs] == '-' || (s[vs] >= '0' && s[vs] <= '9') ||
			      (i - vs == 4 && (!memcmp(s + vs, "true", 4) || !memcmp(s + vs, "null", 4))) ||
			      (i - vs == 5 && !memcmp(s + vs, "false", 5))))
				return 2;
			if (field >= 0 && cand < best[field] && memcmp(s + vs, "null", 4) != 0) {
				size_t off = p->store.len;
				if (fbuf_put(&p->store, s + vs, i - vs) < 0 || fbuf_putc(&p->store, '\0') < 0)
					return 2;
				f->off[field] = off;
				f->len[field] = i - vs;
				best[field] = cand;
			}
		}
		i = skip_ws(s, n, i);
		if (i < n && s[i] == ',') {
			i = skip_ws(s, n, i + 1);
			continue;
		}
		if (i < n && s[i] == '}')
			return skip_ws(s, n, i + 1) == n ? 0 : 2;
		return 2;
	}
}

static int parse_json(logparse *p, fields_found *f, const char *s, size_t n, fbuf *extra_detail)
{
	cJSON *root = cJSON_ParseWithLength(s, n);
	int i, k;
	static const char *const stack_names[] = {"stack", "stack_trace", "stacktrace", "exception", "traceback", NULL};

	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return 1;
	}
	for (i = 0; i < F_COUNT; i++) {
		for (k = 0; k < p->fields[i].n; k++) {
			const cJSON *v = json_lookup(root, p->fields[i].names[k]);
			if (v && !cJSON_IsNull(v)) {
				json_put(p, f, i, v);
				if (f->off[i] != (size_t)-1)
					break;
			}
		}
	}
	for (k = 0; stack_names[k]; k++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, stack_names[k]);
		if (cJSON_IsString(v) && v->valuestring[0]) {
			fbuf_puts(extra_detail, v->valuestring);
			break;
		}
	}
	cJSON_Delete(root);
	return 0;
}

/* logfmt: key=value, key="quoted \" value", bare keys. Values are unescaped
 * into the store. */
static int parse_logfmt(logparse *p, fields_found *f, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t ks, ke;
		int matched;
		while (i < n && (s[i] == ' ' || s[i] == '\t'))
			i++;
		ks = i;
		while (i < n && s[i] != '=' && s[i] != ' ' && s[i] != '\t')
			i++;
		ke = i;
		if (i >= n || s[i] != '=') {
			continue; /* a bare key */
		}
		i++;
		matched = key_field(p, s + ks, ke - ks);
		if (i < n && s[i] == '"') {
			size_t start = ++i, off = p->store.len;
			int escaped = 0;
			{
				/* the closing quote; escapes are rare, so look for both with memchr */
				const char *q = memchr(s + i, '"', n - i);
				size_t end = q ? (size_t)(q - s) : n;
				if (!memchr(s + i, '\\', end - i)) {
					i = end;
				} else {
					while (i < n && s[i] != '"') {
						if (s[i] == '\\' && i + 1 < n) {
							escaped = 1;
							i++;
						}
						i++;
					}
				}
			}
			if (matched >= 0 && f->off[matched] == (size_t)-1) {
				if (!escaped) {
					if (store_put(p, f, matched, s + start, i - start) < 0)
						return -1;
				} else {
					size_t j;
					for (j = start; j < i; j++) {
						if (s[j] == '\\' && j + 1 < i) {
							j++;
							if (fbuf_putc(&p->store, s[j] == 'n'   ? '\n'
							                         : s[j] == 't' ? '\t'
							                                       : s[j]) < 0)
								return -1;
						} else if (fbuf_putc(&p->store, s[j]) < 0) {
							return -1;
						}
					}
					f->off[matched] = off;
					f->len[matched] = p->store.len - off;
					if (fbuf_putc(&p->store, '\0') < 0)
						return -1;
				}
			}
			if (i < n)
				i++;
		} else {
			size_t start = i;
			while (i < n && s[i] != ' ' && s[i] != '\t')
				i++;
			if (matched >= 0 && store_put(p, f, matched, s + start, i - start) < 0)
				return -1;
		}
	}
	return 0;
}

static int parse_pattern(logparse *p, fields_found *f, const char *s, size_t n)
{
	int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, 0, 0, p->md, NULL);
	PCRE2_SIZE *ov;
	int i;

	if (rc < 0)
		return 1;
	ov = pcre2_get_ovector_pointer(p->md);
	for (i = 0; i < F_COUNT; i++) {
		int g = p->group[i];
		if (g > 0 && g < rc && ov[2 * g] != PCRE2_UNSET &&
		    store_put(p, f, i, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]) < 0)
			return -1;
	}
	return 0;
}

/* After the level, the usual header items before the message: a
 * bracketed context ("[main]", "[req-1 - -]", nested brackets too), a
 * logger name (a dotted or $-joined identifier, maybe ending in ':'), and
 * "-" separators (log4j "%p [%t] %c: %m", Python "%(levelname)s %(name)s
 * [%(context)s] %(message)s"). Returns where the message starts. */
static size_t skip_header_items(const char *s, size_t m, size_t n)
{
	int items;

	for (items = 0; items < 4; items++) {
		size_t e;
		while (m < n && (s[m] == ' ' || s[m] == '\t'))
			m++;
		if (m >= n)
			break;
		if (s[m] == '-' && (m + 1 == n || s[m + 1] == ' ')) {
			m++;
			continue;
		}
		if (s[m] == '[') {
			int depth = 0;
			for (e = m; e < n && e < m + 512; e++) {
				depth += s[e] == '[' ? 1 : s[e] == ']' ? -1 : 0;
				if (depth == 0)
					break;
			}
			if (e >= n || depth != 0 || e + 1 >= n || s[e + 1] != ' ')
				break;
			m = e + 1;
			continue;
		}
		if (!((s[m] >= 'a' && s[m] <= 'z') || (s[m] >= 'A' && s[m] <= 'Z')))
			break; /* a logger name starts with a letter (not an address) */
		{
			int dotted = 0;
			for (e = m; e < n && (is_ident_char(s[e]) || s[e] == '$'); e++)
				dotted |= (s[e] == '.' || s[e] == '$') && e > m && e + 1 < n && is_ident_char(s[e + 1]);
			if (e < n && s[e] == ':')
				e++;
			if (!dotted || e >= n || s[e] != ' ')
				break;
			m = e;
		}
	}
	while (m < n && (s[m] == ' ' || s[m] == '\t' || s[m] == ':'))
		m++;
	return m;
}

/* Plain text: a leading time (one or two tokens), then a level word among
 * the next few tokens; the message is what follows the level and the
 * header items after it (or the whole line when no level is found). */
static int parse_plain(logparse *p, fields_found *f, const char *s, size_t n)
{
	size_t i = 0, tok_s[8], tok_e[8];
	int nt = 0, k;
	int64_t ms;

	while (nt < 8 && i < n) {
		while (i < n && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i >= n)
			break;
		tok_s[nt] = i;
		while (i < n && s[i] != ' ' && s[i] != '\t')
			i++;
		tok_e[nt++] = i;
	}
	k = 0;
	if (nt >= 2 && logparse_time(&ms, s + tok_s[0], tok_e[1] - tok_s[0]) == 0) {
		if (store_put(p, f, F_TIME, s + tok_s[0], tok_e[1] - tok_s[0]) < 0)
			return -1;
		k = 2;
	} else if (nt >= 1 && logparse_time(&ms, s + tok_s[0], tok_e[0] - tok_s[0]) == 0) {
		if (store_put(p, f, F_TIME, s + tok_s[0], tok_e[0] - tok_s[0]) < 0)
			return -1;
		k = 1;
	}
	for (; k < nt; k++) {
		if (logparse_level(s + tok_s[k], tok_e[k] - tok_s[k]) != LOGLEVEL_UNKNOWN &&
		    !(s[tok_s[k]] >= '0' && s[tok_s[k]] <= '9')) {
			size_t m;
			if (store_put(p, f, F_LEVEL, s + tok_s[k], tok_e[k] - tok_s[k]) < 0)
				return -1;
			m = skip_header_items(s, tok_e[k], n);
			if (m >= n) /* nothing after the level: the level word is the message */
				m = tok_s[k];
			return store_put(p, f, F_MESSAGE, s + m, n - m);
		}
	}
	return store_put(p, f, F_MESSAGE, s, n);
}

static int is_continuation_plain(const char *s, size_t n)
{
	static const char *const starts[] = {
	        "Caused by", "Traceback", "During handling", "The above exception", "goroutine ", "panic: ",
	        "...",       NULL};
	int i;

	if (n == 0)
		return 1;
	if (s[0] == ' ' || s[0] == '\t' || s[0] == '}' || s[0] == ']')
		return 1;
	for (i = 0; starts[i]; i++) {
		size_t l = strlen(starts[i]);
		if (n >= l && !memcmp(s, starts[i], l))
			return i != 5; /* "panic:" at the start is a record of its own */
	}
	return 0;
}

static int is_start(logparse *p, const char *s, size_t n)
{
	switch (p->o.format) {
	case LOGPARSE_JSON:
		return n > 0 && s[0] == '{';
	case LOGPARSE_LOGFMT:
		return starts_logfmt(s, n);
	case LOGPARSE_PATTERN:
		return pcre2_match(p->re, (PCRE2_SPTR)s, n, 0, 0, p->md, NULL) >= 0;
	case LOGPARSE_PLAIN:
		return !is_continuation_plain(s, n);
	case LOGPARSE_AUTO:
	default:
		if (n > 0 && s[0] == '{')
			return 1;
		if (starts_logfmt(s, n))
			return 1;
		if (p->re)
			return pcre2_match(p->re, (PCRE2_SPTR)s, n, 0, 0, p->md, NULL) >= 0;
		return !is_continuation_plain(s, n);
	}
}

/* Hand the pending record over. */
static int emit(logparse *p, logparse_record_fn cb, void *ctx)
{
	fields_found f;
	log_record r;
	const char *s = fbuf_cstr(&p->first);
	size_t n = p->first.len;
	int rc = 1, i;
	fbuf extra;
	const char *empty = "";

	p->pending = 0;
	fbuf_reset(&p->store);
	found_init(&f);
	fbuf_init(&extra, p->o.max_detail);
	if ((p->o.format == LOGPARSE_JSON || p->o.format == LOGPARSE_AUTO) && n > 0 && s[0] == '{') {
		rc = parse_json_fast(p, &f, s, n, &extra);
		if (rc == 2) {
			/* start again with cJSON */
			found_init(&f);
			fbuf_reset(&p->store);
			fbuf_reset(&extra);
			rc = parse_json(p, &f, s, n, &extra);
		}
		if (rc > 0)
			p->st.bad_json++;
	}
	if (rc > 0 && (p->o.format == LOGPARSE_LOGFMT || (p->o.format == LOGPARSE_AUTO && starts_logfmt(s, n))))
		rc = parse_logfmt(p, &f, s, n);
	if (rc > 0 && p->re && (p->o.format == LOGPARSE_PATTERN || p->o.format == LOGPARSE_AUTO))
		rc = parse_pattern(p, &f, s, n);
	if (rc > 0) {
		/* not JSON/logfmt/pattern after all: plain text */
		found_init(&f);
		fbuf_reset(&p->store);
		rc = parse_plain(p, &f, s, n) < 0 ? -1 : 0;
	} else if (rc == 0 && f.off[F_MESSAGE] == (size_t)-1) {
		/* no message field: the line is the message */
		rc = store_put(p, &f, F_MESSAGE, s, n) < 0 ? -1 : 0;
	}
	memset(&r, 0, sizeof(r));
	r.time_ms = -1;
	r.level_text = r.user = r.request = r.route = empty;
	r.message = s;
	r.message_len = n;
	if (rc == 0) {
		const char *base = fbuf_cstr(&p->store);
		for (i = 0; i < F_COUNT; i++) {
			const char *v = f.off[i] == (size_t)-1 ? NULL : base + f.off[i];
			size_t l = f.len[i];
			if (!v)
				continue;
			switch (i) {
			case F_TIME:
				if (logparse_time(&r.time_ms, v, l) < 0)
					r.time_ms = -1;
				break;
			case F_LEVEL:
				r.level_text = v;
				r.level = logparse_level(v, l);
				break;
			case F_MESSAGE:
				r.message = v;
				r.message_len = l;
				break;
			case F_USER:
				r.user = v;
				break;
			case F_REQUEST:
				r.request = v;
				break;
			case F_ROUTE:
				r.route = v;
				break;
			case F_STATUS:
				r.status = (int)strtol(v, NULL, 10);
				if (r.status < 0 || r.status > 999)
					r.status = 0;
				break;
			}
		}
	}
	if (extra.len && p->detail.len == 0) {
		r.detail = fbuf_cstr(&extra);
		r.detail_len = extra.len;
		r.detail_in_line = 1;
	} else {
		r.detail = fbuf_cstr(&p->detail);
		r.detail_len = p->detail.len;
	}
	r.raw = s;
	r.raw_len = n;
	r.line_no = p->pending_line;
	p->st.records++;
	rc = cb(ctx, &r);
	fbuf_release(&extra);
	fbuf_reset(&p->first);
	fbuf_reset(&p->detail);
	return rc;
}

static int line(logparse *p, const char *s, size_t n, logparse_record_fn cb, void *ctx)
{
	int rc = 0;

	while (n && s[n - 1] == '\r')
		n--;
	p->line_no++;
	p->st.lines++;
	if (p->pending && !is_start(p, s, n)) {
		if (n == 0 && p->detail.len == 0)
			return 0;
		p->st.joined_lines++;
		if (p->detail.len)
			fbuf_putc(&p->detail, '\n');
		if (fbuf_put(&p->detail, s, n) < 0 && p->detail.max > p->detail.len)
			fbuf_put(&p->detail, s, p->detail.max - p->detail.len); /* what fits */
		return 0;
	}
	if (n == 0)
		return 0;
	if (p->pending && (rc = emit(p, cb, ctx)) != 0)
		return rc;
	fbuf_reset(&p->first);
	if (fbuf_put(&p->first, s, n) < 0)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	p->pending = 1;
	p->pending_line = p->line_no;
	return 0;
}

int logparse_feed(logparse *p, const char *data, size_t len, logparse_record_fn cb, void *ctx)
{
	const char *end = data + len, *nl;
	int rc;

	while (data < end) {
		nl = memchr(data, '\n', (size_t)(end - data));
		if (!nl) {
			/* keep the partial line, up to max_line */
			size_t room = p->o.max_line > p->partial.len ? p->o.max_line - p->partial.len : 0;
			size_t take = (size_t)(end - data) < room ? (size_t)(end - data) : room;
			if (take && fbuf_put(&p->partial, data, take) < 0)
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			if (take < (size_t)(end - data))
				p->partial_cut = 1;
			return 0;
		}
		if (p->partial.len || p->partial_cut) {
			size_t room = p->o.max_line > p->partial.len ? p->o.max_line - p->partial.len : 0;
			size_t take = (size_t)(nl - data) < room ? (size_t)(nl - data) : room;
			if (take && fbuf_put(&p->partial, data, take) < 0)
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			if (take < (size_t)(nl - data))
				p->partial_cut = 1;
			if (p->partial_cut)
				p->st.truncated_lines++;
			rc = line(p, fbuf_cstr(&p->partial), p->partial.len, cb, ctx);
			fbuf_reset(&p->partial);
			p->partial_cut = 0;
		} else {
			size_t n = (size_t)(nl - data);
			if (n > p->o.max_line) {
				n = p->o.max_line;
				p->st.truncated_lines++;
			}
			rc = line(p, data, n, cb, ctx);
		}
		if (rc)
			return rc;
		data = nl + 1;
	}
	return 0;
}

int logparse_finish(logparse *p, logparse_record_fn cb, void *ctx)
{
	int rc;

	if (p->partial.len || p->partial_cut) {
		if (p->partial_cut)
			p->st.truncated_lines++;
		rc = line(p, fbuf_cstr(&p->partial), p->partial.len, cb, ctx);
		fbuf_reset(&p->partial);
		p->partial_cut = 0;
		if (rc)
			return rc;
	}
	if (p->pending)
		return emit(p, cb, ctx);
	return 0;
}
