# syntax=docker/dockerfile:1
# The fraud scorer image: one image for every role (`fraud topics|train|worker|simulate|api|tail`).
#   docker build -t fraud-scorer .          (docker-compose.yml builds it as fraud-scorer:local)

# ---- builder: a venv with the scorer and its pinned dependencies ------------------------------
FROM python:3.11-slim AS builder

# A compiler only for packages without a wheel on this platform (faust-streaming on arm64).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY core/ core/
COPY fraud/ fraud/
COPY schemas/ schemas/
COPY streams/ streams/
COPY models/ models/
COPY ops_api/ ops_api/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUD_API_HOST=0.0.0.0 \
    FRAUD_MODEL_CACHE_DIR=/data/model-cache \
    FRAUD_STATE_DIR=/data/faust

RUN groupadd --system --gid 10001 scorer \
 && useradd --system --uid 10001 --gid scorer --home-dir /app --shell /usr/sbin/nologin scorer \
 && mkdir -p /app /data/model-cache /data/faust \
 && chown -R scorer:scorer /app /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY --chown=scorer:scorer pyproject.toml constraints.txt ./
COPY --chown=scorer:scorer core/ core/
COPY --chown=scorer:scorer fraud/ fraud/
COPY --chown=scorer:scorer schemas/ schemas/
COPY --chown=scorer:scorer streams/ streams/
COPY --chown=scorer:scorer models/ models/
COPY --chown=scorer:scorer ops_api/ ops_api/

USER scorer
# Model cache and Faust state; a named volume mounted here starts with this ownership.
VOLUME ["/data"]

# The ops API (health, Prometheus metrics, training jobs) of `fraud worker` and `fraud api`.
EXPOSE 5000

# slim has no curl: ask the liveness endpoint with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/health/live', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["fraud"]
CMD ["worker"]
