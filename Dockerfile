# One image with all three binaries: tributary-ingest, tributary-processor and tributary.
#
# Stages: `chef` has the toolchain and cargo-chef; `planner` turns the manifests into a
# recipe; `build` compiles the dependencies from the recipe alone (a layer that stays cached
# until Cargo.toml or Cargo.lock change), then the workspace; `runtime` is a slim Debian
# with the binaries, running as an unprivileged user. /var/lib/tributary/keys belongs to that
# user so that a fresh named volume mounted there (the compose stack's development key) does
# too.

FROM rust:1.95-slim-trixie AS chef
# librdkafka is built from source by rdkafka-sys: it needs a C toolchain, make and perl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
        --bin tributary --bin tributary-ingest --bin tributary-processor \
    && mkdir -p /out \
    && cp target/release/tributary target/release/tributary-ingest target/release/tributary-processor /out/

FROM debian:trixie-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tributary \
    && useradd --system --uid 10001 --gid tributary --no-create-home --shell /usr/sbin/nologin tributary \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/tributary/keys
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV TRIBUTARY_INGEST_LISTEN=0.0.0.0:8080 \
    TRIBUTARY_METRICS_LISTEN=0.0.0.0:9464 \
    TRIBUTARY_LOG_FORMAT=json
EXPOSE 8080 9464
CMD ["tributary-ingest"]
