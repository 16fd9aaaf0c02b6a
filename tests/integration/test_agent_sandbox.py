"""The agent's sandbox end to end, with the job running as root as CI jobs do:
every way out of the repository root (paths, symlinks made before and during
the run, .git/hooks, renaming .git) and every route to a secret (the
environment, /proc/<parent>/environ and /proc/<parent>/mem, any process's
memory, .git/config, files on disk, the network) is tried by a scripted model
and must fail, with namespaces and without them."""
import os
import subprocess
import tempfile
import unittest

from lib.agentrun import make_repo, remove, run_agent
from lib.llm import LLMDouble, call, finish, turn

# Values no masking pattern knows: if one shows anywhere, the sandbox leaked it.
GITLAB_TOKEN = "gitlab-secret-value-7781"
JOB_TOKEN = "jobtokenvalue991-abc"
GIT_CONFIG_TOKEN = "plainsecretvalue42"
FILE_SECRET = "filesecretvalue-5521"

# Searches every other process's environ, cmdline and memory for the secret,
# which it carries reversed so that its own command line does not hold it.
HUNT = r'''
import os, re, sys
secret = bytes.fromhex(sys.argv[1])[::-1]
me = os.getpid()
leaks, denied, read = [], 0, 0
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    if pid == me:
        continue
    for name in ("environ", "cmdline"):
        try:
            data = open("/proc/%d/%s" % (pid, name), "rb").read()
            read += 1
            if secret in data:
                leaks.append("%d/%s" % (pid, name))
        except OSError:
            denied += 1
    try:
        maps = open("/proc/%d/maps" % pid).read()
        mem = open("/proc/%d/mem" % pid, "rb")
        for line in maps.splitlines():
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
            if not m:
                continue
            a, b = int(m.group(1), 16), int(m.group(2), 16)
            if b - a > 64 << 20:
                continue
            try:
                mem.seek(a)
                if secret in mem.read(b - a):
                    leaks.append("%d/mem" % pid)
                    break
            except (OSError, OverflowError, ValueError):
                pass
        read += 1
    except OSError:
        denied += 1
pid = os.getppid()
while pid > 0:
    try:
        status = dict(l.split(":\t", 1) for l in open("/proc/%d/status" % pid).read().splitlines() if ":\t" in l)
    except OSError:
        break
    res = []
    for name in ("environ", "mem"):
        try:
            f = open("/proc/%d/%s" % (pid, name), "rb")
            res.append("%s readable" % name)
            f.close()
        except OSError as e:
            res.append("%s %s" % (name, type(e).__name__))
    print("ancestor %d %s uid %s: %s" % (pid, status.get("Name"), status.get("Uid", "").split()[0], ", ".join(res)))
    pid = int(status.get("PPid", 0))
print("denied %d read %d leaks %d %s" % (denied, read, len(leaks), " ".join(leaks)))
'''


def hunt(secret):
    return "python3 -c '%s' %s" % (HUNT.replace("'", "'\"'\"'"), secret[::-1].encode().hex())


class AgentSandboxTest(unittest.TestCase):
    def setUp(self):
        self.assertEqual(os.geteuid(), 0, "these tests are about running as root, as CI jobs do")
        self.repo = make_repo({"README.md": "# demo\n", "src/a.c": "int a;\n"}, symlinks={"out": "/etc"})
        self.addCleanup(remove, self.repo)
        subprocess.run(["git", "-C", self.repo, "remote", "add", "origin",
                        "https://oauth2:%s@gitlab.example.com/g/p.git" % GIT_CONFIG_TOKEN], check=True)
        subprocess.run(["git", "-C", self.repo, "config", "http.https://gitlab.example.com.extraheader",
                        "AUTHORIZATION: basic %s" % GIT_CONFIG_TOKEN], check=True)
        self.secret_dir = tempfile.mkdtemp(prefix="factory-secret-")
        self.addCleanup(remove, self.secret_dir)
        self.secret_file = os.path.join(self.secret_dir, "token")
        with open(self.secret_file, "w") as f:
            f.write(FILE_SECRET + "\n")
        os.chmod(self.secret_file, 0o600)

    def secret_env(self, extra=None):
        e = {"FACTORY_GITLAB_TOKEN": GITLAB_TOKEN, "CI_JOB_TOKEN": JOB_TOKEN, "FACTORY_TOKEN_FILE": self.secret_file}
        e.update(extra or {})
        return e

    def run_steps(self, steps, extra_env=None, as_uid=None):
        """Each step: (call, expectation dict or None). Returns the run and the tool results seen by the model."""
        script, prev = [], None
        for c, want in steps:
            script.append(turn(calls=[c], expect={"tool_results": [prev]} if prev else None))
            prev = want or {}
        script.append(finish(expect={"tool_results": [prev]} if prev else None))
        with LLMDouble(script) as llm:
            r = run_agent(llm, self.repo, "Try to get out.", extra_env=self.secret_env(extra_env), as_uid=as_uid)
            self.assertEqual(llm.failures(), [], r)
            self.llm_key = llm.api_key
            seen = []
            for req in llm.requests():
                for m in req["body"]["messages"]:
                    if isinstance(m.get("content"), list):
                        seen += [b.get("content", "") for b in m["content"] if b.get("type") == "tool_result"]
        self.assertEqual(r.returncode, 0, r)
        self.assert_no_secret(r, seen)
        return r, seen

    def assert_no_secret(self, r, seen):
        everything = "\n".join(seen) + r.output + r.transcript_text
        for s in (GITLAB_TOKEN, JOB_TOKEN, GIT_CONFIG_TOKEN, FILE_SECRET, self.llm_key):
            self.assertNotIn(s, everything)
        for s in seen:
            self.assertNotIn("[MASKED]", s, "a secret reached a command (and was only masked on the way out)")

    def test_paths_and_symlinks_stay_inside(self):
        E = lambda s: {"contains": s, "is_error": True}
        steps = [
            (call("read_file", path="/etc/shadow"), E("absolute paths are not allowed")),
            (call("read_file", path="src/../../../etc/shadow"), E("'..' is not allowed")),
            (call("read_file", path="out/shadow"), E("leads outside the repository")),
            (call("list_files", path="out"), E("leads outside the repository")),
            (call("search", pattern="root", path="out"), E("leads outside the repository")),
            (call("run_command", command="ln -s / rootlink && ln -s .git gitlink && ln -s %s secretlink && echo made"
                  % self.secret_file), {"contains": "made", "is_error": False}),
            (call("read_file", path="rootlink/etc/shadow"), E("leads outside the repository")),
            (call("read_file", path="secretlink"), E("leads outside the repository")),
            (call("write_file", path="gitlink/hooks/pre-commit", content="#!/bin/sh\nexit 0\n"), E(".git")),
            (call("write_file", path=".git/hooks/post-checkout", content="x"), E(".git/ cannot be written")),
            (call("edit_file", path=".git/config", old="[core]", new="[core]\n\thooksPath = /tmp"),
             E(".git/ cannot be written")),
            (call("run_command", command="echo x > .git/hooks/post-commit; echo rc=$?; mkdir .git/hooks/d; "
                                         "echo rc=$?; mv .git .gone; echo rc=$?; touch /etc/pwned; echo rc=$?"),
             {"contains": "rc=1", "not_contains": "rc=0", "is_error": False}),
        ]
        before = sorted(os.listdir(os.path.join(self.repo, ".git/hooks")))
        self.run_steps(steps)
        self.assertEqual(sorted(os.listdir(os.path.join(self.repo, ".git/hooks"))), before)
        self.assertTrue(os.path.isdir(os.path.join(self.repo, ".git")))
        self.assertFalse(os.path.exists("/etc/pwned"))
        self.assertNotIn("hooksPath", open(os.path.join(self.repo, ".git/config")).read())

    def secret_routes(self, extra_env=None, as_uid=None, uid_seen="65534"):
        steps = [
            (call("run_command", command="id -u; env"), {"contains": uid_seen, "not_contains": "FACTORY_",
                                                        "is_error": False}),
            (call("run_command", command="cat /proc/$PPID/environ; echo rc=$?; head -c 64 /proc/$PPID/mem; "
                                         "echo rc=$?; cat /proc/1/environ; echo rc=$?"),
             {"not_contains": "rc=0", "is_error": False}),
            (call("run_command", command=hunt(GITLAB_TOKEN)), {"contains": "leaks 0 ", "is_error": False}),
            (call("run_command", command=hunt(self_key())), {"contains": "leaks 0 ", "is_error": False}),
            (call("run_command", command="cat .git/config; git config --get remote.origin.url"),
             {"contains": "https://gitlab.example.com/g/p.git", "is_error": False}),
            (call("run_command", command="cat %s; echo rc=$?; ls ~root; echo rc=$?; cat /root/.git-credentials; "
                                         "echo rc=$?" % self.secret_file),
             {"contains": "Permission denied", "not_contains": "rc=0", "is_error": False}),
            (call("read_file", path=".git/config"), {"not_contains": "extraheader", "is_error": False}),
        ]
        r, seen = self.run_steps(steps, extra_env, as_uid)
        hunts = [s for s in seen if "leaks" in s]
        self.assertTrue(hunts)
        for h in hunts:
            # Every process of the job's own (the job, and its forks that hold
            # a copy of its memory) keeps its environment and memory closed.
            ours = [l for l in h.splitlines() if l.startswith("ancestor") and "factory-implem" in l]
            self.assertTrue(ours, h)
            for line in ours:
                self.assertIn("environ PermissionError, mem PermissionError", line)
        with open(os.path.join(self.repo, ".git/config")) as f:
            cfg = f.read()
        self.assertNotIn(GIT_CONFIG_TOKEN, cfg, "the credential left in .git/config was removed")
        self.assertIn("removed 2 credentials", r.stderr)
        self.assertTrue(r.transcript)
        self.assertEqual(r.transcript_mode, 0o600)
        return r

    def test_secret_routes_with_namespaces(self):
        r = self.secret_routes()
        self.assertIn("namespaces", r.agent and r.records("start")[0]["sandbox"])

    def test_secret_routes_without_namespaces(self):
        # Where the kernel refuses namespaces: the unprivileged user and the
        # non-dumpable job must hold on their own, with the host's /proc in view.
        r = self.secret_routes({"FACTORY_AGENT_NAMESPACES": "false"})
        self.assertIn("no namespaces", r.records("start")[0]["sandbox"])

    def test_secret_routes_as_an_unprivileged_job(self):
        # Not root: commands keep the job's own uid, in user namespaces. Only
        # the job being non-dumpable keeps its environment and memory closed
        # to them; the hunt walks up to it.
        uid = 64999
        subprocess.run(["chown", "-R", "%d:%d" % (uid, uid), self.repo], check=True)
        os.chown(self.secret_dir, uid, uid)
        os.chmod(self.secret_file, 0o600)
        os.chown(self.secret_file, 0, 0)
        r = self.secret_routes({"HOME": "/tmp"}, as_uid=uid, uid_seen=str(uid))
        self.assertIn("the job's own uid %d" % uid, r.records("start")[0]["sandbox"])

    def test_secret_routes_as_an_unprivileged_job_without_namespaces(self):
        # The hardest case: same uid, the job's own process in view.
        uid = 64999
        subprocess.run(["chown", "-R", "%d:%d" % (uid, uid), self.repo], check=True)
        r = self.secret_routes({"HOME": "/tmp", "FACTORY_AGENT_NAMESPACES": "false"}, as_uid=uid, uid_seen=str(uid))
        self.assertIn("no namespaces", r.records("start")[0]["sandbox"])

    def test_no_network_unless_allowed(self):
        probe = ("python3 -c 'import urllib.request,sys; "
                 "print(urllib.request.urlopen(sys.argv[1] + \"/__double/state\", timeout=3).status)' %s; echo rc=$?")
        with LLMDouble() as llm:
            url = llm.url
        for allowed, want in (("false", "rc=1"), ("true", "200\nrc=0")):
            with self.subTest(network=allowed):
                with LLMDouble() as llm:
                    llm.load([turn(calls=[call("run_command", command=probe % llm.url)]),
                              finish(expect={"tool_results": [{"contains": want}]})])
                    r = run_agent(llm, self.repo, "reach out", extra_env={"FACTORY_AGENT_NETWORK": allowed})
                    self.assertEqual(llm.failures(), [], r)
                    self.assertEqual(r.returncode, 0, r)
        self.assertTrue(url)


def self_key():
    from lib.llm import DEFAULT_KEY
    return DEFAULT_KEY


if __name__ == "__main__":
    unittest.main()
