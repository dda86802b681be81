"""The adopt room's parts on their own: the deployment it reads (adopt.deployment, a lenient view
of the deployment model k8s.deployment), pyproject.toml written with tomlkit, the chosen images as
a table. End-to-end runs of `moltbuild init` are in test_adopt.py."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from moltbuild.adopt.deployment import Container, ImageEntry, Workload, read_deployment
from moltbuild.cli.main import main


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pod(*containers: str) -> str:
    """A pod template's spec holding one container per NAME=IMAGE."""
    items = []
    for container in containers:
        name, image = container.split("=")
        items.append(f"{{name: {name}, image: '{image}'}}")
    return f"{{template: {{spec: {{containers: [{', '.join(items)}]}}}}}}"


LIST = f"""\
apiVersion: v1
kind: List
items:
  - {{kind: Deployment, metadata: {{name: api}}, spec: {pod("api=ghcr.io/o/api:1")}}}
  - {{kind: Service, metadata: {{name: api}}}}
  - {{kind: DaemonSet, metadata: {{name: agent, namespace: ops}}, spec: {pod("agent=ghcr.io/o/agent")}}}
"""
JOBS = f"""\
kind: CronJob
metadata: {{name: nightly}}
spec: {{jobTemplate: {{spec: {pod("report=ghcr.io/o/report")}}}}}
---
kind: Job
metadata: {{name: migrate}}
spec:
  template:
    spec:
      initContainers: [{{name: wait, image: busybox}}]
      containers: [{{name: migrate, image: 'ghcr.io/o/api:1'}}]
"""


def test_deployment_reads_lists_every_workload_kind_and_applies_namespace_and_prefix(tmp_path: Path) -> None:
    top = "namespace: shop\nnamePrefix: p-\nresources: [all.yml, jobs/, loose/, gone.yml]\n"
    write(tmp_path, "k8s/kustomization.yml", top + "images:\n  - name: ghcr.io/o/api\n  - newTag: x\n")
    write(tmp_path, "k8s/all.yml", LIST)
    write(
        tmp_path, "k8s/jobs/kustomization.yaml", "resources: [jobs.yml]\nimages: [{name: ghcr.io/o/report}]\n"
    )
    write(tmp_path, "k8s/jobs/jobs.yml", JOBS)
    write(
        tmp_path,
        "k8s/loose/deployment.yml",
        f"kind: Deployment\nmetadata: {{name: no}}\nspec: {pod('a=b')}\n",
    )

    found = read_deployment(tmp_path)

    assert found.kustomizations == ["k8s/kustomization.yml"]
    assert found.images == [
        ImageEntry("ghcr.io/o/api", "k8s/kustomization.yml", 0),
        ImageEntry("ghcr.io/o/report", "k8s/jobs/kustomization.yaml", 0),
    ]
    assert found.workloads == [
        Workload("Deployment", "p-api", "shop", "k8s/all.yml", (Container("api", "ghcr.io/o/api:1"),)),
        Workload("DaemonSet", "p-agent", "shop", "k8s/all.yml", (Container("agent", "ghcr.io/o/agent"),)),
        Workload(
            "CronJob", "p-nightly", "shop", "k8s/jobs/jobs.yml", (Container("report", "ghcr.io/o/report"),)
        ),
        Workload(
            "Job",
            "p-migrate",
            "shop",
            "k8s/jobs/jobs.yml",
            (Container("wait", "busybox"), Container("migrate", "ghcr.io/o/api:1")),
        ),
    ]
    assert found.workloads[0].label == "k8s/all.yml Deployment p-api"
    # kustomize refuses a folder without a kustomization and a missing file: noted, not read
    # (the model's one-line messages, the ones k8s.set-images and verify refuse with)
    assert found.notes == [
        "k8s/loose/ has no kustomization.yml; add one, or list its files in resources:",
        "k8s/kustomization.yml: resource 'gone.yml' does not exist (k8s/gone.yml); fix the path",
        "k8s/kustomization.yml: images[1] needs a `name` (the image name the manifests use)",
    ]


def test_without_a_top_kustomization_every_one_under_k8s_is_read_shallowest_first(tmp_path: Path) -> None:
    write(tmp_path, "k8s/overlays/prod/kustomization.yml", "resources: [../../base]\n")
    write(tmp_path, "k8s/base/kustomization.yml", "resources: [d.yml]\nimages: [{name: ghcr.io/o/api}]\n")
    write(
        tmp_path,
        "k8s/base/d.yml",
        f"kind: Deployment\nmetadata: {{name: api}}\nspec: {pod('a=ghcr.io/o/api')}\n",
    )
    write(tmp_path, "k8s/node_modules/x/kustomization.yml", "resources: [nope.yml]\n")

    found = read_deployment(tmp_path)

    assert found.kustomizations == ["k8s/base/kustomization.yml", "k8s/overlays/prod/kustomization.yml"]
    assert [w.label for w in found.workloads] == ["k8s/base/d.yml Deployment api"]  # each file once
    assert found.notes == []
    assert read_deployment(tmp_path / "nothing-here").workloads == []


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write(root, "api/Dockerfile", "FROM node:20-alpine\n")
    write(root, "report/Dockerfile", "FROM python:3.12-slim\n")
    write(root, "k8s/kustomization.yml", "resources: [all.yml, jobs/]\nimages: [{name: ghcr.io/o/api}]\n")
    write(root, "k8s/all.yml", LIST)
    write(
        root, "k8s/jobs/kustomization.yml", "resources: [jobs.yml]\nimages: [{name: ghcr.io/o/nightly-job}]\n"
    )
    write(root, "k8s/jobs/jobs.yml", JOBS.replace("ghcr.io/o/report", "ghcr.io/o/nightly-job"))
    return root


def test_init_matches_through_a_cronjob_in_a_list_tree_and_shows_a_table(repo: Path, capsys) -> None:
    assert main(["init", str(repo)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert "match: report = report/Dockerfile -> ghcr.io/o/nightly-job (container report runs it: " in out
    assert "image: ghcr.io/o/api, run by k8s/all.yml Deployment api (container api); " in out
    header = lines.index("images:")
    assert lines[header + 1].split() == ["image", "Dockerfile", "repository", "kustomization", "image"]
    assert lines[header + 3].split() == ["api", "api/Dockerfile", "api", "ghcr.io/o/api"]
    assert lines[header + 4].split() == [
        "report",
        "report/Dockerfile",
        "nightly-job",
        "ghcr.io/o/nightly-job",
    ]


PYPROJECT = """\
# The shop's project file: keep this header.
[project]
name    = "shop"      # aligned by hand
version = "1.0"
dependencies = [
    "b>=2",  # b first, on purpose
    "a>=1",
]

[tool.ruff]
line-length = 100  # ours

[tool.ruff.lint]
select = ["E", "F"]

[unrelated]
z = 1
a = 2   # z before a
'literal key'= "odd key"
# the end, no newline after it"""


def test_pyproject_keeps_every_byte_and_gains_only_the_table(repo: Path, capsys) -> None:
    write(repo, "pyproject.toml", PYPROJECT)

    assert main(["init", str(repo)]) == 0
    capsys.readouterr()

    text = (repo / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT + "\n\n[tool.moltbuild]\n")
    added = tomllib.loads(text[len(PYPROJECT) :])
    assert list(added) == ["tool"] and list(added["tool"]) == ["moltbuild"]
    data = tomllib.loads(text)
    assert list(data) == ["project", "tool", "unrelated"]
    assert list(data["tool"]) == ["ruff", "moltbuild"]
    assert list(data["unrelated"]) == ["z", "a", "literal key"]
    assert data["project"]["dependencies"] == ["b>=2", "a>=1"]
    assert data["tool"]["moltbuild"]["registry"] == "ghcr.io/o"
    assert sorted(data["tool"]["moltbuild"]["images"]) == ["api", "report"]


def test_odd_names_are_quoted_by_tomlkit(tmp_path: Path, capsys) -> None:
    write(tmp_path, 'we"ird.app/Dockerfile', "FROM scratch\n")

    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()

    tool = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["moltbuild"]
    assert tool["images"] == {
        "we-ird-app": {"repository": "we-ird-app", "context": 'we"ird.app/', "dockerfile": "Dockerfile"}
    }


def test_a_tool_table_that_cannot_take_the_table_is_one_line(repo: Path, capsys) -> None:
    original = "tool = {black = {line-length = 100}}\n"
    write(repo, "pyproject.toml", original)

    assert main(["init", str(repo)]) == 2
    err = capsys.readouterr().err

    # The file is valid: the planned table is what does not fit, and the fix is said.
    said = "the [tool.moltbuild] table init planned does not load beside this file ("
    assert err.startswith(f"error: {repo / 'pyproject.toml'}: {said}")
    assert "invalid" not in err
    assert err.endswith(
        "pyproject.toml itself is fine and unchanged: `tool` here is an inline table, which a "
        "[tool.moltbuild] header cannot extend: make it [tool.NAME] tables, then run init again\n"
    )
    assert len(err.splitlines()) == 1
    assert (repo / "pyproject.toml").read_text() == original
