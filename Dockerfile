# The Factory's image: one static multi-call binary (every job; factory-<job>
# are symlinks to it) built on Alpine (musl), in an image built FROM scratch
# that holds only that binary, a static busybox (GitLab runs job scripts with
# /bin/sh; busybox also gives env, mkdir, cat, ... to the runner's script) and
# the CA bundle. No package manager, no libc, no git: the jobs that run in
# this image (setup, triage, release, watch, intake) speak HTTPS and git
# through the binary's own libcurl and libgit2.
#
# Docker does not run on the development machines; the project's pipeline
# builds this file (kaniko). Locally, scripts/image-local.sh builds the final
# stage below from the Debian static build with buildah (no daemon, no
# registry), and tests/extra/image.sh checks it: size, and the entry point
# run in a chroot of the unpacked image. See docs/image.md.

FROM alpine:3.20 AS build
RUN apk add --no-cache build-base pkgconf make \
        curl-dev curl-static openssl-dev openssl-libs-static zlib-dev zlib-static \
        nghttp2-dev nghttp2-static brotli-dev brotli-static zstd-dev zstd-static \
        libidn2-dev libidn2-static libunistring-dev libunistring-static \
        c-ares-dev c-ares-static libpsl-dev libpsl-static \
        libgit2-dev libgit2-static libssh2-dev libssh2-static http-parser-dev \
        pcre2-dev pcre2-static yaml-dev yaml-static \
        libmicrohttpd-dev libmicrohttpd-static cjson-dev cjson-static \
        busybox-static ca-certificates file
WORKDIR /src
COPY Makefile VERSION ./
COPY common/ common/
COPY jobs/ jobs/
COPY scripts/image-rootfs.sh scripts/
RUN make -j"$(nproc)" STATIC=1 BUILD=/build BIN=/out multicall \
    && strip /out/factory \
    && file /out/factory | grep -v 'dynamically linked' \
    && file /bin/busybox.static | grep -v 'dynamically linked' \
    && sh scripts/image-rootfs.sh /rootfs /out/factory /bin/busybox.static /etc/ssl/certs/ca-certificates.crt \
    && for j in $(/out/factory --list); do "/rootfs/usr/local/bin/factory-$j" --version || exit 1; done

# The final stage: scripts/image-local.sh builds exactly these lines (with
# the COPY taken from a local directory), so keep the COPY line as it is.
FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    FACTORY_CA_FILE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
CMD ["factory", "--help"]
