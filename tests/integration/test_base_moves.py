"""A base tag that moved in the mirror is pulled again: the handbook's "bases are pulled once per
run" holds with a local copy from an earlier run (buildah 1.28 has no `--policy newer`; moltbuild
asks the registry, once per run, what the tag serves). Real registry, real buildah."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from moltbuild.backends.buildah import storage_flags
from moltbuild.registry.client import RegistryClient
from tests.integration.conftest import build_env, invoke, release_storage

pytestmark = pytest.mark.integration

BASE = "moved/library/busybox"


def move_tag(client: RegistryClient, name: str, tag: str, label: str) -> str:
    """Point `name:tag` at a new image: the same layers, a config with one more label."""
    found = client.manifest(name, tag, method="GET")
    assert found is not None
    manifest = json.loads(found.body)
    config = json.loads(client.blob(name, manifest["config"]["digest"]))
    config.setdefault("config", {}).setdefault("Labels", {})["moved"] = label
    data = json.dumps(config).encode()
    manifest["config"] |= {"digest": client.push_blob(name, data), "size": len(data)}
    return client.put_manifest(name, tag, json.dumps(manifest).encode(), found.media_type)


def local_digest(storage, name: str) -> str:
    flags = [*storage_flags(storage), "--storage-driver", "overlay"]
    out = subprocess.run(["buildah", *flags, "images", "--json", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0]["digest"]


def test_a_base_tag_moved_in_the_mirror_is_pulled_again(git_project, mirror, tmp_path):
    client = RegistryClient(mirror.host, insecure_hosts=[mirror.host])
    client.put_tags(BASE, ["1.36"], source_name="mirror/library/busybox", reference="1.36")
    storage = tmp_path / "storage"
    env = build_env(mirror, storage, "moves", MOLTBUILD_BASE_MIRROR=f"{mirror.host}/moved")
    argv = ("build", "--frontend-only", "--no-smoke", "--backend", "buildah")
    try:
        first = invoke(git_project, *argv, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        before = local_digest(storage, "docker.io/library/busybox:1.36")

        same = invoke(git_project, *argv, env=env)  # not moved: the local copy is kept
        assert same.returncode == 0 and "pulling it again" not in same.stdout, same.stdout

        label = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
        moved = move_tag(client, BASE, "1.36", label)
        again = invoke(git_project, *argv, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        line = f"base docker.io/library/busybox:1.36: {mirror.host}/moved/library/busybox:1.36 now serves"
        assert f"{line} {moved[:19]}, the local copy is {before[:19]}: pulling it again" in again.stdout
        assert local_digest(storage, "docker.io/library/busybox:1.36") == moved
    finally:
        release_storage(storage)
