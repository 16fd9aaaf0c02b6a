#!/usr/bin/python3
"""Agent loop benchmark (issue: the coding agent):
- loop overhead per turn, excluding model and tool time (target under 1 ms):
  what factory-implement's own loop spends per turn building the request,
  parsing the answer, checking budgets, cleaning, masking and capping tool
  results and writing the transcript. The job measures it itself (wall time
  of each turn minus the time inside HTTP requests and retry waits, minus the
  time inside the tools) and reports it in report.json;
- peak memory (max RSS) of the job over a 200-turn scripted run, in which
  the conversation grows to its full length (the whole history is sent on
  every turn, as with a real model).
Both providers; three runs each, the median run reported. The LLM double
answers instantly from a script: 200 turns of read_file/search/edit_file
calls, then finish. Writes bench/results/agent.json and prints a summary.
Binaries from $FACTORY_BIN_DIR (default bin/)."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.agentrun import make_repo, remove  # noqa: E402
from lib.factory import binary, job_env  # noqa: E402
from lib.llm import LLMDouble, call, finish, turn  # noqa: E402

TURNS = 200
RUNS = 3
TARGET_US = 1000


def script():
    # Three kinds of turn, cycled: results of a few hundred bytes to a few KB.
    cycle = [
        turn(text="Reading the module.", calls=[call("read_file", path="src/module.py", start_line=1, end_line=40)]),
        turn(calls=[call("search", pattern=r"def f_\d+", path="src")]),
        turn(calls=[call("list_files", path="src")]),
    ]
    turns = [cycle[i % len(cycle)] for i in range(TURNS - 1)]
    return turns + [finish("benchmark run", tested=False, confidence="low")]


def one_run(llm, repo, provider):
    work = tempfile.mkdtemp(prefix="factory-bench-agent-")
    task = os.path.join(work, "task.md")
    with open(task, "w") as f:
        f.write("Read the module and report.\n")
    env = job_env(None)
    env.update(llm.env(provider))
    env["FACTORY_REPORT_DIR"] = os.path.join(work, "report")
    env["FACTORY_AGENT_MAX_TURNS"] = str(TURNS + 10)
    env["FACTORY_AGENT_MAX_INPUT_TOKENS"] = str(10 ** 9)
    env["FACTORY_AGENT_MAX_COST_USD"] = "0"
    llm.load(script())
    t0 = time.perf_counter()
    p = subprocess.Popen([binary("implement"), "agent", "--repo", repo, "--task", task], env=env, cwd=work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, _ = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError("factory-implement failed (%d): %s" % (p.returncode, err[-2000:]))
    with open(os.path.join(work, "report", "report.json")) as f:
        agent = json.load(f)["data"]["agent"]
    remove(work)
    reqs = llm.requests(last=1)
    last = reqs[-1]["body"] if reqs and isinstance(reqs[-1].get("body"), dict) else {}
    return {
        "turns": agent["turns"],
        "loop_overhead_mean_us": round(agent["loop_overhead_us"] / agent["turns"], 1),
        "loop_overhead_max_us": agent["loop_overhead_max_us"],
        "model_s": round(agent["model_us"] / 1e6, 3),
        "tool_s": round(agent["tool_us"] / 1e6, 3),
        "wall_s": round(wall, 3),
        "peak_rss_kb": agent["peak_rss_kb"],
        "last_request_bytes": len(json.dumps(last)),
        "last_request_messages": len(last.get("messages", [])),
    }


def main():
    src = "".join("def f_%d(x):\n    return x + %d\n\n" % (i, i) for i in range(60))
    repo = make_repo({"src/module.py": src, "src/other.py": "X = 1\n", "README.md": "# bench\n"})
    results = {}
    try:
        with LLMDouble() as llm:
            for provider in ("anthropic", "openai"):
                runs = [one_run(llm, repo, provider) for _ in range(RUNS)]
                assert not llm.failures(), llm.failures()
                llm.reset()
                runs.sort(key=lambda r: r["loop_overhead_mean_us"])
                med = runs[len(runs) // 2]
                med["runs_loop_overhead_mean_us"] = [r["loop_overhead_mean_us"] for r in runs]
                med["peak_rss_kb_max"] = max(r["peak_rss_kb"] for r in runs)
                results[provider] = med
    finally:
        remove(repo)
    out = {
        "benchmark": "agent_loop",
        "turns_per_run": TURNS,
        "runs": RUNS,
        "target_loop_overhead_us": TARGET_US,
        "meets_target": all(r["loop_overhead_mean_us"] < TARGET_US for r in results.values()),
        "providers": results,
        "binary": binary("implement"),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "how": "report.json data.agent.loop_overhead_us / turns (wall per turn minus HTTP and retry waits "
               "minus tool time, measured inside the job); peak_rss_kb is the job's VmHWM at the end of the run",
    }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "agent.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    for name, r in results.items():
        print("%-9s %d turns: loop overhead %.1f us/turn mean (max %d us; runs %s), peak RSS %d KiB, "
              "last request %d bytes in %d messages, wall %.2f s (model %.2f s, tools %.2f s)"
              % (name, r["turns"], r["loop_overhead_mean_us"], r["loop_overhead_max_us"],
                 r["runs_loop_overhead_mean_us"], r["peak_rss_kb"], r["last_request_bytes"],
                 r["last_request_messages"], r["wall_s"], r["model_s"], r["tool_s"]))
    print("target < %d us per turn: %s" % (TARGET_US, "met" if out["meets_target"] else "NOT met"))
    return 0 if out["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
