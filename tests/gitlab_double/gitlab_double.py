#!/usr/bin/env python3
"""GitLab test double: REST API v4 + git smart HTTP, stdlib only.

A single-file server that behaves like a GitLab instance (as documented in
GitLab's API docs and the example responses in /work/shared/gitlab/examples)
so the Factory's C client, integration tests, benchmarks and demo can run
without a real GitLab.  It must behave like GitLab, not like our client:
real JSON shapes, real status codes and error bodies, real pagination and
rate-limit headers, real git repositories.

Run:
    /usr/bin/python3 gitlab_double.py --listen 127.0.0.1:0 [--state-dir DIR]
        [--token TOKEN ...] [--seed FILE.json] [--tier free|premium]
        [--gitlab-version 18.3.0] [--rate-limit N_PER_MINUTE] [--rate-window SECONDS]
        [--issues-per-minute N] [--notes-per-minute N]
        [--quiet]

After binding (and seeding) it prints exactly one line to stdout,
``listening on http://127.0.0.1:PORT``, and serves until SIGTERM/SIGINT.

What it models
--------------
* Auth: ``PRIVATE-TOKEN``, ``Authorization: Bearer``, ``private_token=``
  and ``JOB-TOKEN`` / ``job_token=``.  Missing or invalid -> 401.  Job tokens
  reach only ``GET /projects/:id``, ``GET /version``, ``GET /job``, the
  changelog GET and the Releases API (read and write, as release-cli does);
  everything else -> 403.
  Read-only tokens (scope ``read_api``) get 403 ``insufficient_scope`` on
  writes.  Every API project is private: no anonymous access.
* Projects (numeric id or URL-encoded path), groups derived from namespaces
  (subgroups too), users, ``/user``, ``/version``, ``/metadata``.  Projects
  carry ``topics`` (seeded) and ``archived``; ``GET /groups/:id/projects``
  honours ``include_subgroups``, ``archived`` and ``topic``.
* Issues: filters, ordering, offset and keyset pagination, edits with
  ``labels``/``add_labels``/``remove_labels`` (unknown labels are created, as
  GitLab does), scoped labels on ``--tier premium`` only, one assignee on
  free and many on premium, close/reopen with ``closed_at``/``closed_by``,
  reorder (relative_position), resource label and state events, notes
  (internal/confidential), system notes for title/description/assignee/
  confidentiality/lock changes.
* Quick actions in issue/MR descriptions and notes are EXECUTED and removed
  from the stored text, as GitLab does (``/close /reopen /label /unlabel
  /relabel /confidential /assign /unassign /title /lock /unlock /draft
  /ready``), except inside fenced code blocks and ``>>>`` quotes.  A note made
  only of quick actions returns 202 with ``commands_changes`` and ``summary``.
  ``@username``/``@all`` mentions outside code are recorded and visible at
  ``GET /__double/mentions``.
* Labels (project and group), boards and board lists (a group board beyond
  the default one needs ``--tier premium``: ``POST /groups/:id/boards`` is
  403 on free, as GitLab's multiple group boards are a paid feature),
  merge requests (real
  merges with ``git merge-tree``; ``Closes #N`` closes issues when merged
  into the default branch; auto-merge waits for the head pipeline),
  repository (branches, commits with actions, tags, files, tree, protected
  branches, changelog from ``Changelog:`` trailers) backed by a real bare
  git repo per project, pipelines and jobs
  (retry/cancel, job log via 302 redirect), releases, pipeline schedules.
* Pagination exactly as documented (Link, x-* headers, no totals past 10,000
  records, keyset for project issues from 18.3 and project jobs), GitLab's
  RateLimit-* headers and 429 ``Retry later`` (a fixed window per token of
  ``--rate-window`` seconds, default 60, holding ``--rate-limit`` requests).
  Application limits, off unless set (``--issues-per-minute``,
  ``--notes-per-minute`` or ``POST /__double/ratelimit``): issue creation
  (``POST /projects/:id/issues``, per user and per project) and note
  creation (``POST .../issues|merge_requests/:iid/notes``, per user), each a
  window of 60 seconds (``app_window`` in ``POST /__double/ratelimit``, for
  quick tests) from its first request, answered past the limit with 429
  ``{"message": {"error": "This endpoint has been requested too many
  times. Try again later."}}`` and no RateLimit-*/Retry-After headers (they
  do not show in those headers on GitLab).
* Git smart HTTP via ``git http-backend`` with Basic auth (any username and a
  token as password; ``gitlab-ci-token`` + job token may only fetch),
  protected branches refused by a pre-receive hook.
* A control API under ``/__double/`` (no auth): seed, reset, faults, request
  log, state dump, mentions, runtime pipelines/jobs, protected branches.

What it does not model
----------------------
* Permissions beyond the token kinds above (every user token acts as a
  maintainer), visibility, members, sudo, impersonation, OAuth flows.
* Milestones, epics, iterations, weights, time tracking, award emoji,
  discussions/threads, approvals, MR diffs/changes endpoints, forks,
  webhooks, wikis, snippets, packages, environments, artifacts.
* Application-level rate limits other than issue and note creation, search API,
  GraphQL, Markdown rendering (``description_html`` is escaped text).
* CI execution: pipelines and jobs only change state when told to through
  the API (retry/cancel) or the control API.  ``POST /pipeline`` reads job
  names and stages from ``.gitlab-ci.yml`` with a tiny line scanner, not a
  YAML parser.
* Persistence: state lives in memory; only git repositories are on disk.
* Merge requests between forks, MR rebase (answers 202 and does nothing),
  squash, approvals; merge conflicts are detected with ``git merge-tree``.
* Rate limits on git smart HTTP and the control API (only /api/v4 counts).
* Markdown: mentions and quick actions inside code (fenced, indented,
  inline) are ignored as in GitLab; a backslash does NOT escape ``@user``
  (GitLab does not honour a backslash before ``@`` either).  The changelog uses GitLab's default template
  with trailer values as category titles (no .gitlab/changelog_config.yml).

Control API (no auth, not rate limited, not in the request log)
---------------------------------------------------------------
POST /__double/seed       additive JSON ({"reset": true} wipes first):
    users:[{id?, username, name?, email?}], groups:[path | {full_path, name}],
    projects:[{id, path_with_namespace, default_branch, files:{path: text |
      {content, encoding: base64, execute_filemode}}, branches:{name: ref},
      topics:[names], archived}],
    tokens:[token | {token, user, scopes}], read_only_tokens:[...],
    job_tokens:[token | {token, project_id, job_id}],
    labels:[{project_id | group, name, color, description, priority}],
    issues:[{project_id, iid?, title, description, labels, state, created_at,
      updated_at, closed_at, confidential, assignees, author, relative_position,
      notes:[body | {body, author, created_at, system, internal}],
      label_events:[{action, label, created_at, user}]}],
    merge_requests:[{project_id, source_branch, target_branch, title, state}],
    boards:[{project_id | group, name, lists:[label names]}],
    pipelines:[{project_id, ref, status?, sha?, source, created_at,
      jobs:[{name, stage, status, trace, failure_reason, duration,
             queued_duration, allow_failure}]}],
    protected_branches:[{project_id, name} | "pid:name"]
  -> {"projects": [ids], "issues": [iids], "pipelines": [{id, jobs}], ...}
POST /__double/reset {"default": true}   wipe state (+ default project)
POST|GET|DELETE /__double/faults   rules {method?, path_regex, status?, body?,
    headers?, delay_ms?, drop?, truncate?, html?, empty?, times? (1; -1 =
    forever), after? (skip the first N matches)}; path_regex is searched in
    "path?query"
GET|DELETE /__double/requests      [{seq, method, path, query, status,
    token_kind, time}] for /api/v4 requests
GET /__double/state, GET|DELETE /__double/mentions
POST /__double/pipelines (as a seed pipeline) -> pipeline + jobs
POST /__double/pipelines/:id {status}; POST /__double/jobs/:id {status,
    trace, append_trace, failure_reason, duration, pipeline_status}
POST|DELETE /__double/protected_branches {project_id, name}
DELETE /__double/ratelimit; GET /__double/traces/:project/:job.log
POST /__double/ratelimit {limit?, window?, issues_per_minute?, notes_per_minute?, app_window?}
    change the limits at run time (0 = no application limit); counters reset

Everything is guarded by one lock.  Issue lists are O(page) once a query has
been seen: sorted lists and filtered results are cached per project until an
issue or label of that project changes.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime
import email.parser
import email.policy
import email.utils
import gzip
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zlib

try:
    import zoneinfo
except ImportError:  # pragma: no cover - Python < 3.9
    zoneinfo = None

DEFAULT_TOKEN = "glpat-double-token-0000"
DEFAULT_VERSION = "18.3.0"
DEFAULT_RATE_LIMIT = 2000
UTC = datetime.timezone.utc
ZERO_SHA = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
DEFAULT_LABEL_COLOR = "#6699cc"
TOTALS_LIMIT = 10_000          # past this many records GitLab omits totals
OFFSET_CAP = 50_000            # offset cap on endpoints that offer keyset
POSITION_GAP = 511             # GitLab's RelativePositioning::IDEAL_DISTANCE
MAX_TITLE = 255
MAX_DESCRIPTION = 1_048_576
MAX_NOTE = 1_000_000


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as JSON with a GitLab-style body."""

    def __init__(self, status, body, headers=None):
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = list(headers or [])


class GitError(Exception):
    pass


def missing(*names):
    return ApiError(400, {"error": ", ".join(f"{n} is missing" for n in names)})


def invalid(name):
    return ApiError(400, {"error": f"{name} is invalid"})


def bad_value(name):
    return ApiError(400, {"error": f"{name} does not have a valid value"})


def not_found(what=None):
    return ApiError(404, {"message": f"404 {what} Not Found" if what else "404 Not found"})


def forbidden(reason=None):
    return ApiError(403, {"message": "403 Forbidden" + (f" - {reason}" if reason else "")})


def validation(field, *messages):
    return ApiError(400, {"message": {field: list(messages)}})


class Resp:
    """A complete HTTP answer (status, body bytes, content type, headers)."""

    __slots__ = ("status", "body", "ctype", "headers")

    def __init__(self, status, body=b"", ctype="application/json", headers=None):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.headers = list(headers or [])


def jresp(status, obj, headers=None):
    return Resp(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                "application/json", headers)


def text_resp(status, text, ctype="text/plain; charset=utf-8", headers=None):
    return Resp(status, text.encode("utf-8") if isinstance(text, str) else text, ctype, headers)


def iso(ts):
    """Epoch seconds -> GitLab timestamp '2016-01-07T12:44:33.959Z'."""
    if ts is None:
        return None
    t = time.gmtime(ts)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                                   t.tm_sec, int((ts % 1) * 1000))


def parse_time(value, name="time"):
    """ISO 8601 (date, datetime, Z or offset) or epoch number -> epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid(name)
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    if s[-1:] in ("Z", "z"):
        s = s[:-1] + "+00:00"
    try:
        d = datetime.datetime.fromisoformat(s)
    except ValueError:
        raise invalid(name) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def parse_date(value, name="due_date"):
    if value in (None, ""):
        return None
    try:
        return datetime.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise invalid(name) from None


def git_date(s):
    """git's %aI '2024-01-01T00:00:00+00:00' -> '2024-01-01T00:00:00.000+00:00'."""
    return s[:19] + ".000" + s[19:] if len(s) >= 20 and s[19] != "." else s


def version_tuple(v):
    nums = re.findall(r"\d+", v or "0")[:3]
    return tuple(int(n) for n in nums) + (0,) * (3 - len(nums))


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def unb64url(s):
    pad = "=" * (-len(s) % 4)
    return json.loads(base64.urlsafe_b64decode(s + pad))


def to_tuple(x):
    return tuple(to_tuple(v) for v in x) if isinstance(x, list) else x


def desc_str_key(s):
    """A key that sorts strings in descending order (prefix-safe)."""
    return tuple(-ord(c) for c in s) + (1,)


_KEY_RE = re.compile(r"\A[\[\]]*([^\[\]]+)\]*")


def rack_normalize(params, name, value):
    """Rack-style nested parameters: a[]=1, a[b]=2, a[][c]=3 (as Grape sees them)."""
    m = _KEY_RE.match(name)
    if not m:
        return params
    k, after = m.group(1), name[m.end():]
    if after == "":
        if k in params and not isinstance(params[k], dict):
            prev = params[k]
            params[k] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            params[k] = value
    elif after == "[]":
        cur = params.get(k)
        if not isinstance(cur, list):
            cur = params[k] = []
        cur.append(value)
    else:
        m1 = re.match(r"\A\[\]\[([^\[\]]+)\]\Z", after) or re.match(r"\A\[\](.+)\Z", after)
        if m1:
            child = m1.group(1)
            lst = params.get(k)
            if not isinstance(lst, list):
                lst = params[k] = []
            cm = _KEY_RE.match(child)
            first = cm.group(1) if cm else child
            if lst and isinstance(lst[-1], dict) and first not in lst[-1]:
                rack_normalize(lst[-1], child, value)
            else:
                lst.append(rack_normalize({}, child, value))
        else:
            sub = params.get(k)
            if not isinstance(sub, dict):
                sub = params[k] = {}
            rack_normalize(sub, after, value)
    return params


def parse_nested(qs):
    params = {}
    for k, v in urllib.parse.parse_qsl(qs, keep_blank_values=True):
        rack_normalize(params, k, v)
    return params


def flat_query(qs):
    q = {}
    for k, v in urllib.parse.parse_qsl(qs, keep_blank_values=True):
        if k in q:
            q[k] = (q[k] if isinstance(q[k], list) else [q[k]]) + [v]
        else:
            q[k] = v
    return q


CSS_COLORS = dict(pair.split(":") for pair in (
    "aliceblue:f0f8ff antiquewhite:faebd7 aqua:00ffff aquamarine:7fffd4 azure:f0ffff "
    "beige:f5f5dc bisque:ffe4c4 black:000000 blanchedalmond:ffebcd blue:0000ff "
    "blueviolet:8a2be2 brown:a52a2a burlywood:deb887 cadetblue:5f9ea0 chartreuse:7fff00 "
    "chocolate:d2691e coral:ff7f50 cornflowerblue:6495ed cornsilk:fff8dc crimson:dc143c "
    "cyan:00ffff darkblue:00008b darkcyan:008b8b darkgoldenrod:b8860b darkgray:a9a9a9 "
    "darkgreen:006400 darkgrey:a9a9a9 darkkhaki:bdb76b darkmagenta:8b008b "
    "darkolivegreen:556b2f darkorange:ff8c00 darkorchid:9932cc darkred:8b0000 "
    "darksalmon:e9967a darkseagreen:8fbc8f darkslateblue:483d8b darkslategray:2f4f4f "
    "darkslategrey:2f4f4f darkturquoise:00ced1 darkviolet:9400d3 deeppink:ff1493 "
    "deepskyblue:00bfff dimgray:696969 dimgrey:696969 dodgerblue:1e90ff firebrick:b22222 "
    "floralwhite:fffaf0 forestgreen:228b22 fuchsia:ff00ff gainsboro:dcdcdc "
    "ghostwhite:f8f8ff gold:ffd700 goldenrod:daa520 gray:808080 green:008000 "
    "greenyellow:adff2f grey:808080 honeydew:f0fff0 hotpink:ff69b4 indianred:cd5c5c "
    "indigo:4b0082 ivory:fffff0 khaki:f0e68c lavender:e6e6fa lavenderblush:fff0f5 "
    "lawngreen:7cfc00 lemonchiffon:fffacd lightblue:add8e6 lightcoral:f08080 "
    "lightcyan:e0ffff lightgoldenrodyellow:fafad2 lightgray:d3d3d3 lightgreen:90ee90 "
    "lightgrey:d3d3d3 lightpink:ffb6c1 lightsalmon:ffa07a lightseagreen:20b2aa "
    "lightskyblue:87cefa lightslategray:778899 lightslategrey:778899 "
    "lightsteelblue:b0c4de lightyellow:ffffe0 lime:00ff00 limegreen:32cd32 linen:faf0e6 "
    "magenta:ff00ff maroon:800000 mediumaquamarine:66cdaa mediumblue:0000cd "
    "mediumorchid:ba55d3 mediumpurple:9370db mediumseagreen:3cb371 "
    "mediumslateblue:7b68ee mediumspringgreen:00fa9a mediumturquoise:48d1cc "
    "mediumvioletred:c71585 midnightblue:191970 mintcream:f5fffa mistyrose:ffe4e1 "
    "moccasin:ffe4b5 navajowhite:ffdead navy:000080 oldlace:fdf5e6 olive:808000 "
    "olivedrab:6b8e23 orange:ffa500 orangered:ff4500 orchid:da70d6 palegoldenrod:eee8aa "
    "palegreen:98fb98 paleturquoise:afeeee palevioletred:db7093 papayawhip:ffefd5 "
    "peachpuff:ffdab9 peru:cd853f pink:ffc0cb plum:dda0dd powderblue:b0e0e6 "
    "purple:800080 rebeccapurple:663399 red:ff0000 rosybrown:bc8f8f royalblue:4169e1 "
    "saddlebrown:8b4513 salmon:fa8072 sandybrown:f4a460 seagreen:2e8b57 seashell:fff5ee "
    "sienna:a0522d silver:c0c0c0 skyblue:87ceeb slateblue:6a5acd slategray:708090 "
    "slategrey:708090 snow:fffafa springgreen:00ff7f steelblue:4682b4 tan:d2b48c "
    "teal:008080 thistle:d8bfd8 tomato:ff6347 turquoise:40e0d0 violet:ee82ee "
    "wheat:f5deb3 white:ffffff whitesmoke:f5f5f5 yellow:ffff00 yellowgreen:9acd32"
).split())


def normalize_color(value):
    """'#RGB', '#RRGGBB' or a CSS colour name -> '#rrggbb'-style string; None if invalid."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if re.fullmatch(r"#[0-9A-Fa-f]{6}", v):
        return v
    if re.fullmatch(r"#[0-9A-Fa-f]{3}", v):
        return "#" + "".join(c * 2 for c in v[1:])
    hexv = CSS_COLORS.get(v.lower())
    return "#" + hexv.upper() if hexv else None


def text_color(color):
    try:
        r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    except (ValueError, TypeError):
        return "#FFFFFF"

    def lin(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#1F1E24" if lum > 0.179 else "#FFFFFF"


def is_draft_title(title):
    return bool(re.match(r"\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|\[wip\]|wip:)", title or "", re.I))


def strip_draft(title):
    return re.sub(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|\[wip\]|wip:)\s*", "", title, flags=re.I)


def task_counts(text):
    if not text:
        return (0, 0)
    items = re.findall(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+\[([ xX~])\]", text, re.M)
    return (len(items), sum(1 for i in items if i in "xX"))


def scope_of(name):
    return name.rsplit("::", 1)[0] if "::" in name else None


# --------------------------------------------------------------------------
# Quick actions and mentions (GitLab runs them on stored text)
# --------------------------------------------------------------------------

QA_LINE = re.compile(r"^/([A-Za-z_]+)(?:[ \t]+(.*?))?[ \t]*$")
QA_COMMANDS = {"close", "reopen", "label", "labels", "unlabel", "remove_label", "relabel",
               "confidential", "assign", "unassign", "title", "lock", "unlock",
               "draft", "wip", "ready"}
FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def split_quick_actions(text, available):
    """Remove executable quick-action lines; return (remaining_text, [(cmd, arg)]).

    Like GitLab's QuickActions::Extractor: commands must start a line, are
    ignored inside fenced code blocks and ``>>>`` blockquotes, and commands
    that are not available for the target stay in the text."""
    if not text:
        return text, []
    out, cmds = [], []
    fence = None
    quote = False
    for line in text.replace("\r\n", "\n").split("\n"):
        fm = FENCE_RE.match(line)
        if fence:
            out.append(line)
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= len(fence):
                fence = None
            continue
        if fm:
            fence = fm.group(1)
            out.append(line)
            continue
        if line.startswith(">>>"):
            quote = not quote
            out.append(line)
            continue
        if quote:
            out.append(line)
            continue
        m = QA_LINE.match(line)
        if m and m.group(1).lower() in QA_COMMANDS and available(m.group(1).lower(), m.group(2) or ""):
            cmds.append((m.group(1).lower(), m.group(2) or ""))
            continue
        out.append(line)
    if not cmds:
        return text, []
    return "\n".join(out).strip(), cmds


MENTION_RE = re.compile(r"(?<![\w@/])@([A-Za-z0-9_][A-Za-z0-9_.\-]*)")


def strip_code(text):
    """Drop fenced/indented code blocks and inline code spans (no mentions there)."""
    out, fence = [], None
    for line in (text or "").split("\n"):
        fm = FENCE_RE.match(line)
        if fence:
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= len(fence):
                fence = None
            continue
        if fm:
            fence = fm.group(1)
            continue
        if line.startswith("    ") or line.startswith("\t"):
            continue
        out.append(line)
    return re.sub(r"(`+)(.+?)\1", " ", "\n".join(out), flags=re.S)


def find_mentions(text):
    names = []
    for m in MENTION_RE.finditer(strip_code(text)):
        n = m.group(1).rstrip(".-")
        if n and n not in names:
            names.append(n)
    return names


def parse_label_args(arg):
    names = []
    for m in re.finditer(r'~"([^"]+)"|~([^\s~"]+)|"([^"]+)"|([^\s~"]+)', arg or ""):
        names.append(next(g for g in m.groups() if g))
    return names


def parse_user_args(arg):
    return [u for u in re.findall(r"@?([A-Za-z0-9_][A-Za-z0-9_.\-]*)", arg or "")]


# --------------------------------------------------------------------------
# Cron (pipeline schedules' next_run_at)
# --------------------------------------------------------------------------

_CRON_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
               "sep": 9, "oct": 10, "nov": 11, "dec": 12,
               "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def _cron_field(spec, lo, hi):
    values = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, st = part.split("/", 1)
            step = int(st)
            if step < 1:
                raise ValueError(spec)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(_CRON_NAMES.get(x.lower(), x)) for x in part.split("-", 1))
        else:
            a = int(_CRON_NAMES.get(part.lower(), part))
            b = hi if step > 1 else a
        if a < lo or b > hi or a > b:
            raise ValueError(spec)
        values.update(range(a, b + 1, step))
    return values


def parse_cron(expr):
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(expr)
    mins = _cron_field(fields[0], 0, 59)
    hours = _cron_field(fields[1], 0, 23)
    doms = _cron_field(fields[2], 1, 31)
    months = _cron_field(fields[3], 1, 12)
    dows = {d % 7 for d in _cron_field(fields[4], 0, 7)}
    return mins, hours, doms, months, dows, fields[2] not in ("*", "?"), fields[4] not in ("*", "?")


def cron_next(expr, tzname, after_ts):
    mins, hours, doms, months, dows, dom_r, dow_r = parse_cron(expr)
    tz = UTC
    if zoneinfo and tzname and tzname != "UTC":
        tz = zoneinfo.ZoneInfo(tzname)
    t = datetime.datetime.fromtimestamp(after_ts, tz).replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(200000):
        if t.month not in months:
            t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
            continue
        dow = (t.weekday() + 1) % 7
        if dom_r and dow_r:
            day_ok = t.day in doms or dow in dows
        else:
            day_ok = t.day in doms and dow in dows
        if not day_ok:
            t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            continue
        if t.hour not in hours:
            t = t.replace(minute=0) + datetime.timedelta(hours=1)
            continue
        if t.minute not in mins:
            t += datetime.timedelta(minutes=1)
            continue
        return t.timestamp()
    return None


# --------------------------------------------------------------------------
# .gitlab-ci.yml job scanner (not a YAML parser)
# --------------------------------------------------------------------------

CI_RESERVED = {"stages", "variables", "default", "include", "workflow", "image", "services",
               "before_script", "after_script", "cache", "spec", "types", "pages:deploy"}


def scan_ci_jobs(text):
    """Return (stages, [{name, stage, when}]) from a .gitlab-ci.yml, roughly."""
    docs = re.split(r"^---[ \t]*$", text, flags=re.M)
    if len(docs) > 1 and re.search(r"^spec:", docs[0], re.M):
        text = "\n".join(docs[1:])
    stages, jobs, cur, in_stages = [], [], None, False
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            m = re.match(r"^(['\"]?)([^'\"#]+?)\1\s*:\s*(.*)$", line)
            cur, in_stages = None, False
            if not m:
                continue
            key, rest = m.group(2).strip(), m.group(3).strip()
            if key == "stages":
                in_stages = True
                if rest.startswith("["):
                    stages = [s.strip().strip("'\"") for s in rest.strip("[]").split(",") if s.strip()]
                    in_stages = False
            elif key not in CI_RESERVED and not key.startswith("."):
                cur = {"name": key, "stage": "test", "when": "on_success"}
                jobs.append(cur)
            continue
        if in_stages:
            m = re.match(r"^\s+-\s*(.+?)\s*$", line)
            if m:
                stages.append(m.group(1).strip("'\""))
        elif cur is not None:
            m = re.match(r"^\s+stage:\s*['\"]?([^'\"\s]+)", line)
            if m:
                cur["stage"] = m.group(1)
            m = re.match(r"^\s+when:\s*['\"]?([^'\"\s]+)", line)
            if m:
                cur["when"] = m.group(1)
    if not stages:
        stages = [".pre", "build", "test", "deploy", ".post"]
    return stages, jobs


# --------------------------------------------------------------------------
# Git repositories (real bare repos, driven with the git CLI)
# --------------------------------------------------------------------------

def git_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANG="C")
    if extra:
        env.update(extra)
    return env


PRE_RECEIVE_HOOK = r"""#!/bin/sh
# Installed by the GitLab double: refuse pushes to protected branches,
# with GitLab's message.  Patterns (one per line, shell globs) live in
# ./protected_branches inside the bare repository.
list="protected_branches"
[ -f "$list" ] || exit 0
status=0
while read -r old new ref; do
  case "$ref" in refs/heads/*) b="${ref#refs/heads/}";; *) continue;; esac
  while IFS= read -r pat; do
    [ -n "$pat" ] || continue
    case "$b" in
      $pat) echo "GitLab: You are not allowed to push code to protected branches on this project." >&2; status=1;;
    esac
  done < "$list"
done
exit $status
"""

LOG_FORMAT = "%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%(trailers:only,unfold,separator=%x1d)%x1f%B%x1e"


class Repo:
    """A bare repository of one project."""

    def __init__(self, path):
        self.path = path

    def run(self, *args, input=None, env=None, ok=(0,)):
        p = subprocess.run(["git", *args], cwd=self.path, input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env(env))
        if p.returncode not in ok:
            raise GitError(p.stderr.decode("utf-8", "replace").strip() or f"git {args[0]} failed")
        return p

    def out(self, *args, **kw):
        return self.run(*args, **kw).stdout.decode("utf-8", "replace")

    def init(self, default_branch):
        os.makedirs(self.path, exist_ok=True)
        if not os.path.exists(os.path.join(self.path, "HEAD")):
            self.run("init", "--bare", "-q", "-b", default_branch, ".")
        self.run("config", "http.receivepack", "true")
        self.run("config", "uploadpack.allowAnySHA1InWant", "true")
        hook = os.path.join(self.path, "hooks", "pre-receive")
        os.makedirs(os.path.dirname(hook), exist_ok=True)
        with open(hook, "w") as f:
            f.write(PRE_RECEIVE_HOOK)
        os.chmod(hook, 0o755)

    def set_head(self, branch):
        self.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")

    def write_protected(self, patterns):
        with open(os.path.join(self.path, "protected_branches"), "w") as f:
            f.write("".join(p + "\n" for p in sorted(patterns)))

    # ---- refs ----
    def resolve(self, ref):
        """Branch, tag or sha -> commit sha, or None."""
        if not ref or ref.startswith("-") or "\n" in ref:
            return None
        p = self.run("rev-parse", "--verify", "-q", ref + "^{commit}", ok=(0, 1, 128))
        return p.stdout.decode().strip() if p.returncode == 0 else None

    def branch_sha(self, name):
        return self.resolve(f"refs/heads/{name}") if name else None

    def heads(self):
        out = self.out("for-each-ref", "--format=%(refname:strip=2)%00%(objectname)", "refs/heads")
        res = {}
        for line in out.splitlines():
            if "\0" in line:
                n, s = line.split("\0", 1)
                res[n] = s
        return res

    def merged_into(self, sha):
        if not sha:
            return set()
        out = self.out("for-each-ref", f"--merged={sha}", "--format=%(refname:strip=2)", "refs/heads")
        return set(out.split())

    def valid_branch_name(self, name):
        return self.run("check-ref-format", "--branch", name, ok=(0, 1, 128)).returncode == 0 \
            and not name.startswith("-") and name != "HEAD"

    def update_ref(self, ref, new, old=None):
        args = ["update-ref", ref, new] + ([old] if old is not None else [])
        self.run(*args)

    def delete_ref(self, ref):
        self.run("update-ref", "-d", ref)

    def tags(self):
        fmt = ("%(refname:strip=2)%1f%(objectname)%1f%(objecttype)%1f%(*objectname)%1f"
               "%(taggerdate:iso-strict)%1f%(contents)%1e")
        out = self.out("for-each-ref", "--sort=-creatordate", f"--format={fmt}", "refs/tags")
        res = []
        for rec in out.split("\x1e"):
            rec = rec.lstrip("\n")
            if not rec:
                continue
            name, obj, typ, peeled, date, msg = rec.split("\x1f", 5)
            annotated = typ == "tag"
            res.append({"name": name, "target": obj, "commit": peeled if annotated else obj,
                        "message": msg.rstrip("\n") if annotated else "",
                        "created_at": git_date(date) if annotated and date else None})
        return res

    # ---- commits ----
    def log(self, *revargs):
        p = self.run("log", f"--format={LOG_FORMAT}", *revargs, ok=(0, 128))
        if p.returncode != 0:
            return []
        res = []
        for rec in p.stdout.decode("utf-8", "replace").split("\x1e"):
            rec = rec.lstrip("\n")
            if not rec:
                continue
            f = rec.split("\x1f", 9)
            trailers, extended = {}, {}
            for t in f[8].split("\x1d"):
                if ":" in t:
                    k, v = t.split(":", 1)
                    k, v = k.strip(), v.strip()
                    trailers[k] = v
                    extended.setdefault(k, []).append(v)
            res.append({"id": f[0], "parent_ids": f[1].split(), "author_name": f[2],
                        "author_email": f[3], "authored_date": git_date(f[4]),
                        "committer_name": f[5], "committer_email": f[6],
                        "committed_date": git_date(f[7]), "trailers": trailers,
                        "extended_trailers": extended, "message": f[9]})
        return res

    def commit_info(self, sha):
        r = self.log("-1", "--no-walk", sha) if sha and re.fullmatch(r"[0-9a-fA-F]{4,40}", sha) else []
        return r[0] if r else None

    def stats(self, sha):
        out = self.out("diff-tree", "--numstat", "-r", "--root", "--no-commit-id", sha)
        add = dele = 0
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].isdigit():
                add += int(parts[0])
                dele += int(parts[1])
        return {"additions": add, "deletions": dele, "total": add + dele}

    def hash_blob(self, data):
        return self.out("hash-object", "-w", "--stdin", input=data).strip()

    def read_tree_entries(self, sha):
        entries = {}
        if not sha:
            return entries
        out = self.run("ls-tree", "-r", "-z", "--full-tree", sha).stdout
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            mode, _typ, osha = meta.decode().split(" ")
            entries[path.decode("utf-8", "replace")] = (mode, osha)
        return entries

    def write_commit(self, parents, entries, message, ident, date=None):
        """Build a tree from {path: (mode, sha)} and commit it; return the sha."""
        fd, idx = tempfile.mkstemp(prefix="double-index-", dir=self.path)
        os.close(fd)
        os.unlink(idx)
        try:
            env = {"GIT_INDEX_FILE": idx}
            data = "".join(f"{m} {s}\t{p}\0" for p, (m, s) in sorted(entries.items()))
            self.run("update-index", "-z", "--index-info", input=data.encode(), env=env)
            tree = self.out("write-tree", env=env).strip()
        finally:
            if os.path.exists(idx):
                os.unlink(idx)
        return self.commit_tree(tree, parents, message, ident, date)

    def commit_tree(self, tree, parents, message, ident, date=None):
        name, mail = ident
        cenv = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": mail,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": mail}
        if date:
            cenv["GIT_AUTHOR_DATE"] = cenv["GIT_COMMITTER_DATE"] = date
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self.out(*args, "-F", "-", input=message.encode(), env=cenv).strip()

    def file_at(self, sha, path):
        """(mode, blob_sha, bytes) of a file at a commit, or None."""
        out = self.run("ls-tree", "-z", "--full-tree", sha, "--", path).stdout
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, p = rec.split(b"\t", 1)
            mode, typ, bsha = meta.decode().split(" ")
            if typ == "blob" and p.decode("utf-8", "replace") == path:
                return mode, bsha, self.run("cat-file", "blob", bsha).stdout
        return None

    def last_commit_for(self, sha, path):
        return self.out("log", "-1", "--format=%H", sha, "--", path).strip() or sha

    def tree(self, sha, path, recursive):
        spec = f"{sha}:{path}" if path else sha
        kind = self.run("cat-file", "-t", spec, ok=(0, 1, 128))
        if kind.returncode != 0 or kind.stdout.decode().strip() not in ("tree", "commit"):
            return None
        args = ["ls-tree", "-z"] + (["-r", "-t"] if recursive else []) + [spec]
        res = []
        for rec in self.run(*args).stdout.split(b"\0"):
            if not rec:
                continue
            meta, name = rec.split(b"\t", 1)
            mode, typ, osha = meta.decode().split(" ")
            name = name.decode("utf-8", "replace")
            full = f"{path.rstrip('/')}/{name}" if path else name
            res.append({"id": osha, "name": name.rsplit("/", 1)[-1], "type": typ,
                        "path": full, "mode": mode})
        return res

    def merge_tree(self, ours, theirs):
        """(tree_sha, clean) merging two commits without a work tree."""
        p = self.run("merge-tree", "--write-tree", "--no-messages", ours, theirs, ok=(0, 1))
        return p.stdout.decode().split("\n", 1)[0].strip(), p.returncode == 0

    def is_ancestor(self, a, b):
        return self.run("merge-base", "--is-ancestor", a, b, ok=(0, 1)).returncode == 0

    def merge_base(self, a, b):
        p = self.run("merge-base", a, b, ok=(0, 1))
        return p.stdout.decode().strip() or None

    def count(self, rng):
        return int(self.out("rev-list", "--count", rng).strip() or 0)

    def changed_files(self, a, b):
        return [x for x in self.out("diff", "--name-only", a, b).splitlines() if x]


# --------------------------------------------------------------------------
# Serialisers: internal records -> GitLab JSON entities
# (shapes follow /work/shared/gitlab/examples/*.json)
# --------------------------------------------------------------------------

class Serializers:
    def ser_user(self, u, base, note_author=False):
        if u is None:
            return None
        avatar = u.get("_avatar")
        if avatar is None:
            avatar = u["_avatar"] = ("https://www.gravatar.com/avatar/%s?s=80&d=identicon"
                                     % hashlib.md5(u["email"].lower().encode()).hexdigest())
        d = {"id": u["id"], "username": u["username"], "name": u["name"], "state": "active",
             "locked": False, "avatar_url": avatar, "web_url": f"{base}/{u['username']}"}
        if note_author:
            d["email"] = u["email"]
            d["created_at"] = iso(u["created_at"])
        return d

    def ser_current_user(self, u, base):
        d = self.ser_user(u, base)
        d.update({"created_at": iso(u["created_at"]), "bio": "", "location": "", "public_email": None,
                  "skype": "", "linkedin": "", "twitter": "", "discord": "", "website_url": "",
                  "organization": "", "job_title": "", "pronouns": None, "bot": u["bot"],
                  "work_information": None, "followers": 0, "following": 0, "is_followed": False,
                  "local_time": None, "last_sign_in_at": None, "confirmed_at": iso(u["created_at"]),
                  "last_activity_on": datetime.date.today().isoformat(), "email": u["email"],
                  "theme_id": 1, "color_scheme_id": 1, "projects_limit": 100000,
                  "current_sign_in_at": None, "identities": [], "can_create_group": True,
                  "can_create_project": True, "two_factor_enabled": False, "external": False,
                  "private_profile": False, "commit_email": u["email"]})
        return d

    def ser_namespace(self, p, base):
        if p["group_id"]:
            g = self.groups[p["group_id"]]
            return {"id": g["id"], "name": g["name"], "path": g["path"], "kind": "group",
                    "full_path": g["full_path"], "parent_id": g["parent_id"], "avatar_url": None,
                    "web_url": f"{base}/groups/{g['full_path']}"}
        u = self.users_by_name.get(p["namespace"].lower()) if p["namespace"] else None
        return {"id": 1000 + (u["id"] if u else 0), "name": u["name"] if u else p["namespace"],
                "path": p["namespace"], "kind": "user", "full_path": p["namespace"], "parent_id": None,
                "avatar_url": None, "web_url": f"{base}/{p['namespace']}"}

    def ser_project(self, p, base, simple=False):
        path = p["path_with_namespace"]
        host = base.split("://", 1)[-1].split(":")[0]
        ns = self.ser_namespace(p, base)
        d = {"id": p["id"], "description": p["description"], "name": p["name"],
             "name_with_namespace": " / ".join(s for s in ([self.groups[g]["name"] for g in reversed(self.group_chain(p["group_id"]))] if p["group_id"] else [p["namespace"]]) + [p["name"]] if s),
             "path": p["path"], "path_with_namespace": path, "created_at": iso(p["created_at"]),
             "default_branch": p["default_branch"], "tag_list": list(p.get("topics") or []),
             "topics": list(p.get("topics") or []),
             "ssh_url_to_repo": f"git@{host}:{path}.git", "http_url_to_repo": f"{base}/{path}.git",
             "web_url": f"{base}/{path}", "readme_url": f"{base}/{path}/-/blob/{p['default_branch']}/README.md",
             "forks_count": 0, "avatar_url": None, "star_count": 0,
             "last_activity_at": iso(p.get("last_activity_at") or p["created_at"]),
             "namespace": ns}
        if simple:
            return d
        repo = self.repo(p)
        d.update({
            "container_registry_image_prefix": f"registry.{host}/{path}",
            "_links": {"self": f"{base}/api/v4/projects/{p['id']}",
                       "issues": f"{base}/api/v4/projects/{p['id']}/issues",
                       "merge_requests": f"{base}/api/v4/projects/{p['id']}/merge_requests",
                       "repo_branches": f"{base}/api/v4/projects/{p['id']}/repository/branches",
                       "labels": f"{base}/api/v4/projects/{p['id']}/labels",
                       "events": f"{base}/api/v4/projects/{p['id']}/events",
                       "members": f"{base}/api/v4/projects/{p['id']}/members",
                       "cluster_agents": f"{base}/api/v4/projects/{p['id']}/cluster_agents"},
            "packages_enabled": True, "empty_repo": repo.branch_sha(p["default_branch"]) is None,
            "archived": bool(p.get("archived")), "visibility": p["visibility"],
            "resolve_outdated_diff_discussions": False,
            "container_registry_enabled": True, "container_registry_access_level": "enabled",
            "issues_enabled": True, "merge_requests_enabled": True, "wiki_enabled": True,
            "jobs_enabled": True, "snippets_enabled": True,
            "issues_access_level": "enabled", "repository_access_level": "enabled",
            "merge_requests_access_level": "enabled", "builds_access_level": "enabled",
            "wiki_access_level": "enabled", "snippets_access_level": "enabled",
            "emails_disabled": False, "emails_enabled": True, "shared_runners_enabled": True,
            "lfs_enabled": True, "creator_id": self.bot_id, "import_status": "none",
            "open_issues_count": sum(1 for i in self.issues_by_project[p["id"]].values() if i["state"] == "opened"),
            "ci_default_git_depth": 20, "ci_config_path": None, "public_jobs": True,
            "shared_with_groups": [], "only_allow_merge_if_pipeline_succeeds": False,
            "allow_merge_on_skipped_pipeline": None, "request_access_enabled": True,
            "only_allow_merge_if_all_discussions_are_resolved": False,
            "remove_source_branch_after_merge": True, "printing_merge_request_link_enabled": True,
            "merge_method": "merge", "squash_option": "default_off",
            "permissions": {"project_access": {"access_level": 40, "notification_level": 3},
                            "group_access": None}})
        return d

    def ser_group(self, g, base):
        return {"id": g["id"], "web_url": f"{base}/groups/{g['full_path']}", "name": g["name"],
                "path": g["path"], "description": g["description"], "visibility": "private",
                "share_with_group_lock": False, "require_two_factor_authentication": False,
                "two_factor_grace_period": 48, "project_creation_level": "developer",
                "auto_devops_enabled": None, "subgroup_creation_level": "maintainer",
                "emails_disabled": False, "mentions_disabled": None, "lfs_enabled": True,
                "default_branch_protection": 2, "avatar_url": None, "request_access_enabled": True,
                "full_name": " / ".join(self.groups[x]["name"] for x in reversed(self.group_chain(g["id"]))),
                "full_path": g["full_path"], "created_at": iso(g["created_at"]), "parent_id": g["parent_id"]}

    # ---- labels ----
    def label_counts(self, pids):
        counts = {}
        for pid in pids:
            for i in self.issues_by_project[pid].values():
                slot = 0 if i["state"] == "opened" else 1
                for lid in i["labels"]:
                    counts.setdefault(lid, [0, 0, 0])[slot] += 1
            for mr in self.mrs_by_project[pid].values():
                if mr["state"] == "opened":
                    for lid in mr["labels"]:
                        counts.setdefault(lid, [0, 0, 0])[2] += 1
        return counts

    def ser_label(self, lab, counts=None, project=None):
        c = (counts or {}).get(lab["id"], [0, 0, 0])
        desc = lab["description"]
        return {"id": lab["id"], "name": lab["name"], "color": lab["color"],
                "text_color": text_color(lab["color"]), "description": desc,
                "description_html": html.escape(desc) if desc else None,
                "open_issues_count": c[0], "closed_issues_count": c[1],
                "open_merge_requests_count": c[2], "subscribed": False,
                "priority": lab["priority"],
                "is_project_label": lab["project_id"] is not None, "archived": False}

    def ser_label_basic(self, lab):
        return {"id": lab["id"], "name": lab["name"], "color": lab["color"],
                "description": lab["description"],
                "description_html": html.escape(lab["description"]) if lab["description"] else None,
                "text_color": text_color(lab["color"])}

    # ---- issues ----
    def ser_issue(self, i, base, label_details=False, full_ref=False):
        p = self.projects[i["project_id"]]
        path = p["path_with_namespace"]
        labs = sorted((self.labels[x] for x in i["labels"] if x in self.labels), key=lambda l: l["name"])
        assignees = [self.ser_user(self.users[u], base) for u in i["assignee_ids"] if u in self.users]
        count, done = i["tasks"]
        api = f"{base}/api/v4/projects/{p['id']}"
        iid = i["iid"]
        return {
            "id": i["id"], "iid": iid, "project_id": p["id"], "title": i["title"],
            "description": i["description"], "state": i["state"],
            "created_at": iso(i["created_at"]), "updated_at": iso(i["updated_at"]),
            "closed_at": iso(i["closed_at"]),
            "closed_by": self.ser_user(self.users.get(i["closed_by_id"]), base) if i["closed_by_id"] else None,
            "labels": [self.ser_label_basic(l) for l in labs] if label_details else [l["name"] for l in labs],
            "milestone": None, "assignees": assignees, "assignee": assignees[0] if assignees else None,
            "author": self.ser_user(self.users.get(i["author_id"]), base),
            "type": "INCIDENT" if i["issue_type"] == "incident" else ("TASK" if i["issue_type"] == "task" else "ISSUE"),
            "user_notes_count": i["user_notes_count"], "merge_requests_count": len(i["mr_ids"]),
            "upvotes": i["upvotes"], "downvotes": i["downvotes"], "due_date": i["due_date"],
            "confidential": i["confidential"], "discussion_locked": i["discussion_locked"],
            "issue_type": i["issue_type"], "severity": "UNKNOWN",
            "web_url": f"{base}/{path}/-/issues/{iid}",
            "time_stats": {"time_estimate": 0, "total_time_spent": 0,
                           "human_time_estimate": None, "human_total_time_spent": None},
            "task_completion_status": {"count": count, "completed_count": done},
            "has_tasks": count > 0, "task_status": f"{done} of {count} task{'' if count == 1 else 's'} completed",
            "blocking_issues_count": 0, "moved_to_id": None, "service_desk_reply_to": None,
            "imported": False, "imported_from": "none", "subscribed": True,
            "relative_position": i["relative_position"],
            "references": {"short": f"#{iid}", "relative": f"{path}#{iid}" if full_ref else f"#{iid}",
                           "full": f"{path}#{iid}"},
            "_links": {"self": f"{api}/issues/{iid}", "notes": f"{api}/issues/{iid}/notes",
                       "award_emoji": f"{api}/issues/{iid}/award_emoji", "project": api,
                       "closed_as_duplicate_of": None},
        }

    def ser_note(self, n, base):
        return {"id": n["id"], "type": None, "body": n["body"], "attachment": None,
                "author": self.ser_user(self.users.get(n["author_id"]), base, note_author=True),
                "created_at": iso(n["created_at"]), "updated_at": iso(n["updated_at"]),
                "system": n["system"], "noteable_id": n["noteable_id"], "noteable_type": n["noteable_type"],
                "project_id": n["project_id"], "noteable_iid": n["noteable_iid"], "resolvable": False,
                "confidential": n["internal"], "internal": n["internal"], "imported": False,
                "imported_from": "none", "commands_changes": {}}

    def ser_label_event(self, ev, base):
        lab = self.labels.get(ev["label_id"]) or ev["label_snapshot"] or None
        return {"id": ev["id"], "user": self.ser_user(self.users.get(ev["user_id"]), base),
                "created_at": iso(ev["created_at"]), "resource_type": ev["resource_type"],
                "resource_id": ev["resource_id"],
                "label": {"id": lab["id"], "name": lab["name"], "color": lab["color"],
                          "description": lab["description"] or ""} if lab else None,
                "action": ev["action"]}

    def ser_state_event(self, ev, base):
        return {"id": ev["id"], "user": self.ser_user(self.users.get(ev["user_id"]), base),
                "created_at": iso(ev["created_at"]), "resource_type": ev["resource_type"],
                "resource_id": ev["resource_id"], "state": ev["state"],
                "source_commit": None,
                "source_merge_request": ({"id": ev["source_merge_request_id"]}
                                         if ev["source_merge_request_id"] else None)}

    # ---- boards ----
    def ser_list(self, lst):
        lab = self.labels.get(lst["label_id"])
        return {"id": lst["id"],
                "label": self.ser_label_basic(lab) if lab else None,
                "position": lst["position"], "max_issue_count": 0, "max_issue_weight": 0,
                "limit_metric": None}

    def ser_board(self, b, base):
        d = {"id": b["id"], "name": b["name"], "hide_backlog_list": b["hide_backlog_list"],
             "hide_closed_list": b["hide_closed_list"], "project": None, "milestone": None,
             "assignee": None, "labels": [], "weight": None,
             "lists": [self.ser_list(self.lists[x]) for x in b["list_ids"] if x in self.lists]}
        if b["project_id"]:
            p = self.projects[b["project_id"]]
            full = self.ser_project(p, base, simple=True)
            d["project"] = {k: full[k] for k in ("id", "name", "name_with_namespace", "path",
                                                 "path_with_namespace", "http_url_to_repo", "web_url")}
        else:
            g = self.groups[b["group_id"]]
            d["group"] = {"id": g["id"], "name": g["name"], "web_url": f"{base}/groups/{g['full_path']}"}
        return d

    # ---- merge requests ----
    def ser_mr(self, mr, base, heads=None, single=False, label_details=False):
        p = self.projects[mr["project_id"]]
        path = p["path_with_namespace"]
        repo = self.repo(p)
        if heads is None:
            heads = repo.heads()
        sha = mr["sha"] if mr["state"] == "merged" else heads.get(mr["source_branch"], mr["sha"])
        labs = sorted((self.labels[x] for x in mr["labels"] if x in self.labels), key=lambda l: l["name"])
        assignees = [self.ser_user(self.users[u], base) for u in mr["assignee_ids"] if u in self.users]
        head_pl = self.latest_pipeline(p["id"], ref=mr["source_branch"])
        draft = is_draft_title(mr["title"])
        merged_by = self.ser_user(self.users.get(mr["merged_by_id"]), base) if mr["merged_by_id"] else None
        merge_user = self.ser_user(self.users.get(mr["merge_user_id"]), base) if mr["merge_user_id"] else None
        count, done = mr["tasks"]
        iid = mr["iid"]
        d = {
            "id": mr["id"], "iid": iid, "project_id": p["id"], "title": mr["title"],
            "description": mr["description"], "state": mr["state"], "imported": False,
            "imported_from": "none", "created_at": iso(mr["created_at"]), "updated_at": iso(mr["updated_at"]),
            "merged_by": merged_by, "merge_user": merge_user, "merged_at": iso(mr["merged_at"]),
            "merge_after": None, "prepared_at": iso(mr["created_at"]),
            "closed_by": self.ser_user(self.users.get(mr["closed_by_id"]), base) if mr["closed_by_id"] else None,
            "closed_at": iso(mr["closed_at"]), "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"], "upvotes": mr["upvotes"], "downvotes": mr["downvotes"],
            "author": self.ser_user(self.users.get(mr["author_id"]), base),
            "assignees": assignees, "assignee": assignees[0] if assignees else None, "reviewers": [],
            "source_project_id": p["id"], "target_project_id": p["id"],
            "labels": [self.ser_label_basic(l) for l in labs] if label_details else [l["name"] for l in labs],
            "draft": draft, "work_in_progress": draft, "milestone": None,
            "merge_when_pipeline_succeeds": mr["merge_when_pipeline_succeeds"],
            "merge_status": "can_be_merged", "detailed_merge_status": "mergeable" if mr["state"] == "opened" and not draft else ("draft_status" if draft and mr["state"] == "opened" else "not_open"),
            "merge_error": None, "sha": sha, "merge_commit_sha": mr["merge_commit_sha"],
            "squash_commit_sha": None, "user_notes_count": mr["user_notes_count"],
            "discussion_locked": mr["discussion_locked"],
            "should_remove_source_branch": mr["should_remove_source_branch"],
            "force_remove_source_branch": mr["force_remove_source_branch"],
            "allow_collaboration": False, "allow_maintainer_to_push": False,
            "web_url": f"{base}/{path}/-/merge_requests/{iid}",
            "references": {"short": f"!{iid}", "relative": f"!{iid}", "full": f"{path}!{iid}"},
            "time_stats": {"time_estimate": 0, "total_time_spent": 0,
                           "human_time_estimate": None, "human_total_time_spent": None},
            "squash": mr["squash"], "squash_on_merge": mr["squash"], "subscribed": True,
            "has_conflicts": False, "blocking_discussions_resolved": True,
            "task_completion_status": {"count": count, "completed_count": done},
            "pipeline": self.ser_pipeline_basic(head_pl, base) if head_pl else None,
        }
        if single:
            tgt = heads.get(mr["target_branch"])
            refs = mr["merged_diff_refs"]
            if refs is None and sha and tgt:
                refs = {"base_sha": repo.merge_base(tgt, sha), "head_sha": sha, "start_sha": tgt}
            changes = diverged = 0
            if refs and refs["base_sha"] and refs["head_sha"]:
                try:
                    changes = len(repo.changed_files(refs["base_sha"], refs["head_sha"]))
                    if mr["state"] == "opened" and tgt:
                        diverged = repo.count(f"{sha}..{tgt}")
                        tree, clean = repo.merge_tree(tgt, sha)
                        if not clean:
                            d["merge_status"] = "cannot_be_merged"
                            d["detailed_merge_status"] = "broken_status"
                            d["has_conflicts"] = True
                except GitError:
                    pass
            d.update({"changes_count": str(changes), "diff_refs": refs, "diverged_commits_count": diverged,
                      "latest_build_started_at": iso(head_pl["started_at"]) if head_pl else None,
                      "latest_build_finished_at": iso(head_pl["finished_at"]) if head_pl else None,
                      "first_deployed_to_production_at": None,
                      "head_pipeline": self.ser_pipeline(head_pl, base) if head_pl else None,
                      "rebase_in_progress": False, "first_contribution": False,
                      "user": {"can_merge": True}})
        return d

    # ---- pipelines / jobs ----
    def ser_pipeline_basic(self, pl, base):
        p = self.projects[pl["project_id"]]
        return {"id": pl["id"], "iid": pl["iid"], "project_id": p["id"], "sha": pl["sha"], "ref": pl["ref"],
                "status": pl["status"], "source": pl["source"], "created_at": iso(pl["created_at"]),
                "updated_at": iso(pl["updated_at"]), "name": pl["name"],
                "web_url": f"{base}/{p['path_with_namespace']}/-/pipelines/{pl['id']}"}

    def ser_pipeline(self, pl, base):
        p = self.projects[pl["project_id"]]
        d = self.ser_pipeline_basic(pl, base)
        text = STATUS_TEXT.get(pl["status"], pl["status"])
        d.update({"before_sha": pl["before_sha"], "tag": pl["tag"], "yaml_errors": pl["yaml_errors"],
                  "user": self.ser_user(self.users.get(pl["user_id"]), base),
                  "started_at": iso(pl["started_at"]), "finished_at": iso(pl["finished_at"]),
                  "committed_at": None, "duration": pl["duration"], "queued_duration": pl["queued_duration"],
                  "coverage": pl["coverage"],
                  "detailed_status": {"icon": f"status_{pl['status']}", "text": text, "label": text,
                                      "group": pl["status"], "tooltip": text, "has_details": False,
                                      "details_path": f"/{p['path_with_namespace']}/-/pipelines/{pl['id']}",
                                      "illustration": None,
                                      "favicon": f"/assets/ci_favicons/favicon_status_{pl['status']}.png"}})
        return d

    def ser_job(self, j, base):
        p = self.projects[j["project_id"]]
        pl = self.pipelines[j["pipeline_id"]]
        c = self.commit_entity(p, pl["sha"], base)
        u = self.users.get(j["user_id"])
        user = self.ser_user(u, base)
        if user:
            user.update({"created_at": iso(u["created_at"]), "bio": None, "location": None,
                         "public_email": "", "linkedin": "", "twitter": "", "website_url": "",
                         "organization": ""})
        d = {"commit": {k: c[k] for k in ("author_email", "author_name", "created_at", "id",
                                          "message", "short_id", "title")},
             "coverage": j["coverage"], "archived": False, "source": pl["source"],
             "allow_failure": j["allow_failure"], "created_at": iso(j["created_at"]),
             "started_at": iso(j["started_at"]), "finished_at": iso(j["finished_at"]),
             "erased_at": None, "duration": j["duration"], "queued_duration": j["queued_duration"],
             "artifacts_expire_at": None, "tag_list": j["tag_list"], "id": j["id"], "name": j["name"],
             "pipeline": {"id": pl["id"], "project_id": p["id"], "ref": pl["ref"], "sha": pl["sha"],
                          "status": pl["status"]},
             "ref": pl["ref"],
             "artifacts": ([{"file_type": "trace", "size": len(j["trace"].encode()), "filename": "job.log",
                             "file_format": None}] if j["trace"] else []),
             "runner": None, "runner_manager": None, "stage": j["stage"], "status": j["status"],
             "tag": pl["tag"], "web_url": f"{base}/{p['path_with_namespace']}/-/jobs/{j['id']}",
             "project": {"ci_job_token_scope_enabled": False}, "user": user}
        if j["status"] == "failed":
            d["failure_reason"] = j["failure_reason"] or "script_failure"
        return d

    # ---- releases / schedules ----
    def ser_release(self, r, base):
        p = self.projects[r["project_id"]]
        path = p["path_with_namespace"]
        tag = r["tag_name"]
        qtag = urllib.parse.quote(tag, safe="")
        links = [{"id": lk["id"], "name": lk["name"], "url": lk["url"],
                  "direct_asset_url": (f"{base}/{path}/-/releases/{qtag}/downloads{lk['direct_asset_path']}"
                                       if lk.get("direct_asset_path") else lk["url"]),
                  "link_type": lk.get("link_type") or "other"} for lk in r["links"]]
        commit = self.commit_entity(p, r["sha"], base)
        commit = {k: commit[k] for k in ("id", "short_id", "title", "created_at", "parent_ids", "message",
                                         "author_name", "author_email", "authored_date",
                                         "committer_name", "committer_email", "committed_date")}
        archive = f"{base}/{path}/-/archive/{qtag}/{p['path']}-{qtag}"
        return {"tag_name": tag, "description": r["description"], "name": r["name"],
                "created_at": iso(r["created_at"]), "released_at": iso(r["released_at"]),
                "upcoming_release": r["released_at"] > time.time(),
                "author": self.ser_user(self.users.get(r["author_id"]), base), "commit": commit,
                "milestones": [], "commit_path": f"/{path}/-/commit/{r['sha']}",
                "tag_path": f"/{path}/-/tags/{qtag}",
                "evidence_sha": hashlib.sha256(f"{p['id']}:{tag}:{r['created_at']}".encode()).hexdigest()[:44],
                "assets": {"count": 4 + len(links),
                           "sources": [{"format": f, "url": f"{archive}.{f}"} for f in ("zip", "tar.gz", "tar.bz2", "tar")],
                           "links": links,
                           "evidence_file_path": f"{base}/{path}/-/releases/{qtag}/evidence.json"},
                "evidences": [],
                "_links": {"closed_issues_url": f"{base}/{path}/-/issues?release_tag={qtag}&scope=all&state=closed",
                           "closed_merge_requests_url": f"{base}/{path}/-/merge_requests?release_tag={qtag}&scope=all&state=closed",
                           "edit_url": f"{base}/{path}/-/releases/{qtag}/edit",
                           "merged_merge_requests_url": f"{base}/{path}/-/merge_requests?release_tag={qtag}&scope=all&state=merged",
                           "opened_issues_url": f"{base}/{path}/-/issues?release_tag={qtag}&scope=all&state=opened",
                           "opened_merge_requests_url": f"{base}/{path}/-/merge_requests?release_tag={qtag}&scope=all&state=opened",
                           "self": f"{base}/{path}/-/releases/{qtag}"}}

    def ser_schedule(self, s, base, single=False):
        d = {"id": s["id"], "description": s["description"], "ref": s["ref"], "cron": s["cron"],
             "cron_timezone": s["cron_timezone"],
             "next_run_at": iso(cron_next(s["cron"], s["cron_timezone"], time.time())) if s["active"] else None,
             "active": s["active"], "created_at": iso(s["created_at"]), "updated_at": iso(s["updated_at"]),
             "owner": self.ser_user(self.users.get(s["owner_id"]), base)}
        if single:
            last = self.pipelines.get(s["last_pipeline_id"]) if s.get("last_pipeline_id") else None
            d["last_pipeline"] = ({k: v for k, v in self.ser_pipeline_basic(last, base).items()
                                   if k in ("id", "sha", "ref", "status")} if last else None)
            d["variables"] = [dict(v) for v in s["variables"]]
        return d

    # ---- repository ----
    def ser_branch(self, p, name, sha, base, commit, merged, default_sha=None):
        prot = name in self.protected[p["id"]] or any(
            re.fullmatch(re.escape(pat).replace(r"\*", ".*"), name) for pat in self.protected[p["id"]] if "*" in pat)
        return {"name": name, "commit": commit, "merged": merged, "protected": prot,
                "default": name == p["default_branch"], "developers_can_push": False,
                "developers_can_merge": False, "can_push": not prot,
                "web_url": f"{base}/{p['path_with_namespace']}/-/tree/{name}"}

    def ser_protected(self, p, name, pid_):
        return {"id": pid_, "name": name,
                "push_access_levels": [{"id": pid_ * 10 + 1, "access_level": 0,
                                        "access_level_description": "No one", "deploy_key_id": None,
                                        "user_id": None, "group_id": None}],
                "merge_access_levels": [{"id": pid_ * 10 + 2, "access_level": 40,
                                         "access_level_description": "Maintainers", "user_id": None,
                                         "group_id": None}],
                "allow_force_push": False, "unprotect_access_levels": [],
                "code_owner_approval_required": False, "inherited": False}


# --------------------------------------------------------------------------
# State: everything the double knows, guarded by one lock
# --------------------------------------------------------------------------

ID_BASES = {"user": 1, "group": 21, "project": 1, "label": 101, "board": 201, "list": 401,
            "pipeline": 1001, "job": 3001, "issue": 5001, "mr": 8001, "note": 20001,
            "label_event": 30001, "state_event": 40001, "schedule": 51, "release_link": 61,
            "protected": 71}

JOB_STATUSES = {"created", "pending", "running", "failed", "success", "canceled", "skipped",
                "manual", "scheduled", "preparing", "waiting_for_resource"}
ACTIVE_STATUSES = {"created", "pending", "running", "preparing", "waiting_for_resource", "scheduled"}
CANCELABLE = ACTIVE_STATUSES | {"manual"}
STATUS_TEXT = {"success": "passed", "failed": "failed", "running": "running", "pending": "pending",
               "canceled": "canceled", "skipped": "skipped", "created": "created",
               "manual": "manual", "scheduled": "scheduled", "preparing": "preparing",
               "waiting_for_resource": "waiting"}


class State(Serializers):
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.repo_root = os.path.join(cfg.state_dir, "repos")
        os.makedirs(self.repo_root, exist_ok=True)
        self.reset()

    # ---- lifecycle ----
    def reset(self):
        self.seq = dict(ID_BASES)
        self.last_ts = 0.0
        self.users, self.users_by_name = {}, {}
        self.tokens = {}        # token -> {"user_id", "scopes"}
        self.job_tokens = {}    # token -> {"project_id", "job_id"}
        self.groups, self.groups_by_path = {}, {}
        self.projects, self.projects_by_path = {}, {}
        self.repos = {}
        self.labels = {}        # id -> label
        self.project_labels = {}  # pid -> {name: label}
        self.group_labels = {}    # gid -> {name: label}
        self.issues = {}        # id -> issue
        self.issues_by_project = {}  # pid -> {iid: issue}
        self.notes = {}
        self.label_events = {}  # (kind, resource_id) -> [event]
        self.state_events = {}
        self.boards, self.lists = {}, {}
        self.mrs, self.mrs_by_project = {}, {}
        self.pipelines, self.jobs = {}, {}
        self.releases = {}      # (pid, tag) -> release
        self.schedules = {}
        self.protected = {}     # pid -> {name: id}
        self.mentions = []
        self.sort_cache = {}
        self.filter_cache = {}
        self.version = {}       # pid -> int, bumped on any issue/label change
        self.commit_cache = {}
        if os.path.isdir(self.repo_root):
            for entry in os.listdir(self.repo_root):
                shutil.rmtree(os.path.join(self.repo_root, entry), ignore_errors=True)
        for u in ({"id": 1, "username": "root", "name": "Administrator"},
                  {"id": 2, "username": "factory-bot", "name": "Factory Bot", "bot": True},
                  {"id": 3, "username": "alice", "name": "Alice Example"},
                  {"id": 4, "username": "bob", "name": "Bob Example"}):
            self.add_user(u)
        self.bot_id = 2
        for t in self.cfg.tokens:
            self.tokens[t] = {"user_id": self.bot_id, "scopes": ["api"]}

    def default_seed(self):
        self.seed({"projects": [{"id": 1, "path_with_namespace": "factory/demo",
                                 "default_branch": "main",
                                 "files": {"README.md": "# demo\n\nThe Factory demo project.\n"}}]})

    def tick(self):
        """Now, strictly increasing by at least 1 ms so updated_at always moves."""
        t = max(time.time(), self.last_ts + 0.001)
        self.last_ts = t
        return t

    def next_id(self, kind, at_least=None):
        if at_least is not None and at_least >= self.seq[kind]:
            self.seq[kind] = at_least + 1
            return at_least
        v = self.seq[kind]
        self.seq[kind] = v + 1
        return v

    def bump(self, pid):
        self.version[pid] = self.version.get(pid, 0) + 1
        if pid in self.projects:
            self.projects[pid]["last_activity_at"] = self.last_ts or time.time()

    # ---- users ----
    def add_user(self, d):
        username = d["username"]
        old = self.users_by_name.get(username.lower())
        uid = d.get("id") or (old["id"] if old else self.next_id("user"))
        if isinstance(uid, int):
            self.seq["user"] = max(self.seq["user"], uid + 1)
        u = {"id": uid, "username": username, "name": d.get("name") or username,
             "email": d.get("email") or f"{username}@example.com", "bot": bool(d.get("bot")),
             "created_at": parse_time(d.get("created_at")) or self.tick()}
        self.users[uid] = u
        self.users_by_name[username.lower()] = u
        return u

    def user_ref(self, ref, default=None):
        if ref is None:
            return default
        if isinstance(ref, dict):
            ref = ref.get("id") or ref.get("username")
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.users.get(int(ref), default)
        return self.users_by_name.get(str(ref).lstrip("@").lower(), default)

    # ---- groups / projects ----
    def ensure_group(self, full_path, d=None):
        g = self.groups_by_path.get(full_path.lower())
        if g:
            return g
        parent = None
        if "/" in full_path:
            parent = self.ensure_group(full_path.rsplit("/", 1)[0])
        d = d or {}
        gid = self.next_id("group", d.get("id"))
        name = full_path.rsplit("/", 1)[-1]
        g = {"id": gid, "full_path": full_path, "path": name, "name": d.get("name") or name,
             "description": d.get("description", ""), "parent_id": parent["id"] if parent else None,
             "created_at": self.tick()}
        self.groups[gid] = g
        self.groups_by_path[full_path.lower()] = g
        self.group_labels[gid] = {}
        return g

    def group_chain(self, gid):
        """Group ids from gid up to the root (nearest first)."""
        chain = []
        while gid:
            chain.append(gid)
            gid = self.groups[gid]["parent_id"]
        return chain

    def group_tree(self, gid):
        ids = {gid}
        changed = True
        while changed:
            changed = False
            for g in self.groups.values():
                if g["parent_id"] in ids and g["id"] not in ids:
                    ids.add(g["id"])
                    changed = True
        return ids

    def find_group(self, raw):
        if raw.isdigit():
            return self.groups.get(int(raw))
        return self.groups_by_path.get(raw.lower())

    def find_project(self, raw):
        if isinstance(raw, int) or raw.isdigit():
            return self.projects.get(int(raw))
        return self.projects_by_path.get(raw.lower())

    def add_project(self, d):
        path = d["path_with_namespace"].strip("/")
        pid = d.get("id")
        existing = self.find_project(str(pid)) if pid else self.find_project(path)
        if existing and existing["path_with_namespace"].lower() != path.lower():
            raise ValueError(f"project id {pid} already used by {existing['path_with_namespace']}")
        if existing is None:
            existing = self.find_project(path)
            if existing and pid and existing["id"] != pid:
                raise ValueError(f"project path {path} already used by id {existing['id']}")
        p = existing
        if p is None:
            ns = path.rsplit("/", 1)[0] if "/" in path else ""
            group = None
            if ns and ns.lower() not in self.users_by_name:
                group = self.ensure_group(ns)
            pid = self.next_id("project", pid)
            name = path.rsplit("/", 1)[-1]
            p = {"id": pid, "path_with_namespace": path, "path": name,
                 "name": d.get("name") or name, "namespace": ns,
                 "group_id": group["id"] if group else None,
                 "default_branch": d.get("default_branch") or "main",
                 "description": d.get("description"), "visibility": d.get("visibility", "private"),
                 "topics": [str(t) for t in (d.get("topics") or [])], "archived": bool(d.get("archived")),
                 "created_at": parse_time(d.get("created_at")) or self.tick(),
                 "issue_seq": 0, "mr_seq": 0, "pipeline_seq": 0, "max_position": None}
            self.projects[pid] = p
            self.projects_by_path[path.lower()] = p
            self.issues_by_project[pid] = {}
            self.mrs_by_project[pid] = {}
            self.project_labels[pid] = {}
            self.protected[pid] = {}
            repo = Repo(os.path.join(self.repo_root, path + ".git"))
            repo.init(p["default_branch"])
            repo.write_protected([])
            self.repos[pid] = repo
        repo = self.repos[p["id"]]
        files = d.get("files")
        if files:
            branch = p["default_branch"]
            parent = repo.branch_sha(branch)
            entries = repo.read_tree_entries(parent)
            for fpath, content in files.items():
                if isinstance(content, dict):
                    raw = content.get("content", "")
                    data = base64.b64decode(raw) if content.get("encoding") == "base64" else raw.encode()
                    mode = "100755" if content.get("execute_filemode") else "100644"
                else:
                    data, mode = str(content).encode(), "100644"
                entries[fpath.strip("/")] = (mode, repo.hash_blob(data))
            bot = self.users[self.bot_id]
            sha = repo.write_commit([parent] if parent else [], entries,
                                   d.get("commit_message") or "Initial commit",
                                   (bot["name"], bot["email"]))
            repo.update_ref(f"refs/heads/{branch}", sha)
        for bname, ref in (d.get("branches") or {}).items():
            sha = repo.resolve(ref or p["default_branch"])
            if sha:
                repo.update_ref(f"refs/heads/{bname}", sha)
        return p

    def repo(self, p):
        return self.repos[p["id"]]

    def commit_entity(self, p, sha, base, full=False):
        """GitLab's commit entity for a sha (cached; synthetic if unknown)."""
        key = (p["id"], sha)
        c = self.commit_cache.get(key)
        if c is None:
            c = self.repo(p).commit_info(sha) if sha else None
            if c is None:
                stamp = "2024-01-01T00:00:00.000+00:00"
                c = {"id": sha or ZERO_SHA, "parent_ids": [], "author_name": "Factory Bot",
                     "author_email": "factory-bot@example.com", "authored_date": stamp,
                     "committer_name": "Factory Bot", "committer_email": "factory-bot@example.com",
                     "committed_date": stamp, "trailers": {}, "extended_trailers": {},
                     "message": "Synthetic commit\n"}
            self.commit_cache[key] = c
        msg = c["message"]
        out = {"id": c["id"], "short_id": c["id"][:8], "created_at": c["committed_date"],
               "parent_ids": c["parent_ids"], "title": msg.split("\n", 1)[0],
               "message": msg, "author_name": c["author_name"], "author_email": c["author_email"],
               "authored_date": c["authored_date"], "committer_name": c["committer_name"],
               "committer_email": c["committer_email"], "committed_date": c["committed_date"],
               "trailers": c["trailers"], "extended_trailers": c["extended_trailers"],
               "web_url": f"{base}/{p['path_with_namespace']}/-/commit/{c['id']}"}
        if full:
            try:
                out["stats"] = self.repo(p).stats(c["id"])
            except GitError:
                out["stats"] = {"additions": 0, "deletions": 0, "total": 0}
            out["status"] = None
            out["project_id"] = p["id"]
            last = self.latest_pipeline(p["id"], sha=c["id"])
            out["last_pipeline"] = self.ser_pipeline_basic(last, base) if last else None
        return out

    # ---- labels ----
    def add_label(self, name, color, description=None, priority=None, project=None, group=None,
                  label_id=None):
        lid = self.next_id("label", label_id)
        lab = {"id": lid, "name": name, "color": color, "description": description or None,
               "priority": priority, "project_id": project["id"] if project else None,
               "group_id": group["id"] if group else None, "created_at": self.tick()}
        self.labels[lid] = lab
        if project:
            self.project_labels[project["id"]][name] = lab
            self.bump(project["id"])
        else:
            self.group_labels[group["id"]][name] = lab
        return lab

    def available_labels(self, p):
        res = {}
        if p.get("group_id"):
            for gid in reversed(self.group_chain(p["group_id"])):
                res.update(self.group_labels[gid])
        res.update(self.project_labels[p["id"]])
        return res

    def label_ids_for(self, p, names, create=True):
        avail = self.available_labels(p)
        ids = []
        for n in names:
            n = n.strip()
            if not n:
                continue
            lab = avail.get(n)
            if lab is None and create:
                lab = self.add_label(n, DEFAULT_LABEL_COLOR, project=p)
                avail[n] = lab
            if lab and lab["id"] not in ids:
                ids.append(lab["id"])
        return ids

    def delete_label(self, lab):
        self.labels.pop(lab["id"], None)
        if lab["project_id"]:
            self.project_labels[lab["project_id"]].pop(lab["name"], None)
        else:
            self.group_labels[lab["group_id"]].pop(lab["name"], None)
        for coll in (self.issues.values(), self.mrs.values()):
            for obj in coll:
                if lab["id"] in obj["labels"]:
                    obj["labels"] = [x for x in obj["labels"] if x != lab["id"]]
                    self.bump(obj["project_id"])
        for lst in list(self.lists.values()):
            if lst["label_id"] == lab["id"]:
                self.delete_list(lst)

    # ---- issues ----
    def create_issue(self, p, fields, user, ts=None, record_events=True):
        """Create an issue record.  fields: title, description, label_ids, ..."""
        ts = ts or self.tick()
        iid = fields.get("iid") or p["issue_seq"] + 1
        if iid in self.issues_by_project[p["id"]]:
            raise ApiError(409, {"message": f"Issue with iid {iid} already exists"})
        p["issue_seq"] = max(p["issue_seq"], iid)
        pos = fields.get("relative_position")
        if pos is None:
            pos = 0 if p["max_position"] is None else p["max_position"] + POSITION_GAP
        p["max_position"] = pos if p["max_position"] is None else max(p["max_position"], pos)
        iss = {"id": self.next_id("issue", fields.get("id")), "iid": iid, "project_id": p["id"],
               "title": fields["title"], "description": fields.get("description"),
               "state": "opened", "created_at": ts, "updated_at": fields.get("updated_at") or ts,
               "closed_at": None, "closed_by_id": None, "labels": [],
               "assignee_ids": list(fields.get("assignee_ids") or []),
               "author_id": user["id"], "confidential": bool(fields.get("confidential")),
               "discussion_locked": bool(fields.get("discussion_locked")),
               "relative_position": pos, "due_date": fields.get("due_date"),
               "issue_type": fields.get("issue_type") or "issue",
               "upvotes": int(fields.get("upvotes") or 0), "downvotes": int(fields.get("downvotes") or 0),
               "user_notes_count": 0, "mr_ids": set(), "tasks": task_counts(fields.get("description"))}
        self.issues[iss["id"]] = iss
        self.issues_by_project[p["id"]][iid] = iss
        label_ids = self.apply_scoped([], list(fields.get("label_ids") or []))
        if label_ids:
            iss["labels"] = label_ids
            if record_events:
                for lid in label_ids:
                    self.add_label_event("Issue", iss, lid, "add", user, ts)
        self.bump(p["id"])
        return iss

    def apply_scoped(self, old_ids, new_ids):
        """Premium: an added scoped label removes its siblings (last one wins)."""
        if self.cfg.tier != "premium":
            return new_ids
        result = list(new_ids)
        for lid in [x for x in new_ids if x not in old_ids]:
            lab = self.labels.get(lid)
            sc = scope_of(lab["name"]) if lab else None
            if sc and lid in result:
                result = [x for x in result
                          if x == lid or not self.labels.get(x) or scope_of(self.labels[x]["name"]) != sc]
        return result

    def add_label_event(self, kind, obj, lid, action, user, ts):
        ev = {"id": self.next_id("label_event"), "user_id": user["id"], "created_at": ts,
              "resource_type": kind, "resource_id": obj["id"], "label_id": lid,
              "label_snapshot": dict(self.labels.get(lid) or {}), "action": action}
        self.label_events.setdefault((kind, obj["id"]), []).append(ev)
        return ev

    def add_state_event(self, kind, obj, state, user, ts, mr=None):
        ev = {"id": self.next_id("state_event"), "user_id": user["id"], "created_at": ts,
              "resource_type": kind, "resource_id": obj["id"], "state": state,
              "source_merge_request_id": mr["id"] if mr else None}
        self.state_events.setdefault((kind, obj["id"]), []).append(ev)

    def system_note(self, kind, obj, body, user, ts):
        return self.create_note(kind, obj, body, user, ts, system=True)

    def update_issuable(self, kind, obj, spec, user, ts=None):
        """Apply a change set (GitLab's commands_changes vocabulary); return True if changed.

        spec keys: title, description, label_ids, add_label_ids, remove_label_ids,
        state_event, confidential, assignee_ids, discussion_locked, due_date,
        issue_type, target_branch, wip_event, force_remove_source_branch, squash."""
        ts = ts or self.tick()
        changed = False
        noun = "issue" if kind == "Issue" else "merge request"
        if "title" in spec and spec["title"] != obj["title"]:
            self.system_note(kind, obj, f"changed title from **{obj['title']}** to **{spec['title']}**", user, ts)
            obj["title"] = spec["title"]
            changed = True
        if "description" in spec and spec["description"] != obj["description"]:
            obj["description"] = spec["description"]
            obj["tasks"] = task_counts(obj["description"])
            self.system_note(kind, obj, "changed the description", user, ts)
            changed = True
        if any(k in spec for k in ("label_ids", "add_label_ids", "remove_label_ids")):
            old = list(obj["labels"])
            new = list(spec["label_ids"]) if "label_ids" in spec else list(old)
            for lid in spec.get("add_label_ids") or []:
                if lid not in new:
                    new.append(lid)
            rem = set(spec.get("remove_label_ids") or [])
            new = [x for x in new if x not in rem]
            new = self.apply_scoped(old, new)
            if set(new) != set(old):
                for lid in new:
                    if lid not in old:
                        self.add_label_event(kind, obj, lid, "add", user, ts)
                for lid in old:
                    if lid not in new:
                        self.add_label_event(kind, obj, lid, "remove", user, ts)
                changed = True
            obj["labels"] = new
        if "assignee_ids" in spec:
            new = [u for u in spec["assignee_ids"] if u in self.users]
            if self.cfg.tier != "premium":
                new = new[:1]
            if new != obj["assignee_ids"]:
                added = [u for u in new if u not in obj["assignee_ids"]]
                removed = [u for u in obj["assignee_ids"] if u not in new]
                parts = []
                if added:
                    parts.append("assigned to " + " and ".join("@" + self.users[u]["username"] for u in added))
                if removed:
                    parts.append("unassigned " + " and ".join("@" + self.users[u]["username"] for u in removed))
                self.system_note(kind, obj, " and ".join(parts), user, ts)
                obj["assignee_ids"] = new
                changed = True
        if "confidential" in spec and kind == "Issue" and bool(spec["confidential"]) != obj["confidential"]:
            obj["confidential"] = bool(spec["confidential"])
            self.system_note(kind, obj, "made the issue confidential" if obj["confidential"]
                             else "made the issue visible to everyone", user, ts)
            changed = True
        if "discussion_locked" in spec and bool(spec["discussion_locked"]) != bool(obj["discussion_locked"]):
            obj["discussion_locked"] = bool(spec["discussion_locked"])
            self.system_note(kind, obj, ("locked" if obj["discussion_locked"] else "unlocked") + f" this {noun}", user, ts)
            changed = True
        for key in ("due_date", "issue_type", "target_branch", "force_remove_source_branch", "squash"):
            if key in spec and key in obj and spec[key] != obj[key]:
                obj[key] = spec[key]
                changed = True
        if spec.get("wip_event") in ("draft", "ready") and kind == "MergeRequest":
            draft = spec["wip_event"] == "draft"
            if draft != is_draft_title(obj["title"]):
                obj["title"] = ("Draft: " + obj["title"]) if draft else strip_draft(obj["title"])
                self.system_note(kind, obj, f"marked this merge request as **{'draft' if draft else 'ready'}**", user, ts)
                changed = True
        ev = spec.get("state_event")
        if ev == "close" and obj["state"] == "opened":
            obj["state"] = "closed"
            obj["closed_at"] = ts
            obj["closed_by_id"] = user["id"]
            self.add_state_event(kind, obj, "closed", user, ts, spec.get("_via_mr"))
            changed = True
        elif ev == "reopen" and obj["state"] == "closed":
            obj["state"] = "opened"
            obj["closed_at"] = None
            obj["closed_by_id"] = None
            self.add_state_event(kind, obj, "reopened", user, ts)
            changed = True
        if changed:
            obj["updated_at"] = ts
            self.bump(obj["project_id"])
        return changed

    def delete_issue(self, iss):
        self.issues.pop(iss["id"], None)
        self.issues_by_project[iss["project_id"]].pop(iss["iid"], None)
        for nid in [n["id"] for n in self.notes.values()
                    if n["noteable_type"] == "Issue" and n["noteable_id"] == iss["id"]]:
            self.notes.pop(nid, None)
        self.bump(iss["project_id"])

    # ---- quick actions ----
    def qa_available(self, kind, obj):
        persisted = obj is not None

        def available(cmd, arg):
            if cmd == "close":
                return persisted and obj["state"] == "opened"
            if cmd == "reopen":
                return persisted and obj["state"] == "closed"
            if cmd in ("unlabel", "remove_label"):
                return persisted and bool(obj["labels"])
            if cmd == "confidential":
                return kind == "Issue" and not (persisted and obj["confidential"])
            if cmd == "unassign":
                return persisted and bool(obj["assignee_ids"])
            if cmd == "title":
                return persisted and bool(arg.strip())
            if cmd == "lock":
                return persisted and not obj["discussion_locked"]
            if cmd == "unlock":
                return persisted and bool(obj["discussion_locked"])
            if cmd in ("draft", "wip", "ready"):
                return kind == "MergeRequest"
            return True
        return available

    def qa_spec(self, kind, p, obj, cmds, user):
        """Turn parsed commands into (spec, summary) like GitLab's commands_changes."""
        spec, summary = {}, []
        noun = "issue" if kind == "Issue" else "merge request"
        current_assignees = list(obj["assignee_ids"]) if obj else []
        for cmd, arg in cmds:
            if cmd == "close":
                spec["state_event"] = "close"
                summary.append(f"Closed this {noun}.")
            elif cmd == "reopen":
                spec["state_event"] = "reopen"
                summary.append(f"Reopened this {noun}.")
            elif cmd in ("label", "labels", "relabel"):
                ids = self.label_ids_for(p, parse_label_args(arg), create=False)
                if cmd == "relabel":
                    spec["label_ids"] = ids
                    spec.pop("add_label_ids", None)
                else:
                    spec.setdefault("add_label_ids", []).extend(i for i in ids if i not in spec.get("add_label_ids", []))
                if ids:
                    summary.append(("Replaced all labels with " if cmd == "relabel" else "Added ") +
                                   " ".join(f'~"{self.labels[i]["name"]}"' for i in ids) + " label" + ("s" if len(ids) > 1 else "") + ".")
            elif cmd in ("unlabel", "remove_label"):
                names = parse_label_args(arg)
                if names:
                    ids = self.label_ids_for(p, names, create=False)
                    spec.setdefault("remove_label_ids", []).extend(ids)
                else:
                    ids = list(obj["labels"]) if obj else []
                    spec["label_ids"] = []
                summary.append("Removed " + " ".join(f'~"{self.labels[i]["name"]}"' for i in ids if i in self.labels) + " label(s).")
            elif cmd == "confidential":
                spec["confidential"] = True
                summary.append("Made this issue confidential.")
            elif cmd == "assign":
                for name in parse_user_args(arg):
                    u = user if name == "me" else self.user_ref(name)
                    if u and u["id"] not in current_assignees:
                        current_assignees.append(u["id"])
                spec["assignee_ids"] = current_assignees
                summary.append("Assigned " + arg.strip() + ".")
            elif cmd == "unassign":
                names = parse_user_args(arg)
                if names:
                    drop = {(user if n == "me" else self.user_ref(n) or {}).get("id") for n in names}
                    current_assignees = [u for u in current_assignees if u not in drop]
                else:
                    current_assignees = []
                spec["assignee_ids"] = current_assignees
                summary.append("Removed assignee(s).")
            elif cmd == "title":
                spec["title"] = arg.strip()
                summary.append(f"Changed the title to \"{arg.strip()}\".")
            elif cmd == "lock":
                spec["discussion_locked"] = True
                summary.append("Locked the discussion.")
            elif cmd == "unlock":
                spec["discussion_locked"] = False
                summary.append("Unlocked the discussion.")
            elif cmd in ("draft", "wip"):
                spec["wip_event"] = "draft"
                summary.append("Marked this merge request as a draft.")
            elif cmd == "ready":
                spec["wip_event"] = "ready"
                summary.append("Marked this merge request as ready.")
        return spec, summary

    # ---- mentions ----
    def record_mentions(self, text, old_text, source, p, kind, obj, note=None):
        old = set(find_mentions(old_text)) if old_text else set()
        for name in find_mentions(text):
            if name in old:
                continue
            self.mentions.append({
                "username": name, "known": name == "all" or name.lower() in self.users_by_name,
                "source": source, "project_id": p["id"], "noteable_type": kind,
                "noteable_iid": obj["iid"] if obj else None, "note_id": note["id"] if note else None,
                "created_at": iso(time.time())})

    # ---- notes ----
    def create_note(self, kind, obj, body, user, ts=None, system=False, internal=False):
        ts = ts or self.tick()
        n = {"id": self.next_id("note"), "body": body, "author_id": user["id"], "created_at": ts,
             "updated_at": ts, "system": system, "noteable_type": kind, "noteable_id": obj["id"],
             "noteable_iid": obj["iid"], "project_id": obj["project_id"], "internal": bool(internal)}
        self.notes[n["id"]] = n
        obj.setdefault("note_ids", []).append(n["id"])
        if not system:
            obj["user_notes_count"] += 1
        return n

    def notes_of(self, kind, obj):
        return [self.notes[i] for i in obj.get("note_ids", []) if i in self.notes]

    def delete_note(self, obj, n):
        self.notes.pop(n["id"], None)
        if not n["system"]:
            obj["user_notes_count"] = max(0, obj["user_notes_count"] - 1)

    # ---- sorted issue lists (cached per project/order) ----
    def issue_key_fn(self, order_by, desc):
        sgn = -1 if desc else 1
        if order_by in ("created_at", "updated_at", "id"):
            return lambda i: (sgn * i[order_by], sgn * i["id"])
        if order_by == "title":
            if desc:
                return lambda i: (desc_str_key(i["title"].lower()), -i["id"])
            return lambda i: (i["title"].lower(), i["id"])
        if order_by == "popularity":
            return lambda i: (sgn * i["upvotes"], sgn * i["id"])

        def nullable(value_fn):
            def key(i):
                v = value_fn(i)
                return (1, 0, sgn * i["id"]) if v is None else (0, sgn * v, sgn * i["id"])
            return key
        if order_by == "relative_position":
            return nullable(lambda i: i["relative_position"])
        if order_by in ("due_date", "milestone_due"):
            return nullable(lambda i: datetime.date.fromisoformat(i["due_date"]).toordinal() if i["due_date"] else None)
        if order_by == "closed_at":
            return nullable(lambda i: i["closed_at"])
        if order_by in ("priority", "label_priority"):
            def prio(i):
                ps = [self.labels[l]["priority"] for l in i["labels"]
                      if l in self.labels and self.labels[l]["priority"] is not None]
                return min(ps) if ps else None
            return nullable(prio)
        if order_by == "weight":
            return nullable(lambda i: i.get("weight"))
        raise bad_value("order_by")

    def sorted_issues(self, pid, order_by, desc):
        key = (pid, order_by, desc)
        ver = self.version.get(pid, 0)
        hit = self.sort_cache.get(key)
        if hit and hit[0] == ver:
            return hit[1], hit[2]
        fn = self.issue_key_fn(order_by, desc)
        pairs = sorted(((fn(i), i) for i in self.issues_by_project[pid].values()), key=lambda t: t[0])
        keys = [k for k, _ in pairs]
        items = [i for _, i in pairs]
        self.sort_cache[key] = (ver, items, keys)
        return items, keys

    # ---- relative positions ----
    def reorder_issue(self, iss, before, after):
        """Place iss so that before < iss < after in relative_position order."""
        pid = iss["project_id"]
        p = self.projects[pid]
        issues = self.issues_by_project[pid]
        for other in sorted((i for i in issues.values() if i["relative_position"] is None),
                            key=lambda i: i["id"]):
            p["max_position"] = 0 if p["max_position"] is None else p["max_position"] + POSITION_GAP
            other["relative_position"] = p["max_position"]
        ordered = sorted((i for i in issues.values() if i is not iss),
                         key=lambda i: (i["relative_position"], i["id"]))

        def neighbours():
            if before is not None and after is not None:
                return before["relative_position"], after["relative_position"]
            if after is not None:
                idx = ordered.index(after)
                prev = ordered[idx - 1]["relative_position"] if idx > 0 else None
                return prev, after["relative_position"]
            idx = ordered.index(before)
            nxt = ordered[idx + 1]["relative_position"] if idx + 1 < len(ordered) else None
            return before["relative_position"], nxt

        lo, hi = neighbours()
        if lo is not None and hi is not None and hi - lo < 2:
            for n, i in enumerate(ordered):      # rebalance, keep order
                i["relative_position"] = n * (POSITION_GAP + 1) * 2
            lo, hi = neighbours()
        if lo is None and hi is None:
            pos = 0
        elif lo is None:
            pos = hi - POSITION_GAP
        elif hi is None:
            pos = lo + POSITION_GAP
        else:
            pos = (lo + hi) // 2
        iss["relative_position"] = pos
        positions = [i["relative_position"] for i in issues.values() if i["relative_position"] is not None]
        p["max_position"] = max(positions) if positions else None
        self.bump(pid)

    # ---- boards ----
    def create_board(self, name, project=None, group=None):
        b = {"id": self.next_id("board"), "name": name, "project_id": project["id"] if project else None,
             "group_id": group["id"] if group else None, "hide_backlog_list": False,
             "hide_closed_list": False, "list_ids": []}
        self.boards[b["id"]] = b
        return b

    def delete_list(self, lst):
        self.lists.pop(lst["id"], None)
        b = self.boards.get(lst["board_id"])
        if b:
            b["list_ids"] = [x for x in b["list_ids"] if x != lst["id"]]
            for n, lid in enumerate(b["list_ids"]):
                self.lists[lid]["position"] = n

    # ---- pipelines and jobs ----
    def latest_pipeline(self, pid, ref=None, sha=None):
        best = None
        for pl in self.pipelines.values():
            if pl["project_id"] == pid and (ref is None or pl["ref"] == ref) and (sha is None or pl["sha"] == sha):
                if best is None or pl["id"] > best["id"]:
                    best = pl
        return best

    def add_pipeline(self, p, d, user=None):
        ref = d.get("ref") or p["default_branch"]
        repo = self.repo(p)
        sha = d.get("sha") or repo.resolve(ref) or hashlib.sha1(f"{p['id']}:{ref}:{time.time()}".encode()).hexdigest()
        created = parse_time(d.get("created_at")) or self.tick()
        p["pipeline_seq"] += 1
        user = user or self.user_ref(d.get("user"), self.users[self.bot_id])
        tag = bool(d.get("tag")) or (repo.resolve(f"refs/tags/{ref}") is not None and repo.branch_sha(ref) is None)
        pl = {"id": self.next_id("pipeline", d.get("id")), "iid": d.get("iid") or p["pipeline_seq"],
              "project_id": p["id"], "ref": ref, "sha": sha, "before_sha": d.get("before_sha") or ZERO_SHA,
              "status": d.get("status") or "created", "source": d.get("source") or "push",
              "tag": tag, "user_id": user["id"], "created_at": created,
              "updated_at": parse_time(d.get("updated_at")) or created,
              "started_at": parse_time(d.get("started_at")), "finished_at": parse_time(d.get("finished_at")),
              "duration": d.get("duration"), "queued_duration": d.get("queued_duration"),
              "name": d.get("name"), "coverage": d.get("coverage"), "job_ids": [],
              "yaml_errors": d.get("yaml_errors")}
        self.pipelines[pl["id"]] = pl
        for jd in d.get("jobs") or []:
            jd = dict(jd)
            jd.setdefault("status", pl["status"] if pl["status"] in JOB_STATUSES else "success")
            self.add_job(pl, jd)
        if not d.get("status"):
            self.derive_pipeline_status(pl)
        elif pl["status"] not in ACTIVE_STATUSES:
            self.fill_pipeline_times(pl)
        return pl

    def add_job(self, pl, d, retry_of=None):
        created = parse_time(d.get("created_at")) or pl["created_at"]
        status = d.get("status") or "created"
        if status not in JOB_STATUSES:
            raise ValueError(f"bad job status {status}")
        j = {"id": self.next_id("job", d.get("id")), "pipeline_id": pl["id"], "project_id": pl["project_id"],
             "name": d.get("name") or "job", "stage": d.get("stage") or "test", "status": status,
             "trace": d.get("trace") or "", "failure_reason": d.get("failure_reason"),
             "allow_failure": bool(d.get("allow_failure")), "created_at": created,
             "started_at": parse_time(d.get("started_at")), "finished_at": parse_time(d.get("finished_at")),
             "duration": d.get("duration"), "queued_duration": d.get("queued_duration"),
             "retried": False, "tag_list": d.get("tag_list") or [], "coverage": d.get("coverage"),
             "user_id": pl["user_id"], "when": d.get("when") or "on_success", "retry_of": retry_of}
        self.fill_job_times(j)
        self.jobs[j["id"]] = j
        pl["job_ids"].append(j["id"])
        return j

    def fill_job_times(self, j):
        q = j["queued_duration"] if j["queued_duration"] is not None else 0.5
        if j["status"] not in ("created", "pending", "manual", "scheduled", "skipped", "waiting_for_resource", "preparing"):
            if j["started_at"] is None:
                j["started_at"] = j["created_at"] + q
                if j["queued_duration"] is None:
                    j["queued_duration"] = q
        if j["status"] in ("success", "failed", "canceled"):
            if j["finished_at"] is None:
                start = j["started_at"] if j["started_at"] is not None else j["created_at"]
                j["finished_at"] = start + (j["duration"] if j["duration"] is not None else 1.0)
            if j["duration"] is None and j["started_at"] is not None:
                j["duration"] = round(j["finished_at"] - j["started_at"], 3)
        if j["status"] == "failed" and not j["failure_reason"]:
            j["failure_reason"] = "script_failure"

    def pipeline_jobs(self, pl, include_retried=True):
        return [self.jobs[i] for i in pl["job_ids"] if i in self.jobs and (include_retried or not self.jobs[i]["retried"])]

    def derive_pipeline_status(self, pl):
        jobs = self.pipeline_jobs(pl, include_retried=False)
        if not jobs:
            return
        st = [("success" if j["status"] == "failed" and j["allow_failure"] else j["status"]) for j in jobs]
        s = set(st)
        if "running" in s:
            status = "running"
        elif s & {"pending", "preparing", "waiting_for_resource"}:
            status = "pending"
        elif "created" in s and s <= {"created", "success", "skipped", "manual"} and "success" in s:
            status = "running"
        elif "created" in s:
            status = "created" if s == {"created"} else ("failed" if "failed" in s else "pending")
        elif "failed" in s:
            status = "failed"
        elif "canceled" in s:
            status = "canceled"
        elif "manual" in s and "success" not in s:
            status = "manual"
        elif "scheduled" in s:
            status = "scheduled"
        elif s == {"skipped"}:
            status = "skipped"
        else:
            status = "success"
        old = pl["status"]
        pl["status"] = status
        pl["updated_at"] = self.tick()
        self.fill_pipeline_times(pl)
        if old != status and status == "success":
            self.on_pipeline_success(pl)

    def fill_pipeline_times(self, pl):
        jobs = self.pipeline_jobs(pl, include_retried=False)
        starts = [j["started_at"] for j in jobs if j["started_at"] is not None]
        if starts and pl["started_at"] is None:
            pl["started_at"] = min(starts)
        if pl["started_at"] is None and pl["status"] not in ("created", "pending"):
            pl["started_at"] = pl["created_at"] + 0.5
        if pl["queued_duration"] is None and pl["started_at"] is not None:
            pl["queued_duration"] = round(pl["started_at"] - pl["created_at"], 3)
        if pl["status"] in ("success", "failed", "canceled", "skipped"):
            ends = [j["finished_at"] for j in jobs if j["finished_at"] is not None]
            if pl["finished_at"] is None:
                pl["finished_at"] = max(ends) if ends else (pl["started_at"] or pl["created_at"]) + 1.0
            if pl["duration"] is None and pl["started_at"] is not None:
                pl["duration"] = int(round(pl["finished_at"] - pl["started_at"]))
        elif pl["status"] in ACTIVE_STATUSES:
            pl["finished_at"] = None
            pl["duration"] = None

    def on_pipeline_success(self, pl):
        """Auto-merge ("merge when pipeline succeeds") for MRs whose head is this pipeline."""
        for mr in list(self.mrs_by_project.get(pl["project_id"], {}).values()):
            if mr["state"] == "opened" and mr["merge_when_pipeline_succeeds"] and mr["source_branch"] == pl["ref"]:
                p = self.projects[mr["project_id"]]
                head = self.repo(p).branch_sha(mr["source_branch"])
                if head == pl["sha"]:
                    try:
                        self.merge_mr(p, mr, self.users.get(mr["merge_user_id"]) or self.users[self.bot_id], {})
                    except ApiError:
                        pass

    def retry_job(self, j):
        pl = self.pipelines[j["pipeline_id"]]
        j["retried"] = True
        new = self.add_job(pl, {"name": j["name"], "stage": j["stage"], "status": "pending",
                                "allow_failure": j["allow_failure"], "tag_list": j["tag_list"],
                                "created_at": self.tick()}, retry_of=j["id"])
        pl["finished_at"] = None
        pl["duration"] = None
        self.derive_pipeline_status(pl)
        return new

    def cancel_job(self, j):
        if j["status"] in CANCELABLE:
            j["status"] = "canceled"
            j["finished_at"] = self.tick()
            if j["started_at"] is not None:
                j["duration"] = round(j["finished_at"] - j["started_at"], 3)
            return True
        return False

    # ---- merge requests ----
    def closing_refs(self, p, text):
        """Issues referenced by GitLab's closing pattern (Closes #1, fixes group/proj#2, URLs)."""
        res = []
        if not text:
            return res
        pat = re.compile(r"\b(?:clos(?:e[sd]?|ing)|fix(?:e[sd]|ing)?|resolv(?:e[sd]?|ing)|implement(?:s|ed|ing)?)"
                         r":?\s+((?:(?:issues?\s+)?(?:[\w.\-/]+)?#\d+|https?://\S+/-/issues/\d+)"
                         r"(?:(?:\s*,\s*|\s+and\s+|\s+)(?:(?:issues?\s+)?(?:[\w.\-/]+)?#\d+|https?://\S+/-/issues/\d+))*)",
                         re.I)
        for m in pat.finditer(text):
            for ref in re.finditer(r"(?:([\w.\-]+/[\w.\-/]+))?#(\d+)|https?://[^/\s]+/(\S+?)/-/issues/(\d+)", m.group(1)):
                path = ref.group(1) or ref.group(3)
                iid = int(ref.group(2) or ref.group(4))
                target = self.find_project(path) if path else p
                if target and iid in self.issues_by_project[target["id"]]:
                    iss = self.issues_by_project[target["id"]][iid]
                    if iss["id"] not in res:
                        res.append(iss["id"])
        return res

    def refresh_mr_links(self, p, mr):
        for iid in mr.get("closes", []):
            if iid in self.issues:
                self.issues[iid]["mr_ids"].discard(mr["id"])
        mr["closes"] = self.closing_refs(p, mr["description"])
        for iid in mr["closes"]:
            self.issues[iid]["mr_ids"].add(mr["id"])

    def create_mr(self, p, fields, user, ts=None):
        ts = ts or self.tick()
        p["mr_seq"] += 1
        mr = {"id": self.next_id("mr"), "iid": p["mr_seq"], "project_id": p["id"],
              "title": fields["title"], "description": fields.get("description"), "state": "opened",
              "source_branch": fields["source_branch"], "target_branch": fields["target_branch"],
              "author_id": user["id"], "assignee_ids": list(fields.get("assignee_ids") or [])[: (None if self.cfg.tier == "premium" else 1)],
              "labels": [], "created_at": ts, "updated_at": ts, "merged_at": None, "merged_by_id": None,
              "closed_at": None, "closed_by_id": None, "merge_commit_sha": None, "sha": None,
              "force_remove_source_branch": bool(fields.get("remove_source_branch")),
              "should_remove_source_branch": None, "squash": bool(fields.get("squash")),
              "merge_when_pipeline_succeeds": False, "merge_user_id": None,
              "user_notes_count": 0, "discussion_locked": None, "upvotes": 0, "downvotes": 0,
              "tasks": task_counts(fields.get("description")), "closes": [], "merged_diff_refs": None}
        self.mrs[mr["id"]] = mr
        self.mrs_by_project[p["id"]][mr["iid"]] = mr
        ids = self.apply_scoped([], list(fields.get("label_ids") or []))
        mr["labels"] = ids
        for lid in ids:
            self.add_label_event("MergeRequest", mr, lid, "add", user, ts)
        self.refresh_mr_links(p, mr)
        self.bump(p["id"])
        return mr

    def merge_mr(self, p, mr, user, opts):
        repo = self.repo(p)
        src = repo.branch_sha(mr["source_branch"])
        tgt = repo.branch_sha(mr["target_branch"])
        if src is None or tgt is None:
            raise ApiError(422, {"message": "Branch cannot be merged"})
        msg = opts.get("merge_commit_message") or (
            f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'\n\n{mr['title']}\n\n"
            + (f"Closes {', '.join('#%d' % self.issues[i]['iid'] for i in mr['closes'] if i in self.issues)}\n\n" if mr["closes"] else "")
            + f"See merge request {p['path_with_namespace']}!{mr['iid']}")
        base_sha = repo.merge_base(tgt, src)
        if repo.is_ancestor(src, tgt):
            merge_sha = tgt
        else:
            tree, clean = repo.merge_tree(tgt, src)
            if not clean:
                raise ApiError(422, {"message": "Branch cannot be merged"})
            merge_sha = repo.commit_tree(tree, [tgt, src], msg, (user["name"], user["email"]))
            repo.update_ref(f"refs/heads/{mr['target_branch']}", merge_sha, tgt)
        ts = self.tick()
        mr.update(state="merged", merged_at=ts, merged_by_id=user["id"], merge_commit_sha=merge_sha if merge_sha != tgt else None,
                  sha=src, updated_at=ts, merge_when_pipeline_succeeds=False,
                  merged_diff_refs={"base_sha": base_sha, "head_sha": src, "start_sha": tgt})
        mr["merge_user_id"] = user["id"]
        self.add_state_event("MergeRequest", mr, "merged", user, ts)
        remove = opts.get("should_remove_source_branch")
        if remove is None:
            remove = mr["force_remove_source_branch"]
        mr["should_remove_source_branch"] = bool(remove) if remove is not None else None
        if remove and mr["source_branch"] not in self.protected[p["id"]] and mr["source_branch"] != p["default_branch"]:
            try:
                repo.delete_ref(f"refs/heads/{mr['source_branch']}")
            except GitError:
                pass
        if mr["target_branch"] == p["default_branch"]:
            for iid in mr["closes"]:
                iss = self.issues.get(iid)
                if iss and iss["state"] == "opened":
                    self.update_issuable("Issue", iss, {"state_event": "close", "_via_mr": mr}, user, ts)
        self.bump(p["id"])
        return mr

    # ---- protected branches ----
    def protect(self, p, name):
        if name not in self.protected[p["id"]]:
            self.protected[p["id"]][name] = self.next_id("protected")
        self.repo(p).write_protected(self.protected[p["id"]].keys())

    def unprotect(self, p, name):
        self.protected[p["id"]].pop(name, None)
        self.repo(p).write_protected(self.protected[p["id"]].keys())

    # ---- seeding (control API and --seed) ----
    def seed_project(self, ref):
        p = self.find_project(str(ref if ref is not None else 1))
        if not p:
            raise ValueError(f"unknown project {ref!r}")
        return p

    def seed(self, d):
        """Add users, groups, projects, tokens, labels, issues, MRs, boards, pipelines.

        Additive; {"reset": true} wipes everything first."""
        if not isinstance(d, dict):
            raise ValueError("seed must be a JSON object")
        if d.get("reset"):
            self.reset()
        out = {"projects": [], "labels": [], "issues": [], "merge_requests": [], "boards": [], "pipelines": []}
        for u in d.get("users") or []:
            self.add_user(u if isinstance(u, dict) else {"username": u})
        for g in d.get("groups") or []:
            if isinstance(g, dict):
                self.ensure_group(g["full_path"], g)
            else:
                self.ensure_group(g)
        for pd in d.get("projects") or []:
            out["projects"].append(self.add_project(pd)["id"])
        for t in d.get("tokens") or []:
            t = {"token": t} if isinstance(t, str) else t
            u = self.user_ref(t.get("user") or t.get("username") or t.get("user_id"), self.users[self.bot_id])
            self.tokens[t["token"]] = {"user_id": u["id"], "scopes": list(t.get("scopes") or ["api"])}
        for t in d.get("read_only_tokens") or []:
            t = {"token": t} if isinstance(t, str) else t
            u = self.user_ref(t.get("user") or t.get("username"), self.users[self.bot_id])
            self.tokens[t["token"]] = {"user_id": u["id"], "scopes": ["read_api"]}
        for t in d.get("job_tokens") or []:
            t = {"token": t} if isinstance(t, str) else t
            self.job_tokens[t["token"]] = {"project_id": t.get("project_id"), "job_id": t.get("job_id")}
        for ld in d.get("labels") or []:
            out["labels"].append(self.seed_label(ld)["id"])
        for idata in d.get("issues") or []:
            out["issues"].append(self.seed_issue(idata)["iid"])
        for md in d.get("merge_requests") or []:
            out["merge_requests"].append(self.seed_mr(md)["iid"])
        for bd in d.get("boards") or []:
            if bd.get("group"):
                g = self.ensure_group(bd["group"])
                p, avail = None, {}
                for gid in reversed(self.group_chain(g["id"])):
                    avail.update(self.group_labels[gid])
            else:
                g, p = None, self.seed_project(bd.get("project_id"))
                avail = self.available_labels(p)
            b = self.create_board(bd.get("name") or "Development", project=p, group=g)
            for name in bd.get("lists") or []:
                lab = avail.get(name) or (self.add_label(name, DEFAULT_LABEL_COLOR, project=p, group=g))
                avail[name] = lab
                lst = {"id": self.next_id("list"), "board_id": b["id"], "label_id": lab["id"],
                       "position": len(b["list_ids"])}
                self.lists[lst["id"]] = lst
                b["list_ids"].append(lst["id"])
            out["boards"].append(b["id"])
        for pd in d.get("pipelines") or []:
            pl = self.add_pipeline(self.seed_project(pd.get("project_id")), pd)
            out["pipelines"].append({"id": pl["id"], "jobs": list(pl["job_ids"])})
        for pb in d.get("protected_branches") or []:
            if isinstance(pb, str):
                pid, _, name = pb.rpartition(":")
                pb = {"project_id": pid or 1, "name": name}
            self.protect(self.seed_project(pb.get("project_id")), pb.get("name") or pb.get("branch"))
        return out

    def seed_label(self, ld):
        ld = {"name": ld} if isinstance(ld, str) else ld
        color = normalize_color(ld.get("color") or DEFAULT_LABEL_COLOR)
        if color is None:
            raise ValueError(f"bad colour {ld.get('color')!r}")
        if ld.get("group") or ld.get("group_id"):
            g = self.find_group(str(ld.get("group_id"))) if ld.get("group_id") else self.ensure_group(ld["group"])
            own, p = self.group_labels[g["id"]], None
        else:
            g, p = None, self.seed_project(ld.get("project_id"))
            own = self.project_labels[p["id"]]
        lab = own.get(ld["name"])
        if lab is None:
            return self.add_label(ld["name"], color, ld.get("description"), ld.get("priority"),
                                  project=p, group=g, label_id=ld.get("id"))
        lab.update(color=color, description=ld.get("description", lab["description"]),
                   priority=ld.get("priority", lab["priority"]))
        return lab

    def seed_issue(self, d):
        p = self.seed_project(d.get("project_id", d.get("project")))
        author = self.user_ref(d.get("author"), self.users[self.bot_id])
        created = parse_time(d.get("created_at")) or self.tick()
        names = d.get("labels") or []
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        assignees = []
        for ref in (d.get("assignees") or d.get("assignee_ids") or []):
            u = self.user_ref(ref)
            if u:
                assignees.append(u["id"])
        if self.cfg.tier != "premium":
            assignees = assignees[:1]
        explicit_events = d.get("label_events")
        fields = {"title": d.get("title") or "Untitled", "description": d.get("description"),
                  "label_ids": self.label_ids_for(p, names), "confidential": d.get("confidential"),
                  "assignee_ids": assignees, "due_date": d.get("due_date"),
                  "issue_type": d.get("issue_type"), "discussion_locked": d.get("discussion_locked"),
                  "iid": d.get("iid"), "id": d.get("id"), "relative_position": d.get("relative_position"),
                  "upvotes": d.get("upvotes"), "downvotes": d.get("downvotes"),
                  "updated_at": parse_time(d.get("updated_at"))}
        iss = self.create_issue(p, fields, author, ts=created, record_events=explicit_events is None)
        for ev in explicit_events or []:
            lid = self.label_ids_for(p, [ev["label"]])[0]
            self.add_label_event("Issue", iss, lid, ev.get("action", "add"),
                                 self.user_ref(ev.get("user"), author), parse_time(ev.get("created_at")) or created)
        for nd in d.get("notes") or []:
            nd = {"body": nd} if isinstance(nd, str) else nd
            self.create_note("Issue", iss, nd["body"], self.user_ref(nd.get("author"), author),
                             parse_time(nd.get("created_at")) or created, system=bool(nd.get("system")),
                             internal=bool(nd.get("internal") or nd.get("confidential")))
        if d.get("state") == "closed":
            iss["state"] = "closed"
            iss["closed_at"] = parse_time(d.get("closed_at")) or iss["updated_at"]
            closer = self.user_ref(d.get("closed_by"), author)
            iss["closed_by_id"] = closer["id"]
            self.add_state_event("Issue", iss, "closed", closer, iss["closed_at"])
        self.bump(p["id"])
        return iss

    def seed_mr(self, d):
        p = self.seed_project(d.get("project_id"))
        author = self.user_ref(d.get("author"), self.users[self.bot_id])
        ts = parse_time(d.get("created_at")) or self.tick()
        mr = self.create_mr(p, {"title": d["title"], "description": d.get("description"),
                                "source_branch": d["source_branch"],
                                "target_branch": d.get("target_branch") or p["default_branch"],
                                "label_ids": self.label_ids_for(p, d.get("labels") or [])}, author, ts)
        if d.get("state") in ("merged", "closed"):
            mr["state"] = d["state"]
            when = parse_time(d.get("merged_at") or d.get("closed_at")) or ts
            if d["state"] == "merged":
                mr["merged_at"], mr["merged_by_id"] = when, author["id"]
                mr["sha"] = self.repo(p).branch_sha(mr["source_branch"])
            else:
                mr["closed_at"], mr["closed_by_id"] = when, author["id"]
        return mr

    # ---- state dump (control API) ----
    def dump(self, base):
        heads = {pid: self.repo(p).heads() for pid, p in self.projects.items()}
        return {
            "users": [dict({k: v for k, v in u.items() if not k.startswith("_")}, created_at=iso(u["created_at"]))
                      for u in self.users.values()],
            "tokens": [{"token": t, **v} for t, v in self.tokens.items()],
            "job_tokens": [{"token": t, **v} for t, v in self.job_tokens.items()],
            "groups": [self.ser_group(g, base) for g in self.groups.values()],
            "projects": [self.ser_project(p, base) for p in self.projects.values()],
            "labels": [self.ser_label(l) for l in self.labels.values()],
            "issues": [self.ser_issue(i, base) for i in self.issues.values()],
            "notes": [self.ser_note(n, base) for n in self.notes.values()],
            "label_events": [self.ser_label_event(e, base) for evs in self.label_events.values() for e in evs],
            "state_events": [self.ser_state_event(e, base) for evs in self.state_events.values() for e in evs],
            "boards": [self.ser_board(b, base) for b in self.boards.values()],
            "merge_requests": [self.ser_mr(m, base, heads[m["project_id"]]) for m in self.mrs.values()],
            "pipelines": [dict(self.ser_pipeline(pl, base),
                               jobs=[dict(self.ser_job(self.jobs[j], base), retried=self.jobs[j]["retried"])
                                     for j in pl["job_ids"] if j in self.jobs])
                          for pl in self.pipelines.values()],
            "releases": [self.ser_release(r, base) for r in self.releases.values()],
            "pipeline_schedules": [self.ser_schedule(s, base, single=True) for s in self.schedules.values()],
            "protected_branches": {str(pid): sorted(v) for pid, v in self.protected.items()},
            "mentions": list(self.mentions),
        }


# --------------------------------------------------------------------------
# Request context, pagination, routing
# --------------------------------------------------------------------------

class Ctx:
    """One API request: parameters (query + body, Grape-style), user, base URL."""

    def __init__(self, app, method, raw_path, qs, body_params, base):
        self.app = app
        self.st = app.state
        self.method = method
        self.raw_path = raw_path
        self.qs = qs
        self.params = parse_nested(qs)
        self.params.update(body_params)
        self.base = base
        self.user = None
        self.token_kind = "none"
        self.job_token = None

    # ---- parameter access ----
    def has(self, name):
        return name in self.params

    def s(self, name, default=None):
        v = self.params.get(name)
        if v is None:
            return default
        if isinstance(v, list):
            if not v:
                return default
            v = v[-1]
        if isinstance(v, dict):
            raise invalid(name)
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    def i(self, name, default=None):
        v = self.params.get(name)
        if isinstance(v, list):
            v = v[-1] if v else None
        if v is None or v == "":
            return default
        if isinstance(v, bool):
            raise invalid(name)
        try:
            return int(v)
        except (TypeError, ValueError):
            raise invalid(name) from None

    def b(self, name, default=None):
        v = self.params.get(name)
        if isinstance(v, list):
            v = v[-1] if v else None
        if v is None:
            return default
        if isinstance(v, bool):
            return v
        s = str(v).strip().lower()
        if s in ("true", "1", "t", "yes", "y", "on"):
            return True
        if s in ("false", "0", "f", "no", "n", "off"):
            return False
        raise invalid(name)

    def lst(self, name):
        """Comma-separated string or array -> list of non-empty stripped strings."""
        v = self.params.get(name)
        if v is None:
            return None
        if isinstance(v, str):
            parts = v.split(",")
        elif isinstance(v, list):
            parts = []
            for x in v:
                parts.extend(x.split(",") if isinstance(x, str) else [str(x)])
        elif isinstance(v, dict):
            raise invalid(name)
        else:
            parts = [str(v)]
        return [p.strip() for p in parts if p.strip()]

    def ints(self, name):
        vals = self.lst(name)
        if vals is None:
            return None
        try:
            return [int(x) for x in vals]
        except ValueError:
            raise invalid(name) from None

    def require(self, *names):
        miss = [n for n in names if self.params.get(n) is None]
        if miss:
            raise missing(*miss)

    def page(self):
        p = self.i("page", 1)
        return p if p >= 1 else 1

    def per_page(self):
        pp = self.i("per_page", 20)
        if pp < 1:
            pp = 20
        return min(pp, 100)

    # ---- lookups ----
    def project(self, raw):
        p = self.st.find_project(raw)
        if not p:
            raise not_found("Project")
        return p

    def group(self, raw):
        g = self.st.find_group(raw)
        if not g:
            raise not_found("Group")
        return g

    def issue(self, pid, iid):
        p = self.project(pid)
        try:
            n = int(iid)
        except ValueError:
            raise invalid("issue_iid") from None
        iss = self.st.issues_by_project[p["id"]].get(n)
        if not iss:
            raise not_found("Issue")
        return p, iss

    def mr(self, pid, iid):
        p = self.project(pid)
        try:
            n = int(iid)
        except ValueError:
            raise invalid("merge_request_iid") from None
        mr = self.st.mrs_by_project[p["id"]].get(n)
        if not mr:
            raise not_found("Merge Request")
        return p, mr

    def noteable(self, pid, kind, iid):
        if kind == "issues":
            p, obj = self.issue(pid, iid)
            return p, obj, "Issue"
        p, obj = self.mr(pid, iid)
        return p, obj, "MergeRequest"

    # ---- links ----
    def url_with(self, replace, drop=()):
        pairs = [(k, v) for k, v in urllib.parse.parse_qsl(self.qs, keep_blank_values=True)
                 if k not in replace and k not in drop]
        pairs += list(replace.items())
        return f"{self.base}{self.raw_path}?{urllib.parse.urlencode(pairs)}"


def page_headers(ctx, page, per_page, total, has_next):
    """GitLab offset-pagination headers; total=None means 'not counted'."""
    show = total is not None and total <= TOTALS_LIMIT
    total_pages = max(1, -(-total // per_page)) if total is not None else None
    h = [("X-Page", str(page)), ("X-Per-Page", str(per_page)),
         ("X-Prev-Page", str(page - 1) if page > 1 else ""),
         ("X-Next-Page", str(page + 1) if has_next else "")]
    if show:
        h += [("X-Total", str(total)), ("X-Total-Pages", str(total_pages))]
    links = []
    if page > 1:
        links.append(f'<{ctx.url_with({"page": page - 1, "per_page": per_page})}>; rel="prev"')
    if has_next:
        links.append(f'<{ctx.url_with({"page": page + 1, "per_page": per_page})}>; rel="next"')
    links.append(f'<{ctx.url_with({"page": 1, "per_page": per_page})}>; rel="first"')
    if show:
        links.append(f'<{ctx.url_with({"page": total_pages, "per_page": per_page})}>; rel="last"')
    h.append(("Link", ", ".join(links)))
    return h


def offset_page(ctx, items, ser, cap=None, kind="Issue"):
    page, per_page = ctx.page(), ctx.per_page()
    if cap is not None and (page - 1) * per_page >= cap:
        raise ApiError(405, {"error": f"Offset pagination has a maximum allowed offset of {cap} for requests "
                                      f"that return objects of type {kind}. Remaining records can be retrieved "
                                      f"using keyset pagination."})
    start = (page - 1) * per_page
    chunk = items[start:start + per_page]
    total = len(items)
    has_next = start + per_page < total
    return jresp(200, [ser(x) for x in chunk], page_headers(ctx, page, per_page, total, has_next))


def keyset_page(ctx, items, keys, pred, ser):
    """Keyset pagination over a sorted list: only Link rel=next with an opaque cursor."""
    per_page = ctx.per_page()
    start = 0
    cursor = ctx.s("cursor")
    if cursor:
        try:
            start = bisect.bisect_right(keys, to_tuple(unb64url(cursor)))
        except Exception:
            raise invalid("cursor") from None
    out, last = [], None
    for idx in range(start, len(items)):
        if pred(items[idx]):
            out.append(items[idx])
            last = idx
            if len(out) == per_page:
                break
    headers = []
    if len(out) == per_page and last is not None:
        nxt = ctx.url_with({"cursor": b64url(list(keys[last]) if isinstance(keys[last], tuple) else keys[last])},
                           drop=("page",))
        headers.append(("Link", f'<{nxt}>; rel="next"'))
    return jresp(200, [ser(x) for x in out], headers)


ROUTES = []


def route(method, pattern):
    rx = re.compile("^" + pattern + "$")

    def deco(fn):
        ROUTES.append((method, rx, fn))
        return fn
    return deco


P = r"/projects/(?P<pid>[^/]+)"
G = r"/groups/(?P<gid>[^/]+)"
OWNER = r"/(?P<scope>projects|groups)/(?P<oid>[^/]+)"


def check_title(title, field="title"):
    if title is None or not title.strip():
        raise validation(field, "can't be blank")
    if len(title) > MAX_TITLE:
        raise validation(field, f"is too long (maximum is {MAX_TITLE} characters)")


def check_description(desc):
    if desc is not None and len(desc) > MAX_DESCRIPTION:
        raise validation("description", f"is too long (maximum is {MAX_DESCRIPTION} characters)")


def assignees_from(ctx):
    ids = None
    if ctx.has("assignee_ids"):
        ids = ctx.ints("assignee_ids") or []
    elif ctx.has("assignee_id"):
        one = ctx.i("assignee_id")
        ids = [one] if one else []
    if ids is None:
        return None
    return [u for u in ids if u in ctx.st.users]


# --------------------------------------------------------------------------
# Instance-level endpoints
# --------------------------------------------------------------------------

@route("GET", "/version")
def h_version(ctx):
    return jresp(200, {"version": ctx.app.version_str, "revision": "d0ub1e00",
                       "kas": {"enabled": False, "externalUrl": None, "externalK8sProxyUrl": None, "version": None},
                       "enterprise": ctx.app.tier == "premium"})


@route("GET", "/metadata")
def h_metadata(ctx):
    return jresp(200, {"version": ctx.app.version_str, "revision": "d0ub1e00",
                       "kas": {"enabled": False, "externalUrl": None, "externalK8sProxyUrl": None, "version": None},
                       "enterprise": ctx.app.tier == "premium"})


@route("GET", "/user")
def h_user(ctx):
    return jresp(200, ctx.st.ser_current_user(ctx.user, ctx.base))


@route("GET", "/users")
def h_users(ctx):
    users = sorted(ctx.st.users.values(), key=lambda u: u["id"])
    if ctx.has("username"):
        users = [u for u in users if u["username"].lower() == ctx.s("username").lower()]
    if ctx.has("search"):
        q = ctx.s("search").lower()
        users = [u for u in users if q in u["username"].lower() or q in u["name"].lower() or q == u["email"].lower()]
    return offset_page(ctx, users, lambda u: ctx.st.ser_user(u, ctx.base))


@route("GET", r"/users/(?P<uid>[^/]+)")
def h_user_one(ctx, uid):
    u = ctx.st.user_ref(uid)
    if not u:
        raise not_found("User")
    return jresp(200, ctx.st.ser_user(u, ctx.base))


# --------------------------------------------------------------------------
# Projects and groups
# --------------------------------------------------------------------------

@route("GET", "/projects")
def h_projects(ctx):
    st = ctx.st
    items = list(st.projects.values())
    if ctx.has("search"):
        q = ctx.s("search").lower()
        items = [p for p in items if q in p["name"].lower() or q in p["path_with_namespace"].lower()]
    order_by = ctx.s("order_by", "created_at")
    keyf = {"id": lambda p: p["id"], "name": lambda p: p["name"].lower(), "path": lambda p: p["path"].lower(),
            "created_at": lambda p: (p["created_at"], p["id"]),
            "updated_at": lambda p: (p.get("last_activity_at") or p["created_at"], p["id"]),
            "last_activity_at": lambda p: (p.get("last_activity_at") or p["created_at"], p["id"])}.get(order_by)
    if keyf is None:
        raise bad_value("order_by")
    items.sort(key=keyf, reverse=ctx.s("sort", "desc") == "desc")
    simple = ctx.b("simple", False)
    return offset_page(ctx, items, lambda p: st.ser_project(p, ctx.base, simple), cap=OFFSET_CAP, kind="Project")


@route("GET", P)
def h_project(ctx, pid):
    return jresp(200, ctx.st.ser_project(ctx.project(pid), ctx.base))


@route("GET", "/groups")
def h_groups(ctx):
    items = sorted(ctx.st.groups.values(), key=lambda g: g["full_path"].lower())
    if ctx.has("search"):
        q = ctx.s("search").lower()
        items = [g for g in items if q in g["full_path"].lower() or q in g["name"].lower()]
    return offset_page(ctx, items, lambda g: ctx.st.ser_group(g, ctx.base))


@route("GET", G)
def h_group(ctx, gid):
    return jresp(200, ctx.st.ser_group(ctx.group(gid), ctx.base))


@route("GET", G + "/projects")
def h_group_projects(ctx, gid):
    st = ctx.st
    g = ctx.group(gid)
    ids = st.group_tree(g["id"]) if ctx.b("include_subgroups", False) else {g["id"]}
    items = sorted((p for p in st.projects.values() if p["group_id"] in ids), key=lambda p: -p["id"])
    if ctx.has("archived"):
        items = [p for p in items if bool(p.get("archived")) == ctx.b("archived")]
    if ctx.has("topic"):
        want = {t.strip().lower() for t in ctx.s("topic").split(",") if t.strip()}
        items = [p for p in items if want <= {t.lower() for t in p.get("topics") or []}]
    return offset_page(ctx, items, lambda p: st.ser_project(p, ctx.base, ctx.b("simple", False)))


@route("GET", G + "/subgroups")
def h_group_subgroups(ctx, gid):
    g = ctx.group(gid)
    items = sorted((x for x in ctx.st.groups.values() if x["parent_id"] == g["id"]), key=lambda x: x["name"].lower())
    return offset_page(ctx, items, lambda x: ctx.st.ser_group(x, ctx.base))


# --------------------------------------------------------------------------
# Issues
# --------------------------------------------------------------------------

ISSUE_ORDERS = {"created_at", "updated_at", "priority", "label_priority", "relative_position", "due_date",
                "title", "id", "popularity", "weight", "milestone_due", "closed_at"}
KEYSET_ISSUE_ORDERS = {"created_at", "updated_at", "title", "id", "weight", "due_date", "relative_position"}


def label_id_sets(st, names):
    by_name = {}
    for lab in st.labels.values():
        by_name.setdefault(lab["name"], set()).add(lab["id"])
    return [by_name.get(n, set()) for n in names]


def issue_predicate(ctx):
    st = ctx.st
    preds = []
    state = ctx.s("state", "all")
    if state not in ("opened", "closed", "all"):
        raise bad_value("state")
    if state != "all":
        preds.append(lambda i: i["state"] == state)
    labels = ctx.lst("labels")
    if labels is not None and labels:
        low = [l.lower() for l in labels]
        if low == ["none"]:
            preds.append(lambda i: not i["labels"])
        elif low == ["any"]:
            preds.append(lambda i: bool(i["labels"]))
        else:
            for ids in label_id_sets(st, labels):
                preds.append(lambda i, ids=ids: any(x in ids for x in i["labels"]))
    not_ = ctx.params.get("not")
    if isinstance(not_, dict) and not_.get("labels") not in (None, ""):
        raw = not_["labels"]
        names = [n.strip() for n in (raw if isinstance(raw, list) else str(raw).split(",")) if n.strip()]
        excl = set().union(*label_id_sets(st, names)) if names else set()
        preds.append(lambda i: not any(x in excl for x in i["labels"]))
    if ctx.has("search"):
        q = ctx.s("search").lower()
        fields = ctx.lst("in") or ["title", "description"]
        preds.append(lambda i: any(q in (i.get(f) or "").lower() for f in fields if f in ("title", "description")))
    if ctx.has("iids"):
        iids = set(ctx.ints("iids") or [])
        preds.append(lambda i: i["iid"] in iids)
    for name, field, op in (("created_after", "created_at", ">="), ("created_before", "created_at", "<="),
                            ("updated_after", "updated_at", ">="), ("updated_before", "updated_at", "<=")):
        if ctx.has(name):
            t = parse_time(ctx.s(name), name)
            if op == ">=":
                preds.append(lambda i, f=field, t=t: i[f] >= t)
            else:
                preds.append(lambda i, f=field, t=t: i[f] <= t)
    if ctx.has("confidential"):
        conf = ctx.b("confidential")
        preds.append(lambda i: i["confidential"] == conf)
    if ctx.has("assignee_id"):
        a = ctx.s("assignee_id")
        if a.lower() == "none":
            preds.append(lambda i: not i["assignee_ids"])
        elif a.lower() == "any":
            preds.append(lambda i: bool(i["assignee_ids"]))
        else:
            aid = ctx.i("assignee_id")
            preds.append(lambda i: aid in i["assignee_ids"])
    if ctx.has("assignee_username"):
        names = {n.lower() for n in (ctx.lst("assignee_username") or [])}
        ids = {u["id"] for u in st.users.values() if u["username"].lower() in names}
        preds.append(lambda i: bool(ids & set(i["assignee_ids"])))
    if ctx.has("author_id"):
        aid = ctx.i("author_id")
        preds.append(lambda i: i["author_id"] == aid)
    if ctx.has("author_username"):
        u = st.user_ref(ctx.s("author_username"))
        preds.append(lambda i: u is not None and i["author_id"] == u["id"])
    if ctx.has("issue_type"):
        t = ctx.s("issue_type")
        preds.append(lambda i: i["issue_type"] == t)
    if ctx.has("milestone") and ctx.s("milestone").lower() not in ("none", "0"):
        preds.append(lambda i: False)   # no milestones in the double
    scope = ctx.s("scope", "all")
    if scope == "created_by_me" or scope == "created-by-me":
        uid = ctx.user["id"]
        preds.append(lambda i: i["author_id"] == uid)
    elif scope in ("assigned_to_me", "assigned-to-me"):
        uid = ctx.user["id"]
        preds.append(lambda i: uid in i["assignee_ids"])
    elif scope != "all":
        raise bad_value("scope")
    if not preds:
        return lambda i: True
    if len(preds) == 1:
        return preds[0]
    return lambda i: all(p(i) for p in preds)


def list_issues(ctx, projects, keyset_allowed=False, full_ref=False):
    st = ctx.st
    order_by = ctx.s("order_by", "created_at")
    sort = ctx.s("sort", "desc")
    if order_by not in ISSUE_ORDERS:
        raise bad_value("order_by")
    if sort not in ("asc", "desc"):
        raise bad_value("sort")
    desc = sort == "desc"
    pred = issue_predicate(ctx)
    details = ctx.b("with_labels_details", False)

    def ser(i):
        return st.ser_issue(i, ctx.base, details, full_ref)
    keyset_supported = keyset_allowed and ctx.app.version >= (18, 3, 0)
    if keyset_supported and ctx.s("pagination") == "keyset":
        if order_by not in KEYSET_ISSUE_ORDERS:
            raise ApiError(405, {"error": "Keyset pagination is not yet available for this type of request"})
        items, keys = st.sorted_issues(projects[0]["id"], order_by, desc)
        return keyset_page(ctx, items, keys, pred, ser)
    if len(projects) == 1:
        # Paging through one filtered list is the common (benchmark) case: cache the
        # filtered list per query until the project's issues or labels change.
        pid = projects[0]["id"]
        fkey = (pid, order_by, desc, ctx.user["id"], tuple(sorted(
            (k, repr(v)) for k, v in ctx.params.items() if k not in ("page", "per_page"))))
        hit = st.filter_cache.get(fkey)
        if hit and hit[0] == st.version.get(pid, 0):
            filtered = hit[1]
        else:
            items, _ = st.sorted_issues(pid, order_by, desc)
            filtered = [i for i in items if pred(i)]
            if len(st.filter_cache) >= 256:
                st.filter_cache.clear()
            st.filter_cache[fkey] = (st.version.get(pid, 0), filtered)
    else:
        fn = st.issue_key_fn(order_by, desc)
        items = sorted((i for p in projects for i in st.issues_by_project[p["id"]].values()), key=fn)
        filtered = [i for i in items if pred(i)]
    return offset_page(ctx, filtered, ser, cap=OFFSET_CAP if keyset_supported else None)


@route("GET", P + "/issues")
def h_issues(ctx, pid):
    return list_issues(ctx, [ctx.project(pid)], keyset_allowed=True)


@route("GET", G + "/issues")
def h_group_issues(ctx, gid):
    g = ctx.group(gid)
    ids = ctx.st.group_tree(g["id"])
    projects = [p for p in ctx.st.projects.values() if p["group_id"] in ids]
    return list_issues(ctx, projects, full_ref=True)


@route("GET", "/issues")
def h_all_issues(ctx):
    if "scope" not in ctx.params:
        ctx.params["scope"] = "created_by_me"
    return list_issues(ctx, list(ctx.st.projects.values()), full_ref=True)


@route("GET", P + r"/issues/(?P<iid>[^/]+)")
def h_issue(ctx, pid, iid):
    _, iss = ctx.issue(pid, iid)
    return jresp(200, ctx.st.ser_issue(iss, ctx.base, ctx.b("with_labels_details", False)))


@route("POST", P + "/issues")
def h_issue_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("title")
    title = ctx.s("title")
    check_title(title)
    desc = ctx.s("description")
    check_description(desc)
    issue_type = ctx.s("issue_type", "issue")
    if issue_type not in ("issue", "incident", "test_case", "task"):
        raise bad_value("issue_type")
    created_at = parse_time(ctx.s("created_at"), "created_at")
    text, cmds = split_quick_actions(desc, st.qa_available("Issue", None))
    assignees = assignees_from(ctx) or []
    if st.cfg.tier != "premium":
        assignees = assignees[:1]
    fields = {"title": title, "description": text,
              "label_ids": st.label_ids_for(p, ctx.lst("labels") or []),
              "confidential": ctx.b("confidential", False), "assignee_ids": assignees,
              "due_date": parse_date(ctx.s("due_date")), "issue_type": issue_type,
              "discussion_locked": ctx.b("discussion_locked", False)}
    if ctx.has("iid"):
        fields["iid"] = ctx.i("iid")
    ts = created_at or st.tick()
    iss = st.create_issue(p, fields, ctx.user, ts=ts)
    if cmds:
        spec, _ = st.qa_spec("Issue", p, iss, cmds, ctx.user)
        st.update_issuable("Issue", iss, spec, ctx.user, ts)
    st.record_mentions(iss["title"], None, "issue_title", p, "Issue", iss)
    st.record_mentions(iss["description"], None, "issue_description", p, "Issue", iss)
    return jresp(201, st.ser_issue(iss, ctx.base))


ISSUE_UPDATE_KEYS = ["assignee_id", "assignee_ids", "confidential", "created_at", "description",
                     "discussion_locked", "due_date", "labels", "add_labels", "remove_labels",
                     "milestone_id", "state_event", "title", "issue_type", "updated_at", "weight",
                     "epic_id", "epic_iid"]


@route("PUT", P + r"/issues/(?P<iid>[^/]+)")
def h_issue_update(ctx, pid, iid):
    st = ctx.st
    p, iss = ctx.issue(pid, iid)
    if not any(ctx.has(k) for k in ISSUE_UPDATE_KEYS):
        raise ApiError(400, {"error": ", ".join(ISSUE_UPDATE_KEYS) +
                             " are missing, at least one parameter must be provided"})
    spec, cmds = {}, []
    old_title, old_desc = iss["title"], iss["description"]
    if ctx.has("title"):
        t = ctx.s("title")
        check_title(t)
        spec["title"] = t
    if ctx.has("description"):
        d = ctx.s("description") or ""
        check_description(d)
        spec["description"], cmds = split_quick_actions(d, st.qa_available("Issue", iss))
    if ctx.has("labels"):
        spec["label_ids"] = st.label_ids_for(p, ctx.lst("labels") or [])
    if ctx.has("add_labels"):
        spec["add_label_ids"] = st.label_ids_for(p, ctx.lst("add_labels") or [])
    if ctx.has("remove_labels"):
        spec["remove_label_ids"] = st.label_ids_for(p, ctx.lst("remove_labels") or [], create=False)
    if ctx.has("state_event"):
        ev = ctx.s("state_event")
        if ev not in ("close", "reopen"):
            raise bad_value("state_event")
        spec["state_event"] = ev
    if ctx.has("confidential"):
        spec["confidential"] = ctx.b("confidential")
    a = assignees_from(ctx)
    if a is not None:
        spec["assignee_ids"] = a
    if ctx.has("discussion_locked"):
        spec["discussion_locked"] = ctx.b("discussion_locked")
    if ctx.has("due_date"):
        spec["due_date"] = parse_date(ctx.s("due_date"))
    if ctx.has("issue_type"):
        spec["issue_type"] = ctx.s("issue_type")
    ts = st.tick()
    st.update_issuable("Issue", iss, spec, ctx.user, ts)
    if cmds:
        qspec, _ = st.qa_spec("Issue", p, iss, cmds, ctx.user)
        st.update_issuable("Issue", iss, qspec, ctx.user, ts)
    if iss["title"] != old_title:
        st.record_mentions(iss["title"], old_title, "issue_title", p, "Issue", iss)
    if iss["description"] != old_desc:
        st.record_mentions(iss["description"], old_desc, "issue_description", p, "Issue", iss)
    return jresp(200, st.ser_issue(iss, ctx.base, ctx.b("with_labels_details", False)))


@route("DELETE", P + r"/issues/(?P<iid>[^/]+)")
def h_issue_delete(ctx, pid, iid):
    _, iss = ctx.issue(pid, iid)
    ctx.st.delete_issue(iss)
    return Resp(204)


@route("PUT", P + r"/issues/(?P<iid>[^/]+)/reorder")
def h_issue_reorder(ctx, pid, iid):
    st = ctx.st
    p, iss = ctx.issue(pid, iid)
    after_id, before_id = ctx.i("move_after_id"), ctx.i("move_before_id")
    if after_id is None and before_id is None:
        raise ApiError(422, {"message": "422 Unprocessable Entity"})

    def find(issue_id):
        # move_*_id are global issue ids (not iids) of issues in the same project
        if issue_id is None:
            return None
        other = st.issues.get(issue_id)
        if other is None or other is iss or other["project_id"] != p["id"]:
            raise ApiError(422, {"message": "422 Unprocessable Entity"})
        return other
    st.reorder_issue(iss, find(before_id), find(after_id))
    return jresp(200, st.ser_issue(iss, ctx.base))


@route("GET", P + r"/(?P<kind>issues|merge_requests)/(?P<iid>[^/]+)/resource_label_events")
def h_label_events(ctx, pid, kind, iid):
    p, obj, knd = ctx.noteable(pid, kind, iid)
    evs = ctx.st.label_events.get((knd, obj["id"]), [])
    return offset_page(ctx, evs, lambda e: ctx.st.ser_label_event(e, ctx.base))


@route("GET", P + r"/(?P<kind>issues|merge_requests)/(?P<iid>[^/]+)/resource_label_events/(?P<eid>\d+)")
def h_label_event(ctx, pid, kind, iid, eid):
    p, obj, knd = ctx.noteable(pid, kind, iid)
    for e in ctx.st.label_events.get((knd, obj["id"]), []):
        if e["id"] == int(eid):
            return jresp(200, ctx.st.ser_label_event(e, ctx.base))
    raise not_found()


@route("GET", P + r"/(?P<kind>issues|merge_requests)/(?P<iid>[^/]+)/resource_state_events")
def h_state_events(ctx, pid, kind, iid):
    p, obj, knd = ctx.noteable(pid, kind, iid)
    evs = ctx.st.state_events.get((knd, obj["id"]), [])
    return offset_page(ctx, evs, lambda e: ctx.st.ser_state_event(e, ctx.base))


# --------------------------------------------------------------------------
# Notes (issues and merge requests)
# --------------------------------------------------------------------------

NOTES = P + r"/(?P<kind>issues|merge_requests)/(?P<iid>[^/]+)/notes"


@route("GET", NOTES)
def h_notes(ctx, pid, kind, iid):
    st = ctx.st
    p, obj, knd = ctx.noteable(pid, kind, iid)
    order_by = ctx.s("order_by", "created_at")
    if order_by not in ("created_at", "updated_at"):
        raise bad_value("order_by")
    sort = ctx.s("sort", "desc")
    if sort not in ("asc", "desc"):
        raise bad_value("sort")
    notes = sorted(st.notes_of(knd, obj), key=lambda n: (n[order_by], n["id"]), reverse=sort == "desc")
    return offset_page(ctx, notes, lambda n: st.ser_note(n, ctx.base))


@route("POST", NOTES)
def h_note_create(ctx, pid, kind, iid):
    st = ctx.st
    p, obj, knd = ctx.noteable(pid, kind, iid)
    ctx.require("body")
    body = ctx.s("body")
    if not body.strip():
        raise ApiError(400, {"error": "body is empty"})
    if len(body) > MAX_NOTE:
        raise validation("note", f"is too long (maximum is {MAX_NOTE} characters)")
    internal = ctx.b("internal", None)
    if internal is None:
        internal = ctx.b("confidential", False)
    created_at = parse_time(ctx.s("created_at"), "created_at")
    text, cmds = split_quick_actions(body, st.qa_available(knd, obj))
    ts = st.tick()
    changes, summary = {}, []
    if cmds:
        spec, summary = st.qa_spec(knd, p, obj, cmds, ctx.user)
        st.update_issuable(knd, obj, spec, ctx.user, ts)
        changes = {k: v for k, v in spec.items() if not k.startswith("_")}
    if cmds and not text.strip():
        return jresp(202, {"commands_changes": changes, "summary": summary})
    n = st.create_note(knd, obj, text, ctx.user, created_at or ts, internal=internal)
    obj["updated_at"] = ts
    st.bump(p["id"])
    st.record_mentions(text, None, "note", p, knd, obj, n)
    d = st.ser_note(n, ctx.base)
    d["commands_changes"] = changes
    return jresp(201, d)


def find_note(ctx, knd, obj, nid):
    try:
        n = ctx.st.notes.get(int(nid))
    except ValueError:
        raise invalid("note_id") from None
    if not n or n["noteable_type"] != knd or n["noteable_id"] != obj["id"]:
        raise not_found("Note")
    return n


@route("GET", NOTES + r"/(?P<nid>[^/]+)")
def h_note(ctx, pid, kind, iid, nid):
    p, obj, knd = ctx.noteable(pid, kind, iid)
    return jresp(200, ctx.st.ser_note(find_note(ctx, knd, obj, nid), ctx.base))


@route("PUT", NOTES + r"/(?P<nid>[^/]+)")
def h_note_update(ctx, pid, kind, iid, nid):
    st = ctx.st
    p, obj, knd = ctx.noteable(pid, kind, iid)
    n = find_note(ctx, knd, obj, nid)
    if n["system"]:
        raise forbidden()
    if not ctx.has("body") and not ctx.has("confidential") and not ctx.has("internal"):
        raise missing("body")
    if ctx.has("body"):
        body = ctx.s("body")
        if not body.strip():
            raise ApiError(400, {"error": "body is empty"})
        if len(body) > MAX_NOTE:
            raise validation("note", f"is too long (maximum is {MAX_NOTE} characters)")
        text, cmds = split_quick_actions(body, st.qa_available(knd, obj))
        ts = st.tick()
        if cmds:
            spec, _ = st.qa_spec(knd, p, obj, cmds, ctx.user)
            st.update_issuable(knd, obj, spec, ctx.user, ts)
        old = n["body"]
        n["body"] = text
        n["updated_at"] = ts
        st.record_mentions(text, old, "note", p, knd, obj, n)
    return jresp(200, st.ser_note(n, ctx.base))


@route("DELETE", NOTES + r"/(?P<nid>[^/]+)")
def h_note_delete(ctx, pid, kind, iid, nid):
    p, obj, knd = ctx.noteable(pid, kind, iid)
    ctx.st.delete_note(obj, find_note(ctx, knd, obj, nid))
    return Resp(204)


# --------------------------------------------------------------------------
# Labels (project and group)
# --------------------------------------------------------------------------

def label_owner(ctx, scope, oid):
    """(owner labels dict, project or None, group or None, labels visible for lookup)."""
    st = ctx.st
    if scope == "projects":
        p = ctx.project(oid)
        return st.project_labels[p["id"]], p, None, st.available_labels(p)
    g = ctx.group(oid)
    vis = {}
    for gid in reversed(st.group_chain(g["id"])):
        vis.update(st.group_labels[gid])
    return st.group_labels[g["id"]], None, g, vis


def find_label(ctx, visible, ident):
    lab = None
    if ident.isdigit():
        lab = ctx.st.labels.get(int(ident))
        if lab and visible.get(lab["name"]) is not lab:
            lab = None
    if lab is None:
        lab = visible.get(ident)
    if lab is None:
        raise not_found("Label")
    return lab


def owner_pids(st, project, group):
    if project:
        return [project["id"]]
    tree = st.group_tree(group["id"])
    return [p["id"] for p in st.projects.values() if p["group_id"] in tree]


@route("GET", OWNER + "/labels")
def h_labels(ctx, scope, oid):
    st = ctx.st
    own, p, g, visible = label_owner(ctx, scope, oid)
    labs = list(visible.values()) if ctx.b("include_ancestor_groups", True) else list(own.values())
    if ctx.has("search"):
        q = ctx.s("search").lower()
        labs = [l for l in labs if q in l["name"].lower()]
    labs.sort(key=lambda l: (l["name"].lower(), l["id"]))
    counts = st.label_counts(owner_pids(st, p, g))
    return offset_page(ctx, labs, lambda l: st.ser_label(l, counts))


@route("POST", OWNER + "/labels")
def h_label_create(ctx, scope, oid):
    st = ctx.st
    own, p, g, visible = label_owner(ctx, scope, oid)
    ctx.require("name", "color")
    name = ctx.s("name").strip()
    if not name:
        raise validation("title", "can't be blank")
    if "," in name or len(name) > 255:
        raise validation("title", "is invalid")
    color = normalize_color(ctx.s("color"))
    if color is None:
        raise validation("color", "must be a valid color code")
    if name in own:
        raise ApiError(409, {"message": "Label already exists"})
    lab = st.add_label(name, color, ctx.s("description"), ctx.i("priority"), project=p, group=g)
    return jresp(201, st.ser_label(lab, {}))


def label_update(ctx, own, lab):
    st = ctx.st
    keys = ("new_name", "color", "description", "priority")
    if not any(ctx.has(k) for k in keys):
        raise ApiError(400, {"error": "new_name, color, description, priority are missing, "
                                      "at least one parameter must be provided"})
    if ctx.has("new_name"):
        new = (ctx.s("new_name") or "").strip()
        if not new:
            raise validation("title", "can't be blank")
        if "," in new:
            raise validation("title", "is invalid")
        if new != lab["name"] and new in own:
            raise validation("title", "has already been taken")
        own.pop(lab["name"], None)
        lab["name"] = new
        own[new] = lab
    if ctx.has("color"):
        color = normalize_color(ctx.s("color"))
        if color is None:
            raise validation("color", "must be a valid color code")
        lab["color"] = color
    if ctx.has("description"):
        lab["description"] = ctx.s("description") or None
    if ctx.has("priority"):
        lab["priority"] = ctx.i("priority")
    for pid in st.projects:
        st.bump(pid)
    return jresp(200, st.ser_label(lab, st.label_counts(owner_pids(st, st.projects.get(lab["project_id"]),
                                                                    st.groups.get(lab["group_id"])))))


@route("GET", OWNER + r"/labels/(?P<lid>[^/]+)")
def h_label(ctx, scope, oid, lid):
    own, p, g, visible = label_owner(ctx, scope, oid)
    lab = find_label(ctx, visible, lid)
    return jresp(200, ctx.st.ser_label(lab, ctx.st.label_counts(owner_pids(ctx.st, p, g))))


@route("PUT", OWNER + r"/labels/(?P<lid>[^/]+)")
def h_label_put(ctx, scope, oid, lid):
    own, p, g, visible = label_owner(ctx, scope, oid)
    return label_update(ctx, own, find_label(ctx, own, lid))


@route("PUT", OWNER + "/labels")
def h_label_put_legacy(ctx, scope, oid):
    own, p, g, visible = label_owner(ctx, scope, oid)
    ident = ctx.s("label_id") or ctx.s("name")
    if ident is None:
        raise ApiError(400, {"error": "label_id, name are missing, exactly one parameter must be provided"})
    return label_update(ctx, own, find_label(ctx, own, ident))


@route("DELETE", OWNER + r"/labels/(?P<lid>[^/]+)")
def h_label_delete(ctx, scope, oid, lid):
    own, p, g, visible = label_owner(ctx, scope, oid)
    ctx.st.delete_label(find_label(ctx, own, lid))
    return Resp(204)


@route("DELETE", OWNER + "/labels")
def h_label_delete_legacy(ctx, scope, oid):
    own, p, g, visible = label_owner(ctx, scope, oid)
    ident = ctx.s("label_id") or ctx.s("name")
    if ident is None:
        raise ApiError(400, {"error": "label_id, name are missing, exactly one parameter must be provided"})
    ctx.st.delete_label(find_label(ctx, own, ident))
    return Resp(204)


# --------------------------------------------------------------------------
# Boards and lists (project and group)
# --------------------------------------------------------------------------

def board_owner(ctx, scope, oid):
    if scope == "projects":
        p = ctx.project(oid)
        return p, None, ctx.st.available_labels(p)
    g = ctx.group(oid)
    vis = {}
    for gid in reversed(ctx.st.group_chain(g["id"])):
        vis.update(ctx.st.group_labels[gid])
    return None, g, vis


def owner_boards(st, p, g):
    return sorted((b for b in st.boards.values()
                   if (p and b["project_id"] == p["id"]) or (g and b["group_id"] == g["id"])),
                  key=lambda b: b["id"])


def find_board(ctx, p, g, bid):
    for b in owner_boards(ctx.st, p, g):
        if str(b["id"]) == bid:
            return b
    raise not_found("Board")


@route("GET", OWNER + "/boards")
def h_boards(ctx, scope, oid):
    st = ctx.st
    p, g, _ = board_owner(ctx, scope, oid)
    boards = owner_boards(st, p, g)
    if not boards:
        boards = [st.create_board("Development", project=p, group=g)]
    return offset_page(ctx, boards, lambda b: st.ser_board(b, ctx.base))


@route("POST", OWNER + "/boards")
def h_board_create(ctx, scope, oid):
    p, g, _ = board_owner(ctx, scope, oid)
    if g and ctx.app.tier != "premium":
        # GitLab: forbidden! unless board_parent.multiple_issue_boards_available?
        raise ApiError(403, {"message": "403 Forbidden"})
    ctx.require("name")
    b = ctx.st.create_board(ctx.s("name"), project=p, group=g)
    return jresp(201, ctx.st.ser_board(b, ctx.base))


@route("GET", OWNER + r"/boards/(?P<bid>[^/]+)")
def h_board(ctx, scope, oid, bid):
    p, g, _ = board_owner(ctx, scope, oid)
    return jresp(200, ctx.st.ser_board(find_board(ctx, p, g, bid), ctx.base))


@route("PUT", OWNER + r"/boards/(?P<bid>[^/]+)")
def h_board_update(ctx, scope, oid, bid):
    p, g, _ = board_owner(ctx, scope, oid)
    b = find_board(ctx, p, g, bid)
    if ctx.has("name"):
        b["name"] = ctx.s("name")
    for k in ("hide_backlog_list", "hide_closed_list"):
        if ctx.has(k):
            b[k] = ctx.b(k)
    return jresp(200, ctx.st.ser_board(b, ctx.base))


@route("DELETE", OWNER + r"/boards/(?P<bid>[^/]+)")
def h_board_delete(ctx, scope, oid, bid):
    p, g, _ = board_owner(ctx, scope, oid)
    b = find_board(ctx, p, g, bid)
    for lid in list(b["list_ids"]):
        ctx.st.lists.pop(lid, None)
    ctx.st.boards.pop(b["id"], None)
    return Resp(204)


@route("GET", OWNER + r"/boards/(?P<bid>[^/]+)/lists")
def h_lists(ctx, scope, oid, bid):
    p, g, _ = board_owner(ctx, scope, oid)
    b = find_board(ctx, p, g, bid)
    lists = [ctx.st.lists[x] for x in b["list_ids"] if x in ctx.st.lists]
    return offset_page(ctx, lists, ctx.st.ser_list)


@route("POST", OWNER + r"/boards/(?P<bid>[^/]+)/lists")
def h_list_create(ctx, scope, oid, bid):
    st = ctx.st
    p, g, visible = board_owner(ctx, scope, oid)
    b = find_board(ctx, p, g, bid)
    ctx.require("label_id")
    lab = st.labels.get(ctx.i("label_id"))
    if not lab or visible.get(lab["name"]) is not lab:
        raise ApiError(400, {"message": {"error": "Label not found!"}})
    if any(st.lists[x]["label_id"] == lab["id"] for x in b["list_ids"] if x in st.lists):
        raise ApiError(400, {"message": {"error": "Label has already been taken"}})
    lst = {"id": st.next_id("list"), "board_id": b["id"], "label_id": lab["id"], "position": len(b["list_ids"])}
    st.lists[lst["id"]] = lst
    b["list_ids"].append(lst["id"])
    return jresp(201, st.ser_list(lst))


def find_list(ctx, b, lid):
    for x in b["list_ids"]:
        if str(x) == lid and x in ctx.st.lists:
            return ctx.st.lists[x]
    raise not_found("List")


@route("GET", OWNER + r"/boards/(?P<bid>[^/]+)/lists/(?P<lid>[^/]+)")
def h_list(ctx, scope, oid, bid, lid):
    p, g, _ = board_owner(ctx, scope, oid)
    return jresp(200, ctx.st.ser_list(find_list(ctx, find_board(ctx, p, g, bid), lid)))


@route("PUT", OWNER + r"/boards/(?P<bid>[^/]+)/lists/(?P<lid>[^/]+)")
def h_list_update(ctx, scope, oid, bid, lid):
    p, g, _ = board_owner(ctx, scope, oid)
    b = find_board(ctx, p, g, bid)
    lst = find_list(ctx, b, lid)
    ctx.require("position")
    pos = max(0, min(ctx.i("position"), len(b["list_ids"]) - 1))
    b["list_ids"].remove(lst["id"])
    b["list_ids"].insert(pos, lst["id"])
    for n, x in enumerate(b["list_ids"]):
        ctx.st.lists[x]["position"] = n
    return jresp(200, ctx.st.ser_list(lst))


@route("DELETE", OWNER + r"/boards/(?P<bid>[^/]+)/lists/(?P<lid>[^/]+)")
def h_list_delete(ctx, scope, oid, bid, lid):
    p, g, _ = board_owner(ctx, scope, oid)
    ctx.st.delete_list(find_list(ctx, find_board(ctx, p, g, bid), lid))
    return Resp(204)


# --------------------------------------------------------------------------
# Merge requests
# --------------------------------------------------------------------------

MR_ORDERS = {"created_at", "updated_at", "title", "merged_at"}


@route("GET", P + "/merge_requests")
def h_mrs(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    state = ctx.s("state", "all")
    if state not in ("opened", "closed", "locked", "merged", "all"):
        raise bad_value("state")
    items = list(st.mrs_by_project[p["id"]].values())
    if state != "all":
        items = [m for m in items if m["state"] == state]
    for key in ("source_branch", "target_branch"):
        if ctx.has(key):
            v = ctx.s(key)
            items = [m for m in items if m[key] == v]
    labels = ctx.lst("labels")
    if labels:
        if [l.lower() for l in labels] == ["none"]:
            items = [m for m in items if not m["labels"]]
        elif [l.lower() for l in labels] == ["any"]:
            items = [m for m in items if m["labels"]]
        else:
            for ids in label_id_sets(st, labels):
                items = [m for m in items if any(x in ids for x in m["labels"])]
    if ctx.has("search"):
        q = ctx.s("search").lower()
        items = [m for m in items if q in m["title"].lower() or q in (m["description"] or "").lower()]
    if ctx.has("iids"):
        iids = set(ctx.ints("iids") or [])
        items = [m for m in items if m["iid"] in iids]
    if ctx.has("author_id"):
        aid = ctx.i("author_id")
        items = [m for m in items if m["author_id"] == aid]
    if ctx.has("updated_after"):
        t = parse_time(ctx.s("updated_after"), "updated_after")
        items = [m for m in items if m["updated_at"] >= t]
    order_by = ctx.s("order_by", "created_at")
    if order_by not in MR_ORDERS:
        raise bad_value("order_by")
    items.sort(key=lambda m: (m[order_by] if order_by != "title" else m["title"].lower(), m["id"])
               if order_by != "merged_at" else (m["merged_at"] or 0, m["id"]),
               reverse=ctx.s("sort", "desc") == "desc")
    heads = st.repo(p).heads()
    return offset_page(ctx, items, lambda m: st.ser_mr(m, ctx.base, heads,
                                                         label_details=ctx.b("with_labels_details", False)))


@route("POST", P + "/merge_requests")
def h_mr_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("source_branch", "target_branch", "title")
    src, tgt, title = ctx.s("source_branch"), ctx.s("target_branch"), ctx.s("title")
    check_title(title)
    desc = ctx.s("description")
    check_description(desc)
    if ctx.has("target_project_id") and ctx.i("target_project_id") != p["id"]:
        raise ApiError(422, {"message": ["Target project is not supported by the double"]})
    if src == tgt:
        raise ApiError(422, {"message": ["You can't use same project/branch for source and target"]})
    repo = st.repo(p)
    for field, branch in (("source_branch", src), ("target_branch", tgt)):
        if repo.branch_sha(branch) is None:
            raise validation(field, "does not exist")
    for m in st.mrs_by_project[p["id"]].values():
        if m["state"] == "opened" and m["source_branch"] == src and m["target_branch"] == tgt:
            raise ApiError(409, {"message": [f"Another open merge request already exists for this source branch: !{m['iid']}"]})
    text, cmds = split_quick_actions(desc, st.qa_available("MergeRequest", None))
    assignees = assignees_from(ctx) or []
    ts = st.tick()
    mr = st.create_mr(p, {"title": title, "description": text, "source_branch": src, "target_branch": tgt,
                          "label_ids": st.label_ids_for(p, ctx.lst("labels") or []),
                          "assignee_ids": assignees,
                          "remove_source_branch": ctx.b("remove_source_branch", False),
                          "squash": ctx.b("squash", False)}, ctx.user, ts)
    if cmds:
        spec, _ = st.qa_spec("MergeRequest", p, mr, cmds, ctx.user)
        st.update_issuable("MergeRequest", mr, spec, ctx.user, ts)
    st.record_mentions(mr["description"], None, "merge_request_description", p, "MergeRequest", mr)
    return jresp(201, st.ser_mr(mr, ctx.base, single=True))


@route("GET", P + r"/merge_requests/(?P<iid>[^/]+)")
def h_mr(ctx, pid, iid):
    _, mr = ctx.mr(pid, iid)
    return jresp(200, ctx.st.ser_mr(mr, ctx.base, single=True))


MR_UPDATE_KEYS = ["add_labels", "assignee_id", "assignee_ids", "description", "discussion_locked",
                  "labels", "milestone_id", "remove_labels", "remove_source_branch", "reviewer_ids",
                  "squash", "state_event", "target_branch", "title", "allow_collaboration",
                  "allow_maintainer_to_push"]


@route("PUT", P + r"/merge_requests/(?P<iid>[^/]+)")
def h_mr_update(ctx, pid, iid):
    st = ctx.st
    p, mr = ctx.mr(pid, iid)
    if not any(ctx.has(k) for k in MR_UPDATE_KEYS):
        raise ApiError(400, {"error": ", ".join(MR_UPDATE_KEYS) +
                             " are missing, at least one parameter must be provided"})
    spec, cmds = {}, []
    old_desc = mr["description"]
    if ctx.has("title"):
        t = ctx.s("title")
        check_title(t)
        spec["title"] = t
    if ctx.has("description"):
        d = ctx.s("description") or ""
        check_description(d)
        spec["description"], cmds = split_quick_actions(d, st.qa_available("MergeRequest", mr))
    if ctx.has("labels"):
        spec["label_ids"] = st.label_ids_for(p, ctx.lst("labels") or [])
    if ctx.has("add_labels"):
        spec["add_label_ids"] = st.label_ids_for(p, ctx.lst("add_labels") or [])
    if ctx.has("remove_labels"):
        spec["remove_label_ids"] = st.label_ids_for(p, ctx.lst("remove_labels") or [], create=False)
    if ctx.has("state_event"):
        ev = ctx.s("state_event")
        if ev not in ("close", "reopen"):
            raise bad_value("state_event")
        if mr["state"] == "merged":
            raise ApiError(422, {"message": "Cannot change the state of a merged merge request"})
        spec["state_event"] = ev
    a = assignees_from(ctx)
    if a is not None:
        spec["assignee_ids"] = a
    if ctx.has("target_branch"):
        tb = ctx.s("target_branch")
        if st.repo(p).branch_sha(tb) is None:
            raise validation("target_branch", "does not exist")
        spec["target_branch"] = tb
    if ctx.has("remove_source_branch"):
        spec["force_remove_source_branch"] = ctx.b("remove_source_branch")
    if ctx.has("squash"):
        spec["squash"] = ctx.b("squash")
    if ctx.has("discussion_locked"):
        spec["discussion_locked"] = ctx.b("discussion_locked")
    ts = st.tick()
    st.update_issuable("MergeRequest", mr, spec, ctx.user, ts)
    if cmds:
        qspec, _ = st.qa_spec("MergeRequest", p, mr, cmds, ctx.user)
        st.update_issuable("MergeRequest", mr, qspec, ctx.user, ts)
    if mr["description"] != old_desc:
        st.refresh_mr_links(p, mr)
        st.record_mentions(mr["description"], old_desc, "merge_request_description", p, "MergeRequest", mr)
    return jresp(200, st.ser_mr(mr, ctx.base, single=True))


@route("DELETE", P + r"/merge_requests/(?P<iid>[^/]+)")
def h_mr_delete(ctx, pid, iid):
    p, mr = ctx.mr(pid, iid)
    ctx.st.mrs.pop(mr["id"], None)
    ctx.st.mrs_by_project[p["id"]].pop(mr["iid"], None)
    for i in mr["closes"]:
        if i in ctx.st.issues:
            ctx.st.issues[i]["mr_ids"].discard(mr["id"])
    return Resp(204)


@route("PUT", P + r"/merge_requests/(?P<iid>[^/]+)/merge")
def h_mr_merge(ctx, pid, iid):
    st = ctx.st
    p, mr = ctx.mr(pid, iid)
    if mr["state"] != "opened" or is_draft_title(mr["title"]):
        raise ApiError(405, {"message": "405 Method Not Allowed"})
    repo = st.repo(p)
    src = repo.branch_sha(mr["source_branch"])
    if ctx.has("sha") and ctx.s("sha") != src:
        raise ApiError(409, {"message": f"SHA does not match HEAD of source branch: {src}"})
    opts = {}
    if ctx.has("should_remove_source_branch"):
        opts["should_remove_source_branch"] = ctx.b("should_remove_source_branch")
    if ctx.has("merge_commit_message"):
        opts["merge_commit_message"] = ctx.s("merge_commit_message")
    if ctx.b("auto_merge", False) or ctx.b("merge_when_pipeline_succeeds", False):
        head = st.latest_pipeline(p["id"], ref=mr["source_branch"])
        if head and head["status"] in ACTIVE_STATUSES and head["sha"] == src:
            mr["merge_when_pipeline_succeeds"] = True
            mr["merge_user_id"] = ctx.user["id"]
            if "should_remove_source_branch" in opts:
                mr["should_remove_source_branch"] = opts["should_remove_source_branch"]
                mr["force_remove_source_branch"] = opts["should_remove_source_branch"]
            mr["updated_at"] = st.tick()
            return jresp(200, st.ser_mr(mr, ctx.base, single=True))
    try:
        st.merge_mr(p, mr, ctx.user, opts)
    except GitError as e:
        raise ApiError(422, {"message": f"Branch cannot be merged: {e}"}) from None
    return jresp(200, st.ser_mr(mr, ctx.base, single=True))


@route("POST", P + r"/merge_requests/(?P<iid>[^/]+)/cancel_merge_when_pipeline_succeeds")
def h_mr_cancel_mwps(ctx, pid, iid):
    p, mr = ctx.mr(pid, iid)
    if not mr["merge_when_pipeline_succeeds"]:
        raise ApiError(406, {"message": "406 Not Acceptable"})
    mr["merge_when_pipeline_succeeds"] = False
    mr["merge_user_id"] = None
    return jresp(201, ctx.st.ser_mr(mr, ctx.base, single=True))


@route("GET", P + r"/merge_requests/(?P<iid>[^/]+)/pipelines")
def h_mr_pipelines(ctx, pid, iid):
    st = ctx.st
    p, mr = ctx.mr(pid, iid)
    refs = {mr["source_branch"], f"refs/merge-requests/{mr['iid']}/head"}
    pls = sorted((pl for pl in st.pipelines.values() if pl["project_id"] == p["id"] and pl["ref"] in refs),
                 key=lambda pl: -pl["id"])
    return offset_page(ctx, pls, lambda pl: st.ser_pipeline_basic(pl, ctx.base))


@route("POST", P + r"/merge_requests/(?P<iid>[^/]+)/pipelines")
def h_mr_pipeline_create(ctx, pid, iid):
    st = ctx.st
    p, mr = ctx.mr(pid, iid)
    pl = create_ci_pipeline(ctx, p, mr["source_branch"], source="merge_request_event")
    return jresp(201, st.ser_pipeline(pl, ctx.base))


@route("PUT", P + r"/merge_requests/(?P<iid>[^/]+)/rebase")
def h_mr_rebase(ctx, pid, iid):
    ctx.mr(pid, iid)
    return jresp(202, {"rebase_in_progress": True})


route("POST", P + r"/merge_requests/(?P<iid>[^/]+)/rebase")(h_mr_rebase)


# --------------------------------------------------------------------------
# Repository: branches, commits, tags, files, tree, protected branches
# --------------------------------------------------------------------------

def resolve_ref(ctx, p, ref, what="Commit"):
    sha = ctx.st.repo(p).resolve(ref)
    if not sha:
        raise not_found(what)
    return sha


def branch_page(ctx, p, names_shas):
    st = ctx.st
    repo = st.repo(p)
    page, per_page = ctx.page(), ctx.per_page()
    start = (page - 1) * per_page
    chunk = names_shas[start:start + per_page]
    default_sha = repo.branch_sha(p["default_branch"])
    merged = repo.merged_into(default_sha)
    out = []
    for name, sha in chunk:
        out.append(st.ser_branch(p, name, sha, ctx.base, st.commit_entity(p, sha, ctx.base),
                                 name in merged and name != p["default_branch"]))
    return jresp(200, out, page_headers(ctx, page, per_page, len(names_shas), start + per_page < len(names_shas)))


@route("GET", P + "/repository/branches")
def h_branches(ctx, pid):
    p = ctx.project(pid)
    heads = sorted(ctx.st.repo(p).heads().items())
    if ctx.has("search"):
        q = ctx.s("search")
        if q.startswith("^"):
            heads = [h for h in heads if h[0].startswith(q[1:])]
        elif q.endswith("$"):
            heads = [h for h in heads if h[0].endswith(q[:-1])]
        else:
            heads = [h for h in heads if q.lower() in h[0].lower()]
    if ctx.has("regex"):
        try:
            rx = re.compile(ctx.s("regex"))
        except re.error:
            raise invalid("regex") from None
        heads = [h for h in heads if rx.search(h[0])]
    return branch_page(ctx, p, heads)


@route("GET", P + r"/repository/branches/(?P<branch>[^/]+)")
def h_branch(ctx, pid, branch):
    st = ctx.st
    p = ctx.project(pid)
    repo = st.repo(p)
    sha = repo.branch_sha(branch)
    if not sha:
        raise not_found("Branch")
    merged = branch != p["default_branch"] and branch in repo.merged_into(repo.branch_sha(p["default_branch"]))
    return jresp(200, st.ser_branch(p, branch, sha, ctx.base, st.commit_entity(p, sha, ctx.base), merged))


@route("POST", P + "/repository/branches")
def h_branch_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("branch", "ref")
    name, ref = ctx.s("branch"), ctx.s("ref")
    repo = st.repo(p)
    if not repo.valid_branch_name(name):
        raise ApiError(400, {"message": "Branch name is invalid"})
    if repo.branch_sha(name):
        raise ApiError(400, {"message": "Branch already exists"})
    sha = repo.resolve(ref)
    if not sha:
        raise ApiError(400, {"message": f"Invalid reference name: {ref}"})
    repo.update_ref(f"refs/heads/{name}", sha, ZERO_SHA)
    return jresp(201, st.ser_branch(p, name, sha, ctx.base, st.commit_entity(p, sha, ctx.base), False))


@route("DELETE", P + r"/repository/branches/(?P<branch>[^/]+)")
def h_branch_delete(ctx, pid, branch):
    st = ctx.st
    p = ctx.project(pid)
    repo = st.repo(p)
    if not repo.branch_sha(branch):
        raise not_found("Branch")
    if branch == p["default_branch"]:
        raise ApiError(405, {"message": "The default branch of a project cannot be deleted."})
    if branch in st.protected[p["id"]]:
        raise ApiError(403, {"message": "Protected branch can't be deleted."})
    repo.delete_ref(f"refs/heads/{branch}")
    return Resp(204)


@route("GET", P + "/repository/commits")
def h_commits(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    repo = st.repo(p)
    page, per_page = ctx.page(), ctx.per_page()
    args = [f"--skip={(page - 1) * per_page}", f"--max-count={per_page + 1}"]
    if ctx.b("all", False):
        args.append("--all")
    else:
        ref = ctx.s("ref_name") or p["default_branch"]
        if not repo.resolve(ref):
            return jresp(200, [], page_headers(ctx, page, per_page, None, False))
        args.append(repo.resolve(ref))
    if ctx.has("since"):
        args.append(f"--since={iso(parse_time(ctx.s('since'), 'since'))}")
    if ctx.has("until"):
        args.append(f"--until={iso(parse_time(ctx.s('until'), 'until'))}")
    if ctx.b("first_parent", False):
        args.append("--first-parent")
    if ctx.s("order") == "topo":
        args.append("--topo-order")
    if ctx.has("author"):
        args.append(f"--author={ctx.s('author')}")
    if ctx.has("path"):
        args += ["--", ctx.s("path")]
    commits = repo.log(*args)
    has_next = len(commits) > per_page
    commits = commits[:per_page]
    with_stats = ctx.b("with_stats", False)
    out = []
    for c in commits:
        st.commit_cache[(p["id"], c["id"])] = c
        d = st.commit_entity(p, c["id"], ctx.base)
        if with_stats:
            d["stats"] = repo.stats(c["id"])
        out.append(d)
    return jresp(200, out, page_headers(ctx, page, per_page, None, has_next))


@route("GET", P + r"/repository/commits/(?P<sha>[^/]+)")
def h_commit(ctx, pid, sha):
    p = ctx.project(pid)
    full = resolve_ref(ctx, p, sha)
    return jresp(200, ctx.st.commit_entity(p, full, ctx.base, full=True))


def decode_content(content, encoding, where):
    if content is None:
        return b""
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=False)
        except (ValueError, TypeError):
            raise invalid(f"{where}[content]") from None
    if encoding not in (None, "", "text"):
        raise bad_value(f"{where}[encoding]")
    return str(content).encode("utf-8")


def is_protected(st, p, branch):
    for pat in st.protected[p["id"]]:
        if pat == branch or ("*" in pat and re.fullmatch(re.escape(pat).replace(r"\*", ".*"), branch)):
            return True
    return False


def commit_actions(ctx, p, branch, actions, message, start_ref=None, author=None):
    """Apply GitLab commit actions with git plumbing; return the new commit sha."""
    st = ctx.st
    repo = st.repo(p)
    if is_protected(st, p, branch):
        raise ApiError(403, {"message": "You are not allowed to push into this branch"})
    parent = repo.branch_sha(branch)
    new_branch = parent is None
    if new_branch:
        if start_ref:
            parent = repo.resolve(start_ref)
            if not parent:
                raise ApiError(400, {"message": f"Invalid reference name: {start_ref}"})
        elif repo.heads():
            raise ApiError(400, {"message": "You can only create or edit files when you are on a branch"})
    entries = repo.read_tree_entries(parent)
    dirs = set()
    for path in entries:
        parts = path.split("/")
        for n in range(1, len(parts)):
            dirs.add("/".join(parts[:n]))

    def add(path, mode, data):
        if path in dirs:
            raise ApiError(400, {"message": "A directory with this name already exists"})
        parts = path.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in entries:
                raise ApiError(400, {"message": "A file with this name already exists"})
            dirs.add("/".join(parts[:n]))
        entries[path] = (mode, repo.hash_blob(data))

    for n, a in enumerate(actions):
        where = f"actions[{n}]"
        if not isinstance(a, dict):
            raise invalid("actions")
        act = a.get("action")
        if act is None:
            raise missing(f"{where}[action]")
        if act not in ("create", "update", "delete", "move", "chmod"):
            raise bad_value(f"{where}[action]")
        path = (a.get("file_path") or "").strip("/")
        if not path:
            raise missing(f"{where}[file_path]")
        if ".." in path.split("/"):
            raise ApiError(400, {"message": "Path cannot include directory traversal"})
        enc = a.get("encoding")
        if act == "create":
            if path in entries:
                raise ApiError(400, {"message": "A file with this name already exists"})
            mode = "100755" if a.get("execute_filemode") in (True, "true") else "100644"
            add(path, mode, decode_content(a.get("content"), enc, where))
        elif act == "update":
            if path not in entries:
                raise ApiError(400, {"message": "A file with this name doesn't exist"})
            entries[path] = (entries[path][0], repo.hash_blob(decode_content(a.get("content"), enc, where)))
        elif act == "delete":
            if path not in entries:
                raise ApiError(400, {"message": "A file with this name doesn't exist"})
            del entries[path]
        elif act == "move":
            prev = (a.get("previous_path") or "").strip("/")
            if not prev:
                raise missing(f"{where}[previous_path]")
            if prev not in entries:
                raise ApiError(400, {"message": "A file with this name doesn't exist"})
            if path in entries and path != prev:
                raise ApiError(400, {"message": "A file with this name already exists"})
            mode, sha = entries.pop(prev)
            if a.get("content") is not None:
                sha = repo.hash_blob(decode_content(a.get("content"), enc, where))
            entries[path] = (mode, sha)
        elif act == "chmod":
            if path not in entries:
                raise ApiError(400, {"message": "A file with this name doesn't exist"})
            ex = a.get("execute_filemode") in (True, "true")
            entries[path] = ("100755" if ex else "100644", entries[path][1])
    u = author or ctx.user
    sha = repo.write_commit([parent] if parent else [], entries, message, (u["name"], u["email"]))
    repo.update_ref(f"refs/heads/{branch}", sha, ZERO_SHA if new_branch else parent)
    return sha


@route("POST", P + "/repository/commits")
def h_commit_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("branch", "commit_message", "actions")
    actions = ctx.params.get("actions")
    if isinstance(actions, dict):
        actions = [actions[k] for k in sorted(actions, key=lambda k: int(k) if str(k).isdigit() else 0)]
    if not isinstance(actions, list):
        raise invalid("actions")
    author = None
    if ctx.has("author_email") or ctx.has("author_name"):
        author = {"name": ctx.s("author_name") or ctx.user["name"], "email": ctx.s("author_email") or ctx.user["email"]}
    start = ctx.s("start_branch") or ctx.s("start_sha")
    sha = commit_actions(ctx, p, ctx.s("branch"), actions, ctx.s("commit_message"), start, author)
    d = st.commit_entity(p, sha, ctx.base, full=True)
    return jresp(201, d)


@route("GET", P + "/repository/tags")
def h_tags(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    tags = st.repo(p).tags()
    if ctx.has("search"):
        q = ctx.s("search")
        tags = [t for t in tags if (t["name"].startswith(q[1:]) if q.startswith("^") else q in t["name"])]
    order_by = ctx.s("order_by", "updated")
    if order_by == "name":
        tags.sort(key=lambda t: t["name"], reverse=ctx.s("sort", "desc") == "desc")
    elif ctx.s("sort", "desc") == "asc":
        tags.reverse()
    return offset_page(ctx, tags, lambda t: ser_tag(ctx, p, t))


def ser_tag(ctx, p, t):
    st = ctx.st
    rel = st.releases.get((p["id"], t["name"]))
    return {"name": t["name"], "message": t["message"], "target": t["target"],
            "commit": st.commit_entity(p, t["commit"], ctx.base),
            "release": {"tag_name": rel["tag_name"], "description": rel["description"]} if rel else None,
            "protected": False, "created_at": t["created_at"]}


@route("GET", P + r"/repository/tags/(?P<tag>[^/]+)")
def h_tag(ctx, pid, tag):
    p = ctx.project(pid)
    for t in ctx.st.repo(p).tags():
        if t["name"] == tag:
            return jresp(200, ser_tag(ctx, p, t))
    raise not_found("Tag")


def create_tag(ctx, p, name, ref, message=None):
    repo = ctx.st.repo(p)
    if repo.run("check-ref-format", f"refs/tags/{name}", ok=(0, 1, 128)).returncode != 0 or name.startswith("-"):
        raise ApiError(400, {"message": "Tag name invalid"})
    if repo.resolve(f"refs/tags/{name}"):
        raise ApiError(400, {"message": f"Tag {name} already exists"})
    sha = repo.resolve(ref)
    if not sha:
        raise ApiError(400, {"message": f"Target {ref} is invalid"})
    if message:
        u = ctx.user
        repo.run("tag", "-a", name, sha, "-F", "-", input=message.encode(),
                 env={"GIT_COMMITTER_NAME": u["name"], "GIT_COMMITTER_EMAIL": u["email"]})
    else:
        repo.update_ref(f"refs/tags/{name}", sha, ZERO_SHA)
    return sha


@route("POST", P + "/repository/tags")
def h_tag_create(ctx, pid):
    p = ctx.project(pid)
    ctx.require("tag_name", "ref")
    name = ctx.s("tag_name")
    create_tag(ctx, p, name, ctx.s("ref"), ctx.s("message"))
    for t in ctx.st.repo(p).tags():
        if t["name"] == name:
            return jresp(201, ser_tag(ctx, p, t))
    raise not_found("Tag")


@route("DELETE", P + r"/repository/tags/(?P<tag>[^/]+)")
def h_tag_delete(ctx, pid, tag):
    p = ctx.project(pid)
    repo = ctx.st.repo(p)
    if not repo.resolve(f"refs/tags/{tag}"):
        raise not_found("Tag")
    repo.delete_ref(f"refs/tags/{tag}")
    return Resp(204)


def file_lookup(ctx, pid, fpath):
    p = ctx.project(pid)
    if not ctx.has("ref"):
        raise missing("ref")
    ref = ctx.s("ref")
    sha = ctx.st.repo(p).resolve(ref)
    if not sha:
        raise not_found("Commit")
    f = ctx.st.repo(p).file_at(sha, fpath)
    if not f:
        raise not_found("File")
    return p, ref, sha, f


@route("GET", P + r"/repository/files/(?P<fpath>[^/]+)")
def h_file(ctx, pid, fpath):
    p, ref, sha, (mode, blob, data) = file_lookup(ctx, pid, fpath)
    return jresp(200, {"file_name": fpath.rsplit("/", 1)[-1], "file_path": fpath, "size": len(data),
                       "encoding": "base64", "content": base64.b64encode(data).decode(),
                       "content_sha256": hashlib.sha256(data).hexdigest(), "ref": ref, "blob_id": blob,
                       "commit_id": sha, "last_commit_id": ctx.st.repo(p).last_commit_for(sha, fpath),
                       "execute_filemode": mode == "100755"})


@route("GET", P + r"/repository/files/(?P<fpath>[^/]+)/raw")
def h_file_raw(ctx, pid, fpath):
    if not ctx.has("ref"):
        p = ctx.project(pid)
        ctx.params["ref"] = p["default_branch"]
    p, ref, sha, (mode, blob, data) = file_lookup(ctx, pid, fpath)
    return Resp(200, data, "text/plain; charset=utf-8",
                [("X-Gitlab-Blob-Id", blob), ("X-Gitlab-Commit-Id", sha), ("X-Gitlab-File-Path", fpath),
                 ("X-Gitlab-Ref", ref), ("X-Gitlab-Size", str(len(data)))])


def file_write(ctx, pid, fpath, action):
    p = ctx.project(pid)
    names = ("branch", "commit_message") + (("content",) if action != "delete" else ())
    ctx.require(*names)
    a = {"action": action, "file_path": fpath, "content": ctx.params.get("content"),
         "encoding": ctx.s("encoding"), "execute_filemode": ctx.b("execute_filemode", False)}
    author = None
    if ctx.has("author_email") or ctx.has("author_name"):
        author = {"name": ctx.s("author_name") or ctx.user["name"], "email": ctx.s("author_email") or ctx.user["email"]}
    commit_actions(ctx, p, ctx.s("branch"), [a], ctx.s("commit_message"), ctx.s("start_branch"), author)
    return p


@route("POST", P + r"/repository/files/(?P<fpath>[^/]+)")
def h_file_create(ctx, pid, fpath):
    file_write(ctx, pid, fpath, "create")
    return jresp(201, {"file_path": fpath, "branch": ctx.s("branch")})


@route("PUT", P + r"/repository/files/(?P<fpath>[^/]+)")
def h_file_update(ctx, pid, fpath):
    file_write(ctx, pid, fpath, "update")
    return jresp(200, {"file_path": fpath, "branch": ctx.s("branch")})


@route("DELETE", P + r"/repository/files/(?P<fpath>[^/]+)")
def h_file_delete(ctx, pid, fpath):
    file_write(ctx, pid, fpath, "delete")
    return Resp(204)


def semver_key(v):
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?", v or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) is None, m.group(4) or "")


def changelog_notes(ctx, p):
    """GitLab's default changelog template over commits carrying the trailer (approximation)."""
    st = ctx.st
    repo = st.repo(p)
    ctx.require("version")
    version = ctx.s("version")
    vkey = semver_key(version)
    if vkey is None:
        raise ApiError(422, {"message": f"The version {version} is not a valid semantic version"})
    to = repo.resolve(ctx.s("to") or p["default_branch"])
    if not to:
        raise ApiError(422, {"message": "The 'to' commit does not exist"})
    frm = ctx.s("from")
    if frm is None:
        older = [(semver_key(t["name"]), t["commit"]) for t in repo.tags()]
        older = [o for o in older if o[0] is not None and o[0] < vkey]
        frm = max(older)[1] if older else None
    elif not repo.resolve(frm):
        raise ApiError(422, {"message": "The 'from' commit does not exist"})
    trailer = ctx.s("trailer", "Changelog")
    commits = repo.log(f"{frm}..{to}" if frm else to)
    cats = {}
    for c in reversed(commits):
        cat = c["trailers"].get(trailer)
        if cat:
            cats.setdefault(cat, []).append(c)
    date = ctx.s("date")
    day = datetime.datetime.fromtimestamp(parse_time(date, "date") if date else time.time(), UTC).date().isoformat()
    out = [f"## {version} ({day})", ""]
    if not cats:
        out += ["No changes.", ""]
    path = p["path_with_namespace"]
    for cat in sorted(cats):
        entries = cats[cat]
        out += [f"### {cat} ({'1 change' if len(entries) == 1 else f'{len(entries)} changes'})", ""]
        for c in entries:
            line = f"- [{c['message'].split(chr(10), 1)[0]}]({path}@{c['id']})"
            mr = next((m for m in st.mrs_by_project[p["id"]].values()
                       if m["state"] == "merged" and m.get("sha") == c["id"]), None)
            if mr:
                line += f" ([merge request]({path}!{mr['iid']}))"
            out.append(line)
        out.append("")
    return "\n".join(out) + "\n"


@route("GET", P + "/repository/changelog")
def h_changelog(ctx, pid):
    p = ctx.project(pid)
    return jresp(200, {"notes": changelog_notes(ctx, p)})


@route("POST", P + "/repository/changelog")
def h_changelog_commit(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    notes = changelog_notes(ctx, p)
    branch = ctx.s("branch") or p["default_branch"]
    fpath = ctx.s("file", "CHANGELOG.md")
    repo = st.repo(p)
    head = repo.branch_sha(branch)
    if not head:
        raise ApiError(422, {"message": f"Branch {branch} does not exist"})
    old = repo.file_at(head, fpath)
    content = notes + ("\n" + old[2].decode("utf-8", "replace") if old else "")
    commit_actions(ctx, p, branch, [{"action": "update" if old else "create", "file_path": fpath,
                                     "content": content}],
                   ctx.s("message") or f"Add changelog for version {ctx.s('version')}")
    return Resp(200, b"", "application/json")


@route("GET", P + "/repository/tree")
def h_tree(ctx, pid):
    p = ctx.project(pid)
    repo = ctx.st.repo(p)
    ref = ctx.s("ref") or p["default_branch"]
    sha = repo.resolve(ref)
    if not sha:
        if not repo.heads():
            return jresp(200, [], page_headers(ctx, 1, ctx.per_page(), 0, False))
        raise not_found("Tree")
    entries = repo.tree(sha, (ctx.s("path") or "").strip("/"), ctx.b("recursive", False))
    if entries is None:
        raise not_found("Tree")
    return offset_page(ctx, entries, lambda e: e)


@route("GET", P + "/protected_branches")
def h_protected(ctx, pid):
    p = ctx.project(pid)
    items = sorted(ctx.st.protected[p["id"]].items())
    return offset_page(ctx, items, lambda kv: ctx.st.ser_protected(p, kv[0], kv[1]))


@route("GET", P + r"/protected_branches/(?P<name>[^/]+)")
def h_protected_one(ctx, pid, name):
    p = ctx.project(pid)
    if name not in ctx.st.protected[p["id"]]:
        raise not_found()
    return jresp(200, ctx.st.ser_protected(p, name, ctx.st.protected[p["id"]][name]))


@route("POST", P + "/protected_branches")
def h_protect(ctx, pid):
    p = ctx.project(pid)
    ctx.require("name")
    name = ctx.s("name")
    if name in ctx.st.protected[p["id"]]:
        raise ApiError(409, {"message": f"Protected branch '{name}' already exists"})
    ctx.st.protect(p, name)
    return jresp(201, ctx.st.ser_protected(p, name, ctx.st.protected[p["id"]][name]))


@route("DELETE", P + r"/protected_branches/(?P<name>[^/]+)")
def h_unprotect(ctx, pid, name):
    p = ctx.project(pid)
    if name not in ctx.st.protected[p["id"]]:
        raise not_found()
    ctx.st.unprotect(p, name)
    return Resp(204)


# --------------------------------------------------------------------------
# Pipelines and jobs
# --------------------------------------------------------------------------

def find_pipeline(ctx, p, plid):
    pl = ctx.st.pipelines.get(int(plid)) if plid.isdigit() else None
    if not pl or pl["project_id"] != p["id"]:
        raise not_found()
    return pl


def find_job(ctx, p, jid):
    j = ctx.st.jobs.get(int(jid)) if jid.isdigit() else None
    if not j or j["project_id"] != p["id"]:
        raise not_found()
    return j


def create_ci_pipeline(ctx, p, ref, source="api", variables=None):
    st = ctx.st
    repo = st.repo(p)
    sha = repo.resolve(ref)
    if not sha:
        raise ApiError(400, {"message": {"base": ["Reference not found"]}})
    f = repo.file_at(sha, ".gitlab-ci.yml")
    if not f:
        raise ApiError(400, {"message": {"base": ["Missing CI config file"]}})
    stages, jobs = scan_ci_jobs(f[2].decode("utf-8", "replace"))
    if not jobs:
        raise ApiError(400, {"message": {"base": ["No stages / jobs for this pipeline."]}})
    used = [s for s in stages if any(j["stage"] == s for j in jobs)] or [jobs[0]["stage"]]
    first = used[0]
    specs = [{"name": j["name"], "stage": j["stage"],
              "status": "manual" if j["when"] == "manual" else ("pending" if j["stage"] == first else "created")}
             for j in sorted(jobs, key=lambda j: stages.index(j["stage"]) if j["stage"] in stages else 99)]
    return st.add_pipeline(p, {"ref": ref, "sha": sha, "source": source, "jobs": specs, "status": "pending"},
                           user=ctx.user)


@route("GET", P + "/pipelines")
def h_pipelines(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    items = [pl for pl in st.pipelines.values() if pl["project_id"] == p["id"]]
    scope = ctx.s("scope")
    if scope:
        if scope == "running":
            items = [x for x in items if x["status"] == "running"]
        elif scope == "pending":
            items = [x for x in items if x["status"] == "pending"]
        elif scope == "finished":
            items = [x for x in items if x["status"] in ("success", "failed", "canceled", "skipped")]
        elif scope == "branches":
            items = [x for x in items if not x["tag"]]
        elif scope == "tags":
            items = [x for x in items if x["tag"]]
        else:
            raise bad_value("scope")
    if ctx.has("status"):
        s = ctx.s("status")
        if s not in JOB_STATUSES:
            raise bad_value("status")
        items = [x for x in items if x["status"] == s]
    for key in ("ref", "sha", "source", "name"):
        if ctx.has(key):
            v = ctx.s(key)
            items = [x for x in items if x[key] == v]
    if ctx.has("username"):
        u = st.user_ref(ctx.s("username"))
        items = [x for x in items if u and x["user_id"] == u["id"]]
    for name, field, ge in (("updated_after", "updated_at", True), ("updated_before", "updated_at", False),
                            ("created_after", "created_at", True), ("created_before", "created_at", False)):
        if ctx.has(name):
            t = parse_time(ctx.s(name), name)
            items = [x for x in items if (x[field] >= t if ge else x[field] <= t)]
    order_by = ctx.s("order_by", "id")
    if order_by not in ("id", "status", "ref", "updated_at", "user_id"):
        raise bad_value("order_by")
    items.sort(key=lambda x: (x[order_by], x["id"]), reverse=ctx.s("sort", "desc") == "desc")
    return offset_page(ctx, items, lambda x: st.ser_pipeline_basic(x, ctx.base))


@route("POST", P + "/pipeline")
def h_pipeline_create(ctx, pid):
    p = ctx.project(pid)
    ctx.require("ref")
    pl = create_ci_pipeline(ctx, p, ctx.s("ref"), "api", ctx.params.get("variables"))
    return jresp(201, ctx.st.ser_pipeline(pl, ctx.base))


@route("GET", P + "/pipelines/latest")
def h_pipeline_latest(ctx, pid):
    p = ctx.project(pid)
    pl = ctx.st.latest_pipeline(p["id"], ref=ctx.s("ref") or p["default_branch"])
    if not pl:
        raise not_found()
    return jresp(200, ctx.st.ser_pipeline(pl, ctx.base))


@route("GET", P + r"/pipelines/(?P<plid>\d+)")
def h_pipeline(ctx, pid, plid):
    p = ctx.project(pid)
    return jresp(200, ctx.st.ser_pipeline(find_pipeline(ctx, p, plid), ctx.base))


@route("DELETE", P + r"/pipelines/(?P<plid>\d+)")
def h_pipeline_delete(ctx, pid, plid):
    p = ctx.project(pid)
    pl = find_pipeline(ctx, p, plid)
    for j in pl["job_ids"]:
        ctx.st.jobs.pop(j, None)
    ctx.st.pipelines.pop(pl["id"], None)
    return Resp(204)


@route("POST", P + r"/pipelines/(?P<plid>\d+)/retry")
def h_pipeline_retry(ctx, pid, plid):
    st = ctx.st
    p = ctx.project(pid)
    pl = find_pipeline(ctx, p, plid)
    for j in st.pipeline_jobs(pl, include_retried=False):
        if j["status"] in ("failed", "canceled"):
            st.retry_job(j)
    st.derive_pipeline_status(pl)
    return jresp(201, st.ser_pipeline(pl, ctx.base))


@route("POST", P + r"/pipelines/(?P<plid>\d+)/cancel")
def h_pipeline_cancel(ctx, pid, plid):
    st = ctx.st
    p = ctx.project(pid)
    pl = find_pipeline(ctx, p, plid)
    jobs = st.pipeline_jobs(pl, include_retried=False)
    for j in jobs:
        st.cancel_job(j)
    if jobs:
        st.derive_pipeline_status(pl)
    elif pl["status"] in CANCELABLE:
        pl["status"] = "canceled"
        pl["updated_at"] = st.tick()
        st.fill_pipeline_times(pl)
    return jresp(201, st.ser_pipeline(pl, ctx.base))


def scope_filter(ctx):
    scope = ctx.lst("scope")
    if not scope:
        return None
    for s in scope:
        if s not in JOB_STATUSES:
            raise bad_value("scope")
    return set(scope)


@route("GET", P + r"/pipelines/(?P<plid>\d+)/jobs")
def h_pipeline_jobs(ctx, pid, plid):
    st = ctx.st
    p = ctx.project(pid)
    pl = find_pipeline(ctx, p, plid)
    scope = scope_filter(ctx)
    jobs = st.pipeline_jobs(pl, include_retried=ctx.b("include_retried", False))
    if scope:
        jobs = [j for j in jobs if j["status"] in scope]
    jobs.sort(key=lambda j: j["id"])
    return offset_page(ctx, jobs, lambda j: st.ser_job(j, ctx.base))


@route("GET", P + "/jobs")
def h_jobs(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    scope = scope_filter(ctx)
    jobs = sorted((j for j in st.jobs.values() if j["project_id"] == p["id"]
                   and (not scope or j["status"] in scope)), key=lambda j: -j["id"])
    if ctx.s("pagination") == "keyset":
        if ctx.s("order_by", "id") != "id" or ctx.s("sort", "desc") != "desc":
            raise ApiError(405, {"error": "Keyset pagination is not yet available for this type of request"})
        keys = [(-j["id"],) for j in jobs]
        return keyset_page(ctx, jobs, keys, lambda j: True, lambda j: st.ser_job(j, ctx.base))
    return offset_page(ctx, jobs, lambda j: st.ser_job(j, ctx.base), cap=OFFSET_CAP, kind="Ci::Build")


@route("GET", P + r"/jobs/(?P<jid>\d+)")
def h_job(ctx, pid, jid):
    p = ctx.project(pid)
    return jresp(200, ctx.st.ser_job(find_job(ctx, p, jid), ctx.base))


@route("GET", "/job")
def h_current_job(ctx):
    if not ctx.job_token or not ctx.job_token.get("job_id") or ctx.job_token["job_id"] not in ctx.st.jobs:
        raise ApiError(401, {"message": "401 Unauthorized"})
    return jresp(200, ctx.st.ser_job(ctx.st.jobs[ctx.job_token["job_id"]], ctx.base))


@route("POST", P + r"/jobs/(?P<jid>\d+)/retry")
def h_job_retry(ctx, pid, jid):
    st = ctx.st
    p = ctx.project(pid)
    j = find_job(ctx, p, jid)
    if j["retried"] or j["status"] not in ("failed", "canceled", "success", "skipped"):
        raise forbidden("Job is not retryable")
    return jresp(201, st.ser_job(st.retry_job(j), ctx.base))


@route("POST", P + r"/jobs/(?P<jid>\d+)/cancel")
def h_job_cancel(ctx, pid, jid):
    st = ctx.st
    p = ctx.project(pid)
    j = find_job(ctx, p, jid)
    if st.cancel_job(j):
        st.derive_pipeline_status(st.pipelines[j["pipeline_id"]])
    return jresp(201, st.ser_job(j, ctx.base))


@route("GET", P + r"/jobs/(?P<jid>\d+)/trace")
def h_job_trace(ctx, pid, jid):
    p = ctx.project(pid)
    j = find_job(ctx, p, jid)
    loc = f"{ctx.base}/__double/traces/{p['id']}/{j['id']}.log"
    return Resp(302, f'<html><body>You are being <a href="{loc}">redirected</a>.</body></html>'.encode(),
                "text/html; charset=utf-8", [("Location", loc)])


# --------------------------------------------------------------------------
# Releases
# --------------------------------------------------------------------------

def find_release(ctx, p, tag):
    r = ctx.st.releases.get((p["id"], tag))
    if not r:
        raise not_found()
    return r


def release_links(ctx):
    assets = ctx.params.get("assets")
    links = []
    raw = (assets or {}).get("links") if isinstance(assets, dict) else None
    if isinstance(raw, dict):
        raw = [raw[k] for k in sorted(raw)]
    for n, lk in enumerate(raw or []):
        if not isinstance(lk, dict) or not lk.get("name"):
            raise missing(f"assets[links][{n}][name]")
        if not lk.get("url"):
            raise missing(f"assets[links][{n}][url]")
        if not re.match(r"^(https?|ftp)://", str(lk["url"])):
            raise ApiError(400, {"message": "Validation failed: Links url is blocked: Only allowed schemes are http, https, ftp"})
        links.append({"id": ctx.st.next_id("release_link"), "name": lk["name"], "url": lk["url"],
                      "direct_asset_path": lk.get("direct_asset_path") or lk.get("filepath"),
                      "link_type": lk.get("link_type") or "other"})
    return links


@route("GET", P + "/releases")
def h_releases(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    order_by = ctx.s("order_by", "released_at")
    if order_by not in ("released_at", "created_at"):
        raise bad_value("order_by")
    items = sorted((r for (pid_, _), r in st.releases.items() if pid_ == p["id"]),
                   key=lambda r: (r[order_by], r["created_at"]), reverse=ctx.s("sort", "desc") == "desc")
    return offset_page(ctx, items, lambda r: st.ser_release(r, ctx.base))


@route("POST", P + "/releases")
def h_release_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("tag_name")
    tag = ctx.s("tag_name")
    if (p["id"], tag) in st.releases:
        raise ApiError(409, {"message": "Release already exists"})
    repo = st.repo(p)
    sha = repo.resolve(f"refs/tags/{tag}")
    links = release_links(ctx)
    if not sha:
        if not ctx.has("ref"):
            raise ApiError(422, {"message": "Ref is not specified"})
        try:
            sha = create_tag(ctx, p, tag, ctx.s("ref"), ctx.s("tag_message"))
        except ApiError as e:
            raise ApiError(422, e.body) from None
    now = st.tick()
    r = {"project_id": p["id"], "tag_name": tag, "name": ctx.s("name") or tag,
         "description": ctx.s("description") or "", "created_at": now,
         "released_at": parse_time(ctx.s("released_at"), "released_at") or now,
         "author_id": ctx.user["id"], "links": links, "sha": sha}
    st.releases[(p["id"], tag)] = r
    return jresp(201, st.ser_release(r, ctx.base))


@route("GET", P + r"/releases/(?P<tag>[^/]+)")
def h_release(ctx, pid, tag):
    p = ctx.project(pid)
    return jresp(200, ctx.st.ser_release(find_release(ctx, p, tag), ctx.base))


@route("PUT", P + r"/releases/(?P<tag>[^/]+)")
def h_release_update(ctx, pid, tag):
    p = ctx.project(pid)
    r = find_release(ctx, p, tag)
    if not any(ctx.has(k) for k in ("name", "description", "released_at", "milestones")):
        raise ApiError(400, {"error": "name, description, released_at, milestones are missing, "
                                      "at least one parameter must be provided"})
    if ctx.has("name"):
        r["name"] = ctx.s("name")
    if ctx.has("description"):
        r["description"] = ctx.s("description") or ""
    if ctx.has("released_at"):
        r["released_at"] = parse_time(ctx.s("released_at"), "released_at")
    return jresp(200, ctx.st.ser_release(r, ctx.base))


@route("DELETE", P + r"/releases/(?P<tag>[^/]+)")
def h_release_delete(ctx, pid, tag):
    p = ctx.project(pid)
    r = find_release(ctx, p, tag)
    body = ctx.st.ser_release(r, ctx.base)
    del ctx.st.releases[(p["id"], tag)]
    return jresp(200, body)


# --------------------------------------------------------------------------
# Pipeline schedules
# --------------------------------------------------------------------------

def check_cron(cron, tz):
    try:
        parse_cron(cron)
    except (ValueError, KeyError):
        raise validation("cron", "is invalid syntax") from None
    if tz != "UTC":
        try:
            if zoneinfo is None:
                raise ValueError(tz)
            zoneinfo.ZoneInfo(tz)
        except Exception:
            raise validation("cron_timezone", "is invalid syntax") from None


def find_schedule(ctx, p, sid):
    s = ctx.st.schedules.get(int(sid)) if sid.isdigit() else None
    if not s or s["project_id"] != p["id"]:
        raise not_found("Pipeline Schedule")
    return s


@route("GET", P + "/pipeline_schedules")
def h_schedules(ctx, pid):
    p = ctx.project(pid)
    items = sorted((s for s in ctx.st.schedules.values() if s["project_id"] == p["id"]), key=lambda s: s["id"])
    scope = ctx.s("scope")
    if scope == "active":
        items = [s for s in items if s["active"]]
    elif scope == "inactive":
        items = [s for s in items if not s["active"]]
    return offset_page(ctx, items, lambda s: ctx.st.ser_schedule(s, ctx.base))


@route("POST", P + "/pipeline_schedules")
def h_schedule_create(ctx, pid):
    st = ctx.st
    p = ctx.project(pid)
    ctx.require("description", "ref", "cron")
    tz = ctx.s("cron_timezone", "UTC")
    check_cron(ctx.s("cron"), tz)
    now = st.tick()
    s = {"id": st.next_id("schedule"), "project_id": p["id"], "description": ctx.s("description"),
         "ref": ctx.s("ref"), "cron": ctx.s("cron"), "cron_timezone": tz, "active": ctx.b("active", True),
         "created_at": now, "updated_at": now, "owner_id": ctx.user["id"], "variables": [],
         "last_pipeline_id": None}
    st.schedules[s["id"]] = s
    return jresp(201, st.ser_schedule(s, ctx.base, single=True))


@route("GET", P + r"/pipeline_schedules/(?P<sid>[^/]+)")
def h_schedule(ctx, pid, sid):
    p = ctx.project(pid)
    return jresp(200, ctx.st.ser_schedule(find_schedule(ctx, p, sid), ctx.base, single=True))


@route("PUT", P + r"/pipeline_schedules/(?P<sid>[^/]+)")
def h_schedule_update(ctx, pid, sid):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    cron, tz = ctx.s("cron", s["cron"]), ctx.s("cron_timezone", s["cron_timezone"])
    check_cron(cron, tz)
    for k in ("description", "ref"):
        if ctx.has(k):
            s[k] = ctx.s(k)
    s["cron"], s["cron_timezone"] = cron, tz
    if ctx.has("active"):
        s["active"] = ctx.b("active")
    s["updated_at"] = ctx.st.tick()
    return jresp(200, ctx.st.ser_schedule(s, ctx.base, single=True))


@route("DELETE", P + r"/pipeline_schedules/(?P<sid>[^/]+)")
def h_schedule_delete(ctx, pid, sid):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    del ctx.st.schedules[s["id"]]
    return Resp(204)


@route("POST", P + r"/pipeline_schedules/(?P<sid>[^/]+)/play")
def h_schedule_play(ctx, pid, sid):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    ref = s["ref"][len("refs/heads/"):] if s["ref"].startswith("refs/heads/") else s["ref"]
    pl = create_ci_pipeline(ctx, p, ref, source="schedule")
    s["last_pipeline_id"] = pl["id"]
    return jresp(201, {"message": "201 Created"})


@route("POST", P + r"/pipeline_schedules/(?P<sid>[^/]+)/variables")
def h_schedule_var_create(ctx, pid, sid):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    ctx.require("key", "value")
    key = ctx.s("key")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,255}", key):
        raise validation("key", "can contain only letters, digits and '_'.")
    if any(v["key"] == key for v in s["variables"]):
        raise validation("key", f"({key}) has already been taken")
    var = {"key": key, "value": ctx.s("value"), "variable_type": ctx.s("variable_type", "env_var"), "raw": False}
    s["variables"].append(var)
    return jresp(201, var)


@route("PUT", P + r"/pipeline_schedules/(?P<sid>[^/]+)/variables/(?P<key>[^/]+)")
def h_schedule_var_update(ctx, pid, sid, key):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    for v in s["variables"]:
        if v["key"] == key:
            if ctx.has("value"):
                v["value"] = ctx.s("value")
            if ctx.has("variable_type"):
                v["variable_type"] = ctx.s("variable_type")
            return jresp(200, v)
    raise not_found("Variable")


@route("DELETE", P + r"/pipeline_schedules/(?P<sid>[^/]+)/variables/(?P<key>[^/]+)")
def h_schedule_var_delete(ctx, pid, sid, key):
    p = ctx.project(pid)
    s = find_schedule(ctx, p, sid)
    for v in s["variables"]:
        if v["key"] == key:
            s["variables"].remove(v)
            return jresp(202, v)
    raise not_found("Variable")


# --------------------------------------------------------------------------
# The application: auth, rate limits, faults, request log, control API, git
# --------------------------------------------------------------------------

def job_token_allowed(method, rel):
    """What a CI_JOB_TOKEN reaches (a small subset, as in GitLab)."""
    if method in ("GET", "HEAD") and (re.fullmatch(r"/projects/[^/]+(/repository/changelog)?", rel)
                                      or rel in ("/version", "/job")):
        return True
    return bool(re.fullmatch(r"/projects/[^/]+/releases(/[^/]+)?", rel))


GIT_PATH_RE = re.compile(r"^/(?P<repo>.+?)\.git(?P<rest>/info/refs|/git-upload-pack|/git-receive-pack)$")
READ_SCOPES = {"api", "read_api", "read_repository", "write_repository"}
WRITE_GIT_SCOPES = {"api", "write_repository"}


class Config:
    def __init__(self, tokens, tier, state_dir):
        self.tokens = tokens
        self.tier = tier
        self.state_dir = state_dir


class App:
    def __init__(self, args):
        self.tier = args.tier
        self.version_str = args.gitlab_version
        self.version = version_tuple(args.gitlab_version)
        self.rate_limit = args.rate_limit
        self.rate_window = max(1, int(getattr(args, "rate_window", 60) or 60))
        self.issues_per_minute = int(getattr(args, "issues_per_minute", 0) or 0)
        self.notes_per_minute = int(getattr(args, "notes_per_minute", 0) or 0)
        self.app_windows = {}              # application limits: key -> [window start, count]
        self.app_window = 60.0             # their window, seconds
        self.quiet = args.quiet
        self.tmp_state = None
        state_dir = args.state_dir
        if not state_dir:
            state_dir = self.tmp_state = tempfile.mkdtemp(prefix="gitlab-double-")
        os.makedirs(state_dir, exist_ok=True)
        self.state = State(Config(args.token or [DEFAULT_TOKEN], args.tier, os.path.abspath(state_dir)))
        self.flock = threading.Lock()      # faults, request log, rate-limit counters
        self.faults = []
        self.requests = []
        self.windows = {}
        self.bound = None
        self.req_seq = 0

    def log(self, msg):
        if not self.quiet:
            sys.stderr.write(msg.rstrip("\n") + "\n")
            sys.stderr.flush()

    def base_url(self, h):
        host = h.headers.get("Host")
        return f"http://{host}" if host else self.bound

    # ---- request log ----
    def record(self, method, path, qs, status, token_kind, fault=False):
        with self.flock:
            self.req_seq += 1
            entry = {"seq": self.req_seq, "method": method, "path": path, "query": flat_query(qs),
                     "status": status, "token_kind": token_kind, "time": iso(time.time())}
            if fault:
                entry["fault"] = True
            self.requests.append(entry)
            if len(self.requests) > 500_000:
                del self.requests[:100_000]

    # ---- faults ----
    def add_faults(self, rules):
        if isinstance(rules, dict):
            rules = [rules]
        added = []
        for r in rules:
            if not isinstance(r, dict) or "path_regex" not in r:
                raise ValueError("each fault needs path_regex")
            rule = dict(r)
            rule["_rx"] = re.compile(r["path_regex"])
            rule["remaining"] = int(r.get("times", 1))
            rule["after"] = int(r.get("after", 0))
            rule["seen"] = 0
            rule["fired"] = 0
            added.append(rule)
        with self.flock:
            self.faults.extend(added)
        return [self.public_fault(r) for r in added]

    @staticmethod
    def public_fault(r):
        return {k: v for k, v in r.items() if not k.startswith("_")}

    def match_fault(self, method, path, qs):
        if not self.faults:
            return None
        target = path + ("?" + qs if qs else "")
        with self.flock:
            for rule in self.faults:
                if rule["remaining"] == 0:
                    continue
                if rule.get("method") and rule["method"].upper() != method:
                    continue
                if not rule["_rx"].search(target):
                    continue
                rule["seen"] += 1
                if rule["seen"] <= rule["after"]:
                    continue
                if rule["remaining"] > 0:
                    rule["remaining"] -= 1
                rule["fired"] += 1
                return dict(rule)
        return None

    # ---- rate limiting ----
    def rate(self, key):
        now = time.time()
        win = int(now // self.rate_window) * self.rate_window
        with self.flock:
            w = self.windows.get(key)
            if not w or w[0] != win:
                w = self.windows[key] = [win, 0]
            w[1] += 1
            return w[1], win + self.rate_window

    APP_LIMITED = "This endpoint has been requested too many times. Try again later."

    def app_limited(self, method, rel, user_id):
        """Issue and note creation limits (GitLab's application rate limits):
        True when this request is over one of them."""
        if method != "POST":
            return False
        m = re.fullmatch(r"/projects/([^/]+)/issues", rel)
        if m and self.issues_per_minute > 0:
            key, limit = ("issues", user_id, urllib.parse.unquote(m.group(1))), self.issues_per_minute
        elif re.fullmatch(r"/projects/[^/]+/(?:issues|merge_requests)/[^/]+/notes", rel) and self.notes_per_minute > 0:
            key, limit = ("notes", user_id), self.notes_per_minute
        else:
            return False
        now = time.time()
        with self.flock:
            w = self.app_windows.get(key)
            if not w or now >= w[0] + self.app_window:
                w = self.app_windows[key] = [now, 0]
            w[1] += 1
            return w[1] > limit

    # ---- the REST API ----
    @staticmethod
    def credentials(h, qs):
        hd = h.headers
        if hd.get("PRIVATE-TOKEN") is not None:
            return "private_token", hd.get("PRIVATE-TOKEN").strip()
        auth = hd.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            return "bearer", auth[7:].strip()
        if hd.get("JOB-TOKEN") is not None:
            return "job_token", hd.get("JOB-TOKEN").strip()
        if qs:
            q = flat_query(qs)
            for name, kind in (("private_token", "private_token"), ("access_token", "bearer"),
                               ("job_token", "job_token")):
                if name in q:
                    v = q[name]
                    return kind, (v[-1] if isinstance(v, list) else v)
        return "none", None

    def api(self, h, method, path, qs, body):
        st = self.state
        rel = path[len("/api/v4"):] or "/"
        base = self.base_url(h)
        kind, token = self.credentials(h, qs)
        info = None
        if token:
            info = (st.job_tokens if kind == "job_token" else st.tokens).get(token)
        log_kind = kind if (info or kind == "none") else "invalid"
        key = f"token:{token}" if info else f"ip:{h.client_address[0]}"
        observed, reset = self.rate(key)
        rl = [("RateLimit-Name", "throttle_authenticated_api" if info else "throttle_unauthenticated_api"),
              ("RateLimit-Limit", str(self.rate_limit)), ("RateLimit-Observed", str(observed)),
              ("RateLimit-Remaining", str(max(0, self.rate_limit - observed))),
              ("RateLimit-Reset", str(reset))]
        if observed > self.rate_limit:
            retry = max(1, int(reset - time.time() + 0.999))
            resp = text_resp(429, "Retry later\n", headers=rl + [
                ("Retry-After", str(retry)),
                ("RateLimit-ResetTime", email.utils.formatdate(reset, usegmt=True))])
        elif info is None:
            resp = jresp(401, {"message": "401 Unauthorized"}, rl)
        elif self.app_limited(method, rel, info.get("user_id")):
            resp = jresp(429, {"message": {"error": self.APP_LIMITED}})
        else:
            resp = self.dispatch_api(h, method, rel, path, qs, body, base, kind, info)
            resp.headers.extend(rl)
        resp.headers.extend([("Cache-Control", "max-age=0, private, must-revalidate"),
                             ("Vary", "Origin, Accept-Encoding"), ("X-Content-Type-Options", "nosniff"),
                             ("X-Frame-Options", "SAMEORIGIN"),
                             ("X-Request-Id", hashlib.md5(f"{time.time()}{id(h)}".encode()).hexdigest()[:26].upper())])
        self.record(method, path, qs, resp.status, log_kind)
        return resp

    @staticmethod
    def parse_body(h, body):
        if not body:
            return {}
        ctype_full = h.headers.get("Content-Type") or ""
        ctype = ctype_full.split(";")[0].strip().lower()
        if ctype == "application/json" or (not ctype and body[:1] in (b"{", b"[")):
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, {"error": "The provided content-type 'application/json' does not match "
                                              "the body or the JSON is malformed"}) from None
            return data if isinstance(data, dict) else {}
        if ctype == "multipart/form-data":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype_full.encode() + b"\r\n\r\n" + body)
            params = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    payload = part.get_payload(decode=True) or b""
                    rack_normalize(params, name, payload.decode("utf-8", "replace"))
            return params
        return parse_nested(body.decode("utf-8", "replace"))

    def dispatch_api(self, h, method, rel, path, qs, body, base, kind, info):
        st = self.state
        found, fn, mo = False, None, None
        for m, rx, f in ROUTES:
            match = rx.match(rel)
            if match:
                found = True
                if m == method or (method == "HEAD" and m == "GET"):
                    fn, mo = f, match
                    break
        if fn is None:
            return jresp(405, {"error": "405 Not Allowed"}) if found else jresp(404, {"error": "404 Not Found"})
        if kind == "job_token":
            if not job_token_allowed(method, rel):
                return jresp(403, {"message": "403 Forbidden"})
            user = st.users[st.bot_id]
        else:
            user = st.users.get(info["user_id"]) or st.users[st.bot_id]
            if method not in ("GET", "HEAD") and "api" not in info["scopes"]:
                return jresp(403, {"error": "insufficient_scope",
                                   "error_description": "The request requires higher privileges than "
                                                        "provided by the access token.",
                                   "scope": "api"})
            if method in ("GET", "HEAD") and not (READ_SCOPES & set(info["scopes"])):
                return jresp(403, {"error": "insufficient_scope",
                                   "error_description": "The request requires higher privileges than "
                                                        "provided by the access token.",
                                   "scope": "api read_api"})
        try:
            ctx = Ctx(self, method, path, qs, self.parse_body(h, body), base)
            ctx.user = user
            ctx.token_kind = kind
            ctx.job_token = info if kind == "job_token" else None
            kw = {k: urllib.parse.unquote(v) for k, v in mo.groupdict().items()}
            with st.lock:
                return fn(ctx, **kw)
        except ApiError as e:
            return jresp(e.status, e.body, e.headers)
        except GitError as e:
            return jresp(400, {"message": str(e)})
        except Exception:
            sys.stderr.write(traceback.format_exc())
            return jresp(500, {"message": "500 Internal Server Error"})

    # ---- control API (/__double/, no auth) ----
    def control(self, h, method, path, qs, body):
        st = self.state
        base = self.base_url(h)
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            return jresp(400, {"error": "body is not JSON"})
        try:
            m = re.fullmatch(r"/__double/traces/(\d+)/(\d+)\.log", path)
            if m and method in ("GET", "HEAD"):
                with st.lock:
                    j = st.jobs.get(int(m.group(2)))
                    if not j or j["project_id"] != int(m.group(1)):
                        return text_resp(404, "Not Found\n")
                    trace = j["trace"]
                return text_resp(200, trace, headers=[
                    ("Content-Disposition", f'infile; filename="{j["id"]}.log"'),
                    ("Cache-Control", "private, max-age=0")])
            if path == "/__double/health":
                return jresp(200, {"status": "ok"})
            if path == "/__double/seed" and method == "POST":
                with st.lock:
                    return jresp(201, st.seed(data or {}))
            if path == "/__double/reset" and method == "POST":
                with st.lock:
                    st.reset()
                    if (data or {}).get("default") or flat_query(qs).get("default") in ("1", "true"):
                        st.default_seed()
                with self.flock:
                    self.faults.clear()
                    self.requests.clear()
                    self.windows.clear()
                return jresp(200, {"reset": True})
            if path == "/__double/state" and method == "GET":
                with st.lock:
                    return jresp(200, st.dump(base))
            if path == "/__double/mentions":
                with st.lock:
                    if method == "DELETE":
                        st.mentions.clear()
                        return Resp(204)
                    return jresp(200, list(st.mentions))
            if path == "/__double/requests":
                with self.flock:
                    if method == "DELETE":
                        self.requests.clear()
                        return Resp(204)
                    return jresp(200, list(self.requests))
            if path == "/__double/faults":
                if method == "POST":
                    return jresp(201, self.add_faults(data or []))
                with self.flock:
                    if method == "DELETE":
                        self.faults.clear()
                        return Resp(204)
                    return jresp(200, [self.public_fault(r) for r in self.faults])
            if path == "/__double/ratelimit" and method == "DELETE":
                with self.flock:
                    self.windows.clear()
                    self.app_windows.clear()
                return Resp(204)
            if path == "/__double/ratelimit" and method == "POST":
                d = data or {}
                with self.flock:
                    if "limit" in d:
                        self.rate_limit = int(d["limit"])
                    if "window" in d:
                        self.rate_window = max(1, int(d["window"]))
                    if "issues_per_minute" in d:
                        self.issues_per_minute = max(0, int(d["issues_per_minute"]))
                    if "notes_per_minute" in d:
                        self.notes_per_minute = max(0, int(d["notes_per_minute"]))
                    if "app_window" in d:
                        self.app_window = max(0.1, float(d["app_window"]))
                    self.windows.clear()
                    self.app_windows.clear()
                    return jresp(200, {"limit": self.rate_limit, "window": self.rate_window,
                                       "issues_per_minute": self.issues_per_minute,
                                       "notes_per_minute": self.notes_per_minute,
                                       "app_window": self.app_window})
            if path == "/__double/pipelines" and method == "POST":
                with st.lock:
                    p = st.seed_project(data.get("project_id"))
                    pl = st.add_pipeline(p, data)
                    return jresp(201, dict(st.ser_pipeline(pl, base),
                                           jobs=[st.ser_job(st.jobs[j], base) for j in pl["job_ids"]]))
            m = re.fullmatch(r"/__double/pipelines/(\d+)", path)
            if m and method == "POST":
                with st.lock:
                    pl = st.pipelines.get(int(m.group(1)))
                    if not pl:
                        return jresp(404, {"error": "no such pipeline"})
                    if "status" in data:
                        old = pl["status"]
                        pl["status"] = data["status"]
                        pl["updated_at"] = st.tick()
                        st.fill_pipeline_times(pl)
                        if old != "success" and pl["status"] == "success":
                            st.on_pipeline_success(pl)
                    return jresp(200, st.ser_pipeline(pl, base))
            m = re.fullmatch(r"/__double/jobs/(\d+)", path)
            if m and method == "POST":
                with st.lock:
                    j = st.jobs.get(int(m.group(1)))
                    if not j:
                        return jresp(404, {"error": "no such job"})
                    if "status" in data:
                        if data["status"] not in JOB_STATUSES:
                            raise ValueError(f"bad status {data['status']}")
                        j["status"] = data["status"]
                        if j["status"] in ACTIVE_STATUSES:
                            j["finished_at"] = None
                            if j["status"] != "running":
                                j["started_at"] = None
                    for k in ("failure_reason", "duration", "queued_duration", "allow_failure", "coverage"):
                        if k in data:
                            j[k] = data[k]
                    if "trace" in data:
                        j["trace"] = data["trace"]
                    if "append_trace" in data:
                        j["trace"] += data["append_trace"]
                    if j["status"] == "running" and j["started_at"] is None:
                        j["started_at"] = st.tick()
                    st.fill_job_times(j)
                    pl = st.pipelines[j["pipeline_id"]]
                    if "pipeline_status" in data:
                        pl["status"] = data["pipeline_status"]
                        st.fill_pipeline_times(pl)
                    elif "status" in data:
                        st.derive_pipeline_status(pl)
                    return jresp(200, st.ser_job(j, base))
            if path == "/__double/protected_branches" and method in ("POST", "DELETE"):
                with st.lock:
                    p = st.seed_project(data.get("project_id"))
                    name = data.get("name") or data.get("branch")
                    (st.protect if method == "POST" else st.unprotect)(p, name)
                    return jresp(200, {"project_id": p["id"], "protected": sorted(st.protected[p["id"]])})
            if path == "/__double/users" and method == "POST":
                with st.lock:
                    return jresp(201, st.add_user(data))
        except ApiError as e:
            return jresp(e.status, e.body)
        except (KeyError, ValueError, TypeError, AttributeError, GitError) as e:
            return jresp(400, {"error": f"{type(e).__name__}: {e}"})
        return jresp(404, {"error": f"no control endpoint {method} {path}"})

    # ---- git smart HTTP ----
    def git_http(self, h, method, path, qs, body):
        st = self.state
        m = GIT_PATH_RE.match(path)
        repo_path, rest = urllib.parse.unquote(m.group("repo")), m.group("rest")
        service = flat_query(qs).get("service") if rest == "/info/refs" else rest[1:]
        if service not in ("git-upload-pack", "git-receive-pack"):
            return text_resp(403, "Dumb HTTP protocol is not supported\n")
        challenge = [("WWW-Authenticate", 'Basic realm="GitLab"')]
        denied = ("HTTP Basic: Access denied. If a password was provided for Git authentication, the password "
                  "was incorrect or you're required to use a token instead of a password. If a token was "
                  "provided, it was either incorrect, expired, or improperly scoped.\n")
        auth = h.headers.get("Authorization") or ""
        if not auth.lower().startswith("basic "):
            return text_resp(401, denied, headers=challenge)
        try:
            username, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return text_resp(401, denied, headers=challenge)
        can_write = False
        tok = st.tokens.get(password)
        if tok and READ_SCOPES & set(tok["scopes"]):
            can_write = bool(WRITE_GIT_SCOPES & set(tok["scopes"]))
        elif password in st.job_tokens and username == "gitlab-ci-token":
            can_write = False
        else:
            return text_resp(401, denied, headers=challenge)
        with st.lock:
            p = st.find_project(repo_path)
        if not p:
            return text_resp(404, "The project you were looking for could not be found or you don't have "
                                  "permission to view it.\n")
        if service == "git-receive-pack" and not can_write:
            return text_resp(403, "You are not allowed to push code to this project.\n")
        env = git_env({
            "GIT_PROJECT_ROOT": st.repo_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{p['path_with_namespace']}.git{rest}",
            "QUERY_STRING": qs, "REQUEST_METHOD": method,
            "CONTENT_TYPE": h.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": username or "git",
            "REMOTE_ADDR": h.client_address[0], "GIT_PROTOCOL": h.headers.get("Git-Protocol") or "",
            "SERVER_PROTOCOL": "HTTP/1.1"})
        proc = subprocess.run(["git", "http-backend"], input=body, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.stderr:
            self.log(proc.stderr.decode("utf-8", "replace"))
        out = proc.stdout
        sep = out.find(b"\r\n\r\n")
        sep_len = 4
        alt = out.find(b"\n\n")
        if sep < 0 or (0 <= alt < sep):
            sep, sep_len = alt, 2
        if sep < 0:
            return text_resp(500, "git http-backend failed\n")
        status, ctype, headers = 200, "application/octet-stream", []
        for line in out[:sep].decode("latin-1").splitlines():
            if ":" not in line:
                continue
            k, v = line.split(":", 1)
            k, v = k.strip(), v.strip()
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k.lower() == "content-type":
                ctype = v
            elif k.lower() != "content-length":
                headers.append((k, v))
        return Resp(status, out[sep + sep_len:], ctype, headers)


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

ERROR_PAGE = """<!DOCTYPE html>
<html>
<head><title>{status} {reason}</title></head>
<body>
<center><h1>{status} {reason}</h1></center>
<hr><center>nginx</center>
<p>GitLab is not responding.</p>
</body>
</html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    wbufsize = 1 << 16          # headers and body leave in one write

    def version_string(self):
        return "nginx"

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    @property
    def app(self):
        return self.server.app

    def handle_expect_100(self):
        # The write buffer would hold "100 Continue" back; libcurl then waits 1 s.
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def log_message(self, fmt, *args):
        if not self.app.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.handle_method("GET")

    def do_POST(self):
        self.handle_method("POST")

    def do_PUT(self):
        self.handle_method("PUT")

    def do_DELETE(self):
        self.handle_method("DELETE")

    def do_PATCH(self):
        self.handle_method("PATCH")

    def do_HEAD(self):
        self.handle_method("HEAD")

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ValueError("truncated chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n > 0 else b""
        enc = (self.headers.get("Content-Encoding") or "").lower().strip()
        if enc in ("gzip", "x-gzip"):
            data = gzip.decompress(data)
        elif enc == "deflate":
            data = zlib.decompress(data)
        return data

    def handle_method(self, method):
        try:
            self._handle(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        path, qs = url.path, url.query
        try:
            body = self.read_body()
        except (ValueError, OSError, EOFError, zlib.error):
            self.send(text_resp(400, "Bad Request\n"))
            self.close_connection = True
            return
        if path.startswith("/__double/"):
            self.send(self.app.control(self, method, path, qs, body))
            return
        rule = self.app.match_fault(method, path, qs)
        if rule and self.apply_fault(rule, method, path, qs, body):
            return
        self.send(self.process(method, path, qs, body))

    def process(self, method, path, qs, body):
        if GIT_PATH_RE.match(path):
            return self.app.git_http(self, method, path, qs, body)
        if path == "/api/v4" or path.startswith("/api/v4/"):
            return self.app.api(self, method, path, qs, body)
        return text_resp(404, "Not Found\n")

    def apply_fault(self, rule, method, path, qs, body):
        app = self.app
        is_api = path.startswith("/api/v4")
        if rule.get("delay_ms"):
            time.sleep(float(rule["delay_ms"]) / 1000.0)
        extra = list((rule.get("headers") or {}).items())
        if rule.get("drop"):
            if is_api:
                app.record(method, path, qs, 0, "fault", fault=True)
            self.hang_up()
            return True
        if rule.get("truncate"):
            resp = self.process(method, path, qs, body)
            resp.headers.extend(extra)
            self.send(resp, truncate=True)
            return True
        if rule.get("html"):
            status = int(rule.get("status") or 502)
            reason = self.responses.get(status, ("Error",))[0]
            resp = text_resp(status, ERROR_PAGE.format(status=status, reason=reason), "text/html", extra)
        elif rule.get("empty"):
            resp = Resp(int(rule.get("status") or 200), b"", "application/json", extra)
        elif rule.get("status"):
            status = int(rule["status"])
            b = rule.get("body")
            if b is None:
                if status == 429:
                    resp = text_resp(429, "Retry later\n", headers=extra)
                else:
                    reason = self.responses.get(status, ("Error",))[0]
                    resp = jresp(status, {"message": f"{status} {reason}"}, extra)
            elif isinstance(b, (dict, list)):
                resp = jresp(status, b, extra)
            else:
                ctype = next((v for k, v in extra if k.lower() == "content-type"), "text/plain; charset=utf-8")
                extra = [(k, v) for k, v in extra if k.lower() != "content-type"]
                resp = text_resp(status, str(b), ctype, extra)
        else:
            return False          # delay only: answer normally
        if is_api:
            app.record(method, path, qs, resp.status, "fault", fault=True)
        self.send(resp)
        return True

    def hang_up(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, resp, truncate=False):
        self.send_response(resp.status)
        no_body = resp.status in (204, 304) or 100 <= resp.status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(resp.body)))
            if resp.ctype:
                self.send_header("Content-Type", resp.ctype)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and not no_body:
            self.wfile.write(resp.body[: len(resp.body) // 2] if truncate else resp.body)
        if truncate:
            self.hang_up()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="GitLab REST API v4 + git smart HTTP test double")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = pick a free one)")
    ap.add_argument("--state-dir", help="where bare git repositories live, under DIR/repos/ which is "
                                        "emptied at start (default: a temp dir removed at exit)")
    ap.add_argument("--token", action="append", help=f"valid API token (repeatable; default {DEFAULT_TOKEN})")
    ap.add_argument("--seed", help="JSON seed file (see POST /__double/seed); replaces the default project")
    ap.add_argument("--tier", choices=("free", "premium"), default="free")
    ap.add_argument("--gitlab-version", default=DEFAULT_VERSION)
    ap.add_argument("--rate-limit", type=int, default=DEFAULT_RATE_LIMIT,
                    help="requests per window (a minute unless --rate-window) per token")
    ap.add_argument("--rate-window", type=int, default=60, help="length of the rate-limit window in seconds")
    ap.add_argument("--issues-per-minute", type=int, default=0,
                    help="issue creation limit per user and project (GitLab.com: 200; default 0 = none)")
    ap.add_argument("--notes-per-minute", type=int, default=0,
                    help="note creation limit per user (GitLab.com: 60; default 0 = none)")
    ap.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    app = App(args)
    server = Server((host or "127.0.0.1", int(port or 0)), Handler)
    server.app = app
    bhost, bport = server.server_address[:2]
    app.bound = f"http://{bhost}:{bport}"
    try:
        with app.state.lock:
            if args.seed:
                with open(args.seed, encoding="utf-8") as f:
                    app.state.seed(json.load(f))
            else:
                app.state.default_seed()
    except Exception as e:
        sys.stderr.write(f"gitlab_double: seeding failed: {e}\n")
        server.server_close()
        return 2

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"listening on {app.bound}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if app.tmp_state:
            shutil.rmtree(app.tmp_state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
