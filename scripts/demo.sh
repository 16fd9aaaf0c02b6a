#!/bin/sh
# The demo (the README's first command runs it through `make demo`): the whole
# Factory loop against the local doubles. See scripts/demo.py.
cd "$(dirname "$0")/.." || exit 2
exec /usr/bin/python3 scripts/demo.py "$@"
