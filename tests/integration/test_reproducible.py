"""Same commit, same digest (a rebuild, another clone, another storage); storage that does not
grow with every build; `invoke clean` removes only what the tool created."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from moltbuild.backends.buildah import storage_flags
from moltbuild.registry.client import ACCEPT
from tests.integration.conftest import build_env, invoke, read_report, registry_digest, release_storage

pytestmark = pytest.mark.integration


@pytest.fixture()
def storages(tmp_path) -> Iterator[list[Path]]:
    roots = [tmp_path / "machine-a" / "storage", tmp_path / "machine-b" / "storage"]
    yield roots
    for root in roots:
        release_storage(root)


def build_api(project: Path, env: dict[str, str], *flags: str) -> dict:
    out = invoke(project, "build", "--push", "--api-only", "--no-smoke", *flags, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    return read_report(project)["api"]


def commit_time(project: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(project), "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC"},
    ).stdout.strip()


def test_same_commit_same_digest_on_rebuild_and_on_another_machine(git_project, mirror, storages, tmp_path):
    env_a = build_env(mirror, storages[0], "repro")
    first = build_api(git_project, env_a, "--rebuild")
    again = build_api(git_project, env_a, "--rebuild", "--no-cache")  # no layer reused: built anew

    clone = tmp_path / "machine-b" / "clone"  # other paths, other file times
    subprocess.run(["git", "clone", "-q", str(git_project), str(clone)], check=True)
    other = build_api(clone, build_env(mirror, storages[1], "repro"), "--rebuild")

    assert first["digest"] == again["digest"] == other["digest"], (first, again, other)
    assert registry_digest(mirror.url, "repro/moltbook-api", first["tags"][0]) == first["digest"]
    api = f"{mirror.url}/v2/repro/moltbook-api"
    accept = {"Accept": ACCEPT}
    manifest = requests.get(f"{api}/manifests/{first['digest']}", headers=accept, timeout=10).json()
    config = requests.get(f"{api}/blobs/{manifest['config']['digest']}", timeout=10).json()
    assert config["created"].startswith(commit_time(git_project).removesuffix("Z"))


def test_docker_rebuild_gives_the_same_digest(git_project, mirror, storage_root, dockerd):
    env = build_env(mirror, storage_root, "reprod", DOCKER_HOST=dockerd, MOLTBUILD_BACKEND="docker")
    first = build_api(git_project, env, "--rebuild")
    again = build_api(git_project, env, "--rebuild")
    assert first["backend"] == "docker"
    assert first["digest"] == again["digest"]


def images(root: Path) -> dict[str, list[str]]:
    out = subprocess.run(
        ["podman", *storage_flags(root), "images", "--all", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {i["Id"]: i.get("Names") or [] for i in json.loads(out or "[]")}


def new_commit(project: Path, n: int) -> None:
    (project / "api" / "moltbook_api" / f"change_{n}.py").write_text(f"N = {n}\n")
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", f"change {n}"], check=True)


def foreign_images(root: Path, tmp_path: Path) -> set[str]:
    """One named and one untagged image this tool did not create."""
    buildah = ["buildah", *storage_flags(root), "--storage-driver", "overlay"]
    made = set()
    for name in ("localhost/foreign:1", None):
        ctr = subprocess.run([*buildah, "from", "scratch"], capture_output=True, text=True, check=True)
        argv = [*buildah, "commit", "--rm", "-q", ctr.stdout.strip(), *([name] if name else [])]
        made.add(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())
    return made


def test_storage_keeps_one_chain_per_image_and_clean_touches_only_its_own(
    git_project, mirror, storages, tmp_path
):
    root = storages[0]
    env = build_env(mirror, root, "hygiene")
    foreign = foreign_images(root, tmp_path)
    first = build_api(git_project, env)
    after_one = images(root)
    for n, keep in ((2, ""), (3, "0")):  # an explicit 0 (off) prunes like the default
        new_commit(git_project, n)
        latest = build_api(git_project, {**env, "MOLTBUILD_KEEP_IMAGES": keep})
    after_three = images(root)
    assert len(after_three) == len(after_one), "each build left images behind"
    names = [n for ns in after_three.values() for n in ns]
    assert not [n for n in names if first["tags"][0] in n], "the superseded build kept its local tag"
    assert any(latest["tags"][0] in n for n in names)
    assert foreign <= set(after_three)

    new_commit(git_project, 4)
    build_api(git_project, {**env, "MOLTBUILD_KEEP_IMAGES": "1"})
    assert len(images(root)) > len(after_one)
    dry = invoke(git_project, "clean", "--backend", "buildah", "--dry-run", env=env)
    assert dry.returncode == 0 and "would remove" in dry.stdout, dry.stdout + dry.stderr
    assert len(images(root)) > len(after_one)  # a dry run removes nothing
    out = invoke(git_project, "clean", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    left = images(root)
    assert foreign <= set(left)
    assert len(left) == len(after_one)  # the last build's chain, as after one build

    doctor = invoke(git_project, "doctor", env=env)
    assert f"buildah: {len(left)} image(s)" in doctor.stdout, doctor.stdout

    out = invoke(git_project, "clean", "--all", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    left = images(root)
    assert foreign <= set(left)
    names = [n for ns in left.values() for n in ns]
    assert not [n for n in names if "hygiene/" in n], names  # every image the tool built is gone
    assert set(left) - foreign == {i for i, ns in left.items() if ns and "python" in ns[0]}  # the base stays
