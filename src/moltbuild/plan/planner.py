"""The build plan: which images, which refs and tags, which args and labels, and which backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from moltbuild.backends.contract import BasePull
from moltbuild.backends.selection import choose_backend, statuses_for
from moltbuild.errors import ConfigError
from moltbuild.flows.context import Session
from moltbuild.plan import bases as baseimages
from moltbuild.plan import tags as tagging
from moltbuild.plan.inputs import input_digest
from moltbuild.project import ImageConfig, load_images, read_tool_table
from moltbuild.refs import ImageRef, names_a_host
from moltbuild.smoke.probes import SmokePlan, smoke_plan_for
from moltbuild.system.tables import render_table

INPUT_DIGEST_LABEL = "dev.moltbuild.input-digest"
CACHE_TAG_PREFIX = "input-"


def cache_tag(input_digest: str) -> str:
    """The tag that finds an image by its inputs in the registry (the registry is the cache)."""
    return CACHE_TAG_PREFIX + input_digest.removeprefix("sha256:")[:32]


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


def registry_prefix(value: str) -> ImageRef:
    """MOLTBUILD_REGISTRY as HOST[:PORT]/NAMESPACE; anything else is one clear line."""
    value = value.strip().rstrip("/")
    first, sep, _ = value.partition("/")
    if not sep or not names_a_host(first):
        raise ConfigError(f"MOLTBUILD_REGISTRY={value!r} needs a namespace: HOST[:PORT]/NAMESPACE")
    return ImageRef.repository_of(value, "MOLTBUILD_REGISTRY")


def select_images(
    images: dict[str, ImageConfig],
    *,
    only: Iterable[str] = (),
    api_only: bool = False,
    frontend_only: bool = False,
) -> list[ImageConfig]:
    if api_only and frontend_only:
        raise ConfigError("--api-only and --frontend-only exclude each other; pass neither to build both")
    wanted = [n.strip() for n in only if n.strip()]
    if api_only:
        wanted.append("api")
    if frontend_only:
        wanted.append("frontend")
    unknown = [n for n in wanted if n not in images]
    if unknown:
        raise ConfigError(f"unknown image {unknown[0]!r}; known: {', '.join(images)}")
    return [images[n] for n in images if not wanted or n in wanted]


def parse_platforms(value: str | None) -> list[str]:
    platforms = [p.strip() for p in (value or "").split(",") if p.strip()]
    for p in platforms:
        if p.count("/") not in (1, 2):
            raise ConfigError(f"--platform {p!r} is not OS/ARCH[/VARIANT], e.g. linux/amd64")
    return platforms


def make_plan(
    session: Session,
    *,
    only: Iterable[str] = (),
    api_only: bool = False,
    frontend_only: bool = False,
    extra_tags: Iterable[str] = (),
    backend: str | None = None,
    platforms: str | None = None,
    push: bool = False,
    force: bool = False,
    no_cache: bool = False,
    jobs: int = 2,
    rebuild: bool = False,
    dry_run: bool = False,
    smoke: bool = True,
) -> BuildPlan:
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1")
    settings = session.settings
    root = settings.project_root
    configs = select_images(load_images(root), only=only, api_only=api_only, frontend_only=frontend_only)
    registry = registry_prefix(settings["MOLTBUILD_REGISTRY"])  # settings are checked before any work
    settings.seconds("MOLTBUILD_IDLE_TIMEOUT")
    git = tagging.read_git_state(root, session.runner, session.environ)
    tool = read_tool_table(root)
    semver = tool.get("semver", False)
    if not isinstance(semver, bool):
        raise ConfigError(f"[tool.moltbuild] semver must be true or false, found {semver!r}")
    templates = tagging.check_templates(tool.get("tags"))
    mirror = settings.get("MOLTBUILD_BASE_MIRROR") or None
    if mirror:
        mirror = baseimages.validate_mirror(mirror)
    cli_platforms = parse_platforms(platforms)
    # Tags, labels and times come from the repository that holds each build context: the
    # project's own, or another checkout inside it (a submodule).
    project_repo = tagging.repo_root(root, session.runner)
    states: dict[Path | None, tagging.GitState] = {project_repo: git}

    requested = backend or settings["MOLTBUILD_BACKEND"]
    name, reason = choose_backend(
        requested,
        statuses_for(requested, session.runner, settings, session.storage),
        session.storage,
        force=force,
        dry_run=dry_run,
    )
    images = []
    pulls: dict[str, str] = {}
    for cfg in configs:
        repo = tagging.repo_root(cfg.context, session.runner)
        if repo not in states:
            states[repo] = tagging.read_git_state(repo, session.runner, session.environ) if repo else git
        state = states[repo]
        tags = tagging.plan_tags(state, extra_tags, templates, semver=semver)
        epoch = source_date_epoch(session.environ, state)
        created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = tagging.version_of(state)
        plats = tuple(cli_platforms or cfg.platforms)
        digest = input_digest(cfg.context, cfg.dockerfile, cfg.build_args, cfg.target, plats)
        label_args = {"VERSION": version, "REVISION": state.sha, "CREATED": created, "SOURCE": state.source}
        labels = {
            "org.opencontainers.image.revision": state.sha,
            "org.opencontainers.image.source": state.source,
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.version": version,
            INPUT_DIGEST_LABEL: digest,
        }
        bases = baseimages.dockerfile_bases(cfg.dockerfile, cfg.build_args)
        for base in bases:
            pulls[base] = baseimages.mirrored(base, mirror)
        images.append(
            ImagePlan(
                name=cfg.name,
                ref=ImageRef.repository_of(
                    f"{registry.name}/{cfg.repository}", f"[tool.moltbuild.images.{cfg.name}] repository"
                ),
                tags=(*tags, cache_tag(digest)),
                context=cfg.context,
                dockerfile=cfg.dockerfile,
                build_args={**label_args, **cfg.build_args},
                labels=labels,
                target=cfg.target,
                platforms=plats,
                input_digest=digest,
                bases=tuple(bases),
                timestamp=epoch,
                smoke=smoke_plan_for(root, cfg) if smoke else None,
                revision=state.sha,
            )
        )
    return BuildPlan(
        images=tuple(images),
        backend=name,
        backend_reason=reason,
        push=push,
        registry=registry,
        git=git,
        mirror=mirror,
        no_cache=no_cache,
        jobs=jobs,
        pulls=pulls,
        rebuild=rebuild,
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
        lines.append(f"\n{img.name} build args: {args}")
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
        parts.append(f"{img.name}: HEALTHCHECK + {paths}")
    return "each image runs before the push; " + "; ".join(parts)
