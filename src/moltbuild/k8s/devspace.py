"""The project's objects as a dev namespace runs them (pure: no cluster): every namespaced object
moved into the dev namespace and labelled with the loop's session, each container that runs one of
the project's images set to the reference just built, and the dev patch of synced containers.

Which container runs which image is the rendered manifests' answer (`Manifests.running`, kustomize's
matching). Namespace objects and other cluster-scoped kinds are skipped with a note (a dev loop
never changes what the whole cluster shares); a workload running an image that has no reference
yet is skipped too (it would pull the manifests' tag), and starts once that image is built."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.k8s.deployment import CLUSTER_SCOPED, mapping, pod_spec
from moltbuild.k8s.manifests import Manifests

SESSION_LABEL = "moltbuild.dev/session"
MANAGED_BY = {"app.kubernetes.io/managed-by": "moltbuild-dev"}
FIELD_MANAGER = "moltbuild-dev"
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink")
# exec (sync) runs as the container's user and an image's files belong to root: a synced container
# runs as root with a writable root filesystem, in the dev namespace only
_DEV_PATCH = {"readOnlyRootFilesystem": False, "runAsNonRoot": False, "runAsUser": 0}


@dataclass(frozen=True)
class DevObjects:
    objects: tuple[dict[str, Any], ...]  # to apply, in the manifests' order
    patches: tuple[str, ...]  # the dev patches, one line each ("Deployment/x container y: ...")
    notes: tuple[str, ...]  # what is not applied, and why
    runs: Mapping[tuple[str, str], frozenset[str]]  # (kind, name) in the dev namespace -> images it runs


def shared_namespaces(manifests: Manifests) -> set[str]:
    """The namespaces the manifests deploy to or declare: never a dev namespace."""
    found = {o.namespace for o in manifests.objects if o.namespace}
    return found | {o.name for o in manifests.objects if o.kind == "Namespace"}


def container_images(
    manifests: Manifests, images: Mapping[str, str]
) -> dict[tuple[str, str, str], dict[str, str]]:
    """(kind, namespace, name) of each workload -> {container name: image name} for the
    containers that run one of `images` (image name -> the name the manifests use)."""
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for image, manifest_name in images.items():
        for workload, container in manifests.running(manifest_name):
            key = (workload.kind, workload.namespace, workload.name)
            found.setdefault(key, {})[str(container.get("name") or "")] = image
    return found


def dev_objects(
    manifests: Manifests,
    images: Mapping[str, str],
    refs: Mapping[str, str],
    *,
    namespace: str,
    session: str,
    synced: frozenset[str] = frozenset(),
) -> DevObjects:
    """The objects to apply in `namespace` with `refs` (image name -> reference) running."""
    if namespace in shared_namespaces(manifests):
        raise ConfigError(
            f"dev namespace {namespace!r} is one the manifests deploy to; "
            "fix: set MOLTBUILD_DEV_NAMESPACE to a namespace of your own"
        )
    targets = container_images(manifests, images)
    objects, patches, notes, runs = [], [], [], {}
    for obj in manifests.objects:
        shown = f"{obj.kind}/{obj.name}"
        if obj.kind in CLUSTER_SCOPED:
            notes.append(f"{shown} skipped: cluster-scoped (a dev namespace holds only namespaced objects)")
            continue
        containers = targets.get((obj.kind, obj.namespace, obj.name), {})
        missing = sorted(set(containers.values()) - set(refs))
        if missing:
            notes.append(f"{shown} not applied: {', '.join(missing)} not built yet")
            continue
        doc = moved(obj.doc, obj.name, namespace, session)
        for name, image in containers.items():
            patch = replace_image(doc, obj.kind, name, refs[image], dev_patch=image in synced)
            if patch:
                patches.append(f"{shown} container {name}: {patch} (synced: dev namespace only)")
        if containers:
            runs[(obj.kind, obj.name)] = frozenset(containers.values())
            patches += [f"{shown}: {p} (dev namespace only)" for p in all_at_once(doc)]
        objects.append(doc)
    return DevObjects(tuple(objects), tuple(patches), tuple(notes), runs)


def moved(doc: Mapping[str, Any], name: str, namespace: str, session: str) -> dict[str, Any]:
    """A copy of `doc` named `name` in `namespace`, labelled (pod templates too) with the session."""
    out = copy.deepcopy(dict(doc))
    meta = out["metadata"] = dict(mapping(out.get("metadata")))
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    meta["name"], meta["namespace"] = name, namespace
    labels = {**MANAGED_BY, SESSION_LABEL: session}
    meta["labels"] = {**mapping(meta.get("labels")), **labels}
    template = pod_template(str(out.get("kind") or ""), out)
    if template is not None:
        tmeta = template["metadata"] = dict(mapping(template.get("metadata")))
        tmeta["labels"] = {**mapping(tmeta.get("labels")), **labels}
    out.pop("status", None)
    return out


def all_at_once(doc: dict[str, Any]) -> list[str]:
    """A Deployment rolls every new pod at once (maxSurge 100%, maxUnavailable 0): one readiness
    wait per change instead of one per replica, and the old pods serve until the new are ready.
    A `Recreate` strategy is the app's choice (a volume only one pod may hold) and stays."""
    spec = doc.get("spec")
    if doc.get("kind") != "Deployment" or not isinstance(spec, dict):
        return []
    if mapping(spec.get("strategy")).get("type") == "Recreate":
        return []
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}}
    return ["every new pod at once (strategy.rollingUpdate maxSurge 100%, maxUnavailable 0)"]


def pod_template(kind: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (a CronJob's: its job template's), the object itself."""
    spec = doc.get("spec")
    if kind == "CronJob" and isinstance(spec, dict):
        spec = mapping(spec.get("jobTemplate")).get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    return template if isinstance(template, dict) else None


def replace_image(doc: dict[str, Any], kind: str, container: str, ref: str, *, dev_patch: bool) -> str:
    """Set the image of `container` in `doc` to `ref`; with `dev_patch`, make it writable. Returns
    the patch applied, as one line ("" when none was needed)."""
    pod = pod_spec(kind, doc)
    changed: list[str] = []
    for spec in pod.get("containers") or []:
        if not isinstance(spec, dict) or spec.get("name") != container:
            continue
        spec["image"] = ref
        if dev_patch:
            changed = writable(spec, mapping(pod.get("securityContext")))
    return ", ".join(changed)


def writable(container: dict[str, Any], pod_security: Mapping[str, Any]) -> list[str]:
    """The dev patch on one container's securityContext; what it changed."""
    security = container["securityContext"] = dict(mapping(container.get("securityContext")))
    changed = []
    for key, value in _DEV_PATCH.items():
        if security.get(key, pod_security.get(key)) != value:
            changed.append(f"{key}: {str(value).lower()}")
        security[key] = value
    return changed
