"""factory-implement's command line: the agent subcommand's usage errors, and
the main mode's own (without GitLab settings it says which is missing, exit 2;
the main mode itself is tested in test_implement_*.py)."""
import os
import tempfile
import unittest

from lib.agentrun import make_repo, remove, run_agent
from lib.factory import job_env, run_job

LLM = {"FACTORY_LLM_MODEL": "claude-sonnet-4-5", "FACTORY_LLM_API_KEY": "sk-ant-cli-test-123456789",
       "FACTORY_LLM_BASE_URL": "http://127.0.0.1:9"}


class ImplementCliTest(unittest.TestCase):
    def setUp(self):
        self.repo = make_repo({"README.md": "# demo\n"})
        self.addCleanup(remove, self.repo)

    def test_main_mode_needs_gitlab_and_unknown_commands_are_refused(self):
        r = run_job("implement", None, env=job_env(None))
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("missing setting gitlab_url", r.stderr)
        r = run_job("implement", None, "issue", "12", env=job_env(None))
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("unknown command 'issue'", r.stderr)

    def test_help_and_version(self):
        r = run_job("implement", None, "--help", env=job_env(None))
        self.assertEqual(r.returncode, 0)
        self.assertIn("agent --repo DIR --task FILE", r.stdout)
        r = run_job("implement", None, "--version", env=job_env(None))
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("factory-implement "))

    def test_usage_errors(self):
        task = tempfile.NamedTemporaryFile("w", suffix=".md", delete=False)
        task.write("Do it.\n")
        task.close()
        self.addCleanup(os.unlink, task.name)
        empty = tempfile.NamedTemporaryFile("w", suffix=".md", delete=False)
        empty.close()
        self.addCleanup(os.unlink, empty.name)
        notrepo = tempfile.mkdtemp()
        self.addCleanup(remove, notrepo)
        cases = [
            ((), {}, "missing setting agent.repo"),
            (("--repo", self.repo), {}, "missing setting agent.task"),
            (("--repo", self.repo, "--task", "/nonexistent/task.md"), {}, "cannot read the task file"),
            (("--repo", self.repo, "--task", empty.name), {}, "is empty"),
            (("--repo", notrepo, "--task", task.name), {}, "--repo %s: cannot open repository" % notrepo),
            (("--repo", self.repo, "--task", task.name, "--bogus"), {}, "unknown or incomplete option '--bogus'"),
            (("--repo", self.repo, "--task", task.name, "extra"), {}, "unexpected argument 'extra'"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_LLM_PROVIDER": "gemini"}, "llm.provider=gemini"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_LLM_MODEL": None}, "missing setting llm.model"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_LLM_API_KEY": None}, "FACTORY_LLM_API_KEY"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_LLM_BASE_URL": "file:///etc"}, "llm.base_url"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_LLM_API_KEY": None,
                                                          "FACTORY_LLM_API_KEY_FILE": "/nonexistent"},
             "cannot read the LLM key file"),
            (("--repo", self.repo, "--task", task.name), {"FACTORY_AGENT_ENV_ALLOW": "NPM_TOKEN"},
             "NPM_TOKEN looks like a secret"),
        ]
        for args, env, says in cases:
            with self.subTest(args=args, env=env):
                full = job_env(None)
                full.update(LLM)
                for k, v in env.items():
                    if v is None:
                        full.pop(k, None)
                    else:
                        full[k] = v
                r = run_job("implement", None, "agent", *args, env=full, timeout=30)
                self.assertEqual(r.returncode, 2, r)
                self.assertIn(says, r.stderr)
                self.assertNotIn("sk-ant-cli-test-123456789", r.output)

    def test_key_from_a_file(self):
        from lib.llm import LLMDouble, finish
        keyfile = tempfile.NamedTemporaryFile("w", delete=False)
        keyfile.write("sk-ant-double-0123456789abcdef\n")
        keyfile.close()
        self.addCleanup(os.unlink, keyfile.name)
        with LLMDouble([finish()]) as llm:
            r = run_agent(llm, self.repo, "x", extra_env={"FACTORY_LLM_API_KEY": None,
                                                          "FACTORY_LLM_API_KEY_FILE": keyfile.name})
            self.assertEqual(llm.failures(), [])
        self.assertEqual(r.returncode, 0, r)


if __name__ == "__main__":
    unittest.main()
