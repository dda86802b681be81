"""After the push: every image the registry now has from this run (built or reused) gets its
SBOM, SLSA provenance and, with a signer, a cosign signature. `MOLTBUILD_ATTEST` decides: auto
(when syft and cosign are installed), on (required: checked before any build), off."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from moltbuild.errors import BuildError, ConfigError, MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.plan.planner import BuildPlan, ImagePlan
from moltbuild.refs import ImageRef
from moltbuild.report import ImageRecord
from moltbuild.supply.attest import Attached, Attester
from moltbuild.supply.cosign import Signer
from moltbuild.supply.provenance import BuildFacts
from moltbuild.supply.tools import INSTALL_HINT, RegistryAccess, find_tool
from moltbuild.system import owners

TOOLS = ("syft", "cosign")


class AttestError(BuildError):
    pass


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _missing(session: Session) -> list[str]:
    return [t for t in TOOLS if not find_tool(session.runner, t)]


def preflight(session: Session) -> None:
    """`MOLTBUILD_ATTEST=on` without the tools stops before any build, not after the push."""
    missing = _missing(session)
    if session.settings.get("MOLTBUILD_ATTEST", "auto") == "on" and missing:
        raise ConfigError(f"MOLTBUILD_ATTEST=on but {' and '.join(missing)} not installed: {INSTALL_HINT}")


def wanted(session: Session) -> bool:
    """Whether this run attests what it pushes (auto without the tools: a warning, no)."""
    if session.settings.get("MOLTBUILD_ATTEST", "auto") == "off":
        return False
    preflight(session)
    missing = _missing(session)
    if missing:
        session.runner.warn(
            f"pushed images get no SBOM, provenance or signature: {' and '.join(missing)} not installed "
            f"({INSTALL_HINT}; MOLTBUILD_ATTEST=off silences this)"
        )
        return False
    return True


def attest_records(
    session: Session, plan: BuildPlan, records: list[ImageRecord], started: str
) -> list[ImageRecord]:
    """The records with their attestation references; an image that could not be attested keeps
    its push and makes the run fail after every image was tried."""
    todo = [r for r in records if r.outcome.in_registry and r.digest]
    if not todo or not wanted(session):
        return records
    signer = Signer.from_settings(session.settings, session.environ)
    say = session.runner.say
    say(f"attest: SBOM + SLSA provenance for {len(todo)} image(s), {signer.describe()}")
    by_name = {i.name: i for i in plan.images}
    out, failures = {r.name: r for r in records}, []
    with owners.private_dir() as tmp:  # 0700: the registry credential file lives here
        attester = _attester(session, plan, signer, Path(tmp))
        for record in todo:
            try:
                done = attester.already(record.ref, record.digest) if record.skipped else None
                done = done or attester.attest(_facts(session, plan, by_name[record.name], record, started))
            except MoltbuildError as exc:
                failures.append(f"{record.name}: {exc.message}")
                continue
            say(f"[{record.name}] {_said(done)}")
            out[record.name] = record.but(
                sbom=done.sbom, provenance=done.provenance, signature=done.signature
            )
    if failures:
        error = AttestError(f"pushed, but not attested: {'; '.join(failures)}")
        error.records = list(out.values())
        raise error
    return list(out.values())


def _said(done: Attached) -> str:
    if done.note:
        return f"{done.note}: {done.provenance}"
    what = "signed, SBOM" if done.signature != "unsigned" else "UNSIGNED SBOM"
    return f"{what} ({done.packages} packages) + provenance at {done.provenance}"


def _attester(session: Session, plan: BuildPlan, signer: Signer, workdir: Path) -> Attester:
    host = plan.registry.host
    return Attester(
        runner=session.runner,
        client=session.registries.client(host),
        access=RegistryAccess.prepare(host, session.settings, workdir),
        signer=signer,
        sbom_format=session.settings.get("MOLTBUILD_SBOM_FORMAT", "spdx-json"),
        workdir=workdir,
    )


def _facts(
    session: Session, plan: BuildPlan, image: ImagePlan, record: ImageRecord, started: str
) -> BuildFacts:
    root = session.settings.project_root
    dockerfile = (
        image.dockerfile.relative_to(root) if image.dockerfile.is_relative_to(root) else image.dockerfile
    )
    return BuildFacts(
        image=record.name,
        repository=record.repository,
        digest=str(record.digest),
        tags=tuple(record.tags),
        source=plan.git.source,
        commit=record.revision or plan.git.sha,
        dirty=plan.git.dirty,
        branch=plan.git.branch,
        build_args=image.build_args,
        dockerfile=str(dockerfile),
        target=image.target,
        platforms=tuple(record.platforms),
        input_digest=record.input_digest,
        bases={base: _base_digest(session, plan, plan.pulls.get(base, base)) for base in image.bases},
        backend=record.backend,
        backend_detail=record.backend_reason,
        started=started,
        finished=now(),
        reused=record.skipped,
        environ=session.environ,
    )


def _base_digest(session: Session, plan: BuildPlan, source: str) -> str:
    """The digest a base resolved to where it was pulled from; '' when the registry cannot say.
    Only the mirror and the push registry are asked: a public registry may be unreachable here."""
    try:
        ref = ImageRef.parse(source, "base image", default_tag="latest")
        if ref.digest:
            return ref.digest
        if ref.host not in {plan.registry.host, (plan.mirror or "").split("/", 1)[0]}:
            return ""
        found = session.registries.client(ref.host).manifest(ref.repository, ref.reference)
    except MoltbuildError:
        return ""
    return found.digest if found else ""
