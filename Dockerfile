# The cost-model replica: built in the Rust image, shipped in distroless cc (glibc, libgcc, CA
# certificates, no shell) as a non-root user. Linted by `scripts/image lint` (hadolint); the
# image the tests run (`scripts/image build`, `tests/image.rs`) mirrors the final stage below,
# so keep the two in step.
#
# Writable places: only /var/configs, owned by uid 65532: the ETL file store (ETL_DIR) and the
# local bucket folder (the binary's default ./data/bucket, relative to WORKDIR). With a read-only
# root file system (`--read-only`, Kubernetes readOnlyRootFilesystem) mount a volume, emptyDir
# or a folder writable by uid 65532 at /var/configs; without one the replica starts, serves
# /healthz, and answers /readyz 503 naming --etl-dir: never ready. (WORKDIR is the mount point
# itself: a WORKDIR below it would be created root-owned by the runtime in an empty volume.)
#
# No HEALTHCHECK: distroless has no shell or curl to run one. Probe GET /healthz (liveness) and
# GET /readyz (readiness) on port 9003 from the orchestrator instead.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
# Cargo.toml names the benches, so the manifest does not load without them.
COPY benches ./benches
RUN cargo build --release --locked --bin cost-model \
    && mkdir -p /out/var/configs/db/etl /out/var/configs/data/bucket

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
# The repository's URL, given at build time (--build-arg SOURCE=...): this tree names no remote.
ARG SOURCE=""
LABEL org.opencontainers.image.title="cost-model" \
      org.opencontainers.image.description="A highly available replica of the Kubecost cost-model container" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}"
COPY --from=build /src/target/release/cost-model /usr/local/bin/cost-model
# The writable tree, owned by the non-root user so a plain `docker run` works too. Both folders
# exist in the image: the bucket folder is created at start if missing, which a read-only root
# would refuse (exit 64) rather than report.
COPY --from=build --chown=65532:65532 /out/var/configs /var/configs
# Kubecost's ETL path. The bucket folder is left to the binary's default, ./data/bucket under
# WORKDIR (/var/configs/data/bucket), rather than set with ETL_BUCKET_DIR: that variable
# would make ETL_BUCKET_CONFIG (a Kubecost bucket secret) fail as "exclusive", and would let
# LEADER_FOLLOWER_ENABLED=true pass with a pod-local folder as its shared bucket.
ENV ETL_DIR=/var/configs/db/etl
WORKDIR /var/configs
EXPOSE 9003
# distroless's nonroot user, by number so runAsNonRoot can verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cost-model"]
