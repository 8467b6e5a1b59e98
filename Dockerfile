# netshrink: one image; docker-compose.yml runs it as api, worker and gpu-worker.
#
#   docker build -t netshrink .                                  # CPU torch (default)
#   docker build -t netshrink:cuda --build-arg TORCH_VARIANT=cu128 .   # a CUDA torch build
#   docker build --build-arg TORCH_WHEELHOUSE=wheelhouse/ ...    # torch from a local wheel (no download)
#   docker build --build-arg BASE_IMAGE=local/python:3.11-bookworm ...   # another Python 3.11 base
#
# Pins: torch's version and every other dependency come from requirements.lock (constraints), so the
# image runs the same versions as CI ("same seed, same bytes" needs pinned versions).
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, cu126, cu128, ...); the CUDA
# wheels bundle their CUDA runtime via nvidia-* wheels, so the slim base works with the NVIDIA
# container toolkit. Override TORCH_INDEX_URL to use a mirror.
# TORCH_WHEELHOUSE: a folder inside the build context holding the torch wheel (e.g. the CPU wheel
# from a machine's pip cache); torch is then installed from it with --no-index, and the other
# dependencies still come from the package index. Empty (the default): torch comes from
# TORCH_INDEX_URL. wheelhouse/ is always in the context (its README.md keeps it there).
# BASE_IMAGE: any Debian-like image with Python 3.11 as `python` on PATH and groupadd/useradd.
# The default is the official image users pull; CI builds on a debootstrap bookworm base that it
# imports itself (.ci/docker-smoke), since no image registry is reachable there.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- requirements: the runtime dependencies of pyproject.toml, as a file --------------------------
# (only this file, not pyproject.toml, reaches the deps stage: other pyproject edits keep it cached)
FROM ${BASE_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /requirements.txt

# ---- deps: a virtualenv with the pinned dependencies (the big layer; source edits keep it cached) --
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_WHEELHOUSE=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv

COPY requirements.lock ./
COPY --from=requirements /requirements.txt ./
COPY ${TORCH_WHEELHOUSE:-wheelhouse/} /wheelhouse/
# torch first, at the version requirements.lock pins: from the wheelhouse when one is given (no
# index, no dependencies: the next step installs torch's dependencies from the index), else from
# the variant's index.
RUN if [ -n "${TORCH_WHEELHOUSE}" ]; then \
        pip install --no-cache-dir --no-index --no-deps --find-links /wheelhouse \
            "$(grep -E '^torch==' requirements.lock)"; \
    else \
        pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.lock)"; \
    fi
# The runtime dependencies of pyproject.toml, pinned by the lock (dev tools are not installed).
RUN pip install --no-cache-dir --requirement requirements.txt --constraint requirements.lock

# ---- build: the netshrink wheel ------------------------------------------------------------------
FROM deps AS build
COPY pyproject.toml README.md ./
COPY src ./src
COPY compression ./compression
COPY reporting ./reporting
COPY workers ./workers
COPY service ./service
COPY client ./client
COPY cli ./cli
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- runtime: the virtualenv plus the wheel, as an unprivileged user ------------------------------
# The dependencies and the package are separate layers: a source change rebuilds and ships only the
# small package layer, not the ~1 GB virtualenv.
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="netshrink" \
      org.opencontainers.image.description="Model-compression microservice" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 netshrink \
 && useradd --system --uid 10001 --gid netshrink --home-dir /app --create-home --shell /usr/sbin/nologin netshrink \
 && mkdir -p /data \
 && chown netshrink:netshrink /data
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/netshrink-*.whl \
 && rm -rf /tmp/dist \
 && /opt/venv/bin/python -c "import netshrink.compression, netshrink.service.main, netshrink.workers.tasks, netshrink.client, netshrink.cli.main"
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
