"""The backend interface: every way of building an image answers the same questions."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

from ..probe import StorageVerdict
from ..runner import Runner
from ..settings import Settings


@dataclass
class BackendStatus:
    name: str
    available: bool  # the tool is installed
    works: bool  # and it can build here
    reason: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(ABC):
    name: str = ""
    binary: str = ""

    def __init__(self, runner: Runner, settings: Settings, storage: StorageVerdict):
        self.runner = runner
        self.settings = settings
        self.storage = storage

    def tool_path(self) -> str | None:
        return shutil.which(self.binary)

    @abstractmethod
    def status(self) -> BackendStatus:
        """Probe, read-only: is the tool here, and can it build in this place?"""
