# syntax=docker/dockerfile:1
# The mlm image (CPU): the `mlm` command and the Python package every pipeline step and every
# training worker runs. Build from the repository root: docker build -f images/cpu.Dockerfile .
# For production, pin the base by digest too: python:3.11-slim-bookworm@sha256:<digest you pulled>.

# --- build: the wheel (mlm, components, pipelines), from the package sources -----------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# --- runtime: locked dependencies, then the wheel, run by tini as an unprivileged user --------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2
# tini is PID 1: it forwards SIGTERM to mlm (which saves a checkpoint) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 mlm \
    && useradd --uid 1000 --gid mlm --create-home --home-dir /home/mlm mlm
# Dependencies first, from the hashed lock (`make lock`): this layer changes only with the lock.
COPY images/requirements.lock /tmp/requirements.lock
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
