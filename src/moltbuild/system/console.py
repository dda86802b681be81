"""What a person sees: every line masked, a short line per command and build step (everything
when verbose), a live status per image on a terminal, warnings on stderr, data on stdout."""

from __future__ import annotations

import copy
import re
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from moltbuild.settings import MASK
from moltbuild.system import state
from moltbuild.system.live import LiveBoard

_VERBS = {"bud", "build", "push", "pull", "manifest", "login", "tag", "run", "rmi", "inspect", "images"}
_STEP_RES = (
    re.compile(r"^STEP (\d+)/(\d+): (.*)"),  # buildah
    re.compile(r"^Step (\d+)/(\d+) : (.*)"),  # docker's legacy builder
    re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\] (.*)"),  # BuildKit
)
LOUD_RE = re.compile(r"error|warn|fail|denied|unauthorized|no progress", re.I)
# Known noise, said once per image in plain words instead of after every build step.
FOLDED = (
    (
        re.compile(r"HEALTHCHECK is not supported for OCI image format", re.I),
        "note: the OCI image format has no HEALTHCHECK field, so buildah leaves it out; "
        "the smoke check reads it from the Dockerfile",
    ),
)


# A secret shorter than this is not masked: a 1-character token would mask that letter everywhere.
MIN_MASKED = 4


def maskable(secrets: Iterable[str]) -> list[str]:
    """The secrets long enough to mask, longest first (one that contains another is masked whole)."""
    return sorted({s for s in secrets if len(s) >= MIN_MASKED}, key=len, reverse=True)


def mask_known_secrets(text: str) -> str:
    """Mask every secret this process knows; for lines printed outside a console (errors)."""
    for secret in state.known_secrets():
        text = text.replace(secret, MASK)
    return text


def condense(line: str) -> str | None:
    """One short line per build step, and whatever looks like trouble; None: log only."""
    for step in _STEP_RES:
        m = step.match(line)
        if m:
            text = m.group(3)
            return f"build {m.group(1)}/{m.group(2)}: {text[:80] + '...' if len(text) > 80 else text}"
    if LOUD_RE.search(line):
        return line[:200]
    return None


def brief(argv: list[str]) -> str:
    tool = Path(argv[0]).name
    verb = next((a for a in argv[1:] if a in _VERBS), "")
    return f"{tool} {verb}".strip()


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Console:
    def __init__(
        self,
        *,
        secrets: Iterable[str] = (),
        out: Callable[[str], None] | None = None,
        verbose: bool = True,
        live: bool = False,
    ):
        # Not verbose: a short line per command and per build step; the rest goes to the log only.
        self.verbose = verbose
        self.all_secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # for argv checks
        self.secrets = maskable(self.all_secrets)  # masked in output
        state.remember_secrets(self.secrets)
        self._lock = threading.Lock()
        self._out = out or _print
        self._board = LiveBoard(_write_stdout) if live and not verbose else None
        self._folded: set[tuple[str, int]] = set()  # (prefix, which FOLDED line) already said

    def add_secrets(self, values: Iterable[str]) -> None:
        """Secrets learnt during the run (build secrets' values): masked and kept out of argv too."""
        with self._lock:
            self.all_secrets = sorted({*self.all_secrets, *(v for v in values if v)}, key=len, reverse=True)
            self.secrets = maskable(self.all_secrets)
        state.remember_secrets(self.secrets)

    def to_stderr(self) -> Console:
        """The same console with progress on stderr: stdout stays for `--json`."""
        clone = copy.copy(self)
        clone._out = _print_stderr
        clone._board = None
        return clone

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def settle(self, status: str) -> None:
        """The image behind `status` is done: its live line goes (its result line stays)."""
        with self._lock:
            if self._board is not None:
                self._board.drop(status)

    def say(self, line: str, *, status: str | None = None) -> None:
        """Print a line; `status` (an image's prefix) marks it as that image's current step,
        which a terminal shows in place instead of scrolling."""
        with self._lock:
            if self._board is None:
                self._out(self.mask(line))
            elif status:
                self._board.update(status, self.mask(line))
            else:
                self._board.line(self.mask(line))

    def warn(self, line: str) -> None:
        """A warning, on stderr, masked: stdout may be data (`--json`)."""
        with self._lock:
            _print_stderr(self.mask(f"warning: {line}"))

    def emit(self, text: str) -> None:
        """A command's data (JSON, a table a script reads) on stdout, masked."""
        with self._lock:
            _print(self.mask(text))

    def describe(self, argv: list[str], env: Mapping[str, str] | None = None) -> str:
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        return self.mask(f"+ {shown_env + ' ' if shown_env else ''}{shlex.join(argv)}")

    def output_line(self, prefix: str, raw: str) -> str:
        """One line of a streamed command: masked; shown whole when verbose, else condensed (a
        build step updates the image's live status instead of scrolling). Returns it masked."""
        line = self.mask(raw.rstrip("\n"))
        shown = line if self.verbose else self._fold(prefix, line)
        if shown is not None:
            step = not self.verbose and shown.startswith("build ") and not LOUD_RE.search(line)
            self.say(f"{prefix}{shown}", status=prefix if step else None)
        return line

    def _fold(self, prefix: str, line: str) -> str | None:
        for index, (pattern, plain) in enumerate(FOLDED):
            if pattern.search(line):
                with self._lock:
                    first = (prefix, index) not in self._folded
                    self._folded.add((prefix, index))
                return plain if first else None
        return condense(line)
