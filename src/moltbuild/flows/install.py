"""`invoke setup`: the system tools a build needs (buildah, skopeo, podman, ...; with --tests also
what the tests use) installed with apt-get, then the Go-built tools of the lock (kustomize, syft,
cosign) made ready beside the work: in a background process by default (a build needs none of
them; attest, verify and kustomize wait for theirs), in the foreground with --wait; `--relock`
rebuilds them and rewrites the lock."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.files import write_atomic
from moltbuild.system import gotools, packages, toollock
from moltbuild.system.gotools import Places
from moltbuild.system.processes import Runner
from moltbuild.system.toollock import Lock

STARTED_WITHIN = 30.0  # seconds for the background process to take its locks


def install_tools(
    *,
    environ: Mapping[str, str],
    dry_run: bool = False,
    wait: bool = False,
    relock: bool = False,
    bindir: Path | None = None,
    cache: str = "",
    tests: bool = False,
) -> None:
    runner = Runner(dry_run=dry_run, environ=environ)
    packages.setup(runner, tests=tests)
    lock = toollock.load()
    places = gotools.Places.of(environ, bindir, cache)
    if relock:
        relock_tools(runner, lock, places)
    elif wait or dry_run:
        say_outcomes(runner, gotools.prepare(runner, lock, places), places)
    else:
        start_background(runner, lock, places)


def say_outcomes(runner: Runner, outcomes: Mapping[str, str], places: Places) -> None:
    if runner.dry_run:
        return
    ready = [n for n, o in outcomes.items() if o != "missing"]
    runner.say(f"setup: Go tools ready in {places.bindir}: {', '.join(ready) or 'none'}")
    if ready and not _on_path(runner, places.bindir):
        runner.warn(f"setup: {places.bindir} is not on PATH; add it (export PATH={places.bindir}:$PATH)")


def _on_path(runner: Runner, folder: Path) -> bool:
    return str(folder) in (runner.environ.get("PATH") or "").split(":")


def background_argv(lock: Lock, places: Places) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "moltbuild.cli.tools",
        "--lock",
        str(lock.path),
        "--bindir",
        str(places.bindir),
    ]
    return argv + (["--cache", str(places.cache)] if places.cache else [])


def warn_go_floor(runner: Runner, lock: Lock, places: Places) -> list[str]:
    """The Go floor said before going to the background, whose log is easy to miss."""
    go = gotools.go_found(runner)
    problems = [
        toollock.floor_problem(t, go, lock)
        for t in lock.tools.values()
        if not (places.bindir / t.name).is_file()
    ]
    for problem in filter(None, problems):
        runner.warn(f"setup: {problem} (unless a verified copy is in MOLTBUILD_TOOL_CACHE)")
    return [p for p in problems if p]


def start_background(runner: Runner, lock: Lock, places: Places) -> None:
    """Start the preparation and return once it holds every tool's lock: a command run right after
    waits for the tool it needs instead of finding it missing."""
    warn_go_floor(runner, lock, places)
    log = places.state / "prepare.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    proc = runner.spawn(background_argv(lock, places), log_path=log)
    gotools.untrack(proc)  # it outlives this command; Ctrl-C here already stopped what matters
    names = list(lock.tools)
    for _ in range(int(STARTED_WITHIN / 0.1)):
        if all(gotools.preparing(runner.environ, n) for n in names) or proc.poll() is not None:
            break
        gotools.pause(proc, 0.1)
    runner.say(
        f"setup: preparing {', '.join(names)} in the background (pid {proc.pid}, log {log}); "
        "builds start now, attest/verify/kustomize wait for theirs"
    )


def relock_tools(runner: Runner, lock: Lock, places: Places | None = None) -> Lock:
    """Build every tool fresh with this Go and the lock's flags; write its hash and Go floor; the
    binaries go to `places` (no second build to install what was just locked)."""
    go = gotools.go_found(runner)
    if go is None:
        raise ConfigError("invoke setup --relock needs `go` on PATH: https://go.dev/dl/")
    fresh = Lock(go, lock.flags, lock.env, {}, lock.path)
    for tool in lock.tools.values():
        digest, go_min = gotools.build_fresh(runner, lock, tool, places)
        # Other platforms' hashes go: nothing here can tell whether they still hold.
        fresh = fresh.with_tool(replace(tool, go_min=go_min, sha256={toollock.platform(): digest}))
        runner.say(f"setup: {tool.title()}: sha256 {digest} (Go {go}; its go.mod asks for {go_min})")
    if not runner.dry_run:
        write_atomic(lock.path, toollock.dumps(fresh))  # never a half-written lock
        runner.say(f"setup: wrote {lock.path}; the next setup anywhere builds or restores exactly these")
    return fresh
