#!/bin/sh
# Build the fully static bin/factory (or $BIN/factory), every job in one binary,
# with bin/factory-<job> symlinks to it, on Debian 12 (see ../shared/notes/static-build.md).
#
# Debian's own -dev archives cannot link fully statically (curl and libgit2 pull
# in GSSAPI, microhttpd pulls in gnutls/p11-kit, cJSON has no archive), so this
# rebuilds four libraries from Debian's source packages with only what the
# Factory needs, into build-static/prefix (kept between runs), then links the
# jobs with -static. pcre2, libyaml, OpenSSL and zlib come from Debian's .a.
#   curl:          HTTP, HTTPS, FILE, SMTP(S); OpenSSL; no GSSAPI, SASL, netrc use
#   libgit2:       HTTPS through OpenSSL; no SSH, no GSSAPI
#   libmicrohttpd: no HTTPS (TLS belongs to the proxy in front of it)
#   cJSON:         its one source file
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build-static
PREFIX=$OUT/prefix
SRC=$OUT/src
JOBS=${JOBS:-2}
mkdir -p "$PREFIX" "$SRC"

sh scripts/install-deps.sh static

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! apt-cache showsrc curl >/dev/null 2>&1; then
	# Add deb-src entries mirroring the machine's deb entries.
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		grep -q '^Types: deb$' "$f" || continue
		sed 's/^Types: deb$/Types: deb-src/' "$f" | $SUDO tee "/etc/apt/sources.list.d/factory-src-$(basename "$f")" >/dev/null
	done
	$SUDO apt-get update -qq
fi

fetch() { # package -> prints its unpacked source dir
	pkg=$1
	dir=$(find "$SRC" -maxdepth 1 -type d -name "$pkg-[0-9]*" | head -n 1)
	if [ -z "$dir" ]; then
		# Newest version first; a security update's source may be missing from
		# the mirror, then the next one is taken (and said).
		got=""
		for v in $(apt-cache showsrc "$pkg" | awk '/^Version:/{print $2}' | sort -rV); do
			if (cd "$SRC" && apt-get source -qq "$pkg=$v" >/dev/null 2>&1); then
				got=$v
				break
			fi
			echo "static-build: source of $pkg $v not available, trying an older one" >&2
		done
		[ -n "$got" ] || { echo "static-build: apt-get source $pkg failed" >&2; exit 1; }
		dir=$(find "$SRC" -maxdepth 1 -type d -name "$pkg-[0-9]*" | head -n 1)
	fi
	echo "$dir"
}

if [ ! -f "$PREFIX/lib/libcurl.a" ]; then
	d=$(fetch curl)
	echo "static-build: curl from $d" >&2
	(cd "$d" && ./configure -q --prefix="$PREFIX" --disable-shared --enable-static --with-openssl \
		--without-libpsl --without-libidn2 --without-nghttp2 --without-nghttp3 --without-brotli --without-zstd \
		--without-libssh2 --without-librtmp --without-gssapi --without-libgsasl --disable-ldap --disable-ldaps \
		--disable-rtsp --disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap \
		--disable-smb --disable-gopher --disable-mqtt --disable-manual --disable-ntlm \
		--with-ca-bundle=/etc/ssl/certs/ca-certificates.crt >/dev/null &&
		make -s -j"$JOBS" -C lib >/dev/null && make -s -C lib install >/dev/null &&
		make -s -C include install >/dev/null && make -s install-pkgconfigDATA >/dev/null)
fi

if [ ! -f "$PREFIX/lib/libgit2.a" ]; then
	d=$(fetch libgit2)
	echo "static-build: libgit2 from $d" >&2
	rm -rf "$OUT/libgit2-build"
	cmake -S "$d" -B "$OUT/libgit2-build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
		-DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=OFF -DBUILD_TESTS=OFF -DBUILD_CLI=OFF -DBUILD_CLAR=OFF \
		-DUSE_GSSAPI=OFF -DUSE_HTTPS=OpenSSL -DUSE_SSH=OFF -DUSE_NTLMCLIENT=OFF -DREGEX_BACKEND=pcre2 \
		-DUSE_HTTP_PARSER=system -DUSE_BUNDLED_ZLIB=OFF >/dev/null
	cmake --build "$OUT/libgit2-build" -j "$JOBS" >/dev/null
	cmake --install "$OUT/libgit2-build" >/dev/null
fi

if [ ! -f "$PREFIX/lib/libmicrohttpd.a" ]; then
	d=$(fetch libmicrohttpd)
	echo "static-build: libmicrohttpd from $d" >&2
	(cd "$d" && ./configure -q --prefix="$PREFIX" --disable-shared --enable-static --disable-https \
		--disable-doc --disable-examples --disable-curl >/dev/null &&
		make -s -j"$JOBS" -C src/microhttpd >/dev/null && make -s -C src/microhttpd install >/dev/null &&
		make -s -C src/include install >/dev/null && make -s install-pkgconfigDATA >/dev/null)
fi

if [ ! -f "$PREFIX/lib/libcjson.a" ]; then
	d=$(fetch cjson)
	echo "static-build: cJSON from $d" >&2
	mkdir -p "$PREFIX/include/cjson" "$PREFIX/lib/pkgconfig"
	cc -O2 -c -o "$OUT/cJSON.o" "$d/cJSON.c"
	ar rcs "$PREFIX/lib/libcjson.a" "$OUT/cJSON.o"
	cp "$d/cJSON.h" "$PREFIX/include/cjson/cJSON.h"
	printf 'prefix=%s\nName: libcjson\nDescription: cJSON\nVersion: 1.7.15\nLibs: -L${prefix}/lib -lcjson\nCflags: -I${prefix}/include -I${prefix}/include/cjson\n' \
		"$PREFIX" >"$PREFIX/lib/pkgconfig/libcjson.pc"
fi

# Our prefix first; pcre2, yaml, zlib, OpenSSL from Debian.
# One multi-call binary, $OUTBIN/factory (every job, one copy of the
# libraries: see jobs/factory/factory.c), and a factory-<job> symlink to it
# per job. SEPARATE=1 also links the separate per-job binaries, into
# $OUTBIN/separate/ (for measuring; they share the objects).
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
OUTBIN=${BIN:-bin}
make -s -j"$JOBS" STATIC=1 BUILD=build-static/obj BIN="$OUTBIN" multicall
strip "$OUTBIN/factory"
file "$OUTBIN/factory"
for job in $("$OUTBIN/factory" --list); do
	ln -sfn factory "$OUTBIN/factory-$job"
done
if [ "${SEPARATE:-0}" = 1 ]; then
	make -s -j"$JOBS" STATIC=1 BUILD=build-static/obj BIN="$OUTBIN/separate" all
	strip "$OUTBIN"/separate/factory-*
fi
