# Multi-stage build: compile in the Rust image, run in a small distroless image as non-root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
COPY benches ./benches
RUN cargo build --release --locked --bin cost-model

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cost-model /usr/local/bin/cost-model
# The ETL file store; mount a volume here (the chart does).
ENV ETL_DIR=/var/configs/db/etl
EXPOSE 9003
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/cost-model"]
