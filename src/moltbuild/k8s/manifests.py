"""The workloads of k8s/ as Kubernetes would run them, each with the file it comes from.

With `kustomize` or `kubectl` on PATH, k8s/ is rendered (`kustomize build k8s`, `kubectl kustomize
k8s`), so patches, overlays, components and `images:` apply. Without either, the deployment model
(`k8s/deployment`) stands in: `resources:` followed from k8s/kustomization.yml, `images:` applied
as kustomize does (remote URLs are skipped with a note). Without a kustomization, every
k8s/**/*.y*ml is read. Either way the files are read too: a rendered object is named by the file
it came from.
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
from moltbuild.k8s import deployment
from moltbuild.k8s.deployment import WORKLOAD_KINDS, Object, Workload, kustomization_file, mapping
from moltbuild.refs import ImageRef
from moltbuild.system import gotools, state
from moltbuild.system.processes import Runner

__all__ = ["WORKLOAD_KINDS", "Manifests", "Workload", "kustomization_file", "load_manifests"]

_RENDER_TIMEOUT_S = 120


@dataclass(frozen=True)
class Manifests:
    workloads: tuple[Workload, ...] = ()
    # (namespace, name) -> data; namespace "default" when none is set
    config_maps: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    # `images:` entries of the kustomizations: the name manifests use -> the names they become
    image_names: Mapping[str, frozenset[str]] = field(default_factory=dict)
    how: str = ""  # "rendered by kubectl kustomize k8s", "read from k8s/kustomization.yml and ..."
    notes: tuple[str, ...] = ()  # what the reading could not do: remote resources, patches
    # every object as rendered (or read), with its final namespace and name: shared, never edit
    objects: tuple[Object, ...] = field(default=(), repr=False)

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


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


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
    if not shutil.which("kubectl", path=search):  # else kubectl's kustomize renders while setup builds ours
        gotools.wait_ready(runner.environ, "kustomize", runner.say)
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
    k8s = root / "k8s"
    top = kustomization_file(k8s)
    if top is None:
        model = deployment.load_files(k8s, root)
        return _manifests(
            model, model.objects, f"read from every {_rel(root, k8s)}/**/*.y*ml (no kustomization)"
        )
    model = deployment.load(k8s, root)
    if tool is None or runner is None:
        how = f"read from {_rel(root, top)} and its resources ({unrendered})"
        return _manifests(model, model.objects, how, model.notes)
    rendered = _render(top, tool, runner, root)
    objects = _sourced(rendered, model.objects, top)
    return _manifests(model, objects, f"rendered by {_shown(tool)} {_rel(root, k8s)}")


def _shown(tool: tuple[str, ...]) -> str:
    return f"{Path(tool[0]).name} {tool[1]}"


# === rendering ===================================================================================


def _render(top: Path, tool: tuple[str, ...], runner: Runner, root: Path) -> list[dict[str, Any]]:
    argv = [*tool, str(top.parent)]
    result = runner.run(argv, mutates=False, check=False, timeout=_RENDER_TIMEOUT_S)
    if not result.ok:
        why = _one_line(result.stderr or result.stdout)
        raise ConfigError(
            f"{_rel(root, top)}: {_shown(tool)} cannot render it ({why}); "
            f"fix the kustomization (`{_shown(tool)} {_rel(root, top.parent)}` shows the whole error)"
        )
    return [d for d in load_yaml(top, text=result.stdout, multi=True) if isinstance(d, dict)]


_KLOG = re.compile(r'^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] "command failed" err=<\s*')


def _one_line(said: str, limit: int = 300) -> str:
    """kustomize's `Error: ...` or kubectl's multi-line klog record, as one line."""
    lines = [line.strip() for line in said.splitlines() if line.strip() not in ("", ">", "`")]
    text = _KLOG.sub("", " ".join(lines)).removeprefix("Error: ") or "no message"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sourced(rendered: list[dict[str, Any]], walked: Iterable[Object], top: Path) -> list[Object]:
    """The rendered objects, each with the file the walk found it in (the top kustomization for an
    object no file holds, e.g. one a generator made)."""
    exact = {(o.kind, o.namespace, o.name): o.source for o in walked}
    by_name: dict[tuple[str, str], set[Path]] = {}
    for o in walked:
        by_name.setdefault((o.kind, o.name), set()).add(o.source)
    objects = []
    for doc in rendered:
        kind = str(doc.get("kind") or "")
        meta = mapping(doc.get("metadata"))
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        sources = by_name.get((kind, name), set())
        source = exact.get((kind, namespace, name)) or (next(iter(sources)) if len(sources) == 1 else top)
        objects.append(Object(source, doc, kind, namespace, name, name))
    return objects


# === what the objects hold =======================================================================


def _manifests(
    model: deployment.Deployment, objects: Iterable[Object], how: str, unapplied: Iterable[str] = ()
) -> Manifests:
    workloads, config_maps = [], {}
    originals = {}
    objects = tuple(objects)
    for obj in objects:
        if obj.kind in WORKLOAD_KINDS:
            pod = deployment.pod_spec(obj.kind, obj.doc)
            workloads.append(Workload(obj.kind, obj.name, obj.namespace, model.rel(obj.source), pod))
        elif obj.kind == "ConfigMap":
            values = {str(k): _text(v) for k, v in mapping(obj.doc.get("data")).items()}
            config_maps[(obj.namespace or "default", obj.name)] = values
            originals[(obj.namespace or "default", obj.original)] = values
    # read from the files, a workload still names a ConfigMap as its file does (kustomize would
    # rename the reference along with the ConfigMap)
    config_maps = {**originals, **config_maps}
    return Manifests(tuple(workloads), config_maps, _renames(model), how, tuple(unapplied), objects)


def _renames(model: deployment.Deployment) -> dict[str, frozenset[str]]:
    """What the `images:` entries rename: the name manifests use -> the names they become."""
    found: dict[str, set[str]] = {}
    for entry in model.entries:
        name, new = _bare(entry.name), _bare(entry.new_name) if entry.new_name else None
        if name and new:
            found.setdefault(name, set()).add(new)
    return {k: frozenset(v) for k, v in found.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
