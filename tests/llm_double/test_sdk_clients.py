"""The LLM double held to real clients: the official OpenAI and Anthropic SDKs
(npm, tests/llm_double/node/) run a tool-call round trip against it unchanged,
get through injected 529/429 faults with their own retries, and read the
double's 400s as the services' own errors."""
import json
import os
import subprocess
import unittest

from lib.llm import LLMDouble, call, turn
from lib.node import ensure_node_modules

NODE_DIR = "tests/llm_double/node"


def round_trip_script():
    return [
        turn(calls=[call("read_file", path="a.txt")], expect={"tools": ["read_file"]}),
        turn(text="a.txt says hello", expect={"tool_results": [{"contains": "hello from a.txt", "is_error": False}]}),
    ]


class SdkClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node_dir = ensure_node_modules(NODE_DIR)

    def run_sdk(self, provider, llm):
        r = subprocess.run(["node", os.path.join(self.node_dir, "sdk_check.mjs"), provider, llm.base_url(provider),
                            llm.api_key], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def check(self, provider, first_stop, second_stop):
        with LLMDouble(round_trip_script()) as llm:
            out = self.run_sdk(provider, llm)
            self.assertEqual(out["first_stop"], first_stop)
            self.assertEqual(out["tool_name"], "read_file")
            self.assertEqual(out["tool_input"], {"path": "a.txt"})
            self.assertEqual(out["second_stop"], second_stop)
            self.assertEqual(out["text"], "a.txt says hello")
            self.assertEqual(out["bad_request"]["status"], 400, out)
            self.assertIn("claude-sonnet-4-5", out["models"])
            # The one bad request was the SDK test's own, on purpose; nothing else failed.
            failures = llm.failures()
            self.assertEqual(len(failures), 1, failures)
            self.assertRegex(failures[0], "tool_use|tool_call|tool")
            return out, llm.requests()

    def test_anthropic_sdk_round_trip(self):
        out, reqs = self.check("anthropic", "tool_use", "end_turn")
        self.assertEqual(out["bad_request"]["type"], "invalid_request_error")
        self.assertIn("input_tokens", out["usage"])
        self.assertTrue(all(r["headers"].get("anthropic-version") for r in reqs))

    def test_openai_sdk_round_trip(self):
        out, reqs = self.check("openai", "tool_calls", "stop")
        self.assertIn("prompt_tokens", out["usage"])
        self.assertTrue(all(r["headers"].get("authorization", "").startswith("Bearer ") for r in reqs))

    def test_sdks_retry_through_injected_faults(self):
        for provider, status in (("anthropic", 529), ("openai", 429)):
            with self.subTest(provider=provider):
                script = round_trip_script()
                script[0]["fault"] = {"status": status, "times": 2, "retry_after_ms": 10}
                with LLMDouble(script) as llm:
                    out = self.run_sdk(provider, llm)
                    self.assertEqual(out["text"], "a.txt says hello")
                    statuses = [r["status"] for r in llm.requests()]
                    self.assertEqual(statuses[:3], [status, status, 200])


if __name__ == "__main__":
    unittest.main()
