#!/usr/bin/python3
"""factory-triage on 10,000 open issues in the GitLab double (issue: triage).

The issues are the data set of tests/data/triage/ repeated with varied
titles, upvotes and dates (large bodies kept at their real size only once).
Measures, for a first run (every issue triaged: one PUT and one note each)
and a second run over the unchanged project (target: one list pass, no
write), the wall time and the requests the double saw, and checks the
target: each run under one minute on this machine. Writes
bench/results/triage.json and prints a summary.

    bench/triage_10k.py [--issues N] [--bin-dir DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from integration.triage_data import load  # noqa: E402
from lib.double import Double  # noqa: E402
from lib.factory import job_env  # noqa: E402

TARGET_S = 60.0


def make_issues(n):
    base = [i for i in load() if len(i["description"] or "") < 20000]
    out = []
    for k in range(n):
        t = base[k % len(base)]
        out.append({"project_id": 1, "iid": k + 1,
                    "title": "%s (%d)" % (t["title"], k) if t["title"] else "",
                    "description": t["description"], "labels": list(t["labels"]),
                    "upvotes": (k * 7919) % 23, "confidential": t["confidential"],
                    "created_at": "2025-%02d-%02dT%02d:%02d:00Z" % (1 + k % 12, 1 + k % 28, k % 24, k % 60)})
    return out


def run(binary, double, report_dir):
    double.clear_requests()
    env = job_env(double)
    env["FACTORY_REPORT_DIR"] = report_dir
    env["FACTORY_LOG_LEVEL"] = "warn"
    t0 = time.perf_counter()
    p = subprocess.run([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit("factory-triage failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    reqs = double.requests()
    with open(os.path.join(report_dir, "report.json")) as f:
        rep = json.load(f)
    by_kind = {}
    for r in reqs:
        key = r["method"] + " " + ("notes" if r["path"].endswith("/notes") else
                                   "reorder" if r["path"].endswith("/reorder") else
                                   "issue" if r["path"].rsplit("/", 1)[-1].isdigit() else
                                   r["path"].rsplit("/", 1)[-1])
        by_kind[key] = by_kind.get(key, 0) + 1
    return {"wall_s": round(wall, 2), "requests": len(reqs),
            "writes": sum(1 for r in reqs if r["method"] in ("POST", "PUT", "DELETE", "PATCH")),
            "requests_by_kind": by_kind, "report_api_requests": rep["counters"].get("api_requests"),
            "triaged": rep["counters"].get("triaged", 0), "retries": rep["counters"].get("api_retries", 0),
            "under_target": wall < TARGET_S}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--issues", type=int, default=10000)
    ap.add_argument("--bin-dir", default=os.environ.get("FACTORY_BIN_DIR") or os.path.join(ROOT, "bin"))
    a = ap.parse_args()
    binary = os.path.join(a.bin_dir, "factory-triage")
    setup = os.path.join(a.bin_dir, "factory-setup")
    issues = make_issues(a.issues)
    result = {"issues": a.issues, "machine": os.uname().machine, "nproc": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "target_s": TARGET_S}
    with Double(rate_limit=10_000_000) as d, tempfile.TemporaryDirectory() as rep:
        t0 = time.perf_counter()
        for k in range(0, len(issues), 2000):
            d.seed({"issues": issues[k:k + 2000]})
        result["seed_s"] = round(time.perf_counter() - t0, 2)
        env = job_env(d)
        env["FACTORY_REPORT_DIR"] = rep
        subprocess.run([setup], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result["first_run"] = run(binary, d, rep)
        result["second_run"] = run(binary, d, rep)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "triage.json")
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    for k in ("first_run", "second_run"):
        r = result[k]
        print("%-10s %6.2f s  %6d requests (%d writes, %d triaged)%s" % (
            k, r["wall_s"], r["requests"], r["writes"], r["triaged"], "" if r["under_target"] else "  OVER TARGET"))
    print("written", os.path.relpath(out, ROOT))
    return 0 if all(result[k]["under_target"] for k in ("first_run", "second_run")) else 1


if __name__ == "__main__":
    sys.exit(main())
