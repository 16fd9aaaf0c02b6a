#!/bin/sh
# The Factory image, built here without Docker (scripts/image-local.sh: the
# Dockerfile's final stage, FROM scratch, from the Debian static build, with
# buildah into an OCI layout), is under 25 MB (10^6 bytes) whichever way it
# is counted: compressed as pulled, as the layer tar, and unpacked. The
# script itself fails unless, in a chroot of the unpacked image, as the
# image's user, sh -c 'factory-<job> --version' works for every job.
set -eu
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sh scripts/image-local.sh "$work/image" >"$work/figures.json" 2>"$work/log" || {
	tail -30 "$work/log"
	exit 1
}
/usr/bin/python3 - "$work/figures.json" <<'PY'
import json, sys

f = json.load(open(sys.argv[1]))
cap = 25 * 1000 * 1000
fail = 0
for key in ("image_compressed_bytes", "layer_tar_bytes", "unpacked_bytes"):
    ok = 0 < f[key] < cap
    print("%-24s %10d bytes%s" % (key, f[key], "" if ok else "  OVER 25 MB"))
    fail |= not ok
if f["user"].split(":")[0] in ("", "0", "root"):
    print("the image runs as root")
    fail = 1
sys.exit(fail)
PY
