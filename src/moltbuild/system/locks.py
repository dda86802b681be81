"""Run locks that say who holds them. A second run does not wait in silence: it prints the
holder (pid, command, since when) and waits for it; a crashed holder's lock goes with its process
(fcntl locks through filelock)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from moltbuild.errors import MoltbuildError


@contextlib.contextmanager
def held(
    lock_path: Path, what: str, subject: str, say: Callable[[str], None], *, timeout: float = 3600
) -> Iterator[None]:
    """Hold `lock_path` for `what` (e.g. "invoke build --push"); `subject` names what it guards
    in the waiting message ("build/images.json", "the buildah storage at ...")."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(str(lock_path)), lock_path.with_suffix(".holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = _holder(holder)
        say(f"waiting: {who} is using {subject}; this run goes on when it ends")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise MoltbuildError(
                f"{subject} stayed in use by {who} for {timeout:.0f}s; let it end, or stop it"
            ) from None
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "what": what, "since": time.strftime("%H:%M:%S")}))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} (`{info['what']}`, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"


def run_lock(path: Path, what: str, say: Callable[[str], None]) -> contextlib.AbstractContextManager:
    """One run at a time per report: two runs writing the same report and the same tags could
    each exit 0 with the report naming one image and the registry another."""
    return held(Path(str(path) + ".run.lock"), what, str(path), say)
