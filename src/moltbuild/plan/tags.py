"""The one tag plan: every step that pushes, verifies or deploys reads tags from here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeGuard
from urllib.parse import urlsplit, urlunsplit

from moltbuild.errors import ConfigError
from moltbuild.plan.facts import DEFAULT_SOURCE, GitState
from moltbuild.refs import validate_tag

__all__ = [
    "DEFAULT_SOURCE",
    "GitState",
    "check_templates",
    "latest_notes",
    "plan_tags",
    "source_url",
    "version_of",
]


def sanitize_branch(branch: str) -> str:
    """A branch name as a tag: invalid characters become '-', no leading '.'/'-'."""
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", branch).lstrip(".-")[:128].rstrip(".-")
    return tag


def source_url(remote: str) -> str | None:
    """The https URL of a git remote, credentials and `.git` dropped; None for a remote that has no
    web address (a local path, file://): the image then names the default source."""
    remote = remote.strip()
    scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", remote)
    if scp and not remote.startswith((".", "/", "~")) and "://" not in remote:
        host, path = scp.groups()
        return f"https://{host}/{path.lstrip('/').removesuffix('.git')}"
    parts = urlsplit(remote)
    if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not parts.hostname:
        return None
    netloc = parts.hostname
    if parts.port and parts.scheme in ("http", "https"):  # an ssh or git port is not the web's
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/").removesuffix(".git")
    return urlunsplit(("https", netloc, path, "", "")) if path.strip("/") else None


DEFAULT_TEMPLATES = ("sha-{sha7}", "{branch}")
PLACEHOLDERS = ("sha", "sha7", "branch", "date")
_PLACEHOLDER_RE = re.compile(r"{([^{}]*)}")
_SEMVER_RE = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
WHERE = "[tool.moltbuild] tags"


def check_templates(templates: object) -> tuple[str, ...]:
    """`tags` in [tool.moltbuild]: a list of strings using {sha} {sha7} {branch} {date}; the first
    names the revision (it is the tag deployments pin), so it must hold {sha} or {sha7}."""
    if templates is None:
        return DEFAULT_TEMPLATES
    if not _is_string_list(templates):
        raise ConfigError(
            f'{WHERE} must be a list of tag templates, e.g. ["{{branch}}-{{sha7}}", "{{sha7}}"]'
        )
    for template in templates:
        _check_placeholders(template)
    if not {"sha", "sha7"} & set(_PLACEHOLDER_RE.findall(templates[0])):
        raise ConfigError(
            f"{WHERE}: the first template {templates[0]!r} is the revision tag deployments pin; "
            "it needs {sha7} or {sha}"
        )
    return tuple(templates)


def _is_string_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) for t in value)


def _check_placeholders(template: str) -> None:
    unknown = [p for p in _PLACEHOLDER_RE.findall(template) if p not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(
            f"{WHERE}: template {template!r} uses {{{unknown[0]}}}; known: "
            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        )


def render_template(template: str, state: GitState) -> str | None:
    """The tag, or None when it needs a branch and HEAD is on none. A revision tag of a tree
    with changes gets -dirty: it is not that revision."""
    used = set(_PLACEHOLDER_RE.findall(template))
    branch = sanitize_branch(state.branch) if state.branch else ""
    if "branch" in used and not branch:
        return None
    date = datetime.fromtimestamp(state.commit_time, UTC).strftime("%Y%m%d")
    tag = template.format(sha=state.sha, sha7=state.short, branch=branch, date=date)
    if state.dirty and {"sha", "sha7"} & used:
        tag += "-dirty"
    return validate_tag(tag, f"{WHERE}: template {template!r} renders")


def plan_tags(
    state: GitState,
    extra: Iterable[str] = (),
    templates: Iterable[str] = DEFAULT_TEMPLATES,
    *,
    semver: bool = False,
) -> list[str]:
    """The templates rendered (the first is the revision tag), `latest` on the default branch
    with a clean tree, X.Y.Z, X.Y and X for a vX.Y.Z git tag on HEAD (with `semver`), then
    --tag values. Every tag is checked against the OCI grammar here, before any work."""
    rendered = [render_template(template, state) for template in templates]
    moves = moves_latest(state)
    # A template that renders `latest` is held to the same rule as the tag added here.
    tags = _unique(tag for tag in rendered if tag and (tag != "latest" or moves))
    if moves:
        tags.append("latest")
    if semver and not state.dirty:
        tags = _unique([*tags, *_semver_tags(state.version_tags)])
    return _unique([*tags, *(validate_tag(tag) for tag in extra)])


def moves_latest(state: GitState) -> bool:
    """Only a clean tree on the default branch moves `latest`."""
    return state.branch == state.default_branch and not state.dirty


def latest_notes(state: GitState, templates: Iterable[str]) -> tuple[str, ...]:
    """The plan's note when a template renders `latest` that `plan_tags` drops."""
    if moves_latest(state) or "latest" not in (render_template(t, state) for t in templates):
        return ()
    why = (
        "the tree has changes"
        if state.dirty
        else f"branch {state.branch or '(none: detached HEAD)'} is not the default {state.default_branch}"
    )
    return (f"{WHERE} renders 'latest': not pushed, {why} (only a clean default branch moves latest)",)


def _semver_tags(version_tags: Iterable[str]) -> list[str]:
    """X.Y.Z, X.Y and X for each vX.Y.Z (or X.Y.Z) git tag."""
    found: list[str] = []
    for version in version_tags:
        m = _SEMVER_RE.match(version)
        if m:
            major, minor, patch = m.groups()
            found += [f"{major}.{minor}.{patch}", f"{major}.{minor}", major]
    return found


def _unique(tags: Iterable[str]) -> list[str]:
    """In order, each once."""
    return list(dict.fromkeys(tags))


def version_of(state: GitState) -> str:
    return f"sha-{state.short}" + ("-dirty" if state.dirty else "")
