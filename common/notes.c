/* notes.c - release notes: items, plain lines, renderings, state markers. */
#include "notes.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "untrusted.h"

#define MARK "<!-- factory-release "
#define MARK_V1 "<!-- factory-release v1 "
#define STATE_HEAD "<!-- factory-release v1 version="
#define STATE_MAX_ITEMS 100000
#define CHAT_MAX_BULLETS 20
#define LINE_SCRATCH 4096

static int oom(void)
{
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

/* ---- items ---- */

void notes_item_init(notes_item *it)
{
	memset(it, 0, sizeof(*it));
	it->group = NOTES_OTHER;
}

void notes_item_release(notes_item *it)
{
	size_t i;

	free(it->title);
	free(it->summary);
	free(it->url);
	for (i = 0; i < it->nmrs; i++)
		free(it->mrs[i].url);
	notes_item_init(it);
}

int notes_item_set(char **field, const char *value)
{
	char *copy = NULL;

	if (value && !(copy = strdup(value)))
		return oom();
	free(*field);
	*field = copy;
	return 0;
}

int notes_item_add_mr(notes_item *it, long iid, const char *url)
{
	size_t i;

	for (i = 0; i < it->nmrs; i++)
		if (it->mrs[i].iid == iid)
			return 0;
	if (it->nmrs >= NOTES_MAX_MRS)
		return 0;
	it->mrs[it->nmrs].url = NULL;
	if (url && !(it->mrs[it->nmrs].url = strdup(url)))
		return oom();
	it->mrs[it->nmrs++].iid = iid;
	return 0;
}

int notes_item_private(const notes_item *it)
{
	return it->confidential || it->group == NOTES_SECURITY;
}

void notes_item_key(char *out, size_t len, const notes_item *it)
{
	if (it->is_commit)
		snprintf(out, len, "@%.8s", it->sha);
	else
		snprintf(out, len, "#%ld", it->iid);
}

const char *notes_group_title(notes_group g)
{
	static const char *const t[] = {"Security", "New features", "Fixes", "Performance", "Other changes"};
	return g >= 0 && g < NOTES_NGROUPS ? t[g] : "Other changes";
}

const char *notes_group_name(notes_group g)
{
	static const char *const t[] = {"security", "feature", "fix", "performance", "other"};
	return g >= 0 && g < NOTES_NGROUPS ? t[g] : "other";
}

/* What one item is, in a few words, for email and chat. */
static const char *group_singular(notes_group g)
{
	static const char *const t[] = {"security fix", "new feature", "fix", "performance improvement", "change"};
	return g >= 0 && g < NOTES_NGROUPS ? t[g] : "change";
}

static const char *neutral_line(notes_group g)
{
	switch (g) {
	case NOTES_SECURITY:
		return "A security issue was fixed";
	case NOTES_FEATURE:
		return "A privately requested improvement";
	case NOTES_FIX:
		return "A privately reported problem was fixed";
	case NOTES_PERFORMANCE:
		return "A performance improvement";
	default:
		return "A private change";
	}
}

/* ---- plain lines ---- */

static const char *const prefix_words[] = {
        "feat",   "feature",     "fix",         "bugfix", "hotfix",  "bug",   "perf",  "performance", "chore",
        "docs",   "doc",         "refactor",    "build",  "ci",      "test",  "tests", "style",       "security",
        "revert", "improvement", "enhancement", "change", "changed", "added", "fixed", "removed",     NULL,
};

/* Length of a leading "[tag] " or "word(scope)!: " to drop, 0 if none. */
static size_t prefix_len(const char *s)
{
	const char *p = s, *w;
	size_t i;

	if (*p == '[') {
		const char *e = memchr(p, ']', strnlen(p, 22));
		if (e && e > p + 1 && !memchr(p, '\n', (size_t)(e - p))) {
			p = e + 1;
			while (*p == ' ' || *p == '\t')
				p++;
			return (size_t)(p - s);
		}
		return 0;
	}
	w = p;
	while (isalpha((unsigned char)*p))
		p++;
	if (p == w)
		return 0;
	for (i = 0; prefix_words[i]; i++)
		if (strlen(prefix_words[i]) == (size_t)(p - w) && !strncasecmp(w, prefix_words[i], (size_t)(p - w)))
			break;
	if (!prefix_words[i])
		return 0;
	if (*p == '(') {
		const char *e = strchr(p, ')');
		if (!e || e - p > 40 || memchr(p, '\n', (size_t)(e - p)))
			return 0;
		p = e + 1;
	}
	if (*p == '!')
		p++;
	if (*p != ':' || (p[1] != ' ' && p[1] != '\t'))
		return 0;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	return (size_t)(p - s);
}

int notes_plain_line(fbuf *out, const notes_item *it)
{
	const char *src = it->summary && *it->summary ? it->summary : (it->title ? it->title : "");
	fbuf tmp;
	size_t k, n;
	int error, round;

	if (notes_item_private(it))
		return fbuf_puts(out, neutral_line(it->group));
	while (*src == ' ' || *src == '\t' || *src == '\n')
		src++;
	for (round = 0; round < 3 && (k = prefix_len(src)) > 0 && src[k]; round++)
		src += k;
	fbuf_init(&tmp, LINE_SCRATCH);
	if ((error = untrusted_title(&tmp, src, strlen(src), NOTES_TITLE_MAX)) < 0)
		goto cleanup;
	n = tmp.len;
	while (n > 0 && tmp.ptr[n - 1] == '.' && !(n >= 3 && !strncmp(tmp.ptr + n - 3, "...", 3)))
		n--;
	while (n > 0 && tmp.ptr[n - 1] == ' ')
		n--;
	if (!n) {
		error = fbuf_puts(out, "(untitled)");
		goto cleanup;
	}
	tmp.ptr[n] = '\0';
	if (tmp.ptr[0] >= 'a' && tmp.ptr[0] <= 'z')
		tmp.ptr[0] = (char)(tmp.ptr[0] - 'a' + 'A');
	error = fbuf_put(out, tmp.ptr, n);
cleanup:
	fbuf_release(&tmp);
	return error;
}

/* ---- markdown ---- */

/* A URL fit for a Markdown link: http(s), no blanks, brackets or controls. */
static int url_ok(const char *u)
{
	const unsigned char *p;

	if (!u || (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0))
		return 0;
	for (p = (const unsigned char *)u; *p; p++)
		if (*p <= ' ' || *p == '(' || *p == ')' || *p == '<' || *p == '>' || *p == '[' || *p == ']' ||
		    *p == '|' || *p == '"' || *p == 0x7f)
			return 0;
	return 1;
}

static int md_links(fbuf *out, const notes_item *it)
{
	size_t i;
	int error = 0, first = 1;

	if (notes_item_private(it))
		return 0;
	if ((error = fbuf_puts(out, " (")) < 0)
		return error;
	if (it->is_commit) {
		error = url_ok(it->url) ? fbuf_printf(out, "[%.8s](%s)", it->sha, it->url)
		                        : fbuf_printf(out, "%.8s", it->sha);
		first = 0;
	} else {
		error = url_ok(it->url) ? fbuf_printf(out, "[#%ld](%s)", it->iid, it->url)
		                        : fbuf_printf(out, "#%ld", it->iid);
		first = 0;
	}
	for (i = 0; !error && i < it->nmrs; i++) {
		const notes_link *l = &it->mrs[i];
		error = url_ok(l->url) ? fbuf_printf(out, "%s[!%ld](%s)", first ? "" : ", ", l->iid, l->url)
		                       : fbuf_printf(out, "%s!%ld", first ? "" : ", ", l->iid);
		first = 0;
	}
	return error ? error : fbuf_putc(out, ')');
}

static int md_item(fbuf *out, const notes_item *it)
{
	int error;

	if ((error = fbuf_puts(out, "- ")) < 0 || (error = notes_plain_line(out, it)) < 0 ||
	    (error = md_links(out, it)) < 0)
		return error;
	return fbuf_putc(out, '\n');
}

int notes_render_markdown(fbuf *out, const notes_meta *m, const notes_item *items, size_t n)
{
	size_t i, ncustomer = 0, nsec = 0;
	int g, error = 0;

	for (i = 0; i < n; i++) {
		ncustomer += items[i].customer != 0;
		nsec += items[i].customer && items[i].group == NOTES_SECURITY;
	}
	if ((error = fbuf_printf(out, "## %s (%s)\n", m->version, m->date)) < 0)
		return error;
	if (!ncustomer && (error = fbuf_puts(out, "\nNo customer-facing changes.\n")) < 0)
		return error;
	for (g = 0; g < NOTES_NGROUPS; g++) {
		int any = 0;

		for (i = 0; i < n; i++)
			any |= items[i].customer && items[i].group == (notes_group)g;
		if (!any)
			continue;
		if ((error = fbuf_printf(out, "\n### %s\n\n", notes_group_title((notes_group)g))) < 0)
			return error;
		if (g == NOTES_SECURITY) {
			error = nsec == 1 ? fbuf_puts(out, "- A security issue was fixed. We recommend upgrading.\n")
			                  : fbuf_printf(out,
			                                "- %zu security issues were fixed. We recommend upgrading.\n",
			                                nsec);
			if (error < 0)
				return error;
			continue;
		}
		for (i = 0; i < n; i++)
			if (items[i].customer && items[i].group == (notes_group)g &&
			    (error = md_item(out, &items[i])) < 0)
				return error;
	}
	if (ncustomer < n) {
		if ((error = fbuf_puts(out, "\n### Internal\n\n")) < 0)
			return error;
		for (g = 0; g < NOTES_NGROUPS; g++)
			for (i = 0; i < n; i++)
				if (!items[i].customer && items[i].group == (notes_group)g &&
				    (error = md_item(out, &items[i])) < 0)
					return error;
	}
	return 0;
}

/* ---- chat ---- */

static int chat_escape(fbuf *out, const char *s)
{
	int error = 0;

	for (; *s && !error; s++) {
		if (*s == '&')
			error = fbuf_puts(out, "&amp;");
		else if (*s == '<')
			error = fbuf_puts(out, "&lt;");
		else if (*s == '>')
			error = fbuf_puts(out, "&gt;");
		else
			error = fbuf_putc(out, *s);
	}
	return error;
}

int notes_render_chat(fbuf *out, const notes_meta *m, const notes_item *items, size_t n)
{
	size_t i, nsec = 0, ninternal = 0, shown = 0, rest = 0;
	fbuf line;
	int g, error;

	fbuf_init(&line, LINE_SCRATCH);
	for (i = 0; i < n; i++) {
		nsec += items[i].customer && items[i].group == NOTES_SECURITY;
		ninternal += !items[i].customer;
	}
	error = fbuf_putc(out, '*');
	if (!error && url_ok(m->release_url)) {
		if (!(error = fbuf_printf(out, "<%s|", m->release_url)) && !(error = chat_escape(out, m->project)) &&
		    !(error = fbuf_putc(out, ' ')) && !(error = chat_escape(out, m->version)))
			error = fbuf_putc(out, '>');
	} else if (!error && !(error = chat_escape(out, m->project)) && !(error = fbuf_putc(out, ' '))) {
		error = chat_escape(out, m->version);
	}
	if (!error)
		error = fbuf_puts(out, "* is out.");
	if (!error && nsec)
		error = fbuf_printf(out, "\n\u2022 Security: %zu security issue%s fixed, we recommend upgrading", nsec,
		                    nsec == 1 ? "" : "s");
	for (g = NOTES_FEATURE; !error && g < NOTES_NGROUPS; g++) {
		for (i = 0; !error && i < n; i++) {
			const notes_item *it = &items[i];
			const char *what = group_singular(it->group);

			if (!it->customer || it->group != (notes_group)g)
				continue;
			if (shown >= CHAT_MAX_BULLETS) {
				rest++;
				continue;
			}
			fbuf_reset(&line);
			if ((error = notes_plain_line(&line, it)) < 0)
				break;
			if (!(error = fbuf_printf(out, "\n\u2022 %c%s: ", toupper((unsigned char)what[0]), what + 1)))
				error = chat_escape(out, fbuf_cstr(&line));
			shown++;
		}
	}
	if (!error && rest)
		error = fbuf_printf(out, "\n\u2022 and %zu more (see the release notes)", rest);
	if (!error && ninternal)
		error = fbuf_printf(out, "\n_Plus %zu internal change%s._", ninternal, ninternal == 1 ? "" : "s");
	fbuf_release(&line);
	return error;
}

/* ---- email ---- */

int notes_render_email(fbuf *out, const notes_meta *m, const notes_item *const *mine, size_t n, const char *sign)
{
	size_t i;
	int error;

	error = fbuf_printf(out,
	                    "Hello,\n\nthank you for telling us about %s. It is part of %s %s, released on %s:\n\n",
	                    n == 1 ? "this" : "these", m->project, m->version, m->date);
	for (i = 0; !error && i < n; i++) {
		if (!(error = fbuf_puts(out, "- ")) && !(error = notes_plain_line(out, mine[i])))
			error = fbuf_printf(out, " (%s)\n", group_singular(mine[i]->group));
	}
	if (!error && url_ok(m->release_url))
		error = fbuf_printf(out, "\nThe release notes: %s\n", m->release_url);
	if (!error)
		error = fbuf_printf(out,
		                    "\nThank you,\n%s\n\n-- \nYou receive this one message because you left your "
		                    "email address when you reported this.\n",
		                    sign && *sign ? sign : "The team");
	return error;
}

/* ---- markers ---- */

static int marker_word_ok(const char *s, int allow_colon)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!(isalnum(c) || c == '.' || c == '-' || c == '+' || c == '_' || c == '=' ||
		      (allow_colon && c == ':')))
			return 0;
	}
	return 1;
}

void notes_state_init(notes_state *s)
{
	memset(s, 0, sizeof(*s));
}

void notes_state_release(notes_state *s)
{
	free(s->items);
	notes_state_init(s);
}

int notes_state_add(notes_state *s, const notes_ref *r)
{
	if ((s->nitems & (s->nitems - 1)) == 0) {
		size_t cap = s->nitems ? s->nitems * 2 : 1;
		notes_ref *p = realloc(s->items, cap * sizeof(*p));
		if (!p)
			return oom();
		s->items = p;
	}
	s->items[s->nitems++] = *r;
	return 0;
}

int notes_state_format(fbuf *out, const notes_state *s)
{
	size_t i;
	int error;

	if (!marker_word_ok(s->version, 0) || !marker_word_ok(s->until, 1))
		return ferror_set(FACTORY_EINVALID, "release marker: bad version or cut-off");
	error = fbuf_printf(out, "%sversion=%s until=%s state=%s webhook=%d items=", MARK_V1, s->version, s->until,
	                    s->done ? "done" : "publishing", s->webhook ? 1 : 0);
	if (!error && !s->nitems)
		error = fbuf_putc(out, '-');
	for (i = 0; !error && i < s->nitems; i++) {
		const notes_ref *r = &s->items[i];
		if (r->is_commit)
			error = fbuf_printf(out, "%s@%.40s:%c", i ? "," : "", r->sha, r->customer ? 'c' : 'i');
		else
			error = fbuf_printf(out, "%s#%ld:%c", i ? "," : "", r->iid, r->customer ? 'c' : 'i');
	}
	return error ? error : fbuf_puts(out, " -->");
}

static int is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

static int parse_items(notes_state *s, const char *v, size_t len)
{
	const char *p = v, *end = v + len;
	int error;

	if (len == 1 && *v == '-')
		return 0;
	while (p < end) {
		const char *e = memchr(p, ',', (size_t)(end - p));
		size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
		notes_ref r;

		memset(&r, 0, sizeof(r));
		if (n < 4 || p[n - 2] != ':' || (p[n - 1] != 'c' && p[n - 1] != 'i'))
			return ferror_set(FACTORY_EINVALID, "release marker: bad item '%.*s'", (int)(n > 60 ? 60 : n),
			                  p);
		r.customer = p[n - 1] == 'c';
		if (*p == '#') {
			char *num_end;
			long iid = strtol(p + 1, &num_end, 10);
			if (num_end != p + n - 2 || iid <= 0 || !isdigit((unsigned char)p[1]))
				return ferror_set(FACTORY_EINVALID, "release marker: bad issue item '%.*s'", (int)n, p);
			r.iid = iid;
		} else if (*p == '@' && n == 43 && is_hex(p + 1, 40)) {
			r.is_commit = 1;
			memcpy(r.sha, p + 1, 40);
			r.sha[40] = '\0';
		} else {
			return ferror_set(FACTORY_EINVALID, "release marker: bad item '%.*s'", (int)(n > 60 ? 60 : n),
			                  p);
		}
		if (s->nitems >= STATE_MAX_ITEMS)
			return ferror_set(FACTORY_ETOOBIG, "release marker: more than %d items", STATE_MAX_ITEMS);
		if ((error = notes_state_add(s, &r)) < 0)
			return error;
		p += n + (e ? 1 : 0);
		if (e && p == end)
			return ferror_set(FACTORY_EINVALID, "release marker: item list ends with ','");
	}
	return 0;
}

/* Copy a marker value into a fixed field. */
static int put_word(char *dst, size_t cap, const char *v, size_t n, int allow_colon, const char *what)
{
	if (!n || n >= cap)
		return ferror_set(FACTORY_EINVALID, "release marker: bad %s", what);
	memcpy(dst, v, n);
	dst[n] = '\0';
	if (!marker_word_ok(dst, allow_colon))
		return ferror_set(FACTORY_EINVALID, "release marker: bad %s", what);
	return 0;
}

static int parse_state_line(notes_state *s, const char *line, size_t llen)
{
	const char *p = line + strlen(MARK_V1), *end = line + llen;
	int have_version = 0, have_state = 0, error;

	while (end > p && (end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t'))
		end--;
	if (end - p < 4 || strncmp(end - 4, " -->", 4) != 0)
		return ferror_set(FACTORY_EINVALID, "release marker: not closed with ' -->'");
	end -= 4;
	while (p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p)), *eq;
		size_t n = sp ? (size_t)(sp - p) : (size_t)(end - p);

		eq = memchr(p, '=', n);
		if (!eq)
			return ferror_set(FACTORY_EINVALID, "release marker: '%.*s' is not key=value",
			                  (int)(n > 40 ? 40 : n), p);
		{
			size_t klen = (size_t)(eq - p), vlen = n - klen - 1;
			const char *v = eq + 1;

			if (klen == 7 && !strncmp(p, "version", 7)) {
				if ((error = put_word(s->version, sizeof(s->version), v, vlen, 0, "version")) < 0)
					return error;
				have_version = 1;
			} else if (klen == 5 && !strncmp(p, "until", 5)) {
				if ((error = put_word(s->until, sizeof(s->until), v, vlen, 1, "cut-off")) < 0)
					return error;
			} else if (klen == 5 && !strncmp(p, "state", 5)) {
				if (vlen == 4 && !strncmp(v, "done", 4))
					s->done = 1;
				else if (vlen == 10 && !strncmp(v, "publishing", 10))
					s->done = 0;
				else
					return ferror_set(FACTORY_EINVALID, "release marker: unknown state");
				have_state = 1;
			} else if (klen == 7 && !strncmp(p, "webhook", 7)) {
				if (vlen != 1 || (*v != '0' && *v != '1'))
					return ferror_set(FACTORY_EINVALID, "release marker: bad webhook flag");
				s->webhook = *v == '1';
			} else if (klen == 5 && !strncmp(p, "items", 5)) {
				if ((error = parse_items(s, v, vlen)) < 0)
					return error;
			}
			/* other keys: from a later version of the marker, ignored */
		}
		p += n;
		while (p < end && *p == ' ')
			p++;
	}
	if (!have_version || !have_state)
		return ferror_set(FACTORY_EINVALID, "release marker: no %s", have_version ? "state" : "version");
	return 0;
}

int notes_state_parse(notes_state *out, const char *text)
{
	const char *line = text;
	int error;

	notes_state_init(out);
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);

		if (llen >= strlen(STATE_HEAD) && !strncmp(line, STATE_HEAD, strlen(STATE_HEAD))) {
			if ((error = parse_state_line(out, line, llen)) < 0) {
				notes_state_release(out);
				return error;
			}
			return 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	return ferror_set(FACTORY_ENOTFOUND, "no release marker");
}

int notes_state_put(fbuf *out, const char *text, const notes_state *s)
{
	const char *line = text ? text : "";
	int replaced = 0, error = 0;

	while (*line && !error) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);

		if (!replaced && llen >= strlen(STATE_HEAD) && !strncmp(line, STATE_HEAD, strlen(STATE_HEAD))) {
			error = notes_state_format(out, s);
			replaced = 1;
		} else {
			error = fbuf_put(out, line, llen);
		}
		if (!error && nl)
			error = fbuf_putc(out, '\n');
		line = nl ? nl + 1 : line + llen;
	}
	if (!error && !replaced) {
		if (out->len && out->ptr[out->len - 1] != '\n')
			error = fbuf_putc(out, '\n');
		if (!error && out->len)
			error = fbuf_putc(out, '\n');
		if (!error)
			error = notes_state_format(out, s);
		if (!error)
			error = fbuf_putc(out, '\n');
	}
	return error;
}

int notes_strip_markers(fbuf *out, const char *text)
{
	const char *line = text ? text : "";
	size_t start = out->len;
	int error = 0;

	while (*line && !error) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);

		if (!(llen >= strlen(MARK) && !strncmp(line, MARK, strlen(MARK)))) {
			error = fbuf_put(out, line, llen);
			if (!error)
				error = fbuf_putc(out, '\n');
		}
		line = nl ? nl + 1 : line + llen;
	}
	if (error)
		return error;
	while (out->len > start && (out->ptr[out->len - 1] == '\n' || out->ptr[out->len - 1] == ' '))
		out->len--;
	if (out->ptr)
		out->ptr[out->len] = '\0';
	return out->len > start ? fbuf_putc(out, '\n') : 0;
}

int notes_marker(fbuf *out, const char *what, const char *version, const char *extra)
{
	if (!marker_word_ok(what, 0) || !marker_word_ok(version, 0) || (extra && !marker_word_ok(extra, 0)))
		return ferror_set(FACTORY_EINVALID, "release marker: a part holds a character a marker cannot carry");
	return fbuf_printf(out, "%s%s version=%s%s%s -->", MARK_V1, what, version, extra ? " " : "",
	                   extra ? extra : "");
}

int notes_has_marker(const char *text, const char *what, const char *version, const char *extra)
{
	fbuf want;
	const char *line = text;
	int found = 0;

	if (!text)
		return 0;
	fbuf_init(&want, 1024);
	if (notes_marker(&want, what, version, extra) < 0) {
		fbuf_release(&want);
		return 0;
	}
	while (line && *line && !found) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);

		while (llen > 0 && (line[llen - 1] == '\r' || line[llen - 1] == ' '))
			llen--;
		found = llen == want.len && !memcmp(line, want.ptr, llen);
		line = nl ? nl + 1 : NULL;
	}
	fbuf_release(&want);
	return found;
}

/* ---- reading what GitLab gives ---- */

static const char *const categories[] = {"added",    "fixed",       "changed", "deprecated", "removed",
                                         "security", "performance", "other",   NULL};

static int set_category(char *out, size_t len, const char *v, size_t n)
{
	size_t i;

	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
		n--;
	for (i = 0; categories[i]; i++) {
		if (strlen(categories[i]) == n && !strncasecmp(v, categories[i], n)) {
			snprintf(out, len, "%s", categories[i]);
			return 0;
		}
	}
	return ferror_set(FACTORY_EINVALID, "unknown Changelog category '%.*s'", (int)(n > 40 ? 40 : n), v);
}

int notes_commit_category(char *out, size_t len, const cJSON *commit)
{
	const cJSON *trailers = cJSON_GetObjectItemCaseSensitive(commit, "trailers");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(commit, "message");
	const cJSON *t;
	const char *m, *para, *p;

	cJSON_ArrayForEach(t, trailers)
	{
		if (t->string && !strcasecmp(t->string, "changelog") && cJSON_IsString(t))
			return set_category(out, len, t->valuestring, strlen(t->valuestring));
	}
	if (!cJSON_IsString(msg))
		return ferror_set(FACTORY_ENOTFOUND, "no Changelog trailer");
	m = msg->valuestring;
	/* the last paragraph: after the last blank line that has text after it */
	para = m;
	for (p = m; *p; p++) {
		if (*p == '\n') {
			const char *q = p + 1;
			while (*q == ' ' || *q == '\t' || *q == '\r')
				q++;
			if (*q == '\n') {
				const char *r = q;
				while (*r == '\n' || *r == ' ' || *r == '\t' || *r == '\r')
					r++;
				if (*r)
					para = r;
			}
		}
	}
	if (para == m)
		return ferror_set(FACTORY_ENOTFOUND, "no Changelog trailer");
	for (p = para; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		if (n > 10 && !strncasecmp(p, "changelog:", 10))
			return set_category(out, len, p + 10, n - 10);
		p = nl ? nl + 1 : p + n;
	}
	return ferror_set(FACTORY_ENOTFOUND, "no Changelog trailer");
}

notes_group notes_category_group(const char *category, int *breaking)
{
	if (breaking)
		*breaking = category && !strcmp(category, "removed");
	if (!category)
		return NOTES_OTHER;
	if (!strcmp(category, "added"))
		return NOTES_FEATURE;
	if (!strcmp(category, "fixed"))
		return NOTES_FIX;
	if (!strcmp(category, "security"))
		return NOTES_SECURITY;
	if (!strcmp(category, "performance"))
		return NOTES_PERFORMANCE;
	return NOTES_OTHER;
}

static int word_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static int path_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-' || c == '/';
}

/* Digits of an issue number at p: the value, *n the length; 0 when none. */
static long read_iid(const char *p, size_t *n)
{
	long v = 0;
	size_t i = 0;

	while (i < 10 && isdigit((unsigned char)p[i])) {
		v = v * 10 + (p[i] - '0');
		i++;
	}
	if (!i || i >= 10 || word_char(p[i]))
		return 0;
	*n = i;
	return v;
}

/*
 * One reference at p: "#N", "path#N" or "http(s)://host/path/-/issues/N".
 * Returns the bytes it takes (0: not a reference); *iid is set when it is
 * one of ours, else 0.
 */
static size_t parse_ref(const char *p, const char *project, long *iid)
{
	size_t n = 0, plen = project ? strlen(project) : 0;
	const char *q;

	*iid = 0;
	if (*p == '#') {
		long v = read_iid(p + 1, &n);
		if (!v)
			return 0;
		*iid = v;
		return n + 1;
	}
	if (!strncmp(p, "https://", 8) || !strncmp(p, "http://", 7)) {
		const char *host = p + (p[4] == 's' ? 8 : 7), *slash = host, *iss;
		long v;

		while (*slash && *slash != '/' && *slash != ' ' && *slash != '\n')
			slash++;
		if (*slash != '/')
			return 0;
		iss = strstr(slash, "/-/issues/");
		if (!iss)
			return 0;
		for (q = slash; q < iss; q++)
			if (*q == ' ' || *q == '\n' || *q == '\t')
				return 0;
		v = read_iid(iss + 10, &n);
		if (!v)
			return 0;
		if (plen && (size_t)(iss - slash - 1) == plen && !strncasecmp(slash + 1, project, plen))
			*iid = v;
		return (size_t)(iss + 10 + n - p);
	}
	q = p;
	while (path_char(*q))
		q++;
	if (q == p || *q != '#' || !memchr(p, '/', (size_t)(q - p)))
		return 0;
	{
		long v = read_iid(q + 1, &n);
		if (!v)
			return 0;
		if (plen && (size_t)(q - p) == plen && !strncasecmp(p, project, plen))
			*iid = v;
		return (size_t)(q + 1 + n - p);
	}
}

static void add_ref(long *out, size_t max, size_t *count, long iid)
{
	size_t i;

	if (!iid)
		return;
	for (i = 0; i < *count; i++)
		if (out[i] == iid)
			return;
	if (*count < max)
		out[(*count)++] = iid;
}

/* The length of a closing keyword (with its ':' and blanks after) at p, 0 if none. */
static size_t closing_keyword(const char *p)
{
	static const char *const words[] = {"closes",    "closed",  "closing",    "close",       "fixes",
	                                    "fixed",     "fixing",  "fix",        "resolves",    "resolved",
	                                    "resolving", "resolve", "implements", "implemented", "implementing",
	                                    "implement", NULL};
	size_t i, n;
	const char *q;

	for (i = 0; words[i]; i++) {
		n = strlen(words[i]);
		if (!strncasecmp(p, words[i], n))
			break;
	}
	if (!words[i])
		return 0;
	q = p + n;
	if (*q == ':')
		q++;
	if (*q != ' ' && *q != '\t')
		return 0;
	while (*q == ' ' || *q == '\t')
		q++;
	return (size_t)(q - p);
}

/* After a keyword: "issue(s) " before a reference. */
static size_t issue_word(const char *p)
{
	size_t n = 0;

	if (!strncasecmp(p, "issues ", 7))
		n = 7;
	else if (!strncasecmp(p, "issue ", 6))
		n = 6;
	while (n && p[n] == ' ')
		n++;
	return n;
}

size_t notes_issue_refs(long *out, size_t max, const char *text, const char *project_path, int closing)
{
	const char *p;
	size_t count = 0;

	if (!text)
		return 0;
	for (p = text; *p; p++) {
		long iid;
		size_t k;

		if (p > text && word_char(p[-1]))
			continue;
		if (!closing) {
			if (p > text && (p[-1] == '&' || path_char(p[-1])))
				continue;
			if ((k = parse_ref(p, project_path, &iid)) > 0) {
				add_ref(out, max, &count, iid);
				p += k - 1;
			}
			continue;
		}
		if (!(k = closing_keyword(p)))
			continue;
		p += k;
		for (;;) {
			size_t r;

			p += issue_word(p);
			if (!(r = parse_ref(p, project_path, &iid)))
				break;
			add_ref(out, max, &count, iid);
			p += r;
			/* a separator: blanks, ',' or "and", then another reference */
			{
				const char *s = p;
				while (*s == ' ' || *s == '\t')
					s++;
				if (*s == ',') {
					s++;
					while (*s == ' ' || *s == '\t')
						s++;
				}
				if (!strncasecmp(s, "and ", 4)) {
					s += 4;
					while (*s == ' ' || *s == '\t')
						s++;
				}
				if (s == p) /* nothing between: the list ends */
					break;
				{
					long dummy;
					size_t w = issue_word(s);
					if (!parse_ref(s + w, project_path, &dummy))
						break;
				}
				p = s;
			}
		}
		if (!*p)
			break;
		/* p is past the list; the loop's p++ must not skip a character */
		p--;
	}
	return count;
}

int notes_release_note(fbuf *out, const char *description)
{
	const char *line = description;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t llen = nl ? (size_t)(nl - line) : strlen(line);
		const char *p = line, *end = line + llen;

		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(end - p) > 13 && !strncasecmp(p, "release note:", 13)) {
			p += 13;
			while (p < end && (*p == ' ' || *p == '\t'))
				p++;
			while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
				end--;
			if (end > p)
				return fbuf_put(out, p, (size_t)(end - p));
		}
		line = nl ? nl + 1 : NULL;
	}
	return ferror_set(FACTORY_ENOTFOUND, "no release note line");
}
