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
 *
 * In detail (the rules are applied to the text after the control
 * characters are gone, so a dropped byte can never join "<!" and "--" or
 * hide a '/' at the start of a line):
 *  - \r\n, a lone \r, U+0085, U+2028 and U+2029 all become \n (GitLab
 *    deletes \r before it looks for quick actions); C0 and C1 controls and
 *    DEL are dropped; one U+FFFD stands for each maximal invalid subpart.
 *  - Blanks are space and tab; the start of `text` is a line start. (In a
 *    code block the added backslash shows; everywhere else it renders as
 *    nothing.)
 *  - A mention is GitLab's (?<!\w)@name: an '@' at the start or after any
 *    byte that is not an ASCII letter or digit (so also after '.', '-',
 *    '/', '_' and non-ASCII), followed by [A-Za-z0-9_.-]. Emails (a@b.com)
 *    are left alone. An '@' inside an http(s)/ftp URL with a dotted host
 *    and a plain path (https://mastodon.social/@user) is left alone too:
 *    GitLab renders it as a link, where mentions do not apply. (A path
 *    with '_', '*', '~', '`', '&', brackets or parentheses does not count:
 *    those can end the link before the '@'.)
 *  - Entities that render as '@' ("&#64;", "&#x40;", "&commat;"; numeric
 *    ones with any leading zeros and also without the ';', as an HTML
 *    parser reads them) get their '&' written as "&amp;", so they show as
 *    typed and mention nobody.
 *  - Applying it twice gives the same text as applying it once.
 */
int untrusted_neutralise(fbuf *out, const char *text, size_t len);

/*
 * Append `text` to `out` with secrets and personal data replaced:
 * email addresses -> "[email]", token-shaped strings and "Bearer x",
 * "Authorization: x", "PRIVATE-TOKEN: x", "password=x"/"token=x"/"api_key=x"
 * query or key-value pairs -> "[secret]", user:password@ in URLs ->
 * "[secret]@", card-like numbers (13-19 digits, spaces or dashes allowed,
 * passing the Luhn check) -> "[card]".
 *
 * In detail:
 *  - Registered secrets and everything log_mask() masks are replaced too
 *    (log_mask runs first; its "[MASKED]" comes out as "[secret]").
 *  - Tokens: glpat-, gldt-, glrt-, glptt-, glcbt-, glimt-, glsoat-, glft-,
 *    glagent-, gloas-, glffct-, GR1348941 (8+ characters after the
 *    prefix), ghp_/gho_/ghu_/ghs_/ghr_/github_pat_ (16+), xox[abprs]- (8+),
 *    sk-ant- (16+) and sk- (20+ with a digit, not after a letter or digit,
 *    so "sk-learn" and "task-" stay), AKIA/ASIA + 16 [0-9A-Z], and JWTs
 *    (eyJ...\.eyJ...\.sig): the whole token becomes "[secret]".
 *  - Keys: password, passwd, pwd, secret, token, api_key, apikey, api-key,
 *    access_token, auth, authorization, private-token, private_token,
 *    secret_key, access_key, private_key, client_secret, case-insensitive,
 *    also as the last part of a longer key after '_', '-' or '.'
 *    ("db_password", "X-Auth-Token"). Forms: key=value (query strings,
 *    logfmt, key = value), "key": "value" and 'key': 'value' (JSON and
 *    the like), key: value (a blank after the colon; "auth:8080" stays).
 *    Only the value is replaced, inside its quotes: password=[secret],
 *    "password":"[secret]". "Authorization: Bearer x" loses both words:
 *    "Authorization: [secret]". "Bearer x" alone keeps "Bearer ".
 *  - Cards: whole groups of digits separated by single spaces or dashes,
 *    13-19 digits in all, Luhn-valid, first digit 2-6 (Amex, Diners, JCB,
 *    Visa, Mastercard, Discover, UnionPay, Maestro), not inside a word or
 *    a decimal number (after '-', '_' or '(' is fine). The first digit
 *    rule keeps millisecond timestamps (1...) out.
 *  - The text is handled as bytes: invalid UTF-8 and NULs pass through
 *    unchanged (untrusted_clean sanitises first).
 */
int untrusted_redact(fbuf *out, const char *text, size_t len);

/* Redact, then neutralise: what every job uses before writing outside text
 * into GitLab. (Control characters and invalid UTF-8 are cleaned before the
 * redaction, so "glpat\x01-..." cannot slip a token through.) */
int untrusted_clean(fbuf *out, const char *text, size_t len);

/* Make a one-line title: cleaned, newlines and tabs folded to spaces,
 * trimmed, cut at `max_bytes` on a UTF-8 boundary with "..." when cut.
 * Runs of blanks become one space. The result, "..." included, is at most
 * `max_bytes` long (below 4 there is no room for "...": plain cut); 0
 * means no limit. A cut never splits a character, an entity this module
 * wrote ("&lt;") or an '@' from its zero-width space. */
int untrusted_title(fbuf *out, const char *text, size_t len, size_t max_bytes);

#endif
