"""A registry that freezes (SIGSTOP: connections accepted, nothing answered) the moment the push
starts: the run ends by itself within 4x MOLTBUILD_IDLE_TIMEOUT of the freeze, naming the registry,
and `invoke verify` then fails within its bound too. Only the processes the test started are
signalled: the registry it started, and the run in its own cgroup."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import need
from tests.integration.conftest import invoke, push_env, run_frozen_when
from tests.support import proctree
from tests.support.proctree import ProcessTree

pytestmark = pytest.mark.integration

IDLE = 5
PUSH_LINE = re.compile(r"buildah\b.*\bpush\b")
ARGS = ["build", "--push", "--api-only", "--no-smoke"]


def run_frozen_at_push(project: Path, env: dict[str, str], reg: LocalRegistry, tree, log: Path):
    """`invoke build --push --rebuild`; SIGSTOP the registry when the push line shows up.
    Returns (exit code, output, seconds from the freeze to the run's end)."""
    ready = lambda: PUSH_LINE.search(log.read_text()) is not None  # noqa: E731
    return run_frozen_when(project, [*ARGS, "--rebuild"], env, reg, tree, log, ready, wait=10 * IDLE)


def test_a_registry_frozen_at_push_ends_the_run_and_verify_within_bounds(
    git_project, mirror, storage_root, tmp_path
):
    need(proctree.available(), "needs a cgroup of its own to watch only its process tree (root)")
    reg = LocalRegistry(tmp_path / "frozen", Runner(environ=os.environ)).start()
    env = push_env(mirror, storage_root, reg, MOLTBUILD_IDLE_TIMEOUT=str(IDLE), MOLTBUILD_BACKEND="buildah")
    try:
        first = invoke(git_project, *ARGS, env=env, timeout=600)  # a healthy push: verify has digests
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr
        pushed = tmp_path / "pushed.json"  # its report: verify asks the frozen registry for each tag
        pushed.write_text((git_project / "build" / "images.json").read_text())
        with ProcessTree() as tree:
            code, output, seconds = run_frozen_at_push(git_project, env, reg, tree, tmp_path / "run.log")
            assert code not in (None, 0), output[-3000:]
            print(f"build ended {seconds:.1f}s after the freeze: {output.splitlines()[-1]}")
            assert seconds < 4 * IDLE, f"{seconds:.1f}s after the freeze:\n{output[-3000:]}"
            assert reg.host in output.splitlines()[-1] or reg.host in output[-1000:], output[-3000:]
            assert "Traceback" not in output
            assert tree.wait_empty(timeout=5), f"left running: {tree.cmdlines()}"
        start = time.monotonic()
        verified = invoke(git_project, "verify", env=env, timeout=10 * IDLE)
        seconds = time.monotonic() - start
        assert verified.returncode != 0, verified.stdout + verified.stderr
        print(f"verify took {seconds:.1f}s: {verified.stderr.strip().splitlines()[-1]}")
        assert seconds < 4 * IDLE, f"verify took {seconds:.1f}s"
        assert reg.host in verified.stderr, verified.stdout + verified.stderr
        assert "did not answer" in verified.stdout + verified.stderr or "not-pushed" in verified.stdout
        start = time.monotonic()
        asked = invoke(git_project, "verify", "--report", str(pushed), env=env, timeout=10 * IDLE)
        seconds = time.monotonic() - start
        print(f"verify of the pushed report took {seconds:.1f}s: {asked.stderr.strip().splitlines()[-1]}")
        assert asked.returncode != 0, asked.stdout + asked.stderr
        assert seconds < 4 * IDLE, f"verify took {seconds:.1f}s"
        assert f"{reg.host} did not answer within 15s (MOLTBUILD_IDLE_TIMEOUT=5): verify" in asked.stderr
    finally:
        if reg.pid:
            os.kill(reg.pid, signal.SIGCONT)
        reg.stop()
