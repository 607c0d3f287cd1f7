# syntax=docker/dockerfile:1
# The mlm image (NVIDIA GPU): as images/cpu.Dockerfile, with TensorFlow's CUDA libraries from
# pip (tensorflow[and-cuda]), so the base needs no CUDA toolkit: only the node's NVIDIA driver,
# which the device plugin mounts (GKE: /usr/local/nvidia). Build from the repository root:
# docker build -f images/gpu.Dockerfile .
# For production, pin the base by digest too: python:3.11-slim-bookworm@sha256:<digest you pulled>.

# --- build: the wheel (mlm, components, pipelines), from the package sources -----------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# --- runtime: the wheel, its pinned dependencies and the CUDA wheels, run unprivileged -------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/mlm-*.whl "tensorflow[and-cuda]==2.21.0" \
    && rm -rf /tmp/wheels \
    && groupadd --gid 1000 mlm \
    && useradd --uid 1000 --gid mlm --create-home --home-dir /home/mlm mlm
USER 1000:1000
WORKDIR /home/mlm
CMD ["mlm", "--help"]
