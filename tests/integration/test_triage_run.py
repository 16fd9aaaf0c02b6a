"""factory-triage end to end against the GitLab double: the data set of
tests/data/triage/ lands with the expected labels and board order, each
decision has a note that explains it, a rerun writes nothing, people's labels
are respected, and classify agrees with the run."""
import json
import re
import unittest

from integration.triage_data import expected_labels, expected_up_next, load, seed_issues
from lib.double import Double
from lib.factory import job_env, run_job

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
WIP = 20
TRIAGE_FAMILY = re.compile(r"^(type::(security|bug|feature|support|feedback|chore)|priority::[1-5]|severity::[1-4]|"
                           r"fast-lane|triage::factory|workflow::up next)$")


def api(double, method, path, body=None):
    r = double.request(method, path, body)
    if r.status >= 400:
        raise AssertionError("%s %s: %d %s" % (method, path, r.status, r.text))
    return r.json()


def writes(requests):
    return [r for r in requests if r["method"] in WRITE_METHODS]


def project_issues(double, **query):
    q = "&".join("%s=%s" % kv for kv in query.items())
    out, page = [], 1
    while True:
        got = api(double, "GET", "/projects/1/issues?state=opened&per_page=100&page=%d%s" % (page, "&" + q if q else ""))
        out += got
        if len(got) < 100:
            return {i["iid"]: i for i in out}
        page += 1


def notes(double, iid):
    return api(double, "GET", "/projects/1/issues/%d/notes?per_page=100&sort=asc" % iid)


def up_next_order(double):
    """Up Next as GitLab shows it: by relative_position."""
    got = api(double, "GET", "/projects/1/issues?state=opened&per_page=100&labels=workflow::up%20next"
                             "&order_by=relative_position&sort=asc")
    return [i["iid"] for i in got]


def triage(double, *args, env_extra=None):
    extra = {"FACTORY_TRIAGE_WIP_LIMIT": str(WIP)}
    extra.update(env_extra or {})
    return run_job("triage", double, *args, env=job_env(double, extra=extra))


class DataSetTest(unittest.TestCase):
    """One project holding the whole data set, triaged once."""

    @classmethod
    def setUpClass(cls):
        cls.double = Double()
        cls.issues = load()
        cls.double.seed({"issues": seed_issues(cls.issues)})
        setup = run_job("setup", cls.double)
        assert setup.returncode == 0, setup
        cls.double.clear_requests()
        cls.run1 = triage(cls.double)
        cls.requests1 = cls.double.requests()
        cls.after = project_issues(cls.double)

    @classmethod
    def tearDownClass(cls):
        cls.double.stop()

    def test_run_succeeds_and_reports_requests(self):
        r = self.run1
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.report["counters"]["api_requests"], len(self.requests1))
        self.assertEqual(r.report["counters"]["issues_seen"], len(self.issues))
        self.assertIn("api_requests", r.report_md or "")
        # one list pass at 100 a page, no per-issue read; one look for the mark label, which
        # factory-setup already made (it is in the catalogue), so triage makes none
        gets = [q for q in self.requests1 if q["method"] == "GET"]
        self.assertEqual([q["path"].rsplit("/", 1)[-1] for q in gets], ["issues", "labels"], gets)
        self.assertEqual(gets[0]["query"].get("per_page"), "100")
        made = [q for q in self.requests1 if q["method"] == "POST" and q["path"].endswith("/labels")]
        self.assertEqual(len(made), 0)
        mark = api(self.double, "GET", "/projects/1/labels/triage::factory")
        self.assertEqual(mark["color"].upper(), "#D4C5F9")
        self.assertIn("factory-triage", mark["description"])

    def test_every_issue_lands_with_its_expected_labels(self):
        wrong = []
        for i in self.issues:
            got = self.after[i["iid"]]
            exp = i["expect"]
            labels = set(got["labels"])
            if exp.get("human"):
                continue  # see test_people_labels_are_kept
            want = set(expected_labels(exp))
            have = {l for l in labels if TRIAGE_FAMILY.match(l) and not l.startswith(("workflow::", "triage::"))}
            if have != want or got["confidential"] != exp["confidential"]:
                wrong.append((i["iid"], i["title"][:40], sorted(have), sorted(want), got["confidential"]))
            self.assertIn("triage::factory", labels, i["title"])
        self.assertEqual(wrong, [])

    def test_people_labels_are_kept(self):
        for i in self.issues:
            if not i["expect"].get("human"):
                continue
            got = self.after[i["iid"]]
            if any(l.startswith("priority::") for l in i["labels"]):
                # a person's priority: left exactly as it is, no note
                self.assertEqual(sorted(l for l in got["labels"] if l != "workflow::up next"), sorted(i["labels"]))
                self.assertEqual([n for n in notes(self.double, i["iid"]) if not n["system"]], [])
            else:
                # a person's type: kept, the rest added, no mark (the person owns it)
                for l in i["labels"]:
                    self.assertIn(l, got["labels"])
                self.assertNotIn("triage::factory", got["labels"])
                self.assertIn("priority::%d" % i["expect"]["priority"], got["labels"])

    def test_unknown_labels_are_never_removed(self):
        for i in self.issues:
            for l in i["labels"]:
                self.assertIn(l, self.after[i["iid"]]["labels"], "label %r of #%d lost" % (l, i["iid"]))

    def test_security_issues_are_p1_and_confidential_even_casual(self):
        casual = [i for i in self.issues if i["title"] == "weird thing with invoices"][0]
        got = self.after[casual["iid"]]
        self.assertTrue(got["confidential"])
        self.assertIn("priority::1", got["labels"])
        self.assertIn("type::security", got["labels"])
        for i in self.issues:
            if i["expect"]["type"] == "security":
                self.assertTrue(self.after[i["iid"]]["confidential"], i["title"])

    def test_board_order_is_the_expected_rank(self):
        want = expected_up_next(self.issues, WIP)
        self.assertEqual(up_next_order(self.double), want)
        # the report names the same list
        self.assertEqual(self.run1.report["data"]["up_next"], want)

    def test_each_decision_has_one_note_that_explains_it(self):
        for i in self.issues:
            if i["expect"].get("human") and any(l.startswith("priority::") for l in i["labels"]):
                continue
            own = [n for n in notes(self.double, i["iid"]) if not n["system"]]
            self.assertEqual(len(own), 1, (i["iid"], own))
            body = own[0]["body"]
            self.assertIn("**Triage:**", body)
            self.assertIn("`priority::%d`" % i["expect"]["priority"], body)
            self.assertIn("Why:", body)
            # the note names a rule, or says why none decided
            self.assertTrue(re.search(r"rule [a-z0-9-]+ \(|by default", body), body)
            # exactly one marker, the Factory's own, at the end
            self.assertEqual(body.count("<!--"), 1, body)
            self.assertRegex(body, r"<!-- factory-triage v1 content=[0-9a-f]{16} labels=\S+ confidential=[01] -->$")
            if i["expect"]["type"] == "security":
                self.assertTrue(own[0].get("internal") or own[0].get("confidential"), own[0])

    def test_notes_neutralise_untrusted_text(self):
        mentions = self.double.mentions()
        self.assertEqual([m for m in mentions if m.get("username") == "all" or "all" in json.dumps(m)], [])
        for i in self.issues:
            for n in notes(self.double, i["iid"]):
                if n["system"]:
                    continue
                for line in n["body"].split("\n"):
                    self.assertFalse(line.lstrip().startswith("/"), line)
                self.assertNotIn("AKIAZ7Q3X9LMN2P4R8TW", n["body"])
                self.assertNotIn("sk_live_4eC39HqLyjWDarjtT1zdp7dc", n["body"])
        # the quick actions in the hostile issue ran nowhere
        hostile = [i for i in self.issues if i["title"] == "/close"][0]
        got = self.after[hostile["iid"]]
        self.assertEqual(got["state"], "opened")
        self.assertFalse(got["confidential"])

    def test_report_lists_every_change(self):
        actions = self.run1.report["actions"]
        labelled = {int(a["target"].lstrip("#")) for a in actions if a["kind"] == "labels"}
        for i in self.issues:
            if not (i["expect"].get("human") and any(l.startswith("priority::") for l in i["labels"])):
                self.assertIn(i["iid"], labelled)
        n_put = len([q for q in self.requests1 if q["method"] == "PUT" and re.search(r"/issues/\d+$", q["path"])])
        self.assertEqual(n_put, len(labelled))
        n_conf = len([a for a in actions if a["kind"] == "confidential"])
        self.assertEqual(n_conf, len([i for i in self.issues if i["expect"]["confidential"]]))
        self.assertEqual(len(self.run1.report["data"]["decisions"]), self.run1.report["counters"]["triaged"])

    def test_classify_gives_the_decision_the_run_made(self):
        for i in self.issues[:40]:
            issue = dict(i)
            issue.pop("expect")
            issue.pop("generate", None)
            r = run_job("triage", None, "classify", stdin=json.dumps(issue))
            self.assertEqual(r.returncode, 0, r)
            d = json.loads(r.stdout)
            got = set(self.after[i["iid"]]["labels"])
            self.assertIn("type::" + d["type"], got)
            self.assertIn("priority::%d" % d["priority"], got)
            self.assertEqual(d["confidential"], self.after[i["iid"]]["confidential"])
            for key in ("type", "severity", "priority", "fast_lane", "confidential", "reasons"):
                self.assertIn(key, d)


class RerunTest(unittest.TestCase):
    def setUp(self):
        self.double = Double()
        self.addCleanup(self.double.stop)
        self.issues = load()
        self.double.seed({"issues": seed_issues(self.issues)})
        self.assertEqual(run_job("setup", self.double).returncode, 0)
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        self.double.clear_requests()

    def test_rerun_writes_nothing(self):
        before = project_issues(self.double)
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        reqs = self.double.requests()
        self.assertEqual(writes(reqs), [])
        self.assertEqual(len(reqs), 1, reqs)  # the list pass: one page of 100
        self.assertEqual(r.report["counters"]["api_writes"], 0)
        self.assertEqual(r.report["actions"], [])
        self.assertIn("no write", r.report["summary"])
        after = project_issues(self.double)
        self.assertEqual({k: sorted(v["labels"]) for k, v in before.items()},
                         {k: sorted(v["labels"]) for k, v in after.items()})

    def test_a_changed_body_is_triaged_again_alone(self):
        dark = [i for i in self.issues if i["title"] == "Dark mode"][0]
        api(self.double, "PUT", "/projects/1/issues/%d" % dark["iid"],
                        {"description": "Since the dark mode beta the app crashes on startup for everyone."})
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        w = writes(self.double.requests())
        targets = {re.sub(r"^/api/v4/projects/[^/]+", "", q["path"]) for q in w if "/reorder" not in q["path"]}
        self.assertEqual(targets, {"/issues/%d" % dark["iid"], "/issues/%d/notes" % dark["iid"]}, w)
        got = api(self.double, "GET", "/projects/1/issues/%d" % dark["iid"])
        self.assertIn("type::bug", got["labels"])
        self.assertIn("priority::2", got["labels"])
        self.assertNotIn("type::feature", got["labels"])
        self.assertNotIn("priority::4", got["labels"])
        # and then it is quiet again
        self.double.clear_requests()
        self.assertEqual(triage(self.double).returncode, 0)
        self.assertEqual(writes(self.double.requests()), [])

    def test_a_person_who_changes_our_labels_takes_the_issue_over(self):
        dark = [i for i in self.issues if i["title"] == "Dark mode"][0]
        api(self.double, "PUT", "/projects/1/issues/%d" % dark["iid"],
                        {"add_labels": "priority::2", "remove_labels": "priority::4"})
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        got = api(self.double, "GET", "/projects/1/issues/%d" % dark["iid"])
        self.assertIn("priority::2", got["labels"])
        self.assertNotIn("triage::factory", got["labels"])
        last = [n for n in notes(self.double, dark["iid"]) if not n["system"]][-1]
        self.assertIn("leaves it to them", last["body"])
        # from now on the issue is the person's: no request about it at all
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([q for q in self.double.requests() if q["method"] != "GET" or "/notes" in q["path"]], [])

    def test_a_person_who_removes_the_priority_asks_for_a_fresh_triage(self):
        dark = [i for i in self.issues if i["title"] == "Dark mode"][0]
        api(self.double, "PUT", "/projects/1/issues/%d" % dark["iid"],
            {"remove_labels": "priority::4", "description": "Since the dark mode beta the app crashes on startup."})
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        got = set(api(self.double, "GET", "/projects/1/issues/%d" % dark["iid"])["labels"])
        self.assertTrue({"type::bug", "priority::2", "severity::2", "triage::factory"} <= got, got)
        self.assertNotIn("type::feature", got)
        self.double.clear_requests()
        self.assertEqual(triage(self.double).returncode, 0)
        self.assertEqual(writes(self.double.requests()), [])

    def test_a_new_issue_joins_and_the_board_is_reordered_minimally(self):
        self.double.seed({"issues": [{"project_id": 1, "title": "Stored XSS in the profile bio",
                                      "description": "<img src=x onerror=alert(1)> runs for every viewer",
                                      "created_at": "2026-01-01T00:00:00.000Z", "upvotes": 50}]})
        self.double.clear_requests()
        r = triage(self.double)
        self.assertEqual(r.returncode, 0, r)
        new = max(project_issues(self.double))
        order = up_next_order(self.double)
        self.assertEqual(order[0], new, order)
        reorders = [q for q in self.double.requests() if q["path"].endswith("/reorder")]
        self.assertLessEqual(len(reorders), 1, reorders)
        self.double.clear_requests()
        self.assertEqual(triage(self.double).returncode, 0)
        self.assertEqual(writes(self.double.requests()), [])


class DryRunTest(unittest.TestCase):
    def test_dry_run_prints_every_decision_and_writes_nothing(self):
        with Double() as double:
            issues = load()
            double.seed({"issues": seed_issues(issues)})
            before = project_issues(double)
            double.clear_requests()
            r = triage(double, "--dry-run")
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(writes(double.requests()), [])
            lines = [l for l in r.stdout.splitlines() if l.startswith("would triage #")]
            n_human_prio = len([i for i in issues if any(l.startswith("priority::") for l in i["labels"])
                                and i["expect"].get("human")])
            self.assertEqual(len(lines), len(issues) - n_human_prio)
            casual = [i for i in issues if i["title"] == "weird thing with invoices"][0]
            self.assertTrue(any(l.startswith("would triage #%d: type::security,priority::1,confidential" % casual["iid"])
                                for l in lines), lines)
            self.assertTrue(r.report["dry_run"])
            self.assertGreater(r.report["counters"]["dry_run_writes"], 0)
            after = project_issues(double)
            self.assertEqual({k: v["labels"] for k, v in before.items()}, {k: v["labels"] for k, v in after.items()})


if __name__ == "__main__":
    unittest.main()
