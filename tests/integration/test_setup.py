"""factory-setup end to end against the GitLab double: labels, board, idempotence,
the environment contract, and every kind of bad input or server fault."""
import os
import shutil
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


JOB_CRONS = {"triage": "0 * * * *", "implement": "5,35 * * * *", "pipeline": "*/15 * * * *",
             "release": "0 6 * * *", "watch": "*/10 * * * *"}


class ScheduleTest(unittest.TestCase):
    """--schedules: one pipeline schedule per enabled job, routed by FACTORY_JOB."""

    def setUp(self):
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)
        self.tmp = tempfile.mkdtemp(prefix="factory-schedules-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def setup_run(self, *args, policy=None, extra=None):
        cfg = os.path.join(self.tmp, "factory.yml")
        with open(cfg, "w") as f:
            f.write(policy or "")
        return run_job("setup", None, "--schedules", "--config", cfg, *args, env=job_env(self.double, extra=extra))

    def schedules(self):
        """Every schedule, with its variables (the list endpoint leaves them out)."""
        out, page = {}, 1
        while True:
            batch = gl(self.double, "GET", "/projects/1/pipeline_schedules?per_page=100&page=%d" % page)
            for s in batch:
                one = gl(self.double, "GET", "/projects/1/pipeline_schedules/%d" % s["id"])
                out.setdefault(one["description"], []).append(one)
            if len(batch) < 100:
                return out
            page += 1

    def factory_schedules(self):
        return {d[len("factory: "):]: v[0] for d, v in self.schedules().items() if d.startswith("factory: ")}

    def assert_as_wanted(self, crons=JOB_CRONS, tz="UTC", ref="main"):
        got = self.factory_schedules()
        self.assertEqual(sorted(got), sorted(crons))
        for job, s in got.items():
            self.assertEqual((s["cron"], s["cron_timezone"], s["ref"], s["active"]), (crons[job], tz, ref, True), job)
            self.assertEqual([(v["key"], v["value"]) for v in s["variables"]], [("FACTORY_JOB", job)], job)

    def test_first_run_creates_one_schedule_per_job_and_a_rerun_writes_nothing(self):
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assert_as_wanted()
        made = [a for a in r.report["actions"] if a["kind"].startswith("schedule.")]
        self.assertEqual(sorted(a["target"] for a in made), sorted("factory: " + j for j in JOB_CRONS))
        self.assertEqual({a["kind"] for a in made}, {"schedule.create"})
        self.assertEqual({s["state"] for s in r.report["data"]["schedules"]}, {"created"})
        self.assertIn("| factory: triage | 0 * * * * | created |", r.report_md)
        posts = [x for x in writes(self.double.requests()) if "pipeline_schedules" in x["path"]]
        self.assertEqual(len(posts), 2 * len(JOB_CRONS))  # the schedule, then its variable
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertIn("no write", r.report["summary"])
        self.assertEqual({s["state"] for s in r.report["data"]["schedules"]}, {"as wanted"})
        self.assert_as_wanted()

    def test_drift_is_repaired_in_place(self):
        self.assertEqual(self.setup_run().returncode, 0)
        ids = {j: s["id"] for j, s in self.factory_schedules().items()}
        gl(self.double, "PUT", "/projects/1/pipeline_schedules/%d" % ids["triage"], {"cron": "7 7 * * *"})
        gl(self.double, "PUT", "/projects/1/pipeline_schedules/%d" % ids["implement"], {"active": False})
        gl(self.double, "PUT", "/projects/1/pipeline_schedules/%d" % ids["release"],
           {"ref": "other", "cron_timezone": "Europe/Berlin"})
        gl(self.double, "PUT", "/projects/1/pipeline_schedules/%d/variables/FACTORY_JOB" % ids["watch"],
           {"value": "triage"})
        self.double.request("DELETE", "/projects/1/pipeline_schedules/%d/variables/FACTORY_JOB" % ids["pipeline"])
        # a variable someone added to one of ours stays
        gl(self.double, "POST", "/projects/1/pipeline_schedules/%d/variables" % ids["triage"],
           {"key": "EXTRA", "value": "1"})
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        done = sorted((a["kind"], a["target"]) for a in r.report["actions"])
        self.assertEqual(done, [("schedule.update", "factory: implement"), ("schedule.update", "factory: release"),
                                ("schedule.update", "factory: triage"),
                                ("schedule.variable.create", "factory: pipeline"),
                                ("schedule.variable.update", "factory: watch")])
        self.assertFalse([x for x in writes(self.double.requests()) if x["method"] != "PUT" and
                          not x["path"].endswith("/variables")])  # no new schedule
        got = self.factory_schedules()
        self.assertEqual({j: s["id"] for j, s in got.items()}, ids)
        self.assertEqual(got["triage"]["cron"], "0 * * * *")
        self.assertEqual([v["key"] for v in got["triage"]["variables"]], ["FACTORY_JOB", "EXTRA"])
        self.assertEqual(self.setup_run().report["actions"], [])
        self.assertIn("was \"7 7 * * *\"", r.report_md)

    def test_others_schedules_are_left_alone(self):
        self.double.seed({"users": [{"username": "alice"}], "tokens": [{"token": "glpat-alice-0000", "user": "alice"}]})
        alice = {"token": "glpat-alice-0000"}
        human = self.double.request("POST", "/projects/1/pipeline_schedules", {
            "description": "nightly build", "ref": "main", "cron": "0 2 * * *"}, **alice).json()
        self.double.request("POST", "/projects/1/pipeline_schedules/%d/variables" % human["id"],
                            {"key": "FACTORY_JOB", "value": "triage"}, **alice)
        # alice made one named like the Factory's, with another cron: not ours, not duplicated
        theirs = self.double.request("POST", "/projects/1/pipeline_schedules", {
            "description": "factory: watch", "ref": "main", "cron": "1 1 * * *", "active": False}, **alice).json()
        before = {s["id"]: s for v in self.schedules().values() for s in v}
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        after = {s["id"]: s for v in self.schedules().values() for s in v}
        for sid, s in before.items():
            self.assertEqual(after[sid], s)
        self.assertEqual(len(self.schedules()["factory: watch"]), 1)
        self.assertEqual(self.factory_schedules()["watch"]["id"], theirs["id"])
        self.assertIn("owned by alice", r.stderr)
        rows = {s["job"]: s["state"] for s in r.report["data"]["schedules"]}
        self.assertEqual(rows["watch"], "left: owned by another user")
        self.assertEqual(len(after), 2 + 4)

    def test_schedules_are_found_past_the_first_page(self):
        self.double.seed({"users": [{"username": "bob"}], "tokens": [{"token": "glpat-bob-0000", "user": "bob"}]})
        for i in range(101):
            self.double.request("POST", "/projects/1/pipeline_schedules", {
                "description": "build %d" % i, "ref": "main", "cron": "0 3 * * *"}, token="glpat-bob-0000")
        self.assertEqual(self.setup_run().returncode, 0)
        self.double.clear_requests()
        r = self.setup_run()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        pages = [x for x in self.double.requests() if x["path"].endswith("/pipeline_schedules")]
        self.assertEqual(len(pages), 2)  # 106 schedules at 100 a page
        self.assert_as_wanted()

    def test_dry_run_writes_nothing_and_reports_each_schedule(self):
        r = self.setup_run("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual(self.schedules(), {})
        made = [a for a in r.report["actions"] if a["kind"] == "schedule.create"]
        self.assertEqual(len(made), len(JOB_CRONS))
        self.assertTrue(all(a["dry_run"] for a in made))
        self.assertEqual(r.output.count("would POST projects/:id/pipeline_schedules/<new>/variables"), len(JOB_CRONS))
        # drift in a dry run: reported, not repaired
        self.assertEqual(self.setup_run().returncode, 0)
        sid = self.factory_schedules()["triage"]["id"]
        gl(self.double, "PUT", "/projects/1/pipeline_schedules/%d" % sid, {"cron": "7 7 * * *"})
        self.double.clear_requests()
        r = self.setup_run("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.double.requests()), [])
        self.assertEqual([a["kind"] for a in r.report["actions"]], ["schedule.update"])
        self.assertEqual(self.factory_schedules()["triage"]["cron"], "7 7 * * *")

    def test_policy_file_sets_crons_timezone_ref_and_jobs(self):
        self.double.seed({"projects": [{"id": 1, "path_with_namespace": "factory/demo",
                                        "branches": {"stable": "main"}}]})
        policy = ("schedules:\n  timezone: Europe/Berlin\n  ref: stable\n  triage: \"*/20 * * * *\"\n"
                  "  watch: off\n  setup: \"0 4 * * 1\"\n")
        r = self.setup_run(policy=policy, extra={"FACTORY_JOBS": "setup,triage,implement,watch"})
        self.assertEqual(r.returncode, 0, r)
        self.assert_as_wanted({"setup": "0 4 * * 1", "triage": "*/20 * * * *", "implement": "5,35 * * * *"},
                              tz="Europe/Berlin", ref="stable")
        # a job disabled later: its schedule is deactivated, not deleted
        r = self.setup_run(policy=policy, extra={"FACTORY_JOBS": "setup,triage,watch"})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([(a["kind"], a["target"]) for a in r.report["actions"]],
                         [("schedule.deactivate", "factory: implement")])
        self.assertFalse(self.factory_schedules()["implement"]["active"])
        # and enabled again: active again
        r = self.setup_run(policy=policy, extra={"FACTORY_JOBS": "setup,triage,implement"})
        self.assertEqual([(a["kind"], a["target"]) for a in r.report["actions"]],
                         [("schedule.update", "factory: implement")])
        self.assertTrue(self.factory_schedules()["implement"]["active"])

    def test_bad_settings_are_refused_before_any_write(self):
        cases = [("schedules:\n  triage: \"every hour\"\n", {}, "schedules.triage"),
                 ("schedules:\n  triage: \"0 * * *\"\n", {}, "five fields"),
                 ("schedules:\n  timezone: \"Mars/Base;1\"\n", {}, "schedules.timezone"),
                 ("", {"FACTORY_JOBS": "triage,deploy"}, "unknown job 'deploy'"),
                 ("", {"FACTORY_SCHEDULES_REF": "a b"}, "schedules.ref")]
        for policy, extra, want in cases:
            with self.subTest(want=want):
                self.double.clear_requests()
                r = self.setup_run(policy=policy, extra=extra)
                self.assertEqual(r.returncode, 2, r)
                self.assertIn(want, r.stderr)
                self.assertEqual(writes(self.double.requests()), [])
        # GitLab's own check of a cron that only looks right: its message, exit 1
        r = self.setup_run(policy="schedules:\n  triage: \"61 * * * *\"\n")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("cron", r.stderr)

    def test_forbidden_says_which_permission_is_missing(self):
        self.double.faults([{"method": "POST", "path_regex": "/pipeline_schedules$", "status": 403,
                             "body": "{\"message\":\"403 Forbidden\"}", "times": -1}])
        r = self.setup_run()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("cannot create pipeline schedule 'factory: triage'", r.stderr)
        self.assertIn("Developer role", r.stderr)
        self.assertIn("403", r.stderr)
        self.assertNotIn(self.double.token, r.output)
        self.double.clear_faults()
        self.double.faults([{"method": "GET", "path_regex": "/pipeline_schedules", "status": 403,
                             "body": "{\"message\":\"403 Forbidden\"}", "times": -1}])
        r = self.setup_run()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("cannot list the pipeline schedules", r.stderr)

    def test_group_scope_puts_the_schedules_in_the_project_that_runs_setup(self):
        double = Double(seed={"groups": ["acme"], "projects": [{"path_with_namespace": "acme/web"},
                                                               {"path_with_namespace": "acme/api"}]},
                        tier="premium")
        self.addCleanup(double.stop)
        env = job_env(double, project="acme/web", extra={"FACTORY_SCOPE": "group:acme"})
        r = run_job("setup", None, "--schedules", env=env)
        self.assertEqual(r.returncode, 0, r)
        web = gl(double, "GET", "/projects/acme%2Fweb/pipeline_schedules")
        self.assertEqual(sorted(s["description"] for s in web), sorted("factory: " + j for j in JOB_CRONS))
        self.assertEqual(gl(double, "GET", "/projects/acme%2Fapi/pipeline_schedules"), [])
        self.assertIn("pipeline schedules", r.report["summary"])
        double.clear_requests()
        self.assertEqual(run_job("setup", None, "--schedules", env=env).returncode, 0)
        self.assertEqual(writes(double.requests()), [])
        # no project to put them in: refused before anything is written
        double.clear_requests()
        r = run_job("setup", None, "--schedules", env=job_env(double, project=None, extra={"FACTORY_SCOPE": "group:acme"}))
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_PROJECT", r.stderr)
        self.assertEqual(writes(double.requests()), [])

    def test_off_by_default_for_the_binary(self):
        r = run_job("setup", self.double)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.schedules(), {})
        self.assertNotIn("schedules", r.report["data"])


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
