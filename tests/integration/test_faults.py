"""The standing fault suite: real pushes through a fault-injecting proxy in front of a real
registry. Each fault either succeeds within bounds or fails clearly within bounds; afterwards every
tag the registry has carries the reported digest, or the report says the image was not pushed, and
`invoke verify` agrees. Zero split tags."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests

from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import need
from tests.integration.conftest import (
    build_env,
    interrupt_when,
    invoke,
    leftover_temp_dirs,
    read_report,
    registry_digest,
)
from tests.support import proctree
from tests.support.fault_proxy import FaultProxy
from tests.support.proctree import ProcessTree

pytestmark = pytest.mark.integration

UPLOAD = r"^(PATCH|PUT) /v2/.+/blobs/uploads/"


@pytest.fixture()
def target(tmp_path) -> Iterator[LocalRegistry]:
    """A registry of the test's own: what it holds afterwards is what this test pushed."""
    with LocalRegistry(tmp_path / "target", Runner(environ=os.environ)) as reg:
        yield reg


def fault_env(proxy: FaultProxy, mirror, storage_root, **settings: str) -> dict[str, str]:
    return build_env(
        mirror,
        storage_root,
        "unused",
        MOLTBUILD_REGISTRY=f"{proxy.host}/faults",
        MOLTBUILD_INSECURE_REGISTRIES=f"{mirror.host},{proxy.host}",
        MOLTBUILD_BACKEND="buildah",
        # These faults are meant for the image push; faults on the registry layer cache, which
        # `bud` reads and writes, are tests/integration/test_registry_cache.py's.
        MOLTBUILD_REGISTRY_CACHE="0",
        **settings,
    )


def push_through(proxy: FaultProxy, git_project, mirror, storage_root, **settings: str):
    env = fault_env(proxy, mirror, storage_root, **settings)
    start = time.monotonic()
    out = invoke(
        git_project, "build", "--push", "--api-only", "--no-smoke", "--rebuild", env=env, timeout=300
    )
    return out, time.monotonic() - start, env


def registry_tags(reg: LocalRegistry) -> dict[str, str]:
    resp = requests.get(f"{reg.url}/v2/faults/moltbook-api/tags/list", timeout=10)
    tags = (resp.json().get("tags") or []) if resp.ok else []
    return {t: registry_digest(reg.url, "faults/moltbook-api", t) for t in tags}


def assert_no_split_tags(git_project, reg: LocalRegistry, env: dict[str, str]) -> dict:
    """Every tag in the registry is one the report records, at the reported digest."""
    entry = read_report(git_project)["api"]
    served = registry_tags(reg)
    if entry["pushed"]:
        assert set(served) == set(entry["tags"]), (served, entry["tags"])
        assert set(served.values()) == {entry["digest"]}
    else:
        assert entry["push"] is True and entry["error"], entry
        stale = {t: d for t, d in served.items() if d != entry.get("digest")}
        assert not stale or not entry.get("digest"), stale
    verified = invoke(git_project, "verify", env=env)
    assert (verified.returncode == 0) == entry["pushed"], verified.stdout + verified.stderr
    return entry


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param([(UPLOAD, "reset")], id="reset-mid-blob"),
        pytest.param(
            [(r"^PUT /v2/.+/manifests/", "503"), (r"^PUT /v2/.+/manifests/", "503")], id="503-retry-after"
        ),
        pytest.param([(r"^PUT /v2/.+/manifests/", "429")], id="429-on-a-tag"),
        pytest.param([(r"^HEAD /v2/.+/blobs/", "503")], id="503-on-blob-check"),
    ],
)
def test_transient_faults_during_a_push_are_retried(rules, git_project, mirror, storage_root, target):
    proxy = FaultProxy(target.url, rules=rules, retry_after="1").start()
    try:
        out, seconds, env = push_through(proxy, git_project, mirror, storage_root)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert seconds < 120
        assert all(not r for r in proxy.rules), proxy.rules  # every fault was hit
        entry = assert_no_split_tags(git_project, target, env)
        assert entry["pushed"] and len(registry_tags(target)) == len(entry["tags"])
    finally:
        proxy.stop()


def test_a_stalled_upload_is_cut_after_the_idle_timeout_and_retried(
    git_project, mirror, storage_root, target
):
    proxy = FaultProxy(target.url, rules=[(UPLOAD, "stall")]).start()
    try:
        out, seconds, env = push_through(proxy, git_project, mirror, storage_root, MOLTBUILD_IDLE_TIMEOUT="3")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "no progress for 3s" in out.stdout
        assert seconds < 90
        assert assert_no_split_tags(git_project, target, env)["pushed"]
    finally:
        proxy.stop()


def test_a_registry_that_stays_stalled_fails_the_run_clearly_and_in_bounds(
    git_project, mirror, storage_root, target
):
    proxy = FaultProxy(target.url, rules=[(UPLOAD, "stall")] * 12).start()
    try:
        out, seconds, env = push_through(proxy, git_project, mirror, storage_root, MOLTBUILD_IDLE_TIMEOUT="2")
        assert out.returncode != 0
        assert seconds < 120  # 3 attempts of 2 s idle + backoff, far below the 5-minute bound
        assert "MOLTBUILD_IDLE_TIMEOUT" in out.stdout + out.stderr
        assert "[api] PUSH FAILED" in out.stdout and "[api] pushed" not in out.stdout
        assert "Traceback" not in out.stderr
        entry = assert_no_split_tags(git_project, target, env)
        assert not entry["pushed"] and registry_tags(target) == {}
    finally:
        proxy.stop()


def test_registry_killed_and_restarted_mid_push(git_project, mirror, storage_root, tmp_path):
    """The registry goes away after the first blob upload starts and is back 2 s later."""
    reg = LocalRegistry(tmp_path / "bouncing", Runner(environ=os.environ)).start()
    state = {"bounced": False}

    class Bouncer(FaultProxy):
        def next_fault(self, line: str) -> str:
            if not state["bounced"] and line.startswith("PATCH "):
                state["bounced"] = True
                reg.stop()  # killed with the upload in flight
                time.sleep(2)
                reg.start()  # same data, same port
                return "reset"
            return super().next_fault(line)

    proxy = Bouncer(reg.url).start()
    try:
        out, seconds, env = push_through(proxy, git_project, mirror, storage_root)
        assert state["bounced"]
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert seconds < 120
        assert assert_no_split_tags(git_project, reg, env)["pushed"]
    finally:
        proxy.stop()
        reg.stop()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_stalled_push_stops_everything_and_a_rerun_succeeds(
    sig, code, git_project, mirror, storage_root, target, tmp_path
):
    need(proctree.available(), "needs a cgroup of its own to watch only its process tree (root)")
    proxy = FaultProxy(target.url, rules=[(UPLOAD, "stall")]).start()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = fault_env(proxy, mirror, storage_root, TMPDIR=str(private_tmp))
    args = ["build", "--push", "--api-only", "--no-smoke", "--rebuild"]
    try:
        with ProcessTree() as tree:
            stalled = lambda: any(s.startswith("stall ") for s in proxy.seen)  # noqa: E731
            code_seen, err = interrupt_when(git_project, args, env, tree, stalled, sig, wait=120)
            assert code_seen == code, err
            assert tree.wait_empty(timeout=5), f"left running: {tree.cmdlines()}"
        assert not leftover_temp_dirs(private_tmp), "a temp dir (auth files) outlived the run"
        assert "Traceback" not in err
        report_path = git_project / "build" / "images.json"
        if report_path.exists():
            json.loads(report_path.read_text())  # whatever it holds is a whole file
    finally:
        proxy.stop()
    good = FaultProxy(target.url).start()  # the registry answers again
    try:
        out, _, env = push_through(good, git_project, mirror, storage_root)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert assert_no_split_tags(git_project, target, env)["pushed"]
    finally:
        good.stop()


def test_a_registry_answering_503_to_everything_fails_before_any_build(
    git_project, mirror, storage_root, target
):
    proxy = FaultProxy(target.url, default="503", retry_after="0").start()
    try:
        out, seconds, _ = push_through(proxy, git_project, mirror, storage_root)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode != 0 and len(lines) == 1, out.stderr
        assert "HTTP 503 after retries" in lines[0] and "is this a container registry" not in lines[0]
        assert "bud" not in out.stdout and seconds < 60
    finally:
        proxy.stop()
