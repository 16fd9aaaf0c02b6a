"""factory-intake delivery: from the spool to GitLab (the double) in order and exactly
once, through outages, 429s, uncertain answers and restarts; `deliver` and `create`."""
import os
import shutil
import tempfile
import time
import unittest

from lib.double import Double
from lib.factory import job_env, run_job
from lib.intake import IntakeServer, issue_notes, project_issues

ISSUES_POST = r"^/api/v4/projects/[^/]+/issues$"


def sub(i, **kw):
    d = {"kind": "bug", "title": "Problem number %d" % i, "description": "Details of problem %d." % i}
    d.update(kw)
    return d


def marker_ids(issues):
    out = []
    for i in issues:
        d = i["description"]
        k = d.find("<!-- factory-intake submission=")
        out.append(d[k + len("<!-- factory-intake submission="):].split(" ", 1)[0] if k >= 0 else None)
    return out


class IntakeDeliveryTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        self.spool = tempfile.mkdtemp(prefix="intake-spool-")
        self.addCleanup(shutil.rmtree, self.spool, True)
        self.env = {"FACTORY_INTAKE_RATE_LIMIT": "0"}

    def server(self, **kw):
        srv = IntakeServer(self.double, self.spool, env=self.env, **kw)
        self.addCleanup(srv.stop)
        return srv

    def test_gitlab_down_then_back_delivers_everything_once_in_order(self):
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "status": 503, "times": 6},
                            {"path_regex": ISSUES_POST, "method": "POST", "drop": True, "times": 2}])
        srv = self.server()
        ids = []
        for i in range(5):
            r = srv.post_json(sub(i, email="c%d@example.com" % i))
            self.assertEqual(r.status, 202, r)  # accepted while GitLab is down
            ids.append(r.json()["id"])
        srv.wait_delivered(5, timeout=120)
        issues = project_issues(self.double)
        self.assertEqual(len(issues), 5)
        self.assertEqual(marker_ids(issues), ids)  # in the order they were accepted
        self.assertEqual([i["title"] for i in issues], ["Problem number %d" % i for i in range(5)])
        for n, issue in enumerate(issues):
            notes = [x for x in issue_notes(self.double, issue["iid"]) if not x.get("system")]
            self.assertEqual(len(notes), 1)
            self.assertIn("email=c%d@example.com" % n, notes[0]["body"])
        h = srv.health()
        self.assertGreater(h["delivery"]["failures"], 0)
        self.assertEqual(h["delivery"]["dead"], 0)

    def test_gitlab_429_with_retry_after(self):
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "status": 429, "times": 3,
                             "headers": {"Retry-After": "1"}}])
        srv = self.server()
        self.assertEqual(srv.post_json(sub(1)).status, 202)
        srv.wait_delivered(1, timeout=60)
        self.assertEqual(len(project_issues(self.double)), 1)

    def test_an_answer_lost_after_the_issue_was_made_does_not_make_it_twice(self):
        # The double creates the issue, then the answer is cut short: the
        # outcome is uncertain, so the next try must find it instead.
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "truncate": True, "times": 1}])
        srv = self.server()
        sid = srv.post_json(sub(1, email="x@example.com")).json()["id"]
        self.assertEqual(srv.post_json(sub(2)).status, 202)
        h = srv.wait_delivered(2, timeout=60)
        issues = project_issues(self.double)
        self.assertEqual(len(issues), 2, [i["title"] for i in issues])
        self.assertEqual(marker_ids(issues)[0], sid)
        self.assertEqual(h["delivery"]["found_after_retry"], 1)
        notes = [x for x in issue_notes(self.double, issues[0]["iid"]) if not x.get("system")]
        self.assertEqual(len(notes), 1)

    def test_restart_while_gitlab_still_works_on_the_create(self):
        # Killed while the create is on its way, restarted before GitLab has
        # finished it: the restarted server lets it settle, then finds it.
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "delay_ms": 2500, "times": 1}])
        srv = self.server()
        sid = srv.post_json(sub(1)).json()["id"]
        time.sleep(0.8)
        srv.kill()
        srv2 = self.server()
        self.assertEqual(project_issues(self.double), [])  # still being made
        h = srv2.wait_delivered(1, timeout=60)
        issues = project_issues(self.double)
        self.assertEqual(marker_ids(issues), [sid])
        self.assertEqual(h["delivery"]["found_after_retry"], 1)

    def test_restart_mid_delivery_is_exactly_once(self):
        # GitLab is slow to answer the first create; the server is killed while
        # waiting, GitLab still makes the issue; after the restart the item is
        # found, not made again, and the rest follows in order.
        # The double answers after 2 s; the server's HTTP timeout (and so the
        # time it lets an unanswered create settle) is 3 s (lib/intake.py).
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "delay_ms": 2000, "times": 1}])
        srv = self.server()
        ids = [srv.post_json(sub(i, email="r%d@example.com" % i)).json()["id"] for i in range(3)]
        time.sleep(1.0)  # the first create is on its way
        self.assertEqual(srv.health()["delivery"]["delivered"], 0)
        srv.kill()
        deadline = time.time() + 20  # the double finishes the create after its delay
        while time.time() < deadline and not project_issues(self.double):
            time.sleep(0.1)
        self.assertEqual(len(project_issues(self.double)), 1)
        srv2 = self.server()
        h = srv2.wait_delivered(3, timeout=60)
        issues = project_issues(self.double)
        self.assertEqual(marker_ids(issues), ids)
        self.assertEqual(h["delivery"]["found_after_retry"], 1)
        for issue in issues:
            notes = [x for x in issue_notes(self.double, issue["iid"]) if not x.get("system")]
            self.assertEqual(len(notes), 1, issue["title"])

    def test_a_copy_sent_after_a_crash_folds_into_the_delivered_first(self):
        srv = self.server()
        first = srv.post_json(sub(1, email="a@example.com"))
        self.assertEqual(first.status, 202, first)
        srv.wait_delivered(1)
        srv.kill()
        srv2 = self.server()
        again = srv2.post_json(sub(1, email="a@example.com"))
        self.assertEqual(again.status, 202, again)
        self.assertEqual(again.json(), {"id": first.json()["id"], "status": "accepted", "duplicate": True})
        other = srv2.post_json(sub(2))  # not a copy: stored and delivered
        self.assertEqual(other.status, 202, other)
        self.assertNotIn("duplicate", other.json())
        srv2.wait_delivered(1)
        self.assertEqual(marker_ids(project_issues(self.double)), [first.json()["id"], other.json()["id"]])
        self.assertEqual(srv2.stop(), 0)
        self.assertIn("1 submission of the last 600 s remembered from the spool", srv2.output)

    def test_a_copy_sent_after_a_crash_before_delivery_folds_into_the_first(self):
        srv = self.server(deliver=False)
        first = srv.post_json(sub(1)).json()["id"]
        srv.kill()
        srv2 = self.server()
        again = srv2.post_json(sub(1))
        self.assertEqual(again.json(), {"id": first, "status": "accepted", "duplicate": True})
        srv2.wait_delivered(1)
        self.assertEqual(marker_ids(project_issues(self.double)), [first])
        h = srv2.health()
        self.assertEqual((h["accepted"], h["duplicates"]), (0, 1))

    def test_folding_across_a_restart_ends_with_its_window(self):
        self.env["FACTORY_INTAKE_DEDUP_WINDOW_S"] = "1"
        srv = self.server()
        first = srv.post_json(sub(1)).json()["id"]
        srv.wait_delivered(1)
        srv.kill()
        time.sleep(1.2)  # past the window: a copy now is a new submission
        srv2 = self.server()
        again = srv2.post_json(sub(1)).json()
        self.assertNotIn("duplicate", again)
        self.assertNotEqual(again["id"], first)
        srv2.wait_delivered(1)
        self.assertEqual(marker_ids(project_issues(self.double)), [first, again["id"]])

    def test_a_stopped_server_keeps_the_spool_and_deliver_drains_it(self):
        srv = self.server(deliver=False)
        ids = [srv.post_json(sub(i)).json()["id"] for i in range(4)]
        self.assertEqual(srv.health()["delivery"]["state"], "off")
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(project_issues(self.double), [])
        env = job_env(self.double, extra={"FACTORY_INTAKE_SPOOL": self.spool})
        r = run_job("intake", self.double, "deliver", "--dry-run", env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("4 submissions waiting", r.output)
        self.assertEqual(project_issues(self.double), [])
        r = run_job("intake", self.double, "deliver", env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["delivered"], 4)
        self.assertEqual(marker_ids(project_issues(self.double)), ids)
        r = run_job("intake", self.double, "deliver", env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["delivered"], 0)
        self.assertEqual(len(project_issues(self.double)), 4)

    def test_deliver_when_gitlab_stays_down_exits_3_and_keeps_everything(self):
        srv = self.server(deliver=False)
        srv.post_json(sub(1))
        srv.stop()
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "status": 503, "times": -1}])
        env = job_env(self.double, extra={"FACTORY_INTAKE_SPOOL": self.spool, "FACTORY_HTTP_MAX_RETRIES": "1",
                                          "FACTORY_INTAKE_RETRY_MAX_MS": "50"})
        r = run_job("intake", self.double, "deliver", env=env)
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("503", r.output)
        self.double.clear_faults()
        r = run_job("intake", self.double, "deliver", env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(project_issues(self.double)), 1)

    def test_second_server_on_the_same_spool_is_refused(self):
        self.server(deliver=False)
        env = job_env(self.double, extra={"FACTORY_INTAKE_SPOOL": self.spool, "FACTORY_INTAKE_LISTEN": "127.0.0.1:0"})
        r = run_job("intake", self.double, "serve", "--no-deliver", env=env, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("in use", r.output)

    def test_bad_settings_are_usage_errors(self):
        env = job_env(self.double, extra={"FACTORY_INTAKE_SPOOL": self.spool})
        for args, text in ((["serve", "--listen", "nowhere"], "listen"),
                           (["serve", "--listen", "127.0.0.1:99999"], "port"),
                           (["serve", "--rate-limit", "lots"], "intake.rate_limit"),
                           (["serve", "--allowed-origins", "shop.example.com"], "origin"),
                           (["frobnicate"], "unknown command"),
                           ([], "no command")):
            r = run_job("intake", self.double, *args, env=env, timeout=30)
            self.assertEqual(r.returncode, 2, (args, r))
            self.assertIn(text, r.output, args)
        r = run_job("intake", self.double, "serve", env=job_env(self.double), timeout=30)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FACTORY_INTAKE_SPOOL", r.output)


class IntakeCreateTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)

    def test_create_from_flags(self):
        r = run_job("intake", self.double, "create", "--kind", "feature", "--title", "Export to CSV",
                    "--body", "Customers ask for it.\n/close\n@all", "--email", "lead@example.com")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"created issue #\d+ http")
        issues = project_issues(self.double)
        self.assertEqual(len(issues), 1)
        self.assertEqual(sorted(issues[0]["labels"]), ["source::internal", "type::feature"])
        self.assertEqual(issues[0]["state"], "opened")
        self.assertNotIn("lead@example.com", issues[0]["description"])
        self.assertEqual(self.double.mentions(), [])
        notes = [x for x in issue_notes(self.double, issues[0]["iid"]) if not x.get("system")]
        self.assertEqual(len(notes), 1)
        self.assertTrue(notes[0]["internal"])
        self.assertIn("email=lead@example.com -->", notes[0]["body"])

    def test_create_from_pipeline_variables(self):
        env = job_env(self.double, extra={"FEEDBACK_KIND": "support", "FEEDBACK_TITLE": "Cannot log in",
                                          "FEEDBACK_BODY": "Since this morning.", "FEEDBACK_SOURCE": "customer"})
        r = run_job("intake", self.double, "create", env=env)
        self.assertEqual(r.returncode, 0, r)
        issue = project_issues(self.double)[0]
        self.assertEqual(issue["title"], "Cannot log in")
        self.assertEqual(sorted(issue["labels"]), ["source::customer", "type::support"])
        self.assertEqual(r.report["summary"], "filed issue #%d" % issue["iid"])

    def test_create_body_from_a_file_and_dry_run(self):
        with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
            f.write("A long body\nfrom a file.\n")
        self.addCleanup(os.unlink, f.name)
        r = run_job("intake", self.double, "create", "--dry-run", "--kind", "bug", "--title", "t", "--body-file", f.name)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(project_issues(self.double), [])
        r = run_job("intake", self.double, "create", "--kind", "bug", "--title", "t", "--body-file", f.name)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("from a file.", project_issues(self.double)[0]["description"])

    def test_create_refuses_bad_input(self):
        r = run_job("intake", self.double, "create", "--kind", "rant", "--title", "", "--body", "x",
                    "--email", "nope")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("kind: must be one of bug, feature, support, feedback", r.output)
        self.assertIn("title: is required", r.output)
        self.assertIn("email:", r.output)
        r = run_job("intake", self.double, "create", "--kind", "bug", "--title", "x", "--body", "y", "--source", "martians")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(project_issues(self.double), [])

    def test_create_when_gitlab_is_down_exits_3(self):
        self.double.faults([{"path_regex": ISSUES_POST, "method": "POST", "status": 503, "times": -1}])
        env = job_env(self.double, extra={"FACTORY_HTTP_MAX_RETRIES": "1"})
        r = run_job("intake", self.double, "create", "--kind", "bug", "--title", "x", "--body", "y", env=env)
        self.assertEqual(r.returncode, 3, r)


if __name__ == "__main__":
    unittest.main()
