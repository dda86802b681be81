"""The cluster target of `invoke dev --cluster`: the project's rendered manifests, with the images
just built, applied server-side into a dev namespace (`k8s/devspace`), each rollout waited for with
its reason when it fails (`k8s/rollout`), the new pods' logs streamed (`k8s/podlogs`), each
container port forwarded to 127.0.0.1 through the API server (`k8s/forward`), synced files copied
in by exec + tar (`k8s/podcopy`), and on close everything labelled with the loop's session deleted
(docs/dev-cluster.md)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moltbuild.dev.target import Emit, Event
from moltbuild.errors import MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.k8s import podstatus
from moltbuild.k8s.cluster import Cluster
from moltbuild.k8s.devspace import FIELD_MANAGER, MANAGED_BY, SESSION_LABEL, DevObjects, dev_objects
from moltbuild.k8s.forward import Forward
from moltbuild.k8s.kaniko import render
from moltbuild.k8s.manifests import load_manifests
from moltbuild.k8s.podcopy import copy_into
from moltbuild.k8s.podlogs import LogStreams
from moltbuild.k8s.rollout import Result, Rollout

CREATED_BY = "moltbuild.dev/created-by-session"  # on a namespace this target created
_FORBIDDEN_FIX = "ask for the Role docs/dev-cluster.md lists, bound in namespace "
# what else may live in a namespace this target created; anything else found keeps it
_OTHERS = (("v1", "Pod"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "Secret"), ("apps/v1", "Deployment"))
_DEFAULTS = {"kube-root-ca.crt"}  # the ConfigMap every namespace gets


class ClusterTarget:
    """Runs the project's images in `namespace` (never one the manifests deploy to)."""

    def __init__(
        self,
        session: Session,
        *,
        namespace: str,
        images: Sequence[str],
        synced: frozenset[str] = frozenset(),
        timeout: float = 300,
    ):
        self.session, self.namespace = session, namespace
        self.images, self.synced, self.timeout = tuple(images), frozenset(synced), timeout
        self.session_id = uuid.uuid4().hex[:12]
        self.labels = f"{SESSION_LABEL}={self.session_id}"
        self.cluster = Cluster(
            context=session.settings.get("MOLTBUILD_KUBE_CONTEXT"),
            namespace=namespace,
            environ=session.environ,
            forbidden_fix=_FORBIDDEN_FIX + namespace,
        )
        self._refs: dict[str, str] = {}
        self._kinds: dict[tuple[str, str], None] = {}  # (apiVersion, kind) applied, in order
        self._created = False
        self._forwards: dict[tuple[str, int], Forward] = {}
        self._lock = threading.Lock()
        self._emit: Emit = lambda event: None
        self._logs = LogStreams(self.cluster, self._log_line)
        self._containers: dict[tuple[str, str], str] = {}  # (pod, container) -> image

    # -- what it would do ----------------------------------------------------------------------

    def _render(self, refs: Mapping[str, str]) -> DevObjects:
        manifests = load_manifests(self.session.settings.project_root, self.session.runner)
        names = {name: self.session.images[name].manifest_name for name in self.images}
        return dev_objects(
            manifests, names, refs, namespace=self.namespace, session=self.session_id, synced=self.synced
        )

    def describe(self, refs: Mapping[str, str]) -> list[str]:
        dev = self._render({**self._refs, **refs})
        lines = [
            f"namespace {self.namespace}: created if missing; every object labelled "
            f"{self.labels}, applied server-side as {FIELD_MANAGER} (Secret data masked)"
        ]
        lines += [f"dev patch: {patch}" for patch in dev.patches]
        lines += [f"note: {note}" for note in dev.notes]
        render(list(dev.objects), lambda text: lines.extend(text.splitlines()))
        return lines

    # -- deploy --------------------------------------------------------------------------------

    def deploy(self, refs: Mapping[str, str], emit: Emit, since: float) -> bool:
        self._emit = emit
        merged = {**self._refs, **refs}
        try:
            dev = self._render(merged)
            self._ensure_namespace()
            generations = self._apply(dev)
        except MoltbuildError as exc:
            for name in refs:
                self._send(Event("failed", name, time.monotonic() - since, {"reason": exc.message}))
            return False
        self._refs = merged
        for name in refs:
            detail = {"ref": refs[name], "namespace": self.namespace, "notes": list(dev.notes)}
            self._send(Event("deployed", name, time.monotonic() - since, detail))
        waited = {
            wl[1]: generations[wl[1]]
            for wl, images in dev.runs.items()
            if images & set(refs) and wl[0] == "Deployment"
        }
        others = _not_waited_for(dev, set(refs))
        for name, (kind, detail) in others.items():
            self._send(Event(kind, name, time.monotonic() - since, detail))
        rolled = self._roll_out(dev, waited, set(refs), since)
        return rolled and all(kind == "ready" for kind, _ in others.values())

    def _ensure_namespace(self) -> None:
        labels = {**MANAGED_BY, CREATED_BY: self.session_id}
        if self.cluster.ensure_namespace(labels) == "created":
            self._created = True

    def _apply(self, dev: DevObjects) -> dict[str, int]:
        """Apply every object; the generation of each Deployment applied."""
        generations = {}
        for obj in dev.objects:
            self._kinds[(obj["apiVersion"], obj["kind"])] = None
            done = self.cluster.server_side_apply(obj, FIELD_MANAGER)
            if obj["kind"] == "Deployment":
                generations[obj["metadata"]["name"]] = int(done["metadata"].get("generation") or 0)
        return generations

    def _roll_out(
        self, dev: DevObjects, generations: dict[str, int], changed: set[str], since: float
    ) -> bool:
        images_of = {name: dev.runs[("Deployment", name)] & changed for name in generations}
        left = {image: {n for n, i in images_of.items() if image in i} for image in changed}
        failed: set[str] = set()

        def settled(result: Result) -> None:
            for image in sorted(images_of[result.name]):
                left[image].discard(result.name)
                if not result.ready and image not in failed:
                    failed.add(image)
                    self._send(Event("failed", image, time.monotonic() - since, _failure(result)))
                elif result.ready:
                    self._started(image, result)
                    if not left[image] and image not in failed:
                        self._send(Event("ready", image, time.monotonic() - since, {"workload": result.name}))

        try:
            Rollout(self.cluster, self.labels, generations, self.timeout).wait(settled)
        except MoltbuildError as exc:
            for image in sorted(changed - failed):
                failed.add(image)
                self._send(Event("failed", image, time.monotonic() - since, {"reason": exc.message}))
        return not failed

    # -- logs and ports of the new pods ------------------------------------------------------------

    def _started(self, image: str, result: Result) -> None:
        ref = self._refs[image]
        for pod in result.pods:
            name = pod["metadata"]["name"]
            for container in pod.get("spec", {}).get("containers") or []:
                if container.get("image") != ref:
                    continue
                self._containers[(name, container["name"])] = image
                self._logs.follow(name, container["name"])
                for port in container.get("ports") or []:
                    self._forward(image, int(port["containerPort"]), name)

    def _forward(self, image: str, port: int, pod: str) -> None:
        with self._lock:
            forward = self._forwards.get((image, port))
            if forward is not None:
                forward.retarget(pod)
                return
            forward = self._forwards[(image, port)] = Forward(self.cluster, port, pod)
        self._send(Event("url", image, None, {"url": forward.url, "port": port, "pod": pod}))

    def _log_line(self, pod: str, container: str, line: str) -> None:
        image = self._containers.get((pod, container))
        self._send(Event("log", image, None, {"line": line, "pod": pod, "container": container}))

    def _send(self, event: Event) -> None:
        with self._lock:
            self._emit(event)

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, name: str, files: Sequence[tuple[Path, str]], emit: Emit, since: float) -> bool:
        ref = self._refs.get(name)
        if ref is None or not files:
            return False
        self._emit = emit
        try:
            targets = _running(self.cluster.objects("v1", "Pod", self.labels)["items"], ref)
            if not targets:
                return False
            for pod, container in targets:
                if copy_into(self.cluster, pod, container, files):
                    return False
        except MoltbuildError:
            return False
        detail = {"files": [dest for _, dest in files], "containers": len(targets)}
        self._send(Event("synced", name, time.monotonic() - since, detail))
        return True

    # -- close -------------------------------------------------------------------------------------

    def close(self, *, keep: bool) -> None:
        with self._lock:
            forwards = list(self._forwards.values())
            self._forwards.clear()
        for forward in forwards:
            forward.close()
        self._logs.close()
        if not keep and self._kinds:
            self._delete_session()

    def _delete_session(self) -> None:
        """Every object labelled with the session, then its pods, then the namespace when this
        target made it and nothing but the session's objects is in it."""
        for api_version, kind in reversed(list(self._kinds)):
            for obj in self.cluster.objects(api_version, kind, self.labels)["items"]:
                self.cluster.delete(api_version, kind, obj["metadata"]["name"])
        _delete_pods(self.cluster, self.labels)
        if self._created and not _others(self.cluster, self.session_id):
            self.cluster.delete("v1", "Namespace", self.namespace)


def _not_waited_for(dev: DevObjects, changed: set[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """The changed images no Deployment runs: ready when another workload kind runs them (applied,
    not waited for), failed when nothing applied runs them."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    in_deployments = {i for (kind, _), images in dev.runs.items() if kind == "Deployment" for i in images}
    elsewhere = {i for (kind, _), images in dev.runs.items() if kind != "Deployment" for i in images}
    for image in sorted(changed - in_deployments):
        if image in elsewhere:
            found[image] = ("ready", {"note": "applied; only Deployments are waited for"})
        else:
            found[image] = ("failed", {"reason": "no workload applied runs it (see the notes of `deployed`)"})
    return found


def _failure(result: Result) -> dict[str, Any]:
    detail: dict[str, Any] = {"reason": result.reason, "workload": f"{result.kind}/{result.name}"}
    if result.pod:
        detail["pod"] = result.pod
    if result.lines:
        detail["lines"] = list(result.lines)
    return detail


def _running(pods: list[dict[str, Any]], ref: str) -> list[tuple[str, str]]:
    """(pod, container) of every running container whose image is `ref`."""
    found = []
    for pod in pods:
        running = _running_containers(pod)
        for container in pod["spec"].get("containers") or []:
            if container.get("image") == ref and container["name"] in running:
                found.append((pod["metadata"]["name"], container["name"]))
    return found


def _running_containers(pod: dict[str, Any]) -> set[str]:
    if podstatus.deleting(pod) or pod.get("status", {}).get("phase") != "Running":
        return set()
    return {s["name"] for s in pod["status"].get("containerStatuses") or [] if podstatus.running(s)}


def _delete_pods(cluster: Cluster, labels: str, timeout: int = 30) -> None:
    """Delete the session's pods at once (no grace: a dev loop need not wait for shutdowns), and
    wait until they are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = cluster.objects("v1", "Pod", labels)
        if not pods["items"]:
            return
        for pod in pods["items"]:
            if not podstatus.deleting(pod) or pod["metadata"].get("deletionGracePeriodSeconds", 0) > 0:
                cluster.delete("v1", "Pod", pod["metadata"]["name"], grace=0)
        since = pods["metadata"]["resourceVersion"]
        next(
            cluster.changes("v1", "Pod", labels, since, max(1, min(5, int(deadline - time.monotonic())))),
            None,
        )


def _others(cluster: Cluster, session: str) -> bool:
    """Whether the namespace holds an object that is not the session's (ignoring its defaults)."""
    for api_version, kind in _OTHERS:
        for obj in cluster.objects(api_version, kind)["items"]:
            meta = obj["metadata"]
            ours = meta.get("labels", {}).get(SESSION_LABEL) == session
            default = meta["name"] in _DEFAULTS or obj.get("type") == "kubernetes.io/service-account-token"
            if not ours and not default:
                return True
    return False
