"""Run `factory-intake serve` for tests and benchmarks, and talk to it over HTTP.

    from lib.intake import IntakeServer
    with IntakeServer(double, spool_dir, env={"FACTORY_INTAKE_RATE_LIMIT": "0"}) as srv:
        r = srv.post_json({"kind": "bug", "title": "t", "description": "d"})
        r.status, r.json()

The binary comes from $FACTORY_BIN_DIR (lib.factory.binary). Under sanitizers
any report in the server's output fails the test when it stops.
"""
import http.client
import json
import os
import select
import signal
import subprocess
import tempfile
import time
import urllib.parse

from lib.factory import binary, check_sanitizers, job_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDGET_DIR = os.path.join(ROOT, "jobs", "intake", "widget")


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Reply %d %r>" % (self.status, self.body[:300])


class IntakeServer:
    """factory-intake serve on a free loopback port (port 0, read back from stdout)."""

    def __init__(self, double, spool_dir, env=None, args=(), deliver=True, start=True):
        self.double = double
        self.spool_dir = spool_dir
        self.report_dir = tempfile.mkdtemp(prefix="intake-report-")
        e = job_env(double)
        e.update({
            "FACTORY_INTAKE_SPOOL": spool_dir,
            "FACTORY_INTAKE_LISTEN": "127.0.0.1:0",
            "FACTORY_INTAKE_MIN_FILL_MS": "0",
            "FACTORY_INTAKE_RETRY_MAX_MS": "300",
            # Also how long an unanswered create is left to settle before the
            # search that keeps delivery exactly once: short, for quick tests.
            "FACTORY_HTTP_TIMEOUT_MS": "3000",
            "FACTORY_REPORT_DIR": self.report_dir,
        })
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        self.env = e
        self.args = list(args) + ([] if deliver else ["--no-deliver"])
        self.proc = None
        self.url = self.host = self.port = None
        self.output = ""
        self._err = None
        if start:
            self.start()

    def start(self, timeout=30):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary("intake"), "serve"] + self.args, env=self.env,
                                     stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=tempfile.gettempdir())
        deadline = time.time() + timeout
        line = b""
        while time.time() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        line = line.decode().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("factory-intake did not start (got %r):\n%s" % (line, self.output))
        self.url = line[len("listening on "):]
        self.host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        self.port = int(port)
        return self

    def _collect(self):
        if self._err:
            self._err.seek(0)
            self.output += self._err.read().decode("utf-8", "replace")
            self._err.close()
            self._err = None
        if self.proc and self.proc.stdout:
            self.output += self.proc.stdout.read().decode("utf-8", "replace")
            self.proc.stdout.close()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stop the server; returns its exit code."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self._collect()
        self.proc = None
        if sig != signal.SIGKILL:
            check_sanitizers(self.output)
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def report(self):
        path = os.path.join(self.report_dir, "report.json")
        with open(path) as f:
            return json.load(f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP ----
    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Reply(r.status, r.headers, r.read())
        finally:
            conn.close()

    def post_json(self, obj, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", "/v1/feedback", json.dumps(obj).encode(), h)

    def post_form(self, fields, headers=None):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        return self.request("POST", "/v1/feedback", urllib.parse.urlencode(fields).encode(), h)

    def health(self):
        return self.request("GET", "/healthz").json()

    def wait_delivered(self, n, timeout=60):
        """Wait until the server says it delivered at least n submissions."""
        deadline = time.time() + timeout
        h = None
        while time.time() < deadline:
            h = self.health()
            if h["delivery"].get("delivered", 0) >= n and h["spool"]["pending"] == 0:
                return h
            time.sleep(0.05)
        raise AssertionError("not delivered in time: %r" % h)


def project_issues(double, project=1):
    """Every issue of the project in the double, oldest first."""
    out, page = [], 1
    while True:
        r = double.request("GET", "/projects/%d/issues?state=all&per_page=100&sort=asc&order_by=created_at&page=%d"
                           % (project, page))
        items = r.json()
        out.extend(items)
        nxt = r.headers.get("x-next-page")
        if not nxt:
            return out
        page = int(nxt)


def issue_notes(double, iid, project=1):
    return double.request("GET", "/projects/%d/issues/%d/notes?per_page=100&sort=asc" % (project, iid)).json()
