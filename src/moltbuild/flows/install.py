"""`invoke setup`: the system tools (buildah, skopeo, docker-registry, ...) installed with apt-get,
and kustomize built from its pinned Go module."""

from __future__ import annotations

from collections.abc import Mapping

from moltbuild.system import packages
from moltbuild.system.processes import Runner


def install_tools(*, environ: Mapping[str, str], dry_run: bool = False) -> None:
    runner = Runner(dry_run=dry_run, environ=environ)
    packages.setup(runner)
    packages.setup_go_tools(runner)
