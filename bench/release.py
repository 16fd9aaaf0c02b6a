#!/usr/bin/python3
"""factory-release at size (issue 7): a project with ISSUES closed issues of
every type (a third closed by merged merge requests, a fifth with a reporter
who left an address), COMMITS commits with a Changelog trailer, against the
GitLab double, the SMTP sink and the webhook receiver, all on loopback.

Measures, for the first release and for the rerun that must do nothing:
wall time, API requests (reads and writes), emails and chat posts; and the
job's peak memory (ru_maxrss of the child). Writes bench/results/release.json.

    bench/release.py [ISSUES] [COMMITS]      (defaults 300 and 50)
    FACTORY_BIN_DIR=/path/to/bin bench/release.py
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.double import Double  # noqa: E402
from lib.factory import binary, gl, job_env  # noqa: E402
from lib.smtp_sink import SmtpSink  # noqa: E402
from lib.webhook import WebhookReceiver  # noqa: E402

TYPES = ["type::bug", "type::feature", "type::security", "type::chore", "type::bug", "type::feature"]


def build(d, n_issues, n_commits):
    issues, mrs = [], []
    for i in range(1, n_issues + 1):
        labels = [TYPES[i % len(TYPES)]]
        if i % 7 == 0:
            labels.append("source::customer")
        if i % 11 == 0:
            labels.append("performance")
        iss = {"project_id": 1, "iid": i, "title": "Change number %d" % i, "labels": labels,
               "confidential": labels[0] == "type::security",
               "description": "Something about change %d.\n\nRelease note: Change %d is better now." % (i, i)}
        if i % 5 == 0:
            iss["notes"] = [{"body": "<!-- factory-intake reporter submission=fi-%024x email=user%d@example.com -->\n"
                                     "Reporter" % (i, i % 40), "internal": True}]
        if i % 3 == 0:
            mrs.append({"project_id": 1, "source_branch": "b%d" % i, "title": "Fix %d" % i,
                        "description": "Closes #%d" % i, "state": "merged"})
        else:
            iss["state"] = "closed"
        issues.append(iss)
    d.seed({"issues": issues})
    for m in mrs:
        gl(d, "POST", "/projects/1/repository/branches", {"branch": m["source_branch"], "ref": "main"})
    d.seed({"merge_requests": mrs})
    # the MR-closed issues: close them now (a seeded merged MR does not close anything)
    for m in mrs:
        iid = int(m["description"].split("#")[1])
        gl(d, "PUT", "/projects/1/issues/%d" % iid, {"state_event": "close"})
    cats = ["added", "fixed", "other", "performance", "changed"]
    for c in range(n_commits):
        gl(d, "POST", "/projects/1/repository/commits",
           {"branch": "main", "commit_message": "Commit %d\n\nChangelog: %s" % (c, cats[c % len(cats)]),
            "actions": [{"action": "create", "file_path": "f/%d.txt" % c, "content": str(c)}]})
    time.sleep(1.1)


def run(env, rep):
    """Run the job once: wall time, its own peak RSS (wait4), its report."""
    env = dict(env, FACTORY_REPORT_DIR=rep)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([binary("release")], env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode("utf-8", "replace")[-4000:])
            raise SystemExit("factory-release failed: %d" % p.returncode)
    with open(os.path.join(rep, "report.json")) as f:
        report = json.load(f)
    return wall, usage.ru_maxrss, report


def main():
    n_issues = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    n_commits = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    result = {"machine": os.uname().machine, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "issues": n_issues, "trailer_commits": n_commits}
    with Double(rate_limit=1000000) as d, SmtpSink() as sink, WebhookReceiver() as hook, \
            tempfile.TemporaryDirectory() as rep:
        build(d, n_issues, n_commits)
        env = job_env(d, extra={"FACTORY_SMTP_URL": sink.url, "FACTORY_SMTP_FROM": "r@example.com",
                                "FACTORY_SMTP_TLS": "none", "FACTORY_RELEASE_WEBHOOK_URL": hook.url,
                                "FACTORY_RELEASE_MAX_ITEMS": "100000"})
        for label in ("first_release", "rerun"):
            d.clear_requests()
            wall, rss, report = run(env, rep)
            reqs = d.requests()
            result[label] = {
                "wall_s": round(wall, 3),
                "api_requests": len(reqs),
                "api_writes": sum(1 for r in reqs if r["method"] not in ("GET", "HEAD")),
                "items": report["counters"].get("items", 0),
                "customer_facing": report["counters"].get("customer_facing", 0),
                "emails_sent_total": len(sink.messages()),
                "chat_posts_total": len(hook.posts()),
                "peak_rss_kib": rss,
                "summary": report["summary"],
            }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "release.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
