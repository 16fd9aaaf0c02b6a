#!/bin/sh
# The Factory image's size, built here without Docker (scripts/image-local.sh:
# the Dockerfile's final stage from the Debian static build, with buildah, as
# an OCI layout), and the multi-call binary's size against the separate
# per-job static binaries it replaces. Writes bench/results/image.json.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SEPARATE=1 sh scripts/image-local.sh "$work/image" >"$work/figures.json"
/usr/bin/python3 - "$work/figures.json" bench/results/image.json <<'PY'
import datetime, json, platform, sys

f = json.load(open(sys.argv[1]))
mb = lambda n: round(n / 1e6, 2)
out = {
    "what": "the Factory image as the Dockerfile's final stage (FROM scratch: multi-call static binary + "
            "factory-<job> symlinks, static busybox, CA bundle), built with buildah (vfs, no daemon) from "
            "the Debian static build and Debian's busybox-static, pushed to an OCI layout with gzip layers",
    "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": platform.machine(),
    "image_compressed_mb": mb(f["image_compressed_bytes"]),
    "image_unpacked_mb": mb(f["unpacked_bytes"]),
    "target_mb": 25,
    "multicall_vs_separate": {
        "multicall_stripped_bytes": f["factory_bytes"],
        "separate_stripped_total_bytes": f["separate_static_total_bytes"],
        "saved_bytes": f["separate_static_total_bytes"] - f["factory_bytes"],
    },
    "figures": f,
}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print("image: %.2f MB compressed (layer %.2f MB gzip, %.2f MB tar), %.2f MB unpacked (%d files); target under 25 MB"
      % (mb(f["image_compressed_bytes"]), mb(f["layer_gzip_bytes"]), mb(f["layer_tar_bytes"]),
         mb(f["unpacked_bytes"]), f["unpacked_files"]))
print("multi-call static binary %.2f MB stripped vs %.2f MB for the %d separate ones"
      % (mb(f["factory_bytes"]), mb(f["separate_static_total_bytes"]), len(f["separate_static_bytes"])))
PY
