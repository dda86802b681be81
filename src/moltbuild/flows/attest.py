"""After the push: every image the registry now has from this run (built or reused) gets its
SBOM, SLSA provenance and, with a signer, a cosign signature. `MOLTBUILD_ATTEST` decides: auto
(when syft and cosign are installed), on (required: checked before any build), off."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from moltbuild import report
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.flows.facts import git_state
from moltbuild.plan.bases import dockerfile_bases, mirrored
from moltbuild.plan.planner import BuildPlan
from moltbuild.plan.tags import GitState
from moltbuild.refs import ImageRef
from moltbuild.report import ImageRecord, Outcome, RunFailed
from moltbuild.supply.attest import Attached, Attester
from moltbuild.supply.cosign import Cosign, Mode, Signer, Verifier
from moltbuild.supply.provenance import BuildFacts
from moltbuild.supply.tools import INSTALL_HINT, RegistryAccess, find_tool, installed, present_or_coming
from moltbuild.system import owners

TOOLS = ("syft", "cosign")


class AttestError(RunFailed):
    """Pushed, but not attested; `records` holds the references that were attached."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _missing(session: Session) -> list[str]:
    """Tools neither installed nor being prepared (`invoke setup` in the background): the build
    starts without waiting for them; attesting waits (find_tool)."""
    return [t for t in TOOLS if not present_or_coming(session.runner, t)]


def preflight(session: Session) -> None:
    """`MOLTBUILD_ATTEST=on` without the tools, or a signing key its password does not open, stops
    before any build, not after the push."""
    missing = _missing(session)
    mode = session.settings.choice("MOLTBUILD_ATTEST")
    if mode == "on" and missing:
        raise ConfigError(f"MOLTBUILD_ATTEST=on but {' and '.join(missing)} not installed: {INSTALL_HINT}")
    signer = Signer.from_settings(session.settings, session.environ)
    if mode == "off" or missing or signer.mode is not Mode.KEY or not installed(session.runner, "cosign"):
        return  # a cosign still being prepared checks the key when it signs
    with owners.private_dir() as tmp:
        access = RegistryAccess(host="", plain_http=False, ca="", config_dir=Path(tmp))
        Cosign(session.runner, access).check_key(signer, Path(tmp) / "signing.pub")


def wanted(session: Session) -> bool:
    """Whether this run attests what it pushes (auto without the tools: a warning, no)."""
    if session.settings.choice("MOLTBUILD_ATTEST") == "off":
        return False
    for tool in TOOLS:  # after the push: wait for a tool `invoke setup` is still preparing
        find_tool(session.runner, tool)
    preflight(session)
    missing = _missing(session)
    if missing:
        session.runner.warn(
            f"pushed images get no SBOM, provenance or signature: {' and '.join(missing)} not installed "
            f"({INSTALL_HINT}; MOLTBUILD_ATTEST=off silences this)"
        )
        return False
    return True


@dataclass(frozen=True)
class ImageInputs:
    build_args: Mapping[str, str]
    dockerfile: Path
    target: str | None
    bases: tuple[str, ...]


@dataclass(frozen=True)
class RunInputs:
    """What provenance names beside the record: the commit and what each image was built from."""

    git: GitState
    mirror: str | None
    pulls: Mapping[str, str]  # base as named -> where it was pulled from
    images: Mapping[str, ImageInputs]

    @classmethod
    def of_plan(cls, plan: BuildPlan) -> RunInputs:
        images = {i.name: ImageInputs(i.build_args, i.dockerfile, i.target, i.bases) for i in plan.images}
        return cls(plan.git, plan.mirror, plan.pulls, images)

    @classmethod
    def of_project(cls, session: Session) -> RunInputs:
        """For `invoke push`: the build ran earlier; its inputs read again from the checkout."""
        root = session.settings.project_root
        mirror = session.settings.get("MOLTBUILD_BASE_MIRROR") or None
        images = {
            c.name: ImageInputs(
                c.build_args, c.dockerfile, c.target, tuple(dockerfile_bases(c.dockerfile, c.build_args))
            )
            for c in session.images.values()
        }
        pulls = {b: mirrored(b, mirror) for i in images.values() for b in i.bases}
        return cls(git_state(root, session.runner, session.environ), mirror, pulls, images)


def attest_and_record(
    session: Session, inputs: Callable[[], RunInputs], records: list[ImageRecord], started: str, path: Path
) -> list[ImageRecord]:
    """Attest what the registry now has and write the references into the report (also those
    that were attested when another image failed)."""
    try:
        done = attest_records(session, inputs, records, started)
    except AttestError as exc:
        _record(path, exc.records)
        raise
    _record(path, done)
    return done


def _record(path: Path, records: list[ImageRecord]) -> None:
    for r in records:
        if r.signature:
            report.update(path, r)


def attest_records(
    session: Session, inputs: Callable[[], RunInputs], records: list[ImageRecord], started: str
) -> list[ImageRecord]:
    """The records with their attestation references; an image that could not be attested keeps
    its push and makes the run fail after every image was tried. `inputs` is asked only when
    something is attested."""
    todo = [r for r in records if r.outcome.in_registry and r.digest]
    if not todo or not wanted(session):
        return records
    known = inputs()
    signer = Signer.from_settings(session.settings, session.environ)
    say = session.runner.say
    say(f"attest: SBOM + SLSA provenance for {len(todo)} image(s), {signer.describe()}")
    done, failures = _attest_all(
        session, todo, signer, lambda record: _facts(session, known, record, started)
    )
    out = {r.name: _with_references(r, done.get(r.name)) for r in records}
    if failures:
        raise AttestError(f"pushed, but not attested: {'; '.join(sorted(failures))}", list(out.values()))
    return list(out.values())


def _attest_all(
    session: Session, todo: list[ImageRecord], signer: Signer, facts: Callable[[ImageRecord], BuildFacts]
) -> tuple[dict[str, Attached], list[str]]:
    """Each image's attestation (already there, or made now), and a line per image that failed."""
    done: dict[str, Attached] = {}
    failures: list[str] = []
    with owners.private_dir() as tmp:  # 0700: the registry credential file lives here
        hosts = {r.ref.host for r in todo}
        attesters = {h: _attester(session, h, signer, Path(tmp)) for h in sorted(hosts)}

        def one(record: ImageRecord) -> Attached:
            attester = attesters[record.ref.host]
            found = attester.already(record.ref, str(record.digest))  # reused, or pushed again
            return found or attester.attest(facts(record))

        # Images in parallel, as they were built: each is a syft scan and a few cosign calls.
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {pool.submit(one, record): record for record in todo}
            for future in cf.as_completed(futures):
                record = futures[future]
                try:
                    done[record.name] = future.result()
                except MoltbuildError as exc:
                    failures.append(f"{record.name}: {exc.message}")
                    continue
                session.runner.say(f"[{record.name}] {_said(done[record.name])}")
    return done, failures


def _with_references(record: ImageRecord, done: Attached | None) -> ImageRecord:
    if done is None:
        return record
    return record.but(sbom=done.sbom, provenance=done.provenance, signature=done.signature)


def _said(done: Attached) -> str:
    if done.note:
        return f"{done.note}: {done.provenance}"
    what = "signed, SBOM" if done.signature != "unsigned" else "UNSIGNED SBOM"
    return f"{what} ({done.packages} packages) + provenance at {done.provenance}"


def _attester(session: Session, host: str, signer: Signer, workdir: Path) -> Attester:
    folder = workdir / host.replace(":", "_")
    return Attester(
        runner=session.runner,
        client=session.registries.client(host),
        access=RegistryAccess.prepare(host, session.settings, folder),
        signer=signer,
        sbom_format=session.settings.choice("MOLTBUILD_SBOM_FORMAT"),
        workdir=folder,
        verifier=Verifier.from_settings(session.settings),
    )


def _facts(session: Session, inputs: RunInputs, record: ImageRecord, started: str) -> BuildFacts:
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
        dockerfile=str(dockerfile),
        target=image.target,
        platforms=tuple(record.platforms),
        input_digest=record.input_digest,
        bases={b: _base_digest(session, record, inputs, inputs.pulls.get(b, b)) for b in image.bases},
        backend=record.backend,
        backend_detail=record.backend_reason,
        started=started,
        finished=now(),
        reused=record.outcome is Outcome.REUSED,
        environ=session.environ,
    )


def _base_digest(session: Session, record: ImageRecord, inputs: RunInputs, source: str) -> str:
    """The digest a base resolved to where it was pulled from; '' when the registry cannot say.
    Only the mirror and the push registry are asked: a public registry may be unreachable here."""
    try:
        ref = ImageRef.parse(source, "base image", default_tag="latest")
        if ref.digest:
            return ref.digest
        if ref.host not in {record.ref.host, (inputs.mirror or "").split("/", 1)[0]}:
            return ""
        found = session.registries.client(ref.host).manifest(ref.repository, ref.reference)
    except MoltbuildError:
        return ""
    return found.digest if found else ""
