"""The deployment model against the real kustomize: for each tree of the unit tests (bases that
rename or re-tag, duplicated entries, `kind: List`, components), every container's image is what
`kustomize build` renders; and after `k8s.set-images`, kustomize renders the pin, the image
`verify --kustomization` then checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from moltbuild.flows.verify import deployed_targets
from moltbuild.k8s import deployment
from moltbuild.k8s.kustomize import Pin, set_images
from moltbuild.system.processes import Runner
from tests.conftest import need_tool
from tests.unit.test_deployment import D1, RENDERED, TREES, tree

pytestmark = pytest.mark.integration


def kustomize_build(folder: Path) -> dict[str, str]:
    """container name -> image, as `kustomize build` renders the folder."""
    out = subprocess.run(["kustomize", "build", str(folder)], check=True, capture_output=True, text=True)
    found = {}
    for doc in YAML(typ="safe").load_all(out.stdout):
        pod = deployment.pod_spec(doc["kind"], doc) if doc else {}
        for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            found[container["name"]] = container["image"]
    return found


@pytest.mark.parametrize("name", sorted(TREES))
def test_the_model_renders_what_kustomize_renders(tmp_path, name):
    need_tool("kustomize")
    top = tree(tmp_path, name)
    real = kustomize_build(tmp_path)
    assert real == dict(RENDERED[name])
    assert {c.name: c.image for c in deployment.load(top).containers} == real


@pytest.mark.parametrize(
    "name, image, manifest_name",
    [
        ("base-renames", "api", "registry.example/team/api"),  # the name the top level sees
        ("base-tags", "api", "api"),
        ("duplicates", "init", "nginx"),
        ("duplicates", "api", "api"),
        ("duplicates", "web", "docker.io/library/nginx"),
        ("list-and-component", "init", "nginx"),
    ],
)
def test_after_set_images_kustomize_renders_the_pin_and_verify_checks_it(
    tmp_path, name, image, manifest_name
):
    need_tool("kustomize")
    top = tree(tmp_path, name)
    pin = Pin(manifest_name, "r.example/team/pinned", "sha-abc1234", D1)
    set_images(top, [pin], runner=Runner(out=lambda _: None, environ=dict(os.environ)))
    assert kustomize_build(tmp_path)[image] == pin.image
    checked = {str(t.ref) for t in deployed_targets(top, set())}
    assert f"r.example/team/pinned:sha-abc1234@{D1}" in checked
