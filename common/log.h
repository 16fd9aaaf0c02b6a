/*
 * log.h - levels, timestamps, GitLab collapsible sections, secret masking.
 *
 * Everything the Factory prints goes through here (or through log_mask()
 * first), so no registered secret and no token-shaped string ever reaches
 * stdout, stderr, a report or GitLab. Colour is used only when the stream is
 * a TTY and NO_COLOR is unset. Lines look like:
 *   2026-11-27T10:00:00Z info  factory-setup: label priority::1 created
 */
#ifndef FACTORY_LOG_H
#define FACTORY_LOG_H

#include <stddef.h>
#include <stdio.h>

#include "buf.h"

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_QUIET } log_level;

/* Set the program name shown in every line (e.g. "factory-setup"); not copied. */
void log_set_program(const char *name);
/* Lines below `level` are dropped. Default LOG_INFO; FACTORY_LOG_LEVEL
 * (debug|info|warn|error) is read by log_init_from_env(). */
void log_set_level(log_level level);
log_level log_get_level(void);
/* Parse "debug|info|warn|error|quiet"; -1 if unknown. */
int log_level_parse(const char *s);
void log_init_from_env(void);
/* Redirect output (default stderr). Colour is decided again for `f`. */
void log_set_stream(FILE *f);

void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* GitLab collapsible section markers, printed to stdout:
 *   \e[0Ksection_start:<unix time>:<name>[collapsed=true]\r\e[0K<title>
 *   \e[0Ksection_end:<unix time>:<name>\r\e[0K
 * `name` characters outside [A-Za-z0-9_.-] are replaced by '_'. */
void log_section_start(const char *name, const char *title, int collapsed);
void log_section_end(const char *name);

/*
 * Secrets. log_add_secret() registers a value (copied; values shorter than 6
 * bytes are ignored as too common to mask safely). log_mask() copies `in`
 * into `out` with every registered secret and every token-shaped string
 * (glpat-..., gldt-, glrt-, glptt-, glcbt-, sk-..., sk-ant-..., xox[bpas]-...,
 * ghp_/gho_/github_pat_..., AKIA..., "Bearer <x>", "PRIVATE-TOKEN: <x>",
 * user:password@ in URLs) replaced by "[MASKED]". Returns 0 or an fbuf error.
 */
int log_add_secret(const char *value);
void log_clear_secrets(void);
int log_mask(fbuf *out, const char *in, size_t len);
/* Mask in place into a new malloc'd string (caller frees); NULL on ENOMEM. */
char *log_mask_dup(const char *in);

#endif
