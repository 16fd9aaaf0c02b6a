"""FACTORY_AGENT=command: an external agent CLI run in the same sandbox as the
built-in loop (scrubbed environment, unprivileged user, timeout from the wall
budget), given the prompt in a file; the job collects what it changed."""
import os
import tempfile
import unittest

from lib.agentrun import make_repo, remove, run_agent

GITLAB_TOKEN = "gitlab-secret-for-external-1234"

AGENT = r'''#!/bin/sh
# A stand-in for an agent CLI that takes a prompt file.
prompt="$1"
grep -q "Rename the project" "$prompt" || { echo "prompt not found in $prompt"; exit 9; }
[ "$prompt" = "$AGENT_PROMPT_FILE" ] || { echo "AGENT_PROMPT_FILE differs"; exit 9; }
sed -i 's/demo/renamed/' README.md
echo "uid $(id -u)"
env | sort
echo "passed: ${MY_AGENT_KEY:-none}"
echo "all done"
'''


class AgentExternalTest(unittest.TestCase):
    def setUp(self):
        self.repo = make_repo({"README.md": "# demo\n"})
        self.addCleanup(remove, self.repo)
        self.bin = tempfile.mkdtemp(prefix="factory-ext-")
        os.chmod(self.bin, 0o755)
        self.addCleanup(remove, self.bin)

    def script(self, body):
        path = os.path.join(self.bin, "agent.sh")
        with open(path, "w") as f:
            f.write(body)
        os.chmod(path, 0o755)
        return path

    def run_ext(self, cmd, env=None):
        e = {"FACTORY_AGENT": "command", "FACTORY_AGENT_CMD": cmd, "FACTORY_GITLAB_TOKEN": GITLAB_TOKEN}
        e.update(env or {})
        return run_agent(None, self.repo, "Rename the project to 'renamed'.", extra_env=e)

    def test_external_agent_edits_the_tree(self):
        path = self.script(AGENT)
        r = self.run_ext(path + " {prompt_file}", {"MY_AGENT_KEY": "agent-own-key-42",
                                                  "FACTORY_AGENT_EXTERNAL_ENV": "MY_AGENT_KEY"})
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("-# demo\n+# renamed", r.stdout)
        self.assertEqual(r.agent["outcome"], "finished")
        out = r.records("tool")[0]["content"]
        self.assertIn("uid 65534", out)
        self.assertIn("all done", out)
        # A variable the settings name is passed, and, being a key, masked in the record.
        self.assertIn("passed: [MASKED]", out)
        self.assertNotIn("agent-own-key-42", out + r.transcript_text)
        self.assertNotIn(GITLAB_TOKEN, out + r.output + r.transcript_text)
        self.assertNotIn("FACTORY_", out)
        self.assertIn("all done", r.agent["summary"])
        self.assertEqual(r.records("start")[0]["agent"], "command")

    def test_external_agent_failing(self):
        path = self.script("#!/bin/sh\necho broken >&2\nexit 3\n")
        r = self.run_ext(path)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.agent["outcome"], "failed")
        self.assertIn("the agent command exited 3", r.stderr)

    def test_external_agent_out_of_time(self):
        path = self.script("#!/bin/sh\necho started\nsleep 60\n")
        r = self.run_ext(path, {"FACTORY_AGENT_MAX_WALL_S": "1"})
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.agent["outcome"], "budget")
        self.assertIn("the agent command was killed", r.stderr)

    def test_external_agent_settings(self):
        r = self.run_ext("")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_AGENT_CMD", r.stderr)
        r = self.run_ext("true", {"FACTORY_AGENT_EXTERNAL_ENV": "FACTORY_GITLAB_TOKEN"})
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_GITLAB_TOKEN can never be given", r.stderr)
        r = self.run_ext("true", {"FACTORY_AGENT": "magic"})
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("expected builtin or command", r.stderr)


if __name__ == "__main__":
    unittest.main()
