# Redis 7.2 with the redis-ratelimit module loaded.
#
#   make docker                  # docker build -t redis-ratelimit:latest .
#   docker run --rm -p 127.0.0.1:6379:6379 redis-ratelimit
#   redis-cli RATELIMIT.CHECK user:42 10 1m
#   make docker-test             # the integration tests against the image
#
# Needs BuildKit (the default builder since Docker Engine 23) for the cache mounts.

# ---- Stage 1: build the module ------------------------------------------------
FROM rust:1-bookworm AS build

# redis-module generates its bindings with bindgen, which needs libclang.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace: cargo needs every member's sources (core/, client/) to load it, even
# though only the module is built. .dockerignore leaves out target/, .git/ and .cache/.
COPY . .
# The cache mounts keep the downloaded crates and the compiled dependencies between builds, so
# a change to the sources recompiles only the module. The .so is copied out of the mounted
# target/ in the same step, since the mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p redis-ratelimit \
 && cp target/release/libredis_ratelimit.so /libredis_ratelimit.so

# ---- Stage 2: the official Redis image ----------------------------------------
# Same Debian release as the build stage, so the module's glibc matches.
FROM redis:7.2-bookworm

COPY --from=build /libredis_ratelimit.so /usr/local/lib/redis/modules/libredis_ratelimit.so
COPY redis.conf /usr/local/etc/redis/redis.conf

# Container overrides, appended to the repository's redis.conf so that they win (for these
# directives the last line wins):
# - bind 0.0.0.0: inside a container, loopback is unreachable from outside it. Who can reach
#   the port is decided by `docker run -p`: publish it on 127.0.0.1 as above, and set
#   `requirepass` or ACL users before publishing it anywhere else.
# - protected-mode no: with no password, protected mode refuses every client that is not on
#   the container's own loopback, i.e. all of them.
# - daemonize no: the container lives as long as redis-server stays in the foreground.
# - loadmodule: in the config rather than in CMD, so that `docker run ... redis-server
#   /usr/local/etc/redis/redis.conf --maxmemory 1gb` (any other options) still loads it.
RUN { \
      echo ''; \
      echo '# ---- container overrides (added by the Dockerfile) ----'; \
      echo 'bind 0.0.0.0'; \
      echo 'protected-mode no'; \
      echo 'daemonize no'; \
      echo 'loadmodule /usr/local/lib/redis/modules/libredis_ratelimit.so'; \
    } >> /usr/local/etc/redis/redis.conf

EXPOSE 6379

# With requirepass, give the password to redis-cli with -e REDISCLI_AUTH=...
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD redis-cli -p 6379 PING | grep -q PONG

# The image's entrypoint starts `redis-server` as the redis user, in /data.
CMD ["redis-server", "/usr/local/etc/redis/redis.conf"]
