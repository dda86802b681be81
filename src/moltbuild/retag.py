"""Remote tagging: copy a manifest to new tags, across repositories by mounting blobs first."""

from __future__ import annotations

from collections.abc import Callable

from .credentials import credentials_for, registry_client
from .errors import ConfigError
from .settings import Settings
from .tagging import validate_tag


def split_source(ref: str) -> tuple[str, str, str]:
    """'HOST/NAME:TAG' or 'HOST/NAME@sha256:...' -> (host, name, reference)."""
    if "@" in ref:
        repo, reference = ref.split("@", 1)
    else:
        repo, sep, reference = ref.rpartition(":")
        if not sep or "/" in reference:
            raise ConfigError(f"--source {ref!r} needs a tag or digest: REGISTRY/NAME:TAG or @sha256:...")
    host, _, name = repo.partition("/")
    if not name or ("." not in host and ":" not in host and host != "localhost"):
        raise ConfigError(f"--source {ref!r} needs the registry host, e.g. ghcr.io/ardenone/moltbook-api:TAG")
    return host, name, reference


def retag(settings: Settings, source: str, tags: list[str], *, say: Callable[[str], None]) -> str:
    """Tag `source` as each of `tags` (TAG, or NAME:TAG / HOST/NAME:TAG for another repository)."""
    if not tags:
        raise ConfigError("pass at least one --tag")
    host, name, reference = split_source(source)
    client = registry_client(host, settings, credentials_for(host, settings))
    digest = ""
    for tag in tags:
        dest_name, dest_tag = name, tag
        if ":" in tag:
            dest_repo, dest_tag = tag.rsplit(":", 1)
            dest_host, _, rest = dest_repo.partition("/")
            if rest and dest_host == host:
                dest_name = rest
            elif rest and ("." in dest_host or ":" in dest_host):
                raise ConfigError(
                    f"--tag {tag!r}: retagging across registries is not supported; use a repository on {host}"
                )
            else:
                dest_name = dest_repo
        validate_tag(dest_tag)
        digest = client.copy(name, reference, dest_name, dest_tag)
        say(f"{host}/{dest_name}:{dest_tag} -> {digest}")
    return digest
