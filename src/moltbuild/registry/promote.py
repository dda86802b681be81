"""Remote tagging: copy a manifest to new tags, across repositories by mounting blobs first."""

from __future__ import annotations

from collections.abc import Callable

from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef, names_a_host, validate_tag
from moltbuild.registry.auth import Registries
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
) -> str:
    """Tag `source` as each of `tags` (TAG, or NAME:TAG / HOST/NAME:TAG for another repository);
    the digest they now serve ('' in a dry run, which contacts no registry)."""
    if not tags:
        raise ConfigError("pass at least one --tag")
    src = parse_source(source)
    dests = [destination(src, tag) for tag in tags]
    if dry_run:
        echo_puts(say, dests, f"the manifest {src} serves")
        return ""
    client = registries.client(src.host)
    found = resolve(client, src)
    for dest in dests:
        assert dest.tag is not None
        put_and_confirm(client, dest.bare(), [dest.tag], digest=found.digest, manifest=found, source=src)
        say(f"{dest} -> {found.digest}")
    return found.digest
