"""`env.*`: the effective settings."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import edge, run_context


@task
@edge
def show(c):
    """Print the effective settings with their sources; secrets masked."""
    from moltbuild.settings import KEYS
    from moltbuild.system.tables import render_table

    session = run_context()
    for warning in session.settings.warnings:
        session.runner.warn(warning)
    rows = [(k, v or "(unset)", src, KEYS[k].help) for k, v, src in session.settings.as_rows()]
    session.runner.emit(render_table(("setting", "value", "source", "meaning"), rows))


ns = Collection("env", show)
