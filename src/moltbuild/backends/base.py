"""The backend interface: every way of building an image answers the same questions."""

from __future__ import annotations

import platform
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import CommandError
from ..probe import StorageVerdict
from ..runner import Runner
from ..settings import Settings

if TYPE_CHECKING:
    from ..credentials import Credentials
    from ..plan import ImagePlan

T = TypeVar("T")
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
# Errors worth another try: the network or the registry hiccuped, not a refusal.
TRANSIENT_RE = re.compile(
    r"connection (reset|refused)|timeout|timed out|temporarily unavailable|\b50[234]\b|"
    r"too many requests|\b429\b|unexpected EOF|broken pipe|i/o timeout|TLS handshake",
    re.I,
)


@dataclass
class BackendStatus:
    name: str
    available: bool  # the tool is installed
    works: bool  # and it can build here
    reason: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def retry_transient(
    action: Callable[[], T],
    *,
    attempts: int = 3,
    backoff: float = 2.0,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`, retrying CommandErrors whose output looks transient, with backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CommandError as exc:
            if attempt == attempts or not TRANSIENT_RE.search(exc.tail):
                raise
            delay = backoff * 2 ** (attempt - 1)
            say(
                f"transient failure ({exc.tail.strip().splitlines()[-1][:120]}); retry {attempt + 1}/"
                f"{attempts} in {delay:.0f}s"
            )
            sleep(delay)
    raise AssertionError("unreachable")


class Backend(ABC):
    name: str = ""
    binary: str = ""

    def __init__(self, runner: Runner, settings: Settings, storage: StorageVerdict):
        self.runner = runner
        self.settings = settings
        self.storage = storage
        self.workdir: Path | None = None

    def tool_path(self) -> str | None:
        return shutil.which(self.binary)

    def native_platform(self) -> str:
        """The platform an image built without --platform gets (recorded in the report)."""
        return f"linux/{ARCHES.get(platform.machine(), platform.machine())}"

    @abstractmethod
    def status(self) -> BackendStatus:
        """Probe, read-only: is the tool here, and can it build in this place?"""

    # The build steps below are used by backends that build locally (docker, buildah).

    def prepare(self, workdir: Path, mirror: str | None) -> None:
        """Write per-run config files (auth, registries) into a private temp dir."""
        self.workdir = workdir

    def iidfile(self, image: ImagePlan) -> str:
        assert self.workdir is not None, "prepare() first"
        return str(self.workdir / f"{image.name}.iid")

    def image_id(self, image: ImagePlan) -> str:
        path = Path(self.iidfile(image))
        return path.read_text().strip() if path.is_file() else ""

    def login(self, host: str, creds: Credentials) -> None:
        raise NotImplementedError(f"{self.name} cannot log in")

    def pull_base(self, base: str, source: str) -> None:
        raise NotImplementedError(f"{self.name} cannot pull")

    def build_argv(self, image: ImagePlan, *, no_cache: bool = False) -> list[str]:
        raise NotImplementedError(f"{self.name} cannot build locally")

    def build(self, image: ImagePlan, *, no_cache: bool, prefix: str, log_path: Path | None) -> None:
        raise NotImplementedError(f"{self.name} cannot build locally")

    def push(self, image: ImagePlan, *, prefix: str, log_path: Path | None) -> str:
        raise NotImplementedError(f"{self.name} cannot push")

    def add_tags(self, image: ImagePlan, tags: list[str]) -> None:
        raise NotImplementedError(f"{self.name} cannot tag")
