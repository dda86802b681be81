"""What an image's SLSA provenance names beside its report record: the commit, and what each image
was built from (build args, Dockerfile, target, bases and the digests they resolved to)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from moltbuild.errors import MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.flows.facts import git_state
from moltbuild.plan.bases import dockerfile_bases, mirrored
from moltbuild.plan.planner import BuildPlan
from moltbuild.plan.tags import GitState
from moltbuild.refs import ImageRef
from moltbuild.report import ImageRecord, Outcome
from moltbuild.supply.provenance import BuildFacts


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ImageInputs:
    build_args: Mapping[str, str]
    dockerfile: Path
    target: str | None
    bases: tuple[str, ...]
    secrets: tuple[str, ...] = ()  # build secrets' ids (provenance names no value)


@dataclass(frozen=True)
class RunInputs:
    """What provenance names beside the record: the commit and what each image was built from."""

    git: GitState
    mirror: str | None
    pulls: Mapping[str, str]  # base as named -> where it was pulled from
    images: Mapping[str, ImageInputs]

    @classmethod
    def of_plan(cls, plan: BuildPlan) -> RunInputs:
        images = {
            i.name: ImageInputs(i.build_args, i.dockerfile, i.target, i.bases, tuple(k for k, _ in i.secrets))
            for i in plan.images
        }
        return cls(plan.git, plan.mirror, plan.pulls, images)

    @classmethod
    def of_project(cls, session: Session) -> RunInputs:
        """For `invoke push`: the build ran earlier; its inputs read again from the checkout."""
        root = session.settings.project_root
        mirror = session.settings.get("MOLTBUILD_BASE_MIRROR") or None
        images = {
            c.name: ImageInputs(
                c.build_args,
                c.dockerfile,
                c.target,
                tuple(dockerfile_bases(c.dockerfile, c.build_args)),
                tuple(sorted(c.secrets)),
            )
            for c in session.images.values()
        }
        pulls = {b: mirrored(b, mirror) for i in images.values() for b in i.bases}
        return cls(git_state(root, session.runner, session.environ), mirror, pulls, images)


def build_facts(session: Session, inputs: RunInputs, record: ImageRecord, started: str) -> BuildFacts:
    root = session.settings.project_root
    image = inputs.images.get(record.name) or ImageInputs({}, root / "Dockerfile", None, ())
    dockerfile = (
        image.dockerfile.relative_to(root) if image.dockerfile.is_relative_to(root) else image.dockerfile
    )
    return BuildFacts(
        image=record.name,
        repository=record.repository,
        digest=str(record.digest),
        tags=tuple(record.tags),
        source=inputs.git.source,
        commit=record.revision or inputs.git.sha,
        dirty=inputs.git.dirty,
        branch=inputs.git.branch,
        build_args=image.build_args,
        secrets=image.secrets,
        dockerfile=str(dockerfile),
        target=image.target,
        platforms=tuple(record.platforms),
        input_digest=record.input_digest,
        bases={b: base_digest(session, record, inputs, inputs.pulls.get(b, b)) for b in image.bases},
        backend=record.backend,
        backend_detail=record.backend_reason,
        started=started,
        finished=now(),
        reused=record.outcome is Outcome.REUSED,
        environ=session.environ,
    )


def base_digest(session: Session, record: ImageRecord, inputs: RunInputs, source: str) -> str:
    """The digest a base resolved to where it was pulled from; '' when the registry cannot say.
    Only the mirror and the push registry are asked: a public registry may be unreachable here."""
    try:
        ref = ImageRef.parse(source, "base image", default_tag="latest")
        if ref.digest:
            return ref.digest
        if ref.host not in {record.ref.host, (inputs.mirror or "").split("/", 1)[0]}:
            return ""
        found = session.registries.client(ref.host).resolved(ref.repository, ref.reference)
    except MoltbuildError:
        return ""
    return found.digest if found else ""
