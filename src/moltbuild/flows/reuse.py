"""Skip-unchanged: the registry is the cache. An image pushed from the same inputs carries an
`input-<digest>` tag and the input-digest label; it is tagged again, not rebuilt."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from moltbuild.backends.contract import ImageResult
from moltbuild.plan.planner import INPUT_DIGEST_LABEL, ImagePlan, cache_tag
from moltbuild.registry.client import Manifest, RegistryClient
from moltbuild.registry.tags import echo_puts, put_and_confirm


@dataclass(frozen=True)
class Reusable:
    image: ImagePlan
    digest: str
    platforms: tuple[str, ...]
    manifest: Manifest | None = None  # fetched once by `find`, PUT again under each tag by `apply`


def find(client: RegistryClient, image: ImagePlan, say: Callable[[str], None]) -> Reusable | None:
    """Read-only: the image pushed from the same inputs, when the registry has it."""
    cached = cache_tag(image.input_digest)
    name = image.ref.repository
    with client.operation(f"look up {image.ref.with_tag(cached)} (reuse)"):
        found = client.manifest(name, cached, method="GET")  # the one manifest request of the skip path
        if found is None:
            return None
        config = client.config_of(name, found) or {}
    labels = (config.get("config") or {}).get("Labels") or {}
    if labels.get(INPUT_DIGEST_LABEL) != image.input_digest:
        say(f"[{image.name}] {cached} exists but its label does not match; building")
        return None
    platform = f"{config.get('os', 'linux')}/{config.get('architecture', 'amd64')}"
    return Reusable(image, found.digest, image.platforms or (platform,), found)


def apply(client: RegistryClient, hit: Reusable, *, dry_run: bool, say: Callable[[str], None]) -> ImageResult:
    """Point every planned tag at the reused digest (manifest PUTs; echoed only in a dry run)."""
    start = time.monotonic()
    image = hit.image
    tags = [t for t in image.tags if t != cache_tag(image.input_digest)]
    if dry_run:
        say(f"[{image.name}] would reuse {hit.digest[:19]} (same inputs), no build")
        refs = [image.ref.with_tag(tag) for tag in tags]
        echo_puts(say, refs, f"the manifest at {hit.digest[:19]}", prefix=f"[{image.name}] ")
    else:
        put_and_confirm(client, image.ref, tags, digest=hit.digest, manifest=hit.manifest)
        say(f"[{image.name}] unchanged inputs: reused {hit.digest[:19]}, tagged {', '.join(image.tags)}")
    size = client.image_size(image.ref.repository, hit.manifest) if hit.manifest and not dry_run else None
    return ImageResult(
        None, hit.platforms, time.monotonic() - start, None, hit.digest, image.tags, size_bytes=size
    )
