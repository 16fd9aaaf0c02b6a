"""The README's first command stays true: the demo runs the whole loop on its
embedded default and every step does its part."""
import os
import subprocess
import unittest

from lib.factory import BIN_DIR, ROOT, check_sanitizers


class DemoTest(unittest.TestCase):
    def test_demo_runs_the_whole_loop(self):
        env = dict(os.environ, FACTORY_BIN_DIR=BIN_DIR)
        r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        out = r.stdout + r.stderr
        check_sanitizers(out)
        self.assertEqual(r.returncode, 0, out[-6000:])
        for step in ("1-setup", "3-triage", "4-implement", "5-pipeline", "6-implement", "7-release", "8-watch",
                     "9-triage"):
            self.assertTrue(os.path.exists(os.path.join(ROOT, "demo-report", step, "report.json")), step)
        self.assertIn("POST /v1/feedback -> 202", out)
        self.assertIn("email to dana@customer.example", out)
        self.assertIn("webhook posts: 1", out)
        last_board = out[out.rindex('Board "Factory"'):]
        closed = last_board[last_board.index("  Closed"):]
        self.assertIn('#1     [P3] The home page says "Helo, world!"', closed)
        up_next = last_board[last_board.index("workflow::up next"):last_board.index("workflow::in progress")]
        self.assertIn("payment failed for order", up_next)
        self.assertNotIn("sk_live_", out)
        self.assertNotIn("jane.doe@example.com", out)


if __name__ == "__main__":
    unittest.main()
