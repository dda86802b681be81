"""The one tag plan: every step that pushes, verifies or deploys reads tags from here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.refs import validate_tag
from moltbuild.system.processes import Runner

DEFAULT_SOURCE = "https://github.com/moltbook-org/moltbook"


@dataclass(frozen=True)
class GitState:
    sha: str  # full 40 hex
    branch: str | None  # None when detached and CI says nothing
    default_branch: str
    dirty: bool
    source: str  # repository URL without credentials
    commit_time: int = 0  # HEAD's committer time (epoch seconds): images carry it, not the build time
    version_tags: tuple[str, ...] = ()  # git tags pointing at HEAD (for semver image tags)

    @property
    def short(self) -> str:
        return self.sha[:7]


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


def repo_root(path: Path, runner: Runner) -> Path | None:
    """The top of the git checkout that holds `path` (a build context may sit in a submodule)."""
    res = runner.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], mutates=False, check=False, timeout=30
    )
    return Path(res.stdout.strip()).resolve() if res.ok and res.stdout.strip() else None


def read_git_state(repo: Path, runner: Runner, environ: Mapping[str, str]) -> GitState:
    def git(*args: str, check: bool = True) -> str:
        return runner.run(
            ["git", "-C", str(repo), *args], mutates=False, check=check, timeout=30
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--verify", "HEAD")
    except MoltbuildError:
        raise ConfigError(
            f"{repo} is not a git checkout with a commit; tags are derived from HEAD "
            "(commit first, or run from the monorepo clone)"
        ) from None
    branch = git("symbolic-ref", "--quiet", "--short", "HEAD", check=False) or None
    if branch is None:  # detached HEAD, usual in CI
        branch = environ.get("GITHUB_HEAD_REF") or environ.get("GITHUB_REF_NAME") or None
    origin_head = git("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
    default = (
        origin_head.split("/", 1)[1]
        if "/" in origin_head
        else (git("config", "--get", "init.defaultBranch", check=False) or "main")
    )
    # Untracked, not-ignored files count: a build context COPYs them, so the image differs from HEAD.
    dirty = bool(git("status", "--porcelain", "--untracked-files=normal"))
    remote = git("config", "--get", "remote.origin.url", check=False)
    return GitState(
        sha=sha,
        branch=branch,
        default_branch=default,
        dirty=dirty,
        source=(source_url(remote) if remote else None) or DEFAULT_SOURCE,
        commit_time=int(git("show", "-s", "--format=%ct", "HEAD") or 0),
        version_tags=tuple(git("tag", "--points-at", "HEAD", check=False).split()),
    )


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
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise ConfigError(
            f'{WHERE} must be a list of tag templates, e.g. ["{{branch}}-{{sha7}}", "{{sha7}}"]'
        )
    for template in templates:
        unknown = [p for p in _PLACEHOLDER_RE.findall(template) if p not in PLACEHOLDERS]
        if unknown:
            raise ConfigError(
                f"{WHERE}: template {template!r} uses {{{unknown[0]}}}; known: "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            )
    if not {"sha", "sha7"} & set(_PLACEHOLDER_RE.findall(templates[0])):
        raise ConfigError(
            f"{WHERE}: the first template {templates[0]!r} is the revision tag deployments pin; "
            "it needs {sha7} or {sha}"
        )
    return tuple(templates)


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
    tags: list[str] = []
    for template in templates:
        tag = render_template(template, state)
        if tag and tag not in tags:
            tags.append(tag)
    if state.branch == state.default_branch and not state.dirty:
        tags.append("latest")
    if semver and not state.dirty:
        for version in state.version_tags:
            m = _SEMVER_RE.match(version)
            if m:
                major, minor, patch = m.groups()
                tags += [t for t in (f"{major}.{minor}.{patch}", f"{major}.{minor}", major) if t not in tags]
    for tag in extra:
        validate_tag(tag)
        if tag not in tags:
            tags.append(tag)
    return tags


def version_of(state: GitState) -> str:
    return f"sha-{state.short}" + ("-dirty" if state.dirty else "")
