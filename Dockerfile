# The image a container work pool (docker, kubernetes) runs the retrain flow in:
#   docker build -t REGISTRY/qdup:TAG . && docker push REGISTRY/qdup:TAG
#   python -m deployments.retrain --work-pool POOL --image REGISTRY/qdup:TAG
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: a deployment registered with --git-source clones the flow code at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/qdup
# Only what `pip install .` needs; the rest of the repository stays out (see .dockerignore).
COPY pyproject.toml constraints.txt README.md ./
COPY qdup ./qdup
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY data_contracts ./data_contracts
RUN pip install -c constraints.txt ".[all]" && rm -rf /opt/qdup/build

# Runs as an unprivileged user; all state (cache, runs, store) lives in one volume.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin qdup \
    && mkdir -p /var/lib/qdup \
    && chown qdup:qdup /var/lib/qdup
ENV QDUP_HOME=/var/lib/qdup \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
VOLUME ["/var/lib/qdup"]
USER qdup
WORKDIR /home/qdup

CMD ["qdup", "--help"]
