# Build, run and test the redis-ratelimit module.
#
#   make deps    install missing system packages (libclang-dev, redis-server, redis-tools)
#   make build   build the module: target/release/libredis_ratelimit.so
#   make run     build, then run Redis in the foreground with the module (PORT=6380 make run)
#   make test    build, then run every test of the workspace (release profile)
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

# apt-get needs root: use sudo only when not already root.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help deps build run test fuzz lint clean

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

fuzz: build
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz -- --nocapture

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -f dump.rdb
	rm -rf appendonlydir
