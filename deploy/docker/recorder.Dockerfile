# syntax=docker/dockerfile:1
# The Chaperone recorder: the ingest service (`recorder serve`), the review
# service (`recorder review`) and the offline tools (`recorder verify`,
# `recorder keygen`) are one binary. Build from the repository root:
#
#   docker build -f deploy/docker/recorder.Dockerfile -t chaperone/recorder:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chaperone-recorder --bin recorder \
    && install -D target/release/recorder /out/recorder

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/recorder /usr/local/bin/recorder
# The local spool (segments waiting for the object store) lives here.
WORKDIR /var/lib/chaperone
USER nonroot:nonroot
# Feed ingest, review, metrics.
EXPOSE 7000/tcp 7100/tcp 9200/tcp
ENTRYPOINT ["/usr/local/bin/recorder"]
CMD ["serve", "--config", "/etc/chaperone/recorder.toml"]
