"""What the deployment shows init: the kustomizations under k8s/, each one's `images:` entries, and
the workloads they deploy with their containers' images as the manifests write them.

A thin view of the deployment model (k8s.deployment, the one reader of a kustomization tree),
loaded leniently: init surveys a repository it does not own yet, so what kustomize would refuse
about one listed item (a folder without a kustomization, a missing file, a `resources:` that is not
a list, an `images:` entry without a name) is a note, and the rest is still read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.adopt.recipes import SKIP_DIRS, readable_name
from moltbuild.errors import ConfigError
from moltbuild.k8s import deployment as model
from moltbuild.k8s.deployment import KUSTOMIZATION_NAMES, kustomization_file


@dataclass(frozen=True)
class Container:
    name: str
    image: str  # as the manifest writes it: ghcr.io/o/api:latest


@dataclass(frozen=True)
class Workload:
    kind: str  # one of k8s.deployment.WORKLOAD_KINDS
    name: str  # after the kustomizations' namePrefix/nameSuffix
    namespace: str  # "" when neither the object nor a kustomization sets one
    file: str  # relative to the root: k8s/api/deployment.yml
    containers: tuple[Container, ...]  # init containers first

    @property
    def label(self) -> str:
        return f"{self.file} {self.kind} {self.name}"


@dataclass(frozen=True)
class ImageEntry:
    name: str  # the entry's `name:`, as written
    source: str  # the kustomization listing it, relative to the root
    index: int  # its place in that `images:` list


@dataclass
class Deployment:
    kustomizations: list[str] = field(default_factory=list)  # the ones init started from
    images: list[ImageEntry] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not read, and why


def read_deployment(root: Path) -> Deployment:
    """k8s/kustomization.y(a)ml and what it lists; without one, every kustomization under k8s/
    (a base found on its own and through an overlay is read once)."""
    root = root.resolve()
    found = Deployment()
    read: set[str] = set()  # the files whose workloads and entries are already in `found`
    for path in find_kustomizations(root):
        loaded = model.load(path, root, lenient=True)
        found.kustomizations.append(loaded.rel(path))
        _add(found, loaded, read)
        read |= {loaded.rel(level.file) for level in loaded.levels}
        read |= {loaded.rel(o.source) for o in loaded.objects}
    found.notes += _shared_pins(root, found.images, read)
    return found


def _all_kustomizations(root: Path) -> list[Path]:
    """Every kustomization in the repository, outside dependency folders, by path."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and readable_name(d))
        found += [Path(folder, f) for f in sorted(files) if f in KUSTOMIZATION_NAMES]
    return found


def _pins_of(path: Path, root: Path, read: set[str]) -> list[tuple[str, str]]:
    """(image name, kustomization) for each `images:` entry of the kustomizations init did not read."""
    try:
        loaded = model.load(path, root, lenient=True)
    except ConfigError:
        return []  # not one init can read: it pins nothing here
    levels = [level for level in loaded.levels if loaded.rel(level.file) not in read]
    return [(e.name, loaded.rel(level.file)) for level in levels for e in level.images]


def _shared_pins(root: Path, images: list[ImageEntry], read: set[str]) -> list[str]:
    """A note for each image a second kustomization also pins: set-images edits one of them."""
    first: dict[str, str] = {}
    for entry in images:
        first.setdefault(entry.name, entry.source)
    seconds = [(e.name, e.source) for e in images]
    for path in _all_kustomizations(root):
        if path.relative_to(root).as_posix() not in read:
            seconds += _pins_of(path, root, read)
    notes = [
        f"{first[name]} and {source} both pin {name}: invoke k8s.set-images edits one per run "
        "(--kustomization picks it); keep the other in step"
        for name, source in seconds
        if first.get(name, source) != source
    ]
    return list(dict.fromkeys(notes))


def _add(found: Deployment, loaded: model.Deployment, read: set[str]) -> None:
    """What `loaded` holds from files not `read` yet. The outermost kustomization's entries come
    first (the top's, then each level's before its bases'): the entry kustomize applies last names
    where an image comes from."""
    levels = [level for level in reversed(loaded.levels) if loaded.rel(level.file) not in read]
    found.images += [ImageEntry(e.name, loaded.rel(lv.file), e.index) for lv in levels for e in lv.images]
    found.workloads += [w for w in _workloads(loaded) if w.file not in read]
    found.notes += [note for note in loaded.notes if note not in found.notes]


def find_kustomizations(root: Path) -> list[Path]:
    """k8s/kustomization.y(a)ml; without one, every kustomization under k8s/, shallowest first."""
    k8s = root / "k8s"
    top = kustomization_file(k8s)
    if top or not k8s.is_dir():
        return [top] if top else []
    found = [p for p in k8s.rglob("*") if p.name in KUSTOMIZATION_NAMES and p.is_file()]
    found = [
        p for p in found if not SKIP_DIRS.intersection(p.relative_to(root).parts) and readable_name(str(p))
    ]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def _workloads(loaded: model.Deployment) -> list[Workload]:
    """The model's workloads, each with its containers' images as written, init containers first."""
    containers: dict[tuple[str, str, str], list[model.Container]] = {}
    for c in loaded.containers:
        containers.setdefault((c.source, c.kind, c.workload), []).append(c)
    workloads = []
    for w in loaded.workloads:
        mine = sorted(containers.get((w.source, w.kind, w.name), []), key=lambda c: not c.init)
        shown = tuple(Container(c.name, c.written) for c in mine)
        workloads.append(Workload(w.kind, w.name, w.namespace, w.source, shown))
    return workloads
