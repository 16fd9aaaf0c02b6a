"""Running `factory-implement agent` in integration tests and benchmarks.

    repo = make_repo({"a.txt": "hello\\n"})
    with LLMDouble(script) as llm:
        r = run_agent(llm, repo, "Change hello to goodbye")
        r.returncode, r.stdout, r.transcript (list of records), r.agent (report data)

The repository is a fresh git checkout in a directory the sandbox user can
enter (tests run as root, commands as uid 65534).
"""
import json
import os
import shutil
import subprocess
import tempfile

from lib.factory import JobResult, binary, check_sanitizers, job_env, run_job


def make_repo(files, commit=True, symlinks=None):
    """A git repository with `files` ({path: text}) committed; returns its path."""
    d = tempfile.mkdtemp(prefix="factory-agent-repo-")
    os.chmod(d, 0o755)
    for path, text in files.items():
        full = os.path.join(d, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    for link, target in (symlinks or {}).items():
        os.symlink(target, os.path.join(d, link))
    git = ["git", "-C", d, "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    if commit:
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
    return d


def remove(path):
    shutil.rmtree(path, ignore_errors=True)


class AgentRun:
    def __init__(self, job, report_dir):
        self.job = job
        self.returncode = job.returncode
        self.stdout = job.stdout
        self.stderr = job.stderr
        self.output = job.output
        self.report = job.report
        self.agent = (job.report or {}).get("data", {}).get("agent", {})
        self.transcript_path = os.path.join(report_dir, "agent-transcript.jsonl")
        self.transcript = []
        self.transcript_text = ""
        self.transcript_mode = None
        if os.path.exists(self.transcript_path):
            self.transcript_mode = os.stat(self.transcript_path).st_mode & 0o7777
            with open(self.transcript_path) as f:
                self.transcript_text = f.read()
            self.transcript = [json.loads(line) for line in self.transcript_text.splitlines() if line.strip()]

    def records(self, kind):
        return [r for r in self.transcript if r.get("type") == kind]

    def tool_results(self):
        return self.records("tool")

    def __repr__(self):
        return repr(self.job)


def run_agent(llm, repo, task, provider="anthropic", extra_env=None, args=(), timeout=300, task_file=None,
              as_uid=None):
    """Run the agent subcommand against the LLM double `llm` (may be None).
    `as_uid`: run the job itself as that uid (through setpriv), with the
    repository and the run's directory handed to it."""
    work = tempfile.mkdtemp(prefix="factory-agent-run-")
    if as_uid is not None:
        os.chown(work, as_uid, as_uid)
    report_dir = os.path.join(work, "report")
    if task_file is None:
        task_file = os.path.join(work, "task.md")
        with open(task_file, "w") as f:
            f.write(task)
    env = job_env(None)
    if llm is not None:
        env.update(llm.env(provider))
    env["FACTORY_REPORT_DIR"] = report_dir
    for k, v in (extra_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    try:
        if as_uid is None:
            job = run_job("implement", None, "agent", "--repo", repo, "--task", task_file, *args, env=env,
                          timeout=timeout, report_dir=report_dir, cwd=work)
        else:
            os.chown(task_file, as_uid, as_uid)
            cmd = ["setpriv", "--reuid=%d" % as_uid, "--regid=%d" % as_uid, "--clear-groups",
                   binary("implement"), "agent", "--repo", repo, "--task", task_file] + list(args)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout,
                                  cwd=work)
            job = JobResult(proc, report_dir)
            check_sanitizers(job.output)
        return AgentRun(job, report_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
