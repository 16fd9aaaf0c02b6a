#!/bin/sh
# Lay out the Factory image's root file system (the Dockerfile's final stage
# copies it into an empty image; scripts/image-local.sh does the same here):
#   /usr/local/bin/factory            the static multi-call binary
#   /usr/local/bin/factory-<job>      symlinks to it, one per job
#   /bin/busybox + its applets        /bin/sh for GitLab's job scripts, and
#                                     the usual tools (symlinks)
#   /etc/ssl/certs/ca-certificates.crt
#   /etc/passwd, /etc/group           root and factory (uid 10001, HOME /tmp)
#   /tmp                              mode 1777
#   scripts/image-rootfs.sh ROOTFS FACTORY BUSYBOX CA_BUNDLE
# Both binaries must be static: nothing else is in the image.
set -eu
[ $# -eq 4 ] || { echo "usage: image-rootfs.sh ROOTFS FACTORY BUSYBOX CA_BUNDLE" >&2; exit 2; }
root=$1 factory=$2 busybox=$3 ca=$4
for f in "$factory" "$busybox" "$ca"; do
	[ -f "$f" ] || { echo "image-rootfs: $f: not a file" >&2; exit 2; }
done
jobs=$("$factory" --list) || { echo "image-rootfs: $factory --list failed" >&2; exit 1; }
[ -n "$jobs" ] || { echo "image-rootfs: $factory names no job" >&2; exit 1; }

mkdir -p "$root/bin" "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"

cp "$factory" "$root/usr/local/bin/factory"
chmod 755 "$root/usr/local/bin/factory"
for j in $jobs; do
	ln -sfn factory "$root/usr/local/bin/factory-$j"
done

cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# Every applet where busybox would install it (bin/sh, usr/bin/env, ...);
# an older busybox without --list-full gets them all in /bin.
applets=$("$busybox" --list-full 2>/dev/null) || applets=$("$busybox" --list | sed 's|^|bin/|')
for a in $applets; do
	case "$a" in bin/busybox | */*/*/*) continue ;; */*) ;; *) continue ;; esac
	[ -e "$root/$a" ] || [ -L "$root/$a" ] && continue
	mkdir -p "$root/$(dirname "$a")"
	ln -s /bin/busybox "$root/$a"
done
[ -L "$root/bin/sh" ] || { echo "image-rootfs: $busybox has no sh applet" >&2; exit 1; }

cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 644 "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/bin/sh\nfactory:x:10001:10001:factory:/tmp:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nfactory:x:10001:\n' >"$root/etc/group"
chmod 644 "$root/etc/passwd" "$root/etc/group"
