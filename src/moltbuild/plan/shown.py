"""The build plan as the user reads it before anything runs: backend, revision, push, reuse,
cache, smoke, bases, the image graph, one row per image and its args, secrets and notes."""

from __future__ import annotations

from moltbuild.plan import bases as baseimages
from moltbuild.plan import graph
from moltbuild.plan import secrets as build_secrets
from moltbuild.plan.planner import CACHE_REPOSITORY_SUFFIX, CACHE_TAG_PREFIX, BuildPlan, ImagePlan
from moltbuild.system.tables import render_table


def render_plan(plan: BuildPlan) -> str:
    lines = [
        f"backend:  {plan.backend}: {plan.backend_reason}",
        *_revision_lines(plan),
        f"push:     {'yes, to ' + plan.registry.name if plan.push else 'no (add --push)'}",
        f"reuse:    {_reuse_line(plan)}",
        f"cache:    {_cache_line(plan)}",
        f"smoke:    {_smoke_line(plan)}",
    ]
    if plan.pulls:
        lines.append("bases:    " + ", ".join(_pull_shown(base, src) for base, src in plan.pulls.items()))
    edges = graph.render_edges({i.name: [link.image for link in i.needs] for i in plan.images})
    if edges:
        lines.append(f"graph:    {edges} (a base first; each image FROM it by digest)")
    rows = [_row(img) for img in plan.images]
    lines += ["", render_table(("image", "repository", "tags", "platforms", "input digest"), rows)]
    return "\n".join([*lines, *(line for img in plan.images for line in _args_lines(img, plan))])


def _row(img: ImagePlan) -> tuple[str, ...]:
    platforms = ",".join(img.platforms) or "native"
    return (img.name, img.repository, ", ".join(img.tags), platforms, img.input_digest[:19])


def _args_lines(img: ImagePlan, plan: BuildPlan) -> list[str]:
    args = " ".join(f"{k}={v}" for k, v in img.build_args.items())
    shown = f"\n{img.name} build args: {args or '(none: the Dockerfile declares no ARG)'}"
    here = {i.name for i in plan.images}
    unbuilt = [
        f"FROM {link.image} as pushed with its current inputs ({link.unbuilt}): "
        "not built in this run (--no-deps)"
        for link in img.needs
        if link.image not in here
    ]
    given = [f"{img.name} secrets: {build_secrets.describe(img.secrets)}"] if img.secrets else []
    return [shown, *given, *(f"{img.name} note: {note}" for note in (*img.notes, *unbuilt))]


def _revision_lines(plan: BuildPlan) -> list[str]:
    git = plan.git
    dirty = " (dirty)" if git.dirty else ""
    return [
        f"revision: {git.sha} on {git.branch or '(detached)'}{dirty}; default branch {git.default_branch}",
        *(
            f"          {img.name} comes from another repository at {img.revision}"
            for img in plan.images
            if img.revision and img.revision != git.sha
        ),
    ]


def _pull_shown(base: str, source: str) -> str:
    return base if str(baseimages.parse_base(base)) == source else f"{base} <- {source}"


def _reuse_line(plan: BuildPlan) -> str:
    if not plan.push:
        return "no (the registry is the cache: only with --push)"
    if plan.rebuild:
        return "no (--rebuild)"
    return (
        f"an image already pushed with the same inputs ({CACHE_TAG_PREFIX}<digest> tag) "
        "is retagged, not rebuilt"
    )


def _cache_line(plan: BuildPlan) -> str:
    if plan.backend != "kaniko":
        return plan.cache_note or "local layers"
    if plan.push and any(img.cache for img in plan.images):
        return f"REPO{CACHE_REPOSITORY_SUFFIX} in the registry (kaniko's --cache-repo; no local layers)"
    return "none (each kaniko Job starts empty; REPO/cache is used with --push)"


def _smoke_line(plan: BuildPlan) -> str:
    if plan.backend == "kaniko":  # the Job pushes what it built: nothing runs here first
        return "no local smoke: kaniko Jobs build and push in the cluster (invoke smoke --ref REF after)"
    if any(img.smoke is None for img in plan.images):
        return "no (--no-smoke)"
    parts = []
    for img in plan.images:
        assert img.smoke is not None
        paths = ", ".join(sorted({f"{c.path}:{c.port}" for c in img.smoke.http})) or "no probe"
        parts.append(f"{img.name}: HEALTHCHECK + {paths} ({img.smoke.found})")
    return "each image runs before the push; " + "; ".join(parts)
