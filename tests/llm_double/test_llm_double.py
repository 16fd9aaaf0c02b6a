"""The LLM double on its own: it refuses what the real services refuse (with
their status codes and error shapes), records every refusal as a failure,
replays scripts (expectations, repeats, exhaustion) and injects its faults."""
import http.client
import json
import time
import unittest
import urllib.parse

from lib.llm import DEFAULT_KEY, LLMDouble, call, turn

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


def anth_body(messages, tools=None, **kw):
    b = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages}
    if tools is not None:
        b["tools"] = tools
    b.update(kw)
    return b


def tool_use(i="toolu_1"):
    return {"role": "assistant", "content": [{"type": "tool_use", "id": i, "name": "read_file", "input": {"path": "a"}}]}


def tool_result(i="toolu_1", extra_first=None):
    blocks = [{"type": "tool_result", "tool_use_id": i, "content": "x"}]
    if extra_first:
        blocks.insert(0, extra_first)
    return {"role": "user", "content": blocks}


class LlmDoubleTest(unittest.TestCase):
    def setUp(self):
        self.llm = LLMDouble([turn(text="hello")] * 1).start()
        self.addCleanup(self.llm.stop)
        u = urllib.parse.urlparse(self.llm.url)
        self.host, self.port = u.hostname, u.port

    def post(self, path, body, headers=None, raw=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        data = raw if raw is not None else json.dumps(body).encode()
        c.request("POST", path, body=data, headers=headers or {})
        r = c.getresponse()
        out = r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
        c.close()
        return out

    def anth(self, body, key=DEFAULT_KEY, version="2023-06-01"):
        h = {"content-type": "application/json"}
        if key:
            h["x-api-key"] = key
        if version:
            h["anthropic-version"] = version
        return self.post("/v1/messages", body, h)

    def oai(self, body, key=DEFAULT_KEY):
        h = {"content-type": "application/json"}
        if key:
            h["Authorization"] = "Bearer " + key
        return self.post("/v1/chat/completions", body, h)

    def test_anthropic_refusals(self):
        user = {"role": "user", "content": "hi"}
        cases = [
            (anth_body([user]), None, "2023-06-01", 401, "authentication_error"),
            (anth_body([user]), "sk-ant-wrong-00000000", "2023-06-01", 401, "authentication_error"),
            (anth_body([user]), DEFAULT_KEY, None, 400, "anthropic-version"),
            (anth_body([user], stream=True), DEFAULT_KEY, "2023-06-01", 400, "streaming"),
            ({"model": "m", "messages": [user]}, DEFAULT_KEY, "2023-06-01", 400, "max_tokens"),
            (anth_body([user, user]), DEFAULT_KEY, "2023-06-01", 400, "roles must alternate"),
            (anth_body([tool_use()]), DEFAULT_KEY, "2023-06-01", 400, "first message must use the \"user\" role"),
            (anth_body([user, tool_use(), tool_result("toolu_other")]), DEFAULT_KEY, "2023-06-01", 400,
             "unexpected `tool_use_id`"),
            (anth_body([user, tool_use(), {"role": "user", "content": "no result"}]), DEFAULT_KEY, "2023-06-01", 400,
             "without `tool_result` blocks immediately after"),
            (anth_body([user, tool_use(), tool_result(extra_first={"type": "text", "text": "first"})]), DEFAULT_KEY,
             "2023-06-01", 400, "must come first"),
            (anth_body([{"role": "user", "content": [{"type": "text", "text": ""}]}]), DEFAULT_KEY, "2023-06-01", 400,
             "non-empty"),
            (anth_body([user], tools=[{"name": "t", "input_schema": {"type": "string"}}]), DEFAULT_KEY, "2023-06-01",
             400, "input_schema.type must be 'object'"),
            (anth_body([user], tools=[{"name": "t", "input_schema": {"type": "object", "properties": {"a": {
                "type": "strin"}}}}]), DEFAULT_KEY, "2023-06-01", 400, "unknown JSON Schema type"),
            (anth_body([user], tools=[{"name": "t", "input_schema": {"type": "object", "properties": {},
                                                                      "required": ["x"]}}]),
             DEFAULT_KEY, "2023-06-01", 400, "not a property"),
            (anth_body([user], tools=[{"name": "bad name", "input_schema": SCHEMA}]), DEFAULT_KEY, "2023-06-01", 400,
             "should match pattern"),
            (anth_body([{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {
                "type": "ephemeral"}}] * 5}]), DEFAULT_KEY, "2023-06-01", 400, "maximum of 4 blocks"),
        ]
        for body, key, version, status, says in cases:
            with self.subTest(says=says):
                st, _, out = self.anth(body, key, version)
                self.assertEqual(st, status, out)
                self.assertEqual(out["type"], "error")
                self.assertIn(says, out["error"]["message"] + out["error"]["type"])
        self.assertEqual(len(self.llm.failures()), len(cases))
        self.assertEqual(self.llm.state()["position"], 0, "no refused request used a turn")

    def test_openai_refusals(self):
        user = {"role": "user", "content": "hi"}
        calls = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
        cases = [
            ({"model": "gpt-4o", "messages": [user]}, None, 401, "Incorrect API key"),
            ({"model": "gpt-4o", "messages": [user, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
             DEFAULT_KEY, 400, "must be a response to a preceeding message"),
            ({"model": "gpt-4o", "messages": [user, calls, user]}, DEFAULT_KEY, 400, "did not have response messages"),
            ({"model": "gpt-4o", "messages": [user, dict(calls, tool_calls=[{"id": "c", "type": "function",
                                                                               "function": {"name": "f",
                                                                                            "arguments": {}}}])]},
             DEFAULT_KEY, 400, "arguments as a string"),
            ({"model": "gpt-4o", "messages": [user], "tools": [{"type": "function", "function": {
                "name": "f", "parameters": {"type": "object", "properties": []}}}]}, DEFAULT_KEY, 400,
             "properties must be an object"),
            ({"model": "gpt-4o", "messages": []}, DEFAULT_KEY, 400, "empty array"),
        ]
        for body, key, status, says in cases:
            with self.subTest(says=says):
                st, _, out = self.oai(body, key)
                self.assertEqual(st, status, out)
                self.assertIn(says, out["error"]["message"])
        self.assertEqual(len(self.llm.failures()), len(cases))

    def test_scripts_expectations_repeat_and_exhaustion(self):
        self.llm.load([turn(calls=[call("read_file", path="a")], repeat=2),
                       turn(text="done", expect={"last_user_contains": "magic"})])
        user = {"role": "user", "content": "hi"}
        for _ in range(2):
            st, _, out = self.anth(anth_body([user]))
            self.assertEqual(st, 200)
            self.assertEqual(out["stop_reason"], "tool_use")
            self.assertTrue(out["content"][0]["id"].startswith("toolu_"))
        st, _, out = self.anth(anth_body([user]))
        self.assertEqual(st, 400)
        self.assertIn("should contain 'magic'", out["error"]["message"])
        st, _, out = self.anth(anth_body([{"role": "user", "content": "the magic word"}]))
        self.assertEqual((st, out["content"][0]["text"]), (200, "done"))
        st, _, out = self.anth(anth_body([user]))
        self.assertEqual(st, 400)
        self.assertIn("no turn 2", out["error"]["message"])
        self.assertEqual(len(self.llm.failures()), 2)

    def test_openai_answers_have_the_real_shape(self):
        self.llm.load([turn(text="t", calls=[call("f", a=1)], usage={"input_tokens": 7, "output_tokens": 3,
                                                                      "cache_read_input_tokens": 2})])
        st, _, out = self.oai({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(st, 200)
        self.assertEqual(out["object"], "chat.completion")
        msg = out["choices"][0]["message"]
        self.assertEqual(json.loads(msg["tool_calls"][0]["function"]["arguments"]), {"a": 1})
        self.assertEqual(out["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(out["usage"]["prompt_tokens"], 9)
        self.assertEqual(out["usage"]["prompt_tokens_details"]["cached_tokens"], 2)

    def test_faults(self):
        user = {"role": "user", "content": "hi"}
        self.llm.load([turn(text="ok")] * 10)
        self.llm.fault({"status": 529, "retry_after": 3}, {"status": 429, "retry_after_ms": 150})
        st, h, out = self.anth(anth_body([user]))
        self.assertEqual((st, out["error"]["type"], h.get("retry-after")), (529, "overloaded_error", "3"))
        st, h, out = self.anth(anth_body([user]))
        self.assertEqual((st, out["error"]["type"], h.get("retry-after-ms")), (429, "rate_limit_error", "150"))
        self.llm.fault({"slow_ms": 400})
        t0 = time.monotonic()
        st, _, _ = self.anth(anth_body([user]))
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.llm.fault({"cut": "headers"})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.anth(anth_body([user]))
        self.llm.fault({"cut": "body"})
        with self.assertRaises((http.client.IncompleteRead, ValueError)):
            self.anth(anth_body([user]))
        self.llm.load([turn(text="ok", fault={"context_limit": 50})])
        st, _, out = self.anth(anth_body([user]))
        self.assertEqual(st, 400)
        self.assertIn("prompt is too long", out["error"]["message"])
        st, _, out = self.oai({"model": "gpt-4o", "messages": [user]})
        self.assertEqual((st, out["error"]["code"]), (400, "context_length_exceeded"))
        self.assertEqual(self.llm.failures(), [], "faults are not failures")

    def test_models(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        c.request("GET", "/v1/models", headers={"x-api-key": DEFAULT_KEY, "anthropic-version": "2023-06-01"})
        out = json.loads(c.getresponse().read())
        self.assertEqual(out["data"][0]["type"], "model")
        c.request("GET", "/v1/models", headers={"Authorization": "Bearer " + DEFAULT_KEY})
        out = json.loads(c.getresponse().read())
        self.assertEqual(out["object"], "list")
        c.close()


if __name__ == "__main__":
    unittest.main()
