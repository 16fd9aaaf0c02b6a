"""factory-watch end to end against the GitLab double, with generated production
logs: friction found and filed once, idempotent reruns, notes on re-occurrence,
reopening a closed issue, secrets kept out of GitLab, and bad input."""
import calendar
import gzip
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
import time
import unittest
import urllib.parse

from lib.double import Double
from lib.factory import job_env, run_job

NOW = "2026-11-27T12:00:00Z"
T_NOW = 1795780800  # NOW as unix time
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")

PAY = "payment failed for order {order}: card declined"
TIMEOUT = "timeout calling inventory-service after {ms} ms"
SECRETS = ["alice.smith@example.com", "glpat-Zx9yW8vU7tS6rQ5pO4nM", "4111 1111 1111 1111", "hunter2secret",
           "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + ".%03dZ" % int(round((t % 1) * 1000))


def line(t, level, msg, user, **extra):
    rec = {"time": iso(t), "level": level, "msg": msg, "user_id": user, "route": "/checkout"}
    rec.update(extra)
    return json.dumps(rec)


def baseline_lines():
    """Two hours before the window: both errors happen now and then, from
    many users, plus ordinary traffic."""
    out = []
    start = T_NOW - 15 * 60 - 2 * 3600
    for i in range(24):
        t = start + i * 300
        out.append(line(t, "error", TIMEOUT.format(ms=3000 + i), "u%03d" % (100 + i)))
        out.append(line(t + 60, "error", PAY.format(order=5000 + i), "u%03d" % (200 + i)))
        out.append(line(t + 120, "info", "GET /api/v1/cart 200 in %d ms" % (20 + i), "u%03d" % i))
    return out


def window_lines(alice_times=(0, 20, 40, 80), bob_times=(0, 50, 100)):
    """The window (the last 15 minutes): alice hits the payment error 4 times
    in 80 s (with secrets in her lines), bob the timeout 3 times in 100 s."""
    out = []
    w0 = T_NOW - 10 * 60
    for k, dt in enumerate(alice_times):
        msg = PAY.format(order=9000 + k)
        extra = {}
        if k == 0:
            extra["stack"] = ("CardError: declined for %s\n  token=%s\n  card %s\n  url https://alice:%s@pay.example/x"
                              % (SECRETS[0], SECRETS[1], SECRETS[2], SECRETS[3]))
        out.append(line(w0 + dt, "error", msg, "alice", **extra))
    for dt in bob_times:
        out.append(line(w0 + 5 + dt, "error", TIMEOUT.format(ms=4000 + dt), "bob"))
    for i in range(20):
        out.append(line(w0 + i * 20, "info", "GET /api/v1/items 200 in %d ms" % i, "u%03d" % i))
    return out


class WatchTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)
        self.dir = tempfile.mkdtemp(prefix="watch-logs-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # the baseline in a rotated, gzip-compressed file; the window in the live one
        self.write_logs(baseline_lines(), window_lines())

    def write_logs(self, older, current):
        with gzip.open(os.path.join(self.dir, "app.log.1.gz"), "wt") as f:
            f.write("\n".join(older) + "\n")
        os.utime(os.path.join(self.dir, "app.log.1.gz"), (T_NOW - 7200, T_NOW - 7200))
        with open(os.path.join(self.dir, "app.log"), "w") as f:
            f.write("\n".join(current) + "\n")

    def append_log(self, lines):
        with open(os.path.join(self.dir, "app.log"), "a") as f:
            f.write("\n".join(lines) + "\n")

    def watch(self, *args, now=NOW, command="run", env_extra=None):
        env = job_env(self.double, extra=env_extra)
        return run_job("watch", self.double, "--source", os.path.join(self.dir, "app.log*"), "--now", now,
                       "--window", "15m", "--baseline", "2h", *args, command, env=env)

    def factory_issues(self):
        return [i for i in self.double.state()["issues"] if "source::factory" in i.get("labels", [])]

    def notes_of(self, iid):
        return [n for n in self.double.state()["notes"]
                if n.get("noteable_type") == "Issue" and n.get("noteable_iid") == iid]

    def user_notes(self, iid):
        return [n for n in self.notes_of(iid) if not n.get("system")]

    def writes(self):
        return [r for r in self.double.requests() if r["method"] in WRITE_METHODS]

    def scan_fingerprint(self, template_prefix):
        r = self.watch(command="scan")
        self.assertEqual(r.returncode, 0, r)
        for l in r.stdout.splitlines():
            f = json.loads(l)
            if f["template"].startswith(template_prefix):
                return f
        self.fail("no finding for %r in %s" % (template_prefix, r.stdout))

    # ---- the cases ----

    def test_four_in_two_minutes_is_filed_once(self):
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        issues = self.factory_issues()
        self.assertEqual(len(issues), 1, [i["title"] for i in issues])
        issue = issues[0]
        self.assertIn("payment failed for order", issue["title"])
        self.assertIn("type::bug", issue["labels"])
        self.assertTrue(any(l.startswith("severity::") for l in issue["labels"]), issue["labels"])
        fp = re.search(r"<!-- factory:fingerprint=([0-9a-f]{16}) -->", issue["description"])
        self.assertIsNotNone(fp, issue["description"])
        self.assertIn("<!-- factory:watch-state last_seen=", issue["description"])
        self.assertIn("1 customer hit it 4 times within 120 seconds", issue["description"])
        self.assertIn("| Affected users | 1 |", issue["description"])
        # the same fingerprint as the analysis without GitLab reports
        self.assertEqual(fp.group(1), self.scan_fingerprint("payment failed")["fingerprint"])
        self.assertEqual(r.report["counters"]["issues_filed"], 1)
        found = {f["fingerprint"]: f for f in r.report["data"]["fingerprints"]}
        self.assertTrue(found[fp.group(1)]["friction"])
        self.assertEqual(found[fp.group(1)]["events"], 4)

    def test_three_in_two_minutes_is_not_filed(self):
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        titles = [i["title"] for i in self.factory_issues()]
        self.assertFalse(any("timeout" in t for t in titles), titles)
        finding = self.scan_fingerprint("timeout calling")
        self.assertFalse(finding["friction"])
        self.assertFalse(finding["new"])
        self.assertEqual(finding["count"], 3)
        self.assertEqual(finding["action"], "none")

    def test_second_run_over_the_same_window_adds_nothing(self):
        self.assertEqual(self.watch().returncode, 0)
        issue = self.factory_issues()[0]
        notes_before = len(self.user_notes(issue["iid"]))
        self.double.clear_requests()
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(self.factory_issues()), 1)
        self.assertEqual(len(self.user_notes(issue["iid"])), notes_before)
        self.assertEqual(self.writes(), [])
        # an overlapping later window: the same events are not counted twice
        self.double.clear_requests()
        r = self.watch(now="2026-11-27T12:05:00Z")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.writes(), [])

    def test_later_run_adds_a_note_not_an_issue(self):
        self.assertEqual(self.watch().returncode, 0)
        iid = self.factory_issues()[0]["iid"]
        later = T_NOW + 5 * 60
        self.append_log([line(later, "error", PAY.format(order=777), "carol"),
                         line(later + 30, "error", PAY.format(order=778), "dave")])
        r = self.watch(now="2026-11-27T12:10:00Z")
        self.assertEqual(r.returncode, 0, r)
        issues = self.factory_issues()
        self.assertEqual(len(issues), 1)
        notes = self.user_notes(iid)
        self.assertEqual(len(notes), 1, notes)
        self.assertIn("**2** new events", notes[0]["body"])
        self.assertIn("2 affected users", notes[0]["body"])
        self.assertIn("total=6", issues[0]["description"])
        # and that note is not repeated by a rerun
        r = self.watch(now="2026-11-27T12:10:00Z")
        self.assertEqual(len(self.user_notes(iid)), 1)

    def test_known_fingerprint_on_a_closed_issue_reopens_it(self):
        fp = self.scan_fingerprint("payment failed")["fingerprint"]
        closed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
        self.double.seed({"issues": [{
            "project_id": 1, "title": "[payment] payment failed (fixed?)", "state": "closed",
            "closed_at": closed_at, "labels": ["source::factory", "type::bug", "severity::2"],
            "description": "<!-- factory:fingerprint=%s -->\nolder report\n" % fp}]})
        before = len(self.factory_issues())
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        issues = self.factory_issues()
        self.assertEqual(len(issues), before, [i["title"] for i in issues])
        issue = [i for i in issues if "fixed?" in i["title"]][0]
        self.assertEqual(issue["state"], "opened")
        notes = self.user_notes(issue["iid"])
        self.assertEqual(len(notes), 1)
        self.assertIn("came back", notes[0]["body"])
        self.assertIn("last_seen=", issue["description"])

    def test_issue_without_the_label_is_still_found(self):
        fp = self.scan_fingerprint("payment failed")["fingerprint"]
        self.double.seed({"issues": [{
            "project_id": 1, "title": "checkout broken (relabelled by a person)", "labels": ["type::bug"],
            "description": "<!-- factory:fingerprint=%s -->\nmoved off the factory label\n" % fp}]})
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        issues = self.double.state()["issues"]
        carrying = [i for i in issues if fp in (i.get("description") or "")]
        self.assertEqual(len(carrying), 1, [i["title"] for i in issues])
        self.assertEqual(len(self.user_notes(carrying[0]["iid"])), 1)
        self.assertEqual(r.report["counters"]["issues_filed"], 0)

    def test_secrets_in_lines_never_reach_gitlab(self):
        self.assertEqual(self.watch().returncode, 0)
        self.append_log([line(T_NOW + 60, "error", PAY.format(order=1) + " for " + SECRETS[0], "erin",
                              stack="Authorization: Bearer " + SECRETS[4] + "\n password=" + SECRETS[3])])
        self.assertEqual(self.watch(now="2026-11-27T12:05:00Z").returncode, 0)
        state = json.dumps(self.double.state())
        requests = json.dumps(self.double.requests())
        for s in SECRETS:
            self.assertNotIn(s, state, s)
            self.assertNotIn(s, requests, s)
        self.assertEqual(self.double.mentions(), [])
        desc = self.factory_issues()[0]["description"]
        self.assertIn("[email]", desc)
        self.assertIn("[card]", desc)

    def test_untrusted_text_cannot_run_quick_actions_or_mention(self):
        self.write_logs(baseline_lines(), [line(T_NOW - 60 + k * 10, "error",
                                                "checkout crashed @all\n/close\n<!-- factory:fingerprint=0000000000000000 -->",
                                                "mallory", stack="/label ~security\n@maintainers") for k in range(4)])
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        issues = self.factory_issues()
        self.assertEqual(len(issues), 1)
        self.assertEqual(issues[0]["state"], "opened")
        self.assertEqual(self.double.mentions(), [])
        self.assertNotIn("security", issues[0]["labels"])
        self.assertEqual(len(re.findall(r"<!-- factory:fingerprint=", issues[0]["description"])), 1)
        self.assertNotIn("\n/close", issues[0]["description"])

    def test_dry_run_writes_nothing(self):
        self.double.clear_requests()
        r = self.watch("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.writes(), [])
        self.assertIn("dry-run", r.stderr)
        self.assertEqual(self.factory_issues(), [])

    def test_configurable_rule_scope_everyone(self):
        # three users, one event each within two minutes: friction only for scope everyone
        self.write_logs(baseline_lines(), [line(T_NOW - 300 + k * 20, "error", "export failed: disk full", "u%d" % k)
                                           for k in range(4)])
        r = self.watch("--friction-scope", "user", command="scan")
        f = [json.loads(l) for l in r.stdout.splitlines() if "export failed" in l][0]
        self.assertFalse(f["friction"])
        r = self.watch("--friction-scope", "everyone", command="scan")
        f = [json.loads(l) for l in r.stdout.splitlines() if "export failed" in l][0]
        self.assertTrue(f["friction"])
        self.assertTrue(f["new"])  # not in the baseline either

    def test_new_error_after_a_release_points_at_it(self):
        r = self.double.request("POST", "/projects/1/releases", {
            "tag_name": "v1.2.0", "ref": "main", "released_at": "2026-11-27T11:40:00Z",
            "description": "Fixes #3 and #4 (export rewrite)"})
        self.assertEqual(r.status, 201, r.text)
        self.write_logs(baseline_lines(), [line(T_NOW - 300 + k * 15, "error", "export %d failed: disk full" % k,
                                                "frank") for k in range(4)])
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)
        issues = self.factory_issues()
        self.assertEqual(len(issues), 1, [i["title"] for i in issues])
        desc = issues[0]["description"]
        self.assertIn("it is new", desc)
        self.assertIn("First seen after release **v1.2.0**", desc)
        self.assertIn("which shipped #3, #4", desc)

    def test_rate_jump_of_a_known_error(self):
        spike = [line(T_NOW - 600 + k * 10, "error", TIMEOUT.format(ms=5000 + k), "v%03d" % k) for k in range(40)]
        self.write_logs(baseline_lines(), spike)
        finding = self.scan_fingerprint("timeout calling")
        self.assertTrue(finding["rate_jump"], finding)
        self.assertFalse(finding["friction"])
        self.assertFalse(finding["new"])
        self.assertEqual(finding["users"], 40)
        self.assertEqual(self.watch().returncode, 0)
        issue = [i for i in self.factory_issues() if "timeout" in i["title"]][0]
        self.assertIn("| Affected users | 40 |", issue["description"])
        self.assertIn("severity::", ",".join(issue["labels"]))

    def test_standard_input_source_and_project_rules(self):
        cfg = os.path.join(self.dir, "factory.yml")
        with open(cfg, "w") as f:
            f.write("watch:\n  rules:\n    - name: inventory\n      pattern: 'inventory-service'\n"
                    "      severity: 1\n")
        env = job_env(self.double)
        text = "\n".join(baseline_lines() + window_lines()) + "\n"
        r = run_job("watch", self.double, "--config", cfg, "--source", "-", "--now", NOW, "--window", "15m",
                    "--baseline", "2h", "scan", env=env, stdin=text)
        self.assertEqual(r.returncode, 0, r)
        found = {json.loads(l)["template"]: json.loads(l) for l in r.stdout.splitlines()}
        t = found["timeout calling inventory-service after <*> ms"]
        self.assertEqual(t["class"], "inventory")
        self.assertEqual(t["severity"], 1)
        self.assertEqual(found["payment failed for order <*>: card declined"]["class"], "payment")

    def test_plain_text_with_a_pattern_and_stack_traces(self):
        lines = []
        for k in range(4):
            t = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T_NOW - 240 + k * 30))
            lines += ["%s,123 ERROR [http-%d] user=grace CheckoutService: order %d could not be placed" % (t, k, 70 + k),
                      "java.lang.IllegalStateException: cart %d is empty" % k,
                      "\tat shop.Checkout.place(Checkout.java:%d)" % (40 + k),
                      "\tat shop.Api.post(Api.java:12)"]
            lines.append("%s,500 INFO [http-9] user=henry CheckoutService: order %d placed" % (t, 90 + k))
        with open(os.path.join(self.dir, "app.log"), "w") as f:
            f.write("\n".join(lines) + "\n")
        pattern = r"^(?<time>\S+ \S+) (?<level>[A-Z]+) \[[^\]]*\] user=(?<user>\S+) (?<message>.*)$"
        r = self.watch("--format", "pattern", "--pattern", pattern, command="scan")
        self.assertEqual(r.returncode, 0, r)
        found = [json.loads(l) for l in r.stdout.splitlines()]
        order = [f for f in found if "could not be placed" in f["template"]]
        self.assertEqual(len(order), 1, found)
        self.assertEqual(order[0]["template"], "CheckoutService: order <*> could not be placed")
        self.assertEqual(order[0]["count"], 4)
        self.assertTrue(order[0]["friction"])
        self.assertFalse(any("placed" in f["template"] and "could not" not in f["template"] for f in found))
        # the stack traces went with their records into the issue, not into templates of their own
        self.assertEqual(self.watch("--format", "pattern", "--pattern", pattern).returncode, 0)
        desc = [i for i in self.factory_issues() if "could not be placed" in i["title"]][0]["description"]
        self.assertIn("IllegalStateException", desc)
        self.assertIn("Checkout.java", desc)

    def test_bad_input(self):
        env = job_env(self.double)
        r = run_job("watch", self.double, "run", env=env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("missing setting watch.source", r.stderr)
        r = run_job("watch", self.double, "--source", os.path.join(self.dir, "nope-*.log"), "run", env=env)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("no file matches", r.stderr)
        r = self.watch("--format", "pattern", "--pattern", "(?<message>unclosed")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("bad line pattern", r.stderr)
        r = self.watch("--window", "soon")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("watch.window", r.stderr)
        r = run_job("watch", self.double, "frobnicate", env=env)
        self.assertEqual(r.returncode, 2, r)
        # a log that is not text at all: read, nothing filed, no crash
        with open(os.path.join(self.dir, "app.log"), "wb") as f:
            f.write(os.urandom(200000))
        r = self.watch()
        self.assertEqual(r.returncode, 0, r)

    def test_gitlab_unavailable_is_exit_3(self):
        self.double.faults([{"path_regex": "/issues", "status": 503, "times": -1}])
        r = self.watch()
        self.assertEqual(r.returncode, 3, r)


class LogServer(http.server.ThreadingHTTPServer):
    """A log file over HTTP and a Loki query_range endpoint, on loopback."""

    def __init__(self, text, entries):
        self.text = text
        self.entries = entries      # [(unix ns, line)]
        self.queries = []
        super().__init__(("127.0.0.1", 0), LogHandler)


class LogHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/app.log":
            return self.reply(200, self.server.text)
        if url.path == "/loki/api/v1/query_range":
            q = urllib.parse.parse_qs(url.query)
            self.server.queries.append(q)
            start, end, limit = int(q["start"][0]), int(q["end"][0]), int(q["limit"][0])
            page = [e for e in self.server.entries if start <= e[0] <= end][:limit]
            # two streams, as Loki answers per label set; the reader must merge them in time order
            streams = [{"stream": {"app": "shop", "n": str(k)},
                        "values": [[str(ns), l] for ns, l in page[k::2]]} for k in (0, 1)]
            return self.reply(200, json.dumps({"status": "success", "data": {"resultType": "streams",
                                                                             "result": streams}}),
                              "application/json")
        return self.reply(404, "not found")


class WatchSourcesTest(unittest.TestCase):
    """The same detection over an HTTP URL and over Loki's query_range."""

    def setUp(self):
        self.double = Double()
        self.double.start()
        self.addCleanup(self.double.stop)
        lines = baseline_lines() + window_lines()
        entries = sorted((calendar.timegm(time.strptime(json.loads(l)["time"][:19], "%Y-%m-%dT%H:%M:%S")) * 10 ** 9
                          + int(json.loads(l)["time"][20:23]) * 10 ** 6, l) for l in lines)
        self.server = LogServer("\n".join(lines) + "\n", entries)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.base = "http://127.0.0.1:%d" % self.server.server_address[1]

    def scan(self, *args):
        env = job_env(self.double)
        return run_job("watch", self.double, "--now", NOW, "--window", "15m", "--baseline", "2h", *args, "scan",
                       env=env)

    def findings(self, r):
        self.assertEqual(r.returncode, 0, r)
        return {json.loads(l)["template"]: json.loads(l) for l in r.stdout.splitlines()}

    def test_http_url_source(self):
        f = self.findings(self.scan("--source", self.base + "/app.log"))
        pay = f["payment failed for order <*>: card declined"]
        self.assertTrue(pay["friction"])
        self.assertEqual(pay["count"], 4)
        self.assertEqual(pay["baseline"], 24)

    def test_loki_query_range_with_pages(self):
        env_limit = ("--config", self.config_file("watch:\n  loki_limit: 7\n"))
        f = self.findings(self.scan("--loki-url", self.base, "--loki-query", '{app="shop"} |= "error"', *env_limit))
        pay = f["payment failed for order <*>: card declined"]
        self.assertTrue(pay["friction"])
        self.assertEqual(pay["count"], 4)
        timeout = f["timeout calling inventory-service after <*> ms"]
        self.assertFalse(timeout["friction"])
        self.assertGreater(len(self.server.queries), 5)  # it paged
        # the issue names the query that shows the lines
        r = run_job("watch", self.double, "--now", NOW, "--window", "15m", "--baseline", "2h", "--loki-url",
                    self.base, "--loki-query", '{app="shop"}', "run", env=job_env(self.double))
        self.assertEqual(r.returncode, 0, r)
        desc = [i for i in self.double.state()["issues"] if "payment" in i["title"]][0]["description"]
        self.assertIn('- LogQL: `{app="shop"} |= "payment failed for order"`', desc)
        q = self.server.queries[0]
        self.assertEqual(q["query"][0], '{app="shop"} |= "error"')
        self.assertEqual(q["direction"][0], "forward")
        self.assertEqual(int(q["end"][0]), T_NOW * 10 ** 9)

    def test_unreachable_url_is_exit_3(self):
        r = self.scan("--source", "http://127.0.0.1:1/app.log")
        self.assertEqual(r.returncode, 3, r)

    def config_file(self, text):
        fd, path = tempfile.mkstemp(suffix=".yml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path


if __name__ == "__main__":
    unittest.main()
