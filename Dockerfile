# One image for the collector, the demo target and the analytics worker.
#
#   docker build -t flowprobe:0.1.0 .
#   docker run --rm flowprobe:0.1.0 check /etc/flowprobe/workflows
#
# The builder stage turns flowprobe and every dependency into wheels; the final
# stage installs them offline, so no compiler, cache or source tree ships.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The analytics worker runs from this image too (issue 5), so its extra is in by default.
ARG FLOWPROBE_EXTRAS=analytics
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler for the compiled detectors (setup.py; without one they install as pure Python, at half the speed).
# The builder stage only: the final stage installs the built wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY collector collector
COPY analytics analytics
RUN pip wheel --wheel-dir /wheels ".[${FLOWPROBE_EXTRAS}]"

FROM ${PYTHON_IMAGE}
ARG FLOWPROBE_EXTRAS=analytics
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    XDG_CACHE_HOME=/tmp/.cache
# Wheels come in through a build mount, not a COPY, so they are not left in a layer.
# WeasyPrint (PDF reports) needs Pango, and a font so the PDF has readable text.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "flowprobe[${FLOWPROBE_EXTRAS}]" \
    && groupadd --system --gid 10001 flowprobe \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin flowprobe \
    && mkdir -p /data /etc/flowprobe \
    && chown flowprobe:flowprobe /data
# The shipped workflows, so `docker run` works alone; compose mounts ./workflows over them.
COPY workflows /etc/flowprobe/workflows
# Numeric, so an orchestrator can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
VOLUME /data
EXPOSE 9700
# Compose sets a health check per service; this default fits `flowprobe run`.
# FLOWPROBE_HEALTHCHECK_URL points it elsewhere (the target's /health, analytics' /metrics).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('FLOWPROBE_HEALTHCHECK_URL', 'http://127.0.0.1:9700/healthz'), timeout=2)"]
ENTRYPOINT ["flowprobe"]
CMD ["run", "--config", "/etc/flowprobe/workflows", "--listen", "0.0.0.0:9700", "--data-dir", "/data"]
