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

# --- runtime: the wheel and its pinned dependencies, run as an unprivileged user -------------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/mlm-*.whl \
    && rm -rf /tmp/wheels \
    && groupadd --gid 1000 mlm \
    && useradd --uid 1000 --gid mlm --create-home --home-dir /home/mlm mlm
USER 1000:1000
WORKDIR /home/mlm
CMD ["mlm", "--help"]
