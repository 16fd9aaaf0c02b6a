"""The feedback widget in a real browser: Debian's chromium driven by playwright-core
(tests/intake_browser/run.js) on a page with a strict Content-Security-Policy, with
factory-intake serve delivering to the GitLab double. Screenshots go to tests/artifacts/."""
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

from lib.double import Double
from lib.intake import IntakeServer, issue_notes, project_issues
from lib.node import ensure_node_modules

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE_DIR = os.path.join(ROOT, "tests", "intake_browser", "page")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
MIN_FILL_MS = 1200


def install_browser():
    """Chromium from Debian, through the project's own install script."""
    if not os.path.exists("/usr/bin/chromium"):
        subprocess.run([os.path.join(ROOT, "scripts", "install-deps.sh"), "browser"], check=True)


class PageServer:
    """The host page on its own origin, served with a strict CSP."""

    def __init__(self, intake_url):
        intake = intake_url
        csp = ("default-src 'none'; script-src 'self' %s; connect-src %s; style-src 'self'; img-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'" % (intake, intake))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = {"/": "index.html", "/page.js": "page.js", "/page.css": "page.css"}.get(self.path)
                if not name:
                    self.send_error(404)
                    return
                with open(os.path.join(PAGE_DIR, name), "rb") as f:
                    body = f.read().replace(b"{{INTAKE}}", intake.encode())
                ctype = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
                self.send_response(200)
                self.send_header("Content-Type", ctype + "; charset=utf-8")
                self.send_header("Content-Security-Policy", csp)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class IntakeBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        install_browser()
        cls.node_dir = ensure_node_modules("tests/intake_browser")

    def test_widget_under_strict_csp_by_mouse_and_keyboard(self):
        double = Double()
        self.addCleanup(double.stop)
        spool = tempfile.mkdtemp(prefix="intake-spool-")
        self.addCleanup(shutil.rmtree, spool, True)
        # Each origin must know the other: pick the intake port first.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        page = PageServer("http://127.0.0.1:%d" % port)
        self.addCleanup(page.stop)
        srv = IntakeServer(double, spool, env={"FACTORY_INTAKE_ALLOWED_ORIGINS": page.url,
                                                "FACTORY_INTAKE_MIN_FILL_MS": str(MIN_FILL_MS),
                                                "FACTORY_INTAKE_LISTEN": "127.0.0.1:%d" % port})
        self.addCleanup(srv.stop)

        run = subprocess.run(["node", os.path.join(self.node_dir, "run.js"), page.url + "/", ARTIFACTS,
                              str(MIN_FILL_MS)], capture_output=True, text=True, timeout=300, cwd=self.node_dir)
        self.assertEqual(run.returncode, 0, run.stderr[-4000:] + run.stdout[-2000:])
        out = json.loads(run.stdout.strip().splitlines()[-1])
        steps = {s["step"]: s for s in out["steps"]}
        self.assertEqual(out["csp"], [])
        self.assertEqual(out["widgetEncoding"], "gzip")  # and it ran: the steps below passed
        self.assertIn("%d ms" % MIN_FILL_MS, steps["server validation"]["message"])
        for name in ("intake-widget-page.png", "intake-widget-errors.png", "intake-widget-sent.png"):
            self.assertGreater(os.path.getsize(os.path.join(ARTIFACTS, name)), 1000)

        srv.wait_delivered(2, timeout=60)
        issues = {i["title"]: i for i in project_issues(double)}
        self.assertEqual(set(issues), {"Mouse: add a dark mode", "Keyboard: cannot find the invoice"})

        mouse = issues["Mouse: add a dark mode"]
        self.assertEqual(sorted(mouse["labels"]), ["source::customer", "type::feature"])
        d = mouse["description"]
        self.assertIn(steps["mouse"]["id"], d)
        self.assertIn(page.url + "/", d)                          # page URL
        self.assertIn("9.9.9-test", d)                            # app version
        self.assertIn("Chrome", d)                                # user agent
        self.assertIn("1024x700", d)                              # viewport
        self.assertIn("Payment failed: card declined", d)         # console.error
        self.assertIn("checkout.js exploded", d)                  # uncaught error
        self.assertNotIn("mouse@example.com", d)
        self.assertEqual(mouse["state"], "opened")                # "/close" in the text did nothing
        self.assertEqual(double.mentions(), [])                   # "@all" notified no one
        notes = [n for n in issue_notes(double, mouse["iid"]) if not n.get("system")]
        self.assertEqual(len(notes), 1)
        self.assertTrue(notes[0]["internal"])
        self.assertIn("email=mouse@example.com", notes[0]["body"])

        keys = issues["Keyboard: cannot find the invoice"]
        self.assertEqual(sorted(keys["labels"]), ["source::customer", "type::support"])
        self.assertIn(steps["keyboard"]["id"], keys["description"])
        self.assertIn("9.9.9-test", keys["description"])          # the site's own version always goes
        self.assertNotIn(page.url, keys["description"])           # opted out of technical details
        self.assertNotIn("Payment failed", keys["description"])


if __name__ == "__main__":
    unittest.main()
