/* deps.c - declared dependencies against what the files use (deps.h). */
#define _GNU_SOURCE
#include "deps.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define NAME_MAX_LEN 214

enum { ECO_NPM, ECO_PYPI, ECO_GO, ECO_CARGO, ECO_RUBY, ECO_N };
static const char *const eco_names[ECO_N] = {"npm", "pypi", "go", "cargo", "ruby"};

typedef struct {
	int eco;
	char name[NAME_MAX_LEN + 1];
	char manifest[256];
	char section[40];
	int dev;                    /* a development, test or build section */
	int checkable;              /* may be reported unused */
	int words_only;             /* Gemfile require: false: used only through words */
	char req[NAME_MAX_LEN + 1]; /* Gemfile require: 'other' */
	char mdir[256];             /* the folder the manifest speaks for ("" the root) */
} entry;

typedef struct {
	char **keys;
	size_t cap, n;
} sset;

typedef struct {
	char name[NAME_MAX_LEN + 1];
	char version[64];
} lockpkg;

/* A directory holding source files: its uses are kept under its number too
 * ("npm:x#12"), so a manifest in a subfolder is judged by the files under
 * that folder. */
typedef struct {
	char *path; /* "" for the root, else "a/b" */
	long sources[ECO_N];
	const char *near[ECO_N]; /* the nearest manifest folder of each ecosystem, */
	int near_known[ECO_N];   /* once looked up (NULL: none) */
} srcdir;

/* Steps (folders visited, verdicts asked) the monorepo verdicts may take
 * in all: past it, entries of subfolder manifests are not called unused. */
#define SCOPE_BUDGET 20000000L

struct deps {
	entry *e;
	size_t n;
	sset names;     /* "npm:x", "py:x", "go:x", "rs:x", "rb:x", "w:x", "keep:x", "alias:dist=mod" */
	cJSON *lighter; /* {"eco:name": "instead"} */
	cJSON *aliases; /* {"normalised dist": ["module", ...]} */
	cJSON *bloat;
	cJSON *notes;
	long files, sources[ECO_N], manifests[ECO_N];
	int bundler_require;
	int oom;
	int names_full; /* DEPS_MAX_NAMES reached: a use may be lost */
	srcdir *dirs;   /* directories with sources, at most DEPS_MAX_DIRS */
	size_t ndirs;
	long *dir_slots; /* open addressing over dirs: index + 1, 0 free */
	size_t dir_cap;
	int dirs_full;   /* more directories than DEPS_MAX_DIRS */
	long cur_dir;    /* the directory of the source being scanned, or -1 */
	long scope;      /* has_name looks in this directory only, or -1 */
	long nmanifests; /* manifest files read as manifests */
	long budget;     /* SCOPE_BUDGET left */
};

/* ---- a set of strings ---- */

static unsigned long hash(const char *s)
{
	unsigned long h = 1469598103934665603UL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211UL;
	return h;
}

static int sset_has(const sset *s, const char *k)
{
	size_t i;
	if (!s->cap)
		return 0;
	for (i = hash(k) & (s->cap - 1); s->keys[i]; i = (i + 1) & (s->cap - 1))
		if (!strcmp(s->keys[i], k))
			return 1;
	return 0;
}

static int sset_add(sset *s, const char *k)
{
	size_t i;

	if (s->n >= DEPS_MAX_NAMES)
		return 1;
	if ((s->n + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 1024, j;
		char **nk = calloc(ncap, sizeof(*nk));
		if (!nk)
			return FACTORY_ENOMEM;
		for (j = 0; j < s->cap; j++) {
			if (!s->keys[j])
				continue;
			for (i = hash(s->keys[j]) & (ncap - 1); nk[i]; i = (i + 1) & (ncap - 1))
				;
			nk[i] = s->keys[j];
		}
		free(s->keys);
		s->keys = nk;
		s->cap = ncap;
	}
	for (i = hash(k) & (s->cap - 1); s->keys[i]; i = (i + 1) & (s->cap - 1))
		if (!strcmp(s->keys[i], k))
			return 0;
	if (!(s->keys[i] = strdup(k)))
		return FACTORY_ENOMEM;
	s->n++;
	return 0;
}

static void sset_release(sset *s)
{
	size_t i;
	for (i = 0; i < s->cap; i++)
		free(s->keys[i]);
	free(s->keys);
	memset(s, 0, sizeof(*s));
}

static void put_name(deps *d, const char *k)
{
	int r = sset_add(&d->names, k);
	if (r < 0)
		d->oom = 1;
	else if (r > 0)
		d->names_full = 1;
}

/* Words ("w:"), kept names and aliases hold for the whole tree; a use found
 * in a source file is kept for its directory too. */
static int scoped_prefix(const char *prefix)
{
	return strcmp(prefix, "w:") != 0 && strcmp(prefix, "keep:") != 0;
}

/* Add "<prefix><name[0..len)>" (lower-cased when `lower`). */
static void add_name(deps *d, const char *prefix, const char *name, size_t len, int lower)
{
	char k[NAME_MAX_LEN + 40];
	size_t p = strlen(prefix), i;

	if (!len || len > NAME_MAX_LEN)
		return;
	memcpy(k, prefix, p);
	for (i = 0; i < len; i++)
		k[p + i] = lower ? (char)tolower((unsigned char)name[i]) : name[i];
	k[p + len] = '\0';
	put_name(d, k);
	if (d->cur_dir >= 0 && scoped_prefix(prefix)) {
		snprintf(k + p + len, sizeof(k) - p - len, "#%ld", d->cur_dir);
		put_name(d, k);
	}
}

/* Whether "<prefix><name>" was added: anywhere, or in directory d->scope
 * when that is set (words always anywhere). */
static int has_name(const deps *d, const char *prefix, const char *name)
{
	char k[NAME_MAX_LEN + 40];
	if (strlen(name) > NAME_MAX_LEN)
		return 0;
	if (d->scope >= 0 && scoped_prefix(prefix))
		snprintf(k, sizeof(k), "%s%s#%ld", prefix, name, d->scope);
	else
		snprintf(k, sizeof(k), "%s%s", prefix, name);
	return sset_has(&d->names, k);
}

/* ---- directories ---- */

/* The directory of `path` into out ("" at the root). */
static void dir_of(char *out, size_t cap, const char *path)
{
	const char *s = strrchr(path, '/');
	size_t n = s ? (size_t)(s - path) : 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, path, n);
	out[n] = '\0';
}

/* The number of directory `dir`, added when new; -1 when the table is full
 * (d->dirs_full) or memory ran out (d->oom). */
static long dir_id(deps *d, const char *dir)
{
	size_t i;
	long id;

	if (!d->dir_cap) {
		if (!(d->dir_slots = calloc(DEPS_MAX_DIRS * 2, sizeof(*d->dir_slots))) ||
		    !(d->dirs = calloc(DEPS_MAX_DIRS, sizeof(*d->dirs)))) {
			d->oom = 1;
			return -1;
		}
		d->dir_cap = DEPS_MAX_DIRS * 2;
	}
	for (i = hash(dir) % d->dir_cap; d->dir_slots[i]; i = (i + 1) % d->dir_cap)
		if (!strcmp(d->dirs[d->dir_slots[i] - 1].path, dir))
			return d->dir_slots[i] - 1;
	if (d->ndirs >= DEPS_MAX_DIRS) {
		d->dirs_full = 1;
		return -1;
	}
	if (!(d->dirs[d->ndirs].path = strdup(dir))) {
		d->oom = 1;
		return -1;
	}
	id = (long)d->ndirs++;
	d->dir_slots[i] = id + 1;
	return id;
}

/* Whether directory `dir` is `top` or under it ("" holds everything). */
static int dir_under(const char *dir, const char *top)
{
	size_t n = strlen(top);
	return !n || (!strncmp(dir, top, n) && (dir[n] == '\0' || dir[n] == '/'));
}

/* The folder a manifest speaks for: its directory, or the parent of a
 * "requirements/" folder (requirements/dev.txt belongs to the project). */
static void manifest_dir(char *out, size_t cap, const char *manifest)
{
	const char *s;
	dir_of(out, cap, manifest);
	s = strrchr(out, '/');
	if (!strcmp(s ? s + 1 : out, "requirements"))
		out[s ? (size_t)(s - out) : 0] = '\0';
}

/* ---- words ---- */

static int word_char(int c)
{
	return isalnum(c) || c == '_' || c == '-' || c == '.' || c == '@' || c == '/';
}

/* Every word of text: the whole token, its '/' pieces and its '.' pieces,
 * lower-cased, leading dots dropped. */
static void add_words(deps *d, const char *t, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t s, e, a, b;
		while (i < len && !word_char((unsigned char)t[i]))
			i++;
		s = i;
		while (i < len && word_char((unsigned char)t[i]))
			i++;
		e = i;
		while (s < e && (t[s] == '.' || t[s] == '-'))
			s++;
		while (e > s && (t[e - 1] == '.' || t[e - 1] == '/'))
			e--;
		if (e <= s || e - s > NAME_MAX_LEN)
			continue;
		add_name(d, "w:", t + s, e - s, 1);
		for (a = s; a < e; a = b + 1) {
			for (b = a; b < e && t[b] != '/' && t[b] != '.'; b++)
				;
			if (b - a && b - a < e - s)
				add_name(d, "w:", t + a, b - a, 1);
		}
		/* "@scope/name" also as "@scope" */
		if (t[s] == '@')
			for (a = s; a < e; a++)
				if (t[a] == '/') {
					add_name(d, "w:", t + s, a - s, 1);
					break;
				}
	}
}

/* ---- declared entries ---- */

static int in_table(const char *const *tbl, const char *name)
{
	for (; *tbl; tbl++)
		if (!strcmp(*tbl, name))
			return 1;
	return 0;
}

static const char *const npm_dev_tools[] = {"jest",
                                            "mocha",
                                            "chai",
                                            "vitest",
                                            "karma",
                                            "jasmine",
                                            "ava",
                                            "tap",
                                            "eslint",
                                            "prettier",
                                            "nodemon",
                                            "webpack-dev-server",
                                            "husky",
                                            "lint-staged",
                                            "sinon",
                                            "nyc",
                                            "c8",
                                            "supertest",
                                            "cypress",
                                            "playwright",
                                            "@playwright/test",
                                            "storybook",
                                            "stylelint",
                                            "ts-jest",
                                            "babel-jest",
                                            "@testing-library/react",
                                            "@testing-library/jest-dom",
                                            "jsdom",
                                            "msw",
                                            "standard",
                                            "xo",
                                            NULL};
static const char *const py_dev_tools[] = {
        "pytest",     "black", "flake8",     "pylint",    "mypy",       "ruff",        "isort",          "coverage",
        "tox",        "nox",   "pre-commit", "bandit",    "autopep8",   "yapf",        "pyflakes",       "pycodestyle",
        "hypothesis", "faker", "freezegun",  "responses", "pytest-cov", "pytest-mock", "pytest-asyncio", "pytest-xdist",
        "ipython",    "ipdb",  NULL};
static const char *const rb_dev_tools[] = {
        "rspec",     "rspec-rails", "rubocop",          "rubocop-rails", "rubocop-rspec",     "pry",      "pry-byebug",
        "pry-rails", "byebug",      "simplecov",        "factory_bot",   "factory_bot_rails", "capybara", "webmock",
        "vcr",       "faker",       "database_cleaner", "guard",         "letter_opener",     NULL};
/* Used without an import of their own. */
static const char *const implicit[] = {"typescript", "tslib",   "@babel/core", "@babel/runtime", "regenerator-runtime",
                                       "core-js",    "npm",     "yarn",        "pnpm",           "setuptools",
                                       "wheel",      "pip",     "build",       "twine",          "uv",
                                       "pip-tools",  "poetry",  "poetry-core", "hatchling",      "flit-core",
                                       "rake",       "bundler", "bootsnap",    "tzinfo-data",    "sprockets",
                                       "puma",       NULL};

/* heavy packages with a lighter or built-in replacement */
static const char *const lighter_tbl[][3] = {
        {"npm", "moment",
         "date-fns, dayjs or Intl.DateTimeFormat (moment is in maintenance mode and not tree-shakable)"},
        {"npm", "request", "the built-in fetch (Node 18+)"},
        {"npm", "node-fetch", "the built-in fetch (Node 18+)"},
        {"npm", "left-pad", "String.prototype.padStart"},
        {"npm", "underscore", "built-in Array and Object methods"},
        {"npm", "lodash", "built-in methods, or per-method imports of lodash-es"},
        {"npm", "bluebird", "native Promise"},
        {"npm", "q", "native Promise"},
        {"npm", "uuid", "crypto.randomUUID() (Node 19+, browsers)"},
        {"npm", "rimraf", "fs.rm(path, {recursive: true, force: true})"},
        {"npm", "mkdirp", "fs.mkdir(path, {recursive: true})"},
        {"npm", "object-assign", "Object.assign"},
        {"npm", "es6-promise", "native Promise"},
        {"npm", "querystring", "URLSearchParams"},
        {"pypi", "simplejson", "the json module"},
        {"pypi", "mock", "unittest.mock"},
        {"pypi", "six", "nothing: Python 3 only code needs no six"},
        {"pypi", "future", "nothing: Python 3 only code needs no future"},
        {"pypi", "pytz", "zoneinfo (Python 3.9+)"},
        {"pypi", "enum34", "the enum module"},
        {"pypi", "pathlib2", "pathlib"},
        {"pypi", "typing", "the typing module"},
        {"pypi", "argparse", "the argparse module"},
        {"pypi", "dataclasses", "the dataclasses module (Python 3.7+)"},
        {"pypi", "importlib-metadata", "importlib.metadata (Python 3.8+)"},
        {"go", "github.com/pkg/errors", "the errors package (wrapping with %w, Go 1.13+)"},
        {"go", "golang.org/x/exp/slices", "the slices package (Go 1.21+)"},
        {"go", "golang.org/x/exp/maps", "the maps package (Go 1.21+)"},
        {"go", "github.com/golang/protobuf", "google.golang.org/protobuf"},
        {"cargo", "lazy_static", "std::sync::LazyLock (Rust 1.80+) or OnceLock"},
        {"cargo", "once_cell", "std::sync::OnceLock / LazyLock (Rust 1.70+ / 1.80+)"},
        {"cargo", "failure", "thiserror or anyhow (failure is deprecated)"},
        {"ruby", "json", "the json default gem (no Gemfile line needed)"},
        {NULL, NULL, NULL},
};

/* Python distribution -> module names that differ from the normalised name. */
static const char *const alias_tbl[][2] = {
        {"pyyaml", "yaml"},
        {"beautifulsoup4", "bs4"},
        {"pillow", "PIL"},
        {"scikit_learn", "sklearn"},
        {"scikit_image", "skimage"},
        {"python_dateutil", "dateutil"},
        {"opencv_python", "cv2"},
        {"opencv_python_headless", "cv2"},
        {"protobuf", "google"},
        {"attrs", "attr"},
        {"pyjwt", "jwt"},
        {"python_dotenv", "dotenv"},
        {"pyserial", "serial"},
        {"psycopg2_binary", "psycopg2"},
        {"psycopg_binary", "psycopg"},
        {"dnspython", "dns"},
        {"pycryptodome", "Crypto"},
        {"pycryptodomex", "Cryptodome"},
        {"pyopenssl", "OpenSSL"},
        {"mysqlclient", "MySQLdb"},
        {"pymysql", "pymysql"},
        {"djangorestframework", "rest_framework"},
        {"msgpack_python", "msgpack"},
        {"python_magic", "magic"},
        {"pywin32", "win32api"},
        {"google_api_python_client", "googleapiclient"},
        {"grpcio", "grpc"},
        {"pyzmq", "zmq"},
        {"python_jose", "jose"},
        {"pygithub", "github"},
        {"python_slugify", "slugify"},
        {"ruamel.yaml", "ruamel"},
        {"ruamel_yaml", "ruamel"},
        {"typing_extensions", "typing_extensions"},
        {"markdown", "markdown"},
        {"pymupdf", "fitz"},
        {"python_multipart", "multipart"},
        {"websocket_client", "websocket"},
        {"pyinstaller", "PyInstaller"},
        {"python_levenshtein", "Levenshtein"},
        {"pycairo", "cairo"},
        {"pygobject", "gi"},
        {"setuptools", "pkg_resources"},
        {"discord.py", "discord"},
        {"discord_py", "discord"},
        {NULL, NULL},
};

static void norm_py(char *out, size_t cap, const char *name)
{
	size_t i;
	for (i = 0; name[i] && i + 1 < cap; i++) {
		char c = (char)tolower((unsigned char)name[i]);
		out[i] = (c == '-' || c == '.') ? '_' : c;
	}
	out[i] = '\0';
}

static entry *find_entry(deps *d, int eco, const char *manifest, const char *name, const char *section)
{
	size_t i;
	for (i = 0; i < d->n; i++) {
		entry *e = &d->e[i];
		if (e->eco == eco && !strcmp(e->manifest, manifest) && !strcmp(e->name, name) &&
		    (!section || !strcmp(e->section, section)))
			return e;
	}
	return NULL;
}

static void bloat_to(deps *d, cJSON *arr, const char *kind, int eco, const char *name, const char *manifest,
                     const char *detail)
{
	cJSON *o = cJSON_CreateObject();
	if (!o || !cJSON_AddStringToObject(o, "kind", kind) || !cJSON_AddStringToObject(o, "eco", eco_names[eco]) ||
	    !cJSON_AddStringToObject(o, "name", name) || !cJSON_AddStringToObject(o, "manifest", manifest) ||
	    !cJSON_AddStringToObject(o, "detail", detail)) {
		cJSON_Delete(o);
		d->oom = 1;
		return;
	}
	cJSON_AddItemToArray(arr, o);
}

#define bloat(d, ...) bloat_to(d, (d)->bloat, __VA_ARGS__)

static void note_to(deps *d, cJSON *arr, const char *text)
{
	cJSON *s;
	if (cJSON_GetArraySize(arr) >= 50)
		return;
	if (!(s = cJSON_CreateString(text)))
		d->oom = 1;
	else
		cJSON_AddItemToArray(arr, s);
}

/* Record one declared entry. */
static entry *declare(deps *d, int eco, const char *manifest, const char *name, size_t nlen, const char *section,
                      int dev, int checkable)
{
	char nm[NAME_MAX_LEN + 1];
	entry *e, *other;
	size_t i;

	if (!nlen || nlen > NAME_MAX_LEN || d->n >= DEPS_MAX_DECLARED)
		return NULL;
	for (i = 0; i < nlen; i++)
		if ((unsigned char)name[i] < 0x21 || name[i] == '"' || name[i] == '\'' || name[i] == '`')
			return NULL;
	memcpy(nm, name, nlen);
	nm[nlen] = '\0';
	if ((other = find_entry(d, eco, manifest, nm, NULL))) {
		char detail[200];
		if (!strcmp(other->section, section))
			snprintf(detail, sizeof(detail), "declared twice in %.40s", section);
		else
			snprintf(detail, sizeof(detail), "declared in both %.40s and %.40s", other->section, section);
		if (eco != ECO_CARGO || !strcmp(other->section, section))
			bloat(d, "twice", eco, nm, manifest, detail);
		return NULL;
	}
	e = &d->e[d->n++];
	memset(e, 0, sizeof(*e));
	e->eco = eco;
	snprintf(e->name, sizeof(e->name), "%s", nm);
	snprintf(e->manifest, sizeof(e->manifest), "%s", manifest);
	manifest_dir(e->mdir, sizeof(e->mdir), e->manifest);
	{
		char k[NAME_MAX_LEN + 300];
		snprintf(k, sizeof(k), "d:%d:%s|%s", eco, e->mdir, nm);
		put_name(d, k);
	}
	snprintf(e->section, sizeof(e->section), "%s", section);
	e->dev = dev;
	e->checkable = checkable;
	if (!dev) {
		const char *const *tools = eco == ECO_NPM    ? npm_dev_tools
		                           : eco == ECO_PYPI ? py_dev_tools
		                           : eco == ECO_RUBY ? rb_dev_tools
		                                             : NULL;
		char pn[NAME_MAX_LEN + 1];
		int tool = 0;
		if (eco == ECO_PYPI) {
			snprintf(pn, sizeof(pn), "%s", nm);
			for (i = 0; pn[i]; i++)
				pn[i] = pn[i] == '_' ? '-' : (char)tolower((unsigned char)pn[i]);
			tool = in_table(tools, pn) || !strncmp(pn, "pytest-", 7) || !strncmp(pn, "flake8-", 7);
		} else if (tools) {
			tool = in_table(tools, nm) ||
			       (eco == ECO_NPM && (!strncmp(nm, "@types/", 7) || !strncmp(nm, "eslint-plugin-", 14) ||
			                           !strncmp(nm, "@storybook/", 11)));
		}
		if (tool)
			bloat(d, "dev_in_runtime", eco, nm, manifest,
			      "a test, lint or build tool in the runtime dependencies: move it to the development "
			      "ones");
	}
	for (i = 0; lighter_tbl[i][0]; i++)
		if (!strcmp(lighter_tbl[i][0], eco_names[eco]) && !strcmp(lighter_tbl[i][1], nm))
			bloat(d, "lighter", eco, nm, manifest, lighter_tbl[i][2]);
	d->manifests[eco]++;
	return e;
}

/* ---- manifests ---- */

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static void parse_package_json(deps *d, const char *path, const char *text, size_t len)
{
	static const char *const sections[] = {"dependencies", "devDependencies", "optionalDependencies",
	                                       "peerDependencies", NULL};
	cJSON *pkg = cJSON_ParseWithLength(text, len), *it;
	const char *own;
	char *rest;
	int s;

	if (!cJSON_IsObject(pkg)) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%.300s does not parse as JSON: not read", path);
		note_to(d, d->notes, msg);
		cJSON_Delete(pkg);
		return;
	}
	own = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(pkg, "name"))
	              ? cJSON_GetObjectItemCaseSensitive(pkg, "name")->valuestring
	              : "";
	for (s = 0; sections[s]; s++) {
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pkg, sections[s]))
		{
			entry *e;
			if (!it->string)
				continue;
			e = declare(d, ECO_NPM, path, it->string, strlen(it->string), sections[s], s != 0, s < 2);
			/* a package that is itself a tool's plugin keeps the tool at run time */
			if (e && s == 0 && *own && strstr(own, e->name))
				cJSON_DeleteItemFromArray(d->bloat, cJSON_GetArraySize(d->bloat) - 1);
		}
		cJSON_DeleteItemFromObjectCaseSensitive(pkg, sections[s]);
	}
	/* scripts, config keys (jest, eslintConfig, prettier, babel, ...) as words */
	if ((rest = cJSON_PrintUnformatted(pkg))) {
		add_words(d, rest, strlen(rest));
		free(rest);
	}
	cJSON_Delete(pkg);
}

/* The PEP 508 name at the start of `s` (after spaces and a quote). */
static size_t pep508_name(const char **start, const char *s, const char *end)
{
	const char *p;
	while (s < end && (*s == ' ' || *s == '\t' || *s == '"' || *s == '\''))
		s++;
	for (p = s; p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'); p++)
		;
	*start = s;
	return (size_t)(p - s);
}

static int dev_file_name(const char *path)
{
	char low[512];
	size_t i;
	snprintf(low, sizeof(low), "%s", path);
	for (i = 0; low[i]; i++)
		low[i] = (char)tolower((unsigned char)low[i]);
	return strstr(low, "dev") || strstr(low, "test") || strstr(low, "lint") || strstr(low, "doc") ||
	       strstr(low, "ci") || strstr(low, "build");
}

static void parse_requirements(deps *d, const char *path, const char *text, size_t len)
{
	const char *line = text, *end = text + len;
	int dev = dev_file_name(path);

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *ns;
		size_t n;
		const char *p = line;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if (p < le && *p != '#' && *p != '-' && !memmem(p, (size_t)(le - p), "://", 3) &&
		    (n = pep508_name(&ns, p, le)) > 0)
			declare(d, ECO_PYPI, path, ns, n, dev ? "requirements (development)" : "requirements", dev, 1);
		line = le + 1;
	}
}

/* Minimal TOML: the table header of each line, keys, and strings in arrays.
 * `kind` 'p' pyproject.toml / Pipfile, 'c' Cargo.toml. */
static void parse_toml(deps *d, const char *path, const char *text, size_t len, int kind)
{
	const char *line = text, *end = text + len;
	char table[256] = "";
	int in_array = 0, array_dev = 0, array_checkable = 1;
	char array_section[40] = "";

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if (in_array) {
			/* strings of a dependency array, until "]" */
			const char *q = p;
			while (q < le) {
				if (*q == '"' || *q == '\'') {
					const char *ns;
					size_t n = pep508_name(&ns, q + 1, le);
					const char *close = memchr(q + 1, *q, (size_t)(le - q - 1));
					if (n)
						declare(d, ECO_PYPI, path, ns, n, array_section, array_dev,
						        array_checkable);
					q = close ? close + 1 : le;
				} else if (*q == ']') {
					in_array = 0;
					break;
				} else if (*q == '#') {
					break;
				} else {
					q++;
				}
			}
			line = le + 1;
			continue;
		}
		if (p < le && *p == '[') {
			const char *c = memchr(p, ']', (size_t)(le - p));
			size_t n = c ? (size_t)(c - p - 1) : 0;
			if (p + 1 < le && p[1] == '[')
				n = 0; /* an array of tables */
			snprintf(table, sizeof(table), "%.*s", (int)(n < 255 ? n : 255), p + 1);
			if (kind == 'p')
				add_words(d, table, strlen(table));
			line = le + 1;
			continue;
		}
		if (p < le && *p != '#') {
			const char *k = p, *ke, *eq;
			while (p < le &&
			       (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.' || *p == '"'))
				p++;
			ke = p;
			eq = memchr(p, '=', (size_t)(le - p));
			if (*k == '"') {
				k++;
				while (ke > k && (ke[-1] == '"'))
					ke--;
			}
			if (eq && ke > k) {
				size_t kn = (size_t)(ke - k);
				const char *dot = memchr(k, '.', kn);
				const char *v = eq + 1;
				while (v < le && *v == ' ')
					v++;
				if (kind == 'c') {
					int dep = 0, dev = 0;
					const char *t = strrchr(table, '.');
					const char *last = t ? t + 1 : table;
					if (!strcmp(table, "workspace.dependencies"))
						dep = 1, last = table;
					else if (!strcmp(last, "dependencies") && strncmp(table, "workspace", 9) != 0)
						dep = 1;
					else if (!strcmp(last, "dev-dependencies") ||
					         !strcmp(last, "build-dependencies"))
						dep = 1, dev = 1;
					if (dep)
						declare(d, ECO_CARGO, path, k, dot ? (size_t)(dot - k) : kn, last, dev,
						        1);
				} else {
					int poetry_dep = !strcmp(table, "tool.poetry.dependencies");
					int poetry_dev =
					        !strcmp(table, "tool.poetry.dev-dependencies") ||
					        (!strncmp(table, "tool.poetry.group.", 18) && strlen(table) > 31 &&
					         !strcmp(table + strlen(table) - 13, ".dependencies"));
					int pip_dep = !strcmp(table, "packages"),
					    pip_dev = !strcmp(table, "dev-packages");
					if ((poetry_dep || poetry_dev || pip_dep || pip_dev) &&
					    !(kn == 6 && !strncmp(k, "python", 6)))
						declare(d, ECO_PYPI, path, k, kn,
						        poetry_dev || pip_dev ? "dev" : "dependencies",
						        poetry_dev || pip_dev, 1);
					else if (v < le && *v == '[' &&
					         ((!strcmp(table, "project") && kn == 12 &&
					           !strncmp(k, "dependencies", 12)) ||
					          !strcmp(table, "project.optional-dependencies") ||
					          !strcmp(table, "dependency-groups") ||
					          (!strcmp(table, "build-system") && kn == 8 &&
					           !strncmp(k, "requires", 8)))) {
						int rt = !strcmp(table, "project");
						snprintf(array_section, sizeof(array_section), "%s",
						         rt                               ? "dependencies"
						         : !strcmp(table, "build-system") ? "build-system"
						                                          : "optional");
						array_dev = !rt;
						array_checkable = strcmp(table, "build-system") != 0;
						in_array = 1;
						line = v + 1;
						continue;
					} else {
						add_words(d, line, (size_t)(le - line));
					}
				}
			} else if (kind == 'p') {
				add_words(d, line, (size_t)(le - line));
			}
		}
		line = le + 1;
	}
	/* [dependencies.<name>] tables */
	if (kind == 'c') {
		const char *h = text;
		while ((h = memmem(h, (size_t)(end - h), "\n[", 2))) {
			static const char *const pre[] = {"dependencies.", "dev-dependencies.", "build-dependencies.",
			                                  "workspace.dependencies.", NULL};
			int i;
			h += 2;
			for (i = 0; pre[i]; i++) {
				size_t pl = strlen(pre[i]);
				if ((size_t)(end - h) > pl && !strncmp(h, pre[i], pl)) {
					const char *ns = h + pl, *ne = ns;
					while (ne < end && *ne != ']' && *ne != '\n')
						ne++;
					if (ne < end && *ne == ']')
						declare(d, ECO_CARGO, path, ns, (size_t)(ne - ns),
						        i == 3 ? "workspace.dependencies"
						        : i    ? pre[i]
						               : "dependencies",
						        i == 1 || i == 2, 1);
				}
			}
		}
	}
}

/* One requirement of setup.cfg (PEP 508 at the start of [p, le)). */
static void setup_cfg_req(deps *d, const char *path, const char *p, const char *le, const char *section, int dev,
                          int checkable)
{
	const char *ns;
	size_t n;
	while (p < le && (*p == ' ' || *p == '\t'))
		p++;
	if (p >= le || *p == '#' || *p == ';' || *p == '-' || memmem(p, (size_t)(le - p), "://", 3))
		return;
	n = pep508_name(&ns, p, le);
	if (n && !(ns + n < le && ns[n] == ':')) /* "file: requirements.txt" */
		declare(d, ECO_PYPI, path, ns, n, section, dev, checkable);
}

/* setup.cfg: [options] install_requires, tests_require, setup_requires and
 * [options.extras_require], each a value after "=" and indented lines below
 * it; every other line (tool settings) as words. */
static void parse_setup_cfg(deps *d, const char *path, const char *text, size_t len)
{
	const char *line = text, *end = text + len;
	char section[64] = "";
	const char *list = NULL; /* the dependency list being read, or NULL */
	int dev = 0, checkable = 1;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if (p == le || *p == '#' || *p == ';') {
			line = le + 1;
			continue;
		}
		if (p > line && list) {
			setup_cfg_req(d, path, p, le, list, dev, checkable);
			line = le + 1;
			continue;
		}
		list = NULL;
		if (p == line && *p == '[') {
			const char *c = memchr(p, ']', (size_t)(le - p));
			size_t n = c ? (size_t)(c - p - 1) : 0;
			snprintf(section, sizeof(section), "%.*s", (int)(n < 63 ? n : 63), p + 1);
			add_words(d, section, strlen(section));
		} else if (p == line) {
			const char *k = p, *eq = p;
			size_t kn;
			while (eq < le && *eq != '=' && *eq != ':')
				eq++;
			for (kn = (size_t)(eq - k); kn && (k[kn - 1] == ' ' || k[kn - 1] == '\t'); kn--)
				;
			if (eq < le && !strcmp(section, "options") &&
			    ((kn == 16 && !strncmp(k, "install_requires", 16)) ||
			     (kn == 13 && !strncmp(k, "tests_require", 13)) ||
			     (kn == 14 && !strncmp(k, "setup_requires", 14)))) {
				list = kn == 16 ? "install_requires" : kn == 13 ? "tests_require" : "setup_requires";
				dev = kn != 16;
				checkable = kn != 14;
			} else if (eq < le && !strcmp(section, "options.extras_require") && kn) {
				list = "extras_require";
				dev = 1;
				checkable = 1;
			}
			if (list)
				setup_cfg_req(d, path, eq + 1, le, list, dev, checkable);
			else
				add_words(d, line, (size_t)(le - line));
		} else {
			add_words(d, line, (size_t)(le - line));
		}
		line = le + 1;
	}
}

static void parse_go_mod(deps *d, const char *path, const char *text, size_t len)
{
	const char *line = text, *end = text + len;
	int block = 0;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line, *ns;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if (!block && (size_t)(le - p) >= 7 && !strncmp(p, "require", 7)) {
			p += 7;
			while (p < le && (*p == ' ' || *p == '\t'))
				p++;
			if (p < le && *p == '(') {
				block = 1;
				line = le + 1;
				continue;
			}
		} else if (!block && (size_t)(le - p) >= 5 && !strncmp(p, "tool", 4) &&
		           (p[4] == ' ' || p[4] == '\t' || p[4] == '(')) {
			add_words(d, p + 4, (size_t)(le - p - 4));
			line = le + 1;
			continue;
		} else if (!block) {
			line = le + 1;
			continue;
		}
		if (block && p < le && *p == ')') {
			block = 0;
			line = le + 1;
			continue;
		}
		ns = p;
		while (p < le && *p != ' ' && *p != '\t')
			p++;
		if (p > ns && memchr(ns, '.', (size_t)(p - ns)) && !memmem(p, (size_t)(le - p), "// indirect", 11))
			declare(d, ECO_GO, path, ns, (size_t)(p - ns), "require", 0, 1);
		line = le + 1;
	}
}

static void parse_gemfile(deps *d, const char *path, const char *text, size_t len)
{
	const char *line = text, *end = text + len;
	int depth = 0, group_depth = -1;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line;
		size_t ll;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		ll = (size_t)(le - p);
		if (ll >= 4 && !strncmp(p, "gem", 3) && (p[3] == ' ' || p[3] == '(')) {
			const char *q = p + 4, *ns, *ne;
			while (q < le && (*q == ' ' || *q == '('))
				q++;
			if (q < le && (*q == '\'' || *q == '"')) {
				char quote = *q++;
				ns = q;
				ne = memchr(q, quote, (size_t)(le - q));
				if (ne) {
					int dev = group_depth >= 0 || memmem(ne, (size_t)(le - ne), "group:", 6) ||
					          memmem(ne, (size_t)(le - ne), ":group", 6);
					entry *e = declare(d, ECO_RUBY, path, ns, (size_t)(ne - ns),
					                   dev ? "group" : "default", dev, 1);
					const char *rq = memmem(ne, (size_t)(le - ne), "require:", 8);
					if (e && rq) {
						rq += 8;
						while (rq < le && *rq == ' ')
							rq++;
						if ((size_t)(le - rq) >= 5 && !strncmp(rq, "false", 5))
							e->words_only = 1;
						else if (rq < le && (*rq == '\'' || *rq == '"')) {
							const char *re = memchr(rq + 1, *rq, (size_t)(le - rq - 1));
							if (re && (size_t)(re - rq - 1) <= NAME_MAX_LEN)
								snprintf(e->req, sizeof(e->req), "%.*s",
								         (int)(re - rq - 1), rq + 1);
						}
					}
				}
			}
		}
		/* do ... end blocks: a group block makes its gems development ones */
		if (ll >= 3 &&
		    (memmem(p, ll, " do", 3) && (ll < 3 || !strncmp(le - 2, "do", 2) || memmem(p, ll, " do |", 5)))) {
			if (ll >= 5 && !strncmp(p, "group", 5) && group_depth < 0)
				group_depth = depth;
			depth++;
		} else if (ll >= 3 && !strncmp(p, "end", 3) && (ll == 3 || !isalnum((unsigned char)p[3]))) {
			if (depth > 0)
				depth--;
			if (group_depth == depth)
				group_depth = -1;
		}
		line = le + 1;
	}
}

/* Lock files: packages at several versions. */
static int lock_cmp(const void *a, const void *b)
{
	const lockpkg *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->version, y->version);
}

static void lock_report(deps *d, int eco, const char *path, lockpkg *pk, size_t n)
{
	size_t i, j, dups = 0;
	char detail[1200];
	size_t dl = 0;
	struct {
		size_t at, count;
	} top[10];
	size_t ntop = 0, k;

	if (!n)
		return;
	qsort(pk, n, sizeof(*pk), lock_cmp);
	for (i = 0; i < n; i = j) {
		size_t versions = 1;
		for (j = i + 1; j < n && !strcmp(pk[j].name, pk[i].name); j++)
			if (strcmp(pk[j].version, pk[j - 1].version) != 0)
				versions++;
		if (versions < 2)
			continue;
		dups++;
		for (k = ntop; k > 0 && top[k - 1].count < versions; k--)
			if (k < 10)
				top[k] = top[k - 1];
		if (k < 10) {
			top[k].at = i;
			top[k].count = versions;
			if (ntop < 10)
				ntop++;
		}
	}
	if (!dups)
		return;
	dl = (size_t)snprintf(detail, sizeof(detail), "%zu package%s locked at several versions (", dups,
	                      dups == 1 ? "" : "s");
	for (k = 0; k < ntop && dl < sizeof(detail) - 120; k++)
		dl += (size_t)snprintf(detail + dl, sizeof(detail) - dl, "%s%.80s x%zu", k ? ", " : "",
		                       pk[top[k].at].name, top[k].count);
	snprintf(detail + dl, sizeof(detail) - dl, "%s): deduplicate (npm dedupe, cargo update -p)",
	         dups > ntop ? ", ..." : "");
	bloat(d, "lock_duplicates", eco, base_name(path), path, detail);
}

static void parse_lock(deps *d, const char *path, const char *text, size_t len)
{
	const char *b = base_name(path);
	lockpkg *pk = calloc(20000, sizeof(*pk));
	size_t n = 0;
	int eco = ECO_NPM;

	if (!pk) {
		d->oom = 1;
		return;
	}
	if (!strcmp(b, "package-lock.json")) {
		cJSON *j = cJSON_ParseWithLength(text, len), *it;
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "packages"))
		{
			const char *key = it->string, *nm = key ? strstr(key, "node_modules/") : NULL, *last = nm;
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "version");
			while (last && (nm = strstr(last + 13, "node_modules/")))
				last = nm;
			if (!last || !cJSON_IsString(v) || n >= 20000 || strlen(last + 13) > NAME_MAX_LEN)
				continue;
			snprintf(pk[n].name, sizeof(pk[n].name), "%s", last + 13);
			snprintf(pk[n].version, sizeof(pk[n].version), "%s", v->valuestring);
			n++;
		}
		cJSON_Delete(j);
	} else if (!strcmp(b, "pnpm-lock.yaml")) {
		/* "packages:" then "  /name@1.0.0(peer):" (v6), "  name@1.0.0:" (v9)
		 * or "  /name/1.0.0_peer:" (v5), "@scope/" first for scoped ones */
		const char *line = text, *end = text + len;
		int in_pk = 0;
		while (line < end && n < 20000) {
			const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line;
			size_t ll = (size_t)(le - line);
			if (ll && ll < 1000 && le[-1] == '\r')
				ll--;
			if (ll && *p != ' ') {
				in_pk = ll >= 9 && !strncmp(p, "packages:", 9);
			} else if (in_pk && ll > 4 && p[0] == ' ' && p[1] == ' ' && p[2] != ' ' && p[ll - 1] == ':') {
				const char *s = p + 2, *e = p + ll - 1, *sep, *v;
				if (*s == '\'' || *s == '"') {
					s++;
					if (e > s && (e[-1] == '\'' || e[-1] == '"'))
						e--;
				}
				if (s < e && *s == '/')
					s++;
				sep = s;
				if (sep < e && *sep == '@')
					while (++sep < e && *sep != '/')
						;
				if (sep < e)
					sep++;
				while (sep < e && *sep != '@' && *sep != '/')
					sep++;
				for (v = sep + 1; v < e && *v != '(' && *v != '_'; v++)
					;
				if (sep < e && sep > s && (size_t)(sep - s) <= NAME_MAX_LEN && v > sep + 1) {
					snprintf(pk[n].name, sizeof(pk[n].name), "%.*s", (int)(sep - s), s);
					snprintf(pk[n].version, sizeof(pk[n].version), "%.*s",
					         (int)(v - sep - 1 < 63 ? v - sep - 1 : 63), sep + 1);
					n++;
				}
			}
			line = le + 1;
		}
	} else {
		/* yarn.lock v1 ("name@range, name@range:" then "  version ...") and
		 * Cargo.lock (name = "x" then version = "y") */
		const char *line = text, *end = text + len;
		char cur[NAME_MAX_LEN + 1] = "";
		eco = !strcmp(b, "Cargo.lock") ? ECO_CARGO : ECO_NPM;
		while (line < end && n < 20000) {
			const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line;
			size_t ll = (size_t)(le - line);
			if (eco == ECO_CARGO) {
				if (ll > 8 && !strncmp(p, "name = \"", 8)) {
					const char *q = memchr(p + 8, '"', ll - 8);
					if (q && (size_t)(q - p - 8) <= NAME_MAX_LEN)
						snprintf(cur, sizeof(cur), "%.*s", (int)(q - p - 8), p + 8);
				} else if (ll > 11 && !strncmp(p, "version = \"", 11) && cur[0]) {
					const char *q = memchr(p + 11, '"', ll - 11);
					if (q) {
						snprintf(pk[n].name, sizeof(pk[n].name), "%s", cur);
						snprintf(pk[n].version, sizeof(pk[n].version), "%.*s",
						         (int)(q - p - 11 < 63 ? q - p - 11 : 63), p + 11);
						n++;
					}
					cur[0] = '\0';
				}
			} else if (ll && *p != ' ' && *p != '#' && p[ll - 1] == ':') {
				const char *s = p, *at;
				if (*s == '"')
					s++;
				at = memchr(s + 1, '@', (size_t)(le - s - 1));
				if (at && (size_t)(at - s) <= NAME_MAX_LEN && at > s)
					snprintf(cur, sizeof(cur), "%.*s", (int)(at - s), s);
				else
					cur[0] = '\0';
			} else if (ll > 10 && !strncmp(p, "  version ", 10) && cur[0]) {
				const char *v = p + 10;
				size_t vl = ll - 10;
				if (*v == '"')
					v++, vl = vl >= 2 ? vl - 2 : 0;
				snprintf(pk[n].name, sizeof(pk[n].name), "%s", cur);
				snprintf(pk[n].version, sizeof(pk[n].version), "%.*s", (int)(vl < 63 ? vl : 63), v);
				n++;
				cur[0] = '\0';
			}
			line = le + 1;
		}
	}
	lock_report(d, eco, path, pk, n);
	free(pk);
}

/* ---- sources ---- */

static void npm_spec(deps *d, const char *s, size_t n)
{
	size_t i, end;
	if (n && s[0] == '~')
		s++, n--;
	if (!n || s[0] == '.' || s[0] == '/' || s[0] == '#' || memmem(s, n, ":", 1) || s[0] == '$' || s[0] == '{')
		return;
	for (i = 0; i < n && s[i] != '/'; i++)
		;
	end = i;
	if (s[0] == '@' && i < n)
		for (end = i + 1; end < n && s[end] != '/'; end++)
			;
	add_name(d, "npm:", s, end, 0);
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* The string literal at p (quote included), its content into *s, *n. */
static int quoted(const char **s, size_t *n, const char *p, const char *end)
{
	const char *q;
	if (p >= end || (*p != '\'' && *p != '"' && *p != '`'))
		return 0;
	q = memchr(p + 1, *p, (size_t)(end - p - 1));
	if (!q || q - p - 1 > NAME_MAX_LEN * 2)
		return 0;
	*s = p + 1;
	*n = (size_t)(q - p - 1);
	return 1;
}

static int kw_before(const char *text, const char *p, const char *kw)
{
	size_t k = strlen(kw);
	const char *b;

	if ((size_t)(p - text) < k || memcmp(p - k, kw, k) != 0)
		return 0;
	if ((size_t)(p - text) == k)
		return 1;
	b = p - k - 1; /* the byte before the keyword: not part of a longer name */
	return !(isalnum((unsigned char)*b) || *b == '_' || *b == '.' || *b == '$');
}

static void scan_js(deps *d, const char *text, size_t len, int css)
{
	const char *end = text + len, *p;

	for (p = text; p < end; p++) {
		const char *q, *s;
		size_t n;
		if (*p != '\'' && *p != '"' && *p != '`')
			continue;
		/* what stands before the quote: import, from, require(, import(, @import, @use, url( */
		q = p;
		while (q > text && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n' || q[-1] == '\r'))
			q--;
		if (q > text && q[-1] == '(') {
			const char *r = q - 1;
			while (r > text && (r[-1] == ' ' || r[-1] == '\t'))
				r--;
			if (!(kw_before(text, r, "require") || kw_before(text, r, "import") ||
			      kw_before(text, r, "resolve") || kw_before(text, r, "mock") ||
			      kw_before(text, r, "requireActual") || (css && kw_before(text, r, "url"))))
				goto next;
		} else if (!(kw_before(text, q, "from") || kw_before(text, q, "import") ||
		             (css && (kw_before(text, q, "@import") || kw_before(text, q, "@use") ||
		                      kw_before(text, q, "@forward"))) ||
		             (q - text >= 6 && !memcmp(q - 6, "types=", 6)))) {
			goto next;
		}
		if (quoted(&s, &n, p, end))
			npm_spec(d, s, n);
	next:
		if (quoted(&s, &n, p, end))
			p = s + n; /* past the literal */
	}
}

static void py_module(deps *d, const char *s, const char *end)
{
	const char *e = s;
	while (e < end && (isalnum((unsigned char)*e) || *e == '_'))
		e++;
	if (e > s)
		add_name(d, "py:", s, (size_t)(e - s), 0);
}

static void scan_py(deps *d, const char *text, size_t len)
{
	const char *line = text, *end = text + len;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line, *q;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(le - p) > 7 && !strncmp(p, "import ", 7)) {
			/* import a.b as c, d */
			p += 7;
			while (p < le) {
				p = skip_ws(p, le);
				py_module(d, p, le);
				q = memchr(p, ',', (size_t)(le - p));
				if (!q)
					break;
				p = q + 1;
			}
		} else if ((size_t)(le - p) > 5 && !strncmp(p, "from ", 5)) {
			p = skip_ws(p + 5, le);
			if (p < le && *p != '.')
				py_module(d, p, le);
		}
		/* import_module("x"), __import__("x"), and every string literal's words */
		for (q = line; q < le; q++) {
			const char *s;
			size_t n;
			if ((*q == '\'' || *q == '"') && quoted(&s, &n, q, le)) {
				const char *b = q;
				while (b > line && (b[-1] == ' ' || b[-1] == '('))
					b--;
				if (kw_before(line, b, "import_module") || kw_before(line, b, "__import__"))
					py_module(d, s, s + n);
				add_words(d, s, n);
				q = s + n;
			}
		}
		line = le + 1;
	}
}

static void go_import(deps *d, const char *s, size_t n)
{
	size_t i;
	for (i = 1; i <= n; i++)
		if (i == n || s[i] == '/')
			add_name(d, "go:", s, i, 0);
}

static void scan_go(deps *d, const char *text, size_t len)
{
	const char *line = text, *end = text + len;
	int block = 0;

	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *le = nl ? nl : end, *p = line, *q, *s;
		size_t n;
		while (p < le && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(le - p) > 13 && !strncmp(p, "//go:generate", 13))
			add_words(d, p + 13, (size_t)(le - p - 13));
		if (!block && (size_t)(le - p) > 6 && !strncmp(p, "import", 6) &&
		    (p[6] == ' ' || p[6] == '\t' || p[6] == '(')) {
			p = skip_ws(p + 6, le);
			if (p < le && *p == '(') {
				block = 1;
				p++;
			}
		} else if (!block) {
			line = le + 1;
			continue;
		}
		if (block && (q = memchr(p, ')', (size_t)(le - p))) && !memchr(p, '"', (size_t)(q - p)))
			block = 0;
		for (q = p; q < le; q++)
			if (*q == '"' || *q == '`') {
				if (quoted(&s, &n, q, le))
					go_import(d, s, n);
				break;
			} else if (*q == '/' && q + 1 < le && q[1] == '/') {
				break;
			}
		if (block && memchr(p, ')', (size_t)(le - p)) && !memchr(p, '"', (size_t)(le - p)))
			block = 0;
		line = le + 1;
	}
}

static void scan_rs(deps *d, const char *text, size_t len)
{
	const char *end = text + len, *p = text;

	while (p < end) {
		const char *s, *e, *a;
		if (!(isalpha((unsigned char)*p) || *p == '_')) {
			p++;
			continue;
		}
		s = p;
		while (p < end && (isalnum((unsigned char)*p) || *p == '_'))
			p++;
		e = p;
		if (s > text && (isalnum((unsigned char)s[-1]) || s[-1] == '_'))
			continue;
		a = skip_ws(e, end);
		if ((size_t)(e - s) == 3 && !memcmp(s, "use", 3)) {
			const char *n = a, *ne;
			if (end - n >= 2 && n[0] == ':' && n[1] == ':')
				n += 2;
			for (ne = n; ne < end && (isalnum((unsigned char)*ne) || *ne == '_'); ne++)
				;
			add_name(d, "rs:", n, (size_t)(ne - n), 0);
		} else if ((size_t)(e - s) == 5 && !memcmp(s, "crate", 5) && s >= text + 7 &&
		           !memcmp(s - 7, "extern ", 7)) {
			const char *n = a, *ne = n;
			while (ne < end && (isalnum((unsigned char)*ne) || *ne == '_'))
				ne++;
			add_name(d, "rs:", n, (size_t)(ne - n), 0);
		} else if (end - a >= 2 && a[0] == ':' && a[1] == ':' &&
		           !(s >= text + 2 && s[-1] == ':' && s[-2] == ':')) {
			add_name(d, "rs:", s, (size_t)(e - s), 0);
		}
	}
}

static void scan_rb(deps *d, const char *text, size_t len)
{
	const char *end = text + len, *p;

	if (memmem(text, len, "Bundler.require", 15))
		d->bundler_require = 1;
	for (p = text; p < end; p++) {
		const char *q, *s;
		size_t n, i;
		if (*p != '\'' && *p != '"')
			continue;
		q = p;
		while (q > text && (q[-1] == ' ' || q[-1] == '('))
			q--;
		if (quoted(&s, &n, p, end)) {
			if (kw_before(text, q, "require") || kw_before(text, q, "add_dependency") ||
			    kw_before(text, q, "add_runtime_dependency") ||
			    kw_before(text, q, "add_development_dependency"))
				for (i = 1; i <= n; i++)
					if (i == n || s[i] == '/')
						add_name(d, "rb:", s, i, 0);
			p = s + n;
		}
	}
}

/* ---- files ---- */

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

static int src_eco(const char *b)
{
	static const char *const js[] = {".js",  ".jsx",    ".ts",    ".tsx", ".mjs",  ".cjs",  ".mts",  ".cts",
	                                 ".vue", ".svelte", ".astro", ".css", ".scss", ".sass", ".less", NULL};
	int i;
	for (i = 0; js[i]; i++)
		if (ends_with(b, js[i]))
			return ECO_NPM;
	if (ends_with(b, ".py") || ends_with(b, ".pyi"))
		return ECO_PYPI;
	if (ends_with(b, ".go"))
		return ECO_GO;
	if (ends_with(b, ".rs"))
		return ECO_CARGO;
	if (ends_with(b, ".rb") || ends_with(b, ".rake") || ends_with(b, ".ru") || ends_with(b, ".gemspec") ||
	    !strcmp(b, "Rakefile"))
		return ECO_RUBY;
	return -1;
}

int deps_file_kind(const char *path)
{
	const char *b = base_name(path);
	static const char *const cfg_ext[] = {".json", ".json5", ".yml",        ".yaml", ".toml", ".ini",
	                                      ".cfg",  ".conf",  ".sh",         ".bash", ".mk",   ".env",
	                                      ".html", ".xml",   ".properties", ".txt",  NULL};
	int i;

	if (!strcmp(b, "package.json") || !strcmp(b, "pyproject.toml") || !strcmp(b, "Pipfile") ||
	    !strcmp(b, "go.mod") || !strcmp(b, "Cargo.toml") || !strcmp(b, "Gemfile") || !strcmp(b, "setup.cfg") ||
	    (!strncmp(b, "requirements", 12) && ends_with(b, ".txt")) ||
	    (ends_with(b, ".txt") && strstr(path, "requirements/")))
		return 'm';
	if (!strcmp(b, "package-lock.json") || !strcmp(b, "yarn.lock") || !strcmp(b, "Cargo.lock") ||
	    !strcmp(b, "pnpm-lock.yaml"))
		return 'l';
	if (!strcmp(b, "go.sum") || !strcmp(b, "Gemfile.lock") || !strcmp(b, "poetry.lock") ||
	    !strcmp(b, "Pipfile.lock") || !strcmp(b, "pnpm-lock.yaml") || !strcmp(b, "npm-shrinkwrap.json") ||
	    !strcmp(b, "composer.lock") || ends_with(b, ".lock") || ends_with(b, ".md") || ends_with(b, ".map") ||
	    ends_with(b, ".min.js"))
		return 0;
	if (src_eco(b) >= 0)
		return 's';
	for (i = 0; cfg_ext[i]; i++)
		if (ends_with(b, cfg_ext[i]))
			return 'c';
	if (b[0] == '.' || !strcmp(b, "Makefile") || !strncmp(b, "Dockerfile", 10) || !strcmp(b, "Procfile") ||
	    !strcmp(b, "Justfile") || !strcmp(b, "Taskfile") || !strcmp(b, "Containerfile") || ends_with(b, "rc"))
		return 'c';
	return 0;
}

int deps_add_file(deps *d, const char *path, const char *text, size_t len)
{
	const char *b = base_name(path);
	int kind = deps_file_kind(path), eco;

	if (d->oom)
		return FACTORY_ENOMEM;
	d->files++;
	/* path components name tools too (jest.config.js, .husky/) */
	add_words(d, path, strlen(path));
	if (kind == 'm') {
		char dir[1024];
		const char *c;
		int depth;
		manifest_dir(dir, sizeof(dir), path);
		for (c = dir, depth = *dir != '\0'; *c; c++)
			depth += *c == '/';
		if (depth > DEPS_MANIFEST_DEPTH || d->nmanifests >= DEPS_MAX_MANIFESTS) {
			/* too deep or too many: its words still count as uses */
			if (d->nmanifests == DEPS_MAX_MANIFESTS || depth > DEPS_MANIFEST_DEPTH) {
				char msg[400];
				snprintf(msg, sizeof(msg), "%.300s: %s: read as words only", path,
				         depth > DEPS_MANIFEST_DEPTH ? "deeper than the manifests read"
				                                     : "more manifests than read");
				note_to(d, d->notes, msg);
			}
			if (depth <= DEPS_MANIFEST_DEPTH)
				d->nmanifests++;
			kind = 'c';
		} else {
			d->nmanifests++;
		}
	}
	switch (kind) {
	case 'm':
		if (!strcmp(b, "package.json"))
			parse_package_json(d, path, text, len);
		else if (!strcmp(b, "pyproject.toml") || !strcmp(b, "Pipfile"))
			parse_toml(d, path, text, len, 'p');
		else if (!strcmp(b, "Cargo.toml"))
			parse_toml(d, path, text, len, 'c');
		else if (!strcmp(b, "go.mod"))
			parse_go_mod(d, path, text, len);
		else if (!strcmp(b, "Gemfile"))
			parse_gemfile(d, path, text, len);
		else if (!strcmp(b, "setup.cfg"))
			parse_setup_cfg(d, path, text, len);
		else
			parse_requirements(d, path, text, len);
		break;
	case 'l':
		parse_lock(d, path, text, len);
		break;
	case 's': {
		char dir[1024];
		eco = src_eco(b);
		d->sources[eco]++;
		dir_of(dir, sizeof(dir), path);
		if ((d->cur_dir = dir_id(d, dir)) >= 0)
			d->dirs[d->cur_dir].sources[eco]++;
		if (eco == ECO_NPM)
			scan_js(d, text, len, ends_with(b, "ss") || ends_with(b, ".less"));
		else if (eco == ECO_PYPI)
			scan_py(d, text, len);
		else if (eco == ECO_GO)
			scan_go(d, text, len);
		else if (eco == ECO_CARGO)
			scan_rs(d, text, len);
		else
			scan_rb(d, text, len);
		/* config written as code (webpack.config.js, conftest.py) names plugins by string */
		if (eco == ECO_NPM && (strstr(b, "config") || strstr(b, "rc.")))
			add_words(d, text, len);
		d->cur_dir = -1;
		break;
	}
	case 'c':
		add_words(d, text, len);
		break;
	default:
		break;
	}
	return d->oom ? FACTORY_ENOMEM : 0;
}

/* ---- tables from settings ---- */

int deps_alias(deps *d, const char *dist, const char *module)
{
	char nd[NAME_MAX_LEN + 1];
	cJSON *arr, *s;
	if (strlen(dist) > NAME_MAX_LEN || strlen(module) > NAME_MAX_LEN)
		return 0;
	norm_py(nd, sizeof(nd), dist);
	if (!(arr = cJSON_GetObjectItemCaseSensitive(d->aliases, nd)) &&
	    !(arr = cJSON_AddArrayToObject(d->aliases, nd)))
		return FACTORY_ENOMEM;
	if (!(s = cJSON_CreateString(module)))
		return FACTORY_ENOMEM;
	cJSON_AddItemToArray(arr, s);
	return 0;
}

int deps_keep(deps *d, const char *name)
{
	char k[NAME_MAX_LEN + 8];
	if (strlen(name) > NAME_MAX_LEN)
		return 0;
	snprintf(k, sizeof(k), "keep:%s", name);
	return sset_add(&d->names, k) < 0 ? FACTORY_ENOMEM : 0;
}

int deps_lighter(deps *d, const char *eco, const char *name, const char *instead)
{
	char k[NAME_MAX_LEN + 16];
	snprintf(k, sizeof(k), "%.8s:%.214s", eco, name);
	cJSON_DeleteItemFromObjectCaseSensitive(d->lighter, k);
	return cJSON_AddStringToObject(d->lighter, k, instead) ? 0 : FACTORY_ENOMEM;
}

int deps_new(deps **out)
{
	deps *d = calloc(1, sizeof(*d));
	size_t i;

	*out = NULL;
	if (!d || !(d->e = calloc(DEPS_MAX_DECLARED, sizeof(*d->e))) || !(d->lighter = cJSON_CreateObject()) ||
	    !(d->aliases = cJSON_CreateObject()) || !(d->bloat = cJSON_CreateArray()) ||
	    !(d->notes = cJSON_CreateArray())) {
		deps_free(d);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	d->cur_dir = -1;
	d->scope = -1;
	for (i = 0; alias_tbl[i][0]; i++)
		if (deps_alias(d, alias_tbl[i][0], alias_tbl[i][1]) < 0) {
			deps_free(d);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
	*out = d;
	return 0;
}

void deps_free(deps *d)
{
	size_t i;

	if (!d)
		return;
	for (i = 0; i < d->ndirs; i++)
		free(d->dirs[i].path);
	free(d->dirs);
	free(d->dir_slots);
	free(d->e);
	sset_release(&d->names);
	cJSON_Delete(d->lighter);
	cJSON_Delete(d->aliases);
	cJSON_Delete(d->bloat);
	cJSON_Delete(d->notes);
	free(d);
}

/* ---- the verdicts ---- */

static int word(const deps *d, const char *name)
{
	char low[NAME_MAX_LEN + 1];
	size_t i;
	for (i = 0; i < NAME_MAX_LEN && name[i]; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[i] = '\0';
	return has_name(d, "w:", low);
}

static const char *const npm_bins[][2] = {
        {"typescript", "tsc"},
        {"@angular/cli", "ng"},
        {"@vue/cli-service", "vue-cli-service"},
        {"npm-run-all", "run-s"},
        {"npm-run-all", "run-p"},
        {"npm-run-all2", "run-s"},
        {"webpack-cli", "webpack"},
        {"@biomejs/biome", "biome"},
        {"@playwright/test", "playwright"},
        {"@nestjs/cli", "nest"},
        {"@sveltejs/kit", "svelte-kit"},
        {"vite", "vite"},
        {"concurrently", "conc"},
        {NULL, NULL},
};

static int npm_used(const deps *d, const entry *e)
{
	const char *n = e->name, *slash = strchr(n, '/');
	char alt[NAME_MAX_LEN + 1];
	int i;

	if (has_name(d, "npm:", n) || word(d, n))
		return 1;
	if (!strncmp(n, "@types/", 7) || strstr(n, "plugin") || strstr(n, "preset") || strstr(n, "config") ||
	    strstr(n, "loader"))
		return 1;
	for (i = 0; npm_bins[i][0]; i++)
		if (!strcmp(npm_bins[i][0], n) && word(d, npm_bins[i][1]))
			return 1;
	/* a scoped tool is run by its last part ("@scope/tool" -> "tool") */
	if (slash && n[0] == '@') {
		snprintf(alt, sizeof(alt), "%s", slash + 1);
		if (word(d, alt))
			return 1;
	}
	return 0;
}

static int py_used(const deps *d, const entry *e)
{
	char nd[NAME_MAX_LEN + 1], c[NAME_MAX_LEN + 1], dash[NAME_MAX_LEN + 1];
	const cJSON *al, *it;
	size_t i;

	norm_py(nd, sizeof(nd), e->name);
	snprintf(dash, sizeof(dash), "%s", nd);
	for (i = 0; dash[i]; i++)
		if (dash[i] == '_')
			dash[i] = '-';
	if (!strncmp(dash, "pytest", 6) || !strncmp(dash, "flake8-", 7) || !strncmp(dash, "types-", 6) ||
	    ends_with(dash, "-stubs") || !strncmp(dash, "sphinx", 6) || !strncmp(dash, "mypy-", 5) ||
	    !strncmp(dash, "django-", 7) || !strncmp(dash, "pylint-", 7))
		return 1;
	if (has_name(d, "py:", nd) || word(d, nd) || word(d, dash) || word(d, e->name))
		return 1;
	al = cJSON_GetObjectItemCaseSensitive(d->aliases, nd);
	cJSON_ArrayForEach(it, al)
	{
		if (cJSON_IsString(it) && (has_name(d, "py:", it->valuestring) || word(d, it->valuestring)))
			return 1;
	}
	if (!strncmp(nd, "python_", 7) && has_name(d, "py:", nd + 7))
		return 1;
	if (!strncmp(nd, "py", 2) && nd[2] && has_name(d, "py:", nd + 2 + (nd[2] == '_')))
		return 1;
	if (ends_with(nd, "_python")) {
		snprintf(c, sizeof(c), "%.*s", (int)(strlen(nd) - 7), nd);
		if (has_name(d, "py:", c))
			return 1;
	}
	/* google-cloud-storage and other namespace distributions: the first part */
	if ((it = NULL, strchr(nd, '_'))) {
		snprintf(c, sizeof(c), "%.*s", (int)(strchr(nd, '_') - nd), nd);
		if (!strcmp(c, "google") || !strcmp(c, "azure") || !strcmp(c, "zope") || !strcmp(c, "jaraco") ||
		    !strcmp(c, "backports") || !strcmp(c, "sphinxcontrib") || !strcmp(c, "opentelemetry"))
			return has_name(d, "py:", c);
	}
	return 0;
}

static int used(const deps *d, const entry *e)
{
	char id[NAME_MAX_LEN + 1];
	size_t i;

	if (has_name(d, "keep:", e->name) || in_table(implicit, e->name))
		return 1;
	switch (e->eco) {
	case ECO_NPM:
		return npm_used(d, e);
	case ECO_PYPI:
		return py_used(d, e);
	case ECO_GO:
		return has_name(d, "go:", e->name) || word(d, e->name);
	case ECO_CARGO:
		snprintf(id, sizeof(id), "%s", e->name);
		for (i = 0; id[i]; i++)
			if (id[i] == '-')
				id[i] = '_';
		return has_name(d, "rs:", id) || word(d, e->name) || word(d, id);
	default:
		if (word(d, e->name))
			return 1;
		if (e->words_only)
			return 0;
		if (e->req[0] && has_name(d, "rb:", e->req))
			return 1;
		snprintf(id, sizeof(id), "%s", e->name);
		if (has_name(d, "rb:", id))
			return 1;
		for (i = 0; id[i]; i++)
			if (id[i] == '-')
				id[i] = '/';
		if (has_name(d, "rb:", id))
			return 1;
		for (i = 0; id[i]; i++)
			if (id[i] == '/')
				id[i] = '_';
		return has_name(d, "rb:", id);
	}
}

/* Whether the manifest nearest to directory `dir` (of e's ecosystem, in
 * `dir` or above it) declares e's name. */
static int declared_near(deps *d, const entry *e, srcdir *sd)
{
	char k[NAME_MAX_LEN + 300];
	size_t i, best = 0;

	if (!sd->near_known[e->eco]) {
		sd->near_known[e->eco] = 1;
		for (i = 0; i < d->n; i++)
			if (d->e[i].eco == e->eco && dir_under(sd->path, d->e[i].mdir) &&
			    (!sd->near[e->eco] || strlen(d->e[i].mdir) > best)) {
				sd->near[e->eco] = d->e[i].mdir;
				best = strlen(d->e[i].mdir);
			}
		d->budget -= (long)d->n;
	}
	if (!sd->near[e->eco])
		return 0;
	snprintf(k, sizeof(k), "d:%d:%s|%s", e->eco, sd->near[e->eco], e->name);
	return sset_has(&d->names, k);
}

/* An entry of a manifest in a subfolder: used when a script or config word
 * names it, when a file under its folder uses it, or when a file elsewhere
 * uses it whose nearest manifest does not declare it (a hoisted workspace
 * package, a path dependency: conservative). *sources counts the
 * ecosystem's source files under the folder. */
static int used_here(deps *d, const entry *e, long *sources)
{
	size_t i;
	int found, pass;

	*sources = 0;
	for (i = 0; i < d->ndirs; i++)
		if (dir_under(d->dirs[i].path, e->mdir))
			*sources += d->dirs[i].sources[e->eco];
	d->budget -= (long)d->ndirs;
	d->scope = LONG_MAX; /* no directory: words, kept names and the tables only */
	found = used(d, e);
	d->scope = -1;
	if (found || !used(d, e)) /* named by a word, or used nowhere */
		return found;
	/* the folder's own files first, then the others */
	for (pass = 0; pass < 2 && !found; pass++)
		for (i = 0; i < d->ndirs && !found; i++) {
			int under = dir_under(d->dirs[i].path, e->mdir);
			if (--d->budget < 0)
				return 1; /* out of time: not called unused */
			if (!d->dirs[i].sources[e->eco] || under != !pass)
				continue;
			d->scope = (long)i;
			if (used(d, e) && (under || !declared_near(d, e, &d->dirs[i])))
				found = 1;
			d->scope = -1;
		}
	return found;
}

int deps_findings(cJSON **out, deps *d)
{
	cJSON *o = NULL, *unused, *src, *it, *bl, *notes;
	size_t i;
	int eco;

	*out = NULL;
	if (d->oom)
		goto oom;
	if (!(o = cJSON_CreateObject()) || !cJSON_AddNumberToObject(o, "declared", (double)d->n) ||
	    !cJSON_AddNumberToObject(o, "files", (double)d->files) || !(src = cJSON_AddObjectToObject(o, "sources")) ||
	    !(unused = cJSON_AddArrayToObject(o, "unused")) ||
	    !cJSON_AddItemToObject(o, "bloat", bl = cJSON_Duplicate(d->bloat, 1)) ||
	    !cJSON_AddItemToObject(o, "notes", notes = cJSON_Duplicate(d->notes, 1)))
		goto oom;
	/* lighter replacements added through settings */
	for (i = 0; i < d->n; i++) {
		char k[NAME_MAX_LEN + 16];
		snprintf(k, sizeof(k), "%s:%s", eco_names[d->e[i].eco], d->e[i].name);
		it = cJSON_GetObjectItemCaseSensitive(d->lighter, k);
		if (cJSON_IsString(it))
			bloat_to(d, bl, "lighter", d->e[i].eco, d->e[i].name, d->e[i].manifest, it->valuestring);
	}
	for (eco = 0; eco < ECO_N; eco++) {
		if (!cJSON_AddNumberToObject(src, eco_names[eco], (double)d->sources[eco]))
			goto oom;
		if (d->manifests[eco] && !d->sources[eco] && eco != ECO_RUBY) {
			char text[200];
			snprintf(text, sizeof(text),
			         "%s: a manifest but no source file read: no entry is called unused", eco_names[eco]);
			note_to(d, notes, text);
		}
	}
	if (d->names_full)
		note_to(d, notes, "more names than kept (DEPS_MAX_NAMES): no entry is called unused");
	if (d->dirs_full)
		note_to(d, notes, "more source folders than kept: manifests in subfolders judged by the whole tree");
	if (d->manifests[ECO_RUBY] && d->bundler_require)
		note_to(d, notes,
		        "ruby: Bundler.require loads every gem of the Gemfile without a require of its own: "
		        "no gem is called unused");
	d->budget = SCOPE_BUDGET;
	for (i = 0; i < d->ndirs; i++)
		memset(d->dirs[i].near_known, 0, sizeof(d->dirs[i].near_known));
	for (i = 0; i < d->n; i++) {
		const entry *e = &d->e[i];
		cJSON *u;
		long here = 0;
		if (d->names_full || !e->checkable)
			continue;
		if (e->mdir[0] && !d->dirs_full) {
			/* a manifest in a subfolder: the files under it */
			if (used_here(d, e, &here))
				continue;
			if (e->eco == ECO_RUBY ? d->bundler_require || (!here && !e->words_only) : !here)
				continue;
		} else {
			if (used(d, e))
				continue;
			if (e->eco == ECO_RUBY ? d->bundler_require || (!d->sources[ECO_RUBY] && !e->words_only)
			                       : !d->sources[e->eco])
				continue;
		}
		if (!(u = cJSON_CreateObject()) || !cJSON_AddStringToObject(u, "eco", eco_names[e->eco]) ||
		    !cJSON_AddStringToObject(u, "name", e->name) ||
		    !cJSON_AddStringToObject(u, "manifest", e->manifest) ||
		    !cJSON_AddStringToObject(u, "section", e->section)) {
			cJSON_Delete(u);
			goto oom;
		}
		cJSON_AddItemToArray(unused, u);
	}
	if (d->budget < 0)
		note_to(d, notes,
		        "too many folders and entries to judge every manifest in a subfolder: the rest are "
		        "not called unused");
	if (d->oom)
		goto oom;
	*out = o;
	return 0;
oom:
	cJSON_Delete(o);
	return ferror_set(FACTORY_ENOMEM, "out of memory");
}
