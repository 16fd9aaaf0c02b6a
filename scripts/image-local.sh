#!/bin/sh
# Build the Factory image here, without Docker: the Dockerfile's final stage
# (FROM scratch; COPY the root file system; ENV; USER; CMD), with the root
# file system laid out by scripts/image-rootfs.sh from Debian's static pieces
# instead of the Alpine build stage:
#   the multi-call binary from the static build (scripts/static-build.sh),
#   busybox from Debian's busybox-static, the CA bundle from ca-certificates.
# buildah builds it (vfs storage in WORKDIR, chroot isolation: no daemon, no
# registry) and writes an OCI layout; the image is then unpacked from that
# layout and its command run in a chroot as the image's user, with the
# image's environment: sh -c 'factory-<job> --version' for every job.
#   scripts/image-local.sh WORKDIR     (root; WORKDIR is emptied first)
# Prints the figures as one JSON object on stdout; progress on stderr.
set -eu
[ $# -eq 1 ] || { echo "usage: image-local.sh WORKDIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "image-local: needs root (buildah storage, chroot)" >&2; exit 2; }
cd "$(dirname "$0")/.."
ROOT=$(pwd)
work=$1
rm -rf "$work"
mkdir -p "$work/ctx"
work=$(cd "$work" && pwd)

sh scripts/install-deps.sh static image >&2
BIN=build-static/bin sh scripts/static-build.sh >"$work/static-build.log" 2>&1 || {
	tail -40 "$work/static-build.log" >&2
	echo "image-local: the static build failed" >&2
	exit 1
}
factory=$ROOT/build-static/bin/factory
busybox=/bin/busybox
ca=/etc/ssl/certs/ca-certificates.crt
file -L "$busybox" | grep -q 'statically linked' || {
	echo "image-local: $busybox is not static ($(file -L "$busybox")): install busybox-static" >&2
	exit 1
}

sh scripts/image-rootfs.sh "$work/ctx/rootfs" "$factory" "$busybox" "$ca"

# The Dockerfile's last stage, its COPY --from=build taken from ctx/rootfs.
awk '/^FROM /{n++} {print n"\t"$0}' Dockerfile | awk -F'\t' -v last="$(grep -c '^FROM ' Dockerfile)" \
	'$1==last{sub(/^[^\t]*\t/, ""); print}' >"$work/ctx/Containerfile.stage"
grep -qx 'COPY --from=build /rootfs/ /' "$work/ctx/Containerfile.stage" || {
	echo "image-local: the Dockerfile's final stage has no 'COPY --from=build /rootfs/ /' line" >&2
	exit 1
}
grep -v '^COPY --from=build /rootfs/ /$' "$work/ctx/Containerfile.stage" | grep -q -- '--from' && {
	echo "image-local: the Dockerfile's final stage copies from another stage besides /rootfs" >&2
	exit 1
}
sed 's|^COPY --from=build /rootfs/ /$|COPY rootfs/ /|' "$work/ctx/Containerfile.stage" >"$work/ctx/Containerfile"

bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
bah bud --isolation chroot --timestamp 0 -t localhost/factory:local -f "$work/ctx/Containerfile" "$work/ctx" >&2
bah push --compression-format gzip localhost/factory:local "oci:$work/oci:factory" >&2
bah rmi -a >/dev/null 2>&1 || true
rm -rf "$work/storage" "$work/run"

# Read the OCI layout: manifest, config, layers; unpack the layers in order.
mkdir -p "$work/unpacked"
# With SEPARATE=1 the static build also links the per-job binaries, and
# their sizes are reported beside the multi-call binary's.
separate=""
[ "${SEPARATE:-0}" = 1 ] && separate=$ROOT/build-static/bin/separate
/usr/bin/python3 - "$work" "$factory" "$busybox" "$ca" "$separate" <<'PY'
import gzip, json, os, subprocess, sys

work, factory, busybox, ca, separate = sys.argv[1:6]
oci = os.path.join(work, "oci")
blob = lambda d: os.path.join(oci, "blobs", *d.split(":"))
index = json.load(open(os.path.join(oci, "index.json")))
mdesc = index["manifests"][0]
manifest = json.load(open(blob(mdesc["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
layers = manifest["layers"]
tar_bytes = 0
for layer in layers:
    assert layer["mediaType"].endswith("tar+gzip"), layer["mediaType"]
    data = gzip.open(blob(layer["digest"])).read()
    tar_bytes += len(data)
    subprocess.run(["tar", "-xzpf", blob(layer["digest"]), "-C", os.path.join(work, "unpacked")], check=True)
files = 0
unpacked = 0
for d, _, names in os.walk(os.path.join(work, "unpacked")):
    for n in names:
        p = os.path.join(d, n)
        if not os.path.islink(p):
            files += 1
            unpacked += os.path.getsize(p)
sep = {}
if separate:
    sep = {n: os.path.getsize(os.path.join(separate, n)) for n in sorted(os.listdir(separate))}
json.dump({
    "manifest_bytes": mdesc["size"],
    "config_bytes": manifest["config"]["size"],
    "layers": len(layers),
    "layer_gzip_bytes": sum(l["size"] for l in layers),
    "image_compressed_bytes": mdesc["size"] + manifest["config"]["size"] + sum(l["size"] for l in layers),
    "layer_tar_bytes": tar_bytes,
    "unpacked_bytes": unpacked,
    "unpacked_files": files,
    "factory_bytes": os.path.getsize(factory),
    "busybox_bytes": os.path.getsize(busybox),
    "ca_bundle_bytes": os.path.getsize(ca),
    **({"separate_static_bytes": sep, "separate_static_total_bytes": sum(sep.values())} if sep else {}),
    "user": config["config"].get("User", ""),
    "env": config["config"].get("Env", []),
    "cmd": config["config"].get("Cmd", []),
}, open(os.path.join(work, "figures.json"), "w"), indent=1)
PY

# Run the image as a container would: chroot into the unpacked layers, as
# the image's user, with only the image's environment.
user=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["user"])' "$work/figures.json")
envs=$(/usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["env"]))' "$work/figures.json")
run() { # command... (in the image)
	# shellcheck disable=SC2086
	(IFS='
'; exec env -i $envs chroot --userspec="$user" "$work/unpacked" "$@")
}
jobs=$("$factory" --list)
for j in $jobs; do
	out=$(run /bin/sh -c "factory-$j --version") || { echo "image-local: in the image, factory-$j --version failed: $out" >&2; exit 1; }
	case "$out" in "factory-$j "*) ;; *) echo "image-local: in the image, factory-$j --version printed: $out" >&2; exit 1 ;; esac
done
out=$(run /bin/sh -c 'factory --help') || { echo "image-local: in the image, factory --help failed" >&2; exit 1; }
[ "$(run /bin/sh -c 'id -u')" = "${user%%:*}" ] || { echo "image-local: the image does not run as $user" >&2; exit 1; }
run /bin/sh -c 'touch /tmp/w && rm /tmp/w' || { echo "image-local: /tmp is not writable in the image" >&2; exit 1; }
echo "image-local: in the image, as $user: sh -c 'factory-<job> --version' for $(echo $jobs)" >&2
cat "$work/figures.json"
