"""The pure parts of the cluster dev target: the objects a dev namespace gets (namespace moved,
images replaced by the refs built, the dev patch of synced containers, what is skipped), the
reasons read from pod status JSON, and the tar stream a sync sends."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.k8s import podstatus
from moltbuild.k8s.devspace import SESSION_LABEL, dev_objects
from moltbuild.k8s.manifests import load_manifests
from moltbuild.k8s.podcopy import copy_command, tarball

WEB = "ghcr.io/acme/web"
WORKER = "ghcr.io/acme/worker"
REFS = {"web": "reg:5000/acme/web@sha256:" + "a" * 64, "worker": "reg:5000/acme/worker@sha256:" + "b" * 64}

KUSTOMIZATION = """\
namespace: shop
resources: [namespace.yml, web.yml, worker.yml, role.yml]
images:
  - {name: ghcr.io/acme/web, newTag: "1.2"}
"""
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
WEB_YML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 10001}
      containers:
        - name: web
          image: ghcr.io/acme/web
          securityContext: {readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        - {name: sidecar, image: docker.io/library/redis:7}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""
WORKER_YML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers: [{name: worker, image: "ghcr.io/acme/worker:latest"}]
"""
ROLE = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\nrules: []\n"


@pytest.fixture
def manifests(tmp_path: Path):
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    files = {
        "kustomization.yml": KUSTOMIZATION,
        "namespace.yml": NAMESPACE,
        "web.yml": WEB_YML,
        "worker.yml": WORKER_YML,
        "role.yml": ROLE,
    }
    for name, text in files.items():
        (k8s / name).write_text(text)
    return load_manifests(tmp_path)  # read, not rendered: no process


def build(manifests, refs=REFS, synced=frozenset()):
    names = {"web": WEB, "worker": WORKER}
    return dev_objects(manifests, names, refs, namespace="dev-me", session="s1", synced=synced)


def by_kind_name(dev) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in dev.objects}


def containers(obj: dict) -> dict[str, dict]:
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


def test_every_namespaced_object_moves_into_the_dev_namespace_labelled_with_the_session(manifests):
    dev = build(manifests)
    assert set(by_kind_name(dev)) == {("Deployment", "web"), ("Service", "web"), ("Deployment", "worker")}
    for obj in dev.objects:
        assert obj["metadata"]["namespace"] == "dev-me"
        assert obj["metadata"]["labels"][SESSION_LABEL] == "s1"
    web = by_kind_name(dev)[("Deployment", "web")]
    assert web["spec"]["template"]["metadata"]["labels"] == {
        "app": "web",
        "app.kubernetes.io/managed-by": "moltbuild-dev",
        SESSION_LABEL: "s1",
    }
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}, "selectors are never changed"


def test_namespaces_and_cluster_scoped_objects_are_skipped_with_a_note(manifests):
    notes = build(manifests).notes
    assert any(n.startswith("Namespace/shop skipped: cluster-scoped") for n in notes)
    assert any(n.startswith("ClusterRole/reader skipped: cluster-scoped") for n in notes)


def test_the_project_images_are_replaced_by_the_refs_and_other_images_are_kept(manifests):
    dev = build(manifests)
    web = containers(by_kind_name(dev)[("Deployment", "web")])
    assert web["web"]["image"] == REFS["web"]  # the manifest's tag (kustomize's 1.2) is not kept
    assert web["sidecar"]["image"] == "docker.io/library/redis:7"
    assert containers(by_kind_name(dev)[("Deployment", "worker")])["worker"]["image"] == REFS["worker"]
    assert dev.runs == {("Deployment", "web"): {"web"}, ("Deployment", "worker"): {"worker"}}


def test_the_shared_objects_are_never_edited(manifests):
    build(manifests, synced=frozenset({"web"}))
    (workload,) = [w for w in manifests.workloads if w.name == "web"]
    assert workload.containers()[0]["image"] == "ghcr.io/acme/web:1.2"
    assert workload.containers()[0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_workload_whose_image_is_not_built_yet_is_left_out_with_a_note(manifests):
    dev = build(manifests, refs={"web": REFS["web"]})
    assert ("Deployment", "worker") not in by_kind_name(dev)
    assert "Deployment/worker not applied: worker not built yet" in dev.notes


def test_a_synced_container_gets_the_dev_patch_and_says_so(manifests):
    dev = build(manifests, synced=frozenset({"web"}))
    web = containers(by_kind_name(dev)[("Deployment", "web")])
    assert web["web"]["securityContext"] == {
        "readOnlyRootFilesystem": False,
        "runAsNonRoot": False,
        "runAsUser": 0,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "securityContext" not in web["sidecar"]
    (patch,) = [p for p in dev.patches if " container " in p]
    assert patch.startswith("Deployment/web container web: readOnlyRootFilesystem: false")
    assert "securityContext" not in containers(by_kind_name(dev)[("Deployment", "worker")])["worker"]


def test_a_deployment_rolls_every_new_pod_at_once_in_the_dev_namespace_and_says_so(manifests):
    dev = build(manifests)
    for name in ("web", "worker"):
        strategy = by_kind_name(dev)[("Deployment", name)]["spec"]["strategy"]
        assert strategy == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0},
        }
    assert (
        "Deployment/web: every new pod at once (strategy.rollingUpdate maxSurge 100%, maxUnavailable 0) "
        "(dev namespace only)" in dev.patches
    )
    (web,) = [o for o in manifests.objects if (o.kind, o.name) == ("Deployment", "web")]
    assert "strategy" not in web.doc["spec"]  # the rendered objects stay as they were


def test_a_recreate_strategy_is_the_apps_choice_and_stays(manifests):
    for obj in manifests.objects:
        if obj.kind == "Deployment" and obj.name == "worker":
            obj.doc["spec"]["strategy"] = {"type": "Recreate"}
    dev = build(manifests)
    assert by_kind_name(dev)[("Deployment", "worker")]["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(p.startswith("Deployment/worker:") for p in dev.patches)


def test_the_namespace_the_manifests_deploy_to_is_refused_as_a_dev_namespace(manifests):
    names = {"web": WEB, "worker": WORKER}
    with pytest.raises(ConfigError, match="dev namespace 'shop' is one the manifests deploy to"):
        dev_objects(manifests, names, REFS, namespace="shop", session="s1")


# === reasons from pod status ======================================================================


def pod(*statuses: dict, conditions: list | None = None, phase: str = "Pending") -> dict:
    return {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "web", "readinessProbe": {"failureThreshold": 2}}]},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": list(statuses)},
    }


def test_a_pull_error_names_the_registry_message():
    found = podstatus.problem(
        pod({"name": "web", "state": {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}})
    )
    assert found is not None and found.line() == "pull: container web: ErrImagePull: manifest unknown"


def test_the_first_exit_is_a_crash_and_the_logs_to_read_are_the_previous_instances_after_a_restart():
    now = podstatus.problem(pod({"name": "web", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}))
    assert now is not None and (now.reason, now.previous) == ("crash", False)
    assert now.message == "exited with code 3 (Error)"
    backoff = {
        "name": "web",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
    }
    later = podstatus.problem(pod(backoff))
    assert later is not None and (later.reason, later.previous) == ("crash", True)


def test_an_unschedulable_pod_says_why():
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient memory.",
    }
    found = podstatus.problem(pod(conditions=[unschedulable]))
    assert (
        found is not None and found.line() == "unschedulable: 0/1 nodes are available: 1 Insufficient memory."
    )


def test_a_starting_container_is_no_problem_yet():
    assert (
        podstatus.problem(pod({"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}})) is None
    )
    assert podstatus.problem(pod({"name": "web", "state": {"running": {}}, "ready": False})) is None


def test_a_readiness_probe_fails_the_pod_once_it_failed_its_threshold():
    running = pod({"name": "web", "state": {"running": {}}, "ready": False}, phase="Running")
    once = [("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 500", 1)]
    assert podstatus.readiness_problem(running, once) is None
    twice = [*once, ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 500", 1)]
    found = podstatus.readiness_problem(running, twice)
    assert found is not None and found.reason == "readiness" and "statuscode: 500 (2 times)" in found.message
    liveness = [("Unhealthy", "Liveness probe failed: timeout", 5)]
    assert podstatus.readiness_problem(running, liveness) is None


def test_ready_and_deleting_are_read_from_the_pod():
    ready = pod(conditions=[{"type": "Ready", "status": "True"}])
    assert podstatus.ready(ready) and not podstatus.ready(pod())
    assert podstatus.deleting({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})


# === the tar stream of a sync =====================================================================


def test_the_sync_tarball_holds_each_file_at_its_container_path(tmp_path: Path):
    page = tmp_path / "index.html"
    page.write_text("<p>hi</p>")
    data = tarball([(page, "/www/index.html")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.uid) == ("www/index.html", 0)
        assert tar.extractfile(member).read() == b"<p>hi</p>"
    assert copy_command(len(data)) == ["sh", "-c", f"head -c {len(data)} | tar -xf - -C /"]


def test_a_relative_or_escaping_container_path_is_refused(tmp_path: Path):
    page = tmp_path / "a"
    page.write_text("x")
    for bad in ("www/a", "/www/../etc/a"):
        with pytest.raises(ValueError, match="must be absolute"):
            tarball([(page, bad)])
