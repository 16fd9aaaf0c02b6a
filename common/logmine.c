/* logmine.c - masking, Drain-family template mining, fingerprints, windows. */
#define _GNU_SOURCE
#include "logmine.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

/* ---------------------------------------------------------------- hashing */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

uint64_t logmine_hash(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = FNV_OFFSET;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

static uint64_t hash_mix(uint64_t a, uint64_t b)
{
	uint64_t h = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

void logmine_fingerprint(char out[17], const char *tmpl, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t h = logmine_hash(tmpl, len);
	int i;

	for (i = 15; i >= 0; i--) {
		out[i] = hex[h & 0xf];
		h >>= 4;
	}
	out[16] = '\0';
}

/* ---------------------------------------------------------------- masking */

enum { C_SPACE = 1, C_DIGIT = 2, C_ALPHA = 4, C_HEX = 8, C_PUNCT = 16, C_MASKABLE = 32, C_EQUALS = 64 };

static unsigned char cls[256];

static void cls_init(void)
{
	static int done;
	const char *p;
	int c;

	if (done)
		return;
	for (c = '0'; c <= '9'; c++)
		cls[c] |= C_DIGIT | C_HEX;
	for (c = 'a'; c <= 'z'; c++)
		cls[c] |= C_ALPHA;
	for (c = 'A'; c <= 'Z'; c++)
		cls[c] |= C_ALPHA;
	for (c = 'a'; c <= 'f'; c++)
		cls[c] |= C_HEX;
	for (c = 'A'; c <= 'F'; c++)
		cls[c] |= C_HEX;
	for (p = " \t\r\n\v\f"; *p; p++)
		cls[(unsigned char)*p] |= C_SPACE;
	for (p = ",;()[]{}<>|\"'=:/"; *p; p++)
		cls[(unsigned char)*p] |= C_PUNCT;
	/* a token without any of these is copied as it is */
	for (c = '0'; c <= '9'; c++)
		cls[c] |= C_MASKABLE;
	for (p = "@:=\"'"; *p; p++)
		cls[(unsigned char)*p] |= C_MASKABLE;
	cls['='] |= C_EQUALS;
	done = 1;
}

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

static int is_lead(char c)
{
	return c == '(' || c == '[' || c == '{' || c == '<' || c == '"' || c == '\'';
}

static int is_trail(char c)
{
	return c == ')' || c == ']' || c == '}' || c == '>' || c == '"' || c == '\'' || c == ',' || c == ';' ||
	       c == '.' || c == ':' || c == '!' || c == '?';
}

static int all_in(const char *s, size_t n, const char *set)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strchr(set, s[i]) || !s[i])
			return 0;
	return 1;
}

static size_t count_digits(const char *s, size_t n)
{
	size_t i, d = 0;

	for (i = 0; i < n; i++)
		d += IS(s[i], C_DIGIT) ? 1 : 0;
	return d;
}

/* 1. Dates and times: digits with date/time separators, starting with a
 * digit, with at least two ':' or two '-' or a 'T' between digits. */
static int is_timestamp(const char *s, size_t n)
{
	size_t i, colons = 0, dashes = 0, digits = 0;

	if (n < 5 || !IS(s[0], C_DIGIT))
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];
		if (IS(c, C_DIGIT))
			digits++;
		else if (c == ':')
			colons++;
		else if (c == '-' || c == '/')
			dashes++;
		else if (c == 'T' || c == 'Z' || c == '.' || c == ',' || c == '+')
			continue;
		else
			return 0;
	}
	return digits >= 4 && (colons >= 2 || dashes >= 2);
}

/* 2. UUID 8-4-4-4-12. */
static int is_uuid(const char *s, size_t n)
{
	size_t i;

	if (n != 36)
		return 0;
	for (i = 0; i < n; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (!IS(s[i], C_HEX)) {
			return 0;
		}
	}
	return 1;
}

/* 3. local@domain.tld */
static int is_email(const char *s, size_t n)
{
	const char *at = memchr(s, '@', n);
	size_t i, local, dots = 0;

	if (!at || at == s)
		return 0;
	local = (size_t)(at - s);
	for (i = 0; i < local; i++)
		if (!IS(s[i], C_ALPHA | C_DIGIT) && !strchr("._%+-", s[i]))
			return 0;
	if (n - local - 1 < 3)
		return 0;
	for (i = local + 1; i < n; i++) {
		if (s[i] == '.')
			dots++;
		else if (!IS(s[i], C_ALPHA | C_DIGIT) && s[i] != '-')
			return 0;
	}
	return dots > 0 && s[n - 1] != '.';
}

/* 5. IPv4 with optional :port, or IPv6 (hex groups and at least two ':'). */
static int is_ip(const char *s, size_t n)
{
	size_t i = 0, groups = 0, colons = 0;

	while (i < n) {
		size_t d = 0;
		while (i < n && IS(s[i], C_DIGIT) && d < 4) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			break;
		groups++;
		if (groups == 4) {
			if (i == n)
				return 1;
			if (s[i] == ':' && i + 1 < n && all_in(s + i + 1, n - i - 1, "0123456789"))
				return 1;
			break;
		}
		if (i >= n || s[i] != '.')
			break;
		i++;
	}
	for (i = 0; i < n; i++) {
		if (s[i] == ':')
			colons++;
		else if (!IS(s[i], C_HEX) && s[i] != '.')
			return 0;
	}
	return colons >= 2 && count_digits(s, n) > 0;
}

/* 6. 0x1f, or a hex run of 8+ characters holding a digit. */
static int is_hex(const char *s, size_t n)
{
	size_t i;

	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (i = 2; i < n; i++)
			if (!IS(s[i], C_HEX))
				return 0;
		return 1;
	}
	if (n < 8)
		return 0;
	for (i = 0; i < n; i++)
		if (!IS(s[i], C_HEX))
			return 0;
	return count_digits(s, n) > 0;
}

/* fbuf_put and fbuf_putc with the common case inline: the miner's scratch
 * buffer is reused, so there is almost always room already. */
static inline int oput(fbuf *o, const void *p, size_t n)
{
	if (o->ptr && o->len + n < o->alloc && o->len + n <= o->max) {
		memcpy(o->ptr + o->len, p, n);
		o->len += n;
		o->ptr[o->len] = '\0';
		return 0;
	}
	return fbuf_put(o, p, n);
}

static inline int oputc(fbuf *o, char c)
{
	if (o->ptr && o->len + 1 < o->alloc && o->len + 1 <= o->max) {
		o->ptr[o->len++] = c;
		o->ptr[o->len] = '\0';
		return 0;
	}
	return fbuf_putc(o, c);
}

static int put_wild(fbuf *out)
{
	return oput(out, LOGMINE_WILDCARD, 3);
}

/* The end of a key=value value starting at s[i]: a quoted value ends at
 * its closing quote, else at , ; & or the end of the token (a closing
 * bracket or quote that ends the token is not part of the value). */
static size_t value_end(const char *s, size_t i, size_t n)
{
	size_t j = i;

	if (i < n && (s[i] == '"' || s[i] == '\'')) {
		const char *q = memchr(s + i + 1, s[i], n - i - 1);
		if (q)
			return (size_t)(q - s) + 1;
	}
	while (j < n && s[j] != ',' && s[j] != ';' && s[j] != '&')
		j++;
	if (j == n)
		while (j > i && strchr(")]}>\"'", s[j - 1]))
			j--;
	return j;
}

/*
 * 7-10 on the words of a token: words are runs between punctuation. A word
 * is masked when it holds a digit, when it is quoted on both sides, or when
 * it is the value of key=value / key:value.
 */
static int mask_words(fbuf *out, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t j;
		char c = s[i];
		int mask = 0;

		if (c == '=' && i > 0 && i + 1 < n && s[i + 1] != '=' && s[i - 1] != '=' && s[i - 1] != '!' &&
		    s[i - 1] != '<' && s[i - 1] != '>') {
			/* 9. key=value: the value is one variable */
			j = value_end(s, i + 1, n);
			if (oputc(out, '=') < 0)
				return FACTORY_ENOMEM;
			if (j > i + 1) {
				int quoted = s[i + 1] == '"' || s[i + 1] == '\'';
				if (quoted && j - i - 1 >= 2 && s[j - 1] == s[i + 1]) {
					if (oputc(out, s[i + 1]) < 0 || put_wild(out) < 0 || oputc(out, s[i + 1]) < 0)
						return FACTORY_ENOMEM;
				} else if (put_wild(out) < 0) {
					return FACTORY_ENOMEM;
				}
			}
			i = j;
			continue;
		}
		if (IS(c, C_PUNCT) || c == '&') {
			if (oputc(out, c) < 0)
				return FACTORY_ENOMEM;
			i++;
			continue;
		}
		j = i;
		while (j < n && !IS(s[j], C_PUNCT) && s[j] != '&')
			j++;
		/* the word is s[i..j) */
		{
			char before = i > 0 ? s[i - 1] : 0, after = j < n ? s[j] : 0;

			/* 10. numbers and words with digits, 8. quoted values, 9. key:value */
			mask = count_digits(s + i, j - i) > 0 ||
			       ((before == '"' || before == '\'') && after == before) ||
			       (before == ':' && i >= 2 && IS(s[i - 2], C_ALPHA) && (i < 3 || s[i - 3] != ':'));
		}
		if (mask ? put_wild(out) : oput(out, s + i, j - i)) {
			return FACTORY_ENOMEM;
		}
		i = j;
	}
	return 0;
}

/* 4. scheme://host[:port]/path?query#frag */
static int mask_url(fbuf *out, const char *s, size_t n)
{
	const char *p = memchr(s, ':', n);
	size_t i, host_start, host_end, path_end;

	if (!p || (size_t)(p - s) + 3 > n || p[1] != '/' || p[2] != '/')
		return 1;
	for (i = 0; s + i < p; i++)
		if (!IS(s[i], C_ALPHA) && s[i] != '+' && s[i] != '-' && s[i] != '.')
			return 1;
	if (p == s)
		return 1;
	host_start = (size_t)(p - s) + 3;
	host_end = host_start;
	while (host_end < n && s[host_end] != '/' && s[host_end] != '?' && s[host_end] != '#')
		host_end++;
	path_end = host_end;
	while (path_end < n && s[path_end] != '?' && s[path_end] != '#')
		path_end++;
	if (oput(out, s, host_start) < 0)
		return FACTORY_ENOMEM;
	if (memchr(s + host_start, '@', host_end - host_start) || count_digits(s + host_start, host_end - host_start)) {
		if (put_wild(out) < 0)
			return FACTORY_ENOMEM;
	} else if (oput(out, s + host_start, host_end - host_start) < 0) {
		return FACTORY_ENOMEM;
	}
	if (mask_words(out, s + host_end, path_end - host_end) < 0)
		return FACTORY_ENOMEM;
	if (path_end < n && (oputc(out, s[path_end]) < 0 || put_wild(out) < 0))
		return FACTORY_ENOMEM;
	return 0;
}

/* Mask one blank-free token, appending to out. */
static int mask_token(fbuf *out, const char *s, size_t n, unsigned char classes)
{
	size_t a = 0, b = n;
	const char *core;
	size_t cn;
	int rc;

	if (!(classes & C_MASKABLE)) /* no digit, '@', ':', '=' or quote: nothing to mask */
		return oput(out, s, n) < 0 ? FACTORY_ENOMEM : 0;
	while (a < b && is_lead(s[a]))
		a++;
	while (b > a && is_trail(s[b - 1]))
		b--;
	core = s + a;
	cn = b - a;
	if (cn > 0) {
		int whole = is_timestamp(core, cn) || is_uuid(core, cn) || is_email(core, cn);
		if (!whole && (rc = mask_url(out, s, n)) <= 0)
			return rc; /* URLs keep their own punctuation */
		if (!whole)
			whole = is_ip(core, cn) || is_hex(core, cn);
		if (whole) {
			if (oput(out, s, a) < 0 || put_wild(out) < 0 || oput(out, s + b, n - b) < 0)
				return FACTORY_ENOMEM;
			return 0;
		}
	}
	return mask_words(out, s, n);
}

/* A token [i, j) holding key="value with blanks": where the token really
 * ends (after the closing quote and what sticks to it), else j. */
static size_t quoted_value_end(const char *msg, size_t i, size_t j, size_t len)
{
	size_t k;

	for (k = i; k + 1 < j; k++) {
		if (msg[k] == '=' && (msg[k + 1] == '"' || msg[k + 1] == '\'')) {
			const char *q = memchr(msg + k + 2, msg[k + 1], j - k - 2);
			const char *end;
			size_t lim;
			if (q)
				continue; /* closed within the token */
			lim = len - j < 1024 ? len - j : 1024;
			end = memchr(msg + j, msg[k + 1], lim);
			if (!end || memchr(msg + j, '\n', (size_t)(end - msg) - j) ||
			    memchr(msg + j, '\0', (size_t)(end - msg) - j))
				return j;
			k = (size_t)(end - msg) + 1;
			while (k < len && !IS(msg[k], C_SPACE) && msg[k])
				k++;
			return k;
		}
	}
	return j;
}

int logmine_mask(fbuf *out, const char *msg, size_t len)
{
	unsigned char classes;
	size_t i = 0, start_len = out->len, prev_tok = (size_t)-1;

	cls_init();
	if (len > LOGMINE_MAX_LINE)
		len = LOGMINE_MAX_LINE;
	while (i < len) {
		size_t j, tok_start;

		while (i < len && IS(msg[i], C_SPACE))
			i++;
		if (i >= len)
			break;
		j = i;
		classes = 0;
		while (j < len && !IS(msg[j], C_SPACE) && msg[j])
			classes |= cls[(unsigned char)msg[j++]];
		if (classes & C_EQUALS) {
			size_t k = quoted_value_end(msg, i, j, len);
			if (k != j)
				classes |= C_MASKABLE;
			j = k;
		}
		if (j == i) { /* a NUL byte: skip it */
			i++;
			continue;
		}
		if (out->len > start_len && oputc(out, ' ') < 0)
			return FACTORY_ENOMEM;
		tok_start = out->len;
		if (mask_token(out, msg + i, j - i, classes) < 0)
			return FACTORY_ENOMEM;
		/* fold "<*> <*>" into "<*>" */
		if (out->len - tok_start == 3 && !memcmp(out->ptr + tok_start, LOGMINE_WILDCARD, 3)) {
			if (prev_tok != (size_t)-1 && prev_tok + 4 == tok_start &&
			    !memcmp(out->ptr + prev_tok, LOGMINE_WILDCARD, 3)) {
				out->len = prev_tok + 3;
				out->ptr[out->len] = '\0';
				tok_start = prev_tok;
			}
			prev_tok = tok_start;
		} else {
			prev_tok = (size_t)-1;
		}
		i = j;
	}
	return 0;
}

/* ------------------------------------------------------- u64 -> u64 map */

/* Open addressing, linear probing, backward-shift deletion. Key 0 is empty. */
typedef struct {
	uint64_t *keys; /* cap keys, then cap values, in one block */
	size_t cap;     /* power of two */
	size_t len;
} u64map;

#define VAL(m, i) ((m)->keys[(m)->cap + (i)])

static uint64_t nonzero(uint64_t k)
{
	return k ? k : 1;
}

static int u64map_init(u64map *m, size_t cap)
{
	m->cap = cap;
	m->len = 0;
	/* one block: keys, then values */
	if (!(m->keys = calloc(cap * 2, sizeof(*m->keys))))
		return FACTORY_ENOMEM;
	return 0;
}

static void u64map_release(u64map *m)
{
	free(m->keys);
	m->keys = NULL;
	m->cap = m->len = 0;
}

static uint64_t *u64map_get(const u64map *m, uint64_t k)
{
	size_t i = (size_t)(hash_mix(k, 0) & (m->cap - 1));

	while (m->keys[i]) {
		if (m->keys[i] == k)
			return &VAL(m, i);
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

static int u64map_grow(u64map *m)
{
	u64map n;
	size_t i;

	if (u64map_init(&n, m->cap * 2) < 0)
		return FACTORY_ENOMEM;
	for (i = 0; i < m->cap; i++) {
		if (m->keys[i]) {
			size_t j = (size_t)(hash_mix(m->keys[i], 0) & (n.cap - 1));
			while (n.keys[j])
				j = (j + 1) & (n.cap - 1);
			n.keys[j] = m->keys[i];
			VAL(&n, j) = VAL(m, i);
			n.len++;
		}
	}
	u64map_release(m);
	*m = n;
	return 0;
}

static int u64map_put(u64map *m, uint64_t k, uint64_t v)
{
	size_t i;

	if ((m->len + 1) * 4 > m->cap * 3 && u64map_grow(m) < 0)
		return FACTORY_ENOMEM;
	i = (size_t)(hash_mix(k, 0) & (m->cap - 1));
	while (m->keys[i]) {
		if (m->keys[i] == k) {
			VAL(m, i) = v;
			return 0;
		}
		i = (i + 1) & (m->cap - 1);
	}
	m->keys[i] = k;
	VAL(m, i) = v;
	m->len++;
	return 0;
}

static void u64map_del(u64map *m, uint64_t k)
{
	size_t i = (size_t)(hash_mix(k, 0) & (m->cap - 1)), j;

	while (m->keys[i] && m->keys[i] != k)
		i = (i + 1) & (m->cap - 1);
	if (!m->keys[i])
		return;
	m->keys[i] = 0;
	m->len--;
	j = i;
	for (;;) {
		size_t home;
		j = (j + 1) & (m->cap - 1);
		if (!m->keys[j])
			break;
		home = (size_t)(hash_mix(m->keys[j], 0) & (m->cap - 1));
		/* move j back to i when its home is not in (i, j] cyclically */
		if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
			m->keys[i] = m->keys[j];
			VAL(m, i) = VAL(m, j);
			m->keys[j] = 0;
			i = j;
		}
	}
}

/* ---------------------------------------------------------------- mining */

#define NO_CLUSTER UINT32_MAX
#define CACHE_SIZE 65536
#define MAX_TREE_NODES (1u << 20)

typedef struct {
	uint64_t id;   /* 0: free slot */
	uint64_t leaf; /* leaf key */
	uint64_t count;
	uint64_t last_used; /* miner clock */
	uint32_t next;      /* next cluster in the same leaf */
	uint32_t ntok;
	uint32_t *thash; /* per token: hash, 0 for a wildcard */
	uint32_t *toff;  /* per token: offset in text */
	uint32_t *tlen;
	unsigned char *tkind; /* per token: K_* */
	uint32_t *tkey;       /* per token: key of key=value, or 0 */
	char *text;           /* template, tokens joined by ' ' */
	size_t text_len;
	char fp[17];
} cluster;

typedef struct {
	uint64_t hash;
	uint64_t cluster_id;
	uint32_t idx;
} cache_entry;

struct logmine {
	logmine_options o;
	cluster *cl;
	size_t ncl, alloc_cl;
	uint32_t *free_slots;
	size_t nfree;
	u64map leaves;    /* leaf key -> first cluster index + 1 */
	u64map byid;      /* cluster id -> index */
	u64map children;  /* child node key -> 1 */
	u64map nchildren; /* node key -> children count */
	cache_entry *cache;
	uint64_t clock;
	uint64_t next_id;
	logmine_stats st;
	fbuf masked;
	/* scratch for the current message */
	uint32_t *lh, *loff, *llen;
	unsigned char *lkind;
	uint32_t *lkey;
};

/* A token of the message being placed. */
static uint32_t tok_hash(const char *s, size_t n)
{
	uint32_t h;

	if (n == 3 && !memcmp(s, LOGMINE_WILDCARD, 3))
		return 0;
	h = (uint32_t)(logmine_hash(s, n) >> 32);
	return h ? h : 1;
}

enum { K_NONE = 0, K_WORD = 1, K_CAPS = 2, K_LITERAL = 3 };

/* What kind of token this is for the "two different words" rule: a word of
 * letters only (brackets and trailing punctuation aside), all capitals (an
 * enum-like value), or a literal value (true, false, null, ...). */
static unsigned char tok_kind(const char *s, size_t n)
{
	static const char *const literals[] = {"true", "false", "null", "nil",       "none", "yes",
	                                       "no",   "on",    "off",  "undefined", "nan",  NULL};
	size_t i, upper = 0;
	int k;

	while (n > 0 && (is_trail(s[n - 1]) || is_lead(s[n - 1])))
		n--;
	while (n > 0 && is_lead(s[0])) {
		s++;
		n--;
	}
	if (n < 2)
		return K_NONE;
	for (i = 0; i < n; i++) {
		if (!IS(s[i], C_ALPHA))
			return K_NONE;
		upper += (s[i] >= 'A' && s[i] <= 'Z');
	}
	for (k = 0; literals[k]; k++)
		if (strlen(literals[k]) == n && !strncasecmp(literals[k], s, n))
			return K_LITERAL;
	return upper == n ? K_CAPS : K_WORD;
}

/* The hash of the key of a key=value token ("num=<*>,x=<*>" -> "num"), 0 if
 * the token has no '=' after a key. */
static uint32_t tok_key(const char *s, size_t n)
{
	const char *eq = memchr(s, '=', n);
	uint32_t h;

	if (!eq || eq == s)
		return 0;
	h = (uint32_t)logmine_hash(s, (size_t)(eq - s));
	return h ? h : 1;
}

/* Two different constant tokens that mark two different events. */
static int tokens_distinct(unsigned char ka, unsigned char kb, uint32_t keya, uint32_t keyb)
{
	if (keya && keyb && keya != keyb)
		return 1;
	return ka && kb && ka != K_LITERAL && kb != K_LITERAL;
}

/* Whether word token `w` of the message appears again inside another token
 * that holds a path or a wildcard: then it is a value the message echoes
 * (".. hive: SAM, .. from path '/x/config/SAM'"), not a constant word. */
static int word_echoed(const char *s, const uint32_t *off, const uint32_t *len, uint32_t nt, uint32_t w)
{
	const char *word = s + off[w];
	size_t wl = len[w], i;

	while (wl > 0 && (is_trail(word[wl - 1]) || is_lead(word[wl - 1])))
		wl--;
	while (wl > 0 && is_lead(word[0])) {
		word++;
		wl--;
	}
	if (wl < 3)
		return 0;
	for (i = 0; i < nt; i++) {
		const char *t = s + off[i];
		size_t tl = len[i], k;
		if (i == w || tl <= wl || (!memchr(t, '/', tl) && !memmem(t, tl, LOGMINE_WILDCARD, 3)))
			continue;
		for (k = 0; k + wl <= tl; k++) {
			if (memcmp(t + k, word, wl) != 0)
				continue;
			/* whole word: not inside a longer run of letters */
			if ((k == 0 || !IS(t[k - 1], C_ALPHA)) && (k + wl == tl || !IS(t[k + wl], C_ALPHA)))
				return 1;
		}
	}
	return 0;
}

static int tok_routes_wild(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (IS(s[i], C_DIGIT) || (s[i] == '<' && i + 2 < n && s[i + 1] == '*' && s[i + 2] == '>'))
			return 1;
	return 0;
}

void logmine_options_init(logmine_options *o)
{
	o->sim_threshold = 0.5;
	o->depth = 2;
	o->max_children = 100;
	o->max_clusters = 50000;
}

int logmine_new(logmine **out, const logmine_options *opts)
{
	logmine *lm;
	logmine_options o;

	cls_init();
	*out = NULL;
	if (opts)
		o = *opts;
	else
		logmine_options_init(&o);
	if (o.sim_threshold < 0 || o.sim_threshold > 1 || o.depth < 0 || o.depth > 16 || o.max_children < 1 ||
	    o.max_clusters < 8 || o.max_clusters > (1u << 30))
		return ferror_set(FACTORY_ECONFIG, "bad template mining options");
	if (!(lm = calloc(1, sizeof(*lm))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	lm->o = o;
	lm->next_id = 1;
	fbuf_init(&lm->masked, LOGMINE_MAX_LINE * 4);
	if (u64map_init(&lm->leaves, 1024) < 0 || u64map_init(&lm->byid, 1024) < 0 ||
	    u64map_init(&lm->children, 1024) < 0 || u64map_init(&lm->nchildren, 1024) < 0 ||
	    !(lm->cache = calloc(CACHE_SIZE, sizeof(*lm->cache))) ||
	    !(lm->lh = malloc(LOGMINE_MAX_TOKENS * sizeof(*lm->lh))) ||
	    !(lm->loff = malloc(LOGMINE_MAX_TOKENS * sizeof(*lm->loff))) ||
	    !(lm->llen = malloc(LOGMINE_MAX_TOKENS * sizeof(*lm->llen))) || !(lm->lkind = malloc(LOGMINE_MAX_TOKENS)) ||
	    !(lm->lkey = malloc(LOGMINE_MAX_TOKENS * sizeof(*lm->lkey)))) {
		logmine_free(lm);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	*out = lm;
	return 0;
}

static void cluster_release(cluster *c)
{
	free(c->thash);
	free(c->toff);
	free(c->tlen);
	free(c->tkind);
	free(c->tkey);
	free(c->text);
	memset(c, 0, sizeof(*c));
	c->next = NO_CLUSTER;
}

void logmine_free(logmine *lm)
{
	size_t i;

	if (!lm)
		return;
	for (i = 0; i < lm->ncl; i++)
		cluster_release(&lm->cl[i]);
	free(lm->cl);
	free(lm->free_slots);
	u64map_release(&lm->leaves);
	u64map_release(&lm->byid);
	u64map_release(&lm->children);
	u64map_release(&lm->nchildren);
	free(lm->cache);
	free(lm->lh);
	free(lm->loff);
	free(lm->llen);
	free(lm->lkind);
	free(lm->lkey);
	fbuf_release(&lm->masked);
	free(lm);
}

/* Split `s` into tokens at single spaces into the scratch arrays; the last
 * token takes the rest when there are too many. */
static uint32_t split_tokens(logmine *lm, const char *s, size_t n)
{
	uint32_t nt = 0;
	size_t i = 0;

	if (n == 0)
		return 0;
	while (i <= n) {
		size_t j = i;
		if (nt == LOGMINE_MAX_TOKENS - 1)
			j = n;
		else
			while (j < n && s[j] != ' ')
				j++;
		lm->loff[nt] = (uint32_t)i;
		lm->llen[nt] = (uint32_t)(j - i);
		lm->lh[nt] = tok_hash(s + i, j - i);
		lm->lkind[nt] = tok_kind(s + i, j - i);
		lm->lkey[nt] = tok_key(s + i, j - i);
		nt++;
		i = j + 1;
	}
	return nt;
}

/* Route through the tree: the leaf key for this token list. */
static int route(uint64_t *leaf_out, logmine *lm, const char *s, uint32_t nt)
{
	uint64_t key = hash_mix(0x6c6f676d696e65ULL, nt);
	int d;

	for (d = 0; d < lm->o.depth && (uint32_t)d < nt; d++) {
		const char *t = s + lm->loff[d];
		size_t tl = lm->llen[d];
		uint64_t child;
		int wild = lm->lh[d] == 0 || tok_routes_wild(t, tl);

		if (!wild) {
			child = nonzero(hash_mix(key, logmine_hash(t, tl)));
			if (!u64map_get(&lm->children, child)) {
				uint64_t *cnt = u64map_get(&lm->nchildren, nonzero(key));
				if ((cnt && *cnt >= (uint64_t)lm->o.max_children) ||
				    lm->children.len >= MAX_TREE_NODES) {
					wild = 1;
				} else {
					if (u64map_put(&lm->children, child, 1) < 0 ||
					    u64map_put(&lm->nchildren, nonzero(key), cnt ? *cnt + 1 : 1) < 0)
						return FACTORY_ENOMEM;
				}
			}
			if (!wild) {
				key = child;
				continue;
			}
		}
		key = nonzero(hash_mix(key, 0x2a2a2a));
	}
	*leaf_out = nonzero(key);
	return 0;
}

/* Similarity of the message to cluster c; -1 when it may not join. */
static double similarity(const logmine *lm, const cluster *c, const char *s, uint32_t nt, int *params)
{
	uint32_t i, same = 0;
	const char *t = c->text;

	*params = 0;
	for (i = 0; i < nt; i++) {
		if (c->thash[i] == 0) {
			(*params)++;
			continue;
		}
		if (c->thash[i] == lm->lh[i] && c->tlen[i] == lm->llen[i] &&
		    !memcmp(t + c->toff[i], s + lm->loff[i], lm->llen[i])) {
			same++;
		} else if (tokens_distinct(c->tkind[i], lm->lkind[i], c->tkey[i], lm->lkey[i]) &&
		           !(c->tkey[i] == 0 && word_echoed(s, lm->loff, lm->llen, nt, i))) {
			return -1; /* two different words: two different events */
		}
	}
	return nt ? (double)same / nt : 1.0;
}

/* Rebuild a cluster's text from per-token pieces of `src`. */
static int cluster_set_text(cluster *c, const char *src, const uint32_t *off, const uint32_t *len,
                            const uint32_t *hashes)
{
	size_t total = 0, pos = 0;
	uint32_t i;
	char *text;

	for (i = 0; i < c->ntok; i++)
		total += (hashes[i] == 0 ? 3 : len[i]) + 1;
	if (!(text = malloc(total + 1)))
		return FACTORY_ENOMEM;
	for (i = 0; i < c->ntok; i++) {
		uint32_t l = hashes[i] == 0 ? 3 : len[i];
		memcpy(text + pos, hashes[i] == 0 ? LOGMINE_WILDCARD : src + off[i], l);
		c->toff[i] = (uint32_t)pos;
		c->tlen[i] = l;
		pos += l;
		if (i + 1 < c->ntok)
			text[pos++] = ' ';
	}
	text[pos] = '\0';
	free(c->text);
	c->text = text;
	c->text_len = pos;
	logmine_fingerprint(c->fp, text, pos);
	return 0;
}

static void leaf_unlink(logmine *lm, uint32_t idx)
{
	cluster *c = &lm->cl[idx];
	uint64_t *head = u64map_get(&lm->leaves, c->leaf);
	uint32_t cur, prev = NO_CLUSTER;

	if (!head)
		return;
	cur = (uint32_t)(*head - 1);
	while (cur != NO_CLUSTER && cur != idx) {
		prev = cur;
		cur = lm->cl[cur].next;
	}
	if (cur != idx)
		return;
	if (prev == NO_CLUSTER) {
		if (c->next == NO_CLUSTER)
			u64map_del(&lm->leaves, c->leaf);
		else
			*head = (uint64_t)c->next + 1;
	} else {
		lm->cl[prev].next = c->next;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Evict the least recently used eighth of the clusters. */
static int evict(logmine *lm)
{
	uint64_t *ages, cutoff;
	size_t i, n = 0, target = lm->o.max_clusters / 8;

	if (!(ages = malloc(lm->ncl * sizeof(*ages))))
		return FACTORY_ENOMEM;
	for (i = 0; i < lm->ncl; i++)
		if (lm->cl[i].id)
			ages[n++] = lm->cl[i].last_used;
	if (n == 0) {
		free(ages);
		return 0;
	}
	qsort(ages, n, sizeof(*ages), cmp_u64);
	cutoff = ages[target < n ? target : n - 1];
	free(ages);
	for (i = 0; i < lm->ncl && lm->st.clusters > lm->o.max_clusters - target; i++) {
		cluster *c = &lm->cl[i];
		if (!c->id || c->last_used > cutoff)
			continue;
		leaf_unlink(lm, (uint32_t)i);
		u64map_del(&lm->byid, c->id);
		cluster_release(c);
		lm->free_slots[lm->nfree++] = (uint32_t)i;
		lm->st.clusters--;
		lm->st.evicted++;
	}
	return 0;
}

static int new_cluster(uint32_t *idx_out, logmine *lm, const char *s, uint32_t nt, uint64_t leaf)
{
	uint32_t idx;
	cluster *c;
	uint64_t *head;

	if (lm->st.clusters >= lm->o.max_clusters && evict(lm) < 0)
		return FACTORY_ENOMEM;
	if (lm->nfree) {
		idx = lm->free_slots[--lm->nfree];
	} else {
		if (lm->ncl == lm->alloc_cl) {
			size_t na = lm->alloc_cl ? lm->alloc_cl * 2 : 256;
			cluster *ncl = realloc(lm->cl, na * sizeof(*ncl));
			uint32_t *nfs;
			if (!ncl)
				return FACTORY_ENOMEM;
			lm->cl = ncl;
			if (!(nfs = realloc(lm->free_slots, na * sizeof(*nfs))))
				return FACTORY_ENOMEM;
			lm->free_slots = nfs;
			lm->alloc_cl = na;
		}
		idx = (uint32_t)lm->ncl++;
		memset(&lm->cl[idx], 0, sizeof(cluster));
	}
	c = &lm->cl[idx];
	c->ntok = nt;
	c->leaf = leaf;
	c->next = NO_CLUSTER;
	c->thash = malloc((nt ? nt : 1) * sizeof(*c->thash));
	c->toff = malloc((nt ? nt : 1) * sizeof(*c->toff));
	c->tlen = malloc((nt ? nt : 1) * sizeof(*c->tlen));
	c->tkind = malloc(nt ? nt : 1);
	c->tkey = malloc((nt ? nt : 1) * sizeof(*c->tkey));
	if (!c->thash || !c->toff || !c->tlen || !c->tkind || !c->tkey)
		goto oom;
	memcpy(c->thash, lm->lh, nt * sizeof(*c->thash));
	memcpy(c->tkind, lm->lkind, nt);
	memcpy(c->tkey, lm->lkey, nt * sizeof(*c->tkey));
	if (cluster_set_text(c, s, lm->loff, lm->llen, lm->lh) < 0)
		goto oom;
	c->id = lm->next_id++;
	if (u64map_put(&lm->byid, c->id, idx) < 0)
		goto oom;
	head = u64map_get(&lm->leaves, leaf);
	if (head)
		c->next = (uint32_t)(*head - 1);
	if (u64map_put(&lm->leaves, leaf, (uint64_t)idx + 1) < 0) {
		u64map_del(&lm->byid, c->id);
		goto oom;
	}
	lm->st.clusters++;
	lm->st.created++;
	*idx_out = idx;
	return 0;
oom:
	cluster_release(c);
	lm->free_slots[lm->nfree++] = idx;
	return FACTORY_ENOMEM;
}

/* Merge the message into cluster c: differing positions become wildcards. */
static int merge(int *changed, cluster *c, const char *s, uint32_t nt, const logmine *lm)
{
	uint32_t i, *hashes;
	int any = 0, rc;

	*changed = 0;
	for (i = 0; i < nt; i++) {
		if (c->thash[i] && (c->thash[i] != lm->lh[i] || c->tlen[i] != lm->llen[i] ||
		                    memcmp(c->text + c->toff[i], s + lm->loff[i], lm->llen[i]) != 0)) {
			any = 1;
			break;
		}
	}
	if (!any)
		return 0;
	if (!(hashes = malloc(nt * sizeof(*hashes))))
		return FACTORY_ENOMEM;
	for (i = 0; i < nt; i++) {
		if (c->thash[i] && (c->thash[i] != lm->lh[i] || c->tlen[i] != lm->llen[i] ||
		                    memcmp(c->text + c->toff[i], s + lm->loff[i], lm->llen[i]) != 0)) {
			c->thash[i] = 0;
			c->tkind[i] = K_NONE;
			c->tkey[i] = 0;
		}
		hashes[i] = c->thash[i];
	}
	{
		/* the pieces come from the old text, so copy it first */
		char *old = c->text;
		uint32_t *off = malloc(nt * sizeof(*off)), *len = malloc(nt * sizeof(*len));
		if (!off || !len) {
			free(off);
			free(len);
			free(hashes);
			return FACTORY_ENOMEM;
		}
		memcpy(off, c->toff, nt * sizeof(*off));
		memcpy(len, c->tlen, nt * sizeof(*len));
		c->text = NULL;
		rc = cluster_set_text(c, old, off, len, hashes);
		if (rc < 0)
			c->text = old;
		else
			free(old);
		free(off);
		free(len);
	}
	free(hashes);
	if (rc < 0)
		return FACTORY_ENOMEM;
	*changed = 1;
	return 0;
}

static void fill_match(logmine_match *out, const cluster *c, int created, int changed)
{
	out->cluster_id = c->id;
	out->tmpl = c->text;
	out->tmpl_len = c->text_len;
	memcpy(out->fingerprint, c->fp, sizeof(out->fingerprint));
	out->count = c->count;
	out->created = created;
	out->changed = changed;
}

int logmine_add_masked(logmine_match *out, logmine *lm, const char *s, size_t n)
{
	uint64_t h = nonzero(logmine_hash(s, n)), leaf;
	cache_entry *ce = &lm->cache[h & (CACHE_SIZE - 1)];
	uint32_t nt, idx, best = NO_CLUSTER, cur;
	uint64_t *head;
	double best_sim = -1;
	int best_params = -1, changed = 0, created = 0;

	memset(out, 0, sizeof(*out));
	lm->clock++;
	lm->st.messages++;
	if (ce->hash == h && ce->idx < lm->ncl && lm->cl[ce->idx].id == ce->cluster_id && ce->cluster_id) {
		cluster *c = &lm->cl[ce->idx];
		c->count++;
		c->last_used = lm->clock;
		lm->st.cache_hits++;
		fill_match(out, c, 0, 0);
		return 0;
	}
	nt = split_tokens(lm, s, n);
	if (route(&leaf, lm, s, nt) < 0)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	head = u64map_get(&lm->leaves, leaf);
	for (cur = head ? (uint32_t)(*head - 1) : NO_CLUSTER; cur != NO_CLUSTER; cur = lm->cl[cur].next) {
		int params;
		double sim = similarity(lm, &lm->cl[cur], s, nt, &params);
		if (sim > best_sim || (sim == best_sim && params > best_params)) {
			best_sim = sim;
			best_params = params;
			best = cur;
		}
	}
	if (best != NO_CLUSTER && best_sim >= lm->o.sim_threshold) {
		idx = best;
		if (merge(&changed, &lm->cl[idx], s, nt, lm) < 0)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
	} else {
		if (new_cluster(&idx, lm, s, nt, leaf) < 0)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		created = 1;
	}
	lm->cl[idx].count++;
	lm->cl[idx].last_used = lm->clock;
	ce->hash = h;
	ce->idx = idx;
	ce->cluster_id = lm->cl[idx].id;
	fill_match(out, &lm->cl[idx], created, changed);
	return 0;
}

int logmine_add(logmine_match *out, logmine *lm, const char *msg, size_t len)
{
	fbuf_reset(&lm->masked);
	if (logmine_mask(&lm->masked, msg, len) < 0)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return logmine_add_masked(out, lm, fbuf_cstr(&lm->masked), lm->masked.len);
}

const char *logmine_template(const logmine *lm, uint64_t cluster_id)
{
	const uint64_t *idx = u64map_get(&lm->byid, cluster_id);

	return idx ? lm->cl[*idx].text : NULL;
}

void logmine_get_stats(logmine_stats *out, const logmine *lm)
{
	*out = lm->st;
}

double logmine_template_similarity(const char *a, const char *b)
{
	size_t na = 1, nb = 1, same = 0, n = 0;
	const char *p;

	for (p = a; *p; p++)
		na += *p == ' ';
	for (p = b; *p; p++)
		nb += *p == ' ';
	if (na != nb)
		return -1;
	while (*a || *b) {
		size_t la = strcspn(a, " "), lb = strcspn(b, " ");
		int wa = la == 3 && !memcmp(a, LOGMINE_WILDCARD, 3), wb = lb == 3 && !memcmp(b, LOGMINE_WILDCARD, 3);
		if (!wa && !wb && la == lb && !memcmp(a, b, la))
			same++;
		n++;
		a += la + (a[la] == ' ');
		b += lb + (b[lb] == ' ');
	}
	return n ? (double)same / (double)n : 1.0;
}

/* --------------------------------------------------------------- windows */

struct logmine_windows {
	int count;
	long window_ms;
	size_t max_keys;
	u64map index;   /* key hash -> slot */
	int64_t *times; /* slot * count ring of event times */
	int64_t *last;  /* per slot: last event time */
	uint64_t *keyh; /* per slot: key hash, 0 when free */
	uint32_t *nev;  /* per slot: events in the ring */
	uint32_t *head; /* per slot: next write position */
	uint32_t *free_slots;
	size_t nfree, used, hand;
	uint64_t evicted; /* keys dropped while they could still fire */
};

int logmine_windows_new(logmine_windows **out, int count, long window_ms, size_t max_keys)
{
	logmine_windows *w;
	size_t i, cap;

	*out = NULL;
	if (count < 1 || count > 10000 || window_ms < 1 || max_keys < 8 || max_keys > (1u << 26))
		return ferror_set(FACTORY_ECONFIG, "bad window rule: count %d, window %ld ms, keys %zu", count,
		                  window_ms, max_keys);
	if (!(w = calloc(1, sizeof(*w))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	w->count = count;
	w->window_ms = window_ms;
	w->max_keys = max_keys;
	for (cap = 1024; cap < max_keys * 4; cap <<= 1)
		; /* a sparse index keeps probe runs (and deletions) short */
	if (u64map_init(&w->index, cap) < 0 || !(w->times = malloc(max_keys * (size_t)count * sizeof(int64_t))) ||
	    !(w->last = calloc(max_keys, sizeof(int64_t))) || !(w->keyh = calloc(max_keys, sizeof(uint64_t))) ||
	    !(w->nev = calloc(max_keys, sizeof(uint32_t))) || !(w->head = calloc(max_keys, sizeof(uint32_t))) ||
	    !(w->free_slots = malloc(max_keys * sizeof(uint32_t)))) {
		logmine_windows_free(w);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	for (i = 0; i < max_keys; i++)
		w->free_slots[i] = (uint32_t)(max_keys - 1 - i);
	w->nfree = max_keys;
	*out = w;
	return 0;
}

void logmine_windows_free(logmine_windows *w)
{
	if (!w)
		return;
	u64map_release(&w->index);
	free(w->times);
	free(w->last);
	free(w->keyh);
	free(w->nev);
	free(w->head);
	free(w->free_slots);
	free(w);
}

/*
 * Make room for one key. A clock hand moves over the slots: among the next
 * 16 keys, the first whose last event is older than the window before `t`
 * is dropped (it can no longer fire: nothing is lost); when none is, the
 * one with the oldest last event is (counted as evicted).
 */
static void windows_evict(logmine_windows *w, int64_t t)
{
	size_t scanned, victim = (size_t)-1;
	int64_t oldest = INT64_MAX;

	for (scanned = 0; scanned < 16 && scanned < w->max_keys; scanned++) {
		size_t i = w->hand;
		if (++w->hand == w->max_keys)
			w->hand = 0;
		if (!w->keyh[i])
			continue;
		if (w->last[i] < t - w->window_ms) {
			victim = i;
			oldest = INT64_MIN;
			break;
		}
		if (w->last[i] < oldest) {
			oldest = w->last[i];
			victim = i;
		}
	}
	if (victim == (size_t)-1)
		return; /* cannot happen: the table is full */
	if (oldest != INT64_MIN)
		w->evicted++;
	u64map_del(&w->index, w->keyh[victim]);
	w->keyh[victim] = 0;
	w->free_slots[w->nfree++] = (uint32_t)victim;
	w->used--;
}

int logmine_windows_add(int *fired, logmine_windows *w, const char *key, size_t key_len, int64_t t_ms)
{
	uint64_t kh = nonzero(logmine_hash(key, key_len));
	uint64_t *slotp = u64map_get(&w->index, kh);
	size_t slot;
	int64_t *ring, oldest;
	uint32_t c = (uint32_t)w->count;

	*fired = 0;
	if (slotp) {
		slot = (size_t)*slotp;
	} else {
		if (w->nfree == 0)
			windows_evict(w, t_ms);
		slot = w->free_slots[--w->nfree];
		if (u64map_put(&w->index, kh, slot) < 0) {
			w->nfree++;
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		w->keyh[slot] = kh;
		w->nev[slot] = 0;
		w->head[slot] = 0;
		w->used++;
	}
	ring = w->times + slot * c;
	ring[w->head[slot]] = t_ms;
	w->head[slot] = (w->head[slot] + 1) % c;
	if (w->nev[slot] < c)
		w->nev[slot]++;
	if (t_ms > w->last[slot] || w->nev[slot] == 1)
		w->last[slot] = t_ms;
	if (w->nev[slot] == c) {
		/* the ring is full: head points at the oldest of the last c events */
		oldest = ring[w->head[slot]];
		if (w->last[slot] - oldest <= w->window_ms) {
			*fired = 1;
			w->nev[slot] = 0;
			w->head[slot] = 0;
		}
	}
	return 0;
}

size_t logmine_windows_keys(const logmine_windows *w)
{
	return w->used;
}

uint64_t logmine_windows_evicted(const logmine_windows *w)
{
	return w->evicted;
}
