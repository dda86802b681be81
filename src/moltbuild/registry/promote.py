"""Remote tagging: copy a manifest to new tags, across repositories by mounting blobs first, and
with it the signature and attestation tags attached to it (cosign's tag scheme)."""

from __future__ import annotations

from collections.abc import Callable

from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef, names_a_host, validate_tag
from moltbuild.registry.auth import Registries
from moltbuild.registry.client import RegistryClient
from moltbuild.registry.tags import echo_puts, put_and_confirm, resolve
from moltbuild.settings import Settings


def parse_source(text: str) -> ImageRef:
    """--source: HOST/NAME:TAG or HOST/NAME@sha256:..., the registry named explicitly."""
    ref = ImageRef.parse(text, "--source")
    if not (ref.tag or ref.digest):
        raise ConfigError(f"--source {text!r} needs a tag or digest: REGISTRY/NAME:TAG or @sha256:...")
    if not text.strip().startswith(ref.host):
        raise ConfigError(
            f"--source {text!r} needs the registry host, e.g. registry.example.com/team/app:TAG"
        )
    return ref


def destination(source: ImageRef, tag: str) -> ImageRef:
    """--tag: TAG (same repository), NAME:TAG or HOST/NAME:TAG on the same registry."""
    if ":" not in tag:
        return source.bare().with_tag(validate_tag(tag))
    repo, new_tag = tag.rsplit(":", 1)
    validate_tag(new_tag)
    first = repo.split("/", 1)[0]
    if "/" in repo and names_a_host(first):
        dest = ImageRef.parse(tag, "--tag")
        if dest.host != source.host:
            raise ConfigError(
                f"--tag {tag!r}: retagging across registries is not supported; "
                f"use a repository on {source.host}"
            )
        return dest
    return ImageRef.parse(f"{source.host}/{tag}", "--tag")


def retag(
    settings: Settings,
    source: str,
    tags: list[str],
    *,
    say: Callable[[str], None],
    dry_run: bool = False,
    registries: Registries,
    attachments: Callable[[str], list[str]] | None = None,
) -> str:
    """Tag `source` as each of `tags` (TAG, or NAME:TAG / HOST/NAME:TAG for another repository);
    the digest they now serve ('' in a dry run, which contacts no registry). Into another
    repository the tags `attachments(digest)` names (cosign's .sig/.att) follow the image."""
    if not tags:
        raise ConfigError("pass at least one --tag")
    src = parse_source(source)
    dests = [destination(src, tag) for tag in tags]
    others = _other_repositories(src, dests)
    if dry_run:
        echo_puts(say, dests, f"the manifest {src} serves")
        for repo in others if attachments else ():
            say(f"+ copy the signature and attestations of {src} (if any) into {repo}")
        return ""
    client = registries.client(src.host)
    found = resolve(client, src)
    for dest in dests:
        assert dest.tag is not None
        put_and_confirm(client, dest.bare(), [dest.tag], digest=found.digest, manifest=found, source=src)
        say(f"{dest} -> {found.digest}")
    for repo in others if attachments else ():
        copy_attachments(client, src.bare(), repo, attachments(found.digest), say=say)
        for platform in found.platforms():  # `cosign sign --recursive` signs each platform too
            copy_attachments(client, src.bare(), repo, attachments(platform), say=say, quiet=True)
    return found.digest


def _other_repositories(src: ImageRef, dests: list[ImageRef]) -> list[ImageRef]:
    """The destinations' repositories other than the source's: the same repository already holds
    the signature tags beside the image."""
    repos = {dest.bare().repository: dest.bare() for dest in dests}
    repos.pop(src.repository, None)
    return list(repos.values())


def copy_attachments(
    client: RegistryClient,
    source: ImageRef,
    destination: ImageRef,
    tags: list[str],
    *,
    say: Callable[[str], None],
    quiet: bool = False,
) -> list[str]:
    """Copy each of `tags` that `source` holds into `destination` (blobs mounted, else copied,
    then the manifest); the tags copied. Says what it copied, or (unless `quiet`: a platform of
    an index) that there was nothing."""
    copied = []
    for tag in tags:
        found = client.manifest(source.repository, tag, method="GET")
        if found is not None:
            put_and_confirm(client, destination, [tag], digest=found.digest, manifest=found, source=source)
            copied.append(tag)
    if copied:
        say(f"{destination}: copied {', '.join(copied)} from {source}")
    elif not quiet:
        say(f"{destination}: no signature to copy ({source} holds none of {', '.join(tags)})")
    return copied
