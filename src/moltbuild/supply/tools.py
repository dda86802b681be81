"""What syft and cosign need to reach a registry: the binary (waited for while `invoke setup`
prepares it), a private DOCKER_CONFIG holding
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
from moltbuild.system import gotools
from moltbuild.system.processes import Runner

INSTALL_HINT = "run `invoke setup` (it makes syft and cosign ready from the tool lock)"


def find_tool(runner: Runner, name: str) -> str | None:
    """The tool on PATH; first waits for it if `invoke setup` is still preparing it."""
    gotools.wait_ready(runner.environ, name, runner.say)
    return shutil.which(name, path=runner.environ.get("PATH"))


def installed(runner: Runner, name: str) -> bool:
    """On PATH now (no waiting)."""
    return bool(shutil.which(name, path=runner.environ.get("PATH")))


def present_or_coming(runner: Runner, name: str) -> bool:
    """On PATH, or being prepared by `invoke setup` in the background (checked before a build,
    so a build need not wait for it)."""
    return installed(runner, name) or gotools.preparing(runner.environ, name)


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
