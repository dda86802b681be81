"""k8s/ renders with kubectl's built-in kustomize, and its probes hit paths the apps really serve."""

from __future__ import annotations

import subprocess

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, need_tool
from tests.integration.conftest import build_env, invoke, read_report, registry_digest

pytestmark = pytest.mark.integration


def test_kustomize_renders_pinned_images_and_real_probe_paths():
    need_tool("kubectl")
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s")], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in YAML(typ="safe").load_all(out) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"moltbook-api", "moltbook-frontend"}
    assert {d["kind"] for d in docs} >= {"Namespace", "Service"}
    for name, dep in deployments.items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].startswith(f"ghcr.io/ardenone/{name}:")
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz"
    # the frontend serves /healthz as a static file its build stage writes; the api as a route
    assert "/out/healthz" in (ROOT / "moltbook-frontend" / "Dockerfile").read_text()
    assert '"/healthz"' in (ROOT / "api" / "moltbook_api" / "app.py").read_text()


def test_set_images_pins_the_pushed_digests_and_verify_agrees(git_project, mirror, storage_root):
    need_tool("kubectl")
    env = build_env(mirror, storage_root, "pin")
    built = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr
    entries = read_report(git_project)
    kust = git_project / "k8s" / "kustomization.yml"
    committed = "---\n" + kust.read_text()  # the document marker survives too
    kust.write_text(committed)
    git(git_project, "commit", "-qam", "a kustomization that starts with ---")
    dry = invoke(git_project, "k8s.set-images", "--dry-run", env=env)
    assert dry.returncode == 0 and "+    digest: sha256:" in dry.stdout
    assert "digest" not in kust.read_text().split("images:")[1]  # the dry run wrote nothing
    assert git(git_project, "status", "--porcelain") == ""  # and left nothing behind
    pinned = invoke(git_project, "k8s.set-images", env=env)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert git(git_project, "status", "--porcelain") == " M k8s/kustomization.yml"  # no lock file
    assert kust.read_text().split("images:")[0] == committed.split("images:")[0]  # `---` and comments
    out = subprocess.run(
        ["kubectl", "kustomize", str(git_project / "k8s")], check=True, capture_output=True, text=True
    ).stdout
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in YAML(typ="safe").load_all(out)
        if d and d["kind"] == "Deployment"
    }
    for entry in entries.values():
        repo = entry["repository"]
        ref = images[repo.rsplit("/", 1)[1]]
        assert ref == f"{repo}:{entry['pin_tag']}@{entry['digest']}"
        assert registry_digest(mirror.url, repo.split("/", 1)[1], entry["pin_tag"]) == entry["digest"]
    verified = invoke(git_project, "verify", "--kustomization", "k8s/kustomization.yml", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    before = kust.read_text()
    again = invoke(git_project, "k8s.set-images", env=env)
    assert again.returncode == 0 and "nothing to change" in again.stdout and kust.read_text() == before


def git(project, *args: str) -> str:
    argv = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.rstrip("\n")


def test_kaniko_manifests_render_with_kustomize():
    need_tool("kubectl")
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "kaniko")], check=True, capture_output=True, text=True
    ).stdout
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in YAML(typ="safe").load_all(out) if d)
    assert kinds == [
        ("Role", "moltbuild-kaniko-runner"),
        ("RoleBinding", "moltbuild-kaniko-runner"),
        ("ServiceAccount", "moltbuild-builder"),
        ("ServiceAccount", "moltbuild-kaniko"),
    ]
