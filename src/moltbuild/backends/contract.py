"""The backend contract: each backend owns the whole per-image job.

The orchestration (build.py, publish.py) calls only what is declared here, in this order:
`open` once per run (private dir, credentials, bases), then `produce` per planned image or
`push_built` per image an earlier run built. It never knows which kind of backend it drives.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from moltbuild.errors import CommandError, MoltbuildError
from moltbuild.plan.planner import BasePull, ImagePlan
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import Credentials, Registries
from moltbuild.settings import Settings
from moltbuild.system.host import StorageVerdict
from moltbuild.system.processes import Runner, terminate_all
from moltbuild.system.retry import RetryPolicy, transient_text

Built = Callable[[str], None]  # told the local image id of a built image (Backend.produce)

if TYPE_CHECKING:  # annotations only: `invoke verify` and `--list` load no image store or smoke code
    from moltbuild.backends.imagestore import ImageStore
    from moltbuild.smoke.run import ContainerRuntime

T = TypeVar("T")
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
# A push the network or the registry interrupted: 1 + 2 more tries, 2 and 4 s apart.
PUSH_RETRY = RetryPolicy(attempts=3, base=2.0, cap=30.0, max_wait=60.0)


@dataclass
class BackendStatus:
    name: str
    available: bool  # the tool is installed
    works: bool  # and it can build here
    reason: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """What one run needs before its jobs: a private 0700 dir, logins, the base mirror and bases."""

    workdir: Path
    logins: Mapping[str, Credentials | None] = field(default_factory=dict)  # registry host -> creds
    mirror: str | None = None
    bases: Mapping[str, BasePull] = field(default_factory=dict)  # base as the Dockerfile names it
    purpose: str = "a moltbuild run"  # who holds the image store, for a run that waits for it
    registries: Registries | None = None  # the run's registry clients, one per host
    report: Path | None = None  # the build report of this run (default: build/images.json)


@dataclass(frozen=True)
class JobLog:
    prefix: str  # "[api] ", for interleaved output
    path: Path | None = None  # build/logs/NAME.log; None in a dry run


@dataclass(frozen=True)
class PushTarget:
    """An image built earlier, to be pushed once and tagged in the registry."""

    name: str
    ref: ImageRef  # the repository, no tag
    tags: tuple[str, ...]  # the first is pushed; the others are added by manifest PUT
    source: str  # the local image ID, or the local manifest list's name
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome; the orchestration turns it into a report record."""

    image_id: str | None  # what `push_built` can push later (None: nothing local)
    platforms: tuple[str, ...]
    duration_s: float
    log_path: Path | None = None
    digest: str | None = None  # the registry's digest, once pushed
    tags_pushed: tuple[str, ...] = ()
    smoke: str = ""  # what the release check found (report field `smoke`)
    size_bytes: int | None = None  # compressed, as pushed: config + layers (all platforms)
    cache: str = ""  # what the build did with the registry layer cache ('' when it used none)

    @property
    def pushed(self) -> bool:
        return bool(self.tags_pushed)


def retry_transient(
    action: Callable[[], T],
    *,
    policy: RetryPolicy = PUSH_RETRY,
    say: Callable[[str], None] = print,
    before_retry: Callable[[CommandError], None] | None = None,
) -> T:
    """Run `action`, retrying CommandErrors whose output looks transient, as `policy` says;
    `before_retry` may raise to stop retrying (e.g. the registry no longer answers)."""
    tries = policy.start()
    while True:
        try:
            return action()
        except CommandError as exc:
            wait = tries.after_failure() if transient_text(exc.tail) else None
            if wait is None:
                raise
            if before_retry:
                before_retry(exc)
            say(
                f"transient failure ({exc.tail.strip().splitlines()[-1][:120]}); retry {tries.failures + 1}/"
                f"{policy.attempts} in {wait:.0f}s"
            )
            tries.pause(wait)


class Backend(ABC):
    name: ClassVar[str] = ""
    binary: ClassVar[str] = ""

    def __init__(self, runner: Runner, settings: Settings, storage: StorageVerdict, *, dry_run: bool = False):
        # A dry run gets a runner that only echoes commands that change anything, whatever was passed.
        self.dry_run = dry_run
        self.runner = runner.derive(dry_run=True) if dry_run else runner
        self.settings = settings
        self.storage = storage

    @property
    def idle_timeout(self) -> float:
        """How long a push or pull may move no byte (MOLTBUILD_IDLE_TIMEOUT)."""
        return self.settings.seconds("MOLTBUILD_IDLE_TIMEOUT")

    def tool_path(self) -> str | None:
        return shutil.which(self.binary)

    def native_platform(self) -> str:
        """The platform an image built without --platform gets (recorded in the report)."""
        return f"linux/{ARCHES.get(platform.machine(), platform.machine())}"

    def cancel(self) -> None:
        """Ctrl-C / SIGTERM: stop everything this backend started. Shared part: every child
        process tree; a backend with remote work (kaniko Jobs) stops that too."""
        terminate_all()

    @abstractmethod
    def status(self) -> BackendStatus:
        """Probe, read-only: is the tool here, and can it build in this place?"""

    def check_images(self, images: Sequence[ImagePlan]) -> None:  # noqa: B027 (optional)
        """Before `open`, also in a dry run: refuse what this backend cannot build (one line naming
        the image and what to do), before any image starts."""

    @abstractmethod
    def open(self, run: RunSpec) -> None:
        """Per-run setup before any job: config files and logins in `run.workdir`, bases ready."""

    def close(self) -> None:  # noqa: B027 (optional)
        """After the last job, also after a failure: release what `open` took. Nothing else."""

    def tidy(self, *, ok: bool, built: Sequence[ImagePlan]) -> None:  # noqa: B027 (optional)
        """The explicit last step of a build run, before `close`: record what this run created
        and, after a good run (`ok`), prune what nothing needs. A backend without a local store
        has nothing to tidy."""

    # -- capabilities: the flows ask these, never the class --------------------------------------

    #: Built images stay in a store on this machine: `push` can push them later, `smoke` can run
    #: them, `clean` can prune them. Backends that build remotely (kaniko) keep nothing here.
    keeps_images: ClassVar[bool] = False

    def prepare(self, run: RunSpec) -> None:
        """Config files only, enough for store commands outside a build (`invoke clean`)."""
        raise self._lacks("local image store")

    def store(self) -> ImageStore:
        raise self._lacks("local image store")

    def runtime(self) -> ContainerRuntime:
        """What runs a built image (the smoke check)."""
        raise self._lacks("local container runtime")

    def push_built(self, target: PushTarget, *, log: JobLog) -> ImageResult:
        """Push an image an earlier run built here, under every tag of `target`."""
        raise self._lacks("local images to push")

    #: Can mount a built image's filesystem (`mounted_image`): the flows then make its SBOM from
    #: it while the smoke check and the push run, instead of reading the image back afterwards.
    mounts_images: ClassVar[bool] = False

    def mounted_image(self, image_id: str) -> contextlib.AbstractContextManager[Path]:
        """IMAGE_ID's filesystem, mounted read-only for the time of the `with` block."""
        raise self._lacks("image mounts")

    def _lacks(self, what: str) -> MoltbuildError:
        return MoltbuildError(
            f"the {self.name} backend has no {what}; a caller must check `keeps_images` first "
            "(a moltbuild bug, please report it)"
        )

    @abstractmethod
    def produce(
        self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog, built: Built | None = None
    ) -> ImageResult:
        """Build `image`; with `push`, leave every one of its tags in the registry at one digest.
        `built`, when given, is called with the local image id once a single-platform image that
        will be pushed exists here, before its smoke check (a backend keeping no image never calls
        it). Failures raise JobError (a MoltbuildError)."""
