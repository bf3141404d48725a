# bot-core ingestor: `docker build -t bot-core-ingestor .`
# Runs `ingestor run --config /etc/ingestor/config.toml` as an unprivileged user; mount your own
# config there and point INGESTOR_MONGODB__URI at MongoDB 7+ (a secret, never baked in).

# The base image is pinned by digest (tag: python:3.12-slim): the tag moves, the digest does not.
# Bump both stages together (`docker buildx imagetools inspect python:3.12-slim`). The digest is
# python:3.12-slim's multi-arch index as recorded in public repositories; it could not be checked
# against the registry where it was written (no registry access): verify it before a release.

# -- build: a virtualenv with the dependencies, then the package ---------------------------------
# python:3.12-slim
FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/ingestor
# The runtime dependencies exactly as locked (versions and hashes: `make lock` from pyproject),
# in their own layer: a code change does not reinstall numpy & co. No `embedded` extra: the
# production image has no SecantusDB; mongodb.uri must name MongoDB.
COPY requirements.lock ./
RUN /opt/ingestor/bin/pip install --require-hashes --no-deps --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY indicators ./indicators
COPY ingestor ./ingestor
RUN /opt/ingestor/bin/pip install --no-deps . \
    && /opt/ingestor/bin/python -m compileall -q /opt/ingestor/lib

# -- runtime: the virtualenv only, no compilers, no pip cache, no source tree ---------------------
# python:3.12-slim (same digest as the build stage)
FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea
ARG UID=10001
RUN groupadd --system --gid "${UID}" ingestor \
    && useradd --system --uid "${UID}" --gid ingestor --home-dir /var/lib/ingestor \
        --shell /usr/sbin/nologin ingestor \
    && mkdir -p /var/lib/ingestor /etc/ingestor \
    && chown ingestor:ingestor /var/lib/ingestor
COPY --from=build /opt/ingestor /opt/ingestor
COPY config.toml /etc/ingestor/config.toml
# Container defaults (env overrides the config file): listen for probes on every interface,
# keep the journal (and an embedded database, if mongodb.uri is empty) on the volume.
ENV PATH=/opt/ingestor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INGESTOR_HEALTH__HOST=0.0.0.0 \
    INGESTOR_SERVICE__DATA_DIR=/var/lib/ingestor
USER ${UID}:${UID}
WORKDIR /var/lib/ingestor
VOLUME ["/var/lib/ingestor"]
EXPOSE 8080
# slim has no curl: the image's own Python asks /healthz (health.port must stay 8080 for this).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ingestor"]
CMD ["run", "--config", "/etc/ingestor/config.toml"]
