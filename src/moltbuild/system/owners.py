"""Who left what: a token naming this process (pid and start time, so a reused pid does not count
as the owner), and private temp dirs named after their owner, so a run killed with SIGKILL leaves
nothing the next run does not reap (an auth.json holds a registry credential)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "moltbuild-p"  # moltbuild-p<pid>.<start>-<random>: only these are ever reaped
_NAME = re.compile(r"moltbuild-p(\d+)\.(\d+)-")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), "0" without /proc, None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else "0"
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]


def token(pid: int | None = None) -> str:
    """'<pid>.<start>' of this process (or `pid`)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid) or 0}"


def alive(owner: str) -> bool:
    """Whether the process a token names still runs (a malformed token counts as alive: kept)."""
    pid, _, start = owner.partition(".")
    if not pid.isdigit() or not start.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(int(pid))
    return now is not None and (now == start or "0" in (now, start))


@contextlib.contextmanager
def private_dir() -> Iterator[str]:
    """A 0700 temp dir named after this process; removed on exit, reaped by a later run if not."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{token()}-") as tmp:
        yield tmp


def make_private_dir() -> str:
    """Like `private_dir`, for a caller that removes it itself."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{token()}-")


def reap_temp_dirs(where: str | None = None) -> list[Path]:
    """Remove this user's moltbuild-p* dirs under the system temp dir whose owner is gone."""
    gone = []
    for path in Path(where or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        found = _NAME.match(path.name)
        with contextlib.suppress(OSError):
            if not found or path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
            if not alive(f"{found[1]}.{found[2]}"):
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path)
    return gone
