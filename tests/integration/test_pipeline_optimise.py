"""factory-pipeline's optimise mode, end to end against the GitLab double:

- unused dependencies: a sample repository with an npm, a Python, a Go, a
  Cargo and a Ruby manifest and real source files is cloned and read; the
  entries no file uses are listed in the dependencies proposal, the used ones
  (imports, scoped subpaths, distribution names like PyYAML -> yaml, crates
  with '-', tools named only in scripts or CI) are not; bloat (declared twice,
  a test tool at run time, a lighter replacement, lock file duplicates) joins
  the same proposal; a rerun writes nothing, a dry run writes nothing;
- clean-up: a merged Factory branch is deleted (merged into the default
  branch, or through a merged MR whose head it still is); a human branch, a
  protected one, one with an open MR, one implement has claimed and one with
  new commits after its merge are kept; a stale Factory MR is closed with a
  neutral note, a fresh one, a human's and a claimed one are not; the cap
  holds; a rerun and a dry run write nothing;
- group scope: every project of a group under its own settings, an opted-out
  project untouched, the cap counted across the group.
"""
import json
import os
import shutil
import tempfile
import time
import unittest

from lib.double import Double
from lib.factory import gl, job_env, run_job
from lib.implement import claim_marker, project_seed

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")

SAMPLE = {
    "README.md": "# sample\nWe once used tabulate and nokogiri; no more.\n",
    ".gitlab-ci.yml": ("test:\n  script:\n    - npm run lint\n    - pytest -q\n    - bundle exec rspec\n"
                       "    - go vet ./...\n"),
    # npm
    "package.json": json.dumps({
        "name": "sample", "scripts": {"lint": "eslint src", "test": "jest", "build": "tsc -p ."},
        "dependencies": {"express": "^4.18.0", "@acme/ui": "^2.0.0", "moment": "^2.29.0", "jest": "^29.0.0",
                         "is-odd": "^3.0.1"},
        "devDependencies": {"eslint": "^8.0.0", "typescript": "^5.0.0", "chai": "^4.0.0", "express": "^4.18.0",
                            "@types/node": "^20.0.0"}}, indent=2),
    "package-lock.json": json.dumps({"lockfileVersion": 3, "packages": {
        "": {"name": "sample"}, "node_modules/ms": {"version": "2.1.3"},
        "node_modules/debug/node_modules/ms": {"version": "2.0.0"}, "node_modules/debug": {"version": "2.6.9"}}}),
    "src/server.js": ("const express = require('express');\nimport { Button } from '@acme/ui/button';\n"
                      "import moment from \"moment\";\nimport { helper } from './helper';\n"
                      "const app = express();\n"),
    "src/helper.ts": "export const helper = (s: string) => s.trim();\n",
    # Python
    "requirements.txt": "PyYAML==6.0.1\nbeautifulsoup4>=4.12\nPillow\nrequests[socks]==2.31.0\ntabulate==0.9\npytest\n",
    "app/__init__.py": "",
    "app/main.py": ("import os, yaml\nfrom bs4 import BeautifulSoup\nfrom PIL import Image\nimport requests as rq\n"
                    "from . import helpers\n"),
    # Go
    "go.mod": ("module example.com/sample\n\ngo 1.22\n\nrequire (\n\tgithub.com/gorilla/mux v1.8.0\n"
               "\tgithub.com/unused/thing v1.0.0\n\tgolang.org/x/sys v0.15.0 // indirect\n)\n"),
    "cmd/sample/main.go": ("package main\n\nimport (\n\t\"fmt\"\n\n\t\"github.com/gorilla/mux\"\n)\n\n"
                           "func main() { fmt.Println(mux.NewRouter()) }\n"),
    # Cargo
    "Cargo.toml": ("[package]\nname = \"sample\"\nversion = \"0.1.0\"\n\n[dependencies]\n"
                   "serde = { version = \"1\", features = [\"derive\"] }\nregex-lite = \"0.1\"\nunused-crate = \"1\"\n"),
    "src/main.rs": ("use serde::Serialize;\n\nfn main() {\n    let re = regex_lite::Regex::new(\"a+\").unwrap();\n"
                    "    println!(\"{}\", re.is_match(\"aa\"));\n}\n"),
    # Ruby
    "Gemfile": ("source 'https://rubygems.org'\n\ngem 'sinatra'\ngem 'nokogiri'\n\ngroup :test do\n"
                "  gem 'rspec'\nend\n"),
    "lib/app.rb": "require 'sinatra'\n\nget('/') { 'hi' }\n",
}

UNUSED = {"is-odd", "chai", "tabulate", "github.com/unused/thing", "unused-crate", "nokogiri"}
USED = {"express", "@acme/ui", "moment", "jest", "eslint", "typescript", "@types/node", "PyYAML", "beautifulsoup4",
        "Pillow", "requests", "pytest", "github.com/gorilla/mux", "golang.org/x/sys", "serde", "regex-lite", "sinatra",
        "rspec"}


def writes(double):
    return [r for r in double.requests() if r["method"] in WRITE_METHODS]


def writes_besides_ledger(double, pids=(1,)):
    """Writes other than the ledger's update: every run records in the ledger
    issue when it ran (the mark repair mode starts from next time)."""
    ledgers = set()
    for pid in pids:
        p = gl(double, "GET", "/projects/%d" % pid)
        for i in gl(double, "GET", "/projects/%d/issues?labels=factory::ledger&state=all" % pid):
            for ref in (str(pid), enc(p["path_with_namespace"])):
                ledgers.add("/api/v4/projects/%s/issues/%d" % (ref, i["iid"]))
    return [w for w in writes(double) if not (w["method"] == "PUT" and w["path"] in ledgers)]


def enc(s):
    return s.replace("/", "%2F")


def iso_days_ago(days):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))


def table_after(text, heading):
    """The first column in backticks of the Markdown table after `heading`."""
    i = text.find(heading)
    if i < 0:
        return set()
    names = set()
    for line in text[i:].split("\n")[1:]:
        if line.startswith("| ") and "`" in line:
            names.add(line.split("`")[1])
        elif names and not line.strip():
            break
    return names


class Base(unittest.TestCase):
    def start(self, files, extra=None):
        self.d = Double(seed=project_seed(files=files, extra=extra))
        self.addCleanup(self.d.stop)

    def run_pipeline(self, *args, extra=None, project="factory/demo", double=None):
        e = job_env(double or self.d, project=project)
        e["FACTORY_PIPELINE_MODE"] = "optimise"
        e["FACTORY_PIPELINE_MAX_LOOKUPS"] = "0"   # no registry: nothing leaves the machine
        e["FACTORY_GIT_AUTHOR_NAME"] = "Factory Bot"
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        r = run_job("pipeline", double or self.d, *args, env=e)
        self.assertNotIn("Traceback", r.stderr)
        return r

    def proposals(self, pid=1, state="opened"):
        return gl(self.d, "GET", "/projects/%d/issues?labels=factory::ci-proposal&state=%s&per_page=100" % (pid, state))


class DependencyUseTest(Base):
    def test_unused_dependencies_and_bloat_in_one_proposal(self):
        self.start(SAMPLE)
        r = self.run_pipeline()
        self.assertEqual(r.returncode, 0, r)
        props = self.proposals()
        self.assertEqual(len(props), 1, [p["title"] for p in props])
        body = props[0]["description"]
        self.assertIn("unused or bloated", props[0]["title"])
        unused = table_after(body, "Declared but never used")
        self.assertEqual(unused, UNUSED, body)
        self.assertFalse(unused & USED)
        bloat = body[body.index("Bloat:"):]
        for needle in ("declared twice | npm | `express`", "development tool at run time | npm | `jest`",
                       "development tool at run time | pypi | `pytest`", "lighter replacement | npm | `moment`",
                       "lock file duplicates | npm | `package-lock.json`", "ms x2"):
            self.assertIn(needle, bloat, needle)
        self.assertEqual(r.report["counters"]["deps_unused"], len(UNUSED))
        self.assertEqual(r.report["counters"]["deps_files_read"], 14)  # README.md is not read
        # a rerun: the proposal is open, nothing is written again
        before = len(writes_besides_ledger(self.d))
        r2 = self.run_pipeline()
        self.assertEqual(r2.returncode, 0, r2)
        self.assertEqual(writes_besides_ledger(self.d)[before:], [])
        self.assertEqual(len(self.proposals(state="all")), 1)

    def test_dry_run_writes_nothing_and_settings_extend_the_tables(self):
        files = dict(SAMPLE)
        files[".factory.yml"] = ("pipeline:\n  deps:\n    keep: [chai]\n    aliases: {tabulate: tab_alias}\n"
                                 "    lighter: {npm: {express: 'the built-in node:http'}}\n")
        files["app/extra.py"] = "import tab_alias\n"
        self.start(files)
        tmp = tempfile.mkdtemp(prefix="factory-pipe-optimise-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cfg = os.path.join(tmp, "settings.yml")
        with open(cfg, "w") as f:
            f.write(files[".factory.yml"])
        r = self.run_pipeline("--dry-run", "--config", cfg)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(self.proposals(), [])
        self.assertIn("dry-run", r.stderr)
        self.assertEqual(r.report["counters"]["deps_unused"], len(UNUSED) - 2)
        self.assertIn("issue.optimise", json.dumps(r.report["actions"]))

    def test_the_deps_command_reads_a_local_checkout_and_never_follows_a_link(self):
        tmp = tempfile.mkdtemp(prefix="factory-pipe-deps-")
        self.addCleanup(shutil.rmtree, tmp, True)
        repo = os.path.join(tmp, "repo")
        for rel, text in SAMPLE.items():
            path = os.path.join(repo, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        # outside the checkout: a file that would make tabulate "used" if the link were followed
        with open(os.path.join(tmp, "outside.py"), "w") as f:
            f.write("import tabulate\n")
        os.symlink(os.path.join(tmp, "outside.py"), os.path.join(repo, "app", "linked.py"))
        os.makedirs(os.path.join(repo, "node_modules", "is-odd"))
        with open(os.path.join(repo, "node_modules", "is-odd", "index.js"), "w") as f:
            f.write("require('is-odd')\n")
        r = run_job("pipeline", None, "deps", repo, env=job_env())
        self.assertEqual(r.returncode, 0, r)
        f = json.loads(r.stdout)
        self.assertEqual({u["name"] for u in f["unused"]}, UNUSED)
        self.assertEqual(f["files"], 14)
        r = run_job("pipeline", None, "deps", os.path.join(tmp, "missing"), env=job_env())
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("not a directory", r.stderr)

    def test_a_monorepo_each_manifest_judged_by_its_folder(self):
        files = {
            # an npm workspace: two packages; ms is used under a (which declares it) and never under b
            "package.json": json.dumps({"name": "mono", "private": True, "workspaces": ["packages/*"],
                                        "scripts": {"fmt": "prettier -w ."}, "devDependencies": {"prettier": "^3"}}),
            "packages/a/package.json": json.dumps({"name": "@mono/a", "dependencies": {
                "express": "^4", "chalk": "^5", "ms": "^2"}}),
            "packages/a/src/index.js": "const express = require('express');\nconst ms = require('ms');\n",
            "packages/b/package.json": json.dumps({"name": "@mono/b", "dependencies": {
                "@mono/a": "workspace:*", "dayjs": "^1", "ms": "^2"}}),
            # chalk: declared by a, used by b without a declaration (hoisted): kept
            "packages/b/lib/main.ts": ("import dayjs from 'dayjs';\nimport chalk from 'chalk';\n"
                                       "import { x } from '@mono/a';\n"),
            # a Python subproject and a setup.cfg library
            "services/api/pyproject.toml": "[project]\nname = \"api\"\ndependencies = [\"fastapi\", \"orjson>=3\"]\n",
            "services/api/app/main.py": "from fastapi import FastAPI\n",
            "libs/util/setup.cfg": "[options]\ninstall_requires =\n    requests>=2\n    attrs\n",
            "libs/util/util/__init__.py": "import requests\n",
        }
        self.start(files)
        r = self.run_pipeline()
        self.assertEqual(r.returncode, 0, r)
        props = self.proposals()
        self.assertEqual(len(props), 1, [p["title"] for p in props])
        body = props[0]["description"]
        rows = {}
        i = body.index("Declared but never used")
        for line in body[i:].split("\n")[2:]:
            if not line.startswith("| "):
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and "`" in cells[1]:
                rows[cells[1].strip("`")] = cells[2]
        self.assertEqual(rows, {"ms": "packages/b/package.json", "orjson": "services/api/pyproject.toml",
                                "attrs": "libs/util/setup.cfg"}, body)
        self.assertEqual(r.report["counters"]["deps_unused"], 3)

    def test_a_manifest_only_in_a_subfolder_is_read(self):
        self.start({"README.md": "# tools\n", "tools/py/requirements.txt": "requests\ntabulate\n",
                    "tools/py/run.py": "import requests\n"})
        r = self.run_pipeline()
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("dependency use", r.stderr)
        props = self.proposals()
        self.assertEqual(len(props), 1, r.stderr)
        self.assertIn("| pypi | `tabulate` | tools/py/requirements.txt |", props[0]["description"])
        self.assertIn("recursive", json.dumps(self.d.requests()))

    def test_no_manifest_no_clone(self):
        self.start({"README.md": "# nothing\n"})
        r = self.run_pipeline()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.proposals(), [])
        self.assertNotIn("dependency use", r.stderr)


class CleanupTest(Base):
    def setUp(self):
        issues = [
            {"project_id": 1, "title": "claimed work", "iid": 3, "labels": ["workflow::in progress"],
             "notes": [claim_marker("run-1", branch="factory/3-claimed", started_at=int(time.time()),
                                    lease_until=int(time.time()) + 3600)]},
            {"project_id": 1, "title": "claimed stale work", "iid": 8, "labels": ["workflow::in progress"],
             "notes": [claim_marker("run-2", branch="factory/8-claimed-stale", started_at=int(time.time()),
                                    lease_until=int(time.time()) + 3600)]},
        ]
        self.d = Double(seed=project_seed(files={"README.md": "# demo\n"}, issues=issues,
                                          extra={"users": [{"username": "alice"}]}))
        self.addCleanup(self.d.stop)
        # branches whose head is in main (merged, as GitLab counts it)
        for b in ("factory/1-merged", "factory/2-open-mr", "factory/3-claimed", "feature/human-merged",
                  "factory/4-protected"):
            gl(self.d, "POST", "/projects/1/repository/branches?branch=%s&ref=main" % enc(b))
        # branches with work of their own
        for b in ("factory/5-stale", "factory/6-fresh", "factory/7-human-stale", "factory/8-claimed-stale",
                  "factory/9-merged-by-mr", "factory/10-more-after-merge"):
            gl(self.d, "POST", "/projects/1/repository/commits",
               {"branch": b, "start_branch": "main", "commit_message": "work",
                "actions": [{"action": "create", "file_path": b.split("/")[1] + ".txt", "content": "x\n"}]})
        self.d.protect_branch(1, "factory/4-protected")
        old = iso_days_ago(30)
        self.d.seed({"merge_requests": [
            {"project_id": 1, "source_branch": "factory/9-merged-by-mr", "title": "Merged work", "state": "merged"},
            {"project_id": 1, "source_branch": "factory/10-more-after-merge", "title": "Merged", "state": "merged"},
            {"project_id": 1, "source_branch": "factory/2-open-mr", "title": "Open work", "created_at": iso_days_ago(1)},
            {"project_id": 1, "source_branch": "factory/5-stale", "title": "Stale work", "created_at": old},
            {"project_id": 1, "source_branch": "factory/6-fresh", "title": "Fresh work", "created_at": iso_days_ago(2)},
            {"project_id": 1, "source_branch": "factory/7-human-stale", "title": "Alice's", "created_at": old,
             "author": "alice"},
            {"project_id": 1, "source_branch": "factory/8-claimed-stale", "title": "Claimed", "created_at": old},
        ]})
        # new work after the merge of !2
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": "factory/10-more-after-merge", "commit_message": "more",
            "actions": [{"action": "create", "file_path": "more.txt", "content": "y\n"}]})
        self.d.clear_requests()

    def branches(self):
        return {b["name"] for b in gl(self.d, "GET", "/projects/1/repository/branches?per_page=100")}

    def mrs(self):
        return {m["source_branch"]: m for m in gl(self.d, "GET", "/projects/1/merge_requests?state=all&per_page=100")}

    def test_merged_branches_deleted_stale_mrs_closed_and_nothing_else(self):
        r = self.run_pipeline()
        self.assertEqual(r.returncode, 0, r)
        left = self.branches()
        self.assertNotIn("factory/1-merged", left)
        self.assertNotIn("factory/9-merged-by-mr", left)
        for kept in ("main", "factory/2-open-mr", "factory/3-claimed", "feature/human-merged", "factory/4-protected",
                     "factory/5-stale", "factory/6-fresh", "factory/7-human-stale", "factory/8-claimed-stale",
                     "factory/10-more-after-merge"):
            self.assertIn(kept, left, kept)
        mrs = self.mrs()
        self.assertEqual(mrs["factory/5-stale"]["state"], "closed")
        for still in ("factory/2-open-mr", "factory/6-fresh", "factory/7-human-stale", "factory/8-claimed-stale"):
            self.assertEqual(mrs[still]["state"], "opened", still)
        notes = gl(self.d, "GET", "/projects/1/merge_requests/%d/notes?per_page=100" % mrs["factory/5-stale"]["iid"])
        ours = [n for n in notes if not n["system"]]
        self.assertEqual(len(ours), 1, notes)
        self.assertIn("no activity for 14 days", ours[0]["body"])
        self.assertNotIn("@", ours[0]["body"])
        self.assertFalse(any(line.startswith("/") for line in ours[0]["body"].split("\n")))
        c = r.report["counters"]
        self.assertEqual((c["branches_deleted"], c["stale_mrs_closed"], c["cleanups"]), (2, 1, 3))
        # the stale MR's branch has no open MR now and is not merged: kept
        # a rerun writes nothing
        before = len(writes_besides_ledger(self.d))
        r2 = self.run_pipeline()
        self.assertEqual(r2.returncode, 0, r2)
        self.assertEqual(writes_besides_ledger(self.d)[before:], [])

    def test_dry_run_writes_nothing_and_the_cap_holds(self):
        r = self.run_pipeline("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertIn("factory/1-merged", self.branches())
        kinds = sorted(json.dumps(a) for a in r.report["actions"])
        self.assertEqual(len([k for k in kinds if "branch.delete" in k]), 2, kinds)
        self.assertEqual(len([k for k in kinds if "mr.close_stale" in k]), 1, kinds)
        r = self.run_pipeline("--max-cleanups", "1")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["cleanups"], 1)
        cleanups = [w for w in writes(self.d) if w["method"] == "DELETE" or
                    (w["method"] == "PUT" and "/merge_requests/" in w["path"])]
        self.assertEqual(len(cleanups), 1, writes(self.d))


class GroupScopeTest(Base):
    def test_every_project_of_the_group_under_its_own_settings(self):
        d = Double()
        self.addCleanup(d.stop)
        self.d = d
        d.seed({"groups": ["acme"], "projects": [
            {"path_with_namespace": "acme/web", "default_branch": "main",
             "files": {"README.md": "web\n", ".factory.yml": "pipeline:\n  branch_prefix: bot/\n"}},
            {"path_with_namespace": "acme/api", "default_branch": "main",
             "files": {"README.md": "api\n", "package.json": json.dumps({"dependencies": {"left": "1", "used": "1"}}),
                       "index.js": "require('used')\n"}},
            {"path_with_namespace": "acme/legacy", "default_branch": "main", "topics": ["factory-opt-out"],
             "files": {"README.md": "legacy\n"}},
        ]})
        ids = {p: gl(d, "GET", "/projects/" + enc(p))["id"] for p in ("acme/web", "acme/api", "acme/legacy")}
        for p, pid in ids.items():
            for b in ("factory/1-done", "bot/2-done"):
                gl(d, "POST", "/projects/%d/repository/branches?branch=%s&ref=main" % (pid, enc(b)))
        d.clear_requests()

        def names(pid):
            return {b["name"] for b in gl(d, "GET", "/projects/%d/repository/branches?per_page=100" % pid)}

        r = self.run_pipeline(project=None, extra={"FACTORY_SCOPE": "group:acme"})
        self.assertEqual(r.returncode, 0, r)
        # web: its own prefix; api: the default one; legacy: opted out
        self.assertEqual(names(ids["acme/web"]), {"main", "factory/1-done"})
        self.assertEqual(names(ids["acme/api"]), {"main", "bot/2-done"})
        self.assertEqual(names(ids["acme/legacy"]), {"main", "factory/1-done", "bot/2-done"})
        projects = {p["path"]: p for p in r.report["data"]["projects"]}
        self.assertFalse(projects["acme/legacy"]["enabled"])
        self.assertEqual(r.report["counters"]["cleanups"], 2)
        props = gl(d, "GET", "/projects/%d/issues?labels=factory::ci-proposal&per_page=100" % ids["acme/api"])
        self.assertEqual(len(props), 1)
        self.assertEqual(table_after(props[0]["description"], "Declared but never used"), {"left"})
        # a rerun writes nothing
        before = len(writes_besides_ledger(d, ids.values()))
        r = self.run_pipeline(project=None, extra={"FACTORY_SCOPE": "group:acme"})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes_besides_ledger(d, ids.values())[before:], [])

    def test_the_cap_is_per_run_across_the_group(self):
        d = Double()
        self.addCleanup(d.stop)
        d.seed({"groups": ["acme"], "projects": [
            {"path_with_namespace": "acme/a", "default_branch": "main", "files": {"README.md": "a\n"}},
            {"path_with_namespace": "acme/b", "default_branch": "main", "files": {"README.md": "b\n"}},
        ]})
        for p in ("acme/a", "acme/b"):
            pid = gl(d, "GET", "/projects/" + enc(p))["id"]
            for b in ("factory/1-x", "factory/2-y"):
                gl(d, "POST", "/projects/%d/repository/branches?branch=%s&ref=main" % (pid, enc(b)))
        d.clear_requests()
        r = self.run_pipeline("--max-cleanups", "3", project=None, double=d, extra={"FACTORY_SCOPE": "group:acme"})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len([w for w in writes(d) if w["method"] == "DELETE"]), 3)
        self.assertEqual(r.report["counters"]["cleanups"], 3)


if __name__ == "__main__":
    unittest.main()
