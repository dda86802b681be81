"""Invoke adapters: flags in, one library call, MoltbuildError out as invoke.Exit."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from invoke import Exit

from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.system import owners, state

if TYPE_CHECKING:
    from moltbuild.flows.context import Session


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: every `with` block unwinds (temp dirs holding auth
    files are removed), child process trees and remote Jobs are stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def edge(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map library errors to a one-line message (secrets masked) and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _terminate)
        state.begin_command()
        owners.reap_temp_dirs()  # a SIGKILLed run's private dirs (auth.json): gone with their owner
        try:
            return func(*args, **kwargs)
        except MoltbuildError as exc:
            raise Exit(f"error: {_masked(exc.message)}", code=exc.exit_code) from None
        except BrokenPipeError:  # `invoke build --dry-run | head`: the reader left; stop quietly
            _terminate_all()
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=141) from None
        except Exception as exc:  # a bug, or an input no check foresaw: one line, not a traceback
            if _wants_traceback():
                raise
            first = (str(exc).splitlines() or [""])[0][:300]
            raise Exit(
                f"error: unexpected {type(exc).__name__}: {_masked(first)}; this is a moltbuild "
                "bug: rerun with MOLTBUILD_TRACEBACK=1 for the traceback and report it",
                code=70,
            ) from None
        except KeyboardInterrupt as exc:
            state.interrupt()
            state.run_cleanups()
            _terminate_all()
            what = f"terminated ({exc.args[0]})" if isinstance(exc, Terminated) else "interrupted"
            print(f"{what}: stopped every child process", file=sys.stderr)
            raise Exit(code=getattr(exc, "exit_code", 130)) from None

    return wrapper


# Imported on use: `invoke --list` (which loads this module) needs neither the console nor the
# process runner, and their settings and dotenv imports.
def _masked(text: str) -> str:
    from moltbuild.system.console import mask_known_secrets

    return mask_known_secrets(text)


def _terminate_all() -> None:
    from moltbuild.system.processes import terminate_all

    terminate_all()


def run_context(settings: Mapping[str, tuple[Any, str]] | None = None) -> Session:
    """The run context of one command: settings (flags that set one: KEY -> (value, flag)), the
    runner and the probes. Made here and nowhere else; flows receive it."""
    from moltbuild.flows.context import Session

    given = {key: (value, flag) for key, (value, flag) in (settings or {}).items() if value not in (None, "")}
    session = Session.create(cli=given)
    return session


def verbose_flag(verbose: bool) -> dict[str, tuple[Any, str]]:
    return {"MOLTBUILD_VERBOSE": ("1" if verbose else None, "--verbose")}


def _wants_traceback() -> bool:
    """MOLTBUILD_TRACEBACK through the settings layer (.env.local counts); the environment alone
    when the settings themselves cannot load."""
    from moltbuild.errors import MoltbuildError
    from moltbuild.project import find_project_root
    from moltbuild.settings import load_settings, truthy

    try:
        return load_settings(find_project_root()).flag("MOLTBUILD_TRACEBACK")
    except MoltbuildError:
        try:
            return truthy(os.environ.get("MOLTBUILD_TRACEBACK"), "MOLTBUILD_TRACEBACK")
        except MoltbuildError:
            return True  # a value that is neither on nor off: show more, not less


def seconds(value: str | float, flag: str) -> float:
    """A flag in seconds (invoke passes strings); a bad value is a one-line error naming the flag."""

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {value!r} must be a number of seconds, e.g. {flag} 30") from None
    if number <= 0:
        raise ConfigError(f"{flag} {value!r} must be more than 0 seconds")
    return number


def count(value: str | int, flag: str, minimum: int = 1) -> int:
    """A whole-number flag. Declared with a string default so invoke does not cast it: its own
    int() cast ends in a traceback on `--jobs abc`."""

    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{flag} {value!r} must be a whole number, e.g. {flag} 2") from None
    if number < minimum:
        raise ConfigError(f"{flag} {value!r} must be at least {minimum}")
    return number
