"""factory-implement, phase 1, end to end against the GitLab double: every
stuck case is diagnosed from the Factory's claim (in its notes), the CI job's
state and its trace, and healed as documented in jobs/implement/heal.c, each
heal leaving one note. Phase 2 is switched off here (implement.take=false)
so each test sees phase 1 alone.
"""
import json
import time
import unittest

from lib.double import Double
from lib.factory import gl
from lib.implement import (IN_PROGRESS, NEEDS_INFO, UP_NEXT, VALIDATION, GitView, claim_marker, event_marker,
                           issue, issue_of, labels_of, mrs_of, notes_of, project_seed, run_implement, writes)

HEAL_ONLY = {"FACTORY_IMPLEMENT_TAKE": "false"}
BRANCH = "factory/1-fix-it"


def marker_of(body):
    i = body.rfind("<!-- factory:")
    if i < 0:
        return None, None
    kind, _, rest = body[i + len("<!-- factory:"):].partition(" ")
    return kind, json.loads(rest[:rest.rindex(" -->")])


class HealTest(unittest.TestCase):
    def setUp(self):
        self.d = Double(seed=project_seed(files={"README.md": "# demo\n\nline two\n"}))
        self.addCleanup(self.d.stop)
        self.d.seed({"users": [{"username": "mallory"}]})

    # ---- helpers ----
    def job(self, status="running", failure_reason=None):
        pl = self.d.add_pipeline({"project_id": 1, "ref": "main", "status": "running" if status == "running" else "failed",
                                  "jobs": [{"name": "implement", "stage": "deliver", "status": status}]})
        j = pl["jobs"][0]["id"]
        if failure_reason:
            self.d.set_job(j, failure_reason=failure_reason)
        return pl["id"], j

    def stuck(self, job=0, pipeline=0, lease=3600, attempt=1, author=None, labels=(IN_PROGRESS,), events=()):
        now = int(time.time())
        body = claim_marker("run-a", job=job, pipeline=pipeline, branch=BRANCH, started_at=now - 60,
                            lease_until=now + lease, attempt=attempt)
        notes = [{"body": e} for e in events] + [{"body": body, "author": author} if author else {"body": body}]
        self.d.seed({"issues": [issue("Fix it", "Please fix it.", labels=labels, iid=1, notes=notes)]})
        return [n for n in notes_of(self.d, 1) if "factory:claim" in n["body"]][-1]["id"]

    def trace(self, job, claim_id, *lines):
        text = "Running factory-implement\n"
        for kind, value, why in lines:
            d = {"issue": 1, "claim": claim_id, "run": "run-a", kind: value}
            if why is not None:
                d["why"] = why
            text += "\x1b[0Kfactory:%s %s\r\n" % (kind if kind != "stage" else "stage", json.dumps(d, separators=(",", ":")))
        self.d.set_job(job, trace=text)

    def heal(self, **extra):
        env = dict(HEAL_ONLY)
        env.update(extra)
        r = run_implement(self.d, None, extra=env)
        return r

    def last_event(self):
        notes = [n for n in notes_of(self.d, 1) if n["author"]["username"] == "factory-bot"]
        return notes[-1]["body"], marker_of(notes[-1]["body"])[1]

    # ---- In Progress ----
    def test_running_within_its_lease_is_left_alone(self):
        _, j = self.job("running")
        self.stuck(job=j)
        self.d.clear_requests()
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(labels_of(self.d, 1), [IN_PROGRESS])
        self.assertEqual(r.healed(1)[0]["action"], "left alone")

    def test_running_past_its_lease_is_cancelled_and_retried(self):
        _, j = self.job("running")
        self.stuck(job=j, lease=-30)
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(gl(self.d, "GET", "/projects/1/jobs/%d" % j)["status"], "canceled")
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("retry", "overtime"))
        self.assertIn("ran past its claim's lease", body)
        self.assertIn("attempt 2 of 3", body)

    def test_out_of_budget_is_retried_with_the_diagnosis(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "agent", None), ("outcome", "budget", "max_turns reached (50)"))
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"], ev["ends"], ev["attempt"]), ("retry", "budget", cid, 1))
        self.assertIn("max_turns reached (50)", ev["why"])
        self.assertIn("the agent ran out of its budget", body)

    def test_tool_failures_are_retried(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "agent", None), ("outcome", "tool_failures", "7 of 9 tool calls failed"))
        self.heal()
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("retry", "tool_failures"))
        self.assertIn("tool calls kept failing", body)

    def test_missing_information_is_asked_for(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("outcome", "needs_info", "which page?"))
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [NEEDS_INFO])
        body, ev = self.last_event()
        self.assertEqual(ev["action"], "needs_info")
        self.assertIn("Please add what is missing", body)

    def test_a_cancelled_job_returns_to_up_next_without_counting(self):
        _, j = self.job("canceled")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "agent", None))
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("up_next", "cancelled"))
        self.assertIn("does not count as an attempt", body)

    def test_a_push_that_died_is_retried(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "commit", None), ("stage", "push", None))
        self.heal()
        _, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("retry", "push_failed"))

    def test_a_time_limit_is_retried(self):
        _, j = self.job("failed", failure_reason="job_execution_timeout")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "agent", None))
        self.heal()
        _, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("retry", "timed_out"))

    def test_pushed_work_without_a_merge_request_is_kept(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("stage", "push", None), ("stage", "mr", None))
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": BRANCH, "start_branch": "main", "commit_message": "Fix it\n\nCloses #1\n\nChangelog: fixed\n",
            "actions": [{"action": "update", "file_path": "README.md", "content": "# Demo\n\nline two\n"}]})
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        mrs = mrs_of(self.d)
        self.assertEqual([(m["source_branch"], m["state"]) for m in mrs], [(BRANCH, "opened")])
        self.assertEqual(labels_of(self.d, 1), [VALIDATION])
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["mr"], ev["ends"]), ("validation", mrs[0]["iid"], cid))
        self.assertIn("was pushed with the change", body)

    def test_attempts_run_out_and_a_person_is_asked(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j, attempt=3, events=[event_marker(1, "retry", "budget", 1, why="first"),
                                                    event_marker(2, "retry", "budget", 2, why="second")])
        self.trace(j, cid, ("outcome", "budget", "max_turns reached"))
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [NEEDS_INFO])
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["attempt"]), ("needs_info", 3))
        self.assertIn("gave up after 3 attempts", body)

    def test_a_job_gitlab_forgot_returns_to_up_next(self):
        self.stuck(job=987654)
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        _, ev = self.last_event()
        self.assertEqual((ev["action"], ev["diagnosis"]), ("up_next", "job_gone"))

    def test_a_claim_outside_ci_is_healed_when_its_lease_ends(self):
        self.stuck(job=0, lease=3600)
        r = self.heal()
        self.assertEqual(labels_of(self.d, 1), [IN_PROGRESS])
        self.assertEqual(r.healed(1)[0]["action"], "left alone")
        self.d.reset()
        self.d.seed(project_seed())
        self.stuck(job=0, lease=-1)
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        _, ev = self.last_event()
        self.assertEqual(ev["diagnosis"], "lease_expired")

    def test_no_claim_of_ours_or_a_forged_one_is_left_alone(self):
        _, j = self.job("failed")
        self.stuck(job=j, lease=-100, author="mallory")
        self.d.clear_requests()
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(labels_of(self.d, 1), [IN_PROGRESS])
        self.assertEqual(r.healed(1)[0]["found"], "no claim by the Factory")

    def test_dry_run_heals_nothing(self):
        _, j = self.job("failed")
        cid = self.stuck(job=j)
        self.trace(j, cid, ("outcome", "budget", "x"))
        self.d.clear_requests()
        r = run_implement(self.d, None, "--dry-run", extra=HEAL_ONLY)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(r.healed(1)[0]["action"], "retry")
        self.assertTrue(r.healed(1)[0]["dry_run"])

    # ---- Validation ----
    def make_mr(self, description="Fixes it.\n\nCloses #1\n", content="# Demo\n\nline two\n", branch=BRANCH):
        c = gl(self.d, "POST", "/projects/1/repository/commits",
               {"branch": branch, "start_branch": "main", "commit_message": "Fix it\n\nCloses #1\n",
                "actions": [{"action": "update", "file_path": "README.md", "content": content}]})
        mr = gl(self.d, "POST", "/projects/1/merge_requests",
                {"source_branch": branch, "target_branch": "main", "title": "Fix it", "description": description})
        self.d.seed({"issues": [issue("Fix it", labels=(VALIDATION,), iid=1,
                                      notes=[{"body": event_marker(5, "validation", mr=mr["iid"], branch=branch,
                                                                   sha=c["id"])}])]})
        return mr, c["id"]

    def pipeline(self, sha, status, branch=BRANCH):
        return self.d.add_pipeline({"project_id": 1, "ref": branch, "sha": sha, "status": status,
                                    "jobs": [{"name": "test", "status": status}]})

    def test_passed_pipeline_is_merged_and_the_issue_closed(self):
        mr, sha = self.make_mr()
        pl = self.pipeline(sha, "success")
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["state"], "merged")
        self.assertEqual(issue_of(self.d, 1)["state"], "closed")
        body, ev = self.last_event()
        self.assertEqual((ev["action"], ev["pipeline"]), ("merge", pl["id"]))

    def test_running_pipeline_gets_auto_merge_and_gitlab_merges_later(self):
        mr, sha = self.make_mr()
        pl = self.pipeline(sha, "running")
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        got = gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])
        self.assertEqual((got["state"], got["merge_when_pipeline_succeeds"]), ("opened", True))
        self.assertIn("set auto-merge", self.last_event()[0])
        self.d.clear_requests()
        r = self.heal()  # nothing new to do while it runs
        self.assertEqual([w for w in writes(self.d)], [])
        self.d.set_pipeline(pl["id"], status="success")
        self.assertEqual(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["state"], "merged")
        # (The issue was made after the merge request here, so GitLab did not
        # close it on merge: the next run does.)
        self.heal()
        self.assertEqual(issue_of(self.d, 1)["state"], "closed")
        self.assertEqual(self.last_event()[1]["action"], "closed")

    def test_failed_pipeline_is_handed_back_once(self):
        mr, sha = self.make_mr()
        self.pipeline(sha, "failed")
        self.heal()
        body, ev = self.last_event()
        self.assertEqual(ev["action"], "handback")
        self.assertIn("the pipeline job fixes it", body)
        self.assertEqual(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["state"], "opened")
        self.assertEqual(labels_of(self.d, 1), [VALIDATION])
        n = len(notes_of(self.d, 1))
        self.d.clear_requests()
        self.heal()
        self.assertEqual(len(notes_of(self.d, 1)), n)
        self.assertEqual(writes(self.d), [])

    def test_merged_with_the_issue_still_open_closes_it(self):
        mr, sha = self.make_mr(description="No closing words here.")
        gl(self.d, "PUT", "/projects/1/merge_requests/%d/merge" % mr["iid"], {})
        self.assertEqual(issue_of(self.d, 1)["state"], "opened")
        self.heal()
        self.assertEqual(issue_of(self.d, 1)["state"], "closed")
        self.assertNotIn(VALIDATION, labels_of(self.d, 1))
        self.assertEqual(self.last_event()[1]["action"], "closed")

    def test_closed_without_merge_asks_a_person(self):
        mr, _ = self.make_mr()
        gl(self.d, "PUT", "/projects/1/merge_requests/%d" % mr["iid"], {"state_event": "close"})
        self.heal()
        self.assertEqual(labels_of(self.d, 1), [NEEDS_INFO])
        self.assertIn("closed without being merged", self.last_event()[0])

    def test_people_merge_policy_and_drafts_are_respected(self):
        mr, sha = self.make_mr()
        self.pipeline(sha, "success")
        self.d.clear_requests()
        r = self.heal(FACTORY_IMPLEMENT_MERGE="people")
        self.assertEqual(writes(self.d), [])
        self.assertEqual(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["state"], "opened")
        self.assertIn("left to people", r.healed(1)[0]["action"])
        gl(self.d, "PUT", "/projects/1/merge_requests/%d" % mr["iid"], {"title": "Draft: Fix it"})
        r = self.heal()
        self.assertEqual(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["state"], "opened")
        self.assertIn("draft", r.healed(1)[0]["action"])

    def test_conflicts_are_rebased_onto_the_default_branch(self):
        # The branch: README line 1 to "# Demo", then to "# Demo project". Main took
        # the first change on its own: a merge conflicts, a rebase does not.
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": BRANCH, "start_branch": "main", "commit_message": "first\n\nCloses #1\n",
            "actions": [{"action": "update", "file_path": "README.md", "content": "# Demo\n\nline two\n"}]})
        mr, sha = self.make_mr(content="# Demo project\n\nline two\n")
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": "main", "commit_message": "main takes the title",
            "actions": [{"action": "update", "file_path": "README.md", "content": "# Demo\n\nline two\n"}]})
        self.assertTrue(gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])["has_conflicts"])
        r = self.heal()
        self.assertEqual(r.returncode, 0, r)
        got = gl(self.d, "GET", "/projects/1/merge_requests/%d" % mr["iid"])
        self.assertFalse(got["has_conflicts"])
        v = GitView(self.d)
        self.addCleanup(v.close)
        v.fetch()
        self.assertEqual(v.git("rev-parse", "origin/%s~1" % BRANCH), v.git("rev-parse", "origin/main"))
        self.assertEqual(v.git("show", "origin/%s:README.md" % BRANCH), "# Demo project\n\nline two\n")
        body, ev = self.last_event()
        self.assertEqual(ev["action"], "rebased")
        self.assertIn("1 commit replayed", body)

    def test_conflicts_a_rebase_cannot_resolve_are_reported_once(self):
        mr, sha = self.make_mr(content="# Mine\n\nline two\n")
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": "main", "commit_message": "main changes the title",
            "actions": [{"action": "update", "file_path": "README.md", "content": "# Theirs\n\nline two\n"}]})
        before = gl(self.d, "GET", "/projects/1/repository/branches/%s" % BRANCH.replace("/", "%2F"))["commit"]["id"]
        self.heal()
        self.assertEqual(self.last_event()[1]["action"], "rebase_failed")
        self.assertIn("README.md", self.last_event()[0])
        after = gl(self.d, "GET", "/projects/1/repository/branches/%s" % BRANCH.replace("/", "%2F"))["commit"]["id"]
        self.assertEqual(before, after)
        n = len(notes_of(self.d, 1))
        self.heal()
        self.assertEqual(len(notes_of(self.d, 1)), n)


if __name__ == "__main__":
    unittest.main()
