"""Exactly one test's process tree: a cgroup of its own, entered by the process the test starts.

Every descendant inherits the cgroup, re-exec'd builders and new sessions included, so a test
watches `cgroup.procs` instead of scanning every process on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

BASES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


def available() -> bool:
    return os.geteuid() == 0 and any((base / "cgroup.procs").is_file() for base in BASES)


class ProcessTree:
    def __init__(self) -> None:
        base = next(b for b in BASES if (b / "cgroup.procs").is_file())
        self.path = base / f"moltbuild-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def enter(self) -> None:
        """preexec_fn of the process the test starts: it and its descendants join the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def cmdlines(self) -> list[str]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                found.append(self._cmdline(pid))
        return found

    @staticmethod
    def _cmdline(pid: int) -> str:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()

    def environs(self) -> list[tuple[str, str]]:
        """(cmdline, environment block) of every process in the tree."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                env = Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
                cmd = self._cmdline(pid)
                if cmd:  # empty: the process is mid-exec or exiting; the next sample names it
                    found.append((cmd, env))
        return found

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in cmd for cmd in self.cmdlines()):
                return True
            time.sleep(0.05)
        return False

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.pids()

    def close(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait_empty(10)
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def __enter__(self) -> ProcessTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
