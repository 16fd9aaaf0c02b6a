"""factory-implement under concurrency, end to end against the GitLab double:
implement jobs started at the same moment never take the same issue, and
healers racing on one stuck claim leave one heal. Each round starts the
jobs behind a barrier; the number of rounds is FACTORY_TEST_ROUNDS (default
10; the report's figure was measured with more).
"""
import json
import os
import threading
import time
import unittest

from lib.double import Double
from lib.implement import (IN_PROGRESS, UP_NEXT, VALIDATION, claim_marker, edit_script, issue, labels_of, mrs_of,
                           notes_of, project_seed, run_implement)
from lib.llm import LLMDouble

ROUNDS = int(os.environ.get("FACTORY_TEST_ROUNDS", "10"))


def marker_kind(body):
    i = body.rfind("<!-- factory:")
    return body[i + len("<!-- factory:"):].split(" ", 1)[0] if i >= 0 else None


def run_together(double, llms, extra=None):
    """Start one implement job per LLM double at the same moment; their results, in order."""
    barrier = threading.Barrier(len(llms))
    results = [None] * len(llms)

    def one(i):
        barrier.wait()
        results[i] = run_implement(double, llms[i], extra=extra)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(llms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class ConcurrencyTest(unittest.TestCase):
    def setUp(self):
        self.d = Double(seed=project_seed())
        self.addCleanup(self.d.stop)

    def fresh(self, issues):
        self.d.reset(default=False)
        self.d.seed(project_seed(issues=issues))

    def check_round(self, results, n_issues):
        taken = [r.data.get("issue") for r in results if r.data.get("merge_request")]
        for r in results:
            self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(taken), len(set(taken)), "two jobs took the same issue: %s" % taken)
        self.assertEqual(sorted(taken), list(range(1, min(len(results), n_issues) + 1)))
        mrs = mrs_of(self.d)
        self.assertEqual(sorted(m["source_branch"] for m in mrs),
                         sorted("factory/%d-task-%d" % (i, i) for i in taken))
        for i in taken:
            self.assertEqual(labels_of(self.d, i), [VALIDATION])
            kinds = [marker_kind(n["body"]) for n in notes_of(self.d, i)]
            # One claim (the loser took its own back), then the delivery.
            self.assertEqual(kinds, ["claim", "event"], kinds)
        return taken

    def test_two_jobs_take_two_different_issues(self):
        scripts = [edit_script("README.md", "# demo", "# Demo %d" % k) for k in range(2)]
        counts, lost, skipped = {}, 0, 0
        for rnd in range(ROUNDS):
            self.fresh([issue("Task %d" % i, iid=i, position=i * 10) for i in (1, 2)])
            with LLMDouble(scripts[0]) as a, LLMDouble(scripts[1]) as b:
                results = run_together(self.d, [a, b])
                self.assertEqual(a.failures() + b.failures(), [])
            taken = self.check_round(results, 2)
            first = results[0].data.get("issue")
            counts[first] = counts.get(first, 0) + 1
            lost += sum(r.counters.get("claims_lost", 0) for r in results)
            skipped += sum(r.counters.get("claims_skipped", 0) for r in results)
        # How the races went is timing, so it is reported, not asserted.
        print("\n  %d rounds: the first job took %s; claims lost to an earlier one: %d, issues skipped as "
              "just taken: %d" % (ROUNDS, counts, lost, skipped))

    def test_claims_posted_at_once_are_decided_by_the_notes(self):
        """Claims on #1 are held back by the double for 1.5 s, so both jobs
        read #1's notes before either claim exists and both post one: the
        earliest note wins, the other job takes its claim back and moves on
        to #2."""
        scripts = [edit_script("README.md", "# demo", "# Demo %d" % k) for k in range(2)]
        for rnd in range(max(1, ROUNDS // 2)):
            self.fresh([issue("Task %d" % i, iid=i, position=i * 10) for i in (1, 2)])
            self.d.faults([{"method": "POST", "path_regex": r"/issues/1/notes$", "delay_ms": 1500, "times": 2}])
            with LLMDouble(scripts[0]) as a, LLMDouble(scripts[1]) as b:
                results = run_together(self.d, [a, b])
            self.check_round(results, 2)
            self.assertEqual(sum(r.counters.get("claims_lost", 0) for r in results), 1,
                             [r.counters for r in results])

    def test_three_jobs_two_issues(self):
        scripts = [edit_script("README.md", "# demo", "# Demo %d" % k) for k in range(3)]
        for rnd in range(max(1, ROUNDS // 2)):
            self.fresh([issue("Task %d" % i, iid=i, position=i * 10) for i in (1, 2)])
            llms = [LLMDouble(s).start() for s in scripts]
            try:
                results = run_together(self.d, llms)
            finally:
                for l in llms:
                    l.stop()
            taken = self.check_round(results, 2)
            idle = [r for r in results if not r.data.get("merge_request")]
            self.assertEqual(len(idle), 1)
            self.assertEqual(idle[0].report["summary"], "nothing to take")

    def test_healers_racing_on_one_claim_leave_one_heal(self):
        for rnd in range(max(1, ROUNDS // 2)):
            self.d.reset(default=False)
            self.d.seed(project_seed())
            now = int(time.time())
            self.d.seed({"issues": [issue("Stuck", labels=(IN_PROGRESS,), iid=1, notes=[
                {"body": claim_marker("old", job=0, branch="factory/1-stuck", started_at=now - 7200,
                                      lease_until=now - 60)}])]})
            results = run_together(self.d, [None, None, None], extra={"FACTORY_IMPLEMENT_TAKE": "false"})
            for r in results:
                self.assertEqual(r.returncode, 0, r)
            kinds = [marker_kind(n["body"]) for n in notes_of(self.d, 1)]
            self.assertEqual(kinds, ["claim", "event"], kinds)
            self.assertEqual(labels_of(self.d, 1), [UP_NEXT])


if __name__ == "__main__":
    unittest.main()
