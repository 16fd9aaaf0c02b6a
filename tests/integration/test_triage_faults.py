"""factory-triage against a GitLab that misbehaves: an issue deleted while the
run goes on, 429 storms that pass and one that does not, bad settings, bad
input to classify. Each handled without a crash or a lost label."""
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

from integration.triage_data import load, seed_issues
from lib.double import Double
from lib.factory import binary, check_sanitizers, job_env, run_job

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


def api(double, method, path, body=None):
    r = double.request(method, path, body)
    if r.status >= 400:
        raise AssertionError("%s %s: %d %s" % (method, path, r.status, r.text))
    return r.json()


def labels_by_iid(double):
    out, page = {}, 1
    while True:
        got = api(double, "GET", "/projects/1/issues?state=all&per_page=100&page=%d" % page)
        for i in got:
            out[i["iid"]] = (sorted(i["labels"]), i["confidential"])
        if len(got) < 100:
            return out
        page += 1


def small_set():
    """Twenty issues of the data set, people's labels and unknown labels among them."""
    issues = load()
    pick = [i for i in issues if i["labels"]][:5] + [i for i in issues if not i["labels"]][:15]
    for n, i in enumerate(pick, 1):
        i["iid"] = n
    return pick


def triage(double, *args, extra=None):
    return run_job("triage", double, *args, env=job_env(double, extra=extra))


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        self.issues = small_set()
        self.double.seed({"issues": seed_issues(self.issues)})
        self.assertEqual(run_job("setup", self.double).returncode, 0)
        self.before = labels_by_iid(self.double)

    def reference(self):
        """The end state of a clean run on a twin project."""
        with Double() as twin:
            twin.seed({"issues": seed_issues(self.issues)})
            self.assertEqual(run_job("setup", twin).returncode, 0)
            r = triage(twin)
            self.assertEqual(r.returncode, 0, r)
            return labels_by_iid(twin)

    def assert_nothing_lost(self):
        now = labels_by_iid(self.double)
        for iid, (labels, _) in self.before.items():
            for l in labels:
                if l.startswith(("priority::", "type::", "severity::")) and not l.startswith("priority::urgent"):
                    continue  # triage's own families may move
                self.assertIn(l, now[iid][0], "#%d lost %r" % (iid, l))

    def test_issue_deleted_while_the_run_goes_on(self):
        victim = len(self.issues)
        # the first write waits, long enough for the victim to be deleted after the list pass
        self.double.faults([{"path_regex": r"/issues/\d+$", "method": "PUT", "delay_ms": 1500, "times": 1}])
        self.double.clear_requests()
        env = job_env(self.double)
        report_dir = tempfile.mkdtemp(prefix="triage-report-")
        env["FACTORY_REPORT_DIR"] = report_dir
        proc = subprocess.Popen([binary("triage")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def delete_after_list():
            deadline = time.time() + 20
            while time.time() < deadline:
                if any(q["method"] == "GET" and q["path"].endswith("/issues") for q in self.double.requests()):
                    api_status = self.double.request("DELETE", "/projects/1/issues/%d" % victim).status
                    self.assertEqual(api_status, 204)
                    return
                time.sleep(0.02)

        t = threading.Thread(target=delete_after_list)
        t.start()
        out, err = proc.communicate(timeout=120)
        t.join()
        check_sanitizers(out + err)
        self.assertEqual(proc.returncode, 0, out + err)
        self.assertIn("#%d: deleted while the run went on" % victim, err)
        with open(os.path.join(report_dir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["counters"]["deleted"], 1)
        now = labels_by_iid(self.double)
        self.assertNotIn(victim, now)
        for iid in range(1, victim):
            self.assertTrue(any(l.startswith("priority::") for l in now[iid][0]), now[iid])
        self.assert_nothing_lost()

    def test_429_storm_that_passes(self):
        self.double.faults([
            {"path_regex": r"/issues\?", "method": "GET", "status": 429, "times": 3, "headers": {"Retry-After": "0"}},
            {"path_regex": r"/issues/\d+$", "method": "PUT", "status": 429, "times": 5,
             "headers": {"Retry-After": "0"}},
            {"path_regex": r"/notes$", "method": "POST", "status": 429, "times": 5, "body": "Retry later"},
        ])
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        self.assertGreaterEqual(r.report["counters"]["api_retries"], 13)
        self.assertEqual(labels_by_iid(self.double), self.reference())
        self.assert_nothing_lost()
        # and a rerun after the storm writes nothing
        self.double.clear_requests()
        self.assertEqual(triage(self.double).returncode, 0)
        self.assertEqual([q for q in self.double.requests() if q["method"] in WRITE_METHODS], [])

    def test_429_storm_that_does_not_pass(self):
        self.double.faults([{"path_regex": r"/issues/\d+$", "method": "PUT", "status": 429, "times": -1,
                             "after": 6, "headers": {"Retry-After": "0"}}])
        r = triage(self.double, extra={"FACTORY_HTTP_RETRY_BUDGET_MS": "500"})
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("429", r.stderr)
        self.assertIsNotNone(r.report)
        self.assertEqual(r.report["exit_code"], 3)
        self.assert_nothing_lost()
        # after the storm the next run finishes the job: the same end state as a clean run
        self.double.clear_faults()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(labels_by_iid(self.double), self.reference())

    def test_gitlab_down_for_the_list(self):
        self.double.faults([{"path_regex": r"/issues\?", "method": "GET", "status": 503, "times": -1}])
        r = triage(self.double, extra={"FACTORY_HTTP_RETRY_BUDGET_MS": "200", "FACTORY_HTTP_MAX_RETRIES": "2"})
        self.assertEqual(r.returncode, 3, r)
        self.double.clear_faults()
        self.assertEqual(labels_by_iid(self.double), self.before)

    def test_html_error_page_instead_of_json(self):
        self.double.faults([{"path_regex": r"/issues\?", "method": "GET", "html": True, "status": 200, "times": -1}])
        r = triage(self.double)
        self.assertEqual(r.returncode, 1, r)
        self.double.clear_faults()
        self.assertEqual(labels_by_iid(self.double), self.before)


class SettingsTest(unittest.TestCase):
    def test_bad_policy_is_a_usage_error_naming_the_rule(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "factory.yml")
            with open(cfg, "w") as f:
                f.write("triage:\n  extra_rules:\n    - name: broken\n      type: bug\n      pattern: '(unclosed'\n")
            r = run_job("triage", None, "--config", cfg, "classify", stdin='{"title":"x"}')
            self.assertEqual(r.returncode, 2, r)
            self.assertIn("rule 'broken': pattern 1", r.stderr)

    def test_project_policy_changes_the_decision(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "factory.yml")
            with open(cfg, "w") as f:
                f.write("triage:\n  priorities: {feature: 3}\n  extra_rules:\n    - name: acme\n      type: bug\n"
                        "      severity: 1\n      weight: 10\n      pattern: '\\bACME\\b'\n")
            r = run_job("triage", None, "--config", cfg, "classify", stdin='{"title":"Dark mode would be nice"}')
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(json.loads(r.stdout)["priority"], 3)
            r = run_job("triage", None, "--config", cfg, "classify", stdin='{"title":"ACME widget"}')
            d2 = json.loads(r.stdout)
            self.assertEqual((d2["type"], d2["severity"], d2["priority"]), ("bug", 1, 2))
            self.assertIn("acme", d2["rules"])

    def test_wip_limit_out_of_range(self):
        with Double() as double:
            r = triage(double, "--wip-limit", "0")
            self.assertEqual(r.returncode, 2, r)
            self.assertIn("wip_limit", r.stderr)

    def test_unknown_command(self):
        r = run_job("triage", None, "clasify")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("unknown command 'clasify'", r.stderr)


class ClassifyInputTest(unittest.TestCase):
    def classify(self, data):
        return run_job("triage", None, "classify", stdin=data)

    def test_not_json(self):
        for data in ("", "not json", "[1,2]", '"a string"', "{\"title\": ", "\x00\x01"):
            r = self.classify(data)
            self.assertIn(r.returncode, (1, 2), (data, r))
            self.assertIn("classify:", r.stderr)
            self.assertEqual(r.stdout, "")

    def test_odd_shapes_still_decide(self):
        for data in ('{}', '{"title": null, "description": 5, "labels": "x"}',
                     '{"title": "crash", "labels": [1, null, {"name": 3}, {"name": "security"}]}',
                     json.dumps({"title": "\ufffd" * 1000, "description": "\u0001\u0002" * 50000})):
            r = self.classify(data)
            self.assertEqual(r.returncode, 0, (data[:80], r))
            d = json.loads(r.stdout)
            self.assertIn(d["priority"], (1, 2, 3, 4, 5))

    def test_too_big(self):
        r = self.classify('{"title": "x", "description": "' + "a" * (17 << 20) + '"}')
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("over", r.stderr)

    def test_hostile_body_is_quick_and_limited(self):
        body = "a" * 60000 + "!" + "(" * 5000
        r = self.classify(json.dumps({"title": "Feature request: bulk edit", "description": body}))
        self.assertEqual(r.returncode, 0, r)
        d = json.loads(r.stdout)
        self.assertEqual(d["type"], "feature")


if __name__ == "__main__":
    unittest.main()
