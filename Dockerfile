# The API container: the launcher is PID 1 and supervises the uvicorn workers as its children.
# PYTHON_IMAGE: the official image by default; the tests build a stand-in from Debian's packages
# where no registry is reachable (tests/docker/images.py).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# Unbuffered, so every log line shows at once in `docker logs`; no bytecode written at run time
# (the root filesystem may be read-only; the code is compiled below, at build time).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
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
RUN python -m compileall -q launcher api

USER app
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "launcher", "healthcheck"]
ENTRYPOINT ["python", "-m", "launcher"]
CMD ["run"]
