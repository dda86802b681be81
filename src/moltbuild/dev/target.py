"""Where the loop runs what it built: the contract between the loop and its targets (local
containers, a dev namespace of the cluster), and the events both report.

The loop builds and decides; a target only starts, replaces, syncs and cleans up what it was given,
and says what happened through `emit`. Events are what `--json` prints, one object each."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

KINDS = ("change", "built", "deployed", "ready", "synced", "failed", "url", "log", "stopped")


@dataclass(frozen=True)
class Event:
    kind: str  # one of KINDS
    image: str | None = None  # the project's image name (None: the whole loop)
    seconds: float | None = None  # since the change (or the start) that caused it
    detail: Mapping[str, Any] = field(default_factory=dict)  # url, ref, reason, lines, files...

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown dev event kind {self.kind!r}")


Emit = Callable[[Event], None]


class Target(Protocol):
    """What runs the images. `refs` maps image names to what to run: a reference by digest
    (`registry/repo@sha256:...`) for the cluster, a local image id or reference for local runs."""

    def describe(self, refs: Mapping[str, str]) -> list[str]:
        """Lines saying what deploy(refs) would create or change (`--dry-run`); touches nothing."""
        ...

    def deploy(self, refs: Mapping[str, str], emit: Emit, since: float) -> bool:
        """Start or replace the containers of the images in REFS (the others keep running), wait
        until they are ready or have failed, and emit `deployed`, then `ready` or `failed` (with the
        reason and the last log lines) per image, and `url` once per forwarded port. SINCE is the
        monotonic time of the change that caused it. Returns whether every image is ready."""
        ...

    def sync(self, name: str, files: Sequence[tuple[Path, str]], emit: Emit, since: float) -> bool:
        """Copy FILES (a host path, the absolute path in the container) into every running container
        of image NAME; emit `synced`. False when it cannot (nothing running, no tar, read-only): the
        loop then rebuilds instead."""
        ...

    def close(self, *, keep: bool) -> None:
        """Stop log streams, forwards and watches; remove what this target created unless KEEP."""
        ...
