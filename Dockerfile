# The serving image: `router` is the entry point, `serve --registry /app/models` the default
# command, listening on 0.0.0.0:8000 (ROUTER_HOST, ROUTER_PORT below). Only the base install
# (what serving needs): no `training/`, pandas, plots, scheduler or Dask; train with
# `pip install -e ".[train]"` elsewhere and mount the registry. Several processes:
# -e ROUTER_WORKERS=2.
#   docker build -t cost-aware-router .
#   docker run -p 8000:8000 -v "$PWD/models:/app/models" cost-aware-router serve --registry /app/models --fake-upstream
# Anyone who can reach the port can use it: set client keys (-e ROUTER_API_KEYS=key1,key2)
# before exposing it.
# Several replicas: set ROUTER_LOG_URL (PostgreSQL), ROUTER_CACHE_URL (Redis) and mount the
# shared registry at /app/models (see deploy/k8s/router.yaml).
FROM python:3.11-slim

# LightGBM needs the OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ROUTER_HOST=0.0.0.0 \
    ROUTER_PORT=8000 \
    ROUTER_REGISTRY=/app/models \
    ROUTER_LOG_URL=sqlite:////data/router_outcomes.db

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p router \
 && touch router/__init__.py \
 && pip install . \
 && pip uninstall -y cost-aware-router
COPY router ./router
COPY models/catalog.toml ./models/catalog.toml
# Editable, so the registry and catalog defaults resolve to /app/models.
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 10001 router \
 && mkdir -p /data \
 && chown -R router /app/models /data

USER router
VOLUME ["/app/models", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
ENTRYPOINT ["router"]
CMD ["serve", "--registry", "/app/models"]
