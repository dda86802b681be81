"""Benchmark: `invoke build --push --rebuild` of both images against the same raw commands a
shell script would run (`buildah bud`, then one `buildah push` per tag), interleaved rounds in
one run; prints each side's median and the ratio's median and spread.

    python -m benchmarks.push_once [ROUNDS]     (root; buildah and docker-registry installed)
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.workspace import workspace
from moltbuild import report
from moltbuild.backends import make_backend
from moltbuild.backends.base import JobLog, PushTarget, RunSpec
from moltbuild.plan import make_plan
from moltbuild.session import Session


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
    session = Session.create(project_root=cwd, environ=env)
    plan = make_plan(session, push=True, rebuild=True, backend="buildah")
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


def main(rounds: int) -> None:
    with workspace() as ws:
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
                "raw, sequential": lambda i=i: timed_raw(
                    env, work, _private(base / f"s-{i}"), parallel=False
                ),
            }
            order = list(runs)[i % len(runs) :] + list(runs)[: i % len(runs)]  # rotate: none always first
            for name in order:
                sides[name].append(runs[name]())
        print(f"rounds: {rounds} (interleaved, rotating order)")
        for name, times in sides.items():
            spread = f"min {min(times):.2f}, max {max(times):.2f}"
            print(f"{name + ':':18} median {statistics.median(times):5.2f} s ({spread})")
        for mine, theirs in (
            ("invoke", "raw, parallel"),
            ("invoke", "raw, sequential"),
            ("invoke+smoke", "invoke"),
        ):
            ratios = [o / r for o, r in zip(sides[mine], sides[theirs], strict=True)]
            print(
                f"ratio {mine} / {theirs}: median {statistics.median(ratios):.2f} "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
            )
        added = [s - o for s, o in zip(sides["invoke+smoke"], sides["invoke"], strict=True)]
        print(f"smoke check adds: median {statistics.median(added):.2f} s per run (both images, in parallel)")
        push_phase(env, work, base, rounds)


def push_phase(env: dict[str, str], cwd: Path, base: Path, rounds: int) -> None:
    """The push step alone, for the api image already built: `buildah push` per tag vs
    moltbuild's push once + manifest PUTs, new tags each round, interleaved."""
    session = Session.create(project_root=cwd, environ=env)
    (record,) = [r for r in report.read(cwd / "build" / "images.json") if r.name == "api"]
    backend = make_backend("buildah", session.runner.derive(dry_run=False), session.settings, session.storage)
    backend.open(RunSpec(_private(base / "push-phase")))
    child_env = {**os.environ, **env, **backend.env()}
    raw, ours = [], []
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
    ratios = [r / o for r, o in zip(raw, ours, strict=True)]
    print(
        f"push step, 4 tags: buildah push x4 median {statistics.median(raw):.2f} s, push once + 3 PUTs "
        f"median {statistics.median(ours):.2f} s; ratio {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
