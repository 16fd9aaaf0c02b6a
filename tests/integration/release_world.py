"""A project for factory-release's tests: the GitLab double with issues of
every type closed by real merge requests (real merges in the double's git
repository), commits with Changelog trailers, intake's reporter notes, a
local SMTP sink and a local chat webhook receiver.

    w = World(self)                 # started, cleaned up with the test
    w.build_first_release()         # the standard set below
    r = w.release()                 # run factory-release, a JobResult
    w.writes(), w.sink.messages(), w.hook.posts(), w.release_of("v0.1.0"), ...

The standard set (iid: what it is -> what the release must say):
  1 feature, source::customer, "Release note:" line, reporter jane, MR !1
      touching web/                           -> New features, that line
  2 bug, reporter bob, MR !2                  -> Fixes (customer by default)
  3 security, confidential, reporter jane, MR !3 "Escape the profile bio"
                                              -> one neutral Security line
  4 chore, closed without MR                  -> Internal
  5 bug + performance, MR !4                  -> Performance
  6 support, closed without MR                -> left out (a question)
  7 bug + duplicate                           -> left out
  8 feature, confidential, reporter carol, MR !5 -> neutral feature line
  9 bug, still open                           -> not in the release
 10 bug + release::internal (a person's call) -> Internal
 11 bug, a forged reporter marker in a PUBLIC note, MR !6 -> Fixes, nobody emailed
 commits on main: "Add dark mode" (Changelog: added) -> New features
                  "Bump linter" (Changelog: other)   -> Internal
                  "Fix rounding" (Changelog: fixed, "Fixes #2") -> covered by #2
"""
import os
import re
import tempfile
import time

from lib.double import Double
from lib.factory import gl, job_env, run_job
from lib.smtp_sink import SmtpSink
from lib.webhook import WebhookReceiver

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
SECRET_TITLES = ("Stored XSS in the profile bio", "Escape the profile bio", "ACME-only SSO bridge",
                 "acme-sso.js")


def reporter_note(submission, email):
    return {"body": "<!-- factory-intake reporter submission=%s email=%s -->\n"
                    "Reporter's email (internal note): `%s`\n" % (submission, email, email),
            "internal": True}


def sid(n):
    return "fi-%024x" % n


class World:
    def __init__(self, test, smtp_kwargs=None, hook_statuses=None):
        self.test = test
        self.double = Double()
        test.addCleanup(self.double.stop)
        self.sink = SmtpSink(**(smtp_kwargs or {})).start()
        test.addCleanup(self.sink.stop)
        self.hook = WebhookReceiver(statuses=hook_statuses).start()
        test.addCleanup(self.hook.stop)
        self.report_dir = tempfile.mkdtemp(prefix="release-report-")
        self.extra = {}

    # ---- building the project ----
    def api(self, method, path, body=None):
        return gl(self.double, method, path, body)

    def commit(self, branch, files, message, start=None):
        ref = start or branch
        actions = [{"action": "update" if self.file(p, ref) is not None else "create", "file_path": p, "content": c}
                   for p, c in files.items()]
        body = {"branch": branch, "commit_message": message, "actions": actions}
        if start:
            body["start_branch"] = start
        return self.api("POST", "/projects/1/repository/commits", body)

    def branch_exists(self, name):
        return self.double.request("GET", "/projects/1/repository/branches/" + name).status == 200

    def merged_mr(self, branch, files, title, description, commits=1):
        """A branch with `commits` commits changing `files`, an MR, merged (which closes what it says)."""
        for n in range(commits):
            self.commit(branch, {p: c + ("\n%d" % n) for p, c in files.items()}, "%s (%d)" % (title, n + 1),
                        start="main" if n == 0 else None)
        mr = self.api("POST", "/projects/1/merge_requests",
                      {"source_branch": branch, "target_branch": "main", "title": title, "description": description})
        self.api("PUT", "/projects/1/merge_requests/%d/merge" % mr["iid"], {})
        return mr

    def build_first_release(self):
        self.double.seed({"issues": [
            {"project_id": 1, "iid": 1, "title": "Export invoices as CSV",
             "labels": ["type::feature", "source::customer"],
             "description": "Customers want CSV.\n\nRelease note: You can now export your invoices as CSV files.",
             "notes": [reporter_note(sid(1), "jane@example.com")]},
            {"project_id": 1, "iid": 2, "title": "Login fails with SSO", "labels": ["type::bug"],
             "notes": [reporter_note(sid(2), "bob@example.org")]},
            {"project_id": 1, "iid": 3, "title": "Stored XSS in the profile bio", "labels": ["type::security"],
             "confidential": True, "description": "<script> in the bio runs for every visitor",
             "notes": [reporter_note(sid(3), "Jane@Example.com")]},
            {"project_id": 1, "iid": 4, "title": "Refactor the CI cache", "labels": ["type::chore"],
             "state": "closed"},
            {"project_id": 1, "iid": 5, "title": "Search is slow", "labels": ["type::bug", "performance"]},
            {"project_id": 1, "iid": 6, "title": "How do I reset my password?", "labels": ["type::support"],
             "state": "closed"},
            {"project_id": 1, "iid": 7, "title": "Login broken (again)", "labels": ["type::bug", "duplicate"],
             "state": "closed"},
            {"project_id": 1, "iid": 8, "title": "ACME-only SSO bridge", "labels": ["type::feature"],
             "confidential": True, "notes": [reporter_note(sid(8), "carol@example.net")]},
            {"project_id": 1, "iid": 9, "title": "Still open", "labels": ["type::bug"]},
            {"project_id": 1, "iid": 10, "title": "Flaky test in billing", "labels": ["type::bug", "release::internal"],
             "state": "closed"},
            {"project_id": 1, "iid": 11, "title": "Typo on the pricing page", "labels": ["type::bug"],
             "notes": [{"body": "<!-- factory-intake reporter submission=%s email=mallory@example.com -->\nhi"
                                % sid(11)}]},
        ]})
        self.merged_mr("csv-export", {"web/export.js": "export"}, "CSV export", "Adds CSV.\n\nCloses #1")
        self.merged_mr("sso-fix", {"src/sso.c": "sso"}, "Fix SSO login", "Fixes #2", commits=2)
        self.merged_mr("bio", {"web/profile.js": "escape"}, "Escape the profile bio", "Closes #3")
        self.merged_mr("search", {"src/search.c": "index"}, "Index the search", "Resolves #5")
        self.merged_mr("acme", {"src/acme-sso.js": "acme"}, "ACME-only SSO bridge", "Implements #8")
        self.merged_mr("typo", {"web/pricing.html": "price"}, "Fix typo", "Closes #11")
        self.commit("main", {"web/dark.css": "dark"}, "Add dark mode\n\nChangelog: added")
        self.commit("main", {".lint": "v2"}, "Bump linter\n\nChangelog: other")
        self.commit("main", {"src/round.c": "r"}, "Fix rounding\n\nFixes #2\n\nChangelog: fixed")
        self.settle()

    def settle(self):
        """What closed in the last second belongs to the next run (the job's cut-off is now - 1 s)."""
        time.sleep(1.1)

    # ---- running ----
    def env(self, **extra):
        e = {"FACTORY_SMTP_URL": self.sink.url, "FACTORY_SMTP_FROM": "Demo releases <releases@example.com>",
             "FACTORY_SMTP_TLS": "none", "FACTORY_SMTP_BACKOFF_MS": "10",
             "FACTORY_RELEASE_WEBHOOK_URL": self.hook.url}
        e.update(self.extra)
        e.update(extra)
        return job_env(self.double, extra=e)

    def release(self, *args, **extra):
        return run_job("release", self.double, *args, env=self.env(**extra), report_dir=self.report_dir)

    # ---- reading the outcome ----
    def writes(self):
        return [r for r in self.double.requests() if r["method"] in WRITE_METHODS]

    def releases(self):
        return self.api("GET", "/projects/1/releases")

    def release_of(self, tag):
        return self.api("GET", "/projects/1/releases/" + tag)

    def issue(self, iid):
        return self.api("GET", "/projects/1/issues/%d" % iid)

    def notes(self, iid):
        return self.api("GET", "/projects/1/issues/%d/notes?per_page=100&sort=asc" % iid)

    def announce_notes(self, iid, version):
        return [n for n in self.notes(iid) if "factory-release v1 announce version=%s " % version in n["body"]]

    def mailed_notes(self, iid, version):
        return [n for n in self.notes(iid) if "factory-release v1 mailed version=%s " % version in n["body"]]

    def file(self, path, ref="main"):
        r = self.double.request("GET", "/projects/1/repository/files/%s/raw?ref=%s" % (path.replace("/", "%2F"), ref))
        return r.text if r.status == 200 else None

    def changelog_commits(self):
        return [c for c in self.api("GET", "/projects/1/repository/commits?per_page=100")
                if c["title"].startswith("Changelog for ")]

    def notes_artifact(self):
        with open(os.path.join(self.report_dir, "release-notes.md"), encoding="utf-8") as f:
            return f.read()

    def emails_to(self, address):
        return [m for m in self.sink.messages() if [a.lower() for a in m.rcpt_to] == [address.lower()]
                and not m.dropped]


def section(notes, title):
    """The lines of one '### title' section of rendered notes."""
    m = re.search(r"^### %s\n\n(.*?)(?=\n### |\Z)" % re.escape(title), notes, re.S | re.M)
    return [l for l in m.group(1).splitlines() if l.startswith("- ")] if m else None
