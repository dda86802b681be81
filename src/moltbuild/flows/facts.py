"""The facts a plan is computed from, gathered once per run: git (HEAD, branch, dirty, tags at
HEAD, the default branch, the source URL, what changed since a base), each selected image's
Dockerfile parsed once, its smoke plan (kustomize or kubectl render k8s/), and [tool.moltbuild].
plan/ receives them as immutable facts (plan.facts) and runs nothing itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.plan import graph
from moltbuild.plan.changes import check_explicit_base, resolve_base
from moltbuild.plan.facts import DEFAULT_SOURCE, ZERO_SHA, ChangeFacts, GitState, ImageFacts, PlanFacts
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.tags import source_url
from moltbuild.project import ImageConfig, read_tool_table, select_images
from moltbuild.refs import registry_prefix
from moltbuild.smoke.probes import smoke_plan_for
from moltbuild.system import state
from moltbuild.system.processes import Runner


class _Git:
    """git -C REPO, read-only; a failed command with check=False reads as ''."""

    def __init__(self, repo: Path, runner: Runner, timeout: float = 30):
        self.repo, self.runner, self.timeout = repo, runner, timeout

    def __call__(self, *args: str, check: bool = True) -> str:
        res = self.runner.run(
            ["git", "-C", str(self.repo), *args], mutates=False, check=check, timeout=self.timeout
        )
        return res.stdout if res.ok else ""

    def line(self, *args: str) -> str:
        return self(*args, check=False).strip()

    def commit(self, ref: str) -> str | None:
        return self.line("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") or None


def repo_root(path: Path, runner: Runner) -> Path | None:
    """The top of the git checkout that holds `path` (a build context may sit in a submodule)."""
    top = _Git(path, runner).line("rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else None


def git_state(repo: Path, runner: Runner, environ: Mapping[str, str]) -> GitState:
    """HEAD of the checkout at `repo`, as the tag plan and the labels need it."""
    git = _Git(repo, runner)
    try:
        sha = git("rev-parse", "--verify", "HEAD").strip()
    except MoltbuildError:
        raise ConfigError(
            f"{repo} is not a git checkout with a commit; tags are derived from HEAD "
            "(commit first, or run from the monorepo clone)"
        ) from None
    branch = git.line("symbolic-ref", "--quiet", "--short", "HEAD") or None
    # Untracked, not-ignored files count: a build context COPYs them, so the image differs from HEAD.
    return GitState(
        sha=sha,
        branch=branch or _ci_branch(environ),
        default_branch=_default_branch(git),
        dirty=bool(git("status", "--porcelain", "--untracked-files=normal").strip()),
        source=_source(git),
        commit_time=int(git("show", "-s", "--format=%ct", "HEAD").strip() or 0),
        version_tags=tuple(git.line("tag", "--points-at", "HEAD").split()),
    )


def _ci_branch(environ: Mapping[str, str]) -> str | None:
    """A detached HEAD (usual in CI): the branch GitHub names, if any."""
    return environ.get("GITHUB_HEAD_REF") or environ.get("GITHUB_REF_NAME") or None


def _default_branch(git: _Git) -> str:
    origin_head = git.line("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if "/" in origin_head:
        return origin_head.split("/", 1)[1]
    return git.line("config", "--get", "init.defaultBranch") or "main"


def _source(git: _Git) -> str:
    """The origin remote's URL; without one, `[tool.moltbuild] source` of the checkout, else none."""
    remote = git.line("config", "--get", "remote.origin.url")
    configured = str(read_tool_table(git.repo).get("source") or "")
    return (source_url(remote) if remote else None) or configured or DEFAULT_SOURCE


def plan_facts(session: Session, request: BuildRequest, names: Iterable[str] | None = None) -> PlanFacts:
    """The facts of the images to plan (`names`, default: the request's selection), with every
    image of the project they are built FROM (built too unless --no-deps; facts for the digest)."""
    root, runner = session.settings.project_root, session.runner
    selected = select_images(dict(session.images), only=request.only if names is None else list(names))
    needs = image_needs(session, [c.name for c in selected])
    wanted = {c.name for c in selected} if request.no_deps else set(needs)
    project = git_state(root, runner, session.environ)
    top = repo_root(root, runner)
    states: dict[Path | None, GitState] = {top: project}
    images = []
    for name in needs:
        cfg = session.images[name]
        repo = top if _inside_checkout(cfg.context, root) else repo_root(cfg.context, runner)
        if repo not in states:
            states[repo] = git_state(repo, runner, session.environ) if repo else project
        dockerfile = _dockerfile(cfg)
        smoke = smoke_plan_for(root, cfg, runner, dockerfile) if request.smoke and name in wanted else None
        images.append(ImageFacts(cfg, dockerfile, states[repo], smoke, wanted=name in wanted))
    return PlanFacts(project, tuple(images), read_tool_table(root), session.environ)


def _inside_checkout(path: Path, root: Path) -> bool:
    """`path` is in the project's own checkout: under the root with no .git (a submodule, a nested
    clone) between. Decided on the file system: one git process per image adds up at 30 images."""
    root = root.resolve()
    here = path.resolve()
    if here != root and root not in here.parents:
        return False
    while here != root:
        if (here / ".git").exists():
            return False
        here = here.parent
    return True


def image_needs(session: Session, names: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Each image of `names` (default: all) and every image they are built FROM, transitively,
    bases first: name -> the project images its FROMs name. A cycle is refused here."""
    registry = registry_prefix(session.settings["MOLTBUILD_REGISTRY"])
    repos = graph.repositories(registry, session.images.values())
    found: dict[str, tuple[str, ...]] = {}
    stack = list(session.images if names is None else names)
    while stack:
        name = stack.pop()
        if name not in found:
            uses = graph.project_bases(_dockerfile(session.images[name]), repos, name)
            found[name] = tuple(u.image for u in uses)
            stack.extend(found[name])
    return {n: found[n] for n in graph.order({n: found[n] for n in session.images if n in found})}


def _dockerfile(cfg: ImageConfig) -> Dockerfile:
    """The image's Dockerfile read once per command (images sharing one with the same args share
    the model), its target checked: a typo stops here."""
    dockerfile = _read(cfg.dockerfile, tuple(sorted(cfg.build_args.items())))
    dockerfile.stage(cfg.target, f"target of [tool.moltbuild.images.{cfg.name}]")
    return dockerfile


@state.command_cache(maxsize=256)
def _read(path: Path, args: tuple[tuple[str, str], ...]) -> Dockerfile:
    return Dockerfile.read(path, dict(args))


def change_facts(root: Path, base: str, runner: Runner) -> ChangeFacts:
    """What git says changed between `base` and HEAD; nothing is asked for an all-zero base."""
    git = _Git(root, runner, timeout=60)
    sha = None if ZERO_SHA.match(base) else git.commit(base)
    if sha is None:
        return ChangeFacts(base)
    # NUL-separated: paths exactly as stored (no quoting of non-ASCII names, core.quotePath)
    paths = tuple(p for p in git("diff", "--name-only", "--no-renames", "-z", sha, "HEAD").split("\0") if p)
    old = git("show", f"{sha}:pyproject.toml", check=False)
    return ChangeFacts(base, sha, paths, old, git("show", "HEAD:pyproject.toml", check=False))


def changes_since(session: Session, base_flag: str | None, during: str = "") -> ChangeFacts:
    """The base resolved (--base, else GitHub's event, else HEAD^) and what changed since. A --base
    typed that is no commit here is one line; a git failure names `during` and the base."""
    base = resolve_base(base_flag, session.environ)
    try:
        facts = change_facts(session.settings.project_root, base, session.runner)
    except MoltbuildError as exc:
        if not during:
            raise
        raise MoltbuildError(f"{during}: cannot compare with {base}: {exc.message}") from None
    if base_flag and base_flag.strip():
        check_explicit_base(facts)
    return facts
