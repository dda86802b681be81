"""What a user asked `build` for: each flag once, as the command line gave it, checked here.

Flags that override a setting (`--backend`, `--verbose`) go into the run context's settings
instead; everything else reaches the flow in one `BuildRequest`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moltbuild.errors import ConfigError
from moltbuild.project import parse_only


def selection(
    only: str | Iterable[str] = "", *, api_only: bool = False, frontend_only: bool = False
) -> tuple:
    """`--only`, `--api-only` and `--frontend-only` as one list of names (empty: every image)."""
    if api_only and frontend_only:
        raise ConfigError("--api-only and --frontend-only exclude each other; pass neither to build both")
    names = parse_only(only)
    names += [n for n, wanted in (("api", api_only), ("frontend", frontend_only)) if wanted]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class BuildRequest:
    push: bool = False
    only: tuple[str, ...] = ()  # image names; empty: all
    tags: tuple[str, ...] = ()  # extra tags (an empty --tag, an unset CI input, adds nothing)
    platform: str | None = None
    no_cache: bool = False
    jobs: int = 2
    force: bool = False
    rebuild: bool = False
    changed: bool = False
    base: str | None = None
    smoke: bool = True
    dry_run: bool = False
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs {self.jobs} must be at least 1")
        object.__setattr__(self, "tags", tuple(t.strip() for t in self.tags if t and t.strip()))

    @property
    def purpose(self) -> str:
        return "invoke build" + (" --push" if self.push else "")
