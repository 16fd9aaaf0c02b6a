#!/bin/sh
# Install what the Factory needs on Debian 12, only what is missing.
#   scripts/install-deps.sh build|test|static|image|lint|bench|browser|all ...
# Runs apt-get through sudo when not root. Safe to rerun.
set -eu

BUILD="build-essential pkg-config libcurl4-openssl-dev libcjson-dev libgit2-dev libpcre2-dev libyaml-dev libmicrohttpd-dev zlib1g-dev"
TEST="libcriterion-dev python3 python3-gitlab git curl ca-certificates rsync clang libclang-rt-14-dev openssl"
STATIC="dpkg-dev cmake libhttp-parser-dev libssl-dev zlib1g-dev file"
# The image built here without Docker (scripts/image-local.sh): buildah, and
# the static busybox and CA bundle that go into it.
IMAGE="buildah busybox-static ca-certificates file python3"
# make lint (tests/extra/lint.sh).
LINT="clang-tidy cppcheck"
BENCH="wrk hyperfine valgrind time util-linux"
# Browser tests (the intake widget): Debian's chromium, driven by playwright-core from npm.
BROWSER="chromium"

want=""
for group in "$@"; do
	case "$group" in
	build) want="$want $BUILD" ;;
	test) want="$want $BUILD $TEST" ;;
	static) want="$want $BUILD $STATIC" ;;
	image) want="$want $IMAGE" ;;
	lint) want="$want $BUILD $LINT" ;;
	bench) want="$want $BUILD $TEST $BENCH" ;;
	browser) want="$want $BROWSER" ;;
	all) want="$want $BUILD $TEST $STATIC $IMAGE $LINT $BENCH $BROWSER" ;;
	*) echo "install-deps: unknown group '$group' (build, test, static, image, lint, bench, browser, all)" >&2; exit 2 ;;
	esac
done

missing=""
# Node.js (for the npm-based checks): any node on PATH will do; else Debian's.
case " $want " in *" python3-gitlab "*)
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || want="$want nodejs npm" ;;
esac
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
