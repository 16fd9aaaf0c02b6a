"""The CI/CD component and the project's own pipeline:
- every YAML file (templates/*.yml and .gitlab-ci.yml, header and body) validates
  against GitLab's CI schema with ajv;
- gitlab-ci-local runs every job of the component (setup, intake, triage,
  implement, pipeline, release, watch), included by a sample consumer project,
  with the shell executor against the GitLab double and the LLM double: each
  selected as its schedule selects it (FACTORY_JOB), reading its inputs and
  variables, doing its work (checked in the double and in the job's report
  artifact); implement and pipeline fetch the binaries through the component's
  before_script from a loopback server, checksum verified."""
import glob
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import unittest

from lib.double import Double
from lib.factory import BIN_DIR, ROOT, check_sanitizers, gl, run_job
from lib.implement import UP_NEXT, GitView, edit_script, issue, labels_of, mrs_of, notes_of, project_seed
from lib.llm import LLMDouble
from lib.node import ensure_node_modules


class SchemaTest(unittest.TestCase):
    def test_every_yaml_validates_against_gitlab_schema(self):
        d = ensure_node_modules("tests/ci")
        files = sorted(glob.glob(os.path.join(ROOT, "templates", "*.yml"))) + [os.path.join(ROOT, ".gitlab-ci.yml")]
        self.assertGreaterEqual(len(files), 2)
        r = subprocess.run(["node", "validate.mjs"] + files, cwd=d, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("ok "), 2 * (len(files) - 1) + 1, r.stdout)

    def test_validator_rejects_a_bad_file(self):
        d = ensure_node_modules("tests/ci")
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write("spec:\n  inputs:\n    n:\n      type: number\n      default: 2\n---\n"
                    "job:\n  script: [x]\n  parallel: $[[ inputs.n ]]\n  when: sometimes\n")
        self.addCleanup(os.unlink, f.name)
        r = subprocess.run(["node", "validate.mjs", f.name], cwd=d, capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("/job/when", r.stdout)
        self.assertNotIn("parallel", r.stdout)  # a whole-value input keeps its number type

    def test_component_has_no_global_keywords_or_hosts(self):
        for path in glob.glob(os.path.join(ROOT, "templates", "*.yml")):
            with open(path) as f:
                body = f.read().split("\n---\n", 1)[1]
            for kw in ("default:", "stages:", "workflow:"):
                self.assertNotRegex(body, r"(?m)^" + kw, path)
            self.assertNotRegex(body, r"https?://(?!\$)", path)


# ---------------------------------------------------------------------------
# gitlab-ci-local: a sample consumer project runs every job of the component
# ---------------------------------------------------------------------------

JOB_TOKEN = "consumer-ci-job-token-0001"
LLM_MODEL = "claude-consumer-test"
TARBALL = "factory-linux-amd64.tar.gz"
PACKAGE_PATH = "/api/v4/projects/factory%2Ffactory/packages/generic/factory/0.1.0"
IMAGE_JOBS = ("setup", "triage", "release", "watch", "intake")  # run in the Factory image
FETCH_JOBS = ("implement", "pipeline")                         # fetch the binaries first
NETWORK_LOG = ("$ npm ci\nnpm ERR! code ETIMEDOUT\nnpm ERR! errno ETIMEDOUT\n"
               "npm ERR! network request to https://registry.npmjs.org/react failed, reason: connect ETIMEDOUT "
               "104.16.27.34:443\nERROR: Job failed: exit code 1\n")


class BinaryServer:
    """The component's binaries_url on loopback, as a generic package: the
    jobs of FACTORY_BIN_DIR packed the way the Factory's own pipeline packs
    them (`tar -czf factory-linux-amd64.tar.gz -C bin .`), SHA256SUMS beside
    it. Records each request's path and JOB-TOKEN header."""

    def __init__(self, bin_dir):
        self.dir = tempfile.mkdtemp(prefix="factory-binaries-")
        tar = os.path.join(self.dir, TARBALL)
        names = sorted(n for n in os.listdir(bin_dir) if n == "factory" or n.startswith("factory-"))
        if not any(n.startswith("factory-") for n in names):
            raise AssertionError("no factory-* binaries in %s" % bin_dir)
        with tarfile.open(tar, "w:gz", compresslevel=1) as t:
            for n in names:
                t.add(os.path.join(bin_dir, n), arcname="./" + n)
        with open(tar, "rb") as f:
            self.sha256 = hashlib.sha256(f.read()).hexdigest()
        self.sums("%s  %s\n" % (self.sha256, TARBALL))
        self.log = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.log.append({"path": self.path, "job_token": self.headers.get("JOB-TOKEN")})
                name = self.path.rsplit("/", 1)[-1]
                full = os.path.join(outer.dir, name)
                if not self.path.startswith(PACKAGE_PATH + "/") or name not in (TARBALL, "SHA256SUMS") or \
                        not os.path.exists(full):
                    self.send_error(404)
                    return
                with open(full, "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d%s" % (self.server.server_address[1], PACKAGE_PATH)

    def sums(self, text):
        with open(os.path.join(self.dir, "SHA256SUMS"), "w") as f:
            f.write(text)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


class GclRun:
    def __init__(self, proc, work):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.work = work

    def artifact(self, job, name):
        """A file of the job's factory-report/<job>/ as its artifact (gitlab-ci-local's copy)."""
        found = glob.glob(os.path.join(glob.escape(self.work), ".gitlab-ci-local", "artifacts", "*", "factory-report",
                                       job, name))
        if len(found) != 1:
            raise AssertionError("artifact factory-report/%s/%s: %r\n%s" % (job, name, found, self.output[-4000:]))
        with open(found[0]) as f:
            return f.read()

    def report(self, job):
        return json.loads(self.artifact(job, "report.json"))

    def report_md(self, job):
        return self.artifact(job, "report.md")

    def jobs_run(self):
        """The jobs gitlab-ci-local ran in this pipeline, with their outcome."""
        return [(o, name.rstrip(":")) for o, name in re.findall(r"(?m)^\s*(PASS|FAIL)\s+(\S+)", self.output)]

    def __repr__(self):
        return "GclRun(rc=%d)\n%s" % (self.returncode, self.output[-6000:])


class ConsumerProjectTest(unittest.TestCase):
    """A sample consumer project includes the component; gitlab-ci-local runs
    its pipelines with the shell executor, each as a schedule would start it
    (FACTORY_JOB=<job>, the component's rules pick the job), against the
    GitLab double. The project's CI/CD variables are the two masked ones
    (FACTORY_GITLAB_TOKEN, FACTORY_LLM_API_KEY), plus a run's own where a
    test says so (FEEDBACK_* for intake); no FACTORY_GITLAB_URL or
    FACTORY_PROJECT: CI_API_V4_URL comes from the remote, CI_PROJECT_ID and
    CI_JOB_TOKEN are given as GitLab sets them. Setup, triage, release, watch and intake run
    with the binaries on PATH (the Factory image); implement and pipeline run
    without them (the project's own image) and fetch them through the
    component's before_script from a loopback server, checksum verified."""

    @classmethod
    def setUpClass(cls):
        cls.npm = ensure_node_modules("tests/ci")
        cls.gcl_bin = os.path.join(cls.npm, "node_modules", ".bin", "gitlab-ci-local")
        if not shutil.which("rsync"):
            raise AssertionError("gitlab-ci-local needs rsync (scripts/install-deps.sh test installs it)")
        cls.binaries = BinaryServer(BIN_DIR)

    @classmethod
    def tearDownClass(cls):
        cls.binaries.stop()

    def start(self, seed=None):
        seed = seed or project_seed()
        seed.setdefault("job_tokens", []).append({"token": JOB_TOKEN, "project_id": 1})
        self.double = Double(seed=seed)
        self.addCleanup(self.double.stop)
        self.binaries.log.clear()

    def consumer(self, inputs=None, files=None, policy_file=".factory.yml", policy=""):
        """Clone the double's project, include the component, push: the project
        and its checkout (CI_PROJECT_DIR) as GitLab CI would have them."""
        self.work = tempfile.mkdtemp(prefix="factory-consumer-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.git("clone", "-q", self.double.git_url("factory/demo"), self.work, cwd="/")
        os.makedirs(os.path.join(self.work, "templates"), exist_ok=True)
        shutil.copy(os.path.join(ROOT, "templates", "factory.yml"), os.path.join(self.work, "templates"))
        inputs = dict(inputs or {})
        inputs.setdefault("binaries_url", self.binaries.url)
        if policy_file != ".factory.yml":
            inputs["policy_file"] = policy_file
        lines = ["stages: [build, test]", "include:", "  - local: templates/factory.yml", "    inputs:"]
        lines += ["      %s: %s" % (k, json.dumps(v) if isinstance(v, str) else json.dumps(v))
                  for k, v in inputs.items()]
        lines += ["build:", "  stage: build", "  rules:", "    - if: $FACTORY_JOB == null", "  script: [echo build]"]
        files = dict(files or {})
        files[".gitlab-ci.yml"] = "\n".join(lines) + "\n"
        files[policy_file] = policy
        for path, text in files.items():
            full = os.path.join(self.work, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", "Adopt the Factory")
        self.git("push", "-q", "origin", "HEAD:main")
        # the token stays out of the checkout; gitlab-ci-local reads the project's path from the remote
        self.git("remote", "set-url", "origin", "http://%s:%d/factory/demo.git" % (self.double.host, self.double.port))

    def git(self, *args, cwd=None):
        r = subprocess.run(["git", "-c", "user.email=dev@example.com", "-c", "user.name=Dev"] + list(args),
                           cwd=cwd or self.work, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("git %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def gcl(self, job, *variables, llm=None, on_path=None, expect=0, validate=False):
        """One pipeline as the schedule for `job` starts it: FACTORY_JOB=job.
        gitlab-ci-local checks the merged YAML against GitLab's schema when
        `validate` is set (0.5 to 1 s a run; SchemaTest checks every file with
        ajv, and the setup test has gitlab-ci-local check it once)."""
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("CI_") or k.startswith("FACTORY_") or k.startswith("GITLAB_"))}
        if on_path is None:
            on_path = job in IMAGE_JOBS
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != os.path.abspath(BIN_DIR)]
        env["PATH"] = os.pathsep.join(([BIN_DIR] if on_path else []) + path)
        if not on_path:
            self.assertIsNone(shutil.which("factory-" + job, path=env["PATH"]), "factory-%s is on PATH" % job)
        v = ["CI_PROJECT_ID=1", "CI_JOB_TOKEN=" + JOB_TOKEN, "FACTORY_GITLAB_TOKEN=" + self.double.token,
             "NO_COLOR=1", "FACTORY_JOB=" + job]
        if llm is not None:
            v.append("FACTORY_LLM_API_KEY=" + llm.api_key)
        v += list(variables)
        cmd = [self.gcl_bin, "--force-shell-executor", "--no-color", "--ignore-predefined-vars",
               "CI_PROJECT_ID,CI_PIPELINE_SOURCE", "--json-schema-validation=%s" % ("true" if validate else "false")]
        for x in v:
            cmd += ["--variable", x]
        proc = subprocess.run(cmd, cwd=self.work, env=env, capture_output=True, text=True, timeout=600)
        r = GclRun(proc, self.work)
        check_sanitizers(r.output)
        self.assertEqual(r.returncode, expect, r)
        self.assertNotIn(self.double.token, r.output)
        if llm is not None:
            self.assertNotIn(llm.api_key, r.output)
        return r

    def setup_labels(self):
        """Labels and board, made directly where setup is not the subject (saves a pipeline)."""
        r = run_job("setup", self.double)
        self.assertEqual(r.returncode, 0, r)

    def list_jobs(self, *variables):
        """The jobs a pipeline with these variables holds (gitlab-ci-local --list)."""
        cmd = [self.gcl_bin, "--list", "--json-schema-validation=false"]
        for x in variables:
            cmd += ["--variable", x]
        r = subprocess.run(cmd, cwd=self.work, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return [n.rstrip(":") for n in re.findall(r"(?m)^(\S+)\s", r.stdout)[1:]]

    def assert_ran_only(self, r, job, outcome="PASS"):
        self.assertEqual(r.jobs_run(), [(outcome, "factory-" + job)], r)

    def writes(self):
        return [q for q in self.double.requests() if q["method"] in ("POST", "PUT", "DELETE", "PATCH")]

    # ---- the jobs ----

    def test_setup_makes_labels_board_and_the_schedules_that_select_each_job(self):
        self.start()
        self.consumer()
        r = self.gcl("setup", validate=True)
        self.assertIn("json schema validated", r.output)
        self.assert_ran_only(r, "setup")
        names = {l["name"] for l in gl(self.double, "GET", "/projects/1/labels?per_page=100")}
        self.assertTrue({"workflow::up next", "type::bug", "source::customer"} <= names)
        self.assertEqual([b["name"] for b in gl(self.double, "GET", "/projects/1/boards") if b["name"] == "Factory"],
                         ["Factory"])
        rep = r.report("setup")
        self.assertEqual(rep["exit_code"], 0)
        self.assertIn("pipeline schedules", rep["summary"])
        schedules = gl(self.double, "GET", "/projects/1/pipeline_schedules")
        self.assertEqual(sorted(s["description"] for s in schedules),
                         sorted("factory: " + j for j in ("triage", "implement", "pipeline", "release", "watch")))
        # each schedule's variable selects its job, and only it, in the consumer's pipeline
        for s in schedules:
            var = gl(self.double, "GET", "/projects/1/pipeline_schedules/%d" % s["id"])["variables"]
            self.assertEqual([v["key"] for v in var], ["FACTORY_JOB"])
            self.assertEqual(self.list_jobs("FACTORY_JOB=" + var[0]["value"]), ["factory-" + var[0]["value"]])
        # a second run: nothing to do, and says so
        self.double.clear_requests()
        r = self.gcl("setup")
        self.assertEqual(self.writes(), [])
        self.assertIn("no write", r.report("setup")["summary"])

    def test_inputs_reach_the_job(self):
        self.start()
        self.consumer({"jobs": "setup", "dry_run": True, "job_prefix": "bot-"})
        r = self.gcl("setup")
        self.assertEqual(r.jobs_run(), [("PASS", "bot-setup")], r)
        self.assertIn("would POST", r.output)
        self.assertEqual(self.writes(), [])
        self.assertNotIn("Factory", [b["name"] for b in gl(self.double, "GET", "/projects/1/boards")])

    def test_disabled_job_does_not_run(self):
        self.start()
        self.consumer({"jobs": "setup,triage"})
        # the setup schedule's pipeline holds setup and nothing else (not the project's own build)
        self.assertEqual(self.list_jobs("FACTORY_JOB=setup"), ["factory-setup"])
        # a pipeline without FACTORY_JOB (a push) holds the project's build and no Factory job
        self.assertEqual(self.list_jobs(), ["build"])
        # setup disabled through the jobs input: its schedule runs nothing
        self.consumer({"jobs": "triage"})
        self.assertEqual(self.list_jobs("FACTORY_JOB=setup"), [])
        # every job enabled (the default): a pushed version tag releases itself, any other tag does not
        self.consumer()
        self.assertEqual(self.list_jobs("CI_COMMIT_TAG=v1.2.0"), ["build", "factory-release"])
        self.assertEqual(self.list_jobs("CI_COMMIT_TAG=nightly"), ["build"])

    def test_intake_manual_run_files_one_neutralised_issue(self):
        self.start()
        self.consumer()
        self.setup_labels()
        r = self.gcl("intake", "FEEDBACK_KIND=bug", "FEEDBACK_TITLE=Export to CSV fails @all",
                     "FEEDBACK_BODY=The export button answers 500.\n/close\n/label ~priority::1",
                     "FEEDBACK_EMAIL=jane@example.com", "FEEDBACK_SOURCE=customer")
        self.assert_ran_only(r, "intake")
        issues = gl(self.double, "GET", "/projects/1/issues?state=all")
        self.assertEqual(len(issues), 1, issues)
        i = issues[0]
        self.assertEqual(i["state"], "opened")  # the /close in the body ran nothing
        self.assertIn("Export to CSV fails", i["title"])
        self.assertIn("type::bug", i["labels"])
        self.assertIn("source::customer", i["labels"])
        self.assertNotIn("priority::1", i["labels"])
        self.assertNotIn("jane@example.com", i["description"])
        self.assertEqual(self.double.mentions(), [])
        rep = r.report("intake")
        self.assertEqual(rep["exit_code"], 0)
        self.assertEqual([a["kind"] for a in rep["actions"]].count("issue.create"), 1, rep["actions"])

    def test_triage_reads_wip_limit_and_dry_run(self):
        titles = [("Crash when saving the profile page", "Saving crashes with a 500 error every time."),
                  ("Add dark mode", "Please add a dark theme."),
                  ("Typo on the pricing page", "It says 'montly'."),
                  ("Export to CSV fails", "The export button throws an error.")]
        self.start(project_seed(issues=[{"project_id": 1, "title": t, "description": d, "labels": []}
                                        for t, d in titles]))
        self.consumer({"wip_limit": 1, "dry_run": True})
        self.setup_labels()
        self.double.clear_requests()
        r = self.gcl("triage")
        self.assert_ran_only(r, "triage")
        self.assertEqual(self.writes(), [])
        self.assertTrue(r.report("triage")["dry_run"])
        self.consumer({"wip_limit": 1})
        r = self.gcl("triage")
        self.assert_ran_only(r, "triage")
        rep = r.report("triage")
        self.assertFalse(rep["dry_run"])
        issues = gl(self.double, "GET", "/projects/1/issues?state=opened")
        self.assertTrue(all("triage::factory" in i["labels"] for i in issues), issues)
        self.assertEqual(len([i for i in issues if "workflow::up next" in i["labels"]]), 1, issues)
        self.consumer({"wip_limit": 2})
        self.gcl("triage")
        issues = gl(self.double, "GET", "/projects/1/issues?state=opened")
        self.assertEqual(len([i for i in issues if "workflow::up next" in i["labels"]]), 2, issues)
        notes = notes_of(self.double, issues[0]["iid"])
        self.assertTrue([n for n in notes if not n["system"]], notes)

    def test_implement_fetches_the_binaries_and_takes_up_next_to_a_merge_request(self):
        self.start(project_seed(files={"README.md": "# demo\n"}, issues=[
            issue("Capitalise the README title", "The title should read Demo.", labels=(UP_NEXT, "type::chore"),
                  position=1),
            issue("Add a licence line to the README", "Say it is MIT.", labels=(UP_NEXT, "type::chore"),
                  position=2),
            issue("Add a usage line to the README", "Say how to run it.", labels=(UP_NEXT, "type::chore"),
                  position=3)]))
        with LLMDouble() as llm:
            # a model of the project's own choice: its prices come from the policy file
            self.consumer({"llm_provider": "anthropic", "llm_model": LLM_MODEL,
                           "llm_base_url": llm.base_url("anthropic")},
                          policy="llm:\n  prices:\n    %s: {input: 3, output: 15}\n" % LLM_MODEL)
            llm.load(edit_script("README.md", "# demo", "# Demo", summary="Capitalised the title"))
            r = self.gcl("implement", "FACTORY_IMPLEMENT_CLAIM_SETTLE_MS=50", llm=llm)
            self.assert_ran_only(r, "implement")
            self.assertEqual(llm.failures(), [], r)
            self.assertEqual({q["body"]["model"] for q in llm.requests()}, {LLM_MODEL})
            # the binaries came through the component's fetch: tarball and SHA256SUMS, with the job token
            self.assertEqual(sorted(x["path"].rsplit("/", 1)[-1] for x in self.binaries.log), ["SHA256SUMS", TARBALL])
            self.assertEqual({x["job_token"] for x in self.binaries.log}, {JOB_TOKEN})
            self.assertTrue(os.access(os.path.join(self.work, ".factory-bin", "factory-implement"), os.X_OK))
            mrs = mrs_of(self.double)
            self.assertEqual(len(mrs), 1, mrs)
            self.assertEqual(mrs[0]["target_branch"], "main")
            self.assertIn("Capitalised the title", mrs[0]["description"])
            v = GitView(self.double)
            self.addCleanup(v.close)
            v.fetch()
            self.assertIn("-# demo\n+# Demo\n", v.git("diff", "origin/main", "origin/" + mrs[0]["source_branch"]))
            self.assertNotIn(UP_NEXT, labels_of(self.double, 1))
            rep = r.report("implement-1")
            self.assertEqual((rep["exit_code"], rep["data"]["issue"]), (0, 1))
            # a manual run (Run pipeline, FACTORY_JOB=implement FACTORY_ISSUE=3): issue 3, not the top (2)
            llm.load(edit_script("README.md", "# demo\n", "# demo\n\nRun it with make.\n", summary="Added usage"))
            r = self.gcl("implement", "CI_PIPELINE_SOURCE=web", "FACTORY_ISSUE=3", "FACTORY_IMPLEMENT_CLAIM_SETTLE_MS=50",
                         llm=llm)
            self.assert_ran_only(r, "implement")
            self.assertEqual(r.report("implement-1")["data"]["issue"], 3)
            mrs = mrs_of(self.double)
            self.assertEqual(sorted(m["source_branch"] for m in mrs),
                             ["factory/1-capitalise-the-readme-title", "factory/3-add-a-usage-line-to-the-readme"])
            self.assertIn("Closes #3", [m for m in mrs if m["source_branch"].startswith("factory/3-")][0]["description"])
            self.assertEqual(sorted(labels_of(self.double, 2)), sorted([UP_NEXT, "type::chore"]))

    def test_pipeline_fetches_the_binaries_and_retries_a_network_flake(self):
        seed = project_seed()
        seed["labels"].append({"project_id": 1, "name": "fast-lane", "color": "#654321"})
        seed["pipelines"] = [{"project_id": 1, "ref": "main", "status": "failed", "source": "push", "jobs": [
            {"name": "install", "stage": "prepare", "status": "failed", "trace": NETWORK_LOG}]}]
        self.start(seed)
        self.consumer()  # binaries_sha256 left empty: the SHA256SUMS beside the tarball is used
        r = self.gcl("pipeline")
        self.assert_ran_only(r, "pipeline")
        self.assertEqual([x["path"].rsplit("/", 1)[-1] for x in self.binaries.log], [TARBALL, "SHA256SUMS"])
        retries = [w for w in self.writes() if w["path"].endswith("/retry")]
        self.assertEqual(len(retries), 1, self.writes())
        rep = r.report("pipeline")
        self.assertEqual((rep["exit_code"], rep["counters"]["retries"]), (0, 1))
        self.assertEqual(mrs_of(self.double), [])

    def test_a_wrong_checksum_fails_the_job_before_it_runs(self):
        self.start()
        good = "%s  %s\n" % (self.binaries.sha256, TARBALL)
        self.addCleanup(self.binaries.sums, good)
        url = self.binaries.url
        cases = [
            ({"binaries_sha256": "0" * 64}, good,
             "factory: checksum mismatch for %s from %s: expected %s (input binaries_sha256), got %s: "
             "the Factory was not run" % (TARBALL, url, "0" * 64, self.binaries.sha256)),
            ({}, "%s  %s\n" % ("f" * 64, TARBALL),
             "factory: checksum mismatch for %s from %s: expected %s (%s/SHA256SUMS), got %s: "
             "the Factory was not run" % (TARBALL, url, "f" * 64, url, self.binaries.sha256)),
            ({}, "%s  %s.sig\n" % (self.binaries.sha256, TARBALL),
             "factory: %s/SHA256SUMS lists no checksum for %s: the Factory was not run" % (url, TARBALL)),
            ({"binaries_url": url.replace("0.1.0", "9.9.9")}, good,
             "factory: cannot fetch %s/%s (input binaries_url): the Factory was not run"
             % (url.replace("0.1.0", "9.9.9"), TARBALL)),
        ]
        for inputs, sums, message in cases:
            with self.subTest(inputs=inputs, sums=sums):
                self.binaries.sums(sums)
                self.consumer(inputs)
                self.double.clear_requests()
                r = self.gcl("pipeline", expect=1)
                self.assert_ran_only(r, "pipeline", "FAIL")
                self.assertIn(message, r.output)
                self.assertEqual(self.double.requests(), [])  # the job never started
                self.assertEqual(os.listdir(os.path.join(self.work, ".factory-bin")),
                                 ["SHA256SUMS"] if "binaries_sha256" not in inputs and "binaries_url" not in inputs
                                 else [])
        # the right checksum given as the input (in capitals): no SHA256SUMS needed, the job runs
        self.binaries.sums(good)
        self.consumer({"binaries_sha256": self.binaries.sha256.upper()})
        self.binaries.log.clear()
        r = self.gcl("pipeline")
        self.assert_ran_only(r, "pipeline")
        self.assertEqual([x["path"].rsplit("/", 1)[-1] for x in self.binaries.log], [TARBALL])

    def test_release_publishes_what_closed(self):
        self.start()
        self.consumer()
        self.setup_labels()
        i = gl(self.double, "POST", "/projects/1/issues", {"title": "Export to CSV", "labels": "type::feature"})
        gl(self.double, "PUT", "/projects/1/issues/%d" % i["iid"], {"state_event": "close"})
        time.sleep(1.1)  # the job's cut-off is now - 1 s
        r = self.gcl("release")
        self.assert_ran_only(r, "release")
        releases = gl(self.double, "GET", "/projects/1/releases")
        self.assertEqual(len(releases), 1, releases)
        self.assertIn("Export to CSV", releases[0]["description"])
        rep = r.report("release")
        self.assertEqual(rep["exit_code"], 0)
        self.assertIn(releases[0]["tag_name"], rep["summary"] + r.report_md("release"))

    def test_watch_files_friction_from_a_sample_log(self):
        self.start()
        now = time.time()
        lines = []
        for k, dt in enumerate((300, 280, 260, 220)):
            lines.append(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - dt)),
                                     "level": "error", "msg": "payment failed for order %d: card declined" % (9000 + k),
                                     "user_id": "alice", "route": "/checkout"}))
        for k in range(10):
            lines.append(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 400 + k * 30)),
                                     "level": "info", "msg": "GET /api/v1/items 200 in %d ms" % k,
                                     "user_id": "u%03d" % k, "route": "/items"}))
        lines.sort(key=lambda l: json.loads(l)["time"])
        self.consumer(policy_file="ci/factory.yml", policy="watch:\n  source: logs/app.log\n  window: 15m\n",
                      files={"logs/app.log": "\n".join(lines) + "\n"})
        self.setup_labels()
        r = self.gcl("watch")
        self.assert_ran_only(r, "watch")
        issues = [i for i in gl(self.double, "GET", "/projects/1/issues?state=opened")
                  if "source::factory" in i["labels"]]
        self.assertEqual(len(issues), 1, issues)
        self.assertIn("payment failed for order", issues[0]["title"])
        self.assertEqual(r.report("watch")["counters"]["issues_filed"], 1)
        # the next run: the same fingerprint, nothing filed again
        r = self.gcl("watch")
        self.assertEqual(len([i for i in gl(self.double, "GET", "/projects/1/issues?state=opened")
                              if "source::factory" in i["labels"]]), 1)


if __name__ == "__main__":
    unittest.main()
