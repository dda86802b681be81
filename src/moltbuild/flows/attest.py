"""After the push: every image the registry now has from this run (built or reused) gets its
SBOM, SLSA provenance and, with a signer, a cosign signature. `MOLTBUILD_ATTEST` decides: auto
(when syft and cosign are installed), on (required: checked before any build), off."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import Backend, Built
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows.attest_inputs import RunInputs, build_facts
from moltbuild.flows.context import Session
from moltbuild.plan.planner import ImagePlan
from moltbuild.report import ImageRecord, RunFailed
from moltbuild.supply import sbom
from moltbuild.supply.attest import Attached, Attester, LocalSbom
from moltbuild.supply.cosign import Cosign, Mode, Signer, Verifier, identity_refusal
from moltbuild.supply.tools import INSTALL_HINT, RegistryAccess, find_tool, installed, present_or_coming
from moltbuild.system import gotools, owners
from moltbuild.system.processes import Runner
from moltbuild.system.state import command_cache

TOOLS = ("syft", "cosign")


class AttestError(RunFailed):
    """Pushed, but not attested; `records` holds the references that were attached."""


def _missing(session: Session) -> list[str]:
    """Tools neither installed nor being prepared (`invoke setup` in the background): the build
    starts without waiting for them; attesting waits (find_tool)."""
    return [t for t in TOOLS if not present_or_coming(session.runner, t)]


def preflight(session: Session) -> None:
    """`MOLTBUILD_ATTEST=on` without the tools, or a signing key its password does not open, stops
    before any build, not after the push."""
    preflight_started(session).wait()


class KeyCheck:
    """The signing key being opened (cosign and scrypt: ~0.3 s) while the run asks the registry
    and opens its backend; `wait` before the first registry write or build raises what it found."""

    def __init__(self, check: Callable[[], None] | None = None):
        self._done: cf.Future[None] | None = None
        if check is not None:
            pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="key-check")
            self._done = pool.submit(check)
            pool.shutdown(wait=False)

    def wait(self) -> None:
        if self._done is not None:
            self._done.result()


def preflight_started(session: Session) -> KeyCheck:
    """preflight's checks, the key's opening started in the background (KeyCheck.wait joins it)."""
    missing = _missing(session)
    mode = session.settings.choice("MOLTBUILD_ATTEST")
    if mode == "on" and missing:
        raise ConfigError(f"MOLTBUILD_ATTEST=on but {' and '.join(missing)} not installed: {INSTALL_HINT}")
    signer = Signer.from_settings(session.settings, session.environ)
    if mode == "off" or missing:
        return KeyCheck()
    refusal = identity_refusal(signer, Verifier.from_settings(session.settings), session.environ)
    if refusal:  # a dispatch from another branch: say so before signing what verify would refuse
        raise ConfigError(refusal)
    if signer.mode is not Mode.KEY or not installed(session.runner, "cosign"):
        return KeyCheck()  # a cosign still being prepared checks the key when it signs
    return KeyCheck(functools.partial(_check_key, session.runner, signer))


@command_cache(maxsize=4)
def _check_key(runner: Runner, signer: Signer) -> None:
    """Once per command: `build --push` checks before the build and again before attesting."""
    with owners.private_dir() as tmp:
        access = RegistryAccess(host="", plain_http=False, ca="", config_dir=Path(tmp))
        Cosign(runner, access).check_key(signer, Path(tmp) / "signing.pub")


def wanted(session: Session, *, preflighted: bool = False) -> bool:
    """Whether this run attests what it pushes (auto without the tools: a warning, no).
    `preflighted`: preflight_started ran (its key check may still be under way)."""
    if session.settings.choice("MOLTBUILD_ATTEST") == "off":
        return False
    for tool in TOOLS:  # after the push: wait for a tool `invoke setup` is still preparing
        find_tool(session.runner, tool)
    if not preflighted:
        preflight(session)
    missing = _missing(session)
    if missing:
        session.runner.warn(
            f"pushed images get no SBOM, provenance or signature: {' and '.join(missing)} not installed "
            f"({INSTALL_HINT}; MOLTBUILD_ATTEST=off silences this)"
        )
        return False
    return True


def attest_and_record(
    session: Session,
    inputs: Callable[[], RunInputs],
    records: list[ImageRecord],
    started: str,
    path: Path,
    early: Attesting | None = None,
) -> list[ImageRecord]:
    """Attest what the registry now has and write the references into the report (also those
    that were attested when another image failed). `early`: the images submitted while the run
    built are already under way."""
    try:
        done = attest_records(session, inputs, records, started, early)
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
    session: Session,
    inputs: Callable[[], RunInputs],
    records: list[ImageRecord],
    started: str,
    early: Attesting | None = None,
) -> list[ImageRecord]:
    """The records with their attestation references; an image that could not be attested keeps
    its push and makes the run fail after every image was tried. `inputs` is asked only when
    something is attested."""
    todo = [r for r in records if r.outcome.in_registry and r.digest]
    if early is None and todo and wanted(session):
        early = Attesting(session, inputs, started)
    if early is None or not todo:
        if early is not None:
            early.close()
        return records
    say = session.runner.say
    say(f"attest: SBOM + SLSA provenance for {len(todo)} image(s), {early.signer.describe()}")
    try:
        done, failures = early.collect(todo)
    finally:
        early.close()
    out = {r.name: _with_references(r, done.get(r.name)) for r in records}
    if failures:
        raise AttestError(f"pushed, but not attested: {'; '.join(sorted(failures))}", list(out.values()))
    return list(out.values())


def start(session: Session, inputs: Callable[[], RunInputs], started: str) -> Attesting | None:
    """For a pushing run whose preflight_started ran: attestation that starts per image the moment
    its push is recorded (while other images still build and the storage is tidied); None when this
    run attests nothing."""
    return Attesting(session, inputs, started) if wanted(session, preflighted=True) else None


def deferred(session: Session) -> bool:
    """`invoke setup` is still preparing syft or cosign: a pushing build starts without waiting for
    them (`start` would) and attests after the push (attest_and_record waits for them there)."""
    if session.settings.choice("MOLTBUILD_ATTEST") == "off":
        return False
    return any(gotools.preparing(session.runner.environ, t) for t in TOOLS)


@dataclass
class Recorder(report.Recorder):
    """The run's recorder that also hands each pushed image to `attesting` the moment it is known."""

    attesting: Attesting | None = None

    def __call__(self, record: ImageRecord) -> None:
        super().__call__(record)
        if self.attesting is not None:
            self.attesting.submit(record)


class Attesting:
    """The run's attestations, each image started when submitted, two at a time (each is a syft
    scan and a few cosign calls); `collect` waits for them. Registry credentials live in a 0700
    folder until `close`."""

    def __init__(self, session: Session, inputs: Callable[[], RunInputs], started: str):
        self.session, self.inputs, self.started = session, inputs, started
        self.signer = Signer.from_settings(session.settings, session.environ)
        self._stack = contextlib.ExitStack()
        self._tmp = Path(self._stack.enter_context(owners.private_dir()))
        self._pool = cf.ThreadPoolExecutor(max_workers=2)
        self._lock = threading.Lock()
        self._attesters: dict[str, Attester] = {}
        self._known: RunInputs | None = None
        self._futures: dict[str, cf.Future[Attached]] = {}
        self._scans = cf.ThreadPoolExecutor(max_workers=2)  # its own: `_one` waits for these
        self._local: dict[str, cf.Future[LocalSbom | None]] = {}

    def when_built(self, backend: Backend, image: ImagePlan) -> Built | None:
        """What `produce` calls once IMAGE exists here: its SBOM starts from its mounted filesystem,
        beside the smoke check and the push (a backend that cannot mount it: the registry is read
        after the push)."""
        if not backend.mounts_images:
            return None
        return lambda image_id: self.prescan(
            image.name, image.ref.name, image_id, functools.partial(backend.mounted_image, image_id)
        )

    def prescan(
        self, name: str, repository: str, image_id: str, mount: Callable[[], AbstractContextManager[Path]]
    ) -> None:
        """Scan the image's filesystem (`mount` mounts it) while it is checked and pushed; `_one`
        uses the SBOM when the pushed image has this image's config (IMAGE_ID)."""
        self._local[name] = self._scans.submit(self._scan_local, name, repository, image_id, mount)

    def _scan_local(
        self, name: str, repository: str, image_id: str, mount: Callable[[], AbstractContextManager[Path]]
    ) -> LocalSbom | None:
        config = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        try:
            out = self._tmp / f"{name}.local-sbom.json"
            fmt = self.session.settings.choice("MOLTBUILD_SBOM_FORMAT")
            with mount() as root:
                packages = sbom.generate_local(self.session.runner, root, repository, config, fmt, out)
            return LocalSbom(config, out, packages)
        except MoltbuildError as exc:
            why = f"no SBOM from the local image ({exc.message}); the registry is read instead"
            self.session.runner.say(f"[{name}] attest: {why}")
            return None

    def scanned(self) -> None:
        """Every local scan over, its mount gone: the backend's store may be tidied and closed."""
        cf.wait(list(self._local.values()))

    def submit(self, record: ImageRecord) -> None:
        if record.outcome.in_registry and record.digest and record.name not in self._futures:
            self._futures[record.name] = self._pool.submit(self._one, record)

    def _one(self, record: ImageRecord) -> Attached:
        with self._lock:
            host = record.ref.host
            if host not in self._attesters:
                self._attesters[host] = _attester(self.session, host, self.signer, self._tmp)
            attester = self._attesters[host]
        found = attester.already(record.ref, str(record.digest))  # reused, or pushed again
        if found:
            return found
        with self._lock:
            if self._known is None:
                self._known = self.inputs()
            known = self._known
        local = self._local.get(record.name)
        return attester.attest(build_facts(self.session, known, record, self.started), local and local.result)

    def collect(self, todo: list[ImageRecord]) -> tuple[dict[str, Attached], list[str]]:
        """Each image's attestation (already there, or made now), and a line per image that failed."""
        for record in todo:
            self.submit(record)
        wanted_names = {r.name for r in todo}
        futures = {f: name for name, f in self._futures.items() if name in wanted_names}
        done: dict[str, Attached] = {}
        failures: list[str] = []
        for future in cf.as_completed(futures):
            name = futures[future]
            try:
                done[name] = future.result()
            except MoltbuildError as exc:
                failures.append(f"{name}: {exc.message}")
                continue
            self.session.runner.say(f"[{name}] {_said(done[name])}")
        return done, failures

    def close(self) -> None:
        """Nothing left running (after Ctrl-C too: queued images are dropped), the folder gone."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._scans.shutdown(wait=True, cancel_futures=True)
        self._stack.close()


def _with_references(record: ImageRecord, done: Attached | None) -> ImageRecord:
    if done is None:
        return record
    return record.but(sbom=done.sbom, provenance=done.provenance, signature=done.signature)


def _said(done: Attached) -> str:
    if done.note:
        return f"{done.note}: {done.provenance}"
    what = "signed, SBOM" if done.signature != "unsigned" else "UNSIGNED SBOM"
    return f"{what} ({done.packages} packages, read from {done.scanned}) + provenance at {done.provenance}"


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
