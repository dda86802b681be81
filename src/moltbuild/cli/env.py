"""`env.*`: the effective settings."""

from __future__ import annotations

import sys

from invoke import Collection, task

from moltbuild.cli import edge


@task
@edge
def show(c):
    """Print the effective settings with their sources; secrets masked."""
    from moltbuild.flows.context import Session
    from moltbuild.settings import KEYS
    from moltbuild.system.tables import render_table

    session = Session.create()
    for warning in session.settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = [(k, v or "(unset)", src, KEYS[k].help) for k, v, src in session.settings.as_rows()]
    print(render_table(("setting", "value", "source", "meaning"), rows))


ns = Collection("env", show)
