# The conduit image: `docker build -t conduit .` (docs/install.md).
# complement-tests/test_dockerfile.py keeps this file in step with scripts/,
# the config loader and docs/install.md.

# Builder: the Rust toolchain and what RocksDB's build needs, the same
# packages scripts/install-system-deps installs (libclang-dev, g++).
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The same build as scripts/serve: release, locked dependencies.
RUN cargo build --release --locked \
 && cp target/release/conduit /usr/local/bin/conduit

# Runtime: the binary, CA certificates (federation and SSO over HTTPS), and
# an unprivileged user that owns /data.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin conduit \
 && mkdir -p /data \
 && chown conduit:conduit /data
COPY --from=builder /usr/local/bin/conduit /usr/local/bin/conduit
USER conduit
WORKDIR /data
VOLUME /data
# Configure by CONDUIT_* variables (CONDUIT_SERVER_NAME at least), or mount
# a conduit.toml and set CONDUIT_CONFIG=/data/conduit.toml.
ENV CONDUIT_DATABASE_PATH=/data/db \
    CONDUIT_ADDRESS=0.0.0.0 \
    CONDUIT_PORT=8008 \
    CONDUIT_FEDERATION_PORT=8448
EXPOSE 8008 8448
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["conduit", "health"]
ENTRYPOINT ["conduit"]
CMD ["serve"]
