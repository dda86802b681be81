"""Storage verdicts for unit tests, without probing anything."""

from moltbuild.system.host import StorageVerdict


def storage_verdict(*, nested: bool = False, fuse: str | None = None, **fields) -> StorageVerdict:
    """A plain-disk verdict, or a nested-overlay one (overlay not usable there)."""
    base = dict(
        path="/s",
        mount_point="/",
        fstype="overlay" if nested else "ext4",
        overlay_ok=not nested,
        nested=nested,
        method="fstype",
        detail="",
        fuse_overlayfs=fuse,
    )
    return StorageVerdict(**(base | fields))
