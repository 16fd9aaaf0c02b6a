/* Tests for common/deps.c: the import scanners per ecosystem, the manifest
 * readers, the conservative rules for "unused", and the bloat findings. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "deps.h"
#include "error.h"

static deps *D;
static cJSON *F;

static void setup(void)
{
	cr_assert_eq(deps_new(&D), 0);
	F = NULL;
}

static void teardown(void)
{
	cJSON_Delete(F);
	deps_free(D);
}

static void add(const char *path, const char *text)
{
	cr_assert_eq(deps_add_file(D, path, text, strlen(text)), 0, "%s", path);
}

static void findings(void)
{
	cJSON_Delete(F);
	cr_assert_eq(deps_findings(&F, D), 0);
}

/* The unused names of `eco`, sorted, comma-joined. */
static const char *unused(const char *eco)
{
	static char out[2000];
	const cJSON *it;
	char *names[200];
	int n = 0, i, j;

	findings();
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(F, "unused"))
	{
		if (!strcmp(cJSON_GetObjectItem(it, "eco")->valuestring, eco) && n < 200)
			names[n++] = cJSON_GetObjectItem(it, "name")->valuestring;
	}
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		strcat(out, i ? "," : "");
		strcat(out, names[i]);
	}
	return out;
}

static int has_bloat(const char *kind, const char *name)
{
	const cJSON *it;
	findings();
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(F, "bloat"))
	{
		if (!strcmp(cJSON_GetObjectItem(it, "kind")->valuestring, kind) &&
		    !strcmp(cJSON_GetObjectItem(it, "name")->valuestring, name))
			return 1;
	}
	return 0;
}

TestSuite(deps, .init = setup, .fini = teardown);

Test(deps, npm_imports_scoped_subpaths_and_tools_from_scripts)
{
	add("package.json",
	    "{\"name\":\"shop\",\"scripts\":{\"build\":\"tsc -p .\",\"lint\":\"eslint src\"},"
	    "\"dependencies\":{\"react\":\"^18\",\"@scope/ui\":\"1\",\"lodash\":\"4\",\"chalk\":\"5\","
	    "\"express\":\"4\",\"dayjs\":\"1\",\"unused-thing\":\"1\",\"@acme/gone\":\"2\"},"
	    "\"devDependencies\":{\"typescript\":\"5\",\"eslint\":\"8\",\"jest\":\"29\",\"left-over\":\"1\","
	    "\"eslint-plugin-react\":\"7\",\"@types/node\":\"20\"},"
	    "\"peerDependencies\":{\"vue\":\"3\"}}");
	add("src/app.tsx", "import React from 'react';\nimport { Button } from \"@scope/ui/button\";\n"
	                   "import type { X } from 'dayjs';\nconst pick = require('lodash/pick');\n"
	                   "export * from 'chalk';\nconst s = 'unused-thing is only a string here';\n");
	add("src/server.cjs", "const app = await import(\"express\");\nimport './local';\n");
	add("jest.config.js", "module.exports = {};\n");
	cr_assert_str_eq(unused("npm"), "@acme/gone,left-over,unused-thing");
}

Test(deps, npm_node_builtins_and_relative_paths_are_not_packages)
{
	add("package.json", "{\"dependencies\":{\"fs\":\"0.0.1\",\"path\":\"0.12\"}}");
	add("index.js", "const fs = require('node:fs');\nconst p = require('./path');\n");
	cr_assert_str_eq(unused("npm"), "fs,path");
}

Test(deps, npm_bloat_twice_dev_tool_in_runtime_and_lighter)
{
	add("package.json", "{\"dependencies\":{\"moment\":\"2\",\"jest\":\"29\",\"react\":\"18\"},"
	                    "\"devDependencies\":{\"react\":\"18\"}}");
	add("a.js", "import moment from 'moment'; import React from 'react'; import 'jest';");
	cr_assert(has_bloat("twice", "react"));
	cr_assert(has_bloat("dev_in_runtime", "jest"));
	cr_assert(has_bloat("lighter", "moment"));
	cr_assert_str_eq(unused("npm"), "");
}

Test(deps, python_imports_with_distribution_names)
{
	add("requirements.txt", "# runtime\nPyYAML==6.0\nbeautifulsoup4>=4\nPillow\nrequests[socks]==2.31\n"
	                        "python-dateutil\nscikit-learn\nnumpy ; python_version>'3'\nflask\n-r other.txt\n"
	                        "git+https://example.invalid/x.git\nunused_lib==1.0\ngoogle-cloud-storage\n");
	add("requirements-dev.txt", "pytest\npytest-cov\nblack\nnever-used-dev\n");
	add("app/main.py", "import yaml, os\nfrom bs4 import BeautifulSoup\nfrom PIL import Image\n"
	                   "import requests as r\nfrom dateutil import parser\nfrom . import sibling\n"
	                   "from sklearn.linear_model import X\nimport numpy.linalg\nfrom google.cloud import storage\n"
	                   "mod = importlib.import_module(\"flask\")\n");
	add(".gitlab-ci.yml", "test:\n  script:\n    - black --check .\n    - pytest\n");
	cr_assert_str_eq(unused("pypi"), "never-used-dev,unused_lib");
}

Test(deps, python_pyproject_tables_and_aliases_from_settings)
{
	add("pyproject.toml", "[project]\nname = \"x\"\ndependencies = [\n  \"httpx>=0.27\",\n  \"Weird-Dist\",\n"
	                      "  \"gone\",\n]\n[project.optional-dependencies]\ndev = [\"ruff\"]\n"
	                      "[tool.ruff]\nline-length = 100\n[build-system]\nrequires = [\"hatchling\"]\n");
	add("x/__init__.py", "import httpx\nimport weirdmod\n");
	cr_assert_str_eq(unused("pypi"), "Weird-Dist,gone");
	cr_assert_eq(deps_alias(D, "Weird-Dist", "weirdmod"), 0);
	cr_assert_str_eq(unused("pypi"), "gone");
	cr_assert_eq(deps_keep(D, "gone"), 0);
	cr_assert_str_eq(unused("pypi"), "");
}

Test(deps, go_imports_blocks_and_indirect)
{
	add("go.mod",
	    "module example.com/app\n\ngo 1.22\n\nrequire github.com/solo/one v1.0.0\n"
	    "require (\n\tgithub.com/a/b v1.2.3\n\tgithub.com/c/d/v2 v2.0.0\n\tgolang.org/x/text v0.14.0 // indirect\n"
	    "\tgithub.com/e/unused v0.1.0\n\tgithub.com/pkg/errors v0.9.1\n)\n");
	add("main.go",
	    "package main\n\nimport (\n\t\"fmt\"\n\tb \"github.com/a/b/sub\"\n\t_ \"github.com/c/d/v2\"\n"
	    "\t// \"github.com/e/unused\"\n)\nimport \"github.com/solo/one\"\nimport \"github.com/pkg/errors\"\n");
	cr_assert_str_eq(unused("go"), "github.com/e/unused");
	cr_assert(has_bloat("lighter", "github.com/pkg/errors"));
}

Test(deps, cargo_use_paths_and_dashes)
{
	add("Cargo.toml",
	    "[package]\nname = \"x\"\n\n[dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\n"
	    "tokio = \"1\"\nregex-lite = \"0.1\"\nanyhow.workspace = true\nnot-used = \"1\"\n"
	    "renamed = { package = \"real-name\", version = \"1\" }\n\n[dev-dependencies]\nproptest = \"1\"\n"
	    "[dependencies.table_form]\nversion = \"1\"\n[target.'cfg(unix)'.dependencies]\nnix = \"0.27\"\n");
	add("src/main.rs",
	    "use serde::Deserialize;\n#[tokio::main]\nasync fn main() -> anyhow::Result<()> {\n"
	    "    let r = regex_lite::Regex::new(\"x\");\n    renamed::go();\n    nix::unistd::getpid();\n}\n");
	cr_assert_str_eq(unused("cargo"), "not-used,proptest,table_form");
	add("tests/t.rs", "extern crate proptest;\nuse ::table_form;\n");
	cr_assert_str_eq(unused("cargo"), "not-used");
}

Test(deps, ruby_requires_groups_and_bundler_require)
{
	add("Gemfile", "source 'https://rubygems.org'\ngem 'rack'\ngem \"net-http-persistent\"\ngem 'unused_gem'\n"
	               "gem 'rubocop', require: false\ngem 'rspec'\n\ngroup :development, :test do\n  gem 'pry'\nend\n"
	               "gem 'sidekiq', group: :test\n");
	add("lib/app.rb", "require 'rack/utils'\nrequire \"net/http/persistent\"\n");
	add(".gitlab-ci.yml", "lint:\n  script: bundle exec rubocop && bundle exec rspec\n");
	cr_assert_str_eq(unused("ruby"), "pry,sidekiq,unused_gem");
	cr_assert(has_bloat("dev_in_runtime", "rspec"));
	cr_assert(!has_bloat("dev_in_runtime", "pry"));
	add("config/application.rb", "Bundler.require(*Rails.groups)\n");
	cr_assert_str_eq(unused("ruby"), "");
	findings();
	{
		char *notes = cJSON_PrintUnformatted(cJSON_GetObjectItem(F, "notes"));
		int found = strstr(notes, "Bundler.require") != NULL;
		free(notes);
		cr_assert(found);
	}
}

Test(deps, no_sources_means_no_unused)
{
	add("package.json", "{\"dependencies\":{\"a\":\"1\"}}");
	cr_assert_str_eq(unused("npm"), "");
	findings();
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(F, "notes")), 1);
}

Test(deps, lock_duplicates)
{
	add("package-lock.json",
	    "{\"lockfileVersion\":3,\"packages\":{\"\":{},\"node_modules/a\":{\"version\":\"1.0.0\"},"
	    "\"node_modules/b/node_modules/a\":{\"version\":\"2.0.0\"},\"node_modules/b\":{\"version\":\"1.0.0\"},"
	    "\"node_modules/@s/c\":{\"version\":\"1.0.0\"},\"node_modules/x/node_modules/@s/"
	    "c\":{\"version\":\"1.0.0\"}}}");
	add("yarn.lock",
	    "# yarn lockfile v1\n\n\"q@^1.0.0\":\n  version \"1.5.1\"\n\nq@^2.0.0, q@^2.1.0:\n  version \"2.1.0\"\n");
	add("Cargo.lock", "[[package]]\nname = \"syn\"\nversion = \"1.0.109\"\n\n[[package]]\nname = \"syn\"\nversion "
	                  "= \"2.0.48\"\n");
	findings();
	{
		char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(F, "bloat"));
		cr_assert(strstr(s, "package-lock.json") && strstr(s, "1 package locked at several versions (a x2)"),
		          "%s", s);
		cr_assert(strstr(s, "q x2"), "%s", s);
		cr_assert(strstr(s, "syn x2"), "%s", s);
		cr_assert(!strstr(s, "@s/c x"), "%s", s);
		free(s);
	}
}

Test(deps, file_kinds)
{
	cr_assert_eq(deps_file_kind("a/b/package.json"), 'm');
	cr_assert_eq(deps_file_kind("requirements/dev.txt"), 'm');
	cr_assert_eq(deps_file_kind("yarn.lock"), 'l');
	cr_assert_eq(deps_file_kind("go.sum"), 0);
	cr_assert_eq(deps_file_kind("README.md"), 0);
	cr_assert_eq(deps_file_kind("src/x.ts"), 's');
	cr_assert_eq(deps_file_kind(".eslintrc"), 'c');
	cr_assert_eq(deps_file_kind("Makefile"), 'c');
	cr_assert_eq(deps_file_kind("photo.png"), 0);
}

Test(deps, hostile_bytes_never_crash)
{
	static const char junk[] = "import \"\x00\xff\" from '\n\"[dependencies\n{\"dependencies\":[1,2]}require(`";
	cr_assert_eq(deps_add_file(D, "package.json", junk, sizeof(junk) - 1), 0);
	cr_assert_eq(deps_add_file(D, "Cargo.toml", junk, sizeof(junk) - 1), 0);
	cr_assert_eq(deps_add_file(D, "a.js", junk, sizeof(junk) - 1), 0);
	cr_assert_eq(deps_add_file(D, "a.rs", junk, 3), 0);
	findings();
}

/* Inputs are not NUL-terminated: each ends exactly at its last byte (ASan
 * sees a read past it). The first was found by fuzz_deps. */
Test(deps, no_read_past_the_end)
{
	static const char *const inputs[] = {"[",         "x = [\"a",  "gem '",     "require (\n\tgithub.com/a",
	                                     "import \"", "from ",     "name = \"", "\"a@",
	                                     "\"",        "@import '", NULL};
	static const char *const paths[] = {"Cargo.toml", "pyproject.toml", "Gemfile",   "go.mod",       "main.go",
	                                    "m.py",       "Cargo.lock",     "yarn.lock", "package.json", "a.scss",
	                                    "a.rs",       "x.rb",           NULL};
	int i, j;

	for (i = 0; inputs[i]; i++)
		for (j = 0; paths[j]; j++) {
			size_t n = strlen(inputs[i]);
			char *exact = malloc(n);
			cr_assert(exact);
			memcpy(exact, inputs[i], n);
			cr_assert_eq(deps_add_file(D, paths[j], exact, n), 0);
			free(exact);
		}
	findings();
}

Test(deps, python_one_line_arrays_poetry_and_pipfile)
{
	add("pyproject.toml",
	    "[project]\ndependencies = [\"click>=8\", 'rich']\n[tool.poetry.dependencies]\npython = \"^3.11\"\n"
	    "httpx = {version = \"*\", extras = [\"http2\"]}\n[tool.poetry.group.dev.dependencies]\nnever = \"*\"\n");
	add("Pipfile", "[packages]\nattrs = \"*\"\n\n[dev-packages]\nfreezegun = \"*\"\n");
	add("cli.py", "import click\nfrom rich.console import Console\nimport httpx\nimport attr\n");
	cr_assert_str_eq(unused("pypi"), "freezegun,never");
	cr_assert(!has_bloat("dev_in_runtime", "freezegun"));
}

/* The manifest of each unused entry of `eco`, "name@manifest" sorted. */
static const char *unused_at(const char *eco)
{
	static char out[2000];
	const cJSON *it;
	findings();
	out[0] = '\0';
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(F, "unused"))
	{
		if (strcmp(cJSON_GetObjectItem(it, "eco")->valuestring, eco) != 0)
			continue;
		strcat(out, out[0] ? "," : "");
		strcat(out, cJSON_GetObjectItem(it, "name")->valuestring);
		strcat(out, "@");
		strcat(out, cJSON_GetObjectItem(it, "manifest")->valuestring);
	}
	return out;
}

Test(deps, monorepo_workspace_packages_judged_by_their_folder)
{
	add("package.json", "{\"private\":true,\"workspaces\":[\"packages/*\"],\"scripts\":{\"fmt\":\"prettier -w .\"},"
	                    "\"devDependencies\":{\"prettier\":\"3\",\"lerna\":\"8\"}}");
	add("packages/a/package.json",
	    "{\"name\":\"@m/a\",\"dependencies\":{\"express\":\"4\",\"chalk\":\"5\",\"ms\":\"2\"}}");
	add("packages/a/src/index.js", "const express = require('express');\nconst ms = require('ms');\n");
	add("packages/b/package.json", "{\"name\":\"@m/b\",\"dependencies\":{\"@m/"
	                               "a\":\"workspace:*\",\"dayjs\":\"1\",\"ms\":\"2\",\"zod\":\"3\"}}");
	add("packages/b/lib/main.ts",
	    "import dayjs from 'dayjs';\nimport chalk from 'chalk';\nimport {x} from '@m/a';\n");
	add("packages/docs/package.json", "{\"name\":\"@m/docs\",\"dependencies\":{\"nothing-reads-me\":\"1\"}}");
	/* ms: used under a, which declares it itself, never under b; chalk:
	 * declared by a, used by b without a declaration of its own (hoisted):
	 * kept; zod: used nowhere; lerna (root): used nowhere; the docs package
	 * has no source file: nothing said of it */
	cr_assert_str_eq(unused_at("npm"), "lerna@package.json,ms@packages/b/package.json,zod@packages/b/package.json");
}

Test(deps, a_root_manifest_is_judged_by_the_whole_tree)
{
	add("package.json", "{\"dependencies\":{\"react\":\"18\"}}");
	add("apps/web/src/App.jsx", "import React from 'react';\n");
	cr_assert_str_eq(unused("npm"), "");
}

Test(deps, python_subproject_setup_cfg_and_requirements_folder)
{
	add("services/api/pyproject.toml", "[project]\nname = \"api\"\ndependencies = [\"fastapi\", \"orjson>=3\"]\n");
	add("services/api/app/main.py", "from fastapi import FastAPI\nimport click\n");
	add("libs/util/setup.cfg",
	    "[metadata]\nname = util\n\n[options]\npackages = find:\ninstall_requires =\n    requests>=2.0\n"
	    "    attrs ; python_version>'3.8'\n    # a comment\n    -e git+https://x/y\nsetup_requires = "
	    "setuptools_scm\n"
	    "tests_require = freezegun\n\n[options.extras_require]\ncli = click\nyaml =\n    PyYAML\n\n"
	    "[flake8]\nmax-line-length = 100\n");
	add("libs/util/util/__init__.py", "import requests\nimport yaml\n");
	add("backend/requirements/base.txt", "Django\nsimplejson\n");
	add("backend/app/views.py", "import django\n");
	/* click: extras of util, used only by services/api, whose manifest does not declare it: kept */
	cr_assert_str_eq(unused_at("pypi"), "orjson@services/api/pyproject.toml,attrs@libs/util/setup.cfg,"
	                                    "freezegun@libs/util/setup.cfg,simplejson@backend/requirements/base.txt");
	cr_assert(has_bloat("lighter", "simplejson"));
}

Test(deps, setup_cfg_file_references_and_words)
{
	add("setup.cfg", "[options]\ninstall_requires = file: requirements.in\n[mypy]\nstrict = true\n");
	add("requirements.txt", "pytest-cov\nmypy\n");
	add("m.py", "import os\n");
	findings();
	cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(F, "declared")), 2);
	cr_assert_str_eq(unused("pypi"), "");
}

Test(deps, cargo_workspace_dependencies)
{
	add("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n\n[workspace.dependencies]\nserde = \"1\"\n"
	                  "anyhow = \"1\"\n\n[workspace.dependencies.tokio]\nversion = \"1\"\n");
	add("crates/core/Cargo.toml", "[package]\nname = \"core\"\n\n[dependencies]\nserde.workspace = true\n"
	                              "anyhow = { workspace = true }\n");
	add("crates/core/src/lib.rs", "use serde::Serialize;\n");
	add("crates/cli/src/main.rs", "#[tokio::main]\nasync fn main() {}\n");
	cr_assert_str_eq(unused_at("cargo"), "anyhow@Cargo.toml,anyhow@crates/core/Cargo.toml");
}

Test(deps, pnpm_lock_duplicates)
{
	add("pnpm-lock.yaml",
	    "lockfileVersion: '6.0'\n\nimporters:\n\n  .:\n    dependencies:\n      a:\n"
	    "        specifier: ^1\n\npackages:\n\n  /a@1.0.0:\n    resolution: {integrity: x}\n\n"
	    "  /a@2.0.0(react@18.0.0):\n    resolution: {integrity: y}\n\n  /@s/c@1.0.0:\n"
	    "    dev: false\n\n  /@s/c@1.1.0:\n    dev: false\n\n  /d/1.0.0_e@1.0.0:\n    dev: false\n\n"
	    "  /d/1.0.0:\n    dev: false\n");
	findings();
	{
		char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(F, "bloat"));
		cr_assert(strstr(s, "2 packages locked at several versions (") && strstr(s, "a x2") &&
		                  strstr(s, "@s/c x2") && !strstr(s, "d x2") && strstr(s, "pnpm-lock.yaml"),
		          "%s", s);
		free(s);
	}
	cr_assert_eq(deps_file_kind("web/pnpm-lock.yaml"), 'l');
	cr_assert_eq(deps_file_kind("pkg/setup.cfg"), 'm');
}

Test(deps, manifests_deeper_than_the_bound_are_words_only)
{
	add("a/b/c/d/e/package.json", "{\"dependencies\":{\"deep-dep\":\"1\"}}");
	add("a/b/c/d/package.json", "{\"dependencies\":{\"left-pad\":\"1\"}}");
	add("a/b/c/d/x.js", "require('fs')\n");
	findings();
	cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(F, "declared")), 1);
	cr_assert_str_eq(unused("npm"), "left-pad");
	{
		char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(F, "notes"));
		cr_assert(strstr(s, "deeper than the manifests read"), "%s", s);
		free(s);
	}
}
