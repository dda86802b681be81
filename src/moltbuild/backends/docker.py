"""Docker CLI against whatever daemon DOCKER_HOST names (BuildKit/buildx when present)."""

from __future__ import annotations

import os

from ..errors import CommandError, MoltbuildError
from .base import Backend, BackendStatus

NESTED_FIX = (
    "use the buildah backend (MOLTBUILD_BACKEND=buildah or --backend buildah), "
    "or --force to try docker anyway"
)


class DockerBackend(Backend):
    name = "docker"
    binary = "docker"

    def daemon_info(self) -> tuple[str, str] | str:
        """(server version, storage driver) when a daemon answers, else the error text."""
        try:
            res = self.runner.run(
                [self.binary, "info", "--format", "{{.ServerVersion}}|{{.Driver}}"],
                mutates=False,
                timeout=15,
            )
        except CommandError as exc:
            return (exc.tail.strip().splitlines() or [str(exc)])[-1]
        except MoltbuildError as exc:
            return str(exc)
        version, _, driver = res.stdout.strip().partition("|")
        if not version:
            return (res.stderr.strip().splitlines() or ["daemon did not answer"])[-1]
        return version, driver

    def status(self) -> BackendStatus:
        if not self.tool_path():
            return BackendStatus(
                self.name,
                False,
                False,
                "docker CLI not installed",
                "install Docker, or use buildah (invoke setup)",
            )
        info = self.daemon_info()
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if isinstance(info, str):
            return BackendStatus(
                self.name,
                True,
                False,
                f"no Docker daemon answers at {host}: {info}",
                "start Docker or set DOCKER_HOST; in a devpod use buildah",
            )
        version, driver = info
        if self.storage.nested:
            return BackendStatus(
                self.name,
                True,
                False,
                f"daemon {version} answers, but {self.storage.path} is on nested overlay: "
                "docker build fails with 'mount source: \"overlay\" ... invalid argument'",
                NESTED_FIX,
            )
        return BackendStatus(self.name, True, True, f"daemon {version} at {host}, storage driver {driver}")
