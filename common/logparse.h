/*
 * logparse.h - log records out of a stream of bytes: JSON lines (field
 * names configurable), logfmt, and plain text read with a pcre2 pattern of
 * named groups; multi-line records (stack traces) joined to the line that
 * started them.
 *
 * Feed bytes in any chunks; each complete record is handed to a callback.
 * A line starts a new record when it looks like one in the format (a JSON
 * object, a logfmt line that begins with key=, a line the pattern matches,
 * for plain text a line not indented and not a known continuation such as
 * "Caused by:" or "Traceback"); any other line is a continuation and joins
 * the record before it (as its `detail`). A line over `max_line` bytes is
 * cut there (the rest is dropped and counted), a record's detail is capped
 * at `max_detail` bytes: memory does not grow with the input.
 *
 * Field names are comma-separated lists of candidates tried in order; a
 * candidate with dots ("user.id") is looked up as a path in nested JSON
 * objects when no key has that exact name.
 */
#ifndef FACTORY_LOGPARSE_H
#define FACTORY_LOGPARSE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOGPARSE_AUTO = 0, LOGPARSE_JSON, LOGPARSE_LOGFMT, LOGPARSE_PATTERN, LOGPARSE_PLAIN } logparse_format;

typedef enum {
	LOGLEVEL_UNKNOWN = 0,
	LOGLEVEL_DEBUG,
	LOGLEVEL_INFO,
	LOGLEVEL_WARN,
	LOGLEVEL_ERROR,
	LOGLEVEL_FATAL
} loglevel;

typedef struct {
	logparse_format format;     /* AUTO: decided per line (JSON if it starts with '{', else logfmt if it
	                               starts with key=, else the pattern if one is set, else plain) */
	const char *time_fields;    /* default "time,timestamp,ts,@timestamp,t" */
	const char *level_fields;   /* default "level,severity,lvl,log.level,loglevel" */
	const char *message_fields; /* default "message,msg,error,err,event" */
	const char *user_fields;    /* default "user,user_id,userId,uid,session,session_id,sessionId,user.id" */
	const char *request_fields; /* default "request_id,requestId,req_id,trace_id,traceId" */
	const char *route_fields;   /* default "route,path,url,endpoint,http.route" */
	const char *status_fields;  /* default "status,status_code,statusCode,http.status_code" */
	const char *pattern;        /* pcre2 with named groups time, level, message (or msg), user,
	                               request, route, status; for PATTERN (and AUTO fallback) */
	size_t max_line;            /* default 64 KiB */
	size_t max_detail;          /* default 16 KiB */
} logparse_options;

void logparse_options_init(logparse_options *o);

typedef struct {
	int64_t time_ms; /* ms since the epoch, -1 when the record has no time */
	loglevel level;
	const char *level_text; /* as written ("" when none) */
	const char *message;    /* the message (for plain text without pattern: the line) */
	size_t message_len;
	const char *user; /* "" when none */
	const char *request;
	const char *route;
	int status;         /* 0 when none */
	const char *detail; /* continuation lines joined with '\n' ("" when none) */
	size_t detail_len;
	int detail_in_line; /* the detail is a field of the line itself (a JSON "stack") */
	const char *raw;    /* the first line as read */
	size_t raw_len;
	uint64_t line_no; /* 1-based number of the first line in the stream */
} log_record;

/* Called with each record; the strings are valid during the call only.
 * A non-zero return stops the parser and is returned by feed/finish. */
typedef int (*logparse_record_fn)(void *ctx, const log_record *rec);

typedef struct logparse logparse;

/* A parser. FACTORY_ECONFIG when the pattern does not compile (the message
 * says where), FACTORY_ENOMEM. */
int logparse_new(logparse **out, const logparse_options *opts);
void logparse_free(logparse *p);

/* Feed bytes; complete records go to cb. Returns 0 or cb's non-zero value. */
int logparse_feed(logparse *p, const char *data, size_t len, logparse_record_fn cb, void *ctx);
/* End of input: the last line and record are handed over. The parser can be
 * fed again afterwards (a new stream; line numbers go on). */
int logparse_finish(logparse *p, logparse_record_fn cb, void *ctx);

typedef struct {
	uint64_t lines;
	uint64_t records;
	uint64_t truncated_lines; /* lines cut at max_line */
	uint64_t joined_lines;    /* continuation lines joined to a record */
	uint64_t bad_json;        /* lines starting with '{' that are not JSON (read as plain text) */
} logparse_stats;
void logparse_get_stats(logparse_stats *out, const logparse *p);

/* Parse a time: RFC 3339 / ISO 8601 (T or blank, fraction, Z or offset,
 * "," as fraction mark), or epoch seconds / milliseconds / microseconds /
 * nanoseconds told apart by magnitude. 0 with *ms set, or -1. */
int logparse_time(int64_t *ms, const char *s, size_t len);

/* Level names (error, ERR, Fatal, warning, 50 as in pino/bunyan, 3 as in
 * syslog when the text is one digit) to a loglevel. */
loglevel logparse_level(const char *s, size_t len);
const char *loglevel_name(loglevel l);

#endif
