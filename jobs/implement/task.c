/*
 * task.c - what the agent is told about an issue: its title, labels and
 * description, the people's comments, the issues it links or names, what
 * earlier attempts found, and the repository's own guidance files (README,
 * CONTRIBUTING, AGENTS.md and the like). All of it is data, not orders: the
 * agent frames the whole task as quoted data after its system prompt
 * (agent.h), and nothing in it can reach a secret or a push.
 *
 * Caps: description 64 KiB, each comment 8 KiB and 64 KiB in all, 5 linked
 * issues of 4 KiB each, each guidance file 32 KiB and 96 KiB in all. Only
 * regular files directly in the work tree are read as guidance (no
 * symlinks, which could lead out of the repository).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "implement.h"
#include "log.h"

#define DESC_MAX ((size_t)64 << 10)
#define COMMENT_MAX ((size_t)8 << 10)
#define COMMENTS_MAX ((size_t)64 << 10)
#define LINKED_MAX 5
#define LINKED_DESC_MAX ((size_t)4 << 10)
#define GUIDE_MAX ((size_t)32 << 10)
#define GUIDES_MAX ((size_t)96 << 10)

static const char *const guidance_files[] = {
        "AGENTS.md",
        "CLAUDE.md",
        ".github/copilot-instructions.md",
        "CONTRIBUTING.md",
        "CONTRIBUTING",
        "CONTRIBUTING.rst",
        "docs/CONTRIBUTING.md",
        ".gitlab/CONTRIBUTING.md",
        "CONVENTIONS.md",
        "HACKING.md",
        "DEVELOPMENT.md",
        "README.md",
        "README",
        "README.rst",
        "README.txt",
        NULL,
};

void impl_branch_name(char *out, size_t len, long iid, const char *title)
{
	char slug[48];
	size_t n = 0;
	const char *p;
	int dash = 0;

	for (p = title ? title : ""; *p && n < 40; p++) {
		unsigned char c = (unsigned char)*p;
		if (isascii(c) && isalnum(c)) {
			if (dash && n)
				slug[n++] = '-';
			dash = 0;
			if (n < 40)
				slug[n++] = (char)tolower(c);
		} else {
			dash = 1;
		}
	}
	while (n && slug[n - 1] == '-')
		n--;
	slug[n] = '\0';
	snprintf(out, len, "factory/%ld-%s", iid, n ? slug : "issue");
}

const char *impl_changelog(impl_run *r, const cJSON *issue)
{
	static const struct {
		const char *label, *key, *value;
	} table[] = {
	        {"type::bug", "bug", "fixed"},
	        {"type::feature", "feature", "added"},
	        {"type::security", "security", "security"},
	        {"type::chore", "chore", "other"},
	        {"type::feedback", "feedback", "changed"},
	        {"type::support", "support", "other"},
	};
	static const char *const allowed[] = {"added",    "fixed",       "changed", "deprecated", "removed",
	                                      "security", "performance", "other",   NULL};
	const char *v = NULL;
	char key[64];
	size_t i, k;

	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (!impl_has_label(issue, table[i].label))
			continue;
		snprintf(key, sizeof(key), "implement.changelog.%s", table[i].key);
		v = fconfig_get_str(r->job->cfg, key, table[i].value);
		for (k = 0; allowed[k]; k++)
			if (!strcmp(v, allowed[k]))
				return v;
		log_warn(
		        "bad setting %s=%s: expected added, fixed, changed, deprecated, removed, security, performance "
		        "or other; using %s",
		        key, v, table[i].value);
		return table[i].value;
	}
	return "changed";
}

static int add_labels(fbuf *out, const cJSON *issue)
{
	const cJSON *l;
	int n = 0, error = 0;

	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels"))
	{
		const char *name = cJSON_IsString(l) ? l->valuestring : impl_str(l, "name");
		if (!name || !strncmp(name, "workflow::", 10))
			continue;
		if ((error = fbuf_puts(out, n++ ? ", " : "Labels: ")) < 0 || (error = impl_clean(out, name, 256)) < 0)
			return error;
	}
	return n ? fbuf_putc(out, '\n') : 0;
}

static int add_comments(fbuf *out, impl_run *r, const cJSON *notes)
{
	const cJSON *n;
	size_t start = out->len;
	int count = 0, error = 0;

	cJSON_ArrayForEach(n, notes)
	{
		const cJSON *author = cJSON_GetObjectItemCaseSensitive(n, "author");
		const char *body = impl_str(n, "body"), *who = impl_str(author, "username"),
		           *when = impl_str(n, "created_at");
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "system")) || !body || !*body)
			continue;
		if (impl_num(author, "id") == r->me)
			continue; /* the Factory's own notes: their findings come as earlier attempts */
		if (out->len - start > COMMENTS_MAX) {
			error = fbuf_puts(out, "\n[more comments left out]\n");
			break;
		}
		if (!count++ && (error = fbuf_puts(out, "\n## Comments, oldest first\n")) < 0)
			break;
		if ((error = fbuf_puts(out, "\n### ")) < 0 ||
		    (error = impl_clean(out, who ? who : "someone", 128)) < 0 ||
		    (error = fbuf_printf(out, " (%s)\n", when ? when : "")) < 0 ||
		    (error = impl_clean(out, body, COMMENT_MAX)) < 0 || (error = fbuf_putc(out, '\n')) < 0)
			break;
	}
	return error;
}

/* Issue numbers named as "#N" in `text` (not "a#1", not "#12a"), up to `max`. */
static size_t references(long *iids, size_t max, const char *text, long self)
{
	const char *p;
	size_t n = 0, i;

	for (p = text ? text : ""; (p = strchr(p, '#')) && n < max; p++) {
		char *end;
		long v;
		int dup = 0;
		if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '&'))
			continue;
		if (!isdigit((unsigned char)p[1]))
			continue;
		errno = 0;
		v = strtol(p + 1, &end, 10);
		if (errno || v <= 0 || v == self || isalnum((unsigned char)*end) || end - p > 10)
			continue;
		for (i = 0; i < n; i++)
			dup |= iids[i] == v;
		if (!dup)
			iids[n++] = v;
	}
	return n;
}

static int add_one_linked(fbuf *out, const cJSON *li, int *count)
{
	const char *title = impl_str(li, "title"), *state = impl_str(li, "state"), *desc = impl_str(li, "description");
	int error;

	if (!(*count)++ && (error = fbuf_puts(out, "\n## Linked and referenced issues\n")) < 0)
		return error;
	if ((error = fbuf_printf(out, "\n### #%ld ", impl_num(li, "iid"))) < 0 ||
	    (error = impl_clean(out, title ? title : "", 512)) < 0 ||
	    (error = fbuf_printf(out, " (%s)\n", state ? state : "?")) < 0)
		return error;
	if (desc && *desc &&
	    ((error = impl_clean(out, desc, LINKED_DESC_MAX)) < 0 || (error = fbuf_putc(out, '\n')) < 0))
		return error;
	return 0;
}

static int add_linked(fbuf *out, impl_run *r, const cJSON *issue)
{
	cJSON *links = NULL;
	long iid = impl_num(issue, "iid"), refs[LINKED_MAX], seen[2 * LINKED_MAX];
	size_t nseen = 0, nrefs, i, k;
	const cJSON *li;
	char path[128];
	int count = 0, error;

	/* Issue links (GitLab's "related", "blocks"...). A server without them answers 404. */
	snprintf(path, sizeof(path), "projects/:id/issues/%ld/links", iid);
	error = gitlab_list_all(&links, r->gl, path, NULL, LINKED_MAX);
	if (error == FACTORY_ENOTFOUND) {
		log_debug("issue links are not available here: %s", ferror_last());
		error = 0;
	}
	if (error < 0)
		return error;
	cJSON_ArrayForEach(li, links)
	{
		if (count >= LINKED_MAX)
			break;
		seen[nseen++] = impl_num(li, "iid");
		if ((error = add_one_linked(out, li, &count)) < 0)
			goto cleanup;
	}
	/* Issues the description names as #N. */
	nrefs = references(refs, LINKED_MAX, impl_str(issue, "description"), iid);
	for (i = 0; i < nrefs && count < LINKED_MAX; i++) {
		cJSON *other = NULL;
		int dup = 0;
		for (k = 0; k < nseen; k++)
			dup |= seen[k] == refs[i];
		if (dup)
			continue;
		error = gitlab_issue_get(&other, r->gl, refs[i]);
		if (error == FACTORY_ENOTFOUND || error == FACTORY_EAUTH)
			continue; /* not an issue here, or not ours to read */
		if (error == 0 && other)
			error = add_one_linked(out, other, &count);
		cJSON_Delete(other);
		if (error < 0)
			goto cleanup;
	}
	error = 0;
cleanup:
	cJSON_Delete(links);
	return error;
}

/* One guidance file: a regular file (no symlink) under the root, capped. */
static int add_guide(fbuf *out, const char *root, const char *name, size_t *total)
{
	char path[4096], *buf = NULL;
	struct stat st;
	ssize_t n;
	size_t want;
	int fd = -1, error = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, name) >= sizeof(path))
		return 0;
	if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || !st.st_size || *total >= GUIDES_MAX)
		return 0;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return 0;
	want = GUIDE_MAX;
	if (want > GUIDES_MAX - *total)
		want = GUIDES_MAX - *total;
	if (!(buf = malloc(want + 1))) {
		close(fd);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	n = read(fd, buf, want);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		*total += (size_t)n;
		if ((error = fbuf_printf(out, "\n### %s\n", name)) == 0)
			error = impl_clean(out, buf, want);
		if (!error && (size_t)st.st_size > (size_t)n)
			error = fbuf_printf(out, "\n[%s cut at %zd of %lld bytes]\n", name, n, (long long)st.st_size);
		if (!error)
			error = fbuf_putc(out, '\n');
	}
	free(buf);
	return error;
}

int impl_build_task(fbuf *out, impl_run *r, const cJSON *issue, const cJSON *notes, const claim_history *h,
                    const char *root)
{
	const char *title = impl_str(issue, "title"), *desc = impl_str(issue, "description");
	const char *web = impl_str(issue, "web_url");
	size_t total = 0, i, mark;
	int error;

	if ((error = fbuf_printf(out, "# Issue #%ld in %s: ", impl_num(issue, "iid"), r->project_path)) < 0 ||
	    (error = impl_clean(out, title ? title : "(no title)", 1024)) < 0 || (error = fbuf_putc(out, '\n')) < 0 ||
	    (error = add_labels(out, issue)) < 0 || (web && (error = fbuf_printf(out, "Link: %s\n", web)) < 0) ||
	    (error = fbuf_puts(out, "\n## Description\n")) < 0 ||
	    (error = impl_clean(out, desc && *desc ? desc : "(no description)", DESC_MAX)) < 0 ||
	    (error = fbuf_putc(out, '\n')) < 0)
		return error;
	if ((error = add_comments(out, r, notes)) < 0 || (error = add_linked(out, r, issue)) < 0)
		return error;
	if (claim_attempts_made(h) > 0) {
		if ((error = fbuf_puts(out, "\n## What earlier attempts by the Factory found\n")) < 0 ||
		    (error = claim_retry_context(out, h)) < 0 ||
		    (error = fbuf_puts(out, "Take this into account: avoid what stopped them.\n")) < 0)
			return error;
	}
	mark = out->len;
	if ((error = fbuf_puts(out, "\n## The repository's own guidance\n")) < 0)
		return error;
	for (i = 0; guidance_files[i]; i++)
		if ((error = add_guide(out, root, guidance_files[i], &total)) < 0)
			return error;
	if (!total && out->ptr) {
		out->len = mark; /* no guidance files: no heading */
		out->ptr[mark] = '\0';
	}
	return 0;
}
