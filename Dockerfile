# syntax=docker/dockerfile:1
# The operator image: `cellplane run` on distroless, as user 65532 (nonroot).
#   docker build -t ghcr.io/cellplane/cellplane:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# No database during the build: sqlx macros must use checked-in query data, never connect.
ENV SQLX_OFFLINE=true
COPY . .
# target/ is a cache mount, so the binary is copied out within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build -p cellplane --release --locked \
    && install -D -m 0755 target/release/cellplane /out/cellplane \
    && install -d /out/var/lib/cellplane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cellplane /cellplane
# Where the default SQLite journal lives; the chart mounts a volume here.
COPY --from=build --chown=65532:65532 /out/var/lib/cellplane /var/lib/cellplane
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/cellplane"]
CMD ["run"]
