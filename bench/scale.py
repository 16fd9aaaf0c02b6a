#!/usr/bin/python3
"""Scaling figures (issue 11): API calls per issue handled, pacing under a
rate limit, and the cost of a group scope, measured on the GitLab double.

1. triage_calls: factory-triage on N open issues (the data set of
   tests/data/triage repeated, as bench/triage_10k.py builds it): a first run
   (every issue triaged) and a second run over the unchanged project. The
   double's request log gives requests by kind; calls per triaged issue and
   per open issue follow.
2. paced_vs_unpaced: factory-triage on M issues in a double that allows
   LIMIT requests per WINDOW seconds per token: once unpaced
   (http.pace_below_pct=0), once with the default pacing. 429s seen, wall
   time, and how much of the allowance the run used: requests answered /
   (windows it touched * LIMIT), from the double's request log.
3. shared_token: three factory-triage jobs on three projects at once, one
   token, one limit, pacing with a reserve of 2: 429s (must be 0).
4. setup: factory-setup on a new project and again; with scope group:PATH
   on a group of G projects in subgroups (premium), new and again; the
   second group run's requests split into a fixed part and a part per
   project.
5. implement: copied from bench/results/implement.json when it exists
   (bench/implement_overhead.py measures it; not re-run here).

Writes bench/results/scale.json and prints a summary. docs/scaling.md turns
these figures into projects and issues per hour under GitLab.com's limits.

    bench/scale.py [--issues N] [--paced-issues M] [--limit LIMIT] [--window S]
                   [--group-projects G] [--bin-dir DIR]
"""
import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.double import Double  # noqa: E402
from lib.factory import job_env  # noqa: E402

WRITES = ("POST", "PUT", "DELETE", "PATCH")


def triage_issues(n, project_id=1):
    """bench/triage_10k.py's issues, for project `project_id`."""
    spec = importlib.util.spec_from_file_location("triage_10k", os.path.join(ROOT, "bench", "triage_10k.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.make_issues(n)
    for i in out:
        i["project_id"] = project_id
    return out


def kind(r):
    p = r["path"]
    last = p.rsplit("/", 1)[-1]
    if last == "notes":
        k = "notes"
    elif last == "reorder":
        k = "reorder"
    elif last.isdigit():
        k = "issue" if "/issues/" in p else last
    elif "/repository/files/" in p:
        k = "file"
    else:
        k = last
    return r["method"] + " " + k


def by_kind(reqs):
    out = {}
    for r in reqs:
        out[kind(r)] = out.get(kind(r), 0) + 1
    return dict(sorted(out.items()))


def windows(reqs, window):
    """The double's rate-limit windows the requests fell in: how many, and the
    most requests sent in one of them (the double counts 429s too)."""
    counts = {}
    for r in reqs:
        t = datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        w = int(t // window)
        counts[w] = counts.get(w, 0) + 1
    return len(counts), max(counts.values()) if counts else 0


def run(binary, double, project, extra=None, cwd=None):
    env = job_env(double, project=project, extra=extra)
    env["FACTORY_LOG_LEVEL"] = "warn"
    with tempfile.TemporaryDirectory() as rep:
        env["FACTORY_REPORT_DIR"] = rep
        t0 = time.perf_counter()
        p = subprocess.run([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)
        wall = time.perf_counter() - t0
        report = None
        if os.path.exists(os.path.join(rep, "report.json")):
            with open(os.path.join(rep, "report.json")) as f:
                report = json.load(f)
    return p.returncode, wall, report, p.stderr


def triage_calls(bins, n):
    out = {"issues": n}
    with Double(rate_limit=10_000_000) as d:
        issues = triage_issues(n)
        for k in range(0, len(issues), 2000):
            d.seed({"issues": issues[k:k + 2000]})
        rc, _, _, err = run(bins["setup"], d, "factory/demo")
        if rc:
            raise SystemExit("factory-setup failed: " + err[-2000:])
        for name in ("first_run", "second_run"):
            d.clear_requests()
            rc, wall, rep, err = run(bins["triage"], d, "factory/demo")
            if rc:
                raise SystemExit("factory-triage failed (%d): %s" % (rc, err[-2000:]))
            reqs = d.requests()
            c = rep["counters"]
            triaged = c.get("triaged", 0)
            seen = c.get("issues_seen", n)
            res = {"wall_s": round(wall, 2), "requests": len(reqs),
                   "writes": sum(1 for r in reqs if r["method"] in WRITES),
                   "notes_created": sum(1 for r in reqs if kind(r) == "POST notes"),
                   "requests_by_kind": by_kind(reqs), "triaged": triaged, "issues_seen": seen,
                   "report_api_requests": c.get("api_requests"), "api_throttled": c.get("api_throttled")}
            res["calls_per_triaged_issue"] = round(len(reqs) / triaged, 3) if triaged else None
            res["calls_per_open_issue"] = round(len(reqs) / seen, 4) if seen else None
            res["notes_per_triaged_issue"] = round(res["notes_created"] / triaged, 3) if triaged else None
            out[name] = res
    return out


def paced_vs_unpaced(bins, m, limit, window):
    out = {"issues": m, "limit": limit, "window_s": window}
    for name, extra in (("unpaced", {"FACTORY_HTTP_PACE_BELOW_PCT": "0"}), ("paced", {})):
        with Double(rate_limit=limit, extra_args=["--rate-window", str(window)]) as d:
            d.seed({"issues": triage_issues(m)})
            env = {"FACTORY_HTTP_RETRY_BUDGET_MS": "600000", "FACTORY_HTTP_MAX_RETRIES": "50"}
            rc, _, _, err = run(bins["setup"], d, "factory/demo", env)
            if rc:
                raise SystemExit("factory-setup failed: " + err[-2000:])
            time.sleep(window + 0.1)             # a fresh window for the measured run
            d.clear_requests()
            env.update(extra)
            rc, wall, rep, err = run(bins["triage"], d, "factory/demo", env)
            reqs = d.requests()
            refused = sum(1 for r in reqs if r["status"] == 429)
            c = (rep or {}).get("counters", {})
            nwin, most = windows(reqs, window)
            out[name] = {"exit_code": rc, "wall_s": round(wall, 2), "requests": len(reqs), "status_429": refused,
                         "api_throttled": c.get("api_throttled"), "api_paced_ms": c.get("api_paced_ms"),
                         "api_retries": c.get("api_retries"), "triaged": c.get("triaged"),
                         "windows": nwin, "most_in_a_window": most,
                         "allowance_used": round((len(reqs) - refused) / (nwin * limit), 3)}
    return out


def shared_token(bins, m, limit, window, jobs=3):
    out = {"jobs": jobs, "issues_per_project": m, "limit": limit, "window_s": window, "pace_below_pct": 50,
           "pace_reserve": jobs - 1}
    with Double(rate_limit=limit, extra_args=["--rate-window", str(window)]) as d:
        paths = ["team/p%d" % k for k in range(jobs)]
        ids = d.seed({"projects": [{"path_with_namespace": p} for p in paths]})["projects"]
        for pid in ids:
            d.seed({"issues": triage_issues(m, pid)})
        env = {"FACTORY_HTTP_RETRY_BUDGET_MS": "600000", "FACTORY_HTTP_MAX_RETRIES": "50",
               "FACTORY_HTTP_PACE_BELOW_PCT": "50", "FACTORY_HTTP_PACE_RESERVE": str(jobs - 1)}
        for p in paths:
            rc, _, _, err = run(bins["setup"], d, p, env)
            if rc:
                raise SystemExit("factory-setup failed: " + err[-2000:])
        time.sleep(window + 0.1)
        d.clear_requests()
        results = {}

        def one(p):
            results[p] = run(bins["triage"], d, p, env)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        reqs = d.requests()
        refused = sum(1 for r in reqs if r["status"] == 429)
        nwin, most = windows(reqs, window)
        out.update({"wall_s": round(wall, 2), "requests": len(reqs), "status_429": refused,
                    "exit_codes": [results[p][0] for p in paths],
                    "triaged": [((results[p][2] or {}).get("counters") or {}).get("triaged") for p in paths],
                    "windows": nwin, "most_in_a_window": most,
                    "allowance_used": round((len(reqs) - refused) / (nwin * limit), 3)})
    return out


def setup_costs(bins, groups_projects):
    out = {}
    with Double() as d:
        for name in ("new_project", "already_set_up"):
            d.clear_requests()
            rc, _, _, err = run(bins["setup"], d, "factory/demo")
            if rc:
                raise SystemExit("factory-setup failed: " + err[-2000:])
            reqs = d.requests()
            out["project_" + name] = {"requests": len(reqs), "writes": sum(1 for r in reqs if r["method"] in WRITES)}
    projects = []
    for k in range(groups_projects):
        sub = ["acme", "acme/platform", "acme/platform/data"][k % 3]
        pd = {"path_with_namespace": "%s/svc-%03d" % (sub, k)}
        if k % 4 == 0:
            pd["files"] = {".factory.yml": "triage:\n  wip_limit: 3\n"}
        if k % 10 == 9:
            pd["topics"] = ["factory-opt-out"]
        projects.append(pd)
    with Double(tier="premium", seed={"projects": projects}) as d:
        for name in ("new_group", "group_already_set_up"):
            d.clear_requests()
            rc, wall, rep, err = run(bins["setup"], d, None, {"FACTORY_SCOPE": "group:acme"})
            if rc:
                raise SystemExit("factory-setup (group) failed: " + err[-2000:])
            reqs = d.requests()
            out[name] = {"projects": rep["counters"]["projects"],
                         "projects_taking_part": rep["counters"]["projects_taking_part"],
                         "requests": len(reqs), "writes": sum(1 for r in reqs if r["method"] in WRITES),
                         "requests_by_kind": by_kind(reqs), "wall_s": round(wall, 2)}
        again = out["group_already_set_up"]
        files = again["requests_by_kind"].get("GET file", 0)
        listing = again["requests_by_kind"].get("GET projects", 0)
        out["group_read_cost"] = {"fixed": again["requests"] - files - listing, "project_list_pages": listing,
                                  "file_reads": files,
                                  "per_project": round((files + listing) / again["projects"], 3)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--issues", type=int, default=10000)
    ap.add_argument("--paced-issues", type=int, default=300)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--group-projects", type=int, default=30)
    ap.add_argument("--bin-dir", default=os.environ.get("FACTORY_BIN_DIR") or os.path.join(ROOT, "bin"))
    a = ap.parse_args()
    bins = {k: os.path.join(a.bin_dir, "factory-" + k) for k in ("setup", "triage")}
    result = {"machine": os.uname().machine, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "command": "bench/scale.py " + " ".join(sys.argv[1:])}
    t0 = time.perf_counter()
    result["triage_calls"] = triage_calls(bins, a.issues)
    result["paced_vs_unpaced"] = paced_vs_unpaced(bins, a.paced_issues, a.limit, a.window)
    result["shared_token"] = shared_token(bins, a.paced_issues // 3, a.limit, a.window)
    result["setup"] = setup_costs(bins, a.group_projects)
    impl = os.path.join(ROOT, "bench", "results", "implement.json")
    if os.path.exists(impl):
        with open(impl) as f:
            j = json.load(f)
        result["implement_from_implement_json"] = {
            "api_requests_median": j.get("median", {}).get("api_requests"),
            "api_requests_every_run": [r.get("api_requests") for r in j.get("every_run", [])],
            "command": j.get("command")}
    result["bench_s"] = round(time.perf_counter() - t0, 1)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "scale.json")
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)

    tc = result["triage_calls"]
    print("triage, %d issues: first run %d requests, %.3f per triaged issue (%d triaged, %d notes); "
          "second run %d requests, %.4f per open issue" % (
              tc["issues"], tc["first_run"]["requests"], tc["first_run"]["calls_per_triaged_issue"] or 0,
              tc["first_run"]["triaged"], tc["first_run"]["notes_created"], tc["second_run"]["requests"],
              tc["second_run"]["calls_per_open_issue"] or 0))
    pv = result["paced_vs_unpaced"]
    for k in ("unpaced", "paced"):
        print("%-8s %d issues, %d req/%ds: %d requests, %d x 429, %.1f s, %.0f%% of the allowance" % (
            k, pv["issues"], pv["limit"], pv["window_s"], pv[k]["requests"], pv[k]["status_429"], pv[k]["wall_s"],
            100 * pv[k]["allowance_used"]))
    st = result["shared_token"]
    print("shared token, %d jobs: %d requests, %d x 429, %.1f s, %.0f%% of the allowance" % (
        st["jobs"], st["requests"], st["status_429"], st["wall_s"], 100 * st["allowance_used"]))
    su = result["setup"]
    print("setup: project %d then %d requests; group of %d projects %d then %d requests (%.2f per project)" % (
        su["project_new_project"]["requests"], su["project_already_set_up"]["requests"],
        su["new_group"]["projects"], su["new_group"]["requests"], su["group_already_set_up"]["requests"],
        su["group_read_cost"]["per_project"]))
    print("written", os.path.relpath(out, ROOT))
    ok = pv["paced"]["status_429"] == 0 and st["status_429"] == 0 and pv["paced"]["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
