"""The test session's cluster: one per machine, shared by every test session on it.

A session reuses a running cluster (this checkout's or another's: the bridge and its address are
machine-wide), else starts one and stops it at its end, unless another session still uses it.
Each session holds a shared lock on `moltbuild-cluster.users` while it runs; the one that started the
cluster stops it only if it can then take that lock exclusively. Starting is serialized by
`moltbuild-cluster.start`, so two sessions never start two clusters at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cluster import cluster, procs


def running_state() -> Path | None:
    """The state folder of the cluster running on this machine, if one runs completely."""
    for state in (Path(cluster.OWNER.read_text()) if cluster.OWNER.exists() else None, cluster.STATE):
        if state and (state / "env").exists() and set(procs.running(state)) >= set(cluster.COMPONENTS):
            return state
    return None


@dataclass
class Machine:
    """Where the locks live and how a cluster is found, started and stopped (tests pass fakes)."""

    locks: Path = Path("/run")
    running: Callable[[], Path | None] = running_state
    start: Callable[..., object] = field(default=lambda log: cluster.up(log=log))
    stop: Callable[..., object] = field(default=lambda log: cluster.down(log=log))
    state: Path = cluster.STATE


@contextlib.contextmanager
def shared_cluster(may_start: bool, log=print, machine: Machine | None = None) -> Iterator[Path | None]:
    """Yields the running cluster's state folder (None: none runs and MAY_START is false)."""
    m = machine or Machine()
    with (m.locks / "moltbuild-cluster.users").open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        with (m.locks / "moltbuild-cluster.start").open("a") as start:
            fcntl.flock(start, fcntl.LOCK_EX)  # another session may be starting one right now
            state, started = m.running(), False
            if state is None and may_start:
                m.start(log)
                state, started = m.state, True
            elif state is not None:
                log(f"cluster: reusing the one running from {state}")
        try:
            yield state
        finally:
            if started:
                _stop_unless_used(users, m, log)


@contextlib.contextmanager
def cluster_or_skip() -> Iterator[Path]:
    """The shared cluster for a test fixture: started when CI=true or MOLTBUILD_TEST_CLUSTER=1 allow
    it (`nox -s tests` sets it), else the tests that need it skip (a skip fails under CI=true)."""
    may_start = os.environ.get("CI") == "true" or os.environ.get("MOLTBUILD_TEST_CLUSTER") == "1"
    with shared_cluster(may_start) as state:
        if state is None:
            pytest.skip("no cluster: run `nox -s cluster` first, or set MOLTBUILD_TEST_CLUSTER=1")
        yield state


def _stop_unless_used(users, m: Machine, log) -> None:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("cluster: left running: another test session on this machine uses it")
        return
    m.stop(log)
