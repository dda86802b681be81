"""Against the real single-node cluster of `nox -s cluster`: the API server (RBAC, Pod Security
admission, exec) through the `kubernetes` client, the kubelet running pods, and the kaniko Jobs
(`invoke kaniko.setup` / `kaniko.build`) with the upstream kaniko executor built from its Go module.

The session reuses the cluster running on this machine (any checkout's), else starts one when
CI=true or MOLTBUILD_TEST_CLUSTER=1 (and stops it at the end unless another session uses it),
else skips. Under CI=true a cluster that cannot start is a failure, not a skip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from moltbuild.registry.client import ACCEPT
from tests.integration.conftest import clean_env, invoke, read_report
from tests.support.cluster import binaries, session
from tests.support.cluster.executor_run import cluster_env, rendered_jobs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def env():
    """The cluster's env (the running one, or one this session starts and stops)."""
    with session.cluster_or_skip() as state:
        yield cluster_env(state)


@pytest.fixture(scope="session")
def core(env):
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(env["KUBECONFIG"]))


@pytest.fixture(scope="session")
def batch(env):
    from kubernetes import client, config

    return client.BatchV1Api(config.new_client_from_config(env["KUBECONFIG"]))


@pytest.fixture
def namespace(core):
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture
def run_env(env, namespace):
    """The environment of an `invoke kaniko.*` run against the cluster, in its own namespace."""
    cluster_keys = {k: v for k, v in env.items() if k.startswith(("MOLTBUILD_", "KUBECONFIG"))}
    return clean_env(**cluster_keys, MOLTBUILD_KUBE_NAMESPACE=namespace)


def wait(probe, what: str, timeout: float = 90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout} s")


def pod(name: str, image: str, command: list[str], **spec) -> dict:
    container = {"name": "main", "image": image, "command": command}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def setup_and_build(project: Path, env: dict[str, str], *build_args: str, timeout: float = 600):
    setup = invoke(project, "kaniko.setup", env=env, timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return invoke(project, "kaniko.build", *build_args, env=env, timeout=timeout)


def served_digest(ref_host: str, name: str, tag: str) -> str:
    served = requests.head(
        f"http://{ref_host}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10
    )
    return served.headers["Docker-Content-Digest"]


def assert_report_served(project: Path) -> dict[str, dict]:
    report = read_report(project)
    assert set(report) == {"api", "frontend"}
    for entry in report.values():
        assert entry["backend"] == "kaniko" and entry["pushed"]
        host, name = entry["repository"].split("/", 1)
        for tag in entry["tags"]:
            assert served_digest(host, name, tag) == entry["digest"], f"{name}:{tag}"
    return report


def no_jobs_or_pods(core, batch, namespace: str) -> bool:
    jobs = batch.list_namespaced_job(namespace).items
    pods = core.list_namespaced_pod(namespace).items
    return not jobs and not pods


# The API server and the kubelet


def test_the_api_server_answers_with_rbac_and_discovery(core, env):
    from kubernetes import client, config

    api = config.new_client_from_config(env["KUBECONFIG"])
    assert "v1" in client.CoreApi(api).get_api_versions().versions
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    nodes = core.list_node().items
    assert len(nodes) == 1
    assert any(c.type == "Ready" and c.status == "True" for c in nodes[0].status.conditions)


def test_the_kubelet_runs_a_pod_to_completion_and_serves_its_log(core, namespace, env):
    helper = env["MOLTBUILD_KANIKO_HELPER_IMAGE"]
    core.create_namespaced_pod(namespace, pod("hello", helper, ["sh", "-c", "echo hello from $(hostname)"]))

    def done():
        phase = core.read_namespaced_pod("hello", namespace).status.phase
        assert phase != "Failed"
        return phase == "Succeeded"

    wait(done, "pod Succeeded")
    assert core.read_namespaced_pod_log("hello", namespace).strip() == "hello from hello"


def test_a_restricted_namespace_refuses_a_root_pod_naming_the_policy(core, namespace, env):
    from kubernetes.client.rest import ApiException

    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod("root", env["MOLTBUILD_KANIKO_HELPER_IMAGE"], ["true"]))
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message


# The executor


def test_the_executor_knows_every_flag_the_product_renders(git_project, env):
    """Upstream kaniko (what the cluster runs) accepts each flag of the rendered Jobs' args."""
    executor = os.environ.get("MOLTBUILD_KANIKO_EXECUTOR_BIN") or binaries.build_kaniko()
    helped = subprocess.run([str(executor), "--help"], capture_output=True, text=True, check=True).stdout
    known = {word.split("=")[0] for word in helped.split() if word.startswith("--")}
    for image, job in rendered_jobs(git_project, cluster_env_for(env), []).items():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        flags = {arg.split("=", 1)[0] for arg in container["args"]}
        assert flags and flags <= known, f"{image}: {sorted(flags - known)}"


def cluster_env_for(env: dict[str, str]) -> dict[str, str]:
    return clean_env(**{k: v for k, v in env.items() if k.startswith(("MOLTBUILD_", "KUBECONFIG"))})


# The kaniko path end to end


def test_kaniko_setup_and_build_push_what_the_registry_serves_and_leave_no_job(
    git_project, run_env, core, batch, namespace
):
    """`invoke kaniko.setup && invoke kaniko.build --push` with the default --jobs 2, then `verify`
    and `k8s.set-images`; setup is idempotent and the doctor then finds the kaniko backend working."""
    build = setup_and_build(git_project, run_env, "--push", "--rebuild")
    again = invoke(git_project, "kaniko.setup", env=run_env, timeout=120)
    assert again.returncode == 0 and "updated" in again.stdout, again.stdout + again.stderr
    doctor = invoke(git_project, "doctor", "--json", env=run_env, timeout=120)
    assert json.loads(doctor.stdout)["backends"]["kaniko"]["works"], doctor.stdout[-2000:]
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr
    assert_report_served(git_project)
    verify = invoke(git_project, "verify", env=run_env, timeout=120)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr
    pins = invoke(git_project, "k8s.set-images", env=run_env, timeout=120)
    assert pins.returncode == 0, pins.stdout[-2000:] + pins.stderr
    kustomization = (git_project / "k8s" / "kustomization.yml").read_text()
    assert all(entry["digest"] in kustomization for entry in read_report(git_project).values())
    assert batch.list_namespaced_job(namespace).items == []


def test_two_jobs_at_once_ten_rounds_with_real_exec_handshakes(git_project, run_env, batch, namespace):
    """The shared-client race of issue 19 on a real API server: `--jobs 2`, ten rounds, no failure."""
    setup = invoke(git_project, "kaniko.setup", env=run_env, timeout=120)
    assert setup.returncode == 0, setup.stderr
    failures = []
    for round_ in range(10):
        build = invoke(git_project, "kaniko.build", "--push", "--rebuild", "--jobs", "2", env=run_env)
        if build.returncode != 0:
            failures.append(f"round {round_}: {build.stderr.strip()[-500:]}")
        else:
            assert_report_served(git_project)
    assert failures == []
    assert batch.list_namespaced_job(namespace).items == []


def test_a_restricted_namespace_fails_the_build_at_once_naming_the_policy(
    git_project, run_env, core, namespace
):
    """The bound is the run's own timeout: a regression that waits fails with the timeout message."""
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    build = setup_and_build(git_project, {**run_env, "MOLTBUILD_KANIKO_TIMEOUT": "60"}, "--push", "--rebuild")
    assert build.returncode != 0
    assert "timed out" not in build.stderr
    assert 'violates PodSecurity "restricted:latest"' in build.stderr
    assert "Pod Security" in build.stderr  # the hint: the executor runs as root


def test_an_executor_image_that_cannot_be_pulled_fails_naming_the_pull_error(git_project, run_env, env):
    registry = env["MOLTBUILD_REGISTRY"].split("/")[0]
    missing = f"{registry}/moltbuild-cluster/no-such-executor:v0"
    run = {**run_env, "MOLTBUILD_KANIKO_IMAGE": missing, "MOLTBUILD_KANIKO_TIMEOUT": "60"}
    build = setup_and_build(git_project, run, "--push", "--rebuild", "--only", "api")
    assert build.returncode != 0
    assert "timed out" not in build.stderr
    assert "ErrImagePull" in build.stderr or "ImagePullBackOff" in build.stderr, build.stderr[-2000:]


@pytest.fixture
def auth_registry(tmp_path, env):
    """A registry with basic auth on the pods' address (alice:right)."""
    from tests.support.registries import TestRegistry

    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "alice", "right"], check=True, capture_output=True)
    address = env["MOLTBUILD_REGISTRY"].split(":")[0]
    with TestRegistry(tmp_path / "auth-registry", htpasswd=htpasswd, address=address) as reg:
        yield reg


def auth_run_env(run_env: dict[str, str], registry, password: str | None) -> dict[str, str]:
    creds = {"REGISTRY_USERNAME": "alice", "REGISTRY_PASSWORD": password} if password else {}
    insecure = f"{run_env['MOLTBUILD_INSECURE_REGISTRIES']},{registry.host}"
    target = {"MOLTBUILD_REGISTRY": f"{registry.host}/moltbook", "MOLTBUILD_INSECURE_REGISTRIES": insecure}
    return {**run_env, **creds, **target, "MOLTBUILD_KANIKO_TIMEOUT": "120"}


def test_a_registry_secret_with_wrong_credentials_fails_the_push_with_the_registrys_401(
    git_project, run_env, auth_registry
):
    """The Secret (from kaniko.setup) is stale; the host's credentials are right, so the run gets
    as far as the executor's push, which the registry refuses."""
    setup = invoke(
        git_project, "kaniko.setup", env=auth_run_env(run_env, auth_registry, "wrong"), timeout=120
    )
    assert setup.returncode == 0, setup.stderr
    run = auth_run_env(run_env, auth_registry, "right")
    build = invoke(git_project, "kaniko.build", "--push", "--rebuild", "--only", "api", env=run)
    assert build.returncode != 0
    assert "UNAUTHORIZED" in build.stdout + build.stderr, build.stderr[-2000:]
    assert "kaniko executor" in build.stderr, build.stderr[-2000:]  # failed in the Job, not before


def test_a_missing_registry_secret_fails_before_any_job_naming_the_fix(
    git_project, run_env, auth_registry, batch, namespace
):
    setup = invoke(git_project, "kaniko.setup", env=auth_run_env(run_env, auth_registry, None), timeout=120)
    assert setup.returncode == 0, setup.stderr
    run = auth_run_env(run_env, auth_registry, "right")
    build = invoke(git_project, "kaniko.build", "--push", "--rebuild", "--only", "api", env=run)
    assert build.returncode != 0
    assert "has no Secret moltbuild-registry" in build.stderr and "invoke kaniko.setup" in build.stderr
    assert batch.list_namespaced_job(namespace).items == []


def test_ctrl_c_mid_build_leaves_no_job_and_no_pod(git_project, run_env, core, batch, namespace):
    setup = invoke(git_project, "kaniko.setup", env=run_env, timeout=120)
    assert setup.returncode == 0, setup.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "kaniko.build", "--push", "--rebuild"],
        cwd=git_project,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job starts with SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: the child gets SIGINT's default back, like a terminal's.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait(lambda: core.list_namespaced_pod(namespace).items, "a kaniko pod", timeout=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0, err
    # Deleting a Job takes its pods with it in the background: wait for the API to say so.
    wait(lambda: no_jobs_or_pods(core, batch, namespace), "no Job and no pod left", timeout=60)


def image_files(ref_host: str, name: str, tag: str, prefix: str) -> dict[str, str]:
    """{path: sha256} of the regular files under PREFIX in the image's layers (last layer wins)."""
    base = f"http://{ref_host}/v2/{name}"
    manifest = requests.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30).json()
    found = {}
    for layer in manifest["layers"]:
        blob = requests.get(f"{base}/blobs/{layer['digest']}", timeout=120).content
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./").startswith(prefix):
                    found[member.name.lstrip("./")] = hashlib.sha256(
                        tar.extractfile(member).read()
                    ).hexdigest()
    return found


def test_a_50_mb_context_arrives_intact(git_project, run_env):
    """Incompressible files in the api context: the image holds each with the same sha256."""
    blobs = git_project / "api" / "moltbook_api" / "blobs"
    blobs.mkdir()
    want = {}
    for i in range(10):
        data = os.urandom(5 * 1024 * 1024)
        (blobs / f"r{i}.bin").write_bytes(data)
        want[f"app/moltbook_api/blobs/r{i}.bin"] = hashlib.sha256(data).hexdigest()
    git = ["git", "-C", str(git_project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "50 MB"], check=True)
    build = setup_and_build(git_project, run_env, "--push", "--rebuild", "--only", "api")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr
    entry = read_report(git_project)["api"]
    host, name = entry["repository"].split("/", 1)
    assert image_files(host, name, entry["tags"][0], "app/moltbook_api/blobs/") == want


def role_only_kubeconfig(core, env, namespace: str, dest: Path) -> Path:
    """A kubeconfig for the ServiceAccount moltbuild-builder (bound only to moltbuild-kaniko-runner
    by kaniko.setup), with a token from the TokenRequest API."""
    from kubernetes import client
    from ruamel.yaml import YAML

    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token("moltbuild-builder", namespace, request).status.token
    admin = YAML(typ="safe").load(Path(env["KUBECONFIG"]).read_text())
    (cluster,) = admin["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "builder", "user": {"token": token}}],
        "contexts": [{"name": "moltbuild", "context": {"cluster": cluster["name"], "user": "builder"}}],
        "current-context": "moltbuild",
    }
    dest.write_text(json.dumps(config))
    dest.chmod(0o600)
    return dest


def test_a_user_bound_only_to_the_runner_role_builds_and_pushes(
    git_project, run_env, core, env, namespace, tmp_path
):
    """kaniko.setup as admin; kaniko.build --push as the ServiceAccount the Role is bound to."""
    setup = invoke(git_project, "kaniko.setup", env=run_env, timeout=120)
    assert setup.returncode == 0, setup.stderr
    builder = {
        **run_env,
        "KUBECONFIG": str(role_only_kubeconfig(core, env, namespace, tmp_path / "kubeconfig")),
    }
    build = invoke(git_project, "kaniko.build", "--push", "--rebuild", env=builder)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr
    assert_report_served(git_project)
    denied = invoke(git_project, "kaniko.setup", env=builder, timeout=120)
    assert denied.returncode != 0 and "forbidden" in denied.stderr  # the Role really is all it has


def test_the_executor_in_podman_runs_the_rendered_job_and_pushes_what_the_registry_serves(env, capsys):
    """Level (a): the executor image fed the rendered Job's command, args and volumes."""
    from tests.support.cluster import executor_run

    assert executor_run.main(["api"], state=Path(env["KUBECONFIG"]).parent) == 0
    assert "the registry serves" in capsys.readouterr().out
