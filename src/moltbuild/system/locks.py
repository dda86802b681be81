"""Run locks that say who holds them. A second run does not wait in silence: it prints the
holder (pid, command, since when) and waits for it; a crashed holder's lock goes with its process
(fcntl locks through filelock). A lock guarding a file the project tracks lives outside the work
tree (`lock_outside_tree`): a lock file beside it would make the next build `-dirty`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from filelock import FileLock, Timeout

from moltbuild.errors import MoltbuildError
from moltbuild.system.processes import Runner


@contextlib.contextmanager
def held(
    lock_path: Path, what: str, subject: str, say: Callable[[str], None], *, timeout: float = 3600
) -> Iterator[None]:
    """Hold `lock_path` for `what` (e.g. "invoke build --push"); `subject` names what it guards
    in the waiting message ("build/images.json", "the buildah storage at ...")."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(str(lock_path)), lock_path.with_suffix(".holder")
    try:
        # A holder that is just starting (its name not written yet) or just ending: a short wait
        # says nothing, and a longer one can name who it waits for.
        lock.acquire(timeout=1)
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


def lock_outside_tree(guarded: Path, runner: Runner) -> Path:
    """The lock file for `guarded`, never in a work tree (an untracked file there makes the next
    build `-dirty` and withholds `latest`): in a git checkout the repository's own folder
    (`git rev-parse --git-path moltbuild/`, per worktree), elsewhere the user's cache
    (~/.cache/moltbuild/locks). Named after the file and a hash of its absolute path, so every run
    on the same file takes the same lock. Computing it creates nothing."""
    absolute = guarded.resolve()
    folder = _git_folder(absolute.parent, runner) or _cache_folder(runner.environ) / "locks"
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:16]
    return folder / f"{absolute.name}-{digest}.lock"


def _git_folder(directory: Path, runner: Runner) -> Path | None:
    argv = ["git", "-C", str(directory), "rev-parse", "--git-path", "moltbuild/"]
    try:
        res = runner.run(argv, mutates=False, check=False, timeout=30)
    except MoltbuildError:  # git is not installed: not a checkout we could dirty through git
        return None
    out = res.stdout.strip()
    return (directory / out).resolve() if res.ok and out else None


def user_cache(environ: Mapping[str, str]) -> Path:
    """The user's moltbuild cache folder (XDG_CACHE_HOME or ~/.cache)."""
    return _cache_folder(environ)


def _cache_folder(environ: Mapping[str, str]) -> Path:
    cache = environ.get("XDG_CACHE_HOME", "")
    if cache and Path(cache).is_absolute():
        return Path(cache) / "moltbuild"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "moltbuild"
