"""The agent facing every fault the LLM double can inject: 429, 529 and 500
(retried with backoff, Retry-After honoured), slow answers (within and past
the request timeout), connections cut before and during the answer, a
context-length error (the conversation is compacted and sent again), and the
errors that end a run with a clear reason: a refused key, an unknown model,
retries exhausted, a service that is not there."""
import socket
import time
import unittest

from lib.agentrun import make_repo, remove, run_agent
from lib.llm import LLMDouble, call, finish, turn

FAST = {"FACTORY_LLM_BACKOFF_MS": "10", "FACTORY_LLM_MAX_RETRIES": "4"}


class AgentFaultsTest(unittest.TestCase):
    def setUp(self):
        self.repo = make_repo({"README.md": "# demo\n", "big.txt": "".join("line %05d of a long file\n" % i
                                                                          for i in range(2000))})
        self.addCleanup(remove, self.repo)

    def run_faulty(self, fault, provider="anthropic", env=None):
        script = [turn(calls=[call("read_file", path="README.md")], fault=fault),
                  finish(expect={"tool_results": [{"contains": "# demo"}]})]
        with LLMDouble(script) as llm:
            t0 = time.monotonic()
            r = run_agent(llm, self.repo, "read it", provider=provider, extra_env=dict(FAST, **(env or {})))
            self.elapsed = time.monotonic() - t0
            self.assertEqual(llm.failures(), [], r)
            self.statuses = [q["status"] for q in llm.requests()]
        return r

    def test_rate_limits_and_overload_are_retried(self):
        for provider, status in (("anthropic", 429), ("anthropic", 529), ("openai", 429), ("openai", 503)):
            with self.subTest(provider=provider, status=status):
                r = self.run_faulty({"status": status, "times": 3}, provider)
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(self.statuses, [status] * 3 + [200, 200])
                self.assertIn("trying again", r.stderr)
                self.assertEqual(r.report["counters"]["llm_retries"], 3)
                self.assertEqual(r.report["counters"]["llm_requests"], 5)
                self.assertEqual(r.transcript[-1]["llm_retries"], 3)

    def test_server_errors_are_retried(self):
        r = self.run_faulty({"status": 500, "times": 2})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.statuses, [500, 500, 200, 200])

    def test_retry_after_is_honoured(self):
        r = self.run_faulty({"status": 429, "times": 1, "retry_after": 1})
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("in 1000 ms", r.stderr, "the wait came from Retry-After, not the backoff")

    def test_slow_answer_within_the_timeout(self):
        r = self.run_faulty({"slow_ms": 700})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.statuses, [200, 200])

    def test_slow_answer_past_the_timeout_is_tried_again(self):
        r = self.run_faulty({"slow_ms": 6000, "times": 1}, env={"FACTORY_LLM_TIMEOUT_MS": "1500"})
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("timed out", r.stderr)
        # The first request was given up (its answer, if it ever comes, is too late).
        self.assertEqual(len(self.statuses), 3)
        self.assertEqual(self.statuses[1:], [200, 200])

    def test_cut_connections_are_tried_again(self):
        for how in ("headers", "body"):
            with self.subTest(cut=how):
                r = self.run_faulty({"cut": how, "times": 2})
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(self.statuses, ["cut", "cut", 200, 200])

    def test_retries_run_out(self):
        r = self.run_faulty({"status": 529, "times": 50}, env={"FACTORY_LLM_MAX_RETRIES": "2"})
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("HTTP 529 after 3 tries: overloaded_error: Overloaded", r.stderr)
        self.assertEqual(r.agent["outcome"], "error")
        self.assertEqual(r.transcript[-1]["type"], "end")
        self.assertEqual(self.statuses, [529, 529, 529])

    def test_context_length_error_compacts_and_goes_on(self):
        for provider in ("anthropic", "openai"):
            with self.subTest(provider=provider):
                script = [
                    turn(calls=[call("read_file", path="big.txt")]),
                    turn(calls=[call("read_file", path="big.txt", start_line=1000, end_line=1002)]),
                    turn(calls=[call("list_files", path=".")]),
                    turn(calls=[call("git_diff")]),
                    # The window is smaller than what was sent: compact, then answer.
                    turn(calls=[call("read_file", path="README.md")], fault={"context_limit": 30000}),
                    finish(expect={"tool_results": [{"contains": "# demo"}]}),
                ]
                with LLMDouble(script) as llm:
                    r = run_agent(llm, self.repo, "read", provider=provider, extra_env=FAST)
                    self.assertEqual(llm.failures(), [], r)
                    reqs = llm.requests()
                self.assertEqual(r.returncode, 0, r)
                self.assertIn("context window exceeded", r.stderr)
                sizes = [len(str(q["body"])) for q in reqs]
                self.assertEqual(reqs[4]["status"], 400)
                self.assertLess(sizes[5], sizes[4], "the conversation was made smaller")
                self.assertIn("elided to fit the context window", str(reqs[5]["body"]))
                self.assertEqual(r.report["counters"]["llm_compactions"], 1)

    def test_context_that_never_fits_ends_the_run(self):
        script = [turn(calls=[call("read_file", path="README.md")], fault={"context_limit": 100})]
        with LLMDouble(script) as llm:
            r = run_agent(llm, self.repo, "read", extra_env=FAST)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("does not fit the model's context window, even compacted", r.stderr)

    def test_wrong_key_is_refused_and_never_printed(self):
        with LLMDouble([finish()]) as llm:
            r = run_agent(llm, self.repo, "x", extra_env={"FACTORY_LLM_API_KEY": "sk-ant-wrong-key-000000000"})
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("the service refused the API key (HTTP 401)", r.stderr)
        self.assertNotIn("wrong-key", r.output + r.transcript_text)

    def test_unknown_route_is_a_clear_404(self):
        with LLMDouble([finish()]) as llm:
            r = run_agent(llm, self.repo, "x", extra_env={"FACTORY_LLM_BASE_URL": llm.url + "/nope"})
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("HTTP 404 for model claude-sonnet-4-5", r.stderr)

    def test_service_not_there(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with LLMDouble([]) as llm:
            env = dict(FAST, FACTORY_LLM_BASE_URL="http://127.0.0.1:%d" % port, FACTORY_LLM_MAX_RETRIES="1")
            r = run_agent(llm, self.repo, "x", extra_env=env)
        self.assertEqual(r.returncode, 3, r)
        self.assertIn("unreachable after 2 tries", r.stderr)


if __name__ == "__main__":
    unittest.main()
