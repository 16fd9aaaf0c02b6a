#!/bin/sh
# The demo: the Factory on its embedded default. Starts the GitLab double
# (tests/gitlab_double/) on loopback with a sample project, then runs the jobs
# against it and prints the board after each step. Reports go to demo-report/.
# Touches nothing beyond 127.0.0.1.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${FACTORY_BIN_DIR:-$ROOT/bin}
OUT=$ROOT/demo-report
STATE=$(mktemp -d)
rm -rf "$OUT"
mkdir -p "$OUT"

/usr/bin/python3 tests/gitlab_double/gitlab_double.py --listen 127.0.0.1:0 --state-dir "$STATE" --quiet \
	>"$STATE/double.out" 2>"$STATE/double.err" &
DOUBLE=$!
cleanup() {
	kill "$DOUBLE" 2>/dev/null || true
	wait "$DOUBLE" 2>/dev/null || true
	rm -rf "$STATE"
}
trap cleanup EXIT INT TERM
i=0
until grep -q '^listening on ' "$STATE/double.out" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$DOUBLE" 2>/dev/null; then
		echo "demo: the GitLab double did not start:" >&2
		cat "$STATE/double.err" >&2
		exit 1
	fi
	sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$STATE/double.out" | head -n 1)

export FACTORY_GITLAB_URL="$URL"
export FACTORY_PROJECT="factory/demo"
export FACTORY_GITLAB_TOKEN="glpat-double-token-0000"
export NO_COLOR=1

step() { # name, then the command
	name=$1
	shift
	echo
	echo "=== $name"
	FACTORY_REPORT_DIR="$OUT/$name" "$@"
}

echo "GitLab double at $URL, project $FACTORY_PROJECT"
step setup "$BIN/factory-setup" --print-board
step setup-again "$BIN/factory-setup"
echo
echo "Reports: $OUT/*/report.md"
