#!/usr/bin/python3
"""The demo: the whole Factory loop on one machine, against the doubles.

Starts the GitLab double (a sample project with a small repository), the LLM
double (scripted answers standing in for a model), an SMTP sink and a chat
webhook receiver, all on 127.0.0.1, then:

  1. setup      labels and the board
  2. intake     a customer submits feedback through the intake server
  3. triage     ranks it into Up Next
  4. implement  takes it to a branch, a commit and a merge request
  5. pipeline   the merge request's pipeline fails to compile: classified and fixed
  6. implement  the pipeline passed: the merge request is merged, the issue closes
  7. release    writes the notes, publishes the release, tells the customer
  8. watch      reads a production log, finds one user hitting the same error
                4 times in 2 minutes, files an issue
  9. triage     ranks the new issue

The board is printed after each step; every job's report lands in
demo-report/<step>/. The same binaries drive a real project once the
README's variables are set. Nothing here leaves the loopback interface.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.double import Double  # noqa: E402
from lib.llm import LLMDouble, call, finish, turn  # noqa: E402
from lib.smtp_sink import SmtpSink  # noqa: E402
from lib.webhook import WebhookReceiver  # noqa: E402

BIN = os.environ.get("FACTORY_BIN_DIR") or os.path.join(ROOT, "bin")
OUT = os.path.join(ROOT, "demo-report")

FILES = {
    "README.md": "# Greeter\n\nSays hello. Build with `cc -c src/greeting.c`.\n",
    "AGENTS.md": "Run `cc -c src/greeting.c` before you finish.\n",
    "src/greeting.c": "const char *greeting(void)\n{\n\treturn \"Helo, world!\"\n}\n",
}

COMPILE_LOG = """\x1b[0KRunning with gitlab-runner 17.5.0 (abc123)
\x1b[0K\x1b[0;m\x1b[0Ksection_start:1795750000:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting "step_script" stage of the job script\x1b[0;m
$ cc -Wall -c src/greeting.c
src/greeting.c: In function 'greeting':
src/greeting.c:3:32: error: expected ';' before '}' token
    3 |         return "Hello, world!"
      |                                ^
      |                                ;
    4 | }
      | ~
\x1b[0Ksection_end:1795750002:step_script\r\x1b[0K
\x1b[31;1mERROR: Job failed: exit code 1
\x1b[0;m"""


def production_log(now):
    """JSON lines: user u-1842 hits the same payment error 4 times in 2
    minutes (friction); u-77 hits it 3 times (not yet); plenty of noise."""
    lines = []
    t0 = now - 600
    for i in range(200):
        lines.append({"time": t0 + i * 2, "level": "info", "msg": "GET /products/%d 200 in %d ms" % (i % 17, 20 + i % 9),
                      "user": "u-%d" % (i % 13)})
    for k, (user, order) in enumerate([("u-1842", 99120), ("u-1842", 99121), ("u-77", 55001), ("u-1842", 99122),
                                       ("u-77", 55002), ("u-1842", 99123), ("u-77", 55003)]):
        lines.append({"time": t0 + 420 + k * 15, "level": "error", "user": user, "route": "/checkout",
                      "status": 502, "msg": "payment failed for order %d: card declined by gateway "
                                            "(customer jane.doe@example.com, token sk_live_4eC39HqLyjWDarjtT1zdp7dc)"
                                            % order})
    lines.sort(key=lambda r: r["time"])
    for r in lines:
        r["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["time"]))
    return "".join(json.dumps(r) + "\n" for r in lines)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Demo:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="factory-demo-")
        os.chmod(self.tmp, 0o755)  # the agent's commands run as an unprivileged user when we are root
        seed = {"projects": [{"id": 1, "path_with_namespace": "factory/demo", "default_branch": "main",
                              "files": FILES}]}
        self.gitlab = Double(seed=seed)
        self.sink = SmtpSink().start()
        self.hook = WebhookReceiver().start()
        self.llm = LLMDouble(self.agent_script()).start()
        self.env = {k: v for k, v in os.environ.items()
                    if not (k.startswith("CI_") or k.startswith("FACTORY_"))}
        self.env.update({
            "NO_COLOR": "1",
            "FACTORY_GITLAB_URL": self.gitlab.url,
            "FACTORY_GITLAB_TOKEN": self.gitlab.token,
            "FACTORY_PROJECT": "factory/demo",
            "FACTORY_GIT_AUTHOR_NAME": "Factory",
            "FACTORY_GIT_AUTHOR_EMAIL": "factory@example.invalid",
            "FACTORY_IMPLEMENT_WORKDIR": self.tmp,
            "FACTORY_IMPLEMENT_CLAIM_SETTLE_MS": "200",
            "FACTORY_SMTP_URL": self.sink.url,
            "FACTORY_SMTP_FROM": "Greeter releases <releases@example.com>",
            "FACTORY_SMTP_TLS": "none",
            "FACTORY_RELEASE_WEBHOOK_URL": self.hook.url,
        })
        self.env.update(self.llm.env("anthropic"))

    @staticmethod
    def agent_script():
        return [
            # implement: the typo the customer reported
            turn("I'll fix the greeting's spelling.",
                 [call("read_file", path="src/greeting.c")]),
            turn(calls=[call("edit_file", path="src/greeting.c", old="Helo, world!", new="Hello, world!")]),
            finish("Fixed the spelling of the greeting (Helo -> Hello).", tested=False, confidence="high"),
            # pipeline: the compile error its pipeline then shows
            turn("The log shows a missing semicolon at src/greeting.c:3.",
                 [call("edit_file", path="src/greeting.c", old="\"Hello, world!\"\n", new="\"Hello, world!\";\n")]),
            turn(calls=[call("run_command", command="cc -c src/greeting.c -o /tmp/greeting.o", timeout_s=60)]),
            finish("Added the missing semicolon; src/greeting.c compiles.", tested=True, confidence="high"),
        ]

    def close(self):
        for s in (self.llm, self.hook, self.sink, self.gitlab):
            try:
                s.stop()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, step, job, *args, env=None, check=True):
        print("\n=== %s: factory-%s %s" % (step, job, " ".join(args)), flush=True)
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        e["FACTORY_REPORT_DIR"] = os.path.join(OUT, step)
        r = subprocess.run([os.path.join(BIN, "factory-" + job)] + list(args), env=e, cwd=self.tmp)
        if check and r.returncode != 0:
            raise SystemExit("demo: step %s failed (exit %d); see %s/%s/report.md" % (step, r.returncode, OUT, step))
        return r.returncode

    def board(self):
        e = dict(self.env, FACTORY_REPORT_DIR=os.path.join(self.tmp, "board-report"), FACTORY_LOG_LEVEL="warn")
        out = subprocess.run([os.path.join(BIN, "factory-setup"), "--print-board", "--dry-run"], env=e,
                             capture_output=True, text=True, cwd=self.tmp).stdout
        print("\n" + "\n".join(l for l in out.splitlines() if "\x1b" not in l), flush=True)

    def api(self, method, path, body=None):
        r = self.gitlab.request(method, path, body)
        if r.status >= 400:
            raise SystemExit("demo: %s %s: %d %s" % (method, path, r.status, r.text[:300]))
        return r.json()

    # ---- the steps ----
    def intake(self):
        spool = os.path.join(self.tmp, "spool")
        port = free_port()
        print("\n=== intake: factory-intake serve --listen 127.0.0.1:%d, a customer posts feedback" % port, flush=True)
        e = dict(self.env, FACTORY_REPORT_DIR=os.path.join(OUT, "intake"))
        server = subprocess.Popen([os.path.join(BIN, "factory-intake"), "serve", "--listen", "127.0.0.1:%d" % port,
                                   "--spool", spool], env=e, cwd=self.tmp)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            body = json.dumps({
                "kind": "bug", "title": "The home page says \"Helo, world!\"",
                "description": "Small thing, but the greeting on the home page is misspelt: it says Helo.\n"
                               "/close\n@all please look",
                "email": "dana@customer.example", "page_url": "https://greeter.example/",
                "app_version": "1.4.2"}).encode()
            req = urllib.request.Request("http://127.0.0.1:%d/v1/feedback" % port, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                print("POST /v1/feedback -> %d %s" % (resp.status, resp.read().decode()[:200]), flush=True)
            for _ in range(100):
                if self.api("GET", "/projects/1/issues?state=opened"):
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("demo: the feedback never became an issue")
        finally:
            server.terminate()
            server.wait(timeout=10)

    def red_pipeline_on_the_mr(self):
        mr = self.api("GET", "/projects/1/merge_requests?state=opened")[0]
        sha = self.api("GET", "/projects/1/repository/branches/%s" % mr["source_branch"].replace("/", "%2F"))
        sha = sha["commit"]["id"]
        print("\n=== the merge request's pipeline fails (job 'build' on %s)" % mr["source_branch"], flush=True)
        self.gitlab.add_pipeline({"project_id": 1, "ref": mr["source_branch"], "sha": sha, "status": "failed",
                                  "source": "merge_request_event",
                                  "jobs": [{"name": "build", "stage": "build", "status": "failed",
                                            "failure_reason": "script_failure", "trace": COMPILE_LOG}]})
        return mr

    def green_pipeline_on_the_mr(self, mr):
        sha = self.api("GET", "/projects/1/repository/branches/%s" % mr["source_branch"].replace("/", "%2F"))
        sha = sha["commit"]["id"]
        print("\n=== the fixed branch's pipeline passes (%s)" % sha[:8], flush=True)
        self.gitlab.add_pipeline({"project_id": 1, "ref": mr["source_branch"], "sha": sha, "status": "success",
                                  "source": "merge_request_event",
                                  "jobs": [{"name": "build", "stage": "build", "status": "success",
                                            "trace": "$ cc -Wall -c src/greeting.c\nJob succeeded\n"}]})

    def watch(self):
        log = os.path.join(self.tmp, "production.log")
        with open(log, "w") as f:
            f.write(production_log(int(time.time())))
        self.run("8-watch", "watch", env={"FACTORY_WATCH_SOURCE": log, "FACTORY_WATCH_FORMAT": "json"})

    def main(self):
        shutil.rmtree(OUT, ignore_errors=True)
        os.makedirs(OUT)
        print("GitLab double at %s (project factory/demo), LLM double at %s" % (self.gitlab.url, self.llm.url))
        self.run("1-setup", "setup")
        self.board()
        self.intake()
        self.board()
        self.run("3-triage", "triage", "--no-llm")
        self.board()
        self.run("4-implement", "implement")
        self.board()
        mr = self.red_pipeline_on_the_mr()
        self.run("5-pipeline", "pipeline")
        self.green_pipeline_on_the_mr(mr)
        self.run("6-implement", "implement")
        self.board()
        # release counts issues closed up to a second ago (a closing in the very
        # second of the run belongs to the next release): let that second pass
        time.sleep(2)
        # the scripted model played its part for implement and pipeline; the
        # release's model opinion is optional, so the rules decide here
        self.run("7-release", "release", env={"FACTORY_LLM_MODEL": None})
        for m in self.sink.messages():
            print("email to %s: %s" % (", ".join(m.rcpt_to), m.subject), flush=True)
        print("webhook posts: %d" % len(self.hook.posts()), flush=True)
        self.watch()
        self.board()
        self.run("9-triage", "triage", "--no-llm")
        self.board()
        fails = self.llm.failures()
        if fails:
            raise SystemExit("demo: the LLM double saw malformed requests: %s" % fails)
        print("\nReports: %s/<step>/report.md" % OUT)


if __name__ == "__main__":
    d = Demo()
    try:
        d.main()
    finally:
        d.close()
