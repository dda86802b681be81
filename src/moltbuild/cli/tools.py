"""`python -m moltbuild.cli.tools`: the background half of `invoke setup`, which makes the locked Go
tools ready (each under its file lock) while the command that started it goes on."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from moltbuild.errors import MoltbuildError
from moltbuild.system import children, gotools, toollock
from moltbuild.system.processes import Runner


def _stop(signum: int, frame: object) -> None:
    children.terminate_all()  # now, while the `go install` (its own session) is still tracked
    raise KeyboardInterrupt(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moltbuild.cli.tools", description=__doc__)
    parser.add_argument("--bindir", required=True, help="where the tools go")
    parser.add_argument("--lock", default=str(toollock.LOCK_PATH), help="the tool lock")
    parser.add_argument("--cache", default="", help="a folder of verified binaries (MOLTBUILD_TOOL_CACHE)")
    args = parser.parse_args(argv)
    os.nice(10)  # beside the work: the build that started with it keeps the CPU it needs
    runner = Runner(environ=os.environ)  # stdout: the log `invoke setup` named
    places = gotools.Places.of(os.environ, Path(args.bindir), args.cache)
    signal.signal(signal.SIGTERM, _stop)
    try:
        outcomes = gotools.prepare(runner, toollock.load(Path(args.lock)), places)
    except MoltbuildError as exc:
        runner.warn(f"setup (background): {exc}")
        return 1
    except KeyboardInterrupt:  # SIGTERM too (_stop)
        runner.warn("setup (background): stopped")
        return 130
    runner.say(f"setup (background): {', '.join(f'{n} {o}' for n, o in outcomes.items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
