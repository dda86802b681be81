"""`invoke dev`: build every selected image, hand them to the target, then watch the contexts. Each
batch of changes is classified per image: every path matches the image's sync rules -> the target
copies the files in; anything else -> that image alone is rebuilt (the build flow's own plan and
execute, with the loop's fast settings and a dev tag from the input digest) and redeployed.
Nothing in the work tree is edited: the loop's report goes to build/dev/images.json."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from moltbuild import report
from moltbuild.dev import choose
from moltbuild.dev.events import Printer
from moltbuild.dev.target import Emit, Event, Target
from moltbuild.dev.watch import Batches, Watch, WatchedImage, by_image, classify
from moltbuild.errors import JobError, MoltbuildError
from moltbuild.flows.build import execute, plan_for
from moltbuild.flows.context import Session
from moltbuild.plan.planner import BuildPlan, ImagePlan, cache_tag
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.shown import render_plan
from moltbuild.project import select_images
from moltbuild.report import ImageRecord
from moltbuild.system.locks import run_lock

DEV_TAG_PREFIX = "dev-"
REPORT = Path("build") / "dev" / "images.json"  # never build/images.json, which other commands read
_TAIL = 20


@dataclass(frozen=True)
class DevRequest:
    target: str = choose.DEFAULT_TARGET  # local | cluster
    builder: str | None = None  # a backend name (kaniko: in the cluster); None: MOLTBUILD_BACKEND
    only: tuple[str, ...] = ()
    as_json: bool = False
    once: bool = False
    dry_run: bool = False
    keep: bool = False


def dev_tag(input_digest: str) -> str:
    """The tag a loop build gets: from its inputs, so an unchanged image is found, not rebuilt."""
    return DEV_TAG_PREFIX + input_digest.removeprefix("sha256:")[:16]


def dev_plan(plan: BuildPlan) -> BuildPlan:
    """The build flow's plan with the dev tags only (never latest or the branch's)."""
    images = tuple(replace(i, tags=(dev_tag(i.input_digest), cache_tag(i.input_digest))) for i in plan.images)
    return replace(plan, images=images)


class Loop:
    def __init__(self, session: Session, request: DevRequest, target: Target, emit: Emit) -> None:
        self.session, self.request, self.target, self.emit = session, request, target, emit
        self.configs = select_images(session.images, only=request.only)
        self.watched = {c.name: WatchedImage.of(c) for c in self.configs}
        self.built: dict[str, str] = {}  # name -> input digest of the image the target runs
        self.report = session.settings.project_root / REPORT
        self.failures = 0  # build failures so far (a target reports its own through deploy)

    @property
    def push(self) -> bool:
        return self.request.target == "cluster"

    def plan(self, names: Sequence[str]) -> BuildPlan:
        request = BuildRequest(push=self.push, only=tuple(names), smoke=False, dry_run=self.request.dry_run)
        return dev_plan(plan_for(self.session, request, list(names)))

    def build(self, names: Sequence[str], since: float) -> dict[str, str]:
        """Build NAMES (those whose inputs changed since the target got them); the refs to
        deploy. A failure is a `failed` event with the build log's last lines."""
        try:
            plan = self.plan(names)
        except MoltbuildError as exc:
            self._failed(names, exc.message, since)
            return {}
        todo = [i for i in plan.images if self.built.get(i.name) != i.input_digest]
        if not todo:
            return {}
        try:
            with run_lock(self.report, "invoke dev", self.session.runner.say):
                records = execute(
                    self.session, replace(plan, images=tuple(todo)), dry_run=False, report_path=self.report
                )
        except report.RunFailed as exc:
            records = exc.records
        except MoltbuildError as exc:
            self._failed([i.name for i in todo], exc.message, since)
            return {}
        return self._refs(todo, records, since)

    def _refs(self, todo: list[ImagePlan], records: Iterable[ImageRecord], since: float) -> dict[str, str]:
        refs = {}
        digests = {i.name: i.input_digest for i in todo}
        for rec in records:
            if not rec.ok:
                self._failed([rec.name], rec.error or rec.outcome.label, since, self._log_tail(rec))
                continue
            ref = str(rec.ref.with_digest(rec.digest)) if self.push and rec.digest else rec.image_id
            if not ref:
                self._failed([rec.name], "the build left no image to run", since)
                continue
            self.built[rec.name] = digests[rec.name]
            refs[rec.name] = ref
            detail = {"ref": ref, "outcome": rec.outcome.value, "build_seconds": rec.duration_s}
            self.emit(Event("built", rec.name, time.monotonic() - since, detail))
        return refs

    def _log_tail(self, rec: ImageRecord) -> list[str]:
        path = Path(rec.log_path) if rec.log_path else None
        if path is None or not path.is_file():
            return []
        return path.read_text(errors="replace").splitlines()[-_TAIL:]

    def _failed(self, names: Iterable[str], reason: str, since: float, lines: Sequence[str] = ()) -> None:
        for name in names:
            self.failures += 1
            detail = {"reason": reason, "lines": list(lines)}
            self.emit(Event("failed", name, time.monotonic() - since, detail))

    def cycle(self, names: Sequence[str], since: float) -> bool:
        """Build NAMES and deploy what was built; whether every one of them is ready (or was
        already running from the same inputs)."""
        before = self.failures
        refs = self.build(names, since)
        ok = self.failures == before
        if refs:
            ok = self.target.deploy(refs, self.emit, since) and ok
        return ok

    def handle(self, paths: set[Path]) -> None:
        """One batch: sync what the rules allow, rebuild the rest (only the images it feeds)."""
        since = time.monotonic()
        grouped = by_image(paths, self.watched.values())
        if not grouped:
            return
        root = self.session.settings.project_root
        files = sorted({_shown(p, root) for ps in grouped.values() for p in ps})
        self.emit(Event("change", None, 0.0, {"files": files, "images": sorted(grouped)}))
        sync, rebuild = classify(grouped, self.watched, self.built)
        for name, copies in sync.items():
            if not self.target.sync(name, copies, self.emit, since):
                rebuild.append(name)  # nothing running, no cp: the image is rebuilt instead
        if rebuild:
            self.cycle(rebuild, since)

    def roots(self) -> list[Path]:
        return [p for w in self.watched.values() for p in (w.context, w.dockerfile.parent)]


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def make_target(
    session: Session, request: DevRequest, loop_names: Sequence[str], synced: frozenset[str]
) -> Target:
    configs = select_images(session.images, only=request.only)
    if request.target == "cluster":
        return choose.cluster_target(session, loop_names, synced)
    return choose.local_target(session, configs, dry_run=request.dry_run)


def run_dev(session: Session, request: DevRequest) -> None:
    """`invoke dev`: until Ctrl-C (or one cycle with --once, a description with --dry-run)."""
    session = session.with_overrides(choose.fast_overrides(request.target, request.builder))
    session = session.with_runner(session.runner.to_stderr()) if request.as_json else session
    emit = Printer(session.runner.emit, json_lines=request.as_json)
    configs = select_images(session.images, only=request.only)
    names = [c.name for c in configs]
    synced = frozenset(c.name for c in configs if c.sync)
    target = make_target(session, request, names, synced)
    loop = Loop(session, request, target, emit)
    if request.dry_run:
        _describe(loop, names)
        return
    start = time.monotonic()
    batches = Batches()
    watch = None if request.once else Watch(loop.roots(), batches, step_ms=_step(session)).start()
    try:
        ok = loop.cycle(names, start)
        if request.once:
            if not ok:
                raise JobError("invoke dev --once: not every image became ready (see the `failed` events)")
            return
        while True:
            paths = batches.next(timeout=0.5)
            if paths:
                loop.handle(paths)
    finally:
        if watch is not None:
            watch.stop()
        target.close(keep=request.keep)
        emit(Event("stopped", None, time.monotonic() - start, {"kept": request.keep}))


def _step(session: Session) -> int:
    return int(session.settings.seconds("MOLTBUILD_DEV_DEBOUNCE") * 1000)


def _describe(loop: Loop, names: Sequence[str]) -> None:
    """--dry-run: the plan (dev tags), and what the target would apply; nothing is created."""
    say = loop.session.runner.say
    plan = loop.plan(names)
    say(render_plan(plan))
    say("dev: fast: no attestation, no registry layer cache, no smoke check (the target's readiness is one)")
    refs = {
        i.name: (str(i.ref.with_tag(i.pin_tag)) if loop.push else f"the local build of {i.name}")
        for i in plan.images
    }
    for line in loop.target.describe(refs):
        say(line)
    for w in loop.watched.values():
        rules = ", ".join(f"{g} -> {d}" for g, d in w.sync) or "none (every change rebuilds)"
        say(f"[{w.name}] watch {w.context}; sync rules: {rules}")
