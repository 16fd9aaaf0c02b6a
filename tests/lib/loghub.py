"""Grouping accuracy (GA) of `factory-watch templates` on the Loghub 2k sets.

The sets are benchmark data kept outside the repository, in
../shared/data/loghub/<Set>/ (override with $FACTORY_LOGHUB_DIR). As in the
Loghub benchmark (Zhu et al., ICSE-SEIP 2019), what is parsed is the Content
column of <Set>_2k.log_structured_corrected.csv, one message per line, and GA
is the share of messages whose predicted group (the set of line ids given the
same template id) equals their ground-truth group (the set of line ids with
the same EventId).

    from lib.loghub import SETS, DRAIN_GA, loghub_dir, grouping_accuracy_of_set
    ga, detail = grouping_accuracy_of_set(binary_path, "HDFS")
"""
import collections
import csv
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Drain's published GA on the Loghub 2k sets (Zhu et al., "Tools and
# Benchmarks for Automated Log Parsing", ICSE-SEIP 2019; the same figures,
# unrounded, are in logpai/logparser's Drain README: HDFS 0.9975, Hadoop
# 0.9475, Zookeeper 0.9665, HPC 0.887, Windows 0.997, Android 0.911,
# Apache 1, OpenStack 0.7325).
DRAIN_GA = {
    "HDFS": 0.998,
    "Hadoop": 0.948,
    "Zookeeper": 0.967,
    "HPC": 0.887,
    "Windows": 0.997,
    "Android": 0.911,
    "Apache": 1.000,
    "OpenStack": 0.733,
}
SETS = list(DRAIN_GA)


def loghub_dir():
    env = os.environ.get("FACTORY_LOGHUB_DIR")
    if env:
        return env
    return os.path.join(os.path.dirname(ROOT), "shared", "data", "loghub")


def read_set(name, base=None):
    """[(line_id, content, event_id)] of a set's structured CSV."""
    path = os.path.join(base or loghub_dir(), name, name + "_2k.log_structured_corrected.csv")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append((row["LineId"], row["Content"], row["EventId"]))
    return rows


def grouping_accuracy(truth, predicted):
    """GA of two parallel lists of labels."""
    assert len(truth) == len(predicted)
    true_groups = collections.defaultdict(set)
    pred_groups = collections.defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, predicted)):
        true_groups[t].add(i)
        pred_groups[p].add(i)
    correct = 0
    for members in pred_groups.values():
        first = next(iter(members))
        if true_groups[truth[first]] == members:
            correct += len(members)
    return correct / len(truth) if truth else 1.0


def run_templates(binary_path, messages, extra_args=()):
    """Feed messages (one per line) to `factory-watch templates`; return the
    list of (template_id, template), one per message."""
    data = "".join(m.replace("\r", " ").replace("\n", " ") + "\n" for m in messages)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "CI_"))}
    report_dir = tempfile.mkdtemp(prefix="factory-watch-report-")
    env["FACTORY_REPORT_DIR"] = report_dir
    try:
        proc = subprocess.run([binary_path] + list(extra_args) + ["templates"], input=data.encode("utf-8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, env=env,
                              cwd=tempfile.gettempdir())
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError("factory-watch templates failed (%d): %s" % (proc.returncode,
                                                                       proc.stderr.decode(errors="replace")))
    out = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(messages):
        raise RuntimeError("factory-watch templates wrote %d lines for %d messages" % (len(out), len(messages)))
    result = []
    for line in out:
        tid, _, tmpl = line.partition("\t")
        result.append((tid, tmpl))
    return result


def grouping_accuracy_of_set(binary_path, name, base=None):
    """(GA, details) for one set; details has counts of groups."""
    rows = read_set(name, base)
    pred = run_templates(binary_path, [r[1] for r in rows])
    truth = [r[2] for r in rows]
    ga = grouping_accuracy(truth, [p[0] for p in pred])
    return ga, {"lines": len(rows), "true_groups": len(set(truth)),
                "predicted_groups": len(set(p[0] for p in pred))}


def raw_grouping_accuracy_of_set(binary_path, name, base=None):
    """GA when the raw lines of <Set>_2k.log, headers and all, are fed to
    `factory-watch --raw templates` (the header is read by the plain-text
    reader with no per-set pattern); line i of the log is LineId i."""
    rows = read_set(name, base)
    path = os.path.join(base or loghub_dir(), name, name + "_2k.log")
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read().split("\n")[:len(rows)]
    pred = run_templates(binary_path, raw, extra_args=("--raw",))
    return grouping_accuracy([r[2] for r in rows], [p[0] for p in pred])
