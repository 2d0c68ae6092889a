# The Playground image: one binary for every role (serve, gateway, worker, model-server, admin).
# Build stage: the Swift toolchain image (Debian 12) with the -dev packages of the C libraries the
# package links (the same ones scripts/install-deps.sh installs). Run stage: Debian 12 slim with
# only their runtime libraries, a non-root user, nothing written outside /tmp (mount an emptyDir
# there with a read-only root filesystem). The development machines have no Docker engine: this
# file is checked by Tests/e2e/test_deploy.py for what it promises, not built by the tests.
ARG SWIFT_IMAGE=swift:6.3-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libhiredis-dev libpq-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources Sources
RUN swift build -c release --product playground --static-swift-stdlib \
 && install -D "$(swift build -c release --show-bin-path)/playground" /out/playground

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libhiredis0.14 libpq5 libssl3 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin playground
WORKDIR /app
COPY --from=build /out/playground /app/playground
COPY Public Public
COPY lua lua
COPY sql sql
USER 10001:10001
# 8080: HTTP, WebSocket, /healthz, /readyz, /metrics. 8090: a gateway's stream links (workers dial it).
EXPOSE 8080 8090
ENTRYPOINT ["/app/playground"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
