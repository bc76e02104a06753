# Multi-stage build: compile with the full toolchain, run on a slim image as a numeric
# non-root user (Kubernetes' `runAsNonRoot` accepts it). Config is read from
# /etc/mongo-kafka-bridge/config.toml (mount it there); secrets come from MKB__* environment
# variables.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        cmake libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The manifest declares the criterion benches: cargo reads them even to build the binary.
COPY benches ./benches
# The dependencies in a layer of their own, built against an empty crate: a change to the
# sources rebuilds only the crate. The empty crate's fingerprints go, so the real one builds.
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin mongo-kafka-bridge \
    && rm -rf src target/release/.fingerprint/mongo-kafka-bridge-* \
        target/release/deps/mongo_kafka_bridge-* target/release/deps/libmongo_kafka_bridge-*
COPY src ./src
RUN cargo build --release --locked --bin mongo-kafka-bridge

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin bridge
COPY --from=build /src/target/release/mongo-kafka-bridge /usr/local/bin/mongo-kafka-bridge
COPY conf/example.toml /etc/mongo-kafka-bridge/config.toml
USER 10001:10001
# The HTTP endpoint must listen beyond loopback inside a container: set
# `http.address = "0.0.0.0:9187"` in the mounted config (or MKB__HTTP__ADDRESS). Beyond
# loopback the control endpoints (/pipelines) need a bearer token: give the container
# MKB_HTTP_TOKEN (or `http.token_file`), else they are disabled (403).
ENV MKB__HTTP__ADDRESS=0.0.0.0:9187
EXPOSE 9187
# The daemon's own probe (no curl in the image); it reads MKB__HTTP__ADDRESS and asks
# loopback when that is 0.0.0.0.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s \
    CMD ["/usr/local/bin/mongo-kafka-bridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mongo-kafka-bridge"]
CMD ["run", "--config", "/etc/mongo-kafka-bridge/config.toml"]
