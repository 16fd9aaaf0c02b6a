/*
 * config.c - settings from flags, the environment, YAML files and defaults.
 *
 * A setting keeps one value per source; the environment is read when a key
 * is looked up. YAML is read with libyaml's event parser into cJSON. Every
 * loaded file is converted twice in one pass: into the typed document that
 * fconfig_yaml() hands out, and into a "raw" twin where every scalar is the
 * string "<origin>:<source text>" (nulls stay null). Both are deep-merged
 * the same way, and the file settings are rebuilt from the raw twin after
 * each load, so a setting is always exactly the scalar the merged document
 * holds, spelled as in the file that set it.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "buf.h"
#include "error.h"

#define YAML_MAX_BYTES ((size_t)1 << 20)
#define YAML_MAX_DEPTH 64
#define SHOWN_VALUE_MAX 80
#define ENV_NAME_MAX 256
#define MAX_EXACT_INT_LL (1LL << 53) /* larger integers do not fit a double exactly */

#define TAG_PREFIX "tag:yaml.org,2002:"

typedef struct {
	char *key;
	char *value[4];     /* one per fconfig_source */
	int env_set;        /* value[CONFIG_ENV] was given with fconfig_set */
	int from_load;      /* value[CONFIG_FILE] came from a loaded file */
	const char *origin; /* where value[CONFIG_FILE] came from (in origins) */
} setting;

struct fconfig {
	setting *v;
	size_t n, alloc;
	size_t *index; /* open-addressing hash of keys: slot holds setting index + 1 */
	size_t index_size;
	cJSON *doc;     /* merged typed document */
	cJSON *raw;     /* merged raw twin (see the top of this file) */
	char **origins; /* names of the loaded files, freed with the config */
	size_t norigins;
};

/* Key hashing (FNV-1a). */
static size_t hash_key(const char *key)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *key; key++) {
		h ^= (unsigned char)*key;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

static setting *find_setting(const fconfig *c, const char *key)
{
	size_t mask, i;

	if (!c->index_size)
		return NULL;
	mask = c->index_size - 1;
	for (i = hash_key(key) & mask; c->index[i]; i = (i + 1) & mask) {
		setting *s = &c->v[c->index[i] - 1];
		if (!strcmp(s->key, key))
			return s;
	}
	return NULL;
}

static void index_insert(size_t *index, size_t size, const char *key, size_t pos)
{
	size_t mask = size - 1, i;

	for (i = hash_key(key) & mask; index[i]; i = (i + 1) & mask)
		;
	index[i] = pos + 1;
}

/* The setting for `key`, created when missing. NULL on allocation failure. */
static setting *get_setting(fconfig *c, const char *key)
{
	setting *s = find_setting(c, key);
	size_t i;

	if (s)
		return s;
	if (c->n == c->alloc) {
		size_t n = c->alloc ? c->alloc * 2 : 16;
		setting *v = realloc(c->v, n * sizeof(*v));
		if (!v)
			goto nomem;
		c->v = v;
		c->alloc = n;
	}
	/* Keep the hash table at most half full. */
	if ((c->n + 1) * 2 > c->index_size) {
		size_t size = c->index_size ? c->index_size * 2 : 64;
		size_t *index = calloc(size, sizeof(*index));
		if (!index)
			goto nomem;
		for (i = 0; i < c->n; i++)
			index_insert(index, size, c->v[i].key, i);
		free(c->index);
		c->index = index;
		c->index_size = size;
	}
	s = &c->v[c->n];
	memset(s, 0, sizeof(*s));
	if (!(s->key = strdup(key)))
		goto nomem;
	index_insert(c->index, c->index_size, key, c->n);
	c->n++;
	return s;
nomem:
	ferror_set(FACTORY_ENOMEM, "out of memory");
	return NULL;
}

int fconfig_new(fconfig **out)
{
	fconfig *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c) {
		ferror_set(FACTORY_ENOMEM, "out of memory");
		return FACTORY_ENOMEM;
	}
	*out = c;
	return 0;
}

void fconfig_free(fconfig *c)
{
	size_t i;
	int j;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		free(c->v[i].key);
		for (j = 0; j < 4; j++)
			free(c->v[i].value[j]);
	}
	for (i = 0; i < c->norigins; i++)
		free(c->origins[i]);
	free(c->origins);
	free(c->v);
	free(c->index);
	cJSON_Delete(c->doc);
	cJSON_Delete(c->raw);
	free(c);
}

int fconfig_clone(fconfig **out, const fconfig *c)
{
	fconfig *n = NULL;
	const setting *s;
	setting *d;
	size_t i, k;
	int j;

	*out = NULL;
	if (fconfig_new(&n) < 0)
		return FACTORY_ENOMEM;
	if (c->norigins && !(n->origins = calloc(c->norigins, sizeof(*n->origins))))
		goto nomem;
	for (i = 0; i < c->norigins; i++) {
		if (!(n->origins[i] = strdup(c->origins[i])))
			goto nomem;
		n->norigins++;
	}
	if ((c->doc && !(n->doc = cJSON_Duplicate(c->doc, 1))) || (c->raw && !(n->raw = cJSON_Duplicate(c->raw, 1))))
		goto nomem;
	for (i = 0; i < c->n; i++) {
		s = &c->v[i];
		if (!(d = get_setting(n, s->key)))
			goto nomem;
		for (j = 0; j < 4; j++)
			if (s->value[j] && !(d->value[j] = strdup(s->value[j])))
				goto nomem;
		d->env_set = s->env_set;
		d->from_load = s->from_load;
		for (k = 0; s->origin && k < c->norigins; k++)
			if (s->origin == c->origins[k])
				d->origin = n->origins[k];
	}
	*out = n;
	return 0;
nomem:
	fconfig_free(n);
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}

/*
 * YAML to cJSON.
 */

typedef struct {
	cJSON *node;  /* the object or array being filled */
	cJSON *rnode; /* its raw twin, or NULL when no twin is built */
	char *key;    /* pending key of a mapping, NULL when the next scalar is a key */
} frame;

/* A key already seen in a mapping: duplicate keys are refused in linear time. */
typedef struct {
	const cJSON *map;
	const char *key; /* the member's own name string, owned by the tree */
} seen_key;

typedef struct {
	const char *name;
	const char *text;
	seen_key *seen;
	size_t nseen, seen_size;
	size_t len;
	frame stack[YAML_MAX_DEPTH];
	int depth;
	cJSON *root, *rroot;
	int raw; /* build the raw twin too */
	size_t origin;
} converter;

/* Line and column (1-based) of a byte offset, for reader errors that carry no mark. */
static void offset_position(size_t *line, size_t *col, const char *text, size_t len, size_t off)
{
	size_t i;

	*line = 1;
	*col = 1;
	for (i = 0; i < off && i < len; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static int yaml_fail(const converter *cv, const yaml_mark_t *m, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int yaml_fail(const converter *cv, const yaml_mark_t *m, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return ferror_set(FACTORY_ECONFIG, "bad yaml in %s at line %zu, column %zu: %s", cv->name, m->line + 1,
	                  m->column + 1, msg);
}

static int parser_fail(const converter *cv, const yaml_parser_t *p)
{
	size_t line, col;

	switch (p->error) {
	case YAML_MEMORY_ERROR:
		return ferror_set(FACTORY_ENOMEM, "out of memory parsing %s", cv->name);
	case YAML_READER_ERROR:
		offset_position(&line, &col, cv->text, cv->len, p->problem_offset);
		return ferror_set(FACTORY_ECONFIG, "bad yaml in %s at line %zu, column %zu: %s", cv->name, line, col,
		                  p->problem ? p->problem : "unreadable input");
	default:
		if (p->context)
			return ferror_set(FACTORY_ECONFIG,
			                  "bad yaml in %s at line %zu, column %zu: %s %s (from line %zu, column %zu)",
			                  cv->name, p->problem_mark.line + 1, p->problem_mark.column + 1,
			                  p->problem ? p->problem : "syntax error", p->context,
			                  p->context_mark.line + 1, p->context_mark.column + 1);
		return ferror_set(FACTORY_ECONFIG, "bad yaml in %s at line %zu, column %zu: %s", cv->name,
		                  p->problem_mark.line + 1, p->problem_mark.column + 1,
		                  p->problem ? p->problem : "syntax error");
	}
}

static int all_in(const char *s, size_t len, const char *set)
{
	size_t i;

	if (!len)
		return 0;
	for (i = 0; i < len; i++)
		if (!strchr(set, s[i]))
			return 0;
	return 1;
}

enum { T_STR, T_NULL, T_BOOL, T_INT, T_FLOAT };

/*
 * Resolve a plain scalar the YAML 1.2 core schema way: null (~, null, empty),
 * true/false only (yes/no/on/off stay strings), decimal, 0o octal and 0x hex
 * integers, decimal floats. Integers a double cannot hold exactly, .inf and
 * .nan stay strings: JSON has no room for them without loss.
 */
static int resolve_plain(const char *s, size_t len, double *num, int *b)
{
	static const char *const nulls[] = {"~", "null", "Null", "NULL", NULL};
	static const char *const trues[] = {"true", "True", "TRUE", NULL};
	static const char *const falses[] = {"false", "False", "FALSE", NULL};
	const char *digits = "0123456789";
	size_t i, j;
	char *end;

	if (!len)
		return T_NULL;
	for (i = 0; nulls[i]; i++)
		if (!strcmp(s, nulls[i]))
			return T_NULL;
	for (i = 0; trues[i]; i++)
		if (!strcmp(s, trues[i]))
			return (*b = 1), T_BOOL;
	for (i = 0; falses[i]; i++)
		if (!strcmp(s, falses[i]))
			return (*b = 0), T_BOOL;
	if (len > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
		int hex = s[1] == 'x';
		unsigned long long v;
		if (!all_in(s + 2, len - 2, hex ? "0123456789abcdefABCDEF" : "01234567"))
			return T_STR;
		errno = 0;
		v = strtoull(s + 2, &end, hex ? 16 : 8);
		if (errno || v > (unsigned long long)MAX_EXACT_INT_LL)
			return T_STR;
		*num = (double)v;
		return T_INT;
	}
	i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
	if (i < len && all_in(s + i, len - i, digits)) {
		long long v;
		errno = 0;
		v = strtoll(s, &end, 10);
		if (errno || v > MAX_EXACT_INT_LL || v < -MAX_EXACT_INT_LL)
			return T_STR;
		*num = (double)v;
		return T_INT;
	}
	/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
	j = i;
	if (j < len && s[j] == '.') {
		j++;
		if (j >= len || !isdigit((unsigned char)s[j]))
			return T_STR;
		while (j < len && isdigit((unsigned char)s[j]))
			j++;
	} else {
		if (j >= len || !isdigit((unsigned char)s[j]))
			return T_STR;
		while (j < len && isdigit((unsigned char)s[j]))
			j++;
		if (j < len && s[j] == '.')
			for (j++; j < len && isdigit((unsigned char)s[j]); j++)
				;
	}
	if (j < len && (s[j] == 'e' || s[j] == 'E')) {
		j++;
		if (j < len && (s[j] == '-' || s[j] == '+'))
			j++;
		if (j >= len || !isdigit((unsigned char)s[j]))
			return T_STR;
		while (j < len && isdigit((unsigned char)s[j]))
			j++;
	}
	if (j != len)
		return T_STR;
	errno = 0;
	*num = strtod(s, &end);
	if (errno == ERANGE && (*num > 1.0 || *num < -1.0))
		return T_STR; /* overflow to infinity */
	return T_FLOAT;
}

/* The cJSON value of a scalar event, or NULL with the error set. */
static cJSON *scalar_value(const converter *cv, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	int type, b = 0, want = -1;
	double num = 0;
	cJSON *item;

	if (tag) {
		if (!strcmp(tag, "!") || !strcmp(tag, TAG_PREFIX "str"))
			want = T_STR;
		else if (!strcmp(tag, TAG_PREFIX "null"))
			want = T_NULL;
		else if (!strcmp(tag, TAG_PREFIX "bool"))
			want = T_BOOL;
		else if (!strcmp(tag, TAG_PREFIX "int"))
			want = T_INT;
		else if (!strcmp(tag, TAG_PREFIX "float"))
			want = T_FLOAT;
		else {
			yaml_fail(cv, &ev->start_mark, "unsupported tag %.100s", tag);
			return NULL;
		}
	}
	if (want == T_STR || (want < 0 && !plain))
		type = T_STR;
	else
		type = resolve_plain(s, len, &num, &b);
	if (want == T_FLOAT && type == T_INT)
		type = T_FLOAT;
	if (want >= 0 && type != want) {
		yaml_fail(cv, &ev->start_mark, "value %.80s does not match its tag %s", s, tag);
		return NULL;
	}
	switch (type) {
	case T_NULL:
		item = cJSON_CreateNull();
		break;
	case T_BOOL:
		item = cJSON_CreateBool(b);
		break;
	case T_INT:
	case T_FLOAT:
		item = cJSON_CreateNumber(num);
		break;
	default:
		item = cJSON_CreateString(s);
		break;
	}
	if (!item)
		ferror_set(FACTORY_ENOMEM, "out of memory");
	return item;
}

/* The raw twin of a scalar: "<origin>:<text>", or null. */
static cJSON *scalar_raw(const converter *cv, const yaml_event_t *ev, const cJSON *typed)
{
	fbuf b;
	cJSON *item;

	if (cJSON_IsNull(typed))
		item = cJSON_CreateNull();
	else {
		fbuf_init(&b, 0);
		if (fbuf_printf(&b, "%zu:", cv->origin) < 0 ||
		    fbuf_put(&b, ev->data.scalar.value, ev->data.scalar.length) < 0) {
			fbuf_release(&b);
			return NULL;
		}
		item = cJSON_CreateString(b.ptr);
		fbuf_release(&b);
	}
	if (!item)
		ferror_set(FACTORY_ENOMEM, "out of memory");
	return item;
}

static size_t seen_hash(const cJSON *map, const char *key)
{
	return hash_key(key) ^ ((size_t)(uintptr_t)map * (size_t)0x9E3779B97F4A7C15ULL);
}

static int seen_has(const converter *cv, const cJSON *map, const char *key)
{
	size_t mask, i;

	if (!cv->seen_size)
		return 0;
	mask = cv->seen_size - 1;
	for (i = seen_hash(map, key) & mask; cv->seen[i].key; i = (i + 1) & mask)
		if (cv->seen[i].map == map && !strcmp(cv->seen[i].key, key))
			return 1;
	return 0;
}

static int seen_add(converter *cv, const cJSON *map, const char *key)
{
	size_t mask, i, j;

	if ((cv->nseen + 1) * 2 > cv->seen_size) {
		size_t size = cv->seen_size ? cv->seen_size * 2 : 64;
		seen_key *t = calloc(size, sizeof(*t));
		if (!t)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		for (j = 0; j < cv->seen_size; j++) {
			if (!cv->seen[j].key)
				continue;
			for (i = seen_hash(cv->seen[j].map, cv->seen[j].key) & (size - 1); t[i].key;
			     i = (i + 1) & (size - 1))
				;
			t[i] = cv->seen[j];
		}
		free(cv->seen);
		cv->seen = t;
		cv->seen_size = size;
	}
	mask = cv->seen_size - 1;
	for (i = seen_hash(map, key) & mask; cv->seen[i].key; i = (i + 1) & mask)
		;
	cv->seen[i].map = map;
	cv->seen[i].key = key;
	cv->nseen++;
	return 0;
}

/* Put a value (and its twin) into the current container, or make it the root.
 * Takes ownership of both in every case. */
static int attach(converter *cv, cJSON *item, cJSON *ritem)
{
	frame *f;

	if (cv->depth == 0) {
		cv->root = item;
		cv->rroot = ritem;
		return 0;
	}
	f = &cv->stack[cv->depth - 1];
	if (cJSON_IsArray(f->node)) {
		cJSON_AddItemToArray(f->node, item);
		if (f->rnode)
			cJSON_AddItemToArray(f->rnode, ritem);
		else
			cJSON_Delete(ritem);
		return 0;
	}
	if (!cJSON_AddItemToObject(f->node, f->key, item)) {
		cJSON_Delete(item);
		cJSON_Delete(ritem);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	if (seen_add(cv, f->node, item->string) < 0) {
		cJSON_Delete(ritem);
		return FACTORY_ENOMEM;
	}
	if (f->rnode) {
		if (!cJSON_AddItemToObject(f->rnode, f->key, ritem)) {
			cJSON_Delete(ritem);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
	} else {
		cJSON_Delete(ritem);
	}
	free(f->key);
	f->key = NULL;
	return 0;
}

/* True when the next scalar of the current container is a mapping key. */
static int expects_key(const converter *cv)
{
	const frame *f;

	if (cv->depth == 0)
		return 0;
	f = &cv->stack[cv->depth - 1];
	return cJSON_IsObject(f->node) && !f->key;
}

static int on_scalar(converter *cv, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	frame *f;
	cJSON *item, *ritem = NULL;

	if (ev->data.scalar.anchor)
		return yaml_fail(cv, &ev->start_mark, "anchors are not allowed (&%.100s)", ev->data.scalar.anchor);
	if (memchr(s, '\0', len))
		return yaml_fail(cv, &ev->start_mark, "NUL byte in a scalar");
	if (expects_key(cv)) {
		f = &cv->stack[cv->depth - 1];
		if (seen_has(cv, f->node, s))
			return yaml_fail(cv, &ev->start_mark, "duplicate key %.100s", s);
		if (!(f->key = strdup(s)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		return 0;
	}
	if (!(item = scalar_value(cv, ev)))
		return ferror_last_code();
	if (cv->raw && (cv->depth == 0 || cv->stack[cv->depth - 1].rnode)) {
		if (!(ritem = scalar_raw(cv, ev, item))) {
			cJSON_Delete(item);
			return FACTORY_ENOMEM;
		}
	}
	return attach(cv, item, ritem);
}

static int on_start(converter *cv, const yaml_event_t *ev, int mapping)
{
	const char *anchor = (const char *)(mapping ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor);
	const char *tag = (const char *)(mapping ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
	cJSON *item, *ritem = NULL;
	int raw_parent;
	frame *f;
	int error;

	if (anchor)
		return yaml_fail(cv, &ev->start_mark, "anchors are not allowed (&%.100s)", anchor);
	if (tag && strcmp(tag, mapping ? TAG_PREFIX "map" : TAG_PREFIX "seq") != 0 && strcmp(tag, "!") != 0)
		return yaml_fail(cv, &ev->start_mark, "unsupported tag %.100s", tag);
	if (expects_key(cv))
		return yaml_fail(cv, &ev->start_mark, "a mapping key must be a scalar");
	if (cv->depth >= YAML_MAX_DEPTH)
		return yaml_fail(cv, &ev->start_mark, "nested deeper than %d levels", YAML_MAX_DEPTH);
	item = mapping ? cJSON_CreateObject() : cJSON_CreateArray();
	if (!item)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	/* The raw twin follows mappings only: settings never come from sequences. */
	raw_parent = cv->raw && (cv->depth == 0 || cv->stack[cv->depth - 1].rnode);
	if (raw_parent) {
		ritem = mapping ? cJSON_CreateObject() : cJSON_CreateArray();
		if (!ritem) {
			cJSON_Delete(item);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
	}
	if ((error = attach(cv, item, ritem)) < 0)
		return error;
	f = &cv->stack[cv->depth++];
	f->node = item;
	f->rnode = (ritem && mapping) ? ritem : NULL;
	f->key = NULL;
	return 0;
}

/*
 * Convert `len` bytes of YAML into *out (and *raw_out when not NULL, with
 * scalars tagged by `origin`). Only the first document is read.
 */
static int convert(cJSON **out, cJSON **raw_out, size_t origin, const char *yaml, size_t len, const char *name)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	converter cv;
	int error = -1, done = 0, have_event = 0, i;

	*out = NULL;
	if (raw_out)
		*raw_out = NULL;
	memset(&cv, 0, sizeof(cv));
	cv.name = name ? name : "yaml";
	cv.text = yaml;
	cv.len = len;
	cv.raw = raw_out != NULL;
	cv.origin = origin;
	if (len > YAML_MAX_BYTES)
		return ferror_set(FACTORY_ECONFIG, "%s is too big: %zu bytes, the limit is 1 MiB", cv.name, len);
	if (!yaml_parser_initialize(&parser))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)(yaml ? yaml : ""), len);

	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			error = parser_fail(&cv, &parser);
			goto cleanup;
		}
		have_event = 1;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			done = 1;
			break;
		case YAML_ALIAS_EVENT:
			error = yaml_fail(&cv, &ev.start_mark, "aliases are not allowed (*%.100s)",
			                  ev.data.alias.anchor);
			goto cleanup;
		case YAML_SCALAR_EVENT:
			if ((error = on_scalar(&cv, &ev)) < 0)
				goto cleanup;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if ((error = on_start(&cv, &ev, ev.type == YAML_MAPPING_START_EVENT)) < 0)
				goto cleanup;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (cv.depth > 0) {
				free(cv.stack[cv.depth - 1].key);
				cv.stack[--cv.depth].key = NULL;
			}
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		have_event = 0;
	}
	if (!cv.root) {
		/* An empty stream or document is null. */
		if (!(cv.root = cJSON_CreateNull()) || (raw_out && !(cv.rroot = cJSON_CreateNull()))) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	}
	*out = cv.root;
	cv.root = NULL;
	if (raw_out) {
		*raw_out = cv.rroot;
		cv.rroot = NULL;
	}
	error = 0;
cleanup:
	if (have_event)
		yaml_event_delete(&ev);
	for (i = 0; i < cv.depth; i++)
		free(cv.stack[i].key);
	free(cv.seen);
	cJSON_Delete(cv.root);
	cJSON_Delete(cv.rroot);
	yaml_parser_delete(&parser);
	return error;
}

int fconfig_yaml_to_json(cJSON **out, const char *yaml, size_t len, const char *name)
{
	return convert(out, NULL, 0, yaml, len, name);
}

/*
 * Loading into a config.
 */

/* Deep-merge object `src` into object `dst`, emptying `src`: objects merge
 * key by key, anything else replaces. */
static int merge_objects(cJSON *dst, cJSON *src)
{
	cJSON *item, *old;
	int error;

	if (!dst || !src)
		return 0;
	while ((item = src->child)) {
		cJSON_DetachItemViaPointer(src, item);
		old = cJSON_GetObjectItemCaseSensitive(dst, item->string);
		if (old && cJSON_IsObject(old) && cJSON_IsObject(item)) {
			error = merge_objects(old, item);
			cJSON_Delete(item);
			if (error < 0)
				return error;
		} else if (old) {
			/* Replace keeps the key: the new item takes the old one's name. */
			cJSON_ReplaceItemViaPointer(dst, old, item);
		} else {
			if (!cJSON_AddItemToObject(dst, item->string, item)) {
				cJSON_Delete(item);
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			}
		}
	}
	return 0;
}

/* Set the file settings from a raw twin: every scalar reached through
 * mappings only, keys joined by '.'. */
static int flatten_raw(fconfig *c, const cJSON *node, fbuf *path)
{
	const cJSON *item;
	size_t mark = path->len;
	unsigned long origin;
	char *end, *v;
	setting *s;
	int error;

	cJSON_ArrayForEach(item, node)
	{
		path->len = mark;
		if (path->ptr)
			path->ptr[mark] = '\0';
		if ((mark && (error = fbuf_putc(path, '.')) < 0) || (error = fbuf_puts(path, item->string)) < 0)
			return error;
		if (cJSON_IsObject(item)) {
			if ((error = flatten_raw(c, item, path)) < 0)
				return error;
		} else if (cJSON_IsString(item)) {
			origin = strtoul(item->valuestring, &end, 10);
			if (*end != ':' || origin >= c->norigins)
				continue; /* cannot happen: every raw scalar is tagged */
			if (!(s = get_setting(c, path->ptr)) || !(v = strdup(end + 1)))
				return ferror_set(FACTORY_ENOMEM, "out of memory");
			free(s->value[CONFIG_FILE]);
			s->value[CONFIG_FILE] = v;
			s->from_load = 1;
			s->origin = c->origins[origin];
		}
	}
	path->len = mark;
	if (path->ptr)
		path->ptr[mark] = '\0';
	return 0;
}

static int load_text(fconfig *c, const char *text, size_t len, const char *name)
{
	cJSON *doc = NULL, *raw = NULL;
	char **origins, *origin = NULL;
	fbuf path;
	size_t i;
	int error = -1;

	fbuf_init(&path, 0);
	if (!name)
		name = "yaml";
	if ((error = convert(&doc, &raw, c->norigins, text, len, name)) < 0)
		goto cleanup;
	if (cJSON_IsNull(doc)) {
		/* An empty file: loaded, nothing in it. */
		cJSON_Delete(doc);
		cJSON_Delete(raw);
		doc = cJSON_CreateObject();
		raw = cJSON_CreateObject();
		if (!doc || !raw) {
			error = ferror_set(FACTORY_ENOMEM, "out of memory");
			goto cleanup;
		}
	}
	if (!cJSON_IsObject(doc)) {
		error = ferror_set(FACTORY_ECONFIG, "bad settings file %s: the top level must be a mapping of settings",
		                   name);
		goto cleanup;
	}
	if (!(origin = strdup(name)) || !(origins = realloc(c->origins, (c->norigins + 1) * sizeof(*origins)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	c->origins = origins;
	c->origins[c->norigins++] = origin;
	origin = NULL;

	if (!c->doc) {
		c->doc = doc;
		c->raw = raw;
		doc = raw = NULL;
	} else if ((error = merge_objects(c->doc, doc)) < 0 || (error = merge_objects(c->raw, raw)) < 0) {
		goto cleanup;
	}
	/* Rebuild the file settings from the merged twin. */
	for (i = 0; i < c->n; i++) {
		if (c->v[i].from_load) {
			free(c->v[i].value[CONFIG_FILE]);
			c->v[i].value[CONFIG_FILE] = NULL;
			c->v[i].from_load = 0;
			c->v[i].origin = NULL;
		}
	}
	error = flatten_raw(c, c->raw, &path);
cleanup:
	free(origin);
	fbuf_release(&path);
	cJSON_Delete(doc);
	cJSON_Delete(raw);
	return error;
}

int fconfig_load_yaml_string(fconfig *c, const char *yaml, const char *name)
{
	return load_text(c, yaml ? yaml : "", yaml ? strlen(yaml) : 0, name);
}

int fconfig_load_yaml(fconfig *c, const char *path, int required)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	ssize_t n;
	int fd = -1, error = -1;

	if (!path || !*path)
		return ferror_set(FACTORY_ECONFIG, "cannot read settings file: no name given");
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno == ENOENT && !required)
			return 0;
		return ferror_set(FACTORY_ECONFIG, "cannot read settings file %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		error = ferror_set(FACTORY_ECONFIG, "cannot read settings file %s: %s", path, strerror(errno));
		goto cleanup;
	}
	if (S_ISDIR(st.st_mode)) {
		error = ferror_set(FACTORY_ECONFIG, "cannot read settings file %s: it is a directory", path);
		goto cleanup;
	}
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > YAML_MAX_BYTES) {
		error = ferror_set(FACTORY_ECONFIG, "settings file %s is too big: %jd bytes, the limit is 1 MiB", path,
		                   (intmax_t)st.st_size);
		goto cleanup;
	}
	/* Read at most one byte past the cap: a pipe or a growing file says no size up front. */
	if (!(text = malloc(YAML_MAX_BYTES + 2))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	while (len <= YAML_MAX_BYTES) {
		n = read(fd, text + len, YAML_MAX_BYTES + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			error = ferror_set(FACTORY_ECONFIG, "cannot read settings file %s: %s", path, strerror(errno));
			goto cleanup;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > YAML_MAX_BYTES) {
		error = ferror_set(FACTORY_ECONFIG, "settings file %s is too big: the limit is 1 MiB", path);
		goto cleanup;
	}
	text[len] = '\0';
	error = load_text(c, text, len, path);
cleanup:
	free(text);
	if (fd >= 0)
		close(fd);
	return error;
}

/*
 * Settings.
 */

int fconfig_set(fconfig *c, fconfig_source src, const char *key, const char *value)
{
	setting *s;
	char *copy = NULL;

	if (!key || !*key)
		return ferror_set(FACTORY_EINVALID, "cannot set a setting with an empty name");
	if ((int)src < CONFIG_DEFAULT || src > CONFIG_FLAG)
		return ferror_set(FACTORY_EINVALID, "cannot set %s: unknown source %d", key, (int)src);
	if (value && !(copy = strdup(value)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!(s = get_setting(c, key))) {
		free(copy);
		return FACTORY_ENOMEM;
	}
	free(s->value[src]);
	s->value[src] = copy;
	if (src == CONFIG_ENV)
		s->env_set = copy != NULL;
	if (src == CONFIG_FILE) {
		s->from_load = 0;
		s->origin = NULL;
	}
	return 0;
}

void fconfig_env_name(char *out, size_t len, const char *key)
{
	static const char prefix[] = "FACTORY_";
	size_t i, j;

	if (!len)
		return;
	for (i = 0; prefix[i] && i + 1 < len; i++)
		out[i] = prefix[i];
	for (j = 0; key && key[j] && i + 1 < len; i++, j++) {
		unsigned char ch = (unsigned char)key[j];
		out[i] = (ch == '.' || ch == '-') ? '_' : (char)toupper(ch);
	}
	out[i] = '\0';
}

void fconfig_flag_name(char *out, size_t len, const char *key)
{
	size_t i;

	if (!len)
		return;
	for (i = 0; key && key[i] && i + 1 < len; i++)
		out[i] = (key[i] == '_' || key[i] == '.') ? '-' : key[i];
	out[i] = '\0';
}

const char *fconfig_source_name(fconfig_source s)
{
	switch (s) {
	case CONFIG_DEFAULT:
		return "default";
	case CONFIG_FILE:
		return "file";
	case CONFIG_ENV:
		return "environment";
	case CONFIG_FLAG:
		return "flag";
	}
	return "unknown";
}

/* The environment's value of `key`, or NULL when unset or empty. */
static const char *env_value(const char *key)
{
	char name[ENV_NAME_MAX];
	const char *v;

	if (strlen(key) + sizeof("FACTORY_") > sizeof(name))
		return NULL; /* no such variable can be meant */
	fconfig_env_name(name, sizeof(name), key);
	v = getenv(name);
	return v && *v ? v : NULL;
}

const char *fconfig_get(const fconfig *c, const char *key, fconfig_source *src_out)
{
	const setting *s = (c && key) ? find_setting(c, key) : NULL;
	const char *v;

	if (!key)
		return NULL;
	if (s && s->value[CONFIG_FLAG]) {
		if (src_out)
			*src_out = CONFIG_FLAG;
		return s->value[CONFIG_FLAG];
	}
	v = (s && s->env_set) ? s->value[CONFIG_ENV] : env_value(key);
	if (v) {
		if (src_out)
			*src_out = CONFIG_ENV;
		return v;
	}
	if (s && s->value[CONFIG_FILE]) {
		if (src_out)
			*src_out = CONFIG_FILE;
		return s->value[CONFIG_FILE];
	}
	if (s && s->value[CONFIG_DEFAULT]) {
		if (src_out)
			*src_out = CONFIG_DEFAULT;
		return s->value[CONFIG_DEFAULT];
	}
	return NULL;
}

const char *fconfig_get_str(const fconfig *c, const char *key, const char *def)
{
	const char *v = fconfig_get(c, key, NULL);

	return v ? v : def;
}

/* Where a value came from, for error messages: "--wip-limit",
 * "FACTORY_WIP_LIMIT", the file's name or "the default". */
static void describe_source(char *out, size_t len, const fconfig *c, const char *key, fconfig_source src)
{
	const setting *s = find_setting(c, key);
	char name[ENV_NAME_MAX];

	switch (src) {
	case CONFIG_FLAG:
		fconfig_flag_name(name, sizeof(name), key);
		snprintf(out, len, "--%s", name);
		break;
	case CONFIG_ENV:
		fconfig_env_name(name, sizeof(name), key);
		snprintf(out, len, "%s", name);
		break;
	case CONFIG_FILE:
		snprintf(out, len, "%s", s && s->origin ? s->origin : "the settings file");
		break;
	default:
		snprintf(out, len, "the default");
		break;
	}
}

/* A value as shown in a message: at most SHOWN_VALUE_MAX bytes, control
 * characters as '?'. */
static void show_value(char *out, size_t len, const char *v)
{
	size_t i, n = strlen(v);
	int cut = n > SHOWN_VALUE_MAX;

	if (cut)
		n = SHOWN_VALUE_MAX;
	for (i = 0; i < n && i + 4 < len; i++)
		out[i] = ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
	if (cut && i + 4 <= len) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

static int bad_value(const fconfig *c, const char *key, const char *value, fconfig_source src, const char *expected)
{
	char where[ENV_NAME_MAX + 64], shown[SHOWN_VALUE_MAX + 8];

	describe_source(where, sizeof(where), c, key, src);
	show_value(shown, sizeof(shown), value);
	return ferror_set(FACTORY_ECONFIG, "bad setting %s=%s (from %s): %s", key, shown, where, expected);
}

static const char *trim(const char *s, size_t *len)
{
	size_t n;

	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	*len = n;
	return s;
}

int fconfig_get_long(long *out, const fconfig *c, const char *key, long def, long min, long max)
{
	fconfig_source src = CONFIG_DEFAULT;
	const char *v = fconfig_get(c, key, &src), *s;
	char buf[32], expected[96], *end;
	size_t len, i;
	long n;

	*out = def;
	if (!v)
		return 0;
	if (min == LONG_MIN && max == LONG_MAX)
		snprintf(expected, sizeof(expected), "expected a whole number");
	else
		snprintf(expected, sizeof(expected), "expected a whole number from %ld to %ld", min, max);
	s = trim(v, &len);
	i = (len && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
	if (len == i || len >= sizeof(buf) || !all_in(s + i, len - i, "0123456789"))
		return bad_value(c, key, v, src, expected);
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	n = strtol(buf, &end, 10);
	if (errno || *end || n < min || n > max)
		return bad_value(c, key, v, src, expected);
	*out = n;
	return 0;
}

int fconfig_get_bool(int *out, const fconfig *c, const char *key, int def)
{
	static const char *const yes[] = {"true", "yes", "on", "1", NULL};
	static const char *const no[] = {"false", "no", "off", "0", NULL};
	fconfig_source src = CONFIG_DEFAULT;
	const char *v = fconfig_get(c, key, &src), *s;
	size_t len, i;

	*out = def ? 1 : 0;
	if (!v)
		return 0;
	s = trim(v, &len);
	for (i = 0; yes[i]; i++) {
		if (len == strlen(yes[i]) && !strncasecmp(s, yes[i], len)) {
			*out = 1;
			return 0;
		}
	}
	for (i = 0; no[i]; i++) {
		if (len == strlen(no[i]) && !strncasecmp(s, no[i], len)) {
			*out = 0;
			return 0;
		}
	}
	return bad_value(c, key, v, src, "expected true or false (or yes/no, on/off, 1/0)");
}

int fconfig_require(const char **out, const fconfig *c, const char *key)
{
	const char *v = fconfig_get(c, key, NULL);
	char env[ENV_NAME_MAX], flag[ENV_NAME_MAX];

	*out = NULL;
	if (!v || !*v) {
		fconfig_env_name(env, sizeof(env), key);
		fconfig_flag_name(flag, sizeof(flag), key);
		return ferror_set(FACTORY_ECONFIG, "missing setting %s (set %s or --%s)", key, env, flag);
	}
	*out = v;
	return 0;
}

const cJSON *fconfig_yaml(const fconfig *c)
{
	return c ? c->doc : NULL;
}

const cJSON *fconfig_yaml_path(const fconfig *c, const char *dotted)
{
	const cJSON *node = c ? c->doc : NULL;
	const char *p = dotted, *dot;
	char part[256];
	size_t n;

	if (!node || !dotted || !*dotted)
		return node;
	while (node && *p) {
		dot = strchr(p, '.');
		n = dot ? (size_t)(dot - p) : strlen(p);
		if (n >= sizeof(part) || !cJSON_IsObject(node))
			return NULL;
		memcpy(part, p, n);
		part[n] = '\0';
		node = cJSON_GetObjectItemCaseSensitive(node, part);
		if (!dot)
			break;
		p = dot + 1;
		if (!*p)
			return NULL; /* "a." names nothing */
	}
	return node;
}
