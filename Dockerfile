# The ECG anomaly worker. Build: docker build -t ecg-worker:0.1.0 .
# Run (the artifact directory comes from `make train`):
#   docker run --rm --read-only --cap-drop ALL --security-opt no-new-privileges \
#     -v "$PWD/artifacts:/app/artifacts:ro" -p 127.0.0.1:9108:9108 \
#     -e ECG_BOOTSTRAP_SERVERS=kafka:9092 ecg-worker:0.1.0
# Every ECG_* override is listed by: docker run --rm ecg-worker:0.1.0 ecg-worker --help
# Secrets (docs/security.md): mount them as files and point ECG_SASL_PASSWORD_FILE at them.
#
# The base image is pinned by digest, so a rebuild gets the same bytes; the tag beside it
# says which line it is. The digest could not be checked against Docker Hub on the machine
# that wrote this file: verify it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and update both together (docs/security.md, "Images").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---- build: our own wheel, with a hash-locked build backend
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.lock requirements/
RUN pip install --require-hashes --only-binary=:all: -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY trainer ./trainer
COPY clients ./clients
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# ---- runtime: locked dependencies (every file checked against its sha256), then our wheel
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements/worker.lock requirements/
RUN pip install --require-hashes --only-binary=:all: -r requirements/worker.lock
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY deploy ./deploy

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 ecg \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app ecg
USER 10001:10001

# Inside a container the metrics/health server must listen beyond loopback.
ENV ECG_METRICS_HOST=0.0.0.0 \
    ECG_METRICS_PORT=9108 \
    ECG_ARTIFACT=/app/artifacts/ecg
EXPOSE 9108
# Unhealthy (a 503 from /healthz: the loop stalled) ends the worker, so the restart policy
# starts a fresh one; see deploy/docker/healthcheck.py.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/app/deploy/docker/healthcheck.py"]

CMD ["ecg-worker", "--config", "/app/deploy/worker.yaml"]
