#!/usr/bin/python3
"""Run every test of the Factory and end with one line "N passed, N failed".

Passes:
  1. unit      tests/unit/*_test.c, one Criterion binary each (build/tests/)
  2. python    tests/gitlab_double/test_*.py and tests/integration/test_*.py
               (stdlib unittest; integration tests run the real binaries
               against the GitLab and LLM doubles; FACTORY_BIN_DIR says where
               the binaries are)
  3. the same two passes again, built with ASan+UBSan (build-san/), where
     any sanitizer report fails the test
  4. extra     tests/extra/*.sh scripts (each exit 0 = pass), e.g. static build

Options: --no-san (skip pass 3, for quick local runs; CI runs all),
         --only PATTERN (run only test files whose name contains PATTERN).
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"

totals = {"passed": 0, "failed": 0}
failures = []


def say(msg):
    print(msg, flush=True)


def make(*targets, san=False):
    cmd = ["make", "-j2", "-s"] + (["SAN=1"] if san else []) + list(targets)
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode != 0:
        say("build failed: " + " ".join(cmd))
        totals["failed"] += 1
        failures.append("build" + (" (sanitizers)" if san else ""))
        return False
    return True


class Capped:
    def __init__(self, returncode, stdout):
        self.returncode = returncode
        self.stdout = stdout


def run_capped(cmd, env, timeout):
    """Run `cmd` with stdin closed; a run past `timeout` seconds is killed
    (its whole process group) and counts as a failure with what it printed."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return Capped(p.returncode, out)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, 9)
        except OSError:
            pass
        out, _ = p.communicate()
        return Capped(-9, (out or "") + "\n[timed out after %d s: killed]\n" % timeout)


SYNTH = re.compile(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")


def run_unit(build_dir, label, only):
    tests_dir = os.path.join(ROOT, build_dir, "tests")
    if not os.path.isdir(tests_dir):
        return
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for name in sorted(os.listdir(tests_dir)):
        if not name.endswith("_test") or (only and only not in name):
            continue
        path = os.path.join(tests_dir, name)
        t0 = time.time()
        r = run_capped([path], env, 600)
        out = r.stdout
        m = SYNTH.search(out)
        san_report = "ERROR: AddressSanitizer" in out or "runtime error:" in out or \
            "ERROR: LeakSanitizer" in out
        if m:
            passed = int(m.group(2))
            failed = int(m.group(3)) + int(m.group(4))
        else:
            passed, failed = 0, 1
        if san_report and failed == 0:
            failed = 1
            passed = max(0, passed - 1)
        totals["passed"] += passed
        totals["failed"] += failed
        status = "ok" if failed == 0 and r.returncode == 0 else "FAIL"
        if status == "FAIL" and failed == 0:
            failed = 1
            totals["failed"] += 1
        say("%-5s %s %s: %d passed, %d failed (%.1fs)" % (status, label, name, passed, failed, time.time() - t0))
        if status == "FAIL":
            failures.append("%s %s" % (label, name))
            sys.stdout.write(out[-6000:] + "\n")


UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in", re.M)
UNITTEST_FAILED = re.compile(r"^FAILED \((.*)\)", re.M)


def run_python(label, bin_dir, only, san):
    files = []
    for d in ("tests/gitlab_double", "tests/llm_double", "tests/integration"):
        full = os.path.join(ROOT, d)
        if os.path.isdir(full):
            for name in sorted(os.listdir(full)):
                if name.startswith("test_") and name.endswith(".py") and (not only or only in name):
                    files.append(os.path.join(d, name))
    env = dict(os.environ)
    env["FACTORY_BIN_DIR"] = os.path.join(ROOT, bin_dir)
    env["PYTHONPATH"] = os.path.join(ROOT, "tests") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if san:
        env["FACTORY_SANITIZED"] = "1"
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for f in files:
        if san and (f.startswith("tests/gitlab_double") or f.startswith("tests/llm_double")):
            continue  # the doubles are Python: nothing to sanitize there
        t0 = time.time()
        r = run_capped([PY, "-m", "unittest", "-v", f.replace("/", ".")[:-3]], env, 1800)
        out = r.stdout
        m = UNITTEST_RAN.search(out)
        ran = int(m.group(1)) if m else 0
        failed = 0
        fm = UNITTEST_FAILED.search(out)
        if fm:
            for part in fm.group(1).split(","):
                k, _, v = part.strip().partition("=")
                if k in ("failures", "errors", "unexpected successes"):
                    failed += int(v)
        skipped = len(re.findall(r"\.\.\. skipped", out))
        passed = ran - failed - skipped
        if not m:
            failed = max(failed, 1)
        if r.returncode != 0 and failed == 0:
            failed = 1
        if skipped:
            # a skipped check is a defect here: count it as a failure
            failed += skipped
        totals["passed"] += max(0, passed)
        totals["failed"] += failed
        status = "ok" if failed == 0 else "FAIL"
        say("%-5s %s %s: %d passed, %d failed (%.1fs)" % (status, label, f, max(0, passed), failed, time.time() - t0))
        if status == "FAIL":
            failures.append("%s %s" % (label, f))
            sys.stdout.write(out[-8000:] + "\n")


def run_extra(only):
    d = os.path.join(ROOT, "tests", "extra")
    if not os.path.isdir(d):
        return
    for name in sorted(os.listdir(d)):
        if not name.endswith(".sh") or (only and only not in name):
            continue
        t0 = time.time()
        r = run_capped(["bash", os.path.join(d, name)], dict(os.environ), 1800)
        ok = r.returncode == 0
        totals["passed" if ok else "failed"] += 1
        say("%-5s extra %s (%.1fs)" % ("ok" if ok else "FAIL", name, time.time() - t0))
        if not ok:
            failures.append("extra " + name)
            sys.stdout.write(r.stdout[-6000:] + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-san", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()

    if make("all", "unit-bins"):
        run_unit("build", "unit", args.only)
        run_python("python", "bin", args.only, False)
    if not args.no_san:
        if make("all", "unit-bins", san=True):
            run_unit("build-san", "unit+san", args.only)
            run_python("python+san", "build-san/bin", args.only, True)
    run_extra(args.only)
    if failures:
        say("failed: " + "; ".join(failures))
    say("%d passed, %d failed" % (totals["passed"], totals["failed"]))
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
