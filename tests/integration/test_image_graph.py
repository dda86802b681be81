"""The image graph with real buildah and a real registry: a base, three services FROM it (one
two levels deep) and one independent image. The first push builds the base first and each
service FROM the base by digest; an unchanged rerun builds nothing; a change in the base rebuilds
exactly the base and its dependents, each holding the new base's layers (manifests read back)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from moltbuild.registry.client import ACCEPT
from tests.conftest import ROOT
from tests.integration.conftest import build_env, invoke, read_report

pytestmark = pytest.mark.integration

NS = "graph"
BUILD = ("build", "--push", "--no-smoke", "--jobs", "3")


def write_repo(root: Path, host: str) -> None:
    registry = f"{host}/{NS}"
    files = {
        "base/Dockerfile": "FROM busybox:1.36\nCOPY base.txt /base.txt\n",
        "base/base.txt": "base v1\n",
        # ARG substitution: the FROM names the base through a build arg's default
        "svc-a/Dockerfile": f"ARG REG={registry}\nFROM ${{REG}}/base:latest\nCOPY a.txt /a.txt\n",
        "svc-a/a.txt": "a\n",
        "svc-b/Dockerfile": f"FROM {registry}/base AS b\nCOPY b.txt /b.txt\n",
        "svc-b/b.txt": "b\n",
        "deep/Dockerfile": f"FROM {registry}/svc-a:main\nCOPY deep.txt /deep.txt\n",
        "deep/deep.txt": "deep\n",
        "solo/Dockerfile": "FROM busybox:1.36\nCOPY solo.txt /solo.txt\n",
        "solo/solo.txt": "solo\n",
    }
    tables = "".join(
        f'[tool.moltbuild.images.{n}]\nrepository = "{n}"\ncontext = "{n}"\n'
        for n in ("base", "svc-a", "svc-b", "deep", "solo")
    )
    files["pyproject.toml"] = f'[tool.moltbuild]\nregistry = "{registry}"\n{tables}'
    files[".gitignore"] = "build/\n"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    shutil.copy(ROOT / "tasks.py", root / "tasks.py")
    commit(root, "init", first=True)


def commit(root: Path, message: str, *, first: bool = False) -> None:
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    if first:
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


def layers(url: str, repository: str, digest: str) -> list[str]:
    resp = requests.get(f"{url}/v2/{repository}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=10)
    resp.raise_for_status()
    return [layer["digest"] for layer in resp.json()["layers"]]


def run(root: Path, env: dict[str, str]) -> dict[str, dict]:
    out = invoke(root, *BUILD, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    return read_report(root)


def assert_built_on(url: str, report: dict[str, dict], image: str, base: str) -> None:
    """`image` names `base` as built in this run, and starts with all of its layers."""
    rec, under = report[image], report[base]
    assert rec["base_image"] == under["repository"] and rec["base_digest"] == under["digest"]
    own = layers(url, f"{NS}/{image}", rec["digest"])
    base_layers = layers(url, f"{NS}/{base}", under["digest"])
    assert own[: len(base_layers)] == base_layers and len(own) > len(base_layers)


def test_a_base_change_rebuilds_the_base_and_its_dependents_on_the_new_base(mirror, storage_root, tmp_path):
    root = tmp_path / "repo"
    write_repo(root, mirror.host)
    env = build_env(mirror, storage_root, NS)

    first = run(root, env)
    assert {n: r["outcome"] for n, r in first.items()} == dict.fromkeys(first, "pushed")
    for image, base in (("svc-a", "base"), ("svc-b", "base"), ("deep", "svc-a")):
        assert_built_on(mirror.url, first, image, base)

    again = run(root, env)
    assert {r["outcome"] for r in again.values()} == {"reused"}  # nothing built
    assert again["deep"]["base_digest"] == first["svc-a"]["digest"]

    (root / "base" / "base.txt").write_text("base v2\n")
    commit(root, "base: v2")
    changed = invoke(root, "changed", "--json", env=env)
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["changed"] == ["base", "svc-a", "svc-b", "deep"]

    after = run(root, env)
    outcomes = {n: r["outcome"] for n, r in after.items()}
    assert outcomes == {
        "base": "pushed",
        "svc-a": "pushed",
        "svc-b": "pushed",
        "deep": "pushed",
        "solo": "reused",
    }
    assert after["base"]["digest"] != first["base"]["digest"]
    for image, base in (("svc-a", "base"), ("svc-b", "base"), ("deep", "svc-a")):
        assert_built_on(mirror.url, after, image, base)
        assert after[image]["digest"] != first[image]["digest"]
