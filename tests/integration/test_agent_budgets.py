"""Every budget of the agent, exceeded on purpose: turns, input tokens, output
tokens, wall time and cost. The run stops cleanly with what it has: the work
tree keeps the changes made so far, the transcript ends with an end record
naming the limit, the report has the usage, and the exit code is 1."""
import os
import re
import time
import unittest

from lib.agentrun import make_repo, remove, run_agent
from lib.llm import LLMDouble, call, finish, turn


def edits(n, usage=None):
    """n turns, each appending a line to notes.txt via write_file."""
    return [turn(calls=[call("write_file", path="notes%d.txt" % i, content="step %d\n" % i)], usage=usage)
            for i in range(n)]


class AgentBudgetsTest(unittest.TestCase):
    def setUp(self):
        self.repo = make_repo({"README.md": "# demo\n"})
        self.addCleanup(remove, self.repo)

    def run_budget(self, script, env, provider="anthropic"):
        with LLMDouble(script) as llm:
            t0 = time.monotonic()
            r = run_agent(llm, self.repo, "Write notes.", provider=provider, extra_env=env)
            self.elapsed = time.monotonic() - t0
            self.assertEqual(llm.failures(), [], r)
            self.requests = llm.requests()
        return r

    def check_stopped(self, r, says):
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.agent["outcome"], "budget", r)
        self.assertIn(says, r.agent["reason"])
        self.assertIn("the agent stopped before finishing: " + says, r.stderr)
        end = r.transcript[-1]
        self.assertEqual(end["type"], "end")
        self.assertEqual(end["outcome"], "budget")
        self.assertIn(says, end["reason"])
        self.assertIn("outcome: budget", r.stdout)

    def test_turn_limit(self):
        r = self.run_budget(edits(10), {"FACTORY_AGENT_MAX_TURNS": "3"})
        self.check_stopped(r, "turn limit reached (3 turns)")
        self.assertEqual(r.agent["turns"], 3)
        self.assertEqual(len(self.requests), 3)
        # What was done is kept, and shown.
        for i in range(3):
            self.assertTrue(os.path.exists(os.path.join(self.repo, "notes%d.txt" % i)))
        self.assertIn("+++ b/notes2.txt", r.stdout)
        self.assertEqual(r.agent["files_changed"], 3)

    def test_input_token_limit(self):
        r = self.run_budget(edits(10, usage={"input_tokens": 400, "output_tokens": 10,
                                             "cache_read_input_tokens": 200}),
                            {"FACTORY_AGENT_MAX_INPUT_TOKENS": "1500"})
        self.check_stopped(r, "input token limit reached (1800 of 1500)")
        self.assertEqual(r.agent["turns"], 3)
        self.assertEqual(r.agent["usage"]["cache_read_tokens"], 600)

    def test_output_token_limit_and_shrinking_max_tokens(self):
        script = edits(10, usage={"input_tokens": 10, "output_tokens": 300})
        script[3]["expect"] = {"max_tokens_at_most": 100}
        r = self.run_budget(script, {"FACTORY_AGENT_MAX_OUTPUT_TOKENS": "1000"})
        self.check_stopped(r, "output token limit reached (1200 of 1000)")
        self.assertEqual(r.agent["turns"], 4)
        self.assertEqual(self.requests[0]["body"]["max_tokens"], 1000)
        self.assertEqual(self.requests[3]["body"]["max_tokens"], 100)

    def test_cost_limit(self):
        # claude-sonnet-4-5: $3 per million input tokens; 10,000 a turn is $0.03.
        r = self.run_budget(edits(10, usage={"input_tokens": 10000, "output_tokens": 1}),
                            {"FACTORY_AGENT_MAX_COST_USD": "0.07"})
        self.check_stopped(r, "cost limit reached")
        self.assertEqual(r.agent["turns"], 3)
        self.assertAlmostEqual(r.agent["cost_usd"], 0.09 + 3 * 15e-6, places=6)

    def test_cost_limit_with_a_price_from_the_config(self):
        cfg = os.path.join(self.repo, ".factory-test.yml")
        with open(cfg, "w") as f:
            f.write("llm:\n  prices:\n    local-model:\n      input: 1000\n      output: 1000\n")
        r = self.run_budget(edits(10, usage={"input_tokens": 100, "output_tokens": 0}),
                            {"FACTORY_AGENT_MAX_COST_USD": "0.25", "FACTORY_LLM_MODEL": "local-model-7b",
                             "FACTORY_CONFIG": cfg})
        self.check_stopped(r, "cost limit reached ($0.3000 of $0.25)")

    def test_cost_limit_needs_a_price(self):
        with LLMDouble([finish()]) as llm:
            r = run_agent(llm, self.repo, "x", extra_env={"FACTORY_LLM_MODEL": "mystery-model"})
            self.assertEqual(r.returncode, 2, r)
            self.assertIn("no price known for model mystery-model", r.stderr)
            self.assertIn("FACTORY_AGENT_MAX_COST_USD=0", r.stderr)
            self.assertEqual(llm.requests(), [], "nothing was sent")
            r = run_agent(llm, self.repo, "x", extra_env={"FACTORY_LLM_MODEL": "mystery-model",
                                                          "FACTORY_AGENT_MAX_COST_USD": "0"})
            self.assertEqual(r.returncode, 0, r)
            self.assertIn("cost: unknown", r.stdout)

    def test_wall_time_limit_while_the_model_thinks(self):
        script = edits(1) + [turn(calls=[call("git_diff")], fault={"slow_ms": 8000})]
        r = self.run_budget(script, {"FACTORY_AGENT_MAX_WALL_S": "2"})
        # Cut during the request, not after an answer that was waited out.
        self.check_stopped(r, "wall time limit reached (2 s) while waiting for the model")
        self.assertTrue(os.path.exists(os.path.join(self.repo, "notes0.txt")))

    def test_wall_time_limit_bounds_commands(self):
        script = [turn(calls=[call("run_command", command="sleep 30", timeout_s=600)]),
                  finish(expect={"tool_results": [{"contains": "timed out", "is_error": True}]})]
        r = self.run_budget(script, {"FACTORY_AGENT_MAX_WALL_S": "3"})
        # The command's timeout was cut to what was left of the wall budget
        # (not the 600 s asked for), then the budget stopped the run, or
        # finish came first if the clock allowed.
        said = r.records("tool")[0]["content"]
        m = re.search(r"timed out after ([0-9.]+) s", said)
        self.assertTrue(m, said)
        self.assertLessEqual(float(m.group(1)), 3.0)
        self.assertIn(r.agent["outcome"], ("budget", "finished"), r)

    def test_command_timeout_is_capped(self):
        script = [turn(calls=[call("run_command", command="sleep 30", timeout_s=99999)]),
                  finish(expect={"tool_results": [{"contains": "timed out after 1.0 s", "is_error": True}]})]
        r = self.run_budget(script, {"FACTORY_AGENT_COMMAND_TIMEOUT_MAX_S": "1"})
        self.assertEqual(r.returncode, 0, r)

    def test_bad_budget_settings_are_usage_errors(self):
        for env, says in (({"FACTORY_AGENT_MAX_TURNS": "0"}, "agent.max_turns"),
                          ({"FACTORY_AGENT_MAX_COST_USD": "cheap"}, "agent.max_cost_usd"),
                          ({"FACTORY_AGENT_MAX_WALL_S": "-5"}, "agent.max_wall_s")):
            with self.subTest(env=env):
                r = run_agent(None, self.repo, "x", extra_env=dict(env, FACTORY_LLM_MODEL="claude-sonnet-4-5",
                                                                   FACTORY_LLM_API_KEY="sk-ant-x-123456789"))
                self.assertEqual(r.returncode, 2, r)
                self.assertIn(says, r.stderr)


if __name__ == "__main__":
    unittest.main()
