# syntax=docker/dockerfile:1
# relrec images (docs/deploy.md):
#   docker build -t relrec .                                 serving, CPU: the default target
#   docker build -t relrec:gpu --build-arg VARIANT=gpu .     serving on a CUDA runtime base,
#                                                            onnxruntime-gpu and faiss-gpu
#   docker build -t relrec-train --target train .            training: torch (CPU wheel) + training/
# The serving image holds service/, models/ and deploy/requirements-serve.txt: no torch and no
# training/ (service/ imports neither, STYLE.md), so `relrec train` is not in it. Both images run
# deploy/entrypoint.sh as a non-root user; the tests run that same script outside containers.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- bases: one per variant, chosen by VARIANT; each gives `python` (3.11+) and the user -------
FROM ${PYTHON_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-gpu
# Ubuntu 24.04's python3 is 3.12. Distribution packages are not pinned: the base tag pins them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python

# The stage named by VARIANT, not an image from a registry, so it takes no tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 relrec \
 && useradd --system --uid 10001 --gid relrec --create-home --home-dir /home/relrec relrec \
 && mkdir /artifacts \
 && chown relrec:relrec /artifacts

# ---- serving: the requirements, then relrec itself without dependencies -----------------------
FROM base AS build-serve
ARG VARIANT
WORKDIR /src
COPY deploy/requirements-serve.txt deploy/requirements-serve-gpu.txt deploy/
# The GPU variant swaps the CPU builds of onnxruntime and FAISS for requirements-serve-gpu.txt.
RUN python -m venv /opt/venv \
 && if [ "$VARIANT" = gpu ]; then \
        grep -vE '^(onnxruntime|faiss-cpu)==' deploy/requirements-serve.txt >requirements.txt \
        && cat deploy/requirements-serve-gpu.txt >>requirements.txt; \
    else \
        cp deploy/requirements-serve.txt requirements.txt; \
    fi \
 && pip install --no-cache-dir -r requirements.txt
COPY pyproject.toml README.md ./
COPY models/ models/
COPY service/ service/
# training/ is not in the context of this stage, so the wheel holds models and service only.
RUN pip install --no-cache-dir --no-deps .

# ---- training: torch from the CPU index first (no CUDA build pulled in), then relrec ---------
FROM base AS build-train
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
COPY pyproject.toml README.md ./
COPY models/ models/
COPY training/ training/
COPY service/ service/
RUN pip install --no-cache-dir .

FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
COPY --chmod=755 deploy/entrypoint.sh /usr/local/bin/relrec-entrypoint
USER 10001:10001
WORKDIR /home/relrec
ENTRYPOINT ["relrec-entrypoint"]
CMD ["train-demo", "--out", "/artifacts"]

# ---- the serving image: last, so that a plain `docker build .` makes it -----------------------
FROM base AS runtime
COPY --from=build-serve /opt/venv /opt/venv
COPY --chmod=755 deploy/entrypoint.sh /usr/local/bin/relrec-entrypoint
ENV RELREC_ARTIFACT_DIR=/artifacts
USER 10001:10001
WORKDIR /home/relrec
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["relrec-entrypoint", "healthcheck", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["relrec-entrypoint"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
