"""Making each locked Go tool ready in a tool folder: a binary already there or in a cache (a shared
folder such as MOLTBUILD_TOOL_CACHE, the GitHub Actions cache) is used only when its sha256 is the
lock's, else refused in one line and rebuilt with `go install` (the lock's flags, the checked module).
Each tool has a file lock, held while it is made ready, so two runs never build the same tool and a
command that needs a tool waits only for that one (`wait_ready`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from moltbuild.system import locks, state, toollock
from moltbuild.system.processes import Runner
from moltbuild.system.toollock import Lock, Tool


@dataclass(frozen=True)
class Places:
    bindir: Path  # where the tools go (on PATH)
    cache: Path | None  # a folder of verified binaries shared between machines/runs, or None
    state: Path  # the per-tool file locks and the background log

    @classmethod
    def of(cls, environ: Mapping[str, str], bindir: Path | None = None, cache: str = "") -> Places:
        return cls(bindir or default_bindir(environ), Path(cache) if cache else None, state_dir(environ))


def default_bindir(environ: Mapping[str, str]) -> Path:
    """On PATH everywhere for root, else the user's ~/.local/bin."""
    if os.geteuid() == 0:
        return Path("/usr/local/bin")
    return Path(environ.get("HOME") or Path.home()) / ".local" / "bin"


def state_dir(environ: Mapping[str, str]) -> Path:
    return locks.user_cache(environ) / "tools"


def lock_path(state: Path, name: str) -> Path:
    return state / f"{name}.lock"


def _matches(path: Path, expected: str | None) -> bool | None:
    """True/False when the lock has a hash for this platform, None when it has none."""
    if not path.is_file():
        return False
    return None if expected is None else toollock.sha256_file(path) == expected


def _install(source: Path, target: Path) -> None:
    """Copy then rename: never a half-copied binary on PATH (or in the cache)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.new")
    shutil.copyfile(source, partial)
    partial.chmod(0o755)
    os.replace(partial, target)


def go_found(runner: Runner) -> str | None:
    """The version of `go` on PATH ("1.26.8"), or None."""
    if not shutil.which("go", path=runner.environ.get("PATH")):
        return None
    res = runner.run(["go", "version"], mutates=False, check=False, timeout=60, env={"GOTOOLCHAIN": "local"})
    return toollock.go_version(res.stdout) if res.ok else None


def build(runner: Runner, lock: Lock, tool: Tool, into: Path) -> Path:
    """`go install module@version` with the lock's flags and environment into `into`; the Go is the
    one on PATH (GOTOOLCHAIN=local: never a download the lock did not name)."""
    env = {**lock.env, "GOBIN": str(into), "GOTOOLCHAIN": "local"}
    argv = ["go", "install", *lock.flags, f"{tool.module}@{tool.version}"]
    runner.run(argv, env=env, timeout=3600, what=f"go install {tool.name}", cwd=into)
    return into / tool.name


def make_ready(runner: Runner, lock: Lock, tool: Tool, places: Places, go: str | None) -> str:
    """The tool at places.bindir with the lock's hash; says what it did and returns it: present,
    restored, built, built-unlocked (no hash for this platform, or another Go) or missing."""
    expected = tool.sha256.get(toollock.platform())
    target = places.bindir / tool.name
    if _matches(target, expected):
        return "present"
    if target.is_file() and expected:
        runner.say(toollock.mismatch(tool, expected, toollock.sha256_file(target), target))
    cached = places.cache / tool.name / tool.version / tool.name if places.cache else None
    if cached and expected and cached.is_file():
        actual = toollock.sha256_file(cached)
        if actual == expected:
            _install(cached, target)
            runner.say(f"setup: {tool.title()} restored from {cached} (sha256 matches the lock)")
            return "restored"
        runner.say(toollock.mismatch(tool, expected, actual, cached) + "; rebuilding")
        cached.unlink()
    problem = toollock.floor_problem(tool, go, lock)
    if problem:
        runner.say(f"setup: {tool.name} not built: {problem}")
        return "missing"
    return _build_and_check(runner, lock, tool, places, go or "", expected, cached)


def _build_and_check(
    runner: Runner, lock: Lock, tool: Tool, places: Places, go: str, expected: str | None, cached: Path | None
) -> str:
    runner.say(f"setup: building {tool.title()} from {tool.module} with Go {go}")
    if runner.dry_run:
        build(runner, lock, tool, places.bindir)
        return "built"
    with tempfile.TemporaryDirectory(prefix="moltbuild-go-") as tmp:
        binary = build(runner, lock, tool, Path(tmp))
        actual = toollock.sha256_file(binary)
        _install(binary, places.bindir / tool.name)
        if actual == expected:
            if cached:
                _install(binary, cached)  # only a binary with the lock's hash enters a cache
            return "built"
    # Built here from the checksummed module, so used here; never cached, since nobody can check it.
    why = f"sha256 {actual[:16]}… is not the lock's"
    if expected is None:
        why = f"the lock has no hash for {toollock.platform()}"
    hint = f"(the lock's Go is {lock.go}, this is {go})" if go != lock.go else "(invoke setup --relock?)"
    runner.warn(f"setup: {tool.name} built here but not cached: {why} {hint}")
    return "built-unlocked"


def prepare(runner: Runner, lock: Lock, places: Places, names: list[str] | None = None) -> dict[str, str]:
    """Every tool (or `names`) ready, each under its file lock; a tool another run is preparing is
    waited for, not built twice. Returns name -> outcome."""
    outcomes = {}
    wanted = [lock.tools[n] for n in names] if names else list(lock.tools.values())
    with ExitStack() as stack:  # all locks first, in lock order: a waiter never sees a gap
        if runner.dry_run:  # a dry run creates nothing, lock files included
            held = [lambda: None for _ in wanted]
        else:
            held = [stack.enter_context(_hold(places.state, t.name, runner.say)) for t in wanted]
        go = go_found(runner)
        for tool, release in zip(wanted, held, strict=True):
            try:
                outcomes[tool.name] = make_ready(runner, lock, tool, places, go)
            finally:
                release()
    return outcomes


class _hold:
    """A tool's file lock, released early by calling what entering it returns."""

    def __init__(self, state: Path, name: str, say: Callable[[str], None]):
        state.mkdir(parents=True, exist_ok=True)
        self.lock, self.name, self.say = FileLock(str(lock_path(state, name))), name, say

    def __enter__(self) -> Callable[[], None]:
        try:
            self.lock.acquire(timeout=0.5)
        except Timeout:
            self.say(f"setup: another run is preparing {self.name}; waiting for it")
            self.lock.acquire()
        return self.release

    def release(self) -> None:
        if self.lock.is_locked:
            self.lock.release()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def wait_ready(
    environ: Mapping[str, str], name: str, say: Callable[[str], None], timeout: float = 3600
) -> None:
    """If a run (`invoke setup` in the background) is preparing `name`, wait until it is done."""
    path = lock_path(state_dir(environ), name)
    if not path.exists():
        return
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0.05)
    except Timeout:
        log = state_dir(environ) / "prepare.log"
        if state.first_in_command(f"waiting for {name}"):  # images attested at once wait for one tool
            say(f"waiting for {name}: `invoke setup` is still preparing it (progress: {log})")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return  # the caller then finds no tool and says so
    lock.release()


def preparing(environ: Mapping[str, str], name: str) -> bool:
    """Whether a run holds `name`'s lock right now (preparing it)."""
    path = lock_path(state_dir(environ), name)
    if not path.exists():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _targets(tool: Tool, places: Places | None) -> list[Path]:
    if places is None:
        return []
    cached = [places.cache / tool.name / tool.version / tool.name] if places.cache else []
    return [places.bindir / tool.name, *cached]


def untrack(proc: subprocess.Popen) -> None:
    state.untrack(proc)


def pause(proc: subprocess.Popen, seconds: float) -> None:
    """Wait up to `seconds` for `proc` (a readiness poll's step)."""
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


def build_fresh(runner: Runner, lock: Lock, tool: Tool, places: Places | None = None) -> tuple[str, str]:
    """For a relock: the sha256 of a fresh build and the `go` line of the module's go.mod; the
    binary installed in `places` (tool folder and cache), as the new lock will name it."""
    with tempfile.TemporaryDirectory(prefix="moltbuild-relock-") as tmp:
        binary = build(runner, lock, tool, Path(tmp))
        if runner.dry_run:
            return "0" * 64, tool.go_min
        digest = toollock.sha256_file(binary)
        for target in _targets(tool, places):
            _install(binary, target)
        stamped = runner.run(["go", "version", "-m", str(binary)], mutates=False, timeout=60).stdout
    module = next(f[1] for f in map(str.split, stamped.splitlines()) if f and f[0] == "mod")
    cache = runner.run(["go", "env", "GOMODCACHE"], mutates=False, timeout=60).stdout.strip()
    escaped = "".join(f"!{c.lower()}" if c.isupper() else c for c in module)
    gomod = Path(cache, "cache", "download", escaped, "@v", f"{tool.version}.mod").read_text()
    go_min = next((line.split()[1] for line in gomod.splitlines() if line.startswith("go ")), "1.0")
    return digest, go_min
