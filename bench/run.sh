#!/bin/sh
# Run every benchmark: bench/*.sh and bench/*.py (python via /usr/bin/python3).
# Each writes its figures to bench/results/<name>.json and prints a summary.
#   bench/run.sh [NAME-FILTER]
cd "$(dirname "$0")/.." || exit 2
filter="${1:-}"
status=0
for b in bench/*.sh bench/*.py; do
	[ -e "$b" ] || continue
	name=$(basename "$b")
	[ "$name" = run.sh ] && continue
	case "$name" in *"$filter"*) ;; *) continue ;; esac
	echo "== $name"
	case "$b" in
	*.py) /usr/bin/python3 "$b" || status=1 ;;
	*) sh "$b" || status=1 ;;
	esac
done
exit $status
