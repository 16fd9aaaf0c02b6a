"""factory-triage with a model (the LLM double): only ambiguous issues are
asked; an answer may raise a priority, never lower one; garbage and failures
are warnings and the rules decide; a rerun asks nothing and writes nothing."""
import json
import unittest

from lib.double import Double
from lib.factory import job_env, run_job
from lib.llm import LLMDouble, call, turn

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")

ISSUES = [
    {"title": "asdf", "description": ""},                                         # 1 ambiguous
    {"title": "Export", "description": "the export thing"},                      # 2 ambiguous
    {"title": "Site is down", "description": "down for everyone since 9am"},     # 3 clear: not asked
    {"title": "hmm", "description": "not sure about the new colours"},           # 4 ambiguous
    {"title": "XSS in comments", "description": "stored XSS on every page"},     # 5 security: not asked
]


def api(double, method, path, body=None):
    r = double.request(method, path, body)
    if r.status >= 400:
        raise AssertionError("%s %s: %d %s" % (method, path, r.status, r.text))
    return r.json()


def labels(double, iid):
    return set(api(double, "GET", "/projects/1/issues/%d" % iid)["labels"])


def seed(double):
    double.seed({"issues": [dict(i, project_id=1, iid=n, created_at="2026-02-%02dT10:00:00Z" % n)
                            for n, i in enumerate(ISSUES, 1)]})


class ModelTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        seed(self.double)
        self.assertEqual(run_job("setup", self.double).returncode, 0)

    def run_triage(self, llm, provider="anthropic", *args):
        env = job_env(self.double, extra=llm.env(provider) if llm else None)
        return run_job("triage", self.double, *args, env=env)

    def script(self):
        return [
            turn(calls=[call("triage_decision", type="bug", priority=2, severity=2,
                             reason="the reporter cannot use the product at all")]),
            turn(text="I think this one is fine, nothing to do."),
            turn(calls=[call("triage_decision", type="feedback", priority=5, reason="an opinion on colours")]),
        ]

    def check_first_run(self, r, llm):
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(llm.failures(), [])
        self.assertEqual(len(llm.requests()), 3, "only the three ambiguous issues are asked")
        # 1: raised by the model
        got = labels(self.double, 1)
        self.assertTrue({"type::bug", "priority::2", "severity::2", "triage::factory"} <= got, got)
        note = [n for n in api(self.double, "GET", "/projects/1/issues/1/notes") if not n["system"]][0]["body"]
        self.assertIn("model answer", note)
        self.assertIn("rules and model", note)
        # 2: garbage ignored with a warning, the rules decide
        self.assertIn("model answer ignored", r.stderr)
        self.assertTrue({"type::support", "priority::4"} <= labels(self.double, 2))
        # 4: the type of an ambiguous issue may change, its priority may not go down
        got = labels(self.double, 4)
        self.assertIn("priority::4", got)
        self.assertNotIn("priority::5", got)
        # 3 and 5 decided by the rules
        self.assertTrue({"type::bug", "priority::2"} <= labels(self.double, 3))
        self.assertTrue({"type::security", "priority::1"} <= labels(self.double, 5))
        self.assertEqual(r.report["counters"]["model_asked"], 3)
        self.assertEqual(r.report["counters"]["model_ignored"], 1)

    def test_anthropic(self):
        with LLMDouble(script=self.script()) as llm:
            r = self.run_triage(llm)
            self.check_first_run(r, llm)
            # the model saw the fixed schema as its only tool
            body = llm.requests()[0]["body"]
            body = json.loads(body) if isinstance(body, str) else body
            self.assertEqual([t["name"] for t in body["tools"]], ["triage_decision"])
            self.assertEqual(body["tools"][0]["input_schema"]["required"], ["type", "priority", "reason"])
            # a rerun: no question, no write
            self.double.clear_requests()
            r = self.run_triage(llm)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(len(llm.requests()), 3)
            self.assertEqual([q for q in self.double.requests() if q["method"] in WRITE_METHODS], [])

    def test_openai_compatible(self):
        with LLMDouble(script=self.script()) as llm:
            r = self.run_triage(llm, "openai")
            self.check_first_run(r, llm)

    def test_model_down_rules_decide(self):
        with LLMDouble(script=[]) as llm:
            llm.fault({"status": 500, "times": 100})
            r = self.run_triage(llm, "anthropic")
            self.assertEqual(r.returncode, 0, r)
            self.assertIn("model:", r.stderr)
            self.assertTrue({"type::support", "priority::4"} <= labels(self.double, 1))
            self.assertTrue({"type::security", "priority::1"} <= labels(self.double, 5))

    def test_no_llm_flag(self):
        with LLMDouble(script=self.script()) as llm:
            r = self.run_triage(llm, "anthropic", "--no-llm")
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(llm.requests(), [])

    def test_classify_asks_the_model_for_an_ambiguous_issue(self):
        with LLMDouble(script=self.script()[:1]) as llm:
            r = run_job("triage", None, "classify", stdin=json.dumps({"title": "asdf"}),
                        env=job_env(None, extra=llm.env("anthropic")))
            self.assertEqual(r.returncode, 0, r)
            d = json.loads(r.stdout)
            self.assertEqual((d["type"], d["priority"], d["model"]), ("bug", 2, True))


if __name__ == "__main__":
    unittest.main()
