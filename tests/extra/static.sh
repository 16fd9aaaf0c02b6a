#!/bin/sh
# The static build: one multi-call binary, build-static/bin/factory, holding
# every job, statically linked, under 10 MiB, with a factory-<job> symlink
# per job; in an empty chroot (no libc, no /etc) it answers --version and
# --help by both names (factory-<job> and factory <job>); and the shipped
# binary, through its symlinks, passes the setup and triage integration tests
# against the GitLab double (the whole suite runs the dynamic separate ones).
set -eu
cd "$(dirname "$0")/../.."
BIN=build-static/bin sh scripts/static-build.sh >/tmp/factory-static-build.log 2>&1 || {
	tail -40 /tmp/factory-static-build.log
	exit 1
}
fail=0
bin=build-static/bin/factory
cap=$((10 * 1024 * 1024))
if ! file -L "$bin" | grep -q 'statically linked'; then
	echo "not static: $(file -L "$bin")"
	fail=1
fi
size=$(stat -c %s "$bin")
if [ "$size" -gt "$cap" ]; then
	echo "factory is $size bytes, over 10 MiB"
	fail=1
fi
jobs=$("$bin" --list)
[ -n "$jobs" ] || { echo "factory --list names no job"; exit 1; }
for j in $(ls jobs); do
	[ -f "jobs/$j/main.c" ] || continue
	echo "$jobs" | grep -qx "$j" || { echo "job $j is missing from the multi-call binary"; fail=1; }
done
for j in $jobs; do
	link=build-static/bin/factory-$j
	if [ "$(readlink "$link" 2>/dev/null)" != factory ]; then
		echo "$link is not a symlink to factory"
		fail=1
	fi
done
echo "factory: $size bytes, static, jobs: $(echo $jobs)"

check() { # expected-prefix command...
	want=$1
	shift
	out=$(chroot "$root" "$@" 2>&1) || { echo "in an empty chroot, '$*' failed: $out"; fail=1; return; }
	case "$out" in "$want"*) ;; *) echo "'$*' printed: $(echo "$out" | head -3)"; fail=1 ;; esac
}
if [ "$(id -u)" -eq 0 ]; then
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	cp "$bin" "$root/factory"
	for j in $jobs; do ln -s factory "$root/factory-$j"; done
	check "factory " /factory --version
	check "usage: factory " /factory --help
	for j in $jobs; do
		check "factory-$j " "/factory-$j" --version
		check "usage: factory-$j " "/factory-$j" --help
		check "usage: factory-$j " /factory "$j" --help
	done
	# Through a name that is not a job: a usage error (2), not a crash.
	ln -s factory "$root/factory-nosuchjob"
	rc=0
	chroot "$root" /factory-nosuchjob >/dev/null 2>&1 || rc=$?
	[ "$rc" -eq 2 ] || { echo "factory-nosuchjob exited $rc, not 2"; fail=1; }
	echo "empty chroot: factory and $(echo "$jobs" | wc -l) job names run --version and --help"
else
	echo "not root: the empty-chroot run is not checked"
	fail=1
fi
for t in test_setup test_triage_run; do
	if ! FACTORY_BIN_DIR="$(pwd)/build-static/bin" PYTHONPATH="$(pwd)/tests" PYTHONDONTWRITEBYTECODE=1 \
		/usr/bin/python3 -m unittest "tests.integration.$t" >/tmp/factory-static-$t.log 2>&1; then
		tail -30 "/tmp/factory-static-$t.log"
		echo "tests/integration/$t.py fails against the static multi-call binary"
		fail=1
	else
		echo "tests/integration/$t.py: $(grep '^Ran' "/tmp/factory-static-$t.log"), static multi-call binary"
	fi
done
exit $fail
