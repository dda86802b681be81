"""The only place that starts processes.

Commands are argv lists; secrets go through stdin or files, never argv. What a command prints
comes back exact (data read from git or a tool stays data); masking happens where text is shown:
echoed commands, console lines, logs and error messages. In dry-run, commands that change anything
are echoed, not run.
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moltbuild.errors import CommandError, ToolMissingError
from moltbuild.files import room_to_write
from moltbuild.settings import KEYS, Secret
from moltbuild.system import state
from moltbuild.system.children import IDLE_CUT, kill_tree, signal_group, terminate_all, watching
from moltbuild.system.console import Console, brief

__all__ = ["IDLE_CUT", "INSTALL_HINTS", "Result", "Runner", "leaks_secret", "terminate_all", "which"]

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


# A word that hands the next word over as a credential: `Bearer SECRET`, `echo SECRET | login`.
_INTRODUCERS = frozenset({"bearer", "basic", "token", "echo", "printf", "-p"})
_FLAG_RE = re.compile(r"--?[\w-]*(?:pass|token|secret|cred|auth|key)[\w-]*", re.I)  # --password SECRET
_PUNCT = "'\"`;,()|&"


def _value_shape(secret: str) -> re.Pattern[str]:
    """An argument (or a word of one) whose value is the secret, whole."""
    s = re.escape(secret)
    keys = r"(?:[^\s=]+=)"
    return re.compile(
        rf"{keys}+['\"]?{s}['\"]?"  # KEY=SECRET, --password=SECRET, --build-arg=TOKEN=SECRET
        rf"|{keys}*[^\s:/@=]+:{s}"  # user:SECRET, --creds=user:SECRET
        rf"|{keys}*(?:[A-Za-z][\w+.-]*://)?(?:[^\s:/@]*:)?{s}@\S*"  # user:SECRET@host, https://SECRET@host
    )


def _log_line(log: Any, line: str) -> OSError | None:
    """Write `line` to `log` (if any); the error instead of raising it."""
    try:
        if log is not None:
            log.write(line + "\n")
    except OSError as exc:
        return exc
    return None


def _no_log() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def leaks_secret(arg: str, secret: str) -> bool:
    """`arg` passes `secret` as a value: it is the secret, or carries it whole as a value
    (`--password=SECRET`, `KEY=SECRET`, `user:SECRET`, `https://user:SECRET@host`, a quoted
    'SECRET' or `Bearer SECRET` in a script or header). Never a guess from a substring: a secret
    inside a path, tag, sha or name, or a plain word of a sentence, is no leak."""
    if not secret or secret not in arg:
        return False
    shape = _value_shape(secret)
    quoted = re.search(rf"(['\"]){re.escape(secret)}\1", arg)
    if arg == secret or shape.fullmatch(arg) or quoted:
        return True
    words = [w.strip(_PUNCT) for w in arg.split()]
    return any(
        shape.fullmatch(word) or (word == secret and _introduces(before))
        for before, word in zip(["", *words], words, strict=False)
    )


def _introduces(word: str) -> bool:
    return word.lower() in _INTRODUCERS or _FLAG_RE.fullmatch(word) is not None


class Runner:
    """Runs commands (argv lists) for one command line; prints through its console."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        secrets: Iterable[str] = (),
        out: Callable[[str], None] | None = None,
        verbose: bool = True,
        live: bool = False,
        environ: Mapping[str, str],
    ):
        self.dry_run = dry_run
        self.console = Console(secrets=secrets, out=out, verbose=verbose, live=live)
        # The environment children start from: the run context's, given, never os.environ here.
        self.environ = dict(environ)

    @property
    def verbose(self) -> bool:
        return self.console.verbose

    def derive(self, *, dry_run: bool) -> Runner:
        """The same runner (secrets, console) with another dry-run setting."""
        clone = copy.copy(self)
        clone.dry_run = dry_run
        return clone

    def to_stderr(self) -> Runner:
        """The same runner with progress on stderr: stdout stays for `--json`."""
        clone = copy.copy(self)
        clone.console = self.console.to_stderr()
        return clone

    def mask(self, text: str) -> str:
        return self.console.mask(text)

    def settle(self, status: str) -> None:
        self.console.settle(status)

    def say(self, line: str, *, status: str | None = None) -> None:
        self.console.say(line, status=status)

    def warn(self, line: str) -> None:
        self.console.warn(line)

    def emit(self, text: str) -> None:
        self.console.emit(text)

    def describe(self, argv: list[str], env: Mapping[str, str] | None = None) -> str:
        return self.console.describe(argv, env)

    def announce(
        self, argv: list[str], env: Mapping[str, str] | None, prefix: str = "", log: str = ""
    ) -> None:
        """Say what runs: the whole command when verbose or in a dry run, else tool and verb."""
        if self.verbose or self.dry_run:
            self.say(f"{prefix}{self.describe(argv, env)}")
        else:
            where = f" (command and output: {log})" if log else ""
            self.say(f"{prefix}+ {brief(argv)}{where}")

    def _check_argv(self, argv: list[str]) -> None:
        # Defence in depth: a secret in argv is visible to every user via /proc.
        for arg in argv:
            if any(leaks_secret(arg, secret) for secret in self.console.all_secrets):
                raise CommandError(self.mask_argv(argv), -1, what="refusing to pass a secret in argv")

    def mask_argv(self, argv: list[str]) -> list[str]:
        return [self.mask(a) for a in argv]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        # Children never inherit our secret settings: tools get them through stdin or files.
        inherited = {k: v for k, v in self.environ.items() if k not in SECRET_ENV_KEYS}
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
        proc = self._start(  # "replace": a tool's non-UTF-8 byte (a file name) is no crash
            argv,
            env,
            cwd,
            stdin=data is not None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            errors="replace",
        )
        with watching(proc, idle_timeout) as watch:
            out, err = self._communicate(proc, data, timeout, argv, what)
        if watch.stalled:
            err = f"{err}\n{watch.message()}"
        result = Result(argv, proc.returncode, out, err)  # exact: callers read data from it
        if check and proc.returncode != 0:
            raise self._failure(argv, proc.returncode, err or out, what)
        return result

    def _communicate(
        self, proc: subprocess.Popen, data: str | None, timeout: float | None, argv: list[str], what: str
    ) -> tuple[str, str]:
        try:
            return proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            proc.communicate()
            raise self._failure(argv, -9, f"timed out after {timeout}s", what) from None

    def _failure(self, argv: list[str], code: int, tail: str, what: str) -> CommandError:
        """The error a failed command raises: its text is shown to people, so masked."""
        return CommandError(self.mask_argv(argv), code, self.mask(tail), what=self.mask(what))

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
        tail: deque[str] = deque(maxlen=tail_lines)
        with watching(proc, idle_timeout) as watch:
            self._pump(proc, data, prefix, tail, log_path, self.describe(argv, env))
        if watch.stalled:
            tail.append(watch.message())
            self.say(f"{prefix}{watch.message()}")
        result = Result(argv, proc.returncode, "\n".join(tail))  # exact, like run()'s
        if proc.returncode != 0:
            raise self._failure(argv, proc.returncode, result.stdout, what)
        return result

    def _pump(
        self,
        proc: subprocess.Popen,
        data: str | None,
        prefix: str,
        tail: deque[str],
        log_path: Path | None,
        header: str,
    ) -> None:
        """Feed stdin, then show, keep (the tail) and log each output line as it comes. The log
        is line-buffered: build/logs/NAME.log can be followed while the build runs. A full disk
        stops the log, not the reading (the command must not block on a full pipe); it is raised,
        naming the log, once the command is done."""
        failed: OSError | None = None
        try:
            with log_path.open("a", encoding="utf-8", buffering=1) if log_path else _no_log() as log:
                failed = self._copy_output(proc, data, prefix, tail, log, header)
        except OSError as exc:  # the log's last flush, on closing it (or the command's stdin)
            failed = failed or exc
        if failed is not None:
            with room_to_write(log_path or Path(".")):
                raise failed

    def _copy_output(
        self, proc: subprocess.Popen, data: str | None, prefix: str, tail: deque[str], log: Any, header: str
    ) -> OSError | None:
        """Feed stdin, then show and log each output line (masked) and keep it (exact); the first
        log error, not raised."""
        failed = _log_line(log, header)
        if data is not None and proc.stdin:
            proc.stdin.write(data)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            failed = failed or _log_line(log, self.console.output_line(prefix, line))
        proc.wait()
        return failed

    def spawn(
        self, argv: list[str], *, log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start a background service (a local registry, a daemon); output goes to `log_path`."""
        self._check_argv(argv)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            return self._start(argv, env, None, stdin=False, stdout=log, stderr=subprocess.STDOUT, text=False)

    def follow(self, argv: list[str], *, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start a reader that runs until stopped (`podman logs -f`): its output (stdout and
        stderr, text lines) on the returned process's stdout; tracked, so Ctrl-C stops it."""
        self._check_argv(argv)
        return self._start(
            argv, env, None, stdin=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, errors="replace"
        )

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
        state.track(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
        state.untrack(proc)
