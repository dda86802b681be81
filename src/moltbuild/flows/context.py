"""The run context of one command (`Session`): settings, the runner, the project's images, the
registry clients and the probes, assembled once; a step that needs another runner or the
command's own settings gets a derived context (`with_runner`, `with_overrides`), never a new one."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from moltbuild.backends.contract import BackendStatus
from moltbuild.backends.selection import probe_all
from moltbuild.project import ImageConfig, find_project_root, load_images
from moltbuild.registry.auth import Registries
from moltbuild.settings import Secret, Settings, load_settings
from moltbuild.system import state
from moltbuild.system.console import MIN_MASKED
from moltbuild.system.host import Place, StorageVerdict, default_storage_root, detect_place, probe_storage
from moltbuild.system.processes import Runner


def warn_short_secrets(settings: Settings, runner: Runner) -> None:
    """A secret too short to mask is printed as it is: say so, once per setting and process."""
    for key, setting in settings.values.items():
        value = setting.value
        short = isinstance(value, Secret) and value and len(value.reveal()) < MIN_MASKED
        if short and state.first_time(f"short secret {key}"):
            runner.warn(f"{key} is shorter than {MIN_MASKED} characters: it cannot be masked in output")


@dataclass
class Session:
    settings: Settings
    runner: Runner
    environ: Mapping[str, str]
    root: Path = Path("/")
    cli: Mapping[str, Any] = field(default_factory=dict)  # the flags that set settings

    @classmethod
    def create(
        cls,
        *,
        cli: Mapping[str, Any] | None = None,
        overrides: Mapping[str, tuple[str, str]] | None = None,
        environ: Mapping[str, str] | None = None,
        project_root: Path | None = None,
    ) -> Session:
        """Settings and a runner for one command. Dry runs are chosen per call, never here."""
        environ = dict(os.environ if environ is None else environ)
        settings = load_settings(
            project_root or find_project_root(), environ=environ, cli=cli, overrides=overrides
        )
        verbose = settings.flag("MOLTBUILD_VERBOSE")
        live = sys.stdout.isatty() and not settings.ci and environ.get("TERM", "dumb") != "dumb"
        runner = Runner(secrets=settings.secrets, verbose=verbose, live=live, environ=environ)
        warn_short_secrets(settings, runner)
        return cls(settings=settings, runner=runner, environ=environ, cli=dict(cli or {}))

    def with_runner(self, runner: Runner) -> Session:
        """This context with another runner (e.g. `runner.to_stderr()` for `--json`); the images,
        registry clients and probes already made carry over."""
        return self._derive(runner=runner)

    def with_overrides(self, overrides: Mapping[str, tuple[str, str]]) -> Session:
        """This context with values the command sets itself (the pipeline's embedded registry),
        above the environment and below flags: the same runner and images; registry clients and
        backend probes made for the new settings."""
        settings = load_settings(
            self.settings.project_root, environ=self.environ, cli=self.cli, overrides=overrides
        )
        return self._derive(settings=settings)

    def _derive(self, **changes: Any) -> Session:
        derived = replace(self, **changes)
        # What the new settings could change is made again, on first use.
        kept = (
            ("images", "place")
            if "settings" in changes
            else ("images", "place", "storage", "backends", "registries")
        )
        derived.__dict__.update({k: v for k, v in self.__dict__.items() if k in kept})
        return derived

    @cached_property
    def images(self) -> dict[str, ImageConfig]:
        """The project's images ([tool.moltbuild.images]), read once per command."""
        return load_images(self.settings.project_root)

    @cached_property
    def registries(self) -> Registries:
        """One registry client per host for this command, whatever steps it takes."""
        return Registries(self.settings)

    @property
    def storage_root(self) -> Path:
        configured = self.settings.get("MOLTBUILD_STORAGE_ROOT")
        # Expanded and absolute once, here: the probe tests this path and buildah is given it.
        return Path(configured).expanduser().resolve() if configured else default_storage_root(self.environ)

    @cached_property
    def place(self) -> Place:
        return detect_place(self.environ, self.root, ci=self.settings.ci)

    @cached_property
    def storage(self) -> StorageVerdict:
        return probe_storage(self.storage_root, root=self.root)

    @cached_property
    def backends(self) -> dict[str, BackendStatus]:
        return probe_all(self.runner, self.settings, self.storage)
