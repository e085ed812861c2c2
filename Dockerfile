# Redis 7.2 with the redis-ratelimit module loaded.
#
#   docker build -t redis-ratelimit .
#   docker run --rm -p 127.0.0.1:6379:6379 redis-ratelimit
#   redis-cli RATELIMIT.CHECK user:42 10 1m

# ---- Stage 1: build the module ------------------------------------------------
FROM rust:1-bookworm AS build

# redis-module generates its bindings with bindgen, which needs libclang.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace (target/ and .git/ are excluded by .dockerignore).
COPY . .
RUN cargo build --release --locked \
 && test -f target/release/libredis_ratelimit.so

# ---- Stage 2: the official Redis image ----------------------------------------
# Same Debian release as the build stage, so the module's glibc matches.
FROM redis:7.2-bookworm

COPY --from=build /src/target/release/libredis_ratelimit.so /usr/local/lib/redis/modules/
COPY redis.conf /usr/local/etc/redis/redis.conf

# Container overrides, appended so they win over the repository's redis.conf
# (for these directives the last line wins):
# - bind 0.0.0.0: inside a container, loopback is unreachable from outside;
#   exposure is decided by `docker run -p`, not by Redis.
# - protected-mode no: with no password, protected mode would refuse every
#   client not on the container's own loopback, i.e. all of them. Publish the
#   port only where it should be reachable (e.g. -p 127.0.0.1:6379:6379), and
#   set `requirepass` or ACL users in the config before exposing it further.
# - daemonize no: the entrypoint must stay in the foreground (already so in
#   redis.conf, restated here because the container depends on it).
RUN { \
      echo ''; \
      echo '# ---- container overrides (added by the Dockerfile) ----'; \
      echo 'bind 0.0.0.0'; \
      echo 'protected-mode no'; \
      echo 'daemonize no'; \
    } >> /usr/local/etc/redis/redis.conf

EXPOSE 6379

# The official entrypoint drops to the redis user for `redis-server`.
# The module is passed here, not in redis.conf, so it is loaded exactly once.
CMD ["redis-server", "/usr/local/etc/redis/redis.conf", "--loadmodule", "/usr/local/lib/redis/modules/libredis_ratelimit.so"]
