"""factory-implement, phase 2, end to end: the GitLab double serving the
project's git over HTTP, the LLM double playing the agent's model.

An issue asking for a small change yields the branch, a commit holding
exactly that change (author, committer, Closes #N, Changelog trailer), a
merge request in the double and the labels moved; the agent is given the
issue, its comments, referenced issues and the repository's guidance as
data; an empty diff gets no commit; an agent that runs out of budget is
healed at once; a rejected push recovers; a server refusal (protected
branch) is reported; direct delivery happens only when the project's checks
pass; a dry run writes nothing; the token stays out of the clone and the
output.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from lib.double import Double
from lib.factory import gl
from lib.implement import (IN_PROGRESS, NEEDS_INFO, NO_CHANGE, UP_NEXT, VALIDATION, GitView, edit_script, issue,
                           issue_of, labels_of, mrs_of, notes_of, project_seed, run_implement, writes)
from lib.llm import LLMDouble, call, finish, turn

FILES = {
    "README.md": "# demo\n\nThe demo project.\n",
    "AGENTS.md": "Agents: run `sh test.sh` before you finish.\n",
    "CONTRIBUTING.md": "Keep lines under 80 columns.\n",
    "src/app.txt": "hello\n",
    "test.sh": "#!/bin/sh\ngrep -q Demo README.md\n",
}


def marker_of(body):
    i = body.rfind("<!-- factory:")
    if i < 0:
        return None, None
    kind, _, rest = body[i + len("<!-- factory:"):].partition(" ")
    return kind, json.loads(rest[:rest.rindex(" -->")])


class TakeTest(unittest.TestCase):
    def start(self, issues, files=FILES, extra_seed=None):
        self.d = Double(seed=project_seed(files=files, issues=issues, extra=extra_seed))
        self.addCleanup(self.d.stop)

    def view(self):
        v = GitView(self.d)
        self.addCleanup(v.close)
        return v

    def test_small_change_gives_branch_commit_mr_and_labels(self):
        self.start([issue("Capitalise the README title", "The title should read Demo.\n\nSee #2 for context.",
                          labels=(UP_NEXT, "type::bug"), iid=1, position=10,
                          notes=[{"body": "Only the first line please.", "author": "alice"}]),
                    issue("Context issue", "Background for the title change.", labels=(), iid=2)])
        self.d.seed({"users": [{"username": "alice"}]})
        expect = {"last_user_contains": "Capitalise the README title"}
        script = edit_script("README.md", "# demo", "# Demo", summary="Capitalised the README title", tested=True,
                             expect=expect)
        with LLMDouble(script) as llm:
            r = run_implement(self.d, llm)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(llm.failures(), [], r)
            first = llm.requests()[0]["body"]
        task = json.dumps(first["messages"][0])
        for needle in ("The title should read Demo", "Only the first line please", "alice", "#2 Context issue",
                       "Background for the title change", "AGENTS.md", "run `sh test.sh`", "CONTRIBUTING.md",
                       "README.md"):
            self.assertIn(needle, task, needle)
        self.assertIn("data written by other people", json.dumps(first["system"]))

        branch = "factory/1-capitalise-the-readme-title"
        self.assertEqual(r.data["branch"], branch)
        self.assertEqual(labels_of(self.d, 1), sorted([VALIDATION, "type::bug"]))
        mrs = mrs_of(self.d)
        self.assertEqual(len(mrs), 1)
        mr = mrs[0]
        self.assertEqual((mr["source_branch"], mr["target_branch"], mr["state"]), (branch, "main", "opened"))
        self.assertEqual(mr["title"], "Capitalise the README title")
        for needle in ("## What changed", "Capitalised the README title", "`README.md` M +1 -1", "## What was tested",
                       "says it tested the change", "## Cost", "claude-sonnet-4-5", "Cost: $", "Closes #1"):
            self.assertIn(needle, mr["description"], needle)

        v = self.view()
        v.fetch()
        self.assertEqual(v.git("diff", "--name-only", "origin/main", "origin/" + branch).split(), ["README.md"])
        diff = v.git("diff", "origin/main", "origin/" + branch)
        self.assertIn("-# demo\n+# Demo\n", diff)
        self.assertEqual(v.git("rev-list", "--count", "origin/main..origin/" + branch).strip(), "1")
        log = v.git("log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "origin/" + branch).strip()
        self.assertEqual(log, "Factory Bot <factory-bot@example.invalid>|Factory Bot <factory-bot@example.invalid>|"
                              "Capitalise the README title")
        body = v.git("log", "-1", "--format=%B", "origin/" + branch)
        self.assertIn("\n\nCloses #1\n", body)
        self.assertEqual(v.git("log", "-1", "--format=%(trailers:key=Changelog,valueonly)",
                               "origin/" + branch).strip(), "fixed")

        notes = notes_of(self.d, 1)
        ours = [n for n in notes if n["author"]["username"] == "factory-bot"]
        kinds = [marker_of(n["body"])[0] for n in ours]
        self.assertEqual(kinds, ["claim", "event"])
        ev = marker_of(ours[-1]["body"])[1]
        self.assertEqual((ev["action"], ev["mr"], ev["branch"]), ("validation", mr["iid"], branch))
        self.assertEqual(ev["ends"], ours[0]["id"])
        self.assertIn("merge request !%d" % mr["iid"], ours[-1]["body"])
        self.assertEqual(r.counters["git_pushes"], 1)
        self.assertEqual(r.counters["git_credential_requests"], 2)
        self.assertLessEqual(r.counters["api_requests"], 20)
        for step in ("clone", "agent", "commit", "push", "mr"):
            self.assertIn(step, r.data["timings_ms"])
        self.assertIn('factory:stage {"issue":1', r.stdout)

    def test_draft_policy_opens_a_draft_left_to_people(self):
        self.start([issue("Capitalise", iid=1, labels=(UP_NEXT, "type::feature"))])
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra={"FACTORY_IMPLEMENT_DRAFT": "true"})
        self.assertEqual(r.returncode, 0, r)
        mr = mrs_of(self.d)[0]
        self.assertEqual((mr["title"], mr["draft"]), ("Draft: Capitalise", True))
        self.assertIn("leaves the merge to people", notes_of(self.d, 1)[-1]["body"])
        v = self.view()
        v.fetch()
        self.assertEqual(v.git("log", "-1", "--format=%(trailers:key=Changelog,valueonly)",
                               "origin/factory/1-capitalise").strip(), "added")

    def test_token_stays_out_of_the_clone_and_output(self):
        self.start([issue("Capitalise", iid=1)])
        work = tempfile.mkdtemp(prefix="impl-keep-")
        os.chmod(work, 0o755)
        self.addCleanup(shutil.rmtree, work, True)
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra={"FACTORY_IMPLEMENT_KEEP_WORKDIR": "true",
                                                  "FACTORY_IMPLEMENT_WORKDIR": work})
        self.assertEqual(r.returncode, 0, r)
        self.assertNotIn(self.d.token, r.output)
        self.assertNotIn(self.d.token, json.dumps(r.report))
        found = []
        for root, _, files in os.walk(work):
            for f in files:
                p = os.path.join(root, f)
                if os.path.islink(p):
                    continue
                with open(p, "rb") as fh:
                    if self.d.token.encode() in fh.read():
                        found.append(p)
        self.assertEqual(found, [])
        cfg = subprocess.run(["git", "config", "--file", os.path.join(work, os.listdir(work)[0], "repo", ".git",
                                                                      "config"), "remote.origin.url"],
                             capture_output=True, text=True).stdout.strip()
        self.assertEqual(cfg, self.d.url + "/factory/demo.git")

    def test_board_order_decides_which_issue(self):
        self.start([issue("Later", iid=1, position=500), issue("First in the list", iid=2, position=-100),
                    issue("Not in Up Next", iid=3, labels=("type::bug",), position=-900)])
        with LLMDouble(edit_script("src/app.txt", "hello", "hi")) as llm:
            r = run_implement(self.d, llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.data["issue"], 2)
        self.assertEqual(labels_of(self.d, 2), [VALIDATION])
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])

    def test_nothing_to_take(self):
        self.start([issue("Backlog", iid=1, labels=("type::bug",))])
        r = run_implement(self.d, None)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["summary"], "nothing to take")
        self.assertEqual(writes(self.d), [])

    def test_a_bad_agent_setting_stops_before_any_claim(self):
        self.start([issue("Capitalise", iid=1)])
        self.d.clear_requests()
        r = run_implement(self.d, None)  # no FACTORY_LLM_MODEL
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("llm.model", r.stderr)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])

    def test_empty_diff_is_not_committed(self):
        self.start([issue("Make the title Demo", iid=1)])
        script = [finish("The README already says what the issue asks; nothing to change.", tested=False,
                         confidence="high")]
        with LLMDouble(script) as llm:
            r = run_implement(self.d, llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(labels_of(self.d, 1), [NO_CHANGE])
        self.assertEqual(mrs_of(self.d), [])
        self.assertEqual(self.view().branches(), ["main"])
        last = notes_of(self.d, 1)[-1]["body"]
        self.assertIn("made no change", last)
        self.assertIn("already says what the issue asks", last)
        self.assertEqual(marker_of(last)[1]["action"], "no_change")
        self.assertEqual(r.counters["git_commits"], 0)
        self.assertEqual(r.counters["git_pushes"], 0)

    def test_needs_information(self):
        self.start([issue("Make it better", iid=1)])
        script = [finish("NEEDS INFO: which page is 'it'? The issue names none.", tested=False, confidence="low")]
        with LLMDouble(script) as llm:
            r = run_implement(self.d, llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(labels_of(self.d, 1), [NEEDS_INFO])
        last = notes_of(self.d, 1)[-1]["body"]
        self.assertIn("information is missing", last)
        self.assertIn("which page is", last)

    def test_agent_out_of_budget_is_healed_at_once(self):
        self.start([issue("Big change", iid=1)])
        script = [turn(calls=[call("read_file", path="README.md")]), turn(calls=[call("read_file", path="AGENTS.md")])]
        with LLMDouble(script) as llm:
            r = run_implement(self.d, llm, extra={"FACTORY_AGENT_MAX_TURNS": "2"})
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        last = notes_of(self.d, 1)[-1]["body"]
        self.assertIn("ran out of its budget", last)
        self.assertIn("attempt 2 of 3", last)
        ev = marker_of(last)[1]
        self.assertEqual((ev["action"], ev["diagnosis"], ev["attempt"]), ("retry", "budget", 1))
        self.assertIn('factory:outcome {"issue":1', r.stdout)
        self.assertEqual(mrs_of(self.d), [])

        # The next run's claim is attempt 2, and the agent is told what the first found.
        expect = {"last_user_contains": "What earlier attempts by the Factory found"}
        with LLMDouble(edit_script("README.md", "# demo", "# Demo", expect=expect)) as llm:
            r2 = run_implement(self.d, llm)
            self.assertEqual(llm.failures(), [])
        self.assertEqual(r2.returncode, 0, r2)
        self.assertEqual(r2.data["attempt"], 2)
        self.assertEqual(labels_of(self.d, 1), [VALIDATION])

    def test_a_rejected_push_is_fetched_rebased_and_retried(self):
        self.start([issue("Capitalise the title", iid=1)])
        branch = "factory/1-capitalise-the-title"
        # Someone pushed to the Factory's branch name before the job could.
        gl(self.d, "POST", "/projects/1/repository/commits",
           {"branch": branch, "start_branch": "main", "commit_message": "a person's commit",
            "actions": [{"action": "create", "file_path": "PERSON.md", "content": "mine\n"}]})
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.counters.get("push_rebases"), 1, r)
        self.assertEqual(r.counters["git_pushes"], 2)
        v = self.view()
        v.fetch()
        log = v.git("log", "--format=%s", "origin/main..origin/" + branch).splitlines()
        self.assertEqual(log, ["Capitalise the title", "a person's commit"])
        self.assertEqual(sorted(v.git("diff", "--name-only", "origin/main", "origin/" + branch).split()),
                         ["PERSON.md", "README.md"])
        self.assertEqual(labels_of(self.d, 1), [VALIDATION])

    def test_a_protected_branch_refusal_is_seen_and_healed(self):
        self.start([issue("Capitalise the title", iid=1)])
        self.d.protect_branch(1, "factory/*")
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("the server refused refs/heads/factory/1-capitalise-the-title", r.stderr)
        self.assertIn("not allowed to push code to protected branches", r.stderr)
        self.assertEqual(self.view().branches(), ["main"])
        self.assertEqual(mrs_of(self.d), [])
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        self.assertEqual(marker_of(notes_of(self.d, 1)[-1]["body"])[1]["diagnosis"], "push_failed")

    def test_dry_run_writes_nothing(self):
        self.start([issue("Capitalise the title", iid=1)])
        self.d.clear_requests()
        with LLMDouble([]) as llm:
            r = run_implement(self.d, llm, "--dry-run")
            self.assertEqual(llm.requests(), [])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(writes(self.d), [])
        self.assertEqual(labels_of(self.d, 1), [UP_NEXT])
        self.assertEqual(notes_of(self.d, 1), [])
        self.assertIn("would claim #1", r.stderr)
        self.assertEqual(r.counters["git_pushes"], 0)
        self.assertEqual(self.view().branches(), ["main"])


class DirectDeliveryTest(unittest.TestCase):
    """implement.delivery=direct: straight to the default branch only for the
    allowed classes and only when the project's checks pass."""

    ENV = {"FACTORY_IMPLEMENT_DELIVERY": "direct", "FACTORY_IMPLEMENT_DIRECT_CLASSES": "type::chore",
           "FACTORY_IMPLEMENT_CHECK_COMMAND": "sh test.sh"}

    def setUp(self):
        self.d = Double(seed=project_seed(files=FILES, issues=[
            issue("Title to Demo", iid=1, labels=(UP_NEXT, "type::chore"), position=1),
            issue("Feature", iid=2, labels=(UP_NEXT, "type::feature"), position=2)]))
        self.addCleanup(self.d.stop)

    def main_sha(self):
        return gl(self.d, "GET", "/projects/1/repository/branches/main")["commit"]["id"]

    def test_checks_pass_push_straight_to_main(self):
        before = self.main_sha()
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra=self.ENV)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.data["delivery"], "direct")
        commit = gl(self.d, "GET", "/projects/1/repository/commits/main")
        self.assertEqual(commit["parent_ids"], [before])
        self.assertIn("Closes #1", commit["message"])
        self.assertIn("Changelog: other", commit["message"])
        self.assertEqual(issue_of(self.d, 1)["state"], "closed")
        self.assertNotIn(IN_PROGRESS, labels_of(self.d, 1))
        self.assertEqual(mrs_of(self.d), [])
        self.assertIn("straight to `main`", notes_of(self.d, 1)[-1]["body"])

    def test_failing_checks_get_no_direct_push(self):
        before = self.main_sha()
        # The change breaks the project's test (README no longer says Demo).
        with LLMDouble(edit_script("README.md", "# demo", "# Broken")) as llm:
            r = run_implement(self.d, llm, extra=self.ENV)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.main_sha(), before, "no direct push")
        self.assertEqual(r.data["delivery"], "merge_request")
        self.assertFalse(r.data["agent"]["checks_passed"])
        mr = mrs_of(self.d)[0]
        self.assertIn("(`sh test.sh`): **failed**", mr["description"])
        self.assertEqual(labels_of(self.d, 1), sorted([VALIDATION, "type::chore"]))

    def test_other_classes_get_a_merge_request(self):
        before = self.main_sha()
        gl(self.d, "PUT", "/projects/1/issues/1", {"remove_labels": UP_NEXT})
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra=self.ENV)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.data["issue"], 2)
        self.assertEqual(self.main_sha(), before)
        self.assertEqual(r.data["delivery"], "merge_request")
        self.assertEqual(mrs_of(self.d)[0]["source_branch"], "factory/2-feature")


class CheckoutTest(unittest.TestCase):
    """The CI checkout's objects are reused when it is complete; a shallow one
    (GitLab's default GIT_DEPTH) is not, since libgit2 cannot deepen it."""

    def setUp(self):
        self.d = Double(seed=project_seed(files=FILES, issues=[issue("Capitalise", iid=1)]))
        self.addCleanup(self.d.stop)
        self.ci = tempfile.mkdtemp(prefix="impl-ci-")
        self.addCleanup(shutil.rmtree, self.ci, True)

    def checkout(self, depth):
        args = ["git", "clone", "-q"] + (["--depth", str(depth)] if depth else []) + [self.d.git_url("factory/demo"),
                                                                                      self.ci + "/p"]
        subprocess.run(args, check=True)
        return self.ci + "/p"

    def test_full_checkout_is_reused(self):
        ci = self.checkout(0)
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra={"CI_PROJECT_DIR": ci})
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("reusing the objects of the CI checkout", r.stderr)
        self.assertEqual(r.counters["git_fetches"], 1)
        self.assertEqual(labels_of(self.d, 1), [VALIDATION])
        # The runner's own checkout is left as it was.
        st = subprocess.run(["git", "-C", ci, "status", "--porcelain"], capture_output=True, text=True).stdout
        self.assertEqual(st, "")

    def test_shallow_checkout_is_cloned_afresh(self):
        ci = self.checkout(1)
        with LLMDouble(edit_script("README.md", "# demo", "# Demo")) as llm:
            r = run_implement(self.d, llm, extra={"CI_PROJECT_DIR": ci})
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("the CI checkout is shallow", r.stderr)
        self.assertEqual(r.counters["git_clones"], 1)
        self.assertEqual(r.counters["git_fetches"], 0)


if __name__ == "__main__":
    unittest.main()
