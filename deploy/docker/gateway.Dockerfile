# syntax=docker/dockerfile:1
# The Chaperone gateway. Build from the repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t chaperone/gateway:0.1.0 .
#
# Stage 1 builds the release binary with the locked dependencies; stage 2
# is a distroless image with only the binary (no shell, no package
# manager), running as an unprivileged user.
#
# The production image has no development mode: it is built without the
# cargo feature `dev`, so it contains neither the built-in identity provider
# nor the review service nor any age identity code, and refuses `--dev`.
# `deploy/compose` (trying Chaperone out on one machine, with a test identity
# provider over plain http) builds its own image with `--build-arg
# FEATURES=dev`.

FROM rust:1.95-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
# The registry and target caches make rebuilds incremental; the binary is
# copied out of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chaperone-gateway --bin gateway --features "${FEATURES}" \
    && install -D target/release/gateway /out/gateway

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/gateway /usr/local/bin/gateway
# Development-mode state (.chaperone-dev) and embedded recordings go under
# the working directory: mount a volume here.
WORKDIR /var/lib/chaperone
USER nonroot:nonroot
# HTTP (pages, API, WebSockets, /livez, /readyz), metrics, media (UDP).
EXPOSE 8080/tcp 9100/tcp 40000/udp
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["--config", "/etc/chaperone/chaperone.toml"]
