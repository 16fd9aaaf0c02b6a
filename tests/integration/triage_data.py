"""The triage data set (tests/data/triage/issues.json) as seeds for the GitLab
double, and the board order it should produce. Shared by the triage
integration tests and bench/triage_10k.py."""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "triage", "issues.json")


def generated(gen):
    """The description a `generate` entry stands for (as tests/unit/triage_test.c builds it)."""
    d = gen.get("description") or {}
    out = d.get("prefix", "")
    if "repeat" in d:
        rep, size = d["repeat"], d["bytes"]
        chunks = []
        n = len(out.encode("utf-8"))
        while n < size:
            piece = rep[:size - n] if len(rep) > size - n else rep
            chunks.append(piece)
            n += len(piece)
        out += "".join(chunks)
    if "junk" in d:
        out += "".join("\ufffd" if i % 3 == 0 else chr(1 + (i * 7) % 31) for i in range(d["junk"]))
    return out


def load():
    """The data set: a list of dicts with title, description, labels, upvotes,
    created_at, confidential, expect; iid numbered from 1 in file order."""
    with open(DATA, encoding="utf-8") as f:
        issues = json.load(f)["issues"]
    for n, i in enumerate(issues, 1):
        i["iid"] = n
        if i.get("generate"):
            i["description"] = generated(i["generate"])
    return issues


def seed_issues(issues, project_id=1):
    """Seeds for the double (POST /__double/seed {"issues": ...})."""
    out = []
    for i in issues:
        out.append({"project_id": project_id, "iid": i["iid"], "title": i["title"] or "",
                    "description": i["description"], "labels": list(i["labels"]),
                    "upvotes": i["upvotes"], "created_at": i["created_at"],
                    "confidential": i["confidential"]})
    return out


def expected_labels(exp):
    """The triage labels a decision stands for (as triage_decision_labels)."""
    labels = ["type::" + exp["type"], "priority::%d" % exp["priority"]]
    if exp["type"] == "bug" and exp.get("severity"):
        labels.append("severity::%d" % exp["severity"])
    if exp.get("fast_lane"):
        labels.append("fast-lane")
    return labels


def rank_key(i):
    """jobs/triage/order.c's rank for an issue of the data set."""
    e = i["expect"]
    prio = e["priority"]
    bucket = 0 if prio == 1 else (1 if e.get("fast_lane") else 2)
    sev = e.get("severity") or 5
    return (bucket, prio, sev, -i["upvotes"], i["created_at"], i["iid"])


def expected_up_next(issues, wip):
    ranked = sorted(issues, key=rank_key)
    return [i["iid"] for n, i in enumerate(ranked) if n < wip or i["expect"].get("fast_lane")]
