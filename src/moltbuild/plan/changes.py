"""`invoke changed` / `invoke build --changed`: which images have inputs that differ between a base
revision and HEAD: a file of their filtered build context, their Dockerfile, their .dockerignore,
or their settings in pyproject.toml. A base that cannot be compared builds everything."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.plan.inputs import rule_sets
from moltbuild.project import ImageConfig
from moltbuild.system.processes import Runner
from moltbuild.system.tables import render_table

ZERO_SHA = re.compile(r"^0+$")


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


def check_explicit_base(root: Path, base: str, runner: Runner) -> None:
    """A --base the user typed must exist; only a base GitHub supplies may be unknown (force-push)."""
    if not ZERO_SHA.match(base) and _Git(root, runner).commit(base) is None:
        raise ConfigError(
            f"--base {base!r} is not a commit in this repository; pass a branch, tag or SHA "
            f"(fetch it first if it is remote: git fetch origin {base})"
        )


class _Git:
    def __init__(self, root: Path, runner: Runner):
        self.root, self.runner = root, runner

    def __call__(self, *args: str, check: bool = True) -> str:
        res = self.runner.run(["git", "-C", str(self.root), *args], mutates=False, check=check, timeout=60)
        return res.stdout if res.ok else ""

    def commit(self, ref: str) -> str | None:
        return self("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip() or None


def _image_settings(pyproject_text: str, name: str) -> dict | None:
    try:
        return (
            ((tomllib.loads(pyproject_text).get("tool") or {}).get("moltbuild") or {})
            .get("images", {})
            .get(name)
        )
    except tomllib.TOMLDecodeError:
        return None


def changed_images(
    root: Path, images: dict[str, ImageConfig], base: str, runner: Runner
) -> tuple[str | None, list[Change]]:
    """(resolved base sha or None, one Change per image)."""
    git = _Git(root, runner)
    if ZERO_SHA.match(base):
        return None, [
            Change(n, True, "first push of the branch (no base): building everything") for n in images
        ]
    sha = git.commit(base)
    if sha is None:
        return None, [
            Change(n, True, f"base {base} is not a known commit here: building everything") for n in images
        ]
    # NUL-separated: paths exactly as stored (no quoting of non-ASCII names, core.quotePath)
    paths = [p for p in git("diff", "--name-only", "--no-renames", "-z", sha, "HEAD").split("\0") if p]
    old_pyproject = git("show", f"{sha}:pyproject.toml", check=False)
    new_pyproject = git("show", "HEAD:pyproject.toml", check=False)
    changes = []
    for name, cfg in images.items():
        context = cfg.context.relative_to(root).as_posix()
        dockerfile = cfg.dockerfile.relative_to(root).as_posix()
        changes.append(_change(root, name, context, dockerfile, paths, old_pyproject, new_pyproject))
    return sha, changes


def _change(
    root: Path, name: str, context: str, dockerfile: str, paths: list[str], old_toml: str, new_toml: str
) -> Change:
    if _image_settings(old_toml, name) != _image_settings(new_toml, name):
        return Change(name, True, "its settings in pyproject.toml changed")
    if dockerfile in paths:
        return Change(name, True, f"{dockerfile} changed")
    prefix = "" if context == "." else context.rstrip("/") + "/"
    if prefix + ".dockerignore" in paths:
        return Change(name, True, f"{prefix}.dockerignore changed")
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
    root: Path, images: dict[str, ImageConfig], base: str, runner: Runner
) -> tuple[list[str], str]:
    """Names of the changed images and a one-line account for the console."""
    try:
        sha, changes = changed_images(root, images, base, runner)
    except MoltbuildError as exc:
        raise MoltbuildError(f"--changed: cannot compare with {base}: {exc.message}") from None
    names = [c.image for c in changes if c.changed]
    summary = "; ".join(f"{c.image}: {c.reason}" for c in changes)
    return names, f"changed since {base}{f' ({sha[:12]})' if sha else ''}: {summary}"
