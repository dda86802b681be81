"""The process-wide state, in one place (and nowhere else): what signal handling needs, and the
caches that outlive one call.

Ctrl-C, SIGTERM and a failed sibling build must reach things no single object owns: every child
process tree, every running smoke container, and the secrets an error line must not show. The
caches (`command_cache`: the rendered manifests; the parsed pyproject.toml, which lives below this
layer in project.py) last one command. Each command starts with `begin_command()`, so nothing from
an earlier command in the same process (tests, a long-lived invoke) leaks into the next.
"""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from moltbuild import project

_F = TypeVar("_F", bound=Callable[..., Any])

_lock = threading.Lock()
_children: set[subprocess.Popen] = set()  # started by a Runner, not yet reaped
_cleanups: dict[str, Callable[[], None]] = {}  # e.g. a smoke container's removal, by name
_secrets: set[str] = set()  # every secret a Runner of this process was given
_interrupted = threading.Event()  # set on Ctrl-C / SIGTERM: no new smoke check starts
_said: set[str] = set()  # warnings given once per process
_noted: set[str] = set()  # notes given once per command (begin_command empties it)
_caches: list[Callable[[], None]] = [project.clear_cache]  # each cache's clear(), emptied per command


def begin_command() -> None:
    """A new command: a previous command's interruption and cached readings no longer apply."""
    _interrupted.clear()
    clear_caches()
    with _lock:
        _noted.clear()


def command_cache(maxsize: int) -> Callable[[_F], _F]:
    """functools.lru_cache that `begin_command()` empties: a reading cached for one command."""

    def wrap(func: _F) -> _F:
        cached = functools.lru_cache(maxsize=maxsize)(func)
        with _lock:
            _caches.append(cached.cache_clear)
        return cached  # type: ignore[return-value]

    return wrap


def clear_caches() -> None:
    with _lock:
        clears = list(_caches)
    for clear in clears:
        clear()


def interrupt() -> None:
    _interrupted.set()


def interrupted() -> bool:
    return _interrupted.is_set()


def track(proc: subprocess.Popen) -> None:
    with _lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen) -> None:
    with _lock:
        _children.discard(proc)


def children() -> list[subprocess.Popen]:
    with _lock:
        return list(_children)


def on_interrupt(key: str, cleanup: Callable[[], None]) -> None:
    """Run `cleanup` if the command is interrupted before `done(key)`."""
    with _lock:
        _cleanups[key] = cleanup


def done(key: str) -> None:
    with _lock:
        _cleanups.pop(key, None)


def run_cleanups() -> None:
    with _lock:
        pending = list(_cleanups.values())
    for cleanup in pending:
        cleanup()


def remember_secrets(values: set[str] | list[str]) -> None:
    with _lock:
        _secrets.update(v for v in values if v)


def first_time(key: str) -> bool:
    """True the first time `key` is asked about in this process: a warning said once."""
    with _lock:
        if key in _said:
            return False
        _said.add(key)
        return True


def first_in_command(key: str) -> bool:
    """True the first time `key` is asked about in this command: a note said once, not once per
    image or thread that meets the same thing."""
    with _lock:
        if key in _noted:
            return False
        _noted.add(key)
        return True


def known_secrets() -> list[str]:
    """Longest first, so a secret that contains another is masked whole."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def known_cleanups() -> list[str]:
    """The keys of cleanups still pending (what a Ctrl-C now would remove)."""
    with _lock:
        return list(_cleanups)
