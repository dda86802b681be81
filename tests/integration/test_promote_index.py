"""Signatures follow a promotion of a multi-platform index: `cosign sign --recursive` signs the
index and each platform manifest; `invoke tag --source` into another repository copies every one of
those `.sig` tags, so a user's `cosign verify` passes on the promoted index and on each platform's
digest. Real registry, real cosign."""

from __future__ import annotations

import json

import pytest

from moltbuild.registry.client import RegistryClient
from tests.conftest import need_tool
from tests.integration.conftest import build_env, invoke
from tests.integration.test_supply_chain import cosign, key_pair

pytestmark = pytest.mark.integration

PASSWORD = "promote-pw-2718"


def test_a_promoted_index_verifies_on_every_platform(git_project, mirror, storage_root, tmp_path):
    need_tool("cosign")
    client = RegistryClient(mirror.host, insecure_hosts=[mirror.host])
    index = client.copy("mirror/library/busybox", "1.36-multi", "promote/src", "1")
    found = client.manifest("promote/src", "1", method="GET")
    platforms = [c["digest"] for c in json.loads(found.body)["manifests"]]
    assert len(platforms) == 2
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    plain = ("--allow-http-registry", "--insecure-ignore-tlog=true", "--key", str(pub))
    source = f"{mirror.host}/promote/src@{index}"
    signed = cosign(
        "sign", "--yes", "--recursive", "--tlog-upload=false", "--allow-http-registry", "--key", str(key),
        source, home=tmp_path, password=PASSWORD,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr

    env = build_env(mirror, storage_root, "promote")
    promoted = invoke(
        git_project, "tag", "--source", f"{mirror.host}/promote/src:1", "--tag", "promote/dst:1", env=env
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert promoted.stdout.count("copied sha256-") == 3, promoted.stdout
    for digest in [index, *platforms]:
        checked = cosign("verify", *plain, f"{mirror.host}/promote/dst@{digest}", home=tmp_path)
        assert checked.returncode == 0, (digest, checked.stderr)
