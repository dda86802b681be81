"""The test session's cluster: one per machine, shared by every test session on it.

A session reuses a running cluster (this checkout's or another's: the bridge and its address are
machine-wide), else starts one and stops it at its end, unless another session still uses it.
Each session holds a shared lock on USERS while it runs; the one that started the cluster stops it
only if it can then take the lock exclusively. Starting is serialized by START, so two sessions
never start two clusters at once."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from tests.support.cluster import cluster, procs

START = Path("/run/moltbuild-cluster.start")
USERS = Path("/run/moltbuild-cluster.users")


def running_state() -> Path | None:
    """The state folder of the cluster running on this machine, if one runs completely."""
    for state in (Path(cluster.OWNER.read_text()) if cluster.OWNER.exists() else None, cluster.STATE):
        if state and (state / "env").exists() and set(procs.running(state)) >= set(cluster.COMPONENTS):
            return state
    return None


@contextlib.contextmanager
def shared_cluster(may_start: bool, log=print) -> Iterator[Path | None]:
    """Yields the running cluster's state folder (None: none runs and MAY_START is false)."""
    with USERS.open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        with START.open("a") as start:
            fcntl.flock(start, fcntl.LOCK_EX)  # another session may be starting one right now
            state, started = running_state(), False
            if state is None and may_start:
                cluster.up(log=log)
                state, started = cluster.STATE, True
            if state is not None and not started:
                log(f"cluster: reusing the one running from {state}")
        try:
            yield state
        finally:
            if started:
                _stop_unless_used(users, log)


def _stop_unless_used(users, log) -> None:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("cluster: left running: another test session on this machine uses it")
        return
    cluster.down(log=log)
