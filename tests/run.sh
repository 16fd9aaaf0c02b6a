#!/bin/sh
# Every test; ends with one line "N passed, N failed". See tests/run.py.
cd "$(dirname "$0")/.." || exit 2
exec /usr/bin/python3 tests/run.py "$@"
