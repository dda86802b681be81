"""`invoke changed`: which images changed since a base revision, and why."""

from __future__ import annotations

from moltbuild.flows.context import Session
from moltbuild.plan.changes import Change, changed_images, check_explicit_base, render, resolve_base


def show_changed(session: Session, *, base: str | None = None, as_json: bool = False) -> list[Change]:
    """Print which images changed since the base, and why (JSON on stdout with `as_json`)."""
    root = session.settings.project_root
    if base and base.strip():
        check_explicit_base(root, resolve_base(base, session.environ), session.runner)
    base = resolve_base(base, session.environ)
    sha, changes = changed_images(root, session.images, base, session.runner)
    session.runner.emit(render(base, sha, changes, as_json=as_json))
    return changes
