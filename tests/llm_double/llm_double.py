#!/usr/bin/env python3
"""LLM test double: the Anthropic Messages API and OpenAI Chat Completions, stdlib only.

A local server that answers like the two services do (same JSON shapes,
status codes, error bodies and headers), replaying a scripted conversation,
so the Factory's agent can be tested and benchmarked without a model.  It
holds the client to the APIs' rules: a malformed request gets the 400 the
real service would send, and is recorded as a failure for the test to see.

Run:
    /usr/bin/python3 llm_double.py --listen 127.0.0.1:0 [--script FILE.json]
        [--models a,b] [--quiet]

The API key clients must send is $LLM_DOUBLE_API_KEY when set (any key is
accepted otherwise); it is never taken from the command line, where every
process on the machine could read it.

After binding it prints exactly one line to stdout,
``listening on http://127.0.0.1:PORT``, and serves until SIGTERM/SIGINT.
Anthropic clients use that URL as their base URL, OpenAI clients that URL
plus ``/v1``.

Endpoints
---------
* ``POST /v1/messages``: Anthropic.  Needs ``x-api-key`` (equal to $LLM_DOUBLE_API_KEY
  when one is given) and ``anthropic-version``.  ``stream: true`` is refused
  (streaming is off in this double).
* ``POST /v1/chat/completions``: OpenAI.  Needs ``Authorization: Bearer KEY``.
* ``GET /v1/models``: the Anthropic list when ``anthropic-version`` is sent,
  else OpenAI's.

Scripts
-------
A script is a JSON list of turns (or ``{"turns": [...]}``).  Each model
request that passes validation takes the next turn::

    {"expect": {...},          # optional checks on this request
     "fault": {...},           # optional trouble before the answer
     "reply": {"text": "...",
               "tool_calls": [{"name": "read_file", "input": {"path": "a"}},
                              {"name": "x", "raw_arguments": "{not json"}],
               "stop": "end_turn|tool_use|max_tokens|refusal|...",  # default from the calls
               "usage": {"input_tokens": 10, "output_tokens": 5,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}},
     "repeat": 1}              # play this turn N times

``expect`` keys: ``tool_results`` (a list, in order, of ``{"contains": s,
"not_contains": s, "is_error": bool}`` matched against the tool results in
the request's last user turn), ``last_user_contains``, ``system_contains``,
``max_messages``, ``tools`` (exact list of tool names), ``cache_control``
(Anthropic: the system prompt and the last tool carry one), ``max_tokens_at_most``.

``fault`` keys (the turn is not used up while the fault lasts):
``{"status": 429|529|500|..., "times": n, "retry_after": s, "retry_after_ms": ms}``,
``{"cut": "headers"|"body", "times": n}`` (close the connection before any
answer, or half-way through the body), ``{"slow_ms": ms}`` (wait, then
answer), ``{"context_limit": bytes}`` (answer the service's context-length
400 while the request body is larger than that).

When the script runs out the double answers 400 and records a failure.

Control API (no auth)
---------------------
* ``POST /__double/script``  load a script (body: the JSON above), position 0
* ``POST /__double/faults``  queue faults for the next requests, whatever the
  script says: a fault object or a list of them (same keys as above)
* ``GET  /__double/requests`` the request log (method, path, headers, body, status);
  ``?last=N`` for the newest N only
* ``GET  /__double/failures`` validation and expectation failures (strings)
* ``GET  /__double/state``    ``{"position", "turns", "requests", "failures"}``
* ``POST /__double/reset``    forget script, log, failures and faults
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
ANTHROPIC_STOPS = {"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal",
                   "model_context_window_exceeded"}
OPENAI_FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length", "stop_sequence": "stop",
                 "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}
LOG_MAX = 1000


class Reject(Exception):
    """A request the real service would refuse: status, error type, message."""

    def __init__(self, status, etype, message):
        super().__init__(message)
        self.status = status
        self.etype = etype
        self.message = message


def check_schema(schema, where, top=False):
    """Is `schema` a JSON Schema the services accept? Raises Reject."""
    if not isinstance(schema, dict):
        raise Reject(400, "invalid_request_error", "%s: a JSON Schema must be an object" % where)
    t = schema.get("type")
    if top and t != "object":
        raise Reject(400, "invalid_request_error", "%s: input_schema.type must be 'object'" % where)
    if t is not None:
        types = t if isinstance(t, list) else [t]
        for x in types:
            if x not in SCHEMA_TYPES:
                raise Reject(400, "invalid_request_error", "%s: unknown JSON Schema type %r" % (where, x))
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise Reject(400, "invalid_request_error", "%s: properties must be an object" % where)
        for k, v in props.items():
            check_schema(v, "%s.properties.%s" % (where, k))
    req = schema.get("required")
    if req is not None:
        if not isinstance(req, list) or not all(isinstance(x, str) for x in req):
            raise Reject(400, "invalid_request_error", "%s: required must be a list of names" % where)
        if isinstance(props, dict):
            for x in req:
                if x not in props:
                    raise Reject(400, "invalid_request_error", "%s: required names %r, which is not a property"
                                 % (where, x))
    items = schema.get("items")
    if items is not None:
        if isinstance(items, list):
            for i, s in enumerate(items):
                check_schema(s, "%s.items[%d]" % (where, i))
        else:
            check_schema(items, where + ".items")
    enum = schema.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise Reject(400, "invalid_request_error", "%s: enum must be a non-empty list" % where)
    for k in ("description", "title"):
        if k in schema and not isinstance(schema[k], str):
            raise Reject(400, "invalid_request_error", "%s: %s must be a string" % (where, k))
    for k in ("minimum", "maximum"):
        if k in schema and (isinstance(schema[k], bool) or not isinstance(schema[k], (int, float))):
            raise Reject(400, "invalid_request_error", "%s: %s must be a number" % (where, k))


def bad(message):
    return Reject(400, "invalid_request_error", message)


# ---- Anthropic -------------------------------------------------------------

def check_cache_control(obj, where, counter):
    cc = obj.get("cache_control")
    if cc is None:
        return
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise bad("%s.cache_control: type must be 'ephemeral'" % where)
    if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
        raise bad("%s.cache_control.ttl: must be '5m' or '1h'" % where)
    counter[0] += 1


def validate_anthropic(body):
    """Checks a Messages request; returns a summary used by expectations."""
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad("model: field required")
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise bad("max_tokens: must be a whole number of at least 1")
    if body.get("stream"):
        raise bad("stream: streaming is not supported by this double (use stream=false)")
    cc = [0]
    system = body.get("system")
    system_text = ""
    if isinstance(system, str):
        system_text = system
    elif isinstance(system, list):
        for i, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
                raise bad("system.%d: must be a text block" % i)
            check_cache_control(b, "system.%d" % i, cc)
            system_text += b["text"]
    elif system is not None:
        raise bad("system: must be a string or a list of text blocks")
    system_cached = isinstance(system, list) and bool(system) and "cache_control" in system[-1]
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise bad("tools: must be a list")
    names = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise bad("tools.%d: must be an object" % i)
        name = t.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad("tools.%d.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'" % i)
        if name in names:
            raise bad("tools: tool names must be unique (%s)" % name)
        names.append(name)
        if "description" in t and not isinstance(t["description"], str):
            raise bad("tools.%d.description: must be a string" % i)
        if "input_schema" not in t:
            raise bad("tools.%d.input_schema: Field required" % i)
        check_schema(t["input_schema"], "tools.%d.input_schema" % i, top=True)
        check_cache_control(t, "tools.%d" % i, cc)
    tools_cached = bool(tools) and "cache_control" in tools[-1]
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages: at least one message is required")
    expected_role = "user"
    pending_ids = None  # tool_use ids the next user message must answer
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad("messages.%d: must be an object" % i)
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise bad("messages.%d.role: Input should be 'user' or 'assistant'" % i)
        if i == 0 and role != "user":
            raise bad("messages: the first message must use the \"user\" role")
        if role != expected_role:
            raise bad("messages: roles must alternate between \"user\" and \"assistant\", but found multiple "
                      "\"%s\" roles in a row" % role)
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise bad("messages.%d.content: must be a string or a list of blocks" % i)
        if not blocks and not (role == "assistant" and i == len(msgs) - 1):
            raise bad("messages.%d: all messages must have non-empty content except for the optional final "
                      "assistant message" % i)
        ids_here = []
        answered = []
        seen_other = False
        for j, b in enumerate(blocks):
            if not isinstance(b, dict) or not isinstance(b.get("type"), str):
                raise bad("messages.%d.content.%d: must be a block with a type" % (i, j))
            bt = b["type"]
            if isinstance(content, list):
                check_cache_control(b, "messages.%d.content.%d" % (i, j), cc)
            if bt == "text":
                if not isinstance(b.get("text"), str):
                    raise bad("messages.%d.content.%d.text: Field required" % (i, j))
                if not b["text"]:
                    raise bad("messages: text content blocks must be non-empty")
                seen_other = True
            elif bt == "tool_use":
                if role != "assistant":
                    raise bad("messages.%d.content.%d: tool_use blocks are only allowed in assistant messages"
                              % (i, j))
                if not isinstance(b.get("id"), str) or not b["id"]:
                    raise bad("messages.%d.content.%d.id: Field required" % (i, j))
                if not isinstance(b.get("name"), str) or not isinstance(b.get("input"), dict):
                    raise bad("messages.%d.content.%d: tool_use needs a name and an input object" % (i, j))
                ids_here.append(b["id"])
            elif bt == "tool_result":
                if role != "user":
                    raise bad("messages.%d.content.%d: tool_result blocks are only allowed in user messages"
                              % (i, j))
                if seen_other:
                    raise bad("messages.%d: tool_result blocks must come first in the content, before any "
                              "other block" % i)
                tid = b.get("tool_use_id")
                if not isinstance(tid, str):
                    raise bad("messages.%d.content.%d.tool_use_id: Field required" % (i, j))
                if pending_ids is None or tid not in pending_ids:
                    raise bad("messages.%d.content.%d: unexpected `tool_use_id` found in `tool_result` blocks: "
                              "%s. Each `tool_result` block must have a corresponding `tool_use` block in the "
                              "previous message." % (i, j, tid))
                if tid in answered:
                    raise bad("messages.%d: tool_use id %s is answered twice" % (i, tid))
                answered.append(tid)
                rc = b.get("content")
                if rc is not None and not isinstance(rc, (str, list)):
                    raise bad("messages.%d.content.%d.content: must be a string or a list" % (i, j))
                if "is_error" in b and not isinstance(b["is_error"], bool):
                    raise bad("messages.%d.content.%d.is_error: must be a boolean" % (i, j))
            elif bt in ("thinking", "redacted_thinking", "image", "document"):
                seen_other = True
            else:
                raise bad("messages.%d.content.%d.type: unknown block type %r" % (i, j, bt))
        if role == "user" and pending_ids:
            missing = [x for x in pending_ids if x not in answered]
            if missing:
                raise bad("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately "
                          "after: %s. Each `tool_use` block must have a corresponding `tool_result` block in "
                          "the next message." % (i - 1, ", ".join(missing)))
        pending_ids = ids_here if role == "assistant" else None
        expected_role = "assistant" if role == "user" else "user"
    if cc[0] > 4:
        raise bad("A maximum of 4 blocks with cache_control may be provided. Found %d." % cc[0])
    last = msgs[-1]
    results = []
    last_text = ""
    if last.get("role") == "user":
        content = last.get("content")
        for b in ([{"type": "text", "text": content}] if isinstance(content, str) else content):
            if b.get("type") == "tool_result":
                rc = b.get("content")
                if isinstance(rc, list):
                    rc = "".join(x.get("text", "") for x in rc if isinstance(x, dict))
                results.append({"content": rc or "", "is_error": bool(b.get("is_error"))})
            elif b.get("type") == "text":
                last_text += b["text"]
    return {"system": system_text, "tools": names, "messages": len(msgs), "results": results,
            "last_text": last_text, "system_cached": system_cached, "tools_cached": tools_cached,
            "max_tokens": mt, "model": body["model"]}


# ---- OpenAI ----------------------------------------------------------------

def validate_openai(body):
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad("you must provide a model parameter")
    if body.get("stream"):
        raise bad("stream: streaming is not supported by this double (use stream=false)")
    mt = None
    for k in ("max_tokens", "max_completion_tokens"):
        if k in body and body[k] is not None:
            if isinstance(body[k], bool) or not isinstance(body[k], int) or body[k] < 1:
                raise bad("Invalid '%s': integer below minimum value" % k)
            mt = body[k]
    tools = body.get("tools", [])
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise bad("Invalid type for 'tools': expected an array")
    names = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise bad("Invalid 'tools[%d]': expected {type: 'function', function: {...}}" % i)
        fn = t["function"]
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad("Invalid 'tools[%d].function.name': string does not match pattern '^[a-zA-Z0-9_-]+$'" % i)
        names.append(name)
        if "parameters" in fn:
            check_schema(fn["parameters"], "tools[%d].function.parameters" % i, top=True)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("Invalid 'messages': empty array. Expected an array with minimum length 1")
    system_text = ""
    pending = None  # ids of the last assistant's tool_calls not yet answered
    answered_all = None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad("Invalid 'messages[%d]': expected an object" % i)
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise bad("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'tool', and "
                      "'developer'." % role)
        if pending and role != "tool":
            raise bad("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                      "each 'tool_call_id'. The following tool_call_ids did not have response messages: %s"
                      % ", ".join(pending))
        content = m.get("content")
        if role in ("system", "developer"):
            if isinstance(content, str):
                system_text += content
            elif not isinstance(content, list):
                raise bad("Invalid 'messages[%d].content': expected a string" % i)
        elif role == "user":
            if not isinstance(content, (str, list)):
                raise bad("Invalid 'messages[%d].content': expected a string or an array" % i)
        elif role == "assistant":
            calls = m.get("tool_calls")
            if content is not None and not isinstance(content, (str, list)):
                raise bad("Invalid 'messages[%d].content': expected a string or null" % i)
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    raise bad("Invalid 'messages[%d].tool_calls': empty array" % i)
                pending = []
                for j, c in enumerate(calls):
                    if not isinstance(c, dict) or not isinstance(c.get("id"), str) or c.get("type") != "function":
                        raise bad("Invalid 'messages[%d].tool_calls[%d]': needs id and type 'function'" % (i, j))
                    fn = c.get("function")
                    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or \
                            not isinstance(fn.get("arguments"), str):
                        raise bad("Invalid 'messages[%d].tool_calls[%d].function': needs a name and arguments "
                                  "as a string" % (i, j))
                    pending.append(c["id"])
                answered_all = list(pending)
            elif content is None:
                raise bad("Invalid 'messages[%d]': an assistant message needs content or tool_calls" % i)
        elif role == "tool":
            tid = m.get("tool_call_id")
            if not isinstance(tid, str):
                raise bad("Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                          "'tool_call_id'.")
            if not answered_all or tid not in answered_all:
                raise bad("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                          "message with 'tool_calls'.")
            if pending is not None and tid in pending:
                pending.remove(tid)
            if not isinstance(content, (str, list)):
                raise bad("Invalid 'messages[%d].content': expected a string" % i)
        if role == "user" or (role == "assistant" and not m.get("tool_calls")):
            answered_all = None
    if pending:
        raise bad("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                  "'tool_call_id'. The following tool_call_ids did not have response messages: %s"
                  % ", ".join(pending))
    # The tool results and text after the last assistant message.
    results, last_text = [], ""
    k = len(msgs) - 1
    while k >= 0 and msgs[k].get("role") != "assistant":
        k -= 1
    for m in msgs[k + 1:]:
        if m.get("role") == "tool":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(x.get("text", "") for x in c if isinstance(x, dict))
            results.append({"content": c, "is_error": c.startswith("ERROR")})
        elif m.get("role") == "user":
            c = m.get("content")
            last_text += c if isinstance(c, str) else "".join(x.get("text", "") for x in c if isinstance(x, dict))
    return {"system": system_text, "tools": names, "messages": len(msgs), "results": results,
            "last_text": last_text, "system_cached": False, "tools_cached": False, "max_tokens": mt,
            "model": body["model"]}


# ---- the server --------------------------------------------------------------

class State:
    def __init__(self, api_key=None, models=None):
        self.lock = threading.Lock()
        self.api_key = api_key
        self.models = models or ["claude-sonnet-4-5", "gpt-4o"]
        self.reset()

    def reset(self):
        self.turns = []
        self.position = 0
        self.repeat_done = 0
        self.fault_used = 0
        self.faults = []
        self.log = []
        self.failures = []
        self.requests = 0

    def load(self, script):
        if isinstance(script, dict):
            script = script.get("turns")
        if not isinstance(script, list):
            raise ValueError("a script is a list of turns")
        for i, t in enumerate(script):
            if not isinstance(t, dict):
                raise ValueError("turn %d is not an object" % i)
        self.turns = script
        self.position = 0
        self.repeat_done = 0
        self.fault_used = 0

    def fail(self, msg):
        self.failures.append(msg)


def expectations(exp, info):
    """Messages for every expectation that `info` does not meet."""
    out = []
    if not exp:
        return out
    want = exp.get("tool_results")
    if want is not None:
        got = info["results"]
        if len(got) != len(want):
            out.append("expected %d tool results, got %d: %s" % (len(want), len(got),
                                                                  json.dumps(got)[:2000]))
        for i, (w, g) in enumerate(zip(want, got)):
            if "contains" in w and w["contains"] not in (g["content"] or ""):
                out.append("tool result %d should contain %r: %r" % (i, w["contains"], (g["content"] or "")[:2000]))
            if "not_contains" in w and w["not_contains"] in (g["content"] or ""):
                out.append("tool result %d should not contain %r: %r" % (i, w["not_contains"],
                                                                           (g["content"] or "")[:2000]))
            if "is_error" in w and bool(w["is_error"]) != g["is_error"]:
                out.append("tool result %d: is_error should be %s: %r" % (i, w["is_error"], (g["content"] or "")[:2000]))
    if "last_user_contains" in exp and exp["last_user_contains"] not in info["last_text"]:
        out.append("the last user text should contain %r: %r" % (exp["last_user_contains"], info["last_text"][:2000]))
    if "system_contains" in exp and exp["system_contains"] not in info["system"]:
        out.append("the system prompt should contain %r" % exp["system_contains"])
    if "max_messages" in exp and info["messages"] > exp["max_messages"]:
        out.append("expected at most %d messages, got %d" % (exp["max_messages"], info["messages"]))
    if "tools" in exp and exp["tools"] != info["tools"]:
        out.append("expected tools %s, got %s" % (exp["tools"], info["tools"]))
    if exp.get("cache_control") and not (info["system_cached"] and info["tools_cached"]):
        out.append("expected cache_control on the system prompt and the last tool")
    if "max_tokens_at_most" in exp and (info["max_tokens"] or 0) > exp["max_tokens_at_most"]:
        out.append("max_tokens should be at most %d, got %s" % (exp["max_tokens_at_most"], info["max_tokens"]))
    return out


def build_reply(api, reply, turn_no, body_len, model):
    text = reply.get("text") or ""
    calls = reply.get("tool_calls") or []
    stop = reply.get("stop") or ("tool_use" if calls else "end_turn")
    usage = dict(reply.get("usage") or {})
    out_tokens = max(1, (len(text) + len(json.dumps(calls))) // 4)
    usage.setdefault("input_tokens", max(1, body_len // 4))
    usage.setdefault("output_tokens", out_tokens)
    usage.setdefault("cache_creation_input_tokens", 0)
    usage.setdefault("cache_read_input_tokens", 0)
    tag = uuid.uuid4().hex[:12]
    if api == "anthropic":
        content = []
        if text:
            content.append({"type": "text", "text": text})
        for i, c in enumerate(calls):
            content.append({"type": "tool_use", "id": "toolu_%03d_%d_%s" % (turn_no, i, tag), "name": c["name"],
                            "input": c.get("input", {})})
        return {"id": "msg_%s" % tag, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": usage}
    msg = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = []
        for i, c in enumerate(calls):
            args = c["raw_arguments"] if "raw_arguments" in c else json.dumps(c.get("input", {}))
            msg["tool_calls"].append({"id": "call_%03d_%d_%s" % (turn_no, i, tag), "type": "function",
                                      "function": {"name": c["name"], "arguments": args}})
    cached = usage["cache_read_input_tokens"]
    prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + cached
    return {"id": "chatcmpl-%s" % tag, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "logprobs": None,
                         "finish_reason": OPENAI_FINISH.get(stop, stop)}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": usage["output_tokens"],
                      "total_tokens": prompt + usage["output_tokens"],
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def error_body(api, status, etype, message):
    if api == "anthropic":
        return {"type": "error", "error": {"type": etype, "message": message}}
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    if etype == "context_length_exceeded":
        code, etype = "context_length_exceeded", "invalid_request_error"
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


FAULT_TYPES = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error", 502: "api_error",
               503: "api_error", 504: "api_error", 408: "timeout_error"}
FAULT_TEXT = {429: "Number of request tokens has exceeded your per-minute rate limit", 529: "Overloaded",
              500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
              408: "Request timeout"}


class Handler(BaseHTTPRequestHandler):
    server_version = "llm-double/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("llm-double: " + (fmt % args) + "\n")

    # -- plumbing
    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:16])
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def cut(self, how, obj=None):
        if how == "body" and obj is not None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    # -- routes
    def do_GET(self):
        st = self.server.state
        if self.path.split("?")[0] == "/__double/requests":
            last = re.search(r"[?&]last=(\d+)", self.path)
            with st.lock:
                return self.send_json(200, st.log[-int(last.group(1)):] if last else st.log)
        if self.path == "/__double/failures":
            with st.lock:
                return self.send_json(200, st.failures)
        if self.path == "/__double/state":
            with st.lock:
                return self.send_json(200, {"position": st.position, "turns": len(st.turns),
                                            "requests": st.requests, "failures": len(st.failures)})
        if self.path.split("?")[0] == "/v1/models":
            if self.headers.get("anthropic-version"):
                if not self.auth_ok("anthropic"):
                    return self.send_json(401, error_body("anthropic", 401, "authentication_error",
                                                          "invalid x-api-key"))
                data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                        for m in st.models]
                return self.send_json(200, {"data": data, "has_more": False, "first_id": data[0]["id"],
                                            "last_id": data[-1]["id"]})
            if not self.auth_ok("openai"):
                return self.send_json(401, error_body("openai", 401, "invalid_request_error",
                                                      "Incorrect API key provided"))
            return self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1735689600, "owned_by": "llm-double"} for m in st.models]})
        self.send_json(404, {"error": {"message": "no route for GET %s" % self.path, "type": "not_found_error"}})

    def do_POST(self):
        st = self.server.state
        raw = self.read_body()
        if self.path.startswith("/__double/"):
            return self.control(raw)
        if self.path == "/v1/messages":
            return self.model_request("anthropic", raw)
        if self.path == "/v1/chat/completions":
            return self.model_request("openai", raw)
        with st.lock:
            st.fail("no route for POST %s" % self.path)
        self.send_json(404, {"error": {"message": "no route for POST %s" % self.path, "type": "not_found_error"}})

    def control(self, raw):
        st = self.server.state
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return self.send_json(400, {"error": "bad JSON"})
        with st.lock:
            if self.path == "/__double/script":
                try:
                    st.load(body)
                except ValueError as e:
                    return self.send_json(400, {"error": str(e)})
                return self.send_json(200, {"turns": len(st.turns)})
            if self.path == "/__double/faults":
                items = body if isinstance(body, list) else [body]
                for f in items:
                    times = int(f.get("times", 1))
                    for _ in range(times):
                        st.faults.append(f)
                return self.send_json(200, {"queued": len(st.faults)})
            if self.path == "/__double/reset":
                st.reset()
                return self.send_json(200, {})
        self.send_json(404, {"error": "no control route %s" % self.path})

    def auth_ok(self, api):
        key = self.server.state.api_key
        if api == "anthropic":
            got = self.headers.get("x-api-key")
            return bool(got) and (key is None or got == key)
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return False
        return key is None or auth[7:].strip() == key

    def model_request(self, api, raw):
        st = self.server.state
        entry = {"method": "POST", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                 "status": None}
        with st.lock:
            st.requests += 1
            if len(st.log) < LOG_MAX:
                st.log.append(entry)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        entry["body"] = body if len(raw) < 2_000_000 else {"truncated": len(raw)}
        if not self.auth_ok(api):
            entry["status"] = 401
            with st.lock:
                st.fail("%s request without a valid key" % api)
            msg = "invalid x-api-key" if api == "anthropic" else "Incorrect API key provided"
            return self.send_json(401, error_body(api, 401, "authentication_error" if api == "anthropic"
                                                  else "invalid_request_error", msg))
        if api == "anthropic" and not self.headers.get("anthropic-version"):
            entry["status"] = 400
            with st.lock:
                st.fail("anthropic request without anthropic-version")
            return self.send_json(400, error_body(api, 400, "invalid_request_error",
                                                  "anthropic-version: header is required"))
        try:
            if body is None:
                raise bad("the body is not valid JSON")
            info = validate_anthropic(body) if api == "anthropic" else validate_openai(body)
        except Reject as r:
            entry["status"] = r.status
            with st.lock:
                st.fail("%s: %s" % (api, r.message))
            return self.send_json(r.status, error_body(api, r.status, r.etype, r.message))

        # Queued faults first, then the turn's own.
        with st.lock:
            fault = st.faults.pop(0) if st.faults else None
            turn = st.turns[st.position] if st.position < len(st.turns) else None
            if fault is None and turn is not None and turn.get("fault"):
                tf = turn["fault"]
                if "context_limit" in tf:
                    if len(raw) > int(tf["context_limit"]):
                        fault = {"context": len(raw), "limit": int(tf["context_limit"])}
                elif "slow_ms" in tf:
                    if st.fault_used < int(tf.get("times", 1)):
                        st.fault_used += 1
                        fault = tf
                elif st.fault_used < int(tf.get("times", 1)):
                    st.fault_used += 1
                    fault = tf
        if fault:
            if "slow_ms" in fault:
                time.sleep(int(fault["slow_ms"]) / 1000.0)
            elif "cut" in fault:
                entry["status"] = "cut"
                return self.cut(fault["cut"], {"type": "message", "content": [], "partial": "x" * 2000})
            elif "context" in fault:
                entry["status"] = 400
                if api == "anthropic":
                    msg = "prompt is too long: %d tokens > %d maximum" % (fault["context"] // 4, fault["limit"] // 4)
                    return self.send_json(400, error_body(api, 400, "invalid_request_error", msg))
                msg = ("This model's maximum context length is %d tokens. However, your messages resulted in %d "
                       "tokens. Please reduce the length of the messages." % (fault["limit"] // 4, fault["context"] // 4))
                return self.send_json(400, error_body(api, 400, "context_length_exceeded", msg))
            elif "status" in fault:
                status = int(fault["status"])
                entry["status"] = status
                headers = {}
                if "retry_after" in fault:
                    headers["retry-after"] = str(fault["retry_after"])
                if "retry_after_ms" in fault:
                    headers["retry-after-ms"] = str(fault["retry_after_ms"])
                etype = FAULT_TYPES.get(status, "api_error")
                return self.send_json(status, error_body(api, status, etype,
                                                         fault.get("message") or FAULT_TEXT.get(status, "error")),
                                      headers)
        with st.lock:
            if turn is None:
                entry["status"] = 400
                st.fail("%s: the script has no turn %d" % (api, st.position))
                return self.send_json(400, error_body(api, 400, "invalid_request_error",
                                                      "llm double: the script has no turn %d" % st.position))
            problems = expectations(turn.get("expect"), info)
            if problems:
                entry["status"] = 400
                for p in problems:
                    st.fail("turn %d: %s" % (st.position, p))
                return self.send_json(400, error_body(api, 400, "invalid_request_error",
                                                      "llm double: turn %d: %s" % (st.position, "; ".join(problems))))
            turn_no = st.position
            st.repeat_done += 1
            if st.repeat_done >= int(turn.get("repeat", 1)):
                st.position += 1
                st.repeat_done = 0
                st.fault_used = 0
        reply = build_reply(api, turn.get("reply") or {}, turn_no, len(raw), info["model"])
        entry["status"] = 200
        self.send_json(200, reply)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--script")
    ap.add_argument("--models")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    import os
    state = State(os.environ.get("LLM_DOUBLE_API_KEY") or None, a.models.split(",") if a.models else None)
    if a.script:
        with open(a.script) as f:
            state.load(json.load(f))
    srv = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    srv.daemon_threads = True
    srv.state = state
    srv.quiet = a.quiet
    print("listening on http://%s:%d" % srv.server_address[:2], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
