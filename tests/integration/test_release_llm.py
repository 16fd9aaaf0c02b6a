"""factory-release with a model's second opinion (the LLM double): it is asked
only about changes the rules judged by their type's default, never about
confidential ones; it may flip those verdicts, never a strong one; its plain
line is used when no person wrote a "Release note:"; when it fails, the rules
stand and the release goes on."""
import json
import unittest

from integration.release_world import SECRET_TITLES, World, section
from lib.llm import LLMDouble, call, turn


class ModelTest(unittest.TestCase):
    def setUp(self):
        self.w = World(self)
        self.w.build_first_release()
        commits = self.w.api("GET", "/projects/1/repository/commits?per_page=100")
        self.lint = [c for c in commits if c["title"] == "Bump linter"][0]["id"][:8]
        self.dark = [c for c in commits if c["title"] == "Add dark mode"][0]["id"][:8]

    def run_with(self, llm, provider="anthropic"):
        self.w.extra.update(llm.env(provider))
        return self.w.release()

    def test_second_opinion_on_weak_verdicts_only(self):
        answer = {"changes": [
            {"key": "#11", "customer_facing": False, "summary": "A typo was fixed.",
             "reason": "a typo fix nobody notices"},
            {"key": "#2", "customer_facing": True, "summary": "Signing in with single sign-on works again.",
             "reason": "users log in"},
            {"key": "@" + self.lint, "customer_facing": True, "summary": "Code checks were updated.",
             "reason": "maybe visible"},
            {"key": "#1", "customer_facing": False, "summary": "x", "reason": "not asked about this one"},
            {"key": "#3", "customer_facing": False, "summary": "x", "reason": "nor this"},
        ]}
        with LLMDouble(script=[turn(calls=[call("release_assessment", **answer)])]) as llm:
            r = self.run_with(llm)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(llm.failures(), [])
            reqs = llm.requests()
            self.assertEqual(len(reqs), 1)
            sent = json.dumps(reqs[0]["body"])
        # asked about the weak ones, nothing confidential, nothing decided by a label
        for key in ("## #2 ", "## #5 ", "## #11 ", "## @" + self.lint, "## @" + self.dark):
            self.assertIn(key, sent)
        for key in ("## #1 ", "## #3 ", "## #4 ", "## #8 ", "## #10 "):
            self.assertNotIn(key, sent)
        for secret in SECRET_TITLES:
            self.assertNotIn(secret, sent)
        changes = {c["key"]: c for c in r.report["data"]["changes"]}
        self.assertEqual(changes["#11"]["verdict"], "internal")
        self.assertEqual(changes["#11"]["model"], "a typo fix nobody notices")
        self.assertEqual(changes["@" + self.lint]["verdict"], "customer-facing")
        self.assertEqual(changes["#1"]["verdict"], "customer-facing", "a strong verdict stands")
        self.assertEqual(changes["#3"]["verdict"], "customer-facing")
        self.assertEqual(r.report["counters"]["model_changed"], 2)
        notes = self.w.notes_artifact()
        fixes = [l.split(" ([")[0] for l in section(notes, "Fixes")]
        self.assertEqual(fixes, ["- Signing in with single sign-on works again"], "the model's line, cleaned")
        self.assertTrue(section(notes, "New features")[0].startswith("- You can now export your invoices as CSV "
                                                                     "files"), "a person's line wins")
        self.assertIn("- Code checks were updated", "\n".join(section(notes, "Other changes")))
        self.assertIn("- A typo was fixed", "\n".join(section(notes, "Internal")))
        self.assertIn("release::internal", self.w.issue(11)["labels"])
        self.assertEqual(self.w.announce_notes(11, "0.1.0"), [], "internal now: not announced")

    def test_openai_compatible_provider(self):
        answer = {"changes": [{"key": "#5", "customer_facing": False, "summary": "", "reason": "internal tuning"}]}
        with LLMDouble(script=[turn(calls=[call("release_assessment", **answer)])]) as llm:
            r = self.run_with(llm, "openai")
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(llm.failures(), [])
        changes = {c["key"]: c for c in r.report["data"]["changes"]}
        self.assertEqual(changes["#5"]["verdict"], "internal")

    def test_model_down_means_the_rules_decide(self):
        with LLMDouble(script=[]) as llm:
            llm.fault({"status": 500, "times": 50})
            r = self.run_with(llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("the rules decide", r.stderr)
        changes = {c["key"]: c for c in r.report["data"]["changes"]}
        self.assertEqual(changes["#2"]["verdict"], "customer-facing")
        self.assertNotIn("model", changes["#2"])
        self.assertEqual(r.report["counters"]["model_changed"], 0)
        self.assertEqual(len(self.w.sink.messages()), 3)

    def test_a_model_answer_that_is_not_one_is_ignored(self):
        with LLMDouble(script=[turn(text="I think they are all fine.")]) as llm:
            r = self.run_with(llm)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("model answer ignored", r.stderr)
        self.assertEqual(r.report["counters"]["model_changed"], 0)

    def test_no_llm_flag(self):
        with LLMDouble(script=[]) as llm:
            r = self.w.release("--no-llm", **llm.env("anthropic"))
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(llm.requests(), [])


if __name__ == "__main__":
    unittest.main()
