"""Top-level tasks: doctor, setup."""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection, task

from moltbuild.cli import edge, run_context


@task(help={"json": "print machine-readable JSON"})
@edge
def doctor(c, json=False):
    """Show which backends work here, what `auto` picks and why, and how to fix problems."""
    from moltbuild.flows.doctor import show

    show(run_context(), as_json=json)


@task(
    help={
        "dry-run": "print the apt-get and go commands, run nothing",
        "wait": "make the Go tools ready before returning (default: in the background)",
        "relock": "rebuild the Go tools and write their sha256 and Go floor into the lock",
        "tests": "also what the tests and nox -s pipeline's embedded registry use (docker-registry, "
        "docker.io, busybox-static, python3.11, apache2-utils, openssl)",
    }
)
@edge
def setup(c, dry_run=False, wait=False, relock=False, tests=False):
    """Install the system tools a build needs (buildah, skopeo, podman, ...) with apt-get; make the
    locked Go tools (kustomize, syft, cosign) ready in the background, verified against the lock."""
    from moltbuild.flows.install import install_tools
    from moltbuild.settings import load_settings

    settings = load_settings(Path.cwd(), environ=os.environ)  # may run before any project exists
    tool_dir = settings.get("MOLTBUILD_TOOL_DIR")
    install_tools(
        environ=os.environ,
        dry_run=dry_run,
        wait=wait,
        relock=relock,
        bindir=Path(tool_dir) if tool_dir else None,
        cache=settings.get("MOLTBUILD_TOOL_CACHE") or "",
        tests=tests,
    )


@task(
    help={
        "all": "remove every image this tool created, the images of the last build included",
        "backend": "buildah or docker (default: every local store that works here)",
        "dry-run": "list what would go; remove nothing",
    }
)
@edge
def clean(c, all=False, backend=None, dry_run=False):
    """Prune images this tool created and nothing needs (superseded builds, unused intermediates).
    Never touches images it did not create."""
    from moltbuild.flows.clean import clean as clean_stores

    clean_stores(run_context(), everything=all, backend=backend, dry_run=dry_run)


ns = Collection(doctor, setup, clean)
