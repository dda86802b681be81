"""A hint after invoke's own parse errors: `invoke biuld` says "did you mean 'build'?".

invoke prints its ParseError and exits before any task runs, with no hook for a message of our
own; the one place to add to it is the parser, wrapped once when tasks.py loads the namespace."""

from __future__ import annotations

import difflib
import re

from invoke import Collection
from invoke.exceptions import ParseError
from invoke.parser import Parser

_UNKNOWN_RE = re.compile(r"^No idea what '(.+)' is!$")
CORE_FLAGS = ("--list", "--help", "--version", "--complete", "--debug", "--dry", "--echo")


def hint(message: str, task_names: list[str], flags: list[str]) -> str:
    """The message with the closest task or flag name, when one is close."""
    m = _UNKNOWN_RE.match(message)
    if not m:
        return message
    word = m.group(1)
    pool = flags if word.startswith("-") else task_names
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    guess = f" Did you mean '{close[0]}'?" if close else ""
    return f"{message}{guess} (`invoke --list` shows every task, `invoke --help TASK` its flags)"


def install(ns: Collection) -> None:
    original = Parser.parse_argv
    if getattr(original, "moltbuild_hints", False):
        return
    tasks = sorted(ns.task_names) + sorted(a for aliases in ns.task_names.values() for a in aliases)

    def parse_argv(self: Parser, argv: list[str]):  # type: ignore[no-untyped-def]
        try:
            return original(self, argv)
        except ParseError as exc:
            context = getattr(exc, "context", None)
            flags = sorted(getattr(context, "flags", {}) or {}) or list(CORE_FLAGS)
            raise ParseError(hint(str(exc), tasks, flags), context) from None

    parse_argv.moltbuild_hints = True  # type: ignore[attr-defined]
    Parser.parse_argv = parse_argv  # type: ignore[method-assign]
