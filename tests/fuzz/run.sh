#!/bin/sh
# tests/fuzz/run.sh [seconds] - build every tests/fuzz/fuzz_*.c with libFuzzer,
# ASan and UBSan against all of common/*.c into build-fuzz/, then run each
# for `seconds` (default 10). Exits non-zero when a target fails to build
# or finds a crash, leak, sanitizer report or timeout; the input that did
# it is kept as build-fuzz/<target>-crash-* (or leak-, timeout-, oom-).
#
#   FUZZ_CC=clang-14      the compiler (default clang)
#   FUZZ_TARGETS="a b"    only these targets (names without .c)
#   FUZZ_JOBS=2           parallel fuzzing processes per target (default 1)
#
# Corpora grow in build-fuzz/corpus/<target>/ and are reused next time.
# Flags are kept in plain variables and split on purpose (as make does):
# shellcheck disable=SC2086,SC2089,SC2090
set -u
cd "$(dirname "$0")/../.." || exit 2

secs=${1:-10}
case $secs in
'' | *[!0-9]*) echo "usage: tests/fuzz/run.sh [seconds]" >&2; exit 2 ;;
esac
CC=${FUZZ_CC:-clang}
PKGS="libcurl libcjson libgit2 libpcre2-8 yaml-0.1 libmicrohttpd"
VERSION=$(cat VERSION 2>/dev/null || echo 0.1.0)
OUT=build-fuzz

if ! pkg_cflags=$(pkg-config --cflags $PKGS) || ! pkg_libs=$(pkg-config --libs $PKGS); then
	echo "fuzz: pkg-config cannot find $PKGS" >&2
	exit 2
fi
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=gnu11 -g -O1 $SAN -Icommon $pkg_cflags -DFACTORY_VERSION=\"$VERSION\""

mkdir -p "$OUT/obj" "$OUT/corpus" || exit 2

# The library: every common/*.c, instrumented for coverage but without
# libFuzzer's main.
objs=""
for src in common/*.c; do
	obj="$OUT/obj/$(basename "${src%.c}").o"
	# Rebuilt when missing or older than its source or any header.
	if [ ! -f "$obj" ] || [ -n "$(find "$src" common -maxdepth 1 \( -path "$src" -o -name '*.h' \) -newer "$obj" 2>/dev/null | head -n 1)" ]; then
		$CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj" || { echo "fuzz: cannot build $src" >&2; exit 2; }
	fi
	objs="$objs $obj"
done

# Dictionaries for the targets of this module; others run without one.
dict_for() {
	case $1 in
	fuzz_yaml)
		printf '%s\n' '"---"' '"..."' '": "' '"- "' '"? "' '"&a "' '"*a"' '"!!str "' '"!!int "' '"!!float "' \
			'"!!bool "' '"!!null "' '"!!map "' '"!!seq "' '"!custom "' '"{"' '"}"' '"["' '"]"' '"|\x0a"' \
			'">-\x0a"' '"\x22"' '"'"'"'"' '"~"' '"null"' '"true"' '"yes"' '"0x1F"' '"0o17"' '".inf"' '".nan"' \
			'"1e999"' '"9007199254740993"' '"\x5c0"' '"%YAML 1.2\x0a"' '"%TAG ! tag:x,2000:\x0a"' '"<<: "' \
			'"\x0a  "' '"\x09"' '"#"'
		;;
	fuzz_untrusted)
		printf '%s\n' '"/close"' '"\x0a/"' '"\x0d\x0a"' '"\x0d"' '"@all"' '"@"' '"<!--"' '"-->"' '"&#64;"' '"&#x40;"' \
			'"&commat;"' '"https://a.b/"' '"://"' '"glpat-"' '"ghp_"' '"github_pat_"' '"sk-"' '"sk-ant-"' \
			'"xoxb-"' '"AKIA"' '"GR1348941"' '"eyJ"' '"Bearer "' '"Authorization: "' '"PRIVATE-TOKEN: "' \
			'"password="' '"\x22token\x22:"' '"4111 1111 1111 1111"' '"a@b.com"' '"\xc2\x85"' \
			'"\xe2\x80\xa8"' '"\xe2\x80\x8b"' '"\xef\xbf\xbd"' '"\x00"' '"\xff"' '"[MASKED]"' '"[secret]"'
		;;
	esac
}

status=0
for src in tests/fuzz/fuzz_*.c; do
	[ -f "$src" ] || continue
	name=$(basename "${src%.c}")
	if [ -n "${FUZZ_TARGETS:-}" ]; then
		case " $FUZZ_TARGETS " in
		*" $name "*) ;;
		*) continue ;;
		esac
	fi
	echo "== $name: building"
	if ! $CC $CFLAGS -fsanitize=fuzzer "$src" $objs $pkg_libs -lm -lpthread -o "$OUT/$name"; then
		echo "== $name: BUILD FAILED" >&2
		status=1
		continue
	fi
	mkdir -p "$OUT/corpus/$name"
	dict=""
	if [ -n "$(dict_for "$name")" ]; then
		dict_for "$name" >"$OUT/$name.dict"
		dict="-dict=$OUT/$name.dict"
	fi
	echo "== $name: fuzzing for ${secs}s"
	jobs=""
	if [ "${FUZZ_JOBS:-1}" -gt 1 ] 2>/dev/null; then
		# Fork mode: the parent stops the workers at max_total_time.
		jobs="-fork=$FUZZ_JOBS -ignore_crashes=0"
	fi
	if "$OUT/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$OUT/$name-" $jobs $dict "$OUT/corpus/$name" \
		>"$OUT/$name.log" 2>&1; then
		echo "== $name: ok ($(grep -c . "$OUT/$name.log") log lines, corpus $(find "$OUT/corpus/$name" -type f | wc -l))"
	else
		echo "== $name: FAILED, see $OUT/$name.log" >&2
		tail -n 40 "$OUT/$name.log" >&2
		status=1
	fi
done
exit $status
