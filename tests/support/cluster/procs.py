"""Processes the cluster starts: each in its own process group, recorded in STATE/pids.json with
its start time, so `down` (another process, later) stops exactly these and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], *, what: str, timeout: float = 60, log: Path | None = None) -> float:
    """Poll CHECK until true; returns the seconds waited. On timeout raise with the log's tail."""
    started = time.monotonic()
    delay = 0.02
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # not ready yet: connection refused, TLS, 5xx ...
            pass
        if time.monotonic() - started > timeout:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _table(state: Path) -> dict[str, dict]:
    path = state / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def start(state: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start NAME in a new session (its own process group), output to STATE/logs/NAME.log."""
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    table = _table(state)
    table[name] = {"pid": proc.pid, "start": _start_time(proc.pid), "argv": argv}
    (state / "pids.json").write_text(json.dumps(table, indent=1))
    return proc


def alive(entry: dict) -> bool:
    """Still running (not a zombie) and the same process (start time), not a reused pid."""
    with contextlib.suppress(ChildProcessError):  # reap our own child (up and down in one process)
        os.waitpid(entry["pid"], os.WNOHANG)
    try:
        fields = Path(f"/proc/{entry['pid']}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and fields[19] == entry.get("start")


def stop(entry: dict, *, timeout: float = 15) -> str | None:
    """SIGTERM the entry's process group, SIGKILL it after TIMEOUT; returns the signal that ended it
    (None when already gone)."""
    if not alive(entry):
        return None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(entry["pid"], sig)
        except ProcessLookupError:
            return sig.name
        try:
            wait_for(lambda: not alive(entry), what="exit", timeout=wait)
            return sig.name
        except TimeoutError:
            continue
    return None


def stop_all(state: Path, order: list[str] | None = None, log=print) -> list[str]:
    """Stop every recorded process (ORDER first, then the rest in reverse start order); returns
    those still alive."""
    table = _table(state)
    names = [n for n in (order or []) if n in table] + [n for n in reversed(table) if n not in (order or [])]
    for name in names:
        started = time.monotonic()
        how = stop(table[name])
        if how == "SIGKILL" or time.monotonic() - started > 2:
            log(f"cluster: {name} took {time.monotonic() - started:.1f} s to stop ({how})")
    return [n for n in names if alive(table[n])]


def running(state: Path) -> dict[str, int]:
    return {name: e["pid"] for name, e in _table(state).items() if alive(e)}


def stop_all_named(state: Path, names: list[str]) -> None:
    table = _table(state)
    for name in names:
        if name in table:
            stop(table[name])
