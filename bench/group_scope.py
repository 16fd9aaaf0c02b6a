#!/usr/bin/python3
"""factory-triage over a group (issue #11): requests per run, and the listing
choice, measured in the GitLab double.

A group `acme` with a subgroup holds P projects (default 5) of N open issues
each (default 200, the triage data set repeated). factory-setup makes the
group labels and board, then factory-triage runs twice over the group
(FACTORY_SCOPE=group:acme): a first run (every issue triaged) and a second
run over the unchanged group (no write). For each run: the requests the
double saw, by kind, the wall time and calls per issue triaged.

The listing choice: triage lists each project's open issues
(GET /projects/:id/issues, per_page=100). The alternative, one listing for
the whole group (GET /groups/:id/issues), is measured by paging through it
with the same page size, for the even layout (P x N) and an uneven one
(N - 50 issues per project, where per-project pages are partly empty).
Then factory-release over a group of P projects with R closed issues each
(default 20; a first release each, then a rerun with nothing new), and
factory-watch over P projects each naming its own log source over HTTP
(one error filed per project, then a rerun over the same window): requests
and calls per issue handled, from the jobs' own reports.
Writes bench/results/group_scope.json and prints a summary.

    bench/group_scope.py [--projects P] [--issues N] [--closed R] [--bin-dir DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from integration.triage_data import load  # noqa: E402
from lib.double import Double  # noqa: E402
from lib.factory import job_env  # noqa: E402


def project_paths(n):
    return ["acme/p%d" % k if k % 2 == 0 else "acme/team/p%d" % k for k in range(n)]


def make_issues(pid, n, salt):
    base = [i for i in load() if len(i["description"] or "") < 20000]
    out = []
    for k in range(n):
        t = base[(k + salt) % len(base)]
        out.append({"project_id": pid, "title": "%s (%d)" % (t["title"], k) if t["title"] else "",
                    "description": t["description"], "labels": list(t["labels"]),
                    "upvotes": (k * 7919) % 23, "confidential": t["confidential"],
                    "created_at": "2025-%02d-%02dT%02d:%02d:00Z" % (1 + k % 12, 1 + k % 28, k % 24, k % 60)})
    return out


def world(projects, issues):
    d = Double(tier="premium")
    d.start()
    paths = project_paths(projects)
    d.seed({"groups": ["acme", "acme/team"],
            "projects": [{"path_with_namespace": p, "default_branch": "main", "files": {"README.md": p + "\n"}}
                         for p in paths]})
    ids = []
    for k, p in enumerate(paths):
        pid = d.request("GET", "/projects/" + p.replace("/", "%2F")).json()["id"]
        ids.append(pid)
        d.seed({"issues": make_issues(pid, issues, k)})
    return d, ids


def kind(r):
    p = r["path"]
    if p.endswith("/notes"):
        return r["method"] + " notes"
    if p.endswith("/reorder"):
        return r["method"] + " reorder"
    if "/repository/files/" in p:
        return r["method"] + " file " + p.split("/repository/files/")[1].split("/")[0].replace("%2F", "/")
    if "/releases" in p:
        return r["method"] + " release"
    if p.startswith("/api/v4/groups/"):
        return r["method"] + " group " + p.split("/")[-1]
    if p.endswith("/issues"):
        return r["method"] + " issues (list)"
    if "/issues/" in p:
        return r["method"] + " issue"
    return r["method"] + " " + p.split("/")[-1]


def run_job(binary, double, report_dir, group="acme", args=()):
    double.clear_requests()
    env = job_env(double, project=None, extra={"FACTORY_SCOPE": "group:" + group, "FACTORY_REPORT_DIR": report_dir,
                                               "FACTORY_LOG_LEVEL": "warn"})
    t0 = time.perf_counter()
    p = subprocess.run([binary] + list(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (binary, p.returncode, p.stderr[-2000:]))
    reqs = double.requests()
    with open(os.path.join(report_dir, "report.json")) as f:
        rep = json.load(f)
    by_kind = {}
    for r in reqs:
        by_kind[kind(r)] = by_kind.get(kind(r), 0) + 1
    c = rep["counters"]
    return {"wall_s": round(wall, 3), "requests": len(reqs), "by_kind": dict(sorted(by_kind.items())),
            "writes": sum(1 for r in reqs if r["method"] != "GET"), "triaged": c.get("triaged", 0),
            "issues_handled": c.get("issues_handled", 0),
            "calls_per_issue": rep["data"].get("api_budget", {}).get("calls_per_issue"),
            "per_project_requests": {p["path"]: p.get("counters", {}).get("api_requests", 0)
                                     for p in rep["data"]["projects"]}}


def release_world(projects, closed):
    d = Double(tier="premium")
    d.start()
    paths = project_paths(projects)
    d.seed({"groups": ["acme", "acme/team"],
            "projects": [{"path_with_namespace": p, "default_branch": "main", "files": {"README.md": p + "\n"}}
                         for p in paths]})
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    kinds = ["type::feature", "type::bug", "type::chore"]
    for p in paths:
        pid = d.request("GET", "/projects/" + p.replace("/", "%2F")).json()["id"]
        d.seed({"issues": [{"project_id": pid, "title": "Change %d of %s" % (k, p), "description": "Done.",
                            "labels": [kinds[k % 3]], "state": "closed", "closed_at": when}
                           for k in range(closed)]})
    return d


def watch_world(projects, url):
    d = Double(tier="premium")
    d.start()
    d.seed({"groups": ["acme", "acme/team"],
            "projects": [{"path_with_namespace": p, "default_branch": "main",
                          "files": {".factory.yml": "watch:\n  source: %s\n" % url}}
                         for p in project_paths(projects)]})
    return d


def summary_of(r):
    return {k: r[k] for k in ("requests", "writes", "issues_handled", "calls_per_issue", "wall_s")}


def pages(double, path):
    """Requests to page through `path` (open issues, 100 a page)."""
    double.clear_requests()
    page, rows = 1, 0
    while True:
        got = double.request("GET", "%s?state=opened&per_page=100&page=%d" % (path, page)).json()
        rows += len(got)
        if len(got) < 100:
            break
        page += 1
    return len(double.requests()), rows


def listing(double, ids):
    per_project = [pages(double, "/projects/%d/issues" % pid) for pid in ids]
    group = pages(double, "/groups/acme/issues")
    return {"per_project_requests": sum(p[0] for p in per_project), "per_project_rows": sum(p[1] for p in per_project),
            "group_requests": group[0], "group_rows": group[1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--projects", type=int, default=5)
    ap.add_argument("--issues", type=int, default=200)
    ap.add_argument("--closed", type=int, default=20)
    ap.add_argument("--bin-dir", default=os.environ.get("FACTORY_BIN_DIR", os.path.join(ROOT, "bin")))
    a = ap.parse_args()
    out = {"projects": a.projects, "issues_per_project": a.issues}
    report_dir = tempfile.mkdtemp(prefix="bench-group-")
    d, ids = world(a.projects, a.issues)
    try:
        out["listing_even"] = listing(d, ids)
        run_job(os.path.join(a.bin_dir, "factory-setup"), d, report_dir)
        out["triage_first_run"] = run_job(os.path.join(a.bin_dir, "factory-triage"), d, report_dir)
        out["triage_second_run"] = run_job(os.path.join(a.bin_dir, "factory-triage"), d, report_dir)
    finally:
        d.stop()
    d, ids = world(a.projects, max(1, a.issues - 50))
    try:
        out["listing_uneven"] = dict(listing(d, ids), issues_per_project=max(1, a.issues - 50))
    finally:
        d.stop()
    d = release_world(a.projects, a.closed)
    try:
        rel = os.path.join(a.bin_dir, "factory-release")
        out["release_first_run"] = run_job(rel, d, report_dir)
        out["release_second_run"] = run_job(rel, d, report_dir)
        out["release_closed_per_project"] = a.closed
    finally:
        d.stop()
    from integration import test_watch as tw  # noqa: E402 (its log lines and log server)
    lines = tw.baseline_lines() + tw.window_lines()
    server = tw.LogServer("\n".join(lines) + "\n", [])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = watch_world(a.projects, "http://127.0.0.1:%d/app.log" % server.server_address[1])
    try:
        w = os.path.join(a.bin_dir, "factory-watch")
        args = ("--now", tw.NOW, "--window", "15m", "--baseline", "2h")
        out["watch_first_run"] = run_job(w, d, report_dir, args=args)
        out["watch_second_run"] = run_job(w, d, report_dir, args=args)
    finally:
        d.stop()
        server.shutdown()
        server.server_close()
    out["load"] = os.getloadavg()[0]
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "group_scope.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    f1, f2 = out["triage_first_run"], out["triage_second_run"]
    print("group of %d projects x %d open issues" % (a.projects, a.issues))
    print("  first run:  %d requests (%d writes), %d triaged, %.2f calls per issue, %.2f s"
          % (f1["requests"], f1["writes"], f1["triaged"], f1["calls_per_issue"] or 0, f1["wall_s"]))
    print("  second run: %d requests (%d writes), %.2f s" % (f2["requests"], f2["writes"], f2["wall_s"]))
    for k in ("release_first_run", "release_second_run", "watch_first_run", "watch_second_run"):
        r = out[k]
        print("  %s: %d requests (%d writes), %d issues handled, %s calls per issue, %.2f s"
              % (k, r["requests"], r["writes"], r["issues_handled"],
                 "%.2f" % r["calls_per_issue"] if r["calls_per_issue"] else "-", r["wall_s"]))
    for k in ("listing_even", "listing_uneven"):
        l = out[k]
        print("  listing (%s): per project %d requests, group endpoint %d requests"
              % (k.split("_")[1], l["per_project_requests"], l["group_requests"]))


if __name__ == "__main__":
    main()
