# trustplane image (worker, sink, notary, console); used by docker-compose.yml (`docker compose up --build`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY streams/ streams/
COPY processors/ processors/
COPY sinks/ sinks/
COPY schemas/ schemas/
COPY policies/ policies/
COPY infra/ infra/

# the services need their extras: the worker Faust and Cedar, the sink and notary ClickHouse
# and prometheus-client, the console jinja2
RUN pip install --no-cache-dir ".[gate,sink,console]" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin trustplane \
    && mkdir -p /var/lib/trustplane \
    && chown trustplane:trustplane /var/lib/trustplane

# The installed packages live in site-packages, so point the settings whose defaults are
# relative to the source tree at /app (read-only data) and a writable state folder.
ENV TRUSTPLANE_STATE_DIR=/var/lib/trustplane \
    TRUSTPLANE_ANOMALY_CONFIG_PATH=/app/policies/anomaly.toml

USER trustplane

# /metrics and /healthz
EXPOSE 6066

ENTRYPOINT ["trustplane"]
CMD ["worker"]
