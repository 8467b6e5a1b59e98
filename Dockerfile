# netshrink: one image; docker-compose.yml runs it as api, worker and gpu-worker.
#
#   docker build -t netshrink .                                  # CPU torch (default)
#   docker build -t netshrink:cuda --build-arg TORCH_VARIANT=cu128 .   # a CUDA torch build
#
# Pins: torch's version and every other dependency come from requirements.lock (constraints), so the
# image runs the same versions as CI ("same seed, same bytes" needs pinned versions).
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, cu126, cu128, ...); the CUDA
# wheels bundle their CUDA runtime via nvidia-* wheels, so the slim base works with the NVIDIA
# container toolkit. Override TORCH_INDEX_URL to use a mirror.

ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv with the pinned dependencies and the netshrink package ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv

COPY requirements.lock pyproject.toml README.md ./
# torch first, from the variant's index, at the version requirements.lock pins.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.lock)"
# The runtime dependencies of pyproject.toml, pinned by the lock (dev tools are not installed).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir --requirement /tmp/requirements.txt --constraint requirements.lock

COPY src ./src
COPY compression ./compression
COPY reporting ./reporting
COPY workers ./workers
COPY service ./service
COPY client ./client
COPY cli ./cli
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import netshrink.compression, netshrink.service.main, netshrink.workers.tasks, netshrink.client, netshrink.cli.main"

# ---- runtime: the virtualenv only, as an unprivileged user ---------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="netshrink" \
      org.opencontainers.image.description="Model-compression microservice" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 netshrink \
 && useradd --system --uid 10001 --gid netshrink --home-dir /app --create-home --shell /usr/sbin/nologin netshrink \
 && mkdir -p /data \
 && chown netshrink:netshrink /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NETSHRINK_DATA_DIR=/data \
    NETSHRINK_PORT=8000
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# Liveness of the API (GET /healthz). Worker containers override or disable it (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('NETSHRINK_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["netshrink"]
CMD ["serve", "--host", "0.0.0.0"]
