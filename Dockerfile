# The memcache-server image: cache nodes and config nodes (`memcache-server config-node ...`).
#   docker build -t memcache-server:0.1.0 .
# Built with README's install command, `pip install .`; runs as an unprivileged user.
# memcache_server/ links to discovery/, load/ and cli.py (one import name): all are copied.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md cli.py ./
COPY memcache_server ./memcache_server
COPY discovery ./discovery
COPY load ./load
COPY docs/man ./docs/man
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin memcache

WORKDIR /
USER 10001:10001
# 11211: memcached protocol (cache node or configuration endpoint); 9150: /metrics
EXPOSE 11211 9150
ENTRYPOINT ["memcache-server"]
CMD ["--listen=0.0.0.0", "--port=11211"]
