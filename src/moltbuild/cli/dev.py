"""`invoke dev`: the inner loop (flags -> DevRequest -> dev.loop.run_dev). Flags in cli/flags.py."""

from __future__ import annotations

import signal
from typing import Any

from invoke import Collection

from moltbuild.cli import flags, run_context

DEV_FLAGS = (
    "local",
    "cluster",
    "builder",
    "api_only",
    "frontend_only",
    "only",
    "json",
    "once",
    "dry_run",
    "keep",
    "verbose",
)


@flags.command(DEV_FLAGS)
def dev(c: Any, **given: Any) -> None:
    """Watch, rebuild what changed, run it (--local, the default, or --cluster), until Ctrl-C."""
    from moltbuild.dev.choose import pick_target

    # A loop started from a script's `&` inherits SIGINT ignored; like Go's signal.Notify, the loop
    # takes it back so `kill -INT` (the Ctrl-C of scripts and tests) still stops it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from moltbuild.dev.loop import DevRequest, run_dev

    build, _ = flags.build_request({k: v for k, v in given.items() if flags.FLAGS[k].field})
    request = DevRequest(
        target=pick_target(local=given["local"], cluster=given["cluster"]),
        builder=given["builder"] or None,
        only=build.only,
        as_json=build.as_json,
        once=given["once"],
        dry_run=build.dry_run,
        keep=given["keep"],
    )
    run_dev(run_context(flags.overrides({"verbose": given["verbose"]})), request)


ns = Collection(dev)
