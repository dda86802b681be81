"""The workloads of k8s/ as Kubernetes would run them, each with the file it comes from.

With `kustomize` or `kubectl` on PATH, k8s/ is rendered (`kustomize build k8s`, `kubectl kustomize
k8s`), so patches, overlays, components and `images:` apply. Without either, `resources:` is
followed from k8s/kustomization.yml: files, and folders with their own kustomization (remote URLs
are skipped with a note). Without a kustomization, every k8s/**/*.y*ml is read. Either way the
files are walked too: a rendered object is named by the file it came from.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.refs import ImageRef
from moltbuild.system import state
from moltbuild.system.processes import Runner

KUSTOMIZATION_NAMES = ("kustomization.yml", "kustomization.yaml", "Kustomization")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
# kustomize builds a remote resource from git or HTTP: never fetched by the walk
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|(?:github|gitlab)\.com/|bitbucket\.org/)", re.I)
# What only a real kustomize applies: named in a note when the walk stands in for it
_NOT_APPLIED = (
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "replacements",
    "configMapGenerator",
    "secretGenerator",
    "helmCharts",
)
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
_RENDER_TIMEOUT_S = 120


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


@dataclass(frozen=True)
class Manifests:
    workloads: tuple[Workload, ...] = ()
    # (namespace, name) -> data; namespace "default" when none is set
    config_maps: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    # `images:` entries of the kustomizations: the name manifests use -> the names they become
    image_names: Mapping[str, frozenset[str]] = field(default_factory=dict)
    how: str = ""  # "rendered by kubectl kustomize k8s", "read from k8s/kustomization.yml and ..."
    notes: tuple[str, ...] = ()  # what the reading could not do: remote resources, patches

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get((namespace or "default", name))

    def running(self, image: str) -> list[tuple[Workload, dict[str, Any]]]:
        """Every (workload, container) whose container runs `image`, whatever its tag or digest."""
        names = {_bare(image), *self.image_names.get(_bare(image) or "", ())} - {None}
        return [(w, c) for w in self.workloads for c in w.containers() if _bare(c.get("image")) in names]


def _bare(image: Any) -> str | None:
    try:
        return ImageRef.parse(str(image or ""), "image").bare().name
    except ConfigError:
        return None


@dataclass(frozen=True)
class _Object:
    source: Path
    doc: dict[str, Any]
    kind: str
    namespace: str  # after the kustomizations' `namespace:`
    name: str  # after their namePrefix/nameSuffix
    original: str  # the name the file gives it


@dataclass
class _Walk:
    root: Path
    images: dict[str, set[str]] = field(default_factory=dict)
    unapplied: list[str] = field(default_factory=list)  # what kustomize would do and the walk does not

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def kustomization_file(folder: Path) -> Path | None:
    return next((folder / n for n in KUSTOMIZATION_NAMES if (folder / n).is_file()), None)


def load_manifests(project_root: Path, runner: Runner | None = None) -> Manifests:
    """The workloads and ConfigMaps of `project_root`/k8s. `runner`: render with kustomize or
    kubectl when the run's PATH has either; None reads the files only (no process)."""
    root = project_root.resolve()
    k8s = root / "k8s"
    if not k8s.is_dir():
        return Manifests(how="no k8s/ folder")
    tool = _renderer(runner) if runner is not None and kustomization_file(k8s) else None
    unrendered = "no kustomize or kubectl on PATH" if runner is not None else "not rendered"
    return _cached(root, _stamp(k8s), tool, runner if tool else None, unrendered)


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file under `folder` with its mtime and size: any edit reads the manifests again."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def _renderer(runner: Runner) -> tuple[str, ...] | None:
    search = runner.environ.get("PATH") or os.defpath
    for tool, verb in (("kustomize", "build"), ("kubectl", "kustomize")):
        found = shutil.which(tool, path=search)
        if found:
            return (found, verb)
    return None


@state.command_cache(maxsize=8)  # every image of a plan reads the same manifests: once per change
def _cached(
    root: Path,
    stamp: tuple[tuple[str, int, int], ...],
    tool: tuple[str, ...] | None,
    runner: Runner | None,
    unrendered: str,  # why, when nothing renders
) -> Manifests:
    walk = _Walk(root)
    k8s = root / "k8s"
    top = kustomization_file(k8s)
    if top is None:
        files = sorted(p for p in k8s.rglob("*.y*ml") if p.is_file())
        objects = [o for p in files for o in _file_objects(p)]
        return _manifests(objects, walk, f"read from every {walk.rel(k8s)}/**/*.y*ml (no kustomization)")
    objects = _kustomization(walk, k8s, ())
    if tool is None or runner is None:
        how = f"read from {walk.rel(top)} and its resources ({unrendered})"
        return _manifests(objects, walk, how, walk.unapplied)
    rendered = _render(top, tool, runner, walk)
    return _manifests(_sourced(rendered, objects, top), walk, f"rendered by {_shown(tool)} {walk.rel(k8s)}")


def _shown(tool: tuple[str, ...]) -> str:
    return f"{Path(tool[0]).name} {tool[1]}"


# === the walk ====================================================================================


def _kustomization(walk: _Walk, folder: Path, stack: tuple[Path, ...]) -> list[_Object]:
    """The objects of the kustomization in `folder`, its own namespace and name changes applied."""
    kfile = kustomization_file(folder)
    if kfile is None:
        raise ConfigError(
            f"{walk.rel(folder)}/ has no kustomization.yml; add one, or list its files in resources:"
        )
    spec = _read_kustomization(kfile, walk)
    objects: list[_Object] = []
    for key in ("resources", "bases", "components"):
        for entry in _paths(spec, key, kfile, walk):
            objects += _entry(walk, folder, entry, kfile, (*stack, folder.resolve()))
    _remember_images(spec, kfile, walk)
    walk.unapplied += [f"{walk.rel(kfile)}: {key} not applied" for key in _NOT_APPLIED if spec.get(key)]
    return [_renamed(o, spec) for o in objects]


def _read_kustomization(kfile: Path, walk: _Walk) -> dict[str, Any]:
    docs = load_yaml(kfile, multi=True)  # a leading `---` or comments are fine
    if len(docs) > 1:
        raise ConfigError(f"{walk.rel(kfile)}: {len(docs)} YAML documents; a kustomization is one")
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{walk.rel(kfile)}: not a kustomization (a mapping with resources:)")
    return spec


def _paths(spec: dict[str, Any], key: str, kfile: Path, walk: _Walk) -> list[str]:
    entries = spec.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{walk.rel(kfile)}: {key} must be a list of paths, e.g. [deployment.yml, api/]")
    return entries


def _entry(walk: _Walk, folder: Path, entry: str, kfile: Path, stack: tuple[Path, ...]) -> list[_Object]:
    if _REMOTE.match(entry) or "?ref=" in entry:
        walk.unapplied.append(f"{walk.rel(kfile)}: remote resource {entry} not read (only local files are)")
        return []
    path = (folder / entry).resolve()
    if path.is_dir():
        if path in stack:
            raise ConfigError(f"{walk.rel(kfile)}: {entry} leads back to {walk.rel(path)}/; remove the loop")
        return _kustomization(walk, path, stack)
    if not path.is_file():
        raise ConfigError(
            f"{walk.rel(kfile)}: resource {entry!r} does not exist ({walk.rel(path)}); fix the path"
        )
    return _file_objects(path)


def _file_objects(path: Path) -> list[_Object]:
    objects = []
    docs = load_yaml(path, multi=True)
    # a `kind: List` (what `kubectl get -o yaml` writes) holds its objects in items:
    docs = [i for d in docs for i in (d.get("items") or [] if _is_list(d) else [d])]
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind"):
            meta = _mapping(doc.get("metadata"))
            name = str(meta.get("name") or "")
            objects.append(_Object(path, doc, str(doc["kind"]), str(meta.get("namespace") or ""), name, name))
    return objects


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list)


def _renamed(obj: _Object, spec: dict[str, Any]) -> _Object:
    namespace = obj.namespace
    if spec.get("namespace") and obj.kind not in _CLUSTER_SCOPED:
        namespace = str(spec["namespace"])
    name = f"{spec.get('namePrefix') or ''}{obj.name}{spec.get('nameSuffix') or ''}"
    return _Object(obj.source, obj.doc, obj.kind, namespace, name, obj.original)


def _remember_images(spec: dict[str, Any], kfile: Path, walk: _Walk) -> None:
    images = spec.get("images") or []
    if not isinstance(images, list):
        raise ConfigError(f"{walk.rel(kfile)}: images must be a list of name/newName/newTag entries")
    for entry in images:
        if isinstance(entry, dict) and entry.get("name") and entry.get("newName"):
            name, new = _bare(entry["name"]), _bare(entry["newName"])
            if name and new:
                walk.images.setdefault(name, set()).add(new)


# === rendering ===================================================================================


def _render(top: Path, tool: tuple[str, ...], runner: Runner, walk: _Walk) -> list[dict[str, Any]]:
    argv = [*tool, str(top.parent)]
    result = runner.run(argv, mutates=False, check=False, timeout=_RENDER_TIMEOUT_S)
    if not result.ok:
        why = _one_line(result.stderr or result.stdout)
        raise ConfigError(
            f"{walk.rel(top)}: {_shown(tool)} cannot render it ({why}); "
            f"fix the kustomization (`{_shown(tool)} {walk.rel(top.parent)}` shows the whole error)"
        )
    return [d for d in load_yaml(top, text=result.stdout, multi=True) if isinstance(d, dict)]


_KLOG = re.compile(r'^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] "command failed" err=<\s*')


def _one_line(said: str, limit: int = 300) -> str:
    """kustomize's `Error: ...` or kubectl's multi-line klog record, as one line."""
    lines = [line.strip() for line in said.splitlines() if line.strip() not in ("", ">", "`")]
    text = _KLOG.sub("", " ".join(lines)).removeprefix("Error: ") or "no message"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sourced(rendered: list[dict[str, Any]], walked: list[_Object], top: Path) -> list[_Object]:
    """The rendered objects, each with the file the walk found it in (the top kustomization for an
    object no file holds, e.g. one a generator made)."""
    exact = {(o.kind, o.namespace, o.name): o.source for o in walked}
    by_name: dict[tuple[str, str], set[Path]] = {}
    for o in walked:
        by_name.setdefault((o.kind, o.name), set()).add(o.source)
    objects = []
    for doc in rendered:
        kind = str(doc.get("kind") or "")
        meta = _mapping(doc.get("metadata"))
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        sources = by_name.get((kind, name), set())
        source = exact.get((kind, namespace, name)) or (next(iter(sources)) if len(sources) == 1 else top)
        objects.append(_Object(source, doc, kind, namespace, name, name))
    return objects


# === what the objects hold =======================================================================


def _manifests(objects: Iterable[_Object], walk: _Walk, how: str, unapplied: Iterable[str] = ()) -> Manifests:
    workloads, config_maps = [], {}
    originals = {}
    for obj in objects:
        if obj.kind in WORKLOAD_KINDS:
            workloads.append(_workload(obj, walk))
        elif obj.kind == "ConfigMap":
            values = {str(k): _text(v) for k, v in _mapping(obj.doc.get("data")).items()}
            config_maps[(obj.namespace or "default", obj.name)] = values
            originals[(obj.namespace or "default", obj.original)] = values
    # read from the files, a workload still names a ConfigMap as its file does (kustomize would
    # rename the reference along with the ConfigMap)
    config_maps = {**originals, **config_maps}
    images = {k: frozenset(v) for k, v in walk.images.items()}
    return Manifests(tuple(workloads), config_maps, images, how, tuple(unapplied))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _workload(obj: _Object, walk: _Walk) -> Workload:
    spec = _mapping(obj.doc.get("spec"))
    if obj.kind == "CronJob":
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    pod = _mapping(_mapping(spec.get("template")).get("spec"))
    return Workload(obj.kind, obj.name, obj.namespace, walk.rel(obj.source), pod)
