/*
 * semver.h - semantic versions (semver.org 2.0.0): parse, compare, bump,
 * format. Used by factory-release to read the last release's tag and to
 * derive the next version from the kinds of change in a release.
 *
 * Parsing is strict: MAJOR.MINOR.PATCH, each a whole number without
 * leading zeros and at most 999999999; an optional pre-release
 * ("-rc.1": dot-separated identifiers of [0-9A-Za-z-], numeric ones without
 * leading zeros) and build metadata ("+build.5": identifiers of
 * [0-9A-Za-z-]), each at most SEMVER_LABEL_MAX bytes. An optional prefix
 * (a tag prefix such as "v") is accepted before the version when given.
 * Blanks, empty identifiers and anything after the version are refused.
 *
 * Bumps follow the npm/semver convention:
 *   patch  1.2.3 -> 1.2.4;  1.2.3-rc.1 -> 1.2.3 (the pre-release is released)
 *   minor  1.2.3 -> 1.3.0;  1.3.0-rc.1 -> 1.3.0;  1.2.3-rc.1 -> 1.3.0
 *   major  1.2.3 -> 2.0.0;  2.0.0-rc.1 -> 2.0.0;  2.1.0-rc.1 -> 3.0.0
 * Build metadata is dropped by every bump. Before 1.0.0 (major 0) a
 * breaking change bumps the minor version (0.4.2 -> 0.5.0), as semver's
 * "anything may change" rule for 0.y.z is commonly read; semver_bump()
 * applies that when asked for SEMVER_BREAKING.
 */
#ifndef FACTORY_SEMVER_H
#define FACTORY_SEMVER_H

#include <stddef.h>

#define SEMVER_LABEL_MAX 63
#define SEMVER_NUMBER_MAX 999999999L

typedef struct {
	long major, minor, patch;
	char pre[SEMVER_LABEL_MAX + 1];   /* "" when none */
	char build[SEMVER_LABEL_MAX + 1]; /* "" when none */
} semver;

/* What a release needs, smallest first. */
typedef enum {
	SEMVER_PATCH = 0, /* fixes only */
	SEMVER_MINOR,     /* something new */
	SEMVER_BREAKING,  /* a breaking change: major, or minor before 1.0.0 */
} semver_change;

/*
 * Parse `text` (NUL-terminated). `prefix` (may be NULL or "") is an
 * optional prefix: "v1.2.3" parses with prefix "v", and so does "1.2.3".
 * Returns 0 with *out set, or FACTORY_EINVALID with a message naming the
 * text and what is wrong ("not a semantic version 'x': ...").
 */
int semver_parse(semver *out, const char *text, const char *prefix);

/* Precedence per semver.org section 11: <0, 0 or >0. Build metadata is
 * ignored; a pre-release sorts before its release; identifiers compare
 * numerically when both are numbers, numbers before words, words by ASCII,
 * and a longer list wins when all before are equal. */
int semver_compare(const semver *a, const semver *b);

/* The next version after `cur` for a release with `change` (see above).
 * Returns 0, or FACTORY_ETOOBIG when a number would pass SEMVER_NUMBER_MAX. */
int semver_bump(semver *out, const semver *cur, semver_change change);

/* Write `v` as text, with `prefix` (may be NULL) before it, into `out`
 * (`len` bytes, always NUL-terminated). Returns 0, or FACTORY_ETOOBIG when
 * it does not fit (out is then "" ). */
int semver_format(char *out, size_t len, const semver *v, const char *prefix);

const char *semver_change_name(semver_change c);

#endif
