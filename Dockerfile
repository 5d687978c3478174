# jobpool controller image: build on Debian 12, ship only the binary, its shared libraries and
# the CA bundle, as a non-root numeric user that needs nothing writable.
#   tests/env/images.sh builds it with podman (see docs and the Makefile's `images` target).

ARG DEBIAN=debian:bookworm-slim

# ---- build -----------------------------------------------------------------------------------
FROM ${DEBIAN} AS build
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      make gcc libc6-dev pkg-config librabbitmq-dev libcurl4-openssl-dev libcjson-dev \
      libyaml-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY controller/src/ controller/src/
ARG VERSION=0.1.0
# The packages come from the apt-get step above; DEPS_SH=true skips the checkout's installer.
RUN make B=/out VERSION="${VERSION}" DEPS_SH=true /out/jobpool-controller

# ---- collect the runtime tree ----------------------------------------------------------------
# The runtime packages are installed here only so that their libraries can be copied out: the
# final image gets the controller plus exactly the shared objects the dynamic loader resolves
# for it (ldd), laid out merged-/usr like Debian, and the CA bundle libcurl verifies against.
FROM ${DEBIAN} AS rootfs
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      librabbitmq4 libcurl4 libcjson1 libyaml-0-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/jobpool-controller /rootfs/usr/local/bin/jobpool-controller
RUN set -eu; \
    cd /rootfs; \
    mkdir -p usr/lib usr/lib64 etc/ssl/certs etc/jobpool tmp; \
    ln -s usr/lib lib; ln -s usr/lib64 lib64; \
    for f in $(ldd usr/local/bin/jobpool-controller | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do \
      d=$(readlink -f "$(dirname "$f")"); mkdir -p ".$d"; cp -L "$f" ".$d/$(basename "$f")"; \
    done; \
    cp -L /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > etc/group; \
    printf 'hosts: files dns\n' > etc/nsswitch.conf; \
    chmod 1777 tmp; \
    ldconfig -r /rootfs; \
    chroot /rootfs /usr/local/bin/jobpool-controller --version

# ---- runtime ---------------------------------------------------------------------------------
FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="jobpool-controller" \
      org.opencontainers.image.description="Runs one short-lived worker (Kubernetes Job) per waiting RabbitMQ message" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="scratch"
COPY --from=rootfs /rootfs/ /
# 65532 is the conventional "nonroot" id (as in distroless); numeric so that Kubernetes can
# verify runAsNonRoot without reading /etc/passwd. Nothing is written to the root filesystem.
USER 65532:65532
# GnuTLS comes in through libcurl's dependencies only (TLS is OpenSSL's): skip its load-time
# init, ~0.8 MiB of resident memory (its own state and p11-kit's trust module).
ENV GNUTLS_NO_IMPLICIT_INIT=1
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/jobpool-controller", "--config", "/etc/jobpool/config.yaml"]
