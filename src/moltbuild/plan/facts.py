"""What planning reads from outside, as immutable facts: the git facts of each checkout, each
image's configuration with its parsed Dockerfile and smoke plan, the [tool.moltbuild] table and
the environment, and for --changed what git says changed since a base. The flow gathers them once
(flows/facts.py) and passes them in; plan/ runs no process and only computes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moltbuild.dockerfile import Dockerfile
from moltbuild.project import ImageConfig
from moltbuild.smoke.probes import SmokePlan

DEFAULT_SOURCE = ""  # no origin remote and no [tool.moltbuild] source: the labels say none
ZERO_SHA = re.compile(r"^0+$")  # GitHub's `before` on a branch's first push: there is no base


@dataclass(frozen=True)
class GitState:
    sha: str  # full 40 hex
    branch: str | None  # None when detached and CI says nothing
    default_branch: str
    dirty: bool
    source: str  # repository URL without credentials
    commit_time: int = 0  # HEAD's committer time (epoch seconds): images carry it, not the build time
    version_tags: tuple[str, ...] = ()  # git tags pointing at HEAD (for semver image tags)

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class ImageFacts:
    """One selected image: its table, its Dockerfile parsed once (with its build args, its target
    checked), the git facts of the checkout holding its context, its smoke plan (None: not asked)."""

    config: ImageConfig
    dockerfile: Dockerfile
    git: GitState
    smoke: SmokePlan | None = None
    wanted: bool = True  # False: here only as a base whose inputs a dependent's digest includes (--no-deps)


@dataclass(frozen=True)
class PlanFacts:
    git: GitState  # the project's own checkout
    images: tuple[ImageFacts, ...]  # the selected images, in order
    tool: Mapping[str, Any] = field(default_factory=dict)  # [tool.moltbuild]
    environ: Mapping[str, str] = field(default_factory=dict)  # SOURCE_DATE_EPOCH


@dataclass(frozen=True)
class ChangeFacts:
    """What git says changed between a base and HEAD. `sha` None: the base is all zeros or not a
    commit here, and then nothing else was asked."""

    base: str
    sha: str | None = None
    paths: tuple[str, ...] = ()  # as stored (NUL-separated output, no quoting)
    old_pyproject: str = ""  # pyproject.toml at the base ('' when it had none)
    new_pyproject: str = ""  # and at HEAD
