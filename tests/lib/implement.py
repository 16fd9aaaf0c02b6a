"""Running factory-implement's main mode in integration tests and benchmarks.

    with Double(seed=project_seed(files={"README.md": "# demo\\n"},
                                  issues=[issue("Fix the title", labels=UP_NEXT)])) as d:
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(d, llm)
        r.returncode, r.report, r.data (report data), r.stdout, r.stderr

Helpers read the double's state the way a test should: through its API
(`gl`), and through a git clone made with the git command line (`GitView`).
"""
import json
import os
import shutil
import subprocess
import tempfile

from lib.factory import gl, job_env, run_job

UP_NEXT = "workflow::up next"
IN_PROGRESS = "workflow::in progress"
VALIDATION = "workflow::validation"
NEEDS_INFO = "workflow::needs info"
NO_CHANGE = "factory::no change"
PROJECT = "factory/demo"


def issue(title, description="", labels=(UP_NEXT,), iid=None, position=None, notes=None, state="opened"):
    d = {"project_id": 1, "title": title, "description": description, "labels": list(labels), "state": state}
    if iid is not None:
        d["iid"] = iid
    if position is not None:
        d["relative_position"] = position
    if notes:
        d["notes"] = notes
    return d


def project_seed(files=None, issues=(), default_branch="main", extra=None):
    seed = {
        "projects": [{"id": 1, "path_with_namespace": PROJECT, "default_branch": default_branch,
                      "files": files or {"README.md": "# demo\n"}}],
        "labels": [{"project_id": 1, "name": n, "color": "#123456"}
                   for n in (UP_NEXT, IN_PROGRESS, VALIDATION, NEEDS_INFO, NO_CHANGE, "type::bug", "type::chore",
                             "type::feature")],
        "issues": list(issues),
    }
    for k, v in (extra or {}).items():
        seed[k] = v
    return seed


def implement_env(double, llm=None, provider="anthropic", extra=None, workdir=None):
    e = job_env(double)
    if llm is not None:
        e.update(llm.env(provider))
    e["FACTORY_IMPLEMENT_CLAIM_SETTLE_MS"] = "20"
    e["FACTORY_GIT_AUTHOR_NAME"] = "Factory Bot"
    e["FACTORY_GIT_AUTHOR_EMAIL"] = "factory-bot@example.invalid"
    if workdir:
        e["FACTORY_IMPLEMENT_WORKDIR"] = workdir
    for k, v in (extra or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


class ImplementRun:
    def __init__(self, job):
        self.job = job
        self.returncode = job.returncode
        self.stdout = job.stdout
        self.stderr = job.stderr
        self.output = job.output
        self.report = job.report or {}
        self.data = self.report.get("data", {})
        self.counters = self.report.get("counters", {})

    def healed(self, iid=None):
        return [h for h in self.data.get("healed", []) if iid is None or h["issue"] == iid]

    def __repr__(self):
        return repr(self.job)


def run_implement(double, llm=None, *args, provider="anthropic", extra=None, timeout=300, env=None):
    work = tempfile.mkdtemp(prefix="factory-impl-run-")
    os.chmod(work, 0o755)
    try:
        e = env or implement_env(double, llm, provider, extra, workdir=work)
        e.setdefault("FACTORY_IMPLEMENT_WORKDIR", work)
        job = run_job("implement", double, *args, env=e, timeout=timeout, cwd=work)
        return ImplementRun(job)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def notes_of(double, iid, project=1):
    return gl(double, "GET", "/projects/%d/issues/%d/notes?sort=asc&per_page=100" % (project, iid))


def labels_of(double, iid, project=1):
    return gl(double, "GET", "/projects/%d/issues/%d" % (project, iid))["labels"]


def issue_of(double, iid, project=1):
    return gl(double, "GET", "/projects/%d/issues/%d" % (project, iid))


def mrs_of(double, project=1, state="all"):
    return gl(double, "GET", "/projects/%d/merge_requests?state=%s&per_page=100" % (project, state))


def writes(double):
    return [r for r in double.requests() if r["method"] not in ("GET", "HEAD")]


def claim_marker(run, job=0, pipeline=0, branch="factory/1-x", started_at=0, lease_until=0, attempt=1):
    return "The Factory is taking this issue.\n\n<!-- factory:claim %s -->" % json.dumps(
        {"v": 1, "run": run, "pipeline": pipeline, "job": job, "job_url": "", "branch": branch,
         "started_at": started_at, "lease_until": lease_until, "attempt": attempt}, separators=(",", ":"))


def event_marker(ends, action, diagnosis="", attempt=1, mr=0, pipeline=0, sha="", branch="", why=""):
    return "Factory event.\n\n<!-- factory:event %s -->" % json.dumps(
        {"v": 1, "ends": ends, "action": action, "diagnosis": diagnosis, "attempt": attempt, "mr": mr,
         "pipeline": pipeline, "sha": sha, "branch": branch, "why": why}, separators=(",", ":"))


class GitView:
    """A clone of the double's repository with the git command line, for checks."""

    def __init__(self, double, project=PROJECT):
        self.dir = tempfile.mkdtemp(prefix="factory-gitview-")
        self.url = double.git_url(project)
        self.git("clone", "-q", self.url, self.dir, cwd="/")

    def git(self, *args, cwd=None, check=True):
        r = subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t"] + list(args),
                           cwd=cwd or self.dir, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError("git %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def fetch(self):
        self.git("fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")

    def branches(self):
        self.fetch()
        out = self.git("for-each-ref", "--format=%(refname:strip=3)", "refs/remotes/origin")
        return [b for b in out.split() if b != "HEAD"]

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def edit_script(path, old, new, summary="Made the change", tested=False, expect=None):
    from lib.llm import call, finish, turn
    return [turn(calls=[call("edit_file", path=path, old=old, new=new)], expect=expect),
            finish(summary, tested=tested, confidence="high")]
