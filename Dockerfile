# infergraph: the image that Prefect workers and their flow runs use.
#
# CPU build (the default; torch from PyTorch's CPU index, no CUDA libraries):
#   docker build -t infergraph .
# CUDA build: PyTorch's CUDA wheels carry the CUDA runtime, so the slim base stays;
# the host needs the NVIDIA driver and container toolkit (docker run --gpus all ...):
#   docker build -t infergraph:cu128 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# Another base (a hardened or CUDA image) must provide Python 3.11 as `python`, with pip:
#   docker build --build-arg BASE_IMAGE=registry.example.com/python:3.11 ...
#
# What it runs (override the command to choose):
#   default   a Prefect process worker for the `process` work pool (set PREFECT_API_URL;
#             health on :8080/health); flow runs execute in this image, entrypoints
#             such as flows/inference.py:inference resolve from the working directory
#   kubernetes / ecs work pools: set this image as the pool's `image` job variable;
#             the worker replaces the command with the flow run's own
#   online API (issue 6): docker run -p 8000:8000 \
#               -e INFERGRAPH_API_SIGNING_KEY=<32+ random bytes> \
#               -e INFERGRAPH_API_USERS_FILE=/run/secrets/users.json \
#               -e INFERGRAPH_HEALTH_URL=http://127.0.0.1:8000/health \
#               infergraph python -m infergraph.api --host 0.0.0.0 --port 8000
#             (mount the users file as a secret; the image holds no secrets)
#   S3 events bridge: python -m infergraph.events --queue s3-events
#   scenario runs: docker run infergraph python flows/scenarios.py demo
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --create-home --no-log-init --uid 10001 --user-group infergraph

WORKDIR /opt/infergraph

# Dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt
# (every version pinned) change, not on every code change.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY pyproject.toml constraints.txt README.md ./
COPY .ci/install-image .ci/install-image
RUN TORCH_INDEX_URL="${TORCH_INDEX_URL}" .ci/install-image deps

COPY infergraph infergraph
COPY flows flows
COPY tasks tasks
COPY blocks blocks
COPY prefect.yaml ./
RUN .ci/install-image project \
    && mkdir results logs \
    && chown infergraph:infergraph results logs

# The code stays root-owned and read-only for the runtime user; default sinks
# (results/) and the API's request log (logs/) are the writable places.
ENV PYTHONPATH=/opt/infergraph \
    INFERGRAPH_HEALTH_URL=http://127.0.0.1:8080/health
USER 10001:10001

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['INFERGRAPH_HEALTH_URL'], timeout=4)"]

CMD ["prefect", "worker", "start", "--pool", "process", "--type", "process", "--with-healthcheck"]
