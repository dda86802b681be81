"""The build plan: which images, which refs and tags, which args and labels, and which backend,
computed from the request, the settings and the facts the flow gathered (no process runs here)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.plan import bases as baseimages
from moltbuild.plan import graph
from moltbuild.plan import secrets as build_secrets
from moltbuild.plan import tags as tagging
from moltbuild.plan.facts import ImageFacts, PlanFacts
from moltbuild.plan.inputs import input_digest
from moltbuild.plan.request import BuildRequest
from moltbuild.project import ImageConfig
from moltbuild.refs import ImageRef, registry_prefix
from moltbuild.settings import Settings
from moltbuild.smoke.probes import SmokePlan

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
    # build secrets the Dockerfile mounts: (id, "env:VAR" | "file:PATH"), never a value
    secrets: tuple[tuple[str, str], ...] = ()
    secret_mounts: tuple[str, ...] = ()  # every secret id a RUN --mount names (given or not)
    run_mounts: bool = False  # RUN --mount of type secret or cache: a BuildKit (or buildah) feature
    needs: tuple[graph.BaseLink, ...] = ()  # the project images its FROMs name (the image graph)

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
    """What planning reads besides the request: settings, the facts the flow gathered once (git,
    the selected images with their parsed Dockerfiles and smoke plans, [tool.moltbuild], the
    environment), and the backend the caller chose, with why."""

    settings: Settings
    facts: PlanFacts
    backend: str
    backend_reason: str


@dataclass(frozen=True)
class _Project:
    """The project-wide part of a plan, read once."""

    registry: ImageRef
    templates: tuple[str, ...]
    semver: bool
    mirror: str | None
    platforms: list[str]
    cache_note: str
    registry_cache: bool


def check_settings(settings: Settings) -> ImageRef:
    """The settings planning reads, checked before any fact is gathered (a bad setting is named
    before git or a Dockerfile is asked anything); returns the registry prefix."""
    settings.seconds("MOLTBUILD_IDLE_TIMEOUT")
    return registry_prefix(settings["MOLTBUILD_REGISTRY"])


def _project(request: BuildRequest, inputs: PlanInputs) -> _Project:
    settings, tool = inputs.settings, inputs.facts.tool
    registry = check_settings(settings)
    semver = tool.get("semver", False)
    if not isinstance(semver, bool):
        raise ConfigError(f"[tool.moltbuild] semver must be true or false, found {semver!r}")
    mirror = settings.get("MOLTBUILD_BASE_MIRROR") or None
    cache_on, cache_note = registry_cache(request, settings)
    return _Project(
        registry=registry,
        templates=tagging.check_templates(tool.get("tags")),
        semver=semver,
        mirror=baseimages.validate_mirror(mirror) if mirror else None,
        platforms=parse_platforms(request.platform),
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


def make_plan(request: BuildRequest, inputs: PlanInputs) -> BuildPlan:
    """The whole plan, before anything runs, of the images in `inputs.facts` (the flow selected
    them); the backend is the caller's choice, passed in `inputs`."""
    project = _project(request, inputs)
    facts = {i.config.name: i for i in inputs.facts.images}
    repos = graph.repositories(project.registry, (i.config for i in facts.values()))
    uses = {n: graph.project_bases(i.dockerfile, repos, n) for n, i in facts.items()}
    planned: dict[str, ImagePlan] = {}
    for name in graph.order({n: [u.image for u in us] for n, us in uses.items()}):
        links = tuple(_link(use, planned[use.image]) for use in uses[name] if use.image in planned)
        planned[name] = _image_plan(facts[name], request, inputs.facts.environ, project, links)
    images = [planned[n] for n in planned if facts[n].wanted]
    pulls = {base: baseimages.mirrored(base, project.mirror) for image in images for base in image.bases}
    return BuildPlan(
        images=tuple(images),
        backend=inputs.backend,
        backend_reason=inputs.backend_reason,
        push=request.push,
        registry=project.registry,
        git=inputs.facts.git,
        mirror=project.mirror,
        no_cache=request.no_cache,
        jobs=request.jobs,
        pulls=pulls,
        rebuild=request.rebuild,
        cache_note=project.cache_note,
    )


def _link(use: graph.BaseUse, base: ImagePlan) -> graph.BaseLink:
    return graph.BaseLink(
        use, base.ref, base.input_digest, str(base.ref.with_tag(cache_tag(base.input_digest)))
    )


def _image_plan(
    image: ImageFacts,
    request: BuildRequest,
    environ: Mapping[str, str],
    project: _Project,
    needs: tuple[graph.BaseLink, ...] = (),
) -> ImagePlan:
    # Tags, labels and times come from the repository that holds the build context: the
    # project's own, or another checkout inside it (a submodule).
    cfg, state, dockerfile = image.config, image.git, image.dockerfile
    tags = tagging.plan_tags(state, request.tags, project.templates, semver=project.semver)
    epoch = source_date_epoch(environ, state)
    platforms = tuple(project.platforms or cfg.platforms)
    # Build args only where the Dockerfile declares them: anything else only draws a warning.
    declared = dockerfile.declared_args
    configured = {k: v for k, v in cfg.build_args.items() if k in declared}
    secrets, secret_notes = build_secrets.used_secrets(cfg, dockerfile)
    digest = input_digest(
        cfg.context, cfg.dockerfile, configured, cfg.target, platforms, [key for key, _ in secrets]
    )
    if needs:  # built FROM another image of the project: its inputs are this image's too
        digest = graph.with_bases(digest, (link.input_digest for link in needs))
    labels = _labels(state, epoch, digest)
    standard = {
        "VERSION": labels["org.opencontainers.image.version"],
        "REVISION": state.sha,
        "CREATED": labels["org.opencontainers.image.created"],
        "SOURCE": state.source,
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
        build_args={**{k: v for k, v in standard.items() if k in declared}, **configured},
        labels=labels,
        target=cfg.target,
        platforms=platforms,
        input_digest=digest,
        bases=tuple(b for b in dockerfile.bases() if b not in {link.use.named for link in needs}),
        needs=needs,
        timestamp=epoch,
        smoke=image.smoke if request.smoke else None,
        revision=state.sha,
        cache=ImageRef(ref.host, ref.repository + CACHE_REPOSITORY_SUFFIX)
        if project.registry_cache
        else None,
        notes=(
            *tagging.latest_notes(state, project.templates),
            *_unused_args_note(cfg, sorted(set(cfg.build_args) - declared)),
            *secret_notes,
        ),
        secrets=secrets,
        secret_mounts=tuple(dict.fromkeys(m.id for m in dockerfile.secret_mounts)),
        run_mounts=bool(dockerfile.mounts),
    )


def _labels(state: tagging.GitState, epoch: int, digest: str) -> dict[str, str]:
    """The OCI annotations every image carries, and its input digest."""
    return {
        "org.opencontainers.image.revision": state.sha,
        "org.opencontainers.image.source": state.source,
        "org.opencontainers.image.created": datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.version": tagging.version_of(state),
        INPUT_DIGEST_LABEL: digest,
    }


def _unused_args_note(cfg: ImageConfig, unused: list[str]) -> tuple[str, ...]:
    if not unused:
        return ()
    return (
        f"build args {', '.join(unused)} ([tool.moltbuild.images.{cfg.name}] build_args) are not "
        f"declared by {cfg.dockerfile.name} (no ARG): not passed",
    )
