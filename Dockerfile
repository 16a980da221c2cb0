# Focal API server. Needs PostgreSQL with pgvector and Redis (see docker-compose.yml):
#   FOCAL_DATABASE_URL, FOCAL_REDIS_URL and FOCAL_AUTH__JWT_SECRET must be set.
# The image does not contain the embedded servers (`focal[embedded]`): in a container, the
# database and Redis are services of their own.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FOCAL_LOGGING__JSON_OUTPUT=true

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir focal && touch focal/__init__.py \
    && pip install . && pip uninstall -y focal \
    && rm -rf focal build focal.egg-info

COPY focal ./focal
RUN pip install --no-deps . && rm -rf build focal.egg-info \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin focal

USER focal
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"]

# Migrate first (safe when several containers start at once), then serve. `exec` makes focal
# PID 1's direct child so SIGTERM from `docker stop` reaches it and it shuts down cleanly.
CMD ["sh", "-c", "focal db upgrade --no-embedded --database-url \"${FOCAL_DATABASE_URL:-}\" && exec focal serve --host 0.0.0.0 --port 8000"]
