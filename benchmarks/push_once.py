"""`invoke build --push --rebuild` of both images against the raw commands a shell script would
run (`buildah bud`, then one `buildah push` per tag), and the push step alone. Run by
benchmarks.suite."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import time
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import JobLog, PushTarget, RunSpec
from moltbuild.backends.selection import make_backend
from moltbuild.flows.build import plan_for
from moltbuild.flows.context import Session
from moltbuild.plan.request import BuildRequest


def timed_invoke(env: dict[str, str], cwd: Path, *extra: str) -> float:
    """`invoke build --push --rebuild`; the raw commands run no smoke check, so neither does this
    side unless asked (the smoke side measures what the check adds)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", "build", "--push", "--rebuild", "--backend", "buildah", *extra],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def timed_raw(env: dict[str, str], cwd: Path, workdir: Path, parallel: bool) -> float:
    """The plan's exact bud argv per image, then `buildah push` once per tag; images one after
    the other like build-images.sh, or in parallel like moltbuild's default --jobs 2."""
    session = Session.create(
        project_root=cwd, environ=env, cli={"MOLTBUILD_BACKEND": ("buildah", "--backend")}
    )
    plan = plan_for(session, BuildRequest(push=True, rebuild=True))
    backend = make_backend("buildah", session.runner, session.settings, session.storage)
    backend.open(RunSpec(workdir, mirror=plan.mirror))  # config files only: bases are already local
    child_env = {**os.environ, **env, **backend.env()}

    def one(image) -> None:
        subprocess.run(backend.build_argv(image), env=child_env, check=True, stdout=subprocess.DEVNULL)
        for tag in image.tags:
            ref = str(image.ref.with_tag(tag))
            target = PushTarget(image.name, image.ref, image.tags, ref)
            argv = backend.push_argv(target, tag, str(workdir / f"{image.name}.digest"))
            subprocess.run(
                argv, env=child_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=2 if parallel else 1) as pool:
        list(pool.map(one, plan.images))
    return time.perf_counter() - start


def rebuild_vs_raw(ws, rounds: int) -> dict[str, list[float]]:
    """Each side's times, interleaved in rotating order so none is always first."""
    env, work, base = ws.env, ws.clone, ws.base
    timed_invoke(env, work, "--no-smoke")  # warm-up: bases pulled, layer cache filled, for all sides
    sides: dict[str, list[float]] = {
        "invoke": [],
        "raw, parallel": [],
        "raw, sequential": [],
        "invoke+smoke": [],
    }
    for i in range(rounds):
        runs = {
            "invoke": lambda: timed_invoke(env, work, "--no-smoke"),
            "invoke+smoke": lambda: timed_invoke(env, work),
            "raw, parallel": lambda i=i: timed_raw(env, work, _private(base / f"p-{i}"), parallel=True),
            "raw, sequential": lambda i=i: timed_raw(env, work, _private(base / f"s-{i}"), parallel=False),
        }
        order = list(runs)[i % len(runs) :] + list(runs)[: i % len(runs)]
        for name in order:
            sides[name].append(runs[name]())
    return sides


def push_phase(env: dict[str, str], cwd: Path, base: Path, rounds: int) -> tuple[list[float], list[float]]:
    """The push step alone, for the api image already built: `buildah push` per tag vs
    moltbuild's push once + manifest PUTs, new tags each round, interleaved. (raw, ours) times."""
    session = Session.create(project_root=cwd, environ=env)
    (record,) = [r for r in report.read(cwd / "build" / "images.json") if r.name == "api"]
    backend = make_backend("buildah", session.runner.derive(dry_run=False), session.settings, session.storage)
    backend.open(RunSpec(_private(base / "push-phase")))
    child_env = {**os.environ, **env, **backend.env()}
    raw, ours = [], []
    try:
        for i in range(rounds):
            tags = tuple(f"bench{i}-{n}" for n in range(4))
            target = PushTarget("api", record.ref, tags, record.image_id or "")
            start = time.perf_counter()
            for tag in tags:
                argv = backend.push_argv(target, tag, str(base / "push-phase" / "d"))
                subprocess.run(
                    argv, env=child_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            raw.append(time.perf_counter() - start)
            target = PushTarget("api", record.ref, tuple(t + "-once" for t in tags), record.image_id or "")
            start = time.perf_counter()
            backend.push_built(target, log=JobLog("", None))
            ours.append(time.perf_counter() - start)
    finally:
        backend.close()
    return raw, ours


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path
