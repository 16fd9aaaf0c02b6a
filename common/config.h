/*
 * config.h - settings with one precedence everywhere:
 *   command-line flags > environment (FACTORY_*) > YAML file (.factory.yml) > built-in default.
 *
 * A setting has a key made of lowercase words joined by '_' and sections
 * joined by '.', e.g. "wip_limit" or "triage.wip_limit". Its environment
 * name is FACTORY_ + the key upper-cased with '.' turned into '_'
 * ("FACTORY_TRIAGE_WIP_LIMIT"); its flag is "--" + key with '_' and '.'
 * turned into '-' ("--triage-wip-limit"); in YAML it is the nested mapping
 * path (triage: {wip_limit: 3}). Structured data (policy rules, lists) is
 * read from the YAML document as cJSON through fconfig_yaml().
 *
 * Errors name the setting and where its bad value came from, e.g.
 *   "bad setting wip_limit=abc (from FACTORY_WIP_LIMIT): expected a whole number from 1 to 100"
 * and use FACTORY_ECONFIG, which jobs turn into exit 2. The source is named
 * as "--wip-limit", "FACTORY_WIP_LIMIT", the YAML file's name, or "the
 * default".
 *
 * The environment: an empty variable counts as unset (CI templates often
 * pass empty variables through). '-' in a key becomes '_' too.
 *
 * YAML (libyaml, YAML 1.2 core schema): plain scalars ~, null, Null, NULL
 * and the empty scalar are null; true/false (True, TRUE, ...) are booleans
 * and yes/no/on/off stay strings; [-+]?[0-9]+, 0o17 and 0x1F are integers
 * (those a double cannot hold exactly, past 2^53, stay strings); decimal
 * floats are numbers (.inf and .nan stay strings: JSON has no such
 * numbers). Quoted and block scalars are strings. Tags !!str (and "!"),
 * !!int, !!float, !!bool, !!null, !!map, !!seq are honoured; any other tag
 * is refused. Refused with FACTORY_ECONFIG and "bad yaml in <name> at line
 * L, column C: <why>": syntax errors, anchors and aliases, duplicate keys,
 * non-scalar keys, NUL bytes in scalars, nesting deeper than 64 levels.
 * Input over 1 MiB is refused. Only the first document of a stream is read.
 *
 * Settings from a file are its scalars reached through mappings only, keys
 * joined by '.', with the scalar's text as written ("0x1F", "True", "1.10").
 * Sequences are not settings (read them with fconfig_yaml_path). A null
 * scalar leaves the setting unset at the file level.
 */
#ifndef FACTORY_CONFIG_H
#define FACTORY_CONFIG_H

#include <cjson/cJSON.h>

typedef enum { CONFIG_DEFAULT = 0, CONFIG_FILE, CONFIG_ENV, CONFIG_FLAG } fconfig_source;

typedef struct fconfig fconfig;

int fconfig_new(fconfig **out);
void fconfig_free(fconfig *c);

/* A deep copy of `c` into a new *out (the caller frees it): every source's
 * values, the loaded documents and their names. Later loads and sets on
 * either leave the other as it was. Used to lay one project's settings file
 * over a group's (common/scope.h): clone, then fconfig_load_yaml_string().
 * Returns 0 or FACTORY_ENOMEM. */
int fconfig_clone(fconfig **out, const fconfig *c);

/*
 * Load a YAML file. A missing file is fine when `required` is 0 (returns 0,
 * nothing loaded), else FACTORY_ECONFIG. A syntax error is FACTORY_ECONFIG
 * naming the file, line and column. Scalars become settings (CONFIG_FILE);
 * the whole document is kept as cJSON for fconfig_yaml(). Files over 1 MiB
 * are refused. Anchors/aliases are refused (no billion laughs).
 *
 * The top level must be a mapping (an empty file loads as {}). It may be
 * called more than once: the documents are deep-merged (mappings merge key
 * by key, anything else from the later file replaces), and the file
 * settings are those of the merged document. A file that cannot be read or
 * parsed changes nothing.
 */
int fconfig_load_yaml(fconfig *c, const char *path, int required);
/* The same from a string (for built-in default policies). */
int fconfig_load_yaml_string(fconfig *c, const char *yaml, const char *name);

/* Parse YAML text into cJSON (mappings -> objects, sequences -> arrays,
 * plain scalars that look like numbers/booleans/null typed, quoted scalars
 * stay strings). *out is the caller's. Same limits and errors as above.
 * Any top level is allowed here; an empty stream gives a cJSON null.
 * `name` (may be NULL) is what error messages call the text. */
int fconfig_yaml_to_json(cJSON **out, const char *yaml, size_t len, const char *name);

/* Set a value from a given source (copied). Later sets of the same source
 * replace earlier ones. A NULL value unsets the key for that source. A value
 * set for CONFIG_ENV stands in for the real environment variable (tests). */
int fconfig_set(fconfig *c, fconfig_source src, const char *key, const char *value);

/* Look up the value of `key` with the highest precedence, reading the
 * environment variable on demand. NULL if unset anywhere. The string is owned
 * by the config (or the environment) and valid until that key is set again
 * or another file is loaded. `src_out` (may be NULL) gets the source. */
const char *fconfig_get(const fconfig *c, const char *key, fconfig_source *src_out);
/* With a default for when it is unset. */
const char *fconfig_get_str(const fconfig *c, const char *key, const char *def);
/* Typed getters: 0 with *out set (to `def` when unset), or FACTORY_ECONFIG
 * with a message that names the key, value and source. */
int fconfig_get_long(long *out, const fconfig *c, const char *key, long def, long min, long max);
int fconfig_get_bool(int *out, const fconfig *c, const char *key, int def); /* true/false/yes/no/1/0/on/off */
/* (Both accept surrounding blanks; words in any case. Whole numbers are
 * decimal with an optional sign, nothing else.) */
/* Required string: FACTORY_ECONFIG "missing setting <key> (set <ENV> or --<flag>)" when unset or empty. */
int fconfig_require(const char **out, const fconfig *c, const char *key);

/* The YAML document merged from the loaded files (borrowed; NULL if none),
 * and a sub-object by dotted path ("triage.rules"), NULL if absent. An
 * empty or NULL path gives the whole document. */
const cJSON *fconfig_yaml(const fconfig *c);
const cJSON *fconfig_yaml_path(const fconfig *c, const char *dotted);

/* Names derived from a key, into caller buffers (always NUL-terminated, cut
 * to fit): "FACTORY_TRIAGE_WIP_LIMIT", and the flag without its leading
 * dashes, "triage-wip-limit" (as in job_option.flag). fconfig_source_name
 * gives "default", "file", "environment" or "flag". */
void fconfig_env_name(char *out, size_t len, const char *key);
void fconfig_flag_name(char *out, size_t len, const char *key);
const char *fconfig_source_name(fconfig_source s);

#endif
