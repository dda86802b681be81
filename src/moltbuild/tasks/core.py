"""Top-level tasks: doctor, setup."""

from __future__ import annotations

import sys

from invoke import Collection, task

from . import edge


@task(help={"json": "print machine-readable JSON"})
@edge
def doctor(c, json=False):
    """Show which backends work here, what `auto` picks and why, and how to fix problems."""
    from .. import doctor as doctor_mod
    from ..session import Session

    session = Session.create()
    for warning in session.settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(doctor_mod.render(doctor_mod.collect(session), as_json=json))


@task(help={"dry-run": "print the apt-get commands, run nothing"})
@edge
def setup(c, dry_run=False):
    """Install the system tools (buildah, skopeo, docker-registry, ...) with apt-get."""
    from .. import sysdeps
    from ..runner import Runner

    sysdeps.setup(Runner(dry_run=dry_run))


ns = Collection(doctor, setup)
