"""The one way tags are set in a registry: PUT each tag, then read each back and confirm it
serves the expected digest. Push, reuse, `tag`, `tag --source` all go through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from moltbuild.errors import RegistryError
from moltbuild.refs import ImageRef
from moltbuild.registry.client import Manifest, RegistryClient


def resolve(client: RegistryClient, source: ImageRef) -> Manifest:
    """The manifest `source` (a tag or a digest) names, read once (its bytes are what gets PUT)."""
    found = client.manifest(source.repository, source.reference, method="GET")
    if found is None:
        raise RegistryError(f"{source} not found in {source.host}; nothing to tag")
    return found


def echo_puts(say: Callable[[str], None], refs: Iterable[ImageRef], source: str, *, prefix: str = "") -> None:
    """What a dry run shows instead of `put_and_confirm`: one `+ PUT REF (SOURCE)` line per tag."""
    for ref in refs:
        say(f"{prefix}+ PUT {ref} ({source})")


def put_and_confirm(
    client: RegistryClient,
    repository: ImageRef,
    tags: list[str] | tuple[str, ...],
    *,
    digest: str,
    manifest: Manifest | None = None,
    source: ImageRef | None = None,
) -> None:
    """Point every tag of `repository` at `digest` (the manifest `manifest`, else read from
    `source` or `repository` by digest; blobs mounted across repositories), then confirm each tag
    serves `digest`. A registry that answers the PUT but serves something else fails, naming the tag."""
    if not tags:
        return
    source_name = source.repository if source else repository.repository
    named = ", ".join(tags)
    with client.operation(
        f"put tag {repository.with_tag(tags[0])}" + (f" (tags {named})" if tags[1:] else "")
    ):
        client.put_tags(
            repository.repository, list(tags), reference=digest, source_name=source_name, manifest=manifest
        )
        served_by = {tag: client.manifest(repository.repository, tag) for tag in tags}
    for tag, served in served_by.items():
        got = served.digest if served else None
        if got != digest:
            raise RegistryError(
                f"{repository.with_tag(tag)} serves {got or 'nothing'} after the tag was set, not {digest}"
            )
