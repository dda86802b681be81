"""`invoke push` and `invoke tag`: act on the images a previous build recorded in the report.

Push uploads a local image once and adds its other tags by manifest PUT; tag only adds tags,
in the registry when the image is there, else to the record for the next `invoke push`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import Backend, JobLog, PushTarget, RunSpec
from moltbuild.backends.selection import backend_class, make_backend
from moltbuild.ci import actions as ghactions
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows import attest, attest_inputs
from moltbuild.flows.context import Session
from moltbuild.flows.summary import finish
from moltbuild.plan.planner import cache_tag
from moltbuild.project import parse_only
from moltbuild.refs import validate_tag
from moltbuild.registry.auth import preflight_push
from moltbuild.registry.tags import echo_puts, put_and_confirm
from moltbuild.report import ImageRecord, Outcome
from moltbuild.system import owners
from moltbuild.system.console import mask_known_secrets
from moltbuild.system.locks import run_lock


def _built_records(path: Path, only: str) -> list[ImageRecord]:
    names = parse_only(only) or None
    found = [r for r in report.require(path, names) if r.outcome is not Outcome.FAILED]
    if not found:
        raise ConfigError(
            f"{path} records no built image{' named ' + ', '.join(names) if names else ''}; "
            "run `invoke build` first"
        )
    return found


def _planned_tags(record: ImageRecord) -> list[str]:
    """Every tag the build planned; reports of older versions lacked the input tag without --push."""
    tags = list(record.tags)
    cached = cache_tag(record.input_digest)
    return tags if cached in tags else [*tags, cached]


def _retag_remote(
    session: Session, record: ImageRecord, tags: list[str], *, dry_run: bool, say: Callable[[str], None]
) -> None:
    """Point `tags` at the record's digest in the registry: manifest PUTs, no upload."""
    ref = record.ref
    if dry_run:
        refs = [ref.with_tag(tag) for tag in tags]
        echo_puts(say, refs, f"the manifest at {record.digest}", prefix=f"[{record.name}] ")
        return
    put_and_confirm(session.registries.client(ref.host), ref, tags, digest=record.digest or "")


def _require_local(backend: Backend, record: ImageRecord) -> None:
    """The recorded image must still be in the local store (another run may have pruned it):
    say so, rather than the push tool's exit 125."""
    if len(record.platforms) > 1 or not record.image_id:
        return  # a manifest list: pushed by its local name, which the push itself checks
    runtime = backend.runtime()
    if shutil.which(runtime.argv[0]) and not runtime.has_image(record.image_id):
        raise ConfigError(
            f"the image of {record.name} is no longer in the local store (pruned?); run `invoke build` again"
        )


class _Backends:
    """One opened backend (one private dir, one login) per backend and registry host."""

    def __init__(self, session: Session, workdir: Path, dry_run: bool):
        self.session, self.workdir, self.dry_run = session, workdir, dry_run
        self._open: dict[tuple[str, str], Backend] = {}

    def get(self, record: ImageRecord) -> Backend:
        key = (record.backend, record.ref.host)
        if key not in self._open:
            s = self.session
            backend = make_backend(record.backend, s.runner, s.settings, s.storage, dry_run=self.dry_run)
            creds = preflight_push(
                key[1], s.settings, check_registry=not self.dry_run, registries=s.registries
            )
            workdir = Path(tempfile.mkdtemp(dir=self.workdir))
            backend.open(
                RunSpec(workdir, logins={key[1]: creds}, purpose="invoke push", registries=s.registries)
            )
            self._open[key] = backend
        return self._open[key]

    def close(self) -> None:
        for backend in self._open.values():
            backend.close()


def _push_one(
    session: Session, backends: _Backends, record: ImageRecord, tags: list[str], *, dry_run: bool
) -> tuple[str | None, int | None]:
    """Push one recorded image (or retag it in the registry); its digest and size."""
    try:
        if record.image_id and backend_class(record.backend).keeps_images:
            target = PushTarget(
                record.name, record.ref, tuple(tags), record.image_id, tuple(record.platforms)
            )
            backend = backends.get(record)
            if not dry_run:
                _require_local(backend, record)
            result = backend.push_built(target, log=JobLog(f"[{record.name}] "))
            return result.digest, result.size_bytes
        if record.pushed:  # reused or pushed in the cluster: nothing local, tags are remote
            _retag_remote(session, record, tags, dry_run=dry_run, say=session.runner.say)
            return record.digest, record.size_bytes
        raise ConfigError("the report records no local image to push; run `invoke build` again")
    except ConfigError as exc:  # set-up, not the push: stops the run
        raise ConfigError(f"{record.name}: {exc.message}") from None
    except MoltbuildError as exc:
        raise MoltbuildError(f"{record.name}: {exc.message}", exit_code=exc.exit_code) from None


def push_built(
    session: Session,
    *,
    only: str = "",
    dry_run: bool = False,
    report_path: Path | None = None,
    as_json: bool = False,
) -> list[ImageRecord]:
    """Push the images the report records as built (every planned tag); update their records."""
    if as_json:
        session = session.with_runner(session.runner.to_stderr())
    say = session.runner.say
    path = report_path or report.default_path(session.settings.project_root)
    updated, started = [], attest_inputs.now()
    with (
        run_lock(path, "invoke push", say) if not dry_run else contextlib.nullcontext(),
        owners.private_dir() as tmp,  # 0700: auth files live here
        contextlib.closing(_Backends(session, Path(tmp), dry_run)) as backends,
    ):
        for record in _built_records(path, only):
            new = _pushed(session, backends, record, dry_run=dry_run)
            if not dry_run:
                report.update(path, new)
            updated.append(new)
    if not dry_run:
        updated = attest.attest_and_record(
            session, lambda: attest_inputs.RunInputs.of_project(session), updated, started, path
        )
        ghactions.publish("moltbuild: push", updated, session.environ)
        finish(session, updated, path, as_json)
    failed = [r for r in updated if not r.ok]
    if failed:
        raise report.RunFailed(f"{len(failed)} image(s) failed to push: {failed[0].error}", updated)
    return updated


def _pushed(session: Session, backends: _Backends, record: ImageRecord, *, dry_run: bool) -> ImageRecord:
    """Push one recorded image; its new record. A local image whose push fails is recorded as
    `push failed` (the others are still pushed, and `invoke push` can try again)."""
    say = session.runner.say
    start = time.monotonic()
    tags = _planned_tags(record)
    try:
        digest, size = _push_one(session, backends, record, tags, dry_run=dry_run)
    except ConfigError:
        raise
    except MoltbuildError as exc:
        if dry_run or not record.image_id:
            raise
        say(f"[{record.name}] {Outcome.PUSH_FAILED.label}: {exc.message}")
        took = round(time.monotonic() - start, 2)
        error = mask_known_secrets(exc.message)  # the report is read by people: masked
        return record.but(outcome=Outcome.PUSH_FAILED, error=error, push=True, duration_s=took)
    if dry_run:
        return record
    if record.pushed and digest != record.digest:
        say(f"[{record.name}] note: digest changed from {record.digest} to {digest}")
    say(f"[{record.name}] pushed {', '.join(tags)} -> {digest}")
    return record.but(
        tags=tags,
        digest=digest,
        outcome=Outcome.PUSHED,
        push=True,
        duration_s=round(time.monotonic() - start, 2),
        size_bytes=size if size is not None else record.size_bytes,
        error="",
    )


def tag_built(
    session: Session,
    tags: list[str],
    *,
    only: str = "",
    dry_run: bool = False,
    report_path: Path | None = None,
    as_json: bool = False,
) -> list[ImageRecord]:
    """Add `tags` to the last build's images: in the registry for pushed ones (no push), else to
    the record, for the next `invoke push`."""
    if not tags:
        raise ConfigError("pass at least one --tag (or --source REF to retag in the registry)")
    for tag in tags:
        validate_tag(tag)
    if as_json:
        session = session.with_runner(session.runner.to_stderr())
    say = session.runner.say
    path = report_path or report.default_path(session.settings.project_root)
    with run_lock(path, "invoke tag", say) if not dry_run else contextlib.nullcontext():
        updated = _tag_records(session, path, tags, only, dry_run)
    if not dry_run:
        ghactions.publish("moltbuild: tag", updated, session.environ)
        finish(session, updated, path, as_json)
    return updated


def _tag_records(
    session: Session, path: Path, tags: list[str], only: str, dry_run: bool
) -> list[ImageRecord]:
    say = session.runner.say
    updated = []
    for record in _built_records(path, only):
        new_tags = [t for t in tags if t not in record.tags]
        if record.pushed:
            _retag_remote(session, record, new_tags, dry_run=dry_run, say=say)
            where = f"in the registry at {record.digest[:19] if record.digest else '?'}"
        else:
            where = "in the report only: not pushed yet, `invoke push` pushes it"
        new = record.but(tags=[*record.tags, *new_tags])
        if not dry_run:
            report.update(path, new)
        updated.append(new)
        say(f"[{record.name}] tagged {', '.join(tags)} {where}")
    return updated
