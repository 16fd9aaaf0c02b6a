#!/usr/bin/env python3
"""Embed common/cilog_rules.yml into common/cilog_rules.c as a C string.

Run from anywhere: python3 jobs/pipeline/embed_rules.py [--check]
With --check it only says whether the embedded copy is up to date (exit 1 if not).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "common", "cilog_rules.yml")
DST = os.path.join(ROOT, "common", "cilog_rules.c")


def c_literal(line):
    out = []
    for ch in line:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "?":
            out.append("\\?")  # no trigraphs
        else:
            out.append(ch)
    return '\t"' + "".join(out) + '"'


def render(text):
    lines = text.splitlines(keepends=True)
    body = "\n".join(c_literal(l) for l in lines)
    return (
        "/* cilog_rules.c - the built-in CI log rules, generated from cilog_rules.yml\n"
        " * by jobs/pipeline/embed_rules.py: edit the YAML file, not this one. */\n"
        '#include "cilog.h"\n\n'
        "const char cilog_default_rules_yaml[] =\n" + body + ";\n"
    )


def main():
    with open(SRC, encoding="utf-8") as f:
        want = render(f.read())
    have = open(DST, encoding="utf-8").read() if os.path.exists(DST) else ""
    if "--check" in sys.argv:
        if have != want:
            print("common/cilog_rules.c is out of date: run python3 jobs/pipeline/embed_rules.py")
            return 1
        return 0
    if have != want:
        with open(DST, "w", encoding="utf-8") as f:
            f.write(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
