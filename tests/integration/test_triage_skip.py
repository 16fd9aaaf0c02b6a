"""factory-triage leaves out the Factory's own bookkeeping issues (the
pipeline job's failure ledger, or any label named in triage.skip_labels)."""
import unittest

from lib.double import Double
from lib.factory import gl, job_env, run_job


class SkipTest(unittest.TestCase):
    def test_ledger_and_configured_labels_are_left_alone(self):
        with Double() as d:
            d.seed({"issues": [
                {"project_id": 1, "title": "Factory: CI failure ledger", "description": "{}",
                 "labels": ["factory::ledger"]},
                {"project_id": 1, "title": "Checkout crashes with a 500 error", "description": "every time",
                 "labels": []},
                {"project_id": 1, "title": "Team notes", "description": "crash crash 500", "labels": ["notes"]},
            ]})
            r = run_job("triage", d, "--no-llm", env=job_env(d, extra={"FACTORY_TRIAGE_SKIP_LABELS": "factory::ledger,notes"}))
            self.assertEqual(r.returncode, 0, r)
            issues = {i["title"]: i for i in gl(d, "GET", "/projects/1/issues?per_page=100")}
            self.assertEqual(issues["Factory: CI failure ledger"]["labels"], ["factory::ledger"])
            self.assertEqual(issues["Team notes"]["labels"], ["notes"])
            self.assertIn("type::bug", issues["Checkout crashes with a 500 error"]["labels"])
            # by default only the ledger is left out
            r = run_job("triage", d, "--no-llm")
            self.assertEqual(r.returncode, 0, r)
            issues = {i["title"]: i for i in gl(d, "GET", "/projects/1/issues?per_page=100")}
            self.assertEqual(issues["Factory: CI failure ledger"]["labels"], ["factory::ledger"])
            self.assertIn("triage::factory", issues["Team notes"]["labels"])


if __name__ == "__main__":
    unittest.main()
