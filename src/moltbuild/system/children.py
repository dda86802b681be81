"""The process trees this tool starts: stopping them all (Ctrl-C, a failed sibling), and cutting
one that moves no byte for too long (IdleWatch). Read from each child's own /proc entries."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from moltbuild.system import state


def terminate_all(grace: float = 5.0) -> None:
    """Stop every child this process started and everything they started (Ctrl-C, a failed
    sibling build). Builders re-exec into new sessions, so process groups alone miss some."""
    procs = state.children()
    trees = {proc: _tree(proc.pid) for proc in procs}
    for proc, tree in trees.items():
        signal_group(proc, signal.SIGTERM)
        for pid in tree:
            _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    for proc, tree in trees.items():
        signal_group(proc, signal.SIGKILL)
        for pid in tree:
            _kill(pid, signal.SIGKILL)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a child, its group and every descendant (one in its own session holds pipes too)."""
    for pid in _tree(proc.pid):
        _kill(pid, signal.SIGKILL)
    signal_group(proc, signal.SIGKILL)


IDLE_CUT = "(i/o timeout, MOLTBUILD_IDLE_TIMEOUT): cut"  # in the tail of a command cut for idleness
PROGRESS_RATE = 16  # bytes/s that count as progress: a stuck buildah still moves a few bytes a second


class IdleWatch:
    """Cuts a child whose process tree has read and written nothing for `limit` seconds: a
    stalled registry makes a push or pull hang silently, not fail. Counts every read and write
    syscall of the tree (/proc/PID/io rchar + wchar), sockets included; a trickle below
    PROGRESS_RATE bytes a second (a runtime's timers, a ticking progress line) is no progress."""

    def __init__(self, proc: subprocess.Popen, limit: float | None):
        self.proc, self.limit, self.stalled = proc, limit or 0.0, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True) if limit else None
        if self._thread:
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread:
            self._thread.join()

    def _watch(self) -> None:
        last, since = -1, time.monotonic()
        while not self._done.wait(min(1.0, self.limit / 10)):
            moved = sum(_io_bytes(pid) for pid in [self.proc.pid, *_tree(self.proc.pid)])
            if abs(moved - last) >= PROGRESS_RATE * (time.monotonic() - since):
                last, since = moved, time.monotonic()
            elif time.monotonic() - since >= self.limit:
                self.stalled = True
                kill_tree(self.proc)
                return

    def message(self) -> str:
        return f"no progress for {self.limit:.0f}s {IDLE_CUT}; is the registry answering?"


@contextlib.contextmanager
def watching(proc: subprocess.Popen, idle_timeout: float | None) -> Iterator[IdleWatch]:
    """While the caller waits on `proc`: cut it after `idle_timeout` seconds without progress
    (None: never); afterwards the watch stops and the child is no longer tracked."""
    watch = IdleWatch(proc, idle_timeout)
    try:
        yield watch
    finally:
        watch.stop()
        state.untrack(proc)


def _io_bytes(pid: int) -> int:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(fields.get("rchar", 0)) + int(fields.get("wchar", 0))


def _tree(pid: int) -> list[int]:
    """The descendants of one of our children, from its own /proc entries (no /proc scan)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{current}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found
