"""Starting the LLM test double (tests/llm_double/llm_double.py) from tests.

    from lib.llm import LLMDouble
    with LLMDouble(script=[...]) as llm:
        env = llm.env("anthropic")          # FACTORY_LLM_* for a job
        ...
        llm.failures()                      # [] when every request was well formed
        llm.requests()                      # the request log

Scripts are lists of turns (see the double's docstring); helpers below make
the common ones: reply(text=..., calls=[call("read_file", path="a")]).
"""
import json
import os
import subprocess
import sys
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOUBLE = os.path.join(ROOT, "tests", "llm_double", "llm_double.py")
PY = "/usr/bin/python3"

DEFAULT_KEY = "sk-ant-double-0123456789abcdef"
DEFAULT_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o"}


def call(name, **kwargs):
    """A tool call for a scripted reply."""
    return {"name": name, "input": kwargs}


def raw_call(name, raw_arguments):
    """A tool call whose arguments are sent as given (OpenAI), e.g. broken JSON."""
    return {"name": name, "raw_arguments": raw_arguments}


def turn(text="", calls=None, expect=None, fault=None, stop=None, usage=None, repeat=None):
    t = {"reply": {"text": text, "tool_calls": calls or []}}
    if stop:
        t["reply"]["stop"] = stop
    if usage:
        t["reply"]["usage"] = usage
    if expect:
        t["expect"] = expect
    if fault:
        t["fault"] = fault
    if repeat:
        t["repeat"] = repeat
    return t


def finish(summary="done", tested=True, confidence="high", expect=None):
    return turn(calls=[call("finish", summary=summary, tested=tested, confidence=confidence)], expect=expect)


class LLMDouble:
    def __init__(self, script=None, api_key=DEFAULT_KEY, quiet=True):
        self.api_key = api_key
        self.script = script
        self.quiet = quiet
        self.proc = None
        self.url = None

    def start(self):
        args = [PY, DOUBLE, "--listen", "127.0.0.1:0"]
        env = dict(os.environ)
        env.pop("LLM_DOUBLE_API_KEY", None)
        if self.api_key:
            env["LLM_DOUBLE_API_KEY"] = self.api_key  # never on the command line
        if self.quiet:
            args.append("--quiet")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("the LLM double did not start: %r" % line)
        self.url = line[len("listening on "):]
        if self.script is not None:
            self.load(self.script)
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def load(self, script):
        return self._call("POST", "/__double/script", script)

    def fault(self, *faults):
        return self._call("POST", "/__double/faults", list(faults))

    def reset(self):
        return self._call("POST", "/__double/reset", {})

    def requests(self, last=None):
        return self._call("GET", "/__double/requests" + ("?last=%d" % last if last else ""))

    def failures(self):
        return self._call("GET", "/__double/failures")

    def state(self):
        return self._call("GET", "/__double/state")

    def base_url(self, provider):
        return self.url if provider == "anthropic" else self.url + "/v1"

    def env(self, provider="anthropic", model=None, extra=None):
        """FACTORY_LLM_* settings pointing a job at this double, fast retries."""
        e = {
            "FACTORY_LLM_PROVIDER": provider,
            "FACTORY_LLM_BASE_URL": self.base_url(provider),
            "FACTORY_LLM_MODEL": model or DEFAULT_MODEL[provider],
            "FACTORY_LLM_API_KEY": self.api_key,
            "FACTORY_LLM_BACKOFF_MS": "20",
            "FACTORY_LLM_RETRY_BUDGET_MS": "5000",
            "FACTORY_LLM_TIMEOUT_MS": "20000",
        }
        if extra:
            e.update(extra)
        return e
