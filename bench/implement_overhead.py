#!/usr/bin/python3
"""The Factory's own overhead for one issue end to end, model time excluded.

A project of 10,000 files in the GitLab double (git over smart HTTP through
`git http-backend`, the REST API), RUNS issues in Up Next, and the LLM double
playing a two-turn agent (edit one file, finish). Each run of
`factory-implement` (phase 1 finds nothing to heal, phase 2 takes the next
issue) clones the project over HTTP, branches, runs the agent, commits,
pushes and opens the merge request. For each run:

  wall_ms       the process, start to exit (time.monotonic around it)
  model_ms      time inside the model's HTTP requests (the agent's model_us)
  overhead_ms   wall_ms - model_ms: everything the Factory adds
  overhead_without_clone_ms  the same less the clone, which the server's
                packing dominates (see git_cli_clone_ms)
  steps         the job's own timings (report.json data.timings_ms): setup
                (GET user, project), heal, clone, context, sandbox (making it,
                handing the tree to the command user), agent (its loop,
                model included), commit, push, mr (create + note + labels)
  api_requests  REST calls the job counted, and the double's own count of
                /api/v4 requests during the run (they must agree)
  peak_rss_kb   of the job (/usr/bin/time -v)
  git_cli_clone_ms  a `git clone` of the same project by the git command line
                right after the run: the same server work, for scale (the
                double's Python server and git http-backend pack the 10,000
                objects on every clone; the machine is shared, so times vary)

After each run the issue is closed, so every run sees the same board
(nothing In Progress or in Validation, the next issue first in Up Next).

Writes bench/results/implement.json (medians and every run).

    bench/implement_overhead.py [BIN_DIR] [--runs 5] [--files 10000]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from lib.double import Double  # noqa: E402
from lib.factory import gl  # noqa: E402
from lib.implement import edit_script, implement_env, issue, project_seed  # noqa: E402
from lib.llm import LLMDouble  # noqa: E402


def args():
    bin_dir, runs, nfiles = os.path.join(ROOT, "bin"), 5, 10000
    a = sys.argv[1:]
    i = 0
    while i < len(a):
        if a[i] == "--runs":
            runs = int(a[i + 1])
            i += 2
        elif a[i] == "--files":
            nfiles = int(a[i + 1])
            i += 2
        else:
            bin_dir = a[i]
            i += 1
    return bin_dir, runs, nfiles


def peak_rss(stderr):
    for line in stderr.splitlines():
        if "Maximum resident set size" in line:
            return int(line.split(":")[1])
    return None


def main():
    bin_dir, runs, nfiles = args()
    binary = os.path.join(bin_dir, "factory-implement")
    if not os.access(binary, os.X_OK):
        print("no %s: build first (make)" % binary)
        return 2
    files = {"src/mod%03d/file%05d.c" % (i // 100, i): "int f%d(void) { return %d; }\n" % (i, i)
             for i in range(nfiles - 1)}
    files["README.md"] = "# demo\n\nA project of %d files.\n" % nfiles
    issues = [issue("Task %d" % k, "Change the README title.", iid=k, position=k * 10) for k in range(1, runs + 1)]
    t = time.monotonic()
    d = Double(seed=project_seed(files=files, issues=issues), timeout=600)
    seed_s = time.monotonic() - t
    print("double seeded with %d files in %.1f s" % (nfiles, seed_s), flush=True)
    out = []
    try:
        for k in range(1, runs + 1):
            with LLMDouble(edit_script("README.md", "# demo", "# Demo %d" % k, summary="Retitled")) as llm:
                work = tempfile.mkdtemp(prefix="bench-impl-")
                os.chmod(work, 0o755)
                env = implement_env(d, llm, workdir=work)
                env["FACTORY_REPORT_DIR"] = os.path.join(work, "report")
                d.clear_requests()
                t0 = time.monotonic()
                p = subprocess.run(["/usr/bin/time", "-v", binary], env=env, capture_output=True, text=True,
                                   cwd=work)
                wall_ms = (time.monotonic() - t0) * 1000
                api_seen = len(d.requests())
                try:
                    with open(os.path.join(work, "report", "report.json")) as f:
                        rep = json.load(f)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            if p.returncode != 0 or rep["data"].get("delivery") != "merge_request":
                print(p.stderr[-3000:])
                raise SystemExit("run %d failed (exit %d)" % (k, p.returncode))
            gl(d, "PUT", "/projects/1/issues/%d" % k, {"state_event": "close"})
            cli_dir = tempfile.mkdtemp(prefix="bench-cli-")
            t1 = time.monotonic()
            subprocess.run(["git", "clone", "-q", d.git_url("factory/demo"), cli_dir + "/c"], check=True)
            cli_ms = (time.monotonic() - t1) * 1000
            shutil.rmtree(cli_dir, ignore_errors=True)
            agent = rep["data"]["agent"]
            model_ms = agent["model_us"] / 1000.0
            steps = rep["data"]["timings_ms"]
            run = {
                "issue": rep["data"]["issue"],
                "wall_ms": round(wall_ms, 1),
                "model_ms": round(model_ms, 1),
                "overhead_ms": round(wall_ms - model_ms, 1),
                "overhead_without_clone_ms": round(wall_ms - model_ms - steps.get("clone", 0), 1),
                "steps_ms": steps,
                "agent_tool_ms": round(agent["tool_us"] / 1000.0, 1),
                "api_requests": rep["counters"]["api_requests"],
                "api_requests_seen_by_double": api_seen,
                "git": {k2[4:]: v for k2, v in rep["counters"].items() if k2.startswith("git_")},
                "peak_rss_kb": peak_rss(p.stderr),
                "git_cli_clone_ms": round(cli_ms, 1),
            }
            out.append(run)
            print("run %d: wall %.0f ms, model %.0f ms, overhead %.0f ms (clone %s, sandbox %s, commit %s, push %s, "
                  "mr %s), %d API calls; git CLI clone %.0f ms" % (k, wall_ms, model_ms, wall_ms - model_ms,
                                                               steps.get("clone"), steps.get("sandbox"),
                                                               steps.get("commit"), steps.get("push"), steps.get("mr"),
                                                               run["api_requests"], cli_ms), flush=True)
    finally:
        d.stop()

    def med(key, sub=None):
        vals = [(r[key][sub] if sub else r[key]) for r in out if (r[key].get(sub) if sub else r[key]) is not None]
        return statistics.median(vals) if vals else None

    result = {
        "benchmark": "factory-implement overhead per issue, model time excluded",
        "files": nfiles,
        "runs": runs,
        "seed_s": round(seed_s, 1),
        "median": {
            "wall_ms": med("wall_ms"),
            "model_ms": med("model_ms"),
            "overhead_ms": med("overhead_ms"),
            "overhead_without_clone_ms": med("overhead_without_clone_ms"),
            "api_requests": med("api_requests"),
            "peak_rss_kb": med("peak_rss_kb"),
            "git_cli_clone_ms": med("git_cli_clone_ms"),
            "steps_ms": {s: med("steps_ms", s) for s in ("setup", "heal", "clone", "context", "sandbox", "agent",
                                                          "commit", "push", "mr", "total")},
        },
        "every_run": out,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
                    "note": "shared with other engineers' builds and tests"},
        "command": "bench/implement_overhead.py %s --runs %d --files %d" % (bin_dir, runs, nfiles),
    }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "implement.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    m = result["median"]
    print("median over %d runs: overhead %.0f ms of %.0f ms wall (model %.0f ms), %.0f ms without the clone; clone %s "
          "ms (git CLI %s ms), push %s ms; %s API calls; peak RSS %s kB"
          % (runs, m["overhead_ms"], m["wall_ms"], m["model_ms"], m["overhead_without_clone_ms"],
             m["steps_ms"]["clone"], m["git_cli_clone_ms"], m["steps_ms"]["push"], m["api_requests"],
             m["peak_rss_kb"]))
    for r in out:
        if r["api_requests"] != r["api_requests_seen_by_double"]:
            print("warning: the job counted %d API requests, the double saw %d" % (r["api_requests"],
                                                                                   r["api_requests_seen_by_double"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
