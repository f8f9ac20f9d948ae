# syntax=docker/dockerfile:1
# mcdrop serving image: LiteRT + gRPC + numpy, no TensorFlow.
#
#   docker build -t mcdrop .                                   # serving image (target runtime), models at /models
#   docker run -p 8500:8500 -p 8501:8501 -p 8502:8502 -v "$PWD/repo:/models:ro" mcdrop
#   docker build --target with-models -t mcdrop:digits .       # bakes ./model-repository into the image
#   docker build --build-arg EXTRAS=capture -t mcdrop:capture .  # adds pyarrow for --capture-dir (about 40 MB)

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Optional extras of the serving image: "" (none: --capture-dir then exits 2 saying what to install) or "capture".
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY serving/ serving/
# Base dependencies only: the serving runtime. A wheel, then a clean venv to copy across.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && wheel="$(ls /wheels/mcdrop-*.whl)" \
 && /opt/venv/bin/pip install --no-cache-dir "mcdrop${EXTRAS:+[$EXTRAS]} @ file://${wheel}" \
 && /opt/venv/bin/python -c "import mcdrop.serving.server.server, sys; sys.exit('tensorflow' in sys.modules)" \
 && /opt/venv/bin/pip uninstall --yes --quiet setuptools \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/pip /opt/venv/lib/python3*/site-packages/pip-* /opt/venv/bin/pip*

FROM ${PYTHON_IMAGE} AS runtime-base
LABEL org.opencontainers.image.title="mcdrop" \
      org.opencontainers.image.description="Monte-Carlo-dropout uncertainty over gRPC (mcdrop.v1 + Open Inference Protocol)"
RUN groupadd --system --gid 10001 mcdrop \
 && useradd --system --uid 10001 --gid mcdrop --no-create-home --home-dir /nonexistent mcdrop \
 && mkdir -p /models && chown mcdrop:mcdrop /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MCDROP_REPOSITORY=/models \
    MCDROP_HOST=0.0.0.0 \
    MCDROP_PORT=8500 \
    MCDROP_HTTP_PORT=8501 \
    MCDROP_METRICS_PORT=8502
VOLUME ["/models"]
# 8500: gRPC (mcdrop.v1, inference.GRPCInferenceService, health, reflection); 8501: Open Inference Protocol
# over REST; 8502: Prometheus /metrics
EXPOSE 8500 8501 8502
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-m", "mcdrop.serving.server.healthcheck"]
# Exec form: mcdrop is PID 1 and gets SIGTERM itself (it drains in-flight requests, then exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcdrop", "serve"]

# Optional: a self-contained image with a model repository baked in (see docs/deploy.md).
FROM runtime-base AS with-models
ARG MODELS=model-repository
COPY --chown=mcdrop:mcdrop ${MODELS}/ /models/

# The default target: models come from a volume mounted at /models.
FROM runtime-base AS runtime
