"""Storage hygiene: a ledger of the images this tool created in a local image store (buildah's
storage through podman, or docker's), and pruning that never touches anything else.

The ledger holds each built image and its parent chain (the layer cache) down to the base image;
bases stay the user's, like every image the tool did not build. After a good run the images a
build superseded lose their tool-made tags, and every ledger image that no tagged image or
container still needs is removed, so storage holds one cached chain per image instead of one per
build. One run at a time uses a store (a lock that names its holder), so pruning never pulls an
intermediate image out from under a build in progress.

Several checkouts may share one store. The ledger records which checkout (project root and report
path) recorded each image, and no pruning removes or untags an image (or its parent chain) that the
report of a checkout still on disk names: a build in one checkout never takes away what another
one built and has not pushed yet.

A run also leaves a marker (runs/<pid>.json: its owner token and the builder containers that
existed before it). A run killed with SIGKILL cannot remove the working containers its builds
left; the next run on the store, or `invoke clean`, removes the ones that appeared after it started.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild import report
from moltbuild.errors import MoltbuildError
from moltbuild.files import write_atomic
from moltbuild.system import owners
from moltbuild.system.locks import held

if TYPE_CHECKING:
    from moltbuild.smoke.run import ContainerRuntime

LEDGER = "created.json"
RUNS = "runs"


@dataclass(frozen=True)
class Owner:
    """The checkout a ledger entry belongs to: its project root and its build report."""

    root: str
    report: str

    @classmethod
    def of(cls, root: Path, report_path: Path | None = None) -> Owner:
        return cls(str(root), str(report_path or report.default_path(root)))


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
    def __init__(self, runtime: ContainerRuntime, state_dir: Path, owner: Owner | None = None):
        self.rt = runtime
        self.state_dir = state_dir
        self.owner = owner

    # -- inventory -----------------------------------------------------------------------------

    def inventory(self) -> dict[str, StoredImage]:
        """Every image with its parent and names: one `podman images` call (docker: two)."""
        rows = self._podman_rows() if self.rt.argv[0] == "podman" else self._docker_rows()
        images = {}
        for image_id, parent, names in rows:
            image = StoredImage(_hex(image_id), _hex(parent or ""), tuple(names or ()))
            images[image.id] = image
        return images

    def _podman_rows(self) -> list[tuple[str, str | None, list[str] | None]]:
        out = self.rt("images", "--all", "--format", "json", mutates=False, timeout=120).stdout
        return [(i["Id"], i.get("ParentId"), i.get("Names")) for i in json.loads(out or "[]") or []]

    def _docker_rows(self) -> list[tuple[str, str | None, list[str] | None]]:
        ids = self.rt("images", "--all", "--quiet", "--no-trunc", mutates=False, timeout=120).stdout.split()
        if not ids:
            return []
        out = self.rt("image", "inspect", *sorted(set(ids)), mutates=False, check=False, timeout=120).stdout
        return [(i["Id"], i.get("Parent"), i.get("RepoTags")) for i in json.loads(out or "[]") or []]

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

    def _load(self) -> tuple[set[str], dict[str, set[Owner]]]:
        try:
            data = json.loads((self.state_dir / LEDGER).read_text())
            ids = set(data.get("images", []))
            rows = data.get("owners", {}).items()
            return ids, {i: {Owner(*pair) for pair in pairs} for i, pairs in rows if i in ids}
        except (OSError, ValueError, AttributeError, TypeError):
            return set(), {}

    def ledger(self) -> set[str]:
        return self._load()[0]

    def owners(self) -> dict[str, set[Owner]]:
        """Image ID -> the checkouts that recorded it (an image from an older ledger has none)."""
        return self._load()[1]

    def _write_ledger(self, ids: Iterable[str], owned: dict[str, set[Owner]] | None = None) -> None:
        ids = sorted(ids)
        owned = self.owners() if owned is None else owned
        rows = {i: sorted([o.root, o.report] for o in owned[i]) for i in ids if owned.get(i)}
        write_atomic(self.state_dir / LEDGER, json.dumps({"images": ids, "owners": rows}, indent=1) + "\n")

    def record(self, images: dict[str, StoredImage], built: Iterable[str]) -> None:
        """Add built images with their parent chain, down to the first image we did not create
        (a base: pulled images stay the user's), each owned (also) by this store's checkout.
        `images`: the inventory now. Like `prune`, call it inside `exclusive()`: that lock is what
        keeps the ledger's writers apart."""
        ours, owned = self._load()
        new: set[str] = set()
        for start in map(_hex, built):
            current = start
            while current in images and current not in new:
                if current != start and images[current].names and current not in ours:
                    break
                new.add(current)
                current = images[current].parent
        self._write_ledger(ours | new, self._claimed(owned, new))

    def claim(self, built: Iterable[str]) -> None:
        """This checkout also owns `built` (images already in the ledger: a full cache hit)."""
        ours, owned = self._load()
        self._write_ledger(ours, self._claimed(owned, {_hex(b) for b in built} & ours))

    def _claimed(self, owned: dict[str, set[Owner]], ids: set[str]) -> dict[str, set[Owner]]:
        if self.owner:
            for image_id in ids:
                owned.setdefault(image_id, set()).add(self.owner)
        return owned

    def protected(self, images: dict[str, StoredImage], *, others_only: bool = False) -> set[str]:
        """What the report of a checkout still on disk names, with the whole parent chain. A
        report that cannot be read protects every image its checkout recorded."""
        owned = self.owners()
        named: set[str] = set()
        for owner in {o for group in owned.values() for o in group}:
            if (others_only and owner == self.owner) or not Path(owner.root).is_dir():
                continue  # the checkout is gone: nothing of it needs protecting
            named |= _named_by(owner, owned)
        return _chains(images, named)

    # -- a run's working containers ------------------------------------------------------------

    def _marker(self) -> Path:
        return self.state_dir / RUNS / f"{os.getpid()}.json"

    def begin_run(self, containers: set[str]) -> None:
        """Mark this run as the store's user, with the builder containers that existed before it."""
        self._marker().parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"owner": owners.token(), "containers": sorted(containers)})
        write_atomic(self._marker(), text + "\n")

    def end_run(self) -> None:
        self._marker().unlink(missing_ok=True)

    def left_by_dead_runs(self, containers: set[str]) -> tuple[set[str], list[Path]]:
        """Of `containers` (the builder containers now), those that appeared after a run that is
        gone started (its marker is still here); and those markers, to drop once they are removed."""
        left: set[str] = set()
        markers = []
        for path in sorted((self.state_dir / RUNS).glob("*.json")):
            try:
                data = json.loads(path.read_text())
                owner, before = str(data["owner"]), set(data["containers"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not owners.alive(owner):
                left |= containers - before
                markers.append(path)
        return left, markers

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
        ours, after = self.ledger() - self.protected(images), dict(images)
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
        if everything:  # every image of this checkout, and what no checkout's report names
            doomed = ours - self.protected(images, others_only=True)
        else:
            doomed = ours - _needed(images) - self.protected(images)
        doomed &= set(images)
        return sorted(doomed, key=lambda i: -_depth(images, i))


def _needed(images: dict[str, StoredImage]) -> set[str]:
    """Every named image and its whole parent chain."""
    return _chains(images, {image.id for image in images.values() if image.names})


def _chains(images: dict[str, StoredImage], starts: set[str]) -> set[str]:
    """`starts` (those in `images`) and every parent of theirs."""
    found: set[str] = set()
    for start in starts:
        current = start
        while current and current in images and current not in found:
            found.add(current)
            current = images[current].parent
    return found


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


def _named_by(owner: Owner, owned: dict[str, set[Owner]]) -> set[str]:
    """The images the owner's report names; every image it recorded when that cannot be read."""
    try:
        records = report.read(Path(owner.report)) if Path(owner.report).is_file() else []
    except (MoltbuildError, OSError):
        return {i for i, group in owned.items() if owner in group}
    return {_hex(r.image_id) for r in records if r.image_id}
