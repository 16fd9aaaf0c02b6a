#!/bin/sh
# Every fuzz target builds and survives a short run (libFuzzer, ASan, UBSan).
# Longer campaigns: tests/fuzz/run.sh 600.
cd "$(dirname "$0")/../.." || exit 2
exec sh tests/fuzz/run.sh "${FACTORY_FUZZ_SECONDS:-5}"
