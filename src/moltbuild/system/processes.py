"""The only place that starts processes.

Commands are argv lists; secrets go through stdin or files, never argv; every echoed or
captured line is masked; in dry-run, commands that change anything are echoed, not run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moltbuild.errors import CommandError, ToolMissingError
from moltbuild.settings import KEYS, MASK, Secret
from moltbuild.system.live import LiveBoard

INSTALL_HINTS = {
    "buildah": "apt-get install -y buildah (or: invoke setup)",
    "skopeo": "apt-get install -y skopeo (or: invoke setup)",
    "docker": "apt-get install -y docker.io, or install Docker Desktop",
    "dockerd": "apt-get install -y docker.io (or: invoke setup)",
    "docker-registry": "apt-get install -y docker-registry (or: invoke setup)",
    "fuse-overlayfs": "apt-get install -y fuse-overlayfs (or: invoke setup)",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/",
    "git": "apt-get install -y git",
    "mount": "apt-get install -y mount",
}

SECRET_ENV_KEYS = frozenset(k for k, spec in KEYS.items() if spec.secret)

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_known_secrets: set[str] = set()  # every secret any Runner of this process was given


def mask_known_secrets(text: str) -> str:
    """Mask every secret this process knows; for lines printed outside a runner (errors)."""
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def terminate_all(grace: float = 5.0) -> None:
    """Stop every child this process started and everything they started (Ctrl-C, a failed
    sibling build). Builders re-exec into new sessions, so process groups alone miss some."""
    with _live_lock:
        procs = list(_live)
    trees = {proc: _descendants(proc.pid) for proc in procs}
    for proc, tree in trees.items():
        _signal_group(proc, signal.SIGTERM)
        for pid in tree:
            _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    for proc, tree in trees.items():
        _signal_group(proc, signal.SIGKILL)
        for pid in tree:
            _kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


_VERBS = {"bud", "build", "push", "pull", "manifest", "login", "tag", "run", "rmi", "inspect", "images"}
_STEP_RES = (
    re.compile(r"^STEP (\d+)/(\d+): (.*)"),  # buildah
    re.compile(r"^Step (\d+)/(\d+) : (.*)"),  # docker's legacy builder
    re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\] (.*)"),  # BuildKit
)
_LOUD_RE = re.compile(r"error|warn|fail|denied|unauthorized|no progress", re.I)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _brief(argv: list[str]) -> str:
    tool = Path(argv[0]).name
    verb = next((a for a in argv[1:] if a in _VERBS), "")
    return f"{tool} {verb}".strip()


def condense(line: str) -> str | None:
    """One short line per build step, and whatever looks like trouble; None: log only."""
    for step in _STEP_RES:
        m = step.match(line)
        if m:
            text = m.group(3)
            return f"build {m.group(1)}/{m.group(2)}: {text[:80] + '...' if len(text) > 80 else text}"
    if _LOUD_RE.search(line):
        return line[:200]
    return None


class IdleWatch:
    """Cuts a child whose process tree has read and written nothing for `limit` seconds: a
    stalled registry makes a push or pull hang silently, not fail. Counts every read and write
    syscall of the tree (/proc/PID/io rchar + wchar), sockets included."""

    def __init__(self, proc: subprocess.Popen, limit: float):
        self.proc, self.limit, self.stalled = proc, limit, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        last, since = -1, time.monotonic()
        while not self._done.wait(min(1.0, self.limit / 10)):
            moved = sum(_io_bytes(pid) for pid in [self.proc.pid, *_tree(self.proc.pid)])
            if moved != last:
                last, since = moved, time.monotonic()
            elif time.monotonic() - since >= self.limit:
                self.stalled = True
                for pid in _tree(self.proc.pid):
                    _kill(pid, signal.SIGKILL)
                _signal_group(self.proc, signal.SIGKILL)
                return

    def message(self) -> str:
        return (
            f"no progress for {self.limit:.0f}s (i/o timeout, MOLTBUILD_IDLE_TIMEOUT): cut; "
            "is the registry answering?"
        )


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


def which(tool: str, path: str | None = None) -> str:
    found = shutil.which(tool, path=path)
    if not found:
        hint = INSTALL_HINTS.get(tool, f"install {tool}")
        raise ToolMissingError(f"`{tool}` is not installed or not on PATH; fix: {hint}")
    return found


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Runner:
    def __init__(
        self,
        *,
        dry_run: bool = False,
        secrets: Iterable[str] = (),
        out: Callable[[str], None] | None = None,
        verbose: bool = True,
        live: bool = False,
    ):
        self.dry_run = dry_run
        # Not verbose: a short line per command and per build step; the rest goes to the log only.
        self.verbose = verbose
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        _known_secrets.update(self._secrets)
        self._out_lock = threading.Lock()
        self._out = out or self._print
        self._board = LiveBoard(_write_stdout) if live and not verbose else None

    def derive(self, *, dry_run: bool) -> Runner:
        """The same runner (secrets, output, its lock) with another dry-run setting."""
        clone = copy.copy(self)
        clone.dry_run = dry_run
        return clone

    def to_stderr(self) -> Runner:
        """The same runner with progress on stderr: stdout stays for `--json`."""
        clone = copy.copy(self)
        clone._out = lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush())
        clone._board = None
        return clone

    @staticmethod
    def _print(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def settle(self, status: str) -> None:
        """The image behind `status` is done: its live line goes (its result line stays)."""
        with self._out_lock:
            if self._board is not None:
                self._board.drop(status)

    def say(self, line: str, *, status: str | None = None) -> None:
        """Print a line; `status` (an image's prefix) marks it as that image's current step,
        which a terminal shows in place instead of scrolling."""
        with self._out_lock:
            if self._board is None:
                self._out(self.mask(line))
            elif status:
                self._board.update(status, self.mask(line))
            else:
                self._board.line(self.mask(line))

    def warn(self, line: str) -> None:
        """A warning, on stderr, masked: stdout may be data (`--json`)."""
        with self._out_lock:
            sys.stderr.write(self.mask(f"warning: {line}") + "\n")
            sys.stderr.flush()

    def emit(self, text: str) -> None:
        """A command's data (JSON, a table a script reads) on stdout, masked."""
        with self._out_lock:
            sys.stdout.write(self.mask(text) + "\n")
            sys.stdout.flush()

    def describe(self, argv: list[str], env: Mapping[str, str] | None = None) -> str:
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        return self.mask(f"+ {shown_env + ' ' if shown_env else ''}{shlex.join(argv)}")

    def announce(
        self, argv: list[str], env: Mapping[str, str] | None, prefix: str = "", log: str = ""
    ) -> None:
        """Say what runs: the whole command when verbose or in a dry run, else tool and verb."""
        if self.verbose or self.dry_run:
            self.say(f"{prefix}{self.describe(argv, env)}")
        else:
            where = f" (command and output: {log})" if log else ""
            self.say(f"{prefix}+ {_brief(argv)}{where}")

    def _check_argv(self, argv: list[str]) -> None:
        # Defence in depth: a secret in argv is visible to every user via /proc.
        for arg in argv:
            if any(secret in arg for secret in self._secrets):
                raise CommandError(self.mask_argv(argv), -1, what="refusing to pass a secret in argv")

    def mask_argv(self, argv: list[str]) -> list[str]:
        return [self.mask(a) for a in argv]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        # Children never inherit our secret settings: tools get them through stdin or files.
        inherited = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_KEYS}
        return {**inherited, **(env or {})}

    def run(
        self,
        argv: list[str],
        *,
        stdin: str | Secret | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        check: bool = True,
        timeout: float | None = None,
        mutates: bool = True,
        what: str = "",
        echo: bool = False,
        idle_timeout: float | None = None,
    ) -> Result:
        """Run to completion and capture output. `mutates=False` marks read-only probes,
        which run even in dry-run. `idle_timeout`: cut the command when it moves no byte for
        that long (a transient error)."""
        self._check_argv(argv)
        if self.dry_run and mutates:
            self.say(self.describe(argv, env))
            return Result(argv, 0)
        if echo:
            self.announce(argv, env)
        data = stdin.reveal() if isinstance(stdin, Secret) else stdin
        proc = self._start(
            argv, env, cwd, stdin=data is not None, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        watch = IdleWatch(proc, idle_timeout) if idle_timeout else None
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            out, err = proc.communicate()
            result = Result(self.mask_argv(argv), -9, self.mask(out), self.mask(err))
            raise CommandError(result.argv, -9, f"timed out after {timeout}s", what=what) from None
        finally:
            if watch:
                watch.stop()
            with _live_lock:
                _live.discard(proc)
        if watch and watch.stalled:
            err = f"{err}\n{watch.message()}"
        result = Result(self.mask_argv(argv), proc.returncode, self.mask(out), self.mask(err))
        if check and proc.returncode != 0:
            raise CommandError(result.argv, proc.returncode, result.stderr or result.stdout, what=what)
        return result

    def stream(
        self,
        argv: list[str],
        *,
        prefix: str = "",
        stdin: str | Secret | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        log_path: Path | None = None,
        what: str = "",
        tail_lines: int = 20,
        idle_timeout: float | None = None,
    ) -> Result:
        """Run a long command, printing each output line (stdout+stderr) with `prefix`;
        on failure the error carries the last lines."""
        self._check_argv(argv)
        if self.dry_run:
            self.say(f"{prefix}{self.describe(argv, env)}")
            return Result(argv, 0)
        self.announce(argv, env, prefix, str(log_path) if log_path else "")
        data = stdin.reveal() if isinstance(stdin, Secret) else stdin
        tail: deque[str] = deque(maxlen=tail_lines)
        proc = self._start(
            argv,
            env,
            cwd,
            stdin=data is not None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            errors="replace",
            bufsize=1,
        )
        log = log_path.open("a", encoding="utf-8") if log_path else None
        if log:
            log.write(self.describe(argv, env) + "\n")
        watch = IdleWatch(proc, idle_timeout) if idle_timeout else None
        try:
            if data is not None and proc.stdin:
                proc.stdin.write(data)
                proc.stdin.close()
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = self.mask(raw.rstrip("\n"))
                tail.append(line)
                if log:
                    log.write(line + "\n")
                shown = line if self.verbose else condense(line)
                if shown is not None:
                    step = not self.verbose and shown.startswith("build ") and not _LOUD_RE.search(line)
                    self.say(f"{prefix}{shown}", status=prefix if step else None)
            proc.wait()
        finally:
            if watch:
                watch.stop()
            with _live_lock:
                _live.discard(proc)
            if log:
                log.close()
        if watch and watch.stalled:
            tail.append(watch.message())
            self.say(f"{prefix}{watch.message()}")
        result = Result(self.mask_argv(argv), proc.returncode, "\n".join(tail))
        if proc.returncode != 0:
            raise CommandError(result.argv, proc.returncode, result.stdout, what=what)
        return result

    def spawn(
        self, argv: list[str], *, log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start a background service (a local registry, a daemon); output goes to `log_path`."""
        self._check_argv(argv)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            return self._start(argv, env, None, stdin=False, stdout=log, stderr=subprocess.STDOUT, text=False)

    def _start(
        self,
        argv: list[str],
        env: Mapping[str, str] | None,
        cwd: Path | str | None,
        *,
        stdin: bool,
        text: bool = True,
        **popen: Any,
    ) -> subprocess.Popen:
        """Popen in its own session (so Ctrl-C handling can stop its whole group), tracked live."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=self._env(env),
                cwd=cwd,
                text=text,
                start_new_session=True,
                **popen,
            )
        except FileNotFoundError:
            hint = INSTALL_HINTS.get(Path(argv[0]).name, "install it")
            raise ToolMissingError(f"`{argv[0]}` is not installed; fix: {hint}") from None
        with _live_lock:
            _live.add(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        with _live_lock:
            _live.discard(proc)
