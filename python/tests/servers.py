"""Redis servers for the tests: started on free loopback ports, stopped at the end.

``REDIS_SERVER`` picks the binary (default ``redis-server`` on the PATH: Redis 7.0 here; the
Makefile's matrix has 6.2 and Valkey 8.1 too), ``RATELIMIT_MODULE`` the module (default the
release build of this repository, ``target/release/libredis_ratelimit.so``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import redis

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = os.environ.get("REDIS_SERVER") or "redis-server"
MODULE = Path(os.environ.get("RATELIMIT_MODULE") or ROOT / "target" / "release" / "libredis_ratelimit.so")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One ``redis-server`` process, with the module or without it."""

    def __init__(self, module: Optional[Path] = None, *, password: Optional[str] = None,
                 port: Optional[int] = None) -> None:
        self.module = module
        self.password = password
        self.port = port or free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="ratelimit-py-")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir.name]
        if password:
            args += ["--requirepass", password]
        if module is not None:
            if not module.exists():
                raise RuntimeError(f"{module} is missing: build it with `cargo build --release`")
            args += ["--loadmodule", str(module)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{REDIS_SERVER} did not start on port {self.port}")
                time.sleep(0.02)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **options) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **options)

    def version(self) -> tuple[int, ...]:
        info = self.client().info("server")
        return tuple(int(part) for part in str(info.get("valkey_version") or info["redis_version"]).split("."))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.dir.cleanup()
