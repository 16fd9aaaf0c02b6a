/*
 * Fuzz target for the YAML side of common/config.c. The input is parsed to
 * cJSON, and also loaded into a config in two parts (split at the first
 * "\n...\n" or in the middle) so that merging runs too. What parses must
 * print as JSON that cJSON reads back; every file setting must be a scalar
 * of the merged document; the config must stay usable after a refusal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"

/* Every string setting reached through mappings must be found by
 * fconfig_get with CONFIG_FILE, spelled as the string when it is one.
 * Walks at most a few levels to stay quick. */
static void check_settings(const fconfig *c, const cJSON *node, char *path, size_t len, size_t cap, int depth)
{
	const cJSON *item;
	fconfig_source src;
	const char *v;
	size_t n;

	if (depth > 8)
		return;
	cJSON_ArrayForEach(item, node)
	{
		n = strlen(item->string);
		if (len + n + 2 >= cap)
			continue;
		if (len)
			path[len] = '.';
		memcpy(path + len + (len ? 1 : 0), item->string, n + 1);
		if (cJSON_IsObject(item)) {
			check_settings(c, item, path, len + n + (len ? 1 : 0), cap, depth + 1);
		} else if (cJSON_IsString(item) || cJSON_IsNumber(item) || cJSON_IsBool(item)) {
			v = fconfig_get(c, path, &src);
			if (!v || src != CONFIG_FILE)
				abort();
			if (cJSON_IsString(item) && strcmp(v, item->valuestring))
				abort();
		}
		path[len] = '\0';
	}
}

/* Whether any key in the tree has a '.' (then flattened names can collide). */
static int has_dotted_key(const cJSON *node)
{
	const cJSON *item;

	cJSON_ArrayForEach(item, node)
	{
		if (item->string && strchr(item->string, '.'))
			return 1;
		if ((cJSON_IsObject(item) || cJSON_IsArray(item)) && has_dotted_key(item))
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *j = NULL, *back;
	fconfig *c = NULL;
	char *text, *cut, *printed, path[512];
	long l;
	int b;

	if (fconfig_yaml_to_json(&j, (const char *)data, size, "fuzz.yml") == 0) {
		if (!j)
			abort();
		printed = cJSON_PrintUnformatted(j);
		if (!printed)
			abort();
		back = cJSON_Parse(printed);
		if (!back)
			abort(); /* what we make must be JSON */
		cJSON_Delete(back);
		free(printed);
		cJSON_Delete(j);
	} else if (j) {
		abort();
	}

	/* The same text as a settings file, in two parts. */
	if (!(text = malloc(size + 1)))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (fconfig_new(&c) < 0) {
		free(text);
		return 0;
	}
	cut = strstr(text, "\n...\n");
	if (cut) {
		*cut = '\0';
		fconfig_load_yaml_string(c, text, "one.yml");
		fconfig_load_yaml_string(c, cut + 5, "two.yml");
	} else {
		fconfig_load_yaml_string(c, text, "one.yml");
		fconfig_load_yaml_string(c, text + strlen(text) / 2, "two.yml");
	}
	if (fconfig_yaml(c) && !has_dotted_key(fconfig_yaml(c))) {
		if (!cJSON_IsObject(fconfig_yaml(c)))
			abort();
		path[0] = '\0';
		check_settings(c, fconfig_yaml(c), path, 0, sizeof(path), 0);
	}
	fconfig_get_long(&l, c, "a", 0, -10, 10);
	fconfig_get_bool(&b, c, "a", 0);
	fconfig_get_long(&l, c, "a.b", 0, -10, 10);
	fconfig_yaml_path(c, "a.b.c");
	fconfig_free(c);
	free(text);
	return 0;
}
