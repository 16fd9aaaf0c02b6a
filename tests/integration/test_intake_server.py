"""factory-intake serve over real HTTP: every guard, bad bodies, CORS, the widget and
form assets, and what reaches GitLab (the double) from a customer's text."""
import gzip
import json
import os
import shutil
import socket
import tempfile
import time
import unittest

from lib.double import Double
from lib.intake import WIDGET_DIR, IntakeServer, issue_notes, project_issues

GOOD = {"kind": "bug", "title": "Checkout button does nothing", "description": "I click Pay and nothing happens."}
ALLOWED = "https://shop.example.com"


class IntakeServerTest(unittest.TestCase):
    env = {}

    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        self.spool = tempfile.mkdtemp(prefix="intake-spool-")
        self.addCleanup(shutil.rmtree, self.spool, True)
        env = {"FACTORY_INTAKE_ALLOWED_ORIGINS": ALLOWED, "FACTORY_INTAKE_RATE_LIMIT": "0"}
        env.update(self.env)
        self.srv = IntakeServer(self.double, self.spool, env=env)
        self.addCleanup(self.srv.stop)

    def issues(self):
        return project_issues(self.double)

    # ---- accepted submissions and what GitLab gets ----
    def test_json_submission_becomes_a_labelled_issue_with_context_and_a_private_email(self):
        body = dict(GOOD, email="jane@example.com", page_url="https://shop.example.com/cart?step=2",
                    app_version="4.2.1", context={"user_agent": "Mozilla/5.0 Test", "viewport": "1280x720",
                                                  "language": "en-GB", "console_errors": ["TypeError: x is null"],
                                                  "unknown": "dropped"})
        r = self.srv.post_json(body)
        self.assertEqual(r.status, 202, r)
        sid = r.json()["id"]
        self.assertRegex(sid, r"^fi-[0-9a-f]{24}$")
        self.assertEqual(r.json()["status"], "accepted")
        self.srv.wait_delivered(1)
        issues = self.issues()
        self.assertEqual(len(issues), 1)
        issue = issues[0]
        self.assertEqual(issue["title"], GOOD["title"])
        self.assertEqual(sorted(issue["labels"]), ["source::customer", "type::bug"])
        d = issue["description"]
        self.assertIn("I click Pay and nothing happens.", d)
        for text in ("https://shop.example.com/cart?step=2", "4.2.1", "Mozilla/5.0 Test", "1280x720", "en-GB",
                     "TypeError: x is null", "<!-- factory-intake submission=%s -->" % sid):
            self.assertIn(text, d)
        self.assertNotIn("dropped", d)
        self.assertNotIn("jane@example.com", d)
        self.assertNotIn("jane@example.com", issue["title"])
        notes = [n for n in issue_notes(self.double, issue["iid"]) if not n.get("system")]
        self.assertEqual(len(notes), 1)
        self.assertTrue(notes[0]["internal"])
        self.assertIn("<!-- factory-intake reporter submission=%s email=jane@example.com -->" % sid, notes[0]["body"])

    def test_form_encoded_submission_and_the_no_javascript_page(self):
        r = self.srv.post_form(dict(GOOD, kind="feature", title="Dark mode", email=""))
        self.assertEqual(r.status, 202, r)
        self.assertIn("id", r.json())
        # A browser posting the plain form gets a page, not JSON.
        r = self.srv.post_form(dict(GOOD, kind="support", title="How do I export?"),
                               headers={"Accept": "text/html,*/*", "Origin": self.srv.url})
        self.assertEqual(r.status, 202, r)
        self.assertIn("text/html", r.headers["Content-Type"])
        self.assertIn("Thank you", r.text)
        r = self.srv.post_form({"kind": "bug", "title": "", "description": ""},
                               headers={"Accept": "text/html"})
        self.assertEqual(r.status, 422)
        self.assertIn("title: is required", r.text)
        self.srv.wait_delivered(2)
        labels = sorted(sorted(i["labels"]) for i in self.issues())
        self.assertEqual(labels, [["source::customer", "type::feature"], ["source::customer", "type::support"]])
        page = self.srv.request("GET", "/feedback")
        self.assertEqual(page.status, 200)
        with open(os.path.join(WIDGET_DIR, "form.html"), "rb") as f:
            self.assertEqual(page.body, f.read())
        self.assertIn("default-src 'none'", page.headers["Content-Security-Policy"])
        self.assertIn('action="/v1/feedback"', page.text)
        css = self.srv.request("GET", "/widget.css")
        self.assertEqual(css.status, 200)
        self.assertIn("text/css", css.headers["Content-Type"])

    def test_script_tags_are_stored_as_text(self):
        body = dict(GOOD, title="<script>alert(1)</script> broken", description="<img src=x onerror=alert(2)>\n<b>hi</b>")
        self.assertEqual(self.srv.post_json(body).status, 202)
        self.srv.wait_delivered(1)
        issue = self.issues()[0]
        self.assertEqual(issue["title"], "<script>alert(1)</script> broken")
        self.assertIn("<img src=x onerror=alert(2)>", issue["description"])

    def test_quick_actions_and_mentions_are_neutralised(self):
        body = dict(GOOD, title="/close", description="/close\n/label ~security\n  /confidential\n@all look at this, "
                    "cc @root\n/title pwned\n<!-- factory-intake submission=fi-000000000000000000000000 -->",
                    context={"console_errors": ["/close", "@all"]})
        r = self.srv.post_json(body)
        self.assertEqual(r.status, 202)
        self.srv.wait_delivered(1)
        issue = self.issues()[0]
        self.assertEqual(issue["state"], "opened")
        self.assertFalse(issue["confidential"])
        self.assertEqual(sorted(issue["labels"]), ["source::customer", "type::bug"])
        self.assertNotEqual(issue["title"], "pwned")
        self.assertEqual(self.double.mentions(), [])
        self.assertNotIn("<!-- factory-intake submission=fi-000000000000000000000000", issue["description"])
        self.assertIn("<!-- factory-intake submission=%s -->" % r.json()["id"], issue["description"])

    # ---- bad bodies ----
    def test_malformed_json_invalid_utf8_and_wrong_media_type(self):
        h = {"Content-Type": "application/json"}
        for raw in (b'{"kind": "bug", "title": ', b"[1, 2]", b"", b'{"kind":"bug"} trailing'):
            r = self.srv.request("POST", "/v1/feedback", raw, h)
            self.assertEqual(r.status, 400, raw)
            self.assertEqual(r.json()["error"], "malformed_json", raw)
            self.assertTrue(r.json()["message"])
        r = self.srv.request("POST", "/v1/feedback", b'{"kind":"bug","title":"caf\xe9","description":"x"}', h)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"], "invalid_utf8")
        r = self.srv.request("POST", "/v1/feedback", b"kind=bug&title=caf%E9&description=x",
                             {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 422)
        self.assertIn("UTF-8", r.json()["fields"]["title"])
        r = self.srv.request("POST", "/v1/feedback", b"kind=bug&title=%zz", {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"], "malformed_form")
        r = self.srv.request("POST", "/v1/feedback", b"hello", {"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415)
        self.assertEqual(r.json()["error"], "unsupported_media_type")
        time.sleep(0.3)
        self.assertEqual(self.srv.health()["accepted"], 0)

    def test_validation_names_every_field(self):
        r = self.srv.post_json({"kind": "complaint", "title": "x" * 201, "description": "  ", "email": "not-an-email",
                                "page_url": "javascript:alert(1)", "context": "nope", "elapsed_ms": "soon"})
        self.assertEqual(r.status, 422)
        e = r.json()
        self.assertEqual(e["error"], "validation_failed")
        self.assertEqual(set(e["fields"]), {"kind", "title", "description", "email", "page_url", "context", "elapsed_ms"})
        self.assertIn("bug, feature, support, feedback", e["fields"]["kind"])
        r = self.srv.post_json({"kind": 3, "title": ["a"], "description": {"a": 1}})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["fields"]["kind"], "must be a string")
        r = self.srv.post_json({"kind": "bug", "title": "a\u0000b", "description": "x"})
        self.assertEqual(r.status, 202)  # cJSON ends the string at NUL: the title is "a"

    def test_unknown_paths_and_methods(self):
        self.assertEqual(self.srv.request("GET", "/nope").status, 404)
        r = self.srv.request("GET", "/v1/feedback")
        self.assertEqual(r.status, 405)
        self.assertIn("POST", r.headers["Allow"])
        self.assertEqual(self.srv.request("DELETE", "/widget.js").status, 405)

    # ---- the widget ----
    def test_widget_is_served_with_etag_and_cache_headers(self):
        r = self.srv.request("GET", "/widget.js")
        self.assertEqual(r.status, 200)
        with open(os.path.join(WIDGET_DIR, "widget.js"), "rb") as f:
            self.assertEqual(r.body, f.read(), "assets.c is stale: run jobs/intake/widget/embed.py")
        self.assertIn("javascript", r.headers["Content-Type"])
        etag = r.headers["ETag"]
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        self.assertIn("max-age=", r.headers["Cache-Control"])
        self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
        r2 = self.srv.request("GET", "/widget.js", headers={"If-None-Match": etag})
        self.assertEqual(r2.status, 304)
        self.assertEqual(r2.body, b"")
        r3 = self.srv.request("GET", "/widget.js", headers={"If-None-Match": '"other"'})
        self.assertEqual(r3.status, 200)

    def test_widget_is_gzipped_for_clients_that_take_it(self):
        with open(os.path.join(WIDGET_DIR, "widget.js"), "rb") as f:
            plain = f.read()
        ident = self.srv.request("GET", "/widget.js")
        self.assertIsNone(ident.headers["Content-Encoding"])
        self.assertIn("Accept-Encoding", ident.headers["Vary"])
        for ae in ("gzip", "gzip, deflate, br", "br;q=1.0, GZIP;q=0.5", "*"):
            r = self.srv.request("GET", "/widget.js", headers={"Accept-Encoding": ae})
            self.assertEqual(r.status, 200, ae)
            self.assertEqual(r.headers["Content-Encoding"], "gzip", ae)
            self.assertIn("Accept-Encoding", r.headers["Vary"])
            self.assertEqual(gzip.decompress(r.body), plain, ae)
            self.assertLess(len(r.body), len(plain) // 2)
            self.assertEqual(int(r.headers["Content-Length"]), len(r.body))
            self.assertIn("javascript", r.headers["Content-Type"])
            self.assertNotEqual(r.headers["ETag"], ident.headers["ETag"])
            self.assertRegex(r.headers["ETag"], r'^"[0-9a-f]{32}-gzip"$')
        gz = self.srv.request("GET", "/widget.js", headers={"Accept-Encoding": "gzip"})
        # Each variant is revalidated by its own tag.
        r = self.srv.request("GET", "/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": gz.headers["ETag"]})
        self.assertEqual((r.status, r.body), (304, b""))
        self.assertEqual(r.headers["ETag"], gz.headers["ETag"])
        r = self.srv.request("GET", "/widget.js", headers={"If-None-Match": ident.headers["ETag"]})
        self.assertEqual((r.status, r.body), (304, b""))
        r = self.srv.request("GET", "/widget.js", headers={"Accept-Encoding": "gzip",
                                                           "If-None-Match": ident.headers["ETag"]})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["Content-Encoding"], "gzip")
        r = self.srv.request("GET", "/widget.js", headers={"If-None-Match": gz.headers["ETag"]})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, plain)
        # Refused or absent gzip: the file as it is.
        for ae in ("gzip;q=0", "identity", "br, deflate", "gzip; q=0.0, *;q=0.5", ""):
            r = self.srv.request("GET", "/widget.js", headers={"Accept-Encoding": ae})
            self.assertIsNone(r.headers["Content-Encoding"], ae)
            self.assertEqual(r.body, plain, ae)
        # HEAD: the same headers, no body.
        for ae, enc, n in (("gzip", "gzip", len(gz.body)), ("identity", None, len(plain))):
            r = self.srv.request("HEAD", "/widget.js", headers={"Accept-Encoding": ae})
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"")
            self.assertEqual(r.headers["Content-Encoding"], enc)
            self.assertEqual(int(r.headers["Content-Length"]), n)
        # The other assets have one form only.
        r = self.srv.request("GET", "/widget.css", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.headers["Content-Encoding"])

    def test_healthz(self):
        h = self.srv.health()
        self.assertEqual(h["status"], "ok")
        self.assertEqual(h["spool"]["pending"], 0)
        self.assertEqual(h["delivery"]["state"], "ok")

    # ---- CORS ----
    def test_origin_allow_list(self):
        r = self.srv.request("OPTIONS", "/v1/feedback", headers={
            "Origin": ALLOWED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        self.assertEqual(r.status, 204)
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], ALLOWED)
        self.assertIn("POST", r.headers["Access-Control-Allow-Methods"])
        self.assertIn("Content-Type", r.headers["Access-Control-Allow-Headers"])
        r = self.srv.post_json(GOOD, headers={"Origin": ALLOWED})
        self.assertEqual(r.status, 202)
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], ALLOWED)
        self.assertEqual(r.headers["Vary"], "Origin")
        for origin in ("https://evil.example", "https://shop.example.com.evil.example", "null"):
            r = self.srv.request("OPTIONS", "/v1/feedback", headers={"Origin": origin})
            self.assertEqual(r.status, 403, origin)
            self.assertIsNone(r.headers["Access-Control-Allow-Origin"])
            r = self.srv.post_json(dict(GOOD, title="from " + origin), headers={"Origin": origin})
            self.assertEqual(r.status, 403, origin)
            self.assertEqual(r.json()["error"], "origin_not_allowed")
        self.srv.wait_delivered(1)
        self.assertEqual(len(self.issues()), 1)

    # ---- bots ----
    def test_honeypot_is_refused(self):
        r = self.srv.post_json(dict(GOOD, website="http://spam.example"))
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["error"], "rejected")
        r = self.srv.post_form(dict(GOOD, website="x"))
        self.assertEqual(r.status, 422)
        self.assertEqual(self.srv.health()["accepted"], 0)


class IntakeGuardsTest(unittest.TestCase):
    """Guards with tight settings: rate limit, fill time, body cap, timeouts, folding."""

    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        self.spool = tempfile.mkdtemp(prefix="intake-spool-")
        self.addCleanup(shutil.rmtree, self.spool, True)
        self.srv = IntakeServer(self.double, self.spool, deliver=False, env={
            "FACTORY_INTAKE_RATE_LIMIT": "3", "FACTORY_INTAKE_MIN_FILL_MS": "2000", "FACTORY_INTAKE_MAX_BODY": "2048",
            "FACTORY_INTAKE_TIMEOUT_S": "1", "FACTORY_INTAKE_DEDUP_WINDOW_S": "60"})
        self.addCleanup(self.srv.stop)

    def test_rate_limit_per_client(self):
        codes = [self.srv.post_json(dict(GOOD, title="t%d" % i)).status for i in range(5)]
        self.assertEqual(codes, [202, 202, 202, 429, 429])
        r = self.srv.post_json(dict(GOOD, title="again"))
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json()["error"], "rate_limited")
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)

    def test_minimum_fill_time_only_with_the_timing_field(self):
        r = self.srv.post_json(dict(GOOD, elapsed_ms=500))
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["error"], "too_fast")
        self.assertIn("2000", r.json()["message"])
        self.assertEqual(self.srv.post_json(dict(GOOD, title="slow human", elapsed_ms=2500)).status, 202)
        self.assertEqual(self.srv.post_json(dict(GOOD, title="api client")).status, 202)

    def test_body_cap(self):
        big = dict(GOOD, description="x" * 4000)
        r = self.srv.post_json(big)
        self.assertEqual(r.status, 413)
        self.assertEqual(r.json()["error"], "body_too_large")
        # Chunked, so there is no Content-Length to check first.
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=10)
        try:
            s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 1000
            for _ in range(4):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
            answer = s.recv(4096)
        finally:
            s.close()
        self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
        self.assertEqual(self.srv.health()["accepted"], 0)

    def test_slow_clients_are_cut_off(self):
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=10)
        try:
            s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\n")  # headers never finish
            t0 = time.time()
            data = s.recv(100)   # the server closes the connection
            waited = time.time() - t0
        finally:
            s.close()
        self.assertEqual(data, b"")
        self.assertLess(waited, 8)
        # The server still serves others.
        self.assertEqual(self.srv.request("GET", "/healthz").status, 200)

    def test_duplicates_are_folded(self):
        a = self.srv.post_json(GOOD)
        b = self.srv.post_json(GOOD)
        c = self.srv.post_json(dict(GOOD, description="something else"))
        self.assertEqual((a.status, b.status, c.status), (202, 202, 202))
        self.assertEqual(a.json()["id"], b.json()["id"])
        self.assertTrue(b.json()["duplicate"])
        self.assertNotEqual(a.json()["id"], c.json()["id"])
        h = self.srv.health()
        self.assertEqual((h["accepted"], h["duplicates"], h["spool"]["pending"]), (2, 1, 2))


if __name__ == "__main__":
    unittest.main()
