"""factory-setup end to end against the GitLab double: labels, board, idempotence,
the environment contract, and every kind of bad input or server fault."""
import os
import tempfile
import unittest

from lib.double import Double
from lib.factory import gl, job_env, run_job

N_LABELS = 26  # common/board.c catalogue
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


def writes(requests):
    return [r for r in requests if r["method"] in WRITE_METHODS]


class SetupTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)

    def setup_run(self, *args, env=None):
        return run_job("setup", self.double, *args, env=env)

    def labels(self):
        return {l["name"]: l for l in gl(self.double, "GET", "/projects/1/labels?per_page=100")}

    def factory_board(self):
        boards = gl(self.double, "GET", "/projects/1/boards")
        return [b for b in boards if b["name"] == "Factory"]

    def test_first_run_creates_labels_and_board(self):
        r = self.setup_run("--print-board")
        self.assertEqual(r.returncode, 0, r)
        labels = self.labels()
        for name in ("priority::1", "priority::5", "type::security", "type::chore", "workflow::up next",
                     "workflow::in progress", "workflow::validation", "source::customer", "source::factory",
                     "severity::1", "severity::4", "fast-lane"):
            self.assertIn(name, labels)
            self.assertRegex(labels[name]["color"], r"^#[0-9A-Fa-f]{6}$")
            self.assertTrue(labels[name]["description"])
        boards = self.factory_board()
        self.assertEqual(len(boards), 1)
        lists = sorted(boards[0]["lists"], key=lambda l: l["position"])
        self.assertEqual([l["label"]["name"] for l in lists],
                         ["workflow::up next", "workflow::in progress", "workflow::validation"])
        # the board printed: its columns are in the output
        for column in ("Open", "workflow::up next", "workflow::in progress", "workflow::validation", "Closed"):
            self.assertIn(column, r.stdout)
        self.assertEqual(r.report["exit_code"], 0)
        kinds = [a["kind"] for a in r.report["actions"]]
        # one action per label made (every one of them now in GitLab), the board, its three lists
        self.assertEqual(kinds.count("label.create"), len(labels))
        self.assertEqual(kinds.count("board.create"), 1)
        self.assertEqual(kinds.count("board.list.create"), 3)
        self.assertEqual(len(kinds), len(labels) + 4)
        self.assertIn("api_requests", r.report["counters"])

    def test_second_run_makes_no_write_and_says_so(self):
        self.assertEqual(self.setup_run().returncode, 0)
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        reqs = self.double.requests()
        self.assertEqual(writes(reqs), [])
        self.assertGreater(len(reqs), 0)
        self.assertIn("already set up", r.output)
        self.assertIn("no write", r.report["summary"])
        self.assertEqual(r.report["counters"]["api_writes"], 0)
        self.assertEqual(r.report["counters"]["api_requests"], len(reqs))
        self.assertEqual(r.report["actions"], [])

    def test_drifted_label_is_repaired_alone(self):
        self.assertEqual(self.setup_run().returncode, 0)
        lab = self.labels()["priority::1"]
        gl(self.double, "PUT", "/projects/1/labels/%d" % lab["id"], {"color": "#000000", "description": "x"})
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        w = writes(self.double.requests())
        self.assertEqual(len(w), 1, w)
        self.assertEqual(w[0]["method"], "PUT")
        self.assertEqual(self.labels()["priority::1"]["color"].upper(), "#B60205")

    def test_missing_list_is_added_to_existing_board(self):
        self.assertEqual(self.setup_run().returncode, 0)
        board = self.factory_board()[0]
        victim = [l for l in board["lists"] if l["label"]["name"] == "workflow::in progress"][0]
        gl(self.double, "DELETE", "/projects/1/boards/%d/lists/%d" % (board["id"], victim["id"]))
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        w = writes(self.double.requests())
        self.assertEqual([x["method"] for x in w], ["POST"])
        self.assertEqual(len(self.factory_board()), 1)
        names = {l["label"]["name"] for l in self.factory_board()[0]["lists"]}
        self.assertIn("workflow::in progress", names)

    def test_dry_run_writes_nothing_and_prints_each_write(self):
        r = self.setup_run("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(self.factory_board(), [])
        kinds = [a["kind"] for a in r.report["actions"]]
        self.assertGreaterEqual(kinds.count("label.create"), 22)
        self.assertEqual(r.output.count("would POST"), kinds.count("label.create") + 1)
        self.assertTrue(r.report["dry_run"])

    def test_many_existing_labels_are_paged_through(self):
        self.double.seed({"labels": [{"project_id": 1, "name": "other-%03d" % i, "color": "#123456"}
                                     for i in range(250)]})
        self.assertEqual(self.setup_run().returncode, 0)
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        pages = [x for x in self.double.requests() if x["path"].endswith("/labels")]
        self.assertEqual(len(pages), 3)  # 272 labels at 100 a page

    def test_ci_environment_contract(self):
        env = job_env(None, extra={"CI_API_V4_URL": self.double.url + "/api/v4", "CI_PROJECT_ID": "1",
                                   "FACTORY_GITLAB_TOKEN": self.double.token})
        r = self.setup_run(env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(self.factory_board()), 1)

    def test_project_by_path_and_token_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as f:
            f.write(self.double.token + "\n")
        self.addCleanup(os.unlink, f.name)
        env = job_env(self.double, extra={"FACTORY_GITLAB_TOKEN": None})
        r = run_job("setup", None, "--gitlab-url", self.double.url, "--project", "factory/demo",
                    "--token-file", f.name, env=env)
        self.assertEqual(r.returncode, 0, r)

    def test_flags_beat_environment_beat_file(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "f.yml")
            with open(cfg, "w") as f:
                f.write("project: no/such-project\ngitlab_url: http://127.0.0.1:9\n")
            env = job_env(self.double, extra={"FACTORY_PROJECT": None})
            # the file alone names a project that does not exist
            r = run_job("setup", None, "--config", cfg, env=env)
            self.assertEqual(r.returncode, 1, r)
            # the environment wins over the file
            env2 = dict(env, FACTORY_PROJECT="factory/demo")
            r = run_job("setup", None, "--config", cfg, env=env2)
            self.assertEqual(r.returncode, 0, r)
            # the flag wins over the environment
            env3 = dict(env2, FACTORY_PROJECT="no/such")
            r = run_job("setup", None, "--config", cfg, "--project", "1", env=env3)
            self.assertEqual(r.returncode, 0, r)


class BadInputTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)

    def assert_clean(self, r):
        self.assertNotIn(self.double.token, r.output)
        self.assertNotIn("Segmentation", r.output)
        self.assertNotIn("Traceback", r.output)

    def test_help_version_and_unknown_flag(self):
        r = run_job("setup", None, "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--dry-run", r.stdout)
        r = run_job("setup", None, "--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^factory-setup \d+\.\d+\.\d+")
        r = run_job("setup", None, "--no-such-flag")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--no-such-flag", r.stderr)
        r = run_job("setup", self.double, "stray")
        self.assertEqual(r.returncode, 2)

    def test_missing_settings_name_the_variable(self):
        env = job_env(self.double, extra={"FACTORY_GITLAB_TOKEN": None})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_GITLAB_TOKEN", r.stderr)
        env = job_env(self.double, extra={"FACTORY_GITLAB_TOKEN": None, "CI_JOB_TOKEN": "job-token-xyz123"})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("CI_JOB_TOKEN", r.stderr)
        self.assertNotIn("job-token-xyz123", r.output)
        env = job_env(self.double, extra={"FACTORY_GITLAB_URL": None})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("CI_API_V4_URL", r.stderr)
        env = job_env(self.double, extra={"FACTORY_PROJECT": None})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("CI_PROJECT_ID", r.stderr)
        env = job_env(self.double, extra={"FACTORY_HTTP_MAX_RETRIES": "lots"})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_HTTP_MAX_RETRIES", r.stderr)

    def test_unknown_project(self):
        env = job_env(self.double, project="no/such-project")
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("404", r.stderr)
        self.assertIn("Project Not Found", r.stderr)
        self.assert_clean(r)

    def test_bad_token(self):
        env = job_env(self.double, extra={"FACTORY_GITLAB_TOKEN": "glpat-wrong-token-1234567890"})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("401", r.stderr)
        self.assertNotIn("glpat-wrong-token-1234567890", r.output)
        self.assertNotIn("glpat-wrong-token-1234567890", str(r.report))

    def test_transient_errors_are_retried(self):
        self.double.faults([{"method": "GET", "path_regex": "/labels", "status": 500, "times": 2},
                            {"method": "GET", "path_regex": "/boards", "drop": True, "times": 1},
                            {"method": "GET", "path_regex": "/projects/[^/]+$", "status": 429,
                             "headers": {"Retry-After": "1"}, "times": 1}])
        r = run_job("setup", self.double)
        self.assertEqual(r.returncode, 0, r)
        self.assertGreaterEqual(r.report["counters"]["api_retries"], 4)
        self.assert_clean(r)

    def test_upstream_down_exits_3(self):
        self.double.faults([{"path_regex": ".", "status": 503, "times": -1}])
        env = job_env(self.double, extra={"FACTORY_HTTP_MAX_RETRIES": "2"})
        r = run_job("setup", None, env=env)
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("503", r.stderr)
        self.assert_clean(r)

    def test_broken_bodies_are_clear_errors(self):
        cases = [
            ({"html": True, "status": 502, "times": -1}, 3),
            ({"html": True, "status": 200, "times": -1}, 1),
            ({"empty": True, "times": -1}, 1),
            ({"body": "[{\"id\": 1, \"name\": ", "status": 200, "times": -1}, 1),
            ({"truncate": True, "times": -1}, 3),
        ]
        for fault, code in cases:
            with self.subTest(fault=fault):
                self.double.clear_faults()
                self.double.faults([dict(fault, method="GET", path_regex="/labels")])
                env = job_env(self.double, extra={"FACTORY_HTTP_MAX_RETRIES": "1"})
                r = run_job("setup", None, env=env)
                self.assertEqual(r.returncode, code, r)
                self.assertIn("labels", r.stderr)
                self.assert_clean(r)
        self.double.clear_faults()
        # nothing was half-done: a clean run still sets everything up
        self.assertEqual(run_job("setup", self.double).returncode, 0)

    def test_write_refused_is_reported(self):
        self.double.faults([{"method": "POST", "path_regex": "/labels", "status": 403,
                             "body": "{\"message\":\"403 Forbidden\"}", "times": -1}])
        r = run_job("setup", self.double)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("403", r.stderr)
        self.assertIn("POST", r.stderr)


if __name__ == "__main__":
    unittest.main()
