"""Storage hygiene: a ledger of the images this tool created in a local image store (buildah's
storage through podman, or docker's), and pruning that never touches anything else.

The ledger holds each built image, its parent chain (the layer cache) and any base it pulled that
was not there before. After a good run the images a build superseded lose their tool-made tags, and
every ledger image that no tagged image or container still needs is removed, so storage holds one
cached chain per image instead of one per build. Pruning runs only when no other run is active on
the same store (a shared lock per run, an exclusive try-lock to prune): it never pulls an
intermediate image out from under a build in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .smoke import ContainerRuntime

LEDGER = "created.json"


@dataclass(frozen=True)
class StoredImage:
    id: str  # hex, without "sha256:"
    parent: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class StoreStats:
    images: int
    ours: int
    size_bytes: int


def _hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


class ImageStore:
    def __init__(self, runtime: ContainerRuntime, state_dir: Path):
        self.rt = runtime
        self.state_dir = state_dir

    # -- inventory -----------------------------------------------------------------------------

    def inventory(self) -> dict[str, StoredImage]:
        ids = self.rt("images", "--all", "--quiet", "--no-trunc", mutates=False, timeout=120).stdout.split()
        if not ids:
            return {}
        out = self.rt("image", "inspect", *sorted(set(ids)), mutates=False, check=False, timeout=120).stdout
        images = {}
        for info in json.loads(out or "[]") or []:
            tags = tuple(t for t in info.get("RepoTags") or () if not t.endswith("-tmp:latest"))
            image = StoredImage(_hex(info["Id"]), _hex(info.get("Parent") or ""), tags)
            images[image.id] = image
        return images

    def image_id(self, name: str) -> str | None:
        res = self.rt("image", "inspect", "--format", "{{.Id}}", name, mutates=False, check=False, timeout=60)
        return _hex(res.stdout.strip()) if res.ok and res.stdout.strip() else None

    def size_bytes(self) -> int:
        """What all images take on disk, shared layers counted once (`system df`)."""
        res = self.rt(
            "system", "df", "--format", "{{.Type}}|{{.Size}}", mutates=False, check=False, timeout=120
        )
        sizes = dict(line.split("|", 1) for line in res.stdout.splitlines() if "|" in line)
        return _parse_size(sizes.get("Images", "0"))

    def stats(self) -> StoreStats:
        images = self.inventory()
        return StoreStats(len(images), len(self.ledger() & set(images)), self.size_bytes())

    # -- the ledger ----------------------------------------------------------------------------

    def ledger(self) -> set[str]:
        path = self.state_dir / LEDGER
        try:
            return set(json.loads(path.read_text()).get("images", []))
        except (OSError, ValueError, AttributeError):
            return set()

    def _write_ledger(self, ids: Iterable[str]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".{LEDGER}.{os.getpid()}"
        tmp.write_text(json.dumps({"images": sorted(ids)}, indent=1) + "\n")
        os.replace(tmp, self.state_dir / LEDGER)

    def record(self, built: Iterable[str], pulled: Iterable[str] = ()) -> None:
        """Add built images with their parent chain (stopping at images we did not create) and
        bases that this run pulled."""
        images = self.inventory()
        new = {_hex(p) for p in pulled if _hex(p) in images}
        for start in built:
            current = _hex(start)
            while current in images and current not in new:
                if current != _hex(start) and images[current].names and current not in self.ledger():
                    break  # a named image we did not build (a base): the chain is ours only above it
                new.add(current)
                current = images[current].parent
        with self._locked("ledger.lock", fcntl.LOCK_EX):
            self._write_ledger(self.ledger() | new)

    # -- runs and pruning ----------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Held for a whole run: pruning waits for no one and skips while another run is active."""
        with self._locked("active.lock", fcntl.LOCK_SH):
            yield

    def _supersede(self, images: dict[str, StoredImage], keep: dict[str, set[str]]) -> None:
        """Tool-made names of each repository in `keep`, other than the ones kept, are removed from
        ledger images: the build they named was superseded (the registry still has it)."""
        ours = self.ledger()
        for image in images.values():
            for name in image.names if image.id in ours else ():
                repository = name.rsplit(":", 1)[0]
                if repository in keep and name not in keep[repository]:
                    verb = ("untag",) if self.rt.argv[0] != "docker" else ("image", "rm", "--no-prune")
                    self.rt(*verb, name, check=False, timeout=60)

    def prune(
        self, *, everything: bool = False, supersede: dict[str, set[str]] | None = None
    ) -> list[str] | None:
        """Remove ledger images nothing needs (with `everything`, every ledger image), after
        untagging what `supersede` names. None: another run is active on this store, so nothing
        was touched. Call it outside `active()`."""
        with self._try_exclusive() as alone:
            if not alone:
                return None
            if supersede:
                self._supersede(self.inventory(), supersede)
            order = self.doomed(everything=everything)
            if order:
                self.rt("rmi", *(["--force"] if everything else []), *order, check=False, timeout=600)
            left = set(self.inventory())
            with self._locked("ledger.lock", fcntl.LOCK_EX):
                self._write_ledger(self.ledger() & left)
            return [i for i in order if i not in left]

    def doomed(self, *, everything: bool = False) -> list[str]:
        """What `prune` would remove, children before parents."""
        images, ours = self.inventory(), self.ledger()
        doomed = (set(ours) if everything else ours - _needed(images)) & set(images)
        return sorted(doomed, key=lambda i: -_depth(images, i))

    @contextlib.contextmanager
    def _locked(self, name: str, mode: int) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / name, "a+") as fh:
            fcntl.flock(fh, mode)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _try_exclusive(self) -> Iterator[bool]:
        """Exclusive if no run holds `active()` (this process's own hold included), else False."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "active.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _needed(images: dict[str, StoredImage]) -> set[str]:
    """Every named image and its whole parent chain."""
    needed: set[str] = set()
    for image in images.values():
        current = image.id if image.names else ""
        while current and current in images and current not in needed:
            needed.add(current)
            current = images[current].parent
    return needed


def _depth(images: dict[str, StoredImage], image_id: str) -> int:
    depth, current = 0, images[image_id].parent
    while current in images and depth < 10_000:
        depth, current = depth + 1, images[current].parent
    return depth


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def _parse_size(text: str) -> int:
    """'12.3 MB' / '12.3MB' (podman and docker print decimal units)."""
    number = text.strip().rstrip("BbKkMmGgTt ")
    unit = text.strip()[len(number) :].strip().lower() or "b"
    try:
        return int(float(number) * _UNITS.get(unit, 1))
    except ValueError:
        return 0
