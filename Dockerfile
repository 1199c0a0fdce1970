# qlik-lb: build with the Rust toolchain, run on a slim Debian with only the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
# etcd-client (the [cluster] store) generates its gRPC code with protoc at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the benches; cargo refuses a manifest whose targets are missing.
COPY benches ./benches
RUN cargo build --release --locked --bin qlik-lb

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/qlik-lb qlik-lb \
    # Owned by the service user so that a fresh named volume mounted here is writable by it.
    && mkdir -p /var/lib/qlik-lb /certs /etc/qlik-lb \
    && chown qlik-lb /var/lib/qlik-lb /certs
COPY --from=build /src/target/release/qlik-lb /usr/local/bin/qlik-lb
USER qlik-lb
WORKDIR /var/lib/qlik-lb
# front door, load balancing module, admin (metrics, status page)
EXPOSE 8080 8187 9090
ENTRYPOINT ["qlik-lb"]
CMD ["run", "--config", "/etc/qlik-lb/qlik-lb.toml"]
