"""Running the Factory's real binaries in integration tests.

    from lib.factory import run_job, job_env
    r = run_job("setup", double, "--print-board")
    r.returncode, r.stdout, r.stderr, r.report  (report.json parsed, or None)

The binaries come from $FACTORY_BIN_DIR (default: the repository's bin/).
Under sanitizers ($FACTORY_SANITIZED=1) any ASan/UBSan/LSan report in the
output fails the calling test through check_sanitizers().
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("FACTORY_BIN_DIR") or os.path.join(ROOT, "bin")

SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer")


class JobResult:
    def __init__(self, proc, report_dir):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.report_dir = report_dir
        self.report = None
        self.report_md = None
        path = os.path.join(report_dir, "report.json")
        if os.path.exists(path):
            with open(path) as f:
                self.report = json.load(f)
        md = os.path.join(report_dir, "report.md")
        if os.path.exists(md):
            with open(md) as f:
                self.report_md = f.read()

    @property
    def output(self):
        return self.stdout + self.stderr

    def __repr__(self):
        return "JobResult(rc=%d)\n--- stdout\n%s\n--- stderr\n%s" % (self.returncode, self.stdout[-4000:],
                                                                      self.stderr[-4000:])


def binary(name):
    return os.path.join(BIN_DIR, "factory-" + name)


def job_env(double=None, project="factory/demo", extra=None, clear_ci=True):
    """A clean environment for a job: only PATH/HOME/locale from ours, no CI_*
    or FACTORY_* leaking in, fast retry settings, and the double's URL/token."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("CI_") or k.startswith("FACTORY_") or k.startswith("GITLAB_"))}
    env["NO_COLOR"] = "1"
    env["FACTORY_HTTP_BACKOFF_MS"] = "20"
    env["FACTORY_HTTP_RETRY_BUDGET_MS"] = "5000"
    env["FACTORY_HTTP_TIMEOUT_MS"] = "20000"
    if double is not None:
        env["FACTORY_GITLAB_URL"] = double.url
        env["FACTORY_GITLAB_TOKEN"] = double.token
        if project:
            env["FACTORY_PROJECT"] = project
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def run_job(name, double=None, *args, env=None, stdin=None, timeout=300, cwd=None, report_dir=None):
    """Run bin/factory-<name> with `args`; returns a JobResult."""
    own_dir = report_dir is None
    if own_dir:
        report_dir = tempfile.mkdtemp(prefix="factory-report-")
    e = job_env(double) if env is None else env
    e = dict(e)
    e.setdefault("FACTORY_REPORT_DIR", report_dir)
    try:
        proc = subprocess.run([binary(name)] + list(args), env=e, input=stdin, capture_output=True, text=True,
                              errors="replace", timeout=timeout, cwd=cwd or tempfile.gettempdir())
        result = JobResult(proc, e["FACTORY_REPORT_DIR"])
    finally:
        if own_dir:
            shutil.rmtree(report_dir, ignore_errors=True)
    check_sanitizers(result.output)
    return result


def check_sanitizers(text):
    m = SANITIZER_RE.search(text or "")
    if m:
        raise AssertionError("sanitizer report:\n" + text[max(0, m.start() - 200):m.start() + 4000])


def gl(double, method, path, body=None):
    """One API call to the double as the test's own client: JSON back, or an
    AssertionError naming the call when GitLab answers an error."""
    r = double.request(method, path, body)
    if r.status >= 400:
        raise AssertionError("%s %s: %d %s" % (method, path, r.status, r.text[:500]))
    return r.json()
