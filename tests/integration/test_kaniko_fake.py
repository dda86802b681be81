"""`invoke kaniko.setup` / `invoke kaniko.build` end to end against a FAKE Kubernetes API
(tests/support/fake_cluster.py, on kmock) and a real registry, only for what the real cluster of
test_cluster_real.py cannot produce on demand: an executor error with its log, an OOM kill, a pod
that stays Pending with no reason, the doctor's missing rights; and the pure parts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moltbuild.plan.inputs import context_files
from moltbuild.registry.client import RegistryClient
from tests.integration.conftest import build_env, invoke, read_report
from tests.support.fake_cluster import FakeCluster

pytestmark = pytest.mark.integration


@pytest.fixture()
def fake(tmp_path):
    with FakeCluster() as cluster:
        cluster.kubeconfig_path = cluster.kubeconfig(tmp_path / "kubeconfig")
        yield cluster


def kaniko_env(mirror, storage_root, fake, namespace="kfake", **extra):
    return build_env(mirror, storage_root, namespace, KUBECONFIG=str(fake.kubeconfig_path), **extra)


def start_build(project, env, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "kaniko.build", "--api-only", "--rebuild", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def play_executor(fake, mirror, job) -> str:
    """What kaniko would do: push one image under every --destination; returns its digest."""
    (executor,) = job.spec.template.spec.containers
    destinations = [a.split("=", 1)[1] for a in executor.args if a.startswith("--destination=")]
    repo = destinations[0].split("/", 1)[1].rsplit(":", 1)[0]
    tags = [d.rsplit(":", 1)[1] for d in destinations]
    client = RegistryClient(mirror.host, insecure_hosts=[mirror.host])
    served = client.put_tags(repo, tags, reference="1.36", source_name="mirror/library/busybox")
    (digest,) = set(served.values())
    return digest


@pytest.mark.parametrize(
    "failure, message",
    [
        (
            {"main": {"terminated": {"exitCode": 1, "reason": "Error", "message": ""}}},
            "failed: Error, exit 1",
        ),
        (
            {"main": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
            "kaniko container was OOMKilled",
        ),
    ],
)
def test_job_failures_fail_with_the_pods_reason_and_delete_the_job(
    git_project, mirror, storage_root, fake, failure, message
):
    proc = start_build(git_project, kaniko_env(mirror, storage_root, fake))
    try:
        job = fake.wait_for_job()
        pod = fake.start_pod(job)
        if "main" in failure:
            fake.wait_delivered(pod)
            fake.serve_log(pod, "error building image: step 3 failed\n")
        fake.set_status(pod, phase="Failed" if "main" in failure else "Pending", **failure)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and message in err, out[-2000:] + err
    if "Error" in message:
        assert "error building image: step 3 failed" in err
    assert read_report(git_project)["api"]["outcome"] == "failed"
    assert fake.jobs() == []


def test_a_pod_that_never_comes_times_out_and_deletes_the_job(git_project, mirror, storage_root, fake):
    """A pod that stays Pending with no reason the tool can name (Ctrl-C: test_cluster_real)."""
    env = kaniko_env(mirror, storage_root, fake)
    proc = start_build(git_project, env, "--timeout", "2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "timed out after 2s waiting for the Job's pod" in err, out + err
    assert fake.jobs() == []


def test_setup_dry_run_masks_the_registry_secret(git_project, mirror, storage_root, fake):
    """(A missing Secret on a real cluster: test_cluster_real.)"""
    env = kaniko_env(mirror, storage_root, fake, REGISTRY_USERNAME="ci", REGISTRY_PASSWORD="pw-0123456789")
    dry = invoke(git_project, "kaniko.setup", "--dry-run", env=env)
    assert dry.returncode == 0 and "kind: Secret" in dry.stdout and "pw-0123456789" not in dry.stdout
    assert '.dockerconfigjson: "****"' in dry.stdout or ".dockerconfigjson: '****'" in dry.stdout


def _synthetic_context(root):
    """A context with nested ignores, a negation and 1,500 small files of mixed content."""
    import hashlib

    (root / ".dockerignore").write_text("node_modules\n*.log\n!keep.log\n")
    for i in range(1500):
        path = root / f"pkg{i % 30}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# module {i}\nVALUE = '{hashlib.sha256(str(i).encode()).hexdigest()}'\n" * (1 + i % 7)
        )
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / "big.js").write_text("x" * 100_000)
    (root / "debug.log").write_text("ignored")
    (root / "keep.log").write_text("kept")
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    return root


@pytest.mark.parametrize("which", ["api", "moltbook-frontend", "synthetic"])
def test_the_streamed_context_is_as_small_as_tar_cz_of_the_same_files(which, tmp_path):
    from moltbuild.plan.inputs import context_tarball
    from tests.conftest import ROOT

    ctx = _synthetic_context(tmp_path) if which == "synthetic" else ROOT / which
    files = context_files(ctx)
    assert "node_modules/x/big.js" not in files and ("keep.log" in files) == (which == "synthetic")
    ours = len(context_tarball(ctx, ctx / "Dockerfile"))
    theirs = len(
        subprocess.run(
            ["tar", "-czf", "-", "-C", str(ctx), *files, "Dockerfile"], check=True, capture_output=True
        ).stdout
    )
    assert 0.95 <= ours / theirs <= 1.05, (ours, theirs)


def test_doctor_names_the_missing_rights(git_project, mirror, storage_root, fake):
    fake.fake.denied = {"pods/exec"}
    doctor = invoke(git_project, "doctor", "--json", env=kaniko_env(mirror, storage_root, fake))
    kaniko = json.loads(doctor.stdout)["backends"]["kaniko"]
    assert not kaniko["works"] and "not allowed to exec into pods" in kaniko["reason"]
    assert "moltbuild-kaniko-runner" in kaniko["fix"]


def test_dry_run_prints_job_manifests_that_validate_without_any_cluster(
    git_project, mirror, storage_root, tmp_path
):
    import kubernetes_validate
    from ruamel.yaml import YAML

    env = build_env(mirror, storage_root, "kdry", KUBECONFIG=str(tmp_path / "none"))
    out = invoke(git_project, "kaniko.build", "--dry-run", "--rebuild", env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "not available here" in out.stdout and "dry run only" in out.stdout
    jobs = {}
    for name in ("api", "frontend"):
        lines = [
            line[len(f"[{name}] ") :] for line in out.stdout.splitlines() if line.startswith(f"[{name}] ")
        ]
        start = next(i for i, line in enumerate(lines) if line.startswith("+ create Job"))
        end = next(i for i, line in enumerate(lines) if line.startswith("+ exec"))
        (jobs[name],) = list(YAML(typ="safe").load_all("\n".join(lines[start + 1 : end])))
        assert "tar -xzf - -C /workspace" in lines[end]
    for job in jobs.values():
        kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    assert (
        "--build-arg=API_BASE_URL=/api"
        in jobs["frontend"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert not (git_project / "build" / "images.json").exists()
