# The ECG anomaly worker. Build: docker build -t ecg-worker .
# Run (the artifact directory comes from `make train`):
#   docker run --rm -v "$PWD/artifacts:/app/artifacts:ro" -p 9108:9108 \
#     -e ECG_BOOTSTRAP_SERVERS=kafka:9092 ecg-worker
# Every ECG_* override is listed by: docker run --rm ecg-worker ecg-worker --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY trainer ./trainer
COPY clients ./clients
RUN pip install .
COPY deploy ./deploy

RUN useradd --system --uid 10001 --home-dir /app ecg
USER ecg

# Inside a container the metrics/health server must listen beyond loopback.
ENV ECG_METRICS_HOST=0.0.0.0 \
    ECG_METRICS_PORT=9108 \
    ECG_ARTIFACT=/app/artifacts/ecg
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]

CMD ["ecg-worker", "--config", "/app/deploy/worker.yaml"]
