"""`invoke changed`: which images changed since a base revision, and why."""

from __future__ import annotations

from moltbuild.flows.context import Session
from moltbuild.flows.facts import changes_since, image_needs
from moltbuild.plan.changes import Change, changed_images, render


def show_changed(session: Session, *, base: str | None = None, as_json: bool = False) -> list[Change]:
    """Print which images changed since the base, and why (JSON on stdout with `as_json`)."""
    root = session.settings.project_root
    facts = changes_since(session, base)
    sha, changes = changed_images(root, session.images, facts, image_needs(session))
    session.runner.emit(render(facts.base, sha, changes, as_json=as_json))
    return changes
