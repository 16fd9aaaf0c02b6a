#!/usr/bin/python3
"""Write a synthetic CI job log of about SIZE bytes to PATH (for bench/pipeline_throughput.sh).

The log looks like a long GitLab job: section markers, ANSI colours, echoed
commands, compiler lines, package manager progress with '\\r' updates,
passing tests, warnings, timestamps, and now and then lines that hold the
classifier's keywords without being the failure ("0 errors", "-Werror",
"error handling tests", retried downloads). It ends with a compile error
and GitLab's failure line. Seeded: the same size gives the same log.

  pipeline_gen_log.py PATH SIZE_MB
"""
import random
import sys

ESC = "\x1b"


def pool(rng):
    files = ["src/%s/%s.c" % (d, f) for d in ("core", "net", "db", "ui", "util") for f in
             ("alloc", "buffer", "conn", "hash", "list", "parse", "queue", "render", "sched", "str")]
    tests = ["test_%s_%s" % (a, b) for a in ("parse", "render", "queue", "auth", "cache", "http")
             for b in ("empty", "large", "unicode", "timeout", "retry", "errors", "nested")]

    def gen():
        k = rng.random()
        f = rng.choice(files)
        if k < 0.18:
            return "gcc -O2 -g -Wall -Wextra -Werror -Iinclude -c -o %s %s" % (f.replace(".c", ".o"), f)
        if k < 0.30:
            return "%s[32;1mPASSED%s[0;m tests/%s.py::%s (%d ms)" % (ESC, ESC, f.split("/")[1], rng.choice(tests),
                                                                     rng.randint(1, 900))
        if k < 0.40:
            return "  ok %d - %s handles %s input" % (rng.randint(1, 5000), rng.choice(tests), rng.choice(
                ("empty", "large", "binary", "utf-8")))
        if k < 0.48:
            pct = rng.randint(1, 99)
            return "Downloading %s-%d.%d.tgz  %d%%\r%s[0KDownloading %s  100%%" % (
                rng.choice(("lodash", "react", "left-pad", "openssl")), rng.randint(1, 9), rng.randint(0, 40),
                pct, ESC, "done")
        if k < 0.55:
            return "%s: In function '%s':" % (f, rng.choice(("parse_header", "queue_push", "hash_grow")))
        if k < 0.60:
            return "%s:%d:%d: warning: unused variable 'tmp%d' [-Wunused-variable]" % (
                f, rng.randint(1, 3000), rng.randint(1, 80), rng.randint(0, 99))
        if k < 0.66:
            return "2026-11-27T10:%02d:%02d.%03dZ INFO worker[%d] processed batch %d in %dms (0 errors)" % (
                rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999), rng.randint(1, 16),
                rng.randint(1, 10 ** 6), rng.randint(1, 5000))
        if k < 0.70:
            return "%s[0Ksection_start:%d:step_%d[collapsed=true]\r%s[0K%s[36;1mRunning step %d%s[0;m" % (
                ESC, 1700000000 + rng.randint(0, 10 ** 6), rng.randint(0, 99), ESC, ESC, rng.randint(0, 99), ESC)
        if k < 0.74:
            return "%s[0Ksection_end:%d:step_%d\r%s[0K" % (ESC, 1700000000 + rng.randint(0, 10 ** 6),
                                                        rng.randint(0, 99), ESC)
        if k < 0.78:
            return "$ make -j4 %s" % rng.choice(("all", "check-deps", "docs", "lib"))
        if k < 0.82:
            return "    at com.example.%s.%s(%s.java:%d)" % (rng.choice(("Parser", "Queue", "Cache")),
                                                           rng.choice(("run", "apply", "get")),
                                                           rng.choice(("Parser", "Queue", "Cache")),
                                                           rng.randint(1, 900))
        if k < 0.85:
            return "retrying request to registry (attempt %d of 5): ok" % rng.randint(1, 2)
        if k < 0.88:
            return "test %s ... ok" % rng.choice(tests)
        if k < 0.90:
            return ""
        return "%s %s %s" % (rng.choice(("Compiling", "Linking", "Checking", "Generating")), f,
                             "x" * rng.randint(0, 60))

    return gen


def main():
    path, size_mb = sys.argv[1], float(sys.argv[2])
    want = int(size_mb * 1024 * 1024)
    rng = random.Random(6)
    gen = pool(rng)
    # a block of 4 MiB of varied lines, written again and again with its
    # first line changed so that no two blocks are byte-identical
    lines = []
    n = 0
    while n < 4 * 1024 * 1024:
        line = gen()
        lines.append(line)
        n += len(line) + 1
    block = ("\n".join(lines) + "\n").encode()
    tail = ("$ make -j4 all\n"
            "gcc -O2 -c -o src/core/parse.o src/core/parse.c\n"
            "src/core/parse.c:412:17: error: 'struct header' has no member named 'lenght'\n"
            "  412 |     if (h->lenght > max)\n"
            "      |           ^~~~~~\n"
            "make: *** [Makefile:31: src/core/parse.o] Error 1\n"
            "%s[0Ksection_end:1700001000:step_script\r%s[0K\n"
            "%s[31;1mERROR: Job failed: exit code 1\n%s[0;m\n" % (ESC, ESC, ESC, ESC)).encode()
    written = 0
    i = 0
    with open(path, "wb") as f:
        while written + len(block) + len(tail) <= want:
            head = ("# block %d\n" % i).encode()
            f.write(head)
            f.write(block)
            written += len(head) + len(block)
            i += 1
        f.write(tail)
        written += len(tail)
    print(written)


if __name__ == "__main__":
    main()
