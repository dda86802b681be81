"""The build plan: which images, which refs and tags, which args and labels, and which backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError
from moltbuild.plan import bases as baseimages
from moltbuild.plan import tags as tagging
from moltbuild.plan.inputs import input_digest
from moltbuild.plan.request import BuildRequest
from moltbuild.project import ImageConfig, read_tool_table, select_images
from moltbuild.refs import ImageRef, registry_prefix
from moltbuild.settings import Settings
from moltbuild.smoke.probes import SmokePlan, smoke_plan_for
from moltbuild.system.processes import Runner
from moltbuild.system.tables import render_table

INPUT_DIGEST_LABEL = "dev.moltbuild.input-digest"
CACHE_TAG_PREFIX = "input-"
CACHE_REPOSITORY_SUFFIX = "/cache"  # REPO/cache: the name Kaniko's --cache-repo convention uses


def cache_tag(input_digest: str) -> str:
    """The tag that finds an image by its inputs in the registry (the registry is the cache)."""
    return CACHE_TAG_PREFIX + input_digest.removeprefix("sha256:")[:32]


@dataclass(frozen=True)
class BasePull:
    source: str  # where it is pulled from (the mirror, or the base itself)
    users: tuple[str, ...]  # images that need it, for messages


@dataclass(frozen=True)
class ImagePlan:
    name: str
    ref: ImageRef  # the repository images go to, no tag
    tags: tuple[str, ...]  # pin tag first; the input tag last
    context: Path
    dockerfile: Path
    build_args: dict[str, str]
    labels: dict[str, str]
    target: str | None
    platforms: tuple[str, ...]
    input_digest: str
    bases: tuple[str, ...]  # as the Dockerfile names them
    smoke: SmokePlan | None = None  # None: --no-smoke
    timestamp: int = 0  # every timestamp in the image (SOURCE_DATE_EPOCH): same inputs, same digest
    revision: str = ""  # the commit the context comes from (its own repository's, for a submodule)
    notes: tuple[str, ...] = ()  # what the plan says once about this image (e.g. args not passed)
    cache: ImageRef | None = None  # the layer cache in the registry (REPO/cache) read and written

    @property
    def cache_ref(self) -> ImageRef:
        """REPO/cache in the image's registry, whether or not this build uses it."""
        return ImageRef(self.ref.host, self.ref.repository + CACHE_REPOSITORY_SUFFIX)

    @property
    def pin_tag(self) -> str:
        """The immutable revision tag deployments pin (the tag plan's first tag)."""
        return self.tags[0]

    @property
    def repository(self) -> str:
        return self.ref.name

    @property
    def refs(self) -> list[str]:
        return [str(self.ref.with_tag(tag)) for tag in self.tags]

    @property
    def multi_platform(self) -> bool:
        return len(self.platforms) > 1


@dataclass(frozen=True)
class BuildPlan:
    images: tuple[ImagePlan, ...]
    backend: str
    backend_reason: str
    images: Mapping[str, ImageConfig]  # the project's, read once by the run context
    push: bool
    registry: ImageRef  # HOST[:PORT]/NAMESPACE
    git: tagging.GitState
    mirror: str | None
    no_cache: bool = False
    jobs: int = 2
    rebuild: bool = False
    pulls: dict[str, str] = field(default_factory=dict)  # base as named -> where it is pulled from
    cache_note: str = ""  # the registry layer cache: used or not, and why

    def bases_for(self, images: Iterable[ImagePlan]) -> dict[str, BasePull]:
        """The bases `images` need, each with its source and the images that use it."""
        chosen = list(images)
        return {
            base: BasePull(source, tuple(i.name for i in chosen if base in i.bases))
            for base, source in self.pulls.items()
            if any(base in i.bases for i in chosen)
        }


def source_date_epoch(environ: Mapping[str, str], git: tagging.GitState) -> int:
    """SOURCE_DATE_EPOCH when set (reproducible-builds.org), else HEAD's commit time."""
    raw = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        if not raw.isdigit():
            raise ConfigError(
                f"SOURCE_DATE_EPOCH={raw!r} must be whole seconds since 1970 (e.g. git log -1 --format=%ct)"
            )
        return int(raw)
    return git.commit_time


def parse_platforms(value: str | None) -> list[str]:
    platforms = [p.strip() for p in (value or "").split(",") if p.strip()]
    for p in platforms:
        if p.count("/") not in (1, 2):
            raise ConfigError(f"--platform {p!r} is not OS/ARCH[/VARIANT], e.g. linux/amd64")
    return platforms


@dataclass(frozen=True)
class PlanInputs:
    """What planning reads besides the request: settings, git (through the runner), the
    environment (SOURCE_DATE_EPOCH), and the backend the caller chose, with why."""

    settings: Settings
    runner: Runner
    environ: Mapping[str, str]
    backend: str
    backend_reason: str
    images: Mapping[str, ImageConfig]  # the project's, read once by the run context


@dataclass(frozen=True)
class _Project:
    """The project-wide part of a plan, read once."""

    registry: ImageRef
    git: tagging.GitState
    templates: list[str] | None
    semver: bool
    mirror: str | None
    platforms: list[str]
    project_repo: Path | None
    cache_note: str
    registry_cache: bool


def _project(request: BuildRequest, inputs: PlanInputs) -> _Project:
    settings, runner = inputs.settings, inputs.runner
    root = settings.project_root
    registry = registry_prefix(settings["MOLTBUILD_REGISTRY"])  # settings are checked before any work
    settings.seconds("MOLTBUILD_IDLE_TIMEOUT")
    tool = read_tool_table(root)
    semver = tool.get("semver", False)
    if not isinstance(semver, bool):
        raise ConfigError(f"[tool.moltbuild] semver must be true or false, found {semver!r}")
    mirror = settings.get("MOLTBUILD_BASE_MIRROR") or None
    cache_on, cache_note = registry_cache(request, settings)
    return _Project(
        registry=registry,
        git=tagging.read_git_state(root, runner, inputs.environ),
        templates=tagging.check_templates(tool.get("tags")),
        semver=semver,
        mirror=baseimages.validate_mirror(mirror) if mirror else None,
        platforms=parse_platforms(request.platform),
        project_repo=tagging.repo_root(root, runner),
        cache_note=cache_note,
        registry_cache=cache_on,
    )


def registry_cache(request: BuildRequest, settings: Settings) -> tuple[bool, str]:
    """Whether builds read and write the layer cache in the registry (REPO/cache), and why:
    on by default when pushing; --no-cache or MOLTBUILD_REGISTRY_CACHE=0 turn it off."""
    key = "MOLTBUILD_REGISTRY_CACHE"
    if request.no_cache:
        return False, "none (--no-cache: no local or registry layer is reused)"
    if not settings.flag(key):
        return False, f"local layers only ({key}={settings[key]} from {settings.source(key)})"
    if not request.push:
        return False, "local layers only (the registry cache REPO/cache is used with --push)"
    return True, (
        f"local layers, then REPO{CACHE_REPOSITORY_SUFFIX} in the registry (read and written; "
        f"--no-cache or {key}=0 turn it off; a cache failure only warns)"
    )


def make_plan(request: BuildRequest, inputs: PlanInputs, names: Iterable[str] | None = None) -> BuildPlan:
    """The whole plan, before anything runs. `names`: the images to plan (default: the request's
    selection); the backend is the caller's choice, passed in `inputs`."""
    configs = select_images(dict(inputs.images), only=request.only if names is None else list(names))
    project = _project(request, inputs)
    # Tags, labels and times come from the repository that holds each build context: the
    # project's own, or another checkout inside it (a submodule).
    states: dict[Path | None, tagging.GitState] = {project.project_repo: project.git}
    images = [_image_plan(cfg, request, inputs, project, states) for cfg in configs]
    pulls = {base: baseimages.mirrored(base, project.mirror) for image in images for base in image.bases}
    return BuildPlan(
        images=tuple(images),
        backend=inputs.backend,
        backend_reason=inputs.backend_reason,
        push=request.push,
        registry=project.registry,
        git=project.git,
        mirror=project.mirror,
        no_cache=request.no_cache,
        jobs=request.jobs,
        pulls=pulls,
        rebuild=request.rebuild,
        cache_note=project.cache_note,
    )


def _git_state(
    cfg: ImageConfig, inputs: PlanInputs, project: _Project, states: dict[Path | None, tagging.GitState]
) -> tagging.GitState:
    repo = tagging.repo_root(cfg.context, inputs.runner)
    if repo not in states:
        states[repo] = tagging.read_git_state(repo, inputs.runner, inputs.environ) if repo else project.git
    return states[repo]


def _image_plan(
    cfg: ImageConfig,
    request: BuildRequest,
    inputs: PlanInputs,
    project: _Project,
    states: dict[Path | None, tagging.GitState],
) -> ImagePlan:
    state = _git_state(cfg, inputs, project, states)
    dockerfile = Dockerfile.read(cfg.dockerfile, cfg.build_args)
    dockerfile.stage(cfg.target, f"target of [tool.moltbuild.images.{cfg.name}]")  # a typo stops here
    tags = tagging.plan_tags(state, request.tags, project.templates, semver=project.semver)
    epoch = source_date_epoch(inputs.environ, state)
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = tagging.version_of(state)
    platforms = tuple(project.platforms or cfg.platforms)
    # Build args only where the Dockerfile declares them: anything else only draws a warning.
    declared = dockerfile.declared_args
    configured = {k: v for k, v in cfg.build_args.items() if k in declared}
    unused = sorted(set(cfg.build_args) - declared)
    digest = input_digest(cfg.context, cfg.dockerfile, configured, cfg.target, platforms)
    standard = {"VERSION": version, "REVISION": state.sha, "CREATED": created, "SOURCE": state.source}
    label_args = {k: v for k, v in standard.items() if k in declared}
    labels = {
        "org.opencontainers.image.revision": state.sha,
        "org.opencontainers.image.source": state.source,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.version": version,
        INPUT_DIGEST_LABEL: digest,
    }
    ref = ImageRef.repository_of(
        f"{project.registry.name}/{cfg.repository}", f"[tool.moltbuild.images.{cfg.name}] repository"
    )
    return ImagePlan(
        name=cfg.name,
        ref=ref,
        tags=(*tags, cache_tag(digest)),
        context=cfg.context,
        dockerfile=cfg.dockerfile,
        build_args={**label_args, **configured},
        labels=labels,
        target=cfg.target,
        platforms=platforms,
        input_digest=digest,
        bases=tuple(dockerfile.bases()),
        timestamp=epoch,
        smoke=smoke_plan_for(inputs.settings.project_root, cfg, inputs.runner) if request.smoke else None,
        revision=state.sha,
        cache=ImageRef(ref.host, ref.repository + CACHE_REPOSITORY_SUFFIX)
        if project.registry_cache
        else None,
        notes=(
            (
                f"build args {', '.join(unused)} ([tool.moltbuild.images.{cfg.name}] build_args) are not "
                f"declared by {cfg.dockerfile.name} (no ARG): not passed",
            )
            if unused
            else ()
        ),
    )


def render_plan(plan: BuildPlan) -> str:
    git = plan.git
    lines = [
        f"backend:  {plan.backend}: {plan.backend_reason}",
        f"revision: {git.sha} on {git.branch or '(detached)'}{' (dirty)' if git.dirty else ''}; "
        f"default branch {git.default_branch}",
        *(
            f"          {img.name} comes from another repository at {img.revision}"
            for img in plan.images
            if img.revision and img.revision != git.sha
        ),
        f"push:     {'yes, to ' + plan.registry.name if plan.push else 'no (add --push)'}",
        f"reuse:    {_reuse_line(plan)}",
        f"cache:    {plan.cache_note or 'local layers'}",
        f"smoke:    {_smoke_line(plan)}",
    ]
    if plan.pulls:
        lines.append(
            "bases:    "
            + ", ".join(
                base if str(baseimages.parse_base(base)) == src else f"{base} <- {src}"
                for base, src in plan.pulls.items()
            )
        )
    rows = []
    for img in plan.images:
        rows.append(
            (
                img.name,
                img.repository,
                ", ".join(img.tags),
                ",".join(img.platforms) or "native",
                img.input_digest[:19],
            )
        )
    lines += ["", render_table(("image", "repository", "tags", "platforms", "input digest"), rows)]
    for img in plan.images:
        args = " ".join(f"{k}={v}" for k, v in img.build_args.items())
        lines.append(f"\n{img.name} build args: {args or '(none: the Dockerfile declares no ARG)'}")
        lines += [f"{img.name} note: {note}" for note in img.notes]
    return "\n".join(lines)


def _reuse_line(plan: BuildPlan) -> str:
    if not plan.push:
        return "no (the registry is the cache: only with --push)"
    if plan.rebuild:
        return "no (--rebuild)"
    return (
        f"an image already pushed with the same inputs ({CACHE_TAG_PREFIX}<digest> tag) "
        "is retagged, not rebuilt"
    )


def _smoke_line(plan: BuildPlan) -> str:
    if any(img.smoke is None for img in plan.images):
        return "no (--no-smoke)"
    parts = []
    for img in plan.images:
        assert img.smoke is not None
        paths = ", ".join(sorted({f"{c.path}:{c.port}" for c in img.smoke.http})) or "no probe"
        parts.append(f"{img.name}: HEALTHCHECK + {paths} ({img.smoke.found})")
    return "each image runs before the push; " + "; ".join(parts)
