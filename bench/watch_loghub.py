#!/usr/bin/python3
"""Grouping accuracy of `factory-watch templates` on the Loghub 2k sets.

Feeds the Content column of each <Set>_2k.log_structured_corrected.csv (from
../shared/data/loghub, or $FACTORY_LOGHUB_DIR) one message per line, computes
GA against EventId, and writes bench/results/watch_loghub.json with the
per-set GA, Drain's published figure beside it, and the mean.

    bench/watch_loghub.py [BIN_DIR]
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.loghub import DRAIN_GA, SETS, grouping_accuracy_of_set, loghub_dir, raw_grouping_accuracy_of_set  # noqa: E402


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FACTORY_BIN_DIR", os.path.join(ROOT, "bin"))
    binary = os.path.join(bin_dir, "factory-watch")
    sets = {}
    for name in SETS:
        t0 = time.time()
        ga, detail = grouping_accuracy_of_set(binary, name)
        detail.update({"ga": round(ga, 4), "drain_ga": DRAIN_GA[name], "seconds": round(time.time() - t0, 3)})
        detail["raw_line_ga"] = round(raw_grouping_accuracy_of_set(binary, name), 4)
        sets[name] = detail
        print("%-10s GA %.4f  (Drain %.3f)  groups %d/%d   raw lines with headers: GA %.4f"
              % (name, ga, DRAIN_GA[name], detail["predicted_groups"], detail["true_groups"], detail["raw_line_ga"]))
    mean = sum(s["ga"] for s in sets.values()) / len(sets)
    drain_mean = sum(DRAIN_GA.values()) / len(DRAIN_GA)
    raw_mean = sum(s["raw_line_ga"] for s in sets.values()) / len(sets)
    print("mean       GA %.4f  (Drain %.4f on these sets)   raw lines: GA %.4f" % (mean, drain_mean, raw_mean))
    result = {
        "benchmark": "Loghub 2k grouping accuracy (Content column, corrected ground truth)",
        "data": loghub_dir(),
        "command": "factory-watch templates < Content column",
        "sets": sets,
        "mean_ga": round(mean, 4),
        "raw_line_mean_ga": round(raw_mean, 4),
        "raw_line_note": "raw lines of <Set>_2k.log through `factory-watch --raw templates` (headers read by the "
                         "plain-text reader, no per-set pattern); not part of the Loghub protocol",
        "drain_mean_ga_same_sets": round(drain_mean, 4),
        "all_at_least_drain": all(s["ga"] >= s["drain_ga"] for s in sets.values()),
    }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "watch_loghub.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
