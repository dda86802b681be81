"""Base images a Dockerfile pulls, and the Docker Hub mirror (MOLTBUILD_BASE_MIRROR)."""

from __future__ import annotations

import re
from pathlib import Path

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef


def parse_base(ref: str, origin: str = "FROM") -> ImageRef:
    """A base image as docker reads it: python:3.12 -> docker.io/library/python:3.12."""
    return ImageRef.parse(ref, origin, default_tag="latest")


def dockerfile_bases(dockerfile: Path, build_args: dict[str, str] | None = None) -> list[str]:
    """External images the Dockerfile's FROM lines name (stages and scratch excluded)."""
    return Dockerfile.read(dockerfile, build_args).bases()


def validate_mirror(mirror: str) -> str:
    mirror = mirror.strip().rstrip("/")
    if "://" in mirror or not re.match(r"^[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._/-]+)?$", mirror):
        raise ConfigError(
            f"MOLTBUILD_BASE_MIRROR={mirror!r} is not HOST[:PORT]/PREFIX (no scheme), "
            "e.g. mirror.example.com/dockerhub"
        )
    return mirror


def mirrored(ref: str, mirror: str | None) -> str:
    """Where to pull `ref` from: through the mirror for Docker Hub images, else unchanged."""
    parsed = parse_base(ref)
    if mirror and parsed.on_docker_hub:
        return str(parsed.moved_to(validate_mirror(mirror)))
    return str(parsed)


def registries_conf(mirror: str | None, insecure: list[str]) -> str:
    """containers-registries.conf(5) for buildah: short names resolve on Docker Hub, which is
    rewritten to the mirror when one is set."""
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"', ""]
    if mirror:
        mirror = validate_mirror(mirror)
        host = mirror.split("/", 1)[0]
        lines += [
            "[[registry]]",
            'prefix = "docker.io"',
            f'location = "{mirror}"',
            f"insecure = {'true' if host in insecure else 'false'}",
            "",
        ]
    for host in insecure:
        lines += ["[[registry]]", f'location = "{host}"', "insecure = true", ""]
    return "\n".join(lines)
