"""What the deployment shows init: the kustomizations under k8s/, each one's `images:` entries, and
the workloads they deploy with their containers' images.

The one place init reads the kustomization tree; `read_deployment` is its whole interface. It
follows kustomize where kustomize is strict (a folder listed without a kustomization is not
read, a `kind: List` holds its objects in items:, a kustomization's namespace and name prefix or
suffix apply to what it lists) and notes, never fails on, what kustomize would refuse: init
surveys a repository it does not own yet."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moltbuild.adopt.recipes import SKIP_DIRS
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.k8s.manifests import KUSTOMIZATION_NAMES, WORKLOAD_KINDS, kustomization_file


@dataclass(frozen=True)
class Container:
    name: str
    image: str  # as the manifest writes it: ghcr.io/o/api:latest


@dataclass(frozen=True)
class Workload:
    kind: str  # one of k8s.manifests.WORKLOAD_KINDS
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
    """k8s/kustomization.y(a)ml and what it lists; without one, every kustomization under k8s/."""
    walk = _Walk(root, Deployment())
    for path in find_kustomizations(root):
        walk.found.kustomizations.append(walk.rel(path))
        walk.found.workloads += walk.kustomization(path)
    return walk.found


def find_kustomizations(root: Path) -> list[Path]:
    """k8s/kustomization.y(a)ml; without one, every kustomization under k8s/, shallowest first."""
    k8s = root / "k8s"
    top = kustomization_file(k8s)
    if top or not k8s.is_dir():
        return [top] if top else []
    found = [p for p in k8s.rglob("*") if p.name in KUSTOMIZATION_NAMES and p.is_file()]
    found = [p for p in found if not SKIP_DIRS.intersection(p.relative_to(root).parts)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def _field(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]...; None where a level is missing or not a mapping (a manifest is not checked)."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _containers(doc: dict[str, Any]) -> tuple[Container, ...]:
    spec = _field(doc, "spec", "jobTemplate", "spec") if doc["kind"] == "CronJob" else _field(doc, "spec")
    pod = _field(spec, "template", "spec")
    listed = [_field(pod, "initContainers"), _field(pod, "containers")]
    found = [c for items in listed if isinstance(items, list) for c in items]
    return tuple(Container(str(c.get("name", "")), str(c["image"])) for c in found if _field(c, "image"))


def _objects(path: Path) -> list[Any]:
    """The documents of a manifest file, a `kind: List`'s items in its place (as kustomize reads it)."""
    docs = []
    for doc in load_yaml(path, multi=True):
        items = _field(doc, "items") if _field(doc, "kind") == "List" else None
        docs += items if isinstance(items, list) else [doc]
    return docs


@dataclass
class _Walk:
    """Reads kustomizations and the files they list, recursively, each once."""

    root: Path
    found: Deployment
    seen: set[Path] = field(default_factory=set)

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def first_time(self, path: Path) -> bool:
        new = path.resolve() not in self.seen
        self.seen.add(path.resolve())
        return new

    def kustomization(self, path: Path) -> list[Workload]:
        if not self.first_time(path):
            return []
        rel = self.rel(path)
        doc = load_yaml(path)
        if not isinstance(doc, dict):
            raise ConfigError(
                f"{path}: not a kustomization (a mapping with resources: and images:); "
                "fix it or move it out of k8s/"
            )
        for index, entry in enumerate(self.listed(doc, "images", rel)):
            if isinstance(entry, dict) and entry.get("name"):
                self.found.images.append(ImageEntry(str(entry["name"]), rel, index))
            else:
                self.found.notes.append(f"{rel} images[{index}] has no name: skipped")
        workloads = []
        for key in ("resources", "bases", "components"):
            for item in self.listed(doc, key, rel):
                workloads += self.resource(path.parent, str(item), rel)
        return [_renamed(w, doc) for w in workloads]

    def listed(self, doc: dict[str, Any], key: str, rel: str) -> list[Any]:
        value = doc.get(key)
        if value is None or isinstance(value, list):
            return value or []
        self.found.notes.append(f"{rel}: `{key}` is not a list: not read")
        return []

    def resource(self, base: Path, item: str, owner: str) -> list[Workload]:
        target = base / item
        if target.is_file():
            return self.manifests(target)
        inner = kustomization_file(target) if target.is_dir() else None
        if inner:
            return self.kustomization(inner)
        why = "a folder without a kustomization (kustomize refuses it: add one)" if target.is_dir() else None
        self.found.notes.append(f"{owner} lists {item!r}, {why or 'which is not here (remote?)'}: not read")
        return []

    def manifests(self, path: Path) -> list[Workload]:
        if not self.first_time(path):
            return []
        found = []
        for doc in _objects(path):
            if isinstance(doc, dict) and doc.get("kind") in WORKLOAD_KINDS:
                name, namespace = _field(doc, "metadata", "name"), _field(doc, "metadata", "namespace")
                kind, file = str(doc["kind"]), self.rel(path)
                found.append(Workload(kind, str(name or "?"), str(namespace or ""), file, _containers(doc)))
        return found


def _renamed(workload: Workload, kustomization: dict[str, Any]) -> Workload:
    """As kustomize renders it: the kustomization's namespace, its name prefix and suffix."""
    prefix, suffix = kustomization.get("namePrefix") or "", kustomization.get("nameSuffix") or ""
    namespace = str(kustomization.get("namespace") or workload.namespace)
    return replace(workload, name=f"{prefix}{workload.name}{suffix}", namespace=namespace)
