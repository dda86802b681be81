"""What a user asked `build` for: each flag once, as the command line gave it, checked here.

Flags that override a setting (`--backend`, `--verbose`) go into the run context's settings
instead; everything else reaches the flow in one `BuildRequest`. The flags themselves (names, help,
which field each fills) are declared once, in moltbuild.cli.flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moltbuild.errors import ConfigError
from moltbuild.project import parse_only

SHORTHAND = "-only"  # --NAME-only: the one image NAME, as if --only NAME


def selection(only: str | Iterable[str] = "", shorthands: Iterable[str] = ()) -> tuple[str, ...]:
    """`--only` and the `--NAME-only` flags given (as typed) as one list of names (empty: every
    image). Each name is checked against the project's images when the flow loads them."""
    shorthands = list(shorthands)
    if len(shorthands) > 1:
        names = ",".join(image_of(flag) for flag in shorthands)
        raise ConfigError(
            f"{' and '.join(shorthands)} exclude each other; pass one, or --only {names} for several"
        )
    return tuple(dict.fromkeys([*parse_only(only), *map(image_of, shorthands)]))


def image_of(flag: str) -> str:
    """The image a `--NAME-only` flag names: NAME, from the flag itself."""
    return flag.removeprefix("--").removesuffix(SHORTHAND)


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
    no_deps: bool = False  # --only without the project images the selection is built FROM
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
