"""Storage hygiene: a ledger of the images this tool created in a local image store (buildah's
storage through podman, or docker's), and pruning that never touches anything else.

The ledger holds each built image and its parent chain (the layer cache) down to the base image;
bases stay the user's, like every image the tool did not build. After a good run the images a
build superseded lose their tool-made tags, and every ledger image that no tagged image or
container still needs is removed, so storage holds one cached chain per image instead of one per
build. One run at a time uses a store (a lock that names its holder), so pruning never pulls an
intermediate image out from under a build in progress.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild.files import write_atomic
from moltbuild.system.locks import held

if TYPE_CHECKING:
    from moltbuild.smoke.run import ContainerRuntime

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
        """Every image with its parent and names: one `podman images` call (docker: two)."""
        if self.rt.argv[0] == "podman":
            out = self.rt("images", "--all", "--format", "json", mutates=False, timeout=120).stdout
            rows = [(i["Id"], i.get("ParentId"), i.get("Names")) for i in json.loads(out or "[]") or []]
        else:
            ids = self.rt(
                "images", "--all", "--quiet", "--no-trunc", mutates=False, timeout=120
            ).stdout.split()
            out = "[]"
            if ids:
                out = self.rt(
                    "image", "inspect", *sorted(set(ids)), mutates=False, check=False, timeout=120
                ).stdout
            rows = [(i["Id"], i.get("Parent"), i.get("RepoTags")) for i in json.loads(out or "[]") or []]
        images = {}
        for image_id, parent, names in rows:
            image = StoredImage(_hex(image_id), _hex(parent or ""), tuple(names or ()))
            images[image.id] = image
        return images

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
        write_atomic(self.state_dir / LEDGER, json.dumps({"images": sorted(ids)}, indent=1) + "\n")

    def record(self, images: dict[str, StoredImage], built: Iterable[str]) -> None:
        """Add built images with their parent chain, down to the first image we did not create
        (a base: pulled images stay the user's). `images`: the inventory now. Like `prune`,
        call it inside `exclusive()`: that lock is what keeps the ledger's writers apart."""
        ours, new = self.ledger(), set()
        for start in map(_hex, built):
            current = start
            while current in images and current not in new:
                if current != start and images[current].names and current not in ours:
                    break
                new.add(current)
                current = images[current].parent
        self._write_ledger(ours | new)

    # -- runs and pruning ----------------------------------------------------------------------

    def exclusive(
        self, what: str, say: Callable[[str], None], *, timeout: float = 3600
    ) -> contextlib.AbstractContextManager:
        """One run at a time per store. Builds that share a storage race in buildah's layer cache
        (one sees the other's half-committed `<hex>-tmp` image and records that name in the
        image's history, so the same commit gets two digests); pruning needs it too."""
        where = f"the image store at {self.state_dir.parent}"
        return held(self.state_dir / "run.lock", what, where, say, timeout=timeout)

    def _supersede(self, images: dict[str, StoredImage], keep: dict[str, set[str]]) -> dict[str, StoredImage]:
        """Tool-made names of each repository in `keep`, other than the ones kept, are removed from
        ledger images: the build they named was superseded (the registry still has it). Returns
        the inventory as it is afterwards."""
        ours, after = self.ledger(), dict(images)
        for image in images.values():
            stale = [
                n
                for n in (image.names if image.id in ours else ())
                if n.rsplit(":", 1)[0] in keep and n not in keep[n.rsplit(":", 1)[0]]
            ]
            if not stale:
                continue
            if self.rt.argv[0] == "docker":
                self.rt("image", "rm", "--no-prune", *stale, check=False, timeout=60)
            else:
                self.rt("untag", image.id, *stale, check=False, timeout=60)
            after[image.id] = StoredImage(
                image.id, image.parent, tuple(n for n in image.names if n not in stale)
            )
        return after

    def prune(
        self,
        *,
        everything: bool = False,
        supersede: dict[str, set[str]] | None = None,
        images: dict[str, StoredImage] | None = None,
    ) -> list[str]:
        """Remove ledger images nothing needs (with `everything`, every ledger image), after
        untagging what `supersede` names. `images`: a fresh inventory, if the caller has one.
        Call it inside `exclusive()`."""
        images = images if images is not None else self.inventory()
        if supersede:
            images = self._supersede(images, supersede)
        order = self.doomed(images, everything=everything)
        left = set(images)
        if order:
            res = self.rt("rmi", *(["--force"] if everything else []), *order, check=False, timeout=600)
            left = set(self.inventory()) if not res.ok else left - set(order)
        self._write_ledger(self.ledger() & left)
        return [i for i in order if i not in left]

    def doomed(self, images: dict[str, StoredImage] | None = None, *, everything: bool = False) -> list[str]:
        """What `prune` would remove, children before parents."""
        images = images if images is not None else self.inventory()
        ours = self.ledger()
        doomed = (set(ours) if everything else ours - _needed(images)) & set(images)
        return sorted(doomed, key=lambda i: -_depth(images, i))


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
