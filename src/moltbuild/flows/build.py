"""Orchestration only: reuse what the registry has, run the backend's job for the rest in
parallel, record each image the moment it is known, summarise. It never knows which backend."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import Backend, Built, ImageResult, JobLog, RunSpec
from moltbuild.backends.selection import choose_backend, make_backend, statuses_for
from moltbuild.ci import actions as ghactions
from moltbuild.errors import ConfigError, JobError, MoltbuildError
from moltbuild.files import room_to_write
from moltbuild.flows import attest, attest_inputs, reuse, schedule
from moltbuild.flows import summary as summary_mod
from moltbuild.flows.context import Session
from moltbuild.flows.facts import changes_since, image_needs, plan_facts
from moltbuild.flows.records import to_record
from moltbuild.plan.changes import select_changed
from moltbuild.plan.planner import BuildPlan, ImagePlan, PlanInputs, check_settings, make_plan
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.shown import render_plan
from moltbuild.project import select_images
from moltbuild.registry.auth import Credentials, preflight_push
from moltbuild.registry.client import RegistryClient
from moltbuild.report import ImageRecord
from moltbuild.smoke import oci
from moltbuild.system import owners
from moltbuild.system.locks import run_lock


def _reuse_phase(
    session: Session,
    plan: BuildPlan,
    creds: Credentials | None,
    *,
    dry_run: bool,
    record: Callable[[ImageRecord], None],
    before_write: Callable[[], None],
) -> dict[str, schedule.Pin]:
    """The images the registry already has from the same inputs (tagged, recorded), asked all at
    once (--jobs, at least 8: each is a few small requests): name -> where dependents find it.
    `before_write` is called before the first tag is written."""
    if not plan.push or plan.rebuild:
        return {}
    client = session.registries.client(plan.registry.host, creds)
    with cf.ThreadPoolExecutor(max_workers=max(8, plan.jobs)) as pool:
        found = list(pool.map(lambda i: _reuse_one(session, client, i, before_write, dry_run), plan.images))
    pins = {}
    for image, result in zip(plan.images, found, strict=True):
        if result is not None:
            rec = to_record(plan, image, result, reused=True)
            pins[image.name] = schedule.pin_of(image, rec, local=False) or schedule.Pin("", "")
            record(schedule.with_base(rec, image, pins))
    return pins


def _reuse_one(
    session: Session, client: RegistryClient, image: ImagePlan, before_write: Callable[[], None], dry: bool
) -> ImageResult | None:
    say = session.runner.say
    try:
        hit = reuse.find(client, image, say)
    except MoltbuildError as exc:
        if not dry:
            raise
        say(
            f"[{image.name}] cannot ask the registry whether it has these inputs ({exc.message}); "
            "a real run asks first"
        )
        return None
    if hit is None:
        return None
    before_write()
    return reuse.apply(client, hit, dry_run=dry, say=say)


def _job(
    backend: Backend, plan: BuildPlan, image: ImagePlan, log_dir: Path | None, built: Built | None = None
) -> ImageRecord:
    log_path = None
    if log_dir is not None:
        log_path = log_dir / f"{image.name}.log"
        with room_to_write(log_path):
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path.write_text("")
    log = JobLog(f"[{image.name}] ", log_path)
    start = time.monotonic()
    try:
        result = backend.produce(image, push=plan.push, no_cache=plan.no_cache, log=log, built=built)
    except MoltbuildError as exc:
        # A failed image keeps its log and its time, like a good one (and its image, when built).
        built = exc if isinstance(exc, JobError) else JobError(exc.message)
        failed = ImageResult(built.image_id, image.platforms, time.monotonic() - start, log_path)
        return to_record(plan, image, failed, error=exc.message, smoke=built.smoke)
    return to_record(plan, image, result)


def _run_in_order(
    backend: Backend,
    plan: BuildPlan,
    todo: schedule.Schedule,
    log_dir: Path | None,
    record: Callable[[ImageRecord], None],
    attesting: attest.Attesting | None = None,
) -> list[ImageRecord]:
    """Each image once its bases are done, `plan.jobs` at once; each record written when known.
    `attesting`: the run's attestations, each image's SBOM started as soon as it is built."""

    def finished(rec: ImageRecord) -> None:
        record(rec)
        backend.runner.settle(f"[{rec.name}] ")
        shown = rec.result(200) if rec.error.startswith(schedule.NOT_BUILT) else rec.outcome.label
        backend.runner.say(f"[{rec.name}] {shown} in {rec.duration_s:.1f}s")

    return schedule.run(
        todo,
        lambda image: _job(backend, plan, image, log_dir, attesting and attesting.when_built(backend, image)),
        lambda image, why: to_record(plan, image, None, error=why),
        finished,
        backend.cancel,
        backend.runner.say,
    )


def _push_credentials(session: Session, plan: BuildPlan, *, dry_run: bool) -> Credentials | None:
    """The login a pushing run needs (checked against the registry in a real run)."""
    if not plan.push:
        return None
    try:
        return preflight_push(
            plan.registry.host, session.settings, check_registry=not dry_run, registries=session.registries
        )
    except ConfigError as exc:
        if not dry_run:
            raise
        # A dry run shows the whole plan even before credentials are set up.
        session.runner.warn(f"{exc.message}; a real run stops here")
        return None


def execute(
    session: Session,
    plan: BuildPlan,
    *,
    dry_run: bool,
    report_path: Path | None = None,
    key: attest.KeyCheck | None = None,
) -> list[ImageRecord]:
    """Reuse what the registry already has, build the rest in parallel, record every image.
    `key`: the signing key's check, started by the caller (else here)."""
    path = report_path or report.default_path(session.settings.project_root)
    if key is None:  # the key opens while the registry is asked and the backend opens
        key = attest.preflight_started(session) if plan.push and not dry_run else attest.KeyCheck()
    creds = _push_credentials(session, plan, dry_run=dry_run)
    started = attest_inputs.now()
    inputs = functools.partial(attest_inputs.RunInputs.of_plan, plan)
    pushing = plan.push and not dry_run
    later = pushing and attest.deferred(session)  # a tool still being prepared: attest after the push
    early = attest.start(session, inputs, started) if pushing and not later else None
    record = attest.Recorder(path, dry_run, attesting=early)  # each pushed image's attestation starts at once
    try:
        pins = _reuse_phase(session, plan, creds, dry_run=dry_run, record=record, before_write=key.wait)
        to_build = [image for image in plan.images if image.name not in pins]
        log_dir = None if dry_run else path.parent / "logs"
        if to_build:
            todo = schedule.Schedule(plan, to_build, pins)
            _build_phase(
                session, plan, todo, creds, dry_run=dry_run, log_dir=log_dir, record=record, before=key.wait
            )
        key.wait()
    except BaseException:
        if early is not None:
            early.close()
        raise
    records = sorted(record.written, key=lambda r: r.name)
    if early is not None or later:
        records = attest.attest_and_record(session, inputs, records, started, path, early)
    _raise_for_failures(records, log_dir)
    return records


def _build_phase(
    session: Session,
    plan: BuildPlan,
    todo: schedule.Schedule,
    creds: Credentials | None,
    *,
    dry_run: bool,
    log_dir: Path | None,
    record: attest.Recorder,
    before: Callable[[], None],
) -> None:
    """Open the backend once, run every image's job in the graph's order, tidy and close (also
    after Ctrl-C). `before` is called once the backend is open, before the first job."""
    to_build = todo.images
    runner = session.runner.derive(dry_run=dry_run)
    backend = make_backend(plan.backend, runner, session.settings, session.storage, dry_run=dry_run)
    host = plan.registry.host
    backend.check_images(to_build)  # what it cannot build is refused before anything starts
    attesting = record.attesting
    with owners.private_dir() as tmp:  # 0700: auth files live here
        ok = False
        try:
            backend.open(
                RunSpec(
                    Path(tmp),
                    logins={host: creds} if plan.push else {},
                    mirror=plan.mirror,
                    bases=plan.bases_for(to_build),
                    purpose="invoke build" + (" --push" if plan.push else ""),
                    registries=session.registries,
                    report=record.path,
                )
            )
            _require_smoke_runtime(backend, plan, to_build, dry_run=dry_run)  # after open: its config
            _require_graph_push(backend, plan, to_build)
            todo.workdir, todo.local = Path(tmp), backend.keeps_images  # pinned Dockerfiles: outside the tree
            todo.dry_run = dry_run
            before()
            ok = not any(r.error for r in _run_in_order(backend, plan, todo, log_dir, record, attesting))
        finally:
            # tidying leaves this run's images; their local scans end (and unmount) before the close
            _finish(backend, ok, to_build, attesting.scanned if attesting else None)


def _require_graph_push(backend: Backend, plan: BuildPlan, images: list[ImagePlan]) -> None:
    """A backend without a local store (Kaniko) hands a base to its dependents only through the
    registry: without --push, refuse before any Job starts."""
    here = {i.name for i in images}
    needs = [(i.name, link.image) for i in images for link in i.needs if link.image in here]
    if needs and not plan.push and not backend.keeps_images:
        image, base = needs[0]
        raise ConfigError(
            f"{image} is built FROM {base} of this project, and the {plan.backend} backend keeps no "
            f"local images: add --push (the base then reaches {image} by digest), or --only {base}"
        )


def _require_smoke_runtime(
    backend: Backend, plan: BuildPlan, images: list[ImagePlan], *, dry_run: bool
) -> None:
    """A push never goes out unchecked: without the runtime the release check needs, refuse
    before any image is built (a dry run says a real run would stop)."""
    if not (plan.push and backend.keeps_images):
        return
    try:
        oci.require_runtime(backend.runtime().argv[0], images)
    except ConfigError as exc:
        if not dry_run:
            raise
        backend.runner.warn(f"{exc.message}; a real run stops here")


def _finish(
    backend: Backend, ok: bool, built: list[ImagePlan], before_close: Callable[[], None] | None = None
) -> None:
    """Tidy (the ledger always, pruning after a good run), then release: also after Ctrl-C."""
    try:
        backend.tidy(ok=ok, built=built)
    finally:
        try:
            if before_close is not None:
                before_close()
        finally:
            backend.close()


def _raise_for_failures(records: list[ImageRecord], log_dir: Path | None) -> None:
    failed = [r for r in records if not r.ok]
    if failed:
        first = failed[0]
        names = ", ".join(r.name for r in failed)
        raise report.RunFailed(
            f"{len(failed)} image(s) failed: {names}; {first.name}: {first.error}"
            + (f"\n(full log: {log_dir / (first.name + '.log')})" if log_dir else ""),
            records,
        )


def choose(session: Session, request: BuildRequest) -> tuple[str, str]:
    """The backend this run uses, and why (MOLTBUILD_BACKEND, which --backend sets)."""
    requested = session.settings.choice("MOLTBUILD_BACKEND")
    statuses = statuses_for(requested, session.runner, session.settings, session.storage)
    return choose_backend(requested, statuses, session.storage, force=request.force, dry_run=request.dry_run)


def plan_for(session: Session, request: BuildRequest, names: list[str] | None = None) -> BuildPlan:
    name, reason = choose(session, request)
    check_settings(session.settings)
    inputs = PlanInputs(session.settings, plan_facts(session, request, names), name, reason)
    return make_plan(request, inputs)


def _legacy_tags(session: Session, request: BuildRequest) -> BuildRequest:
    """build-images.sh's IMAGE_TAG, kept for a while: added as a tag, with a note."""
    legacy = session.environ.get("IMAGE_TAG", "").strip()
    if not legacy:
        return request
    session.runner.warn("IMAGE_TAG is deprecated (from build-images.sh): use --tag; added as a tag")
    return replace(request, tags=(*request.tags, legacy))


def _changed_names(session: Session, request: BuildRequest, names: list[str]) -> list[str]:
    """With --changed: the selected images whose inputs changed since the base."""
    root = session.settings.project_root
    facts = changes_since(session, request.base, during="--changed")
    base = facts.base
    wanted, account = select_changed(root, session.images, facts, image_needs(session))
    session.runner.say(account)
    names = [n for n in names if n in wanted]
    if not names:
        session.runner.say(f"nothing changed since {base}: no image to build")
    return names


def build_images(session: Session, request: BuildRequest) -> list[ImageRecord]:
    """`invoke build`: plan, print the plan, build (and push), write the report, print a summary
    (with `as_json`, the report entries on stdout and everything else on stderr)."""
    if request.as_json:
        session = session.with_runner(session.runner.to_stderr())
    for warning in session.settings.warnings:  # e.g. a misspelt MOLTBUILD_* key: say it where it bites
        session.runner.warn(warning)
    request = _legacy_tags(session, request)
    if not session.settings.flag("MOLTBUILD_SMOKE"):  # the report says which turned it off
        request = replace(request, smoke=False)
    names = [c.name for c in select_images(session.images, only=request.only)]
    if request.changed:
        names = _changed_names(session, request, names)
        if not names:
            ghactions.publish("moltbuild: nothing changed", [], session.environ)
            return []
    # A pushing run's signing key opens while the plan is made (waited for before any write).
    key = attest.preflight_started(session) if request.push and not request.dry_run else None
    plan = plan_for(session, request, names)
    session.runner.say(render_plan(plan) + "\n")
    if request.dry_run:
        session.runner.say("dry run: what a real run would do (secrets masked):")
        records = execute(session, plan, dry_run=True)
        if request.as_json:
            session.runner.emit(summary_mod.as_json_text(records))
        return records
    return run_plan(session, plan, request, key)


def run_plan(
    session: Session, plan: BuildPlan, request: BuildRequest, key: attest.KeyCheck | None = None
) -> list[ImageRecord]:
    """The real run of `plan` under the run lock, then the step summary and the table (or JSON),
    also when an image failed: each shows the records' one outcome."""
    title = f"moltbuild: {'build and push' if request.push else 'build'} ({plan.backend})"
    path = report.default_path(session.settings.project_root)
    try:
        with run_lock(path, request.purpose, session.runner.say):
            records = execute(session, plan, dry_run=False, key=key)
    except report.RunFailed as exc:
        _show(session, title, exc.records, path, as_json=request.as_json)
        raise
    _show(session, title, records, path, as_json=request.as_json)
    return records


def _show(session: Session, title: str, records: list[ImageRecord], path: Path, *, as_json: bool) -> None:
    ghactions.publish(title, records, session.environ)
    summary_mod.finish(session, records, path, as_json)
