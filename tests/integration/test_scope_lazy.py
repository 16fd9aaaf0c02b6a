"""factory-implement in a group scope reads a project's .factory.yml only
when it handles one of that project's issues (common/scope.h: scope_load
lists the group, scope_settle reads a file on first use, once a run).

The group `acme` has N projects, each with its own .factory.yml. Two have
issues: `acme/p03` opts out by its file (factory: {enabled: false}) and its
issue is first in Up Next; `acme/p07` sets its own work-in-progress limit.
The job reads exactly those two files (counted in the double's request
log), never works on acme/p03's issue, and takes acme/p07's under
acme/p07's own limit.
"""
import unittest

from lib.double import Double
from lib.factory import gl
from lib.implement import UP_NEXT, VALIDATION, edit_script, issue, project_seed, run_implement
from lib.llm import LLMDouble

N = 12
OUT, WORK = 3, 7
FILE = "/repository/files/.factory.yml"


class LazyScopeTest(unittest.TestCase):
    def setUp(self):
        self.d = Double(seed=project_seed())
        self.addCleanup(self.d.stop)
        self.llm = LLMDouble().start()
        self.addCleanup(self.llm.stop)
        files = {k: "triage:\n  wip_limit: %d\n" % (k + 1) for k in range(N)}
        files[OUT] = "factory:\n  enabled: false\n"
        files[WORK] = "implement:\n  wip_limit: 3\n"
        self.ids = self.d.seed({"groups": ["acme"], "projects": [
            {"path_with_namespace": "acme/p%02d" % k, "default_branch": "main",
             "files": {"README.md": "# demo\n", ".factory.yml": files[k]}} for k in range(N)]})["projects"]
        self.assertEqual(len(set(self.ids)), N)
        self.d.seed({"issues": [
            issue("Opted out by its file", iid=1, position=10) | {"project_id": self.ids[OUT]},
            issue("Do the work", iid=1, position=20) | {"project_id": self.ids[WORK]},
        ]})
        self.extra = {"FACTORY_PROJECT": None, "FACTORY_SCOPE": "group:acme"}

    def file_reads(self):
        """Project id -> number of GET .../files/.factory.yml requests."""
        got = {}
        for r in self.d.requests():
            if r["method"] == "GET" and FILE in r["path"]:
                pid = int(r["path"].split("/projects/")[1].split("/")[0])
                got[pid] = got.get(pid, 0) + 1
        return got

    def untouched(self):
        out = self.ids[OUT]
        self.assertEqual([r for r in self.d.requests() if r["method"] != "GET" and "/projects/%d/" % out in r["path"]],
                         [])
        self.assertEqual(gl(self.d, "GET", "/projects/%d/issues/1/notes" % out), [])
        self.assertEqual(gl(self.d, "GET", "/projects/%d/issues/1" % out)["labels"], [UP_NEXT])

    def test_only_the_files_of_the_projects_worked_on(self):
        self.llm.load(edit_script("README.md", "# demo", "# Demo"))
        self.d.clear_requests()
        r = run_implement(self.d, self.llm, extra=self.extra)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(r.data.get("merge_request"), r.report.get("summary"))
        self.assertEqual(r.data.get("project"), "acme/p%02d" % WORK)
        self.assertEqual(r.counters.get("projects"), N)
        # Two files of twelve, each read once: the opted-out project's (its
        # issue came first) and the one worked on.
        self.assertEqual(self.file_reads(), {self.ids[OUT]: 1, self.ids[WORK]: 1})
        self.assertIn(VALIDATION, gl(self.d, "GET", "/projects/%d/issues/1" % self.ids[WORK])["labels"])
        self.assertIn("acme/p%02d/.factory.yml" % OUT, r.stderr)
        self.untouched()

        # The next run heals Validation (acme/p07's issue) and finds nothing
        # else to take: the same two files, once each, and acme/p03 is still
        # left alone.
        self.d.clear_requests()
        r = run_implement(self.d, self.llm, extra=self.extra)
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(r.data.get("merge_request"))
        self.assertEqual(self.file_reads(), {self.ids[OUT]: 1, self.ids[WORK]: 1})
        self.untouched()

    def test_the_projects_own_limit_is_read_with_its_file(self):
        # acme/p07 allows 3 In Progress; put 3 there already: its issue is
        # passed over, so the limit came from its file (the job sets none).
        self.d.seed({"issues": [issue("Busy %d" % i, iid=10 + i, labels=("workflow::in progress",))
                                | {"project_id": self.ids[WORK]} for i in range(3)]})
        self.llm.load(edit_script("README.md", "# demo", "# Demo"))
        self.d.clear_requests()
        r = run_implement(self.d, self.llm, extra=dict(self.extra, FACTORY_IMPLEMENT_LEASE_S="3600"))
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(r.data.get("merge_request"), r.report.get("summary"))
        self.assertEqual(r.counters.get("wip_skipped"), 1, r.counters)
        self.assertNotIn(self.ids[WORK], [p for p in self.file_reads() if self.file_reads()[p] > 1])
        self.assertEqual(set(self.file_reads()), {self.ids[OUT], self.ids[WORK]})
        self.untouched()


if __name__ == "__main__":
    unittest.main()
