"""error_lines of factory-pipeline classify on 797 real failed CI logs (LogChunks).

The logs and their hand-marked failure chunks are in
../shared/data/ci-logs/logchunks/ ($FACTORY_LOGCHUNKS_DIR overrides); they are
extracted to a temporary folder, never into the repository. The measurement
is bench/pipeline_logchunks.py's: a log is covered when error_lines is a
region of at most 40 lines that holds the whole marked chunk.

Measured (bench/results/pipeline_logchunks.json, 2026-11-27): 542 of 797 logs
covered = 68.0% of all logs, 80.9% of the 670 whose chunk is at most 40 lines
long (119 marked chunks are longer than 40 lines and cannot be covered); the
region overlaps the chunk in 84.7% of the 789 logs where the chunk was located.
The floors below are those figures rounded down by about two points, so a
change that loses coverage fails here.
"""
import importlib.util
import os
import tempfile
import unittest

from lib.factory import BIN_DIR, ROOT

COVERAGE_FLOOR_ALL = 0.66
COVERAGE_FLOOR_COVERABLE = 0.79
OVERLAP_FLOOR = 0.82


def load_bench():
    spec = importlib.util.spec_from_file_location("pipeline_logchunks",
                                                  os.path.join(ROOT, "bench", "pipeline_logchunks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class LogChunksCoverageTest(unittest.TestCase):
    def test_coverage_floor(self):
        bench = load_bench()
        data = os.environ.get("FACTORY_LOGCHUNKS_DIR") or bench.DATA
        if not os.path.isdir(data):
            raise AssertionError("LogChunks data not found in %s (set FACTORY_LOGCHUNKS_DIR)" % data)
        bench.DATA = data
        with tempfile.TemporaryDirectory(prefix="factory-logchunks-") as work:
            out = os.path.join(work, "result.json")
            import sys
            argv = sys.argv
            sys.argv = ["pipeline_logchunks.py", "--bin", BIN_DIR, "--work", work, "--out", out]
            try:
                rc = bench.main()
            finally:
                sys.argv = argv
            import json
            with open(out) as f:
                res = json.load(f)
        self.assertEqual(rc, 0, res)
        self.assertEqual(res["logs"], 797)
        self.assertEqual(res["classifier_errors"], 0)
        self.assertEqual(res["regions_over_40_lines"], 0)
        self.assertGreaterEqual(res["coverage_of_all_logs"], COVERAGE_FLOOR_ALL, res)
        self.assertGreaterEqual(res["coverage_of_coverable"], COVERAGE_FLOOR_COVERABLE, res)
        self.assertGreaterEqual(res["overlap_of_located"], OVERLAP_FLOOR, res)


if __name__ == "__main__":
    unittest.main()
