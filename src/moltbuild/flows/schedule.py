"""Building in the order of the image graph: an image starts as soon as every project image it is
built FROM is done in this run (built or reused), up to --jobs at once (by readiness, not by
levels); a dependent is built from a copy of its Dockerfile whose FROM names that base by digest
(REPO@sha256:... once pushed; locally, before a push, by its input tag, which names its inputs'
digest); a failed base fails its dependents without starting them. Backend-agnostic: buildah,
docker and Kaniko all take the pinned copy as their Dockerfile."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.plan import graph
from moltbuild.plan.planner import BuildPlan, ImagePlan
from moltbuild.report import ImageRecord

NOT_BUILT = "not built: "  # how a dependent's error starts when its base failed (never started)


@dataclass(frozen=True)
class Pin:
    """A base as this run has it: the ref a dependent's FROM names, and its digest for the report."""

    ref: str
    digest: str


def pin_of(image: ImagePlan, record: ImageRecord, *, local: bool, dry_run: bool = False) -> Pin | None:
    """Where dependents find `image` after `record`: the registry digest once pushed, else (a
    backend that keeps images) the local image under its input tag; None: nowhere usable."""
    if not record.ok:
        return None
    if record.digest:
        return Pin(f"{image.ref.name}@{record.digest}", record.digest)
    if (local and record.image_id) or dry_run:
        return Pin(str(image.ref.with_tag(image.tags[-1])), record.image_id or "(dry run)")
    return None


def pinned(image: ImagePlan, pins: dict[str, Pin], workdir: Path) -> ImagePlan:
    """`image` to build: as planned, or (a dependent) from a copy of its Dockerfile in `workdir`
    whose FROMs name its bases as `pins` has them (a base not in this run: by its input tag)."""
    if not image.needs:
        return image
    lines = {n: _ref(link, pins) for link in image.needs for n in link.use.lines}
    try:
        text = graph.pinned_dockerfile(image.dockerfile.read_text(encoding="utf-8"), lines)
    except ConfigError as exc:
        raise ConfigError(f"{image.dockerfile}: {exc.message}") from None
    target = workdir / "graph" / f"{image.name}.Dockerfile"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    ignore = image.dockerfile.with_name(image.dockerfile.name + ".dockerignore")  # BuildKit's per-file one
    if ignore.is_file():
        shutil.copyfile(ignore, target.with_name(target.name + ".dockerignore"))
    return replace(image, dockerfile=target)


def _ref(link: graph.BaseLink, pins: dict[str, Pin]) -> str:
    """What a dependent's FROM names: the base as this run has it, else as pushed (--no-deps)."""
    return pins[link.image].ref if link.image in pins else link.unbuilt


def with_base(record: ImageRecord, image: ImagePlan, pins: dict[str, Pin]) -> ImageRecord:
    """The record naming the base it was built FROM (the first project base) and its digest."""
    if not image.needs:
        return record
    link = image.needs[0]
    pin = pins.get(link.image)
    return record.but(base_image=link.ref.name, base_digest=pin.digest if pin else link.unbuilt)


@dataclass
class Schedule:
    """One run's images and where each stands; `start` builds one image (in a worker)."""

    plan: BuildPlan
    images: list[ImagePlan]
    pins: dict[str, Pin]  # bases done in this run (reused ones before the first build)
    workdir: Path = Path()  # where pinned Dockerfiles go (the backend's private run directory)
    local: bool = True  # the backend keeps images: a base not pushed is usable by its input tag
    dry_run: bool = False
    waiting: dict[str, ImagePlan] = field(default_factory=dict)
    needs: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.waiting = {i.name: i for i in self.images}
        self.needs = {
            i.name: {link.image for link in i.needs if link.image in self.waiting} for i in self.images
        }

    def ready(self) -> list[ImagePlan]:
        names = [n for n in self.waiting if not self.needs[n]]
        return [self.waiting.pop(n) for n in names]

    def done(self, image: ImagePlan, record: ImageRecord) -> list[tuple[ImagePlan, str]]:
        """Mark `image` done; the images that now cannot start, each with why (not started)."""
        pin = pin_of(image, record, local=self.local, dry_run=self.dry_run)
        if pin is not None:
            self.pins[image.name] = pin
            for needed in self.needs.values():
                needed.discard(image.name)
            return []
        why = "failed" if not record.ok else "was not pushed (a backend without a local store needs --push)"
        lost = graph.dependents([image.name], {n: tuple(s) for n, s in self.needs.items()})
        return [
            (self.waiting.pop(n), f"{NOT_BUILT}base {image.name} {why}") for n in lost if n in self.waiting
        ]


def run(
    schedule: Schedule,
    job: Callable[[ImagePlan], ImageRecord],
    not_built: Callable[[ImagePlan, str], ImageRecord],
    finished: Callable[[ImageRecord], None],
    cancel: Callable[[], None],
    say: Callable[[str], None] = lambda _: None,
) -> list[ImageRecord]:
    """Every image of `schedule`, each started when its bases are done, `plan.jobs` at once;
    `finished` sees each record the moment it is known."""
    records: list[ImageRecord] = []
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(schedule.plan.jobs, len(schedule.images))))
    running: dict[cf.Future[ImageRecord], ImagePlan] = {}

    def settle(image: ImagePlan, record: ImageRecord) -> None:
        record = with_base(record, image, schedule.pins)
        records.append(record)
        finished(record)
        for lost, why in schedule.done(image, record):
            settle(lost, not_built(lost, why))

    def start() -> None:
        for image in schedule.ready():
            try:
                build = pinned(image, schedule.pins, schedule.workdir)
            except ConfigError as exc:
                settle(image, not_built(image, exc.message))
                continue
            if build is not image:
                froms = ", ".join(dict.fromkeys(_ref(link, schedule.pins) for link in image.needs))
                say(f"[{image.name}] FROM {froms} (in {build.dockerfile}, a copy of {image.dockerfile})")
            running[pool.submit(job, build)] = image

    try:
        start()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                settle(running.pop(fut), fut.result())
            start()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        cancel()
        raise
    pool.shutdown(wait=True)
    return records
