"""Grouping accuracy of factory-watch's template mining on the Loghub 2k sets.

As in the Loghub benchmark, the Content column of each set's structured CSV
is fed to `factory-watch templates`, one message per line, and the grouping
accuracy (GA) is computed against the EventId ground truth. Each set must
reach at least Drain's published GA, and the mean over the sets at least
0.95. The data stays in ../shared/data/loghub (or $FACTORY_LOGHUB_DIR)."""
import os
import unittest

from lib.factory import binary, check_sanitizers
from lib.loghub import DRAIN_GA, SETS, grouping_accuracy, grouping_accuracy_of_set, loghub_dir, run_templates

MEAN_TARGET = 0.95


class GroupingAccuracyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.isdir(loghub_dir()):
            raise AssertionError("Loghub data not found in %s (set FACTORY_LOGHUB_DIR)" % loghub_dir())
        cls.results = {}
        for name in SETS:
            cls.results[name] = grouping_accuracy_of_set(binary("watch"), name)

    def test_each_set_reaches_drain(self):
        for name in SETS:
            ga, detail = self.results[name]
            with self.subTest(set=name):
                self.assertGreaterEqual(round(ga, 3), DRAIN_GA[name],
                                        "%s: GA %.4f below Drain's %.3f (%s)" % (name, ga, DRAIN_GA[name], detail))

    def test_mean_reaches_target(self):
        mean = sum(self.results[n][0] for n in SETS) / len(SETS)
        self.assertGreaterEqual(mean, MEAN_TARGET, "mean GA %.4f" % mean)

    def test_one_output_line_per_message(self):
        for name in SETS:
            detail = self.results[name][1]
            self.assertEqual(detail["lines"], 2000, name)
            self.assertGreater(detail["predicted_groups"], 1, name)


class GroupingAccuracyMetricTest(unittest.TestCase):
    """The GA computation itself, on cases worked by hand."""

    def test_exact_groups(self):
        self.assertEqual(grouping_accuracy(["a", "a", "b"], [1, 1, 2]), 1.0)

    def test_merged_groups_count_nothing(self):
        self.assertEqual(grouping_accuracy(["a", "a", "b"], [1, 1, 1]), 0.0)

    def test_split_group_counts_nothing(self):
        self.assertAlmostEqual(grouping_accuracy(["a", "a", "b", "c"], [1, 2, 3, 4]), 0.5)


class TemplatesCommandTest(unittest.TestCase):
    def test_templates_of_a_small_log(self):
        out = run_templates(binary("watch"), [
            "payment failed for order 17: card declined",
            "payment failed for order 2001: card declined",
            "user 42 logged in from 10.0.0.1",
            "",
        ])
        self.assertEqual(out[0][0], out[1][0])
        self.assertNotEqual(out[0][0], out[2][0])
        self.assertEqual(out[1][1], "payment failed for order <*>: card declined")
        self.assertEqual(out[2][1], "user <*> logged in from <*>")
        self.assertEqual(out[3][1], "")

    def test_ids_are_stable_across_runs(self):
        lines = ["disk %d full on node-%d" % (i, i % 7) for i in range(50)]
        self.assertEqual(run_templates(binary("watch"), lines), run_templates(binary("watch"), lines))


if __name__ == "__main__":
    unittest.main()
