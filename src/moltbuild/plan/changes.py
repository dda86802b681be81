"""`invoke changed` / `invoke build --changed`: which images have inputs that differ between a base
revision and HEAD: a file of their filtered build context, their Dockerfile, their .dockerignore,
or their settings in pyproject.toml. A base that cannot be compared builds everything. Computed from
the git facts the flow gathered (plan.facts.ChangeFacts) and the .dockerignore files."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.plan import graph
from moltbuild.plan.facts import ZERO_SHA, ChangeFacts
from moltbuild.plan.inputs import rule_sets
from moltbuild.project import ImageConfig
from moltbuild.system.tables import render_table


@dataclass(frozen=True)
class Change:
    image: str
    changed: bool
    reason: str


def base_from_github(environ: Mapping[str, str]) -> str | None:
    """The base GitHub gives the event: a push's `before`, a pull request's base sha."""
    path = environ.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    pull = event.get("pull_request") or {}
    return (pull.get("base") or {}).get("sha") or event.get("before") or None


def resolve_base(explicit: str | None, environ: Mapping[str, str]) -> str:
    """--base, else the GitHub event's base, else the previous commit."""
    explicit = (explicit or "").strip() or None  # an empty --base (an unset CI input) is no --base
    if explicit and explicit.startswith("-"):
        raise ConfigError(f"--base {explicit!r} is not a revision; pass a branch, tag or commit SHA")
    return explicit or base_from_github(environ) or "HEAD^"


def check_explicit_base(facts: ChangeFacts) -> None:
    """A --base the user typed must exist; only a base GitHub supplies may be unknown (force-push)."""
    if not ZERO_SHA.match(facts.base) and facts.sha is None:
        raise ConfigError(
            f"--base {facts.base!r} is not a commit in this repository; pass a branch, tag or SHA "
            f"(fetch it first if it is remote: git fetch origin {facts.base})"
        )


def _images_tables(pyproject_text: str) -> dict:
    """[tool.moltbuild.images] of one pyproject.toml text, parsed once per comparison (not per
    image: 30 images would parse it 60 times)."""
    try:
        tool = (tomllib.loads(pyproject_text).get("tool") or {}).get("moltbuild") or {}
    except tomllib.TOMLDecodeError:
        return {}
    images = tool.get("images")
    return images if isinstance(images, dict) else {}


def changed_images(
    root: Path,
    images: dict[str, ImageConfig],
    facts: ChangeFacts,
    needs: Mapping[str, Iterable[str]] | None = None,
) -> tuple[str | None, list[Change]]:
    """(resolved base sha or None, one Change per image). With the image graph (`needs`: name ->
    the project images it is built FROM), an image whose base changed has changed too."""
    base, sha = facts.base, facts.sha
    if ZERO_SHA.match(base):
        return None, [
            Change(n, True, "first push of the branch (no base): building everything") for n in images
        ]
    if sha is None:
        return None, [
            Change(n, True, f"base {base} is not a known commit here: building everything") for n in images
        ]
    tables = (_images_tables(facts.old_pyproject), _images_tables(facts.new_pyproject))
    changes = [_change(root, name, cfg, facts, tables) for name, cfg in images.items()]
    return sha, propagate(changes, needs or {})


def propagate(changes: list[Change], needs: Mapping[str, Iterable[str]]) -> list[Change]:
    """Each unchanged image built FROM a changed one (transitively) changed, naming the base."""
    reached = graph.dependents([c.image for c in changes if c.changed], needs)
    return [
        Change(c.image, True, f"its base {reached[c.image]} changed")
        if c.image in reached and not c.changed
        else c
        for c in changes
    ]


def _change(root: Path, name: str, cfg: ImageConfig, facts: ChangeFacts, tables: tuple[dict, dict]) -> Change:
    context = cfg.context.relative_to(root).as_posix()
    dockerfile = cfg.dockerfile.relative_to(root).as_posix()
    prefix = "" if context == "." else context.rstrip("/") + "/"
    own = _own_change(name, dockerfile, prefix, facts, tables)
    return own or _context_change(root, name, prefix, facts.paths)


def _own_change(
    name: str, dockerfile: str, prefix: str, facts: ChangeFacts, tables: tuple[dict, dict]
) -> Change | None:
    """A change to the image's settings, Dockerfile or .dockerignore (each counts, ignored or not)."""
    if tables[0].get(name) != tables[1].get(name):
        return Change(name, True, "its settings in pyproject.toml changed")
    for path in (dockerfile, prefix + ".dockerignore"):
        if path in facts.paths:
            return Change(name, True, f"{path} changed")
    return None


def _context_change(root: Path, name: str, prefix: str, paths: tuple[str, ...]) -> Change:
    """A changed file of the build context that a builder sends (.dockerignore applied)."""
    rules = rule_sets(root / prefix)
    inside = [p[len(prefix) :] for p in paths if p.startswith(prefix)]
    sent = [p for p in inside if not all(r.excluded(p) for r in rules)]  # a builder sends it
    if sent:
        more = f" and {len(sent) - 1} more" if len(sent) > 1 else ""
        return Change(name, True, f"{prefix}{sent[0]}{more} changed")
    if inside:
        return Change(name, False, f"only .dockerignore'd files changed ({len(inside)})")
    return Change(name, False, "nothing in its context changed")


def render(base: str, sha: str | None, changes: list[Change], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(
            {
                "base": base,
                "base_sha": sha,
                "changed": [c.image for c in changes if c.changed],
                "images": [asdict(c) for c in changes],
            },
            indent=2,
        )
    rows = [(c.image, "yes" if c.changed else "no", c.reason) for c in changes]
    head = f"base: {base}" + (f" ({sha[:12]})" if sha and not base.startswith(sha[:7]) else "")
    return head + "\n" + render_table(("image", "changed", "why"), rows)


def select_changed(
    root: Path,
    images: dict[str, ImageConfig],
    facts: ChangeFacts,
    needs: Mapping[str, Iterable[str]] | None = None,
) -> tuple[list[str], str]:
    """Names of the changed images and a one-line account for the console."""
    sha, changes = changed_images(root, images, facts, needs)
    names = [c.image for c in changes if c.changed]
    summary = "; ".join(f"{c.image}: {c.reason}" for c in changes)
    return names, f"changed since {facts.base}{f' ({sha[:12]})' if sha else ''}: {summary}"
