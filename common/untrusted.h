/*
 * untrusted.h - text from outside (customer feedback, issue bodies, logs)
 * made safe to write into GitLab. The one place that does it: intake,
 * triage and watch all go through here.
 *
 * GitLab runs quick actions (/close, /label ~x, /confidential, ...) found
 * at the start of a line of a description or note, notifies people named in
 * mentions (@user, @group, @all), and renders HTML comments invisibly (the
 * Factory's own hidden markers are HTML comments, so text from outside must
 * never be able to forge one).
 */
#ifndef FACTORY_UNTRUSTED_H
#define FACTORY_UNTRUSTED_H

#include <stddef.h>

#include "buf.h"

/*
 * Append `text` to `out` neutralised:
 *  - a line whose first non-blank character is '/' gets a backslash before
 *    the '/' (renders the same, runs nothing);
 *  - '@' that starts a mention gets a zero-width space (U+200B) after it;
 *  - "<!--" becomes "&lt;!--" and "-->" becomes "--&gt;";
 *  - NUL bytes and invalid UTF-8 sequences become U+FFFD; other control
 *    characters except \t and \n are dropped; \r\n becomes \n.
 * Returns 0 or an fbuf error (ETOOBIG leaves what fitted).
 */
int untrusted_neutralise(fbuf *out, const char *text, size_t len);

/*
 * Append `text` to `out` with secrets and personal data replaced:
 * email addresses -> "[email]", token-shaped strings and "Bearer x",
 * "Authorization: x", "PRIVATE-TOKEN: x", "password=x"/"token=x"/"api_key=x"
 * query or key-value pairs -> "[secret]", user:password@ in URLs ->
 * "[secret]@", card-like numbers (13-19 digits, spaces or dashes allowed,
 * passing the Luhn check) -> "[card]".
 */
int untrusted_redact(fbuf *out, const char *text, size_t len);

/* Redact, then neutralise: what every job uses before writing outside text
 * into GitLab. */
int untrusted_clean(fbuf *out, const char *text, size_t len);

/* Make a one-line title: cleaned, newlines and tabs folded to spaces,
 * trimmed, cut at `max_bytes` on a UTF-8 boundary with "..." when cut. */
int untrusted_title(fbuf *out, const char *text, size_t len, size_t max_bytes);

#endif
