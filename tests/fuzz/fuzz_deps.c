/*
 * libFuzzer target for common/deps.c: repository files read as manifests,
 * lock files, sources of each ecosystem and config words. The first byte
 * picks the file name; the rest is its content, read again as a source at
 * the root and in a subfolder (manifests in subfolders are judged by the
 * files under them). Checks: no crash, no leak,
 * no read past the input (ASan), and findings that are a JSON object with
 * the documented arrays.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deps.h"

static const char *const paths[] = {
        "package.json",
        "requirements.txt",
        "pyproject.toml",
        "Pipfile",
        "go.mod",
        "Cargo.toml",
        "Gemfile",
        "package-lock.json",
        "yarn.lock",
        "Cargo.lock",
        "src/a.ts",
        "a.scss",
        "m.py",
        "main.go",
        "lib.rs",
        "app.rb",
        ".gitlab-ci.yml",
        "Makefile",
        "requirements/dev.txt",
        "x/jest.config.js",
        "setup.cfg",
        "pnpm-lock.yaml",
        "packages/a/package.json",
        "svc/api/pyproject.toml",
        "crates/c/Cargo.toml",
        "a/b/c/d/e/package.json",
        "packages/a/src/i.ts",
        "svc/api/app/m.py",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	deps *d = NULL;
	cJSON *f = NULL;
	const char *path;

	if (size < 1 || deps_new(&d) < 0)
		return 0;
	path = paths[data[0] % (sizeof(paths) / sizeof(paths[0]))];
	if (deps_add_file(d, path, (const char *)data + 1, size - 1) == 0 &&
	    deps_add_file(d, "other.js", (const char *)data + 1, size - 1) == 0 &&
	    deps_add_file(d, "packages/a/lib/x.py", (const char *)data + 1, size - 1) == 0 &&
	    deps_findings(&f, d) == 0) {
		if (!cJSON_IsArray(cJSON_GetObjectItem(f, "unused")) ||
		    !cJSON_IsArray(cJSON_GetObjectItem(f, "bloat")) || !cJSON_IsArray(cJSON_GetObjectItem(f, "notes")))
			abort();
	}
	cJSON_Delete(f);
	deps_free(d);
	return 0;
}
