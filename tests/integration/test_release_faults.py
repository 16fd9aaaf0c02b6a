"""factory-release when things fail half-way: GitLab errors injected with the
double's faults API in the middle of telling customers, the release's answer
lost, the job killed while a note is in flight, a mail server that says "try
later" or refuses an address, a chat webhook that fails, GitLab down before
anything is written, a marker that does not parse. Each time the next run
finishes the release, and nobody is told twice."""
import os
import signal
import subprocess
import time
import unittest

from integration.release_world import World
from lib.factory import binary, check_sanitizers

NOTES = r"/issues/\d+/notes$"


class ResumeTest(unittest.TestCase):
    def setUp(self):
        self.w = World(self)
        self.w.build_first_release()

    def assert_told_once(self):
        """The end state of one clean run: one release, one changelog commit,
        one note per customer-facing issue, one email per reporter, one post."""
        w = self.w
        rels = w.releases()
        self.assertEqual([r["tag_name"] for r in rels], ["v0.1.0"])
        self.assertIn("state=done webhook=1", rels[0]["description"])
        self.assertEqual(len(w.changelog_commits()), 1)
        self.assertEqual(w.file("CHANGELOG.md").count("## 0.1.0"), 1)
        for iid in (1, 2, 3, 5, 8, 11):
            self.assertEqual(len(w.announce_notes(iid, "0.1.0")), 1, iid)
        for iid in (4, 10):
            self.assertEqual(w.announce_notes(iid, "0.1.0"), [], iid)
        for iid in (1, 2, 3, 8):
            self.assertEqual(len(w.mailed_notes(iid, "0.1.0")), 1, iid)
        got = sorted(a.lower() for m in w.sink.messages() if not m.dropped for a in m.rcpt_to)
        self.assertEqual(got, ["bob@example.org", "carol@example.net", "jane@example.com"])
        self.assertEqual(len([p for p in w.hook.posts()]), 1)
        for iid in (1, 2, 3, 5, 8, 11):
            self.assertIn("release::customer-facing", w.issue(iid)["labels"])

    def test_gitlab_error_while_announcing_then_resume(self):
        w = self.w
        w.double.faults([{"method": "POST", "path_regex": NOTES, "status": 500, "after": 2, "times": 1}])
        r = w.release()
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("500", r.stderr)
        rel = w.releases()[0]
        self.assertIn("state=publishing webhook=0", rel["description"], "not finished")
        self.assertEqual(w.sink.messages(), [], "stopped before the emails")
        self.assertEqual(w.hook.posts(), [])
        w.double.clear_faults()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("finished release v0.1.0", r.report["summary"])
        self.assertTrue(r.report["data"]["resumed"])
        kinds = [a["kind"] for a in r.report["actions"]]
        self.assertEqual(kinds.count("release.create"), 0)
        self.assertEqual(kinds.count("commit"), 0, "the changelog was already committed")
        self.assertEqual(kinds.count("issue.label"), 0, "labels were already set")
        self.assertEqual(kinds.count("note.create"), 4, "the two notes made before the fault are not made again")
        self.assert_told_once()
        # and then nothing at all
        w.double.clear_requests()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [])

    def test_lost_answer_to_the_release_then_resume(self):
        w = self.w
        w.double.faults([{"method": "POST", "path_regex": r"/releases$", "truncate": True, "times": 1}])
        r = w.release()
        self.assertEqual(r.returncode, 3, r)
        self.assertEqual(len(w.releases()), 1, "GitLab made it; the job never heard")
        self.assertEqual(w.changelog_commits(), [])
        w.double.clear_faults()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assert_told_once()

    def test_killed_while_a_note_is_in_flight(self):
        w = self.w
        w.double.faults([{"method": "POST", "path_regex": NOTES, "delay_ms": 2500, "after": 2, "times": 1}])
        env = w.env()
        env["FACTORY_REPORT_DIR"] = w.report_dir
        proc = subprocess.Popen([binary("release")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            posted = [q for q in w.double.requests() if q["method"] == "POST" and q["path"].endswith("/notes")]
            if len(posted) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the third note is now waiting in the double
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        time.sleep(2.6)  # the double answers the note the job no longer waits for
        self.assertEqual(w.sink.messages(), [])
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assert_told_once()

    def test_mail_server_says_try_later_then_resume(self):
        w = self.w
        w.sink.tempfail = {"bob@example.org": 100}
        r = w.release()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("1 step failed", r.stderr)
        self.assertIn("451", r.stderr)
        self.assertEqual(sorted(a.lower() for m in w.sink.messages() for a in m.rcpt_to),
                         ["carol@example.net", "jane@example.com"])
        self.assertEqual(len(w.hook.posts()), 1, "the other steps went on")
        self.assertIn("state=publishing webhook=1", w.releases()[0]["description"])
        self.assertEqual(r.report["counters"]["emails_failed"], 1)
        w.sink.tempfail = {}
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["emails_sent"], 1)
        self.assert_told_once()

    def test_one_try_per_address_and_run(self):
        w = self.w
        w.sink.tempfail = {"jane@example.com": 100}
        r = w.release(FACTORY_SMTP_MAX_RETRIES="1")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("1 step failed", r.stderr, "jane reported two issues: still one address, one failure")
        self.assertEqual(r.report["counters"]["emails_failed"], 1)
        rcpts = [l for l in w.sink.log() if l.lower().startswith("rcpt to:<jane@")]
        self.assertEqual(len(rcpts), 2, "one try and one retry, not one per issue")
        w.sink.tempfail = {}
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assert_told_once()

    def test_mail_server_refuses_an_address_for_good(self):
        w = self.w
        w.sink.reject = {"carol@example.net"}
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["emails_refused"], 1)
        notes = w.mailed_notes(8, "0.1.0")
        self.assertEqual(len(notes), 1)
        self.assertTrue(notes[0]["internal"])
        self.assertIn("could not be emailed", notes[0]["body"])
        self.assertIn("550", notes[0]["body"])
        w.sink.reject = set()
        w.double.clear_requests()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [], "a refusal is final: not tried again")
        self.assertEqual(w.emails_to("carol@example.net"), [])

    def test_chat_webhook_fails_then_resume(self):
        w = self.w
        w.hook.statuses = [500]
        r = w.release()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("chat webhook answered 500", r.stderr)
        self.assertIn("state=publishing webhook=0", w.releases()[0]["description"])
        self.assertEqual(len(w.sink.messages()), 3)
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(w.hook.posts()), 2, "one failed post, one good one")
        self.assertEqual(len(w.sink.messages()), 3, "nobody emailed twice")
        self.assertIn("state=done webhook=1", w.releases()[0]["description"])

    def test_chat_webhook_unavailable_is_retried_in_the_run(self):
        w = self.w
        w.hook.statuses = [503, 503]
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(w.hook.posts()), 3)
        self.assertIn("state=done webhook=1", w.releases()[0]["description"])


class FailEarlyTest(unittest.TestCase):
    def test_gitlab_down_before_anything_is_written(self):
        w = World(self)
        w.build_first_release()
        w.double.faults([{"method": "GET", "path_regex": r"/issues\?state=closed", "status": 503, "times": -1}])
        w.double.clear_requests()
        r = w.release()
        self.assertEqual(r.returncode, 3, r)
        self.assertEqual(w.writes(), [])
        self.assertEqual(w.sink.messages(), [])
        self.assertEqual(w.hook.posts(), [])

    def test_a_marker_that_does_not_parse_stops_the_job(self):
        w = World(self)
        w.commit("main", {"x": "y"}, "x")
        w.api("POST", "/projects/1/releases", {
            "tag_name": "v0.1.0", "ref": "main",
            "description": "notes\n<!-- factory-release v1 version=0.1.0 state=sideways -->\n"})
        w.double.seed({"issues": [{"project_id": 1, "title": "x", "labels": ["type::bug"], "state": "closed"}]})
        w.settle()
        w.double.clear_requests()
        r = w.release()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("release v0.1.0: its factory-release marker does not parse", r.stderr)
        self.assertEqual(w.writes(), [])

    def test_someone_elses_release_on_the_tag(self):
        w = World(self)
        w.commit("main", {"x": "y"}, "x")
        w.api("POST", "/projects/1/releases", {"tag_name": "v0.9.0", "ref": "main", "description": "by hand",
                                               "released_at": "2000-01-01T00:00:00Z"})
        w.double.seed({"issues": [{"project_id": 1, "title": "x", "labels": ["type::bug"], "state": "closed"}]})
        w.settle()
        r = w.release("--release-version", "0.9.0")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("not after the last release v0.9.0", r.stderr)
        w.api("DELETE", "/projects/1/releases/v0.9.0")
        w.api("POST", "/projects/1/releases", {"tag_name": "v1.0.0", "ref": "main", "description": "by hand",
                                               "released_at": "2000-01-01T00:00:00Z"})
        w.api("POST", "/projects/1/releases", {"tag_name": "v2.0.0", "ref": "main", "description": "by hand too",
                                               "released_at": "1999-01-01T00:00:00Z"})
        r = w.release("--release-version", "2.0.0")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("release v2.0.0 already exists", r.stderr)
        self.assertEqual(w.sink.messages(), [])


class ProtectedBranchTest(unittest.TestCase):
    def test_a_changelog_that_cannot_be_pushed_is_said_clearly(self):
        w = World(self)
        w.build_first_release()
        w.double.protect_branch(1, "main")
        r = w.release()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("committing the changelog", r.stderr)
        self.assertIn("release.changelog to false", r.stderr)
        self.assertEqual(len(w.sink.messages()), 3, "the customers are told anyway")
        self.assertIn("state=publishing", w.releases()[0]["description"])
        # with the changelog off, the next run finishes the release and tells nobody twice
        r = w.release(FACTORY_RELEASE_CHANGELOG="false")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("state=done", w.releases()[0]["description"])
        self.assertEqual(len(w.sink.messages()), 3)
        self.assertEqual(len(w.hook.posts()), 1)


if __name__ == "__main__":
    unittest.main()
