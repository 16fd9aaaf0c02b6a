/*
 * deps.h - a project's declared dependencies against what its files use:
 * unused dependencies and bloat. Domain layer, no I/O: the caller walks the
 * repository and hands each file in; the module keeps only names.
 *
 * Files (deps_add_file picks by path):
 *   manifests   package.json; requirements*.txt, requirements/<x>.txt,
 *               pyproject.toml ([project] dependencies, optional
 *               dependencies, [dependency-groups], Poetry tables), setup.cfg
 *               ([options] install_requires, tests_require, setup_requires,
 *               [options.extras_require]), Pipfile; go.mod (require, minus
 *               "// indirect"); Cargo.toml ([dependencies],
 *               [dev-dependencies], [build-dependencies], their target.*
 *               forms, [dependencies.<name>] tables, and
 *               [workspace.dependencies]); Gemfile (gem lines, group blocks
 *               and group: options). Read as manifests at most
 *               DEPS_MANIFEST_DEPTH folders below the root (a
 *               "requirements/" folder counts as its parent) and at most
 *               DEPS_MAX_MANIFESTS of them; others are config words (a note)
 *   lock files  package-lock.json, yarn.lock (v1), pnpm-lock.yaml,
 *               Cargo.lock: packages locked at several versions
 *   sources     .js .jsx .ts .tsx .mjs .cjs .mts .cts .vue .svelte .astro
 *               (import/require/export-from/import()), .css .scss .sass .less
 *               (@import/@use), .py .pyi (import, from-import, import_module,
 *               and words in string literals), .go (import lines and
 *               blocks, go:generate lines), .rs (identifiers before "::",
 *               use, extern crate), .rb .rake .ru .gemspec Rakefile
 *               (require; "Bundler.require" noted)
 *   config      every other small text file (JSON, YAML, TOML, INI, shell,
 *               Makefile, Dockerfile, Procfile, dot-rc files ...) and the
 *               non-dependency parts of package.json and pyproject.toml:
 *               their words, so a tool named only in a script or a config
 *               file counts as used. Lock files, Markdown and the
 *               manifests' own dependency lists are never words.
 *
 * Unused (conservative: a false "unused" is worse than a miss). An entry is
 * used when its ecosystem's sources import it, or one of its names appears
 * as a word of a config file or of a file path (jest.config.js names jest).
 * Monorepos: a manifest at the root is judged by every file; one in a
 * subfolder by the sources under that folder (the uses of each folder are
 * kept apart, at most DEPS_MAX_DIRS folders, beyond which the whole tree
 * counts), and also used when a source elsewhere imports it whose nearest
 * manifest of the ecosystem does not declare it (hoisted workspace
 * packages); a subfolder without a source of the ecosystem gets no verdict;
 * past a bounded amount of work (SCOPE_BUDGET in deps.c, a note) the
 * entries left are not called unused.
 * Words count for the whole tree. Past DEPS_MAX_NAMES names nothing is
 * called unused (a note).
 * Never reported: npm peer and optional dependencies, @types/ packages, plugins,
 * presets, configs and loaders (names holding "plugin", "preset",
 * "config", "loader"), a small table of tools used implicitly
 * (typescript, tslib, setuptools, wheel, rake, bundler ...), Python
 * plugin families (pytest-*, flake8-*, types-*, *-stubs, sphinx*), Go
 * "// indirect" requirements, and every Ruby gem when any Ruby file calls
 * Bundler.require (gems are then loaded without a require of their own).
 * Python distributions map to module names by normalisation (lower case,
 * '-' and '.' to '_'; "python-"/"py" prefixes and "-python" suffixes
 * dropped as further candidates) and by a table (PyYAML -> yaml,
 * beautifulsoup4 -> bs4, Pillow -> PIL, ...) that deps_alias extends.
 * Cargo names match with '-' as '_'. A Go module is used when an import
 * path is the module or under it.
 *
 * Bloat, reported as findings of a kind:
 *   twice           the same package twice in one manifest (npm: in both
 *                   dependencies and devDependencies, or twice in a list)
 *   dev_in_runtime  a test, lint or build tool (a table) in the runtime
 *                   dependencies (npm dependencies, a requirements file
 *                   whose name says nothing of dev/test/lint/doc, [project]
 *                   dependencies, a Gemfile line outside a group)
 *   lighter         a known heavy package with a standard-library or
 *                   lighter replacement (a table; deps_lighter extends it)
 *   lock_duplicates packages locked at several versions in one lock file
 *
 * Caps: at most DEPS_MAX_DECLARED entries, DEPS_MAX_NAMES names and
 * words; names longer than 214 bytes are ignored. Input is any bytes: the
 * scanners never read past `len` and never fail on content (a manifest that
 * does not parse adds a note). Errors: FACTORY_ENOMEM only.
 */
#ifndef FACTORY_DEPS_H
#define FACTORY_DEPS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define DEPS_MAX_DECLARED 4000
#define DEPS_MAX_NAMES (1 << 20)
#define DEPS_MAX_DIRS 20000    /* folders holding source files, kept apart */
#define DEPS_MANIFEST_DEPTH 4  /* folders below the root a manifest is read in */
#define DEPS_MAX_MANIFESTS 500 /* manifest files read as manifests */

typedef struct deps deps;

int deps_new(deps **out);
void deps_free(deps *d);

/* What deps_add_file does with `path`: 'm' manifest, 'l' lock file,
 * 's' source, 'c' config words, 0 nothing. */
int deps_file_kind(const char *path);

/* Read one file of the repository (`path` relative to its root, '/'
 * separated). 0 or FACTORY_ENOMEM. */
int deps_add_file(deps *d, const char *path, const char *text, size_t len);

/* Extend the tables: Python distribution `dist` provides module `module`;
 * `name` is never reported unused; `name` of `eco` ("npm", "pypi", "go",
 * "cargo", "ruby") has the lighter replacement `instead`. */
int deps_alias(deps *d, const char *dist, const char *module);
int deps_keep(deps *d, const char *name);
int deps_lighter(deps *d, const char *eco, const char *name, const char *instead);

/*
 * The findings, as a new JSON object (caller frees):
 *   {"declared": N, "files": N, "sources": {"npm": N, ...},
 *    "unused": [{"eco","name","manifest","section"}],
 *    "bloat": [{"kind","eco","name","manifest","detail"}],
 *    "notes": ["..."]}
 * An ecosystem with a manifest but no source file read reports no unused
 * entry (a note says so). 0 or FACTORY_ENOMEM.
 */
int deps_findings(cJSON **out, deps *d);

#endif
