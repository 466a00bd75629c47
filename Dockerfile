# The API container: the launcher is PID 1 and supervises uvicorn as its child.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app

# Dependencies first: this layer stays cached until requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY alembic.ini config.yaml ./
COPY launcher/ launcher/
COPY api/ api/
# Compiled at build time: the non-root user cannot write __pycache__, and every child
# restart would pay for compiling again.
RUN python -m compileall -q launcher api

USER app
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "launcher", "healthcheck"]
ENTRYPOINT ["python", "-m", "launcher"]
CMD ["run"]
