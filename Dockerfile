# Multi-stage build: compile with the full toolchain, run on a slim image as a non-root user.
# Config is read from /etc/mongo-kafka-bridge/config.toml (mount it there); secrets come from
# MKB__* environment variables.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        cmake libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest declares the criterion benches: cargo reads them even to build the binary.
COPY benches ./benches
RUN cargo build --release --locked --bin mongo-kafka-bridge

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
COPY --from=build /src/target/release/mongo-kafka-bridge /usr/local/bin/mongo-kafka-bridge
COPY conf/example.toml /etc/mongo-kafka-bridge/config.toml
USER bridge
# The HTTP endpoint must listen beyond loopback inside a container: set
# `http.address = "0.0.0.0:9187"` in the mounted config (or MKB__HTTP__ADDRESS).
ENV MKB__HTTP__ADDRESS=0.0.0.0:9187
EXPOSE 9187
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:9187/health || exit 1
ENTRYPOINT ["/usr/local/bin/mongo-kafka-bridge"]
CMD ["run", "--config", "/etc/mongo-kafka-bridge/config.toml"]
