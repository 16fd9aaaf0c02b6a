"""The CI/CD component and the project's own pipeline:
- every YAML file (templates/*.yml and .gitlab-ci.yml, header and body) validates
  against GitLab's CI schema with ajv;
- gitlab-ci-local runs the component's jobs, included by a sample consumer project,
  with the shell executor against the GitLab double."""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

from lib.double import Double
from lib.factory import BIN_DIR, ROOT, gl
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


class GitlabCiLocalTest(unittest.TestCase):
    """Runs the component's jobs as a consumer project would include them."""

    def setUp(self):
        self.npm = ensure_node_modules("tests/ci")
        if not shutil.which("rsync"):
            self.fail("gitlab-ci-local needs rsync (scripts/install-deps.sh test installs it)")
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)
        self.work = tempfile.mkdtemp(prefix="factory-consumer-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.makedirs(os.path.join(self.work, "templates"))
        shutil.copy(os.path.join(ROOT, "templates", "factory.yml"), os.path.join(self.work, "templates"))
        subprocess.run(["git", "init", "-q", "-b", "main", self.work], check=True)
        # gitlab-ci-local reads the project's path from the remote; it is never contacted
        subprocess.run(["git", "remote", "add", "origin", "http://127.0.0.1:9/consumer/app.git"], cwd=self.work,
                       check=True)

    def consumer(self, inputs):
        lines = ["stages: [test]", "include:", "  - local: templates/factory.yml", "    inputs:"]
        lines += ["      %s: %s" % (k, v) for k, v in inputs.items()]
        with open(os.path.join(self.work, ".gitlab-ci.yml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ)
        env["PATH"] = BIN_DIR + os.pathsep + env["PATH"]
        subprocess.run(["git", "add", "-A"], cwd=self.work, check=True)
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "ci"], cwd=self.work,
                       check=True, env=env)
        return env

    def gcl(self, env, *args):
        cmd = [os.path.join(self.npm, "node_modules", ".bin", "gitlab-ci-local"), "--force-shell-executor",
               "--variable", "FACTORY_GITLAB_URL=" + self.double.url,
               "--variable", "FACTORY_GITLAB_TOKEN=" + self.double.token,
               "--variable", "FACTORY_PROJECT=factory/demo",
               "--variable", "NO_COLOR=1"] + list(args)
        return subprocess.run(cmd, cwd=self.work, env=env, capture_output=True, text=True, timeout=600)

    def test_setup_job_runs_from_the_component(self):
        env = self.consumer({"jobs": "setup,triage", "dry_run": "false"})
        r = self.gcl(env, "--variable", "FACTORY_JOB=setup", "factory-setup")
        self.assertEqual(r.returncode, 0, r.stdout[-4000:] + r.stderr[-2000:])
        boards = gl(self.double, "GET", "/projects/1/boards")
        self.assertEqual([b["name"] for b in boards if b["name"] == "Factory"], ["Factory"])
        self.assertTrue(os.path.exists(os.path.join(self.work, "factory-report", "setup", "report.json")) or
                        "report" in r.stdout)

    def test_inputs_reach_the_job(self):
        env = self.consumer({"jobs": "setup", "dry_run": "true", "job_prefix": "bot-"})
        r = self.gcl(env, "--variable", "FACTORY_JOB=setup", "bot-setup")
        self.assertEqual(r.returncode, 0, r.stdout[-4000:] + r.stderr[-2000:])
        self.assertIn("would POST", r.stdout + r.stderr)
        self.assertNotIn("Factory", [b["name"] for b in gl(self.double, "GET", "/projects/1/boards")])

    def test_disabled_job_does_not_run(self):
        # enabled: the setup schedule lists the setup job, and only it
        env = self.consumer({"jobs": "setup,triage"})
        r = self.gcl(env, "--variable", "FACTORY_JOB=setup", "--list")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("factory-setup", r.stdout)
        self.assertNotIn("factory-triage", r.stdout)
        # disabled through the jobs input: the same schedule runs nothing
        env = self.consumer({"jobs": "triage"})
        r = self.gcl(env, "--variable", "FACTORY_JOB=setup", "--list")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("factory-setup", r.stdout)
        self.assertNotIn("factory-triage", r.stdout)

if __name__ == "__main__":
    unittest.main()
