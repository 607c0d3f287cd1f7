# syntax=docker/dockerfile:1
# The mlm image (NVIDIA GPU): as images/cpu.Dockerfile, with TensorFlow's CUDA libraries from
# pip (tensorflow[and-cuda], locked in images/requirements-gpu.lock), so the base needs no CUDA
# toolkit: only the node's NVIDIA driver, which the device plugin mounts (GKE:
# /usr/local/nvidia). Which GPUs a container sees is the device plugin's decision (it sets
# NVIDIA_VISIBLE_DEVICES for the GPUs it allocated); the image sets no default.
# Build from the repository root: docker build -f images/gpu.Dockerfile .
# For production, pin the base by digest too: python:3.11-slim-bookworm@sha256:<digest you pulled>.

# --- build: the wheel (mlm, components, pipelines), from the package sources -----------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# --- runtime: locked dependencies with the CUDA wheels, then the wheel, run by tini ----------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64
# tini is PID 1: it forwards SIGTERM to mlm (which saves a checkpoint) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 mlm \
    && useradd --uid 1000 --gid mlm --create-home --home-dir /home/mlm mlm
# Dependencies first, from the hashed lock (`make lock`): this layer changes only with the lock.
COPY images/requirements-gpu.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
# The package last: a source change rebuilds only this small layer.
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/mlm-*.whl \
    && pip check \
    && rm -rf /tmp/wheels
USER 1000:1000
WORKDIR /home/mlm
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["mlm", "--help"]
