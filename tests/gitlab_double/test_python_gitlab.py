"""Hold the GitLab double to a real client: Debian's python-gitlab 3.12.

Run:  cd /work/main && /usr/bin/python3 -m unittest discover -s tests/gitlab_double -p 'test_*.py' -v

python-gitlab speaks GitLab's documented REST API (pagination via Link
headers, retries on 429/5xx, redirects for job logs), so everything it can do
against the double is something the double does the way GitLab does.  Git
over HTTP is exercised with the git CLI.
"""

import base64
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

from double import Double  # noqa: E402

import gitlab  # noqa: E402
import gitlab.exceptions as gle  # noqa: E402

BIG = 260                      # issues in factory/big (more than two pages of 100)
JOB_TOKEN = "job-token-0001"
RO_TOKEN = "glpat-read-only-0001"


def seed_data():
    base = 1_700_000_000
    issues = []
    for n in range(1, BIG + 1):
        labels = []
        if n % 3 == 0:
            labels.append("bug")
        if n % 5 == 0:
            labels.append("feature")
        issues.append({"project_id": 2, "title": f"Big issue {n}", "description": f"Body {n}",
                       "labels": labels, "created_at": base + n * 60,
                       "state": "closed" if n % 7 == 0 else "opened"})
    return {
        "projects": [{"id": 2, "path_with_namespace": "factory/big", "default_branch": "main",
                      "files": {"README.md": "# big\n"}}],
        "labels": [{"project_id": 2, "name": "bug", "color": "#d9534f"},
                   {"project_id": 2, "name": "feature", "color": "#5cb85c"},
                   {"project_id": 1, "name": "bug", "color": "red", "description": "Something broke"}],
        "issues": issues,
        "job_tokens": [{"token": JOB_TOKEN, "project_id": 1}],
        "read_only_tokens": [RO_TOKEN],
        "pipelines": [{"project_id": 1, "ref": "main", "jobs": [
            {"name": "build", "stage": "build", "status": "success", "duration": 12.5, "trace": "built\n"},
            {"name": "unit", "stage": "test", "status": "failed", "failure_reason": "script_failure",
             "duration": 3.25, "trace": "running tests\nFAIL: test_parse (expected 1, got 2)\n"},
            {"name": "lint", "stage": "test", "status": "success", "trace": "ok\n"}]}],
    }


def git_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               GIT_ASKPASS="/bin/false", LC_ALL="C")
    return env


def git(*args, cwd=None):
    return subprocess.run(["git", "-c", "user.name=Test Person", "-c", "user.email=test@example.com",
                           "-c", "init.defaultBranch=main", "-c", "credential.helper=", *args],
                          cwd=cwd, env=git_env(), capture_output=True, text=True, timeout=120)


class DoubleTestCase(unittest.TestCase):
    """One double for the whole class; tests create their own objects."""

    @classmethod
    def setUpClass(cls):
        cls.d = Double()
        cls.seeded = cls.d.seed(seed_data())
        cls.gl = gitlab.Gitlab(cls.d.url, private_token=cls.d.token)
        cls.demo = cls.gl.projects.get(1)
        cls.big = cls.gl.projects.get("factory/big")

    @classmethod
    def tearDownClass(cls):
        cls.gl.session.close()
        cls.d.stop()

    def setUp(self):
        self.d.clear_faults()

    def new_gl(self, url=None, **kw):
        kw.setdefault("private_token", self.d.token)
        gl = gitlab.Gitlab(url or self.d.url, **kw)
        self.addCleanup(gl.session.close)
        return gl


class TestBasics(DoubleTestCase):
    def test_auth_user_and_version(self):
        self.gl.auth()
        self.assertEqual(self.gl.user.username, "factory-bot")
        self.assertTrue(self.gl.user.bot)
        self.assertEqual(self.gl.version()[0], "18.3.0")
        meta = self.d.request("GET", "/metadata").json()
        self.assertEqual(meta["version"], "18.3.0")

    def test_project_by_id_and_by_path(self):
        by_id = self.gl.projects.get(1)
        by_path = self.gl.projects.get("factory/demo")
        self.assertEqual(by_id.id, by_path.id)
        self.assertEqual(by_id.path_with_namespace, "factory/demo")
        self.assertEqual(by_id.default_branch, "main")
        self.assertEqual(by_id.http_url_to_repo, f"{self.d.url}/factory/demo.git")
        self.assertEqual(by_id.namespace["full_path"], "factory")
        names = {p.path_with_namespace for p in self.gl.projects.list(get_all=True)}
        self.assertLessEqual({"factory/demo", "factory/big"}, names)

    def test_unknown_project_is_404(self):
        with self.assertRaises(gle.GitlabGetError) as cm:
            self.gl.projects.get("factory/nope")
        self.assertEqual(cm.exception.response_code, 404)
        self.assertEqual(cm.exception.error_message, "404 Project Not Found")

    def test_bad_or_missing_token_is_401(self):
        bad = self.new_gl(private_token="glpat-wrong")
        with self.assertRaises(gle.GitlabAuthenticationError) as cm:
            bad.auth()
        self.assertEqual(cm.exception.response_code, 401)
        r = self.d.request("GET", "/projects/1", token=None)
        self.assertEqual((r.status, r.json()), (401, {"message": "401 Unauthorized"}))
        r = self.d.request("GET", "/projects/1", headers={"Authorization": f"Bearer {self.d.token}"}, token=None)
        self.assertEqual(r.status, 200)

    def test_unknown_route_and_missing_param(self):
        r = self.d.request("GET", "/projects/1/nonsense")
        self.assertEqual((r.status, r.json()), (404, {"error": "404 Not Found"}))
        r = self.d.request("POST", "/projects/1/issues", {"description": "no title"})
        self.assertEqual((r.status, r.json()), (400, {"error": "title is missing"}))
        r = self.d.request("POST", "/projects/1/merge_requests", {})
        self.assertEqual(r.json()["error"], "source_branch is missing, target_branch is missing, title is missing")

    def test_form_encoded_and_gzip_bodies(self):
        r = self.d.request("POST", "/projects/1/issues", "title=Form+issue&labels=form%2Cbody&assignee_ids[]=3",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 201, r.text)
        self.assertEqual(r.json()["labels"], ["body", "form"])
        self.assertEqual(r.json()["assignee"]["username"], "alice")
        r = self.d.request("POST", "/projects/1/issues", {"title": "Gzipped issue"}, gzip=True)
        self.assertEqual((r.status, r.json()["title"]), (201, "Gzipped issue"))


    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_libcurl_expect_continue_chunked_and_keepalive(self):
        body = '{"title": "via curl", "description": "%s"}' % ("x" * 5000)
        t0 = time.time()
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                            "-H", "Content-Type: application/json", "-H", f"PRIVATE-TOKEN: {self.d.token}",
                            "--data", body, self.d.api + "/projects/1/issues"], capture_output=True, text=True)
        self.assertEqual(r.stdout, "201")
        self.assertLess(time.time() - t0, 0.9)          # "100 Continue" is not held back
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Transfer-Encoding: chunked",
                            "-H", "Content-Type: application/json", "-H", f"PRIVATE-TOKEN: {self.d.token}",
                            "--data", '{"title": "chunked"}', self.d.api + "/projects/1/issues"],
                           capture_output=True, text=True)
        self.assertEqual(r.stdout, "201")
        urls = [self.d.api + "/projects/1/issues?per_page=1"] * 20
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{num_connects}\\n",
                            "-H", f"PRIVATE-TOKEN: {self.d.token}"] + urls, capture_output=True, text=True)
        self.assertEqual(r.stdout.split().count("1"), 1)   # one connection, kept alive


class TestPagination(DoubleTestCase):
    def test_get_all_walks_link_headers(self):
        self.d.clear_requests()
        issues = self.big.issues.list(get_all=True)
        self.assertEqual(len(issues), BIG)
        self.assertEqual(len({i.iid for i in issues}), BIG)
        self.assertEqual(issues[0].iid, BIG)      # default: created_at desc
        reads = [r for r in self.d.requests() if r["path"] == "/api/v4/projects/2/issues"]
        self.assertEqual(len(reads), -(-BIG // 20))

    def test_iterator_and_totals(self):
        it = self.big.issues.list(iterator=True, per_page=100)
        self.assertEqual(it.total, BIG)
        self.assertEqual(it.total_pages, 3)
        self.assertEqual(it.per_page, 100)
        self.assertEqual(sum(1 for _ in it), BIG)

    def test_headers_as_documented(self):
        r = self.d.request("GET", "/projects/2/issues?per_page=3&page=2")
        h = r.headers
        self.assertEqual((h["x-page"], h["x-per-page"], h["x-prev-page"], h["x-next-page"]), ("2", "3", "1", "3"))
        self.assertEqual((h["x-total"], h["x-total-pages"]), (str(BIG), str(-(-BIG // 3))))
        link = h["Link"]
        for rel in ("prev", "next", "first", "last"):
            self.assertIn(f'rel="{rel}"', link)
        self.assertIn(f"<{self.d.api}/projects/2/issues?page=3&per_page=3>; rel=\"next\"", link)
        r = self.d.request("GET", "/projects/2/issues?per_page=500")
        self.assertEqual((r.headers["x-per-page"], len(r.json())), ("100", 100))
        last = self.d.request("GET", "/projects/2/issues?per_page=100&page=3")
        self.assertEqual(last.headers["x-next-page"], "")
        self.assertNotIn('rel="next"', last.headers["Link"])

    def test_label_filter_and_state(self):
        bugs = self.big.issues.list(labels=["bug"], get_all=True)
        self.assertEqual(len(bugs), BIG // 3)
        both = self.big.issues.list(labels=["bug", "feature"], get_all=True)
        self.assertEqual(len(both), BIG // 15)
        opened = self.big.issues.list(state="opened", labels="None", get_all=True)
        self.assertTrue(all(not i.labels and i.state == "opened" for i in opened))
        r = self.d.request("GET", "/projects/2/issues?not[labels]=bug&per_page=100")
        self.assertEqual(int(r.headers["x-total"]), BIG - BIG // 3)
        found = self.big.issues.list(search="big ISSUE 17", get_all=True)
        self.assertEqual(sorted(i.iid for i in found), [17] + list(range(170, 180)))
        sel = self.big.issues.list(iids=[3, 5, 7], order_by="created_at", sort="asc", get_all=True)
        self.assertEqual([i.iid for i in sel], [3, 5, 7])

    def test_keyset_pagination(self):
        self.d.clear_requests()
        it = self.big.issues.list(pagination="keyset", order_by="created_at", sort="asc",
                                  per_page=50, iterator=True)
        iids = [i.iid for i in it]
        self.assertEqual(iids, list(range(1, BIG + 1)))
        reqs = [r for r in self.d.requests() if r["path"] == "/api/v4/projects/2/issues"]
        self.assertEqual(len(reqs), 6)
        self.assertTrue(all("cursor" in r["query"] for r in reqs[1:]))
        r = self.d.request("GET", "/projects/2/issues?pagination=keyset&order_by=created_at&sort=desc&per_page=20")
        self.assertIsNone(r.headers.get("x-total"))
        self.assertIsNone(r.headers.get("x-page"))
        self.assertRegex(r.headers["Link"], r'^<[^>]*cursor=[^>]*>; rel="next"$')

    def test_keyset_ignored_before_18_3(self):
        with Double(gitlab_version="17.11.0") as old:
            old.seed({"issues": [{"project_id": 1, "title": f"i{n}"} for n in range(30)]})
            r = old.request("GET", "/projects/1/issues?pagination=keyset&order_by=created_at&sort=asc")
            self.assertEqual(r.headers["x-total"], "30")
            self.assertIn('rel="last"', r.headers["Link"])
            self.assertNotIn("cursor=", r.headers["Link"])

    def test_totals_omitted_past_10000(self):
        with Double(seed={"projects": [{"id": 7, "path_with_namespace": "load/many"}],
                          "issues": [{"project_id": 7, "title": f"n{n}", "created_at": 1_600_000_000 + n}
                                     for n in range(10_001)]}) as big:
            r = big.request("GET", "/projects/7/issues?per_page=100&page=2")
            self.assertEqual(len(r.json()), 100)
            self.assertIsNone(r.headers.get("x-total"))
            self.assertIsNone(r.headers.get("x-total-pages"))
            self.assertEqual(r.headers["x-next-page"], "3")
            self.assertNotIn('rel="last"', r.headers["Link"])
            gl = self.new_gl(big.url, private_token=big.token)
            it = gl.projects.get(7).issues.list(iterator=True, per_page=100)
            self.assertIsNone(it.total)


class TestIssues(DoubleTestCase):
    def test_create_edit_close_and_label_events(self):
        issue = self.demo.issues.create({"title": "Edit me", "description": "- [x] one\n- [ ] two",
                                         "labels": ["alpha"]})
        self.assertEqual(issue.labels, ["alpha"])
        self.assertEqual(issue.task_completion_status, {"count": 2, "completed_count": 1})
        self.assertEqual(self.demo.labels.get("alpha").color, "#6699cc")    # created silently
        t0 = issue.updated_at
        issue.add_labels = ["beta", "gamma"]
        issue.remove_labels = "alpha"
        issue.save()
        self.assertEqual(issue.labels, ["beta", "gamma"])
        self.assertGreater(issue.updated_at, t0)
        issue.state_event = "close"
        issue.save()
        self.assertEqual(issue.state, "closed")
        self.assertIsNotNone(issue.closed_at)
        self.assertEqual(issue.attributes["closed_by"]["username"], "factory-bot")
        issue.state_event = "reopen"
        issue.save()
        self.assertEqual((issue.state, issue.closed_at), ("opened", None))
        events = issue.resourcelabelevents.list(get_all=True)
        self.assertEqual([(e.action, e.label["name"]) for e in events],
                         [("add", "alpha"), ("add", "beta"), ("add", "gamma"), ("remove", "alpha")])
        self.assertEqual(events[0].resource_type, "Issue")
        self.assertEqual(events[0].resource_id, issue.id)
        detailed = self.demo.issues.get(issue.iid, with_labels_details=True)
        self.assertEqual(detailed.labels[0]["name"], "beta")
        issue.labels = []
        issue.save()
        self.assertEqual(issue.labels, [])

    def test_issue_shape_matches_example(self):
        import json
        with open("/work/shared/gitlab/examples/get-project-issue.json") as f:
            example = json.load(f)
        issue = self.demo.issues.create({"title": "Shape"})
        missing = set(example) - set(issue.attributes)
        self.assertEqual(missing, set())
        self.assertEqual(issue.references["full"], f"factory/demo#{issue.iid}")
        self.assertEqual(issue.web_url, f"{self.d.url}/factory/demo/-/issues/{issue.iid}")

    def test_delete_and_404(self):
        issue = self.demo.issues.create({"title": "Doomed"})
        issue.delete()
        with self.assertRaises(gle.GitlabGetError) as cm:
            self.demo.issues.get(issue.iid)
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (404, "404 Issue Not Found"))

    def test_reorder_uses_ids(self):
        a, b, c = (self.demo.issues.create({"title": f"order {x}"}) for x in "abc")
        c.reorder(move_after_id=a.id)              # a is placed after c
        b.reorder(move_before_id=c.id)             # c is placed before b

        def order():
            got = self.demo.issues.list(iids=[a.iid, b.iid, c.iid], order_by="relative_position",
                                        sort="asc", get_all=True)
            return [i.title for i in got]
        self.assertEqual(order(), ["order c", "order b", "order a"])
        r = self.d.request("PUT", f"/projects/1/issues/{a.iid}/reorder", {"move_after_id": 999999})
        self.assertEqual(r.status, 422)

    def test_scoped_labels_are_plain_on_free(self):
        issue = self.demo.issues.create({"title": "scoped", "labels": "priority::1"})
        issue.add_labels = "priority::2"
        issue.save()
        self.assertEqual(issue.labels, ["priority::1", "priority::2"])

    def test_scoped_labels_exclusive_on_premium(self):
        with Double(tier="premium") as prem:
            gl = self.new_gl(prem.url, private_token=prem.token)
            p = gl.projects.get(1)
            issue = p.issues.create({"title": "scoped", "labels": "priority::1,workflow::doing"})
            issue.add_labels = "priority::2"
            issue.save()
            self.assertEqual(issue.labels, ["priority::2", "workflow::doing"])
            acts = [(e.action, e.label["name"]) for e in issue.resourcelabelevents.list(get_all=True)]
            self.assertIn(("remove", "priority::1"), acts)
            multi = p.issues.create({"title": "two assignees", "assignee_ids": [3, 4]})
            self.assertEqual(len(multi.assignees), 2)
        single = self.demo.issues.create({"title": "one assignee on free", "assignee_ids": [3, 4]})
        self.assertEqual([a["username"] for a in single.assignees], ["alice"])


class TestNotesQuickActionsMentions(DoubleTestCase):
    def test_notes_and_counts(self):
        issue = self.demo.issues.create({"title": "Talk"})
        t0 = issue.updated_at
        time.sleep(0.01)
        note = issue.notes.create({"body": "First comment"})
        self.assertEqual((note.body, note.system, note.noteable_iid), ("First comment", False, issue.iid))
        internal = issue.notes.create({"body": "Internal one", "internal": True})
        self.assertTrue(internal.internal and internal.confidential)
        legacy = issue.notes.create({"body": "Confidential (deprecated)", "confidential": True})
        self.assertTrue(legacy.internal)
        issue = self.demo.issues.get(issue.iid)
        self.assertEqual(issue.user_notes_count, 3)
        self.assertGreater(issue.updated_at, t0)
        bodies = [n.body for n in issue.notes.list(get_all=True, sort="asc")]
        self.assertEqual(bodies, ["First comment", "Internal one", "Confidential (deprecated)"])
        note.body = "Edited"
        note.save()
        self.assertEqual(issue.notes.get(note.id).body, "Edited")
        note.delete()
        self.assertEqual(self.demo.issues.get(issue.iid).user_notes_count, 2)
        r = self.d.request("POST", f"/projects/1/issues/{issue.iid}/notes", {"internal": True})
        self.assertEqual((r.status, r.json()), (400, {"error": "body is missing"}))

    def test_quick_actions_execute_like_gitlab(self):
        issue = self.demo.issues.create({"title": "Untrusted"})
        issue.notes.create({"body": "Customer says:\n/label ~bug\n/close\n/assign @alice\nthanks"})
        issue = self.demo.issues.get(issue.iid)
        self.assertEqual(issue.state, "closed")
        self.assertEqual(issue.labels, ["bug"])
        self.assertEqual(issue.assignee["username"], "alice")
        stored = [n.body for n in issue.notes.list(get_all=True) if not n.system]
        self.assertEqual(stored, ["Customer says:\nthanks"])
        # commands only: 202 with commands_changes, no note stored
        r = self.d.request("POST", f"/projects/1/issues/{issue.iid}/notes", {"body": "/reopen"})
        self.assertEqual(r.status, 202)
        self.assertEqual(r.json(), {"commands_changes": {"state_event": "reopen"}, "summary": ["Reopened this issue."]})
        # neutralised text is inert: code blocks, inline code, indentation
        issue.notes.create({"body": "```\n/close\n```\n`/close`\n /close"})
        self.assertEqual(self.demo.issues.get(issue.iid).state, "opened")
        # descriptions run quick actions too
        made = self.demo.issues.create({"title": "From a log", "description": "Trace:\n/confidential\n/label ~bug"})
        self.assertTrue(made.confidential)
        self.assertEqual((made.labels, made.description), (["bug"], "Trace:"))
        made.description = "/unlabel ~bug\n/title Renamed by text"
        made.save()
        self.assertEqual((made.labels, made.title), ([], "Renamed by text"))

    def test_mentions_recorded(self):
        issue = self.demo.issues.create({"title": "Ping"})
        before = len(self.d.mentions())
        issue.notes.create({"body": "cc @alice and @all; not `@bob`, not me@example.com\n```\n@root\n```"})
        new = self.d.mentions()[before:]
        self.assertEqual([(m["username"], m["known"]) for m in new], [("alice", True), ("all", True)])
        self.assertEqual(new[0]["noteable_iid"], issue.iid)

    def test_merge_request_notes(self):
        self.demo.branches.create({"branch": "notes-mr", "ref": "main"})
        self.demo.commits.create({"branch": "notes-mr", "commit_message": "touch",
                                  "actions": [{"action": "create", "file_path": "notes-mr.txt", "content": "x"}]})
        mr = self.demo.mergerequests.create({"source_branch": "notes-mr", "target_branch": "main", "title": "Notes"})
        n = mr.notes.create({"body": "Looks good"})
        self.assertEqual(n.noteable_type, "MergeRequest")
        self.assertEqual([x.body for x in mr.notes.list(get_all=True)], ["Looks good"])
        mr.notes.create({"body": "/draft"})
        self.assertTrue(self.demo.mergerequests.get(mr.iid).draft)


class TestLabelsAndBoards(DoubleTestCase):
    def test_label_crud_and_errors(self):
        lab = self.demo.labels.create({"name": "triage", "color": "#FFAABB", "description": "needs triage",
                                       "priority": 3})
        self.assertEqual((lab.name, lab.color, lab.priority, lab.is_project_label), ("triage", "#FFAABB", 3, True))
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.labels.create({"name": "triage", "color": "#000000"})
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (409, "Label already exists"))
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.labels.create({"name": "bad", "color": "not-a-colour"})
        self.assertEqual(cm.exception.response_code, 400)
        self.assertEqual(cm.exception.error_message, {"color": ["must be a valid color code"]})
        named = self.demo.labels.create({"name": "css", "color": "teal"})
        self.assertEqual(named.color.lower(), "#008080")
        lab.new_name = "triaged"
        lab.color = "#00ff00"
        lab.save()
        self.assertEqual(lab.name, "triaged")
        got = self.demo.labels.get("triaged")
        self.assertEqual((got.color, got.description), ("#00ff00", "needs triage"))
        got.delete()
        with self.assertRaises(gle.GitlabGetError):
            self.demo.labels.get("triaged")
        self.assertIn("bug", [l.name for l in self.demo.labels.list(get_all=True)])

    def test_boards_and_lists(self):
        todo = self.demo.labels.create({"name": "To Do", "color": "#428BCA"})
        doing = self.demo.labels.create({"name": "Doing", "color": "#F0AD4E"})
        board = self.demo.boards.create({"name": "Factory"})
        self.assertEqual(board.name, "Factory")
        l1 = board.lists.create({"label_id": todo.id})
        l2 = board.lists.create({"label_id": doing.id})
        self.assertEqual((l1.label["name"], l1.position, l2.position), ("To Do", 0, 1))
        self.assertEqual(set(l1.attributes) >= {"id", "label", "position", "max_issue_count",
                                                "max_issue_weight", "limit_metric"}, True)
        with self.assertRaises(gle.GitlabCreateError) as cm:
            board.lists.create({"label_id": todo.id})
        self.assertEqual(cm.exception.response_code, 400)
        l2.position = 0
        l2.save()
        self.assertEqual([(l.label["name"], l.position) for l in board.lists.list()], [("Doing", 0), ("To Do", 1)])
        b = self.demo.boards.get(board.id)
        self.assertEqual([l["label"]["name"] for l in b.attributes["lists"]], ["Doing", "To Do"])
        self.assertEqual(b.project["path_with_namespace"], "factory/demo")
        l1.delete()
        self.assertEqual(len(board.lists.list()), 1)
        self.assertIn("Factory", [x.name for x in self.demo.boards.list()])
        board.delete()

    def test_groups(self):
        grp = self.gl.groups.get("factory")
        self.assertEqual(grp.full_path, "factory")
        paths = {p.path_with_namespace for p in grp.projects.list(get_all=True)}
        self.assertLessEqual({"factory/demo", "factory/big"}, paths)
        self.assertGreaterEqual(len(grp.issues.list(labels="bug", get_all=True)), BIG // 3)
        glab = grp.labels.create({"name": "group-wide", "color": "#123456"})
        self.assertFalse(glab.is_project_label)
        self.assertIn("group-wide", [l.name for l in self.demo.labels.list(get_all=True)])
        issue = self.demo.issues.create({"title": "uses group label", "labels": "group-wide"})
        self.assertEqual(issue.labels, ["group-wide"])
        self.assertEqual(len(self.demo.labels.list(search="group-wide")), 1)   # no project copy
        # Free: a group has its one default board; more need Premium (403).
        with self.assertRaises(gle.GitlabCreateError) as cm:
            grp.boards.create({"name": "Group board"})
        self.assertEqual(cm.exception.response_code, 403)
        gboard = grp.boards.list()[0]
        gboard.lists.create({"label_id": glab.id})
        self.assertEqual(len(grp.boards.get(gboard.id).attributes["lists"]), 1)
        with Double(tier="premium") as prem:
            pg = self.new_gl(prem.url, private_token=prem.token).groups.get("factory")
            made = pg.boards.create({"name": "Group board"})
            self.assertEqual(made.name, "Group board")
            self.assertIn("Group board", [b.name for b in pg.boards.list()])

    def test_group_projects_subgroups_topics_archived(self):
        self.d.seed({"projects": [
            {"path_with_namespace": "scopegrp/one", "topics": ["factory-opt-out", "c"]},
            {"path_with_namespace": "scopegrp/sub/two"},
            {"path_with_namespace": "scopegrp/old", "archived": True}]})
        grp = self.gl.groups.get("scopegrp")
        top = {p.path_with_namespace for p in grp.projects.list(get_all=True)}
        self.assertEqual(top, {"scopegrp/one", "scopegrp/old"})
        every = {p.path_with_namespace for p in grp.projects.list(include_subgroups=True, get_all=True)}
        self.assertEqual(every, {"scopegrp/one", "scopegrp/sub/two", "scopegrp/old"})
        live = {p.path_with_namespace for p in grp.projects.list(include_subgroups=True, archived=False,
                                                                  get_all=True)}
        self.assertEqual(live, {"scopegrp/one", "scopegrp/sub/two"})
        one = self.gl.projects.get("scopegrp/one")
        self.assertEqual(one.topics, ["factory-opt-out", "c"])
        self.assertTrue(self.gl.projects.get("scopegrp/old").archived)
        tagged = [p.path_with_namespace for p in grp.projects.list(include_subgroups=True,
                                                                    topic="factory-opt-out", get_all=True)]
        self.assertEqual(tagged, ["scopegrp/one"])


class TestRepositoryAndMergeRequests(DoubleTestCase):
    def test_branches_commits_files(self):
        br = self.demo.branches.create({"branch": "feature/api", "ref": "main"})
        self.assertEqual((br.name, br.default, br.protected), ("feature/api", False, False))
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.branches.create({"branch": "feature/api", "ref": "main"})
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (400, "Branch already exists"))
        commit = self.demo.commits.create({
            "branch": "feature/api", "commit_message": "Add files\n\nChangelog: added",
            "actions": [
                {"action": "create", "file_path": "src/a.txt", "content": "alpha\n"},
                {"action": "create", "file_path": "bin/data", "encoding": "base64",
                 "content": base64.b64encode(b"\x00\x01binary").decode()},
                {"action": "create", "file_path": "old.txt", "content": "old\n"},
            ]})
        self.assertEqual(commit.title, "Add files")
        self.assertEqual(commit.trailers, {"Changelog": "added"})
        self.assertEqual(commit.stats["additions"], 2)
        second = self.demo.commits.create({
            "branch": "feature/api", "commit_message": "Edit",
            "actions": [{"action": "update", "file_path": "src/a.txt", "content": "beta\n"},
                        {"action": "move", "file_path": "new.txt", "previous_path": "old.txt"},
                        {"action": "delete", "file_path": "bin/data"}]})
        self.assertEqual(second.parent_ids, [commit.id])
        f = self.demo.files.get("src/a.txt", ref="feature/api")
        self.assertEqual(f.decode(), b"beta\n")
        self.assertEqual(self.demo.files.raw("new.txt", ref="feature/api"), b"old\n")
        with self.assertRaises(gle.GitlabGetError):
            self.demo.files.get("bin/data", ref="feature/api")
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.commits.create({"branch": "feature/api", "commit_message": "dup",
                                      "actions": [{"action": "create", "file_path": "new.txt", "content": ""}]})
        self.assertEqual(cm.exception.error_message, "A file with this name already exists")
        log = self.demo.commits.list(ref_name="feature/api", get_all=True)
        self.assertEqual([c.title for c in log][:2], ["Edit", "Add files"])
        r = self.d.request("GET", "/projects/1/repository/commits?ref_name=feature/api&per_page=1")
        self.assertEqual(r.headers["x-next-page"], "2")
        self.assertIsNone(r.headers.get("x-total"))
        tree = {t["path"] for t in self.demo.repository_tree(ref="feature/api", recursive=True, get_all=True)}
        self.assertLessEqual({"README.md", "src", "src/a.txt", "new.txt"}, tree)
        sub = self.demo.repository_tree(path="src", ref="feature/api", get_all=True)
        self.assertEqual([(t["name"], t["type"], t["path"]) for t in sub], [("a.txt", "blob", "src/a.txt")])
        self.assertIn("feature/api", [b.name for b in self.demo.branches.list(get_all=True)])
        self.demo.branches.delete("feature/api")
        with self.assertRaises(gle.GitlabGetError):
            self.demo.branches.get("feature/api")
        started = self.demo.commits.create({"branch": "from-start", "start_branch": "main",
                                            "commit_message": "new branch",
                                            "actions": [{"action": "create", "file_path": "s.txt", "content": "s"}]})
        self.assertEqual(self.demo.branches.get("from-start").commit["id"], started.id)

    def test_merge_request_merge_closes_issue(self):
        issue = self.demo.issues.create({"title": "Fix me"})
        self.demo.branches.create({"branch": "fix-1", "ref": "main"})
        self.demo.commits.create({"branch": "fix-1", "commit_message": "Fix",
                                  "actions": [{"action": "create", "file_path": "fix-1.txt", "content": "fixed\n"}]})
        mr = self.demo.mergerequests.create({"source_branch": "fix-1", "target_branch": "main",
                                             "title": "Fix the thing", "description": f"Closes #{issue.iid}",
                                             "labels": "bug", "remove_source_branch": True})
        import json
        with open("/work/shared/gitlab/examples/create-merge-request.json") as f:
            example = json.load(f)
        self.assertEqual(set(example) - set(mr.attributes), set())
        self.assertEqual((mr.state, mr.labels, mr.draft), ("opened", ["bug"], False))
        self.assertEqual(self.demo.issues.get(issue.iid).merge_requests_count, 1)
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.mergerequests.create({"source_branch": "fix-1", "target_branch": "main", "title": "again"})
        self.assertEqual(cm.exception.response_code, 409)
        self.assertEqual(cm.exception.error_message, [f"Another open merge request already exists for this source branch: !{mr.iid}"])
        self.assertEqual(mr.rebase(), {"rebase_in_progress": True})
        mr.merge()
        self.assertEqual(mr.state, "merged")
        self.assertIsNotNone(mr.merged_at)
        self.assertIsNotNone(mr.merge_commit_sha)
        closed = self.demo.issues.get(issue.iid)
        self.assertEqual((closed.state, closed.attributes["closed_by"]["username"]), ("closed", "factory-bot"))
        self.assertEqual(self.demo.files.raw("fix-1.txt", ref="main"), b"fixed\n")
        with self.assertRaises(gle.GitlabGetError):
            self.demo.branches.get("fix-1")                 # removed after merge
        with self.assertRaises(gle.GitlabMRClosedError):
            mr.merge()
        draft = self.demo.branches.create({"branch": "draft-1", "ref": "main"})
        self.demo.commits.create({"branch": draft.name, "commit_message": "wip",
                                  "actions": [{"action": "create", "file_path": "draft.txt", "content": "d"}]})
        dmr = self.demo.mergerequests.create({"source_branch": "draft-1", "target_branch": "main",
                                              "title": "Draft: not yet"})
        self.assertTrue(dmr.draft)
        with self.assertRaises(gle.GitlabMRClosedError) as cm:
            dmr.merge()
        self.assertEqual(cm.exception.response_code, 405)

    def test_auto_merge_waits_for_pipeline(self):
        self.demo.branches.create({"branch": "auto-1", "ref": "main"})
        self.demo.commits.create({"branch": "auto-1", "commit_message": "auto",
                                  "actions": [{"action": "create", "file_path": "auto.txt", "content": "a"}]})
        mr = self.demo.mergerequests.create({"source_branch": "auto-1", "target_branch": "main", "title": "Auto"})
        pl = self.d.add_pipeline({"project_id": 1, "ref": "auto-1",
                                  "jobs": [{"name": "test", "stage": "test", "status": "running"}]})
        self.assertEqual(pl["status"], "running")
        mr.merge(merge_when_pipeline_succeeds=True)
        self.assertEqual((mr.state, mr.merge_when_pipeline_succeeds), ("opened", True))
        self.assertEqual([p.id for p in mr.pipelines.list()], [pl["id"]])
        self.d.set_job(pl["jobs"][0]["id"], status="success", trace="ok\n")
        self.assertEqual(self.demo.mergerequests.get(mr.iid).state, "merged")

    def test_tags_and_releases(self):
        rel = self.demo.releases.create({"tag_name": "v1.0.0", "ref": "main", "name": "One",
                                         "description": "First release",
                                         "assets": {"links": [{"name": "factory-linux", "link_type": "package",
                                                               "url": "https://example.com/factory"}]}})
        self.assertEqual((rel.tag_name, rel.name), ("v1.0.0", "One"))
        self.assertEqual(rel.assets["links"][0]["name"], "factory-linux")
        self.assertEqual(rel.commit["id"], self.demo.branches.get("main").commit["id"])
        self.assertEqual(self.demo.tags.get("v1.0.0").release["tag_name"], "v1.0.0")
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.releases.create({"tag_name": "v1.0.0", "ref": "main", "description": "again"})
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (409, "Release already exists"))
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.releases.create({"tag_name": "v9.9.9", "description": "no ref"})
        self.assertEqual(cm.exception.response_code, 422)
        got = self.demo.releases.get("v1.0.0")
        got.description = "Edited"
        got.save()
        self.assertEqual(self.demo.releases.get("v1.0.0").description, "Edited")
        tag = self.demo.tags.create({"tag_name": "v1.1.0", "ref": "main", "message": "annotated"})
        self.assertEqual(tag.message, "annotated")
        self.demo.commits.create({"branch": "main", "commit_message": "Parse faster\n\nChangelog: performance",
                                  "actions": [{"action": "create", "file_path": "perf.txt", "content": "p"}]})
        notes = self.d.request("GET", "/projects/1/repository/changelog?version=1.2.0").json()["notes"]
        self.assertRegex(notes, r"^## 1\.2\.0 \(\d{4}-\d\d-\d\d\)\n\n### performance \(1 change\)\n\n- \[Parse faster\]")
        job = self.d.request("GET", "/projects/1/repository/changelog?version=1.2.0", token=None,
                             headers={"JOB-TOKEN": JOB_TOKEN})
        self.assertEqual(job.status, 200)


class TestPipelinesJobsSchedules(DoubleTestCase):
    def test_pipelines_jobs_and_trace_redirect(self):
        pl_id = self.seeded["pipelines"][0]["id"]
        pls = self.demo.pipelines.list(get_all=True)
        self.assertIn(pl_id, [p.id for p in pls])
        pl = self.demo.pipelines.get(pl_id)
        self.assertEqual((pl.status, pl.ref), ("failed", "main"))
        self.assertEqual(pl.detailed_status["text"], "failed")
        failed = pl.jobs.list(scope=["failed"], get_all=True)
        self.assertEqual([j.name for j in failed], ["unit"])
        self.assertEqual(failed[0].failure_reason, "script_failure")
        r = self.d.request("GET", f"/projects/1/pipelines/{pl_id}/jobs?scope[]=failed&scope[]=success")
        self.assertEqual(sorted(j["name"] for j in r.json()), ["build", "lint", "unit"])
        job = self.demo.jobs.get(failed[0].id)
        self.d.clear_requests()
        self.assertEqual(job.trace(), b"running tests\nFAIL: test_parse (expected 1, got 2)\n")
        log = [(x["path"], x["status"]) for x in self.d.requests()]
        self.assertEqual(log, [(f"/api/v4/projects/1/jobs/{job.id}/trace", 302)])
        raw = self.d.http("GET", f"/__double/traces/1/{job.id}.log")
        self.assertEqual(raw.headers["Content-Disposition"], f'infile; filename="{job.id}.log"')
        self.assertTrue(raw.headers["Content-Type"].startswith("text/plain"))
        new = job.retry()
        self.assertNotEqual(new["id"], job.id)
        self.assertEqual(new["status"], "pending")
        names = [(j.name, j.status) for j in pl.jobs.list(get_all=True)]
        self.assertIn(("unit", "pending"), names)
        self.assertNotIn(("unit", "failed"), names)
        self.assertEqual(len(pl.jobs.list(include_retried=True, get_all=True)), 4)
        self.assertEqual(self.demo.pipelines.get(pl_id).status, "pending")
        pl.cancel()
        self.assertEqual(self.demo.pipelines.get(pl_id).status, "canceled")
        pl.retry()
        self.assertIn(self.demo.pipelines.get(pl_id).status, ("pending", "running"))
        ids = [j.id for j in self.demo.jobs.list(pagination="keyset", order_by="id", sort="desc",
                                                  per_page=2, iterator=True)]
        self.assertEqual(ids, sorted(ids, reverse=True))
        self.assertGreaterEqual(len(ids), 5)

    def test_create_pipeline_from_ci_file(self):
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.pipelines.create({"ref": "main"})
        self.assertEqual(cm.exception.error_message, {"base": ["Missing CI config file"]})
        self.demo.branches.create({"branch": "ci", "ref": "main"})
        self.demo.files.create({"file_path": ".gitlab-ci.yml", "branch": "ci", "commit_message": "ci",
                                "content": "stages: [build, test]\nbuild-job:\n  stage: build\n  script: make\n"
                                           "test-job:\n  stage: test\n  script: make test\n.hidden:\n  script: x\n"})
        pl = self.demo.pipelines.create({"ref": "ci"})
        self.assertEqual(pl.status, "pending")
        jobs = {j.name: j.status for j in pl.jobs.list()}
        self.assertEqual(jobs, {"build-job": "pending", "test-job": "created"})

    def test_runtime_job_updates(self):
        pl = self.d.add_pipeline({"project_id": 1, "ref": "main", "jobs": [
            {"name": "slow", "stage": "test", "status": "running", "trace": "step 1\n"}]})
        job_id = pl["jobs"][0]["id"]
        self.d.set_job(job_id, append_trace="step 2\n", status="failed", failure_reason="runner_system_failure")
        job = self.demo.jobs.get(job_id)
        self.assertEqual((job.status, job.failure_reason), ("failed", "runner_system_failure"))
        self.assertEqual(job.trace(), b"step 1\nstep 2\n")
        self.assertEqual(self.demo.pipelines.get(pl["id"]).status, "failed")
        status = [p.status for p in self.demo.pipelines.list(status="failed", ref="main", get_all=True)]
        self.assertTrue(status and set(status) == {"failed"})

    def test_pipeline_schedules(self):
        sched = self.demo.pipelineschedules.create({"description": "nightly triage", "ref": "main",
                                                    "cron": "0 4 * * 1-5", "cron_timezone": "Europe/Berlin"})
        self.assertTrue(sched.active)
        self.assertIsNotNone(sched.next_run_at)
        sched.variables.create({"key": "FACTORY_MODE", "value": "triage"})
        got = self.demo.pipelineschedules.get(sched.id)
        self.assertEqual(got.attributes["variables"], [{"key": "FACTORY_MODE", "value": "triage", "variable_type": "env_var",
                                          "raw": False}])
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.pipelineschedules.create({"description": "bad", "ref": "main", "cron": "61 * * * *"})
        self.assertEqual(cm.exception.error_message, {"cron": ["is invalid syntax"]})
        got.active = False
        got.save()
        self.assertFalse(self.demo.pipelineschedules.get(sched.id).active)
        got.delete()

    def test_pipeline_schedules_paged_and_variable_edited(self):
        # what factory-setup --schedules relies on: every page of the list (no
        # variables there), the owner, and a variable edited in place
        made = [self.demo.pipelineschedules.create({"description": "paged %d" % i, "ref": "main",
                                                    "cron": "*/10 * * * *"}) for i in range(3)]
        try:
            listed = self.demo.pipelineschedules.list(per_page=2, get_all=True)
            mine = [s for s in listed if s.description.startswith("paged ")]
            self.assertEqual(sorted(s.id for s in mine), sorted(s.id for s in made))
            self.assertNotIn("variables", mine[0].attributes)
            self.assertEqual(mine[0].owner["username"], self.gl.users.get(mine[0].owner["id"]).username)
            made[0].variables.create({"key": "FACTORY_JOB", "value": "watch"})
            made[0].variables.update("FACTORY_JOB", {"value": "triage"})
            got = self.demo.pipelineschedules.get(made[0].id)
            self.assertEqual([(v["key"], v["value"]) for v in got.attributes["variables"]], [("FACTORY_JOB", "triage")])
            got.ref = "refs/heads/main"
            got.cron_timezone = "Europe/Berlin"
            got.save()
            got = self.demo.pipelineschedules.get(made[0].id)
            self.assertEqual((got.ref, got.cron_timezone), ("refs/heads/main", "Europe/Berlin"))
        finally:
            for s in made:
                s.delete()


class TestTokens(DoubleTestCase):
    def test_job_token_scope(self):
        gl = self.new_gl(private_token=None, job_token=JOB_TOKEN)
        project = gl.projects.get(1)
        self.assertEqual(project.path_with_namespace, "factory/demo")
        with self.assertRaises(gle.GitlabListError) as cm:
            project.issues.list()
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (403, "403 Forbidden"))
        with self.assertRaises(gle.GitlabCreateError):
            project.issues.create({"title": "nope"})
        with self.assertRaises(gle.GitlabGetError):
            project.jobs.get(self.seeded["pipelines"][0]["jobs"][0])
        rel = project.releases.create({"tag_name": "ci-1.0", "ref": "main", "description": "from CI"})
        self.assertEqual(rel.tag_name, "ci-1.0")
        self.assertEqual(len(project.releases.list()), len(self.demo.releases.list()))

    def test_read_only_token(self):
        gl = self.new_gl(private_token=RO_TOKEN)
        p = gl.projects.get(1)
        self.assertIsInstance(p.issues.list(), list)
        with self.assertRaises(gle.GitlabCreateError) as cm:
            p.issues.create({"title": "blocked"})
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (403, "insufficient_scope"))
        kinds = {r["token_kind"] for r in self.d.requests()}
        self.assertLessEqual({"private_token"}, kinds)


class TestRateLimitsAndFaults(DoubleTestCase):
    def test_rate_limit_headers_on_every_response(self):
        r1 = self.d.request("GET", "/projects/1")
        r2 = self.d.request("GET", "/projects/1/nonexistent")
        for r in (r1, r2):
            for h in ("RateLimit-Limit", "RateLimit-Name", "RateLimit-Observed", "RateLimit-Remaining",
                      "RateLimit-Reset"):
                self.assertIsNotNone(r.headers.get(h), h)
        self.assertEqual(int(r2.headers["RateLimit-Observed"]), int(r1.headers["RateLimit-Observed"]) + 1)
        self.assertEqual(r1.headers["RateLimit-Limit"], "2000")

    def test_real_throttle_429(self):
        with Double(rate_limit=5) as small:
            seen = [small.request("GET", "/projects/1") for _ in range(5)]
            self.assertEqual([r.headers["RateLimit-Remaining"] for r in seen], ["4", "3", "2", "1", "0"])
            r = small.request("GET", "/projects/1")
            self.assertEqual((r.status, r.text), (429, "Retry later\n"))
            self.assertTrue(1 <= int(r.headers["Retry-After"]) <= 60)
            self.assertTrue(r.headers["RateLimit-ResetTime"].endswith("GMT"))
            self.assertEqual(int(r.headers["RateLimit-Reset"]) % 60, 0)
            gl = self.new_gl(small.url, private_token=small.token)
            with self.assertRaises(gle.GitlabGetError) as cm:
                gl.projects.get(1, obey_rate_limit=False)
            self.assertEqual(cm.exception.response_code, 429)
            other = small.request("GET", "/projects/1", token="glpat-unknown")
            self.assertEqual(other.status, 401)          # separate (unauthenticated) bucket

    def test_short_rate_window(self):
        with Double(rate_limit=3, extra_args=["--rate-window", "2"]) as small:
            first = small.request("GET", "/projects/1")
            time.sleep(max(0.0, int(first.headers["RateLimit-Reset"]) - time.time()) + 0.05)
            seen = [small.request("GET", "/projects/1") for _ in range(4)]
            self.assertEqual([x.status for x in seen], [200, 200, 200, 429])
            self.assertEqual([x.headers["RateLimit-Remaining"] for x in seen], ["2", "1", "0", "0"])
            reset = int(seen[0].headers["RateLimit-Reset"])
            self.assertEqual(reset % 2, 0)
            self.assertEqual({int(x.headers["RateLimit-Reset"]) for x in seen}, {reset})
            self.assertTrue(1 <= int(seen[-1].headers["Retry-After"]) <= 2)

    def test_429_with_retry_after_is_retried_by_python_gitlab(self):
        self.d.faults([{"method": "GET", "path_regex": r"^/api/v4/projects/1$", "status": 429,
                        "headers": {"Retry-After": "1"}, "times": 1}])
        self.d.clear_requests()
        t0 = time.time()
        p = self.gl.projects.get(1)
        self.assertGreaterEqual(time.time() - t0, 0.9)
        self.assertEqual(p.id, 1)
        statuses = [r["status"] for r in self.d.requests() if r["path"] == "/api/v4/projects/1"]
        self.assertEqual(statuses, [429, 200])

    def test_status_fault_and_transient_retry(self):
        self.d.faults([{"path_regex": r"/projects/1/labels", "status": 500, "times": 1}])
        with self.assertRaises(gle.GitlabListError) as cm:
            self.demo.labels.list()
        self.assertEqual((cm.exception.response_code, cm.exception.error_message), (500, "500 Internal Server Error"))
        self.d.faults([{"path_regex": r"/projects/1/labels", "status": 503, "body": "upstream gone", "times": 2}])
        gl = self.new_gl(retry_transient_errors=True)
        self.assertTrue(gl.projects.get(1, lazy=True).labels.list())

    def test_html_error_page(self):
        self.d.faults([{"path_regex": r"/projects/1$", "html": True, "status": 502, "times": 1}])
        r = self.d.request("GET", "/projects/1")
        self.assertEqual(r.status, 502)
        self.assertTrue(r.headers["Content-Type"].startswith("text/html"))
        self.assertIn("<html>", r.text)
        self.d.faults([{"path_regex": r"/projects/1$", "html": True, "times": 1}])
        with self.assertRaises(gle.GitlabGetError) as cm:
            self.gl.projects.get(1)
        self.assertEqual(cm.exception.response_code, 502)

    def test_empty_body(self):
        self.d.faults([{"path_regex": r"/projects/1$", "empty": True, "times": 1}])
        with self.assertRaises(gle.GitlabParsingError):
            self.gl.projects.get(1)

    def test_drop_connection(self):
        self.d.faults([{"path_regex": r"/projects/1$", "drop": True, "times": 1}])
        conn = http.client.HTTPConnection(self.d.host, self.d.port, timeout=10)
        conn.request("GET", "/api/v4/projects/1", headers={"PRIVATE-TOKEN": self.d.token})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            conn.getresponse()
        conn.close()
        self.d.faults([{"path_regex": r"/projects/1$", "drop": True, "times": 1}])
        self.assertEqual(self.new_gl(retry_transient_errors=True).projects.get(1).id, 1)

    def test_truncated_body(self):
        self.d.faults([{"path_regex": r"/projects/1$", "truncate": True, "times": 1}])
        conn = http.client.HTTPConnection(self.d.host, self.d.port, timeout=10)
        conn.request("GET", "/api/v4/projects/1", headers={"PRIVATE-TOKEN": self.d.token})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        with self.assertRaises(http.client.IncompleteRead):
            resp.read()
        conn.close()
        # requests/urllib3 1.x does not enforce Content-Length: python-gitlab sees
        # half a JSON document.  A client has to check the length itself.
        self.d.faults([{"path_regex": r"/projects/1$", "truncate": True, "times": 1}])
        with self.assertRaises(gle.GitlabParsingError):
            self.new_gl(retry_transient_errors=True).projects.get(1)
        self.assertEqual(self.gl.projects.get(1).id, 1)

    def test_delay_after_times_and_method(self):
        self.d.faults([{"path_regex": r"/projects/1$", "delay_ms": 300, "times": 1}])
        t0 = time.time()
        self.assertEqual(self.d.request("GET", "/projects/1").status, 200)
        self.assertGreaterEqual(time.time() - t0, 0.3)
        self.d.faults([{"path_regex": r"/projects/1/issues\?", "status": 503, "after": 1, "times": 2}])
        got = [self.d.request("GET", "/projects/1/issues?per_page=1").status for _ in range(4)]
        self.assertEqual(got, [200, 503, 503, 200])
        self.d.faults([{"method": "POST", "path_regex": r"/projects/1/issues", "status": 500, "times": -1}])
        self.assertEqual(self.d.request("GET", "/projects/1/issues").status, 200)
        self.assertEqual(self.d.request("POST", "/projects/1/issues", {"title": "x"}).status, 500)
        self.assertEqual(self.d.request("POST", "/projects/1/issues", {"title": "x"}).status, 500)
        self.d.clear_faults()
        self.assertEqual(self.d.request("POST", "/projects/1/issues", {"title": "x"}).status, 201)


class TestGitOverHttp(DoubleTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory()
        self.work = os.path.join(self.tmp.name, "demo")

    def tearDown(self):
        self.tmp.cleanup()

    def test_clone_commit_push_and_branches(self):
        r = git("clone", self.d.git_url("factory/demo"), self.work)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.work, "README.md")))
        self.assertEqual(git("checkout", "-b", "pushed/from-git", cwd=self.work).returncode, 0)
        with open(os.path.join(self.work, "big.bin"), "w") as f:      # bigger than postBuffer:
            f.write(base64.b64encode(os.urandom(48_000)).decode())     # push uses chunked encoding
        git("add", ".", cwd=self.work)
        self.assertEqual(git("commit", "-m", "From git", cwd=self.work).returncode, 0)
        head = git("rev-parse", "HEAD", cwd=self.work).stdout.strip()
        r = git("-c", "http.postBuffer=1024", "push", "origin", "pushed/from-git", cwd=self.work)
        self.assertEqual(r.returncode, 0, r.stderr)
        branch = self.demo.branches.get("pushed/from-git")
        self.assertEqual(branch.commit["id"], head)
        self.assertEqual(self.demo.commits.get(head).title, "From git")
        # the API's own commits are visible to git
        self.demo.commits.create({"branch": "pushed/from-git", "commit_message": "API side",
                                  "actions": [{"action": "create", "file_path": "api.txt", "content": "api"}]})
        r = git("pull", "--ff-only", "origin", "pushed/from-git", cwd=self.work)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.work, "api.txt")))

    def test_wrong_or_missing_token_fails(self):
        r = git("clone", self.d.git_url("factory/demo", token="glpat-wrong"), self.work)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Authentication failed", r.stderr)
        raw = self.d.http("GET", "/factory/demo.git/info/refs?service=git-upload-pack")
        self.assertEqual(raw.status, 401)
        self.assertEqual(raw.headers["WWW-Authenticate"], 'Basic realm="GitLab"')

    def test_protected_branch_push_is_refused(self):
        self.assertEqual(git("clone", self.d.git_url("factory/demo"), self.work).returncode, 0)
        self.d.protect_branch(1, "main")
        try:
            self.assertTrue(self.demo.branches.get("main").protected)
            with open(os.path.join(self.work, "prot.txt"), "w") as f:
                f.write("nope\n")
            git("add", ".", cwd=self.work)
            git("commit", "-m", "to protected", cwd=self.work)
            r = git("push", "origin", "main", cwd=self.work)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("You are not allowed to push code to protected branches on this project.", r.stderr)
            self.assertIn("pre-receive hook declined", r.stderr)
            with self.assertRaises(gle.GitlabCreateError) as cm:
                self.demo.commits.create({"branch": "main", "commit_message": "api",
                                          "actions": [{"action": "create", "file_path": "p.txt", "content": "p"}]})
            self.assertEqual(cm.exception.response_code, 403)
        finally:
            self.d.unprotect_branch(1, "main")
        self.assertEqual(git("push", "origin", "main", cwd=self.work).returncode, 0)

    def test_job_token_can_fetch_not_push(self):
        url = self.d.git_url("factory/demo", token=JOB_TOKEN, username="gitlab-ci-token")
        r = git("clone", url, self.work)
        self.assertEqual(r.returncode, 0, r.stderr)
        git("checkout", "-b", "ci-push", cwd=self.work)
        git("commit", "--allow-empty", "-m", "ci", cwd=self.work)
        r = git("push", "origin", "ci-push", cwd=self.work)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("403", r.stderr)


class TestControlApi(DoubleTestCase):
    def test_state_requests_and_lifecycle(self):
        self.d.clear_requests()
        self.demo.issues.list(per_page=1)
        self.demo.issues.create({"title": "counted"})
        reqs = self.d.requests()
        self.assertEqual([(r["method"], r["status"]) for r in reqs], [("GET", 200), ("POST", 201)])
        self.assertEqual(reqs[0]["query"], {"per_page": "1"})
        self.assertEqual(reqs[0]["token_kind"], "private_token")
        state = self.d.state()
        self.assertIn("counted", [i["title"] for i in state["issues"]])
        self.assertEqual(sum(1 for i in state["issues"] if i["project_id"] == 2), BIG)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            extra = Double()
            extra.stop()
            self.assertIsNone(extra.proc)

    def test_issue_and_note_creation_limits(self):
        """GitLab's application limits: past them 429 with GitLab's message and
        no RateLimit-* headers; python-gitlab sees a create error 429."""
        self.addCleanup(self.d.set_limits, issues_per_minute=0, notes_per_minute=0, app_window=60)
        self.d.set_limits(issues_per_minute=1, notes_per_minute=1, app_window=60)
        issue = self.demo.issues.create({"title": "first of the minute"})
        with self.assertRaises(gle.GitlabCreateError) as cm:
            self.demo.issues.create({"title": "over the limit"}, obey_rate_limit=False)
        self.assertEqual(cm.exception.response_code, 429)
        self.assertIn("requested too many times", str(cm.exception.error_message))
        issue.notes.create({"body": "first note"})
        with self.assertRaises(gle.GitlabCreateError) as cm:
            issue.notes.create({"body": "second note"}, obey_rate_limit=False)
        self.assertEqual(cm.exception.response_code, 429)
        r = self.d.request("POST", "/projects/1/issues", {"title": "raw"})
        self.assertEqual(r.status, 429)
        self.assertIsNone(r.headers.get("RateLimit-Remaining"))
        self.assertIsNone(r.headers.get("Retry-After"))
        # Other writes and reads are not limited by them.
        self.demo.labels.create({"name": "limits-%d" % time.time_ns(), "color": "#123456"})


if __name__ == "__main__":
    unittest.main()
