"""Two runs at once take turns when they share a checkout's report or an image store, and the
second says who it waits for: shared buildah storage races in its layer cache (a half-committed
`<hex>-tmp` image lands in the other build's history, so one commit gets two digests). Both
succeed, and the registry, the reports and `invoke verify` agree."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import assert_report_matches_registry, build_env, invoke

pytestmark = pytest.mark.integration


def start(project, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "build", "--push", "--rebuild", "--no-smoke"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_when_held(first: subprocess.Popen, holder: Path, project, env) -> subprocess.Popen:
    """Start the second run once the first holds the lock (its holder file written): two runs
    started together may not overlap on a loaded machine, and then neither has to wait."""
    deadline = time.monotonic() + 300
    while not holder.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, f"the first run never took {holder}"
        time.sleep(0.05)
    return start(project, env)


def test_two_runs_on_one_checkout_take_turns(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "turns")
    first = start(git_project, env)
    second = start_when_held(first, git_project / "build" / "images.json.run.holder", git_project, env)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    waited = [out for out, _ in outs if "waiting: pid " in out]
    assert len(waited) == 1 and "`invoke build --push`" in waited[0], outs
    assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    verified = invoke(git_project, "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_two_checkouts_sharing_one_storage_take_turns_and_agree(git_project, mirror, storage_root, tmp_path):
    clone = tmp_path / "second-checkout"
    subprocess.run(["git", "clone", "-q", str(git_project), str(clone)], check=True)
    env = build_env(mirror, storage_root, "shared")
    first = start(git_project, env)
    runs = [first, start_when_held(first, storage_root / "moltbuild" / "run.holder", clone, env)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    waited = [out for out, _ in outs if "waiting: pid " in out]
    assert len(waited) == 1 and "is using the image store at" in waited[0], outs
    first = assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    second = assert_report_matches_registry(clone, mirror.url, {"api", "frontend"})
    assert {n: e["digest"] for n, e in first.items()} == {n: e["digest"] for n, e in second.items()}
    for project in (git_project, clone):
        verified = invoke(project, "verify", env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
