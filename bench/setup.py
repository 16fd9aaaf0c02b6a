#!/usr/bin/python3
"""Foundation benchmarks (issue: foundation):
- cold start of `factory-setup --version` (target under 5 ms), median and p95
  over 300 runs, for the dynamic build and, when built, the static one;
- binary sizes (target under 8 MiB each, static);
- API requests per run of factory-setup: on a new project, then on a set-up
  one (reads only).
Writes bench/results/setup.json and prints a summary."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.double import Double  # noqa: E402
from lib.factory import job_env  # noqa: E402


def cold_start(path, runs=300):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([path, "--version"], stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(len(times) * 0.95)], 3),
            "min_ms": round(times[0], 3), "runs": runs}


def sizes(d):
    out = {}
    if os.path.isdir(d):
        for n in sorted(os.listdir(d)):
            path = os.path.join(d, n)
            # The static build is one multi-call binary, `factory`, with a
            # factory-<job> symlink per job: count the file once.
            if (n == "factory" or n.startswith("factory-")) and not os.path.islink(path) \
                    and os.path.isfile(path):
                out[n] = os.path.getsize(path)
    return out


def requests_per_run():
    res = {}
    with Double() as d:
        with tempfile.TemporaryDirectory() as rep:
            for label in ("new_project", "already_set_up"):
                d.clear_requests()
                env = job_env(d)
                env["FACTORY_REPORT_DIR"] = rep
                subprocess.run([os.path.join(ROOT, "bin", "factory-setup")], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                reqs = d.requests()
                res[label] = {"requests": len(reqs),
                              "writes": sum(1 for r in reqs if r["method"] not in ("GET", "HEAD"))}
    return res


def main():
    result = {"machine": os.uname().machine, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    result["cold_start_dynamic"] = cold_start(os.path.join(ROOT, "bin", "factory-setup"))
    static = os.path.join(ROOT, "build-static", "bin", "factory-setup")
    if not os.path.exists(static):
        subprocess.run(["sh", "scripts/static-build.sh"], cwd=ROOT, env=dict(os.environ, BIN="build-static/bin"),
                       stdout=subprocess.DEVNULL, check=True)
    result["cold_start_static"] = cold_start(static)
    result["size_dynamic_bytes"] = sizes(os.path.join(ROOT, "bin"))
    result["size_static_bytes"] = sizes(os.path.join(ROOT, "build-static", "bin"))
    result["api_requests"] = requests_per_run()
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "setup.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
