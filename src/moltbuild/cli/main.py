"""`moltbuild`, the console script: `moltbuild init [--dry-run] [PATH]` adopts moltbuild in an
existing repository (the work: moltbuild.adopt). Exit codes as the invoke tasks: 0 ok,
2 bad input, a MoltbuildError's own code otherwise."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from invoke import Exit

from moltbuild.cli import edge


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moltbuild",
        description="Build, push and pin a repository's container images. The build tasks run "
        "through invoke (`invoke --list`); this command sets a repository up for them.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    init = commands.add_parser(
        "init",
        help="adopt moltbuild in an existing repository",
        description="Find the Dockerfiles, the kustomization's images and the workloads that run "
        "them; write [tool.moltbuild] into pyproject.toml, a tasks.py and build/ in .gitignore. "
        "Prints what it found, wrote and could not decide; a second run changes nothing.",
    )
    init.add_argument("--dry-run", action="store_true", help="show a diff of every file it would write")
    init.add_argument("path", nargs="?", metavar="PATH", help="the repository (default: the git top level)")
    return parser


@edge
def _init(path: str | None, dry_run: bool) -> None:
    from moltbuild.adopt.command import adopt
    from moltbuild.system.processes import Runner

    adopt(Runner(environ=os.environ), Path(path) if path else None, dry_run=dry_run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("moltbuild: error: name a command: init (moltbuild init --help)", file=sys.stderr)
        return 2
    try:
        _init(args.path, args.dry_run)
    except Exit as exc:  # the edge's one line (secrets masked) and exit code
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
