# One image for the collector and the demo target (and, later, the analytics worker).
FROM python:3.11.10-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector collector
COPY analytics analytics
RUN pip install --no-cache-dir . && useradd --system --uid 10001 flowprobe && mkdir /data && chown flowprobe /data
COPY workflows workflows
USER flowprobe
VOLUME /data
EXPOSE 9700
ENTRYPOINT ["flowprobe"]
CMD ["run", "--config", "/app/workflows", "--listen", "0.0.0.0:9700", "--data-dir", "/data"]
