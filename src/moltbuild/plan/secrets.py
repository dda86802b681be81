"""Build secrets, checked before any build: each `RUN --mount=type=secret` the Dockerfile has
against the image's `secrets` table (a missing one is refused, naming the line and the key to
add; one given and never mounted is a note), and what a plan says about them (ids and where each
value comes from, never a value)."""

from __future__ import annotations

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError
from moltbuild.project import ImageConfig

Given = tuple[tuple[str, str], ...]  # (id, "env:VAR" | "file:PATH")


def used_secrets(cfg: ImageConfig, dockerfile: Dockerfile) -> tuple[Given, tuple[str, ...]]:
    """(id, source) of the secrets the build is given (those its Dockerfile mounts), and notes.
    A mount nobody provides is refused, unless it says `required=false` (a note then)."""
    notes: list[str] = []
    mounted: dict[str, int] = {}
    for mount in dockerfile.secret_mounts:
        mounted.setdefault(mount.id, mount.line)
        if mount.id in cfg.secrets:
            continue
        if mount.optional:
            notes.append(
                f"{dockerfile.path.name}:{mount.line} mounts secret {mount.id!r} (required=false) "
                "that nobody provides: the step runs without it"
            )
            continue
        raise ConfigError(
            f"{dockerfile.path}:{mount.line}: RUN --mount=type=secret,id={mount.id} needs a secret nobody "
            f'provides; add secrets = {{{mount.id} = "env:VARIABLE"}} (or "file:PATH") to '
            f"[tool.moltbuild.images.{cfg.name}] in pyproject.toml"
        )
    unused = sorted(set(cfg.secrets) - set(mounted))
    if unused:
        notes.append(
            f"secrets {', '.join(unused)} ([tool.moltbuild.images.{cfg.name}] secrets) are not mounted by "
            f"{dockerfile.path.name} (no RUN --mount=type=secret,id=...): not passed"
        )
    given = tuple((key, cfg.secrets[key]) for key in sorted(mounted) if key in cfg.secrets)
    return given, tuple(notes)


def describe(secrets: Given) -> str:
    """The plan's line: ids and sources ("npmrc from env:NPM_TOKEN"), never a value."""
    return ", ".join(f"{key} from {source}" for key, source in secrets)
