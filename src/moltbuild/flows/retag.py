"""`invoke tag`: more tags, in the registry (no pull, no push): on any image named by `--source`
(into another repository with its cosign signature and attestations), or on the images of the
last build."""

from __future__ import annotations

from collections.abc import Sequence

from moltbuild.flows import publish
from moltbuild.flows.context import Session
from moltbuild.registry import promote
from moltbuild.supply.attached import tag_for


def cosign_tags(digest: str) -> list[str]:
    """What cosign attaches to `digest` by tag: its signature and its attestations."""
    return [tag_for(digest, "sig"), tag_for(digest, "att")]


def tag_images(
    session: Session,
    tags: Sequence[str],
    *,
    source: str | None = None,
    only: str = "",
    dry_run: bool = False,
    as_json: bool = False,
) -> None:
    if source:
        promote.retag(
            session.settings,
            source,
            list(tags),
            say=session.runner.say,
            dry_run=dry_run,
            registries=session.registries,
            attachments=cosign_tags,
        )
    else:
        publish.tag_built(session, list(tags), only=only, dry_run=dry_run, as_json=as_json)
