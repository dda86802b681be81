"""k8s/ renders with kubectl's built-in kustomize, and its probes hit paths the apps really serve."""

from __future__ import annotations

import subprocess

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, need_tool

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
