"""A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1, for the pipeline
and the tests."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import requests

from moltbuild.errors import MoltbuildError
from moltbuild.system.processes import Runner, which


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRegistry:
    """Plain HTTP on loopback; tests/support adds the auth and TLS modes they need."""

    def __init__(self, data_dir: Path, runner: Runner, *, port: int | None = None):
        self.data_dir = data_dir
        self.runner = runner
        self.port = port or free_port()
        self._proc = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def verify(self) -> str | bool:
        """What requests should verify the registry's certificate with."""
        return True

    def extra_config(self) -> list[str]:
        """Lines appended to the config (http.tls, auth); none for the plain registry."""
        return []

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log: {level: warn}",
            f"storage: {{filesystem: {{rootdirectory: {self.data_dir / 'data'}}}, "
            "delete: {enabled: true}}",
            "http:",
            f"  addr: {self.host}",
            *self.extra_config(),
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> LocalRegistry:
        binary = which("docker-registry")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "config.yml"
        config.write_text(self.config())
        self._proc = self.runner.spawn(
            [binary, "serve", str(config)], log_path=self.data_dir / "registry.log"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (self.data_dir / "registry.log").read_text()[-500:]
                raise MoltbuildError(f"docker-registry exited at start: {log.strip()}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=self.verify)
                return self
            except requests.RequestException:
                time.sleep(0.03)
        self.stop()
        raise MoltbuildError(f"docker-registry did not answer on {self.host} within {timeout}s")

    @property
    def pid(self) -> int | None:
        """The registry process while it runs (a test freezes it with SIGSTOP)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None:
            Runner.stop(self._proc)
            self._proc = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
