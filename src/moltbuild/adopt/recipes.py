"""Where and what: the root to adopt (the git top level) and the Dockerfiles (Containerfiles) in
it, each a Recipe built with its folder as the context; a compose file's `build:` gives a Recipe
too (adopt/compose.py), with its own context, args, target and repository."""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

from moltbuild.errors import ConfigError, ToolMissingError
from moltbuild.system.processes import Runner

# The names `docker compose` looks for, in its order of preference
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
# Dependency, output and tool folders: a Dockerfile there is someone else's.
SKIP_DIRS = frozenset({".git", "node_modules", "build", "vendor", "third_party", ".venv", "venv", ".nox"})


def tokens(text: str) -> tuple[str, ...]:
    """The lower-case words of a name: shop_API-v2 -> (shop, api, v2)."""
    return tuple(t for t in re.split(r"[^a-z0-9]+", text.lower()) if t)


@dataclass(frozen=True)
class Recipe:
    """A Dockerfile found: built with its folder as the context (or as a compose file says)."""

    path: str  # relative to the root: api/Dockerfile
    context: str  # api/ (. for the root)
    dockerfile: str  # relative to the context: Dockerfile, Dockerfile.worker
    folder: str  # the folder's name (the repository's for a Dockerfile at the top)
    variant: str = ""  # X of Dockerfile.X or X.Dockerfile
    # from a compose file's `build:`: where (compose.yaml services.api), the args, the target and
    # the repository its `image:` names
    origin: str = ""
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    repository: str = ""

    @property
    def base_name(self) -> str:
        return "-".join(tokens(f"{self.folder}-{self.variant}" if self.variant else self.folder))


def _git_top(runner: Runner, start: Path) -> Path | None:
    try:
        result = runner.run(["git", "rev-parse", "--show-toplevel"], cwd=start, check=False, mutates=False)
    except ToolMissingError:
        return None
    top = result.stdout.strip()
    return Path(top) if result.ok and top else None


def locate(runner: Runner, path: Path | None) -> tuple[Path, bool]:
    """The root to adopt and whether git knows it."""
    if path is not None:
        root = path.expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"{path} is not a directory; pass the repository's folder, or no PATH")
        return root, _git_top(runner, root) is not None
    here = Path.cwd()
    top = _git_top(runner, here)
    return (top.resolve(), True) if top else (here.resolve(), False)


RECIPE_WORDS = ("dockerfile", "containerfile")


def _is_dockerfile(name: str) -> bool:
    """Dockerfile, Dockerfile.NAME, NAME.Dockerfile, and the same for Containerfile."""
    lower = name.lower()
    if lower.endswith((".dockerignore", ".containerignore")):
        return False
    return any(lower == w or lower.startswith(f"{w}.") or lower.endswith(f".{w}") for w in RECIPE_WORDS)


def readable_name(rel: str) -> bool:
    """A file name that is UTF-8 (git's bytes decode without a replacement, os.walk's without a
    surrogate): anything else cannot be written into TOML or said, so init skips it."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\ufffd" not in rel


def _unquote(line: str) -> str:
    """A name as git lists it ("caf\\303\\251" for café), as os.fsdecode would give it."""
    if not (line.startswith('"') and line.endswith('"')):
        return line
    raw: bytes = codecs.escape_decode(line[1:-1].encode("ascii"))[0]  # type: ignore[attr-defined]
    return os.fsdecode(raw)


def _listed_files(runner: Runner, root: Path, in_git: bool) -> list[str]:
    if in_git:
        # Quoted, the listing is ASCII: a name that is not UTF-8 arrives whole, as git's escapes.
        argv = ["git", "-c", "core.quotePath=true", "ls-files", "--cached", "--others", "--exclude-standard"]
        result = runner.run(argv, cwd=root, mutates=False, what="git ls-files")
        return [_unquote(line) for line in result.stdout.splitlines() if line]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [Path(folder, f).relative_to(root).as_posix() for f in files]
    return found


def _recipe(root: Path, rel: str) -> Recipe:
    path = Path(rel)
    parent = path.parent.as_posix()
    name, lower = path.name, path.name.lower()
    variant = ""
    for word in RECIPE_WORDS:
        if lower.startswith(f"{word}."):
            variant = name[len(word) + 1 :]
        elif lower.endswith(f".{word}"):
            variant = name[: -len(word) - 1]
    return Recipe(
        path=rel,
        context="." if parent == "." else f"{parent}/",
        dockerfile=name,
        folder=root.name if parent == "." else path.parent.name,
        variant=variant,
    )


def find_recipes(runner: Runner, root: Path, in_git: bool) -> tuple[list[Recipe], list[str], list[str]]:
    """Every Dockerfile or Containerfile git would track (ignored files left out), outside
    dependency folders; the compose files found there; a note for each file name that is not
    UTF-8 (skipped)."""
    recipes, composes, notes = [], [], []
    for rel in sorted(_listed_files(runner, root, in_git)):
        parts = rel.split("/")
        if SKIP_DIRS.intersection(parts[:-1]):
            continue
        if not readable_name(rel):
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            notes.append(f"{shown}: the file name is not UTF-8; skipped")
        elif _is_dockerfile(parts[-1]) and (root / rel).is_file():
            recipes.append(_recipe(root, rel))
        elif parts[-1] in COMPOSE_NAMES and (root / rel).is_file():
            composes.append(rel)
    return recipes, composes, notes
