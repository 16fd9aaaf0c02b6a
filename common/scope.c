/*
 * scope.c - a group's projects, each with its own settings: listing (with
 * subgroups), the project's .factory.yml merged over the group's settings,
 * opting out, and walking the projects with one GitLab client.
 */
#include "scope.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "error.h"
#include "log.h"

#define MAX_GROUP_PATH 1024
#define MAX_PROJECT_FILE ((size_t)1 << 20) /* the settings file cap of config.h */
#define PROJECTS_QUERY "include_subgroups=true&archived=false&simple=true&order_by=path&sort=asc"

struct scope {
	char *group;
	scope_project *projects;
	size_t n, alloc;
	size_t enabled; /* taking part as far as known */
	gitlab *gl;     /* borrowed: reads the files on demand */
	fconfig *cfg;   /* the group's settings (a copy) */
	size_t topic_out, file_out, bad;
};

/* ---- the setting ---- */

/* Where a setting's value came from, for messages. */
static void source_words(char *out, size_t len, const char *key, fconfig_source src)
{
	char name[128];

	switch (src) {
	case CONFIG_FLAG:
		fconfig_flag_name(name, sizeof(name), key);
		snprintf(out, len, "--%s", name);
		break;
	case CONFIG_ENV:
		fconfig_env_name(out, len, key);
		break;
	case CONFIG_FILE:
		snprintf(out, len, "the settings file");
		break;
	default:
		snprintf(out, len, "the default");
		break;
	}
}

/* Whether `p` is a group's full path (segments of [A-Za-z0-9_.-] joined by
 * single slashes) or a numeric id. */
static int valid_group_path(const char *p)
{
	size_t seg = 0, len = 0;

	if (!*p)
		return 0;
	for (; *p; p++, len++) {
		if (*p == '/') {
			if (!seg)
				return 0;
			seg = 0;
		} else if (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.') {
			seg++;
		} else {
			return 0;
		}
	}
	return seg > 0 && len <= MAX_GROUP_PATH;
}

int scope_group_from_config(char **group_out, const fconfig *cfg)
{
	fconfig_source src = CONFIG_DEFAULT;
	const char *v = fconfig_get(cfg, "scope", &src), *g;
	char where[160];

	*group_out = NULL;
	if (!v || !*v || !strcmp(v, "project"))
		return 0;
	source_words(where, sizeof(where), "scope", src);
	if (strncmp(v, "group:", 6) != 0)
		return ferror_set(
		        FACTORY_ECONFIG,
		        "bad setting scope=%.200s (from %s): expected project or group:<full path of the group>", v,
		        where);
	g = v + 6;
	if (!valid_group_path(g))
		return ferror_set(FACTORY_ECONFIG,
		                  "bad setting scope=%.200s (from %s): the group's full path is empty or not a GitLab "
		                  "path (letters, digits, '_', '-' and '.', in segments joined by '/')",
		                  v, where);
	if (!(*group_out = strdup(g)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	return 0;
}

/* ---- the list ---- */

static void project_release(scope_project *p)
{
	free(p->path);
	free(p->default_branch);
	fconfig_free(p->cfg);
	memset(p, 0, sizeof(*p));
}

void scope_free(scope *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->n; i++)
		project_release(&s->projects[i]);
	free(s->projects);
	free(s->group);
	fconfig_free(s->cfg);
	free(s);
}

const char *scope_group(const scope *s)
{
	return s->group;
}

size_t scope_count(const scope *s)
{
	return s->n;
}

size_t scope_enabled(const scope *s)
{
	return s->enabled;
}

const scope_project *scope_at(const scope *s, size_t i)
{
	return i < s->n ? &s->projects[i] : NULL;
}

static int has_opt_out_topic(const cJSON *item)
{
	static const char *const keys[] = {"topics", "tag_list", NULL};
	const cJSON *t;
	size_t k;

	for (k = 0; keys[k]; k++) {
		cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(item, keys[k]))
		{
			if (cJSON_IsString(t) && !strcasecmp(t->valuestring, SCOPE_OPT_OUT_TOPIC))
				return 1;
		}
	}
	return 0;
}

/* Keep one listed project: id, path, default branch, the opt-out topic. */
static int collect_project(void *ctx, const cJSON *item)
{
	scope *s = ctx;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
	const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path_with_namespace");
	const cJSON *branch = cJSON_GetObjectItemCaseSensitive(item, "default_branch");
	scope_project *p;

	if (!cJSON_IsNumber(id) || id->valuedouble < 1 || !cJSON_IsString(path) || !*path->valuestring)
		return ferror_set(FACTORY_EINVALID, "GET groups/%s/projects: a project without id or path", s->group);
	if (s->n == s->alloc) {
		size_t n = s->alloc ? s->alloc * 2 : 16;
		scope_project *v = realloc(s->projects, n * sizeof(*v));
		if (!v)
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		s->projects = v;
		s->alloc = n;
	}
	p = &s->projects[s->n];
	memset(p, 0, sizeof(*p));
	p->id = (long)id->valuedouble;
	p->enabled = 1;
	if (!(p->path = strdup(path->valuestring)) ||
	    (cJSON_IsString(branch) && *branch->valuestring && !(p->default_branch = strdup(branch->valuestring)))) {
		project_release(p);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	if (has_opt_out_topic(item)) {
		p->enabled = 0;
		snprintf(p->why, sizeof(p->why), "it has the topic %s", SCOPE_OPT_OUT_TOPIC);
	}
	s->n++;
	return 0;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const scope_project *)a)->path, ((const scope_project *)b)->path);
}

/* ---- a project's own settings ---- */

typedef struct {
	fbuf *buf;
	const char *path;
} file_sink;

static int keep_file(void *ctx, const char *data, size_t len)
{
	file_sink *f = ctx;
	int error = fbuf_put(f->buf, data, len);

	if (error == FACTORY_ETOOBIG)
		return ferror_set(FACTORY_ETOOBIG, "%s/%s is over 1 MiB", f->path, SCOPE_PROJECT_FILE);
	return error;
}

/*
 * Read project `p`'s .factory.yml into `text` (left empty when it has
 * none). A file that is too big leaves the project out (p->error); a
 * GitLab answer other than 404 is returned.
 */
static int read_project_file(fbuf *text, gitlab *gl, scope_project *p)
{
	fbuf ref;
	file_sink sink;
	int error;

	fbuf_reset(text);
	if (!p->default_branch)
		return 0; /* an empty repository has no file */
	fbuf_init(&ref, 4096);
	if ((error = http_escape(&ref, p->default_branch)) < 0) {
		fbuf_release(&ref);
		return error;
	}
	sink.buf = text;
	sink.path = p->path;
	error = gitlab_get_raw(gl, keep_file, &sink, "projects/%ld/repository/files/%s/raw?ref=%s", p->id,
	                       SCOPE_PROJECT_FILE, ref.ptr);
	fbuf_release(&ref);
	if (error == FACTORY_ENOTFOUND) {
		fbuf_reset(text);
		return 0;
	}
	if (error == FACTORY_ETOOBIG || error == FACTORY_EAUTH) {
		/* This project's file, not the group, is the trouble: leave it
		 * out and say so at the end. */
		p->error = error == FACTORY_ETOOBIG ? FACTORY_ECONFIG : error;
		p->enabled = 0;
		snprintf(p->why, sizeof(p->why), "cannot use its %s: %s", SCOPE_PROJECT_FILE, ferror_last());
		fbuf_reset(text);
		return 0;
	}
	if (error == 0)
		p->has_file = 1;
	return error;
}

/* Whether the project's own file (already loaded, so valid) has
 * factory.enabled. */
static int file_sets_enabled(const fbuf *text)
{
	cJSON *doc = NULL;
	const cJSON *f;
	int set = 0;

	if (fconfig_yaml_to_json(&doc, text->ptr, text->len, SCOPE_PROJECT_FILE) < 0)
		return 0;
	f = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "factory") : NULL;
	set = cJSON_IsObject(f) && cJSON_GetObjectItemCaseSensitive(f, "enabled") != NULL;
	cJSON_Delete(doc);
	return set;
}

/* Mark `p` left out for a broken settings file, keeping the message. */
static void broken(scope_project *p)
{
	p->error = FACTORY_ECONFIG;
	p->enabled = 0;
	snprintf(p->why, sizeof(p->why), "%s", ferror_last());
}

/* The project's settings and whether it takes part. */
static int settle_project(scope_project *p, const fconfig *cfg, const fbuf *text)
{
	char name[1100];
	int enabled = 1, error;

	if ((error = fconfig_clone(&p->cfg, cfg)) < 0)
		return error;
	snprintf(name, sizeof(name), "%s/%s", p->path, SCOPE_PROJECT_FILE);
	if (p->has_file) {
		if (memchr(text->ptr, '\0', text->len)) {
			ferror_set(FACTORY_ECONFIG, "bad settings file %s: it holds a NUL byte", name);
			broken(p);
			return 0;
		}
		if ((error = fconfig_load_yaml_string(p->cfg, text->ptr, name)) < 0) {
			if (error != FACTORY_ECONFIG)
				return error;
			broken(p);
			return 0;
		}
	}
	if ((error = fconfig_get_bool(&enabled, p->cfg, "factory.enabled", 1)) < 0) {
		if (error != FACTORY_ECONFIG)
			return error;
		broken(p);
		return 0;
	}
	if (!enabled) {
		fconfig_source src = CONFIG_FILE;
		char where[160];

		p->enabled = 0;
		fconfig_get(p->cfg, "factory.enabled", &src);
		if (src == CONFIG_FILE && p->has_file && file_sets_enabled(text)) {
			snprintf(p->why, sizeof(p->why), "factory.enabled is false in %.400s", name);
		} else if (src == CONFIG_FILE) {
			snprintf(p->why, sizeof(p->why), "factory.enabled is false in the group's settings and %s",
			         p->has_file ? "its own .factory.yml does not say true" : "it has no .factory.yml");
		} else {
			source_words(where, sizeof(where), "factory.enabled", src);
			snprintf(p->why, sizeof(p->why), "factory.enabled is false (from %s)", where);
		}
	}
	return 0;
}

int scope_load(scope **out, gitlab *gl, const fconfig *cfg, const char *group)
{
	scope *s = NULL;
	fbuf path;
	size_t i;
	int error = -1;

	*out = NULL;
	fbuf_init(&path, 4096);
	if (!group || !valid_group_path(group)) {
		error = ferror_set(FACTORY_ECONFIG, "bad group path \"%.200s\"", group ? group : "");
		goto cleanup;
	}
	if (!(s = calloc(1, sizeof(*s))) || !(s->group = strdup(group))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto cleanup;
	}
	s->gl = gl;
	if ((error = fconfig_clone(&s->cfg, cfg)) < 0)
		goto cleanup;
	if ((error = fbuf_puts(&path, "groups/")) < 0 || (error = http_escape(&path, group)) < 0 ||
	    (error = fbuf_puts(&path, "/projects")) < 0)
		goto cleanup;
	if ((error = gitlab_list_each(gl, path.ptr, PROJECTS_QUERY, NULL, 0, collect_project, s)) < 0)
		goto cleanup;
	if (s->n > 1)
		qsort(s->projects, s->n, sizeof(*s->projects), by_path);

	for (i = 0; i < s->n; i++) {
		scope_project *p = &s->projects[i];

		if (!p->enabled) {
			/* Left out by its topic: nothing of its own to read. */
			p->settled = 1;
			s->topic_out++;
			log_info("project %s left out: %s", p->path, p->why);
		} else {
			s->enabled++;
		}
	}
	log_info("group %s: %zu project%s listed, %zu opted out by topic; each one's %s is read when it is first "
	         "needed",
	         group, s->n, s->n == 1 ? "" : "s", s->topic_out, SCOPE_PROJECT_FILE);
	*out = s;
	s = NULL;
	error = 0;
cleanup:
	fbuf_release(&path);
	scope_free(s);
	return error;
}

int scope_settle(scope *s, size_t i)
{
	scope_project *p;
	fbuf text;
	int error;

	if (i >= s->n)
		return ferror_set(FACTORY_EINVALID, "no project %zu in group %s (%zu projects)", i, s->group, s->n);
	p = &s->projects[i];
	if (p->settled)
		return 0;
	fbuf_init(&text, MAX_PROJECT_FILE);
	if ((error = read_project_file(&text, s->gl, p)) < 0)
		goto cleanup;
	if (!p->error && (error = settle_project(p, s->cfg, &text)) < 0) {
		fconfig_free(p->cfg);
		p->cfg = NULL;
		p->enabled = 1;
		p->why[0] = '\0';
		goto cleanup;
	}
	p->settled = 1;
	if (p->error) {
		s->bad++;
		s->enabled--;
		log_warn("project %s left out: %s", p->path, p->why);
	} else if (!p->enabled) {
		s->file_out++;
		s->enabled--;
		log_info("project %s left out: %s", p->path, p->why);
	}
cleanup:
	fbuf_release(&text);
	return error;
}

int scope_settle_all(scope *s)
{
	size_t i;
	int error;

	for (i = 0; i < s->n; i++)
		if ((error = scope_settle(s, i)) < 0)
			return error;
	log_info("group %s: %zu project%s, %zu taking part (%zu opted out by topic, %zu by settings, %zu with a "
	         "settings file that cannot be used)",
	         s->group, s->n, s->n == 1 ? "" : "s", s->enabled, s->topic_out, s->file_out, s->bad);
	return 0;
}

size_t scope_index(const scope *s, long id)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (s->projects[i].id == id)
			return i;
	return SCOPE_NONE;
}

/* ---- the walk ---- */

/* The projects of a walk that failed, and the first failure's story. */
typedef struct {
	size_t failed;
	int first;        /* the first failure's error, 0 while none */
	const char *path; /* its project */
	char msg[600];    /* its message */
} walk_failures;

/* Count project `p` failed with `error` (`msg` says why). */
static void note_failure(walk_failures *f, const scope_project *p, int error, const char *msg)
{
	f->failed++;
	if (!f->first) {
		f->first = error;
		f->path = p->path;
		snprintf(f->msg, sizeof(f->msg), "%s", msg);
	}
}

/* A failure of one project's call that every other project would meet too
 * (said in the log when so). A project left out for its own file's sake
 * (p->error, even a 403 on that file) never stops the walk. */
static int stops_the_walk(int error)
{
	if (error != FACTORY_EAUTH && error != FACTORY_EUPSTREAM && error != FACTORY_ENOMEM)
		return 0;
	log_error("stopping: the other projects would fail the same way");
	return 1;
}

int scope_each(scope *s, gitlab *gl, scope_fn fn, void *ctx)
{
	walk_failures f = {0};
	char *own = NULL;
	size_t i, considered = 0;
	int error, rc = 0;

	if (gitlab_project(gl) && !(own = strdup(gitlab_project(gl))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	for (i = 0; i < s->n; i++) {
		scope_project *p = &s->projects[i];
		char id[32];

		if ((error = scope_settle(s, i)) < 0) {
			/* Its file could not be read: this project fails. */
			log_error("project %s: %s", p->path, ferror_last());
			considered++;
			note_failure(&f, p, error, ferror_last());
			if (stops_the_walk(error))
				break;
			continue;
		}
		if (p->error) {
			considered++;
			note_failure(&f, p, p->error, p->why);
			continue;
		}
		if (!p->enabled)
			continue;
		considered++;
		snprintf(id, sizeof(id), "%ld", p->id);
		if ((error = gitlab_set_project(gl, id)) < 0) {
			rc = error;
			goto cleanup;
		}
		log_info("project %s", p->path);
		error = fn(ctx, gl, p);
		if (error > 0) {
			rc = error;
			goto cleanup;
		}
		if (error < 0) {
			log_error("project %s: %s", p->path, ferror_last());
			note_failure(&f, p, error, ferror_last());
			if (stops_the_walk(error))
				break;
		}
	}
	if (f.first) {
		rc = ferror_set(f.first, "%zu of %zu project%s of group %s failed; the first, %s: %s", f.failed,
		                considered, considered == 1 ? "" : "s", s->group, f.path, f.msg);
	}
cleanup:
	if (gitlab_set_project(gl, own) < 0 && !rc)
		rc = FACTORY_ENOMEM;
	free(own);
	return rc;
}
