"""The deployment model: a kustomization tree loaded once, as kustomize builds it, without a process.

Holds the levels (each kustomization or component, with its `images:` entries, their file and
index), the objects their resources hold (`kind: List` items included; `namespace:`, `namePrefix:`
and `nameSuffix:` applied), the workloads, and each container with the image kustomize renders for
it and the `images:` entries that produced it. The rules are kustomize's own (api/internal/image,
api/filters/imagetag, v5): a level's entries apply one after the other, to every `containers` and
`initContainers` image; a base's entries apply before the level that lists it, a component's after
its parent's resources and before its parent's own entries. An entry's `name` matches an image's
name exactly (`nginx` is not `docker.io/library/nginx`), whatever its tag and digest; a new tag, a
digest or both replace the old tag and digest. Patches and generators are not applied (`notes`).
A lenient load (init's survey of a repository it does not own yet) notes, instead of raising, each
refusal about one listed item: a missing path, a folder without a kustomization, a key that is not
a list, an `images:` entry without a name."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.k8s.images import ImageEntry

KUSTOMIZATION_NAMES = ("kustomization.yml", "kustomization.yaml", "Kustomization")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
# kustomize builds a remote resource from git or HTTP: never fetched here
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|(?:github|gitlab)\.com/|bitbucket\.org/)", re.I)
# What only a real kustomize applies: named in a note
_NOT_APPLIED = (
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "replacements",
    "configMapGenerator",
    "secretGenerator",
    "helmCharts",
)
CLUSTER_SCOPED = {  # kinds kustomize (and the dev namespace) leave without a namespace
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
_NULL = ("", "~", "null", "Null", "NULL")  # every scalar is read as text: these are YAML's null


@dataclass(frozen=True)
class Level:
    """A kustomization or component, in the order kustomize applies its `images:`."""

    file: Path
    component: bool
    images: tuple[ImageEntry, ...]


@dataclass(frozen=True)
class Container:
    """A container of a workload: the image its file writes and the one kustomize renders."""

    source: str  # the workload's file, relative to the project root
    kind: str
    workload: str
    name: str
    init: bool
    written: str
    image: str
    steps: tuple[tuple[ImageEntry, str], ...] = ()  # each entry that matched, and what it made

    @property
    def entry(self) -> ImageEntry | None:
        """The `images:` entry that produced the rendered image; None: no entry matched it."""
        return self.steps[-1][0] if self.steps else None

    @property
    def label(self) -> str:
        return f"{self.source} {self.kind} {self.workload} container {self.name}"

    def before(self, level: Path) -> str:
        """The image as it reaches the `images:` of the kustomization `level`."""
        earlier = [made for entry, made in self.steps if entry.file != level]
        return earlier[-1] if earlier else self.written


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment, StatefulSet, DaemonSet, Job or CronJob
    name: str
    namespace: str  # "" when neither the object nor a kustomization sets one
    source: str  # the file it comes from, relative to the project root: "k8s/api/deployment.yml"
    pod: Mapping[str, Any] = field(repr=False)  # the pod spec (a CronJob's: its job template's)

    @property
    def label(self) -> str:
        return f"{self.source} {self.kind} {self.name}"

    def containers(self) -> list[dict[str, Any]]:
        return [c for c in self.pod.get("containers") or [] if isinstance(c, dict)]


@dataclass
class _Box:
    """A container as the build carries it: its mapping's image is rewritten in place."""

    spec: dict[str, Any]
    init: bool
    written: str
    twice: bool  # also where kustomize's field specs point: each entry applies a second time there
    steps: list[tuple[ImageEntry, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Object:
    source: Path
    doc: dict[str, Any]
    kind: str
    namespace: str  # after the kustomizations' `namespace:`
    name: str  # after their namePrefix/nameSuffix
    original: str  # the name the file gives it
    boxes: tuple[_Box, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Deployment:
    top: Path | None  # the top kustomization; None: every YAML file of a folder
    levels: tuple[Level, ...]  # in the order kustomize applies their images:, the top last
    objects: tuple[Object, ...]
    notes: tuple[str, ...]  # what kustomize would do and this model does not
    root: Path | None = None  # paths are shown relative to it

    def rel(self, path: Path) -> str:
        return _rel(self.root, path)

    @property
    def entries(self) -> tuple[ImageEntry, ...]:
        return tuple(e for level in self.levels for e in level.images)

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return tuple(_workload(o, self.rel(o.source)) for o in self.objects if o.kind in WORKLOAD_KINDS)

    @property
    def containers(self) -> tuple[Container, ...]:
        return tuple(
            Container(
                self.rel(o.source),
                o.kind,
                o.name,
                str(b.spec.get("name") or ""),
                b.init,
                b.written,
                str(b.spec["image"]),
                tuple(b.steps),
            )
            for o in self.objects
            if o.kind in WORKLOAD_KINDS
            for b in o.boxes
        )

    @property
    def remote(self) -> bool:
        """Some resource is remote: what it holds is unknown here."""
        return any("remote resource" in note for note in self.notes)


def _rel(root: Path | None, path: Path) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def kustomization_file(folder: Path) -> Path | None:
    return next((folder / n for n in KUSTOMIZATION_NAMES if (folder / n).is_file()), None)


def load(path: Path, root: Path | None = None, *, lenient: bool = False) -> Deployment:
    """The deployment of the kustomization `path` (a file, or a folder holding one). `root`: where
    paths in messages and `source` start. `lenient`: what kustomize refuses about one listed item
    is a note (the same one-line message) and the rest is still read."""
    top = path if path.is_file() or not path.is_dir() else kustomization_file(path)
    if top is None:
        raise ConfigError(f"{_rel(root, path)}/ has no kustomization.yml; add one, or pass the file")
    build = _Build(root, lenient)
    objects = build.kustomization(top, ())
    return Deployment(top, tuple(build.levels), tuple(objects), tuple(build.notes), root)


def load_files(folder: Path, root: Path | None = None) -> Deployment:
    """Every folder/**/*.y*ml, as a folder without a kustomization is read (no `images:` apply)."""
    files = sorted(p for p in folder.rglob("*.y*ml") if p.is_file())
    return Deployment(None, (), tuple(o for p in files for o in file_objects(p)), (), root)


def read_kustomization(kfile: Path, shown: str | None = None) -> dict[str, Any]:
    """The kustomization's mapping, every scalar as the text it is written as (a tag 0012345 is not
    the number 12345)."""
    shown = shown or str(kfile)
    docs = load_yaml(kfile, typ="base", multi=True)  # a leading `---` or comments are fine
    if len(docs) > 1:
        raise ConfigError(f"{shown}: {len(docs)} YAML documents; a kustomization is one")
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{shown}: not a kustomization (a mapping with resources: and images:)")
    return {k: None if isinstance(v, str) and v in _NULL else v for k, v in spec.items()}


def _raise(message: str) -> None:
    raise ConfigError(message)


def image_entries(
    spec: Mapping[str, Any], kfile: Path, shown: str | None = None, refuse: Callable[[str], None] = _raise
) -> tuple[ImageEntry, ...]:
    """The `images:` of a kustomization read by `read_kustomization`, checked; `refuse` gets what
    is wrong (raises by default), and what it lets pass is left out."""
    shown = shown or str(kfile)
    images = spec.get("images") or []
    if not isinstance(images, list):
        refuse(f"{shown}: `images` must be a list of name/newName/newTag/digest entries")
        return ()
    entries = (_image_entry(kfile, i, item, shown, refuse) for i, item in enumerate(images))
    return tuple(e for e in entries if e is not None)


def _image_entry(
    kfile: Path, index: int, item: Any, shown: str, refuse: Callable[[str], None]
) -> ImageEntry | None:
    values = (
        {k: v for k, v in item.items() if isinstance(v, str) and v not in _NULL}
        if isinstance(item, dict)
        else {}
    )
    if not values.get("name"):
        refuse(f"{shown}: images[{index}] needs a `name` (the image name the manifests use)")
        return None
    keys = ("name", "newName", "newTag", "digest", "tagSuffix")
    return ImageEntry(kfile, index, *(values.get(k, "") for k in keys))


@dataclass
class _Build:
    root: Path | None
    lenient: bool = False
    levels: list[Level] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kustomization(
        self, kfile: Path, stack: tuple[Path, ...], into: list[Object] | None = None
    ) -> list[Object]:
        """The objects of `kfile`, its own entries and names applied. A component (`into`) adds its
        resources to its parent's objects and transforms them all, as kustomize does."""
        shown = _rel(self.root, kfile)
        spec = read_kustomization(kfile, shown)
        objects = [] if into is None else into
        stack = (*stack, kfile.parent.resolve())
        for key in ("resources", "bases", "components"):
            for entry in _paths(spec, key, shown, self.refuse):
                self.entry(kfile, entry, stack, objects, component=key == "components")
        level = Level(kfile, into is not None, image_entries(spec, kfile, shown, self.refuse))
        self.levels.append(level)
        _transform(level, [b for o in objects for b in o.boxes])
        self.notes += [f"{shown}: {key} not applied" for key in _NOT_APPLIED if spec.get(key)]
        objects[:] = [_renamed(o, spec) for o in objects]
        return objects

    def refuse(self, message: str) -> None:
        """Kustomize refuses it: an error, or in a lenient load a note."""
        if not self.lenient:
            raise ConfigError(message)
        self.notes.append(message)

    def entry(
        self, kfile: Path, entry: str, stack: tuple[Path, ...], objects: list[Object], *, component: bool
    ) -> None:
        shown = _rel(self.root, kfile)
        if _REMOTE.match(entry) or "?ref=" in entry:
            self.notes.append(f"{shown}: remote resource {entry} not read (only local files are)")
            return
        path = (kfile.parent / entry).resolve()
        if path.is_dir():
            inner = kustomization_file(path)
            if path in stack:
                self.refuse(f"{shown}: {entry} leads back to {_rel(self.root, path)}/; remove the loop")
            elif inner is None:
                where = _rel(self.root, path)
                self.refuse(f"{where}/ has no kustomization.yml; add one, or list its files in resources:")
            elif component:
                self.kustomization(inner, stack, objects)
            else:
                objects += self.kustomization(inner, stack)
        elif not path.is_file():
            what = "component" if component else "resource"
            self.refuse(f"{shown}: {what} {entry!r} does not exist ({_rel(self.root, path)}); fix the path")
        else:
            objects += file_objects(path)


def _transform(level: Level, boxes: list[_Box]) -> None:
    """The level's entries, one after the other, on every container image (kustomize runs one
    transformer per entry)."""
    for image in level.images:
        # kustomize's legacy filter (every container), then its field specs (pod templates): a
        # `tagSuffix` is added twice to a Deployment's image, once to a CronJob's
        for box in [*boxes, *(b for b in boxes if b.twice)]:
            if image.matches(str(box.spec["image"])):
                box.spec["image"] = image.apply(str(box.spec["image"]))
                box.steps.append((image, box.spec["image"]))


def _paths(spec: Mapping[str, Any], key: str, shown: str, refuse: Callable[[str], None]) -> list[str]:
    entries = spec.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        refuse(f"{shown}: {key} must be a list of paths, e.g. [deployment.yml, api/]")
        return []
    return entries


def documents(path: Path, text: str | None = None) -> list[Any]:
    """The documents of a manifest file (`text`: its text, read elsewhere); a `kind: List` (what
    `kubectl get -o yaml` writes) gives its items."""
    docs = load_yaml(path, text=text, multi=True)
    return [i for d in docs for i in (d.get("items") or [] if _is_list(d) else [d])]


def file_objects(path: Path) -> list[Object]:
    """The objects of a manifest file."""
    objects = []
    for doc in documents(path):
        if isinstance(doc, dict) and doc.get("kind"):
            meta = mapping(doc.get("metadata"))
            name = str(meta.get("name") or "")
            boxes = () if doc["kind"] == "CustomResourceDefinition" else tuple(_boxes(doc))
            objects.append(
                Object(path, doc, str(doc["kind"]), str(meta.get("namespace") or ""), name, name, boxes)
            )
    return objects


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list)


_FIELD_SPECS = (("spec",), ("spec", "template", "spec"))  # where kustomize's images field specs look


def _boxes(node: Any, path: tuple[str, ...] = ()) -> Iterator[_Box]:
    """Every container with an image, wherever the object holds `containers` or `initContainers`
    (kustomize's legacy image filter looks everywhere too)."""
    if isinstance(node, list):
        for item in node:
            yield from _boxes(item, (*path, "[]"))
        return
    for key, value in node.items() if isinstance(node, dict) else ():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for c in value:
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    yield _Box(c, key == "initContainers", c["image"], path in _FIELD_SPECS)
        else:
            yield from _boxes(value, (*path, str(key)))


def _renamed(obj: Object, spec: Mapping[str, Any]) -> Object:
    namespace = obj.namespace
    if spec.get("namespace") and obj.kind not in CLUSTER_SCOPED:
        namespace = str(spec["namespace"])
    name = f"{spec.get('namePrefix') or ''}{obj.name}{spec.get('nameSuffix') or ''}"
    return dataclasses.replace(obj, namespace=namespace, name=name)


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def pod_spec(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    spec = mapping(doc.get("spec"))
    if kind == "CronJob":
        spec = mapping(mapping(spec.get("jobTemplate")).get("spec"))
    return mapping(mapping(spec.get("template")).get("spec"))


def _workload(obj: Object, source: str) -> Workload:
    return Workload(obj.kind, obj.name, obj.namespace, source, pod_spec(obj.kind, obj.doc))
