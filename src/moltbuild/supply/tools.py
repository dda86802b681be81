"""What syft and cosign need to reach a registry: the binary, a private DOCKER_CONFIG holding
the one credential for the image's registry (a file, never argv), and the plain-HTTP / TLS
choices the settings make for that host."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.registry.auth import credentials_for, docker_config
from moltbuild.settings import Settings
from moltbuild.system.processes import Runner

INSTALL_HINT = "run `invoke setup` (it builds syft and cosign from their Go modules)"


def find_tool(runner: Runner, name: str) -> str | None:
    return shutil.which(name, path=runner.environ.get("PATH"))


def require_tool(runner: Runner, name: str) -> str:
    found = find_tool(runner, name)
    if not found:
        raise ConfigError(f"{name} is not installed: {INSTALL_HINT}, or set MOLTBUILD_ATTEST=off")
    return found


@dataclass(frozen=True)
class RegistryAccess:
    """One registry host as the supply tools see it."""

    host: str
    plain_http: bool
    ca: str  # CA bundle path, '' for the system's
    config_dir: Path  # DOCKER_CONFIG: config.json with this host's credential, if any

    @classmethod
    def prepare(cls, host: str, settings: Settings, workdir: Path) -> RegistryAccess:
        config_dir = workdir / "docker-config"
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        creds = credentials_for(host, settings)
        path = config_dir / "config.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(docker_config({host: creds} if creds else {})))
        return cls(
            host, settings.allows_plain_http(host), settings.get("MOLTBUILD_REGISTRY_CA") or "", config_dir
        )
