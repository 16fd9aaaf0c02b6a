/* rules.c - pcre2 rule sets loaded from data, matched with hard limits. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "rules.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAX_FIELDS 16
#define MAX_PATTERNS 64
#define NAME_MAX_LEN 64
#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (1024 * 1024)

typedef struct {
	const char *name;        /* borrowed from the set's copy of the spec */
	const cJSON *data;       /* the rule's object in that copy */
	pcre2_code **pats;
	size_t npats;
	pcre2_code **unless;
	size_t nunless;
	unsigned char order[MAX_FIELDS]; /* set field indexes, in the rule's order */
	size_t norder;
} rule;

struct rules {
	rule *v;
	size_t n;
	cJSON *spec;
	char *fields[MAX_FIELDS];
	size_t nfields;
	rules_limits lim;
	int jit;
};

void rules_limits_init(rules_limits *l)
{
	l->match_limit = 100000;
	l->depth_limit = 1000;
	l->heap_limit_kib = 20480;
	l->max_subject = 65536;
	l->max_rules = 1000;
	l->max_pattern = 4096;
	l->jit = 1;
}

/* Read one whole number in [min, max] from obj[key] into *out when present. */
static int limit_num(double *out, int *present, const cJSON *obj, const char *key, double min, double max,
		     const char *origin)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	*present = 0;
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long long)v->valuedouble || v->valuedouble < min ||
	    v->valuedouble > max)
		return ferror_set(FACTORY_ECONFIG, "%s: limits.%s: expected a whole number from %.0f to %.0f", origin,
				  key, min, max);
	*out = v->valuedouble;
	*present = 1;
	return 0;
}

int rules_limits_from_json(rules_limits *l, const cJSON *obj, const char *origin)
{
	static const char *const known[] = {"match_limit", "depth_limit", "heap_limit_kib", "max_subject",
					    "max_rules", "max_pattern", "jit", NULL};
	const cJSON *item;
	double d;
	int present, error;
	size_t i;

	if (!origin)
		origin = "rules";
	if (!obj || cJSON_IsNull(obj))
		return 0;
	if (!cJSON_IsObject(obj))
		return ferror_set(FACTORY_ECONFIG, "%s: limits: expected a mapping", origin);
	cJSON_ArrayForEach(item, obj) {
		for (i = 0; known[i]; i++)
			if (item->string && !strcmp(item->string, known[i]))
				break;
		if (!known[i])
			return ferror_set(FACTORY_ECONFIG, "%s: limits: unknown key '%s'", origin,
					  item->string ? item->string : "");
	}
	if ((error = limit_num(&d, &present, obj, "match_limit", 100, 1e8, origin)) < 0)
		return error;
	if (present)
		l->match_limit = (uint32_t)d;
	if ((error = limit_num(&d, &present, obj, "depth_limit", 10, 1e7, origin)) < 0)
		return error;
	if (present)
		l->depth_limit = (uint32_t)d;
	if ((error = limit_num(&d, &present, obj, "heap_limit_kib", 64, 4194304, origin)) < 0)
		return error;
	if (present)
		l->heap_limit_kib = (uint32_t)d;
	if ((error = limit_num(&d, &present, obj, "max_subject", 256, 67108864, origin)) < 0)
		return error;
	if (present)
		l->max_subject = (size_t)d;
	if ((error = limit_num(&d, &present, obj, "max_rules", 1, 100000, origin)) < 0)
		return error;
	if (present)
		l->max_rules = (size_t)d;
	if ((error = limit_num(&d, &present, obj, "max_pattern", 16, 65536, origin)) < 0)
		return error;
	if (present)
		l->max_pattern = (size_t)d;
	item = cJSON_GetObjectItemCaseSensitive(obj, "jit");
	if (item) {
		if (!cJSON_IsBool(item))
			return ferror_set(FACTORY_ECONFIG, "%s: limits.jit: expected true or false", origin);
		l->jit = cJSON_IsTrue(item);
	}
	return 0;
}

static void rule_release(rule *r)
{
	size_t i;

	for (i = 0; i < r->npats; i++)
		pcre2_code_free(r->pats[i]);
	for (i = 0; i < r->nunless; i++)
		pcre2_code_free(r->unless[i]);
	free(r->pats);
	free(r->unless);
}

void rules_free(rules *rs)
{
	size_t i;

	if (!rs)
		return;
	for (i = 0; i < rs->n; i++)
		rule_release(&rs->v[i]);
	for (i = 0; i < rs->nfields; i++)
		free(rs->fields[i]);
	free(rs->v);
	cJSON_Delete(rs->spec);
	free(rs);
}

static int valid_name(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == '.'))
			return 0;
	}
	return n > 0 && n <= NAME_MAX_LEN;
}

static int field_index(const rules *rs, const char *name)
{
	size_t i;

	for (i = 0; i < rs->nfields; i++)
		if (!strcmp(rs->fields[i], name))
			return (int)i;
	return -1;
}

/* Compile the patterns of `val` (a string or a list of strings) into a new
 * array; `what` is "pattern" or "unless" for messages. */
static int compile_list(pcre2_code ***out, size_t *nout, rules *rs, const cJSON *val, uint32_t opts,
			pcre2_compile_context *cctx, const char *rname, const char *what, const char *origin)
{
	const cJSON *items[MAX_PATTERNS];
	pcre2_code **codes = NULL;
	size_t n = 0, i;
	const cJSON *p;
	int error = -1;

	*out = NULL;
	*nout = 0;
	if (cJSON_IsString(val)) {
		items[n++] = val;
	} else if (cJSON_IsArray(val)) {
		cJSON_ArrayForEach(p, val) {
			if (n >= MAX_PATTERNS)
				return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': more than %d %ss", origin, rname,
						  MAX_PATTERNS, what);
			items[n++] = p;
		}
	} else {
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s must be a string or a list of strings", origin,
				  rname, what);
	}
	if (!n)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s is an empty list", origin, rname, what);
	codes = calloc(n, sizeof(*codes)); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
	if (!codes)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		const char *src;
		size_t len;
		int errcode;
		PCRE2_SIZE erroff;

		if (!cJSON_IsString(items[i])) {
			error = ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s %zu is not a string", origin, rname,
					   what, i + 1);
			goto cleanup;
		}
		src = items[i]->valuestring;
		len = strlen(src);
		if (!len) {
			error = ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s %zu is empty", origin, rname, what,
					   i + 1);
			goto cleanup;
		}
		if (len > rs->lim.max_pattern) {
			error = ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s %zu is longer than %zu bytes", origin,
					   rname, what, i + 1, rs->lim.max_pattern);
			goto cleanup;
		}
		codes[i] = pcre2_compile((PCRE2_SPTR)src, len, opts, &errcode, &erroff, cctx);
		if (!codes[i]) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(errcode, msg, sizeof(msg));
			error = ferror_set(FACTORY_ECONFIG, "%s: rule '%s': %s %zu: %s at offset %zu", origin, rname,
					   what, i + 1, (const char *)msg, (size_t)erroff);
			goto cleanup;
		}
		if (rs->jit && pcre2_jit_compile(codes[i], PCRE2_JIT_COMPLETE) != 0)
			rs->jit = 0; /* this pattern runs on the interpreter; say the set is not all JIT */
	}
	*out = codes;
	*nout = n;
	codes = NULL;
	error = 0;
cleanup:
	if (codes) {
		for (i = 0; i < n; i++)
			pcre2_code_free(codes[i]);
		free(codes);
	}
	return error;
}

static int compile_rule(rule *r, rules *rs, const cJSON *obj, pcre2_compile_context *cctx, size_t index,
			const char *origin)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "name");
	const cJSON *pat = cJSON_GetObjectItemCaseSensitive(obj, "pattern");
	const cJSON *unless = cJSON_GetObjectItemCaseSensitive(obj, "unless");
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(obj, "in");
	const cJSON *cs = cJSON_GetObjectItemCaseSensitive(obj, "case_sensitive");
	uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C;
	const cJSON *f;
	size_t i;
	int error;

	if (!cJSON_IsObject(obj))
		return ferror_set(FACTORY_ECONFIG, "%s: rule %zu: expected a mapping", origin, index + 1);
	if (!cJSON_IsString(name) || !valid_name(name->valuestring))
		return ferror_set(FACTORY_ECONFIG, "%s: rule %zu: name must be 1 to %d characters of [A-Za-z0-9_.-]",
				  origin, index + 1, NAME_MAX_LEN);
	r->name = name->valuestring;
	r->data = obj;
	for (i = 0; i < index; i++)
		if (rs->v[i].name && !strcmp(rs->v[i].name, r->name))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s' is defined twice", origin, r->name);
	if (cs && !cJSON_IsBool(cs))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': case_sensitive must be true or false", origin,
				  r->name);
	if (!cJSON_IsTrue(cs))
		opts |= PCRE2_CASELESS;
	if (!pat)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': pattern is missing", origin, r->name);
	if (!in) {
		for (i = 0; i < rs->nfields; i++)
			r->order[r->norder++] = (unsigned char)i;
	} else {
		if (!cJSON_IsString(in) && !cJSON_IsArray(in))
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': in must be a field name or a list of them",
					  origin, r->name);
		for (f = cJSON_IsArray(in) ? in->child : in; f; f = cJSON_IsArray(in) ? f->next : NULL) {
			int k = cJSON_IsString(f) ? field_index(rs, f->valuestring) : -1;
			size_t j;
			if (k < 0)
				return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': unknown field '%s' in 'in'", origin,
						  r->name, cJSON_IsString(f) ? f->valuestring : "(not a string)");
			for (j = 0; j < r->norder; j++)
				if (r->order[j] == k)
					break;
			if (j == r->norder && r->norder < MAX_FIELDS)
				r->order[r->norder++] = (unsigned char)k;
		}
		if (!r->norder)
			return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': in is an empty list", origin, r->name);
	}
	if ((error = compile_list(&r->pats, &r->npats, rs, pat, opts, cctx, r->name, "pattern", origin)) < 0)
		return error;
	if (unless &&
	    (error = compile_list(&r->unless, &r->nunless, rs, unless, opts, cctx, r->name, "unless", origin)) < 0)
		return error;
	return 0;
}

int rules_compile(rules **out, const cJSON *spec, const char *const *fields, const rules_limits *limits,
		  const char *origin)
{
	pcre2_compile_context *cctx = NULL;
	rules *rs = NULL;
	const cJSON *obj;
	size_t n, i;
	uint32_t jit_ok = 0;
	int error = -1;

	*out = NULL;
	if (!origin)
		origin = "rules";
	if (!spec || cJSON_IsNull(spec))
		n = 0;
	else if (!cJSON_IsArray(spec))
		return ferror_set(FACTORY_ECONFIG, "%s: rules must be a list", origin);
	else
		n = (size_t)cJSON_GetArraySize(spec);
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (limits)
		rs->lim = *limits;
	else
		rules_limits_init(&rs->lim);
	if (n > rs->lim.max_rules) {
		error = ferror_set(FACTORY_ECONFIG, "%s: %zu rules, more than the limit of %zu", origin, n,
				   rs->lim.max_rules);
		goto cleanup;
	}
	for (i = 0; fields && fields[i]; i++) {
		if (i >= MAX_FIELDS) {
			error = ferror_set(FACTORY_ECONFIG, "%s: more than %d fields", origin, MAX_FIELDS);
			goto cleanup;
		}
		if (!(rs->fields[i] = strdup(fields[i]))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		rs->nfields++;
	}
	if (!rs->nfields) {
		error = ferror_set(FACTORY_ECONFIG, "%s: no fields to match", origin);
		goto cleanup;
	}
	rs->jit = rs->lim.jit && pcre2_config(PCRE2_CONFIG_JIT, &jit_ok) >= 0 && jit_ok;
	if (n) {
		rs->spec = cJSON_Duplicate(spec, 1);
		rs->v = calloc(n, sizeof(*rs->v));
		if (!rs->spec || !rs->v) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	}
	cctx = pcre2_compile_context_create(NULL);
	if (!cctx) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	i = 0;
	cJSON_ArrayForEach(obj, rs->spec) {
		rs->n = i + 1; /* so a half-compiled rule is released on failure */
		if ((error = compile_rule(&rs->v[i], rs, obj, cctx, i, origin)) < 0)
			goto cleanup;
		i++;
	}
	*out = rs;
	rs = NULL;
	error = 0;
cleanup:
	pcre2_compile_context_free(cctx);
	rules_free(rs);
	return error;
}

size_t rules_count(const rules *rs)
{
	return rs ? rs->n : 0;
}

const char *rules_name(const rules *rs, size_t i)
{
	return rs && i < rs->n ? rs->v[i].name : NULL;
}

const cJSON *rules_data(const rules *rs, size_t i)
{
	return rs && i < rs->n ? rs->v[i].data : NULL;
}

int rules_find(const rules *rs, const char *name)
{
	size_t i;

	for (i = 0; rs && name && i < rs->n; i++)
		if (!strcmp(rs->v[i].name, name))
			return (int)i;
	return -1;
}

int rules_jit(const rules *rs)
{
	return rs ? rs->jit : 0;
}

const rules_limits *rules_get_limits(const rules *rs)
{
	return &rs->lim;
}

void rules_result_init(rules_result *r)
{
	memset(r, 0, sizeof(*r));
}

void rules_result_release(rules_result *r)
{
	free(r->hits);
	rules_result_init(r);
}

/* Try one compiled pattern. Returns 1 (match, offsets set), 0 (no match) or
 * -1 (abandoned: a limit or another matcher error; counted by the caller). */
static int try_one(size_t *off, size_t *len, const pcre2_code *code, const char *text, size_t tlen,
		   pcre2_match_data *md, pcre2_match_context *mctx)
{
	int rc = pcre2_match(code, (PCRE2_SPTR)text, tlen, 0, 0, md, mctx);
	PCRE2_SIZE *ov;

	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc < 0)
		return -1;
	ov = pcre2_get_ovector_pointer(md);
	*off = ov[0];
	*len = ov[1] >= ov[0] ? ov[1] - ov[0] : 0;
	return 1;
}

int rules_match(rules_result *out, const rules *rs, const rules_field *fields, size_t nfields)
{
	pcre2_match_context *mctx = NULL;
	pcre2_jit_stack *stack = NULL;
	pcre2_match_data *md = NULL;
	int map[MAX_FIELDS];
	size_t i, j, k;
	int error = -1;

	free(out->hits);
	rules_result_init(out);
	if (!rs || !rs->n)
		return 0;
	for (i = 0; i < rs->nfields; i++) {
		map[i] = -1;
		for (j = 0; j < nfields; j++)
			if (fields[j].name && !strcmp(fields[j].name, rs->fields[i])) {
				map[i] = (int)j;
				break;
			}
		if (map[i] >= 0 && fields[map[i]].len > rs->lim.max_subject)
			out->truncated++;
	}
	out->hits = calloc(rs->n, sizeof(*out->hits));
	mctx = pcre2_match_context_create(NULL);
	md = pcre2_match_data_create(1, NULL);
	if (!out->hits || !mctx || !md) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	pcre2_set_match_limit(mctx, rs->lim.match_limit);
	pcre2_set_depth_limit(mctx, rs->lim.depth_limit);
	pcre2_set_heap_limit(mctx, rs->lim.heap_limit_kib);
	if (rs->jit) {
		stack = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
		if (!stack) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
		pcre2_jit_stack_assign(mctx, NULL, stack);
	}
	for (i = 0; i < rs->n; i++) {
		const rule *r = &rs->v[i];
		int found = 0;

		for (k = 0; k < r->norder && !found; k++) {
			int fi = map[r->order[k]];
			const char *text;
			size_t tlen, off = 0, mlen = 0, uoff, ulen;
			int hit = 0, rc;

			if (fi < 0)
				continue;
			text = fields[fi].text ? fields[fi].text : "";
			tlen = fields[fi].text ? fields[fi].len : 0;
			if (tlen > rs->lim.max_subject)
				tlen = rs->lim.max_subject;
			for (j = 0; j < r->npats && !hit; j++) {
				rc = try_one(&off, &mlen, r->pats[j], text, tlen, md, mctx);
				if (rc < 0)
					out->limit_hits++;
				hit = rc > 0;
			}
			if (!hit)
				continue;
			for (j = 0; j < r->nunless; j++) {
				rc = try_one(&uoff, &ulen, r->unless[j], text, tlen, md, mctx);
				if (rc < 0)
					out->limit_hits++;
				if (rc > 0) {
					hit = 0;
					break;
				}
			}
			if (!hit)
				continue;
			out->hits[out->nhits].rule = i;
			out->hits[out->nhits].field = (size_t)fi;
			out->hits[out->nhits].offset = off;
			out->hits[out->nhits].length = mlen;
			out->nhits++;
			found = 1;
		}
	}
	error = 0;
cleanup:
	pcre2_match_data_free(md);
	pcre2_match_context_free(mctx);
	if (stack)
		pcre2_jit_stack_free(stack);
	if (error < 0)
		rules_result_release(out);
	return error;
}
