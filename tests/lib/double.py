"""Start and drive the GitLab test double (tests/gitlab_double/gitlab_double.py).

Usable from unittest modules, benchmarks and scripts:

    import sys; sys.path.insert(0, "tests/lib")
    from double import Double

    with Double() as d:                     # default seed: project 1 "factory/demo"
        d.seed({"issues": [{"project_id": 1, "title": "hello", "labels": ["bug"]}]})
        status, headers, body = d.request("GET", "/projects/1/issues")
        print(d.url, d.api, d.token, len(d.requests()))

Constructor keywords map to the double's CLI: tokens, seed (dict or path,
replaces the default project), tier, gitlab_version, rate_limit, state_dir,
quiet, extra_args.  ``GITLAB_DOUBLE`` (env) overrides the script path and
``GITLAB_DOUBLE_PYTHON`` the interpreter (default /usr/bin/python3).
"""

import gzip as _gzip
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

DEFAULT_TOKEN = "glpat-double-token-0000"
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.environ.get("GITLAB_DOUBLE") or os.path.normpath(
    os.path.join(HERE, "..", "gitlab_double", "gitlab_double.py"))
PYTHON = os.environ.get("GITLAB_DOUBLE_PYTHON") or (
    "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)


def _in_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def _die_with_parent():
    """Linux: SIGTERM the double if the process that started it dies (no orphans)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:
        pass


class Response:
    """A raw HTTP answer: status, headers (case-insensitive get), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # http.client.HTTPMessage
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8")) if self.body else None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __iter__(self):                 # status, headers, body = d.request(...)
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return f"<Response {self.status} {self.body[:80]!r}>"


class DoubleError(RuntimeError):
    pass


class Double:
    def __init__(self, *, tokens=None, seed=None, tier=None, gitlab_version=None, rate_limit=None,
                 state_dir=None, quiet=True, extra_args=(), start=True, timeout=30):
        self.tokens = list(tokens or [DEFAULT_TOKEN])
        self.token = self.tokens[0]
        self._seed_arg = seed
        self.tier = tier
        self.gitlab_version = gitlab_version
        self.rate_limit = rate_limit
        self.state_dir = state_dir
        self.quiet = quiet
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.proc = None
        self.url = self.api = self.host = None
        self.port = None
        self._tmp = None
        self._log = None
        self.log_path = None
        if start:
            self.start()

    # ---- lifecycle ----
    def start(self):
        if self.proc:
            return self
        self._tmp = tempfile.mkdtemp(prefix="double-helper-")
        args = [PYTHON, SCRIPT, "--listen", "127.0.0.1:0"]
        for t in self.tokens:
            args += ["--token", t]
        if self.state_dir:
            args += ["--state-dir", self.state_dir]
        if self._seed_arg is not None:
            path = self._seed_arg
            if not isinstance(path, str):
                path = os.path.join(self._tmp, "seed.json")
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(self._seed_arg, f)
            args += ["--seed", path]
        if self.tier:
            args += ["--tier", self.tier]
        if self.gitlab_version:
            args += ["--gitlab-version", self.gitlab_version]
        if self.rate_limit is not None:
            args += ["--rate-limit", str(self.rate_limit)]
        if self.quiet:
            args.append("--quiet")
        args += self.extra_args
        self.log_path = os.path.join(self._tmp, "double.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent if _in_main_thread() else None)
        deadline = time.time() + self.timeout
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
            raise DoubleError(f"double did not start (got {line!r}); log:\n{self.log()}")
        self.url = line[len("listening on "):]
        self.api = self.url + "/api/v4"
        hostport = self.url.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        return self

    def stop(self):
        if self.proc:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    # ---- raw HTTP ----
    def http(self, method, path, body=None, headers=None, gzip=False):
        """One raw request to any path of the double (no redirects followed)."""
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = body
            if gzip:
                data = _gzip.compress(data)
                hdrs["Content-Encoding"] = "gzip"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    def request(self, method, path, body=None, token=..., headers=None, query=None, token_header="PRIVATE-TOKEN",
                gzip=False):
        """An API request: path relative to /api/v4 (e.g. '/projects/1/issues')."""
        hdrs = dict(headers or {})
        if token is ...:
            token = self.token
        if token is not None:
            hdrs[token_header] = token
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query, doseq=True)
        return self.http(method, "/api/v4" + path, body, hdrs, gzip=gzip)

    def _control(self, method, path, body=None):
        r = self.http(method, "/__double/" + path, body)
        if r.status >= 400:
            raise DoubleError(f"{method} /__double/{path}: {r.status} {r.text}")
        return r.json()

    # ---- control API ----
    def seed(self, data):
        return self._control("POST", "seed", data)

    def reset(self, default=True):
        return self._control("POST", "reset", {"default": default})

    def faults(self, rules):
        return self._control("POST", "faults", rules)

    def clear_faults(self):
        self._control("DELETE", "faults")

    def requests(self):
        return self._control("GET", "requests")

    def clear_requests(self):
        self._control("DELETE", "requests")

    def state(self):
        return self._control("GET", "state")

    def mentions(self):
        return self._control("GET", "mentions")

    def add_pipeline(self, spec):
        return self._control("POST", "pipelines", spec)

    def set_job(self, job_id, **fields):
        return self._control("POST", f"jobs/{job_id}", fields)

    def set_pipeline(self, pipeline_id, **fields):
        return self._control("POST", f"pipelines/{pipeline_id}", fields)

    def protect_branch(self, project_id, name):
        return self._control("POST", "protected_branches", {"project_id": project_id, "name": name})

    def unprotect_branch(self, project_id, name):
        return self._control("DELETE", "protected_branches", {"project_id": project_id, "name": name})

    def clear_rate_limits(self):
        self._control("DELETE", "ratelimit")

    def set_limits(self, **limits):
        """Change the rate limits at run time: limit, window, issues_per_minute,
        notes_per_minute (GitLab's application limits on issue and note creation)."""
        return self._control("POST", "ratelimit", limits)

    def git_url(self, project_path, token=None, username="oauth2"):
        return f"http://{username}:{token or self.token}@{self.host}:{self.port}/{project_path}.git"


if __name__ == "__main__":
    # Manual use / demo: start a double, print where it is, run until Ctrl-C.
    import argparse
    ap = argparse.ArgumentParser(description="start the GitLab double and wait")
    ap.add_argument("--seed", help="seed JSON file (replaces the default project)")
    ap.add_argument("--tier", choices=("free", "premium"))
    ap.add_argument("--rate-limit", type=int)
    args = ap.parse_args()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Double(seed=args.seed, tier=args.tier, rate_limit=args.rate_limit, quiet=False) as d:
        print(f"url   {d.url}\napi   {d.api}\ntoken {d.token}\nlog   {d.log_path}", flush=True)
        try:
            while d.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
