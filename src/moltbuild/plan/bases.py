"""Base images a Dockerfile pulls, and the Docker Hub mirror (MOLTBUILD_BASE_MIRROR)."""

from __future__ import annotations

import re
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef

_ARG_RE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.I)
_FROM_RE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I)
_VAR_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def parse_base(ref: str, origin: str = "FROM") -> ImageRef:
    """A base image as docker reads it: python:3.12 -> docker.io/library/python:3.12."""
    return ImageRef.parse(ref, origin, default_tag="latest")


def _substitute(text: str, args: dict[str, str]) -> str:
    return _VAR_RE.sub(lambda m: args.get(m.group(1), ""), text)


def dockerfile_bases(dockerfile: Path, build_args: dict[str, str] | None = None) -> list[str]:
    """External images the Dockerfile's FROM lines name (stages and scratch excluded)."""
    try:
        text = dockerfile.read_text()
    except OSError as exc:
        raise ConfigError(f"{dockerfile}: cannot read the Dockerfile ({exc.strerror})") from None
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    seen_from = False
    for line in text.replace("\\\n", " ").splitlines():
        if not seen_from and (m := _ARG_RE.match(line)):
            args[m.group(1)] = (build_args or {}).get(m.group(1), m.group(2) or "")
        elif m := _FROM_RE.match(line):
            seen_from = True
            image = _substitute(m.group(1), args)
            if image.lower() != "scratch" and image not in stages and image not in bases:
                parse_base(image, f"{dockerfile}: FROM")  # a typo fails here, naming the file
                bases.append(image)
            if m.group(2):
                stages.add(m.group(2))
    if not seen_from:
        raise ConfigError(f"{dockerfile}: no FROM instruction; every stage starts FROM an image or scratch")
    return bases


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
