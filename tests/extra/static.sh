#!/bin/sh
# The static build: every job binary is statically linked, under 8 MiB, and
# runs with nothing else on the system (an empty chroot: no libc, no /etc).
set -eu
cd "$(dirname "$0")/../.."
BIN=build-static/bin sh scripts/static-build.sh >/tmp/factory-static-build.log 2>&1 || {
	tail -40 /tmp/factory-static-build.log
	exit 1
}
fail=0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for b in build-static/bin/factory-*; do
	name=$(basename "$b")
	if ! file "$b" | grep -q 'statically linked'; then
		echo "not static: $(file "$b")"
		fail=1
	fi
	size=$(stat -c %s "$b")
	if [ "$size" -gt $((8 * 1024 * 1024)) ]; then
		echo "$name is $size bytes, over 8 MiB"
		fail=1
	fi
	cp "$b" "$root/$name"
	if [ "$(id -u)" -eq 0 ]; then
		out=$(chroot "$root" "/$name" --version) || { echo "$name --version failed in an empty chroot"; fail=1; }
		case "$out" in "$name "*) ;; *) echo "unexpected --version output: $out"; fail=1 ;; esac
	fi
	echo "$name: $size bytes, static"
done
exit $fail
