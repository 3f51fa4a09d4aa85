# relrec images (docs/deploy.md):
#   docker build -t relrec .                                 serving, CPU: the default target
#   docker build -t relrec-train --target train .            training: torch (CPU wheel) + training/
#   docker build -t relrec:gpu --build-arg VARIANT=gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
#                                                            serving on a CUDA runtime base,
#                                                            onnxruntime-gpu and faiss-gpu
# The serving image holds service/, models/ and deploy/requirements-serve.txt: no torch and no
# training/ (service/ imports neither, STYLE.md), so `relrec train` is not in it. Both images run
# deploy/entrypoint.sh as a non-root user; the tests run that same script outside containers.
#
# Portable to BuildKit, the legacy builder and buildah: no `# syntax=` line (BuildKit would pull
# a frontend image from a registry), every FROM names the base image or an earlier stage as
# written (a stage picked by an ARG is not resolved by buildah, and the legacy builder builds
# every stage, so a CUDA base stage would be pulled for a CPU build), and no BuildKit-only flags
# (COPY --chmod, RUN --mount). The legacy builder still builds the stages before the target, so
# there `docker build .` builds the training stages too (once; they are cached).

ARG VARIANT=cpu
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- base: Python 3.11+ with venv, and the user ------------------------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# python:*-slim has `python` with venv and this installs nothing. A base without it (a CUDA
# runtime image: Ubuntu 24.04, Python 3.12) gets the distribution's python3 and python3-venv;
# they are not pinned: the base tag pins them.
# hadolint ignore=DL3008
RUN if ! command -v python >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/* \
        && ln -s /usr/bin/python3 /usr/local/bin/python; \
    fi \
 && python -c 'import sys; assert sys.version_info >= (3, 11), "relrec needs Python 3.11+"' \
 && groupadd --system --gid 10001 relrec \
 && useradd --system --uid 10001 --gid relrec --create-home --home-dir /home/relrec relrec \
 && mkdir /artifacts \
 && chown relrec:relrec /artifacts

# ---- serving: the requirements, then relrec itself without dependencies -----------------------
FROM base AS build-serve
ARG VARIANT
WORKDIR /src
COPY deploy/requirements-serve.txt deploy/requirements-serve-gpu.txt deploy/
# The GPU variant swaps the CPU builds of onnxruntime and FAISS for requirements-serve-gpu.txt;
# its wheels need CUDA 12 and cuDNN 9 from the base image (nvidia/cuda images set CUDA_VERSION).
RUN python -m venv /opt/venv \
 && if [ "$VARIANT" = gpu ]; then \
        if [ -z "${CUDA_VERSION:-}" ]; then \
            echo "VARIANT=gpu needs a CUDA base image: --build-arg BASE_IMAGE=nvidia/cuda:..." >&2; \
            exit 1; \
        fi \
        && grep -vE '^(onnxruntime|faiss-cpu)==' deploy/requirements-serve.txt >requirements.txt \
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
# COPY then chmod, not COPY --chmod (BuildKit only): the mode in the build context may be lost
COPY deploy/entrypoint.sh /usr/local/bin/relrec-entrypoint
RUN chmod 755 /usr/local/bin/relrec-entrypoint
USER 10001:10001
WORKDIR /home/relrec
ENTRYPOINT ["relrec-entrypoint"]
CMD ["train-demo", "--out", "/artifacts"]

# ---- the serving image: last, so that a plain `docker build .` makes it -----------------------
FROM base AS runtime
COPY --from=build-serve /opt/venv /opt/venv
# COPY then chmod, not COPY --chmod (BuildKit only): the mode in the build context may be lost
COPY deploy/entrypoint.sh /usr/local/bin/relrec-entrypoint
RUN chmod 755 /usr/local/bin/relrec-entrypoint
ENV RELREC_ARTIFACT_DIR=/artifacts
USER 10001:10001
WORKDIR /home/relrec
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["relrec-entrypoint", "healthcheck", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["relrec-entrypoint"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
