"""factory-pipeline classify on labelled CI logs (tests/data/cilogs), and the command's contract.

tests/data/cilogs/labels.json lists hand-written logs, several per class
(GitLab, GitHub Actions and Travis shapes), each with its class, the lines
that show the failure, and what a fixer needs (tool, file, line, test) where
the log says it. Per-class precision and recall are computed over them; each
class must reach PRECISION_FLOOR and RECALL_FLOOR, and error_lines must hold
the failure lines in a region of at most 40 lines.

tests/data/cilogs/heldout/ holds a second set (26 logs, two per class, other
tools and CI shapes) written after the rules. Measured once before any rule
was changed for it: 23 of 26 classes right (network, oom and test_failure
recall 0.5; compile_error, dependency and flaky_test precision 0.67) and all
26 regions holding the failure lines. The three gaps were general (a
case-insensitive RERUN, Go's "dial tcp: lookup ... server misbehaving",
rustc's "signal: 9, SIGKILL") and were fixed in the rules; since then both
sets pass, so neither is a held-out measurement any more (see
test_pipeline_logchunks.py for real logs).
"""
import collections
import json
import os
import subprocess
import tempfile
import unittest

from lib.factory import ROOT, binary, check_sanitizers, job_env, run_job

DATA = os.path.join(ROOT, "tests", "data", "cilogs")
CLASSES = ["compile_error", "link_error", "lint", "type_check", "test_failure", "flaky_test", "dependency",
           "network", "oom", "job_timeout", "runner_failure", "ci_config", "permission"]
PRECISION_FLOOR = 0.9
RECALL_FLOOR = 0.9
MAX_REGION = 40


def classify(path, *extra):
    r = run_job("pipeline", None, *extra, "classify", path)
    if r.returncode != 0:
        raise AssertionError("classify %s: %r" % (path, r))
    return json.loads(r.stdout)


class LabelledLogsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.labels = []
        for sub in ("", "heldout"):
            with open(os.path.join(DATA, sub, "labels.json"), encoding="utf-8") as f:
                for row in json.load(f):
                    row["log"] = os.path.join(sub, row["log"]) if sub else row["log"]
                    cls.labels.append(row)
        cls.results = {row["log"]: classify(os.path.join(DATA, row["log"])) for row in cls.labels}

    def test_every_class_has_several_logs(self):
        count = collections.Counter(row["class"] for row in self.labels)
        for c in CLASSES:
            self.assertGreaterEqual(count[c], 5, c)

    def test_precision_and_recall_per_class(self):
        tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
        for row in self.labels:
            got = self.results[row["log"]]["class"]
            if got == row["class"]:
                tp[got] += 1
            else:
                fp[got] += 1
                fn[row["class"]] += 1
        table = {}
        for c in CLASSES:
            p = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
            r = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
            table[c] = (round(p, 3), round(r, 3))
        print("\nper-class precision, recall: %s" % json.dumps(table))
        for c in CLASSES:
            with self.subTest(cls=c):
                self.assertGreaterEqual(table[c][0], PRECISION_FLOOR, "%s precision %s" % (c, table))
                self.assertGreaterEqual(table[c][1], RECALL_FLOOR, "%s recall %s" % (c, table))

    def test_error_lines_hold_the_failure(self):
        for row in self.labels:
            res = self.results[row["log"]]
            with self.subTest(log=row["log"]):
                first, last = res["error_lines"]
                self.assertLessEqual(last - first + 1, MAX_REGION)
                self.assertLessEqual(first, row["failure_lines"][0], res)
                self.assertGreaterEqual(last, row["failure_lines"][1], res)
                # the excerpt is the region's text, cleaned
                self.assertNotIn("\x1b", res["excerpt"])
                self.assertNotIn("section_start", res["excerpt"])

    def test_what_a_fixer_needs_is_extracted(self):
        for row in self.labels:
            res = self.results[row["log"]]
            with self.subTest(log=row["log"]):
                for key in ("tool", "test"):
                    if key in row:
                        self.assertEqual(res[key], row[key], res)
                for key in ("file", "line"):
                    if key in row:
                        self.assertEqual(res["location"][key], row[key], res)


class CommandTest(unittest.TestCase):
    def test_stdin_and_file_give_the_same_answer(self):
        path = os.path.join(DATA, "compile_error", "gitlab-gcc.log")
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        r = run_job("pipeline", None, "classify", stdin=text)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), classify(path))
        self.assertEqual(len(r.stdout.strip().splitlines()), 1)
        r = run_job("pipeline", None, "classify", "-", stdin=text)
        self.assertEqual(json.loads(r.stdout), classify(path))

    def test_output_shape(self):
        res = classify(os.path.join(DATA, "test_failure", "github-go-test.log"))
        for key in ("class", "tool", "location", "test", "error_lines", "excerpt"):
            self.assertIn(key, res)
        self.assertEqual(sorted(res["location"]), ["file", "line"])
        self.assertEqual(len(res["error_lines"]), 2)

    def test_binary_input_is_no_crash(self):
        data = bytes(range(256)) * 4000 + b"\n\x00\xff error: \x1b[31m\n" * 10
        env = job_env(None)
        with tempfile.TemporaryDirectory(prefix="factory-report-") as rep:
            env["FACTORY_REPORT_DIR"] = rep
            p = subprocess.run([binary("pipeline"), "classify"], input=data, capture_output=True, env=env,
                               timeout=120)
        check_sanitizers(p.stderr.decode("utf-8", "replace"))
        self.assertEqual(p.returncode, 0, p.stderr)
        res = json.loads(p.stdout)
        res["excerpt"].encode("utf-8")

    def test_bad_input_is_a_clear_usage_error(self):
        r = run_job("pipeline", None, "classify", "/nonexistent/job.log")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("cannot open /nonexistent/job.log", r.stderr)
        r = run_job("pipeline", None, "classify", DATA)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("is a directory", r.stderr)
        r = run_job("pipeline", None, "classify", "a", "b")
        self.assertEqual(r.returncode, 2, r)
        r = run_job("pipeline", None, "frobnicate")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("unknown command", r.stderr)

    def test_a_project_rules_file_extends_and_is_checked(self):
        with tempfile.TemporaryDirectory() as tmp:
            rules = os.path.join(tmp, "rules.yml")
            with open(rules, "w") as f:
                f.write("- name: quota\n  class: permission\n  weight: 99\n  keywords: ['quota']\n"
                        "  pattern: 'deploy quota exhausted'\n")
            log = os.path.join(tmp, "job.log")
            with open(log, "w") as f:
                f.write("$ ./deploy\nerror: deploy quota exhausted\nERROR: Job failed: exit code 1\n")
            res = classify(log, "--rules-file", rules)
            self.assertEqual((res["class"], res["rule"]), ("permission", "quota"))
            # the default file is read from the working directory when present
            os.makedirs(os.path.join(tmp, ".factory"))
            os.rename(rules, os.path.join(tmp, ".factory", "ci-rules.yml"))
            r = run_job("pipeline", None, "classify", log, cwd=tmp)
            self.assertEqual(json.loads(r.stdout)["rule"], "quota", r)
            with open(os.path.join(tmp, "bad.yml"), "w") as f:
                f.write("- name: broken\n  class: lint\n  pattern: '(unclosed'\n")
            r = run_job("pipeline", None, "--rules-file", os.path.join(tmp, "bad.yml"), "classify", log)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn("rule 'broken': pattern", r.stderr)

    def test_rules_command_prints_the_built_in_rules_file(self):
        # (the rules' own text names sanitizer messages: only stderr is checked for reports)
        env = job_env(None)
        with tempfile.TemporaryDirectory(prefix="factory-report-") as rep:
            env["FACTORY_REPORT_DIR"] = rep
            p = subprocess.run([binary("pipeline"), "rules"], capture_output=True, env=env, timeout=60)
        check_sanitizers(p.stderr.decode("utf-8", "replace"))
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(ROOT, "common", "cilog_rules.yml"), "rb") as f:
            self.assertEqual(p.stdout, f.read(), "common/cilog_rules.c is stale: python3 jobs/pipeline/embed_rules.py")


if __name__ == "__main__":
    unittest.main()
