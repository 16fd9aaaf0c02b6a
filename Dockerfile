# The Factory's image: static musl binaries built on Alpine, in a minimal
# Alpine runtime (GitLab runs job scripts with /bin/sh, so not `scratch`).
# Docker does not run on the development machines; the project's own GitLab
# pipeline builds this file. Locally, `make static` is the tested static path.

FROM alpine:3.20 AS build
RUN apk add --no-cache build-base pkgconf make \
        curl-dev curl-static openssl-dev openssl-libs-static zlib-dev zlib-static \
        nghttp2-dev nghttp2-static brotli-dev brotli-static zstd-dev zstd-static \
        libidn2-dev libidn2-static libunistring-dev libunistring-static \
        c-ares-dev c-ares-static libpsl-dev libpsl-static \
        libgit2-dev libgit2-static libssh2-dev libssh2-static http-parser-dev \
        pcre2-dev pcre2-static yaml-dev yaml-static \
        libmicrohttpd-dev libmicrohttpd-static cjson-dev cjson-static \
        file
WORKDIR /src
COPY Makefile VERSION ./
COPY common/ common/
COPY jobs/ jobs/
RUN make -j"$(nproc)" STATIC=1 BUILD=/build BIN=/out all \
    && strip /out/factory-* \
    && file /out/factory-* | grep -v 'dynamically linked' \
    && for b in /out/factory-*; do "$b" --version; done

FROM alpine:3.20
RUN apk add --no-cache ca-certificates \
    && adduser -D -H -u 10001 factory
COPY --from=build /out/ /usr/local/bin/
USER factory
ENTRYPOINT []
CMD ["factory-setup", "--help"]
