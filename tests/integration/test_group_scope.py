"""Triage, release and watch over a whole group (FACTORY_SCOPE=group:<path>),
end to end against the GitLab double.

The group `acme` has a subgroup; one project overrides the group's policy
with its own .factory.yml, one is opted out by the `factory-opt-out` topic,
one has a broken .factory.yml. Each job works on each project under that
project's settings, leaves the others alone, reports per project and in
total (with the calls it made per issue handled), makes no write on a
rerun, none in a dry run, and a project that fails does not stop the rest.
"""
import json
import os
import shutil
import tempfile
import threading
import time
import unittest

from integration import test_watch as tw
from lib.double import Double
from lib.factory import gl, job_env, run_job
from lib.llm import LLMDouble

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")

WEB, API, LEGACY, BROKEN = "acme/web", "acme/platform/api", "acme/platform/legacy", "acme/broken"
PATHS = (WEB, API, LEGACY, BROKEN)

ISSUES = [
    ("The app crashes with a 500 error when I save my profile", "Every save fails since this morning."),
    ("Add a dark mode", "It would be nice to have a dark theme."),
    ("Typo on the pricing page", "It says 'recieve'."),
    ("Export to CSV", "Please let us export the reports as CSV."),
    ("Search is slow", "Searching takes ten seconds, but it works in the end."),
]


def writes(requests):
    return [r for r in requests if r["method"] in WRITE_METHODS]


def enc(path):
    return path.replace("/", "%2F")


def seed_group(double, web_file, broken_file="triage: [unclosed\n"):
    """The group, its projects (ids by path) and the same issues in each."""
    got = double.seed({
        "groups": ["acme", "acme/platform"],
        "projects": [
            {"path_with_namespace": WEB, "default_branch": "main",
             "files": {"README.md": "web\n", ".factory.yml": web_file}},
            {"path_with_namespace": API, "default_branch": "main", "files": {"README.md": "api\n"}},
            {"path_with_namespace": LEGACY, "default_branch": "main", "topics": ["factory-opt-out"],
             "files": {"README.md": "legacy\n"}},
            {"path_with_namespace": BROKEN, "default_branch": "main",
             "files": {"README.md": "broken\n", ".factory.yml": broken_file}},
        ]})
    ids = {p: gl(double, "GET", "/projects/" + enc(p))["id"] for p in PATHS}
    assert len(set(ids.values())) == len(PATHS), got
    return ids


def project_issues(double, pid):
    return {i["iid"]: i for i in gl(double, "GET", "/projects/%d/issues?state=all&per_page=100" % pid)}


def group_run(job, double, *args, extra=None, config=None, report_dir=None):
    env = job_env(double, project=None, extra=dict({"FACTORY_SCOPE": "group:acme"}, **(extra or {})))
    if config is not None:
        d = tempfile.mkdtemp(prefix="group-cfg-")
        path = os.path.join(d, "group.yml")
        with open(path, "w") as f:
            f.write(config)
        args = ("--config", path) + tuple(args)
    return run_job(job, double, *args, env=env, report_dir=report_dir)


def by_path(report):
    return {p["path"]: p for p in report["data"]["projects"]}


class TriageGroupTest(unittest.TestCase):
    def setUp(self):
        self.double = Double(tier="premium")
        self.addCleanup(self.double.stop)
        # acme/web: its own policy (Up Next holds one, issues labelled
        # "parked" are not triaged); the rest run on the group's.
        self.ids = seed_group(self.double, "triage:\n  wip_limit: 1\n  skip_labels: parked\n")
        issues = []
        for path in PATHS:
            for title, desc in ISSUES:
                issues.append({"project_id": self.ids[path], "title": title, "description": desc, "labels": []})
            issues.append({"project_id": self.ids[path], "title": "Parked: rewrite the billing module",
                           "description": "Later.", "labels": ["parked"]})
        self.double.seed({"issues": issues})
        setup = run_job("setup", self.double, env=job_env(self.double, project=None,
                                                          extra={"FACTORY_SCOPE": "group:acme"}))
        # setup fails for the broken project's file (exit 2), after the group labels and board are made
        self.assertEqual(setup.returncode, 2, setup)
        self.double.clear_requests()
        self.report_dir = tempfile.mkdtemp(prefix="group-triage-")
        self.addCleanup(shutil.rmtree, self.report_dir, True)

    def triage(self, *args, **kw):
        return group_run("triage", self.double, *args, **kw)

    def test_each_project_under_its_own_policy(self):
        r = self.triage(report_dir=self.report_dir)
        requests = self.double.requests()
        # The broken project's file fails the run (exit 2), after the others were triaged.
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("acme/broken/.factory.yml", r.stderr)
        projects = by_path(r.report)
        self.assertEqual(set(projects), set(PATHS))
        self.assertEqual(projects[WEB]["result"], "ok")
        self.assertEqual(projects[API]["result"], "ok")
        self.assertEqual(projects[LEGACY]["result"], "left out")
        self.assertIn("factory-opt-out", projects[LEGACY]["why"])
        self.assertEqual(projects[BROKEN]["result"], "settings error")

        web, api = project_issues(self.double, self.ids[WEB]), project_issues(self.double, self.ids[API])
        for issues, parked_triaged in ((web, False), (api, True)):
            for i in issues.values():
                triaged = any(l.startswith("priority::") for l in i["labels"])
                if "parked" in i["labels"]:
                    self.assertEqual(triaged, parked_triaged, i)
                else:
                    self.assertTrue(triaged, i)
                    self.assertIn("triage::factory", i["labels"])
        # Up Next per project: web's own limit of one, api the group's default of five (of its six).
        self.assertEqual(sum("workflow::up next" in i["labels"] for i in web.values()), 1)
        self.assertEqual(sum("workflow::up next" in i["labels"] for i in api.values()), 5)
        for path in (LEGACY, BROKEN):
            for i in project_issues(self.double, self.ids[path]).values():
                self.assertEqual(i["labels"], ["parked"] if i["title"].startswith("Parked") else [], path)
        # Nothing was sent to the projects left out but the listing and the file read.
        for path in (LEGACY, BROKEN):
            sent = [q for q in requests if q["path"].startswith("/api/v4/projects/%d/" % self.ids[path])]
            self.assertTrue(all("/repository/files/" in q["path"] for q in sent), sent)

        # Per project and totals, with the calls per issue handled.
        c = r.report["counters"]
        self.assertEqual(c["api_requests"], len(requests))
        self.assertEqual(projects[WEB]["counters"]["triaged"], len(ISSUES))
        self.assertEqual(projects[API]["counters"]["triaged"], len(ISSUES) + 1)
        self.assertEqual(c["triaged"], 2 * len(ISSUES) + 1)
        self.assertEqual(c["issues_handled"], c["triaged"])
        self.assertEqual(c["api_calls_per_issue"], (c["api_requests"] + c["issues_handled"] // 2) // c["issues_handled"])
        per_project = sum(p["counters"].get("api_requests", 0) for p in projects.values())
        # The rest is loading the group: one listing, one file read per project not opted out by topic.
        self.assertEqual(c["api_requests"] - per_project, 1 + 3)
        for path in (WEB, API):
            own = projects[path]["counters"]
            self.assertEqual(own["issues_handled"], own["triaged"])
            self.assertGreater(own["api_calls_per_issue"], 0)
            with open(os.path.join(self.report_dir, projects[path]["report"])) as f:
                sub = json.load(f)
            self.assertEqual(sub["counters"]["triaged"], own["triaged"])
            self.assertTrue(sub["data"]["up_next"])
        self.assertEqual(c["projects"], 4)
        self.assertEqual(c["projects_taking_part"], 2)
        self.assertTrue(any(a["target"].startswith(WEB + "#") for a in r.report["actions"]))
        self.assertIn("| acme/platform/legacy | left out |", r.report_md)

        # A rerun makes no write at all.
        self.double.clear_requests()
        again = self.triage()
        self.assertEqual(again.returncode, 2, again)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(again.report["actions"], [])
        self.assertIn("no write made", again.report["summary"])

    def test_dry_run_writes_nothing(self):
        r = self.triage("--dry-run")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertGreater(len(r.report["actions"]), 0)
        self.assertIn("dry run", r.report["summary"])
        for path in (WEB, API):
            for i in project_issues(self.double, self.ids[path]).values():
                self.assertFalse(any(l.startswith("priority::") for l in i["labels"]), i)

    def test_a_failing_project_does_not_stop_the_others(self):
        # Fix the broken file: now only the 403 fails.
        self.double.seed({"projects": [{"path_with_namespace": BROKEN, "files": {".factory.yml": "triage: {}\n"}}]})
        self.double.faults([{"method": "GET", "path_regex": r"^/api/v4/projects/%d/issues" % self.ids[WEB],
                             "status": 403, "times": -1}])
        r = self.triage()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("acme/web", r.stderr)
        projects = by_path(r.report)
        self.assertEqual(projects[WEB]["result"], "failed")
        self.assertIn("403", projects[WEB]["error"])
        self.assertEqual(projects[API]["result"], "ok")
        self.assertEqual(projects[BROKEN]["result"], "ok")
        self.assertEqual(r.report["counters"]["projects_failed"], 1)
        for path in (API, BROKEN):
            self.assertTrue(all(any(l.startswith("priority::") for l in i["labels"])
                                for i in project_issues(self.double, self.ids[path]).values()), path)

    def test_a_project_file_cannot_send_the_model_key_elsewhere(self):
        # The job has a model key but no model; acme/web's own file names a
        # model at "its" server. The model is the group's only: nothing is sent.
        with LLMDouble() as llm:
            self.double.seed({"projects": [{"path_with_namespace": WEB, "files": {".factory.yml": (
                "llm:\n  provider: anthropic\n  model: claude-x\n  base_url: %s\n" % llm.url)}}],
                "issues": [{"project_id": self.ids[WEB], "title": "asdf", "description": ""}]})
            r = self.triage(extra={"FACTORY_LLM_API_KEY": llm.api_key})
            self.assertEqual(by_path(r.report)[WEB]["result"], "ok", r)
            self.assertEqual(llm.requests(), [])
            self.assertNotIn(llm.api_key, r.output)


class ReleaseGroupTest(unittest.TestCase):
    def setUp(self):
        self.double = Double(tier="premium")
        self.addCleanup(self.double.stop)
        # acme/web: its own tag prefix; the rest the group's ("v").
        self.ids = seed_group(self.double, "release:\n  tag_prefix: web-v\n",
                              broken_file="release: {tag_prefix: [\n")
        closed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
        issues = []
        for path in PATHS:
            issues.append({"project_id": self.ids[path], "title": "Export to CSV", "description": "As a feature.",
                           "labels": ["type::feature"], "state": "closed", "closed_at": closed})
            issues.append({"project_id": self.ids[path], "title": "Crash on save", "description": "A bug.",
                           "labels": ["type::bug"], "state": "closed", "closed_at": closed})
        self.double.seed({"issues": issues})
        self.report_dir = tempfile.mkdtemp(prefix="group-release-")
        self.addCleanup(shutil.rmtree, self.report_dir, True)

    def release(self, *args, **kw):
        return group_run("release", self.double, *args, **kw)

    def releases(self, path):
        return [r["tag_name"] for r in gl(self.double, "GET", "/projects/%d/releases" % self.ids[path])]

    def test_each_project_released_on_its_own(self):
        self.double.clear_requests()
        r = self.release(report_dir=self.report_dir)
        requests = self.double.requests()
        self.assertEqual(r.returncode, 2, r)  # the broken file
        self.assertIn("acme/broken/.factory.yml", r.stderr)
        projects = by_path(r.report)
        self.assertEqual(projects[WEB]["result"], "ok", projects[WEB])
        self.assertEqual(projects[API]["result"], "ok", projects[API])
        self.assertEqual(self.releases(WEB), ["web-v0.1.0"])
        self.assertEqual(self.releases(API), ["v0.1.0"])
        self.assertEqual(self.releases(LEGACY), [])
        self.assertEqual(self.releases(BROKEN), [])
        for path in (WEB, API):
            changelog = self.double.request("GET", "/projects/%d/repository/files/CHANGELOG.md/raw?ref=main"
                                            % self.ids[path])
            self.assertEqual(changelog.status, 200, path)
            self.assertIn("Export to CSV", changelog.text)
            # Each project's notes artifact in its own folder of the report.
            folder = os.path.join(self.report_dir, os.path.dirname(projects[path]["report"]))
            with open(os.path.join(folder, "release-notes.md")) as f:
                self.assertIn("Crash on save", f.read())
            own = projects[path]["counters"]
            self.assertEqual(own["releases"], 1)
            self.assertEqual(own["issues_handled"], 2)
            self.assertEqual(own["api_calls_per_issue"], (own["api_requests"] + 1) // 2)
        for path in (LEGACY, BROKEN):
            sent = [q for q in requests if q["path"].startswith("/api/v4/projects/%d/" % self.ids[path])]
            self.assertTrue(all("/repository/files/" in q["path"] for q in sent), sent)
        # The Factory's own user is read once for the whole group, not per project.
        self.assertEqual([q["path"] for q in requests if q["path"] == "/api/v4/user"], ["/api/v4/user"])
        c = r.report["counters"]
        self.assertEqual(c["releases"], 2)
        self.assertEqual(c["issues_handled"], 4)
        self.assertEqual(c["api_requests"], len(requests))
        self.assertEqual(c["api_calls_per_issue"], (c["api_requests"] + 2) // 4)
        self.assertTrue(any(a["kind"] == "release.create" and a["target"] == WEB + ": web-v0.1.0"
                            for a in r.report["actions"]), r.report["actions"])

        # A rerun: nothing changed anywhere, no write.
        self.double.clear_requests()
        again = self.release()
        self.assertEqual(again.returncode, 2, again)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(again.report["counters"]["releases"], 0)
        self.assertEqual(self.releases(WEB), ["web-v0.1.0"])

    def test_dry_run_writes_nothing(self):
        self.double.clear_requests()
        r = self.release("--dry-run")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertIn("dry run", r.report["summary"])
        self.assertTrue(any(a["target"] == API + ": v0.1.0" for a in r.report["actions"]), r.report["actions"])
        self.assertEqual(self.releases(API), [])

    def test_one_version_for_a_group_is_refused(self):
        r = self.release("--release-version", "1.0.0")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("release.version", r.stderr)
        self.assertEqual(writes(self.double.requests()), [])


class WatchGroupTest(unittest.TestCase):
    """acme/web names its own log source (over HTTP), acme/platform/api none:
    web is watched and its issues filed in web, api is skipped and the report
    says so."""

    def setUp(self):
        self.double = Double(tier="premium")
        self.addCleanup(self.double.stop)
        lines = tw.baseline_lines() + tw.window_lines()
        self.server = tw.LogServer("\n".join(lines) + "\n", [])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.url = "http://127.0.0.1:%d/app.log" % self.server.server_address[1]
        self.ids = seed_group(self.double, "watch:\n  source: %s\n" % self.url,
                              broken_file="watch: {source: [\n")
        self.dir = tempfile.mkdtemp(prefix="group-watch-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def watch(self, *args, config=None, **kw):
        return group_run("watch", self.double, "--now", tw.NOW, "--window", "15m", "--baseline", "2h", *args,
                         config=config, **kw)

    def filed(self, path):
        return [i for i in project_issues(self.double, self.ids[path]).values() if "source::factory" in i["labels"]]

    def test_projects_with_a_source_are_watched(self):
        self.double.clear_requests()
        r = self.watch()
        requests = self.double.requests()
        self.assertEqual(r.returncode, 2, r)  # the broken file
        projects = by_path(r.report)
        self.assertEqual(projects[WEB]["result"], "ok", projects[WEB])
        web = self.filed(WEB)
        self.assertEqual(len(web), 1, web)
        self.assertIn("payment failed for order", web[0]["title"])
        self.assertEqual(projects[WEB]["counters"]["issues_filed"], 1)
        self.assertEqual(projects[WEB]["counters"]["issues_handled"], 1)
        self.assertEqual(projects[API]["result"], "ok")
        self.assertEqual(projects[API]["counters"]["skipped_no_source"], 1)
        self.assertIn("no log source", projects[API]["summary"])
        self.assertEqual(self.filed(API), [])
        self.assertFalse(any(q["path"].startswith("/api/v4/projects/%d/" % self.ids[API])
                             and "/repository/files/" not in q["path"] for q in requests))
        c = r.report["counters"]
        self.assertEqual((c["watched"], c["skipped_no_source"], c["issues_filed"]), (1, 1, 1))
        self.assertEqual(c["issues_handled"], 1)
        self.assertEqual(c["api_calls_per_issue"], c["api_requests"])
        self.assertEqual(c["api_requests"], len(requests))
        self.assertIn("no log source", r.report["summary"])

        # The same window again: nothing new, no write.
        self.double.clear_requests()
        again = self.watch()
        self.assertEqual(again.returncode, 2, again)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(len(self.filed(WEB)), 1)

    def test_dry_run_writes_nothing(self):
        self.double.clear_requests()
        r = self.watch("--dry-run")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(r.report["counters"]["issues_filed"], 1)
        self.assertEqual(self.filed(WEB), [])

    def test_files_on_the_runner_are_the_groups_to_name(self):
        logs = tempfile.mkdtemp(prefix="group-watch-logs-")
        self.addCleanup(shutil.rmtree, logs, True)
        with open(os.path.join(logs, "app.log"), "w") as f:
            f.write("\n".join(tw.baseline_lines() + tw.window_lines()) + "\n")
        # The group's own settings name a file: every project without its own source reads it.
        self.double.seed({"projects": [{"path_with_namespace": BROKEN, "files": {".factory.yml": "watch:\n  source: "
                                                                                   "/etc/hostname\n"}}]})
        r = self.watch(config="watch:\n  source: %s\n" % os.path.join(logs, "app.log"))
        self.assertEqual(r.returncode, 2, r)
        projects = by_path(r.report)
        self.assertEqual(len(self.filed(WEB)), 1)   # its own, over HTTP
        self.assertEqual(len(self.filed(API)), 1)   # the group's file
        # A project's own file may not name a file on the runner.
        self.assertEqual(projects[BROKEN]["result"], "failed")
        self.assertIn("not an http(s) URL", projects[BROKEN]["error"])
        self.assertEqual(self.filed(BROKEN), [])

    def test_an_unreachable_source_fails_that_project_only(self):
        self.double.seed({"projects": [{"path_with_namespace": BROKEN, "files": {".factory.yml": "watch:\n  source: "
                                                                                   "http://127.0.0.1:9/app.log\n"}}]})
        r = self.watch()
        self.assertEqual(r.returncode, 1, r)
        projects = by_path(r.report)
        self.assertEqual(projects[BROKEN]["result"], "failed")
        self.assertIn("log source is unavailable", projects[BROKEN]["error"])
        self.assertEqual(projects[WEB]["result"], "ok")
        self.assertEqual(len(self.filed(WEB)), 1)


if __name__ == "__main__":
    unittest.main()
