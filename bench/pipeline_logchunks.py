#!/usr/bin/python3
"""How well `factory-pipeline classify` finds the failure in real CI logs.

Data: ../shared/data/ci-logs/logchunks/ (LogChunks: 797 failed Travis CI build
logs, each with the chunk a person marked as explaining the failure). The logs
are read from samples_logs.tar.gz, extracted to a temporary folder (never into
the repository).

For each log we locate the marked chunk in the raw log (its first and last raw
line, 1-based; lines are split on '\\n' as the classifier does), run the real
binary on the raw log, and compare its error_lines [first, last] with the chunk:
  covered   the region holds the whole chunk and is at most 40 lines long
  overlap   the region (at most 40 lines) shares at least one line with the chunk
  start     the region holds the chunk's first line
Rates are given over all 797 logs, over the logs whose chunk could be located,
and over the "coverable" ones (located chunk of at most 40 lines: a longer
chunk cannot be covered by a region of 40 lines).

Writes bench/results/pipeline_logchunks.json; with --misses FILE also the
logs where the chunk was not covered (for study; paths only).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "ci-logs", "logchunks"))
MAX_REGION = 40

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


def norm(s):
    s = ANSI.sub("", s).replace("\r", " ")
    return " ".join(s.split())


def locate(data, chunk):
    """The chunk's first and last raw line (1-based), or None.

    The chunk's text was cut from the log by hand (its line ends changed, and
    its first and last lines may be partial): compare lines with ANSI codes
    removed and blanks squeezed; the first chunk line must end a log line, the
    last must start one, and most lines between must be equal.
    """
    lines = data.split("\n")
    nl = [norm(l) for l in lines]
    cl = [norm(x) for x in re.split(r"\r\n|\n|\r", chunk)]
    cl = [x for x in cl if x]
    if not cl:
        return None
    idx = [i for i, x in enumerate(nl) if x]
    ne = [nl[i] for i in idx]
    n = len(cl)
    best = None
    for s in range(len(ne)):
        if cl[0] not in ne[s]:
            continue
        if n == 1:
            return idx[s] + 1, idx[s] + 1
        cands = [e for e in range(s + 1, min(len(ne), s + 2 * n + 10)) if cl[-1] in ne[e]]
        if not cands:
            continue
        e = min(cands, key=lambda e: abs(e - (s + n - 1)))
        mid = set(cl[1:-1])
        got = sum(1 for k in range(s + 1, e) if ne[k] in mid)
        score = got / max(1, len(mid)) if mid else 1.0
        if score >= 0.6 and (best is None or score > best[0]):
            best = (score, idx[s] + 1, idx[e] + 1)
        if score == 1.0:
            break
    return best[1:] if best else None


def extract(dest):
    marker = os.path.join(dest, ".extracted")
    if os.path.exists(marker):
        return
    with tarfile.open(os.path.join(DATA, "samples_logs.tar.gz")) as t:
        t.extractall(dest)
    open(marker, "w").close()


def rate(a, b):
    return round(a / b, 4) if b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("FACTORY_BIN_DIR", os.path.join(ROOT, "bin")))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "factory-logchunks"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "pipeline_logchunks.json"))
    ap.add_argument("--misses", default=None)
    args = ap.parse_args()

    exe = os.path.join(args.bin, "factory-pipeline")
    if not os.path.exists(exe):
        print("pipeline_logchunks: %s not built" % exe, file=sys.stderr)
        return 2
    if not os.path.isdir(DATA):
        print("pipeline_logchunks: no data at %s" % DATA, file=sys.stderr)
        return 2
    os.makedirs(args.work, exist_ok=True)
    extract(args.work)
    with open(os.path.join(DATA, "logchunks_index.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(l) for l in f]
    report_dir = os.path.join(args.work, "report")

    counts = collections.Counter()
    by_lang = collections.defaultdict(collections.Counter)
    classes = collections.Counter()
    sizes = []
    misses = []
    t0 = time.time()
    for r in rows:
        path = os.path.join(args.work, r["build_log"])
        with open(path, "rb") as f:
            raw = f.read()
        loc = locate(raw.decode("utf-8", "replace"), r["chunk"])
        p = subprocess.run([exe, "--report-dir", report_dir, "--log-level", "error", "classify", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        counts["logs"] += 1
        by_lang[r["language"]]["logs"] += 1
        if p.returncode != 0:
            counts["errors"] += 1
            continue
        res = json.loads(p.stdout)
        classes[res["class"]] += 1
        el = res["error_lines"]
        first, last = (el[0], el[1]) if el else (0, -1)
        size = last - first + 1
        sizes.append(size)
        if size > MAX_REGION:
            counts["region_over_40"] += 1
        if not loc:
            continue
        counts["located"] += 1
        cf, cl = loc
        coverable = cl - cf + 1 <= MAX_REGION
        counts["coverable"] += coverable
        small = 0 < size <= MAX_REGION
        covered = small and first <= cf and last >= cl
        overlap = small and first <= cl and last >= cf
        start = small and first <= cf <= last
        counts["covered"] += covered
        counts["overlap"] += overlap
        counts["start"] += start
        by_lang[r["language"]]["covered"] += covered
        by_lang[r["language"]]["overlap"] += overlap
        if not covered:
            misses.append({"log": r["build_log"], "chunk": [cf, cl], "region": el, "class": res["class"],
                           "rule": res["rule"]})
    elapsed = time.time() - t0
    n, located, coverable = counts["logs"], counts["located"], counts["coverable"]
    result = {
        "benchmark": "pipeline_logchunks",
        "what": "error_lines of factory-pipeline classify against the hand-marked chunk of 797 real failed "
                "CI logs (LogChunks); covered = region of at most 40 lines holding the whole chunk",
        "command": "/usr/bin/python3 bench/pipeline_logchunks.py",
        "logs": n,
        "chunk_located": located,
        "chunk_coverable_le_40_lines": coverable,
        "classifier_errors": counts["errors"],
        "regions_over_40_lines": counts["region_over_40"],
        "covered": counts["covered"],
        "overlap": counts["overlap"],
        "start": counts["start"],
        "coverage_of_all_logs": rate(counts["covered"], n),
        "coverage_of_located": rate(counts["covered"], located),
        "coverage_of_coverable": rate(counts["covered"], coverable),
        "overlap_of_located": rate(counts["overlap"], located),
        "start_of_located": rate(counts["start"], located),
        "median_region_lines": sorted(sizes)[len(sizes) // 2] if sizes else None,
        "classes": dict(classes.most_common()),
        "by_language": {k: {"logs": v["logs"], "covered": v["covered"], "overlap": v["overlap"]}
                        for k, v in sorted(by_lang.items())},
        "seconds": round(elapsed, 1),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if args.misses:
        with open(args.misses, "w") as f:
            json.dump(misses, f, indent=1)
    print("logchunks: %d logs, chunk located in %d (%d of at most 40 lines)" % (n, located, coverable))
    print("  covered (region <= 40 lines holds the chunk): %d = %.1f%% of all, %.1f%% of located, %.1f%% of coverable"
          % (counts["covered"], 100 * (rate(counts["covered"], n) or 0), 100 * (rate(counts["covered"], located) or 0),
             100 * (rate(counts["covered"], coverable) or 0)))
    print("  overlap: %.1f%% of located; region holds the chunk's first line: %.1f%%"
          % (100 * (rate(counts["overlap"], located) or 0), 100 * (rate(counts["start"], located) or 0)))
    return 0 if counts["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
