# MLflow tracking server + model registry for docker-compose.yml, on Postgres.
# Keep MLFLOW_VERSION equal to the mlflow pin in constraints.txt: the scorer's client talks to it.
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}"

RUN groupadd --system --gid 10002 mlflow \
 && useradd --system --uid 10002 --gid mlflow --home-dir /home/mlflow --create-home mlflow \
 && mkdir -p /mlartifacts \
 && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
VOLUME ["/mlartifacts"]
EXPOSE 5002

CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5002", "--artifacts-destination", "/mlartifacts"]
