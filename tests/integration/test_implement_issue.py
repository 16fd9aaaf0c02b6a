"""factory-implement --issue N / FACTORY_ISSUE=N, end to end against the
GitLab double: a person asks for one issue and phase 2 takes that one
instead of the top of Up Next, through the same claim as any take.

Taken: an issue lower in Up Next (the top untouched), an issue in Open
(labels moved, the no-change label of an earlier run gone), an issue of one
project of a group scope named as path#N. Refused with exit 1, the reason,
and nothing written: In Progress under another job's live claim, a claim
another job made a moment ago, closed, missing (404), the ledger, in
Validation, needs info, a work-in-progress limit reached. Refused with
exit 2 before any request: values that are not an issue number, a bare
number in a group scope, the setting in the file, two variables that
disagree, a project that is not the job's, implement.take=false. A dry run
writes nothing.
"""
import os
import tempfile
import time
import unittest

from lib.double import Double
from lib.implement import (IN_PROGRESS, NEEDS_INFO, NO_CHANGE, UP_NEXT, VALIDATION, claim_marker, edit_script,
                           issue, labels_of, mrs_of, notes_of, project_seed, run_implement, writes)
from lib.llm import LLMDouble

ISSUES = [issue("Top of the queue", iid=1, position=10),
          issue("Second in the queue", iid=2, position=20),
          issue("Capitalise the README title", iid=3, position=30)]


def live_claim(run="other-run", job=0, branch="factory/x", started=None, lease=3600):
    now = int(time.time())
    started = now - 30 if started is None else started
    return {"body": claim_marker(run, job=job, branch=branch, started_at=started, lease_until=now + lease)}


class RequestedIssueTest(unittest.TestCase):
    def start(self, issues=ISSUES, extra=None):
        self.d = Double(seed=project_seed(issues=issues, extra=extra))
        self.addCleanup(self.d.stop)

    def refused(self, value, why, extra=None, code=1, name="FACTORY_ISSUE", llm=None, args=()):
        """Run with `name`=`value`: exit `code`, `why` in the message, nothing written."""
        self.d.clear_requests()
        env = {name: value}
        env.update(extra or {})
        r = run_implement(self.d, llm, *args, extra=env)
        self.assertEqual(r.returncode, code, r)
        self.assertIn(why, r.stderr, r)
        self.assertEqual(writes(self.d), [], r)
        return r

    def test_takes_the_issue_asked_for_not_the_top(self):
        self.start()
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra={"FACTORY_ISSUE": "3"})
            self.assertEqual(llm.failures(), [])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual((r.data["issue"], r.data["requested_issue"]), (3, 3))
        mrs = mrs_of(self.d)
        self.assertEqual([m["source_branch"] for m in mrs], ["factory/3-capitalise-the-readme-title"])
        self.assertIn("Closes #3", mrs[0]["description"])
        self.assertEqual(labels_of(self.d, 3), [VALIDATION])
        for top in (1, 2):
            self.assertEqual(labels_of(self.d, top), [UP_NEXT])
            self.assertEqual(notes_of(self.d, top), [])

    def test_an_open_issue_is_taken_and_loses_its_no_change_label(self):
        self.start(ISSUES[:2] + [issue("Capitalise the README title", iid=4, labels=(NO_CHANGE, "type::bug"))])
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, "--issue", "#4")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.data["issue"], 4)
        self.assertEqual(sorted(labels_of(self.d, 4)), sorted([VALIDATION, "type::bug"]))
        self.assertEqual([m["source_branch"] for m in mrs_of(self.d)], ["factory/4-capitalise-the-readme-title"])
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])

    def test_in_progress_under_a_live_claim_is_refused(self):
        pl = None
        self.start(ISSUES)
        pl = self.d.add_pipeline({"project_id": 1, "ref": "main", "status": "running",
                                  "jobs": [{"name": "implement", "stage": "deliver", "status": "running"}]})
        job = pl["jobs"][0]["id"]
        self.d.seed({"issues": [issue("Being worked on", iid=5, labels=(IN_PROGRESS,),
                                      notes=[live_claim(job=job, branch="factory/5-being-worked-on")])]})
        before = notes_of(self.d, 5)
        r = self.refused("5", "issue #5 of factory/demo is not taken: it is In Progress, claimed by run other-run")
        self.assertIn("factory-implement: FACTORY_ISSUE=5:", r.stderr)
        self.assertEqual(labels_of(self.d, 5), [IN_PROGRESS])
        self.assertEqual(notes_of(self.d, 5), before)
        self.assertEqual(mrs_of(self.d), [])

    def test_a_claim_made_a_moment_ago_by_another_job_wins(self):
        # Another job claimed it and has not moved the labels yet: the same
        # claim path as a queued take backs off, and says so.
        self.start(ISSUES[:2] + [issue("Just claimed", iid=3, position=30, notes=[live_claim(run="run-b")])])
        with LLMDouble([]) as llm:
            self.refused("3", "another job claimed it a moment ago (run run-b", llm=llm)
            self.assertEqual(llm.requests(), [])
        self.assertEqual(labels_of(self.d, 3), [UP_NEXT])

    def test_closed_missing_ledger_validation_needs_info_are_refused(self):
        self.start(ISSUES + [issue("Done already", iid=6, labels=(), state="closed"),
                             issue("Factory ledger", iid=7, labels=("factory::ledger",)),
                             issue("Waiting for its pipeline", iid=8, labels=(VALIDATION,)),
                             issue("Unclear", iid=9, labels=(NEEDS_INFO,))])
        with LLMDouble([]) as llm:
            self.refused("6", "issue #6 of factory/demo is not taken: it is closed", llm=llm)
            self.refused("99", "FACTORY_ISSUE=99: there is no issue #99 in factory/demo", llm=llm)
            self.refused("7", "one of the Factory's own issues", llm=llm)
            self.refused("8", "it is in Validation", llm=llm)
            self.refused("9", "it is labelled workflow::needs info", llm=llm)
            self.assertEqual(llm.requests(), [])
        self.assertEqual(labels_of(self.d, 6), [])
        self.assertEqual(notes_of(self.d, 7), [])

    def test_the_work_in_progress_limit_holds(self):
        self.start(ISSUES + [issue("Being worked on", iid=5, labels=(IN_PROGRESS,), notes=[live_claim()])])
        r = self.refused("3", "the work-in-progress limit is reached (1 In Progress in the project, "
                              "implement.wip_limit 1: raise FACTORY_IMPLEMENT_WIP_LIMIT",
                         extra={"FACTORY_IMPLEMENT_WIP_LIMIT": "1"})
        self.refused("3", "the group's work-in-progress limit is reached (1 In Progress, implement.group_wip_limit 1",
                     extra={"FACTORY_IMPLEMENT_WIP_LIMIT": "2", "FACTORY_IMPLEMENT_GROUP_WIP_LIMIT": "1"})
        self.assertEqual(labels_of(self.d, 3), [UP_NEXT])
        self.assertIn("#3 not taken", r.report.get("summary", ""))

    def test_bad_values_exit_2_before_any_request(self):
        self.start()
        for value in ("abc", "0", "-3", "#", "1.5", "3 4", "x#", "/x#3", "a//b#3", "99999999999", "3#",
                      "factory/demo#abc"):
            r = self.refused(value, "bad setting FACTORY_ISSUE=", code=2)
            self.assertEqual(self.d.requests(), [], value)
        r = self.refused("abc", "bad setting --issue=abc", code=2, args=("--issue", "abc"))
        r = self.refused("x", "bad setting FACTORY_IMPLEMENT_ISSUE=x", code=2, name="FACTORY_IMPLEMENT_ISSUE")
        r = self.refused("2", "FACTORY_ISSUE=2 and FACTORY_IMPLEMENT_ISSUE=3 ask for different issues", code=2,
                         extra={"FACTORY_IMPLEMENT_ISSUE": "3"})
        r = self.refused("3", "FACTORY_ISSUE=3 asks for an issue to be taken, but implement.take is false",
                         code=2, extra={"FACTORY_IMPLEMENT_TAKE": "false"})
        r = self.refused("3", "in a group scope an issue number is ambiguous: name its project, "
                              "FACTORY_ISSUE=path/to/project#3", code=2,
                         extra={"FACTORY_SCOPE": "group:factory", "FACTORY_PROJECT": None})
        self.assertEqual(self.d.requests(), [])
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write("implement:\n  issue: 3\n")
        self.addCleanup(os.unlink, f.name)
        r = self.refused("", "implement.issue is set in the settings file", code=2, args=("--config", f.name))
        self.assertEqual(self.d.requests(), [])
        # A project that is not the job's: known once the project is read.
        r = self.refused("other/project#3", "FACTORY_ISSUE=other/project#3 names the project other/project, but "
                                            "this job works on factory/demo", code=2)

    def test_dry_run_and_the_forms_of_the_value(self):
        self.start()
        for name, value in (("FACTORY_ISSUE", "3"), ("FACTORY_ISSUE", " #3 "), ("FACTORY_ISSUE", "factory/demo#3"),
                            ("FACTORY_IMPLEMENT_ISSUE", "Factory/Demo#3")):
            self.d.clear_requests()
            with LLMDouble([]) as llm:
                r = run_implement(self.d, llm, "--dry-run", extra={name: value, "FACTORY_IMPLEMENT_ISSUE" if
                                                                   name == "FACTORY_ISSUE" else "FACTORY_ISSUE": None})
                self.assertEqual(llm.requests(), [])
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(r.data["issue"], 3, value)
            self.assertIn("would claim #3", r.stderr)
            self.assertEqual(writes(self.d), [])
        self.assertEqual(labels_of(self.d, 3), [UP_NEXT])
        self.assertEqual(notes_of(self.d, 3), [])
        # The flag wins over the variables, and agreeing variables are fine.
        with LLMDouble([]) as llm:
            r = run_implement(self.d, llm, "--dry-run", "--issue", "2",
                              extra={"FACTORY_ISSUE": "3", "FACTORY_IMPLEMENT_ISSUE": "3"})
        self.assertEqual((r.returncode, r.data.get("issue")), (0, 2), r)

    def test_group_scope_takes_path_and_number(self):
        self.d = Double(seed=project_seed(issues=()))
        self.addCleanup(self.d.stop)
        ids = self.d.seed({"projects": [{"path_with_namespace": "acme/svc%d" % k,
                                         "files": {"README.md": "# demo\n"}} for k in range(2)]})["projects"]
        self.d.seed({"issues": [issue("Capitalise the README title", iid=1, position=10) | {"project_id": pid}
                                for pid in ids]})
        group = {"FACTORY_SCOPE": "group:acme", "FACTORY_PROJECT": None}
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra=dict(group, FACTORY_ISSUE="acme/svc1#1"))
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual((r.data["project"], r.data["issue"]), ("acme/svc1", 1))
        self.assertEqual(len(mrs_of(self.d, ids[1])), 1)
        self.assertEqual(mrs_of(self.d, ids[0]), [])
        self.assertEqual(labels_of(self.d, 1, ids[0]), [UP_NEXT])
        self.refused("acme/nope#1", "acme/nope is not a project of the group acme", extra=group, code=2)


if __name__ == "__main__":
    unittest.main()
