# The kvstore server: `docker build -t kvstore:0.1.0 .`
# BASE_IMAGE needs python3 (>= 3.11) with its venv module, in both stages the same.
ARG BASE_IMAGE=python:3.12-slim

# Build: the project and its dependencies as wheels, installed into a venv.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/kvstore
COPY pyproject.toml README.md ./
COPY kvstore ./kvstore
RUN /opt/kvstore/bin/pip wheel --wheel-dir /wheels . \
    && /opt/kvstore/bin/pip install --no-index /wheels/*.whl \
    && /opt/kvstore/bin/pip uninstall --yes pip setuptools

# Runtime: the venv alone, run as an unprivileged user; works with a read-only root file system.
FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 kvstore \
    && useradd --uid 10001 --gid kvstore --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin kvstore \
    && mkdir /data \
    && chown kvstore:kvstore /data
COPY --from=build /opt/kvstore /opt/kvstore
ENV PATH=/opt/kvstore/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["kvstore"]
CMD ["serve"]
