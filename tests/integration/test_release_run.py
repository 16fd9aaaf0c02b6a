"""factory-release end to end against the GitLab double, a local SMTP sink and
a local chat webhook: closed issues of every type give the expected grouped
notes, the release on its tag, the CHANGELOG.md commit, the verdict labels,
one note per customer-facing issue, exactly one email per reporter, one chat
post; a rerun sends and writes nothing; the next release takes only what is
new with the next version; nothing changed means no release."""
import json
import unittest

from integration.release_world import SECRET_TITLES, World, section, sid
from lib.factory import run_job


class FirstReleaseTest(unittest.TestCase):
    def setUp(self):
        self.w = World(self)
        self.w.build_first_release()
        self.r = self.w.release()
        self.assertEqual(self.r.returncode, 0, self.r)

    def test_notes_are_grouped_by_type(self):
        notes = self.w.notes_artifact()
        self.assertTrue(notes.startswith("## 0.1.0 ("), notes)
        headings = [l for l in notes.splitlines() if l.startswith("### ")]
        self.assertEqual(headings, ["### Security", "### New features", "### Fixes", "### Performance",
                                    "### Internal"], notes)
        self.assertEqual(section(notes, "Security"), ["- A security issue was fixed. We recommend upgrading."])
        features = section(notes, "New features")
        self.assertEqual(len(features), 3, features)
        self.assertTrue(features[0].startswith("- You can now export your invoices as CSV files ([#1]("), features)
        self.assertIn("[!1](", features[0])
        self.assertEqual(features[1], "- A privately requested improvement")
        self.assertTrue(features[2].startswith("- Add dark mode (["), features)
        fixes = section(notes, "Fixes")
        self.assertEqual(len(fixes), 2, fixes)
        self.assertTrue(fixes[0].startswith("- Login fails with SSO ([#2]("), fixes)
        self.assertIn("[!2](", fixes[0])
        self.assertTrue(fixes[1].startswith("- Typo on the pricing page ([#11]("), fixes)
        self.assertEqual(len(section(notes, "Performance")), 1)
        self.assertTrue(section(notes, "Performance")[0].startswith("- Search is slow ([#5]("))
        internal = section(notes, "Internal")
        self.assertEqual([l.split(" ([")[0] for l in internal],
                         ["- Flaky test in billing", "- Refactor the CI cache", "- Bump linter"], internal)
        # left out: the question, the duplicate, the open issue, the commit #2 covers
        for absent in ("reset my password", "Login broken", "Still open", "Fix rounding"):
            self.assertNotIn(absent, notes)
        # the report says why, without titles
        changes = {c["key"]: c for c in self.r.report["data"]["changes"]}
        self.assertEqual(changes["#1"]["verdict"], "customer-facing")
        self.assertEqual(changes["#4"]["verdict"], "internal")
        self.assertIn("type::chore", changes["#4"]["reason"])
        self.assertIn("release::internal", changes["#10"]["reason"])
        self.assertTrue(changes["#2"]["reason"].startswith("type::bug is customer-facing by default"))
        self.assertEqual(self.r.report["counters"]["skipped"], 2)

    def test_release_tag_and_changelog(self):
        rels = self.w.releases()
        self.assertEqual([r["tag_name"] for r in rels], ["v0.1.0"])
        rel = rels[0]
        self.assertEqual(rel["name"], "demo 0.1.0")
        self.assertIn("### New features", rel["description"])
        self.assertRegex(rel["description"], r"\n<!-- factory-release v1 version=0\.1\.0 until=\S+ state=done "
                                             r"webhook=1 items=\S+ -->\n")
        # the tag is on the commit that was the head of main when the run began
        tag = self.w.api("GET", "/projects/1/repository/tags/v0.1.0")
        self.assertEqual(tag["commit"]["title"], "Fix rounding")
        # CHANGELOG.md: created through one commit, with the same notes
        commits = self.w.changelog_commits()
        self.assertEqual(len(commits), 1, commits)
        self.assertIn("[skip ci]", commits[0]["title"])
        log = self.w.file("CHANGELOG.md")
        self.assertTrue(log.startswith("# Changelog\n\n<!-- factory-release v1 changelog version=0.1.0 -->\n"
                                       "## 0.1.0 ("), log)
        self.assertIn(self.w.notes_artifact(), log)
        # the job's report names the artifact and the actions
        self.assertTrue(self.r.report["data"]["notes_file"].endswith("release-notes.md"))
        kinds = [a["kind"] for a in self.r.report["actions"]]
        self.assertEqual(kinds.count("release.create"), 1)
        self.assertEqual(kinds.count("commit"), 1)

    def test_verdicts_are_labels(self):
        for iid in (1, 2, 3, 5, 8, 11):
            self.assertIn("release::customer-facing", self.w.issue(iid)["labels"], iid)
            self.assertNotIn("release::internal", self.w.issue(iid)["labels"], iid)
        for iid in (4, 10):
            self.assertIn("release::internal", self.w.issue(iid)["labels"], iid)
            self.assertNotIn("release::customer-facing", self.w.issue(iid)["labels"], iid)
        for iid in (6, 7, 9):
            self.assertFalse([l for l in self.w.issue(iid)["labels"] if l.startswith("release::")], iid)

    def test_customers_are_told_once_each(self):
        # a public note on each customer-facing issue, none on the others
        for iid in (1, 2, 3, 5, 8, 11):
            notes = self.w.announce_notes(iid, "0.1.0")
            self.assertEqual(len(notes), 1, iid)
            self.assertFalse(notes[0]["internal"])
            self.assertIn("/-/releases/v0.1.0", notes[0]["body"])
        for iid in (4, 6, 7, 9, 10):
            self.assertEqual(self.w.announce_notes(iid, "0.1.0"), [], iid)
        # one email per reporter: jane reported #1 and #3 (address in two cases), bob #2, carol #8
        msgs = self.w.sink.messages()
        self.assertEqual(sorted(a.lower() for m in msgs for a in m.rcpt_to),
                         ["bob@example.org", "carol@example.net", "jane@example.com"])
        self.assertEqual(self.w.emails_to("mallory@example.com"), [], "a marker in a public note is not intake's")
        jane = self.w.emails_to("jane@example.com")[0]
        self.assertEqual(jane.mail_from, "releases@example.com")
        self.assertEqual(jane.subject, "demo 0.1.0: what you reported is released")
        self.assertIn("Demo releases", str(jane.message["From"]))
        self.assertIn("- You can now export your invoices as CSV files (new feature)", jane.text)
        self.assertIn("- A security issue was fixed (security fix)", jane.text)
        self.assertIn("/-/releases/v0.1.0", jane.text)
        self.assertNotIn("Login fails", jane.text, "only what she reported")
        bob = self.w.emails_to("bob@example.org")[0]
        self.assertIn("- Login fails with SSO (fix)", bob.text)
        self.assertNotIn("invoices", bob.text)
        carol = self.w.emails_to("carol@example.net")[0]
        self.assertIn("- A privately requested improvement (new feature)", carol.text)
        # each emailed submission is marked in an internal note
        for iid, n in ((1, 1), (3, 3), (2, 2), (8, 8)):
            notes = self.w.mailed_notes(iid, "0.1.0")
            self.assertEqual(len(notes), 1, iid)
            self.assertTrue(notes[0]["internal"])
            self.assertIn("submission=%s" % sid(n), notes[0]["body"])
        self.assertEqual(self.w.mailed_notes(11, "0.1.0"), [])
        # one chat post, Slack-compatible
        posts = self.w.hook.posts()
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["headers"]["content-type"], "application/json")
        text = posts[0]["json"]["text"]
        self.assertIn("demo 0.1.0>* is out.", text)
        self.assertIn("\u2022 Security: 1 security issue fixed", text)
        self.assertIn("\u2022 New feature: You can now export your invoices as CSV files", text)
        self.assertIn("\u2022 Fix: Login fails with SSO", text)
        self.assertIn("_Plus 3 internal changes._", text)
        self.assertEqual(self.r.report["counters"]["emails_sent"], 3)
        self.assertEqual(self.r.report["counters"]["notes_posted"], 6)

    def test_secrets_stay_out_of_everything_public(self):
        rel = self.w.release_of("v0.1.0")
        places = {"release": rel["description"], "changelog": self.w.file("CHANGELOG.md"),
                  "artifact": self.w.notes_artifact(), "chat": json.dumps(self.w.hook.posts()[0]["json"]),
                  "report.json": json.dumps(self.r.report), "report.md": self.r.report_md,
                  "output": self.r.output}
        for m in self.w.sink.messages():
            places["email to " + m.rcpt_to[0]] = m.raw.decode("utf-8", "replace")
        for where, text in places.items():
            for secret in SECRET_TITLES:
                self.assertNotIn(secret, text, where)
            self.assertNotIn("/issues/3)", text, where)
            self.assertNotIn("/issues/8)", text, where)
            self.assertNotIn("0123456789abcdefSECRET", text, where)   # the webhook URL is a credential
        for addr in ("jane@example.com", "bob@example.org", "carol@example.net"):
            self.assertNotIn(addr, self.r.output, "addresses are not logged")
            self.assertNotIn(addr, json.dumps(self.r.report))

    def test_rerun_sends_and_writes_nothing(self):
        self.w.double.clear_requests()
        r = self.w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.w.writes(), [])
        self.assertEqual(len(self.w.sink.messages()), 3)
        self.assertEqual(len(self.w.hook.posts()), 1)
        self.assertIn("no release: nothing changed since v0.1.0", r.report["summary"])
        self.assertEqual(r.report["actions"], [])
        self.assertEqual(len(self.w.releases()), 1)

    def test_next_release_takes_only_what_is_new(self):
        w = self.w
        w.double.seed({"issues": [
            {"project_id": 1, "iid": 20, "title": "Crash on empty cart", "labels": ["type::bug", "source::customer"],
             "notes": [{"body": "<!-- factory-intake reporter submission=%s email=jane@example.com -->\nx" % sid(20),
                        "internal": True}]}]})
        w.merged_mr("cart", {"src/cart.c": "fix"}, "Fix the empty cart", "Closes #20")
        w.settle()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([x["tag_name"] for x in w.releases()], ["v0.1.1", "v0.1.0"], "fixes only: a patch")
        notes = w.release_of("v0.1.1")["description"]
        self.assertEqual([l.split(" ([")[0] for l in section(notes, "Fixes")], ["- Crash on empty cart"])
        self.assertNotIn("invoices", notes)
        self.assertEqual(len(w.emails_to("jane@example.com")), 2, "told about the new release, once")
        self.assertIn("Crash on empty cart", w.emails_to("jane@example.com")[1].text)
        self.assertEqual(len(w.hook.posts()), 2)
        self.assertEqual(w.announce_notes(1, "0.1.1"), [])
        log = w.file("CHANGELOG.md")
        self.assertLess(log.index("## 0.1.1"), log.index("## 0.1.0"), "the newest section first")
        self.assertEqual(log.count("factory-release v1 changelog version=0.1.0"), 1)
        # a feature next: a minor release; a breaking change before 1.0.0: minor too
        w.double.seed({"issues": [{"project_id": 1, "iid": 21, "title": "Dark theme", "labels": ["type::feature"],
                                   "state": "closed"}]})
        w.settle()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.releases()[0]["tag_name"], "v0.2.0")
        w.double.seed({"issues": [{"project_id": 1, "iid": 22, "title": "Drop the v1 API",
                                   "labels": ["type::feature", "breaking"], "state": "closed"}]})
        w.settle()
        r = w.release()
        self.assertEqual(w.releases()[0]["tag_name"], "v0.3.0")
        self.assertEqual(r.report["data"]["change"], "breaking")
        # a version given wins, if it comes after the last one
        w.double.seed({"issues": [{"project_id": 1, "iid": 23, "title": "Polish", "labels": ["type::bug"],
                                   "state": "closed"}]})
        w.settle()
        r = w.release("--release-version", "0.2.9")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("not after the last release v0.3.0", r.stderr)
        r = w.release("--release-version", "v1.0.0")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.releases()[0]["tag_name"], "v1.0.0")


class NoChangeTest(unittest.TestCase):
    def test_nothing_changed_means_no_release(self):
        w = World(self)
        w.double.seed({"issues": [{"project_id": 1, "title": "open", "labels": ["type::bug"]},
                                  {"project_id": 1, "title": "a question", "labels": ["type::support"],
                                   "state": "closed"}]})
        w.settle()
        w.double.clear_requests()
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [])
        self.assertEqual(w.releases(), [])
        self.assertEqual(w.sink.messages(), [])
        self.assertEqual(w.hook.posts(), [])
        self.assertIn("no release: nothing changed since the start", r.report["summary"])

    def test_dry_run_writes_and_sends_nothing(self):
        w = World(self)
        w.build_first_release()
        w.double.clear_requests()
        r = w.release("--dry-run")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [])
        self.assertEqual(w.sink.messages(), [])
        self.assertEqual(w.hook.posts(), [])
        self.assertIn("would POST projects/:id/releases", r.output)
        kinds = [a["kind"] for a in r.report["actions"]]
        self.assertEqual(kinds.count("email"), 3)
        self.assertEqual(kinds.count("webhook"), 1)
        self.assertEqual(kinds.count("note.create"), 6)
        self.assertIn("### New features", w.notes_artifact())
        # and the real run after it does it all
        r = w.release()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(w.sink.messages()), 3)


class SettingsTest(unittest.TestCase):
    def test_customer_paths_decide_untyped_changes(self):
        w = World(self)
        w.double.seed({"issues": [{"project_id": 1, "iid": 1, "title": "Move the button"},
                                  {"project_id": 1, "iid": 2, "title": "Reword the docs"}]})
        w.merged_mr("button", {"web/app/button.js": "b"}, "Move the button", "Closes #1", commits=3)
        w.merged_mr("docs", {"docs/guide.md": "d"}, "Reword", "Closes #2")
        w.commit("main", {"api/openapi.yaml": "v2"}, "New endpoint\n\nChangelog: other")
        w.settle()
        r = w.release(FACTORY_RELEASE_CUSTOMER_PATHS="web/,api/openapi.yaml")
        self.assertEqual(r.returncode, 0, r)
        changes = {c["key"]: c for c in r.report["data"]["changes"]}
        self.assertEqual(changes["#1"]["verdict"], "customer-facing")
        self.assertEqual(changes["#1"]["reason"], "changes web/")
        self.assertEqual(changes["#2"]["verdict"], "internal")
        commit = [c for k, c in changes.items() if k.startswith("@")][0]
        self.assertEqual(commit["verdict"], "customer-facing")
        self.assertEqual(commit["reason"], "changes api/openapi.yaml")

    def test_bad_settings_are_usage_errors(self):
        w = World(self)
        for env, want in ((dict(FACTORY_RELEASE_CUSTOMER_PATHS="../x"), "customer_paths"),
                          (dict(FACTORY_SMTP_TLS="sometimes"), "smtp.tls"),
                          (dict(FACTORY_SMTP_FROM=""), "smtp.from"),
                          (dict(FACTORY_RELEASE_WEBHOOK_URL="ftp://x"), "release.webhook_url"),
                          (dict(FACTORY_RELEASE_LOOKBACK_DAYS="many"), "release.lookback_days")):
            r = w.release(**env)
            self.assertEqual(r.returncode, 2, (env, r))
            self.assertIn(want, r.stderr, env)
        r = w.release("--release-version", "1.0")
        self.assertEqual(r.returncode, 0, "nothing to release: the version is not even read")
        w.double.seed({"issues": [{"project_id": 1, "title": "x", "labels": ["type::bug"], "state": "closed"}]})
        w.settle()
        r = w.release("--release-version", "1.0")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("not a semantic version '1.0'", r.stderr)
        r = run_job("release", w.double, "extra-arg", env=w.env())
        self.assertEqual(r.returncode, 2)


class TagPipelineTest(unittest.TestCase):
    def test_a_pushed_version_tag_is_released_as_that_version(self):
        w = World(self)
        w.double.seed({"issues": [{"project_id": 1, "iid": 1, "title": "Faster export", "labels": ["type::feature"],
                                   "state": "closed"}]})
        head = w.commit("main", {"a.txt": "1"}, "work")
        w.api("POST", "/projects/1/repository/tags", {"tag_name": "v2.3.4", "ref": head["id"]})
        w.commit("main", {"b.txt": "2"}, "more work after the tag")
        w.settle()
        r = w.release(CI_COMMIT_TAG="v2.3.4")
        self.assertEqual(r.returncode, 0, r)
        rels = w.releases()
        self.assertEqual([x["tag_name"] for x in rels], ["v2.3.4"])
        self.assertEqual(rels[0]["commit"]["id"], head["id"], "the tag as pushed, not the branch head")
        # the tag's own pipeline again (or the one GitLab runs for a tag the job made): nothing to do
        w.double.clear_requests()
        r = w.release(CI_COMMIT_TAG="v2.3.4")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [])
        self.assertIn("tag v2.3.4 already has its release", r.report["summary"])
        # a tag that is not a version: no release
        w.api("POST", "/projects/1/repository/tags", {"tag_name": "nightly", "ref": "main"})
        w.double.seed({"issues": [{"project_id": 1, "title": "x", "labels": ["type::bug"], "state": "closed"}]})
        w.settle()
        w.double.clear_requests()
        r = w.release(CI_COMMIT_TAG="nightly")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(w.writes(), [])
        self.assertIn("not a version tag", r.report["summary"])


if __name__ == "__main__":
    unittest.main()
