/* cilog.c - streaming CI log classifier: clean, scan once, match, pick a region. */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "cilog.h"

#include <ctype.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"

#define MAX_RULES 2000
#define MAX_KEYWORDS_PER_RULE 64
#define MAX_KEYWORD 128
#define MAX_PATTERN 4096
#define REGION_MAX 40
#define CARRY_LINES 48
#define CARRY_BYTES (64 * 1024)
#define STEP_MAX 256
#define FIELD_MAX 512
#define MATCH_LIMIT 100000
#define DEPTH_LIMIT 1000
#define HEAP_LIMIT_KIB 20480
#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)
#define STEP_BONUS 40
#define AFTER_PENALTY 40
#define OK_PENALTY 30
#define NEAR_BONUS 20          /* a region that ends shortly before the failure */
#define NEAR_LINES 40
#define NEAR_MAX_WEIGHT 50     /* only generic hits get it: among sure ones the first wins */
#define RECOVERED_LINES 200
#define RECOVERED_PENALTY 40
#define FALLBACK_WEIGHT 10     /* the lines before the failure, as a candidate */
#define FALLBACK_LINES 30

/* ---- classes ---- */

static const char *const class_names[CILOG_NCLASSES] = {
	"unknown",  "compile_error", "link_error", "lint",        "type_check",     "test_failure", "flaky_test",
	"dependency", "network",     "oom",        "job_timeout", "runner_failure", "ci_config",    "permission",
};

const char *cilog_class_name(cilog_class c)
{
	if ((int)c < 0 || c >= CILOG_NCLASSES)
		return class_names[0];
	return class_names[c];
}

int cilog_class_parse(const char *name)
{
	int i;

	if (!name)
		return -1;
	for (i = 0; i < CILOG_NCLASSES; i++)
		if (!strcmp(name, class_names[i]))
			return i;
	return -1;
}

int cilog_class_transient(cilog_class c)
{
	return c == CILOG_NETWORK || c == CILOG_RUNNER || c == CILOG_FLAKY;
}

/* ---- rules ---- */

enum {
	ROLE_ERROR = 0,
	ROLE_STEP,
	ROLE_STEP_CLASS,
	ROLE_FAILED,
	ROLE_STEP_OK,
	ROLE_SCRIPT_END,
	ROLE_FLAKY,
	ROLE_DETAIL,
	ROLE_IGNORE
};

static const char *const role_names[] = {"error",      "step",  "step_class", "failed", "step_ok",
					 "script_end", "flaky", "detail",     "ignore", NULL};

#define NGROUP 4 /* file, line, test, tool */
#define KW_WORD_START 1 /* '\b' before: the byte before is not a letter, digit or '_' */
#define KW_WORD_END 2   /* '\b' after: the byte after is not one either */
#define GROUP_ALTS 4 /* groups of one name kept (alternatives may repeat a name) */

typedef struct {
	char *name;
	int klass;
	int role;
	int weight;
	int before;
	int after;
	char *tool;
	pcre2_code *re;
	int groups[NGROUP][GROUP_ALTS]; /* group numbers per field, 0 = none */
} crule;

/*
 * The keyword automaton: Aho-Corasick over byte classes (ASCII folded to
 * lower case). States are stored premultiplied by the number of classes, so
 * a step is one load: s = delta[s + cls[byte]]. States that end a keyword
 * are numbered last: s >= first_out means "a keyword ends here".
 */
typedef struct {
	uint8_t cls[256];
	uint32_t ncls;
	uint32_t nstates;
	uint32_t *delta;      /* nstates * ncls, premultiplied targets */
	uint32_t first_out;   /* premultiplied */
	uint32_t *out_start;  /* per output state (index (s - first_out) / ncls), nout + 1 entries */
	uint32_t *out_ids;    /* keyword ids */
	uint32_t start_nl;    /* the state after a '\n' from the root (premultiplied) */
} acm;

struct cilog_rules {
	crule *v;
	size_t n;
	/* keywords: text (lower case, '\n' for a leading '^'), and the rules they trigger */
	char **kw;
	uint8_t *kw_flags;       /* KW_WORD_START, KW_WORD_END */
	uint8_t *kw_len;
	size_t nkw;
	uint32_t *kw_rule_start; /* nkw + 1 */
	uint32_t *kw_rules;
	/* ignore and step_class rules: tried only on lines where an error or a
	 * step rule matched, so they add nothing to the scan */
	uint32_t *ignore;
	size_t nignore;
	uint32_t *sclass;
	size_t nsclass;
	/* rules without keywords, found by one combined pattern */
	uint32_t *nokw;
	size_t nnokw;
	pcre2_code *nokw_re;
	acm ac;
	int jit;
	int max_before;
};

static void acm_release(acm *a)
{
	free(a->delta);
	free(a->out_start);
	free(a->out_ids);
	*a = (acm){0}; /* released twice is harmless (acm_build's failure, then the set's free) */
}

/* Build the automaton over `kw` (nkw keywords). 0 or FACTORY_ENOMEM. */
static int acm_build(acm *a, char *const *kw, size_t nkw)
{
	uint32_t *go = NULL, *fail = NULL, *queue = NULL, *order = NULL, *newid = NULL;
	uint32_t **outs = NULL, *nouts = NULL;
	size_t maxstates = 1, i, j;
	uint32_t ns = 1, qh = 0, qt = 0, c, nout_states = 0, total_out = 0, k;
	int error = -1;

	memset(a, 0, sizeof(*a));
	/* byte classes: 0 for bytes in no keyword, one per distinct (folded) byte */
	a->ncls = 1;
	for (i = 0; i < nkw; i++)
		for (j = 0; kw[i][j]; j++) {
			unsigned char b = (unsigned char)kw[i][j];
			if (!a->cls[b]) {
				a->cls[b] = (uint8_t)a->ncls++;
				if (b >= 'a' && b <= 'z')
					a->cls[b - 'a' + 'A'] = a->cls[b];
			}
			maxstates++;
		}
	if (a->ncls > 255) {
		/* more distinct bytes than a class index holds: never with sane keywords */
		return ferror_set(FACTORY_ECONFIG, "rules: keywords use too many distinct bytes");
	}
	go = malloc(maxstates * a->ncls * sizeof(*go));
	fail = calloc(maxstates, sizeof(*fail));
	queue = malloc(maxstates * sizeof(*queue));
	order = malloc(maxstates * sizeof(*order));
	newid = malloc(maxstates * sizeof(*newid));
	outs = calloc(maxstates, sizeof(*outs));
	nouts = calloc(maxstates, sizeof(*nouts));
	if (!go || !fail || !queue || !order || !newid || !outs || !nouts)
		goto nomem;
	for (i = 0; i < maxstates * a->ncls; i++)
		go[i] = UINT32_MAX;
	/* the trie */
	for (i = 0; i < nkw; i++) {
		uint32_t s = 0;
		uint32_t *grown;
		for (j = 0; kw[i][j]; j++) {
			c = a->cls[(unsigned char)kw[i][j]];
			if (go[s * a->ncls + c] == UINT32_MAX)
				go[s * a->ncls + c] = ns++;
			s = go[s * a->ncls + c];
		}
		grown = realloc(outs[s], (nouts[s] + 1) * sizeof(**outs));
		if (!grown)
			goto nomem;
		outs[s] = grown;
		outs[s][nouts[s]++] = (uint32_t)i;
	}
	/* failure links and the full transition table, breadth first */
	for (c = 0; c < a->ncls; c++) {
		uint32_t t = go[c];
		if (t == UINT32_MAX) {
			go[c] = 0;
		} else {
			fail[t] = 0;
			queue[qt++] = t;
		}
	}
	order[0] = 0;
	k = 1;
	while (qh < qt) {
		uint32_t s = queue[qh++], f;
		order[k++] = s;
		f = fail[s];
		if (nouts[f]) {
			uint32_t *grown = realloc(outs[s], (nouts[s] + nouts[f]) * sizeof(**outs));
			if (!grown)
				goto nomem;
			outs[s] = grown;
			memcpy(outs[s] + nouts[s], outs[f], nouts[f] * sizeof(**outs));
			nouts[s] += nouts[f];
		}
		for (c = 0; c < a->ncls; c++) {
			uint32_t t = go[s * a->ncls + c];
			if (t == UINT32_MAX) {
				go[s * a->ncls + c] = go[f * a->ncls + c];
			} else {
				fail[t] = go[f * a->ncls + c];
				queue[qt++] = t;
			}
		}
	}
	/* renumber: states without output first, then those with */
	k = 0;
	for (i = 0; i < ns; i++)
		if (!nouts[order[i]])
			newid[order[i]] = k++;
	a->first_out = k;
	for (i = 0; i < ns; i++)
		if (nouts[order[i]]) {
			newid[order[i]] = k++;
			nout_states++;
			total_out += nouts[order[i]];
		}
	a->nstates = ns;
	a->delta = malloc((size_t)ns * a->ncls * sizeof(*a->delta));
	a->out_start = malloc((nout_states + 1) * sizeof(*a->out_start));
	a->out_ids = malloc((total_out ? total_out : 1) * sizeof(*a->out_ids));
	if (!a->delta || !a->out_start || !a->out_ids)
		goto nomem;
	for (i = 0; i < ns; i++)
		for (c = 0; c < a->ncls; c++)
			a->delta[(size_t)newid[i] * a->ncls + c] = newid[go[i * a->ncls + c]] * a->ncls;
	k = 0;
	for (i = 0; i < nout_states; i++) {
		/* find the old state whose new id is first_out + i */
		uint32_t want = a->first_out + (uint32_t)i;
		for (j = 0; j < ns; j++)
			if (newid[j] == want)
				break;
		a->out_start[i] = k;
		memcpy(a->out_ids + k, outs[j], nouts[j] * sizeof(*a->out_ids));
		k += nouts[j];
	}
	a->out_start[nout_states] = k;
	a->first_out *= a->ncls;
	a->start_nl = a->delta[a->cls['\n']];
	error = 0;
	goto cleanup;
nomem:
	error = ferror_set(FACTORY_ENOMEM, "out of memory");
	acm_release(a);
cleanup:
	if (outs)
		for (i = 0; i < maxstates; i++)
			free(outs[i]);
	free(outs);
	free(nouts);
	free(go);
	free(fail);
	free(queue);
	free(order);
	free(newid);
	return error;
}

static void crule_release(crule *r)
{
	free(r->name);
	free(r->tool);
	pcre2_code_free(r->re);
}

void cilog_rules_free(cilog_rules *rs)
{
	size_t i;

	if (!rs)
		return;
	for (i = 0; i < rs->n; i++)
		crule_release(&rs->v[i]);
	for (i = 0; i < rs->nkw; i++)
		free(rs->kw[i]);
	free(rs->v);
	free(rs->kw);
	free(rs->kw_flags);
	free(rs->kw_len);
	free(rs->kw_rule_start);
	free(rs->kw_rules);
	free(rs->nokw);
	free(rs->ignore);
	free(rs->sclass);
	pcre2_code_free(rs->nokw_re);
	acm_release(&rs->ac);
	free(rs);
}

size_t cilog_rules_count(const cilog_rules *rs)
{
	return rs ? rs->n : 0;
}

int cilog_rules_jit(const cilog_rules *rs)
{
	return rs ? rs->jit : 0;
}

static int valid_name(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
			return 0;
	return n >= 1 && n <= 64;
}

static int int_field(int *out, const cJSON *item, const char *key, int def, int min, int max, const char *origin,
		     const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);

	if (!v) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < min ||
	    v->valuedouble > max)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s: expected a whole number from %d to %d", origin,
				  name, key, min, max);
	*out = (int)v->valuedouble;
	return 0;
}

/* The groups named file, line, test and tool (a name may be used by several
 * alternatives: PCRE2_DUPNAMES). */
static void find_groups(crule *r)
{
	static const char *const names[NGROUP] = {"file", "line", "test", "tool"};
	uint32_t count = 0, size = 0, i;
	PCRE2_SPTR table = NULL;
	int k, used[NGROUP] = {0};

	memset(r->groups, 0, sizeof(r->groups));
	if (pcre2_pattern_info(r->re, PCRE2_INFO_NAMECOUNT, &count) != 0 || !count ||
	    pcre2_pattern_info(r->re, PCRE2_INFO_NAMEENTRYSIZE, &size) != 0 ||
	    pcre2_pattern_info(r->re, PCRE2_INFO_NAMETABLE, &table) != 0)
		return;
	for (i = 0; i < count; i++) {
		PCRE2_SPTR e = table + (size_t)i * size;
		int num = (e[0] << 8) | e[1];
		for (k = 0; k < NGROUP; k++)
			if (!strcmp((const char *)e + 2, names[k]) && used[k] < GROUP_ALTS)
				r->groups[k][used[k]++] = num;
	}
}

/* Compile one rule object into `r`; keywords are appended to the set. */
static int compile_rule(cilog_rules *rs, crule *r, const cJSON *item, const char *origin)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
	const cJSON *klass = cJSON_GetObjectItemCaseSensitive(item, "class");
	const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(item, "pattern");
	const cJSON *cs = cJSON_GetObjectItemCaseSensitive(item, "case_sensitive");
	const cJSON *tool = cJSON_GetObjectItemCaseSensitive(item, "tool");
	const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
	const cJSON *kws = cJSON_GetObjectItemCaseSensitive(item, "keywords");
	const char *nm;
	uint32_t opts = 0;
	int ec, i, error;
	PCRE2_SIZE eo;

	if (!cJSON_IsObject(item))
		return ferror_set(FACTORY_ECONFIG, "%s: a rule must be a mapping", origin);
	if (!cJSON_IsString(name) || !valid_name(name->valuestring))
		return ferror_set(FACTORY_ECONFIG, "%s: rule name must be 1 to 64 of [A-Za-z0-9_.-]", origin);
	nm = name->valuestring;
	if (!(r->name = strdup(nm)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	r->role = ROLE_ERROR;
	if (role) {
		if (!cJSON_IsString(role))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': role must be a string", origin, nm);
		for (i = 0; role_names[i] && strcmp(role_names[i], role->valuestring) != 0; i++)
			;
		if (!role_names[i])
			return ferror_set(FACTORY_ECONFIG,
					  "%s: rule '%s': role: expected error, step, step_class, failed, flaky or ignore",
					  origin, nm);
		r->role = i;
	}
	r->klass = CILOG_UNKNOWN;
	if (klass) {
		if (!cJSON_IsString(klass) || (r->klass = cilog_class_parse(klass->valuestring)) < 0)
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': class: not a known class", origin, nm);
	} else if (r->role == ROLE_ERROR || r->role == ROLE_STEP_CLASS) {
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': class is required", origin, nm);
	}
	if ((error = int_field(&r->weight, item, "weight", 50, 1, 100, origin, nm)) < 0 ||
	    (error = int_field(&r->before, item, "before", 2, 0, 20, origin, nm)) < 0 ||
	    (error = int_field(&r->after, item, "after", 10, 0, REGION_MAX - 1, origin, nm)) < 0)
		return error;
	if (tool) {
		if (!cJSON_IsString(tool) || !*tool->valuestring || strlen(tool->valuestring) > 64)
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': tool must be a short string", origin, nm);
		if (!(r->tool = strdup(tool->valuestring)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	if (cs && !cJSON_IsBool(cs))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': case_sensitive must be true or false", origin, nm);
	if (!cJSON_IsString(pattern) || !*pattern->valuestring)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': pattern is required (a string)", origin, nm);
	if (strlen(pattern->valuestring) > MAX_PATTERN)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': pattern longer than %d bytes", origin, nm,
				  MAX_PATTERN);
	if (!cJSON_IsTrue(cs))
		opts |= PCRE2_CASELESS;
	r->re = pcre2_compile((PCRE2_SPTR)pattern->valuestring, PCRE2_ZERO_TERMINATED, opts | PCRE2_DUPNAMES, &ec, &eo,
			      NULL);
	if (!r->re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': pattern: %s at offset %zu", origin, nm, (char *)msg,
				  (size_t)eo);
	}
	if (rs->jit && pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE) != 0)
		rs->jit = 0;
	find_groups(r);
	if (kws && !cJSON_IsArray(kws) && !cJSON_IsString(kws))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': keywords must be a list of strings", origin, nm);
	if (cJSON_IsArray(kws) && cJSON_GetArraySize(kws) > MAX_KEYWORDS_PER_RULE)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': at most %d keywords", origin, nm,
				  MAX_KEYWORDS_PER_RULE);
	return 0;
}

/* The keywords of rule `ri` (already validated as a list or a string). */
static int add_keywords(cilog_rules *rs, size_t ri, const cJSON *kws, uint32_t **pairs, size_t *npairs,
			size_t *cap, const char *origin)
{
	const cJSON *k;
	cJSON one;
	size_t count = 0;

	if (!kws)
		return 0;
	if (cJSON_IsString(kws)) {
		one = *kws;
		one.next = one.prev = NULL;
		kws = &one;
	}
	for (k = cJSON_IsArray(kws) ? kws->child : kws; k; k = cJSON_IsArray(kws) ? k->next : NULL) {
		const char *s;
		char buf[MAX_KEYWORD + 2];
		size_t len, i, j;

		if (!cJSON_IsString(k))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': keywords must be strings", origin,
					  rs->v[ri].name);
		uint8_t flags = 0;
		s = k->valuestring;
		j = 0;
		if (*s == '^') {
			buf[j++] = '\n';
			s++;
		} else if (s[0] == '\\' && s[1] == 'b') {
			flags |= KW_WORD_START;
			s += 2;
		}
		len = strlen(s);
		if (len > 2 && s[len - 2] == '\\' && s[len - 1] == 'b') {
			flags |= KW_WORD_END;
			len -= 2;
		}
		if (len < 2 || len > MAX_KEYWORD - 1 || memchr(s, '\n', len) || memchr(s, '\r', len))
			return ferror_set(FACTORY_ECONFIG,
					  "%s: rule '%s': keyword '%.40s': expected 2 to %d bytes on one line", origin,
					  rs->v[ri].name, k->valuestring, MAX_KEYWORD);
		for (i = 0; i < len; i++)
			buf[j++] = (char)tolower((unsigned char)s[i]);
		buf[j] = '\0';
		for (i = 0; i < rs->nkw && (strcmp(rs->kw[i], buf) != 0 || rs->kw_flags[i] != flags); i++)
			;
		if (i == rs->nkw) {
			char **grown = realloc(rs->kw, (rs->nkw + 1) * sizeof(*rs->kw));
			uint8_t *gf, *gl;
			if (grown)
				rs->kw = grown;
			gf = realloc(rs->kw_flags, rs->nkw + 1);
			if (gf)
				rs->kw_flags = gf;
			gl = realloc(rs->kw_len, rs->nkw + 1);
			if (gl)
				rs->kw_len = gl;
			if (!grown || !gf || !gl || !(rs->kw[rs->nkw] = strdup(buf)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			rs->kw_flags[rs->nkw] = flags;
			rs->kw_len[rs->nkw] = (uint8_t)j;
			rs->nkw++;
		}
		if (*npairs + 1 > *cap) {
			size_t ncap = *cap ? *cap * 2 : 256;
			uint32_t *grown = realloc(*pairs, ncap * 2 * sizeof(**pairs));
			if (!grown)
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			*pairs = grown;
			*cap = ncap;
		}
		(*pairs)[*npairs * 2] = (uint32_t)i;
		(*pairs)[*npairs * 2 + 1] = (uint32_t)ri;
		(*npairs)++;
		count++;
	}
	return (int)count;
}

/* The combined pattern of the rules without keywords: one pass finds the
 * lines where any of them may match. */
static int compile_nokw(cilog_rules *rs, const cJSON *const *items)
{
	fbuf b;
	size_t i;
	int ec, error = -1;
	PCRE2_SIZE eo;

	fbuf_init(&b, (size_t)16 << 20);
	for (i = 0; i < rs->nnokw; i++) {
		const cJSON *item = items[rs->nokw[i]];
		const cJSON *cs = cJSON_GetObjectItemCaseSensitive(item, "case_sensitive");
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(item, "pattern");
		if ((error = fbuf_printf(&b, "%s(?%s:%s)", i ? "|" : "", cJSON_IsTrue(cs) ? "-i" : "i",
					 pat->valuestring)) < 0)
			goto cleanup;
	}
	rs->nokw_re = pcre2_compile((PCRE2_SPTR)b.ptr, b.len, PCRE2_MULTILINE | PCRE2_DUPNAMES, &ec, &eo, NULL);
	if (!rs->nokw_re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		error = ferror_set(FACTORY_ECONFIG, "rules without keywords: combined pattern: %s", (char *)msg);
		goto cleanup;
	}
	if (rs->jit && pcre2_jit_compile(rs->nokw_re, PCRE2_JIT_COMPLETE) != 0)
		rs->jit = 0;
	error = 0;
cleanup:
	fbuf_release(&b);
	return error;
}

int cilog_rules_new(cilog_rules **out, const cJSON *extra, int with_defaults, const char *origin)
{
	cilog_rules *rs = NULL;
	cJSON *defaults = NULL;
	const cJSON **items = NULL;
	const char **origins = NULL;
	uint32_t *pairs = NULL;
	size_t npairs = 0, cap = 0, nitems = 0, i, j;
	uint32_t jit_ok = 0;
	const cJSON *it;
	int error = -1;

	*out = NULL;
	if (!origin)
		origin = "rules";
	if (extra && !cJSON_IsArray(extra))
		return ferror_set(FACTORY_ECONFIG, "%s: rules must be a list", origin);
	if (with_defaults &&
	    (error = fconfig_yaml_to_json(&defaults, cilog_default_rules_yaml, strlen(cilog_default_rules_yaml),
					  "built-in CI log rules")) < 0)
		return error;
	nitems = (size_t)(extra ? cJSON_GetArraySize(extra) : 0) + (size_t)(defaults ? cJSON_GetArraySize(defaults) : 0);
	if (nitems > MAX_RULES) {
		error = ferror_set(FACTORY_ECONFIG, "%s: more than %d rules", origin, MAX_RULES);
		goto cleanup;
	}
	rs = calloc(1, sizeof(*rs));
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of cJSON pointers, as meant */
	items = calloc(nitems + 1, sizeof(*items));
	origins = calloc(nitems + 1, sizeof(*origins));
	if (!rs || !items || !origins) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	/* the project's rules first; a default with the same name is dropped */
	nitems = 0;
	cJSON_ArrayForEach(it, extra) {
		items[nitems] = it;
		origins[nitems++] = origin;
	}
	cJSON_ArrayForEach(it, defaults) {
		const cJSON *dn = cJSON_GetObjectItemCaseSensitive(it, "name");
		const cJSON *e;
		int replaced = 0;
		cJSON_ArrayForEach(e, extra) {
			const cJSON *en = cJSON_GetObjectItemCaseSensitive(e, "name");
			if (cJSON_IsString(en) && cJSON_IsString(dn) && !strcmp(en->valuestring, dn->valuestring))
				replaced = 1;
		}
		if (!replaced) {
			items[nitems] = it;
			origins[nitems++] = "built-in CI log rules";
		}
	}
	if (!(rs->v = calloc(nitems ? nitems : 1, sizeof(*rs->v)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	rs->jit = pcre2_config(PCRE2_CONFIG_JIT, &jit_ok) >= 0 && jit_ok;
	rs->ignore = calloc(nitems ? nitems : 1, sizeof(*rs->ignore));
	rs->sclass = calloc(nitems ? nitems : 1, sizeof(*rs->sclass));
	if (!(rs->nokw = calloc(nitems ? nitems : 1, sizeof(*rs->nokw))) || !rs->ignore || !rs->sclass) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < nitems; i++) {
		int nk;
		if ((error = compile_rule(rs, &rs->v[i], items[i], origins[i])) < 0) {
			rs->n = i + 1;
			goto cleanup;
		}
		rs->n = i + 1;
		for (j = 0; j < i; j++)
			if (!strcmp(rs->v[j].name, rs->v[i].name)) {
				error = ferror_set(FACTORY_ECONFIG, "%s: rule '%s': name used twice", origins[i],
						   rs->v[i].name);
				goto cleanup;
			}
		if (rs->v[i].before > rs->max_before)
			rs->max_before = rs->v[i].before;
		if (rs->v[i].role == ROLE_IGNORE || rs->v[i].role == ROLE_STEP_CLASS) {
			if (rs->v[i].role == ROLE_IGNORE)
				rs->ignore[rs->nignore++] = (uint32_t)i;
			else
				rs->sclass[rs->nsclass++] = (uint32_t)i;
			continue;
		}
		nk = add_keywords(rs, i, cJSON_GetObjectItemCaseSensitive(items[i], "keywords"), &pairs, &npairs, &cap,
				  origins[i]);
		if (nk < 0) {
			error = nk;
			goto cleanup;
		}
		if (nk == 0)
			rs->nokw[rs->nnokw++] = (uint32_t)i;
	}
	/* keyword -> rules, grouped by keyword (counting sort) */
	rs->kw_rule_start = calloc(rs->nkw + 1, sizeof(*rs->kw_rule_start));
	rs->kw_rules = malloc((npairs ? npairs : 1) * sizeof(*rs->kw_rules));
	if (!rs->kw_rule_start || !rs->kw_rules) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (i = 0; i < npairs; i++)
		rs->kw_rule_start[pairs[i * 2] + 1]++;
	for (i = 0; i < rs->nkw; i++)
		rs->kw_rule_start[i + 1] += rs->kw_rule_start[i];
	{
		uint32_t *fill = calloc(rs->nkw + 1, sizeof(*fill));
		if (!fill) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		for (i = 0; i < npairs; i++) {
			uint32_t k = pairs[i * 2];
			rs->kw_rules[rs->kw_rule_start[k] + fill[k]++] = pairs[i * 2 + 1];
		}
		free(fill);
	}
	if ((error = acm_build(&rs->ac, rs->kw, rs->nkw)) < 0)
		goto cleanup;
	if (rs->nnokw && (error = compile_nokw(rs, items)) < 0)
		goto cleanup;
	*out = rs;
	rs = NULL;
	error = 0;
cleanup:
	free(pairs);
	free(items);
	free(origins);
	cJSON_Delete(defaults);
	cilog_rules_free(rs);
	return error;
}

int cilog_rules_from_yaml(cilog_rules **out, const char *yaml, size_t len, int with_defaults, const char *origin)
{
	cJSON *doc = NULL;
	int error;

	*out = NULL;
	if ((error = fconfig_yaml_to_json(&doc, yaml, len, origin ? origin : "rules")) < 0)
		return error;
	/* an empty document is no rules */
	if (doc && cJSON_IsNull(doc)) {
		cJSON_Delete(doc);
		doc = NULL;
	}
	error = cilog_rules_new(out, doc, with_defaults, origin);
	cJSON_Delete(doc);
	return error;
}

/* ---- options and results ---- */

void cilog_options_init(cilog_options *o)
{
	o->max_line = 16384;
	o->block_size = (size_t)1 << 20;
	o->max_candidates = 32;
	o->max_region = REGION_MAX;
	o->tail_lines = 40;
	o->max_excerpt_line = 512;
	o->max_excerpt = 8192;
}

void cilog_result_init(cilog_result *r)
{
	memset(r, 0, sizeof(*r));
}

void cilog_result_release(cilog_result *r)
{
	free(r->rule);
	free(r->tool);
	free(r->file);
	free(r->test);
	free(r->excerpt);
	free(r->step);
	free(r->headline);
	cilog_result_init(r);
}

/* ---- the reader ---- */

typedef struct {
	long first, last;      /* raw line numbers */
	long last_hit;         /* line of the latest hit joined */
	int after;             /* lines after last_hit that may join */
	int weight;
	int klass;
	int rule;              /* index of the primary hit's rule */
	long step;             /* step index where the region opened */
	int step_class;        /* the class a step_class rule gave that step, or -1 */
	char *stepcmd;
	char *file, *test, *tool;
	char *headline;        /* the primary hit's line */
	long line;
	fbuf text;             /* the cleaned lines, first..last */
	long last_text;        /* the last line that was not blank */
	size_t text_len;       /* length of text up to last_text */
	int open;
	int ok;                /* its step ended with success (exit 0) */
} region;

struct cilog {
	const cilog_rules *rs;
	cilog_options o;
	/* the raw line being assembled across feeds */
	fbuf pending;
	int pending_cut;
	/* cleaned text: lines [0, nlines), line i at blk[loff[i] .. loff[i+1]-1] then '\n' */
	char *blk;
	size_t blen, bcap;
	size_t *loff;
	size_t nlines, lcap;
	size_t scan_from;      /* lines before it were scanned in an earlier block (the carry) */
	long line0;            /* raw line number of block line 0 */
	/* matching */
	pcre2_match_data *md;     /* with room for every group: to extract */
	pcre2_match_data *probe;  /* one pair: to test (cheaper) */
	pcre2_match_context *mctx;
	pcre2_jit_stack *stack;
	uint64_t *kw_stamp;
	uint64_t *rule_stamp;
	uint32_t *cand;
	/* events of the current block: (line, keyword) */
	uint32_t *ev;
	size_t nev, evcap;
	/* regions */
	region *regions;
	size_t nregions;
	region cur;
	/* steps */
	long step;
	char stepcmd[STEP_MAX];
	long step_line;        /* raw line of the current step's command, 0 if none */
	int step_class;        /* class set by a step_class rule for the current step, or -1 */
	uint32_t *nokw_lines;  /* block lines where a rule without keywords may match */
	size_t nnokw_lines, nokw_cap, nokw_next;
	size_t next_line;      /* the first block line not yet offered to the open region */
	long failed_line;      /* first `failed` line, 0 if none */
	long failed_step;
	region fallback;       /* lines before the first failed line */
	region before_end;     /* lines before the first script_end line */
	/* totals */
	long lines;
	unsigned long long bytes;
	long hits;
	long class_hits[CILOG_NCLASSES];
	int flaky;
	long cut_lines;
	long limit_hits;
	int finished;
	int oom;
};

static void region_release(region *g)
{
	free(g->file);
	free(g->test);
	free(g->tool);
	free(g->stepcmd);
	free(g->headline);
	fbuf_release(&g->text);
	memset(g, 0, sizeof(*g));
}

void cilog_free(cilog *c)
{
	size_t i;

	if (!c)
		return;
	fbuf_release(&c->pending);
	free(c->blk);
	free(c->loff);
	pcre2_match_data_free(c->md);
	pcre2_match_data_free(c->probe);
	pcre2_match_context_free(c->mctx);
	if (c->stack)
		pcre2_jit_stack_free(c->stack);
	free(c->kw_stamp);
	free(c->rule_stamp);
	free(c->cand);
	free(c->ev);
	for (i = 0; i < c->nregions; i++)
		region_release(&c->regions[i]);
	free(c->regions);
	region_release(&c->cur);
	region_release(&c->fallback);
	region_release(&c->before_end);
	free(c->nokw_lines);
	free(c);
}

int cilog_new(cilog **out, const cilog_rules *rs, const cilog_options *o)
{
	cilog *c;
	size_t ovec = 64;

	*out = NULL;
	if (!rs)
		return ferror_set(FACTORY_EINVALID, "cilog: no rules");
	if (!(c = calloc(1, sizeof(*c))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	c->rs = rs;
	if (o)
		c->o = *o;
	else
		cilog_options_init(&c->o);
	if (c->o.max_line < 64)
		c->o.max_line = 64;
	if (c->o.block_size < 4096)
		c->o.block_size = 4096;
	if (c->o.max_region < 1 || c->o.max_region > REGION_MAX)
		c->o.max_region = REGION_MAX;
	if (c->o.max_candidates < 1)
		c->o.max_candidates = 1;
	if (c->o.tail_lines > CARRY_LINES)
		c->o.tail_lines = CARRY_LINES;
	if (c->o.max_excerpt_line < 16)
		c->o.max_excerpt_line = 16;
	if (c->o.max_excerpt < 256)
		c->o.max_excerpt = 256;
	fbuf_init(&c->pending, c->o.max_line * 4 + 64);
	c->bcap = c->o.block_size + c->o.max_line + CARRY_BYTES + 2;
	c->blk = malloc(c->bcap);
	c->lcap = 4096;
	c->loff = malloc((c->lcap + 1) * sizeof(*c->loff));
	c->md = pcre2_match_data_create(ovec, NULL);
	c->probe = pcre2_match_data_create(1, NULL);
	c->mctx = pcre2_match_context_create(NULL);
	c->kw_stamp = calloc(rs->nkw + 1, sizeof(*c->kw_stamp));
	c->rule_stamp = calloc(rs->n + 1, sizeof(*c->rule_stamp));
	c->cand = malloc((rs->n + 1) * sizeof(*c->cand));
	c->regions = calloc(c->o.max_candidates, sizeof(*c->regions));
	if (!c->blk || !c->loff || !c->md || !c->probe || !c->mctx || !c->kw_stamp || !c->rule_stamp || !c->cand ||
	    !c->regions) {
		cilog_free(c);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	pcre2_set_match_limit(c->mctx, MATCH_LIMIT);
	pcre2_set_depth_limit(c->mctx, DEPTH_LIMIT);
	pcre2_set_heap_limit(c->mctx, HEAP_LIMIT_KIB);
	if (rs->jit) {
		if (!(c->stack = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL))) {
			cilog_free(c);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		pcre2_jit_stack_assign(c->mctx, NULL, c->stack);
	}
	c->loff[0] = 0;
	c->line0 = 1;
	c->step_class = -1;
	*out = c;
	return 0;
}

/* Line i of the block: pointer and length (without the '\n'). */
static inline const char *bline(const cilog *c, size_t i, size_t *len)
{
	*len = c->loff[i + 1] - c->loff[i] - 1;
	return c->blk + c->loff[i];
}

static int is_blank(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\f' && s[i] != '\v')
			return 0;
	return 1;
}

/*
 * Clean raw line `s` (n bytes, no '\n') into `dst` (room for `max`):
 * trailing '\r's dropped, escape sequences and section markers removed, and
 * of the '\r'-separated segments the last that holds text kept (what a
 * terminal shows). Returns the cleaned length; *cut is set when the line was
 * longer than `max`.
 */
static size_t clean_line(char *dst, size_t max, const char *s, size_t n, int *cut)
{
	size_t i, o = 0, seg = 0, kept = 0;
	int text = 0;

	while (n && s[n - 1] == '\r')
		n--;
	*cut = 0;
	if (!memchr(s, '\x1b', n) && !memchr(s, '\r', n)) {
		if (n > max) {
			n = max;
			*cut = 1;
		}
		memcpy(dst, s, n);
		return n;
	}
	/* dst holds [0, kept): the last segment with text so far, then [seg, o): the current one */
	for (i = 0; i < n;) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == 0x1b) {
			i++;
			if (i < n && s[i] == '[') {
				for (i++; i < n && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] <= 0x3f; i++)
					;
				if (i < n && (unsigned char)s[i] >= 0x40 && (unsigned char)s[i] <= 0x7e)
					i++;
			} else if (i < n && s[i] == ']') {
				for (i++; i < n && s[i] != '\x07' && !(s[i] == '\x1b' && i + 1 < n && s[i + 1] == '\\');
				     i++)
					;
				if (i < n)
					i += s[i] == '\x07' ? 1 : 2;
			} else {
				for (; i < n && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] <= 0x2f; i++)
					;
				if (i < n)
					i++;
			}
			continue;
		}
		if (ch == '\r') {
			size_t sl = o - seg;
			int marker = (sl >= 14 && !memcmp(dst + seg, "section_start:", 14)) ||
				     (sl >= 12 && !memcmp(dst + seg, "section_end:", 12));
			if (text && !marker) {
				memmove(dst, dst + seg, sl);
				kept = sl;
			}
			o = seg = kept;
			text = 0;
			i++;
			continue;
		}
		if (o < max) {
			dst[o++] = (char)ch;
			if (ch != ' ' && ch != '\t')
				text = 1;
		} else {
			*cut = 1;
		}
		i++;
	}
	if (text && seg) {
		memmove(dst, dst + seg, o - seg);
		return o - seg;
	}
	return text ? o : kept;
}

/* ---- regions ---- */

/* Append block line `i` to region `g` (its text is capped: a full excerpt
 * keeps its line numbers growing, only the text stops). */
static void region_add_line(cilog *c, region *g, size_t i)
{
	size_t len;
	const char *t = bline(c, i, &len);
	long gl = c->line0 + (long)i;

	if (len > c->o.max_excerpt_line)
		len = c->o.max_excerpt_line;
	if (!g->text.max)
		fbuf_init(&g->text, c->o.max_excerpt);
	if (g->text.len + len + 1 <= g->text.max) {
		/* cannot fail with ETOOBIG here; ENOMEM is remembered */
		if (fbuf_put(&g->text, t, len) < 0 || fbuf_putc(&g->text, '\n') < 0)
			c->oom = 1;
	}
	g->last = gl;
	if (!is_blank(t, len)) {
		g->last_text = gl;
		g->text_len = g->text.len;
	}
}

static char *dup_capped(const char *s, size_t n)
{
	char *d;

	if (n > FIELD_MAX)
		n = FIELD_MAX;
	if (!(d = malloc(n + 1)))
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Remove the usual CI build roots from a path, so that it is relative to
 * the project: /builds/<group>/<project>/, /home/travis/build/<o>/<r>/,
 * /home/runner/work/<r>/<r>/, /github/workspace/, ./ */
static void strip_root(char *p)
{
	static const struct {
		const char *prefix;
		int skip; /* path components after the prefix */
	} roots[] = {{"/builds/", 2}, {"/home/travis/build/", 2}, {"/home/runner/work/", 2},
		     {"/github/workspace/", 0}, {"/workspace/", 0}, {"./", 0}, {NULL, 0}};
	size_t i;

	for (i = 0; roots[i].prefix; i++) {
		size_t pl = strlen(roots[i].prefix);
		char *q;
		int k;
		if (strncmp(p, roots[i].prefix, pl) != 0)
			continue;
		q = p + pl;
		for (k = 0; k < roots[i].skip && q; k++) {
			q = strchr(q, '/');
			if (q)
				q++;
		}
		if (q && *q)
			memmove(p, q, strlen(q) + 1);
		return;
	}
}

/* Copy the named groups of the last match into the region's fields (only
 * those still unknown unless `replace`). */
static void take_groups(cilog *c, region *g, const crule *r, const char *line, int replace)
{
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
	uint32_t n = pcre2_get_ovector_count(c->md);
	int k, a;

	for (k = 0; k < NGROUP; k++) {
		int gi = 0;
		const char *v;
		size_t vl;
		char **slot;
		for (a = 0; a < GROUP_ALTS && r->groups[k][a]; a++) {
			int num = r->groups[k][a];
			if ((uint32_t)num < n && ov[2 * num] != PCRE2_UNSET && ov[2 * num + 1] > ov[2 * num]) {
				gi = num;
				break;
			}
		}
		if (!gi)
			continue;
		v = line + ov[2 * gi];
		vl = ov[2 * gi + 1] - ov[2 * gi];
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		if (!vl)
			continue;
		if (k == 1) {
			long num = 0;
			size_t j;
			if (g->line && !replace)
				continue;
			for (j = 0; j < vl && j < 9 && v[j] >= '0' && v[j] <= '9'; j++)
				num = num * 10 + (v[j] - '0');
			if (num > 0)
				g->line = num;
			continue;
		}
		slot = k == 0 ? &g->file : k == 2 ? &g->test : &g->tool;
		/* a test named more fully elsewhere in the region ("tests/a.py::t"
		 * for "t": the longer name ends with the shorter) is the better
		 * name, whichever hit is surer */
		if (*slot && !replace &&
		    !(k == 2 && vl > strlen(*slot) && !memcmp(v + vl - strlen(*slot), *slot, strlen(*slot))))
			continue;
		free(*slot);
		if (!(*slot = dup_capped(v, vl)))
			c->oom = 1;
		else if (k == 0)
			strip_root(*slot);
	}
	if (!g->tool && r->tool && !(g->tool = strdup(r->tool)))
		c->oom = 1;
}

/* Keep the closed region `c->cur`: append it, or replace the weakest kept
 * one (never the first; among equals the oldest), or drop it. */
static void region_close(cilog *c)
{
	region *g = &c->cur;
	size_t i, victim = 0;

	if (!g->open)
		return;
	g->open = 0;
	if (g->last_text >= g->first) {
		g->last = g->last_text;
		if (g->text.len > g->text_len) {
			g->text.len = g->text_len;
			if (g->text.ptr)
				g->text.ptr[g->text.len] = '\0';
		}
	}
	if (c->nregions < c->o.max_candidates) {
		c->regions[c->nregions++] = *g;
		memset(g, 0, sizeof(*g));
		return;
	}
	for (i = 1; i < c->nregions; i++)
		if (!victim || c->regions[i].weight < c->regions[victim].weight)
			victim = i;
	if (victim && g->weight >= c->regions[victim].weight) {
		region_release(&c->regions[victim]);
		c->regions[victim] = *g;
		memset(g, 0, sizeof(*g));
		return;
	}
	region_release(g);
}

/* Whether block line `i` continues the report above it: indented and not
 * blank (a stack frame, a compiler's source line and caret, an assertion's
 * detail), or a frame or marker line at the margin. */
static int continues(const cilog *c, size_t i)
{
	size_t len;
	const char *t = bline(c, i, &len);

	if (!len || is_blank(t, len))
		return 0;
	if (t[0] == ' ' || t[0] == '\t')
		return 1;
	return t[0] == '^' || t[0] == '|' || t[0] == '~' || t[0] == '#' || t[0] == '+' || t[0] == '-' ||
	       t[0] == '>' || (len > 3 && !memcmp(t, "at ", 3)) || (len > 10 && !memcmp(t, "Caused by:", 10));
}

/* Offer block lines [c->next_line, upto) to the open region. */
static void region_extend(cilog *c, size_t upto)
{
	region *g = &c->cur;
	size_t i;

	for (i = c->next_line; i < upto && g->open; i++) {
		long gl = c->line0 + (long)i;
		if (gl > g->last_hit + g->after || gl - g->first + 1 > (long)c->o.max_region) {
			region_close(c);
			break;
		}
		region_add_line(c, g, i);
		if (continues(c, i))
			g->last_hit = gl;
	}
	if (upto > c->next_line)
		c->next_line = upto;
}

/* A hit of rule `ri` on block line `li` (the match data holds its groups). */
static void region_hit(cilog *c, size_t li, int ri)
{
	const crule *r = &c->rs->v[ri];
	region *g = &c->cur;
	long gl = c->line0 + (long)li;
	size_t len, i, from;
	int k;
	const char *t = bline(c, li, &len);

	c->hits++;
	c->class_hits[r->klass]++;
	if (g->open && gl <= g->last_hit + g->after && gl - g->first + 1 <= (long)c->o.max_region) {
		region_add_line(c, g, li);
		g->last_hit = gl;
		g->after = r->after;
		if (r->weight > g->weight) {
			g->weight = r->weight;
			g->klass = r->klass;
			g->rule = ri;
			free(g->headline);
			if (!(g->headline = dup_capped(t, len)))
				c->oom = 1;
			take_groups(c, g, r, t, 1);
		} else {
			take_groups(c, g, r, t, 0);
		}
		return;
	}
	region_close(c);
	memset(g, 0, sizeof(*g));
	g->open = 1;
	g->weight = r->weight;
	g->klass = r->klass;
	g->rule = ri;
	g->step = c->step;
	g->step_class = c->step_class;
	g->after = r->after;
	g->last_hit = gl;
	if (c->stepcmd[0] && !(g->stepcmd = strdup(c->stepcmd)))
		c->oom = 1;
	/* `before` lines that are not blank, not across the step's command */
	for (from = li, k = 0; from > 0 && k < r->before; from--) {
		size_t bl;
		const char *bt = bline(c, from - 1, &bl);
		if (c->step_line && c->line0 + (long)from - 1 < c->step_line)
			break;
		if (li - from >= 2 * (size_t)r->before + 2)
			break;
		if (!is_blank(bt, bl))
			k++;
	}
	g->first = c->line0 + (long)from;
	g->last_text = g->first - 1;
	for (i = from; i <= li; i++)
		region_add_line(c, g, i);
	if (!(g->headline = dup_capped(t, len)))
		c->oom = 1;
	take_groups(c, g, r, t, 1);
}

/* Keep the lines before block line `li` (and it) in `g`: what a person
 * reads first when no rule says more. */
static void snapshot(cilog *c, region *g, size_t li)
{
	size_t from = li >= FALLBACK_LINES ? li - FALLBACK_LINES : 0, i;

	region_release(g);
	g->first = c->line0 + (long)from;
	g->last_text = g->first - 1;
	g->step_class = c->step_class;
	g->step = c->step;
	if (c->stepcmd[0] && !(g->stepcmd = strdup(c->stepcmd)))
		c->oom = 1;
	for (i = from; i <= li; i++)
		region_add_line(c, g, i);
	if (g->last_text >= g->first)
		g->last = g->last_text;
	g->text.len = g->text_len;
	if (g->text.ptr)
		g->text.ptr[g->text.len] = '\0';
}

/* ---- matching ---- */

/* Match rule `r` against a line: 1 or 0 (a limit or an error counts as no
 * match). With `groups`, the match data keeps every group for take_groups. */
static int try_rule(cilog *c, const crule *r, const char *t, size_t len, int groups)
{
	pcre2_match_data *md = groups ? c->md : c->probe;
	int rc;

	if (c->rs->jit)
		rc = pcre2_jit_match(r->re, (PCRE2_SPTR)t, len, 0, 0, md, c->mctx);
	else
		rc = pcre2_match(r->re, (PCRE2_SPTR)t, len, 0, 0, md, c->mctx);
	if (rc >= 0)
		return 1;
	if (rc != PCRE2_ERROR_NOMATCH)
		c->limit_hits++;
	return 0;
}

static void add_candidate(cilog *c, size_t *n, uint32_t ri, uint64_t stamp)
{
	if (c->rule_stamp[ri] == stamp)
		return;
	c->rule_stamp[ri] = stamp;
	c->cand[(*n)++] = ri;
}

/* Line `li` holds keywords `kw` (nkw of them) and/or may match a rule
 * without keywords (`nokw`): try its rules and act on what matched. */
static void handle_line(cilog *c, size_t li, const uint32_t *kw, size_t nkw, int nokw)
{
	const cilog_rules *rs = c->rs;
	uint64_t stamp = (uint64_t)(c->line0 + (long)li);
	size_t n = 0, i, k, len;
	const char *t = bline(c, li, &len);
	int best = -1, detail = -1, step = 0, failed = 0, ok = 0, end = 0, ignore = 0, sclass = -1, sclass_w = 0;

	region_extend(c, li);
	for (i = 0; i < nkw; i++)
		for (k = rs->kw_rule_start[kw[i]]; k < rs->kw_rule_start[kw[i] + 1]; k++)
			add_candidate(c, &n, rs->kw_rules[k], stamp);
	if (nokw)
		for (i = 0; i < rs->nnokw; i++)
			add_candidate(c, &n, rs->nokw[i], stamp);
	/* rule order decides ties: sort the few candidates */
	for (i = 1; i < n; i++) {
		uint32_t v = c->cand[i];
		for (k = i; k > 0 && c->cand[k - 1] > v; k--)
			c->cand[k] = c->cand[k - 1];
		c->cand[k] = v;
	}
	for (i = 0; i < n; i++) {
		const crule *r = &rs->v[c->cand[i]];
		if (r->role == ROLE_ERROR && best >= 0 && rs->v[best].weight >= r->weight)
			continue;
		if (r->role == ROLE_DETAIL && (detail >= 0 || !c->cur.open))
			continue;
		if (!try_rule(c, r, t, len, 0))
			continue;
		switch (r->role) {
		case ROLE_ERROR:
			best = (int)c->cand[i];
			break;
		case ROLE_STEP:
			step = 1;
			break;
		case ROLE_FAILED:
			failed = 1;
			break;
		case ROLE_STEP_OK:
			ok = 1;
			break;
		case ROLE_SCRIPT_END:
			end = 1;
			break;
		case ROLE_FLAKY:
			c->flaky = 1;
			break;
		default:
			detail = (int)c->cand[i];
			break;
		}
	}
	/* the class of a step from its command; whether an error line is one to ignore */
	for (i = 0; step && i < rs->nsclass; i++) {
		const crule *r = &rs->v[rs->sclass[i]];
		if (r->weight > sclass_w && try_rule(c, r, t, len, 0)) {
			sclass = r->klass;
			sclass_w = r->weight;
		}
	}
	/* the runner's line that a step failed is not the failure itself:
	 * generic hits on it are dropped (a sure class, e.g. a timeout, stays) */
	if (failed && best >= 0 && rs->v[best].klass == CILOG_UNKNOWN)
		best = -1;
	for (i = 0; best >= 0 && !ignore && i < rs->nignore; i++)
		ignore = try_rule(c, &rs->v[rs->ignore[i]], t, len, 0);
	if (end && !c->before_end.first && !c->failed_line && li > 0)
		snapshot(c, &c->before_end, li - 1);
	if (step) {
		size_t skip = 0, cl;
		region_close(c);
		c->step++;
		c->step_line = c->line0 + (long)li;
		c->step_class = sclass;
		/* the command: the line without its prompt ("$ ", "+ ", "> ") */
		while (skip < len && (t[skip] == ' ' || t[skip] == '\t'))
			skip++;
		if (skip + 1 < len && (t[skip] == '$' || t[skip] == '+' || t[skip] == '>') && t[skip + 1] == ' ')
			skip += 2;
		cl = len - skip < STEP_MAX - 1 ? len - skip : STEP_MAX - 1;
		memcpy(c->stepcmd, t + skip, cl);
		c->stepcmd[cl] = '\0';
	} else if (sclass >= 0) {
		c->step_class = sclass;
	}
	if (best >= 0 && !ignore) {
		/* the match data belongs to the last rule tried: match the best again for its groups */
		try_rule(c, &rs->v[best], t, len, 1);
		region_hit(c, li, best);
	} else if (c->cur.open) {
		region_extend(c, li + 1);
		/* a detail line inside the region tells where, or which test */
		if (detail >= 0 && c->cur.open && c->cur.last == c->line0 + (long)li) {
			try_rule(c, &rs->v[detail], t, len, 1);
			take_groups(c, &c->cur, &rs->v[detail], t, 0);
			c->cur.last_hit = c->cur.last;
		}
	}
	if (ok) {
		for (i = 0; i < c->nregions; i++)
			if (c->regions[i].step == c->step)
				c->regions[i].ok = 1;
		if (c->cur.step == c->step)
			c->cur.ok = 1;
	}
	if (failed && !c->failed_line) {
		c->failed_line = c->line0 + (long)li;
		c->failed_step = c->step;
		snapshot(c, &c->fallback, li);
		region_close(c);
	}
	if (c->next_line < li + 1)
		c->next_line = li + 1;
}

/* Find the block line holding byte offset `off` (binary search). */
static size_t line_of(const cilog *c, size_t off)
{
	size_t lo = 0, hi = c->nlines;

	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (c->loff[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* The lines of [scan_from, nlines) where a rule without keywords may match. */
static void scan_nokw(cilog *c)
{
	size_t off = c->loff[c->scan_from], end = c->blen;

	c->nnokw_lines = c->nokw_next = 0;
	while (off < end) {
		int rc = c->rs->jit ? pcre2_jit_match(c->rs->nokw_re, (PCRE2_SPTR)c->blk, end, off, 0, c->probe, c->mctx)
				    : pcre2_match(c->rs->nokw_re, (PCRE2_SPTR)c->blk, end, off, 0, c->probe, c->mctx);
		size_t li;
		if (rc < 0) {
			if (rc != PCRE2_ERROR_NOMATCH)
				c->limit_hits++;
			break;
		}
		li = line_of(c, pcre2_get_ovector_pointer(c->probe)[0]);
		if (c->nnokw_lines == c->nokw_cap) {
			size_t ncap = c->nokw_cap ? c->nokw_cap * 2 : 256;
			uint32_t *grown = realloc(c->nokw_lines, ncap * sizeof(*grown));
			if (!grown) {
				c->oom = 1;
				break;
			}
			c->nokw_lines = grown;
			c->nokw_cap = ncap;
		}
		c->nokw_lines[c->nnokw_lines++] = (uint32_t)li;
		off = c->loff[li + 1];
	}
}

/* Lines that only a rule without keywords flags, before block line `upto`. */
static void flush_nokw(cilog *c, size_t upto)
{
	while (c->nokw_next < c->nnokw_lines && c->nokw_lines[c->nokw_next] < upto)
		handle_line(c, c->nokw_lines[c->nokw_next++], NULL, 0, 1);
}

static inline int is_word_byte(unsigned char b)
{
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '_';
}

/* Grow the event list by one (offset of the byte that ended a keyword, and
 * the state reached). */
static int push_event(cilog *c, uint32_t off, uint32_t s)
{
	if (c->nev + 2 > c->evcap) {
		size_t ncap = c->evcap ? c->evcap * 2 : 4096;
		uint32_t *grown = realloc(c->ev, ncap * sizeof(*grown));
		if (!grown) {
			c->oom = 1;
			return -1;
		}
		c->ev = grown;
		c->evcap = ncap;
	}
	c->ev[c->nev++] = off;
	c->ev[c->nev++] = s;
	return 0;
}

/*
 * The automaton over [from, to) of the block, starting at a line start.
 * Two halves are scanned in the same loop (each a chain of dependent
 * loads: interleaved, they overlap); their events are kept in order.
 */
static void run_automaton(cilog *c, size_t from_line)
{
	const acm *a = &c->rs->ac;
	const uint32_t *delta = a->delta;
	const uint8_t *cls = a->cls;
	const uint32_t first_out = a->first_out;
	const unsigned char *base = (const unsigned char *)c->blk;
	size_t mid = from_line + (c->nlines - from_line) / 2;
	const unsigned char *p1 = base + c->loff[from_line], *e1 = base + c->loff[mid];
	const unsigned char *p2 = e1, *e2 = base + c->blen;
	/* both halves start as after a newline */
	// cppcheck-suppress duplicateAssignExpression
	uint32_t s1 = a->start_nl, s2 = a->start_nl;

	c->nev = 0;
	/* second-half events are tagged with the high bit and moved after the
	 * first half's at the end (a block is far below 2 GiB) */
	while (p1 < e1 && p2 < e2) {
		s1 = delta[s1 + cls[*p1]];
		s2 = delta[s2 + cls[*p2]];
		if (s1 >= first_out)
			push_event(c, (uint32_t)(p1 - base), s1);
		if (s2 >= first_out) {
			/* keep second-half events apart: tagged with the high bit */
			push_event(c, (uint32_t)(p2 - base) | 0x80000000u, s2);
		}
		p1++;
		p2++;
	}
	for (; p1 < e1; p1++) {
		s1 = delta[s1 + cls[*p1]];
		if (s1 >= first_out)
			push_event(c, (uint32_t)(p1 - base), s1);
	}
	for (; p2 < e2; p2++) {
		s2 = delta[s2 + cls[*p2]];
		if (s2 >= first_out)
			push_event(c, (uint32_t)(p2 - base) | 0x80000000u, s2);
	}
	/* stable partition: first-half events, then second-half ones (both are
	 * already in order within their half) */
	{
		size_t i, n2 = 0;
		for (i = 0; i < c->nev; i += 2)
			if (c->ev[i] & 0x80000000u)
				n2++;
		if (n2 && n2 * 2 < c->nev) {
			uint32_t *tmp = malloc(n2 * 2 * sizeof(*tmp));
			size_t w = 0, t = 0;
			if (!tmp) {
				c->oom = 1;
				c->nev = 0;
				return;
			}
			for (i = 0; i < c->nev; i += 2) {
				if (c->ev[i] & 0x80000000u) {
					tmp[t++] = c->ev[i] & 0x7fffffffu;
					tmp[t++] = c->ev[i + 1];
				} else {
					c->ev[w++] = c->ev[i];
					c->ev[w++] = c->ev[i + 1];
				}
			}
			memcpy(c->ev + w, tmp, t * sizeof(*tmp));
			free(tmp);
		} else {
			for (i = 0; i < c->nev; i += 2)
				c->ev[i] &= 0x7fffffffu;
		}
	}
}

/* Scan the block's new lines once with the automaton; handle flagged lines. */
static void scan_block(cilog *c)
{
	const cilog_rules *rs = c->rs;
	const acm *a = &rs->ac;
	uint32_t ev[256];
	size_t nev = 0, li = c->scan_from, cur = (size_t)-1, e;

	if (c->scan_from >= c->nlines)
		return;
	if (rs->nokw_re)
		scan_nokw(c);
	c->next_line = c->scan_from;
	if (rs->nkw)
		run_automaton(c, c->scan_from);
	else
		c->nev = 0;
	for (e = 0; e < c->nev; e += 2) {
		size_t off = c->ev[e];
		uint32_t o = (c->ev[e + 1] - a->first_out) / a->ncls, k;
		uint64_t stamp;
		while (c->loff[li + 1] <= off)
			li++;
		if (li != cur) {
			if (cur != (size_t)-1) {
				flush_nokw(c, cur);
				handle_line(c, cur, ev, nev,
					    c->nokw_next < c->nnokw_lines && c->nokw_lines[c->nokw_next] == cur &&
						    ++c->nokw_next);
			}
			cur = li;
			nev = 0;
		}
		stamp = (uint64_t)(c->line0 + (long)li);
		for (k = a->out_start[o]; k < a->out_start[o + 1]; k++) {
			uint32_t id = a->out_ids[k];
			uint8_t fl = rs->kw_flags[id];
			if (c->kw_stamp[id] == stamp || nev >= 256)
				continue;
			if ((fl & KW_WORD_START) && off + 1 > rs->kw_len[id] &&
			    is_word_byte((unsigned char)c->blk[off + 1 - rs->kw_len[id] - 1]))
				continue;
			if ((fl & KW_WORD_END) && off + 1 < c->blen && is_word_byte((unsigned char)c->blk[off + 1]))
				continue;
			c->kw_stamp[id] = stamp;
			ev[nev++] = id;
		}
	}
	if (cur != (size_t)-1) {
		flush_nokw(c, cur);
		handle_line(c, cur, ev, nev,
			    c->nokw_next < c->nnokw_lines && c->nokw_lines[c->nokw_next] == cur && ++c->nokw_next);
	}
	flush_nokw(c, c->nlines);
	region_extend(c, c->nlines);
}

/* Scan the block, then keep its last lines (the context of what comes next
 * and the tail) at the front of the buffer. */
static void process_block(cilog *c)
{
	size_t keep = 0, bytes = 0, first, i, shift;

	scan_block(c);
	c->scan_from = c->nlines;
	while (keep < c->nlines && keep < CARRY_LINES) {
		size_t ll = c->loff[c->nlines - keep] - c->loff[c->nlines - keep - 1];
		if (bytes + ll > CARRY_BYTES)
			break;
		bytes += ll;
		keep++;
	}
	first = c->nlines - keep;
	shift = c->loff[first];
	if (shift) {
		memmove(c->blk, c->blk + shift, c->blen - shift);
		for (i = 0; i <= keep; i++)
			c->loff[i] = c->loff[first + i] - shift;
		c->blen -= shift;
	}
	c->line0 += (long)first;
	c->nlines = keep;
	c->scan_from = keep;
	c->next_line = keep;
}

#define LINES_PER_BLOCK 65536

/* One raw line (no '\n'): clean it into the block. */
static int add_line(cilog *c, const char *raw, size_t n)
{
	int cut;
	size_t len;

	if (c->nlines + 1 >= c->lcap) {
		size_t ncap = c->lcap * 2;
		size_t *grown = realloc(c->loff, (ncap + 1) * sizeof(*grown));
		if (!grown)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		c->loff = grown;
		c->lcap = ncap;
	}
	len = clean_line(c->blk + c->blen, c->o.max_line, raw, n, &cut);
	c->blk[c->blen + len] = '\n';
	c->blen += len + 1;
	c->loff[++c->nlines] = c->blen;
	c->lines++;
	if (cut || c->pending_cut)
		c->cut_lines++;
	if (c->blen >= c->o.block_size || c->nlines >= LINES_PER_BLOCK)
		process_block(c);
	return c->oom ? ferror_set(FACTORY_ENOMEM, "out of memory") : 0;
}

int cilog_feed(cilog *c, const char *data, size_t len)
{
	int error;

	/* c is never NULL: the analyser cannot see that cilog_new's ferror_set() is negative */
	/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
	if (c->finished)
		return ferror_set(FACTORY_EINVALID, "cilog: fed after finish");
	c->bytes += len;
	while (len) {
		const char *nl = memchr(data, '\n', len);
		size_t seg = nl ? (size_t)(nl - data) : len;
		if (!nl || c->pending.len || c->pending_cut) {
			size_t room = c->pending.max - c->pending.len;
			size_t take = seg < room ? seg : room;
			if (take && (error = fbuf_put(&c->pending, data, take)) < 0)
				return error;
			if (take < seg)
				c->pending_cut = 1;
			if (!nl)
				return 0;
			error = add_line(c, c->pending.ptr ? c->pending.ptr : "", c->pending.len);
			fbuf_reset(&c->pending);
			c->pending_cut = 0;
		} else {
			error = add_line(c, data, seg);
		}
		if (error < 0)
			return error;
		data += seg + 1;
		len -= seg + 1;
	}
	return 0;
}

int cilog_sink(void *ctx, const char *data, size_t len)
{
	return cilog_feed((cilog *)ctx, data, len) < 0;
}

/* Append `s` to `out` as valid UTF-8 without control characters other than
 * '\t' and '\n' (bad bytes become U+FFFD). */
static char *utf8_clean(const char *s, size_t n)
{
	fbuf b;
	size_t i = 0;

	fbuf_init(&b, n * 3 + 16);
	if (fbuf_put(&b, "", 0) < 0)
		return NULL;
	while (i < n) {
		unsigned char ch = (unsigned char)s[i];
		size_t need = 0, k;
		uint32_t cp;
		if (ch < 0x80) {
			if ((ch >= 0x20 && ch != 0x7f) || ch == '\t' || ch == '\n')
				fbuf_putc(&b, (char)ch);
			i++;
			continue;
		}
		if (ch >= 0xc2 && ch <= 0xdf)
			need = 1, cp = ch & 0x1f;
		else if (ch >= 0xe0 && ch <= 0xef)
			need = 2, cp = ch & 0x0f;
		else if (ch >= 0xf0 && ch <= 0xf4)
			need = 3, cp = ch & 0x07;
		else
			cp = 0;
		for (k = 1; need && k <= need; k++) {
			if (i + k >= n || ((unsigned char)s[i + k] & 0xc0) != 0x80)
				break;
			cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3f);
		}
		if (need && k > need && !(need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) &&
		    !(need == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
			fbuf_put(&b, s + i, need + 1);
			i += need + 1;
		} else {
			fbuf_puts(&b, "\xef\xbf\xbd");
			i++;
		}
	}
	return fbuf_detach(&b);
}

static int set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = NULL;
	if (src && !(*dst = utf8_clean(src, strlen(src))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

/* The first word of a command, without its directory ("./gradlew x" -> "gradlew"). */
static int tool_of_command(char **out, const char *cmd)
{
	const char *e, *slash;
	char word[65];
	size_t n;

	while (*cmd == ' ')
		cmd++;
	/* skip leading VAR=value assignments */
	for (;;) {
		e = cmd + strcspn(cmd, " ");
		if (!memchr(cmd, '=', (size_t)(e - cmd)) || !*e)
			break;
		cmd = e + 1;
		while (*cmd == ' ')
			cmd++;
	}
	e = cmd + strcspn(cmd, " ;&|()");
	for (slash = e; slash > cmd && slash[-1] != '/'; slash--)
		;
	n = (size_t)(e - slash);
	if (!n)
		return 0;
	if (n > 64)
		n = 64;
	memcpy(word, slash, n);
	word[n] = '\0';
	return set_str(out, word);
}

/* Score of candidate `g` (see cilog.h): its weight, the step bonus, the
 * bonus for ending shortly before the failure, the penalties. */
static long score_of(const cilog *c, const region *g, long target_step, long anchor)
{
	/* after the first failed line come after_failure steps and clean-up:
	 * a region there is not the cause (the runner's own lines about the
	 * job, between the script's end and that line, still count) */
	int pre = !c->failed_line || g->first <= c->failed_line;
	long score = g->weight;

	if (pre && g->step == target_step && !g->ok)
		score += STEP_BONUS;
	if (anchor && g->first <= anchor && anchor - g->last <= NEAR_LINES && g->weight < NEAR_MAX_WEIGHT)
		score += NEAR_BONUS;
	if (!pre)
		score -= AFTER_PENALTY;
	if (g->ok)
		score -= OK_PENALTY;
	/* a network, runner, permission, dependency or configuration error (a
	 * missing command) ends a job at once when it is fatal: one followed by
	 * much more work was survived */
	if (anchor && g->first <= anchor && anchor - g->last > RECOVERED_LINES &&
	    (g->klass == CILOG_NETWORK || g->klass == CILOG_RUNNER || g->klass == CILOG_PERMISSION ||
	     g->klass == CILOG_DEPENDENCY || g->klass == CILOG_CONFIG))
		score -= RECOVERED_PENALTY;
	return score;
}

int cilog_finish(cilog_result *out, cilog *c)
{
	const region *best = NULL, *fb = NULL;
	region tail;
	long target_step = -1, best_score = 0, anchor = 0;
	size_t i;
	int error = -1;

	memset(&tail, 0, sizeof(tail));
	cilog_result_release(out);
	if (c->finished)
		return ferror_set(FACTORY_EINVALID, "cilog: finished twice");
	c->finished = 1;
	if (c->pending.len || c->pending_cut) {
		if ((error = add_line(c, c->pending.ptr ? c->pending.ptr : "", c->pending.len)) < 0)
			return error;
		fbuf_reset(&c->pending);
	}
	scan_block(c);
	c->scan_from = c->nlines;
	region_close(c);
	if (c->oom)
		return ferror_set(FACTORY_ENOMEM, "out of memory");

	/* the lines before the failure: before the script ended when that came
	 * first (GitLab's after_script and uploads follow it), else before the
	 * first failed line */
	if (c->failed_line) {
		fb = c->before_end.first && c->before_end.last < c->failed_line ? &c->before_end : &c->fallback;
		anchor = fb->last + 1;
		c->fallback.weight = FALLBACK_WEIGHT;
		c->before_end.weight = FALLBACK_WEIGHT;
	}
	for (i = 0; i < c->nregions; i++) {
		const region *g = &c->regions[i];
		if ((!c->failed_line || g->first <= c->failed_line) && !g->ok && g->step > target_step)
			target_step = g->step;
	}
	if (fb && fb->step > target_step)
		target_step = fb->step;
	for (i = 0; i < c->nregions; i++) {
		const region *g = &c->regions[i];
		long score = score_of(c, g, target_step, anchor);
		if (!best || score > best_score || (score == best_score && g->first < best->first)) {
			best = g;
			best_score = score;
		}
	}
	if (fb && (!best || score_of(c, fb, target_step, anchor) > best_score))
		best = fb;
	if (!best && c->nlines) {
		/* no rule and no failed line: the last lines that are not blank */
		size_t last = c->nlines, from;
		while (last > 0) {
			size_t len;
			const char *t = bline(c, last - 1, &len);
			if (!is_blank(t, len))
				break;
			last--;
		}
		if (!last)
			last = c->nlines;
		from = last > c->o.tail_lines ? last - c->o.tail_lines : 0;
		tail.first = c->line0 + (long)from;
		tail.last_text = tail.first - 1;
		tail.step_class = c->step_class;
		tail.step = c->step;
		for (i = from; i < last; i++)
			region_add_line(c, &tail, i);
		if (c->stepcmd[0] && !(tail.stepcmd = strdup(c->stepcmd)))
			goto nomem;
		best = &tail;
	}
	out->lines = c->lines;
	out->bytes = c->bytes;
	out->hits = c->hits;
	memcpy(out->class_hits, c->class_hits, sizeof(out->class_hits));
	out->flaky_evidence = c->flaky;
	out->cut_lines = c->cut_lines;
	out->limit_hits = c->limit_hits;
	if (best) {
		int rule = best == fb || best == &tail ? -1 : best->rule;
		out->klass = rule >= 0 ? (cilog_class)best->klass : CILOG_UNKNOWN;
		if (out->klass == CILOG_UNKNOWN && best->step_class > 0)
			out->klass = (cilog_class)best->step_class;
		if (out->klass == CILOG_TEST && c->flaky)
			out->klass = CILOG_FLAKY;
		out->first_line = best->first;
		out->last_line = best->last >= best->first ? best->last : best->first;
		out->line = best->line;
		if ((error = set_str(&out->rule, rule >= 0 ? c->rs->v[rule].name : NULL)) < 0 ||
		    (error = set_str(&out->file, best->file)) < 0 || (error = set_str(&out->test, best->test)) < 0 ||
		    (error = set_str(&out->tool, best->tool)) < 0 || (error = set_str(&out->step, best->stepcmd)) < 0)
			goto cleanup;
		if (!(out->excerpt = utf8_clean(best->text.ptr ? best->text.ptr : "", best->text.len)))
			goto nomem;
		if (best->headline) {
			if ((error = set_str(&out->headline, best->headline)) < 0)
				goto cleanup;
		} else {
			/* no rule: the last line of the region that is not blank */
			const char *e = out->excerpt + strlen(out->excerpt), *b;
			while (e > out->excerpt && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
				e--;
			for (b = e; b > out->excerpt && b[-1] != '\n'; b--)
				;
			if (!(out->headline = strndup(b, (size_t)(e - b))))
				goto nomem;
		}
	} else if (!(out->excerpt = strdup(""))) {
		goto nomem;
	}
	if (!out->tool && out->step && (error = tool_of_command(&out->tool, out->step)) < 0)
		goto cleanup;
	error = 0;
	goto cleanup;
nomem:
	error = ferror_set(FACTORY_ENOMEM, "out of memory");
cleanup:
	region_release(&tail);
	if (error < 0)
		cilog_result_release(out);
	return error;
}

int cilog_classify(cilog_result *out, const cilog_rules *rs, const char *data, size_t len)
{
	cilog *c = NULL;
	int error;

	if ((error = cilog_new(&c, rs, NULL)) < 0)
		return error;
	if ((error = cilog_feed(c, data, len)) == 0)
		error = cilog_finish(out, c);
	cilog_free(c);
	return error;
}

static int add_str_or_null(cJSON *o, const char *key, const char *v)
{
	return v ? cJSON_AddStringToObject(o, key, v) != NULL : cJSON_AddNullToObject(o, key) != NULL;
}

int cilog_result_json(cJSON **out, const cilog_result *r)
{
	cJSON *o = cJSON_CreateObject(), *loc = NULL, *lines = NULL;

	*out = NULL;
	if (!o || !cJSON_AddStringToObject(o, "class", cilog_class_name(r->klass)) ||
	    !add_str_or_null(o, "rule", r->rule) || !add_str_or_null(o, "tool", r->tool))
		goto nomem;
	if (!(loc = cJSON_AddObjectToObject(o, "location")) || !add_str_or_null(loc, "file", r->file))
		goto nomem;
	if (!(r->line ? cJSON_AddNumberToObject(loc, "line", (double)r->line) : cJSON_AddNullToObject(loc, "line")))
		goto nomem;
	if (!add_str_or_null(o, "test", r->test))
		goto nomem;
	if (!(lines = cJSON_AddArrayToObject(o, "error_lines")))
		goto nomem;
	if (r->first_line) {
		cJSON *a = cJSON_CreateNumber((double)r->first_line), *b = cJSON_CreateNumber((double)r->last_line);
		if (!a || !b) {
			cJSON_Delete(a);
			cJSON_Delete(b);
			goto nomem;
		}
		cJSON_AddItemToArray(lines, a);
		cJSON_AddItemToArray(lines, b);
	}
	if (!add_str_or_null(o, "excerpt", r->excerpt ? r->excerpt : "") || !add_str_or_null(o, "step", r->step) ||
	    !cJSON_AddNumberToObject(o, "lines", (double)r->lines) ||
	    !cJSON_AddNumberToObject(o, "bytes", (double)r->bytes))
		goto nomem;
	*out = o;
	return 0;
nomem:
	cJSON_Delete(o);
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}
