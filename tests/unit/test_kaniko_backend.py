"""KanikoBackend and the Cluster it drives, against a FAKE Kubernetes API.

The API server is tests/support/fake_cluster.py: kmock's in-memory emulator served over HTTP on
loopback to the real `kubernetes` client, plus pod exec over websocket (the stdin bytes are kept).
It is a fake: nothing schedules pods and no container runs, so each test plays the Job controller
and the kaniko executor by creating the pod and writing its status. kmock ignores label
selectors, so each test runs one Job (one pod) per fake. Where the backend reads the
pushed digest back, a minimal registry (manifests and one config blob) is served by
pytest-httpserver on 127.0.0.1. No root, no system tool, no fixed port."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest
from pytest_httpserver import HTTPServer
from ruamel.yaml import YAML

from moltbuild.backends.contract import ImageResult, JobLog, RunSpec
from moltbuild.backends.kaniko import KanikoBackend
from moltbuild.errors import ConfigError, JobError
from moltbuild.k8s.cluster import Cluster, ClusterError
from moltbuild.k8s.kaniko import SECRET_NAME, registry_secret, render, setup_objects
from moltbuild.plan.inputs import context_tarball
from moltbuild.plan.planner import ImagePlan
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import Credentials, Registries
from moltbuild.settings import Secret, load_settings
from moltbuild.system import state
from moltbuild.system.processes import Runner
from tests.support.fake_cluster import FakeCluster, FakeKubernetes
from tests.unit.verdicts import storage_verdict

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "builds"
ARM64 = {"os": "linux", "architecture": "arm64"}
OLD_DIGEST = "sha256:" + hashlib.sha256(b"an image an earlier run pushed").hexdigest()
PASSWORD = "pw-never-printed-0123"
CONTEXT_FILES = {
    "app.py": b"print('hello')\n",
    "pkg/mod.py": b"VALUE = 1\n",
    ".dockerignore": b"*.log\n",
    "debug.log": b"ignored by .dockerignore\n",
}
DOCKERFILE = b"FROM scratch\nCOPY . /app\n"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """The Job template (k8s/kaniko/) and one image's context; the Dockerfile outside it."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "k8s" / "kaniko", root / "k8s" / "kaniko")
    for rel, data in CONTEXT_FILES.items():
        (root / "api" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "api" / rel).write_bytes(data)
    (root / "api.Dockerfile").write_bytes(DOCKERFILE)
    return root


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch) -> Iterator[FakeCluster]:
    """The fake API, with KUBECONFIG pointing at it (what kubectl users have)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeCluster(namespace=NAMESPACE) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        yield cluster


@pytest.fixture()
def registry(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    yield httpserver_ipv4
    httpserver_ipv4.check()


def settings_for(project: Path, registry_host: str = "127.0.0.1:5999", **env: str):
    environ = {
        "MOLTBUILD_KUBE_NAMESPACE": NAMESPACE,
        "MOLTBUILD_INSECURE_REGISTRIES": registry_host,
        "MOLTBUILD_KANIKO_TIMEOUT": "30",
        **env,
    }
    return load_settings(project, environ=environ, tool_config={})


def backend_for(project: Path, lines: list[str], *, dry_run: bool = False, secrets=(), **env):
    settings = settings_for(project, **env)
    runner = Runner(environ=os.environ, out=lines.append, secrets=secrets)
    return KanikoBackend(runner, settings, storage_verdict(), dry_run=dry_run)


def image_for(project: Path, host: str = "127.0.0.1:5999", platforms: tuple[str, ...] = ()) -> ImagePlan:
    return ImagePlan(
        name="api",
        ref=ImageRef.parse(f"{host}/ns/moltbook-api", "test"),
        tags=("sha-abc1234", "main"),
        context=project / "api",
        dockerfile=project / "api.Dockerfile",
        build_args={"VERSION": "sha-abc1234"},
        labels={},
        target=None,
        platforms=platforms,
        input_digest="sha256:" + "1" * 64,
        bases=("scratch",),
    )


def start(backend: KanikoBackend, image: ImagePlan, log: JobLog, *, push: bool = True) -> Future:
    """produce() in a thread of its own: the test thread plays the cluster meanwhile."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(backend.produce, image, push=push, no_cache=False, log=log)
    pool.shutdown(wait=False)
    return future


def pushed_manifest(config: dict) -> tuple[bytes, bytes, str]:
    """(manifest, config blob, blob digest) of an image with `config` and no layers."""
    blob = json.dumps(config).encode()
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob_digest,
                "size": len(blob),
            },
            "layers": [],
        }
    ).encode()
    return manifest, blob, blob_digest


DIGEST = "sha256:" + hashlib.sha256(pushed_manifest(ARM64)[0]).hexdigest()  # what kaniko pushed


def serve_pushed_image(registry: HTTPServer, tags: dict[str, str], config: dict) -> None:
    """The registry after kaniko pushed: every tag's digest, and the manifest and config behind it
    (served at the manifest's own digest: a registry serves bytes that hash to what it names)."""
    manifest, blob, blob_digest = pushed_manifest(config)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    kind = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    for tag, digest in tags.items():
        registry.expect_request(f"/v2/ns/moltbook-api/manifests/{tag}", method="HEAD").respond_with_data(
            "", headers={**kind, "Docker-Content-Digest": digest}
        )
    registry.expect_request(f"/v2/ns/moltbook-api/manifests/{digest}", method="GET").respond_with_data(
        manifest, headers={**kind, "Docker-Content-Digest": digest}
    )
    registry.expect_request(f"/v2/ns/moltbook-api/blobs/{blob_digest}", method="GET").respond_with_data(blob)


def run_until_started(fake: FakeCluster) -> tuple[object, str, bytes]:
    """Controller and kubelet: the Job's pod with its init container running; waits for the context."""
    job = fake.wait_for_job(timeout=10)
    pod = fake.start_pod(job)
    return job, pod, fake.wait_delivered(pod, timeout=10)


def finish(fake: FakeCluster, pod: str, log: str, *, exit_code: int, message: str, reason: str) -> None:
    """The executor's end: its log, then the container terminated with its termination message."""
    fake.serve_log(pod, log)
    fake.set_status(
        pod,
        phase="Succeeded" if exit_code == 0 else "Failed",
        init={"terminated": {"exitCode": 0}},
        main={"terminated": {"exitCode": exit_code, "reason": reason, "message": message}},
    )


# -- a Job that builds and pushes --------------------------------------------------------------------


def test_a_job_gets_the_context_reports_its_digest_and_is_deleted(project, fake, registry, tmp_path):
    host = f"127.0.0.1:{registry.port}"
    lines: list[str] = []
    backend = backend_for(project, lines, MOLTBUILD_INSECURE_REGISTRIES=host)
    image = image_for(project, host)
    serve_pushed_image(registry, {t: DIGEST for t in image.tags}, ARM64)
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    log = JobLog("[api] ", tmp_path / "api.log")

    future = start(backend, image, log)
    job, pod, delivered = run_until_started(fake)
    finish(
        fake, pod, "INFO step 1\nINFO Pushed image\n", exit_code=0, message=DIGEST + "\n", reason="Completed"
    )
    result = future.result(timeout=10)

    # the context: a gzip'd tar with the Dockerfile beside exactly the files .dockerignore lets through
    assert delivered[:2] == b"\x1f\x8b"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(delivered))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    expected = {f"context/{rel}": data for rel, data in CONTEXT_FILES.items() if not rel.endswith(".log")}
    assert members == {**expected, "Dockerfile": DOCKERFILE}
    # streamed into the init container, which the Job's template makes wait for .ready
    (init,) = job.spec.template.spec.init_containers
    command = fake.fake.exec_commands[pod]
    assert command[:2] == ["sh", "-c"] and "| tar -xzf - -C /workspace" in command[2]
    assert f"head -c {len(fake.fake.delivered[pod])} |" in command[2]  # the length it was sent
    assert "/workspace/.ready" in command[2] and "/workspace/.ready" in " ".join(init.command)
    # the Job: in the namespace, pushing every tag
    assert job.metadata.namespace == NAMESPACE
    (executor,) = job.spec.template.spec.containers
    assert [a.split("=", 1)[1] for a in executor.args if a.startswith("--destination=")] == image.refs

    assert isinstance(result, ImageResult)
    assert result.digest == DIGEST and result.tags_pushed == image.tags and result.pushed
    assert result.platforms == ("linux/arm64",)  # from the pushed image's config
    assert result.image_id is None and "skipped" in result.smoke
    assert fake.jobs() == []
    assert "[api] INFO Pushed image" in lines and f"[api] context delivered ({len(delivered)} bytes)" in lines
    assert (tmp_path / "api.log").read_text() == "INFO step 1\nINFO Pushed image\n"


def test_kaniko_keep_leaves_the_job_and_no_push_reads_no_registry(project, fake, tmp_path):
    lines: list[str] = []
    backend = backend_for(project, lines, MOLTBUILD_KANIKO_KEEP="1")
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "), push=False)
    job, pod, _ = run_until_started(fake)
    finish(fake, pod, "built\n", exit_code=0, message=DIGEST, reason="Completed")
    result = future.result(timeout=10)

    assert result.digest is None and not result.pushed
    assert "--no-push" in job.spec.template.spec.containers[0].args
    assert fake.jobs() == [job.metadata.name]
    assert f"[api] kept Job {job.metadata.name} (MOLTBUILD_KANIKO_KEEP)" in lines


def test_a_tag_serving_another_digest_fails_the_image(project, fake, registry, tmp_path):
    host = f"127.0.0.1:{registry.port}"
    backend = backend_for(project, [], MOLTBUILD_INSECURE_REGISTRIES=host)
    image = image_for(project, host)
    serve_pushed_image(registry, {"sha-abc1234": DIGEST, "main": OLD_DIGEST}, {})
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image, JobLog("[api] "))
    _, pod, _ = run_until_started(fake)
    finish(fake, pod, "pushed\n", exit_code=0, message=DIGEST, reason="Completed")
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message == (
        f"{host}/ns/moltbook-api:main serves {OLD_DIGEST}, not the digest kaniko reported ({DIGEST})"
    )


def test_executor_log_lines_are_masked(project, fake, tmp_path):
    lines: list[str] = []
    backend = backend_for(project, lines, secrets=[PASSWORD])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] ", tmp_path / "api.log"), push=False)
    _, pod, _ = run_until_started(fake)
    finish(fake, pod, f"auth with {PASSWORD}\n", exit_code=0, message=DIGEST, reason="Completed")
    future.result(timeout=10)
    assert not any(PASSWORD in line for line in lines) and PASSWORD not in (tmp_path / "api.log").read_text()
    assert any(line.startswith("[api] auth with ") for line in lines)


# -- Jobs that fail ----------------------------------------------------------------------------------


def test_a_failing_executor_names_its_exit_code_and_log_tail(project, fake, tmp_path):
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    _, pod, _ = run_until_started(fake)
    log = "".join(f"step {i}\n" for i in range(1, 26)) + "error building image: COPY failed\n"
    finish(fake, pod, log, exit_code=1, message="", reason="Error")
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    first, *tail = caught.value.message.splitlines()
    assert first == f"kaniko executor in {pod} failed: Error, exit 1"
    assert tail[-1] == "error building image: COPY failed" and len(tail) == 20
    assert "step 7" in tail and "step 6" not in tail  # the last 20 lines only
    assert fake.jobs() == []


def test_an_executor_that_succeeds_without_a_digest_fails(project, fake, tmp_path):
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    _, pod, _ = run_until_started(fake)
    finish(fake, pod, "done\n", exit_code=0, message="not-a-digest", reason="Completed")
    with pytest.raises(JobError, match=r"succeeded but reported no digest \('not-a-digest'\)"):
        future.result(timeout=10)


@pytest.mark.parametrize(
    "container, reason",
    [
        ("context", "ErrImagePull"),
        ("kaniko", "ImagePullBackOff"),
        ("context", "InvalidImageName"),
        ("kaniko", "CreateContainerConfigError"),
    ],
)
def test_an_image_that_cannot_start_fails_fast_with_the_reason(project, fake, tmp_path, container, reason):
    backend = backend_for(project, [])  # MOLTBUILD_KANIKO_TIMEOUT=30
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    began = time.monotonic()
    future = start(backend, image_for(project), JobLog("[api] "))
    waiting = {"waiting": {"reason": reason, "message": "pull access denied for the image"}}
    # the pod is in its failing state from the start: the backend never sees another one
    if container == "context":
        pod = fake.start_pod(fake.wait_for_job(timeout=10), phase="Pending", init=waiting)
    else:
        pod = fake.start_pod(
            fake.wait_for_job(timeout=10), phase="Pending", init={"running": {}}, main=waiting
        )
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message.startswith(
        f"{container} container cannot start: {reason}: pull access denied for the image"
    )
    assert "MOLTBUILD_KANIKO_IMAGE" in caught.value.message
    assert time.monotonic() - began < 10
    if container == "context":  # the init container never ran: nothing could be delivered
        assert pod not in fake.fake.delivered
    assert fake.jobs() == []


@pytest.mark.parametrize(
    "status, message",
    [
        (
            {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "kaniko", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
                ],
            },
            "kaniko container was OOMKilled (exit 137); raise its memory limit in k8s/kaniko/job.yml",
        ),
        (
            {"phase": "Failed", "reason": "Evicted", "message": "node ran out of disk"},
            "pod {pod} failed: Evicted: node ran out of disk",
        ),
    ],
    ids=["oom-killed", "pod-failed"],
)
def test_a_pod_that_will_never_finish_fails_with_what_happened(project, fake, tmp_path, status, message):
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    _, pod, _ = run_until_started(fake)
    for container in status.get("containerStatuses", []):
        container.update(image="kaniko", imageID="", ready=False, restartCount=0)
    fake.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": status})
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message == message.format(pod=pod)
    assert fake.jobs() == []


def test_a_context_that_does_not_unpack_fails_with_the_output(project, fake, tmp_path, monkeypatch):
    async def tar_fails(self, raw_request):
        ws = aiohttp.web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(raw_request)
        async for msg in ws:  # tar gives up on the first bytes it reads
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00":
                break
        await ws.send_bytes(b"\x02tar: invalid magic\n")
        status = {"status": "Failure", "details": {"causes": [{"reason": "ExitCode", "message": "2"}]}}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    monkeypatch.setattr(FakeKubernetes, "_exec", tar_fails)
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    pod = fake.start_pod(fake.wait_for_job(timeout=10))
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert (
        caught.value.message == f"delivering the build context to {pod} failed (exit 2): tar: invalid magic"
    )
    assert fake.jobs() == []


def test_a_pod_that_never_comes_times_out(project, fake, tmp_path):
    backend = backend_for(project, [], MOLTBUILD_KANIKO_TIMEOUT="1")
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    began = time.monotonic()
    future = start(backend, image_for(project), JobLog("[api] "))
    job = fake.wait_for_job(timeout=10)
    assert job.spec.active_deadline_seconds == 1
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message == (
        "timed out after 1s waiting for the Job's pod to be created (MOLTBUILD_KANIKO_TIMEOUT)"
    )
    assert 1 <= time.monotonic() - began < 5
    assert fake.jobs() == []


def test_cancel_deletes_the_running_job_and_stops_waiting(project, fake, tmp_path, monkeypatch):
    # cancel() also stops every child this process tracks: hide the ones other tests own
    monkeypatch.setattr(state, "_children", set())
    lines: list[str] = []
    # KEEP: the Job would survive produce(); only cancel() deletes it
    backend = backend_for(project, lines, MOLTBUILD_KANIKO_KEEP="1")
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    fake.wait_for_job(timeout=10)
    backend.cancel()
    assert fake.jobs() == []
    with pytest.raises(JobError, match=r"^interrupted; the Job was deleted$"):
        future.result(timeout=10)


def test_cancel_says_which_job_it_could_not_delete(project, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(state, "_children", set())  # cancel() stops only what this test started
    lines: list[str] = []
    backend = backend_for(project, lines, MOLTBUILD_KANIKO_KEEP="1")
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    name = fake.wait_for_job(timeout=10).metadata.name
    fake.fake[f"delete /apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}"] << 500
    backend.cancel()
    assert f"could not delete Job {name}: delete Job {name}: HTTP 500: Internal Server Error" in lines
    with pytest.raises(JobError, match="interrupted"):
        future.result(timeout=10)


# -- open() and dry runs -----------------------------------------------------------------------------


def test_open_refuses_a_registry_ca_and_a_bad_timeout(project, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"MOLTBUILD_REGISTRY_CA is not passed to kaniko Jobs"):
        backend_for(project, [], MOLTBUILD_REGISTRY_CA=str(ca)).open(RunSpec(tmp_path))
    with pytest.raises(ConfigError, match=r"MOLTBUILD_KANIKO_TIMEOUT='soon' \(from environment\)"):
        backend_for(project, [], MOLTBUILD_KANIKO_TIMEOUT="soon").open(RunSpec(tmp_path))


def test_open_wants_the_registry_secret_only_when_credentials_are_needed(project, fake, tmp_path):
    creds = Credentials("ci", Secret(PASSWORD), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    run = RunSpec(tmp_path, logins={"reg.example": creds, "open.example": None})
    backend_for(project, []).open(RunSpec(tmp_path, logins={"open.example": None}))
    with pytest.raises(ConfigError) as caught:
        backend_for(project, []).open(run)
    assert caught.value.message == (
        f"namespace {NAMESPACE} has no Secret {SECRET_NAME} with the credentials for reg.example; "
        "fix: invoke kaniko.setup"
    )
    Cluster(namespace=NAMESPACE, environ=os.environ).apply(registry_secret(NAMESPACE, {"reg.example": creds}))
    backend_for(project, []).open(run)  # no error now


def test_dry_run_prints_the_job_and_the_exec_and_touches_no_cluster(project, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    lines: list[str] = []
    backend = backend_for(project, lines, dry_run=True)
    creds = Credentials("ci", Secret(PASSWORD), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    backend.open(RunSpec(tmp_path, logins={"reg.example": creds}))  # no Secret check in a dry run
    image = image_for(project)
    result = backend.produce(image, push=True, no_cache=True, log=JobLog("[api] "))

    assert result.digest is None and not result.pushed and result.duration_s == 0.0
    assert "api" not in vars(backend.cluster)  # never connected: no kubeconfig was even loaded
    text = [line.removeprefix("[api] ") for line in "\n".join(lines).splitlines()]
    assert text[0] == f"+ create Job {text[0].split()[3]} in namespace {NAMESPACE}:"
    end = next(i for i, line in enumerate(text) if line.startswith("+ exec "))
    (job,) = YAML(typ="safe").load_all("\n".join(text[1:end]))
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == NAMESPACE
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--cache=false" in args and [a for a in args if a.startswith("--destination=")] == [
        f"--destination={ref}" for ref in image.refs
    ]
    size = len(context_tarball(image.context, image.dockerfile))
    assert text[end].startswith(f"+ exec {job['metadata']['name']}-<pod> -c context -- sh -c ")
    assert text[end].endswith(f"< context.tar.gz ({size} bytes)")


def test_printed_manifests_mask_the_registry_secret():
    creds = Credentials("ci", Secret(PASSWORD), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    secret = registry_secret(NAMESPACE, {"reg.example": creds})
    printed: list[str] = []
    render([secret], printed.append)
    (shown,) = YAML(typ="safe").load_all(printed[0])
    assert shown["kind"] == "Secret" and shown["data"] == {".dockerconfigjson": "****"}
    assert PASSWORD not in printed[0] and secret["data"][".dockerconfigjson"] not in printed[0]


# -- status() ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_pod", [False, True])
def test_status_without_a_kubeconfig(project, tmp_path, monkeypatch, in_pod):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    if in_pod:  # a pod without a service account token mounted
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    status = backend_for(project, []).status()
    assert not status.available and not status.works
    assert "KUBECONFIG" in status.fix
    if in_pod:
        assert status.reason.startswith("kubeconfig: ") and "kubectl config use-context" in status.reason
    else:
        assert status.reason == "no kubeconfig (KUBECONFIG or ~/.kube/config) and not inside a pod"


def test_status_with_a_kubeconfig_naming_an_unknown_context_or_none(project, fake, tmp_path, monkeypatch):
    status = backend_for(project, [], MOLTBUILD_KUBE_CONTEXT="elsewhere").status()
    assert not status.available and status.reason.startswith("kubeconfig: ")
    assert "elsewhere" in status.reason

    broken = tmp_path / "broken-kubeconfig"
    broken.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "contexts": []}))
    monkeypatch.setenv("KUBECONFIG", str(broken))
    status = backend_for(project, []).status()
    assert not status.available and status.reason.startswith(f"kubeconfig {broken}: ")


def test_status_with_a_kubeconfig_names_cluster_context_namespace_and_the_missing_secret(project, fake):
    status = backend_for(project, []).status()
    where = f"cluster v1.31.0-fake of context fake, namespace {NAMESPACE}"
    assert status.available and status.works
    assert (
        status.reason == f"{where}; no registry Secret {SECRET_NAME} yet"
        and status.fix == "invoke kaniko.setup"
    )

    Cluster(namespace=NAMESPACE, environ=os.environ).apply(registry_secret(NAMESPACE, {}))
    status = backend_for(project, []).status()
    assert status.works and status.reason == f"{where}; builds run as Kaniko Jobs" and status.fix == ""


def test_status_names_the_rights_rbac_denies(project, fake):
    fake.fake.denied = {"jobs", "pods/exec"}
    status = backend_for(project, []).status()
    assert status.available and not status.works
    assert status.reason.endswith("not allowed to create jobs, exec into pods")
    assert "moltbuild-kaniko-runner" in status.fix


def test_status_of_a_cluster_that_does_not_answer(project, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeCluster(namespace=NAMESPACE) as gone:
        monkeypatch.setenv("KUBECONFIG", str(gone.kubeconfig(tmp_path / "kubeconfig")))
    status = backend_for(project, []).status()
    assert status.available and not status.works
    assert status.reason.startswith("context fake: GET /version: the cluster does not answer (")
    assert status.fix == "check the VPN/kubeconfig, then kubectl get ns"


# -- Cluster -----------------------------------------------------------------------------------------


def test_apply_creates_then_updates_the_setup_objects(project, fake):
    cluster = Cluster(namespace=NAMESPACE, environ=os.environ)
    objects = setup_objects(project, NAMESPACE)
    assert {o["kind"] for o in objects} >= {"ServiceAccount", "Role", "RoleBinding"}
    assert [cluster.apply(o) for o in objects] == ["created"] * len(objects)
    role = next(o for o in objects if o["kind"] == "Role")
    role["rules"] = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    assert [cluster.apply(o) for o in objects] == ["updated"] * len(objects)
    rules = fake.rbac.read_namespaced_role(role["metadata"]["name"], NAMESPACE).rules
    assert [(r.resources, r.verbs) for r in rules] == [(["pods"], ["get"])]


def test_a_forbidden_or_failing_call_is_a_cluster_error_naming_the_fix(fake):
    cluster = Cluster(namespace=NAMESPACE, environ=os.environ)
    fake.fake[f"get /api/v1/namespaces/{NAMESPACE}/pods"] << 403
    with pytest.raises(ClusterError) as caught:
        cluster.job_pod("some-job")
    assert caught.value.message.startswith("list pods of Job some-job: forbidden (")
    assert caught.value.message.endswith(f"moltbuild-kaniko-runner Role in namespace {NAMESPACE}")

    fake.fake[f"get /api/v1/namespaces/{NAMESPACE}/secrets/{SECRET_NAME}"] << 500
    with pytest.raises(ClusterError, match=rf"^read Secret {SECRET_NAME}: HTTP 500: "):
        cluster.secret_exists(SECRET_NAME)
    cluster.delete_job("never-created")  # already gone: fine


def test_exec_stdin_delivers_every_byte_and_logs_stream_lines(fake):
    cluster = Cluster(namespace=NAMESPACE, environ=os.environ)
    fake.core.create_namespaced_pod(
        NAMESPACE,
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    )
    data = bytes(range(256)) * 9000  # > 2 MiB: sent in several frames
    command = ["sh", "-c", f"head -c {len(data)} | cat"]  # ends by itself: stdin is never closed
    assert cluster.exec_stdin("p", "c", command, data, timeout=5) == (0, "")
    assert fake.fake.delivered["p"] == data and fake.fake.exec_commands["p"] == command
    fake.serve_log("p", "one\ntwo\nno newline at the end")
    assert list(cluster.logs("p", "c")) == ["one", "two", "no newline at the end"]


# -- what a cluster that goes away does (bugs) -------------------------------------------------------


def test_delete_job_on_a_cluster_that_does_not_answer_is_a_cluster_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeCluster(namespace=NAMESPACE) as gone:
        monkeypatch.setenv("KUBECONFIG", str(gone.kubeconfig(tmp_path / "kubeconfig")))
    with pytest.raises(ClusterError, match=r"does not answer"):
        Cluster(namespace=NAMESPACE, environ=os.environ).delete_job("any")


def test_open_on_a_cluster_that_does_not_answer_is_a_cluster_error(project, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeCluster(namespace=NAMESPACE) as gone:
        monkeypatch.setenv("KUBECONFIG", str(gone.kubeconfig(tmp_path / "kubeconfig")))
    creds = Credentials("ci", Secret(PASSWORD), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    with pytest.raises(ClusterError, match=r"does not answer"):
        backend_for(project, []).open(RunSpec(tmp_path, logins={"reg.example": creds}))


def test_a_cluster_going_away_mid_build_is_a_cluster_error(project, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeCluster(namespace=NAMESPACE) as going:
        monkeypatch.setenv("KUBECONFIG", str(going.kubeconfig(tmp_path / "kubeconfig")))
        backend = backend_for(project, [])  # the run context reads the environment at its start
        backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
        future = start(backend, image_for(project), JobLog("[api] "))
        going.wait_for_job(timeout=10)
    with pytest.raises(ClusterError, match=r"does not answer"):
        future.result(timeout=10)


def _warn(fake: FakeCluster, kind: str, name: str, reason: str, message: str) -> None:
    fake.core.create_namespaced_event(
        NAMESPACE,
        {
            "metadata": {"name": f"{name}.{reason.lower()}"},
            "involvedObject": {"kind": kind, "name": name, "namespace": NAMESPACE},
            "reason": reason,
            "message": message,
            "type": "Warning",
        },
    )


def test_a_job_refused_its_pod_fails_at_once_naming_the_policy(project, fake, tmp_path):
    """Pod Security `restricted`: the Job controller's FailedCreate event says why; no waiting
    for the timeout (30 minutes by default)."""
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    job = fake.wait_for_job(timeout=10)
    _warn(fake, "Job", "some-other-job", "FailedCreate", "not ours")  # another Job's event is not read
    refusal = (
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    )
    _warn(fake, "Job", job.metadata.name, "FailedCreate", refusal)
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message.startswith(
        f'Job {job.metadata.name} cannot create its pod: pods "x" is forbidden'
    )
    assert 'PodSecurity "restricted:latest"' in caught.value.message
    assert "pod-security.kubernetes.io/enforce=baseline" in caught.value.message
    assert fake.jobs() == []  # deleted on the way out


def test_a_failed_job_condition_ends_the_wait(project, fake, tmp_path):
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    job = fake.wait_for_job(timeout=10)
    condition = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}
    fake.batch.patch_namespaced_job_status(
        job.metadata.name, NAMESPACE, {"status": {"conditions": [condition]}}
    )
    with pytest.raises(JobError, match=rf"^Job {job.metadata.name} failed: DeadlineExceeded: too slow$"):
        future.result(timeout=10)


def test_an_unschedulable_pod_fails_naming_the_schedulers_reason(project, fake, tmp_path, monkeypatch):
    monkeypatch.setattr("moltbuild.backends.kaniko.UNSCHEDULABLE_GRACE", 0.0)
    backend = backend_for(project, [])
    backend.open(RunSpec(tmp_path, registries=Registries(backend.settings)))
    future = start(backend, image_for(project), JobLog("[api] "))
    pod = fake.start_pod(fake.wait_for_job(timeout=10))
    why = "0/1 nodes are available: 1 Insufficient memory."
    unscheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
    fake.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": {"conditions": [unscheduled]}})
    with pytest.raises(JobError) as caught:
        future.result(timeout=10)
    assert caught.value.message.startswith(f"pod {pod} cannot be scheduled: {why}")


def test_docker_hub_credentials_go_under_the_key_the_executor_looks_up():
    creds = Credentials("u", Secret("p"), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    secret = registry_secret(NAMESPACE, {"docker.io": creds, "ghcr.io": creds})
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert set(auths) == {"https://index.docker.io/v1/", "ghcr.io"}
