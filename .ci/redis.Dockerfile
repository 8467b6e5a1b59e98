# CI only (.ci/docker-smoke): Debian's redis-server on the same debootstrap base as the netshrink
# image, because no image registry (and so no redis:7.4-alpine) is reachable in CI.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server=5:7.0.* \
 && rm -rf /var/lib/apt/lists/*
# hadolint ignore=DL3066
USER redis
WORKDIR /var/lib/redis
CMD ["redis-server", "--bind", "127.0.0.1", "--port", "6379"]
