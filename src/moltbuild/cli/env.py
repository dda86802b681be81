"""`env.*`: the effective settings."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import edge, run_context


@task
@edge
def show(c):
    """Print the effective settings with their sources; secrets masked."""
    from moltbuild.flows.doctor import show_settings

    show_settings(run_context())


ns = Collection("env", show)
