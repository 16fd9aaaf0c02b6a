"""How fast factory-pipeline reads a repository for unused dependencies and
bloat (`factory-pipeline deps DIR`, the same walk and scanners the scheduled
run uses on its clone), and whether it finds exactly what was planted.

A synthetic monorepo: FILES source files spread over npm, Python, Go, Cargo
and Ruby, each ecosystem's manifest declaring DEPS entries of which a known
tenth are never used; an npm workspace of 50 packages (FILES sources, DEPS/5
entries each, each package judged by its own folder: a tenth of its entries
and one declared but used only by its neighbour planted unused, one used
only by a package that does not declare it (hoisted) that must not be);
plus the npm CLI's own published tree when it is on
this machine (/usr/lib/node_modules/npm) as a real-world sample.

Writes bench/results/pipeline_deps.json:
  files, bytes, wall_s, cpu_s, peak_rss_mb, declared, planted_unused,
  found_unused, false_unused (used entries reported unused: must be 0),
  missed_unused; the same for the workspace; and for the npm tree when
  present.

    /usr/bin/python3 bench/pipeline_deps.py [FILES] [DEPS]
"""
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FACTORY_BIN_DIR") or os.path.join(ROOT, "bin")


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_repo(root, nfiles, ndeps):
    rnd = random.Random(7)
    ecos = ["npm", "pypi", "go", "cargo", "ruby"]
    names = {e: ["%s-lib-%d" % (e, i) for i in range(ndeps)] for e in ecos}
    names["go"] = ["github.com/bench/mod%d" % i for i in range(ndeps)]
    unused = {e: set(rnd.sample(names[e], ndeps // 10)) for e in ecos}
    used = {e: [n for n in names[e] if n not in unused[e]] for e in ecos}
    write(root, "package.json", json.dumps({"name": "bench", "dependencies": {n: "^1.0.0" for n in names["npm"]}}))
    write(root, "requirements.txt", "".join("%s==1.0\n" % n for n in names["pypi"]))
    write(root, "go.mod", "module example.com/bench\n\ngo 1.22\n\nrequire (\n" +
          "".join("\t%s v1.0.0\n" % n for n in names["go"]) + ")\n")
    write(root, "Cargo.toml", "[package]\nname = \"bench\"\n\n[dependencies]\n" +
          "".join("%s = \"1\"\n" % n for n in names["cargo"]))
    write(root, "Gemfile", "source 'https://rubygems.org'\n" + "".join("gem '%s'\n" % n for n in names["ruby"]))
    # every used entry is used at least once, then random uses
    per = nfiles // 5
    for e in ecos:
        for i in range(per):
            picks = [used[e][i % len(used[e])]] + rnd.sample(used[e], 3)
            body = "x = 1\n" * 40
            if e == "npm":
                text = "".join("import m%d from '%s/sub';\n" % (j, p) for j, p in enumerate(picks)) + body
                write(root, "web/src/m%d/f%d.ts" % (i // 100, i), text)
            elif e == "pypi":
                text = "".join("import %s\n" % p.replace("-", "_") for p in picks) + body
                write(root, "py/pkg%d/f%d.py" % (i // 100, i), text)
            elif e == "go":
                text = "package p\n\nimport (\n" + "".join("\t\"%s/sub\"\n" % p for p in picks) + ")\n" + body
                write(root, "go/p%d/f%d.go" % (i // 100, i), text)
            elif e == "cargo":
                text = "".join("use %s::Thing;\n" % p.replace("-", "_") for p in picks) + body
                write(root, "rs/src/m%d/f%d.rs" % (i // 100, i), text)
            else:
                text = "".join("require '%s'\n" % p for p in picks) + body
                write(root, "rb/lib/m%d/f%d.rb" % (i // 100, i), text)
    return {e: unused[e] for e in ecos}


def make_workspace(root, nfiles, npkgs, ndeps):
    """An npm workspace of npkgs packages, each judged by its own folder:
    per package a tenth of its own entries used nowhere, plus its
    neighbour's first entry, declared but used only by the neighbour (both
    planted unused); its entry 2 used only by another package that does not
    declare it (hoisted: must not be reported)."""
    rnd = random.Random(11)
    planted = set()
    write(root, "package.json", json.dumps({"name": "ws", "private": True, "workspaces": ["packages/*"],
                                            "devDependencies": {"hoisted-tool": "^1.0.0"}}))
    used = {}
    for k in range(npkgs):
        own = ["lib-%d-%d" % (k, i) for i in range(ndeps)]
        dead = set(rnd.sample(own[3:], ndeps // 10))
        planted |= {("packages/p%d/package.json" % k, n) for n in dead}
        neighbour = "lib-%d-0" % ((k + 1) % npkgs)
        planted.add(("packages/p%d/package.json" % k, neighbour))
        deps = {n: "^1.0.0" for n in own + [neighbour]}
        write(root, "packages/p%d/package.json" % k, json.dumps({"name": "@ws/p%d" % k, "dependencies": deps}))
        used[k] = [n for n in own if n not in dead and not n.endswith("-2")]
    per = max(1, nfiles // npkgs)
    for k in range(npkgs):
        for i in range(per):
            picks = [used[k][i % len(used[k])]] + rnd.sample(used[k], 3)
            if i == 0:
                picks += ["lib-%d-2" % ((k - 3) % npkgs), "hoisted-tool"]
            text = "".join("import m%d from '%s';\n" % (j, p) for j, p in enumerate(picks)) + "x = 1\n" * 40
            write(root, "packages/p%d/src/m%d/f%d.ts" % (k, i // 100, i), text)
    return planted


def run_deps(path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "factory-pipeline"), "deps", path], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"})
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit("factory-pipeline deps failed: %s" % p.stderr[-2000:])
    return json.loads(p.stdout), {
        "wall_s": round(wall, 3),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
        "peak_rss_mb": round(after.ru_maxrss / 1024.0, 1),
    }


def main():
    nfiles = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    ndeps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    out = {"machine_note": "2 cores shared with other work: wall times vary; cpu_s is steadier"}
    tmp = tempfile.mkdtemp(prefix="bench-deps-")
    try:
        planted = make_repo(tmp, nfiles, ndeps)
        f, t = run_deps(tmp)
        found = {(u["eco"], u["name"]) for u in f["unused"]}
        want = {(e, n) for e, ns in planted.items() for n in ns}
        out["synthetic"] = dict(t, files=f["files"], bytes=f["bytes"], declared=f["declared"],
                                planted_unused=len(want), found_unused=len(found),
                                false_unused=len(found - want), missed_unused=len(want - found),
                                files_per_s=round(f["files"] / t["wall_s"]) if t["wall_s"] else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix="bench-deps-ws-")
    try:
        npkgs = 50
        want = make_workspace(tmp, nfiles, npkgs, ndeps // 5)
        f, t = run_deps(tmp)
        found = {(u["manifest"], u["name"]) for u in f["unused"]}
        out["workspace"] = dict(t, packages=npkgs, files=f["files"], bytes=f["bytes"], declared=f["declared"],
                                planted_unused=len(want), found_unused=len(found),
                                false_unused=len(found - want), missed_unused=len(want - found),
                                files_per_s=round(f["files"] / t["wall_s"]) if t["wall_s"] else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    npm = "/usr/lib/node_modules/npm"
    if os.path.isdir(npm):
        f, t = run_deps(npm)
        out["npm_cli_tree"] = dict(t, files=f["files"], bytes=f["bytes"], declared=f["declared"],
                                   unused_runtime=sorted(u["name"] for u in f["unused"]
                                                         if u["section"] == "dependencies"),
                                   unused_dev=len([u for u in f["unused"] if u["section"] != "dependencies"]),
                                   note="the published package ships no tests, so devDependencies used only by "
                                        "tests are reported: right for the tree as read")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "pipeline_deps.json"), "w") as fh:
        json.dump(out, fh, indent=2)
        fh.write("\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
