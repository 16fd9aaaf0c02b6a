"""Issue-creation spacing (common/gitlab.h, gitlab.issues_per_minute) against
the GitLab double's application limit on issue creation.

GitLab limits issue creation per user and project (200 a minute on
GitLab.com) and answers 429 past it without RateLimit-* headers, so a job
cannot see it coming. factory-intake serve delivers a burst of submissions
as fast as it can: without spacing the double's limit answers 429; with
gitlab.issues_per_minute set below the limit, no 429 at all and every
submission becomes one issue. To keep the test short the double's window
is 6 seconds holding 2 issues (the rate of 20 a minute) and the job spaces
to 19 a minute (3.2 s apart): GitLab's window is a minute, the same rule.
"""
import re
import shutil
import tempfile
import unittest

from lib.double import Double
from lib.intake import IntakeServer, project_issues

SUBMISSIONS = 4


class IssueSpacingTest(unittest.TestCase):
    def setUp(self):
        self.d = Double()
        self.addCleanup(self.d.stop)
        self.spool = tempfile.mkdtemp(prefix="spacing-spool-")
        self.addCleanup(shutil.rmtree, self.spool, True)
        self.d.set_limits(issues_per_minute=2, app_window=6)

    def deliver(self, extra):
        env = {"FACTORY_INTAKE_RATE_LIMIT": "0", "FACTORY_HTTP_RETRY_BUDGET_MS": "60000",
               "FACTORY_HTTP_MAX_RETRIES": "20"}
        env.update(extra)
        self.d.clear_requests()
        with IntakeServer(self.d, self.spool, env=env) as srv:
            for k in range(SUBMISSIONS):
                r = srv.post_json({"kind": "bug", "title": "Crash number %d" % k,
                                   "description": "It crashed (%d)." % k})
                self.assertEqual(r.status, 202, r)
            srv.wait_delivered(SUBMISSIONS, timeout=120)
        return [r for r in self.d.requests()
                if r["method"] == "POST" and re.fullmatch(r"/api/v4/projects/[^/]+/issues", r["path"])]

    def test_without_spacing_the_limit_answers_429(self):
        creates = self.deliver({})
        self.assertGreater(sum(1 for r in creates if r["status"] == 429), 0, creates)
        # Retried until delivered: still one issue per submission.
        self.assertEqual(len([i for i in project_issues(self.d) if i["title"].startswith("Crash number")]),
                         SUBMISSIONS)

    def test_spacing_keeps_under_the_limit(self):
        creates = self.deliver({"FACTORY_GITLAB_ISSUES_PER_MINUTE": "19"})
        self.assertEqual([r["status"] for r in creates], [201] * SUBMISSIONS, creates)
        self.assertEqual(len([i for i in project_issues(self.d) if i["title"].startswith("Crash number")]),
                         SUBMISSIONS)


if __name__ == "__main__":
    unittest.main()
