"""`invoke pipeline` (what `nox -s pipeline` runs): embedded registry, build, push, read back."""

from __future__ import annotations

import re
import subprocess

import pytest
import requests

from tests.integration.conftest import build_env, invoke, read_report

pytestmark = pytest.mark.integration


def test_pipeline_with_embedded_registry(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "unused")
    env.pop("MOLTBUILD_REGISTRY")
    out = invoke(git_project, "pipeline", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    host = re.search(r"embedded registry on (127\.0\.0\.1:\d+)", out.stdout).group(1)
    assert "all images built, pushed and verified" in out.stdout
    entries = read_report(git_project)
    assert {e["repository"] for e in entries.values()} == {
        f"{host}/ardenone/moltbook-api",
        f"{host}/ardenone/moltbook-frontend",
    }
    assert len(re.findall(r"\bok$", out.stdout, re.M)) == sum(len(e["tags"]) for e in entries.values())
    with pytest.raises(requests.ConnectionError):  # stopped at the end
        requests.get(f"http://{host}/v2/", timeout=2)
    status = subprocess.run(
        ["git", "-C", str(git_project), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert status == "", f"pipeline modified tracked or unignored files: {status}"


def test_pipeline_without_reachable_bases_names_the_image_and_the_mirror_setting(
    git_project, mirror, storage_root
):
    env = build_env(mirror, storage_root, "unused")
    for key in ("MOLTBUILD_REGISTRY", "MOLTBUILD_BASE_MIRROR"):
        env.pop(key)
    # a fresh graphroot: no base image cached from earlier tests
    env["MOLTBUILD_STORAGE_ROOT"] = str(storage_root.parent / "empty-storage")
    out = invoke(git_project, "pipeline", env=env)
    assert out.returncode != 0
    assert "cannot pull base image" in out.stderr and "MOLTBUILD_BASE_MIRROR" in out.stderr
    assert re.search(r"python:3\.12-slim|busybox:1\.36", out.stderr)
