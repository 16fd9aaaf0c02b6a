"""Scaling past one project, end to end against the GitLab double:

- FACTORY_SCOPE=group:<path>: factory-setup makes group labels and a group
  board (Premium), or puts the lists on the group's one board (Free), is
  idempotent, uses a parent group's labels, and reports which projects of
  the group (subgroups included) take part: topics, a project's own
  .factory.yml over the group's settings, opt-in groups, broken files;
- one API budget: a job paced by the RateLimit-* headers finishes with no
  429 where the same job unpaced is refused, and two jobs on one token stay
  under it together.
"""
import os
import tempfile
import threading
import time
import unittest

from lib.double import Double
from lib.factory import gl, job_env, run_job

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
WORKFLOW = ["workflow::up next", "workflow::in progress", "workflow::validation"]

GROUP_SEED = {
    "groups": ["acme", "acme/platform", "acme/platform/deep"],
    "projects": [
        {"path_with_namespace": "acme/web",
         "files": {".factory.yml": "triage:\n  wip_limit: 4\n"}},
        {"path_with_namespace": "acme/platform/api"},
        {"path_with_namespace": "acme/platform/legacy", "topics": ["factory-opt-out"]},
        {"path_with_namespace": "acme/platform/deep/batch",
         "files": {".factory.yml": "factory:\n  enabled: false\n"}},
        {"path_with_namespace": "acme/old", "archived": True},
        {"path_with_namespace": "other/elsewhere"},
    ],
}


def writes(requests):
    return [r for r in requests if r["method"] in WRITE_METHODS]


def throttled(requests):
    return [r for r in requests if r["status"] == 429]


class GroupSetupTest(unittest.TestCase):
    tier = "premium"

    def setUp(self):
        self.double = Double(seed=GROUP_SEED, tier=self.tier)
        self.addCleanup(self.double.stop)

    def setup_run(self, *args, scope="group:acme", extra=None, config=None):
        env = job_env(self.double, project=None, extra=dict({"FACTORY_SCOPE": scope}, **(extra or {})))
        if config is not None:
            d = tempfile.mkdtemp(prefix="scope-cfg-")
            path = os.path.join(d, "group.yml")
            with open(path, "w") as f:
                f.write(config)
            args = ("--config", path) + args
        return run_job("setup", self.double, *args, env=env)

    def group_labels(self, group="acme", ancestors=False):
        q = "true" if ancestors else "false"
        return {l["name"]: l for l in gl(self.double, "GET", "/groups/%s/labels?per_page=100&include_ancestor_groups=%s"
                                         % (group.replace("/", "%2F"), q))}

    def group_boards(self, group="acme"):
        return gl(self.double, "GET", "/groups/%s/boards" % group.replace("/", "%2F"))

    def list_names(self, board):
        return [l["label"]["name"] for l in sorted(board["lists"], key=lambda l: l["position"])]

    def test_group_labels_and_board_then_no_write(self):
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        labels = self.group_labels()
        n_labels = len([a for a in r.report["actions"] if a["kind"] == "label.create"])
        self.assertGreaterEqual(n_labels, 20)
        self.assertEqual(set(labels), {a["target"] for a in r.report["actions"] if a["kind"] == "label.create"})
        for name in WORKFLOW + ["priority::1", "fast-lane"]:
            self.assertIn(name, labels)
            self.assertFalse(labels[name]["is_project_label"])
        boards = [b for b in self.group_boards() if b["name"] == "Factory"]
        self.assertEqual(len(boards), 1)
        self.assertEqual(self.list_names(boards[0]), WORKFLOW)
        # Group labels, not project copies: every project of the group (and
        # its subgroups) sees them, no project got labels of its own.
        for path in ("acme/web", "acme/platform/deep/batch"):
            seen = gl(self.double, "GET", "/projects/%s/labels?per_page=100" % path.replace("/", "%2F"))
            self.assertIn("workflow::up next", [l["name"] for l in seen])
            self.assertTrue(all(not l["is_project_label"] for l in seen), path)
        self.assertTrue(all(not w["path"].startswith("/api/v4/projects/") for w in writes(self.double.requests())))

        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(r.report["actions"], [])
        self.assertIn("no write", r.report["summary"])
        self.assertEqual(r.report["counters"]["api_writes"], 0)

    def test_projects_taking_part(self):
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        projects = {p["path"]: p for p in r.report["data"]["projects"]}
        # Subgroups included, archived and other groups' projects left out.
        self.assertEqual(set(projects), {"acme/web", "acme/platform/api", "acme/platform/legacy",
                                         "acme/platform/deep/batch"})
        self.assertTrue(projects["acme/web"]["enabled"])
        self.assertTrue(projects["acme/web"]["own_settings"])
        self.assertTrue(projects["acme/platform/api"]["enabled"])
        self.assertFalse(projects["acme/platform/api"]["own_settings"])
        self.assertFalse(projects["acme/platform/legacy"]["enabled"])
        self.assertIn("factory-opt-out", projects["acme/platform/legacy"]["why"])
        self.assertFalse(projects["acme/platform/deep/batch"]["enabled"])
        self.assertIn("acme/platform/deep/batch/.factory.yml", projects["acme/platform/deep/batch"]["why"])
        self.assertEqual(r.report["counters"]["projects"], 4)
        self.assertEqual(r.report["counters"]["projects_taking_part"], 2)
        self.assertIn("| acme/platform/legacy | no |", r.report_md)
        # Each project's file was read from its default branch, the opted-out
        # by topic's was not read at all.
        files = [q for q in self.double.requests() if "/repository/files/" in q["path"]]
        self.assertEqual(len(files), 3)
        self.assertTrue(all(q["query"].get("ref") == "main" for q in files), files)
        legacy = gl(self.double, "GET", "/projects/acme%2Fplatform%2Flegacy")["id"]
        self.assertFalse(any("/projects/%d/" % legacy in q["path"] for q in files))

    def test_opt_in_group_and_project_override(self):
        self.double.seed({"projects": [{"path_with_namespace": "acme/platform/api",
                                        "files": {".factory.yml": "factory:\n  enabled: true\n"}}]})
        r = self.setup_run(config="factory:\n  enabled: false\ntriage:\n  wip_limit: 2\n")
        self.assertEqual(r.returncode, 0, r)
        projects = {p["path"]: p for p in r.report["data"]["projects"]}
        self.assertEqual([p for p in projects if projects[p]["enabled"]], ["acme/platform/api"])
        self.assertIn("the group's settings", projects["acme/web"]["why"])

    def test_broken_project_file_is_named_and_fails_the_run(self):
        self.double.seed({"projects": [{"path_with_namespace": "acme/platform/api",
                                        "files": {".factory.yml": "triage: [unclosed\n"}}]})
        r = self.setup_run()
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("acme/platform/api/.factory.yml", r.stderr)
        self.assertIn("1 project of group acme", r.stderr)
        # Everything else was still done and reported.
        self.assertIn("workflow::up next", self.group_labels())
        projects = {p["path"]: p for p in r.report["data"]["projects"]}
        self.assertTrue(projects["acme/platform/api"]["settings_error"])
        self.assertFalse(projects["acme/platform/api"]["enabled"])
        self.assertTrue(projects["acme/web"]["enabled"])

    def test_parent_group_labels_are_used(self):
        self.double.seed({"labels": [
            {"group": "acme", "name": "priority::1", "color": "#B60205",
             "description": "P1: security, always first"},
            {"group": "acme", "name": "workflow::up next", "color": "#000000", "description": "theirs"}]})
        r = self.setup_run(scope="group:acme/platform")
        self.assertEqual(r.returncode, 0, r)
        own = self.group_labels("acme/platform")
        self.assertNotIn("priority::1", own)
        self.assertNotIn("workflow::up next", own)
        self.assertIn("workflow::in progress", own)
        self.assertIn("workflow::up next", r.stderr)       # warned: another colour, left as it is
        self.assertEqual(self.group_labels("acme")["workflow::up next"]["color"].upper(), "#000000")
        board = [b for b in self.group_boards("acme/platform") if b["name"] == "Factory"][0]
        self.assertEqual(self.list_names(board), WORKFLOW)   # the parent's label makes the first list
        projects = {p["path"] for p in r.report["data"]["projects"]}
        self.assertEqual(projects, {"acme/platform/api", "acme/platform/legacy", "acme/platform/deep/batch"})
        self.double.clear_requests()
        self.assertEqual(self.setup_run(scope="group:acme/platform").returncode, 0)
        self.assertEqual(writes(self.double.requests()), [])

    def test_drifted_group_label_is_repaired_alone(self):
        self.assertEqual(self.setup_run().returncode, 0)
        lab = self.group_labels()["priority::2"]
        gl(self.double, "PUT", "/groups/acme/labels/%d" % lab["id"], {"color": "#123456"})
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        w = writes(self.double.requests())
        self.assertEqual([(x["method"], x["path"]) for x in w], [("PUT", "/api/v4/groups/acme/labels/%d" % lab["id"])])
        self.assertEqual(self.group_labels()["priority::2"]["color"].upper(), "#D93F0B")

    def test_dry_run_writes_nothing(self):
        r = self.setup_run("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        kinds = [a["kind"] for a in r.report["actions"]]
        self.assertIn("label.create", kinds)
        self.assertEqual(kinds.count("board.list.create"), 3)
        self.assertTrue(all(a["dry_run"] for a in r.report["actions"]))
        self.assertEqual(self.group_labels(), {})

    def test_bad_scopes_and_unknown_group(self):
        for bad in ("group:", "group:acme//x", "team:acme", "group:a b"):
            r = self.setup_run(scope=bad)
            self.assertEqual(r.returncode, 2, (bad, r))
            self.assertIn("scope=", r.stderr)
            self.assertIn("FACTORY_SCOPE", r.stderr)
        self.assertEqual(writes(self.double.requests()), [])
        r = self.setup_run(scope="group:nobody/here")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("groups/nobody%2Fhere", r.stderr)
        self.assertIn("404", r.stderr)
        r = self.setup_run("--print-board")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("--print-board", r.stderr)

    def test_scope_flag(self):
        env = job_env(self.double, project=None)
        r = run_job("setup", self.double, "--scope", "group:acme/platform/deep", env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("workflow::validation", self.group_labels("acme/platform/deep"))
        self.assertIn("--scope", run_job("setup", self.double, "--help", env=env).stdout)


class GroupSetupFreeTest(GroupSetupTest):
    """Free: a group has one board; the Factory's lists go on it."""
    tier = "free"

    def test_group_labels_and_board_then_no_write(self):
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        boards = self.group_boards()
        self.assertEqual(len(boards), 1)
        self.assertEqual(boards[0]["name"], "Development")
        self.assertEqual(self.list_names(boards[0]), WORKFLOW)
        self.assertIn("Premium", r.stderr)
        self.assertIn("board.use", [a["kind"] for a in r.report["actions"]])
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertIn("no write", r.report["summary"])

    def test_parent_group_labels_are_used(self):
        # The board part differs on Free (the group's one board); labels alike.
        self.double.seed({"labels": [{"group": "acme", "name": "priority::1", "color": "#B60205",
                                      "description": "P1: security, always first"}]})
        r = self.setup_run(scope="group:acme/platform")
        self.assertEqual(r.returncode, 0, r)
        self.assertNotIn("priority::1", self.group_labels("acme/platform"))
        self.assertIn("priority::1", self.group_labels("acme/platform", ancestors=True))
        boards = self.group_boards("acme/platform")
        self.assertEqual(self.list_names(boards[0]), WORKFLOW)


class ApiBudgetTest(unittest.TestCase):
    """The double keeps one fixed window per token (10 requests every 2 s
    here): factory-setup on a new project needs about 35 requests."""

    def run_setup(self, double, project, extra=None, results=None):
        env = job_env(double, project=project, extra=dict({"FACTORY_HTTP_RETRY_BUDGET_MS": "120000",
                                                           "FACTORY_HTTP_MAX_RETRIES": "20"}, **(extra or {})))
        r = run_job("setup", double, env=env)
        if results is not None:
            results[project] = r
        return r

    def test_paced_job_gets_no_429_where_unpaced_does(self):
        with Double(rate_limit=10, extra_args=["--rate-window", "2"]) as d:
            d.seed({"projects": [{"path_with_namespace": "team/a"}, {"path_with_namespace": "team/b"}]})
            unpaced = self.run_setup(d, "team/a", {"FACTORY_HTTP_PACE_BELOW_PCT": "0"})
            self.assertEqual(unpaced.returncode, 0, unpaced)
            refused = throttled(d.requests())
            self.assertGreater(len(refused), 0, "the limit is tight enough to be hit without pacing")
            self.assertEqual(unpaced.report["counters"]["api_throttled"], len(refused))
            self.assertEqual(unpaced.report["counters"]["api_paced_ms"], 0)

            time.sleep(2.1)                     # a fresh window for a fair start
            d.clear_requests()
            paced = self.run_setup(d, "team/b")
            self.assertEqual(paced.returncode, 0, paced)
            self.assertEqual(throttled(d.requests()), [])
            self.assertEqual(paced.report["counters"]["api_throttled"], 0)
            self.assertGreater(paced.report["counters"]["api_paced_ms"], 0)
            budget = paced.report["data"]["api_budget"]
            self.assertEqual(budget["throttled"], 0)
            self.assertGreater(budget["paced"], 0)
            self.assertEqual(budget["requests"], len(d.requests()))
            self.assertEqual(paced.report["counters"]["api_requests"], len(d.requests()))

    def test_two_jobs_on_one_token_stay_under_it(self):
        with Double(rate_limit=20, extra_args=["--rate-window", "2"]) as d:
            d.seed({"projects": [{"path_with_namespace": "team/one"}, {"path_with_namespace": "team/two"}]})
            results = {}
            extra = {"FACTORY_HTTP_PACE_BELOW_PCT": "50", "FACTORY_HTTP_PACE_RESERVE": "1"}
            threads = [threading.Thread(target=self.run_setup, args=(d, p, extra, results))
                       for p in ("team/one", "team/two")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for p, r in results.items():
                self.assertEqual(r.returncode, 0, (p, r))
                self.assertEqual(r.report["counters"]["api_throttled"], 0, p)
            reqs = d.requests()
            self.assertGreater(len(reqs), 40)   # more than one window's worth, so pacing had to work
            self.assertEqual(throttled(reqs), [])

    def test_group_setup_under_a_tight_limit(self):
        with Double(seed=GROUP_SEED, tier="premium", rate_limit=10, extra_args=["--rate-window", "2"]) as d:
            env = job_env(d, project=None, extra={"FACTORY_SCOPE": "group:acme",
                                                  "FACTORY_HTTP_RETRY_BUDGET_MS": "120000"})
            r = run_job("setup", d, env=env)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(throttled(d.requests()), [])
            self.assertEqual(r.report["counters"]["api_throttled"], 0)


if __name__ == "__main__":
    unittest.main()
