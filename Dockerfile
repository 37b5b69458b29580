# The events-etl image the recipes in deploy/ run: built with the locked dependencies,
# run as a non-root user on a slim base with CA certificates (S3, the Data API and
# PostgreSQL over TLS need them). The binary embeds its migrations and SQL.
#   docker build --build-arg EVENTS_ETL_COMMIT=$(git rev-parse --short=12 HEAD) -t events-etl .
#   docker run --rm -e EVENTS_ETL_CONFIG=/etc/events-etl/config.toml \
#     -v "$PWD/config:/etc/events-etl:ro" events-etl check

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The commit --version names (.git is not sent to the build).
ARG EVENTS_ETL_COMMIT=unknown
ENV EVENTS_ETL_COMMIT=${EVENTS_ETL_COMMIT}
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY sql ./sql
COPY benches ./benches
RUN cargo build --release --locked --bin events-etl

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin events-etl
COPY --from=build /src/target/release/events-etl /usr/local/bin/events-etl
USER 10001
ENTRYPOINT ["/usr/local/bin/events-etl"]
CMD ["--help"]
